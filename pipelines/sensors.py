"""Sensors: stale-data notices, failed runs and blocking checks, and deliveries landing in file channels.

* ``stale_data_sensor`` reads the state the ``freshness`` check stored in ``quality.freshness``
  (assets/freshness.py, the one place freshness is evaluated) and mails the department and the data
  engineers once when a resource turns stale and once when it is fresh again. When a stored due
  time or deadline passes (or a resource has no row yet) it requests a run of that check alone, so
  the state moves on days without deliveries too; it never evaluates or writes itself.
* ``run_failure_alert`` mails the data engineers when a run fails; a failed blocking check (which
  fails its run) is named as such, with the check's result.
* ``failed_checks_summary_success`` / ``_failure``: tag every finished run with how many of its asset
  checks failed (``gongshu/failed_checks``), so the runs list shows the problem beside the status.
* ``file_arrival_<dept>_<resource>``: a delivery landing in a file channel's folder starts that
  resource's 归集 (ODS, 标准层, its base library) for the folder's batch date. Stopped when first
  deployed unless ``GONGSHU_FILE_ARRIVAL=running`` (the nightly schedule, running by default, reads
  every delivery anyway).

Every sensor keeps its progress in its Dagster cursor, so a restarted daemon neither repeats a
mail nor re-launches a run.
"""

from __future__ import annotations

import datetime as dt
import glob
import hashlib
import json
import re
from collections.abc import Iterator
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
from dagster import (
    AssetSelection,
    DagsterEventType,
    DagsterRunStatus,
    DailyPartitionsDefinition,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    RunStatusSensorContext,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    run_failure_sensor,
    run_status_sensor,
    sensor,
)

from assets.freshness import freshness_check_keys
from assets.keys import base_key, ods_key, std_key
from assets.resources import LandingResource, MailerResource, Settings, WarehouseResource
from catalog.loader import Catalogue
from catalog.models import FileChannel, Resource
from pipelines.runs import FAILED_CHECKS_TAG, FAILED_ERROR_CHECKS_TAG, tag_failed_checks
from quality.freshness import calendar
from quality.freshness.evaluate import Status
from quality.freshness.render import recovered_notice, stale_notice
from quality.freshness.store import outdated_by, read_freshness
from quality.mail import MailError
from quality.templating import render
from warehouse.store import Warehouse

# --- stale data --------------------------------------------------------------------------------


def _load(cursor: str | None) -> dict:
    try:
        data = json.loads(cursor) if cursor else {}
    except json.JSONDecodeError:
        data = {}
    return data if isinstance(data, dict) else {}


def _known(cursor: dict) -> dict[str, str]:
    """Resource → the status last notified about (a cursor of the earlier form kept the stale ones)."""
    if "status" in cursor:
        return dict(cursor["status"])
    return {rid: Status.stale.value for rid in cursor.get("notified", {})}


def stale_lines(state: pl.DataFrame, catalogue: Catalogue) -> list[str]:
    """One readable line per stale resource: department, resource, working days late, last batch date."""
    out = []
    for row in state.filter(pl.col("status") == Status.stale).iter_rows(named=True):
        r = catalogue.resource(row["resource_id"])
        days = row["working_days_overdue"]
        late = f"超期 {days} 个工作日" if days else "超期"
        last = f", 最近批次 {row['last_batch_date']}" if row["last_batch_date"] else ", 尚无成功交付"
        out.append(f"{catalogue.department(r.department).name}「{r.name}」{late}{last}")
    return out


