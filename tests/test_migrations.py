"""Warehouse migrations (Alembic, warehouse/migrations): an old layout brought to head with its data, a new
warehouse stamped head, idempotence, no downgrades, the version table in the audit layer, one chain."""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

import warehouse.migrations as migrations
from tests import citykit
from tests.citykit import PEOPLE
from tests.test_pipeline import DAY1, DAY2, current, run_day
from warehouse.migrations import IrreversibleMigration, heads, open_warehouse, upgrade
from warehouse.migrations.__main__ import main as cli
from warehouse.store import Warehouse

HEAD = "0009"
SHARE_TABLES = ["share.applications", "share.application_elements", "audit.share_events",
                "audit.share_extracts", "audit.share_traces"]


def state(wh: Warehouse) -> dict[str, tuple]:
    """Every table of the warehouse: its columns with their types and its rows, sorted."""
    insp = sa.inspect(wh.engine)
    schemas = [s for s in insp.get_schema_names() if s in ("ods", "std", "base", "quality", "share", "audit")] \
        if wh.is_postgres else [None]
    out = {}
    with wh.engine.connect() as conn:
        for schema in schemas:
            for t in insp.get_table_names(schema=schema):
                q = f'"{schema}"."{t}"' if schema else f'"{t}"'
                cols = tuple((c["name"], str(c["type"])) for c in insp.get_columns(t, schema=schema))
                rows = sorted(tuple(str(v) for v in r) for r in conn.execute(sa.text(f"SELECT * FROM {q}")))
                out[f"{schema}.{t}" if schema else t] = (cols, rows)
    return out


def columns(wh: Warehouse, layer: str, name: str) -> dict[str, sa.types.TypeEngine]:
    schema, table = wh.table_ref(layer, name)
    return {c["name"]: c["type"] for c in sa.inspect(wh.engine).get_columns(table, schema=schema)}


def write_old_layout(wh: Warehouse) -> None:
    """A warehouse as the versions before batch numbers wrote it, in raw SQL: ``ods.batches`` without
    ``batch_no`` and the status columns, lineage as batch id text, ``audit.reconciliation`` without
    ``withheld``, ``audit.merge_log`` with ``skipped_older``."""
    q = wh.qualified
    with wh.begin() as conn:
        if wh.is_postgres:
            for schema in ("ods", "base", "audit"):
                conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
        conn.execute(sa.text(
            f"CREATE TABLE {q('ods', 'batches')} (batch_id TEXT PRIMARY KEY, resource_id TEXT, department TEXT, "
            "resource TEXT, library TEXT, batch_date DATE, seq BIGINT, received_at TIMESTAMP, channel TEXT, "
            "sources TEXT, content_hash TEXT, rows_delivered BIGINT, rows_unparseable BIGINT, watermark_low TEXT, "
            "watermark_high TEXT, problems TEXT)"))
        conn.execute(sa.text(
            f"INSERT INTO {q('ods', 'batches')} (batch_id, resource_id, batch_date, seq, received_at, rows_delivered, "
            "rows_unparseable) VALUES (:b, :r, :d, 1, :t, 3, 0)"), [
            {"b": "hz.20261009.1", "r": "hz", "d": dt.date(2026, 10, 9), "t": dt.datetime(2026, 10, 9, 2)},
            {"b": "sb.20261009.1", "r": "sb", "d": dt.date(2026, 10, 9), "t": dt.datetime(2026, 10, 9, 1)},
            {"b": "hz.20261010.1", "r": "hz", "d": dt.date(2026, 10, 10), "t": dt.datetime(2026, 10, 10, 2)}])
        conn.execute(sa.text(
            f"CREATE TABLE {q('base', 'people')} (pid TEXT, full_name TEXT, full_name__batch TEXT, "
            "full_name__row BIGINT, phone TEXT, phone__batch TEXT, phone__row BIGINT, valid_from DATE, valid_to DATE, "
            "PRIMARY KEY (pid, valid_from))"))
        conn.execute(sa.text(
            f"INSERT INTO {q('base', 'people')} VALUES (:p, :n, :nb, 1, :ph, :pb, 2, :f, :t)"), [
            {"p": "1", "n": "张三", "nb": "hz.20261009.1", "ph": "138", "pb": "sb.20261009.1",
             "f": dt.date(2026, 10, 9), "t": dt.date(2026, 10, 10)},
            {"p": "1", "n": "张叁", "nb": "hz.20261010.1", "ph": "138", "pb": "sb.20261009.1",
             "f": dt.date(2026, 10, 10), "t": None},
            {"p": "2", "n": None, "nb": None, "ph": "139", "pb": "sb.20261009.1", "f": dt.date(2026, 10, 9),
             "t": None}])
        conn.execute(sa.text(
            f"CREATE TABLE {q('audit', 'reconciliation')} (batch_id TEXT PRIMARY KEY, resource_id TEXT, "
            "batch_date DATE, rows_delivered BIGINT, rows_accepted BIGINT, rows_quarantined BIGINT, "
            "id15_converted BIGINT)"))
        conn.execute(sa.text(f"INSERT INTO {q('audit', 'reconciliation')} VALUES ('hz.20261009.1', 'hz', "
                             "'2026-10-09', 3, 3, 0, 0)"))
        conn.execute(sa.text(
            f"CREATE TABLE {q('audit', 'merge_log')} (library TEXT, batch_date DATE, batch_ids TEXT, incoming BIGINT, "
            "new_entities BIGINT, changed_entities BIGINT, unchanged BIGINT, skipped_older BIGINT, "
            "PRIMARY KEY (library, batch_date))"))
        conn.execute(sa.text(f"INSERT INTO {q('audit', 'merge_log')} VALUES ('people', '2026-10-09', "
                             "'hz.20261009.1,sb.20261009.1', 4, 2, 0, 0, 1)"))
    wh.dispose()


