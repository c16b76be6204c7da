"""What a period's scorecard is computed from: the rule counts of each resource's latest batch and
the ticket counts of each department.

Rule inputs come from what the pipeline stored for each resource's latest batch up to the period
(``quality.rule_results``), plus rules the row checks do not cover: 可访问性 (records readable:
not unparseable, no undecodable bytes), 规范性 (dates and numbers parse), 时效性 (the freshness
rule, judged at the end of the period), 一致性 (一数一源 copies equal the authority; 关联数据
references exist with the same name). The response score R counts the 校核 tickets, synced before
the scorecard by the ``quality/tickets`` asset.

Open tickets count in Q too (:func:`open_ticket_counts`): a record or conflict whose ticket is still
open or overdue at the end of the period, and which the resource's latest batch did not carry again
(an incremental delivery without that row), is a failure that still stands. It counts as a failing
record of each rule its ticket names, as if delivered again unchanged — so a department with 200
open tickets does not score 100 because its latest delivery happened not to repeat those rows.
"""

from __future__ import annotations

import datetime as dt

import polars as pl

from catalog.loader import Catalogue
from quality.conflicts import RATES_SCHEMA, date_rates, rated_dates, read_rates
from quality.consistency import copies, referential
from quality.freshness.calendar import city_zone, end_of_day
from quality.freshness.evaluate import Status
from quality.freshness.store import evaluate_catalogue
from quality.references import read_references_on
from quality.rules import Dimension, Severity, resource_rules
from quality.scorecard.compute import RESPONSE_SCHEMA, RULE_INPUT_SCHEMA
from quality.tickets.store import read_tickets
from quality.tickets.transitions import TicketKind
from warehouse.std import reconciliation_for
from warehouse.store import Warehouse

READABLE_REASONS = ("unparseable", "wrong_encoding", "bad_encoding", "nul_byte", "formula_no_value")
PARSE_REASONS = ("bad_date", "bad_number")
READABLE_LABEL = "记录可按目录格式读取(无法解析或含乱码的记录)"
PARSE_LABEL = "日期与数值可按目录格式解析"


def _resource_of_batch(batch_id: pl.Expr) -> pl.Expr:
    """``<dept>_<resource>.<YYYYMMDD>.<seq>`` → ``<dept>_<resource>``."""
    return batch_id.str.replace(r"\.\d{8}\.\d+$", "")


def _in_params(values: list[str], prefix: str = "b") -> tuple[str, dict]:
    names = {f"{prefix}{i}": v for i, v in enumerate(values)}
    return ", ".join(f":{n}" for n in names), names


def latest_batches(wh: Warehouse, day: dt.date) -> pl.DataFrame:
    """Each resource's newest standardised batch with a batch date up to ``day``."""
    return reconciliation_for(wh, day)


def stored_rule_counts(wh: Warehouse, batches: pl.DataFrame) -> pl.DataFrame:
    """The row rules of each batch, from its most recent standardisation run."""
    ids = batches.get_column("batch_id").to_list() if batches.height else []
    if not ids or not wh.exists("quality", "rule_results"):
        return pl.DataFrame(schema=RULE_INPUT_SCHEMA)
    clause, params = _in_params(ids)
    schema = {**{k: v for k, v in RULE_INPUT_SCHEMA.items()}, "checked_at": pl.Datetime("us")}
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT department, resource_id, batch_id, rule_id, label, dimension, severity, "
                              f"evaluated, failed, checked_at FROM {wh.qualified('quality', 'rule_results')} "
                              f"WHERE batch_id IN ({clause})", schema, params)
    last = pl.col("checked_at") == pl.col("checked_at").max().over("batch_id")
    return frame.filter(last).drop("checked_at").unique(["batch_id", "rule_id"], keep="last")


