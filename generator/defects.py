"""Inject one defect into one delivered row, and describe it for the ground-truth manifest.

A slot's entity is rendered like every other row (the department's text); the functions here then
change that text the way a real department gets it wrong, and return the row(s) to deliver with
one manifest record each. Only few rows are touched, so this works row by row on Python dicts.

Damage that a frame cannot hold (a missing or extra delimiter, bytes that are not GBK) is left as
a marker in the text; the CSV writer replaces markers after encoding.
"""

from __future__ import annotations

import datetime as dt
import string
from dataclasses import dataclass

import numpy as np
import polars as pl

from catalog.identifiers import USCC_ALPHABET
from catalog.models import ElementType, FieldMap, Resource, Semantic
from generator.config import DefectClass
from generator.ids import mobiles
from generator.pools import org_names, person_names
from generator.population import EID, ElementMaker, Slot, World
from generator.values import allowed_codes, city_short

MARK_BAD = "\x01\x02"  # → bytes that are not valid in the file's encoding
MARK_EXTRA = "\x01\x03"  # → one more delimiter
MARK_JOIN = "\x01\x04"  # marker + the following delimiter → nothing (one delimiter fewer)
BAD_BYTES = b"\xff\xfe"
MIN_DATE = dt.date(1900, 1, 2)


@dataclass
class DefectRow:
    """A delivered row that carries a defect, with its manifest record."""
    values: dict[str, str | None]  # department column → text as delivered
    order: float  # where it sits among the clean rows (files)
    record: dict


def inverse_codes(fm: FieldMap) -> dict[str, str]:
    """Code → the department's own value (the first one the mapping lists for it)."""
    inv: dict[str, str] = {}
    for dept, code in fm.codes.items():
        inv.setdefault(code, dept)
    return inv


def render_value(fm: FieldMap, etype: ElementType, value: object) -> str | None:
    """One canonical value in a department's format (scalar twin of :func:`generator.render.render`)."""
    if value is None:
        return None
    if etype in (ElementType.date, ElementType.datetime):
        assert isinstance(value, dt.date)
        return value.strftime(fm.formats[0])
    if fm.codes:
        return inverse_codes(fm).get(str(value), str(value))
    return str(value)


def csv_line(values: list[str | None], delimiter: str) -> str:
    """A record as the CSV writer writes it (quoted only when needed)."""
    out = []
    for v in values:
        v = "" if v is None else v
        if any(c in v for c in (delimiter, '"', "\n", "\r")):
            v = '"' + v.replace('"', '""') + '"'
        out.append(v)
    return delimiter.join(out)


def unmark(text: str, delimiter: str) -> str:
    """The text a reader sees once the writer has replaced the markers."""
    return (text.replace(MARK_JOIN + delimiter, "").replace(MARK_EXTRA, delimiter)
            .replace(MARK_BAD, "\ufffd" * len(BAD_BYTES)))


