"""Delivery channels: files (csv utf-8/gbk, xlsx, json), 前置库 and paged API, good and broken."""

from __future__ import annotations

import datetime as dt
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import polars as pl
import pytest

from catalog.loader import load_catalogue
from guiji.channels import DeliveryError, frame_digest, parse_csv, read_api, read_database, read_files
from guiji.ods import read_window
from pipelines.demo_api import serve_in_thread
from tests import citykit

DAY = dt.date(2026, 10, 9)


@pytest.fixture
def cat(tmp_path: Path):
    return load_catalogue(citykit.write_catalogue(tmp_path))


def test_gbk_csv_with_a_custom_delimiter_reads_every_value_as_text() -> None:
    data = "SFZ;XINGMING\n0011;张三\n0012;李四\n".encode("gbk")
    frame, problems = parse_csv(data, "a.csv", ["SFZ", "XINGMING"], "gbk", ";")
    assert problems == []
    assert frame.select("_row_no", "SFZ", "XINGMING").rows() == [(1, "0011", "张三"), (2, "0012", "李四")]


def test_broken_csv_lines_are_kept_with_their_line_number_and_reason() -> None:
    data = b"A,B\n1,2\n3\n4,5,6\n\"7,x\",8\n"
    frame, problems = parse_csv(data, "b.csv", ["A", "B"], "utf-8", ",")
    assert frame.select("_row_no", "A", "_raw", "_error").rows() == [
        (1, "1", None, None),
        (2, None, "3", "列数不符: 期望 2 列, 实际 1 列"),
        (3, None, "4,5,6", "列数不符: 期望 2 列, 实际 3 列"),
        (4, "7,x", None, None),
    ]
    assert problems == ["b.csv: 2 行列数不符 (第 2, 3 行)"]


def test_bytes_that_are_not_gbk_survive_as_replacement_characters_in_their_field() -> None:
    data = "A,B\n".encode("gbk") + "甲,".encode("gbk") + b"\xff\xfe\n" + "乙,丙\n".encode("gbk")
    frame, _ = parse_csv(data, "c.csv", ["A", "B"], "gbk", ",")
    assert frame.get_column("A").to_list() == ["甲", "乙"]
    assert "\ufffd" in frame.get_column("B")[0] and frame.get_column("B")[1] == "丙"


def test_a_file_missing_a_declared_column_is_reported_and_every_row_flagged() -> None:
    frame, problems = parse_csv(b"A,C\n1,2\n", "d.csv", ["A", "B"], "utf-8", ",")
    assert problems == ["d.csv: 表头缺少列 B (期望: A, B)"]
    assert frame.get_column("_error").to_list() == ["表头缺少列 B"]


