"""The department scorecard (quality.md «Scorecard»): pure formulas first, then the thin edges.

Per rule r (evaluated N_r > 0):    s_r = 100 · (1 − U_r / N_r)
Dimension of a resource:          D = Σ w_r·s_r / Σ w_r            w = 3 blocking, 1 warning
Resource score:                   S = Σ W_d·D_d / Σ W_d  over the dimensions that have rules
                                  (规范性 15, 完整性 20, 准确性 20, 一致性 25, 时效性 15, 可访问性 5)
Department data score:            Q = Σ ω·S / Σ ω                  ω = 2 for a base-library resource
Response score:                   R = max(0, 100 · on time / due − 5 · overdue)   (no ticket due: 100)
Total:                            T = 0.8·Q + 0.2·R;  A ≥ 95, B ≥ 90, C ≥ 80, D ≥ 60, else E

A *base-library resource* is one whose department is the authority (一数一源) for at least one
element of its library: its values become the 基础库. A resource that only carries copies weighs 1.

Every weight and threshold is :class:`ScorecardConfig`: defaults above, overridden by a YAML file
(``GONGSHU_SCORECARD_CONFIG``, else ``scorecard.yaml`` in the catalogue folder) and then by
``GONGSHU_SCORECARD_<FIELD>`` environment variables for scalar fields.

Rule inputs come from what the pipeline stored for each resource's latest batch up to the period
(``quality.rule_results``), plus rules the row checks do not cover: 可访问性 (records readable:
not unparseable, no undecodable bytes), 规范性 (dates and numbers parse), 时效性 (the freshness
rule, judged at the end of the period), 一致性 (一数一源 copies equal the authority; 关联数据
references exist with the same name). Results are stored per run in ``quality.scorecard`` at three
levels (rule, resource, department), so trends and "change since the last report" are queries.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import sqlalchemy as sa
import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from catalog.loader import Catalogue
from quality.rules import Dimension, Severity
from warehouse.store import Column, Warehouse

CONFIG_ENV = "GONGSHU_SCORECARD_CONFIG"
CONFIG_FILE = "scorecard.yaml"
ENV_PREFIX = "GONGSHU_SCORECARD_"

DIMENSIONS: tuple[Dimension, ...] = tuple(Dimension)
DIMENSION_COLUMN = {d: d.name for d in Dimension}  # 规范性 → conformity: ASCII column names in storage


class ConfigError(ValueError):
    """The scorecard configuration is invalid (file, field and reason in the message)."""


class ScorecardConfig(BaseModel):
    """Weights, thresholds and 校核 deadlines. Defaults follow quality.md and domain.md."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    rule_weights: dict[Severity, float] = Field(
        default_factory=lambda: {Severity.blocking: 3.0, Severity.warning: 1.0},
        description="w_r per severity in the dimension score")
    dimension_weights: dict[Dimension, float] = Field(
        default_factory=lambda: {
            Dimension.conformity: 15.0, Dimension.completeness: 20.0, Dimension.accuracy: 20.0,
            Dimension.consistency: 25.0, Dimension.timeliness: 15.0, Dimension.accessibility: 5.0,
        },
        description="W_d per GB/T 36344 dimension in the resource score")
    base_resource_weight: float = Field(default=2.0, gt=0, description="ω of a base-library resource in Q")
    data_weight: float = Field(default=0.8, ge=0, description="weight of Q in the total")
    response_weight: float = Field(default=0.2, ge=0, description="weight of R in the total")
    overdue_penalty: float = Field(default=5.0, ge=0, description="points off R per overdue ticket")
    grades: dict[str, float] = Field(
        default_factory=lambda: {"A": 95.0, "B": 90.0, "C": 80.0, "D": 60.0},
        description="grade → lowest total that earns it, best first")
    lowest_grade: str = "E"
    ticket_working_days: int = Field(default=5, ge=1, description="校核 deadline in working days")
    max_extension_working_days: int = Field(
        default=15, ge=0, description="total extension a ticket may receive, in working days, with approval")
    report_rows: int = Field(default=50, ge=1, description="failing records listed in the HTML (all in the XLSX)")
    trend_points: int = Field(default=12, ge=2, description="reports shown in the score trend")

    @model_validator(mode="after")
    def _check(self) -> ScorecardConfig:
        for sev in Severity:
            if self.rule_weights.get(sev, 0) <= 0:
                raise ValueError(f"rule_weights.{sev.value} must be > 0")
        for dim in Dimension:
            if self.dimension_weights.get(dim, -1) < 0:
                raise ValueError(f"dimension_weights.{dim.value} must be given and ≥ 0")
        if self.data_weight + self.response_weight <= 0:
            raise ValueError("data_weight + response_weight must be > 0")
        bounds = list(self.grades.values())
        if bounds != sorted(bounds, reverse=True):
            raise ValueError("grades must be listed best first with decreasing thresholds")
        return self


