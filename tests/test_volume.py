"""Volume check: a delivery far below the median of the recent ones warns."""

from __future__ import annotations

import datetime as dt

from guiji.ods import ingest
from quality.volume import assess, previous_volumes
from tests import citykit
from warehouse.store import Warehouse


def test_assess_compares_with_the_median_of_recent_deliveries() -> None:
    assert assess(100, [], 0.5).ok  # no history yet
    v = assess(40, [100, 90, 110, 1000], 0.5)
    assert v.median == 105 and not v.ok and round(v.share, 3) == 0.381
    assert assess(60, [100, 90, 110], 0.5).ok


def test_previous_volumes_take_the_newest_batch_of_each_earlier_date(warehouse: Warehouse, city) -> None:
    cat, landing = city
    res = cat.resource("zhengzhao_zheng")
    for i, n in enumerate([5, 6, 7]):
        day = dt.date(2026, 10, 1) + dt.timedelta(days=i)
        citykit.write_json(landing / "zz" / f"{day:%Y%m%d}" / "z.json",
                           [{"no": f"A-{j}", "owner": "x", "owner_name": "y"} for j in range(n)])
        ingest(warehouse, cat, res, day, landing)
    # a re-delivery of 2026-10-02 with 9 rows replaces 6 as that date's volume
    citykit.write_json(landing / "zz" / "20261002" / "z.json",
                       [{"no": f"A-{j}", "owner": "x", "owner_name": "y"} for j in range(9)])
    ingest(warehouse, cat, res, dt.date(2026, 10, 2), landing)
    with warehouse.engine.connect() as conn:
        assert previous_volumes(warehouse, conn, res, dt.date(2026, 10, 4)) == [5, 9, 7]
        assert previous_volumes(warehouse, conn, res, dt.date(2026, 10, 2)) == [5]
