"""The report rendered: the HTML page (template ``department_report.html.j2``, charts embedded) and the
XLSX workbook (every rule, failing record, conflict and ticket; the sheet 「校核工单」 doubles as
the reply form ``gongshu ticket import-reply`` reads). Text cells are written as strings,
neutralised against formula injection (:func:`desensitize.display.spreadsheet_text`)."""

from __future__ import annotations

import io

import xlsxwriter

from desensitize.display import spreadsheet_text
from quality.report.charts import render_charts
from quality.report.context import DepartmentReport
from quality.rules import Severity
from quality.templating import render
from quality.tickets.commands import REPLY_SHEET
from quality.tickets.transitions import TicketKind, TicketStatus


def render_html(report: DepartmentReport) -> str:
    """The page, as written to disk and mailed."""
    charts = render_charts(report.trend, report.dimensions, report.grade_bounds) if report.context["score"] else []
    return render("department_report.html.j2", r={**report.context, "charts": charts})


def render_xlsx(report: DepartmentReport) -> bytes:
    """The workbook: 概况, 规则结果, 时效, 一数一源冲突, 失败记录, 校核工单 (the reply form)."""
    buf = io.BytesIO()
    wb = xlsxwriter.Workbook(buf, {"in_memory": True, "strings_to_numbers": False, "strings_to_formulas": False})
    bold = wb.add_format({"bold": True, "bg_color": "#F0F3F7", "border": 1})
    pct = wb.add_format({"num_format": "0.00%"})
    num = wb.add_format({"num_format": "0.0"})
    reply = wb.add_format({"bg_color": "#FFF7D6", "border": 1})
    note = wb.add_format({"italic": True, "font_color": "#555555"})

    def sheet(name: str, header: list[str], rows: list[list], widths: list[int] | None = None, start: int = 0,
              formats: dict[int, object] | None = None):
        ws = wb.add_worksheet(name)
        for c, h in enumerate(header):
            ws.write_string(start, c, spreadsheet_text(h), bold)
        for r, row in enumerate(rows, start=start + 1):
            for c, v in enumerate(row):
                fmt = (formats or {}).get(c)
                if v is None:
                    ws.write_blank(r, c, None, fmt)
                elif isinstance(v, bool):
                    ws.write_boolean(r, c, v, fmt)
                elif isinstance(v, int | float):
                    ws.write_number(r, c, v, fmt)
                else:  # text is always a string cell, never a formula (strings_to_formulas off)
                    ws.write_string(r, c, spreadsheet_text(str(v)), fmt)
        for c, w in enumerate(widths or []):
            ws.set_column(c, c, w)
        ws.freeze_panes(start + 1, 0)
        return ws

    ws = wb.add_worksheet("概况")
    ws.set_column(0, 0, 22)
    ws.set_column(1, 1, 60)
    for r, (k, v) in enumerate(report.summary):
        ws.write_string(r, 0, spreadsheet_text(k), bold)
        if isinstance(v, int | float) and not isinstance(v, bool):
            ws.write_number(r, 1, v)
        else:
            ws.write_string(r, 1, "—" if v is None else spreadsheet_text(str(v)))
    row = len(report.summary) + 1
    for c, h in enumerate(["维度", "得分", "上期", "变化", "权重"]):
        ws.write_string(row, c, h, bold)
    for i, d in enumerate(report.dimensions, start=row + 1):
        ws.write_string(i, 0, spreadsheet_text(d["name"]))
        if d["value"] is not None:
            ws.write_number(i, 1, round(d["value"], 2), num)
        else:
            ws.write_string(i, 1, "无规则")
        ws.write_string(i, 2, spreadsheet_text(d["previous"]))
        ws.write_string(i, 3, spreadsheet_text(d["delta"]))
        ws.write_number(i, 4, float(d["weight"]))

    sheet("规则结果", ["资源", "规则编号", "规则", "维度", "严重程度", "检查数", "失败数", "通过率", "得分"],
          [[r["resource"], r["rule_id"], r["label"], r["dimension"], Severity(r["severity"]).label,
            r["evaluated"], r["failed"], (1 - r["failed"] / r["evaluated"]) if r["evaluated"] else None,
            round(r["score"], 2) if r["score"] is not None else None]
           for r in report.rules.iter_rows(named=True)],
          [18, 24, 44, 8, 8, 10, 8, 10, 8], formats={7: pct, 8: num})
    sheet("时效", ["资源", "更新周期", "最近交付", "应交付时间", "超期时点", "滞后", "状态"],
          [[f["resource"], f["cycle"], f["delivered"], f["due"], f["deadline"], f["lag"], f["status"]]
           for f in report.freshness], [24, 8, 17, 17, 17, 14, 18])
    sheet("一数一源冲突", ["校核单号", "数据项", "权威部门", "主体标识(脱敏)", "令牌", "本部门值(脱敏)", "期望",
                        "权威值(脱敏)", "首次发现", "最近发现", "发现次数", "最近批次", "行号"],
          [[r["ticket_id"], r["element_name"], r["authority_name"], r["entity"], r["token"], r["value_shown"],
            f"与权威来源 {r['authority_name']} 一致", r["authority_shown"], str(r["first_seen_date"]),
            str(r["last_seen_date"]), r["times_seen"], r["last_seen_batch"], r["last_row_no"]]
           for r in report.conflicts.iter_rows(named=True)],
          [24, 12, 14, 22, 28, 18, 22, 18, 11, 11, 8, 26, 6])
    sheet("失败记录", ["校核单号", "资源", "主体标识(脱敏)", "令牌", "数据项", "规则编号", "规则", "维度", "严重程度",
                    "发现值(脱敏)", "期望", "批次", "行号"],
          [[r["ticket_id"], r["resource"], r["entity"], r["token"], r["field_name"], r["rule_id"], r["label"],
            r["dimension"], Severity(r["severity"]).label, r["value_masked"], r["expected"],
            r["batch_id"], r["row_no"]] for r in report.failures.iter_rows(named=True)],
          [24, 16, 22, 28, 12, 22, 30, 8, 8, 18, 24, 26, 6])
    ws = sheet(REPLY_SHEET, ["校核单号", "类型", "资源", "主体标识(脱敏)", "令牌", "问题", "发出日期", "校核期限",
                             "状态", "超期工作日", "已延期(工作日)", "延期批准人", "回复说明", "回复人"],
               [[r["ticket_id"], TicketKind(r["kind"]).label, r["resource"], r["entity"], r["token"], r["item_labels"],
                 str(r["opened_on"]), str(r["due_date"]), TicketStatus(r["status"]).label,
                 r["days_late"] if r["status"] == TicketStatus.overdue else 0, r["extension_days"] or 0, r["extended_by"],
                 None, None] for r in report.tickets.iter_rows(named=True)],
               [24, 12, 16, 22, 28, 36, 11, 11, 8, 10, 12, 12, 40, 12], start=2, formats={12: reply, 13: reply})
    ws.write_string(0, 0, spreadsheet_text(f"{report.department.name} · 报告编号 {report.reference} · 请在「回复说明」"
                                           "「回复人」两列填写校核结果后回传本文件 (gongshu ticket import-reply)。"), note)
    wb.close()
    return buf.getvalue()
