"""``quality.tickets`` (current state, one row per ticket) and ``audit.ticket_events`` (every
transition, who and when), changed through a :class:`Ledger`: the rows of one transaction are
moved by the transition table and written back with one set-based upsert."""

from __future__ import annotations

import datetime as dt
import uuid

import polars as pl
import sqlalchemy as sa

from quality.tickets.transitions import Event, next_status
from warehouse.store import Column, Warehouse

TICKETS = "tickets"
EVENTS = "ticket_events"

TICKET_SCHEMA: dict[str, pl.DataType] = {
    "ticket_id": pl.String(), "kind": pl.String(), "department": pl.String(), "resource_id": pl.String(),
    "library": pl.String(), "entity_key": pl.String(), "keyed": pl.Boolean(), "items": pl.String(),
    "item_labels": pl.String(), "first_batch": pl.String(), "last_batch": pl.String(), "opened_on": pl.Date(),
    "reference": pl.String(), "working_days": pl.Int64(), "extension_days": pl.Int64(), "due_date": pl.Date(),
    "extended_by": pl.String(), "extended_at": pl.Datetime("us"), "extension_note": pl.String(),
    "status": pl.String(), "status_since": pl.Datetime("us"), "answered_at": pl.Datetime("us"),
    "answered_by": pl.String(), "answer_note": pl.String(), "fixed_batch": pl.String(), "resolved_on": pl.Date(),
    "resolved_on_time": pl.Boolean(), "escalated_on": pl.Date(), "closed_by": pl.String(),
    "updated_at": pl.Datetime("us"),
}
"""Times are UTC (naive), dates are the city's calendar days."""

EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(), "ticket_id": pl.String(), "at": pl.Datetime("us"), "period": pl.Date(),
    "action": pl.String(), "from_status": pl.String(), "to_status": pl.String(), "actor": pl.String(),
    "note": pl.String(), "batch_id": pl.String(),
}


def tickets_table(wh: Warehouse) -> sa.Table:
    return wh.table("quality", TICKETS, [Column(n, t) for n, t in TICKET_SCHEMA.items()],
                    primary_key=["ticket_id"], indexes=[["department", "status"], ["kind", "resource_id"]])


def events_table(wh: Warehouse) -> sa.Table:
    return wh.table("audit", EVENTS, [Column(n, t) for n, t in EVENT_SCHEMA.items()],
                    primary_key=["event_id"], indexes=[["ticket_id"]])


def read_tickets(wh: Warehouse, conn: sa.Connection | None = None, department: str | None = None) -> pl.DataFrame:
    """Tickets (every status), by ticket id."""
    if not wh.exists("quality", TICKETS):
        return pl.DataFrame(schema=TICKET_SCHEMA)
    where, params = ("WHERE department = :d", {"d": department}) if department else ("", {})
    sql = f"SELECT {', '.join(TICKET_SCHEMA)} FROM {wh.qualified('quality', TICKETS)} {where} ORDER BY ticket_id"
    if conn is not None:
        return wh.read(conn, sql, TICKET_SCHEMA, params)
    with wh.engine.connect() as c:
        return wh.read(c, sql, TICKET_SCHEMA, params)


def read_events(wh: Warehouse, ticket_id: str | None = None) -> pl.DataFrame:
    if not wh.exists("audit", EVENTS):
        return pl.DataFrame(schema=EVENT_SCHEMA)
    where, params = ("WHERE ticket_id = :t", {"t": ticket_id}) if ticket_id else ("", {})
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {', '.join(EVENT_SCHEMA)} FROM {wh.qualified('audit', EVENTS)} {where} "
                             "ORDER BY at, event_id", EVENT_SCHEMA, params)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


def upsert_tickets(wh: Warehouse, conn: sa.Connection, rows: pl.DataFrame) -> None:
    """Insert new tickets and update changed ones in one statement (staged in a temporary table)."""
    if rows.is_empty():
        return
    staged = wh.temp_table(conn, "gongshu_ticket_changes", rows.select(list(TICKET_SCHEMA)))
    cols = ", ".join(wh.quote(c) for c in TICKET_SCHEMA)
    changes = ", ".join(f"{wh.quote(c)} = excluded.{wh.quote(c)}" for c in TICKET_SCHEMA if c != "ticket_id")
    # "WHERE true": SQLite would otherwise read ON CONFLICT as part of the SELECT's join syntax
    conn.execute(sa.text(f"INSERT INTO {wh.qualified('quality', TICKETS)} ({cols}) SELECT {cols} FROM {staged} "
                         f"WHERE true ON CONFLICT (ticket_id) DO UPDATE SET {changes}"))
    conn.execute(sa.text(f"DROP TABLE {staged}"))


class Ledger:
    """Ticket rows being changed in one transaction, and the events that say how."""

    def __init__(self, rows: list[dict], period: dt.date | None, now: dt.datetime):
        self.rows = {r["ticket_id"]: r for r in rows}
        self.changed: set[str] = set()
        self.events: list[dict] = []
        self.period = period
        self.now = now

    def add(self, row: dict, actor: str | None = "gongshu", note: str | None = None, batch: str | None = None) -> None:
        row["status"] = next_status(None, Event.opened).value
        self.rows[row["ticket_id"]] = row
        self._log(row, Event.opened, None, row["status"], actor, note, batch)

    def move(self, t: dict, event: Event, actor: str | None = "gongshu", note: str | None = None,
             batch: str | None = None, **values) -> None:
        """Apply ``event`` (the transition table decides the status) and set ``values``."""
        before = t["status"]
        status = next_status(before, event).value
        t.update(values)
        if status != before:
            t["status_since"] = self.now
        t["status"] = status
        t["updated_at"] = self.now
        self._log(t, event, before, status, actor, note, batch)

    def touch(self, t: dict, **values) -> None:
        """Change what a ticket says (its latest batch, its rules) without an event."""
        if any(t.get(k) != v for k, v in values.items()):
            t.update(values, updated_at=self.now)
            self.changed.add(t["ticket_id"])

    def _log(self, t: dict, event: Event, before: str | None, after: str, actor, note, batch) -> None:
        self.changed.add(t["ticket_id"])
        self.events.append({"event_id": uuid.uuid4().hex, "ticket_id": t["ticket_id"], "at": self.now,
                            "period": self.period, "action": event.action, "from_status": before,
                            "to_status": after, "actor": actor, "note": note, "batch_id": batch})

    def write(self, wh: Warehouse, conn: sa.Connection) -> None:
        if not self.changed:
            return
        upsert_tickets(wh, conn, pl.DataFrame([self.rows[i] for i in sorted(self.changed)], schema=TICKET_SCHEMA))
        wh.insert(conn, events_table(wh), pl.DataFrame(self.events, schema=EVENT_SCHEMA))


def open_ledger(wh: Warehouse, conn: sa.Connection, period: dt.date | None, now: dt.datetime) -> Ledger:
    """Every ticket, locked for this transaction (PostgreSQL), ready to be changed."""
    for t in (tickets_table(wh), events_table(wh)):
        wh.create(conn, t)
    if wh.is_postgres:  # the nightly sync and a command answering a ticket may run at once
        conn.execute(sa.text(f"LOCK TABLE {wh.qualified('quality', TICKETS)} IN SHARE ROW EXCLUSIVE MODE"))
    return Ledger(list(read_tickets(wh, conn).iter_rows(named=True)), period, now)
