"""Masking rules as pure polars expressions (Hutool / ShardingSphere / Presidio-style operators).

Each rule takes the expression of a column and returns the masked expression; nothing here touches
storage, keys or the catalogue's policy (``policy.py`` decides which rule a column gets). Keyed
rules live beside these: ``pseudonym.py`` (HMAC tokens) and ``fpe.py`` (format-preserving ID tokens).

:func:`preview_spec` and :func:`display_spec` pick the rule used wherever a value is shown to a
person (asset metadata previews, check samples, reports) so that no raw identifier is ever
displayed; :func:`joint_specs` chooses an ID number's mask together with the rest of the row
(``linkage.py``), so that a row never shows enough to rebuild the number.

Examples (the default table of docs/masking.md)::

    keep_first_last(6, 4)   11010519491231002X      → 110105********002X
    keep_first_last(3, 4)   13812345678             → 138****5678
    mask_phone              0577-88123456           → 0577-******56
    keep_first(1)           欧阳娜娜                 → 欧***
    mask_email              zhangsan@example.cn     → z*******@example.cn
    keep_first_last(2, 1)   浙C12345                → 浙C****5
    keep_address            浙江省温州市鹿城区五马街道解放路12号 → 浙江省温州市鹿城区******
    to_district             (same)                  → 浙江省温州市鹿城区
    birth_year              1949-12-31              → 1949
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterable, Mapping

import polars as pl

from catalog.models import Element, ElementType, Labelled, Semantic, Sensitivity
from desensitize.linkage import ID_MASK, NOTHING, Exposure, exposure, is_id_element, joint_id_rule

MASK = "*"
FULLWIDTH_MASK = "\uff0a"  # ＊: what an extract's fingerprint writes for some masks (sharing/fingerprint.py)
_STARS = MASK * 256  # longest run a mask ever needs; longer middles keep 256 stars (length hidden)
REDACTED = "******"


class AddressLevel(Labelled):
    """The administrative level an address is kept or generalised to."""

    province = "province", "省"
    city = "city", "市"
    district = "district", "区/县"
    street = "street", "街道/乡镇"


def _str(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


def _stars(count: pl.Expr, mask: str = MASK) -> pl.Expr:
    """``count`` mask characters (count ≥ 0), vectorised without building lists."""
    stars = _STARS if mask == MASK else mask * 256
    return pl.lit(stars).str.slice(0, count)


# --- partial masking ------------------------------------------------------------------------------


def keep_first_last(expr: pl.Expr, first: int, last: int, mask: str = MASK) -> pl.Expr:
    """KEEP_FIRST_N_LAST_M: 11010519491231002X → 110105********002X (first=6, last=4).

    Length-preserving. Values not longer than first + last are fully masked, so a short value
    never leaks whole.
    """
    s = _str(expr)
    n = s.str.len_chars().cast(pl.Int64)
    masked = pl.concat_str([
        s.str.slice(0, first),
        _stars((n - first - last).clip(lower_bound=0), mask),
        s.str.slice((n - last).clip(lower_bound=0), last),
    ])
    full = _stars(n, mask)
    return pl.when(s.is_null()).then(pl.lit(None, pl.String)).when(n > first + last).then(masked).otherwise(full)


def keep_first(expr: pl.Expr, first: int = 1, width: int = 3, mask: str = MASK) -> pl.Expr:
    """Keep the first characters and hide the length: 欧阳娜娜 → 欧***."""
    s = _str(expr)
    return pl.concat_str([s.str.slice(0, first), pl.lit(mask * width)])


def redact(expr: pl.Expr) -> pl.Expr:
    """Full redaction: every non-null value becomes ``******`` (hides value and length)."""
    return pl.when(expr.is_null()).then(pl.lit(None, pl.String)).otherwise(pl.lit(REDACTED))


def suppress(expr: pl.Expr) -> pl.Expr:
    """Drop the value entirely (抑制): null."""
    return pl.lit(None, pl.String).alias(expr.meta.output_name(raise_if_undetermined=False) or "literal")


_LANDLINE = r"^(0(?:10|2\d|[3-9]\d{2}))-?(\d{7,8})$"


def mask_phone(expr: pl.Expr) -> pl.Expr:
    """固定电话 keep the area code and the last 2 digits (0577-88123456 → 0577-******56);
    anything else (手机号码) keeps the first 3 and last 4 (13812345678 → 138****5678)."""
    s = _str(expr).str.strip_chars()
    area = s.str.extract(_LANDLINE, 1)
    number = s.str.extract(_LANDLINE, 2)
    n = number.str.len_chars().cast(pl.Int64)
    landline = pl.concat_str([area, pl.lit("-"), _stars(n - 2), number.str.slice(n - 2, 2)])
    return pl.when(area.is_not_null()).then(landline).otherwise(keep_first_last(s, 3, 4))


def mask_email(expr: pl.Expr) -> pl.Expr:
    """Keep the first character of the local part and the domain: zhangsan@example.cn → z*******@example.cn.

    A value without exactly one ``@`` is fully masked.
    """
    s = _str(expr).str.strip_chars()
    local = s.str.extract(r"^([^@]+)@[^@]+$", 1)
    domain = s.str.extract(r"^[^@]+@([^@]+)$", 1)
    n = local.str.len_chars().cast(pl.Int64)
    masked = pl.concat_str([local.str.slice(0, 1), _stars(n - 1), pl.lit("@"), domain])
    return pl.when(local.is_not_null()).then(masked).otherwise(keep_first_last(s, 0, 0))


# --- addresses ------------------------------------------------------------------------------------

# Administrative prefixes of a Chinese address. The character classes stop each part at the next
# level's marker, so 鹿城区 is never swallowed into a street name.
_PROVINCE = r"(?:北京市|天津市|上海市|重庆市|[^省市区县旗]{2,7}?(?:省|自治区|特别行政区))"
_CITY = r"(?:[^省市区县旗]{1,9}?(?:市|自治州|地区|盟))"
_DISTRICT = r"(?:[^省市区县旗]{1,9}?(?:区|县|旗|市))"
_STREET = r"(?:[^省市区县旗镇乡]{1,11}?(?:街道|镇|乡))"
_ADMIN = {
    "province": _PROVINCE,
    "city": rf"{_PROVINCE}?{_CITY}",
    # a district is only trusted after a province or city: "解放路县前街" is not a 县
    "district": rf"(?:{_PROVINCE}{_CITY}?|{_CITY}){_DISTRICT}",
    "street": rf"(?:{_PROVINCE}{_CITY}?|{_CITY}){_DISTRICT}{_STREET}",
}
_ORDER = ("street", "district", "city", "province")


def address_prefix(expr: pl.Expr, level: AddressLevel = AddressLevel.district) -> pl.Expr:
    """The administrative prefix of an address down to ``level``; a coarser level when the finer
    one is not found, null when none is (no guessing: an unrecognised address yields nothing).

    One regex pass: the alternatives run from ``level`` to the coarsest, and the first that
    matches wins (leftmost-first), which is what a coalesce of one extract per level would give.
    """
    levels = _ORDER[_ORDER.index(level):]
    pattern = "^(" + "|".join(f"(?:{_ADMIN[lv]})" for lv in levels) + ")"
    return _str(expr).str.strip_chars().str.extract(pattern, 1)


def keep_address(expr: pl.Expr, level: AddressLevel = AddressLevel.district, mask: str = REDACTED) -> pl.Expr:
    """Keep an address up to its 区/县 (or ``level``) and mask the rest:
    浙江省温州市鹿城区五马街道解放路12号 → 浙江省温州市鹿城区******. Unrecognised → ``******``."""
    prefix = address_prefix(expr, level)
    return pl.when(expr.is_null()).then(pl.lit(None, pl.String)).otherwise(
        pl.concat_str([prefix.fill_null(""), pl.lit(mask)]))


def to_level(expr: pl.Expr, level: AddressLevel = AddressLevel.district) -> pl.Expr:
    """Generalise an address to its 区/县 (or ``level``): 浙江省温州市鹿城区五马街道… → 浙江省温州市鹿城区."""
    return address_prefix(expr, level)


def address_to_district(expr: pl.Expr, mask: str = REDACTED) -> pl.Expr:
    """Preview masking of addresses (kept for callers of the first rule set): :func:`keep_address`."""
    return keep_address(expr, "district", mask)


# --- dates ----------------------------------------------------------------------------------------


def _date(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.Date)


def birth_year(expr: pl.Expr) -> pl.Expr:
    """Year only: 1949-12-31 → "1949"."""
    return _date(expr).dt.year().cast(pl.String)


def year_band(expr: pl.Expr, width: int = 5) -> pl.Expr:
    """Birth years in bands aligned to multiples of ``width``: 1947 → "1945-1949"."""
    y = _date(expr).dt.year().cast(pl.Int64)
    lo = (y // width) * width
    return pl.concat_str([lo.cast(pl.String), pl.lit("-"), (lo + width - 1).cast(pl.String)])


def age_band(expr: pl.Expr, as_of: dt.date, width: int = 5) -> pl.Expr:
    """Age on ``as_of`` in ``width``-year bands: born 1990-06-01, as of 2026-10-09 → "35-39岁"."""
    d = _date(expr)
    before_birthday = (d.dt.month() > as_of.month) | ((d.dt.month() == as_of.month) & (d.dt.day() > as_of.day))
    age = pl.lit(as_of.year) - d.dt.year().cast(pl.Int64) - before_birthday.cast(pl.Int64)
    lo = (age // width) * width
    return pl.concat_str([lo.cast(pl.String), pl.lit("-"), (lo + width - 1).cast(pl.String), pl.lit("岁")])


# --- coordinates ----------------------------------------------------------------------------------


def round_coordinate(expr: pl.Expr, digits: int = 2) -> pl.Expr:
    """Round to ``digits`` decimals: 0.01° is about 1 km."""
    return expr.cast(pl.Float64).round(digits)


def grid(expr: pl.Expr, cell: float = 0.1) -> pl.Expr:
    """Snap to the centre of a ``cell``-degree grid square (0.1° ≈ 10 km): every point of a cell
    gets the same value, unlike rounding, which shows which side of a line a point lies on."""
    digits = max(0, len(f"{cell:f}".rstrip("0").split(".")[1]) + 1)
    return ((expr.cast(pl.Float64) / cell).floor() * cell + cell / 2).round(digits)


# --- previews and other displays ----------------------------------------------------------------

# The masking of values shown to people is named with the rule texts of the share policy
# (``keep_first_last(6, 4)``, ``mask_phone`` …, see desensitize/policy.py) plus ``year_only``
# (1992-**-**), so that desensitize/linkage.py can reason about every display the same way.


def preview_spec(e: Element | None) -> str | None:
    """The rule of an element in a preview (None: shown as it is); an unknown column is masked too.

    An ID number's mask here is the default; :func:`joint_specs` changes it when the row shows too
    much beside it."""
    if e is None:
        return "keep_first_last(1, 1)"
    if e.type == ElementType.id_number:
        return ID_MASK
    if e.type == ElementType.mobile or e.semantic == Semantic.phone:
        return "mask_phone"
    if e.semantic == Semantic.email:
        return None if e.sensitivity == Sensitivity.public else "mask_email"
    if e.semantic == Semantic.bank_card:
        return "keep_first_last(6, 4)"
    if e.semantic == Semantic.vehicle_plate:
        return None if e.sensitivity == Sensitivity.public else "keep_first_last(2, 1)"
    if e.sensitivity in (Sensitivity.public, Sensitivity.general) and e.type != ElementType.string:
        return None
    if e.semantic == Semantic.person_name:
        return None if e.sensitivity == Sensitivity.public else "keep_first(1)"
    if e.semantic == Semantic.address:
        return None if e.sensitivity == Sensitivity.public else "keep_address(district)"
    if e.sensitivity in (Sensitivity.sensitive, Sensitivity.highly_sensitive):
        return "keep_first_last(4, 4)" if e.type == ElementType.string else None
    return None


def display_spec(e: Element | None) -> str | None:
    """The rule of a single value shown beside a masked key (check samples, 校核 tickets, reports):
    the preview rule, and ID-derived or sensitive dates as the year only (1992-**-**), so the key
    keeps its region and sequence digits."""
    if e is not None and e.type in (ElementType.date, ElementType.datetime) and (
        e.derived_from_id == "birth_date"
        or e.sensitivity in (Sensitivity.sensitive, Sensitivity.highly_sensitive)
    ):
        return "year_only"
    return preview_spec(e)


def year_only(expr: pl.Expr) -> pl.Expr:
    """A date shown by its year: 1992-03-15 → 1992-**-**."""
    return pl.when(expr.is_null()).then(None).otherwise(
        pl.concat_str([expr.cast(pl.String).str.slice(0, 4), pl.lit("-**-**")]))


_DISPLAY = re.compile(r"^([a-z_]+)(?:\((.*)\))?$")


def display_rule(spec: str | None) -> Callable[[pl.Expr], pl.Expr] | None:
    """The expression builder of a display rule text (None: shown as it is)."""
    if spec is None or spec == "keep":
        return None
    m = _DISPLAY.match(spec.replace(" ", ""))
    name, args = (m.group(1), [a for a in (m.group(2) or "").split(",") if a]) if m else (spec, [])
    if name == "keep_first_last":
        first, last = int(args[0]), int(args[1])
        return lambda x: keep_first_last(x, first, last)
    if name == "keep_first":
        n = int(args[0]) if args else 1
        return lambda x: keep_first(x, n)
    if name == "keep_address":
        level = args[0] if args else "district"
        return lambda x: keep_address(x, level)  # type: ignore[arg-type]
    simple = {"mask_phone": mask_phone, "mask_email": mask_email, "redact": redact, "year_only": year_only}
    if name in simple:
        return simple[name]
    raise ValueError(f"未知的展示脱敏规则 {spec!r}")


def display_exposure(elements: Iterable[Element]) -> Exposure:
    """What a display row shows of an ID number when its value column may hold any of ``elements``."""
    return exposure((e, display_spec(e)) for e in elements)


def joint_specs(columns: Mapping[str, tuple[Element | None, str | None]],
                linked: Exposure = NOTHING) -> dict[str, str | None]:
    """The rules of one displayed row: each column's own, with every ID number's mask chosen jointly
    with what the row (and anything joined to it, ``linked``) shows (desensitize/linkage.py)."""
    seen = exposure(columns.values()) | linked
    return {name: joint_id_rule(spec, seen) if is_id_element(e) else spec for name, (e, spec) in columns.items()}


def preview_specs(elements: Mapping[str, Element | None], linked: Exposure = NOTHING) -> dict[str, str | None]:
    """The rules of a preview whose columns are ``elements``."""
    return joint_specs({n: (e, preview_spec(e)) for n, e in elements.items()}, linked)


def mask_for_preview(frame: pl.DataFrame, elements: dict[str, Element | None]) -> pl.DataFrame:
    """Mask every column named in ``elements`` by its preview rule, chosen jointly for the row
    (others pass unchanged): beside a birth date shown in full an ID number keeps only its first
    digit and last two."""
    specs = preview_specs({n: e for n, e in elements.items() if n in frame.columns})
    exprs = []
    for name in frame.columns:
        rule = display_rule(specs[name]) if name in specs else None
        exprs.append(rule(pl.col(name)).alias(name) if rule else pl.col(name))
    return frame.select(exprs)
