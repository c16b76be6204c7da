"""ODS → std → base on a second city, on SQLite and PostgreSQL: authority merge, history,
reconciliation, idempotent reruns and crash safety."""

from __future__ import annotations

import datetime as dt
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import polars as pl
import pytest
import sqlalchemy as sa

from catalog.loader import Catalogue
from guiji.base import merge_library
from guiji.ods import ingest
from guiji.std import collect, standardize_batch
from tests import citykit
from tests.citykit import ORGS, PEOPLE
from warehouse.base import read_current
from warehouse.ods import BATCH_SCHEMA
from warehouse.store import Warehouse

DAY1 = dt.date(2026, 10, 9)
DAY2 = dt.date(2026, 10, 10)


def run_day(wh: Warehouse, cat: Catalogue, landing: Path, day: dt.date) -> dict:
    out = {}
    for r in cat.resources:
        ingest(wh, cat, r, day, landing, os.environ)
        out[r.id] = standardize_batch(wh, cat, r, day)
    for lib in cat.libraries:
        out[lib.code] = merge_library(wh, cat, lib.code, day)
    return out


def dump(wh: Warehouse) -> dict[str, list[tuple]]:
    """Every row of every warehouse table, sorted: the state a rerun must not change."""
    insp = sa.inspect(wh.engine)
    schemas = ["ods", "std", "base", "quality", "audit"] if wh.is_postgres else [None]
    out = {}
    with wh.engine.connect() as conn:
        for schema in schemas:
            if wh.is_postgres and schema not in insp.get_schema_names():
                continue
            for t in insp.get_table_names(schema=schema):
                if t.endswith("rule_results"):
                    continue  # one row per rule and run: run history grows by design
                name = f"{schema}.{t}" if schema else t
                q = f'"{schema}"."{t}"' if schema else f'"{t}"'
                rows = conn.execute(sa.text(f"SELECT * FROM {q}")).fetchall()
                out[name] = sorted(tuple(str(v) for v in r) for r in rows)
    return out


def current(wh: Warehouse, cat: Catalogue, lib: str) -> pl.DataFrame:
    with wh.engine.connect() as conn:
        return read_current(wh, conn, cat.library(lib))


