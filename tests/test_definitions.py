"""The Dagster code location built from the demo catalogue: keys, groups, owners, schedule."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey

from assets.factory import build_assets
from assets.keys import daily_partitions
from catalog.loader import DEMO_CATALOGUE, load_catalogue
from pipelines.jobs import NIGHTLY_JOB, build_jobs_and_schedules

REPO = Path(__file__).resolve().parent.parent


def test_every_resource_and_library_becomes_assets_grouped_by_base_library() -> None:
    cat = load_catalogue(DEMO_CATALOGUE)
    assets = build_assets(cat, daily_partitions(cat))
    specs = {spec.key: spec for a in assets for spec in a.specs}
    assert len(specs) == 2 * len(cat.resources) + len(cat.libraries)
    hjrk = specs[AssetKey(["ods", "gaj", "hjrk"])]
    assert hjrk.group_name == "person"
    assert hjrk.owners == ["team:gaj"] and hjrk.tags["department"] == "gaj"
    assert "市公安局「户籍人口信息」" in hjrk.description and "前置库" in hjrk.description
    assert specs[AssetKey(["std", "rsj", "sbcb"])].group_name == "person"
    assert specs[AssetKey(["std", "rsj", "sbcb"])].deps[0].asset_key == AssetKey(["ods", "rsj", "sbcb"])
    lic = specs[AssetKey(["base", "license"])]
    assert lic.group_name == "license"
    assert {d.asset_key for d in lic.deps} == {
        AssetKey(["std", "scjg", "yyzz"]), AssetKey(["std", "zrzy", "bdcqz"]), AssetKey(["std", "mzj", "jhz"])}
    assert "营业执照→市市场监管局" in lic.description


def test_the_nightly_job_runs_at_two_in_the_city_time_zone_for_the_previous_day() -> None:
    cat = load_catalogue(DEMO_CATALOGUE)
    parts = daily_partitions(cat)
    jobs, schedules = build_jobs_and_schedules(parts)
    assert [j.name for j in jobs] == [NIGHTLY_JOB]
    s = schedules[0]
    assert s.cron_schedule == "0 2 * * *" and s.execution_timezone == "Asia/Shanghai"
    assert parts.timezone == "Asia/Shanghai"


def test_dagster_validates_the_code_location(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "GONGSHU_HOME": str(tmp_path)}
    (tmp_path / "dagster.yaml").write_text((REPO / "dagster.yaml").read_text(encoding="utf-8"), encoding="utf-8")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "validation successful" in (out.stdout + out.stderr).lower()
