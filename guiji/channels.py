"""Read one batch of a resource from its delivery channel: file, 前置库 (database) or API.

Every reader returns a :class:`Delivery` (a file delivery opened by :func:`open_files` hands its
records on a page at a time, :class:`FileReading`): all values as text, exactly as received, one row per
delivered record, with ``_row_no`` (1-based record number inside its source), ``_source`` and,
for records that could not be split into the declared columns, ``_raw`` (the record's text) and
``_error`` (why). Nothing is dropped here: rows delivered = rows in the frame. A file whose records
cannot be split at all is counted in :attr:`Delivery.unreadable` (its bytes and lines).

What the database cannot store or what a file does not hold is turned into a marker the 标准层
quarantines, the same on SQLite and PostgreSQL: undecodable bytes become U+FFFD, a NUL character
U+2400 (␀), and an XLSX formula cell without a computed value ``U+FFFC<cell>=<formula>``. A whole
record is flagged through ``_error``; ``<code>: <reason>`` (e.g. ``wrong_encoding: …``) gives the
标准层 its reason code, any other text is ``unparseable``.

The variables a channel names in the catalogue (``url_env``, ``auth_env``: a 前置库 URL, an API's URL
and token) are looked up in the ``variables`` mapping the caller hands in — at the edge, the
environment's values of exactly those variables (``assets.resources.LandingResource``).
"""

from __future__ import annotations

import codecs
import datetime as dt
import glob
import hashlib
import io
import json
import logging
import re
import time
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from urllib.parse import unquote, urlsplit, urlunsplit
from xml.etree import ElementTree

import polars as pl
import polars_hash as plh
import pyarrow as pa
import pyarrow.csv as pacsv
import requests
import sqlalchemy as sa
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

from catalog.models import ApiChannel, DatabaseChannel, FileChannel, Resource, outside_folder
from warehouse.ods import source_columns
from warehouse.std import QuarantineReason
from warehouse.store import adbc_connect, arrow_pages, literal_sql

META_COLUMNS = ("_row_no", "_source", "_raw", "_error")
REPLACEMENT = "\ufffd"  # what undecodable bytes become; the 标准层 quarantines such values
NUL_MARK = "\u2400"  # what a NUL character becomes: PostgreSQL text cannot hold NUL, both databases keep ␀
FORMULA_MARK = "\ufffc"  # starts an XLSX formula cell that has no computed value: "\ufffcC5=SUM(A1:A4)"
WRONG_ENCODING = QuarantineReason.wrong_encoding.value
ENCODING_NAMES = {"utf-8": "UTF-8", "gbk": "GBK", "gb18030": "GB18030"}


def record_error(code: str, reason: str) -> str:
    """An ``_error`` that gives the 标准层 its own reason code and Chinese reason."""
    return f"{code}: {reason}"


class DeliveryError(RuntimeError):
    """A channel could not be read at all (server down, database unreachable, a path outside the
    landing folder, an API without end)."""


@dataclass(frozen=True)
class Unreadable:
    """A delivered file none of whose records could be split out: only its size is known."""

    name: str
    bytes: int
    lines: int


@dataclass
class Delivery:
    frame: pl.DataFrame
    sources: list[str]
    content_hash: str
    watermark_high: str | None = None
    problems: list[str] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.frame.height


def empty_frame(columns: list[str]) -> pl.DataFrame:
    schema = {"_row_no": pl.Int64, "_source": pl.String, "_raw": pl.String, "_error": pl.String}
    schema.update({c: pl.String for c in columns})
    return pl.DataFrame(schema=schema)


def _finish(frame: pl.DataFrame, columns: list[str], source: str) -> pl.DataFrame:
    """Give a parsed frame the full ODS shape: meta columns first, every declared column.

    A NUL character becomes ␀ (:data:`NUL_MARK`): PostgreSQL text cannot hold NUL and SQLite
    readers may stop at it, so the two databases would otherwise store different records.
    """
    exprs = [pl.col(c).cast(pl.String) if c in frame.columns else pl.lit(None, pl.String).alias(c) for c in columns]
    meta = [
        pl.col("_row_no").cast(pl.Int64),
        pl.lit(source).alias("_source"),
        (pl.col("_raw") if "_raw" in frame.columns else pl.lit(None, pl.String)).cast(pl.String).alias("_raw"),
        (pl.col("_error") if "_error" in frame.columns else pl.lit(None, pl.String)).cast(pl.String).alias("_error"),
    ]
    out = frame.select(meta + exprs)
    text = ["_raw", *columns]
    if out.height and out.select(pl.any_horizontal(pl.col(text).str.contains("\x00", literal=True)).any()).item():
        out = out.with_columns(pl.col(text).str.replace_all("\x00", NUL_MARK, literal=True))
    return out


def _whole_record(frame: pl.DataFrame, header: list[str], delimiter: str, error: str) -> pl.DataFrame:
    """Flag every record of a parsed file with ``error``, its text kept in ``_raw``."""
    text = pl.concat_str([pl.col(h).fill_null("") for h in header], separator=delimiter) if header \
        else pl.lit("", pl.String)
    raw = pl.coalesce(pl.col("_raw"), text) if "_raw" in frame.columns else text
    return frame.with_columns(raw.alias("_raw"), pl.lit(error, pl.String).alias("_error"))


def read_delivery(
    resource: Resource, batch_date: dt.date, landing: Path, variables: Mapping[str, str] | None = None
) -> Delivery:
    """Read the batch of ``resource`` for ``batch_date`` through its channel."""
    ch = resource.channel
    if isinstance(ch, FileChannel):
        return read_files(resource, ch, batch_date, landing)
    if isinstance(ch, DatabaseChannel):
        raise TypeError("database channels need the previous watermark: call read_database()")
    return read_api(resource, ch, batch_date, variables)


# --- files -----------------------------------------------------------------------------------


