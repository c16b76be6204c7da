"""一数一源 conflicts that persist across runs, the same whatever order batch dates run in.

A conflict is identified by (library, element, department, entity key). What each batch date showed
about it is an observation (``quality.conflict_observations``): a difference from the authority's value
of that day, or — once the identity has differed on some date — a match. The ledger row
(``quality.conflicts``) is folded from all of an identity's observations in batch-date order: first and
last seen (batch, date, row, values), times seen (dates on which it differed), and closed by the first
date after the last difference on which the copy matched. A rerun replaces its date's observations; a
backfill checks the dates merged after it again, so the ledger never depends on the order partitions
ran in. The tables live in the
internal quality layer (like the base libraries they may hold raw keys); everything shown to people
masks them.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from quality.consistency import CONFLICT_SCHEMA, RATE_SCHEMA, compare_copies, copies, entity_key
from warehouse.base import SLICE, merged_batches, read_as_of_slices
from warehouse.std import mergeable_batch, read_std
from warehouse.store import Column, Warehouse, slice_numbers

CONFLICTS = "conflicts"
IDENTITY = ["library", "element", "department", "entity_key"]
TABLE_SCHEMA: dict[str, pl.DataType] = {
    "library": pl.String(), "element": pl.String(), "department": pl.String(), "authority": pl.String(),
    "entity_key": pl.String(), "resource_id": pl.String(), "value": pl.String(), "authority_value": pl.String(),
    "first_seen_batch": pl.String(), "first_seen_date": pl.Date(), "last_seen_batch": pl.String(),
    "last_seen_date": pl.Date(), "last_row_no": pl.Int64(), "times_seen": pl.Int64(), "status": pl.String(),
    "closed_batch": pl.String(), "closed_date": pl.Date(),
}


def conflicts_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", CONFLICTS, [Column(n, t) for n, t in TABLE_SCHEMA.items()],
                    primary_key=IDENTITY, indexes=[["department", "status"]])


@dataclass
class ConflictChanges:
    opened: int
    seen_again: int
    closed: int
    open_total: int


def read_conflicts(wh: Warehouse, conn: sa.Connection, library: str) -> pl.DataFrame:
    if not wh.exists("quality", CONFLICTS):
        return pl.DataFrame(schema=TABLE_SCHEMA)
    cols = ", ".join(wh.quote(c) for c in TABLE_SCHEMA)
    return wh.read(conn, f"SELECT {cols} FROM {wh.qualified('quality', CONFLICTS)} WHERE library = :l",
                   TABLE_SCHEMA, {"l": library})


OBSERVATIONS = "conflict_observations"
OBSERVATION_SCHEMA: dict[str, pl.DataType] = {
    "library": pl.String(), "element": pl.String(), "department": pl.String(), "entity_key": pl.String(),
    "batch_date": pl.Date(), "batch_id": pl.String(), "row_no": pl.Int64(), "resource_id": pl.String(),
    "authority": pl.String(), "value": pl.String(), "authority_value": pl.String(), "conflict": pl.Boolean(),
}


def observations_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", OBSERVATIONS, [Column(n, t) for n, t in OBSERVATION_SCHEMA.items()],
                    primary_key=[*IDENTITY, "batch_date"])


RATES = "consistency_rates"
RATES_SCHEMA: dict[str, pl.DataType] = {"batch_date": pl.Date(), **{k: v() for k, v in RATE_SCHEMA.items()}}


def rates_table(wh: Warehouse) -> sa.Table:
    """The 一数一源 rates of every checked date: per copied element and resource batch, values compared with
    the authority's of that day and values matching it (replaced whenever the date is checked again)."""
    return wh.table("quality", RATES, [Column(n, t) for n, t in RATES_SCHEMA.items()],
                    primary_key=["library", "batch_date", "resource_id", "element"], indexes=[["batch_id"]])


def read_rates(wh: Warehouse, batch_ids: list[str]) -> pl.DataFrame:
    """The stored rates (RATES_SCHEMA) of ``batch_ids``."""
    if not batch_ids or not wh.exists("quality", RATES):
        return pl.DataFrame(schema=RATES_SCHEMA)
    names = {f"b{i}": b for i, b in enumerate(batch_ids)}
    cols = ", ".join(wh.quote(c) for c in RATES_SCHEMA)
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {cols} FROM {wh.qualified('quality', RATES)} "
                             f"WHERE batch_id IN ({', '.join(':' + n for n in names)})", RATES_SCHEMA, names)


