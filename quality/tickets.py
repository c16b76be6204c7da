"""校核 tickets: every failing record and every 一数一源 conflict group sent back to its department.

A ticket is one *record* of one resource (its entity key: all rules it fails, together) or one
*conflict group* (one entity of one library whose copy in the department differs from the
authority, all differing elements together). It opens with the department's report and is due
``ticket_working_days`` (5) working days after the report's date on the official calendar
(chinesecalendar: holidays skipped, 调休 weekends counted); the report of day D goes out the
following night, so the count starts on D + 1.

    open ──► overdue            the due date passed before the department reacted (escalated once)
      │ └──► answered ──► fixed  the department replied (command or reply XLSX); a later delivery
      │                          may still correct the record
      └────► fixed               a later delivery carries the entity without the failure
                                 (or the conflict is closed by the batch that fixed it)
    any active ──► closed        a data engineer closes it (e.g. the reply is accepted)

An extension (up to ``max_extension_working_days`` in total) moves the due date and records who
approved it. A problem seen again after its ticket was *fixed* is a new ticket; one closed by an
engineer stays closed for the same rules.

Tables: ``quality.tickets`` (current state, one row per ticket; the raw entity key stays in this
internal layer like ``quality.conflicts``) and ``audit.ticket_events`` (every transition, who and
when). Everything shown to people masks the key (:func:`mask_key`) and adds a keyed token.
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Element, Library, Resource
from catalog.normalize import parse_expr
from desensitize.linkage import NOTHING, Exposure
from desensitize.rules import (
    REDACTED,
    display_exposure,
    display_rule,
    display_spec,
    joint_specs,
    preview_spec,
)
from quality.freshness import add_working_days, end_of_day, is_working_day, working_days_between
from quality.rules import Dimension, Severity
from quality.scorecard import ScorecardConfig
from warehouse.store import Column, Warehouse

TICKETS = "tickets"
EVENTS = "ticket_events"
REPLY_SHEET = "校核工单"
REPLY_COLUMNS = ("校核单号", "回复说明", "回复人")

ACTIVE = ("open", "overdue", "answered")
UNRESOLVED = ("open", "overdue")
CITY_TZ = ZoneInfo("Asia/Shanghai")  # default only; commands pass the catalogue's zone
STATUS_LABEL = {"open": "待校核", "overdue": "已超期", "answered": "已答复", "fixed": "已修复", "closed": "已关闭"}
KIND_LABEL = {"record": "失败记录", "conflict": "一数一源冲突"}

TICKET_SCHEMA: dict[str, pl.DataType] = {
    "ticket_id": pl.String(), "kind": pl.String(), "department": pl.String(), "resource_id": pl.String(),
    "library": pl.String(), "entity_key": pl.String(), "keyed": pl.Boolean(), "items": pl.String(),
    "item_labels": pl.String(), "first_batch": pl.String(), "last_batch": pl.String(), "opened_on": pl.Date(),
    "reference": pl.String(), "working_days": pl.Int64(), "extension_days": pl.Int64(), "due_date": pl.Date(),
    "extended_by": pl.String(), "extended_at": pl.Datetime("us"), "extension_note": pl.String(),
    "status": pl.String(), "status_since": pl.Datetime("us"), "answered_at": pl.Datetime("us"),
    "answered_by": pl.String(), "answer_note": pl.String(), "fixed_batch": pl.String(), "resolved_on": pl.Date(),
    "resolved_on_time": pl.Boolean(), "escalated_on": pl.Date(), "closed_by": pl.String(),
    "updated_at": pl.Datetime("us"),
}
"""Times are UTC (naive), dates are the city's calendar days."""

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(), "ticket_id": pl.String(), "at": pl.Datetime("us"), "period": pl.Date(),
    "action": pl.String(), "from_status": pl.String(), "to_status": pl.String(), "actor": pl.String(),
    "note": pl.String(), "batch_id": pl.String(),
}


class TicketError(ValueError):
    """A transition that is not allowed (unknown ticket, already fixed, extension too long …)."""


# --- deadlines -----------------------------------------------------------------------------------


def due_date(opened_on: dt.date, working_days: int, is_workday=is_working_day) -> dt.date:
    """The last day to 校核: the ``working_days``-th working day after the report's date.

    A report dated 2026-09-30 (sent that night) with 5 working days is due on 2026-10-13: National
    Day (10-01..07) does not count, the 调休 Saturday 10-10 does.
    """
    end = add_working_days(end_of_day(opened_on, None), working_days, is_workday)
    return end.date() - dt.timedelta(days=1)


