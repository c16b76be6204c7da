"""Masking rules: the examples of docs/masking.md through the default policy, each operator on its
own, and properties that hold for every ID number and phone number (hypothesis)."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from catalog.identifiers import id_number_check, id_number_is_valid, id_number_valid
from catalog.models import Element, OutputKind, Sensitivity
from desensitize import rules
from desensitize.fpe import fpe_id_tokens
from desensitize.policy import DEFAULT_GRADES, Context, concrete_rule, parse_rule
from desensitize.pseudonym import PseudonymKey, PseudonymKeyError, hmac_tokens, token_of

KEY = PseudonymKey(b"test-key-0123456789abcdef")
AS_OF = dt.date(2026, 10, 9)


def element(**kw) -> Element:
    return Element(code=kw.pop("code", "x"), name=kw.pop("name", "x"), **kw)


def apply(text: str, values: list, dtype=pl.String, key: PseudonymKey | None = KEY) -> list:
    r, _ = parse_rule(text)
    frame = pl.DataFrame({"v": values}, schema={"v": dtype})
    return frame.select(r.build(pl.col("v"), Context(AS_OF, key)).alias("v")).get_column("v").to_list()


def by_default(kind: OutputKind, e: Element, values: list, dtype=pl.String) -> list:
    """The value the default table (docs/masking.md) gives an element in an output kind."""
    r, _ = concrete_rule(DEFAULT_GRADES[kind][e.sensitivity], e)
    frame = pl.DataFrame({"v": values}, schema={"v": dtype})
    return frame.select(r.build(pl.col("v"), Context(AS_OF, KEY)).alias("v")).get_column("v").to_list()


R, OPEN = OutputKind.restricted, OutputKind.open

# --- the default table of docs/masking.md, row by row ------------------------------------------------

NAME = element(type="string", semantic="person_name", sensitivity="敏感")
ID = element(type="id_number", sensitivity="高度敏感")
MOBILE = element(type="mobile", semantic="phone", sensitivity="敏感")
ADDRESS = element(type="string", semantic="address", sensitivity="敏感")
BIRTH = element(type="date", sensitivity="敏感", derived_from_id="birth_date")
EMAIL = element(type="string", semantic="email", sensitivity="敏感")
CARD = element(type="string", semantic="bank_card", sensitivity="敏感")
PLATE = element(type="string", semantic="vehicle_plate", sensitivity="敏感")
LON = element(type="decimal", semantic="longitude", sensitivity="敏感")
USCC = element(type="uscc", sensitivity="公开")
LEGAL_REP = element(type="string", semantic="person_name", sensitivity="公开")
DOMICILE = element(type="string", semantic="address", sensitivity="公开")


def test_a_name_keeps_its_first_character_when_shared_and_is_suppressed_when_opened() -> None:
    assert by_default(R, NAME, ["欧阳娜娜", "李丽", None]) == ["欧***", "李***", None]
    assert by_default(OPEN, NAME, ["欧阳娜娜"]) == [None]


def test_an_id_number_keeps_6_and_4_with_a_keyed_token_when_shared_and_is_suppressed_when_opened() -> None:
    r, token = concrete_rule(DEFAULT_GRADES[R][ID.sensitivity], ID)
    assert token is True and r.spec == "keep_first_last(6, 4)"
    assert by_default(R, ID, ["11010519491231002X"]) == ["110105********002X"]
    assert by_default(OPEN, ID, ["11010519491231002X"]) == [None]


def test_a_mobile_keeps_3_and_4_and_a_landline_its_area_code_and_last_2() -> None:
    assert by_default(R, MOBILE, ["13812345678", "0577-88123456", "010-12345678"]) == [
        "138****5678", "0577-******56", "010-******78"]
    assert by_default(OPEN, MOBILE, ["13812345678"]) == [None]


def test_a_person_address_keeps_its_district_when_shared_and_only_the_district_when_opened() -> None:
    addr = "浙江省温州市鹿城区五马街道解放路12号"
    assert by_default(R, ADDRESS, [addr]) == ["浙江省温州市鹿城区******"]
    assert by_default(OPEN, ADDRESS, [addr]) == ["浙江省温州市鹿城区"]
    # nothing recognisable as 省/市/区 is masked whole rather than guessed at
    assert by_default(R, ADDRESS, ["解放路县前街5号"]) == ["******"]
    assert by_default(OPEN, ADDRESS, ["解放路县前街5号"]) == [None]


def test_a_birth_date_is_kept_when_shared_and_reduced_to_the_year_when_opened() -> None:
    d = dt.date(1949, 12, 31)
    assert by_default(R, BIRTH, [d], pl.Date) == [d]
    assert by_default(OPEN, BIRTH, [d], pl.Date) == ["1949"]
    assert apply("age_band(5)", [d, dt.date(1990, 10, 10)], pl.Date) == ["75-79岁", "35-39岁"]
    assert apply("year_band(5)", [dt.date(1947, 3, 1)], pl.Date) == ["1945-1949"]


def test_an_email_keeps_the_first_character_of_its_local_part_and_its_domain() -> None:
    assert by_default(R, EMAIL, ["zhangsan@example.cn", "not-an-email"]) == ["z*******@example.cn", "************"]
    assert by_default(OPEN, EMAIL, ["zhangsan@example.cn"]) == [None]


def test_a_bank_card_keeps_6_and_4_and_a_plate_2_and_1() -> None:
    assert by_default(R, CARD, ["6222021234567890123"]) == ["622202*********0123"]
    assert by_default(R, PLATE, ["浙C12345"]) == ["浙C****5"]
    assert by_default(OPEN, CARD, ["6222021234567890123"]) == by_default(OPEN, PLATE, ["浙C12345"]) == [None]


def test_person_coordinates_round_to_a_hundredth_when_shared_and_snap_to_a_coarse_grid_when_opened() -> None:
    assert by_default(R, LON, [120.65432], pl.Float64) == [120.65]
    assert by_default(OPEN, LON, [120.65432, 120.61], pl.Float64) == [120.65, 120.65]  # same 0.1° cell


def test_public_registration_data_of_legal_entities_is_kept_everywhere() -> None:
    for kind in (R, OPEN, OutputKind.shared):
        assert by_default(kind, USCC, ["91330100MA0000001X"]) == ["91330100MA0000001X"]
        assert by_default(kind, LEGAL_REP, ["张三"]) == ["张三"]
        assert by_default(kind, DOMICILE, ["瓯江市江心区松台街道A路1号"]) == ["瓯江市江心区松台街道A路1号"]


def test_a_licence_number_keeps_4_and_4_by_override_and_unknown_text_keeps_one_character() -> None:
    assert apply("keep_first_last(4, 4)", ["JY13302010012345"]) == ["JY13********2345"]
    text = element(type="string", sensitivity="敏感")
    assert by_default(R, text, ["A123456789"]) == ["A***"]


def test_full_redaction_and_suppression() -> None:
    assert apply("redact", ["13812345678", None]) == ["******", None]
    assert apply("suppress", ["13812345678"]) == [None]


def test_a_short_value_is_masked_whole_so_it_never_leaks() -> None:
    assert apply("keep_first_last(6, 4)", ["12345", "1234567890", "12345678901"]) == [
        "*****", "**********", "123456*8901"]


# --- keyed pseudonymisation --------------------------------------------------------------------------


def test_tokens_are_stable_per_key_normalised_and_differ_between_keys() -> None:
    values = ["11010519491231002X", " 11010519491231002x", None, "13812345678", "13812345678"]
    t = hmac_tokens(pl.Series(values), KEY).to_list()
    assert t[0] == t[1] == token_of("11010519491231002X", KEY) and len(t[0]) == 26
    assert t[2] is None and t[3] == t[4] != t[0]
    other = PseudonymKey(b"another-key-0123456789")
    assert hmac_tokens(pl.Series(values), other).to_list()[0] != t[0]
    assert other.key_id != KEY.key_id and KEY.key_id.startswith("k") and len(KEY.key_id) == 9


def test_tokens_are_the_standard_hmac_in_base32_and_contain_no_digit_a_number_could_start_with() -> None:
    import base64
    import hmac

    def expected(key: PseudonymKey) -> str:
        # the standard HMAC, keyed with the token subkey in hex: what any consumer can recompute
        digest = hmac.new(key.subkey("token").hex().encode(), b"11010519491231002X", key.algorithm).digest()[:16]
        return base64.b32encode(digest).decode().rstrip("=").lower()

    assert hmac_tokens(pl.Series(["11010519491231002X"]), KEY).item() == expected(KEY)
    sm3 = PseudonymKey(KEY.secret, "sm3")
    assert hmac_tokens(pl.Series(["11010519491231002X"]), sm3).item() == expected(sm3)
    assert sm3.key_id != KEY.key_id
    many = hmac_tokens(pl.Series([f"{i:011d}" for i in range(5000)]), KEY)
    assert many.str.contains(r"^[a-z2-7]{26}$").all() and not many.str.contains(r"[0189]").any()


def test_the_key_comes_only_from_the_environment_and_must_be_long_enough() -> None:
    with pytest.raises(PseudonymKeyError, match="GONGSHU_PSEUDONYM_KEY"):
        PseudonymKey.from_env({})
    with pytest.raises(PseudonymKeyError, match="过短"):
        PseudonymKey.from_env({"GONGSHU_PSEUDONYM_KEY": "short"})
    key = PseudonymKey.from_env({"GONGSHU_PSEUDONYM_KEY": "x" * 20, "GONGSHU_PSEUDONYM_ALG": "SM3"})
    assert key.algorithm == "sm3" and "x" * 20 not in repr(key)


# --- format-preserving tokens ------------------------------------------------------------------------


def _id(region: str, birth: dt.date, seq: int) -> str:
    body = f"{region}{birth:%Y%m%d}{seq:03d}"
    return body + id_number_check(body)


def test_fpe_is_a_permutation_of_a_whole_birth_year_keeping_region_year_and_sex() -> None:
    # every possible number of one region and year (leap and not): tokens are all distinct
    ids = [_id("330302", dt.date(y, 1, 1) + dt.timedelta(days=d), s)
           for y in (2000, 2001) for d in range(366 if y == 2000 else 365) for s in range(0, 1000, 7)]
    tokens = fpe_id_tokens(pl.Series(ids), KEY)
    assert tokens.null_count() == 0 and tokens.n_unique() == len(ids)
    assert pl.select(id_number_is_valid(pl.lit(tokens), today=dt.date(2026, 1, 1))).to_series().all()
    assert (tokens.str.slice(0, 10) == pl.Series(ids).str.slice(0, 10)).all()
    same_sex = tokens.str.slice(16, 1).cast(pl.Int64) % 2 == pl.Series(ids).str.slice(16, 1).cast(pl.Int64) % 2
    assert same_sex.all()
    assert fpe_id_tokens(pl.Series(ids[:3]), KEY).to_list() == tokens[:3].to_list()  # stable
    assert fpe_id_tokens(pl.Series(ids[:3]), PseudonymKey(b"another-key-0123456789")).to_list() != tokens[:3].to_list()


def test_fpe_returns_null_for_values_it_cannot_read() -> None:
    assert fpe_id_tokens(pl.Series(["abc", None, "110105194902300012", "110105184912310012"]), KEY).to_list() == [
        None, None, None, None]  # no 30 February; 1849 is before the earliest valid birth


# --- properties --------------------------------------------------------------------------------------

REGIONS = st.sampled_from(["110105", "330302", "339902", "370202", "440305", "650102"])
VALID_IDS = st.builds(_id, REGIONS, st.dates(dt.date(1850, 1, 1), dt.date(2019, 12, 31)), st.integers(0, 999))
MOBILES = st.from_regex(r"\A1[3-9]\d{9}\Z")
LANDLINES = st.from_regex(r"\A0(10|2\d|[3-9]\d{2})-\d{7,8}\Z")


@settings(max_examples=60, deadline=None)
@given(st.lists(VALID_IDS, min_size=1, max_size=40))
def test_a_masked_or_tokenised_id_number_never_equals_its_input(ids: list[str]) -> None:
    s = pl.Series(ids)
    masked = pl.DataFrame({"v": s}).select(rules.keep_first_last(pl.col("v"), 6, 4)).to_series()
    assert ((masked != s) & masked.str.contains(r"\*{8}")).all()
    assert (hmac_tokens(s, KEY) != s).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.one_of(MOBILES, LANDLINES), min_size=1, max_size=40))
def test_a_masked_phone_number_never_equals_its_input(phones: list[str]) -> None:
    s = pl.Series(phones)
    masked = pl.DataFrame({"v": s}).select(rules.mask_phone(pl.col("v"))).to_series()
    assert (masked != s).all() and masked.str.contains(r"\*{4}").all()
    assert (masked.str.len_chars() == s.str.len_chars()).all()


@settings(max_examples=60, deadline=None)
@given(st.lists(VALID_IDS, min_size=1, max_size=40), st.sampled_from(["year", "decade"]))
def test_format_preserving_tokens_always_validate(ids: list[str], keep: str) -> None:
    tokens = fpe_id_tokens(pl.Series(ids), KEY, keep)  # type: ignore[arg-type]
    assert tokens.null_count() == 0
    assert all(id_number_valid(t) for t in tokens)
    width = 10 if keep == "year" else 9
    assert (tokens.str.slice(0, width) == pl.Series(ids).str.slice(0, width)).all()
    assert tokens.n_unique() == len(set(ids))


# --- the rule language of the catalogue ----------------------------------------------------------


def test_rule_texts_parse_with_an_optional_token_column_and_bad_ones_are_named() -> None:
    r, token = parse_rule("keep_first_last(6,4) + token")
    assert (r.spec, token) == ("keep_first_last(6, 4)", True)
    assert parse_rule("to_district")[0].coarser == "to_city"
    with pytest.raises(ValueError, match="未知的脱敏规则 'mask_everything'"):
        parse_rule("mask_everything")
    with pytest.raises(ValueError, match="地址层级"):
        parse_rule("keep_address(village)")


def test_every_grade_has_a_default_action_in_every_output_kind() -> None:
    for kind in OutputKind:
        assert set(DEFAULT_GRADES[kind]) == set(Sensitivity)