def load_config(catalogue_root: Path | None = None, env: Mapping[str, str] | None = None) -> ScorecardConfig:
    """The configuration: YAML (``GONGSHU_SCORECARD_CONFIG`` or the catalogue's ``scorecard.yaml``), then
    ``GONGSHU_SCORECARD_<FIELD>``: both from ``env``, the ``GONGSHU_SCORECARD_*`` variables the edge's
    settings hold (none given: the catalogue's file and the defaults)."""
    env = env or {}
    data: dict = {}
    path = Path(env[CONFIG_ENV]) if env.get(CONFIG_ENV) else (catalogue_root / CONFIG_FILE if catalogue_root else None)
    if path is not None and path.exists():
        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: 不是有效的 YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: 顶层应为映射 (键: 值)")
        data.update(loaded)
        defaults = ScorecardConfig()
        for name in ("rule_weights", "dimension_weights"):  # a file may override some weights only
            if isinstance(data.get(name), dict):
                data[name] = {**{k.value: v for k, v in getattr(defaults, name).items()},
                              **{str(k): v for k, v in data[name].items()}}
    elif env.get(CONFIG_ENV):
        raise ConfigError(f"{CONFIG_ENV}={path}: 文件不存在")
    for name, info in ScorecardConfig.model_fields.items():
        value = env.get(ENV_PREFIX + name.upper())
        if value is not None and info.annotation in (int, float, str):
            data[name] = value
    try:
        return ScorecardConfig.model_validate(data)
    except ValueError as exc:
        raise ConfigError(f"评分配置有误 ({path or '环境变量'}): {exc}") from None


# --- the pure core ------------------------------------------------------------------------------

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


# --- rule inputs from the warehouse ---------------------------------------------------------------

READABLE_REASONS = ("unparseable", "wrong_encoding", "bad_encoding", "nul_byte", "formula_no_value")
PARSE_REASONS = ("bad_date", "bad_number")


def _resource_of_batch(batch_id: pl.Expr) -> pl.Expr:
    """``<dept>_<resource>.<YYYYMMDD>.<seq>`` → ``<dept>_<resource>``."""
    return batch_id.str.replace(r"\.\d{8}\.\d+$", "")


def _in_params(values: list[str], prefix: str = "b") -> tuple[str, dict]:
    names = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{n}" for n in names), names


def latest_batches(wh: Warehouse, day: dt.date) -> pl.DataFrame:
    """Each resource's newest standardised batch with a batch date up to ``day``."""
    from warehouse.std import reconciliation_for

    return reconciliation_for(wh, day)


def stored_rule_counts(wh: Warehouse, batches: pl.DataFrame) -> pl.DataFrame:
    """The row rules of each batch, from its most recent standardisation run."""
    ids = batches.get_column("batch_id").to_list() if batches.height else []
    if not ids or not wh.exists("quality", "rule_results"):
        return pl.DataFrame(schema=RULE_INPUT_SCHEMA)
    clause, params = _in_params(ids)
    schema = {**{k: v for k, v in RULE_INPUT_SCHEMA.items()}, "checked_at": pl.Datetime("us")}
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT department, resource_id, batch_id, rule_id, label, dimension, severity, "
                              f"evaluated, failed, checked_at FROM {wh.qualified('quality', 'rule_results')} "
                              f"WHERE batch_id IN ({clause})", schema, params)
    last = pl.col("checked_at") == pl.col("checked_at").max().over("batch_id")
    return frame.filter(last).drop("checked_at").unique(["batch_id", "rule_id"], keep="last")


