"""Per-application extracts and their trace, on SQLite and PostgreSQL: exactly the granted elements
(and rows of the filter), masked per the catalogue's grade, tokens keyed per application, formula-safe
CSV/XLSX with a manifest, scanned for raw identifiers, recorded in the audit; ``gongshu share trace``
names the application of a sampled / reordered / column-dropped leak and never another one."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import shutil
from pathlib import Path

import polars as pl
import pytest
from openpyxl import Workbook, load_workbook

from catalog.loader import load_catalogue
from desensitize.pseudonym import PseudonymKey, pseudonymise
from sharing import commands as sc
from sharing import store
from sharing.extract import ExtractRefused, write_extract
from sharing.fingerprint import MARK, PLAIN
from sharing.trace import trace_file
from sharing.workflow import ApplicationKind, RequesterType
from tests.share_city import DEMO, demo_catalogue, persons, write_base
from warehouse.migrations import open_warehouse

KEY = PseudonymKey(b"share-extract-test-key-0123456789")


def pseudonymise_ids(ids: pl.Series) -> list[str]:
    """The share layer's tokens of these ID numbers (the platform key)."""
    return ids.to_frame("v").select(pseudonymise(pl.col("v"), KEY)).to_series().to_list()
SINCE = dt.date(2026, 11, 1)
AS_OF = dt.date(2026, 11, 20)
AT = dt.datetime(2026, 11, 2, 9, tzinfo=dt.UTC)


@pytest.fixture
def world(warehouse_url: str, tmp_path: Path):
    wh = open_warehouse(warehouse_url)
    cat = demo_catalogue()
    people = persons(400)
    write_base(wh, cat, people, SINCE)
    yield wh, cat, people, tmp_path / "share"
    wh.dispose()


def approved(wh, cat, requester: str, elements: list[str], purpose: str, **kw) -> str:
    app_id = sc.apply(wh, cat, requester=requester, library="person", elements=elements, purpose=purpose,
                      until=dt.date(2027, 12, 31), at=AT, **kw).application["application_id"]
    for dept in ("gaj", "rsj", "mzj"):
        with contextlib.suppress(sc.ApplicationError):  # a department with nothing pending
            sc.review(wh, app_id, dept=dept, agree=True, at=AT)
    sc.decide(wh, app_id, approve=True, by="王局", at=AT)
    return app_id


def test_an_extract_holds_exactly_the_granted_elements_masked_and_keyed_per_application(world) -> None:
    wh, cat, people, root = world
    a = approved(wh, cat, "rsj", ["name", "mobile"], "社保待遇资格认证")
    b = approved(wh, cat, "mzj", ["name", "mobile"], "低保核对")
    xa = write_extract(wh, cat, a, AS_OF, KEY, root)
    xb = write_extract(wh, cat, b, AS_OF, KEY, root)
    assert xa.frame.columns == ["id_number", "id_number__token", "name", "mobile", "valid_from", "_key_id"]
    assert xa.rows == people.height
    csv = pl.read_csv(root / a / AS_OF.isoformat() / f"{a}.csv", infer_schema=False)
    plain_mobile = csv.get_column("mobile").str.replace_all(MARK, PLAIN, literal=True)
    assert plain_mobile.str.contains(r"^1\d{2}\*{4}\d{4}$").all()
    assert csv.get_column("mobile").str.contains(MARK, literal=True).any()  # the fingerprint is there
    assert not set(csv.get_column("mobile")) & set(people.get_column("mobile"))
    assert not set(csv.get_column("name")) & set(people.get_column("name"))
    # tokens and key ids are the application's own: the two recipients cannot join on them
    assert xa.key_id != xb.key_id
    assert not set(xa.frame.get_column("id_number__token")) & set(xb.frame.get_column("id_number__token"))
    manifest = json.loads((root / a / AS_OF.isoformat() / f"{a}.manifest.json").read_text(encoding="utf-8"))
    assert manifest["application"] == a and sorted(manifest["elements"]) == ["mobile", "name"]
    assert manifest["rows"] == people.height and manifest["key_id"] == xa.key_id and manifest["purpose"] == "社保待遇资格认证"
    assert set(manifest["masking"]) == {"id_number", "name", "mobile"}
    assert (root / a / AS_OF.isoformat() / f"{a}.xlsx").exists()
    audit = store.read_extracts(wh)
    assert audit.height == 2 and audit.get_column("leaks").to_list() == [0, 0]
    assert audit.filter(pl.col("application_id") == a).item(0, "rows") == people.height