def rated_dates(wh: Warehouse) -> set[tuple[str, dt.date]]:
    """(library, batch date) of every date whose rates are stored."""
    if not wh.exists("quality", RATES):
        return set()
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT DISTINCT library, batch_date FROM {wh.qualified('quality', RATES)}",
                        {"library": pl.String(), "batch_date": pl.Date()})
    return set(frame.iter_rows())


def fold_conflicts(observations: pl.DataFrame) -> pl.DataFrame:
    """The ledger rows (TABLE_SCHEMA) of the identities in ``observations``, from all of their observations:
    an identity that never differed has no row."""
    obs = observations.cast(OBSERVATION_SCHEMA).sort([*IDENTITY, "batch_date"])
    differed = obs.filter(pl.col("conflict"))
    if differed.is_empty():
        return pl.DataFrame(schema=TABLE_SCHEMA)
    seen = differed.group_by(IDENTITY, maintain_order=True).agg(
        pl.col("authority").last(), pl.col("resource_id").last(), pl.col("value").last(),
        pl.col("authority_value").last(), pl.col("batch_id").first().alias("first_seen_batch"),
        pl.col("batch_date").first().alias("first_seen_date"), pl.col("batch_id").last().alias("last_seen_batch"),
        pl.col("batch_date").last().alias("last_seen_date"), pl.col("row_no").last().alias("last_row_no"),
        pl.len().cast(pl.Int64).alias("times_seen"),
    )
    fixed = obs.filter(~pl.col("conflict")).join(seen.select(*IDENTITY, "last_seen_date"), on=IDENTITY).filter(
        pl.col("batch_date") > pl.col("last_seen_date")
    ).group_by(IDENTITY).agg(pl.col("batch_id").first().alias("closed_batch"),
                             pl.col("batch_date").first().alias("closed_date"))
    return seen.join(fixed, on=IDENTITY, how="left").with_columns(
        pl.when(pl.col("closed_date").is_null()).then(pl.lit("open")).otherwise(pl.lit("closed")).alias("status"),
    ).select(list(TABLE_SCHEMA)).cast(TABLE_SCHEMA)


def write_conflicts(wh: Warehouse, conn: sa.Connection, identities: pl.DataFrame, rows: pl.DataFrame) -> None:
    """Replace the ledger rows of ``identities`` by ``rows`` inside the caller's transaction."""
    table = conflicts_table(wh)
    wh.create(conn, table)
    if not identities.is_empty():
        tmp = wh.temp_table(conn, "gongshu_conflict_ids", identities.select(IDENTITY).unique())
        ids = ", ".join(wh.quote(c) for c in IDENTITY)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', CONFLICTS)} WHERE ({ids}) IN (SELECT {ids} FROM {tmp})"))
        conn.execute(sa.text(f"DROP TABLE {tmp}"))
    wh.insert(conn, table, rows)


@dataclass
class ConsistencyRun:
    rates: pl.DataFrame
    conflicts_today: pl.DataFrame
    changes: ConflictChanges


def _copy_batches(wh: Warehouse, conn: sa.Connection, catalogue, lib, batch_date: dt.date) -> list[tuple]:
    """(resource, batch id, std rows) of every resource carrying copies of ``lib``'s elements, as merged
    for ``batch_date``."""
    out = []
    for resource in catalogue.resources_of(lib.code):
        if not copies(catalogue, resource):
            continue
        batch = mergeable_batch(wh, conn, resource, batch_date)
        if batch is not None and wh.exists("std", resource.id):
            # only what the comparison uses: the key and the copied elements (and the row number)
            out.append((resource, batch.batch_id, read_std(wh, conn, catalogue, resource, batch.batch_id,
                                                           [*lib.key, *copies(catalogue, resource)], latest=True)))
    return out


def _observe(catalogue, lib, batches: list[tuple],
             current: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame] | None:
    """(rates, conflicts, every identity compared with its batch) of ``batches`` against ``current``,
    what the base library held for their entities on the date (whatever order dates were merged in);
    None: nothing to compare."""
    if not batches:
        return None
    result = compare_copies(catalogue, lib, batches, current)
    compared = pl.concat([
        f.join(current.select(lib.key), on=lib.key, how="semi").select(
            pl.lit(lib.code).alias("library"), pl.lit(code).alias("element"),
            pl.lit(resource.department).alias("department"), entity_key(lib).alias("entity_key"),
            pl.lit(batch_id).alias("batch_id"))
        for resource, batch_id, f in batches for code in copies(catalogue, resource)
    ])
    return result.rates, result.conflicts, compared


