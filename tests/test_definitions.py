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
    assert data["assets"]["ods/gaj/hjrk"]["owners"] == ["team:gaj"]


def test_the_command_prints_or_writes_the_snapshot(tmp_path: Path, capsys) -> None:
    out = tmp_path / "snap" / "definitions.yaml"
    assert cli.main(["definitions-snapshot", "--out", str(out)]) == 0
    assert out.read_text(encoding="utf-8") == _snapshot()
    assert "已写出代码位置快照" in capsys.readouterr().out
    assert cli.main(["definitions-snapshot"]) == 0
    assert capsys.readouterr().out == _snapshot()
