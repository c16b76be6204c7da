"""The leak scanner on frames, Markdown previews and files: what it finds, what it must not flag."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from desensitize.leaks import (
    LeakKind,
    Needles,
    markdown_tables,
    merge_findings,
    scan_file,
    scan_frame,
    scan_text,
    scan_tree,
)
from desensitize.reidentify import linked_people

RAW_ID = "11010519491231002X"
NEEDLES = Needles.of(
    ids=[RAW_ID, "330302198001010011"],
    mobiles=["13812345678"],
    names=["欧阳娜娜", "李丽"],
    addresses=["浙江省温州市鹿城区五马街道解放路12号", "浙江省温州市鹿城区"],
)


def kinds(findings) -> list[tuple[str | None, str, int]]:
    return [(f.column, f.kind, f.count) for f in findings]


def test_masked_values_pass_and_each_kind_of_raw_identifier_is_found() -> None:
    masked = pl.DataFrame({"id": ["110105********002X"], "name": ["欧***"], "phone": ["138****5678"],
                           "addr": ["浙江省温州市鹿城区******"]})
    assert scan_frame(masked, NEEDLES, "t") == []
    raw = pl.DataFrame({"id": [RAW_ID.lower()], "name": ["李丽"], "phone": ["tel 13812345678"],
                        "addr": ["浙江省温州市鹿城区五马街道解放路12号"]})
    assert kinds(scan_frame(raw, NEEDLES, "t")) == [("id", "id_number", 1), ("name", "name", 1),
                                                    ("phone", "mobile", 1), ("addr", "address", 1)]


def test_an_id_is_found_inside_text_but_a_name_only_as_a_whole_value() -> None:
    frame = pl.DataFrame({"note": [f"经办人{RAW_ID}已核验", "李丽华", "李丽 "]})
    assert kinds(scan_frame(frame, NEEDLES, "t")) == [("note", "id_number", 1), ("note", "name", 1)]


def test_a_district_alone_is_not_an_address_leak() -> None:
    # open data publishes 区/县 on purpose; an "address" that is only a district is no needle
    assert len(NEEDLES.addresses) == 1
    assert NEEDLES.addresses.contains(pl.Series(["浙江省温州市鹿城区五马街道解放路12号", "浙江省温州市鹿城区"])).to_list() \
        == [True, False]
    assert scan_frame(pl.DataFrame({"a": ["浙江省温州市鹿城区"]}), NEEDLES, "t") == []


def test_public_columns_are_exempt_from_names_and_addresses_but_never_from_ids() -> None:
    frame = pl.DataFrame({"legal_rep": ["李丽", RAW_ID]})
    assert kinds(scan_frame(frame, NEEDLES, "t", public_columns={"legal_rep"})) == [("legal_rep", "id_number", 1)]


def test_markdown_previews_are_read_cell_by_cell_and_findings_are_masked() -> None:
    text = (f"## 预览\n\n| id_number | name |\n|---|---|\n| {RAW_ID} | 欧阳娜娜 |\n| a\\|b | 欧*** |\n\n"
            "联系人 李丽, 电话 13812345678")
    tables = markdown_tables(text)
    assert tables[0].rows() == [(RAW_ID, "欧阳娜娜"), ("a|b", "欧***")]
    found = scan_text(text, NEEDLES, "preview")
    assert [(f.location, f.column, f.kind, f.sample) for f in found] == [
        ("preview 表1", "id_number", "id_number", "110105********002X"),
        ("preview 表1", "name", "name", "欧***"),
        ("preview", "text", "mobile", "138****5678"),
        ("preview", "text", "name", "李***"),
    ]
    assert all(RAW_ID not in str(f) and "欧阳娜娜" not in str(f) for f in found)


def test_files_of_every_format_are_scanned(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("id,name\n110105********002X,李***\n", encoding="utf-8")
    (tmp_path / "a" / "y.json").write_text(json.dumps({"records": [{"holder": RAW_ID}]}), encoding="utf-8")
    (tmp_path / "report.md").write_text("| 姓名 |\n|---|\n| 欧阳娜娜 |\n", encoding="utf-8")
    (tmp_path / "data.bin").write_bytes(RAW_ID.encode())  # not a format the scanner reads
    found = scan_tree(tmp_path, NEEDLES)
    assert [(Path(f.location.split(" ")[0]).name, f.column, f.kind) for f in found] == [
        ("y.json", "holder", "id_number"), ("report.md", "姓名", "name")]
    assert scan_file(tmp_path / "a" / "x.csv", NEEDLES) == []


def test_numbers_and_dates_are_compared_whole_so_their_digits_raise_no_false_alarm() -> None:
    frame = pl.DataFrame({"lon": [120.13812345678], "note": ["120.13812345678"], "n": [13812345678],
                          "text": ["x13812345678y"]})
    # a float whose decimals happen to spell a phone number is no phone number; an integer that
    # equals one, and a phone number glued into text, are
    assert kinds(scan_frame(frame, NEEDLES, "t")) == [("n", "mobile", 1), ("text", "mobile", 1)]
    assert kinds(scan_frame(frame.select("text"), NEEDLES, "t", exact_columns={"text"})) == []


def test_a_digest_whose_digits_happen_to_spell_a_phone_number_is_no_leak() -> None:
    # a row hash is random hex: "…13812345678…" inside it is chance, not a leaked number
    frame = pl.DataFrame({"_row_hash": ["ab13812345678cd0" * 4, "f" * 64], "token": ["q13812345678zzzz", "abcdefghij234567"],
                          "phone": ["tel 13812345678", None]})
    assert kinds(scan_frame(frame, NEEDLES, "t")) == [("phone", "mobile", 1)]
    # the same digits as a whole value are still found
    assert kinds(scan_frame(pl.DataFrame({"token": ["13812345678"]}), NEEDLES, "t")) == [("token", "mobile", 1)]
    # a column of tokens is compared whole, only its values shaped like a needle looked up: a raw ID
    # (lower-case x) among the tokens is found, as is an ID in a date column
    tokens = pl.DataFrame({"token": ["abcdefghij234567", RAW_ID.lower(), "q13812345678zzzz"]})
    assert kinds(scan_frame(tokens, NEEDLES, "t")) == [("token", "id_number", 1)]
    typed = pl.DataFrame({"d": ["2026-11-20", "330302198001010011"], "n": [1.5, 13812345678.0]})
    assert kinds(scan_frame(typed, NEEDLES, "t", exact_columns={"d"})) == [("d", "id_number", 1)]


def test_workbooks_and_mails_are_scanned_cell_by_cell_and_part_by_part(tmp_path: Path) -> None:
    from email.message import EmailMessage

    import xlsxwriter

    book = tmp_path / "report.xlsx"
    wb = xlsxwriter.Workbook(book)
    ws = wb.add_worksheet("不通过记录")
    ws.write_row(0, 0, ["行", "证件号", "姓名"])
    ws.write_row(1, 0, [3, "110105********002X", "欧***"])
    ws.write_row(2, 0, [4, RAW_ID, "欧阳娜娜"])
    wb.close()
    assert kinds(scan_file(book, NEEDLES)) == [("不通过记录!2", "id_number", 1), ("不通过记录!3", "name", 1)]

    msg = EmailMessage()
    msg["Subject"] = "质量报告"
    msg.set_content("<p>联系人 13812345678</p>", subtype="html")
    msg.add_attachment(book.read_bytes(), maintype="application",
                       subtype="vnd.openxmlformats-officedocument.spreadsheetml.sheet", filename="report.xlsx")
    mail = tmp_path / "gaj.eml"
    mail.write_bytes(bytes(msg))
    found = scan_file(mail, NEEDLES)
    assert [(f.kind, f.location.split()[-1]) for f in found] == [
        ("mobile", "text/html"), ("id_number", "report.xlsx"), ("name", "report.xlsx")]


# --- row-level reconstruction (desensitize/reidentify.py) -----------------------------------------

def _id(region: str, birth: str, seq: int) -> str:
    from tests.citykit import id_number

    return id_number(region, birth, seq)


PERSONS = [(_id("110105", "19350315", 728), "欧阳娜娜", "1935-03-15", "2", "浙江省温州市鹿城区五马街道解放路12号"),
           (_id("330302", "19800101", 11), "李丽", "1980-01-01", "1", "浙江省温州市瓯海区娄桥街道古岸头村8号")]
PEOPLE_NEEDLES = Needles.of(ids=[p[0] for p in PERSONS], names=[p[1] for p in PERSONS],
                            people=[(p[0], p[1], p[4]) for p in PERSONS])


def mask(ids: list[str], first: int, last: int) -> list[str]:
    frame = pl.DataFrame({"v": ids})
    from desensitize.rules import keep_first_last

    return frame.select(keep_first_last(pl.col("v"), first, last)).to_series().to_list()


def test_a_6_4_masked_id_beside_the_birth_date_it_hides_is_rebuilt_and_reported() -> None:
    ids = [p[0] for p in PERSONS]
    assert ids[0] == "110105193503157285"  # the example: 110105********7285 beside 1935-03-15
    old = pl.DataFrame({"id_number": mask(ids, 6, 4), "birth_date": [p[2] for p in PERSONS],
                        "gender": [p[3] for p in PERSONS]})
    found = scan_frame(old, PEOPLE_NEEDLES, "share.person_restricted")
    assert [(f.column, f.kind, f.count) for f in found] == [("id_number + birth_date", "id_rebuilt", 2)]
    assert found[0].sample == "1***************85" and ids[0] not in str(found[0])
    assert "行的掩码身份号码可由同一行的其他列(出生日期、性别)补全为基础库中的真实号码" in str(found[0])
    # Hutool ID_CARD beside the same birth date leaves 10⁷ numbers: nothing to report
    assert scan_frame(old.with_columns(pl.Series("id_number", mask(ids, 1, 2))), PEOPLE_NEEDLES, "t") == []
    # the birth year alone, or a date that is not the person's own, completes nothing
    assert scan_frame(old.with_columns(pl.Series("birth_date", ["1935-**-**", "1980"])), PEOPLE_NEEDLES, "t") == []
    assert scan_frame(old.with_columns(pl.Series("birth_date", ["2026-10-09"] * 2)), PEOPLE_NEEDLES, "t") == []
    # other spellings of the same date are dates too; the columns are found by their values, not their names
    compact = pl.DataFrame({"SFZ": mask(ids, 6, 4), "SHENGRI": ["19350315", "1980/1/1"], "XB": ["F", "M"]})
    assert [(f.column, f.count) for f in scan_frame(compact, PEOPLE_NEEDLES, "t")] == [("SFZ + SHENGRI", 2)]


def test_the_hidden_digits_are_enumerated_under_the_check_character_for_every_row_at_once() -> None:
    from desensitize.reidentify import birth_digits, rebuild_ids

    ids = [_id("370202", f"19{y:02d}0{m}1{m}", s) for y in range(40, 99, 7) for m in range(1, 9) for s in (11, 12)]

    def fragments(positions: list[int]) -> pl.Series:
        return pl.Series(["".join("*" if i in positions else c for i, c in enumerate(v)) for v in ids])

    # one hidden digit: the check character gives it back, whichever it is
    for p in (0, 5, 9, 16):
        assert rebuild_ids(fragments([p])).to_list() == ids
    # two hidden digits leave 9 or 10 numbers each: never one
    assert rebuild_ids(fragments([3, 4])).null_count() == len(ids)
    # the check character hidden too: only a sex digit of known parity beside four candidates… still five
    sex = pl.Series([int(v[16]) % 2 for v in ids], dtype=pl.Int8)
    assert rebuild_ids(fragments([16, 17]), sex=sex).null_count() == len(ids)
    assert rebuild_ids(fragments([17])).to_list() == ids  # only the check character hidden: computed
    # the 8 digits a 6,4 mask hides, given by the birth date beside it
    births = birth_digits(pl.Series([f"{v[6:10]}-{v[10:12]}-{v[12:14]}" for v in ids]))
    assert rebuild_ids(fragments(list(range(6, 14))), births).to_list() == ids
    assert birth_digits(pl.Series(["1935-03-15", "19350315", "1935/3/5", "1935-**-**", "1935", "abc", "1935-13-01"])
                        ).to_list() == ["19350315", "19350315", "19350305", "1935****", "1935****", None, None]


def test_a_name_birth_date_and_region_that_match_one_person_of_the_base_library_are_reported() -> None:
    frame = pl.DataFrame({"name": ["欧阳娜娜", "李丽"], "birth": ["1935-03-15", "1999-09-09"],
                          "district": ["浙江省温州市鹿城区", "浙江省温州市瓯海区"]})
    found = [f for f in scan_frame(frame, PEOPLE_NEEDLES, "t") if f.kind == "person_linked"]
    assert [(f.column, f.count, f.sample) for f in found] == [("name + birth + district", 1, "欧***")]
    # a region code works as well (the 6 leading digits of the number), a 公开 name column is exempt
    coded = frame.with_columns(pl.Series("district", ["110105", "330302"]))
    assert [f.count for f in scan_frame(coded, PEOPLE_NEEDLES, "t") if f.kind == "person_linked"] == [1]
    assert [f for f in scan_frame(coded, PEOPLE_NEEDLES, "t", public_columns={"name"})
            if f.kind == "person_linked"] == []


def test_a_name_birth_date_and_region_shared_by_two_persons_pin_down_neither() -> None:
    """Two persons (two ID numbers) with one name, birth date and region: a row showing those three
    matches both, so it gives nobody back; one person's several versions still count as one."""
    twins = [_id("330302", "19800101", 11), _id("330302", "19800101", 23)]
    needles = Needles.of(ids=twins, names=["张伟"],
                         people=[(twins[0], "张伟", "浙江省温州市鹿城区解放路1号"),
                                 (twins[0], "张伟", "浙江省温州市瓯海区娄桥街道2号"),  # moved: a second version
                                 (twins[1], "张伟", "浙江省温州市鹿城区五马街道3号")])
    frame = pl.DataFrame({"name": ["张伟"], "birth": ["1980-01-01"], "region": ["330302"]})
    assert [f for f in scan_frame(frame, needles, "t") if f.kind == "person_linked"] == []
    by_district = pl.DataFrame({"name": ["张伟", "张伟"], "birth": ["1980-01-01"] * 2,
                                "district": ["浙江省温州市鹿城区", "浙江省温州市瓯海区"]})
    found = [f for f in scan_frame(by_district, needles, "t") if f.kind == "person_linked"]
    assert [(f.column, f.count) for f in found] == [("name + birth + district", 1)]  # only 瓯海区: one person


