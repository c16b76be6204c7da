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
from openpyxl import Workbook

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
