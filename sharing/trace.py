"""``gongshu share trace FILE``: which application a leaked extract came from, with the evidence.

The file (CSV in UTF-8 or GBK, or XLSX: every sheet) is read as text; every masked cell is compared
with the watermark of every application that has had an extract (:mod:`sharing.fingerprint`). A
``_key_id`` column, if the leak kept it, is reported as supporting evidence (it names the application's
pseudonym key). Every trace is recorded in ``audit.share_traces``, whatever its verdict.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from desensitize.policy import KEY_ID_COLUMN
from desensitize.pseudonym import PseudonymKey, hmac_tokens
from sharing import store
from sharing.extract import ExtractRefused, application_policy
from sharing.fingerprint import Verdict, application_key, detect, watermark_key
from warehouse.store import Warehouse


class TraceError(ValueError):
    """The file cannot be read."""


def read_leak(path: Path) -> pl.DataFrame:
    """A leaked file as text columns: CSV (UTF-8, UTF-8 with BOM or GBK) or XLSX (every sheet stacked)."""
    if not path.exists():
        raise TraceError(f"{path}: 文件不存在")
    data = path.read_bytes()
    suffix = path.suffix.lower()
    if suffix in (".xlsx", ".xlsm"):
        from openpyxl import load_workbook

        try:
            wb = load_workbook(io.BytesIO(data), read_only=True, data_only=True)
        except Exception as exc:
            raise TraceError(f"{path}: 不是可读的 XLSX 文件 ({type(exc).__name__})") from None
        frames = []
        try:
            for ws in wb.worksheets:
                rows = [["" if v is None else str(v) for v in r] for r in ws.iter_rows(values_only=True)]
                if len(rows) < 2:
                    continue
                width = max(len(r) for r in rows)
                header = [str(h) if h else f"列{i + 1}" for i, h in enumerate(rows[0] + [""] * (width - len(rows[0])))]
                header = [h if header.index(h) == i else f"{h}_{i}" for i, h in enumerate(header)]
                frames.append(pl.DataFrame({h: [r[i] if i < len(r) else None for r in rows[1:]]
                                            for i, h in enumerate(header)}))
        finally:
            wb.close()
        return pl.concat(frames, how="diagonal") if frames else pl.DataFrame()
    for encoding in ("utf-8-sig", "gb18030"):
        try:
            text = data.decode(encoding)
            break
        except UnicodeDecodeError:
            continue
    else:
        raise TraceError(f"{path}: 既不是 UTF-8 也不是 GBK 编码的文本")
    try:
        return pl.read_csv(io.StringIO(text), infer_schema=False, truncate_ragged_lines=True)
    except Exception as exc:
        raise TraceError(f"{path}: 无法按 CSV 读取 ({type(exc).__name__}: {exc})") from None


@dataclass
class Trace:
    file: Path
    rows: int
    columns: list[str]
    verdict: Verdict
    application: dict | None
    key_ids: dict[str, int]  # key id seen in a _key_id column → rows
    key_id_application: str | None
    tokens: dict[str, tuple[int, int]] | None = None  # application → (token values matched, token values seen)
    token_application: str | None = None

    def lines(self) -> list[str]:
        v = self.verdict
        out = [f"溯源 {self.file} · {self.rows} 行 · 列 {', '.join(self.columns)}"]
        if self.application is not None:
            a = self.application
            how = "水印" if v.identified else "令牌列"
            out.append(f"来源: 申请 {a['application_id']} · 申请方 {a['requester_name']} ({a['requester']}) · "
                       f"用途 {a['purpose']} (依据: {how})")
        else:
            out.append(f"无法确定来源: {v.reason}")
        out.append(f"证据: 水印 {v.reason}")
        for s in v.scores[:5]:
            out.append(f"  {s.application_id}: 指纹位 {s.agree}/{s.bits} 吻合 ({s.rate:.1%}), 不同遮蔽值 {s.values} 个, "
                       f"完全吻合 {s.exact} 个" + (f", 偶然吻合概率 ≤ 1e{s.log10_chance:.0f}" if s.rate > 0.75 else ""))
        for a, (hit, seen) in sorted((self.tokens or {}).items(), key=lambda x: -x[1][0])[:3]:
            out.append(f"  令牌列: {hit}/{seen} 个令牌由申请 {a} 的专用密钥生成")
        if self.key_ids:
            owner = f" = 申请 {self.key_id_application} 的假名化密钥" if self.key_id_application else " (不属于任何申请)"
            out.append(f"  _key_id 列: {', '.join(self.key_ids)}{owner}")
        return out


TOKEN = r"^[a-z2-7]{26}$"
MIN_TOKENS = 20


def token_evidence(wh: Warehouse, catalogue: Catalogue, frame: pl.DataFrame, apps: pl.DataFrame,
                   master: PseudonymKey) -> dict[str, tuple[int, int]]:
    """For each application with its own tokens: how many distinct token-shaped values of the file its
    key gives to a value of its library (the base tables, every version)."""
    columns = []
    for c in frame.columns:
        s = frame.get_column(c).drop_nulls()
        if s.dtype == pl.String and s.len() and s.str.contains(TOKEN).mean() > 0.9:
            columns.append(s.filter(s.str.contains(TOKEN)))
    if not columns:
        return {}
    seen = pl.concat(columns).unique()
    out: dict[str, tuple[int, int]] = {}
    for a in apps.filter(~pl.col("linkage").fill_null(False)).iter_rows(named=True):
        lib = catalogue.library(a["library"])
        granted = store.read_elements(wh, application_id=a["application_id"]).filter(pl.col("decision") == "granted")
        try:
            policy = application_policy(catalogue, a, granted.get_column("element").to_list())
        except ExtractRefused:
            continue
        keyed = [c.column for c in policy.columns if c.token]
        if not keyed or not wh.exists("base", lib.code):
            continue
        key = application_key(master, a["application_id"])
        with wh.engine.connect() as conn:
            values = pl.concat([wh.read(conn, f"SELECT DISTINCT {wh.quote(c)} AS v FROM {wh.qualified('base', lib.code)}",
                                        {"v": pl.String()}).get_column("v") for c in keyed]).drop_nulls().unique()
        tokens = hmac_tokens(values, key)
        out[a["application_id"]] = (int(seen.is_in(tokens).sum()), seen.len())
    return out


def trace_file(wh: Warehouse, path: Path, master: PseudonymKey, actor: str | None = None,
               catalogue: Catalogue | None = None, record: bool = True) -> Trace:
    """Trace one leaked file against every application that has had an extract; recorded in the audit.

    The watermark decides; when it cannot (no masked cell left) and ``catalogue`` is given, a token
    column that only one application's key produced names that application."""
    path = Path(path)
    frame = read_leak(path)
    apps = store.read_applications(wh)
    extracted = set(store.read_extracts(wh).get_column("application_id").to_list())
    candidates = [a for a in apps.get_column("application_id").to_list() if a in extracted]
    verdict = detect(frame, {a: watermark_key(master, a) for a in candidates})
    key_ids: dict[str, int] = {}
    owner = None
    if KEY_ID_COLUMN in frame.columns:
        counts = frame.get_column(KEY_ID_COLUMN).drop_nulls().value_counts()
        key_ids = {r[0]: int(r[1]) for r in counts.iter_rows()}
        by_key = {application_key(master, a).key_id: a for a in candidates}
        owners = {by_key[k] for k in key_ids if k in by_key}
        owner = owners.pop() if len(owners) == 1 else None
    app = None
    tokens = None
    if verdict.identified:
        app = apps.filter(pl.col("application_id") == verdict.application_id).row(0, named=True)
    elif catalogue is not None:
        tokens = token_evidence(wh, catalogue, frame, apps.filter(pl.col("application_id").is_in(candidates)), master)
        strong = [a for a, (hit, seen) in tokens.items() if seen >= MIN_TOKENS and hit >= 0.9 * seen]
        if len(strong) == 1 and all(hit == 0 for a, (hit, _) in tokens.items() if a != strong[0]):
            app = apps.filter(pl.col("application_id") == strong[0]).row(0, named=True)
    out = Trace(path, frame.height, frame.columns, verdict, app, key_ids, owner, tokens,
                app["application_id"] if app is not None and not verdict.identified else None)
    if not record:  # a measurement (benchmarks/share_trace_accuracy.py), not a trace of a real leak
        return out
    evidence = "\n".join(out.lines()[2:])
    with wh.begin() as conn:
        store.append(wh, conn, store.TRACES, [{
            "trace_id": store.new_id(), "at": store.utcnow(), "actor": actor, "file": str(path),
            "file_sha256": hashlib.sha256(path.read_bytes()).hexdigest(), "rows": frame.height,
            "columns": ",".join(frame.columns), "verdict": "identified" if app else "not_identified",
            "application_id": app["application_id"] if app else None,
            "requester": app["requester_name"] if app else None, "evidence": evidence,
        }])
    return out