def test_first_day_builds_every_library_from_its_authorities(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    out = run_day(warehouse, cat, landing, DAY1)

    people = current(warehouse, cat, "people")
    assert people.height == 3
    p0 = people.filter(pl.col("pid") == PEOPLE[0][0]).row(0, named=True)
    assert (p0["full_name"], p0["sex"], p0["dob"]) == ("王小明", "1", dt.date(1980, 1, 1))
    assert p0["phone"] == "13800000001"  # authority: shebao, through the 前置库
    assert p0["full_name__batch"] == "huzheng_renkou.20261009.1" and p0["full_name__row"] == 1
    assert p0["phone__batch"] == "shebao_canbao.20261009.1"
    assert people.filter(pl.col("pid") == PEOPLE[2][0]).get_column("phone").to_list() == [None]

    org = current(warehouse, cat, "org").sort("code")
    assert org.select("code", "title", "capital").rows() == sorted([(c, t, float(k)) for c, t, k in ORGS])

    permits = current(warehouse, cat, "permits").sort("kind", "number")
    assert permits.select("kind", "number", "holder_name").rows() == [
        ("A", "A-0001", "王小明"), ("A", "A-0002", "李丽"), ("B", "B-01", ORGS[0][1])]
    assert permits.filter(pl.col("kind") == "B").get_column("holder__batch").to_list() == ["gongshang_xuke.20261009.1"]
    for r in cat.resources:
        s = out[r.id]
        assert s.delivered == s.accepted + s.quarantined and s.quarantined == 0


def test_a_copy_from_a_non_authoritative_department_is_not_merged(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    # 社保 carries a different name for person 0: 姓名's authority is 户政, so the base keeps 户政's.
    citykit.write_db(landing, [(PEOPLE[0][0], "王晓明", "13800000001", f"{DAY1} 09:00:00")])
    run_day(warehouse, cat, landing, DAY1)
    people = current(warehouse, cat, "people")
    assert people.filter(pl.col("pid") == PEOPLE[0][0]).get_column("full_name").to_list() == ["王小明"]


def test_a_changed_value_opens_a_new_version_and_keeps_the_old_one(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    rows = [[p, n, s, b] for p, n, s, b in PEOPLE]
    rows[2][1] = "赵刚"  # renamed on day 2
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"], rows)
    out = run_day(warehouse, cat, landing, DAY2)
    assert out["people"].changed_entities == 1 and out["people"].new_entities == 0

    with warehouse.engine.connect() as conn:
        hist = warehouse.read(
            conn,
            # lineage stores the batch number; ods.batches names the batch
            f"SELECT p.full_name, p.valid_from, p.valid_to, b.batch_id FROM {warehouse.qualified('base', 'people')} p "
            f"JOIN {warehouse.qualified('ods', 'batches')} b ON b.batch_no = p.full_name__batch "
            "WHERE p.pid = :p ORDER BY p.valid_from",
            {"full_name": pl.String(), "valid_from": pl.Date(), "valid_to": pl.Date(), "batch_id": pl.String()},
            {"p": PEOPLE[2][0]},
        )
    assert hist.rows() == [
        ("赵强", DAY1, DAY2, "huzheng_renkou.20261009.1"),
        ("赵刚", DAY2, None, "huzheng_renkou.20261010.1"),
    ]
    # the phone value delivered on day 1 is carried into the new version with its own lineage
    assert out["people"].total_rows == 4 and out["people"].current_rows == 3


def test_batch_lookups_use_brin_on_postgresql_and_base_libraries_only_their_key(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    insp = sa.inspect(warehouse.engine)
    for layer in ("ods", "std"):
        schema, table = warehouse.table_ref(layer, "huzheng_renkou")
        (idx,) = insp.get_indexes(table, schema=schema)
        assert idx["column_names"] == ["_batch_id"]
        if warehouse.is_postgres:
            assert idx["dialect_options"]["postgresql_using"] == "brin"
    schema, table = warehouse.table_ref("base", "people")
    assert insp.get_indexes(table, schema=schema) == []  # the primary key finds current versions
    assert insp.get_pk_constraint(table, schema=schema)["constrained_columns"] == ["pid", "valid_from"]


def test_rerunning_a_partition_changes_nothing(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    before = dump(warehouse)
    out = run_day(warehouse, cat, landing, DAY1)
    assert dump(warehouse) == before
    assert all(out[lib.code].merged_before for lib in cat.libraries)


def _without_receipt_time(tables: dict) -> dict:
    """A dump without the columns of ods.batches two runs write differently: when each batch was
    received and, so, its number (batches are numbered in the order they are stored)."""
    drop = {list(BATCH_SCHEMA).index(c) for c in ("received_at", "batch_no")}
    return {t: rows if not t.endswith("batches") else [tuple(v for i, v in enumerate(r) if i not in drop) for r in rows]
            for t, rows in tables.items()}


def _clear(wh: Warehouse) -> None:
    with wh.begin() as conn:
        if wh.is_postgres:
            for schema in ("ods", "std", "base", "quality", "audit"):
                conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        else:
            for t in sa.inspect(conn).get_table_names():
                conn.execute(sa.text(f'DROP TABLE "{t}"'))


def test_one_pass_collect_writes_what_ingest_then_standardize_write(warehouse: Warehouse, city) -> None:
    """The fused step (ODS written while the same rows are standardised, no read-back) leaves
    every table exactly as the two separate steps do, a NUL byte in a delivered value included
    (PostgreSQL text cannot store it: the channel turns it into ␀ on both databases)."""
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    people = [list(p) for p in PEOPLE]
    people[1][1] = people[1][1] + "\x00"
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"],
                      people)

    run_day(warehouse, cat, landing, DAY1)
    separate = _without_receipt_time(dump(warehouse))
    _clear(warehouse)
    outs = {}
    for r in cat.resources:
        outs[r.id] = collect(warehouse, cat, r, DAY1, landing, variables=os.environ)
    for lib in cat.libraries:
        merge_library(warehouse, cat, lib.code, DAY1)
    assert _without_receipt_time(dump(warehouse)) == separate
    received, std = outs["huzheng_renkou"]
    assert received.status == "new" and std.delivered == received.batch.rows_delivered == len(PEOPLE)
    stored_names = set(received.rows.head(len(PEOPLE)).get_column("XINGMING").to_list())
    assert "李丽␀" in stored_names  # the same on SQLite and PostgreSQL
    # a second pass over the same delivery is not a new batch and changes nothing
    assert collect(warehouse, cat, cat.resource("huzheng_renkou"), DAY1, landing)[0].status == "unchanged"
    assert _without_receipt_time(dump(warehouse)) == separate


def _rule_results(wh: Warehouse) -> list[tuple]:
    with wh.engine.connect() as conn:
        rows = conn.execute(sa.text(
            f"SELECT batch_id, rule_id, evaluated, failed, gx_evaluated, gx_failed FROM {wh.qualified('quality', 'rule_results')}"
        )).fetchall()
    return sorted(tuple(r) for r in rows)


def test_a_batch_standardised_in_slices_is_the_batch_standardised_at_once(warehouse: Warehouse, city,
                                                                          tmp_path: Path, monkeypatch) -> None:
    """A batch larger than ``chunk_rows`` is standardised, validated by GX and written a slice at a
    time: the std rows, quarantine, reconciliation, failing records and both engines' rule counts are
    those of the batch at once — a key delivered twice in two spellings is still found (each key's
    copies share a slice), a row without a key is quarantined, an old 15-digit ID still converted."""
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    people = [[citykit.id_number("370202", f"1980{m:02d}{d:02d}", 10 + d), f"人{m}{d}", "M" if d % 2 else "F",
               f"1980{m:02d}{d:02d}"] for m in (1, 2, 3) for d in (1, 2, 3, 4)]
    people.append([f" {people[5][0]} ", "重复", "F", people[5][3]])  # people[5]'s key again, spelt with spaces
    people.append(["", "无号", "M", "19800101"])
    people.append([people[2][0], "又一个", "M", people[2][3]])
    people.append(["370202800101111", "旧号", "M", "19800101"])  # 15 digits
    people[7][3] = "1980-13-45"  # no such date
    people[8][2] = "F" if people[8][2] == "M" else "M"  # a sex the ID number contradicts (a warning rule)
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"],
                      people)

    def night(chunk_rows: int, docs: Path) -> dict:
        outs = {r.id: collect(warehouse, cat, r, DAY1, landing, variables=os.environ, docs=docs,
                              chunk_rows=chunk_rows)[1] for r in cat.resources}
        return {"tables": _without_receipt_time(dump(warehouse)), "rules": _rule_results(warehouse),
                "outs": {k: (o.delivered, o.accepted, o.quarantined, o.result.converted_id15, o.gx_counts,
                             o.result.rule_counts.to_dicts()) for k, o in outs.items()},
                "pages": {k: Path(o.data_docs).exists() for k, o in outs.items() if o.data_docs}}

    import guiji.spill

    folders = []
    make_folder = guiji.spill.tempfile.mkdtemp

    def watched(**kwargs) -> str:
        folders.append(Path(make_folder(**kwargs)))
        return str(folders[-1])

    monkeypatch.setattr(guiji.spill, "tempfile", SimpleNamespace(mkdtemp=watched))
    whole = night(1000, tmp_path / "whole")
    assert not folders  # a batch within one slice stays in memory
    _clear(warehouse)
    sliced = night(2, tmp_path / "sliced")  # more rows than 5 slices: spilled to local disk in key buckets
    assert sliced == whole
    assert folders and not [f for f in folders if f.exists()]  # every spill deleted once written
    res = cat.resource("huzheng_renkou")
    delivered, accepted, quarantined, id15, gx, counts = sliced["outs"][res.id]
    assert (delivered, accepted, quarantined, id15) == (len(people), len(people) - 6, 6, 1)
    unique = next(c for c in counts if c["kind"] == "unique")
    assert unique["failed"] == 4 and gx[unique["rule_id"]][1] == 4
    assert any(c["failed"] == 1 and c["kind"] == "id_gender" for c in counts)
    assert all(sliced["pages"].values()) and sliced["pages"]


def test_a_failed_ods_write_in_the_one_pass_step_writes_no_std_rows(warehouse: Warehouse, city, monkeypatch) -> None:
    import guiji.std as std_mod

    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    res = cat.resource("huzheng_renkou")

    def broken_store(*args, **kwargs):
        raise sa.exc.OperationalError("COPY", {}, Exception("connection lost"))

    monkeypatch.setattr(std_mod, "store", broken_store)
    with pytest.raises(sa.exc.OperationalError):
        collect(warehouse, cat, res, DAY1, landing)
    assert not warehouse.exists("std", res.id) and not warehouse.exists("ods", res.id)


def test_a_crash_after_the_ods_commit_is_finished_by_the_next_run(warehouse: Warehouse, city, monkeypatch) -> None:
    """The one-pass step commits the ODS batch, then the std rows: a crash in between leaves the
    stored batch (as after a separate ODS step) and the next run standardises it from the warehouse."""
    import guiji.std as std_mod

    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    res = cat.resource("huzheng_renkou")
    expected = {}
    for r in cat.resources:
        ingest(warehouse, cat, r, DAY1, landing, os.environ)
        expected[r.id] = standardize_batch(warehouse, cat, r, DAY1)
    before = dump(warehouse)
    _clear(warehouse)
    real_store = std_mod.store_results

    def crash(*args, **kwargs):
        raise RuntimeError("killed between the ODS and the std commit")

    monkeypatch.setattr(std_mod, "store_results", crash)
    with pytest.raises(RuntimeError):
        collect(warehouse, cat, res, DAY1, landing)
    assert warehouse.exists("ods", res.id) and not warehouse.exists("std", res.id)
    monkeypatch.setattr(std_mod, "store_results", real_store)
    for r in cat.resources:
        received, out = collect(warehouse, cat, r, DAY1, landing, variables=os.environ)
        assert out.accepted == expected[r.id].accepted and out.quarantined == expected[r.id].quarantined
    assert collect(warehouse, cat, res, DAY1, landing)[0].status == "unchanged"
    assert _without_receipt_time(dump(warehouse)) == _without_receipt_time(before)


def test_bad_rows_are_quarantined_with_file_row_field_and_reason(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    good = [[p, n, s, b] for p, n, s, b in PEOPLE]
    bad_checksum = PEOPLE[0][0][:-1] + ("0" if PEOPLE[0][0][-1] != "0" else "1")
    rows = [
        good[0],
        [PEOPLE[1][0], "李丽", "F"],  # row 2: a field missing
        [PEOPLE[2][0], "赵强", "M", "2001-02-30"],  # row 3: no such date
        [bad_checksum, "钱某", "M", "19800101"],  # row 4: check character wrong
        [citykit.id_number("370202", "19700101", 44), "孙某", "M", "19700101"],  # row 5: duplicated below
        [citykit.id_number("370202", "19700101", 44), "孙某某", "M", "19700101"],  # row 6
        ["３７０２０２１９８００１０１０１１" + PEOPLE[0][0][-1], "全角", "M", "19800101"],  # row 7: full-width == row 1
    ]
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"], rows,
                      raw_tail=citykit.id_number("370203", "19990101", 55).encode() + b";\xff\xfe;F;19990101\n")
    out = run_day(warehouse, cat, landing, DAY1)
    s = out["huzheng_renkou"]
    q = s.result.quarantine
    got = {(r["_row_no"], r["reason_code"], r["field"]) for r in q.iter_rows(named=True)}
    assert (2, "unparseable", None) in got
    assert (3, "bad_date", "dob") in got
    assert (4, "pid.id_number", "pid") in got  # blocking rule: the key's check character
    assert (5, "pid.unique", "pid") in got and (6, "pid.unique", "pid") in got
    assert (1, "pid.unique", "pid") in got and (7, "pid.unique", "pid") in got  # full-width normalised
    assert (8, "bad_encoding", "full_name") in got
    assert s.accepted == 0 and s.quarantined == 8 and s.delivered == 8
    with warehouse.engine.connect() as conn:
        rec = conn.execute(sa.text(
            f"SELECT rows_delivered, rows_accepted, rows_quarantined FROM {warehouse.qualified('audit', 'reconciliation')}"
            " WHERE resource_id = 'huzheng_renkou'")).one()
        raw = conn.execute(sa.text(
            f"SELECT raw_value FROM {warehouse.qualified('quality', 'quarantine')} WHERE row_no = 3 AND reason_code = 'bad_date'"
        )).scalar()
    assert tuple(rec) == (8, 0, 8)
    assert raw == "2001-02-30"


def test_a_crash_mid_merge_leaves_every_table_as_it_was(warehouse: Warehouse, city, monkeypatch) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    rows = [[p, n + "改", s, b] for p, n, s, b in PEOPLE]
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"], rows)
    for r in cat.resources:
        ingest(warehouse, cat, r, DAY2, landing, os.environ)
        standardize_batch(warehouse, cat, r, DAY2)
    before = dump(warehouse)

    real_insert = Warehouse.insert

    def crash_on_base(self, conn, table, frame):
        if table.name.endswith("people"):
            raise RuntimeError("disk full")
        return real_insert(self, conn, table, frame)

    monkeypatch.setattr(Warehouse, "insert", crash_on_base)
    with pytest.raises(RuntimeError, match="disk full"):
        merge_library(warehouse, cat, "people", DAY2)  # valid_to already updated when it fails
    monkeypatch.setattr(Warehouse, "insert", real_insert)
    assert dump(warehouse) == before
    merge_library(warehouse, cat, "people", DAY2)
    assert set(current(warehouse, cat, "people").get_column("full_name")) == {n + "改" for _, n, _, _ in PEOPLE}


def test_a_redelivery_for_the_same_day_is_a_new_batch_and_the_old_one_stays(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    citykit.write_json(landing / "zz" / f"{DAY1:%Y%m%d}" / "zheng.json",
                       [{"no": "A-0001", "owner": PEOPLE[0][0], "owner_name": PEOPLE[0][1]}])
    res = cat.resource("zhengzhao_zheng")
    r = ingest(warehouse, cat, res, DAY1, landing)
    assert r.status == "new" and r.batch.batch_id == "zhengzhao_zheng.20261009.2"
    with warehouse.engine.connect() as conn:
        n = conn.execute(sa.text(f"SELECT _batch_id, COUNT(*) FROM {warehouse.qualified('ods', 'zhengzhao_zheng')} "
                                 "GROUP BY _batch_id ORDER BY _batch_id")).fetchall()
    assert [tuple(x) for x in n] == [("zhengzhao_zheng.20261009.1", 2), ("zhengzhao_zheng.20261009.2", 1)]
    assert standardize_batch(warehouse, cat, res, DAY1).accepted == 1


def test_the_database_channel_reads_the_rows_of_its_own_day_in_any_order(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    res = cat.resource("shebao_canbao")
    citykit.write_db(landing, [(PEOPLE[2][0], PEOPLE[2][1], "13700000003", f"{DAY2} 10:00:00"),
                               (PEOPLE[2][0], PEOPLE[2][1], "13700000009", f"{DAY2 + dt.timedelta(days=1)} 10:00:00")])
    # the later day first: it reads its own day only, not everything before it
    r2 = ingest(warehouse, cat, res, DAY2, landing)
    assert r2.batch.rows_delivered == 1  # the row of the next day belongs to the next partition
    assert r2.batch.watermark_low == f"{DAY2} 00:00:00" and r2.batch.watermark_high == f"{DAY2} 10:00:00"
    assert ingest(warehouse, cat, res, DAY1, landing).batch.rows_delivered == 2
    assert ingest(warehouse, cat, res, DAY1, landing).status == "unchanged"
    assert ingest(warehouse, cat, res, DAY2, landing).status == "unchanged"


def test_the_initial_load_partition_of_a_database_channel_reads_its_history(warehouse: Warehouse, city,
                                                                            tmp_path: Path) -> None:
    cat, landing = city
    citykit.write_db(landing, [(PEOPLE[0][0], PEOPLE[0][1], "13800000001", "2026-03-01 08:00:00"),
                               (PEOPLE[0][0], PEOPLE[0][1], "13800000002", "2026-09-01 08:00:00"),
                               (PEOPLE[1][0], PEOPLE[1][1], "13900000002", f"{DAY1} 08:00:00")])
    res = cat.resource("shebao_canbao")
    assert ingest(warehouse, cat, res, DAY1, landing).batch.rows_delivered == 1
    initial = res.model_copy(update={"channel": res.channel.model_copy(update={"initial_load": DAY1})})
    again = ingest(warehouse, cat, initial, DAY1, landing)
    assert again.batch.rows_delivered == 3 and again.batch.watermark_low is None


def run_day_in_parallel(url: str, cat: Catalogue, landing: Path, day: dt.date, workers: int = 2) -> None:
    """The nightly job's order with ``workers`` steps at a time, each step with its own warehouse
    (as each step process of the job opens its own): every resource's one-pass step, then each
    library's merge once its resources are done."""
    def step(fn, *args, **kw) -> None:
        wh = Warehouse(url)
        try:
            fn(wh, cat, *args, **kw)
        finally:
            wh.dispose()

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda r: step(collect, r, day, landing, variables=os.environ), cat.resources))
        list(pool.map(lambda lib: step(merge_library, lib.code, day), cat.libraries))


def test_steps_two_at_a_time_on_a_new_warehouse_build_what_one_at_a_time_builds(warehouse: Warehouse, city) -> None:
    """Two steps at a time (the nightly job's executor) on a warehouse with no tables yet: every
    step succeeds, and every layer holds what one step at a time writes. Batches are numbered in
    the order they are stored, so base-library lineage is compared by batch id."""
    cat, landing = city
    citykit.deliver_day1(landing, DAY1)
    run_day_in_parallel(warehouse.url, cat, landing, DAY1)
    parallel = _without_receipt_time({t: rows for t, rows in dump(warehouse).items() if not t.startswith("base")})
    parallel_base = {lib.code: current(warehouse, cat, lib.code) for lib in cat.libraries}
    _clear(warehouse)
    for r in cat.resources:
        collect(warehouse, cat, r, DAY1, landing, variables=os.environ)
    for lib in cat.libraries:
        merge_library(warehouse, cat, lib.code, DAY1)
    assert _without_receipt_time({t: rows for t, rows in dump(warehouse).items() if not t.startswith("base")}) == parallel
    for lib in cat.libraries:
        assert current(warehouse, cat, lib.code).equals(parallel_base[lib.code]), lib.code
        assert parallel_base[lib.code].height > 0


def test_a_delimited_file_is_stored_a_piece_at_a_time_and_an_unchanged_one_not_parsed(warehouse: Warehouse, city,
                                                                                      monkeypatch) -> None:
    """A CSV delivery is parsed a piece at a time as it is stored (never held whole: the first records
    are handed on before the file is read to its end); the same file again is recognised by its hash
    before any parsing, with the stored batch's problems; a piece failing after the first is a delivery
    error naming the file, and nothing of the batch is stored."""
    import guiji.channels as channels

    cat, landing = city
    rows = [[f"33010219900101{i:04d}", f"人{i}", "1", "19900101"] for i in range(60)]
    rows[45].append("多余")  # a line with the wrong number of fields: a problem of the file
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"], rows)
    res = cat.resource("huzheng_renkou")
    monkeypatch.setattr(channels, "CSV_PIECE_BYTES", 200)
    monkeypatch.setattr(channels, "READ_CHUNK_BYTES", 64)
    reading = channels.open_files(res, res.channel, DAY1, landing)
    size = reading.files[0].stat().st_size
    read: list[int] = []
    real_chunks = channels.Bytes.chunks

    def chunks(self, n):
        for chunk in real_chunks(self, n):
            read.append(len(chunk))
            yield chunk

    monkeypatch.setattr(channels.Bytes, "chunks", chunks)
    pages = reading.pages()
    next(pages)
    encoding_pass = size  # the encoding is told from one pass over the file first
    assert encoding_pass < sum(read) < 2 * size  # the first records before the second pass ends
    rest = list(pages)
    assert rest and sum(read) == 2 * size

    # a piece after the first fails: the delivery is refused, naming the file; nothing is stored
    calls = {"n": 0}
    real_read_csv = channels._read_csv

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk gone")
        return real_read_csv(*args, **kwargs)

    monkeypatch.setattr(channels, "_read_csv", failing)
    with pytest.raises(channels.DeliveryError, match="renkou.csv: 读取中途失败, 本次交付未入库: OSError: disk gone"):
        ingest(warehouse, cat, res, DAY1, landing)
    if warehouse.exists("ods", res.id):
        with warehouse.engine.connect() as conn:
            assert warehouse.scalar(conn, f"SELECT COUNT(*) FROM {warehouse.qualified('ods', res.id)}") == 0
    monkeypatch.setattr(channels, "_read_csv", real_read_csv)

    first = ingest(warehouse, cat, res, DAY1, landing)
    assert first.status == "new" and first.batch.rows_delivered == 60
    assert first.problems == ["renkou.csv: 1 行列数不符 (第 46 行)"]
    monkeypatch.setattr(channels, "csv_pages", lambda *a, **k: pytest.fail("an unchanged file was parsed"))
    again = ingest(warehouse, cat, res, DAY1, landing)
    assert again.status == "unchanged" and again.problems == first.problems