def delivery_rule_counts(wh: Warehouse, catalogue: Catalogue, batches: pl.DataFrame) -> pl.DataFrame:
    """可访问性 (records readable) and 规范性 (dates and numbers parse) from the quarantine."""
    if not batches.height:
        return pl.DataFrame(schema=RULE_INPUT_SCHEMA)
    ids = batches.get_column("batch_id").to_list()
    q_schema = {"batch_id": pl.String(), "row_no": pl.Int64(), "reason_code": pl.String()}
    frame = pl.DataFrame(schema=q_schema)
    if wh.exists("quality", "quarantine"):
        clause, params = _in_params(ids)
        reasons, rparams = _in_params(list(READABLE_REASONS + PARSE_REASONS), "r")
        with wh.engine.connect() as conn:
            frame = wh.read(conn, f"SELECT batch_id, row_no, reason_code FROM {wh.qualified('quality', 'quarantine')} "
                                  f"WHERE batch_id IN ({clause}) AND reason_code IN ({reasons})",
                            q_schema, {**params, **rparams})
    unreadable = frame.filter(pl.col("reason_code").is_in(READABLE_REASONS)).group_by("batch_id").agg(
        pl.col("row_no").n_unique().alias("n"))
    unparsed = frame.filter(pl.col("reason_code").is_in(PARSE_REASONS)).group_by("batch_id").agg(
        pl.col("row_no").n_unique().alias("n"))
    bad = {r["batch_id"]: r["n"] for r in unreadable.iter_rows(named=True)}
    parse = {r["batch_id"]: r["n"] for r in unparsed.iter_rows(named=True)}
    dept = {r.id: r.department for r in catalogue.resources}
    rows = []
    for b in batches.iter_rows(named=True):
        rid, delivered = b["resource_id"], int(b["rows_delivered"])
        readable = delivered - bad.get(b["batch_id"], 0)
        common = {"department": dept.get(rid), "resource_id": rid, "batch_id": b["batch_id"]}
        rows.append({**common, "rule_id": "delivery.readable", "label": READABLE_LABEL,
                     "dimension": Dimension.accessibility.value, "severity": Severity.blocking.value,
                     "evaluated": delivered, "failed": bad.get(b["batch_id"], 0)})
        rows.append({**common, "rule_id": "delivery.parse", "label": PARSE_LABEL,
                     "dimension": Dimension.conformity.value, "severity": Severity.warning.value,
                     "evaluated": readable, "failed": parse.get(b["batch_id"], 0)})
    return pl.DataFrame([r for r in rows if r["department"]], schema=RULE_INPUT_SCHEMA)


