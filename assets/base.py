"""基础库 storage: apply a :class:`~assets.merge.MergePlan` in one transaction per batch date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from assets.merge import (
    VALID_FROM,
    VALID_TO,
    MergePlan,
    base_schema,
    incoming_values,
    lineage,
    plan_merge,
    value_elements,
)
from assets.ods import BATCHES, batch_numbers, latest_batch, prepare_batches
from assets.std import read_std
from catalog.loader import Catalogue
from catalog.models import Library
from warehouse.store import Column, Warehouse

MERGE_LOG = "merge_log"
MERGE_LOG_SCHEMA: dict[str, pl.DataType] = {
    "library": pl.String(),
    "batch_date": pl.Date(),
    "batch_ids": pl.String(),
    "incoming": pl.Int64(),
    "new_entities": pl.Int64(),
    "changed_entities": pl.Int64(),
    "unchanged": pl.Int64(),
    "skipped_older": pl.Int64(),
}


def base_table(wh: Warehouse, lib: Library) -> sa.Table:
    schema = base_schema(lib)
    return wh.table(
        "base", lib.code, [Column(n, t) for n, t in schema.items()],
        primary_key=[*lib.key, VALID_FROM],  # also finds an entity's current version (few per key)
    )


def merge_log_table(wh: Warehouse) -> sa.Table:
    return wh.table("audit", MERGE_LOG, [Column(n, t) for n, t in MERGE_LOG_SCHEMA.items()],
                    primary_key=["library", "batch_date"])


@dataclass
class MergeResult:
    library: str
    batch_ids: list[str]
    incoming: int
    plan: MergePlan
    current_rows: int
    total_rows: int


def _key_match(wh: Warehouse, alias: str, tmp: str, key: list[str]) -> str:
    return " AND ".join(f"{alias}.{wh.quote(k)} = {tmp}.{wh.quote(k)}" for k in key)


def merge_library(wh: Warehouse, catalogue: Catalogue, library: str, batch_date: dt.date) -> MergeResult:
    """Merge every resource's latest batch of ``batch_date`` into base library ``library``."""
    lib = catalogue.library(library)
    table, log = base_table(wh, lib), merge_log_table(wh)
    base = wh.qualified("base", lib.code)
    batches, batch_ids = [], []
    with wh.engine.connect() as conn:
        for resource in catalogue.resources_of(library):
            batch = latest_batch(wh, conn, resource, batch_date)
            if batch is not None and wh.exists("std", resource.id):
                assert batch.batch_no is not None
                batch_ids.append(batch.batch_id)
                auth = catalogue.authoritative_elements(resource)
                if auth:  # read only what the merge takes: keys, discriminator, authoritative values
                    used = [*lib.key, *([lib.discriminator.element] if lib.discriminator else []), *auth]
                    batches.append((resource, batch.batch_no,
                                    read_std(wh, conn, catalogue, resource, batch.batch_id, used)))
        batch_ids.sort()
    incoming = incoming_values(catalogue, lib, batches)
    with wh.begin() as conn:
        wh.create(conn, table)
        wh.create(conn, log)
        current = read_current_for(wh, conn, lib, incoming)
        plan = plan_merge(lib, incoming, current, batch_date)
        key_list = ", ".join(wh.quote(k) for k in lib.key)
        if plan.close.height:
            ctmp = wh.temp_table(conn, "gongshu_close_keys", plan.close)
            conn.execute(sa.text(
                f"UPDATE {base} SET {VALID_TO} = :d WHERE {VALID_TO} IS NULL AND ({key_list}) IN "
                f"(SELECT {key_list} FROM {ctmp})"), {"d": batch_date})
            conn.execute(sa.text(f"DROP TABLE {ctmp}"))
        if plan.replace.height:
            rtmp = wh.temp_table(conn, "gongshu_replace_keys", plan.replace)
            conn.execute(sa.text(
                f"DELETE FROM {base} WHERE {VALID_FROM} = :d AND ({key_list}) IN (SELECT {key_list} FROM {rtmp})"),
                {"d": batch_date})
            conn.execute(sa.text(f"DROP TABLE {rtmp}"))
        wh.insert(conn, table, plan.insert)
        logged = conn.execute(sa.text(
            f"DELETE FROM {wh.qualified('audit', MERGE_LOG)} WHERE library = :l AND batch_date = :d AND batch_ids <> :b"
        ), {"l": lib.code, "d": batch_date, "b": ",".join(batch_ids)}).rowcount == 0 and wh.scalar(
            conn, f"SELECT COUNT(*) FROM {wh.qualified('audit', MERGE_LOG)} WHERE library = :l AND batch_date = :d",
            {"l": lib.code, "d": batch_date})
        # The log keeps what the first merge of these batches did; a no-op rerun leaves it alone.
        if not logged:
            wh.insert(conn, log, pl.DataFrame([{
                "library": lib.code, "batch_date": batch_date, "batch_ids": ",".join(batch_ids),
                "incoming": incoming.height, "new_entities": plan.new_entities,
                "changed_entities": plan.changed_entities, "unchanged": plan.unchanged,
                "skipped_older": plan.skipped_older,
            }], schema=MERGE_LOG_SCHEMA))
        counts = _counts(wh, conn, base)
    return MergeResult(lib.code, batch_ids, incoming.height, plan, *counts)


