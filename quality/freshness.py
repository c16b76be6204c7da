"""时效性 (timeliness): is each resource as fresh as its 更新周期 promises?

The pure core comes first: when a batch counts as delivered (:func:`delivery_time`), when the next
delivery is due and when the resource turns stale (:func:`allowance_window`, counted in Chinese
working days), and what that makes its status (:func:`evaluate`). Then the thin edges: reading the
last successful delivery of every resource from ``ods.batches``, the state table
``quality.freshness``, the Dagster freshness policy and ``freshness`` asset check of each ODS asset,
the end-of-run summary lines and the notice mailed to a department.

Allowances (domain.md), from the last successful delivery L (see docs/freshness.md):

| 更新周期 | due (WARN from here) | stale (ERROR) after |
|---|---|---|
| 实时 | L + 1 h | L + 1 h |
| 每日 | L + 1 day | due + 1 working day |
| 每周 | L + 7 days | due + 1 working day |
| 每月, 每季度, 每半年, 每年 | end of the period after L's | due + 5 working days |
| 其他 | L + stale_after_hours | L + stale_after_hours |

"+ n working days" is the end of the n-th full working day that starts at or after the moment, on
the official calendar (``chinesecalendar``: holidays and 调休 Saturdays included).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from zoneinfo import ZoneInfo

import chinese_calendar
import polars as pl
import sqlalchemy as sa
from jinja2 import Environment

from catalog.loader import Catalogue
from catalog.models import Resource, UpdateCycle
from warehouse.store import Column, Warehouse

CHECK_NAME = "freshness"
MIDNIGHT = dt.time(0)
_MAX_SCAN_DAYS = 800  # no run of non-working days is this long; guards the loops below

WorkdayFn = Callable[[dt.date], bool]


def clock() -> dt.datetime:
    """Now, in UTC. The one place sensors and checks read the time (tests freeze it here)."""
    return dt.datetime.now(dt.UTC)


# --- working days ------------------------------------------------------------------------------


def is_working_day(day: dt.date) -> bool:
    """A working day on the official Chinese calendar (法定节假日 and 调休 included).

    ``chinesecalendar`` only knows the years the State Council has announced; beyond them the
    calendar falls back to Monday–Friday until the package is updated.
    """
    try:
        return chinese_calendar.is_workday(day)
    except NotImplementedError:
        return day.weekday() < 5


def weekdays_only(day: dt.date) -> bool:
    """Monday–Friday: an ordinary week without holidays (used for the Dagster policy windows)."""
    return day.weekday() < 5


def calendar_covers(day: dt.date) -> bool:
    """Whether the official holiday calendar knows ``day`` (otherwise Monday–Friday is assumed)."""
    try:
        chinese_calendar.is_workday(day)
    except NotImplementedError:
        return False
    return True


def uncovered_years(window: Window | None) -> set[int]:
    """Years of a window's dates that the holiday calendar does not know yet."""
    if window is None:
        return set()
    return {d.year for d in (window.due.date(), window.deadline.date()) if not calendar_covers(d)}


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


# --- allowance ---------------------------------------------------------------------------------

PERIOD_MONTHS = {UpdateCycle.monthly: 1, UpdateCycle.quarterly: 3, UpdateCycle.half_yearly: 6, UpdateCycle.yearly: 12}
WORKING_DAYS_AFTER_PERIOD = 5


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
    arrived = received_at.replace(tzinfo=dt.UTC) if received_at.tzinfo is None else received_at
    return min(end, arrived.astimezone(tz))


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
    if cycle == UpdateCycle.daily:
        due = last + dt.timedelta(days=1)
        return Window(due, add_working_days(due, 1, is_workday))
    if cycle == UpdateCycle.weekly:
        due = last + dt.timedelta(days=7)
        return Window(due, add_working_days(due, 1, is_workday))
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
    if cycle == UpdateCycle.daily:
        return "1 天 + 1 个工作日"
    if cycle == UpdateCycle.weekly:
        return "7 天 + 1 个工作日"
    if cycle in PERIOD_MONTHS:
        return f"下一周期结束 + {WORKING_DAYS_AFTER_PERIOD} 个工作日"
    return f"{stale_after_hours:g} 小时" if stale_after_hours is not None else "目录未设定 (stale_after_hours)"