def delivery_rule_counts(wh: Warehouse, catalogue: Catalogue, batches: pl.DataFrame) -> pl.DataFrame:
    """可访问性 (records readable) and 规范性 (dates and numbers parse) from the quarantine."""
    if not batches.height:
        return pl.DataFrame(schema=RULE_INPUT_SCHEMA)
    ids = batches.get_column("batch_id").to_list()
    q_schema = {"batch_id": pl.String(), "row_no": pl.Int64(), "reason_code": pl.String()}
    frame = pl.DataFrame(schema=q_schema)
    if wh.exists("quality", "quarantine"):
        clause, params = _in_params(ids)
        reasons, rparams = _in_params(list(READABLE_REASONS + PARSE_REASONS), "r")
        with wh.engine.connect() as conn:
            frame = wh.read(conn, f"SELECT batch_id, row_no, reason_code FROM {wh.qualified('quality', 'quarantine')} "
                                  f"WHERE batch_id IN ({clause}) AND reason_code IN ({reasons})",
                            q_schema, {**params, **rparams})
    unreadable = frame.filter(pl.col("reason_code").is_in(READABLE_REASONS)).group_by("batch_id").agg(
        pl.col("row_no").n_unique().alias("n"))
    unparsed = frame.filter(pl.col("reason_code").is_in(PARSE_REASONS)).group_by("batch_id").agg(
        pl.col("row_no").n_unique().alias("n"))
    bad = {r["batch_id"]: r["n"] for r in unreadable.iter_rows(named=True)}
    parse = {r["batch_id"]: r["n"] for r in unparsed.iter_rows(named=True)}
    dept = {r.id: r.department for r in catalogue.resources}
    rows = []
    for b in batches.iter_rows(named=True):
        rid, delivered = b["resource_id"], int(b["rows_delivered"])
        readable = delivered - bad.get(b["batch_id"], 0)
        common = {"department": dept.get(rid), "resource_id": rid, "batch_id": b["batch_id"]}
        rows.append({**common, "rule_id": "delivery.readable", "label": "记录可按目录格式读取(无法解析或含乱码的记录)",
                     "dimension": Dimension.accessibility.value, "severity": Severity.blocking.value,
                     "evaluated": delivered, "failed": bad.get(b["batch_id"], 0)})
        rows.append({**common, "rule_id": "delivery.parse", "label": "日期与数值可按目录格式解析",
                     "dimension": Dimension.conformity.value, "severity": Severity.warning.value,
                     "evaluated": readable, "failed": parse.get(b["batch_id"], 0)})
    return pl.DataFrame([r for r in rows if r["department"]], schema=RULE_INPUT_SCHEMA)