def test_a_filter_limits_the_rows_and_a_refused_element_is_not_delivered(world) -> None:
    wh, cat, people, root = world
    a = sc.apply(wh, cat, requester="rsj", library="person", elements=["mobile", "name"], purpose="参保人员核验",
                 until=dt.date(2027, 12, 31), row_filter="insurance_status = '1'", at=AT).application["application_id"]
    sc.review(wh, a, dept="gaj", agree=False, note="姓名不予提供", at=AT)
    sc.review(wh, a, dept="rsj", agree=True, at=AT)
    sc.decide(wh, a, approve=True, by="王局", at=AT)
    x = write_extract(wh, cat, a, AS_OF, KEY, root)
    assert "name" not in x.frame.columns and "mobile" in x.frame.columns
    assert x.rows == people.filter(pl.col("insurance_status") == "1").height


def test_open_on_request_writes_k_anonymous_columns(world) -> None:
    wh, cat, people, root = world
    a = sc.apply(wh, cat, requester="李四", requester_type=RequesterType.citizen, kind=ApplicationKind.open,
                 library="person", elements=["gender", "birth_date"], purpose="人口结构研究",
                 until=dt.date(2027, 12, 31), at=AT, scenario="人口结构研究报告",
                 security_measures="仅研究组内部使用").application["application_id"]
    sc.review(wh, a, dept="gaj", agree=True, at=AT)
    sc.decide(wh, a, approve=True, by="王局", at=AT)
    x = write_extract(wh, cat, a, AS_OF, KEY, root)
    assert x.kanon_smallest is not None and x.kanon_smallest >= 5
    assert "id_number" not in x.frame.columns  # suppressed in open data
    assert x.frame.get_column("birth_date").str.len_chars().max() <= 9  # a year or a band, never a date


def _leak(src: Path, dest: Path, n: int, seed: int, drop: list[str], xlsx: bool = False) -> Path:
    frame = pl.read_csv(src, infer_schema=False).sample(n, seed=seed, shuffle=True)
    frame = frame.drop(drop).select(list(reversed([c for c in frame.columns if c not in drop])))
    if xlsx:
        wb = Workbook()
        ws = wb.active
        ws.append(frame.columns)
        for r in frame.iter_rows():
            ws.append(list(r))
        wb.save(dest)
    else:
        dest.write_bytes(frame.write_csv().encode("gb18030"))  # saved again as GBK by the leaker
    return dest


def test_trace_names_the_application_of_a_sampled_reordered_column_dropped_leak(world, tmp_path) -> None:
    wh, cat, people, root = world
    a = approved(wh, cat, "rsj", ["name", "mobile"], "社保待遇资格认证")
    b = approved(wh, cat, "mzj", ["name", "mobile"], "低保核对")
    for app in (a, b):
        write_extract(wh, cat, app, AS_OF, KEY, root)
    src_a, src_b = (root / x / AS_OF.isoformat() / f"{x}.csv" for x in (a, b))
    leak = _leak(src_a, tmp_path / "leak.csv", 100, 1, ["id_number__token", "_key_id", "name"])
    t = trace_file(wh, leak, KEY, actor="审计员")
    assert t.application is not None and t.application["application_id"] == a
    assert t.application["requester_name"] == "市人力社保局"
    assert any(a in line for line in t.lines())
    # the other application's extract is named as its own, never as a
    t = trace_file(wh, _leak(src_b, tmp_path / "leak-b.xlsx", 120, 2, ["mobile"], xlsx=True), KEY)
    assert t.application is not None and t.application["application_id"] == b
    # the key id column alone is evidence too, and names the same application
    t = trace_file(wh, _leak(src_a, tmp_path / "leak-k.csv", 150, 3, ["name", "mobile"]), KEY)
    assert t.key_id_application == a
    # no masked cell left, but the application's own tokens: named by the token column (given the catalogue)
    tok = _leak(src_a, tmp_path / "leak-t.csv", 100, 4, ["name", "mobile", "id_number", "_key_id"])
    assert trace_file(wh, tok, KEY).application is None
    t = trace_file(wh, tok, KEY, catalogue=cat)
    assert t.application["application_id"] == a and t.token_application == a
    assert "依据: 令牌列" in t.lines()[1]
    # a leak whose fingerprint was scrubbed (every mask character made plain) is not claimed
    scrubbed = tmp_path / "scrubbed.csv"
    scrubbed.write_text(src_a.read_text(encoding="utf-8").replace(MARK, PLAIN), encoding="utf-8")
    t = trace_file(wh, scrubbed, KEY)
    assert t.application is None and "抹去" in t.verdict.reason
    # a file of another key (another platform, or a forged pattern) is not claimed either
    t = trace_file(wh, src_a, PseudonymKey(b"some-other-platform-key-000000"))
    assert t.application is None
    traces = store.read_traces(wh)
    assert traces.height == 7 and traces.get_column("verdict").to_list()[:2] == ["identified", "identified"]


