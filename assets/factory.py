"""Asset factories: one catalogue entry in, its Dagster assets out.

Each resource becomes ``ods/<dept>/<resource>`` and ``std/<dept>/<resource>``; each base library
becomes ``base/<library>``. Descriptions and metadata are in Chinese (what users read); keys,
groups and tags are ASCII. Assets only wire the pure steps in ods/std/base to the warehouse and
report what they did as MaterializeResult metadata.
"""


import datetime as dt
from collections.abc import Callable
from typing import TypeVar

import polars as pl
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    Backoff,
    DagsterError,
    DailyPartitionsDefinition,
    Failure,
    Jitter,
    MaterializeResult,
    MetadataValue,
    RetryPolicy,
    RetryRequested,
    TableColumn,
    TableSchema,
    asset,
    multi_asset,
)

from assets.checks import (
    SAMPLE_ROWS,
    consistency_check_result,
    consistency_check_spec,
    percent,
    reference_check,
    std_check_results,
    std_check_specs,
    with_batch_date,
)
from assets.freshness import freshness_policy
from assets.keys import (
    base_key,
    label_kinds,
    labelled,
    library_label,
    ods_key,
    owner,
    resource_label,
    std_key,
)
from assets.resources import LandingResource, Settings, WarehouseResource
from catalog.loader import Catalogue
from catalog.models import Element, Library, Resource
from desensitize.display import md_cell
from desensitize.rules import mask_for_preview
from guiji.base import merge_library
from guiji.channels import DeliveryError
from guiji.ods import IngestResult, ingest
from guiji.std import StdResult, collect, standardize_batch
from quality.conflicts import check_library_consistency
from quality.consistency import copies
from quality.results import read_failures
from quality.volume import HISTORY, assess, previous_volumes
from warehouse.base import base_schema, lineage, read_current
from warehouse.ods import ods_schema, read_ods, record_delivery
from warehouse.std import night_problems, std_schema
from warehouse.store import Warehouse, is_transient

PREVIEW_ROWS = 5
CHANNEL_KIND = {"csv": "csv", "xlsx": "excel", "json": "json"}
T = TypeVar("T")

# The executor starts the executable step of highest priority first (Dagster's ``dagster/priority``
# op tag): a library's merge as soon as its resources are in, then the resources' steps, and the
# later stages (checks, share outputs, scorecard, reports) only when no 归集 step is waiting — they
# used to start inside the 归集 as soon as their own library was merged, holding a worker slot a
# resource of another library was waiting for.
MERGE_PRIORITY = {"dagster/priority": "2"}
GUIJI_PRIORITY = {"dagster/priority": "1"}

RETRY_POLICY = RetryPolicy(max_retries=3, delay=2, backoff=Backoff.EXPONENTIAL, jitter=Jitter.PLUS_MINUS)
"""The 归集 steps' retries: 3 more attempts, after about 2, 6 and 14 s (±2 s). Only a transient
database error is retried (:func:`retry_transient`); the policy itself covers what fails outside the
step's body (a step process that died)."""


def retry_transient(context: AssetExecutionContext, warehouse: WarehouseResource, work: Callable[[], T]) -> T:
    """Run a 归集 step's ``work``: a transient database error (:func:`warehouse.store.is_transient`:
    connection lost, serialization failure or deadlock, SQLite locked) asks Dagster to run the step
    again after :data:`RETRY_POLICY`'s backoff; anything else — a data error, a bug — fails the step
    at once, past the policy (``Failure(allow_retries=False)``).

    A step run again starts from a clean state: every write of the 归集 is one transaction that
    commits whole or not at all (the ODS batch with its ``ods.batches`` row, a batch's std rows with
    its quarantine, reconciliation and rule results, a library's merge with its log entry), and each
    is idempotent — the delivery already stored is found ``unchanged`` and its 标准层 rebuilt, std
    rows and rule results of a batch are replaced, a library merged with the same batches for the
    date is left as it is. What the failed attempt had not committed is gone; what it had is not
    done twice.
    """
    try:
        return work()
    except DagsterError:
        raise
    except Exception as exc:
        if not is_transient(exc):
            raise Failure(description=f"{type(exc).__name__}: {_first_line(exc)}", allow_retries=False) from exc
        attempt = context.retry_number + 1
        wait = RETRY_POLICY.calculate_delay(attempt)
        if attempt <= RETRY_POLICY.max_retries:
            context.log.warning(f"暂时性数据库错误, {wait:.1f} 秒后重试 (第 {attempt}/{RETRY_POLICY.max_retries} 次): "
                                f"{type(exc).__name__}: {_first_line(exc)}")
        warehouse.discard()  # the retry opens new connections
        raise RetryRequested(max_retries=RETRY_POLICY.max_retries, seconds_to_wait=wait) from exc


