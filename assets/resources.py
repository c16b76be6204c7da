"""Settings and secrets as Dagster resources: with the ``gongshu`` command line, the only code that reads
the environment.

* :class:`Settings`: every setting but the secrets (home folder, landing folder, catalogue, thresholds,
  recipients, intervals, mail server), parsed and checked once, when the code location or a ``gongshu``
  command starts (:meth:`Settings.from_env`): a malformed value stops the load with a message naming
  the variable. The assets and sensors read it at run time as the ``settings`` resource; the builders
  of sensors and jobs read its intervals and worker count.
* Secrets are ``EnvVar`` fields of the resource that uses them: the warehouse URL (it carries the
  database password), the SMTP password, the pseudonymisation key, and the variables the catalogue's
  channels name (前置库 URLs, API URLs and tokens). Dagster shows the variable's name, never its value,
  and resolves it when a run initialises the resource. A secret that is unset is left out (``None``),
  so its documented default applies (the SQLite warehouse, the outbox, no key: the share outputs that
  need one fail with their own message while the 归集 goes on); as an ``EnvVar`` it would instead stop
  every run that uses the resource.
* :func:`resources_from_env` builds every resource: the code location (``pipelines/definitions.py``)
  and the ``gongshu`` commands call the same function.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import quote

import sqlalchemy as sa
from dagster import ConfigurableResource, EnvVar
from kombu.transport import TRANSPORT_ALIASES
from pydantic import Field, PrivateAttr, ValidationError, field_validator

from catalog.loader import DEMO_CATALOGUE, Catalogue
from catalog.models import ApiChannel, DatabaseChannel
from desensitize.masking import SHARE_CHUNK_ROWS
from desensitize.pseudonym import ALGORITHMS, KEY_ENV, PseudonymKey
from guiji.base import MERGE_CHUNK_KEYS
from guiji.std import STD_CHUNK_ROWS
from quality.config import ENV_PREFIX as SCORECARD_PREFIX
from quality.mail import TLS_MODES, Mailer, SmtpSettings, addresses, port_and_tls
from quality.results import BLOCKING_MIN_PASS_RATE
from quality.volume import MIN_RATIO
from sharing.workflow import Deadlines
from warehouse.migrations import open_warehouse
from warehouse.store import Warehouse, sqlite_url

DEFAULT_HOME = ".gongshu"  # GONGSHU_HOME when unset: the one default of the home folder
WAREHOUSE_URL = "GONGSHU_WAREHOUSE_URL"  # secrets: EnvVar fields of the resources below
SMTP_PASSWORD = "GONGSHU_SMTP_PASSWORD"
CELERY_BROKER = "GONGSHU_CELERY_BROKER"  # the broker URL of GONGSHU_EXECUTOR=celery: it may carry a password
SECRETS = (WAREHOUSE_URL, SMTP_PASSWORD, KEY_ENV, CELERY_BROKER)  # and the variables the catalogue's channels name
# The broker this machine runs (RabbitMQ, docs/deploy.md): the default of GONGSHU_CELERY_BROKER
DEFAULT_CELERY_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
EXECUTORS = ("multiprocess", "celery")

# Settings field → the environment variable it is read from (README, «Configuration»)
VARIABLES: dict[str, str] = {
    "home": "GONGSHU_HOME",
    "cache_dir": "GONGSHU_CACHE_DIR",
    "landing": "GONGSHU_LANDING",
    "catalogue": "GONGSHU_CATALOG",
    "blocking_min_pass_rate": "GONGSHU_BLOCKING_MIN_PASS_RATE",
    "volume_min_ratio": "GONGSHU_VOLUME_MIN_RATIO",
    "engineer_emails": "GONGSHU_ENGINEER_EMAILS",
    "max_concurrent": "GONGSHU_MAX_CONCURRENT",
    "std_chunk_rows": "GONGSHU_STD_CHUNK_ROWS",
    "merge_chunk_keys": "GONGSHU_MERGE_CHUNK_KEYS",
    "share_chunk_rows": "GONGSHU_SHARE_CHUNK_ROWS",
    "executor": "GONGSHU_EXECUTOR",
    "celery_queue": "GONGSHU_CELERY_QUEUE",
    "log_level": "GONGSHU_LOG_LEVEL",
    "freshness_interval_s": "GONGSHU_FRESHNESS_INTERVAL",
    "arrival_interval_s": "GONGSHU_ARRIVAL_INTERVAL",
    "arrival_settle_s": "GONGSHU_ARRIVAL_SETTLE_SECONDS",
    "nightly_schedule": "GONGSHU_NIGHTLY_SCHEDULE",
    "file_arrival": "GONGSHU_FILE_ARRIVAL",
    "docs_url": "GONGSHU_DOCS_URL",
    "smtp_host": "GONGSHU_SMTP_HOST",
    "smtp_port": "GONGSHU_SMTP_PORT",
    "smtp_tls": "GONGSHU_SMTP_TLS",
    "smtp_user": "GONGSHU_SMTP_USER",
    "smtp_from": "GONGSHU_SMTP_FROM",
    "smtp_timeout_s": "GONGSHU_SMTP_TIMEOUT",
    "pseudonym_algorithm": "GONGSHU_PSEUDONYM_ALG",
    "share_opinion_days": "GONGSHU_SHARE_OPINION_DAYS",
    "share_opinion_days_not_collected": "GONGSHU_SHARE_OPINION_DAYS_NOT_COLLECTED",
    "share_approval_days": "GONGSHU_SHARE_APPROVAL_DAYS",
}
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
STATUSES = ("running", "stopped")  # first status of the schedule and the file-arrival sensors
DEFAULT_DOCS_URL = "http://127.0.0.1:3001"  # where make ui serves $GONGSHU_HOME's pages (gongshu ui --docs-port)


class SettingsError(ValueError):
    """An environment variable holds a value gongshu cannot use (the message names it, never a secret)."""


class Settings(ConfigurableResource):
    """Every setting of gongshu but the secrets, from the environment variables named in the README.

    Built by :meth:`from_env` at the edge; the ``settings`` resource of the code location, shown with
    its values in the Dagster UI (no secret is among them).
    """

    home: str = Field(DEFAULT_HOME, description="GONGSHU_HOME: 报告、发件箱、开放数据、GX 数据文档与内置 "
                                                "SQLite 数仓所在目录")
    cache_dir: str | None = Field(None, description="GONGSHU_CACHE_DIR: 本机缓存目录(泄露扫描比对值的哈希数组, "
                                                    "各共享步骤以内存映射读取), 默认 $GONGSHU_HOME/cache; "
                                                    "多台机器运行步骤时设为每台机器的本地磁盘")
    landing: str = Field(f"{DEFAULT_HOME}/landing", description="GONGSHU_LANDING: 文件交付根目录")
    catalogue: str = Field(str(DEMO_CATALOGUE), description="GONGSHU_CATALOG: 数据资源目录所在文件夹")
    blocking_min_pass_rate: float = Field(
        BLOCKING_MIN_PASS_RATE, ge=0, le=1,
        description="GONGSHU_BLOCKING_MIN_PASS_RATE: 阻断规则通过率低于此值时, 该批次不并入基础库")
    volume_min_ratio: float = Field(MIN_RATIO, ge=0, description="GONGSHU_VOLUME_MIN_RATIO: 交付行数低于"
                                                                 "近期中位数的此比例时告警")
    engineer_emails: list[str] = Field([], description="GONGSHU_ENGINEER_EMAILS: 数据工程师邮箱")
    max_concurrent: int = Field(2, ge=1, description="GONGSHU_MAX_CONCURRENT: 每晚归集作业的并行进程数"
                                                     "(celery 执行器下为每个工作进程的并发数)")
    std_chunk_rows: int = Field(STD_CHUNK_ROWS, ge=1,
                                description="GONGSHU_STD_CHUNK_ROWS: 标准层每次标准化、GX 校验与写入的记录数(按主键散列分片, "
                                            "同一事务内), 决定 ods+std 步骤的内存上限")
    merge_chunk_keys: int = Field(MERGE_CHUNK_KEYS, ge=1,
                                  description="GONGSHU_MERGE_CHUNK_KEYS: 基础库合并每次处理的实体数(按主键区间分段, "
                                              "同一事务内), 决定合并步骤的内存上限")
    share_chunk_rows: int = Field(SHARE_CHUNK_ROWS, ge=1,
                                  description="GONGSHU_SHARE_CHUNK_ROWS: 共享/开放数据集每次脱敏与写入的行数"
                                              "(同一事务内; 泄露扫描每次读取其两倍), 决定共享步骤的内存上限")
    executor: str = Field("multiprocess", description="GONGSHU_EXECUTOR: 每晚归集作业的执行器: multiprocess "
                                                      "(本机多进程) 或 celery (Celery 工作进程, 见 docs/deploy.md)")
    celery_queue: str = Field("gongshu",
                              description="GONGSHU_CELERY_QUEUE: celery 执行器投递步骤的队列名, "
                                          "工作进程监听同名队列")
    log_level: str = Field("WARNING", description="GONGSHU_LOG_LEVEL: gongshu run 打印的运行事件级别")
    freshness_interval_s: int = Field(300, ge=1, description="GONGSHU_FRESHNESS_INTERVAL: 时效监测间隔(秒)")
    arrival_interval_s: int = Field(60, ge=1, description="GONGSHU_ARRIVAL_INTERVAL: 文件到达检查间隔(秒)")
    arrival_settle_s: float = Field(30.0, ge=0, description="GONGSHU_ARRIVAL_SETTLE_SECONDS: 文件落地后"
                                                            "静置多少秒才启动归集")
    nightly_schedule: str = Field("running", description="GONGSHU_NIGHTLY_SCHEDULE: 每晚 02:00 调度首次部署时"
                                                          "的状态, running(开启)或 stopped(关闭); 之后以界面中的开关为准")
    file_arrival: str = Field("stopped", description="GONGSHU_FILE_ARRIVAL: 文件到达传感器首次部署时的状态, "
                                                     "running 或 stopped(默认: 由每晚调度归集)")
    docs_url: str = Field(DEFAULT_DOCS_URL, description="GONGSHU_DOCS_URL: GX 数据文档与部门报告的网址前缀 "
                                                        "(make ui 在此端口提供 $GONGSHU_HOME 下的页面); 设为 file "
                                                        "则链接本地文件")
    scorecard: dict[str, str] = Field({}, description="GONGSHU_SCORECARD_*: 评分配置文件与各项覆盖")
    smtp_host: str | None = Field(None, description="GONGSHU_SMTP_HOST: 未设置时邮件写入发件箱")
    smtp_port: int | None = Field(None, ge=1, le=65535, description="GONGSHU_SMTP_PORT")
    smtp_tls: str | None = Field(None, description="GONGSHU_SMTP_TLS: none、starttls 或 ssl")
    smtp_user: str | None = Field(None, description="GONGSHU_SMTP_USER")
    smtp_from: str | None = Field(None, description="GONGSHU_SMTP_FROM")
    smtp_timeout_s: float = Field(30.0, gt=0, description="GONGSHU_SMTP_TIMEOUT")
    pseudonym_algorithm: str | None = Field(None, description="GONGSHU_PSEUDONYM_ALG: sha256 或 sm3")
    share_opinion_days: int = Field(5, ge=1, description="GONGSHU_SHARE_OPINION_DAYS: 共享申请数源部门意见期限"
                                                         "(工作日, 贵港第二十九条)")
    share_opinion_days_not_collected: int = Field(
        7, ge=1, description="GONGSHU_SHARE_OPINION_DAYS_NOT_COLLECTED: 尚未采集数据的意见期限(工作日, 温州第二十条)")
    share_approval_days: int = Field(5, ge=1, description="GONGSHU_SHARE_APPROVAL_DAYS: 大数据局审批期限"
                                                          "(工作日, 贵港第二十九条)")

    def share_deadlines(self) -> Deadlines:
        """The working days of the 共享申请 workflow (sharing/workflow.py)."""
        return Deadlines(self.share_opinion_days, self.share_opinion_days_not_collected, self.share_approval_days)

    @field_validator("log_level")
    @classmethod
    def _level(cls, value: str) -> str:
        if value.upper() not in LOG_LEVELS:
            raise ValueError(f"应为 {'、'.join(LOG_LEVELS)}")
        return value.upper()

    @field_validator("nightly_schedule", "file_arrival", "executor")
    @classmethod
    def _choice(cls, value: str, info) -> str:
        choices = EXECUTORS if info.field_name == "executor" else STATUSES
        if value.strip().lower() not in choices:
            raise ValueError(f"应为 {' 或 '.join(choices)}")
        return value.strip().lower()

    @field_validator("celery_queue")
    @classmethod
    def _queue(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", value):
            raise ValueError("队列名只能由字母、数字和 _ . : - 组成")
        return value

    @field_validator("smtp_tls")
    @classmethod
    def _tls(cls, value: str | None) -> str | None:
        if value and value.lower() not in TLS_MODES:
            raise ValueError(f"应为 {'、'.join(TLS_MODES)}")
        return value.lower() if value else None

    @field_validator("pseudonym_algorithm")
    @classmethod
    def _algorithm(cls, value: str | None) -> str | None:
        if value and value.strip().lower() not in ALGORITHMS:
            raise ValueError(f"应为 {' 或 '.join(ALGORITHMS)}")
        return value.strip().lower() if value else None

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> Settings:
        """The settings from a mapping of environment variables: an unset or empty one keeps its default.

        Raises :class:`SettingsError` naming every variable with an unusable value.
        """
        values: dict[str, object] = {name: environ[var] for name, var in VARIABLES.items() if environ.get(var)}
        if "engineer_emails" in values:
            values["engineer_emails"] = addresses(str(values["engineer_emails"]))
        values["scorecard"] = {k: v for k, v in environ.items() if k.startswith(SCORECARD_PREFIX)}
        problems, settings = [], None
        try:
            settings = cls(**values)
        except ValidationError as exc:
            for e in exc.errors():
                var = VARIABLES.get(str(e["loc"][0]), str(e["loc"][0]))
                problems.append(f"{var}={environ.get(var, '')!r}: {e['msg'].removeprefix('Value error, ')}")
        url = environ.get(WAREHOUSE_URL)
        if url:
            try:
                sa.engine.make_url(url)
            except sa.exc.ArgumentError:
                problems.append(f"{WAREHOUSE_URL}: 不是有效的 SQLAlchemy URL (值不予显示)")  # it may hold a password
        broker = environ.get(CELERY_BROKER)
        if broker and not _broker_url_ok(broker):
            problems.append(f"{CELERY_BROKER}: 不是有效的代理 URL, 应形如 amqp://用户:密码@主机:5672// (值不予显示)")
        if problems or settings is None:
            raise SettingsError("环境变量设置有误: " + "; ".join(problems))
        return settings

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def landing_path(self) -> Path:
        return Path(self.landing)

    @property
    def catalogue_path(self) -> Path:
        return Path(self.catalogue)

    @property
    def reports(self) -> Path:
        """``$GONGSHU_HOME/reports``: the departments' reports."""
        return self.home_path / "reports"

    @property
    def outbox(self) -> Path:
        """``$GONGSHU_HOME/outbox``: mail as ``.eml`` files when no SMTP server is set."""
        return self.home_path / "outbox"

    @property
    def open_data(self) -> Path:
        """``$GONGSHU_HOME/open``: the published open-data files."""
        return self.home_path / "open"

    @property
    def share_extracts(self) -> Path:
        """``$GONGSHU_HOME/share``: one folder per 共享申请, one subfolder per night."""
        return self.home_path / "share"

    @property
    def needles_cache(self) -> Path:
        """``$GONGSHU_CACHE_DIR/needles`` (default ``$GONGSHU_HOME/cache/needles``): this machine's copy of the
        leak needles (hashes, never served)."""
        return (Path(self.cache_dir) if self.cache_dir else self.home_path / "cache") / "needles"

    @property
    def gx_docs(self) -> Path:
        """``$GONGSHU_HOME/gx_docs``: one Great Expectations Data Docs page per validated batch."""
        return self.home_path / "gx_docs"

    def page_url(self, path: Path | str) -> str:
        """The address of a page written under the home folder (a GX Data Docs page, a report): under
        ``docs_url``, where ``make ui`` serves the home folder over HTTP (a ``file:///`` link opens on
        no other machine), or the file's own URI when ``docs_url`` is ``file`` or the page lies elsewhere."""
        page = Path(path).resolve()
        home = self.home_path.resolve()
        if self.docs_url.strip().lower() == "file" or not page.is_relative_to(home):
            return page.as_uri()
        return f"{self.docs_url.rstrip('/')}/{quote(page.relative_to(home).as_posix())}"

    @property
    def log_level_number(self) -> int:
        return logging.getLevelName(self.log_level)


