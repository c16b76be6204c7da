"""共享/开放 layer: one masked dataset per base library and share/open class the catalogue declares.

``share/<library>_<kind>`` (kind: shared = 无条件共享, restricted = 有条件共享, open = 开放) is
built from the base-library versions valid on the partition date, masked by the policy of
``desensitize/policy.py``, and written to the warehouse layer ``share`` in one transaction:
incrementally (rows whose content hash changed are deleted and inserted; a rerun writes nothing),
never moving a dataset back to an older date than it already shows. When the table was built for an
earlier date of the same library state, policy and key, only the entities whose version changed in
between are masked again (:func:`_apply_changes`); otherwise every entity is. Open outputs are also
exported as files (``desensitize/export.py``) after k-anonymity (``desensitize/kanon.py``).

Every asset carries a blocking check that scans what it published for raw identifiers
(``desensitize/leaks.py``); open outputs also check k-anonymity on the exported file.
"""


import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import sqlalchemy as sa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from assets.checks import with_batch_date
from assets.factory import preview
from assets.keys import Layer, base_key, label_kinds, labelled, ods_key, owner, std_key
from assets.resources import OpenDataResource, PseudonymKeyResource, WarehouseResource
from catalog.loader import Catalogue
from catalog.models import Labelled, OutputKind, Sensitivity
from desensitize.export import ExportFiles, write_open_export_pages
from desensitize.kanon import KAnonymity
from desensitize.leaks import Finding, Needles, scan_file, scan_table, scan_text
from desensitize.lookup import ValueSet
from desensitize.masking import (
    SHARE_CHUNK_ROWS,
    MaskedOutput,
    MissingKeyError,
    mask_snapshot,
    open_pages,
    with_row_hash,
)
from desensitize.policy import ROW_HASH_COLUMN, OutputPolicy, share_policies
from desensitize.pseudonym import PseudonymKey
from warehouse.base import VALID_FROM, VALID_TO, as_date, base_schema, merges_digest, valid_on
from warehouse.store import Warehouse, sql_type

OUTPUTS = "outputs"  # share.outputs: one row per dataset — its snapshot date, rows, key id, policy
BUILD_LOG = "share_builds"  # audit.share_builds: one row per build
OUTPUTS_SCHEMA: dict[str, pl.DataType] = {
    "output": pl.String(), "library": pl.String(), "kind": pl.String(), "as_of": pl.Date(), "rows": pl.Int64(),
    "key_id": pl.String(), "policy": pl.String(), "base_merges": pl.String(),
}
BUILD_LOG_SCHEMA: dict[str, pl.DataType] = {
    "output": pl.String(), "as_of": pl.Date(), "action": pl.String(), "base_rows": pl.Int64(),
    "rows": pl.Int64(), "inserted": pl.Int64(), "deleted": pl.Int64(), "generalised": pl.Int64(),
    "suppressed": pl.Int64(), "key_id": pl.String(), "policy": pl.String(), "built_at": pl.Datetime("us"),
    "mode": pl.String(),
}
INCREMENTAL_PREVIEW_ROWS = 5_000  # rows of build.frame after an incremental build (the preview's)


class BuildAction(Labelled):
    """What a build did to its output table (``audit.share_builds.action``)."""

    written = "written", "已写入变化"
    unchanged = "unchanged", "内容未变, 未写入"
    older = "older", "已有更新日期的快照, 未改写"


class BuildMode(Labelled):
    """How a build found the output's new content (``audit.share_builds.mode``)."""

    full = "full", "全量: 逐页脱敏全部有效记录并与原表比对"
    incremental = "incremental", "增量: 仅重新脱敏上次快照日以来版本有变化的实体"


# --- resources ---------------------------------------------------------------------------------------


# --- storage -----------------------------------------------------------------------------------------


def share_key(policy: OutputPolicy) -> AssetKey:
    return AssetKey(["share", policy.name])


def _table(wh: Warehouse, layer: str, name: str, schema: dict[str, pl.DataType], primary_key=(),
           indexes=()) -> sa.Table:
    # A fresh MetaData each time: a share table's columns follow its policy, which may change.
    sch, tname = wh.table_ref(layer, name)
    t = sa.Table(tname, sa.MetaData(), *[sa.Column(n, sql_type(d), primary_key=n in primary_key) for n, d in schema.items()],
                 schema=sch)
    for i, idx in enumerate(indexes):
        sa.Index(f"ix_{layer}_{name}_{i}", *[t.c[c] for c in idx])
    return t


def share_table(wh: Warehouse, policy: OutputPolicy) -> sa.Table:
    schema = {**policy.schema(), ROW_HASH_COLUMN: pl.String()}
    return _table(wh, "share", policy.name, schema, indexes=[[ROW_HASH_COLUMN]])


def _snapshot_select(wh: Warehouse, policy: OutputPolicy) -> tuple[str, dict[str, pl.DataType]]:
    """SELECT (without WHERE) of the base-library columns this output reads, and their types."""
    lib = policy.library
    full = base_schema(lib)
    wanted = list(dict.fromkeys([*lib.key, *(c.column for c in policy.columns),
                                 *([lib.discriminator.element] if lib.discriminator else []), VALID_FROM]))
    schema = {c: full[c] for c in wanted}
    cols = ", ".join(wh.quote(c) for c in schema)
    return f"SELECT {cols} FROM {wh.qualified('base', lib.code)}", schema


