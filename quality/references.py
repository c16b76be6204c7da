"""关联数据一致性 over the base libraries as they stood on the batch date, stored per library and batch date
(the same failures whatever order dates run in)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from quality.consistency import REF_SCHEMA, referential
from warehouse.base import merged_batches, read_on
from warehouse.store import Column, Warehouse

REFERENCE_FAILURES = "reference_failures"
TABLE_SCHEMA: dict[str, pl.DataType] = {"batch_date": pl.Date(), **{k: v() for k, v in REF_SCHEMA.items()}}


@dataclass
class ReferenceRun:
    failures: pl.DataFrame
    counts: pl.DataFrame


def check_references(wh: Warehouse, catalogue: Catalogue, library: str, batch_date: dt.date) -> ReferenceRun:
    """The failures of ``library``'s references on ``batch_date``, stored for that date. A backfill (dates
    after it merged already into the library or a library it references) checks those dates again too:
    what the libraries held on them may have changed with what ``batch_date`` delivered."""
    lib = catalogue.library(library)
    if not lib.references:
        return ReferenceRun(pl.DataFrame(schema=REF_SCHEMA), pl.DataFrame())
    needed = {lib.code} | {t.library for r in lib.references for t in r.targets}
    table = wh.table("quality", REFERENCE_FAILURES, [Column(n, t) for n, t in TABLE_SCHEMA.items()],
                     indexes=[["library", "batch_date"]])
    run = ReferenceRun(pl.DataFrame(schema=REF_SCHEMA), pl.DataFrame())
    with wh.begin() as conn:
        wh.create(conn, table)
        later = sorted({d for code in needed for d in merged_batches(wh, conn, code) if d > batch_date})
        for day in [batch_date, *later]:
            frames = {code: read_on(wh, conn, catalogue.library(code), day) if wh.exists("base", code) else None
                      for code in needed}
            conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', REFERENCE_FAILURES)} "
                                 "WHERE library = :l AND batch_date = :d"), {"l": library, "d": day})
            if any(f is None for f in frames.values()):
                continue
            failures, counts = referential(catalogue, lib, frames[lib.code], frames)
            wh.insert(conn, table, failures.with_columns(pl.lit(day).alias("batch_date")))
            if day == batch_date:
                run = ReferenceRun(failures, counts)
    return run
