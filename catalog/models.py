"""Pydantic models of the 数据资源目录 (catalogue).

A city describes itself in two kinds of YAML file:

* ``catalogue.yaml`` – the city, its 数源部门, its 基础库 with their 数据元 (each with exactly one
  authoritative department, 一数一源) and the 代码表 it ships;
* ``resources/*.yaml`` – one 数据资源 per file: who provides it, how it is delivered
  (file / 前置库 / API) and how the department's own columns map onto data elements.

Everything downstream (assets, checks, masks, sensors, reports, the synthetic generator) is derived
from these models; nothing in the code names a department, resource or field of a particular city.
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum
from pathlib import PurePosixPath, PureWindowsPath
from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

Identifier = Annotated[str, Field(pattern=r"^[a-z][a-z0-9_]{0,39}$")]
"""ASCII codes used in table names and asset keys: lower-case, start with a letter."""


def outside_folder(path: str) -> str | None:
    """Why a catalogue path (a delivery glob, a code-list file) could leave the folder it is
    relative to, or None: an absolute path or a ``..`` segment. Symbolic links are the reader's to
    check, on the real path (:func:`guiji.channels.delivery_files`, the code-list loader)."""
    if PurePosixPath(path).is_absolute() or PureWindowsPath(path).is_absolute() or path.startswith(("/", "\\")) \
            or re.match(r"^[A-Za-z]:", path):
        return "是绝对路径"
    if ".." in re.split(r"[/\\]", path):
        return "含 '..', 会离开所在目录"
    return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Labelled(StrEnum):
    """A code with the Chinese label people read, declared together: ``shared = "shared", "无条件共享"``.

    The member is its code (what is stored and compared); ``member.label`` is what reports, metadata
    and messages show. One place per label, on the enum that owns the concept.
    """

    label: str

    def __new__(cls, value: str, label: str):
        member = str.__new__(cls, value)
        member._value_ = value
        member.label = label
        return member


class ElementType(StrEnum):
    """Value types of a 数据元; they decide parsing in the 标准层 and the column type in storage."""

    string = "string"
    date = "date"
    datetime = "datetime"
    integer = "integer"
    decimal = "decimal"
    code = "code"  # value from a 代码表
    id_number = "id_number"  # 公民身份号码 GB 11643
    uscc = "uscc"  # 统一社会信用代码 GB 32100
    mobile = "mobile"


class Semantic(StrEnum):
    """What a value means, beyond its type: drives masking and synthetic data."""

    person_name = "person_name"
    org_name = "org_name"
    address = "address"
    phone = "phone"
    email = "email"
    license_no = "license_no"
    longitude = "longitude"
    latitude = "latitude"
    money = "money"
    text = "text"
    bank_card = "bank_card"
    vehicle_plate = "vehicle_plate"


class Sensitivity(StrEnum):
    """个人信息/数据 sensitivity grade of a data element (GB/T 35273, GB/T 43697)."""

    public = "公开"
    general = "一般"
    sensitive = "敏感"
    highly_sensitive = "高度敏感"


class UpdateCycle(StrEnum):
    """更新周期, coded 1–8 in catalogue templates."""

    realtime = "实时"
    daily = "每日"
    weekly = "每周"
    monthly = "每月"
    quarterly = "每季度"
    half_yearly = "每半年"
    yearly = "每年"
    other = "其他"


class ShareClass(StrEnum):
    unconditional = "无条件共享"
    conditional = "有条件共享"
    none = "不予共享"


class OpenClass(StrEnum):
    unconditional = "无条件开放"
    conditional = "有条件开放"
    none = "不予开放"


class SecurityLevel(StrEnum):
    """Data grade per GB/T 43697-2024."""

    general = "一般"
    important = "重要"
    core = "核心"


class OutputKind(Labelled):
    """The masked datasets of the 共享/开放 layer, each with its own masking policy (``desensitize/``).

    ``shared`` serves 无条件共享 resources, ``restricted`` 有条件共享 (受限共享) ones, ``open`` both
    开放 classes (无条件开放 and 有条件开放).
    """

    shared = "shared", "无条件共享"
    restricted = "restricted", "有条件共享(受限共享)"
    open = "open", "开放"


MaskingAction = Literal["keep", "mask", "mask_token", "token", "generalise", "suppress", "redact"]
"""What a (output kind, sensitivity grade) pair does to a value; ``desensitize/policy.py`` turns it
into a concrete rule by the element's type and semantic (``mask`` of a 手机号码 keeps 3 + 4 digits)."""

