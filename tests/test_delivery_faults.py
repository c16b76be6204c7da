"""Deliveries wrong in ways a department does not notice, through ODS and std on SQLite and
PostgreSQL: every record is counted and either accepted or quarantined with one clear reason, the
two databases store the same thing, and no credential of a channel's URL is stored anywhere."""

from __future__ import annotations

import datetime as dt
import os

import openpyxl
import polars as pl
import sqlalchemy as sa

from guiji.base import merge_library
from guiji.std import collect
from pipelines.summary import summary_lines
from quality.terminal import width
from tests import citykit
from tests.citykit import PEOPLE
from warehouse.ods import read_ods
from warehouse.store import Warehouse

DAY = dt.date(2026, 10, 9)
HEADER = ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"]


def quarantine(wh: Warehouse, resource_id: str) -> pl.DataFrame:
    schema = {"row_no": pl.Int64(), "field": pl.String(), "reason_code": pl.String(), "reason": pl.String(),
              "raw_value": pl.String()}
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT row_no, field, reason_code, reason, raw_value FROM "
                             f"{wh.qualified('quality', 'quarantine')} WHERE resource_id = :r ORDER BY row_no",
                       schema, {"r": resource_id})


def batch_row(wh: Warehouse, resource_id: str) -> dict:
    with wh.engine.connect() as conn:
        return dict(conn.execute(sa.text(
            f"SELECT rows_delivered, rows_unparseable, problems, unreadable_bytes, unreadable_lines, status "
            f"FROM {wh.qualified('ods', 'batches')} WHERE resource_id = :r"), {"r": resource_id}).one()._mapping)


def stored_ods(wh: Warehouse, cat, resource_id: str) -> pl.DataFrame:
    """The ODS batch as read back from the warehouse (not the in-memory rows of the step)."""
    res = cat.resource(resource_id)
    with wh.engine.connect() as conn:
        return read_ods(wh, conn, res, f"{resource_id}.{DAY:%Y%m%d}.1")


