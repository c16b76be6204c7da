"""Write a delivery through its channel, byte for byte reproducibly.

* file csv: header + rows, the channel's encoding and delimiter, "\\n" line ends, quoting only
  where needed; defect markers become a missing/extra delimiter or undecodable bytes;
* file xlsx: one sheet, every cell a string (xlsxwriter, constant memory, fixed document dates);
* file json and api: a UTF-8 array of objects (the api at ``api/<url path>/<YYYYMMDD>.json``);
* database: a SQLite 前置库 at the channel's ``default_url``, TEXT columns plus the watermark.
"""

from __future__ import annotations

import datetime as dt
import io
import sqlite3
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import xlsxwriter

from catalog.models import ApiChannel, DatabaseChannel, FileChannel, Resource
from generator.defects import BAD_BYTES, MARK_BAD, MARK_EXTRA, MARK_JOIN

XLSX_MAX_ROWS = 1_048_575  # one header row + data rows per sheet
CHUNK = 200_000


def file_path(out: Path, resource: Resource, day: dt.date) -> Path:
    """Where a file delivery goes: the channel path for the date, ``*`` → ``<code>_<YYYYMMDD>``."""
    ch = resource.channel
    assert isinstance(ch, FileChannel)
    rel = ch.path.replace("*", f"{resource.code}_{day:%Y%m%d}").format(date=day)
    return out / rel


def api_path(out: Path, resource: Resource, day: dt.date) -> Path:
    """Where an API delivery goes: ``api/<url path>/<YYYYMMDD>.json``."""
    ch = resource.channel
    assert isinstance(ch, ApiChannel)
    return out / "api" / urlparse(ch.url).path.strip("/") / f"{day:%Y%m%d}.json"


def sqlite_path(out: Path, resource: Resource) -> Path:
    """The SQLite file of a 前置库 channel (its default_url with ``{landing}`` = out)."""
    ch = resource.channel
    assert isinstance(ch, DatabaseChannel)
    url = (ch.default_url or "").replace("{landing}", str(out.resolve()))
    if not url.startswith("sqlite:///"):
        raise ValueError(f"{resource.id}: 生成器只能写 SQLite 前置库, 请设 channel.default_url 为 sqlite:///{{landing}}/…")
    return Path(url.removeprefix("sqlite:///"))


class Writer:
    """Writes deliveries under ``out``; SQLite files are recreated on first use in a run."""

    def __init__(self, out: Path):
        self.out = out
        self._fresh_db: set[Path] = set()
        self._tables: set[tuple[Path, str]] = set()

    def write(self, resource: Resource, day: dt.date, frame: pl.DataFrame) -> str:
        """Write one delivery; returns where it went, relative to ``out``."""
        ch = resource.channel
        if isinstance(ch, FileChannel):
            path = file_path(self.out, resource, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            if ch.format == "csv":
                write_csv(path, frame, ch.encoding, ch.delimiter)
            elif ch.format == "xlsx":
                write_xlsx(path, frame, ch.sheet or "Sheet1", day)
            else:
                write_json(path, frame)
            return str(path.relative_to(self.out))
        if isinstance(ch, ApiChannel):
            path = api_path(self.out, resource, day)
            path.parent.mkdir(parents=True, exist_ok=True)
            write_json(path, frame)
            return str(path.relative_to(self.out))
        path = sqlite_path(self.out, resource)
        table = ch.table or resource.id
        self._write_sqlite(path, table, frame)
        return f"{path.relative_to(self.out.resolve())}#{table}"

    def _write_sqlite(self, path: Path, table: str, frame: pl.DataFrame) -> None:
        if path not in self._fresh_db:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.unlink(missing_ok=True)
            self._fresh_db.add(path)
        con = sqlite3.connect(path)
        try:
            con.execute("PRAGMA journal_mode=OFF")
            con.execute("PRAGMA synchronous=OFF")
            q = '"{}"'.format
            if (path, table) not in self._tables:
                con.execute(f"CREATE TABLE {q(table)} ({', '.join(f'{q(c)} TEXT' for c in frame.columns)})")
                self._tables.add((path, table))
            sql = f"INSERT INTO {q(table)} VALUES ({', '.join('?' * frame.width)})"
            for start in range(0, frame.height, CHUNK):
                con.executemany(sql, frame.slice(start, CHUNK).rows())
            con.commit()
        finally:
            con.close()


def _replace_markers(data: bytes, delimiter: bytes) -> bytes:
    if b"\x01" not in data:
        return data
    return (data.replace(MARK_JOIN.encode() + delimiter, b"").replace(MARK_EXTRA.encode(), delimiter)
            .replace(MARK_BAD.encode(), BAD_BYTES))


def write_csv(path: Path, frame: pl.DataFrame, encoding: str, delimiter: str) -> None:
    """Header + rows; re-encoded in chunks so a 10-million-row GBK file never sits in memory twice."""
    delim = delimiter.encode(encoding)
    with path.open("wb") as fh:
        for start in range(0, max(frame.height, 1), CHUNK):
            part = frame.slice(start, CHUNK)
            buf = io.BytesIO()
            part.write_csv(buf, separator=delimiter, quote_style="necessary", line_terminator="\n",
                           include_header=start == 0)
            data = buf.getvalue()
            if encoding.replace("-", "").lower() != "utf8":
                try:
                    data = data.decode("utf-8").encode(encoding)
                except UnicodeEncodeError as exc:
                    raise ValueError(f"{path}: 文本无法用 {encoding} 编码: {exc}") from None
            fh.write(_replace_markers(data, delim))


def write_xlsx(path: Path, frame: pl.DataFrame, sheet: str, day: dt.date) -> None:
    """One sheet, a header row, every cell a string (empty cells left blank)."""
    if frame.height > XLSX_MAX_ROWS:
        raise ValueError(f"{path}: {frame.height} 行超出 xlsx 单表上限 {XLSX_MAX_ROWS} 行 (请降低该资源的 coverage)")
    wb = xlsxwriter.Workbook(str(path), {"constant_memory": True, "strings_to_numbers": False,
                                         "strings_to_formulas": False, "strings_to_urls": False})
    # a fixed creation time (the batch date) keeps the file byte-identical between runs
    wb.set_properties({"created": dt.datetime.combine(day, dt.time())})
    ws = wb.add_worksheet(sheet)
    ws.write_row(0, 0, frame.columns)
    for i, row in enumerate(frame.iter_rows(), start=1):
        for j, v in enumerate(row):
            if v is not None and v != "":
                ws.write_string(i, j, v)
    wb.close()


def write_json(path: Path, frame: pl.DataFrame) -> None:
    """A UTF-8 JSON array of objects, keys in column order, missing values as null."""
    frame.write_json(path)
