"""时效性: allowances per 更新周期 in Chinese working days, with a frozen clock over holiday edges.

Calendar facts used below, as chinesecalendar ships them: National Day 2026-10-01..07 off, Sunday
09-20 and Saturday 10-10 working; New Year 2026-01-01..03 off, Sunday 01-04 working.
"""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest

from assets.freshness import freshness_policy
from catalog.models import (
    FileChannel,
    OpenClass,
    Resource,
    ShareClass,
    UpdateCycle,
)
from quality.freshness.calendar import add_working_days, calendar_covers, is_working_day, working_days_between
from quality.freshness.evaluate import (
    LastDelivery,
    Status,
    allowance_window,
    delivery_time,
    evaluate,
    next_period_start,
)

TZ = ZoneInfo("Asia/Shanghai")


def at(text: str) -> dt.datetime:
    """A city-local moment: '2026-10-09 00:00'."""
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ)


def resource(cycle: UpdateCycle, hours: float | None = None) -> Resource:
    return Resource(
        code="res", name="测试资源", department="dept", library="lib", update_cycle=cycle, stale_after_hours=hours,
        share=ShareClass.conditional, open=OpenClass.none,
        channel=FileChannel(kind="file", path="d/{date:%Y%m%d}/*.csv"), fields=[], key=[],
    )


def batch(day: str, received: str | None = None) -> LastDelivery:
    """A batch of ``day``; received (UTC) the next morning unless said otherwise."""
    d = dt.date.fromisoformat(day)
    rec = dt.datetime.fromisoformat(received) if received else dt.datetime.combine(d, dt.time(18, 5))  # 02:05 CST
    return LastDelivery(f"dept_res.{d:%Y%m%d}.1", d, rec, 100)


def status(cycle: UpdateCycle, last: LastDelivery | None, now: str, hours: float | None = None) -> Status:
    return evaluate(resource(cycle, hours), last, at(now), TZ).status


# --- the calendar ------------------------------------------------------------------------------


def test_working_days_follow_the_official_calendar_not_monday_to_friday() -> None:
    assert [is_working_day(dt.date(2026, 10, d)) for d in range(1, 8)] == [False] * 7  # 国庆 + 中秋
    assert is_working_day(dt.date(2026, 10, 10))  # Saturday, 调休
    assert is_working_day(dt.date(2026, 9, 20))  # Sunday, 调休
    assert not is_working_day(dt.date(2026, 10, 11))  # an ordinary Sunday
    assert is_working_day(dt.date(2026, 10, 9))


def test_years_the_calendar_does_not_know_yet_fall_back_to_monday_to_friday() -> None:
    assert calendar_covers(dt.date(2026, 12, 31)) and not calendar_covers(dt.date(2027, 1, 4))
    assert is_working_day(dt.date(2027, 1, 4)) and not is_working_day(dt.date(2027, 1, 9))


def test_working_days_are_whole_days_starting_at_or_after_the_moment() -> None:
    assert add_working_days(at("2026-11-13 00:00"), 1) == at("2026-11-14 00:00")  # Friday counts whole
    assert add_working_days(at("2026-11-13 10:00"), 1) == at("2026-11-17 00:00")  # part of Friday does not
    assert add_working_days(at("2026-09-30 12:00"), 1) == at("2026-10-09 00:00")  # over the holiday
    assert add_working_days(at("2026-10-08 00:00"), 3) == at("2026-10-11 00:00")  # 10-08, 10-09, Saturday 10-10
    assert working_days_between(at("2026-10-01 00:00"), at("2026-10-12 00:00")) == 3
    assert working_days_between(at("2026-10-12 00:00"), at("2026-10-01 00:00")) == 0


def test_a_batch_counts_as_delivered_at_the_end_of_its_date_or_on_arrival_if_earlier() -> None:
    # read at 02:05 the next morning: the data covers the whole day
    assert delivery_time(dt.date(2026, 11, 20), dt.datetime(2026, 11, 20, 18, 5), TZ) == at("2026-11-21 00:00")
    # a file landing at 10:00 on its own date is only as fresh as its arrival
    assert delivery_time(dt.date(2026, 11, 20), dt.datetime(2026, 11, 20, 2, 0), TZ) == at("2026-11-20 10:00")
    # a backfill read today is as old as its date
    assert delivery_time(dt.date(2026, 1, 5), dt.datetime(2026, 11, 22, 3, 0), TZ) == at("2026-01-06 00:00")


