"""``quality/tickets``: the 校核 tickets brought up to the partition's batch date, after every base library."""

from __future__ import annotations

import datetime as dt

import polars as pl
from dagster import AssetKey, MaterializeResult, asset

from assets.keys import Layer, base_key, label_kinds, labelled
from assets.resources import Settings, WarehouseResource
from catalog.loader import Catalogue
from quality.config import load_config
from quality.report.context import report_reference
from quality.tickets.store import read_tickets
from quality.tickets.sync import sync_tickets
from quality.tickets.transitions import TicketStatus

TICKETS_KEY = ["quality", "tickets"]


def build_tickets_asset(catalogue: Catalogue, partitions):
    """``quality/tickets``: opens, fixes and escalates tickets from what the base libraries and their
    checks stored (failing records, 一数一源 conflicts); the scorecard's R and the reports read them."""

    @asset(
        key=AssetKey(TICKETS_KEY),
        deps=[base_key(lib) for lib in catalogue.libraries],
        group_name="quality",
        partitions_def=partitions,
        kinds={"polars", "sql", *label_kinds("quality")},
        tags={"layer": "quality"},
        description=labelled(
            f"{Layer.quality.label} · 校核工单",
            "校核工单: 每条失败记录、每组一数一源冲突一张工单, 随部门质量报告发出, 5 个工作日内校核(按法定节假日计)。"
            "每个批次日期同步一次: 新开、后续交付已更正的修复、逾期未处理的标为超期并上报数据工程师; "
            "写入 quality.tickets 与 audit.ticket_events。"
        ),
    )
    def _tickets(context, warehouse: WarehouseResource,  # context: AssetExecutionContext
                 settings: Settings) -> MaterializeResult:
        wh = warehouse.get()
        day = dt.date.fromisoformat(context.partition_key)
        references = {d.code: report_reference(catalogue, d.code, day) for d in catalogue.departments}
        sync = sync_tickets(wh, catalogue, day, load_config(catalogue.root, settings.scorecard), references)
        tickets = read_tickets(wh)
        return MaterializeResult(metadata={
            "新开校核单": len(sync.opened),
            "再次发现": len(sync.seen_again),
            "本期修复": len(sync.fixed),
            "新超期(已上报)": len(sync.overdue),
            "待校核": tickets.filter(pl.col("status") == TicketStatus.open).height,
            "已超期": tickets.filter(pl.col("status") == TicketStatus.overdue).height,
        })

    return _tickets
