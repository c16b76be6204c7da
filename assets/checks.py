"""Dagster asset checks built from the rules: one check per GB/T 36344 dimension per std asset.

A check fails with ERROR when a blocking rule's pass rate falls below the configured minimum — a
batch that bad is not a few bad rows but a broken delivery, and the 标准层 withholds it from the
base-library merge (the other resources of the night are merged as usual). Otherwise any failure
is a WARN. Rows that fail blocking rules never
reach the base library either way: the 标准层 quarantines them.
"""


from typing import TypeVar

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    asset_check,
)

from assets.resources import WarehouseResource
from catalog.loader import Catalogue
from catalog.models import Resource
from desensitize.display import md_cell
from quality.consistency import copies
from quality.references import check_references
from quality.results import BLOCKING_MIN_PASS_RATE
from quality.rules import Dimension, Rule, Severity, resource_rules

CHECK_NAME = {
    Dimension.conformity: "conformity",
    Dimension.completeness: "completeness",
    Dimension.accuracy: "accuracy",
    Dimension.consistency: "consistency",
    Dimension.timeliness: "timeliness",
    Dimension.accessibility: "accessibility",
}
SAMPLE_ROWS = 10
R = TypeVar("R", AssetCheckResult, MaterializeResult)


BATCH_DATE = "批次日期"


def with_batch_date(result: R, day: str) -> R:
    """``result`` (a check result, or a materialisation with its check results) with the batch date in
    every check result's metadata: the checks tab lists results by run, and names the date so."""
    if isinstance(result, AssetCheckResult):
        return result.with_metadata({**(result.metadata or {}), BATCH_DATE: day})
    if isinstance(result, MaterializeResult) and result.check_results:
        return MaterializeResult(asset_key=result.asset_key, metadata=result.metadata,
                                 check_results=[with_batch_date(c, day) for c in result.check_results],
                                 data_version=result.data_version, tags=result.tags)
    return result


def percent(rate: float) -> MetadataValue:
    """A rate as people read it, ``99.90 %`` (a bare float shows as 0.9989513591998064)."""
    return MetadataValue.text(f"{rate:.2%}".replace("%", " %"))


def rules_by_dimension(rules: list[Rule]) -> dict[Dimension, list[Rule]]:
    out: dict[Dimension, list[Rule]] = {}
    for r in rules:
        out.setdefault(r.dimension, []).append(r)
    return out


def std_check_specs(catalogue: Catalogue, resource: Resource, asset_key: AssetKey,
                    partitions: PartitionsDefinition | None = None) -> list[AssetCheckSpec]:
    """One check per dimension of the resource's rules; partitioned like the asset, so each result
    carries its batch date."""
    specs = []
    for dim, rules in rules_by_dimension(resource_rules(catalogue, resource)).items():
        # Not a Dagster-blocking check: a failed blocking rule withholds this resource's batch from
        # the merge (audit.reconciliation.withheld), while the rest of the night goes on.
        blocking = any(r.severity == Severity.blocking for r in rules)
        specs.append(AssetCheckSpec(
            CHECK_NAME[dim], asset=asset_key, partitions_def=partitions,
            description=f"{dim.value}: " + "; ".join(r.label + ("(阻断)" if r.severity == Severity.blocking else "")
                                                    for r in rules)
            + ("。阻断规则通过率低于阈值时, 该批次不合并入基础库, 其余资源照常归集。" if blocking else ""),
        ))
    return specs


def std_check_results(
    resource: Resource, rule_counts: pl.DataFrame, failures: pl.DataFrame, gx_counts: dict | None,
    data_docs_url: str | None = None, asset_key: AssetKey | None = None, *, threshold: float = BLOCKING_MIN_PASS_RATE,
) -> list[AssetCheckResult]:
    """One result per dimension: pass rates, failing counts, a masked sample, the GX agreement and a
    link to the Great Expectations Data Docs page of the batch's validation (``data_docs_url``, served
    over HTTP by ``make ui``: :meth:`assets.resources.Settings.page_url`). A blocking rule below
    ``threshold`` (``GONGSHU_BLOCKING_MIN_PASS_RATE``) makes the dimension's check an ERROR."""
    out = []
    counts = rule_counts.with_columns(
        pl.when(pl.col("evaluated") > 0).then(1 - pl.col("failed") / pl.col("evaluated")).otherwise(1.0)
        .alias("pass_rate")
    )
    for dim in counts.get_column("dimension").unique(maintain_order=True).to_list():
        rows = counts.filter(pl.col("dimension") == dim)
        failed = int(rows.get_column("failed").sum())
        blocked = rows.filter((pl.col("severity") == Severity.blocking.value) & (pl.col("pass_rate") < threshold))
        lines = ["| 规则 | 严重性 | 评估 | 不通过 | 通过率 | GX 不通过 |", "|---|---|---|---|---|---|"]
        agree = True
        for r in rows.iter_rows(named=True):
            gx = (gx_counts or {}).get(r["rule_id"])
            if gx is not None and (gx[0], gx[1]) != (r["evaluated"], r["failed"]):
                agree = False
            lines.append(
                f"| {r['label']} | {'阻断' if r['severity'] == 'blocking' else '警告'} | {r['evaluated']:,} | "
                f"{r['failed']:,} | {r['pass_rate']:.2%} | {'' if gx is None else f'{gx[1]:,}'} |"
            )
        sample = failures.filter(pl.col("rule_id").is_in(rows.get_column("rule_id").to_list())).head(SAMPLE_ROWS)
        sample_md = "\n".join(
            ["| 行号 | 规则 | 主键(已脱敏) | 值(已脱敏) |", "|---|---|---|---|"]
            + [f"| {s['row_no']} | {md_cell(s['rule_id'])} | {md_cell(s['entity_key_masked'])} | "
               f"{md_cell(s['value_masked'])} |" for s in sample.iter_rows(named=True)]
        ) if sample.height else "无"
        passed = failed == 0
        severity = AssetCheckSeverity.ERROR if blocked.height else AssetCheckSeverity.WARN
        out.append(AssetCheckResult(
            asset_key=asset_key,
            check_name=CHECK_NAME[Dimension(dim)],
            passed=passed,
            severity=severity,
            metadata={
                "评估值数": int(rows.get_column("evaluated").sum()),
                "不通过数": failed,
                "最低通过率": percent(float(rows.get_column("pass_rate").min())),
                "规则结果": MetadataValue.md("\n".join(lines)),
                "不通过样例(已脱敏)": MetadataValue.md(sample_md),
                "GX 与 polars 计数一致": agree if gx_counts is not None else "未运行 GX",
                **({"GX Data Docs": MetadataValue.url(data_docs_url)} if data_docs_url else {}),
            },
        ))
    return out


