"""Score what the pipeline found against the generator's ground truth (manifest.json).

Every finding the pipeline stores — quarantined rows, rule failures, 一数一源 conflicts,
referential failures, volume warnings, stale resources — is mapped to a defect class and compared
with the injected defects: per class, injected / found / missed / false positives, precision and
recall. Row-level defects match on (class, resource, batch date, row); resource-level ones on
(class, resource[, batch date]).
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from catalog.loader import Catalogue
from warehouse.store import Warehouse

RULE_CLASS = {
    "id_number": "invalid_id_checksum",
    "uscc": "invalid_uscc_checksum",
    "mobile": "malformed_mobile",
    "code_list": "unknown_code",
    "not_null": "missing_required",
    "unique": "duplicate_key",
    "id_birth_date": "id_birth_mismatch",
    "id_gender": "id_gender_mismatch",
}
QUARANTINE_CLASS = {
    "unparseable": "unparseable_wrong_columns",
    "bad_encoding": "unparseable_bad_encoding",
    "bad_date": "unparseable_bad_date",
    "bad_number": "unparseable_bad_number",
}
REFERENCE_CLASS = {"missing": "holder_missing", "name_mismatch": "holder_name_mismatch", "invalid": "invalid_holder_code"}
ROW_KEY = ["class", "resource_id", "batch_date", "row"]
FINDING_SCHEMA = {"class": pl.String, "resource_id": pl.String, "batch_date": pl.Date, "row": pl.Int64}


def load_manifest(path: Path) -> tuple[dict, pl.DataFrame]:
    """The manifest's parameters and its defects as a frame (class, resource_id, batch_date, row …)."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    defects = doc.get("defects") if isinstance(doc, dict) else doc
    frame = pl.DataFrame(defects, infer_schema_length=None) if defects else pl.DataFrame(schema=FINDING_SCHEMA)
    frame = frame.with_columns(pl.col("batch_date").cast(pl.String).str.to_date())
    if "row" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, pl.Int64).alias("row"))
    return doc if isinstance(doc, dict) else {}, frame.with_columns(pl.col("row").cast(pl.Int64))


