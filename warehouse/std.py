"""标准层 (std) layout and readers: typed rows per batch, the quarantine, the reconciliation."""

from __future__ import annotations

import datetime as dt

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Labelled, Resource
from catalog.normalize import element_dtype
from warehouse.ods import BATCH_SCHEMA, BATCHES, Batch, carried_rows, open_delivery_failures, read_carried
from warehouse.store import Column, Warehouse


class QuarantineReason(Labelled):
    """Why the 标准层 quarantined a value (``reason_code`` of the quarantine table) and the Chinese
    text departments read (``reason``; where a row carries its own, more precise reason — the file
    and encoding of ``wrong_encoding``, the cell of ``formula_no_value`` — that one is stored)."""

    unparseable = "unparseable", "无法解析的记录"
    wrong_encoding = "wrong_encoding", "文件编码与目录声明不符, 整个文件隔离"
    bad_encoding = "bad_encoding", "含无法解码的字节"
    nul_byte = "nul_byte", "含 NUL 空字符 (贴源层记为 ␀)"
    formula_no_value = "formula_no_value", "公式单元格没有计算结果"
    bad_date = "bad_date", "日期无法解析"
    bad_number = "bad_number", "数值无法解析"


QUARANTINE_SCHEMA = {
    "_row_no": pl.Int64,
    "field": pl.String,
    "column": pl.String,
    "reason_code": pl.String,
    "reason": pl.String,
    "raw_value": pl.String,
}


def std_schema(catalogue: Catalogue, resource: Resource) -> dict[str, pl.DataType]:
    """Columns of the std table of a resource: row number, then its elements."""
    lib = catalogue.library(resource.library)
    schema: dict[str, pl.DataType] = {"_row_no": pl.Int64()}
    for code in resource.elements():
        schema[code] = element_dtype(lib.element(code))
    return schema


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
    # of rows_accepted, the records carried unchanged from the previous batch (ods.carried): accepted
    # there, not standardised or written again (NULL in batches reconciled before carrying existed)
    "rows_carried": pl.Int64(),
}


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


def read_std(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, resource: Resource, batch_id: str,
             columns: list[str] | None = None, *, latest: bool = False, carried: bool = True, own: bool = True,
             rows: tuple[str, dict] | None = None, table: str | None = None) -> pl.DataFrame:
    """The accepted rows of one std batch in delivery order (only ``columns``, when given; only the
    rows meeting the SQL condition ``rows`` = (condition, its parameters), when given; the batch's own
    rows from ``table``, a copy of them, when given — carried rows always from their source batches).

    With ``latest``, one row per key: the last version of each key in the batch. Only a versioned
    resource (a 前置库) has several — its rows are numbered in watermark order, so the last is the
    highest row number; elsewhere a key delivered twice never reaches the 标准层.

    The records the batch carried unchanged from the previous one (``ods.carried``) are accepted
    rows of the batch too: they are read from the batches that store them, under this batch's row
    numbers. ``carried=False``: only the rows standardised for this batch (what changed);
    ``own=False``: only the carried ones.
    """
    schema = std_schema(catalogue, resource)
    if columns is not None:
        schema = {c: t for c, t in schema.items() if c in columns or c == "_row_no" or (latest and c in resource.key)}
    cols = ", ".join(wh.quote(c) for c in schema)
    where, params = rows or ("1 = 1", {})

    def rows_of(b: str, source: str | None = None) -> pl.DataFrame:
        return wh.read(conn, f"SELECT {cols} FROM {source or wh.qualified('std', resource.id)} "
                             f"WHERE _batch_id = :b AND {where}", schema, {"b": b, **params}, bulk=True)

    frame = rows_of(batch_id, table) if own else pl.DataFrame(schema=schema)
    if carried:
        parts = [frame]
        for (source,), held in carried_rows(read_carried(wh, conn, batch_id)).group_by("source_batch_id"):
            parts.append(held.join(rows_of(str(source)), left_on="source_row_no", right_on="_row_no", how="inner")
                         .select(pl.col("row_no").alias("_row_no"), *[c for c in schema if c != "_row_no"]))
        frame = pl.concat(parts) if len(parts) > 1 else frame
    frame = frame.sort("_row_no")
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


def reconciliation_for(wh: Warehouse, day: dt.date) -> pl.DataFrame:
    """Latest batch per resource up to ``day`` with its reconciliation counts, and for a failed
    batch the size of the files none of whose records could be read (``ods.batches``)."""
    schema = {"resource_id": pl.String(), "batch_id": pl.String(), "batch_date": pl.Date(),
              "rows_delivered": pl.Int64(), "rows_accepted": pl.Int64(), "rows_quarantined": pl.Int64(),
              "status": pl.String(), "unreadable_bytes": pl.Int64(), "unreadable_lines": pl.Int64()}
    if not wh.exists("audit", "reconciliation"):
        return pl.DataFrame(schema=schema)
    with wh.engine.connect() as conn:
        frame = wh.read(
            conn,
            f"SELECT r.resource_id, r.batch_id, r.batch_date, r.rows_delivered, r.rows_accepted, r.rows_quarantined, "
            f"b.status, b.unreadable_bytes, b.unreadable_lines FROM {wh.qualified('audit', 'reconciliation')} r "
            f"LEFT JOIN {wh.qualified('ods', 'batches')} b ON b.batch_id = r.batch_id WHERE r.batch_date <= :d",
            schema, {"d": day},
        )
    return frame.sort("batch_date", "batch_id").group_by("resource_id", maintain_order=True).last()
