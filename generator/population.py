"""The synthetic city: one frame of canonical entities per base library, and who delivers which.

An :class:`EntityPool` holds the entities of a base library (or, for a library with a
discriminator such as 电子证照, of one resource: each licence type has its own issuer). Row ``i``
of ``frame`` is entity ``i``. Some entities are *reserved* for injected defects and delivered only
where their defect needs them; the others are *normal*: each resource delivers a subset of them
(its coverage), nested so that a department's copy of an element only covers entities the
authoritative department delivers, and only normal entities are ever referenced (licence holders,
legal representatives), with the name the authority delivers.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import zlib
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from catalog.loader import Catalogue
from catalog.models import DatabaseChannel, Element, ElementType, Library, Reference, Resource, Semantic
from generator.config import (
    DefectClass,
    ElementSpec,
    SyntheticConfig,
    authority_resources,
    copy_elements,
    delivers_daily,
    eligible_fields,
)
from generator.ids import IdBank, UsccBank, mobiles
from generator.pools import Pools, person_names, pick
from generator.values import (
    Regions,
    addresses,
    allowed_codes,
    code_values,
    constant,
    date_series,
    days_of,
    decimal_values,
    parse_range_dates,
    random_dates,
    render_template,
    string_values,
)

EID = "_eid"


def rng_for(seed: int, *names: str) -> np.random.Generator:
    """An independent generator per stage, so one stage's draws never shift another's."""
    return np.random.default_rng([abs(seed), *(zlib.crc32(n.encode()) for n in names)])


@dataclass
class Slot:
    """One injected defect: a class, where (resource, batch date), on which entity and field."""

    cls: DefectClass
    resource: Resource
    day: dt.date
    field: str | None  # element code; None for row-level classes
    number: int  # stable ordinal, seeds the slot's own draws
    entity: int = -1
    overrides: dict[str, object] = field(default_factory=dict)  # canonical values set before rendering
    fresh: str | None = None  # holder_missing: a valid code that exists nowhere


@dataclass
class Change:
    """New canonical values of some entities from one batch day on."""
    resource: str
    day: dt.date
    values: pl.DataFrame  # _eid + the changed elements' new canonical values


@dataclass
class EntityPool:
    """The entities of a library (or of one resource of a discriminated library)."""
    name: str
    library: Library
    resources: list[Resource]
    frame: pl.DataFrame
    reserved: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))
    coverage: dict[str, np.ndarray] = field(default_factory=dict)
    extra: dict[str, np.ndarray] = field(default_factory=dict)
    slots: list[Slot] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)

    @property
    def size(self) -> int:
        """Number of entities."""
        return self.frame.height

    def state(self, ids: np.ndarray, day: dt.date, columns: list[str] | None = None) -> pl.DataFrame:
        """Canonical rows of ``ids`` as of the end of ``day`` (changes of earlier days applied)."""
        frame = self.frame.select([EID, *[c for c in columns if c != EID]]) if columns else self.frame
        rows = frame.select(pl.all().gather(pl.Series(ids, dtype=pl.Int64)))
        for ch in self.changes:
            if ch.day <= day:
                rows = rows.update(ch.values.select([c for c in ch.values.columns if c in rows.columns]), on=EID)
        return rows


@dataclass
class Schedule:
    """Batch dates: which resource delivers when, and which deliveries are full snapshots."""

    dates: list[dt.date]
    deliveries: dict[str, list[dt.date]]
    stale: str | None
    truncated: str | None

    @property
    def earliest(self) -> dt.date:
        """The first date anything is delivered (the stale delivery included)."""
        return min(d for ds in self.deliveries.values() for d in ds)

    def full(self, resource: Resource, day: dt.date) -> bool:
        """Database channels deliver everything once, then only the rows that changed."""
        return not isinstance(resource.channel, DatabaseChannel) or day == self.deliveries[resource.id][0]

    def is_truncated(self, resource: Resource, day: dt.date) -> bool:
        """Whether this delivery is the truncated one (the last of at least two)."""
        ds = self.deliveries[resource.id]
        return resource.id == self.truncated and len(ds) >= 2 and day == ds[-1]


def make_schedule(catalogue: Catalogue, cfg: SyntheticConfig, date: dt.date, days: int) -> Schedule:
    """Batch dates and which resource delivers on which of them."""
    dates = [date - dt.timedelta(days=days - 1 - i) for i in range(days)]
    stale = cfg.stale.resource if cfg.stale else None
    out: dict[str, list[dt.date]] = {}
    for r in catalogue.resources:
        if r.id == stale:
            assert cfg.stale is not None
            out[r.id] = [date - dt.timedelta(days=cfg.stale.days_before)]
        else:
            out[r.id] = list(dates) if delivers_daily(r) or cfg.incremental else [dates[-1]]
    truncated = cfg.truncated.resource if cfg.truncated and not cfg.incremental else None
    return Schedule(dates, out, stale, truncated)


@dataclass
class World:
    """Everything the stages share: catalogue, config, pools, banks and the entity pools."""

    catalogue: Catalogue
    cfg: SyntheticConfig
    seed: int
    persons: int
    schedule: Schedule
    pools: Pools
    regions: Regions
    ids: IdBank = field(default_factory=IdBank)
    usccs: UsccBank = field(default_factory=UsccBank)
    entity_pools: dict[str, EntityPool] = field(default_factory=dict)

    @property
    def latest(self) -> dt.date:
        """The last date a generated value may carry: the day before the earliest delivery."""
        return self.schedule.earliest - dt.timedelta(days=1)

    def rng(self, *names: str) -> np.random.Generator:
        """An independent random generator for one named stage."""
        return rng_for(self.seed, *names)

    def pool_of(self, resource: Resource) -> EntityPool:
        """The entity pool a resource delivers from."""
        lib = self.catalogue.library(resource.library)
        return self.entity_pools[resource.id if lib.discriminator else lib.code]

    def library_pool(self, code: str) -> EntityPool:
        """The entity pool of a library without discriminator."""
        return self.entity_pools[code]


# --- regions ---------------------------------------------------------------------------------


def load_regions(catalogue: Catalogue, cfg: SyntheticConfig) -> Regions:
    """District and street lists from the code lists named in ``synthetic.yaml``."""
    local = list(catalogue.city.city.region_codes)
    if cfg.regions is None:
        return Regions(local, [], {}, pl.DataFrame(schema={"code": pl.String, "name": pl.String, "parent": pl.String}))
    names = dict(catalogue.codes[cfg.regions.codelist])
    foreign = [c for c in names if c not in local and len(c) == 6 and c.isdigit()]
    streets = pl.DataFrame(schema={"code": pl.String, "name": pl.String, "parent": pl.String})
    if cfg.regions.streets:
        cl = next(c for c in catalogue.city.codelists if c.code == cfg.regions.streets)
        table = pl.read_csv(catalogue.root / cl.file, infer_schema_length=0)
        if cfg.regions.parent_column not in table.columns:
            raise ValueError(f"{catalogue.root / cl.file}: 缺少上级区划列 {cfg.regions.parent_column!r}")
        streets = table.select("code", "name", pl.col(cfg.regions.parent_column).alias("parent")).filter(
            pl.col("parent").is_in(local))
    return Regions(local, foreign, names, streets)


# --- element values --------------------------------------------------------------------------


class ElementMaker:
    """Draws the canonical values of one element for ``n`` entities of a pool."""

    def __init__(self, world: World, lib: Library, resource: Resource | None):
        self.world = world
        self.lib = lib
        self.resource = resource
        self.cat = world.catalogue

    def spec(self, e: Element) -> ElementSpec:
        """The element spec (a resource override first)."""
        return self.world.cfg.element(self.lib.code, e.code, self.resource.id if self.resource else None)

    def mappings(self, e: Element) -> list[dict[str, str]]:
        """The code mappings of every field that carries the element."""
        return [f.codes for r in self.cat.resources_of(self.lib.code) for f in r.fields if f.element == e.code]

    def address(self, rng: np.random.Generator, n: int) -> pl.DataFrame:
        """Addresses built from the region and street code lists."""
        w = self.world
        return addresses(rng, n, w.regions, w.pools.roads, w.cfg.address, self.cat.city.city.name)

    def make(self, e: Element, n: int, cols: dict[str, pl.Series], rng: np.random.Generator) -> pl.Series:
        """Values of a non-key, non-reference element (derived ones read ``cols``)."""
        w, spec, name = self.world, self.spec(e), e.code
        if e.derived_from_id == "gender":
            return pl.Series(name, np.where(cols["_male"].to_numpy(), "1", "2"), dtype=pl.String)
        if e.derived_from_id == "birth_date":
            return cols["_birth"].alias(name)
        if spec.draw_from:
            lib_code, _, ecode = spec.draw_from.partition(".")
            src = w.library_pool(lib_code).frame.get_column(ecode)
            return src.gather(rng.integers(0, len(src), n)).alias(name)
        if spec.template:
            return render_template(spec.template, n, lambda f: self.template_field(f, n, cols, rng)).alias(name)
        if spec.values:
            return pick(pl.Series(spec.values, dtype=pl.String), rng, n).alias(name)
        if e.type == ElementType.code:
            rc = w.cfg.regions.codelist if w.cfg.regions else None
            if e.codelist == rc and "_region" in cols:
                return cols["_region"].alias(name)
            allowed = allowed_codes(e, self.cat.codes[e.codelist or ""], self.mappings(e))
            if e.codelist == rc:
                allowed = [c for c in allowed if c in w.regions.local] or allowed
            return code_values(rng, n, allowed, spec.weights, name)
        if e.type in (ElementType.date, ElementType.datetime):
            lo, hi = parse_range_dates(spec, (w.latest - dt.timedelta(days=365 * 30), w.latest), w.latest)
            s = random_dates(rng, n, lo, hi, name)
            if e.type == ElementType.datetime:
                secs = pl.Series(rng.integers(8 * 3600, 18 * 3600, n) * 1_000_000, dtype=pl.Duration("us"))
                return (s.cast(pl.Datetime("us")) + secs).alias(name)
            return s
        if e.type == ElementType.decimal:
            return decimal_values(rng, n, e, spec, w.cfg.geo, name)
        if e.type == ElementType.integer:
            lo, hi = (int(spec.range[0]), int(spec.range[1])) if spec.range else (0, 100)
            return pl.Series(name, rng.integers(lo, hi + 1, n), dtype=pl.Int64)
        if e.type == ElementType.mobile:
            return mobiles(rng, n, name)
        if e.type == ElementType.id_number:
            return self.fresh_ids(rng, n, local=True).alias(name)
        if e.type == ElementType.uscc:
            return self.fresh_usccs(rng, n).alias(name)
        return string_values(rng, n, e, w.pools, self.cat.city.city.name,
                             lambda k: self.address(rng, k).get_column("text"), name)

    def template_field(self, f: str, n: int, cols: dict[str, pl.Series], rng: np.random.Generator) -> pl.Series | str:
        """The value of one template field for every entity."""
        w = self.world
        if f == "city":
            return self.cat.city.city.name
        if f == "region":
            if "_region" in cols:
                return cols["_region"]
            return pick(pl.Series(w.regions.local, dtype=pl.String), rng, n)
        if f == "street":
            if "_street" not in cols:
                raise ValueError(f"{self.lib.code}: 模板字段 {{street}} 需要本库有按代码表生成的地址")
            return cols["_street"]
        if f == "year":
            dates = [e.code for e in self.lib.elements if e.type in (ElementType.date, ElementType.datetime)
                     and e.code in cols]
            if not dates:
                raise ValueError(f"{self.lib.code}: 模板字段 {{year}} 需要本库有日期数据元")
            return cols[dates[0]].dt.year().cast(pl.String)
        if f in cols:
            return cols[f].cast(pl.String)
        raise ValueError(f"{self.lib.code}: 模板字段 {{{f}}} 未知 (可用: seq, city, region, street, year 或数据元代码)")

    def birth_range(self, e: Element, default_years: tuple[int, int]) -> tuple[int, int]:
        """Birth-date range in days: the spec, or ``default_years`` ago (oldest, youngest)."""
        w = self.world
        lo_y, hi_y = default_years
        default = (w.latest - dt.timedelta(days=round(365.25 * lo_y)), w.latest - dt.timedelta(days=round(365.25 * hi_y)))
        return parse_range_dates(self.spec(e), default, w.latest)

    def fresh_ids(self, rng: np.random.Generator, n: int, *, local: bool, adults: bool = True) -> pl.Series:
        """Valid ID numbers that no other entity has; ``local``: a region code of the city."""
        w = self.world
        codes = w.regions.local if local else w.regions.foreign
        if not codes:
            raise ValueError("需要城市以外的行政区划代码 (synthetic.yaml regions.codelist 中不属于 city.region_codes 的代码)")
        lo, hi = (days_of(w.latest) - 365 * 70, days_of(w.latest) - 365 * 25) if adults else (
            days_of(w.latest) - 365 * 90, days_of(w.latest))
        regions = np.array([int(c) for c in codes], dtype=np.int64)[rng.integers(0, len(codes), n)]
        return IdBank.text(w.ids.issue(rng, rng.integers(lo, hi + 1, n), regions))

    def fresh_usccs(self, rng: np.random.Generator, n: int) -> pl.Series:
        """Valid 统一社会信用代码 that no other entity has."""
        w = self.world
        regions = np.array([int(c) for c in w.regions.local], dtype=np.int64)[rng.integers(0, len(w.regions.local), n)]
        return UsccBank.text(w.usccs.issue(rng, n), regions)


# --- building pools --------------------------------------------------------------------------


def pool_order(world: World) -> list[tuple[str, Library, list[Resource]]]:
    """Pools in dependency order: a library after those it draws values from or refers to."""
    cat, cfg = world.catalogue, world.cfg
    deps: dict[str, set[str]] = {}
    for lib in cat.libraries:
        d = {t.library for ref in lib.references for t in ref.targets} - {lib.code}
        specs = list(cfg.library(lib.code).elements.values()) + [
            s for r in cat.resources_of(lib.code) for s in cfg.resource(r.id).elements.values()]
        d |= {s.draw_from.partition(".")[0] for s in specs if s.draw_from}
        deps[lib.code] = d
    order: list[str] = []
    visiting: set[str] = set()

    def visit(code: str, path: list[str]) -> None:
        if code in order:
            return
        if code in visiting:
            raise ValueError(f"基础库之间的取值/引用依赖成环: {' → '.join([*path, code])}")
        visiting.add(code)
        for d in sorted(deps[code]):
            visit(d, [*path, code])
        visiting.discard(code)
        order.append(code)

    for lib in cat.libraries:
        visit(lib.code, [])
    out = []
    for code in order:
        lib = cat.library(code)
        resources = cat.resources_of(code)
        if lib.discriminator:
            out += [(r.id, lib, [r]) for r in resources]
        elif resources or any(code in deps[o] for o in deps):
            out.append((code, lib, resources))
    return out


def pool_size(world: World, lib: Library, resources: list[Resource]) -> int:
    """Number of entities of a pool: --persons × its size."""
    spec = world.cfg.resource(resources[0].id) if lib.discriminator else world.cfg.library(lib.code)
    return max(1, round((spec.size or 0) * world.persons))


def build_frame(world: World, name: str, lib: Library, resources: list[Resource], n: int) -> pl.DataFrame:
    """Canonical values of every element of ``lib`` for ``n`` entities (plus hidden helper columns)."""
    resource = resources[0] if lib.discriminator else None
    maker = ElementMaker(world, lib, resource)
    rng = world.rng("frame", name)
    cols: dict[str, pl.Series] = {EID: pl.Series(EID, np.arange(n, dtype=np.int64))}
    done: set[str] = set()
    elements = {e.code: e for e in lib.elements}

    if lib.discriminator and resource is not None:
        d = lib.discriminator
        value = resource.constants.get(d.element)
        own = [v for v, dept in d.authorities.items() if (dept if isinstance(dept, str) else dept[0]) == resource.department]
        cols[d.element] = constant(value, n, d.element) if value else pick(pl.Series(own, dtype=pl.String), rng, n)
        done.add(d.element)

    templated = {c for c in elements if maker.spec(elements[c]).template}
    for k in lib.key:
        if k in done or k in templated:
            continue
        e = elements[k]
        if e.type == ElementType.id_number:
            spec = maker.spec(e)
            share = spec.local_share if spec.local_share is not None else 1.0
            lo, hi = maker.birth_range(e, (90, 0))
            births = rng.integers(lo, hi + 1, n)
            local = rng.random(n) < share
            codes = np.array([int(c) for c in world.regions.local], dtype=np.int64)
            regions = codes[rng.integers(0, len(codes), n)]
            if (~local).any():
                foreign = np.array([int(c) for c in world.regions.foreign], dtype=np.int64)
                if not len(foreign):
                    raise ValueError(f"{lib.code}.{k}.local_share < 1 需要城市以外的行政区划代码")
                regions[~local] = foreign[rng.integers(0, len(foreign), int((~local).sum()))]
            bodies = world.ids.issue(rng, births, regions)
            cols[k] = IdBank.text(bodies, k)
            cols["_male"] = pl.Series("_male", IdBank.male(bodies))
            cols["_birth"] = date_series(births, "_birth")
        elif e.type == ElementType.uscc:
            cols[k] = maker.fresh_usccs(rng, n).alias(k)
        else:
            values = maker.make(e, n, cols, rng)
            for _ in range(50):  # random keys (e.g. from a pattern): redraw the few repeats
                dup = values.is_duplicated().to_numpy() & ~values.is_first_distinct().to_numpy()
                if not dup.any():
                    break
                redo = maker.make(e, int(dup.sum()), cols, rng)
                values = values.scatter(np.flatnonzero(dup), redo)
            cols[k] = values
        done.add(k)

    # Addresses built from the code lists first: their district/street feed codes and templates.
    for e in lib.elements:
        spec = maker.spec(e)
        if e.code in done or e.semantic != Semantic.address or spec.draw_from or spec.template or spec.values:
            continue
        a = maker.address(rng, n)
        cols[e.code] = a.get_column("text").alias(e.code)
        if "_region" not in cols:
            cols["_region"], cols["_street"] = a.get_column("_region"), a.get_column("_street")
        done.add(e.code)

    for ref in lib.references:
        if ref.element in done or ref.element in lib.key:
            continue
        fill_reference(world, maker, lib, resource, ref, n, cols, rng)
        done.update(x for x in (ref.element, ref.name_field) if x)

    for e in lib.elements:
        if e.code not in done and e.code not in templated:
            cols[e.code] = maker.make(e, n, cols, rng)
            done.add(e.code)
    for e in lib.elements:
        if e.code not in done:
            cols[e.code] = maker.make(e, n, cols, rng)
            done.add(e.code)

    frame = pl.DataFrame(list(cols.values()))
    _check_frame(name, lib, frame)
    return frame


def _check_frame(name: str, lib: Library, frame: pl.DataFrame) -> None:
    if frame.select(lib.key).is_duplicated().any():
        raise ValueError(f"{name}: 生成的主键 {lib.key} 有重复 (请在 synthetic.yaml 的模板中加入 {{seq}})")
    for e in lib.elements:
        if e.pattern and frame.schema[e.code] == pl.String:
            bad = frame.filter(~pl.col(e.code).str.contains(e.pattern))
            if bad.height:
                raise ValueError(f"{name}: 生成的 {e.code} 不符合 pattern {e.pattern}: {bad.get_column(e.code)[0]!r} "
                                 "(请调整 synthetic.yaml 的模板或取值范围)")


def fill_reference(world: World, maker: ElementMaker, lib: Library, resource: Resource | None, ref: Reference,
                   n: int, cols: dict[str, pl.Series], rng: np.random.Generator) -> None:
    """Values of a referencing element (and its name field) taken from normal target entities."""
    e = lib.element(ref.element)
    targets = [t for t in ref.targets if t.library in world.entity_pools]
    if not targets:
        raise ValueError(f"{lib.code}.{ref.element}: 引用的目标库没有生成 (目标库需要规模与资源)")
    shares = world.cfg.resource(resource.id).holders if resource else None
    weights = [shares.get(t.library, 0.0) for t in targets] if shares else [1.0] + [0.0] * (len(targets) - 1)
    counts = np.floor(np.array(weights) / sum(weights) * n).astype(np.int64)
    counts[int(np.argmax(weights))] += n - counts.sum()
    values, names, libs = [], [], []
    for t, c in zip(targets, counts, strict=True):
        if c == 0:
            continue
        pool = world.library_pool(t.library)
        tlib = pool.library
        if len(tlib.key) != 1:
            raise ValueError(f"{lib.code}.{ref.element}: 目标库 {t.library} 的主键须为单个数据元")
        local_n = int(c)
        fresh_n = 0
        if ref.local_only and tlib.element(tlib.key[0]).type == ElementType.id_number:
            share = maker.spec(e).local_share
            local_n = round(c * (0.8 if share is None else share))
            fresh_n = int(c) - local_n
        ids = referenceable(world, pool, t.name_element)
        if not len(ids):
            raise ValueError(f"{lib.code}.{ref.element}: 目标库 {t.library} 没有可引用的实体")
        pick_ids = rng.choice(ids, local_n, replace=local_n > len(ids))
        values.append(pool.frame.get_column(tlib.key[0]).gather(pick_ids))
        names.append(pool.frame.get_column(t.name_element).gather(pick_ids) if t.name_element
                     else constant("", local_n))
        libs.append(constant(t.library, local_n))
        if fresh_n:
            values.append(maker.fresh_ids(rng, fresh_n, local=False))
            names.append(person_names(world.pools, rng, fresh_n))
            libs.append(constant("", fresh_n))
    order = rng.permutation(n)
    cols[ref.element] = pl.concat(values).gather(order).alias(ref.element)
    cols[f"_target_{ref.element}"] = pl.concat(libs).gather(order).alias(f"_target_{ref.element}")
    if ref.name_field:
        cols[ref.name_field] = pl.concat(names).gather(order).alias(ref.name_field)


def referenceable(world: World, pool: EntityPool, name_element: str | None) -> np.ndarray:
    """Normal entities delivered by the authority of the target's name element (exact name in base)."""
    lib = pool.library
    if name_element:
        sources = authority_resources(world.catalogue, lib.code, name_element)
    else:
        sources = [r for r in pool.resources if world.catalogue.authoritative_elements(r)]
    if not sources:
        return np.zeros(0, dtype=np.int64)
    ids = pool.coverage[sources[0].id]
    for r in sources[1:]:
        ids = np.intersect1d(ids, pool.coverage[r.id])
    return ids