MaskingRuleText = Annotated[str, Field(
    pattern=r"^\s*[a-z_]+\s*(\([^()]*\))?\s*(\+\s*token\s*)?$",
    description="a masking rule of desensitize/policy.py, e.g. keep_first_last(6, 4), to_district, "
                "age_band(5), suppress; '+ token' adds a keyed pseudonym column",
)]


class MaskingConfig(_Model):
    """脱敏配置 of a city: the (output kind, grade) → action table and the open-data k."""

    k: int = Field(default=5, ge=2, description="开放数据每个准标识符组合至少出现 k 次")
    grades: dict[OutputKind, dict[Sensitivity, MaskingAction]] = Field(
        default_factory=dict,
        description="overrides of the default table (docs/masking.md), e.g. {open: {一般: generalise}}",
    )


class Department(_Model):
    """A 数源部门."""

    code: Identifier
    name: str
    emails: list[str] = Field(default_factory=list, description="质量报告收件人")


class CodeList(_Model):
    """A 代码表 shipped as a CSV file with at least the columns ``code,name``."""

    code: Identifier
    name: str
    file: str = Field(description="path relative to the catalogue folder")
    standard: str | None = Field(default=None, description="e.g. GB/T 2261.1-2003")


class Element(_Model):
    """A 数据元: one standard field of a base library."""

    code: Identifier
    name: str
    type: ElementType
    codelist: Identifier | None = Field(default=None, description="代码表 for type=code")
    semantic: Semantic | None = None
    sensitivity: Sensitivity = Sensitivity.general
    required: bool = False
    authority: str | list[str] | None = Field(
        default=None,
        description="一数一源: the one department whose value is authoritative. "
        "Omit when the library declares a discriminator (e.g. 证照类型).",
    )
    pattern: str | None = Field(default=None, description="regex the normalised value must match")
    derived_from_id: Literal["birth_date", "gender"] | None = Field(
        default=None, description="must agree with these digits of the library's ID-number key"
    )
    masking: dict[OutputKind, MaskingRuleText] | None = Field(
        default=None, description="脱敏规则 per output kind, overriding the grade table (docs/masking.md)"
    )
    quasi_identifier: bool | None = Field(
        default=None,
        description="准标识符 in open data (k-anonymity); unset: derived from the element (docs/masking.md)",
    )


class Discriminator(_Model):
    """Authority that depends on a value: each 证照类型 has its own issuing department."""

    element: Identifier
    authorities: dict[str, str | list[str]] = Field(
        description="discriminator value → the one authoritative department"
    )


class ReferenceTarget(_Model):
    library: Identifier
    when_type: ElementType | None = Field(
        default=None, description="only values that look like this type refer to this library"
    )
    name_element: Identifier | None = Field(
        default=None, description="element of the target whose value the name field must equal"
    )


class Reference(_Model):
    """关联数据一致性: values of ``element`` must exist as keys of a target library."""

    element: Identifier
    targets: list[ReferenceTarget]
    name_field: Identifier | None = None
    local_only: bool = Field(
        default=False, description="only ID numbers whose region code is one of the city's districts"
    )


class Library(_Model):
    """A 基础库 (or 主题库): one table of entities with history."""

    code: Identifier
    name: str
    key: list[Identifier]
    elements: list[Element]
    discriminator: Discriminator | None = None
    references: list[Reference] = Field(default_factory=list)

    def element(self, code: str) -> Element:
        for e in self.elements:
            if e.code == code:
                return e
        raise KeyError(code)


class City(_Model):
    code: Identifier
    name: str
    timezone: str = "Asia/Shanghai"
    first_batch_date: date | None = Field(
        default=None,
        description="首个批次日期: the batch date of the city's first deliveries; the daily partitions start "
        "here (else at the earliest initial_load of a 前置库 channel). Move it back to backfill older dates",
    )
    region_codes: list[str] = Field(
        default_factory=list, description="the city's own 行政区划 codes (6 digits), for 'local' checks"
    )