def stale_message(state: pl.DataFrame, catalogue: Catalogue, engineers: list[str], sent: list[str],
                  failed: list[str], unaddressed: list[str], outdated: str | None) -> str:
    """The tick's message, the problem first: which resources are stale and by how much, what was sent,
    and where alerts go nowhere (no GONGSHU_ENGINEER_EMAILS, a department without an address)."""
    stale = stale_lines(state, catalogue)
    parts = [("超期: " + "; ".join(stale)) if stale else f"{state.height} 个资源均未超期"]
    if sent:
        parts.append("已通知: " + ", ".join(sent))
    if failed:
        parts.append("发送失败(下次重试): " + ", ".join(failed))
    if unaddressed:
        parts.append("无收件人, 未通知: " + ", ".join(unaddressed))
    if not engineers:
        parts.append("未设置 GONGSHU_ENGINEER_EMAILS: 数据工程师收不到时效告警")
    if outdated:
        parts.append(f"已请求重新评估 freshness 检查 ({outdated})")
    return "。".join(parts)


def build_stale_data_sensor(catalogue: Catalogue, settings: Settings | None = None) -> SensorDefinition:
    checks = freshness_check_keys(catalogue)
    ids = [r.id for r in catalogue.resources]

    @sensor(
        name="stale_data_sensor",
        minimum_interval_seconds=(settings or Settings()).freshness_interval_s,
        default_status=DefaultSensorStatus.RUNNING,
        target=AssetSelection.checks(*checks),
        description="时效通知: 读取 freshness 检查写入的 quality.freshness, 资源超期或恢复时通知数源部门与数据工程师"
                    "(每次变化一次; 未设置 GONGSHU_ENGINEER_EMAILS 时数据工程师收不到, 每次评估的消息中注明); "
                    "存储的应交付时间或超期时点已过时, 请求单独运行 freshness 检查。"
                    "每次评估的消息列出超期的资源及超期工作日数。默认开启。",
    )
    def stale_data_sensor(
        context: SensorEvaluationContext, warehouse: WarehouseResource, mailer: MailerResource, settings: Settings
    ) -> SensorResult:
        now = calendar.clock()  # the module's clock: tests set it
        state = read_freshness(warehouse.get()).filter(pl.col("resource_id").is_in(ids))
        known = _known(_load(context.cursor))
        status: dict[str, str] = {}
        sent, failed, unaddressed = [], [], []
        for row in state.iter_rows(named=True):
            rid, current, before = row["resource_id"], row["status"], known.get(row["resource_id"])
            stale, was_stale = current == Status.stale, before == Status.stale
            if stale == was_stale or (before is None and not stale):  # no change (or first seen fresh)
                status[rid] = current
                continue
            dept = catalogue.department(catalogue.resource(rid).department)
            to = [*dept.emails, *settings.engineer_emails]
            if not to:
                context.log.warning(f"{rid} {Status(current).label}, 但部门与 GONGSHU_ENGINEER_EMAILS 均无收件人")
                unaddressed.append(f"{rid} {Status(current).label}")
                status[rid] = current
                continue
            subject, html = (stale_notice if stale else recovered_notice)(row, catalogue)
            try:
                mailer.get().send(to, subject, html, category="freshness", reference=rid)
            except MailError as exc:  # the change stays unannounced: the next tick tries again
                context.log.error(str(exc))
                failed.append(rid)
                if before is not None:
                    status[rid] = before
                continue
            status[rid] = current
            sent.append(f"{rid} {Status(current).label}")
        outdated = outdated_by(state, ids, now)
        message = stale_message(state, catalogue, settings.engineer_emails, sent, failed, unaddressed, outdated)
        context.log.info(message)
        requests = [RunRequest(run_key=f"freshness:{outdated}", asset_selection=[], asset_check_keys=checks,
                               tags={"gongshu/trigger": "freshness"})] if outdated else []
        return SensorResult(run_requests=requests, cursor=json.dumps({"status": status}, sort_keys=True),
                            skip_reason=None if requests else SkipReason(message))

    return stale_data_sensor


# --- failed runs and blocking checks -----------------------------------------------------------


