"""Identifier checks: vectorised expressions and scalar twins agree on the spec's vectors."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import numpy as np
import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.identifiers import (
    ID_CHECK_CHARS,
    USCC_ALPHABET,
    convert_id15,
    convert_id15_scalar,
    id_check_chars_np,
    id_number_birth_date,
    id_number_check,
    id_number_check_char,
    id_number_gender,
    id_number_is_valid,
    id_number_valid,
    is_id15,
    mobile_is_valid,
    mobile_valid,
    normalize_id_number,
    normalize_mobile,
    normalize_uscc,
    org_code_is_valid,
    org_code_valid,
    uscc_check,
    uscc_check_char,
    uscc_check_chars_np,
    uscc_is_valid,
    uscc_valid,
)

ID_VALID = ["11010519491231002X", "440524188001010014"]
USCC_VALID = ["91350100M000100Y43", "91110108551385082Q"]
ORG_VALID = [u[8:17] for u in USCC_VALID]  # M000100Y4, 551385082
TODAY = dt.date(2025, 6, 30)


def run(fn: Callable[[pl.Expr], pl.Expr], values: list[str | None]) -> list:
    """Evaluate an expression builder over a String column of ``values``."""
    frame = pl.DataFrame({"v": pl.Series(values, dtype=pl.String)})
    return frame.select(fn(pl.col("v")).alias("out")).to_series().to_list()


def id_valid_vec(values: list[str | None], today: dt.date | None = TODAY) -> list:
    return run(lambda e: id_number_is_valid(e, today=today), values)


def with_check(body17: str) -> str:
    return body17 + id_number_check(body17)


def substitutions(value: str, alphabet: str, positions: list[int] | None = None) -> list[str]:
    """Every value differing from ``value`` in exactly one character drawn from ``alphabet``."""
    out = []
    for i in positions if positions is not None else range(len(value)):
        out += [value[:i] + c + value[i + 1 :] for c in alphabet if c != value[i]]
    return out


# --- 公民身份号码 ---------------------------------------------------------------------------------


def test_spec_id_numbers_are_valid_in_both_forms() -> None:
    assert id_valid_vec(ID_VALID) == [True, True]
    assert [id_number_valid(s, today=TODAY) for s in ID_VALID] == [True, True]
    # default ``today`` is the real date; both vectors are long in the past
    assert id_valid_vec(ID_VALID, today=None) == [True, True]
    assert all(id_number_valid(s) for s in ID_VALID)


def test_check_character_of_spec_vectors() -> None:
    assert run(id_number_check_char, [s[:17] for s in ID_VALID]) == ["X", "4"]
    assert [id_number_check(s[:17]) for s in ID_VALID] == ["X", "4"]


def test_check_char_is_null_unless_17_digits() -> None:
    assert run(id_number_check_char, ["1101051949123100", "1101051949123100A", None]) == [None, None, None]
    with pytest.raises(ValueError):
        id_number_check("1101051949123100")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("11010519491231002x", "11010519491231002X"),
        (" 110105 19491231 002X\t", "11010519491231002X"),
        ("１１０１０５１９４９１２３１００２Ｘ", "11010519491231002X"),
        ("１１０１０５１９４９１２３１００２ｘ", "11010519491231002X"),
        ("\u3000440524188001010014\u3000", "440524188001010014"),
        ("   ", None),
        (None, None),
    ],
)
def test_normalize_id_number(raw: str | None, expected: str | None) -> None:
    assert run(normalize_id_number, [raw]) == [expected]


def test_lower_case_x_and_full_width_are_valid_after_normalisation() -> None:
    raw = [
        "11010519491231002x",
        "１１０１０５１９４９１２３１００２ｘ",
        "４４０５２４１８８００１０１００１４",
    ]
    assert run(lambda e: id_number_is_valid(normalize_id_number(e), today=TODAY), raw) == [True, True, True]
    # without normalisation the lower-case x is a format error
    assert id_valid_vec(["11010519491231002x"]) == [False]
    assert id_number_valid("11010519491231002x", today=TODAY) is False


def test_single_character_corruptions_of_id_numbers_are_invalid() -> None:
    corrupted = [c for s in ID_VALID for c in substitutions(s, "0123456789X")]
    assert len(corrupted) == 2 * (17 * 10 + 10)  # X in the body is also a corruption
    assert set(id_valid_vec(corrupted)) == {False}
    assert not any(id_number_valid(c, today=TODAY) for c in corrupted)


@pytest.mark.parametrize(
    "value",
    [
        "11010519491231002",  # 17 characters
        "11010519491231002X1",  # 19 characters
        "1101051949123100 X",
        "X10105194912310021",
        "110105194902300023",  # 1949-02-30 is not a date (check char is right for the digits)
        "",
    ],
)
def test_malformed_id_numbers_are_invalid(value: str) -> None:
    if len(value) == 18 and value[:17].isdigit():
        value = with_check(value[:17])  # isolate the date error from the checksum
    assert id_valid_vec([value]) == [False]
    assert id_number_valid(value, today=TODAY) is False


def test_null_id_number_gives_null() -> None:
    assert id_valid_vec([None]) == [None]
    assert run(id_number_birth_date, [None]) == [None]
    assert run(id_number_gender, [None]) == [None]


def test_birth_date_in_the_future_is_invalid() -> None:
    tomorrow = TODAY + dt.timedelta(days=1)
    value = with_check("110105" + tomorrow.strftime("%Y%m%d") + "001")
    assert id_valid_vec([value]) == [False]
    assert id_number_valid(value, today=TODAY) is False
    # the same number is fine once that day has come
    assert id_valid_vec([value], today=tomorrow) == [True]
    assert id_number_valid(value, today=tomorrow) is True
    # 2100-01-01 is in the future under the real clock too
    assert id_valid_vec([with_check("11010521000101001")], today=None) == [False]


def test_birth_date_before_1850_is_invalid() -> None:
    old, oldest = with_check("11010518491231001"), with_check("11010518500101001")
    assert id_valid_vec([old, oldest]) == [False, True]
    assert [id_number_valid(old, today=TODAY), id_number_valid(oldest, today=TODAY)] == [False, True]


def test_birth_date_and_gender_extraction() -> None:
    values = [*ID_VALID, with_check("11010519490230001"), "1101051949123100", None]
    assert run(id_number_birth_date, values) == [dt.date(1949, 12, 31), dt.date(1880, 1, 1), None, None, None]
    # GB/T 2261.1: 1 male (odd 17th digit), 2 female (even)
    assert run(id_number_gender, values) == ["2", "1", "1", None, None]


def test_birth_date_dtype_is_date() -> None:
    frame = pl.DataFrame({"v": ID_VALID}).select(id_number_birth_date(pl.col("v")))
    assert frame.dtypes == [pl.Date]


def test_convert_15_digit_numbers() -> None:
    values = [
        "110105491231002",
        "440524800101001",
        "11010519491231002X",
        "11010549123100",
        "11010549123100A",
        None,
    ]
    expected = [
        "11010519491231002X",
        with_check("44052419800101001"),
        "11010519491231002X",
        "11010549123100",
        "11010549123100A",
        None,
    ]
    assert run(convert_id15, values) == expected
    assert [convert_id15_scalar(v) for v in values[:-1]] == expected[:-1]
    assert run(is_id15, values) == [True, True, False, False, False, None]
    assert id_valid_vec(run(convert_id15, values[:2])) == [True, True]


# --- 统一社会信用代码 -------------------------------------------------------------------------------


def test_spec_usccs_are_valid_in_both_forms() -> None:
    assert run(uscc_is_valid, USCC_VALID) == [True, True]
    assert [uscc_valid(s) for s in USCC_VALID] == [True, True]
    assert run(uscc_check_char, [s[:17] for s in USCC_VALID]) == ["3", "Q"]
    assert [uscc_check(s[:17]) for s in USCC_VALID] == ["3", "Q"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("91350100m000100y43", "91350100M000100Y43"),
        (" 9111 0108 5513 8508 2Q ", "91110108551385082Q"),
        ("９１１１０１０８５５１３８５０８２ｑ", "91110108551385082Q"),
        ("９１３５０１００Ｍ０００１００Ｙ４３", "91350100M000100Y43"),
        ("", None),
        (None, None),
    ],
)
def test_normalize_uscc(raw: str | None, expected: str | None) -> None:
    assert run(normalize_uscc, [raw]) == [expected]
    if expected is not None:
        assert run(lambda e: uscc_is_valid(normalize_uscc(e)), [raw]) == [True]


def test_single_character_corruptions_of_usccs_are_invalid() -> None:
    corrupted = [c for s in USCC_VALID for c in substitutions(s, USCC_ALPHABET + "IOSVZ")]
    assert set(run(uscc_is_valid, corrupted)) == {False}
    assert not any(uscc_valid(c) for c in corrupted)


@pytest.mark.parametrize(
    "value",
    [
        "9135010M000100Y43",  # 17 characters
        "91350100M000100Y433",
        "9135A100M000100Y43",  # letter in the region code
        "91350100I000100Y43",  # I is not in the alphabet
        "91350100m000100y43",  # not normalised
    ],
)
def test_malformed_usccs_are_invalid(value: str) -> None:
    assert run(uscc_is_valid, [value]) == [False]
    assert uscc_valid(value) is False


def test_null_uscc_gives_null() -> None:
    assert run(uscc_is_valid, [None]) == [None]
    assert run(uscc_check_char, [None]) == [None]


# --- 组织机构代码 ----------------------------------------------------------------------------------


def test_org_codes_inside_spec_usccs_are_valid() -> None:
    assert ORG_VALID == ["M000100Y4", "551385082"]
    assert run(org_code_is_valid, ORG_VALID) == [True, True]
    assert [org_code_valid(s) for s in ORG_VALID] == [True, True]
    # and straight from the USCC column, positions 9–17
    assert run(lambda e: org_code_is_valid(e.str.slice(8, 9)), USCC_VALID) == [True, True]


def test_digit_corruptions_of_org_codes_are_invalid() -> None:
    # Weights are non-zero mod 11, so a digit-for-digit change (|Δ| < 11) always moves the checksum.
    # (Letters are excluded: M=22 → 0 shifts the sum by a multiple of 11, as GB 11714 allows.)
    corrupted = [
        c for s in ORG_VALID for c in substitutions(s, "0123456789", [i for i in range(8) if s[i].isdigit()])
    ]
    corrupted += [s[:8] + c for s in ORG_VALID for c in "0123456789X" if c != s[8]]
    assert set(run(org_code_is_valid, corrupted)) == {False}
    assert not any(org_code_valid(c) for c in corrupted)


@pytest.mark.parametrize("value", ["M000100Y", "M000100Y40", "m000100y4", "M000-100Y4", "M000100YA"])
def test_malformed_org_codes_are_invalid(value: str) -> None:
    assert run(org_code_is_valid, [value]) == [False]
    assert org_code_valid(value) is False


# --- mobile numbers -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("+86 138-1234-5678", "13812345678"),
        ("8613812345678", "13812345678"),
        ("86-138 1234 5678", "13812345678"),
        ("(+86)13812345678", "13812345678"),
        ("0086 13812345678", "13812345678"),
        ("＋８６　１３８－１２３４－５６７８", "13812345678"),
        ("（138）1234 5678", "13812345678"),
        ("13812345678", "13812345678"),
        ("861381234567", "861381234567"),  # rest is not 11 digits: left alone (and invalid)
        (" - ", None),
        (None, None),
    ],
)
def test_normalize_mobile(raw: str | None, expected: str | None) -> None:
    assert run(normalize_mobile, [raw]) == [expected]


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("13812345678", True),
        ("19912345678", True),
        ("12812345678", False),
        ("1381234567", False),
        ("138123456789", False),
        ("23812345678", False),
        ("1381234567a", False),
        ("+8613812345678", False),
    ],
)
def test_mobile_validity(value: str, valid: bool) -> None:
    assert run(mobile_is_valid, [value]) == [valid]
    assert mobile_valid(value) is valid


def test_null_mobile_gives_null() -> None:
    assert run(mobile_is_valid, [None]) == [None]


# --- numpy helpers --------------------------------------------------------------------------------


def test_numpy_check_chars_match_scalar() -> None:
    rng = np.random.default_rng(7)
    digits = rng.integers(0, 10, size=(500, 17), dtype=np.uint8)
    digits[0] = [int(c) for c in ID_VALID[0][:17]]
    got = id_check_chars_np(digits)
    assert got.shape == (500,)
    assert got[0] == "X"
    assert list(got) == [id_number_check("".join(map(str, row))) for row in digits]

    values = rng.integers(0, 31, size=(500, 17))
    values[0] = [USCC_ALPHABET.index(c) for c in USCC_VALID[1][:17]]
    got = uscc_check_chars_np(values)
    assert got.shape == (500,)
    assert got[0] == "Q"
    assert list(got) == [uscc_check("".join(USCC_ALPHABET[v] for v in row)) for row in values]


# --- properties: scalar and vectorised agree ------------------------------------------------------

birth_dates = st.dates(min_value=dt.date(1850, 1, 1), max_value=TODAY)


@st.composite
def id_bodies(draw: st.DrawFn) -> str:
    """17 body digits with a real birth date."""
    area = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    seq = draw(st.text(alphabet="0123456789", min_size=3, max_size=3))
    return area + draw(birth_dates).strftime("%Y%m%d") + seq


@st.composite
def uscc_bodies(draw: st.DrawFn) -> str:
    """17 USCC body characters in the GB 32100 layout."""
    head = draw(st.text(alphabet=USCC_ALPHABET, min_size=2, max_size=2))
    region = draw(st.text(alphabet="0123456789", min_size=6, max_size=6))
    subject = draw(st.text(alphabet=USCC_ALPHABET, min_size=9, max_size=9))
    return head + region + subject


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=17, max_size=17), min_size=1, max_size=40))
def test_id_check_char_agrees_everywhere(bodies: list[str]) -> None:
    scalar = [id_number_check(b) for b in bodies]
    assert run(id_number_check_char, bodies) == scalar
    assert list(id_check_chars_np(np.array([[int(c) for c in b] for b in bodies], dtype=np.uint8))) == scalar


@settings(max_examples=60, deadline=None)
@given(st.lists(id_bodies(), min_size=1, max_size=40), st.data())
def test_id_with_computed_check_is_valid_and_other_checks_are_not(
    bodies: list[str], data: st.DataObject
) -> None:
    good = [with_check(b) for b in bodies]
    bad = [
        b + data.draw(st.sampled_from([c for c in ID_CHECK_CHARS if c != id_number_check(b)])) for b in bodies
    ]
    assert id_valid_vec(good) == [True] * len(good)
    assert all(id_number_valid(s, today=TODAY) for s in good)
    assert id_valid_vec(bad) == [False] * len(bad)
    assert not any(id_number_valid(s, today=TODAY) for s in bad)


@settings(max_examples=60, deadline=None)
@given(st.lists(uscc_bodies(), min_size=1, max_size=40), st.data())
def test_uscc_with_computed_check_is_valid_and_other_checks_are_not(
    bodies: list[str], data: st.DataObject
) -> None:
    checks = [uscc_check(b) for b in bodies]
    assert run(uscc_check_char, bodies) == checks
    np_values = np.array([[USCC_ALPHABET.index(c) for c in b] for b in bodies])
    assert list(uscc_check_chars_np(np_values)) == checks
    good = [b + c for b, c in zip(bodies, checks, strict=True)]
    bad = [
        b + data.draw(st.sampled_from([a for a in USCC_ALPHABET if a != c]))
        for b, c in zip(bodies, checks, strict=True)
    ]
    assert run(uscc_is_valid, good) == [True] * len(good)
    assert all(uscc_valid(s) for s in good)
    assert run(uscc_is_valid, bad) == [False] * len(bad)
    assert not any(uscc_valid(s) for s in bad)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=8, max_size=8))
def test_exactly_one_org_check_char_fits_each_body(body: str) -> None:
    candidates = [body + c for c in "0123456789X"]
    vec = run(org_code_is_valid, candidates)
    assert vec == [org_code_valid(c) for c in candidates]
    assert vec.count(True) == 1


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text(alphabet="0123456789", min_size=15, max_size=15), min_size=1, max_size=40))
def test_convert_id15_agrees_and_keeps_the_body(values: list[str]) -> None:
    converted = run(convert_id15, values)
    assert converted == [convert_id15_scalar(v) for v in values]
    assert all(c[:6] + c[8:17] == v and c[6:8] == "19" for c, v in zip(converted, values, strict=True))


# --- composition ----------------------------------------------------------------------------------


def test_composed_checks_evaluate_their_input_once() -> None:
    # Each check mentions its input ~20 times; without let-binding, composing three of them
    # would copy the input expression thousands of times (minutes on a million rows).
    composed = id_number_is_valid(convert_id15(normalize_id_number(pl.col("marker"))))
    assert str(composed).count('col("marker")') == 1
    assert str(uscc_is_valid(normalize_uscc(pl.col("marker")))).count('col("marker")') == 1


def test_raw_department_values_through_the_whole_chain() -> None:
    raw = [" 110105491231002 ", "１１０１０５１９４９１２３１００２ｘ", "440524188001010015", None]
    chain = run(lambda e: id_number_is_valid(convert_id15(normalize_id_number(e)), today=TODAY), raw)
    assert chain == [True, True, False, None]


def test_checks_keep_the_input_column_name() -> None:
    frame = pl.DataFrame({"sfzh": ID_VALID, "tyxydm": USCC_VALID})
    out = frame.select(id_number_is_valid(pl.col("sfzh")), uscc_is_valid(pl.col("tyxydm")))
    assert out.columns == ["sfzh", "tyxydm"]
    assert out.rows() == [(True, True), (True, True)]


def test_checks_work_on_literals() -> None:
    assert pl.select(id_number_is_valid(pl.lit(ID_VALID[0]), today=TODAY)).item() is True
    assert pl.select(uscc_check_char(pl.lit(USCC_VALID[1][:17]))).item() == "Q"