def _first_line(exc: BaseException) -> str:
    """The error's first line (the driver's message; SQLAlchemy appends the statement and its values)."""
    return (str(exc).strip().splitlines() or [""])[0][:500]


def _column_schema(schema: dict[str, pl.DataType], labels: dict[str, str]) -> TableSchema:
    return TableSchema(columns=[TableColumn(n, str(t), description=labels.get(n)) for n, t in schema.items()])


def preview(frame: pl.DataFrame, elements: dict[str, Element | None]) -> MetadataValue:
    """A Markdown preview of the first rows with every sensitive value masked (an ID number jointly
    with the rest of its row) and every value in a code span, so a mask's asterisks stay asterisks."""
    head = mask_for_preview(frame.head(PREVIEW_ROWS), elements)
    if head.height == 0:
        return MetadataValue.md("(无数据)")
    cols = head.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(md_cell(v) for v in row) + " |")
    return MetadataValue.md("\n".join(lines))


def _resource_elements(catalogue: Catalogue, resource: Resource) -> dict[str, Element]:
    lib = catalogue.library(resource.library)
    return {code: lib.element(code) for code in resource.elements()}


def build_resource_assets(
    catalogue: Catalogue, resource: Resource, partitions: DailyPartitionsDefinition, settings: Settings | None = None,
) -> AssetsDefinition:
    """``ods/<dept>/<resource>`` and ``std/<dept>/<resource>`` of one resource, computed in one step.

    Materialised together, the delivery is read once: the ODS batch is written while the same rows
    are standardised, with no read-back (:func:`guiji.std.collect`). Either asset can still be
    materialised alone (a re-standardisation reads the stored ODS batch). Thresholds, the Data Docs
    folder and the channel's variables come from the ``settings`` and ``landing`` resources at run time;
    ``settings`` here only words the volume check's description (the code location passes the same).
    """
    dept = catalogue.department(resource.department)
    lib = catalogue.library(resource.library)
    ch = resource.channel
    kind = CHANNEL_KIND.get(getattr(ch, "format", ""), "sql" if ch.kind == "database" else "json")
    # ODS columns carry the department's own names; mask each by the element it maps to.
    column_elements: dict[str, Element | None] = {f.column: lib.element(f.element) for f in resource.fields}
    column_elements["_raw"] = None
    elements = _resource_elements(catalogue, resource)
    okey, skey = ods_key(resource), std_key(resource)
    volume_spec = AssetCheckSpec(
        "volume", asset=okey, partitions_def=partitions,
        description=f"完整性(记录数): 交付行数不少于最近 {HISTORY} 次交付中位数的 "
                    f"{(settings or Settings()).volume_min_ratio:.0%}",
    )
    delivery_spec = AssetCheckSpec(
        "delivery", asset=okey, partitions_def=partitions,
        description=f"可访问性: {ch.label}可以读取。读取失败时本资源本日不入库, 其余资源照常归集; "
        "重新运行该分区即补入。",
    )
    std_specs = std_check_specs(catalogue, resource, skey, partitions)
    ods_spec = AssetSpec(
        key=okey,
        group_name=lib.code,
        kinds={kind, "polars", *label_kinds("ods")},
        owners=[owner(catalogue, resource.department)],
        tags={"department": resource.department, "layer": "ods", "update_cycle": resource.update_cycle.name},
        freshness_policy=freshness_policy(resource),
        skippable=True,
        description=labelled(
            resource_label(catalogue, resource, "ods"),
            f"贴源层: {dept.name}「{resource.name}」, {ch.label}归集, 更新周期{resource.update_cycle.value}。"
            "原样保存每一批次(只追加, 不修改), 附批次号、来源与行号。"
        ),
        metadata={"部门": dept.name, "资源": resource.name, "基础库": lib.name, "共享属性": resource.share.value,
                  "开放属性": resource.open.value},
    )
    std_spec = AssetSpec(
        key=skey,
        deps=[okey],
        group_name=lib.code,
        kinds={"polars", *label_kinds("std")},
        owners=[owner(catalogue, resource.department)],
        tags={"department": resource.department, "layer": "std"},
        skippable=True,
        description=labelled(
            resource_label(catalogue, resource, "std"),
            f"标准层: {dept.name}「{resource.name}」按数据元解析、类型化与规范化(全角转半角、去空格、日期格式、代码映射);"
            "无法解析或主键无效的行进入隔离区并注明原因。交付行数 = 接收行数 + 隔离行数。"
        ),
    )

    @multi_asset(
        name=f"guiji_{resource.id}",
        specs=[ods_spec, std_spec],
        check_specs=[delivery_spec, volume_spec, *std_specs],
        partitions_def=partitions,
        can_subset=True,
        retry_policy=RETRY_POLICY,
        op_tags=GUIJI_PRIORITY,
    )
    def _collect(context: AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource,
                 settings: Settings):
        # the results are yielded once the whole step has succeeded, so a retried attempt reports nothing twice
        results = retry_transient(context, warehouse, lambda: list(_steps(context, warehouse, landing, settings)))
        yield from (with_batch_date(r, context.partition_key) for r in results)

    def _steps(context: AssetExecutionContext, warehouse: WarehouseResource, landing: LandingResource,
               settings: Settings):
        wh = warehouse.get()
        batch_date = dt.date.fromisoformat(context.partition_key)
        selected = context.selected_asset_keys
        checking = {"min_pass_rate": settings.blocking_min_pass_rate, "docs": settings.gx_docs,
                    "chunk_rows": settings.std_chunk_rows}
        if okey in selected:
            try:
                if skey in selected:
                    received, out = collect(wh, catalogue, resource, batch_date, landing.root(),
                                            variables=landing.variables, run_id=context.run_id, **checking)
                else:
                    received, out = ingest(wh, catalogue, resource, batch_date, landing.root(), landing.variables), None
            except DeliveryError as exc:
                # One department's channel down must not darken the night: this resource is recorded
                # as failed (summary, reports, the delivery check), everything downstream runs on what
                # the others delivered, and re-running the partition takes the delivery in.
                context.log.error(f"{dept.name}「{resource.name}」{batch_date} 交付读取失败: {exc}")
                record_delivery(wh, resource, batch_date, context.run_id, str(exc))
                yield from _failed_results(okey, skey, selected, str(exc))
                return
            record_delivery(wh, resource, batch_date, context.run_id, None)
            yield _ods_result(context, wh, resource, dept.name, okey, column_elements, received, batch_date,
                              settings.volume_min_ratio)
        else:
            out = standardize_batch(wh, catalogue, resource, batch_date, run_id=context.run_id, **checking)
        if skey in selected:
            assert out is not None
            yield _std_result(context, wh, catalogue, resource, skey, std_specs, elements, out, settings)

    return _collect