def failed_blocking_checks(context: RunFailureSensorContext) -> list[dict]:
    """Blocking checks that failed with ERROR severity in the failed run."""
    records = context.instance.get_records_for_run(
        context.dagster_run.run_id, of_type=DagsterEventType.ASSET_CHECK_EVALUATION, limit=10_000
    ).records
    out = []
    for rec in records:
        ev = rec.event_log_entry.dagster_event.event_specific_data
        if ev.passed or not ev.blocking or ev.severity.value != "ERROR":
            continue
        out.append({"asset": ev.asset_key.to_user_string(), "check": ev.check_name, "partition": ev.partition,
                    "description": ev.description or "",
                    "metadata": {k: str(getattr(v, "value", v)) for k, v in ev.metadata.items()
                                 if not k.startswith("dagster/") and len(str(getattr(v, "value", v))) < 300}})
    return out


def _error_text(error, limit: int = 2000) -> str:
    """An error and its causes, innermost (the department's or the code's own message) last."""
    parts = []
    while error is not None and len(parts) < 5:
        parts.append(error.message.strip())
        error = error.cause
    return "\n↳ ".join(parts)[:limit]


def run_failure_notice(context: RunFailureSensorContext) -> tuple[str, str, list[dict]]:
    """Subject and HTML of the alert for a failed run, and its failed blocking checks."""
    run = context.dagster_run
    partition = run.tags.get("dagster/partition", "")
    checks = failed_blocking_checks(context)
    steps = context.get_step_failure_events()
    what = "阻断性质量检查未通过" if checks else "运行失败"
    subject = f"【公数告警】{what} · {run.job_name}{' · ' + partition if partition else ''} · run {run.run_id[:8]}"
    html = render(
        "run_failure.html.j2", job=run.job_name, run_id=run.run_id, partition=partition, what=what,
        message=context.failure_event.message or "", checks=checks,
        steps=[{"key": e.step_key or "", "error": _error_text(e.event_specific_data.error)}
               for e in steps if e.event_specific_data and e.event_specific_data.error],
    )
    return subject, html, checks


def build_failed_checks_summary(status: DagsterRunStatus) -> SensorDefinition:
    """A run-status sensor that tags each run ending in ``status`` with its failed checks, so a run
    whose checks failed does not read as a plain green "Success" in the runs list (``gongshu run``
    tags its own runs too, for an instance without a daemon)."""
    word = {DagsterRunStatus.SUCCESS: "成功", DagsterRunStatus.FAILURE: "失败"}[status]

    @run_status_sensor(
        name=f"failed_checks_summary_{status.value.lower()}",
        run_status=status,
        monitor_all_code_locations=True,
        default_status=DefaultSensorStatus.RUNNING,
        description=f"运行{word}结束时, 给运行加上未通过的质量检查数 (标签 {FAILED_CHECKS_TAG}, 其中 ERROR 级 "
                    f"{FAILED_ERROR_CHECKS_TAG}), 运行列表中一眼可见。默认开启。",
    )
    def _summary(context: RunStatusSensorContext) -> None:
        tags = tag_failed_checks(context.instance, context.dagster_run.run_id)
        if tags:
            context.log.info(f"run {context.dagster_run.run_id[:8]}: 未通过检查 {tags[FAILED_CHECKS_TAG]}")

    return _summary


def build_run_failure_alert() -> SensorDefinition:
    # CLI runs (execute_in_process) carry no code-location origin; this instance serves gongshu only.
    @run_failure_sensor(
        name="run_failure_alert",
        monitor_all_code_locations=True,
        default_status=DefaultSensorStatus.RUNNING,
        description="运行失败或阻断性质量检查未通过时, 邮件通知数据工程师 (GONGSHU_ENGINEER_EMAILS; 未设置时"
                    "不发送, 每次评估的消息中注明)。默认开启。",
    )
    def run_failure_alert(context: RunFailureSensorContext, mailer: MailerResource,
                          settings: Settings) -> SkipReason | None:
        to = settings.engineer_emails
        if not to:
            message = (f"未设置 GONGSHU_ENGINEER_EMAILS: 运行 {context.dagster_run.run_id[:8]} "
                       f"({context.dagster_run.job_name}) 失败的告警没有发给任何人")
            context.log.warning(message)
            return SkipReason(message)
        subject, html, checks = run_failure_notice(context)
        mailer.get().send(to, subject, html, category="blocking_check" if checks else "run_failure",
                          reference=context.dagster_run.run_id)

    return run_failure_alert


