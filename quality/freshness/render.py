"""Freshness for people: the section of the end-of-run summary and the notices mailed on a change."""

from __future__ import annotations

import datetime as dt

from catalog.loader import Catalogue
from quality.freshness.calendar import aware, calendar_note, city_zone, clock
from quality.freshness.evaluate import Status, uncovered_years
from quality.freshness.store import evaluate_catalogue
from quality.templating import render
from quality.terminal import table
from warehouse.store import Warehouse


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


def summary_time(day: dt.date, tz: dt.tzinfo, now: dt.datetime | None = None) -> dt.datetime:
    """The moment an end-of-run summary for batch date ``day`` is judged at.

    Now, but never later than 09:00 the morning after ``day``: a summary of an old batch date
    shows the state the bureau saw then, as the rest of that summary does.
    """
    morning_after = dt.datetime.combine(day + dt.timedelta(days=1), dt.time(9), tzinfo=tz)
    return min(aware(now or clock()), morning_after)


def freshness_lines(wh: Warehouse, catalogue: Catalogue, now: dt.datetime) -> list[str]:
    """The freshness section of the end-of-run summary: every resource, stale ones named at the end."""
    tz = city_zone(catalogue)
    evaluations = evaluate_catalogue(wh, catalogue, now)
    local = aware(now).astimezone(tz)
    rows: list[list[object]] = [["资源", "更新周期", "最近交付", "超期时点", "滞后", "状态"]]
    for f in evaluations:
        label = f"{f.resource.department}/{f.resource.code} {f.resource.name}"
        deadline = local_time(f.window.deadline) if f.window else "—"
        rows.append([label, f.resource.update_cycle.value, local_time(f.delivered_at), deadline, format_lag(f.lag),
                     f.status.label])
    lines = ["", f"时效 · 截至 {local:%Y-%m-%d %H:%M} ({tz.key}) · 工作日按国家法定节假日", *table(rows, "<<>>><")]
    flagged = [f for f in evaluations if f.status in (Status.stale, Status.missing)]
    if flagged:
        lines.append("需关注: " + "; ".join(
            f"{catalogue.department(f.resource.department).name}「{f.resource.name}」{f.status.label}"
            + (f" {f.working_days_overdue} 个工作日" if f.status == Status.stale else "")
            for f in flagged))
    else:
        lines.append("全部资源均在更新周期时限内。")
    note = calendar_note(y for f in evaluations for y in uncovered_years(f.window))
    if note:
        lines.append(f"注: {note}。")
    return lines


# --- notices: from a stored row of quality.freshness -----------------------------------------------


def _fields(row: dict, catalogue: Catalogue) -> dict:
    """What both notices show, in city time, from a row of ``quality.freshness`` (times UTC)."""
    tz = city_zone(catalogue)
    resource = catalogue.resource(row["resource_id"])

    def local(moment: dt.datetime | None) -> str:
        return local_time(None if moment is None else aware(moment).astimezone(tz))

    return {
        "department": catalogue.department(resource.department).name, "resource": resource.name,
        "resource_id": resource.id, "cycle": row["update_cycle"], "allowance": row["allowance"],
        "delivered": local(row["delivered_at"]), "batch": row["last_batch_id"] or "—",
        "due": local(row["due_at"]), "deadline": local(row["deadline_at"]), "tz": tz.key,
        "status": Status(row["status"]).label,
    }


def stale_notice(row: dict, catalogue: Catalogue) -> tuple[str, str]:
    """Subject and HTML body of the notice sent once when a resource turns stale."""
    f = _fields(row, catalogue)
    lag = None if row["lag_hours"] is None else dt.timedelta(hours=row["lag_hours"])
    subject = f"【数据时效】{f['department']}「{f['resource']}」已超期未更新 (更新周期 {f['cycle']})"
    return subject, render("freshness_stale.html.j2", **f, lag=format_lag(lag), overdue=row["working_days_overdue"])


def recovered_notice(row: dict, catalogue: Catalogue) -> tuple[str, str]:
    """Subject and HTML body of the notice sent once when a stale resource is fresh again."""
    f = _fields(row, catalogue)
    subject = f"【数据时效】{f['department']}「{f['resource']}」已恢复更新 (更新周期 {f['cycle']})"
    return subject, render("freshness_recovered.html.j2", **f)
