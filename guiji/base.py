"""基础库 storage: merge a batch date by authority, in one transaction, whatever order dates come in."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Library
from guiji.merge import fold_history, incoming_values, plan_merge
from warehouse.base import (
    MERGE_LOG,
    MERGE_LOG_SCHEMA,
    VALID_FROM,
    VALID_TO,
    base_schema,
    base_table,
    key_match,
    lineage,
    merge_log_table,
    merged_batches,
    value_elements,
)
from warehouse.ods import BATCHES
from warehouse.std import mergeable_batch, read_std, std_schema
from warehouse.store import Warehouse

MERGE_CHUNK_KEYS = 50_000  # entities merged at a time (Settings.merge_chunk_keys, GONGSHU_MERGE_CHUNK_KEYS)
KeyRange = tuple[tuple | None, tuple | None]  # [lo, hi) of a library's key; None: open on that side
WHOLE: KeyRange = (None, None)


@dataclass
class MergeResult:
    library: str
    batch_ids: list[str]
    incoming: int
    new_entities: int
    changed_entities: int
    unchanged: int
    rebuilt_entities: int
    current_rows: int
    total_rows: int
    merged_before: bool = False  # the same batches were merged for this date already: nothing to do


def _used_columns(catalogue: Catalogue, lib: Library, resource) -> list[str]:
    """What the merge takes from a std batch: keys, discriminator, the resource's authoritative values."""
    auth = catalogue.authoritative_elements(resource)
    return [*lib.key, *([lib.discriminator.element] if lib.discriminator else []), *auth]


def _facts(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, lib: Library, batch_ids: list[str],
           keys: pl.DataFrame | None = None, key_range: KeyRange = WHOLE,
           staged: dict[str, str] | None = None, changed_only: set[str] = frozenset()) -> pl.DataFrame:
    """The authoritative values the batches ``batch_ids`` (of one date) delivered, one row per entity
    (only the entities in ``keys``, when given, and in ``key_range``; a batch in ``staged`` is read
    from its copy there, :func:`_stage`). For the batches in ``changed_only`` only the records
    standardised for them: not those carried unchanged from the previous batch (:func:`_carried_held`)."""
    if not batch_ids:
        return incoming_values(catalogue, lib, [])
    rows = range_condition(wh, lib.key, key_range)
    batches = []
    for resource, batch_id, batch_no in _std_batches(wh, conn, catalogue, lib, batch_ids):
        frame = read_std(wh, conn, catalogue, resource, batch_id, _used_columns(catalogue, lib, resource),
                         latest=True, rows=rows, table=(staged or {}).get(batch_id),
                         carried=batch_id not in changed_only)
        if keys is not None:
            frame = frame.join(keys, on=lib.key, how="semi")
        batches.append((resource, batch_no, frame))
    return incoming_values(catalogue, lib, batches)


def _std_batches(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, lib: Library,
                 batch_ids: list[str]) -> list[tuple]:
    """(resource, batch id, batch number) of the batches that give the library authoritative values."""
    if not batch_ids:
        return []
    info = wh.read(conn, f"SELECT batch_id, batch_no, resource_id FROM {wh.qualified('ods', BATCHES)} "
                   f"WHERE batch_id IN ({', '.join(f':b{i}' for i in range(len(batch_ids)))})",
                   {"batch_id": pl.String(), "batch_no": pl.Int64(), "resource_id": pl.String()},
                   {f"b{i}": b for i, b in enumerate(batch_ids)})
    by_id = {r.id: r for r in catalogue.resources_of(lib.code)}
    out = []
    for row in info.sort("batch_id").iter_rows(named=True):
        resource = by_id.get(row["resource_id"])
        if resource is None or not catalogue.authoritative_elements(resource):
            continue
        out.append((resource, row["batch_id"], row["batch_no"]))
    return out


