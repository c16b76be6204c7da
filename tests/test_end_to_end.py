"""End to end through Dagster and the ``gongshu`` command, on a city the code has never seen."""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterInstance

from pipelines.demo_api import serve_in_thread
from tests import citykit
from tests.citykit import PEOPLE

REPO = Path(__file__).resolve().parent.parent
GONGSHU = str(Path(sys.executable).parent / "gongshu")
DAY = dt.date(2026, 10, 9)

pytestmark = pytest.mark.slow


def gongshu(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([GONGSHU, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture
def second_city(tmp_path: Path, warehouse_url: str):
    folder = citykit.write_catalogue(tmp_path)
    landing = tmp_path / "landing"
    citykit.deliver_day1(landing, DAY)
    server, base = serve_in_thread(landing)
    env = {
        **os.environ,
        "GONGSHU_CATALOG": str(folder),
        "GONGSHU_LANDING": str(landing),
        "GONGSHU_WAREHOUSE_URL": warehouse_url,
        "GONGSHU_HOME": str(tmp_path / "home"),
        "DAGSTER_HOME": str(tmp_path / "dagster"),
        "SHANHAI_QIYE_URL": f"{base}/qiye",
        "GONGSHU_PSEUDONYM_KEY": "end-to-end-test-key-0123456789",
    }
    yield env
    server.shutdown()
    server.server_close()


def test_a_second_city_runs_end_to_end_through_dagster_with_no_code_change(second_city) -> None:
    out = gongshu(["run", "--date", DAY.isoformat()], second_city)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "成功" in out.stdout and "Traceback" not in out.stderr
    # the summary: every resource reconciled, every library filled
    assert "huzheng/renkou 常住人口" in out.stdout and "✗" not in out.stdout
    lines = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert lines["人口库"].split()[1:] == ["3", "3"]
    assert lines["证照库"].split()[1:] == ["3", "3"]

    with DagsterInstance.from_config(second_city["DAGSTER_HOME"]) as instance:
        ev = instance.get_latest_materialization_event(AssetKey(["std", "huzheng", "renkou"]))
        md = ev.asset_materialization.metadata
        assert md["对账"].value == "3 = 3 + 0"
        assert ev.asset_materialization.partition == DAY.isoformat()
        preview = md["预览(已脱敏)"].value
        hutool = f"`{PEOPLE[0][0][0]}{'*' * 15}{PEOPLE[0][0][-2:]}`"  # 出生日期 is in the same row
        assert PEOPLE[0][0] not in preview and hutool in preview
        assert "王小明" not in preview and "王***" in preview
        # the ODS preview of a batch received in the run (from the rows in memory), masked the same way
        ods_md = instance.get_latest_materialization_event(
            AssetKey(["ods", "huzheng", "renkou"])).asset_materialization.metadata
        assert ods_md["批次号"].value == f"huzheng_renkou.{DAY:%Y%m%d}.1"
        ods_preview = ods_md["预览(已脱敏)"].value
        assert PEOPLE[0][0] not in ods_preview and hutool in ods_preview
        assert "王小明" not in ods_preview and "王***" in ods_preview and "_batch_id" not in ods_preview
        base = instance.get_latest_materialization_event(AssetKey(["base", "people"])).asset_materialization
        assert base.metadata["新增实体"].value == 3
        # each rule-group check links the Great Expectations Data Docs page of this batch's validation
        key = AssetCheckKey(AssetKey(["std", "huzheng", "renkou"]), "completeness")
        check = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
        link = check.event.dagster_event.event_specific_data.metadata["GX Data Docs"].value
        page = Path(link.removeprefix("file://"))
        assert page.is_relative_to(Path(second_city["GONGSHU_HOME"]) / "gx_docs") and page.exists()
        text = " ".join(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")).split())
        assert "Expectation Suite: huzheng_renkou" in text and "Evaluated Expectations" in text
        assert all(p[0] not in text for p in PEOPLE)

    again = gongshu(["run", "--date", DAY.isoformat(), "--no-summary"], second_city)
    assert again.returncode == 0, again.stderr


def test_a_broken_catalogue_stops_the_command_with_one_clear_message(second_city, tmp_path: Path) -> None:
    folder = Path(second_city["GONGSHU_CATALOG"])
    res = folder / "resources" / "huzheng_renkou.yaml"
    res.write_text(res.read_text(encoding="utf-8").replace("element: full_name", "element: fullname"), encoding="utf-8")
    out = gongshu(["catalog", "check"], second_city)
    assert out.returncode == 2
    assert "huzheng_renkou.yaml: fields.1.element: 'fullname' 不是 人口库 的数据元" in out.stderr
    assert "Traceback" not in out.stderr
