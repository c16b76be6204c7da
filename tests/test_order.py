"""Order never matters: the base libraries depend only on what was delivered, never on the order in
which batch dates (partitions) run or rerun — backfills are normal — on SQLite and PostgreSQL.

The second city (tests/citykit.py) delivers on three dates that are not consecutive, with what makes
order matter: a value changed and changed back, a 前置库 initial load with history rows, an entity
changed twice in one day, a value re-delivered unchanged, an element only one department delivers
on one date, and a re-delivery of an earlier date after later dates were merged.
"""

from __future__ import annotations

import datetime as dt
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from catalog.loader import Catalogue, load_catalogue
from guiji.base import key_ranges, merge_library
from guiji.std import collect
from tests import citykit
from tests.citykit import ORGS, PEOPLE
from tests.conftest import PG_ADMIN_URL
from warehouse.base import base_schema
from warehouse.ods import batch_numbers
from warehouse.std import mergeable_batch
from warehouse.store import Warehouse

D1, D2, D3 = dt.date(2026, 11, 19), dt.date(2026, 11, 30), dt.date(2026, 12, 1)
DAYS = (D1, D2, D3)
HZ = ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"]


def deliver(landing: Path) -> None:
    """Three dates of deliveries, written once; each partition reads only its own."""
    people = [[p, n, s, b] for p, n, s, b in PEOPLE]
    citykit.write_csv(landing / "hz" / f"{D1:%Y%m%d}" / "renkou.csv", HZ, people)
    renamed = [list(r) for r in people]
    renamed[2][1] = "赵刚"
    citykit.write_csv(landing / "hz" / f"{D2:%Y%m%d}" / "renkou.csv", HZ, renamed)
    back = [list(r) for r in people]  # 赵刚 → 赵强 again, and 李丽 → 李莉
    back[1][1] = "李莉"
    citykit.write_csv(landing / "hz" / f"{D3:%Y%m%d}" / "renkou.csv", HZ, back)

    p0, p1, p2 = (p[0] for p in PEOPLE)
    citykit.write_db(landing, [
        (p0, PEOPLE[0][1], "13800000000", "2026-03-01 08:00:00"),  # history before the initial load
        (p0, PEOPLE[0][1], "13800000001", f"{D1} 08:00:00"),
        (p0, PEOPLE[0][1], "13800000011", f"{D1} 15:30:00"),  # changed twice on one day: the later wins
        (p1, PEOPLE[1][1], "13900000002", f"{D1} 09:00:00"),
        (p2, PEOPLE[2][1], "13700000003", f"{D2} 10:00:00"),
        (p0, PEOPLE[0][1], "13800000011", f"{D3} 11:00:00"),  # the same value again: lineage stays on D1
        (p1, PEOPLE[1][1], "13900000033", f"{D3} 12:00:00"),
    ])
    citykit.write_api(landing, D1, [{"code": c, "title": t, "capital": k} for c, t, k in ORGS])
    citykit.write_api(landing, D3, [{"code": ORGS[0][0], "title": ORGS[0][1], "capital": "300"}])
    citykit.write_json(landing / "zz" / f"{D1:%Y%m%d}" / "zheng.json",
                       [{"no": "A-0001", "owner": p0, "owner_name": PEOPLE[0][1]},
                        {"no": "A-0002", "owner": p1, "owner_name": PEOPLE[1][1]}])
    citykit.write_json(landing / "zz" / f"{D2:%Y%m%d}" / "zheng.json",
                       [{"no": "A-0002", "owner": p1, "owner_name": "李力"}])
    citykit.write_xlsx(landing / "gs" / f"{D2:%Y%m%d}" / "xuke.xlsx", ["许可证号", "企业代码", "企业名称"],
                       [["B-01", ORGS[0][0], ORGS[0][1]]])