def _failed_results(okey: AssetKey, skey: AssetKey, selected, error: str):
    """What a resource's step reports when its channel could not be read: no new batch, the delivery
    check failed; the 标准层 keeps its earlier batches (its rule checks were not run)."""
    yield MaterializeResult(
        asset_key=okey,
        metadata={"状态": "交付失败", "错误": error, "dagster/row_count": 0},
        check_results=[AssetCheckResult(asset_key=okey, check_name="delivery", passed=False,
                                        severity=AssetCheckSeverity.ERROR, metadata={"错误": error})],
    )
    if skey in selected:
        yield MaterializeResult(asset_key=skey, metadata={"状态": "交付失败, 本日无新批次", "dagster/row_count": 0})


def _ods_result(
    context: AssetExecutionContext, wh: Warehouse, resource: Resource, dept_name: str, key: AssetKey,
    column_elements: dict[str, Element | None], result: IngestResult, batch_date: dt.date, volume_ratio: float,
) -> MaterializeResult:
    for p in result.problems:
        context.log.warning(p)
    if result.batch is None:
        context.log.warning(f"{dept_name}「{resource.name}」{batch_date} 未收到交付")
        return MaterializeResult(
            asset_key=key,
            metadata={"状态": "未收到交付", "dagster/row_count": 0},
            check_results=[AssetCheckResult(asset_key=key, check_name="delivery", passed=True,
                                            metadata={"状态": "本日未交付(时效性另行检查)"}),
                           AssetCheckResult(asset_key=key, check_name="volume", passed=True,
                                            metadata={"状态": "本日未交付"})],
        )
    b = result.batch
    with wh.engine.connect() as conn:
        # a batch received in this step is still in memory, in delivery order; an older one is read
        sample = result.rows.head(PREVIEW_ROWS) if result.rows is not None else \
            read_ods(wh, conn, resource, b.batch_id, limit=PREVIEW_ROWS)
        vol = assess(b.rows_delivered, previous_volumes(wh, conn, resource, batch_date), volume_ratio)
    if not vol.ok:
        context.log.warning(f"{resource.id} {batch_date}: 交付 {vol.rows} 行, 仅为近期中位数 {vol.median:.0f} 的 {vol.share:.0%}")
    return MaterializeResult(
        asset_key=key,
        check_results=[AssetCheckResult(asset_key=key, check_name="delivery", passed=True,
                                        metadata={"来源": b.sources}), AssetCheckResult(
            asset_key=key, check_name="volume", passed=vol.ok, severity=AssetCheckSeverity.WARN,
            metadata={"交付行数": vol.rows, "近期中位数": vol.median if vol.median is not None else "无历史",
                      "占比": percent(vol.share) if vol.share is not None else "无历史",
                      "近期交付行数": ", ".join(str(x) for x in vol.previous) or "无"},
        )],
        metadata={
            "状态": {"new": "新批次", "unchanged": "与已有批次相同, 未重复入库"}[result.status],
            "批次号": b.batch_id,
            "来源": b.sources,
            "交付行数": b.rows_delivered,
            "未变沿用行数": MetadataValue.md(
                f"{b.rows_carried:,} (与上一批次 {b.carried_from} 相同, 不再入库、标准化与合并)"
                if b.rows_carried else "0"),
            "无法解析行数": b.rows_unparseable,
            "dagster/row_count": b.rows_delivered,
            "问题": MetadataValue.md("\n".join(f"- {p}" for p in result.problems) or "无"),
            "dagster/column_schema": _column_schema(ods_schema(resource), {}),
            "预览(已脱敏)": preview(sample.drop("_batch_id"), column_elements),
        },
    )


