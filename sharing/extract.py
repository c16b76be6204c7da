"""One application's extract for one night: exactly the granted elements (and the rows of its filter),
masked per the catalogue's grade, pseudonym tokens keyed per application, watermarked, written as
formula-safe CSV and XLSX with a manifest under ``<root>/<application>/<date>/``, scanned for raw
identifiers, and recorded in ``audit.share_extracts``.

The masking is the catalogue's own (``desensitize/policy.py``): the 有条件共享 (restricted) output of
the library for a 共享申请 — its ID-number masks already chosen jointly with what any share output
shows — or the 开放 output for 依申请开放, whose granted columns must then be k-anonymous before
anything is written (``desensitize/kanon.py``). Only the columns of the granted elements and the
library's key (masked, with the application's own token) are kept.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import shutil
from dataclasses import dataclass, field, replace
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from catalog.models import OutputKind
from desensitize.display import spreadsheet_safe
from desensitize.kanon import smallest_group
from desensitize.leaks import Finding, Needles, scan_file, scan_frame, scan_workbook
from desensitize.masking import mask_snapshot
from desensitize.policy import KEY_ID_COLUMN, OutputPolicy, share_policies
from desensitize.pseudonym import PseudonymKey
from sharing import store
from sharing.fingerprint import application_key, embed, strip, watermark_id, watermark_key
from sharing.workflow import ApplicationKind
from warehouse.base import VALID_FROM, VALID_TO, base_schema
from warehouse.store import Warehouse


class ExtractRefused(RuntimeError):
    """The extract may not be written (k-anonymity fails, raw identifiers found, nothing granted)."""


def application_policy(catalogue: Catalogue, app: dict, granted: list[str]) -> OutputPolicy:
    """The catalogue's policy of the library for the application's kind, cut to key + granted elements."""
    lib = catalogue.library(app["library"])
    policies = {p.kind: p for p in share_policies(catalogue) if p.library.code == lib.code}
    if app["kind"] == ApplicationKind.open.value:
        kinds = [OutputKind.open]
    else:
        kinds = [OutputKind.restricted, OutputKind.shared]
    base = next((policies[k] for k in kinds if k in policies), None)
    if base is None:
        raise ExtractRefused(f"{lib.name}没有{'开放' if app['kind'] == 'open' else '共享'}输出的脱敏策略")
    keep = set(lib.key) | set(granted)
    columns = tuple(c for c in base.columns if c.column in keep)
    missing = sorted(set(granted) - {c.column for c in columns})
    if missing:
        raise ExtractRefused(f"数据元 {', '.join(missing)} 不在{base.label}的策略中, 不能提供")
    excluded = tuple((e, "未申请或未准予") for e in lib.elements if e.code not in keep)
    return replace(base, columns=columns, excluded=excluded)


def read_rows(wh: Warehouse, library, as_of: dt.date) -> pl.DataFrame:
    """The base-library versions valid on ``as_of`` (every element: a filter may name any of them)."""
    full = base_schema(library)
    schema = {c: full[c] for c in [*library.key, *(e.code for e in library.elements if e.code not in library.key),
                                   VALID_FROM] if c in full}
    if not wh.exists("base", library.code):
        return pl.DataFrame(schema=schema)
    cols = ", ".join(wh.quote(c) for c in schema)
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {cols} FROM {wh.qualified('base', library.code)} WHERE {VALID_FROM} <= :d "
                             f"AND ({VALID_TO} IS NULL OR {VALID_TO} > :d) ORDER BY "
                             + ", ".join(wh.quote(k) for k in library.key), schema, {"d": as_of})


@dataclass
class Extract:
    application_id: str
    as_of: dt.date
    policy: OutputPolicy
    frame: pl.DataFrame  # as written: masked and watermarked
    key_id: str | None
    watermark_id: str
    folder: Path
    files: list[Path] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    kanon_smallest: int | None = None

    @property
    def rows(self) -> int:
        return self.frame.height


def build_frame(catalogue: Catalogue, app: dict, granted: list[str], rows: pl.DataFrame, as_of: dt.date,
                master: PseudonymKey) -> tuple[OutputPolicy, pl.DataFrame, str | None, int | None]:
    """The pure core: filter, mask (keyed per application), check k-anonymity (依申请开放), watermark."""
    policy = application_policy(catalogue, app, granted)
    if app["row_filter"]:
        rows = rows.filter(pl.sql_expr(app["row_filter"]).fill_null(False))
    # tokens are the application's own unless it was granted linkage with the share layer's outputs
    key = master if app.get("linkage") else application_key(master, app["application_id"])
    masked = mask_snapshot(policy, rows, as_of=as_of, key=key if policy.keyed else None)
    frame = masked.frame
    smallest = None
    if policy.kind == OutputKind.open:
        qis = policy.quasi_identifiers
        smallest = smallest_group(frame, qis) if qis else None
        if smallest is not None and smallest < policy.k:
            raise ExtractRefused(f"申请 {app['application_id']}: 准予的列 {', '.join(qis)} 不满足 k={policy.k} 匿名 "
                                 f"(最小组 {smallest} 行), 未写出")
    frame = embed(frame, watermark_key(master, app["application_id"]))
    return policy, frame, (key.key_id if policy.keyed else None), smallest


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _xlsx(frame: pl.DataFrame, labels: dict[str, str]) -> bytes:
    """The extract as a workbook: sheet 「数据」 (text cells written as text, never as formulas) and
    「数据字典」. xlsxwriter in constant-memory mode: a 100,000-row extract in a few seconds."""
    import xlsxwriter

    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "constant_memory": True, "strings_to_formulas": False,
                                   "strings_to_numbers": False, "strings_to_urls": False})
    ws = wb.add_worksheet("数据")
    ws.write_row(0, 0, frame.columns)
    text = spreadsheet_safe(frame).with_columns(pl.col(pl.Date).dt.strftime("%Y-%m-%d"))
    for i, row in enumerate(text.iter_rows(), start=1):  # xlsxwriter writes row by row
        ws.write_row(i, 0, row)
    d = wb.add_worksheet("数据字典")
    d.write_row(0, 0, ["字段", "说明"])
    for i, c in enumerate(frame.columns, start=1):
        d.write_row(i, 0, [c, labels.get(c, c)])
    wb.close()
    return buf.getvalue()


def write_extract(
    wh: Warehouse, catalogue: Catalogue, application_id: str, as_of: dt.date, master: PseudonymKey, root: Path,
    *, needles: Needles | None = None, run_id: str | None = None,
) -> Extract:
    """Build, write, scan and record one application's extract of ``as_of``; ExtractRefused when it may not
    be written (nothing is left on disk then) — the refusal is recorded too."""
    apps = store.read_applications(wh, application_id=application_id)
    if apps.is_empty():
        raise ExtractRefused(f"没有编号为 {application_id} 的申请")
    app = apps.row(0, named=True)
    elements = store.read_elements(wh, application_id=application_id)
    granted = elements.filter(pl.col("decision") == "granted").get_column("element").to_list()
    if not granted:
        raise ExtractRefused(f"申请 {application_id} 没有准予的数据元")
    lib = catalogue.library(app["library"])
    policy, frame, key_id, smallest = build_frame(catalogue, app, granted, read_rows(wh, lib, as_of), as_of, master)
    wm_id = watermark_id(watermark_key(master, application_id))
    folder = root / application_id / as_of.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    ex = Extract(application_id, as_of, policy, frame, key_id, wm_id, folder, kanon_smallest=smallest)
    labels = policy.labels()
    csv, xlsx, manifest = (folder / f"{application_id}.{s}" for s in ("csv", "xlsx", "manifest.json"))
    _write(csv, spreadsheet_safe(frame).write_csv(date_format="%Y-%m-%d").encode("utf-8"))
    _write(xlsx, _xlsx(frame, labels))
    head = {
        "application": application_id, "kind": app["kind"], "requester": app["requester"],
        "requester_name": app["requester_name"], "purpose": app["purpose"], "library": lib.code,
        "as_of": as_of.isoformat(), "valid_until": app["valid_until"].isoformat(), "row_filter": app["row_filter"],
        "elements": granted, "rows": frame.height, "columns": frame.columns,
        "masking": {c.column: c.describe() for c in policy.columns},
        "key_id": key_id, "watermark_id": wm_id,
        "note": "仅限申请中申明的用途使用; 假名令牌为本申请专用, 不能与其他申请的提取关联; 文件带有可溯源的指纹",
        "files": {p.name: _sha256(p) for p in (csv, xlsx)},
    }
    _write(manifest, (json.dumps(head, ensure_ascii=False, indent=1) + "\n").encode("utf-8"))
    ex.files = [csv, xlsx, manifest]
    needles = needles or Needles.cached(wh, catalogue)[0]  # the night's share outputs collected them already
    public = policy.public_columns()
    typed = [c for c, t in frame.schema.items() if t != pl.String]
    for p in (csv, manifest):
        ex.findings += scan_file(p, needles, public, typed)
    # the workbook's sheet 「数据」 has the frame's columns in order (its 「数据字典」 names them, no values)
    ex.findings += scan_workbook(xlsx.read_bytes(), needles, str(xlsx),
                                 {f"数据!{i + 1}" for i, c in enumerate(frame.columns) if c in public})
    # the row rules of the scanner (a masked ID completed by its row) read masks as plain asterisks
    ex.findings += scan_frame(strip(frame.drop(KEY_ID_COLUMN, strict=False)), needles, f"{application_id} 提取(去指纹)",
                              public, typed)
    with wh.begin() as conn:
        store.append(wh, conn, store.EXTRACTS, [{
            "extract_id": store.new_id(), "application_id": application_id, "as_of": as_of, "at": store.utcnow(),
            "requester": app["requester_name"], "library": lib.code, "elements": ",".join(granted),
            "rows": frame.height if not ex.findings else 0, "key_id": key_id, "watermark_id": wm_id,
            "folder": str(folder), "files": ",".join(p.name for p in ex.files),
            "sha256": ",".join(_sha256(p) for p in ex.files) if not ex.findings else None,
            "leaks": sum(f.count for f in ex.findings), "run_id": run_id,
        }])
    if ex.findings:
        shutil.rmtree(folder, ignore_errors=True)
        raise ExtractRefused(f"申请 {application_id} 的提取发现 {sum(f.count for f in ex.findings)} 处原始标识符, "
                             "已删除未提供: " + "; ".join(str(f) for f in ex.findings[:3]))
    return ex


def last_extract_files(wh: Warehouse) -> pl.DataFrame:
    """The extracts recorded (application, date, folder), newest first."""
    return store.read_extracts(wh).sort("at", descending=True)