class WarehouseResource(ConfigurableResource):
    """The warehouse every asset writes through: a SQLAlchemy URL (SQLite or PostgreSQL), an EnvVar when
    it comes from ``GONGSHU_WAREHOUSE_URL`` (it carries the database password)."""

    url: str
    # how many entities a merge / rows a share output take at a time: from Settings (GONGSHU_MERGE_CHUNK_KEYS,
    # GONGSHU_SHARE_CHUNK_ROWS) by resources_from_env, handed to the steps with the warehouse they bound
    merge_chunk_keys: int = Field(MERGE_CHUNK_KEYS, ge=1)
    share_chunk_rows: int = Field(SHARE_CHUNK_ROWS, ge=1)
    # this machine's copy of the stored leak needles, read memory-mapped by every share step
    # (desensitize.leaks.Needles.cached): $GONGSHU_HOME/cache/needles; None: read from the warehouse
    needles_cache: str | None = None
    _wh: Warehouse | None = PrivateAttr(default=None)

    def get(self) -> Warehouse:
        if self._wh is None:
            url = sa.engine.make_url(self.url)
            if url.get_backend_name() == "sqlite" and url.database and url.database != ":memory:":
                Path(url.database).parent.mkdir(parents=True, exist_ok=True)  # the home folder, on first use
            self._wh = open_warehouse(self.url)
        return self._wh

    def needles_cache_path(self) -> Path | None:
        return Path(self.needles_cache) if self.needles_cache else None

    def discard(self) -> None:
        """Close the warehouse's connections (after a transient error: a retry starts on new ones)."""
        if self._wh is not None:
            self._wh.dispose()
            self._wh = None

    def teardown_after_execution(self, context) -> None:
        if self._wh is not None:
            self._wh.dispose()


