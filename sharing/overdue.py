"""Overdue opinions and approvals: listed in the data bureau's daily summary, and mailed once per
application and stage (the source departments and the data engineers for an opinion, the data
engineers for an approval), like 校核 escalations. Each mail is an ``audit.share_events`` row."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import polars as pl

from catalog.loader import Catalogue
from catalog.models import Labelled
from quality.mail import Mailer, MailError
from quality.templating import render
from quality.tickets.transitions import working_days_late
from sharing import store
from sharing.workflow import ApplicationStatus


class MailAction(Labelled):
    """``audit.share_events.action`` of a mail about an application (beside the ``Event`` values)."""

    overdue = "mail_overdue", "超期通知邮件"


def overdue_applications(wh, today: dt.date) -> list[dict]:
    """Applications whose opinion or approval is past its due date on ``today``: one dict each, with
    the stage, the due date, working days late and the departments still to answer."""
    apps = store.read_applications(wh, status=[ApplicationStatus.opinion.value, ApplicationStatus.approval.value])
    out = []
    for a in apps.iter_rows(named=True):
        stage, due = ("opinion", a["opinion_due"]) if a["status"] == "opinion" else ("approval", a["approval_due"])
        if due is None or today <= due:
            continue
        waiting = []
        if stage == "opinion":
            els = store.read_elements(wh, application_id=a["application_id"])
            waiting = sorted({d for r in els.filter(pl.col("decision") == "pending").iter_rows(named=True)
                              for d in (r["authority"] or "").split(",") if d})
        out.append({**a, "stage": stage, "due": due, "late": working_days_late(due, today), "waiting": waiting,
                    "escalated_on": a["opinion_escalated_on"] if stage == "opinion" else a["approval_escalated_on"]})
    return out


def summary_lines(wh, catalogue: Catalogue, today: dt.date) -> list[str]:
    """The daily summary's section: active applications and the overdue ones."""
    if not wh.exists("share", store.APPLICATIONS):
        return []
    apps = store.read_applications(wh)
    if apps.is_empty():
        return []
    counts = apps.group_by("status").len().sort("status")
    lines = ["", f"共享申请 · {today}: " + ", ".join(f"{ApplicationStatus(s).label} {n}" for s, n in counts.iter_rows())]
    depts = {d.code: d.name for d in catalogue.departments}
    for a in overdue_applications(wh, today):
        who = ("待 " + "、".join(depts.get(d, d) for d in a["waiting"]) + " 出具意见") if a["stage"] == "opinion" \
            else "待大数据局审批"
        lines.append(f"  ✗ 超期 {a['application_id']} {a['requester_name']} · {who} · 期限 {a['due']} · "
                     f"已超 {a['late']} 个工作日" + (f" · 已于 {a['escalated_on']} 通知" if a["escalated_on"] else ""))
    return lines


def escalate(wh, catalogue: Catalogue, today: dt.date, mailer: Mailer | None, engineers: Sequence[str] = ()) -> list[str]:
    """Mail every newly overdue opinion or approval once; the application ids mailed."""
    depts = {d.code: d for d in catalogue.departments}
    sent = []
    for a in overdue_applications(wh, today):
        if a["escalated_on"] is not None or mailer is None:
            continue
        to = list(engineers) + [e for d in a["waiting"] for e in (depts[d].emails if d in depts else [])]
        if not to:
            continue
        stage = "数源部门意见" if a["stage"] == "opinion" else "大数据局审批"
        subject = f"【共享申请超期】{a['application_id']} {a['requester_name']} {stage}已超期 {a['late']} 个工作日"
        html = render("share_overdue.html.j2", a=a, stage=stage,
                      waiting=[depts[d].name if d in depts else d for d in a["waiting"]], today=today)
        try:
            mailer.send(to, subject, html, category="share_overdue", reference=f"{a['application_id']}-{a['stage']}")
        except MailError:
            continue  # the next evaluation tries again
        now = store.utcnow()
        column = "opinion_escalated_on" if a["stage"] == "opinion" else "approval_escalated_on"
        with wh.begin() as conn:
            store.lock(wh, conn)
            row = store.read_applications(wh, conn, application_id=a["application_id"]).row(0, named=True)
            row[column] = today
            row["updated_at"] = now
            store.save_application(wh, conn, row)
            store.append(wh, conn, store.EVENTS, [{
                "event_id": store.new_id(), "application_id": a["application_id"], "at": now, "action": MailAction.overdue.value,
                "from_status": row["status"], "to_status": row["status"], "actor": "gongshu",
                "note": f"{subject} → {', '.join(to)}", "elements": None, "rows": None}])
        sent.append(a["application_id"])
    return sent
