"""What people (and the nightly sensor) do to applications: apply, the source department's opinion,
the bureau's approval or rejection, revocation, expiry. Each command is one transaction: the
application row, its element rows and an ``audit.share_events`` row per transition."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from zoneinfo import ZoneInfo

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.normalize import element_dtype
from sharing import store
from sharing.elements import classify
from sharing.workflow import (
    ApplicationError,
    ApplicationKind,
    ApplicationStatus,
    Deadlines,
    Decision,
    Event,
    RequesterType,
    allowed,
    next_status,
)
from warehouse.store import Warehouse

CITY_TZ = ZoneInfo("Asia/Shanghai")  # default only; the CLI passes the catalogue's zone
DEFAULT_DEADLINES = Deadlines()
PREFIX = {ApplicationKind.share: "GX", ApplicationKind.open: "KF"}


def _now(at: dt.datetime | None) -> dt.datetime:
    if at is None:
        return store.utcnow()
    return at.astimezone(dt.UTC).replace(tzinfo=None) if at.tzinfo else at


def local_day(at: dt.datetime, tz: dt.tzinfo) -> dt.date:
    return at.replace(tzinfo=dt.UTC).astimezone(tz).date()


def check_filter(catalogue: Catalogue, library: str, text: str | None) -> str | None:
    """A row filter in SQL expression syntax over the library's element codes (e.g.
    ``insurance_status = '1'``); ApplicationError when it does not parse or names unknown elements."""
    if text is None or not text.strip():
        return None
    try:
        expr = pl.sql_expr(text)
        names = set(expr.meta.root_names())
    except Exception as exc:  # polars raises several kinds for bad SQL
        raise ApplicationError(f"--filter 无法解析: {text!r} ({type(exc).__name__})") from None
    lib = catalogue.library(library)
    unknown = sorted(names - {e.code for e in lib.elements})
    if unknown:
        raise ApplicationError(f"--filter 引用了{lib.name}没有的数据元 {', '.join(unknown)}")
    try:  # types checked against the library's columns now, not at the first night's extract
        pl.DataFrame(schema={e.code: element_dtype(e) for e in lib.elements}).filter(expr)
    except Exception as exc:
        raise ApplicationError(f"--filter {text!r} 与数据元类型不符 ({type(exc).__name__}); "
                               "日期请写作 DATE '2000-01-01', 代码值加引号, 如 gender = '1'") from None
    return text.strip()


@dataclass
class Applied:
    application: dict
    elements: list[dict] = field(default_factory=list)


def _event(app: dict, event: Event, before: str | None, actor: str | None, at: dt.datetime, note: str | None = None,
           elements: list[str] | None = None, rows: int | None = None) -> dict:
    return {"event_id": store.new_id(), "application_id": app["application_id"], "at": at, "action": event.value,
            "from_status": before, "to_status": app["status"], "actor": actor, "note": note,
            "elements": ",".join(elements) if elements else None, "rows": rows}


def _move(app: dict, event: Event, now: dt.datetime) -> str | None:
    before = app["status"]
    app["status"] = next_status(before, event).value
    if app["status"] != before:
        app["status_since"] = now
    app["updated_at"] = now
    return before


def _next_id(wh: Warehouse, conn: sa.Connection, kind: ApplicationKind, day: dt.date) -> str:
    prefix = f"{PREFIX[kind]}-{day:%Y%m%d}-"
    t = store.table(wh, store.APPLICATIONS)
    n = conn.execute(sa.select(sa.func.count()).where(t.c.application_id.like(prefix + "%"))).scalar_one()
    return f"{prefix}{n + 1:04d}"


def apply(
    wh: Warehouse, catalogue: Catalogue, *, requester: str, library: str, elements: list[str], purpose: str,
    until: dt.date, row_filter: str | None = None, kind: ApplicationKind = ApplicationKind.share,
    requester_type: RequesterType = RequesterType.department, requester_name: str | None = None,
    not_collected: bool = False, linkage: bool = False, scenario: str | None = None,
    security_measures: str | None = None, deadlines: Deadlines = DEFAULT_DEADLINES,
    by: str | None = None, at: dt.datetime | None = None, tz: dt.tzinfo = CITY_TZ,
) -> Applied:
    """Record an application: 无条件 elements granted at once, 不予 refused with the reason, 有条件
    ones sent to their authoritative departments for opinion (due in working days)."""
    now = _now(at)
    today = local_day(now, tz)
    if not (purpose or "").strip():
        raise ApplicationError("请用 --purpose 说明用途(须与职责相关, 仅限于申明的用途使用)")
    if until <= today:
        raise ApplicationError(f"--until {until} 应晚于今天 ({today})")
    if kind == ApplicationKind.share:
        if requester_type != RequesterType.department:
            raise ApplicationError("共享申请的申请方是使用部门; 公民或企业请用依申请开放 (--open)")
        try:
            name = catalogue.department(requester).name
        except (KeyError, StopIteration):
            known = ", ".join(f"{d.code}({d.name})" for d in catalogue.departments)
            raise ApplicationError(f"目录中没有部门 {requester!r} (可选: {known})") from None
        requester_name = requester_name or name
    else:
        if requester_type == RequesterType.department:
            raise ApplicationError("依申请开放的申请方是公民或企业 (--requester-type citizen|company)")
        if not (requester_name or requester or "").strip():
            raise ApplicationError("依申请开放须登记申请人名称 (--requester)")
        if not (scenario or "").strip() or not (security_measures or "").strip():
            # Leshan art. 26, Guigang art. 37: purpose, scenario and security measures
            raise ApplicationError("依申请开放须说明应用场景 (--scenario) 和安全保障措施 (--measures)")
        requester_name = requester_name or requester
    row_filter = check_filter(catalogue, library, row_filter)
    found = classify(catalogue, library, elements, kind)
    with wh.begin() as conn:
        store.lock(wh, conn)
        app = {k: None for k in store.APPLICATION_SCHEMA}
        app.update(application_id=_next_id(wh, conn, kind, today), kind=kind.value, requester=requester,
                   requester_type=requester_type.value, requester_name=requester_name, library=library,
                   purpose=purpose.strip(), scenario=(scenario or "").strip() or None,
                   security_measures=(security_measures or "").strip() or None, row_filter=row_filter, valid_until=until, linkage=linkage,
                   not_collected=not_collected, status=None, submitted_at=now, submitted_by=by or requester_name)
        rows = [{"application_id": app["application_id"], "element": r.code, "element_name": r.name,
                 "share_class": r.share_class, "authority": ",".join(r.authority), "decision": r.decision.value,
                 "reason": r.reason, "opinion_by": None, "opinion_at": None, "opinion_note": None} for r in found]
        pending = [r for r in found if r.decision == Decision.pending]
        granted = [r for r in found if r.decision == Decision.granted]
        if pending:
            event = Event.submitted
            app["opinion_due"] = deadlines.opinion_due(today, not_collected)
        elif granted:
            event = Event.granted_at_once
            app.update(decided_at=now, decided_by="gongshu", decision_note="无条件共享数据直接获取")
        else:
            event = Event.refused_at_once
            app.update(decided_at=now, decided_by="gongshu",
                       decision_note="; ".join(f"{r.name}: {r.reason}" for r in found))
        before = _move(app, event, now)
        store.save_application(wh, conn, app)
        store.save_elements(wh, conn, rows)
        note = "; ".join(f"{r.name}({r.code}) {r.decision.label}" + (f": {r.reason}" if r.reason else "") for r in found)
        store.append(wh, conn, store.EVENTS, [_event(app, event, before, by or requester_name, now, note,
                                                     [r.code for r in found])])
    return Applied(app, rows)


def _load(wh: Warehouse, conn: sa.Connection, application_id: str) -> tuple[dict, list[dict]]:
    apps = store.read_applications(wh, conn, application_id=(application_id or "").strip())
    if apps.is_empty():
        raise ApplicationError(f"没有编号为 {application_id} 的申请")
    return apps.row(0, named=True), list(store.read_elements(wh, conn, application_id.strip()).iter_rows(named=True))


def review(
    wh: Warehouse, application_id: str, *, dept: str, agree: bool, note: str | None = None,
    elements: list[str] | None = None, deadlines: Deadlines = DEFAULT_DEADLINES, at: dt.datetime | None = None,
    tz: dt.tzinfo = CITY_TZ,
) -> Applied:
    """A source department's opinion on its pending elements (all of them, or ``elements``)."""
    now = _now(at)
    if not agree and not (note or "").strip():
        raise ApplicationError("不同意共享须说明理由 (--note)")
    with wh.begin() as conn:
        store.lock(wh, conn)
        app, rows = _load(wh, conn, application_id)
        if not allowed(app["status"], Event.opinion):
            raise ApplicationError(f"申请 {app['application_id']} {ApplicationStatus(app['status']).label}, 不接受数源部门意见")
        mine = [r for r in rows if r["decision"] == Decision.pending.value and dept in (r["authority"] or "").split(",")
                and (not elements or r["element"] in elements)]
        if not mine:
            waiting = sorted({d for r in rows if r["decision"] == Decision.pending.value for d in r["authority"].split(",")})
            raise ApplicationError(f"申请 {app['application_id']} 没有待 {dept} 出具意见的数据元"
                                   + (f" (待 {', '.join(waiting)} 出具意见)" if waiting else ""))
        for r in mine:
            depts = r["authority"].split(",")
            # several authorities (a discriminated library): each one's agreement is needed
            agreed_by = set(filter(None, (r["opinion_by"] or "").split(","))) | {dept}
            if not agree:
                r.update(decision=Decision.refused.value, reason=f"数源部门 {dept} 不同意: {note}")
            elif agreed_by >= set(depts):
                r["decision"] = Decision.agreed.value
            r.update(opinion_by=",".join(sorted(agreed_by)), opinion_at=now,
                     opinion_note="\n".join(filter(None, [r["opinion_note"], f"{dept}: {note or '同意'}"])))
        store.save_elements(wh, conn, mine)
        events = []
        before = _move(app, Event.opinion, now)
        events.append(_event(app, Event.opinion, before, dept, now, ("同意" if agree else "不同意") + (f": {note}" if note else ""),
                             [r["element"] for r in mine]))
        if not any(r["decision"] == Decision.pending.value for r in rows):
            today = local_day(now, tz)
            if any(r["decision"] in (Decision.agreed.value, Decision.granted.value) for r in rows):
                before = _move(app, Event.opinions_complete, now)
                app.update(opinions_done_on=today, approval_due=deadlines.approval_due(today))
                events.append(_event(app, Event.opinions_complete, before, "gongshu", now,
                                     f"审批期限 {app['approval_due']}"))
            else:
                before = _move(app, Event.all_refused, now)
                app.update(opinions_done_on=today, decided_at=now, decided_by="gongshu",
                           decision_note="申请的数据元均不予共享")
                events.append(_event(app, Event.all_refused, before, "gongshu", now))
        store.save_application(wh, conn, app)
        store.append(wh, conn, store.EVENTS, events)
        return Applied(app, rows)


