"""Opening a warehouse: bring one written by an earlier version of gongshu up to the current layout."""

from __future__ import annotations

import sqlalchemy as sa

from warehouse.base import MERGE_LOG
from warehouse.ods import BATCHES, prepare_batches
from warehouse.std import RECONCILIATION
from warehouse.store import Warehouse


def upgrade_warehouse(wh: Warehouse) -> None:
    """Bring a warehouse written by an earlier version to the current layout, in one transaction.

    Earlier versions stored each base-library value's lineage batch as the batch id text; it is now
    the batch's number (``ods.batches.batch_no``), which those versions did not have either.
    Idempotent, and a few catalogue queries when there is nothing to do. Run where a warehouse is
    opened (:func:`open_warehouse`), once per process.
    """
    if not wh.exists("ods", BATCHES):
        return
    with wh.begin() as conn:
        prepare_batches(wh, conn)
        for name in wh.layer_tables("base"):
            _number_lineage(wh, conn, name)
        # withheld batches (a failed blocking rule) and refolded histories are recorded since 2026-12
        _add_column(wh, conn, "audit", RECONCILIATION, "withheld", "TEXT")
        if _add_column(wh, conn, "audit", MERGE_LOG, "rebuilt_entities", "BIGINT"):
            conn.execute(sa.text(f"UPDATE {wh.qualified('audit', MERGE_LOG)} SET rebuilt_entities = 0"))
            conn.execute(sa.text(f"ALTER TABLE {wh.qualified('audit', MERGE_LOG)} DROP COLUMN skipped_older"))


def _add_column(wh: Warehouse, conn: sa.Connection, layer: str, name: str, column: str, sql_type: str) -> bool:
    """Add ``column`` to an existing table that lacks it; True when it was added."""
    if not wh.exists(layer, name):
        return False
    schema, table = wh.table_ref(layer, name)
    if column in {c["name"] for c in sa.inspect(conn).get_columns(table, schema=schema)}:
        return False
    conn.execute(sa.text(f"ALTER TABLE {wh.qualified(layer, name)} ADD COLUMN {wh.quote(column)} {sql_type}"))
    return True


def _number_lineage(wh: Warehouse, conn: sa.Connection, name: str) -> None:
    schema, table = wh.table_ref("base", name)
    text = [c["name"] for c in sa.inspect(conn).get_columns(table, schema=schema)
            if c["name"].endswith("__batch") and not isinstance(c["type"], sa.Integer)]
    if not text:
        return
    base, batches = wh.qualified("base", name), wh.qualified("ods", BATCHES)
    for c in text:
        conn.execute(sa.text(f"ALTER TABLE {base} ADD COLUMN {wh.quote(c + '_no')} BIGINT"))
    conn.execute(sa.text(f"UPDATE {base} SET " + ", ".join(
        f"{wh.quote(c + '_no')} = (SELECT batch_no FROM {batches} WHERE batch_id = {base}.{wh.quote(c)})"
        for c in text)))
    for c in text:
        conn.execute(sa.text(f"ALTER TABLE {base} DROP COLUMN {wh.quote(c)}"))
        conn.execute(sa.text(f"ALTER TABLE {base} RENAME COLUMN {wh.quote(c + '_no')} TO {wh.quote(c)}"))


def open_warehouse(url: str) -> Warehouse:
    """The warehouse at ``url``, a warehouse written by an earlier version brought up to date first.
    Every entry point (the Dagster resource, which the ``gongshu`` commands build too) opens the
    warehouse through here."""

    wh = Warehouse(url)
    upgrade_warehouse(wh)
    return wh
