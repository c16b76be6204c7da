"""One period's scorecard end to end: gather its inputs, compute, store the run."""

from __future__ import annotations

import datetime as dt

from catalog.loader import Catalogue
from quality.config import ScorecardConfig
from quality.scorecard.compute import Scorecard, compute, resource_weights
from quality.scorecard.inputs import gather_rules, ticket_responses
from quality.scorecard.store import store_scorecard
from warehouse.store import Warehouse


def run_scorecard(
    wh: Warehouse, catalogue: Catalogue, day: dt.date, config: ScorecardConfig, run_id: str,
    now: dt.datetime | None = None,
) -> Scorecard:
    """Score every department for ``day`` and store the run.

    Reads the 校核 tickets as they stand: sync them first (:func:`quality.tickets.sync.sync_tickets`,
    the ``quality/tickets`` asset), as R counts them.
    """
    now = now or dt.datetime.now(dt.UTC).replace(tzinfo=None)
    card = compute(day, gather_rules(wh, catalogue, day), [d.code for d in catalogue.departments],
                   resource_weights(catalogue, config), ticket_responses(wh, day), config)
    store_scorecard(wh, card, run_id, now)
    return card