def test_revoked_and_expired_applications_are_not_delivered(world) -> None:
    wh, cat, _, _ = world
    a = approved(wh, cat, "rsj", ["mobile"], "认证")
    b = approved(wh, cat, "mzj", ["mobile"], "核对")
    assert sorted(sc.deliverable(wh, AS_OF).get_column("application_id")) == sorted([a, b])
    sc.revoke(wh, b, by="王局", note="停止")
    assert sc.deliverable(wh, AS_OF).get_column("application_id").to_list() == [a]
    assert sc.deliverable(wh, dt.date(2028, 1, 1)).is_empty()


def test_an_application_without_granted_elements_gets_no_extract(world) -> None:
    wh, cat, _, root = world
    a = sc.apply(wh, cat, requester="rsj", library="person", elements=["mobile"], purpose="x",
                 until=dt.date(2027, 12, 31), at=AT).application["application_id"]
    with pytest.raises(ExtractRefused):
        write_extract(wh, cat, a, AS_OF, KEY, root)


def test_tokens_join_the_share_layer_only_when_the_application_grants_linkage(world) -> None:
    wh, cat, _, root = world
    own = approved(wh, cat, "rsj", ["mobile"], "认证")
    linked = approved(wh, cat, "mzj", ["mobile"], "核对", linkage=True)
    x_own, x_linked = (write_extract(wh, cat, a, AS_OF, KEY, root) for a in (own, linked))
    assert x_linked.key_id == KEY.key_id and x_own.key_id != KEY.key_id
    shared = set(pseudonymise_ids(persons(400).get_column("id_number")))
    assert shared == set(x_linked.frame.get_column("id_number__token"))
    assert not shared & set(x_own.frame.get_column("id_number__token"))


def test_an_extract_that_would_publish_a_raw_identifier_is_refused_and_removed(world, tmp_path) -> None:
    """A catalogue that keeps 手机号码 in 有条件共享 output: the leak scanner finds the raw numbers in the
    extract, nothing stays on disk, and the audit records the finding."""
    wh, _, _, root = world
    folder = tmp_path / "catalog"
    shutil.copytree(DEMO, folder)
    main = folder / "catalogue.yaml"
    main.write_text(main.read_text(encoding="utf-8").replace(
        "sensitivity: 敏感, authority: rsj}", "sensitivity: 敏感, authority: rsj, masking: {restricted: keep}}"),
        encoding="utf-8")
    cat = load_catalogue(folder)
    a = approved(wh, cat, "rsj", ["mobile"], "认证")
    with pytest.raises(ExtractRefused, match="原始标识符"):
        write_extract(wh, cat, a, AS_OF, KEY, root)
    assert not (root / a / AS_OF.isoformat()).exists()
    audit = store.read_extracts(wh, a)
    assert audit.item(0, "leaks") > 0 and audit.item(0, "rows") == 0


def _catalogue(tmp_path: Path, old: str, new: str, fields: str = ""):
    """The demo catalogue with one line of its 人口库 changed (and ``fields`` added to 社会保险参保信息)."""
    folder = tmp_path / "catalog"
    shutil.copytree(DEMO, folder)
    main = folder / "catalogue.yaml"
    text = main.read_text(encoding="utf-8")
    assert old in text
    main.write_text(text.replace(old, new), encoding="utf-8")
    with (folder / "resources" / "rsj_sbcb.yaml").open("a", encoding="utf-8") as f:
        f.write(fields)
    return load_catalogue(folder)