def _as_observations(conflicts: pl.DataFrame, matches: pl.DataFrame, batch_date: dt.date) -> pl.DataFrame:
    return pl.concat([
        conflicts.select(*IDENTITY, pl.lit(batch_date).alias("batch_date"), "batch_id", "row_no", "resource_id",
                         "authority", "value", "authority_value", pl.lit(True).alias("conflict")),
        matches.select(*IDENTITY, pl.lit(batch_date).alias("batch_date"), "batch_id",
                       pl.lit(None, pl.Int64).alias("row_no"), pl.lit(None, pl.String).alias("resource_id"),
                       pl.lit(None, pl.String).alias("authority"), pl.lit(None, pl.String).alias("value"),
                       pl.lit(None, pl.String).alias("authority_value"), pl.lit(False).alias("conflict")),
    ], how="vertical_relaxed").cast(OBSERVATION_SCHEMA)


CONSISTENCY_CHUNK_KEYS = 200_000  # delivered entities compared at a time (the merge's GONGSHU_MERGE_CHUNK_KEYS in the job)


def check_library_consistency(wh: Warehouse, catalogue, library: str, batch_date: dt.date,
                              chunk_keys: int = CONSISTENCY_CHUNK_KEYS) -> ConsistencyRun:
    """Compare every non-authoritative copy delivered on ``batch_date`` with what the base library held
    that day, record the date's observations and fold the ledger rows they touch, all in one transaction.

    A backfill (dates after ``batch_date`` were merged already) checks those dates again in the same
    transaction, oldest first: what they showed can change with what ``batch_date`` delivered (an
    authority's value that holds on, a difference that a later match closes). A nightly run has no later
    dates and checks one date; a backfill run newest first checks each later date again per date.

    The copies are compared about ``chunk_keys`` delivered entities at a time (:func:`_key_slices`),
    the base library read for those entities only, and only the comparisons that may close a
    difference kept between slices."""
    lib = catalogue.library(library)
    with wh.begin() as conn:
        wh.create(conn, observations_table(wh))
        wh.create(conn, conflicts_table(wh))
        wh.create(conn, rates_table(wh))
        run = _check_date(wh, conn, catalogue, lib, batch_date, chunk_keys)
        for day in sorted(d for d in merged_batches(wh, conn, library) if d > batch_date):
            _check_date(wh, conn, catalogue, lib, day, chunk_keys)
        open_total = wh.scalar(conn, f"SELECT COUNT(*) FROM {wh.qualified('quality', CONFLICTS)} "
                                     "WHERE library = :l AND status = 'open'", {"l": library})
    run.changes.open_total = int(open_total or 0)
    return run