def test_a_utf8_file_catalogued_as_gbk_is_quarantined_whole_with_one_reason(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.write_csv(landing / "hz" / f"{DAY:%Y%m%d}" / "renkou.csv", HEADER, [list(p) for p in PEOPLE],
                      encoding="utf-8")
    received, std = collect(warehouse, cat, cat.resource("huzheng_renkou"), DAY, landing)
    assert (std.delivered, std.accepted, std.quarantined) == (3, 0, 3)  # no garbled name is accepted
    q = quarantine(warehouse, "huzheng_renkou")
    assert q.select("row_no", "field", "reason_code").rows() == [(1, None, "wrong_encoding"), (2, None, "wrong_encoding"),
                                                                 (3, None, "wrong_encoding")]
    reason = "文件 renkou.csv 的编码不是目录声明的 GBK: 可按 UTF-8 完整解码; 整个文件隔离, 请按 GBK 重新交付或更正目录"
    assert set(q.get_column("reason")) == {reason}
    assert q.get_column("raw_value")[1] == ";".join(PEOPLE[1])  # the record as it reads in UTF-8
    b = batch_row(warehouse, "huzheng_renkou")
    assert b["problems"] == f"{reason} (共 3 条记录)" and b["rows_unparseable"] == 3 and b["status"] == "ok"


def test_a_nul_character_is_stored_and_quarantined_the_same_on_both_databases(warehouse: Warehouse, city) -> None:
    cat, landing = city
    rows = [list(p) for p in PEOPLE]
    rows[1][1] = "李\x00丽"
    citykit.write_csv(landing / "hz" / f"{DAY:%Y%m%d}" / "renkou.csv", HEADER, rows)
    _, std = collect(warehouse, cat, cat.resource("huzheng_renkou"), DAY, landing)
    assert stored_ods(warehouse, cat, "huzheng_renkou").get_column("XINGMING").to_list() == ["王小明", "李␀丽", "赵强"]
    assert (std.delivered, std.accepted, std.quarantined) == (3, 2, 1)
    assert quarantine(warehouse, "huzheng_renkou").rows() == [
        (2, "full_name", "nul_byte", "含 NUL 空字符 (贴源层记为 ␀)", "李␀丽")]


def test_a_formula_cell_without_a_value_is_quarantined_naming_the_cell(warehouse: Warehouse, city) -> None:
    cat, landing = city
    path = landing / "gs" / f"{DAY:%Y%m%d}" / "xuke.xlsx"
    path.parent.mkdir(parents=True)
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in (["许可证号", "企业代码", "企业名称"], ["B-01", citykit.ORGS[0][0], '=CONCAT("山海", "渔业")'],
                ["B-02", citykit.ORGS[1][0], citykit.ORGS[1][1]]):
        ws.append(row)
    wb.save(path)
    _, std = collect(warehouse, cat, cat.resource("gongshang_xuke"), DAY, landing)
    assert (std.delivered, std.accepted, std.quarantined) == (2, 1, 1)
    assert quarantine(warehouse, "gongshang_xuke").rows() == [
        (1, "holder_name", "formula_no_value",
         "文件 xuke.xlsx 单元格 C2 是公式, 文件中没有计算结果 (请在 Excel 中计算并保存后重新交付)", '=CONCAT("山海", "渔业")')]
    assert stored_ods(warehouse, cat, "gongshang_xuke").get_column("企业名称")[0] == '\ufffcC2=CONCAT("山海", "渔业")'


def test_a_huge_field_or_a_repeated_header_still_counts_every_record(warehouse: Warehouse, city) -> None:
    """A 10 MB field and a header naming a column twice made the files "unreadable": 0 = 0 + 0."""
    cat, landing = city
    folder = landing / "hz" / f"{DAY:%Y%m%d}"
    people = [[citykit.id_number("370202", "19800101", i), f"人{i}", "M" if i % 2 else "F", "19800101"]
              for i in range(1, 183)]
    people[90][1] = "名" * (10 * 1024 * 1024 // 2)  # 10 MB in GBK
    citykit.write_csv(folder / "a_big.csv", HEADER, people)
    citykit.write_csv(folder / "b_dup.csv", [*HEADER, "XINGMING"], [[*p, "别名"] for p in PEOPLE])
    received, std = collect(warehouse, cat, cat.resource("huzheng_renkou"), DAY, landing)
    assert received.batch.rows_delivered == 185 and std.delivered == std.accepted + std.quarantined == 185
    q = quarantine(warehouse, "huzheng_renkou")
    assert q.filter(pl.col("reason_code") == "unparseable").height == 3  # the repeated header's records
    assert std.accepted == 182 and std.reconciliation == "185 = 182 + 3"


def test_a_file_whose_records_cannot_be_split_fails_its_batch_with_its_size(warehouse: Warehouse, city) -> None:
    cat, landing = city
    citykit.deliver_day1(landing, DAY)
    broken = b"PK\x03\x04 this is\nnot a\nworkbook"
    (landing / "gs" / f"{DAY:%Y%m%d}" / "xuke.xlsx").write_bytes(broken)
    for r in cat.resources:
        collect(warehouse, cat, r, DAY, landing, variables=os.environ)
    received, std = collect(warehouse, cat, cat.resource("gongshang_xuke"), DAY, landing)
    b = batch_row(warehouse, "gongshang_xuke")
    assert (b["rows_delivered"], b["unreadable_bytes"], b["unreadable_lines"], b["status"]) == (0, len(broken), 3, "failed")
    n = len(broken)
    assert b["problems"].startswith(f"xuke.xlsx: 无法读取 (xlsx), 无法拆分出任何记录 ({n} 字节, 3 行), 批次记为失败")
    assert std.reconciliation == f"0 = 0 + 0 · 批次失败: 另有无法拆分为记录的文件 ({n} 字节, 3 行), 其记录未计入"
    lines = summary_lines(warehouse, cat, DAY)
    line = next(x for x in lines if x.startswith("gongshang/xuke"))
    assert f"✗  批次失败: 无法拆分为记录的文件 {n} 字节 / 3 行" in line
    # padded by display width: every batch date ends where the header's 最近批次 does
    rows = [x for x in lines if x.startswith(("资源", *[f"{r.department}/{r.code}" for r in cat.resources]))]
    assert len(rows) == len(cat.resources) + 1
    assert len({width(x[: x.index(cell) + len(cell)]) for x, cell in
                zip(rows, ["最近批次", *[str(DAY)] * len(cat.resources)], strict=True)}) == 1
    assert batch_row(warehouse, "huzheng_renkou")["status"] == "ok"


def test_no_credential_of_a_channel_url_is_stored_anywhere(warehouse: Warehouse, city, pg_url: str,
                                                           monkeypatch) -> None:
    """An API URL with ``user:pass@`` and an access token, a 前置库 URL with a password: after the
    whole day's run no table holds any of them (sources, rows' ``_source``, problems, lineage)."""
    cat, landing = city
    citykit.deliver_day1(landing, DAY)
    api = sa.engine.make_url(os.environ["SHANHAI_QIYE_URL"])
    monkeypatch.setenv("SHANHAI_QIYE_URL", f"http://apiuser:api-s3cret@{api.host}:{api.port}/qiye?access_token=tok-s3cret")
    qzk = sa.engine.make_url(pg_url)
    engine = sa.create_engine(qzk)
    with engine.begin() as conn:  # the 社保 前置库 on a PostgreSQL server that asks for a password
        conn.execute(sa.text('CREATE TABLE "CB" ("ZJHM" text, "NAME" text, "TEL" text, "UPD" text)'))
        conn.execute(sa.text('INSERT INTO "CB" VALUES (:z, :n, :t, :u)'),
                     [{"z": p[0], "n": p[1], "t": "13800000001", "u": f"{DAY} 08:00:00"} for p in PEOPLE])
    engine.dispose()
    monkeypatch.setenv("SHANHAI_SB_URL", qzk.set(password="db-s3cret").render_as_string(hide_password=False))
    for r in cat.resources:
        collect(warehouse, cat, r, DAY, landing, variables=os.environ)
    for lib in cat.libraries:
        merge_library(warehouse, cat, lib.code, DAY)
    found = []
    insp = sa.inspect(warehouse.engine)
    with warehouse.engine.connect() as conn:
        for schema in (["ods", "std", "base", "quality", "audit"] if warehouse.is_postgres else [None]):
            for t in insp.get_table_names(schema=schema):
                name = f'"{schema}"."{t}"' if schema else f'"{t}"'
                for row in conn.execute(sa.text(f"SELECT * FROM {name}")):
                    found += [f"{t}: {v}" for v in row if isinstance(v, str) and ("s3cret" in v or "apiuser" in v)]
        sources = dict(conn.execute(sa.text(f"SELECT resource_id, sources FROM {warehouse.qualified('ods', 'batches')}")
                                    ).fetchall())
    assert found == []
    assert sources["gongshang_qiye"] == f"{api.host}:{api.port}/qiye?date={DAY}"
    assert sources["shebao_canbao"] == f"CB@{qzk.database}"
