"""The run launcher of the gongshu instance: Dagster's default launcher plus a health check of the run
worker, so that run monitoring can fail a run whose worker is gone.

Dagster's ``DefaultRunLauncher`` asks a code server (gRPC) to start each run in a run worker process,
but does not implement ``check_run_worker_health``: the monitoring daemon then only enforces the start,
cancel and maximum-runtime timeouts. A dead worker is noticed by the code server that started it, and
only while that server lives; when both are killed (``kill -9`` of the process group, the container
killed for memory, a host restart) the run stayed ``STARTED`` for good. This launcher records the host
the worker runs on at launch, and its health check looks for the worker's process (its pid is in the
run's first engine event) on that host. Imported by every Dagster process that loads the instance, so
it imports nothing but Dagster and the standard library.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

from dagster import DagsterEventType
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.launcher.base import LaunchRunContext
from dagster._core.launcher.default_run_launcher import DefaultRunLauncher
from dagster._core.storage.dagster_run import DagsterRun
from dagster._core.storage.tags import GRPC_INFO_TAG
from dagster_shared import seven

HOST_TAG = "gongshu/run_worker_host"
LOCAL_HOSTS = {"localhost", "127.0.0.1", "::1", "0.0.0.0"}
PROC = Path("/proc")


class MonitoredRunLauncher(DefaultRunLauncher):
    """``DefaultRunLauncher`` whose run workers the monitoring daemon can check (on their host)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def launch_run(self, context: LaunchRunContext) -> None:
        super().launch_run(context)
        run = self._instance.get_run_by_id(context.dagster_run.run_id)
        if run is not None and _local_code_server(run):
            # The worker is a child of a code server on this host: this is where to look for it.
            self._instance.add_run_tags(run.run_id, {HOST_TAG: socket.gethostname()})

    def check_run_worker_health(self, run: DagsterRun) -> CheckRunHealthResult:
        host = run.tags.get(HOST_TAG)
        if host != socket.gethostname():
            # Launched elsewhere (or before this launcher): nothing here can see the worker. A run that
            # must not hang there is bounded by run_monitoring.max_runtime_seconds instead.
            return CheckRunHealthResult(WorkerStatus.RUNNING, "运行进程不在本机, 无法检查")
        found = self._worker_pid(run)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "运行进程尚未登记进程号")
        pid, since = found
        if process_alive(pid, since):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"运行进程 (pid {pid}) 运行中", run_worker_id=str(pid))
        return CheckRunHealthResult(
            WorkerStatus.FAILED,
            f"运行进程 (pid {pid}, 主机 {host}) 已不存在: 被强制终止 (如 kill -9、内存不足) 或主机重启, "
            "运行未能报告结果; 由运行监控标记为失败",
            run_worker_id=str(pid),
        )

    def _worker_pid(self, run: DagsterRun) -> tuple[int, float] | None:
        """The run worker's pid and when it reported it: the first engine event of the run that carries
        a pid and no step ("Started process for run (pid: N)" from the code server's worker, or the
        executor's own "parent process (pid: N)", the same process)."""
        records = self._instance.get_records_for_run(
            run.run_id, of_type=DagsterEventType.ENGINE_EVENT, limit=20, ascending=True
        ).records
        for record in records:
            entry = record.event_log_entry
            event = entry.dagster_event
            if event is None or event.step_key:
                continue
            pid = event.engine_event_data.metadata.get("pid")
            if pid is not None and str(pid.value).isdigit():
                return int(pid.value), entry.timestamp
        return None


def _local_code_server(run: DagsterRun) -> bool:
    info = run.tags.get(GRPC_INFO_TAG)
    if not info:
        return False
    grpc = seven.json.loads(info)
    return bool(grpc.get("socket")) or grpc.get("host") in LOCAL_HOSTS


def process_alive(pid: int, started_before: float) -> bool:
    """Whether process ``pid`` runs and is the one that reported itself at ``started_before`` (epoch
    seconds): a zombie is dead, and a process started after that moment is another one that reuses
    the pid (checked on Linux, through /proc)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by another user
    if not sys.platform.startswith("linux"):
        return True
    try:
        stat = (PROC / str(pid) / "stat").read_text()
        boot = next(float(line.split()[1]) for line in (PROC / "stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, StopIteration, ValueError):
        return True
    # Fields after the command name (which may hold spaces and parentheses): state is the 3rd field,
    # starttime (clock ticks after boot) the 22nd.
    fields = stat.rsplit(")", 1)[1].split()
    if fields[0] in ("Z", "X"):
        return False
    started = boot + int(fields[19]) / os.sysconf("SC_CLK_TCK")
    return started <= started_before + 1.0  # btime has a resolution of one second
