"""End to end through Dagster and the ``gongshu`` command, on a city the code has never seen."""

from __future__ import annotations

import datetime as dt
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetCheckKey, AssetKey, DagsterEventType, DagsterInstance, DagsterRunStatus

from pipelines.demo_api import serve_in_thread
from tests import citykit
from tests.citykit import PEOPLE

REPO = Path(__file__).resolve().parent.parent
GONGSHU = str(Path(sys.executable).parent / "gongshu")
DAY = dt.date(2026, 10, 9)

pytestmark = pytest.mark.e2e


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
        "GONGSHU_DOCS_URL": "http://127.0.0.1:3001",
    }
    yield env
    server.shutdown()
    server.server_close()


def test_a_second_city_runs_end_to_end_through_dagster_with_no_code_change(second_city, monkeypatch) -> None:
    """The code location built from the second city's catalogue, its nightly job run in process: every
    resource reconciled, every library filled, masked previews and GX Data Docs in the metadata, and a
    rerun of the partition changes nothing."""
    from catalog.loader import load_catalogue
    from pipelines.definitions import build_definitions
    from pipelines.jobs import NIGHTLY_JOB
    from pipelines.summary import summary_lines
    from warehouse.store import Warehouse

    for name, value in second_city.items():
        if name.startswith(("GONGSHU_", "SHANHAI_")):
            monkeypatch.setenv(name, value)
    job = build_definitions().resolve_job_def(NIGHTLY_JOB)
    wh = Warehouse(second_city["GONGSHU_WAREHOUSE_URL"])
    with DagsterInstance.ephemeral() as instance:
        result = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance, raise_on_error=False)
        assert result.success and not [e for e in result.all_events if e.event_type == DagsterEventType.STEP_SKIPPED]
        # every check result names its batch date, and none is left planned (a stray "Skipped" in the UI)
        evaluations = [e.event_specific_data for e in result.all_events
                       if e.event_type == DagsterEventType.ASSET_CHECK_EVALUATION]
        assert evaluations and all(e.partition == DAY.isoformat() and e.metadata["批次日期"].value == DAY.isoformat()
                                   for e in evaluations)
        for key in {AssetCheckKey(e.asset_key, e.check_name) for e in evaluations}:
            [latest] = instance.event_log_storage.get_asset_check_execution_history(key, limit=1)
            assert latest.status.value in ("SUCCEEDED", "FAILED"), (key, latest.status)
        # the summary: every resource reconciled, every library filled
        summary = summary_lines(wh, load_catalogue(Path(second_city["GONGSHU_CATALOG"])), DAY)
        assert any("huzheng/renkou 常住人口" in line for line in summary) and not any("✗" in line for line in summary)
        lines = {line.split()[0]: line for line in summary if line.strip()}
        assert lines["人口库"].split()[1:] == ["3", "3"]
        assert lines["证照库"].split()[1:] == ["3", "3"]

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
        # served over HTTP by gongshu ui (GONGSHU_DOCS_URL), not a file:/// path another machine cannot open
        assert link.startswith("http://127.0.0.1:3001/gx_docs/"), link
        page = Path(second_city["GONGSHU_HOME"]) / link.removeprefix("http://127.0.0.1:3001/")
        assert page.is_relative_to(Path(second_city["GONGSHU_HOME"]) / "gx_docs") and page.exists()
        text = " ".join(re.sub(r"<[^>]+>", " ", page.read_text(encoding="utf-8")).split())
        assert "Expectation Suite: huzheng_renkou" in text and "Evaluated Expectations" in text
        assert all(p[0] not in text for p in PEOPLE)

        # re-running the partition changes nothing: the same summary, no new entity
        before = _tables(wh)
        again = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance, raise_on_error=False)
        assert again.success
        assert summary_lines(wh, load_catalogue(Path(second_city["GONGSHU_CATALOG"])), DAY) == summary
        base = instance.get_latest_materialization_event(AssetKey(["base", "people"])).asset_materialization
        assert base.metadata["新增实体"].value == 0
        assert _tables(wh) == before
    wh.dispose()


def _tables(wh) -> dict[str, int]:
    """Row counts of every base-library table (a rerun must not change them)."""
    import sqlalchemy as sa

    with wh.engine.connect() as conn:
        return {name: conn.execute(sa.text(f"SELECT COUNT(*) FROM {wh.qualified('base', name)}")).scalar_one()
                for name in wh.layer_tables("base")}


def test_a_broken_catalogue_stops_the_command_with_one_clear_message(second_city, monkeypatch, capsys) -> None:
    from pipelines.cli import main

    folder = Path(second_city["GONGSHU_CATALOG"])
    res = folder / "resources" / "huzheng_renkou.yaml"
    res.write_text(res.read_text(encoding="utf-8").replace("element: full_name", "element: fullname"), encoding="utf-8")
    monkeypatch.setenv("GONGSHU_CATALOG", str(folder))
    assert main(["catalog", "check"]) == 2
    err = capsys.readouterr().err
    assert "huzheng_renkou.yaml: fields.1.element: 'fullname' 不是 人口库 的数据元" in err
    assert "Traceback" not in err


# --- runs that Dagster owns ----------------------------------------------------------------------
# Both tests are about the Dagster instance (run launcher, code location, run monitoring), not the
# warehouse: they run on SQLite only.

