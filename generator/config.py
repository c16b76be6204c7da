"""``synthetic.yaml``: the demo-only parameters of the synthetic-data generator.

The catalogue says what a city's data *is* (elements, types, code lists, authorities, references);
this file says how much of it to invent and how to break it: population sizes relative to
``--persons``, which share of a library each resource delivers, where values are drawn from,
licence-number formats, and which defect classes go into which resources at which rate.

:func:`load_config` validates the file with pydantic (``extra="forbid"``) and then against the
catalogue, and raises :class:`SyntheticConfigError` listing every problem with the file and the
path inside it, like the catalogue loader does.
"""

from __future__ import annotations

import datetime as dt
import string
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from catalog.loader import Catalogue
from catalog.models import DatabaseChannel, ElementType, FileChannel, Library, Resource, UpdateCycle

CONFIG_FILE = "synthetic.yaml"

Share = Annotated[float, Field(ge=0, le=1)]
Positive = Annotated[float, Field(gt=0)]


class SyntheticConfigError(ValueError):
    """Every problem found in ``synthetic.yaml``, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("合成数据配置有误:\n" + "\n".join(f"- {p}" for p in problems))


class DefectClass(StrEnum):
    """Row-level defect classes the generator injects (``stale`` and ``truncated`` are set apart)."""

    invalid_id_checksum = "invalid_id_checksum"
    invalid_uscc_checksum = "invalid_uscc_checksum"
    malformed_mobile = "malformed_mobile"
    id_birth_mismatch = "id_birth_mismatch"
    id_gender_mismatch = "id_gender_mismatch"
    conflict = "conflict"
    duplicate_key = "duplicate_key"
    missing_required = "missing_required"
    unknown_code = "unknown_code"
    holder_missing = "holder_missing"
    holder_name_mismatch = "holder_name_mismatch"
    unparseable_wrong_columns = "unparseable_wrong_columns"
    unparseable_bad_date = "unparseable_bad_date"
    unparseable_bad_encoding = "unparseable_bad_encoding"


STALE = "stale"
TRUNCATED = "truncated"


class _Spec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ElementSpec(_Spec):
    """How the values of one data element are drawn (default: from its type and semantic)."""

    draw_from: str | None = Field(default=None, description="'library.element': sample values of another library")
    weights: dict[str, float] | None = Field(default=None, description="code → relative weight (code elements)")
    values: list[str] | None = Field(default=None, min_length=1, description="pick uniformly from these texts")
    range: tuple[str | float, str | float] | None = Field(
        default=None, description="[min, max]: ISO dates for dates (and ID birth dates), numbers for numbers"
    )
    decimals: int | None = Field(default=None, ge=0, le=8, description="decimal places of decimal elements")
    template: str | None = Field(
        default=None,
        description="text built from {seq:06d} (numbered within the other fields), {region}, {street}, "
        "{year}, {city} or another element code",
    )
    local_share: Share | None = Field(
        default=None, description="ID numbers: share with a region code of the city (the rest: other regions)"
    )

    @model_validator(mode="after")
    def _one_source(self) -> ElementSpec:
        chosen = [n for n in ("draw_from", "weights", "values", "template") if getattr(self, n) is not None]
        if len(chosen) > 1:
            raise ValueError(f"at most one of draw_from / weights / values / template, got {', '.join(chosen)}")
        return self


class LibrarySpec(_Spec):
    """Size of a base library (entities per person) and how its elements are drawn."""
    size: Positive | None = Field(default=None, description="entities per person (--persons × size)")
    elements: dict[str, ElementSpec] = Field(default_factory=dict)


class Bound(_Spec):
    """Inclusive bounds of an element value (ISO dates or numbers)."""
    min: str | float | None = None
    max: str | float | None = None


class ResourceSpec(_Spec):
    """Which entities a resource delivers (coverage, or size and holders), what changes, overrides."""
    coverage: Share | None = Field(default=None, description="share of the library's entities delivered")
    size: Positive | None = Field(default=None, description="libraries with a discriminator: rows per person")
    holders: dict[str, Share] | None = Field(
        default=None, description="libraries with a discriminator: target library → share of the holders"
    )
    select: dict[str, Bound] = Field(default_factory=dict, description="only entities with element values in bounds")
    changes: list[str] = Field(default_factory=list, description="elements that change on later batch days")
    elements: dict[str, ElementSpec] = Field(default_factory=dict, description="per-resource element overrides")


class RegionSpec(_Spec):
    """The code lists of districts and streets that addresses and ID region codes come from."""
    codelist: str = Field(description="代码表 of 行政区划 codes (6 digits)")
    streets: str | None = Field(default=None, description="代码表 of streets with a parent region column")
    parent_column: str = "parent"


ADDRESS_FIELDS = {"city", "region_name", "street_name", "road", "number"}


class AddressSpec(_Spec):
    """How an address text is composed from district, street, road and door number."""
    template: str = "{city}{region_name}{street_name}{road}{number}号"
    numbers: tuple[int, int] = (1, 999)


class GeoSpec(_Spec):
    """The box longitudes and latitudes are drawn from."""
    bbox: tuple[float, float, float, float] = Field(description="lon_min, lat_min, lon_max, lat_max")
    decimals: int = Field(default=6, ge=0, le=8)


class PoolSpec(_Spec):
    """Value pools that Faker has no good zh_CN list for."""

    org_industries: list[str] = Field(default_factory=lambda: [
        "科技", "贸易", "建设", "电子", "食品", "服饰", "物流", "餐饮", "文化传媒", "机械", "化工", "医药",
        "信息技术", "房地产开发", "农业开发", "教育咨询", "环保科技", "新材料", "汽车服务", "建材",
    ])
    org_suffixes: list[str] = Field(default_factory=lambda: ["有限公司", "有限责任公司", "股份有限公司"])
    roads: int = Field(default=400, ge=1, description="road names drawn from Faker")


class DefectSpec(_Spec):
    """One defect class: its rate and the resources it goes into."""
    rate: Annotated[float, Field(ge=0, le=0.05)] = Field(description="share of a delivery's rows")
    resources: list[str] = Field(min_length=1, description="resource ids (<department>_<code>)")
    min_count: int = Field(default=1, ge=0, description="at least this many per delivery")


class StaleSpec(_Spec):
    """The resource whose only delivery is older than its 更新周期 allows."""
    resource: str
    days_before: int = Field(ge=1, description="its only delivery is this many days before --date")


class TruncatedSpec(_Spec):
    """The resource whose last delivery keeps only a share of its rows."""
    resource: str
    keep: Annotated[float, Field(gt=0, lt=1)] = Field(description="share of the rows kept on the last day")


class SyntheticConfig(_Spec):
    """Contents of ``synthetic.yaml``."""

    libraries: dict[str, LibrarySpec]
    resources: dict[str, ResourceSpec] = Field(default_factory=dict)
    regions: RegionSpec | None = None
    address: AddressSpec = Field(default_factory=AddressSpec)
    geo: GeoSpec | None = None
    pools: PoolSpec = Field(default_factory=PoolSpec)
    change_rate: Share = Field(default=0.005, description="share of a resource's entities changed per later day")
    incremental: bool = Field(default=False, description=(
        "later days as after a first load: every resource delivers on every date (files and APIs whole, "
        "前置库 only the changed rows), repeating the first delivery's defects (same entities, same text), "
        "nothing truncated, and change_rate of every resource's entities changed (a resource without "
        "declared changes: its last plain field element)"))
    stale: StaleSpec | None = None
    truncated: TruncatedSpec | None = None
    defects: dict[DefectClass, DefectSpec] = Field(default_factory=dict)

    def library(self, code: str) -> LibrarySpec:
        """The spec of a base library (an empty one when not listed)."""
        return self.libraries.get(code) or LibrarySpec()

    def resource(self, resource_id: str) -> ResourceSpec:
        """The spec of a resource (coverage 1.0 when not listed)."""
        return self.resources.get(resource_id) or ResourceSpec()

    def element(self, library: str, element: str, resource_id: str | None = None) -> ElementSpec:
        """The spec of an element, a resource's override first."""
        if resource_id and element in self.resource(resource_id).elements:
            return self.resource(resource_id).elements[element]
        return self.library(library).elements.get(element) or ElementSpec()


