"""贴源层 (ODS): every delivered batch stored as received, append-only.

A batch is one delivery of one resource for one batch date. Re-reading the same delivery is a
no-op (same content hash); a department that re-delivers a different file for the same date
gets a new batch with the next sequence number, and the old one stays as it was.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from catalog.models import ApiChannel, DatabaseChannel, FileChannel, Resource
from guiji.channels import (
    FETCH_PAGE_ROWS,
    Delivery,
    FileReading,
    open_database,
    open_files,
    read_api,
    read_database,
    read_files,
)
from guiji.spill import Spill
from guiji.standardize import key_values
from warehouse.ods import (
    BATCH_FAILED,
    BATCH_OK,
    BATCH_SCHEMA,
    DIGEST,
    Batch,
    batch_records,
    batches_table,
    carried_runs,
    carried_table,
    latest_batch,
    number_batch,
    ods_schema,
    ods_table,
    prepare_batches,
    previous_batch,
    with_record_digest,
)
from warehouse.std import QUARANTINE, RECONCILIATION
from warehouse.store import Warehouse

STD_CHUNK_ROWS = 50_000  # records the 标准层 takes at a time (Settings.std_chunk_rows, GONGSHU_STD_CHUNK_ROWS)
SPILL_SLICES = 1
"""A new batch of more than this many 标准层 slices (``GONGSHU_STD_CHUNK_ROWS``) is spilled to local disk;
a smaller one stays in memory. Held in memory, a delivery costs its step ~1 kB a record until it is
written (the 户籍 step alone at 1 M: 1,074 MB in memory, 699 MB spilled); spilled, it took 14.0 s against 12.9 s
(each slice is read back in one piece, :meth:`guiji.spill.Spill.slices`)."""
MEMORY_ROWS = SPILL_SLICES * STD_CHUNK_ROWS


@dataclass
class IngestResult:
    status: str  # "new" | "unchanged" | "none"
    batch: Batch | None
    problems: list[str]
    rows: Spill | None = None  # a new batch's ODS rows as stored (ods_schema), until written; close() after
    record: dict | None = None  # a new batch's row of ods.batches
    carried: pl.DataFrame | None = None  # a new batch's carried runs (warehouse.ods.CARRIED_SCHEMA)


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
    result = receive(wh, resource, batch_date, landing, variables, catalogue=catalogue)
    if result.status == "new":
        assert result.rows is not None
        try:
            store(wh, resource, result)
        finally:
            result.rows.close()
    return result


def receive(
    wh: Warehouse, resource: Resource, batch_date: dt.date, landing: Path, variables: Mapping[str, str] | None = None,
    *, catalogue: Catalogue | None = None, memory_rows: int = MEMORY_ROWS,
) -> IngestResult:
    """Read a delivery and decide what it is: no delivery, the batch already stored, or a new batch.

    A new batch comes back with its rows in the form the warehouse stores them, not yet written, in a
    :class:`~guiji.spill.Spill` (in memory up to ``memory_rows`` rows, beyond that on local disk; the
    caller closes it): :func:`store` writes it, and the 标准层 may go on with the same rows meanwhile.
    A 前置库 delivery is read a page at a time and never held whole. With the ``catalogue``, a full
    snapshot delivered again leaves out of its rows the records the previous batch holds unchanged
    (:func:`carry`): they come back as carried runs.
    """
    db = isinstance(resource.channel, DatabaseChannel)
    low = read_window(resource, batch_date) if db else None
    with wh.engine.connect() as conn:
        prev = latest_batch(wh, conn, resource, batch_date)
    problems: list[str] = []
    if db:
        reading = open_database(resource, batch_date, landing, low, variables)
        pages, sources, unreadable = reading.pages(), [reading.source], []
    elif isinstance(resource.channel, FileChannel):
        # hashed before it is parsed, and parsed a piece at a time as it is stored
        delivery: FileReading | Delivery = open_files(resource, resource.channel, batch_date, landing)
        if not delivery.sources:
            return IngestResult("none", prev, [])
        if prev is not None and prev.content_hash == delivery.content_hash:
            # the stored batch's content, not even parsed: its problems are the stored batch's
            return IngestResult("unchanged", prev, prev.problems.split("\n") if prev.problems else [])
        pages, sources, unreadable, problems = delivery.pages(), delivery.sources, delivery.unreadable, \
            delivery.problems
    else:
        delivery = read_batch(resource, batch_date, landing, low, variables)
        if prev is not None and prev.content_hash == delivery.content_hash:
            return IngestResult("unchanged", prev, delivery.problems)
        pages, sources, unreadable, problems = _pages_of(delivery), delivery.sources, delivery.unreadable, \
            delivery.problems
    seq = (prev.seq + 1) if prev else 1
    batch_id = f"{resource.id}.{batch_date:%Y%m%d}.{seq}"
    schema = ods_schema(resource)
    keys = key_values(catalogue, resource) if catalogue is not None else []
    spill = Spill(keys, memory_rows)
    compared = catalogue is not None and _carries(resource)
    thin, unparseable = [], 0
    try:
        for page in pages:
            rows = page.with_columns(pl.lit(batch_id).alias("_batch_id")).select(
                [pl.col(c).cast(t) for c, t in schema.items() if c != DIGEST])
            rows = with_record_digest(resource, wh.stored(rows)).select(list(schema))
            unparseable += int(rows.get_column("_error").is_not_null().sum())
            if compared:
                thin.append(rows.select("_row_no", DIGEST, "_error", "_source", *keys))
            spill.add(rows)
        spill.finish()
    except BaseException:
        spill.close()
        raise
    if db:
        content_hash, delivered, high = reading.content_hash, reading.rows, reading.watermark_high
        if prev is not None and prev.content_hash == content_hash:
            spill.close()
            return IngestResult("unchanged", prev, problems)
    else:
        content_hash, delivered, high = delivery.content_hash, spill.rows, None
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
        "sources": "; ".join(sources),
        "content_hash": content_hash,
        "rows_delivered": delivered,
        "rows_unparseable": unparseable,
        "watermark_low": low,
        "watermark_high": high or low,
        "problems": "\n".join(problems) or None,
        "unreadable_bytes": sum(u.bytes for u in unreadable),
        "unreadable_lines": sum(u.lines for u in unreadable),
        "status": BATCH_FAILED if unreadable else BATCH_OK,
        "carried_from": None,
        "rows_carried": 0,
    }
    runs = None
    if compared:
        try:
            carried, runs, source = carry(wh, catalogue, resource, batch_date, batch_id,
                                          pl.concat(thin) if thin else None)
        except BaseException:
            spill.close()
            raise
        if runs is not None:
            spill.leave_out(carried)
            record["carried_from"] = source
            record["rows_carried"] = int(runs.get_column("rows").sum())
    return IngestResult("new", Batch.from_row(record), problems, spill, record, runs)


def _pages_of(delivery: Delivery) -> Iterator[pl.DataFrame]:
    """An API delivery's frame a page at a time; the delivery lets go of the frame as it goes."""
    frame, delivery.frame = delivery.frame, delivery.frame.clear()
    if frame.height == 0:
        yield frame
        return
    page = FETCH_PAGE_ROWS
    while frame.height:
        yield frame.head(page)
        frame = frame.slice(page)


