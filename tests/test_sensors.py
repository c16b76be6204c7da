"""Sensors on a real Dagster instance: stale-data notices over National Day (the freshness check evaluates,
the sensor notifies on a change), restarts, run failures, file arrivals."""

from __future__ import annotations

import datetime as dt
import email
import json
import os
from email.policy import default as default_policy
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    DagsterInstance,
    Definitions,
    MaterializeResult,
    asset,
    build_sensor_context,
    define_asset_job,
    instance_for_test,
)

from assets.factory import build_assets
from assets.freshness import CHECK_NAME, build_freshness_checks, freshness_check_keys
from assets.keys import daily_partitions, ods_key
from assets.resources import LandingResource, WarehouseResource, resources_from_env
from catalog.loader import DEMO_CATALOGUE, Catalogue, load_catalogue
from pipelines import sensors
from quality.freshness import calendar
from quality.freshness.store import read_freshness
from quality.mail import read_deliveries
from warehouse.ods import BATCH_SCHEMA, batches_table
from warehouse.store import Warehouse

TZ = ZoneInfo("Asia/Shanghai")
ENGINEERS = "dev1@bureau.example; dev2@bureau.example"


def at(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=TZ)


@pytest.fixture(scope="module")
def demo() -> Catalogue:
    return load_catalogue(DEMO_CATALOGUE)


@pytest.fixture
def instance() -> DagsterInstance:
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def clock(monkeypatch):
    """A frozen clock the sensors read: set ``clock.now``."""

    class Clock:
        now = at("2026-10-05 12:00")

    c = Clock()
    monkeypatch.setattr(calendar, "clock", lambda: c.now)
    return c


@pytest.fixture
def env(monkeypatch, tmp_path: Path) -> Path:
    """No SMTP server: mail goes to ``$GONGSHU_HOME/outbox`` (returned); the engineers are set."""
    for var in ("GONGSHU_SMTP_HOST", "GONGSHU_SMTP_PORT", "GONGSHU_SMTP_USER", "GONGSHU_SMTP_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GONGSHU_ENGINEER_EMAILS", ENGINEERS)
    monkeypatch.setenv("GONGSHU_HOME", str(tmp_path))
    return tmp_path / "outbox"


@pytest.fixture
def resources_for(monkeypatch, env):
    """The code location's resources, built from the environment as it is now, on the warehouse at a URL."""
    def build(url: str) -> dict:
        monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", url)
        return resources_from_env()

    return build


def deliver(wh: Warehouse, catalogue: Catalogue, resource_id: str, day: str, seq: int = 1, rows: int = 100) -> None:
    """An ODS batch row of ``day``, read at 02:05 city time the next morning."""
    r = catalogue.resource(resource_id)
    d = dt.date.fromisoformat(day)
    record = {
        "batch_id": f"{r.id}.{d:%Y%m%d}.{seq}", "resource_id": r.id, "department": r.department, "resource": r.code,
        "library": r.library, "batch_date": d, "seq": seq, "received_at": dt.datetime.combine(d, dt.time(18, 5)),
        "channel": r.channel.kind, "sources": f"{r.code}.csv", "content_hash": f"h{seq}{day}",
        "rows_delivered": rows, "rows_unparseable": 0, "watermark_low": None, "watermark_high": None, "problems": None,
    }
    table = batches_table(wh)
    with wh.begin() as conn:
        wh.create(conn, table)
        wh.insert(conn, table, pl.DataFrame([record], schema=BATCH_SCHEMA))


def tick(sensor_def, instance: DagsterInstance, cursor: str | None, resources: dict,
         definitions: Definitions | None = None):
    """One sensor evaluation, as the daemon does it; returns (result, new cursor)."""
    with build_sensor_context(instance=instance, cursor=cursor, resources=resources,
                              definitions=definitions) as ctx:
        result = sensor_def.evaluate_tick(ctx)
    return result, result.cursor