# --- loading ---------------------------------------------------------------------------------


def load_config(catalogue: Catalogue) -> SyntheticConfig:
    """Read and validate ``synthetic.yaml`` in the catalogue folder."""
    path = Path(catalogue.root) / CONFIG_FILE
    if not path.is_file():
        raise SyntheticConfigError([f"{path}: 文件不存在 (生成器需要目录中的 {CONFIG_FILE})"])
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise SyntheticConfigError([f"{path}: 无法读取 YAML: {exc}"]) from None
    try:
        cfg = SyntheticConfig.model_validate(raw)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"]) or "(根)"
            problems.append(f"{path}: {loc}: {err['msg']} (得到 {err.get('input')!r})")
        raise SyntheticConfigError(problems) from None
    problems = check_config(cfg, catalogue)
    if problems:
        raise SyntheticConfigError([f"{path}: {p}" for p in problems])
    return cfg


def delivers_daily(resource: Resource) -> bool:
    """Whether a resource delivers every batch day (每日 or 实时)."""
    return resource.update_cycle in (UpdateCycle.daily, UpdateCycle.realtime)


def copy_elements(catalogue: Catalogue, resource: Resource) -> list[str]:
    """Field elements this resource carries as a copy of another department's authoritative value."""
    lib = catalogue.library(resource.library)
    auth = catalogue.authoritative_elements(resource)
    out = []
    for f in resource.fields:
        if f.element in lib.key or f.element in auth:
            continue
        if isinstance(catalogue.authority(lib.code, f.element), str):
            out.append(f.element)
    return out


