"""标准层 storage: typed rows per batch, the quarantine, and the row reconciliation per batch."""

from __future__ import annotations

import datetime as dt
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from assets.ods import (
    BATCH_SCHEMA,
    BATCHES,
    Batch,
    IngestResult,
    batches_table,
    latest_batch,
    ods_table,
    open_delivery_failures,
    read_ods,
    receive,
    store,
)
from assets.standardize import QUARANTINE_SCHEMA, Standardized, standardize, std_schema
from catalog.loader import Catalogue
from catalog.models import Resource
from quality.expectations import data_docs_root, validate
from quality.results import masked_failures, min_pass_rate, store_results, withheld_reason
from quality.rules import resource_rules
from warehouse.store import Column, Warehouse

QUARANTINE = "quarantine"
RECONCILIATION = "reconciliation"
QUARANTINE_TABLE_SCHEMA: dict[str, pl.DataType] = {
    "batch_id": pl.String(), "resource_id": pl.String(), "row_no": pl.Int64(),
    **{k: v for k, v in QUARANTINE_SCHEMA.items() if k != "_row_no"},
}
RECONCILIATION_SCHEMA: dict[str, pl.DataType] = {
    "batch_id": pl.String(),
    "resource_id": pl.String(),
    "batch_date": pl.Date(),
    "rows_delivered": pl.Int64(),
    "rows_accepted": pl.Int64(),
    "rows_quarantined": pl.Int64(),
    "id15_converted": pl.Int64(),
    "withheld": pl.String(),  # why the batch is kept out of the base library (None: it is merged)
}


class ReconciliationError(AssertionError):
    """Rows were lost or counted twice: the batch is not written."""


def std_table(wh: Warehouse, catalogue: Catalogue, resource: Resource) -> sa.Table:
    schema = {"_batch_id": pl.String(), **std_schema(catalogue, resource)}
    return wh.table("std", resource.id, [Column(n, t) for n, t in schema.items()], batch_index="_batch_id")


def quarantine_table(wh: Warehouse) -> sa.Table:
    return wh.table(
        "quality", QUARANTINE, [Column(n, t) for n, t in QUARANTINE_TABLE_SCHEMA.items()], indexes=[["batch_id"]]
    )


def reconciliation_table(wh: Warehouse) -> sa.Table:
    return wh.table(
        "audit", RECONCILIATION, [Column(n, t) for n, t in RECONCILIATION_SCHEMA.items()], primary_key=["batch_id"]
    )


@dataclass
class StdResult:
    batch: Batch | None
    result: Standardized | None
    delivered: int = 0
    gx_counts: dict[str, tuple[int, int]] | None = None
    data_docs: str | None = None
    withheld: str | None = None  # set when a blocking rule keeps the batch out of the base library

    @property
    def accepted(self) -> int:
        return self.result.accepted.height if self.result else 0

    @property
    def quarantined(self) -> int:
        return self.result.quarantined_rows if self.result else 0

    @property
    def reconciliation(self) -> str:
        """交付 = 接收 + 隔离; for a failed batch also the files none of whose records could be read,
        so a non-empty delivery never shows as a plain 0 = 0 + 0."""
        return reconciliation_text(self.delivered, self.accepted, self.quarantined, self.batch)


def reconciliation_text(delivered: int, accepted: int, quarantined: int, batch: Batch | None) -> str:
    text = f"{delivered} = {accepted} + {quarantined}"
    if batch is not None and batch.failed:
        text += (f" · 批次失败: 另有无法拆分为记录的文件 ({batch.unreadable_bytes:,} 字节, "
                 f"{batch.unreadable_lines:,} 行), 其记录未计入")
    return text


def standardize_batch(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, *,
    run_id: str = "manual", with_gx: bool = True,
) -> StdResult:
    """Rebuild the std rows, quarantine and rule results of the latest batch of ``resource``.

    Rules are counted by the polars predicates; with ``with_gx`` Great Expectations validates
    the same rows too and both counts are stored side by side.
    """
    with wh.engine.connect() as conn:
        batch = latest_batch(wh, conn, resource, batch_date)
        if batch is None:
            return StdResult(None, None)
        ods = read_ods(wh, conn, resource, batch.batch_id)
    out, failures = _standardize(catalogue, resource, batch_date, batch, ods, with_gx)
    _write(wh, catalogue, resource, batch_date, out, failures, run_id)
    return out


