"""贴源层 (ODS) layout and readers: ``ods.batches``, one table per resource, delivery failures."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from catalog.models import DatabaseChannel, Resource
from warehouse.store import Column, Warehouse

BATCH_OK, BATCH_FAILED = "ok", "failed"


def source_columns(resource: Resource) -> list[str]:
    """The department columns of a resource as stored in ODS (plus the watermark column)."""
    cols = [f.column for f in resource.fields]
    ch = resource.channel
    if isinstance(ch, DatabaseChannel) and ch.watermark not in cols:
        cols.append(ch.watermark)
    return cols


BATCHES = "batches"


BATCH_NO_SEQ = "ods.batch_no_seq"  # PostgreSQL only


BATCH_SCHEMA: dict[str, pl.DataType] = {
    "batch_id": pl.String(),
    "batch_no": pl.Int64(),  # the batch's number, what base-library lineage stores (see number_batch)
    "resource_id": pl.String(),
    "department": pl.String(),
    "resource": pl.String(),
    "library": pl.String(),
    "batch_date": pl.Date(),
    "seq": pl.Int64(),
    "received_at": pl.Datetime("us"),
    "channel": pl.String(),
    "sources": pl.String(),
    "content_hash": pl.String(),
    "rows_delivered": pl.Int64(),
    "rows_unparseable": pl.Int64(),
    "watermark_low": pl.String(),
    "watermark_high": pl.String(),
    "problems": pl.String(),
    # a file none of whose records could be split out (not a workbook, not JSON) is counted here, and
    # its batch is "failed": its records are neither accepted nor quarantined, they are unknown
    "unreadable_bytes": pl.Int64(),
    "unreadable_lines": pl.Int64(),
    "status": pl.String(),  # "ok" | "failed"
    # a full snapshot delivered again: the batch its records were compared with (the resource's newest
    # batch of an earlier date) and how many of them were found unchanged there and carried (not stored
    # again as ODS rows, see CARRIED); NULL / 0 when every record is stored
    "carried_from": pl.String(),
    "rows_carried": pl.Int64(),
}


def batches_table(wh: Warehouse) -> sa.Table:
    return wh.table(
        "ods", BATCHES, [Column(n, t) for n, t in BATCH_SCHEMA.items()],
        primary_key=["batch_id"], indexes=[["resource_id", "batch_date"]],
    )


def ods_schema(resource: Resource) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "_batch_id": pl.String(), "_row_no": pl.Int64(), "_source": pl.String(),
        "_raw": pl.String(), "_error": pl.String(), DIGEST: pl.Int64(),
    }
    schema.update({c: pl.String() for c in source_columns(resource)})
    return schema


DIGEST = "_digest"
"""Per ODS row, a 64-bit digest of the record as delivered (every department column, ``_raw`` and
``_error``; not the file name, row number or batch): :func:`record_digest`."""
DIGEST_SEED = 0x6755_6A69_4F44_5331
"""A fixed seed: polars' hash is then the same in every process (of one polars version; another
version may hash differently, which only makes the next night store its records again)."""


def record_digest(resource: Resource) -> pl.Expr:
    """The digest of each delivered record (Int64; see :data:`DIGEST`)."""
    cols = ["_raw", "_error", *source_columns(resource)]
    return pl.struct(cols).hash(DIGEST_SEED).reinterpret(signed=True).alias(DIGEST)


DIGEST_SLICE_ROWS = 200_000


def with_record_digest(resource: Resource, rows: pl.DataFrame) -> pl.DataFrame:
    """``rows`` with their :data:`DIGEST` column, hashed :data:`DIGEST_SLICE_ROWS` records at a time: the
    struct hash of a whole batch needs ~20× the 8 bytes a record it returns (measured on the 户籍
    delivery at 1 M persons: 193 MB for an 8 MB column)."""
    expr = record_digest(resource)
    parts = [rows.slice(i, DIGEST_SLICE_ROWS).select(expr).to_series() for i in range(0, rows.height, DIGEST_SLICE_ROWS)]
    digest = pl.concat(parts) if parts else pl.Series(DIGEST, [], pl.Int64)
    return rows.with_columns(digest)


CARRIED = "carried"
"""``ods.carried``: the records of a batch that were not stored again because the resource's previous
batch held them unchanged, as runs: rows ``row_no`` … ``row_no + rows - 1`` of ``batch_id`` are the
ODS rows ``source_row_no`` … of ``source_batch_id`` (the batch that stores them, never itself a
carried row; a batch of one file, whose row numbers are unique), delivered in file ``source`` (row
numbers count records inside their file). With the batch's own rows they rebuild the delivery
(:func:`rebuild_delivery`)."""

CARRIED_SCHEMA: dict[str, pl.DataType] = {
    "batch_id": pl.String(), "row_no": pl.Int64(), "rows": pl.Int64(), "source_batch_id": pl.String(),
    "source_row_no": pl.Int64(), "source": pl.String(),
}


def carried_table(wh: Warehouse) -> sa.Table:
    return wh.table("ods", CARRIED, [Column(n, t) for n, t in CARRIED_SCHEMA.items()],
                    primary_key=["batch_id", "source", "row_no"])


def read_carried(wh: Warehouse, conn: sa.Connection, batch_id: str) -> pl.DataFrame:
    """The carried runs of one batch (:data:`CARRIED`), in row order; empty when it stores every record."""
    if not wh.exists("ods", CARRIED):
        return pl.DataFrame(schema=CARRIED_SCHEMA)
    return wh.read(conn, f"SELECT {', '.join(CARRIED_SCHEMA)} FROM {wh.qualified('ods', CARRIED)} "
                   "WHERE batch_id = :b ORDER BY source, row_no", CARRIED_SCHEMA, {"b": batch_id})


def carried_rows(runs: pl.DataFrame) -> pl.DataFrame:
    """The runs expanded: one row per carried record, ``row_no`` in the batch, ``source_batch_id``,
    ``source_row_no`` and ``source`` (the file)."""
    if runs.height == 0:
        return pl.DataFrame(schema={"row_no": pl.Int64, "source_batch_id": pl.String, "source_row_no": pl.Int64,
                                    "source": pl.String})
    return runs.select(
        pl.int_ranges("row_no", pl.col("row_no") + pl.col("rows"), dtype=pl.Int64).alias("row_no"),
        "source_batch_id",
        pl.int_ranges("source_row_no", pl.col("source_row_no") + pl.col("rows"), dtype=pl.Int64).alias("source_row_no"),
        "source",
    ).explode("row_no", "source_row_no")


def carried_runs(batch_id: str, carried: pl.DataFrame) -> pl.DataFrame:
    """Runs (:data:`CARRIED_SCHEMA`) of carried records given one per row (``row_no``,
    ``source_batch_id``, ``source_row_no``, ``source``): a run goes on while both row numbers go up by
    one in the same source batch and file. A file delivered in the same order gives long runs."""
    c = carried.sort("source", "row_no")
    brk = ((pl.col("row_no").diff() != 1) | (pl.col("source_row_no").diff() != 1)
           | (pl.col("source_batch_id") != pl.col("source_batch_id").shift(1))
           | pl.col("source").ne_missing(pl.col("source").shift(1))).fill_null(True)
    return c.with_columns(brk.cum_sum().alias("__run")).group_by("__run", maintain_order=True).agg(
        pl.col("row_no").first(), pl.len().cast(pl.Int64).alias("rows"), pl.col("source_batch_id").first(),
        pl.col("source_row_no").first(), pl.col("source").first(),
    ).select(pl.lit(batch_id).alias("batch_id"), *[c for c in CARRIED_SCHEMA if c != "batch_id"]).cast(CARRIED_SCHEMA)


def ods_table(wh: Warehouse, resource: Resource) -> sa.Table:
    return wh.table(
        "ods", resource.id, [Column(n, t) for n, t in ods_schema(resource).items()],
        batch_index="_batch_id",
    )


@dataclass
class Batch:
    batch_id: str
    batch_date: dt.date
    seq: int
    rows_delivered: int
    rows_unparseable: int
    content_hash: str
    sources: str
    problems: str
    watermark_low: str | None = None
    watermark_high: str | None = None
    batch_no: int | None = None  # given when the batch is stored
    unreadable_bytes: int = 0
    unreadable_lines: int = 0
    status: str = BATCH_OK
    carried_from: str | None = None
    rows_carried: int = 0

    @property
    def failed(self) -> bool:
        return self.status == BATCH_FAILED

    @classmethod
    def from_row(cls, row: dict) -> Batch:
        out = cls(**{k: row[k] for k in cls.__dataclass_fields__})
        out.rows_carried = out.rows_carried or 0  # NULL in batches stored before carrying existed
        return out


def latest_batch(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_date: dt.date) -> Batch | None:
    """The newest batch of a resource for a batch date (highest sequence number)."""
    return _newest_batch(wh, conn, resource, "batch_date = :d", batch_date)


def previous_batch(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_date: dt.date) -> Batch | None:
    """The resource's newest batch of the latest batch date before ``batch_date`` (a full snapshot
    delivered again is compared with it)."""
    return _newest_batch(wh, conn, resource, "batch_date < :d", batch_date)


def _newest_batch(wh: Warehouse, conn: sa.Connection, resource: Resource, dates: str,
                  batch_date: dt.date) -> Batch | None:
    if not wh.exists("ods", BATCHES):
        return None
    frame = wh.read(conn, f"SELECT {', '.join(BATCH_SCHEMA)} FROM {wh.qualified('ods', BATCHES)} "
                          f"WHERE resource_id = :r AND {dates} ORDER BY batch_date DESC, seq DESC LIMIT 1",
                    BATCH_SCHEMA, {"r": resource.id, "d": batch_date})
    return Batch.from_row(frame.row(0, named=True)) if frame.height else None


def batch_records(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_id: str) -> pl.DataFrame:
    """Every record of a batch by where it is stored: ``row_no`` in the batch, ``digest``,
    ``source_batch_id`` and ``source_row_no`` (the batch's own ODS row, or the row a carried record
    points to). Reads two integer columns per stored row, no values."""
    schema = {"_row_no": pl.Int64(), DIGEST: pl.Int64()}
    table = wh.qualified("ods", resource.id)

    def digests(b: str) -> pl.DataFrame:
        return wh.read(conn, f"SELECT _row_no, {DIGEST} FROM {table} WHERE _batch_id = :b", schema, {"b": b},
                       bulk=True)

    own = digests(batch_id).select(pl.col("_row_no").alias("row_no"), pl.col(DIGEST).alias("digest"),
                                   pl.lit(batch_id).alias("source_batch_id"),
                                   pl.col("_row_no").alias("source_row_no"))
    carried = carried_rows(read_carried(wh, conn, batch_id))
    parts = [own]
    for (source,), rows in carried.group_by("source_batch_id"):
        parts.append(rows.join(digests(str(source)), left_on="source_row_no", right_on="_row_no", how="left")
                     .select("row_no", pl.col(DIGEST).alias("digest"), "source_batch_id", "source_row_no"))
    return pl.concat(parts).sort("row_no")


def rebuild_delivery(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_id: str) -> pl.DataFrame:
    """The records of one batch as delivered (:func:`ods_schema`, in delivery order): its own ODS rows
    and its carried records read from the batches that store them, under this batch's id and row
    numbers and with the file they were delivered in."""
    own = read_ods(wh, conn, resource, batch_id)
    carried = carried_rows(read_carried(wh, conn, batch_id))
    if carried.height == 0:
        return own
    schema = ods_schema(resource)
    parts = [own]
    for (source,), rows in carried.group_by("source_batch_id"):
        stored = read_ods(wh, conn, resource, str(source)).drop("_batch_id", "_source")
        parts.append(rows.join(stored, left_on="source_row_no", right_on="_row_no", how="inner").select(
            [pl.lit(batch_id).alias("_batch_id"), pl.col("row_no").alias("_row_no"), pl.col("source").alias("_source"),
             *[c for c in schema if c not in ("_batch_id", "_row_no", "_source")]]).cast(schema))
    return pl.concat(parts).sort("_row_no")


def number_batch(wh: Warehouse, conn: sa.Connection) -> int:
    """The next batch number, inside the transaction that stores the batch.

    Base-library lineage records each value's batch by this number (8 bytes per value where the
    batch id text took ~20; ``ods.batches`` maps it back). PostgreSQL draws it from a sequence, so
    concurrent stores never wait on each other; SQLite writers hold the database lock, so the next
    number after the highest is free. Numbers of rolled-back stores are not reused on PostgreSQL.
    """
    if wh.is_postgres:
        return int(wh.scalar(conn, f"SELECT nextval('{BATCH_NO_SEQ}')"))
    return int(wh.scalar(conn, f"SELECT COALESCE(MAX(batch_no), 0) + 1 FROM {wh.qualified('ods', BATCHES)}"))


def prepare_batches(wh: Warehouse, conn: sa.Connection) -> None:
    """``ods.batches`` with what numbers its batches — the unique index of ``batch_no`` and, on
    PostgreSQL, the sequence — in the caller's short transaction. Cheap when they are there.

    A warehouse of an earlier layout was brought to this one when it was opened
    (:mod:`warehouse.migrations`, revisions 0002 and 0003). Concurrent callers (steps in parallel
    processes) take turns: SQLite writers hold the database lock, PostgreSQL ones a transaction-level
    advisory lock, so two never create the same thing.
    """
    wh.lock_layout(conn)
    wh.create(conn, batches_table(wh))
    if wh.is_postgres:
        conn.execute(sa.text(f"CREATE SEQUENCE IF NOT EXISTS {BATCH_NO_SEQ}"))
    index = "ux_batches_no" if wh.is_postgres else "ux_ods__batches_no"
    conn.execute(sa.text(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {wh.qualified('ods', BATCHES)} (batch_no)"))


def batch_numbers(wh: Warehouse, conn: sa.Connection) -> pl.DataFrame:
    """Every numbered batch: ``batch_no`` → ``batch_id`` (a few rows per resource and day)."""
    if not wh.exists("ods", BATCHES):
        return pl.DataFrame(schema={"batch_no": pl.Int64, "batch_id": pl.String})
    return wh.read(conn, f"SELECT batch_no, batch_id FROM {wh.qualified('ods', BATCHES)} WHERE batch_no IS NOT NULL",
                   {"batch_no": pl.Int64(), "batch_id": pl.String()})


def read_ods(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_id: str,
             limit: int | None = None) -> pl.DataFrame:
    """The rows of one ODS batch in delivery order (the first ``limit`` of them)."""
    schema = ods_schema(resource)
    cols = ", ".join(wh.quote(c) for c in schema)
    sql = f"SELECT {cols} FROM {wh.qualified('ods', resource.id)} WHERE _batch_id = :b"
    if limit is not None:
        return wh.read(conn, f"{sql} ORDER BY _row_no LIMIT {int(limit)}", schema, {"b": batch_id})
    # a whole batch is put in delivery order here: polars sorts a million rows faster than the server
    return wh.read(conn, sql, schema, {"b": batch_id}, bulk=True).sort("_row_no")


DELIVERY_FAILURES = "delivery_failures"


DELIVERY_FAILURE_SCHEMA: dict[str, pl.DataType] = {
    "resource_id": pl.String(), "department": pl.String(), "batch_date": pl.Date(), "run_id": pl.String(),
    "failed_at": pl.Datetime("us"), "error": pl.String(), "resolved_at": pl.Datetime("us"),
}


def delivery_failures_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", DELIVERY_FAILURES, [Column(n, t) for n, t in DELIVERY_FAILURE_SCHEMA.items()],
                    indexes=[["resource_id", "batch_date"]])


def record_delivery(wh: Warehouse, resource: Resource, batch_date: dt.date, run_id: str,
                    error: str | None) -> None:
    """Record one attempt at a resource's delivery for a batch date: a failure (``error``, which must
    hold no credentials or raw values) is kept until an attempt for the same date succeeds."""
    table = delivery_failures_table(wh)
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    with wh.begin() as conn:
        wh.create(conn, table)
        conn.execute(sa.text(f"UPDATE {wh.qualified('quality', DELIVERY_FAILURES)} SET resolved_at = :t "
                             "WHERE resource_id = :r AND batch_date = :d AND resolved_at IS NULL"),
                     {"t": now, "r": resource.id, "d": batch_date})
        if error is not None:
            wh.insert(conn, table, pl.DataFrame([{
                "resource_id": resource.id, "department": resource.department, "batch_date": batch_date,
                "run_id": run_id, "failed_at": now, "error": error, "resolved_at": None,
            }], schema=DELIVERY_FAILURE_SCHEMA))


def open_delivery_failures(wh: Warehouse, conn: sa.Connection, batch_date: dt.date) -> pl.DataFrame:
    """The resources whose latest attempt at ``batch_date``'s delivery failed, with the error."""
    schema = {"resource_id": pl.String(), "error": pl.String()}
    if not wh.exists("quality", DELIVERY_FAILURES):
        return pl.DataFrame(schema=schema)
    return wh.read(conn, f"SELECT resource_id, error FROM {wh.qualified('quality', DELIVERY_FAILURES)} "
                   "WHERE batch_date = :d AND resolved_at IS NULL ORDER BY resource_id, failed_at", schema,
                   {"d": batch_date}).unique("resource_id", keep="last", maintain_order=True)
