"""The failing records of a batch, and how a record is shown to people.

A failing record is a rule failure (``quality.failures``) or a row quarantined because it could
not be read or parsed, with its raw entity key (internal, like ``quality.conflicts``) and a masked
value. Everything shown to people masks the key (:func:`mask_key`) and adds a keyed token.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence

import polars as pl

from catalog.loader import Catalogue
from catalog.models import Element, Library, Resource
from catalog.normalize import parse_expr
from desensitize.linkage import NOTHING, Exposure
from desensitize.lookup import ValueSet, hash_pair
from desensitize.rules import (
    REDACTED,
    display_exposure,
    display_rule,
    display_spec,
    joint_specs,
    preview_spec,
)
from quality.rules import Dimension, Severity, expected_text, resource_rules
from warehouse.ods import carried_rows, read_carried
from warehouse.store import Warehouse

# --- how a record is shown to people ---------------------------------------------------------------


def value_rule(element: Element | None):
    """The masking of a value in reports: its display rule (desensitize/rules.py :func:`display_spec`):
    the preview rule, and birth dates (and other sensitive dates) as the year only."""
    return display_rule(display_spec(element))


def mask_value(expr: pl.Expr, element: Element | None) -> pl.Expr:
    rule = value_rule(element)
    return rule(expr) if rule else expr.cast(pl.String)


def mask_key(expr: pl.Expr, lib: Library, key: Sequence[str], linked: Exposure = NOTHING) -> pl.Expr:
    """An ``a|b`` entity key with each part masked by its element; a row without key says so.

    The key stands in a row beside values of any element of the library (shown by
    :func:`value_rule`) and beside a keyed token, which joins it to whatever ``linked`` describes
    (the share outputs under the same key): its ID number is masked jointly with both
    (desensitize/linkage.py), e.g. Hutool ID_CARD where a share output publishes birth dates in full.
    """
    specs = joint_specs({k: (lib.element(k), display_spec(lib.element(k))) for k in key},
                        display_exposure(lib.elements) | linked)
    parts = expr.str.split("|")
    masked = pl.concat_str([_shown(parts.list.get(i, null_on_oob=True), specs[k]) for i, k in enumerate(key)],
                           separator="|")
    row = expr.str.extract(r"#(\d+)$", 1)
    return pl.when(expr.str.starts_with("#")).then(pl.concat_str([pl.lit("(主键缺失) 第"), row, pl.lit("行")])) \
        .otherwise(masked)


def _shown(expr: pl.Expr, spec: str | None) -> pl.Expr:
    rule = display_rule(spec)
    return rule(expr) if rule else expr.cast(pl.String)


# --- failing records of a batch ----------------------------------------------------------------------

RECORD_SCHEMA: dict[str, pl.DataType] = {
    "department": pl.String(), "resource_id": pl.String(), "batch_id": pl.String(), "row_no": pl.Int64(),
    "rule_id": pl.String(), "label": pl.String(), "dimension": pl.String(), "severity": pl.String(),
    "field": pl.String(), "entity_key": pl.String(), "keyed": pl.Boolean(), "value_masked": pl.String(),
    "expected": pl.String(),
}
"""A failing record with its raw entity key (internal) and masked value."""

_PARSE_DIMENSION = {"unparseable": Dimension.accessibility, "wrong_encoding": Dimension.accessibility,
                    "bad_encoding": Dimension.accessibility, "nul_byte": Dimension.accessibility,
                    "formula_no_value": Dimension.accessibility,
                    "bad_date": Dimension.conformity, "bad_number": Dimension.conformity}


def batch_keys(wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_id: str) -> pl.DataFrame:
    """(row_no, entity_key) of every record of a batch the 标准层 standardised, the key parsed as the
    标准层 parses it.

    Read from the ODS so quarantined rows have their key too; null when a key part is missing. The
    records the batch carried unchanged from the previous one are not among them
    (:func:`carried_keys`)."""
    cols, _ = _key_columns(resource)
    schema = {"_row_no": pl.Int64(), **{c: pl.String() for c in cols}}
    if not wh.exists("ods", resource.id):
        return pl.DataFrame(schema={"row_no": pl.Int64(), "entity_key": pl.String()})
    select = ", ".join(wh.quote(c) for c in schema)
    with wh.engine.connect() as conn:
        raw = wh.read(conn, f"SELECT {select} FROM {wh.qualified('ods', resource.id)} WHERE _batch_id = :b",
                      schema, {"b": batch_id}, bulk=True)
    return raw.select(pl.col("_row_no").alias("row_no"), _entity_key(catalogue, resource).alias("entity_key"))


def carried_keys(wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_id: str) -> ValueSet:
    """Entity keys of the records a batch carried unchanged from the previous batch (``ods.carried``),
    as hashes (:class:`desensitize.lookup.ValueSet`: most of a re-delivered snapshot is carried): each
    fails the rules it failed there, so its ticket is seen again, neither fixed nor new."""
    cols, _ = _key_columns(resource)
    schema = {"_row_no": pl.Int64(), **{c: pl.String() for c in cols}}
    select = ", ".join(wh.quote(c) for c in schema)
    parts = []
    with wh.engine.connect() as conn:
        rows = carried_rows(read_carried(wh, conn, batch_id))
        for (source,), part in rows.group_by("source_batch_id"):
            raw = wh.read(conn, f"SELECT {select} FROM {wh.qualified('ods', resource.id)} WHERE _batch_id = :b",
                          schema, {"b": str(source)}, bulk=True)
            found = raw.join(part.select(pl.col("source_row_no").alias("_row_no")), on="_row_no", how="semi")
            parts.append(hash_pair(found.select(_entity_key(catalogue, resource)).to_series().drop_nulls()))
    return ValueSet.union(parts)


def _key_columns(resource: Resource) -> tuple[list[str], dict]:
    fields = {f.element: f for f in resource.fields}
    return sorted({fields[k].column for k in resource.key if k in fields}), fields


def _entity_key(catalogue: Catalogue, resource: Resource) -> pl.Expr:
    lib = catalogue.library(resource.library)
    _, fields = _key_columns(resource)
    parts = []
    for k in resource.key:
        if k in fields:
            f = fields[k]
            parts.append(parse_expr(lib.element(k), pl.col(f.column), f.formats, f.codes).cast(pl.String))
        else:
            parts.append(pl.lit(resource.constants.get(k), pl.String))
    return pl.concat_str(parts, separator="|")


def _rule_meta(wh: Warehouse, batch_id: str) -> pl.DataFrame:
    schema = {"rule_id": pl.String(), "label": pl.String(), "dimension": pl.String(), "severity": pl.String(),
              "checked_at": pl.Datetime("us")}
    if not wh.exists("quality", "rule_results"):
        return pl.DataFrame(schema=schema).drop("checked_at")
    with wh.engine.connect() as conn:
        meta = wh.read(conn, f"SELECT rule_id, label, dimension, severity, checked_at FROM "
                             f"{wh.qualified('quality', 'rule_results')} WHERE batch_id = :b", schema, {"b": batch_id})
    return meta.sort("checked_at").unique("rule_id", keep="last").drop("checked_at")


def _batch_date(batch_id: str) -> dt.date | None:
    m = re.search(r"\.(\d{8})\.\d+$", batch_id)
    return dt.datetime.strptime(m.group(1), "%Y%m%d").date() if m else None


def _format_text(formats: Sequence[str]) -> str:
    """``%Y%m%d`` → ``YYYYMMDD``: a date format as a department's staff write it."""
    words = {"%Y": "YYYY", "%m": "MM", "%d": "DD", "%H": "hh", "%M": "mm", "%S": "ss"}
    out = []
    for f in formats:
        for k, v in words.items():
            f = f.replace(k, v)
        out.append(f)
    return " 或 ".join(out)