def timeliness_rule_counts(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> pl.DataFrame:
    """时效性: one rule per resource, failed when it is stale (or never delivered) at the end of ``day``."""
    as_of = end_of_day(day, city_zone(catalogue))
    rows = []
    for f in evaluate_catalogue(wh, catalogue, as_of):
        if f.status == Status.unset:
            continue  # 其他 without a limit: nothing to judge
        r = f.resource
        rows.append({"department": r.department, "resource_id": r.id, "batch_id": f.last.batch_id if f.last else None,
                     "rule_id": "delivery.timely", "label": f"按更新周期({r.update_cycle.value})及时交付 ({f.allowance})",
                     "dimension": Dimension.timeliness.value, "severity": Severity.blocking.value, "evaluated": 1,
                     "failed": int(f.status in (Status.stale, Status.missing))})
    return pl.DataFrame(rows, schema=RULE_INPUT_SCHEMA)


def _authority_name(catalogue: Catalogue, library: str, element: str) -> str:
    auth = catalogue.authority(library, element)
    return catalogue.department(auth).name if isinstance(auth, str) else "权威部门"


def copy_rates(wh: Warehouse, catalogue: Catalogue, batches: pl.DataFrame) -> pl.DataFrame:
    """The 一数一源 rates (``quality.conflicts.RATES_SCHEMA``) of ``batches`` (resource_id, batch_id,
    batch_date): what the check of each batch's date stored when it compared the copies merged that day
    with the authority's values of that day (a batch that was not merged — withheld, or superseded by a
    later one of its date — has none). A date checked before rates were stored has them computed the
    same way, a slice of entities at a time, and not stored."""
    copying = {r.id: r.library for r in catalogue.resources if copies(catalogue, r)}
    wanted = batches.filter(pl.col("resource_id").is_in(list(copying))).with_columns(
        pl.col("resource_id").replace_strict(copying).alias("library"))
    stored = read_rates(wh, wanted.get_column("batch_id").to_list())
    rated = rated_dates(wh)
    computed = []
    for (library, day), part in wanted.group_by("library", "batch_date", maintain_order=True):
        if (library, day) not in rated and wh.exists("base", library):
            rates = date_rates(wh, catalogue, library, day)
            computed.append(rates.filter(pl.col("batch_id").is_in(part.get_column("batch_id").to_list()))
                            .with_columns(pl.lit(day).alias("batch_date")).select(list(RATES_SCHEMA)))
    return pl.concat([stored, *computed]) if computed else stored


def consistency_rule_counts(wh: Warehouse, catalogue: Catalogue, batches: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """一致性: each copied element of each resource's latest batch against the authority's value of that
    batch's date (:func:`copy_rates`), and each 关联数据 reference of a library as it stood on ``day``,
    attributed to the resource that supplied the value. Neither depends on what was merged after: the
    scorecard of a date is the same whenever it is computed and whatever order dates ran in."""
    latest = {r["resource_id"]: r["batch_id"] for r in batches.iter_rows(named=True)}
    by_id = {r.id: r for r in catalogue.resources}
    rows: list[dict] = []
    for r in copy_rates(wh, catalogue, batches).sort("resource_id", "element").iter_rows(named=True):
        resource = by_id[r["resource_id"]]
        name = _authority_name(catalogue, r["library"], r["element"])
        rows.append({
            "department": resource.department, "resource_id": resource.id, "batch_id": r["batch_id"],
            "rule_id": f"{r['element']}.authority",
            "label": f"{catalogue.library(r['library']).element(r['element']).name}: 与权威部门({name})一致",
            "dimension": Dimension.consistency.value, "severity": Severity.warning.value,
            "evaluated": r["compared"], "failed": r["compared"] - r["matched"],
        })
    for lib in catalogue.libraries:
        needed = {lib.code} | {t.library for ref in lib.references for t in ref.targets}
        if not lib.references or not all(wh.exists("base", code) for code in needed):
            continue
        with wh.engine.connect() as conn:
            frames, empty = read_references_on(wh, conn, catalogue, lib, day)
        failures, _ = referential(catalogue, lib, frames[lib.code], frames, empty=empty)
        for ref in lib.references:
            lineage = f"{ref.element}__batch"
            value = pl.col(ref.element)
            checked = frames[lib.code].filter(value.is_not_null())
            if ref.local_only:
                checked = checked.filter(value.str.slice(0, 6).is_in(catalogue.city.city.region_codes))
            if lineage not in checked.columns:
                continue
            evaluated = checked.group_by(_resource_of_batch(pl.col(lineage)).alias("resource_id")).len()
            failed = failures.filter(pl.col("element") == ref.element).group_by(
                _resource_of_batch(pl.col("source_batch")).alias("resource_id")).agg(
                pl.col("entity_key").n_unique().alias("failed"))
            counts = evaluated.join(failed, on="resource_id", how="left").fill_null(0)
            for r in counts.iter_rows(named=True):
                resource = by_id.get(r["resource_id"])
                if resource is None:
                    continue
                rows.append({
                    "department": resource.department, "resource_id": resource.id,
                    "batch_id": latest.get(resource.id), "rule_id": f"{ref.element}.reference",
                    "label": f"{lib.element(ref.element).name}: 关联数据存在且名称一致",
                    "dimension": Dimension.consistency.value, "severity": Severity.warning.value,
                    "evaluated": r["len"], "failed": r["failed"],
                })
    return pl.DataFrame(rows, schema=RULE_INPUT_SCHEMA)


def rule_labels(catalogue: Catalogue) -> pl.DataFrame:
    """(resource_id, rule_id, label, dimension, severity) of every rule a ticket can name: the row rules,
    the delivery rules a quarantine reason falls under, and ``<element>.authority`` of copied elements."""
    rows = []
    for resource in catalogue.resources:
        lib = catalogue.library(resource.library)
        for rule in resource_rules(catalogue, resource):
            rows.append((resource.id, rule.id, rule.label, rule.dimension.value, rule.severity.value))
        rows.append((resource.id, "delivery.readable", READABLE_LABEL, Dimension.accessibility.value,
                     Severity.blocking.value))
        rows.append((resource.id, "delivery.parse", PARSE_LABEL, Dimension.conformity.value, Severity.warning.value))
        for element in copies(catalogue, resource):
            name = _authority_name(catalogue, lib.code, element)
            rows.append((resource.id, f"{element}.authority", f"{lib.element(element).name}: 与权威部门({name})一致",
                         Dimension.consistency.value, Severity.warning.value))
    return pl.DataFrame(rows, schema={"resource_id": pl.String, "rule_id": pl.String, "label": pl.String,
                                      "dimension": pl.String, "severity": pl.String}, orient="row")


def unresolved_at(tickets: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Tickets opened by ``day`` and neither answered, fixed nor closed by then (open or overdue at ``day``)."""
    # answering, fixing and closing an open or overdue ticket all set resolved_on
    still = pl.col("resolved_on").is_null() | (pl.col("resolved_on") > day)
    return tickets.filter((pl.col("opened_on") <= day) & still)


def _latest(batches: pl.DataFrame) -> dict[str, str]:
    return dict(zip(batches.get_column("resource_id").to_list(), batches.get_column("batch_id").to_list(),
                    strict=True)) if batches.height else {}


def standing_tickets(tickets: pl.DataFrame, batches: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Tickets unresolved at ``day`` whose record or conflict the resource's latest batch (``batches``:
    resource_id, batch_id) did not carry again: failures that still stand beside that batch."""
    def order(col: str) -> tuple[pl.Expr, pl.Expr]:  # quality.tickets.sync.batch_order as expressions
        parts = pl.col(col).str.extract_groups(r"\.(\d{8})\.(\d+)$")
        return parts.struct.field("1"), parts.struct.field("2").cast(pl.Int64)

    (d0, s0), (d1, s1) = order("last_batch"), order("latest_batch")
    latest = batches.select("resource_id", pl.col("batch_id").alias("latest_batch"))
    return (unresolved_at(tickets, day).join(latest, on="resource_id", how="inner")
            .filter((d0 < d1) | ((d0 == d1) & (s0 < s1))).drop("latest_batch"))


def open_ticket_counts(tickets: pl.DataFrame, batches: pl.DataFrame, day: dt.date,
                       labels: pl.DataFrame) -> pl.DataFrame:
    """Failures that still stand (pure): per resource and rule, the tickets unresolved at ``day`` whose
    record or conflict the resource's latest batch (``batches``: resource_id, batch_id) did not carry
    again. Each counts once as evaluated and once as failed for every rule its ticket names; a
    quarantine reason counts under the delivery rule it belongs to (可访问性 / 规范性), a conflict under
    ``<element>.authority``. What the latest batch carried is counted by that batch's own rules."""
    latest = _latest(batches)
    open_ = standing_tickets(tickets, batches, day)
    rule = pl.col("item")
    rule = (pl.when(pl.col("kind") == TicketKind.conflict.value).then(pl.concat_str([rule, pl.lit(".authority")]))
            .when(rule.is_in(READABLE_REASONS)).then(pl.lit("delivery.readable"))
            .when(rule.is_in(PARSE_REASONS)).then(pl.lit("delivery.parse"))
            .otherwise(rule))
    counts = (open_.with_columns(pl.col("items").str.split("; ").alias("item")).explode("item")
              .with_columns(rule.alias("rule_id")).unique(["ticket_id", "rule_id"])
              .group_by("department", "resource_id", "rule_id").agg(pl.len().cast(pl.Int64).alias("n")))
    out = counts.join(labels, on=["resource_id", "rule_id"], how="inner").with_columns(
        pl.col("resource_id").replace_strict(latest, default=None).alias("batch_id"),
        pl.col("n").alias("evaluated"), pl.col("n").alias("failed"))
    return out.select(list(RULE_INPUT_SCHEMA)).cast(RULE_INPUT_SCHEMA).sort("department", "resource_id", "rule_id")


def with_open_tickets(rules: pl.DataFrame, carried: pl.DataFrame) -> pl.DataFrame:
    """The latest batches' rule counts plus the failures that still stand (:func:`open_ticket_counts`)."""
    if not carried.height:
        return rules
    first = [pl.col(c).drop_nulls().first() for c in ("batch_id", "label", "dimension", "severity")]
    return (pl.concat([rules, carried]).group_by("department", "resource_id", "rule_id", maintain_order=True)
            .agg(*first, pl.col("evaluated").sum(), pl.col("failed").sum())
            .select(list(RULE_INPUT_SCHEMA)).cast(RULE_INPUT_SCHEMA))


def gather_rules(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> pl.DataFrame:
    """Every rule count the scorecard of ``day`` is computed from (latest batch of each resource), with
    the tickets still open on records the latest batch did not carry again (:func:`open_ticket_counts`)."""
    batches = latest_batches(wh, day)
    known = {r.id for r in catalogue.resources}
    batches = batches.filter(pl.col("resource_id").is_in(list(known)))
    parts = [stored_rule_counts(wh, batches), delivery_rule_counts(wh, catalogue, batches),
             timeliness_rule_counts(wh, catalogue, day), consistency_rule_counts(wh, catalogue, batches, day)]
    rules = pl.concat([p.select(list(RULE_INPUT_SCHEMA)).cast(RULE_INPUT_SCHEMA) for p in parts])
    carried = open_ticket_counts(read_tickets(wh), batches.select("resource_id", "batch_id"), day,
                                 rule_labels(catalogue))
    return with_open_tickets(rules, carried).sort("department", "resource_id", "dimension", "rule_id")


def response_counts(tickets: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Per department at the end of ``day``: tickets due (deadline passed), closed on time, overdue.

    A ticket is due once its due date is over; it was closed on time when answered, fixed or closed
    by its due date; it is overdue when it is due and still unresolved at ``day``.
    """
    t = tickets.filter((pl.col("opened_on") <= day) & (pl.col("due_date") <= day))
    resolved_by_day = pl.col("resolved_on").is_not_null() & (pl.col("resolved_on") <= day)
    return t.group_by("department").agg(
        pl.len().cast(pl.Int64).alias("due"),
        (resolved_by_day & (pl.col("resolved_on") <= pl.col("due_date"))).sum().cast(pl.Int64).alias("on_time"),
        (~resolved_by_day).sum().cast(pl.Int64).alias("overdue"),
    ).sort("department").cast(RESPONSE_SCHEMA)


def ticket_responses(wh: Warehouse, day: dt.date) -> pl.DataFrame:
    """:func:`response_counts` of the stored tickets."""
    return response_counts(read_tickets(wh), day)
