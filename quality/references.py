"""关联数据一致性 over the base libraries as they stood on the batch date, stored per library and batch date
(the same failures whatever order dates run in)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Library
from quality.consistency import REF_SCHEMA, referential
from warehouse.base import holds_on, lineage, merged_batches, read_on, selected_schema
from warehouse.store import Column, Warehouse

REFERENCE_FAILURES = "reference_failures"
TABLE_SCHEMA: dict[str, pl.DataType] = {"batch_date": pl.Date(), **{k: v() for k, v in REF_SCHEMA.items()}}


@dataclass
class ReferenceRun:
    failures: pl.DataFrame
    counts: pl.DataFrame


def reference_columns(catalogue: Catalogue, lib: Library) -> dict[str, set[str]]:
    """The base-table columns :func:`quality.consistency.referential` uses of each library ``lib``'s
    references need: ``lib``'s key, referencing elements and name fields with the lineage of each
    (what a finding points at), and each target's key and name element."""
    need: dict[str, set[str]] = {lib.code: set(lib.key)}
    for ref in lib.references:
        for e in (ref.element, ref.name_field):
            if e:
                need[lib.code] |= {e, *lineage(e)}
        for t in ref.targets:
            tlib = catalogue.library(t.library)
            need.setdefault(t.library, set()).update(tlib.key, [t.name_element] if t.name_element else [])
    return need


def read_references_on(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, lib: Library,
                       day: dt.date) -> tuple[dict[str, pl.DataFrame], set[str]]:
    """(frames, libraries holding no entity) that :func:`quality.consistency.referential` checks ``lib``'s
    references of ``day`` with: only the columns it uses, and of each other target library only the
    entities ``lib`` refers to (a semi-join in the database)."""
    columns = reference_columns(catalogue, lib)
    frames = {lib.code: read_on(wh, conn, lib, day, columns[lib.code])}
    empty = set() if frames[lib.code].height else {lib.code}
    for code, cols in columns.items():
        if code == lib.code:
            continue
        target = catalogue.library(code)
        elements = [r.element for r in lib.references if any(t.library == code for t in r.targets)]
        if len(target.key) == 1:
            frames[code] = read_on(wh, conn, target, day, cols, referenced_by=(lib, elements))
            if not holds_on(wh, conn, target, day):
                empty.add(code)
        else:  # referential does not check a target of a composite key
            frames[code] = pl.DataFrame(schema=selected_schema(target, cols))
    return frames, empty


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
            conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', REFERENCE_FAILURES)} "
                                 "WHERE library = :l AND batch_date = :d"), {"l": library, "d": day})
            if not all(wh.exists("base", code) for code in needed):
                continue
            frames, empty = read_references_on(wh, conn, catalogue, lib, day)
            failures, counts = referential(catalogue, lib, frames[lib.code], frames, empty=empty)
            wh.insert(conn, table, failures.with_columns(pl.lit(day).alias("batch_date")))
            if day == batch_date:
                run = ReferenceRun(failures, counts)
    return run
