"""时效性 through real storage (SQLite and PostgreSQL): last deliveries, quality.freshness, the summary,
and the ``freshness`` check executed inside a partitioned run."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from dagster import AssetCheckKey, AssetKey, AssetSelection, instance_for_test, materialize

from assets.factory import build_resource_assets
from assets.freshness import CHECK_NAME, build_freshness_checks
from assets.keys import daily_partitions
from assets.resources import LandingResource, Settings, WarehouseResource
from catalog.loader import DEMO_CATALOGUE, Catalogue, load_catalogue
from quality.freshness import calendar
from quality.freshness.evaluate import LastDelivery
from quality.freshness.render import freshness_lines, summary_time
from quality.freshness.store import evaluate_catalogue, read_freshness, read_last_deliveries, store_freshness
from tests import citykit
from tests.test_sensors import deliver
from tests.test_terminal import columns_aligned
from warehouse.store import Warehouse

TZ = ZoneInfo("Asia/Shanghai")


@pytest.fixture(scope="module")
def demo() -> Catalogue:
    return load_catalogue(DEMO_CATALOGUE)


def test_the_last_delivery_is_the_newest_batch_that_brought_readable_rows(warehouse: Warehouse, demo) -> None:
    deliver(warehouse, demo, "gaj_hjrk", "2026-11-18")
    deliver(warehouse, demo, "gaj_hjrk", "2026-11-19", seq=1)
    deliver(warehouse, demo, "gaj_hjrk", "2026-11-19", seq=2)
    deliver(warehouse, demo, "gaj_hjrk", "2026-11-20", rows=0)  # nothing delivered
    deliver(warehouse, demo, "gaj_hjrk", "2026-11-25")  # after the day asked about
    deliver(warehouse, demo, "rsj_sbcb", "2026-11-20")
    with warehouse.begin() as conn:  # a delivery whose every record failed to parse
        conn.exec_driver_sql(f"UPDATE {warehouse.qualified('ods', 'batches')} SET rows_unparseable = rows_delivered "
                             "WHERE resource_id = 'rsj_sbcb'")

    last = read_last_deliveries(warehouse, dt.date(2026, 11, 21))
    assert set(last) == {"gaj_hjrk"}
    assert last["gaj_hjrk"] == LastDelivery("gaj_hjrk.20261119.2", dt.date(2026, 11, 19),
                                               dt.datetime(2026, 11, 19, 18, 5), 100)
    assert read_last_deliveries(warehouse, dt.date(2026, 11, 30))["gaj_hjrk"].batch_date == dt.date(2026, 11, 25)


def test_the_state_table_holds_one_row_per_resource_and_when_its_status_began(warehouse: Warehouse, demo) -> None:
    assert read_freshness(warehouse).height == 0
    deliver(warehouse, demo, "swj_nsrdj", "2026-11-02")  # weekly: due 11-10, stale from 11-11 00:00
    first = evaluate_catalogue(warehouse, demo, dt.datetime(2026, 11, 10, 12, 0, tzinfo=TZ))
    store_freshness(warehouse, first)
    store_freshness(warehouse, evaluate_catalogue(warehouse, demo, dt.datetime(2026, 11, 10, 13, 0, tzinfo=TZ)))
    store_freshness(warehouse, evaluate_catalogue(warehouse, demo, dt.datetime(2026, 11, 11, 9, 0, tzinfo=TZ)))

    state = read_freshness(warehouse)
    assert state.height == len(demo.resources)
    swj = state.filter(pl.col("resource_id") == "swj_nsrdj").row(0, named=True)
    assert (swj["status"], swj["update_cycle"], swj["allowance"]) == ("stale", "每周", "7 天 + 1 个工作日")
    assert swj["last_batch_id"] == "swj_nsrdj.20261102.1" and swj["last_batch_date"] == dt.date(2026, 11, 2)
    assert swj["delivered_at"] == dt.datetime(2026, 11, 2, 16, 0)  # 11-03 00:00 city time, stored in UTC
    assert swj["due_at"] == dt.datetime(2026, 11, 9, 16, 0) and swj["deadline_at"] == dt.datetime(2026, 11, 10, 16, 0)
    assert swj["lag_hours"] == pytest.approx(8 * 24 + 9) and swj["evaluated_at"] == dt.datetime(2026, 11, 11, 1, 0)
    assert swj["status_since"] == dt.datetime(2026, 11, 11, 1, 0)  # turned stale at this evaluation
    hjrk = state.filter(pl.col("resource_id") == "gaj_hjrk").row(0, named=True)
    assert hjrk["status"] == "missing" and hjrk["last_batch_id"] is None
    assert hjrk["status_since"] == dt.datetime(2026, 11, 10, 4, 0)  # missing since the first evaluation


def test_the_run_summary_names_the_stale_resource(warehouse: Warehouse, demo) -> None:
    day = dt.date(2026, 11, 21)
    for r in demo.resources:
        if r.id != "swj_nsrdj" and r.id != "zrzy_bdcqz":
            deliver(warehouse, demo, r.id, day.isoformat())
    deliver(warehouse, demo, "swj_nsrdj", (day - dt.timedelta(days=12)).isoformat())  # the generator's stale one
    now = summary_time(day, TZ, dt.datetime(2026, 11, 30, tzinfo=dt.UTC))
    assert now == dt.datetime(2026, 11, 22, 9, 0, tzinfo=TZ)  # a past batch date is judged the morning after

    lines = freshness_lines(warehouse, demo, now)
    text = "\n".join(lines)
    assert "时效 · 截至 2026-11-22 09:00 (Asia/Shanghai)" in text
    swj = next(line for line in lines if line.startswith("swj/nsrdj"))
    assert "每周" in swj and "2026-11-09 24:00" in swj and "2026-11-17 24:00" in swj and swj.endswith("超期")
    assert next(line for line in lines if line.startswith("gaj/hjrk")).endswith("正常")
    assert next(line for line in lines if line.startswith("zrzy/bdcqz")).endswith("未交付")
    assert lines[-2] == "需关注: 市税务局「纳税人登记信息」超期 3 个工作日; 市自然资源和规划局「不动产权证书」未交付"
    # the monthly 标准地址 may deliver until 2027-01-08, a year chinesecalendar 1.11 does not know yet
    assert lines[-1] == "注: chinesecalendar 尚未收录 2027 年的节假日安排, 该年按周一至周五计算工作日。"
    assert "✗" not in text
    # columns padded by display width: each resource's status starts where the header's 状态 does
    table = lines[2:-2]
    assert table[0].startswith("资源") and len(table) == len(demo.resources) + 1
    assert columns_aligned(table, ["资源", *[line[:6] for line in table[1:]]],
                           ["状态", *[line.rsplit("  ", 1)[1] for line in table[1:]]])
    assert columns_aligned(table, ["资源", "swj/nsrdj"], ["更新周期", "每周"])


def test_the_freshness_check_runs_in_a_partitioned_run_and_writes_the_state(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(calendar, "clock", lambda: dt.datetime(2026, 11, 21, 9, 0, tzinfo=TZ))
    cat = load_catalogue(citykit.write_catalogue(tmp_path))
    landing = tmp_path / "landing"
    day = dt.date(2026, 11, 20)
    citykit.deliver_day1(landing, day)
    renkou = cat.resource("huzheng_renkou")
    ods = build_resource_assets(cat, renkou, daily_partitions(cat))
    checks = build_freshness_checks(cat)
    url = f"sqlite:///{tmp_path / 'w.db'}"
    key = AssetKey(["ods", "huzheng", "renkou"])
    with instance_for_test() as instance:
        result = materialize(
            [ods, checks], partition_key=day.isoformat(), instance=instance, selection=AssetSelection.assets(key),
            resources={"warehouse": WarehouseResource(url=url), "landing": LandingResource(path=str(landing)),
                       "settings": Settings(home=str(tmp_path / "home"))},
        )
        assert result.success
        [ev] = [e for e in result.get_asset_check_evaluations() if e.check_name == CHECK_NAME]
        assert ev.asset_check_key == AssetCheckKey(key, CHECK_NAME)
        assert ev.passed and ev.metadata["最近批次"].value == "huzheng_renkou.20261120.1"
        assert ev.metadata["更新周期"].value == "每日"
    state = read_freshness(Warehouse(url))
    assert state["resource_id"].to_list() == ["huzheng_renkou"]  # only the selected resource was evaluated
    assert state["last_batch_date"].to_list() == [day] and state["status"].to_list() == ["fresh"]
