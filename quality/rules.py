"""Quality rules, defined once from the catalogue.

Every rule has an id, a GB/T 36344 dimension, a severity and a scope. From a rule the code derives
(a) a polars predicate that marks the failing rows (:func:`failing`, used to extract failing keys
fast and to quarantine rows that fail blocking rules) and (b) a Great Expectations expectation
(:mod:`quality.expectations`, the record of the check). A test proves both count the same.

Rules come from the catalogue without being written out one by one: the type, ``required``,
``codelist``, ``pattern`` and ``derived_from_id`` of each data element, and the key of each
resource, imply them. ``Element.rules`` / ``Resource.rules`` override severity per rule.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from enum import StrEnum

import polars as pl

from catalog.identifiers import (
    MOBILE_PATTERN,
    id_number_birth_date,
    id_number_gender,
    id_number_is_valid,
    uscc_is_valid,
)
from catalog.loader import Catalogue
from catalog.models import ElementType, Labelled, Resource


class Dimension(StrEnum):
    """GB/T 36344-2018 数据质量评价指标."""

    conformity = "规范性"
    completeness = "完整性"
    accuracy = "准确性"
    consistency = "一致性"
    timeliness = "时效性"
    accessibility = "可访问性"


class Severity(Labelled):
    blocking = "blocking", "阻断"  # failing rows never reach the base library
    warning = "warning", "警告"


class Kind(Labelled):
    """What a rule checks; its label is the second half of a rule's label."""

    not_null = "not_null", "必填项不为空"
    unique = "unique", "主键在批次内唯一"
    id_number = "id_number", "公民身份号码格式与校验位"
    uscc = "uscc", "统一社会信用代码格式与校验位"
    mobile = "mobile", "手机号码格式"
    code_list = "code_list", "代码值在代码表中"
    pattern = "pattern", "取值符合格式"
    date_range = "date_range", "日期在合理范围内"
    id_birth_date = "id_birth_date", "出生日期与身份号码一致"
    id_gender = "id_gender", "性别与身份号码一致"


MIN_DATE = dt.date(1900, 1, 1)
VERSION = "_version"
"""The column a versioned resource's rows carry their watermark in while rules run (see
:attr:`catalog.models.Resource.version_column`); it is not stored in the 标准层."""


@dataclass(frozen=True)
class Rule:
    """One quality rule over the rows of a resource's 标准层 batch."""

    id: str
    kind: Kind
    dimension: Dimension
    severity: Severity
    columns: tuple[str, ...]  # element codes the rule reads (first = the checked element)
    label: str
    params: dict = field(default_factory=dict, hash=False, compare=False)

    @property
    def column(self) -> str:
        return self.columns[0]

    @property
    def counts_nulls(self) -> bool:
        """Completeness and uniqueness count every row; the others only non-null values."""
        return self.kind in (Kind.not_null, Kind.unique)


def resource_rules(catalogue: Catalogue, resource: Resource, batch_date: dt.date | None = None) -> list[Rule]:
    """Every row-level rule of one resource, in a stable order."""
    lib = catalogue.library(resource.library)
    carried = [f.element for f in resource.fields]
    rules: list[Rule] = []
    key = tuple(resource.key)

    def add(kind: Kind, dim: Dimension, sev: Severity, cols: tuple[str, ...], label: str, **params) -> None:
        rules.append(Rule(f"{cols[0]}.{kind.value}", kind, dim, sev, cols, label, params))

    for k in resource.key:
        if k in carried:
            add(Kind.not_null, Dimension.completeness, Severity.blocking, (k,), f"{lib.element(k).name}: 主键不为空")
    if all(k in carried or k in resource.constants for k in key):
        # versions of one key (a 前置库's rows at different watermarks) are history, not duplicates
        versioned = resource.version_column is not None
        rules.append(Rule(f"{'+'.join(key)}.unique", Kind.unique, Dimension.accuracy, Severity.blocking,
                          (*key, VERSION) if versioned else key,
                          f"{'+'.join(lib.element(k).name for k in key)}: {Kind.unique.label}"
                          + (f"(同一{resource.version_column})" if versioned else "")))
    id_key = next((k for k in resource.key if lib.element(k).type == ElementType.id_number and k in carried), None)
    for code in carried:
        e = lib.element(code)
        is_key = code in resource.key
        sev = Severity.blocking if is_key else Severity.warning
        name = e.name
        if e.required and not is_key:
            add(Kind.not_null, Dimension.completeness, Severity.warning, (code,), f"{name}: {Kind.not_null.label}")
        if e.type == ElementType.id_number:
            add(Kind.id_number, Dimension.conformity, sev, (code,), f"{name}: {Kind.id_number.label}",
                today=batch_date)
        elif e.type == ElementType.uscc:
            add(Kind.uscc, Dimension.conformity, sev, (code,), f"{name}: {Kind.uscc.label}")
        elif e.type == ElementType.mobile:
            add(Kind.mobile, Dimension.conformity, sev, (code,), f"{name}: {Kind.mobile.label}")
        elif e.type == ElementType.code and e.codelist:
            listed = next((c for c in catalogue.city.codelists if c.code == e.codelist), None)
            add(Kind.code_list, Dimension.conformity, sev, (code,), f"{name}: {Kind.code_list.label}",
                values=tuple(sorted(catalogue.codes[e.codelist])), codelist=listed.name if listed else e.codelist,
                standard=listed.standard if listed else None)
        elif e.type == ElementType.date:
            add(Kind.date_range, Dimension.accuracy, Severity.warning, (code,), f"{name}: {Kind.date_range.label}",
                min=MIN_DATE, max=batch_date)
        if e.pattern:
            add(Kind.pattern, Dimension.conformity, sev, (code,), f"{name}: {Kind.pattern.label}", regex=e.pattern)
        if e.derived_from_id and id_key:
            kind = Kind.id_birth_date if e.derived_from_id == "birth_date" else Kind.id_gender
            add(kind, Dimension.accuracy, Severity.warning, (code, id_key), f"{name}: {kind.label}")
    return rules