def _carries(resource: Resource) -> bool:
    """A resource whose deliveries are compared with the previous batch: a full snapshot (files, API),
    not a 前置库's versions."""
    return not resource.version_column


def carry(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, batch_id: str,
    rows: pl.DataFrame | None,
) -> tuple[pl.DataFrame | None, pl.DataFrame | None, str | None]:
    """Which records of a new batch the previous batch holds unchanged (not to be stored again).

    A full snapshot delivered again (file and API channels; a 前置库 delivers only its changed rows)
    is compared with the resource's newest batch of an earlier date — when that batch was read whole
    (status ok) from one file, its 标准层 is complete and it was not withheld. A record is carried when a record of
    that batch has the same digest (:func:`warehouse.ods.record_digest`: every delivered column) and
    was accepted there, and no other record of this batch has the same key as the 标准层 parses it
    (a key delivered twice is quarantined with every copy, so all copies are standardised here). An
    accepted record stays accepted on a later date: the blocking rules are the key's format and
    uniqueness, and an ID number's birth date, which only a later date can let pass.

    ``rows``: the new batch's ``_row_no``, digest, ``_error``, ``_source`` and parsed key columns
    (:func:`guiji.standardize.key_values`). Returns the carried records (``_source``, ``_row_no``, the
    parsed key columns), the carried runs (None: nothing carried) and the compared batch's id.
    """
    if not _carries(resource) or rows is None or rows.height == 0:
        return None, None, None
    with wh.engine.connect() as conn:
        prev = previous_batch(wh, conn, resource, batch_date)
        # a batch of several files numbers records inside each file: only one file's rows are addressable
        if prev is None or prev.failed or "; " in prev.sources or not wh.exists("audit", RECONCILIATION):
            return None, None, None
        rec = wh.read(conn, f"SELECT withheld FROM {wh.qualified('audit', RECONCILIATION)} WHERE batch_id = :b",
                      {"withheld": pl.String()}, {"b": prev.batch_id})
        if rec.height == 0 or rec.item(0, 0) is not None:
            return None, None, None
        before = batch_records(wh, conn, resource, prev.batch_id)
        quarantined = wh.read(conn, f"SELECT DISTINCT row_no FROM {wh.qualified('quality', QUARANTINE)} "
                              "WHERE batch_id = :b", {"row_no": pl.Int64()}, {"b": prev.batch_id})
    accepted = before.filter(pl.col("digest").is_not_null()).join(
        quarantined, on="row_no", how="anti").filter(pl.col("digest").is_unique())
    key_cols = [f"__key_{e}" for e in resource.key if f"__key_{e}" in rows.columns]
    twice = pl.any_horizontal([pl.col(c).is_null() for c in key_cols]) | pl.struct(key_cols).is_duplicated() \
        if key_cols else pl.lit(True)
    candidates = rows.filter(pl.col("_error").is_null() & ~twice.fill_null(True) & pl.col(DIGEST).is_unique())
    matched = candidates.join(accepted, left_on=DIGEST, right_on="digest", how="inner").select(
        pl.col("_row_no").alias("row_no"), "source_batch_id", "source_row_no", pl.col("_source").alias("source"),
        *key_cols)
    if matched.height == 0:
        return None, None, None
    runs = carried_runs(batch_id, matched)
    carried = matched.select(pl.col("source").alias("_source"), pl.col("row_no").alias("_row_no"), *key_cols)
    return carried, runs, prev.batch_id


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
        wh.insert_pages(conn, table, result.rows.pages())
        if result.carried is not None and result.carried.height:
            carried = carried_table(wh)
            wh.create(conn, carried)
            wh.insert(conn, carried, result.carried)
