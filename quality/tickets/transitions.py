"""The life of a 校核 ticket as a pure table (status × event → status) and its due dates.

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
approved it; an overdue ticket whose new due date is not over yet is open again. A problem seen
again after its ticket was *fixed* is a new ticket; one closed by an engineer stays closed for
the same rules.
"""

from __future__ import annotations

import datetime as dt

from catalog.models import Labelled
from quality.freshness.calendar import add_working_days, end_of_day, is_working_day, working_days_between


class TicketStatus(Labelled):
    open = "open", "待校核"
    overdue = "overdue", "已超期"
    answered = "answered", "已答复"
    fixed = "fixed", "已修复"
    closed = "closed", "已关闭"


class TicketKind(Labelled):
    record = "record", "失败记录"
    conflict = "conflict", "一数一源冲突"


class Event(Labelled):
    """What happens to a ticket; ``action`` is how ``audit.ticket_events`` names it."""

    opened = "opened", "发出"
    overdue = "overdue", "超过校核期限"
    answered = "answered", "答复"
    fixed = "fixed", "修复"
    extended = "extended", "延期"  # the new due date is not over
    extended_still_late = "extended_still_late", "延期(新期限已过)"
    closed = "closed", "关闭"

    @property
    def action(self) -> str:
        return Event.extended.value if self == Event.extended_still_late else self.value


ACTIVE = (TicketStatus.open, TicketStatus.overdue, TicketStatus.answered)
UNRESOLVED = (TicketStatus.open, TicketStatus.overdue)

_S = TicketStatus
TRANSITIONS: dict[tuple[TicketStatus | None, Event], TicketStatus] = {
    (None, Event.opened): _S.open,
    (_S.open, Event.overdue): _S.overdue,
    **{(s, Event.answered): _S.answered for s in ACTIVE},  # answering again adds to the note
    **{(s, Event.fixed): _S.fixed for s in ACTIVE},
    (_S.open, Event.extended): _S.open,
    (_S.overdue, Event.extended): _S.open,
    (_S.open, Event.extended_still_late): _S.open,
    (_S.overdue, Event.extended_still_late): _S.overdue,
    **{(s, Event.closed): _S.closed for s in ACTIVE},
}
"""Every allowed move; anything else (e.g. answering a fixed ticket) is refused."""


class TicketError(ValueError):
    """A transition that is not allowed (unknown ticket, already fixed, extension too long …)."""


def allowed(status: str | None, event: Event) -> bool:
    return (None if status is None else TicketStatus(status), event) in TRANSITIONS


def next_status(status: str | None, event: Event) -> TicketStatus:
    """The status after ``event``; raises :class:`TicketError` when the table has no such move."""
    key = (None if status is None else TicketStatus(status), event)
    if key not in TRANSITIONS:
        raise TicketError(f"校核单{key[0].label if key[0] else ''}, 不能{event.label}")
    return TRANSITIONS[key]


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
