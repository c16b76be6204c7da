"""The nightly-job benchmark at a small size, so it cannot rot between `make bench` runs (the full-size
run is not part of `make test`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import PG_ADMIN_URL

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.postgres
@pytest.mark.e2e
def test_the_benchmark_runs_the_real_nightly_job_and_accounts_for_every_delivered_record(
        pg_url: str, tmp_path: Path) -> None:
    """It launches ``nightly_guiji`` through the Dagster instance and the code location (a run id, the
    run's status and its steps from the event log), two steps at a time, and the records the night
    delivered into ODS are exactly those the raw-COPY reference loaded (``pg_url`` only checks that the
    server is there: the benchmark creates and drops its own databases and Dagster instance)."""
    # Dagster's own storage on PostgreSQL, as production runs it: a database of the bench's own, never the
    # one a DAGSTER_PG_URL of the caller's environment names (this one does not exist)
    env = {**os.environ, "GONGSHU_TEST_PG_URL": PG_ADMIN_URL,
           "DAGSTER_PG_URL": "postgresql://nobody@127.0.0.1:1/not_the_bench_storage"}
    figures = tmp_path / "bench.json"
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_guiji.py", "--persons", "1500", "--runs", "1", "--workers", "2",
         "--landing", str(tmp_path / "landing"), "--json", str(figures), "--dagster-storage", "postgres"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    counted = re.search(r"交付 ([\d,]+) 行 \(参照 COPY ([\d,]+) 行\) · nightly_guiji 经 Dagster", out.stdout)
    assert counted and counted.group(1) == counted.group(2) and int(counted.group(1).replace(",", "")) > 1500
    assert "Dagster 存储 PostgreSQL (dagster-postgres)" in out.stdout
    data = json.loads(figures.read_text(encoding="utf-8"))
    assert data["dagster_storage"] == "postgres"
    night = data["nights"][0]
    assert night["status"] == "SUCCESS" and f"运行 {night['run_id']} · SUCCESS" in out.stdout
    assert data["delivered"] == data["raw_copy_rows"] == data["accepted"] + data["quarantined"]
    # every step of the job, from the event log, each in a stage; the 归集's chain runs ods+std → base
    stages = {st["key"]: st["stage"] for st in night["steps"]}
    assert {"ods+std", "base", "share", "checks", "quality", "reports"} == set(stages.values())
    assert all(st["status"] == "STEP_SUCCESS" and st["startup"] is not None for st in night["steps"])
    assert [stages[k] for k in night["guiji_path"]] == ["ods+std", "base"]
    assert night["run_worker_pid"] and night["rss_sum_mb"] >= night["rss_single_mb"] > 0
    # the peak RSS of each step's own process (its pid from the step's STEP_WORKER_STARTED event)
    assert set(night["step_rss_mb"]) == set(stages) and all(mb > 0 for mb in night["step_rss_mb"].values())
    assert max(night["step_rss_mb"].values()) <= night["rss_single_mb"]
    assert data["peak_rss_mb"]["steps"] == night["step_rss_mb"] and data["peak_rss_mb"]["run_worker"] > 0
    assert set(data["ratios"]) >= {"night_over_guiji", "guiji_over_raw_copy_1", "guiji_over_raw_copy_2",
                                   "guiji_over_write_floor"}
    for line in ("整夜 (RUN_STARTING → RUN_SUCCESS)", "运行进程启动", "步骤进程启动", "最长依赖链 (归集",
                 "最慢 5 步", "分层行数", "参照: 原样 COPY, 单连接", "写入下限", "比值 整夜/归集",
                 "比值 归集/参照(1 连接)", "比值 归集/参照(2 连接)", "比值 归集/写入下限", "峰值 RSS",
                 "峰值 RSS 每进程: 运行进程"):
        assert line in out.stdout, line