def authority_resources(catalogue: Catalogue, library: str, element: str) -> list[Resource]:
    """Resources of ``library`` that carry ``element`` and whose department is its authority."""
    auth = catalogue.authority(library, element)
    if not isinstance(auth, str):
        return []
    return [r for r in catalogue.resources_of(library)
            if r.department == auth and element in {f.element for f in r.fields}]


def eligible_fields(catalogue: Catalogue, resource: Resource, cls: DefectClass) -> list[str]:
    """Element codes of the fields a defect class can hit in ``resource`` without causing any other finding."""
    lib = catalogue.library(resource.library)
    fields = [f.element for f in resource.fields]
    refs = {r.element: r for r in lib.references}
    name_fields = {r.name_field for r in lib.references if r.name_field}
    id_key = any(lib.element(k).type == ElementType.id_number for k in resource.key if k in fields)

    def el(code: str):
        return lib.element(code)

    match cls:
        case DefectClass.invalid_id_checksum:
            # a referencing ID is checked for existence: only local_only ones can be made non-local first
            return [c for c in fields if el(c).type == ElementType.id_number and (c not in refs or refs[c].local_only)]
        case DefectClass.invalid_uscc_checksum:
            return [c for c in fields if el(c).type == ElementType.uscc and c not in refs]
        case DefectClass.malformed_mobile:
            return [c for c in fields if el(c).type == ElementType.mobile]
        case DefectClass.id_birth_mismatch:
            return [c for c in fields if id_key and el(c).derived_from_id == "birth_date"]
        case DefectClass.id_gender_mismatch:
            return [c for c in fields if id_key and el(c).derived_from_id == "gender" and el(c).codelist]
        case DefectClass.conflict:
            # a derived element that differs from the authority also differs from the ID digits
            return [c for c in copy_elements(catalogue, resource)
                    if not el(c).derived_from_id and c not in refs and c not in name_fields
                    and authority_resources(catalogue, lib.code, c)]
        case DefectClass.missing_required:
            req = [c for c in fields if el(c).required]
            non_key = [c for c in req if c not in resource.key]
            return non_key or req
        case DefectClass.unknown_code:
            return [c for c in fields if el(c).type == ElementType.code and el(c).codelist and not el(c).derived_from_id]
        case DefectClass.holder_missing:
            return [c for c in fields if c in refs and refs[c].targets]
        case DefectClass.holder_name_mismatch:
            return [r.name_field for c, r in refs.items()
                    if c in fields and r.name_field in fields and any(t.name_element for t in r.targets)]
        case DefectClass.unparseable_bad_date:
            return [c for c in fields if el(c).type in (ElementType.date, ElementType.datetime)]
        case DefectClass.unparseable_bad_encoding:
            ch = resource.channel
            ok = isinstance(ch, FileChannel) and ch.format == "csv" and ch.encoding in ("gbk", "gb18030")
            return [c for c in fields if ok and el(c).type == ElementType.string]
        case DefectClass.unparseable_wrong_columns:
            ch = resource.channel
            return ["*"] if isinstance(ch, FileChannel) and ch.format == "csv" and len(fields) > 1 else []
        case DefectClass.duplicate_key:
            return ["*"]
    return []


