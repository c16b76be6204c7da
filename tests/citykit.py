"""A second, different city (山海市) written by the tests: other departments, resources, column
names and channels than the demo. The product must run it end to end with no code change.

Every delivery is written by hand here so that tests know each value they assert on.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
import textwrap
from pathlib import Path

import xlsxwriter

W_ID = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2]
ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
W_USCC = [1, 3, 9, 27, 19, 26, 16, 17, 20, 29, 25, 13, 8, 24, 10, 30, 28]


def id_number(region: str, birth: str, seq: int) -> str:
    """A valid 18-digit ID number (the test's own implementation of GB 11643)."""
    body = f"{region}{birth}{seq:03d}"
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, W_ID, strict=True)) % 11]


def uscc(body17: str) -> str:
    s = sum(ALPHABET.index(c) * w for c, w in zip(body17, W_USCC, strict=True))
    return body17 + ALPHABET[(31 - s % 31) % 31]


CATALOGUE = """\
city: {code: shanhai, name: 山海市, first_batch_date: 2026-09-01, region_codes: ["370202", "370203"]}
departments:
  - {code: huzheng, name: 户政中心, emails: [hz@shanhai.example]}
  - {code: shebao, name: 社保中心}
  - {code: gongshang, name: 工商所}
  - {code: zhengzhao, name: 证照中心}
codelists:
  - {code: sex, name: 性别, file: codes/sex.csv}
  - {code: kind, name: 证照种类, file: codes/kind.csv}
libraries:
  - code: people
    name: 人口库
    key: [pid]
    elements:
      - {code: pid, name: 身份号码, type: id_number, required: true, sensitivity: 高度敏感}
      - {code: full_name, name: 姓名, type: string, semantic: person_name, sensitivity: 敏感, authority: huzheng}
      - {code: sex, name: 性别, type: code, codelist: sex, authority: huzheng, derived_from_id: gender}
      - {code: dob, name: 出生日期, type: date, authority: huzheng, derived_from_id: birth_date}
      - {code: phone, name: 电话, type: mobile, sensitivity: 敏感, authority: shebao}
  - code: org
    name: 机构库
    key: [code]
    elements:
      - {code: code, name: 信用代码, type: uscc, required: true, sensitivity: 公开}
      - {code: title, name: 名称, type: string, semantic: org_name, sensitivity: 公开, authority: gongshang}
      - {code: capital, name: 资本, type: decimal, authority: gongshang}
  - code: permits
    name: 证照库
    key: [kind, number]
    discriminator: {element: kind, authorities: {A: zhengzhao, B: gongshang}}
    elements:
      - {code: kind, name: 种类, type: code, codelist: kind}
      - {code: number, name: 编号, type: string}
      - {code: holder, name: 持有人, type: string, sensitivity: 高度敏感}
      - {code: holder_name, name: 持有人名称, type: string, sensitivity: 敏感}
    references:
      - element: holder
        name_field: holder_name
        targets:
          - {library: people, when_type: id_number, name_element: full_name}
          - {library: org, when_type: uscc, name_element: title}
"""

