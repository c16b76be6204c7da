"""What every department's report of one period reads, loaded once from the warehouse."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import polars as pl

from catalog.loader import Catalogue
from desensitize.linkage import NOTHING, Exposure
from desensitize.policy import catalogue_token_exposure
from desensitize.pseudonym import PseudonymKey
from quality.freshness.calendar import city_zone, end_of_day
from quality.freshness.evaluate import Freshness
from quality.freshness.store import evaluate_catalogue
from quality.scorecard.inputs import latest_batches
from quality.scorecard.store import history, latest_run, previous_totals
from quality.tickets.records import failing_records
from quality.tickets.store import read_tickets
from quality.tickets.sync import conflicts_open_at
from warehouse.std import night_problems
from warehouse.store import Warehouse


@dataclass
class ReportInputs:
    """What every report of one period reads (loaded once)."""

    period: dt.date
    run: pl.DataFrame  # the period's latest quality.scorecard run (rule, resource, department rows)
    previous: pl.DataFrame  # each department's last result before the period
    history: pl.DataFrame  # department results per period, for the trend
    batches: pl.DataFrame  # latest batch per resource
    freshness: list[Freshness]
    tickets: pl.DataFrame
    conflicts: pl.DataFrame  # conflicts open at the end of the period
    records: dict[str, pl.DataFrame]  # failing records of each resource's latest batch
    key: PseudonymKey | None
    linked: Exposure = NOTHING  # what the share outputs joined by the reports' tokens show (linkage.py)
    problems: dict[str, dict] = field(default_factory=dict)  # resource id → its failed delivery / withheld batch


def load_inputs(wh: Warehouse, catalogue: Catalogue, day: dt.date, key: PseudonymKey | None) -> ReportInputs:
    """Scores, freshness, tickets, conflicts and failing records of ``day``: the same for every department."""
    batches = latest_batches(wh, day)
    records = {}
    for r in batches.iter_rows(named=True):
        resource = next((x for x in catalogue.resources if x.id == r["resource_id"]), None)
        if resource is not None:
            records[resource.id] = failing_records(wh, catalogue, resource, r["batch_id"])
    open_conflicts, _ = conflicts_open_at(wh, catalogue, day)
    return ReportInputs(
        period=day, run=latest_run(wh, day), previous=previous_totals(wh, day), history=history(wh, day),
        batches=batches, freshness=evaluate_catalogue(wh, catalogue, end_of_day(day, city_zone(catalogue))),
        tickets=read_tickets(wh), conflicts=open_conflicts, records=records, key=key,
        # a token joins a report row to the share outputs under the same key: their birth dates count
        linked=catalogue_token_exposure(catalogue) if key is not None else NOTHING,
        problems={r["resource_id"]: {"state": r["state"], "reason": r["reason"]}
                  for r in night_problems(wh, day).iter_rows(named=True)},
    )
