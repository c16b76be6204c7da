"""Jobs and schedules: the nightly 归集 at 02:00 (city time) for the previous day's batch."""

from __future__ import annotations

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    JobDefinition,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    multiprocess_executor,
)

from assets.resources import Settings

NIGHTLY_JOB = "nightly_guiji"


def build_jobs_and_schedules(
    partitions: DailyPartitionsDefinition, settings: Settings | None = None,
) -> tuple[list[JobDefinition], list[ScheduleDefinition]]:
    # Two worker processes by default (the reference machine has two cores); PostgreSQL
    # deployments raise GONGSHU_MAX_CONCURRENT, SQLite serialises writers anyway. Steps start from a
    # forkserver that has imported the code location once (Dagster preloads the job's module), so a
    # step pays a fork, not a fresh interpreter importing dagster, polars and GX (~5 s each).
    executor = multiprocess_executor.configured({
        "max_concurrent": (settings or Settings()).max_concurrent,
        "start_method": {"forkserver": {}},
    })
    nightly = define_asset_job(
        NIGHTLY_JOB,
        selection=AssetSelection.key_prefixes(["ods"], ["std"], ["base"], ["share"], ["quality"]),
        partitions_def=partitions,
        executor_def=executor,
        description="每晚归集: 读取各数源部门前一日的交付, 入贴源层、标准层并按一数一源合并到基础库, "
        "然后生成脱敏共享/开放数据、质量评分与部门质量报告。",
    )
    schedule = build_schedule_from_partitioned_job(
        nightly, hour_of_day=2, minute_of_hour=0, name="nightly_guiji_schedule",
        description="每日 02:00(城市时区)归集前一日批次",
    )
    return [nightly], [schedule]