def decide(wh: Warehouse, application_id: str, *, approve: bool, by: str, note: str | None = None,
           at: dt.datetime | None = None) -> Applied:
    """The data bureau approves (agreed elements become granted) or rejects the application."""
    now = _now(at)
    if not (by or "").strip():
        raise ApplicationError("审批须注明审批人 (--by)")
    if not approve and not (note or "").strip():
        raise ApplicationError("不批准须说明理由 (--note)")
    event = Event.approved if approve else Event.rejected
    with wh.begin() as conn:
        store.lock(wh, conn)
        app, rows = _load(wh, conn, application_id)
        if not allowed(app["status"], event):
            raise ApplicationError(f"申请 {app['application_id']} {ApplicationStatus(app['status']).label}, 不能{event.label}")
        changed = []
        for r in rows:
            if r["decision"] == Decision.agreed.value:
                r["decision"] = (Decision.granted if approve else Decision.refused).value
                if not approve:
                    r["reason"] = f"大数据局不批准: {note}"
                changed.append(r)
            elif r["decision"] == Decision.pending.value and not approve:
                r.update(decision=Decision.refused.value, reason=f"大数据局不批准: {note}")
                changed.append(r)
        before = _move(app, event, now)
        app.update(decided_at=now, decided_by=by, decision_note=note)
        store.save_application(wh, conn, app)
        store.save_elements(wh, conn, changed)
        store.append(wh, conn, store.EVENTS, [_event(app, event, before, by, now, note, [r["element"] for r in changed])])
        return Applied(app, rows)


