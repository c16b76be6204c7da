"""Vectorised value strategies: one function turns (element, spec, n) into a polars Series.

What a value looks like comes from the catalogue (type, semantic, code list, pattern) and, where
the catalogue cannot know, from ``synthetic.yaml`` (weights, ranges, templates, pools). Values
are *canonical*: codes are code-list codes, dates are ``pl.Date``, decimals are already-formatted
text. Rendering to a department's own format happens per delivery (:mod:`generator.render`).
"""

from __future__ import annotations

import datetime as dt
import re
import string
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import polars as pl

from catalog.models import Element, Semantic
from generator.config import AddressSpec, ElementSpec, GeoSpec
from generator.ids import ascii_series, digit_matrix, mobiles
from generator.pools import Pools, org_names, person_names, pick

DATE0 = dt.date(1970, 1, 1)


def days_of(d: dt.date) -> int:
    """Days since 1970-01-01."""
    return (d - DATE0).days


def date_series(days: np.ndarray, name: str = "") -> pl.Series:
    """Days since 1970-01-01 as a ``pl.Date`` series."""
    return pl.Series(name, days.astype(np.int32)).cast(pl.Date)


def constant(value: str, n: int, name: str = "") -> pl.Series:
    """The same text ``n`` times (sharing one buffer)."""
    return pl.Series(name, [value], dtype=pl.String).gather(np.zeros(n, dtype=np.int64))


