"""标准层: turn one ODS batch (text as received) into typed, normalised rows keyed by data element.

Pure functions over polars frames; the asset that calls them only moves data in and out of the
warehouse. A row either comes out accepted or goes to quarantine with at least one reason, so
rows in = rows accepted + rows quarantined, always.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from catalog.identifiers import (
    id_number_birth_date,
    id_number_gender,
    is_id15,
    normalize_id_number,
)
from catalog.loader import Catalogue
from catalog.models import ElementType, Resource
from catalog.normalize import halfwidth, parse_expr
from guiji.channels import FORMULA_MARK, NUL_MARK, REPLACEMENT, WRONG_ENCODING
from quality.rules import VERSION, Kind, Rule, Severity, evaluated, expected_text, failing, resource_rules
from warehouse.std import QUARANTINE_SCHEMA, QuarantineReason, std_schema

RECORD_CODES = (WRONG_ENCODING,)
"""Reason codes a channel gives a whole record through ``_error`` (``<code>: <reason>``)."""


RULE_COUNT_SCHEMA = {
    "rule_id": pl.String, "kind": pl.String, "dimension": pl.String, "severity": pl.String, "label": pl.String,
    "evaluated": pl.Int64, "failed": pl.Int64,
}
FAILURE_SCHEMA = {"_row_no": pl.Int64, "rule_id": pl.String, "field": pl.String, "value": pl.String,
                  "expected": pl.String}


def expected_expr(rule: Rule) -> pl.Expr:
    """What the value should have been, where the rule knows (the ID digits), else what it requires
    (:func:`quality.rules.expected_text`)."""
    if rule.kind == Kind.id_birth_date:
        return id_number_birth_date(pl.col(rule.columns[1])).dt.strftime("%Y-%m-%d")
    if rule.kind == Kind.id_gender:
        return id_number_gender(pl.col(rule.columns[1]))
    return pl.lit(expected_text(rule))


@dataclass
class Standardized:
    accepted: pl.DataFrame
    quarantine: pl.DataFrame
    converted_id15: int = 0
    rule_counts: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=RULE_COUNT_SCHEMA))
    failures: pl.DataFrame = field(default_factory=lambda: pl.DataFrame(schema=FAILURE_SCHEMA))
    parsed: pl.DataFrame | None = None  # every row that parsed (accepted or not): what the rules saw
    # (with the rows' watermark as ``_version`` for a versioned resource: its unique rule reads it)

    @property
    def quarantined_rows(self) -> int:
        return self.quarantine.get_column("_row_no").n_unique() if self.quarantine.height else 0


def key_values(catalogue: Catalogue, resource: Resource) -> list[pl.Expr]:
    """The resource's key elements as :func:`standardize` parses them (constants left out: the same
    on every row), so two records with the same key in different spellings come out equal."""
    lib = catalogue.library(resource.library)
    out = []
    for fm in resource.fields:
        if fm.element in resource.key:
            raw = pl.col(fm.column)
            raw = pl.when(raw.str.starts_with(FORMULA_MARK)).then(None).otherwise(raw)
            out.append(parse_expr(lib.element(fm.element), raw, fm.formats, fm.codes).alias(f"__key_{fm.element}"))
    return out


def standardize(
    ods: pl.DataFrame, catalogue: Catalogue, resource: Resource, batch_date: dt.date | None = None
) -> Standardized:
    """Parse one ODS batch of ``resource`` into accepted std rows, quarantine and rule results."""
    lib = catalogue.library(resource.library)
    parseable = pl.col("_error").is_null()
    record_code = pl.col("_error").str.extract(r"^([a-z_]+): ", 1)
    source = pl.col("_source") if "_source" in ods.columns else pl.lit("", pl.String)
    column_of = {f.element: f.column for f in resource.fields}

    def delivered(column: str) -> pl.Expr:
        """A department column as parsed: a formula cell without a value is no value (it is flagged)."""
        raw = pl.col(column)
        return pl.when(raw.str.starts_with(FORMULA_MARK)).then(None).otherwise(raw)

    # Stage 1 parses every field once into __v_<element>; stage 2 checks refer to those columns,
    # which keeps the plans small (nesting the parse expressions in every check is slow to plan).
    parsed = [
        parse_expr(lib.element(fm.element), delivered(fm.column), fm.formats, fm.codes).alias(f"__v_{fm.element}")
        for fm in resource.fields
    ] + [pl.lit(c, pl.String).alias(f"__v_{code}") for code, c in resource.constants.items() if code not in column_of]
    id_fields = [fm.column for fm in resource.fields if lib.element(fm.element).type == ElementType.id_number]
    converted = pl.sum_horizontal(
        [is_id15(normalize_id_number(halfwidth(pl.col(c)))).cast(pl.Int64).fill_null(0) for c in id_fields]
    ) if id_fields else pl.lit(0, pl.Int64)
    stage1 = ods.with_columns(*parsed, converted.alias("__id15"))

    def v(code: str) -> pl.Expr:
        return pl.col(f"__v_{code}")

    # (reason code, element, column, condition, raw value, reason when the row has its own)
    checks: list[tuple[str, str | None, str | None, pl.Expr, pl.Expr, pl.Expr | None]] = [
        ("unparseable", None, None, ~parseable & ~record_code.is_in(list(RECORD_CODES)).fill_null(False), pl.col("_raw"),
         None),
    ] + [
        (code, None, None, record_code == code, pl.col("_raw"), pl.col("_error").str.slice(len(code) + 2))
        for code in RECORD_CODES
    ]
    for fm in resource.fields:
        e = lib.element(fm.element)
        raw = pl.col(fm.column)
        checks.append(("bad_encoding", e.code, fm.column, parseable & raw.str.contains(REPLACEMENT, literal=True), raw,
                       None))
        checks.append(("nul_byte", e.code, fm.column, parseable & raw.str.contains(NUL_MARK, literal=True), raw, None))
        formula = raw.str.starts_with(FORMULA_MARK)
        cell = raw.str.extract(f"^{FORMULA_MARK}([A-Z]+[0-9]+)=", 1)
        expression = raw.str.replace(f"^{FORMULA_MARK}[A-Z]+[0-9]+", "")
        checks.append(("formula_no_value", e.code, fm.column, parseable & formula, expression, pl.concat_str(
            pl.lit("文件 "), source, pl.lit(" 单元格 "), cell,
            pl.lit(" 是公式, 文件中没有计算结果 (请在 Excel 中计算并保存后重新交付)"))))
        present = delivered(fm.column).str.strip_chars().str.len_chars() > 0
        if e.type in (ElementType.date, ElementType.datetime):
            checks.append(("bad_date", e.code, fm.column, parseable & present & v(e.code).is_null(), raw, None))
        elif e.type in (ElementType.integer, ElementType.decimal):
            checks.append(("bad_number", e.code, fm.column, parseable & present & v(e.code).is_null(), raw, None))
    codes = [f.element for f in resource.fields] + [c for c in resource.constants if c not in column_of]
    # a NULL field makes a condition NULL, which is "not flagged" (not "unknown": that would drop the row)
    flags = [cond.fill_null(False).alias(f"__c{i}") for i, (_, _, _, cond, _, _) in enumerate(checks)]
    raws = [r.cast(pl.String).alias(f"__r{i}") for i, (_, _, _, _, r, _) in enumerate(checks)]
    whys = [why.alias(f"__w{i}") for i, (*_, why) in enumerate(checks) if why is not None]
    version = [pl.col(resource.version_column).alias(VERSION)] if resource.version_column else []
    work = stage1.select(
        pl.col("_row_no"), *[v(c).alias(c) for c in codes], *version, *flags, *raws, *whys, pl.col("__id15"),
        *[pl.col(fm.column).alias(f"__raw_{fm.element}") for fm in resource.fields],
    )
    parts = [
        work.filter(pl.col(f"__c{i}")).select(
            pl.col("_row_no"),
            pl.lit(field, pl.String).alias("field"),
            pl.lit(column, pl.String).alias("column"),
            pl.lit(code, pl.String).alias("reason_code"),
            (pl.lit(QuarantineReason(code).label, pl.String) if why is None else pl.col(f"__w{i}")).alias("reason"),
            pl.col(f"__r{i}").alias("raw_value"),
        )
        for i, (code, field, column, _, _, why) in enumerate(checks)
    ]
    bad_any = pl.any_horizontal([pl.col(f"__c{i}") for i in range(len(checks))])
    parsed_ok = work.filter(~bad_any)

    # Quality rules run on every row that parsed; rows failing a blocking rule (an unusable key,
    # a key delivered twice) are quarantined, the others only reported.
    rules = resource_rules(catalogue, resource, batch_date)
    flagged = parsed_ok.with_columns([failing(r).alias(f"__f{i}") for i, r in enumerate(rules)])
    counts = flagged.select(
        [evaluated(r).sum().alias(f"n{i}") for i, r in enumerate(rules)]
        + [pl.col(f"__f{i}").sum().alias(f"u{i}") for i in range(len(rules))]
    ).row(0, named=True) if rules else {}
    rule_counts = pl.DataFrame(
        [{"rule_id": r.id, "kind": r.kind.value, "dimension": r.dimension.value, "severity": r.severity.value,
          "label": r.label, "evaluated": int(counts[f"n{i}"] or 0), "failed": int(counts[f"u{i}"] or 0)}
         for i, r in enumerate(rules)],
        schema=RULE_COUNT_SCHEMA,
    )
    failures = pl.concat(
        [flagged.filter(pl.col(f"__f{i}")).select(
            pl.col("_row_no"),
            pl.lit(r.id).alias("rule_id"),
            pl.lit(r.column).alias("field"),
            pl.concat_str([pl.col(c).cast(pl.String) for c in r.columns
                           if c == r.column or (r.kind == Kind.unique and c != VERSION)],
                          separator="|").alias("value"),
            expected_expr(r).alias("expected"),
        ) for i, r in enumerate(rules)],
    ).cast(FAILURE_SCHEMA) if rules else pl.DataFrame(schema=FAILURE_SCHEMA)
    for i, r in enumerate(rules):
        if r.severity != Severity.blocking:
            continue
        raw_cols = [f"__raw_{c}" if c in column_of else c for c in r.columns]
        parts.append(flagged.filter(pl.col(f"__f{i}")).select(
            pl.col("_row_no"),
            pl.lit(",".join(r.columns)).alias("field"),
            pl.lit(",".join(column_of.get(c, c) for c in r.columns)).alias("column"),
            pl.lit(r.id).alias("reason_code"),
            pl.lit(r.label).alias("reason"),
            pl.concat_str([pl.col(c).cast(pl.String) for c in raw_cols], separator="|").alias("raw_value"),
        ))
    blocked = [pl.col(f"__f{i}") for i, r in enumerate(rules) if r.severity == Severity.blocking]
    quarantine = pl.concat([p.cast(QUARANTINE_SCHEMA) for p in parts]).sort("_row_no", "reason_code", "field",
                                                                          nulls_last=True)
    schema = std_schema(catalogue, resource)
    keep = flagged.filter(~pl.any_horizontal(blocked)) if blocked else flagged
    accepted = keep.select([pl.col(c).cast(t) for c, t in schema.items()])
    parsed = parsed_ok.select([pl.col(c).cast(t) for c, t in schema.items()]
                              + ([pl.col(VERSION)] if resource.version_column else []))
    return Standardized(accepted, quarantine, int(work.get_column("__id15").sum()), rule_counts, failures, parsed)
