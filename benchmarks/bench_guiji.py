"""Benchmark: the real nightly job ``nightly_guiji`` on a generated city in PostgreSQL, against raw COPY.

    python benchmarks/bench_guiji.py --persons 1000000 [--runs 3] [--workers 2] [--landing DIR]
                                     [--pg-url postgresql+psycopg://...] [--json PATH]
                                     [--dagster-storage sqlite|postgres]

Generates the city (or reuses ``--landing``), serves its API channel, creates a database, and launches
the nightly job through a Dagster instance (a temporary ``DAGSTER_HOME`` with the repo's
``dagster.yaml``) and the code location of ``workspace.yaml``, exactly as ``gongshu run`` does
(:class:`pipelines.runs.NightlyRuns`): the code server's run worker executes the job with the job's own
multiprocess executor (forkserver, ``--workers`` = ``GONGSHU_MAX_CONCURRENT`` steps at a time), GX,
share outputs, scorecard and reports included. Settings reach the code location as they do in
production, through the environment (``GONGSHU_WAREHOUSE_URL``, ``GONGSHU_LANDING``, ``GONGSHU_HOME``, …).
The instance keeps its runs and events in Dagster's embedded SQLite (as ``make demo``), or with
``--dagster-storage postgres`` in a PostgreSQL database of its own (dagster-postgres, as a deployment with
``DAGSTER_PG_URL`` does; every step writes its events there).

Every figure of the night comes from the run's event log: the whole night (RUN_STARTING → RUN_SUCCESS)
and the run worker's start-up before its first step; the 归集 (first ods+std step start → last
base-library merge end); step time summed per stage; the five slowest steps; the critical path (the
longest chain of dependent steps, from the step durations and the run's execution plan: no number of
workers shortens it), for the 归集 and for the night; and the step processes' start-up
(STEP_WORKER_STARTING → STEP_START). Rows delivered, accepted and quarantined per layer come from the
warehouse's audit tables (``ods.batches``, ``audit.reconciliation``) and the base libraries. A background
thread samples ``/proc`` for the run worker and its descendants (forkserver, step processes): the
largest single process and the largest sum, as peak RSS. The machine's busy CPU seconds over the night
come from ``/proc/stat`` (gongshu and PostgreSQL and anything else).

Beside it, in the same run: the raw-COPY reference — every delivered record COPY'd as text columns
into PostgreSQL (each channel's records rendered to UTF-8 CSV beforehand, outside the timing: raw COPY
cannot load the defective files themselves — GBK with broken bytes, rows with the wrong number of
columns), over one connection and over ``--workers`` connections — and the write floor: what the 归集
stored in ods, std and the base libraries, COPY'd back as it is stored into empty tables with the same
keys and indexes (what writing these layers costs with no client work at all). Prints the ratios
night / 归集, 归集 / reference and 归集 / floor. ``--runs`` repeats everything on fresh databases and
prints medians with every single figure. Creates and drops its own databases and Dagster instances
(and the generated city, unless ``--landing`` names where to keep it).

Then, in each run's database, the incremental night: the city is generated with a next day
(``generate(days=2, change_rate=--change-rate, incremental=True)``: every resource delivers again,
files and APIs whole, 前置库 only the changed rows, about ``--change-rate`` of each resource's
entities changed, the first day's defects repeated), and after the first-load night of day D the
night of D+1 runs on the same warehouse. Printed against the first load: its whole night, its 归集,
and the rows it wrote (ODS rows and carried runs, std rows and quarantine rows, base versions
inserted or closed), with the records carried unchanged. ``--no-incremental`` leaves it out.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import secrets
import shutil
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from assets.resources import WAREHOUSE_URL, settings_from_env  # noqa: E402
from catalog.loader import Catalogue, load_catalogue  # noqa: E402
from catalog.models import DatabaseChannel  # noqa: E402
from desensitize.pseudonym import KEY_ENV  # noqa: E402
from guiji.channels import open_database  # noqa: E402
from guiji.ods import read_batch  # noqa: E402
from pipelines.demo_api import serve_in_thread  # noqa: E402
from warehouse.store import Warehouse  # noqa: E402

PG_ADMIN = os.environ.get("GONGSHU_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


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


Prepared = list[tuple[str, list[str], Path]]  # table, columns, UTF-8 CSV file
COPY_BLOCK = 8 << 20  # bytes of a reference file sent to COPY at a time, as psql's \copy streams a file


def reference_data(catalogue: Catalogue, landing: Path, day: dt.date, variables: dict[str, str],
                   folder: Path) -> Prepared:
    """Every channel's records rendered to a UTF-8 CSV file in ``folder``, once, outside any timing.

    The delivered files carry defects raw COPY cannot load (GBK with broken bytes, rows with the
    wrong number of columns), so the reference loads the same records as read by the channel, as text.
    A 前置库 is read a page at a time and each file is written as it is read: held in memory, the
    reference of a 10 M-person city took the bench's process to 15.3 GB for the whole night.
    """
    prepared: Prepared = []
    for res in catalogue.resources:
        path = folder / f"{res.id}.csv"
        if isinstance(res.channel, DatabaseChannel):
            pages = open_database(res, day, landing, None, variables).pages()
        else:
            pages = [read_batch(res, day, landing, None, variables).frame]
        cols: list[str] | None = None
        with path.open("wb") as out:
            for page in pages:
                if cols is None:
                    cols = [c for c in page.columns if not c.startswith("_")]
                page.select(cols).write_csv(out, include_header=out.tell() == 0)
        prepared.append((res.id, cols or [], path))
    return prepared


def copy_file(cp, path: Path) -> None:
    """Send a file to a running COPY ... FROM STDIN (psycopg's ``Copy``) ``COPY_BLOCK`` bytes at a time."""
    with path.open("rb") as data:
        while block := data.read(COPY_BLOCK):
            cp.write(block)


def raw_copy_reference(prepared: Prepared, url: str, streams: int = 1) -> tuple[float, int]:
    """Seconds to COPY every delivered record as raw text into PostgreSQL, and the record count.

    ``streams``: connections COPYing at once, the largest files first; each file is one COPY in
    its own transaction, as ``\\copy`` in psql does (1: file after file). The pipeline is measured
    at the nightly job's concurrency; the reference is measured both ways so either ratio can be read.
    """
    wh = Warehouse(url)
    checkpoint(url)

    def load(item: tuple[str, list[str], Path]) -> int:
        table, cols, path = item
        raw = wh.engine.raw_connection()
        try:
            dbapi = raw.driver_connection
            with dbapi.cursor() as cur:
                coldefs = ", ".join(f'"{c}" text' for c in cols)
                cur.execute(f'CREATE TABLE "raw_{table}" ({coldefs})')
                with cur.copy(f'COPY "raw_{table}" FROM STDIN WITH (FORMAT csv, HEADER true, ENCODING \'UTF8\')') as cp:
                    copy_file(cp, path)
                n = max(cur.rowcount, 0)
            dbapi.commit()
            return n
        finally:
            raw.close()

    start = time.perf_counter()
    with ThreadPoolExecutor(streams) as pool:
        rows = sum(pool.map(load, sorted(prepared, key=lambda item: -item[2].stat().st_size)))
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
    # unloaded to files, not held: the layers of a 10 M-person city are 11 GB of COPY data
    folder = Path(tempfile.mkdtemp(prefix="gongshu_bench_floor_"))
    dumps: list[tuple[str, str, Path]] = []
    raw = wh.engine.raw_connection()
    try:
        dbapi = raw.driver_connection
        with dbapi.cursor() as cur:
            for schema, table in tables:
                path = folder / f"{schema}.{table}.copy"
                with cur.copy(f'COPY "{schema}"."{table}" TO STDOUT WITH (FORMAT binary)') as cp, \
                        path.open("wb") as out:
                    for block in cp:
                        out.write(block)
                dumps.append((schema, table, path))
            cur.execute("CREATE SCHEMA floor")
            dbapi.commit()
            rows = 0
            checkpoint(url)
            start = time.perf_counter()
            for schema, table, path in dumps:
                name = f'floor."{schema}__{table}"'
                cur.execute(f'CREATE TABLE {name} (LIKE "{schema}"."{table}" INCLUDING ALL)')
                with cur.copy(f"COPY {name} FROM STDIN WITH (FORMAT binary)") as cp:
                    copy_file(cp, path)
                rows += max(cur.rowcount, 0)
            dbapi.commit()
            seconds = time.perf_counter() - start
            cur.execute("DROP SCHEMA floor CASCADE")
            dbapi.commit()
        return seconds, rows, sum(p.stat().st_size for _, _, p in dumps)
    finally:
        raw.close()
        wh.dispose()
        shutil.rmtree(folder, ignore_errors=True)


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


# --- the processes of the run: peak RSS ----------------------------------------------------------------

PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


def process_table() -> dict[int, tuple[int, int]]:
    """Every process of the machine: pid → (parent pid, resident bytes), from /proc/*/stat."""
    table: dict[int, tuple[int, int]] = {}
    try:
        names = os.listdir("/proc")
    except OSError:
        return table
    for name in names:
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", "rb") as f:
                stat = f.read()
        except OSError:  # gone since the listing
            continue
        fields = stat[stat.rindex(b")") + 2:].split()  # after "pid (comm) ": state, ppid, …
        table[int(name)] = (int(fields[1]), int(fields[21]) * PAGE)
    return table


def descendants(table: dict[int, tuple[int, int]], root: int) -> list[int]:
    """``root`` and every process below it in ``table``."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        if pid in table:
            out.append(pid)
            todo.extend(children.get(pid, []))
    return out


class RssSampler:
    """Samples, every ``interval`` seconds in a background thread, the resident memory of every process
    below this one (the code server, the run worker it starts, the worker's forkserver and step
    processes); :meth:`peak` then picks out a subtree, the run worker's, by its pid."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.samples: list[dict[int, tuple[int, int]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = os.getpid()
        while not self._stop.is_set():
            table = process_table()
            self.samples.append({pid: table[pid] for pid in descendants(table, me) if pid != me})
            self._stop.wait(self.interval)

    def peak_of(self, pid: int) -> int:
        """Bytes of one process's largest sample (0 if it was never sampled)."""
        return max((sample[pid][1] for sample in self.samples if pid in sample), default=0)

    def peak(self, root: int | None) -> tuple[int, int, int]:
        """Bytes of the largest single process and of the largest sum at one sample, over ``root`` and
        its descendants (every process sampled when ``root`` is None), and how many processes were seen."""
        single = total = 0
        seen: set[int] = set()
        for sample in self.samples:
            pids = list(sample) if root is None else descendants(sample, root)
            if not pids:
                continue
            seen.update(pids)
            single = max(single, max(sample[p][1] for p in pids))
            total = max(total, sum(sample[p][1] for p in pids))
        return single, total, len(seen)


def wait_for_children(timeout_s: float = 30.0) -> None:
    """Until no process started by this one is left (``timeout_s`` at most)."""
    me = os.getpid()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and len(descendants(process_table(), me)) > 1:
        time.sleep(0.2)


# --- the night: launched through the instance and the code location, as `gongshu run` does --------------


@contextmanager
def environment(values: dict[str, str | None]) -> Iterator[None]:
    """``values`` set in this process's environment for the block (the code server and every process it
    starts inherit them; None: the variable unset), the previous values restored afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@dataclass
class StepTime:
    key: str
    stage: str
    start: float  # seconds since the run's RUN_STARTING
    end: float
    startup: float | None  # STEP_WORKER_STARTING → STEP_START: the step process's start-up
    spawn: float | None  # of which STEP_WORKER_STARTING → STEP_WORKER_STARTED: the fork, until the process reports
    status: str

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class Night:
    run_id: str
    status: str
    code_location_s: float  # the code server's start and the load of the code location (before the run)
    launch_to_end_s: float  # as this process saw it: launch() → the run finished
    night_s: float  # RUN_STARTING → RUN_SUCCESS (or failure) in the event log
    worker_startup_s: float  # RUN_STARTING → the first step process launched
    guiji_s: float  # first ods+std step start → last base-library merge end
    guiji_others: list[str]  # steps of later stages the executor ran within that span (their deps allowed it)
    steps: list[StepTime]
    stages: dict[str, float]  # summed step seconds per stage
    guiji_path: list[str]
    guiji_path_s: float
    night_path: list[str]
    night_path_s: float
    rows: dict[str, object] = field(default_factory=dict)
    rss_single_mb: float = 0.0
    rss_sum_mb: float = 0.0
    processes: int = 0
    run_worker_pid: int | None = None
    cpu_busy_s: float | None = None
    step_pids: dict[str, int] = field(default_factory=dict)  # step → the process that ran it
    step_rss_mb: dict[str, float] = field(default_factory=dict)  # step → its process's peak RSS
    run_worker_rss_mb: float = 0.0


STAGES = {  # stage → label, in the order printed
    "ods+std": "ods+std 各资源步骤 (读取, 入库, 标准化+GX+隔离)",
    "base": "base 各库合并 (一数一源)",
    "checks": "质量检查步骤 (时效, 关联一致性)",
    "share": "share 共享/开放数据 (脱敏)",
    "quality": "quality 校核工单与评分",
    "reports": "reports 部门质量报告",
}


def stage_of(step_key: str) -> str:
    """The stage of a step of the nightly job, by its key (``guiji_<resource>`` reads and stores one
    resource's ODS and 标准层 in one step, GX included; ``base__<library>`` merges a library)."""
    if step_key.startswith("guiji_"):
        return "ods+std"
    if step_key.endswith("_referential") or step_key.endswith("_freshness"):
        return "checks"
    if step_key.startswith("base__"):
        return "base"
    if step_key.startswith("share__"):
        return "share"
    if step_key == "quality__department_reports":
        return "reports"
    return "quality"


def longest_path(steps: dict[str, StepTime], upstream: dict[str, set[str]]) -> tuple[list[str], float]:
    """The chain of dependent steps (among ``steps``) whose durations add up to the most."""
    best: dict[str, tuple[float, list[str]]] = {}

    def chain(key: str) -> tuple[float, list[str]]:
        if key not in best:
            before = [chain(u) for u in upstream.get(key, set()) if u in steps]
            s, path = max(before, default=(0.0, []), key=lambda c: c[0])
            best[key] = (s + steps[key].seconds, [*path, key])
        return best[key]

    s, path = max((chain(k) for k in steps), default=(0.0, []), key=lambda c: c[0])
    return path, s


def night_from_events(instance, run_id: str) -> Night:
    """The figures of a finished run, from its event log and its execution plan."""
    from dagster import DagsterEventType as E

    run = instance.get_run_by_id(run_id)
    entries = [e for e in instance.all_logs(run_id) if e.dagster_event is not None]
    first = {}
    for e in entries:
        first.setdefault(e.dagster_event.event_type, e.timestamp)
    origin = first.get(E.RUN_STARTING, entries[0].timestamp)
    end = next((first[t] for t in (E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED) if t in first), entries[-1].timestamp)
    marks: dict[str, dict[str, float]] = {}
    pid = None
    step_pids: dict[str, int] = {}
    for e in entries:
        ev = e.dagster_event
        if e.step_key and ev.event_type == E.STEP_WORKER_STARTED and ev.engine_event_data:
            value = ev.engine_event_data.metadata.get("pid")  # 'Executing step "x" in subprocess.'
            if value is not None and str(value.value).isdigit():
                step_pids[e.step_key] = int(value.value)
        if e.step_key:
            step = marks.setdefault(e.step_key, {})
            name = ev.event_type_value
            if ev.event_type in (E.STEP_SUCCESS, E.STEP_FAILURE, E.STEP_SKIPPED):
                step["end"], step["status"] = e.timestamp - origin, name  # type: ignore[assignment]
            else:
                step.setdefault(name, e.timestamp - origin)
        elif pid is None and ev.event_type == E.ENGINE_EVENT and ev.engine_event_data:
            value = ev.engine_event_data.metadata.get("pid")  # "Started process for run (pid: N)."
            if value is not None and str(value.value).isdigit():
                pid = int(value.value)
    steps = {}
    for key, m in marks.items():
        if "STEP_START" not in m or "end" not in m:
            continue
        launched, reported = m.get("STEP_WORKER_STARTING"), m.get("STEP_WORKER_STARTED")
        steps[key] = StepTime(key, stage_of(key), m["STEP_START"], m["end"],
                              None if launched is None else m["STEP_START"] - launched,
                              None if launched is None or reported is None else reported - launched,
                              str(m["status"]))
    plan = instance.get_execution_plan_snapshot(run.execution_plan_snapshot_id)
    upstream = {s.key: {h.step_key for i in s.inputs for h in i.upstream_output_handles} for s in plan.steps}
    stages = {stage: sum(st.seconds for st in steps.values() if st.stage == stage) for stage in STAGES}
    guiji = {k: st for k, st in steps.items() if st.stage in ("ods+std", "base")}
    ods = [st for st in guiji.values() if st.stage == "ods+std"]
    merges = [st for st in guiji.values() if st.stage == "base"]
    guiji_s = max(st.end for st in merges) - min(st.start for st in ods) if ods and merges else 0.0
    guiji_end = max((st.end for st in merges), default=0.0)
    others = [st.key for st in steps.values() if st.stage not in ("ods+std", "base") and st.start < guiji_end]
    launches = [m["STEP_WORKER_STARTING"] for m in marks.values() if "STEP_WORKER_STARTING" in m]
    gpath, gs = longest_path(guiji, upstream)
    npath, ns = longest_path(steps, upstream)
    return Night(run_id, run.status.value, 0.0, 0.0, end - origin, min(launches, default=0.0), guiji_s, others,
                 sorted(steps.values(), key=lambda st: st.start), stages, gpath, gs, npath, ns, run_worker_pid=pid,
                 step_pids=step_pids)


def rows_written(wh: Warehouse, conn, catalogue: Catalogue, day: dt.date) -> dict[str, int]:
    """The rows the night of batch date ``day`` wrote: ODS rows of its batches and their carried runs,
    their std rows and quarantine rows, base-library versions it inserted (``valid_from = day``) or
    closed (``valid_to = day``)."""
    out = {"ods": 0, "ods_carried_runs": 0, "std": 0, "quarantine": 0, "base": 0}
    batches = wh.qualified("ods", "batches")
    of_day = f"IN (SELECT batch_id FROM {batches} WHERE batch_date = :d)"
    for r in catalogue.resources:
        for layer in ("ods", "std"):
            if wh.exists(layer, r.id):
                out[layer] += wh.scalar(conn, f"SELECT COUNT(*) FROM {wh.qualified(layer, r.id)} WHERE _batch_id {of_day}",
                                        {"d": day})
    if wh.exists("ods", "carried"):
        out["ods_carried_runs"] = wh.scalar(conn, f"SELECT COUNT(*) FROM {wh.qualified('ods', 'carried')} "
                                                  f"WHERE batch_id {of_day}", {"d": day})
    if wh.exists("quality", "quarantine"):
        out["quarantine"] = wh.scalar(conn, f"SELECT COUNT(*) FROM {wh.qualified('quality', 'quarantine')} "
                                            f"WHERE batch_id {of_day}", {"d": day})
    for lib in catalogue.libraries:
        if wh.exists("base", lib.code):
            out["base"] += wh.scalar(conn, f"SELECT COUNT(*) FROM {wh.qualified('base', lib.code)} "
                                           "WHERE valid_from = :d OR valid_to = :d", {"d": day})
    out = {k: int(v) for k, v in out.items()}
    out["total"] = sum(out.values())
    return out


def layer_rows(url: str, catalogue: Catalogue, day: dt.date) -> dict[str, object]:
    """Rows per layer for batch date ``day``, from the warehouse's audit tables: delivered (``ods.batches``),
    accepted and quarantined (``audit.reconciliation``), current entities and versions per base library,
    the resources whose delivery failed or whose batch was withheld, and the rows the night wrote."""
    from warehouse.std import night_problems

    wh = Warehouse(url)
    try:
        with wh.engine.connect() as conn:
            written = rows_written(wh, conn, catalogue, day)
            carried = wh.scalar(conn, f"SELECT COALESCE(SUM(rows_carried), 0) FROM {wh.qualified('ods', 'batches')} "
                                      "WHERE batch_date = :d", {"d": day})
            ods = conn.execute(sa.text(
                f"SELECT COUNT(*), COALESCE(SUM(rows_delivered), 0), COALESCE(SUM(rows_unparseable), 0), "
                f"COUNT(*) FILTER (WHERE status = 'failed') FROM {wh.qualified('ods', 'batches')} "
                "WHERE batch_date = :d"), {"d": day}).one()
            std = conn.execute(sa.text(
                f"SELECT COALESCE(SUM(rows_delivered), 0), COALESCE(SUM(rows_accepted), 0), "
                f"COALESCE(SUM(rows_quarantined), 0) FROM {wh.qualified('audit', 'reconciliation')} "
                "WHERE batch_date = :d"), {"d": day}).one()
            base = {}
            for lib in catalogue.libraries:
                if wh.exists("base", lib.code):
                    t = wh.qualified("base", lib.code)
                    base[lib.code] = {"current": wh.scalar(conn, f"SELECT COUNT(*) FROM {t} WHERE valid_to IS NULL"),
                                      "versions": wh.scalar(conn, f"SELECT COUNT(*) FROM {t}")}
        problems = night_problems(wh, day)
    finally:
        wh.dispose()
    return {
        "batches": int(ods[0]), "failed_batches": int(ods[3]), "delivered": int(ods[1]), "unparseable": int(ods[2]),
        "std_delivered": int(std[0]), "accepted": int(std[1]), "quarantined": int(std[2]),
        "base": base, "problems": {r["resource_id"]: r["state"] for r in problems.iter_rows(named=True)},
        "written": written, "carried": int(carried),
    }


def run_night(url: str, landing: Path, day: dt.date, workers: int, variables: dict[str, str],
              catalogue_path: Path, key: str, dagster_pg: str | None = None) -> Night:
    """Launch ``nightly_guiji`` for ``day`` through a fresh Dagster instance and the code location, as
    ``gongshu run`` does, into the warehouse at ``url``; wait for it; its figures. ``key``: the
    pseudonym key, the same for every night of one warehouse (as in production: a new key re-tokenises
    every keyed output in full). ``dagster_pg``: an admin URL where the instance's run/event/schedule
    storage gets a database of its own (dagster-postgres, as ``DAGSTER_PG_URL`` sets it up in production);
    None: Dagster's embedded SQLite under the temporary ``DAGSTER_HOME``."""
    from dagster import DagsterInstance

    from pipelines.cli import DAGSTER_PG_DRIVER, cmd_instance, console_logging
    from pipelines.runs import NightlyRuns

    tmp = tempfile.mkdtemp(prefix="gongshu_bench_night_")
    databases = ExitStack()  # Dagster's storage database, dropped with the folder
    try:
        # dagster-postgres needs psycopg2 (pipelines.cli.DAGSTER_PG_DRIVER)
        storage_url = (sa.engine.make_url(databases.enter_context(TempDatabase(dagster_pg))).set(
            drivername=DAGSTER_PG_DRIVER).render_as_string(hide_password=False) if dagster_pg else None)
        env = {
            "DAGSTER_HOME": str(Path(tmp) / "dagster"),
            "GONGSHU_HOME": str(Path(tmp) / "home"),
            "GONGSHU_LANDING": str(landing),
            "GONGSHU_CATALOG": str(catalogue_path),
            WAREHOUSE_URL: url,
            "GONGSHU_MAX_CONCURRENT": str(workers),
            KEY_ENV: key,
            # the code server imports the code location of this checkout
            "PYTHONPATH": os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
            "DAGSTER_DISABLE_TELEMETRY": "1",
            # Dagster's own storage: a database of its own, or SQLite in DAGSTER_HOME (never the
            # storage a DAGSTER_PG_URL of the caller's environment names)
            "DAGSTER_PG_URL": storage_url,
            **variables,
        }
        with environment(env):
            cmd_instance(argparse.Namespace(quiet=True))  # $DAGSTER_HOME/dagster.yaml, as `gongshu run` writes it
            level = settings_from_env().log_level
            log = Path(env["DAGSTER_HOME"]) / "logs" / "gongshu-run.log"
            with DagsterInstance.get() as instance:
                t = time.perf_counter()
                with NightlyRuns(instance, log=log) as runs:
                    loaded = time.perf_counter() - t
                    with RssSampler() as rss:
                        busy0, t = cpu_busy(), time.perf_counter()
                        run_id = runs.launch(day, console_logging(level))
                        runs.wait(run_id, echo=lambda line: print(line, file=sys.stderr, flush=True), poll_s=0.2)
                        seen, busy1 = time.perf_counter() - t, cpu_busy()
                night = night_from_events(instance, run_id)
            if night.status != "SUCCESS":
                tail = log.read_text(encoding="utf-8", errors="replace")[-4000:] if log.exists() else ""
                print(f"运行 {run_id} 未成功 ({night.status}); 进程输出末尾:\n{tail}", file=sys.stderr)
    finally:
        # the code server stops after the block and, stopping, may still touch the instance's storage:
        # the folder goes once no process of ours is left
        wait_for_children()
        shutil.rmtree(tmp, ignore_errors=True)
        databases.close()
    night.code_location_s, night.launch_to_end_s = loaded, seen
    single, total, night.processes = rss.peak(night.run_worker_pid)
    night.rss_single_mb, night.rss_sum_mb = single / 2**20, total / 2**20
    night.step_rss_mb = {k: rss.peak_of(p) / 2**20 for k, p in night.step_pids.items()}
    night.run_worker_rss_mb = rss.peak_of(night.run_worker_pid) / 2**20 if night.run_worker_pid else 0.0
    night.cpu_busy_s = None if busy0 is None or busy1 is None else busy1 - busy0
    return night


# --- the bench ---------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--persons", type=int, default=1_000_000)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--pg-url", default=PG_ADMIN)
    ap.add_argument("--landing", default=None, help="reuse generated deliveries from this folder")
    ap.add_argument("--runs", type=int, default=3, help="nights (each into a fresh database); medians are shown")
    ap.add_argument("--workers", type=int, default=settings_from_env().max_concurrent,
                    help="the job's steps at a time: GONGSHU_MAX_CONCURRENT of the run (default: its value, or 2)")
    ap.add_argument("--json", default=None, help="also write every figure to this JSON file")
    ap.add_argument("--change-rate", type=float, default=0.01,
                    help="the incremental night: share of each resource's entities changed on the next day")
    ap.add_argument("--dagster-storage", choices=("sqlite", "postgres"), default="sqlite",
                    help="the Dagster instance's run/event storage: embedded SQLite (as `make demo`) or a "
                         "PostgreSQL database of its own on --pg-url's server (as DAGSTER_PG_URL in production)")
    ap.add_argument("--no-incremental", dest="incremental", action="store_false",
                    help="leave out the incremental night (the next day is then not generated)")
    args = ap.parse_args()
    from generator import generate

    catalogue_path = settings_from_env().catalogue_path.resolve()
    catalogue = load_catalogue(catalogue_path)
    day = dt.date(2026, 11, 20)
    next_day = day + dt.timedelta(days=1)
    landing = (Path(args.landing) if args.landing else Path(tempfile.mkdtemp(prefix="gongshu_bench_"))).resolve()
    if not (landing / "manifest.json").exists():
        t = time.perf_counter()
        if args.incremental:  # the first load on D, and D+1 with about --change-rate of the entities changed
            generate(catalogue, persons=args.persons, seed=args.seed, date=next_day, out=landing, days=2,
                     progress=False, change_rate=args.change_rate, incremental=True)
        else:
            generate(catalogue, persons=args.persons, seed=args.seed, date=day, out=landing, days=1, progress=False)
        print(f"生成 {args.persons:,} 人: {time.perf_counter() - t:.1f} s")
    if args.incremental:
        parameters = json.loads((landing / "manifest.json").read_text(encoding="utf-8"))["parameters"]
        if not parameters.get("incremental") or parameters.get("batch_dates", [])[-2:] != [str(day), str(next_day)]:
            print(f"{landing}: 不含增量之夜的次日交付 (请用新的 --landing 重新生成, 或 --no-incremental)", file=sys.stderr)
            return 2
    server, base = serve_in_thread(landing)
    from urllib.parse import urlparse

    # the API channels' URL variables, which the code location's LandingResource hands to the channels
    variables = {res.channel.url_env: base + urlparse(res.channel.url).path for res in catalogue.resources
                 if res.channel.kind == "api" and res.channel.url_env}
    # Single timings on this shared machine vary by ±30%, the reference most: every figure is the
    # median of --runs, each into fresh databases, with the reference measured twice per run,
    # between the runs, so a slow spell weighs on both sides alike.
    reference = Path(tempfile.mkdtemp(prefix="gongshu_bench_reference_"))
    streams = sorted({1, args.workers})
    refs: dict[int, list[tuple[float, int]]] = {n: [] for n in streams}
    nights: list[Night] = []
    increments: list[Night] = []
    key = os.environ.get(KEY_ENV) or secrets.token_urlsafe(32)  # one key for every night of a warehouse
    floors: list[tuple[float, int, int]] = []
    try:
        prepared = reference_data(catalogue, landing, day, variables, reference)
        for _ in range(args.runs):
            for _ in range(REFERENCES_PER_RUN):
                for n in streams:
                    with TempDatabase(args.pg_url) as url:
                        refs[n].append(raw_copy_reference(prepared, url, n))
            with TempDatabase(args.pg_url) as url:
                def night_of(when: dt.date, into: list[Night]) -> bool:
                    """One night into ``url`` (checkpointed first), its rows per layer counted; False: it failed."""
                    checkpoint(url)
                    night = run_night(url, landing, when, args.workers, variables, catalogue_path, key,
                                      args.pg_url if args.dagster_storage == "postgres" else None)
                    into.append(night)
                    if night.status == "SUCCESS":
                        night.rows = layer_rows(url, catalogue, when)
                    return night.status == "SUCCESS"

                if not night_of(day, nights):
                    return 1
                floors.append(write_floor(url))
                # the next night on the same warehouse
                if args.incremental and not night_of(next_day, increments):
                    return 1
    finally:
        server.shutdown()
        server.server_close()
        shutil.rmtree(reference, ignore_errors=True)
        if not args.landing:  # generated for this bench alone (--landing keeps it for the next)
            shutil.rmtree(landing, ignore_errors=True)
    figures = report(args, nights, refs, floors)
    if increments:
        figures["incremental"] = report_incremental(args, nights, increments)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(figures, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


def report(args: argparse.Namespace, nights: list[Night], refs: dict[int, list[tuple[float, int]]],
           floors: list[tuple[float, int, int]]) -> dict:
    """Print the figures (medians of the runs, each run's beside them); all of them, as a dict for JSON."""
    med = statistics.median

    def each(values, fmt="{:.2f}") -> str:
        return ", ".join(fmt.format(v) for v in values)

    streams = sorted(refs)
    ref_rows = refs[1][0][1]
    ref = {n: med(r[0] for r in refs[n]) for n in streams}
    rows = nights[0].rows
    delivered, accepted, quarantined = rows["delivered"], rows["accepted"], rows["quarantined"]
    night_s, guiji_s = med(n.night_s for n in nights), med(n.guiji_s for n in nights)
    floor_s, floor_rows, floor_bytes = med(f[0] for f in floors), floors[0][1], floors[0][2]
    startup = med(n.worker_startup_s for n in nights)
    gpath_s, npath_s = med(n.guiji_path_s for n in nights), med(n.night_path_s for n in nights)
    slowest = max(nights, key=lambda n: n.night_s)

    print(f"\n夜间作业基准 · PostgreSQL · {args.persons:,} 人 · 交付 {delivered:,} 行 (参照 COPY {ref_rows:,} 行) · "
          f"nightly_guiji 经 Dagster 实例与代码位置运行 (同 gongshu run), 多进程执行器 {args.workers} 个步骤并行"
          f" · Dagster 存储 {'PostgreSQL (dagster-postgres)' if args.dagster_storage == 'postgres' else 'SQLite (内置)'}"
          f" · {args.runs} 轮的中位数")
    for n in nights:
        print(f"  运行 {n.run_id} · {n.status} · 代码位置加载 {n.code_location_s:.1f} s · "
              f"发起→结束 {n.launch_to_end_s:.2f} s · {len(n.steps)} 个步骤")
    print(f"  {'整夜 (RUN_STARTING → RUN_SUCCESS)':<34} {night_s:8.2f} s  (各轮 {each(n.night_s for n in nights)} s)")
    print(f"  {'  其中 运行进程启动 (至首个步骤)':<34} {startup:8.2f} s  (各轮 {each(n.worker_startup_s for n in nights)} s)")
    print(f"  {'归集 (首个 ods 步骤 → 最后合并)':<34} {guiji_s:8.2f} s  {delivered / guiji_s:>12,.0f} 行/s  "
          f"(各轮 {each(n.guiji_s for n in nights)} s)")
    if slowest.guiji_others:
        print(f"    其间执行器还运行了 {len(slowest.guiji_others)} 个后续阶段的步骤 (依赖已满足): "
              + ", ".join(slowest.guiji_others))
    print("  步骤时长合计, 按阶段:")
    for stage, label in STAGES.items():
        s = med(n.stages[stage] for n in nights)
        count = sum(1 for st in nights[0].steps if st.stage == stage)
        print(f"    {label:<34} {s:8.2f} s  ({count} 步; 各轮 {each(n.stages[stage] for n in nights)} s)")
    ups = [st.startup for n in nights for st in n.steps if st.startup is not None]
    per_night = [sum(st.startup for st in n.steps if st.startup is not None) for n in nights]
    spawns = [st.spawn for n in nights for st in n.steps if st.spawn is not None]
    if ups:
        print(f"  {'步骤进程启动 (WORKER_STARTING→START)':<34} {med(per_night):8.2f} s  合计 "
              f"(每步中位 {med(ups):.2f} s, 其中 fork 至子进程报到 {med(spawns) if spawns else 0:.2f} s; "
              f"最长 {max(ups):.2f} s; {len(ups) // len(nights)} 步)")
    print(f"  {'最长依赖链 (归集, 实测含争用)':<34} {gpath_s:8.2f} s  ("
          + " → ".join(f"{k} {slowest_step(slowest, k):.2f}" for k in slowest.guiji_path)
          + f"; 各轮 {each(n.guiji_path_s for n in nights)} s)")
    print(f"  {'最长依赖链 (整夜)':<34} {npath_s:8.2f} s  ("
          + " → ".join(f"{k} {slowest_step(slowest, k):.2f}" for k in slowest.night_path) + ")")
    top = sorted(slowest.steps, key=lambda st: -st.seconds)[:5]
    print("  最慢 5 步: " + ", ".join(f"{st.key} {st.seconds:.2f} s" for st in top))
    base_current = sum(v["current"] for v in rows["base"].values())
    base_versions = sum(v["versions"] for v in rows["base"].values())
    problems = "; ".join(f"{k} {v}" for k, v in rows["problems"].items())
    print(f"  分层行数: ods 交付 {delivered:,} 行 ({rows['batches']} 批次, 无法解析 {rows['unparseable']:,}) · "
          f"std 接收 {accepted:,}, 隔离 {quarantined:,} · base 现行实体 {base_current:,}, 历史版本 {base_versions:,}"
          + (f" · {problems}" if problems else ""))
    for n in streams:
        label = "参照: 原样 COPY, 单连接" if n == 1 else f"参照: 原样 COPY, {n} 连接并行"
        print(f"  {label:<34} {ref[n]:8.2f} s  {ref_rows / ref[n]:>12,.0f} 行/s  "
              f"({len(refs[n])} 次; 各次 {each(r[0] for r in refs[n])} s)")
    print(f"  {'写入下限: ods+std+base':<34} {floor_s:8.2f} s  {floor_rows / floor_s:>12,.0f} 行/s  "
          f"({floor_rows:,} 行, {floor_bytes / 1e6:,.0f} MB 二进制 COPY, 同表同索引, 单连接, 无客户端计算; "
          f"各轮 {each(f[0] for f in floors)} s)")
    print(f"  比值 整夜/归集 = {night_s / guiji_s:.2f}×  (目标 ≤ 2×; 各轮 {each((n.night_s / n.guiji_s for n in nights), '{:.2f}×')})")
    for n in streams:
        print(f"  比值 归集/参照({n} 连接) = {guiji_s / ref[n]:.2f}×  (各轮 "
              f"{each((x.guiji_s / ref[n] for x in nights), '{:.1f}×')}); 最长依赖链/参照 = {gpath_s / ref[n]:.2f}×")
    print(f"  比值 归集/写入下限 = {guiji_s / floor_s:.2f}× (目标 ≤ 1.6×), 写入下限/参照(1 连接) = {floor_s / ref[1]:.2f}×")
    busy = [n.cpu_busy_s for n in nights if n.cpu_busy_s is not None]
    cores = os.cpu_count() or 1
    if busy:
        print(f"  CPU: 整夜期间整机忙 {med(busy):.1f} CPU·s (gongshu 各进程、PostgreSQL 及其他); "
              f"{cores} 核全忙也需 ≥ {med(busy) / cores:.1f} s")
    print(f"  峰值 RSS: 运行进程及其子进程 (forkserver, 步骤进程) 单个进程最大 {max(n.rss_single_mb for n in nights):,.0f} MB, "
          f"同时合计最大 {max(n.rss_sum_mb for n in nights):,.0f} MB ({max(n.processes for n in nights)} 个进程)")
    by_step: dict[str, float] = {}
    for n in nights:
        for k, mb in n.step_rss_mb.items():
            by_step[k] = max(by_step.get(k, 0.0), mb)
    top = sorted(by_step.items(), key=lambda kv: -kv[1])[:6]
    print(f"  峰值 RSS 每进程: 运行进程 {max(n.run_worker_rss_mb for n in nights):,.0f} MB; 步骤进程最大者 "
          + ", ".join(f"{k} {mb:,.0f} MB" for k, mb in top))
    return {
        "persons": args.persons, "workers": args.workers, "runs": args.runs, "dagster_storage": args.dagster_storage,
        "delivered": delivered, "accepted": accepted, "quarantined": quarantined, "raw_copy_rows": ref_rows,
        "median": {
            "night_s": night_s, "worker_startup_s": startup, "guiji_s": guiji_s,
            "stages_s": {stage: med(n.stages[stage] for n in nights) for stage in STAGES},
            "step_startup_s": med(per_night) if ups else None,
            "guiji_critical_path_s": gpath_s, "night_critical_path_s": npath_s,
            "raw_copy_s": {str(n): ref[n] for n in streams}, "write_floor_s": floor_s,
            "cpu_busy_s": med(busy) if busy else None,
        },
        "peak_rss_mb": {"single": max(n.rss_single_mb for n in nights), "sum": max(n.rss_sum_mb for n in nights),
                        "run_worker": max(n.run_worker_rss_mb for n in nights), "steps": by_step},
        "ratios": {
            "night_over_guiji": night_s / guiji_s,
            **{f"guiji_over_raw_copy_{n}": guiji_s / ref[n] for n in streams},
            "guiji_over_write_floor": guiji_s / floor_s,
            "write_floor_over_raw_copy_1": floor_s / ref[1],
        },
        "reference": {str(n): [{"seconds": s, "rows": r} for s, r in refs[n]] for n in streams},
        "write_floor": [{"seconds": s, "rows": r, "bytes": b} for s, r, b in floors],
        "nights": [{**asdict(n), "steps": [{**asdict(st), "seconds": st.seconds} for st in n.steps]} for n in nights],
        "cores": cores,
    }


def report_incremental(args: argparse.Namespace, firsts: list[Night], nights: list[Night]) -> dict:
    """The incremental night against the first load (medians of the runs): time and rows written."""
    med = statistics.median

    def each(values, fmt="{:.2f}") -> str:
        return ", ".join(fmt.format(v) for v in values)

    first_night, first_guiji = med(n.night_s for n in firsts), med(n.guiji_s for n in firsts)
    night_s, guiji_s = med(n.night_s for n in nights), med(n.guiji_s for n in nights)
    w1, w2 = firsts[0].rows["written"], nights[0].rows["written"]
    rows = nights[0].rows
    print(f"\n增量之夜 (次日, 各资源约 {args.change_rate:.1%} 实体变更; 文件与接口全量重交, 前置库按水位只交变更行) · "
          f"与首次全量之夜同库 · {len(nights)} 轮的中位数")
    print(f"  {'整夜':<34} {night_s:8.2f} s  = 首次全量 {first_night:.2f} s 的 {night_s / first_night:.1%}  "
          f"(目标 ≤ 10%; 各轮 {each(n.night_s for n in nights)} s)")
    print(f"  {'归集 (首个 ods 步骤 → 最后合并)':<34} {guiji_s:8.2f} s  = 首次全量 {first_guiji:.2f} s 的 "
          f"{guiji_s / first_guiji:.1%}  (各轮 {each(n.guiji_s for n in nights)} s)")
    print("  步骤时长合计, 按阶段: " + ", ".join(
        f"{stage} {med(n.stages[stage] for n in nights):.2f} s (首次 {med(n.stages[stage] for n in firsts):.2f} s)"
        for stage in STAGES))
    slowest = max(nights, key=lambda n: n.night_s)
    print(f"  {'最长依赖链 (整夜)':<34} {med(n.night_path_s for n in nights):8.2f} s  ("
          + " → ".join(f"{k} {slowest_step(slowest, k):.2f}" for k in slowest.night_path) + ")")
    print("  最慢 5 步: " + ", ".join(f"{st.key} {st.seconds:.2f} s"
                                   for st in sorted(slowest.steps, key=lambda st: -st.seconds)[:5]))
    print(f"  {'写入行数 (ods+std+隔离+base)':<34} {w2['total']:>8,} 行 = 首次全量 {w1['total']:,} 行的 "
          f"{w2['total'] / max(w1['total'], 1):.1%}  (目标 ≤ 10%)")
    print("    " + " · ".join(f"{k} {w2[k]:,} (首次 {w1[k]:,})" for k in w2 if k != "total"))
    print(f"  交付 {rows['delivered']:,} 行, 其中未变沿用 {rows['carried']:,} 行 "
          f"({rows['carried'] / max(rows['delivered'], 1):.1%}); std 接收 {rows['accepted']:,}, 隔离 {rows['quarantined']:,}")
    return {
        "change_rate": args.change_rate,
        "median": {"night_s": night_s, "guiji_s": guiji_s,
                   "stages_s": {stage: med(n.stages[stage] for n in nights) for stage in STAGES}},
        "first_load": {"night_s": first_night, "guiji_s": first_guiji, "written": w1},
        "written": w2, "delivered": rows["delivered"], "carried": rows["carried"],
        "ratios": {"night": night_s / first_night, "guiji": guiji_s / first_guiji,
                   "rows_written": w2["total"] / max(w1["total"], 1)},
        "nights": [{**asdict(n), "steps": [{**asdict(st), "seconds": st.seconds} for st in n.steps]} for n in nights],
    }


def slowest_step(night: Night, key: str) -> float:
    return next(st.seconds for st in night.steps if st.key == key)


if __name__ == "__main__":
    sys.exit(main())