def working_days_late(due: dt.date, day: dt.date) -> int:
    """Whole working days after the due date, up to the end of ``day``."""
    return working_days_between(end_of_day(due, None), end_of_day(day, None))


# --- how a record is shown to people ---------------------------------------------------------------


def value_rule(element: Element | None):
    """The masking of a value in reports: its display rule (desensitize/rules.py :func:`display_spec`):
    the preview rule, and birth dates (and other sensitive dates) as the year only."""
    return display_rule(display_spec(element))


def mask_value(expr: pl.Expr, element: Element | None) -> pl.Expr:
    rule = value_rule(element)
    return rule(expr) if rule else expr.cast(pl.String)


def mask_key(expr: pl.Expr, lib: Library, key: Sequence[str], linked: Exposure = NOTHING) -> pl.Expr:
    """An ``a|b`` entity key with each part masked by its element; a row without key says so.

    The key stands in a row beside values of any element of the library (shown by
    :func:`value_rule`) and beside a keyed token, which joins it to whatever ``linked`` describes
    (the share outputs under the same key): its ID number is masked jointly with both
    (desensitize/linkage.py), e.g. Hutool ID_CARD where a share output publishes birth dates in full.
    """
    specs = joint_specs({k: (lib.element(k), display_spec(lib.element(k))) for k in key},
                        display_exposure(lib.elements) | linked)
    parts = expr.str.split("|")
    masked = pl.concat_str([_shown(parts.list.get(i, null_on_oob=True), specs[k]) for i, k in enumerate(key)],
                           separator="|")
    row = expr.str.extract(r"#(\d+)$", 1)
    return pl.when(expr.str.starts_with("#")).then(pl.concat_str([pl.lit("(主键缺失) 第"), row, pl.lit("行")])) \
        .otherwise(masked)


def _shown(expr: pl.Expr, spec: str | None) -> pl.Expr:
    rule = display_rule(spec)
    return rule(expr) if rule else expr.cast(pl.String)


# --- failing records of a batch ----------------------------------------------------------------------

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "department": pl.String(), "resource_id": pl.String(), "batch_id": pl.String(), "row_no": pl.Int64(),
    "rule_id": pl.String(), "label": pl.String(), "dimension": pl.String(), "severity": pl.String(),
    "field": pl.String(), "entity_key": pl.String(), "keyed": pl.Boolean(), "value_masked": pl.String(),
    "expected": pl.String(),
}
"""A failing record with its raw entity key (internal) and masked value."""

_PARSE_DIMENSION = {"unparseable": Dimension.accessibility, "wrong_encoding": Dimension.accessibility,
                    "bad_encoding": Dimension.accessibility, "nul_byte": Dimension.accessibility,
                    "formula_no_value": Dimension.accessibility,
                    "bad_date": Dimension.conformity, "bad_number": Dimension.conformity}


def batch_keys(wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_id: str) -> pl.DataFrame:
    """(row_no, entity_key) of every record of a batch, the key parsed as the 标准层 parses it.

    Read from the ODS so quarantined rows have their key too; null when a key part is missing.
    """
    lib = catalogue.library(resource.library)
    fields = {f.element: f for f in resource.fields}
    cols = sorted({fields[k].column for k in resource.key if k in fields})
    schema = {"_row_no": pl.Int64(), **{c: pl.String() for c in cols}}
    if not wh.exists("ods", resource.id):
        return pl.DataFrame(schema={"row_no": pl.Int64(), "entity_key": pl.String()})
    select = ", ".join(wh.quote(c) for c in schema)
    with wh.engine.connect() as conn:
        raw = wh.read(conn, f"SELECT {select} FROM {wh.qualified('ods', resource.id)} WHERE _batch_id = :b",
                      schema, {"b": batch_id})
    parts = []
    for k in resource.key:
        if k in fields:
            f = fields[k]
            parts.append(parse_expr(lib.element(k), pl.col(f.column), f.formats, f.codes).cast(pl.String))
        else:
            parts.append(pl.lit(resource.constants.get(k), pl.String))
    return raw.select(pl.col("_row_no").alias("row_no"), pl.concat_str(parts, separator="|").alias("entity_key"))


def _rule_meta(wh: Warehouse, batch_id: str) -> pl.DataFrame:
    schema = {"rule_id": pl.String(), "label": pl.String(), "dimension": pl.String(), "severity": pl.String(),
              "checked_at": pl.Datetime("us")}
    if not wh.exists("quality", "rule_results"):
        return pl.DataFrame(schema=schema).drop("checked_at")
    with wh.engine.connect() as conn:
        meta = wh.read(conn, f"SELECT rule_id, label, dimension, severity, checked_at FROM "
                             f"{wh.qualified('quality', 'rule_results')} WHERE batch_id = :b", schema, {"b": batch_id})
    return meta.sort("checked_at").unique("rule_id", keep="last").drop("checked_at")


