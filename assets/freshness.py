"""Dagster freshness: the ``freshness`` check on every ODS asset (the source of truth, writes
``quality.freshness``) and the coarse policy derived from the 更新周期."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable

from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetChecksDefinition,
    AssetCheckSeverity,
    AssetCheckSpec,
    FreshnessPolicy,
    MetadataValue,
    PartitionsDefinition,
    multi_asset_check,
)

from assets.checks import BATCH_DATE
from assets.keys import ods_key
from assets.resources import WarehouseResource
from catalog.loader import Catalogue
from catalog.models import Resource
from quality.freshness import calendar
from quality.freshness.calendar import calendar_note
from quality.freshness.evaluate import Freshness, Status, describe_allowance, policy_spans, uncovered_years
from quality.freshness.render import format_lag, local_time
from quality.freshness.store import evaluate_catalogue, store_freshness

CHECK_NAME = "freshness"


def freshness_policy(resource: Resource) -> FreshnessPolicy | None:
    """The Dagster freshness policy of a resource's ODS asset: the 更新周期 read in calendar time.

    Dagster measures calendar time since the asset's last materialization and knows no holidays,
    so the policy is a coarse badge (:func:`quality.freshness.evaluate.policy_spans`: warn when the
    next delivery may be due, fail when the allowance is surely used up in an ordinary week). The
    working-day judgement is the ``freshness`` asset check's.
    """
    spans = policy_spans(resource.update_cycle, resource.stale_after_hours)
    if spans is None:
        return None
    warn, fail = spans
    return FreshnessPolicy.time_window(fail_window=fail, warn_window=warn)


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
        "状态": f.status.label,
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


def build_freshness_checks(catalogue: Catalogue, partitions: PartitionsDefinition | None = None
                           ) -> AssetChecksDefinition:
    """The ``freshness`` check on every ODS asset: the one place freshness is evaluated and stored.

    Every run that materialises an ODS asset executes it for that resource; the stale-data sensor
    requests a run of it alone when a stored due time or deadline passes (pipelines/sensors.py).
    Partitioned like the assets (``partitions``), a result in a nightly run names its batch date (an
    unpartitioned check in a partitioned run was planned for the partition and evaluated for none,
    which Dagster listed as a stray "Skipped" execution per run). The sensor's check-only runs stay
    unpartitioned: Dagster 1.13 cannot give a run of checks alone a partition ("no PartitionsDefinition
    shared by all the provided assets"), and an unpartitioned run of a partitioned check is recorded
    without one.
    """

    keys = {ods_key(r): r for r in catalogue.resources}
    specs = [
        AssetCheckSpec(
            CHECK_NAME, asset=key, blocking=False, partitions_def=partitions,
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
        evaluations = evaluate_catalogue(wh, catalogue, calendar.clock(), chosen)  # the module's clock: tests set it
        store_freshness(wh, evaluations)
        for f in evaluations:
            passed, severity, text, metadata = check_outcome(f)
            if context.has_partition_key:
                metadata[BATCH_DATE] = context.partition_key
            yield AssetCheckResult(asset_key=ods_key(f.resource), check_name=CHECK_NAME, passed=passed,
                                   severity=severity, description=text, metadata=metadata)

    return _freshness


def freshness_check_keys(catalogue: Catalogue) -> list[AssetCheckKey]:
    """The ``freshness`` check of every ODS asset (what a check-only run of it selects)."""
    return [AssetCheckKey(ods_key(r), CHECK_NAME) for r in catalogue.resources]