RESOURCES = {
    "huzheng_renkou.yaml": """\
        code: renkou
        name: 常住人口
        department: huzheng
        library: people
        update_cycle: 每日
        share: 有条件共享
        open: 不予开放
        channel: {kind: file, path: "hz/{date:%Y%m%d}/*.csv", format: csv, encoding: gbk, delimiter: ";"}
        key: [pid]
        fields:
          - {column: SFZ, element: pid}
          - {column: XINGMING, element: full_name}
          - {column: XINGBIE, element: sex, codes: {M: "1", F: "2"}}
          - {column: SHENGRI, element: dob, formats: ["%Y%m%d", "%Y-%m-%d"]}
        """,
    "shebao_canbao.yaml": """\
        code: canbao
        name: 参保人员
        department: shebao
        library: people
        update_cycle: 每周
        share: 有条件共享
        open: 不予开放
        channel: {kind: database, url_env: SHANHAI_SB_URL, default_url: "sqlite:///{landing}/sb.db", table: CB, watermark: UPD}
        key: [pid]
        fields:
          - {column: ZJHM, element: pid}
          - {column: NAME, element: full_name}
          - {column: TEL, element: phone}
        """,
    "gongshang_qiye.yaml": """\
        code: qiye
        name: 企业名录
        department: gongshang
        library: org
        update_cycle: 每日
        share: 无条件共享
        open: 无条件开放
        channel: {kind: api, url: "http://127.0.0.1:9/qiye", url_env: SHANHAI_QIYE_URL, page_size: 2, retries: 1, timeout_s: 2}
        key: [code]
        fields:
          - {column: code, element: code}
          - {column: title, element: title}
          - {column: capital, element: capital}
        """,
    "zhengzhao_zheng.yaml": """\
        code: zheng
        name: A类证照
        department: zhengzhao
        library: permits
        update_cycle: 每日
        share: 有条件共享
        open: 不予开放
        channel: {kind: file, path: "zz/{date:%Y%m%d}/*.json", format: json}
        key: [kind, number]
        constants: {kind: A}
        fields:
          - {column: "no", element: number}
          - {column: owner, element: holder}
          - {column: owner_name, element: holder_name}
        """,
    "gongshang_xuke.yaml": """\
        code: xuke
        name: B类许可
        department: gongshang
        library: permits
        update_cycle: 每月
        share: 无条件共享
        open: 无条件开放
        channel: {kind: file, path: "gs/{date:%Y%m%d}/*.xlsx", format: xlsx}
        key: [kind, number]
        constants: {kind: B}
        fields:
          - {column: 许可证号, element: number}
          - {column: 企业代码, element: holder}
          - {column: 企业名称, element: holder_name}
        """,
}

# How the generator invents a 山海市 of any size and breaks it (gongshu generate reads synthetic.yaml
# beside the catalogue): every defect class it can inject into this catalogue, a stale and a truncated
# resource. Used by the score-detection test on the second catalogue.
SYNTHETIC = """\
libraries:
  people:
    size: 1.0
    elements:
      pid: {range: ["1940-01-01", "2020-12-31"], local_share: 1.0}
  org:
    size: 0.1
    elements:
      capital: {range: [1, 5000], decimals: 1}
resources:
  huzheng_renkou: {coverage: 1.0}
  shebao_canbao: {coverage: 0.7}
  gongshang_qiye: {coverage: 1.0}
  zhengzhao_zheng:
    size: 0.05
    holders: {people: 1.0}
    elements:
      number: {template: "A{seq:08d}"}
  gongshang_xuke:
    size: 0.05
    holders: {org: 1.0}
    elements:
      number: {template: "B-{seq:06d}"}
stale: {resource: gongshang_xuke, days_before: 70}
truncated: {resource: gongshang_qiye, keep: 0.3}
defects:
  invalid_id_checksum: {rate: 0.01, resources: [huzheng_renkou, shebao_canbao]}
  invalid_uscc_checksum: {rate: 0.01, resources: [gongshang_qiye]}
  malformed_mobile: {rate: 0.01, resources: [shebao_canbao]}
  id_birth_mismatch: {rate: 0.01, resources: [huzheng_renkou]}
  id_gender_mismatch: {rate: 0.01, resources: [huzheng_renkou]}
  conflict: {rate: 0.01, resources: [shebao_canbao]}
  duplicate_key: {rate: 0.01, resources: [huzheng_renkou, gongshang_qiye, zhengzhao_zheng]}
  missing_required: {rate: 0.01, resources: [huzheng_renkou]}
  holder_missing: {rate: 0.01, resources: [zhengzhao_zheng]}
  holder_name_mismatch: {rate: 0.01, resources: [zhengzhao_zheng]}
  unparseable_wrong_columns: {rate: 0.01, resources: [huzheng_renkou]}
  unparseable_bad_date: {rate: 0.01, resources: [huzheng_renkou]}
  unparseable_bad_encoding: {rate: 0.01, resources: [huzheng_renkou]}
"""

