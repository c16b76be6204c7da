"""贴源层 (ODS): every delivered batch stored as received, append-only.

A batch is one delivery of one resource for one batch date. Re-reading the same delivery is a
no-op (same content hash); a department that re-delivers a different file for the same date
gets a new batch with the next sequence number, and the old one stays as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from catalog.models import ApiChannel, DatabaseChannel, FileChannel, Resource
from guiji.channels import Delivery, read_api, read_database, read_files
from warehouse.ods import (
    BATCH_FAILED,
    BATCH_OK,
    BATCH_SCHEMA,
    Batch,
    batches_table,
    latest_batch,
    number_batch,
    ods_schema,
    ods_table,
    prepare_batches,
)
from warehouse.store import Warehouse


@dataclass
class IngestResult:
    status: str  # "new" | "unchanged" | "none"
    batch: Batch | None
    problems: list[str]
    rows: pl.DataFrame | None = None  # a new batch's ODS rows as stored (ods_schema, delivery order)
    record: dict | None = None  # a new batch's row of ods.batches




def read_window(resource: Resource, batch_date: dt.date) -> str | None:
    """Where the 前置库 read of a partition starts (inclusive); it ends at the next day, 00:00.

    Partition D reads the rows whose watermark falls on day D, so the rows a partition reads never
    depend on which other partitions ran before it (backfills and reruns in any order read the same
    batches). The channel's ``initial_load`` partition starts at the beginning instead: it takes the
    history a 前置库 held before deliveries began. ``None``: no lower bound.
    """
    ch = resource.channel
    assert isinstance(ch, DatabaseChannel)
    if ch.initial_load is not None and batch_date == ch.initial_load:
        return None
    return f"{batch_date:%Y-%m-%d} 00:00:00"


def read_batch(
    resource: Resource, batch_date: dt.date, landing: Path, watermark_low: str | None,
    variables: Mapping[str, str] | None = None,
) -> Delivery:
    """The delivery through the resource's channel; ``variables``: the values of the variables the
    channel names (``url_env``, ``auth_env``), see :mod:`guiji.channels`."""
    ch = resource.channel
    if isinstance(ch, FileChannel):
        return read_files(resource, ch, batch_date, landing)
    if isinstance(ch, DatabaseChannel):
        return read_database(resource, batch_date, landing, watermark_low, variables)
    assert isinstance(ch, ApiChannel)
    return read_api(resource, ch, batch_date, variables)


def ingest(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, landing: Path,
    variables: Mapping[str, str] | None = None,
) -> IngestResult:
    """Read the delivery of ``resource`` for ``batch_date`` and store it as an ODS batch."""
    result = receive(wh, resource, batch_date, landing, variables)
    if result.status == "new":
        store(wh, resource, result)
    return result


def receive(
    wh: Warehouse, resource: Resource, batch_date: dt.date, landing: Path, variables: Mapping[str, str] | None = None
) -> IngestResult:
    """Read a delivery and decide what it is: no delivery, the batch already stored, or a new batch.

    A new batch comes back with its rows in the form the warehouse stores them, not yet written:
    :func:`store` writes it, and the 标准层 may go on with the same rows meanwhile.
    """
    low = read_window(resource, batch_date) if isinstance(resource.channel, DatabaseChannel) else None
    with wh.engine.connect() as conn:
        prev = latest_batch(wh, conn, resource, batch_date)
    delivery = read_batch(resource, batch_date, landing, low, variables)
    if isinstance(resource.channel, FileChannel) and not delivery.sources:
        return IngestResult("none", prev, [])
    if prev is not None and prev.content_hash == delivery.content_hash:
        return IngestResult("unchanged", prev, delivery.problems)
    seq = (prev.seq + 1) if prev else 1
    batch_id = f"{resource.id}.{batch_date:%Y%m%d}.{seq}"
    unparseable = int(delivery.frame.get_column("_error").is_not_null().sum())
    record = {
        "batch_id": batch_id,
        "batch_no": None,
        "resource_id": resource.id,
        "department": resource.department,
        "resource": resource.code,
        "library": resource.library,
        "batch_date": batch_date,
        "seq": seq,
        "received_at": dt.datetime.now(dt.UTC).replace(tzinfo=None),
        "channel": resource.channel.kind,
        "sources": "; ".join(delivery.sources),
        "content_hash": delivery.content_hash,
        "rows_delivered": delivery.rows,
        "rows_unparseable": unparseable,
        "watermark_low": low,
        "watermark_high": delivery.watermark_high or low,
        "problems": "\n".join(delivery.problems) or None,
        "unreadable_bytes": sum(u.bytes for u in delivery.unreadable),
        "unreadable_lines": sum(u.lines for u in delivery.unreadable),
        "status": BATCH_FAILED if delivery.unreadable else BATCH_OK,
    }
    schema = ods_schema(resource)
    rows = wh.stored(delivery.frame.with_columns(pl.lit(batch_id).alias("_batch_id")).select(
        [pl.col(c).cast(t) for c, t in schema.items()]).sort("_row_no", maintain_order=True))
    return IngestResult("new", Batch.from_row(record), delivery.problems, rows, record)


def store(wh: Warehouse, resource: Resource, result: IngestResult) -> None:
    """Write a new batch (its ``ods.batches`` row and its ODS rows) in one transaction."""
    assert result.status == "new" and result.rows is not None and result.record is not None
    batches = batches_table(wh)
    table = ods_table(wh, resource)
    with wh.begin() as conn:
        prepare_batches(wh, conn)
    with wh.begin() as conn:
        wh.create(conn, table)
        result.record["batch_no"] = result.batch.batch_no = number_batch(wh, conn)
        wh.insert(conn, batches, pl.DataFrame([result.record], schema=BATCH_SCHEMA))
        wh.insert(conn, table, result.rows)
















