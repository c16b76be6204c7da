"""Benchmark: 归集 of a generated city into the base libraries on PostgreSQL, against raw COPY.

    python benchmarks/bench_guiji.py --persons 1000000 [--runs 3] [--landing DIR] [--pg-url postgresql+psycopg://...]

Prints per-stage seconds, rows/s and peak RSS, then the reference measured in the same run: every
delivered record COPY'd as text columns into PostgreSQL (each channel's records rendered to UTF-8
CSV beforehand, outside the timing: raw COPY cannot load the defective files themselves — GBK with
broken bytes, rows with the wrong number of columns) and the ratio pipeline / reference. Then the
write floor: what the 归集 stored in ods, std and the base libraries, COPY'd back as it is stored
into empty tables with the same keys and indexes — what writing these layers as they are stored
costs with no client work at all — and the ratios floor / reference and pipeline / floor. Creates and
drops its own databases.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource as rusage
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assets.base import merge_library  # noqa: E402
from assets.ods import read_batch  # noqa: E402
from assets.std import collect  # noqa: E402
from catalog.loader import Catalogue, catalogue_path, load_catalogue  # noqa: E402
from pipelines.demo_api import serve_in_thread  # noqa: E402
from quality.conflicts import check_library_consistency  # noqa: E402
from quality.expectations import validate, warm_up  # noqa: E402
from quality.references import check_references  # noqa: E402
from quality.rules import evaluated, failing, resource_rules  # noqa: E402
from warehouse.store import Warehouse  # noqa: E402

PG_ADMIN = os.environ.get("GONGSHU_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


def peak_rss_mb() -> float:
    return rusage.getrusage(rusage.RUSAGE_SELF).ru_maxrss / 1024


class TempDatabase:
    def __init__(self, admin_url: str):
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self.name = f"gongshu_bench_{uuid.uuid4().hex[:10]}"
        self.url = sa.engine.make_url(admin_url).set(database=self.name).render_as_string(hide_password=False)

    def __enter__(self) -> str:
        with self.admin.connect() as c:
            c.execute(sa.text(f'CREATE DATABASE "{self.name}"'))
        return self.url

    def __exit__(self, *exc) -> None:
        with self.admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)'))
        self.admin.dispose()


def checkpoint(url: str) -> None:
    """Start each timed part from a clean server: dirty pages written out, no checkpoint pending.

    Without it, a part that follows a large write (the floor after the pipeline) pays for the
    previous part's checkpoint; measured here, that moved single timings by ±30%. Needs a
    superuser (or pg_checkpoint); without one the timings are taken as they come.
    """
    engine = sa.create_engine(url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("CHECKPOINT"))
    except sa.exc.DBAPIError:
        pass
    finally:
        engine.dispose()


Prepared = list[tuple[str, list[str], bytes]]  # table, columns, UTF-8 CSV bytes


def reference_data(catalogue: Catalogue, landing: Path, day: dt.date) -> Prepared:
    """Every channel's records rendered to UTF-8 CSV, once, outside any timing.

    The delivered files carry defects raw COPY cannot load (GBK with broken bytes, rows with the
    wrong number of columns), so the reference loads the same records as read by the channel, as text.
    """
    prepared: Prepared = []
    for res in catalogue.resources:
        d = read_batch(res, day, landing, None)
        cols = [c for c in d.frame.columns if not c.startswith("_")]
        prepared.append((res.id, cols, d.frame.select(cols).write_csv().encode()))
    return prepared


def raw_copy_reference(prepared: Prepared, url: str) -> tuple[float, int]:
    """Seconds to COPY every delivered record as raw text into PostgreSQL, and the record count."""
    wh = Warehouse(url)
    rows = 0
    checkpoint(url)
    start = time.perf_counter()
    with wh.engine.begin() as conn:
        raw = conn.connection.driver_connection
        with raw.cursor() as cur:
            for table, cols, data in prepared:
                coldefs = ", ".join(f'"{c}" text' for c in cols)
                cur.execute(f'CREATE TABLE "raw_{table}" ({coldefs})')
                with cur.copy(f'COPY "raw_{table}" FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING \'UTF8\')') as cp:
                    cp.write(data)
                rows += cur.rowcount if cur.rowcount and cur.rowcount > 0 else 0
    seconds = time.perf_counter() - start
    wh.dispose()
    return seconds, rows


REFERENCES_PER_RUN = 2
FLOOR_LAYERS = ("ods", "std", "base")


def write_floor(url: str) -> tuple[float, int, int]:
    """Seconds to COPY what the 归集 stored, as it is stored, into empty copies of its tables.

    Run after the pipeline, in its database: every ODS, std and base-library table is unloaded
    (outside the timing) and COPY'd back into a fresh ``LIKE … INCLUDING ALL`` table (same
    columns, primary key, BRIN/B-tree indexes), in one transaction, with no client-side work: what
    storing these layers in this form costs the server over one connection (binary COPY, as the
    pipeline sends it). The gap between it and the pipeline is the pipeline's own work (reading,
    standardising, merging).
    Returns seconds, rows written and bytes of COPY data.
    """
    wh = Warehouse(url)
    with wh.engine.connect() as conn:
        tables = [(s, t) for s, t in conn.execute(sa.text(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema = ANY(:s) AND table_type = 'BASE TABLE' ORDER BY 1, 2"),
            {"s": list(FLOOR_LAYERS)}).all()]
    dumps: list[tuple[str, str, bytes]] = []
    raw = wh.engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        with dbapi.cursor() as cur:
            for schema, table in tables:
                buf = bytearray()
                with cur.copy(f'COPY "{schema}"."{table}" TO STDOUT WITH (FORMAT binary)') as cp:
                    for block in cp:
                        buf += block
                dumps.append((schema, table, bytes(buf)))
            cur.execute("CREATE SCHEMA floor")
            dbapi.commit()
            rows = 0
            checkpoint(url)
            start = time.perf_counter()
            for schema, table, data in dumps:
                name = f'floor."{schema}__{table}"'
                cur.execute(f'CREATE TABLE {name} (LIKE "{schema}"."{table}" INCLUDING ALL)')
                with cur.copy(f"COPY {name} FROM STDIN WITH (FORMAT binary)") as cp:
                    cp.write(data)
                rows += max(cur.rowcount, 0)
            dbapi.commit()
            seconds = time.perf_counter() - start
            cur.execute("DROP SCHEMA floor CASCADE")
            dbapi.commit()
    finally:
        raw.close()
        wh.dispose()
    return seconds, rows, sum(len(d) for _, _, d in dumps)


GUIJI = ("ods+std (读取, 入库, 标准化+隔离)", "base (一数一源合并)")


def run_pipeline(catalogue: Catalogue, landing: Path, day: dt.date, url: str) -> tuple[dict[str, float], int, int, dict]:
    """The 归集 (without GX: that is the quality stage), then the quality stage, timed apart."""
    wh = Warehouse(url)
    stages = dict.fromkeys(GUIJI, 0.0)
    quality = {"GX 校验": 0.0, "polars 单遍(同规则)": 0.0, "一数一源+关联": 0.0, "rows": 0}
    delivered = accepted = 0
    parsed: list[tuple] = []
    for res in catalogue.resources:
        # one step per resource, as the nightly job runs it: ODS written while the rows are standardised
        t = time.perf_counter()
        r, s = collect(wh, catalogue, res, day, landing, with_gx=False)
        stages[GUIJI[0]] += time.perf_counter() - t
        if r.batch and s.result is not None and s.result.parsed is not None:
            delivered += s.delivered
            accepted += s.accepted
            parsed.append((res, s.result.parsed))
    for lib in catalogue.libraries:
        t = time.perf_counter()
        merge_library(wh, catalogue, lib.code, day)
        stages[GUIJI[1]] += time.perf_counter() - t
    for res, frame in parsed:
        rules = resource_rules(catalogue, res, day)
        quality["rows"] += frame.height
        t = time.perf_counter()
        validate(frame, rules, res.id)
        quality["GX 校验"] += time.perf_counter() - t
        t = time.perf_counter()
        frame.select([evaluated(r).sum().alias(f"n{i}") for i, r in enumerate(rules)]
                     + [failing(r).sum().alias(f"u{i}") for i, r in enumerate(rules)])
        quality["polars 单遍(同规则)"] += time.perf_counter() - t
    t = time.perf_counter()
    for lib in catalogue.libraries:
        check_library_consistency(wh, catalogue, lib.code, day)
        check_references(wh, catalogue, lib.code, day)
    quality["一数一源+关联"] += time.perf_counter() - t
    wh.dispose()
    return stages, delivered, accepted, quality


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pg-url", default=PG_ADMIN)
    ap.add_argument("--landing", default=None, help="reuse generated deliveries from this folder")
    ap.add_argument("--runs", type=int, default=3, help="pipeline runs (each into a fresh database); medians are shown")
    args = ap.parse_args()
    from generator import generate

    catalogue = load_catalogue(catalogue_path())
    day = dt.date(2026, 11, 20)
    landing = Path(args.landing) if args.landing else Path(tempfile.mkdtemp(prefix="gongshu_bench_"))
    if not (landing / "manifest.json").exists():
        t = time.perf_counter()
        generate(catalogue, persons=args.persons, seed=args.seed, date=day, out=landing, days=1, progress=False)
        print(f"生成 {args.persons:,} 人: {time.perf_counter() - t:.1f} s")
    server, base = serve_in_thread(landing)
    for res in catalogue.resources:
        ch = res.channel
        if ch.kind == "api" and ch.url_env:
            from urllib.parse import urlparse

            os.environ[ch.url_env] = base + urlparse(ch.url).path
    # Single timings on this shared machine vary by ±30%, the reference most: every figure is the
    # median of --runs, each into fresh databases, with the reference measured twice per run,
    # between the runs, so a slow spell weighs on both sides alike.
    prepared = reference_data(catalogue, landing, day)
    warm_up()  # GX import and context, once per process, outside the timing
    refs, runs, floors = [], [], []
    try:
        for _ in range(args.runs):
            for _ in range(REFERENCES_PER_RUN):
                with TempDatabase(args.pg_url) as url:
                    refs.append(raw_copy_reference(prepared, url))
            with TempDatabase(args.pg_url) as url:
                checkpoint(url)
                t = time.perf_counter()
                stages, delivered, accepted, quality = run_pipeline(catalogue, landing, day, url)
                total = time.perf_counter() - t - sum(v for k, v in quality.items() if k != "rows")
                runs.append((total, stages, quality))
                floors.append(write_floor(url))
    finally:
        server.shutdown()
    ref_s, ref_rows = statistics.median(r[0] for r in refs), refs[0][1]
    total = statistics.median(r[0] for r in runs)
    floor_s, floor_rows, floor_bytes = statistics.median(f[0] for f in floors), floors[0][1], floors[0][2]
    stages = {k: statistics.median(r[1][k] for r in runs) for k in runs[0][1]}
    quality = {k: statistics.median(r[2][k] for r in runs) for k in runs[0][2]}
    print(f"\n归集基准 · PostgreSQL · {args.persons:,} 人 · 交付 {delivered:,} 行 (参照 COPY {ref_rows:,} 行) · "
          f"{args.runs} 轮的中位数")
    for name, s in stages.items():
        print(f"  {name:<20} {s:8.2f} s  {delivered / s if s else 0:>12,.0f} 行/s")
    print(f"  {'合计':<20} {total:8.2f} s  {delivered / total:>12,.0f} 行/s  (接收 {accepted:,}; "
          f"各轮 {', '.join(f'{r[0]:.2f}' for r in runs)} s)")
    print(f"  {'参照: 原样 COPY':<20} {ref_s:8.2f} s  {ref_rows / ref_s:>12,.0f} 行/s  "
          f"({len(refs)} 次; 各次 {', '.join(f'{r[0]:.2f}' for r in refs)} s)")
    print(f"  比值 归集/参照 = {total / ref_s:.2f}×  (目标 ≤ 4×; 各轮 "
          f"{', '.join(f'{r[0] / ref_s:.1f}×' for r in runs)})")
    print(f"  {'写入下限: ods+std+base':<20} {floor_s:8.2f} s  {floor_rows / floor_s:>12,.0f} 行/s  "
          f"({floor_rows:,} 行, {floor_bytes / 1e6:,.0f} MB 二进制 COPY, 同表同索引, 无客户端计算; "
          f"各轮 {', '.join(f'{f[0]:.2f}' for f in floors)} s)")
    print(f"  比值 写入下限/参照 = {floor_s / ref_s:.2f}×, 归集/写入下限 = {total / floor_s:.2f}×")
    per_m = 1_000_000 / max(quality["rows"], 1)
    gx, ref = quality["GX 校验"], quality["polars 单遍(同规则)"]
    print(f"\n质量阶段 · {quality['rows']:,} 行 (各资源已解析行)")
    print(f"  GX 校验(记录)        {gx:8.2f} s  = {gx * per_m:.2f} s/百万行")
    print(f"  参照: polars 单遍     {ref:8.2f} s  = {ref * per_m:.2f} s/百万行")
    print(f"  比值 GX/polars = {gx / ref:.2f}×  (目标 ≤ 3×)")
    print(f"  一数一源+关联一致性  {quality['一数一源+关联']:8.2f} s")
    print(f"  峰值 RSS {peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
