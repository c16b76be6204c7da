"""Leak scanner: no raw identifier of the base libraries may appear in anything the share layer publishes.

Needles (:class:`Needles`) are the raw values, across every version, of the base libraries' ID
numbers (every ``id_number`` element, and ID-shaped values of other sensitive elements such as a
licence holder's code), mobile numbers, full names of persons (``person_name`` elements not graded
公开) and full addresses (``address`` elements not graded 公开, where the address says more than its
区/县). Haystacks are share/open tables, export and report files (CSV, JSON, Markdown, text) and asset
metadata previews.

How values are matched, vectorised with polars:

* ID numbers and mobiles anywhere: every 18-character ID-shaped and 11-digit mobile-shaped run
  is extracted from every cell/line (``str.extract_all``) and looked up in the needle sets;
* names and addresses as whole values (a cell, a JSON value, a Markdown table cell, a CSV field):
  names are short, and 李丽 inside 李丽华 is not a leak of 李丽.

Columns published verbatim because the catalogue grades them 公开 (a 法定代表人 on a 营业执照, a
公开 标准地址) are exempt from the name/address match only — never from the ID/mobile match.
Findings never carry the raw value: they show it masked.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from catalog.loader import Catalogue
from catalog.models import ElementType, Semantic, Sensitivity
from desensitize import rules
from warehouse.store import Warehouse

ID_RUN = r"\d{17}[\dXx]"
MOBILE_RUN = r"1[3-9]\d{9}"
TEXT_SUFFIXES = {".md", ".txt", ".html", ".htm", ".log"}
_SEPARATORS = r"[\s,，;；:：<>\"'()（）\[\]{}、|=]+"
_NOT_TEXT = (sa.Integer, sa.Numeric, sa.Float, sa.Date, sa.DateTime, sa.Boolean)
KINDS_ZH = {"id_number": "公民身份号码", "mobile": "手机号码", "name": "姓名", "address": "地址"}


@dataclass(frozen=True)
class Needles:
    """Raw identifiers to look for (each a distinct, non-null String series)."""

    ids: pl.Series = field(default_factory=lambda: pl.Series("v", [], pl.String))
    mobiles: pl.Series = field(default_factory=lambda: pl.Series("v", [], pl.String))
    names: pl.Series = field(default_factory=lambda: pl.Series("v", [], pl.String))
    addresses: pl.Series = field(default_factory=lambda: pl.Series("v", [], pl.String))

    @classmethod
    def of(cls, ids: Iterable[str] = (), mobiles: Iterable[str] = (), names: Iterable[str] = (),
           addresses: Iterable[str] = ()) -> Needles:
        def s(values: Iterable[str] | pl.Series) -> pl.Series:
            return pl.Series("v", values, pl.String) if not isinstance(values, pl.Series) else values.cast(pl.String)
        return cls._clean(s(ids), s(mobiles), s(names), s(addresses))

    @classmethod
    def _clean(cls, ids: pl.Series, mobiles: pl.Series, names: pl.Series, addresses: pl.Series) -> Needles:
        ids = ids.str.strip_chars().str.to_uppercase()
        ids = ids.filter(ids.str.contains(r"^\d{17}[\dX]$")).unique()
        mobiles = mobiles.str.strip_chars()
        mobiles = mobiles.filter(mobiles.str.contains(r"^1[3-9]\d{9}$")).unique()
        names = names.str.strip_chars()
        names = names.filter(names.str.len_chars() >= 2).unique()
        addresses = addresses.str.strip_chars().drop_nulls()
        # An "address" that is only a district is what the open data publishes on purpose.
        district = addresses.to_frame("v").select(rules.to_level(pl.col("v"), "district")).to_series()
        addresses = addresses.filter(district.is_null() | (district != addresses)).unique()
        return cls(ids.drop_nulls().alias("v"), mobiles.drop_nulls().alias("v"), names.drop_nulls().alias("v"),
                   addresses.alias("v"))

    @classmethod
    def from_warehouse(cls, wh: Warehouse, catalogue: Catalogue) -> Needles:
        """Every raw identifier of every version of every base library."""
        parts: dict[str, list[pl.Series]] = {"ids": [], "mobiles": [], "names": [], "addresses": []}
        with wh.engine.connect() as conn:
            for lib in catalogue.libraries:
                if not wh.exists("base", lib.code):
                    continue
                table = wh.qualified("base", lib.code)
                for e in lib.elements:
                    sensitive = e.sensitivity in (Sensitivity.sensitive, Sensitivity.highly_sensitive)
                    if e.type == ElementType.id_number:
                        kinds = ["ids"]
                    elif e.type == ElementType.mobile or e.semantic == Semantic.phone:
                        kinds = ["mobiles"]
                    elif e.semantic == Semantic.person_name and e.sensitivity != Sensitivity.public:
                        kinds = ["names"]
                    elif e.semantic == Semantic.address and e.sensitivity != Sensitivity.public:
                        kinds = ["addresses"]
                    elif sensitive and e.type == ElementType.string:
                        kinds = ["ids", "mobiles"]  # e.g. a holder code that is sometimes an ID number
                    else:
                        continue
                    col = wh.quote(e.code)
                    values = wh.read(conn, f"SELECT DISTINCT {col} FROM {table} WHERE {col} IS NOT NULL",
                                     {"v": pl.String()}).get_column("v")
                    for k in kinds:
                        parts[k].append(values)

        def cat(k: str) -> pl.Series:
            return pl.concat(parts[k]) if parts[k] else pl.Series("v", [], pl.String)

        return cls._clean(cat("ids"), cat("mobiles"), cat("names"), cat("addresses"))

    def __len__(self) -> int:
        return self.ids.len() + self.mobiles.len() + self.names.len() + self.addresses.len()


@dataclass(frozen=True)
class Finding:
    """A raw identifier found somewhere it must not be; ``sample`` is masked."""

    location: str
    column: str | None
    kind: str
    count: int
    sample: str

    def __str__(self) -> str:
        where = self.location + (f" 列 {self.column}" if self.column else "")
        return f"{where}: {self.count} 处{KINDS_ZH.get(self.kind, self.kind)}原值 (如 {self.sample})"


def _mask(kind: str, value: str) -> str:
    frame = pl.DataFrame({"v": [value]})
    expr = {
        "id_number": rules.keep_first_last(pl.col("v"), 6, 4),
        "mobile": rules.keep_first_last(pl.col("v"), 3, 4),
        "name": rules.keep_first(pl.col("v")),
        "address": rules.keep_address(pl.col("v")),
    }[kind]
    return frame.select(expr).item()


DIGEST = r"^(?:[0-9a-z]{16,}|[0-9A-F]{32,})$"


def _hits(values: pl.Series, needles: pl.Series) -> pl.Series:
    return values.filter(values.is_in(needles)) if needles.len() and values.len() else values.clear()


def scan_frame(frame: pl.DataFrame, needles: Needles, location: str,
               public_columns: Iterable[str] = (), exact_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in every column of a frame (values compared as text).

    Numbers and dates (non-text dtypes, ``exact_columns``, cells that are a decimal number) are
    compared as whole values only: the digits of 120.6543219876 or of a 20-digit count are not
    searched for phone-number-shaped runs, which real numbers would produce by chance.
    """
    findings: list[Finding] = []
    public, exact = set(public_columns), set(exact_columns)
    for name in frame.columns:
        s = frame.get_column(name)
        if s.dtype == pl.Null:
            continue
        whole = name in exact or s.dtype != pl.String
        s = s.cast(pl.String).drop_nulls().str.strip_chars()
        if s.len() == 0:
            continue
        # Digests and tokens (a row hash, an HMAC pseudonym) are random letters and digits: a run
        # of their digits can be shaped like a phone number by chance; compare them whole.
        whole = whole or (bool(s.str.contains(DIGEST).all()) and bool(s.str.contains(r"[a-zA-Z]").any()))
        text = s.filter(~s.str.contains(r"^[-+]?\d+\.\d+$"))
        for kind, pattern, pool in (("id_number", ID_RUN, needles.ids), ("mobile", MOBILE_RUN, needles.mobiles)):
            if not pool.len():
                continue
            candidates = s if whole else text.str.extract_all(pattern).explode().drop_nulls()
            found = _hits(candidates.str.to_uppercase(), pool)
            if found.len():
                findings.append(Finding(location, name, kind, found.len(), _mask(kind, found[0])))
        if name in public:
            continue
        for kind, pool in (("name", needles.names), ("address", needles.addresses)):
            found = _hits(s, pool)
            if found.len():
                findings.append(Finding(location, name, kind, found.len(), _mask(kind, found[0])))
    return findings