def dependencies(catalogue: Catalogue, resource: Resource) -> list[Resource]:
    """Resources whose entities this one must be a subset of: the authorities of its copies."""
    lib = catalogue.library(resource.library)
    deps: dict[str, Resource] = {}
    for code in copy_elements(catalogue, resource):
        for a in authority_resources(catalogue, lib.code, code):
            if a.id != resource.id:
                deps[a.id] = a
    return list(deps.values())


def closure(catalogue: Catalogue, resource: Resource) -> list[Resource]:
    """All resources an entity of ``resource`` must also be in (authorities of its copies, recursively)."""
    seen: dict[str, Resource] = {}
    todo = dependencies(catalogue, resource)
    while todo:
        r = todo.pop()
        if r.id not in seen and r.id != resource.id:
            seen[r.id] = r
            todo += dependencies(catalogue, r)
    return [seen[k] for k in sorted(seen)]


def selected(world: World, pool: EntityPool, resource: Resource) -> np.ndarray:
    """Mask of entities inside the resource's ``select`` bounds."""
    mask = np.ones(pool.size, dtype=bool)
    for code, bound in world.cfg.resource(resource.id).select.items():
        col = pool.frame.get_column(code)
        for value, keep in ((bound.min, True), (bound.max, False)):
            if value is None:
                continue
            if col.dtype in (pl.Date, pl.Datetime):
                v: object = dt.date.fromisoformat(str(value))
            else:
                col = col.cast(pl.Float64, strict=False)
                v = float(value)
            m = (col >= v) if keep else (col <= v)
            mask &= m.fill_null(False).to_numpy()
    return mask


