"""Retries of the 归集 steps: only transient database errors (warehouse.store.is_transient) are retried,
with the steps' RetryPolicy backoff; a data error or a bug fails the step at its first attempt."""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

import pytest
import sqlalchemy as sa
from dagster import AssetKey, AssetSelection, DagsterEventType, RetryPolicy, instance_for_test, materialize

import assets.factory as factory
from assets.factory import RETRY_POLICY, build_resource_assets
from assets.keys import daily_partitions
from assets.resources import LandingResource, Settings, WarehouseResource
from catalog.loader import load_catalogue
from tests import citykit
from tests.conftest import PG_ADMIN_URL
from warehouse.store import Warehouse, is_transient

DAY = dt.date(2026, 11, 20)


def _error_of(conn: sa.Connection, sql: str) -> sa.exc.DBAPIError:
    with pytest.raises(sa.exc.DBAPIError) as caught:
        conn.execute(sa.text(sql))
    conn.rollback()
    return caught.value


def test_a_locked_sqlite_database_is_transient_a_data_error_is_not(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("CREATE TABLE t (x INTEGER PRIMARY KEY)")
    holder.execute("INSERT INTO t VALUES (1)")
    holder.execute("BEGIN IMMEDIATE")  # a second connection holds the write lock
    engine = sa.create_engine(f"sqlite:///{path}", connect_args={"timeout": 0})
    try:
        with engine.connect() as conn:
            locked = _error_of(conn, "INSERT INTO t VALUES (2)")
        assert "database is locked" in str(locked) and is_transient(locked)
        holder.execute("ROLLBACK")
        with engine.connect() as conn:
            duplicate = _error_of(conn, "INSERT INTO t VALUES (1)")
            missing = _error_of(conn, "SELECT * FROM no_such_table")
        assert not is_transient(duplicate) and not is_transient(missing)
        assert not is_transient(ValueError("a bug"))
        wrapped = RuntimeError("step failed")
        wrapped.__cause__ = locked
        assert is_transient(wrapped)  # found in the chain of an error raised from it
    finally:
        holder.close()
        engine.dispose()


@pytest.mark.postgres
def test_postgres_connection_loss_serialization_failure_and_deadlock_are_transient(pg_url: str) -> None:
    engine = sa.create_engine(pg_url)
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            pid = conn.execute(sa.text("SELECT pg_backend_pid()")).scalar()
            with admin.connect() as other:
                assert other.execute(sa.text("SELECT pg_terminate_backend(:p)"), {"p": pid}).scalar()
            lost = _error_of(conn, "SELECT 1")
        assert lost.connection_invalidated and is_transient(lost)
        with engine.connect() as conn:
            raised = {code: _error_of(conn, f"DO $$ BEGIN RAISE EXCEPTION 'x' USING ERRCODE = '{code}'; END $$")
                      for code in ("40001", "40P01", "08006")}
            bad_value = _error_of(conn, "SELECT 'x'::int")
            missing = _error_of(conn, "SELECT * FROM no_such_table")
        assert {code: (e.orig.sqlstate, is_transient(e)) for code, e in raised.items()} == {
            "40001": ("40001", True), "40P01": ("40P01", True), "08006": ("08006", True)}
        assert not is_transient(bad_value) and not is_transient(missing)
    finally:
        engine.dispose()
        admin.dispose()


@pytest.fixture
def one_resource(tmp_path: Path, monkeypatch):
    """The 户政 人口 ODS asset of the second city with its delivery, and materialize() over it; retries
    without waiting (the policy's backoff is tested on its own)."""
    monkeypatch.setattr(factory, "RETRY_POLICY", RetryPolicy(max_retries=3, delay=0.01))
    cat = load_catalogue(citykit.write_catalogue(tmp_path))
    landing = tmp_path / "landing"
    citykit.deliver_day1(landing, DAY)
    renkou = cat.resource("huzheng_renkou")
    assets = build_resource_assets(cat, renkou, daily_partitions(cat))
    url = f"sqlite:///{tmp_path / 'w.db'}"
    key = AssetKey(["ods", "huzheng", "renkou"])

    def run():
        with instance_for_test() as instance:
            return materialize(
                [assets], partition_key=DAY.isoformat(), instance=instance, selection=AssetSelection.assets(key),
                resources={"warehouse": WarehouseResource(url=url), "landing": LandingResource(path=str(landing)),
                           "settings": Settings(home=str(tmp_path / "home"))}, raise_on_error=False)

    return run, url


def _failing_first(monkeypatch, error: Exception) -> list[int]:
    calls: list[int] = []
    real = factory.ingest

    def ingest(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise error
        return real(*args, **kwargs)

    monkeypatch.setattr(factory, "ingest", ingest)
    return calls


def _events(result, kind: DagsterEventType) -> list:
    return [e for e in result.all_events if e.event_type == kind]


def test_an_ods_step_that_hits_a_transient_error_once_succeeds_on_retry(one_resource, monkeypatch) -> None:
    run, url = one_resource
    locked = sa.exc.OperationalError("INSERT INTO ods__batches ...", {}, sqlite3.OperationalError("database is locked"))
    calls = _failing_first(monkeypatch, locked)
    result = run()
    assert result.success
    assert len(calls) == 2
    assert len(_events(result, DagsterEventType.STEP_UP_FOR_RETRY)) == 1
    assert len(_events(result, DagsterEventType.ASSET_MATERIALIZATION)) == 1  # reported once, by the attempt that succeeded
    wh = Warehouse(url)
    try:
        with wh.engine.connect() as conn:
            assert conn.execute(sa.text(f"SELECT COUNT(*) FROM {wh.qualified('ods', 'batches')}")).scalar() == 1
    finally:
        wh.dispose()


def test_a_non_transient_error_fails_the_step_at_its_first_attempt(one_resource, monkeypatch) -> None:
    run, _ = one_resource
    calls = _failing_first(monkeypatch, ValueError("a bug"))
    result = run()
    assert not result.success
    assert len(calls) == 1
    assert _events(result, DagsterEventType.STEP_UP_FOR_RETRY) == []
    [failure] = _events(result, DagsterEventType.STEP_FAILURE)
    assert "ValueError: a bug" in failure.step_failure_data.error.message


def test_the_policy_backs_off_exponentially_with_jitter() -> None:
    assert (RETRY_POLICY.max_retries, RETRY_POLICY.delay) == (3, 2)
    for attempt, middle in ((1, 2), (2, 6), (3, 14)):
        delays = [RETRY_POLICY.calculate_delay(attempt) for _ in range(50)]
        assert all(middle - 2 <= d <= middle + 2 for d in delays) and len(set(delays)) > 1
