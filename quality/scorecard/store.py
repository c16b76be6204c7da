"""``quality.scorecard``: every run's scorecard at three levels (rule, resource, department), so
trends and "change since the last report" are queries."""

from __future__ import annotations

import datetime as dt

import polars as pl
import sqlalchemy as sa

from quality.rules import Dimension
from quality.scorecard.compute import DIMENSION_COLUMN, Scorecard
from warehouse.store import Column, Warehouse

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