def delivery_files(ch: FileChannel, batch_date: dt.date, landing: Path) -> list[Path]:
    """The files of a batch, all inside the landing folder.

    A path that leaves the landing folder (``..``, an absolute path) is refused before anything
    is listed, and so is a matched file whose real path (symbolic links followed) lies outside it.
    """
    why = outside_folder(ch.path)
    if why:
        raise DeliveryError(f"文件通道路径 {ch.path!r} {why}, 拒绝读取 (期望: 交付目录 GONGSHU_LANDING 内的相对路径)")
    pattern = ch.path.replace("{date:%Y%m%d}", batch_date.strftime("%Y%m%d")).replace(
        "{date}", batch_date.isoformat()
    )
    root = landing.resolve()
    files = []
    for name in sorted(glob.glob(str(landing / pattern))):
        path = Path(name)
        real = path.resolve()
        if not real.is_relative_to(root):
            raise DeliveryError(
                f"{path.relative_to(landing) if path.is_relative_to(landing) else path}: 实际指向交付目录之外的 "
                f"{real}, 拒绝读取 (文件通道路径 {ch.path!r})")
        if real.is_file():
            files.append(path)
    return files


def read_files(resource: Resource, ch: FileChannel, batch_date: dt.date, landing: Path) -> Delivery:
    """The file delivery read whole (:func:`open_files`, its pages put together)."""
    reading = open_files(resource, ch, batch_date, landing)
    frames = list(reading.pages())
    frame = pl.concat(frames, how="vertical") if len(frames) > 1 else frames[0]
    return Delivery(frame, reading.sources, reading.content_hash, problems=reading.problems,
                    unreadable=reading.unreadable)


@dataclass
class FileReading:
    """A file delivery opened: its files and their content hash known, its records read as
    :meth:`pages` is consumed — a delimited file a piece at a time (:func:`csv_pages`), never held
    whole; an XLSX or JSON file parsed whole. ``problems`` and ``unreadable`` are complete once every
    page has been read."""

    columns: list[str]
    format: str
    encoding: str
    delimiter: str
    sheet: str | None
    files: list[Path]
    content_hash: str
    digests: dict[Path, bytes] = field(default_factory=dict)  # each file's SHA-256 when the delivery was opened
    problems: list[str] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)

    @property
    def sources(self) -> list[str]:
        return [p.name for p in self.files]

    def pages(self) -> Iterator[pl.DataFrame]:
        """Every delivered record, in frames of at most :data:`FETCH_PAGE_ROWS` rows (at least one frame)."""
        empty = True
        for path in self.files:
            for frame in self._file(path):
                for at in range(0, frame.height, FETCH_PAGE_ROWS):
                    empty = False
                    yield frame.slice(at, FETCH_PAGE_ROWS)
        if empty:
            yield empty_frame(self.columns)

    def _file(self, path: Path) -> Iterator[pl.DataFrame]:
        try:
            yield from self._records(path)
        except OSError as exc:  # gone or unreadable since it was hashed
            raise DeliveryError(f"{path.name}: 读取失败, 本次交付未入库: {type(exc).__name__}: {exc}") from exc

    def _records(self, path: Path) -> Iterator[pl.DataFrame]:
        data = Bytes(path=path)
        raw = None
        if self.format != "csv":
            raw = path.read_bytes()
            data.passes.append(hashlib.sha256(raw).digest())
            self._same(path, data)
        try:
            if self.format == "csv":
                pages = csv_pages(data, path.name, self.columns, self.encoding, self.delimiter, self.problems)
                first = next(pages)  # the encoding told and the header and first piece parsed
            else:
                assert raw is not None
                if self.format == "xlsx":
                    first, found = parse_xlsx(raw, path.name, self.columns, self.sheet)
                else:
                    first, found = parse_json_file(raw, path.name, self.columns, self.encoding)
                del raw
                self.problems.extend(found)
                pages = iter(())
        except OSError:
            raise
        except Exception as exc:  # not a csv/xlsx/json at all: its records cannot even be counted
            lines = data.lines()
            self.unreadable.append(Unreadable(path.name, data.size, lines))
            self.problems.append(f"{path.name}: 无法读取 ({self.format}), 无法拆分出任何记录 ({data.size:,} 字节, "
                                 f"{lines:,} 行), 批次记为失败: {type(exc).__name__}: {exc}")
            return
        yield first
        try:
            yield from pages
        except Exception as exc:  # a later piece of a file whose first piece was read: nothing is stored
            raise DeliveryError(f"{path.name}: 读取中途失败, 本次交付未入库: {type(exc).__name__}: {exc}") from exc
        self._same(path, data)

    def _same(self, path: Path, data: Bytes) -> None:
        """A file is read more than once (hashed, its encoding told, parsed): the records stored must be
        those of the bytes the content hash describes."""
        if any(p != self.digests[path] for p in data.passes):
            raise DeliveryError(f"{path.name}: 文件在读取期间被改动 (内容与读取开始时的哈希不符), 本次交付未入库, "
                                "请在交付完成后重新运行")


def open_files(resource: Resource, ch: FileChannel, batch_date: dt.date, landing: Path) -> FileReading:
    """The file delivery of a batch date, opened (:class:`FileReading`): its files found and hashed
    (the content hash: every file's name and the SHA-256 of its bytes), nothing parsed yet."""
    files = delivery_files(ch, batch_date, landing)
    digest, digests = hashlib.sha256(), {}
    for path in files:
        digests[path] = Bytes(path=path).sha256()
        digest.update(path.name.encode() + b"\0" + digests[path])
    return FileReading(source_columns(resource), ch.format, ch.encoding, ch.delimiter, ch.sheet, files,
                       digest.hexdigest() if files else "", digests)


# --- encodings -------------------------------------------------------------------------------

# Other catalogue encodings a file may really be in. GB18030 is a superset of GBK: a GBK-declared
# file with a few GB18030-only characters keeps its per-field flags instead of failing whole.
_OTHER_ENCODINGS = {"utf-8": ("gbk", "gb18030"), "gbk": ("utf-8",), "gb18030": ("utf-8",)}
_CJK = re.compile("[\u3400-\u4dbf\u4e00-\u9fff]")
# Undecodable characters per line above which the other encodings are tried: a file with a few bad
# bytes (the generator injects ~1% per string field) stays below it and is flagged per field.
_SUSPECT_PER_LINE = 0.2