# --- file arrivals -----------------------------------------------------------------------------

_DATE_TOKENS = {"{date:%Y%m%d}": (r"(?P<date>\d{8})", "%Y%m%d", "[0-9]" * 8),
                "{date}": (r"(?P<date>\d{4}-\d{2}-\d{2})", "%Y-%m-%d", "[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9]")}


def channel_glob(ch: FileChannel) -> tuple[str, re.Pattern[str], str]:
    """(glob over every batch date, regex that reads the date back from a relative path, date format)."""
    token = next((t for t in _DATE_TOKENS if t in ch.path), None)
    if token is None:
        raise ValueError(f"文件通道路径 {ch.path!r} 不含批次日期 ({' 或 '.join(_DATE_TOKENS)})")
    date_re, fmt, date_glob = _DATE_TOKENS[token]
    regex = []
    for piece in re.split(r"(\{date(?::%Y%m%d)?\}|\*\*|\*|\?)", ch.path):
        if piece in _DATE_TOKENS:
            regex.append(date_re)
        elif piece == "**":
            regex.append(r".*")
        elif piece == "*":
            regex.append(r"[^/]*")
        elif piece == "?":
            regex.append(r"[^/]")
        else:
            regex.append(re.escape(piece))
    return ch.path.replace(token, date_glob), re.compile("".join(regex) + r"\Z"), fmt


def landed_files(ch: FileChannel, landing: Path) -> dict[dt.date, list[Path]]:
    """Every delivered file of a channel, by the batch date in its path."""
    pattern, regex, fmt = channel_glob(ch)
    out: dict[dt.date, list[Path]] = {}
    for name in glob.glob(str(landing / pattern)):
        path = Path(name)
        m = regex.match(path.relative_to(landing).as_posix())
        if not m or not path.is_file():
            continue
        try:
            day = dt.datetime.strptime(m.group("date"), fmt).date()
        except ValueError:
            continue
        out.setdefault(day, []).append(path)
    return {d: sorted(p) for d, p in out.items()}


def fingerprint(files: list[Path]) -> str:
    """Names, sizes and modification times: a new or rewritten file gives a new fingerprint."""
    h = hashlib.sha256()
    for p in files:
        st = p.stat()
        h.update(f"{p.name}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def _ingested(wh: Warehouse, resource: Resource, since: dt.date) -> dict[dt.date, tuple[set[str], dt.datetime]]:
    """Newest batch per date already in ODS: its file names and when it was read (UTC)."""
    if not wh.exists("ods", "batches"):
        return {}
    schema = {"batch_date": pl.Date(), "seq": pl.Int64(), "sources": pl.String(), "received_at": pl.Datetime("us")}
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT batch_date, seq, sources, received_at FROM {wh.qualified('ods', 'batches')} "
                              "WHERE resource_id = :r AND batch_date >= :d", schema, {"r": resource.id, "d": since})
    newest = frame.sort("seq").group_by("batch_date", maintain_order=True).last()
    return {r["batch_date"]: (set((r["sources"] or "").split("; ")), r["received_at"].replace(tzinfo=dt.UTC))
            for r in newest.iter_rows(named=True)}