# --- status ------------------------------------------------------------------------------------


class Status(StrEnum):
    fresh = "fresh"  # within its 更新周期
    late = "late"  # the next delivery is due, the allowance still runs
    stale = "stale"  # past the allowance
    missing = "missing"  # no successful delivery yet
    unset = "unset"  # 其他 without stale_after_hours: nothing to measure against


STATUS_LABEL = {
    Status.fresh: "正常",
    Status.late: "已到期(宽限期内)",
    Status.stale: "超期",
    Status.missing: "未交付",
    Status.unset: "未设时限",
}


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
    now = _aware(now).astimezone(tz)
    if last is None:
        return Freshness(resource, Status.missing, now)
    delivered = delivery_time(last.batch_date, last.received_at, tz)
    window = allowance_window(delivered, resource.update_cycle, resource.stale_after_hours, is_workday)
    if window is None:
        return Freshness(resource, Status.unset, now, last, delivered)
    status = status_at(now, window)
    overdue = working_days_between(window.deadline, now, is_workday) if status == Status.stale else 0
    return Freshness(resource, status, now, last, delivered, window, overdue)


def _aware(moment: dt.datetime) -> dt.datetime:
    return moment.replace(tzinfo=dt.UTC) if moment.tzinfo is None else moment


# --- Dagster freshness policy ------------------------------------------------------------------







# --- storage: last deliveries and quality.freshness ----------------------------------------------

FRESHNESS = "freshness"
FRESHNESS_SCHEMA: dict[str, pl.DataType] = {
    "resource_id": pl.String(),
    "department": pl.String(),
    "resource": pl.String(),
    "update_cycle": pl.String(),
    "allowance": pl.String(),
    "status": pl.String(),
    "last_batch_id": pl.String(),
    "last_batch_date": pl.Date(),
    "last_received_at": pl.Datetime("us"),
    "delivered_at": pl.Datetime("us"),
    "due_at": pl.Datetime("us"),
    "deadline_at": pl.Datetime("us"),
    "lag_hours": pl.Float64(),
    "working_days_overdue": pl.Int64(),
    "evaluated_at": pl.Datetime("us"),
    "status_since": pl.Datetime("us"),
}
"""One row per resource: its current timeliness. Times are UTC (naive), like ``ods.batches``."""

_LAST_SCHEMA: dict[str, pl.DataType] = {
    "resource_id": pl.String(), "batch_id": pl.String(), "batch_date": pl.Date(), "seq": pl.Int64(),
    "received_at": pl.Datetime("us"), "rows_delivered": pl.Int64(),
}


def freshness_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", FRESHNESS, [Column(n, t) for n, t in FRESHNESS_SCHEMA.items()],
                    primary_key=["resource_id"])


def read_last_deliveries(wh: Warehouse, up_to: dt.date) -> dict[str, LastDelivery]:
    """The newest successful batch of every resource with a batch date up to ``up_to``.

    Successful: at least one record could be split into the declared columns. A delivery of
    nothing, or of nothing readable, does not make a resource fresh.
    """
    if not wh.exists("ods", "batches"):
        return {}
    batches = wh.qualified("ods", "batches")
    sql = (
        f"SELECT b.resource_id, b.batch_id, b.batch_date, b.seq, b.received_at, b.rows_delivered FROM {batches} b "
        f"JOIN (SELECT resource_id, MAX(batch_date) AS d FROM {batches} "
        "WHERE rows_delivered > rows_unparseable AND batch_date <= :up_to GROUP BY resource_id) m "
        "ON b.resource_id = m.resource_id AND b.batch_date = m.d WHERE b.rows_delivered > b.rows_unparseable"
    )
    with wh.engine.connect() as conn:
        frame = wh.read(conn, sql, _LAST_SCHEMA, {"up_to": up_to})
    newest = frame.sort("seq").group_by("resource_id", maintain_order=True).last()
    return {
        r["resource_id"]: LastDelivery(r["batch_id"], r["batch_date"], r["received_at"], r["rows_delivered"])
        for r in newest.iter_rows(named=True)
    }