@dataclass(frozen=True)
class Decoded:
    text: str
    wrong: str | None = None  # why the file is not in its declared encoding (naming the one that fits)


def decode(data: bytes, source: str, declared: str) -> Decoded:
    """Decode a delivered file, telling a file in another encoding from a few bad bytes
    (:func:`encoding_of`); undecodable bytes become U+FFFD."""
    encoding, wrong = encoding_of(Bytes(data=data), source, declared)
    return Decoded(data.decode(encoding, errors="replace"), wrong)


class Bytes:
    """A delivered file's bytes, read a chunk at a time — as often as needed, never held whole (a
    file on disk), or bytes already in memory."""

    def __init__(self, path: Path | None = None, data: bytes | None = None) -> None:
        assert (path is None) != (data is None)
        self.path, self.data = path, data
        self.passes: list[bytes] = []  # the SHA-256 of each whole pass over a file on disk

    @property
    def size(self) -> int:
        return len(self.data) if self.data is not None else self.path.stat().st_size  # type: ignore[union-attr]

    def chunks(self, size: int) -> Iterator[bytes]:
        size = max(int(size), 1)
        if self.data is not None:
            for at in range(0, len(self.data), size):
                yield self.data[at:at + size]
            return
        assert self.path is not None
        digest = hashlib.sha256()
        with self.path.open("rb") as f:
            while chunk := f.read(size):
                digest.update(chunk)
                yield chunk
        self.passes.append(digest.digest())

    def sha256(self) -> bytes:
        """The SHA-256 of a file on disk, one pass of chunks (recorded in :attr:`passes` as every pass is)."""
        for _ in self.chunks(READ_CHUNK_BYTES):
            pass
        return self.passes[-1]

    def lines(self) -> int:
        """Lines as an unreadable file is counted: line ends, and a last line without one."""
        n, last = 0, b"\n"
        for chunk in self.chunks(READ_CHUNK_BYTES):
            n, last = n + chunk.count(b"\n"), chunk[-1:]
        return n + (0 if last == b"\n" else 1)

    def texts(self, encoding: str) -> Iterator[str]:
        """The file decoded a chunk at a time (undecodable bytes as U+FFFD, a character split
        between two chunks decoded whole): together, ``data.decode(encoding, errors="replace")``."""
        decoder = codecs.getincrementaldecoder(encoding)(errors="replace")
        for chunk in self.chunks(READ_CHUNK_BYTES):
            yield decoder.decode(chunk)
        yield decoder.decode(b"", final=True)


READ_CHUNK_BYTES = 4 * 2**20
"""A delivered file is read and decoded this many bytes at a time."""


def encoding_of(data: Bytes, source: str, declared: str) -> tuple[str, str | None]:
    """The encoding to read a delivered file in, and why it is not the declared one (None: it is).

    The declared encoding is wrong when the file is valid UTF-8 with Chinese text while the
    catalogue says GBK/GB18030 (GBK text is practically never valid UTF-8; UTF-8 text often decodes
    as GBK "cleanly" into nonsense such as 鏉庢棴), or when it has many undecodable bytes and another
    catalogue encoding decodes it with a tenth of them or fewer. Otherwise undecodable bytes become
    U+FFFD and the 标准层 flags the fields they are in. Read a chunk at a time: one pass in the
    declared encoding (and as UTF-8 until it fails, which a GBK file does at its first Chinese
    character); the other encodings are tried only for a suspect file.
    """
    bad = lines = 0
    ascii_only, cjk = True, False
    utf8 = codecs.getincrementaldecoder("utf-8")() if declared != "utf-8" else None
    decoder = codecs.getincrementaldecoder(declared)(errors="replace")
    for chunk in data.chunks(READ_CHUNK_BYTES):
        text = decoder.decode(chunk)
        bad, lines = bad + text.count(REPLACEMENT), lines + text.count("\n")
        ascii_only = ascii_only and chunk.isascii()
        if utf8 is not None:
            try:
                cjk = cjk or bool(_CJK.search(utf8.decode(chunk)))
            except UnicodeDecodeError:
                utf8 = None
    text = decoder.decode(b"", final=True)
    bad, lines = bad + text.count(REPLACEMENT), lines + text.count("\n")
    if utf8 is not None:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8 = None
    if utf8 is not None and not ascii_only and cjk:
        return "utf-8", _wrong_encoding(source, declared, "utf-8", bad, 0)
    if not bad or bad <= _SUSPECT_PER_LINE * (lines + 1):
        return declared, None
    best: tuple[str, int] | None = None
    for other in _OTHER_ENCODINGS[declared]:
        n = sum(t.count(REPLACEMENT) for t in data.texts(other))
        if n * 10 <= bad and (best is None or n < best[1]):
            best = (other, n)
    if best is None:
        return declared, None
    return best[0], _wrong_encoding(source, declared, best[0], bad, best[1])


def _wrong_encoding(source: str, declared: str, fits: str, bad: int, left: int) -> str:
    d, f = ENCODING_NAMES[declared], ENCODING_NAMES[fits]
    how = f"可按 {f} 完整解码" if left == 0 else f"按 {f} 解码仅 {left} 处无法解码 (按 {d} 有 {bad} 处)"
    return f"文件 {source} 的编码不是目录声明的 {d}: {how}; 整个文件隔离, 请按 {d} 重新交付或更正目录"


# --- CSV -------------------------------------------------------------------------------------

_MAX_BLOCK = 2**31 - 1  # pyarrow's block size is an int32


def parse_csv(
    data: bytes, source: str, columns: list[str], encoding: str, delimiter: str
) -> tuple[pl.DataFrame, list[str]]:
    """A delimited file in memory parsed whole (:func:`csv_pages`, its pages put together)."""
    problems: list[str] = []
    frames = list(csv_pages(Bytes(data=data), source, columns, encoding, delimiter, problems))
    return (pl.concat(frames, rechunk=False) if len(frames) > 1 else frames[0]), problems