REEXECUTE = """
mutation($parentRunId: String!) {
  launchRunReexecution(reexecutionParams: {parentRunId: $parentRunId, strategy: ALL_STEPS}) {
    __typename
    ... on LaunchRunSuccess { run { runId status parentRunId } }
    ... on PythonError { message }
  }
}
"""


def wait_for(predicate, timeout_s: float, what: str):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    pytest.fail(f"{what}: not within {timeout_s:.0f} s")


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_a_run_of_gongshu_run_is_re_executed_from_the_ui(second_city, monkeypatch) -> None:
    """`gongshu run` launches through the code location, so the UI's re-execute (the GraphQL mutation
    the UI sends) makes a new run of the same job and partition, which the run queue launches and which
    succeeds."""
    from dagster._core.workspace.context import WorkspaceProcessContext
    from dagster._core.workspace.load_target import WorkspaceFileTarget
    from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon
    from dagster_graphql.test.utils import execute_dagster_graphql

    out = gongshu(["run", "--date", DAY.isoformat()], second_city)
    assert out.returncode == 0, out.stdout + out.stderr
    # the command waits for the run, prints a line for it and the night's summary
    assert f"归集 {DAY}" in out.stdout and "成功" in out.stdout and "Traceback" not in out.stderr
    summary = {line.split()[0]: line for line in out.stdout.splitlines() if line.strip()}
    assert summary["人口库"].split()[1:] == ["3", "3"] and "✗" not in out.stdout
    for name, value in second_city.items():  # the UI's code server loads the same city
        if name.startswith(("GONGSHU_", "DAGSTER_", "SHANHAI_")):
            monkeypatch.setenv(name, value)
    with DagsterInstance.from_config(second_city["DAGSTER_HOME"]) as instance:
        (parent,) = instance.get_runs()
        assert f"run {parent.run_id[:8]} " in out.stdout
        # launched from the code location, like a run of the schedule: the UI lists it under it
        assert parent.remote_job_origin.location_name == "gongshu" and parent.tags["dagster/code_location"] == "gongshu"
        assert parent.tags["dagster/partition"] == DAY.isoformat()
        with WorkspaceProcessContext(instance, WorkspaceFileTarget(paths=[str(REPO / "workspace.yaml")])) as ui:
            result = execute_dagster_graphql(ui.create_request_context(), REEXECUTE, {"parentRunId": parent.run_id})
            launched = result.data["launchRunReexecution"]
            assert launched["__typename"] == "LaunchRunSuccess", launched
            assert launched["run"]["status"] == "QUEUED" and launched["run"]["parentRunId"] == parent.run_id
            child_id = launched["run"]["runId"]
            with QueuedRunCoordinatorDaemon(interval_seconds=1) as queue:  # what dagster-daemon does next
                list(queue.run_iteration(ui))
            child = wait_for(lambda: (r := instance.get_run_by_id(child_id)).is_finished and r, 300,
                             "the re-execution finishing")
    assert child.status == DagsterRunStatus.SUCCESS, child.status
    assert child.job_name == "nightly_guiji" and child.tags["dagster/partition"] == DAY.isoformat()
    assert child.root_run_id == parent.run_id and child.remote_job_origin.location_name == "gongshu"


@pytest.mark.parametrize("warehouse_url", ["sqlite"], indirect=True)
def test_a_run_killed_with_its_code_server_is_marked_failed_by_run_monitoring(second_city) -> None:
    """`gongshu run` and every process under it (code server, run worker, step workers) killed with
    SIGKILL: nothing is left to report the run, which stays STARTED; the monitoring daemon of the
    instance `gongshu instance` writes sees its worker gone and marks it failed, saying why."""
    home = second_city["DAGSTER_HOME"]
    assert gongshu(["instance", "--quiet"], second_city).returncode == 0
    proc = subprocess.Popen([GONGSHU, "run", "--date", DAY.isoformat(), "--no-summary"], cwd=REPO, env=second_city,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    daemon = None
    try:
        with DagsterInstance.from_config(home) as instance:
            run = wait_for(lambda: next((r for r in instance.get_runs() if r.status == DagsterRunStatus.STARTED), None),
                           120, "the run starting")
            worker = next(int(e.dagster_event.engine_event_data.metadata["pid"].value)
                          for e in instance.all_logs(run.run_id, of_type=DagsterEventType.ENGINE_EVENT)
                          if "pid" in e.dagster_event.engine_event_data.metadata)
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            time.sleep(2)
            assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.STARTED  # no one left to say

            daemon = subprocess.Popen([str(Path(sys.executable).parent / "dagster-daemon"), "run", "--empty-workspace"],
                                      cwd=REPO, env=second_city, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                      text=True, start_new_session=True)
            failed = wait_for(lambda: (r := instance.get_run_by_id(run.run_id)).is_finished and r, 60,
                              "run monitoring marking the run")
            assert failed.status == DagsterRunStatus.FAILURE
            (why,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
            assert f"运行进程 (pid {worker}, 主机 {socket.gethostname()}) 已不存在" in why.dagster_event.message
            assert "由运行监控标记为失败" in why.dagster_event.message
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        if daemon is not None:
            daemon.terminate()
            daemon.wait(timeout=60)
