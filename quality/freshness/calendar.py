"""Chinese working days (the official calendar, holidays and 调休 included) and the clock.

"+ n working days" is the end of the n-th full working day that starts at or after the moment, on
the official calendar (``chinesecalendar``); years it does not know yet fall back to Monday–Friday.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from zoneinfo import ZoneInfo

import chinese_calendar

from catalog.loader import Catalogue

MIDNIGHT = dt.time(0)
_MAX_SCAN_DAYS = 800  # no run of non-working days is this long; guards the loops below

WorkdayFn = Callable[[dt.date], bool]


def clock() -> dt.datetime:
    """Now, in UTC. The one place the check and the sensors read the time (tests freeze it here)."""
    return dt.datetime.now(dt.UTC)


def city_zone(catalogue: Catalogue) -> ZoneInfo:
    return ZoneInfo(catalogue.city.city.timezone)


def aware(moment: dt.datetime) -> dt.datetime:
    """A naive moment is UTC (as ``ods.batches`` stores it)."""
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


def is_working_day(day: dt.date) -> bool:
    """A working day on the official Chinese calendar (法定节假日 and 调休 included).

    ``chinesecalendar`` only knows the years the State Council has announced; beyond them the
    calendar falls back to Monday–Friday until the package is updated.
    """
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        return day.weekday() < 5


def calendar_covers(day: dt.date) -> bool:
    """Whether the official holiday calendar knows ``day`` (otherwise Monday–Friday is assumed)."""
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return False
    return True


def calendar_note(years: Iterable[int]) -> str | None:
    """Says so when deadlines were counted on years the holiday calendar does not know yet."""
    years = sorted(set(years))
    if not years:
        return None
    return f"chinesecalendar 尚未收录 {'、'.join(map(str, years))} 年的节假日安排, 该年按周一至周五计算工作日"


def end_of_day(day: dt.date, tz: dt.tzinfo | None) -> dt.datetime:
    """Midnight after ``day``: the moment a whole day has passed."""
    return dt.datetime.combine(day + dt.timedelta(days=1), MIDNIGHT, tzinfo=tz)


def _first_full_day(moment: dt.datetime) -> dt.date:
    """The first day that starts at or after ``moment``."""
    at_midnight = (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0)
    return moment.date() if at_midnight else moment.date() + dt.timedelta(days=1)


def add_working_days(moment: dt.datetime, n: int, is_workday: WorkdayFn = is_working_day) -> dt.datetime:
    """The end of the n-th full working day that starts at or after ``moment`` (in its time zone).

    A partial day never counts: 1 working day after Friday 10:00 is the end of the next Monday
    (or of the 调休 Saturday, or of the first day after a holiday).
    """
    if n <= 0:
        return moment
    day, count = _first_full_day(moment), 0
    for _ in range(_MAX_SCAN_DAYS):
        if is_workday(day):
            count += 1
            if count == n:
                return end_of_day(day, moment.tzinfo)
        day += dt.timedelta(days=1)
    raise ValueError(f"no {n} working days within {_MAX_SCAN_DAYS} days after {moment}")


def working_days_between(start: dt.datetime, end: dt.datetime, is_workday: WorkdayFn = is_working_day) -> int:
    """Full working days that start at or after ``start`` and are over by ``end``."""
    if end <= start:
        return 0
    day, last, count = _first_full_day(start), end.astimezone(start.tzinfo).date(), 0
    while end_of_day(day, start.tzinfo) <= end and day <= last:
        count += is_workday(day)
        day += dt.timedelta(days=1)
    return count