def test_xlsx_and_json_files_are_read_through_the_catalogue(cat, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    citykit.write_xlsx(landing / "gs" / "20261009" / "x.xlsx", ["许可证号", "企业代码", "企业名称"], [["B-1", "X", "甲公司"]])
    citykit.write_json(landing / "zz" / "20261009" / "z.json", [{"no": "A-1", "owner": "1", "owner_name": "某"}])
    xl = cat.resource("gongshang_xuke")
    d = read_files(xl, xl.channel, DAY, landing)
    assert d.frame.select("_row_no", "_source", "许可证号", "企业名称").rows() == [(1, "x.xlsx", "B-1", "甲公司")]
    js = cat.resource("zhengzhao_zheng")
    d = read_files(js, js.channel, DAY, landing)
    assert d.frame.select("no", "owner_name").rows() == [("A-1", "某")]
    assert d.content_hash and read_files(js, js.channel, DAY, landing).content_hash == d.content_hash


def test_a_file_that_is_not_what_it_claims_is_a_problem_not_a_crash(cat, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    (landing / "gs" / "20261009").mkdir(parents=True)
    (landing / "gs" / "20261009" / "x.xlsx").write_text("not a workbook")
    xl = cat.resource("gongshang_xuke")
    d = read_files(xl, xl.channel, DAY, landing)
    assert d.rows == 0 and d.problems[0].startswith("x.xlsx: 无法读取 (xlsx)")


def test_no_files_means_no_delivery(cat, tmp_path: Path) -> None:
    hz = cat.resource("huzheng_renkou")
    d = read_files(hz, hz.channel, DAY, tmp_path)
    assert d.sources == [] and d.rows == 0


def test_the_api_is_read_page_by_page(cat, tmp_path: Path) -> None:
    records = [{"code": f"C{i}", "title": f"T{i}", "capital": i} for i in range(5)]
    citykit.write_api(tmp_path, DAY, records)
    server, base = serve_in_thread(tmp_path, token="s3cret")
    variables = {"SHANHAI_QIYE_URL": f"{base}/qiye"}  # the channel's url_env, as the edge hands it over
    res = cat.resource("gongshang_qiye")
    try:
        with pytest.raises(DeliveryError, match="HTTP 401"):
            read_api(res, res.channel, DAY, variables)
        ch = res.channel.model_copy(update={"auth_env": "TEST_TOKEN"})
        with pytest.raises(DeliveryError, match="HTTP 401"):
            read_api(res, ch, DAY, variables)  # the token's variable is not set
        variables["TEST_TOKEN"] = "s3cret"
        d = read_api(res, ch, DAY, variables)
        assert d.frame.get_column("code").to_list() == [f"C{i}" for i in range(5)]  # page_size 2: three pages
        assert d.frame.get_column("capital").to_list() == [str(i) for i in range(5)]
        assert read_api(res, ch, DAY + dt.timedelta(days=1), variables).rows == 0  # 404: nothing that day
    finally:
        server.shutdown()
        server.server_close()


def test_the_api_retries_server_errors_then_succeeds(cat) -> None:
    calls = []

    class Flaky(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def do_GET(self):
            calls.append(self.path)
            if len(calls) == 1:
                self.send_response(503)
                self.end_headers()
                return
            body = json.dumps({"total_pages": 1, "items": [{"code": "C1", "title": "T", "capital": "1"}]}).encode()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    variables = {"SHANHAI_QIYE_URL": f"http://127.0.0.1:{server.server_address[1]}/qiye"}
    res = cat.resource("gongshang_qiye")
    try:
        assert read_api(res, res.channel, DAY, variables).rows == 1
        assert len(calls) == 2
    finally:
        server.shutdown()
        server.server_close()


def test_an_unreachable_api_is_a_delivery_error_naming_the_url(cat) -> None:
    res = cat.resource("gongshang_qiye")
    with pytest.raises(DeliveryError, match=r"接口 http://127.0.0.1:9/qiye 第 1 页在 2 次尝试后仍失败"):
        read_api(res, res.channel, DAY, {"SHANHAI_QIYE_URL": "http://127.0.0.1:9/qiye"})


def test_an_unreachable_database_is_a_delivery_error_without_the_password(cat, tmp_path: Path) -> None:
    res = cat.resource("shebao_canbao")
    with pytest.raises(DeliveryError) as info:
        read_database(res, DAY, tmp_path, None, {"SHANHAI_SB_URL": "postgresql+psycopg://sb:topsecret@127.0.0.1:1/qzk"})
    assert "topsecret" not in str(info.value) and "前置库" in str(info.value)


def test_a_typed_qianzhiku_is_read_as_text_and_by_the_day_of_its_watermark(
    cat, warehouse_url: str, tmp_path: Path
) -> None:
    """The 前置库 holds typed columns (a number, a timestamp watermark) on SQLite or PostgreSQL."""
    import sqlalchemy as sa

    engine = sa.create_engine(warehouse_url)
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE "CB" ("ZJHM" varchar(18), "NAME" varchar(20), "TEL" bigint, '
                             '"UPD" timestamp)'))
        conn.execute(sa.text('INSERT INTO "CB" VALUES (:z, :n, :t, :u)'), [
            {"z": citykit.PEOPLE[0][0], "n": "王小明", "t": 13812345678, "u": dt.datetime(2026, 10, 9, 8, 30)},
            {"z": citykit.PEOPLE[1][0], "n": "李丽", "t": None, "u": dt.datetime(2026, 10, 9, 23, 59, 59)},
            {"z": citykit.PEOPLE[2][0], "n": "赵强", "t": 13912345678, "u": dt.datetime(2026, 10, 10, 0, 0)},
        ])
    engine.dispose()
    variables = {"SHANHAI_SB_URL": warehouse_url}
    res = cat.resource("shebao_canbao")
    first = read_database(res, DAY, tmp_path, None, variables)
    assert first.frame.get_column("ZJHM").to_list() == [citykit.PEOPLE[0][0], citykit.PEOPLE[1][0]]
    assert first.frame.get_column("TEL").to_list() == ["13812345678", None]  # text, not a lost value
    assert first.watermark_high.startswith("2026-10-09 23:59:59")
    second = read_database(res, DAY + dt.timedelta(days=1), tmp_path, read_window(res, DAY + dt.timedelta(days=1)),
                           variables)
    assert second.frame.get_column("NAME").to_list() == ["赵强"]  # only the rows of its own day
    again = read_database(res, DAY, tmp_path, None, variables)
    assert again.content_hash == first.content_hash  # the same partition reads the same rows


def test_the_row_digest_tells_null_from_empty_field_boundaries_and_order_apart() -> None:
    base = pl.DataFrame({"a": ["x", "ab", None], "b": ["1", "c", ""]})
    assert frame_digest(base) == frame_digest(base.clone())
    variants = [
        base.with_columns(pl.Series("b", ["1", "c", None])),  # NULL is not the empty string
        pl.DataFrame({"a": ["x", "a", None], "b": ["1", "bc", ""]}),  # "ab"|"c" is not "a"|"bc"
        base.reverse(),  # order is content
    ]
    assert len({frame_digest(base), *(frame_digest(v) for v in variants)}) == 4


def test_the_delivery_digest_hashed_a_slice_at_a_time_is_the_digest_of_the_whole(monkeypatch) -> None:
    """A large delivery's rows are hashed a slice at a time; the content hash is the one stored for
    earlier batches (SHA-256 of every row digest in order), so an unchanged re-delivery stays unchanged."""
    import hashlib

    import polars_hash as plh

    import guiji.channels as channels

    frame = pl.DataFrame({"a": [f"v{i}" if i % 7 else None for i in range(11)], "b": [str(i) for i in range(11)]})
    rows = frame.select(plh.concat_str([pl.when(pl.col(c).is_null()).then(pl.lit("\x00N"))
                                       .otherwise(pl.lit("\x00V") + pl.col(c)) for c in frame.columns],
                                      separator="\x1f").chash.sha2_256()).to_series().to_list()
    whole = hashlib.sha256("".join(rows).encode()).hexdigest()
    for size in (1, 3, 4, 11, 100):
        monkeypatch.setattr(channels, "DIGEST_SLICE_ROWS", size)
        assert frame_digest(frame) == whole


def test_a_qianzhiku_read_does_not_depend_on_the_order_the_database_returns(cat, tmp_path: Path) -> None:
    import sqlalchemy as sa

    rows = [(p[0], p[1], f"13{i}00000000", f"2026-10-09 0{i}:00:00") for i, p in enumerate(citykit.PEOPLE)]
    reads = []
    for name, ordered in (("fwd.db", rows), ("rev.db", rows[::-1])):
        engine = sa.create_engine(f"sqlite:///{tmp_path / name}")
        with engine.begin() as conn:
            conn.execute(sa.text('CREATE TABLE "CB" ("ZJHM" text, "NAME" text, "TEL" text, "UPD" text)'))
            conn.execute(sa.text('INSERT INTO "CB" VALUES (:z, :n, :t, :u)'),
                         [{"z": z, "n": n, "t": t, "u": u} for z, n, t, u in ordered])
        engine.dispose()
        variables = {"SHANHAI_SB_URL": f"sqlite:///{tmp_path / name}"}
        reads.append(read_database(cat.resource("shebao_canbao"), DAY, tmp_path, None, variables))
    fwd, rev = reads
    assert fwd.frame.drop("_source").equals(rev.frame.drop("_source"))
    assert fwd.content_hash == rev.content_hash
    assert fwd.frame.get_column("ZJHM").to_list() == [p[0] for p in citykit.PEOPLE]  # watermark order


def test_the_qianzhiku_sorts_its_rows_as_polars_sorts_their_text(cat, warehouse_url: str, tmp_path: Path) -> None:
    """The 前置库 gives its rows in order (the watermark, then every column, as text byte by byte, NULL
    last), so a delivery is read a page at a time and never sorted whole here: that order is the one
    polars gives the same text values, on SQLite and on PostgreSQL (COLLATE "C", not the server's
    locale), and both databases give the same batch."""
    import sqlalchemy as sa

    import guiji.channels as channels

    names = ["b", "B", "a", "ab", "abc", "", None, "李", "王", "Ä", "z9", "z10", " x"]
    tels = ["2", "10", None, "", "1"]
    rows = [{"z": citykit.PEOPLE[i % len(citykit.PEOPLE)][0] if i % 5 else None, "n": names[i % len(names)],
             "t": tels[i % len(tels)], "u": f"2026-10-09 0{i % 3}:00:00"} for i in range(40)]
    engine = sa.create_engine(warehouse_url)
    # on PostgreSQL a department's columns in a locale's order (ICU: a before B before b, Ä beside A)
    text_type = "text" if engine.dialect.name == "sqlite" else 'text COLLATE "und-x-icu"'
    with engine.begin() as conn:
        conn.execute(sa.text(f'CREATE TABLE "CB" ("ZJHM" {text_type}, "NAME" {text_type}, "TEL" {text_type}, '
                             f'"UPD" {text_type})'))
        conn.execute(sa.text('INSERT INTO "CB" VALUES (:z, :n, :t, :u)'), rows)
    engine.dispose()
    res = cat.resource("shebao_canbao")
    monkey = pytest.MonkeyPatch()
    try:
        monkey.setattr(channels, "FETCH_PAGE_ROWS", 7)  # pages of 7 rows: the order is the database's
        got = read_database(res, DAY, tmp_path, None, {"SHANHAI_SB_URL": warehouse_url})
    finally:
        monkey.undo()
    text = pl.DataFrame(rows, schema={"z": pl.String, "n": pl.String, "t": pl.String, "u": pl.String}).rename(
        {"z": "ZJHM", "n": "NAME", "t": "TEL", "u": "UPD"})
    cols = channels.source_columns(res)
    wm = res.channel.watermark
    sorted_here = text.select(cols).sort([wm, *[c for c in cols if c != wm]], nulls_last=True)
    assert got.frame.select(cols).equals(sorted_here)
    assert got.frame.get_column("_row_no").to_list() == list(range(1, 41))
    assert got.content_hash == channels.frame_digest(sorted_here)


# --- wrong encodings, huge fields, repeated headers ------------------------------------------


def _people_csv(n: int) -> str:
    names = ["李旭", "王小明", "赵强强", "欧阳娜娜"]
    return "SFZ;XINGMING\n" + "".join(f"{i:04d};{names[i % 4]}\n" for i in range(n))


def test_a_file_in_another_encoding_is_quarantined_whole_and_a_few_bad_bytes_are_not() -> None:
    """UTF-8 delivered where the catalogue says GBK decodes "cleanly" as GBK into nonsense (李旭 →
    鏉庢棴): every record is flagged with one reason naming the file and the encoding that fits. A
    GBK file with ~1% undecodable bytes (what the generator injects) keeps its per-field flags."""
    frame, problems = parse_csv(_people_csv(40).encode("utf-8"), "u.csv", ["SFZ", "XINGMING"], "gbk", ";")
    assert frame.height == 40 and frame.get_column("_error").str.starts_with("wrong_encoding: ").all()
    reason = frame.get_column("_error")[0]
    assert "u.csv" in reason and "GBK" in reason and "可按 UTF-8 完整解码" in reason
    assert frame.select("_raw", "XINGMING").row(0) == ("0000;李旭", "李旭")  # read in the encoding that fits
    assert problems == [f"{reason.removeprefix('wrong_encoding: ')} (共 40 条记录)"]

    frame, problems = parse_csv(_people_csv(40).encode("gbk"), "g.csv", ["SFZ", "XINGMING"], "utf-8", ";")
    assert frame.get_column("_error").str.contains("不是目录声明的 UTF-8: 可按 GBK 完整解码").all()

    lines = _people_csv(300).encode("gbk").split(b"\n")
    damaged = b"\n".join(line + b"\xff\xfe" if i % 100 == 50 else line for i, line in enumerate(lines))
    frame, problems = parse_csv(damaged, "d.csv", ["SFZ", "XINGMING"], "gbk", ";")
    assert problems == [] and frame.get_column("_error").null_count() == 300
    assert frame.get_column("XINGMING").str.contains("\ufffd").sum() == 3


def test_a_field_larger_than_the_csv_block_is_read_and_every_record_counted() -> None:
    huge = "x" * (10 * 1024 * 1024)
    rows = [f"{i},n{i}" for i in range(181)] + [f"181,{huge}"]
    frame, problems = parse_csv(("A,B\n" + "\n".join(rows) + "\n").encode(), "big.csv", ["A", "B"], "utf-8", ",")
    assert problems == [] and frame.height == 182 and frame.get_column("_error").null_count() == 182
    assert frame.get_column("B")[181] == huge and frame.get_column("_row_no").to_list() == list(range(1, 183))


@pytest.mark.parametrize("case", ["clean", "broken", "wrong-encoding", "missing-column", "crlf-bom", "huge-field"])
def test_a_file_parsed_in_pieces_is_the_file_parsed_at_once(case: str, monkeypatch) -> None:
    """A delimited file is read a few bytes and parsed a piece of whole lines at a time (never held whole):
    records, row numbers, reasons and problems are those of one piece, whatever the reads and pieces — lines with the wrong number of fields in the first, a middle and the last
    piece, a file in another encoding, a missing column, CRLF with a BOM, a field larger than a piece."""
    import guiji.channels as channels

    names = ["李旭", "王小明", "赵强强", "欧阳娜娜"]
    lines = [f"{i:04d};{names[i % 4]};{i % 7}" for i in range(240)]
    columns, encoding, header = ["SFZ", "XINGMING", "BIE"], "gbk", "SFZ;XINGMING;BIE"
    if case in ("broken", "wrong-encoding"):
        for i in (0, 1, 97, 98, 150, 239):
            lines[i] += ";多余"
    if case == "missing-column":
        header = "SFZ;XINGMING;QITA"
    if case == "huge-field":
        lines[120] = "0120;" + "长" * 5000 + ";1"
    text = header + "\n" + "\n".join(lines) + "\n"
    if case == "crlf-bom":
        text = "\ufeff" + text.replace("\n", "\r\n")
    data = text.encode("utf-8" if case in ("wrong-encoding", "crlf-bom") else "gbk")
    encoding = "utf-8" if case == "crlf-bom" else encoding
    whole = parse_csv(data, "p.csv", columns, encoding, ";")
    for size in (1, 100, 997, 4000):
        monkeypatch.setattr(channels, "CSV_PIECE_BYTES", size)
        # read a few bytes at a time too: a character split between two reads, the encoding told chunk by chunk
        monkeypatch.setattr(channels, "READ_CHUNK_BYTES", {1: 1, 100: 3, 997: 64}.get(size, 10**6))
        frame, problems = parse_csv(data, "p.csv", columns, encoding, ";")
        assert problems == whole[1]
        assert frame.equals(whole[0]), size
    assert whole[0].height == 240 and whole[0].get_column("_row_no").to_list() == list(range(1, 241))


def test_a_header_naming_a_declared_column_twice_flags_every_record() -> None:
    frame, problems = parse_csv(b"A,B,A\n1,2,3\n4,5,6\n", "dup.csv", ["A", "B"], "utf-8", ",")
    assert frame.select("_row_no", "_raw", "_error").rows() == [
        (1, "1,2,3", "表头列名重复: A"), (2, "4,5,6", "表头列名重复: A")]
    assert problems == ["dup.csv: 表头列名 A 重复 (第 1, 3 列), 无法确定取哪一列, 全部记录隔离"]
    frame, problems = parse_csv(b"A,B,X,X\n1,2,3,4\n", "extra.csv", ["A", "B"], "utf-8", ",")
    assert frame.select("A", "B", "_error").rows() == [("1", "2", None)]  # an undeclared column repeated: ignored
    assert problems == ["extra.csv: 表头列名 X 重复 (第 3, 4 列), 该列不在目录中, 已忽略"]


def test_a_formula_cell_without_a_computed_value_is_marked_not_read_as_empty(cat, tmp_path: Path) -> None:
    """A workbook written by a program that cannot calculate holds formulas without results; calamine
    reads such a cell as empty. The channel marks it with its cell and formula, a record made only
    of such cells included (polars would drop it as an empty row)."""
    import openpyxl

    landing = tmp_path / "landing"
    (landing / "gs" / "20261009").mkdir(parents=True)
    wb = openpyxl.Workbook()
    ws = wb.active
    for row in (["许可证号", "企业代码", "企业名称"], ["B-1", "X", '=UPPER("甲")'], ["B-2", "Y", None],
                ["=A3&\"x\"", "=B3", "=C3"], ["B-4", "Z", "丁公司"]):
        ws.append(row)
    wb.save(landing / "gs" / "20261009" / "x.xlsx")
    xl = cat.resource("gongshang_xuke")
    d = read_files(xl, xl.channel, DAY, landing)
    assert d.frame.select("_row_no", "许可证号", "企业名称").rows() == [
        (1, "B-1", '\ufffcC2=UPPER("甲")'), (2, "B-2", None), (3, '\ufffcA4=A3&"x"', "\ufffcC4=C3"), (4, "B-4", "丁公司")]
    assert d.problems == ["x.xlsx: 4 个公式单元格没有计算结果 (C2, A4, B4, C4)"]


# --- the landing folder ----------------------------------------------------------------------


def test_file_paths_leaving_the_landing_folder_are_refused(cat, tmp_path: Path) -> None:
    landing, outside = tmp_path / "landing", tmp_path / "outside"
    citykit.write_json(outside / "zheng.json", [{"no": "A-1", "owner": "1", "owner_name": "某"}])
    (landing / "zz" / "20261009").mkdir(parents=True)
    res = cat.resource("zhengzhao_zheng")
    for path in ("../outside/*.json", "zz/../../outside/*.json", str(outside / "*.json"), "/etc/*"):
        ch = res.channel.model_copy(update={"path": path})
        with pytest.raises(DeliveryError, match="拒绝读取") as info:
            read_files(res, ch, DAY, landing)
        assert path in str(info.value)
    (landing / "zz" / "20261009" / "zheng.json").symlink_to(outside / "zheng.json")
    with pytest.raises(DeliveryError, match=r"zheng.json: 实际指向交付目录之外的 .*outside/zheng.json, 拒绝读取"):
        read_files(res, res.channel, DAY, landing)


# --- the API: bounded, errors that name URL and page, no credentials ---------------------------


class _Api:
    """A local HTTP server answering GETs with ``respond(page) -> (status, headers, body)``."""

    def __init__(self, respond):
        calls = self.calls = []

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                from urllib.parse import parse_qs, urlparse

                page = int(parse_qs(urlparse(self.path).query).get("page", ["1"])[0])
                calls.append(page)
                status, headers, body = respond(page)
                try:
                    self.send_response(status)
                    for k, v in {**headers, "Content-Length": str(len(body))}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(body)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up waiting (the time-budget test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/qiye"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _page(total_pages: int, n: int = 1) -> bytes:
    return json.dumps({"total_pages": total_pages, "items": [{"code": "C", "title": "T", "capital": "1"}] * n}).encode()


@pytest.fixture
def variables() -> dict[str, str]:
    """The values of the channels' variables (``url_env``, ``auth_env``), as the edge hands them over."""
    return {}


@pytest.fixture
def api(cat, variables):
    servers = []

    def start(respond) -> _Api:
        server = _Api(respond)
        servers.append(server)
        variables["SHANHAI_QIYE_URL"] = server.url
        return server

    yield start
    for s in servers:
        s.close()


def test_an_api_paging_without_end_stops_at_the_page_limit(cat, api, variables) -> None:
    server = api(lambda page: (200, {}, _page(page + 1)))  # always one more page
    res = cat.resource("gongshang_qiye")
    ch = res.channel.model_copy(update={"max_pages": 5})
    with pytest.raises(DeliveryError, match=rf"接口 {server.url} 第 5 页: 接口声明共 6 页, 超过每次交付的页数上限 5 页"):
        read_api(res, ch, DAY, variables)
    assert server.calls == [1, 2, 3, 4, 5]
    server = api(lambda page: (200, {}, _page(50_000)))  # announced up front: not a page more is read
    with pytest.raises(DeliveryError, match="第 1 页: 接口声明共 50000 页"):
        read_api(res, ch, DAY, variables)
    assert server.calls == [1]


def test_an_api_delivery_stops_at_its_time_budget(cat, api, variables) -> None:
    import time

    def slow(page):
        time.sleep(0.3)
        return 200, {}, _page(page + 1)

    server = api(slow)
    res = cat.resource("gongshang_qiye")
    ch = res.channel.model_copy(update={"max_seconds": 1.0})
    start = time.monotonic()
    with pytest.raises(DeliveryError, match=rf"接口 {server.url} 第 \d 页: 超过每次交付的时间上限 1 秒"):
        read_api(res, ch, DAY, variables)
    assert time.monotonic() - start < 2.5 and server.calls[:3] == [1, 2, 3] and len(server.calls) <= 5


def test_malformed_json_is_a_delivery_error_naming_url_and_page(cat, api, variables) -> None:
    server = api(lambda page: (200, {}, _page(3) if page == 1 else b'{"total_pages": 3, "items": [{'))
    res = cat.resource("gongshang_qiye")
    with pytest.raises(DeliveryError, match=rf"接口 {server.url} 第 2 页返回的不是合法 JSON: Expecting"):
        read_api(res, res.channel, DAY, variables)
    server = api(lambda page: (200, {}, b'["not", "an", "object"]'))
    with pytest.raises(DeliveryError, match=rf"接口 {server.url} 第 1 页返回内容不符合约定"):
        read_api(res, res.channel, DAY, variables)


def test_the_api_waits_as_long_as_a_429_asks_then_reads_on(cat, api, variables) -> None:
    import time

    server = api(lambda page: (429, {"Retry-After": "1"}, b"") if len(server.calls) == 1 else (200, {}, _page(1)))
    res = cat.resource("gongshang_qiye")
    start = time.monotonic()
    assert read_api(res, res.channel, DAY, variables).rows == 1
    assert server.calls == [1, 1] and time.monotonic() - start >= 0.9


def test_credentials_in_an_api_url_never_appear_in_errors_logs_or_sources(cat, api, variables, caplog) -> None:
    variables["SHANHAI_QIYE_URL"] = "http://apiuser:pw-s3cret@127.0.0.1:9/qiye?access_token=tok-s3cret&x=1"
    res = cat.resource("gongshang_qiye")
    with caplog.at_level("DEBUG"), pytest.raises(DeliveryError) as info:
        read_api(res, res.channel, DAY, variables)
    msg = str(info.value)
    assert "s3cret" not in msg and "apiuser" not in msg
    assert any("Retrying" in r.getMessage() for r in caplog.records)  # urllib3 logs every retry, query included
    assert not any("s3cret" in r.getMessage() for r in caplog.records)
    assert msg.startswith("接口 http://127.0.0.1:9/qiye?access_token=***&x=1 第 1 页在 2 次尝试后仍失败")
    server = api(lambda page: (200, {}, _page(1)))
    variables["SHANHAI_QIYE_URL"] = server.url.replace("http://", "http://apiuser:pw-s3cret@") + "?token=tok-s3cret"
    d = read_api(res, res.channel, DAY, variables)
    assert d.sources == [f"{server.url.removeprefix('http://')}?date={DAY}"]
    assert not d.frame.get_column("_source").str.contains("s3cret|apiuser").any()


@pytest.mark.parametrize("kind", ["csv", "json"])
def test_a_file_changed_or_gone_while_it_is_read_is_refused_not_stored_as_another(cat, tmp_path: Path, kind: str) -> None:
    """A delivery is hashed when it is opened and read again to parse it: a file rewritten in between
    (a department re-delivering during the night) would store records the content hash does not
    describe — the delivery is refused, naming the file; a file gone in between likewise."""
    from guiji.channels import open_files

    landing = tmp_path / "landing"
    if kind == "csv":
        res, path = cat.resource("huzheng_renkou"), landing / "hz" / "20261009" / "renkou.csv"
        citykit.write_csv(path, ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"], [[p[0], p[1], "1", "19900101"] for p in citykit.PEOPLE])
    else:
        res, path = cat.resource("zhengzhao_zheng"), landing / "zz" / "20261009" / "z.json"
        citykit.write_json(path, [{"no": "A-1", "owner": "1", "owner_name": "某"}])
    assert len(list(open_files(res, res.channel, DAY, landing).pages())) == 1  # as delivered: read
    reading = open_files(res, res.channel, DAY, landing)
    path.write_bytes(path.read_bytes().replace(b"1", b"2"))
    with pytest.raises(DeliveryError, match=f"{path.name}: 文件在读取期间被改动"):
        list(reading.pages())
    reading = open_files(res, res.channel, DAY, landing)
    path.unlink()
    with pytest.raises(DeliveryError, match=f"{path.name}: 读取失败, 本次交付未入库: FileNotFoundError"):
        list(reading.pages())
