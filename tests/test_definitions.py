"""The Dagster code location built from the demo catalogue: keys, groups, owners, schedule; it loads as
Dagster loads it (tests/codelocation.py) and matches its reviewed snapshot (tests/snapshots/definitions.yaml)."""

from __future__ import annotations

import difflib
import functools
from pathlib import Path

import pytest
import yaml
from dagster import AssetKey

from assets.factory import build_assets
from assets.keys import daily_partitions
from catalog.loader import DEMO_CATALOGUE, load_catalogue
from pipelines import cli
from pipelines.jobs import FORKSERVER_PRELOAD, NIGHTLY_JOB, build_jobs_and_schedules
from pipelines.snapshot import canonical_definitions, canonical_snapshot
from tests.codelocation import validate

REPO = Path(__file__).resolve().parent.parent
SNAPSHOT = REPO / "tests" / "snapshots" / "definitions.yaml"


def test_every_resource_and_library_becomes_assets_grouped_by_base_library() -> None:
    cat = load_catalogue(DEMO_CATALOGUE)
    assets = build_assets(cat, daily_partitions(cat))
    specs = {spec.key: spec for a in assets for spec in a.specs}
    assert len(specs) == 2 * len(cat.resources) + len(cat.libraries)
    hjrk = specs[AssetKey(["ods", "gaj", "hjrk"])]
    assert hjrk.group_name == "person"
    assert hjrk.owners == ["team:市公安局"] and hjrk.tags["department"] == "gaj"
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


def test_the_executor_starts_merges_then_resource_steps_before_any_later_stage() -> None:
    job = canonical_definitions().resolve_job_def(NIGHTLY_JOB)
    # one step per node of the job's graph; the executor sorts executable steps by dagster/priority
    priority = {n.name: int(n.definition.tags.get("dagster/priority", 0)) for n in job.graph.nodes}
    cat = load_catalogue(DEMO_CATALOGUE)
    merges = {f"base__{lib.code}" for lib in cat.libraries}
    resources = {f"guiji_{r.id}" for r in cat.resources}
    later = set(priority) - merges - resources  # checks, share outputs, tickets, scorecard, reports
    assert merges <= set(priority) and resources <= set(priority) and later
    assert min(priority[k] for k in merges) > max(priority[k] for k in resources) > max(priority[k] for k in later)


def test_dagster_loads_the_code_location_of_the_workspace() -> None:
    """What ``dagster definitions validate -w workspace.yaml`` checks, in-process (tests/codelocation.py)."""
    outcome = validate(REPO / "workspace.yaml")
    assert outcome.ok, "\n".join(loc.error or "" for loc in outcome.locations.values()) or outcome.partitions_error
    location = outcome.locations["gongshu"]
    expected = canonical_definitions().get_repository_def().assets_defs_by_key
    assert set(location.asset_keys) == {k.to_user_string() for k in expected}


@functools.cache
def _snapshot(**changes) -> str:
    return canonical_snapshot(**changes)


def test_the_code_location_matches_its_reviewed_snapshot(monkeypatch) -> None:
    # the environment of the test run cannot change the snapshot: demo catalogue, default settings
    monkeypatch.setenv("GONGSHU_MAX_CONCURRENT", "9")
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", "sqlite:///elsewhere.db")
    monkeypatch.delenv("GONGSHU_PSEUDONYM_KEY", raising=False)
    rendered = _snapshot()
    committed = SNAPSHOT.read_text(encoding="utf-8")
    if rendered != committed:
        diff = "".join(difflib.unified_diff(committed.splitlines(keepends=True), rendered.splitlines(keepends=True),
                                            "tests/snapshots/definitions.yaml (committed)", "the code location"))
        pytest.fail("The code location differs from its reviewed snapshot: run `make snapshot` and review the "
                    f"diff (git diff tests/snapshots/definitions.yaml).\n{diff}", pytrace=False)
    assert str(REPO) not in rendered and "/tmp/" not in rendered and "snapshot-placeholder" not in rendered


