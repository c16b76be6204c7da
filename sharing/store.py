"""The tables of the share workflow (created by migration 0006, the same layout declared here):

* ``share.applications`` — one row per application, its status and deadlines;
* ``share.application_elements`` — one row per requested element: class, authority, decision,
  the source department's opinion and the reason of a refusal;
* ``audit.share_events`` — every transition and every mail (append-only);
* ``audit.share_extracts`` — every extract written (append-only);
* ``audit.share_traces`` — every ``gongshu share trace`` (append-only).

The audit tables refuse UPDATE and DELETE (triggers of the migration).
"""

from __future__ import annotations

import datetime as dt
import itertools
import time
import uuid

import polars as pl
import sqlalchemy as sa

from warehouse.store import Column, Warehouse

APPLICATIONS = "applications"
ELEMENTS = "application_elements"
EVENTS = "share_events"
EXTRACTS = "share_extracts"
TRACES = "share_traces"

APPLICATION_SCHEMA: dict[str, pl.DataType] = {
    "application_id": pl.String(), "kind": pl.String(), "requester": pl.String(), "requester_type": pl.String(),
    "requester_name": pl.String(), "library": pl.String(), "purpose": pl.String(), "scenario": pl.String(),
    "security_measures": pl.String(), "row_filter": pl.String(),
    "valid_until": pl.Date(), "linkage": pl.Boolean(), "not_collected": pl.Boolean(), "status": pl.String(),
    "submitted_at": pl.Datetime("us"), "submitted_by": pl.String(), "opinion_due": pl.Date(),
    "opinions_done_on": pl.Date(), "approval_due": pl.Date(), "decided_at": pl.Datetime("us"),
    "decided_by": pl.String(), "decision_note": pl.String(), "opinion_escalated_on": pl.Date(),
    "approval_escalated_on": pl.Date(), "status_since": pl.Datetime("us"), "updated_at": pl.Datetime("us"),
}
ELEMENT_SCHEMA: dict[str, pl.DataType] = {
    "application_id": pl.String(), "element": pl.String(), "element_name": pl.String(), "share_class": pl.String(),
    "authority": pl.String(), "decision": pl.String(), "reason": pl.String(), "opinion_by": pl.String(),
    "opinion_at": pl.Datetime("us"), "opinion_note": pl.String(),
}
EVENT_SCHEMA: dict[str, pl.DataType] = {
    "event_id": pl.String(), "application_id": pl.String(), "at": pl.Datetime("us"), "action": pl.String(),
    "from_status": pl.String(), "to_status": pl.String(), "actor": pl.String(), "note": pl.String(),
    "elements": pl.String(), "rows": pl.Int64(),
}
EXTRACT_SCHEMA: dict[str, pl.DataType] = {
    "extract_id": pl.String(), "application_id": pl.String(), "as_of": pl.Date(), "at": pl.Datetime("us"),
    "requester": pl.String(), "library": pl.String(), "elements": pl.String(), "rows": pl.Int64(),
    "key_id": pl.String(), "watermark_id": pl.String(), "folder": pl.String(), "files": pl.String(),
    "sha256": pl.String(), "leaks": pl.Int64(), "run_id": pl.String(),
}
TRACE_SCHEMA: dict[str, pl.DataType] = {
    "trace_id": pl.String(), "at": pl.Datetime("us"), "actor": pl.String(), "file": pl.String(),
    "file_sha256": pl.String(), "rows": pl.Int64(), "columns": pl.String(), "verdict": pl.String(),
    "application_id": pl.String(), "requester": pl.String(), "evidence": pl.String(),
}
_LAYOUT = {
    APPLICATIONS: ("share", APPLICATION_SCHEMA, ["application_id"]),
    ELEMENTS: ("share", ELEMENT_SCHEMA, ["application_id", "element"]),
    EVENTS: ("audit", EVENT_SCHEMA, ["event_id"]),
    EXTRACTS: ("audit", EXTRACT_SCHEMA, ["extract_id"]),
    TRACES: ("audit", TRACE_SCHEMA, ["trace_id"]),
}


class NotMigrated(RuntimeError):
    def __init__(self, wh: Warehouse):
        super().__init__(f"仓库 {wh.safe_url} 尚无共享申请表: 请先升级仓库 (python -m warehouse.migrations --url … upgrade)")