def expected_text(rule: Rule) -> str:
    """What a value failing ``rule`` should have been, in words: the 期望 column of the reports
    (the rule's name says what was checked; this says what would have passed)."""
    match rule.kind:
        case Kind.not_null:
            return "有值 (不为空)"
        case Kind.unique:
            return "同一主键在批次内只出现一次"
        case Kind.id_number:
            return "18 位且校验码正确 (GB 11643, 出生日期有效)"
        case Kind.uscc:
            return "18 位且校验码正确 (GB 32100)"
        case Kind.mobile:
            return "11 位手机号码 (1 开头, 第二位 3–9)"
        case Kind.code_list:
            standard = f", {rule.params['standard']}" if rule.params.get("standard") else ""
            return f"代码表「{rule.params.get('codelist', '')}」中的代码{standard}"
        case Kind.pattern:
            return f"符合格式 {rule.params['regex']}"
        case Kind.date_range:
            hi = rule.params.get("max")
            low = rule.params["min"]
            return f"{low} 至 {hi} (批次日期) 之间" if hi else f"不早于 {low}"
        case Kind.id_birth_date:
            return "与身份号码中的出生日期一致"
        case Kind.id_gender:
            return "与身份号码中的性别一致"
    return rule.label


def failing(rule: Rule) -> pl.Expr:
    """A Boolean expression, true on the rows that fail ``rule`` (never null)."""
    c = pl.col(rule.column)
    match rule.kind:
        case Kind.not_null:
            bad = c.is_null()
        case Kind.unique:
            cols = [pl.col(x) for x in rule.columns]
            bad = (pl.struct(cols).is_duplicated() if len(cols) > 1 else cols[0].is_duplicated()) & \
                pl.all_horizontal([x.is_not_null() for x in cols])
        case Kind.id_number:
            bad = ~id_number_is_valid(c, today=rule.params.get("today"))
        case Kind.uscc:
            bad = ~uscc_is_valid(c)
        case Kind.mobile:
            bad = ~c.str.contains(MOBILE_PATTERN)
        case Kind.code_list:
            bad = ~c.is_in(list(rule.params["values"]))
        case Kind.pattern:
            bad = ~c.str.contains(rule.params["regex"])
        case Kind.date_range:
            hi = rule.params.get("max")
            bad = (c < rule.params["min"]) | (c > hi if hi else pl.lit(False))
        case Kind.id_birth_date:
            bad = c != id_number_birth_date(pl.col(rule.columns[1]))
        case Kind.id_gender:
            bad = c != id_number_gender(pl.col(rule.columns[1]))
        case _:
            raise ValueError(rule.kind)
    return bad.fill_null(False)


def evaluated(rule: Rule) -> pl.Expr:
    """The rows a rule is evaluated on (N in p = 1 − U/N)."""
    if rule.counts_nulls:
        return pl.col(rule.column).is_null() | pl.col(rule.column).is_not_null()  # every row
    present = pl.all_horizontal([pl.col(c).is_not_null() for c in rule.columns])
    if rule.kind in (Kind.id_birth_date, Kind.id_gender):
        # only where the ID itself is readable: a broken ID is its own failure
        derive = id_number_birth_date if rule.kind == Kind.id_birth_date else id_number_gender
        present = present & derive(pl.col(rule.columns[1])).is_not_null()
    return present