def _changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(removed, added) lines, in order."""
    diff = [d for d in difflib.ndiff(before.splitlines(), after.splitlines()) if d[:2] in ("- ", "+ ")]
    removed = [d[2:].strip() for d in diff if d.startswith("- ")]
    added = [d[2:].strip() for d in diff if d.startswith("+ ")]
    return list(zip(removed, added, strict=True))


@pytest.mark.parametrize(("change", "lines"), [
    # the nightly job's executor and the settings resource
    ({"max_concurrent": 4}, [("max_concurrent: 2", "max_concurrent: 4")] * 2),
    ({"blocking_min_pass_rate": 0.8}, [("blocking_min_pass_rate: 0.9", "blocking_min_pass_rate: 0.8")]),
    # the stale-data sensor's interval and the settings resource
    ({"freshness_interval_s": 600}, [("minimum_interval_seconds: 300", "minimum_interval_seconds: 600"),
                                     ("freshness_interval_s: 300", "freshness_interval_s: 600")]),
])
def test_a_changed_setting_changes_exactly_its_lines_of_the_snapshot(change, lines) -> None:
    assert _changed_lines(_snapshot(), _snapshot(**change)) == lines


def test_the_snapshot_shows_the_executor_the_schedule_and_secrets_by_name_only() -> None:
    data = yaml.safe_load(_snapshot())
    nightly = data["jobs"][NIGHTLY_JOB]
    assert nightly["executor"] == {"name": "multiprocess", "config": {
        "max_concurrent": 2, "retries": {"enabled": {}},
        "start_method": {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}}}
    assert "pipelines.definitions" in FORKSERVER_PRELOAD and "great_expectations" in FORKSERVER_PRELOAD
    assert "ods/gaj/hjrk" in nightly["selection"]["assets"]
    assert data["schedules"]["nightly_guiji_schedule"]["cron"] == "0 2 * * *"
    assert data["resources"]["warehouse"]["env_vars"] == {"url": "GONGSHU_WAREHOUSE_URL"}
    assert data["resources"]["pseudonym"]["env_vars"] == {"key": "GONGSHU_PSEUDONYM_KEY"}
    assert data["assets"]["ods/gaj/hjrk"]["owners"] == ["team:市公安局"]


def test_the_command_prints_or_writes_the_snapshot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "snap" / "definitions.yaml"
    assert cli.main(["definitions-snapshot", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == _snapshot()
    assert "已写出代码位置快照" in capsys.readouterr().out
    assert cli.main(["definitions-snapshot"]) == 0
    assert capsys.readouterr().out == _snapshot()


# --- what a person reads in the UI: labels, owners, partitions, defaults (issue 16) -----------------


def test_every_asset_opens_its_description_with_a_readable_label_the_graph_shows() -> None:
    """The graph shows the key's last part (``hjrk`` for both the ODS and the 标准层 box) and the first
    line of the description: that line is the label, layer · department · resource, unique per asset."""
    specs = {spec.key: spec for a in canonical_definitions().get_repository_def().assets_defs_by_key.values()
             for spec in a.specs}
    first = {key.to_user_string(): (spec.description or "").split("\n")[0] for key, spec in specs.items()}
    assert first["ods/gaj/hjrk"] == "贴源层 · 市公安局 · 户籍人口信息"
    assert first["std/gaj/hjrk"] == "标准层 · 市公安局 · 户籍人口信息"
    assert first["base/person"] == "基础库 · 人口基础库"
    assert first["quality/department_reports"] == "数据质量 · 部门数据质量报告"
    assert first["share/person_open"].startswith("共享开放 · 人口基础库")
    assert len(set(first.values())) == len(first), "two assets share a label"
    assert all(" · " in label and len(label) <= 40 for label in first.values())
    assert set(specs[AssetKey(["base", "person"])].owners) == {"team:市人力社保局", "team:市公安局", "team:市卫生健康委",
                                                               "team:市民政局"}


def test_partitions_start_at_the_catalogues_first_batch_date(tmp_path: Path) -> None:
    from catalog.loader import CatalogueError
    from tests import citykit

    demo = load_catalogue(DEMO_CATALOGUE)
    assert daily_partitions(demo).start.date().isoformat() == "2026-09-01"
    data = yaml.safe_load(_snapshot())
    daily = [a["partitions"] for a in data["assets"].values() if a["partitions"] and "start" in a["partitions"]]
    assert daily and {p["start"] for p in daily} == {"2026-09-01"}  # (共享申请 extracts: dynamic, per application)
    # without the setting: the earliest initial load of a 前置库; without either, a clear error
    folder = citykit.write_catalogue(tmp_path)
    main = folder / "catalogue.yaml"
    main.write_text(main.read_text(encoding="utf-8").replace("first_batch_date: 2026-09-01, ", ""), encoding="utf-8")
    with pytest.raises(CatalogueError, match="first_batch_date"):
        daily_partitions(load_catalogue(folder))
    for res in (folder / "resources").glob("*.yaml"):
        text = res.read_text(encoding="utf-8")
        if "watermark:" in text:
            res.write_text(text.replace("watermark: UPD}", "watermark: UPD, initial_load: 2026-08-17}"), encoding="utf-8")
    assert daily_partitions(load_catalogue(folder)).start.date().isoformat() == "2026-08-17"


def test_the_nightly_schedule_runs_by_default_and_the_file_arrival_sensors_say_they_are_off() -> None:
    from assets.resources import Settings, SettingsError

    data = yaml.safe_load(_snapshot())
    schedule = data["schedules"]["nightly_guiji_schedule"]
    assert schedule["default_status"] == "RUNNING" and "首次部署时开启" in schedule["description"]
    arrival = {k: v for k, v in data["sensors"].items() if k.startswith("file_arrival_")}
    assert arrival and all(v["default_status"] == "STOPPED" and "首次部署时关闭" in v["description"]
                           for v in arrival.values())
    assert data["sensors"]["stale_data_sensor"]["default_status"] == "RUNNING"
    stopped = yaml.safe_load(_snapshot(nightly_schedule="stopped", file_arrival="running"))
    assert stopped["schedules"]["nightly_guiji_schedule"]["default_status"] == "STOPPED"
    assert stopped["sensors"]["file_arrival_swj_nsrdj"]["default_status"] == "RUNNING"
    with pytest.raises(SettingsError, match="GONGSHU_NIGHTLY_SCHEDULE"):
        Settings.from_env({"GONGSHU_NIGHTLY_SCHEDULE": "maybe"})


def test_gongshu_run_refuses_a_date_before_the_first_batch_date_with_a_clear_message(capsys) -> None:
    assert cli.main(["run", "--date", "2026-08-31", "--no-summary"]) == 2
    err = capsys.readouterr().err
    assert "批次日期 2026-08-31 早于目录的首个批次日期 2026-09-01" in err and "Traceback" not in err
