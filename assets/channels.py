"""Read one batch of a resource from its delivery channel: file, 前置库 (database) or API.

Every reader returns a :class:`Delivery`: all values as text, exactly as received, one row per
delivered record, with ``_row_no`` (1-based record number inside its source), ``_source`` and,
for records that could not be split into the declared columns, ``_raw`` (the record's text) and
``_error`` (why). Nothing is dropped here: rows delivered = rows in the frame.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import io
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import polars as pl
import polars_hash as plh
import pyarrow as pa
import pyarrow.csv as pacsv
import requests
import sqlalchemy as sa

from catalog.models import ApiChannel, DatabaseChannel, FileChannel, Resource
from warehouse.store import adbc_connect, literal_sql

META_COLUMNS = ("_row_no", "_source", "_raw", "_error")
REPLACEMENT = "\ufffd"  # what undecodable bytes become; the 标准层 quarantines such values


class DeliveryError(RuntimeError):
    """A channel could not be read at all (server down, database unreachable)."""


@dataclass
class Delivery:
    frame: pl.DataFrame
    sources: list[str]
    content_hash: str
    watermark_high: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return self.frame.height


def source_columns(resource: Resource) -> list[str]:
    """The department columns of a resource as stored in ODS (plus the watermark column)."""
    cols = [f.column for f in resource.fields]
    ch = resource.channel
    if isinstance(ch, DatabaseChannel) and ch.watermark not in cols:
        cols.append(ch.watermark)
    return cols


def empty_frame(columns: list[str]) -> pl.DataFrame:
    schema = {"_row_no": pl.Int64, "_source": pl.String, "_raw": pl.String, "_error": pl.String}
    schema.update({c: pl.String for c in columns})
    return pl.DataFrame(schema=schema)


def _finish(frame: pl.DataFrame, columns: list[str], source: str) -> pl.DataFrame:
    """Give a parsed frame the full ODS shape: meta columns first, every declared column."""
    exprs = [pl.col(c).cast(pl.String) if c in frame.columns else pl.lit(None, pl.String).alias(c) for c in columns]
    meta = [
        pl.col("_row_no").cast(pl.Int64),
        pl.lit(source).alias("_source"),
        (pl.col("_raw") if "_raw" in frame.columns else pl.lit(None, pl.String)).cast(pl.String).alias("_raw"),
        (pl.col("_error") if "_error" in frame.columns else pl.lit(None, pl.String)).cast(pl.String).alias("_error"),
    ]
    return frame.select(meta + exprs)


def read_delivery(resource: Resource, batch_date: dt.date, landing: Path) -> Delivery:
    """Read the batch of ``resource`` for ``batch_date`` through its channel."""
    ch = resource.channel
    if isinstance(ch, FileChannel):
        return read_files(resource, ch, batch_date, landing)
    if isinstance(ch, DatabaseChannel):
        raise TypeError("database channels need the previous watermark: call read_database()")
    return read_api(resource, ch, batch_date)


# --- files -----------------------------------------------------------------------------------


def delivery_files(ch: FileChannel, batch_date: dt.date, landing: Path) -> list[Path]:
    pattern = ch.path.replace("{date:%Y%m%d}", batch_date.strftime("%Y%m%d")).replace(
        "{date}", batch_date.isoformat()
    )
    return sorted(Path(p) for p in glob.glob(str(landing / pattern)))


def read_files(resource: Resource, ch: FileChannel, batch_date: dt.date, landing: Path) -> Delivery:
    columns = source_columns(resource)
    files = delivery_files(ch, batch_date, landing)
    frames, problems, digest = [], [], hashlib.sha256()
    for path in files:
        data = path.read_bytes()
        digest.update(path.name.encode() + b"\0" + hashlib.sha256(data).digest())
        try:
            if ch.format == "csv":
                frame, file_problems = parse_csv(data, path.name, columns, ch.encoding, ch.delimiter)
            elif ch.format == "xlsx":
                frame, file_problems = parse_xlsx(data, path.name, columns, ch.sheet)
            else:
                frame, file_problems = parse_json_records(json.loads(data.decode(ch.encoding)), path.name, columns)
        except Exception as exc:  # a file that is not a csv/xlsx/json at all
            problems.append(f"{path.name}: 无法读取 ({ch.format}): {type(exc).__name__}: {exc}")
            continue
        frames.append(frame)
        problems.extend(file_problems)
    frame = pl.concat(frames, how="vertical") if frames else empty_frame(columns)
    return Delivery(frame, [p.name for p in files], digest.hexdigest() if files else "", problems=problems)


def parse_csv(
    data: bytes, source: str, columns: list[str], encoding: str, delimiter: str
) -> tuple[pl.DataFrame, list[str]]:
    """Parse a delimited file; records with the wrong number of fields are kept with ``_error``."""
    # Decode the whole file in one C call; undecodable bytes become U+FFFD and are flagged per
    # field by the 标准层 instead of failing the file.
    text = data.decode(encoding, errors="replace")
    if text.startswith("\ufeff"):
        text = text[1:]
    header_line, _, _ = text.partition("\n")
    header = [h.strip().strip('"') for h in header_line.rstrip("\r").split(delimiter)]
    problems: list[str] = []
    missing = [c for c in columns if c not in header]
    bad: list[tuple[int, str, str]] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        bad.append((row.number - 1, row.text, f"列数不符: 期望 {row.expected_columns} 列, 实际 {row.actual_columns} 列"))
        return "skip"

    table = pacsv.read_csv(
        io.BytesIO(text.encode("utf-8")),
        read_options=pacsv.ReadOptions(use_threads=False, column_names=header, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid, newlines_in_values=False),
        convert_options=pacsv.ConvertOptions(
            column_types={h: pa.string() for h in header}, strings_can_be_null=False, quoted_strings_can_be_null=False
        ),
    )
    frame = pl.from_arrow(table)
    assert isinstance(frame, pl.DataFrame)
    # The physical line numbers of the skipped records tell where the good ones sit.
    total = frame.height + len(bad)
    good_rows = pl.int_range(1, total + 1, dtype=pl.Int64, eager=True)
    if bad:
        good_rows = good_rows.filter(~good_rows.is_in([n for n, _, _ in bad]))
    frame = frame.with_columns(good_rows.alias("_row_no"))
    if missing:
        problems.append(f"{source}: 表头缺少列 {', '.join(missing)} (期望: {', '.join(columns)})")
        frame = frame.with_columns(
            pl.concat_str([pl.col(h) for h in header], separator=delimiter).alias("_raw"),
            pl.lit(f"表头缺少列 {', '.join(missing)}").alias("_error"),
        )
    if bad:
        problems.append(f"{source}: {len(bad)} 行列数不符 (第 {', '.join(str(n) for n, _, _ in bad[:5])}{' …' if len(bad) > 5 else ''} 行)")
        broken = pl.DataFrame(
            {"_row_no": [n for n, _, _ in bad], "_raw": [t for _, t, _ in bad], "_error": [e for _, _, e in bad]},
            schema={"_row_no": pl.Int64, "_raw": pl.String, "_error": pl.String},
        )
        frame = pl.concat([_finish(frame, columns, source), _finish(broken, columns, source)]).sort("_row_no")
        return frame, problems
    return _finish(frame, columns, source), problems


def parse_xlsx(data: bytes, source: str, columns: list[str], sheet: str | None) -> tuple[pl.DataFrame, list[str]]:
    kwargs = {"sheet_name": sheet} if sheet else {"sheet_id": 1}
    frame = pl.read_excel(io.BytesIO(data), engine="calamine", infer_schema_length=0, **kwargs)
    frame = frame.with_row_index("_row_no", offset=1)
    problems = []
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        problems.append(f"{source}: 表头缺少列 {', '.join(missing)} (期望: {', '.join(columns)})")
        frame = frame.with_columns(
            pl.concat_str([pl.col(c).fill_null("") for c in frame.columns if c != "_row_no"], separator=",").alias("_raw"),
            pl.lit(f"表头缺少列 {', '.join(missing)}").alias("_error"),
        )
    return _finish(frame, columns, source), problems


def parse_json_records(records: object, source: str, columns: list[str]) -> tuple[pl.DataFrame, list[str]]:
    if not isinstance(records, list):
        raise ValueError("期望 JSON 数组")
    frame = pl.from_dicts(records, schema={c: pl.String for c in columns}, strict=False) if records else None
    if frame is None:
        return empty_frame(columns), []
    return _finish(frame.with_row_index("_row_no", offset=1), columns, source), []


# --- 前置库 -----------------------------------------------------------------------------------


def database_url(ch: DatabaseChannel, landing: Path) -> str:
    url = os.environ.get(ch.url_env)
    if url:
        return url
    if ch.default_url:
        return ch.default_url.replace("{landing}", str(landing.resolve()))
    raise DeliveryError(f"环境变量 {ch.url_env} 未设置, 无法连接前置库")


def read_database(
    resource: Resource, batch_date: dt.date, landing: Path, watermark_low: str | None
) -> Delivery:
    """Rows whose watermark lies in [``watermark_low``, the next day 00:00) (no lower bound when None).

    Both bounds come from the batch date alone (:func:`assets.ods.read_window`), so a partition reads
    the same rows whenever and in whatever order it runs.
    """
    ch = resource.channel
    assert isinstance(ch, DatabaseChannel)
    columns = source_columns(resource)
    url = database_url(ch, landing)
    engine = sa.create_engine(url)
    wm = ch.watermark
    q = engine.dialect.identifier_preparer.quote
    src = ch.query if ch.query else f"SELECT * FROM {q(ch.table)}"
    high = (batch_date + dt.timedelta(days=1)).strftime("%Y-%m-%d 00:00:00")
    where = f"{q(wm)} < :high" + (f" AND {q(wm)} >= :low" if watermark_low else "")
    cols = ", ".join(q(c) for c in columns)
    # No ORDER BY in the 前置库: the rows are put in a deterministic order (watermark, then every
    # column) here, where sorting a million rows takes a fraction of a second.
    sql = f"SELECT {cols} FROM ({src}) AS src WHERE {where}"
    params = {"high": high, **({"low": watermark_low} if watermark_low else {})}
    shown = engine.url.render_as_string(hide_password=True)
    try:
        frame = _fetch_arrow(engine, sql, params)
        if frame is None:
            with engine.connect() as conn:
                rows = conn.execute(sa.text(sql), params).fetchall()
            frame = pl.DataFrame([tuple(r) for r in rows], schema=columns, orient="row", infer_schema_length=None) \
                if rows else pl.DataFrame(schema={c: pl.String for c in columns})
    except sa.exc.SQLAlchemyError as exc:
        raise DeliveryError(
            f"前置库 {shown} 读取失败: {type(exc).__name__}: {exc.orig if hasattr(exc, 'orig') else exc}"
        ) from None
    except Exception as exc:  # the ADBC drivers raise their own DB-API errors
        if type(exc).__module__.startswith(("adbc_driver", "_adbc")):
            raise DeliveryError(f"前置库 {shown} 读取失败: {type(exc).__name__}: {_first_line(exc)}") from None
        raise
    finally:
        engine.dispose()
    source = f"{ch.table or 'query'}@{shown.split('/')[-1]}"
    # every value as text, whatever the source column's type (ODS keeps what was delivered)
    frame = frame.select([pl.col(c).cast(pl.String) for c in columns])
    frame = frame.sort([wm, *[c for c in columns if c != wm]], nulls_last=True)
    frame = _finish(frame.with_row_index("_row_no", offset=1), columns, source)
    digest = frame_digest(frame.select(columns)) if frame.height else ""
    high_seen = frame.get_column(wm).max() if frame.height else None
    return Delivery(frame, [source], digest, watermark_high=high_seen)


def frame_digest(frame: pl.DataFrame) -> str:
    """SHA-256 of a text frame's rows in order: equal frames, equal digests, in any version.

    Each row is hashed natively (polars-hash, SHA-256 of its fields joined by a unit separator,
    NULL marked apart from the empty string); the digest is the SHA-256 of those row digests.
    """
    row = plh.concat_str(
        [pl.when(pl.col(c).is_null()).then(pl.lit("\x00N")).otherwise(pl.lit("\x00V") + pl.col(c)) for c in frame.columns],
        separator="\x1f",
    )
    hexes = frame.select(row.chash.sha2_256().str.join("")).item()  # joined natively, not per row in Python
    return hashlib.sha256(hexes.encode()).hexdigest()


def _first_line(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [""])[0]


def _fetch_arrow(engine: sa.Engine, sql: str, params: dict[str, str]) -> pl.DataFrame | None:
    """The query's rows as Arrow straight from the driver (ADBC) for SQLite and PostgreSQL 前置库;
    None for other databases (read through SQLAlchemy instead)."""
    if engine.dialect.name not in ("sqlite", "postgresql"):
        return None
    conn = adbc_connect(engine)
    try:
        with conn.cursor() as cur:
            cur.execute(literal_sql(engine, sql, params))
            return pl.from_arrow(cur.fetch_arrow_table())
    finally:
        conn.close()


# --- API -------------------------------------------------------------------------------------


def api_url(ch: ApiChannel) -> str:
    return (os.environ.get(ch.url_env) if ch.url_env else None) or ch.url


def read_api(resource: Resource, ch: ApiChannel, batch_date: dt.date) -> Delivery:
    """Fetch every page for the batch date, with retries and timeouts."""
    columns = source_columns(resource)
    url = api_url(ch)
    headers = {}
    if ch.auth_env and os.environ.get(ch.auth_env):
        headers["Authorization"] = f"Bearer {os.environ[ch.auth_env]}"
    digest = hashlib.sha256()
    records: list[dict] = []
    page, total = 1, 1
    with requests.Session() as session:
        while page <= total:
            params = {ch.date_param: batch_date.isoformat(), ch.page_param: page, ch.page_size_param: ch.page_size}
            body = _get_with_retries(session, url, params, headers, ch)
            digest.update(body)
            doc = json.loads(body)
            total = int(doc.get(ch.total_pages_field, 1) or 0)
            records.extend(doc.get(ch.items_field) or [])
            page += 1
    parsed = urlparse(url)
    source = f"{parsed.netloc}{parsed.path}?{ch.date_param}={batch_date.isoformat()}"
    if not records:
        return Delivery(empty_frame(columns), [source], "")
    frame, problems = parse_json_records(records, source, columns)
    return Delivery(frame, [source], digest.hexdigest(), problems=problems)


def _get_with_retries(session: requests.Session, url: str, params: dict, headers: dict, ch: ApiChannel) -> bytes:
    last: Exception | None = None
    for attempt in range(ch.retries + 1):
        try:
            resp = session.get(url, params=params, headers=headers, timeout=ch.timeout_s)
            if resp.status_code == 404:
                return b"{}"  # nothing delivered for that date
            if resp.status_code < 400:
                return resp.content
            if resp.status_code < 500:
                raise DeliveryError(f"接口 {url} 拒绝请求: HTTP {resp.status_code}")
            last = DeliveryError(f"HTTP {resp.status_code}")
        except (requests.ConnectionError, requests.Timeout) as exc:
            last = exc
        time.sleep(min(0.2 * 2**attempt, 5.0))
    raise DeliveryError(f"接口 {url} 第 {params.get(ch.page_param)} 页在 {ch.retries + 1} 次尝试后仍失败: {last}")
