"""Reports delivered: the files under ``$GONGSHU_HOME/reports/<date>/<dept>.html|.xlsx`` and the mails
(through the :class:`~quality.mail.Mailer`: SMTP or the outbox; audited, once per report number),
and the notice to the data engineers about newly overdue tickets."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from catalog.models import Labelled
from quality.mail import Attachment, Mailer, MailError, read_deliveries
from quality.report.context import DepartmentReport
from quality.templating import render
from quality.tickets.transitions import TicketKind
from warehouse.store import Warehouse

REPORT_CATEGORY = "quality_report"
ESCALATION_CATEGORY = "ticket_escalation"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class Delivery(Labelled):
    """What became of a mail: a delivery status is one of these, ``sent`` and ``failed`` with details
    (``sent (outbox)``, ``failed: …``)."""

    sent = "sent", "已发送"
    failed = "failed", "发送失败"
    already_sent = "already sent", "此前已发送"
    no_recipients = "no recipients", "无收件人"
    not_sent = "not sent", "未发送"


def delivery_label(status: str) -> str:
    """A delivery status in Chinese: 已发送(发件箱), 已发送(SMTP), 发送失败, 此前已发送 …"""
    if status.startswith(Delivery.sent):
        return Delivery.sent.label + ("(发件箱)" if "outbox" in status else "(SMTP)")
    if status.startswith(Delivery.failed):
        return Delivery.failed.label
    try:
        return Delivery(status).label
    except ValueError:  # e.g. "no recipients (GONGSHU_ENGINEER_EMAILS)"
        return status


def write_files(report: DepartmentReport, html: str, xlsx: bytes, root: Path) -> tuple[Path, Path]:
    """``<root>/<date>/<dept>.html|.xlsx`` (root: ``$GONGSHU_HOME/reports``)."""
    folder = root / report.period.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{report.department.code}.html", folder / f"{report.department.code}.xlsx"
    for path, data in zip(paths, (html.encode("utf-8"), xlsx), strict=True):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a report
    return paths


def already_sent(wh: Warehouse, category: str, reference: str) -> bool:
    sent = read_deliveries(wh, category)
    return sent.filter((pl.col("reference") == reference) & (pl.col("status") == Delivery.sent)).height > 0


def subject(report: DepartmentReport) -> str:
    s = report.context["score"]
    score = f"综合得分 {s['total']} ({s['grade']})" if s else "无评分"
    counts = report.context["ticket_counts"]
    late = sum(1 for f in report.context["freshness"] if f["stale"])
    flag = f" · 超期未更新资源 {late} 项" if late else ""
    if counts["open"]:
        flag += f" · 待校核 {counts['open']} 件"
    if counts["overdue"]:
        flag += f" · 超期 {counts['overdue']} 件"
    return f"【数据质量报告】{report.department.name} {report.period} {score}{flag} ({report.reference})"


def deliver(wh: Warehouse, mailer: Mailer, report: DepartmentReport, html: str, xlsx: bytes, *,
            resend: bool = False, engineers: Sequence[str] = ()) -> str:
    """Mail one report (XLSX attached unless there is nothing to list); once per reference unless ``resend``.
    A department without an address in the catalogue: to the data ``engineers``."""
    if not resend and already_sent(wh, REPORT_CATEGORY, report.reference):
        return Delivery.already_sent
    to = list(report.department.emails) or list(engineers)
    if not to:
        return Delivery.no_recipients
    attachments = [] if report.all_clear else [Attachment(report.xlsx_name, xlsx, XLSX_MIME)]
    try:
        record = mailer.send(to, subject(report), html, attachments, category=REPORT_CATEGORY,
                             reference=report.reference)
    except MailError as exc:
        return f"{Delivery.failed}: {exc}"
    return f"{Delivery.sent} ({record.transport})"


def escalation_mail(catalogue: Catalogue, day: dt.date, tickets: pl.DataFrame) -> tuple[str, str]:
    """Subject and HTML of the notice to the data engineers about newly overdue tickets."""
    depts = {d.code: d.name for d in catalogue.departments}
    rows = [{"id": r["ticket_id"], "dept": depts.get(r["department"], r["department"]),
             "kind": TicketKind(r["kind"]).label, "problem": r["item_labels"], "opened": r["opened_on"],
             "due": r["due_date"]}
            for r in tickets.sort("department", "ticket_id").iter_rows(named=True)]
    html = render("ticket_escalation.html.j2", rows=rows, day=day)
    return f"【校核超期】{len(rows)} 件校核工单超期未处理 (批次日期 {day})", html


def escalate(wh: Warehouse, catalogue: Catalogue, day: dt.date, overdue: pl.DataFrame, mailer: Mailer | None, *,
             send: bool = True, resend: bool = False, engineers: Sequence[str] = ()) -> str:
    """Mail the newly ``overdue`` tickets to the data ``engineers``, once per day; returns the delivery status."""
    reference = f"escalation-{catalogue.city.city.code}-{day:%Y%m%d}"
    to = list(engineers)
    if not (send and mailer):
        return Delivery.not_sent
    if not to:
        return f"{Delivery.no_recipients} (GONGSHU_ENGINEER_EMAILS)"
    if not resend and already_sent(wh, ESCALATION_CATEGORY, reference):
        return Delivery.already_sent
    subj, body = escalation_mail(catalogue, day, overdue)
    try:
        record = mailer.send(to, subj, body, category=ESCALATION_CATEGORY, reference=reference)
    except MailError as exc:
        return f"{Delivery.failed}: {exc}"
    return f"{Delivery.sent} ({record.transport})"
