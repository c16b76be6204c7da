"""How the run launcher's health check tells a run worker that is gone (the monitoring daemon's view;
the whole path, with a real daemon and a killed run, is in tests/test_end_to_end.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.launcher import process_alive

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def test_a_running_worker_is_alive() -> None:
    assert process_alive(os.getpid(), time.time())


def test_a_worker_that_exited_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid, time.time())


@linux_only
def test_a_killed_worker_nobody_has_reaped_yet_is_not() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 30
    stat = Path(f"/proc/{child.pid}/stat")
    while time.monotonic() < deadline and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":
        time.sleep(0.05)
    try:
        assert not process_alive(child.pid, time.time())  # a zombie: exited, its parent has not waited
    finally:
        child.wait()


@linux_only
def test_a_process_that_reuses_the_workers_pid_is_not_the_worker() -> None:
    """The pid is alive, but its process started after the worker reported that pid."""
    reported = time.time() - 5
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        assert process_alive(child.pid, time.time() + 1)
        assert not process_alive(child.pid, reported)
    finally:
        child.kill()
        child.wait()


def test_the_run_log_is_rotated_once_it_is_full(tmp_path: Path) -> None:
    """gongshu-run.log takes every night's process output: once it passes the limit it moves to .1, the older
    ones move up, and the oldest beyond ``keep`` is dropped; below the limit nothing moves."""
    from pipelines.runs import rotate_log

    log = tmp_path / "gongshu-run.log"
    for night in range(4):
        log.write_bytes(f"night {night}\n".encode() * 20)
        rotate_log(log, limit=100, keep=2)
    assert not log.exists()
    assert log.with_name("gongshu-run.log.1").read_bytes().startswith(b"night 3")
    assert log.with_name("gongshu-run.log.2").read_bytes().startswith(b"night 2")
    assert not log.with_name("gongshu-run.log.3").exists()
    log.write_bytes(b"small\n")
    rotate_log(log, limit=100, keep=2)
    assert log.read_bytes() == b"small\n"