def test_the_row_rules_read_a_column_the_scan_hashed_as_they_would_read_it_alone() -> None:
    """scan_frame hands the person rule the name lookups' hashes of a column; a column holding a
    full-width ＊ (which the row rules read as ``*``, the value lookups as itself) is read again."""
    pid = _id("330302", "19800101", 11)
    needles = Needles.of(ids=[pid], people=[(pid, "李*丽", "浙江省温州市鹿城区解放路1号")])  # a defective name
    for name in ("李*丽", "李＊丽"):
        frame = pl.DataFrame({"name": [name], "birth": ["1980-01-01"], "region": ["330302"]})
        assert [(f.column, f.count) for f in scan_frame(frame, needles, "t") if f.kind == "person_linked"] == [
            ("name + birth + region", 1)], name
        assert [c for c, _, _ in linked_people(frame, needles.people, set())] == [["name", "birth", "region"]]


def test_values_in_markdown_code_spans_are_read_as_their_text() -> None:
    ids = [p[0] for p in PERSONS]
    text = ("| id | birth | name |\n|---|---|---|\n"
            + "".join(f"| `{m}` | `{p[2]}` | `{p[1] if i else '欧***'}` |\n"
                      for i, (m, p) in enumerate(zip(mask(ids, 6, 4), PERSONS, strict=True)))
            + "\n联系人 `李丽`")
    assert markdown_tables(text)[0].row(0) == (mask(ids, 6, 4)[0], "1935-03-15", "欧***")
    assert [(f.location, f.column, f.kind) for f in scan_text(text, PEOPLE_NEEDLES, "预览")] == [
        ("预览 表1", "name", "name"), ("预览 表1", "id + birth", "id_rebuilt"),
        ("预览 表1", "name + birth + id", "person_linked"),  # 李丽, born 1980-01-01, 330302: one person
        ("预览", "text", "name")]