class LandingResource(ConfigurableResource):
    """Where deliveries are read from: the landing folder of file deliveries (前置机 folders, the demo's
    前置库 files) and the values of the variables the catalogue's channels name (``url_env``, ``auth_env``:
    前置库 URLs, API URLs and tokens), each an EnvVar."""

    path: str
    variables: dict[str, str] = {}

    def root(self) -> Path:
        return Path(self.path)


class MailerResource(ConfigurableResource):
    """The Mailer: SMTP when ``smtp_host`` is set (the password an EnvVar), else ``.eml`` files in the outbox."""

    warehouse: WarehouseResource
    outbox: str
    smtp_host: str | None = None
    smtp_port: int | None = None
    smtp_tls: str | None = None
    smtp_user: str | None = None
    smtp_password: str | None = None
    smtp_timeout_s: float = 30.0
    sender: str | None = None
    _mailer: Mailer | None = PrivateAttr(default=None)

    def get(self) -> Mailer:
        if self._mailer is None:
            smtp = None
            if self.smtp_host:
                port, tls = port_and_tls(self.smtp_port, self.smtp_tls)
                smtp = SmtpSettings(self.smtp_host, port, tls, self.smtp_user, self.smtp_password,
                                    self.smtp_timeout_s)
            self._mailer = Mailer(self.warehouse.get(), smtp, Path(self.outbox), self.sender)
        return self._mailer


