"""The code location: everything Dagster loads, built from the configured catalogue.

``workspace.yaml`` points here; ``dagster definitions validate -m pipelines.definitions`` checks it.
The settings are read from the environment once, here (a malformed one stops the load, naming the
variable); the resources, with the secrets as ``EnvVar``, come from the same function the ``gongshu``
commands use (:func:`assets.resources.resources_from_env`).
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping

from dagster import Definitions

from assets.factory import build_assets, build_checks
from assets.freshness import build_freshness_checks
from assets.keys import daily_partitions
from assets.reports import build_department_reports_asset
from assets.resources import Settings, resources_from_env, settings_from_env
from assets.scorecard import build_scorecard_asset
from assets.share import build_share_assets
from assets.share_applications import (
    build_share_application_asset,
    build_share_applications_sensor,
    build_share_delivery_job,
)
from assets.tickets import build_tickets_asset
from catalog.loader import cached_catalogue
from pipelines.jobs import build_jobs_and_schedules
from pipelines.sensors import build_sensors

# Partitioned asset checks are marked preview in Dagster 1.13; they are what a daily 归集 needs.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")


def build_definitions(settings: Settings | None = None, environ: Mapping[str, str] | None = None) -> Definitions:
    """The code location of the configured catalogue (``settings``: read from the environment if not given;
    ``environ``: the variables that decide which secrets are set, this process's by default)."""
    settings = settings or (settings_from_env() if environ is None else Settings.from_env(environ))
    catalogue = cached_catalogue(settings.catalogue_path)
    partitions = daily_partitions(catalogue)
    assets = build_assets(catalogue, partitions, settings) + build_share_assets(catalogue, partitions)
    assets += [build_tickets_asset(catalogue, partitions), build_scorecard_asset(catalogue, partitions),
               build_department_reports_asset(catalogue, partitions), build_share_application_asset(catalogue)]
    jobs, schedules = build_jobs_and_schedules(partitions, settings, environ)
    jobs.append(build_share_delivery_job())
    return Definitions(
        assets=assets,
        asset_checks=[*build_checks(catalogue, partitions), build_freshness_checks(catalogue, partitions)],
        jobs=jobs,
        schedules=schedules,
        sensors=[*build_sensors(catalogue, partitions, settings), build_share_applications_sensor(catalogue)],
        resources=resources_from_env(catalogue, settings, environ),
    )


defs = build_definitions()
