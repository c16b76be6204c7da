"""Runs of the nightly job that Dagster owns, as ``gongshu run`` starts them.

A run is created from the code location that ``workspace.yaml`` names (``pipelines.definitions``,
location ``gongshu``) and launched through the instance's run launcher: the code server starts a run
worker process that executes the job with the job's own executor. The run therefore carries its
code-location origin (the UI can re-execute it) and the partition tags the schedule would give it.
The CLI process itself never imports the definitions: it follows the run in the instance (status and
event log) and prints the events at or above a level, while the output of the code server and of the
processes it starts (run worker, step workers) goes to a log file.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from pipelines.jobs import NIGHTLY_JOB

if TYPE_CHECKING:
    from dagster import DagsterInstance

WORKSPACE = Path(__file__).resolve().parent.parent / "workspace.yaml"
LOCATION = "gongshu"


FAILED_CHECKS_TAG = "gongshu/failed_checks"
FAILED_ERROR_CHECKS_TAG = "gongshu/failed_checks_error"


def failed_check_tags(instance, run_id: str) -> dict[str, str]:
    """The run's tags that summarise its failed asset checks (none when every check passed): how many
    failed, and how many of them with ERROR severity. The runs list shows them beside the status."""
    from dagster import DagsterEventType

    records = instance.get_records_for_run(run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION,
                                           limit=100_000).records
    failed = [r.event_log_entry.dagster_event.event_specific_data for r in records]
    failed = [ev for ev in failed if not ev.passed]
    if not failed:
        return {}
    errors = sum(ev.severity.value == "ERROR" for ev in failed)
    return {FAILED_CHECKS_TAG: str(len(failed)), **({FAILED_ERROR_CHECKS_TAG: str(errors)} if errors else {})}


def tag_failed_checks(instance, run_id: str) -> dict[str, str]:
    """Tag a finished run with its failed checks (:func:`failed_check_tags`); the tags set."""
    tags = failed_check_tags(instance, run_id)
    if tags:
        instance.add_run_tags(run_id, tags)
    return tags


class CodeLocationError(ValueError):
    """The code location did not load (e.g. a broken catalogue); the message is the cause's."""


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    success: bool
    failed_steps: list[str]
    reason: str | None  # why the run failed when no step did (e.g. its worker process died)


class NightlyRuns:
    """The nightly job's code location, loaded once (one code server) for a series of runs.

    ``with NightlyRuns(instance) as runs: outcome = runs.wait(runs.launch(day))``
    """

    def __init__(self, instance: DagsterInstance, workspace: Path = WORKSPACE, log: Path | None = None) -> None:
        self.instance = instance
        self.workspace = workspace
        self.log = log

    def __enter__(self) -> NightlyRuns:
        from dagster._core.workspace.context import WorkspaceProcessContext
        from dagster._core.workspace.load_target import WorkspaceFileTarget

        with _output_to(self.log):  # the code server, and every process it starts, inherit it
            self._process = WorkspaceProcessContext(
                self.instance, WorkspaceFileTarget(paths=[str(self.workspace)]), code_server_log_level="WARNING"
            )
        try:
            self._context = self._process.create_request_context()
            error = self._context.get_code_location_error(LOCATION)
            if error is not None:
                raise CodeLocationError(_root_message(error))
            self._location = self._context.get_code_location(LOCATION)
        except BaseException:
            self._process.__exit__(None, None, None)
            raise
        self._repository = next(iter(self._location.get_repositories().values()))
        return self

    def __exit__(self, *exc) -> None:
        self._process.__exit__(*exc)

    def launch(self, day: dt.date, run_config: dict | None = None) -> str:
        """Create the run of the nightly job for batch date ``day`` and launch it; its run id."""
        return self.launch_partition(NIGHTLY_JOB, day.isoformat(), run_config)

    def launch_partition(self, job_name: str, key: str, run_config: dict | None = None,
                         tags: dict[str, str] | None = None) -> str:
        """Create the run of ``job_name`` for partition ``key`` (with the tags its schedule or sensor would
        give it, plus ``tags``) and launch it; its run id."""
        from dagster._core.remote_representation.external_data import PartitionExecutionErrorSnap
        from dagster_shared.merger import deep_merge_dicts

        handle = self._repository.handle
        config = self._location.get_partition_config(handle, job_name, key, self.instance)
        part_tags = self._location.get_partition_tags_from_repo(handle, job_name, key, self.instance)
        for snap in (config, part_tags):
            if isinstance(snap, PartitionExecutionErrorSnap):
                raise CodeLocationError(_root_message(snap.error) if snap.error else f"分区 {key} 无法运行")
        job = self._repository.get_full_job(job_name)
        full_config = deep_merge_dicts(dict(config.run_config or {}), run_config or {})
        plan = self._location.get_execution_plan(job, full_config, step_keys_to_execute=None, known_state=None,
                                                 instance=self.instance)
        run = self.instance.create_run(
            job_name=job_name,
            run_id=None,
            run_config=full_config,
            resolved_op_selection=None,
            step_keys_to_execute=plan.execution_plan_snapshot.step_keys_to_execute,
            op_selection=None,
            status=None,
            root_run_id=None,
            parent_run_id=None,
            tags={**job.tags, **part_tags.tags, **(tags or {})},
            job_snapshot=job.job_snapshot,
            execution_plan_snapshot=plan.execution_plan_snapshot,
            parent_job_snapshot=job.parent_job_snapshot,
            remote_job_origin=job.get_remote_origin(),
            job_code_origin=job.get_python_origin(),
            asset_selection=None,
            asset_check_selection=None,
            asset_graph=self._repository.asset_graph,
        )
        # Straight to the run launcher, not through the run queue: the command runs now, and waits.
        self.instance.launch_run(run.run_id, self._context)
        return run.run_id

    def wait(self, run_id: str, echo: Callable[[str], None] | None = None, level: int = logging.WARNING,
             poll_s: float = 0.5) -> RunOutcome:
        """Wait until the run has finished, passing each event at or above ``level`` to ``echo`` as one
        line as it is stored; what came of the run."""
        cursor = None
        while True:
            run = self.instance.get_run_by_id(run_id)  # status first: the events read next include the last
            page = self.instance.get_records_for_run(run_id, cursor=cursor, ascending=True)
            cursor = page.cursor
            if echo is not None:
                for record in page.records:
                    if _level(record.event_log_entry.level) >= level:
                        echo(event_line(record.event_log_entry))
            if run is not None and run.is_finished:
                return outcome(self.instance, run_id)
            time.sleep(poll_s)

    def terminate(self, run_id: str, timeout_s: float = 30) -> None:
        """Ask the run worker to stop (Ctrl-C of the command) and wait a little for it to do so."""
        try:
            if not self.instance.run_launcher.terminate(run_id):
                return
        except Exception:  # the code server got the terminal's Ctrl-C too and is gone: the worker with it
            return
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            run = self.instance.get_run_by_id(run_id)
            if run is None or run.is_finished:
                return
            time.sleep(0.5)