def timeliness_rule_counts(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> pl.DataFrame:
    """时效性: one rule per resource, failed when it is stale (or never delivered) at the end of ``day``."""
    from quality.freshness import Status, city_zone, end_of_day, evaluate_catalogue

    as_of = end_of_day(day, city_zone(catalogue))
    rows = []
    for f in evaluate_catalogue(wh, catalogue, as_of):
        if f.status == Status.unset:
            continue  # 其他 without a limit: nothing to judge
        r = f.resource
        rows.append({"department": r.department, "resource_id": r.id, "batch_id": f.last.batch_id if f.last else None,
                     "rule_id": "delivery.timely", "label": f"按更新周期({r.update_cycle.value})及时交付 ({f.allowance})",
                     "dimension": Dimension.timeliness.value, "severity": Severity.blocking.value, "evaluated": 1,
                     "failed": int(f.status in (Status.stale, Status.missing))})
    return pl.DataFrame(rows, schema=RULE_INPUT_SCHEMA)


def consistency_rule_counts(wh: Warehouse, catalogue: Catalogue, batches: pl.DataFrame) -> pl.DataFrame:
    """一致性: each copied element of each resource against the base library (matched / compared),
    and each 关联数据 reference of a library, attributed to the resource that supplied the value."""
    from quality.consistency import compare_copies, copies, referential
    from warehouse.base import read_current
    from warehouse.std import read_std

    latest = {r["resource_id"]: r["batch_id"] for r in batches.iter_rows(named=True)}
    by_id = {r.id: r for r in catalogue.resources}
    rows: list[dict] = []
    current: dict[str, pl.DataFrame] = {}
    with wh.engine.connect() as conn:
        def base(code: str) -> pl.DataFrame | None:
            if code not in current and wh.exists("base", code):
                current[code] = read_current(wh, conn, catalogue.library(code))
            return current.get(code)

        for lib in catalogue.libraries:
            for resource in catalogue.resources_of(lib.code):
                batch_id = latest.get(resource.id)
                if batch_id is None or not copies(catalogue, resource) or not wh.exists("std", resource.id):
                    continue
                cur = base(lib.code)
                if cur is None:
                    continue
                frame = read_std(wh, conn, catalogue, resource, batch_id, latest=True)
                result = compare_copies(catalogue, lib, [(resource, batch_id, frame)], cur)
                auth_names = {}
                for r in result.rates.iter_rows(named=True):
                    auth = catalogue.authority(lib.code, r["element"])
                    auth_names[r["element"]] = catalogue.department(auth).name if isinstance(auth, str) else "权威部门"
                    rows.append({
                        "department": resource.department, "resource_id": resource.id, "batch_id": batch_id,
                        "rule_id": f"{r['element']}.authority",
                        "label": f"{lib.element(r['element']).name}: 与权威部门({auth_names[r['element']]})一致",
                        "dimension": Dimension.consistency.value, "severity": Severity.warning.value,
                        "evaluated": r["compared"], "failed": r["compared"] - r["matched"],
                    })
            if not lib.references:
                continue
            needed = {lib.code} | {t.library for ref in lib.references for t in ref.targets}
            frames = {code: base(code) for code in needed}
            if any(f is None for f in frames.values()):
                continue
            failures, _ = referential(catalogue, lib, frames[lib.code], frames)
            for ref in lib.references:
                lineage = f"{ref.element}__batch"
                value = pl.col(ref.element)
                checked = frames[lib.code].filter(value.is_not_null())
                if ref.local_only:
                    checked = checked.filter(value.str.slice(0, 6).is_in(catalogue.city.city.region_codes))
                if lineage not in checked.columns:
                    continue
                evaluated = checked.group_by(_resource_of_batch(pl.col(lineage)).alias("resource_id")).len()
                failed = failures.filter(pl.col("element") == ref.element).group_by(
                    _resource_of_batch(pl.col("source_batch")).alias("resource_id")).agg(
                    pl.col("entity_key").n_unique().alias("failed"))
                counts = evaluated.join(failed, on="resource_id", how="left").fill_null(0)
                for r in counts.iter_rows(named=True):
                    resource = by_id.get(r["resource_id"])
                    if resource is None:
                        continue
                    rows.append({
                        "department": resource.department, "resource_id": resource.id,
                        "batch_id": latest.get(resource.id), "rule_id": f"{ref.element}.reference",
                        "label": f"{lib.element(ref.element).name}: 关联数据存在且名称一致",
                        "dimension": Dimension.consistency.value, "severity": Severity.warning.value,
                        "evaluated": r["len"], "failed": r["failed"],
                    })
    return pl.DataFrame(rows, schema=RULE_INPUT_SCHEMA)


def gather_rules(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> pl.DataFrame:
    """Every rule count the scorecard of ``day`` is computed from (latest batch of each resource)."""
    batches = latest_batches(wh, day)
    known = {r.id for r in catalogue.resources}
    batches = batches.filter(pl.col("resource_id").is_in(list(known)))
    parts = [stored_rule_counts(wh, batches), delivery_rule_counts(wh, catalogue, batches),
             timeliness_rule_counts(wh, catalogue, day), consistency_rule_counts(wh, catalogue, batches)]
    return pl.concat([p.select(list(RULE_INPUT_SCHEMA)).cast(RULE_INPUT_SCHEMA) for p in parts]).sort(
        "department", "resource_id", "dimension", "rule_id")


# --- storage: quality.scorecard -------------------------------------------------------------------

SCORECARD = "scorecard"
SCORECARD_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.String(), "period": pl.Date(), "computed_at": pl.Datetime("us"), "level": pl.String(),
    "department": pl.String(), "resource_id": pl.String(), "batch_id": pl.String(), "rule_id": pl.String(),
    "label": pl.String(), "dimension": pl.String(), "severity": pl.String(), "evaluated": pl.Int64(),
    "failed": pl.Int64(), "weight": pl.Float64(), "score": pl.Float64(), "data_score": pl.Float64(),
    "response_score": pl.Float64(), "grade": pl.String(), "rank": pl.Int64(), "resources": pl.Int64(),
    "tickets_due": pl.Int64(), "tickets_on_time": pl.Int64(), "tickets_overdue": pl.Int64(),
    **{DIMENSION_COLUMN[d]: pl.Float64() for d in Dimension},
}
"""One row per rule, resource and department of each run. ``score`` is s_r, S or the total T."""


def scorecard_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", SCORECARD, [Column(n, t) for n, t in SCORECARD_SCHEMA.items()],
                    indexes=[["period", "level", "department"], ["run_id"]])


