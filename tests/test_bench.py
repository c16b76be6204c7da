"""The 归集 benchmark at a small size, so it cannot rot between `make bench` runs (the full-size
run is not part of `make test`)."""

from __future__ import annotations

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
def test_the_guiji_benchmark_accounts_for_every_delivered_record(pg_url: str, tmp_path: Path) -> None:
    """It runs two steps at a time like the nightly job, and the records its pipeline read are
    exactly those the raw-COPY reference loaded (``pg_url`` only checks that the server is there:
    the benchmark creates and drops its own databases)."""
    env = {**os.environ, "GONGSHU_TEST_PG_URL": PG_ADMIN_URL}
    out = subprocess.run(
        [sys.executable, "benchmarks/bench_guiji.py", "--persons", "2000", "--runs", "1", "--workers", "2",
         "--landing", str(tmp_path / "landing")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    counted = re.search(r"交付 ([\d,]+) 行 \(参照 COPY ([\d,]+) 行\) · 2 个步骤并行", out.stdout)
    assert counted and counted.group(1) == counted.group(2) and int(counted.group(1).replace(",", "")) > 2000
    for line in ("比值 归集/参照(1 连接)", "比值 归集/参照(2 连接)", "最长依赖链", "写入下限", "CPU: 归集期间整机忙",
                 "比值 GX/polars"):
        assert line in out.stdout, line