def delivery_dates(path: Path) -> list[dt.date]:
    """Every batch date on which some resource of a generated city delivered, oldest first."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), dict):
        raise ValueError(f"{path}: 不是生成器的真值清单 (缺少 resources)")
    return sorted({dt.date.fromisoformat(d) for r in doc["resources"].values() for d in r.get("rows", {})})


def deliveries_by_date(path: Path) -> dict[dt.date, list[str]]:
    """The resources of a generated city that delivered on each batch date."""
    doc = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(doc, dict) or not isinstance(doc.get("resources"), dict):
        raise ValueError(f"{path}: 不是生成器的真值清单 (缺少 resources)")
    out: dict[dt.date, list[str]] = {}
    for rid, r in sorted(doc["resources"].items()):
        for d in r.get("rows", {}):
            out.setdefault(dt.date.fromisoformat(d), []).append(rid)
    return out


def _read(wh: Warehouse, conn, layer: str, table: str, sql: str, schema: dict) -> pl.DataFrame:
    if not wh.exists(layer, table):
        return pl.DataFrame(schema=schema)
    return wh.read(conn, sql, schema)


def findings(wh: Warehouse, catalogue: Catalogue, dates: list[dt.date], stale: list[str] | None = None,
             volume_ratio: float | None = None) -> pl.DataFrame:
    """Everything the pipeline flagged for the given batch dates, as (class, resource_id, batch_date, row);
    a delivery is truncated below ``volume_ratio`` (``GONGSHU_VOLUME_MIN_RATIO``) of its recent median."""
    from quality.volume import MIN_RATIO, assess, previous_volumes

    ratio = MIN_RATIO if volume_ratio is None else volume_ratio

    d0, d1 = min(dates), max(dates)
    parts = []
    with wh.engine.connect() as conn:
        batches = _read(wh, conn, "ods", "batches",
                        f"SELECT batch_id, resource_id, batch_date FROM {wh.qualified('ods', 'batches')}",
                        {"batch_id": pl.String, "resource_id": pl.String, "batch_date": pl.Date})
        q = _read(wh, conn, "quality", "quarantine",
                  f"SELECT batch_id, row_no, reason_code FROM {wh.qualified('quality', 'quarantine')}",
                  {"batch_id": pl.String, "row_no": pl.Int64, "reason_code": pl.String})
        parts.append(q.join(batches, on="batch_id").select(
            pl.col("reason_code").replace_strict(QUARANTINE_CLASS, default=None).fill_null(
                pl.col("reason_code").str.extract(r"\.([a-z_0-9]+)$", 1).replace_strict(RULE_CLASS, default=None)
            ).alias("class"),
            "resource_id", "batch_date", pl.col("row_no").alias("row")))
        f = _read(wh, conn, "quality", "failures",
                  f"SELECT batch_id, row_no, rule_id FROM {wh.qualified('quality', 'failures')}",
                  {"batch_id": pl.String, "row_no": pl.Int64, "rule_id": pl.String})
        parts.append(f.join(batches, on="batch_id").select(
            pl.col("rule_id").str.extract(r"\.([a-z_0-9]+)$", 1).replace_strict(RULE_CLASS, default=None).alias("class"),
            "resource_id", "batch_date", pl.col("row_no").alias("row")))
        c = _read(wh, conn, "quality", "conflicts",
                  f"SELECT last_seen_batch, last_row_no, resource_id FROM {wh.qualified('quality', 'conflicts')}",
                  {"last_seen_batch": pl.String, "last_row_no": pl.Int64, "resource_id": pl.String})
        parts.append(c.join(batches.drop("resource_id"), left_on="last_seen_batch", right_on="batch_id").select(
            pl.lit("conflict").alias("class"), "resource_id", "batch_date", pl.col("last_row_no").alias("row")))
        r = _read(wh, conn, "quality", "reference_failures",
                  f"SELECT kind, source_batch, source_row FROM {wh.qualified('quality', 'reference_failures')}",
                  {"kind": pl.String, "source_batch": pl.String, "source_row": pl.Int64})
        parts.append(r.join(batches, left_on="source_batch", right_on="batch_id").select(
            pl.col("kind").replace_strict(REFERENCE_CLASS, default=None).alias("class"),
            "resource_id", "batch_date", pl.col("source_row").alias("row")))
        for res in catalogue.resources:
            latest = batches.filter((pl.col("resource_id") == res.id) & pl.col("batch_date").is_between(d0, d1))
            for day in latest.get_column("batch_date").unique().to_list():
                rows = wh.scalar(conn, f"SELECT rows_delivered FROM {wh.qualified('ods', 'batches')} WHERE "
                                 "resource_id = :r AND batch_date = :d ORDER BY seq DESC LIMIT 1",
                                 {"r": res.id, "d": day})
                if not assess(int(rows), previous_volumes(wh, conn, res, day), ratio).ok:
                    parts.append(pl.DataFrame([{"class": "truncated", "resource_id": res.id, "batch_date": day,
                                                "row": None}], schema=FINDING_SCHEMA))
    for rid in stale or []:
        parts.append(pl.DataFrame([{"class": "stale", "resource_id": rid, "batch_date": None, "row": None}],
                                  schema=FINDING_SCHEMA))
    out = pl.concat([p.cast(FINDING_SCHEMA) for p in parts]).filter(
        pl.col("class").is_not_null() & (pl.col("batch_date").is_null() | pl.col("batch_date").is_between(d0, d1)))
    return out.unique()


@dataclass
class Score:
    table: pl.DataFrame  # class, injected, found, missed, false_positives, precision, recall
    missed: pl.DataFrame
    false_positives: pl.DataFrame

    @property
    def perfect(self) -> bool:
        return self.table.height > 0 and bool(
            self.table.select((pl.col("precision") == 1.0) & (pl.col("recall") == 1.0)).to_series().all())


def score(truth: pl.DataFrame, found: pl.DataFrame) -> Score:
    """Compare the injected defects with the findings, per class."""
    truth = truth.with_columns(pl.when(pl.col("class").is_in(["stale"])).then(None).otherwise(pl.col("batch_date"))
                               .alias("batch_date"))
    key = ROW_KEY
    t = truth.select(key).cast(FINDING_SCHEMA).unique()
    f = found.select(key).cast(FINDING_SCHEMA).unique()
    hit = t.join(f, on=key, how="semi", nulls_equal=True)
    missed = t.join(f, on=key, how="anti", nulls_equal=True)
    fp = f.join(t, on=key, how="anti", nulls_equal=True)
    classes = sorted(set(t.get_column("class").to_list()) | set(f.get_column("class").to_list()))
    rows = []
    for c in classes:
        inj = t.filter(pl.col("class") == c).height
        h = hit.filter(pl.col("class") == c).height
        fpc = fp.filter(pl.col("class") == c).height
        rows.append({"class": c, "injected": inj, "found": h, "missed": inj - h, "false_positives": fpc,
                     "precision": h / (h + fpc) if h + fpc else 1.0, "recall": h / inj if inj else 1.0})
    return Score(pl.DataFrame(rows, schema={"class": pl.String, "injected": pl.Int64, "found": pl.Int64,
                                            "missed": pl.Int64, "false_positives": pl.Int64,
                                            "precision": pl.Float64, "recall": pl.Float64}), missed, fp)


def format_score(s: Score) -> list[str]:
    lines = [f"{'缺陷类别':<28}{'注入':>8}{'发现':>8}{'漏报':>8}{'误报':>8}{'精确率':>9}{'召回率':>9}"]
    for r in s.table.iter_rows(named=True):
        lines.append(f"{r['class']:<28}{r['injected']:>8}{r['found']:>8}{r['missed']:>8}{r['false_positives']:>8}"
                     f"{r['precision']:>9.3f}{r['recall']:>9.3f}")
    return lines