@pytest.fixture
def order_city(tmp_path: Path, monkeypatch) -> Iterator[tuple[Catalogue, Path]]:
    """The second city, its 社保 前置库 starting with an initial load on D1, and its API served."""
    from pipelines.demo_api import serve_in_thread

    folder = citykit.write_catalogue(tmp_path)
    path = folder / "resources" / "shebao_canbao.yaml"
    path.write_text(path.read_text(encoding="utf-8").replace("watermark: UPD}", f"watermark: UPD, initial_load: {D1}}}"),
                    encoding="utf-8")
    cat = load_catalogue(folder)
    landing = tmp_path / "landing"
    deliver(landing)
    server, base = serve_in_thread(landing)
    monkeypatch.setenv("SHANHAI_QIYE_URL", f"{base}/qiye")
    yield cat, landing
    server.shutdown()
    server.server_close()


class Warehouses:
    """A fresh, empty warehouse for every example (a new SQLite file or PostgreSQL database)."""

    def __init__(self, kind: str, tmp_path: Path) -> None:
        self.kind, self.tmp_path, self.made = kind, tmp_path, []

    def new(self) -> Warehouse:
        name = f"gongshu_order_{uuid.uuid4().hex[:12]}"
        if self.kind == "sqlite":
            return Warehouse(f"sqlite:///{self.tmp_path / (name + '.db')}")
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
        admin.dispose()
        self.made.append(name)
        return Warehouse(sa.engine.make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False))

    def drop(self) -> None:
        admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in self.made:
                conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def warehouses(warehouse_url: str, tmp_path: Path) -> Iterator[Warehouses]:
    kind = "sqlite" if warehouse_url.startswith("sqlite") else "postgres"
    made = Warehouses(kind, tmp_path)
    yield made
    if kind == "postgres":
        made.drop()


def run_date(wh: Warehouse, cat: Catalogue, landing: Path, day: dt.date, **merge) -> None:
    """One partition as the nightly job runs it: every resource's 归集, then every library's merge."""
    for r in cat.resources:
        collect(wh, cat, r, day, landing, variables=os.environ, with_gx=False)
    for lib in cat.libraries:
        merge_library(wh, cat, lib.code, day, **merge)


def checked_date(wh: Warehouse, cat: Catalogue, landing: Path, day: dt.date) -> None:
    """:func:`run_date` and the date's 一数一源 and 关联一致性 checks of every library, as the night runs them."""
    from quality.conflicts import check_library_consistency
    from quality.references import check_references

    run_date(wh, cat, landing, day)
    for lib in cat.libraries:
        check_library_consistency(wh, cat, lib.code, day)
        check_references(wh, cat, lib.code, day)


def base_state(wh: Warehouse, cat: Catalogue) -> dict[str, list[tuple]]:
    """Every version of every base library, lineage as batch id and row: what must not depend on order."""
    out = {}
    with wh.engine.connect() as conn:
        numbers = batch_numbers(wh, conn)
        nos, ids = numbers.get_column("batch_no"), numbers.get_column("batch_id")
        for lib in cat.libraries:
            schema = base_schema(lib)
            frame = wh.read(conn, f"SELECT {', '.join(wh.quote(c) for c in schema)} FROM {wh.qualified('base', lib.code)}",
                            schema)
            frame = frame.with_columns(pl.col(c).replace_strict(nos, ids, default=None, return_dtype=pl.String)
                                       for c in frame.columns if c.endswith("__batch"))
            out[lib.code] = sorted(tuple("" if v is None else str(v) for v in row) for row in frame.iter_rows())
    return out


def in_order(warehouses: Warehouses, cat: Catalogue, landing: Path) -> dict[str, list[tuple]]:
    wh = warehouses.new()
    for day in DAYS:
        run_date(wh, cat, landing, day)
    state = base_state(wh, cat)
    wh.dispose()
    return state


def versions(state: dict[str, list[tuple]], lib: str, cat: Catalogue, key: tuple[str, ...] | str,
             *columns: str) -> list[tuple]:
    """(valid_from, valid_to, *columns) of one entity's versions, as text, oldest first."""
    names = list(base_schema(cat.library(lib)))
    key = (key,) if isinstance(key, str) else key
    at = [names.index(k) for k in cat.library(lib).key]
    idx = [names.index(c) for c in ("valid_from", "valid_to", *columns)]
    return sorted(tuple(row[i] for i in idx) for row in state[lib] if tuple(row[i] for i in at) == key)