def _template_fields(template: str) -> list[str]:
    return [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]


def check_config(cfg: SyntheticConfig, catalogue: Catalogue) -> list[str]:
    """Cross-check the config against the catalogue; every problem names its path in the file."""
    problems: list[str] = []
    libs = {lib.code: lib for lib in catalogue.libraries}
    res = {r.id: r for r in catalogue.resources}
    codelists = set(catalogue.codes)

    for code, spec in cfg.libraries.items():
        lib = libs.get(code)
        if lib is None:
            problems.append(f"libraries.{code}: 目录中没有该基础库 (期望: {', '.join(libs)})")
            continue
        if lib.discriminator is None and spec.size is None and catalogue.resources_of(code):
            problems.append(f"libraries.{code}.size: 需要实体规模 (每人多少个实体)")
        if lib.discriminator is not None and spec.size is not None:
            problems.append(f"libraries.{code}.size: 有区分字段的库按资源设 size, 不在库上设")
        for ecode, es in spec.elements.items():
            problems += _check_element(f"libraries.{code}.elements.{ecode}", lib, ecode, es, libs, catalogue)
    for lib in catalogue.libraries:
        if lib.discriminator is None and catalogue.resources_of(lib.code) and lib.code not in cfg.libraries:
            problems.append(f"libraries: 缺少基础库 {lib.code} 的规模 (size)")

    stale = cfg.stale.resource if cfg.stale else None
    for rid, spec in cfg.resources.items():
        r = res.get(rid)
        where = f"resources.{rid}"
        if r is None:
            problems.append(f"{where}: 目录中没有该资源 (期望: {', '.join(res)})")
            continue
        lib = libs[r.library]
        if lib.discriminator is not None:
            if spec.coverage is not None:
                problems.append(f"{where}.coverage: {lib.code} 有区分字段, 请用 size 与 holders")
            for tlib in spec.holders or {}:
                targets = {t.library for ref in lib.references for t in ref.targets}
                if tlib not in targets:
                    problems.append(f"{where}.holders.{tlib}: 不是 {lib.code} 引用的目标库 (期望: {', '.join(sorted(targets))})")
            if spec.holders is not None and abs(sum(spec.holders.values()) - 1) > 1e-9:
                problems.append(f"{where}.holders: 各目标库占比之和应为 1 (得到 {sum(spec.holders.values()):g})")
        elif spec.size is not None or spec.holders is not None:
            problems.append(f"{where}: size/holders 只用于有区分字段的库, {lib.code} 请用 coverage")
        for ecode in spec.select:
            if ecode not in {e.code for e in lib.elements}:
                problems.append(f"{where}.select.{ecode}: 不是 {lib.code} 的数据元")
        carried_elsewhere = {f.element for o in catalogue.resources_of(lib.code) if o.id != rid for f in o.fields}
        refs = {x for ref in lib.references for x in (ref.element, ref.name_field) if x}
        names = {t.name_element for other in libs.values() for ref in other.references for t in ref.targets
                 if t.library == lib.code and t.name_element}
        auth = catalogue.authoritative_elements(r)
        for ecode in spec.changes:
            if ecode not in {f.element for f in r.fields}:
                problems.append(f"{where}.changes: {ecode} 不是本资源的字段")
            elif ecode in lib.key or ecode not in auth or auth[ecode] is not None:
                problems.append(f"{where}.changes: {ecode} 必须是本资源权威提供的非主键数据元")
            elif ecode in carried_elsewhere or ecode in refs or ecode in names or lib.element(ecode).derived_from_id:
                problems.append(f"{where}.changes: {ecode} 还被其他资源携带或被引用, 变更会造成不一致")
        if spec.elements and lib.discriminator is None:
            problems.append(f"{where}.elements: {lib.code} 的实体由多个资源共享, 取值请在 libraries.{lib.code}.elements 中设")
        for ecode, es in spec.elements.items():
            problems += _check_element(f"{where}.elements.{ecode}", lib, ecode, es, libs, catalogue)
    for r in catalogue.resources:
        if catalogue.library(r.library).discriminator is not None and cfg.resource(r.id).size is None:
            problems.append(f"resources.{r.id}.size: 有区分字段的库的资源需要 size (每人多少行)")

    if cfg.regions:
        for name in (cfg.regions.codelist, cfg.regions.streets):
            if name and name not in codelists:
                problems.append(f"regions: 未登记的代码表 {name!r} (期望: {', '.join(sorted(codelists))})")
    unknown = set(_template_fields(cfg.address.template)) - ADDRESS_FIELDS
    if unknown:
        problems.append(f"address.template: 未知字段 {sorted(unknown)} (可用: {', '.join(sorted(ADDRESS_FIELDS))})")
    if cfg.address.numbers[0] > cfg.address.numbers[1] or cfg.address.numbers[0] < 0:
        problems.append("address.numbers: 期望 [最小门牌号, 最大门牌号]")

    if cfg.stale:
        r = res.get(cfg.stale.resource)
        if r is None:
            problems.append(f"stale.resource: 目录中没有资源 {cfg.stale.resource!r}")
    if cfg.truncated:
        r = res.get(cfg.truncated.resource)
        if r is None:
            problems.append(f"truncated.resource: 目录中没有资源 {cfg.truncated.resource!r}")
        elif not delivers_daily(r) or isinstance(r.channel, DatabaseChannel):
            problems.append(f"truncated.resource: {r.id} 须为每日全量交付的文件或接口资源")
        elif r.id == stale:
            problems.append("truncated.resource: 不能与 stale.resource 相同")

    for cls, spec in cfg.defects.items():
        for i, rid in enumerate(spec.resources):
            where = f"defects.{cls.value}.resources.{i}"
            r = res.get(rid)
            if r is None:
                problems.append(f"{where}: 目录中没有资源 {rid!r}")
            elif rid == stale:
                problems.append(f"{where}: {rid} 是过期资源, 其交付不在批次窗口内, 缺陷无法被检出")
            elif not eligible_fields(catalogue, r, cls):
                problems.append(f"{where}: 资源 {rid} 没有可注入 {cls.value} 的字段")
    return problems