def expected_expr(catalogue: Catalogue, resource: Resource, batch_id: str) -> pl.Expr:
    """The 期望 of a failing record, from its ``rule_id`` and ``field``: what would have passed
    (:func:`quality.rules.expected_text`; for a date that did not parse, the formats the catalogue
    declares), never the rule's name again; the stored text where the rule is unknown."""
    out = pl.col("expected")
    for r in resource_rules(catalogue, resource, _batch_date(batch_id)):
        out = pl.when(pl.col("rule_id") == r.id).then(pl.lit(expected_text(r))).otherwise(out)
    for f in resource.fields:
        if f.formats:
            out = pl.when((pl.col("rule_id") == "bad_date") & (pl.col("field") == f.element)).then(
                pl.lit(f"日期, 格式 {_format_text(f.formats)}")).otherwise(out)
    readable = [c for c, d in _PARSE_DIMENSION.items() if d == Dimension.accessibility]
    return (pl.when(pl.col("rule_id").is_in(readable)).then(pl.lit("可按目录声明的格式与编码读取的记录"))
            .when(pl.col("rule_id") == "bad_number").then(pl.lit("数值"))
            .otherwise(out))


def failing_records(wh: Warehouse, catalogue: Catalogue, resource: Resource, batch_id: str,
                    keys: pl.DataFrame | None = None) -> pl.DataFrame:
    """Every failing record of a batch: rule failures (``quality.failures``) and rows quarantined
    because they could not be read or parsed, each with its entity key and a masked value.

    ``keys``: the batch's :func:`batch_keys`, when the caller has read them already."""
    lib = catalogue.library(resource.library)
    elements = {e.code: e for e in lib.elements}
    keys = batch_keys(wh, catalogue, resource, batch_id) if keys is None else keys
    frames = []
    with wh.engine.connect() as conn:
        if wh.exists("quality", "failures"):
            f_schema = {"row_no": pl.Int64(), "rule_id": pl.String(), "field": pl.String(),
                        "value_masked": pl.String(), "expected": pl.String()}
            fails = wh.read(conn, f"SELECT row_no, rule_id, field, value_masked, expected FROM "
                                  f"{wh.qualified('quality', 'failures')} WHERE batch_id = :b", f_schema, {"b": batch_id})
            meta = _rule_meta(wh, batch_id)
            fails = fails.join(meta, on="rule_id", how="left").with_columns(
                pl.col("label").fill_null(pl.col("rule_id")))
            # the found value was masked by its display rule when stored (a birth date by its year);
            # rows stored before that showed a whole date: cut here too. The date the ID number
            # implies is never shown (it would complete the masked number)
            value = pl.col("value_masked")
            for code, e in elements.items():
                rule = value_rule(e)
                if rule is not None and preview_spec(e) is None:
                    value = pl.when(pl.col("field") == code).then(rule(pl.col("value_masked"))).otherwise(value)
            frames.append(fails.with_columns(
                value.alias("value_masked"),
                pl.when(pl.col("rule_id").str.ends_with(".id_birth_date")).then(pl.lit("与身份号码中的出生日期一致"))
                .otherwise(pl.col("expected")).alias("expected"),
            ))
        if wh.exists("quality", "quarantine"):
            q_schema = {"row_no": pl.Int64(), "field": pl.String(), "reason_code": pl.String(),
                        "reason": pl.String(), "raw_value": pl.String()}
            codes = ", ".join(f"'{c}'" for c in _PARSE_DIMENSION)
            q = wh.read(conn, f"SELECT row_no, field, reason_code, reason, raw_value FROM "
                              f"{wh.qualified('quality', 'quarantine')} WHERE batch_id = :b AND reason_code IN ({codes})",
                        q_schema, {"b": batch_id})
            value = pl.lit(REDACTED)  # a whole unparseable line (field null) is never shown
            for code, e in elements.items():
                value = pl.when(pl.col("field") == code).then(mask_value(pl.col("raw_value"), e)).otherwise(value)
            frames.append(q.select(
                "row_no", pl.col("reason_code").alias("rule_id"), pl.col("reason").alias("label"),
                pl.col("reason_code").replace_strict({k: v.value for k, v in _PARSE_DIMENSION.items()}).alias("dimension"),
                pl.lit(Severity.blocking.value).alias("severity"), "field", value.alias("value_masked"),
                pl.lit("符合目录声明的格式").alias("expected"),
            ))
    if not frames:
        return pl.DataFrame(schema=RECORD_SCHEMA)
    cols = ["row_no", "rule_id", "label", "dimension", "severity", "field", "value_masked", "expected"]
    found = pl.concat([f.select(cols).cast({"row_no": pl.Int64}) for f in frames]).with_columns(
        expected_expr(catalogue, resource, batch_id).alias("expected"))
    keyed = found.join(keys, on="row_no", how="left")
    return keyed.select(
        pl.lit(resource.department).alias("department"), pl.lit(resource.id).alias("resource_id"),
        pl.lit(batch_id).alias("batch_id"), "row_no", "rule_id", "label", "dimension", "severity", "field",
        pl.coalesce("entity_key", pl.concat_str([pl.lit(f"#{batch_id}#"), pl.col("row_no").cast(pl.String)]))
        .alias("entity_key"),
        pl.col("entity_key").is_not_null().alias("keyed"), "value_masked", "expected",
    ).cast(RECORD_SCHEMA).sort("row_no", "rule_id")