def test_history_in_date_order_follows_what_was_delivered(warehouses: Warehouses, order_city) -> None:
    cat, landing = order_city
    state = in_order(warehouses, cat, landing)
    p0, p1, p2 = (p[0] for p in PEOPLE)
    # a value changed and changed back: three versions, each with the lineage of its own delivery
    assert versions(state, "people", cat, p2, "full_name", "full_name__batch") == [
        (str(D1), str(D2), "赵强", "huzheng_renkou.20261119.1"),
        (str(D2), str(D3), "赵刚", "huzheng_renkou.20261130.1"),
        (str(D3), "", "赵强", "huzheng_renkou.20261201.1"),
    ]
    # the initial load's history and a same-day change: the latest of the day holds from D1; the same
    # value delivered again on D3 keeps its D1 lineage (row 4: the rows of a batch in watermark order)
    assert versions(state, "people", cat, p0, "phone", "phone__batch", "phone__row") == [
        (str(D1), "", "13800000011", "shebao_canbao.20261119.1", "4")]
    assert versions(state, "people", cat, p1, "phone")[-1] == (str(D3), "", "13900000033")
    # a licence re-delivered with another holder name on D2; a library fed on D2 only
    assert versions(state, "permits", cat, ("A", "A-0002"), "holder_name", "holder_name__batch") == [
        (str(D1), str(D2), PEOPLE[1][1], "zhengzhao_zheng.20261119.1"),
        (str(D2), "", "李力", "zhengzhao_zheng.20261130.1")]
    assert versions(state, "permits", cat, ("B", "B-01"), "holder") == [(str(D2), "", ORGS[0][0])]
    assert versions(state, "org", cat, ORGS[0][0], "capital") == [(str(D1), str(D3), "120.5"), (str(D3), "", "300.0")]


def test_dates_run_backwards_give_the_same_base_libraries_as_in_order(warehouses: Warehouses, order_city) -> None:
    """The case of the issue: 12-01, then 11-30, then 11-19 on a fresh warehouse."""
    cat, landing = order_city
    expected = in_order(warehouses, cat, landing)
    wh = warehouses.new()
    for day in reversed(DAYS):
        run_date(wh, cat, landing, day)
    assert base_state(wh, cat) == expected
    with wh.engine.connect() as conn:
        rebuilt = conn.execute(sa.text(f"SELECT SUM(rebuilt_entities) FROM {wh.qualified('audit', 'merge_log')}")).scalar()
    assert rebuilt > 0  # the backfilled dates landed inside histories and were folded in
    wh.dispose()


def test_snapshots_delivered_again_carry_their_unchanged_records(warehouses: Warehouses, order_city) -> None:
    """The 户政 file is a snapshot delivered on every date: in date order, each date after D1 carries
    the records its previous date holds unchanged (guiji.ods.carry), so the orders and reruns below
    run over carried records too; run backwards, D3 and D2 have no earlier batch to compare with."""
    cat, landing = order_city

    def carried(days) -> list[int]:
        wh = warehouses.new()
        for day in days:
            run_date(wh, cat, landing, day)
        with wh.engine.connect() as conn:
            out = conn.execute(sa.text(f"SELECT COALESCE(rows_carried, 0) FROM {wh.qualified('ods', 'batches')} "
                                       "WHERE resource_id = 'huzheng_renkou' ORDER BY batch_date")).scalars().all()
        wh.dispose()
        return out

    assert carried(DAYS) == [0, 2, 1]  # D2: one renamed of three; D3: two changed back or renamed
    assert carried(reversed(DAYS)) == [0, 0, 0]