class PseudonymKeyResource(ConfigurableResource):
    """The pseudonymisation key: an EnvVar of ``GONGSHU_PSEUDONYM_KEY``, None when it is unset (the
    outputs that need it fail with their own message)."""

    key: str | None = None
    algorithm: str | None = None

    def get(self) -> PseudonymKey:
        """The key; a clear error when it is missing or unusable."""
        return PseudonymKey.from_secret(self.key, self.algorithm)

    def get_or_none(self) -> PseudonymKey | None:
        """The key, or None when it is unset (a set but unusable key still raises)."""
        return self.get() if self.key else None


class OpenDataResource(ConfigurableResource):
    """Where open-data files are published (``$GONGSHU_HOME/open``)."""

    path: str

    def root(self) -> Path:
        return Path(self.path)


def _broker_url_ok(url: str) -> bool:
    """A Celery broker URL kombu can use: ``transport://…`` with a transport it knows."""
    scheme, sep, _ = url.partition("://")
    return bool(sep) and scheme.split("+")[0] in TRANSPORT_ALIASES


def celery_broker(environ: Mapping[str, str] | None = None) -> dict[str, str] | str:
    """The broker of ``GONGSHU_EXECUTOR=celery`` as executor config: ``{"env": "GONGSHU_CELERY_BROKER"}``
    when the variable is set (it may carry a password: the code location and the UI hold its name, the
    run resolves the value where the executor starts), else this machine's RabbitMQ
    (``DEFAULT_CELERY_BROKER``)."""
    environ = os.environ if environ is None else environ
    return {"env": CELERY_BROKER} if environ.get(CELERY_BROKER) else DEFAULT_CELERY_BROKER