# --- defect slots ----------------------------------------------------------------------------


def plan_slots(world: World) -> dict[str, list[Slot]]:
    """Every defect slot per pool, with its field chosen (the entity comes with the pool)."""
    cat, cfg, sch = world.catalogue, world.cfg, world.schedule
    out: dict[str, list[Slot]] = {}
    number = 0
    for cls, spec in cfg.defects.items():
        for rid in spec.resources:
            r = cat.resource(rid)
            lib = cat.library(r.library)
            fields = eligible_fields(cat, r, cls)
            for day in sch.deliveries[rid]:
                if not sch.full(r, day) or (cfg.incremental and day != sch.deliveries[rid][0]):
                    continue  # incremental: the first delivery's are repeated (repeat_slots)
                est = estimate_rows(world, r) * (cfg.truncated.keep if sch.is_truncated(r, day) and cfg.truncated else 1)
                n = max(spec.min_count, round(spec.rate * est))
                rng = world.rng("slots", cls.value, rid, day.isoformat())
                for _ in range(n):
                    f = fields[int(rng.integers(0, len(fields)))]
                    if cls == DefectClass.conflict and any(
                            sch.deliveries[a.id][0] > day or a.id == sch.stale for a in authority_resources(cat, lib.code, f)):
                        continue  # the authority has not delivered (in the window) yet: nothing to conflict with
                    key = rid if lib.discriminator else lib.code
                    out.setdefault(key, []).append(Slot(cls, r, day, None if f == "*" else f, number))
                    number += 1
    return out


