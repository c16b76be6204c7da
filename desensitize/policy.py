"""Masking policy from the catalogue: which rule every column of every share/open output gets.

A base library gets one output per share/open class its resources declare (``OutputKind``):

* ``shared``     — 无条件共享 resources;
* ``restricted`` — 有条件共享 (受限共享) resources, plus everything unconditionally shared;
* ``open``       — 无条件开放 and 有条件开放 resources.

An element appears in an output only if every resource that is authoritative for it (一数一源)
allows that class; in a library with a discriminator (电子证照) the rows are filtered instead, to
the discriminator values whose authority allows it.

The rule of a column: the element's own ``masking`` override for the output kind if the catalogue
gives one, else the configured (output kind, sensitivity grade) → action table (defaults in
:data:`DEFAULT_GRADES`, the table of docs/masking.md), made concrete by the element's type and
semantic (:func:`concrete_rule`: ``mask`` of a 手机号码 keeps 3 + 4 digits, of a 姓名 the first
character). :func:`share_policies` raises :class:`PolicyError` — naming the file, the path and what
is expected — if any column of any output is left without a rule; no asset is built then.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import polars as pl

from catalog.loader import Catalogue, CatalogueError
from catalog.models import (
    Element,
    ElementType,
    Labelled,
    Library,
    OpenClass,
    OutputKind,
    Resource,
    Semantic,
    Sensitivity,
    ShareClass,
)
from catalog.normalize import element_dtype
from desensitize import rules
from desensitize.fpe import fpe_id
from desensitize.linkage import (
    ID_MASK,
    NOTHING,
    Exposure,
    exposure,
    is_id_element,
    joint_id_rule,
    rebuildable,
)
from desensitize.pseudonym import PseudonymKey, pseudonymise


class Action(Labelled):
    """What a (output kind, sensitivity grade) pair does to a value (catalog.models.MaskingAction)."""

    keep = "keep", "保留"
    mask = "mask", "部分遮蔽"
    mask_token = "mask_token", "部分遮蔽+假名令牌"
    token = "token", "假名化"
    generalise = "generalise", "泛化"
    suppress = "suppress", "抑制"
    redact = "redact", "完全遮蔽"


DEFAULT_GRADES: dict[OutputKind, dict[Sensitivity, str]] = {
    OutputKind.shared: {Sensitivity.public: "keep", Sensitivity.general: "keep",
                        Sensitivity.sensitive: "mask", Sensitivity.highly_sensitive: "mask_token"},
    OutputKind.restricted: {Sensitivity.public: "keep", Sensitivity.general: "keep",
                            Sensitivity.sensitive: "mask", Sensitivity.highly_sensitive: "mask_token"},
    OutputKind.open: {Sensitivity.public: "keep", Sensitivity.general: "keep",
                      Sensitivity.sensitive: "generalise", Sensitivity.highly_sensitive: "suppress"},
}
"""(output kind, grade) → action; a city overrides cells in ``catalogue.yaml`` → ``masking.grades``."""

TOKEN_SUFFIX = "__token"
KEY_ID_COLUMN = "_key_id"
ROW_HASH_COLUMN = "_row_hash"
VALID_FROM = "valid_from"


class PolicyError(CatalogueError):
    """A share/open output would have a column without a rule (or an unusable rule)."""


@dataclass(frozen=True)
class Context:
    """What keyed and date-relative rules need when they are applied."""

    as_of: dt.date
    key: PseudonymKey | None = None


@dataclass(frozen=True)
class Rule:
    """One concrete masking rule: its canonical text, a Chinese label and the expression it builds."""

    spec: str
    label: str
    build: Callable[[pl.Expr, Context], pl.Expr]
    dtype: str = "string"  # "string", "float" or "same" (the element's own type)
    keyed: bool = False
    generalises: bool = False  # a generalisation (year, district, grid): eligible as a quasi-identifier
    coarser: str | None = None  # next rung of the k-anonymity ladder (None: suppression)
    dated: bool = False  # the value depends on the snapshot date (Context.as_of), not only on the row

    @property
    def outputs(self) -> bool:
        return self.spec != "suppress"


def _needs_key(ctx: Context) -> PseudonymKey:
    if ctx.key is None:
        raise RuntimeError("此规则需要假名化密钥 (GONGSHU_PSEUDONYM_KEY)")
    return ctx.key


def _int(args: list[str], i: int, default: int | None = None) -> int:
    if i < len(args):
        return int(args[i])
    if default is None:
        raise ValueError("缺少参数")
    return default


def _make_rule(name: str, args: list[str]) -> Rule:
    """The rule named ``name(args)``; ValueError with a Chinese message if unknown or malformed."""
    a = args
    if name == "keep":
        return Rule("keep", "保留原值", lambda x, c: x, dtype="same")
    if name == "suppress":
        return Rule("suppress", "抑制(不输出)", lambda x, c: rules.suppress(x))
    if name == "redact":
        return Rule("redact", "完全遮蔽为 ******", lambda x, c: rules.redact(x))
    if name == "keep_first_last":
        n, m = _int(a, 0), _int(a, 1)
        return Rule(f"keep_first_last({n}, {m})", f"保留前{n}位和后{m}位, 其余以*遮蔽",
                    lambda x, c: rules.keep_first_last(x, n, m))
    if name == "keep_first":
        n = _int(a, 0, 1)
        return Rule(f"keep_first({n})", f"保留前{n}个字符, 其余以***遮蔽(隐藏长度)", lambda x, c: rules.keep_first(x, n))
    if name == "mask_phone":
        return Rule("mask_phone", "手机号保留前3位和后4位; 固定电话保留区号和后2位", lambda x, c: rules.mask_phone(x))
    if name == "mask_email":
        return Rule("mask_email", "保留邮箱用户名首字符和域名", lambda x, c: rules.mask_email(x))
    if name in ("keep_address", "to_province", "to_city", "to_district", "to_street"):
        level = (a[0] if a else "district") if name == "keep_address" else name.removeprefix("to_")
        if level not in ("province", "city", "district", "street"):
            raise ValueError(f"地址层级应为 province/city/district/street, 得到 {level!r}")
        zh = rules.AddressLevel(level).label
        if name == "keep_address":
            return Rule(f"keep_address({level})", f"保留到{zh}, 其余遮蔽为 ******",
                        lambda x, c: rules.keep_address(x, level))  # type: ignore[arg-type]
        coarser = {"street": "to_district", "district": "to_city", "city": "to_province", "province": None}[level]
        return Rule(name, f"泛化到{zh}", lambda x, c: rules.to_level(x, level),  # type: ignore[arg-type]
                    generalises=True, coarser=coarser)
    if name == "birth_year":
        return Rule("birth_year", "仅保留年份", lambda x, c: rules.birth_year(x), generalises=True,
                    coarser="year_band(5)")
    if name == "year_band":
        w = _int(a, 0, 5)
        return Rule(f"year_band({w})", f"年份按{w}年分段", lambda x, c: rules.year_band(x, w), generalises=True,
                    coarser=f"year_band({w * 2})" if w < 20 else None)
    if name == "age_band":
        w = _int(a, 0, 5)
        return Rule(f"age_band({w})", f"按{w}岁分段的年龄(截至快照日)", lambda x, c: rules.age_band(x, c.as_of, w),
                    generalises=True, dated=True, coarser=f"age_band({w * 2})" if w < 20 else None)
    if name == "round":
        d = _int(a, 0, 2)
        return Rule(f"round({d})", f"保留{d}位小数", lambda x, c: rules.round_coordinate(x, d), dtype="float",
                    generalises=True, coarser="grid(0.1)" if d > 1 else None)
    if name == "grid":
        cell = float(a[0]) if a else 0.1
        return Rule(f"grid({cell:g})", f"归入{cell:g}°网格中心", lambda x, c: rules.grid(x, cell), dtype="float",
                    generalises=True, coarser=f"grid({cell * 5:g})" if cell < 1 else None)
    if name == "token":
        return Rule("token", "以密钥化假名令牌(HMAC)替换", lambda x, c: pseudonymise(x, _needs_key(c)), keyed=True)
    if name == "fpe_id":
        keep = a[0] if a else "year"
        if keep not in ("year", "decade"):
            raise ValueError(f"fpe_id 参数应为 year 或 decade, 得到 {keep!r}")
        zh = "出生年份" if keep == "year" else "出生年代"
        return Rule(f"fpe_id({keep})", f"格式保留令牌: 保留地区码和{zh}, 其余密钥置换, 重算校验位",
                    lambda x, c: fpe_id(x, _needs_key(c), keep), keyed=True)  # type: ignore[arg-type]
    raise ValueError(f"未知的脱敏规则 {name!r} (可用: {', '.join(RULE_NAMES)})")


RULE_NAMES = (
    "keep", "suppress", "redact", "keep_first_last(n, m)", "keep_first(n)", "mask_phone", "mask_email",
    "keep_address(level)", "to_province", "to_city", "to_district", "to_street", "birth_year", "year_band(w)",
    "age_band(w)", "round(d)", "grid(cell)", "token", "fpe_id(year|decade)",
)

_SPEC = re.compile(r"^\s*([a-z_]+)\s*(?:\(([^()]*)\))?\s*(\+\s*token\s*)?$")


def parse_rule(text: str) -> tuple[Rule, bool]:
    """``"keep_first_last(6, 4) + token"`` → (rule, add a token column)."""
    m = _SPEC.match(text)
    if not m:
        raise ValueError(f"无法解析的脱敏规则 {text!r} (形如 keep_first_last(6, 4) 或 to_district + token)")
    args = [x.strip() for x in (m.group(2) or "").split(",") if x.strip()]
    try:
        rule = _make_rule(m.group(1), args)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{text!r}: {exc}") from exc
    return rule, bool(m.group(3))


def rule(text: str) -> Rule:
    """The rule a text names (without a token column)."""
    return parse_rule(text)[0]


# --- from (action, element) to a concrete rule -------------------------------------------------------


def shape(e: Element) -> str:
    """What kind of value an element holds, as far as masking is concerned."""
    if e.type == ElementType.id_number:
        return "id_number"
    if e.type == ElementType.mobile or e.semantic == Semantic.phone:
        return "phone"
    if e.semantic in (Semantic.person_name, Semantic.email, Semantic.address, Semantic.bank_card,
                      Semantic.vehicle_plate, Semantic.license_no):
        return e.semantic.value
    if e.semantic in (Semantic.longitude, Semantic.latitude):
        return "coordinate"
    if e.type in (ElementType.date, ElementType.datetime):
        return "date"
    if e.type == ElementType.code:
        return "code"
    if e.type in (ElementType.integer, ElementType.decimal):
        return "number"
    return "text"


_MASK_BY_SHAPE = {
    "id_number": ID_MASK,  # Hutool ID_CARD (1, 2) where a birth date is shown in full: linkage.py
    "phone": "mask_phone",
    "person_name": "keep_first(1)",
    "email": "mask_email",
    "address": "keep_address(district)",
    "bank_card": "keep_first_last(6, 4)",
    "vehicle_plate": "keep_first_last(2, 1)",
    "license_no": "keep_first_last(4, 4)",
    "coordinate": "round(2)",
    "date": "keep",
    "code": "keep",
    "text": "keep_first(1)",
    # "number": no natural partial mask — the catalogue must say (round? suppress?)
}
_GENERALISE_BY_SHAPE = {
    "date": "birth_year",
    "address": "to_district",
    "coordinate": "grid(0.1)",
    "code": "keep",  # a category is its own generalisation; k-anonymity protects it (quasi-identifier)
}


def concrete_rule(action: str, e: Element) -> tuple[Rule, bool] | None:
    """The rule an action means for this element, and whether a token column is added; None if none fits."""
    s = shape(e)
    if action in ("keep", "suppress", "redact", "token"):
        return rule(action), False
    if action in ("mask", "mask_token"):
        spec = _MASK_BY_SHAPE.get(s)
        return None if spec is None else (rule(spec), action == "mask_token")
    if action == "generalise":
        # Suppression is the limit of generalisation: names, numbers, phones have no coarser form.
        return rule(_GENERALISE_BY_SHAPE.get(s, "suppress")), False
    return None


# --- policies ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ColumnPolicy:
    """The rule of one element in one output."""

    element: Element
    rule: Rule
    token: bool
    source: str  # where the rule came from, in Chinese (shown in descriptions)
    quasi_identifier: bool = False
    override: bool = False  # the catalogue names this rule (masking.<kind>) rather than the grade table

    @property
    def column(self) -> str:
        return self.element.code

    @property
    def token_column(self) -> str | None:
        return self.element.code + TOKEN_SUFFIX if self.token else None

    def output_columns(self) -> list[str]:
        return ([self.column] if self.rule.outputs else []) + ([self.token_column] if self.token else [])

    def describe(self) -> str:
        text = self.rule.label + (" + 假名令牌列 " + self.token_column if self.token else "")
        return text + (" · 准标识符(k-匿名)" if self.quasi_identifier else "")


@dataclass(frozen=True)
class OutputPolicy:
    """One masked dataset: a base library under one share/open class."""

    catalogue_root: str
    library: Library
    kind: OutputKind
    columns: tuple[ColumnPolicy, ...]
    excluded: tuple[tuple[Element, str], ...] = ()  # elements this class may not carry, and why
    discriminator_values: tuple[str, ...] | None = None  # rows kept in a discriminated library
    k: int = 5
    classes: tuple[str, ...] = field(default=())  # the declared classes this output serves

    @property
    def name(self) -> str:
        return f"{self.library.code}_{self.kind.value}"

    @property
    def label(self) -> str:
        return f"{self.library.name} · {self.kind.label}"

    @property
    def keyed(self) -> bool:
        """The output has keyed columns (tokens, format-preserving IDs): it joins every other keyed
        output under the same key."""
        return any(c.token or c.rule.keyed for c in self.columns)

    @property
    def dated(self) -> bool:
        """A column's value depends on the snapshot date (``age_band``): an unchanged base row may
        give another output row on another date."""
        return any(c.rule.dated for c in self.columns if c.rule.outputs)

    def exposure(self) -> Exposure:
        """What a row of this output shows of an ID number through ID-derived elements (linkage.py)."""
        return exposure((c.element, c.rule.spec) for c in self.columns if c.rule.outputs)

    @property
    def quasi_identifiers(self) -> list[str]:
        return [c.column for c in self.columns if c.quasi_identifier and c.rule.outputs]

    def column(self, code: str) -> ColumnPolicy:
        return next(c for c in self.columns if c.element.code == code)

    def public_columns(self) -> set[str]:
        """Columns published verbatim because the catalogue grades them 公开 (a 法定代表人 on a 营业执照)."""
        return {c.column for c in self.columns if c.rule.spec == "keep" and c.element.sensitivity == Sensitivity.public}

    def schema(self) -> dict[str, pl.DataType]:
        """Columns of the output table (without the internal row hash)."""
        out: dict[str, pl.DataType] = {}
        for c in self.columns:
            if c.rule.outputs:
                out[c.column] = (element_dtype(c.element) if c.rule.dtype == "same" and not c.quasi_identifier
                                 else pl.Float64() if c.rule.dtype == "float" and not c.quasi_identifier
                                 else pl.String())
            if c.token:
                out[c.token_column] = pl.String()
        if self.kind != OutputKind.open:
            out[VALID_FROM] = pl.Date()
        if self.keyed:
            out[KEY_ID_COLUMN] = pl.String()
        return out

    def labels(self) -> dict[str, str]:
        """Chinese description of every output column (data dictionary, column schema)."""
        out: dict[str, str] = {}
        for c in self.columns:
            if c.rule.outputs:
                out[c.column] = f"{c.element.name} — {c.describe()}"
            if c.token:
                out[c.token_column] = f"{c.element.name}的假名令牌(HMAC, 同一密钥下稳定, 可关联)"
        out[VALID_FROM] = "版本起始日期"
        out[KEY_ID_COLUMN] = "假名化密钥编号(不同编号的令牌不可关联)"
        return out

    def describe_md(self) -> str:
        lines = ["| 数据元 | 代码 | 敏感级别 | 规则 | 依据 |", "|---|---|---|---|---|"]
        for c in self.columns:
            lines.append(f"| {c.element.name} | {c.column} | {c.element.sensitivity.value} | {c.describe()} | {c.source} |")
        for e, why in self.excluded:
            lines.append(f"| {e.name} | {e.code} | {e.sensitivity.value} | 不纳入 | {why} |")
        return "\n".join(lines)

    def fingerprint(self) -> str:
        """Changes whenever anything that shapes the output changes (rules, columns, rows, k)."""
        text = repr((self.name, [(c.column, c.rule.spec, c.token, c.quasi_identifier) for c in self.columns],
                     self.discriminator_values, self.k))
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _qualifies(r: Resource, kind: OutputKind) -> bool:
    if kind == OutputKind.shared:
        return r.share == ShareClass.unconditional
    if kind == OutputKind.restricted:
        return r.share in (ShareClass.unconditional, ShareClass.conditional)
    return r.open in (OpenClass.unconditional, OpenClass.conditional)


def declared_kinds(catalogue: Catalogue, lib: Library) -> list[tuple[OutputKind, tuple[str, ...]]]:
    """The outputs a library gets: one per share/open class its resources declare."""
    resources = catalogue.resources_of(lib.code)
    out = []
    shares = {r.share for r in resources}
    opens = sorted({r.open.value for r in resources if r.open != OpenClass.none})
    if ShareClass.unconditional in shares:
        out.append((OutputKind.shared, (ShareClass.unconditional.value,)))
    if ShareClass.conditional in shares:
        out.append((OutputKind.restricted, (ShareClass.conditional.value,)))
    if opens:
        out.append((OutputKind.open, tuple(opens)))
    return out


def _default_qi(e: Element, r: Rule) -> bool:
    """Quasi-identifier unless the catalogue says: personal attributes that stay visible in open data."""
    if not r.outputs:
        return False
    if e.derived_from_id is not None:
        return True
    return r.generalises or (shape(e) == "code" and e.sensitivity in (Sensitivity.sensitive,
                                                                       Sensitivity.highly_sensitive))


def build_policy(catalogue: Catalogue, lib: Library, kind: OutputKind, classes: tuple[str, ...] = (),
                 problems: list[str] | None = None) -> OutputPolicy:
    """The policy of one output; problems are appended to ``problems`` (or raised)."""
    own: list[str] = [] if problems is None else problems
    main = catalogue.root / "catalogue.yaml"
    li = next(i for i, x in enumerate(catalogue.libraries) if x.code == lib.code)
    resources = catalogue.resources_of(lib.code)
    auth = {r.id: catalogue.authoritative_elements(r) for r in resources}
    grades = {**DEFAULT_GRADES[kind], **catalogue.city.masking.grades.get(kind, {})}

    disc_values: tuple[str, ...] | None = None
    excluded: list[tuple[Element, str]] = []
    included: list[Element] = []
    if lib.discriminator is not None:
        allowed = []
        for value in lib.discriminator.authorities:
            providers = [r for r in resources if any(v and value in v for v in auth[r.id].values())]
            if providers and all(_qualifies(r, kind) for r in providers):
                allowed.append(value)
        disc_values = tuple(allowed)
        included = list(lib.elements)
    else:
        for e in lib.elements:
            if e.code in lib.key:
                included.append(e)
                continue
            providers = [r for r in resources if e.code in auth[r.id]]
            if not providers:
                excluded.append((e, "无权威部门提供"))
            elif all(_qualifies(r, kind) for r in providers):
                included.append(e)
            else:
                names = ", ".join(f"{r.id}({r.share.value}/{r.open.value})" for r in providers if not _qualifies(r, kind))
                excluded.append((e, f"权威资源不属于{kind.label}: {names}"))

    columns: list[ColumnPolicy] = []
    for e in included:
        ei = next(i for i, x in enumerate(lib.elements) if x.code == e.code)
        where = f"{main}: libraries.{li}({lib.code}).elements.{ei}({e.code}).masking.{kind.value}"
        override = (e.masking or {}).get(kind)
        if override is not None:
            try:
                r, token = parse_rule(override)
            except ValueError as exc:
                own.append(f"{where}: {exc}")
                continue
            source = f"目录指定: {r.spec}{' + token' if token else ''}"
            overridden = True
        else:
            action = grades.get(e.sensitivity)
            found = concrete_rule(action, e) if action else None
            if found is None:
                own.append(
                    f"{where}: 没有适用的脱敏规则 ({kind.label}, 敏感级别 {e.sensitivity.value}, 动作 "
                    f"{action or '未配置'}, 类型 {e.type.value}{'/' + e.semantic.value if e.semantic else ''}); "
                    f"请在该数据元的 masking.{kind.value} 中指定, 例如 suppress 或 round(0)"
                )
                continue
            r, token = found
            source = f"默认: {e.sensitivity.value} → {Action(action).label}"
            overridden = False
        if r.spec.startswith("fpe_id") and e.type != ElementType.id_number:
            own.append(f"{where}: fpe_id 只适用于公民身份号码类型的数据元 ({e.code} 是 {e.type.value})")
            continue
        if r.dtype == "float" and e.type not in (ElementType.decimal, ElementType.integer):
            own.append(f"{where}: {r.spec} 只适用于数值型数据元 ({e.code} 是 {e.type.value})")
            continue
        dated = r.spec == "birth_year" or r.spec.startswith(("year_band", "age_band"))
        if dated and e.type not in (ElementType.date, ElementType.datetime):
            own.append(f"{where}: {r.spec} 只适用于日期型数据元 ({e.code} 是 {e.type.value})")
            continue
        qi = False
        if kind == OutputKind.open:
            qi = e.quasi_identifier if e.quasi_identifier is not None else _default_qi(e, r)
            qi = qi and r.outputs
        columns.append(ColumnPolicy(e, r, token, source, qi, overridden))
    if problems is None and own:
        raise PolicyError(own)
    return OutputPolicy(str(catalogue.root), lib, kind, tuple(columns), tuple(excluded), disc_values,
                        catalogue.city.masking.k, classes)


def token_exposure(policies: list[OutputPolicy]) -> Exposure:
    """What the keyed outputs show together: a recipient joins them on their tokens, so a birth date
    published in full in one of them stands beside every ID number of the others."""
    out = NOTHING
    for p in policies:
        if p.keyed:
            out = out | p.exposure()
    return out


def _element_path(catalogue: Catalogue, lib: Library, e: Element, kind: OutputKind) -> str:
    li = next(i for i, x in enumerate(catalogue.libraries) if x.code == lib.code)
    ei = next(i for i, x in enumerate(lib.elements) if x.code == e.code)
    return f"{catalogue.root / 'catalogue.yaml'}: libraries.{li}({lib.code}).elements.{ei}({e.code}).masking.{kind.value}"


def choose_jointly(catalogue: Catalogue, policies: list[OutputPolicy], problems: list[str]) -> list[OutputPolicy]:
    """Every ID-number mask chosen together with what its row shows and what tokens join to it.

    A default mask that would give the number back (``keep_first_last(6, 4)`` beside a birth date
    in full) becomes Hutool ID_CARD ``keep_first_last(1, 2)``; a rule the catalogue names that would
    is a problem, naming the element and what it stands beside.
    """
    linked = token_exposure(policies)
    out = []
    for p in policies:
        seen = p.exposure() | (linked if p.keyed else NOTHING)
        columns = []
        for c in p.columns:
            if is_id_element(c.element) and c.rule.outputs and not c.rule.keyed and c.rule.spec != "keep":
                if c.override and rebuildable(c.rule.spec, seen):
                    problems.append(
                        f"{_element_path(catalogue, p.library, c.element, p.kind)}: {c.rule.spec} 与同一行"
                        f"{'或经令牌可关联的输出' if p.keyed else ''}发布的{seen.describe()}合起来即完整的"
                        f"{c.element.name}; 请改用 keep_first_last(1, 2) (Hutool ID_CARD) 或 token, "
                        "或将出生日期泛化 (birth_year)")
                elif not c.override:
                    spec = joint_id_rule(c.rule.spec, seen)
                    if spec != c.rule.spec:
                        c = replace(c, rule=rule(spec), source=(
                            f"{c.source}; 同一行{'或经令牌可关联的输出' if p.keyed else ''}发布{seen.describe()}, "
                            "按 Hutool ID_CARD 仅保留首1位和末2位"))
            columns.append(c)
        out.append(replace(p, columns=tuple(columns)))
    return out


def share_policies(catalogue: Catalogue) -> list[OutputPolicy]:
    """Every share/open output of the catalogue, ID-number masks chosen jointly (:func:`choose_jointly`);
    :class:`PolicyError` listing every column without a rule or with one that leaks in its row."""
    problems: list[str] = []
    out = []
    for lib in catalogue.libraries:
        for kind, classes in declared_kinds(catalogue, lib):
            out.append(build_policy(catalogue, lib, kind, classes, problems))
    if problems:
        raise PolicyError(problems)
    out = choose_jointly(catalogue, out, problems)
    if problems:
        raise PolicyError(problems)
    return out


def catalogue_token_exposure(catalogue: Catalogue) -> Exposure:
    """:func:`token_exposure` of the catalogue's outputs: what a keyed token in a report joins to."""
    return token_exposure(share_policies(catalogue))
