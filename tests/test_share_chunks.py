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
    """The needles' lookup (two hashes a value, kept sorted, binary search): the same answer as ``is_in``
    for every value, nulls included — and when several members share the first hash (forced here), still
    by the second; a set keeps no member's text."""
    import numpy as np
    import polars as pl

    from desensitize.lookup import ValueSet, hash_pair, member

    members = pl.Series("v", [f"1{i:010d}" for i in range(0, 3000, 3)] + [None, "李丽", "李丽"])
    values = pl.Series("x", [f"1{i:010d}" for i in range(0, 200)] + [None, "李丽", "李丽华", ""])
    expected = values.is_in(members.implode()).fill_null(False).to_list()
    assert member(values, ValueSet.of(members)).to_list() == expected == member(values, members).to_list()
    assert sum(expected) == 68 and len(ValueSet.of(members)) == 1001
    assert not any(isinstance(v, pl.Series | str) for v in vars(ValueSet.of(members)).values())
    for probe, inside in (("李丽", True), ("王五", False)):  # every member under the probe's first hash
        a, b = hash_pair(members.drop_nulls())
        collided = ValueSet(np.full_like(a, hash_pair(pl.Series([probe]))[0][0]), b)
        assert len(collided) == 1001
        assert collided.contains(pl.Series([probe, None])).to_list() == [inside, False]
    assert ValueSet.of(pl.Series([], dtype=pl.String)).contains(values).sum() == 0
    halves = ValueSet.union([hash_pair(members.drop_nulls().head(500)), hash_pair(members.drop_nulls().tail(600))])
    assert halves == ValueSet.of(members)


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


def test_an_open_release_built_in_pages_is_the_release_masked_and_sorted_at_once(
        warehouses: Warehouses, city, tmp_path) -> None:  # noqa: F811
    """An open output is k-anonymised over pages (group sizes first, then the pages masked, then the few
    rows to generalise further) and its files written from the table sorted in the database: the same
    report and the same bytes as the whole snapshot k-anonymised and sorted in memory (text in byte
    order on both databases, nulls last), for a day with generalised and suppressed rows."""
    from assets.share import read_snapshot
    from catalog.models import OutputKind
    from desensitize.export import write_open_export
    from desensitize.masking import mask_snapshot

    cat, landing, _ = city
    # six residents without a birth date: a group published with a null, which sorts last
    rows = crowd_rows() + [[citykit.id_number("370202", f"1975060{i}", 170 + i), f"无生日{i}", "M", ""]
                           for i in range(1, 7)]
    opened = [p for p in share_policies(cat) if p.kind == OutputKind.open]
    assert opened
    for wh in (warehouses.new(), warehouses.new()):
        citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", HEADER, rows)
        run_day(wh, cat, landing, DAY1)
        for p in opened:
            paged = build_share_output(wh, cat, p, DAY1, key=KEY, open_root=tmp_path / "paged", chunk_rows=2)
            with wh.engine.connect() as conn:
                whole = mask_snapshot(p, read_snapshot(wh, conn, p, DAY1), as_of=DAY1, key=KEY)
            files = write_open_export(p, cat, whole.frame, tmp_path / "whole", DAY1)
            assert [f.read_bytes() for f in paged.files.all()] == [f.read_bytes() for f in files.all()]
            assert paged.masked.kanon == whole.kanon and paged.masked.rows_out == whole.rows_out
            assert paged.frame.rows() == whole.frame.head(2).rows()  # the preview: the release's first rows
            assert whole.kanon.generalised or whole.kanon.suppressed or p.quasi_identifiers == []
            if p.quasi_identifiers:
                men = whole.frame.filter(pl.col("sex") == whole.frame.item(0, "sex"))
                assert whole.frame.get_column("dob").null_count() == 6 and men.item(-1, "dob") is None  # nulls last
        wh.dispose()


def test_an_open_release_for_an_older_date_is_exported_from_its_own_rows(warehouse, city, tmp_path) -> None:  # noqa: F811
    """Backfilling an earlier date leaves the table at the later one (``older``); that date's open files
    are written from its own rows, staged for the export, byte for byte as on the night itself."""
    cat, landing, _ = city
    p = next(p for p in share_policies(cat) if p.name == "people_open")
    root = tmp_path / "open"
    run_day(warehouse, cat, landing, DAY1)
    first = build_share_output(warehouse, cat, p, DAY1, key=KEY, open_root=root, chunk_rows=2)
    on_the_night = [f.read_bytes() for f in first.files.all()]
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", HEADER, crowd_rows() + [
        [citykit.id_number("370202", "19800501", 240 + i), f"新居民{i}", "M", "19800501"] for i in range(3)])
    run_day(warehouse, cat, landing, DAY2)
    assert build_share_output(warehouse, cat, p, DAY2, key=KEY, open_root=root, chunk_rows=2).masked.rows_out == \
        first.masked.rows_out + 3
    for f in first.files.all():
        f.unlink()
    back = build_share_output(warehouse, cat, p, DAY1, key=KEY, open_root=root, chunk_rows=2)
    assert back.action == "older" and back.table_as_of == DAY2
    assert [f.read_bytes() for f in back.files.all()] == on_the_night
    with warehouse.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT COUNT(*) FROM {warehouse.qualified('share', 'people_open')}")).scalar()
    assert rows == first.masked.rows_out + 3
