"""The code location: everything Dagster loads, built from the configured catalogue.

``workspace.yaml`` points here; ``dagster definitions validate -m pipelines.definitions`` checks it.
"""

from __future__ import annotations

import warnings

from dagster import Definitions

from assets.factory import build_assets, build_checks
from assets.freshness import build_freshness_checks
from assets.keys import daily_partitions
from assets.reports import build_department_reports_asset
from assets.resources import LandingResource, MailerResource, WarehouseResource, share_resources
from assets.scorecard import build_scorecard_asset
from assets.share import build_share_assets
from assets.tickets import build_tickets_asset
from catalog.loader import current_catalogue
from pipelines.jobs import build_jobs_and_schedules
from pipelines.sensors import build_sensors

# Partitioned asset checks are marked preview in Dagster 1.13; they are what a daily 归集 needs.
warnings.filterwarnings("ignore", message="Specifying a partitions_def on an AssetCheckSpec")


def build_definitions() -> Definitions:
    catalogue = current_catalogue()
    partitions = daily_partitions(catalogue)
    assets = build_assets(catalogue, partitions) + build_share_assets(catalogue, partitions)
    assets += [build_tickets_asset(catalogue, partitions), build_scorecard_asset(catalogue, partitions),
               build_department_reports_asset(catalogue, partitions)]
    jobs, schedules = build_jobs_and_schedules(partitions)
    warehouse = WarehouseResource()
    return Definitions(
        assets=assets,
        asset_checks=[*build_checks(catalogue, partitions), build_freshness_checks(catalogue)],
        jobs=jobs,
        schedules=schedules,
        sensors=build_sensors(catalogue, partitions),
        resources={"warehouse": warehouse, "landing": LandingResource(), "mailer": MailerResource(warehouse=warehouse),
                   **share_resources()},
    )


defs = build_definitions()
