"""Identifier checks: 公民身份号码, 统一社会信用代码, 组织机构代码 and mobile numbers.

Every check is a vectorised polars expression (built from per-position string slices, never a
per-row Python callback) with a scalar twin for tests, and numpy check-character helpers for the
synthetic-data generator. Rules and test vectors: ``spec/identifiers.md``.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from functools import reduce

import numpy as np
import polars as pl

# --- constants ------------------------------------------------------------------------------------

ID_WEIGHTS: tuple[int, ...] = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
"""GB 11643-1999 weights for the 17 body digits of a 公民身份号码."""
ID_CHECK_CHARS = "10X98765432"
"""GB 11643-1999 check character, indexed by S mod 11."""
ID_PATTERN = r"^\d{17}[\dX]$"
ID15_PATTERN = r"^\d{15}$"
ID_MIN_BIRTH = dt.date(1850, 1, 1)
"""Earliest birth date accepted in a 公民身份号码 (older ones are data-entry errors)."""

USCC_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
"""GB 32100-2015 alphabet (no I O S V Z); a character's value is its index."""
USCC_WEIGHTS: tuple[int, ...] = (1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28)
USCC_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}$"
_USCC_BODY_PATTERN = r"^[0-9A-HJ-NPQRTUWXY]{17}$"

ORG_WEIGHTS: tuple[int, ...] = (3, 7, 9, 10, 5, 8, 4, 2)
"""GB 11714-1997 weights for the 8 body characters of a 组织机构代码."""
ORG_PATTERN = r"^[0-9A-Z]{8}[0-9X]$"

MOBILE_PATTERN = r"^1[3-9]\d{9}$"

_ID_VALUE = {str(d): d for d in range(10)}
_USCC_VALUE = {c: i for i, c in enumerate(USCC_ALPHABET)}
_ORG_VALUE = {c: int(c, 36) for c in "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"}

# Full-width ASCII variants (U+FF01–U+FF5E) → ASCII; the ideographic space is removed with the
# other whitespace. Kept local so this module does not depend on the standardisation layer.
_FULLWIDTH = {chr(c): chr(c - 0xFEE0) for c in range(0xFF01, 0xFF5F)}
_ID_FOLD = {**{chr(0xFF10 + d): str(d) for d in range(10)}, "Ｘ": "X", "ｘ": "X", "x": "X"}


# --- expression helpers ---------------------------------------------------------------------------


def _let(expr: pl.Expr, body: Callable[[pl.Expr], pl.Expr]) -> pl.Expr:
    """Evaluate ``expr`` once and pass it to ``body`` as a plain field reference.

    The checks below refer to their input ~20 times (one slice per position). Polars expressions
    have no variables, so composing them (``id_number_is_valid(convert_id15(normalize(...)))``)
    would otherwise copy the whole input tree into every reference: 20 × 20 × … evaluations.
    ``struct.with_fields`` evaluates ``body`` against the struct's field instead.
    """
    out = pl.struct(expr.alias("v")).struct.with_fields(body(pl.field("v")).alias("r")).struct.field("r")
    name = expr.meta.output_name(raise_if_undetermined=False)  # keep "id" for pl.col("id")
    return out.alias(name) if name else out


def _empty_to_null(expr: pl.Expr) -> pl.Expr:
    return expr.replace("", None)


def _strip_ws(expr: pl.Expr) -> pl.Expr:
    """Remove all (Unicode) whitespace; an empty result becomes null."""
    return _empty_to_null(expr.cast(pl.String).str.replace_all(r"\s+", ""))


def _byte_table(values: dict[str, int]) -> pl.Series:
    """A 256-entry lookup from an ASCII byte to its value (null for bytes outside ``values``)."""
    return pl.Series([values.get(chr(b)) for b in range(256)], dtype=pl.Int64)


_ID_TABLE = _byte_table(_ID_VALUE)
_USCC_TABLE = _byte_table(_USCC_VALUE)
_ORG_TABLE = _byte_table(_ORG_VALUE)


def _weighted_sum(expr: pl.Expr, weights: tuple[int, ...], table: pl.Series) -> pl.Expr:
    """Σ value(char_i)·w_i over the first ``len(weights)`` characters (null if any is unknown).

    Reads bytes rather than slicing characters (several times faster); callers only trust the
    sum for values that match their ASCII pattern, where bytes and characters coincide.
    """
    raw = expr.cast(pl.Binary)
    terms = [pl.lit(table).gather(raw.bin.get(i, null_on_oob=True)) * w for i, w in enumerate(weights)]
    return reduce(lambda a, b: a + b, terms)


def _lookup(index: pl.Expr, alphabet: str) -> pl.Expr:
    """``alphabet[index]`` as a string expression."""
    return index.replace_strict(dict(enumerate(alphabet)), default=None, return_dtype=pl.String)


def _null_if_null(expr: pl.Expr, result: pl.Expr) -> pl.Expr:
    """A Boolean check that is null for null input and never null otherwise."""
    return pl.when(expr.is_null()).then(pl.lit(None, pl.Boolean)).otherwise(result.fill_null(False))


