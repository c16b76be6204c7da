"""一数一源 conflicts that persist across runs.

A conflict is identified by (library, element, department, entity key). Seen again, it is the same
row (last seen, times seen); when the department's delivery later carries the entity with the
authoritative value, the conflict is closed with the batch that fixed it. The table lives in the
internal quality layer (like the base libraries it may hold raw keys); everything shown to people
masks them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from quality.consistency import CONFLICT_SCHEMA, compare_copies, copies, entity_key
from warehouse.base import read_as_of
from warehouse.std import mergeable_batch, read_std
from warehouse.store import Column, Warehouse

CONFLICTS = "conflicts"
IDENTITY = ["library", "element", "department", "entity_key"]
TABLE_SCHEMA: dict[str, pl.DataType] = {
    "library": pl.String(), "element": pl.String(), "department": pl.String(), "authority": pl.String(),
    "entity_key": pl.String(), "resource_id": pl.String(), "value": pl.String(), "authority_value": pl.String(),
    "first_seen_batch": pl.String(), "first_seen_date": pl.Date(), "last_seen_batch": pl.String(),
    "last_seen_date": pl.Date(), "last_row_no": pl.Int64(), "times_seen": pl.Int64(), "status": pl.String(),
    "closed_batch": pl.String(), "closed_date": pl.Date(),
}


def conflicts_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", CONFLICTS, [Column(n, t) for n, t in TABLE_SCHEMA.items()],
                    primary_key=IDENTITY, indexes=[["department", "status"]])


@dataclass
class ConflictChanges:
    opened: int
    seen_again: int
    closed: int
    open_total: int


def read_conflicts(wh: Warehouse, conn: sa.Connection, library: str) -> pl.DataFrame:
    if not wh.exists("quality", CONFLICTS):
        return pl.DataFrame(schema=TABLE_SCHEMA)
    cols = ", ".join(wh.quote(c) for c in TABLE_SCHEMA)
    return wh.read(conn, f"SELECT {cols} FROM {wh.qualified('quality', CONFLICTS)} WHERE library = :l",
                   TABLE_SCHEMA, {"l": library})


def plan_conflicts(
    existing: pl.DataFrame, found: pl.DataFrame, compared: pl.DataFrame, batch_date: dt.date
) -> tuple[pl.DataFrame, ConflictChanges]:
    """The new state of every conflict row touched by this batch date.

    ``found``: today's conflicts (CONFLICT_SCHEMA); ``compared``: the identities (library, element,
    department, entity_key) and batch ids compared today, so an open conflict whose entity now
    matches can be closed.
    """
    found = found.cast(CONFLICT_SCHEMA)
    cur = existing.join(found, on=IDENTITY, how="inner", suffix="__new")
    fresh = found.join(existing, on=IDENTITY, how="anti")
    already = pl.col("last_seen_batch") == pl.col("batch_id")
    updated = cur.select(
        *IDENTITY, "authority", pl.col("resource_id__new").alias("resource_id"),
        pl.col("value__new").alias("value"), pl.col("authority_value__new").alias("authority_value"),
        "first_seen_batch", "first_seen_date",
        pl.col("batch_id").alias("last_seen_batch"), pl.lit(batch_date).alias("last_seen_date"),
        pl.col("row_no").alias("last_row_no"),
        pl.when(already).then(pl.col("times_seen")).otherwise(pl.col("times_seen") + 1).alias("times_seen"),
        pl.lit("open").alias("status"), pl.lit(None, pl.String).alias("closed_batch"),
        pl.lit(None, pl.Date).alias("closed_date"),
    )
    seen_again = cur.filter(~already & (pl.col("status") == "open")).height
    opened = fresh.select(
        *IDENTITY, "authority", "resource_id", "value", "authority_value",
        pl.col("batch_id").alias("first_seen_batch"), pl.lit(batch_date).alias("first_seen_date"),
        pl.col("batch_id").alias("last_seen_batch"), pl.lit(batch_date).alias("last_seen_date"),
        pl.col("row_no").alias("last_row_no"), pl.lit(1, pl.Int64).alias("times_seen"),
        pl.lit("open").alias("status"), pl.lit(None, pl.String).alias("closed_batch"),
        pl.lit(None, pl.Date).alias("closed_date"),
    )
    # open conflicts compared again today without a difference: fixed by today's batch
    fixed = existing.filter(pl.col("status") == "open").join(found, on=IDENTITY, how="anti").join(
        compared, on=IDENTITY, how="inner"
    ).select(
        *[c for c in TABLE_SCHEMA if c not in ("status", "closed_batch", "closed_date")],
        pl.lit("closed").alias("status"), pl.col("batch_id").alias("closed_batch"),
        pl.lit(batch_date).alias("closed_date"),
    )
    rows = pl.concat([f.select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA) for f in (updated, opened, fixed)])
    total_open = (
        existing.filter(pl.col("status") == "open").join(fixed, on=IDENTITY, how="anti").height + opened.height
        + cur.filter(pl.col("status") != "open").height
    )
    return rows, ConflictChanges(opened.height, seen_again, fixed.height, total_open)


def write_conflicts(wh: Warehouse, conn: sa.Connection, rows: pl.DataFrame) -> None:
    """Upsert the planned rows (delete by identity, insert) inside the caller's transaction."""
    table = conflicts_table(wh)
    wh.create(conn, table)
    if rows.height == 0:
        return
    tmp = wh.temp_table(conn, "gongshu_conflict_ids", rows.select(IDENTITY))
    ids = ", ".join(wh.quote(c) for c in IDENTITY)
    conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', CONFLICTS)} WHERE ({ids}) IN (SELECT {ids} FROM {tmp})"))
    conn.execute(sa.text(f"DROP TABLE {tmp}"))
    wh.insert(conn, table, rows)


