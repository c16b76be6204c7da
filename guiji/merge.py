"""基础库 merge by authority (一数一源), as pure polars.

Each value of a base library comes from the one department the catalogue names as its
authority; copies from other departments are kept in the 标准层 for comparison, never merged.
The library keeps history: an entity gets a new version (valid_from = batch date) whenever an
authoritative value changes, and the version it replaces is closed (valid_to = batch date).
Nothing is deleted, and merging the same batch date twice changes nothing.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import polars as pl

from catalog.loader import Catalogue
from catalog.models import Library, Resource
from warehouse.base import VALID_FROM, VALID_TO, base_schema, lineage, value_elements


def incoming_values(
    catalogue: Catalogue, lib: Library, batches: list[tuple[Resource, int, pl.DataFrame]]
) -> pl.DataFrame:
    """The authoritative values delivered on one batch date, one row per entity.

    ``batches`` holds (resource, batch number, accepted std rows). A value is taken only from the
    department that is its authority (for discriminated libraries, only for the discriminator
    values that department is the authority of). Values that are null mean "not delivered".
    """
    elements = value_elements(lib)
    parts = []
    for resource, batch_no, frame in batches:
        auth = catalogue.authoritative_elements(resource)
        if not auth or frame.height == 0:
            continue
        exprs: list[pl.Expr] = [pl.col(k) for k in lib.key]
        for code in elements:
            if code not in auth:
                continue
            values = auth[code]
            v = pl.col(code)
            if values is not None:
                assert lib.discriminator is not None
                v = pl.when(pl.col(lib.discriminator.element).is_in(values)).then(v)
            b, r = lineage(code)
            exprs += [
                v.alias(code),
                pl.when(v.is_not_null()).then(pl.lit(batch_no, pl.Int64)).alias(b),
                pl.when(v.is_not_null()).then(pl.col("_row_no")).alias(r),
            ]
        parts.append(frame.select(exprs))
    schema = base_schema(lib)
    cols = [c for c in schema if c not in (VALID_FROM, VALID_TO)]
    if not parts:
        return pl.DataFrame(schema={c: schema[c] for c in cols})
    if len(parts) == 1:
        return _complete(parts[0], schema, cols)  # keys are unique inside one accepted batch
    # Several resources: every key once (first appearance), each resource's values joined on
    # (keys are unique inside each accepted batch), and per element the first resource that
    # delivers it non-null wins, its batch and row with it.
    key_frame = pl.concat([p.select(lib.key) for p in parts], how="vertical_relaxed").unique(
        maintain_order=True)
    joined = key_frame
    providers: dict[str, list[int]] = {code: [] for code in elements}
    for i, part in enumerate(parts):
        own = [c for c in part.columns if c not in lib.key]
        for code in elements:
            if code in own:
                providers[code].append(i)
        joined = joined.join(part.rename({c: f"{c}__{i}" for c in own}), on=lib.key, how="left",
                             coalesce=True, nulls_equal=False)
    exprs: list[pl.Expr] = [pl.col(k) for k in lib.key]
    for code in elements:
        b, r = lineage(code)
        idx = providers[code]
        if not idx:
            exprs += [pl.lit(None, schema[c]).alias(c) for c in (code, b, r)]
            continue
        exprs.append(pl.coalesce([pl.col(f"{code}__{i}") for i in idx]).alias(code))
        for col in (b, r):
            pick = pl.when(pl.col(f"{code}__{idx[0]}").is_not_null()).then(pl.col(f"{col}__{idx[0]}"))
            for i in idx[1:]:
                pick = pick.when(pl.col(f"{code}__{i}").is_not_null()).then(pl.col(f"{col}__{i}"))
            exprs.append(pick.otherwise(None).alias(col))
    return joined.select(exprs).select([pl.col(c).cast(schema[c]) for c in cols])


def _complete(part: pl.DataFrame, schema: dict[str, pl.DataType], cols: list[str]) -> pl.DataFrame:
    return part.select([pl.col(c).cast(schema[c]) if c in part.columns else pl.lit(None, schema[c]).alias(c)
                        for c in cols])


@dataclass
class MergePlan:
    """What one batch date does to the entities whose history ends before it (the usual night)."""

    insert: pl.DataFrame  # new versions, valid_from = batch date
    close: pl.DataFrame  # keys whose current version ends at the batch date
    new_entities: int
    changed_entities: int
    unchanged: int


def plan_merge(lib: Library, incoming: pl.DataFrame, current: pl.DataFrame, batch_date: dt.date) -> MergePlan:
    """Compare incoming authoritative values with the current versions of the same entities.

    ``current`` holds only versions that started before ``batch_date`` and are still open: the
    batch date extends each history at its end. Everything else is :func:`fold_history`'s.
    """
    key = lib.key
    elements = value_elements(lib)
    schema = base_schema(lib)
    cur = current.select([pl.col(c).alias(f"{c}__cur") if c not in key else pl.col(c) for c in current.columns])
    j = incoming.join(cur, on=key, how="left", nulls_equal=False)
    exists = pl.col(f"{VALID_FROM}__cur").is_not_null()
    changed_cols = []
    out: list[pl.Expr] = [pl.col(k) for k in key]
    for code in elements:
        b, r = lineage(code)
        new, old = pl.col(code), pl.col(f"{code}__cur")
        changed = new.is_not_null() & (old.is_null() | (new != old))
        changed_cols.append(changed)
        out += [
            pl.when(changed).then(new).otherwise(old).alias(code),
            pl.when(changed).then(pl.col(b)).otherwise(pl.col(f"{b}__cur")).alias(b),
            pl.when(changed).then(pl.col(r)).otherwise(pl.col(f"{r}__cur")).alias(r),
        ]
    any_changed = pl.any_horizontal(changed_cols) if changed_cols else pl.lit(False)
    j = j.with_columns((~exists).alias("__new"), (exists & any_changed).alias("__changed"))
    insert = j.filter(pl.col("__new") | pl.col("__changed")).select(
        out + [pl.lit(batch_date).alias(VALID_FROM), pl.lit(None, pl.Date).alias(VALID_TO)]
    ).select([pl.col(c).cast(t) for c, t in schema.items()])
    counts = j.select(pl.col("__new").sum().alias("new"), pl.col("__changed").sum().alias("changed")).row(0, named=True)
    return MergePlan(
        insert=insert,
        close=j.filter(pl.col("__changed")).select(key),
        new_entities=int(counts["new"]),
        changed_entities=int(counts["changed"]),
        unchanged=incoming.height - int(counts["new"]) - int(counts["changed"]),
    )


def fold_history(lib: Library, seed: pl.DataFrame, facts: list[tuple[dt.date, pl.DataFrame]]) -> pl.DataFrame:
    """The versions of some entities, folded from what was delivered, in batch-date order.

    ``seed``: each entity's version just before the earliest fact date (base-library rows; empty
    for entities that are new there) — it stands for everything delivered before. ``facts``: per
    batch date, the authoritative values delivered that day (:func:`incoming_values`, one row per
    entity). A value holds from the date it was delivered until another value is delivered; a null
    is "not delivered"; a value delivered again unchanged keeps the lineage of its first delivery;
    an entity has a version from its first delivery on, and a new one on every date a value changes.

    The result depends only on the facts, never on the order the dates were merged in: the merge
    uses it whenever a batch date lands inside an entity's history (a backfill, a re-delivery).
    """
    key = lib.key
    schema = base_schema(lib)
    cols = [c for c in schema if c not in (VALID_FROM, VALID_TO)]
    parts = [seed.select(cols).with_columns(seed.get_column(VALID_FROM).alias("__date"))] if seed.height else []
    parts += [f.select(cols).with_columns(pl.lit(d, pl.Date).alias("__date")) for d, f in facts if f.height]
    if not parts:
        return pl.DataFrame(schema=schema)
    rows = pl.concat([p.cast({**{c: schema[c] for c in cols}, "__date": pl.Date()}) for p in parts]).sort([*key, "__date"])
    elements = value_elements(lib)
    # a value starts where it is delivered and differs from the value held until then
    rows = rows.with_columns(
        (pl.col(c).is_not_null() & (pl.col(c).forward_fill().shift(1).over(key).is_null()
                                    | (pl.col(c) != pl.col(c).forward_fill().shift(1).over(key)))).alias(f"__start_{c}")
        for c in elements
    )
    held: list[pl.Expr] = []
    for c in elements:
        b, r = lineage(c)
        start = pl.col(f"__start_{c}")
        held += [pl.col(c).forward_fill().over(key).alias(c),
                 pl.when(start).then(pl.col(b)).forward_fill().over(key).alias(b),
                 pl.when(start).then(pl.col(r)).forward_fill().over(key).alias(r)]
    first = pl.int_range(pl.len()).over(key) == 0
    boundary = first | pl.any_horizontal([pl.col(f"__start_{c}") for c in elements]) if elements else first
    versions = rows.with_columns(*held, boundary.alias("__boundary")).filter(pl.col("__boundary"))
    return versions.with_columns(
        pl.col("__date").alias(VALID_FROM), pl.col("__date").shift(-1).over(key).alias(VALID_TO),
    ).select([pl.col(c).cast(t) for c, t in schema.items()])