def outcome(instance: DagsterInstance, run_id: str) -> RunOutcome:
    from dagster import DagsterEventType, DagsterRunStatus

    run = instance.get_run_by_id(run_id)
    success = run is not None and run.status == DagsterRunStatus.SUCCESS
    if success:
        return RunOutcome(run_id, True, [], None)
    steps = [r.event_log_entry.dagster_event.step_key for r in instance.get_records_for_run(
        run_id, of_type=DagsterEventType.STEP_FAILURE).records]
    failures = instance.get_records_for_run(run_id, of_type=DagsterEventType.RUN_FAILURE, limit=1,
                                            ascending=False).records
    reason = failures[0].event_log_entry.dagster_event.message if failures else None
    return RunOutcome(run_id, False, steps, reason)


def event_line(entry) -> str:
    """One line for an event of the run log: time, level, step and message (a failure's cause in full)."""
    event = entry.dagster_event
    text = event.message if event is not None and event.message else entry.user_message
    error = getattr(event.event_specific_data, "error", None) if event is not None and event.is_failure else None
    if error is not None:
        text = f"{text} {_root_message(error)}"
    when = dt.datetime.fromtimestamp(entry.timestamp).strftime("%H:%M:%S")
    return f"{when} {logging.getLevelName(_level(entry.level))} {entry.step_key or '-'} · {text}"


def _level(level: int | str) -> int:
    return level if isinstance(level, int) else logging.getLevelName(level.upper())


LOG_LIMIT = 20 * 1024 * 1024
LOG_KEEP = 5


def rotate_log(path: Path, limit: int = LOG_LIMIT, keep: int = LOG_KEEP) -> None:
    """Before a night appends to ``path``: once it holds ``limit`` bytes it becomes ``path.1`` (``.1`` becomes
    ``.2`` …, the ``keep``-th is dropped), so nightly runs never fill the disk with one ever-growing file.
    (The processes write to the file descriptor itself, which a logging handler cannot rotate.)"""
    if not path.exists() or path.stat().st_size < limit:
        return
    path.with_name(f"{path.name}.{keep}").unlink(missing_ok=True)
    for n in range(keep - 1, 0, -1):
        older = path.with_name(f"{path.name}.{n}")
        if older.exists():
            older.rename(path.with_name(f"{path.name}.{n + 1}"))
    path.rename(path.with_name(f"{path.name}.1"))


@contextmanager
def _output_to(path: Path | None):
    """This process's stdout and stderr (file descriptors 1 and 2) appended to ``path`` for the block,
    for the processes started in it to inherit; nothing changes when ``path`` is None."""
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    rotate_log(path)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def _root_message(error) -> str:
    """The innermost cause of a serialized error, without the exception's module path."""
    while error.cause is not None:
        error = error.cause
    text = error.message.strip()
    head, sep, rest = text.partition(": ")
    return rest if sep and error.cls_name and head.endswith(error.cls_name) else text
