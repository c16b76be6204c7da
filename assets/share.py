"""共享/开放 layer: one masked dataset per base library and share/open class the catalogue declares.

``share/<library>_<kind>`` (kind: shared = 无条件共享, restricted = 有条件共享, open = 开放) is
built from the base-library versions valid on the partition date, masked by the policy of
``desensitize/policy.py``, and written to the warehouse layer ``share`` in one transaction:
incrementally (rows whose content hash changed are deleted and inserted; a rerun writes nothing),
never moving a dataset back to an older date than it already shows. Open outputs are also
exported as files (``desensitize/export.py``) after k-anonymity (``desensitize/kanon.py``).

Every asset carries a blocking check that scans what it published for raw identifiers
(``desensitize/leaks.py``); open outputs also check k-anonymity on the exported file.
"""


import datetime as dt
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
import sqlalchemy as sa
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AutomationCondition,
    DailyPartitionsDefinition,
    Failure,
    MaterializeResult,
    MetadataValue,
    TableColumn,
    TableSchema,
    asset,
)

from assets.checks import with_batch_date
from assets.factory import preview
from assets.keys import LAYER_LABELS, base_key, label_kinds, labelled, ods_key, owner, std_key
from assets.resources import OpenDataResource, PseudonymKeyResource, WarehouseResource
from catalog.loader import Catalogue
from catalog.models import Labelled, OutputKind, Sensitivity
from desensitize.export import ExportFiles, read_open_csv, write_open_export
from desensitize.kanon import KAnonymity, smallest_group
from desensitize.leaks import Finding, Needles, scan_file, scan_table, scan_text
from desensitize.masking import MaskedOutput, MissingKeyError, mask_snapshot, with_row_hash
from desensitize.policy import ROW_HASH_COLUMN, OutputPolicy, share_policies
from desensitize.pseudonym import PseudonymKey
from warehouse.base import VALID_FROM, VALID_TO, base_schema
from warehouse.store import Warehouse, sql_type

OUTPUTS = "outputs"  # share.outputs: one row per dataset — its snapshot date, rows, key id, policy
BUILD_LOG = "share_builds"  # audit.share_builds: one row per build
OUTPUTS_SCHEMA: dict[str, pl.DataType] = {
    "output": pl.String(), "library": pl.String(), "kind": pl.String(), "as_of": pl.Date(), "rows": pl.Int64(),
    "key_id": pl.String(), "policy": pl.String(),
}
BUILD_LOG_SCHEMA: dict[str, pl.DataType] = {
    "output": pl.String(), "as_of": pl.Date(), "action": pl.String(), "base_rows": pl.Int64(),
    "rows": pl.Int64(), "inserted": pl.Int64(), "deleted": pl.Int64(), "generalised": pl.Int64(),
    "suppressed": pl.Int64(), "key_id": pl.String(), "policy": pl.String(), "built_at": pl.Datetime("us"),
}


class BuildAction(Labelled):
    """What a build did to its output table (``audit.share_builds.action``)."""

    written = "written", "已写入变化"
    unchanged = "unchanged", "内容未变, 未写入"
    older = "older", "已有更新日期的快照, 未改写"


# --- resources ---------------------------------------------------------------------------------------










# --- storage -----------------------------------------------------------------------------------------


def share_key(policy: OutputPolicy) -> AssetKey:
    return AssetKey(["share", policy.name])


def _table(wh: Warehouse, layer: str, name: str, schema: dict[str, pl.DataType], primary_key=(),
           indexes=()) -> sa.Table:
    # A fresh MetaData each time: a share table's columns follow its policy, which may change.
    sch, tname = wh.table_ref(layer, name)
    t = sa.Table(tname, sa.MetaData(), *[sa.Column(n, sql_type(d), primary_key=n in primary_key) for n, d in schema.items()],
                 schema=sch)
    for i, idx in enumerate(indexes):
        sa.Index(f"ix_{layer}_{name}_{i}", *[t.c[c] for c in idx])
    return t


def share_table(wh: Warehouse, policy: OutputPolicy) -> sa.Table:
    schema = {**policy.schema(), ROW_HASH_COLUMN: pl.String()}
    return _table(wh, "share", policy.name, schema, indexes=[[ROW_HASH_COLUMN]])


