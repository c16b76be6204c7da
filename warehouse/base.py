"""基础库 (base) layout and readers: versions by key and validity, lineage per value, the merge log."""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterable, Iterator

import polars as pl
import sqlalchemy as sa

from catalog.models import Library
from catalog.normalize import element_dtype
from warehouse.ods import batch_numbers
from warehouse.store import Column, Warehouse

VALID_FROM, VALID_TO = "valid_from", "valid_to"


def lineage(element: str) -> tuple[str, str]:
    """Columns recording where a value came from: its batch and its row in that batch.

    The batch is stored as its number (``ods.batches.batch_no``, which names the department,
    resource and date); readers get the batch id back through :func:`guiji.base.read_current`.
    """
    return f"{element}__batch", f"{element}__row"


def value_elements(lib: Library) -> list[str]:
    return [e.code for e in lib.elements if e.code not in lib.key]


def base_schema(lib: Library) -> dict[str, pl.DataType]:
    """Columns of a base-library table: key, each value with its lineage, validity period."""
    schema: dict[str, pl.DataType] = {k: element_dtype(lib.element(k)) for k in lib.key}
    for code in value_elements(lib):
        b, r = lineage(code)
        schema[code] = element_dtype(lib.element(code))
        schema[b] = pl.Int64()
        schema[r] = pl.Int64()
    schema[VALID_FROM] = pl.Date()
    schema[VALID_TO] = pl.Date()
    return schema


MERGE_LOG = "merge_log"


MERGE_LOG_SCHEMA: dict[str, pl.DataType] = {
    "library": pl.String(),
    "batch_date": pl.Date(),
    "batch_ids": pl.String(),
    "incoming": pl.Int64(),
    "new_entities": pl.Int64(),
    "changed_entities": pl.Int64(),
    "unchanged": pl.Int64(),
    "rebuilt_entities": pl.Int64(),  # entities whose history from the batch date on was folded again
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


def key_match(wh: Warehouse, alias: str, tmp: str, key: list[str]) -> str:
    return " AND ".join(f"{alias}.{wh.quote(k)} = {tmp}.{wh.quote(k)}" for k in key)


def merged_batches(wh: Warehouse, conn: sa.Connection, library: str) -> dict[dt.date, list[str]]:
    """Batch ids merged into ``library`` per batch date, as the merge log recorded them."""
    if not wh.exists("audit", MERGE_LOG):
        return {}
    rows = conn.execute(sa.text(f"SELECT batch_date, batch_ids FROM {wh.qualified('audit', MERGE_LOG)} "
                                "WHERE library = :l"), {"l": library}).fetchall()
    return {as_date(d): [b for b in (ids or "").split(",") if b] for d, ids in rows}


def merges_digest(wh: Warehouse, conn: sa.Connection, library: str, upto: dt.date) -> str:
    """A digest of the merge log of ``library`` for the batch dates up to ``upto``: what the library's
    versions valid on ``upto`` (or any earlier date) are made of. A merge of a later date leaves them
    as they are (it changes versions from its own date on); a merge of such a date — a backfill, a
    re-delivery merged again — writes its log row again, so the digest changes."""
    rows = []
    if wh.exists("audit", MERGE_LOG):
        rows = conn.execute(sa.text(
            "SELECT batch_date, batch_ids, incoming, new_entities, changed_entities, unchanged, rebuilt_entities "
            f"FROM {wh.qualified('audit', MERGE_LOG)} WHERE library = :l AND batch_date <= :d ORDER BY batch_date"),
            {"l": library, "d": upto}).fetchall()
    text = repr([(as_date(r[0]).isoformat(), r[1] or "", *(None if v is None else int(v) for v in r[2:]))
                 for r in rows])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def as_date(v) -> dt.date:
    """A date as a driver returns it (a date, or SQLite's text) as a date."""
    return v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)[:10])


def read_current(wh: Warehouse, conn: sa.Connection, lib: Library, limit: int | None = None,
                 columns: Iterable[str] | None = None) -> pl.DataFrame:
    """The current version of every entity of a base library (the first ``limit`` by key), each
    value's lineage batch as its batch id; only ``columns`` (base-table columns), when given."""
    schema = selected_schema(lib, columns)
    cols = ", ".join(wh.quote(c) for c in schema)
    frame = wh.read(conn, f"SELECT {cols} FROM {wh.qualified('base', lib.code)} WHERE {VALID_TO} IS NULL "
                    f"ORDER BY {', '.join(wh.quote(k) for k in lib.key)}"
                    + (f" LIMIT {int(limit)}" if limit is not None else ""), schema, bulk=limit is None)
    return with_batch_ids(frame, lib, batch_numbers(wh, conn))


def selected_schema(lib: Library, columns: Iterable[str] | None) -> dict[str, pl.DataType]:
    """The base-table schema, only ``columns`` of it (in table order, whatever order they come in) when given."""
    schema = base_schema(lib)
    if columns is None:
        return schema
    columns = set(columns)
    unknown = columns - set(schema)
    if unknown:
        raise ValueError(f"{lib.code}: no such base-library columns: {sorted(unknown)}")
    return {c: t for c, t in schema.items() if c in columns}


