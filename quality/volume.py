"""Volume check (记录完整性): a delivery far smaller than its recent deliveries is suspicious.

Compared with the median row count of the resource's last deliveries (other batch dates); below
``ratio`` × median it warns (``GONGSHU_VOLUME_MIN_RATIO``, default :data:`MIN_RATIO`). A truncated
file is the usual cause.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass

import sqlalchemy as sa

from catalog.models import Resource
from warehouse.store import Warehouse

HISTORY = 7
MIN_RATIO = 0.5  # warn below this share of the recent median


@dataclass(frozen=True)
class Volume:
    rows: int
    previous: tuple[int, ...]
    median: float | None
    ratio: float

    @property
    def ok(self) -> bool:
        return self.median is None or self.rows >= self.ratio * self.median

    @property
    def share(self) -> float | None:
        return self.rows / self.median if self.median else None


def assess(rows: int, previous: list[int], ratio: float = MIN_RATIO) -> Volume:
    """Pure: compare ``rows`` with the median of ``previous`` (none yet: nothing to compare)."""
    prev = tuple(previous[-HISTORY:])
    return Volume(rows, prev, statistics.median(prev) if prev else None, ratio)


def previous_volumes(wh: Warehouse, conn, resource: Resource, batch_date: dt.date) -> list[int]:
    """Rows of the newest batch of each earlier batch date, oldest first (last ``HISTORY``).

    A 前置库 (database) channel delivers incrementally after its first, full load: its deliveries
    are compared only with earlier incremental ones, never with the initial load (a configured
    ``initial_load`` batch, read without a low watermark, or else the resource's first non-empty batch).
    Empty deliveries (an API or 前置库 with nothing for that day) are no baseline.
    """
    if not wh.exists("ods", "batches"):
        return []
    t = wh.qualified("ods", "batches")
    incremental = (f" AND watermark_low IS NOT NULL AND batch_date > (SELECT MIN(batch_date) FROM {t} "
                   "WHERE resource_id = :r AND rows_delivered > 0)") if resource.channel.kind == "database" else ""
    result = conn.execute(sa.text(
        f"SELECT b.batch_date, b.rows_delivered FROM {t} b JOIN (SELECT batch_date, MAX(seq) AS seq FROM {t} "
        f"WHERE resource_id = :r AND batch_date < :d{incremental} GROUP BY batch_date) m "
        "ON b.batch_date = m.batch_date AND b.seq = m.seq WHERE b.resource_id = :r AND b.rows_delivered > 0 "
        f"ORDER BY b.batch_date DESC LIMIT {HISTORY}"), {"r": resource.id, "d": batch_date}).fetchall()
    return [int(r[1]) for r in reversed(result)]
