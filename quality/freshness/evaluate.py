"""The freshness rule as pure functions: when a delivery counts, its allowance, the resulting status.

Allowances (domain.md), from the last successful delivery L (see docs/freshness.md):

| 更新周期 | due (WARN from here) | stale (ERROR) after |
|---|---|---|
| 实时 | L + 1 h | L + 1 h |
| 每日 | L + 1 day | due + 1 working day |
| 每周 | L + 7 days | due + 1 working day |
| 每月, 每季度, 每半年, 每年 | end of the period after L's | due + 5 working days |
| 其他 | L + stale_after_hours | L + stale_after_hours |
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass

from catalog.models import Labelled, Resource, UpdateCycle
from quality.freshness.calendar import (
    MIDNIGHT,
    WorkdayFn,
    add_working_days,
    aware,
    calendar_covers,
    end_of_day,
    is_working_day,
    working_days_between,
)

PERIOD_MONTHS = {UpdateCycle.monthly: 1, UpdateCycle.quarterly: 3, UpdateCycle.half_yearly: 6, UpdateCycle.yearly: 12}
PERIOD_DAYS = {UpdateCycle.daily: 1, UpdateCycle.weekly: 7}
WORKING_DAYS_AFTER_PERIOD = 5
WORKING_DAYS_AFTER_DUE = 1  # 每日, 每周
LONGEST_MONTHS = {1: 31, 3: 92, 6: 184, 12: 366}  # the most days that many consecutive months can have


def delivery_time(batch_date: dt.date, received_at: dt.datetime | None, tz: dt.tzinfo) -> dt.datetime:
    """When a batch counts as delivered: the end of its batch date in the city, or its arrival if earlier.

    A batch of day D carries that day's data, complete at D+1 00:00; a batch that arrives during
    its own day (实时, a file landing early) is only as fresh as its arrival. A backfill of an old
    date is as old as its date, however recently it was read. ``received_at`` is UTC (naive = UTC,
    as ``ods.batches`` stores it).
    """
    end = end_of_day(batch_date, tz)
    if received_at is None:
        return end
    return min(end, aware(received_at).astimezone(tz))


def next_period_start(day: dt.date, months: int) -> dt.date:
    """The first day of the period after the one holding ``day`` (periods aligned on 1 January)."""
    index = (day.month - 1) // months + 1  # periods since January of day's year, counting the next
    year, month0 = divmod(index * months, 12)
    return dt.date(day.year + year, month0 + 1, 1)


@dataclass(frozen=True)
class Window:
    """From ``due`` the next delivery is expected (WARN); after ``deadline`` the resource is stale."""

    due: dt.datetime
    deadline: dt.datetime


def allowance_window(
    last: dt.datetime,
    cycle: UpdateCycle,
    stale_after_hours: float | None = None,
    is_workday: WorkdayFn = is_working_day,
) -> Window | None:
    """Due time and deadline of the delivery after ``last`` (a city-local, zone-aware datetime).

    None for 更新周期 其他 without ``stale_after_hours``: the catalogue sets no limit.
    """
    if last.tzinfo is None:
        raise ValueError("last delivery must carry the city's time zone")
    if cycle == UpdateCycle.realtime:
        deadline = last + dt.timedelta(hours=1)
        return Window(deadline, deadline)
    if cycle in PERIOD_DAYS:
        due = last + dt.timedelta(days=PERIOD_DAYS[cycle])
        return Window(due, add_working_days(due, WORKING_DAYS_AFTER_DUE, is_workday))
    if cycle in PERIOD_MONTHS:
        months = PERIOD_MONTHS[cycle]
        covered = (last - dt.timedelta(microseconds=1)).date()  # the day the delivery belongs to
        due_day = next_period_start(next_period_start(covered, months), months)
        due = dt.datetime.combine(due_day, MIDNIGHT, tzinfo=last.tzinfo)
        return Window(due, add_working_days(due, WORKING_DAYS_AFTER_PERIOD, is_workday))
    if stale_after_hours is None:
        return None
    deadline = last + dt.timedelta(hours=stale_after_hours)
    return Window(deadline, deadline)


def describe_allowance(cycle: UpdateCycle, stale_after_hours: float | None = None) -> str:
    """The rule in words, for metadata, summaries and notices."""
    if cycle == UpdateCycle.realtime:
        return "1 小时"
    if cycle in PERIOD_DAYS:
        return f"{PERIOD_DAYS[cycle]} 天 + {WORKING_DAYS_AFTER_DUE} 个工作日"
    if cycle in PERIOD_MONTHS:
        return f"下一周期结束 + {WORKING_DAYS_AFTER_PERIOD} 个工作日"
    return f"{stale_after_hours:g} 小时" if stale_after_hours is not None else "目录未设定 (stale_after_hours)"


def policy_spans(cycle: UpdateCycle, stale_after_hours: float | None = None
                 ) -> tuple[dt.timedelta | None, dt.timedelta] | None:
    """(warn, fail): the rule read in calendar time, for a policy that knows no working days.

    Warn at the longest wait until the next delivery is due (每日 1 day, 每周 7 days; a period
    cycle's delivery early in its period is due at the end of the next one: twice the longest
    period); fail once the working days of the allowance are surely over in an ordinary week
    (n working days ≤ n + 2·⌈n/5⌉ calendar days: a weekend for every five). Holidays are longer:
    the working-day judgement is the ``freshness`` check's. None when the catalogue sets no limit.
    """
    if cycle == UpdateCycle.realtime:
        return None, dt.timedelta(hours=1)
    if cycle in PERIOD_DAYS:
        warn, grace = dt.timedelta(days=PERIOD_DAYS[cycle]), WORKING_DAYS_AFTER_DUE
    elif cycle in PERIOD_MONTHS:
        warn, grace = dt.timedelta(days=2 * LONGEST_MONTHS[PERIOD_MONTHS[cycle]]), WORKING_DAYS_AFTER_PERIOD
    elif stale_after_hours is not None:
        return None, dt.timedelta(hours=stale_after_hours)
    else:
        return None
    return warn, warn + dt.timedelta(days=grace + 2 * math.ceil(grace / 5))


# --- status ------------------------------------------------------------------------------------


class Status(Labelled):
    fresh = "fresh", "正常"  # within its 更新周期
    late = "late", "已到期(宽限期内)"  # the next delivery is due, the allowance still runs
    stale = "stale", "超期"  # past the allowance
    missing = "missing", "未交付"  # no successful delivery yet
    unset = "unset", "未设时限"  # 其他 without stale_after_hours: nothing to measure against


@dataclass(frozen=True)
class LastDelivery:
    """The newest successful batch of a resource, as stored in ``ods.batches``."""

    batch_id: str
    batch_date: dt.date
    received_at: dt.datetime  # UTC, naive as stored
    rows_delivered: int


@dataclass(frozen=True)
class Freshness:
    """One resource's timeliness at one moment."""

    resource: Resource
    status: Status
    now: dt.datetime
    last: LastDelivery | None = None
    delivered_at: dt.datetime | None = None  # city-local
    window: Window | None = None
    working_days_overdue: int = 0

    @property
    def resource_id(self) -> str:
        return self.resource.id

    @property
    def lag(self) -> dt.timedelta | None:
        """Time since the last delivery (never negative)."""
        if self.delivered_at is None:
            return None
        return max(self.now - self.delivered_at, dt.timedelta(0))

    @property
    def allowance(self) -> str:
        return describe_allowance(self.resource.update_cycle, self.resource.stale_after_hours)


def status_at(now: dt.datetime, window: Window) -> Status:
    if now >= window.deadline:
        return Status.stale
    if now >= window.due:
        return Status.late
    return Status.fresh


def evaluate(
    resource: Resource,
    last: LastDelivery | None,
    now: dt.datetime,
    tz: dt.tzinfo,
    is_workday: WorkdayFn = is_working_day,
) -> Freshness:
    """The freshness of ``resource`` at ``now`` given its last successful delivery."""
    now = aware(now).astimezone(tz)
    if last is None:
        return Freshness(resource, Status.missing, now)
    delivered = delivery_time(last.batch_date, last.received_at, tz)
    window = allowance_window(delivered, resource.update_cycle, resource.stale_after_hours, is_workday)
    if window is None:
        return Freshness(resource, Status.unset, now, last, delivered)
    status = status_at(now, window)
    overdue = working_days_between(window.deadline, now, is_workday) if status == Status.stale else 0
    return Freshness(resource, status, now, last, delivered, window, overdue)


def uncovered_years(window: Window | None) -> set[int]:
    """Years of a window's dates that the holiday calendar does not know yet."""
    if window is None:
        return set()
    return {d.year for d in (window.due.date(), window.deadline.date()) if not calendar_covers(d)}