# --- 公民身份号码 (GB 11643-1999) ---------------------------------------------------------------------


def normalize_id_number(expr: pl.Expr) -> pl.Expr:
    """Strip whitespace, fold full-width digits/Ｘ to ASCII and upper-case x; empty → null."""
    return _strip_ws(expr).str.replace_many(_ID_FOLD)


def id_number_check_char(expr17: pl.Expr) -> pl.Expr:
    """The GB 11643 check character for 17 body digits (null unless exactly 17 digits)."""

    def body(v: pl.Expr) -> pl.Expr:
        s = _weighted_sum(v, ID_WEIGHTS, _ID_TABLE)
        return pl.when(v.str.contains(r"^\d{17}$")).then(_lookup(s % 11, ID_CHECK_CHARS))

    return _let(expr17, body)


def id_number_birth_date(expr: pl.Expr) -> pl.Expr:
    """Birth date (positions 7–14) of an 18-character number; null if malformed or not a real date."""
    return _let(
        expr,
        lambda v: (
            pl.when(v.str.contains(ID_PATTERN))
            .then(v.str.slice(6, 8))
            .str.strptime(pl.Date, "%Y%m%d", strict=False, exact=True)
        ),
    )


def id_number_gender(expr: pl.Expr) -> pl.Expr:
    """GB/T 2261.1 sex code from the 17th digit: "1" male (odd), "2" female (even); null if malformed."""

    def body(v: pl.Expr) -> pl.Expr:
        odd = v.str.slice(16, 1).cast(pl.Int64, strict=False) % 2 == 1
        return pl.when(v.str.contains(ID_PATTERN)).then(pl.when(odd).then(pl.lit("1")).otherwise(pl.lit("2")))

    return _let(expr, body)


def id_number_is_valid(expr: pl.Expr, today: dt.date | None = None) -> pl.Expr:
    """Format, check character and birth date (real, 1850-01-01 … ``today``) of a normalised number."""
    latest = today or dt.date.today()

    def body(v: pl.Expr) -> pl.Expr:
        ok = (
            v.str.contains(ID_PATTERN)
            & (id_number_check_char(v.str.slice(0, 17)) == v.str.slice(17, 1))
            & id_number_birth_date(v).is_between(pl.lit(ID_MIN_BIRTH), pl.lit(latest))
        )
        return _null_if_null(v, ok)

    return _let(expr, body)


def is_id15(expr: pl.Expr) -> pl.Expr:
    """Whether a value is a 15-digit legacy 公民身份号码."""
    return expr.str.contains(ID15_PATTERN)


def convert_id15(expr: pl.Expr) -> pl.Expr:
    """Convert 15-digit legacy numbers to 18 characters (insert "19", add check char); others unchanged."""

    def body(v: pl.Expr) -> pl.Expr:
        body17 = pl.concat_str([v.str.slice(0, 6), pl.lit("19"), v.str.slice(6, 9)])
        return pl.when(is_id15(v)).then(body17 + id_number_check_char(body17)).otherwise(v)

    return _let(expr, body)


# --- 统一社会信用代码 (GB 32100-2015) ------------------------------------------------------------------


def normalize_uscc(expr: pl.Expr) -> pl.Expr:
    """Strip whitespace, fold full-width characters to ASCII and upper-case; empty → null."""
    return _strip_ws(expr).str.replace_many(_FULLWIDTH).str.to_uppercase()


def uscc_check_char(expr17: pl.Expr) -> pl.Expr:
    """The GB 32100 check character for 17 body characters (null unless 17 alphabet characters)."""

    def body(v: pl.Expr) -> pl.Expr:
        s = _weighted_sum(v, USCC_WEIGHTS, _USCC_TABLE)
        return pl.when(v.str.contains(_USCC_BODY_PATTERN)).then(_lookup((31 - s % 31) % 31, USCC_ALPHABET))

    return _let(expr17, body)


def uscc_is_valid(expr: pl.Expr) -> pl.Expr:
    """Format and check character of a normalised 统一社会信用代码 (null in → null out)."""

    def body(v: pl.Expr) -> pl.Expr:
        ok = v.str.contains(USCC_PATTERN) & (uscc_check_char(v.str.slice(0, 17)) == v.str.slice(17, 1))
        return _null_if_null(v, ok)

    return _let(expr, body)


# --- 组织机构代码 (GB 11714-1997) --------------------------------------------------------------------


_ORG_CHECK_CHARS = "0X987654321"
"""``11 − S mod 11`` (10 → X, 11 → 0) indexed by S mod 11."""


def org_code_is_valid(expr: pl.Expr) -> pl.Expr:
    """Format and check character of a 9-character 组织机构代码 (null in → null out)."""

    def body(v: pl.Expr) -> pl.Expr:
        s = _weighted_sum(v, ORG_WEIGHTS, _ORG_TABLE)
        ok = v.str.contains(ORG_PATTERN) & (_lookup(s % 11, _ORG_CHECK_CHARS) == v.str.slice(8, 1))
        return _null_if_null(v, ok)

    return _let(expr, body)


