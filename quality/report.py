"""The report each source department receives after a run (quality.md «The report a department receives»).

One per department and batch date, in Chinese: an HTML page (inline styles and tables, readable in
a mail client and a browser, charts embedded as base64 PNG) and an XLSX workbook (every rule,
failing record, conflict and ticket; the sheet 「校核工单」 doubles as the reply form that
``gongshu ticket import-reply`` reads). Written to ``$GONGSHU_HOME/reports/<date>/<dept>.html|.xlsx``
and delivered through the :class:`~quality.mail.Mailer` (SMTP or the outbox; audited).

Sections: 1 header (reference number, resources, 校核 deadline), 2 scorecard (total, six
dimensions, change since the last report, rank, trend and dimension charts), 3 rule results,
4 freshness, 5 一数一源 conflicts, 6 failing records, 7 open and overdue tickets. A department
with nothing wrong gets the short version (1, 2, 3, 4 and a line saying so).

No raw identifier reaches a report: entity keys and values are masked (:func:`quality.tickets.mask_key`,
:func:`quality.tickets.value_rule`) and each entity carries a keyed token
(:func:`desensitize.pseudonym.hmac_tokens`), stable across reports for the same key and equal to the
share layer's: an ID number is masked jointly with what those outputs publish (desensitize/linkage.py).
Text cells of the workbook are written as strings, neutralised against formula injection
(:func:`desensitize.display.spreadsheet_text`).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from jinja2 import Environment, FileSystemLoader

from catalog.loader import Catalogue
from catalog.models import Department
from desensitize.display import spreadsheet_text
from desensitize.linkage import NOTHING, Exposure
from desensitize.policy import catalogue_token_exposure
from desensitize.pseudonym import PseudonymKey, hmac_tokens
from quality import scorecard as sc
from quality.freshness import STATUS_LABEL as FRESHNESS_LABEL
from quality.freshness import Freshness, Status, city_zone, end_of_day, evaluate_catalogue, format_lag
from quality.mail import Attachment, Mailer, MailError, read_deliveries
from quality.rules import Dimension
from quality.tickets import (
    ACTIVE,
    KIND_LABEL,
    RECORD_SCHEMA,
    REPLY_SHEET,
    STATUS_LABEL,
    conflicts_open_at,
    due_date,
    failing_records,
    mask_key,
    mask_value,
    read_tickets,
    working_days_late,
)
from warehouse.std import night_problems
from warehouse.store import Warehouse

REPORT_CATEGORY = "quality_report"
ESCALATION_CATEGORY = "ticket_escalation"
SEVERITY_LABEL = {"blocking": "阻断", "warning": "警告"}
TEMPLATES = Path(__file__).parent / "templates"
XLSX_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
HTML_TICKETS = 100  # tickets listed in the HTML; all of them are in the workbook

# ASCII labels for charts when no CJK font is installed (matplotlib would draw empty boxes)
DIMENSION_ASCII = {
    Dimension.conformity: "Conformity", Dimension.completeness: "Completeness", Dimension.accuracy: "Accuracy",
    Dimension.consistency: "Consistency", Dimension.timeliness: "Timeliness", Dimension.accessibility: "Accessibility",
}
CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Sarasa Gothic SC",
             "AR PL UMing CN", "Noto Serif CJK SC")


def report_reference(catalogue: Catalogue, department: str, day: dt.date) -> str:
    """报告编号: ``ZL-<CITY>-<DEPT>-<YYYYMMDD>``; the same for a rerun of the same date."""
    return f"ZL-{catalogue.city.city.code.upper()}-{department.upper()}-{day:%Y%m%d}"


# --- inputs shared by every department's report ---------------------------------------------------------


@dataclass
class ReportInputs:
    """What every report of one period reads (loaded once)."""

    period: dt.date
    run: pl.DataFrame  # the period's latest quality.scorecard run (rule, resource, department rows)
    previous: pl.DataFrame  # each department's last result before the period
    history: pl.DataFrame  # department results per period, for the trend
    batches: pl.DataFrame  # latest batch per resource
    freshness: list[Freshness]
    tickets: pl.DataFrame
    conflicts: pl.DataFrame  # conflicts open at the end of the period
    records: dict[str, pl.DataFrame]  # failing records of each resource's latest batch
    key: PseudonymKey | None
    linked: Exposure = NOTHING  # what the share outputs joined by the reports' tokens show (linkage.py)
    problems: dict[str, dict] = field(default_factory=dict)  # resource id → its failed delivery / withheld batch


def load_inputs(wh: Warehouse, catalogue: Catalogue, day: dt.date, key: PseudonymKey | None) -> ReportInputs:
    batches = sc.latest_batches(wh, day)
    records = {}
    for r in batches.iter_rows(named=True):
        resource = next((x for x in catalogue.resources if x.id == r["resource_id"]), None)
        if resource is not None:
            records[resource.id] = failing_records(wh, catalogue, resource, r["batch_id"])
    open_conflicts, _ = conflicts_open_at(wh, catalogue, day)
    return ReportInputs(
        period=day, run=sc.latest_run(wh, day), previous=sc.previous_totals(wh, day), history=sc.history(wh, day),
        batches=batches, freshness=evaluate_catalogue(wh, catalogue, end_of_day(day, city_zone(catalogue))),
        tickets=read_tickets(wh), conflicts=open_conflicts, records=records, key=key,
        # a token joins a report row to the share outputs under the same key: their birth dates count
        linked=catalogue_token_exposure(catalogue) if key is not None else NOTHING,
        problems={r["resource_id"]: {"state": r["state"], "reason": r["reason"]}
                  for r in night_problems(wh, day).iter_rows(named=True)},
    )


def tokens(keys: pl.Series, key: PseudonymKey | None) -> pl.Series:
    """Keyed tokens of entity keys; null without a key and for records that have no key."""
    if key is None or keys.len() == 0:
        return pl.Series(keys.name, [None] * keys.len(), dtype=pl.String)
    usable = keys.str.starts_with("#").not_()
    return pl.select(pl.when(usable).then(hmac_tokens(keys, key)).otherwise(None)).to_series().alias(keys.name)


# --- one department ----------------------------------------------------------------------------------


@dataclass
class DepartmentReport:
    """Everything one report shows: ``context`` for the template, frames for the workbook."""

    department: Department
    reference: str
    period: dt.date
    context: dict
    rules: pl.DataFrame
    failures: pl.DataFrame
    conflicts: pl.DataFrame
    tickets: pl.DataFrame
    freshness: list[dict]
    summary: list[tuple[str, object]]
    dimensions: list[dict] = field(default_factory=list)

    @property
    def all_clear(self) -> bool:
        return bool(self.context["all_clear"])

    @property
    def xlsx_name(self) -> str:
        return self.context["xlsx_name"]


def _f(value: float | None) -> str:
    return sc.fmt(value)


def _pct(evaluated: int, failed: int) -> str:
    return f"{100 * (1 - failed / evaluated):.2f}%" if evaluated else "—"


def _local(moment: dt.datetime | None, tz) -> str:
    """City time; a deadline at midnight reads as 24:00 of the day before (as quality.freshness shows it)."""
    if moment is None:
        return "—"
    local = moment.astimezone(tz)
    if (local.hour, local.minute, local.second) == (0, 0, 0):
        return f"{local.date() - dt.timedelta(days=1)} 24:00"
    return f"{local:%Y-%m-%d %H:%M}"


def _masked_entities(frame: pl.DataFrame, catalogue: Catalogue, inputs: ReportInputs, *, by_library: bool) -> pl.DataFrame:
    """Add ``entity`` (masked key) and ``token`` to rows carrying a raw ``entity_key``."""
    if not frame.height:
        return frame.with_columns(pl.lit(None, pl.String).alias("entity"), pl.lit(None, pl.String).alias("token"))
    parts = []
    scope = "library" if by_library else "resource_id"
    for (value,), part in frame.group_by(scope, maintain_order=True):
        if by_library:
            lib = catalogue.library(value)
            key = lib.key
        else:
            resource = catalogue.resource(value)
            lib, key = catalogue.library(resource.library), resource.key
        parts.append(part.with_columns(mask_key(pl.col("entity_key"), lib, key, inputs.linked).alias("entity")))
    out = pl.concat(parts)
    return out.with_columns(tokens(out.get_column("entity_key"), inputs.key).alias("token"))


def build_report(
    catalogue: Catalogue, code: str, inputs: ReportInputs, config: sc.ScorecardConfig,
    issued: dt.datetime | None = None,
) -> DepartmentReport:
    """Assemble one department's report (pure, from the loaded inputs)."""
    tz = city_zone(catalogue)
    dept = catalogue.department(code)
    day = inputs.period
    reference = report_reference(catalogue, code, day)
    resources = [r for r in catalogue.resources if r.department == code]
    rname = {r.id: r.name for r in catalogue.resources}
    latest = {r["resource_id"]: r for r in inputs.batches.iter_rows(named=True)}
    run = inputs.run.filter(pl.col("department") == code)

    # 2. scorecard
    dept_row = run.filter(pl.col("level") == "department")
    score = dept_row.row(0, named=True) if dept_row.height else None
    prev_rows = inputs.previous.filter(pl.col("department") == code)
    prev = prev_rows.row(0, named=True) if prev_rows.height else None
    ranked = inputs.run.filter((pl.col("level") == "department") & pl.col("rank").is_not_null()).height
    dimensions = []
    for d in Dimension:
        col = sc.DIMENSION_COLUMN[d]
        now_v = score[col] if score else None
        before = prev[col] if prev else None
        dimensions.append({"dimension": d, "name": d.value, "score": _f(now_v), "value": now_v,
                           "previous": _f(before), "delta": sc.delta_text(now_v, before),
                           "weight": f"{config.dimension_weights[d]:g}"})
    score_ctx = None
    if score and score["score"] is not None:
        score_ctx = {
            "total": _f(score["score"]), "grade": score["grade"], "delta": sc.delta_text(score["score"],
                                                                                         prev["score"] if prev else None),
            "rank": f"{score['rank']}/{ranked}" if score["rank"] else "—", "data_score": _f(score["data_score"]),
            "response_score": _f(score["response_score"]), "tickets_due": score["tickets_due"],
            "tickets_on_time": score["tickets_on_time"], "tickets_overdue": score["tickets_overdue"],
        }
    resource_scores = [{"name": rname.get(r["resource_id"], r["resource_id"]), "score": _f(r["score"]),
                        "weight": f"{r['weight']:g}" if r["weight"] is not None else "—"}
                       for r in run.filter(pl.col("level") == "resource").sort("resource_id").iter_rows(named=True)]

    # 3. rules
    rules = run.filter(pl.col("level") == "rule").sort("resource_id", "dimension", "rule_id").with_columns(
        pl.col("resource_id").replace_strict(rname, default=pl.col("resource_id")).alias("resource"))
    failing_rules = [
        {"resource": r["resource"], "label": r["label"], "dimension": r["dimension"],
         "severity": SEVERITY_LABEL.get(r["severity"], r["severity"]), "evaluated": f"{r['evaluated']:,}",
         "failed": f"{r['failed']:,}", "pass_rate": _pct(r["evaluated"], r["failed"])}
        for r in rules.filter(pl.col("failed") > 0).iter_rows(named=True)
    ]

    # 4. freshness
    freshness = []
    for f in inputs.freshness:
        if f.resource.department != code:
            continue
        freshness.append({
            "resource": f.resource.name, "cycle": f.resource.update_cycle.value, "delivered": _local(f.delivered_at, tz),
            "due": _local(f.window.due, tz) if f.window else "—",
            "deadline": _local(f.window.deadline, tz) if f.window else "—", "lag": format_lag(f.lag),
            "status": FRESHNESS_LABEL[f.status] + (f" {f.working_days_overdue} 个工作日"
                                                   if f.status == Status.stale else ""),
            "stale": f.status in (Status.stale, Status.missing),
        })

    # tickets of this department (all statuses for the lookup; active ones are listed)
    in_catalogue = ((pl.col("kind") == "record") & pl.col("resource_id").is_in([r.id for r in resources])) | (
        (pl.col("kind") == "conflict") & pl.col("library").is_in([lib.code for lib in catalogue.libraries]))
    active = inputs.tickets.filter((pl.col("department") == code) & pl.col("status").is_in(ACTIVE) & in_catalogue)

    # 6. failing records of the latest batches, with the ticket each belongs to
    record_frames = [inputs.records[r.id] for r in resources if r.id in inputs.records]
    records = pl.concat(record_frames) if record_frames else pl.DataFrame(schema=RECORD_SCHEMA)
    record_tickets = active.filter(pl.col("kind") == "record").select("resource_id", "entity_key", "ticket_id")
    records = records.join(record_tickets, on=["resource_id", "entity_key"], how="left")
    records = _masked_entities(records, catalogue, inputs, by_library=False)
    element_names = pl.DataFrame(
        [{"resource_id": r.id, "field": e.code, "field_name": e.name}
         for r in catalogue.resources for e in catalogue.library(r.library).elements],
        schema={"resource_id": pl.String, "field": pl.String, "field_name": pl.String})
    records = records.join(element_names, on=["resource_id", "field"], how="left").with_columns(
        pl.col("resource_id").replace_strict(rname, default=pl.col("resource_id")).alias("resource"),
        pl.col("field_name").fill_null(pl.col("field")).fill_null(pl.lit("整条记录")),
    ).sort("resource_id", "row_no", "rule_id")

    # 5. conflicts: masked values, grouped by element and value pair
    conflicts = inputs.conflicts.filter(pl.col("department") == code)
    conflict_tickets = active.filter(pl.col("kind") == "conflict").select("library", "entity_key", "ticket_id")
    conflicts = conflicts.join(conflict_tickets, on=["library", "entity_key"], how="left")
    conflicts = _masked_entities(conflicts, catalogue, inputs, by_library=True)
    if conflicts.height:
        masked = []
        for (lib_code, element), part in conflicts.group_by("library", "element", maintain_order=True):
            e = catalogue.library(lib_code).element(element)
            auth = catalogue.authority(lib_code, element)
            masked.append(part.with_columns(
                mask_value(pl.col("value"), e).alias("value_shown"),
                mask_value(pl.col("authority_value"), e).alias("authority_shown"),
                pl.lit(e.name).alias("element_name"),
                pl.lit(catalogue.department(auth).name if isinstance(auth, str) else "按证照类型").alias("authority_name"),
            ))
        conflicts = pl.concat(masked).sort("element", "entity_key")
    else:
        conflicts = conflicts.with_columns(*[pl.lit(None, pl.String).alias(c) for c in
                                             ("value_shown", "authority_shown", "element_name", "authority_name")])
    conflict_groups = [
        {"element": r["element_name"], "authority": r["authority_name"], "value": r["value_shown"],
         "authority_value": r["authority_shown"], "count": r["len"]}
        for r in conflicts.group_by("element_name", "authority_name", "value_shown", "authority_shown").len()
        .sort(["len", "element_name"], descending=[True, False]).iter_rows(named=True)
    ]

    # 7. tickets: masked, overdue first
    tickets = _ticket_rows(active, catalogue, inputs, rname, day)
    listed = tickets.filter(pl.col("status").is_in(["open", "overdue"]))
    counts = {s: active.filter(pl.col("status") == s).height for s in ACTIVE}

    deadline = due_date(day, config.ticket_working_days)
    all_clear = not records.height and not conflicts.height and not active.height
    charts = render_charts(inputs.history.filter(pl.col("department") == code), score, dimensions, config)
    xlsx_name = f"{dept.name}_数据质量报告_{day:%Y%m%d}.xlsx"
    issued = issued or dt.datetime.now(dt.UTC)
    context = {
        "city_name": catalogue.city.city.name, "department_name": dept.name, "reference": reference,
        "period": str(day), "issued": _local(issued if issued.tzinfo else issued.replace(tzinfo=dt.UTC), tz),
        "resources": [{"name": r.name, "id": r.id, "batch_id": latest.get(r.id, {}).get("batch_id"),
                       **inputs.problems.get(r.id, {})} for r in resources],
        "deadline": str(deadline), "working_days": config.ticket_working_days,
        "max_extension": config.max_extension_working_days, "all_clear": all_clear, "score": score_ctx,
        "formula": {"data_weight": f"{config.data_weight:g}", "response_weight": f"{config.response_weight:g}",
                    "base_weight": f"{config.base_resource_weight:g}", "penalty": f"{config.overdue_penalty:g}"},
        "dimensions": dimensions, "resource_scores": resource_scores, "charts": charts,
        "failing_rules": failing_rules, "rules_total": rules.height, "freshness": freshness,
        "conflict_groups": conflict_groups, "conflict_total": conflicts.height,
        "failures": [
            {"ticket_id": r["ticket_id"] or "—", "resource": r["resource"], "entity": r["entity"],
             "token": r["token"] or "—", "field": r["field_name"], "label": r["label"],
             "value": r["value_masked"] if r["value_masked"] is not None else "(空)", "expected": r["expected"] or ""}
            for r in records.head(config.report_rows).iter_rows(named=True)
        ],
        "failure_total": records.height,
        "tickets": [_ticket_ctx(r) for r in listed.head(HTML_TICKETS).iter_rows(named=True)],
        "tickets_hidden": max(0, listed.height - HTML_TICKETS), "ticket_counts": counts,
        "key_id": inputs.key.key_id if inputs.key else None, "timezone": tz.key, "xlsx_name": xlsx_name,
    }
    summary = [
        ("数源部门", dept.name), ("报告编号", reference), ("统计期(批次日期截至)", str(day)),
        ("覆盖资源", "、".join(r.name for r in resources) or "无"), ("校核期限", str(deadline)),
        ("综合得分", round(score["score"], 2) if score and score["score"] is not None else None),
        ("等级", score["grade"] if score else None),
        ("排名", score_ctx["rank"] if score_ctx else None),
        ("较上期", score_ctx["delta"] if score_ctx else None),
        ("数据质量分 Q", round(score["data_score"], 2) if score and score["data_score"] is not None else None),
        ("校核响应分 R", round(score["response_score"], 2) if score else None),
        ("失败记录数", records.height), ("一数一源冲突数", conflicts.height),
        ("待校核工单", counts["open"]), ("超期工单", counts["overdue"]), ("已答复工单", counts["answered"]),
        ("令牌密钥编号", inputs.key.key_id if inputs.key else "未配置 (GONGSHU_PSEUDONYM_KEY)"),
    ]
    return DepartmentReport(dept, reference, day, context, rules, records, conflicts, tickets, freshness, summary,
                            dimensions)