def celery_broker_url(environ: Mapping[str, str] | None = None) -> str:
    """The broker URL itself, for a Celery worker or a check of the broker (never to be shown: use
    :func:`safe_broker` for a message)."""
    environ = os.environ if environ is None else environ
    return environ.get(CELERY_BROKER) or DEFAULT_CELERY_BROKER


def safe_broker(url: str) -> str:
    """The broker URL with its password hidden, for messages."""
    scheme, sep, rest = url.partition("://")
    user, at, host = rest.rpartition("@")
    return f"{scheme}{sep}{user.split(':')[0]}:***@{host}" if at else url


class ShareExtractsResource(ConfigurableResource):
    """Where the extracts of approved 共享申请 are written (``$GONGSHU_HOME/share/<application>/<date>/``)."""

    path: str

    def root(self) -> Path:
        return Path(self.path)


# --- built from the environment: the code location and the gongshu commands ---------------------------


def settings_from_env() -> Settings:
    """The settings of this process's environment."""
    return Settings.from_env(os.environ)


def secret(name: str, environ: Mapping[str, str] | None = None) -> EnvVar | None:
    """``EnvVar(name)`` when the variable is set (Dagster shows the name and resolves the value in the
    run), None when it is not: the setting's default applies. ``environ``: this process's by default."""
    return EnvVar(name) if (os.environ if environ is None else environ).get(name) else None


