"""One period's reports end to end (inputs → context → render → deliver), and the lines the run
summary and the CLI print about them."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from desensitize.pseudonym import PseudonymKey
from quality.config import ScorecardConfig
from quality.mail import Mailer, read_deliveries
from quality.report.context import build_report, report_reference
from quality.report.deliver import (
    REPORT_CATEGORY,
    Delivery,
    deliver,
    delivery_label,
    escalate,
    write_files,
)
from quality.report.inputs import load_inputs
from quality.report.render import render_html, render_xlsx
from quality.scorecard.render import fmt
from quality.scorecard.store import latest_run
from quality.terminal import table
from quality.tickets.store import read_tickets
from quality.tickets.transitions import TicketStatus
from warehouse.store import Warehouse


@dataclass
class ReportOutcome:
    department: str
    reference: str
    html: Path
    xlsx: Path
    total: float | None
    grade: str | None
    failures: int
    conflicts: int
    open: int
    overdue: int
    delivery: str  # a Delivery: sent (smtp/outbox) | already sent | no recipients | not sent | failed: …


@dataclass
class ReportRun:
    period: dt.date
    outcomes: list[ReportOutcome]
    escalated: int
    escalation: str  # delivery status of the engineers' notice ("none": nothing newly overdue)


def produce_reports(
    wh: Warehouse, catalogue: Catalogue, day: dt.date, config: ScorecardConfig, *,
    mailer: Mailer | None = None, key: PseudonymKey | None = None, send: bool = True, resend: bool = False,
    root: Path, engineers: Sequence[str] = (), issued: dt.datetime | None = None,
) -> ReportRun:
    """Render, write (under ``root``) and (if ``send``) mail every department's report for ``day``; escalate
    newly overdue tickets to the data ``engineers`` (``GONGSHU_ENGINEER_EMAILS``). Needs the period's tickets and scorecard (the ``quality/tickets`` and
    ``quality/scorecard`` assets)."""
    inputs = load_inputs(wh, catalogue, day, key)
    outcomes = []
    for dept in catalogue.departments:
        report = build_report(catalogue, dept.code, inputs, config, issued)
        html, xlsx = render_html(report), render_xlsx(report)
        html_path, xlsx_path = write_files(report, html, xlsx, root)
        status = deliver(wh, mailer, report, html, xlsx, resend=resend, engineers=engineers) \
            if send and mailer else Delivery.not_sent
        s = report.context["score"]
        counts = report.context["ticket_counts"]
        outcomes.append(ReportOutcome(dept.code, report.reference, html_path, xlsx_path,
                                      float(s["total"]) if s else None, s["grade"] if s else None,
                                      report.failures.height, report.conflicts.height, counts["open"],
                                      counts["overdue"], status))
    escalated = inputs.tickets.filter((pl.col("escalated_on") == day) & (pl.col("status") == TicketStatus.overdue))
    escalation = escalate(wh, catalogue, day, escalated, mailer, send=send, resend=resend, engineers=engineers) \
        if escalated.height else "none"
    return ReportRun(day, outcomes, escalated.height, escalation)


def outcome_lines(run: ReportRun, catalogue: Catalogue) -> list[str]:
    """Lines for the run summary and the CLI: one per department report."""
    if not run.outcomes:
        return []
    folder = run.outcomes[0].html.parent
    rows: list[list[object]] = [["部门", "得分", "失败记录", "冲突", "待校核", "超期", "发送", "文件"]]
    for o in run.outcomes:
        name = catalogue.department(o.department).name
        score = f"{fmt(o.total)} {o.grade}" if o.total is not None else "无评分"
        rows.append([name, score, f"{o.failures:,}", f"{o.conflicts:,}", f"{o.open:,}", f"{o.overdue:,}",
                     delivery_label(o.delivery), f"{o.html.name}, {o.xlsx.name}"])
    lines = ["", f"部门质量报告 · 批次日期 {run.period} · {folder.resolve()}", *table(rows, "<>>>>><<", indent="  ")]
    if run.escalated:
        lines.append(f"  超期工单 {run.escalated} 件已上报数据工程师: {delivery_label(run.escalation)}")
    return lines


def report_lines(wh: Warehouse, catalogue: Catalogue, day: dt.date, root: Path) -> list[str]:
    """The reports written for ``day`` (files on disk, scores stored, deliveries audited), for the summary."""
    folder = root / day.isoformat()
    if not folder.exists():
        return []
    run = latest_run(wh, day).filter(pl.col("level") == "department")
    scores = {r["department"]: r for r in run.iter_rows(named=True)}
    tickets = read_tickets(wh).filter(pl.col("opened_on") <= day)
    still = pl.col("resolved_on").is_null() | (pl.col("resolved_on") > day)
    open_at = tickets.filter(still).group_by("department").agg(
        pl.len().alias("open"), (pl.col("due_date") <= day).sum().alias("overdue"))
    counts = {r["department"]: r for r in open_at.iter_rows(named=True)}
    sent = read_deliveries(wh, REPORT_CATEGORY)
    rows: list[list[object]] = [["部门", "得分", "未结工单", "超期", "发送", "文件"]]
    for dept in catalogue.departments:
        html = folder / f"{dept.code}.html"
        if not html.exists():
            continue
        s = scores.get(dept.code)
        score = f"{fmt(s['score'])} {s['grade']}" if s and s["score"] is not None else "无评分"
        ref = report_reference(catalogue, dept.code, day)
        mine = sent.filter(pl.col("reference") == ref)
        status = Delivery.not_sent.label if not mine.height else delivery_label(
            f"{mine.get_column('status')[-1]} ({mine.get_column('transport')[-1]})")
        c = counts.get(dept.code, {"open": 0, "overdue": 0})
        rows.append([dept.name, score, f"{c['open']:,}", f"{c['overdue']:,}", status, f"{html.name}, {dept.code}.xlsx"])
    return ["", f"部门质量报告 · 批次日期 {day} · {folder.resolve()}", *table(rows, "<>>><<", indent="  ")]
