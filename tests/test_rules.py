"""Quality rules: one known bad row per rule gives exactly that failing row, and Great
Expectations counts the same failures as the polars predicates."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import polars as pl
import pytest

from catalog.loader import DEMO_CATALOGUE, load_catalogue
from quality.expectations import validate
from quality.rules import Kind, Severity, evaluated, failing, resource_rules
from tests.citykit import id_number, uscc

DAY = dt.date(2026, 11, 21)
CAT = load_catalogue(DEMO_CATALOGUE)

GOOD_ID = id_number("339902", "19800101", 11)  # odd sequence: male
GOOD_ID2 = id_number("339903", "19920315", 22)


def sbcb_rows() -> pl.DataFrame:
    """rsj_sbcb rows after the 标准层: row 1 clean, every later row breaks exactly one rule."""
    rows = [
        (1, GOOD_ID, "张三", "1", dt.date(1980, 1, 1), "13812345678", "1"),
        (2, GOOD_ID2[:-1] + ("0" if GOOD_ID2[-1] != "0" else "1"), "李四", "2", dt.date(1992, 3, 15), "13912345678", "1"),
        (3, id_number("339904", "19700101", 33), None, "1", dt.date(1970, 1, 1), "13712345678", "1"),
        (4, id_number("339904", "19700202", 35), "王五", "2", dt.date(1970, 2, 2), "13712345678", "1"),
        (5, id_number("339904", "19700303", 37), "赵六", "1", dt.date(1971, 3, 3), "13712345678", "1"),
        (6, id_number("339904", "19700404", 39), "钱七", "1", dt.date(1970, 4, 4), "1371234567", "1"),
        (7, id_number("339904", "19700505", 41), "孙八", "1", dt.date(1970, 5, 5), "13712345678", "7"),
        (8, id_number("339904", "19700606", 43), "周九", "1", dt.date(2030, 1, 1), "13712345678", "1"),
        (9, id_number("339904", "19700707", 45), "吴十", "1", dt.date(1970, 7, 7), "13712345678", "1"),
        (10, id_number("339904", "19700707", 45), "吴十", "1", dt.date(1970, 7, 7), "13712345678", "1"),
        (11, None, "郑某", "1", dt.date(1970, 8, 8), "13712345678", "1"),
    ]
    return pl.DataFrame(rows, schema={"_row_no": pl.Int64, "id_number": pl.String, "name": pl.String,
                                      "gender": pl.String, "birth_date": pl.Date, "mobile": pl.String,
                                      "insurance_status": pl.String}, orient="row")


EXPECTED = {  # rule id → the rows that fail it
    "id_number.not_null": [11],
    "id_number.unique": [9, 10],
    "id_number.id_number": [2],
    "name.not_null": [3],
    "gender.code_list": [],
    "gender.id_gender": [4],  # sequence 35 is odd (male) but gender says 2
    "birth_date.date_range": [8],
    "birth_date.id_birth_date": [5, 8],
    "mobile.mobile": [6],
    "insurance_status.code_list": [7],
}


def test_every_rule_of_a_resource_is_derived_from_the_catalogue() -> None:
    rules = {r.id: r for r in resource_rules(CAT, CAT.resource("rsj_sbcb"), DAY)}
    assert set(rules) == set(EXPECTED)
    assert rules["id_number.id_number"].severity == Severity.blocking  # the key
    assert rules["mobile.mobile"].severity == Severity.warning
    assert rules["gender.id_gender"].columns == ("gender", "id_number")
    assert rules["insurance_status.code_list"].params["values"] == ("1", "2", "3")
    assert rules["mobile.mobile"].dimension.value == "规范性"
    assert rules["birth_date.id_birth_date"].dimension.value == "准确性"


@pytest.mark.parametrize("rule_id", sorted(EXPECTED))
def test_a_known_bad_row_gives_exactly_its_failing_key(rule_id: str) -> None:
    frame = sbcb_rows()
    rule = next(r for r in resource_rules(CAT, CAT.resource("rsj_sbcb"), DAY) if r.id == rule_id)
    assert frame.filter(failing(rule)).get_column("_row_no").to_list() == EXPECTED[rule_id]


def test_great_expectations_counts_the_same_failures_as_polars() -> None:
    frame = sbcb_rows()
    rules = resource_rules(CAT, CAT.resource("rsj_sbcb"), DAY)
    results, raw = validate(frame, rules, "sbcb_test")
    assert raw["statistics"]["evaluated_expectations"] == len(rules)
    for g in results:
        rule = next(r for r in rules if r.id == g.rule_id)
        n, u = frame.select(evaluated(rule).sum().alias("n"), failing(rule).sum().alias("u")).row(0)
        assert (g.evaluated, g.failed) == (n, u), rule.id
        assert g.failed == len(EXPECTED[rule.id])


def test_uscc_and_pattern_rules_agree_between_engines() -> None:
    good = [uscc("91339902MA0000001"), uscc("91339903MA000000X"[:17])]
    bad_check = good[0][:-1] + ("0" if good[0][-1] != "0" else "1")
    frame = pl.DataFrame({
        "_row_no": [1, 2, 3, 4, 5],
        "uscc": [good[0], good[1], bad_check, "91339902MA00000I1", "12345"],
        "org_name": ["甲", "乙", "丙", "丁", "戊"],
        "legal_rep_id": [GOOD_ID, None, "123", GOOD_ID2, GOOD_ID2.lower()],
        "business_status": ["1", "2", "9", None, "1"],
    })
    res = CAT.resource("scjg_qydj")
    rules = [r for r in resource_rules(CAT, res, DAY) if set(r.columns) <= set(frame.columns)]
    fails = {r.id: frame.filter(failing(r)).get_column("_row_no").to_list() for r in rules}
    assert fails["uscc.uscc"] == [3, 4, 5]
    assert fails["legal_rep_id.id_number"] == [3]  # lower-case x is normalised before, not here
    assert fails["business_status.code_list"] == [3]
    results, _ = validate(frame, rules, "qydj_test")
    for g in results:
        rule = next(r for r in rules if r.id == g.rule_id)
        assert g.failed == len(fails[rule.id]), rule.id


def test_rules_cover_the_kinds_the_catalogue_implies() -> None:
    kinds = {r.kind for res in CAT.resources for r in resource_rules(CAT, res, DAY)}
    assert kinds >= {Kind.not_null, Kind.unique, Kind.id_number, Kind.uscc, Kind.mobile, Kind.code_list,
                     Kind.pattern, Kind.date_range, Kind.id_birth_date, Kind.id_gender}


def test_each_validation_gets_a_data_docs_page_with_counts_and_no_failing_values(tmp_path) -> None:
    frame = sbcb_rows()
    rules = resource_rules(CAT, CAT.resource("rsj_sbcb"), DAY)
    page = tmp_path / "docs" / "rsj_sbcb.20261121.1.html"
    results, raw = validate(frame, rules, "sbcb_docs", docs=page)
    assert raw["data_docs"] == str(page.resolve()) and page.exists()
    html = page.read_text(encoding="utf-8")
    # GX's own validation page: every expectation of the suite, with its unexpected count
    text = " ".join(re.sub(r"<[^>]+>", " ", html).split())
    assert "Expectation Suite: sbcb_docs" in text and f"Evaluated Expectations {len(rules)}" in text
    for phrase in ("values must never be null", "values must be unique", "expect_column_values_to_be_valid_id_number",
                   "2 unexpected values found. 20% of 11 total rows"):
        assert phrase in text
    # the failing values themselves (an ID with a broken check digit, a short mobile) are not on it
    bad_id = frame.filter(pl.col("_row_no") == 2).item(0, "id_number")
    for value in (bad_id, "1371234567", GOOD_ID):
        assert value not in html


def test_a_data_docs_page_loads_its_styles_and_scripts_from_local_copies_not_a_cdn(tmp_path) -> None:
    """A data bureau's closed network reaches no CDN: every stylesheet and script GX links is a local
    copy beside the pages, linked by a relative path (it opens over HTTP and as a file alike)."""
    import great_expectations

    from quality.docs_assets import CDN, external_assets

    frame = sbcb_rows()
    rules = resource_rules(CAT, CAT.resource("rsj_sbcb"), DAY)
    page = tmp_path / "gx_docs" / "rsj_sbcb" / "rsj_sbcb.20261121.1.html"
    validate(frame, rules, "sbcb_docs", docs=page)
    html = page.read_text(encoding="utf-8")
    assert external_assets(html) == []
    local = re.findall(r'(?:src|href)="(\.\./_static/[^"]+)"', html)
    assert "../_static/bootstrap/bootstrap.min.css" in local and "../_static/fontawesome/css/all.min.css" in local
    assert all((page.parent / link).is_file() for link in local)
    assert (tmp_path / "gx_docs" / "_static" / "fontawesome" / "webfonts" / "fa-solid-900.woff2").is_file()
    assert "integrity=" not in html and "../_static/images/logo-long.png" in html  # GX's logo, from GX's package
    # every CDN link in GX's own templates has a local copy (an upgrade of GX that names new ones fails here)
    named = set()
    for j2 in (Path(great_expectations.__file__).parent / "render" / "view" / "templates").glob("*.j2"):
        named |= set(external_assets(j2.read_text(encoding="utf-8")))
    assert named and named <= set(CDN), sorted(named - set(CDN))


def test_a_null_field_is_neither_a_parse_failure_nor_a_lost_row() -> None:
    """A NULL (not delivered) date or text field must not make the row vanish from the std stage:
    every delivered row is accepted or quarantined, and only the unparseable date is quarantined."""
    from guiji.standardize import standardize
    from warehouse.ods import ods_schema

    res = CAT.resource("wjw_csyxzm")
    rows = [  # CSYXZMBH, XSESFZH, XSEXM, XSEXB, CSRQ
        ("Q1", GOOD_ID, "张三", "男", "1980-01-01"),
        ("Q2", GOOD_ID2, None, "女", None),  # name and birth date not delivered
        ("Q3", id_number("339904", "19700101", 33), "王五", None, "1970-13-45"),  # a date that cannot parse
    ]
    columns = ["CSYXZMBH", "XSESFZH", "XSEXM", "XSEXB", "CSRQ"]
    ods = pl.DataFrame([dict(zip(columns, r, strict=True)) | {"_row_no": i + 1} for i, r in enumerate(rows)],
                       schema={c: t for c, t in ods_schema(res).items() if c in [*columns, "_row_no"]}).with_columns(
        pl.lit(None, pl.String).alias("_error"), pl.lit(None, pl.String).alias("_raw"))
    out = standardize(ods, CAT, res, DAY)
    assert out.accepted.get_column("_row_no").to_list() == [1, 2]
    assert out.quarantine.select("_row_no", "reason_code").rows() == [(3, "bad_date")]


def _page_text(path: Path) -> str:
    """The text a reader of an HTML page is shown: its text nodes, not its markup (GX gives every
    collapsible block a random element id, which may hold any run of digits) nor its scripts and styles."""
    from html.parser import HTMLParser

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.hidden = 0

        def handle_starttag(self, tag: str, attrs) -> None:
            self.hidden += tag in ("script", "style")

        def handle_endtag(self, tag: str) -> None:
            self.hidden -= tag in ("script", "style")

        def handle_data(self, data: str) -> None:
            if not self.hidden:
                self.parts.append(data)

    reader = Text()
    reader.feed(path.read_text(encoding="utf-8"))
    return "\n".join(reader.parts)


def test_a_batch_validated_in_slices_keeps_none_of_them_once_each_is_validated(monkeypatch, tmp_path) -> None:
    """GX keeps every batch a data source's execution engine loaded (and the metrics on it) while the
    data source lives: validated slice by slice in one data source, a 10 M-person batch stayed whole in
    pandas form. Each slice's frame is let go once validated, and slices of the same shape that follow
    one another are each counted on their own rows (a metric cached for an earlier slice is never reused)."""
    import gc
    import weakref

    from great_expectations.exceptions import DataContextError

    import quality.expectations as qe

    given = []
    to_gx = qe.gx_frame

    def watched(frame: pl.DataFrame, rules: list):
        pdf = to_gx(frame, rules)
        given.append(weakref.ref(pdf))
        return pdf

    monkeypatch.setattr(qe, "gx_frame", watched)
    rows = sbcb_rows()
    rules = resource_rules(CAT, CAT.resource("rsj_sbcb"), DAY)
    clean = rows.filter(pl.col("_row_no") == 1)
    v = qe.Validation(rules, "sbcb_slices")
    for part in [clean, rows.filter(pl.col("_row_no") == 6), clean, rows.filter(pl.col("_row_no") == 2)]:
        v.add(part)
        gc.collect()
        assert all(ref() is None for ref in given), "a validated slice is still held"
    results = {g.rule_id: (g.evaluated, g.failed) for g in v.finish()[0]}
    assert results["mobile.mobile"] == (4, 1) and results["id_number.id_number"] == (4, 1)
    assert results["name.not_null"] == (4, 0)
    names = list(qe._context().data_sources.all())
    assert not [n for n in names if "sbcb_slices" in n], names
    # the Data Docs page shows the slice's data source as the batch id: its name, never random digits a
    # reader (or the UI test's scan) takes for a mobile or ID number
    page = _page_text(qe.write_data_docs(v.result, tmp_path / "docs" / "rsj_sbcb" / "page.html"))
    assert "ds_sbcb_slices_slice1" in page
    assert not re.search(r"(?<!\d)(1[3-9]\d{9}|\d{17}[\dXx])(?!\d)", page)
    with pytest.raises((KeyError, ValueError, DataContextError)):
        qe._context().data_sources.get("ds_sbcb_slices")
