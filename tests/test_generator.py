"""The synthetic-data generator: real files in tmp_path, read back with our own small readers.

What it must guarantee: reproducible bytes, deliveries shaped exactly as the catalogue says,
perfectly consistent clean data (so that the only findings are the injected defects), every
defect class present at the row the manifest names, and no code change for another catalogue.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import shutil
import sqlite3
import textwrap
from pathlib import Path

import polars as pl
import pytest

from catalog.identifiers import id_number_birth_date, id_number_gender, id_number_is_valid, uscc_is_valid
from catalog.loader import DEMO_CATALOGUE, Catalogue, load_catalogue
from catalog.models import DatabaseChannel, ElementType, FileChannel
from generator import generate
from generator.config import DefectClass, SyntheticConfigError, load_config
from generator.deliveries import output_columns
from generator.writers import api_path, file_path, sqlite_path

DAY = dt.date(2026, 11, 21)
PERSONS = 2000
ALL_CLASSES = {c.value for c in DefectClass} | {"stale", "truncated"}


# --- running the generator -------------------------------------------------------------------


def run(catalogue: Catalogue, out: Path, seed: int = 7, persons: int = PERSONS, days: int = 2) -> dict:
    manifest = generate(catalogue, persons=persons, seed=seed, date=DAY, out=out, days=days, progress=False)
    return json.loads(manifest.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def demo() -> Catalogue:
    return load_catalogue(DEMO_CATALOGUE)


@pytest.fixture(scope="module")
def generated(demo: Catalogue, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("landing")
    return out, run(demo, out)


def file_hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


# --- reading deliveries back (independent of the pipeline's readers) --------------------------


def delivery(out: Path, catalogue: Catalogue, rid: str, day: dt.date) -> tuple[pl.DataFrame, dict[int, str]]:
    """Rows as text with ``_row`` (1-based, reading order) and the raw lines of unsplittable csv rows."""
    r = catalogue.resource(rid)
    cols = output_columns(r)
    ch = r.channel
    broken: dict[int, str] = {}
    if isinstance(ch, DatabaseChannel):
        con = sqlite3.connect(sqlite_path(out, r))
        q = ", ".join(f'"{c}"' for c in cols)
        got = con.execute(f'SELECT {q} FROM "{ch.table}" WHERE "{ch.watermark}" LIKE ? '
                          f'ORDER BY "{ch.watermark}", {q}', (f"{day.isoformat()}%",)).fetchall()
        con.close()
        rows = [dict(zip(cols, g, strict=True)) for g in got]
    elif isinstance(ch, FileChannel) and ch.format == "xlsx":
        frame = pl.read_excel(file_path(out, r, day), engine="calamine", infer_schema_length=0)
        assert frame.columns == cols
        rows = frame.to_dicts()
    elif isinstance(ch, FileChannel) and ch.format == "csv":
        lines = file_path(out, r, day).read_bytes().decode(ch.encoding, errors="replace").split("\n")
        assert lines[-1] == "" and lines[0].split(ch.delimiter) == cols
        rows = []
        for i, line in enumerate(lines[1:-1], start=1):
            fields = next(csv.reader([line], delimiter=ch.delimiter))
            if len(fields) != len(cols):
                broken[i] = line
                rows.append(dict.fromkeys(cols))
            else:
                rows.append({c: (v if v != "" else None) for c, v in zip(cols, fields, strict=True)})
    else:
        path = file_path(out, r, day) if isinstance(ch, FileChannel) else api_path(out, r, day)
        rows = json.loads(path.read_text(encoding="utf-8"))
        assert all(list(x) == cols for x in rows)
    frame = pl.DataFrame(rows, schema=dict.fromkeys(cols, pl.String), orient="row") if rows else \
        pl.DataFrame(schema=dict.fromkeys(cols, pl.String))
    return frame.with_row_index("_row", offset=1).with_columns(pl.col("_row").cast(pl.Int64)), broken


def canonical(catalogue: Catalogue, rid: str, frame: pl.DataFrame) -> pl.DataFrame:
    """Department text → element values (dates parsed with the field's formats, codes mapped)."""
    r = catalogue.resource(rid)
    lib = catalogue.library(r.library)
    exprs = [pl.col("_row")]
    for f in r.fields:
        e = lib.element(f.element)
        c = pl.col(f.column)
        if e.type == ElementType.date:
            c = pl.coalesce([c.str.strptime(pl.Date, fmt, strict=False, exact=True) for fmt in f.formats])
        elif f.codes:
            c = c.replace(f.codes)
        exprs.append(c.alias(f.element))
    exprs += [pl.lit(v).alias(k) for k, v in r.constants.items() if k not in {f.element for f in r.fields}]
    return frame.select(exprs)


def clean_deliveries(out: Path, catalogue: Catalogue, manifest: dict) -> dict[tuple[str, str], pl.DataFrame]:
    """Every delivery's rows minus the manifest's defect rows, as element values."""
    hit: dict[tuple[str, str], set[int]] = {}
    for d in manifest["defects"]:
        if d["row"] is not None:
            hit.setdefault((d["resource_id"], d["batch_date"]), set()).add(d["row"])
    out_frames = {}
    for rid, info in manifest["resources"].items():
        for day in info["rows"]:
            frame, _ = delivery(out, catalogue, rid, dt.date.fromisoformat(day))
            frame = frame.filter(~pl.col("_row").is_in(sorted(hit.get((rid, day), set()))))
            out_frames[(rid, day)] = canonical(catalogue, rid, frame)
    return out_frames


# --- the demo city ---------------------------------------------------------------------------


def test_the_same_seed_writes_byte_identical_files_and_another_seed_does_not(demo: Catalogue, tmp_path: Path,
                                                                             generated: tuple[Path, dict]) -> None:
    first, _ = generated
    again = tmp_path / "again"
    other = tmp_path / "other"
    run(demo, again)
    run(demo, other, seed=8)
    hashes = file_hashes(first)
    assert hashes == file_hashes(again)
    assert len(hashes) > len(demo.resources) and any(p.endswith(".xlsx") for p in hashes)
    different = file_hashes(other)
    assert set(different) == set(hashes)
    assert all(different[p] != hashes[p] for p in hashes)


def test_every_delivery_has_the_catalogue_columns_encoding_and_the_manifest_row_counts(
        demo: Catalogue, generated: tuple[Path, dict]) -> None:
    out, manifest = generated
    bad_encoding = {(d["resource_id"], d["batch_date"], d["row"]) for d in manifest["defects"]
                    if d["class"] == "unparseable_bad_encoding"}
    assert set(manifest["resources"]) == {r.id for r in demo.resources}
    for r in demo.resources:
        rows = manifest["resources"][r.id]["rows"]
        assert rows, r.id
        for day, count in rows.items():
            frame, _ = delivery(out, demo, r.id, dt.date.fromisoformat(day))
            assert frame.height == count, (r.id, day)
            assert frame.columns[1:] == output_columns(r)
            ch = r.channel
            if isinstance(ch, FileChannel) and ch.encoding == "gbk":
                lines = file_path(out, r, dt.date.fromisoformat(day)).read_bytes().split(b"\n")[1:-1]
                undecodable = set()
                for i, line in enumerate(lines, start=1):
                    try:
                        line.decode("gbk")
                    except UnicodeDecodeError:
                        undecodable.add((r.id, day, i))
                assert undecodable == {x for x in bad_encoding if x[:2] == (r.id, day)}
                assert any("\u4e00" <= c <= "\u9fff" for c in lines[0].decode("gbk"))  # really GBK, really Chinese


def test_the_database_and_api_channels_land_where_the_readers_look(demo: Catalogue,
                                                                    generated: tuple[Path, dict]) -> None:
    out, manifest = generated
    for r in demo.resources:
        ch = r.channel
        if isinstance(ch, DatabaseChannel):
            path = sqlite_path(out, r)
            assert path.is_relative_to(out.resolve()) and path.is_file()
            con = sqlite3.connect(path)
            types = {row[1]: row[2] for row in con.execute(f'PRAGMA table_info("{ch.table}")')}
            stamps = [x[0] for x in con.execute(f'SELECT "{ch.watermark}" FROM "{ch.table}"')]
            con.close()
            assert list(types) == output_columns(r) and set(types.values()) == {"TEXT"}
            delivered = {d for d, n in manifest["resources"][r.id]["rows"].items() if n}
            assert {s[:10] for s in stamps} == delivered
            assert all("00:30:00" <= s[11:] <= "23:30:00" for s in stamps)
        elif not isinstance(ch, FileChannel):
            for day in manifest["resources"][r.id]["rows"]:
                assert api_path(out, r, dt.date.fromisoformat(day)).is_file()


def test_clean_values_are_valid_and_consistent_apart_from_the_manifest_defects(
        demo: Catalogue, generated: tuple[Path, dict]) -> None:
    out, manifest = generated
    assert_consistent(demo, out, manifest)


def assert_consistent(cat: Catalogue, out: Path, manifest: dict) -> None:
    """Validity, authority copies and references of every delivery, defect rows removed."""
    frames = clean_deliveries(out, cat, manifest)
    latest = max(dt.date.fromisoformat(d) for d in manifest["parameters"]["batch_dates"])
    local = cat.city.city.region_codes
    for (rid, day), f in frames.items():
        r = cat.resource(rid)
        lib = cat.library(r.library)
        key = list(r.key)
        assert not f.select(key).is_duplicated().any(), (rid, day, "duplicate key")
        for fm in r.fields:
            e = lib.element(fm.element)
            col = f.get_column(e.code)
            if e.required:
                assert col.null_count() == 0, (rid, day, e.code, "missing")
            checks = {
                ElementType.id_number: id_number_is_valid(pl.col(e.code), today=latest),
                ElementType.uscc: uscc_is_valid(pl.col(e.code)),
                ElementType.mobile: pl.col(e.code).str.contains(r"^1[3-9]\d{9}$"),
            }
            if e.type in checks:
                assert f.select(checks[e.type].fill_null(True).all()).item(), (rid, day, e.code)
            if e.type == ElementType.code and e.codelist:
                assert set(col.drop_nulls()) <= set(cat.codes[e.codelist]), (rid, day, e.code)
            if e.type == ElementType.date and col.len():
                assert col.null_count() == 0 and col.max() <= dt.date.fromisoformat(day), (rid, day, e.code)
            if e.pattern and e.type == ElementType.string:
                assert col.str.contains(e.pattern).all(), (rid, day, e.code)
            id_key = next((k for k in key if lib.element(k).type == ElementType.id_number), None)
            if e.derived_from_id and id_key:
                derived = id_number_birth_date if e.derived_from_id == "birth_date" else id_number_gender
                assert f.select((pl.col(e.code) == derived(pl.col(id_key))).all()).item(), (rid, day, e.code)

    # 一数一源: every copy equals the authority's value for the same entity
    authority: dict[tuple[str, str], pl.DataFrame] = {}
    for lib in cat.libraries:
        for e in lib.elements:
            if e.code in lib.key or e.authority is None:
                continue
            sources = [f.select([*lib.key, e.code]) for (rid, _), f in frames.items()
                       if cat.resource(rid).library == lib.code and cat.resource(rid).department == cat.authority(
                           lib.code, e.code) and e.code in f.columns]
            if sources:
                authority[(lib.code, e.code)] = pl.concat(sources).unique()
    compared = 0
    for (rid, _), f in frames.items():
        r = cat.resource(rid)
        lib = cat.library(r.library)
        for fm in r.fields:
            auth = authority.get((lib.code, fm.element))
            if auth is None or r.department == cat.authority(lib.code, fm.element):
                continue
            pair = f.select([*lib.key, fm.element]).join(auth, on=lib.key, suffix="__auth")
            compared += pair.height
            assert pair.filter(pl.col(fm.element) != pl.col(f"{fm.element}__auth")).height == 0, (rid, fm.element)
            assert f.join(auth, on=lib.key, how="anti").height == 0, (rid, fm.element, "not delivered by authority")
    assert compared > 0

    # references: holders exist with the name the authority delivers
    checked = 0
    for (rid, _), f in frames.items():
        lib = cat.library(cat.resource(rid).library)
        for ref in lib.references:
            if ref.element not in f.columns:
                continue
            rows = f.filter(pl.col(ref.element).is_not_null())
            if ref.local_only:
                rows = rows.filter(pl.col(ref.element).str.slice(0, 6).is_in(local))
            is_id = id_number_is_valid(pl.col(ref.element), today=latest).fill_null(False)
            found = pl.lit(False)
            name_ok = pl.lit(False)
            joined = rows
            for i, t in enumerate(ref.targets):
                tlib = cat.library(t.library)
                name = t.name_element
                target = authority.get((t.library, name)) if name else None
                assert target is not None, (t.library, name)
                target = target.select(pl.col(tlib.key[0]).alias(ref.element), pl.col(name).alias(f"__n{i}"),
                                       pl.lit(True).alias(f"__f{i}"))
                joined = joined.join(target, on=ref.element, how="left")
                typed = pl.lit(True) if t.when_type is None else (
                    is_id if t.when_type == ElementType.id_number else ~is_id)
                found = found | (typed & pl.col(f"__f{i}").fill_null(False))
                if ref.name_field:
                    name_ok = name_ok | (typed & (pl.col(f"__n{i}") == pl.col(ref.name_field)).fill_null(False))
            checked += joined.height
            assert joined.filter(~found).height == 0, (rid, ref.element, "holder missing")
            if ref.name_field:
                assert joined.filter(~name_ok).height == 0, (rid, ref.element, "name mismatch")
    assert checked > 0


def test_every_defect_class_is_in_the_manifest_at_a_row_that_carries_the_written_value(
        demo: Catalogue, generated: tuple[Path, dict]) -> None:
    out, manifest = generated
    defects = manifest["defects"]
    assert {d["class"] for d in defects} == ALL_CLASSES
    cache: dict[tuple[str, str], tuple[pl.DataFrame, dict[int, str]]] = {}
    for d in defects:
        assert set(d) == {"class", "department", "resource", "resource_id", "batch_date", "key", "field",
                          "column", "row", "value_written", "value_expected"}
        if d["row"] is None:
            continue
        k = (d["resource_id"], d["batch_date"])
        if k not in cache:
            cache[k] = delivery(out, demo, *k[:1], dt.date.fromisoformat(k[1]))
        frame, broken = cache[k]
        row = frame.row(d["row"] - 1, named=True)
        assert row["_row"] == d["row"]
        if d["class"] == "unparseable_wrong_columns":
            assert broken[d["row"]] == d["value_written"]
        elif d["class"] == "duplicate_key":
            twins = [x for x in defects if x["class"] == "duplicate_key" and x["key"] == d["key"]
                     and (x["resource_id"], x["batch_date"]) == k]
            assert len(twins) == 2
        else:
            assert row[d["column"]] == d["value_written"], d
            assert d["value_written"] != d["value_expected"]
    stale = next(d for d in defects if d["class"] == "stale")
    assert list(manifest["resources"][stale["resource_id"]]["rows"]) == [stale["batch_date"]]
    assert stale["batch_date"] < manifest["parameters"]["batch_dates"][0]
    truncated = next(d for d in defects if d["class"] == "truncated")
    rows = manifest["resources"][truncated["resource_id"]]["rows"]
    assert rows[truncated["batch_date"]] < 0.5 * rows[min(rows)]


def test_defect_counts_follow_the_rates_and_the_manifest_parquet_matches(
        demo: Catalogue, generated: tuple[Path, dict]) -> None:
    out, manifest = generated
    cfg = load_config(demo)
    table = pl.read_parquet(out / "manifest.parquet")
    assert table.height == len(manifest["defects"])
    counts = dict(table.group_by("class").len().iter_rows())
    for cls, spec in cfg.defects.items():
        assert counts[cls.value] >= spec.min_count
        assert set(table.filter(pl.col("class") == cls.value).get_column("resource_id")) <= set(spec.resources)


def test_later_days_deliver_changes_from_the_database_and_snapshots_from_files(
        demo: Catalogue, generated: tuple[Path, dict]) -> None:
    _, manifest = generated
    d1, d2 = manifest["parameters"]["batch_dates"]
    for r in demo.resources:
        rows = manifest["resources"][r.id]["rows"]
        if r.update_cycle.value != "每日" or r.id == manifest_class(manifest, "truncated"):
            continue
        if isinstance(r.channel, DatabaseChannel):
            assert rows[d2] < 0.05 * rows[d1] + 5
        else:
            assert abs(rows[d2] - rows[d1]) < 0.02 * rows[d1] + 5


def manifest_class(manifest: dict, cls: str) -> str | None:
    return next((d["resource_id"] for d in manifest["defects"] if d["class"] == cls), None)


def test_a_broken_synthetic_config_is_rejected_with_the_file_and_path(demo: Catalogue, tmp_path: Path) -> None:
    folder = tmp_path / "city"
    shutil.copytree(DEMO_CATALOGUE, folder)
    text = (folder / "synthetic.yaml").read_text(encoding="utf-8")
    (folder / "synthetic.yaml").write_text(
        text.replace("gaj_hjrk: {coverage: 1.0,", "gaj_nosuch: {coverage: 1.0,")
        .replace("unparseable_bad_encoding: {rate: 0.002, resources: [rsj_sbcb]}",
                 "unparseable_bad_encoding: {rate: 0.002, resources: [wjw_csyxzm]}"), encoding="utf-8")
    with pytest.raises(SyntheticConfigError) as err:
        load_config(load_catalogue(folder))
    text = str(err.value)
    assert "synthetic.yaml: resources.gaj_nosuch: 目录中没有该资源" in text
    assert "defects.unparseable_bad_encoding.resources.0: 资源 wjw_csyxzm 没有可注入" in text
    (folder / "synthetic.yaml").write_text("libraries: {person: {size: 1, colour: red}}\n", encoding="utf-8")
    with pytest.raises(SyntheticConfigError, match=r"libraries\.person\.colour: Extra inputs are not permitted"):
        load_config(load_catalogue(folder))


# --- a second, different catalogue -----------------------------------------------------------

SECOND = {
    "catalogue.yaml": """\
        city: {code: shanhai, name: 山海市, region_codes: ["370202", "370203"]}
        departments:
          - {code: huzheng, name: 户政中心}
          - {code: shebao, name: 社保中心}
          - {code: zhengzhao, name: 证照中心}
        codelists:
          - {code: sex, name: 性别, file: codes/sex.csv}
          - {code: kind, name: 证照种类, file: codes/kind.csv}
          - {code: area, name: 区划, file: codes/area.csv}
        libraries:
          - code: people
            name: 人口库
            key: [pid]
            elements:
              - {code: pid, name: 身份号码, type: id_number, required: true}
              - {code: full_name, name: 姓名, type: string, semantic: person_name, required: true, authority: huzheng}
              - {code: sex, name: 性别, type: code, codelist: sex, authority: huzheng, derived_from_id: gender}
              - {code: dob, name: 出生日期, type: date, authority: huzheng, derived_from_id: birth_date}
              - {code: home, name: 住址, type: string, semantic: address, authority: huzheng}
              - {code: phone, name: 电话, type: mobile, authority: shebao}
          - code: permits
            name: 证照库
            key: [kind, number]
            discriminator: {element: kind, authorities: {A: zhengzhao}}
            elements:
              - {code: kind, name: 种类, type: code, codelist: kind}
              - {code: number, name: 编号, type: string, pattern: '^XK\\d{8}$'}
              - {code: holder, name: 持有人, type: string, required: true}
              - {code: holder_name, name: 持有人名称, type: string, required: true}
              - {code: granted, name: 发证日期, type: date}
            references:
              - element: holder
                name_field: holder_name
                targets: [{library: people, when_type: id_number, name_element: full_name}]
        """,
    "codes/sex.csv": "code,name\n1,男\n2,女\n",
    "codes/kind.csv": "code,name\nA,许可证\n",
    "codes/area.csv": "code,name\n370202,南区\n370203,北区\n110105,朝阳区\n",
    "resources/huzheng_renkou.yaml": """\
        code: renkou
        name: 常住人口
        department: huzheng
        library: people
        update_cycle: 每日
        share: 有条件共享
        open: 不予开放
        channel: {kind: file, path: "hz/{date:%Y%m%d}/*.txt", format: csv, delimiter: "|", encoding: gbk}
        key: [pid]
        fields:
          - {column: SFHM, element: pid}
          - {column: XINGMING, element: full_name}
          - {column: XINGBIE, element: sex, codes: {M: "1", F: "2"}}
          - {column: CHUSHENG, element: dob, formats: ["%d.%m.%Y"]}
          - {column: ZHUZHI, element: home}
        """,
    "resources/shebao_canbao.yaml": """\
        code: canbao
        name: 参保人员
        department: shebao
        library: people
        update_cycle: 每日
        share: 有条件共享
        open: 不予开放
        channel: {kind: database, url_env: SHANHAI_SB_URL, default_url: "sqlite:///{landing}/db/sb.sqlite", table: CB, watermark: TS}
        key: [pid]
        fields:
          - {column: ID, element: pid}
          - {column: NAME, element: full_name}
          - {column: PHONE, element: phone}
        """,
    "resources/zhengzhao_xuke.yaml": """\
        code: xuke
        name: 许可证
        department: zhengzhao
        library: permits
        update_cycle: 每周
        share: 有条件共享
        open: 不予开放
        channel: {kind: api, url: "http://127.0.0.1:9/v2/xuke/"}
        key: [kind, number]
        constants: {kind: A}
        fields:
          - {column: zh, element: number}
          - {column: who, element: holder}
          - {column: who_name, element: holder_name}
          - {column: date, element: granted, formats: ["%Y/%m/%d"]}
        """,
    "synthetic.yaml": """\
        libraries:
          people: {size: 1.0, elements: {pid: {range: ["1950-01-01", "2010-12-31"]}}}
        regions: {codelist: area}
        address: {template: "{city}{region_name}{road}{number}号", numbers: [1, 500]}
        resources:
          huzheng_renkou: {coverage: 1.0}
          shebao_canbao: {coverage: 0.5}
          zhengzhao_xuke: {size: 0.2, holders: {people: 1.0}}
        defects:
          invalid_id_checksum: {rate: 0.01, resources: [huzheng_renkou]}
          conflict: {rate: 0.01, resources: [shebao_canbao]}
          malformed_mobile: {rate: 0.01, resources: [shebao_canbao]}
          holder_missing: {rate: 0.01, resources: [zhengzhao_xuke]}
          holder_name_mismatch: {rate: 0.01, resources: [zhengzhao_xuke]}
          unparseable_wrong_columns: {rate: 0.01, resources: [huzheng_renkou]}
          unparseable_bad_encoding: {rate: 0.01, resources: [huzheng_renkou]}
          unparseable_bad_date: {rate: 0.01, resources: [huzheng_renkou]}
          duplicate_key: {rate: 0.01, resources: [zhengzhao_xuke, shebao_canbao]}
        """,
}


def write_second_city(root: Path) -> Path:
    for name, text in SECOND.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return root


def test_a_second_catalogue_generates_with_no_code_change(tmp_path: Path) -> None:
    cat = load_catalogue(write_second_city(tmp_path / "shanhai"))
    out = tmp_path / "landing"
    manifest = run(cat, out, persons=600, days=2)
    d1, d2 = (DAY - dt.timedelta(days=1)).isoformat(), DAY.isoformat()
    assert manifest["resources"]["huzheng_renkou"]["rows"][d1] >= 0.9 * 600
    assert list(manifest["resources"]["zhengzhao_xuke"]["rows"]) == [d2]  # weekly: last day only
    assert (out / "hz" / "20261121" / "renkou_20261121.txt").is_file()
    assert (out / "db" / "sb.sqlite").is_file()
    assert (out / "api" / "v2" / "xuke" / "20261121.json").is_file()
    classes = {d["class"] for d in manifest["defects"]}
    assert classes == {"invalid_id_checksum", "conflict", "malformed_mobile", "holder_missing",
                       "holder_name_mismatch", "unparseable_wrong_columns", "unparseable_bad_encoding",
                       "unparseable_bad_date", "duplicate_key"}
    frame, _ = delivery(out, cat, "huzheng_renkou", DAY)
    assert set(frame.get_column("XINGBIE").drop_nulls()) <= {"M", "F"}
    assert frame.get_column("CHUSHENG").drop_nulls().str.contains(r"^\d{2}\.\d{2}\.\d{4}$").all()
    permits, _ = delivery(out, cat, "zhengzhao_xuke", DAY)
    assert permits.get_column("zh").str.contains(r"^XK\d{8}$").all()
    assert_consistent(cat, out, manifest)
    for d in manifest["defects"]:
        if d["class"] not in ("unparseable_wrong_columns", "duplicate_key"):
            row = delivery(out, cat, d["resource_id"], dt.date.fromisoformat(d["batch_date"]))[0].row(
                d["row"] - 1, named=True)
            assert row[d["column"]] == d["value_written"]


def test_an_incremental_next_day_repeats_the_first_load_with_about_the_change_rate_changed(
        demo: Catalogue, tmp_path: Path) -> None:
    """``--days 2 --change-rate 0.01 --incremental``: every resource delivers on both dates, files
    whole with the same defects, and about 1 % of the records differ from the day before."""
    from catalog.models import FileChannel
    from guiji.channels import read_files

    manifest = json.loads(generate(demo, persons=PERSONS * 5, seed=7, date=DAY, out=tmp_path, days=2, progress=False,
                                   change_rate=0.01, incremental=True).read_text(encoding="utf-8"))
    assert (manifest["parameters"]["change_rate"], manifest["parameters"]["incremental"]) == (0.01, True)
    d1, d2 = manifest["parameters"]["batch_dates"]
    stale = manifest_class(manifest, "stale")
    assert manifest_class(manifest, "truncated") is None
    delivered = changed = 0
    for r in demo.resources:
        if r.id == stale:
            continue
        assert set(manifest["resources"][r.id]["rows"]) == {d1, d2}, r.id
        if not isinstance(r.channel, FileChannel):
            continue
        day1, day2 = (read_files(r, r.channel, dt.date.fromisoformat(d), tmp_path).frame for d in (d1, d2))
        cols = [c for c in day2.columns if c not in ("_row_no", "_source")]
        assert day2.height == day1.height, r.id
        delivered += day2.height
        changed += day2.select(cols).join(day1.select(cols), on=cols, how="anti", nulls_equal=True).height
    assert 0.002 * delivered < changed < 0.02 * delivered
