"""共享/开放 layer on SQLite and PostgreSQL: the second test city (山海市) with its 户政 resource
opened, run through ods → std → base, then masked into share tables and open-data files."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
import sqlalchemy as sa
from dagster import AssetKey, DagsterInstance, materialize

from assets.keys import base_key
from assets.resources import OpenDataResource, WarehouseResource, resources_from_env
from assets.share import (
    NEEDLES_KEY,
    build_share_assets,
    build_share_output,
    leak_findings,
)
from catalog.loader import DEMO_CATALOGUE, Catalogue, load_catalogue
from desensitize.kanon import smallest_group
from desensitize.leaks import Needles
from desensitize.masking import MissingKeyError
from desensitize.policy import OutputPolicy, share_policies
from desensitize.pseudonym import PseudonymKey, token_of
from pipelines.demo_api import serve_in_thread
from tests import citykit
from tests.citykit import PEOPLE
from tests.test_pipeline import run_day
from warehouse.store import Warehouse

DAY1 = dt.date(2026, 10, 9)
DAY2 = dt.date(2026, 10, 10)
KEY = PseudonymKey(b"shanhai-test-key-0123456789")

# 山海市 residents beyond citykit's three: a crowd the open data can hide in, two small groups
# that a 5-year band merges, and one woman nobody resembles.
CROWD = (
    [("370202", "19800501", 2 * i + 1, "M") for i in range(30)]
    + [("370203", "19810101", 2 * i + 1, "M") for i in range(3)]
    + [("370203", "19830101", 2 * i + 1, "M") for i in range(2)]
    + [("370202", "19920315", 2 * i + 2, "F") for i in range(6)]
    + [("370203", "19500101", 2, "F")]
)
HEADER = ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"]


def crowd_rows(rename: dict[str, str] | None = None) -> list[list[str]]:
    rows = [[p, n, s, b] for p, n, s, b in PEOPLE]
    for i, (region, birth, seq, sex) in enumerate(CROWD):
        rows.append([citykit.id_number(region, birth, 100 + seq), f"居民{i:02d}号", sex, birth])
    for row in rows:
        row[1] = (rename or {}).get(row[0], row[1])
    return rows


@pytest.fixture
def city(tmp_path: Path, monkeypatch) -> tuple[Catalogue, Path, Path]:
    folder = citykit.write_catalogue(tmp_path)
    renkou = folder / "resources" / "huzheng_renkou.yaml"
    renkou.write_text(renkou.read_text(encoding="utf-8").replace("open: 不予开放", "open: 有条件开放"), encoding="utf-8")
    cat = load_catalogue(folder)
    landing = tmp_path / "landing"
    landing.mkdir()
    server, base = serve_in_thread(landing)
    monkeypatch.setenv("SHANHAI_QIYE_URL", f"{base}/qiye")
    citykit.deliver_day1(landing, DAY1)
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", HEADER, crowd_rows())
    yield cat, landing, tmp_path / "open"
    server.shutdown()
    server.server_close()


def policy(cat: Catalogue, name: str) -> OutputPolicy:
    return next(p for p in share_policies(cat) if p.name == name)


def build(wh: Warehouse, cat: Catalogue, name: str, day: dt.date, open_root: Path):
    return build_share_output(wh, cat, policy(cat, name), day, key=KEY, open_root=open_root)


def share_state(wh: Warehouse) -> dict[str, list[tuple]]:
    """Every row of every share-layer table, sorted."""
    insp = sa.inspect(wh.engine)
    names = insp.get_table_names(schema="share") if wh.is_postgres else [
        t for t in insp.get_table_names() if t.startswith("share__")]
    out = {}
    with wh.engine.connect() as conn:
        for t in names:
            q = f'"share"."{t}"' if wh.is_postgres else f'"{t}"'
            out[t] = sorted(tuple(str(v) for v in r) for r in conn.execute(sa.text(f"SELECT * FROM {q}")))
    return out


def test_the_restricted_output_masks_every_column_and_its_tokens_join_across_datasets(warehouse, city) -> None:
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    people = build(warehouse, cat, "people_restricted", DAY1, open_root)
    assert people.action == "written" and people.inserted == len(PEOPLE) + len(CROWD)
    with warehouse.engine.connect() as conn:
        stored = warehouse.read(conn, f"SELECT * FROM {warehouse.qualified('share', 'people_restricted')}",
                                {**policy(cat, "people_restricted").schema(), "_row_hash": pl.String()})
    pid, name, _, _ = PEOPLE[0]
    row = stored.filter(pl.col("pid__token") == token_of(pid, KEY)).row(0, named=True)
    assert row["pid"] == pid[0] + "*" * 15 + pid[-2:]  # Hutool ID_CARD: 出生日期 is published beside it
    assert (row["full_name"], row["sex"], row["dob"], row["phone"]) == ("王***", "1", dt.date(1980, 1, 1), "138****0001")
    assert row["_key_id"] == KEY.key_id and row["valid_from"] == DAY1
    assert pid not in stored.get_column("pid").to_list()
    # the 证照 holder token is the same pseudonym: restricted datasets still join without the raw ID
    permits = build(warehouse, cat, "permits_restricted", DAY1, open_root).frame
    joined = permits.join(stored, left_on="holder__token", right_on="pid__token")
    assert joined.select("number", "full_name").sort("number").rows() == [("A-0001", "王***"), ("A-0002", "李***")]
    with warehouse.engine.connect() as conn:
        out = conn.execute(sa.text(f"SELECT output, as_of, rows, key_id FROM {warehouse.qualified('share', 'outputs')} "
                                   "WHERE output = 'people_restricted'")).one()
    assert (out[0], str(out[1])[:10], out[2], out[3]) == ("people_restricted", "2026-10-09", 45, KEY.key_id)
    findings, _ = leak_findings(warehouse, cat, people, {})
    assert findings == []


def test_the_open_export_is_k_anonymous_and_says_how_many_rows_were_generalised_or_suppressed(
        warehouse, city) -> None:
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    b = build(warehouse, cat, "people_open", DAY1, open_root)
    k = b.masked.kanon
    # 山海市 grades 出生日期 一般: published whole unless its group is small. Men born 1980-01-01,
    # 1981 and 1983 (1 + 3 + 2) are alone by date and by year; a 5-year band hides them together.
    # The man born 2001 and the woman born 1950 stay alone even with 性别 and 出生日期 suppressed.
    assert (k.rows_in, k.generalised, k.suppressed) == (45, 6, 2)
    assert k.levels == {"sex": {0: 43}, "dob": {0: 37, 2: 6}}
    csv = pl.read_csv(b.files.csv, infer_schema=False)
    assert csv.columns == ["sex", "dob"] and csv.height == 43
    assert smallest_group(csv, ["sex", "dob"]) >= 5
    assert sorted(csv.group_by("sex", "dob").len().rows()) == [
        ("1", "1980-05-01", 30), ("1", "1980-1984", 6), ("2", "1992-03-15", 7)]
    # the JSON carries the same records, the dictionary every published field in Chinese
    doc = json.loads(b.files.json.read_text(encoding="utf-8"))
    assert doc["k"] == 5 and doc["quasi_identifiers"] == ["sex", "dob"] and len(doc["records"]) == csv.height
    assert sorted((r["sex"], r["dob"]) for r in doc["records"]) == sorted(csv.rows())
    dictionary = pl.read_csv(b.files.dictionary, infer_schema=False)
    assert dictionary.select("字段", "中文名称", "处理规则", "准标识符", "代码表").rows() == [
        ("sex", "性别", "保留原值", "是", "性别"), ("dob", "出生日期", "保留原值", "是", "")]
    text = b.files.csv.read_text(encoding="utf-8")
    assert all(p not in text and n not in text for p, n, _, _ in PEOPLE)
    assert b.files.csv == open_root / "people_open" / "2026-10-09" / "people_open.csv"
    findings, _ = leak_findings(warehouse, cat, b, {})
    assert findings == []


def test_a_rerun_writes_nothing_and_a_new_day_rewrites_only_the_rows_that_changed(warehouse, city) -> None:
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    for name in ("people_restricted", "people_open", "org_open"):
        build(warehouse, cat, name, DAY1, open_root)
    before = share_state(warehouse)
    files = {p: p.read_bytes() for p in open_root.rglob("*") if p.is_file()}
    again = [build(warehouse, cat, n, DAY1, open_root) for n in ("people_restricted", "people_open", "org_open")]
    assert [(b.action, b.inserted, b.deleted) for b in again] == [("unchanged", 0, 0)] * 3
    assert share_state(warehouse) == before
    assert {p: p.read_bytes() for p in open_root.rglob("*") if p.is_file()} == files

    # day 2: one resident renamed → one version closed, one opened → one masked row replaced
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", HEADER,
                      crowd_rows(rename={PEOPLE[2][0]: "钱强"}))
    run_day(warehouse, cat, landing, DAY2)
    day2 = build(warehouse, cat, "people_restricted", DAY2, open_root)
    assert (day2.action, day2.inserted, day2.deleted) == ("written", 1, 1)
    row = day2.frame.filter(pl.col("pid__token") == token_of(PEOPLE[2][0], KEY)).row(0, named=True)
    assert (row["full_name"], row["valid_from"]) == ("钱***", DAY2)

    # backfilling day 1 afterwards must not move the table back in time
    back = build(warehouse, cat, "people_restricted", DAY1, open_root)
    assert back.action == "older" and back.table_as_of == DAY2
    with warehouse.engine.connect() as conn:
        names = conn.execute(sa.text(f"SELECT full_name FROM {warehouse.qualified('share', 'people_restricted')}"
                                     " WHERE full_name LIKE '钱%' OR full_name LIKE '赵%'")).scalars().all()
        log = conn.execute(sa.text(f"SELECT action FROM {warehouse.qualified('audit', 'share_builds')} "
                                   "WHERE output = 'people_restricted' ORDER BY built_at")).scalars().all()
    assert names == ["钱***"]
    assert log == ["written", "unchanged", "written", "older"]


def test_a_new_key_rewrites_every_token_under_a_new_key_id(warehouse, city) -> None:
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    first = build(warehouse, cat, "people_restricted", DAY1, open_root)
    rotated = PseudonymKey(b"rotated-key-0123456789abc")
    second = build_share_output(warehouse, cat, policy(cat, "people_restricted"), DAY1, key=rotated,
                                open_root=open_root)
    assert (second.action, second.inserted, second.deleted) == ("written", 45, 45)
    assert second.frame.get_column("_key_id").unique().to_list() == [rotated.key_id] != [first.key_id]
    assert not set(second.frame.get_column("pid__token")) & set(first.frame.get_column("pid__token"))


def test_the_leak_scanner_finds_a_raw_id_planted_in_a_table_a_file_or_a_preview(warehouse, city) -> None:
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    restricted = build(warehouse, cat, "people_restricted", DAY1, open_root)
    opened = build(warehouse, cat, "people_open", DAY1, open_root)
    assert leak_findings(warehouse, cat, restricted, {})[0] == []
    pid, name, _, _ = PEOPLE[1]
    with warehouse.begin() as conn:
        conn.execute(sa.text(f"UPDATE {warehouse.qualified('share', 'people_restricted')} SET full_name = :v "
                             "WHERE full_name = '赵***'"), {"v": f"见{pid}"})
    with opened.files.csv.open("a", encoding="utf-8") as fh:
        fh.write(f"2,{name}\n")
    preview = f"| pid | full_name |\n|---|---|\n| {pid} | {name} |\n"
    found, needles = leak_findings(warehouse, cat, restricted, {"预览": (preview, set())})
    assert len(needles.ids) == len(PEOPLE) + len(CROWD)
    assert [(f.column, f.kind, f.count, f.sample) for f in found] == [
        ("full_name", "id_number", 1, pid[:6] + "********" + pid[-4:]),
        ("pid", "id_number", 1, pid[:6] + "********" + pid[-4:]),
        ("full_name", "name", 1, "李***"),
    ]
    assert found[0].location == warehouse.qualified("share", "people_restricted")
    assert found[1].location == "预览 表1"
    in_file, _ = leak_findings(warehouse, cat, opened, {}, needles)
    assert [(f.location, f.column, f.kind) for f in in_file] == [(str(opened.files.csv), "dob", "name")]
    assert all(pid not in str(f) for f in found + in_file)  # findings never repeat the raw value


def test_share_assets_materialise_through_dagster_with_metadata_and_passing_checks(tmp_path, city, monkeypatch):
    cat, landing, open_root = city
    url = f"sqlite:///{tmp_path / 'dagster_wh.db'}"
    wh = Warehouse(url)
    run_day(wh, cat, landing, DAY1)
    monkeypatch.setenv("GONGSHU_PSEUDONYM_KEY", KEY.secret.decode())
    assets = [a for a in build_share_assets(cat, _partitions(cat))
              if a.key in (AssetKey(["share", "people_restricted"]), AssetKey(["share", "people_open"]), NEEDLES_KEY)]
    with DagsterInstance.ephemeral() as instance:
        result = materialize(assets, partition_key=DAY1.isoformat(), instance=instance, resources={
            "warehouse": WarehouseResource(url=url), "pseudonym": resources_from_env()["pseudonym"],
            "open_data": OpenDataResource(path=str(open_root))})
        assert result.success
        md = {m.asset_key.path[-1]: m.metadata for m in result.asset_materializations_for_node("share__people_restricted")
              + result.asset_materializations_for_node("share__people_open")}
        checks = {(c.asset_key.path[-1], c.check_name): c for c in result.get_asset_check_evaluations()}
        (needles,) = result.asset_materializations_for_node("share__leak_needles")
    groups = _groups_starting(wh, cat, DAY1)
    assert needles.metadata["来源"].value == f"自基础库汇集: 重新读取新增或有变化的版本组 {groups} 个, 沿用已存的版本组 0 个"
    assert md["people_restricted"]["dagster/row_count"].value == 45
    assert md["people_restricted"]["假名化密钥编号"].value == KEY.key_id
    assert "保留前1位和后2位" in md["people_restricted"]["脱敏策略"].value
    preview = md["people_restricted"]["预览(已脱敏)"].value
    assert PEOPLE[0][0] not in preview and f"`{PEOPLE[0][0][0]}{'*' * 15}{PEOPLE[0][0][-2:]}`" in preview
    assert md["people_open"]["k-匿名: 抑制行数"].value == 2
    assert checks[("people_restricted", "no_raw_identifiers")].passed
    assert checks[("people_open", "no_raw_identifiers")].passed
    k = checks[("people_open", "k_anonymity")]
    assert k.passed and k.metadata["最小组行数"].value >= 5 and k.metadata["抑制(未发布)行数"].value == 2
    wh.dispose()


def _partitions(cat: Catalogue):
    from assets.keys import daily_partitions

    return daily_partitions(cat)


def test_the_demo_city_shows_one_share_asset_per_library_and_class_with_its_rules() -> None:
    cat = load_catalogue(DEMO_CATALOGUE)
    specs = {s.key: s for a in build_share_assets(cat, _partitions(cat)) for s in a.specs}
    assert {k.to_user_string() for k in specs} == {f"share/{p.name}" for p in share_policies(cat)} | {"share/leak_needles"}
    person = specs[AssetKey(["share", "person_restricted"])]
    assert person.group_name == "share"
    # its base library, and the leak needles collected once after every base library is merged
    assert {d.asset_key for d in person.deps} == {AssetKey(["base", "person"]), NEEDLES_KEY}
    assert {d.asset_key for d in specs[NEEDLES_KEY].deps} == {base_key(lib) for lib in cat.libraries}
    assert "| 公民身份号码 | id_number | 高度敏感 | 保留前1位和后2位" in person.description
    assert "| 手机号码 | mobile | 敏感 | 手机号保留前3位和后4位" in person.description
    opened = specs[AssetKey(["share", "person_open"])]
    assert "k=5" in opened.description and "| 婚姻状况 | marital_status | 敏感 | 不纳入" in opened.description
    assert opened.partitions_def == person.partitions_def == _partitions(cat)


def test_without_the_key_an_output_with_tokens_is_refused_and_keeps_the_tokens_it_published(warehouse, city) -> None:
    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    build(warehouse, cat, "people_restricted", DAY1, open_root)
    published = share_state(warehouse)
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", HEADER,
                      crowd_rows(rename={PEOPLE[2][0]: "钱强"}))
    run_day(warehouse, cat, landing, DAY2)  # the 归集 goes on without the key
    with pytest.raises(MissingKeyError) as err:
        build_share_output(warehouse, cat, policy(cat, "people_restricted"), DAY2, key=None, open_root=open_root)
    assert str(err.value).startswith("share/people_restricted: 未设置假名化密钥 (环境变量 GONGSHU_PSEUDONYM_KEY), "
                                     "而本输出含密钥化列 pid__token: 本次不生成, 共享表保留上次发布的内容与令牌")
    assert share_state(warehouse) == published  # not a row written, yesterday's tokens stay
    # an output without keyed columns needs no key
    assert build_share_output(warehouse, cat, policy(cat, "people_open"), DAY2, key=None,
                              open_root=open_root).action == "written"


def test_a_dagster_run_without_the_key_fails_the_keyed_share_asset_after_the_base_library(
        warehouse, city, monkeypatch) -> None:
    from assets.factory import build_base_asset

    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    monkeypatch.delenv("GONGSHU_PSEUDONYM_KEY", raising=False)
    wanted = {AssetKey(["share", "people_restricted"]), AssetKey(["share", "people_open"])}
    assets = [build_base_asset(cat, cat.library("people"), _partitions(cat))] + [
        a for a in build_share_assets(cat, _partitions(cat)) if a.key in wanted]
    with DagsterInstance.ephemeral() as instance:
        result = materialize(assets, partition_key=DAY1.isoformat(), instance=instance, raise_on_error=False,
                             resources={"warehouse": WarehouseResource(url=warehouse.url),
                                        "pseudonym": resources_from_env()["pseudonym"],  # as the code location
                                        "open_data": OpenDataResource(path=str(open_root))})
        done = {m.asset_key for m in result.get_asset_materialization_events()
                for m in [m.event_specific_data.materialization]}
        [failure] = result.get_step_failure_events()
    assert done == {AssetKey(["base", "people"]), AssetKey(["share", "people_open"])}
    assert failure.step_key == "share__people_restricted"
    message = failure.step_failure_data.error.message
    assert "未设置假名化密钥 (环境变量 GONGSHU_PSEUDONYM_KEY)" in message and "共享表保留上次发布的内容与令牌" in message
    assert not warehouse.exists("share", "people_restricted")


def test_open_data_csv_cells_never_start_a_formula_and_numbers_stay_numbers(warehouse, city) -> None:
    cat, landing, open_root = city
    evil = '=HYPERLINK("http://evil","x")'
    orgs = [(citykit.uscc("91370202MA0000001"), evil, "-88"), (citykit.uscc("91370203MA0000002"), "@SUM(A1)", "12.5")]
    citykit.write_api(landing, DAY1, [{"code": c, "title": t, "capital": k} for c, t, k in orgs])
    run_day(warehouse, cat, landing, DAY1)
    b = build(warehouse, cat, "org_open", DAY1, open_root)
    csv = pl.read_csv(b.files.csv, infer_schema=False).sort("code")
    assert csv.get_column("title").to_list() == ["'" + evil, "'@SUM(A1)"]
    assert csv.get_column("capital").to_list() == ["-88.0", "12.5"]  # a negative number is no formula
    records = sorted(json.loads(b.files.json.read_text(encoding="utf-8"))["records"], key=lambda r: r["code"])
    assert [(r["title"], r["capital"]) for r in records] == [(evil, -88.0), ("@SUM(A1)", 12.5)]  # JSON as it is
    assert all(not c.startswith(("=", "+", "-", "@")) for c in
               pl.read_csv(b.files.dictionary, infer_schema=False).to_numpy().ravel() if c)


def test_a_generated_city_publishes_no_row_that_gives_an_identifier_back(warehouse, tmp_path, monkeypatch) -> None:
    """A 山海市 of 2,000 generated persons (with the generator's defects): every share and open output,
    the previews of its base libraries, the check samples of its batches and the department reports
    are scanned, row by row too — none of them completes a masked ID number or pins down a person."""
    from assets.checks import std_check_results
    from assets.factory import preview
    from catalog.loader import load_catalogue as load
    from desensitize.leaks import scan_file, scan_text, scan_tree
    from generator import generate
    from quality.config import ScorecardConfig
    from quality.report.period import produce_reports
    from quality.results import read_failures
    from quality.scorecard.period import run_scorecard

    folder = citykit.write_catalogue(tmp_path)
    cat = load(folder)
    landing = tmp_path / "landing"
    server, base = serve_in_thread(landing)
    monkeypatch.setenv("SHANHAI_QIYE_URL", f"{base}/qiye")
    try:
        generate(cat, persons=2000, seed=13, date=DAY1, out=landing, progress=False)
        run_day(warehouse, cat, landing, DAY1)
    finally:
        server.shutdown()
        server.server_close()
    needles = Needles.from_warehouse(warehouse, cat)
    assert len(needles.ids) > 1500 and needles.people.persons > 1500
    for p in share_policies(cat):
        b = build_share_output(warehouse, cat, p, DAY1, key=KEY, open_root=tmp_path / "open")
        md = preview(b.frame, {}).value
        findings, _ = leak_findings(warehouse, cat, b, {"预览": (md, p.public_columns())}, needles)
        assert findings == [], [str(f) for f in findings]
    people = policy(cat, "people_restricted")
    assert people.column("pid").rule.spec == "keep_first_last(1, 2)"
    with warehouse.engine.connect() as conn:
        for lib in cat.libraries:
            cols = ", ".join(warehouse.quote(e.code) for e in lib.elements)
            rows = warehouse.read(conn, f"SELECT {cols} FROM {warehouse.qualified('base', lib.code)} LIMIT 200",
                                  {e.code: pl.String() for e in lib.elements})
            md = preview(rows, {e.code: e for e in lib.elements}).value
            assert scan_text(md, needles, f"base/{lib.code} 预览") == []
        schema = {"rule_id": pl.String(), "label": pl.String(), "dimension": pl.String(), "severity": pl.String(),
                  "evaluated": pl.Int64(), "failed": pl.Int64(), "batch_id": pl.String()}
        counts = warehouse.read(conn, f"SELECT {', '.join(schema)} FROM {warehouse.qualified('quality', 'rule_results')}",
                                schema)
        for (batch,), part in counts.group_by("batch_id"):
            resource = cat.resource(batch.split(".")[0])
            for check in std_check_results(resource, part.drop("batch_id"), read_failures(warehouse, conn, batch, 500),
                                           None):
                text = check.metadata["不通过样例(已脱敏)"].value
                assert scan_text(text, needles, f"{batch} {check.check_name}") == []
    run_scorecard(warehouse, cat, DAY1, ScorecardConfig(), run_id="generated")
    run = produce_reports(warehouse, cat, DAY1, ScorecardConfig(), key=KEY, send=False, root=tmp_path / "reports")
    assert run.outcomes and scan_tree(tmp_path / "reports", needles) == []
    assert all(scan_file(o.xlsx, needles) == [] for o in run.outcomes)


def _same_needles(a: Needles, b: Needles) -> bool:
    return a == b and len(a) > 0


def _stored_needles(wh: Warehouse) -> list[tuple]:
    with wh.engine.connect() as conn:
        return conn.execute(sa.text(f"SELECT DISTINCT state FROM {wh.qualified('audit', 'leak_needle_hashes')}")).all()


def test_the_needles_are_collected_once_per_state_of_the_base_libraries(warehouse, city, monkeypatch) -> None:
    """Collected a page at a time (pages of 3 values: the same needles), stored as hashes in parts (of
    5 values here: every part read back) and no raw identifier among the stored bytes, read back while
    the base libraries stay as they were, collected again when they change."""
    from desensitize import leaks

    cat, landing, open_root = city
    run_day(warehouse, cat, landing, DAY1)
    fresh = Needles.from_warehouse(warehouse, cat)
    assert len(fresh.ids) and len(fresh.names) and fresh.people.persons
    assert Needles.from_warehouse(warehouse, cat, page_rows=3) == fresh
    monkeypatch.setattr(leaks, "PART_VALUES", 5)
    first, reused = Needles.cached(warehouse, cat)
    assert not reused and _same_needles(first, fresh)
    second, reused = Needles.cached(warehouse, cat)
    assert reused and _same_needles(second, fresh)
    assert len(_stored_needles(warehouse)) == 1
    with warehouse.engine.connect() as conn:
        parts = conn.execute(sa.text(f"SELECT kind, data FROM {warehouse.qualified('audit', 'leak_needle_hashes')}")).all()
    assert len(parts) > len(fresh) / 5
    stored = b"".join(bytes(d) for _, d in parts)
    raw = [p[0] for p in PEOPLE] + [p[1] for p in PEOPLE]
    assert raw and not any(v.encode() in stored or v.encode("utf-16-le") in stored for v in raw)

    # day 2 renames a resident: the base library's state changes, so the needles are collected again
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", HEADER,
                      crowd_rows(rename={PEOPLE[2][0]: "钱强"}))
    run_day(warehouse, cat, landing, DAY2)
    third, reused = Needles.cached(warehouse, cat)
    assert not reused and third.names.contains(pl.Series(["钱强"])).item()
    assert not first.names.contains(pl.Series(["钱强"])).item()
    assert _same_needles(third, Needles.from_warehouse(warehouse, cat))
    assert len(_stored_needles(warehouse)) == 1  # the earlier state's rows are gone
    assert Needles.cached(warehouse, cat)[1]


def test_the_stored_needles_are_kept_on_this_machine_and_read_back_mapped(warehouse, city, tmp_path, monkeypatch) -> None:
    """The needles stored for a state are kept in the cache folder as arrays of hashes (no raw identifier
    among their bytes) and read back from it, memory-mapped, without the database's parts; an entry left
    broken is read from the database and kept again; needles stored again (the warehouse made anew,
    another state) are kept under another entry and the earlier one is removed."""
    import numpy as np

    from desensitize import leaks

    cat, landing, _ = city
    run_day(warehouse, cat, landing, DAY1)
    cache = tmp_path / "needles-cache"
    first, reused = Needles.cached(warehouse, cat, cache)
    assert not reused and _same_needles(first, Needles.from_warehouse(warehouse, cat))
    (entry,) = [p for p in cache.iterdir()]
    kept = b"".join(f.read_bytes() for f in entry.iterdir())
    raw = [p[0] for p in PEOPLE] + [p[1] for p in PEOPLE]
    assert kept and not any(v.encode() in kept or v.encode("utf-16-le") in kept for v in raw)

    def unread(*args, **kwargs):
        raise AssertionError("the database's parts were read")

    with monkeypatch.context() as m:
        m.setattr(Needles, "_stored", classmethod(unread))
        second, reused = Needles.cached(warehouse, cat, cache)
    assert reused and _same_needles(second, first)
    assert isinstance(second.ids.a.base, np.memmap) or isinstance(second.ids.a, np.memmap)
    assert second.names.contains(pl.Series([PEOPLE[0][1], "无此人"])).to_list() == [True, False]

    (entry / "ids_b.npy").unlink()  # broken: read from the database again, and kept again
    third, reused = Needles.cached(warehouse, cat, cache)
    assert reused and _same_needles(third, first) and (entry / "ids_b.npy").exists()

    with warehouse.begin() as conn:  # stored anew (a warehouse made again at the same address)
        conn.execute(sa.text(f"DELETE FROM {warehouse.qualified('audit', leaks.NEEDLES)}"))
    fourth, reused = Needles.cached(warehouse, cat, cache)
    assert not reused and _same_needles(fourth, first)
    assert [p.name for p in cache.iterdir()] != [entry.name] and len(list(cache.iterdir())) == 1


def _groups_starting(wh: Warehouse, cat: Catalogue, day: dt.date) -> int:
    """How many base libraries with identifying elements hold versions that start on ``day``."""
    from desensitize.leaks import _identifying

    with wh.engine.connect() as conn:
        return sum(1 for lib in cat.libraries if wh.exists("base", lib.code) and _identifying(lib) and conn.execute(sa.text(
            f"SELECT COUNT(*) FROM {wh.qualified('base', lib.code)} WHERE valid_from = :d"), {"d": day}).scalar_one())


def test_the_needles_are_collected_again_only_from_the_versions_that_changed(warehouse, city, monkeypatch) -> None:
    """Each (library, valid_from date) group of versions is collected once and stored as hashes under a
    digest of the group; a new night collects only the groups of its date, a re-delivery of an earlier
    date the groups it folded again — and the needles are always those collected whole."""
    from desensitize import leaks

    cat, landing, _ = city
    monkeypatch.setattr(leaks, "PART_VALUES", 7)  # several parts a kind: every part read back
    run_day(warehouse, cat, landing, DAY1)
    first = Needles.from_dates(warehouse, cat)
    groups = _groups_starting(warehouse, cat, DAY1)
    assert groups >= 2 and first.dates == (groups, 0)
    assert _same_needles(first, Needles.from_warehouse(warehouse, cat))
    again = Needles.from_dates(warehouse, cat)
    assert again.dates == (0, groups) and _same_needles(again, first)
    with warehouse.engine.connect() as conn:
        stored = b"".join(bytes(d) for (d,) in conn.execute(sa.text(
            f"SELECT data FROM {warehouse.qualified('audit', 'leak_needle_dates')}")))
    raw = [p[0] for p in PEOPLE] + [p[1] for p in PEOPLE]
    assert stored and not any(v.encode() in stored or v.encode("utf-16-le") in stored for v in raw)

    # day 2 renames a resident: only the versions starting on day 2 are read from the base library
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", HEADER,
                      crowd_rows(rename={PEOPLE[2][0]: "钱强"}))
    run_day(warehouse, cat, landing, DAY2)
    new = _groups_starting(warehouse, cat, DAY2)
    second = Needles.from_dates(warehouse, cat)
    assert new >= 1 and second.dates == (new, groups)
    assert second.names.contains(pl.Series(["钱强"])).item()
    assert _same_needles(second, Needles.from_warehouse(warehouse, cat))

    # day 1 delivered again with another resident renamed: the groups it folds again are collected
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", HEADER,
                      crowd_rows(rename={PEOPLE[1][0]: "孙敏"}))
    run_day(warehouse, cat, landing, DAY1)
    third = Needles.from_dates(warehouse, cat)
    assert third.dates[0] >= 1 and sum(third.dates) == _groups_starting(warehouse, cat, DAY1) + \
        _groups_starting(warehouse, cat, DAY2)
    assert third.names.contains(pl.Series(["孙敏"])).item()
    assert _same_needles(third, Needles.from_warehouse(warehouse, cat))
    assert Needles.from_dates(warehouse, cat).dates == (0, sum(third.dates))


def test_a_group_of_versions_that_changes_while_it_is_read_is_not_stored(warehouse, city, monkeypatch) -> None:
    """The groups are read outside the snapshot their digests come from; a merge committing meanwhile
    changes a group: what was read is used for these needles, and the group is never stored under a
    digest that does not describe what was stored (PostgreSQL: not stored, its digest taken again after
    the read differs; SQLite: the read and the second digest share one snapshot, both before the merge)
    — the next collection reads the group again and has the new value, the one after reads every group
    back."""
    from catalog.models import Semantic
    from desensitize import leaks

    cat, landing, _ = city
    run_day(warehouse, cat, landing, DAY1)
    lib = cat.library("people")
    name = next(e.code for e in lib.elements if e.semantic == Semantic.person_name)
    real = leaks._collect_dates

    def collect_then_merge(wh, conn, library, dates, page_rows):
        groups = real(wh, conn, library, dates, page_rows)
        if library.code == "people":  # another step's merge commits after the read
            with warehouse.begin() as write:
                write.execute(sa.text(
                    f"UPDATE {warehouse.qualified('base', 'people')} SET {warehouse.quote(name)} = '赵六', "
                    f"{warehouse.quote(name + '__batch')} = {warehouse.quote(name + '__batch')} + 1000 "
                    f"WHERE {warehouse.quote(lib.key[0])} = :k"), {"k": PEOPLE[0][0]})
        return groups

    monkeypatch.setattr(leaks, "_collect_dates", collect_then_merge)
    first = Needles.from_dates(warehouse, cat)
    monkeypatch.setattr(leaks, "_collect_dates", real)
    assert not first.names.contains(pl.Series(["赵六"])).item()  # read before the merge
    with warehouse.engine.connect() as conn:
        stored = {r[0] for r in conn.execute(sa.text(
            f"SELECT DISTINCT library FROM {warehouse.qualified('audit', 'leak_needle_dates')}"))}
    groups = _groups_starting(warehouse, cat, DAY1)
    assert stored - {"people"} and ("people" not in stored) == warehouse.is_postgres
    second = Needles.from_dates(warehouse, cat)
    assert second.dates == (1, groups - 1) and second.names.contains(pl.Series(["赵六"])).item()
    assert _same_needles(second, Needles.from_warehouse(warehouse, cat))
    third = Needles.from_dates(warehouse, cat)
    assert third.dates == (0, groups) and _same_needles(third, second)


def test_two_steps_collecting_the_needles_at_once_store_one_set(warehouse_url, city) -> None:
    from concurrent.futures import ThreadPoolExecutor
    cat, landing, _ = city
    wh = Warehouse(warehouse_url)
    run_day(wh, cat, landing, DAY1)

    def step(_: int) -> Needles:
        own = Warehouse(warehouse_url)  # each step process opens its own warehouse
        try:
            return Needles.cached(own, cat)[0]
        finally:
            own.dispose()

    with ThreadPoolExecutor(2) as pool:
        a, b = pool.map(step, range(2))
    fresh = Needles.from_warehouse(wh, cat)
    assert _same_needles(a, fresh) and _same_needles(b, fresh)
    assert len(_stored_needles(wh)) == 1
    assert Needles.cached(wh, cat)[1]
    wh.dispose()