def _std_result(
    context: AssetExecutionContext, wh: Warehouse, catalogue: Catalogue, resource: Resource, key: AssetKey,
    check_specs: list[AssetCheckSpec], elements: dict[str, Element], out: StdResult, settings: Settings,
) -> MaterializeResult:
    if out.batch is None or out.result is None:
        return MaterializeResult(
            asset_key=key,
            metadata={"状态": "无批次", "dagster/row_count": 0},
            check_results=[AssetCheckResult(asset_key=key, check_name=s.name, passed=True, metadata={"状态": "本日无批次"})
                           for s in check_specs],
        )
    q = out.result.quarantine
    by_reason = (
        q.group_by("reason", "field").agg(pl.col("_row_no").n_unique().alias("rows")).sort("reason", "field")
        if q.height else q
    )
    reasons_md = "\n".join(
        f"| {r['reason']} | {r['field'] or ''} | {r['rows']} |" for r in by_reason.iter_rows(named=True)
    )
    with wh.engine.connect() as conn:
        failures = read_failures(wh, conn, out.batch.batch_id, SAMPLE_ROWS * 20)
    docs_url = settings.page_url(out.data_docs) if out.data_docs else None
    checks = std_check_results(resource, out.result.rule_counts, failures, out.gx_counts, docs_url, key,
                               threshold=settings.blocking_min_pass_rate)
    (context.log.warning if out.batch.failed else context.log.info)(
        f"{out.batch.batch_id}: 对账 (交付 = 接收 + 隔离) {out.reconciliation}")
    if out.withheld:
        context.log.warning(f"{out.batch.batch_id}: 暂缓入库 (不合并入基础库): {out.withheld}")
    return MaterializeResult(
        asset_key=key,
        metadata={
            "批次号": out.batch.batch_id,
            "交付行数": out.delivered,
            "接收行数": out.accepted,
            "其中未变沿用": out.carried,
            "隔离行数": out.quarantined,
            "对账": out.reconciliation,
            "合并入基础库": f"否, 暂缓入库: {out.withheld}" if out.withheld else "是",
            "15位身份证号转换数": out.result.converted_id15,
            "dagster/row_count": out.accepted,
            "隔离原因": MetadataValue.md("| 原因 | 数据元 | 行数 |\n|---|---|---|\n" + reasons_md if reasons_md else "无"),
            "dagster/column_schema": _column_schema(std_schema(catalogue, resource),
                                                    {c: e.name for c, e in elements.items()}),
            "预览(已脱敏)": preview(out.result.accepted, elements),
        },
        check_results=checks,
    )


