"""The fingerprint of an application's extract: a keyed choice of mask glyph in every masked cell.

Masked values carry mask characters (``138****5678``, ``欧**``, ``1***************2X``). In an
extract each mask character is written either as ``*`` (U+002A) or as ``＊`` (U+FF0A FULLWIDTH
ASTERISK, common in Chinese masked data, and encodable in GBK as in UTF-8): the pattern of a cell is HMAC(watermark key of the application,
the cell's text with its mask characters made plain), one bit per mask character. The watermark key
is derived from the pseudonymisation secret and the application id, so nobody without the secret can
compute or forge another application's patterns, and the same value carries different patterns in
two applications' extracts.

Detection (:func:`detect`) reads every cell that holds a mask character, whatever its column (so
column order, names and dropped columns do not matter), and compares the observed pattern with each
candidate application's expected pattern. Each *distinct* masked text is one observation of as many
independent bits as it has mask characters: under the wrong key a bit agrees with probability ½.
A verdict needs at least :data:`MIN_BITS` independent bits, an agreement of at least
:data:`MATCH_RATE` with one application and of at most :data:`OTHER_RATE` with every other one.

Survives: sampling rows (≥ 100 rows carry hundreds of bits), reordering, dropping or renaming
columns, CSV ↔ XLSX, re-encoding as GBK, Excel round trips. Does not survive: replacing the mask
characters (normalising ＊ to *), re-masking or
retyping values, keeping only unmasked columns, aggregation. docs/sharing.md lists these limits.
"""

from __future__ import annotations

import hmac
import math
from dataclasses import dataclass

import polars as pl

from desensitize.pseudonym import PseudonymKey
from desensitize.rules import FULLWIDTH_MASK, MASK

PLAIN = MASK
MARK = FULLWIDTH_MASK  # ＊ FULLWIDTH ASTERISK: in GBK/GB18030 too (a recipient may save the CSV as GBK)
MASK_CHARS = PLAIN + MARK
MIN_BITS = 64  # independent bits a verdict needs: a wrong key agrees on all of them with p = 2^-64
MATCH_RATE = 0.9
OTHER_RATE = 0.75


def application_key(master: PseudonymKey, application_id: str) -> PseudonymKey:
    """The pseudonymisation key of one application: its tokens join nothing another recipient holds."""
    return PseudonymKey(master.subkey(f"share-application/{application_id}").hex().encode(), master.algorithm)


def watermark_key(master: PseudonymKey, application_id: str) -> bytes:
    return master.subkey(f"share-watermark/{application_id}")


def watermark_id(key: bytes) -> str:
    """A public fingerprint of a watermark key (stored in the manifest and the audit)."""
    return "w" + hmac.digest(key, b"gongshu/watermark-id", "sha256").hex()[:8]


def plain(expr: pl.Expr) -> pl.Expr:
    """The cell with its mask characters made plain (what the pattern is keyed on)."""
    return expr.str.replace_all(MARK, PLAIN, literal=True)


def _patterns(key: bytes, texts: list[str]) -> list[str]:
    """For each plain masked text, its glyph string: the text with each ``*`` chosen by one key bit."""
    out = []
    for t in texts:
        digest = hmac.digest(key, t.encode("utf-8"), "sha256")
        bits = int.from_bytes(digest, "big")
        chars, i = [], 0
        for ch in t:
            if ch == PLAIN:
                chars.append(MARK if (bits >> (i % 256)) & 1 else PLAIN)
                i += 1
            else:
                chars.append(ch)
        out.append("".join(chars))
    return out


def _masked_columns(frame: pl.DataFrame) -> list[str]:
    return [c for c, t in frame.schema.items() if t == pl.String]


def embed(frame: pl.DataFrame, key: bytes) -> pl.DataFrame:
    """Every text cell with a mask character gets the application's glyph pattern (per distinct value)."""
    out = frame
    for c in _masked_columns(frame):
        col = frame.get_column(c)
        distinct = col.filter(col.str.contains(PLAIN, literal=True)).unique().drop_nulls()
        if distinct.len() == 0:
            continue
        mapping = pl.DataFrame({c: distinct, "_wm": _patterns(key, distinct.to_list())})
        out = out.with_row_index("_order").join(mapping, on=c, how="left", nulls_equal=False).sort("_order") \
            .with_columns(pl.coalesce("_wm", c).alias(c)).drop("_wm", "_order")
    return out.select(frame.columns)


