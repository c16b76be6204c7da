"""The Dagster UI as a person sees it: a browser (Playwright driving Debian's Chromium) over ``gongshu ui``
on a small generated city already run, and a backfill launched through the UI's GraphQL API.

Chromium comes from the distribution (``make browser`` installs ``chromium`` and ``fonts-noto-cjk``;
Playwright cannot download a browser here). Without it the browser test is skipped, under ``CI=true``
it fails. Screenshots go to ``$GONGSHU_SCREENSHOTS`` (default ``.gongshu/screenshots/`` of the checkout).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import IN_CI

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
GONGSHU = str(Path(sys.executable).parent / "gongshu")
CHROMIUM = Path(os.environ.get("GONGSHU_CHROMIUM", "/usr/bin/chromium"))
SCREENSHOTS = Path(os.environ.get("GONGSHU_SCREENSHOTS", REPO / ".gongshu" / "screenshots"))
DAY = dt.date(2026, 11, 20)
ID_NUMBER = re.compile(r"(?<![0-9A-Za-z])\d{17}[\dXx](?![0-9A-Za-z])")
MOBILE = re.compile(r"(?<!\d)1[3-9]\d{9}(?!\d)")
# The graph's "Description" facet (off by default in Dagster 1.13) shows each box's label; a person
# switches it on once in the graph's settings, the browser keeps it in local storage.
FACETS = ("window.localStorage.setItem('asset-node-facets', JSON.stringify(['unsynced-tag', 'description', "
          "'checks', 'latest-event', 'status', 'kind-tag', 'automation', 'partitions']));"
          # the newsletter dialog, dismissed in this browser too (gongshu instance marks it seen on the server)
          "window.localStorage.setItem('communityNux', JSON.stringify('1'));")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _need_browser() -> None:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"Chromium ({CHROMIUM}; make browser installs it)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    if missing:
        if IN_CI:
            pytest.fail("the browser test needs " + ", ".join(missing))
        pytest.skip("the browser test needs " + ", ".join(missing))


def gql(base: str, query: str, variables: dict | None = None) -> dict:
    request = urllib.request.Request(f"{base}/graphql", json.dumps({"query": query, "variables": variables or {}}).encode(),
                                     {"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as answer:
        body = json.loads(answer.read())
    assert not body.get("errors"), body["errors"]
    return body["data"]


def _wait_for_location(base: str, process: subprocess.Popen, log: Path, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"gongshu ui stopped ({process.returncode}):\n{log.read_text(encoding='utf-8')[-3000:]}")
        try:
            data = gql(base, "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
                             "locationOrLoadError { __typename ... on PythonError { message } } } } } }")
        except OSError:
            time.sleep(1)
            continue
        [entry] = data["workspaceOrError"]["locationEntries"]
        if entry["loadStatus"] == "LOADED":
            loaded = entry["locationOrLoadError"]
            assert loaded["__typename"] == "RepositoryLocation", loaded
            return
        time.sleep(1)
    pytest.fail(f"the code location did not load in {timeout:.0f} s:\n{log.read_text(encoding='utf-8')[-3000:]}")


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    """A generated city of 200 persons, its night of ``DAY`` run, and ``gongshu ui`` serving it on free ports."""
    from dagster import DagsterInstance

    from catalog.loader import DEMO_CATALOGUE, load_catalogue
    from generator import generate
    from pipelines.demo_api import serve_in_thread
    from pipelines.runs import tag_failed_checks

    root = tmp_path_factory.mktemp("ui")
    ports = SimpleNamespace(ui=_free_port(), api=_free_port(), docs=_free_port())
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GONGSHU_", "DAGSTER_"))}
    env.update({
        "GONGSHU_HOME": str(root / "home"), "GONGSHU_LANDING": str(root / "home" / "landing"),
        "DAGSTER_HOME": str(root / "home" / "dagster"), "GONGSHU_PSEUDONYM_KEY": "browser-test-key-0123456789",
        "GONGSHU_DOCS_URL": f"http://127.0.0.1:{ports.docs}", "GONGSHU_NIGHTLY_SCHEDULE": "stopped",
        "GONGSHU_FRESHNESS_INTERVAL": "30", "DAGSTER_DISABLE_TELEMETRY": "1",
    })
    landing = Path(env["GONGSHU_LANDING"])
    generate(load_catalogue(DEMO_CATALOGUE), persons=200, seed=7, date=DAY, out=landing, days=1, progress=False)
    assert subprocess.run([GONGSHU, "instance", "--quiet"], env=env, cwd=REPO, timeout=120).returncode == 0

    # the night, run in this process on the UI's instance (the UI shows it as it shows a scheduled run)
    server, base = serve_in_thread(landing)
    with pytest.MonkeyPatch.context() as mp:
        for name, value in env.items():
            if name.startswith(("GONGSHU_", "DAGSTER_")):
                mp.setenv(name, value)
        mp.setenv("GONGSHU_API_ZRZY_URL", f"{base}/zrzy/bdcqz")
        from pipelines.definitions import build_definitions
        from pipelines.jobs import NIGHTLY_JOB

        job = build_definitions().resolve_job_def(NIGHTLY_JOB)
        with DagsterInstance.from_config(env["DAGSTER_HOME"]) as instance:
            night = job.execute_in_process(partition_key=DAY.isoformat(), instance=instance, raise_on_error=False)
            assert night.success
            tag_failed_checks(instance, night.run_id)
    server.shutdown()
    server.server_close()

    log = root / "ui.log"
    with log.open("w", encoding="utf-8") as out:
        process = subprocess.Popen([GONGSHU, "ui", "--port", str(ports.ui), "--api-port", str(ports.api),
                                    "--docs-port", str(ports.docs)], env=env, cwd=REPO, stdout=out,
                                   stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{ports.ui}"
    try:
        _wait_for_location(base, process, log)
        yield SimpleNamespace(base=base, docs=env["GONGSHU_DOCS_URL"], env=env, log=log, night=night.run_id,
                              home=Path(env["GONGSHU_HOME"]))
    finally:
        os.killpg(process.pid, signal.SIGINT)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)


def _no_raw_identifier(text: str, where: str) -> None:
    assert not ID_NUMBER.search(text), f"{where}: an 18-digit ID number is shown"
    assert not MOBILE.search(text), f"{where}: an 11-digit mobile number is shown"


def test_the_ui_shows_labels_failed_checks_the_stale_resource_and_the_reports_in_chinese(ui) -> None:
    """The asset graph, a base library's checks tab, the stale-data sensor, the runs list, a department's
    report and a Data Docs page, as a person sees them: labels, statuses, Chinese text, no raw identifier."""
    _need_browser()
    from playwright.sync_api import expect, sync_playwright

    from catalog.loader import DEMO_CATALOGUE, load_catalogue

    # no newsletter dialog opening by itself over the page (gongshu instance marks it seen)
    assert gql(ui.base, "{ shouldShowNux }") == {"shouldShowNux": False}
    shutil.rmtree(SCREENSHOTS, ignore_errors=True)
    SCREENSHOTS.mkdir(parents=True)
    outside: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1600, "height": 1000}, locale="zh-CN")
        page.set_default_timeout(60_000)
        expect.set_options(timeout=60_000)  # a shared machine: the first render of a page may take seconds
        page.add_init_script(FACETS)
        page.on("request", lambda r: None if r.url.startswith(("http://127.0.0.1", "data:", "blob:"))
                else outside.append(r.url))

        def visit(url: str, shot: str, ready: str) -> str:
            page.goto(url)
            expect(page.get_by_text(ready, exact=False).first).to_be_visible()
            skip = page.get_by_role("button", name="Skip")  # Dagster's newsletter dialog on a first visit
            if skip.count():
                skip.click()
            page.wait_for_timeout(1500)
            page.screenshot(path=str(SCREENSHOTS / shot), full_page=False)
            text = page.inner_text("body")
            _no_raw_identifier(text, shot)
            return text

        # 1. the asset graph of the 人口 library: every box labelled layer · department · resource, with
        # its layer as a badge and its checks' status
        graph = visit(f"{ui.base}/locations/__repository__@gongshu/asset-groups/person/lineage",
                      "01-asset-graph.png", "标准层 · 市公安局 · 户籍人口信息")
        expect(page.get_by_text("Passed").first).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "01-asset-graph.png"))
        graph = page.inner_text("body")
        for label in ("贴源层 · 市公安局 · 户籍人口信息", "标准层 · 市民政局 · 婚姻登记信息", "基础库 · 人口基础库"):
            assert label in graph
        assert re.search(r"\d+ / \d+ Passed", graph) and "ods" in graph and "std" in graph
        first = dt.date.fromisoformat(load_catalogue(DEMO_CATALOGUE).city.city.first_batch_date.isoformat())
        assert first == dt.date(2026, 9, 1) and "1068 partitions" not in graph  # from the catalogue, not 2024-01-01

        # 2. the base library's checks tab: the 一数一源 check failed, with its batch date and a percentage
        checks = visit(f"{ui.base}/assets/base/person?view=checks", "02-base-person-checks.png", "一数一源")
        assert "Failed" in checks and "批次日期" in checks and DAY.isoformat() in checks
        assert re.search(r"一致率\s+\d{1,3}\.\d\d %", checks), "the agreement rate is not a percentage"
        assert "Skipped" not in checks

        # 3. the stale-data sensor: its latest tick says which resources are stale and by how many working days
        sensor = visit(f"{ui.base}/locations/__repository__@gongshu/sensors/stale_data_sensor",
                       "03-stale-sensor.png", "时效通知")
        # "runs requested": the latest tick's tag, then per tick (newest first) its status and its result link
        expect(page.get_by_text("runs requested").nth(2)).to_be_visible()
        # an overlay Dagster opened by itself (seen once under CI load) would take the click: close it first
        for _ in range(3):
            if page.locator(".bp5-overlay-backdrop").count() == 0:
                break
            page.keyboard.press("Escape")
            page.wait_for_timeout(500)
        page.get_by_text("runs requested").nth(2).click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text(re.compile(r"超期: 市[^「]+「[^」]+」超期 \d+ 个工作日")).first).to_be_visible()
        page.screenshot(path=str(SCREENSHOTS / "03-stale-sensor-tick.png"))
        tick = dialog.inner_text()
        assert "未设置 GONGSHU_ENGINEER_EMAILS: 数据工程师收不到时效告警" in tick, tick
        assert "{\"status\"" not in tick  # a sentence, not the raw cursor
        _no_raw_identifier(sensor + tick, "stale sensor")
        page.keyboard.press("Escape")

        # 4. the runs list: the night's run shows how many of its checks failed beside "Success"
        runs = visit(f"{ui.base}/runs", "04-runs.png", "gongshu/failed_checks")
        assert re.search(r"gongshu/failed_checks: \d+", runs) and "Success" in runs

        # 5. a department's report (served by gongshu ui beside the Data Docs)
        report = visit(f"{ui.docs}/reports/{DAY.isoformat()}/gaj.html", "05-report-gaj.png", "市公安局")
        assert "数据质量" in report

        # 6. the Data Docs page a check links to: styled by the local copies, nothing fetched from outside
        outside.clear()
        link = f"{ui.docs}/gx_docs/gaj_hjrk/gaj_hjrk.{DAY:%Y%m%d}.1.html"
        assert link in checks_link(ui)
        docs = visit(link, "06-gx-data-docs.png", "Expectation Suite")
        assert "Evaluated Expectations" in docs
        assert page.evaluate("getComputedStyle(document.querySelector('.navbar, nav, body')).display") != ""
        assert page.evaluate("[...document.styleSheets].some(s => (s.href || '').includes('_static/bootstrap'))")
        assert page.evaluate("document.fonts.check('900 12px \"Font Awesome 6 Free\"')")
        assert outside == [], f"fetched from outside: {outside}"
        browser.close()
    assert sorted(p.name for p in SCREENSHOTS.glob("*.png")) == [
        "01-asset-graph.png", "02-base-person-checks.png", "03-stale-sensor-tick.png", "03-stale-sensor.png",
        "04-runs.png", "05-report-gaj.png", "06-gx-data-docs.png"]


def checks_link(ui) -> str:
    """The Data Docs link of the night's conformity check of ``std/gaj/hjrk``, as the UI shows it."""
    from dagster import AssetCheckKey, AssetKey, DagsterInstance

    key = AssetCheckKey(AssetKey(["std", "gaj", "hjrk"]), "conformity")
    with DagsterInstance.from_config(ui.env["DAGSTER_HOME"]) as instance:
        record = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return record.event.dagster_event.event_specific_data.metadata["GX Data Docs"].value