def failing_records(wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_id: str,
                    keys: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every failing record of a batch: rule failures (``quality.failures``) and rows quarantined
    because they could not be read or parsed, each with its entity key and a masked value.

    ``keys``: the batch's :func:`batch_keys`, when the caller has read them already."""
    lib = catalogue.library(resource.library)
    elements = {e.code: e for e in lib.elements}
    keys = batch_keys(wh, catalogue, resource, batch_id) if keys is None else keys
    frames = []
    with wh.engine.connect() as conn:
        if wh.exists("quality", "failures"):
            f_schema = {"row_no": pl.Int64(), "rule_id": pl.String(), "field": pl.String(),
                        "value_masked": pl.String(), "expected": pl.String()}
            fails = wh.read(conn, f"SELECT row_no, rule_id, field, value_masked, expected FROM "
                                  f"{wh.qualified('quality', 'failures')} WHERE batch_id = :b", f_schema, {"b": batch_id})
            meta = _rule_meta(wh, batch_id)
            fails = fails.join(meta, on="rule_id", how="left").with_columns(
                pl.col("label").fill_null(pl.col("rule_id")))
            # the found value was masked by its display rule when stored (a birth date by its year);
            # rows stored before that showed a whole date: cut here too. The date the ID number
            # implies is never shown (it would complete the masked number)
            value = pl.col("value_masked")
            for code, e in elements.items():
                rule = value_rule(e)
                if rule is not None and preview_spec(e) is None:
                    value = pl.when(pl.col("field") == code).then(rule(pl.col("value_masked"))).otherwise(value)
            frames.append(fails.with_columns(
                value.alias("value_masked"),
                pl.when(pl.col("rule_id").str.ends_with(".id_birth_date")).then(pl.lit("与身份号码中的出生日期一致"))
                .otherwise(pl.col("expected")).alias("expected"),
            ))
        if wh.exists("quality", "quarantine"):
            q_schema = {"row_no": pl.Int64(), "field": pl.String(), "reason_code": pl.String(),
                        "reason": pl.String(), "raw_value": pl.String()}
            codes = ", ".join(f"'{c}'" for c in _PARSE_DIMENSION)
            q = wh.read(conn, f"SELECT row_no, field, reason_code, reason, raw_value FROM "
                              f"{wh.qualified('quality', 'quarantine')} WHERE batch_id = :b AND reason_code IN ({codes})",
                        q_schema, {"b": batch_id})
            value = pl.lit(REDACTED)  # a whole unparseable line (field null) is never shown
            for code, e in elements.items():
                value = pl.when(pl.col("field") == code).then(mask_value(pl.col("raw_value"), e)).otherwise(value)
            frames.append(q.select(
                "row_no", pl.col("reason_code").alias("rule_id"), pl.col("reason").alias("label"),
                pl.col("reason_code").replace_strict({k: v.value for k, v in _PARSE_DIMENSION.items()}).alias("dimension"),
                pl.lit(Severity.blocking.value).alias("severity"), "field", value.alias("value_masked"),
                pl.lit("符合目录声明的格式").alias("expected"),
            ))
    if not frames:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    cols = ["row_no", "rule_id", "label", "dimension", "severity", "field", "value_masked", "expected"]
    found = pl.concat([f.select(cols).cast({"row_no": pl.Int64}) for f in frames])
    keyed = found.join(keys, on="row_no", how="left")
    return keyed.select(
        pl.lit(resource.department).alias("department"), pl.lit(resource.id).alias("resource_id"),
        pl.lit(batch_id).alias("batch_id"), "row_no", "rule_id", "label", "dimension", "severity", "field",
        pl.coalesce("entity_key", pl.concat_str([pl.lit(f"#{batch_id}#"), pl.col("row_no").cast(pl.String)]))
        .alias("entity_key"),
        pl.col("entity_key").is_not_null().alias("keyed"), "value_masked", "expected",
    ).cast(RECORD_SCHEMA).sort("row_no", "rule_id")


# --- storage -------------------------------------------------------------------------------------


def tickets_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", TICKETS, [Column(n, t) for n, t in TICKET_SCHEMA.items()],
                    primary_key=["ticket_id"], indexes=[["department", "status"], ["kind", "resource_id"]])


def events_table(wh: Warehouse) -> sa.Table:
    return wh.table("audit", EVENTS, [Column(n, t) for n, t in EVENT_SCHEMA.items()],
                    primary_key=["event_id"], indexes=[["ticket_id"]])


