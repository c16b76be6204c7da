"""A new batch's ODS rows between the channel and the warehouse, without holding a large one whole.

A delivery comes in pages (:mod:`guiji.channels`); its rows go on to two writers in the same step —
the ODS COPY, and the 标准层, which standardises them in slices that each hold every copy of a key
(the unique rule compares rows). Up to ``memory_rows`` rows (one 标准层 slice of ``GONGSHU_STD_CHUNK_ROWS``,
:data:`guiji.ods.SPILL_SLICES`) a batch stays in memory. A larger one is spilled to Arrow IPC files in a folder of its own
on local disk (``TMPDIR``), one file per bucket of a hash of the key as the 标准层 parses it: a slice
is then a few buckets read back, and the ODS COPY reads the buckets one after the other. Polars holds
text as 16-byte views beside the bytes: the 户籍 delivery of a 10 M-person city is ~2.5 GB as a frame
(247 MB at 1 M, measured as Arrow IPC), more than half the step's budget before anything is done with it.

Records the previous batch holds unchanged (:func:`guiji.ods.carry`) are left out when the rows are
read back (:meth:`Spill.leave_out`).

A spill folder is named by its host and process (``gongshu_spill_<host>_<pid>_…``): a step killed
mid-way (out of memory, a worker stopped) cannot delete its own, so the next spill on the same host
deletes the folders of processes that are gone (:func:`sweep`).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pyarrow as pa
import pyarrow.ipc as ipc

from warehouse.store import slice_numbers

SPILL_BUCKETS = 128
"""Buckets of a spilled batch: a slice is at least one bucket, so slices stay within
``GONGSHU_STD_CHUNK_ROWS`` (50,000) up to 128 × that many records (6.4 M) in one batch; beyond, a slice
is one bucket (~78,000 of a 10 M-record 户籍 delivery). 256 buckets cost the 1 M 户籍 batch 0.8 s more
(smaller record batches written and read)."""
FIRST_ROWS = 1_000  # the first rows in delivery order, kept in memory for the step's preview
PREFIX = "gongshu_spill_"


def _host() -> str:
    return re.sub(r"[^0-9A-Za-z.-]", "-", socket.gethostname())


def new_folder() -> Path:
    """A new spill folder under ``TMPDIR`` named by this host and process; the folders other processes
    of this host left behind (processes gone) are deleted first."""
    folder = Path(tempfile.mkdtemp(prefix=f"{PREFIX}{_host()}_{os.getpid()}_"))
    sweep(folder.parent)
    return folder


def sweep(root: Path) -> None:
    """Delete the spill folders in ``root`` of this host's processes that are gone. A folder of another
    host (a shared ``TMPDIR``) or of a running process is left alone."""
    mine = re.compile(re.escape(f"{PREFIX}{_host()}_") + r"(\d+)_")
    for path in root.glob(f"{PREFIX}*"):
        m = mine.match(path.name)
        if m is not None and path.is_dir() and not _running(int(m.group(1))):
            shutil.rmtree(path, ignore_errors=True)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)  # PermissionError: another user's process, running
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class Spill:
    """The rows of one new batch, in memory up to ``memory_rows``, beyond that in bucket files.

    ``keys``: the key as the 标准层 parses it (:func:`guiji.standardize.key_values`): every copy of a key
    lands in one bucket; a row with part of its key missing goes by its row number.
    """

    def __init__(self, keys: list[pl.Expr], memory_rows: int, buckets: int = SPILL_BUCKETS) -> None:
        self.keys, self.memory_rows, self.buckets = keys, max(memory_rows, 1), buckets
        self.held: list[pl.DataFrame] = []
        self.rows = 0  # every row added (before leave_out)
        self.first: pl.DataFrame | None = None
        self.schema: dict[str, pl.DataType] | None = None
        self.folder: Path | None = None
        self.counts = [0] * buckets
        self._writers: dict[int, ipc.RecordBatchFileWriter] = {}
        self._left_out: pl.DataFrame | None = None  # (_source, _row_no) of the records left out, in memory
        self._left_by_bucket: dict[int, pl.DataFrame] = {}  # the same, spilled: by the bucket each record is in
        self._left_out_rows = 0

    # --- filling --------------------------------------------------------------------------------
    def add(self, page: pl.DataFrame) -> None:
        if self.schema is None:
            self.schema = dict(page.schema)
        if page.height == 0:
            return
        self.rows += page.height
        if self.first is None or self.first.height < FIRST_ROWS:
            head = page.head(FIRST_ROWS)
            self.first = head if self.first is None else pl.concat([self.first, head]).head(FIRST_ROWS)
        if self.folder is None:
            self.held.append(page)
            if self.rows <= self.memory_rows:
                return
            self.folder = new_folder()
            held, self.held = self.held, []
            for part in held:
                self._write(part)
            return
        self._write(page)

    def _write(self, page: pl.DataFrame) -> None:
        assert self.folder is not None
        numbers = slice_numbers(page, self.keys, self.buckets, row="_row_no").cast(pl.UInt32)
        for (bucket,), part in page.with_columns(numbers.alias("__bucket")).partition_by(
                "__bucket", as_dict=True, include_key=False).items():
            table = part.to_arrow()
            writer = self._writers.get(bucket)
            if writer is None:
                writer = self._writers[bucket] = ipc.new_file(str(self.folder / f"{bucket}.arrow"), table.schema)
            writer.write_table(table)
            self.counts[bucket] += part.height

    def finish(self) -> None:
        """Every page added: the bucket files are closed, ready to be read (by several readers at once)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()

    def leave_out(self, rows: pl.DataFrame) -> None:
        """Leave the records ``rows`` names out of every read from now on: their ``_source`` and ``_row_no``
        (each one of this batch's) and, for a spilled batch, their key columns as :attr:`keys` names them —
        each record is then looked for only in its own bucket. (Compared with every record left out at
        each bucket read, the 户籍 batch of 1 M records re-delivered with 98 % of them unchanged took
        5.9 s to read back, slices and pages; by bucket 0.75 s, sorting them into buckets included.)"""
        left = rows.unique(subset=["_source", "_row_no"])
        self._left_out_rows = left.height
        self._left_out = left.select("_source", "_row_no")
        if self.first is not None:
            self.first = _kept(self.first, self._left_out)
        if self.spilled:
            names = [k.meta.output_name() for k in self.keys]
            numbers = slice_numbers(left, [pl.col(n) for n in names], self.buckets, row="_row_no").cast(pl.UInt32)
            self._left_by_bucket = {bucket: part for (bucket,), part in self._left_out.with_columns(
                numbers.alias("__bucket")).partition_by("__bucket", as_dict=True, include_key=False).items()}
            self._left_out = None

    # --- reading --------------------------------------------------------------------------------
    @property
    def height(self) -> int:
        """Rows to store: every row added, less those left out."""
        return self.rows - self._left_out_rows

    @property
    def spilled(self) -> bool:
        return self.folder is not None

    def _empty(self) -> pl.DataFrame:
        return pl.DataFrame(schema=self.schema or {})

    def _read(self, buckets: list[int]) -> pl.DataFrame:
        assert self.folder is not None
        tables = []
        for b in buckets:
            with pa.OSFile(str(self.folder / f"{b}.arrow")) as source:
                tables.append(ipc.open_file(source).read_all())
        frame = pl.from_arrow(pa.concat_tables(tables))
        assert isinstance(frame, pl.DataFrame)
        left = [self._left_by_bucket[b] for b in buckets if b in self._left_by_bucket]
        return _kept(frame.cast(self.schema) if self.schema else frame, pl.concat(left) if left else None)

    def pages(self) -> Iterator[pl.DataFrame]:
        """Every row to store: the pages as added (in memory) or a bucket at a time."""
        if not self.spilled:
            for page in self.held:
                kept = _kept(page, self._left_out)
                if kept.height:
                    yield kept
            return
        for b in range(self.buckets):
            if self.counts[b]:
                yield self._read([b])

    def slices(self, chunk_rows: int) -> Iterator[pl.DataFrame]:
        """Every row to store in slices of about ``chunk_rows`` (at least one slice, empty for no rows),
        every copy of a key in one slice; each slice in one piece (:func:`key_slices`)."""
        if not self.spilled:
            frame = _kept(pl.concat(self.held), self._left_out) if self.held else self._empty()
            yield from key_slices(frame, self.keys, chunk_rows)
            return
        group: list[int] = []
        held = 0
        for b in range(self.buckets):
            n = self.counts[b]
            if not n:
                continue
            if group and held + n > chunk_rows:
                yield self._read(group).rechunk()
                group, held = [], 0
            group.append(b)
            held += n
        if group:
            yield self._read(group).rechunk()

    def head(self, n: int) -> pl.DataFrame:
        """The first ``n`` (≤ :data:`FIRST_ROWS`) rows to store, in delivery order (also once closed)."""
        return self.first.head(n) if self.first is not None else self._empty()

    def close(self) -> None:
        """Let go of the rows: the bucket files are deleted (their folder with them)."""
        self.finish()
        if self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None
        self.held = []


