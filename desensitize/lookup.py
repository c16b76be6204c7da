"""Membership of many small batches of strings in one large set (the leak scanner's needles).

``values.is_in(needles)`` builds a hash table of the needles on every call: with a share output
scanned and masked in pages, that is the whole needle set again for every page, column and kind
(0.5 s per call against 1 M needles). A :class:`ValueSet` hashes and sorts the set once; a lookup
hashes only the batch and binary-searches the sorted hashes (numpy).

The set keeps no strings: each member is two 64-bit hashes of its text under two seeds (16 bytes a
value; the strings, their hashes and positions took several times that), so the needles of a 10 M-person city fit a
share step and what is stored of them (``audit.leak_needle_hashes``) holds no raw identifier. A value
is a member when both of its hashes are a member's: ``is_in``'s answer (nulls are never members),
except for a value sharing 128 bits of hash with a member — a false finding, never a missed one,
about once in 10³¹ lookups against 10⁷ needles. The hashes are polars' (stable within one polars
version: :data:`HASH_SCHEME` names the version, and the needles stored under another are collected
again).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import polars as pl

_SEEDS = (0x6E65_6564, 0x6C65_616B)
HASH_SCHEME = f"polars {pl.__version__} seeds {_SEEDS[0]:x}/{_SEEDS[1]:x}"


def hash_pair(values: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """The two 64-bit hashes of each value's text (a null hashes like any value: callers drop them)."""
    s = values.cast(pl.String)
    return s.hash(seed=_SEEDS[0]).to_numpy(), s.hash(seed=_SEEDS[1]).to_numpy()


def _ascending(a: np.ndarray, b: np.ndarray) -> bool:
    """Are the pairs (a, b) strictly ascending (sorted, no repeats)?"""
    return bool(np.all((a[1:] > a[:-1]) | ((a[1:] == a[:-1]) & (b[1:] > b[:-1]))))


class ValueSet:
    """A fixed set of strings as their sorted hash pairs (:func:`hash_pair`), for :meth:`contains`."""

    def __init__(self, a: np.ndarray, b: np.ndarray) -> None:
        """From the hash pairs of its members (in any order, repeats allowed)."""
        a, b = np.asarray(a, dtype=np.uint64), np.asarray(b, dtype=np.uint64)
        if not _ascending(a, b):  # (read back, they are stored in order)
            pairs = pl.DataFrame({"a": a, "b": b}).sort("a", "b")  # polars' sort: on every core
            a, b = pairs.get_column("a").to_numpy(), pairs.get_column("b").to_numpy()
            del pairs
            keep = np.ones(len(a), dtype=bool)
            keep[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
            if not keep.all():
                a, b = a[keep], b[keep]
        self.a, self.b = a, b

    @classmethod
    def of(cls, values: pl.Series) -> ValueSet:
        """The set of the non-null values of a series."""
        return cls(*hash_pair(values.cast(pl.String).drop_nulls()))

    @classmethod
    def empty(cls) -> ValueSet:
        return cls(np.zeros(0, np.uint64), np.zeros(0, np.uint64))

    @classmethod
    def union(cls, parts: list[tuple[np.ndarray, np.ndarray]]) -> ValueSet:
        """The set of several batches of hash pairs (one per page read)."""
        if not parts:
            return cls.empty()
        if len(parts) == 1:  # no copy of the only part
            return cls(*parts[0])
        return cls(np.concatenate([a for a, _ in parts]), np.concatenate([b for _, b in parts]))

    def __len__(self) -> int:
        return len(self.a)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ValueSet) and np.array_equal(self.a, other.a) and np.array_equal(self.b, other.b)

    def contains(self, values: pl.Series | Probe) -> pl.Series:
        """A Boolean per value: is it in the set (as ``values.is_in(set)``, null → False)."""
        probe = values if isinstance(values, Probe) else Probe(values)
        n = probe.values.len()
        if not len(self) or not n:
            return pl.Series(probe.values.name, np.zeros(n, dtype=bool))
        wanted, by_hash = probe.a, probe.by_hash
        lo = np.empty_like(by_hash)
        lo[by_hash] = np.searchsorted(self.a, wanted[by_hash], "left")
        at = np.minimum(lo, len(self) - 1)
        same = self.a[at] == wanted
        out = same & (self.b[at] == probe.b)
        after = np.minimum(at + 1, len(self) - 1)
        further = same & ~out & (after != at) & (self.a[after] == wanted)  # members sharing 64 bits of hash
        for i in np.nonzero(further)[0]:
            end = np.searchsorted(self.a, wanted[i], "right")
            out[i] = bool((self.b[lo[i]:end] == probe.b[i]).any())
        if probe.nulls is not None:
            out &= ~probe.nulls
        return pl.Series(probe.values.name, out)


