"""Format-preserving tokens for 公民身份号码: still an 18-character number that passes validators.

The 6-digit region and the birth year are kept (or, with ``keep="decade"``, only the birth decade);
the rest — the day within the year (decade) and the sequence number — goes through a keyed
permutation, the sex digit's parity is kept (so the token agrees with 性别), and the check character
is recomputed. The token is stable per key and distinct for distinct numbers (a permutation).

The permutation is a 10-round alternating Feistel network over (day, sequence/2) ∈ [0, A) × [0, 500)
in the spirit of NIST FF1 (modular addition of round outputs, one half per round), with cycle-walking
onto the real days of the block: round functions are key-derived random tables indexed by the other
half plus per-(region, year, parity) keyed offsets (HMAC-SHA512 of that tweak, computed once per
distinct tweak). Everything is numpy over whole columns: no per-row Python.

It is not a certified FF1/FF3-1 (those need AES, which neither polars nor numpy offers vectorised);
the join key of record is the HMAC token (``pseudonym.py``). Two caveats, both handled by callers:
a token may coincide with someone else's real number (``masking.py`` nulls tokens equal to any ID in
the base libraries), and a token for a person born this year may carry a date later than today.
"""

from __future__ import annotations

import hmac
from typing import Literal

import numpy as np
import polars as pl
import pyarrow as pa

from catalog.identifiers import ID_CHECK_CHARS, ID_MIN_BIRTH, ID_WEIGHTS
from desensitize.pseudonym import PseudonymKey

Keep = Literal["year", "decade"]
ROUNDS = 10
SEQ_HALVES = 500  # 3-digit sequence number = 2·half + parity (parity = sex)
_SPAN = {"year": 366, "decade": 3653}  # most days a block can have
_MONTH_DAYS = np.array([0, 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31])
_WEIGHTS = np.asarray(ID_WEIGHTS, dtype=np.int64)
_CHECK_BYTES = np.frombuffer(ID_CHECK_CHARS.encode(), dtype=np.uint8)


def _tables(key: PseudonymKey, keep: Keep) -> list[np.ndarray]:
    """Round functions: key-derived random tables (PCG64 seeded by HMAC of the FPE subkey)."""
    out = []
    sub = key.subkey("fpe")
    for r in range(ROUNDS):
        seed = int.from_bytes(hmac.digest(sub, f"table/{keep}/{r}".encode(), "sha256")[:16], "big")
        size = SEQ_HALVES if r % 2 == 0 else _SPAN[keep]
        out.append(np.random.Generator(np.random.PCG64(seed)).integers(0, 2**31, size, dtype=np.int64))
    return out


def _tweak_offsets(key: PseudonymKey, tweaks: list[str]) -> np.ndarray:
    """(len(tweaks), 2·ROUNDS) 16-bit offsets per distinct tweak, from HMAC-SHA512."""
    sub = key.subkey("fpe")
    raw = b"".join(hmac.digest(sub, ("tweak/" + t).encode(), "sha512") for t in tweaks)
    return np.frombuffer(raw, dtype=">u2").reshape(len(tweaks), 32)[:, : 2 * ROUNDS].astype(np.int64)


def _permute(day: np.ndarray, half: np.ndarray, offsets: np.ndarray, index: np.ndarray, tables: list[np.ndarray],
             span: int) -> tuple[np.ndarray, np.ndarray]:
    """Apply the permutation; ``offsets[index]`` are each row's tweak offsets (gathered per round)."""
    for r in range(ROUNDS):
        a, b = offsets[index, 2 * r], offsets[index, 2 * r + 1]
        if r % 2 == 0:
            day = (day + tables[r][(half + a) % SEQ_HALVES] + b) % span
        else:
            half = (half + tables[r][(day + a) % span] + b) % SEQ_HALVES
    return day, half


def _ascii_matrix(values: pl.Series, width: int) -> np.ndarray:
    """(n, width) uint8 matrix of equal-length ASCII strings, without a Python loop over rows."""
    if values.len() == 0:
        return np.zeros((0, width), dtype=np.uint8)
    joined = values.str.join("").item().encode("ascii")
    return np.frombuffer(joined, dtype=np.uint8).reshape(values.len(), width)


def _strings(matrix: np.ndarray) -> pl.Series:
    """The rows of an (n, width) uint8 ASCII matrix as a String series (zero-copy via Arrow)."""
    n, width = matrix.shape
    offsets = pa.py_buffer((np.arange(n + 1, dtype=np.int32) * width).tobytes())
    return pl.Series(pl.from_arrow(pa.StringArray.from_buffers(n, offsets, pa.py_buffer(matrix.tobytes()))))