def _kept(frame: pl.DataFrame, left_out: pl.DataFrame | None) -> pl.DataFrame:
    """``frame`` without the records ``left_out`` names (``_source``, ``_row_no``)."""
    if left_out is None or frame.height == 0 or left_out.height == 0:
        return frame
    return frame.join(left_out, on=["_source", "_row_no"], how="anti", nulls_equal=True)


def detached(frame: pl.DataFrame) -> pl.DataFrame:
    """A copy of a (small) frame that shares no buffer with the frame it was cut from.

    Polars text is views into shared buffers: a few quarantined rows filtered from a slice keep the
    whole slice's text alive, and ``shrink_to_fit`` does not always let go (measured on the 户籍
    quarantine: ~9 MB kept per 50,000-record slice either way). Through Arrow's plain (non-view) text
    the values are copied into buffers of their own.
    """
    out = pl.from_arrow(frame.to_arrow(compat_level=pl.CompatLevel.oldest()))
    assert isinstance(out, pl.DataFrame)
    return out.cast(dict(frame.schema)) if out.schema != frame.schema else out


def key_slices(frame: pl.DataFrame, keys: list[pl.Expr], chunk_rows: int) -> Iterator[pl.DataFrame]:
    """A frame in ⌈rows / ``chunk_rows``⌉ slices (the frame itself when it fits in one), every copy of a key
    in one slice (:func:`warehouse.store.slice_numbers`), each slice rechunked into one piece: standardised
    in the pieces it was filtered or read from (one per page or bucket), the 1 M 户籍 batch took 3.3–3.9 s
    of standardisation, in one piece 2.1–2.5 s."""
    n = -(-frame.height // max(chunk_rows, 1))
    if n <= 1:
        yield frame.rechunk()
        return
    part = slice_numbers(frame, keys, n)
    for i in range(n):
        yield frame.filter(part == i).rechunk()