def latest_check(instance: DagsterInstance, catalogue: Catalogue, resource_id: str):
    key = AssetCheckKey(ods_key(catalogue.resource(resource_id)), CHECK_NAME)
    rec = instance.event_log_storage.get_latest_asset_check_execution_by_key([key])[key]
    return rec.event.dagster_event.event_specific_data


def mails(outbox: Path) -> list[email.message.EmailMessage]:
    return [email.message_from_bytes(p.read_bytes(), policy=default_policy) for p in sorted(outbox.glob("*.eml"))]


# --- stale data --------------------------------------------------------------------------------


def holiday_deliveries(wh: Warehouse, catalogue: Catalogue) -> None:
    """Everything delivered on 09-30 before National Day, except the two weekly resources."""
    for r in catalogue.resources:
        if r.id not in ("rsj_sbcb", "swj_nsrdj"):
            deliver(wh, catalogue, r.id, "2026-09-30")
    deliver(wh, catalogue, "rsj_sbcb", "2026-09-25")  # weekly: due 10-03, allowed until 10-08 (holiday)
    deliver(wh, catalogue, "swj_nsrdj", "2026-09-21")  # weekly: due 09-29, allowed 09-29: late by 09-30


def stale_defs(catalogue: Catalogue, resources: dict) -> Definitions:
    """The demo's assets, the freshness check and the stale-data sensor, as the code location holds them."""
    return Definitions(assets=build_assets(catalogue, daily_partitions(catalogue), resources["settings"]),
                       asset_checks=[build_freshness_checks(catalogue)],
                       sensors=[sensors.build_stale_data_sensor(catalogue)], resources=resources)


def watch(defs: Definitions, instance: DagsterInstance, cursor: str | None, resources: dict):
    """One tick of the stale-data sensor with the resources as the environment holds them now; returns
    (result, new cursor)."""
    return tick(defs.resolve_sensor_def("stale_data_sensor"), instance, cursor, resources, defs)


def run_check(defs: Definitions, instance: DagsterInstance) -> None:
    """The run the sensor requests, the freshness check alone, executed as the daemon launches it (also what
    the check does inside a run that reads a delivery)."""
    job = defs.resolve_job_def(defs.resolve_sensor_def("stale_data_sensor").job_name)
    assert job.execute_in_process(instance=instance).success


def stale(cursor: str) -> set[str]:
    return {rid for rid, status in json.loads(cursor)["status"].items() if status == "stale"}


