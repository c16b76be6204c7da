"""Celery workers for ``GONGSHU_EXECUTOR=celery``: the one Celery configuration that the nightly job's
executor (the producer, in the run worker) and the workers (``make worker``, ``pipelines.celery_app``)
share, and the checks ``gongshu run`` makes of the broker before it launches a run there.

The job's executor is dagster-celery's ``celery_executor``: each step of the run becomes one task on the
queue ``GONGSHU_CELERY_QUEUE`` of the broker ``GONGSHU_CELERY_BROKER``; a worker listening on that queue
reconstructs the code location from its own environment, opens the run's Dagster instance from the
reference the task carries (the same ``DAGSTER_HOME`` on one machine, dagster-postgres across machines)
and executes the step, writing its events there. See docs/deploy.md.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from celery import Celery
from dagster_celery.executor import CeleryExecutor
from dagster_celery.make_app import make_app
from kombu import Connection, Exchange, Queue

from assets.resources import Settings, safe_broker

# Results go back to the run worker over the broker itself (a reply queue per producer): no second
# service. A step's events are in the Dagster instance anyway; the result only says it has ended.
RESULT_BACKEND = "rpc://"
LOG_FORMAT = "[%(asctime)s: %(levelname)s/%(processName)s pid=%(process)d] %(message)s"


def celery_settings(settings: Settings) -> dict[str, Any]:
    """Celery settings (its lowercase names) beyond dagster-celery's defaults, for the executor and the
    workers alike: the queue, one step per worker child process, and a step's task acknowledged only
    when the step has ended (redelivered when its worker dies mid-step). A child that has run a step exits
    and the worker forks a fresh one from its parent, which has imported the code location once
    (``pipelines.celery_app``): a step pays a fork, not an import, and no step's memory stays behind in
    the process that runs the next one (as with the multiprocess executor's forkserver)."""
    return {
        "task_default_queue": settings.celery_queue,
        "worker_max_tasks_per_child": 1,
        # a step's task is acknowledged when the step has ended, not when a worker takes it: a worker
        # (or the child process running the step) killed mid-step leaves the task unacknowledged, and
        # RabbitMQ (connection lost) or the worker's parent (child lost) puts it back on the queue for
        # another worker; otherwise the task is gone and the run waits for it forever. Steps are
        # rerun-safe (one transaction per batch). With dagster-celery's prefetch of 1 a worker holds no
        # task beyond those it runs. These are read by the worker (it acknowledges); the run worker,
        # which only publishes, ignores them.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        # the run worker's reply queue (rpc://) goes an hour after its last use, not a day
        "result_expires": 3600,
        # the process id in every line of a worker's log: a step's events carry the id of the process
        # that ran it (STEP_START in the UI), which finds its lines in the log of the worker that ran it
        "worker_log_format": LOG_FORMAT,
        "worker_task_log_format": LOG_FORMAT.replace("] ", "] %(task_name)s[%(task_id)s]: ", 1),
    }


def executor_config(settings: Settings, broker: Mapping[str, str] | str) -> dict[str, Any]:
    """The ``celery_executor`` config of the nightly job. ``broker``: ``{"env": "GONGSHU_CELERY_BROKER"}``
    (resolved where the run starts, never stored in the code location) or the default URL
    (:func:`assets.resources.celery_broker`)."""
    return {"broker": broker, "backend": RESULT_BACKEND, "config_source": celery_settings(settings)}


def worker_app(settings: Settings, broker_url: str) -> Celery:
    """The Celery app of a gongshu worker: dagster-celery's app with the job's settings, consuming only
    ``GONGSHU_CELERY_QUEUE`` (a worker started without ``-q`` listens there; dagster-celery's own app
    would listen on its default queue ``dagster``)."""
    executor = CeleryExecutor.for_cli(broker=broker_url, backend=RESULT_BACKEND,
                                      config_source=celery_settings(settings))
    app = make_app(executor.app_args())
    queue = settings.celery_queue
    # declared as the producer declares a queue it does not know (Celery's missing-queue default), so
    # whichever side declares it first, RabbitMQ finds the same queue
    app.conf.task_queues = [Queue(queue, Exchange(queue, type="direct"), routing_key=queue)]
    return app


class BrokerUnreachable(ConnectionError):
    """The Celery broker cannot be reached (the message names it with its password hidden)."""


def check_broker(broker_url: str, timeout_s: float = 5.0) -> None:
    """Connect to the broker once; :class:`BrokerUnreachable` with a clear message when that fails."""
    try:
        with Connection(broker_url, connect_timeout=timeout_s) as conn:
            conn.ensure_connection(max_retries=1, timeout=timeout_s)
    except Exception as exc:  # kombu raises the transport's own errors (socket, AMQP access refused)
        raise BrokerUnreachable(
            f"无法连接 Celery 代理 {safe_broker(broker_url)}: {type(exc).__name__} "
            "(GONGSHU_EXECUTOR=celery 需要代理与至少一个工作进程, 见 docs/deploy.md; "
            "或取消 GONGSHU_EXECUTOR 以本机多进程运行)") from None


def listening_workers(app: Celery, queue: str, timeout_s: float = 2.0) -> list[str]:
    """Names of the workers that answer within ``timeout_s`` and consume ``queue``."""
    answers = app.control.inspect(timeout=timeout_s).active_queues() or {}
    return sorted(name for name, queues in answers.items() if any(q.get("name") == queue for q in queues))