def estimate_rows(world: World, resource: Resource) -> float:
    """Rows a full delivery of the resource will have, before defects."""
    lib = world.catalogue.library(resource.library)
    if lib.discriminator:
        return pool_size(world, lib, [resource])
    return (world.cfg.resource(resource.id).coverage or 1.0) * pool_size(world, lib, [resource])


def reserve(world: World, pool: EntityPool, slots: list[Slot]) -> None:
    """Pick each slot's entity among those not yet reserved (and inside the resources' selections).

    Slots are drawn per (resource, needs-the-authority) group, so the cost does not grow with
    slots × entities.
    """
    cat = world.catalogue
    reserved = np.zeros(pool.size, dtype=bool)
    masks = {r.id: selected(world, pool, r) for r in pool.resources}
    rng = world.rng("reserve", pool.name)
    groups: dict[tuple[str, bool], list[Slot]] = {}
    for slot in slots:
        groups.setdefault((slot.resource.id, slot.cls == DefectClass.conflict), []).append(slot)
    for (rid, conflict), members in groups.items():
        ok = masks[rid] & ~reserved
        if conflict:
            for a in closure(cat, members[0].resource):
                ok &= masks[a.id]
        candidates = np.flatnonzero(ok)
        if len(candidates) < len(members):
            raise ValueError(f"{pool.name}: 实体不足以向 {rid} 注入 {len(members)} 个缺陷 (请增大 --persons 或降低缺陷比例)")
        chosen = rng.choice(candidates, len(members), replace=False)
        for slot, e in zip(members, chosen, strict=True):
            slot.entity = int(e)
        reserved[chosen] = True
    if reserved.sum() > 0.5 * pool.size:
        raise ValueError(f"{pool.name}: 缺陷占用了 {reserved.sum()}/{pool.size} 个实体 (请增大 --persons 或降低缺陷比例)")
    pool.reserved = reserved
    pool.slots = slots


