"""The life of a 共享申请 as a pure table (status × event → status) and its deadlines.

    apply ──► opinion ──► approval ──► approved ──► revoked | expired
      │          │            └──────► rejected
      │          └──► rejected            (every 有条件 element refused, nothing granted)
      ├──► approved                       (only 无条件共享 elements: obtained directly)
      └──► rejected                       (every element 不予共享)

* ``opinion``: the source departments (一数一源) give their opinion on their 有条件 elements within
  5 working days (Guigang art. 29; 7 for data not yet collected, Wenzhou art. 20);
* ``approval``: the data bureau approves within 5 working days of the last opinion (Guigang art. 29);
* ``approved`` until ``valid_until`` (then ``expired``), or until the bureau revokes it.

Working days follow the official calendar of the freshness code (``quality.freshness.calendar``:
chinesecalendar, holidays skipped, 调休 Saturdays counted).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from catalog.models import Labelled
from quality.tickets.transitions import due_date


class ApplicationStatus(Labelled):
    opinion = "opinion", "待数源部门意见"
    approval = "approval", "待大数据局审批"
    approved = "approved", "已批准(有效)"
    rejected = "rejected", "未批准"
    revoked = "revoked", "已撤销"
    expired = "expired", "已到期"


class ApplicationKind(Labelled):
    share = "share", "共享申请"
    open = "open", "依申请开放"


class RequesterType(Labelled):
    department = "department", "使用部门"
    citizen = "citizen", "公民"
    company = "company", "企业"


class Decision(Labelled):
    """What became of one requested element."""

    granted = "granted", "准予"
    pending = "pending", "待数源部门意见"
    agreed = "agreed", "数源部门同意, 待审批"
    refused = "refused", "不予"


class Event(Labelled):
    """What happens to an application; ``audit.share_events.action``."""

    granted_at_once = "granted_at_once", "申请(无条件共享, 直接准予)"
    refused_at_once = "refused_at_once", "申请(全部不予共享)"
    submitted = "submitted", "申请(送数源部门征求意见)"
    opinion = "opinion", "数源部门意见"
    opinions_complete = "opinions_complete", "数源部门意见齐备, 送审批"
    all_refused = "all_refused", "数源部门均不同意"
    approved = "approved", "批准"
    rejected = "rejected", "不批准"
    revoked = "revoked", "撤销"
    expired = "expired", "到期"


_S = ApplicationStatus
TRANSITIONS: dict[tuple[ApplicationStatus | None, Event], ApplicationStatus] = {
    (None, Event.granted_at_once): _S.approved,
    (None, Event.refused_at_once): _S.rejected,
    (None, Event.submitted): _S.opinion,
    (_S.opinion, Event.opinion): _S.opinion,
    (_S.opinion, Event.opinions_complete): _S.approval,
    (_S.opinion, Event.all_refused): _S.rejected,
    (_S.approval, Event.approved): _S.approved,
    (_S.approval, Event.rejected): _S.rejected,
    (_S.opinion, Event.rejected): _S.rejected,  # the bureau may stop an application at any point
    (_S.approved, Event.revoked): _S.revoked,
    (_S.approved, Event.expired): _S.expired,
    (_S.opinion, Event.expired): _S.expired,
    (_S.approval, Event.expired): _S.expired,
}
"""Every allowed move; anything else (approving a rejected application, revoking twice) is refused."""

ACTIVE = (_S.opinion, _S.approval, _S.approved)
DELIVERED = (_S.approved,)


class ApplicationError(ValueError):
    """A move the table does not allow, an unknown application, bad input."""


def next_status(status: str | None, event: Event) -> ApplicationStatus:
    key = (None if status is None else ApplicationStatus(status), event)
    if key not in TRANSITIONS:
        now = key[0].label if key[0] else "尚未提交"
        raise ApplicationError(f"申请{now}, 不能{event.label}")
    return TRANSITIONS[key]


def allowed(status: str | None, event: Event) -> bool:
    return (None if status is None else ApplicationStatus(status), event) in TRANSITIONS


@dataclass(frozen=True)
class Deadlines:
    """Working days allowed (every one configurable; defaults from the regulations)."""

    opinion: int = 5  # Guigang art. 29
    opinion_not_collected: int = 7  # Wenzhou art. 20: data the department has not collected yet
    approval: int = 5  # Guigang art. 29: the bureau, from the last opinion

    def opinion_due(self, submitted_on: dt.date, not_collected: bool = False) -> dt.date:
        """The last day for the source departments' opinion: counted from the day after submission.

        Submitted on 2026-09-30 → due 2026-10-13 (National Day 10-01..07 skipped, the 调休
        Saturday 10-10 counted)."""
        return due_date(submitted_on, self.opinion_not_collected if not_collected else self.opinion)

    def approval_due(self, opinions_on: dt.date) -> dt.date:
        """The last day for the bureau's approval, counted from the day after the last opinion."""
        return due_date(opinions_on, self.approval)


def is_overdue(due: dt.date | None, today: dt.date) -> bool:
    return due is not None and today > due