@pytest.mark.ui_backfill
def test_a_backfill_of_one_partition_launched_through_the_ui_api_succeeds(ui) -> None:
    """What the UI's "Launch backfill" sends (launchPartitionBackfill): the daemon launches the night of
    ``DAY`` through the code location, the API channel reaches the demo API gongshu ui started, the run
    succeeds and the run-status sensor tags it with its failed checks."""
    from dagster import AssetCheckKey, AssetKey, DagsterEventType, DagsterInstance

    launched = gql(ui.base, """mutation($p: LaunchBackfillParams!) { launchPartitionBackfill(backfillParams: $p) {
        __typename ... on LaunchBackfillSuccess { backfillId } ... on PythonError { message } } }""",
                   {"p": {"selector": {"partitionSetName": "nightly_guiji_partition_set",
                                       "repositorySelector": {"repositoryLocationName": "gongshu",
                                                              "repositoryName": "__repository__"}},
                          "partitionNames": [DAY.isoformat()]}})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline, backfill = time.monotonic() + 600, None
    while time.monotonic() < deadline:
        backfill = gql(ui.base, """query($id: String!) { partitionBackfillOrError(backfillId: $id) {
            ... on PartitionBackfill { status runs(limit: 5) { runId status tags { key value } } } } }""",
                       {"id": launched["backfillId"]})["partitionBackfillOrError"]
        runs = backfill["runs"]
        done = backfill["status"] != "REQUESTED" and runs and runs[0]["status"] in ("SUCCESS", "FAILURE", "CANCELED")
        if done and (runs[0]["status"] != "SUCCESS" or any(t["key"] == "gongshu/failed_checks" for t in runs[0]["tags"])):
            break
        time.sleep(5)
    assert backfill is not None
    [run] = backfill["runs"]
    assert (backfill["status"], run["status"]) == ("COMPLETED_SUCCESS", "SUCCESS"), ui.log.read_text(encoding="utf-8")[-3000:]
    tags = {t["key"]: t["value"] for t in run["tags"]}
    assert tags["dagster/partition"] == DAY.isoformat() and int(tags["gongshu/failed_checks"]) > 0
    with DagsterInstance.from_config(ui.env["DAGSTER_HOME"]) as instance:
        records = instance.get_records_for_run(run["runId"], of_type=DagsterEventType.ASSET_CHECK_EVALUATION,
                                               limit=10_000).records
        evaluations = {(e.asset_key.to_user_string(), e.check_name): e for e in
                       (r.event_log_entry.dagster_event.event_specific_data for r in records)}
        api = evaluations[("ods/zrzy/bdcqz", "delivery")]  # the API channel was read, through gongshu ui's API
        assert api.passed and "127.0.0.1" in str(api.metadata["来源"].value)
        assert all(e.partition == DAY.isoformat() for e in evaluations.values())
        key = AssetCheckKey(AssetKey(["ods", "zrzy", "bdcqz"]), "freshness")
        history = instance.event_log_storage.get_asset_check_execution_history(key, limit=10)
        assert {h.status.value for h in history} <= {"SUCCEEDED", "FAILED"}  # nothing left planned ("Skipped")