def consistency_check_spec(catalogue: Catalogue, lib, asset_key: AssetKey,
                           partitions: PartitionsDefinition | None = None) -> AssetCheckSpec:
    pairs = []
    for r in catalogue.resources_of(lib.code):
        for code in copies(catalogue, r):
            auth = catalogue.authority(lib.code, code)
            if isinstance(auth, str):
                pairs.append(f"{lib.element(code).name}: {catalogue.department(r.department).name} 对照 "
                             f"{catalogue.department(auth).name}")
    return AssetCheckSpec("consistency", asset=asset_key, partitions_def=partitions,
                          description="一数一源(相同数据一致性): " + "; ".join(pairs))


def consistency_check_result(run) -> AssetCheckResult:
    rates = run.rates
    lines = ["| 数据元 | 部门 | 比对 | 一致 | 一致率 |", "|---|---|---|---|---|"]
    for r in rates.iter_rows(named=True) if rates.height else []:
        rate = r["matched"] / r["compared"] if r["compared"] else 1.0
        lines.append(f"| {r['element']} | {r['department']} | {r['compared']:,} | {r['matched']:,} | {rate:.2%} |")
    compared = int(rates.get_column("compared").sum()) if rates.height else 0
    matched = int(rates.get_column("matched").sum()) if rates.height else 0
    return AssetCheckResult(
        check_name="consistency",
        passed=run.conflicts_today.height == 0,
        severity=AssetCheckSeverity.WARN,
        metadata={
            "比对值数": compared,
            "一致值数": matched,
            "一致率": percent(matched / compared if compared else 1.0),
            "今日冲突": run.conflicts_today.height,
            "新开冲突": run.changes.opened,
            "再次出现": run.changes.seen_again,
            "已修复关闭": run.changes.closed,
            "未关闭冲突总数": run.changes.open_total,
            "按数据元与部门": MetadataValue.md("\n".join(lines)),
        },
    )


def reference_check(catalogue: Catalogue, lib, partitions, asset_key: AssetKey, targets: list[AssetKey]):
    """关联数据一致性 of ``lib`` against the libraries it refers to (a multi-library check)."""


    desc = "; ".join(
        f"{lib.element(r.element).name} 须存在于 " + "/".join(catalogue.library(t.library).name for t in r.targets)
        + (f", 且{lib.element(r.name_field).name}一致" if r.name_field else "")
        + ("(仅本市户籍)" if r.local_only else "")
        for r in lib.references
    )

    @asset_check(asset=asset_key, name="referential", additional_deps=targets, partitions_def=partitions,
                 description="关联数据一致性: " + desc)
    def _referential(context, warehouse: WarehouseResource) -> AssetCheckResult:
        import datetime as dt

        run = check_references(warehouse.get(), catalogue, lib.code, dt.date.fromisoformat(context.partition_key))
        counts = run.counts
        lines = ["| 数据元 | 目标库 | 检查 | 不存在 | 名称不一致 |", "|---|---|---|---|---|"]
        for r in counts.iter_rows(named=True) if counts.height else []:
            lines.append(f"| {r['element']} | {r['target'] or '(无法识别的代码)'} | {r['checked']:,} | "
                         f"{r['missing']:,} | {r['name_mismatch']:,} |")
        failed = run.failures.height
        return AssetCheckResult(
            passed=failed == 0, severity=AssetCheckSeverity.WARN,
            metadata={"不通过数": failed, "结果": MetadataValue.md("\n".join(lines)), BATCH_DATE: context.partition_key},
        )

    return _referential