def arrival_requests(
    resource: Resource,
    partitions: DailyPartitionsDefinition,
    landing: Path,
    seen: dict[str, str],
    now: dt.datetime,
    wh: Warehouse | None = None,
    settle_s: float = 30.0,
    lookback_days: int = 31,
) -> tuple[list[RunRequest], dict[str, str]]:
    """Run requests for deliveries that landed since ``seen`` ({date: fingerprint}), and the new ``seen``.

    A date is requested once its files have been still for ``settle_s`` (no half-copied files)
    and its partition exists (the day is over in the city); older than ``lookback_days`` it is
    left to backfills. A delivery that ODS already holds (same files, read after their last
    change) is only remembered, not re-run: the nightly job got there first.
    """
    ch = resource.channel
    assert isinstance(ch, FileChannel)
    tz = ZoneInfo(partitions.timezone or "UTC")
    today = now.astimezone(tz).date()
    first = max(today - dt.timedelta(days=lookback_days), partitions.start.date())
    ingested = _ingested(wh, resource, first) if wh is not None else {}
    requests, new_seen = [], {d: v for d, v in seen.items() if dt.date.fromisoformat(d) >= first}
    for day, files in sorted(landed_files(ch, landing).items()):
        if not first <= day < today:  # today's partition does not exist until midnight
            continue
        mtimes = [dt.datetime.fromtimestamp(p.stat().st_mtime, dt.UTC) for p in files]
        if (now - max(mtimes)).total_seconds() < settle_s:
            continue
        fp = fingerprint(files)
        if new_seen.get(day.isoformat()) == fp:
            continue
        new_seen[day.isoformat()] = fp
        done = ingested.get(day)
        if done and done[0] == {p.name for p in files} and done[1] >= max(mtimes):
            continue
        requests.append(RunRequest(
            run_key=f"{resource.id}:{day.isoformat()}:{fp}",
            partition_key=day.isoformat(),
            tags={"department": resource.department, "gongshu/trigger": "file_arrival", "gongshu/resource": resource.id},
        ))
    return requests, new_seen


def build_file_arrival_sensor(
    catalogue: Catalogue, resource: Resource, partitions: DailyPartitionsDefinition, settings: Settings | None = None,
) -> SensorDefinition:
    settings = settings or Settings()
    settle = settings.arrival_settle_s
    lib = catalogue.library(resource.library)
    dept = catalogue.department(resource.department)
    running = settings.file_arrival == "running"

    @sensor(
        name=f"file_arrival_{resource.id}",
        minimum_interval_seconds=settings.arrival_interval_s,
        target=AssetSelection.assets(ods_key(resource), std_key(resource), base_key(lib)),
        default_status=DefaultSensorStatus.RUNNING if running else DefaultSensorStatus.STOPPED,
        description=f"文件到达即归集: {dept.name}「{resource.name}」的交付落入 {resource.channel.path} 后, "
                    f"立即为该批次日期运行贴源层、标准层与{lib.name}, 不等夜间作业。首次部署时"
                    + ("开启" if running else "关闭 (由每晚调度归集; 在界面中开启, 或部署前设 GONGSHU_FILE_ARRIVAL=running)")
                    + "。",
    )
    def _arrival(
        context: SensorEvaluationContext, landing: LandingResource, warehouse: WarehouseResource
    ) -> SensorResult:
        seen = _load(context.cursor)
        requests, seen = arrival_requests(resource, partitions, landing.root(), seen, calendar.clock(), warehouse.get(),
                                          settle_s=settle)
        return SensorResult(run_requests=requests, cursor=json.dumps(seen, sort_keys=True))

    return _arrival


def file_channel_resources(catalogue: Catalogue) -> Iterator[Resource]:
    """Resources delivered as files into dated folders (a path without a date names no batch date)."""
    return (r for r in catalogue.resources
            if isinstance(r.channel, FileChannel) and any(t in r.channel.path for t in _DATE_TOKENS))


def build_sensors(
    catalogue: Catalogue, partitions: DailyPartitionsDefinition, settings: Settings | None = None,
) -> list[SensorDefinition]:
    return [
        build_stale_data_sensor(catalogue, settings),
        build_run_failure_alert(),
        build_failed_checks_summary(DagsterRunStatus.SUCCESS),
        build_failed_checks_summary(DagsterRunStatus.FAILURE),
        *(build_file_arrival_sensor(catalogue, r, partitions, settings) for r in file_channel_resources(catalogue)),
    ]