def test_csv_and_json_records_are_read_row_by_row_too(tmp_path: Path) -> None:
    ids = [p[0] for p in PERSONS]
    rows = pl.DataFrame({"id": mask(ids, 6, 4), "birth": [p[2] for p in PERSONS]})
    rows.write_csv(tmp_path / "old.csv")
    (tmp_path / "old.json").write_text(json.dumps({"dataset": "x", "records": rows.to_dicts()}), encoding="utf-8")
    for name in ("old.csv", "old.json"):
        assert [(f.column, f.kind, f.count) for f in scan_file(tmp_path / name, PEOPLE_NEEDLES)] == [
            ("id + birth", "id_rebuilt", 2)]


def test_json_records_are_scanned_as_one_frame_and_everything_around_them_too(tmp_path: Path) -> None:
    doc = {"dataset": "x", "contact": "13812345678",  # outside the records: found as a leaf
           "records": [{"holder": RAW_ID, "n": 13812345678.5, "code": 1}, {"holder": "李***", "n": 1.0, "code": 2}]}
    (tmp_path / "flat.json").write_text(json.dumps(doc), encoding="utf-8")
    found = scan_file(tmp_path / "flat.json", NEEDLES)
    # a JSON number is compared whole: 13812345678.5 is no phone number
    assert sorted((f.column, f.kind, f.count) for f in found) == [("contact", "mobile", 1), ("holder", "id_number", 1)]
    # records holding nested values are read leaf by leaf, as before
    doc["records"][1]["extra"] = {"note": RAW_ID}
    (tmp_path / "nested.json").write_text(json.dumps(doc), encoding="utf-8")
    found = scan_file(tmp_path / "nested.json", NEEDLES)
    assert sorted((f.column, f.kind) for f in found) == [("contact", "mobile"), ("holder", "id_number"),
                                                         ("note", "id_number")]


