"""What ``gongshu`` prints: tables padded by display width (a Chinese character is two columns), so
every column of the summary, freshness and report tables starts at the same place on every line."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from catalog.loader import DEMO_CATALOGUE, load_catalogue
from pipelines.cli import build_parser, run_dates, run_dates_note
from quality.terminal import pad, table, width


def columns_aligned(lines: Sequence[str], first: Sequence[str], column: Sequence[str]) -> bool:
    """Whether ``column[i]`` starts at the same display column on each line that starts (after the indent)
    with ``first[i]``: the offset of a cell is measured in terminal columns, not characters."""
    offsets = set()
    for line in lines:
        for head, cell in zip(first, column, strict=False):
            if line.strip().startswith(head) and cell in line:
                offsets.add(width(line[: line.index(cell)]))
    return len(offsets) == 1


def test_display_width_counts_chinese_twice_and_pads_by_it() -> None:
    assert (width("abc"), width("户籍人口"), width("gaj/hjrk 户籍人口"), width("超期 3 个工作日")) == (3, 8, 17, 15)
    assert pad("户籍", 6) == "户籍  " and pad("12", 6, ">") == "    12" and pad("户籍人口信息", 4) == "户籍人口信息"


def test_a_table_lines_up_mixed_chinese_and_ascii_cells() -> None:
    lines = table([["资源", "周期", "交付", "状态"],
                   ["gaj/hjrk 户籍人口", "每日", "1,000", "正常"],
                   ["swj/nsrdj 纳税人登记信息", "每周", "7", "超期 3 个工作日"]], "<<><")
    assert lines == [
        "资源                      周期   交付  状态",
        "gaj/hjrk 户籍人口         每日  1,000  正常",
        "swj/nsrdj 纳税人登记信息  每周      7  超期 3 个工作日",
    ]
    # each column starts at one display offset on every line (f"{s:<24}" would shift the Chinese rows)
    assert {width(line[: line.index(status)]) for line, status in zip(lines, ["状态", "正常", "超期"], strict=True)} == {39}
    assert columns_aligned(lines, ["资源", "gaj", "swj"], ["状态", "正常", "超期"])
    assert table([["a", "b"]], "<<", indent="  ") == ["  a  b"]


def test_a_run_that_starts_before_its_days_says_why_in_one_line(tmp_path: Path) -> None:
    manifest = tmp_path / "manifest.json"
    manifest.write_text(json.dumps({"resources": {
        "gaj_hjrk": {"rows": {"2026-11-19": 5, "2026-11-20": 3}},
        "swj_nsrdj": {"rows": {"2026-11-08": 7}},
    }}), encoding="utf-8")
    demo = load_catalogue(DEMO_CATALOGUE)

    def note(*argv: str) -> str | None:
        args = build_parser().parse_args(["run", *argv])
        return run_dates_note(args, run_dates(args), demo)

    assert note("--manifest", str(manifest), "--days", "2") == (
        "另运行早于 --days 2 (2026-11-19 至 2026-11-20) 的 1 个批次日期: 2026-11-08 (市税务局「纳税人登记信息」在该日交付)"
        " — --manifest 运行示范城市的每个交付日期, 先将这些交付入库, 其时效才按实际交付日判断")
    assert note("--manifest", str(manifest), "--days", "13") is None  # 11-08 is inside the window
    assert note("--date", "2026-11-20", "--days", "2") is None  # no manifest: only the window
