"""Defect detection on generated cities: the demo catalogue and the second catalogue (山海市), each
generated with defects and run through the nightly Dagster job, on SQLite and PostgreSQL. Every injected
defect must be found and nothing else; Great Expectations and the polars predicates must count the same
failures for every rule of every batch.

The job runs in process (``execute_in_process``: the same asset graph, checks and resources as the
code location, without a process per step); `gongshu run` launching it through the code location is
tested in tests/test_end_to_end.py. `gongshu score-detection` is called as the command's function."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import polars as pl
import pytest
from dagster import DagsterEventType, DagsterInstance

from catalog.loader import DEMO_CATALOGUE, load_catalogue
from desensitize.kanon import smallest_group
from desensitize.leaks import Needles, scan_tree
from generator import generate
from pipelines.cli import build_parser, main, run_dates
from pipelines.definitions import build_definitions
from pipelines.demo_api import serve_in_thread
from pipelines.jobs import NIGHTLY_JOB
from tests import citykit
from warehouse.store import Warehouse

DATE = "2026-11-20"

pytestmark = pytest.mark.e2e


@pytest.fixture(params=["demo", "shanhai"])
def generated_city(request, tmp_path: Path, warehouse_url: str, monkeypatch):
    """A generated city of 1,500 persons over two batch days, delivered and served like the demo."""
    landing = tmp_path / "landing"
    landing.mkdir()
    server, base = serve_in_thread(landing)
    catalogue = DEMO_CATALOGUE if request.param == "demo" else citykit.write_catalogue(tmp_path)
    env = {
        "GONGSHU_CATALOG": str(catalogue),
        "GONGSHU_LANDING": str(landing),
        "GONGSHU_WAREHOUSE_URL": warehouse_url,
        "GONGSHU_HOME": str(tmp_path / "home"),
        "GONGSHU_PSEUDONYM_KEY": "test-key-0123456789abcdef",
        "GONGSHU_API_ZRZY_URL": f"{base}/zrzy/bdcqz",
        "SHANHAI_QIYE_URL": f"{base}/qiye",
        # a city this small puts at least one defect of each class into deliveries of a few dozen
        # rows (the truncated one keeps 30%): a blocking rule's pass rate can fall below the default
        # 0.9 there, which would rightly stop the merge; the detection is what is tested here
        "GONGSHU_BLOCKING_MIN_PASS_RATE": "0.5",
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    manifest = generate(load_catalogue(catalogue), persons=1500, seed=11, date=dt.date.fromisoformat(DATE), out=landing, days=2,
                        progress=False)
    yield request.param, env, Path(manifest)
    server.shutdown()
    server.server_close()


def run_nights(manifest: Path) -> list[str]:
    """The nightly job for every date `gongshu run --manifest` runs, in process; the dates run."""
    days = run_dates(build_parser().parse_args(["run", "--date", DATE, "--days", "2", "--manifest", str(manifest)]))
    job = build_definitions().resolve_job_def(NIGHTLY_JOB)
    with DagsterInstance.ephemeral() as instance:
        for day in days:
            result = job.execute_in_process(partition_key=day.isoformat(), instance=instance, raise_on_error=False)
            failed = [e.step_key for e in result.all_events if e.is_step_failure]
            skipped = [e.step_key for e in result.all_events if e.event_type == DagsterEventType.STEP_SKIPPED]
            assert result.success and not failed and not skipped, (day, failed, skipped)
    return [d.isoformat() for d in days]


def score_detection(manifest: Path, capsys) -> tuple[int, dict[str, list[str]]]:
    """`gongshu score-detection`: its exit code and its table, class → figures."""
    capsys.readouterr()
    code = main(["score-detection", "--manifest", str(manifest)])
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split()[1:] for line in out.splitlines() if line.split()[:1]}
    return code, rows | {"_out": [out]}


def test_every_injected_defect_is_found_and_nothing_else(generated_city, capsys) -> None:
    name, env, manifest = generated_city
    ran = run_nights(manifest)
    # the stale resource's only delivery lies weeks back: its batch date was run too
    doc = json.loads(manifest.read_text(encoding="utf-8"))
    stale = next(d for d in doc["defects"] if d["class"] == "stale")
    assert stale["batch_date"] in ran and ran[-1] == DATE

    code, rows = score_detection(manifest, capsys)
    assert code == 0 and "全部类别精确率与召回率均为 1.0" in rows["_out"][0], rows["_out"][0]
    classes = {d["class"] for d in doc["defects"]}
    assert {"stale", "truncated", "conflict", "duplicate_key", "holder_missing"} <= classes
    for c in classes:
        injected, found, missed, fps, precision, recall = rows[c]
        assert injected == found and missed == fps == "0" and precision == recall == "1.000", (c, rows[c])

    # the same command fails when the pipeline reports something the truth does not hold
    doc["defects"] = [d for d in doc["defects"] if d["class"] != "duplicate_key"]
    broken = manifest.with_name("manifest-without-duplicates.json")
    broken.write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")
    code, again = score_detection(broken, capsys)
    assert code == 1 and "存在漏报或误报" in again["_out"][0]
    assert again["duplicate_key"][:4] == ["0", "0", "0", rows["duplicate_key"][1]]  # every one a false positive

    # Great Expectations and the polars predicates agree on every rule of every batch
    wh = Warehouse(env["GONGSHU_WAREHOUSE_URL"])
    try:
        with wh.engine.connect() as conn:
            results = wh.read(conn, "SELECT batch_id, rule_id, evaluated, failed, gx_evaluated, gx_failed FROM "
                              f"{wh.qualified('quality', 'rule_results')}",
                              {"batch_id": pl.String, "rule_id": pl.String, "evaluated": pl.Int64, "failed": pl.Int64,
                               "gx_evaluated": pl.Int64, "gx_failed": pl.Int64})
        validated = results.filter(pl.col("evaluated") > 0)
        assert validated.height >= 20 and validated.get_column("failed").sum() > 0, name
        assert validated.filter(pl.col("gx_failed").is_null()).height == 0
        disagree = validated.filter((pl.col("gx_evaluated") != pl.col("evaluated"))
                                    | (pl.col("gx_failed") != pl.col("failed")))
        assert disagree.height == 0, disagree

        # the open exports are k-anonymous, and no raw identifier of the base libraries is in them,
        # in the department reports (HTML, XLSX) or in the mails that carried them
        home = Path(env["GONGSHU_HOME"])
        exports = sorted((home / "open").rglob("*.json"))
        assert exports, name
        for path in exports:
            doc = json.loads(path.read_text(encoding="utf-8"))
            qis = doc["quasi_identifiers"]
            if qis and doc["records"]:
                frame = pl.DataFrame(doc["records"], infer_schema_length=None).select(qis)
                assert smallest_group(frame, qis) >= doc["k"], path
        needles = Needles.from_warehouse(wh, load_catalogue(Path(env["GONGSHU_CATALOG"])))
        assert len(needles.ids) > 1000 and len(needles.names) > 100
        written = sorted((home / "reports").rglob("*.xlsx")) + sorted((home / "outbox").rglob("*.eml"))
        assert len(written) >= 8, written
        assert scan_tree(home / "reports", needles) == [] and scan_tree(home / "outbox", needles) == []
    finally:
        wh.dispose()


def test_run_dates_add_every_delivery_date_of_the_manifest_up_to_the_batch_date(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"resources": {
        "a": {"rows": {"2026-11-19": 5, "2026-11-20": 3}},
        "stale": {"rows": {"2026-11-08": 7}},
    }}), encoding="utf-8")

    def dates(*argv: str) -> list[str]:
        return [d.isoformat() for d in run_dates(build_parser().parse_args(["run", *argv]))]

    # without --date the batch date is the manifest's last delivery date
    assert dates("--manifest", str(manifest), "--days", "2") == ["2026-11-08", "2026-11-19", "2026-11-20"]
    # an explicit --date bounds it: later deliveries are not run
    assert dates("--manifest", str(manifest), "--date", "2026-11-19") == ["2026-11-08", "2026-11-19"]
    assert dates("--date", "2026-11-20", "--days", "3") == ["2026-11-18", "2026-11-19", "2026-11-20"]
