"""The Celery app a gongshu worker runs: ``dagster-celery worker start -A pipelines.celery_app`` (``make worker``).

Read from this process's environment, as the code location reads it: the broker
(``GONGSHU_CELERY_BROKER``, a secret: never printed), the queue (``GONGSHU_CELERY_QUEUE``) and every
setting the steps need. The worker must see the same ``GONGSHU_*`` variables (catalogue, warehouse,
pseudonymisation key, channel URLs) as the code server that launched the run: it rebuilds the code
location from them to execute each step (docs/deploy.md, «What must be identical»).

On import it also loads what every step needs (the code location, Dagster's storage, GX, the report
charts: the list the multiprocess executor's forkserver preloads), so the worker's child processes,
forked from this one, start a step without importing anything.
"""

from __future__ import annotations

import importlib

from dagster_celery.tasks import create_task

from assets.resources import celery_broker_url, settings_from_env
from pipelines.jobs import FORKSERVER_PRELOAD
from pipelines.workers import worker_app

app = worker_app(settings_from_env(), celery_broker_url())
# dagster-celery's task: execute one step of a run. Its result (the step's events, which are in the
# Dagster instance anyway) is logged by the worker cut to its first characters, not 1 kB of JSON a step.
execute_plan = create_task(app, resultrepr_maxsize=160)

for _module in FORKSERVER_PRELOAD:
    importlib.import_module(_module)
