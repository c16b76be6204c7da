"""Share outputs built incrementally: the night after a build masks only the entities whose version
changed, and the table it leaves is the one a full build of that date gives — after any sequence of
nights (new, renamed and re-delivered persons, a backfill, a rerun), on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa

from assets.share import build_share_output, read_snapshot
from catalog.loader import Catalogue, load_catalogue
from desensitize.masking import mask_snapshot, with_row_hash
from desensitize.policy import ROW_HASH_COLUMN, OutputPolicy, share_policies
from desensitize.pseudonym import PseudonymKey
from tests import citykit
from tests.test_incremental import D1, D2, D3, HZ, deliver, person, run
from tests.test_order import Warehouses, warehouses  # noqa: F401  (the fixture)
from warehouse.store import Warehouse

KEY = PseudonymKey(b"incremental-test-key-0123456789")


def _catalogue(tmp_path: Path, *, dob_rule: str | None = None) -> Catalogue:
    """citykit's 山海市 with its 户政 resource also opened (a people_open output beside people_restricted);
    ``dob_rule``: the 出生日期's rule in the restricted output."""
    folder = citykit.write_catalogue(tmp_path)
    renkou = folder / "resources" / "huzheng_renkou.yaml"
    renkou.write_text(renkou.read_text(encoding="utf-8").replace("open: 不予开放", "open: 有条件开放"), encoding="utf-8")
    if dob_rule is not None:
        main = folder / "catalogue.yaml"
        text = main.read_text(encoding="utf-8")
        old = "derived_from_id: birth_date}"
        assert text.count(old) == 1
        main.write_text(text.replace(old, f'derived_from_id: birth_date, masking: {{restricted: "{dob_rule}"}}}}'),
                        encoding="utf-8")
    return load_catalogue(folder)


@pytest.fixture
def hz(tmp_path: Path) -> tuple[Catalogue, Path]:
    landing = tmp_path / "landing"
    deliver(landing)
    return _catalogue(tmp_path / "cat"), landing


def outputs(cat: Catalogue) -> list[OutputPolicy]:
    return [p for p in share_policies(cat) if p.library.code == "people"]


def expected(wh: Warehouse, policy: OutputPolicy, day: dt.date) -> list[tuple]:
    """The output of ``day`` masked in one piece from the versions valid that day: what a full build stores."""
    with wh.engine.connect() as conn:
        snapshot = read_snapshot(wh, conn, policy, day)
    frame = with_row_hash(mask_snapshot(policy, snapshot, as_of=day, key=KEY).frame)
    return sorted(frame.rows(), key=repr)


def stored(wh: Warehouse, policy: OutputPolicy) -> list[tuple]:
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT * FROM {wh.qualified('share', policy.name)}",
                        {**policy.schema(), ROW_HASH_COLUMN: pl.String()})
    return sorted(frame.rows(), key=repr)


def night(wh: Warehouse, cat: Catalogue, day: dt.date) -> dict[str, tuple[str, str, int, int]]:
    """Build every people output for ``day``; each but the open one must then hold exactly the full
    build's rows, and count its changes as the full build counts them. {output: (mode, action, inserted, deleted)}."""
    out = {}
    for p in outputs(cat):
        before = stored(wh, p) if p.kind.value != "open" and wh.exists("share", p.name) else []
        b = build_share_output(wh, cat, p, day, key=KEY)
        if p.kind.value != "open":
            rows = stored(wh, p)
            assert rows == expected(wh, p, day), (p.name, day, b.mode)
            assert b.masked.rows_out == len(rows) and b.inserted - b.deleted == len(rows) - len(before)
            assert b.masked.rows_in == b.masked.rows_out == len(rows)
        out[p.name] = (b.mode.value, b.action.value, b.inserted, b.deleted)
    return out


def test_nights_built_incrementally_hold_what_a_full_build_holds(warehouse: Warehouse, hz) -> None:
    cat, landing = hz
    run(warehouse, cat, landing, D1)
    assert night(warehouse, cat, D1) == {"people_restricted": ("full", "written", 60, 0),
                                         "people_open": ("full", "written", 60, 0)}
    # D2: one person renamed, one new (the others carried): two rows replaced or added, one removed
    run(warehouse, cat, landing, D2)
    d2 = night(warehouse, cat, D2)
    assert d2["people_restricted"] == ("incremental", "written", 2, 1)
    assert d2["people_open"][0] == "full"  # k-anonymised as a whole: never incremental
    # a rerun of the same date masks nothing and writes nothing
    assert night(warehouse, cat, D2)["people_restricted"] == ("incremental", "unchanged", 0, 0)
    run(warehouse, cat, landing, D3)
    d3 = night(warehouse, cat, D3)
    assert d3["people_restricted"][:2] == ("incremental", "written")
    # a re-delivery of D2 (one more person) merged after the table shows D3: the versions valid on D3
    # changed by a merge of a date the table's build had seen — a full build, which puts it right
    citykit.write_csv(landing / "hz" / f"{D2:%Y%m%d}" / "c.csv", HZ, [person(700)])
    run(warehouse, cat, landing, D2)
    again = night(warehouse, cat, D3)
    assert again["people_restricted"] == ("full", "written", 1, 0)
    assert night(warehouse, cat, D3)["people_restricted"] == ("incremental", "unchanged", 0, 0)
    with warehouse.engine.connect() as conn:
        log = conn.execute(sa.text(f"SELECT as_of, mode FROM {warehouse.qualified('audit', 'share_builds')} "
                                   "WHERE output = 'people_restricted' ORDER BY built_at")).all()
    assert [m for _, m in log] == ["full", "incremental", "incremental", "incremental", "full", "incremental"]


def test_a_backfill_of_a_date_the_table_has_seen_forces_a_full_build(warehouses: Warehouses, hz) -> None:  # noqa: F811
    """D1, then D3 (incremental over (D1, D3]), then D2 merged late: the history from D2 on is folded
    again, so the versions valid on D3 may differ although no version boundary moved into (D3, D3]."""
    cat, landing = hz
    wh = warehouses.new()
    run(wh, cat, landing, D1)
    night(wh, cat, D1)
    run(wh, cat, landing, D3)
    assert night(wh, cat, D3)["people_restricted"][0] == "incremental"
    run(wh, cat, landing, D2)  # the backfill: D2's new person exists on D3 too
    assert night(wh, cat, D3)["people_restricted"][:2] == ("full", "written")
    assert night(wh, cat, D3)["people_restricted"] == ("incremental", "unchanged", 0, 0)
    wh.dispose()


def test_a_rule_relative_to_the_snapshot_date_is_always_built_in_full(warehouse: Warehouse, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    deliver(landing)
    cat = _catalogue(tmp_path / "cat", dob_rule="age_band(5)")
    restricted = next(p for p in outputs(cat) if p.kind.value == "restricted")
    assert restricted.dated and restricted.column("dob").rule.spec == "age_band(5)"
    run(warehouse, cat, landing, D1)
    night(warehouse, cat, D1)
    run(warehouse, cat, landing, D2)
    assert night(warehouse, cat, D2)["people_restricted"][0] == "full"