def scorecard_rows(card: Scorecard, run_id: str, computed_at: dt.datetime) -> pl.DataFrame:
    """The three levels of a scorecard as rows of ``quality.scorecard``."""
    common = [pl.lit(run_id).alias("run_id"), pl.lit(card.period).alias("period"),
              pl.lit(computed_at).alias("computed_at")]
    rules = card.rules.select(*common, pl.lit("rule").alias("level"), "department", "resource_id", "batch_id",
                              "rule_id", "label", "dimension", "severity", "evaluated", "failed", "weight", "score")
    wide = card.dimensions.pivot(on="dimension", index=["department", "resource_id"], values="score") \
        if card.dimensions.height else pl.DataFrame(schema={"department": pl.String(), "resource_id": pl.String()})
    wide = wide.rename({d.value: DIMENSION_COLUMN[d] for d in Dimension if d.value in wide.columns})
    resources = card.resources.join(wide, on=["department", "resource_id"], how="left").select(
        *common, pl.lit("resource").alias("level"), pl.all())
    departments = card.departments.rename({"total": "score"}).select(
        *common, pl.lit("department").alias("level"), pl.all())
    frames = [f.with_columns([pl.lit(None, t).alias(c) for c, t in SCORECARD_SCHEMA.items() if c not in f.columns])
              .select(list(SCORECARD_SCHEMA)).cast(SCORECARD_SCHEMA) for f in (rules, resources, departments)]
    return pl.concat(frames)


def store_scorecard(wh: Warehouse, card: Scorecard, run_id: str, computed_at: dt.datetime | None = None) -> None:
    """Append this run's scorecard (a rerun of the same run and period replaces its rows)."""
    computed_at = computed_at or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    table = scorecard_table(wh)
    with wh.begin() as conn:
        wh.create(conn, table)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', SCORECARD)} WHERE run_id = :r AND period = :p"),
                     {"r": run_id, "p": card.period})
        wh.insert(conn, table, scorecard_rows(card, run_id, computed_at))