def revoke(wh: Warehouse, application_id: str, *, by: str, note: str, at: dt.datetime | None = None) -> Applied:
    """The bureau revokes an approved application: its deliveries stop the next night."""
    now = _now(at)
    if not (by or "").strip() or not (note or "").strip():
        raise ApplicationError("撤销须注明操作人 (--by) 和理由 (--note)")
    with wh.begin() as conn:
        store.lock(wh, conn)
        app, rows = _load(wh, conn, application_id)
        before = _move(app, Event.revoked, now)
        app.update(decided_at=now, decided_by=by, decision_note=note)
        store.save_application(wh, conn, app)
        store.append(wh, conn, store.EVENTS, [_event(app, Event.revoked, before, by, now, note)])
        return Applied(app, rows)


def expire(wh: Warehouse, today: dt.date, at: dt.datetime | None = None) -> list[str]:
    """Every active application whose ``valid_until`` has passed becomes expired; their ids."""
    now = _now(at)
    with wh.begin() as conn:
        store.lock(wh, conn)
        apps = store.read_applications(wh, conn, status=[s.value for s in (ApplicationStatus.opinion,
                                                                           ApplicationStatus.approval,
                                                                           ApplicationStatus.approved)])
        gone = [a for a in apps.iter_rows(named=True) if a["valid_until"] < today]
        events = []
        for app in gone:
            before = _move(app, Event.expired, now)
            store.save_application(wh, conn, app)
            events.append(_event(app, Event.expired, before, "gongshu", now, f"有效期至 {app['valid_until']}"))
        store.append(wh, conn, store.EVENTS, events)
    return [a["application_id"] for a in gone]


def deliverable(wh: Warehouse, today: dt.date) -> pl.DataFrame:
    """Applications whose extract is written on ``today``: approved and not past ``valid_until``."""
    apps = store.read_applications(wh, status=[ApplicationStatus.approved.value])
    return apps.filter(pl.col("valid_until") >= today)


def granted_elements(wh: Warehouse, application_id: str) -> list[str]:
    rows = store.read_elements(wh, application_id=application_id)
    return rows.filter(pl.col("decision") == Decision.granted.value).get_column("element").to_list()