def test_fullwidth_asterisks_of_a_fingerprinted_file_are_mask_characters_too(tmp_path: Path) -> None:
    # sharing/fingerprint.py writes some mask characters as ＊ (U+FF0A): a file scanned alone must
    # still be read as masked values, whichever glyph each position carries
    ids = [p[0] for p in PERSONS]
    marked = [m[:6] + "＊*＊＊*＊**" + m[14:] for m in mask(ids, 6, 4)]
    frame = pl.DataFrame({"id": marked, "birth": ["1935-03-15", "1980-01-01"]})
    assert [(f.column, f.kind, f.count) for f in scan_frame(frame, PEOPLE_NEEDLES, "t")] == [
        ("id + birth", "id_rebuilt", 2)]
    # a birth date masked with ＊ shows its year only: nothing to complete, as with *
    assert scan_frame(frame.with_columns(pl.Series("birth", ["1935-＊＊-＊＊", "1980-*＊-**"])),
                      PEOPLE_NEEDLES, "t") == []
    # and the region of a ＊-masked ID pins down a person with a full name and birth date
    linked = pl.DataFrame({"name": ["欧阳娜娜", "王五"], "birth": ["1935-03-15", "1990-01-01"],
                           "id": [ids[0][:6] + "＊" * 12, "330302" + "＊*" * 6]})
    assert [(f.column, f.kind, f.count) for f in scan_frame(linked, PEOPLE_NEEDLES, "t") if f.kind != "name"] == [
        ("name + birth + id", "person_linked", 1)]
    frame.write_csv(tmp_path / "extract.csv")
    assert [(f.column, f.kind, f.count) for f in scan_file(tmp_path / "extract.csv", PEOPLE_NEEDLES)] == [
        ("id + birth", "id_rebuilt", 2)]