def strip(frame: pl.DataFrame) -> pl.DataFrame:
    """The frame with every mask character plain (what the masking produced)."""
    return frame.with_columns(plain(pl.col(c)) for c in _masked_columns(frame))


@dataclass(frozen=True)
class Score:
    """How one candidate's expected patterns agree with the observed cells."""

    application_id: str
    values: int  # distinct masked texts observed
    bits: int  # independent mask-character bits observed
    agree: int  # of which agree with this application's key
    exact: int  # distinct texts whose whole pattern agrees

    @property
    def rate(self) -> float:
        return self.agree / self.bits if self.bits else 0.0

    @property
    def log10_chance(self) -> float:
        """log10 of the probability that a wrong key agrees on this many bits or more (binomial ½)."""
        if not self.bits:
            return 0.0
        n, k = self.bits, self.agree
        # tail ≤ exp(-2 n (k/n - ½)²) (Hoeffding) when above half; else no evidence
        if k <= n / 2:
            return 0.0
        return -2 * n * (k / n - 0.5) ** 2 / math.log(10)


def observations(frame: pl.DataFrame) -> pl.DataFrame:
    """Distinct masked cells of the frame (any text column): (observed glyph string, plain text)."""
    parts = []
    for c in frame.columns:
        s = frame.get_column(c)
        if s.dtype != pl.String:
            continue
        s = s.drop_nulls()
        s = s.filter(s.str.contains(f"[{MASK_CHARS}]"))
        if s.len():
            parts.append(s.unique().alias("observed"))
    if not parts:
        return pl.DataFrame(schema={"observed": pl.String(), "text": pl.String()})
    obs = pl.concat(parts).unique().to_frame().with_columns(plain(pl.col("observed")).alias("text"))
    # one observation per plain text (two glyph variants of one text: keep both, they disagree anyway)
    return obs.sort("text", "observed")


def score(obs: pl.DataFrame, application_id: str, key: bytes) -> Score:
    texts = obs.get_column("text").to_list()
    observed = obs.get_column("observed").to_list()
    expected = _patterns(key, texts)
    bits = agree = exact = 0
    for o, e in zip(observed, expected, strict=True):
        pairs = [(a, b) for a, b in zip(o, e, strict=True) if b in MASK_CHARS]
        bits += len(pairs)
        agree += sum(a == b for a, b in pairs)
        exact += all(a == b for a, b in pairs)
    return Score(application_id, len(texts), bits, agree, exact)


@dataclass(frozen=True)
class Verdict:
    application_id: str | None
    scores: list[Score]
    reason: str

    @property
    def identified(self) -> bool:
        return self.application_id is not None


def detect(frame: pl.DataFrame, keys: dict[str, bytes]) -> Verdict:
    """Which application's watermark the frame carries, if one does beyond doubt."""
    obs = observations(frame)
    scores = sorted((score(obs, a, k) for a, k in keys.items()), key=lambda s: (-s.rate, s.application_id))
    if obs.is_empty():
        return Verdict(None, scores, "文件中没有含遮蔽字符的单元格(指纹载于遮蔽值中)")
    marked = obs.get_column("observed").str.contains(MARK, literal=True).any()
    if not marked:
        return Verdict(None, scores, "遮蔽字符均为普通星号: 指纹已被抹去, 或文件并非本平台的申请提取")
    if not scores:
        return Verdict(None, scores, "没有可比对的申请")
    best = scores[0]
    if best.bits < MIN_BITS:
        return Verdict(None, scores, f"可用指纹位数 {best.bits} 少于 {MIN_BITS}, 证据不足")
    if best.rate < MATCH_RATE:
        return Verdict(None, scores, f"与任何申请的指纹吻合率均低于 {MATCH_RATE:.0%} (最高 {best.rate:.1%})")
    if len(scores) > 1 and scores[1].rate > OTHER_RATE:
        return Verdict(None, scores, f"同时与 {scores[1].application_id} 吻合 ({scores[1].rate:.1%}), 无法区分")
    return Verdict(best.application_id, scores, f"{best.agree}/{best.bits} 位吻合 ({best.rate:.1%})")
