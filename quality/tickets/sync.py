"""The nightly sync of 校核 tickets (the ``quality/tickets`` asset) and the counts R is scored from.

For batch date D: open a ticket for each failing record of each resource's latest batch and for
each open 一数一源 conflict group, fix the ones a later delivery corrected, mark the ones past due
as overdue (escalated once). Idempotent for a given day.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import polars as pl

from catalog.loader import Catalogue
from desensitize.lookup import ValueSet
from quality.config import ScorecardConfig
from quality.conflicts import CONFLICTS, TABLE_SCHEMA
from quality.tickets.records import batch_keys, carried_keys, failing_records
from quality.tickets.store import Ledger, open_ledger, read_tickets, utcnow
from quality.tickets.transitions import ACTIVE, UNRESOLVED, Event, TicketKind, TicketStatus, due_date
from warehouse.store import Warehouse


def batch_order(batch_id: str | None) -> tuple[str, int]:
    """Sort key of ``<resource>.<YYYYMMDD>.<seq>``: date, then re-delivery sequence."""
    m = re.search(r"\.(\d{8})\.(\d+)$", batch_id or "")
    return (m.group(1), int(m.group(2))) if m else ("", 0)


def batch_day(batch_id: str) -> dt.date:
    return dt.datetime.strptime(batch_order(batch_id)[0], "%Y%m%d").date()


@dataclass
class TicketSync:
    """What one sync did, by ticket id."""

    period: dt.date
    opened: list[str] = field(default_factory=list)
    seen_again: list[str] = field(default_factory=list)
    fixed: list[str] = field(default_factory=list)
    overdue: list[str] = field(default_factory=list)  # newly overdue: escalated to the data engineers


def _reconciled_batches(wh: Warehouse, day: dt.date) -> dict[str, list[str]]:
    """Standardised batches up to ``day`` per resource, the newest re-delivery of each date, in order."""
    if not wh.exists("audit", "reconciliation"):
        return {}
    schema = {"resource_id": pl.String(), "batch_id": pl.String()}
    with wh.engine.connect() as conn:
        frame = wh.read(conn, f"SELECT resource_id, batch_id FROM {wh.qualified('audit', 'reconciliation')} "
                              "WHERE batch_date <= :d", schema, {"d": day})
    out: dict[str, dict[str, str]] = {}
    for r in frame.iter_rows(named=True):
        date, _ = batch_order(r["batch_id"])
        per = out.setdefault(r["resource_id"], {})
        if date not in per or batch_order(per[date]) < batch_order(r["batch_id"]):
            per[date] = r["batch_id"]
    return {rid: sorted(v.values(), key=batch_order) for rid, v in out.items()}


def _group(records: pl.DataFrame) -> dict[str, dict]:
    """Failing records of a batch per entity: the rules it fails, with their labels."""
    out: dict[str, dict] = {}
    for r in records.group_by("entity_key").agg("keyed", "rule_id", "label").iter_rows(named=True):
        rules = sorted(set(zip(r["rule_id"], r["label"], strict=True)))
        out[r["entity_key"]] = {"keyed": bool(r["keyed"][0]), "items": "; ".join(i for i, _ in rules),
                                "item_labels": "; ".join(lbl for _, lbl in rules)}
    return out


def conflicts_open_at(wh: Warehouse, catalogue: Catalogue, day: dt.date) -> tuple[pl.DataFrame, pl.DataFrame]:
    """(conflicts open at the end of ``day``, conflicts closed by then)."""
    if not wh.exists("quality", CONFLICTS):
        empty = pl.DataFrame(schema=TABLE_SCHEMA)
        return empty, empty
    with wh.engine.connect() as conn:
        rows = wh.read(conn, f"SELECT {', '.join(wh.quote(c) for c in TABLE_SCHEMA)} FROM "
                             f"{wh.qualified('quality', CONFLICTS)}", TABLE_SCHEMA)
    rows = rows.filter(pl.col("library").is_in([lib.code for lib in catalogue.libraries])
                       & (pl.col("first_seen_date") <= day))
    is_open = (pl.col("status") == "open") | (pl.col("closed_date") > day)
    return rows.filter(is_open), rows.filter(~is_open & (pl.col("closed_date") <= day))


def _new_ticket(kind: str, dept: str, resource_id: str | None, library: str, entity_key: str, keyed: bool,
                items: str, labels: str, batch: str, day: dt.date, reference: str | None,
                config: ScorecardConfig, now: dt.datetime) -> dict:
    return {
        "ticket_id": None, "kind": kind, "department": dept, "resource_id": resource_id, "library": library,
        "entity_key": entity_key, "keyed": keyed, "items": items, "item_labels": labels, "first_batch": batch,
        "last_batch": batch, "opened_on": day, "reference": reference, "working_days": config.ticket_working_days,
        "extension_days": 0, "due_date": due_date(day, config.ticket_working_days), "extended_by": None,
        "extended_at": None, "extension_note": None, "status": TicketStatus.open.value, "status_since": now, "answered_at": None,
        "answered_by": None, "answer_note": None, "fixed_batch": None, "resolved_on": None,
        "resolved_on_time": None, "escalated_on": None, "closed_by": None, "updated_at": now,
    }


def _fix(ledger: Ledger, t: dict, batch: str, on: dt.date, note: str) -> None:
    values: dict = {"fixed_batch": batch}
    if t["status"] in UNRESOLVED:
        values.update(resolved_on=on, resolved_on_time=on <= t["due_date"])
    ledger.move(t, Event.fixed, note=note, batch=batch, **values)


def sync_tickets(
    wh: Warehouse,
    catalogue: Catalogue,
    day: dt.date,
    config: ScorecardConfig,
    references: Mapping[str, str] | None = None,
    now: dt.datetime | None = None,
) -> TicketSync:
    """Bring every ticket up to the end of batch date ``day``: open tickets for the failing records
    of each resource's latest batch and for open conflict groups, fix the ones a later delivery
    corrected, mark the ones past due as overdue. Idempotent for a given day."""
    now = now or utcnow()
    references = references or {}
    batches = _reconciled_batches(wh, day)
    known = {t["ticket_id"]: t for t in read_tickets(wh).iter_rows(named=True)}

    # The heavy reads happen before the write transaction: failing records and keys of the batches
    # each resource's active tickets have not seen yet, and of its latest batch.
    loaded: dict[str, tuple[dict[str, dict], set[str], set[str]]] = {}
    plan: dict[str, list[str]] = {}
    for resource in catalogue.resources:
        ids = batches.get(resource.id)
        if not ids:
            continue
        active = [t for t in known.values() if t["kind"] == TicketKind.record and t["resource_id"] == resource.id
                  and t["status"] in ACTIVE]
        since = min((batch_order(t["last_batch"]) for t in active), default=batch_order(ids[-1]))
        plan[resource.id] = [b for b in ids if batch_order(b) > since] or [ids[-1]]
        if ids[-1] not in plan[resource.id]:
            plan[resource.id].append(ids[-1])
        for b in plan[resource.id]:
            keys = batch_keys(wh, catalogue, resource, b)
            records = failing_records(wh, catalogue, resource, b, keys)
            # every key the batch delivered, as hashes (16 bytes a key, desensitize.lookup): as a set of
            # Python strings, a 10 M-person city's batches held GBs until the ledger was written
            loaded[b] = (_group(records), ValueSet.of(keys.get_column("entity_key")),
                         carried_keys(wh, catalogue, resource, b) if active else ValueSet.empty())
            del keys, records
    open_conflicts, closed_conflicts = conflicts_open_at(wh, catalogue, day)

    result = TicketSync(day)
    with wh.begin() as conn:
        ledger = open_ledger(wh, conn, day, now)
        rows = ledger.rows
        new: list[dict] = []

        def active_of(kind: str, scope: str, scope_col: str) -> dict[str, dict]:
            return {t["entity_key"]: t for t in rows.values()
                    if t["kind"] == kind and t[scope_col] == scope and t["status"] in ACTIVE}

        closed: dict[tuple, list[set[str]]] = {}
        for t in rows.values():
            if t["status"] == TicketStatus.closed:
                scope = t["resource_id"] if t["kind"] == TicketKind.record else (t["department"], t["library"])
                closed.setdefault((t["kind"], scope, t["entity_key"]), []).append(set(t["items"].split("; ")))

        def closed_for(kind: str, scope, entity: str, items: str) -> bool:
            """An engineer closed this entity's ticket for these rules: do not reopen it."""
            wanted = set(items.split("; "))
            return any(wanted <= done for done in closed.get((kind, scope, entity), []))

        for resource in catalogue.resources:
            for b in plan.get(resource.id, []):
                failing, sent, kept = loaded[b]
                active = active_of(TicketKind.record, resource.id, "resource_id")
                delivered, unchanged = _among(sent, active), _among(kept, active)
                for entity, t in active.items():
                    if batch_order(t["last_batch"]) >= batch_order(b):
                        continue
                    if entity in failing:
                        ledger.touch(t, last_batch=b, items=failing[entity]["items"],
                                     item_labels=failing[entity]["item_labels"])
                        result.seen_again.append(t["ticket_id"])
                    elif entity in unchanged:  # delivered again unchanged (carried): still failing as it was
                        ledger.touch(t, last_batch=b)
                        result.seen_again.append(t["ticket_id"])
                    elif entity in delivered:
                        _fix(ledger, t, b, batch_day(b), "后续交付已更正该记录")
                        result.fixed.append(t["ticket_id"])
                if b != batches[resource.id][-1]:
                    continue
                active = active_of(TicketKind.record, resource.id, "resource_id")
                lib = resource.library
                for entity in sorted(set(failing) - set(active)):
                    f = failing[entity]
                    if closed_for(TicketKind.record, resource.id, entity, f["items"]):
                        continue
                    new.append(_new_ticket(TicketKind.record, resource.department, resource.id, lib, entity, f["keyed"],
                                           f["items"], f["item_labels"], b, day,
                                           references.get(resource.department), config, now))

        # 一数一源: one ticket per entity and department of a library, all its differing elements
        names = {(lib.code, e.code): e.name for lib in catalogue.libraries for e in lib.elements}
        groups: dict[tuple[str, str, str], dict] = {}
        for r in open_conflicts.sort("element").iter_rows(named=True):
            g = groups.setdefault((r["department"], r["library"], r["entity_key"]),
                                  {"elements": [], "resource_id": r["resource_id"], "last": r["last_seen_batch"]})
            g["elements"].append(r["element"])
            g["last"] = max(g["last"], r["last_seen_batch"], key=batch_order)
        closed_by_key: dict[tuple[str, str, str], tuple[str, dt.date]] = {}
        for r in closed_conflicts.iter_rows(named=True):
            k = (r["department"], r["library"], r["entity_key"])
            if k not in closed_by_key or closed_by_key[k][1] < r["closed_date"]:
                closed_by_key[k] = (r["closed_batch"], r["closed_date"])
        active_conflicts = {(t["department"], t["library"], t["entity_key"]): t for t in rows.values()
                            if t["kind"] == TicketKind.conflict and t["status"] in ACTIVE}
        for k, t in active_conflicts.items():
            if k in groups:
                g = groups[k]
                ledger.touch(t, last_batch=g["last"], items="; ".join(g["elements"]),
                             item_labels="; ".join(f"{names.get((k[1], e), e)}与权威部门不一致" for e in g["elements"]))
            elif k in closed_by_key:
                batch, on = closed_by_key[k]
                _fix(ledger, t, batch, on, "冲突已由后续交付消除")
                result.fixed.append(t["ticket_id"])
        for k in sorted(set(groups) - set(active_conflicts)):
            g = groups[k]
            items = "; ".join(g["elements"])
            if closed_for(TicketKind.conflict, (k[0], k[1]), k[2], items):
                continue
            labels = "; ".join(f"{names.get((k[1], e), e)}与权威部门不一致" for e in g["elements"])
            new.append(_new_ticket(TicketKind.conflict, k[0], g["resource_id"], k[1], k[2], True, items, labels, g["last"],
                                   day, references.get(k[0]), config, now))

        # numbering: JH-<DEPT>-<YYYYMMDD>-<seq>, continuing any earlier tickets of the same day
        for dept in sorted({t["department"] for t in new}):
            prefix = f"JH-{dept.upper()}-{day:%Y%m%d}-"
            seq = max((int(i.rsplit("-", 1)[1]) for i in rows if i.startswith(prefix)), default=0)
            for t in sorted((t for t in new if t["department"] == dept),
                            key=lambda t: (t["kind"] != TicketKind.record, t["resource_id"] or "", t["entity_key"])):
                seq += 1
                t["ticket_id"] = f"{prefix}{seq:04d}"
                ledger.add(t, note=t["item_labels"], batch=t["last_batch"])
                result.opened.append(t["ticket_id"])

        for t in list(rows.values()):
            if t["status"] == TicketStatus.open and t["due_date"] <= day:
                ledger.move(t, Event.overdue, note=f"超过校核期限 {t['due_date']}, 已上报数据工程师",
                            escalated_on=t["escalated_on"] or day)
                result.overdue.append(t["ticket_id"])
        ledger.write(wh, conn)
    return result


def _among(keys: ValueSet, entities: Iterable[str]) -> set[str]:
    """The entities whose key is one of ``keys``."""
    wanted = pl.Series(list(entities), dtype=pl.String)
    return set(wanted.filter(keys.contains(wanted)).to_list())


def response_counts(tickets: pl.DataFrame, day: dt.date) -> pl.DataFrame:
    """Per department at the end of ``day``: tickets due (deadline passed), closed on time, overdue.

    A ticket is due once its due date is over; it was closed on time when answered, fixed or closed
    by its due date; it is overdue when it is due and still unresolved at ``day``.
    """
    t = tickets.filter((pl.col("opened_on") <= day) & (pl.col("due_date") <= day))
    resolved_by_day = pl.col("resolved_on").is_not_null() & (pl.col("resolved_on") <= day)
    return t.group_by("department").agg(
        pl.len().cast(pl.Int64).alias("due"),
        (resolved_by_day & (pl.col("resolved_on") <= pl.col("due_date"))).sum().cast(pl.Int64).alias("on_time"),
        (~resolved_by_day).sum().cast(pl.Int64).alias("overdue"),
    ).sort("department")
