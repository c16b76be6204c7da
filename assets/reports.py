"""``quality/department_reports``: every department's report of the partition, written and mailed."""

from __future__ import annotations

import datetime as dt

from dagster import AssetKey, MaterializeResult, MetadataValue, asset

from assets.keys import Layer, label_kinds, labelled
from assets.resources import MailerResource, PseudonymKeyResource, Settings, WarehouseResource
from assets.scorecard import SCORECARD_KEY
from assets.tickets import TICKETS_KEY
from catalog.loader import Catalogue
from quality.config import load_config
from quality.report.deliver import delivery_label
from quality.report.period import produce_reports
from quality.scorecard.render import fmt

REPORTS_KEY = ["quality", "department_reports"]


def build_department_reports_asset(catalogue: Catalogue, partitions):
    """``quality/department_reports``: every department's report of the partition, written and mailed."""
    @asset(
        key=AssetKey(REPORTS_KEY),
        deps=[AssetKey(SCORECARD_KEY), AssetKey(TICKETS_KEY)],
        group_name="quality",
        partitions_def=partitions,
        kinds={"html", "excel", *label_kinds("quality")},
        tags={"layer": "quality"},
        description=labelled(
            f"{Layer.quality.label} · 部门数据质量报告",
            "部门数据质量报告: 每个数源部门一份 (HTML + XLSX), 含评分、规则结果、时效、一数一源冲突、"
            "失败记录(标识脱敏并附令牌)与校核工单; 写入 $GONGSHU_HOME/reports/<日期>/, 经邮件(SMTP 或发件箱)送达, "
            "超期工单上报数据工程师。"
        ),
    )
    def _reports(context, warehouse: WarehouseResource, mailer: MailerResource,  # context: AssetExecutionContext
                 pseudonym: PseudonymKeyResource, settings: Settings) -> MaterializeResult:
        wh = warehouse.get()
        day = dt.date.fromisoformat(context.partition_key)
        config = load_config(catalogue.root, settings.scorecard)
        run = produce_reports(wh, catalogue, day, config, mailer=mailer.get(), key=pseudonym.get_or_none(),
                              root=settings.reports, engineers=settings.engineer_emails)
        for o in run.outcomes:
            if o.delivery.startswith("failed"):
                context.log.error(f"{o.reference}: {o.delivery}")
        table = ["| 部门 | 得分 | 等级 | 失败记录 | 冲突 | 待校核 | 超期 | 投递 |", "|---|---|---|---|---|---|---|---|"]
        for o in run.outcomes:
            table.append(f"| {catalogue.department(o.department).name} | {fmt(o.total)} | {o.grade or '—'} | "
                         f"{o.failures} | {o.conflicts} | {o.open} | {o.overdue} | {delivery_label(o.delivery)} |")
        return MaterializeResult(metadata={
            "报告": MetadataValue.md("\n".join(table)),
            "目录": MetadataValue.path(str(run.outcomes[0].html.parent.resolve()) if run.outcomes else ""),
            "报告页面": MetadataValue.md("\n".join(
                f"- [{catalogue.department(o.department).name}]({settings.page_url(o.html)})" for o in run.outcomes)
                or "无"),
            "报告数": len(run.outcomes),
            "已发送": sum(o.delivery.startswith("sent") for o in run.outcomes),
            "超期上报": f"{run.escalated} 件 · {delivery_label(run.escalation)}" if run.escalated else "无",
        })

    return _reports
