"""一数一源 conflicts that persist as tickets, and referential checks, on SQLite and PostgreSQL."""

from __future__ import annotations

import polars as pl
import pytest

from quality.conflicts import check_library_consistency, read_conflicts
from quality.references import check_references
from tests import citykit
from tests.citykit import ORGS, PEOPLE
from tests.test_pipeline import DAY1, DAY2, run_day
from warehouse.store import Warehouse


def conflicts(wh: Warehouse) -> pl.DataFrame:
    with wh.engine.connect() as conn:
        return read_conflicts(wh, conn, "people").sort("entity_key")


@pytest.mark.parametrize("chunk_keys", [200_000, 1])
def test_a_copy_that_differs_from_the_authority_is_a_conflict_until_fixed(warehouse: Warehouse, city,
                                                                          chunk_keys: int, monkeypatch) -> None:
    """(With ``chunk_keys`` 1 the copies are compared one entity at a time, the base library read for
    every slice in one query a row at a time: the same rates, ticket and closing.)"""
    from warehouse import base as base_module

    if chunk_keys == 1:
        monkeypatch.setattr(base_module, "AS_OF_PAGE_ROWS", 1)
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    citykit.write_db(landing, [(PEOPLE[2][0], "赵钢", "13700000003", f"{DAY1} 09:00:00")])  # 户政 says 赵强
    run_day(warehouse, cat, landing, DAY1)
    run = check_library_consistency(warehouse, cat, "people", DAY1, chunk_keys)
    rate = run.rates.filter(pl.col("element") == "full_name").row(0, named=True)
    assert (rate["department"], rate["compared"], rate["matched"]) == ("shebao", 3, 2)
    c = conflicts(warehouse).row(0, named=True)
    assert (c["element"], c["department"], c["authority"], c["value"], c["authority_value"]) == \
        ("full_name", "shebao", "huzheng", "赵钢", "赵强")
    assert (c["status"], c["times_seen"], c["first_seen_batch"]) == ("open", 1, "shebao_canbao.20261009.1")
    assert run.changes.opened == 1

    # the same partition again: the same ticket, not a new one, not seen twice
    again = check_library_consistency(warehouse, cat, "people", DAY1, chunk_keys)
    assert again.changes.opened == 0 and conflicts(warehouse).height == 1
    assert conflicts(warehouse).get_column("times_seen").to_list() == [1]

    # day 2: the department re-delivers the entity with the authoritative name → closed by that batch
    citykit.write_db(landing, [(PEOPLE[2][0], "赵强", "13700000003", f"{DAY2} 09:00:00")])
    run_day(warehouse, cat, landing, DAY2)
    fixed = check_library_consistency(warehouse, cat, "people", DAY2, chunk_keys)
    c = conflicts(warehouse).row(0, named=True)
    assert fixed.changes.closed == 1
    assert (c["status"], c["closed_batch"], c["closed_date"]) == ("closed", "shebao_canbao.20261010.1", DAY2)