def _stage(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, lib: Library,
           batch_ids: list[str]) -> dict[str, str]:
    """Copy the rows the merge reads of each batch into a temporary table indexed by the library's
    key, once: each key range then reads its rows by index, where the std table (indexed by batch)
    would be scanned for the whole batch once per range. {batch id: quoted table}."""
    out = {}
    for i, (resource, batch_id, _) in enumerate(_std_batches(wh, conn, catalogue, lib, batch_ids)):
        used = set(_used_columns(catalogue, lib, resource)) | set(resource.key) | {"_row_no"}
        cols = ", ".join(["_batch_id", *(wh.quote(c) for c in std_schema(catalogue, resource) if c in used)])
        name = wh.quote(f"gongshu_merge_stage_{i}")
        conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        conn.execute(sa.text(f"CREATE TEMPORARY TABLE {name}{' ON COMMIT DROP' if wh.is_postgres else ''} AS "
                             f"SELECT {cols} FROM {wh.qualified('std', resource.id)} WHERE _batch_id = :b"),
                     {"b": batch_id})
        conn.execute(sa.text(f"CREATE INDEX {wh.quote(f'gongshu_merge_stage_{i}_key')} ON {name} "
                             f"({', '.join(wh.quote(k) for k in lib.key)})"))
        if wh.is_postgres:
            conn.execute(sa.text(f"ANALYZE {name}"))  # temporary tables are never analysed on their own
        out[batch_id] = name
    return out


def key_ranges(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, lib: Library, batch_ids: list[str],
               chunk_keys: int) -> list[KeyRange]:
    """Consecutive key ranges [lo, hi) of at most ``chunk_keys`` of the entities the batches deliver,
    covering every key (the first is open below, the last above): the merge takes one at a time.

    The boundaries are every ``chunk_keys``-th distinct key, counted in the database (a window over
    the batches' keys), and the ranges are compared there too, in the same collation: only the
    boundaries reach the client, however many entities there are.
    """
    sources = _std_batches(wh, conn, catalogue, lib, batch_ids)
    if not sources:
        return [WHOLE]
    keys = ", ".join(wh.quote(k) for k in lib.key)
    union = " UNION ".join(f"SELECT {keys} FROM {wh.qualified('std', r.id)} WHERE _batch_id = :s{i}"
                           for i, (r, _, _) in enumerate(sources))
    schema = {k: base_schema(lib)[k] for k in lib.key}
    bounds = wh.read(
        conn,
        f"SELECT {keys} FROM (SELECT {keys}, ROW_NUMBER() OVER (ORDER BY {keys}) AS gongshu_rn FROM ({union}) u) r "
        f"WHERE gongshu_rn > 1 AND (gongshu_rn - 1) % :n = 0 ORDER BY {keys}",
        schema, {"n": chunk_keys, **{f"s{i}": b for i, (_, b, _) in enumerate(sources)}},
    )
    edges: list[tuple | None] = [None, *bounds.iter_rows(), None]
    return list(zip(edges[:-1], edges[1:], strict=True))


def range_condition(wh: Warehouse, key: list[str], key_range: KeyRange, alias: str = "") -> tuple[str, dict] | None:
    """SQL condition (and its parameters) for keys in ``key_range`` (None: every key)."""
    lo, hi = key_range
    if lo is None and hi is None:
        return None
    cols = [f"{alias}{wh.quote(k)}" for k in key]
    lhs = cols[0] if len(cols) == 1 else f"({', '.join(cols)})"
    conds, params = [], {}
    for name, op, values in (("gongshu_lo", ">=", lo), ("gongshu_hi", "<", hi)):
        if values is None:
            continue
        names = [f"{name}{i}" for i in range(len(values))]
        rhs = ", ".join(f":{n}" for n in names)
        conds.append(f"{lhs} {op} {rhs if len(names) == 1 else f'({rhs})'}")
        params.update(zip(names, values, strict=True))
    return " AND ".join(conds), params


@dataclass
class _Chunk:
    """What merging one key range did (summed over the ranges into the merge log)."""

    incoming: int = 0
    new_entities: int = 0
    changed_entities: int = 0
    unchanged: int = 0
    rebuilt_entities: int = 0

    def __iadd__(self, other: _Chunk) -> _Chunk:
        for f in ("incoming", "new_entities", "changed_entities", "unchanged", "rebuilt_entities"):
            setattr(self, f, getattr(self, f) + getattr(other, f))
        return self


