"""The leak scanner on frames, Markdown previews and files: what it finds, what it must not flag."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl

from desensitize.leaks import Needles, markdown_tables, scan_file, scan_frame, scan_text, scan_tree

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
    assert NEEDLES.addresses.to_list() == ["浙江省温州市鹿城区五马街道解放路12号"]
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