def valid_on(alias: str = "") -> str:
    """The SQL condition: the version was valid at the end of batch date ``:d``."""
    a = f"{alias}." if alias else ""
    return f"{a}{VALID_FROM} <= :d AND ({a}{VALID_TO} IS NULL OR {a}{VALID_TO} > :d)"


def read_on(wh: Warehouse, conn: sa.Connection, lib: Library, day: dt.date, columns: Iterable[str] | None = None,
            *, referenced_by: tuple[Library, list[str]] | None = None) -> pl.DataFrame:
    """:func:`read_current` as the library stood at the end of batch date ``day``: the version of every
    entity valid that day, whatever dates were merged since (a check of ``day`` gives the same answer
    whenever it runs).

    ``columns``: only these base-table columns (in table order). ``referenced_by`` = (library, elements):
    only the entities whose (single-column) key is a value of one of those elements of that library on
    ``day`` — a semi-join in the database, so a reference check reads the referenced entities alone."""
    schema = selected_schema(lib, columns)
    cols = ", ".join(f"b.{wh.quote(c)}" for c in schema)
    where = valid_on("b")
    if referenced_by is not None:
        if len(lib.key) != 1:
            raise ValueError(f"{lib.code}: referenced_by needs a single-column key")
        source, elements = referenced_by
        values = " UNION ".join(
            f"SELECT r.{wh.quote(e)} FROM {wh.qualified('base', source.code)} r "
            f"WHERE {valid_on('r')} AND r.{wh.quote(e)} IS NOT NULL" for e in elements)
        where += f" AND b.{wh.quote(lib.key[0])} IN ({values})"
    frame = wh.read(conn, f"SELECT {cols} FROM {wh.qualified('base', lib.code)} b WHERE {where} "
                    f"ORDER BY {', '.join('b.' + wh.quote(k) for k in lib.key)}", schema, {"d": day}, bulk=True)
    return with_batch_ids(frame, lib, batch_numbers(wh, conn))


def holds_on(wh: Warehouse, conn: sa.Connection, lib: Library, day: dt.date) -> bool:
    """Whether the library held any entity at the end of batch date ``day``."""
    return wh.scalar(conn, f"SELECT 1 FROM {wh.qualified('base', lib.code)} WHERE {valid_on()} LIMIT 1",
                     {"d": day}) is not None


def with_batch_ids(frame: pl.DataFrame, lib: Library, numbers: pl.DataFrame) -> pl.DataFrame:
    """Lineage batch numbers replaced by the batch ids they stand for (``numbers``: batch_no → batch_id)."""
    nos, ids = numbers.get_column("batch_no"), numbers.get_column("batch_id")
    return frame.with_columns(
        pl.col(b).replace_strict(nos, ids, default=None, return_dtype=pl.String)
        for b in (lineage(e)[0] for e in value_elements(lib)) if b in frame.columns
    )


SLICE = "gongshu_slice"
AS_OF_PAGE_ROWS = 200_000


def read_as_of_slices(wh: Warehouse, conn: sa.Connection, lib: Library, keys: pl.DataFrame, slices: int,
                      day: dt.date, columns: Iterable[str] | None = None) -> Iterator[pl.DataFrame]:
    """The versions valid on ``day`` (what the base library held for an entity that day, whatever was
    merged since; only ``columns``, base-table columns, when given) of keys cut into ``slices`` slices
    (``keys``: the key columns and :data:`SLICE`, the slice of each key, 0 … ``slices`` − 1): one frame
    per slice, in order (empty where it has none), from one query ordered by slice — the keys loaded
    into a temporary table and joined — read a page at a time. Reading each slice's versions by a join of its own had the database scan the whole library
    once per slice: at 10 M persons and ~80 slices, most of the 一数一源 check's time. (The query holds
    ``conn`` until every frame is taken: take them all before using it for anything else.)"""
    schema = selected_schema(lib, columns)
    empty = pl.DataFrame(schema=schema)
    if keys.height == 0 or not wh.exists("base", lib.code) or \
            wh.scalar(conn, f"SELECT 1 FROM {wh.qualified('base', lib.code)} LIMIT 1") is None:
        for _ in range(slices):
            yield empty
        return
    tmp = wh.temp_table(conn, "gongshu_slice_keys", keys.select(*lib.key, pl.col(SLICE).cast(pl.Int32)).unique())
    del keys  # in the database now: not held while the slices are read
    cols = ", ".join(f"b.{wh.quote(c)}" for c in schema)
    query = (f"SELECT {cols}, t.{SLICE} FROM {wh.qualified('base', lib.code)} b JOIN {tmp} t "
             f"ON {key_match(wh, 'b', 't', lib.key)} WHERE {valid_on('b')} ORDER BY t.{SLICE}")
    pending: list[pl.DataFrame] = []
    at = 0

    def taken() -> pl.DataFrame:
        out = pl.concat(pending) if pending else empty
        pending.clear()
        return out

    for page in wh.read_pages(conn, query, {**schema, SLICE: pl.Int32()}, AS_OF_PAGE_ROWS, {"d": day}):
        for (s,), part in page.group_by(SLICE, maintain_order=True):
            while at < s:
                yield taken()
                at += 1
            pending.append(part.drop(SLICE))
    while at < slices:
        yield taken()
        at += 1
    conn.execute(sa.text(f"DROP TABLE {tmp}"))
