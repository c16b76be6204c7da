"""Re-identification risk of open data: k-anonymity over the quasi-identifiers (GB/T 37964 §, spec/masking.md).

Every combination of quasi-identifier values (性别, 出生年, 区县, 民族 …) in a released dataset
must occur at least k times. :func:`k_anonymise` gets there by *local recoding*: only the rows in
groups smaller than k are generalised one rung further (birth year → 5-year band → 10-year band →
suppressed; district → city → suppressed; a code → suppressed), always on the quasi-identifier with
the most distinct values among those rows, until every group has k rows; rows still in a smaller
group once every quasi-identifier is suppressed are dropped (suppression). Groups are counted with
window expressions over whole columns; each round is a few vectorised passes, and there are at most
as many rounds as rungs on the ladders.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import polars as pl

Ladder = list[Callable[[pl.Expr], pl.Expr]]
"""Level 0 is the published form; each next level is coarser; the last level is suppression (null)."""


@dataclass
class KAnonymity:
    """What :func:`k_anonymise` did, and the resulting group sizes."""

    k: int
    quasi_identifiers: list[str]
    rows_in: int = 0
    rows_out: int = 0
    generalised: int = 0  # rows published with at least one quasi-identifier coarser than the policy
    suppressed: int = 0  # rows withheld
    groups: int = 0
    smallest_group: int | None = None
    levels: dict[str, dict[int, int]] = field(default_factory=dict)  # qi → {level: rows}

    @property
    def holds(self) -> bool:
        return self.smallest_group is None or self.smallest_group >= self.k


def group_sizes(frame: pl.DataFrame, quasi_identifiers: list[str]) -> pl.DataFrame:
    """One row per combination of quasi-identifier values, with its row count ``n`` (nulls are a value)."""
    if not quasi_identifiers:
        return pl.DataFrame({"n": [frame.height]} if frame.height else {"n": []}, schema={"n": pl.UInt32})
    return frame.group_by(quasi_identifiers).agg(pl.len().alias("n"))


def smallest_group(frame: pl.DataFrame, quasi_identifiers: list[str]) -> int | None:
    """The size of the smallest quasi-identifier group (None for an empty frame)."""
    if frame.height == 0:
        return None
    return int(group_sizes(frame, quasi_identifiers).get_column("n").min())


def k_anonymise(frame: pl.DataFrame, ladders: dict[str, Ladder], k: int) -> tuple[pl.DataFrame, KAnonymity]:
    """Publishable rows: the quasi-identifier columns of ``frame`` (raw values) replaced by their
    generalised forms so that every group has ≥ k rows; rows that cannot be made so are removed.

    Other columns pass through unchanged. Row order is kept. (:class:`KAnonymiser` with one page.)
    """
    if frame.height == 0:
        return frame, KAnonymity(k=k, quasi_identifiers=list(ladders))
    anon = KAnonymiser(ladders, k)
    indexed = frame.with_row_index("__kanon_row")
    anon.count(indexed)
    settled, held = anon.split(indexed)
    rest, report = anon.finish(held)
    return pl.concat([settled, rest]).sort("__kanon_row").drop("__kanon_row"), report


class KAnonymiser:
    """:func:`k_anonymise` over a frame given a page at a time, in three passes over the pages:

    1. :meth:`count` every page: the size of each group at the policy's own level (one row per group);
    2. :meth:`split` every page: the rows of groups of ≥ k are settled (published at the policy's
       level, as they come), the others held back (a few percent);
    3. :meth:`finish` the held rows: generalised round by round, counting their groups together with
       the settled rows that show the same values, until every group has k rows (local recoding;
       suppression of the rows that cannot get there).

    Settled pages and the finished rows together are what :func:`k_anonymise` gives for the pages
    concatenated (in another row order), with the same report; no pass holds more than a page, the
    group sizes and the held rows.
    """

    def __init__(self, ladders: dict[str, Ladder], k: int) -> None:
        self.ladders, self.k, self.qis = ladders, k, list(ladders)
        self.sizes: pl.DataFrame | None = None  # group → rows, at the policy's level
        self.rows_in = 0
        self.first = 0  # rows settled by split

    def _shown(self, frame: pl.DataFrame) -> pl.DataFrame:
        return frame.select([self.ladders[q][0](pl.col(q)).cast(pl.String).alias(q) for q in self.qis])

    def count(self, page: pl.DataFrame) -> None:
        self.rows_in += page.height
        if not self.qis:
            return
        sizes = self._shown(page).group_by(self.qis).agg(pl.len().alias("n"))
        self.sizes = sizes if self.sizes is None else pl.concat([self.sizes, sizes]).group_by(self.qis).agg(
            pl.col("n").sum())

    def _settled_sizes(self) -> pl.DataFrame:
        sizes = self.sizes if self.sizes is not None else pl.DataFrame(schema={**{q: pl.String for q in self.qis},
                                                                               "n": pl.UInt32})
        return sizes.filter(pl.col("n") >= self.k)

    def split(self, page: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
        """(the page's settled rows, quasi-identifiers shown at the policy's level; its rows held back, raw)."""
        if not self.qis:  # nothing to group by: every row is published as it is
            self.first += page.height
            return page, page.clear()
        shown = self._shown(page)
        n = shown.join(self._settled_sizes(), on=self.qis, how="left", nulls_equal=True,
                       maintain_order="left").get_column("n")
        first = n.is_not_null()
        self.first += int(first.sum())
        return page.with_columns(shown).filter(first), page.filter(~first)

    def finish(self, held: pl.DataFrame) -> tuple[pl.DataFrame, KAnonymity]:
        """The held rows generalised (those that cannot reach k removed), and the report of the whole."""
        qis, k, ladders = self.qis, self.k, self.ladders
        report = KAnonymity(k=k, quasi_identifiers=qis, rows_in=self.rows_in)
        if not qis:
            report.rows_out, report.groups = self.first, 1 if self.first else 0
            report.smallest_group = self.first or None
            return held, report
        top = {q: len(ladders[q]) - 1 for q in qis}
        level = {q: f"__{q}#level" for q in qis}
        raw = {q: f"__{q}#raw" for q in qis}
        settled = self._settled_sizes()
        work = (held.with_row_index("__held")
                .with_columns([pl.col(q).alias(raw[q]) for q in qis])
                .with_columns(self._shown(held))
                .with_columns([pl.lit(0, pl.Int8).alias(level[q]) for q in qis]))
        done: list[pl.DataFrame] = []

        def display(q: str) -> pl.Expr:
            expr = pl.when(pl.col(level[q]) == 0).then(ladders[q][0](pl.col(raw[q])).cast(pl.String))
            for i in range(1, len(ladders[q])):
                expr = expr.when(pl.col(level[q]) == i).then(ladders[q][i](pl.col(raw[q])).cast(pl.String))
            return expr.alias(q)

        while work.height:
            mine = work.group_by(qis).agg(pl.len().alias("mine"))
            counts = mine.join(settled, on=qis, how="left", nulls_equal=True).select(
                *qis, (pl.col("mine") + pl.col("n").fill_null(0)).alias("total"))
            work = work.join(counts, on=qis, how="left", nulls_equal=True, maintain_order="left")
            ok = work.filter(pl.col("total") >= k).drop("total")
            work = work.filter(pl.col("total") < k).drop("total")
            if ok.height:
                done.append(ok)
                settled = pl.concat([settled, ok.group_by(qis).agg(pl.len().alias("n"))]).group_by(
                    qis).agg(pl.col("n").sum())
            candidates = []
            for q in qis:
                below = work.filter(pl.col(level[q]) < top[q])
                if below.height:
                    candidates.append((below.get_column(q).n_unique(), -qis.index(q), q))
            if not candidates:
                break  # every quasi-identifier of these rows is already suppressed
            q = max(candidates)[2]
            work = work.with_columns(
                pl.when(pl.col(level[q]) < top[q]).then(pl.col(level[q]) + 1).otherwise(pl.col(level[q])).alias(
                    level[q])
            ).with_columns(display(q))

        report.suppressed = work.height
        helper = ["__held", *raw.values(), *level.values()]
        moved = pl.concat(done) if done else work.clear()
        report.generalised = moved.filter(pl.any_horizontal([pl.col(level[q]) > 0 for q in qis])).height
        for q in qis:
            if not done:
                report.levels[q] = {0: self.first}
                continue
            by_level = dict(moved.group_by(level[q]).len().iter_rows())
            by_level[0] = by_level.get(0, 0) + self.first
            report.levels[q] = {int(lv): int(n) for lv, n in sorted(by_level.items()) if n}
        published = moved.sort("__held").drop(helper)
        report.rows_out = self.first + published.height
        sizes = settled  # the settled groups and every group the held rows joined, at their final values
        report.groups = sizes.height
        report.smallest_group = int(sizes.get_column("n").min()) if sizes.height else None
        return published, report