def csv_pages(
    data: Bytes, source: str, columns: list[str], encoding: str, delimiter: str, problems: list[str]
) -> Iterator[pl.DataFrame]:
    """Parse a delimited file a piece of whole lines at a time (:data:`CSV_PIECE_BYTES`), yielding each
    piece's records in row order (at least one frame); records with the wrong number of fields are kept
    with ``_error``. The file is never held whole: read and decoded a chunk at a time, first to tell its
    encoding (:func:`encoding_of`), then to parse it. The file's problems are added to ``problems`` once
    its last piece is parsed.

    Every record is counted: a field larger than pyarrow's block is read with a block as large as
    its piece, and a header naming a declared column twice flags every record (which of the two
    columns holds the value cannot be known). A file in another encoding than the catalogue's
    is read in the encoding that fits and every record quarantined as ``wrong_encoding``.
    """
    read_as, wrong = encoding_of(data, source, encoding)
    texts = data.texts(read_as)
    text, bom = "", True
    for more in texts:  # up to the end of the header line (undecodable bytes become U+FFFD, flagged per field)
        text += more
        if bom and text:
            text, bom = text.removeprefix("\ufeff"), False
        if "\n" in text:
            break
    end = text.find("\n")
    header_line = text if end < 0 else text[:end]
    header = [h.strip().strip('"') for h in header_line.rstrip("\r").split(delimiter)]
    mine: list[str] = []
    names, duplicated = _unique_names(header)
    missing = [c for c in columns if c not in header]
    ambiguous = [h for h in duplicated if h in columns]
    for h, where in duplicated.items():
        at = ", ".join(str(i + 1) for i in where)
        mine.append(f"{source}: 表头列名 {h} 重复 (第 {at} 列)" + (
            ", 无法确定取哪一列, 全部记录隔离" if h in columns else ", 该列不在目录中, 已忽略"))
    error = None
    if missing:
        mine.append(f"{source}: 表头缺少列 {', '.join(missing)} (期望: {', '.join(columns)})")
        error = f"表头缺少列 {', '.join(missing)}"
    elif ambiguous:
        error = f"表头列名重复: {', '.join(ambiguous)}"
    if wrong:  # the one reason for every record of the file, whatever else is wrong with it
        error = record_error(WRONG_ENCODING, wrong)
    records = lines = bad_count = 0
    first_bad: list[int] = []

    def parse(piece: str, first: bool) -> pl.DataFrame:
        nonlocal records, lines, bad_count
        encoded = piece.encode("utf-8")
        table, bad = _read_csv(encoded, names, delimiter, min(len(encoded) + 1, _MAX_BLOCK), header=first)
        frame = pl.from_arrow(table)
        assert isinstance(frame, pl.DataFrame)
        del table, encoded
        # a line number counts the header in the first piece, and the line itself in the others
        shift = lines + (0 if first else 1)
        bad = [(n + shift, t, e) for n, t, e in bad]
        # the physical line numbers of the skipped records tell where the good ones sit
        good_rows = pl.int_range(records + 1, records + frame.height + len(bad) + 1, dtype=pl.Int64, eager=True)
        if bad:
            good_rows = good_rows.filter(~good_rows.is_in([n for n, _, _ in bad]))
        frame = frame.with_columns(good_rows.alias("_row_no"))
        records += frame.height + len(bad)
        lines += piece.count("\n") - (1 if first else 0)
        bad_count += len(bad)
        first_bad.extend(n for n, _, _ in bad[:5 - len(first_bad)])
        if error:
            frame = _whole_record(frame, names, delimiter, error)
        broken = None
        if bad:
            broken = _finish(pl.DataFrame(
                {"_row_no": [n for n, _, _ in bad], "_raw": [t for _, t, _ in bad],
                 "_error": [record_error(WRONG_ENCODING, wrong) if wrong else e for _, _, e in bad]},
                schema={"_row_no": pl.Int64, "_raw": pl.String, "_error": pl.String},
            ), columns, source)
        frame = _finish(frame, columns, source)
        # an invalid record between the piece's good ones, by its line number
        return pl.concat([frame, broken]).sort("_row_no") if broken is not None else frame

    first = True
    for more in texts:
        text += more
        at = 0  # pieces end at the first line end after CSV_PIECE_BYTES characters
        while (cut := text.find("\n", at + CSV_PIECE_BYTES - 1)) >= 0:
            yield parse(text[at:cut + 1], first)
            at, first = cut + 1, False
        text = text[at:]
    if text or first:
        yield parse(text, first)
    if bad_count:
        mine.append(f"{source}: {bad_count} 行列数不符 (第 {', '.join(str(n) for n in first_bad)}"
                    f"{' …' if bad_count > 5 else ''} 行)")
    if wrong:
        mine.append(f"{wrong} (共 {records} 条记录)")
    problems.extend(mine)


def _unique_names(header: list[str]) -> tuple[list[str], dict[str, list[int]]]:
    """Column names pyarrow and polars accept (a repeated name gets ``#2``, ``#3`` …) and where
    each repeated name stands in the header."""
    seen: dict[str, list[int]] = {}
    for i, h in enumerate(header):
        seen.setdefault(h, []).append(i)
    names = list(header)
    for h, where in seen.items():
        for k, i in enumerate(where[1:], start=2):
            names[i] = f"{h}#{k}"
    return names, {h: where for h, where in seen.items() if len(where) > 1}


CSV_PIECE_BYTES = 4 * 2**20
"""A delimited file is parsed a piece of at least this many characters (whole lines) at a time (about
80,000 参保 records): the
text, the Arrow table and the frame made of it are never held for the whole file, and a field larger
than pyarrow's default block fits the piece's own block."""


def _read_csv(encoded: bytes | memoryview, names: list[str], delimiter: str, block_size: int | None,
              header: bool = True) -> tuple[pa.Table, list]:
    bad: list[tuple[int, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number - 1, row.text, f"列数不符: 期望 {row.expected_columns} 列, 实际 {row.actual_columns} 列"))
        return "skip"

    read = pacsv.ReadOptions(use_threads=False, column_names=names, skip_rows=1 if header else 0,
                             **({"block_size": block_size} if block_size else {}))
    table = pacsv.read_csv(
        pa.BufferReader(pa.py_buffer(encoded)),
        read_options=read,
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in names}, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    return table, bad


