"""Scale-out on Celery (``GONGSHU_EXECUTOR=celery``): the setting, the executor and its secret, the one
queue declaration both sides share, and the nightly job of a generated city run by two Celery workers
(separate processes on RabbitMQ) building the same base libraries as the default multiprocess executor,
also when a worker, or the process running a step, is killed in the middle of a step.

The end-to-end tests need the broker of this machine (RabbitMQ on 127.0.0.1:5672, guest/guest, or
``GONGSHU_TEST_CELERY_BROKER``) and PostgreSQL: under CI=true they fail when either is unreachable,
elsewhere they skip.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from dagster import DagsterEventType, DagsterInstance
from dagster._core.remote_representation.external_data import RepositorySnap
from dagster._serdes import serialize_value
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from dagster_celery.tasks import create_task
from kombu import Connection

from assets.resources import DEFAULT_CELERY_BROKER, Settings, SettingsError, celery_broker
from catalog.loader import DEMO_CATALOGUE, load_catalogue
from pipelines import cli
from pipelines.definitions import build_definitions
from pipelines.demo_api import serve_in_thread
from pipelines.jobs import NIGHTLY_JOB
from pipelines.snapshot import canonical_snapshot
from pipelines.workers import RESULT_BACKEND, celery_settings, listening_workers, worker_app
from tests.conftest import IN_CI, fresh_pg_database
from warehouse.base import read_current
from warehouse.store import Warehouse

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
BROKER = os.environ.get("GONGSHU_TEST_CELERY_BROKER", DEFAULT_CELERY_BROKER)
DAY = dt.date(2026, 11, 20)
PERSONS = 1500


# --- the setting and the executor (core ring) ----------------------------------------------------------


def test_the_multiprocess_executor_stays_the_default_and_celery_is_chosen_by_its_setting() -> None:
    assert Settings.from_env({}).executor == "multiprocess"
    assert Settings.from_env({"GONGSHU_EXECUTOR": " Celery "}).executor == "celery"
    default = build_definitions(Settings(), environ={}).resolve_job_def(NIGHTLY_JOB)
    assert default.executor_def.name == "multiprocess"
    celery = build_definitions(Settings(executor="celery", celery_queue="night-q"), environ={}).resolve_job_def(
        NIGHTLY_JOB)
    assert celery.executor_def.name == "celery"


@pytest.mark.parametrize(("variable", "value", "says"), [
    ("GONGSHU_EXECUTOR", "k8s", "GONGSHU_EXECUTOR='k8s': 应为 multiprocess 或 celery"),
    ("GONGSHU_CELERY_QUEUE", "night queue", "GONGSHU_CELERY_QUEUE='night queue': 队列名只能由"),
    ("GONGSHU_CELERY_BROKER", "rabbit:s3cret@mq.internal", "GONGSHU_CELERY_BROKER: 不是有效的代理 URL"),
])
def test_a_malformed_celery_setting_stops_the_load_naming_its_variable(variable, value, says) -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_env({variable: value})
    assert says in str(err.value)
    assert "s3cret" not in str(err.value)


def test_the_broker_password_stays_in_the_environment_and_out_of_the_code_location(monkeypatch) -> None:
    """The broker URL is a secret: the executor's config names its variable, which the run resolves; the
    code location Dagster serves (to the UI, into run records) never holds the password."""
    url = "amqp://gongshu:s3cret-broker-pw@mq.internal:5672/night"
    monkeypatch.setenv("GONGSHU_CELERY_BROKER", url)
    environ = {"GONGSHU_CELERY_BROKER": url}
    assert celery_broker(environ) == {"env": "GONGSHU_CELERY_BROKER"}
    assert celery_broker({}) == DEFAULT_CELERY_BROKER
    defs = build_definitions(Settings(executor="celery"), environ=environ)
    served = serialize_value(RepositorySnap.from_def(defs.get_repository_def()))
    assert "s3cret-broker-pw" not in served and "mq.internal" not in served
    snapshot = canonical_snapshot(executor="celery")
    assert "s3cret-broker-pw" not in snapshot
    executor = yaml.safe_load(snapshot)["jobs"][NIGHTLY_JOB]["executor"]
    assert executor["name"] == "celery"
    assert executor["config"]["broker"] == {"env": "GONGSHU_CELERY_BROKER"}
    assert executor["config"]["backend"] == RESULT_BACKEND
    assert executor["config"]["config_source"]["task_default_queue"] == "gongshu"


def test_workers_declare_the_queue_exactly_as_the_executor_publishes_to_it() -> None:
    """The run worker publishes each step to ``GONGSHU_CELERY_QUEUE``, which dagster-celery's app does
    not declare (Celery creates it on first use); a worker consumes that queue alone, declared the same
    way — RabbitMQ refuses a second declaration of a queue with other arguments."""
    settings = Settings(celery_queue="gongshu-night")
    producer = make_app(CeleryExecutor.for_cli(broker=BROKER, backend=RESULT_BACKEND,
                                               config_source=celery_settings(settings)).app_args())
    worker = worker_app(settings, BROKER)
    published, consumed = producer.amqp.queues["gongshu-night"], worker.amqp.queues["gongshu-night"]
    assert published.as_dict(recurse=True) == consumed.as_dict(recurse=True)
    assert list(worker.amqp.queues.consume_from) == ["gongshu-night"]
    assert producer.conf.task_default_queue == worker.conf.task_default_queue == "gongshu-night"
    assert worker.conf.worker_max_tasks_per_child == 1
    # a step's task is acknowledged when the step has ended, and goes back to the queue when its worker
    # process dies (the end-to-end case: test_a_worker_killed_in_the_middle_of_a_step_…)
    step_task = create_task(worker)
    assert step_task.acks_late and step_task.reject_on_worker_lost
    assert worker.conf.worker_prefetch_multiplier == 1


def test_gongshu_run_on_celery_with_no_broker_stops_with_one_clear_message(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.setenv("GONGSHU_EXECUTOR", "celery")
    monkeypatch.setenv("GONGSHU_CELERY_BROKER", "amqp://guest:s3cret@127.0.0.1:9//")  # nothing listens on 9
    assert cli.main(["run", "--date", DAY.isoformat(), "--no-summary"]) == 2
    err = capsys.readouterr().err
    assert "无法连接 Celery 代理 amqp://guest:***@127.0.0.1:9//" in err and "docs/deploy.md" in err
    assert "s3cret" not in err and "Traceback" not in err


# --- two workers run the night (end-to-end ring) --------------------------------------------------------


def _broker_or_skip() -> None:
    try:
        with Connection(BROKER, connect_timeout=3) as conn:
            conn.ensure_connection(max_retries=1, timeout=3)
    except Exception as exc:
        if IN_CI:
            pytest.fail(f"the Celery broker is required in CI but unreachable ({type(exc).__name__}: {exc})")
        pytest.skip(f"Celery broker unreachable: {type(exc).__name__}")


def _base_libraries(url: str) -> dict[str, tuple[int, int, str]]:
    """Per base library: current rows, all versions, and a SHA-256 of the current rows (sorted, lineage
    as batch ids: batch numbers depend on the order batches were stored)."""
    catalogue = load_catalogue(DEMO_CATALOGUE)
    wh = Warehouse(url)
    out = {}
    with wh.engine.connect() as conn:
        for lib in catalogue.libraries:
            current = read_current(wh, conn, lib)
            current = current.sort(current.columns)
            versions = conn.execute(sa.text(f"SELECT count(*) FROM {wh.qualified('base', lib.code)}")).scalar_one()
            digest = hashlib.sha256(current.write_csv().encode()).hexdigest()
            out[lib.code] = (current.height, versions, digest)
    wh.dispose()
    return out


def _night(env: dict[str, str]) -> subprocess.CompletedProcess:
    """``gongshu run`` for the day: the run launched through the instance and the code location."""
    return subprocess.run([str(BIN / "gongshu"), "run", "--date", DAY.isoformat(), "--no-summary"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=900)


@contextmanager
def _workers(env: dict[str, str], names: list[str], logs: Path) -> Iterator[list[subprocess.Popen]]:
    """Celery workers started as ``make worker`` starts one (``dagster-celery worker start -A
    pipelines.celery_app``), one step at a time each, each in its own process group; stopped (SIGTERM:
    Celery's warm shutdown, then SIGKILL) at the end."""
    procs = []
    try:
        for name in names:
            log = open(logs / f"{name}.log", "wb")  # noqa: SIM115 — closed with the process below
            procs.append(subprocess.Popen(
                [str(BIN / "dagster-celery"), "worker", "start", "-A", "pipelines.celery_app", "-n", name,
                 "--", "--concurrency", "1"],
                cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True))
            log.close()
        yield procs
    finally:
        for p in procs:
            _stop(p)


def _stop(proc: subprocess.Popen) -> None:
    for sig, wait_s in ((signal.SIGTERM, 60), (signal.SIGKILL, 10)):
        try:
            os.killpg(proc.pid, sig)  # the group: dagster-celery's process, celery's and its children
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            proc.poll()
            try:
                os.killpg(proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)


def _delete_queue(queue: str) -> None:
    with Connection(BROKER, connect_timeout=3) as conn:
        channel = conn.channel()
        channel.queue_delete(queue)
        channel.exchange_delete(queue)


@dataclass(frozen=True)
class City:
    """A generated city (1,500 persons, one date) served as on a night, and its base libraries as the
    default multiprocess executor builds them on PostgreSQL: what each Celery night must equal."""

    environ: dict[str, str]
    default_libraries: dict[str, tuple[int, int, str]]


@pytest.fixture(scope="module")
def city(tmp_path_factory: pytest.TempPathFactory) -> Iterator[City]:
    _broker_or_skip()
    from generator import generate

    root = tmp_path_factory.mktemp("city")
    landing = root / "landing"
    generate(load_catalogue(DEMO_CATALOGUE), persons=PERSONS, seed=11, date=DAY, out=landing, days=1, progress=False)
    server, base = serve_in_thread(landing)
    common = {
        **os.environ,
        "PATH": os.pathsep.join([str(BIN), os.environ.get("PATH", "")]),  # dagster-celery starts `celery`
        "GONGSHU_LANDING": str(landing),
        "GONGSHU_CATALOG": str(DEMO_CATALOGUE),
        "GONGSHU_PSEUDONYM_KEY": "celery-test-key-0123456789abcdef",
        "GONGSHU_API_ZRZY_URL": f"{base}/zrzy/bdcqz",
        "GONGSHU_CELERY_BROKER": BROKER,
        "DAGSTER_DISABLE_TELEMETRY": "1",
    }
    for var in ("GONGSHU_EXECUTOR", "GONGSHU_CELERY_QUEUE", "GONGSHU_WAREHOUSE_URL", "DAGSTER_PG_URL"):
        common.pop(var, None)
    try:
        with fresh_pg_database() as default_url:
            default_env = {**common, "GONGSHU_WAREHOUSE_URL": default_url, "GONGSHU_HOME": str(root / "h"),
                           "DAGSTER_HOME": str(root / "d")}
            start = time.monotonic()
            out = _night(default_env)
            print(f"default executor: {time.monotonic() - start:.1f} s")
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
            assert "Celery" not in out.stderr
            default_libraries = _base_libraries(default_url)
        assert set(default_libraries) == {"person", "legal_entity", "spatial", "license"}
        assert all(rows > 0 for rows, _, _ in default_libraries.values())
        yield City(common, default_libraries)
    finally:
        server.shutdown()
        server.server_close()


def _celery_env(city: City, tmp_path: Path, warehouse_url: str, queue: str) -> dict[str, str]:
    """The environment of the Celery night: the run and the workers share DAGSTER_HOME (one machine),
    whose instance storage is created before the workers start."""
    env = {**city.environ, "GONGSHU_WAREHOUSE_URL": warehouse_url, "GONGSHU_HOME": str(tmp_path / "h"),
           "DAGSTER_HOME": str(tmp_path / "d"), "GONGSHU_EXECUTOR": "celery", "GONGSHU_CELERY_QUEUE": queue}
    subprocess.run([str(BIN / "gongshu"), "instance"], env=env, check=True, capture_output=True)
    return env


def _wait_until_listening(procs: list[subprocess.Popen], queue: str, logs: Path) -> None:
    app = worker_app(Settings(celery_queue=queue), BROKER)
    deadline = time.monotonic() + 180
    while len(ready := listening_workers(app, queue)) < len(procs) and time.monotonic() < deadline:
        assert all(p.poll() is None for p in procs), _tails(logs)
        time.sleep(1)
    app.close()
    assert len(ready) == len(procs), f"workers not ready: {ready}\n{_tails(logs)}"


def _ran_on(engine_records) -> dict[str, list[str]]:
    """Step → the Celery workers that said they executed it (one per attempt), from the engine events."""
    ran_on: dict[str, list[str]] = {}
    for r in engine_records:
        event = r.event_log_entry.dagster_event
        meta = (event.event_specific_data.metadata or {}) if event.is_engine_event else {}
        if "Celery worker" in meta:
            ran_on.setdefault(r.event_log_entry.step_key, []).append(meta["Celery worker"].value.split("@")[0])
    return ran_on


@dataclass
class CeleryNight:
    """A night on two workers: its queue, the workers' names, the environment of the workers and of
    ``gongshu run``, the folder of the workers' logs, and the warehouse the night writes."""

    queue: str
    names: list[str]
    env: dict[str, str]
    logs: Path
    warehouse_url: str

    @contextmanager
    def workers(self) -> Iterator[list[subprocess.Popen]]:
        """The two workers' processes, listening on the queue."""
        with _workers(self.env, self.names, self.logs) as procs:
            _wait_until_listening(procs, self.queue, self.logs)
            yield procs


@contextmanager
def _celery_night(city: City, tmp_path: Path) -> Iterator[CeleryNight]:
    """A fresh PostgreSQL warehouse and a queue of the test's own (deleted afterwards)."""
    queue = f"gongshu-test-{uuid.uuid4().hex[:10]}"
    try:
        with fresh_pg_database() as url:
            logs = tmp_path / "workers"
            logs.mkdir()
            yield CeleryNight(queue, [f"w1-{queue}", f"w2-{queue}"], _celery_env(city, tmp_path, url, queue),
                              logs, url)
    finally:
        _delete_queue(queue)


@pytest.mark.e2e
@pytest.mark.postgres
def test_two_celery_workers_build_the_same_base_libraries_as_the_default_executor(city: City, tmp_path: Path) -> None:
    """The generated city's night on two Celery workers (separate processes, their own queue): every step
    ran in a worker's process (its events name the worker, and their process ids are in that worker's
    log), both workers ran steps, and the base libraries hold the same rows as with the default executor."""
    with _celery_night(city, tmp_path) as night_of:
        queue, names, env, logs, celery_url = (night_of.queue, night_of.names, night_of.env, night_of.logs,
                                               night_of.warehouse_url)
        with night_of.workers():
            start = time.monotonic()
            out = _night(env)
            print(f"two Celery workers: {time.monotonic() - start:.1f} s")
            assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:] + _tails(logs)
            assert f"队列 {queue} 上有 2 个工作进程" in out.stderr
        worker_pids = {name: _logged_pids(logs / f"{name}.log") for name in names}

        with DagsterInstance.from_config(str(tmp_path / "d")) as instance:
            run = instance.get_runs(limit=1)[0]
            assert run.job_name == NIGHTLY_JOB
            starts = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.STEP_START).records
            engine = instance.get_records_for_run(run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records
            run_pid = instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.RUN_START).records[0].event_log_entry.dagster_event.pid
        ran_on = {step: workers[0] for step, workers in _ran_on(engine).items()}
        steps = {r.event_log_entry.step_key: r.event_log_entry.dagster_event.pid for r in starts}
        assert len(steps) >= 20 and set(steps) <= set(ran_on)
        for step, pid in steps.items():
            worker = ran_on[step]
            assert worker in names
            assert pid != run_pid and pid in worker_pids[worker], (step, pid, worker)
        per_worker = {n: sorted(s for s in steps if ran_on[s] == n) for n in names}
        print("steps per worker:", {n: len(v) for n, v in per_worker.items()}, per_worker)
        assert all(per_worker.values()), "both workers ran steps"

        # same input, same base libraries (current rows, versions, and their content)
        assert _base_libraries(celery_url) == city.default_libraries