def test_the_check_judges_the_holiday_and_the_sensor_notifies_the_weekly_resource_late_by_a_working_day_once(
    demo: Catalogue, instance: DagsterInstance, warehouse_url: str, env: Path, clock, resources_for
) -> None:
    wh = Warehouse(warehouse_url)
    holiday_deliveries(wh, demo)
    defs = stale_defs(demo, resources_for(warehouse_url))

    # nothing stored yet: the sensor evaluates nothing itself, it asks for the freshness check
    first, cursor = watch(defs, instance, None, resources_for(warehouse_url))
    [request] = first.run_requests
    assert request.asset_check_keys == freshness_check_keys(demo) and request.asset_selection == []
    assert request.run_key == "freshness:new:" + ",".join(sorted(r.id for r in demo.resources))
    assert mails(env) == [] and read_freshness(wh).height == 0
    run_check(defs, instance)

    # the UI: one freshness evaluation per ODS asset, from the check's run
    swj = latest_check(instance, demo, "swj_nsrdj")
    assert (swj.passed, swj.severity, swj.blocking) == (False, AssetCheckSeverity.ERROR, False)
    assert swj.metadata["状态"].value == "超期" and swj.metadata["时效要求"].value == "7 天 + 1 个工作日"
    assert swj.metadata["超期工作日"].value == 1 and swj.metadata["最近批次"].value == "swj_nsrdj.20260921.1"
    assert swj.metadata["滞后"].value == "13 天 12 小时"
    hjrk = latest_check(instance, demo, "gaj_hjrk")  # daily, delivered 09-30: due but not stale on the holiday
    assert (hjrk.passed, hjrk.severity) == (False, AssetCheckSeverity.WARN)
    assert hjrk.metadata["状态"].value == "已到期(宽限期内)"
    assert latest_check(instance, demo, "zrzy_bzdz").passed  # monthly
    assert latest_check(instance, demo, "rsj_sbcb").severity == AssetCheckSeverity.WARN

    # the quality layer, written by the check
    state = {r["resource_id"]: r for r in read_freshness(wh).iter_rows(named=True)}
    assert len(state) == len(demo.resources)
    assert state["swj_nsrdj"]["status"] == "stale" and state["swj_nsrdj"]["working_days_overdue"] == 1
    assert state["swj_nsrdj"]["deadline_at"] == dt.datetime(2026, 9, 29, 16, 0)  # 09-30 00:00 city time, in UTC
    assert state["gaj_hjrk"]["status"] == "late" and state["zrzy_bzdz"]["status"] == "fresh"

    # the next tick reads it: one notice, to the department and the engineers, in the outbox and in audit
    result, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert result.run_requests == []
    [msg] = mails(env)
    assert msg["Subject"] == "【数据时效】市税务局「纳税人登记信息」已超期未更新 (更新周期 每周)"
    assert msg["To"] == "sjzl@swj.oujiang.gov.cn, dev1@bureau.example, dev2@bureau.example"
    body = msg.get_body(("html",)).get_content()
    assert "2026-09-21 24:00" in body and "2026-09-29 24:00" in body and "7 天 + 1 个工作日" in body
    assert "13 天 12 小时" in body and "1 个工作日" in body
    audit = read_deliveries(wh, "freshness")
    assert audit.select("reference", "status", "transport").rows() == [("swj_nsrdj", "sent", "outbox")]
    # the tick's message names the stale resource and how late it is, in working days (not a raw cursor)
    assert result.skip_message == "超期: 市税务局「纳税人登记信息」超期 1 个工作日, 最近批次 2026-09-21。已通知: swj_nsrdj 超期"

    # no change, no mail and no run: later ticks, and a restarted daemon reading the stored cursor
    clock.now = at("2026-10-05 12:05")
    quiet, cursor2 = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert quiet.run_requests == [] and "已通知" not in quiet.skip_message
    assert quiet.skip_message.startswith("超期: 市税务局「纳税人登记信息」超期 1 个工作日")
    clock.now = at("2026-10-08 23:59")
    again, _ = watch(defs, instance, cursor2, resources_for(warehouse_url))
    assert again.run_requests == [] and len(mails(env)) == 1 and read_deliveries(wh).height == 1
    # the stored deadline of the daily resources and rsj (10-09 00:00) has passed: the check is due again
    clock.now = at("2026-10-09 00:05")
    due, _ = watch(defs, instance, cursor2, resources_for(warehouse_url))
    [request] = due.run_requests
    assert request.run_key == "freshness:2026-10-08T16:00:00" and len(mails(env)) == 1
    wh.dispose()