def _snapshot_query(wh: Warehouse, policy: OutputPolicy) -> tuple[str, dict[str, pl.DataType]]:
    select, schema = _snapshot_select(wh, policy)
    return f"{select} WHERE {valid_on()}", schema


def read_snapshot(wh: Warehouse, conn: sa.Connection, policy: OutputPolicy, as_of: dt.date) -> pl.DataFrame:
    """The base-library versions valid on ``as_of`` (valid_from ≤ D < valid_to), for this output's columns."""
    query, schema = _snapshot_query(wh, policy)
    if not wh.exists("base", policy.library.code):
        return pl.DataFrame(schema=schema)
    keys = ", ".join(wh.quote(k) for k in policy.library.key)
    return wh.read(conn, f"{query} ORDER BY {keys}", schema, {"d": as_of})


def snapshot_pages(wh: Warehouse, conn: sa.Connection, policy: OutputPolicy, as_of: dt.date,
                   rows: int, *, one_pass: bool = True) -> Iterator[pl.DataFrame]:
    """:func:`read_snapshot` in pages of at most ``rows`` entities, in key order.

    On PostgreSQL (``conn`` a reading connection of its own, :func:`_snapshot_reader`) the snapshot is
    one ordered query read a page at a time (:meth:`Warehouse.read_pages`): at 1 M persons 1.3 s
    against 5.2 s for pages that each continue after the last key of the one before (an index range
    per page), which SQLite keeps (its pages are read on the connection that writes the output) and
    so does a caller that may stop early (``one_pass=False``: leaving a COPY half read cancels it)."""
    query, schema = _snapshot_query(wh, policy)
    key = policy.library.key
    if not wh.exists("base", policy.library.code):
        yield pl.DataFrame(schema=schema)
        return
    cols = [wh.quote(k) for k in key]
    if one_pass and wh.is_postgres:
        yield from wh.read_pages(conn, f"{query} ORDER BY {', '.join(cols)}", schema, rows, {"d": as_of})
        return
    lhs = cols[0] if len(cols) == 1 else f"({', '.join(cols)})"
    rhs = ", ".join(f":gongshu_after{i}" for i in range(len(key)))
    after: tuple | None = None
    while True:
        cond = "" if after is None else f" AND {lhs} > {rhs if len(key) == 1 else f'({rhs})'}"
        params = {"d": as_of, **({} if after is None else {f"gongshu_after{i}": v for i, v in enumerate(after)})}
        page = wh.read(conn, f"{query}{cond} ORDER BY {', '.join(cols)} LIMIT {int(rows)}", schema, params)
        if page.height or after is None:
            yield page
        if page.height < rows:
            return
        after = page.select(key).row(-1)


@dataclass
class ShareBuild:
    """What one build of one output did."""

    policy: OutputPolicy
    as_of: dt.date
    action: BuildAction
    masked: MaskedOutput
    inserted: int = 0
    deleted: int = 0
    key_id: str | None = None
    files: ExportFiles | None = None
    table_as_of: dt.date | None = None
    notes: list[str] = field(default_factory=list)
    mode: BuildMode = BuildMode.full
    preview: pl.DataFrame | None = None  # an open release's first rows as published (sorted)

    @property
    def frame(self) -> pl.DataFrame:
        """The output's first rows (the preview's): as published for an open release, else as built."""
        return self.preview if self.preview is not None else self.masked.frame


def _current_columns(conn: sa.Connection, table: sa.Table) -> list[str] | None:
    insp = sa.inspect(conn)
    if not insp.has_table(table.name, schema=table.schema):
        return None
    return [c["name"] for c in insp.get_columns(table.name, schema=table.schema)]