def test_a_warehouse_in_the_old_layout_is_brought_to_head_with_its_data(warehouse_url: str) -> None:
    old = Warehouse(warehouse_url)
    write_old_layout(old)
    assert migrations.current(old) is None

    wh = open_warehouse(warehouse_url)
    try:
        assert migrations.current(wh) == HEAD
        with wh.engine.connect() as conn:
            numbers = dict(conn.execute(sa.text(
                f"SELECT batch_id, batch_no FROM {wh.qualified('ods', 'batches')}")).fetchall())
            status = conn.execute(sa.text(
                f"SELECT DISTINCT unreadable_bytes, unreadable_lines, status FROM {wh.qualified('ods', 'batches')}"
            )).fetchall()
            people = conn.execute(sa.text(
                f"SELECT pid, full_name, full_name__batch, full_name__row, phone__batch, valid_from "
                f"FROM {wh.qualified('base', 'people')} ORDER BY pid, valid_from")).fetchall()
            withheld = conn.execute(sa.text(f"SELECT withheld FROM {wh.qualified('audit', 'reconciliation')}")).all()
            log = conn.execute(sa.text(
                f"SELECT incoming, rebuilt_entities FROM {wh.qualified('audit', 'merge_log')}")).one()
        # numbered in the order received: 社保 came in before 户政 on the 9th
        assert numbers == {"sb.20261009.1": 1, "hz.20261009.1": 2, "hz.20261010.1": 3}
        assert status == [(0, 0, "ok")]
        assert [(p, n, nb, nr, pb) for p, n, nb, nr, pb, _ in people] == [
            ("1", "张三", 2, 1, 1), ("1", "张叁", 3, 1, 1), ("2", None, None, 1, 1)]
        assert withheld == [(None,)]
        assert tuple(log) == (4, 0)
        assert "skipped_older" not in columns(wh, "audit", "merge_log")
        assert isinstance(columns(wh, "base", "people")["full_name__batch"], sa.Integer)
        if wh.is_postgres:  # the sequence goes on after the highest number
            with wh.engine.connect() as conn:
                assert conn.execute(sa.text("SELECT nextval('ods.batch_no_seq')")).scalar() == 4
    finally:
        wh.dispose()


def test_upgrading_again_changes_nothing(warehouse_url: str) -> None:
    wh = Warehouse(warehouse_url)
    write_old_layout(wh)
    try:
        upgrade(wh)
        once = state(wh)
        upgrade(wh)  # at head: nothing to run
        assert state(wh) == once
        with wh.begin() as conn:  # a warehouse that lost its version table runs every revision again
            conn.execute(sa.text(f"DROP TABLE {wh.qualified('audit', 'alembic_version')}"))
        upgrade(wh)
        assert state(wh) == once
    finally:
        wh.dispose()


