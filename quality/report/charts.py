"""The report's charts as base64 PNGs: the score trend and the score by dimension, in Chinese.

A CJK font is required: without one matplotlib draws every Chinese character as an empty box, so
the report refuses with :class:`MissingCJKFont` (saying what to install) rather than mail boxes to a
department. ``make install`` installs Debian's ``fonts-noto-cjk`` when no Chinese font is present
(``make fonts``). matplotlib keeps a cache of the fonts it found when it was first imported; a font
installed after that is found by scanning the system's font folders once (:func:`cjk_font`).
"""

from __future__ import annotations

import base64
import io
import math
import re
from collections.abc import Iterable
from pathlib import Path

import polars as pl

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Sarasa Gothic SC",
             "Noto Sans CJK JP", "Noto Sans CJK TC", "AR PL UMing CN", "Noto Serif CJK SC")
"""Fonts that draw simplified Chinese, preferred first (a Japanese or traditional Noto CJK face covers
the same characters)."""

CJK_FILES = re.compile(r"(?i)cjk|sourcehan|wqy|wenquanyi|simhei|simsun|msyh|yahei|pingfang|heiti|sarasa|uming|ukai")
"""File names of fonts worth loading when matplotlib's cache predates their installation."""


class MissingCJKFont(RuntimeError):
    """No font that draws Chinese is installed: the charts would show empty boxes."""

    def __init__(self) -> None:
        super().__init__(
            "未找到可显示中文的字体 (CJK), 报告图表无法以中文绘制: 请安装 fonts-noto-cjk "
            "(make fonts, 或 apt-get install fonts-noto-cjk), 或 Noto Sans CJK SC、思源黑体、文泉驿正黑之一")


def pick_cjk_font(installed: Iterable[str]) -> str | None:
    """The preferred CJK font among the ``installed`` font names, if any."""
    names = set(installed)
    return next((name for name in CJK_FONTS if name in names), None)


def cjk_font() -> str:
    """A CJK font matplotlib can use; raises :class:`MissingCJKFont` when none is installed."""
    from matplotlib import font_manager

    manager = font_manager.fontManager
    font = pick_cjk_font(f.name for f in manager.ttflist)
    if font is None:  # installed after matplotlib built its cache: load the candidates' files once
        for path in font_manager.findSystemFonts():
            if CJK_FILES.search(path):
                try:
                    manager.addfont(path)
                except (OSError, RuntimeError, ValueError):
                    continue
        font = pick_cjk_font(f.name for f in manager.ttflist)
        if font is not None:  # remember them, so the next process finds them in the cache
            import matplotlib

            cache = Path(matplotlib.get_cachedir()) / f"fontlist-v{font_manager.FontManager.__version__}.json"
            font_manager.json_dump(manager, cache)  # an unwritable cache only logs a warning
    if font is None:
        raise MissingCJKFont()
    return font


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def score_limits(values: Iterable[float | None]) -> tuple[float, float]:
    """y-axis limits of a score chart that contain every plotted value and its marker: from the tens
    below the lowest (at most 60, so the grade lines show; a little below 0 when a score is 0) to
    just above 100."""
    present = [v for v in values if v is not None and not math.isnan(v)]
    low = math.floor((min([60.0, *present]) - 2) / 10) * 10
    return (low if low >= 0 else -4.0), 104.0


def trend_figure(points: pl.DataFrame, grade_bounds: list[float]):
    """The department's total and data score per period (``points``: period, score, data_score)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.6))
    ax = fig.add_subplot()
    xs = [d.strftime("%m-%d") for d in points.get_column("period").to_list()]
    total, data = points.get_column("score").to_list(), points.get_column("data_score").to_list()
    ax.plot(xs, total, marker="o", color="#2a5d9f", label="综合得分")
    ax.plot(xs, data, marker=".", linestyle="--", color="#8aa7cc", label="数据质量分 Q")
    for bound in grade_bounds:
        ax.axhline(bound, color="#dddddd", linewidth=0.8, zorder=0)
    ax.set_ylim(*score_limits([*total, *data]))
    ax.set_title("综合得分趋势", fontsize=10)
    ax.set_xlabel("批次日期", fontsize=8)
    ax.set_ylabel("得分", fontsize=8)
    ax.tick_params(labelsize=8)
    ax.legend(fontsize=7, loc="best")
    return fig


def dimension_figure(dimensions: list[dict]):
    """The six GB/T 36344 dimensions' scores as bars (0–100; a dimension without rules says so)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.4, 2.6))
    ax = fig.add_subplot()
    names = [d["name"] for d in dimensions]
    values = [d["value"] if d["value"] is not None else 0.0 for d in dimensions]
    colors = ["#2a5d9f" if d["value"] is not None else "#cccccc" for d in dimensions]
    bars = ax.barh(names, values, color=colors)
    for bar, d in zip(bars, dimensions, strict=True):
        text = f"{d['value']:.1f}" if d["value"] is not None else "无规则"
        ax.text(min(bar.get_width(), 100) + 1, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7)
    ax.set_xlim(0, 112)  # room for the value beside a full bar
    ax.invert_yaxis()
    ax.set_title("各维度得分 (GB/T 36344)", fontsize=10)
    ax.set_xlabel("得分", fontsize=8)
    ax.tick_params(labelsize=8)
    return fig


def render_charts(points: pl.DataFrame, dimensions: list[dict], grade_bounds: list[float]) -> list[dict]:
    """Score trend (``points``: the department's scored periods) and score by dimension as base64 PNGs.

    matplotlib is imported here, when a chart is drawn: loading the code location does not pay for it.
    """
    import matplotlib

    font = cjk_font()
    with matplotlib.rc_context({"font.family": [font, "DejaVu Sans"], "axes.unicode_minus": False}):
        return [{"png": _png(trend_figure(points, grade_bounds)), "alt": "综合得分趋势", "width": 640},
                {"png": _png(dimension_figure(dimensions)), "alt": "各维度得分", "width": 640}]