def test_after_the_holiday_a_resource_turning_stale_or_fresh_again_is_notified_once_each_time(
    demo: Catalogue, instance: DagsterInstance, warehouse_url: str, env: Path, clock, resources_for
) -> None:
    wh = Warehouse(warehouse_url)
    holiday_deliveries(wh, demo)
    defs = stale_defs(demo, resources_for(warehouse_url))
    _, cursor = watch(defs, instance, None, resources_for(warehouse_url))
    run_check(defs, instance)
    _, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert stale(cursor) == {"swj_nsrdj"}

    for r in demo.resources:  # the daily batches of the holiday arrive on 10-09 at 02:05
        if r.update_cycle.value == "每日":
            deliver(wh, demo, r.id, "2026-10-08")
    clock.now = at("2026-10-09 09:00")
    result, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert len(result.run_requests) == 1  # rsj's deadline passed at midnight
    run_check(defs, instance)
    result, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))
    subjects = sorted(m["Subject"] for m in mails(env))
    assert len(subjects) == 2 and "市人力社保局「社会保险参保信息」" in subjects[0]  # rsj: allowed until 10-08
    assert stale(cursor) == {"swj_nsrdj", "rsj_sbcb"}
    assert latest_check(instance, demo, "gaj_hjrk").passed

    deliver(wh, demo, "swj_nsrdj", "2026-10-08")  # swj delivers; its run evaluates the check
    run_check(defs, instance)
    clock.now = at("2026-10-09 09:05")
    result, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert stale(cursor) == {"rsj_sbcb"} and "已通知: swj_nsrdj 正常" in result.skip_message
    [back] = [m for m in mails(env) if "已恢复更新" in m["Subject"]]
    assert back["Subject"] == "【数据时效】市税务局「纳税人登记信息」已恢复更新 (更新周期 每周)"
    assert "swj_nsrdj.20261008.1" in back.get_body(("html",)).get_content()
    assert latest_check(instance, demo, "swj_nsrdj").passed
    assert read_freshness(wh).filter(pl.col("resource_id") == "swj_nsrdj")["status"].item() == "fresh"
    _, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))  # nothing changed: nothing sent
    assert len(mails(env)) == 3

    clock.now = at("2026-10-20 09:00")  # a new stale spell for swj is news again (rsj is still stale)
    result, cursor = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert len(result.run_requests) == 1
    run_check(defs, instance)
    watch(defs, instance, cursor, resources_for(warehouse_url))
    refs = read_deliveries(wh, "freshness")["reference"].to_list()
    assert refs.count("swj_nsrdj") == 3 and refs.count("rsj_sbcb") == 1  # stale, fresh again, stale; stale
    wh.dispose()


def test_a_failed_send_is_not_marked_and_is_retried_on_the_next_tick(
    demo: Catalogue, instance: DagsterInstance, tmp_path: Path, env: Path, clock, monkeypatch, resources_for
) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    wh = Warehouse(url)
    holiday_deliveries(wh, demo)
    defs = stale_defs(demo, resources_for(url))
    _, cursor = watch(defs, instance, None, resources_for(url))
    run_check(defs, instance)
    monkeypatch.setenv("GONGSHU_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GONGSHU_SMTP_PORT", "9")  # nothing listens there
    monkeypatch.setenv("GONGSHU_SMTP_TIMEOUT", "2")
    result, cursor = watch(defs, instance, cursor, resources_for(url))
    assert "发送失败(下次重试): swj_nsrdj" in result.skip_message and stale(cursor) == set()
    assert read_deliveries(wh).select("status", "transport").rows() == [("failed", "smtp")]

    monkeypatch.delenv("GONGSHU_SMTP_HOST")  # the outbox works
    watch(defs, instance, cursor, resources_for(url))
    assert read_deliveries(wh)["status"].to_list() == ["failed", "sent"] and len(mails(env)) == 1
    wh.dispose()


# --- failed runs and blocking checks -----------------------------------------------------------


@asset(key=["std", "t", "x"], check_specs=[AssetCheckSpec("completeness", asset=AssetKey(["std", "t", "x"]),
                                                           blocking=True)])
def _checked() -> MaterializeResult:
    return MaterializeResult(check_results=[AssetCheckResult(
        check_name="completeness", passed=False, severity=AssetCheckSeverity.ERROR,
        description="阻断规则通过率低于 90%", metadata={"通过率": 0.42})])


@asset(key=["ods", "t", "boom"])
def _boom() -> None:
    raise RuntimeError("前置库不可达")