# --- XLSX ------------------------------------------------------------------------------------


def parse_xlsx(data: bytes, source: str, columns: list[str], sheet: str | None) -> tuple[pl.DataFrame, list[str]]:
    """Read the sheet with calamine (cached cell values, every value as text).

    calamine gives NULL for a formula cell whose workbook holds no computed value (written by a
    program that cannot calculate): such cells are looked up in the sheet's XML — only when the
    sheet has empty cells at all — and get :data:`FORMULA_MARK` so the 标准层 flags them.
    """
    kwargs = {"sheet_name": sheet} if sheet else {"sheet_id": 1}
    frame = pl.read_excel(io.BytesIO(data), engine="calamine", infer_schema_length=0, raise_if_empty=False, **kwargs)
    problems = []
    if frame.height and frame.null_count().sum_horizontal().item():
        formulas = formula_cells_without_value(data, sheet)
        if formulas:
            frame, lost = _mark_formulas(data, kwargs, formulas)
            problems.append(f"{source}: {len(formulas)} 个公式单元格没有计算结果 "
                            f"({', '.join(c for c, _ in formulas[:5])}{' …' if len(formulas) > 5 else ''})")
            if lost:
                problems.append(f"{source}: 公式单元格 {', '.join(lost)} 在表头所在区域之外, 未能对应到记录")
    frame = frame.with_row_index("_row_no", offset=1)
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        problems.append(f"{source}: 表头缺少列 {', '.join(missing)} (期望: {', '.join(columns)})")
        frame = _whole_record(frame, [c for c in frame.columns if c != "_row_no"], ",", f"表头缺少列 {', '.join(missing)}")
    return _finish(frame, columns, source), problems


_CELL_REF = re.compile(rb'\br="([A-Z]+)([0-9]+)"')
# A formula element not followed by a cached value (<v>…</v>; <v/> and no <v> are "no value").
_FORMULA_WITHOUT_VALUE = re.compile(rb"<f\b[^>]*?(?:/>|>([^<]*)</f>)(?!\s*<v>)")
# The first cell with a value (calamine's table starts there): not a self-closing <c/>, and its
# value inside the same <c>.
_VALUED_CELL = re.compile(rb'<c\b[^>]*?\br="([A-Z]+)([0-9]+)"[^>]*(?<!/)>(?:(?!</c>|<c\b).)*?<(?:v>[^<]|is>)', re.S)


def formula_cells_without_value(data: bytes, sheet: str | None) -> list[tuple[str, str]]:
    """(cell, formula) of every formula cell of the sheet that holds no computed value.

    The sheet's XML is searched only if it has a formula at all (every formula has a ``</f>``, a
    shared one's master included): on a 300,000-row sheet with empty cells and no formula, the
    decompression and that test cost 0.1–0.2 s beside calamine's 1.7 s.
    """
    xml = _sheet_xml(data, sheet, only_if=b"</f>")
    if xml is None:
        return []
    out = []
    for m in _FORMULA_WITHOUT_VALUE.finditer(xml):
        start = xml.rfind(b"<c ", 0, m.start())
        ref = _CELL_REF.search(xml, start, m.start()) if start >= 0 else None
        if ref:
            formula = ElementTree.fromstring(b"<f>" + (m.group(1) or b"") + b"</f>").text or ""
            out.append((ref.group(1).decode() + ref.group(2).decode(), formula))
    return out


def _sheet_xml(data: bytes, sheet: str | None, only_if: bytes | None = None) -> bytes | None:
    """The worksheet part of a sheet (by name, else the first), from the workbook's relationships;
    None when it does not contain ``only_if``."""
    ns = {"m": "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
          "r": "http://schemas.openxmlformats.org/officeDocument/2006/relationships",
          "p": "http://schemas.openxmlformats.org/package/2006/relationships"}
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        book = ElementTree.fromstring(z.read("xl/workbook.xml"))
        sheets = book.findall("m:sheets/m:sheet", ns)
        chosen = next((s for s in sheets if s.get("name") == sheet), None) if sheet else (sheets[0] if sheets else None)
        if chosen is None:
            return None
        rid = chosen.get(f"{{{ns['r']}}}id")
        rels = ElementTree.fromstring(z.read("xl/_rels/workbook.xml.rels"))
        target = next((r.get("Target") for r in rels.findall("p:Relationship", ns) if r.get("Id") == rid), None)
        if not target:
            return None
        part = target.lstrip("/") if target.startswith("/") else str(PurePosixPath("xl") / target)
        xml = z.read(part)
        return xml if only_if is None or only_if in xml else None


def _column_index(letters: str) -> int:
    n = 0
    for ch in letters:
        n = n * 26 + ord(ch) - 64
    return n - 1


def _mark_formulas(data: bytes, kwargs: dict, formulas: list[tuple[str, str]]) -> tuple[pl.DataFrame, list[str]]:
    """The sheet with every formula cell lacking a value marked, and cells outside the table.

    calamine's table starts at the first cell with a value (its header row) and has no row for a
    record whose cells are all valueless formulas: such rows are read as empty rows (kept here) and
    the rows that stay empty dropped afterwards, as polars would drop them.
    """
    frame = pl.read_excel(io.BytesIO(data), engine="calamine", infer_schema_length=0, raise_if_empty=False,
                          drop_empty_rows=False, drop_empty_cols=False, **kwargs)
    first = _VALUED_CELL.search(_sheet_xml(data, kwargs.get("sheet_name")) or b"")
    top, left = (int(first.group(2)), _column_index(first.group(1).decode())) if first else (1, 0)
    cells: dict[str, tuple[list[int], list[str]]] = {}
    lost = []
    for ref, formula in formulas:
        letters = ref.rstrip("0123456789")
        row, col = int(ref[len(letters):]) - top - 1, _column_index(letters) - left
        if row < 0 or not 0 <= col < frame.width:
            lost.append(ref)
            continue
        rows, values = cells.setdefault(frame.columns[col], ([], []))
        rows.append(row)
        values.append(f"{FORMULA_MARK}{ref}={formula}")
    height = max([frame.height, *[r + 1 for rows, _ in cells.values() for r in rows]])
    if height > frame.height:  # records below the table whose cells are all valueless formulas
        frame = pl.concat([frame, pl.DataFrame(schema=frame.schema).clear(height - frame.height)])
    frame = frame.with_columns(
        frame.get_column(c).scatter(rows, values) for c, (rows, values) in cells.items())
    unnamed = [c for c in frame.columns if re.match(r"__UNNAMED__\d+$", c) and frame.get_column(c).null_count() == height]
    return frame.drop(unnamed).filter(~pl.all_horizontal(pl.all().is_null())), lost