def read_tickets(wh: Warehouse, conn: sa.Connection | None = None, department: str | None = None) -> pl.DataFrame:
    """Tickets (every status), by ticket id."""
    if not wh.exists("quality", TICKETS):
        return pl.DataFrame(schema=TICKET_SCHEMA)
    where, params = ("WHERE department = :d", {"d": department}) if department else ("", {})
    sql = f"SELECT {', '.join(TICKET_SCHEMA)} FROM {wh.qualified('quality', TICKETS)} {where} ORDER BY ticket_id"
    if conn is not None:
        return wh.read(conn, sql, TICKET_SCHEMA, params)
    with wh.engine.connect() as c:
        return wh.read(c, sql, TICKET_SCHEMA, params)


def read_events(wh: Warehouse, ticket_id: str | None = None) -> pl.DataFrame:
    if not wh.exists("audit", EVENTS):
        return pl.DataFrame(schema=EVENT_SCHEMA)
    where, params = ("WHERE ticket_id = :t", {"t": ticket_id}) if ticket_id else ("", {})
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {', '.join(EVENT_SCHEMA)} FROM {wh.qualified('audit', EVENTS)} {where} "
                             "ORDER BY at, event_id", EVENT_SCHEMA, params)


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class _Ledger:
    """Ticket rows being changed in one transaction, and the events that say how."""

    def __init__(self, rows: list[dict], period: dt.date | None, now: dt.datetime):
        self.rows = {r["ticket_id"]: r for r in rows}
        self.changed: set[str] = set()
        self.events: list[dict] = []
        self.period = period
        self.now = now

    def add(self, row: dict, actor: str | None = "gongshu", note: str | None = None, batch: str | None = None) -> None:
        self.rows[row["ticket_id"]] = row
        self._log(row, "opened", None, row["status"], actor, note, batch)

    def move(self, t: dict, status: str, action: str, actor: str | None = "gongshu", note: str | None = None,
             batch: str | None = None, **values) -> None:
        before = t["status"]
        t.update(values)
        if status != before:
            t["status_since"] = self.now
        t["status"] = status
        t["updated_at"] = self.now
        self._log(t, action, before, status, actor, note, batch)

    def touch(self, t: dict, **values) -> None:
        if any(t.get(k) != v for k, v in values.items()):
            t.update(values, updated_at=self.now)
            self.changed.add(t["ticket_id"])

    def _log(self, t: dict, action: str, before: str | None, after: str, actor, note, batch) -> None:
        self.changed.add(t["ticket_id"])
        self.events.append({"event_id": uuid.uuid4().hex, "ticket_id": t["ticket_id"], "at": self.now,
                            "period": self.period, "action": action, "from_status": before, "to_status": after,
                            "actor": actor, "note": note, "batch_id": batch})

    def write(self, wh: Warehouse, conn: sa.Connection) -> None:
        if not self.changed:
            return
        rows = pl.DataFrame([self.rows[i] for i in sorted(self.changed)], schema=TICKET_SCHEMA)
        tmp = wh.temp_table(conn, "gongshu_ticket_ids", rows.select("ticket_id"))
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', TICKETS)} WHERE ticket_id IN "
                             f"(SELECT ticket_id FROM {tmp})"))
        conn.execute(sa.text(f"DROP TABLE {tmp}"))
        wh.insert(conn, tickets_table(wh), rows)
        wh.insert(conn, events_table(wh), pl.DataFrame(self.events, schema=EVENT_SCHEMA))


def _open_ledger(wh: Warehouse, conn: sa.Connection, period: dt.date | None, now: dt.datetime) -> _Ledger:
    for t in (tickets_table(wh), events_table(wh)):
        wh.create(conn, t)
    if wh.is_postgres:  # the nightly sync and a command answering a ticket may run at once
        conn.execute(sa.text(f"LOCK TABLE {wh.qualified('quality', TICKETS)} IN SHARE ROW EXCLUSIVE MODE"))
    return _Ledger(list(read_tickets(wh, conn).iter_rows(named=True)), period, now)


# --- the nightly sync ------------------------------------------------------------------------------


def batch_order(batch_id: str | None) -> tuple[str, int]:
    """Sort key of ``<resource>.<YYYYMMDD>.<seq>``: date, then re-delivery sequence."""
    m = re.search(r"\.(\d{8})\.(\d+)$", batch_id or "")
    return (m.group(1), int(m.group(2))) if m else ("", 0)


def batch_day(batch_id: str) -> dt.date:
    return dt.datetime.strptime(batch_order(batch_id)[0], "%Y%m%d").date()


