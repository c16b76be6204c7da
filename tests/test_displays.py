"""What people read: asset previews and check samples (Markdown metadata) mask an ID number jointly
with the birth date beside it and show every value in a code span; spreadsheet cells never start a
formula."""

from __future__ import annotations

import datetime as dt

import polars as pl
import sqlalchemy as sa

from assets.checks import std_check_results
from assets.factory import preview
from catalog.loader import DEMO_CATALOGUE, load_catalogue
from desensitize.display import md_cell, md_code, spreadsheet_safe, spreadsheet_text
from desensitize.leaks import Needles, scan_text
from quality.results import read_failures
from tests import citykit
from tests.citykit import PEOPLE
from tests.test_pipeline import run_day
from warehouse.store import Warehouse

DAY = dt.date(2026, 10, 9)
PID = citykit.id_number("339902", "19350319", 814)  # a 瓯江市 number: 339902********8144 under a 6,4 mask


def person_frame() -> pl.DataFrame:
    return pl.DataFrame({"id_number": [PID], "name": ["欧阳娜娜"], "gender": ["2"],
                         "birth_date": [dt.date(1935, 3, 19)], "mobile": ["13812345678"]})


def test_a_preview_beside_a_full_birth_date_masks_the_id_number_the_hutool_way() -> None:
    lib = load_catalogue(DEMO_CATALOGUE).library("person")
    elements = {e.code: e for e in lib.elements}
    md = preview(person_frame(), elements).value
    assert PID[:6] + "********" + PID[-4:] == "339902********8144"
    assert f"| `3{'*' * 15}44` | `欧***` | `2` | `1935-03-19` | `138****5678` |" in md
    assert scan_text(md, Needles.of(ids=[PID]), "预览") == []
    # without the birth date in the row the number keeps its region and sequence digits
    assert "| `339902********8144` | `欧***` |" in preview(person_frame().drop("birth_date"), elements).value


def test_markdown_values_are_code_spans_so_a_mask_never_turns_into_bold_text() -> None:
    assert md_code("339902********8144") == "`339902********8144`"
    assert md_code("a`b") == "``a`b``" and md_code("`x`") == "`` `x` ``" and md_code("") == ""
    assert md_cell("a|b") == "`a\\|b`" and md_cell(None) == "" and md_cell("x\ny") == "`x y`"
    # the preview of a stored share table (already masked) shows the same: no asterisk is markup
    md = preview(pl.DataFrame({"pid": ["339902********8144"], "note": ["_x_ | *y*"]}), {}).value
    assert md.splitlines()[2] == "| `339902********8144` | `_x_ \\| *y*` |"


def test_spreadsheet_text_cells_that_would_start_a_formula_get_a_leading_quote() -> None:
    evil = '=HYPERLINK("http://evil","x")'
    assert [spreadsheet_text(v) for v in (evil, "+1+2", "-2+3+cmd|' /C calc'!A0", "@SUM(A1)", "\tx", "\rx")] == [
        "'" + evil, "'+1+2", "'-2+3+cmd|' /C calc'!A0", "'@SUM(A1)", "'\tx", "'\rx"]
    # numbers stay numbers: a numeric column is never touched, a number written as text neither
    assert [spreadsheet_text(v) for v in ("-12.5", "+8613812345678", "王***", "1992-**-**")] == [
        "-12.5", "+8613812345678", "王***", "1992-**-**"]
    frame = pl.DataFrame({"title": [evil, "-1", None], "capital": [-88.0, 1.5, None], "n": [-1, 2, 3]})
    safe = spreadsheet_safe(frame)
    assert safe.get_column("title").to_list() == ["'" + evil, "-1", None]
    assert safe.select("capital", "n").equals(frame.select("capital", "n"))


def test_a_check_sample_never_shows_a_masked_id_beside_the_birth_date_it_hides(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY)
    elder = citykit.id_number("370202", "18950501", 11)  # a valid number; 1895 fails the date range
    rows = [[p, n, s, b] for p, n, s, b in PEOPLE] + [[elder, "钱老", "M", "18950501"]]
    citykit.write_csv(landing / "hz" / f"{DAY:%Y%m%d}" / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"],
                      rows)
    run_day(warehouse, cat, landing, DAY)
    batch = f"huzheng_renkou.{DAY:%Y%m%d}.1"
    schema = {"rule_id": pl.String(), "label": pl.String(), "dimension": pl.String(), "severity": pl.String(),
              "evaluated": pl.Int64(), "failed": pl.Int64()}
    with warehouse.engine.connect() as conn:
        failures = read_failures(warehouse, conn, batch, 200)
        counts = warehouse.read(conn, f"SELECT {', '.join(schema)} FROM {warehouse.qualified('quality', 'rule_results')}"
                                      " WHERE batch_id = :b", schema, {"b": batch})
    checks = {c.check_name: c for c in std_check_results(cat.resource("huzheng_renkou"), counts, failures, None)}
    sample = checks["accuracy"].metadata["不通过样例(已脱敏)"].value
    # the key keeps region and sequence digits; the birth date beside it shows only its year
    assert f"| `dob.date_range` | `{elder[:6]}********{elder[-4:]}` | `1895-**-**` |" in sample
    assert "1895-05-01" not in sample and elder not in sample
    needles = Needles.from_warehouse(warehouse, cat)
    assert len(needles.ids) == 4 and scan_text(sample, needles, "不通过样例") == []
    with warehouse.engine.connect() as conn:  # what the table of failing records keeps is masked the same way
        stored = conn.execute(sa.text(f"SELECT entity_key_masked, value_masked FROM "
                                      f"{warehouse.qualified('quality', 'failures')} WHERE rule_id = 'dob.date_range'"))
        assert stored.all() == [(f"{elder[:6]}********{elder[-4:]}", "1895-**-**")]