def cover(world: World, pool: EntityPool) -> None:
    """Normal entities per resource; a resource carrying copies stays inside its authorities' sets."""
    cat = world.catalogue
    normal = ~pool.reserved
    n_normal = int(normal.sum())
    done: dict[str, np.ndarray] = {}
    pending = list(pool.resources)
    rng = world.rng("coverage", pool.name)
    while pending:
        progressed = False
        for r in list(pending):
            deps = [d for d in dependencies(cat, r) if d.id in {x.id for x in pool.resources}]
            if any(d.id not in done for d in deps):
                continue
            if pool.library.discriminator:
                done[r.id] = np.flatnonzero(normal)
            else:
                mask = normal & selected(world, pool, r)
                for d in deps:
                    m = np.zeros(pool.size, dtype=bool)
                    m[done[d.id]] = True
                    mask &= m
                candidates = np.flatnonzero(mask)
                k = min(len(candidates), round((world.cfg.resource(r.id).coverage or 1.0) * n_normal))
                done[r.id] = np.sort(rng.choice(candidates, k, replace=False)) if k < len(candidates) else candidates
            pending.remove(r)
            progressed = True
        if not progressed:
            raise ValueError(f"{pool.name}: 资源之间的副本依赖成环: {', '.join(r.id for r in pending)}")
    pool.coverage = done
    extra: dict[str, list[int]] = {}
    for slot in pool.slots:
        if slot.cls == DefectClass.conflict:
            for a in closure(cat, slot.resource):
                extra.setdefault(a.id, []).append(slot.entity)
    pool.extra = {k: np.array(sorted(v), dtype=np.int64) for k, v in extra.items()}


