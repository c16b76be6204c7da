"""Apply an :class:`~desensitize.policy.OutputPolicy` to base-library rows: the pure core of a share output.

Input: the base-library versions valid on the snapshot date (key, values, valid_from). Output: the
masked rows of one share/open dataset, plus what was done (rows, generalised, suppressed, tokens
dropped). No storage here: ``assets/share.py`` reads the base and writes the share layer.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from catalog.models import OutputKind
from desensitize.kanon import KAnonymiser, KAnonymity, Ladder, k_anonymise
from desensitize.lookup import ValueSet, member
from desensitize.policy import (
    KEY_ID_COLUMN,
    ROW_HASH_COLUMN,
    VALID_FROM,
    ColumnPolicy,
    Context,
    OutputPolicy,
    Rule,
    rule,
    shape,
)
from desensitize.pseudonym import KEY_ENV, PseudonymKey, PseudonymKeyError, base32, pseudonymise


class MissingKeyError(PseudonymKeyError):
    """A share output with keyed columns was to be built without the pseudonymisation key."""

    def __init__(self, policy: OutputPolicy, env_var: str = KEY_ENV):
        columns = [c.token_column or c.column for c in policy.columns if c.token or c.rule.keyed]
        super().__init__(
            f"share/{policy.name}: 未设置假名化密钥 (环境变量 {env_var}), 而本输出含密钥化列 "
            f"{', '.join(columns)}: 本次不生成, 共享表保留上次发布的内容与令牌; 归集(贴源层、标准层、基础库)不受影响。"
            f"请在运行环境中设置 {env_var} (与以往相同的密钥, 令牌才可与已发布的数据关联) 后重新物化本资产。"
        )


SHARE_CHUNK_ROWS = 25_000  # entities a share output masks, writes and scans at a time (Settings.share_chunk_rows;
# 50,000 until session 11: at 200,000 persons the 人口 restricted output's build grew 216 MB over its start, 158 MB
# with 25,000, in the same time)


@dataclass
class MaskedOutput:
    frame: pl.DataFrame
    rows_in: int  # base rows of the snapshot
    rows_selected: int  # rows this class may carry (discriminator, at least one value)
    kanon: KAnonymity | None = None
    fpe_dropped: dict[str, int] = field(default_factory=dict)  # FPE tokens equal to a real ID → null
    rows_after: int = 0  # masked rows of later pages, written but not held (:meth:`followed_by`)

    @property
    def rows_out(self) -> int:
        return self.frame.height + self.rows_after

    def followed_by(self, page: MaskedOutput, keep: int) -> MaskedOutput:
        """This output with a further page of the same output (masked row by row): counts add up,
        ``frame`` holds the output's first ``keep`` rows (the rest are counted in ``rows_after``)."""
        dropped = {c: self.fpe_dropped.get(c, 0) + page.fpe_dropped.get(c, 0)
                   for c in dict.fromkeys([*self.fpe_dropped, *page.fpe_dropped])}
        take = page.frame.head(max(0, keep - self.frame.height)) if self.rows_after == 0 else page.frame.clear()
        return MaskedOutput(pl.concat([self.frame, take]), self.rows_in + page.rows_in,
                            self.rows_selected + page.rows_selected, page.kanon or self.kanon, dropped,
                            self.rows_after + page.rows_out - take.height)


def ladder(c: ColumnPolicy) -> list[Rule]:
    """The k-anonymity ladder of a quasi-identifier: its policy rule, coarser rungs, then suppression."""
    steps = [c.rule]
    nxt = c.rule.coarser
    if c.rule.spec == "keep":
        nxt = {"date": "birth_year", "address": "to_district", "coordinate": "round(2)"}.get(shape(c.element))
    while nxt is not None:
        r = rule(nxt)
        steps.append(r)
        nxt = r.coarser
    return steps


def _selected(policy: OutputPolicy, snapshot: pl.DataFrame) -> pl.DataFrame:
    lib = policy.library
    rows = snapshot
    if policy.discriminator_values is not None:
        assert lib.discriminator is not None
        rows = rows.filter(pl.col(lib.discriminator.element).is_in(list(policy.discriminator_values)))
    values = [c.column for c in policy.columns if c.column not in lib.key and c.column in rows.columns]
    excluded = [e for e, _ in policy.excluded]
    if excluded and values:  # entities this class knows nothing about are not listed
        rows = rows.filter(pl.any_horizontal([pl.col(v).is_not_null() for v in values]))
    return rows


def mask_snapshot(
    policy: OutputPolicy,
    snapshot: pl.DataFrame,
    *,
    as_of: dt.date,
    key: PseudonymKey | None = None,
    real_ids: pl.Series | ValueSet | None = None,
) -> MaskedOutput:
    """The masked rows of ``policy`` from base rows valid on ``as_of``.

    ``real_ids``: every ID number in the base libraries; format-preserving tokens equal to one of
    them are nulled (counted), so a token never shows anybody's real number.

    A policy with keyed columns (tokens, format-preserving IDs, the key id) needs ``key``
    (:class:`MissingKeyError` otherwise): published empty, the tokens would silently replace the
    ones consumers have joined on.
    """
    page = mask_rows(policy, snapshot, as_of=as_of, key=key, real_ids=real_ids)
    return anonymised(policy, page, as_of=as_of, key=key) if policy.kind == OutputKind.open else page