PEOPLE = [  # (pid, name, sex, dob)
    (id_number("370202", "19800101", 11), "王小明", "M", "19800101"),
    (id_number("370203", "19920315", 22), "李丽", "F", "19920315"),
    (id_number("370202", "20010709", 33), "赵强", "M", "20010709"),
]
ORGS = [(uscc("91370202MA0000001"), "山海渔业有限公司", "120.5"), (uscc("91370203MA0000002"), "山海港务公司", "88")]


def write_catalogue(root: Path) -> Path:
    """Write the 山海市 catalogue folder under ``root`` and return it."""
    folder = root / "shanhai"
    (folder / "resources").mkdir(parents=True, exist_ok=True)
    (folder / "codes").mkdir(exist_ok=True)
    (folder / "catalogue.yaml").write_text(CATALOGUE, encoding="utf-8")
    (folder / "codes" / "sex.csv").write_text("code,name\n1,男\n2,女\n", encoding="utf-8")
    (folder / "codes" / "kind.csv").write_text("code,name\nA,A类证照\nB,B类许可\n", encoding="utf-8")
    for name, text in RESOURCES.items():
        (folder / "resources" / name).write_text(textwrap.dedent(text), encoding="utf-8")
    (folder / "synthetic.yaml").write_text(SYNTHETIC, encoding="utf-8")
    return folder


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, encoding: str = "gbk", delimiter: str = ";",
              raw_tail: bytes = b"") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = "\n".join(delimiter.join(r) for r in [header, *rows]) + "\n"
    path.write_bytes(text.encode(encoding) + raw_tail)


def write_db(landing: Path, rows: list[tuple[str, str, str, str]]) -> None:
    """Append (ZJHM, NAME, TEL, UPD) rows to the 社保 前置库."""
    landing.mkdir(parents=True, exist_ok=True)
    con = sqlite3.connect(landing / "sb.db")
    con.execute("CREATE TABLE IF NOT EXISTS CB (ZJHM TEXT, NAME TEXT, TEL TEXT, UPD TEXT)")
    con.executemany("INSERT INTO CB VALUES (?, ?, ?, ?)", rows)
    con.commit()
    con.close()


def write_api(landing: Path, day: dt.date, records: list[dict]) -> None:
    path = landing / "api" / "qiye" / f"{day:%Y%m%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")


def write_json(path: Path, records: list[dict]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(records, ensure_ascii=False), encoding="utf-8")


def write_xlsx(path: Path, header: list[str], rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    wb = xlsxwriter.Workbook(str(path))
    ws = wb.add_worksheet("Sheet1")
    for r, row in enumerate([header, *rows]):
        for c, v in enumerate(row):
            ws.write_string(r, c, v)
    wb.close()


def deliver_day1(landing: Path, day: dt.date) -> None:
    """A full first delivery of every resource, clean except where the tests say otherwise."""
    d = f"{day:%Y%m%d}"
    write_csv(landing / "hz" / d / "renkou.csv", ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"],
              [[p, n, s, b] for p, n, s, b in PEOPLE])
    ts = f"{day:%Y-%m-%d} 08:00:00"
    write_db(landing, [(PEOPLE[0][0], PEOPLE[0][1], "13800000001", ts), (PEOPLE[1][0], PEOPLE[1][1], "13900000002", ts)])
    write_api(landing, day, [{"code": c, "title": t, "capital": k} for c, t, k in ORGS])
    write_json(landing / "zz" / d / "zheng.json",
               [{"no": "A-0001", "owner": PEOPLE[0][0], "owner_name": PEOPLE[0][1]},
                {"no": "A-0002", "owner": PEOPLE[1][0], "owner_name": PEOPLE[1][1]}])
    write_xlsx(landing / "gs" / d / "xuke.xlsx", ["许可证号", "企业代码", "企业名称"],
               [["B-01", ORGS[0][0], ORGS[0][1]]])
