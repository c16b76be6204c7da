"""标准层 expressions: full-width folding, dates in departments' formats, numbers, code mapping."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import polars as pl
import pytest

from catalog.normalize import (
    DATE_FORMATS,
    halfwidth,
    map_codes,
    parse_date,
    parse_datetime,
    parse_decimal,
    parse_integer,
)

ALL_DATE_FORMATS = list(DATE_FORMATS)
JAN31 = dt.date(2024, 1, 31)


def run(fn: Callable[[pl.Expr], pl.Expr], values: list[str | None]) -> list:
    """Evaluate an expression builder over a String column of ``values``."""
    frame = pl.DataFrame({"v": pl.Series(values, dtype=pl.String)})
    return frame.select(fn(pl.col("v")).alias("out")).to_series().to_list()


# --- halfwidth ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("ＡＢＣ１２３", "ABC123"),
        ("ａｂｃ！？（）", "abc!?()"),
        ("张三\u3000", "张三"),
        ("\u3000 张\u3000三 ", "张 三"),
        ("～＠＃", "~@#"),
        ("２０２４年１月３１日", "2024年1月31日"),
        ("已是半角", "已是半角"),
        ("", None),
        ("\u3000\u3000", None),
        ("  ", None),
        (None, None),
    ],
)
def test_halfwidth(raw: str | None, expected: str | None) -> None:
    assert run(halfwidth, [raw]) == [expected]


def test_halfwidth_covers_the_whole_fullwidth_ascii_block() -> None:
    fullwidth = "".join(chr(c) for c in range(0xFF01, 0xFF5F))
    ascii_ = "".join(chr(c) for c in range(0x21, 0x7F))
    assert run(halfwidth, [fullwidth]) == [ascii_]


# --- dates ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "raw", ["20240131", "2024-01-31", "2024/01/31", "2024/1/31", "2024年01月31日", "2024年1月31日"]
)
def test_parse_date_accepts_the_four_department_formats(raw: str) -> None:
    assert run(lambda e: parse_date(e, ALL_DATE_FORMATS), [raw]) == [JAN31]


def test_parse_date_accepts_missing_zero_padding() -> None:
    values = ["2024/1/5", "2024-1-5", "2024年1月5日", "2024/12/5", "2024年12月5日"]
    expected = [dt.date(2024, 1, 5)] * 3 + [dt.date(2024, 12, 5)] * 2
    assert run(lambda e: parse_date(e, ALL_DATE_FORMATS), values) == expected


def test_unpadded_values_parse_inside_a_large_padded_column() -> None:
    # Guards against a fixed-width fast path that would only work on the majority shape.
    values = ["2024/01/31"] * 2000 + ["2024/1/31", "2024/1/5"]
    out = run(lambda e: parse_date(e, ["%Y/%m/%d"]), values)
    assert out[:2000] == [JAN31] * 2000
    assert out[2000:] == [JAN31, dt.date(2024, 1, 5)]


@pytest.mark.parametrize(
    "raw",
    [
        "2024-02-30",
        "20240230",
        "2023/2/29",
        "2024年13月1日",
        "2024-01-32",
        "2024-01-31x",  # trailing text
        "24/1/31",  # two-digit year is not read as the year 24
        "2024.01.31",  # format not declared
        "abc",
        "",
        None,
    ],
)
def test_invalid_dates_are_null(raw: str | None) -> None:
    assert run(lambda e: parse_date(e, ALL_DATE_FORMATS), [raw]) == [None]


def test_leap_day_is_a_date() -> None:
    assert (
        run(lambda e: parse_date(e, ALL_DATE_FORMATS), ["2024-02-29", "20240229"])
        == [dt.date(2024, 2, 29)] * 2
    )


def test_parse_date_uses_only_the_declared_formats_in_order() -> None:
    values = ["2024-01-31", "20240131", "02/03/2024"]
    assert run(lambda e: parse_date(e, ["%Y-%m-%d"]), values) == [JAN31, None, None]
    assert run(lambda e: parse_date(e, ["%d/%m/%Y", "%m/%d/%Y"]), values[2:]) == [dt.date(2024, 3, 2)]
    assert run(lambda e: parse_date(e, ["%m/%d/%Y", "%d/%m/%Y"]), values[2:]) == [dt.date(2024, 2, 3)]


def test_parse_date_returns_date_dtype() -> None:
    frame = pl.DataFrame({"v": ["2024-01-31"]}).select(parse_date(pl.col("v"), ALL_DATE_FORMATS))
    assert frame.dtypes == [pl.Date]


def test_parse_date_needs_a_format() -> None:
    with pytest.raises(ValueError):
        parse_date(pl.col("v"), [])


def test_parse_datetime() -> None:
    formats = ["%Y-%m-%d %H:%M:%S", "%Y%m%d%H%M%S", "%Y/%m/%d %H:%M", "%Y-%m-%d"]
    values = [
        "2024-01-31 08:05:03",
        "20240131080503",
        "2024/1/31 8:05",
        "2024-1-31 8:5:3",
        "2024-01-31",
        "2024-01-31 24:00:00",
        "2024-02-30 08:00:00",
        None,
    ]
    assert run(lambda e: parse_datetime(e, formats), values) == [
        dt.datetime(2024, 1, 31, 8, 5, 3),
        dt.datetime(2024, 1, 31, 8, 5, 3),
        dt.datetime(2024, 1, 31, 8, 5),
        dt.datetime(2024, 1, 31, 8, 5, 3),
        dt.datetime(2024, 1, 31),
        None,
        None,
        None,
    ]
    frame = pl.DataFrame({"v": values}).select(parse_datetime(pl.col("v"), formats))
    assert frame.dtypes == [pl.Datetime("us")]


# --- numbers --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("1234.5", 1234.5),
        ("1,234.50", 1234.5),
        ("1，234．5", 1234.5),
        ("１２３４", 1234.0),
        (" -0.25 ", -0.25),
        ("+3", 3.0),
        (".5", 0.5),
        ("1e3", 1000.0),
        ("12,345,678", 12345678.0),
        ("nan", None),
        ("inf", None),
        ("1.2.3", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_decimal(raw: str | None, expected: float | None) -> None:
    assert run(parse_decimal, [raw]) == [expected]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("42", 42),
        ("1,234", 1234),
        ("１２３", 123),
        ("-7", -7),
        ("007", 7),
        ("12.0", 12),  # spreadsheets export integers as floats
        ("12.5", None),
        ("1e3", None),
        ("abc", None),
        ("", None),
        (None, None),
    ],
)
def test_parse_integer(raw: str | None, expected: int | None) -> None:
    assert run(parse_integer, [raw]) == [expected]


def test_number_dtypes() -> None:
    frame = pl.DataFrame({"v": ["1"]}).select(
        parse_decimal(pl.col("v")).alias("d"), parse_integer(pl.col("v")).alias("i")
    )
    assert frame.dtypes == [pl.Float64, pl.Int64]


# --- code mapping ---------------------------------------------------------------------------------


def test_map_codes_translates_known_and_keeps_unknown_codes() -> None:
    mapping = {"M": "1", "F": "2", "男": "1", "女": "2"}
    values = ["M", "F", "男", "女", "9", "X", None]
    assert run(lambda e: map_codes(e, mapping), values) == ["1", "2", "1", "2", "9", "X", None]


def test_map_codes_is_simultaneous_not_chained() -> None:
    assert run(lambda e: map_codes(e, {"1": "2", "2": "1"}), ["1", "2", "3"]) == ["2", "1", "3"]


def test_map_codes_with_empty_mapping_is_identity() -> None:
    assert run(lambda e: map_codes(e, {}), ["1", None]) == ["1", None]


def test_full_width_dates_parse_after_halfwidth() -> None:
    values = ["２０２４年１月３１日", "\u3000２０２４－０１－３１ "]
    assert run(lambda e: parse_date(halfwidth(e), ALL_DATE_FORMATS), values) == [JAN31, JAN31]


def test_parse_date_evaluates_its_input_once() -> None:
    composed = parse_date(halfwidth(pl.col("marker")), ALL_DATE_FORMATS)
    assert str(composed).count('col("marker")') == 1