# the step whose worker is killed: the 户籍 ODS+std step, the 归集's largest delivery
KILLED_STEP = "guiji_gaj_hjrk"
# the step whose process alone is killed, later in the night (人口库's merge, after the 户籍 step)
CHILD_KILLED_STEP = "base__person"
# after the first kill, the rest of the night on the one worker left; a lost task would hang the run
NIGHT_AFTER_KILL_S = 240


@pytest.mark.e2e
@pytest.mark.postgres
def test_a_worker_killed_in_the_middle_of_a_step_loses_no_step_and_the_night_builds_the_same_libraries(
        city: City, tmp_path: Path) -> None:
    """Two Celery workers. The one running the 户籍 step is killed (SIGKILL to its main and child
    process) once the step has started: the step's task, not yet acknowledged, goes back to the queue
    and the other worker runs the step again. Later the process running 人口库's merge on the worker
    left is killed alone: its worker puts the task back on the queue and runs it in a fresh child. The
    run succeeds and the base libraries equal the default executor's."""
    with _celery_night(city, tmp_path) as night_of:
        names, env, logs, celery_url = night_of.names, night_of.env, night_of.logs, night_of.warehouse_url
        with night_of.workers() as procs:
            with open(tmp_path / "night.log", "wb") as night_log:
                night = subprocess.Popen(
                    [str(BIN / "gongshu"), "run", "--date", DAY.isoformat(), "--no-summary"], cwd=REPO,
                    env=env, stdout=night_log, stderr=subprocess.STDOUT, start_new_session=True)
            try:
                with DagsterInstance.from_config(str(tmp_path / "d")) as instance:
                    killed, killed_pid = _kill_in_step(KILLED_STEP, instance, night, 180,
                                                       lambda worker, _pid: procs[names.index(worker)])
                    deadline = time.monotonic() + NIGHT_AFTER_KILL_S
                    survivor, child_pid = _kill_in_step(CHILD_KILLED_STEP, instance, night,
                                                        deadline - time.monotonic(), lambda _w, pid: pid)
                try:
                    night.wait(timeout=max(deadline - time.monotonic(), 1))
                except subprocess.TimeoutExpired:
                    pytest.fail(f"the run did not end {NIGHT_AFTER_KILL_S} s after {killed} was killed "
                                f"running {KILLED_STEP}: a step's task was lost, or failed, with its worker\n"
                                + _tails(logs))
            finally:
                _stop(night)
            night_out = (tmp_path / "night.log").read_text(encoding="utf-8", errors="replace")
            assert night.returncode == 0, night_out[-3000:] + _tails(logs)

        with DagsterInstance.from_config(str(tmp_path / "d")) as instance:
            run = instance.get_runs(limit=1)[0]
            assert run.job_name == NIGHTLY_JOB
            records = instance.get_records_for_run(run.run_id, of_type={
                DagsterEventType.STEP_START, DagsterEventType.STEP_SUCCESS}).records
            ran_on = _ran_on(instance.get_records_for_run(
                run.run_id, of_type=DagsterEventType.ENGINE_EVENT).records)
        assert survivor != killed
        survivor_pids = _logged_pids(logs / f"{survivor}.log")
        for step, first_pid, workers in ((KILLED_STEP, killed_pid, [killed, survivor]),
                                         (CHILD_KILLED_STEP, child_pid, [survivor, survivor])):
            events = [r.event_log_entry.dagster_event for r in records if r.event_log_entry.step_key == step]
            starts = [e.pid for e in events if e.event_type == DagsterEventType.STEP_START]
            successes = [e.pid for e in events if e.event_type == DagsterEventType.STEP_SUCCESS]
            # started in the killed process, never finished there; started again and finished elsewhere
            assert starts[0] == first_pid and len(starts) == 2 and successes == [starts[1]], (step, events)
            assert ran_on[step] == workers and starts[1] in survivor_pids, (step, ran_on[step])

        assert _base_libraries(celery_url) == city.default_libraries


