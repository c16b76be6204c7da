"""共享申请 deliveries: one dynamic partition per approved, unexpired application, and the asset that
writes its extract (``sharing/extract.py``) for a batch date.

Why a job of its own (``share_delivery``), not part of ``nightly_guiji``: a Dagster job has one
partitions definition, and the nightly job is partitioned by day while extracts are partitioned by
application (a partition appears when an application is approved and goes when it is revoked or
expires). So the extracts run right after the nightly job, as its own runs: the
``share_applications_sensor`` adds and removes the partitions and, once a nightly run has succeeded
for batch date D, requests one run per active application for D (run key ``<application>:<D>``, so
once per night); ``gongshu run`` does the same after the nightly runs it launches (the same function,
:func:`sync_applications`). A failed extract (a raw identifier found) then fails only its own run.
"""


import datetime as dt

from dagster import (
    AddDynamicPartitionsRequest,
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    DeleteDynamicPartitionsRequest,
    DynamicPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    asset,
    define_asset_job,
    in_process_executor,
    sensor,
)

from assets.keys import base_key
from assets.resources import (
    MailerResource,
    PseudonymKeyResource,
    Settings,
    ShareExtractsResource,
    WarehouseResource,
)
from catalog.loader import Catalogue
from quality.freshness import calendar
from quality.freshness.calendar import city_zone
from sharing import commands as sc
from sharing.extract import ExtractRefused, write_extract
from sharing.overdue import escalate

PARTITIONS = DynamicPartitionsDefinition(name="share_application")
EXTRACT_KEY = AssetKey(["share_application", "extract"])
DELIVERY_JOB = "share_delivery"
AS_OF_TAG = "gongshu/as_of"
NIGHTLY_JOB = "nightly_guiji"


def build_share_application_asset(catalogue: Catalogue) -> AssetsDefinition:
    @asset(
        key=EXTRACT_KEY,
        # reads the base libraries as of the run's batch date: lineage without a per-day partition mapping
        deps=[AssetDep(base_key(lib), partition_mapping=AllPartitionMapping()) for lib in catalogue.libraries],
        partitions_def=PARTITIONS,
        group_name="share",
        kinds={"polars", "csv", "xlsx"},
        tags={"layer": "share"},
        check_specs=[AssetCheckSpec("no_raw_identifiers", asset=EXTRACT_KEY, blocking=True,
                                    description="申请提取(CSV、XLSX、清单)中不得出现基础库的身份号码、手机号、姓名、完整地址原值")],
        description="共享申请 · 按申请提取\n\n每个已批准且在有效期内的申请一个分区; 每晚按批次日期写出准予的数据元(及申请的行范围), "
                    "按目录分级脱敏, 假名令牌按申请单独加密钥, 带可溯源指纹; CSV/XLSX 与清单写入 "
                    "$GONGSHU_HOME/share/<申请编号>/<日期>/, 每次提取记入 audit.share_extracts。",
    )
    def _extract(context: AssetExecutionContext, warehouse: WarehouseResource, pseudonym: PseudonymKeyResource,
                 share_extracts: ShareExtractsResource) -> MaterializeResult:
        app_id = context.partition_key
        tag = context.run.tags.get(AS_OF_TAG)
        as_of = dt.date.fromisoformat(tag) if tag else calendar.clock().astimezone(city_zone(catalogue)).date() - dt.timedelta(days=1)
        key = pseudonym.get_or_none()
        if key is None:
            raise Failure(description="未设置假名化密钥 (GONGSHU_PSEUDONYM_KEY): 申请提取的令牌与指纹都由它派生, 本次不写出",
                          allow_retries=False)
        try:
            ex = write_extract(warehouse.get(), catalogue, app_id, as_of, key, share_extracts.root(),
                               run_id=context.run_id)
        except ExtractRefused as exc:
            context.log.error(str(exc))
            raise Failure(description=str(exc), allow_retries=False) from None
        context.log.info(f"申请 {app_id} {as_of}: 写出 {ex.rows} 行 → {ex.folder}")
        return MaterializeResult(
            metadata={
                "申请编号": app_id, "批次日期": as_of.isoformat(), "行数": ex.rows, "dagster/row_count": ex.rows,
                "列": ", ".join(ex.frame.columns), "假名化密钥编号(本申请)": ex.key_id or "无",
                "指纹编号": ex.watermark_id, "文件夹": MetadataValue.path(str(ex.folder)),
                "脱敏策略": MetadataValue.md(ex.policy.describe_md()),
            },
            check_results=[AssetCheckResult(check_name="no_raw_identifiers", passed=True,
                                            severity=AssetCheckSeverity.ERROR, description="未发现原始标识符",
                                            metadata={"扫描文件": ", ".join(p.name for p in ex.files)})],
        )

    return _extract