def collect(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, landing: Path, *,
    run_id: str = "manual", with_gx: bool = True,
) -> tuple[IngestResult, StdResult]:
    """贴源层 and 标准层 of one delivery in one pass: what :func:`ingest` then
    :func:`standardize_batch` do, without reading the new batch back from the warehouse.

    The ODS rows are written by a worker thread while the same rows, in their stored form, are
    standardised here; the std rows are written once the ODS batch has committed. A delivery that
    is not a new batch (none, or the same content again) rebuilds the std rows of the latest batch.
    """
    received = receive(wh, resource, batch_date, landing)
    if received.status != "new":
        return received, standardize_batch(wh, catalogue, resource, batch_date, run_id=run_id, with_gx=with_gx)
    assert received.batch is not None and received.rows is not None
    # declared before the worker starts, so the two threads never declare a table at the same time
    batches_table(wh)
    ods_table(wh, resource)
    with ThreadPoolExecutor(1, thread_name_prefix="gongshu-ods") as pool:
        written = pool.submit(store, wh, resource, received)
        try:
            out, failures = _standardize(catalogue, resource, batch_date, received.batch, received.rows, with_gx)
        finally:
            written.result()  # the ODS batch is committed (or its error raised) before anything else is written
    _write(wh, catalogue, resource, batch_date, out, failures, run_id)
    return received, out


def _standardize(
    catalogue: Catalogue, resource: Resource, batch_date: dt.date, batch: Batch, ods: pl.DataFrame, with_gx: bool,
) -> tuple[StdResult, pl.DataFrame]:
    result = standardize(ods, catalogue, resource, batch_date)
    delivered, accepted, quarantined = ods.height, result.accepted.height, result.quarantined_rows
    if delivered != accepted + quarantined or delivered != batch.rows_delivered:
        raise ReconciliationError(
            f"{batch.batch_id}: 交付 {batch.rows_delivered} 行, 读出 {delivered} 行, 接收 {accepted} + 隔离 {quarantined}"
        )
    withheld = withheld_reason(result.rule_counts, min_pass_rate())
    gx_counts, docs = None, None
    if with_gx and result.parsed is not None and result.parsed.height:
        rules = resource_rules(catalogue, resource, batch_date)
        gx_results, raw = validate(result.parsed, rules, resource.id,
                                   docs=data_docs_root() / resource.id / f"{batch.batch_id}.html")
        gx_counts = {g.rule_id: (g.evaluated, g.failed) for g in gx_results}
        docs = raw.get("data_docs")
    failures = masked_failures(catalogue, resource, result.failures,
                               result.parsed.select(["_row_no", *resource.key]) if result.parsed is not None
                               else pl.DataFrame(schema={"_row_no": pl.Int64}))
    return StdResult(batch, result, delivered, gx_counts, docs, withheld), failures


def _write(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, out: StdResult,
    failures: pl.DataFrame, run_id: str,
) -> None:
    """Replace the std rows, quarantine, reconciliation and rule results of one batch, in one transaction."""
    batch, result = out.batch, out.result
    assert batch is not None and result is not None
    std, qt, rec = std_table(wh, catalogue, resource), quarantine_table(wh), reconciliation_table(wh)
    with wh.begin() as conn:
        for t in (std, qt, rec):
            wh.create(conn, t)
        b = {"b": batch.batch_id}
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('std', resource.id)} WHERE _batch_id = :b"), b)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', QUARANTINE)} WHERE batch_id = :b"), b)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('audit', RECONCILIATION)} WHERE batch_id = :b"), b)
        wh.insert(conn, std, result.accepted.with_columns(pl.lit(batch.batch_id).alias("_batch_id")))
        wh.insert(
            conn, qt,
            result.quarantine.rename({"_row_no": "row_no"}).with_columns(
                pl.lit(batch.batch_id).alias("batch_id"), pl.lit(resource.id).alias("resource_id")
            ),
        )
        wh.insert(conn, rec, pl.DataFrame([{
            "batch_id": batch.batch_id, "resource_id": resource.id, "batch_date": batch_date,
            "rows_delivered": out.delivered, "rows_accepted": out.accepted, "rows_quarantined": out.quarantined,
            "id15_converted": result.converted_id15, "withheld": out.withheld,
        }], schema=RECONCILIATION_SCHEMA))
        store_results(wh, conn, run_id=run_id, batch_id=batch.batch_id, resource=resource, batch_date=batch_date,
                      counts=result.rule_counts, gx_counts=out.gx_counts, failures=failures)


