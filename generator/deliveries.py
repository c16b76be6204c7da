"""One delivery = one resource on one batch date: which entities, in which order, as which text.

Rows are rendered in the department's own format (the field's first date format, code values
translated back through the field's mapping), slots get their defects, and the rows are put in
the order a reader will see them: file order for files and APIs, and for a 前置库 table the
reader's ``ORDER BY <watermark>, <columns>`` — so the row numbers in the manifest are exactly the
``_row_no`` the channel readers assign.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from catalog.models import DatabaseChannel, ElementType, Resource
from generator.defects import DefectRow, Injector, inverse_codes
from generator.population import EID, World

ORDER, REC = "_order", "_rec"


@dataclass
class Delivery:
    """One resource on one batch date, as written."""
    resource: Resource
    day: dt.date
    frame: pl.DataFrame  # the delivered columns, as text, in delivery order
    records: list[dict]  # injected defects, with their row numbers

    @property
    def rows(self) -> int:
        return self.frame.height


def output_columns(resource: Resource) -> list[str]:
    """The columns a delivery has: the field columns, plus the watermark of a 前置库 table."""
    cols = [f.column for f in resource.fields]
    ch = resource.channel
    if isinstance(ch, DatabaseChannel) and ch.watermark not in cols:
        cols.append(ch.watermark)
    return cols


def render(world: World, resource: Resource, rows: pl.DataFrame) -> pl.DataFrame:
    """Canonical rows → the department's columns, every value as text."""
    lib = world.catalogue.library(resource.library)
    exprs = [pl.col(EID)]
    for fm in resource.fields:
        e = lib.element(fm.element)
        c = pl.col(fm.element)
        if e.type in (ElementType.date, ElementType.datetime):
            c = c.dt.strftime(fm.formats[0])
        elif fm.codes:
            c = c.cast(pl.String).replace(inverse_codes(fm))
        exprs.append(c.cast(pl.String).alias(fm.column))
    return rows.select(exprs)


def delivered_entities(world: World, resource: Resource, day: dt.date) -> np.ndarray:
    """Entity ids in the delivery: coverage (+ conflict authorities, + slots), or the changed ones."""
    pool = world.pool_of(resource)
    sch = world.schedule
    if not sch.full(resource, day):
        parts = [c.values.get_column(EID).to_numpy() for c in pool.changes if c.resource == resource.id and c.day == day]
        return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)
    normal = pool.coverage[resource.id]
    if sch.is_truncated(resource, day):
        assert world.cfg.truncated is not None
        normal = normal[: round(world.cfg.truncated.keep * len(normal))]
    slots = [s.entity for s in pool.slots if s.resource.id == resource.id and s.day == day]
    # normal, conflict-authority and slot entities are disjoint sets (reservation guarantees it)
    extra = pool.extra.get(resource.id, np.zeros(0, dtype=np.int64))
    return np.sort(np.concatenate([normal, extra, np.array(slots, dtype=np.int64)]))


def reading_order(frame: pl.DataFrame, seconds: str, columns: list[str]) -> np.ndarray:
    """Row permutation for ``ORDER BY <watermark>, <columns>`` as SQLite sorts TEXT (bytes, NULL first).

    The watermark is one batch day, so its text sorts like its second of the day. Sorting by
    (second, first column) settles almost every row with a small key; only rows still tied are
    sorted again by all columns (a full multi-column sort of ten million rows costs gigabytes).
    """
    first = columns[0]
    perm = frame.select(pl.arg_sort_by([pl.col(seconds), pl.col(first)], maintain_order=True)).to_series()
    keys = frame.select(pl.col(seconds).gather(perm), pl.col(first).gather(perm))
    same = (keys.get_column(seconds) == keys.get_column(seconds).shift(1)) & \
        keys.get_column(first).eq_missing(keys.get_column(first).shift(1))
    tied = same.fill_null(False) | same.shift(-1).fill_null(False)
    order = perm.to_numpy().copy()
    if tied.any():
        pos = np.flatnonzero(tied.to_numpy())
        sub = frame.select(pl.all().gather(pl.Series(order[pos]))).with_row_index("__i")
        sub = sub.sort([seconds, *columns], maintain_order=True)
        order[pos] = order[pos][sub.get_column("__i").to_numpy()]
    return order


