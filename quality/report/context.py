"""One department's report as data (pure, from the loaded inputs): the context the HTML template
renders and the frames the workbook lists.

Sections: 1 header (reference number, resources, 校核 deadline), 2 scorecard (total, six
dimensions, change since the last report, rank, trend and dimension charts), 3 rule results,
4 freshness, 5 一数一源 conflicts, 6 failing records, 7 open and overdue tickets. A department
with nothing wrong gets the short version (1, 2, 3, 4 and a line saying so).

No raw identifier reaches a report: entity keys and values are masked
(:func:`quality.tickets.records.mask_key`, :func:`quality.tickets.records.value_rule`) and each entity
carries a keyed token (:func:`desensitize.pseudonym.hmac_tokens`), stable across reports for the same
key and equal to the share layer's: an ID number is masked jointly with what those outputs publish
(desensitize/linkage.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from catalog.loader import Catalogue
from catalog.models import Department
from desensitize.pseudonym import PseudonymKey, hmac_tokens
from quality.config import ScorecardConfig
from quality.freshness.calendar import city_zone
from quality.freshness.evaluate import Status
from quality.freshness.render import format_lag, local_time
from quality.report.inputs import ReportInputs
from quality.rules import Dimension, Severity
from quality.scorecard.compute import DIMENSION_COLUMN
from quality.scorecard.inputs import standing_tickets
from quality.scorecard.render import delta_text, fmt
from quality.tickets.records import RECORD_SCHEMA, mask_key, mask_value
from quality.tickets.transitions import ACTIVE, TicketKind, TicketStatus, due_date, working_days_late

HTML_TICKETS = 100  # tickets listed in the HTML; all of them are in the workbook


def report_reference(catalogue: Catalogue, department: str, day: dt.date) -> str:
    """报告编号: ``ZL-<CITY>-<DEPT>-<YYYYMMDD>``; the same for a rerun of the same date."""
    return f"ZL-{catalogue.city.city.code.upper()}-{department.upper()}-{day:%Y%m%d}"


def tokens(keys: pl.Series, key: PseudonymKey | None) -> pl.Series:
    """Keyed tokens of entity keys; null without a key and for records that have no key."""
    if key is None or keys.len() == 0:
        return pl.Series(keys.name, [None] * keys.len(), dtype=pl.String)
    usable = keys.str.starts_with("#").not_()
    return pl.select(pl.when(usable).then(hmac_tokens(keys, key)).otherwise(None)).to_series().alias(keys.name)


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
    trend: pl.DataFrame = field(default_factory=pl.DataFrame)  # the department's last scored periods
    grade_bounds: list[float] = field(default_factory=list)  # drawn as lines behind the trend

    @property
    def all_clear(self) -> bool:
        return bool(self.context["all_clear"])

    @property
    def xlsx_name(self) -> str:
        return self.context["xlsx_name"]


def _pct(evaluated: int, failed: int) -> str:
    return f"{100 * (1 - failed / evaluated):.2f}%" if evaluated else "—"


def _local(moment: dt.datetime | None, tz) -> str:
    """City time; a deadline at midnight reads as 24:00 of the day before (as the freshness summary shows it)."""
    return local_time(None if moment is None else moment.astimezone(tz))


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
    catalogue: Catalogue, code: str, inputs: ReportInputs, config: ScorecardConfig,
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
        col = DIMENSION_COLUMN[d]
        now_v = score[col] if score else None
        before = prev[col] if prev else None
        dimensions.append({"dimension": d, "name": d.value, "score": fmt(now_v), "value": now_v,
                           "previous": fmt(before), "delta": delta_text(now_v, before),
                           "weight": f"{config.dimension_weights[d]:g}"})
    score_ctx = None
    if score and score["score"] is not None:
        score_ctx = {
            "total": fmt(score["score"]), "grade": score["grade"], "delta": delta_text(score["score"],
                                                                                         prev["score"] if prev else None),
            "rank": f"{score['rank']}/{ranked}" if score["rank"] else "—", "data_score": fmt(score["data_score"]),
            "response_score": fmt(score["response_score"]), "tickets_due": score["tickets_due"],
            "tickets_on_time": score["tickets_on_time"], "tickets_overdue": score["tickets_overdue"],
        }
    resource_scores = [{"name": rname.get(r["resource_id"], r["resource_id"]), "score": fmt(r["score"]),
                        "weight": f"{r['weight']:g}" if r["weight"] is not None else "—"}
                       for r in run.filter(pl.col("level") == "resource").sort("resource_id").iter_rows(named=True)]

    # 3. rules
    rules = run.filter(pl.col("level") == "rule").sort("resource_id", "dimension", "rule_id").with_columns(
        pl.col("resource_id").replace_strict(rname, default=pl.col("resource_id")).alias("resource"))
    failing_rules = [
        {"resource": r["resource"], "label": r["label"], "dimension": r["dimension"],
         "severity": Severity(r["severity"]).label, "evaluated": f"{r['evaluated']:,}",
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
            "status": f.status.label + (f" {f.working_days_overdue} 个工作日" if f.status == Status.stale else ""),
            "stale": f.status in (Status.stale, Status.missing),
        })

    # tickets of this department (all statuses for the lookup; active ones are listed)
    in_catalogue = ((pl.col("kind") == TicketKind.record) & pl.col("resource_id").is_in([r.id for r in resources])) | (
        (pl.col("kind") == TicketKind.conflict) & pl.col("library").is_in([lib.code for lib in catalogue.libraries]))
    active = inputs.tickets.filter((pl.col("department") == code) & pl.col("status").is_in(ACTIVE) & in_catalogue)

    # 6. failing records of the latest batches, with the ticket each belongs to
    record_frames = [inputs.records[r.id] for r in resources if r.id in inputs.records]
    records = pl.concat(record_frames) if record_frames else pl.DataFrame(schema=RECORD_SCHEMA)
    record_tickets = active.filter(pl.col("kind") == TicketKind.record).select("resource_id", "entity_key", "ticket_id")
    records = records.join(record_tickets, on=["resource_id", "entity_key"], how="left")
    records = _masked_entities(records, catalogue, inputs, by_library=False)
    element_names = pl.DataFrame(
        [{"resource_id": r.id, "field": e.code, "field_name": e.name}
         for r in catalogue.resources for e in catalogue.library(r.library).elements],
        schema={"resource_id": pl.String, "field": pl.String, "field_name": pl.String})
    records = records.join(element_names, on=["resource_id", "field"], how="left").with_columns(
        pl.col("resource_id").replace_strict(rname, default=pl.col("resource_id")).alias("resource"),
        pl.col("field_name").fill_null(pl.col("field")).fill_null(pl.lit("整条记录")),
    ).sort("resource", "rule_id", "entity_key", "row_no")  # by rule, then key: the order a department works in

    # 5. conflicts: masked values, grouped by element and value pair
    conflicts = inputs.conflicts.filter(pl.col("department") == code)
    conflict_tickets = active.filter(pl.col("kind") == TicketKind.conflict).select("library", "entity_key", "ticket_id")
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
        conflicts = pl.concat(masked).sort("element", "entity_key")  # by element (the rule), then key
    else:
        conflicts = conflicts.with_columns(*[pl.lit(None, pl.String).alias(c) for c in
                                             ("value_shown", "authority_shown", "element_name", "authority_name")])
    # one row per conflict, with the ticket it is answered under and the entity's token (the same as
    # in the failing records and the share layer), and where the department delivered it
    conflict_rows = [
        {"ticket_id": r["ticket_id"] or "—", "element": r["element_name"], "authority": r["authority_name"],
         "entity": r["entity"], "token": r["token"] or "—", "value": r["value_shown"] if r["value_shown"] is not None
         else "(空)", "authority_value": r["authority_shown"] if r["authority_shown"] is not None else "(空)",
         "expected": f"与权威来源 {r['authority_name']} 一致", "batch": r["last_seen_batch"],
         "row_no": r["last_row_no"], "first_seen": str(r["first_seen_date"])}
        for r in conflicts.head(config.report_rows).iter_rows(named=True)
    ]

    # 7. tickets: masked, overdue first
    tickets = _ticket_rows(active, catalogue, inputs, rname, day)
    listed = tickets.filter(pl.col("status").is_in([TicketStatus.open, TicketStatus.overdue]))
    counts = {s: active.filter(pl.col("status") == s).height for s in ACTIVE}

    deadline = due_date(day, config.ticket_working_days)
    standing = standing_tickets(inputs.tickets.filter(pl.col("department") == code),
                                inputs.batches.select("resource_id", "batch_id"), day).height
    headline = _headline(score, dimensions, rules, freshness, records, conflicts, tickets, counts, day, config,
                         [{"name": r.name, **inputs.problems[r.id]} for r in resources if r.id in inputs.problems],
                         standing)
    all_clear = headline["all_clear"]
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
        "dimensions": dimensions, "resource_scores": resource_scores,
        "failing_rules": failing_rules, "rules_total": rules.height, "freshness": freshness,
        "conflicts": conflict_rows, "conflict_total": conflicts.height, "headline": headline,
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
        ("本期需处理", "; ".join(headline["items"]) or "无"),
        ("评分说明", "; ".join(([headline["score_line"]] if headline["score_line"] else []) + headline["reasons"]) or None),
        ("失败记录数", records.height), ("一数一源冲突数", conflicts.height),
        ("待校核工单", counts["open"]), ("超期工单", counts["overdue"]), ("已答复工单", counts["answered"]),
        ("令牌密钥编号", inputs.key.key_id if inputs.key else "未配置 (GONGSHU_PSEUDONYM_KEY)"),
    ]
    trend = inputs.history.filter((pl.col("department") == code) & pl.col("score").is_not_null())
    return DepartmentReport(dept, reference, day, context, rules, records, conflicts, tickets, freshness, summary,
                            dimensions, trend.tail(config.trend_points), list(config.grades.values()))


def _headline(score: dict | None, dimensions: list[dict], rules: pl.DataFrame, freshness: list[dict],
              records: pl.DataFrame, conflicts: pl.DataFrame, tickets: pl.DataFrame, counts: dict, day: dt.date,
              config: ScorecardConfig, problems: list[dict], standing: int) -> dict:
    """The report's first lines: every open obligation of the department (lateness, failed deliveries,
    overdue and open 校核 tickets — those of earlier reports too —, this period's failures and
    conflicts) and what lowered its score. ``all_clear`` (the green banner) only when there is none."""
    items: list[dict] = []  # {"text", "urgent"}
    for f in freshness:
        if f["stale"]:
            items.append({"text": f"「{f['resource']}」{f['status']}" + ("未更新" if "超期" in f["status"] else "")
                          + f" (更新周期 {f['cycle']}, 最近交付 {f['delivered']})", "urgent": True})
    for p in problems:
        items.append({"text": f"「{p['name']}」{p['state']}: {p['reason']}", "urgent": True})
    listed = tickets.filter(pl.col("status").is_in([TicketStatus.open, TicketStatus.overdue])) if tickets.height \
        else tickets
    if counts[TicketStatus.overdue]:
        late = listed.filter(pl.col("status") == TicketStatus.overdue)
        worst = late.get_column("days_late").max() if late.height else None
        items.append({"text": f"已超期校核工单 {counts[TicketStatus.overdue]} 件"
                      + (f" (最长超期 {worst} 个工作日)" if worst else "") + ", 已上报数据工程师", "urgent": True})
    if counts[TicketStatus.open]:
        waiting = listed.filter(pl.col("status") == TicketStatus.open)
        earlier = waiting.filter(pl.col("opened_on") < day).height
        first_due = waiting.get_column("due_date").min()
        note = f"其中 {earlier} 件为此前报告发出, " if earlier else ""
        items.append({"text": f"待校核工单 {counts[TicketStatus.open]} 件 ({note}最早期限 {first_due})",
                      "urgent": False})
    if records.height:
        n_rules = records.select("resource_id", "rule_id").unique().height
        items.append({"text": f"本期失败记录 {records.height:,} 条 (涉及 {n_rules} 条规则)", "urgent": False})
    if conflicts.height:
        items.append({"text": f"一数一源冲突 {conflicts.height:,} 处 (与权威部门的值不一致)", "urgent": False})
    if counts[TicketStatus.answered]:
        items.append({"text": f"已答复、待数据工程师复核的工单 {counts[TicketStatus.answered]} 件", "urgent": False})

    reasons: list[str] = []
    score_line = None
    if score and score["score"] is not None:
        score_line = (f"综合得分 {fmt(score['score'])} ({score['grade']}) = {config.data_weight:g} × 数据质量分 Q "
                      f"{fmt(score['data_score'])} + {config.response_weight:g} × 校核响应分 R {fmt(score['response_score'])}")
        failing = rules.filter(pl.col("failed") > 0).with_columns(
            (pl.col("failed") / pl.col("evaluated")).alias("rate")).sort("rate", descending=True)
        for d in dimensions:
            if d["value"] is None or d["value"] >= 99.95:
                continue
            mine = failing.filter(pl.col("dimension") == d["name"])
            shown = "; ".join(f"{r['resource']}「{r['label']}」{r['failed']:,}/{r['evaluated']:,} 未通过"
                              for r in mine.head(2).iter_rows(named=True))
            more = f" 等 {mine.height} 条规则" if mine.height > 2 else ""
            reasons.append(f"{d['name']} {d['score']}: {shown}{more}")
        if score["response_score"] is not None and score["response_score"] < 99.95:
            reasons.append(f"校核响应分 R {fmt(score['response_score'])}: 到期工单 {score['tickets_due']} 件, 按期处理 "
                           f"{score['tickets_on_time']} 件, 超期 {score['tickets_overdue']} 件 "
                           f"(每件超期扣 {config.overdue_penalty:g} 分)")
        if standing:
            reasons.append(f"此前报告发出、至今未校核的工单 {standing} 件, 其记录本期交付未再包含: "
                           "按失败记录计入各自规则 (数据质量分 Q)")
        if not reasons:
            reasons.append("满分: 全部规则通过, 无到期未处理的工单")
    return {"all_clear": not items, "urgent": any(i["urgent"] for i in items), "items": [i["text"] for i in items],
            "score_line": score_line, "reasons": reasons}


def _ticket_rows(active: pl.DataFrame, catalogue: Catalogue, inputs: ReportInputs, rname: dict,
                 day: dt.date) -> pl.DataFrame:
    if not active.height:
        return active.with_columns(*[pl.lit(None, pl.String).alias(c) for c in ("entity", "token", "resource")])
    parts = []
    for kind, part in active.group_by("kind", maintain_order=True):
        parts.append(_masked_entities(part, catalogue, inputs, by_library=kind[0] == TicketKind.conflict))
    out = pl.concat(parts)
    return out.with_columns(
        pl.col("resource_id").replace_strict(rname, default=pl.col("resource_id")).alias("resource"),
        pl.col("due_date").replace_strict(
            {d: working_days_late(d, day) for d in out.get_column("due_date").unique().drop_nulls().to_list()},
            default=None, return_dtype=pl.Int64).alias("days_late"),
    ).sort(pl.col("status") != TicketStatus.overdue, "due_date", "ticket_id")


def _ticket_ctx(r: dict) -> dict:
    return {
        "ticket_id": r["ticket_id"], "kind": TicketKind(r["kind"]).label, "resource": r["resource"], "entity": r["entity"],
        "problem": r["item_labels"], "opened_on": str(r["opened_on"]), "due_date": str(r["due_date"]),
        "extension": r["extension_days"] or 0, "extended_by": r["extended_by"],
        "status": TicketStatus(r["status"]).label, "overdue": r["status"] == TicketStatus.overdue, "days_late": r["days_late"],
    }
