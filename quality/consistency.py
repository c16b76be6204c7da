"""一数一源 consistency and 关联数据一致性 (referential consistency), as pure polars.

* Same-data consistency: for every element and every department carrying a copy of it that is
  not its authority, that department's batch is joined with the base library (the authority's
  value) on the entity key and compared. Values are compared after the 标准层's normalisation
  (trim, full-width → half-width, dates parsed, codes mapped). Consistency rate = matched / compared.
* Referential consistency: values of a referencing element (a licence holder, a legal
  representative's ID) must exist as keys of the target library, and the name carried beside them
  must equal the target's name.
"""

from __future__ import annotations

from dataclasses import dataclass

import polars as pl

from catalog.identifiers import id_number_is_valid, uscc_is_valid
from catalog.loader import Catalogue
from catalog.models import ElementType, Library, Resource

CONFLICT_SCHEMA = {
    "library": pl.String, "element": pl.String, "department": pl.String, "authority": pl.String,
    "resource_id": pl.String, "batch_id": pl.String, "row_no": pl.Int64, "entity_key": pl.String,
    "value": pl.String, "authority_value": pl.String,
}
RATE_SCHEMA = {"library": pl.String, "element": pl.String, "department": pl.String, "resource_id": pl.String,
               "batch_id": pl.String, "compared": pl.Int64, "matched": pl.Int64}


def copies(catalogue: Catalogue, resource: Resource) -> dict[str, list[str] | None]:
    """Elements this resource carries but is NOT the authority for (None: for no row at all;
    a list: the discriminator values for which it is not the authority)."""
    lib = catalogue.library(resource.library)
    auth = catalogue.authoritative_elements(resource)
    out: dict[str, list[str] | None] = {}
    for f in resource.fields:
        code = f.element
        if code in lib.key:
            continue
        if code not in auth:
            out[code] = None
    return out


def entity_key(lib: Library) -> pl.Expr:
    return pl.concat_str([pl.col(k).cast(pl.String) for k in lib.key], separator="|")


@dataclass
class Consistency:
    conflicts: pl.DataFrame  # one row per differing value
    rates: pl.DataFrame  # compared / matched per element and department


def compare_copies(
    catalogue: Catalogue, lib: Library, batches: list[tuple[Resource, str, pl.DataFrame]], current: pl.DataFrame
) -> Consistency:
    """Compare every non-authoritative copy in ``batches`` with the current base values."""
    conflicts, rates = [], []
    for resource, batch_id, frame in batches:
        for code in copies(catalogue, resource):
            auth = catalogue.authority(lib.code, code)
            if not isinstance(auth, str):
                continue  # discriminated elements: every department is the authority of its own rows
            pair = frame.select([*lib.key, "_row_no", pl.col(code).alias("__copy")]).join(
                current.select([*lib.key, pl.col(code).alias("__auth")]), on=lib.key, how="inner"
            ).filter(pl.col("__copy").is_not_null() & pl.col("__auth").is_not_null())
            differs = pl.col("__copy") != pl.col("__auth")
            stats = pair.select(pl.len().alias("compared"), (~differs).sum().alias("matched")).row(0, named=True)
            rates.append({"library": lib.code, "element": code, "department": resource.department,
                          "resource_id": resource.id, "batch_id": batch_id, "compared": int(stats["compared"]),
                          "matched": int(stats["matched"] or 0)})
            conflicts.append(pair.filter(differs).select(
                pl.lit(lib.code).alias("library"), pl.lit(code).alias("element"),
                pl.lit(resource.department).alias("department"), pl.lit(auth).alias("authority"),
                pl.lit(resource.id).alias("resource_id"), pl.lit(batch_id).alias("batch_id"),
                pl.col("_row_no").alias("row_no"), entity_key(lib).alias("entity_key"),
                _text(pl.col("__copy")).alias("value"), _text(pl.col("__auth")).alias("authority_value"),
            ))
    return Consistency(
        pl.concat([c.cast(CONFLICT_SCHEMA) for c in conflicts]) if conflicts else pl.DataFrame(schema=CONFLICT_SCHEMA),
        pl.DataFrame(rates, schema=RATE_SCHEMA),
    )


def _text(expr: pl.Expr) -> pl.Expr:
    return expr.cast(pl.String)


REF_SCHEMA = {
    "library": pl.String, "element": pl.String, "kind": pl.String, "target": pl.String,
    "entity_key": pl.String, "value": pl.String, "name": pl.String, "expected_name": pl.String,
    "source_batch": pl.String, "source_row": pl.Int64,
}


def _lineage(frame: pl.DataFrame, element: str, which: int) -> pl.Expr:
    name = (f"{element}__batch", f"{element}__row")[which]
    alias = ("source_batch", "source_row")[which]
    if name in frame.columns:
        return pl.col(name).alias(alias)
    return pl.lit(None, (pl.String, pl.Int64)[which]).alias(alias)