def test_periods_are_aligned_on_the_first_of_january() -> None:
    assert next_period_start(dt.date(2026, 10, 15), 1) == dt.date(2026, 11, 1)
    assert next_period_start(dt.date(2026, 12, 31), 1) == dt.date(2027, 1, 1)
    assert next_period_start(dt.date(2026, 5, 1), 3) == dt.date(2026, 7, 1)
    assert next_period_start(dt.date(2026, 7, 1), 6) == dt.date(2027, 1, 1)
    assert next_period_start(dt.date(2026, 2, 28), 12) == dt.date(2027, 1, 1)


# --- each 更新周期 ---------------------------------------------------------------------------------


def test_realtime_is_stale_one_hour_after_the_last_arrival() -> None:
    last = batch("2026-11-20", "2026-11-20 02:00")  # 10:00 city time, during its own day
    assert status(UpdateCycle.realtime, last, "2026-11-20 10:59") == Status.fresh
    assert status(UpdateCycle.realtime, last, "2026-11-20 11:00") == Status.stale


def test_a_daily_resource_delivered_before_national_day_is_not_stale_on_the_holiday() -> None:
    last = batch("2026-09-30")
    assert status(UpdateCycle.daily, last, "2026-10-01 12:00") == Status.fresh
    assert status(UpdateCycle.daily, last, "2026-10-05 12:00") == Status.late  # due, but no working day has passed
    assert status(UpdateCycle.daily, last, "2026-10-08 23:59") == Status.late  # 10-08 is the allowed working day
    assert status(UpdateCycle.daily, last, "2026-10-09 00:00") == Status.stale
    window = allowance_window(at("2026-10-01 00:00"), UpdateCycle.daily)
    assert (window.due, window.deadline) == (at("2026-10-02 00:00"), at("2026-10-09 00:00"))


def test_a_daily_resource_delivered_on_friday_may_wait_until_monday_evening() -> None:
    last = batch("2026-11-13")  # Friday
    assert status(UpdateCycle.daily, last, "2026-11-14 23:00") == Status.fresh
    assert status(UpdateCycle.daily, last, "2026-11-16 23:59") == Status.late
    assert status(UpdateCycle.daily, last, "2026-11-17 00:00") == Status.stale


def test_a_weekly_resource_late_by_one_working_day_is_stale() -> None:
    last = batch("2026-11-02")  # Monday; the next week's batch is due at 11-10 00:00
    assert status(UpdateCycle.weekly, last, "2026-11-09 23:59") == Status.fresh
    assert status(UpdateCycle.weekly, last, "2026-11-10 12:00") == Status.late
    f = evaluate(resource(UpdateCycle.weekly), last, at("2026-11-11 09:00"), TZ)
    assert f.status == Status.stale and f.window.deadline == at("2026-11-11 00:00")
    assert f.lag == dt.timedelta(days=8, hours=9) and f.working_days_overdue == 0
    assert evaluate(resource(UpdateCycle.weekly), last, at("2026-11-13 09:00"), TZ).working_days_overdue == 2


def test_a_weekly_resource_due_in_the_holiday_waits_for_the_first_working_day() -> None:
    last = batch("2026-09-23")  # due 10-01, the holiday
    assert status(UpdateCycle.weekly, last, "2026-10-07 23:00") == Status.late
    assert status(UpdateCycle.weekly, last, "2026-10-08 23:59") == Status.late
    assert status(UpdateCycle.weekly, last, "2026-10-09 00:00") == Status.stale


def test_the_saturday_make_up_working_day_counts() -> None:
    last = batch("2026-10-02")  # due Saturday 10-10, which is a working day
    assert status(UpdateCycle.weekly, last, "2026-10-10 23:59") == Status.late
    assert status(UpdateCycle.weekly, last, "2026-10-11 12:00") == Status.stale  # Monday–Friday would say fresh


def test_a_monthly_resource_may_deliver_next_month_until_five_working_days_after_its_end() -> None:
    last = batch("2026-10-15")
    window = allowance_window(delivery_time(dt.date(2026, 10, 15), None, TZ), UpdateCycle.monthly)
    assert (window.due, window.deadline) == (at("2026-12-01 00:00"), at("2026-12-08 00:00"))
    assert status(UpdateCycle.monthly, last, "2026-11-30 23:00") == Status.fresh
    assert status(UpdateCycle.monthly, last, "2026-12-07 23:59") == Status.late
    assert status(UpdateCycle.monthly, last, "2026-12-08 00:00") == Status.stale


