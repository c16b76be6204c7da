"""Open-data files (开放数据): CSV (UTF-8) with a data dictionary, and JSON, for one open output and date.

Layout under the open-data root (``$GONGSHU_HOME/open``)::

    <output>/<YYYY-MM-DD>/<output>.csv              the records, header = field codes
    <output>/<YYYY-MM-DD>/<output>.dictionary.csv   数据字典: field, Chinese name, type, rule, code list
    <output>/<YYYY-MM-DD>/<output>.json             {dataset, title, as_of, k, quasi_identifiers, fields, records}

Files are written to a temporary name and renamed, and their content depends only on the data and
the policy (no timestamps), so re-exporting the same date rewrites identical bytes. In the CSV
files a text cell that a spreadsheet would read as a formula (``=…``, ``+…``, ``-…``, ``@…``) gets a
leading ``'`` (:func:`desensitize.display.spreadsheet_safe`); the JSON keeps values as they are.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from catalog.models import Labelled
from desensitize.display import spreadsheet_safe
from desensitize.policy import KEY_ID_COLUMN, OutputPolicy

DICTIONARY_COLUMNS = ["字段", "中文名称", "数据类型", "处理规则", "准标识符", "代码表"]


class ColumnType(Labelled):
    """The 数据类型 of a published column in the data dictionary: the polars type's name, in Chinese."""

    String = "String", "文本"
    Date = "Date", "日期"
    Float64 = "Float64", "数值"
    Int64 = "Int64", "整数"
    Boolean = "Boolean", "布尔"


def type_label(dtype: pl.DataType) -> str:
    """``文本``, ``日期`` …; the polars name for a type without a Chinese one."""
    member = ColumnType._value2member_map_.get(type(dtype).__name__)
    return member.label if isinstance(member, ColumnType) else str(dtype)


@dataclass(frozen=True)
class ExportFiles:
    csv: Path
    dictionary: Path
    json: Path

    def all(self) -> list[Path]:
        return [self.csv, self.dictionary, self.json]


def export_paths(root: Path, policy: OutputPolicy, as_of: dt.date) -> ExportFiles:
    folder = root / policy.name / as_of.isoformat()
    return ExportFiles(folder / f"{policy.name}.csv", folder / f"{policy.name}.dictionary.csv",
                       folder / f"{policy.name}.json")


def data_dictionary(policy: OutputPolicy, catalogue: Catalogue, columns: list[str]) -> pl.DataFrame:
    """One row per published field, in Chinese."""
    schema = policy.schema()
    by_column = {c.column: c for c in policy.columns}
    by_token = {c.token_column: c for c in policy.columns if c.token}
    rows = []
    for name in columns:
        dtype = type_label(schema[name])
        if name in by_column:
            c = by_column[name]
            codelist = next((cl for cl in catalogue.city.codelists if cl.code == c.element.codelist), None)
            rows.append([name, c.element.name, dtype, c.rule.label, "是" if c.quasi_identifier else "否",
                         f"{codelist.name} {codelist.standard or ''}".strip() if codelist else ""])
        elif name in by_token:
            c = by_token[name]
            rows.append([name, f"{c.element.name}假名令牌", dtype, "HMAC-SHA256 密钥化假名, 同一密钥编号下可关联", "否", ""])
        elif name == KEY_ID_COLUMN:
            rows.append([name, "假名化密钥编号", dtype, "不同编号的令牌不可相互关联", "否", ""])
        else:
            rows.append([name, name, dtype, "", "否", ""])
    return pl.DataFrame(rows, schema=DICTIONARY_COLUMNS, orient="row")


class _Replacing:
    """A file written under a temporary name and renamed into place when complete (never half there)."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.tmp = path, path.with_name(f".{path.name}.{os.getpid()}.tmp")
        self.file = self.tmp.open("wb")

    def write(self, text: str) -> None:
        self.file.write(text.encode("utf-8"))

    def done(self) -> None:
        self.file.close()
        os.replace(self.tmp, self.path)

    def abandon(self) -> None:
        self.file.close()
        self.tmp.unlink(missing_ok=True)


def write_open_export(
    policy: OutputPolicy,
    catalogue: Catalogue,
    frame: pl.DataFrame,
    root: Path,
    as_of: dt.date,
) -> ExportFiles:
    """Write the three files of one open release; returns their paths."""
    return write_open_export_pages(policy, catalogue, [frame], frame.height, root, as_of)


def write_open_export_pages(
    policy: OutputPolicy,
    catalogue: Catalogue,
    pages: Iterable[pl.DataFrame],
    rows: int,
    root: Path,
    as_of: dt.date,
) -> ExportFiles:
    """:func:`write_open_export` of the release given in pages (in the order published; ``rows`` in all):
    the same bytes, written a page at a time."""
    paths = export_paths(root, policy, as_of)
    columns = list(policy.schema())
    dictionary = data_dictionary(policy, catalogue, columns)
    head = {
        "dataset": policy.name,
        "title": policy.label,
        "as_of": as_of.isoformat(),
        "rows": rows,
        "k": policy.k,
        "quasi_identifiers": policy.quasi_identifiers,
        "fields": dictionary.to_dicts(),
    }
    text = json.dumps(head, ensure_ascii=False, indent=1)
    csv, js = _Replacing(paths.csv), _Replacing(paths.json)
    try:
        js.write(text[:-2] + ',\n "records": [')
        header, first = True, True
        for page in pages:
            if header or page.height:
                # CSV is opened in spreadsheets: text cells that would start a formula get a leading quote
                csv.write(spreadsheet_safe(page).write_csv(date_format="%Y-%m-%d", include_header=header))
                header = False
            if page.height:
                js.write(("" if first else ",") + page.write_json()[1:-1])
                first = False
        if header:  # no pages: the header alone
            csv.write(pl.DataFrame(schema=policy.schema()).write_csv())
        js.write("]\n}\n")
    except BaseException:
        csv.abandon()
        js.abandon()
        raise
    csv.done()
    js.done()
    dict_file = _Replacing(paths.dictionary)
    dict_file.write(spreadsheet_safe(dictionary).write_csv())
    dict_file.done()
    return paths


def read_open_csv(path: Path, policy: OutputPolicy) -> pl.DataFrame:
    """An exported CSV read back as text (what a downstream user gets)."""
    return pl.read_csv(path, infer_schema=False)
