"""``quality/scorecard``: the departments' scores after every base library."""

from __future__ import annotations

import datetime as dt

import polars as pl
from dagster import AssetKey, MaterializeResult, MetadataValue, asset

from assets.keys import base_key
from assets.resources import Settings, WarehouseResource
from catalog.loader import Catalogue
from quality.scorecard import load_config, markdown_table, previous_totals, run_scorecard

SCORECARD_KEY = ["quality", "scorecard"]


def build_scorecard_asset(catalogue: Catalogue, partitions):
    """``quality/scorecard``: after every base library, the departments' scores (stored per run)."""

    @asset(
        key=AssetKey(SCORECARD_KEY),
        deps=[base_key(lib) for lib in catalogue.libraries],
        group_name="quality",
        partitions_def=partitions,
        kinds={"polars", "sql"},
        tags={"layer": "quality"},
        description=(
            "部门数据质量评分 (GB/T 36344 六个维度): 规则得分 → 维度得分 → 资源得分 → 部门数据质量分 Q; "
            "校核响应分 R; 综合得分 = 0.8Q + 0.2R 与等级。先同步校核工单(新开、修复、超期), 结果按运行写入 "
            "quality.scorecard。权重见 scorecard.yaml / GONGSHU_SCORECARD_*。"
        ),
    )
    def _scorecard(context, warehouse: WarehouseResource,  # context: AssetExecutionContext
                   settings: Settings) -> MaterializeResult:
        wh = warehouse.get()
        day = dt.date.fromisoformat(context.partition_key)
        config = load_config(catalogue.root, settings.scorecard)
        previous = previous_totals(wh, day)
        sync, card = run_scorecard(wh, catalogue, day, config, context.run_id)
        ranked = card.departments.filter(pl.col("total").is_not_null()).sort("total")
        return MaterializeResult(metadata={
            "评分表": MetadataValue.md(markdown_table(card, catalogue, previous)),
            "部门数": card.departments.height,
            "平均综合得分": round(float(ranked.get_column("total").mean()), 2) if ranked.height else None,
            "最低分部门": catalogue.department(ranked.get_column("department")[0]).name if ranked.height else "—",
            "规则数": card.rules.height,
            "新开校核单": len(sync.opened),
            "本期修复": len(sync.fixed),
            "新超期(已上报)": len(sync.overdue),
        })

    return _scorecard
