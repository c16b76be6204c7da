"""What people do to 校核 tickets: the department answers (by command or by filling in the report's
workbook), an approver extends the deadline, a data engineer closes a ticket."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from openpyxl import load_workbook

from quality.config import ScorecardConfig
from quality.tickets.store import Ledger, open_ledger, utcnow
from quality.tickets.transitions import UNRESOLVED, Event, TicketError, TicketStatus, allowed, due_date
from warehouse.store import Warehouse

REPLY_SHEET = "校核工单"
REPLY_COLUMNS = ("校核单号", "回复说明", "回复人")
CITY_TZ = ZoneInfo("Asia/Shanghai")  # default only; commands pass the catalogue's zone


def _local_day(at: dt.datetime, tz: dt.tzinfo) -> dt.date:
    aware = at.replace(tzinfo=dt.UTC) if at.tzinfo is None else at
    return aware.astimezone(tz).date()


def _get(ledger: Ledger, ticket_id: str) -> dict:
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
    now = (at.astimezone(dt.UTC).replace(tzinfo=None) if at and at.tzinfo else at) or utcnow()
    with wh.begin() as conn:
        ledger = open_ledger(wh, conn, None, now)
        t = _get(ledger, ticket_id)
        if not allowed(t["status"], Event.answered):
            raise TicketError(f"校核单 {t['ticket_id']} {TicketStatus(t['status']).label}, 无需再答复")
        on = _local_day(now, tz)
        values: dict = {"answered_at": now, "answered_by": by, "answer_note": note}
        if t["status"] in UNRESOLVED:
            values.update(resolved_on=on, resolved_on_time=on <= t["due_date"])
        elif t["answer_note"]:
            values["answer_note"] = f"{t['answer_note']}\n{note}"
        ledger.move(t, Event.answered, actor=by, note=f"{note} (来源: {source})", **values)
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
    now = (at.astimezone(dt.UTC).replace(tzinfo=None) if at and at.tzinfo else at) or utcnow()
    with wh.begin() as conn:
        ledger = open_ledger(wh, conn, None, now)
        t = _get(ledger, ticket_id)
        if not allowed(t["status"], Event.extended):
            raise TicketError(f"校核单 {t['ticket_id']} {TicketStatus(t['status']).label}, 不能延期")
        total = int(t["extension_days"] or 0) + days
        if total > config.max_extension_working_days:
            raise TicketError(f"延期合计 {total} 个工作日, 超过上限 {config.max_extension_working_days} 个工作日")
        due = due_date(t["opened_on"], int(t["working_days"]) + total)
        event = Event.extended if due >= _local_day(now, tz) else Event.extended_still_late
        text = f"延期 {days} 个工作日 (合计 {total}), 新期限 {due}" + (f"; {note}" if note else "")
        ledger.move(t, event, actor=approved_by, note=text, extension_days=total, due_date=due,
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
    now = (at.astimezone(dt.UTC).replace(tzinfo=None) if at and at.tzinfo else at) or utcnow()
    with wh.begin() as conn:
        ledger = open_ledger(wh, conn, None, now)
        t = _get(ledger, ticket_id)
        if not allowed(t["status"], Event.closed):
            raise TicketError(f"校核单 {t['ticket_id']} {TicketStatus(t['status']).label}")
        values: dict = {"closed_by": by}
        if t["status"] in UNRESOLVED:
            on = _local_day(now, tz)
            values.update(resolved_on=on, resolved_on_time=on <= t["due_date"])
        ledger.move(t, Event.closed, actor=by, note=note, **values)
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