def _counts(wh: Warehouse, conn: sa.Connection, base: str) -> tuple[int, int]:
    current = wh.scalar(conn, f"SELECT COUNT(*) FROM {base} WHERE {VALID_TO} IS NULL")
    total = wh.scalar(conn, f"SELECT COUNT(*) FROM {base}")
    return int(current), int(total)


def read_current(wh: Warehouse, conn: sa.Connection, lib: Library, limit: int | None = None) -> pl.DataFrame:
    """The current version of every entity of a base library (the first ``limit`` by key), each
    value's lineage batch as its batch id."""
    schema = base_schema(lib)
    cols = ", ".join(wh.quote(c) for c in schema)
    frame = wh.read(conn, f"SELECT {cols} FROM {wh.qualified('base', lib.code)} WHERE {VALID_TO} IS NULL "
                    f"ORDER BY {', '.join(wh.quote(k) for k in lib.key)}"
                    + (f" LIMIT {int(limit)}" if limit is not None else ""), schema, bulk=limit is None)
    return with_batch_ids(frame, lib, batch_numbers(wh, conn))


def with_batch_ids(frame: pl.DataFrame, lib: Library, numbers: pl.DataFrame) -> pl.DataFrame:
    """Lineage batch numbers replaced by the batch ids they stand for (``numbers``: batch_no → batch_id)."""
    nos, ids = numbers.get_column("batch_no"), numbers.get_column("batch_id")
    return frame.with_columns(
        pl.col(b).replace_strict(nos, ids, default=None, return_dtype=pl.String)
        for b in (lineage(e)[0] for e in value_elements(lib)) if b in frame.columns
    )


def upgrade_warehouse(wh: Warehouse) -> None:
    """Bring a warehouse written by an earlier version to the current layout, in one transaction.

    Earlier versions stored each base-library value's lineage batch as the batch id text; it is now
    the batch's number (``ods.batches.batch_no``), which those versions did not have either.
    Idempotent, and a few catalogue queries when there is nothing to do. Run where a warehouse is
    opened (:func:`pipelines.resources.open_warehouse`), once per process.
    """
    if not wh.exists("ods", BATCHES):
        return
    with wh.begin() as conn:
        prepare_batches(wh, conn)
        for name in wh.layer_tables("base"):
            _number_lineage(wh, conn, name)


def _number_lineage(wh: Warehouse, conn: sa.Connection, name: str) -> None:
    schema, table = wh.table_ref("base", name)
    text = [c["name"] for c in sa.inspect(conn).get_columns(table, schema=schema)
            if c["name"].endswith("__batch") and not isinstance(c["type"], sa.Integer)]
    if not text:
        return
    base, batches = wh.qualified("base", name), wh.qualified("ods", BATCHES)
    for c in text:
        conn.execute(sa.text(f"ALTER TABLE {base} ADD COLUMN {wh.quote(c + '_no')} BIGINT"))
    conn.execute(sa.text(f"UPDATE {base} SET " + ", ".join(
        f"{wh.quote(c + '_no')} = (SELECT batch_no FROM {batches} WHERE batch_id = {base}.{wh.quote(c)})"
        for c in text)))
    for c in text:
        conn.execute(sa.text(f"ALTER TABLE {base} DROP COLUMN {wh.quote(c)}"))
        conn.execute(sa.text(f"ALTER TABLE {base} RENAME COLUMN {wh.quote(c + '_no')} TO {wh.quote(c)}"))


def read_current_for(wh: Warehouse, conn: sa.Connection, lib: Library, keys: pl.DataFrame) -> pl.DataFrame:
    """Current versions of the entities in ``keys`` (loaded into a temporary table and joined)."""
    schema = base_schema(lib)
    if keys.height == 0 or not wh.exists("base", lib.code) or \
            wh.scalar(conn, f"SELECT 1 FROM {wh.qualified('base', lib.code)} LIMIT 1") is None:
        return pl.DataFrame(schema=schema)  # nothing to look up (a first load)
    tmp = wh.temp_table(conn, "gongshu_lookup_keys", keys.select(lib.key))
    cols = ", ".join(f"b.{wh.quote(c)}" for c in schema)
    frame = wh.read(
        conn,
        f"SELECT {cols} FROM {wh.qualified('base', lib.code)} b JOIN {tmp} t ON {_key_match(wh, 'b', 't', lib.key)} "
        f"WHERE b.{VALID_TO} IS NULL",
        schema,
    )
    conn.execute(sa.text(f"DROP TABLE {tmp}"))
    return frame