def test_the_needles_stored_as_text_are_dropped(warehouse_url: str) -> None:
    """0009: ``audit.leak_needles`` held every raw identifier as text; the needles are stored as hashes
    now (``audit.leak_needle_hashes``), so the old table goes, with whatever it held."""
    wh = Warehouse(warehouse_url)
    try:
        upgrade(wh, "0008")
        with wh.begin() as conn:
            conn.execute(sa.text(f"CREATE TABLE {wh.qualified('audit', 'leak_needles')} (state TEXT, data TEXT)"))
            conn.execute(sa.text(f"INSERT INTO {wh.qualified('audit', 'leak_needles')} VALUES ('s', '11010519491231002X')"))
        upgrade(wh)
        assert migrations.current(wh) == HEAD and "leak_needles" not in wh.layer_tables("audit")
    finally:
        wh.dispose()


def test_a_new_warehouse_is_stamped_head(warehouse_url: str) -> None:
    wh = open_warehouse(warehouse_url)
    try:
        assert migrations.current(wh) == HEAD
        # 0006 creates the share workflow's tables (the others are created by the code that writes them)
        assert wh.layer_tables("audit") == ["alembic_version", "share_events", "share_extracts", "share_traces"]
        assert all(wh.layer_tables(layer) == [] for layer in ("ods", "std", "base", "quality"))
    finally:
        wh.dispose()


def test_the_version_table_is_in_the_audit_layer(warehouse_url: str) -> None:
    wh = open_warehouse(warehouse_url)
    try:
        schema, table = migrations.version_table(wh)
        assert (schema, table) == (("audit", "alembic_version") if wh.is_postgres else (None, "audit__alembic_version"))
        assert sa.inspect(wh.engine).has_table(table, schema=schema)
        if not wh.is_postgres:
            assert not sa.inspect(wh.engine).has_table("alembic_version")
    finally:
        wh.dispose()


def test_a_downgrade_is_refused_naming_the_revision(warehouse_url: str) -> None:
    wh = open_warehouse(warehouse_url)
    try:
        before = state(wh)
        with pytest.raises(IrreversibleMigration, match=f"迁移 {HEAD} 不可回退"):
            migrations.downgrade(wh, "0004")
        with pytest.raises(IrreversibleMigration):
            migrations.downgrade(wh, "base")
        assert migrations.current(wh) == HEAD
        assert state(wh) == before
    finally:
        wh.dispose()


