"""Freshness in the warehouse: the last successful deliveries (``ods.batches``) in, the state table
``quality.freshness`` out (one row per resource, written by the ``freshness`` check only)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Resource
from quality.freshness.calendar import WorkdayFn, aware, city_zone, is_working_day
from quality.freshness.evaluate import Freshness, LastDelivery, evaluate
from warehouse.store import Column, Warehouse

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
    now = aware(now).astimezone(tz)
    last = read_last_deliveries(wh, now.date())
    chosen = catalogue.resources if resources is None else resources
    return [evaluate(r, last.get(r.id), now, tz, is_workday) for r in sorted(chosen, key=lambda r: r.id)]


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
        if wh.is_postgres:  # two runs' checks may write at once; SQLite writers queue anyway
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


def outdated_by(state: pl.DataFrame, resource_ids: Iterable[str], now: dt.datetime) -> str | None:
    """What makes the stored state out of date at ``now``, or None while it still holds.

    A status only changes when a delivery arrives (its run evaluates the check) or when a stored due
    time or deadline passes; so the state is out of date when a resource has no row yet
    (``"new:<ids>"``) or when such a moment after its evaluation is over (that moment, UTC ISO).
    """
    wanted = set(resource_ids)
    state = state.filter(pl.col("resource_id").is_in(wanted))  # a resource dropped from the catalogue: gone
    new = sorted(wanted - set(state.get_column("resource_id").to_list()))
    if new:
        return "new:" + ",".join(new)
    cutoff = aware(now).astimezone(dt.UTC).replace(tzinfo=None)
    moments = state.select(pl.concat_list("due_at", "deadline_at").alias("t"), "evaluated_at").explode("t")
    passed = moments.filter((pl.col("t") > pl.col("evaluated_at")) & (pl.col("t") <= cutoff))
    return None if passed.is_empty() else passed.get_column("t").min().isoformat()
