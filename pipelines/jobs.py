"""Jobs and schedules: the nightly 归集 at 02:00 (city time) for the previous day's batch."""

from __future__ import annotations

from collections.abc import Mapping

from dagster import (
    AssetSelection,
    DailyPartitionsDefinition,
    DefaultScheduleStatus,
    ExecutorDefinition,
    JobDefinition,
    ScheduleDefinition,
    build_schedule_from_partitioned_job,
    define_asset_job,
    multiprocess_executor,
)
from dagster_celery import celery_executor

from assets.resources import Settings, celery_broker
from pipelines.workers import executor_config

NIGHTLY_JOB = "nightly_guiji"

# Imported once by the executor's forkserver. Dagster preloads the job's module by itself only when
# the run's code pointer is a module pointer, which a run launched from the workspace's code server
# is not (measured: every step re-imported assets.factory, Dagster's storage and GX), so the list is
# explicit: the code location, the storage the step's instance opens, GX (rule checks) and the
# report charts. None of them starts a thread at import (forking a process with threads is unsafe);
# polars starts its pool on first use.
FORKSERVER_PRELOAD = (
    "dagster._core.executor.multiprocess",
    "pipelines.definitions",
    "dagster._core.storage.base_storage",
    "great_expectations",
    "matplotlib.figure",
)


def nightly_executor(settings: Settings, environ: Mapping[str, str] | None = None) -> ExecutorDefinition:
    """The nightly job's executor, by ``GONGSHU_EXECUTOR``.

    ``multiprocess`` (the default): the steps run on this machine, in processes of the run worker.
    Two at a time by default (the reference machine has two cores); PostgreSQL deployments raise
    GONGSHU_MAX_CONCURRENT, SQLite serialises writers anyway. Steps start from a forkserver that has
    imported once what every step needs, so a step pays a fork, not a fresh interpreter importing the
    code location, Dagster's storage and GX (~2-5 s per step otherwise).

    ``celery``: every step is a task on the Celery queue ``GONGSHU_CELERY_QUEUE`` of the broker
    ``GONGSHU_CELERY_BROKER``, run by whichever worker (``make worker``, on this machine or others)
    takes it; how many at a time is the workers' concurrency (pipelines/workers.py, docs/deploy.md).
    ``environ``: the variables that decide whether the broker is a secret set in the environment.
    """
    if settings.executor == "celery":
        return celery_executor.configured(executor_config(settings, celery_broker(environ)))
    return multiprocess_executor.configured({
        "max_concurrent": settings.max_concurrent,
        "start_method": {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}},
    })


def build_jobs_and_schedules(
    partitions: DailyPartitionsDefinition, settings: Settings | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[list[JobDefinition], list[ScheduleDefinition]]:
    executor = nightly_executor(settings or Settings(), environ)
    nightly = define_asset_job(
        NIGHTLY_JOB,
        selection=AssetSelection.key_prefixes(["ods"], ["std"], ["base"], ["share"], ["quality"]),
        partitions_def=partitions,
        executor_def=executor,
        description="每晚归集: 读取各数源部门前一日的交付, 入贴源层、标准层并按一数一源合并到基础库, "
        "然后生成脱敏共享/开放数据、质量评分与部门质量报告。",
    )
    running = (settings or Settings()).nightly_schedule == "running"
    schedule = build_schedule_from_partitioned_job(
        nightly, hour_of_day=2, minute_of_hour=0, name="nightly_guiji_schedule",
        description="每日 02:00(城市时区)归集前一日批次。首次部署时"
        + ("开启" if running else "关闭") + " (GONGSHU_NIGHTLY_SCHEDULE=running|stopped); 之后以界面中的开关为准。",
        default_status=DefaultScheduleStatus.RUNNING if running else DefaultScheduleStatus.STOPPED,
    )
    return [nightly], [schedule]