def test_a_spreadsheet_safe_quote_does_not_hide_a_raw_value_in_a_csv_or_workbook(tmp_path: Path) -> None:
    import xlsxwriter

    from desensitize.display import spreadsheet_safe

    # raw values as spreadsheet_safe writes them: a name stored as =李四, a name and an address
    # with a stray tab / carriage return before them become '=…, '\t…, '\r…
    needles = Needles.of(names=["李丽", "=李四"], addresses=["浙江省温州市鹿城区五马街道解放路12号"])
    raw = pl.DataFrame({"name": ["\t李丽", "=李四"], "addr": ["\r浙江省温州市鹿城区五马街道解放路12号", "x"],
                        "note": ["'=x", "'李丽"]})
    safe = spreadsheet_safe(raw)
    assert safe.row(0)[:2] == ("'\t李丽", "'\r浙江省温州市鹿城区五马街道解放路12号") and safe.item(1, "name") == "'=李四"
    expected = [("name", "name", 2), ("addr", "address", 1)]  # note's '李丽 is not what it writes for 李丽
    safe.write_csv(tmp_path / "x.csv")
    assert kinds(scan_file(tmp_path / "x.csv", needles)) == expected
    book = tmp_path / "x.xlsx"
    wb = xlsxwriter.Workbook(book, {"strings_to_formulas": False, "strings_to_numbers": False})
    ws = wb.add_worksheet("数据")
    for i, row in enumerate(safe.iter_rows()):
        ws.write_row(i, 0, row)
    wb.close()
    assert kinds(scan_file(book, needles)) == [("数据!1", "name", 2), ("数据!2", "address", 1)]