def _check_element(where: str, lib: Library, code: str, es: ElementSpec, libs: dict[str, Library],
                   catalogue: Catalogue) -> list[str]:
    problems: list[str] = []
    try:
        e = lib.element(code)
    except KeyError:
        return [f"{where}: 不是 {lib.code} 的数据元 (期望: {', '.join(x.code for x in lib.elements)})"]
    if es.draw_from is not None:
        lib_code, _, ecode = es.draw_from.partition(".")
        if lib_code not in libs or ecode not in {x.code for x in libs[lib_code].elements}:
            problems.append(f"{where}.draw_from: {es.draw_from!r} 不是 '基础库.数据元'")
        elif lib_code == lib.code:
            problems.append(f"{where}.draw_from: 不能取自同一基础库")
    if es.weights is not None:
        if e.type != ElementType.code or not e.codelist:
            problems.append(f"{where}.weights: 只用于代码类数据元")
        else:
            bad = sorted(set(es.weights) - set(catalogue.codes.get(e.codelist, {})))
            if bad:
                problems.append(f"{where}.weights: 代码 {bad} 不在代码表 {e.codelist} 中")
            if any(w < 0 for w in es.weights.values()) or sum(es.weights.values()) <= 0:
                problems.append(f"{where}.weights: 权重须非负且和为正")
    if es.values is not None and e.type not in (ElementType.string, ElementType.code):
        problems.append(f"{where}.values: 只用于文本或代码类数据元")
    if es.template is not None and e.type != ElementType.string:
        problems.append(f"{where}.template: 只用于文本类数据元")
    if es.range is not None:
        lo, hi = es.range
        if e.type in (ElementType.date, ElementType.datetime, ElementType.id_number):
            try:
                if dt.date.fromisoformat(str(lo)) > dt.date.fromisoformat(str(hi)):
                    problems.append(f"{where}.range: 最小值大于最大值")
            except ValueError:
                problems.append(f"{where}.range: 期望 [YYYY-MM-DD, YYYY-MM-DD]")
        elif e.type in (ElementType.decimal, ElementType.integer):
            if not all(isinstance(x, int | float) for x in (lo, hi)) or float(lo) > float(hi):
                problems.append(f"{where}.range: 期望 [最小值, 最大值]")
        else:
            problems.append(f"{where}.range: 只用于日期、数值或身份号码(出生日期)")
    if es.local_share is not None and e.type != ElementType.id_number:
        problems.append(f"{where}.local_share: 只用于公民身份号码")
    if es.decimals is not None and e.type != ElementType.decimal:
        problems.append(f"{where}.decimals: 只用于小数")
    return problems
