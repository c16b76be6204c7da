"""The catalogue loader: the demo city loads, and every kind of mistake is named precisely."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from catalog.loader import DEMO_CATALOGUE, CatalogueError, load_catalogue
from catalog.schema import schema_texts

REPO = Path(__file__).resolve().parent.parent


def test_the_demo_city_has_every_department_resource_and_library_of_the_spec() -> None:
    cat = load_catalogue(DEMO_CATALOGUE)
    assert {d.code for d in cat.departments} == {"gaj", "wjw", "mzj", "rsj", "scjg", "swj", "zrzy"}
    assert {r.id for r in cat.resources} == {
        "gaj_hjrk", "wjw_csyxzm", "mzj_hydj", "rsj_sbcb", "scjg_qydj", "swj_nsrdj",
        "zrzy_bzdz", "zrzy_bdcqz", "scjg_yyzz", "mzj_jhz",
    }
    assert [lib.name for lib in cat.libraries] == ["人口基础库", "法人基础库", "空间地理基础库", "电子证照基础库"]
    assert {r.channel.kind for r in cat.resources} == {"file", "database", "api"}
    assert cat.resource("rsj_sbcb").channel.encoding == "gbk"
    assert cat.authority("person", "marital_status") == "mzj"
    assert cat.authority("license", "holder_name") == {"01": "scjg", "02": "zrzy", "03": "mzj"}
    assert cat.codes["gender"]["1"] == "男" and len(cat.codes["ethnicity"]) == 56


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    dst = tmp_path / "city"
    shutil.copytree(DEMO_CATALOGUE, dst)
    return dst


def edit(path: Path, change) -> None:
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    change(data)
    path.write_text(yaml.safe_dump(data, allow_unicode=True, sort_keys=False), encoding="utf-8")


def problems(folder: Path) -> str:
    with pytest.raises(CatalogueError) as info:
        load_catalogue(folder)
    return str(info.value)


def element(data: dict, lib: str, code: str) -> dict:
    return next(e for e in next(x for x in data["libraries"] if x["code"] == lib)["elements"] if e["code"] == code)


def test_two_authorities_for_one_element_are_rejected_naming_element_and_departments(folder: Path) -> None:
    edit(folder / "catalogue.yaml", lambda d: element(d, "person", "name").update(authority=["gaj", "wjw"]))
    msg = problems(folder)
    assert "catalogue.yaml" in msg and "elements.1(name)" in msg and "gaj, wjw" in msg and "一数一源" in msg


def test_an_element_without_authority_is_rejected(folder: Path) -> None:
    edit(folder / "catalogue.yaml", lambda d: element(d, "person", "mobile").pop("authority"))
    msg = problems(folder)
    assert "mobile(手机号码) 没有权威部门" in msg


def test_a_discriminator_value_with_two_authorities_is_rejected(folder: Path) -> None:
    def change(d):
        lib = next(x for x in d["libraries"] if x["code"] == "license")
        lib["discriminator"]["authorities"]["02"] = ["zrzy", "scjg"]
    edit(folder / "catalogue.yaml", change)
    assert "license_type=02 有 2 个: zrzy, scjg" in problems(folder)


def test_an_authority_that_delivers_no_such_element_is_rejected(folder: Path) -> None:
    edit(folder / "catalogue.yaml", lambda d: element(d, "person", "mobile").update(authority="wjw"))
    assert "权威部门 wjw 没有任何资源提供该数据元 (提供者: rsj)" in problems(folder)


def test_a_resource_mapping_an_unknown_element_names_file_path_and_choices(folder: Path) -> None:
    edit(folder / "resources" / "rsj_sbcb.yaml", lambda d: d["fields"][1].update(element="xingming"))
    msg = problems(folder)
    assert "rsj_sbcb.yaml: fields.1.element: 'xingming' 不是 人口基础库 的数据元" in msg
    assert "id_number, name" in msg


def test_type_errors_name_the_file_and_path(folder: Path) -> None:
    edit(folder / "resources" / "gaj_hjrk.yaml", lambda d: d.update(update_cycle="每两天"))
    edit(folder / "resources" / "mzj_jhz.yaml", lambda d: d["channel"].update(encoding="latin-1"))
    msg = problems(folder)
    assert "gaj_hjrk.yaml: update_cycle:" in msg and "每两天" in msg
    assert "mzj_jhz.yaml: channel.file.encoding:" in msg


def test_unknown_departments_code_values_and_broken_yaml_are_all_reported_at_once(folder: Path) -> None:
    edit(folder / "resources" / "swj_nsrdj.yaml", lambda d: d.update(department="sj"))
    edit(folder / "resources" / "scjg_qydj.yaml", lambda d: d["fields"][7]["codes"].update({"歇业": "9"}))
    (folder / "resources" / "broken.yaml").write_text("code: [unclosed\n", encoding="utf-8")
    msg = problems(folder)
    assert "swj_nsrdj.yaml: department: 未登记的部门 'sj'" in msg
    assert "scjg_qydj.yaml: fields.7.codes: 映射到代码表 business_status 中不存在的代码 ['9']" in msg
    assert "broken.yaml: 无法读取 YAML" in msg


def test_a_missing_catalogue_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogueError, match="catalogue.yaml: 文件不存在"):
        load_catalogue(tmp_path)


def test_the_published_json_schemas_match_the_models() -> None:
    for name, text in schema_texts().items():
        assert (REPO / "docs" / name).read_text(encoding="utf-8") == text, "run: gongshu catalog schema --out docs"


def test_paths_that_leave_the_landing_or_catalogue_folder_are_rejected(folder: Path, capsys) -> None:
    from pipelines.cli import main

    edit(folder / "resources" / "mzj_jhz.yaml", lambda d: d["channel"].update(path="../../outside/*.csv"))
    edit(folder / "resources" / "swj_nsrdj.yaml", lambda d: d["channel"].update(path="/etc/*"))
    edit(folder / "catalogue.yaml", lambda d: d["codelists"][0].update(file="../../etc/passwd"))
    (folder / "codelists" / "street.csv").unlink()
    (folder / "codelists" / "street.csv").symlink_to(folder.parent / "elsewhere.csv")
    (folder.parent / "elsewhere.csv").write_text("code,name\n1,x\n", encoding="utf-8")
    msg = problems(folder)
    assert "mzj_jhz.yaml: channel.path: '../../outside/*.csv' 含 '..', 会离开所在目录 (期望: 交付目录 GONGSHU_LANDING 内的相对路径)" in msg
    assert "swj_nsrdj.yaml: channel.path: '/etc/*' 是绝对路径" in msg
    assert "catalogue.yaml: codelists.0.file: '../../etc/passwd' 含 '..'" in msg
    assert "catalogue.yaml: codelists.4.file: 'codelists/street.csv' 实际指向目录文件夹之外的" in msg
    assert main(["catalog", "check", str(folder)]) == 2
    assert "mzj_jhz.yaml: channel.path" in capsys.readouterr().err


def test_a_key_written_twice_in_a_mapping_is_rejected_with_file_line_and_key(folder: Path) -> None:
    main = folder / "catalogue.yaml"
    lines = main.read_text(encoding="utf-8").splitlines(keepends=True)
    n = next(i for i, line in enumerate(lines) if "{code: name, name: 姓名" in line)
    lines[n] = lines[n].replace("authority: gaj}", "authority: gaj, authority: gaj}")
    main.write_text("".join(lines), encoding="utf-8")
    jhz = folder / "resources" / "mzj_jhz.yaml"
    jhz.write_text(jhz.read_text(encoding="utf-8").replace("name: 结婚证\n", "name: 结婚证\nname: 结婚证书\n"),
                   encoding="utf-8")
    msg = problems(folder)
    assert f"catalogue.yaml: 第 {n + 1} 行: 重复的键 'authority' (第 {n + 1} 行已有; 后者会静默覆盖前者)" in msg
    assert "mzj_jhz.yaml: 第 3 行: 重复的键 'name' (第 2 行已有" in msg
    # a key merged in with a YAML anchor may still be overridden, as YAML intends
    from catalog.loader import read_yaml

    anchors = folder / "anchors.yaml"
    anchors.write_text("base: &b {kind: file, format: csv}\nthis:\n  <<: *b\n  format: xlsx\n", encoding="utf-8")
    assert read_yaml(anchors)["this"] == {"kind": "file", "format": "xlsx"}