def decimal_text(scaled: np.ndarray, decimals: int, name: str = "") -> pl.Series:
    """Integers in units of 10**-decimals as fixed-point text ("1234.50")."""
    s = pl.Series(name, scaled.astype(np.int64))
    if decimals == 0:
        return s.cast(pl.String)
    sign = pl.when(s < 0).then(pl.lit("-")).otherwise(pl.lit(""))
    a = s.abs()
    return pl.select(pl.concat_str([
        sign, (a // 10**decimals).cast(pl.String), pl.lit("."), (a % 10**decimals).cast(pl.String).str.zfill(decimals),
    ]).alias(name)).to_series()


# --- regions and addresses -------------------------------------------------------------------


@dataclass(frozen=True)
class Regions:
    """The city's districts (local codes), the other codes of the region list, and streets."""

    local: list[str]
    foreign: list[str]
    names: dict[str, str]
    streets: pl.DataFrame  # code, name, parent — only streets of local districts


def addresses(rng: np.random.Generator, n: int, regions: Regions, roads: pl.Series, spec: AddressSpec,
              city: str) -> pl.DataFrame:
    """``n`` distinct addresses: district → street → road → number, with their region/street codes."""
    lo, hi = spec.numbers
    streets = regions.streets
    if streets.height == 0:  # no street list: district-level addresses
        codes = [c for c in regions.local if c in regions.names] or regions.local
        streets = pl.DataFrame({"code": codes, "name": [""] * len(codes), "parent": codes})
    ns, nr, nn = streets.height, len(roads), hi - lo + 1
    space = ns * nr * nn
    if n > space:
        raise ValueError(f"地址空间不足: {ns} 个街道 × {nr} 条道路 × {nn} 个门牌号 < {n} 个地址 (请扩大 address.numbers)")
    code = rng.choice(space, size=n, replace=False) if space <= 4 * n else _distinct(rng, space, n)
    s_idx, rest = np.divmod(code, nr * nn)
    r_idx, num = np.divmod(rest, nn)
    st = streets[s_idx.tolist()] if n else streets.clear()
    region_names = st.get_column("parent").replace_strict(regions.names, default="", return_dtype=pl.String)
    parts: dict[str, pl.Series] = {
        "city": constant(city, n), "region_name": region_names, "street_name": st.get_column("name"),
        "road": roads.gather(r_idx), "number": pl.Series(num + lo).cast(pl.String),
    }
    text = _format(spec.template, n, lambda f: parts[f])
    return pl.DataFrame({"text": text, "_region": st.get_column("parent"), "_street": st.get_column("code")})


def _distinct(rng: np.random.Generator, space: int, n: int) -> np.ndarray:
    code = rng.integers(0, space, n, dtype=np.int64)
    for _ in range(100):
        _, first = np.unique(code, return_index=True)
        dup = np.ones(n, dtype=bool)
        dup[first] = False
        if not dup.any():
            return code
        code[dup] = rng.integers(0, space, int(dup.sum()), dtype=np.int64)
    raise ValueError("无法生成足够多互不相同的地址")


# --- templates and patterns ------------------------------------------------------------------

_WIDTH = re.compile(r"^0?(\d+)d$")


def _apply_spec(s: pl.Series | str, fmt: str) -> pl.Series | str:
    if isinstance(s, str):
        return format(s, fmt) if fmt else s
    if not fmt:
        return s.cast(pl.String)
    m = _WIDTH.match(fmt)
    if m:
        return s.cast(pl.String).str.zfill(int(m.group(1)))
    if "%" in fmt and s.dtype in (pl.Date, pl.Datetime):
        return s.dt.strftime(fmt)
    raise ValueError(f"模板格式 {fmt!r} 不受支持 (支持 0Nd 与日期的 %Y 等)")


def _format(template: str, n: int, resolve: Callable[[str], pl.Series | str]) -> pl.Series:
    pieces: list[pl.Expr] = []
    frame: dict[str, pl.Series] = {}
    for i, (literal, field, fmt, _) in enumerate(string.Formatter().parse(template)):
        if literal:
            pieces.append(pl.lit(literal))
        if field is None:
            continue
        v = _apply_spec(resolve(field), fmt or "")
        if isinstance(v, str):
            pieces.append(pl.lit(v))
        else:
            frame[f"f{i}"] = v.alias(f"f{i}")
            pieces.append(pl.col(f"f{i}"))
    if not pieces:
        return constant("", n)
    base = pl.DataFrame(frame) if frame else pl.DataFrame({"_n": np.zeros(n, dtype=np.int8)})
    return base.select(pl.concat_str(pieces).alias("v")).to_series()


def render_template(template: str, n: int, resolve: Callable[[str], pl.Series | str]) -> pl.Series:
    """Fill ``template``; ``{seq}`` numbers the rows 1, 2, … within each value of the other fields."""
    fields = [(f, fmt) for _, f, fmt, _ in string.Formatter().parse(template) if f is not None]
    cache: dict[str, pl.Series | str] = {}

    def once(f: str) -> pl.Series | str:  # random fields must be the same in the group and the text
        if f not in cache:
            cache[f] = resolve(f)
        return cache[f]

    if not any(f == "seq" for f, _ in fields):
        return _format(template, n, once)
    group = _format(re.sub(r"\{seq(:[^}]*)?\}", "", template), n, once) if len(fields) > 1 else constant("", n)
    seq = pl.DataFrame({"g": group}).select(pl.int_range(1, pl.len() + 1).over("g").alias("s")).to_series()
    return _format(template, n, lambda f: seq if f == "seq" else once(f))


_CLASS_SHORTHAND = {"d": "0123456789", "w": string.ascii_letters + string.digits + "_"}


def _char_class(body: str) -> str:
    chars: list[str] = []
    i = 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            chars.extend(_CLASS_SHORTHAND.get(body[i + 1], body[i + 1]))
            i += 2
        elif i + 2 < len(body) and body[i + 1] == "-":
            chars.extend(chr(c) for c in range(ord(body[i]), ord(body[i + 2]) + 1))
            i += 3
        else:
            chars.append(body[i])
            i += 1
    return "".join(dict.fromkeys(chars))


def sample_pattern(pattern: str, rng: np.random.Generator, n: int) -> pl.Series | None:
    """Random values matching a simple regex (anchors, literals, classes, \\d, {n}); None if too complex."""
    p = pattern.removeprefix("^").removesuffix("$")
    tokens: list[tuple[str, int]] = []  # (allowed characters, count)
    i = 0
    while i < len(p):
        c = p[i]
        if c in "()|":
            return None
        if c == "[":
            j = p.find("]", i + 1)
            if j < 0 or p[i + 1] == "^":
                return None
            chars, i = _char_class(p[i + 1:j]), j + 1
        elif c == "\\" and i + 1 < len(p):
            chars, i = _CLASS_SHORTHAND.get(p[i + 1], p[i + 1]), i + 2
        elif c == ".":
            chars, i = string.ascii_uppercase + string.digits, i + 1
        else:
            chars, i = c, i + 1
        count = 1
        m = re.match(r"\{(\d+)(,\d*)?\}|[?*+]", p[i:])
        if m:
            q = m.group(0)
            count = int(m.group(1)) if m.group(1) else (1 if q == "+" else 0)  # shortest match is valid
            i += len(q)
        tokens.append((chars, count))
    cols = []
    for chars, count in tokens:
        if count == 0:
            continue
        if all(ord(ch) < 128 for ch in chars):
            table = np.frombuffer(chars.encode(), dtype=np.uint8)
            cols.append(ascii_series(table[rng.integers(0, len(table), (n, count))]))
        else:
            pool = pl.Series(list(chars), dtype=pl.String)
            s = pick(pool, rng, n)
            for _ in range(count - 1):
                s = s + pick(pool, rng, n)
            cols.append(s)
    if not cols:
        return constant("", n)
    return pl.DataFrame({f"c{k}": c for k, c in enumerate(cols)}).select(
        pl.concat_str(pl.all()).alias("v")).to_series()


# --- the per-type defaults ---------------------------------------------------------------------


def parse_range_dates(spec: ElementSpec, default: tuple[dt.date, dt.date], latest: dt.date) -> tuple[int, int]:
    """[min, max] days of a date range, never after ``latest`` (rules reject dates after the batch)."""
    lo, hi = default
    if spec.range is not None:
        lo, hi = dt.date.fromisoformat(str(spec.range[0])), dt.date.fromisoformat(str(spec.range[1]))
    hi = min(hi, latest)
    lo = min(lo, hi)
    return days_of(lo), days_of(hi)


def random_dates(rng: np.random.Generator, n: int, lo: int, hi: int, name: str = "") -> pl.Series:
    """Uniform dates between two day numbers (inclusive)."""
    return date_series(rng.integers(lo, hi + 1, n), name)


def allowed_codes(element: Element, codes: dict[str, str], mappings: list[dict[str, str]]) -> list[str]:
    """Codes a generator may use: in the code list and translatable by every field that maps codes."""
    allowed = list(codes)
    for m in mappings:
        if m:
            allowed = [c for c in allowed if c in set(m.values())]
    if not allowed:
        raise ValueError(f"数据元 {element.code}: 代码表与各资源的代码映射没有共同的代码")
    return allowed


def code_values(rng: np.random.Generator, n: int, allowed: list[str], weights: dict[str, float] | None,
                name: str = "") -> pl.Series:
    """Codes drawn uniformly or by the spec's weights."""
    if weights:
        chosen = [c for c in allowed if weights.get(c, 0) > 0]
        if not chosen:
            raise ValueError(f"{name}: 权重中没有可用代码 (可用: {allowed})")
        p = np.array([weights[c] for c in chosen], dtype=float)
        return pick(pl.Series(chosen, dtype=pl.String), rng, n, p / p.sum()).alias(name)
    return pick(pl.Series(allowed, dtype=pl.String), rng, n).alias(name)


def decimal_values(rng: np.random.Generator, n: int, element: Element, spec: ElementSpec, geo: GeoSpec | None,
                   name: str = "") -> pl.Series:
    """Fixed-point decimals in the spec's range (longitude/latitude: the geo box)."""
    if element.semantic in (Semantic.longitude, Semantic.latitude) and spec.range is None:
        if geo is None:
            raise ValueError(f"数据元 {element.code} 是经纬度: 请在 synthetic.yaml 中设 geo.bbox")
        lo, hi = (geo.bbox[0], geo.bbox[2]) if element.semantic == Semantic.longitude else (geo.bbox[1], geo.bbox[3])
        decimals = spec.decimals if spec.decimals is not None else geo.decimals
    else:
        lo, hi = (float(spec.range[0]), float(spec.range[1])) if spec.range else (1.0, 1000.0)
        decimals = spec.decimals if spec.decimals is not None else 2
    scale = 10**decimals
    scaled = rng.integers(round(lo * scale), round(hi * scale) + 1, n)
    return decimal_text(scaled, decimals, name)


def string_values(rng: np.random.Generator, n: int, element: Element, pools: Pools, city: str,
                  address: Callable[[int], pl.Series], name: str = "") -> pl.Series:
    """Default text for a string element, by its semantic (or pattern)."""
    sem = element.semantic
    if sem == Semantic.person_name:
        return person_names(pools, rng, n).alias(name)
    if sem == Semantic.org_name:
        return org_names(pools, rng, n, city_short(city)).alias(name)
    if sem == Semantic.address:
        return address(n).alias(name)
    if sem == Semantic.phone:
        return mobiles(rng, n, name)
    if element.pattern:
        s = sample_pattern(element.pattern, rng, n)
        if s is not None:
            return s.alias(name)
        raise ValueError(f"数据元 {element.code} 的 pattern 过于复杂, 请在 synthetic.yaml 中为它设 template")
    if sem == Semantic.email:
        local = ascii_series(np.frombuffer(string.ascii_lowercase.encode(), dtype=np.uint8)[
            rng.integers(0, 26, (n, 8))])
        return (local + "@" + pick(pools.email_domains, rng, n)).alias(name)
    if sem == Semantic.bank_card:
        return ("62" + ascii_series(digit_matrix(rng.integers(0, 10**17, n), 17) + ord("0"))).alias(name)
    if sem == Semantic.license_no:
        return ascii_series(digit_matrix(rng.permutation(n) + 1, 12) + ord("0"), name)
    if sem == Semantic.vehicle_plate:
        letters = np.frombuffer(b"ABCDEFGHJKLMNPQRSTUVWXYZ", dtype=np.uint8)
        alnum = np.frombuffer(b"ABCDEFGHJKLMNPQRSTUVWXYZ0123456789", dtype=np.uint8)
        m = np.concatenate([letters[rng.integers(0, len(letters), (n, 1))],
                            alnum[rng.integers(0, len(alnum), (n, 5))]], axis=1)
        return ascii_series(m, name)
    return (pick(pools.words, rng, n) + pick(pools.words, rng, n)).alias(name)


def city_short(city: str) -> str:
    """瓯江市 → 瓯江: the form used in enterprise names."""
    return city[:-1] if len(city) > 2 and city[-1] in "市县区州盟旗" else city
