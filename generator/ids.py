"""Vectorised 公民身份号码 and 统一社会信用代码 factories for the generator.

Numbers are built as numpy digit matrices, check characters come from the numpy helpers of
:mod:`quality.identifiers`, and the text columns are assembled from one byte buffer (no Python
call per row). A bank remembers every number it issued, so persons, non-local representatives
and the codes of "missing" licence holders never collide.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pyarrow as pa

from catalog.identifiers import USCC_ALPHABET, id_check_chars_np, uscc_check_chars_np

EPOCH = np.datetime64("1970-01-01", "D")
_USCC_LETTERS = np.array([i for i, c in enumerate(USCC_ALPHABET) if c.isalpha()], dtype=np.int64)
_ORG_VALUE = np.array([int(c, 36) for c in USCC_ALPHABET], dtype=np.int64)  # GB 11714 value of each char
_ORG_WEIGHTS = np.array([3, 7, 9, 10, 5, 8, 4, 2], dtype=np.int64)
_ORG_CHECK = np.frombuffer(b"0X987654321", dtype=np.uint8)  # 11 - S mod 11, indexed by S mod 11
_USCC_BYTES = np.frombuffer(USCC_ALPHABET.encode(), dtype=np.uint8)
_BYTE_TO_USCC = np.full(256, -1, dtype=np.int64)
_BYTE_TO_USCC[_USCC_BYTES] = np.arange(len(USCC_ALPHABET))


def ascii_series(matrix: np.ndarray, name: str = "") -> pl.Series:
    """An (n, w) uint8 matrix of ASCII codes as a String series of n fixed-width values."""
    n, w = matrix.shape
    data = np.ascontiguousarray(matrix, dtype=np.uint8).tobytes()
    offsets = np.arange(0, (n + 1) * w, w, dtype=np.int64)
    arr = pa.LargeStringArray.from_buffers(n, pa.py_buffer(offsets.tobytes()), pa.py_buffer(data))
    out = pl.from_arrow(arr)
    assert isinstance(out, pl.Series)
    return out.cast(pl.String).alias(name)


def digit_matrix(values: np.ndarray, width: int) -> np.ndarray:
    """Non-negative integers as an (n, width) matrix of their decimal digits, zero-padded."""
    out = np.empty((len(values), width), dtype=np.uint8)
    x = values.astype(np.int64, copy=True)
    for i in range(width - 1, -1, -1):
        out[:, i] = x % 10
        x //= 10
    return out


def ymd(days: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 → YYYYMMDD integers."""
    d = EPOCH + days.astype("timedelta64[D]")
    y = d.astype("datetime64[Y]").astype(np.int64) + 1970
    m = d.astype("datetime64[M]").astype(np.int64) % 12 + 1
    dd = (d - d.astype("datetime64[M]")).astype(np.int64) + 1
    return y * 10000 + m * 100 + dd


def _first_of_each(codes: np.ndarray) -> np.ndarray:
    """Mask of values that are not repeats of an earlier value in ``codes``."""
    order = np.argsort(codes, kind="stable")
    s = codes[order]
    repeat = np.zeros(len(codes), dtype=bool)
    repeat[order[1:][s[1:] == s[:-1]]] = True
    return ~repeat


class _Bank:
    """Issues unique int64 codes; ``redraw`` proposes a new code for the given rows.

    Issued codes are kept as a few sorted chunks: a lookup is a binary search per chunk, and
    issuing a handful of codes never copies the millions issued before.
    """

    def __init__(self) -> None:
        self._chunks: list[np.ndarray] = []

    def _unique(self, codes: np.ndarray, redraw) -> np.ndarray:
        codes = codes.copy()
        bad = ~_first_of_each(codes) | self._known(codes)
        for _ in range(200):
            if not bad.any():
                break
            idx = np.flatnonzero(bad)
            codes[idx] = redraw(idx)
            # codes kept earlier were already checked against the bank; only redrawn ones need it
            bad = ~_first_of_each(codes)
            bad[idx] |= self._known(codes[idx])
        else:
            raise ValueError("无法生成足够多互不相同的编号 (号段已近饱和, 请放宽出生日期范围或减少规模)")
        self._chunks.append(np.sort(codes))
        small = [c for c in self._chunks if len(c) < 65536]
        if len(small) > 16:  # fold the small chunks together now and then
            self._chunks = [c for c in self._chunks if len(c) >= 65536] + [np.sort(np.concatenate(small))]
        return codes

    def _known(self, codes: np.ndarray) -> np.ndarray:
        found = np.zeros(len(codes), dtype=bool)
        for chunk in self._chunks:
            pos = np.searchsorted(chunk, codes).clip(0, len(chunk) - 1)
            found |= chunk[pos] == codes
        return found