def _days_from_civil(y: np.ndarray, m: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of proleptic Gregorian dates (H. Hinnant's algorithm, vectorised)."""
    y = y - (m <= 2)
    era = y // 400
    yoe = y - era * 400
    doy = (153 * (m + np.where(m > 2, -3, 9)) + 2) // 5 + d - 1
    doe = yoe * 365 + yoe // 4 - yoe // 100 + doy
    return era * 146097 + doe - 719468


def _civil_from_days(z: np.ndarray) -> np.ndarray:
    """``yyyymmdd`` integers of days since 1970-01-01 (inverse of :func:`_days_from_civil`)."""
    z = z + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    d = doy - (153 * mp + 2) // 5 + 1
    m = mp + np.where(mp < 10, 3, -9)
    y = yoe + era * 400 + (m <= 2)
    return y * 10_000 + m * 100 + d


def fpe_id_tokens(series: pl.Series, key: PseudonymKey, keep: Keep = "year") -> pl.Series:
    """Format-preserving token of every 18-character ID number; null where the input has no
    recognisable region/birth date/sequence (so it cannot be tokenised without guessing)."""
    if keep not in _SPAN:
        raise ValueError(f"keep must be 'year' or 'decade', got {keep!r}")
    v = series.cast(pl.String).str.strip_chars().str.to_uppercase()
    shaped = v.str.contains(r"^\d{17}[\dX]$").fill_null(False)
    rows = shaped.arg_true().to_numpy()
    d = _ascii_matrix(v.filter(shaped), 18) - np.uint8(48)  # digits; small dtype, columns cast below

    def num(lo: int, hi: int) -> np.ndarray:
        out = np.zeros(d.shape[0], dtype=np.int64)
        for i in range(lo, hi):
            out = out * 10 + d[:, i]
        return out

    year, month, day, seq, region = num(6, 10), num(10, 12), num(12, 14), num(14, 17), num(0, 6)
    leap = (year % 4 == 0) & ((year % 100 != 0) | (year % 400 == 0))
    month_days = _MONTH_DAYS[np.clip(month, 0, 12)] + ((month == 2) & leap)
    ok = (month >= 1) & (month <= 12) & (day >= 1) & (day <= month_days) & (year >= ID_MIN_BIRTH.year)
    if not ok.all():
        keep_rows = np.flatnonzero(ok)
        year, month, day, seq, region, rows = (a[keep_rows] for a in (year, month, day, seq, region, rows))
    out = pl.Series(series.name, [None] * series.len(), dtype=pl.String)
    if rows.size == 0:
        return out
    first = year if keep == "year" else year // 10 * 10
    width = 1 if keep == "year" else 10
    ones = np.ones_like(first)
    start = _days_from_civil(first, ones, ones)
    days = _days_from_civil(first + width, ones, ones) - start
    day_no = _days_from_civil(year, month, day) - start
    half, parity = seq // 2, seq % 2
    tweak_ids, index = np.unique((region * 10_000 + first) * 2 + parity, return_inverse=True)
    tweaks = [f"{t // 20_000:06d}|{t // 2 % 10_000}|{t % 2}|{keep}" for t in tweak_ids.tolist()]
    offsets = _tweak_offsets(key, tweaks)
    tables = _tables(key, keep)
    span = _SPAN[keep]
    day_no, half = _permute(day_no, half, offsets, index, tables, span)
    # Cycle-walking: re-permute until the day exists in this block (365-day years, 3652-day decades).
    todo = np.flatnonzero(day_no >= days)
    while todo.size:
        dn, h = _permute(day_no[todo], half[todo], offsets, index[todo], tables, span)
        day_no[todo], half[todo] = dn, h
        todo = todo[dn >= days[todo]]
    ymd = _civil_from_days(start + day_no)
    new_seq = half * 2 + parity
    digits = [region // 10 ** (5 - i) % 10 for i in range(6)]
    digits += [ymd // 10 ** (7 - i) % 10 for i in range(8)]
    digits += [new_seq // 100, new_seq // 10 % 10, new_seq % 10]
    text = np.empty((rows.size, 18), dtype=np.uint8, order="F")  # column writes stay contiguous
    check = np.zeros(rows.size, dtype=np.int64)
    for i, col in enumerate(digits):
        text[:, i] = col + 48
        check += col * int(_WEIGHTS[i])
    text[:, 17] = _CHECK_BYTES[check % 11]
    text = np.ascontiguousarray(text)
    return out.scatter(rows, _strings(text))


def fpe_id(expr: pl.Expr, key: PseudonymKey, keep: Keep = "year") -> pl.Expr:
    """:func:`fpe_id_tokens` as an expression (one batch call per column)."""
    return expr.map_batches(lambda s: fpe_id_tokens(s, key, keep), return_dtype=pl.String, is_elementwise=True)
