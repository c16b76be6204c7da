"""Dagster freshness: the ``freshness`` check on every ODS asset and the policy derived from the 更新周期."""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable

from dagster import (
    AssetCheckEvaluation,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    FreshnessPolicy,
    MetadataValue,
    multi_asset_check,
)

from assets.keys import ods_key
from assets.resources import WarehouseResource
from catalog.loader import Catalogue
from catalog.models import Resource, UpdateCycle
from quality import freshness
from quality.freshness import (
    CHECK_NAME,
    STATUS_LABEL,
    Freshness,
    Status,
    allowance_window,
    calendar_note,
    describe_allowance,
    end_of_day,
    evaluate_catalogue,
    format_lag,
    local_time,
    store_freshness,
    uncovered_years,
    weekdays_only,
)

_REFERENCE_DAYS = 731  # two ordinary years: every weekday × month alignment of the rule


@functools.cache
def calendar_windows(cycle: UpdateCycle, stale_after_hours: float | None) -> tuple[dt.timedelta, dt.timedelta] | None:
    """The longest (due, deadline) spans after a delivery that the rule allows in ordinary weeks.

    Deliveries at the end of every day of two years, Monday–Friday working days, no holidays.
    """
    tz = dt.UTC
    due = deadline = dt.timedelta(0)
    for i in range(_REFERENCE_DAYS):
        last = end_of_day(dt.date(2001, 1, 1) + dt.timedelta(days=i), tz)
        window = allowance_window(last, cycle, stale_after_hours, weekdays_only)
        if window is None:
            return None
        due, deadline = max(due, window.due - last), max(deadline, window.deadline - last)
    return due, deadline


def freshness_policy(resource: Resource) -> FreshnessPolicy | None:
    """The Dagster freshness policy of a resource's ODS asset, from its 更新周期.

    Dagster measures calendar time since the asset's last materialization, so the policy carries
    the loosest span the working-day rule allows in an ordinary week (warn: the next delivery is
    due; fail: the allowance is used up). Holidays and the delivery's own date are judged by the
    ``freshness`` asset check, which the stale-data sensor evaluates.
    """
    spans = calendar_windows(resource.update_cycle, resource.stale_after_hours)
    if spans is None:
        return None
    warn, fail = spans
    fail = max(fail, dt.timedelta(minutes=1))
    if dt.timedelta(minutes=1) <= warn < fail:
        return FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)
    return FreshnessPolicy.time_window(fail_window=fail)


def check_outcome(f: Freshness) -> tuple[bool, AssetCheckSeverity, str, dict]:
    """(passed, severity, description, metadata) of the ``freshness`` check for one evaluation."""
    severity = AssetCheckSeverity.ERROR if f.status == Status.stale else AssetCheckSeverity.WARN
    passed = f.status == Status.fresh
    r = f.resource
    if f.status == Status.missing:
        text = "尚无成功交付的批次"
    elif f.status == Status.unset:
        text = f"更新周期 {r.update_cycle.value} 但目录未设定 stale_after_hours, 无法判断时效"
    else:
        text = (f"最近交付 {local_time(f.delivered_at)}, 已过 {format_lag(f.lag)}; 时效要求 {f.allowance}, "
                f"应于 {local_time(f.window.deadline)} 前再次交付" if f.window else "")
    metadata: dict = {
        "状态": STATUS_LABEL[f.status],
        "更新周期": r.update_cycle.value,
        "时效要求": f.allowance,
        "评估时间": MetadataValue.timestamp(f.now),
    }
    if f.last is not None and f.delivered_at is not None:
        metadata.update({
            "最近批次": f.last.batch_id,
            "最近批次日期": str(f.last.batch_date),
            "最近交付": MetadataValue.timestamp(f.delivered_at),
            "滞后": format_lag(f.lag),
            "滞后(小时)": round((f.lag or dt.timedelta(0)).total_seconds() / 3600, 2),
        })
    if f.window is not None:
        metadata["应交付时间"] = MetadataValue.timestamp(f.window.due)
        metadata["超期时点"] = MetadataValue.timestamp(f.window.deadline)
    if f.status == Status.stale:
        metadata["超期工作日"] = f.working_days_overdue
    note = calendar_note(uncovered_years(f.window))
    if note:
        metadata["工作日日历"] = note
    return passed, severity, text, metadata


def check_evaluation(f: Freshness, asset_key: AssetKey) -> AssetCheckEvaluation:
    """The evaluation a sensor reports for a resource (no run needed)."""
    passed, severity, text, metadata = check_outcome(f)
    return AssetCheckEvaluation(asset_key=asset_key, check_name=CHECK_NAME, passed=passed, severity=severity,
                                description=text, metadata=metadata, blocking=False)


def build_freshness_checks(catalogue: Catalogue) -> AssetChecksDefinition:
    """The ``freshness`` check on every ODS asset: the sensor reports it, a run may execute it too."""

    keys = {ods_key(r): r for r in catalogue.resources}
    specs = [
        AssetCheckSpec(
            CHECK_NAME, asset=key, blocking=False,
            description=f"时效性: 最近一次成功交付距今是否超出更新周期 {r.update_cycle.value} 的时限 "
                        f"({describe_allowance(r.update_cycle, r.stale_after_hours)}, 按法定工作日计)",
        )
        for key, r in keys.items()
    ]

    @multi_asset_check(specs=specs, can_subset=True, name="ods_freshness",
                       description="各资源的时效性 (更新周期 + 工作日宽限), 写入 quality.freshness")
    def _freshness(context, warehouse: WarehouseResource) -> Iterable[AssetCheckResult]:  # context: AssetCheckExecutionContext
        wh = warehouse.get()
        chosen = [keys[k.asset_key] for k in context.selected_asset_check_keys]
        evaluations = evaluate_catalogue(wh, catalogue, freshness.clock(), chosen)  # the module's clock: tests set it
        store_freshness(wh, evaluations)
        for f in evaluations:
            passed, severity, text, metadata = check_outcome(f)
            yield AssetCheckResult(asset_key=ods_key(f.resource), check_name=CHECK_NAME, passed=passed,
                                   severity=severity, description=text, metadata=metadata)

    return _freshness