def markdown_tables(text: str) -> list[pl.DataFrame]:
    """The pipe tables of a Markdown text, as string frames (header row → column names)."""
    tables: list[pl.DataFrame] = []
    block: list[list[str]] = []

    def flush() -> None:
        if len(block) >= 2 and all(set(c) <= set("-: ") for c in block[1]):
            header, body = block[0], [r for r in block[2:] if len(r) == len(block[0])]
            names = [h or f"_{i}" for i, h in enumerate(header)]
            if len(set(names)) == len(names):
                tables.append(pl.DataFrame([dict(zip(names, r, strict=True)) for r in body],
                                           schema={n: pl.String for n in names}))
        block.clear()

    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|") and len(stripped) > 1:
            cells = [c.strip().replace("\\|", "|") for c in stripped[1:-1].replace("\\|", "\x00").split("|")]
            block.append([c.replace("\x00", "|") for c in cells])
        else:
            flush()
    flush()
    return tables


def scan_text(text: str, needles: Needles, location: str, public_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in free text (a Markdown preview, a report): its table cells and its other tokens."""
    findings: list[Finding] = []
    for i, table in enumerate(markdown_tables(text)):
        findings += scan_frame(table, needles, f"{location} 表{i + 1}", public_columns)
    # Outside tables: IDs and mobiles anywhere, names/addresses as whole tokens between separators.
    rest = "\n".join(line for line in text.splitlines() if not line.strip().startswith("|"))
    tokens = pl.Series("text", [rest]).str.replace_all(_SEPARATORS, "\x00").str.split("\x00").explode()
    return findings + scan_frame(pl.DataFrame({"text": tokens}), needles, location)


def _json_leaves(value, key: str, out: dict[tuple[str, bool], list[str]]) -> None:
    """Scalar values by (key, is a JSON number)."""
    if isinstance(value, dict):
        for k, v in value.items():
            _json_leaves(v, str(k), out)
    elif isinstance(value, list):
        for v in value:
            _json_leaves(v, key, out)
    elif value is not None:
        number = isinstance(value, int | float) and not isinstance(value, bool)
        out.setdefault((key, number), []).append(str(value))


def scan_file(path: Path, needles: Needles, public_columns: Iterable[str] = (),
              exact_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in one export/report file (CSV, JSON, Markdown/text/HTML, XLSX, .eml); others are not read.

    ``exact_columns``: CSV columns that hold numbers or dates (JSON numbers are known as such).
    """
    suffix = path.suffix.lower()
    loc = str(path)
    if suffix == ".csv":
        frame = pl.read_csv(path, infer_schema=False, encoding="utf8-lossy", truncate_ragged_lines=True)
        return scan_frame(frame, needles, loc, public_columns, exact_columns)
    if suffix == ".json":
        leaves: dict[tuple[str, bool], list[str]] = {}
        _json_leaves(json.loads(path.read_text(encoding="utf-8")), "", leaves)
        findings: list[Finding] = []
        for (key, number), values in leaves.items():
            name = key or "_"
            findings += scan_frame(pl.DataFrame({name: values}), needles, loc, public_columns,
                                   exact_columns=[name] if number else ())
        return findings
    if suffix in TEXT_SUFFIXES:
        return scan_text(path.read_text(encoding="utf-8", errors="replace"), needles, loc, public_columns)
    if suffix == ".xlsx":
        return scan_workbook(path.read_bytes(), needles, loc, public_columns)
    if suffix == ".eml":
        return scan_mail(path.read_bytes(), needles, loc, public_columns)
    return []


def scan_workbook(data: bytes, needles: Needles, location: str, public_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in every cell of every sheet of an XLSX workbook (a column per sheet column)."""
    import io

    from openpyxl import load_workbook

    wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
    findings: list[Finding] = []
    try:
        for ws in wb.worksheets:
            rows = [["" if v is None else str(v) for v in row] for row in ws.iter_rows(values_only=True)]
            width = max((len(r) for r in rows), default=0)
            if not width:
                continue
            frame = pl.DataFrame({f"{ws.title}!{i + 1}": [r[i] if i < len(r) else "" for r in rows]
                                  for i in range(width)})
            findings += scan_frame(frame, needles, location, public_columns)
    finally:
        wb.close()
    return findings


def scan_mail(data: bytes, needles: Needles, location: str, public_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in a mail (.eml): its subject, its text parts decoded, and its XLSX/HTML attachments."""
    import email
    from email.policy import default as default_policy

    msg = email.message_from_bytes(data, policy=default_policy)
    findings = scan_text(str(msg.get("Subject", "")), needles, f"{location} 主题", public_columns)
    for part in msg.walk():
        if part.is_multipart():
            continue
        name = (part.get_filename() or "").lower()
        where = f"{location} {part.get_filename() or part.get_content_type()}"
        if name.endswith(".xlsx"):
            findings += scan_workbook(part.get_payload(decode=True) or b"", needles, where, public_columns)
        elif part.get_content_maintype() == "text":
            findings += scan_text(part.get_content(), needles, where, public_columns)
    return findings


def scan_tree(root: Path, needles: Needles, public_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in every file under ``root`` (sorted, so reports are stable)."""
    if not root.exists():
        return []
    findings: list[Finding] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        findings += scan_file(path, needles, public_columns)
    return findings


def scan_table(wh: Warehouse, layer: str, name: str, needles: Needles,
               public_columns: Iterable[str] = ()) -> list[Finding]:
    """Findings in a warehouse table, every column read back as text."""
    if not wh.exists(layer, name):
        return []
    schema, table = wh.table_ref(layer, name)
    described = sa.inspect(wh.engine).get_columns(table, schema=schema)
    cols = [c["name"] for c in described]
    typed = [c["name"] for c in described if isinstance(c["type"], _NOT_TEXT)]
    select = ", ".join(wh.quote(c) for c in cols)
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT {select} FROM {wh.qualified(layer, name)}", {c: pl.String() for c in cols})
    return scan_frame(frame, needles, wh.qualified(layer, name), public_columns, exact_columns=typed)