def evaluate_catalogue(
    wh: Warehouse,
    catalogue: Catalogue,
    now: dt.datetime,
    resources: Iterable[Resource] | None = None,
    is_workday: WorkdayFn = is_working_day,
) -> list[Freshness]:
    """Every resource's freshness at ``now``, from the batches delivered up to that day."""
    tz = city_zone(catalogue)
    now = _aware(now).astimezone(tz)
    last = read_last_deliveries(wh, now.date())
    chosen = catalogue.resources if resources is None else resources
    return [evaluate(r, last.get(r.id), now, tz, is_workday) for r in sorted(chosen, key=lambda r: r.id)]


def city_zone(catalogue: Catalogue) -> ZoneInfo:
    return ZoneInfo(catalogue.city.city.timezone)


def _utc(moment: dt.datetime | None) -> dt.datetime | None:
    return None if moment is None else moment.astimezone(dt.UTC).replace(tzinfo=None)


def store_freshness(wh: Warehouse, evaluations: Sequence[Freshness]) -> None:
    """Write the current state of the evaluated resources to ``quality.freshness`` (one row each).

    ``status_since`` keeps the moment a resource entered its current status.
    """
    if not evaluations:
        return
    table = freshness_table(wh)
    ids = [f.resource_id for f in evaluations]
    with wh.begin() as conn:
        wh.create(conn, table)
        if wh.is_postgres:  # the sensor and an in-run check may write at once; SQLite writers queue anyway
            conn.execute(sa.text(f"LOCK TABLE {wh.qualified('quality', FRESHNESS)} IN SHARE ROW EXCLUSIVE MODE"))
        previous = {
            r.resource_id: (r.status, r.status_since)
            for r in conn.execute(sa.select(table.c.resource_id, table.c.status, table.c.status_since)
                                  .where(table.c.resource_id.in_(ids)))
        }
        rows = []
        for f in evaluations:
            now = _utc(f.now)
            before = previous.get(f.resource_id)
            since = before[1] if before and before[0] == f.status.value and before[1] is not None else now
            lag = f.lag
            rows.append({
                "resource_id": f.resource_id,
                "department": f.resource.department,
                "resource": f.resource.code,
                "update_cycle": f.resource.update_cycle.value,
                "allowance": f.allowance,
                "status": f.status.value,
                "last_batch_id": f.last.batch_id if f.last else None,
                "last_batch_date": f.last.batch_date if f.last else None,
                "last_received_at": f.last.received_at if f.last else None,
                "delivered_at": _utc(f.delivered_at),
                "due_at": _utc(f.window.due) if f.window else None,
                "deadline_at": _utc(f.window.deadline) if f.window else None,
                "lag_hours": None if lag is None else round(lag.total_seconds() / 3600, 3),
                "working_days_overdue": f.working_days_overdue,
                "evaluated_at": now,
                "status_since": since if isinstance(since, dt.datetime) else dt.datetime.fromisoformat(str(since)),
            })
        conn.execute(table.delete().where(table.c.resource_id.in_(ids)))
        wh.insert(conn, table, pl.DataFrame(rows, schema=FRESHNESS_SCHEMA))


def read_freshness(wh: Warehouse) -> pl.DataFrame:
    """The stored state, one row per resource (empty before the first evaluation)."""
    if not wh.exists("quality", FRESHNESS):
        return pl.DataFrame(schema=FRESHNESS_SCHEMA)
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {', '.join(FRESHNESS_SCHEMA)} FROM {wh.qualified('quality', FRESHNESS)} "
                             "ORDER BY resource_id", FRESHNESS_SCHEMA)


# --- the asset check ---------------------------------------------------------------------------


def format_lag(lag: dt.timedelta | None) -> str:
    if lag is None:
        return "—"
    minutes = int(lag.total_seconds() // 60)
    days, rest = divmod(minutes, 24 * 60)
    hours, mins = divmod(rest, 60)
    if days:
        return f"{days} 天 {hours} 小时"
    return f"{hours} 小时 {mins} 分钟" if hours else f"{mins} 分钟"


def local_time(moment: dt.datetime | None) -> str:
    if moment is None:
        return "—"
    if (moment.hour, moment.minute, moment.second) == (0, 0, 0):
        # midnight reads as the end of the day before: "2026-10-08 24:00" is what a deadline means
        return f"{moment.date() - dt.timedelta(days=1)} 24:00"
    return f"{moment:%Y-%m-%d %H:%M}"








# --- summary and notices -----------------------------------------------------------------------


def summary_time(day: dt.date, tz: dt.tzinfo, now: dt.datetime | None = None) -> dt.datetime:
    """The moment an end-of-run summary for batch date ``day`` is judged at.

    Now, but never later than 09:00 the morning after ``day``: a summary of an old batch date
    shows the state the bureau saw then, as the rest of that summary does.
    """
    morning_after = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(9), tzinfo=tz)
    return min(_aware(now or clock()), morning_after)


