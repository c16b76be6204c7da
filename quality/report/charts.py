"""The report's charts as base64 PNGs: the score trend and the score by dimension (Chinese labels
when a CJK font is installed, English otherwise: matplotlib would draw empty boxes)."""

from __future__ import annotations

import base64
import io

import polars as pl

CJK_FONTS = ("Noto Sans CJK SC", "Noto Sans SC", "Source Han Sans SC", "Source Han Sans CN", "WenQuanYi Zen Hei",
             "WenQuanYi Micro Hei", "SimHei", "Microsoft YaHei", "PingFang SC", "Heiti SC", "Sarasa Gothic SC",
             "AR PL UMing CN", "Noto Serif CJK SC")


def cjk_font() -> str | None:
    """A CJK-capable font matplotlib can use, if one is installed."""
    from matplotlib import font_manager

    installed = {f.name for f in font_manager.fontManager.ttflist}
    return next((name for name in CJK_FONTS if name in installed), None)


def _png(fig) -> str:
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def render_charts(points: pl.DataFrame, dimensions: list[dict], grade_bounds: list[float]) -> list[dict]:
    """Score trend (``points``: the department's scored periods) and score by dimension as base64 PNGs.

    matplotlib is imported here, when a chart is drawn: loading the code location does not pay for it.
    """
    import matplotlib
    from matplotlib.figure import Figure

    font = cjk_font()
    rc = {"font.family": [font, "DejaVu Sans"]} if font else {}
    charts = []
    with matplotlib.rc_context(rc):
        fig = Figure(figsize=(6.4, 2.4))
        ax = fig.add_subplot()
        xs = [d.strftime("%m-%d") for d in points.get_column("period").to_list()]
        ax.plot(xs, points.get_column("score").to_list(), marker="o", color="#2a5d9f",
                label="综合得分" if font else "Total")
        ax.plot(xs, points.get_column("data_score").to_list(), marker=".", linestyle="--", color="#8aa7cc",
                label="数据质量分 Q" if font else "Data score Q")
        for bound in grade_bounds:
            ax.axhline(bound, color="#dddddd", linewidth=0.8, zorder=0)
        ax.set_ylim(max(0, min([60.0, *[v for v in points.get_column("score").to_list() if v is not None]]) - 5), 101)
        ax.set_title("综合得分趋势" if font else "Score trend", fontsize=10)
        ax.set_xlabel("批次日期" if font else "Batch date", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.legend(fontsize=7, loc="lower left")
        charts.append({"png": _png(fig), "alt": "综合得分趋势", "width": 640})

        fig = Figure(figsize=(6.4, 2.4))
        ax = fig.add_subplot()
        names = [d["name"] if font else d["dimension"].english for d in dimensions]
        values = [d["value"] if d["value"] is not None else 0.0 for d in dimensions]
        colors = ["#2a5d9f" if d["value"] is not None else "#cccccc" for d in dimensions]
        bars = ax.barh(names, values, color=colors)
        for bar, d in zip(bars, dimensions, strict=True):
            text = f"{d['value']:.1f}" if d["value"] is not None else ("无规则" if font else "n/a")
            ax.text(min(bar.get_width(), 100) + 1, bar.get_y() + bar.get_height() / 2, text, va="center", fontsize=7)
        ax.set_xlim(0, 112)
        ax.invert_yaxis()
        ax.set_title("各维度得分" if font else "Score by dimension (GB/T 36344)", fontsize=10)
        ax.tick_params(labelsize=8)
        charts.append({"png": _png(fig), "alt": "各维度得分", "width": 640})
    return charts
