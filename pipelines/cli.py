"""``gongshu``: the command line of the product.

    gongshu generate --persons 100000 --seed 7 --date 2026-11-21 --out .gongshu/landing
    gongshu run --date 2026-11-21            # the nightly 归集 job for one batch date
    gongshu summary --date 2026-11-21
    gongshu serve-api                        # the demo departments' paged JSON API
    gongshu catalog check [FOLDER] | gongshu catalog schema --out docs/
    gongshu instance                         # write $DAGSTER_HOME/dagster.yaml
    gongshu ui                               # the Dagster UI with the demo API and the Data Docs pages
    gongshu definitions-snapshot [--out tests/snapshots/definitions.yaml]   # the reviewed code location
    gongshu report --date 2026-11-21         # scorecard, 校核 tickets and department reports (and mail)
    gongshu ticket answer JH-GAJ-20261121-0001 --note "已核实并更正" --by 张三
    gongshu ticket import-reply 回复.xlsx | gongshu ticket extend ID --days 5 --approved-by 李四
    gongshu share apply --requester rsj --library person --elements name,mobile --purpose 社保待遇资格认证 --until 2027-12-31
    gongshu share review ID --dept gaj --agree | gongshu share approve ID --by 王局 | gongshu share trace FILE

Errors are reported as one clear message (file, row, field where known) and exit code 2, never
as a traceback. Settings come from the environment as for the code location
(:func:`assets.resources.settings_from_env`), and the commands that open the warehouse, send mail or
need the pseudonymisation key use the code location's own resources (:func:`resources`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


def _date(text: str) -> dt.date:
    try:
        return dt.date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"日期格式应为 YYYY-MM-DD: {text!r}") from None


def _yesterday() -> dt.date:
    from zoneinfo import ZoneInfo

    return dt.datetime.now(ZoneInfo("Asia/Shanghai")).date() - dt.timedelta(days=1)


def settings():
    """The settings of the environment (:class:`assets.resources.Settings`), checked."""
    from assets.resources import settings_from_env

    return settings_from_env()


@contextmanager
def resources(catalogue=None, configured=None) -> Iterator:
    """The resources of the code location (:func:`assets.resources.resources_from_env`), initialised for
    one command: the secrets (``EnvVar``) resolved as in a run, the warehouse disposed at the end."""
    from dagster import build_resources

    from assets.resources import resources_from_env

    with build_resources(resources_from_env(catalogue, configured)) as built:
        yield built


def dagster_home() -> Path:
    """``DAGSTER_HOME``: the Dagster instance folder (``.gongshu/dagster`` by default)."""
    from assets.resources import DEFAULT_HOME

    return Path(os.environ.get("DAGSTER_HOME") or (Path(DEFAULT_HOME) / "dagster")).resolve()


DAGSTER_PG_DRIVER = "postgresql+psycopg2"
"""The driver ``DAGSTER_PG_URL`` must name: dagster-postgres binds the parameter of its ``NOTIFY`` on the
client, which psycopg 2 does and psycopg 3 — SQLAlchemy 2.1's driver for a plain ``postgresql://`` —
does not (the run's first event fails: ``syntax error at or near "$1"``)."""


def dagster_pg_url() -> str | None:
    """``DAGSTER_PG_URL`` when set, checked: a PostgreSQL URL with the psycopg 2 driver (ValueError, in
    Chinese and without the URL, which carries the password, otherwise)."""
    url = os.environ.get("DAGSTER_PG_URL")
    if not url:
        return None
    import sqlalchemy as sa

    try:
        driver = sa.engine.make_url(url).drivername
    except sa.exc.ArgumentError:
        raise ValueError("DAGSTER_PG_URL 不是有效的数据库地址 (应为 postgresql+psycopg2://用户:密码@主机:端口/库)") from None
    if driver != DAGSTER_PG_DRIVER:
        raise ValueError(f"DAGSTER_PG_URL 须以 {DAGSTER_PG_DRIVER}:// 开头: Dagster 的 PostgreSQL 存储 (dagster-postgres) "
                         f"需要 psycopg2 驱动, 而 {driver}:// 在 SQLAlchemy 2.1 下用 psycopg 3, 运行的第一个事件即失败")
    return url


def cmd_instance(args: argparse.Namespace) -> int:
    """Write $DAGSTER_HOME/dagster.yaml: the repo's dagster.yaml, plus PostgreSQL storage if configured."""
    pg = dagster_pg_url()
    home = dagster_home()
    home.mkdir(parents=True, exist_ok=True)
    text = (REPO_ROOT / "dagster.yaml").read_text(encoding="utf-8")
    if pg:
        text += "\nstorage:\n  postgres:\n    postgres_url:\n      env: DAGSTER_PG_URL\n"
    (home / "dagster.yaml").write_text(text, encoding="utf-8")
    os.environ["DAGSTER_HOME"] = str(home)
    from dagster import DagsterInstance

    # Open it once: its storage is created (or upgraded) here, by one process, before the processes that
    # share it start at once — the UI, the daemon, Celery workers (two workers creating a new SQLite
    # storage together left it with two Alembic heads).
    with DagsterInstance.get():
        pass
    # Dagster's newsletter sign-up dialog opens by itself a second after a page loads, over whatever the
    # user was about to click; a data bureau's closed network has no use for it. Mark it seen once here.
    from dagster._core.nux import set_nux_seen

    set_nux_seen()
    if not args.quiet:
        kind = "PostgreSQL (DAGSTER_PG_URL)" if pg else "SQLite (内置)"
        print(f"Dagster 实例: {home} · 存储: {kind}")
    return 0


def cmd_ui(args: argparse.Namespace) -> int:
    """The Dagster UI (``dagster dev``) with the demo API and the pages server it links to (pipelines.ui)."""
    from catalog.loader import cached_catalogue
    from pipelines.demo_api import serve_in_thread
    from pipelines.runs import WORKSPACE
    from pipelines.ui import api_variables, dagster_dev, serve_pages

    cmd_instance(argparse.Namespace(quiet=False))
    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    env = dict(os.environ)
    servers = []
    if not args.no_demo_api:
        server, base = serve_in_thread(configured.landing_path, args.host, args.api_port)
        servers.append(server)
        env.update(api_variables(catalogue, base, env))
        print(f"示范数据接口: {base} ({', '.join(api_variables(catalogue, base, os.environ)) or '接口地址已设置'})")
    home = configured.home_path.resolve()
    pages = serve_pages(home, args.host, args.docs_port)
    servers.append(pages)
    env.setdefault("GONGSHU_DOCS_URL", f"http://{args.host}:{pages.server_address[1]}")
    env["GONGSHU_HOME"] = str(home)
    print(f"GX 数据文档与部门报告: {env['GONGSHU_DOCS_URL']}/gx_docs/ · /reports/")
    print(f"Dagster 界面: http://{args.host}:{args.port}")
    try:
        return dagster_dev(WORKSPACE, dagster_home(), args.host, args.port, env)
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


def cmd_generate(args: argparse.Namespace) -> int:
    from catalog.loader import load_catalogue
    from generator import generate

    catalogue = load_catalogue(args.catalog or settings().catalogue_path)
    start = time.perf_counter()
    manifest = generate(catalogue, persons=args.persons, seed=args.seed, date=args.date, out=Path(args.out),
                        days=args.days, progress=not args.quiet, change_rate=args.change_rate,
                        incremental=args.incremental)
    print(f"已生成 {args.persons:,} 人的示范城市交付于 {args.out} ({time.perf_counter() - start:.1f} 秒); 真值清单: {manifest}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Launch the nightly job for each batch date through the Dagster instance and the code location
    (pipelines.runs): the job's executor runs it in the code server's run worker, as a run the UI can
    re-execute. Prints the run's events at ``GONGSHU_LOG_LEVEL`` and up, a line per run, then the
    summary; exits 1 when a run failed."""
    from dagster import DagsterInstance

    from assets.keys import first_batch_date
    from catalog.loader import cached_catalogue
    from pipelines.runs import FAILED_CHECKS_TAG, NightlyRuns, tag_failed_checks

    configured = settings()  # a malformed setting stops here, naming its variable
    catalogue = cached_catalogue(configured.catalogue_path)  # a broken catalogue stops here, with its message
    days = run_dates(args)
    first = first_batch_date(catalogue)
    if days[0] < first:
        raise ValueError(f"批次日期 {days[0]} 早于目录的首个批次日期 {first} (city.first_batch_date): 每日分区从该日开始; "
                         "补跑更早的日期请先在 catalogue.yaml 中前移该日期 (docs/catalogue.md)")
    if configured.executor == "celery":
        check_workers(configured)
    note = run_dates_note(args, days, catalogue)
    if note:
        print(note, flush=True)
    cmd_instance(argparse.Namespace(quiet=True))
    level = configured.log_level_number
    log = dagster_home() / "logs" / "gongshu-run.log"
    failed = 0
    with DagsterInstance.get() as instance, NightlyRuns(instance, log=log) as runs:
        for day in days:
            start = time.perf_counter()
            run_id = runs.launch(day, console_logging(configured.log_level))
            try:
                result = runs.wait(run_id, echo=lambda line: print(line, file=sys.stderr, flush=True), level=level)
            except KeyboardInterrupt:
                print(f"归集 {day} · run {run_id[:8]} · 已中断, 正在终止运行", file=sys.stderr, flush=True)
                runs.terminate(run_id)
                raise
            unread = failed_deliveries(day) if result.success else []
            checks = tag_failed_checks(instance, run_id).get(FAILED_CHECKS_TAG)  # no daemon needed
            if result.success and not unread:
                status = "成功" + (f" · 未通过检查 {checks}" if checks else "")
            elif result.success:
                # every step ran, but a department's delivery could not be read: the night is incomplete
                status = f"交付失败: {', '.join(unread)} (重新运行该日期即可补入)"
            elif result.failed_steps:
                status = f"失败步骤: {', '.join(result.failed_steps)}"
            else:
                status = f"失败: {result.reason or '运行未完成'} (进程输出: {log})"
            print(f"归集 {day} · run {run_id[:8]} · {time.perf_counter() - start:.1f} 秒 · {status}", flush=True)
            failed += 0 if result.success and not unread else 1
            if result.success and day == days[-1]:  # catching up several nights: the latest one's extracts
                failed += deliver_shares(instance, runs, day, level)
    if not args.no_summary:
        print_summary(days[-1])
    return 1 if failed else 0


def check_workers(configured) -> None:
    """Before a run on Celery workers: the broker must answer (else one clear error); without a worker
    on the queue the run would wait for one, so say so."""
    from assets.resources import celery_broker_url
    from pipelines.workers import check_broker, listening_workers, worker_app

    url = celery_broker_url()
    check_broker(url)
    app = worker_app(configured, url)
    try:
        workers = listening_workers(app, configured.celery_queue)
    finally:
        app.close()
    if workers:
        print(f"Celery 执行器: 队列 {configured.celery_queue} 上有 {len(workers)} 个工作进程", file=sys.stderr)
    else:
        print(f"Celery 执行器: 队列 {configured.celery_queue} 上暂无工作进程应答, 运行将等待到有工作进程启动 "
              "(make worker, 见 docs/deploy.md)", file=sys.stderr, flush=True)


def deliver_shares(instance, runs, day: dt.date, level: int) -> int:
    """After a successful night: the 共享申请 extracts of ``day``, one ``share_delivery`` run per active
    application (what ``share_applications_sensor`` requests under the daemon); failed runs."""
    from assets.share_applications import AS_OF_TAG, DELIVERY_JOB, PARTITIONS, sync_applications
    from catalog.loader import cached_catalogue
    from quality.freshness.calendar import city_zone, clock
    from sharing.overdue import escalate

    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    with resources(catalogue, configured) as r:
        today = clock().astimezone(city_zone(catalogue)).date()
        wanted, add, delete, expired = sync_applications(instance, r.warehouse, today)
        for a in escalate(r.warehouse.get(), catalogue, today, r.mailer.get(), configured.engineer_emails):
            print(f"共享申请 {a} · 意见或审批超期, 已邮件通知", flush=True)
    if add:
        instance.add_dynamic_partitions(PARTITIONS.name, add)
    for key in delete:
        instance.delete_dynamic_partition(PARTITIONS.name, key)
    for a in expired:
        print(f"共享申请 {a} · 已到期, 停止提供", flush=True)
    failed = 0
    for app_id in wanted:
        start = time.perf_counter()
        run_id = runs.launch_partition(DELIVERY_JOB, app_id, tags={AS_OF_TAG: day.isoformat()})
        result = runs.wait(run_id, echo=lambda line: print(line, file=sys.stderr, flush=True), level=level)
        status = "成功" if result.success else f"失败: {', '.join(result.failed_steps) or result.reason}"
        print(f"共享提取 {app_id} {day} · run {run_id[:8]} · {time.perf_counter() - start:.1f} 秒 · {status}", flush=True)
        failed += 0 if result.success else 1
    return failed


def failed_deliveries(day: dt.date) -> list[str]:
    """Resources whose delivery for ``day`` could not be read (the run itself went on without them)."""
    from catalog.loader import cached_catalogue
    from warehouse.std import night_problems

    configured = settings()
    with resources(cached_catalogue(configured.catalogue_path), configured) as r:
        problems = night_problems(r.warehouse.get(), day)
    return problems.filter(problems.get_column("state") == "交付失败").get_column("resource_id").to_list()


def console_logging(level: str) -> dict:
    """The run's console logger at ``GONGSHU_LOG_LEVEL`` (default WARNING; also what ``gongshu run``
    prints of the run's events, the full event log staying in the Dagster instance and the UI): what
    the run worker writes to the code server's output (the ``gongshu run`` log file, or the terminal of
    ``dagster dev`` for a re-execution)."""
    return {"loggers": {"console": {"config": {"log_level": level}}}}


def run_dates(args: argparse.Namespace) -> list[dt.date]:
    """The batch dates to run, oldest first: ``--days`` ending at ``--date``, plus with ``--manifest``
    every date the generated city delivered on (a resource that last delivered weeks ago included)."""
    from quality.detection import delivery_dates

    delivered = delivery_dates(Path(args.manifest)) if args.manifest else []
    end = args.date or (max(delivered) if delivered else _yesterday())
    return sorted({end - dt.timedelta(days=i) for i in range(args.days)} | {d for d in delivered if d <= end})


def run_dates_note(args: argparse.Namespace, days: list[dt.date], catalogue=None) -> str | None:
    """One line saying why ``gongshu run`` runs batch dates before its ``--days`` window (a resource of the
    ``--manifest`` city last delivered then, e.g. the stale one); None when it runs only the window."""
    from quality.detection import deliveries_by_date

    if not days or not args.manifest:
        return None
    end = days[-1]
    first = end - dt.timedelta(days=args.days - 1)
    extra = [d for d in days if d < first]
    if not extra:
        return None
    by_date = deliveries_by_date(Path(args.manifest))

    def name(rid: str) -> str:
        resource = next((r for r in catalogue.resources if r.id == rid), None) if catalogue else None
        return f"{catalogue.department(resource.department).name}「{resource.name}」" if resource else rid

    parts = []
    for d in extra:
        rids = by_date.get(d, [])
        shown = "、".join(name(rid) for rid in rids[:3]) + (f" 等 {len(rids)} 项资源" if len(rids) > 3 else "")
        parts.append(f"{d} ({shown}在该日交付)")
    window = f"{first} 至 {end}" if args.days > 1 else str(end)
    return (f"另运行早于 --days {args.days} ({window}) 的 {len(extra)} 个批次日期: {'; '.join(parts)} — "
            "--manifest 运行示范城市的每个交付日期, 先将这些交付入库, 其时效才按实际交付日判断")


def print_summary(day: dt.date) -> None:
    from catalog.loader import cached_catalogue
    from pipelines.summary import summary_lines
    from quality.freshness.calendar import city_zone
    from quality.freshness.render import freshness_lines, summary_time
    from quality.report.period import report_lines

    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    with resources(catalogue, configured) as r:
        wh = r.warehouse.get()
        for line in summary_lines(wh, catalogue, day):
            print(line)
        for line in freshness_lines(wh, catalogue, summary_time(day, city_zone(catalogue))):
            print(line)
        for line in report_lines(wh, catalogue, day, configured.reports):
            print(line)
    print(f"\n数仓: {wh.safe_url}\n交付目录: {configured.landing_path.resolve()}\nDagster 实例: {dagster_home()}"
          "\n界面: make ui → http://127.0.0.1:3000")


def cmd_summary(args: argparse.Namespace) -> int:
    print_summary(args.date)
    return 0


def cmd_score_detection(args: argparse.Namespace) -> int:
    """Compare the pipeline's findings with the generator's ground truth; exit 1 unless perfect."""
    from catalog.loader import cached_catalogue
    from quality.detection import findings, format_score, load_manifest, score

    _, truth = load_manifest(Path(args.manifest))
    dates = sorted(set(truth.get_column("batch_date").drop_nulls().to_list()))
    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    with resources(catalogue, configured) as r:
        wh = r.warehouse.get()
        found = findings(wh, catalogue, dates, stale=stale_resources(wh, catalogue, max(dates)),
                         volume_ratio=configured.volume_min_ratio)
    s = score(truth, found)
    print(f"\n缺陷检出评估 · {args.manifest}")
    for line in format_score(s):
        print(line)
    if args.verbose:
        for name, frame in (("漏报", s.missed), ("误报", s.false_positives)):
            for r in frame.head(20).iter_rows(named=True):
                print(f"  {name}: {r}")
    print("全部类别精确率与召回率均为 1.0" if s.perfect else "存在漏报或误报")
    return 0 if s.perfect else 1


def stale_resources(wh, catalogue, day: dt.date) -> list[str]:
    """Resources stale at the end of ``day`` (the freshness rules of quality.freshness)."""
    from quality.freshness.calendar import city_zone
    from quality.freshness.evaluate import Status
    from quality.freshness.render import summary_time
    from quality.freshness.store import evaluate_catalogue

    now = summary_time(day, city_zone(catalogue))
    return [f.resource_id for f in evaluate_catalogue(wh, catalogue, now) if f.status == Status.stale]


def cmd_report(args: argparse.Namespace) -> int:
    """Score the batch date, bring the 校核 tickets up to it, write and mail every department's report."""
    from catalog.loader import cached_catalogue
    from quality.config import load_config
    from quality.report.context import report_reference
    from quality.report.period import outcome_lines, produce_reports
    from quality.scorecard.period import run_scorecard
    from quality.scorecard.render import markdown_table
    from quality.scorecard.store import previous_totals
    from quality.tickets.sync import sync_tickets

    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    config = load_config(catalogue.root, configured.scorecard)
    with resources(catalogue, configured) as r:
        wh = r.warehouse.get()
        previous = previous_totals(wh, args.date)
        references = {d.code: report_reference(catalogue, d.code, args.date) for d in catalogue.departments}
        sync = sync_tickets(wh, catalogue, args.date, config, references)  # R counts them: first
        card = run_scorecard(wh, catalogue, args.date, config, run_id=f"cli-{time.strftime('%Y%m%dT%H%M%S')}")
        print(f"校核工单 · {args.date}: 新开 {len(sync.opened)} · 修复 {len(sync.fixed)} · 新超期 {len(sync.overdue)}")
        print(markdown_table(card, catalogue, previous))
        run = produce_reports(wh, catalogue, args.date, config, mailer=r.mailer.get(), key=r.pseudonym.get_or_none(),
                              send=not args.no_send, resend=args.resend, root=configured.reports,
                              engineers=configured.engineer_emails)
        for line in outcome_lines(run, catalogue):
            print(line)
    return 0


def cmd_ticket(args: argparse.Namespace) -> int:
    """校核 tickets: answer, import a reply workbook, extend with approval, close, list."""
    from catalog.loader import cached_catalogue

    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    with resources(catalogue, configured) as r:
        return _ticket(args, r.warehouse.get(), catalogue, configured.scorecard)


def _ticket(args: argparse.Namespace, wh, catalogue, scorecard_env: dict[str, str]) -> int:
    from quality.config import load_config
    from quality.freshness.calendar import city_zone
    from quality.terminal import pad
    from quality.tickets import commands as tk
    from quality.tickets.store import read_tickets
    from quality.tickets.transitions import ACTIVE, TicketError, TicketKind, TicketStatus

    tz = city_zone(catalogue)
    try:
        if args.action == "answer":
            t = tk.answer_ticket(wh, args.id, args.note, args.by, tz=tz)
            late = "" if t["resolved_on_time"] in (None, True) else " (已超过校核期限)"
            print(f"校核单 {t['ticket_id']} 已登记答复{late}; 状态: {TicketStatus(t['status']).label}")
        elif args.action == "import-reply":
            out = tk.import_reply(wh, Path(args.file), tz=tz)
            print(f"已登记答复 {len(out.answered)} 件, 未填写 {out.blank} 件, 未处理 {len(out.skipped)} 件")
            for ticket_id, why in out.skipped:
                print(f"  {ticket_id}: {why}")
        elif args.action == "extend":
            t = tk.extend_ticket(wh, args.id, args.days, args.approved_by, load_config(catalogue.root, scorecard_env),
                                 note=args.note, tz=tz)
            print(f"校核单 {t['ticket_id']} 延期 {args.days} 个工作日 (合计 {t['extension_days']}), "
                  f"新期限 {t['due_date']}, 批准人 {t['extended_by']}; 状态: {TicketStatus(t['status']).label}")
        elif args.action == "close":
            t = tk.close_ticket(wh, args.id, args.by, args.note, tz=tz)
            print(f"校核单 {t['ticket_id']} 已关闭 ({args.by})")
        else:
            import polars as pl

            rows = read_tickets(wh, department=args.department)
            rows = rows.filter(pl.col("status").is_in(args.status or list(ACTIVE)))
            for r in rows.iter_rows(named=True):
                print(f"{r['ticket_id']}  {pad(TicketStatus(r['status']).label, 6)}  期限 {r['due_date']}  "
                      f"{pad(TicketKind(r['kind']).label, 12)}  {r['resource_id']}  {r['item_labels']}")
            print(f"共 {rows.height} 件")
    except TicketError as exc:
        print(f"错误: {exc}", file=sys.stderr)
        return 2
    return 0


def cmd_share(args: argparse.Namespace) -> int:
    """共享申请 and 依申请开放: apply, opinion, approval, revocation, list, show, trace, report."""
    from catalog.loader import cached_catalogue

    configured = settings()
    catalogue = cached_catalogue(configured.catalogue_path)
    with resources(catalogue, configured) as r:
        return _share(args, r, catalogue, configured)


def _share(args: argparse.Namespace, r, catalogue, configured) -> int:
    from quality.freshness.calendar import city_zone
    from sharing import commands as sc
    from sharing import store
    from sharing.workflow import ApplicationError, ApplicationKind, ApplicationStatus, Decision, RequesterType

    wh = r.warehouse.get()
    tz = city_zone(catalogue)
    try:
        if args.action == "apply":
            kind = ApplicationKind.open if args.open else ApplicationKind.share
            rtype = RequesterType(args.requester_type) if args.requester_type else (
                RequesterType.citizen if args.open else RequesterType.department)
            done = sc.apply(wh, catalogue, requester=args.requester, library=args.library,
                            elements=args.elements.split(","), purpose=args.purpose, until=args.until,
                            row_filter=args.filter, kind=kind, requester_type=rtype,
                            requester_name=args.requester_name, not_collected=args.not_collected,
                            scenario=args.scenario, security_measures=args.measures, linkage=args.linkage,
                            deadlines=configured.share_deadlines(), tz=tz)
            a = done.application
            print(f"申请编号 {a['application_id']} · {kind.label} · {a['requester_name']} · "
                  f"状态: {ApplicationStatus(a['status']).label}"
                  + (f" · 数源部门意见期限 {a['opinion_due']}" if a["opinion_due"] else ""))
            for e in done.elements:
                print(f"  {e['element_name']}({e['element']}) {e['share_class']}: {Decision(e['decision']).label}"
                      + (f" — {e['reason']}" if e["reason"] else "")
                      + (f" (待 {e['authority']} 出具意见)" if e["decision"] == Decision.pending.value else ""))
        elif args.action == "review":
            a = sc.review(wh, args.id, dept=args.dept, agree=args.agree, note=args.note,
                          elements=args.elements.split(",") if args.elements else None,
                          deadlines=configured.share_deadlines(), tz=tz).application
            print(f"申请 {a['application_id']} 已登记 {args.dept} 的意见 ({'同意' if args.agree else '不同意'}); "
                  f"状态: {ApplicationStatus(a['status']).label}"
                  + (f" · 审批期限 {a['approval_due']}" if a["status"] == "approval" else ""))
        elif args.action in ("approve", "reject"):
            a = sc.decide(wh, args.id, approve=args.action == "approve", by=args.by, note=args.note).application
            print(f"申请 {a['application_id']} {'已批准' if args.action == 'approve' else '未批准'} ({args.by}); "
                  f"状态: {ApplicationStatus(a['status']).label}")
        elif args.action == "revoke":
            a = sc.revoke(wh, args.id, by=args.by, note=args.note).application
            print(f"申请 {a['application_id']} 已撤销 ({args.by}), 次日起停止提供")
        elif args.action == "list":
            apps = store.read_applications(wh, status=args.status)
            for a in apps.iter_rows(named=True):
                due = a["opinion_due"] if a["status"] == "opinion" else a["approval_due"] if a["status"] == "approval" else None
                print(f"{a['application_id']}  {ApplicationStatus(a['status']).label:<8}  {a['requester_name']}  "
                      f"{a['library']}  有效期至 {a['valid_until']}" + (f"  期限 {due}" if due else "")
                      + f"  用途: {a['purpose']}")
            print(f"共 {apps.height} 件")
        elif args.action == "show":
            for line in show_lines(wh, args.id):
                print(line)
        elif args.action == "trace":
            return _share_trace(args, r, catalogue, wh)
        elif args.action == "report":
            from sharing.report import write_use_report

            for path in write_use_report(wh, args.id, Path(args.out) if args.out else configured.reports):
                print(f"使用报告: {path}")
    except ApplicationError as exc:
        print(f"错误: {exc}", file=sys.stderr)
        return 2
    return 0


def _share_trace(args: argparse.Namespace, r, catalogue, wh) -> int:
    """Name the application a leaked file came from (exit 0), or say it cannot (exit 1), with the evidence;
    ``--expect ID``: exit 1 too when the application named is another one."""
    from sharing.trace import TraceError, trace_file

    if args.expect is not None and not args.expect.strip():
        print("错误: --expect 需要预期的申请编号", file=sys.stderr)
        return 2
    key = r.pseudonym.get_or_none()
    if key is None:
        print("错误: 溯源需要假名化密钥 (GONGSHU_PSEUDONYM_KEY): 指纹由它按申请派生", file=sys.stderr)
        return 2
    try:
        t = trace_file(wh, Path(args.file), key, actor=args.by, catalogue=catalogue)
    except TraceError as exc:
        print(f"错误: {exc}", file=sys.stderr)
        return 2
    for line in t.lines():
        print(line)
    if t.application is None:
        return 1
    expected = args.expect.strip() if args.expect is not None else None
    if expected is not None and t.application["application_id"] != expected:
        print(f"错误: 溯源结果为申请 {t.application['application_id']}, 不是预期的申请 {expected}", file=sys.stderr)
        return 1
    return 0


def show_lines(wh, application_id: str) -> list[str]:
    from sharing import store
    from sharing.report import event_label
    from sharing.workflow import ApplicationError, ApplicationKind, ApplicationStatus, Decision

    apps = store.read_applications(wh, application_id=application_id.strip())
    if apps.is_empty():
        raise ApplicationError(f"没有编号为 {application_id} 的申请")
    a = apps.row(0, named=True)
    out = [f"申请 {a['application_id']} · {ApplicationKind(a['kind']).label} · 状态: {ApplicationStatus(a['status']).label}",
           f"  申请方: {a['requester_name']} ({a['requester']}, {a['requester_type']})",
           f"  基础库: {a['library']} · 用途: {a['purpose']} · 有效期至 {a['valid_until']}"
           + (f" · 行范围: {a['row_filter']}" if a["row_filter"] else "")
           + (f" · 应用场景: {a['scenario']} · 安全措施: {a['security_measures']}" if a["scenario"] else ""),
           f"  提交: {a['submitted_at']:%Y-%m-%d %H:%M} UTC · 意见期限 {a['opinion_due'] or '—'} · "
           f"审批期限 {a['approval_due'] or '—'}"]
    if a["decided_by"]:
        out.append(f"  决定: {a['decided_by']} {a['decided_at']:%Y-%m-%d %H:%M} UTC {a['decision_note'] or ''}")
    out.append("  数据元:")
    for e in store.read_elements(wh, application_id=a["application_id"]).iter_rows(named=True):
        out.append(f"    {e['element_name']}({e['element']}) {e['share_class']} · 权威部门 {e['authority'] or '—'} · "
                   f"{Decision(e['decision']).label}" + (f" — {e['reason']}" if e["reason"] else "")
                   + (f" · 意见: {e['opinion_note']}" if e["opinion_note"] else ""))
    out.append("  审计记录:")
    for ev in store.read_events(wh, a["application_id"]).iter_rows(named=True):
        out.append(f"    {ev['at']:%Y-%m-%d %H:%M} {event_label(ev['action'])} · {ev['actor'] or ''}" + (f" · {ev['note']}" if ev["note"] else ""))
    ex = store.read_extracts(wh, a["application_id"])
    for x in ex.iter_rows(named=True):
        out.append(f"    {x['at']:%Y-%m-%d %H:%M} 提取 {x['as_of']} · {x['rows']} 行 · {x['folder']}")
    return out


def cmd_serve_api(args: argparse.Namespace) -> int:
    from pipelines.demo_api import make_server

    server = make_server(Path(args.landing) if args.landing else settings().landing_path, args.host, args.port,
                         os.environ.get(args.token_env) if args.token_env else None)
    print(f"示范数据接口: http://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


def cmd_catalog(args: argparse.Namespace) -> int:
    from catalog.loader import load_catalogue
    from catalog.schema import write_schemas

    if args.action == "schema":
        for path in write_schemas(Path(args.out)):
            print(f"已写出 {path}")
        return 0
    cat = load_catalogue(args.folder or settings().catalogue_path)
    print(f"目录有效: {cat.city.city.name} · {len(cat.departments)} 个部门 · {len(cat.libraries)} 个基础库 · "
          f"{len(cat.resources)} 个资源 · {sum(len(lib.elements) for lib in cat.libraries)} 个数据元")
    return 0


def cmd_definitions_snapshot(args: argparse.Namespace) -> int:
    """The reviewed snapshot of the code location (pipelines.snapshot): the demo catalogue with default
    settings, whatever this environment's GONGSHU_* variables hold; printed, or written to ``--out``."""
    from pipelines.snapshot import canonical_snapshot

    text = canonical_snapshot()
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text, encoding="utf-8", newline="\n")
        print(f"已写出代码位置快照 {out} (请用 git diff 审阅变化)")
    else:
        sys.stdout.write(text)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="gongshu", description="公数: 公共数据平台归集、质量、脱敏流水线")
    sub = p.add_subparsers(dest="command", required=True)

    g = sub.add_parser("generate", help="生成示范城市各部门的交付(含注入缺陷与真值清单)")
    g.add_argument("--persons", type=int, default=100_000)
    g.add_argument("--seed", type=int, default=20261121)
    g.add_argument("--date", type=_date, default=None, help="批次日期 (默认: 昨天)")
    g.add_argument("--days", type=int, default=1, help="连续生成的批次天数, 截止 --date")
    g.add_argument("--change-rate", type=float, default=None,
                   help="之后每天各资源变更值的实体比例 (默认: synthetic.yaml 的 change_rate)")
    g.add_argument("--incremental", action="store_true", default=None,
                   help="之后各天如首次全量归集后的日常: 各资源每天交付 (文件与接口全量重交, 前置库只交变更行), "
                        "重复首日的缺陷, 不截断, 只有 --change-rate 比例的实体变更; "
                        "首日全量 + 次日约 1%% 变更: --days 2 --change-rate 0.01 --incremental")
    g.add_argument("--out", default=None, help="交付根目录 (默认: GONGSHU_LANDING)")
    g.add_argument("--catalog", default=None)
    g.add_argument("--quiet", action="store_true")
    g.set_defaults(func=cmd_generate)

    r = sub.add_parser("run", help="运行每晚归集作业")
    r.add_argument("--date", type=_date, default=None, help="批次日期 (默认: 昨天)")
    r.add_argument("--days", type=int, default=1, help="连续运行的批次天数, 截止 --date")
    r.add_argument("--manifest", default=None,
                   help="生成器的真值清单: 另外运行其中每个有交付的批次日期 (缺省 --date 取清单中最晚的日期)")
    r.add_argument("--no-summary", action="store_true")
    r.set_defaults(func=cmd_run)

    s = sub.add_parser("summary", help="打印某批次日期的归集汇总")
    s.add_argument("--date", type=_date, default=None)
    s.set_defaults(func=cmd_summary)

    d = sub.add_parser("score-detection", help="对照生成器真值清单评估缺陷检出 (精确率/召回率)")
    d.add_argument("--manifest", required=True)
    d.add_argument("--verbose", action="store_true")
    d.set_defaults(func=cmd_score_detection)

    a = sub.add_parser("serve-api", help="启动示范部门的分页 JSON 接口")
    a.add_argument("--landing", default=None)
    a.add_argument("--host", default="127.0.0.1")
    a.add_argument("--port", type=int, default=8765)
    a.add_argument("--token-env", default=None, help="要求 Bearer 令牌, 令牌取自该环境变量")
    a.set_defaults(func=cmd_serve_api)

    c = sub.add_parser("catalog", help="校验目录或导出 JSON Schema")
    c.add_argument("action", choices=["check", "schema"])
    c.add_argument("folder", nargs="?", default=None)
    c.add_argument("--out", default="docs")
    c.set_defaults(func=cmd_catalog)

    q = sub.add_parser("report", help="质量评分、校核工单同步, 生成并发送部门质量报告")
    q.add_argument("--date", type=_date, default=None, help="批次日期 (默认: 昨天)")
    q.add_argument("--no-send", action="store_true", help="只写出报告文件, 不发送邮件")
    q.add_argument("--resend", action="store_true", help="已发送过的报告也重新发送")
    q.set_defaults(func=cmd_report)

    t = sub.add_parser("ticket", help="校核工单: 答复、导入回复表、延期、关闭、列出")
    tsub = t.add_subparsers(dest="action", required=True)
    ta = tsub.add_parser("answer", help="登记部门的校核答复")
    ta.add_argument("id")
    ta.add_argument("--note", required=True, help="回复说明")
    ta.add_argument("--by", default=None, help="回复人")
    ti = tsub.add_parser("import-reply", help="导入部门回传的报告 XLSX (「校核工单」表)")
    ti.add_argument("file")
    te = tsub.add_parser("extend", help="延长校核期限 (工作日, 须注明批准人)")
    te.add_argument("id")
    te.add_argument("--days", type=int, required=True)
    te.add_argument("--approved-by", required=True)
    te.add_argument("--note", default=None)
    tc = tsub.add_parser("close", help="关闭工单 (如答复已认可)")
    tc.add_argument("id")
    tc.add_argument("--by", required=True)
    tc.add_argument("--note", default=None)
    tl = tsub.add_parser("list", help="列出工单 (默认: 待校核、超期、已答复)")
    tl.add_argument("--department", default=None)
    tl.add_argument("--status", action="append", choices=["open", "overdue", "answered", "fixed", "closed"])
    t.set_defaults(func=cmd_ticket)

    sh = sub.add_parser("share", help="共享申请与依申请开放: 申请、意见、审批、撤销、列出、查看、溯源")
    shs = sh.add_subparsers(dest="action", required=True)
    sa_ = shs.add_parser("apply", help="提交申请 (打印申请编号)")
    sa_.add_argument("--requester", required=True, help="使用部门代码; 依申请开放: 申请人名称")
    sa_.add_argument("--library", required=True)
    sa_.add_argument("--elements", required=True, help="数据元代码, 逗号分隔")
    sa_.add_argument("--purpose", required=True)
    sa_.add_argument("--until", required=True, type=_date, help="有效期至 YYYY-MM-DD")
    sa_.add_argument("--filter", help="行范围, SQL 表达式, 如 \"insurance_status = '1'\"")
    sa_.add_argument("--open", action="store_true", help="依申请开放 (申请人为公民或企业)")
    sa_.add_argument("--requester-type", choices=["department", "citizen", "company"])
    sa_.add_argument("--requester-name")
    sa_.add_argument("--not-collected", action="store_true", help="数据尚未采集 (意见期限 7 个工作日)")
    sa_.add_argument("--linkage", action="store_true",
                     help="申请关联: 令牌与共享层输出一致(默认每份申请专用令牌, 不可与其他提取关联)")
    sa_.add_argument("--scenario", help="应用场景 (依申请开放必填)")
    sa_.add_argument("--measures", help="安全保障措施 (依申请开放必填)")
    sr = shs.add_parser("review", help="数源部门意见")
    sr.add_argument("id")
    sr.add_argument("--dept", required=True)
    g_ = sr.add_mutually_exclusive_group(required=True)
    g_.add_argument("--agree", dest="agree", action="store_true")
    g_.add_argument("--disagree", dest="agree", action="store_false")
    sr.add_argument("--note")
    sr.add_argument("--elements", help="只对这些数据元出具意见")
    for name, help_ in (("approve", "大数据局批准"), ("reject", "大数据局不批准"), ("revoke", "撤销已批准的申请")):
        sp = shs.add_parser(name, help=help_)
        sp.add_argument("id")
        sp.add_argument("--by", required=True)
        sp.add_argument("--note", required=name != "approve")
    sl = shs.add_parser("list", help="列出申请")
    sl.add_argument("--status", action="append", choices=["opinion", "approval", "approved", "rejected", "revoked", "expired"])
    ss = shs.add_parser("show", help="查看申请、数据元决定与审计记录")
    ss.add_argument("id")
    sp_ = shs.add_parser("report", help="申请的使用报告 (HTML + XLSX)")
    sp_.add_argument("id")
    sp_.add_argument("--out", help="报告根目录 (默认 $GONGSHU_HOME/reports)")
    st = shs.add_parser("trace", help="溯源: 泄露的提取文件来自哪份申请")
    st.add_argument("file")
    st.add_argument("--by", default=None, help="操作人 (记入审计)")
    st.add_argument("--expect", default=None, metavar="申请编号",
                    help="预期的来源申请: 溯源结果不是它 (或无法确定来源) 时以非零状态退出")
    sh.set_defaults(func=cmd_share)
    ds = sub.add_parser("definitions-snapshot",
                        help="输出代码位置快照 (资产、检查、作业、调度、传感器、资源; 示范目录与默认设置)")
    ds.add_argument("--out", default=None, help="写入该文件 (默认: 打印)")
    ds.set_defaults(func=cmd_definitions_snapshot)

    u = sub.add_parser("ui", help="Dagster 界面 (dagster dev), 同时提供示范数据接口与 GX 数据文档/部门报告页面")
    u.add_argument("--host", default="127.0.0.1")
    u.add_argument("--port", type=int, default=3000, help="Dagster 界面端口")
    u.add_argument("--api-port", type=int, default=8765, help="示范数据接口端口")
    u.add_argument("--docs-port", type=int, default=3001, help="GX 数据文档与部门报告页面端口 (GONGSHU_DOCS_URL)")
    u.add_argument("--no-demo-api", action="store_true", help="不启动示范数据接口 (各部门有自己的接口时)")
    u.set_defaults(func=cmd_ui)

    i = sub.add_parser("instance", help="写出 $DAGSTER_HOME/dagster.yaml")
    i.add_argument("--quiet", action="store_true")
    i.set_defaults(func=cmd_instance)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "date", "unset") is None and not getattr(args, "manifest", None):
        args.date = _yesterday()
    try:
        if getattr(args, "out", "unset") is None and args.command == "generate":
            args.out = str(settings().landing_path)
        return args.func(args)
    except KeyboardInterrupt:
        return 130
    except Exception as exc:  # the user gets one clear line, never a traceback
        from catalog.loader import CatalogueError
        from guiji.channels import DeliveryError

        if isinstance(exc, CatalogueError | DeliveryError | FileNotFoundError | ValueError | OSError):
            print(f"错误: {exc}", file=sys.stderr)
        else:
            print(f"错误: {type(exc).__name__}: {exc}", file=sys.stderr)
        if os.environ.get("GONGSHU_DEBUG"):
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