def freshness_lines(wh: Warehouse, catalogue: Catalogue, now: dt.datetime) -> list[str]:
    """The freshness section of the end-of-run summary: every resource, stale ones named at the end."""
    tz = city_zone(catalogue)
    evaluations = evaluate_catalogue(wh, catalogue, now)
    local = _aware(now).astimezone(tz)
    lines = ["", f"时效 · 截至 {local:%Y-%m-%d %H:%M} ({tz.key}) · 工作日按国家法定节假日",
             f"{'资源':<24}{'更新周期':>6}{'最近交付':>18}{'超期时点':>18}{'滞后':>14}  状态"]
    for f in evaluations:
        label = f"{f.resource.department}/{f.resource.code} {f.resource.name}"
        deadline = local_time(f.window.deadline) if f.window else "—"
        lines.append(f"{label:<24}{f.resource.update_cycle.value:>6}{local_time(f.delivered_at):>18}{deadline:>18}"
                     f"{format_lag(f.lag):>14}  {STATUS_LABEL[f.status]}")
    flagged = [f for f in evaluations if f.status in (Status.stale, Status.missing)]
    if flagged:
        lines.append("需关注: " + "; ".join(
            f"{catalogue.department(f.resource.department).name}「{f.resource.name}」{STATUS_LABEL[f.status]}"
            + (f" {f.working_days_overdue} 个工作日" if f.status == Status.stale else "")
            for f in flagged))
    else:
        lines.append("全部资源均在更新周期时限内。")
    note = calendar_note(y for f in evaluations for y in uncovered_years(f.window))
    if note:
        lines.append(f"注: {note}。")
    return lines


_NOTICE = Environment(autoescape=True).from_string("""\
<html><body style="font-family: sans-serif">
<p>{{ department }}:</p>
<p>贵单位提供的数据资源「{{ resource }}」已超出更新周期时限未更新。依据数据资源目录, 该资源更新周期为
<b>{{ cycle }}</b>, 时效要求为 {{ allowance }}(按国家法定工作日计)。请尽快交付最新数据, 或告知延迟原因。</p>
<table border="1" cellspacing="0" cellpadding="4">
<tr><th align="left">资源</th><td>{{ resource_id }} {{ resource }}</td></tr>
<tr><th align="left">更新周期</th><td>{{ cycle }}</td></tr>
<tr><th align="left">最近成功交付</th><td>{{ delivered }} (批次 {{ batch }})</td></tr>
<tr><th align="left">应交付时间</th><td>{{ due }}</td></tr>
<tr><th align="left">超期时点</th><td>{{ deadline }}</td></tr>
<tr><th align="left">滞后</th><td>{{ lag }}</td></tr>
<tr><th align="left">已超期</th><td>{{ overdue }} 个工作日</td></tr>
</table>
<p style="color: #666">时间均为 {{ tz }}。本邮件由公数平台时效监测自动发送; 同一次超期只通知一次。</p>
</body></html>
""")


def stale_notice(f: Freshness, catalogue: Catalogue) -> tuple[str, str]:
    """Subject and HTML body of the notice sent once when a resource turns stale."""
    r = f.resource
    dept = catalogue.department(r.department).name
    subject = f"【数据时效】{dept}「{r.name}」已超期未更新 (更新周期 {r.update_cycle.value})"
    html = _NOTICE.render(
        department=dept, resource=r.name, resource_id=r.id, cycle=r.update_cycle.value, allowance=f.allowance,
        delivered=local_time(f.delivered_at), batch=f.last.batch_id if f.last else "—",
        due=local_time(f.window.due) if f.window else "—", deadline=local_time(f.window.deadline) if f.window else "—",
        lag=format_lag(f.lag), overdue=f.working_days_overdue, tz=city_zone(catalogue).key,
    )
    return subject, html

