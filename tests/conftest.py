"""Shared fixtures: a warehouse on SQLite and on a real PostgreSQL database per test.

Tests create and drop their own PostgreSQL databases. Under CI=true a test that needs
PostgreSQL fails when the server cannot be reached; elsewhere it is skipped with the reason.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import sqlalchemy as sa

from warehouse.store import Warehouse

PG_ADMIN_URL = os.environ.get("GONGSHU_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")

os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "1")

# The slowest test files first (measured with --durations; each runs whole nights through Dagster and
# spends much of its time waiting on daemons, brokers and step processes): `make test` hands files to
# its workers in collection order (--dist loadfile --no-loadscope-reorder), so the long ones start at
# once and the short ones fill the gaps instead of one long file starting last.
SLOW_FIRST = ("test_celery.py", "test_bench.py", "test_end_to_end.py", "test_detection.py",
              "test_share_end_to_end.py", "test_night.py", "test_ui.py", "test_order.py")


def pytest_collection_modifyitems(config, items) -> None:
    rank = {name: i for i, name in enumerate(SLOW_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(SLOW_FIRST)))


@pytest.fixture(autouse=True)
def _own_home(tmp_path: Path, monkeypatch) -> None:
    """Files the code writes under GONGSHU_HOME (Data Docs pages, reports, open data) go to the test's
    own folder, never into the checkout's .gongshu/."""
    monkeypatch.setenv("GONGSHU_HOME", str(tmp_path / "gongshu-home"))


def _pg_unavailable(reason: str) -> None:
    if IN_CI:
        pytest.fail(f"PostgreSQL is required in CI but unreachable at {PG_ADMIN_URL}: {reason}")
    pytest.skip(f"PostgreSQL unreachable: {reason}")


@contextmanager
def fresh_pg_database() -> Iterator[str]:
    """A new, empty PostgreSQL database (its URL), dropped afterwards; fails in CI, else skips, when the
    server cannot be reached."""
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"gongshu_test_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        _pg_unavailable(str(exc.orig).strip().splitlines()[0])
    url = sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh, empty PostgreSQL database; dropped afterwards."""
    with fresh_pg_database() as url:
        yield url


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def warehouse_url(request, tmp_path: Path) -> str:
    """Every storage test runs on both SQLite and PostgreSQL."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'warehouse.db'}"
    return request.getfixturevalue("pg_url")


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    wh = Warehouse(warehouse_url)
    yield wh
    wh.dispose()


@pytest.fixture
def city(tmp_path: Path, monkeypatch) -> Iterator[tuple]:
    """The second city (山海市, tests/citykit.py): its catalogue and a landing folder, with its
    API channel served from a local HTTP server for the duration of the test."""
    from catalog.loader import load_catalogue
    from pipelines.demo_api import serve_in_thread
    from tests import citykit

    cat = load_catalogue(citykit.write_catalogue(tmp_path))
    landing = tmp_path / "landing"
    landing.mkdir()
    server, base = serve_in_thread(landing)
    monkeypatch.setenv("SHANHAI_QIYE_URL", f"{base}/qiye")
    yield cat, landing
    server.shutdown()
    server.server_close()