def build_delivery(world: World, resource: Resource, day: dt.date) -> Delivery:
    """The rows ``resource`` delivers for ``day``, defects injected, in reading order."""
    pool = world.pool_of(resource)
    sch = world.schedule
    slots = [s for s in pool.slots if s.resource.id == resource.id and s.day == day] if sch.full(resource, day) else []
    ids = delivered_entities(world, resource, day)
    canonical = pool.state(ids, day, [f.element for f in resource.fields])
    slot_ids = pl.Series([s.entity for s in slots], dtype=pl.Int64).implode()
    raw = canonical.filter(pl.col(EID).is_in(slot_ids)) if slots else None
    frame = render(world, resource, canonical)
    del canonical  # the largest frames of a run: keep at most two alive at a time
    if slots:
        frame = frame.filter(~pl.col(EID).is_in(slot_ids))
    frame = frame.with_columns(pl.col(EID).cast(pl.Float64).alias(ORDER), pl.lit(-1, pl.Int64).alias(REC)).drop(EID)

    defect_rows: list[DefectRow] = []
    twins: dict[int, int] = {}
    if slots and raw is not None:
        # incremental days: a repeated slot gets the text it got on the first day
        drawn = sch.deliveries[resource.id][0] if world.cfg.incremental else day
        injector = Injector(world, resource, world.rng("defects", resource.id, drawn.isoformat()))
        by_eid = {d[EID]: d for d in raw.to_dicts()}
        canons = [{**by_eid[s.entity], **s.overrides} for s in slots]
        # one render for all slot rows: the same expressions as the clean rows, so the same text
        rows = [{c: canon.get(c) for c in raw.columns} for canon in canons]
        texts = render(world, resource, pl.DataFrame(rows, schema=raw.schema)).to_dicts()
        for s, canon, text in zip(slots, canons, texts, strict=True):
            rows_of_slot = injector.apply(s, text, canon)
            # the copies of a delivered-twice key: later copies point at the first one
            twins.update({len(defect_rows) + i: len(defect_rows) for i in range(1, len(rows_of_slot))})
            defect_rows += rows_of_slot
    columns = [f.column for f in resource.fields]
    if defect_rows:
        extra = pl.DataFrame(
            [{**{c: d.values.get(c) for c in columns}, ORDER: d.order, REC: i} for i, d in enumerate(defect_rows)],
            schema={**{c: pl.String for c in columns}, ORDER: pl.Float64, REC: pl.Int64},
        )
        frame = pl.concat([frame, extra], how="vertical")

    ch = resource.channel
    if isinstance(ch, DatabaseChannel):
        rng = world.rng("watermark", resource.id, day.isoformat())
        # inside the batch day (Asia/Shanghai local time), away from midnight on either side
        frame = frame.with_columns(pl.Series("__s", rng.integers(1800, 84600, frame.height), dtype=pl.Int64))
        if twins:
            # A key delivered twice is a duplicate only at the same watermark: rows of one key at
            # different watermarks are its history (assets.standardize), so the copies share one.
            first = pl.DataFrame({REC: list(twins), "__first": list(twins.values())}, schema={REC: pl.Int64, "__first": pl.Int64})
            at = frame.filter(pl.col(REC).is_in(list(twins.values()))).select(pl.col(REC).alias("__first"), pl.col("__s").alias("__s1"))
            frame = frame.join(first, on=REC, how="left").join(at, on="__first", how="left").with_columns(
                pl.coalesce("__s1", "__s").alias("__s")).drop("__first", "__s1")
        order = reading_order(frame, "__s", columns)
        start = dt.datetime.combine(day, dt.time())
        frame = frame.select(pl.all().gather(pl.Series(order))).with_columns(
            (pl.lit(start) + pl.duration(seconds=pl.col("__s"))).dt.strftime("%Y-%m-%d %H:%M:%S").alias(ch.watermark))
    else:
        frame = frame.sort([ORDER, REC], maintain_order=True)

    recs = frame.get_column(REC).to_numpy()
    records = []
    for pos in np.flatnonzero(recs >= 0):
        rec = dict(defect_rows[int(recs[pos])].record)
        rec["row"] = int(pos) + 1
        records.append(rec)
    return Delivery(resource, day, frame.select(output_columns(resource)), records)