class IdBank(_Bank):
    """公民身份号码 (GB 11643): region code + birth date + sequence (odd = male) + check character."""

    def issue(self, rng: np.random.Generator, birth_days: np.ndarray, regions: np.ndarray) -> np.ndarray:
        """17-digit bodies (int64) for persons born on ``birth_days`` in the 6-digit ``regions``."""
        stem = regions.astype(np.int64) * 10**11 + ymd(birth_days) * 1000
        codes = stem + rng.integers(0, 1000, len(stem))
        return self._unique(codes, lambda idx: stem[idx] + rng.integers(0, 1000, len(idx)))

    @staticmethod
    def text(bodies: np.ndarray, name: str = "") -> pl.Series:
        """18-character ID numbers (with check character) for 17-digit bodies."""
        digits = digit_matrix(bodies, 17)
        m = np.empty((len(bodies), 18), dtype=np.uint8)
        m[:, :17] = digits + ord("0")
        m[:, 17] = np.char.encode(id_check_chars_np(digits).astype(str), "ascii").view(np.uint8)
        return ascii_series(m, name)

    @staticmethod
    def male(bodies: np.ndarray) -> np.ndarray:
        """Whether the sequence digit of each ID body is odd (male)."""
        return (bodies % 2) == 1


class UsccBank(_Bank):
    """统一社会信用代码 (GB 32100): prefix + region + 组织机构代码 (GB 11714) + check character.

    The first character of the 组织机构代码 body is a letter, so a USCC is never also a valid
    18-digit ID number (the reference checks tell the two apart by their check characters).
    """

    def issue(self, rng: np.random.Generator, n: int) -> np.ndarray:
        """Org-code bodies: (n,) int64 codes of 8 alphabet indices (base 31)."""

        def draw(k: int) -> np.ndarray:
            first = _USCC_LETTERS[rng.integers(0, len(_USCC_LETTERS), k)]
            rest = rng.integers(0, 31**7, k, dtype=np.int64)
            return first * 31**7 + rest

        return self._unique(draw(n), lambda idx: draw(len(idx)))

    @staticmethod
    def text(org: np.ndarray, regions: np.ndarray, prefix: str = "91", name: str = "") -> pl.Series:
        """The 18-character codes: prefix, region, 组织机构代码 (with its check), check character."""
        n = len(org)
        idx = np.empty((n, 17), dtype=np.int64)
        idx[:, 0] = USCC_ALPHABET.index(prefix[0])
        idx[:, 1] = USCC_ALPHABET.index(prefix[1])
        idx[:, 2:8] = digit_matrix(regions, 6)
        x = org.copy()
        for i in range(15, 7, -1):
            idx[:, i] = x % 31
            x //= 31
        s = _ORG_VALUE[idx[:, 8:16]] @ _ORG_WEIGHTS
        org_check = _ORG_CHECK[s % 11]
        idx[:, 16] = _BYTE_TO_USCC[org_check]
        m = np.empty((n, 18), dtype=np.uint8)
        m[:, :17] = _USCC_BYTES[idx]
        m[:, 17] = np.char.encode(uscc_check_chars_np(idx).astype(str), "ascii").view(np.uint8)
        return ascii_series(m, name)


def mobiles(rng: np.random.Generator, n: int, name: str = "") -> pl.Series:
    """11-digit mainland mobile numbers from real 3-digit prefixes (^1[3-9]\\d{9}$)."""
    prefixes = np.array([130, 131, 132, 133, 134, 135, 136, 137, 138, 139, 150, 151, 152, 153, 155, 156, 157,
                         158, 159, 166, 171, 173, 175, 176, 177, 178, 180, 181, 182, 183, 184, 185, 186, 187,
                         188, 189, 191, 193, 195, 198, 199], dtype=np.int64)
    body = prefixes[rng.integers(0, len(prefixes), n)] * 10**8 + rng.integers(0, 10**8, n)
    return ascii_series(digit_matrix(body, 11) + ord("0"), name)