def test_run_failures_and_failed_blocking_checks_alert_the_engineers(
    instance: DagsterInstance, tmp_path: Path, env: Path, resources_for
) -> None:
    defs = Definitions(assets=[_checked, _boom], jobs=[define_asset_job("checked", [_checked]),
                                                       define_asset_job("boom", [_boom])])
    alert = sensors.build_run_failure_alert()
    res = resources_for(f"sqlite:///{tmp_path / 'w.db'}")
    _, cursor = tick(alert, instance, None, res)  # the first tick only remembers where the log ends
    checked = defs.resolve_job_def("checked").execute_in_process(instance=instance, raise_on_error=False)
    boom = defs.resolve_job_def("boom").execute_in_process(instance=instance, raise_on_error=False)
    assert not checked.success and not boom.success

    _, cursor = tick(alert, instance, cursor, res)
    failed, blocking = sorted(mails(env), key=lambda m: "阻断" in m["Subject"])
    assert blocking["Subject"] == f"【公数告警】阻断性质量检查未通过 · checked · run {checked.run_id[:8]}"
    assert blocking["To"] == "dev1@bureau.example, dev2@bureau.example"
    html = blocking.get_body(("html",)).get_content()
    assert "std/t/x" in html and "completeness" in html and "通过率: 0.42" in html
    assert failed["Subject"] == f"【公数告警】运行失败 · boom · run {boom.run_id[:8]}"
    assert "前置库不可达" in failed.get_body(("html",)).get_content()
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    assert sorted(read_deliveries(wh)["category"].to_list()) == ["blocking_check", "run_failure"]

    tick(alert, instance, cursor, res)  # nothing new: nothing sent
    assert len(mails(env)) == 2
    wh.dispose()


def test_without_engineer_emails_the_sensors_say_that_alerts_go_nowhere(
    demo: Catalogue, instance: DagsterInstance, warehouse_url: str, env: Path, clock, resources_for, monkeypatch
) -> None:
    monkeypatch.delenv("GONGSHU_ENGINEER_EMAILS")
    wh = Warehouse(warehouse_url)
    holiday_deliveries(wh, demo)
    defs = stale_defs(demo, resources_for(warehouse_url))
    _, cursor = watch(defs, instance, None, resources_for(warehouse_url))
    run_check(defs, instance)
    result, _ = watch(defs, instance, cursor, resources_for(warehouse_url))
    assert "未设置 GONGSHU_ENGINEER_EMAILS: 数据工程师收不到时效告警" in result.skip_message
    [msg] = mails(env)  # the department still gets its notice
    assert msg["To"] == "sjzl@swj.oujiang.gov.cn"

    boom = Definitions(assets=[_boom], jobs=[define_asset_job("boom", [_boom])]).resolve_job_def("boom")
    alert = sensors.build_run_failure_alert()
    res = resources_for(warehouse_url)
    _, cursor = tick(alert, instance, None, res)
    run = boom.execute_in_process(instance=instance, raise_on_error=False)
    result, _ = tick(alert, instance, cursor, res)
    assert result.skip_message == (f"未设置 GONGSHU_ENGINEER_EMAILS: 运行 {run.run_id[:8]} (boom) 失败的告警没有发给"
                                   "任何人")
    assert len(mails(env)) == 1
    wh.dispose()


@asset(key=["std", "t", "y"], check_specs=[AssetCheckSpec(n, asset=AssetKey(["std", "t", "y"]))
                                           for n in ("conformity", "completeness", "accuracy")])
def _warned() -> MaterializeResult:
    return MaterializeResult(check_results=[
        AssetCheckResult(check_name="conformity", passed=False, severity=AssetCheckSeverity.WARN),
        AssetCheckResult(check_name="completeness", passed=False, severity=AssetCheckSeverity.ERROR),
        AssetCheckResult(check_name="accuracy", passed=True)])