def read_snapshot(wh: Warehouse, conn: sa.Connection, policy: OutputPolicy, as_of: dt.date) -> pl.DataFrame:
    """The base-library versions valid on ``as_of`` (valid_from ≤ D < valid_to), for this output's columns."""
    lib = policy.library
    full = base_schema(lib)
    wanted = list(dict.fromkeys([*lib.key, *(c.column for c in policy.columns),
                                 *([lib.discriminator.element] if lib.discriminator else []), VALID_FROM]))
    schema = {c: full[c] for c in wanted}
    if not wh.exists("base", lib.code):
        return pl.DataFrame(schema=schema)
    cols = ", ".join(wh.quote(c) for c in schema)
    return wh.read(
        conn,
        f"SELECT {cols} FROM {wh.qualified('base', lib.code)} WHERE {VALID_FROM} <= :d "
        f"AND ({VALID_TO} IS NULL OR {VALID_TO} > :d) ORDER BY {', '.join(wh.quote(k) for k in lib.key)}",
        schema, {"d": as_of},
    )


@dataclass
class ShareBuild:
    """What one build of one output did."""

    policy: OutputPolicy
    as_of: dt.date
    action: BuildAction
    masked: MaskedOutput
    inserted: int = 0
    deleted: int = 0
    key_id: str | None = None
    files: ExportFiles | None = None
    table_as_of: dt.date | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def frame(self) -> pl.DataFrame:
        return self.masked.frame


def _current_columns(conn: sa.Connection, table: sa.Table) -> list[str] | None:
    insp = sa.inspect(conn)
    if not insp.has_table(table.name, schema=table.schema):
        return None
    return [c["name"] for c in insp.get_columns(table.name, schema=table.schema)]


def build_share_output(
    wh: Warehouse,
    catalogue: Catalogue,
    policy: OutputPolicy,
    as_of: dt.date,
    *,
    key: PseudonymKey | None,
    open_root: Path | None = None,
    needles: Needles | None = None,
) -> ShareBuild:
    """Mask the base rows valid on ``as_of`` and bring ``share.<output>`` (and open files) up to date.

    An output with keyed columns (tokens, format-preserving IDs) is not built without ``key``
    (:class:`MissingKeyError`): nothing is written, so the tokens already published stay as they are.
    """
    if policy.keyed and key is None:
        raise MissingKeyError(policy)
    real_ids = None
    if any(c.rule.spec.startswith("fpe_id") for c in policy.columns):
        real_ids = (needles or Needles.from_warehouse(wh, catalogue)).ids
    with wh.engine.connect() as conn:
        snapshot = read_snapshot(wh, conn, policy, as_of)
    masked = mask_snapshot(policy, snapshot, as_of=as_of, key=key, real_ids=real_ids)
    frame = with_row_hash(masked.frame)
    table = share_table(wh, policy)
    outputs = _table(wh, "share", OUTPUTS, OUTPUTS_SCHEMA, primary_key=["output"])
    log = _table(wh, "audit", BUILD_LOG, BUILD_LOG_SCHEMA)
    fingerprint = policy.fingerprint()
    key_id = key.key_id if key and policy.keyed else None
    build = ShareBuild(policy, as_of, BuildAction.unchanged, masked, key_id=key_id)
    _ensure(wh, [outputs, log])
    with wh.begin() as conn:
        state = conn.execute(sa.text(f"SELECT as_of, rows, key_id, policy FROM {wh.qualified('share', OUTPUTS)} "
                                     "WHERE output = :o"), {"o": policy.name}).one_or_none()
        stored_as_of = _as_date(state[0]) if state else None
        build.table_as_of = stored_as_of
        if stored_as_of is not None and stored_as_of > as_of:
            build.action = BuildAction.older
        else:
            existing = _current_columns(conn, table)
            if existing is not None and existing != [c.name for c in table.columns]:
                conn.execute(sa.text(f"DROP TABLE {wh.qualified('share', policy.name)}"))
                build.notes.append("输出列随策略变化, 表已重建")
                existing = None
            if existing is None:
                wh.create(conn, table)
            build.inserted, build.deleted = _apply_diff(wh, conn, table, policy, frame)
            changed = build.inserted or build.deleted
            row = (as_of, masked.rows_out, key_id, fingerprint)
            if state is None or tuple([stored_as_of, state[1], state[2], state[3]]) != row:
                conn.execute(sa.text(f"DELETE FROM {wh.qualified('share', OUTPUTS)} WHERE output = :o"),
                             {"o": policy.name})
                wh.insert(conn, outputs, pl.DataFrame([{
                    "output": policy.name, "library": policy.library.code, "kind": policy.kind.value,
                    "as_of": as_of, "rows": masked.rows_out, "key_id": key_id, "policy": fingerprint,
                }], schema=OUTPUTS_SCHEMA))
            build.action = BuildAction.written if changed else BuildAction.unchanged
            build.table_as_of = as_of
        k = masked.kanon
        wh.insert(conn, log, pl.DataFrame([{
            "output": policy.name, "as_of": as_of, "action": build.action, "base_rows": masked.rows_in,
            "rows": masked.rows_out, "inserted": build.inserted, "deleted": build.deleted,
            "generalised": k.generalised if k else 0, "suppressed": k.suppressed if k else 0,
            "key_id": key_id, "policy": fingerprint, "built_at": dt.datetime.now(),
        }], schema=BUILD_LOG_SCHEMA))
    if policy.kind == OutputKind.open and open_root is not None:
        build.files = write_open_export(policy, catalogue, masked.frame, open_root, as_of)
    return build


