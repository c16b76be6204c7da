"""The scorecard for people: numbers as reports show them and the table across departments."""

from __future__ import annotations

import polars as pl

from catalog.loader import Catalogue
from quality.rules import Dimension
from quality.scorecard.compute import DIMENSION_COLUMN, Scorecard


def fmt(value: float | None, digits: int = 1) -> str:
    """A score as reports show it; one below 100 never reads as a full 100.0 (99.96 → 99.9): a
    department with anything open must not read a perfect score."""
    if value is None:
        return "—"
    text = f"{value:.{digits}f}"
    if value < 100 and float(text) >= 100:
        return f"{100 - 10 ** -digits:.{digits}f}"
    return text


def delta_text(now: float | None, before: float | None) -> str:
    if now is None or before is None:
        return "—"
    d = now - before
    return "±0.0" if abs(d) < 0.05 else f"{d:+.1f}"


def markdown_table(card: Scorecard, catalogue: Catalogue, previous: pl.DataFrame | None = None) -> str:
    """The scorecard across departments as a Markdown table (Dagster UI), best first."""
    prev = {r["department"]: r["score"] for r in (previous.iter_rows(named=True) if previous is not None else [])}
    head = ["排名", "部门", "总分", "等级", "较上期", "数据分Q", "响应分R", *[d.value for d in Dimension], "超期工单"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    rows = card.departments.sort(["rank", "department"], nulls_last=True)
    for r in rows.iter_rows(named=True):
        name = catalogue.department(r["department"]).name
        cells = [str(r["rank"] or "—"), name, fmt(r["total"]), r["grade"] or "—",
                 delta_text(r["total"], prev.get(r["department"])), fmt(r["data_score"]), fmt(r["response_score"]),
                 *[fmt(r[DIMENSION_COLUMN[d]]) for d in Dimension], str(r["tickets_overdue"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