def test_a_successful_run_with_failed_checks_is_tagged_with_their_number(
    instance: DagsterInstance, tmp_path: Path, env: Path, resources_for
) -> None:
    """A run whose checks failed must not read as a plain "Success" in the runs list: the run-status
    sensor tags it at its end (and leaves a clean run untagged)."""
    defs = Definitions(assets=[_warned, _boom], jobs=[define_asset_job("warned", [_warned]),
                                                      define_asset_job("boom", [_boom])])
    summary = {s.name: s for s in sensors.build_sensors(load_catalogue(DEMO_CATALOGUE),
                                                        daily_partitions(load_catalogue(DEMO_CATALOGUE)))}
    on_success = summary["failed_checks_summary_success"]
    assert "failed_checks_summary_failure" in summary
    _, cursor = tick(on_success, instance, None, {})
    warned = defs.resolve_job_def("warned").execute_in_process(instance=instance)
    assert warned.success
    tick(on_success, instance, cursor, {})
    tags = instance.get_run_by_id(warned.run_id).tags
    assert tags[sensors.FAILED_CHECKS_TAG] == "2" and tags[sensors.FAILED_ERROR_CHECKS_TAG] == "1"
    clean = Definitions(assets=[_checked_ok], jobs=[define_asset_job("ok", [_checked_ok])]).resolve_job_def("ok")
    ok = clean.execute_in_process(instance=instance)
    assert sensors.tag_failed_checks(instance, ok.run_id) == {}
    assert sensors.FAILED_CHECKS_TAG not in instance.get_run_by_id(ok.run_id).tags


@asset(key=["std", "t", "z"], check_specs=[AssetCheckSpec("conformity", asset=AssetKey(["std", "t", "z"]))])
def _checked_ok() -> MaterializeResult:
    return MaterializeResult(check_results=[AssetCheckResult(check_name="conformity", passed=True)])


# --- file arrivals -----------------------------------------------------------------------------


def land(landing: Path, rel: str, text: str = "NSRSBH\n1\n", age_s: float = 600) -> Path:
    path = landing / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    t = calendar.clock().timestamp() - age_s
    os.utime(path, (t, t))
    return path


def test_a_file_landing_in_its_folder_triggers_the_resource_for_that_batch_date_once(
    demo: Catalogue, instance: DagsterInstance, tmp_path: Path, clock
) -> None:
    clock.now = at("2026-11-22 10:00")
    landing = tmp_path / "landing"
    url = f"sqlite:///{tmp_path / 'w.db'}"
    res = {"landing": LandingResource(path=str(landing)), "warehouse": WarehouseResource(url=url)}
    swj = demo.resource("swj_nsrdj")
    sensor_def = sensors.build_file_arrival_sensor(demo, swj, daily_partitions(demo))
    assert sensor_def.name == "file_arrival_swj_nsrdj"
    defs = _demo_defs()
    selection = sensor_def.targets[0].resolvable_to_job.selection
    assert selection.resolve(defs.resolve_asset_graph()) == {
        AssetKey(["ods", "swj", "nsrdj"]), AssetKey(["std", "swj", "nsrdj"]), AssetKey(["base", "legal_entity"])}

    result, cursor = tick(sensor_def, instance, None, res, defs)
    assert result.run_requests == []

    land(landing, "swj/nsrdj/20261120/nsrdj.csv")
    land(landing, "swj/nsrdj/20261122/nsrdj.csv")  # today: its partition exists from midnight on
    land(landing, "swj/nsrdj/20261121/part1.csv", age_s=5)  # still being copied
    land(landing, "rsj/sbcb/20261120/sbcb.csv")  # another resource's folder
    result, cursor = tick(sensor_def, instance, cursor, res, defs)
    [req] = result.run_requests
    assert req.partition_key == "2026-11-20" and req.run_key.startswith("swj_nsrdj:2026-11-20:")
    assert req.tags["department"] == "swj" and req.tags["gongshu/trigger"] == "file_arrival"

    clock.now = at("2026-11-22 10:01")  # the copy has settled; 11-20 is not requested again
    result, cursor = tick(sensor_def, instance, cursor, res, defs)
    assert [r.partition_key for r in result.run_requests] == ["2026-11-21"]
    result, cursor = tick(sensor_def, instance, cursor, res, defs)  # a restart with the stored cursor
    assert result.run_requests == []

    land(landing, "swj/nsrdj/20261120/nsrdj.csv", "NSRSBH\n1\n2\n", age_s=120)  # a corrected re-delivery
    result, cursor = tick(sensor_def, instance, cursor, res, defs)
    [again] = result.run_requests
    assert again.partition_key == "2026-11-20" and again.run_key != req.run_key

    clock.now = at("2026-11-23 00:01")  # after midnight, 11-22 is a partition
    result, _ = tick(sensor_def, instance, cursor, res, defs)
    assert [r.partition_key for r in result.run_requests] == ["2026-11-22"]