@dataclass
class TicketSync:
    """What one sync did, by ticket id."""

    period: dt.date
    opened: list[str] = field(default_factory=list)
    seen_again: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)  # newly overdue: escalated to the data engineers


def _reconciled_batches(wh: Warehouse, day: dt.date) -> dict[str, list[str]]:
    """Standardised batches up to ``day`` per resource, the newest re-delivery of each date, in order."""
    if not wh.exists("audit", "reconciliation"):
        return {}
    schema = {"resource_id": pl.String(), "batch_id": pl.String()}
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT resource_id, batch_id FROM {wh.qualified('audit', 'reconciliation')} "
                              "WHERE batch_date <= :d", schema, {"d": day})
    out: dict[str, dict[str, str]] = {}
    for r in frame.iter_rows(named=True):
        date, _ = batch_order(r["batch_id"])
        per = out.setdefault(r["resource_id"], {})
        if date not in per or batch_order(per[date]) < batch_order(r["batch_id"]):
            per[date] = r["batch_id"]
    return {rid: sorted(v.values(), key=batch_order) for rid, v in out.items()}


def _group(records: pl.DataFrame) -> dict[str, dict]:
    """Failing records of a batch per entity: the rules it fails, with their labels."""
    out: dict[str, dict] = {}
    for r in records.group_by("entity_key").agg("keyed", "rule_id", "label").iter_rows(named=True):
        rules = sorted(set(zip(r["rule_id"], r["label"], strict=True)))
        out[r["entity_key"]] = {"keyed": bool(r["keyed"][0]), "items": "; ".join(i for i, _ in rules),
                                "item_labels": "; ".join(lbl for _, lbl in rules)}
    return out


