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

    Other columns pass through unchanged. Row order is kept.

    Rows in groups of ≥ k at the policy's own level are settled in one pass over the whole frame;
    every later round works only on the rows still unsettled (a few percent), counting their groups
    together with the settled rows that show the same values.
    """
    qis = list(ladders)
    report = KAnonymity(k=k, quasi_identifiers=qis, rows_in=frame.height)
    if not qis or frame.height == 0:
        report.rows_out = frame.height
        report.smallest_group = smallest_group(frame, qis) if qis else (frame.height or None)
        report.groups = 0 if frame.height == 0 else (group_sizes(frame, qis).height if qis else 1)
        return frame, report

    top = {q: len(ladders[q]) - 1 for q in qis}
    level = {q: f"__{q}#level" for q in qis}
    raw = {q: f"__{q}#raw" for q in qis}
    shown = frame.select([ladders[q][0](pl.col(q)).cast(pl.String).alias(q) for q in qis])
    first = shown.select(pl.len().over(qis).alias("n")).get_column("n") >= k
    settled = shown.filter(first).group_by(qis).agg(pl.len().alias("n"))
    work = (
        shown.with_row_index("__row")
        .with_columns([frame.get_column(q).alias(raw[q]) for q in qis])
        .filter(~first)
        .with_columns([pl.lit(0, pl.Int8).alias(level[q]) for q in qis])
    )
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
            pl.when(pl.col(level[q]) < top[q]).then(pl.col(level[q]) + 1).otherwise(pl.col(level[q])).alias(level[q])
        ).with_columns(display(q))

    report.suppressed = work.height
    moved = pl.concat(done) if done else None
    keep = pl.Series([True] * frame.height)
    if report.suppressed:
        keep = keep.scatter(work.get_column("__row"), False)
    published_qis = shown
    if moved is not None:
        rows = moved.get_column("__row")
        published_qis = shown.with_columns([shown.get_column(q).scatter(rows, moved.get_column(q)) for q in qis])
        report.generalised = moved.filter(pl.any_horizontal([pl.col(level[q]) > 0 for q in qis])).height
        for q in qis:
            by_level = dict(moved.group_by(level[q]).len().iter_rows())
            by_level[0] = by_level.get(0, 0) + int(first.sum())
            report.levels[q] = {int(lv): int(n) for lv, n in sorted(by_level.items()) if n}
    else:
        report.levels = {q: {0: int(first.sum())} for q in qis}
    published = frame.with_columns(published_qis).filter(keep)
    report.rows_out = published.height
    sizes = group_sizes(published, qis)
    report.groups = sizes.height
    report.smallest_group = int(sizes.get_column("n").min()) if sizes.height else None
    return published, report