def changeable(world: World, pool: EntityPool, resource: Resource) -> list[str]:
    """The element an incremental day changes in a resource that declares no changes: its last field
    that is a plain value (not a key, an identifier, a reference or derived from the ID number)."""
    lib = pool.library
    refs = {r.element for r in lib.references}
    plain = [f.element for f in resource.fields
             if f.element not in lib.key and f.element not in refs and f.element not in resource.key
             and (e := lib.element(f.element)).derived_from_id is None
             and e.type not in (ElementType.id_number, ElementType.uscc)
             and f.element not in (lib.discriminator.element if lib.discriminator else ())]
    return plain[-1:]


def plan_changes(world: World, pool: EntityPool) -> None:
    """On each later delivery day, a small share of a resource's entities get new values."""
    sch = world.schedule
    for r in pool.resources:
        elements = world.cfg.resource(r.id).changes or (changeable(world, pool, r) if world.cfg.incremental else [])
        if not elements:
            continue
        maker = ElementMaker(world, pool.library, r if pool.library.discriminator else None)
        for day in sch.deliveries[r.id][1:]:
            rng = world.rng("changes", r.id, day.isoformat())
            cov = pool.coverage[r.id]
            k = min(len(cov), max(1, round(world.cfg.change_rate * len(cov))))
            ids = np.sort(rng.choice(cov, k, replace=False))
            current = pool.state(ids, day)
            cols = {c: current.get_column(c) for c in current.columns}
            new = {EID: pl.Series(EID, ids)}
            for code in elements:
                e = pool.library.element(code)
                values = maker.make(e, k, cols, rng)
                for _ in range(5):  # a change that changes nothing would be no change at all
                    same = (values == current.get_column(code)).fill_null(False).to_numpy()
                    if not same.any():
                        break
                    redo = maker.make(e, k, cols, rng)
                    values = pl.select(pl.when(pl.lit(pl.Series(same))).then(redo).otherwise(values)).to_series()
                new[code] = values.alias(code)
            pool.changes.append(Change(r.id, day, pl.DataFrame(list(new.values()))))