@dataclass
class ConsistencyRun:
    rates: pl.DataFrame
    conflicts_today: pl.DataFrame
    changes: ConflictChanges


def check_library_consistency(wh: Warehouse, catalogue, library: str, batch_date: dt.date) -> ConsistencyRun:
    """Compare every non-authoritative copy delivered on ``batch_date`` with the base library and
    persist the conflicts, all in one transaction."""

    lib = catalogue.library(library)
    batches = []
    with wh.engine.connect() as conn:
        for resource in catalogue.resources_of(library):
            if not copies(catalogue, resource):
                continue
            batch = mergeable_batch(wh, conn, resource, batch_date)
            if batch is not None and wh.exists("std", resource.id):
                batches.append((resource, batch.batch_id,
                                read_std(wh, conn, catalogue, resource, batch.batch_id, latest=True)))
    keys = pl.concat([f.select(lib.key) for _, _, f in batches]).unique() if batches else None
    with wh.begin() as conn:
        # compared with what the authority's values were on that day, whatever order dates ran in
        current = read_as_of(wh, conn, lib, keys, batch_date) if keys is not None else None
        result = compare_copies(catalogue, lib, batches, current) if current is not None else None
        if result is None:
            return ConsistencyRun(pl.DataFrame(), pl.DataFrame(schema=CONFLICT_SCHEMA), ConflictChanges(0, 0, 0, 0))
        compared = pl.concat([
            f.join(current.select(lib.key), on=lib.key, how="semi").select(
                pl.lit(library).alias("library"), pl.lit(code).alias("element"),
                pl.lit(resource.department).alias("department"), entity_key(lib).alias("entity_key"),
                pl.lit(batch_id).alias("batch_id"))
            for resource, batch_id, f in batches for code in copies(catalogue, resource)
        ])
        rows, changes = plan_conflicts(read_conflicts(wh, conn, library), result.conflicts, compared, batch_date)
        write_conflicts(wh, conn, rows)
    return ConsistencyRun(result.rates, result.conflicts, changes)