# --- mobile numbers -------------------------------------------------------------------------------


def normalize_mobile(expr: pl.Expr) -> pl.Expr:
    """Fold full-width, drop whitespace, hyphens and parentheses, and a +86/86/0086 prefix; empty → null."""
    s = _strip_ws(expr.cast(pl.String).str.replace_many(_FULLWIDTH)).str.replace_all(r"[-()]", "")
    return _empty_to_null(s.str.replace(r"^(?:\+|00)?86(\d{11})$", "${1}"))


def mobile_is_valid(expr: pl.Expr) -> pl.Expr:
    """Whether a normalised value is a mainland mobile number (null in → null out)."""
    return expr.str.contains(MOBILE_PATTERN)


# --- scalar twins (tests, ad-hoc use) -------------------------------------------------------------


def id_number_check(s17: str) -> str:
    """Scalar :func:`id_number_check_char`."""
    if not re.fullmatch(r"\d{17}", s17):
        raise ValueError(f"expected 17 digits, got {s17!r}")
    return ID_CHECK_CHARS[sum(int(c) * w for c, w in zip(s17, ID_WEIGHTS, strict=True)) % 11]


def id_number_valid(s: str, today: dt.date | None = None) -> bool:
    """Scalar :func:`id_number_is_valid` (on an already normalised value)."""
    if not re.fullmatch(ID_PATTERN, s):
        return False
    try:
        birth = dt.datetime.strptime(s[6:14], "%Y%m%d").date()
    except ValueError:
        return False
    return id_number_check(s[:17]) == s[17] and ID_MIN_BIRTH <= birth <= (today or dt.date.today())


def convert_id15_scalar(s: str) -> str:
    """Scalar :func:`convert_id15`."""
    if not re.fullmatch(ID15_PATTERN, s):
        return s
    body = s[:6] + "19" + s[6:]
    return body + id_number_check(body)


def uscc_check(s17: str) -> str:
    """Scalar :func:`uscc_check_char`."""
    if not re.fullmatch(_USCC_BODY_PATTERN, s17):
        raise ValueError(f"expected 17 USCC alphabet characters, got {s17!r}")
    total = sum(_USCC_VALUE[c] * w for c, w in zip(s17, USCC_WEIGHTS, strict=True))
    return USCC_ALPHABET[(31 - total % 31) % 31]


def uscc_valid(s: str) -> bool:
    """Scalar :func:`uscc_is_valid`."""
    return bool(re.fullmatch(USCC_PATTERN, s)) and uscc_check(s[:17]) == s[17]


def org_code_valid(s: str) -> bool:
    """Scalar :func:`org_code_is_valid`."""
    if not re.fullmatch(ORG_PATTERN, s):
        return False
    c = 11 - sum(_ORG_VALUE[ch] * w for ch, w in zip(s[:8], ORG_WEIGHTS, strict=True)) % 11
    return {10: "X", 11: "0"}.get(c, str(c)) == s[8]  # spelled out as in the standard


def mobile_valid(s: str) -> bool:
    """Scalar :func:`mobile_is_valid`."""
    return bool(re.fullmatch(MOBILE_PATTERN, s))


# --- numpy (synthetic data generator) -------------------------------------------------------------

_ID_CHECK_NP = np.array(list(ID_CHECK_CHARS))
_USCC_ALPHABET_NP = np.array(list(USCC_ALPHABET))


def id_check_chars_np(digits17: np.ndarray) -> np.ndarray:
    """Check characters for an (n, 17) array of body digits 0–9; returns an (n,) array of str."""
    s = digits17.astype(np.int64) @ np.asarray(ID_WEIGHTS, dtype=np.int64)
    return _ID_CHECK_NP[s % 11]


def uscc_check_chars_np(values17: np.ndarray) -> np.ndarray:
    """Check characters for an (n, 17) array of USCC alphabet indices; returns an (n,) array of str."""
    s = values17.astype(np.int64) @ np.asarray(USCC_WEIGHTS, dtype=np.int64)
    return _USCC_ALPHABET_NP[(31 - s % 31) % 31]


# --- free text ------------------------------------------------------------------------------------

# Identifier-shaped runs inside free text (an error message, a log line): an 18- or 15-digit 公民身份号码,
# an 18-character 统一社会信用代码 and an 11-digit mobile number, each not part of a longer run of
# letters or digits. Whether the check character is right does not matter: a mistyped ID number is
# still somebody's ID number.
_IN_TEXT = re.compile(
    r"(?<![0-9A-Za-z])(?:\d{17}[\dXx]|\d{15}|[0-9A-HJ-NPQRTUWXY]{2}\d{6}[0-9A-HJ-NPQRTUWXY]{10}|1[3-9]\d{9})"
    r"(?![0-9A-Za-z])")
REDACTED = "[标识已隐去]"


def redact_text(text: str) -> str:
    """``text`` with every identifier-shaped run replaced by :data:`REDACTED`."""
    return _IN_TEXT.sub(REDACTED, text)