def build_share_delivery_job():
    return define_asset_job(DELIVERY_JOB, selection=[EXTRACT_KEY], partitions_def=PARTITIONS,
                            executor_def=in_process_executor,
                            description="共享申请提取: 每个有效申请一个分区, 在每晚归集成功后运行")


def sync_applications(instance: DagsterInstance, warehouse, today: dt.date) -> tuple[list[str], list[str], list[str], list[str]]:
    """Expire what has passed its date, then the partitions wanted / to add / to delete, and the expired ids."""
    wh = warehouse.get() if hasattr(warehouse, "get") else warehouse
    expired = sc.expire(wh, today)
    wanted = sorted(sc.deliverable(wh, today).get_column("application_id").to_list())
    have = set(instance.get_dynamic_partitions(PARTITIONS.name))
    return wanted, [a for a in wanted if a not in have], sorted(have - set(wanted)), expired


def last_nightly_date(instance: DagsterInstance) -> str | None:
    runs = instance.get_runs(RunsFilter(job_name=NIGHTLY_JOB, statuses=[DagsterRunStatus.SUCCESS]), limit=1)
    return runs[0].tags.get("dagster/partition") if runs else None


def build_share_applications_sensor(catalogue: Catalogue, interval_s: int = 60) -> SensorDefinition:
    @sensor(
        name="share_applications_sensor",
        job_name=DELIVERY_JOB,
        minimum_interval_seconds=interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        description="共享申请: 到期的申请置为已到期; 超期的数源部门意见与审批邮件通知一次; "
                    "按已批准且在有效期内的申请增删 share_application 动态分区; "
                    "每晚归集成功后, 为每个有效申请请求一次当晚批次的提取。",
    )
    def share_applications_sensor(context: SensorEvaluationContext, warehouse: WarehouseResource,
                                  mailer: MailerResource, settings: Settings) -> SensorResult:
        today = calendar.clock().astimezone(city_zone(catalogue)).date()
        wanted, add, delete, expired = sync_applications(context.instance, warehouse, today)
        mailed = escalate(warehouse.get(), catalogue, today, mailer.get(), settings.engineer_emails)
        day = last_nightly_date(context.instance)
        requests = [RunRequest(run_key=f"{a}:{day}", partition_key=a, tags={AS_OF_TAG: day}) for a in wanted] if day else []
        message = (f"有效申请 {len(wanted)}; 新增分区 {', '.join(add) or '无'}; 删除分区 {', '.join(delete) or '无'}; "
                   f"到期 {', '.join(expired) or '无'}; 超期通知 {', '.join(mailed) or '无'}; 最近成功归集 {day or '无'}")
        context.log.info(message)
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=[r for r in (AddDynamicPartitionsRequest(PARTITIONS.name, add) if add else None,
                                                     DeleteDynamicPartitionsRequest(PARTITIONS.name, delete) if delete else None)
                                         if r is not None],
            skip_reason=None if requests else SkipReason(message),
        )

    return share_applications_sensor