def prepare_slots(world: World, pool: EntityPool) -> None:
    """Canonical overrides some defects need before rendering (e.g. a local representative).

    Fresh codes are issued in one batch per kind: the banks check every new code against all
    issued ones, which must not happen once per slot.
    """
    lib = pool.library
    refs = {r.element: r for r in lib.references}
    by_name = {r.name_field: r for r in lib.references if r.name_field}
    maker = ElementMaker(world, lib, pool.resources[0] if lib.discriminator else None)
    rng = world.rng("prepare", pool.name)
    need: dict[str, list[Slot]] = {"foreign_id": [], "local_id": [], "uscc": []}
    for slot in pool.slots:
        if slot.cls == DefectClass.invalid_id_checksum and slot.field in refs:
            need["foreign_id"].append(slot)  # non-local first: non-local IDs are not looked up
        elif slot.cls == DefectClass.holder_name_mismatch and slot.field in by_name:
            ref = by_name[slot.field]
            if not pool.frame.get_column(f"_target_{ref.element}")[slot.entity]:
                # a non-local representative's name is not checked: take a local one first
                t = next(t for t in ref.targets if t.name_element)
                tpool = world.library_pool(t.library)
                ids = referenceable(world, tpool, t.name_element)
                i = int(ids[int(rng.integers(0, len(ids)))])
                slot.overrides[ref.element] = tpool.frame.get_column(tpool.library.key[0])[i]
                slot.overrides[ref.name_field] = tpool.frame.get_column(t.name_element)[i]
                slot.overrides[f"_target_{ref.element}"] = t.library
        elif slot.cls == DefectClass.holder_missing and slot.field in refs:
            ref = refs[slot.field]
            target = pool.frame.get_column(f"_target_{ref.element}")[slot.entity] or ref.targets[0].library
            tlib = world.catalogue.library(target)
            ktype = tlib.element(tlib.key[0]).type
            if ktype == ElementType.id_number:
                need["local_id"].append(slot)
            elif ktype == ElementType.uscc:
                need["uscc"].append(slot)
            else:
                raise ValueError(f"{lib.code}.{ref.element}: holder_missing 只支持身份号码或统一社会信用代码主键的目标库")
    if need["foreign_id"]:
        fresh = maker.fresh_ids(rng, len(need["foreign_id"]), local=False).to_list()
        for slot, v in zip(need["foreign_id"], fresh, strict=True):
            assert slot.field is not None
            slot.overrides[slot.field] = v
    if need["local_id"]:
        for slot, v in zip(need["local_id"], maker.fresh_ids(rng, len(need["local_id"]), local=True).to_list(),
                           strict=True):
            slot.fresh = v
    if need["uscc"]:
        for slot, v in zip(need["uscc"], maker.fresh_usccs(rng, len(need["uscc"])).to_list(), strict=True):
            slot.fresh = v