def test_an_extract_whose_rows_give_the_id_number_back_is_refused_and_removed(world, tmp_path) -> None:
    """A catalogue that does not mark 出生日期 as derived from the ID number: the joint choice of masks
    cannot see the linkage and keeps the ID's default keep_first_last(6, 4) — exactly the 8 birth-date
    digits hidden — beside the full 出生日期. No single cell is a raw identifier; the row is. The scan
    rebuilds the numbers, the extract is refused, nothing stays on disk and the audit records it."""
    wh, _, people, root = world
    cat = _catalogue(tmp_path, "authority: gaj, derived_from_id: birth_date, quasi_identifier: true}",
                     "authority: gaj, quasi_identifier: true}")
    a = approved(wh, cat, "rsj", ["birth_date", "insurance_status"], "待遇资格核对")
    with pytest.raises(ExtractRefused, match="原始标识符") as err:
        write_extract(wh, cat, a, AS_OF, KEY, root)
    assert "id_number + birth_date" in str(err.value)  # the rebuilt-ID finding, masked
    assert not any(i in str(err.value) for i in people.get_column("id_number"))
    assert not (root / a / AS_OF.isoformat()).exists()
    audit = store.read_extracts(wh, a)
    assert audit.item(0, "leaks") >= people.height and audit.item(0, "rows") == 0
    # the demo catalogue marks it: the ID is masked keep_first_last(1, 2) there and the extract is written
    b = approved(wh, demo_catalogue(), "rsj", ["birth_date", "insurance_status"], "待遇资格核对")
    x = write_extract(wh, demo_catalogue(), b, AS_OF, KEY, root)
    assert x.policy.column("id_number").rule.spec == "keep_first_last(1, 2)" and x.rows == people.height


def test_granted_text_that_a_spreadsheet_would_run_as_a_formula_is_written_as_text(warehouse_url, tmp_path) -> None:
    """A text value of the base library that begins with = + - @ (CSV injection) is delivered with a
    leading quote in the CSV and as a text cell (never a formula) in the XLSX; a plain number kept as
    text and the numeric column stay as they are."""
    cat = _catalogue(tmp_path, "      - {code: insurance_status,",
                     "      - {code: pension, name: 养老金月额(元), type: decimal, authority: rsj}\n"
                     "      - {code: remark, name: 备注, type: string, authority: rsj}\n"
                     "      - {code: insurance_status,",
                     "  - {column: YLJ, element: pension}\n  - {column: BZ, element: remark}\n")
    wh = open_warehouse(warehouse_url)
    hyperlink = '=HYPERLINK("http://x","y")'  # a remark (the name of person 0 is another formula)
    remarks = [hyperlink, "@SUM(A1:A9)", "+86 571 8888", "-12.5", "正常"]
    people = persons(50).with_row_index("i").with_columns(
        pl.when(pl.col("i") == 0).then(pl.lit('=HYPERLINK("http://x","z")')).otherwise(pl.col("name")).alias("name"),
        pl.col("i").clip(upper_bound=len(remarks) - 1).replace_strict(dict(enumerate(remarks)),
                                                                      return_dtype=pl.String).alias("remark"),
        pl.when(pl.col("i") == 0).then(-12.5).otherwise(3000.25).alias("pension")).drop("i")
    write_base(wh, cat, people, SINCE)
    a = approved(wh, cat, "rsj", ["name", "remark", "pension"], "待遇发放核对")
    x = write_extract(wh, cat, a, AS_OF, KEY, tmp_path / "share")
    assert x.policy.column("remark").rule.spec == "keep" and x.policy.column("name").rule.spec == "keep_first(1)"
    csv = pl.read_csv(x.files[0], infer_schema=False)
    by_remark = dict(zip(csv.get_column("remark"), csv.get_column("pension"), strict=True))
    assert by_remark["'" + hyperlink] == "-12.5"  # the formula quoted; its row's number untouched
    assert {"'@SUM(A1:A9)", "'+86 571 8888", "-12.5", "正常"} <= set(by_remark)
    assert not csv.get_column("remark").str.contains(r"^[=+@]").any()
    names = csv.get_column("name")
    assert names.filter(names.str.starts_with("'=")).len() == 1  # 「=＊…」: the mask keeps the first character
    assert not names.str.contains(r"^[=+\-@]").any()
    assert set(csv.get_column("pension")) == {"-12.5", "3000.25"}  # no quote before a negative number

    ws = load_workbook(x.files[1])["数据"]
    header = [c.value for c in ws[1]]
    remark, pension, name = (header.index(c) for c in ("remark", "pension", "name"))
    rows = list(ws.iter_rows(min_row=2))
    assert len(rows) == people.height
    assert not any(c.data_type == "f" for r in rows for c in r)
    cells = {r[remark].value: r for r in rows}
    assert cells["'" + hyperlink][remark].data_type == "s"
    assert cells["'" + hyperlink][pension].data_type == "n" and cells["'" + hyperlink][pension].value == -12.5
    assert {"'@SUM(A1:A9)", "'+86 571 8888", "-12.5", "正常"} <= set(cells)
    assert all(r[pension].data_type == "n" and r[pension].value in (-12.5, 3000.25) for r in rows)
    assert sum(1 for r in rows if str(r[name].value).startswith("'=")) == 1
    wh.dispose()