def build_share_output(
    wh: Warehouse,
    catalogue: Catalogue,
    policy: OutputPolicy,
    as_of: dt.date,
    *,
    key: PseudonymKey | None,
    open_root: Path | None = None,
    needles: Needles | None = None,
    chunk_rows: int = SHARE_CHUNK_ROWS,
) -> ShareBuild:
    """Mask the base rows valid on ``as_of`` and bring ``share.<output>`` (and open files) up to date.

    An output with keyed columns (tokens, format-preserving IDs) is not built without ``key``
    (:class:`MissingKeyError`): nothing is written, so the tokens already published stay as they are.

    Shared and restricted outputs are masked row by row, so they are built ``chunk_rows`` entities
    at a time (:func:`snapshot_pages`, in key order): each page is masked, hashed and written before
    the next is read, all in the output's one transaction, and compared with what the table held
    before in the database (:class:`_Diff`). ``build.frame`` then holds the output's first ``chunk_rows``
    rows (the preview's). An open output is k-anonymised as a whole (a quasi-identifier group spans the
    city): it is masked in one piece and written in pages.
    """
    if policy.keyed and key is None:
        raise MissingKeyError(policy)
    real_ids = None
    if any(c.rule.spec.startswith("fpe_id") for c in policy.columns):
        real_ids = (needles or Needles.from_warehouse(wh, catalogue)).ids  # hashed once for every page
    table = share_table(wh, policy)
    outputs = _table(wh, "share", OUTPUTS, OUTPUTS_SCHEMA, primary_key=["output"])
    log = _table(wh, "audit", BUILD_LOG, BUILD_LOG_SCHEMA)
    fingerprint = policy.fingerprint()
    key_id = key.key_id if key and policy.keyed else None
    _ensure(wh, [outputs, log])
    with wh.begin() as conn, _snapshot_reader(wh, conn) as read:
        state = conn.execute(sa.text(f"SELECT as_of, rows, key_id, policy, base_merges "
                                     f"FROM {wh.qualified('share', OUTPUTS)} WHERE output = :o"),
                             {"o": policy.name}).one_or_none()
        stored_as_of = as_date(state[0]) if state else None
        older = stored_as_of is not None and stored_as_of > as_of
        # what the library's versions valid on as_of are made of, read in the snapshot the pages come from
        merges = merges_digest(wh, read, policy.library.code, as_of)
        notes, diff, masked, mode, counts = [], None, None, BuildMode.full, (0, 0)
        if not older:
            existing = _current_columns(conn, table)
            if existing is not None and existing != [c.name for c in table.columns]:
                conn.execute(sa.text(f"DROP TABLE {wh.qualified('share', policy.name)}"))
                notes.append("输出列随策略变化, 表已重建")
                existing = None
            if existing is None:
                wh.create(conn, table)
            prior = None if existing is None else _incremental_from(wh, read, policy, state, key_id, fingerprint,
                                                                     real_ids is not None)
            if prior is not None:
                applied = _apply_changes(wh, conn, read, table, policy, prior, as_of, key, int(state[1]),
                                         min(chunk_rows, INCREMENTAL_PREVIEW_ROWS))
                if applied is None:
                    notes.append("增量结果与原表不符, 已改为全量重算")
                else:
                    masked, counts = applied[0], applied[1:]
                    mode = BuildMode.incremental
            if masked is None:
                diff = _Diff(wh, conn, table)
        release = open_root is not None and policy.kind == OutputKind.open
        staged = _Staged(wh, conn, policy) if release and older else None
        if masked is None:
            for part in _masked_parts(wh, read, policy, as_of, key, real_ids, chunk_rows):
                if diff is not None:
                    frame = with_row_hash(part.frame)
                    for i in range(0, max(frame.height, 1), chunk_rows):
                        diff.add(frame.slice(i, chunk_rows))
                if staged is not None:
                    staged.add(part.frame)
                masked = part if masked is None else masked.followed_by(part, chunk_rows)
        assert masked is not None
        build = ShareBuild(policy, as_of, BuildAction.unchanged, masked, key_id=key_id, table_as_of=stored_as_of,
                           notes=notes, mode=mode)
        if older:
            build.action = BuildAction.older
        else:
            build.inserted, build.deleted = diff.finish() if diff is not None else counts
            changed = build.inserted or build.deleted
            row = (as_of, masked.rows_out, key_id, fingerprint, merges)
            if state is None or tuple([stored_as_of, *state[1:]]) != row:
                conn.execute(sa.text(f"DELETE FROM {wh.qualified('share', OUTPUTS)} WHERE output = :o"),
                             {"o": policy.name})
                wh.insert(conn, outputs, pl.DataFrame([{
                    "output": policy.name, "library": policy.library.code, "kind": policy.kind.value,
                    "as_of": as_of, "rows": masked.rows_out, "key_id": key_id, "policy": fingerprint,
                    "base_merges": merges,
                }], schema=OUTPUTS_SCHEMA))
            build.action = BuildAction.written if changed else BuildAction.unchanged
            build.table_as_of = as_of
        k = masked.kanon
        wh.insert(conn, log, pl.DataFrame([{
            "output": policy.name, "as_of": as_of, "action": build.action, "base_rows": masked.rows_in,
            "rows": masked.rows_out, "inserted": build.inserted, "deleted": build.deleted,
            "generalised": k.generalised if k else 0, "suppressed": k.suppressed if k else 0,
            "key_id": key_id, "policy": fingerprint, "built_at": dt.datetime.now(),
            "mode": None if older else build.mode.value,
        }], schema=BUILD_LOG_SCHEMA))
        if release:
            assert open_root is not None
            # the release as the table (or, for an older date, the staged rows) holds it, sorted by the
            # values shown, read in pages in this transaction; the preview is its first rows
            source = staged.name if staged is not None else wh.qualified("share", policy.name)
            pages = _sorted_release(wh, conn, policy, source, chunk_rows)
            first: list[pl.DataFrame] = []

            def keep_first(frames: Iterator[pl.DataFrame]) -> Iterator[pl.DataFrame]:
                for f in frames:
                    if not first:
                        first.append(f.head(chunk_rows))
                    yield f

            build.files = write_open_export_pages(policy, catalogue, keep_first(pages), masked.rows_out, open_root,
                                                  as_of)
            build.preview = first[0] if first else masked.frame.clear()
    return build


class _Staged:
    """An open release for an older date than the table's (not written to the table): its rows in a
    temporary table of the transaction, to be exported sorted like the table's."""

    def __init__(self, wh: Warehouse, conn: sa.Connection, policy: OutputPolicy) -> None:
        self.wh, self.conn = wh, conn
        self.table = wh.temp(conn, "gongshu_share_release", pl.DataFrame(schema=policy.schema()))
        self.name = wh.quote(self.table.name)

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height:
            self.wh.insert(self.conn, self.table, frame)