def merge_library(wh: Warehouse, catalogue: Catalogue, library: str, batch_date: dt.date, *,
                  chunk_keys: int = MERGE_CHUNK_KEYS) -> MergeResult:
    """Merge every resource's mergeable batch of ``batch_date`` into base library ``library``.

    The library's state depends only on what was delivered, never on the order batch dates are
    merged in: a date after every version of an entity extends its history (:func:`plan_merge`,
    the usual night); a date inside its history — a backfill, or a re-delivery that replaces a
    batch merged before — folds that entity's history again from the date on, from the facts of
    every date merged since (:func:`fold_history`). All in one transaction; merging the same
    batches for a date again changes nothing.

    Entities are merged by key range, at most ``chunk_keys`` delivered entities at a time
    (:func:`key_ranges`): incoming values, the versions they follow, plan, fold and writes of one
    range before the next, so memory is bounded by the chunk, not the library; every step works
    entity by entity, so the result is the same as in one piece.
    """
    lib = catalogue.library(library)
    table, log = base_table(wh, lib), merge_log_table(wh)
    base = wh.qualified("base", lib.code)
    with wh.engine.connect() as conn:
        chosen = [b for b in (mergeable_batch(wh, conn, r, batch_date) for r in catalogue.resources_of(library)) if b]
        batch_ids = sorted(b.batch_id for b in chosen)
        before = merged_batches(wh, conn, library)
        if before.get(batch_date) == batch_ids and wh.exists("base", lib.code):
            return MergeResult(lib.code, batch_ids, 0, 0, 0, 0, 0, *_counts(wh, conn, base), merged_before=True)
        ranges = key_ranges(wh, conn, catalogue, lib, batch_ids, chunk_keys)
        changed_only = _carried_held(catalogue, lib, chosen, before, batch_date)
    replaced = [b for b in before.get(batch_date, []) if b not in batch_ids]
    done = _Chunk()
    with wh.begin() as conn, wh.engine.connect() as read:
        wh.create(conn, table)
        wh.create(conn, log)
        # committed std rows: on PostgreSQL read beside the transaction (a bulk read, ADBC), on
        # SQLite through it (one connection at a time); in several ranges, from copies indexed by
        # the key, in the transaction
        staged = _stage(wh, conn, catalogue, lib, batch_ids) if len(ranges) > 1 else {}
        # a first load has no versions to look up, in any range (the ranges' entities are disjoint)
        empty = wh.scalar(conn, f"SELECT 1 FROM {base} LIMIT 1") is None
        source = read if wh.is_postgres and not staged else conn
        for key_range in ranges:
            done += _merge_range(wh, conn, source, catalogue, lib, batch_date, batch_ids, replaced, before, key_range,
                                 staged, empty, changed_only)
        for name in staged.values():
            conn.execute(sa.text(f"DROP TABLE {name}"))
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('audit', MERGE_LOG)} WHERE library = :l AND batch_date = :d"),
                     {"l": lib.code, "d": batch_date})
        wh.insert(conn, log, pl.DataFrame([{
            "library": lib.code, "batch_date": batch_date, "batch_ids": ",".join(batch_ids),
            "incoming": done.incoming, "new_entities": done.new_entities,
            "changed_entities": done.changed_entities, "unchanged": done.unchanged,
            "rebuilt_entities": done.rebuilt_entities,
        }], schema=MERGE_LOG_SCHEMA))
        counts = _counts(wh, conn, base)
    return MergeResult(lib.code, batch_ids, done.incoming, done.new_entities, done.changed_entities,
                       done.unchanged, done.rebuilt_entities, *counts)