@settings(max_examples=5, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(order=st.permutations(DAYS), reruns=st.lists(st.sampled_from(DAYS), max_size=2))
def test_any_order_of_dates_and_reruns_gives_the_same_base_libraries(warehouses: Warehouses, order_city,
                                                                     order, reruns) -> None:
    cat, landing = order_city
    expected = getattr(warehouses, "expected", None) or in_order(warehouses, cat, landing)
    warehouses.expected = expected
    wh = warehouses.new()
    for day in [*order, *reruns]:
        run_date(wh, cat, landing, day)
    assert base_state(wh, cat) == expected
    wh.dispose()


def test_a_redelivery_of_an_earlier_date_replaces_its_values_in_the_history(warehouses: Warehouses,
                                                                            order_city) -> None:
    """After D3 is merged, 户政 re-delivers D2 with 李丽 renamed to 李黎: the rename holds from D2
    until D3's own rename, as if it had come in order."""
    cat, landing = order_city
    wh = warehouses.new()
    for day in DAYS:
        run_date(wh, cat, landing, day)
    redelivered = [[p, n, s, b] for p, n, s, b in PEOPLE]
    redelivered[2][1] = "赵刚"
    redelivered[1][1] = "李黎"
    citykit.write_csv(landing / "hz" / f"{D2:%Y%m%d}" / "renkou.csv", HZ, redelivered)
    run_date(wh, cat, landing, D2)
    state = base_state(wh, cat)
    assert versions(state, "people", cat, PEOPLE[1][0], "full_name", "full_name__batch") == [
        (str(D1), str(D2), "李丽", "huzheng_renkou.20261119.1"),
        (str(D2), str(D3), "李黎", "huzheng_renkou.20261130.2"),
        (str(D3), "", "李莉", "huzheng_renkou.20261201.1"),
    ]
    wh.dispose()


def conflict_ledger(wh: Warehouse) -> list[tuple]:
    """Every 一数一源 conflict of the ledger, as text."""
    from quality.conflicts import TABLE_SCHEMA, conflicts_table

    with wh.begin() as conn:
        wh.create(conn, conflicts_table(wh))
    with wh.engine.connect() as conn:
        rows = wh.read(conn, f"SELECT {', '.join(wh.quote(c) for c in TABLE_SCHEMA)} FROM "
                             f"{wh.qualified('quality', 'conflicts')}", TABLE_SCHEMA)
    return sorted(tuple("" if v is None else str(v) for v in r) for r in rows.iter_rows())


def reference_failures(wh: Warehouse) -> list[tuple]:
    """Every stored 关联一致性 failure, per batch date, as text."""
    from quality.references import REFERENCE_FAILURES, TABLE_SCHEMA

    with wh.engine.connect() as conn:
        rows = wh.read(conn, f"SELECT {', '.join(wh.quote(c) for c in TABLE_SCHEMA)} FROM "
                             f"{wh.qualified('quality', REFERENCE_FAILURES)}", TABLE_SCHEMA)
    return sorted(tuple("" if v is None else str(v) for v in r) for r in rows.iter_rows())


def test_the_conflict_ledger_and_reference_failures_do_not_depend_on_the_order_dates_run(
        warehouses: Warehouses, order_city) -> None:
    """社保 carries copies of 户政's names: 赵强 on D2 while 户政 said 赵刚 (open since D2, not delivered again),
    李丽 on D1 (agreeing then) and on D3 while 户政 said 李莉. Backwards, the D1 match must not close the D3
    conflict, and a backfill that finds a difference looks at the dates checked after it. The licence
    A-0002 names its holder 李力 from D2 on: its 关联一致性 failure of each date compares with the 人口库
    of that date (李丽 on D2, 李莉 on D3), not with whatever was merged last."""
    cat, landing = order_city

    def night(wh: Warehouse, day: dt.date) -> None:
        checked_date(wh, cat, landing, day)

    wh = warehouses.new()
    for day in DAYS:
        night(wh, day)
    expected = conflict_ledger(wh), reference_failures(wh)
    wh.dispose()
    people = [r for r in expected[0] if r[0] == "people" and r[2] == "shebao"]
    p1, p2 = PEOPLE[1][0], PEOPLE[2][0]
    assert {(r[4], r[6], r[7], r[9], r[13], r[14]) for r in people} == {
        (p1, "李丽", "李莉", str(D3), "1", "open"), (p2, "赵强", "赵刚", str(D2), "1", "open")}
    mismatches = {(r[0], r[7], r[8]) for r in expected[1] if r[3] == "name_mismatch"}
    assert mismatches == {(str(D2), "李力", "李丽"), (str(D3), "李力", "李莉")}, expected[1]
    for order in (tuple(reversed(DAYS)), (D3, D1, D2, D3, D1)):  # backwards; shuffled with reruns
        wh = warehouses.new()
        for day in order:
            night(wh, day)
        assert (conflict_ledger(wh), reference_failures(wh)) == expected, order
        wh.dispose()


def merge_log(wh: Warehouse) -> list[tuple]:
    with wh.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT library, batch_date, batch_ids, incoming, new_entities, changed_entities, "
                                    f"unchanged, rebuilt_entities FROM {wh.qualified('audit', 'merge_log')}")).fetchall()
    return sorted(tuple(str(v) for v in r) for r in rows)