def channel_variables(catalogue: Catalogue) -> list[str]:
    """The variables the catalogue's 前置库 and API channels name (URLs, tokens)."""
    names = set()
    for r in catalogue.resources:
        ch = r.channel
        if isinstance(ch, DatabaseChannel | ApiChannel):
            names.update(n for n in (ch.url_env, getattr(ch, "auth_env", None)) if n)
    return sorted(names)


def resources_from_env(catalogue: Catalogue | None = None, settings: Settings | None = None,
                       environ: Mapping[str, str] | None = None) -> dict[str, ConfigurableResource]:
    """Every resource of the code location, from the environment (``settings``: already read from it);
    the ``gongshu`` commands build the same. ``catalogue`` names the channels' variables. ``environ``:
    the variables that decide which secrets are set (this process's by default; the reviewed snapshot
    of the code location passes its own, pipelines/snapshot.py)."""
    environ = os.environ if environ is None else environ
    settings = settings or Settings.from_env(environ)
    warehouse = WarehouseResource(url=secret(WAREHOUSE_URL, environ) or sqlite_url(settings.home_path),
                                  merge_chunk_keys=settings.merge_chunk_keys, share_chunk_rows=settings.share_chunk_rows,
                                  needles_cache=str(settings.needles_cache))
    variables = {n: EnvVar(n) for n in channel_variables(catalogue) if environ.get(n)} if catalogue else {}
    return {
        "settings": settings,
        "warehouse": warehouse,
        "landing": LandingResource(path=settings.landing, variables=variables),
        "mailer": MailerResource(
            warehouse=warehouse, outbox=str(settings.outbox), smtp_host=settings.smtp_host,
            smtp_port=settings.smtp_port, smtp_tls=settings.smtp_tls, smtp_user=settings.smtp_user,
            smtp_password=secret(SMTP_PASSWORD, environ), smtp_timeout_s=settings.smtp_timeout_s, sender=settings.smtp_from,
        ),
        "pseudonym": PseudonymKeyResource(key=secret(KEY_ENV, environ), algorithm=settings.pseudonym_algorithm),
        "open_data": OpenDataResource(path=str(settings.open_data)),
        "share_extracts": ShareExtractsResource(path=str(settings.share_extracts)),
    }