# --- JSON ------------------------------------------------------------------------------------


def parse_json_file(data: bytes, source: str, columns: list[str], encoding: str) -> tuple[pl.DataFrame, list[str]]:
    """A JSON array of records; in another encoding than the catalogue's, every record flagged."""
    decoded = decode(data, source, encoding)
    frame, problems = parse_json_records(json.loads(decoded.text.removeprefix("\ufeff")), source, columns)
    if decoded.wrong and frame.height:
        frame = _whole_record(frame, columns, ",", record_error(WRONG_ENCODING, decoded.wrong))
        problems.append(f"{decoded.wrong} (共 {frame.height} 条记录)")
    return frame, problems


def parse_json_records(records: object, source: str, columns: list[str]) -> tuple[pl.DataFrame, list[str]]:
    if not isinstance(records, list):
        raise ValueError("期望 JSON 数组")
    frame = pl.from_dicts(records, schema={c: pl.String for c in columns}, strict=False) if records else None
    if frame is None:
        return empty_frame(columns), []
    return _finish(frame.with_row_index("_row_no", offset=1), columns, source), []


# --- 前置库 -----------------------------------------------------------------------------------


def database_url(ch: DatabaseChannel, landing: Path, variables: Mapping[str, str] | None = None) -> str:
    """The 前置库 URL: the value of the channel's ``url_env`` in ``variables``, else its ``default_url``."""
    url = (variables or {}).get(ch.url_env)
    if url:
        return url
    if ch.default_url:
        return ch.default_url.replace("{landing}", str(landing.resolve()))
    raise DeliveryError(f"环境变量 {ch.url_env} 未设置, 无法连接前置库")


def read_database(
    resource: Resource, batch_date: dt.date, landing: Path, watermark_low: str | None,
    variables: Mapping[str, str] | None = None,
) -> Delivery:
    """Rows whose watermark lies in [``watermark_low``, the next day 00:00) (no lower bound when None),
    as one frame (:func:`open_database` reads them a page at a time).

    Both bounds come from the batch date alone (:func:`guiji.ods.read_window`), so a partition reads
    the same rows whenever and in whatever order it runs.
    """
    reading = open_database(resource, batch_date, landing, watermark_low, variables)
    frame = pl.concat(list(reading.pages()))
    return Delivery(frame, [reading.source], reading.content_hash, watermark_high=reading.watermark_high)


@dataclass
class DatabaseRead:
    """A 前置库 delivery read a page at a time: :meth:`pages` yields its records in the ODS shape, in
    order, numbered from 1; once every page is read, ``rows``, ``content_hash`` and ``watermark_high``
    describe the whole delivery (what :func:`read_database` returns with it)."""

    source: str
    columns: list[str]
    watermark: str
    fetch: Callable[[], Iterator[pl.DataFrame]]
    rows: int = 0
    content_hash: str = ""
    watermark_high: str | None = None

    def pages(self) -> Iterator[pl.DataFrame]:
        digest, rows, high = RowDigest(), 0, None
        for page in self.fetch():
            page = _finish(page.with_row_index("_row_no", offset=rows + 1), self.columns, self.source)
            digest.update(page.select(self.columns))
            rows += page.height
            top = page.get_column(self.watermark).max()
            if top is not None and (high is None or top > high):
                high = top
            yield page
        self.rows, self.content_hash, self.watermark_high = rows, digest.hexdigest() if rows else "", high


def open_database(
    resource: Resource, batch_date: dt.date, landing: Path, watermark_low: str | None,
    variables: Mapping[str, str] | None = None,
) -> DatabaseRead:
    """The 前置库 delivery of ``batch_date`` (see :func:`read_database`), to be read a page at a time."""
    ch = resource.channel
    assert isinstance(ch, DatabaseChannel)
    columns = source_columns(resource)
    url = database_url(ch, landing, variables)
    wm = ch.watermark
    high = (batch_date + dt.timedelta(days=1)).strftime("%Y-%m-%d 00:00:00")
    params = {"high": high, **({"low": watermark_low} if watermark_low else {})}
    source = f"{ch.table or 'query'}@{PurePosixPath(sa.engine.make_url(url).database or '').name}"

    def fetch() -> Iterator[pl.DataFrame]:
        engine = sa.create_engine(url, hide_parameters=True)  # an error names no watermark value
        q = engine.dialect.identifier_preparer.quote
        src = ch.query if ch.query else f"SELECT * FROM {q(ch.table)}"
        where = f"{q(wm)} < :high" + (f" AND {q(wm)} >= :low" if watermark_low else "")
        cols = ", ".join(q(c) for c in columns)
        # The rows in a deterministic order: the watermark, then every column, each compared as text
        # byte by byte with NULL last — polars' order of the text values. Where the 前置库 can give
        # that order (SQLite, PostgreSQL with COLLATE "C") it sorts, and the rows arrive a page at a
        # time already in place: sorting here needs the whole delivery twice over.
        order = [wm, *[c for c in columns if c != wm]]
        sql = f"SELECT {cols} FROM ({src}) AS src WHERE {where}"
        shown = safe_url(url)
        try:
            if engine.dialect.name in ("sqlite", "postgresql"):
                yield from _fetch_arrow(engine, sql + _text_order(engine, order), params, columns)
                return
            with engine.connect() as conn:
                rows = conn.execute(sa.text(sql), params).fetchall()
            frame = pl.DataFrame([tuple(r) for r in rows], schema=columns, orient="row", infer_schema_length=None) \
                if rows else pl.DataFrame(schema={c: pl.String for c in columns})
            yield _as_text(frame, columns).sort(order, nulls_last=True)
        except sa.exc.SQLAlchemyError as exc:
            raise DeliveryError(scrub(
                f"前置库 {shown} 读取失败: {type(exc).__name__}: {exc.orig if hasattr(exc, 'orig') else exc}", url
            )) from None
        except Exception as exc:  # the ADBC drivers raise their own DB-API errors
            if type(exc).__module__.startswith(("adbc_driver", "_adbc")):
                raise DeliveryError(scrub(f"前置库 {shown} 读取失败: {type(exc).__name__}: {_first_line(exc)}",
                                          url)) from None
            raise
        finally:
            engine.dispose()

    return DatabaseRead(source, columns, wm, fetch)