class CatalogueFile(_Model):
    """Contents of ``catalogue.yaml``."""

    city: City
    departments: list[Department]
    codelists: list[CodeList] = Field(default_factory=list)
    libraries: list[Library]
    masking: MaskingConfig = Field(default_factory=MaskingConfig)


# --- resources -------------------------------------------------------------------------------


class FileChannel(_Model):
    label: ClassVar[str] = "文件上传"
    kind: Literal["file"]
    path: str = Field(
        description="glob relative to GONGSHU_LANDING; {date:%Y%m%d} is replaced by the batch date",
    )
    format: Literal["csv", "xlsx", "json"] = "csv"
    encoding: Literal["utf-8", "gbk", "gb18030"] = "utf-8"
    delimiter: str = Field(default=",", min_length=1, max_length=1)
    sheet: str | None = None


class DatabaseChannel(_Model):
    label: ClassVar[str] = "前置库"
    kind: Literal["database"]
    url_env: str = Field(description="environment variable holding the 前置库 SQLAlchemy URL")
    default_url: str | None = Field(
        default=None, description="used when url_env is unset; {landing} is replaced (demo only)"
    )
    table: str | None = None
    query: str | None = None
    watermark: str = Field(description="column that grows with every change (更新时间)")
    initial_load: date | None = Field(
        default=None,
        description="batch date of the initial load: its partition also reads every row before that day "
        "(a 前置库 delivered with history); every other partition reads the rows whose watermark falls on its "
        "own day",
    )


class ApiChannel(_Model):
    label: ClassVar[str] = "数据接口"
    kind: Literal["api"]
    url: str
    url_env: str | None = Field(default=None, description="overrides url when set")
    auth_env: str | None = Field(default=None, description="bearer token from this variable")
    date_param: str = "date"
    page_param: str = "page"
    page_size_param: str = "page_size"
    page_size: int = Field(default=1000, gt=0)
    items_field: str = "items"
    total_pages_field: str = "total_pages"
    timeout_s: float = Field(default=10.0, gt=0, description="seconds to wait for one answer")
    retries: int = Field(
        default=3, ge=0, description="further attempts after a connection error, a timeout or HTTP 429/5xx"
    )
    max_pages: int = Field(
        default=10_000, gt=0,
        description="most pages one delivery may have: a server announcing more, or paging without end, fails the delivery",
    )
    max_seconds: float = Field(
        default=1800.0, gt=0,
        description="time budget of one delivery (all pages and retries); past it the delivery fails",
    )


Channel = Annotated[FileChannel | DatabaseChannel | ApiChannel, Field(discriminator="kind")]


class FieldMap(_Model):
    """One department column → one data element, with how to parse it."""

    column: str = Field(min_length=1)
    element: Identifier
    formats: list[str] = Field(default_factory=list, description="date/datetime formats, tried in order")
    codes: dict[str, str] = Field(default_factory=dict, description="department value → code value")


class Resource(_Model):
    """A 数据资源 as delivered by one department."""

    code: Identifier
    name: str
    department: Identifier
    library: Identifier
    update_cycle: UpdateCycle
    stale_after_hours: float | None = Field(default=None, description="allowance for 更新周期 其他")
    share: ShareClass
    open: OpenClass
    security_level: SecurityLevel = SecurityLevel.general
    channel: Channel
    fields: list[FieldMap]
    key: list[Identifier]
    constants: dict[Identifier, str] = Field(
        default_factory=dict, description="element values fixed for the whole resource (证照类型)"
    )

    @property
    def id(self) -> str:
        """Unique name across the catalogue: ``<department>_<resource>``."""
        return f"{self.department}_{self.code}"

    @property
    def version_column(self) -> str | None:
        """The column that orders the versions of one key inside a batch: a 前置库's watermark.

        Rows of a 前置库 batch with the same key and different watermarks are the entity's history
        (changed twice in a day, or history rows of an initial load), not duplicates; the last one
        is the batch's value. Files and APIs deliver one row per key: a repeated key is a defect.
        """
        return self.channel.watermark if isinstance(self.channel, DatabaseChannel) else None

    def elements(self) -> list[str]:
        """Element codes this resource carries, fields first then constants."""
        return [f.element for f in self.fields] + [c for c in self.constants if c not in self._field_elements()]

    def _field_elements(self) -> set[str]:
        return {f.element for f in self.fields}