def _merge_range(wh: Warehouse, conn: sa.Connection, source: sa.Connection, catalogue: Catalogue, lib: Library,
                 batch_date: dt.date, batch_ids: list[str], replaced: list[str], before: dict[dt.date, list[str]],
                 key_range: KeyRange, staged: dict[str, str], empty: bool, changed_only: set[str]) -> _Chunk:
    """Merge the entities of one key range (inside the merge's transaction ``conn``)."""
    base = wh.qualified("base", lib.code)
    table = base_table(wh, lib)
    incoming = _facts(wh, source, catalogue, lib, batch_ids, key_range=key_range, staged=staged,
                      changed_only=changed_only)
    keys = incoming.select(lib.key)
    if replaced:  # entities a replaced batch of this date had set are folded again as well
        keys = pl.concat([keys, _keys_from_batches(wh, conn, lib, replaced, key_range)]).unique()
    versions = pl.DataFrame(schema=base_schema(lib)) if empty else _versions_from(wh, conn, lib, keys, batch_date)
    if any(d > batch_date for d in before):
        # a backfill: later dates were merged already, and what they delivered (changed or not)
        # follows this date's values in every entity's history
        fold_keys = keys.unique()
        tail = keys.clear()
    else:
        # the usual night: the entity is new, or its one open version started before this date
        tail = versions.group_by(lib.key).agg(
            pl.len().alias("__n"), pl.col(VALID_FROM).max().alias("__from"),
            pl.col(VALID_TO).is_null().all().alias("__open"),
        ).filter((pl.col("__n") == 1) & (pl.col("__from") < batch_date) & pl.col("__open")).select(lib.key)
        fold_keys = versions.select(lib.key).unique().join(tail, on=lib.key, how="anti")
        if replaced:
            fold_keys = pl.concat([fold_keys, _keys_from_batches(wh, conn, lib, replaced, key_range)]).unique()
    plan = plan_merge(lib, incoming.join(fold_keys, on=lib.key, how="anti"),
                      versions.join(tail, on=lib.key, how="semi"), batch_date)
    rebuilt = _fold(wh, source, catalogue, lib, batch_date, incoming, fold_keys, versions, before, key_range)
    key_list = ", ".join(wh.quote(k) for k in lib.key)
    if plan.close.height:
        ctmp = wh.temp_table(conn, "gongshu_close_keys", plan.close)
        conn.execute(sa.text(
            f"UPDATE {base} SET {VALID_TO} = :d WHERE {VALID_TO} IS NULL AND ({key_list}) IN "
            f"(SELECT {key_list} FROM {ctmp})"), {"d": batch_date})
        conn.execute(sa.text(f"DROP TABLE {ctmp}"))
    if rebuilt is not None:
        old = versions.join(fold_keys, on=lib.key, how="semi").select(*lib.key, VALID_FROM)
        rtmp = wh.temp_table(conn, "gongshu_refold_versions", old)
        conn.execute(sa.text(
            f"DELETE FROM {base} WHERE ({key_list}, {VALID_FROM}) IN (SELECT {key_list}, {VALID_FROM} FROM {rtmp})"))
        conn.execute(sa.text(f"DROP TABLE {rtmp}"))
        wh.insert(conn, table, rebuilt)
    wh.insert(conn, table, plan.insert)
    return _Chunk(incoming.height, plan.new_entities, plan.changed_entities, plan.unchanged, fold_keys.height)


def _carried_held(catalogue: Catalogue, lib: Library, chosen: list, before: dict[dt.date, list[str]],
                  batch_date: dt.date) -> set[str]:
    """The batches whose carried records the merge of ``batch_date`` may leave out.

    A carried record is the same delivery as in the batch it was compared with (``carried_from``);
    leaving it out is "not delivered", which changes nothing exactly when the library holds that
    batch's values already: that batch is the resource's last one merged before ``batch_date``, no
    date after ``batch_date`` is merged (a backfill folds every later date again, from full facts),
    and no other resource of the library is an authority for the same values (else which of two
    deliveries of one date wins could change). Otherwise the carried records are read as delivered
    (:func:`warehouse.std.read_std`), which is always right, only slower.
    """
    if any(d > batch_date for d in before):
        return set()
    resources = catalogue.resources_of(lib.code)
    auth = {r.id: catalogue.authoritative_elements(r) for r in resources}

    def shared(rid: str) -> bool:
        """Another resource is an authority for one of the same values (for a discriminated library:
        the same element for an overlapping set of discriminator values)."""
        return any(code in auth[o] and (values is None or auth[o][code] is None or set(values) & set(auth[o][code]))
                   for o in auth if o != rid for code, values in auth[rid].items())

    out = set()
    for b in chosen:
        if not b.rows_carried or b.carried_from is None:
            continue
        resource = next(r for r in resources if r.id == b.batch_id.rsplit(".", 2)[0])
        if shared(resource.id):
            continue
        earlier = [d for d, ids in before.items() if d < batch_date and any(i.rsplit(".", 2)[0] == resource.id
                                                                           for i in ids)]
        if earlier and b.carried_from in before[max(earlier)]:
            out.add(b.batch_id)
    return out