def test_a_merge_by_key_ranges_gives_what_a_merge_in_one_piece_gives(warehouses: Warehouses, order_city) -> None:
    """Backwards, with a rerun and a re-delivery of an earlier date: merged one entity at a time
    (a key range per entity, composite keys included), the base libraries and the merge log are
    those of the merge in one piece."""
    cat, landing = order_city
    results = []
    for chunk_keys in (1_000_000, 1):
        wh = warehouses.new()
        for day in (D3, D1, D2, D1):
            run_date(wh, cat, landing, day, chunk_keys=chunk_keys)
        if chunk_keys == 1:  # several ranges indeed, for a single and a composite key
            with wh.engine.connect() as conn:
                for lib in ("people", "permits"):
                    ids = [b.batch_id for r in cat.resources_of(lib) if (b := mergeable_batch(wh, conn, r, D1))]
                    assert len(key_ranges(wh, conn, cat, cat.library(lib), ids, 1)) > 1
        results.append((base_state(wh, cat), merge_log(wh)))
        wh.dispose()
    assert results[0][0] and results[1] == results[0]


def scorecard_consistency(wh: Warehouse, cat: Catalogue, day: dt.date) -> list[tuple]:
    """The 一致性 rule counts the scorecard of ``day`` is computed from, as text."""
    from quality.scorecard.inputs import consistency_rule_counts, latest_batches

    frame = consistency_rule_counts(wh, cat, latest_batches(wh, day), day)
    return sorted(tuple("" if v is None else str(v) for v in r) for r in frame.iter_rows())


def test_the_scorecards_consistency_of_a_date_does_not_depend_on_what_was_merged_after_it(
        warehouses: Warehouses, order_city) -> None:
    """The scorecard of D2 compares 社保's D2 batch with 户政's names of D2 (赵强 against 赵刚: one of one
    differs), and counts the licences' references as the libraries stood on D2 (A-0002's holder 李力
    against 李丽) — computed the night of D2, after D3 was merged (赵刚 back to 赵强), or with the dates
    run backwards and rerun; a date checked before the rates were stored computes them the same way."""
    cat, landing = order_city

    def night(wh: Warehouse, day: dt.date) -> None:
        checked_date(wh, cat, landing, day)

    wh = warehouses.new()
    that_night = {}
    for day in DAYS:
        night(wh, day)
        that_night[day] = scorecard_consistency(wh, cat, day)
    d2 = {(r[1], r[3]): (r[7], r[8]) for r in that_night[D2]}
    assert d2[("shebao_canbao", "full_name.authority")] == ("1", "1"), that_night[D2]
    assert d2[("zhengzhao_zheng", "holder.reference")] == ("2", "1"), that_night[D2]  # A-0001 and A-0002
    d3 = {(r[1], r[3]): (r[7], r[8]) for r in that_night[D3]}
    assert d3[("shebao_canbao", "full_name.authority")] == ("2", "1"), that_night[D3]
    assert {day: scorecard_consistency(wh, cat, day) for day in DAYS} == that_night
    with wh.begin() as conn:
        conn.execute(sa.text(f"DELETE FROM {wh.qualified('quality', 'consistency_rates')}"))
    assert {day: scorecard_consistency(wh, cat, day) for day in DAYS} == that_night
    wh.dispose()
    for order in (tuple(reversed(DAYS)), (D3, D1, D2, D3, D1)):
        wh = warehouses.new()
        for day in order:
            night(wh, day)
        assert {day: scorecard_consistency(wh, cat, day) for day in DAYS} == that_night, order
        wh.dispose()