def read_scorecard(wh: Warehouse, level: str | None = None, department: str | None = None,
                   up_to: dt.date | None = None) -> pl.DataFrame:
    """Stored scorecard rows (every run), oldest first."""
    if not wh.exists("quality", SCORECARD):
        return pl.DataFrame(schema=SCORECARD_SCHEMA)
    where, params = [], {}
    for col, val in (("level", level), ("department", department)):
        if val is not None:
            where.append(f"{col} = :{col}")
            params[col] = val
    if up_to is not None:
        where.append("period <= :up_to")
        params["up_to"] = up_to
    sql = (f"SELECT {', '.join(SCORECARD_SCHEMA)} FROM {wh.qualified('quality', SCORECARD)}"
           + (" WHERE " + " AND ".join(where) if where else "") + " ORDER BY period, computed_at")
    with wh.engine.connect() as conn:
        return wh.read(conn, sql, SCORECARD_SCHEMA, params)


def latest_run(wh: Warehouse, period: dt.date) -> pl.DataFrame:
    """Every row of the most recent run stored for ``period`` (empty if none)."""
    rows = read_scorecard(wh, up_to=period).filter(pl.col("period") == period)
    if not rows.height:
        return rows
    last = rows.filter(pl.col("level") == "department").sort("computed_at").get_column("run_id")
    run_id = last[-1] if len(last) else rows.get_column("run_id")[-1]
    return rows.filter(pl.col("run_id") == run_id)


def history(wh: Warehouse, up_to: dt.date) -> pl.DataFrame:
    """Department rows, one per period (its latest run), up to ``up_to``."""
    rows = read_scorecard(wh, level="department", up_to=up_to)
    return rows.sort("computed_at").group_by("period", "department", maintain_order=True).last().sort(
        "department", "period")


def previous_totals(wh: Warehouse, period: dt.date) -> pl.DataFrame:
    """Each department's last stored result before ``period``: the "last report" to compare with."""
    rows = history(wh, period - dt.timedelta(days=1))
    return rows.group_by("department", maintain_order=True).last()


# --- presentation -------------------------------------------------------------------------------


def fmt(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def delta_text(now: float | None, before: float | None) -> str:
    if now is None or before is None:
        return "—"
    d = now - before
    return "±0.0" if abs(d) < 0.05 else f"{d:+.1f}"


def markdown_table(card: Scorecard, catalogue: Catalogue, previous: pl.DataFrame | None = None) -> str:
    """The scorecard across departments as a Markdown table (Dagster UI), best first."""
    prev = {r["department"]: r["score"] for r in (previous.iter_rows(named=True) if previous is not None else [])}
    head = ["排名", "部门", "总分", "等级", "较上期", "数据分Q", "响应分R", *[d.value for d in Dimension], "超期工单"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = card.departments.sort(["rank", "department"], nulls_last=True)
    for r in rows.iter_rows(named=True):
        name = catalogue.department(r["department"]).name
        cells = [str(r["rank"] or "—"), name, fmt(r["total"]), r["grade"] or "—",
                 delta_text(r["total"], prev.get(r["department"])), fmt(r["data_score"]), fmt(r["response_score"]),
                 *[fmt(r[DIMENSION_COLUMN[d]]) for d in Dimension], str(r["tickets_overdue"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --- one period, end to end ---------------------------------------------------------------------


def run_scorecard(
    wh: Warehouse, catalogue: Catalogue, day: dt.date, config: ScorecardConfig, run_id: str,
    now: dt.datetime | None = None,
):
    """Bring the 校核 tickets up to ``day`` (they feed R), score every department and store the run.

    Returns (the ticket sync, the scorecard).
    """
    from quality.report import report_reference
    from quality.tickets import read_tickets, response_counts, sync_tickets

    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    depts = [d.code for d in catalogue.departments]
    sync = sync_tickets(wh, catalogue, day, config, {d: report_reference(catalogue, d, day) for d in depts}, now)
    card = compute(day, gather_rules(wh, catalogue, day), depts, resource_weights(catalogue, config),
                   response_counts(read_tickets(wh), day), config)
    store_scorecard(wh, card, run_id, now)
    return sync, card