def _ensure(wh: Warehouse, tables: list[sa.Table]) -> None:
    """Create the layer's shared tables once, in a short transaction of their own: share assets run
    in parallel, and a second creator waits for the first one's commit (:meth:`Warehouse.create`),
    which here comes at once instead of after the first output's whole build."""
    with wh.begin() as conn:
        for t in tables:
            wh.create(conn, t)


def _as_date(v) -> dt.date:
    return v if isinstance(v, dt.date) else dt.date.fromisoformat(str(v)[:10])


def _apply_diff(wh: Warehouse, conn: sa.Connection, table: sa.Table, policy: OutputPolicy,
                frame: pl.DataFrame) -> tuple[int, int]:
    """Delete rows whose content hash no longer occurs (as often), insert the new ones; (inserted, deleted)."""
    name = wh.qualified("share", policy.name)
    h = wh.quote(ROW_HASH_COLUMN)
    old = wh.read(conn, f"SELECT {h}, COUNT(*) FROM {name} GROUP BY {h}",
                  {ROW_HASH_COLUMN: pl.String(), "n_old": pl.Int64()})
    new = frame.group_by(ROW_HASH_COLUMN).agg(pl.len().cast(pl.Int64).alias("n_new"))
    diff = new.join(old, on=ROW_HASH_COLUMN, how="full", coalesce=True).with_columns(
        pl.col("n_new").fill_null(0), pl.col("n_old").fill_null(0)
    ).filter(pl.col("n_new") != pl.col("n_old"))
    gone = diff.filter(pl.col("n_old") > 0)
    deleted = int(gone.get_column("n_old").sum()) if gone.height else 0
    if gone.height:
        tmp = wh.temp_table(conn, "gongshu_share_gone", gone.select(ROW_HASH_COLUMN))
        conn.execute(sa.text(f"DELETE FROM {name} WHERE {h} IN (SELECT {h} FROM {tmp})"))
        conn.execute(sa.text(f"DROP TABLE {tmp}"))
    fresh = frame.filter(pl.col(ROW_HASH_COLUMN).is_in(diff.filter(pl.col("n_new") > 0).get_column(ROW_HASH_COLUMN)))
    inserted = wh.insert(conn, table, fresh)
    return inserted, deleted


# --- checks ------------------------------------------------------------------------------------------


def leak_findings(wh: Warehouse, catalogue: Catalogue, build: ShareBuild,
                  texts: dict[str, tuple[str, set[str]]], needles: Needles | None = None) -> tuple[list[Finding], Needles]:
    """Raw identifiers in the stored table, the export files and metadata texts ({where: (text, public columns)})."""
    needles = needles or Needles.from_warehouse(wh, catalogue)
    public = build.policy.public_columns()
    typed = [c for c, t in build.policy.schema().items() if t != pl.String]
    findings = scan_table(wh, "share", build.policy.name, needles, public)
    for path in build.files.all() if build.files else []:
        findings += scan_file(path, needles, public, typed)
    for where, (text, columns) in texts.items():
        findings += scan_text(text, needles, where, columns)
    return findings, needles


def public_preview_columns(catalogue: Catalogue, key: AssetKey) -> set[str]:
    """Columns of an ODS/std/base preview shown verbatim because their element is graded 公开."""
    path = key.path
    for lib in catalogue.libraries:
        public = {e.code for e in lib.elements if e.sensitivity == Sensitivity.public}
        if path == ["base", lib.code]:
            return public
        for r in catalogue.resources_of(lib.code):
            if path == ["std", r.department, r.code]:
                return public
            if path == ["ods", r.department, r.code]:
                return {f.column for f in r.fields if f.element in public}
    return set()


