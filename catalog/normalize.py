"""Pure polars expressions used by the 标准层 to clean and type text as departments deliver it.

Each function takes and returns a ``pl.Expr``, so they compose with the identifier checks in
:mod:`quality.identifiers` and test without any storage.
"""

from __future__ import annotations

from collections.abc import Callable

import polars as pl

from catalog.identifiers import convert_id15, normalize_id_number, normalize_mobile, normalize_uscc
from catalog.models import Element, ElementType

FULLWIDTH: dict[str, str] = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)} | {"\u3000": " "}
"""Full-width ASCII variants (U+FF01–U+FF5E) → ASCII, ideographic space U+3000 → space."""

DATE_FORMATS: tuple[str, ...] = ("%Y%m%d", "%Y-%m-%d", "%Y/%m/%d", "%Y年%m月%d日")
"""The date formats departments are known to send (the catalogue picks per field)."""

MIN_YEAR = 1000
"""Parsed years below this are dropped: chrono's ``%Y`` would read "24/1/31" as the year 24."""

_DECIMAL_PATTERN = r"^[+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?$"


def _let(expr: pl.Expr, body: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """Evaluate ``expr`` once and hand it to ``body`` as a field reference.

    Polars expressions have no variables: without this, every mention of the input in ``body``
    re-evaluates the whole (possibly composed) input expression.
    """
    out = pl.struct(expr.alias("v")).struct.with_fields(body(pl.field("v")).alias("r")).struct.field("r")
    name = expr.meta.output_name(raise_if_undetermined=False)  # keep "id" for pl.col("id")
    return out.alias(name) if name else out


def halfwidth(expr: pl.Expr) -> pl.Expr:
    """Fold full-width characters to ASCII, strip surrounding whitespace; empty string → null."""
    return expr.cast(pl.String).str.replace_many(FULLWIDTH).str.strip_chars().replace("", None)


def _parse_temporal(expr: pl.Expr, formats: list[str], dtype: pl.DataType) -> pl.Expr:
    if not formats:
        raise ValueError("at least one format is required")

    # chrono accepts month/day/hour without zero padding ("2024/1/31"), so no pre-padding is needed;
    # exact=True rejects trailing text and impossible dates (2024-02-30) become null via strict=False.
    def body(s: pl.Expr) -> pl.Expr:
        parsed = pl.coalesce([s.str.strptime(dtype, fmt, strict=False, exact=True) for fmt in formats])
        return _let(parsed, lambda p: pl.when(p.dt.year() >= MIN_YEAR).then(p))

    return _let(expr.cast(pl.String).str.strip_chars(), body)


def parse_date(expr: pl.Expr, formats: list[str]) -> pl.Expr:
    """Parse text as ``pl.Date`` with the first chrono format that fits; null if none does."""
    return _parse_temporal(expr, formats, pl.Date())


def parse_datetime(expr: pl.Expr, formats: list[str]) -> pl.Expr:
    """Parse text as ``pl.Datetime("us")`` with the first chrono format that fits (date-only → midnight)."""
    return _parse_temporal(expr, formats, pl.Datetime("us"))


def _numeric_text(expr: pl.Expr) -> pl.Expr:
    """Half-width text with thousands separators (``,`` and full-width ``，``) and spaces removed."""
    return expr.cast(pl.String).str.replace_many(FULLWIDTH).str.replace_all(r"[,\s]", "")


def parse_decimal(expr: pl.Expr) -> pl.Expr:
    """Parse "1,234.50" / "１２３４．５" as Float64; anything else (including "nan", "inf") → null."""
    return _let(
        _numeric_text(expr),
        lambda s: pl.when(s.str.contains(_DECIMAL_PATTERN)).then(s).cast(pl.Float64, strict=False),
    )


def parse_integer(expr: pl.Expr) -> pl.Expr:
    """Parse "1,234" (or an integral "12.0" from spreadsheets) as Int64; anything else → null."""
    # "12.0" → "12"; anything else that is not plain digits fails the strict=False cast.
    return _numeric_text(expr).str.replace(r"^([+-]?\d+)\.0*$", "${1}").cast(pl.Int64, strict=False)


def map_codes(expr: pl.Expr, mapping: dict[str, str]) -> pl.Expr:
    """Translate department codes to standard codes; values not in ``mapping`` pass through unchanged."""
    return expr.cast(pl.String).replace(mapping)


def element_dtype(e: Element) -> pl.DataType:
    """The polars (and so storage) type of a data element."""
    return {
        ElementType.date: pl.Date(),
        ElementType.datetime: pl.Datetime("us"),
        ElementType.integer: pl.Int64(),
        ElementType.decimal: pl.Float64(),
    }.get(e.type, pl.String())


def parse_expr(e: Element, raw: pl.Expr, formats: list[str], codes: dict[str, str]) -> pl.Expr:
    """Normalise and type one department column as data element ``e``."""
    clean = halfwidth(raw)
    match e.type:
        case ElementType.id_number:
            return convert_id15(normalize_id_number(clean))
        case ElementType.uscc:
            return normalize_uscc(clean)
        case ElementType.mobile:
            return normalize_mobile(clean)
        case ElementType.code:
            return map_codes(clean, codes) if codes else clean
        case ElementType.date:
            return parse_date(clean, formats)
        case ElementType.datetime:
            return parse_datetime(clean, formats)
        case ElementType.integer:
            return parse_integer(clean)
        case ElementType.decimal:
            return parse_decimal(clean)
        case _:
            return clean