def test_a_large_column_of_few_values_is_looked_up_by_its_distinct_values_with_the_same_findings() -> None:
    """A large column whose first values repeat (codes, masks) is looked up by its distinct values:
    every occurrence of a raw value is still counted, far from the head and repeated, and the sample
    is the first one; a column of distinct values is looked up value by value — the same findings."""
    n = 60_000
    codes = [("1", "2")[i % 2] for i in range(n)]
    for i in (12_345, 40_000, 59_999):
        codes[i] = "李丽"
    codes[50_000] = "13812345678"
    distinct = [f"v{i}" for i in range(n)]
    distinct[30_000] = "欧阳娜娜"
    frame = pl.DataFrame({"code": codes, "distinct": distinct})
    assert kinds(scan_frame(frame, NEEDLES, "t")) == [("code", "mobile", 1), ("code", "name", 3),
                                                      ("distinct", "name", 1)]
    # the same as each value alone
    alone = [kinds(scan_frame(pl.DataFrame({"code": [v]}), NEEDLES, "t")) for v in ("李丽", "13812345678")]
    assert alone == [[("code", "name", 1)], [("code", "mobile", 1)]]


def test_rows_giving_a_person_back_are_found_in_a_large_table_of_repeated_values() -> None:
    """Row rules on a large table whose columns repeat (masks, codes, dates: looked at by their
    distinct values first): the two rows that give a person back are still found among 60,000."""
    ids = [p[0] for p in PERSONS]
    filler = 60_000
    frame = pl.DataFrame({
        "id_number": ["1**************9X"] * filler + mask(ids, 6, 4),
        "birth_date": ["2001-01-01"] * filler + [p[2] for p in PERSONS],
        "gender": ["1", "2"] * (filler // 2) + [p[3] for p in PERSONS],
        "name": ["张*"] * filler + ["欧阳娜娜", "李*"],
        "district": ["浙江省温州市龙湾区"] * filler + ["浙江省温州市鹿城区", "浙江省温州市瓯海区"],
    })
    found = [(f.column, f.kind, f.count) for f in scan_frame(frame, PEOPLE_NEEDLES, "t")]
    assert ("id_number + birth_date", "id_rebuilt", 2) in found
    assert ("name + birth_date + district", "person_linked", 1) in found


def test_a_file_scanned_in_pages_gives_what_one_scan_of_it_gives(tmp_path: Path) -> None:
    """CSV rows and JSON records read and scanned a few at a time (an open release's files at city
    scale): the same findings — counts added over the pages, the first page's sample, the row rules
    across columns, the values around the records — as the file read whole."""
    ids = [p[0] for p in PERSONS]
    rows = pl.DataFrame({
        "id": [*mask(ids, 6, 4), "11***", RAW_ID, "x", RAW_ID, "33***"],
        "birth": [p[2] for p in PERSONS] + ["1990-01-01", "1990-01-02", "-", "1991-01-01", "1992-02-02"],
        "name": ["欧**", "李丽", "王*", "张*", "欧阳娜娜", "李*", "赵*"],
        "phone": ["138****5678", "13812345678", None, "13812345678", "-", "139****0000", "13812345678"],
    })
    rows.write_csv(tmp_path / "release.csv")
    doc = {"dataset": "x", "contact": "13812345678", "rows": rows.height, "records": rows.to_dicts(),
           "after": {"owner": RAW_ID}}
    (tmp_path / "release.json").write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    (tmp_path / "list.json").write_text(json.dumps(rows.to_dicts(), ensure_ascii=False), encoding="utf-8")
    nested = {**doc, "records": [*doc["records"][:3], {"id": "x", "extra": {"note": RAW_ID}}, *doc["records"][3:]]}
    (tmp_path / "nested.json").write_text(json.dumps(nested, ensure_ascii=False), encoding="utf-8")
    needles = Needles.of(ids=[*ids, RAW_ID], mobiles=["13812345678"], names=[p[1] for p in PERSONS],
                         people=[(p[0], p[1], p[4]) for p in PERSONS])
    for name in ("release.csv", "release.json", "list.json"):
        whole = scan_file(tmp_path / name, needles)
        assert whole, name
        for page_rows in (1, 2, 3, 100):
            assert scan_file(tmp_path / name, needles, page_rows=page_rows) == whole, (name, page_rows)
    # records with nested values are read as such page by page: a page of flat records as a frame, the
    # page holding the nested one leaf by leaf — every raw identifier is found either way
    whole = {(f.column, f.kind) for f in scan_file(tmp_path / "nested.json", needles)}
    raw = {(c, k) for c, k in whole if k in ("id_number", "mobile", "name")}
    assert {("note", "id_number"), ("owner", "id_number"), ("contact", "mobile")} <= raw
    for page_rows in (1, 2, 3, 100):
        paged = {(f.column, f.kind) for f in scan_file(tmp_path / "nested.json", needles, page_rows=page_rows)}
        assert raw <= paged, page_rows


def test_a_json_file_is_never_held_more_than_a_few_records_at_a_time(tmp_path: Path, monkeypatch) -> None:
    """Whatever page the caller asks for, a JSON file's records are parsed into Python objects at most
    ``JSON_PAGE_RECORDS`` at a time (a parsed record is ~1 kB: pages of the share steps' 50,000 rows then grew
    an open output's step by ~40 MB); their frames are put together into pages of at most the caller's rows
    before they are scanned (a scan's cost per page: 10,000-row pages took three times as long over 1 M
    records), and the findings are those of the file read whole."""
    from desensitize import leaks

    rows = pl.DataFrame({"id": [RAW_ID, "x", "y", RAW_ID, "z"], "phone": ["13812345678", None, "-", "1", "2"]})
    (tmp_path / "release.json").write_text(json.dumps({"records": rows.to_dicts()}), encoding="utf-8")
    needles = Needles.of(ids=[RAW_ID], mobiles=["13812345678"])
    whole = scan_file(tmp_path / "release.json", needles)
    parsed: list[int] = []
    heights: list[int] = []
    real_frame, real_scan = leaks._records_frame, leaks.scan_frame

    def parsing(page: list):
        parsed.append(len(page))
        return real_frame(page)

    def scanning(frame: pl.DataFrame, *args, **kwargs):
        heights.append(frame.height)
        return real_scan(frame, *args, **kwargs)

    monkeypatch.setattr(leaks, "JSON_PAGE_RECORDS", 2)
    monkeypatch.setattr(leaks, "_records_frame", parsing)
    monkeypatch.setattr(leaks, "scan_frame", scanning)
    assert scan_file(tmp_path / "release.json", needles, page_rows=50_000) == whole
    assert parsed == [2, 2, 1] and heights[:1] == [5]  # the records, one page; then the values around them
    parsed.clear()
    heights.clear()
    assert scan_file(tmp_path / "release.json", needles, page_rows=3) == whole
    assert parsed == [2, 2, 1] and heights[:2] == [2, 3]  # never more than the caller's page


def test_json_record_pages_are_put_together_only_as_the_same_columns_and_types(tmp_path: Path, monkeypatch) -> None:
    """A column with no value in one parsed page takes the type of the others; a key that is a JSON number
    in one page and text in another is scanned as each page holds it: a 12-digit number is compared whole
    (no mobile-shaped run found in its digits), the text beside it searched."""
    from desensitize import leaks

    monkeypatch.setattr(leaks, "JSON_PAGE_RECORDS", 2)
    mobile = "13812345678"
    records = [{"n": None, "v": "a"}, {"n": None, "v": "b"},  # "n" has no value in the first page
               {"n": f"电话{mobile}", "v": "c"}, {"n": "x", "v": "d"},
               {"n": 913812345678, "v": "e"}, {"n": 7, "v": "f"}]  # numbers: exact
    (tmp_path / "mixed.json").write_text(json.dumps({"records": records}), encoding="utf-8")
    needles = Needles.of(mobiles=[mobile])
    heights: list[int] = []
    real_scan = leaks.scan_frame

    def scanning(frame: pl.DataFrame, *args, **kwargs):
        heights.append(frame.height)
        return real_scan(frame, *args, **kwargs)

    monkeypatch.setattr(leaks, "scan_frame", scanning)
    findings = scan_file(tmp_path / "mixed.json", needles, page_rows=50_000)
    assert heights[:2] == [4, 2]  # the null page with the text page; the numbers on their own
    assert [(f.column, f.kind, f.count) for f in findings] == [("n", LeakKind.mobile, 1)]


def _tricky(rng, depth: int = 0):
    """A JSON value whose strings hold quotes, backslashes, brackets and the word records."""
    pieces = ['"', "\\", "\\\\", '\\"', "[", "]", "{", "}", ",", ":", "records", '"records":[', "李丽", " ", "x"]
    kind = rng.randrange(6 if depth < 3 else 3)
    if kind == 0:
        return "".join(rng.choice(pieces) for _ in range(rng.randrange(8)))
    if kind == 1:
        return rng.choice([0, -1.5, 10**20, True, None])
    if kind == 2:
        return RAW_ID if rng.random() < 0.3 else "13812345678"
    if kind == 3:
        return [_tricky(rng, depth + 1) for _ in range(rng.randrange(4))]
    return {_tricky_key(rng): _tricky(rng, depth + 1) for _ in range(rng.randrange(4))}


def _tricky_key(rng) -> str:
    return rng.choice(["records", "rec\\ords", 'a"b', "[", "note", "contact", "records\\", "\\records"])


def test_the_records_array_of_a_json_file_is_found_by_its_bytes_whatever_its_strings_hold(tmp_path: Path) -> None:
    """The vectorised pass (:func:`_records_span`) finds exactly the array ``json`` reads as the records,
    chunk boundaries anywhere (inside a run of backslashes, between a backslash and its quote), and the
    file with that array left out parses to the rest of it; the scan finds what the event-by-event read
    finds."""
    import random

    from desensitize import leaks

    rng = random.Random(11)
    needles = Needles.of(ids=[RAW_ID], mobiles=["13812345678"])
    for n in range(60):
        records = [{_tricky_key(rng): _tricky(rng) for _ in range(rng.randrange(1, 4))} for _ in range(rng.randrange(5))]
        before = {k: _tricky(rng) for k in ("dataset", "fields", "x\\\"records\\\"")[: rng.randrange(4)]}
        after = {"after": _tricky(rng)} if rng.random() < 0.5 else {}
        doc = {**before, "records": records, **after}
        text = json.dumps(doc, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 1, 4]))
        path = tmp_path / f"doc{n}.json"
        path.write_bytes(text.encode("utf-8"))
        data = path.read_bytes()
        for chunk in (1, 2, 3, 5, 16, 1 << 20):
            start, end, objects = leaks._records_span(path, chunk)
            assert json.loads(data[start:end + 1]) == records, (n, chunk)
            assert objects == len(records)
        assert json.loads(data[:start] + b"[]" + data[end + 1:]) == {**doc, "records": []}
        fast = scan_file(path, needles)
        leaks_span, leaks._records_span = leaks._records_span, lambda *a: None
        try:
            assert scan_file(path, needles) == fast, n  # read event by event
        finally:
            leaks._records_span = leaks_span