def mask_rows(
    policy: OutputPolicy,
    snapshot: pl.DataFrame,
    *,
    as_of: dt.date,
    key: PseudonymKey | None = None,
    real_ids: pl.Series | ValueSet | None = None,
) -> MaskedOutput:
    """What :func:`mask_snapshot` does row by row, so a page at a time: the rows the class carries,
    every column masked by its rule — an open output's quasi-identifiers left raw, in a frame not yet
    in the output's types, for :func:`anonymised` over all the pages together."""
    if policy.keyed and key is None:
        raise MissingKeyError(policy)
    ctx = Context(as_of=as_of, key=key)
    rows = _selected(policy, snapshot)
    schema = policy.schema()
    qis = policy.quasi_identifiers if policy.kind == OutputKind.open else []

    exprs: list[pl.Expr] = []
    for c in policy.columns:
        src = pl.col(c.column)
        if c.rule.outputs and c.column not in qis:
            exprs.append(c.rule.build(src, ctx).alias(c.column))
        elif c.column in qis:
            exprs.append(src)  # raw; generalised by k_anonymise below
        if c.token:
            exprs.append(pseudonymise(src, key).alias(c.token_column))
    if VALID_FROM in schema:
        exprs.append(pl.col(VALID_FROM))
    if KEY_ID_COLUMN in schema:
        exprs.append(pl.lit(key.key_id).alias(KEY_ID_COLUMN))
    out = rows.select(exprs) if exprs else pl.DataFrame()

    dropped: dict[str, int] = {}
    if real_ids is not None:
        for c in policy.columns:
            if c.rule.spec.startswith("fpe_id") and c.column in out.columns:
                hit = member(out.get_column(c.column), real_ids)
                dropped[c.column] = int(hit.sum())
                if dropped[c.column]:
                    out = out.with_columns(pl.when(hit).then(None).otherwise(pl.col(c.column)).alias(c.column))
    if policy.kind != OutputKind.open:
        out = _typed(policy, out)
    return MaskedOutput(out, snapshot.height, rows.height, None, dropped)


def _typed(policy: OutputPolicy, frame: pl.DataFrame) -> pl.DataFrame:
    """The output's columns in their published types."""
    return frame.select([pl.col(n).cast(t) for n, t in policy.schema().items()])


def open_ladders(policy: OutputPolicy, as_of: dt.date, key: PseudonymKey | None = None) -> dict[str, Ladder]:
    """The k-anonymity ladder of each quasi-identifier of an open output, as expressions."""
    ctx = Context(as_of=as_of, key=key)
    ladders: dict[str, Ladder] = {}
    for q in policy.quasi_identifiers:
        rungs = ladder(policy.column(q))
        ladders[q] = [(lambda x, r=r: r.build(x, ctx)) for r in rungs] + [lambda x: pl.lit(None, pl.String)]
    return ladders


def open_pages(policy: OutputPolicy, pages: Iterable[pl.DataFrame], again: Iterable[pl.DataFrame], *,
               as_of: dt.date, key: PseudonymKey | None = None,
               real_ids: pl.Series | ValueSet | None = None) -> Iterator[MaskedOutput]:
    """An open output a page at a time from the base rows read twice, in pages (``pages``, then the
    same rows again as ``again``): k-anonymised over every row (:class:`KAnonymiser`) with only a page,
    the group sizes and the few rows to generalise further in memory. Yields each page's settled rows
    as masked, then the rows generalised at the end — the last part carries the k-anonymity report.
    The rows are in no particular order: the open files are written sorted by the values shown."""
    anon = KAnonymiser(open_ladders(policy, as_of, key), policy.k)
    for page in pages:
        anon.count(_selected(policy, page))  # only the quasi-identifiers are looked at
    held: list[pl.DataFrame] = []
    for page in again:
        masked = mask_rows(policy, page, as_of=as_of, key=key, real_ids=real_ids)
        settled, rest = anon.split(masked.frame)
        held.append(rest)
        yield MaskedOutput(_typed(policy, settled), masked.rows_in, masked.rows_selected, None, masked.fpe_dropped)
    rest, report = anon.finish(pl.concat(held))
    yield MaskedOutput(_typed(policy, rest), 0, 0, report)


def anonymised(policy: OutputPolicy, pages: MaskedOutput, *, as_of: dt.date,
               key: PseudonymKey | None = None) -> MaskedOutput:
    """An open output from its rows masked by :func:`mask_rows`: k-anonymised over every row (a
    quasi-identifier group spans the city) and sorted by the values shown."""
    out, report = k_anonymise(pages.frame, open_ladders(policy, as_of, key), policy.k)
    # Row order must say nothing about the (suppressed) key: publish sorted by the values shown.
    out = _typed(policy, out.sort(out.columns, nulls_last=True))
    return MaskedOutput(out, pages.rows_in, pages.rows_selected, report, pages.fpe_dropped)


def with_row_hash(frame: pl.DataFrame) -> pl.DataFrame:
    """Add the 128-bit content hash of each row that incremental rewrites compare on (base32, no digits)."""
    if frame.height == 0:
        return frame.with_columns(pl.lit(None, pl.String).alias(ROW_HASH_COLUMN))
    halves = [frame.hash_rows(seed=seed).to_numpy().astype(">u8") for seed in (0x6773, 0x6A6B)]
    raw = np.concatenate([h.view(np.uint8).reshape(-1, 8) for h in halves], axis=1)
    return frame.with_columns(base32(raw).alias(ROW_HASH_COLUMN))