def test_a_delivery_the_nightly_job_already_read_is_not_run_again(
    demo: Catalogue, instance: DagsterInstance, tmp_path: Path, clock
) -> None:
    clock.now = at("2026-11-22 10:00")
    landing = tmp_path / "landing"
    url = f"sqlite:///{tmp_path / 'w.db'}"
    land(landing, "swj/nsrdj/20261120/nsrdj.csv", age_s=3 * 86400)  # landed before the 11-20 batch was read
    wh = Warehouse(url)
    deliver(wh, demo, "swj_nsrdj", "2026-11-20")  # sources "nsrdj.csv", read 11-21 02:05
    res = {"landing": LandingResource(path=str(landing)), "warehouse": WarehouseResource(url=url)}
    sensor_def = sensors.build_file_arrival_sensor(demo, demo.resource("swj_nsrdj"), daily_partitions(demo))
    result, cursor = tick(sensor_def, instance, None, res)
    assert result.run_requests == [] and "2026-11-20" in json.loads(cursor)
    wh.dispose()


def test_channel_paths_become_a_glob_and_a_date_reader() -> None:
    from catalog.models import FileChannel

    pattern, regex, fmt = sensors.channel_glob(FileChannel(kind="file", path="hz/{date:%Y%m%d}/*.csv"))
    assert pattern == "hz/" + "[0-9]" * 8 + "/*.csv" and fmt == "%Y%m%d"
    assert regex.match("hz/20261120/a.csv").group("date") == "20261120"
    assert regex.match("hz/20261120/sub/a.csv") is None
    _, iso, fmt = sensors.channel_glob(FileChannel(kind="file", path="gs/{date}-x?.xlsx"))
    assert iso.match("gs/2026-11-20-x1.xlsx").group("date") == "2026-11-20" and fmt == "%Y-%m-%d"


def _demo_defs() -> Definitions:
    from pipelines.definitions import build_definitions

    return build_definitions()  # the code location of the demo catalogue


def test_the_partitioned_freshness_check_still_runs_alone_without_a_batch_date(
    demo: Catalogue, instance: DagsterInstance, warehouse_url: str, env: Path, clock, resources_for
) -> None:
    """In the code location the check is partitioned like the assets (a nightly run records it against
    its batch date: tests/test_end_to_end.py); the run the sensor requests, of the check alone, has no
    partition and its results none either, with nothing left planned."""
    wh = Warehouse(warehouse_url)
    holiday_deliveries(wh, demo)
    parts = daily_partitions(demo)
    res = resources_for(warehouse_url)
    defs = Definitions(assets=build_assets(demo, parts, res["settings"]),
                       asset_checks=[build_freshness_checks(demo, parts)],
                       sensors=[sensors.build_stale_data_sensor(demo)], resources=res)
    first, _ = watch(defs, instance, None, res)
    [request] = first.run_requests
    assert request.partition_key is None
    run_check(defs, instance)
    key = AssetCheckKey(ods_key(demo.resource("swj_nsrdj")), CHECK_NAME)
    [record] = instance.event_log_storage.get_asset_check_execution_history(key, limit=5)
    assert record.status.value == "FAILED"
    evaluation = record.event.dagster_event.event_specific_data
    assert evaluation.partition is None and evaluation.metadata["超期工作日"].value == 1
    wh.dispose()