DIGEST_SLICE_ROWS = 100_000


class RowDigest:
    """SHA-256 of a text frame's rows in order, fed a frame (or a page of one) at a time: equal rows in
    equal order, equal digests, in any version and whatever the pages.

    Each row is hashed natively (polars-hash, SHA-256 of its fields joined by a unit separator,
    NULL marked apart from the empty string); the digest is the SHA-256 of those row digests.
    """

    def __init__(self) -> None:
        self._sha = hashlib.sha256()

    def update(self, frame: pl.DataFrame) -> None:
        row = plh.concat_str(
            [pl.when(pl.col(c).is_null()).then(pl.lit("\x00N")).otherwise(pl.lit("\x00V") + pl.col(c))
             for c in frame.columns],
            separator="\x1f",
        )
        for i in range(0, frame.height, DIGEST_SLICE_ROWS):  # the joined row text of a slice at a time
            self._sha.update(frame.slice(i, DIGEST_SLICE_ROWS).select(row.chash.sha2_256().str.join("")).item().encode())

    def hexdigest(self) -> str:
        return self._sha.hexdigest()


def frame_digest(frame: pl.DataFrame) -> str:
    """:class:`RowDigest` of a whole frame."""
    digest = RowDigest()
    digest.update(frame)
    return digest.hexdigest()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


FETCH_PAGE_ROWS = 100_000


def _text_order(engine: sa.Engine, columns: list[str]) -> str:
    """``ORDER BY`` the columns as text, byte by byte, NULL last (polars' order of text values), for the
    databases read over ADBC; empty for others (their rows are sorted once read)."""
    q = engine.dialect.identifier_preparer.quote
    if engine.dialect.name == "sqlite":  # BINARY collation: memcmp of the UTF-8 bytes
        return " ORDER BY " + ", ".join(f"CAST({q(c)} AS TEXT) NULLS LAST" for c in columns)
    if engine.dialect.name == "postgresql":
        return " ORDER BY " + ", ".join(f'CAST({q(c)} AS TEXT) COLLATE "C" NULLS LAST' for c in columns)
    return ""


def _as_text(frame: pl.DataFrame, columns: list[str]) -> pl.DataFrame:
    """Every value as text, whatever the source column's type (ODS keeps what was delivered)."""
    return frame.select([pl.col(c).cast(pl.String) for c in columns])


def _fetch_arrow(engine: sa.Engine, sql: str, params: dict[str, str], columns: list[str]) -> Iterator[pl.DataFrame]:
    """The query's rows, as text, straight from the driver (ADBC; SQLite and PostgreSQL 前置库), a page of
    :data:`FETCH_PAGE_ROWS` at a time (at least one page, empty for no rows): the Arrow result is never
    held whole, nor beside a frame made of it."""
    conn = adbc_connect(engine)
    try:
        with conn.cursor() as cur:
            cur.execute(literal_sql(engine, sql, params))
            for table in arrow_pages(cur.fetch_record_batch(), FETCH_PAGE_ROWS):
                yield _as_text(pl.from_arrow(table), columns)
    finally:
        conn.close()


# --- credentials ---------------------------------------------------------------------------

# Query parameters whose values are credentials (an API key in the URL, a signed URL, a password).
_SECRET_PARAM = re.compile(r"(^(key|sig|auth|pwd|pass)$|token|secret|passw|signature|credential|api_?key|access_?key)",
                           re.I)
HIDDEN = "***"


_SECRET_IN_QUERY = re.compile(
    r"([?&](?:key|sig|auth|pwd|pass|[^=&#\s]*(?:token|secret|passw|signature|credential|api_?key|access_?key)[^=&#\s]*)=)"
    r"[^&#\s'\"]*", re.I)


