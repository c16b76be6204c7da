"""Delivery of 共享申请 extracts through Dagster, on SQLite and PostgreSQL: the sensor adds a
partition when an application is approved and removes it when it is revoked or expires, mails an
overdue opinion once; the partitioned asset writes the extract of the run's batch date."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import DagsterInstance, build_sensor_context, instance_for_test, materialize

from assets.resources import resources_from_env
from assets.share_applications import (
    AS_OF_TAG,
    PARTITIONS,
    build_share_application_asset,
    build_share_applications_sensor,
)
from quality.freshness import calendar
from quality.mail import read_deliveries
from sharing import commands as sc
from sharing import store
from tests.share_city import demo_catalogue, persons, write_base
from warehouse.migrations import open_warehouse

TZ = ZoneInfo("Asia/Shanghai")
KEY = "share-delivery-test-key-0123456789"


@pytest.fixture
def instance() -> DagsterInstance:
    with instance_for_test() as inst:
        yield inst


@pytest.fixture
def env(monkeypatch, tmp_path: Path, warehouse_url: str):
    for var in ("GONGSHU_SMTP_HOST", "GONGSHU_SMTP_PORT", "GONGSHU_SMTP_USER", "GONGSHU_SMTP_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("GONGSHU_ENGINEER_EMAILS", "eng@bureau.cn")
    monkeypatch.setenv("GONGSHU_HOME", str(tmp_path))
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("GONGSHU_PSEUDONYM_KEY", KEY)
    wh = open_warehouse(warehouse_url)
    yield wh, tmp_path
    wh.dispose()


def now(monkeypatch, text: str) -> None:
    moment = dt.datetime.fromisoformat(text).replace(tzinfo=TZ)
    monkeypatch.setattr(calendar, "clock", lambda: moment)


def tick(sensor_def, instance):
    with build_sensor_context(instance=instance, resources=resources_from_env()) as ctx:
        return sensor_def.evaluate_tick(ctx)


def requested(result) -> tuple[list[str], list[str]]:
    add, delete = [], []
    for r in result.dynamic_partitions_requests or []:
        (add if type(r).__name__.startswith("Add") else delete).extend(r.partition_keys)
    return add, delete


def test_the_sensor_follows_approval_revocation_and_expiry(env, instance, monkeypatch) -> None:
    wh, _ = env
    cat = demo_catalogue()
    sensor_def = build_share_applications_sensor(cat)
    at = dt.datetime(2026, 10, 20, 9, tzinfo=TZ)
    a = sc.apply(wh, cat, requester="rsj", library="legal_entity", elements=["org_name"], purpose="核验",
                 until=dt.date(2026, 10, 31), at=at).application["application_id"]  # 无条件: approved at once
    b = sc.apply(wh, cat, requester="rsj", library="person", elements=["mobile"], purpose="认证",
                 until=dt.date(2027, 12, 31), at=at).application["application_id"]
    now(monkeypatch, "2026-10-21 10:00")
    result = tick(sensor_def, instance)
    assert requested(result) == ([a], []) and not result.run_requests  # no successful night yet
    instance.add_dynamic_partitions(PARTITIONS.name, [a])
    sc.review(wh, b, dept="rsj", agree=True, at=at)
    sc.decide(wh, b, approve=True, by="王局", at=at)
    assert requested(tick(sensor_def, instance)) == ([b], [])
    instance.add_dynamic_partitions(PARTITIONS.name, [b])
    sc.revoke(wh, b, by="王局", note="停止")
    assert requested(tick(sensor_def, instance)) == ([], [b])
    instance.delete_dynamic_partition(PARTITIONS.name, b)
    now(monkeypatch, "2026-11-01 10:00")
    assert requested(tick(sensor_def, instance)) == ([], [a])
    assert store.read_applications(wh, application_id=a).item(0, "status") == "expired"


def test_the_sensor_mails_an_overdue_opinion_once(env, instance, monkeypatch) -> None:
    wh, home = env
    cat = demo_catalogue()
    sensor_def = build_share_applications_sensor(cat)
    a = sc.apply(wh, cat, requester="rsj", library="person", elements=["name"], purpose="认证",
                 until=dt.date(2027, 12, 31), at=dt.datetime(2026, 9, 30, 9, tzinfo=TZ)).application["application_id"]
    now(monkeypatch, "2026-10-13 18:00")  # the due day: not overdue
    tick(sensor_def, instance)
    assert read_deliveries(wh, "share_overdue").is_empty()
    now(monkeypatch, "2026-10-14 09:00")
    tick(sensor_def, instance)
    now(monkeypatch, "2026-10-15 09:00")
    tick(sensor_def, instance)
    sent = read_deliveries(wh, "share_overdue")
    assert sent.height == 1 and a in sent.item(0, "reference")
    mails = list((home / "outbox").rglob("*.eml"))
    assert len(mails) == 1


def test_the_asset_writes_the_extract_of_the_runs_batch_date(env, instance) -> None:
    wh, home = env
    cat = demo_catalogue()
    write_base(wh, cat, persons(300), dt.date(2026, 11, 1))
    at = dt.datetime(2026, 11, 2, 9, tzinfo=TZ)
    a = sc.apply(wh, cat, requester="rsj", library="person", elements=["name", "mobile"], purpose="社保待遇资格认证",
                 until=dt.date(2027, 12, 31), at=at).application["application_id"]
    for dept in ("gaj", "rsj"):
        sc.review(wh, a, dept=dept, agree=True, at=at)
    sc.decide(wh, a, approve=True, by="王局", at=at)
    instance.add_dynamic_partitions(PARTITIONS.name, [a])
    result = materialize([build_share_application_asset(cat)], partition_key=a, instance=instance,
                         resources=resources_from_env(), tags={AS_OF_TAG: "2026-11-20"})
    assert result.success
    folder = home / "share" / a / "2026-11-20"
    assert sorted(p.name for p in folder.iterdir()) == sorted([f"{a}.csv", f"{a}.xlsx", f"{a}.manifest.json"])
    audit = store.read_extracts(wh, a)
    assert audit.height == 1 and audit.item(0, "run_id") == result.run_id and audit.item(0, "rows") > 0
