"""质量层 storage of rule results (per run and batch) and failing records (keys masked)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Resource
from desensitize.rules import display_exposure, display_rule, display_spec, joint_specs
from warehouse.store import Column, Warehouse

RULE_RESULTS = "rule_results"
FAILURES = "failures"

RULE_RESULT_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(), "batch_id": pl.String(), "resource_id": pl.String(), "department": pl.String(),
    "batch_date": pl.Date(), "rule_id": pl.String(), "kind": pl.String(), "dimension": pl.String(),
    "severity": pl.String(), "label": pl.String(), "evaluated": pl.Int64(), "failed": pl.Int64(),
    "pass_rate": pl.Float64(), "gx_evaluated": pl.Int64(), "gx_failed": pl.Int64(),
    "checked_at": pl.Datetime("us"),
}
FAILURE_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "batch_id": pl.String(), "resource_id": pl.String(), "department": pl.String(), "row_no": pl.Int64(),
    "rule_id": pl.String(), "field": pl.String(), "entity_key_masked": pl.String(), "value_masked": pl.String(),
    "expected": pl.String(),
}


# Below this pass rate a blocking rule keeps a batch out of the base library; the default of
# ``GONGSHU_BLOCKING_MIN_PASS_RATE``, which the edge's settings hand to the 标准层 and the checks.
BLOCKING_MIN_PASS_RATE = 0.9


def withheld_reason(rule_counts: pl.DataFrame, threshold: float) -> str | None:
    """Why a batch must not reach the base library, or None when it may.

    A blocking rule that fails on more than a few rows means a broken delivery, not a few bad rows
    (those are quarantined either way): the whole batch is withheld from the merge, and the rest of
    the night (other resources, their merges, reports) goes on without it.
    """
    bad = rule_counts.filter(
        (pl.col("severity") == "blocking") & (pl.col("evaluated") > 0)
        & (1 - pl.col("failed") / pl.col("evaluated") < threshold)
    )
    if bad.height == 0:
        return None
    return "; ".join(f"{r['label']} 通过率 {1 - r['failed'] / r['evaluated']:.1%} 低于 {threshold:.0%}"
                     for r in bad.iter_rows(named=True))


def rule_results_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", RULE_RESULTS, [Column(n, t) for n, t in RULE_RESULT_SCHEMA.items()],
                    indexes=[["batch_id"], ["resource_id", "batch_date"]])


def failures_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", FAILURES, [Column(n, t) for n, t in FAILURE_TABLE_SCHEMA.items()],
                    indexes=[["batch_id"], ["resource_id", "rule_id"]])


def masked_failures(
    catalogue: Catalogue, resource: Resource, failures: pl.DataFrame, accepted_keys: pl.DataFrame
) -> pl.DataFrame:
    """Failing records with the entity key and sensitive values masked (never a raw identifier).

    A sample row shows the masked key beside one value, which may be of any element of the
    library: values are shown by their display rule (an ID-derived birth date by its year) and the
    key's ID number is masked jointly with that (desensitize/rules.py :func:`joint_specs`), so no
    sample row gives an ID number back.

    ``accepted_keys`` maps ``_row_no`` to the parsed key columns of every parsed row.
    """
    lib = catalogue.library(resource.library)
    key_specs = joint_specs({k: (lib.element(k), display_spec(lib.element(k))) for k in resource.key},
                            display_exposure(lib.elements))
    key_exprs = []
    for k in resource.key:
        rule = display_rule(key_specs[k])
        key_exprs.append(rule(pl.col(k).cast(pl.String)) if rule else pl.col(k).cast(pl.String))
    keyed = failures.join(accepted_keys, on="_row_no", how="left")
    value_masked = pl.lit(None, pl.String)
    for code in {r for r in failures.get_column("field").unique().to_list() if r}:
        e = lib.element(code) if code in {x.code for x in lib.elements} else None
        rule = display_rule(display_spec(e))
        masked = rule(pl.col("value")) if rule else pl.col("value")
        value_masked = pl.when(pl.col("field") == code).then(masked).otherwise(value_masked)
    return keyed.select(
        pl.col("_row_no").alias("row_no"), "rule_id", "field",
        pl.concat_str(key_exprs, separator="|").alias("entity_key_masked"),
        value_masked.alias("value_masked"),
        "expected",
    )


def store_results(
    wh: Warehouse,
    conn: sa.Connection,
    *,
    run_id: str,
    batch_id: str,
    resource: Resource,
    batch_date: dt.date,
    counts: pl.DataFrame,
    gx_counts: dict[str, tuple[int, int]] | None,
    failures: pl.DataFrame,
) -> None:
    """Append this run's rule results; replace the batch's failing records (derived data)."""
    rr, ft = rule_results_table(wh), failures_table(wh)
    wh.create(conn, rr)
    wh.create(conn, ft)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    gx_counts = gx_counts or {}
    results = counts.with_columns(
        pl.lit(run_id).alias("run_id"), pl.lit(batch_id).alias("batch_id"), pl.lit(resource.id).alias("resource_id"),
        pl.lit(resource.department).alias("department"), pl.lit(batch_date).alias("batch_date"),
        pl.when(pl.col("evaluated") > 0).then(1 - pl.col("failed") / pl.col("evaluated")).otherwise(1.0)
        .alias("pass_rate"),
        pl.col("rule_id").replace_strict({k: v[0] for k, v in gx_counts.items()}, default=None,
                                         return_dtype=pl.Int64).alias("gx_evaluated"),
        pl.col("rule_id").replace_strict({k: v[1] for k, v in gx_counts.items()}, default=None,
                                         return_dtype=pl.Int64).alias("gx_failed"),
        pl.lit(now).alias("checked_at"),
    )
    conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', RULE_RESULTS)} WHERE batch_id = :b AND run_id = :r"),
                 {"b": batch_id, "r": run_id})
    wh.insert(conn, rr, results.cast({k: v for k, v in RULE_RESULT_SCHEMA.items()}))
    conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', FAILURES)} WHERE batch_id = :b"), {"b": batch_id})
    wh.insert(conn, ft, failures.with_columns(
        pl.lit(batch_id).alias("batch_id"), pl.lit(resource.id).alias("resource_id"),
        pl.lit(resource.department).alias("department"),
    ))


def read_failures(wh: Warehouse, conn: sa.Connection, batch_id: str, limit: int) -> pl.DataFrame:
    """Failing records of a batch (already masked), first ``limit`` per rule order."""
    schema = {k: v for k, v in FAILURE_TABLE_SCHEMA.items()}
    if not wh.exists("quality", FAILURES):
        return pl.DataFrame(schema=schema)
    cols = ", ".join(wh.quote(c) for c in schema)
    return wh.read(conn, f"SELECT {cols} FROM {wh.qualified('quality', FAILURES)} WHERE batch_id = :b "
                   f"ORDER BY rule_id, row_no LIMIT {int(limit)}", schema, {"b": batch_id})
