"""关联数据一致性 over the current base libraries, stored per library and batch date."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from quality.consistency import REF_SCHEMA, referential
from warehouse.base import read_current
from warehouse.store import Column, Warehouse

REFERENCE_FAILURES = "reference_failures"
TABLE_SCHEMA: dict[str, pl.DataType] = {"batch_date": pl.Date(), **{k: v() for k, v in REF_SCHEMA.items()}}


@dataclass
class ReferenceRun:
    failures: pl.DataFrame
    counts: pl.DataFrame


def check_references(wh: Warehouse, catalogue: Catalogue, library: str, batch_date: dt.date) -> ReferenceRun:
    lib = catalogue.library(library)
    if not lib.references:
        return ReferenceRun(pl.DataFrame(schema=REF_SCHEMA), pl.DataFrame())
    needed = {lib.code} | {t.library for r in lib.references for t in r.targets}
    with wh.engine.connect() as conn:
        frames = {
            code: read_current(wh, conn, catalogue.library(code)) if wh.exists("base", code) else None
            for code in needed
        }
    if frames[lib.code] is None or any(f is None for f in frames.values()):
        return ReferenceRun(pl.DataFrame(schema=REF_SCHEMA), pl.DataFrame())
    failures, counts = referential(catalogue, lib, frames[lib.code], frames)
    table = wh.table("quality", REFERENCE_FAILURES, [Column(n, t) for n, t in TABLE_SCHEMA.items()],
                     indexes=[["library", "batch_date"]])
    with wh.begin() as conn:
        wh.create(conn, table)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', REFERENCE_FAILURES)} "
                             "WHERE library = :l AND batch_date = :d"), {"l": library, "d": batch_date})
        wh.insert(conn, table, failures.with_columns(pl.lit(batch_date).alias("batch_date")))
    return ReferenceRun(failures, counts)