def referential(
    catalogue: Catalogue, lib: Library, current: pl.DataFrame, targets: dict[str, pl.DataFrame],
    empty: set[str] | None = None,
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Failures of ``lib``'s references against the current rows of the target libraries.

    ``targets`` may hold only the rows ``current`` refers to; ``empty`` then names the target libraries
    holding no entity at all (default: those whose frame is empty), whose references are not checked.

    Returns (failures, counts) where counts has checked / missing / name_mismatch per reference.
    """
    out, counts = [], []
    local = catalogue.city.city.region_codes
    if empty is None:
        empty = {code for code, frame in targets.items() if frame.height == 0}
    for ref in lib.references:
        value = pl.col(ref.element)
        rows = current.filter(value.is_not_null())
        # local_only: a holder from another region may rightly be absent from the city's library,
        # so only local ones count as missing; a holder who is there is name-checked wherever from
        absent_counts = value.str.slice(0, 6).is_in(local) if ref.local_only else pl.lit(True)
        # A code is an ID number when its check character says so, else a USCC when its own does
        # (18 digits can be either).
        is_id = id_number_is_valid(value).fill_null(False)
        is_type = {ElementType.id_number: is_id, ElementType.uscc: ~is_id & uscc_is_valid(value).fill_null(False)}
        typed = [t.when_type for t in ref.targets if t.when_type]
        if typed and len(typed) == len(ref.targets):
            unknown = rows.filter(~pl.any_horizontal([is_type[w] for w in typed]))
            counts.append({"library": lib.code, "element": ref.element, "target": "",
                           "checked": rows.height, "missing": unknown.height, "name_mismatch": 0})
            out.append(unknown.with_columns(pl.lit(None, pl.String).alias("__expected")).select(
                pl.lit(lib.code).alias("library"), pl.lit(ref.element).alias("element"), pl.lit("invalid").alias("kind"),
                pl.lit(None, pl.String).alias("target"), entity_key(lib).alias("entity_key"), value.alias("value"),
                (pl.col(ref.name_field) if ref.name_field else pl.lit(None, pl.String)).alias("name"),
                pl.col("__expected").alias("expected_name"),
                _lineage(unknown, ref.element, 0), _lineage(unknown, ref.element, 1),
            ))
        for t in ref.targets:
            tlib = catalogue.library(t.library)
            if len(tlib.key) != 1:
                continue
            if t.library in empty:
                continue  # nothing delivered into the target library yet: there is nothing to check against
            sel = rows.filter(is_type[t.when_type]) if t.when_type in is_type else rows
            target = targets[t.library].select(
                pl.col(tlib.key[0]).alias(ref.element),
                (pl.col(t.name_element) if t.name_element else pl.lit(None, pl.String)).alias("__expected"),
                pl.lit(True).alias("__found"),
            )
            joined = sel.join(target, on=ref.element, how="left")
            missing = joined.filter(pl.col("__found").is_null() & absent_counts)
            mismatch = joined.filter(pl.col("__found").is_not_null()) if ref.name_field and t.name_element else None
            if mismatch is not None:
                mismatch = mismatch.filter(pl.col(ref.name_field) != pl.col("__expected"))
            counts.append({"library": lib.code, "element": ref.element, "target": t.library,
                           "checked": joined.filter(pl.col("__found").is_not_null() | absent_counts).height,
                           "missing": missing.height,
                           "name_mismatch": 0 if mismatch is None else mismatch.height})
            for kind, frame in (("missing", missing), ("name_mismatch", mismatch)):
                if frame is None or frame.height == 0:
                    continue
                # the finding is about the value that is wrong: the holder code when it is missing,
                # the name when it differs — each may come from a different delivery
                about = ref.name_field if kind == "name_mismatch" and ref.name_field else ref.element
                out.append(frame.select(
                    pl.lit(lib.code).alias("library"), pl.lit(ref.element).alias("element"), pl.lit(kind).alias("kind"),
                    pl.lit(t.library).alias("target"), entity_key(lib).alias("entity_key"),
                    value.alias("value"),
                    (pl.col(ref.name_field) if ref.name_field else pl.lit(None, pl.String)).alias("name"),
                    pl.col("__expected").cast(pl.String).alias("expected_name"),
                    _lineage(frame, about, 0), _lineage(frame, about, 1),
                ))
    failures = pl.concat([f.cast(REF_SCHEMA) for f in out]) if out else pl.DataFrame(schema=REF_SCHEMA)
    return failures, pl.DataFrame(counts, schema={"library": pl.String, "element": pl.String, "target": pl.String,
                                                  "checked": pl.Int64, "missing": pl.Int64, "name_mismatch": pl.Int64})
