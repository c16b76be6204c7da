"""Policies from the catalogue: outputs per declared class, element availability, overrides, errors,
and k-anonymity of open data on a synthetic frame."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from catalog.identifiers import id_number_valid
from catalog.loader import DEMO_CATALOGUE, load_catalogue
from desensitize.kanon import k_anonymise, smallest_group
from desensitize.masking import MissingKeyError, ladder, mask_snapshot
from desensitize.policy import Context, PolicyError, share_policies
from desensitize.pseudonym import PseudonymKey
from tests import citykit

KEY = PseudonymKey(b"test-key-0123456789abcdef")


def shanhai(tmp_path: Path, edit=None) -> Path:
    """The second test city, optionally with its catalogue text edited."""
    folder = citykit.write_catalogue(tmp_path)
    if edit:
        main = folder / "catalogue.yaml"
        main.write_text(edit(main.read_text(encoding="utf-8")), encoding="utf-8")
    return folder


def test_the_demo_city_gets_one_output_per_library_and_declared_class() -> None:
    policies = {p.name: p for p in share_policies(load_catalogue(DEMO_CATALOGUE))}
    assert set(policies) == {
        "person_restricted", "person_open", "legal_entity_shared", "legal_entity_restricted", "legal_entity_open",
        "spatial_shared", "spatial_open", "license_shared", "license_restricted", "license_open"}
    person = policies["person_restricted"]
    assert list(person.schema()) == [
        "id_number", "id_number__token", "name", "gender", "birth_date", "ethnicity", "household_address",
        "marital_status", "mobile", "insurance_status", "birth_cert_no", "valid_from", "_key_id"]
    assert person.column("id_number").rule.spec == "keep_first_last(1, 2)"  # 出生日期 is published beside it
    assert person.column("mobile").rule.spec == "mask_phone"


def test_an_open_output_carries_only_elements_whose_authority_opens_them() -> None:
    policies = {p.name: p for p in share_policies(load_catalogue(DEMO_CATALOGUE))}
    person_open = policies["person_open"]
    # 户籍 (有条件开放) opens name … address; 婚姻, 手机, 参保, 出生证明 come from 不予开放 resources
    assert list(person_open.schema()) == ["gender", "birth_date", "ethnicity", "household_address"]
    assert {e.code for e, _ in person_open.excluded} == {"marital_status", "mobile", "insurance_status",
                                                         "birth_cert_no"}
    assert person_open.quasi_identifiers == ["gender", "birth_date", "ethnicity", "household_address"]
    assert "mzj_hydj(有条件共享/不予开放)" in person_open.describe_md()
    # 电子证照: only 营业执照 (01, 无条件开放) rows are opened; 有条件共享 covers all three types
    assert policies["license_open"].discriminator_values == ("01",)
    assert policies["license_restricted"].discriminator_values == ("01", "02", "03")
    assert policies["license_restricted"].column("license_no").rule.spec == "keep_first_last(4, 4)"  # override
    assert "taxpayer_status" not in policies["legal_entity_shared"].schema()  # 税务 is 有条件共享 only
    assert "taxpayer_status" in policies["legal_entity_restricted"].schema()


def test_a_column_without_a_rule_stops_the_loader_with_file_path_and_element(tmp_path: Path) -> None:
    # 资本 graded 敏感: "mask" has no natural form for a number, so the city must say what to do
    folder = shanhai(tmp_path, lambda t: t.replace(
        "{code: capital, name: 资本, type: decimal, authority: gongshang}",
        "{code: capital, name: 资本, type: decimal, sensitivity: 敏感, authority: gongshang}"))
    with pytest.raises(PolicyError) as err:
        share_policies(load_catalogue(folder))
    msg = str(err.value)
    assert f"{folder / 'catalogue.yaml'}: libraries.1(org).elements.2(capital).masking.shared: 没有适用的脱敏规则" in msg
    assert "masking.open" not in msg  # open generalises a number to suppression
    fixed = shanhai(tmp_path / "b", lambda t: t.replace(
        "{code: capital, name: 资本, type: decimal, authority: gongshang}",
        "{code: capital, name: 资本, type: decimal, sensitivity: 敏感, authority: gongshang, "
        "masking: {shared: suppress}}"))
    assert {p.name for p in share_policies(load_catalogue(fixed))} >= {"org_shared"}


def test_a_bad_override_and_a_missing_grade_action_are_reported_together(tmp_path: Path) -> None:
    folder = shanhai(tmp_path, lambda t: t.replace(
        "{code: sex, name: 性别, type: code, codelist: sex, authority: huzheng, derived_from_id: gender}",
        "{code: sex, name: 性别, type: code, codelist: sex, authority: huzheng, derived_from_id: gender, "
        "masking: {restricted: fpe_id}}"))
    with pytest.raises(PolicyError) as err:
        share_policies(load_catalogue(folder))
    assert "elements.2(sex).masking.restricted: fpe_id 只适用于公民身份号码" in str(err.value)


def test_grades_and_k_are_configurable_per_city(tmp_path: Path) -> None:
    folder = shanhai(tmp_path, lambda t: t + "masking:\n  k: 3\n  grades:\n    restricted: {敏感: redact}\n")
    policies = {p.name: p for p in share_policies(load_catalogue(folder))}
    assert policies["people_restricted"].column("full_name").rule.spec == "redact"
    assert policies["people_restricted"].k == 3


def test_k_anonymity_generalises_small_groups_locally_and_suppresses_what_cannot_be_hidden() -> None:
    frame = pl.DataFrame({
        "sex": ["1"] * 30 + ["1"] * 3 + ["1"] * 2 + ["2"] * 6 + ["2"],
        "dob": [dt.date(1980, 5, 1)] * 30 + [dt.date(1981, 1, 1)] * 3 + [dt.date(1983, 1, 1)] * 2
               + [dt.date(1992, 3, 15)] * 6 + [dt.date(1950, 1, 1)],
        "other": list(range(42)),
    })
    policy = {p.name: p for p in share_policies(load_catalogue(DEMO_CATALOGUE))}["person_open"]
    ctx = Context(dt.date(2026, 10, 9))
    ladders = {
        "sex": [lambda x: x, lambda x: pl.lit(None, pl.String)],
        "dob": [(lambda x, r=r: r.build(x, ctx)) for r in ladder(policy.column("birth_date"))]
               + [lambda x: pl.lit(None, pl.String)],
    }
    out, report = k_anonymise(frame, ladders, 5)
    assert (report.generalised, report.suppressed, report.rows_out) == (5, 1, 41)
    assert smallest_group(out, ["sex", "dob"]) == 5 and report.smallest_group == 5
    counts = dict(out.group_by("sex", "dob").len().select(pl.concat_str("sex", "dob", separator="/"), "len").rows())
    assert counts == {"1/1980": 30, "1/1980-1984": 5, "2/1992": 6}
    assert 41 not in out.get_column("other").to_list()  # the one woman born 1950 is not published


def test_fpe_tokens_equal_to_a_real_id_are_withheld(tmp_path: Path) -> None:
    folder = shanhai(tmp_path, lambda t: t.replace(
        "{code: pid, name: 身份号码, type: id_number, required: true, sensitivity: 高度敏感}",
        "{code: pid, name: 身份号码, type: id_number, required: true, sensitivity: 高度敏感, "
        "masking: {restricted: fpe_id + token}}"))
    cat = load_catalogue(folder)
    policy = next(p for p in share_policies(cat) if p.name == "people_restricted")
    lib = policy.library
    pids = [citykit.id_number("370202", "19800101", s) for s in range(1, 40)]
    snapshot = pl.DataFrame({"pid": pids, "full_name": ["某"] * len(pids), "sex": [None] * len(pids),
                             "dob": [None] * len(pids), "phone": [None] * len(pids),
                             "valid_from": [dt.date(2026, 1, 1)] * len(pids)},
                            schema={"pid": pl.String, "full_name": pl.String, "sex": pl.String, "dob": pl.Date,
                                    "phone": pl.String, "valid_from": pl.Date})
    assert lib.key == ["pid"]
    clean = mask_snapshot(policy, snapshot, as_of=dt.date(2026, 10, 9), key=KEY, real_ids=pl.Series(pids))
    tokens = clean.frame.get_column("pid")
    assert all(id_number_valid(t) for t in tokens.drop_nulls()) and not set(tokens.drop_nulls()) & set(pids)
    assert clean.frame.get_column("pid__token").n_unique() == len(pids)
    # pretend one token is somebody's real number: it is nulled and counted
    planted = pl.Series([*pids, tokens[0]])
    again = mask_snapshot(policy, snapshot, as_of=dt.date(2026, 10, 9), key=KEY, real_ids=planted)
    assert again.fpe_dropped == {"pid": 1} and again.frame.get_column("pid")[0] is None
    assert again.frame.get_column("_key_id").unique().to_list() == [KEY.key_id]


def test_without_a_key_an_output_with_keyed_columns_is_refused_and_one_without_is_built(tmp_path: Path) -> None:
    cat = load_catalogue(shanhai(tmp_path))
    policies = {p.name: p for p in share_policies(cat)}
    pid = citykit.id_number("370202", "19800101", 11)
    snapshot = pl.DataFrame({"pid": [pid], "full_name": ["王小明"], "sex": ["1"], "dob": [dt.date(1980, 1, 1)],
                             "phone": ["13800000001"], "valid_from": [dt.date(2026, 10, 9)]})
    with pytest.raises(MissingKeyError, match="share/people_restricted: 未设置假名化密钥 \\(环境变量 "
                                              "GONGSHU_PSEUDONYM_KEY\\), 而本输出含密钥化列 pid__token"):
        mask_snapshot(policies["people_restricted"], snapshot, as_of=dt.date(2026, 10, 9), key=None)
    orgs = pl.DataFrame({"code": [citykit.ORGS[0][0]], "title": [citykit.ORGS[0][1]], "capital": [120.5],
                         "valid_from": [dt.date(2026, 10, 9)]})
    shared = mask_snapshot(policies["org_shared"], orgs, as_of=dt.date(2026, 10, 9), key=None)
    assert not policies["org_shared"].keyed and shared.frame.get_column("title").to_list() == [citykit.ORGS[0][1]]


def test_an_id_number_is_masked_jointly_with_the_birth_dates_its_row_and_its_tokens_publish(tmp_path: Path) -> None:
    demo = {p.name: p for p in share_policies(load_catalogue(DEMO_CATALOGUE))}
    # 110105********7285 beside 1935-03-15 would be the whole number: Hutool ID_CARD instead
    assert demo["person_restricted"].column("id_number").rule.spec == "keep_first_last(1, 2)"
    assert "按 Hutool ID_CARD 仅保留首1位和末2位" in demo["person_restricted"].describe_md()
    # 法定代表人证件号 has no birth date in its own row, but its token joins person_restricted's
    for name in ("legal_entity_shared", "legal_entity_restricted"):
        assert demo[name].column("legal_rep_id").rule.spec == "keep_first_last(1, 2)"
    # the second city names its elements otherwise: 出生日期 is ``dob``, kept whole → the same protection
    second = {p.name: p for p in share_policies(load_catalogue(shanhai(tmp_path / "a")))}
    assert second["people_restricted"].column("pid").rule.spec == "keep_first_last(1, 2)"
    # a city that shares only the birth year keeps region and sequence digits: 6 + 4
    folder = shanhai(tmp_path / "b", lambda t: t.replace(
        "derived_from_id: birth_date}", "derived_from_id: birth_date, masking: {restricted: birth_year}}"))
    people = next(p for p in share_policies(load_catalogue(folder)) if p.name == "people_restricted")
    assert (people.column("pid").rule.spec, people.column("dob").rule.spec) == ("keep_first_last(6, 4)", "birth_year")


def test_a_6_4_mask_the_catalogue_names_beside_a_full_birth_date_is_refused_with_its_path(tmp_path: Path) -> None:
    folder = shanhai(tmp_path, lambda t: t.replace(
        "{code: pid, name: 身份号码, type: id_number, required: true, sensitivity: 高度敏感}",
        "{code: pid, name: 身份号码, type: id_number, required: true, sensitivity: 高度敏感, "
        "masking: {restricted: \"keep_first_last(6, 4) + token\"}}"))
    with pytest.raises(PolicyError) as err:
        share_policies(load_catalogue(folder))
    assert (f"{folder / 'catalogue.yaml'}: libraries.0(people).elements.0(pid).masking.restricted: "
            "keep_first_last(6, 4) 与同一行或经令牌可关联的输出发布的出生日期(完整)、性别合起来即完整的身份号码; "
            "请改用 keep_first_last(1, 2) (Hutool ID_CARD) 或 token, 或将出生日期泛化 (birth_year)") in str(err.value)


def test_rows_masked_by_the_joint_policy_give_no_id_number_back_where_the_old_mask_did(tmp_path: Path) -> None:
    from desensitize.leaks import Needles, scan_frame
    from desensitize.rules import keep_first_last

    cat = load_catalogue(shanhai(tmp_path))
    policy = next(p for p in share_policies(cat) if p.name == "people_restricted")
    births = [dt.date(1935, 3, 15) + dt.timedelta(days=97 * i) for i in range(200)]
    pids = [citykit.id_number("370202", f"{b:%Y%m%d}", 100 + i) for i, b in enumerate(births)]
    snapshot = pl.DataFrame({"pid": pids, "full_name": ["王小明"] * 200, "sex": [None] * 200, "dob": births,
                             "phone": [None] * 200, "valid_from": [dt.date(2026, 10, 9)] * 200},
                            schema={"pid": pl.String, "full_name": pl.String, "sex": pl.String, "dob": pl.Date,
                                    "phone": pl.String, "valid_from": pl.Date})
    masked = mask_snapshot(policy, snapshot, as_of=dt.date(2026, 10, 9), key=KEY).frame
    needles = Needles.of(ids=pids)
    assert scan_frame(masked, needles, "share.people_restricted") == []
    old = masked.with_columns(snapshot.select(keep_first_last(pl.col("pid"), 6, 4)).to_series().alias("pid"))
    assert [(f.column, f.kind, f.count) for f in scan_frame(old, needles, "t")] == [("pid + dob", "id_rebuilt", 200)]
