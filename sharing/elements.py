"""What the catalogue says of each requested element: its share (or open) class and the
department whose opinion it needs (一数一源).

An element's class is that of the resources authoritative for it (``Catalogue.authoritative_elements``);
when several are (a discriminated library: one per 证照类型), the strictest wins and each of their
departments gives an opinion. Key elements (公民身份号码, 统一社会信用代码) identify the rows of every
extract: they are delivered masked per the catalogue's grade with a per-application token, and are
not requested on their own.
"""

from __future__ import annotations

from dataclasses import dataclass

from catalog.loader import Catalogue
from catalog.models import Library, OpenClass, ShareClass
from sharing.workflow import ApplicationError, ApplicationKind, Decision

_SHARE_ORDER = [ShareClass.unconditional, ShareClass.conditional, ShareClass.none]
_OPEN_ORDER = [OpenClass.unconditional, OpenClass.conditional, OpenClass.none]


@dataclass(frozen=True)
class Requested:
    """One requested element, classified."""

    code: str
    name: str
    share_class: str  # 无条件共享 / 有条件共享 / 不予共享 (or the open classes)
    authority: tuple[str, ...]  # departments whose opinion a 有条件 element needs
    decision: Decision
    reason: str | None


def classify(catalogue: Catalogue, library: str, elements: list[str], kind: ApplicationKind) -> list[Requested]:
    """Each requested element with its class and first decision; ApplicationError naming unknown ones."""
    try:
        lib = catalogue.library(library)
    except (KeyError, StopIteration):
        known = ", ".join(x.code for x in catalogue.libraries)
        raise ApplicationError(f"目录中没有基础库 {library!r} (可选: {known})") from None
    codes = list(dict.fromkeys(e.strip() for e in elements if e.strip()))
    if not codes:
        raise ApplicationError("请用 --elements 列出申请的数据元代码, 例如 name,mobile")
    unknown = [c for c in codes if c not in {e.code for e in lib.elements}]
    if unknown:
        known = ", ".join(f"{e.code}({e.name})" for e in lib.elements if e.code not in lib.key)
        raise ApplicationError(f"{lib.name}没有数据元 {', '.join(unknown)} (可选: {known})")
    keys = [c for c in codes if c in lib.key]
    if keys and len(keys) == len(codes):
        raise ApplicationError(f"{', '.join(keys)} 是{lib.name}的主键, 每份提取都带有(按目录分级脱敏并附申请专属令牌); "
                               "请列出需要的其他数据元")
    return [_classify_one(catalogue, lib, c, kind) for c in codes if c not in lib.key]


def _classify_one(catalogue: Catalogue, lib: Library, code: str, kind: ApplicationKind) -> Requested:
    element = lib.element(code)
    providers = [r for r in catalogue.resources_of(lib.code) if code in catalogue.authoritative_elements(r)]
    if not providers:
        return Requested(code, element.name, "—", (), Decision.refused, "目录中没有该数据元的权威数源部门(一数一源)")
    if kind == ApplicationKind.share:
        cls = max((r.share for r in providers), key=_SHARE_ORDER.index)
        unconditional, none = cls == ShareClass.unconditional, cls == ShareClass.none
    else:
        cls = max((r.open for r in providers), key=_OPEN_ORDER.index)
        unconditional, none = cls == OpenClass.unconditional, cls == OpenClass.none
    depts = tuple(sorted({r.department for r in providers}))
    if none:
        strict = [r for r in providers if (r.share if kind == ApplicationKind.share else r.open) == cls]
        why = "; ".join(f"{catalogue.department(r.department).name} {r.name}({r.id}) 目录属性为{cls.value}" for r in strict)
        return Requested(code, element.name, cls.value, depts, Decision.refused, why)
    if unconditional:
        return Requested(code, element.name, cls.value, depts, Decision.granted, f"{cls.value}, 直接获取")
    return Requested(code, element.name, cls.value, depts, Decision.pending, None)