def read_std(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, resource: Resource, batch_id: str,
             columns: list[str] | None = None, *, latest: bool = False) -> pl.DataFrame:
    """The accepted rows of one std batch in delivery order (only ``columns``, when given).

    With ``latest``, one row per key: the last version of each key in the batch. Only a versioned
    resource (a 前置库) has several — its rows are numbered in watermark order, so the last is the
    highest row number; elsewhere a key delivered twice never reaches the 标准层.
    """
    schema = std_schema(catalogue, resource)
    if columns is not None:
        schema = {c: t for c, t in schema.items() if c in columns or c == "_row_no" or (latest and c in resource.key)}
    cols = ", ".join(wh.quote(c) for c in schema)
    frame = wh.read(
        conn, f"SELECT {cols} FROM {wh.qualified('std', resource.id)} WHERE _batch_id = :b",
        schema, {"b": batch_id}, bulk=True,
    ).sort("_row_no")
    if latest and resource.version_column:
        frame = frame.unique(subset=resource.key, keep="last", maintain_order=True)
    return frame


def mergeable_batch(wh: Warehouse, conn: sa.Connection, resource: Resource, batch_date: dt.date) -> Batch | None:
    """The batch of ``resource`` that the base library takes for ``batch_date``: the newest one
    whose 标准层 is complete (it has its reconciliation) and that no blocking rule withholds."""
    if not (wh.exists("ods", BATCHES) and wh.exists("audit", RECONCILIATION)):
        return None
    frame = wh.read(
        conn,
        f"SELECT {', '.join('b.' + c for c in BATCH_SCHEMA)} FROM {wh.qualified('ods', BATCHES)} b "
        f"JOIN {wh.qualified('audit', RECONCILIATION)} r ON r.batch_id = b.batch_id "
        "WHERE b.resource_id = :r AND b.batch_date = :d AND r.withheld IS NULL ORDER BY b.seq DESC LIMIT 1",
        BATCH_SCHEMA, {"r": resource.id, "d": batch_date},
    )
    return Batch.from_row(frame.row(0, named=True)) if frame.height else None


def night_problems(wh: Warehouse, batch_date: dt.date) -> pl.DataFrame:
    """Resources the base libraries could not take from on ``batch_date``, and why: the delivery
    failed (``交付失败``), or the newest batch of the day was withheld by a blocking rule (``暂缓入库``)."""
    schema = {"resource_id": pl.String(), "state": pl.String(), "reason": pl.String()}
    with wh.engine.connect() as conn:
        failed = open_delivery_failures(wh, conn, batch_date).select(
            "resource_id", pl.lit("交付失败").alias("state"), pl.col("error").alias("reason"))
        withheld = pl.DataFrame(schema={"resource_id": pl.String(), "reason": pl.String()})
        if wh.exists("ods", BATCHES) and wh.exists("audit", RECONCILIATION):
            b, r = wh.qualified("ods", BATCHES), wh.qualified("audit", RECONCILIATION)
            withheld = wh.read(
                conn,
                f"SELECT b.resource_id, r.withheld AS reason FROM {b} b JOIN {r} r ON r.batch_id = b.batch_id "
                f"JOIN (SELECT resource_id, MAX(seq) AS seq FROM {b} WHERE batch_date = :d GROUP BY resource_id) m "
                "ON m.resource_id = b.resource_id AND m.seq = b.seq "
                "WHERE b.batch_date = :d AND r.withheld IS NOT NULL", schema={"resource_id": pl.String(),
                                                                             "reason": pl.String()},
                params={"d": batch_date})
    held = withheld.select("resource_id", pl.lit("暂缓入库").alias("state"), "reason")
    return pl.concat([failed.cast(schema), held.cast(schema)]).unique("resource_id", keep="first", maintain_order=True)