def repeat_slots(world: World, pool: EntityPool) -> None:
    """Incremental days: every later full delivery repeats the first delivery's defect slots (same
    entity, field and overrides; :func:`generator.deliveries.build_delivery` draws their text from
    the first day's generator), so that day's file differs from the first only by the changes."""
    sch = world.schedule
    repeated = []
    for slot in pool.slots:
        days = sch.deliveries[slot.resource.id]
        repeated += [dataclasses.replace(slot, day=d, overrides=dict(slot.overrides)) for d in days[1:]
                     if sch.full(slot.resource, d)]
    pool.slots = pool.slots + repeated


def build_world(world: World, progress) -> None:
    """Generate every pool in dependency order: frame, defect entities, coverage, changes."""
    slots = plan_slots(world)
    for name, lib, resources in pool_order(world):
        progress(f"实体 {name}")
        n = pool_size(world, lib, resources) if resources else max(1, round((world.cfg.library(lib.code).size or 0)
                                                                            * world.persons))
        frame = build_frame(world, name, lib, resources, n)
        pool = EntityPool(name, lib, resources, frame)
        reserve(world, pool, slots.get(name, []))
        cover(world, pool)
        world.entity_pools[name] = pool
        prepare_slots(world, pool)
        if world.cfg.incremental:
            repeat_slots(world, pool)
        plan_changes(world, pool)
