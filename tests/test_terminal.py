"""What ``gongshu`` prints: tables padded by display width (a Chinese character is two columns), so
every column of the summary, freshness and report tables starts at the same place on every line."""

from __future__ import annotations

from collections.abc import Sequence

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