def _key_slices(lib, batches: list[tuple], chunk_keys: int) -> tuple[int, Iterator[list[tuple]], pl.DataFrame]:
    """``batches`` cut into ⌈entities / ``chunk_keys``⌉ slices by a hash of the entity key: every copy of
    one entity (in every resource) is in the same slice, with the same resources in every slice. Returns
    how many, the slices (each cut when it is taken), and the keys with their slice
    (:data:`warehouse.base.SLICE`), to read the base library for them."""
    n = max(-(-sum(f.height for _, _, f in batches) // max(chunk_keys, 1)), 1)
    if n == 1:
        keys = pl.concat([f.select(lib.key) for _, _, f in batches]) if batches else pl.DataFrame()
        return 1, iter([batches]), keys.with_columns(pl.lit(0, pl.Int32).alias(SLICE))
    parts = [(r, b, f, slice_numbers(f, [pl.col(k) for k in lib.key], n)) for r, b, f in batches]
    keys = pl.concat([f.select(lib.key).with_columns(p.cast(pl.Int32).alias(SLICE)) for _, _, f, p in parts])
    return n, ([(r, b, f.filter(p == i)) for r, b, f, p in parts] for i in range(n)), keys


def _slices_compared(wh: Warehouse, conn: sa.Connection, catalogue, lib, batch_date: dt.date,
                     chunk_keys: int) -> Iterator[tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]]:
    """(rates, conflicts, every identity compared) of each slice of the copies merged for ``batch_date``,
    against what the base library held for their entities that day (:func:`_observe`)."""
    batches = _copy_batches(wh, conn, catalogue, lib, batch_date)
    n, slices, keys = _key_slices(lib, batches, chunk_keys)
    used = set(lib.key) | {code for resource, _, _ in batches for code in copies(catalogue, resource)}
    held = read_as_of_slices(wh, conn, lib, keys, n, batch_date, used) if batches else iter([pl.DataFrame()])
    del keys  # (loaded into the database when the first slice is read)
    for part, current in zip(slices, held, strict=True):
        observed = _observe(catalogue, lib, part, current)
        if observed is not None:
            yield observed


def _add_rates(total: pl.DataFrame | None, part: pl.DataFrame) -> pl.DataFrame:
    """Rates of two slices added up (every slice holds the same resources and elements, in the same order)."""
    if total is None:
        return part
    return total.with_columns(pl.col("compared") + part.get_column("compared"),
                              pl.col("matched") + part.get_column("matched"))


def date_rates(wh: Warehouse, catalogue, library: str, batch_date: dt.date,
               chunk_keys: int = CONSISTENCY_CHUNK_KEYS) -> pl.DataFrame:
    """The 一数一源 rates (RATE_SCHEMA) of the copies merged for ``batch_date`` against what the base library
    held that day, computed as :func:`check_library_consistency` computes them but neither stored nor
    observed: for a batch whose rates were never stored (checked before they were)."""
    rates = None
    with wh.engine.connect() as conn:
        for part, _, _ in _slices_compared(wh, conn, catalogue, catalogue.library(library), batch_date, chunk_keys):
            rates = _add_rates(rates, part)
    return rates if rates is not None else pl.DataFrame(schema=RATE_SCHEMA)


def _check_date(wh: Warehouse, conn: sa.Connection, catalogue, lib, batch_date: dt.date,
                chunk_keys: int = CONSISTENCY_CHUNK_KEYS) -> ConsistencyRun:
    """One date's comparison, observations, rates and the ledger rows they touch (inside the caller's
    transaction)."""
    library = lib.code
    obs_name = wh.qualified("quality", OBSERVATIONS)
    cols = ", ".join(wh.quote(c) for c in OBSERVATION_SCHEMA)
    known = wh.read(conn, f"SELECT {cols} FROM {obs_name} WHERE library = :l", OBSERVATION_SCHEMA, {"l": library})
    earlier = known.filter(pl.col("conflict") & (pl.col("batch_date") != batch_date)).select(IDENTITY)
    rates, found_parts, match_parts = None, [], []
    for slice_rates, found, compared in _slices_compared(wh, conn, catalogue, lib, batch_date, chunk_keys):
        found = found.cast(CONFLICT_SCHEMA)
        # a match is kept only for an identity that differed on some date: it may be what closes it
        # (an identity's comparisons and differences are all in one slice)
        differed = pl.concat([earlier, found.select(IDENTITY)]).unique()
        match_parts.append(compared.join(found, on=IDENTITY, how="anti").join(differed, on=IDENTITY, how="semi"))
        found_parts.append(found)
        rates = _add_rates(rates, slice_rates)
    rates = rates if rates is not None else pl.DataFrame(schema=RATE_SCHEMA)
    conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', RATES)} WHERE library = :l AND batch_date = :d"),
                 {"l": library, "d": batch_date})
    wh.insert(conn, rates_table(wh), rates.with_columns(pl.lit(batch_date).alias("batch_date")).select(list(RATES_SCHEMA)))
    found = pl.concat(found_parts) if found_parts else pl.DataFrame(schema=CONFLICT_SCHEMA)
    matches = pl.concat(match_parts) if match_parts else pl.DataFrame(schema={c: pl.String for c in [*IDENTITY, "batch_id"]})
    today = _as_observations(found, matches, batch_date)
    replaced = known.filter(pl.col("batch_date") == batch_date)
    conn.execute(sa.text(f"DELETE FROM {obs_name} WHERE library = :l AND batch_date = :d"), {"l": library, "d": batch_date})
    wh.insert(conn, observations_table(wh), today)
    touched = pl.concat([replaced.select(IDENTITY), today.select(IDENTITY)]).unique()
    history = pl.concat([known.filter(pl.col("batch_date") != batch_date), today]).join(touched, on=IDENTITY, how="semi")
    before = read_conflicts(wh, conn, library).join(touched, on=IDENTITY, how="semi")
    rows = fold_conflicts(history)
    write_conflicts(wh, conn, touched, rows)
    was = before.select(*IDENTITY, pl.col("status").alias("was"), pl.col("times_seen").alias("was_seen"))
    now = rows.join(was, on=IDENTITY, how="left")
    return ConsistencyRun(rates, found, ConflictChanges(
        opened=now.filter(pl.col("was").is_null()).height,
        seen_again=now.filter((pl.col("was") == "open") & (pl.col("times_seen") > pl.col("was_seen"))).height,
        closed=now.filter((pl.col("was") == "open") & (pl.col("status") == "closed")).height,
        open_total=0,
    ))