def build_base_asset(catalogue: Catalogue, lib: Library, partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    resources = catalogue.resources_of(lib.code)
    elements: dict[str, Element | None] = {e.code: e for e in lib.elements}
    authorities = []
    for e in lib.elements:
        if e.code in lib.key:
            continue
        auth = catalogue.authority(lib.code, e.code)
        who = catalogue.department(auth).name if isinstance(auth, str) else "按证照类型: " + ", ".join(
            f"{catalogue.codes.get(catalogue.library(lib.code).element(lib.discriminator.element).codelist or '', {}).get(v, v)}→"
            f"{catalogue.department(d).name}" for v, d in auth.items()
        )
        authorities.append(f"{e.name}({e.code}) ← {who}")

    has_copies = any(copies(catalogue, r) for r in resources)

    @asset(
        key=base_key(lib),
        deps=[std_key(r) for r in resources],
        check_specs=[consistency_check_spec(catalogue, lib, base_key(lib), partitions)] if has_copies else [],
        group_name=lib.code,
        partitions_def=partitions,
        kinds={"polars", "sql", *label_kinds("base")},
        owners=[owner(catalogue, d) for d in sorted({r.department for r in resources})],
        tags={"layer": "base"},
        retry_policy=RETRY_POLICY,
        op_tags=MERGE_PRIORITY,
        description=labelled(
            library_label(lib),
            f"{lib.name}: 以{'+'.join(lib.key)}为主键, 每个数据元只取其权威部门的值(一数一源), "
            "每个值记录来源批次与行号; 值变化时新增版本(valid_from/valid_to), 不删除历史。\n\n权威来源:\n"
            + "\n".join(f"- {a}" for a in authorities)
        ),
    )
    def _base(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        return with_batch_date(retry_transient(context, warehouse, lambda: _merge(context, warehouse)),
                               context.partition_key)

    def _merge(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult:
        wh = warehouse.get()
        batch_date = dt.date.fromisoformat(context.partition_key)
        r = merge_library(wh, catalogue, lib.code, batch_date, chunk_keys=warehouse.merge_chunk_keys)
        left_out = night_problems(wh, batch_date).filter(
            pl.col("resource_id").is_in([x.id for x in resources]))
        checks = []
        if has_copies:
            checks.append(consistency_check_result(check_library_consistency(wh, catalogue, lib.code, batch_date)))
        with wh.engine.connect() as conn:
            sample = read_current(wh, conn, lib, limit=PREVIEW_ROWS)
        shown = {c: elements.get(c) for c in sample.columns if not c.endswith(("__batch", "__row"))}
        shown_frame = sample.select([c for c in sample.columns if c in shown or c in ("valid_from",)])
        for row in left_out.iter_rows(named=True):
            context.log.warning(f"{lib.code} {batch_date}: {row['resource_id']} {row['state']}: {row['reason']}")
        context.log.info(f"{lib.code} {batch_date}: 新增 {r.new_entities}, 变更 {r.changed_entities}, "
                         f"未变 {r.unchanged}, 历史重建 {r.rebuilt_entities}")
        return MaterializeResult(
            metadata={
                "合并批次": ", ".join(r.batch_ids) or "无",
                "未合并资源": MetadataValue.md("\n".join(
                    f"- {x['resource_id']}: {x['state']} ({x['reason']})" for x in left_out.iter_rows(named=True))
                    or "无"),
                "本次权威值记录数": r.incoming,
                "新增实体": r.new_entities,
                "变更实体(新版本)": r.changed_entities,
                "未变实体": r.unchanged,
                "历史重建实体(补跑或重交付)": r.rebuilt_entities,
                "状态": "与已合并的批次相同, 未改动" if r.merged_before else "已合并",
                "现行实体数": r.current_rows,
                "历史版本总数": r.total_rows,
                "dagster/row_count": r.current_rows,
                "dagster/column_schema": _column_schema(
                    base_schema(lib),
                    {**{e.code: e.name for e in lib.elements},
                     **{lineage(e.code)[0]: f"{e.name}来源批次" for e in lib.elements},
                     **{lineage(e.code)[1]: f"{e.name}来源行号" for e in lib.elements}},
                ),
                "预览(已脱敏)": preview(shown_frame, elements),
            },
            check_results=checks,
        )

    return _base


def build_assets(
    catalogue: Catalogue, partitions: DailyPartitionsDefinition, settings: Settings | None = None,
) -> list[AssetsDefinition]:
    out: list[AssetsDefinition] = []
    for resource in catalogue.resources:
        out.append(build_resource_assets(catalogue, resource, partitions, settings))
    for lib in catalogue.libraries:
        out.append(build_base_asset(catalogue, lib, partitions))
    return out


def build_checks(catalogue: Catalogue, partitions: DailyPartitionsDefinition) -> list:
    """Checks that span base libraries (关联数据一致性), run after every library they read."""
    return [reference_check(catalogue, lib, partitions, base_key(lib), [base_key(catalogue.library(t))
            for t in sorted({t.library for r in lib.references for t in r.targets} - {lib.code})])
            for lib in catalogue.libraries if lib.references]
