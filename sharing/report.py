"""The per-application use report for the data bureau (HTML + XLSX): what was applied for and
decided, every transition and mail, every extract written (rows, files, key id), every trace that
named the application. Written under ``<reports>/share/<application>/``."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
from openpyxl import Workbook

from desensitize.display import spreadsheet_safe
from quality.templating import render
from sharing import store
from sharing.overdue import MailAction
from sharing.workflow import ApplicationError, ApplicationKind, ApplicationStatus, Decision, Event

_LABELS = {e.value: e.label for e in (*Event, *MailAction)}


def event_label(action: str) -> str:
    """The Chinese label of an ``audit.share_events.action`` (a transition or a mail)."""
    return _LABELS.get(action, action)


def report_context(wh, application_id: str) -> dict:
    apps = store.read_applications(wh, application_id=application_id)
    if apps.is_empty():
        raise ApplicationError(f"没有编号为 {application_id} 的申请")
    a = apps.row(0, named=True)
    elements = [{**e, "decision_label": Decision(e["decision"]).label}
                for e in store.read_elements(wh, application_id=application_id).iter_rows(named=True)]
    events = [{**e, "label": event_label(e["action"])}
              for e in store.read_events(wh, application_id).iter_rows(named=True)]
    extracts = store.read_extracts(wh, application_id)
    traces = store.read_traces(wh).filter(pl.col("application_id") == application_id)
    return {
        "a": a, "kind": ApplicationKind(a["kind"]).label, "status": ApplicationStatus(a["status"]).label,
        "elements": elements, "events": events, "extracts": list(extracts.iter_rows(named=True)),
        "traces": list(traces.iter_rows(named=True)),
        "rows_total": int(extracts.get_column("rows").sum() or 0), "generated": dt.datetime.now(dt.UTC),
    }


def _sheet(wb: Workbook, title: str, frame: pl.DataFrame, headers: dict[str, str]) -> None:
    ws = wb.create_sheet(title)
    cols = [c for c in headers if c in frame.columns]
    ws.append([headers[c] for c in cols])
    for row in spreadsheet_safe(frame.select(cols).cast(pl.String)).iter_rows():
        ws.append(list(row))


def write_use_report(wh, application_id: str, root: Path) -> list[Path]:
    """Write ``<root>/share/<application>/使用报告.html`` and ``.xlsx``; their paths."""
    ctx = report_context(wh, application_id)
    folder = root / "share" / application_id
    folder.mkdir(parents=True, exist_ok=True)
    html = folder / f"{application_id}-使用报告.html"
    html.write_text(render("share_use_report.html.j2", **ctx), encoding="utf-8")
    wb = Workbook()
    ws = wb.active
    ws.title = "申请"
    a = ctx["a"]
    for k, v in [("申请编号", a["application_id"]), ("类型", ctx["kind"]), ("状态", ctx["status"]),
                 ("申请方", a["requester_name"]), ("基础库", a["library"]), ("用途", a["purpose"]),
                 ("行范围", a["row_filter"] or "全部"), ("有效期至", str(a["valid_until"])),
                 ("累计提取行数", ctx["rows_total"])]:
        ws.append([k, v])
    _sheet(wb, "数据元", store.read_elements(wh, application_id=application_id),
           {"element": "数据元", "element_name": "名称", "share_class": "共享属性", "authority": "权威部门",
            "decision": "决定", "reason": "理由", "opinion_note": "数源部门意见"})
    _sheet(wb, "审计记录", store.read_events(wh, application_id),
           {"at": "时间(UTC)", "action": "事项", "from_status": "原状态", "to_status": "新状态", "actor": "操作人",
            "note": "说明"})
    _sheet(wb, "提取记录", store.read_extracts(wh, application_id),
           {"as_of": "批次日期", "at": "写出时间(UTC)", "rows": "行数", "elements": "数据元", "key_id": "密钥编号",
            "watermark_id": "指纹编号", "folder": "文件夹", "leaks": "泄露发现"})
    _sheet(wb, "溯源记录", store.read_traces(wh).filter(pl.col("application_id") == application_id),
           {"at": "时间(UTC)", "actor": "操作人", "file": "文件", "rows": "行数", "verdict": "结论"})
    xlsx = folder / f"{application_id}-使用报告.xlsx"
    wb.save(xlsx)
    return [html, xlsx]