class _HideQuerySecrets(logging.Filter):
    """urllib3 logs each retry with the request's path and query (``Retrying … : /path?token=…``,
    at DEBUG ``Incremented Retry for (url=…)``): credential-like query values become ``***`` before
    any handler sees the line."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(_SECRET_IN_QUERY.sub(rf"\1{HIDDEN}", a) if isinstance(a, str) else a
                                for a in record.args)
        return True


for _name in ("urllib3.connectionpool", "urllib3.util.retry", "urllib3.poolmanager"):
    logging.getLogger(_name).addFilter(_HideQuerySecrets())


def safe_url(url: str) -> str:
    """``url`` as it may be shown and stored: no ``user:password@``, credential-like query values
    (token, access_token, key, password, secret, signature …) as ``***``, no fragment. For API and
    SQLAlchemy database URLs alike (``sqlite:////abs/path.db`` keeps its slashes)."""
    parts = urlsplit(url)
    netloc = parts.netloc.rpartition("@")[2]
    query = "&".join(
        f"{k}={HIDDEN}" if _SECRET_PARAM.search(unquote(k)) else (f"{k}={v}" if sep else k)
        for k, sep, v in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if not parts.scheme or not url.startswith(f"{parts.scheme}://"):
        return urlunsplit((parts.scheme, netloc, parts.path, query, ""))
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def url_secrets(url: str) -> list[str]:
    """The credential values inside ``url`` (password, credential-like query values), as written and decoded."""
    parts = urlsplit(url)
    found = []
    userinfo = parts.netloc.rpartition("@")[0]
    if ":" in userinfo:
        found.append(userinfo.partition(":")[2])
    found += [v for k, _, v in (item.partition("=") for item in parts.query.split("&") if item)
              if v and _SECRET_PARAM.search(unquote(k))]
    return sorted({s for v in found for s in (v, unquote(v)) if s}, key=len, reverse=True)


def scrub(text: str, url: str) -> str:
    """``text`` (an error message, a driver's) with every credential of ``url`` replaced by ``***``."""
    for secret in url_secrets(url):
        if len(secret) >= 3:  # shorter ones would blank out page numbers; the URL itself is never shown raw
            text = text.replace(secret, HIDDEN)
    return text


# --- API -------------------------------------------------------------------------------------

RETRY_STATUS = (429, 500, 502, 503, 504)


def api_url(ch: ApiChannel, variables: Mapping[str, str] | None = None) -> str:
    """The API URL: the value of the channel's ``url_env`` in ``variables``, else its ``url``."""
    return (variables or {}).get(ch.url_env or "") or ch.url


def api_session(ch: ApiChannel) -> requests.Session:
    """A session that retries GETs on connection errors, timeouts and 429/5xx answers.

    urllib3's ``Retry``: at most ``retries`` more attempts, the first at once, then exponential
    backoff (0.4 s, 0.8 s … up to 5 s), a server's ``Retry-After`` respected up to 30 s; after the
    last attempt the answer is returned as it is, and :func:`read_api` names it.
    """
    retry = Retry(total=ch.retries, backoff_factor=0.2, backoff_max=5, status_forcelist=RETRY_STATUS,
                  allowed_methods=frozenset({"GET"}), respect_retry_after_header=True, retry_after_max=30,
                  raise_on_status=False)
    session = requests.Session()
    adapter = HTTPAdapter(max_retries=retry)
    session.mount("http://", adapter)
    session.mount("https://", adapter)
    return session


def read_api(
    resource: Resource, ch: ApiChannel, batch_date: dt.date, variables: Mapping[str, str] | None = None
) -> Delivery:
    """Fetch every page for the batch date: retried (:func:`api_session`), bounded by
    ``max_pages`` and ``max_seconds`` per delivery; every error names the URL (credentials
    hidden) and the page. URL and bearer token: the channel's ``url_env`` and ``auth_env`` in ``variables``."""
    columns = source_columns(resource)
    url = api_url(ch, variables)
    shown = safe_url(url)
    headers = {}
    token = (variables or {}).get(ch.auth_env or "")
    if token:
        headers["Authorization"] = f"Bearer {token}"
    digest = hashlib.sha256()
    records: list[dict] = []
    page, total = 1, 1
    deadline = time.monotonic() + ch.max_seconds

    def fail(why: str) -> DeliveryError:
        return DeliveryError(scrub(f"接口 {shown} 第 {page} 页{why}", url))

    with api_session(ch) as session:
        while page <= total:
            left = deadline - time.monotonic()
            over_time = f": 超过每次交付的时间上限 {ch.max_seconds:g} 秒 (已读 {page - 1} 页), 本次交付未入库"
            if left <= 0:
                raise fail(over_time)
            params = {ch.date_param: batch_date.isoformat(), ch.page_param: page, ch.page_size_param: ch.page_size}
            try:
                # the last page of the budget waits only for what is left of it
                resp = session.get(url, params=params, headers=headers, timeout=min(ch.timeout_s, left))
            except requests.RequestException as exc:
                if left < ch.timeout_s and isinstance(exc, requests.Timeout | requests.ConnectionError):
                    raise fail(f"{over_time} ({_request_error(exc)})") from None
                raise fail(f"在 {ch.retries + 1} 次尝试后仍失败: {_request_error(exc)}") from None
            if resp.status_code == 404 and page == 1:
                break  # nothing delivered for that date
            if resp.status_code in RETRY_STATUS:
                raise fail(f"在 {ch.retries + 1} 次尝试后仍失败: HTTP {resp.status_code}")
            if resp.status_code >= 400:
                raise fail(f"被拒绝: HTTP {resp.status_code}")
            body = resp.content
            digest.update(body)
            try:
                doc = json.loads(body)
            except ValueError as exc:
                raise fail(f"返回的不是合法 JSON: {exc}") from None
            items = doc.get(ch.items_field) if isinstance(doc, dict) else None
            try:
                if not isinstance(doc, dict) or not isinstance(items, list | None):
                    raise ValueError
                total = int(doc.get(ch.total_pages_field, 1) or 0)
            except (TypeError, ValueError):
                raise fail(f"返回内容不符合约定 (期望 JSON 对象, {ch.items_field} 为数组, "
                           f"{ch.total_pages_field} 为页数)") from None
            if total > ch.max_pages:
                raise fail(f": 接口声明共 {total} 页, 超过每次交付的页数上限 {ch.max_pages} 页, 本次交付未入库")
            records.extend(items or [])
            page += 1
    parsed = urlsplit(shown)
    source = f"{parsed.netloc}{parsed.path}?{ch.date_param}={batch_date.isoformat()}"
    if not records:
        return Delivery(empty_frame(columns), [source], "")
    frame, problems = parse_json_records(records, source, columns)
    return Delivery(frame, [source], digest.hexdigest(), problems=problems)


def _request_error(exc: requests.RequestException) -> str:
    """What went wrong, without the request's URL (urllib3 puts path and query into its messages)."""
    reason = exc.args[0] if exc.args else exc
    reason = getattr(reason, "reason", reason)  # MaxRetryError → the last underlying error
    text = _first_line(reason) if isinstance(reason, Exception) else str(reason)
    return f"{type(reason).__name__}: {text}" if isinstance(reason, Exception) else f"{type(exc).__name__}: {text}"
