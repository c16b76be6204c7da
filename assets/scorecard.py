"""``quality/scorecard``: the departments' scores after every base library and the 校核 tickets."""

from __future__ import annotations

import datetime as dt

import polars as pl
from dagster import AssetKey, MaterializeResult, MetadataValue, asset

from assets.keys import Layer, base_key, label_kinds, labelled
from assets.resources import Settings, WarehouseResource
from assets.tickets import TICKETS_KEY
from catalog.loader import Catalogue
from quality.config import load_config
from quality.scorecard.period import run_scorecard
from quality.scorecard.render import markdown_table
from quality.scorecard.store import previous_totals

SCORECARD_KEY = ["quality", "scorecard"]


def build_scorecard_asset(catalogue: Catalogue, partitions):
    """``quality/scorecard``: after every base library and ``quality/tickets`` (R counts the synced
    tickets), the departments' scores (stored per run). It computes; it changes no ticket."""

    @asset(
        key=AssetKey(SCORECARD_KEY),
        deps=[AssetKey(TICKETS_KEY), *(base_key(lib) for lib in catalogue.libraries)],
        group_name="quality",
        partitions_def=partitions,
        kinds={"polars", "sql", *label_kinds("quality")},
        tags={"layer": "quality"},
        description=labelled(
            f"{Layer.quality.label} · 部门数据质量评分",
            "部门数据质量评分 (GB/T 36344 六个维度): 规则得分 → 维度得分 → 资源得分 → 部门数据质量分 Q; "
            "校核响应分 R (按 quality/tickets 同步后的工单); 综合得分 = 0.8Q + 0.2R 与等级。结果按运行写入 "
            "quality.scorecard。权重见 scorecard.yaml / GONGSHU_SCORECARD_*。"
        ),
    )
    def _scorecard(context, warehouse: WarehouseResource,  # context: AssetExecutionContext
                   settings: Settings) -> MaterializeResult:
        wh = warehouse.get()
        day = dt.date.fromisoformat(context.partition_key)
        config = load_config(catalogue.root, settings.scorecard)
        previous = previous_totals(wh, day)
        card = run_scorecard(wh, catalogue, day, config, context.run_id)
        ranked = card.departments.filter(pl.col("total").is_not_null()).sort("total")
        return MaterializeResult(metadata={
            "评分表": MetadataValue.md(markdown_table(card, catalogue, previous)),
            "部门数": card.departments.height,
            "平均综合得分": round(float(ranked.get_column("total").mean()), 2) if ranked.height else None,
            "最低分部门": catalogue.department(ranked.get_column("department")[0]).name if ranked.height else "—",
            "规则数": card.rules.height,
        })

    return _scorecard