def _fold(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, lib: Library, batch_date: dt.date,
          incoming: pl.DataFrame, keys: pl.DataFrame, versions: pl.DataFrame,
          before: dict[dt.date, list[str]], key_range: KeyRange = WHOLE) -> pl.DataFrame | None:
    """The refolded versions of ``keys`` from the version before ``batch_date`` on (None: no keys)."""
    if keys.height == 0:
        return None
    mine = versions.join(keys, on=lib.key, how="semi")
    seed = mine.filter(pl.col(VALID_FROM) < batch_date)
    facts = [(batch_date, incoming.join(keys, on=lib.key, how="semi"))]
    facts += [(d, _facts(wh, conn, catalogue, lib, ids, keys, key_range)) for d, ids in sorted(before.items()) if d > batch_date]
    return fold_history(lib, seed, facts)


def _versions_from(wh: Warehouse, conn: sa.Connection, lib: Library, keys: pl.DataFrame,
                   batch_date: dt.date) -> pl.DataFrame:
    """Every version of the entities in ``keys`` that is valid on or after the day before
    ``batch_date``: the version a new fact would follow, and any that start on or after it."""
    schema = base_schema(lib)
    if keys.height == 0 or not wh.exists("base", lib.code) or \
            wh.scalar(conn, f"SELECT 1 FROM {wh.qualified('base', lib.code)} LIMIT 1") is None:
        return pl.DataFrame(schema=schema)  # nothing to look up (a first load)
    tmp = wh.temp_table(conn, "gongshu_lookup_keys", keys.select(lib.key))
    cols = ", ".join(f"b.{wh.quote(c)}" for c in schema)
    frame = wh.read(
        conn,
        f"SELECT {cols} FROM {wh.qualified('base', lib.code)} b JOIN {tmp} t ON {key_match(wh, 'b', 't', lib.key)} "
        f"WHERE b.{VALID_TO} IS NULL OR b.{VALID_TO} >= :d",
        schema, {"d": batch_date},
    )
    conn.execute(sa.text(f"DROP TABLE {tmp}"))
    return frame


def _keys_from_batches(wh: Warehouse, conn: sa.Connection, lib: Library, batch_ids: list[str],
                       key_range: KeyRange = WHOLE) -> pl.DataFrame:
    """Keys of the entities (in ``key_range``) any of whose values came from one of ``batch_ids``."""
    schema = {k: base_schema(lib)[k] for k in lib.key}
    if not wh.exists("base", lib.code) or not value_elements(lib):
        return pl.DataFrame(schema=schema)
    nos = wh.read(conn, f"SELECT batch_no FROM {wh.qualified('ods', BATCHES)} WHERE batch_id IN "
                  f"({', '.join(f':b{i}' for i in range(len(batch_ids)))})", {"batch_no": pl.Int64()},
                  {f"b{i}": b for i, b in enumerate(batch_ids)}).get_column("batch_no").to_list()
    if not nos:
        return pl.DataFrame(schema=schema)
    listed = ", ".join(str(int(n)) for n in nos)
    where = " OR ".join(f"{wh.quote(lineage(e)[0])} IN ({listed})" for e in value_elements(lib))
    in_range, params = range_condition(wh, lib.key, key_range) or ("1 = 1", {})
    keys = ", ".join(wh.quote(k) for k in lib.key)
    return wh.read(conn, f"SELECT DISTINCT {keys} FROM {wh.qualified('base', lib.code)} WHERE ({where}) AND {in_range}",
                   schema, params)


def _counts(wh: Warehouse, conn: sa.Connection, base: str) -> tuple[int, int]:
    current = wh.scalar(conn, f"SELECT COUNT(*) FROM {base} WHERE {VALID_TO} IS NULL")
    total = wh.scalar(conn, f"SELECT COUNT(*) FROM {base}")
    return int(current), int(total)