def _kill_in_step(step: str, instance: DagsterInstance, night: subprocess.Popen, timeout_s: float,
                  victim: Callable[[str, int], subprocess.Popen | int]) -> tuple[str, int]:
    """Wait until ``step`` has started in a worker, then SIGKILL ``victim(worker, pid of the step's
    process)``: a worker's ``Popen`` (its process group: the worker's main process and the child running
    the step) or a process id. The worker's name and the step process's id."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert night.poll() is None, f"the run ended before {step} started"
        runs = instance.get_runs(limit=1)
        if runs:
            records = instance.get_records_for_run(runs[0].run_id, of_type={
                DagsterEventType.STEP_START, DagsterEventType.ENGINE_EVENT}).records
            ours = [r for r in records if r.event_log_entry.step_key == step]
            started = [r.event_log_entry.dagster_event.pid for r in ours
                       if r.event_log_entry.dagster_event.event_type == DagsterEventType.STEP_START]
            workers = _ran_on(ours).get(step)
            if started and workers:
                target = victim(workers[0], started[0])
                if isinstance(target, subprocess.Popen):
                    os.killpg(target.pid, signal.SIGKILL)
                    target.wait()
                else:
                    os.kill(target, signal.SIGKILL)
                return workers[0], started[0]
        time.sleep(0.1)
    pytest.fail(f"{step} did not start in {timeout_s:.0f} s")


def _logged_pids(log: Path) -> set[int]:
    """Process ids of a worker's pool processes, from its log (``pids=`` in every line)."""
    text = log.read_text(encoding="utf-8", errors="replace")
    return {int(p) for p in re.findall(r"ForkPoolWorker-\d+ pid=(\d+)\]", text)}


def _tails(logs: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(encoding='utf-8', errors='replace')[-2000:]}"
                     for p in sorted(logs.glob("*.log")))
