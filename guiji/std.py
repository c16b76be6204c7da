"""标准层 storage: typed rows per batch, the quarantine, and the row reconciliation per batch."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import Resource
from guiji.ods import SPILL_SLICES, STD_CHUNK_ROWS, IngestResult, receive, store
from guiji.spill import detached, key_slices
from guiji.standardize import Standardized, key_values, standardize
from quality.expectations import Validation
from quality.results import BLOCKING_MIN_PASS_RATE, masked_failures, store_results, withheld_reason
from quality.rules import Severity, evaluated, failing, resource_rules
from warehouse.ods import (
    Batch,
    batches_table,
    latest_batch,
    ods_table,
    read_ods,
)
from warehouse.std import (
    QUARANTINE,
    RECONCILIATION,
    RECONCILIATION_SCHEMA,
    quarantine_table,
    read_std,
    reconciliation_table,
    std_table,
)
from warehouse.store import Warehouse

PREVIEW_ROWS = 20  # accepted rows a result keeps for the asset's preview


class ReconciliationError(AssertionError):
    """Rows were lost or counted twice: the batch is not written."""


@dataclass
class StdResult:
    batch: Batch | None
    result: Standardized | None
    delivered: int = 0
    gx_counts: dict[str, tuple[int, int]] | None = None
    data_docs: str | None = None
    withheld: str | None = None  # set when a blocking rule keeps the batch out of the base library
    carried: int = 0  # records carried unchanged from the previous batch: accepted, not standardised again
    rows_accepted: int = 0  # records standardised and accepted (``result.accepted`` holds the first of them)

    @property
    def accepted(self) -> int:
        return self.rows_accepted + self.carried

    @property
    def quarantined(self) -> int:
        return self.result.quarantined_rows if self.result else 0

    @property
    def reconciliation(self) -> str:
        """交付 = 接收 + 隔离; for a failed batch also the files none of whose records could be read,
        so a non-empty delivery never shows as a plain 0 = 0 + 0."""
        return reconciliation_text(self.delivered, self.accepted, self.quarantined, self.batch, self.carried)


def reconciliation_text(delivered: int, accepted: int, quarantined: int, batch: Batch | None, carried: int = 0) -> str:
    text = f"{delivered} = {accepted} + {quarantined}"
    if carried:
        text += f" · 接收中 {carried} 行与上一批次相同, 沿用 (未重新标准化)"
    if batch is not None and batch.failed:
        text += (f" · 批次失败: 另有无法拆分为记录的文件 ({batch.unreadable_bytes:,} 字节, "
                 f"{batch.unreadable_lines:,} 行), 其记录未计入")
    return text


def standardize_batch(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, *,
    run_id: str = "manual", with_gx: bool = True, min_pass_rate: float = BLOCKING_MIN_PASS_RATE,
    docs: Path | None = None, chunk_rows: int = STD_CHUNK_ROWS,
) -> StdResult:
    """Rebuild the std rows, quarantine and rule results of the latest batch of ``resource``.

    Rules are counted by the polars predicates; with ``with_gx`` Great Expectations validates
    the same rows too and both counts are stored side by side, and with ``docs`` (the Data Docs
    folder, ``$GONGSHU_HOME/gx_docs``) the validation is rendered to ``<docs>/<resource>/<batch>.html``.
    A blocking rule below ``min_pass_rate`` (``GONGSHU_BLOCKING_MIN_PASS_RATE``) withholds the batch.
    A batch of more than ``chunk_rows`` records is standardised, validated and written a slice at a
    time (:func:`slices`), in the batch's one transaction.
    """
    with wh.engine.connect() as conn:
        batch = latest_batch(wh, conn, resource, batch_date)
        if batch is None:
            return StdResult(None, None)
        ods = read_ods(wh, conn, resource, batch.batch_id)
    return _standardize_and_write(wh, catalogue, resource, batch_date, batch,
                                  slices(catalogue, resource, ods, chunk_rows), ods.height, run_id=run_id,
                                  with_gx=with_gx, min_pass_rate=min_pass_rate, docs=docs, chunk_rows=chunk_rows)


def collect(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, landing: Path, *,
    variables: Mapping[str, str] | None = None, run_id: str = "manual", with_gx: bool = True,
    min_pass_rate: float = BLOCKING_MIN_PASS_RATE, docs: Path | None = None, chunk_rows: int = STD_CHUNK_ROWS,
) -> tuple[IngestResult, StdResult]:
    """贴源层 and 标准层 of one delivery in one pass: what :func:`ingest` then
    :func:`standardize_batch` do, without reading the new batch back from the warehouse.

    The ODS rows are written by a worker thread while the same rows, in their stored form, are
    standardised and written here (on PostgreSQL; SQLite takes one writer at a time, so there the
    ODS batch is written first); the std transaction commits only once the ODS batch has committed.
    A delivery that is not a new batch (none, or the same content again) rebuilds the std rows of
    the latest batch. ``variables``: the values of the channel's variables (:mod:`guiji.channels`).
    """
    received = receive(wh, resource, batch_date, landing, variables, catalogue=catalogue,
                       memory_rows=SPILL_SLICES * chunk_rows)
    checking = {"run_id": run_id, "with_gx": with_gx, "min_pass_rate": min_pass_rate, "docs": docs,
                "chunk_rows": chunk_rows}
    if received.status != "new":
        return received, standardize_batch(wh, catalogue, resource, batch_date, **checking)
    assert received.batch is not None and received.rows is not None
    rows = received.rows
    try:
        # declared before the worker starts, so the two threads never declare a table at the same time
        batches_table(wh)
        ods_table(wh, resource)
        std_table(wh, catalogue, resource), quarantine_table(wh), reconciliation_table(wh)
        with ThreadPoolExecutor(1, thread_name_prefix="gongshu-ods") as pool:
            written = pool.submit(store, wh, resource, received)
            try:
                if not wh.is_postgres:
                    written.result()
                out = _standardize_and_write(wh, catalogue, resource, batch_date, received.batch,
                                             rows.slices(chunk_rows), rows.height, ods_committed=written.result,
                                             **checking)
            finally:
                written.result()  # the ODS batch is committed (or its error raised) before anything else is written
    finally:
        rows.close()  # a spilled batch's files deleted; its first rows stay for the preview
    return received, out


def slices(catalogue: Catalogue, resource: Resource, ods: pl.DataFrame, chunk_rows: int) -> Iterator[pl.DataFrame]:
    """The ODS rows of a batch in ⌈rows / ``chunk_rows``⌉ slices (the batch itself when it fits in one).

    A row goes to the slice its key picks (a hash of the key as the 标准层 parses it, so two spellings
    of one key meet): every copy of a key is in one slice, which makes the batch's unique rule — the
    only rule comparing rows — exact slice by slice. A row with a part of its key missing is never a
    duplicate and goes by its row number, so a batch of unreadable records still spreads out.
    """
    yield from key_slices(ods, key_values(catalogue, resource), chunk_rows)


def _standardize_and_write(
    wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_date: dt.date, batch: Batch,
    parts: Iterable[pl.DataFrame], rows: int, *,
    run_id: str, with_gx: bool, min_pass_rate: float, docs: Path | None, chunk_rows: int,
    ods_committed: Callable[[], object] | None = None,
) -> StdResult:
    """Replace the std rows, quarantine, reconciliation and rule results of one batch, in one transaction:
    the batch's ``rows`` stored records come in key slices (``parts``: every copy of a key in one slice),
    the accepted rows of each slice are written as it is standardised; the rows' reconciliation is
    checked before the rest is written (:class:`ReconciliationError` rolls everything back)."""
    std, qt, rec = std_table(wh, catalogue, resource), quarantine_table(wh), reconciliation_table(wh)
    with wh.begin() as conn:
        for t in (std, qt, rec):
            wh.create(conn, t)
        b = {"b": batch.batch_id}
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('std', resource.id)} WHERE _batch_id = :b"), b)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', QUARANTINE)} WHERE batch_id = :b"), b)
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('audit', RECONCILIATION)} WHERE batch_id = :b"), b)

        def write(accepted: pl.DataFrame) -> None:
            wh.insert(conn, std, accepted.with_columns(pl.lit(batch.batch_id).alias("_batch_id")))

        out, failures = _standardize(catalogue, resource, batch_date, batch, parts, rows, with_gx, min_pass_rate,
                                     docs, write)
        if ods_committed is not None:
            ods_committed()  # the carried runs are in ods.carried, and std never commits before its ODS batch
        _count_carried(wh, conn, catalogue, resource, batch_date, out)
        result = out.result
        assert result is not None
        wh.insert(
            conn, qt,
            result.quarantine.rename({"_row_no": "row_no"}).with_columns(
                pl.lit(batch.batch_id).alias("batch_id"), pl.lit(resource.id).alias("resource_id")
            ),
        )
        wh.insert(conn, rec, pl.DataFrame([{
            "batch_id": batch.batch_id, "resource_id": resource.id, "batch_date": batch_date,
            "rows_delivered": out.delivered, "rows_accepted": out.accepted, "rows_quarantined": out.quarantined,
            "id15_converted": result.converted_id15, "withheld": out.withheld, "rows_carried": out.carried,
        }], schema=RECONCILIATION_SCHEMA))
        store_results(wh, conn, run_id=run_id, batch_id=batch.batch_id, resource=resource, batch_date=batch_date,
                      counts=result.rule_counts, gx_counts=out.gx_counts, failures=failures)
    return out


def _count_carried(wh: Warehouse, conn: sa.Connection, catalogue: Catalogue, resource: Resource,
                   batch_date: dt.date, out: StdResult) -> None:
    """The warning rules counted over the carried records too, as they were standardised in the batch that
    stores them (their values are those values): a record re-delivered unchanged still fails what it
    failed, so a department's rule results and score cover everything it delivered, not only what
    changed; GX's counts beside them likewise. (Blocking rules count carried records as passed in
    :func:`_standardize`: they were accepted.)"""
    if out.batch is None or out.result is None or not out.carried or out.result.rule_counts.is_empty():
        return
    rules = [r for r in resource_rules(catalogue, resource, batch_date) if r.severity != Severity.blocking]
    if not rules:
        return
    held = read_std(wh, conn, catalogue, resource, out.batch.batch_id, {c for r in rules for c in r.columns},
                    own=False)
    if held.is_empty():
        return
    counts = held.select([evaluated(r).sum().alias(f"n{i}") for i, r in enumerate(rules)]
                         + [failing(r).sum().alias(f"u{i}") for i, r in enumerate(rules)]).row(0, named=True)
    extra = pl.DataFrame({"rule_id": [r.id for r in rules],
                          "__n": [int(counts[f"n{i}"] or 0) for i in range(len(rules))],
                          "__u": [int(counts[f"u{i}"] or 0) for i in range(len(rules))]},
                         schema={"rule_id": pl.String, "__n": pl.Int64, "__u": pl.Int64})
    out.result.rule_counts = out.result.rule_counts.join(extra, on="rule_id", how="left").with_columns(
        (pl.col("evaluated") + pl.col("__n").fill_null(0)).alias("evaluated"),
        (pl.col("failed") + pl.col("__u").fill_null(0)).alias("failed"),
    ).drop("__n", "__u")
    if out.gx_counts:  # GX validated these records in the batch that stores them, with the same outcome
        for rule_id, n, u in extra.iter_rows():
            if rule_id in out.gx_counts:
                ev, fa = out.gx_counts[rule_id]
                out.gx_counts[rule_id] = (ev + n, fa + u)


def _standardize(
    catalogue: Catalogue, resource: Resource, batch_date: dt.date, batch: Batch, parts: Iterable[pl.DataFrame],
    rows: int, with_gx: bool, min_pass_rate: float, docs: Path | None, write: Callable[[pl.DataFrame], None],
) -> tuple[StdResult, pl.DataFrame]:
    """Standardise the batch's ``rows`` records slice by slice (``parts``), handing each slice's accepted rows to
    ``write``; the quarantine, rule counts, GX validation and failing records are added up over the
    slices. The result's ``accepted`` holds the first rows only (the preview's); ``rows_accepted`` counts all."""
    rules = resource_rules(catalogue, resource, batch_date)
    validation = Validation(rules, resource.id) if with_gx else None
    accepted, id15, preview = 0, 0, None
    quarantine, failures, counts = [], [], None
    seen = 0
    for part in parts:
        seen += part.height
        result = standardize(part, catalogue, resource, batch_date)
        write(result.accepted)
        accepted += result.accepted.height
        id15 += result.converted_id15
        # What is kept of a slice is copied out of it (detached): a frame filtered from the slice shares
        # its text buffers, and the quarantine and failing records of every slice would keep every slice
        # (measured at 10 M persons: ~45 MB a slice of 200,000 户籍 records, the whole batch by the end).
        if preview is None or preview.height < PREVIEW_ROWS:
            head = detached(result.accepted.head(PREVIEW_ROWS))
            preview = head if preview is None else pl.concat([preview, head]).head(PREVIEW_ROWS)
        quarantine.append(detached(result.quarantine))
        counts = result.rule_counts if counts is None else counts.with_columns(
            pl.col("evaluated") + result.rule_counts.get_column("evaluated"),
            pl.col("failed") + result.rule_counts.get_column("failed"))
        if validation is not None and result.parsed is not None and result.parsed.height:
            validation.add(result.parsed)
        keys = result.parsed.select(["_row_no", *resource.key]) if result.parsed is not None \
            else pl.DataFrame(schema={"_row_no": pl.Int64})
        failures.append(detached(masked_failures(catalogue, resource, result.failures, keys)))
    assert counts is not None and preview is not None
    result = Standardized(preview, pl.concat(quarantine).sort("_row_no", "reason_code", "field", nulls_last=True),
                          id15, counts)
    carried = batch.rows_carried
    delivered, accepted, quarantined = seen + carried, accepted + carried, result.quarantined_rows
    if delivered != accepted + quarantined or delivered != batch.rows_delivered or seen != rows:
        raise ReconciliationError(
            f"{batch.batch_id}: 交付 {batch.rows_delivered} 行, 读出 {delivered} 行 (其中沿用 {carried}), "
            f"接收 {accepted} + 隔离 {quarantined}"
        )
    blocking = pl.col("severity") == Severity.blocking.value
    if carried:
        # a carried record passed every blocking rule (they are on the key) where it was accepted
        result.rule_counts = result.rule_counts.with_columns(
            pl.when(blocking).then(pl.col("evaluated") + carried).otherwise(pl.col("evaluated")).alias("evaluated"))
    withheld = withheld_reason(result.rule_counts, min_pass_rate)
    gx_counts, page = None, None
    if validation is not None and validation.rows:
        gx_results, raw = validation.finish(docs / resource.id / f"{batch.batch_id}.html" if docs else None)
        severity = {r.id: r.severity for r in rules}
        gx_counts = {g.rule_id: (g.evaluated + (carried if severity.get(g.rule_id) == Severity.blocking else 0),
                                 g.failed) for g in gx_results}
        page = raw.get("data_docs")
    out = StdResult(batch, result, delivered, gx_counts, page, withheld, carried, rows_accepted=accepted - carried)
    return out, pl.concat(failures)