class Probe:
    """A batch of strings hashed and ordered once, to be looked up in several :class:`ValueSet`\ s
    (a column against the ID numbers and the mobiles, or the names and the addresses)."""

    def __init__(self, values: pl.Series) -> None:
        self.values = values.cast(pl.String)
        self.a, self.b = hash_pair(self.values)
        self.nulls = self.values.is_null().to_numpy() if self.values.null_count() else None
        # in ascending order, each search starts where the last one ended (numpy keeps the hint)
        self.by_hash = np.argsort(self.a, kind="stable")


class Lookup:
    """A column's values prepared once for the needle sets it is looked up in. A column whose
    first values repeat (a code, a mask, a date) is looked up by its distinct values: the same
    answer, a fraction of the hashing and sorting on a large table."""

    def __init__(self, values: pl.Series, *, repeats: bool = True) -> None:
        """``repeats=False``: the caller has told the values apart already (they are distinct, or not few)."""
        self.values = values
        self.distinct = distinct_if_few(values) if repeats else None
        self._probe: Probe | None = None

    @property
    def probe(self) -> Probe:
        """The values (distinct ones, for a column of few) hashed, once."""
        if self._probe is None:
            self._probe = Probe(self.values if self.distinct is None else self.distinct)
        return self._probe

    def mask(self, needles: ValueSet) -> pl.Series:
        """A Boolean per value: is it a needle."""
        if not len(needles) or not self.values.len():
            return pl.Series(self.values.name, np.zeros(self.values.len(), dtype=bool))
        found = needles.contains(self.probe)
        if self.distinct is None:
            return found
        return self.values.is_in(self.probe.values.filter(found).implode()).fill_null(False)

    def any_in(self, needles: ValueSet) -> bool:
        """Is any value a needle?"""
        return bool(len(needles) and self.values.len() and needles.contains(self.probe).any())


def runs(items: list, rows: int, size: Callable[[Any], int]) -> Iterator[list]:
    """Consecutive items (pages of hashes) gathered into runs of about ``rows`` rows (``size``: an
    item's rows), the last one shorter."""
    run: list = []
    held = 0
    for item in items:
        run.append(item)
        held += size(item)
        if held >= rows:
            yield run
            run, held = [], 0
    if run:
        yield run


def pair_frame(parts: list[tuple[np.ndarray, np.ndarray]]) -> pl.DataFrame:
    """Pages of hash pairs (:func:`hash_pair`) as one frame (a, b), to be stored."""
    return pl.DataFrame({"a": np.concatenate([a for a, _ in parts]), "b": np.concatenate([b for _, b in parts])},
                        schema={"a": pl.UInt64, "b": pl.UInt64})


def frame_pairs(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A stored frame of :func:`pair_frame` as hash pairs again."""
    return frame.get_column("a").to_numpy(), frame.get_column("b").to_numpy()


SAMPLE = 10_000  # values looked at to tell a column of few distinct values (codes, masks, dates)


def has_few_distinct(values: pl.Series) -> bool:
    """Is this a large column whose first values repeat (a code, a mask, a date)? Not a small column nor
    one of mostly distinct values (tokens, hashes), where making them distinct would cost as much as what
    it saves."""
    return values.len() >= 4 * SAMPLE and values.head(SAMPLE).n_unique() * 2 < SAMPLE


def distinct_if_few(values: pl.Series) -> pl.Series | None:
    """The distinct values of a column of few (:func:`has_few_distinct`), in order of first occurrence;
    None for any other."""
    return values.unique(maintain_order=True) if has_few_distinct(values) else None


def member(values: pl.Series, pool: pl.Series | ValueSet) -> pl.Series:
    """``values.is_in(pool)`` (null → False) for a plain series or a :class:`ValueSet`."""
    if isinstance(pool, ValueSet):
        return pool.contains(values)
    return values.is_in(pool.implode()).fill_null(False)