def conflicts_open_at(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(conflicts open at the end of ``day``, conflicts closed by then)."""
    from quality.conflicts import CONFLICTS, TABLE_SCHEMA

    if not wh.exists("quality", CONFLICTS):
        empty = pl.DataFrame(schema=TABLE_SCHEMA)
        return empty, empty
    with wh.engine.connect() as conn:
        rows = wh.read(conn, f"SELECT {', '.join(wh.quote(c) for c in TABLE_SCHEMA)} FROM "
                             f"{wh.qualified('quality', CONFLICTS)}", TABLE_SCHEMA)
    rows = rows.filter(pl.col("library").is_in([lib.code for lib in catalogue.libraries])
                       & (pl.col("first_seen_date") <= day))
    is_open = (pl.col("status") == "open") | (pl.col("closed_date") > day)
    return rows.filter(is_open), rows.filter(~is_open & (pl.col("closed_date") <= day))


def _new_ticket(kind: str, dept: str, resource_id: str | None, library: str, entity_key: str, keyed: bool,
                items: str, labels: str, batch: str, day: dt.date, reference: str | None,
                config: ScorecardConfig, now: dt.datetime) -> dict:
    return {
        "ticket_id": None, "kind": kind, "department": dept, "resource_id": resource_id, "library": library,
        "entity_key": entity_key, "keyed": keyed, "items": items, "item_labels": labels, "first_batch": batch,
        "last_batch": batch, "opened_on": day, "reference": reference, "working_days": config.ticket_working_days,
        "extension_days": 0, "due_date": due_date(day, config.ticket_working_days), "extended_by": None,
        "extended_at": None, "extension_note": None, "status": "open", "status_since": now, "answered_at": None,
        "answered_by": None, "answer_note": None, "fixed_batch": None, "resolved_on": None,
        "resolved_on_time": None, "escalated_on": None, "closed_by": None, "updated_at": now,
    }


def _fix(ledger: _Ledger, t: dict, batch: str, on: dt.date, note: str) -> None:
    values: dict = {"fixed_batch": batch}
    if t["status"] in UNRESOLVED:
        values.update(resolved_on=on, resolved_on_time=on <= t["due_date"])
    ledger.move(t, "fixed", "fixed", note=note, batch=batch, **values)


def sync_tickets(
    wh: Warehouse,
    catalogue: Catalogue,
    day: dt.date,
    config: ScorecardConfig,
    references: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
) -> TicketSync:
    """Bring every ticket up to the end of batch date ``day``: open tickets for the failing records
    of each resource's latest batch and for open conflict groups, fix the ones a later delivery
    corrected, mark the ones past due as overdue. Idempotent for a given day."""
    now = now or _utcnow()
    references = references or {}
    batches = _reconciled_batches(wh, day)
    known = {t["ticket_id"]: t for t in read_tickets(wh).iter_rows(named=True)}

    # The heavy reads happen before the write transaction: failing records and keys of the batches
    # each resource's active tickets have not seen yet, and of its latest batch.
    loaded: dict[str, tuple[dict[str, dict], set[str]]] = {}
    plan: dict[str, list[str]] = {}
    for resource in catalogue.resources:
        ids = batches.get(resource.id)
        if not ids:
            continue
        active = [t for t in known.values() if t["kind"] == "record" and t["resource_id"] == resource.id
                  and t["status"] in ACTIVE]
        since = min((batch_order(t["last_batch"]) for t in active), default=batch_order(ids[-1]))
        plan[resource.id] = [b for b in ids if batch_order(b) > since] or [ids[-1]]
        if ids[-1] not in plan[resource.id]:
            plan[resource.id].append(ids[-1])
        for b in plan[resource.id]:
            keys = batch_keys(wh, catalogue, resource, b)
            records = failing_records(wh, catalogue, resource, b, keys)
            loaded[b] = (_group(records), set(keys.get_column("entity_key").drop_nulls().to_list()))
    open_conflicts, closed_conflicts = conflicts_open_at(wh, catalogue, day)

    result = TicketSync(day)
    with wh.begin() as conn:
        ledger = _open_ledger(wh, conn, day, now)
        rows = ledger.rows
        new: list[dict] = []

        def active_of(kind: str, scope: str, scope_col: str) -> dict[str, dict]:
            return {t["entity_key"]: t for t in rows.values()
                    if t["kind"] == kind and t[scope_col] == scope and t["status"] in ACTIVE}

        closed: dict[tuple, list[set[str]]] = {}
        for t in rows.values():
            if t["status"] == "closed":
                scope = t["resource_id"] if t["kind"] == "record" else (t["department"], t["library"])
                closed.setdefault((t["kind"], scope, t["entity_key"]), []).append(set(t["items"].split("; ")))

        def closed_for(kind: str, scope, entity: str, items: str) -> bool:
            """An engineer closed this entity's ticket for these rules: do not reopen it."""
            wanted = set(items.split("; "))
            return any(wanted <= done for done in closed.get((kind, scope, entity), []))

        for resource in catalogue.resources:
            for b in plan.get(resource.id, []):
                failing, carried = loaded[b]
                active = active_of("record", resource.id, "resource_id")
                for entity, t in active.items():
                    if batch_order(t["last_batch"]) >= batch_order(b):
                        continue
                    if entity in failing:
                        ledger.touch(t, last_batch=b, items=failing[entity]["items"],
                                     item_labels=failing[entity]["item_labels"])
                        result.seen_again.append(t["ticket_id"])
                    elif entity in carried:
                        _fix(ledger, t, b, batch_day(b), "后续交付已更正该记录")
                        result.fixed.append(t["ticket_id"])
                if b != batches[resource.id][-1]:
                    continue
                active = active_of("record", resource.id, "resource_id")
                lib = resource.library
                for entity in sorted(set(failing) - set(active)):
                    f = failing[entity]
                    if closed_for("record", resource.id, entity, f["items"]):
                        continue
                    new.append(_new_ticket("record", resource.department, resource.id, lib, entity, f["keyed"],
                                           f["items"], f["item_labels"], b, day,
                                           references.get(resource.department), config, now))

        # 一数一源: one ticket per entity and department of a library, all its differing elements
        names = {(lib.code, e.code): e.name for lib in catalogue.libraries for e in lib.elements}
        groups: dict[tuple[str, str, str], dict] = {}
        for r in open_conflicts.sort("element").iter_rows(named=True):
            g = groups.setdefault((r["department"], r["library"], r["entity_key"]),
                                  {"elements": [], "resource_id": r["resource_id"], "last": r["last_seen_batch"]})
            g["elements"].append(r["element"])
            g["last"] = max(g["last"], r["last_seen_batch"], key=batch_order)
        closed_by_key: dict[tuple[str, str, str], tuple[str, dt.date]] = {}
        for r in closed_conflicts.iter_rows(named=True):
            k = (r["department"], r["library"], r["entity_key"])
            if k not in closed_by_key or closed_by_key[k][1] < r["closed_date"]:
                closed_by_key[k] = (r["closed_batch"], r["closed_date"])
        active_conflicts = {(t["department"], t["library"], t["entity_key"]): t for t in rows.values()
                            if t["kind"] == "conflict" and t["status"] in ACTIVE}
        for k, t in active_conflicts.items():
            if k in groups:
                g = groups[k]
                ledger.touch(t, last_batch=g["last"], items="; ".join(g["elements"]),
                             item_labels="; ".join(f"{names.get((k[1], e), e)}与权威部门不一致" for e in g["elements"]))
            elif k in closed_by_key:
                batch, on = closed_by_key[k]
                _fix(ledger, t, batch, on, "冲突已由后续交付消除")
                result.fixed.append(t["ticket_id"])
        for k in sorted(set(groups) - set(active_conflicts)):
            g = groups[k]
            items = "; ".join(g["elements"])
            if closed_for("conflict", (k[0], k[1]), k[2], items):
                continue
            labels = "; ".join(f"{names.get((k[1], e), e)}与权威部门不一致" for e in g["elements"])
            new.append(_new_ticket("conflict", k[0], g["resource_id"], k[1], k[2], True, items, labels, g["last"],
                                   day, references.get(k[0]), config, now))

        # numbering: JH-<DEPT>-<YYYYMMDD>-<seq>, continuing any earlier tickets of the same day
        for dept in sorted({t["department"] for t in new}):
            prefix = f"JH-{dept.upper()}-{day:%Y%m%d}-"
            seq = max((int(i.rsplit("-", 1)[1]) for i in rows if i.startswith(prefix)), default=0)
            for t in sorted((t for t in new if t["department"] == dept),
                            key=lambda t: (t["kind"] != "record", t["resource_id"] or "", t["entity_key"])):
                seq += 1
                t["ticket_id"] = f"{prefix}{seq:04d}"
                ledger.add(t, note=t["item_labels"], batch=t["last_batch"])
                result.opened.append(t["ticket_id"])

        for t in list(rows.values()):
            if t["status"] == "open" and t["due_date"] <= day:
                ledger.move(t, "overdue", "overdue", note=f"超过校核期限 {t['due_date']}, 已上报数据工程师",
                            escalated_on=t["escalated_on"] or day)
                result.overdue.append(t["ticket_id"])
        ledger.write(wh, conn)
    return result


def response_counts(tickets: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Per department at the end of ``day``: tickets due (deadline passed), closed on time, overdue.

    A ticket is due once its due date is over; it was closed on time when answered, fixed or closed
    by its due date; it is overdue when it is due and still unresolved at ``day``.
    """
    t = tickets.filter((pl.col("opened_on") <= day) & (pl.col("due_date") <= day))
    resolved_by_day = pl.col("resolved_on").is_not_null() & (pl.col("resolved_on") <= day)
    return t.group_by("department").agg(
        pl.len().cast(pl.Int64).alias("due"),
        (resolved_by_day & (pl.col("resolved_on") <= pl.col("due_date"))).sum().cast(pl.Int64).alias("on_time"),
        (~resolved_by_day).sum().cast(pl.Int64).alias("overdue"),
    ).sort("department")


# --- commands: answer, extend, close, reply workbook --------------------------------------------------


def _local_day(at: dt.datetime, tz: dt.tzinfo) -> dt.date:
    aware = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at
    return aware.astimezone(tz).date()


def _get(ledger: _Ledger, ticket_id: str) -> dict:
    t = ledger.rows.get(ticket_id.strip())
    if t is None:
        raise TicketError(f"没有编号为 {ticket_id} 的校核单")
    return t


def answer_ticket(
    wh: Warehouse, ticket_id: str, note: str, by: str | None = None, *, at: dt.datetime | None = None,
    tz: dt.tzinfo = CITY_TZ, source: str = "command",
) -> dict:
    """The department's 校核 reply: open/overdue → answered (on time if by the due date)."""
    note = (note or "").strip()
    if not note:
        raise TicketError("回复说明不能为空")
    now = (at.astimezone(dt.UTC).replace(tzinfo=None) if at and at.tzinfo else at) or _utcnow()
    with wh.begin() as conn:
        ledger = _open_ledger(wh, conn, None, now)
        t = _get(ledger, ticket_id)
        if t["status"] not in ACTIVE:
            raise TicketError(f"校核单 {t['ticket_id']} {STATUS_LABEL[t['status']]}, 无需再答复")
        on = _local_day(now, tz)
        values: dict = {"answered_at": now, "answered_by": by, "answer_note": note}
        if t["status"] in UNRESOLVED:
            values.update(resolved_on=on, resolved_on_time=on <= t["due_date"])
        elif t["answer_note"]:
            values["answer_note"] = f"{t['answer_note']}\n{note}"
        ledger.move(t, "answered", "answered", actor=by, note=f"{note} (来源: {source})", **values)
        ledger.write(wh, conn)
        return dict(t)


def extend_ticket(
    wh: Warehouse, ticket_id: str, days: int, approved_by: str, config: ScorecardConfig, *,
    note: str | None = None, at: dt.datetime | None = None, tz: dt.tzinfo = CITY_TZ,
) -> dict:
    """Extend the 校核 deadline by ``days`` working days, with the approver recorded."""
    if days < 1:
        raise TicketError("延期天数应为正整数(工作日)")
    if not (approved_by or "").strip():
        raise TicketError("延期须注明批准人 (--approved-by)")
    now = (at.astimezone(dt.UTC).replace(tzinfo=None) if at and at.tzinfo else at) or _utcnow()
    with wh.begin() as conn:
        ledger = _open_ledger(wh, conn, None, now)
        t = _get(ledger, ticket_id)
        if t["status"] not in UNRESOLVED:
            raise TicketError(f"校核单 {t['ticket_id']} {STATUS_LABEL[t['status']]}, 不能延期")
        total = int(t["extension_days"] or 0) + days
        if total > config.max_extension_working_days:
            raise TicketError(f"延期合计 {total} 个工作日, 超过上限 {config.max_extension_working_days} 个工作日")
        due = due_date(t["opened_on"], int(t["working_days"]) + total)
        today = _local_day(now, tz)
        status = "open" if t["status"] == "overdue" and due >= today else t["status"]
        text = f"延期 {days} 个工作日 (合计 {total}), 新期限 {due}" + (f"; {note}" if note else "")
        ledger.move(t, status, "extended", actor=approved_by, note=text, extension_days=total, due_date=due,
                    extended_by=approved_by, extended_at=now, extension_note=note)
        ledger.write(wh, conn)
        return dict(t)


def close_ticket(
    wh: Warehouse, ticket_id: str, by: str, note: str | None = None, *, at: dt.datetime | None = None,
    tz: dt.tzinfo = CITY_TZ,
) -> dict:
    """A data engineer closes a ticket (e.g. the department's reply is accepted)."""
    if not (by or "").strip():
        raise TicketError("关闭须注明操作人 (--by)")
    now = (at.astimezone(dt.UTC).replace(tzinfo=None) if at and at.tzinfo else at) or _utcnow()
    with wh.begin() as conn:
        ledger = _open_ledger(wh, conn, None, now)
        t = _get(ledger, ticket_id)
        if t["status"] not in ACTIVE:
            raise TicketError(f"校核单 {t['ticket_id']} {STATUS_LABEL[t['status']]}")
        values: dict = {"closed_by": by}
        if t["status"] in UNRESOLVED:
            on = _local_day(now, tz)
            values.update(resolved_on=on, resolved_on_time=on <= t["due_date"])
        ledger.move(t, "closed", "closed", actor=by, note=note, **values)
        ledger.write(wh, conn)
        return dict(t)


@dataclass
class ReplyImport:
    answered: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (ticket id, why)
    blank: int = 0  # rows without a reply


def import_reply(
    wh: Warehouse, path: Path | str, *, at: dt.datetime | None = None, tz: dt.tzinfo = CITY_TZ,
) -> ReplyImport:
    """Answer tickets from a department's reply workbook: the report's XLSX with the sheet
    「校核工单」 filled in (回复说明, 回复人)."""
    from openpyxl import load_workbook

    wb = load_workbook(Path(path), read_only=True, data_only=True)
    try:
        if REPLY_SHEET not in wb.sheetnames:
            raise TicketError(f"{Path(path).name}: 没有工作表「{REPLY_SHEET}」")
        rows = list(wb[REPLY_SHEET].iter_rows(values_only=True))
    finally:
        wb.close()
    header_at = next((i for i, r in enumerate(rows[:20]) if r and REPLY_COLUMNS[0] in [str(c or "").strip() for c in r]),
                     None)
    if header_at is None:
        raise TicketError(f"{Path(path).name}: 「{REPLY_SHEET}」中找不到表头「{REPLY_COLUMNS[0]}」")
    header = [str(c or "").strip() for c in rows[header_at]]
    missing = [c for c in REPLY_COLUMNS[:2] if c not in header]
    if missing:
        raise TicketError(f"{Path(path).name}: 「{REPLY_SHEET}」缺少列 {'、'.join(missing)}")
    idx = {c: header.index(c) for c in REPLY_COLUMNS if c in header}
    out = ReplyImport()
    for r in rows[header_at + 1:]:
        def cell(name: str, r=r) -> str:
            i = idx.get(name)
            return "" if i is None or i >= len(r) or r[i] is None else str(r[i]).strip()

        ticket_id, note = cell("校核单号"), cell("回复说明")
        if not ticket_id:
            continue
        if not note:
            out.blank += 1
            continue
        try:
            answer_ticket(wh, ticket_id, note, cell("回复人") or None, at=at, tz=tz, source=Path(path).name)
            out.answered.append(ticket_id)
        except TicketError as exc:
            out.skipped.append((ticket_id, str(exc)))
    return out