def test_a_json_file_whose_records_key_is_spelt_with_escapes_is_read_event_by_event(tmp_path: Path) -> None:
    """A key that JSON reads as ``records`` but whose bytes say otherwise is not found by the byte pass:
    the values around the records are still read (event by event), none skipped."""
    from desensitize import leaks

    text = '{"\\u0072ecords": [{"id": "x"}], "owner": "' + RAW_ID + '", "records": [{"id": "y"}]}'
    (tmp_path / "escaped.json").write_text(text, encoding="utf-8")
    needles = Needles.of(ids=[RAW_ID])
    assert [(f.column, f.kind) for f in scan_file(tmp_path / "escaped.json", needles)] == [("owner", "id_number")]
    start, end, objects = leaks._records_span(tmp_path / "escaped.json")
    assert (text.encode()[start:end + 1], objects) == (b'[{"id": "y"}]', 1)  # the literal key's array only


def test_a_column_of_few_values_is_matched_by_its_distinct_values_and_counted_row_by_row() -> None:
    """A large column of few distinct values is matched value by value once, each finding counting every
    row it stands in (and every run of a value that holds two), its sample the first row's."""
    rows = 60_000
    cycle = [f" {RAW_ID} ", "abc", f"{RAW_ID}/13812345678", "欧阳娜娜", "13812345678 或 13812345678", "1.5"]
    frame = pl.DataFrame({"note": [cycle[i % len(cycle)] for i in range(rows)],
                          "unique": [f"u{i}" for i in range(rows - 1)] + [RAW_ID]})
    found = {(f.column, f.kind): f.count for f in scan_frame(frame, NEEDLES, "t")}
    per = rows // len(cycle)
    assert found == {("note", "id_number"): 2 * per, ("note", "mobile"): 3 * per, ("note", "name"): per,
                     ("unique", "id_number"): 1}
    # the same as page by page, where no page is large enough to be told by its distinct values
    small = [scan_frame(frame.slice(i, 1_000), NEEDLES, "t") for i in range(0, rows, 1_000)]
    assert {(f.column, f.kind): f.count for f in merge_findings(small, frame.columns)} == found


def test_a_key_repeated_beside_the_records_is_read_each_time(tmp_path: Path) -> None:
    """JSON readers differ on a repeated key (Python's dict keeps the last): the scan reads every one."""
    text = '{"owner": "' + RAW_ID + '", "owner": "x", "records": [{"id": "y"}]}'
    (tmp_path / "twice.json").write_text(text, encoding="utf-8")
    found = scan_file(tmp_path / "twice.json", Needles.of(ids=[RAW_ID]))
    assert [(f.column, f.kind, f.count) for f in found] == [("owner", "id_number", 1)]
