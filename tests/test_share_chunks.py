"""Share outputs in pages: built, written and scanned a few rows at a time, every output gives what
one piece gives — tables, build counts, files and leak findings — on SQLite and PostgreSQL."""

from __future__ import annotations

import polars as pl
import sqlalchemy as sa

from assets.share import _Diff, _table, build_share_output, leak_findings
from desensitize.leaks import LeakKind, Needles, scan_table
from desensitize.masking import with_row_hash
from desensitize.policy import ROW_HASH_COLUMN, share_policies
from tests import citykit
from tests.citykit import PEOPLE
from tests.test_order import Warehouses, warehouses  # noqa: F401  (fixture)
from tests.test_pipeline import run_day
from tests.test_share import CROWD, DAY1, DAY2, HEADER, KEY, city, crowd_rows, share_state  # noqa: F401  (fixture)


def night(wh, cat, landing, open_root, day, chunk_rows: int) -> list[tuple]:
    """Every share output of ``day`` built, and built again (a rerun): what each build did."""
    out = []
    for _ in range(2):
        for p in share_policies(cat):
            b = build_share_output(wh, cat, p, day, key=KEY, open_root=open_root, chunk_rows=chunk_rows)
            m = b.masked
            out.append((p.name, b.action, b.inserted, b.deleted, m.rows_in, m.rows_selected, m.rows_out,
                        m.fpe_dropped, None if m.kanon is None else (m.kanon.generalised, m.kanon.suppressed),
                        b.frame.head(2).rows()))  # a page of 2 holds 2
    return out


def test_share_outputs_built_in_pages_are_those_built_in_one_piece(warehouses: Warehouses, city,  # noqa: F811
                                                                   tmp_path) -> None:
    """Day 2 renames a resident (a restricted row replaced) and adds one to the open data's largest
    group (a row whose content hash occurs once more: one more copy, the others stay)."""
    cat, landing, _ = city
    day1 = crowd_rows()
    day2 = crowd_rows(rename={PEOPLE[2][0]: "钱强"}) + [[citykit.id_number("370202", "19800501", 199), "新居民", "M",
                                                       "19800501"]]
    results = []
    for chunk_rows in (1_000_000, 2):
        wh = warehouses.new()
        open_root = tmp_path / f"open_{chunk_rows}"
        builds = []
        for day, rows in ((DAY1, day1), (DAY2, day2)):
            citykit.write_csv(landing / "hz" / f"{day:%Y%m%d}" / "renkou.csv", HEADER, rows)
            run_day(wh, cat, landing, day)
            builds += night(wh, cat, landing, open_root, day, chunk_rows)
        files = {p.relative_to(open_root): p.read_bytes() for p in open_root.rglob("*") if p.is_file()}
        results.append((share_state(wh), builds, files))
        wh.dispose()
    one, paged = results
    assert paged[0] == one[0] and paged[2] == one[2]
    # build.frame holds the output's first rows (the preview's) either way
    assert [b[:9] for b in paged[1]] == [b[:9] for b in one[1]]
    assert [b[9] for b in paged[1]] == [b[9] for b in one[1]]
    n = len(share_policies(cat))
    changed = {b[0]: b[1:4] for b in one[1][2 * n:3 * n]}  # day 2's first builds (then its rerun)
    assert changed["people_restricted"] == ("written", 2, 1)  # the renamed resident's row replaced, one new
    # the group's content hash occurs once more: one copy written, the group's other copies left alone
    assert changed["people_open"] == ("written", 1, 0)