def _ticket_rows(active: pl.DataFrame, catalogue: Catalogue, inputs: ReportInputs, rname: dict,
                 day: dt.date) -> pl.DataFrame:
    if not active.height:
        return active.with_columns(*[pl.lit(None, pl.String).alias(c) for c in ("entity", "token", "resource")])
    parts = []
    for kind, part in active.group_by("kind", maintain_order=True):
        parts.append(_masked_entities(part, catalogue, inputs, by_library=kind[0] == "conflict"))
    out = pl.concat(parts)
    return out.with_columns(
        pl.col("resource_id").replace_strict(rname, default=pl.col("resource_id")).alias("resource"),
        pl.col("due_date").replace_strict(
            {d: working_days_late(d, day) for d in out.get_column("due_date").unique().drop_nulls().to_list()},
            default=None, return_dtype=pl.Int64).alias("days_late"),
    ).sort(pl.col("status") != "overdue", "due_date", "ticket_id")


def _ticket_ctx(r: dict) -> dict:
    return {
        "ticket_id": r["ticket_id"], "kind": KIND_LABEL[r["kind"]], "resource": r["resource"], "entity": r["entity"],
        "problem": r["item_labels"], "opened_on": str(r["opened_on"]), "due_date": str(r["due_date"]),
        "extension": r["extension_days"] or 0, "extended_by": r["extended_by"],
        "status": STATUS_LABEL[r["status"]], "overdue": r["status"] == "overdue", "days_late": r["days_late"],
    }


