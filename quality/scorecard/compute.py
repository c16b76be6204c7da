"""The department scorecard's formulas (quality.md «Scorecard»), pure over polars frames.

Per rule r (evaluated N_r > 0):    s_r = 100 · (1 − U_r / N_r)
Dimension of a resource:          D = Σ w_r·s_r / Σ w_r            w = 3 blocking, 1 warning
Resource score:                   S = Σ W_d·D_d / Σ W_d  over the dimensions that have rules
                                  (规范性 15, 完整性 20, 准确性 20, 一致性 25, 时效性 15, 可访问性 5)
Department data score:            Q = Σ ω·S / Σ ω                  ω = 2 for a base-library resource
Response score:                   R = max(0, 100 · on time / due − 5 · overdue)   (no ticket due: 100)
Total:                            T = 0.8·Q + 0.2·R;  A ≥ 95, B ≥ 90, C ≥ 80, D ≥ 60, else E

A *base-library resource* is one whose department is the authority (一数一源) for at least one
element of its library: its values become the 基础库. A resource that only carries copies weighs 1.
Weights and thresholds: :class:`quality.config.ScorecardConfig`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import polars as pl

from catalog.loader import Catalogue
from quality.config import ScorecardConfig
from quality.rules import Dimension

DIMENSIONS: tuple[Dimension, ...] = tuple(Dimension)
DIMENSION_COLUMN = {d: d.name for d in Dimension}  # 规范性 → conformity: ASCII column names in storage

RULE_INPUT_SCHEMA: dict[str, pl.DataType] = {
    "department": pl.String(), "resource_id": pl.String(), "batch_id": pl.String(), "rule_id": pl.String(),
    "label": pl.String(), "dimension": pl.String(), "severity": pl.String(), "evaluated": pl.Int64(),
    "failed": pl.Int64(),
}
"""One row per rule and resource: the counts a score is computed from."""


def rule_scores(rules: pl.DataFrame, config: ScorecardConfig) -> pl.DataFrame:
    """Each rule's score s_r = 100·(1 − U/N) and weight w_r; rules that evaluated nothing are dropped
    (a pass rate over no values says nothing)."""
    weights = {k.value: v for k, v in config.rule_weights.items()}
    return rules.filter(pl.col("evaluated") > 0).with_columns(
        (100.0 * (1 - pl.col("failed") / pl.col("evaluated"))).alias("score"),
        pl.col("severity").replace_strict(weights, return_dtype=pl.Float64).alias("weight"),
    )


def dimension_scores(scored: pl.DataFrame) -> pl.DataFrame:
    """D per resource and dimension: Σ w·s / Σ w over the rules of that dimension."""
    return (
        scored.group_by("department", "resource_id", "dimension")
        .agg(((pl.col("weight") * pl.col("score")).sum() / pl.col("weight").sum()).alias("score"),
             pl.len().alias("rules"))
        .sort("department", "resource_id", "dimension")
    )


def resource_scores(dimensions: pl.DataFrame, config: ScorecardConfig) -> pl.DataFrame:
    """S per resource: the dimension scores weighted by W_d, over the dimensions that have rules."""
    weights = {k.value: v for k, v in config.dimension_weights.items()}
    w = pl.col("dimension").replace_strict(weights, return_dtype=pl.Float64)
    return (
        dimensions.with_columns(w.alias("w")).filter(pl.col("w") > 0)
        .group_by("department", "resource_id")
        .agg(((pl.col("w") * pl.col("score")).sum() / pl.col("w").sum()).alias("score"))
        .sort("department", "resource_id")
    )


def response_score(due: int, on_time: int, overdue: int, penalty: float = 5.0) -> float:
    """R = 100 × tickets closed on time / tickets due, minus ``penalty`` per overdue ticket, floored at 0.

    With nothing due yet there is nothing to be late with: 100.
    """
    base = 100.0 * on_time / due if due else 100.0
    return max(0.0, base - penalty * overdue)


def grade(total: float | None, config: ScorecardConfig) -> str | None:
    if total is None:
        return None
    for name, bound in config.grades.items():
        if total >= bound - 1e-9:
            return name
    return config.lowest_grade


def total_score(q: float | None, r: float, config: ScorecardConfig) -> float | None:
    """T = 0.8·Q + 0.2·R (weights normalised); None when the department has no data score."""
    if q is None:
        return None
    return (config.data_weight * q + config.response_weight * r) / (config.data_weight + config.response_weight)


def competition_ranks(totals: Mapping[str, float | None], digits: int = 1) -> dict[str, int | None]:
    """1 = best; totals equal at the precision reports show (one decimal) share a rank (1, 2, 2, 4);
    departments without a total are unranked."""
    scored = sorted(((round(v, digits), k) for k, v in totals.items() if v is not None), key=lambda x: -x[0])
    out: dict[str, int | None] = {k: None for k in totals}
    for i, (value, name) in enumerate(scored):
        out[name] = i + 1 if i == 0 or value != scored[i - 1][0] else out[scored[i - 1][1]]
    return out


RESPONSE_SCHEMA = {"department": pl.String(), "due": pl.Int64(), "on_time": pl.Int64(), "overdue": pl.Int64()}


def department_scores(
    departments: Iterable[str],
    dimensions: pl.DataFrame,
    resources: pl.DataFrame,
    resource_weights: Mapping[str, float],
    response: pl.DataFrame,
    config: ScorecardConfig,
) -> pl.DataFrame:
    """Q, R, total, grade, rank and the six dimension scores (ω-weighted over resources) per department."""
    rw = pl.col("resource_id").replace_strict(dict(resource_weights), default=1.0, return_dtype=pl.Float64)
    q = resources.with_columns(rw.alias("w")).group_by("department").agg(
        ((pl.col("w") * pl.col("score")).sum() / pl.col("w").sum()).alias("q"), pl.len().alias("resources"))
    dims = dimensions.with_columns(rw.alias("w")).group_by("department", "dimension").agg(
        ((pl.col("w") * pl.col("score")).sum() / pl.col("w").sum()).alias("score"))
    qs = {r["department"]: (r["q"], r["resources"]) for r in q.iter_rows(named=True)}
    ds = {(r["department"], r["dimension"]): r["score"] for r in dims.iter_rows(named=True)}
    resp = {r["department"]: r for r in response.iter_rows(named=True)}
    rows = []
    for dept in departments:
        qv, n = qs.get(dept, (None, 0))
        t = resp.get(dept) or {"due": 0, "on_time": 0, "overdue": 0}
        r = response_score(t["due"], t["on_time"], t["overdue"], config.overdue_penalty)
        total = total_score(qv, r, config)
        rows.append({
            "department": dept, "resources": n, "data_score": qv, "response_score": r, "total": total,
            "grade": grade(total, config), "tickets_due": t["due"], "tickets_on_time": t["on_time"],
            "tickets_overdue": t["overdue"],
            **{DIMENSION_COLUMN[d]: ds.get((dept, d.value)) for d in DIMENSIONS},
        })
    ranks = competition_ranks({r["department"]: r["total"] for r in rows})
    for r in rows:
        r["rank"] = ranks[r["department"]]
    return pl.DataFrame(rows, schema=DEPARTMENT_SCHEMA)


DEPARTMENT_SCHEMA: dict[str, pl.DataType] = {
    "department": pl.String(), "resources": pl.Int64(), "data_score": pl.Float64(),
    "response_score": pl.Float64(), "total": pl.Float64(), "grade": pl.String(), "tickets_due": pl.Int64(),
    "tickets_on_time": pl.Int64(), "tickets_overdue": pl.Int64(),
    **{DIMENSION_COLUMN[d]: pl.Float64() for d in Dimension}, "rank": pl.Int64(),
}


@dataclass(frozen=True)
class Scorecard:
    """One computation: rules with scores, dimension and resource scores, department results."""

    period: dt.date
    rules: pl.DataFrame
    dimensions: pl.DataFrame
    resources: pl.DataFrame
    departments: pl.DataFrame

    def department(self, code: str) -> dict | None:
        rows = self.departments.filter(pl.col("department") == code)
        return rows.row(0, named=True) if rows.height else None


def compute(
    period: dt.date,
    rules: pl.DataFrame,
    departments: Iterable[str],
    resource_weights: Mapping[str, float],
    response: pl.DataFrame,
    config: ScorecardConfig,
) -> Scorecard:
    """The whole scorecard from rule counts and ticket counts (pure)."""
    scored = rule_scores(rules.cast(RULE_INPUT_SCHEMA), config)
    dims = dimension_scores(scored)
    res = resource_scores(dims, config).with_columns(
        pl.col("resource_id").replace_strict(dict(resource_weights), default=1.0, return_dtype=pl.Float64)
        .alias("weight"))
    depts = department_scores(departments, dims, res, resource_weights, response.cast(RESPONSE_SCHEMA), config)
    return Scorecard(period, rules.cast(RULE_INPUT_SCHEMA).join(
        scored.select("resource_id", "rule_id", "score", "weight"), on=["resource_id", "rule_id"], how="left"),
        dims, res, depts)


def resource_weights(catalogue: Catalogue, config: ScorecardConfig) -> dict[str, float]:
    """ω per resource: ``base_resource_weight`` when the department is an authority of its library."""
    return {r.id: config.base_resource_weight if catalogue.authoritative_elements(r) else 1.0
            for r in catalogue.resources}