class Injector:
    """Applies the slots of one delivery."""

    def __init__(self, world: World, resource: Resource, rng: np.random.Generator):
        self.world = world
        self.rng = rng
        self.resource = resource
        self.lib = world.catalogue.library(resource.library)
        self.fields = {f.element: f for f in resource.fields}
        self.columns = [f.column for f in resource.fields]
        self.maker = ElementMaker(world, self.lib, resource if self.lib.discriminator else None)
        ch = resource.channel
        self.delimiter = getattr(ch, "delimiter", ",")

    def key_text(self, row: dict[str, str | None]) -> str:
        """The entity key as written, composite keys joined with "|"."""
        parts = []
        for k in self.resource.key:
            if k in self.fields:
                parts.append(row.get(self.fields[k].column) or "")
            else:
                parts.append(self.resource.constants.get(k, ""))
        return "|".join(parts)

    def record(self, slot: Slot, row: dict, fm: FieldMap | None, written: str | None, expected: str | None) -> dict:
        """The manifest record of one defect row (the row number is set once rows are ordered)."""
        r = self.resource
        return {
            "class": slot.cls.value, "department": r.department, "resource": r.code, "resource_id": r.id,
            "batch_date": slot.day.isoformat(), "key": self.key_text(row),
            "field": fm.element if fm else None, "column": fm.column if fm else None, "row": None,
            "value_written": written, "value_expected": expected,
        }

    def apply(self, slot: Slot, text: dict[str, str | None], canon: dict[str, object]) -> list[DefectRow]:
        """The row(s) to deliver for one slot: its rendered text with the defect applied."""
        rng = self.rng
        row = dict(text)
        row.pop(EID, None)
        order = float(slot.entity)
        fm = self.fields.get(slot.field) if slot.field else None
        cls = slot.cls
        if cls == DefectClass.duplicate_key:
            twin = float(rng.uniform(0, max(1, self.world.pool_of(self.resource).size)))
            key = self.key_text(row)
            return [DefectRow(dict(row), o, self.record(slot, row, None, key, None)) for o in (order, twin)]
        if cls == DefectClass.unparseable_wrong_columns:
            clean = csv_line([row[c] for c in self.columns], self.delimiter)
            i = int(rng.integers(0, len(self.columns) - 1))
            col = self.columns[i]
            mark = MARK_EXTRA if rng.random() < 0.5 else MARK_JOIN
            row[col] = (row[col] or "") + mark
            written = unmark(csv_line([row[c] for c in self.columns], self.delimiter), self.delimiter)
            return [DefectRow(row, order, self.record(slot, row, None, written, clean))]
        assert fm is not None, f"{cls.value} needs a field"
        e = self.lib.element(fm.element)
        old = row[fm.column]
        written = self.mutate(cls, fm, e.type, old, canon, slot, rng)
        row[fm.column] = written
        shown = unmark(written, self.delimiter) if written is not None else None
        if cls == DefectClass.holder_missing:
            old = None  # no existing holder has this code
        return [DefectRow(row, order, self.record(slot, row, fm, shown, old))]

    def mutate(self, cls: DefectClass, fm: FieldMap, etype: ElementType, old: str | None, canon: dict,
               slot: Slot, rng: np.random.Generator) -> str | None:
        """The text a field gets for a field-level defect class."""
        e = self.lib.element(fm.element)
        v = old or ""
        match cls:
            case DefectClass.invalid_id_checksum:
                return v[:17] + _other(rng, "0123456789X", v[17:18])
            case DefectClass.invalid_uscc_checksum:
                return v[:17] + _other(rng, USCC_ALPHABET, v[17:18])
            case DefectClass.malformed_mobile:
                variant = int(rng.integers(0, 3))
                return [v[:-1], v[0] + "2" + v[2:], v[:5] + "O" + v[6:]][variant]
            case DefectClass.id_birth_mismatch:
                return render_value(fm, etype, self.shift_date(canon[fm.element], rng))
            case DefectClass.id_gender_mismatch:
                return render_value(fm, etype, "2" if canon[fm.element] == "1" else "1")
            case DefectClass.conflict:
                return render_value(fm, etype, self.different(e.code, canon[e.code], rng))
            case DefectClass.missing_required:
                return None
            case DefectClass.unknown_code:
                taken = set(self.world.catalogue.codes.get(e.codelist or "", {})) | set(fm.codes) | set(fm.codes.values())
                return next(c for c in ("99", "98", "X9", "ZZ", "未知代码") if c not in taken)
            case DefectClass.holder_missing:
                assert slot.fresh is not None
                return slot.fresh
            case DefectClass.holder_name_mismatch:
                return self.other_name(e.semantic, v, rng)
            case DefectClass.unparseable_bad_date:
                return self.bad_date(fm, rng)
            case DefectClass.unparseable_bad_encoding:
                return v + MARK_BAD
        raise ValueError(cls)

    def shift_date(self, value: object, rng: np.random.Generator) -> dt.date:
        """Another valid date near ``value`` (never before 1900 nor after the first batch day)."""
        assert isinstance(value, dt.date)
        base = value.date() if isinstance(value, dt.datetime) else value
        latest = self.world.latest
        for _ in range(20):
            delta = int(rng.integers(1, 400)) * (1 if rng.random() < 0.5 else -1)
            d = base + dt.timedelta(days=delta)
            if MIN_DATE <= d <= latest and d != base:
                return d
        return base - dt.timedelta(days=1) if base - dt.timedelta(days=1) >= MIN_DATE else base + dt.timedelta(days=1)

    def other_name(self, semantic: Semantic | None, old: str, rng: np.random.Generator) -> str:
        """A different person or organisation name."""
        pools = self.world.pools
        for _ in range(50):
            if semantic == Semantic.org_name:
                new = org_names(pools, rng, 1, city_short(self.world.catalogue.city.city.name))[0]
            else:
                new = person_names(pools, rng, 1)[0]
            if new != old:
                return new
        return old + "某"

    def different(self, code: str, value: object, rng: np.random.Generator) -> object:
        """Another valid value of the element (a copy that disagrees with the authority)."""
        e = self.lib.element(code)
        if e.type in (ElementType.date, ElementType.datetime):
            return self.shift_date(value, rng)
        if e.type == ElementType.code:
            codes = allowed_codes(e, self.world.catalogue.codes[e.codelist or ""], self.maker.mappings(e))
            return _other(rng, codes, str(value))
        if e.type == ElementType.integer:
            return int(value) + 1  # type: ignore[arg-type]
        if e.type == ElementType.decimal:
            whole, _, frac = str(value).partition(".")
            return f"{int(whole) + 1}{'.' + frac if frac else ''}"
        if e.type == ElementType.mobile or e.semantic == Semantic.phone:
            return mobiles(rng, 1)[0]
        if e.type == ElementType.id_number:
            return self.maker.fresh_ids(rng, 1, local=True)[0]
        if e.type == ElementType.uscc:
            return self.maker.fresh_usccs(rng, 1)[0]
        if e.semantic in (Semantic.person_name, Semantic.org_name):
            return self.other_name(e.semantic, str(value), rng)
        if e.semantic == Semantic.address:
            for _ in range(20):
                new = self.maker.address(rng, 1).get_column("text")[0]
                if new != value:
                    return new
        return f"{value}{_other(rng, list(string.ascii_uppercase), '')}"

    def bad_date(self, fm: FieldMap, rng: np.random.Generator) -> str:
        """Date text no accepted format parses: 30 February in the field's own format, or "N/A"."""
        fmt = fm.formats[0]
        year = str(int(rng.integers(1950, 2020)))
        candidate = fmt.replace("%Y", year).replace("%m", "02").replace("%d", "30").replace("%H", "00") \
            .replace("%M", "00").replace("%S", "00")
        if "%" not in candidate and not _parses(candidate, fm.formats):
            return candidate
        return "N/A"


def _parses(text: str, formats: list[str]) -> bool:
    s = pl.Series([text])
    return any(s.str.strptime(pl.Date, f, strict=False, exact=True).is_not_null().any() for f in formats)


def _other(rng: np.random.Generator, choices: str | list[str], current: str) -> str:
    options = [c for c in choices if c != current]
    return options[int(rng.integers(0, len(options)))]