def test_a_leak_scan_in_pages_finds_what_one_scan_finds(warehouse, city) -> None:  # noqa: F811
    """Raw names and ID numbers planted in a published table: pages of one row or the whole table,
    the same findings (one per column and kind, counts added)."""
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    restricted = next(p for p in share_policies(cat) if p.name == "people_restricted")
    build = build_share_output(warehouse, cat, restricted, DAY1, key=KEY, open_root=open_root)
    table = warehouse.qualified("share", "people_restricted")
    with warehouse.begin() as conn:
        for pid, name, _, _ in PEOPLE:
            conn.execute(sa.text(f"UPDATE {table} SET full_name = :n, phone = :p WHERE full_name = :m"),
                         {"n": name, "p": f"身份证 {pid}", "m": name[0] + "***"})
    needles = Needles.from_warehouse(warehouse, cat)
    whole = scan_table(warehouse, "share", "people_restricted", needles, restricted.public_columns())
    paged = scan_table(warehouse, "share", "people_restricted", needles, restricted.public_columns(), page_rows=1)
    assert {(f.column, f.kind) for f in whole} >= {("full_name", LeakKind.name), ("phone", LeakKind.id_number)}
    assert [(f.location, f.column, f.kind, f.count) for f in paged] == [
        (f.location, f.column, f.kind, f.count) for f in whole]
    assert leak_findings(warehouse, cat, build, {}, needles, chunk_rows=1)[0] == paged
    assert len(CROWD) + len(PEOPLE) > 3  # several pages of one row each


def test_a_value_set_answers_as_is_in_does_even_when_hashes_collide() -> None:
    """The needles' lookup (hashed once, binary search): the same answer as ``is_in`` for every value,
    nulls included — and when several members share a hash (forced here), still by their text."""
    import numpy as np
    import polars as pl

    from desensitize import lookup
    from desensitize.lookup import ValueSet, member

    members = pl.Series("v", [f"1{i:010d}" for i in range(0, 3000, 3)] + [None, "李丽", "李丽"])
    values = pl.Series("x", [f"1{i:010d}" for i in range(0, 200)] + [None, "李丽", "李丽华", ""])
    expected = values.is_in(members.implode()).fill_null(False).to_list()
    assert member(values, ValueSet(members)).to_list() == expected == member(values, members).to_list()
    assert sum(expected) == 68
    for probe, inside in (("李丽", True), ("王五", False)):  # every member under the probe's hash
        collided = ValueSet(members)
        collided._hashes = np.full_like(collided._hashes, pl.Series([probe]).hash(seed=lookup._SEED)[0])
        assert collided.contains(pl.Series([probe, None])).to_list() == [inside, False]
    assert ValueSet(pl.Series([], dtype=pl.String)).contains(values).sum() == 0


def test_a_diff_writes_only_the_copies_whose_count_changed(warehouse) -> None:
    """Rows with one content hash are identical copies (an open output's k-anonymised groups): a hash
    whose count falls loses that many copies, one whose count grows gains that many, a new hash is
    inserted, a vanished one deleted — the table then holds the new content, and (inserted, deleted)
    count the rows that differ, not the groups written again."""
    table = _table(warehouse, "share", "diff_probe", {"v": pl.String(), ROW_HASH_COLUMN: pl.String()},
                   indexes=[[ROW_HASH_COLUMN]])

    def frame(counts: dict[str, int]) -> pl.DataFrame:
        return with_row_hash(pl.DataFrame({"v": [v for v, n in counts.items() for _ in range(n)]}))

    with warehouse.begin() as conn:
        warehouse.create(conn, table)
        warehouse.insert(conn, table, frame({"a": 3, "b": 2, "c": 1, "e": 2}))
    new = {"a": 1, "b": 4, "d": 2, "e": 2}
    with warehouse.begin() as conn:
        diff = _Diff(warehouse, conn, table)
        page = frame(new)
        for i in range(0, page.height, 3):  # in pages, as a build adds them
            diff.add(page.slice(i, 3))
        counts = diff.finish()
    assert counts == (2 + 2, 2 + 1)  # b +2, d +2; a −2, c −1; e untouched
    with warehouse.engine.connect() as conn:
        stored = conn.execute(sa.text(f"SELECT v, COUNT(*) FROM {warehouse._name(table)} GROUP BY v")).all()
    assert dict(stored) == new