def _sorted_release(wh: Warehouse, conn: sa.Connection, policy: OutputPolicy, source: str,
                    chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The rows of an open release from ``source`` in pages, sorted by the values shown, column by column
    (text by its bytes, as polars sorts it: ``COLLATE "C"`` on PostgreSQL, SQLite's own; nulls last) —
    the order says nothing about the suppressed key."""
    schema = policy.schema()
    collate = ' COLLATE "C"' if wh.is_postgres else ""
    order = ", ".join(f"{wh.quote(n)}{collate if t == pl.String else ''} NULLS LAST" for n, t in schema.items())
    query = f"SELECT {', '.join(wh.quote(n) for n in schema)} FROM {source} ORDER BY {order}"
    yield from wh.read_pages(conn, query, dict(schema), chunk_rows)


@contextmanager
def _snapshot_reader(wh: Warehouse, conn: sa.Connection) -> Iterator[sa.Connection]:
    """Where the base rows are read page by page: on PostgreSQL a read-only REPEATABLE READ
    transaction beside the write (every page from one snapshot of the base library, as the one read
    it replaces); on SQLite the write transaction itself (one connection at a time)."""
    if not wh.is_postgres:
        yield conn
        return
    with wh.engine.connect().execution_options(isolation_level="REPEATABLE READ") as read, read.begin():
        read.execute(sa.text("SET TRANSACTION READ ONLY"))
        yield read


def _masked_parts(wh: Warehouse, conn: sa.Connection, policy: OutputPolicy, as_of: dt.date,
                  key: PseudonymKey | None, real_ids: ValueSet | None, chunk_rows: int) -> Iterator[MaskedOutput]:
    """The masked output page by page. An open output's base rows are read twice, in pages: once for
    the quasi-identifiers' group sizes, once to mask them (:func:`desensitize.masking.open_pages`)."""
    pages = snapshot_pages(wh, conn, policy, as_of, chunk_rows)
    if policy.kind != OutputKind.open:
        for page in pages:
            yield mask_snapshot(policy, page, as_of=as_of, key=key, real_ids=real_ids)
        return
    yield from open_pages(policy, pages, snapshot_pages(wh, conn, policy, as_of, chunk_rows), as_of=as_of, key=key,
                          real_ids=real_ids)


def _incremental_from(wh: Warehouse, read: sa.Connection, policy: OutputPolicy, state, key_id: str | None,
                      fingerprint: str, fpe: bool) -> dt.date | None:
    """The date P the table holds the output of, when the output of a date D ≥ P may be had from it by
    masking only the entities whose version changed in (P, D] (:func:`_apply_changes`); None: build in full.

    Only when every output row is a function of its base row alone and the table is exactly the output of
    P as the library stands now: not an open output (k-anonymised as a whole), no rule relative to the
    snapshot date (``age_band``), no format-preserving ID (nulled when equal to any real ID of any base
    library: a new person elsewhere can change an unchanged row), the same policy and key as the table
    was built with, and the library's merges of the dates up to P as they were then (a backfill or a
    re-delivery of such a date changes versions valid on P: :func:`warehouse.base.merges_digest`).
    """
    if (state is None or state[4] is None or state[1] is None or policy.kind == OutputKind.open or policy.dated or fpe
            or state[2] != key_id or state[3] != fingerprint or not wh.exists("base", policy.library.code)):
        return None
    prior = as_date(state[0])
    return prior if merges_digest(wh, read, policy.library.code, prior) == state[4] else None


def _apply_changes(wh: Warehouse, conn: sa.Connection, read: sa.Connection, table: sa.Table, policy: OutputPolicy,
                   prior: dt.date, as_of: dt.date, key: PseudonymKey | None, rows_before: int,
                   preview_rows: int) -> tuple[MaskedOutput, int, int] | None:
    """Bring the table from the output of ``prior`` (P) to the output of ``as_of`` (D) by the entities
    whose version changed in between; (masked, inserted, deleted), or None (nothing written) when the
    table does not hold the rows it should.

    A version is valid on d when valid_from ≤ d < valid_to (valid_to exclusive, NULL: still valid), and
    an entity's versions do not overlap. So an entity shows another version on D than on P exactly when
    its version valid on P ends in (P, D] — those are the old rows — or its version valid on D starts
    in (P, D] — the new rows; every other entity shows the same version on both dates. The share table
    holds masked rows (often no raw key), so the rows are not found by entity: both sides are masked
    and hashed, and per content hash the table's count changes by (new − old) — settled as
    :class:`_Diff` settles it (that many identical copies inserted or deleted, :func:`_delete_surplus`),
    so (inserted, deleted) are what a full build reports. A count that would fall below zero means the
    table is not the output of P: nothing is written, the caller builds in full.
    """
    select, schema = _snapshot_select(wh, policy)
    h = ROW_HASH_COLUMN
    if wh.scalar(conn, f"SELECT COUNT(*) FROM {wh._name(table)}") != rows_before:
        return None  # rows added or removed since the build that recorded the count
    params = {"p": prior, "d": as_of}
    old = wh.read(read, f"{select} WHERE {VALID_FROM} <= :p AND {VALID_TO} > :p AND {VALID_TO} <= :d",
                  schema, params)
    new = wh.read(read, f"{select} WHERE {VALID_FROM} > :p AND {valid_on()}", schema, params)
    old = with_row_hash(mask_snapshot(policy, old, as_of=prior, key=key).frame)
    new = with_row_hash(mask_snapshot(policy, new, as_of=as_of, key=key).frame)
    net = (new.group_by(h).len("n_new").join(old.group_by(h).len("n_old"), on=h, how="full", coalesce=True)
           .select(h, (pl.col("n_new").fill_null(0).cast(pl.Int64) - pl.col("n_old").fill_null(0).cast(pl.Int64))
                   .alias("net"))
           .filter(pl.col("net") != 0))
    inserted = deleted = 0
    if net.height:
        name = wh._name(table)
        q = wh.quote(h)
        tmp = wh.temp_table(conn, "gongshu_share_delta", net.select(h))
        stored = wh.read(conn, f"SELECT t.{q}, COUNT(*) AS stored FROM {name} t JOIN {tmp} d ON d.{q} = t.{q} "
                         f"GROUP BY t.{q}", {h: pl.String(), "stored": pl.Int64()})
        conn.execute(sa.text(f"DROP TABLE {tmp}"))
        net = net.join(stored, on=h, how="left").with_columns(pl.col("stored").fill_null(0))
        if net.filter(pl.col("stored") + pl.col("net") < 0).height:
            return None
        surplus = net.filter(pl.col("net") < 0).select(h, (-pl.col("net")).alias("surplus"))
        if surplus.height:
            tmp = wh.temp_table(conn, "gongshu_share_surplus", surplus)
            deleted = _delete_surplus(wh, conn, name, tmp)
            conn.execute(sa.text(f"DROP TABLE {tmp}"))
        # a hash whose count grows occurs in the new rows; its copies are identical
        content = (new.unique(subset=h, keep="first", maintain_order=True)
                   .join(net.filter(pl.col("net") > 0).select(h, "net"), on=h, how="inner"))
        copies = pl.Series(np.repeat(np.arange(content.height), content.get_column("net").to_numpy()))
        inserted = wh.insert(conn, table, content.drop("net").select(pl.all().gather(copies)))
    rows_out = rows_before + int(net.get_column("net").sum()) if net.height else rows_before
    query, _ = _snapshot_query(wh, policy)
    rows_in = int(read.execute(sa.text(f"SELECT COUNT(*) FROM ({query}) s"), {"d": as_of}).scalar_one())
    head = None  # the output's first preview_rows rows, as a full build in pages of that many holds them
    for page in snapshot_pages(wh, read, policy, as_of, preview_rows, one_pass=False):
        part = mask_snapshot(policy, page, as_of=as_of, key=key)
        head = part if head is None else head.followed_by(part, preview_rows)
        if head.frame.height >= preview_rows:
            break
    assert head is not None
    frame = head.frame.head(preview_rows)
    masked = MaskedOutput(frame, rows_in, rows_out, None, {}, rows_out - frame.height)
    return masked, inserted, deleted


class _Diff:
    """Bring a share table to new content page by page, in the database, as the whole-frame diff did
    before: rows whose content hash no longer occurs as often are deleted, the new ones inserted.

    The old table's hash counts stay in a temporary table (``old``); every page's hashes go to
    another (``new``). A page's rows whose hash the old table did not hold are inserted at once;
    the others are the old table's rows again. At the end the hashes whose count changed are
    settled: rows with the same hash are identical, so a count that fell loses that many copies
    (:func:`_delete_surplus`) and a count that grew gains that many copies of the stored content —
    (inserted, deleted) count the rows that differ, and a k-anonymised group that gains one member
    writes one row, not the group again.
    """

    def __init__(self, wh: Warehouse, conn: sa.Connection, table: sa.Table) -> None:
        self.wh, self.conn, self.table = wh, conn, table
        self.name = wh._name(table)
        self.h = wh.quote(ROW_HASH_COLUMN)
        self.old, self.new, self.page = (wh.quote(f"gongshu_share_{n}") for n in ("old", "new", "page"))
        self.inserted = 0
        self._temp("old", f"SELECT {self.h}, COUNT(*) AS n FROM {self.name} GROUP BY {self.h}")
        conn.execute(sa.text(f"CREATE INDEX {wh.quote('gongshu_share_old_h')} ON {self.old} ({self.h})"))
        self.new_table = wh.temp(conn, "gongshu_share_new", pl.DataFrame(schema={ROW_HASH_COLUMN: pl.String()}))

    def _temp(self, name: str, select: str) -> None:
        q = self.wh.quote(f"gongshu_share_{name}")
        self.conn.execute(sa.text(f"DROP TABLE IF EXISTS {q}"))
        on_commit = " ON COMMIT DROP" if self.wh.is_postgres else ""
        self.conn.execute(sa.text(f"CREATE TEMPORARY TABLE {q}{on_commit} AS {select}"))

    def add(self, frame: pl.DataFrame) -> None:
        if frame.height == 0:
            return
        wh, conn = self.wh, self.conn
        hashes = frame.select(ROW_HASH_COLUMN)
        wh.insert(conn, self.new_table, hashes)
        page = wh.temp_table(conn, "gongshu_share_page", hashes.unique())
        known = wh.read(conn, f"SELECT p.{self.h} FROM {page} p JOIN {self.old} o ON o.{self.h} = p.{self.h}",
                        {ROW_HASH_COLUMN: pl.String()}).get_column(ROW_HASH_COLUMN)
        conn.execute(sa.text(f"DROP TABLE {page}"))
        self.inserted += wh.insert(conn, self.table, frame.filter(~pl.col(ROW_HASH_COLUMN).is_in(known)))

    def finish(self) -> tuple[int, int]:
        """Settle the hashes the old table held; (inserted, deleted)."""
        wh, conn, h = self.wh, self.conn, self.h
        self._temp("changed", f"SELECT o.{h}, o.n AS n_old, COALESCE(x.n, 0) AS n_new FROM {self.old} o "
                              f"LEFT JOIN (SELECT {h}, COUNT(*) AS n FROM {self.new} GROUP BY {h}) x ON x.{h} = o.{h} "
                              f"WHERE COALESCE(x.n, 0) <> o.n")
        changed = wh.quote("gongshu_share_changed")
        deleted, again, most = conn.execute(sa.text(
            f"SELECT COALESCE(SUM(CASE WHEN n_old > n_new THEN n_old - n_new ELSE 0 END), 0), "
            f"COALESCE(SUM(CASE WHEN n_new > n_old THEN n_new - n_old ELSE 0 END), 0), "
            f"COALESCE(MAX(n_new - n_old), 0) FROM {changed}")).one()
        temps = [changed, self.new, self.old]
        if again:
            cols = ", ".join(wh.quote(c.name) for c in self.table.columns)
            self._temp("content", f"SELECT DISTINCT {cols} FROM {self.name} WHERE {h} IN "
                                  f"(SELECT {h} FROM {changed} WHERE n_new > n_old)")
            conn.execute(sa.text(
                f"INSERT INTO {self.name} ({cols}) WITH RECURSIVE gongshu_seq(i) AS (SELECT 1 UNION ALL "
                f"SELECT i + 1 FROM gongshu_seq WHERE i < {int(most)}) "
                f"SELECT {', '.join('c.' + wh.quote(c.name) for c in self.table.columns)} FROM "
                f"{wh.quote('gongshu_share_content')} c JOIN {changed} g ON g.{h} = c.{h} "
                f"JOIN gongshu_seq s ON s.i <= g.n_new - g.n_old"))
            temps.append(wh.quote("gongshu_share_content"))
        if deleted:
            self._temp("surplus", f"SELECT {h}, n_old - n_new AS surplus FROM {changed} WHERE n_old > n_new")
            _delete_surplus(wh, conn, self.name, wh.quote("gongshu_share_surplus"))
            temps.append(wh.quote("gongshu_share_surplus"))
        for t in temps:
            conn.execute(sa.text(f"DROP TABLE {t}"))
        return self.inserted + int(again), int(deleted)


def _delete_surplus(wh: Warehouse, conn: sa.Connection, name: str, surplus: str) -> int:
    """Delete from the table ``name``, for every content hash of the table ``surplus`` (hash, surplus),
    ``surplus`` of its rows — rows with the same hash are identical copies, so which ones does not
    matter (PostgreSQL's ``ctid``, SQLite's ``rowid`` tell them apart); the rows deleted."""
    rid = "ctid" if wh.is_postgres else "rowid"
    h = wh.quote(ROW_HASH_COLUMN)
    pick = (f"SELECT r FROM (SELECT t.{rid} AS r, s.surplus AS k, ROW_NUMBER() OVER (PARTITION BY t.{h}) AS i "
            f"FROM {name} t JOIN {surplus} s ON s.{h} = t.{h}) x WHERE i <= k")
    where = f"{rid} = ANY(ARRAY({pick}))" if wh.is_postgres else f"{rid} IN ({pick})"
    return conn.execute(sa.text(f"DELETE FROM {name} WHERE {where}")).rowcount


def _ensure(wh: Warehouse, tables: list[sa.Table]) -> None:
    """Create the layer's shared tables once, in a short transaction of their own: share assets run
    in parallel, and a second creator waits for the first one's commit (:meth:`Warehouse.create`),
    which here comes at once instead of after the first output's whole build."""
    with wh.begin() as conn:
        for t in tables:
            wh.create(conn, t)


# --- checks ------------------------------------------------------------------------------------------


def leak_findings(wh: Warehouse, catalogue: Catalogue, build: ShareBuild,
                  texts: dict[str, tuple[str, set[str]]], needles: Needles | None = None,
                  chunk_rows: int = SHARE_CHUNK_ROWS) -> tuple[list[Finding], Needles]:
    """Raw identifiers in the stored table, the export files and metadata texts ({where: (text, public
    columns)}). The table and files are read in pages of twice the build's ``chunk_rows``: a page's scan
    has a fixed cost (~0.1 s of per-column lookups and row rules, whatever its size), and the memory a
    build's page leaves behind holds it (measured at 200,000 persons, 人口 restricted: build and scan in
    pages of 25,000, 157 MB over the step's start and 3.3 s; scan in 50,000, 159 MB and 2.8 s)."""
    needles = needles or Needles.from_warehouse(wh, catalogue)
    public = build.policy.public_columns()
    typed = [c for c, t in build.policy.schema().items() if t != pl.String]
    page = 2 * chunk_rows
    findings = scan_table(wh, "share", build.policy.name, needles, public, page_rows=page)
    for path in build.files.all() if build.files else []:
        findings += scan_file(path, needles, public, typed, page_rows=page)
    for where, (text, columns) in texts.items():
        findings += scan_text(text, needles, where, columns)
    return findings, needles


def public_preview_columns(catalogue: Catalogue, key: AssetKey) -> set[str]:
    """Columns of an ODS/std/base preview shown verbatim because their element is graded 公开."""
    path = key.path
    for lib in catalogue.libraries:
        public = {e.code for e in lib.elements if e.sensitivity == Sensitivity.public}
        if path == ["base", lib.code]:
            return public
        for r in catalogue.resources_of(lib.code):
            if path == ["std", r.department, r.code]:
                return public
            if path == ["ods", r.department, r.code]:
                return {f.column for f in r.fields if f.element in public}
    return set()


def kanon_check(build: ShareBuild) -> AssetCheckResult:
    """k-anonymity of the exported CSV, read back from disk."""
    policy = build.policy
    k = build.masked.kanon or KAnonymity(policy.k, policy.quasi_identifiers)
    qis = policy.quasi_identifiers
    if build.files is None:  # not exported: what the build counted
        rows, smallest = build.masked.rows_out, k.smallest_group
    else:  # the groups of the file as a user reads it, counted by polars' streaming engine
        sizes = pl.scan_csv(build.files.csv, infer_schema=False).group_by(qis or pl.lit(1)).agg(
            pl.len().alias("n")).select(pl.col("n").sum().alias("rows"), pl.col("n").min().alias("smallest")).collect(
            engine="streaming")
        rows, smallest = int(sizes.item(0, "rows") or 0), sizes.item(0, "smallest")
    smallest = smallest if qis else None
    passed = smallest is None or smallest >= policy.k
    return AssetCheckResult(
        check_name="k_anonymity",
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=f"每个准标识符组合至少出现 {policy.k} 次" if passed else f"存在少于 {policy.k} 行的准标识符组合",
        metadata={
            "k": policy.k,
            "准标识符": ", ".join(qis) or "无",
            "发布行数": rows,
            "最小组行数": smallest if smallest is not None else 0,
            "组数": k.groups,
            "进一步泛化行数": k.generalised,
            "抑制(未发布)行数": k.suppressed,
            "泛化层级": MetadataValue.json({q: {str(lv): n for lv, n in v.items()} for q, v in k.levels.items()}),
        },
    )


def leak_check(findings: list[Finding], needles: Needles, scanned: list[str],
               reused: bool | None = None) -> AssetCheckResult:
    return AssetCheckResult(
        check_name="no_raw_identifiers",
        passed=not findings,
        severity=AssetCheckSeverity.ERROR,
        description="未发现原始标识符" if not findings else f"发现 {sum(f.count for f in findings)} 处原始标识符",
        metadata={
            "发现": MetadataValue.md("\n".join(f"- {f.markdown()}" for f in findings) or "无"),
            "比对的原始值": ", ".join(f"{k} {n:,}" for k, n in needles.counts().items())
                           + ("" if reused is None else
                              ("; 取自本批基础库状态已汇集的比对值" if reused else "; 本步骤自基础库汇集")),
            "扫描范围": MetadataValue.md("\n".join(f"- {s}" for s in scanned)),
        },
    )


# --- assets ------------------------------------------------------------------------------------------


def _upstream_previews(context: AssetExecutionContext, catalogue: Catalogue,
                       policy: OutputPolicy) -> dict[str, tuple[str, set[str]]]:
    """The latest Markdown previews of the library's own ODS/std/base assets."""
    keys = [base_key(policy.library)]
    for r in catalogue.resources_of(policy.library.code):
        keys += [ods_key(r), std_key(r)]
    out = {}
    for k in keys:
        event = context.instance.get_latest_materialization_event(k)
        if event is None or event.asset_materialization is None:
            continue
        for label, value in event.asset_materialization.metadata.items():
            text = getattr(value, "value", None)
            if isinstance(text, str) and "|" in text:
                out[f"{k.to_user_string()} 元数据「{label}」"] = (text, public_preview_columns(catalogue, k))
    return out


NEEDLES_KEY = AssetKey(["share", "leak_needles"])


def build_needles_asset(catalogue: Catalogue, partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    """The leak scanner's raw values, collected once a night after every base library is merged
    (:meth:`Needles.cached`): every share output of the partition depends on it and reads them back,
    instead of the first outputs to start collecting them at once, from a base library still merging."""

    @asset(
        key=NEEDLES_KEY,
        deps=[base_key(lib) for lib in catalogue.libraries],
        group_name="share",
        partitions_def=partitions,
        kinds={"polars", "sql", *label_kinds("share")},
        tags={"layer": "share"},
        description=labelled(
            f"{Layer.share.label} · 泄露扫描比对值",
            "各基础库全部版本中的身份号码、手机号、姓名、完整地址原值(去重), 在各库合并之后每晚汇集一次, "
            "以两个 64 位哈希值存入内部表 audit.leak_needle_hashes (不共享, 不存原值), "
            "供本分区每个共享/开放数据集的泄露扫描与格式保留令牌复用。按 (基础库, 版本生效日期) 分组汇集: "
            "各组的哈希存入内部表 audit.leak_needle_dates, 只有新增或内容有变化的组才重新读取基础库。"
            "元数据只记数量, 不含任何原值。"),
        automation_condition=AutomationCondition.eager(),
    )
    def _needles(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        needles, reused = Needles.cached(warehouse.get(), catalogue, warehouse.needles_cache_path())
        collected, kept = needles.dates
        return with_batch_date(MaterializeResult(metadata={
            **needles.counts(),
            "来源": "沿用已汇集的比对值(基础库未变)" if reused else
                    f"自基础库汇集: 重新读取新增或有变化的版本组 {collected} 个, 沿用已存的版本组 {kept} 个",
        }), context.partition_key)

    return _needles


def build_share_asset(catalogue: Catalogue, policy: OutputPolicy,
                      partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    lib = policy.library
    key = share_key(policy)
    resources = catalogue.resources_of(lib.code)
    specs = [AssetCheckSpec("no_raw_identifiers", asset=key, blocking=True, partitions_def=partitions,
                            description="发布内容(共享表、开放文件、元数据预览)中不得出现基础库的身份号码、手机号、姓名、完整地址原值")]
    if policy.kind == OutputKind.open:
        specs.append(AssetCheckSpec("k_anonymity", asset=key, blocking=True, partitions_def=partitions,
                                    description=f"开放数据每个准标识符组合至少出现 {policy.k} 次(k-匿名)"))
    rows_desc = ("" if policy.discriminator_values is None else
                 f"仅含{lib.discriminator.element}为 {', '.join(policy.discriminator_values) or '(无)'} 的记录; ")
    description = (
        f"{policy.label}脱敏数据集: 由 base/{lib.code} 在分区日期有效的版本生成, 按目录敏感级别与"
        f"{policy.kind.label}策略逐列处理; {rows_desc}"
        + ("准标识符 " + ", ".join(policy.quasi_identifiers) + f" 满足 k={policy.k} 匿名, 导出 CSV/JSON 与数据字典。"
           if policy.kind == OutputKind.open else "假名令牌按密钥稳定, 可跨数据集关联。")
        + "\n\n" + policy.describe_md()
    )
    kinds = {"polars", "sql", *label_kinds("share")} | ({"csv", "json"} if policy.kind == OutputKind.open else set())

    @asset(
        key=key,
        deps=[base_key(lib), NEEDLES_KEY],
        check_specs=specs,
        group_name="share",
        partitions_def=partitions,
        kinds=kinds,
        owners=[owner(catalogue, d) for d in sorted({r.department for r in resources})],
        tags={"layer": "share", "library": lib.code, "share_kind": policy.kind.value},
        description=labelled(f"{Layer.share.label} · {policy.label}", description),
        automation_condition=AutomationCondition.eager(),
        metadata={"基础库": lib.name, "类别": policy.kind.label, "适用目录属性": ", ".join(policy.classes)},
    )
    def _share(context: AssetExecutionContext, warehouse: WarehouseResource, pseudonym: PseudonymKeyResource,
               open_data: OpenDataResource) -> MaterializeResult:
        wh = warehouse.get()
        as_of = dt.date.fromisoformat(context.partition_key)
        secret = pseudonym.get_or_none() if policy.keyed else None
        if policy.keyed and secret is None:
            # Published empty, every token of yesterday's release would be wiped: fail instead.
            error = MissingKeyError(policy)
            context.log.error(str(error))
            raise Failure(description=str(error), allow_retries=False)
        # the base libraries' raw identifiers: collected once a night by the leak-needles asset this
        # output depends on, read back here (Needles.cached collects them itself only when the base
        # libraries changed since, e.g. this asset materialised alone); for the format-preserving tokens and the scan
        needles, reused = Needles.cached(wh, catalogue, warehouse.needles_cache_path())
        build = build_share_output(wh, catalogue, policy, as_of, key=secret, open_root=open_data.root(),
                                   needles=needles, chunk_rows=warehouse.share_chunk_rows)
        m = build.masked
        preview_md = preview(build.frame, {}).value  # already masked: shown as stored
        texts = {f"{key.to_user_string()} 预览": (preview_md, policy.public_columns()),
                 **_upstream_previews(context, catalogue, policy)}
        findings, needles = leak_findings(wh, catalogue, build, texts, needles, warehouse.share_chunk_rows)
        scanned = [wh.qualified("share", policy.name), *(str(p) for p in (build.files.all() if build.files else [])),
                   *texts]
        checks = [leak_check(findings, needles, scanned, reused)]
        if policy.kind == OutputKind.open:
            checks.append(kanon_check(build))
        for f in findings:
            context.log.error(str(f))
        context.log.info(f"{policy.name} {as_of}: {build.action.label}, 输出 {m.rows_out} 行, "
                         f"新增 {build.inserted}, 删除 {build.deleted}")
        labels = policy.labels()
        metadata = {
            "快照日期": as_of.isoformat(),
            "状态": build.action.label,
            "基础库有效记录数": m.rows_in,
            "本类别纳入记录数": m.rows_selected,
            "输出行数": m.rows_out,
            "写入行数": build.inserted,
            "删除行数": build.deleted,
            "dagster/row_count": m.rows_out,
            "假名化密钥编号": build.key_id or "无(未使用假名化)",
            "脱敏策略": MetadataValue.md(policy.describe_md()),
            "dagster/column_schema": TableSchema(columns=[TableColumn(n, str(t), description=labels.get(n))
                                                          for n, t in policy.schema().items()]),
            "预览(已脱敏)": MetadataValue.md(preview_md),
        }
        if m.fpe_dropped:
            metadata["与真实号码重合而置空的格式保留令牌"] = sum(m.fpe_dropped.values())
        if build.files is not None:
            metadata["开放文件"] = MetadataValue.md("\n".join(f"- `{p}`" for p in build.files.all()))
        if m.kanon is not None:
            metadata["k-匿名: 进一步泛化行数"] = m.kanon.generalised
            metadata["k-匿名: 抑制行数"] = m.kanon.suppressed
        metadata["构建方式"] = build.mode.label
        if build.notes:
            metadata["说明"] = "; ".join(build.notes)
        return with_batch_date(MaterializeResult(metadata=metadata, check_results=checks), context.partition_key)

    return _share


def build_share_assets(catalogue: Catalogue, partitions: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    """Every share/open asset of the catalogue (raises PolicyError if a column has no rule), and the
    leak needles they share."""
    return [build_needles_asset(catalogue, partitions),
            *(build_share_asset(catalogue, p, partitions) for p in share_policies(catalogue))]