def test_a_conflict_seen_again_on_a_later_day_counts_up(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    citykit.write_db(landing, [(PEOPLE[2][0], "赵钢", "13700000003", f"{DAY1} 09:00:00")])
    run_day(warehouse, cat, landing, DAY1)
    check_library_consistency(warehouse, cat, "people", DAY1)
    citykit.write_db(landing, [(PEOPLE[2][0], "赵钢", "13700000003", f"{DAY2} 09:00:00")])
    run_day(warehouse, cat, landing, DAY2)
    run = check_library_consistency(warehouse, cat, "people", DAY2)
    c = conflicts(warehouse).row(0, named=True)
    assert (c["times_seen"], c["first_seen_date"], c["last_seen_date"], c["status"]) == (2, DAY1, DAY2, "open")
    assert run.changes.seen_again == 1 and run.changes.opened == 0


def test_licence_holders_must_exist_with_the_same_name(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    stranger = citykit.id_number("370202", "19750505", 77)
    citykit.write_json(landing / "zz" / f"{DAY1:%Y%m%d}" / "zheng.json", [
        {"no": "A-0001", "owner": PEOPLE[0][0], "owner_name": PEOPLE[0][1]},
        {"no": "A-0002", "owner": PEOPLE[1][0], "owner_name": "李莉"},  # name differs from 人口库
        {"no": "A-0003", "owner": stranger, "owner_name": "陌生人"},  # not in 人口库
    ])
    citykit.write_xlsx(landing / "gs" / f"{DAY1:%Y%m%d}" / "xuke.xlsx", ["许可证号", "企业代码", "企业名称"],
                       [["B-01", ORGS[0][0], ORGS[0][1]], ["B-02", citykit.uscc("91370202MA0000009"), "无名公司"]])
    run_day(warehouse, cat, landing, DAY1)
    run = check_references(warehouse, cat, "permits", DAY1)
    got = {(r["kind"], r["target"], r["value"], r["name"], r["expected_name"]) for r in run.failures.iter_rows(named=True)}
    assert got == {
        ("name_mismatch", "people", PEOPLE[1][0], "李莉", "李丽"),
        ("missing", "people", stranger, "陌生人", None),
        ("missing", "org", citykit.uscc("91370202MA0000009"), "无名公司", None),
    }
    counts = {(r["target"], r["checked"], r["missing"], r["name_mismatch"]) for r in run.counts.iter_rows(named=True)}
    assert counts == {("", 5, 0, 0), ("people", 3, 1, 1), ("org", 2, 1, 0)}  # "": codes of no known type
    a3 = run.failures.filter(pl.col("value") == stranger).row(0, named=True)
    assert (a3["source_batch"], a3["source_row"]) == ("zhengzhao_zheng.20261009.1", 3)


def test_a_representative_from_elsewhere_may_be_absent_but_is_name_checked_when_present() -> None:
    """法定代表人证件号 must exist in 人口库 only when local; a name is compared wherever the ID is from."""
    from catalog.loader import DEMO_CATALOGUE, load_catalogue
    from quality.consistency import referential
    from warehouse.base import base_schema

    cat = load_catalogue(DEMO_CATALOGUE)
    local, elsewhere = cat.city.city.region_codes[0], "440305"
    ids = [citykit.id_number(local, "19800101", 11), citykit.id_number(local, "19810101", 13),
           citykit.id_number(elsewhere, "19820101", 15), citykit.id_number(elsewhere, "19830101", 17)]
    people = pl.DataFrame({"id_number": [ids[0], ids[2]], "name": ["张三", "李四"]})
    lib = cat.library("legal_entity")
    rows = [  # (uscc, rep id, rep name)
        ("A", ids[0], "张三"),  # local, present, same name
        ("B", ids[1], "王五"),  # local, absent: missing
        ("C", ids[2], "赵六"),  # from elsewhere, present, another name: name mismatch
        ("D", ids[3], "钱七"),  # from elsewhere, absent: may be
    ]
    schema = base_schema(lib)
    current = pl.DataFrame({"uscc": [r[0] for r in rows], "legal_rep_id": [r[1] for r in rows],
                            "legal_rep": [r[2] for r in rows]}).with_columns(
        [pl.lit(None, t).alias(c) for c, t in schema.items() if c not in ("uscc", "legal_rep_id", "legal_rep")])
    failures, counts = referential(cat, lib, current, {"person": people, "legal_entity": current})
    assert sorted(zip(failures["kind"], failures["entity_key"], strict=True)) == [("missing", "B"), ("name_mismatch", "C")]
    assert counts.select("checked", "missing", "name_mismatch").row(0) == (3, 1, 1)


def test_a_wrong_name_redelivered_later_is_blamed_on_the_delivery_that_carried_it(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    assert check_references(warehouse, cat, "permits", DAY1).failures.height == 0
    # day 2: the same licence again, the holder unchanged, the holder's name now wrong (row 2 of the file)
    citykit.write_json(landing / "zz" / f"{DAY2:%Y%m%d}" / "zheng.json", [
        {"no": "A-0009", "owner": PEOPLE[2][0], "owner_name": PEOPLE[2][1]},
        {"no": "A-0002", "owner": PEOPLE[1][0], "owner_name": "李莉"},
    ])
    run_day(warehouse, cat, landing, DAY2)
    run = check_references(warehouse, cat, "permits", DAY2)
    (bad,) = run.failures.filter(pl.col("kind") == "name_mismatch").iter_rows(named=True)
    assert (bad["name"], bad["expected_name"]) == ("李莉", "李丽")
    # the value is the name: its delivery is day 2's row 2, not day 1's row that delivered the holder code
    assert (bad["source_batch"], bad["source_row"]) == ("zhengzhao_zheng.20261010.1", 2)


def test_a_representative_name_mismatch_carries_the_lineage_of_the_name() -> None:
    """法定代表人: the name came from another delivery than the ID; the finding points at the name's."""
    from catalog.loader import DEMO_CATALOGUE, load_catalogue
    from quality.consistency import referential
    from warehouse.base import base_schema

    cat = load_catalogue(DEMO_CATALOGUE)
    rep = citykit.id_number(cat.city.city.region_codes[0], "19800101", 11)
    lib = cat.library("legal_entity")
    schema = base_schema(lib)
    current = pl.DataFrame({"uscc": ["A"], "legal_rep_id": [rep], "legal_rep": ["王五"],
                            "legal_rep_id__batch": ["scjg_qydj.20261009.1"], "legal_rep_id__row": [7],
                            "legal_rep__batch": ["scjg_qydj.20261010.1"], "legal_rep__row": [3]}).with_columns(
        [pl.lit(None, t).alias(c) for c, t in schema.items()
         if c not in ("uscc", "legal_rep_id", "legal_rep") and not c.startswith("legal_rep")])
    people = pl.DataFrame({"id_number": [rep], "name": ["张三"]})
    failures, _ = referential(cat, lib, current, {"person": people, "legal_entity": current})
    (bad,) = failures.iter_rows(named=True)
    assert bad["kind"] == "name_mismatch"
    assert (bad["source_batch"], bad["source_row"]) == ("scjg_qydj.20261010.1", 3)


def test_a_reference_check_reads_only_what_it_uses_and_finds_the_same(warehouse: Warehouse, city) -> None:
    """The check reads the referencing columns with their lineage and, of each target, the key and name of
    the entities referred to (in the database): the same failures and counts as from whole libraries — also
    when a target holds entities but none of those referred to (they are missing, not unchecked)."""
    from quality.consistency import referential
    from quality.references import read_references_on, reference_columns
    from warehouse.base import read_on

    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    stranger = citykit.id_number("370202", "19750505", 77)
    citykit.write_json(landing / "zz" / f"{DAY1:%Y%m%d}" / "zheng.json", [
        {"no": "A-0001", "owner": PEOPLE[0][0], "owner_name": PEOPLE[0][1]},
        {"no": "A-0002", "owner": PEOPLE[1][0], "owner_name": "李莉"},
        {"no": "A-0003", "owner": stranger, "owner_name": "陌生人"},
    ])
    citykit.write_xlsx(landing / "gs" / f"{DAY1:%Y%m%d}" / "xuke.xlsx", ["许可证号", "企业代码", "企业名称"],
                       [["B-02", citykit.uscc("91370202MA0000009"), "无名公司"]])  # no holder the org library has
    run_day(warehouse, cat, landing, DAY1)
    lib = cat.library("permits")
    with warehouse.engine.connect() as conn:
        whole = {code: read_on(warehouse, conn, cat.library(code), DAY1) for code in ("permits", "people", "org")}
        frames, empty = read_references_on(warehouse, conn, cat, lib, DAY1)
    columns = reference_columns(cat, lib)
    assert columns == {"permits": {"kind", "number", "holder", "holder__batch", "holder__row", "holder_name",
                                   "holder_name__batch", "holder_name__row"},
                       "people": {"pid", "full_name"}, "org": {"code", "title"}}

    def in_table_order(code: str) -> list[str]:
        return [c for c in whole[code].columns if c in columns[code]]

    assert frames["permits"].equals(whole["permits"].select(in_table_order("permits")))
    holders = whole["permits"].get_column("holder")
    for code, key in (("people", "pid"), ("org", "code")):
        assert frames[code].equals(whole[code].filter(pl.col(key).is_in(holders)).select(in_table_order(code)))
    assert frames["people"].height == 2 < whole["people"].height and frames["org"].height == 0 < whole["org"].height
    assert empty == set()

    got, counts = referential(cat, lib, frames["permits"], frames, empty=empty)
    want, want_counts = referential(cat, lib, whole["permits"], whole)
    assert got.sort("entity_key", "target").equals(want.sort("entity_key", "target"))
    assert counts.equals(want_counts)
    assert ("missing", "org", citykit.uscc("91370202MA0000009")) in \
        set(zip(got["kind"], got["target"], got["value"], strict=True))
    run = check_references(warehouse, cat, "permits", DAY1)
    assert run.failures.sort("entity_key", "target").equals(want.sort("entity_key", "target"))
    assert run.counts.equals(want_counts)
