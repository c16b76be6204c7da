"""Benchmark: 归集 of a generated city into the base libraries on PostgreSQL, against raw COPY.

    python benchmarks/bench_guiji.py --persons 1000000 [--runs 3] [--workers 2] [--landing DIR] [--pg-url postgresql+psycopg://...]

Runs the 归集 as the nightly job does: one step per resource, each library's merge once its
resources are done, ``--workers`` steps at a time (default GONGSHU_MAX_CONCURRENT or 2, the job's
executor). Prints the wall time, the summed step time per stage, the critical path (the longest
chain of dependent steps, which no number of workers shortens), the machine's busy CPU seconds
(gongshu and PostgreSQL) and peak RSS, then the reference measured in the same run: every
delivered record COPY'd as text columns into PostgreSQL (each channel's records rendered to UTF-8
CSV beforehand, outside the timing: raw COPY cannot load the defective files themselves — GBK with
broken bytes, rows with the wrong number of columns), over one connection and over ``--workers``
connections, and the ratios pipeline / reference. Then the
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
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from assets.resources import settings_from_env  # noqa: E402
from catalog.loader import Catalogue, load_catalogue  # noqa: E402
from guiji.base import merge_library
from guiji.ods import read_batch
from guiji.std import collect
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


def reference_data(catalogue: Catalogue, landing: Path, day: dt.date, variables: dict[str, str]) -> Prepared:
    """Every channel's records rendered to UTF-8 CSV, once, outside any timing.

    The delivered files carry defects raw COPY cannot load (GBK with broken bytes, rows with the
    wrong number of columns), so the reference loads the same records as read by the channel, as text.
    """
    prepared: Prepared = []
    for res in catalogue.resources:
        d = read_batch(res, day, landing, None, variables)
        cols = [c for c in d.frame.columns if not c.startswith("_")]
        prepared.append((res.id, cols, d.frame.select(cols).write_csv().encode()))
    return prepared


def raw_copy_reference(prepared: Prepared, url: str, streams: int = 1) -> tuple[float, int]:
    """Seconds to COPY every delivered record as raw text into PostgreSQL, and the record count.

    ``streams``: connections COPYing at once, the largest files first; each file is one COPY in
    its own transaction, as ``\\copy`` in psql does (1: file after file). The pipeline is measured
    at the nightly job's concurrency; the reference is measured both ways so either ratio can be read.
    """
    wh = Warehouse(url)
    checkpoint(url)

    def load(item: tuple[str, list[str], bytes]) -> int:
        table, cols, data = item
        raw = wh.engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            with dbapi.cursor() as cur:
                coldefs = ", ".join(f'"{c}" text' for c in cols)
                cur.execute(f'CREATE TABLE "raw_{table}" ({coldefs})')
                with cur.copy(f'COPY "raw_{table}" FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING \'UTF8\')') as cp:
                    cp.write(data)
                n = max(cur.rowcount, 0)
            dbapi.commit()
            return n
        finally:
            raw.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        rows = sum(pool.map(load, sorted(prepared, key=lambda item: -len(item[2]))))
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


def cpu_busy() -> float | None:
    """CPU seconds the whole machine has spent busy so far (every process: gongshu, PostgreSQL, the
    rest), from /proc/stat; None where there is none."""
    try:
        with open("/proc/stat") as f:
            ticks = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq = ticks[:7]
    return (user + nice + system + irq + softirq) / os.sysconf("SC_CLK_TCK")


def cpu_self() -> float:
    r = rusage.getrusage(rusage.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


@dataclass
class Step:
    kind: str  # "ods+std" or "base"
    name: str  # resource id or library code
    seconds: float


@dataclass
class Guiji:
    seconds: float
    steps: list[Step]
    # The longest chain of dependent steps (a library's longest resource step, then its merge):
    # no number of workers makes the 归集 shorter than this.
    critical: list[Step]
    cpu_busy: float | None  # machine-wide busy CPU seconds over the 归集
    cpu_client: float  # of which this process (gongshu)
    delivered: int
    accepted: int
    parsed: list[tuple]


def run_guiji(catalogue: Catalogue, landing: Path, day: dt.date, url: str, workers: int,
              variables: dict[str, str]) -> Guiji:
    """The 归集 as the nightly job runs it: one step per resource (ODS written while the rows are
    standardised), each library's merge once its resources are done, ``workers`` steps at a time
    (the job's executor runs GONGSHU_MAX_CONCURRENT, default 2). Each step opens its own
    warehouse, as each step of the job does. Without GX: that is the quality stage, timed apart.
    """
    origin = time.perf_counter()
    delivered = accepted = 0
    parsed: list[tuple] = []
    steps: list[Step] = []

    def step(kind: str, name: str, work):
        wh = Warehouse(url)
        t = time.perf_counter()
        try:
            out = work(wh)
        finally:
            wh.dispose()
        return Step(kind, name, time.perf_counter() - t), out

    def ods_std(res):
        return step("ods+std", res.id, lambda wh: collect(wh, catalogue, res, day, landing, variables=variables,
                                                          with_gx=False))

    def merge(lib):
        return step("base", lib.code, lambda wh: merge_library(wh, catalogue, lib.code, day))

    waiting = {lib.code: {r.id for r in catalogue.resources_of(lib.code)} for lib in catalogue.libraries}
    busy0, self0 = cpu_busy(), cpu_self()
    with ThreadPoolExecutor(workers, thread_name_prefix="gongshu-step") as pool:
        pending: set[Future] = {pool.submit(ods_std, res) for res in catalogue.resources}
        pending |= {pool.submit(merge, lib) for lib in catalogue.libraries if not waiting[lib.code]}
        while pending:
            done, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in done:
                st, out = f.result()
                steps.append(st)
                if st.kind == "base":
                    continue
                r, s = out
                if r.batch and s.result is not None and s.result.parsed is not None:
                    delivered += s.delivered
                    accepted += s.accepted
                    parsed.append((catalogue.resource(st.name), s.result.parsed))
                lib = catalogue.library(catalogue.resource(st.name).library)
                waiting[lib.code].discard(st.name)
                if not waiting[lib.code]:
                    pending.add(pool.submit(merge, lib))
    seconds = time.perf_counter() - origin
    busy1, self1 = cpu_busy(), cpu_self()
    by_name = {(st.kind, st.name): st for st in steps}
    chains = []
    for lib in catalogue.libraries:
        feeders = [by_name[("ods+std", r.id)] for r in catalogue.resources_of(lib.code)]
        longest = max(feeders, key=lambda st: st.seconds, default=None)
        m = by_name[("base", lib.code)]
        chains.append([longest, m] if longest else [m])
    critical = max(chains, key=lambda c: sum(st.seconds for st in c))
    return Guiji(seconds, steps, critical, None if busy0 is None or busy1 is None else busy1 - busy0,
                 self1 - self0, delivered, accepted, parsed)


def run_quality(catalogue: Catalogue, day: dt.date, url: str, parsed: list[tuple]) -> dict:
    """GX on every resource's parsed rows against one polars pass of the same rules, then the
    一数一源 and 关联 checks of every library."""
    wh = Warehouse(url)
    quality = {"GX 校验": 0.0, "polars 单遍(同规则)": 0.0, "一数一源+关联": 0.0, "rows": 0}
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
    return quality


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pg-url", default=PG_ADMIN)
    ap.add_argument("--landing", default=None, help="reuse generated deliveries from this folder")
    ap.add_argument("--runs", type=int, default=3, help="pipeline runs (each into a fresh database); medians are shown")
    ap.add_argument("--workers", type=int, default=settings_from_env().max_concurrent,
                    help="steps at a time, as the nightly job's executor (GONGSHU_MAX_CONCURRENT, default 2)")
    args = ap.parse_args()
    from generator import generate

    catalogue = load_catalogue(settings_from_env().catalogue_path)
    day = dt.date(2026, 11, 20)
    landing = Path(args.landing) if args.landing else Path(tempfile.mkdtemp(prefix="gongshu_bench_"))
    if not (landing / "manifest.json").exists():
        t = time.perf_counter()
        generate(catalogue, persons=args.persons, seed=args.seed, date=day, out=landing, days=1, progress=False)
        print(f"生成 {args.persons:,} 人: {time.perf_counter() - t:.1f} s")
    server, base = serve_in_thread(landing)
    from urllib.parse import urlparse

    # the API channels' URL variables, as the code location's LandingResource hands them to the channels
    variables = {res.channel.url_env: base + urlparse(res.channel.url).path for res in catalogue.resources
                 if res.channel.kind == "api" and res.channel.url_env}
    # Single timings on this shared machine vary by ±30%, the reference most: every figure is the
    # median of --runs, each into fresh databases, with the reference measured twice per run,
    # between the runs, so a slow spell weighs on both sides alike.
    prepared = reference_data(catalogue, landing, day, variables)
    warm_up()  # GX import and context, once per process, outside the timing
    streams = sorted({1, args.workers})
    refs: dict[int, list[tuple[float, int]]] = {n: [] for n in streams}
    runs: list[Guiji] = []
    floors, qualities = [], []
    try:
        for _ in range(args.runs):
            for _ in range(REFERENCES_PER_RUN):
                for n in streams:
                    with TempDatabase(args.pg_url) as url:
                        refs[n].append(raw_copy_reference(prepared, url, n))
            with TempDatabase(args.pg_url) as url:
                checkpoint(url)
                g = run_guiji(catalogue, landing, day, url, args.workers, variables)
                runs.append(g)
                floors.append(write_floor(url))
                qualities.append(run_quality(catalogue, day, url, g.parsed))
                g.parsed = []
    finally:
        server.shutdown()
    med = statistics.median
    ref_rows = refs[1][0][1]
    ref = {n: med(r[0] for r in refs[n]) for n in streams}
    total = med(g.seconds for g in runs)
    delivered, accepted = runs[0].delivered, runs[0].accepted
    floor_s, floor_rows, floor_bytes = med(f[0] for f in floors), floors[0][1], floors[0][2]
    quality = {k: med(q[k] for q in qualities) for k in qualities[0]}
    quality["rows"] = int(quality["rows"])
    print(f"\n归集基准 · PostgreSQL · {args.persons:,} 人 · 交付 {delivered:,} 行 (参照 COPY {ref_rows:,} 行) · "
          + (f"{args.workers} 个步骤并行 (同夜间作业的执行器)" if args.workers > 1 else "步骤逐个执行")
          + f" · {args.runs} 轮的中位数")
    for kind in ("ods+std", "base"):
        label = "ods+std 各资源步骤 (读取, 入库, 标准化+隔离)" if kind == "ods+std" else "base 各库合并 (一数一源)"
        s = med(sum(st.seconds for st in g.steps if st.kind == kind) for g in runs)
        print(f"  {label:<34} 步骤时长合计 {s:7.2f} s")
    print(f"  {'归集 合计 (墙钟)':<34} {total:8.2f} s  {delivered / total:>12,.0f} 行/s  (接收 {accepted:,}; "
          f"各轮 {', '.join(f'{g.seconds:.2f}' for g in runs)} s)")
    crit = max(runs, key=lambda g: g.seconds).critical
    crit_s = med(sum(st.seconds for st in g.critical) for g in runs)
    print(f"  {'最长依赖链 (实测, 含争用)':<34} {crit_s:8.2f} s  ("
          + " → ".join(f"{st.kind} {st.name}" for st in crit) + "; 各轮 "
          + ", ".join(" + ".join(f"{st.seconds:.2f}" for st in g.critical) for g in runs) + " s)")
    for n in streams:
        label = "参照: 原样 COPY, 单连接" if n == 1 else f"参照: 原样 COPY, {n} 连接并行"
        print(f"  {label:<34} {ref[n]:8.2f} s  {ref_rows / ref[n]:>12,.0f} 行/s  "
              f"({len(refs[n])} 次; 各次 {', '.join(f'{r[0]:.2f}' for r in refs[n])} s)")
    for n in streams:
        print(f"  比值 归集/参照({n} 连接) = {total / ref[n]:.2f}×  (目标 ≤ 4×; 各轮 "
              f"{', '.join(f'{g.seconds / ref[n]:.1f}×' for g in runs)}); 最长依赖链/参照 = {crit_s / ref[n]:.2f}×")
    print(f"  {'写入下限: ods+std+base':<34} {floor_s:8.2f} s  {floor_rows / floor_s:>12,.0f} 行/s  "
          f"({floor_rows:,} 行, {floor_bytes / 1e6:,.0f} MB 二进制 COPY, 同表同索引, 单连接, 无客户端计算; "
          f"各轮 {', '.join(f'{f[0]:.2f}' for f in floors)} s)")
    print(f"  比值 写入下限/参照(1 连接) = {floor_s / ref[1]:.2f}×, 归集/写入下限 = {total / floor_s:.2f}×")
    if all(g.cpu_busy is not None for g in runs):
        busy = med(g.cpu_busy for g in runs)  # type: ignore[misc]
        client = med(g.cpu_client for g in runs)
        cores = os.cpu_count() or 1
        print(f"  CPU: 归集期间整机忙 {busy:.1f} CPU·s (gongshu 进程 {client:.1f}, PostgreSQL 及其他 {busy - client:.1f}); "
              f"{cores} 核全忙也需 ≥ {busy / cores:.1f} s = {busy / cores / ref[1]:.2f}× 参照(1 连接)")
    per_m = 1_000_000 / max(quality["rows"], 1)
    gx, pq = quality["GX 校验"], quality["polars 单遍(同规则)"]
    print(f"\n质量阶段 · {quality['rows']:,} 行 (各资源已解析行)")
    print(f"  GX 校验(记录)        {gx:8.2f} s  = {gx * per_m:.2f} s/百万行")
    print(f"  参照: polars 单遍     {pq:8.2f} s  = {pq * per_m:.2f} s/百万行")
    print(f"  比值 GX/polars = {gx / pq:.2f}×  (目标 ≤ 3×)")
    print(f"  一数一源+关联一致性  {quality['一数一源+关联']:8.2f} s")
    print(f"  峰值 RSS {peak_rss_mb():,.0f} MB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
