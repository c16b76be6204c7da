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
}


def batches_table(wh: Warehouse) -> sa.Table:
    return wh.table(
        "ods", BATCHES, [Column(n, t) for n, t in BATCH_SCHEMA.items()],
        primary_key=["batch_id"], indexes=[["resource_id", "batch_date"]],
    )


def ods_schema(resource: Resource) -> dict[str, pl.DataType]:
    schema: dict[str, pl.DataType] = {
        "_batch_id": pl.String(), "_row_no": pl.Int64(), "_source": pl.String(),
        "_raw": pl.String(), "_error": pl.String(),
    }
    schema.update({c: pl.String() for c in source_columns(resource)})
    return schema


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

    @property
    def failed(self) -> bool:
        return self.status == BATCH_FAILED

    @classmethod
    def from_row(cls, row: dict) -> Batch:
        return cls(**{k: row[k] for k in cls.__dataclass_fields__})


def latest_batch(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_date: dt.date) -> Batch | None:
    """The newest batch of a resource for a batch date (highest sequence number)."""
    if not wh.exists("ods", BATCHES):
        return None
    frame = wh.read(
        conn,
        f"SELECT {', '.join(BATCH_SCHEMA)} FROM {wh.qualified('ods', BATCHES)} "
        "WHERE resource_id = :r AND batch_date = :d ORDER BY seq DESC LIMIT 1",
        BATCH_SCHEMA,
        {"r": resource.id, "d": batch_date},
    )
    return Batch.from_row(frame.row(0, named=True)) if frame.height else None


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
