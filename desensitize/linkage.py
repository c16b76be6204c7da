"""Masks chosen jointly (spec/masking.md «Masks are chosen jointly (linkage)»).

A mask is safe only together with what else the same row shows. A 公民身份号码 (GB 11643-1999) is
6 region digits, 8 birth-date digits (YYYYMMDD), 3 sequence digits — the last one odd for men,
even for women — and a check character computed from the 17 others. ``keep_first_last(6, 4)`` hides
exactly the 8 birth-date digits, so beside a birth date shown in full it shows the whole number.

This module is the one place that decides, for every ID-number column shown to people (share and
open outputs, asset previews, check samples, 校核 tickets and reports), which mask it gets given the
row around it:

* :class:`Exposure` — what a row reveals of the ID digits through the elements the catalogue marks
  ``derived_from_id`` (出生日期 to the day, month or year; 性别 as the parity of digit 17), whatever
  those elements are called;
* :func:`candidates` — how many ID numbers stay consistent with a mask and an exposure (the check
  character removes one digit in eleven);
* :func:`joint_id_rule` — the default ``keep_first_last(6, 4)`` where that leaves at least
  :data:`MIN_CANDIDATES` numbers, otherwise Hutool ID_CARD ``keep_first_last(1, 2)`` (and
  ``redact`` if even that would not do).

The exposure of a row includes what a keyed token lets its reader join to it: every output with a
token column, and every report carrying tokens, joins the others under the same key, so a birth
date published in full in any of them counts for all of them (:func:`desensitize.policy.token_exposure`).

Rule texts are those of ``desensitize/policy.py`` (``keep_first_last(1, 2)``, ``birth_year`` …)
plus the display rule ``year_only`` (1992-**-**) of reports; only the parts that matter for
linkage are read here, so this module depends on nothing but the catalogue models.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass

from catalog.models import Element, ElementType, Labelled

ID_LENGTH = 18
BIRTH_DIGITS = range(6, 14)  # YYYYMMDD
SEX_DIGIT = 16  # odd: male, even: female
CHECK_DIGIT = 17
WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
CHECK_CHARS = "10X98765432"  # check character of (Σ digit·weight) mod 11

ID_MASK = "keep_first_last(6, 4)"  # region and sequence visible: where no birth date is shown in full
ID_MASK_HUTOOL = "keep_first_last(1, 2)"  # Hutool DesensitizedUtil ID_CARD
MIN_CANDIDATES = 2
"""A row may not narrow an ID number down to fewer candidates than this (i.e. to one)."""


class BirthPrecision(Labelled):
    """How much of an ID-derived birth date a row shows (:attr:`Exposure.birth`)."""

    day = "day", "出生日期(完整)"
    month = "month", "出生年月"
    year = "year", "出生年份"


PRECISION_DIGITS = {"day": 8, "month": 6, "year": 4}  # birth-date digits a date shown at that precision reveals
_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\(([^()]*)\))?\s*(?:\+\s*token\s*)?$")


def _parts(spec: str | None) -> tuple[str, list[str]]:
    if spec is None:
        return "keep", []
    m = _SPEC.match(spec)
    if not m:
        return spec, []
    return m.group(1), [a.strip() for a in (m.group(2) or "").split(",") if a.strip()]


def id_digits_shown(spec: str | None) -> frozenset[int]:
    """Positions (0-based) of an ID number's characters a rule shows as they are; ``None`` = unmasked."""
    name, args = _parts(spec)
    if name == "keep":
        return frozenset(range(ID_LENGTH))
    if name == "keep_first_last" and len(args) == 2:
        first, last = int(args[0]), int(args[1])
        if first + last >= ID_LENGTH:  # keep_first_last masks a value this short whole
            return frozenset()
        return frozenset(range(first)) | frozenset(range(ID_LENGTH - last, ID_LENGTH))
    if name == "keep_first":
        return frozenset(range(min(int(args[0]) if args else 1, ID_LENGTH)))
    if name == "fpe_id":  # region and birth year (decade) are the person's own; the rest is permuted
        return frozenset(range(9 if args and args[0] == "decade" else 10))
    return frozenset()  # token, redact, suppress: nothing of the number


def date_precision(spec: str | None) -> str | None:
    """How much of a date a rule shows: ``day``, ``month``, ``year`` or None (nothing)."""
    name, _ = _parts(spec)
    if name == "keep":
        return "day"
    if name in ("birth_year", "year_only", "year_band", "age_band"):
        return "year"  # a band shows at most the year
    return None


@dataclass(frozen=True)
class Exposure:
    """What a row (or what can be joined to it) shows of an ID number besides the number itself."""

    birth: str | None = None  # finest precision of an ID-derived birth date shown: day, month, year
    sex: bool = False  # an ID-derived 性别 is shown

    def __or__(self, other: Exposure) -> Exposure:
        order = [None, "year", "month", "day"]
        birth = max(self.birth, other.birth, key=order.index)
        return Exposure(birth, self.sex or other.sex)

    @property
    def birth_digits(self) -> frozenset[int]:
        n = PRECISION_DIGITS.get(self.birth or "", 0)
        return frozenset(range(BIRTH_DIGITS.start, BIRTH_DIGITS.start + n))

    def describe(self) -> str:
        shown = ([BirthPrecision(self.birth).label] if self.birth else []) + (["性别"] if self.sex else [])
        return "、".join(shown) or "无"


NOTHING = Exposure()


def exposure(shown: Iterable[tuple[Element | None, str | None]]) -> Exposure:
    """The exposure of a row: each (element, rule text it is shown with; None = as it is)."""
    out = NOTHING
    for e, spec in shown:
        if e is None or e.derived_from_id is None:
            continue
        if e.derived_from_id == "birth_date" and e.type in (ElementType.date, ElementType.datetime):
            out = out | Exposure(birth=date_precision(spec))
        elif e.derived_from_id == "birth_date":  # a date kept as text (e.g. 19350315): whole if kept
            out = out | Exposure(birth="day" if _parts(spec)[0] == "keep" else None)
        elif e.derived_from_id == "gender" and _parts(spec)[0] == "keep":
            out = out | Exposure(sex=True)
    return out


def candidates(id_spec: str | None, seen: Exposure) -> float:
    """How many ID numbers are consistent with a row showing the number under ``id_spec`` and ``seen``
    (worst case: any digit could be anything; a valid check character leaves one in eleven)."""
    known = id_digits_shown(id_spec) | seen.birth_digits
    combos = math.prod(5 if (p == SEX_DIGIT and seen.sex) else 10 for p in range(CHECK_DIGIT) if p not in known)
    return combos / 11 if CHECK_DIGIT in known else combos


def rebuildable(id_spec: str | None, seen: Exposure) -> bool:
    """True when a row would give the ID number back (fewer than :data:`MIN_CANDIDATES` candidates)."""
    return candidates(id_spec, seen) < MIN_CANDIDATES


def joint_id_rule(spec: str | None, seen: Exposure) -> str:
    """The mask of an ID-number column whose default is ``spec``, given what the row shows:
    ``spec`` if it is safe there, else Hutool ID_CARD (first 1 and last 2), else ``redact``."""
    for choice in (spec or ID_MASK, ID_MASK_HUTOOL, "redact"):
        if not rebuildable(choice, seen):
            return choice
    return "redact"


def is_id_element(e: Element | None) -> bool:
    return e is not None and e.type == ElementType.id_number
