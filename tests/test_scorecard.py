"""The department scorecard: the formulas of quality.md with hand-computed numbers, its
configuration, and its history per run in quality.scorecard (SQLite and PostgreSQL)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import polars as pl
import pytest

from quality.config import ConfigError, ScorecardConfig, load_config
from quality.rules import Dimension
from quality.scorecard.compute import (
    RESPONSE_SCHEMA,
    RULE_INPUT_SCHEMA,
    Scorecard,
    competition_ranks,
    compute,
    dimension_scores,
    grade,
    response_score,
    rule_scores,
)
from quality.scorecard.render import markdown_table
from quality.scorecard.store import history, latest_run, previous_totals, read_scorecard, store_scorecard
from warehouse.store import Warehouse

CONFIG = ScorecardConfig()


def rules(*rows: tuple[str, str, str, Dimension, str, int, int]) -> pl.DataFrame:
    """(department, resource, rule, dimension, severity, evaluated, failed) rows as rule inputs."""
    return pl.DataFrame(
        [{"department": d, "resource_id": r, "batch_id": f"{r}.20261009.1", "rule_id": rule, "label": rule,
          "dimension": dim.value, "severity": sev, "evaluated": n, "failed": u} for d, r, rule, dim, sev, n, u in rows],
        schema=RULE_INPUT_SCHEMA,
    )


def responses(*rows: tuple[str, int, int, int]) -> pl.DataFrame:
    return pl.DataFrame([dict(zip(("department", "due", "on_time", "overdue"), r, strict=True)) for r in rows],
                        schema=RESPONSE_SCHEMA)


# Department a: a base-library resource (ω = 2) and a resource carrying copies only (ω = 1).
# Department b: one base-library resource without failures. Department c: nothing delivered.
EXAMPLE = rules(
    ("a", "a_base", "r1", Dimension.conformity, "blocking", 200, 10),  # s = 95
    ("a", "a_base", "r2", Dimension.conformity, "warning", 100, 20),  # s = 80
    ("a", "a_base", "r3", Dimension.completeness, "blocking", 200, 0),  # s = 100
    ("a", "a_base", "r4", Dimension.consistency, "warning", 50, 5),  # s = 90
    ("a", "a_base", "r5", Dimension.timeliness, "blocking", 1, 0),  # s = 100
    ("a", "a_base", "r6", Dimension.accuracy, "warning", 0, 0),  # nothing evaluated: no 准确性 score
    ("a", "a_copy", "r7", Dimension.consistency, "warning", 40, 10),  # s = 75
    ("a", "a_copy", "r8", Dimension.accessibility, "blocking", 40, 0),  # s = 100
    ("b", "b_base", "r9", Dimension.conformity, "blocking", 10, 0),
)
WEIGHTS = {"a_base": 2.0, "a_copy": 1.0, "b_base": 2.0}


def example() -> Scorecard:
    return compute(dt.date(2026, 10, 9), EXAMPLE, ["a", "b", "c"], WEIGHTS, responses(("a", 4, 3, 1)), CONFIG)


def test_a_rule_scores_its_pass_rate_and_a_rule_that_evaluated_nothing_is_left_out() -> None:
    scored = rule_scores(EXAMPLE, CONFIG)
    s = dict(zip(scored.get_column("rule_id"), scored.get_column("score"), strict=True))
    assert s["r1"] == pytest.approx(95.0) and s["r2"] == pytest.approx(80.0) and s["r7"] == pytest.approx(75.0)
    assert "r6" not in s
    assert dict(zip(scored.get_column("rule_id"), scored.get_column("weight"), strict=True))["r1"] == 3.0


def test_a_dimension_weighs_blocking_rules_three_times_a_warning() -> None:
    dims = dimension_scores(rule_scores(EXAMPLE, CONFIG))
    got = {(r["resource_id"], r["dimension"]): r["score"] for r in dims.iter_rows(named=True)}
    assert got[("a_base", "规范性")] == pytest.approx((3 * 95 + 1 * 80) / 4)  # 91.25
    assert got[("a_base", "一致性")] == pytest.approx(90.0)
    assert ("a_base", "准确性") not in got


def test_a_resource_averages_only_the_dimensions_that_have_rules() -> None:
    card = example()
    s = dict(zip(card.resources.get_column("resource_id"), card.resources.get_column("score"), strict=True))
    # 规范性 91.25 ×15, 完整性 100 ×20, 一致性 90 ×25, 时效性 100 ×15 (no 准确性, no 可访问性)
    assert s["a_base"] == pytest.approx((15 * 91.25 + 20 * 100 + 25 * 90 + 15 * 100) / 75)  # 94.9167
    assert s["a_copy"] == pytest.approx((25 * 75 + 5 * 100) / 30)  # 79.1667
    assert s["b_base"] == pytest.approx(100.0)


def test_the_department_counts_base_library_resources_twice_and_adds_the_response_score() -> None:
    a = example().department("a")
    q = (2 * 7118.75 / 75 + 1 * 2375 / 30) / 3
    assert a["data_score"] == pytest.approx(q) and a["data_score"] == pytest.approx(89.6667, abs=1e-4)
    assert a["response_score"] == pytest.approx(100 * 3 / 4 - 5 * 1)  # 70
    assert a["total"] == pytest.approx(0.8 * q + 0.2 * 70) and round(a["total"], 2) == 85.73
    assert a["grade"] == "C" and a["rank"] == 2 and a["resources"] == 2
    # the department's dimensions: ω-weighted over the resources that have them
    assert a["consistency"] == pytest.approx((2 * 90 + 1 * 75) / 3)  # 85.0
    assert a["conformity"] == pytest.approx(91.25) and a["accessibility"] == pytest.approx(100.0)
    assert a["accuracy"] is None
    assert (a["tickets_due"], a["tickets_on_time"], a["tickets_overdue"]) == (4, 3, 1)


def test_a_department_without_due_tickets_has_full_response_and_one_without_data_has_no_total() -> None:
    card = example()
    b, c = card.department("b"), card.department("c")
    assert (b["data_score"], b["response_score"], b["total"], b["grade"], b["rank"]) == (100.0, 100.0, 100.0, "A", 1)
    assert (c["data_score"], c["total"], c["grade"], c["rank"], c["resources"]) == (None, None, None, None, 0)


def test_the_response_score_loses_five_points_per_overdue_ticket_and_never_goes_below_zero() -> None:
    assert response_score(4, 3, 1) == 70.0
    assert response_score(10, 10, 0) == 100.0
    assert response_score(2, 0, 2) == 0.0  # 0 − 10 → floored
    assert response_score(0, 0, 0) == 100.0


def test_grades_follow_the_thresholds_and_ties_share_a_rank() -> None:
    assert [grade(t, CONFIG) for t in (100, 95, 94.99, 90, 80, 79.9, 60, 59.99)] == \
        ["A", "A", "B", "B", "C", "D", "D", "E"]
    assert competition_ranks({"x": 90.0, "y": 95.0, "z": 90.0, "w": 80.0, "v": None}) == \
        {"y": 1, "x": 2, "z": 2, "w": 4, "v": None}
    # ranked at the precision the reports show: 99.96 reads 100.0 and ranks with 100
    assert competition_ranks({"a": 100.0, "b": 99.96, "c": 99.94}) == {"a": 1, "b": 1, "c": 3}


def test_weights_and_thresholds_come_from_the_catalogue_folder_and_the_environment(tmp_path: Path) -> None:
    (tmp_path / "scorecard.yaml").write_text(
        "dimension_weights: {一致性: 40}\nrule_weights: {blocking: 2}\n"
        "grades: {优: 90, 良: 75, 中: 60}\nlowest_grade: 差\n", encoding="utf-8")
    cfg = load_config(tmp_path, env={"GONGSHU_SCORECARD_TICKET_WORKING_DAYS": "7"})
    assert cfg.dimension_weights[Dimension.consistency] == 40 and cfg.dimension_weights[Dimension.conformity] == 15
    assert cfg.rule_weights == {"blocking": 2.0, "warning": 1.0}
    assert cfg.ticket_working_days == 7 and cfg.max_extension_working_days == 15
    assert [grade(t, cfg) for t in (91, 80, 61, 10)] == ["优", "良", "中", "差"]
    # with 一致性 weighted 40 the copy-only resource of department a scores (40·75 + 5·100)/45
    card = compute(dt.date(2026, 10, 9), EXAMPLE, ["a"], WEIGHTS, responses(), cfg)
    s = dict(zip(card.resources.get_column("resource_id"), card.resources.get_column("score"), strict=True))
    assert s["a_copy"] == pytest.approx((40 * 75 + 5 * 100) / 45)

    assert load_config(None, env={}) == ScorecardConfig()
    bad = tmp_path / "bad.yaml"
    bad.write_text("grades: {A: 60, B: 90}\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="grades"):
        load_config(tmp_path, env={"GONGSHU_SCORECARD_CONFIG": str(bad)})


def test_every_run_is_stored_and_the_last_report_is_the_latest_earlier_period(warehouse: Warehouse) -> None:
    d1, d2 = dt.date(2026, 10, 8), dt.date(2026, 10, 9)
    first = compute(d1, rules(("a", "a_base", "r1", Dimension.conformity, "blocking", 100, 20)), ["a", "b"],
                       WEIGHTS, responses(), CONFIG)  # a: Q 80 → total 84
    store_scorecard(warehouse, first, "run-1", dt.datetime(2026, 10, 9, 2, 0))
    second = example()
    store_scorecard(warehouse, second, "run-2", dt.datetime(2026, 10, 10, 2, 0))
    store_scorecard(warehouse, second, "run-2", dt.datetime(2026, 10, 10, 2, 5))  # the same run again: replaced

    rows = read_scorecard(warehouse)
    assert rows.filter(pl.col("run_id") == "run-2").height == EXAMPLE.height + 3 + 3  # rules, resources, departments
    latest = latest_run(warehouse, d2)
    a = latest.filter((pl.col("level") == "department") & (pl.col("department") == "a")).row(0, named=True)
    assert a["score"] == pytest.approx(85.7333, abs=1e-4) and a["grade"] == "C" and a["rank"] == 2
    assert a["consistency"] == pytest.approx(85.0) and a["tickets_overdue"] == 1
    r7 = latest.filter(pl.col("rule_id") == "r7").row(0, named=True)
    assert (r7["level"], r7["evaluated"], r7["failed"], r7["score"], r7["weight"]) == ("rule", 40, 10, 75.0, 1.0)
    base = latest.filter((pl.col("level") == "resource") & (pl.col("resource_id") == "a_base")).row(0, named=True)
    assert base["weight"] == 2.0 and base["conformity"] == pytest.approx(91.25) and base["accuracy"] is None

    prev = previous_totals(warehouse, d2)
    assert prev.filter(pl.col("department") == "a").get_column("score").to_list() == [pytest.approx(84.0)]
    assert history(warehouse, d2).filter(pl.col("department") == "a").get_column("period").to_list() == [d1, d2]
    table = markdown_table(second, _Names(), prev)
    assert "| 2 | 部门a | 85.7 | C | +1.7 | 89.7 | 70.0 |" in table


class _Names:
    """Just enough catalogue for the Markdown table."""

    class _D:
        def __init__(self, code: str):
            self.name = f"部门{code}"

    def department(self, code: str):
        return self._D(code)


def test_open_tickets_on_records_the_latest_batch_did_not_carry_count_as_failures_of_their_rules(tmp_path: Path) -> None:
    from catalog.loader import load_catalogue
    from quality.scorecard.inputs import open_ticket_counts, rule_labels, with_open_tickets
    from quality.tickets.store import TICKET_SCHEMA
    from tests import citykit

    cat = load_catalogue(citykit.write_catalogue(tmp_path))
    day = dt.date(2026, 10, 9)

    def ticket(i: int, kind: str, resource: str, items: str, last: str, status: str = "open",
               resolved: dt.date | None = None, opened: dt.date = dt.date(2026, 9, 30)) -> dict:
        return {**dict.fromkeys(TICKET_SCHEMA), "ticket_id": f"JH-{i}", "kind": kind, "department": resource.split("_")[0],
                "resource_id": resource, "items": items, "last_batch": last, "opened_on": opened, "status": status,
                "resolved_on": resolved}

    tickets = pl.DataFrame([
        ticket(1, "record", "huzheng_renkou", "dob.id_birth_date; sex.id_gender", "huzheng_renkou.20260930.1"),
        ticket(2, "record", "huzheng_renkou", "bad_date", "huzheng_renkou.20260930.1", "overdue"),  # → delivery.parse
        ticket(3, "record", "huzheng_renkou", "dob.id_birth_date", "huzheng_renkou.20261009.1"),  # seen in the latest batch
        ticket(4, "record", "huzheng_renkou", "dob.id_birth_date", "huzheng_renkou.20260930.1", "answered",
               resolved=dt.date(2026, 10, 8)),  # answered: the department's part is done
        ticket(5, "record", "huzheng_renkou", "dob.id_birth_date", "huzheng_renkou.20260930.1", "fixed",
               resolved=dt.date(2026, 10, 12)),  # fixed only after the period: still open at 10-09
        ticket(6, "conflict", "shebao_canbao", "full_name", "shebao_canbao.20260930.1"),  # → full_name.authority
        ticket(7, "record", "huzheng_renkou", "dob.id_birth_date", "huzheng_renkou.20260930.1",
               opened=dt.date(2026, 10, 12)),  # opened after the period
    ], schema=TICKET_SCHEMA)
    batches = pl.DataFrame({"resource_id": ["huzheng_renkou", "shebao_canbao"],
                            "batch_id": ["huzheng_renkou.20261009.1", "shebao_canbao.20261009.1"]})
    carried = open_ticket_counts(tickets, batches, day, rule_labels(cat))
    got = {(r["resource_id"], r["rule_id"]): (r["evaluated"], r["failed"], r["dimension"], r["label"])
           for r in carried.iter_rows(named=True)}
    assert got == {
        ("huzheng_renkou", "dob.id_birth_date"): (2, 2, "准确性", "出生日期: 出生日期与身份号码一致"),
        ("huzheng_renkou", "sex.id_gender"): (1, 1, "准确性", "性别: 性别与身份号码一致"),
        ("huzheng_renkou", "delivery.parse"): (1, 1, "规范性", "日期与数值可按目录格式解析"),
        ("shebao_canbao", "full_name.authority"): (1, 1, "一致性", "姓名: 与权威部门(户政中心)一致"),
    }
    latest = rules(("huzheng", "huzheng_renkou", "dob.id_birth_date", Dimension.accuracy, "warning", 2, 0))
    merged = with_open_tickets(latest, carried).filter(pl.col("rule_id") == "dob.id_birth_date")
    assert merged.select("evaluated", "failed").row(0) == (4, 2)  # 2 delivered and passing + 2 still standing