def test_a_quarterly_deadline_skips_national_day_and_counts_the_saturday() -> None:
    last = batch("2026-04-10")  # Q2; Q3 ends 10-01; 5 working days: 10-08, 09, 10 (Sat), 12, 13
    assert status(UpdateCycle.quarterly, last, "2026-09-30 12:00") == Status.fresh
    assert status(UpdateCycle.quarterly, last, "2026-10-13 23:59") == Status.late
    assert status(UpdateCycle.quarterly, last, "2026-10-14 00:00") == Status.stale


@pytest.mark.parametrize("cycle, day", [(UpdateCycle.half_yearly, "2025-03-01"), (UpdateCycle.yearly, "2024-06-01")])
def test_half_yearly_and_yearly_deadlines_skip_new_year_and_count_its_sunday(cycle: UpdateCycle, day: str) -> None:
    # the following period ends 2026-01-01; working days 01-04 (Sun), 05, 06, 07, 08
    last = batch(day)
    assert status(cycle, last, "2025-12-31 12:00") == Status.fresh
    assert status(cycle, last, "2026-01-08 23:59") == Status.late
    assert status(cycle, last, "2026-01-09 00:00") == Status.stale


def test_other_uses_the_catalogue_hours_and_says_so_when_they_are_missing() -> None:
    last = batch("2026-11-20")  # delivered 11-21 00:00
    assert status(UpdateCycle.other, last, "2026-11-22 11:59", hours=36) == Status.fresh
    assert status(UpdateCycle.other, last, "2026-11-22 12:00", hours=36) == Status.stale
    assert status(UpdateCycle.other, last, "2030-01-01 00:00") == Status.unset


def test_a_resource_that_never_delivered_is_missing_not_fresh() -> None:
    f = evaluate(resource(UpdateCycle.daily), None, at("2026-11-20 12:00"), TZ)
    assert f.status == Status.missing and f.lag is None and f.window is None


def test_a_clock_in_utc_is_judged_in_the_city_time_zone() -> None:
    last = batch("2026-11-13")
    utc = dt.datetime(2026, 11, 16, 16, 0, tzinfo=dt.UTC)  # 2026-11-17 00:00 in the city
    assert evaluate(resource(UpdateCycle.daily), last, utc, TZ).status == Status.stale
    assert evaluate(resource(UpdateCycle.daily), last, utc - dt.timedelta(minutes=1), TZ).status == Status.late


# --- the Dagster policy ------------------------------------------------------------------------


@pytest.mark.parametrize("cycle, warn_days, fail_days", [
    (UpdateCycle.daily, 1, 1 + 3), (UpdateCycle.weekly, 7, 7 + 3),  # 1 working day: at most 3 days in a week
    (UpdateCycle.monthly, 2 * 31, 62 + 7), (UpdateCycle.quarterly, 2 * 92, 184 + 7),  # 5 working days: 7 days
    (UpdateCycle.half_yearly, 2 * 184, 368 + 7), (UpdateCycle.yearly, 2 * 366, 732 + 7),
])
def test_the_freshness_policy_reads_the_cycle_and_its_allowance_in_calendar_days(cycle, warn_days, fail_days) -> None:
    policy = freshness_policy(resource(cycle))
    assert policy.warn_window.to_timedelta() == dt.timedelta(days=warn_days)
    assert policy.fail_window.to_timedelta() == dt.timedelta(days=fail_days)


def test_the_policy_never_fails_before_the_working_day_rule_in_an_ordinary_week() -> None:
    # a delivery at the end of every day of 2023 (no holiday arrangement applied: Monday–Friday)
    for cycle in (UpdateCycle.daily, UpdateCycle.weekly, UpdateCycle.monthly, UpdateCycle.quarterly,
                  UpdateCycle.half_yearly, UpdateCycle.yearly):
        policy = freshness_policy(resource(cycle))
        for i in range(365):
            last = at("2023-01-02 00:00") + dt.timedelta(days=i)
            window = allowance_window(last, cycle, is_workday=lambda d: d.weekday() < 5)
            assert window.due - last <= policy.warn_window.to_timedelta(), (cycle, last)
            assert window.deadline - last <= policy.fail_window.to_timedelta(), (cycle, last)


def test_the_realtime_and_other_policies_fail_after_their_allowance_without_a_warning_phase() -> None:
    realtime = freshness_policy(resource(UpdateCycle.realtime))
    assert realtime.fail_window.to_timedelta() == dt.timedelta(hours=1) and realtime.warn_window is None
    assert freshness_policy(resource(UpdateCycle.other, 36)).fail_window.to_timedelta() == dt.timedelta(hours=36)
    assert freshness_policy(resource(UpdateCycle.other)) is None