# --- charts ------------------------------------------------------------------------------------------


def cjk_font() -> str | None:
    """A CJK-capable font matplotlib can use, if one is installed."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_charts(history: pl.DataFrame, score: dict | None, dimensions: list[dict],
                  config: sc.ScorecardConfig) -> list[dict]:
    """Score trend and pass rate by dimension as base64 PNGs (Chinese labels if a CJK font exists)."""
    from matplotlib.figure import Figure

    if score is None or score["score"] is None:
        return []
    font = cjk_font()
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}
    import matplotlib

    charts = []
    with matplotlib.rc_context(rc):
        points = history.filter(pl.col("score").is_not_null()).tail(config.trend_points)
        fig = Figure(figsize=(6.4, 2.4))
        ax = fig.add_subplot()
        xs = [d.strftime("%m-%d") for d in points.get_column("period").to_list()]
        ax.plot(xs, points.get_column("score").to_list(), marker="o", color="#2a5d9f",
                label="综合得分" if font else "Total")
        ax.plot(xs, points.get_column("data_score").to_list(), marker=".", linestyle="--", color="#8aa7cc",
                label="数据质量分 Q" if font else "Data score Q")
        for bound in config.grades.values():
            ax.axhline(bound, color="#dddddd", linewidth=0.8, zorder=0)
        ax.set_ylim(max(0, min([60.0, *[v for v in points.get_column("score").to_list() if v is not None]]) - 5), 101)
        ax.set_title("综合得分趋势" if font else "Score trend", fontsize=10)
        ax.set_xlabel("批次日期" if font else "Batch date", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="lower left")
        charts.append({"png": _png(fig), "alt": "综合得分趋势", "width": 640})

        fig = Figure(figsize=(6.4, 2.4))
        ax = fig.add_subplot()
        names = [d["name"] if font else DIMENSION_ASCII[d["dimension"]] for d in dimensions]
        values = [d["value"] if d["value"] is not None else 0.0 for d in dimensions]
        colors = ["#2a5d9f" if d["value"] is not None else "#cccccc" for d in dimensions]
        bars = ax.barh(names, values, color=colors)
        for bar, d in zip(bars, dimensions, strict=True):
            text = f"{d['value']:.1f}" if d["value"] is not None else ("无规则" if font else "n/a")
            ax.text(min(bar.get_width(), 100) + 1, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7)
        ax.set_xlim(0, 112)
        ax.invert_yaxis()
        ax.set_title("各维度得分" if font else "Score by dimension (GB/T 36344)", fontsize=10)
        ax.tick_params(labelsize=8)
        charts.append({"png": _png(fig), "alt": "各维度得分", "width": 640})
    return charts


# --- rendering ---------------------------------------------------------------------------------------

_ENV = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True)


def render_html(report: DepartmentReport) -> str:
    return _ENV.get_template("department_report.html.j2").render(r=report.context)


def render_xlsx(report: DepartmentReport) -> bytes:
    """The workbook: 概况, 规则结果, 时效, 一数一源冲突, 失败记录, 校核工单 (the reply form)."""
    import xlsxwriter

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
          [[r["resource"], r["rule_id"], r["label"], r["dimension"], SEVERITY_LABEL.get(r["severity"], r["severity"]),
            r["evaluated"], r["failed"], (1 - r["failed"] / r["evaluated"]) if r["evaluated"] else None,
            round(r["score"], 2) if r["score"] is not None else None]
           for r in report.rules.iter_rows(named=True)],
          [18, 24, 44, 8, 8, 10, 8, 10, 8], formats={7: pct, 8: num})
    sheet("时效", ["资源", "更新周期", "最近交付", "应交付时间", "超期时点", "滞后", "状态"],
          [[f["resource"], f["cycle"], f["delivered"], f["due"], f["deadline"], f["lag"], f["status"]]
           for f in report.freshness], [24, 8, 17, 17, 17, 14, 18])
    sheet("一数一源冲突", ["校核单号", "数据项", "权威部门", "主体标识(脱敏)", "令牌", "本部门值(脱敏)", "权威值(脱敏)",
                        "首次发现", "最近发现", "发现次数", "最近批次"],
          [[r["ticket_id"], r["element_name"], r["authority_name"], r["entity"], r["token"], r["value_shown"],
            r["authority_shown"], str(r["first_seen_date"]), str(r["last_seen_date"]), r["times_seen"],
            r["last_seen_batch"]] for r in report.conflicts.iter_rows(named=True)],
          [24, 12, 14, 22, 28, 18, 18, 11, 11, 8, 26])
    sheet("失败记录", ["校核单号", "资源", "主体标识(脱敏)", "令牌", "数据项", "规则编号", "规则", "维度", "严重程度",
                    "发现值(脱敏)", "期望", "批次", "行号"],
          [[r["ticket_id"], r["resource"], r["entity"], r["token"], r["field_name"], r["rule_id"], r["label"],
            r["dimension"], SEVERITY_LABEL.get(r["severity"], r["severity"]), r["value_masked"], r["expected"],
            r["batch_id"], r["row_no"]] for r in report.failures.iter_rows(named=True)],
          [24, 16, 22, 28, 12, 22, 30, 8, 8, 18, 24, 26, 6])
    ws = sheet(REPLY_SHEET, ["校核单号", "类型", "资源", "主体标识(脱敏)", "令牌", "问题", "发出日期", "校核期限",
                             "状态", "超期工作日", "已延期(工作日)", "延期批准人", "回复说明", "回复人"],
               [[r["ticket_id"], KIND_LABEL[r["kind"]], r["resource"], r["entity"], r["token"], r["item_labels"],
                 str(r["opened_on"]), str(r["due_date"]), STATUS_LABEL[r["status"]],
                 r["days_late"] if r["status"] == "overdue" else 0, r["extension_days"] or 0, r["extended_by"],
                 None, None] for r in report.tickets.iter_rows(named=True)],
               [24, 12, 16, 22, 28, 36, 11, 11, 8, 10, 12, 12, 40, 12], start=2, formats={12: reply, 13: reply})
    ws.write_string(0, 0, spreadsheet_text(f"{report.department.name} · 报告编号 {report.reference} · 请在「回复说明」"
                                           "「回复人」两列填写校核结果后回传本文件 (gongshu ticket import-reply)。"), note)
    wb.close()
    return buf.getvalue()


# --- writing and delivery ------------------------------------------------------------------------------


@dataclass
class ReportOutcome:
    department: str
    reference: str
    html: Path
    xlsx: Path
    total: float | None
    grade: str | None
    failures: int
    conflicts: int
    open: int
    overdue: int
    delivery: str  # sent (smtp/outbox) | already sent | no recipients | not sent | failed: …


def write_files(report: DepartmentReport, html: str, xlsx: bytes, root: Path) -> tuple[Path, Path]:
    """``<root>/<date>/<dept>.html|.xlsx`` (root: ``$GONGSHU_HOME/reports``)."""
    folder = root / report.period.isoformat()
    folder.mkdir(parents=True, exist_ok=True)
    paths = folder / f"{report.department.code}.html", folder / f"{report.department.code}.xlsx"
    for path, data in zip(paths, (html.encode("utf-8"), xlsx), strict=True):
        tmp = path.with_suffix(path.suffix + ".tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a report
    return paths


def _already_sent(wh: Warehouse, category: str, reference: str) -> bool:
    sent = read_deliveries(wh, category)
    return sent.filter((pl.col("reference") == reference) & (pl.col("status") == "sent")).height > 0


def subject(report: DepartmentReport) -> str:
    s = report.context["score"]
    score = f"综合得分 {s['total']} ({s['grade']})" if s else "无评分"
    flag = "" if report.all_clear else f" · 待校核 {report.context['ticket_counts']['open']} 件"
    if report.context["ticket_counts"]["overdue"]:
        flag += f" · 超期 {report.context['ticket_counts']['overdue']} 件"
    return f"【数据质量报告】{report.department.name} {report.period} {score}{flag} ({report.reference})"


def deliver(wh: Warehouse, mailer: Mailer, report: DepartmentReport, html: str, xlsx: bytes, *,
            resend: bool = False, engineers: Sequence[str] = ()) -> str:
    """Mail one report (XLSX attached unless there is nothing to list); once per reference unless ``resend``.
    A department without an address in the catalogue: to the data ``engineers``."""
    if not resend and _already_sent(wh, REPORT_CATEGORY, report.reference):
        return "already sent"
    to = list(report.department.emails) or list(engineers)
    if not to:
        return "no recipients"
    attachments = [] if report.all_clear else [Attachment(report.xlsx_name, xlsx, XLSX_MIME)]
    try:
        record = mailer.send(to, subject(report), html, attachments, category=REPORT_CATEGORY,
                             reference=report.reference)
    except MailError as exc:
        return f"failed: {exc}"
    return f"sent ({record.transport})"


def escalation_mail(catalogue: Catalogue, day: dt.date, tickets: pl.DataFrame) -> tuple[str, str]:
    """Subject and HTML of the notice to the data engineers about newly overdue tickets."""
    env = Environment(autoescape=True)
    depts = {d.code: d.name for d in catalogue.departments}
    rows = [{"id": r["ticket_id"], "dept": depts.get(r["department"], r["department"]), "kind": KIND_LABEL[r["kind"]],
             "problem": r["item_labels"], "opened": r["opened_on"], "due": r["due_date"]}
            for r in tickets.sort("department", "ticket_id").iter_rows(named=True)]
    html = env.from_string(
        "<html><body style=\"font-family:sans-serif\"><p>以下 {{ rows|length }} 件校核工单已超过校核期限仍未答复或更正"
        "(截至批次日期 {{ day }}), 请跟进:</p><table border=\"1\" cellspacing=\"0\" cellpadding=\"4\">"
        "<tr><th>校核单号</th><th>部门</th><th>类型</th><th>问题</th><th>发出日期</th><th>校核期限</th></tr>"
        "{% for r in rows %}<tr><td>{{ r.id }}</td><td>{{ r.dept }}</td><td>{{ r.kind }}</td><td>{{ r.problem }}</td>"
        "<td>{{ r.opened }}</td><td>{{ r.due }}</td></tr>{% endfor %}</table>"
        "<p style=\"color:#666\">延期: gongshu ticket extend ID --days N --approved-by 批准人</p></body></html>"
    ).render(rows=rows, day=day)
    return f"【校核超期】{len(rows)} 件校核工单超期未处理 (批次日期 {day})", html


@dataclass
class ReportRun:
    period: dt.date
    outcomes: list[ReportOutcome]
    escalated: int
    escalation: str  # delivery status of the engineers' notice


def produce_reports(
    wh: Warehouse, catalogue: Catalogue, day: dt.date, config: sc.ScorecardConfig, *,
    mailer: Mailer | None = None, key: PseudonymKey | None = None, send: bool = True, resend: bool = False,
    root: Path, engineers: Sequence[str] = (), issued: dt.datetime | None = None,
) -> ReportRun:
    """Render, write (under ``root``) and (if ``send``) mail every department's report for ``day``; escalate
    newly overdue tickets to the data ``engineers`` (``GONGSHU_ENGINEER_EMAILS``). Needs the period's
    scorecard (:func:`quality.scorecard.run_scorecard`)."""
    inputs = load_inputs(wh, catalogue, day, key)
    outcomes = []
    for dept in catalogue.departments:
        report = build_report(catalogue, dept.code, inputs, config, issued)
        html, xlsx = render_html(report), render_xlsx(report)
        html_path, xlsx_path = write_files(report, html, xlsx, root)
        status = deliver(wh, mailer, report, html, xlsx, resend=resend, engineers=engineers) \
            if send and mailer else "not sent"
        s = report.context["score"]
        counts = report.context["ticket_counts"]
        outcomes.append(ReportOutcome(dept.code, report.reference, html_path, xlsx_path,
                                      float(s["total"]) if s else None, s["grade"] if s else None,
                                      report.failures.height, report.conflicts.height, counts["open"],
                                      counts["overdue"], status))
    escalated = inputs.tickets.filter((pl.col("escalated_on") == day) & (pl.col("status") == "overdue"))
    escalation = "none"
    if escalated.height:
        reference = f"escalation-{catalogue.city.city.code}-{day:%Y%m%d}"
        to = list(engineers)
        if not (send and mailer):
            escalation = "not sent"
        elif not to:
            escalation = "no recipients (GONGSHU_ENGINEER_EMAILS)"
        elif not resend and _already_sent(wh, ESCALATION_CATEGORY, reference):
            escalation = "already sent"
        else:
            subj, body = escalation_mail(catalogue, day, escalated)
            try:
                escalation = f"sent ({mailer.send(to, subj, body, category=ESCALATION_CATEGORY, reference=reference).transport})"
            except MailError as exc:
                escalation = f"failed: {exc}"
    return ReportRun(day, outcomes, escalated.height, escalation)


DELIVERY_LABEL = {"already sent": "此前已发送", "no recipients": "无收件人", "not sent": "未发送"}


def delivery_label(status: str) -> str:
    if status.startswith("sent"):
        return "已发送" + ("(发件箱)" if "outbox" in status else "(SMTP)")
    if status.startswith("failed"):
        return "发送失败"
    return DELIVERY_LABEL.get(status, status)


def outcome_lines(run: ReportRun, catalogue: Catalogue) -> list[str]:
    """Lines for the run summary and the CLI: one per department report."""
    if not run.outcomes:
        return []
    folder = run.outcomes[0].html.parent
    lines = ["", f"部门质量报告 · 批次日期 {run.period} · {folder.resolve()}"]
    for o in run.outcomes:
        name = catalogue.department(o.department).name
        score = f"{o.total:.1f} {o.grade}" if o.total is not None else "无评分"
        lines.append(f"  {name:<12}{score:>9}  失败记录 {o.failures:>5}  冲突 {o.conflicts:>4}  待校核 {o.open:>4}  "
                     f"超期 {o.overdue:>3}  {o.html.name}, {o.xlsx.name}  {delivery_label(o.delivery)}")
    if run.escalated:
        lines.append(f"  超期工单 {run.escalated} 件已上报数据工程师: {delivery_label(run.escalation)}")
    return lines


def report_lines(wh: Warehouse, catalogue: Catalogue, day: dt.date, root: Path) -> list[str]:
    """The reports written for ``day`` under ``root`` (files on disk, scores stored, deliveries audited),
    for the summary."""
    folder = root / day.isoformat()
    if not folder.exists():
        return []
    run = sc.latest_run(wh, day).filter(pl.col("level") == "department")
    scores = {r["department"]: r for r in run.iter_rows(named=True)}
    tickets = read_tickets(wh).filter(pl.col("opened_on") <= day)
    still = pl.col("resolved_on").is_null() | (pl.col("resolved_on") > day)
    open_at = tickets.filter(still).group_by("department").agg(
        pl.len().alias("open"), (pl.col("due_date") <= day).sum().alias("overdue"))
    counts = {r["department"]: r for r in open_at.iter_rows(named=True)}
    sent = read_deliveries(wh, REPORT_CATEGORY)
    lines = ["", f"部门质量报告 · 批次日期 {day} · {folder.resolve()}"]
    for dept in catalogue.departments:
        html = folder / f"{dept.code}.html"
        if not html.exists():
            continue
        s = scores.get(dept.code)
        score = f"{s['score']:.1f} {s['grade']}" if s and s["score"] is not None else "无评分"
        ref = report_reference(catalogue, dept.code, day)
        mine = sent.filter(pl.col("reference") == ref)
        status = "未发送" if not mine.height else delivery_label(
            f"{mine.get_column('status')[-1]} ({mine.get_column('transport')[-1]})")
        c = counts.get(dept.code, {"open": 0, "overdue": 0})
        lines.append(f"  {dept.name:<12}{score:>9}  未结工单 {c['open']:>4}  超期 {c['overdue']:>3}  "
                     f"{html.name}, {dept.code}.xlsx  {status}")
    return lines


# --- Dagster -------------------------------------------------------------------------------------------