def test_the_revisions_form_one_chain_whose_downgrades_refuse() -> None:
    assert heads() == [HEAD]
    revisions = list(migrations.script().walk_revisions())  # head first
    assert [r.revision for r in revisions] == [f"{n:04d}" for n in range(int(HEAD), 0, -1)]
    assert [r.down_revision for r in revisions] == [f"{n:04d}" for n in range(int(HEAD) - 1, 0, -1)] + [None]
    for r in revisions:
        spec = importlib.util.spec_from_file_location(f"rev{r.revision}", r.path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        with pytest.raises(IrreversibleMigration, match=r.revision):
            module.downgrade()


def test_the_command_line_makes_a_numbered_revision_and_upgrades(tmp_path: Path, monkeypatch, capsys) -> None:
    scripts = tmp_path / "migrations"
    shutil.copytree(migrations.HERE, scripts, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(migrations, "HERE", scripts)
    assert cli(["revision", "-m", "ods.batches: a new column"]) == 0
    made = scripts / "versions" / f"{int(HEAD) + 1:04d}_ods_batches_a_new_column.py"
    assert made.exists() and str(made) in capsys.readouterr().out
    text = made.read_text()
    assert f"down_revision = '{HEAD}'" in text and "layout.refuse(revision)" in text
    assert heads() == [f"{int(HEAD) + 1:04d}"]

    url = f"sqlite:///{tmp_path / 'warehouse.db'}"
    assert cli(["--url", url, "upgrade"]) == 0
    assert cli(["--url", url, "current"]) == 0
    assert capsys.readouterr().out.strip().endswith(f": {int(HEAD) + 1:04d} (head: {int(HEAD) + 1:04d})")
    assert cli(["history"]) == 0
    assert "<base> -> 0001" in capsys.readouterr().out


# --- warehouses written by the code ---------------------------------------------------------------

def _to_batch_id_lineage(wh: Warehouse) -> None:
    """Turn a warehouse back into the layout of earlier versions: lineage as batch id text and
    ``ods.batches`` without batch numbers."""
    batches = wh.qualified("ods", "batches")
    with wh.begin() as conn:
        for name in wh.layer_tables("base"):
            base = wh.qualified("base", name)
            schema, table = wh.table_ref("base", name)
            for c in [c["name"] for c in sa.inspect(conn).get_columns(table, schema=schema)
                      if c["name"].endswith("__batch")]:
                conn.execute(sa.text(f'ALTER TABLE {base} ADD COLUMN "{c}_id" TEXT'))
                conn.execute(sa.text(f'UPDATE {base} SET "{c}_id" = (SELECT batch_id FROM {batches} '
                                     f'WHERE batch_no = {base}."{c}")'))
                conn.execute(sa.text(f'ALTER TABLE {base} DROP COLUMN "{c}"'))
                conn.execute(sa.text(f'ALTER TABLE {base} RENAME COLUMN "{c}_id" TO "{c}"'))
        conn.execute(sa.text("DROP INDEX ods.ux_batches_no" if wh.is_postgres else "DROP INDEX ux_ods__batches_no"))
        conn.execute(sa.text(f"ALTER TABLE {batches} DROP COLUMN batch_no"))
        for column in ("unreadable_bytes", "unreadable_lines", "status"):
            conn.execute(sa.text(f"ALTER TABLE {batches} DROP COLUMN {column}"))
        if wh.is_postgres:
            conn.execute(sa.text("DROP SEQUENCE ods.batch_no_seq"))
    wh.dispose()


def test_a_warehouse_of_an_earlier_version_is_upgraded_in_place(warehouse: Warehouse, city) -> None:
    """Earlier versions kept each value's lineage batch as the batch id text and had no batch
    numbers. Opening the warehouse numbers the batches in the order they were received, turns the
    lineage into numbers with the same meaning, and the next day's batches carry on from there."""
    from assets.resources import WarehouseResource

    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    before = {lib.code: current(warehouse, cat, lib.code) for lib in cat.libraries}
    _to_batch_id_lineage(warehouse)
    assert not isinstance(columns(warehouse, "base", "people")["full_name__batch"], sa.Integer)

    upgraded = WarehouseResource(url=warehouse.url).get()
    types = columns(upgraded, "base", "people")
    assert isinstance(types["full_name__batch"], sa.Integer) and isinstance(types["phone__batch"], sa.Integer)
    for lib in cat.libraries:
        assert current(upgraded, cat, lib.code).equals(before[lib.code]), lib.code
    with upgraded.engine.connect() as conn:
        numbered = conn.execute(sa.text(
            f"SELECT batch_no FROM {upgraded.qualified('ods', 'batches')} ORDER BY received_at, batch_id")).scalars().all()
        status = conn.execute(sa.text(
            f"SELECT DISTINCT unreadable_bytes, unreadable_lines, status FROM {upgraded.qualified('ods', 'batches')}"
        )).fetchall()
    assert numbered == list(range(1, len(cat.resources) + 1))
    assert status == [(0, 0, "ok")]  # the batches of an earlier version get the new columns as ok

    rows = [[p, n, s, b] for p, n, s, b in PEOPLE]
    rows[2][1] = "赵刚"  # renamed on day 2
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"], rows)
    out = run_day(upgraded, cat, landing, DAY2)
    assert out["people"].changed_entities == 1
    renamed = current(upgraded, cat, "people").filter(pl.col("pid") == PEOPLE[2][0]).row(0, named=True)
    assert renamed["full_name"] == "赵刚" and renamed["full_name__batch"] == "huzheng_renkou.20261010.1"
    with upgraded.engine.connect() as conn:
        day2 = conn.execute(sa.text(f"SELECT batch_no FROM {upgraded.qualified('ods', 'batches')} "
                                    "WHERE batch_date = :d ORDER BY batch_no"), {"d": DAY2}).scalars().all()
    assert day2 and day2 == list(range(len(cat.resources) + 1, len(cat.resources) + 1 + len(day2)))
    upgraded.dispose()


def test_a_warehouse_the_current_code_wrote_without_a_version_is_only_stamped(warehouse: Warehouse, city) -> None:
    """Tables the current code created (no version table: written before Alembic by this layout) are
    already at head: every revision finds its columns there and changes nothing."""
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    before = state(warehouse)
    upgrade(warehouse)
    after = state(warehouse)
    version = "audit.alembic_version" if warehouse.is_postgres else "audit__alembic_version"
    assert after.pop(version)[1] == [(HEAD,)]
    for name in SHARE_TABLES:  # created by 0006, empty
        assert after.pop(name if warehouse.is_postgres else name.replace(".", "__"))[1] == []
    assert after == before