def table(wh: Warehouse, name: str) -> sa.Table:
    layer, schema, pk = _LAYOUT[name]
    return wh.table(layer, name, [Column(n, t) for n, t in schema.items()], primary_key=pk)


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


_seq = itertools.count()


def new_id() -> str:
    """Unique and ordered as created within a process (events of one transaction share their time)."""
    return f"{time.time_ns():020d}{next(_seq) % 10_000:04d}{uuid.uuid4().hex[:8]}"


def _read(wh: Warehouse, conn: sa.Connection | None, name: str, where: str = "", params: dict | None = None,
          order: str = "") -> pl.DataFrame:
    layer, schema, _ = _LAYOUT[name]
    if not wh.exists(layer, name):
        raise NotMigrated(wh)
    sql = f"SELECT {', '.join(wh.quote(c) for c in schema)} FROM {wh.qualified(layer, name)} {where} {order}"
    if conn is not None:
        return wh.read(conn, sql, schema, params or {})
    with wh.engine.connect() as c:
        return wh.read(c, sql, schema, params or {})


def read_applications(wh: Warehouse, conn: sa.Connection | None = None, status: list[str] | None = None,
                      application_id: str | None = None) -> pl.DataFrame:
    clauses, params = [], {}
    if status:
        clauses.append("status IN (" + ", ".join(f":s{i}" for i in range(len(status))) + ")")
        params.update({f"s{i}": s for i, s in enumerate(status)})
    if application_id:
        clauses.append("application_id = :a")
        params["a"] = application_id
    where = ("WHERE " + " AND ".join(clauses)) if clauses else ""
    return _read(wh, conn, APPLICATIONS, where, params, "ORDER BY application_id")


def read_elements(wh: Warehouse, conn: sa.Connection | None = None, application_id: str | None = None) -> pl.DataFrame:
    where, params = ("WHERE application_id = :a", {"a": application_id}) if application_id else ("", {})
    return _read(wh, conn, ELEMENTS, where, params, "ORDER BY application_id, element")


def read_events(wh: Warehouse, application_id: str | None = None) -> pl.DataFrame:
    where, params = ("WHERE application_id = :a", {"a": application_id}) if application_id else ("", {})
    return _read(wh, None, EVENTS, where, params, "ORDER BY at, event_id")


def read_extracts(wh: Warehouse, application_id: str | None = None) -> pl.DataFrame:
    where, params = ("WHERE application_id = :a", {"a": application_id}) if application_id else ("", {})
    return _read(wh, None, EXTRACTS, where, params, "ORDER BY at, extract_id")


def read_traces(wh: Warehouse) -> pl.DataFrame:
    return _read(wh, None, TRACES, "", {}, "ORDER BY at, trace_id")


def append(wh: Warehouse, conn: sa.Connection, name: str, rows: list[dict]) -> None:
    """Append rows to a table (the audit tables take nothing else)."""
    _, schema, _ = _LAYOUT[name]
    wh.insert(conn, table(wh, name), pl.DataFrame(rows, schema=schema))


def save_application(wh: Warehouse, conn: sa.Connection, row: dict) -> None:
    """Insert or replace one application row."""
    t = table(wh, APPLICATIONS)
    conn.execute(t.delete().where(t.c.application_id == row["application_id"]))
    conn.execute(t.insert().values(**{k: row.get(k) for k in APPLICATION_SCHEMA}))


def save_elements(wh: Warehouse, conn: sa.Connection, rows: list[dict]) -> None:
    t = table(wh, ELEMENTS)
    for r in rows:
        conn.execute(t.delete().where(sa.and_(t.c.application_id == r["application_id"], t.c.element == r["element"])))
        conn.execute(t.insert().values(**{k: r.get(k) for k in ELEMENT_SCHEMA}))


def lock(wh: Warehouse, conn: sa.Connection) -> None:
    """Serialise the workflow's writers (a command and the nightly sensor may run at once)."""
    if wh.is_postgres:
        conn.execute(sa.text(f"LOCK TABLE {wh.qualified('share', APPLICATIONS)} IN SHARE ROW EXCLUSIVE MODE"))
