"""Membership of many small batches of strings in one large set (the leak scanner's needles).

``values.is_in(needles)`` builds a hash table of the needles on every call: with a share output
scanned and masked in pages, that is the whole needle set again for every page, column and kind
(0.5 s per call against 1 M needles). A :class:`ValueSet` hashes and sorts the set once; a lookup
hashes only the batch and binary-searches the sorted 64-bit hashes (numpy), then compares the
candidates' text, so the answer is exactly ``is_in``'s (nulls are never members).
"""

from __future__ import annotations

import numpy as np
import polars as pl

_SEED = 0x6E65_6564


class ValueSet:
    """A fixed set of strings, hashed and sorted once for :meth:`contains`."""

    def __init__(self, values: pl.Series) -> None:
        # the values themselves are not copied: sorted hashes and their positions, 16 bytes a value
        self._values = values if values.dtype == pl.String and not values.null_count() else \
            values.cast(pl.String).drop_nulls()
        hashes = self._values.hash(seed=_SEED).to_numpy()
        self._order = np.argsort(hashes, kind="stable")
        self._hashes = hashes[self._order]

    def __len__(self) -> int:
        return len(self._hashes)

    def contains(self, values: pl.Series | Probe) -> pl.Series:
        """A Boolean per value: is it in the set (as ``values.is_in(set)``, null → False)."""
        probe = values if isinstance(values, Probe) else None
        values = probe.values if probe else values.cast(pl.String)
        out = np.zeros(values.len(), dtype=bool)
        if not len(self) or not values.len():
            return pl.Series(values.name, out)
        probe = probe or Probe(values)
        wanted, by_hash = probe.wanted, probe.by_hash
        lo = np.empty_like(by_hash)
        lo[by_hash] = np.searchsorted(self._hashes, wanted[by_hash], "left")
        at = np.minimum(lo, len(self) - 1)
        found = self._hashes[at] == wanted
        after = np.minimum(at + 1, len(self) - 1)
        shared = found & (after != at) & (self._hashes[after] == wanted)  # two members with this hash
        one = np.nonzero(found & ~shared)[0]
        if one.size:
            same = self._values.gather(self._order[lo[one]]) == values.gather(one)
            out[one] = same.fill_null(False).to_numpy()
        for i in np.nonzero(shared)[0]:  # two members share 64 bits of hash: as rare as that
            v = values[int(i)]
            end = np.searchsorted(self._hashes, wanted[i], "right")
            out[i] = v is not None and v in set(self._values.gather(self._order[lo[i]:end]).to_list())
        return pl.Series(values.name, out)


class Probe:
    """A batch of strings hashed and ordered once, to be looked up in several :class:`ValueSet`\ s
    (a column against the ID numbers and the mobiles, or the names and the addresses)."""

    def __init__(self, values: pl.Series) -> None:
        self.values = values.cast(pl.String)
        self.wanted = self.values.hash(seed=_SEED).to_numpy()
        # in ascending order, each search starts where the last one ended (numpy keeps the hint)
        self.by_hash = np.argsort(self.wanted, kind="stable")


SAMPLE = 10_000  # values looked at to tell a column of few distinct values (codes, masks, dates)


def distinct_if_few(values: pl.Series) -> pl.Series | None:
    """The distinct values of a large column whose first values repeat (a code, a mask, a date), in
    order of first occurrence; None for a small column or one of mostly distinct values (tokens,
    hashes), where making them distinct would cost as much as what it saves."""
    if values.len() >= 4 * SAMPLE and values.head(SAMPLE).n_unique() * 2 < SAMPLE:
        return values.unique(maintain_order=True)
    return None


def member(values: pl.Series, pool: pl.Series | ValueSet) -> pl.Series:
    """``values.is_in(pool)`` (null → False) for a plain series or a :class:`ValueSet`."""
    if isinstance(pool, ValueSet):
        return pool.contains(values)
    return values.is_in(pool.implode()).fill_null(False)