def kanon_check(build: ShareBuild) -> AssetCheckResult:
    """k-anonymity of the exported CSV, read back from disk."""
    policy = build.policy
    k = build.masked.kanon or KAnonymity(policy.k, policy.quasi_identifiers)
    qis = policy.quasi_identifiers
    if build.files is None:
        published = build.frame.select(qis) if qis else build.frame
    else:
        published = read_open_csv(build.files.csv, policy)
    smallest = smallest_group(published, qis) if qis else None
    passed = smallest is None or smallest >= policy.k
    return AssetCheckResult(
        check_name="k_anonymity",
        passed=passed,
        severity=AssetCheckSeverity.ERROR,
        description=f"每个准标识符组合至少出现 {policy.k} 次" if passed else f"存在少于 {policy.k} 行的准标识符组合",
        metadata={
            "k": policy.k,
            "准标识符": ", ".join(qis) or "无",
            "发布行数": published.height,
            "最小组行数": smallest if smallest is not None else 0,
            "组数": k.groups,
            "进一步泛化行数": k.generalised,
            "抑制(未发布)行数": k.suppressed,
            "泛化层级": MetadataValue.json({q: {str(lv): n for lv, n in v.items()} for q, v in k.levels.items()}),
        },
    )


def leak_check(findings: list[Finding], needles: Needles, scanned: list[str],
               reused: bool | None = None) -> AssetCheckResult:
    return AssetCheckResult(
        check_name="no_raw_identifiers",
        passed=not findings,
        severity=AssetCheckSeverity.ERROR,
        description="未发现原始标识符" if not findings else f"发现 {sum(f.count for f in findings)} 处原始标识符",
        metadata={
            "发现": MetadataValue.md("\n".join(f"- {f.markdown()}" for f in findings) or "无"),
            "比对的原始值": f"身份号码 {needles.ids.len():,}, 手机号 {needles.mobiles.len():,}, "
                           f"姓名 {needles.names.len():,}, 地址 {needles.addresses.len():,}"
                           + ("" if reused is None else
                              ("; 取自本批基础库状态已汇集的比对值" if reused else "; 本步骤自基础库汇集")),
            "扫描范围": MetadataValue.md("\n".join(f"- {s}" for s in scanned)),
        },
    )


# --- assets ------------------------------------------------------------------------------------------


def _upstream_previews(context: AssetExecutionContext, catalogue: Catalogue,
                       policy: OutputPolicy) -> dict[str, tuple[str, set[str]]]:
    """The latest Markdown previews of the library's own ODS/std/base assets."""
    keys = [base_key(policy.library)]
    for r in catalogue.resources_of(policy.library.code):
        keys += [ods_key(r), std_key(r)]
    out = {}
    for k in keys:
        event = context.instance.get_latest_materialization_event(k)
        if event is None or event.asset_materialization is None:
            continue
        for label, value in event.asset_materialization.metadata.items():
            text = getattr(value, "value", None)
            if isinstance(text, str) and "|" in text:
                out[f"{k.to_user_string()} 元数据「{label}」"] = (text, public_preview_columns(catalogue, k))
    return out


