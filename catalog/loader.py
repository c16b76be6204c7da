"""Load and cross-check a catalogue folder.

A bad catalogue never starts a partial pipeline: :func:`load_catalogue` either returns a fully
consistent :class:`Catalogue` or raises :class:`CatalogueError` listing every problem, each naming
the file, the path inside it and what was expected.
"""

from __future__ import annotations

import csv
import functools
from dataclasses import dataclass, field
from pathlib import Path

import yaml
from pydantic import ValidationError

from catalog.models import CatalogueFile, Department, Element, ElementType, Library, Resource, outside_folder

DEMO_CATALOGUE = Path(__file__).parent / "demo"


class CatalogueError(ValueError):
    """Every problem found in a catalogue folder, one per line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("数据资源目录有误:\n" + "\n".join(f"- {p}" for p in problems))


@dataclass(frozen=True)
class Catalogue:
    """A validated catalogue with the lookups the pipeline needs."""

    root: Path
    city: CatalogueFile
    resources: tuple[Resource, ...]
    codes: dict[str, dict[str, str]] = field(default_factory=dict)  # codelist → {code: name}

    @property
    def departments(self) -> list[Department]:
        return list(self.city.departments)

    @property
    def libraries(self) -> list[Library]:
        return list(self.city.libraries)

    def department(self, code: str) -> Department:
        return next(d for d in self.city.departments if d.code == code)

    def library(self, code: str) -> Library:
        return next(lib for lib in self.city.libraries if lib.code == code)

    def resource(self, resource_id: str) -> Resource:
        return next(r for r in self.resources if r.id == resource_id)

    def resources_of(self, library: str) -> list[Resource]:
        return [r for r in self.resources if r.library == library]

    def authority(self, library: str, element: str) -> str | dict[str, str]:
        """The authoritative department of an element, or {discriminator value: department}."""
        lib = self.library(library)
        e = lib.element(element)
        if e.authority is not None:
            return _one(e.authority)
        assert lib.discriminator is not None  # guaranteed by validation
        return {v: _one(d) for v, d in lib.discriminator.authorities.items()}

    def authoritative_elements(self, resource: Resource) -> dict[str, list[str] | None]:
        """Elements this resource is authoritative for.

        Maps element → None when the department is the authority for every row, or → the list of
        discriminator values (e.g. 证照类型 codes) for which it is the authority.
        """
        out: dict[str, list[str] | None] = {}
        lib = self.library(resource.library)
        for code in resource.elements():
            if code in lib.key:
                continue  # keys identify the entity; they are not values with an authority
            auth = self.authority(resource.library, code)
            if isinstance(auth, str):
                if auth == resource.department:
                    out[code] = None
            else:
                values = [v for v, d in auth.items() if d == resource.department]
                if values:
                    out[code] = values
        return out


def _one(value: str | list[str]) -> str:
    return value if isinstance(value, str) else value[0]


@functools.cache
def _cached(path: str) -> Catalogue:
    return load_catalogue(Path(path))


def cached_catalogue(folder: Path) -> Catalogue:
    """The catalogue in ``folder`` (the configured one: ``GONGSHU_CATALOG``), loaded once per process."""
    return _cached(str(Path(folder).resolve()))


class DuplicateKeyError(yaml.YAMLError):
    """A mapping names the same key twice (YAML would silently keep the last value)."""

    def __init__(self, key: object, line: int, first: int):
        self.key, self.line, self.first = key, line, first
        super().__init__(f"第 {line} 行: 重复的键 {key!r} (第 {first} 行已有; 后者会静默覆盖前者)")


class UniqueKeyLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that rejects a mapping with a duplicated key (``authority:`` twice).

    Keys merged in with ``<<`` may be overridden, as YAML intends; only the keys written in the
    mapping itself must be distinct.
    """

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: dict[object, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the SafeLoader's own error names it
                continue
            if first is not None:
                raise DuplicateKeyError(key, key_node.start_mark.line + 1, first)
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_yaml(path: Path) -> object:
    """A catalogue YAML file (a duplicated key is a :class:`DuplicateKeyError`)."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=UniqueKeyLoader)


def _read_yaml(path: Path, problems: list[str]) -> object | None:
    try:
        return read_yaml(path)
    except DuplicateKeyError as exc:
        problems.append(f"{path}: {exc}")
        return None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        problems.append(f"{path}: 无法读取 YAML: {exc}")
        return None


def _pydantic_problems(path: Path, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "(根)"
        out.append(f"{path}: {loc}: {err['msg']} (得到 {err.get('input')!r})")
    return out


def load_catalogue(root: Path | str) -> Catalogue:
    """Read ``catalogue.yaml``, ``resources/*.yaml`` and the code lists under ``root``."""
    root = Path(root)
    problems: list[str] = []
    main = root / "catalogue.yaml"
    if not main.is_file():
        raise CatalogueError([f"{main}: 文件不存在 (期望目录中有 catalogue.yaml 与 resources/*.yaml)"])
    raw = _read_yaml(main, problems)
    city: CatalogueFile | None = None
    if raw is not None:
        try:
            city = CatalogueFile.model_validate(raw)
        except ValidationError as exc:
            problems.extend(_pydantic_problems(main, exc))

    resources: list[tuple[Path, Resource]] = []
    files = sorted((root / "resources").glob("*.yaml"))
    if not files:
        problems.append(f"{root / 'resources'}: 没有任何资源文件 (期望 resources/*.yaml)")
    for path in files:
        data = _read_yaml(path, problems)
        if data is None:
            continue
        try:
            resources.append((path, Resource.model_validate(data)))
        except ValidationError as exc:
            problems.extend(_pydantic_problems(path, exc))

    if city is None:
        raise CatalogueError(problems)
    codes = _load_codelists(root, main, city, problems)
    _check(main, city, resources, codes, problems)
    if problems:
        raise CatalogueError(problems)
    return Catalogue(root=root, city=city, resources=tuple(r for _, r in resources), codes=codes)


def _load_codelists(root: Path, main: Path, city: CatalogueFile, problems: list[str]) -> dict[str, dict[str, str]]:
    codes: dict[str, dict[str, str]] = {}
    for i, cl in enumerate(city.codelists):
        path = root / cl.file
        why = outside_folder(cl.file) or (None if path.resolve().is_relative_to(root.resolve()) else
                                          f"实际指向目录文件夹之外的 {path.resolve()}")
        if why:
            problems.append(f"{main}: codelists.{i}.file: {cl.file!r} {why} (期望: 目录文件夹内的相对路径)")
            continue
        try:
            with path.open(encoding="utf-8", newline="") as fh:
                rows = list(csv.DictReader(fh))
        except OSError as exc:
            problems.append(f"{main}: codelists.{i}.file: 无法读取代码表 {path}: {exc}")
            continue
        if not rows or not {"code", "name"} <= set(rows[0]):
            problems.append(f"{path}: 第 1 行: 期望表头至少包含 code,name")
            continue
        codes[cl.code] = {r["code"]: r["name"] for r in rows}
    return codes


def _check(
    main: Path,
    city: CatalogueFile,
    resources: list[tuple[Path, Resource]],
    codes: dict[str, dict[str, str]],
    problems: list[str],
) -> None:
    depts = {d.code for d in city.departments}
    libs = {lib.code: lib for lib in city.libraries}
    _unique(main, "departments", [d.code for d in city.departments], problems)
    _unique(main, "libraries", list(libs), problems)
    _unique(main, "codelists", [c.code for c in city.codelists], problems)

    for li, lib in enumerate(city.libraries):
        where = f"{main}: libraries.{li}({lib.code})"
        elements = {e.code: e for e in lib.elements}
        _unique(main, f"libraries.{li}.elements", [e.code for e in lib.elements], problems)
        for k in lib.key:
            if k not in elements:
                problems.append(f"{where}.key: 主键 {k!r} 不是本库的数据元 (期望: {', '.join(elements)})")
        for ei, e in enumerate(lib.elements):
            _check_element(where + f".elements.{ei}({e.code})", lib, e, depts, codes, problems)
        if lib.discriminator:
            d = lib.discriminator
            if d.element not in elements:
                problems.append(f"{where}.discriminator.element: {d.element!r} 不是本库的数据元")
            for value, auth in d.authorities.items():
                names = [auth] if isinstance(auth, str) else auth
                if len(names) != 1:
                    problems.append(
                        f"{where}.discriminator.authorities.{value}: 一数一源要求恰好一个权威部门, "
                        f"{d.element}={value} 有 {len(names)} 个: {', '.join(names) or '无'}"
                    )
                for n in names:
                    if n not in depts:
                        problems.append(f"{where}.discriminator.authorities.{value}: 未登记的部门 {n!r}")
        for ri, ref in enumerate(lib.references):
            if ref.element not in elements:
                problems.append(f"{where}.references.{ri}.element: {ref.element!r} 不是本库的数据元")
            if ref.name_field and ref.name_field not in elements:
                problems.append(f"{where}.references.{ri}.name_field: {ref.name_field!r} 不是本库的数据元")
            for ti, t in enumerate(ref.targets):
                if t.library not in libs:
                    problems.append(f"{where}.references.{ri}.targets.{ti}.library: 未知基础库 {t.library!r}")
                elif t.name_element and t.name_element not in {e.code for e in libs[t.library].elements}:
                    problems.append(
                        f"{where}.references.{ri}.targets.{ti}.name_element: {t.library} 库没有数据元 {t.name_element!r}"
                    )

    _unique(main, "resources", [r.id for _, r in resources], problems)
    delivered: dict[tuple[str, str], set[str]] = {}  # (library, element) -> departments delivering it
    for path, res in resources:
        if res.department not in depts:
            problems.append(f"{path}: department: 未登记的部门 {res.department!r} (期望: {', '.join(sorted(depts))})")
        lib = libs.get(res.library)
        if lib is None:
            problems.append(f"{path}: library: 未知基础库 {res.library!r} (期望: {', '.join(libs)})")
            continue
        elements = {e.code: e for e in lib.elements}
        _unique(path, "fields.column", [f.column for f in res.fields], problems)
        _unique(path, "fields.element", [f.element for f in res.fields], problems)
        for fi, fm in enumerate(res.fields):
            e = elements.get(fm.element)
            if e is None:
                problems.append(
                    f"{path}: fields.{fi}.element: {fm.element!r} 不是 {lib.name} 的数据元 (期望: {', '.join(elements)})"
                )
                continue
            if e.type in (ElementType.date, ElementType.datetime) and not fm.formats:
                problems.append(f"{path}: fields.{fi}.formats: {e.code} 是 {e.type} 类型, 需要至少一个格式")
            if fm.codes and e.type != ElementType.code:
                problems.append(f"{path}: fields.{fi}.codes: 只有代码类数据元可以做代码映射 ({e.code} 是 {e.type})")
            if e.codelist in codes:
                unknown = sorted(set(fm.codes.values()) - set(codes[e.codelist]))
                if unknown:
                    problems.append(f"{path}: fields.{fi}.codes: 映射到代码表 {e.codelist} 中不存在的代码 {unknown}")
            delivered.setdefault((lib.code, e.code), set()).add(res.department)
        for c, v in res.constants.items():
            if c not in elements:
                problems.append(f"{path}: constants.{c}: 不是 {lib.name} 的数据元")
                continue
            delivered.setdefault((lib.code, c), set()).add(res.department)
            cl = elements[c].codelist
            if cl in codes and v not in codes[cl]:
                problems.append(f"{path}: constants.{c}: {v!r} 不在代码表 {cl} 中")
        carried = {f.element for f in res.fields} | set(res.constants)
        for k in res.key:
            if k not in carried:
                problems.append(f"{path}: key: 主键 {k!r} 不在本资源的字段中")
        if set(lib.key) - set(res.key):
            problems.append(f"{path}: key: 必须包含 {lib.name} 的主键 {lib.key}")
        ch = res.channel
        if ch.kind == "database" and not (ch.table or ch.query):
            problems.append(f"{path}: channel: 前置库通道需要 table 或 query")
        if ch.kind == "file" and (why := outside_folder(ch.path)):
            problems.append(f"{path}: channel.path: {ch.path!r} {why} (期望: 交付目录 GONGSHU_LANDING 内的相对路径)")

    # 一数一源: the authority must exist and must actually deliver the element.
    for lib in city.libraries:
        for e in lib.elements:
            if e.code in lib.key or (lib.discriminator and e.code == lib.discriminator.element):
                continue
            if e.authority is None:
                continue  # discriminator-based; departments checked above
            auth = e.authority if isinstance(e.authority, str) else (e.authority[0] if len(e.authority) == 1 else None)
            if auth and (lib.code, e.code) in delivered and auth not in delivered[(lib.code, e.code)]:
                problems.append(
                    f"{main}: libraries({lib.code}).elements({e.code}).authority: 权威部门 {auth} 没有任何资源提供该数据元 "
                    f"(提供者: {', '.join(sorted(delivered[(lib.code, e.code)]))})"
                )


def _check_element(
    where: str, lib: Library, e: Element, depts: set[str], codes: dict[str, dict[str, str]], problems: list[str]
) -> None:
    names = [] if e.authority is None else ([e.authority] if isinstance(e.authority, str) else list(e.authority))
    if e.authority is None and lib.discriminator is None and e.code not in lib.key:
        problems.append(f"{where}.authority: 一数一源要求恰好一个权威部门, 数据元 {e.code}({e.name}) 没有权威部门")
    if len(names) > 1:
        problems.append(
            f"{where}.authority: 一数一源要求恰好一个权威部门, 数据元 {e.code}({e.name}) 有 {len(names)} 个: {', '.join(names)}"
        )
    for n in names:
        if n not in depts:
            problems.append(f"{where}.authority: 未登记的部门 {n!r}")
    if e.type == ElementType.code and not e.codelist:
        problems.append(f"{where}.codelist: 代码类数据元需要指定代码表")
    if e.codelist and e.codelist not in codes:
        problems.append(f"{where}.codelist: 未登记的代码表 {e.codelist!r}")
    if e.derived_from_id and not any(lib.element(k).type == ElementType.id_number for k in lib.key if k in
                                     {x.code for x in lib.elements}):
        problems.append(f"{where}.derived_from_id: 本库主键不是公民身份号码")


def _unique(path: Path, what: str, values: list[str], problems: list[str]) -> None:
    seen: set[str] = set()
    for v in values:
        if v in seen:
            problems.append(f"{path}: {what}: 重复的代码 {v!r}")
        seen.add(v)
