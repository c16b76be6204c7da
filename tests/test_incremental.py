"""Incremental nights: a full snapshot delivered again stores, standardises and merges only what
changed; what it carries is still delivered, accepted and rebuildable — on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from catalog.loader import Catalogue, load_catalogue
from guiji.base import merge_library
from guiji.channels import read_files
from guiji.standardize import standardize
from guiji.std import collect
from tests import citykit
from tests.test_order import Warehouses, base_state, warehouses  # noqa: F401  (the fixture)
from warehouse.ods import DIGEST, latest_batch, read_carried, rebuild_delivery
from warehouse.std import read_std
from warehouse.store import Warehouse

D1, D2, D3 = dt.date(2026, 11, 2), dt.date(2026, 11, 3), dt.date(2026, 11, 4)
HZ = ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"]
RESOURCE = "huzheng_renkou"


def person(i: int) -> list[str]:
    birth = f"19{70 + i % 30:02d}0{1 + i % 9}1{i % 9}"
    return [citykit.id_number("370202", birth, i % 1000), f"居民{i:03d}", "MF"[i % 2], birth]


def day1() -> list[list[str]]:
    rows = [person(i) for i in range(60)]
    rows.insert(10, ["12345", "坏号码", "M", "19800101"])  # quarantined (key format) on every date
    return rows


def day2() -> tuple[list[list[str]], list[list[str]]]:
    """The snapshot of D2 in two files: a.csv with one person renamed, one gone, one new and one
    delivered twice (as before, and in full-width digits: the same key, so both are quarantined);
    b.csv with records unchanged since D1 (carried, from another file)."""
    rows = day1()
    rows[5] = [rows[5][0], "改名了", rows[5][2], rows[5][3]]
    del rows[30]
    rows.append(person(500))
    twin = rows[20]
    rows.append([twin[0].translate(str.maketrans("0123456789", "０１２３４５６７８９")), *twin[1:]])
    return rows[:50], rows[50:]


def deliver(landing: Path) -> None:
    citykit.write_csv(landing / "hz" / f"{D1:%Y%m%d}" / "a.csv", HZ, day1())
    a, b = day2()
    citykit.write_csv(landing / "hz" / f"{D2:%Y%m%d}" / "a.csv", HZ, a)
    citykit.write_csv(landing / "hz" / f"{D2:%Y%m%d}" / "b.csv", HZ, b)
    d3 = day1()
    d3[40] = [d3[40][0], "第三天改名", d3[40][2], d3[40][3]]
    citykit.write_csv(landing / "hz" / f"{D3:%Y%m%d}" / "a.csv", HZ, d3)


@pytest.fixture
def hz_city(tmp_path: Path) -> tuple[Catalogue, Path]:
    folder = citykit.write_catalogue(tmp_path)
    landing = tmp_path / "landing"
    deliver(landing)
    return load_catalogue(folder), landing


def run(wh: Warehouse, cat: Catalogue, landing: Path, day: dt.date, *, steps: str = "collect+merge",
        chunk_keys: int = 50_000, chunk_rows: int = 200_000) -> None:
    if "collect" in steps:
        collect(wh, cat, cat.resource(RESOURCE), day, landing, variables=os.environ, with_gx=False,
                chunk_rows=chunk_rows)
    if "merge" in steps:
        for lib in cat.libraries:
            merge_library(wh, cat, lib.code, day, chunk_keys=chunk_keys)


@pytest.mark.parametrize("chunk_rows", [200_000, 4], ids=["in-memory", "spilled"])
def test_unchanged_records_are_carried_not_stored_again(warehouse: Warehouse, hz_city, chunk_rows: int) -> None:
    """(``spilled``: more rows than one 标准层 slice, so the batch's rows wait on local disk in key buckets
    between the channel and the two writers, the carried ones left out when they are read back.)"""
    cat, landing = hz_city
    r = cat.resource(RESOURCE)
    run(wh := warehouse, cat, landing, D1, chunk_rows=chunk_rows)
    run(wh, cat, landing, D2, chunk_rows=chunk_rows)
    with wh.engine.connect() as conn:
        b1, b2 = latest_batch(wh, conn, r, D1), latest_batch(wh, conn, r, D2)
        assert b1 is not None and b2 is not None
        stored = conn.execute(sa.text(f"SELECT COUNT(*) FROM {wh.qualified('ods', r.id)} WHERE _batch_id = :b"),
                              {"b": b2.batch_id}).scalar()
        own_std = read_std(wh, conn, cat, r, b2.batch_id, carried=False)
        full_std = read_std(wh, conn, cat, r, b2.batch_id)
        rec = conn.execute(sa.text(
            f"SELECT rows_delivered, rows_accepted, rows_quarantined, rows_carried "
            f"FROM {wh.qualified('audit', 'reconciliation')} WHERE batch_id = :b"), {"b": b2.batch_id}).one()
        quarantine = wh.read(conn, f"SELECT row_no, reason_code FROM {wh.qualified('quality', 'quarantine')} "
                             "WHERE batch_id = :b", {"row_no": pl.Int64(), "reason_code": pl.String()},
                             {"b": b2.batch_id})
        rebuilt = rebuild_delivery(wh, conn, r, b2.batch_id)
        runs = read_carried(wh, conn, b2.batch_id)
    # 62 records: the renamed one, the new one and the two copies of one key are stored and
    # standardised, the bad key too (quarantined on D1, so it is looked at again); 57 are carried
    assert (b2.rows_delivered, b2.carried_from, b2.rows_carried) == (62, b1.batch_id, 57)
    assert stored == 5 and own_std.height == 2
    assert tuple(rec) == (62, 59, 3, 57)  # delivered = accepted + quarantined, 57 of the accepted carried
    assert set(runs.get_column("source").to_list()) == {"a.csv", "b.csv"}
    # the delivered files come back from the warehouse record for record, from the files they were in
    delivered = read_files(r, r.channel, D2, landing).frame
    cols = [c for c in rebuilt.columns if c not in ("_batch_id", DIGEST)]
    assert rebuilt.height == delivered.height == 62
    assert rebuilt.select(cols).sort("_source", "_row_no").equals(delivered.select(cols).sort("_source", "_row_no"))
    # what the 标准层 holds for the batch is what standardising the whole delivery gives
    full = standardize(rebuilt, cat, r, D2)
    assert sorted(full_std.iter_rows()) == sorted(full.accepted.iter_rows())
    assert sorted(quarantine.iter_rows()) == sorted(full.quarantine.select("_row_no", "reason_code").iter_rows())
    # a rerun of the partition finds the delivery stored and rebuilds the same 标准层
    before = layers(wh)
    run(wh, cat, landing, D2, chunk_rows=chunk_rows)
    assert layers(wh) == before


def layers(wh: Warehouse) -> dict[str, list[tuple]]:
    """Every row of the tables the 归集 writes, as text, sorted."""
    out = {}
    with wh.engine.connect() as conn:
        for layer, table in (("ods", RESOURCE), ("ods", "carried"), ("ods", "batches"), ("std", RESOURCE),
                             ("quality", "quarantine"), ("audit", "reconciliation"), ("base", "people")):
            rows = conn.execute(sa.text(f"SELECT * FROM {wh.qualified(layer, table)}")).all()
            out[f"{layer}.{table}"] = sorted(tuple(str(v) for v in r) for r in rows)
    return out


def test_carried_dates_in_any_order_give_the_same_base_library(warehouses: Warehouses, hz_city) -> None:  # noqa: F811
    """In order, every date after D1 carries; backwards, nothing can be carried (no earlier batch);
    D1, D3, then D2: D3 carries from D1, and D2 lands between them; D3 received (carrying from D1)
    before D2 runs, merged after it: its carried records are not what the library holds then."""
    cat, landing = hz_city
    states, carried = [], []
    orders = ([D1, D2, D3], [D3, D2, D1], [D1, D3, D2], [D1, D2, D3, D2, D1],
              [D1, (D3, "collect"), D2, (D3, "merge")],
              [D1, D2, D3, D2], [D1, D3, D2])  # the last two merged in key ranges of 7 entities
    for i, order in enumerate(orders):
        wh = warehouses.new()
        for step in order:
            day, steps = step if isinstance(step, tuple) else (step, "collect+merge")
            run(wh, cat, landing, day, steps=steps, chunk_keys=7 if i >= 5 else 50_000)
        with wh.engine.connect() as conn:
            carried.append(conn.execute(sa.text(
                f"SELECT COALESCE(SUM(rows_carried), 0) FROM {wh.qualified('ods', 'batches')}")).scalar())
        states.append(base_state(wh, cat))
        wh.dispose()
    assert carried[0] > 0 and carried[1] == 0 and carried[2] > 0 and carried[4] > 0
    assert all(s == states[0] for s in states[1:])
    # and it is the history of what was delivered: the D2 rename holds from D2, undone on D3
    people = states[0]["people"]
    renamed = [row for row in people if "改名了" in row]
    assert len(renamed) == 1 and str(D2) in renamed[0] and str(D3) in renamed[0]


def test_a_warehouse_from_before_digests_is_upgraded_and_carries_from_the_next_batch_on(
        warehouse: Warehouse, tmp_path: Path) -> None:
    """Migration 0007 adds the digest and carried columns to a warehouse that holds data; its batches
    have no digests, so the next delivery stores everything, and the one after carries."""
    import warehouse.migrations as migrations

    cat = load_catalogue(citykit.write_catalogue(tmp_path / "cat"))
    landing = tmp_path / "same"
    for day in (D1, D2, D3):
        citykit.write_csv(landing / "hz" / f"{day:%Y%m%d}" / "a.csv", HZ, day1())
    wh = warehouse
    migrations.upgrade(wh, "0006")
    run(wh, cat, landing, D1)
    with wh.begin() as conn:  # what the code of revision 0006 wrote
        for layer, table, column in (("ods", RESOURCE, DIGEST), ("ods", "batches", "carried_from"),
                                     ("ods", "batches", "rows_carried"), ("audit", "reconciliation", "rows_carried")):
            conn.execute(sa.text(f"ALTER TABLE {wh.qualified(layer, table)} DROP COLUMN {column}"))
    wh.dispose()
    upgraded = Warehouse(wh.url)
    migrations.upgrade(upgraded)
    assert migrations.current(upgraded) == "0009"
    run(upgraded, cat, landing, D2)
    run(upgraded, cat, landing, D3)
    with upgraded.engine.connect() as conn:
        carried = conn.execute(sa.text(f"SELECT batch_date, rows_carried, carried_from FROM "
                                       f"{upgraded.qualified('ods', 'batches')} ORDER BY batch_date")).all()
        rec = conn.execute(sa.text(f"SELECT rows_delivered, rows_accepted, rows_quarantined, rows_carried FROM "
                                   f"{upgraded.qualified('audit', 'reconciliation')} ORDER BY batch_date")).all()
    assert [(c[1] or 0) for c in carried] == [0, 0, 60]
    assert carried[2][2] == f"{RESOURCE}.{D2:%Y%m%d}.1"
    assert [tuple(r) for r in rec] == [(61, 60, 1, None), (61, 60, 1, 0), (61, 60, 1, 60)]
    upgraded.dispose()


def test_record_digests_hashed_a_slice_at_a_time_are_those_hashed_at_once(monkeypatch) -> None:
    """A batch's record digests are hashed a slice at a time (the struct hash of a whole 10 M-record
    batch needs GBs); each record's digest is the one hashed with the whole batch, which earlier
    batches stored, so an unchanged record is still recognised."""
    import warehouse.ods as ods

    cat = load_catalogue(Path("catalog/demo"))
    res = cat.resource("rsj_sbcb")
    cols = ods.source_columns(res)
    rows = pl.DataFrame({"_raw": [None if i % 4 else f"raw{i}" for i in range(23)],
                         "_error": [None if i % 5 else "E" for i in range(23)],
                         **{c: [f"{c}{i % 6}" if (i + j) % 7 else None for i in range(23)] for j, c in enumerate(cols)}},
                        schema={"_raw": pl.String, "_error": pl.String, **{c: pl.String for c in cols}})
    whole = rows.select(ods.record_digest(res)).to_series()
    for size in (1, 4, 23, 1000):
        monkeypatch.setattr(ods, "DIGEST_SLICE_ROWS", size)
        assert ods.with_record_digest(res, rows).get_column(DIGEST).equals(whole)
    assert ods.with_record_digest(res, rows.clear()).get_column(DIGEST).dtype == pl.Int64