def build_share_asset(catalogue: Catalogue, policy: OutputPolicy,
                      partitions: DailyPartitionsDefinition) -> AssetsDefinition:
    lib = policy.library
    key = share_key(policy)
    resources = catalogue.resources_of(lib.code)
    specs = [AssetCheckSpec("no_raw_identifiers", asset=key, blocking=True, partitions_def=partitions,
                            description="发布内容(共享表、开放文件、元数据预览)中不得出现基础库的身份号码、手机号、姓名、完整地址原值")]
    if policy.kind == OutputKind.open:
        specs.append(AssetCheckSpec("k_anonymity", asset=key, blocking=True, partitions_def=partitions,
                                    description=f"开放数据每个准标识符组合至少出现 {policy.k} 次(k-匿名)"))
    rows_desc = ("" if policy.discriminator_values is None else
                 f"仅含{lib.discriminator.element}为 {', '.join(policy.discriminator_values) or '(无)'} 的记录; ")
    description = (
        f"{policy.label}脱敏数据集: 由 base/{lib.code} 在分区日期有效的版本生成, 按目录敏感级别与"
        f"{policy.kind.label}策略逐列处理; {rows_desc}"
        + ("准标识符 " + ", ".join(policy.quasi_identifiers) + f" 满足 k={policy.k} 匿名, 导出 CSV/JSON 与数据字典。"
           if policy.kind == OutputKind.open else "假名令牌按密钥稳定, 可跨数据集关联。")
        + "\n\n" + policy.describe_md()
    )
    kinds = {"polars", "sql", *label_kinds("share")} | ({"csv", "json"} if policy.kind == OutputKind.open else set())

    @asset(
        key=key,
        deps=[base_key(lib)],
        check_specs=specs,
        group_name="share",
        partitions_def=partitions,
        kinds=kinds,
        owners=[owner(catalogue, d) for d in sorted({r.department for r in resources})],
        tags={"layer": "share", "library": lib.code, "share_kind": policy.kind.value},
        description=labelled(f"{LAYER_LABELS['share']} · {policy.label}", description),
        automation_condition=AutomationCondition.eager(),
        metadata={"基础库": lib.name, "类别": policy.kind.label, "适用目录属性": ", ".join(policy.classes)},
    )
    def _share(context: AssetExecutionContext, warehouse: WarehouseResource, pseudonym: PseudonymKeyResource,
               open_data: OpenDataResource) -> MaterializeResult:
        wh = warehouse.get()
        as_of = dt.date.fromisoformat(context.partition_key)
        secret = pseudonym.get_or_none() if policy.keyed else None
        if policy.keyed and secret is None:
            # Published empty, every token of yesterday's release would be wiped: fail instead.
            error = MissingKeyError(policy)
            context.log.error(str(error))
            raise Failure(description=str(error), allow_retries=False)
        # the base libraries' raw identifiers: collected once per state of the base libraries for
        # every output of the night (Needles.cached), used for the format-preserving tokens and the scan
        needles, reused = Needles.cached(wh, catalogue)
        build = build_share_output(wh, catalogue, policy, as_of, key=secret, open_root=open_data.root(),
                                   needles=needles)
        m = build.masked
        preview_md = preview(build.frame, {}).value  # already masked: shown as stored
        texts = {f"{key.to_user_string()} 预览": (preview_md, policy.public_columns()),
                 **_upstream_previews(context, catalogue, policy)}
        findings, needles = leak_findings(wh, catalogue, build, texts, needles)
        scanned = [wh.qualified("share", policy.name), *(str(p) for p in (build.files.all() if build.files else [])),
                   *texts]
        checks = [leak_check(findings, needles, scanned, reused)]
        if policy.kind == OutputKind.open:
            checks.append(kanon_check(build))
        for f in findings:
            context.log.error(str(f))
        context.log.info(f"{policy.name} {as_of}: {build.action.label}, 输出 {m.rows_out} 行, "
                         f"新增 {build.inserted}, 删除 {build.deleted}")
        labels = policy.labels()
        metadata = {
            "快照日期": as_of.isoformat(),
            "状态": build.action.label,
            "基础库有效记录数": m.rows_in,
            "本类别纳入记录数": m.rows_selected,
            "输出行数": m.rows_out,
            "写入行数": build.inserted,
            "删除行数": build.deleted,
            "dagster/row_count": m.rows_out,
            "假名化密钥编号": build.key_id or "无(未使用假名化)",
            "脱敏策略": MetadataValue.md(policy.describe_md()),
            "dagster/column_schema": TableSchema(columns=[TableColumn(n, str(t), description=labels.get(n))
                                                          for n, t in policy.schema().items()]),
            "预览(已脱敏)": MetadataValue.md(preview_md),
        }
        if m.fpe_dropped:
            metadata["与真实号码重合而置空的格式保留令牌"] = sum(m.fpe_dropped.values())
        if build.files is not None:
            metadata["开放文件"] = MetadataValue.md("\n".join(f"- `{p}`" for p in build.files.all()))
        if m.kanon is not None:
            metadata["k-匿名: 进一步泛化行数"] = m.kanon.generalised
            metadata["k-匿名: 抑制行数"] = m.kanon.suppressed
        if build.notes:
            metadata["说明"] = "; ".join(build.notes)
        return with_batch_date(MaterializeResult(metadata=metadata, check_results=checks), context.partition_key)

    return _share


def build_share_assets(catalogue: Catalogue, partitions: DailyPartitionsDefinition) -> list[AssetsDefinition]:
    """Every share/open asset of the catalogue (raises PolicyError if a column has no rule)."""
    return [build_share_asset(catalogue, p, partitions) for p in share_policies(catalogue)]
