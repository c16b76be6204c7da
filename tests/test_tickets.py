"""校核 tickets on SQLite and PostgreSQL: one per failing record or conflict group, due in working
days, fixed by a later delivery, answered by command or reply workbook, overdue past the due date,
extended with an approver."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from openpyxl import Workbook

from catalog.loader import Catalogue
from guiji.base import merge_library
from guiji.ods import ingest
from guiji.std import standardize_batch
from quality.config import ScorecardConfig
from quality.conflicts import check_library_consistency
from quality.references import check_references
from quality.scorecard.inputs import response_counts
from quality.tickets.commands import REPLY_SHEET, answer_ticket, close_ticket, extend_ticket, import_reply
from quality.tickets.store import read_events, read_tickets
from quality.tickets.sync import sync_tickets
from quality.tickets.transitions import (
    Event,
    TicketError,
    TicketStatus,
    due_date,
    next_status,
    working_days_late,
)
from tests import citykit
from tests.citykit import PEOPLE
from warehouse.store import Warehouse

TZ = ZoneInfo("Asia/Shanghai")
DAY1 = dt.date(2026, 9, 30)  # the day before National Day
DAY2 = dt.date(2026, 10, 8)  # the first working day after it
CONFIG = ScorecardConfig()
HEADER = ["SFZ", "XINGMING", "XINGBIE", "SHENGRI"]


def run_day(wh: Warehouse, cat: Catalogue, landing: Path, day: dt.date) -> None:
    """归集 of one batch date as the nightly job does it: ODS, 标准层, base libraries, 一数一源, references."""
    for r in cat.resources:
        ingest(wh, cat, r, day, landing, os.environ)
        standardize_batch(wh, cat, r, day, with_gx=False)
    for lib in cat.libraries:
        merge_library(wh, cat, lib.code, day)
        check_library_consistency(wh, cat, lib.code, day)
        check_references(wh, cat, lib.code, day)


def deliver_with_defects(landing: Path, day: dt.date, *, fixed: bool = False) -> None:
    """Every resource's delivery of ``day``. Unless ``fixed``: 户政 gives person 1 a birth date the ID
    number contradicts; 社保 gives person 2 another name than 户政 (一数一源) and a 10-digit mobile."""
    citykit.deliver_day1(landing, day)
    rows = [[p, n, s, b] for p, n, s, b in PEOPLE]
    if not fixed:
        rows[1][3] = "19920316"
    citykit.write_csv(landing / "hz" / f"{day:%Y%m%d}" / "renkou.csv", HEADER, rows)
    name, phone = (PEOPLE[2][1], "13700000003") if fixed else ("赵钢", "1370000003")
    citykit.write_db(landing, [(PEOPLE[2][0], name, phone, f"{day} 09:00:00")])


def tickets(wh: Warehouse) -> dict[tuple[str, str], dict]:
    """Tickets by (department, kind)."""
    return {(t["department"], t["kind"]): t for t in read_tickets(wh).iter_rows(named=True)}


def test_the_transition_table_says_where_each_event_takes_a_ticket_and_refuses_the_rest() -> None:
    S, E = TicketStatus, Event
    moves = {  # status × event → status; an event missing from a row is refused
        None: {E.opened: S.open},
        S.open: {E.overdue: S.overdue, E.answered: S.answered, E.fixed: S.fixed, E.extended: S.open,
                 E.extended_still_late: S.open, E.closed: S.closed},
        S.overdue: {E.answered: S.answered, E.fixed: S.fixed, E.extended: S.open,
                    E.extended_still_late: S.overdue, E.closed: S.closed},
        S.answered: {E.answered: S.answered, E.fixed: S.fixed, E.closed: S.closed},
        S.fixed: {},
        S.closed: {},
    }
    for status, row in moves.items():
        for event in Event:
            if event in row:
                assert next_status(status, event) == row[event], (status, event)
            else:
                with pytest.raises(TicketError):
                    next_status(status, event)
    assert {e.action for e in (E.extended, E.extended_still_late)} == {"extended"}  # one audit action


def test_the_deadline_skips_national_day_and_counts_the_adjusted_saturday() -> None:
    # 2026-10-01..07 are holidays; Saturday 10-10 is a 调休 working day, Sunday 10-11 is not
    assert due_date(DAY1, 5) == dt.date(2026, 10, 13)  # 10-08, 10-09, 10-10, 10-12, 10-13
    assert due_date(DAY1, 3) == dt.date(2026, 10, 10)  # a Saturday, and a working day
    assert due_date(DAY1, 4) == dt.date(2026, 10, 12)
    assert due_date(dt.date(2026, 10, 9), 5) == dt.date(2026, 10, 15)  # Sat 10-10, 10-12 … 10-15
    assert working_days_late(dt.date(2026, 10, 13), dt.date(2026, 10, 16)) == 3


def test_each_failing_record_and_conflict_group_opens_one_ticket_due_in_five_working_days(
    warehouse: Warehouse, city
) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync = sync_tickets(warehouse, cat, DAY1, CONFIG, {"huzheng": "ZL-SHANHAI-HUZHENG-20260930"})

    got = tickets(warehouse)
    assert set(got) == {("huzheng", "record"), ("shebao", "record"), ("shebao", "conflict")}
    hz = got[("huzheng", "record")]
    assert hz["ticket_id"] == "JH-HUZHENG-20260930-0001" and hz["reference"] == "ZL-SHANHAI-HUZHENG-20260930"
    assert (hz["entity_key"], hz["items"], hz["status"]) == (PEOPLE[1][0], "dob.id_birth_date", "open")
    assert (hz["opened_on"], hz["due_date"], hz["first_batch"]) == (DAY1, dt.date(2026, 10, 13),
                                                                     "huzheng_renkou.20260930.1")
    sb = got[("shebao", "record")]
    assert (sb["entity_key"], sb["items"]) == (PEOPLE[2][0], "phone.mobile")
    conflict = got[("shebao", "conflict")]
    assert (conflict["ticket_id"], conflict["library"], conflict["entity_key"], conflict["items"]) == \
        ("JH-SHEBAO-20260930-0002", "people", PEOPLE[2][0], "full_name")
    assert conflict["item_labels"] == "姓名与权威部门不一致"
    assert sorted(sync.opened) == sorted(t["ticket_id"] for t in got.values())
    assert set(read_events(warehouse).get_column("action")) == {"opened"}

    again = sync_tickets(warehouse, cat, DAY1, CONFIG)  # the same night once more: nothing new
    assert (again.opened, again.fixed, again.overdue) == ([], [], [])
    assert read_tickets(warehouse).height == 3 and read_events(warehouse).height == 3


def test_a_later_delivery_that_corrects_the_record_fixes_its_ticket(warehouse: Warehouse, city) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)
    deliver_with_defects(landing, DAY2, fixed=True)
    run_day(warehouse, cat, landing, DAY2)
    sync = sync_tickets(warehouse, cat, DAY2, CONFIG)

    got = tickets(warehouse)
    assert sorted(sync.opened) == [] and len(sync.fixed) == 3
    hz = got[("huzheng", "record")]
    assert (hz["status"], hz["fixed_batch"], hz["resolved_on"], hz["resolved_on_time"]) == \
        ("fixed", "huzheng_renkou.20261008.1", DAY2, True)
    assert (got[("shebao", "record")]["status"], got[("shebao", "record")]["fixed_batch"]) == \
        ("fixed", "shebao_canbao.20261008.1")
    assert (got[("shebao", "conflict")]["status"], got[("shebao", "conflict")]["fixed_batch"]) == \
        ("fixed", "shebao_canbao.20261008.1")
    events = read_events(warehouse, hz["ticket_id"])
    assert events.get_column("action").to_list() == ["opened", "fixed"]
    assert events.row(1, named=True)["batch_id"] == "huzheng_renkou.20261008.1"


def test_a_record_still_failing_in_the_next_delivery_keeps_its_one_ticket(warehouse: Warehouse, city) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)
    deliver_with_defects(landing, DAY2)  # the same defects again
    run_day(warehouse, cat, landing, DAY2)
    sync = sync_tickets(warehouse, cat, DAY2, CONFIG)

    assert sync.opened == [] and sync.fixed == []
    hz = tickets(warehouse)[("huzheng", "record")]
    assert (hz["status"], hz["opened_on"], hz["last_batch"]) == ("open", DAY1, "huzheng_renkou.20261008.1")
    assert read_tickets(warehouse).height == 3


def test_a_ticket_is_answered_by_command_on_time_and_then_cannot_be_answered_once_fixed(
    warehouse: Warehouse, city
) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)
    ticket_id = tickets(warehouse)[("huzheng", "record")]["ticket_id"]

    t = answer_ticket(warehouse, ticket_id, "出生日期以户籍档案为准, 已更正", "张三",
                         at=dt.datetime(2026, 10, 9, 10, 0, tzinfo=TZ), tz=TZ)
    assert (t["status"], t["answered_by"], t["resolved_on"], t["resolved_on_time"]) == \
        ("answered", "张三", dt.date(2026, 10, 9), True)
    stored = tickets(warehouse)[("huzheng", "record")]
    assert (stored["status"], stored["answer_note"]) == ("answered", "出生日期以户籍档案为准, 已更正")
    [ev] = read_events(warehouse, ticket_id).filter(pl.col("action") == "answered").iter_rows(named=True)
    assert (ev["from_status"], ev["to_status"], ev["actor"]) == ("open", "answered", "张三")

    # a later delivery still corrects it: answered → fixed, keeping the on-time answer
    deliver_with_defects(landing, DAY2, fixed=True)
    run_day(warehouse, cat, landing, DAY2)
    sync_tickets(warehouse, cat, DAY2, CONFIG)
    fixed = tickets(warehouse)[("huzheng", "record")]
    assert (fixed["status"], fixed["resolved_on"]) == ("fixed", dt.date(2026, 10, 9))
    with pytest.raises(TicketError, match="已修复"):
        answer_ticket(warehouse, ticket_id, "再次答复")
    with pytest.raises(TicketError, match="没有编号"):
        answer_ticket(warehouse, "JH-NOPE-20260930-0001", "答复")


def test_a_ticket_past_its_due_date_becomes_overdue_is_escalated_and_costs_the_response_score(
    warehouse: Warehouse, city
) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)

    assert sync_tickets(warehouse, cat, dt.date(2026, 10, 12), CONFIG).overdue == []
    late = sync_tickets(warehouse, cat, dt.date(2026, 10, 13), CONFIG)  # the due date is over tonight
    assert len(late.overdue) == 3
    hz = tickets(warehouse)[("huzheng", "record")]
    assert (hz["status"], hz["escalated_on"]) == ("overdue", dt.date(2026, 10, 13))
    counts = {r["department"]: r for r in response_counts(read_tickets(warehouse), dt.date(2026, 10, 13))
              .iter_rows(named=True)}
    assert (counts["huzheng"]["due"], counts["huzheng"]["on_time"], counts["huzheng"]["overdue"]) == (1, 0, 1)
    assert (counts["shebao"]["due"], counts["shebao"]["overdue"]) == (2, 2)
    assert sync_tickets(warehouse, cat, dt.date(2026, 10, 14), CONFIG).overdue == []  # escalated once

    t = answer_ticket(warehouse, hz["ticket_id"], "已核实", "张三", at=dt.datetime(2026, 10, 14, 9, tzinfo=TZ), tz=TZ)
    assert (t["status"], t["resolved_on_time"]) == ("answered", False)
    counts = response_counts(read_tickets(warehouse), dt.date(2026, 10, 14)).filter(
        pl.col("department") == "huzheng").row(0, named=True)
    assert (counts["due"], counts["on_time"], counts["overdue"]) == (1, 0, 0)


def test_an_extension_moves_the_due_date_records_its_approver_and_is_capped(warehouse: Warehouse, city) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)
    hz = tickets(warehouse)[("huzheng", "record")]["ticket_id"]

    t = extend_ticket(warehouse, hz, 5, "李四(数据资源处)", CONFIG, note="档案调阅需时",
                         at=dt.datetime(2026, 10, 9, 9, tzinfo=TZ), tz=TZ)
    # 10 working days after 09-30: 10-08 … 10-13, 10-14, 10-15, 10-16, 10-19, 10-20
    assert (t["due_date"], t["extension_days"], t["extended_by"], t["extension_note"]) == \
        (dt.date(2026, 10, 20), 5, "李四(数据资源处)", "档案调阅需时")
    [ev] = read_events(warehouse, hz).filter(pl.col("action") == "extended").iter_rows(named=True)
    assert ev["actor"] == "李四(数据资源处)" and "新期限 2026-10-20" in ev["note"]
    late = sync_tickets(warehouse, cat, dt.date(2026, 10, 13), CONFIG)
    assert sorted(late.overdue) == sorted(t["ticket_id"] for (d, _), t in tickets(warehouse).items() if d == "shebao")
    assert tickets(warehouse)[("huzheng", "record")]["status"] == "open"  # extended: not overdue on 10-13

    with pytest.raises(TicketError, match="超过上限 15"):
        extend_ticket(warehouse, hz, 11, "李四", CONFIG)
    with pytest.raises(TicketError, match="批准人"):
        extend_ticket(warehouse, hz, 1, " ", CONFIG)

    # an overdue ticket given more time is open again
    sb = tickets(warehouse)[("shebao", "record")]
    assert sb["status"] == "overdue"
    t = extend_ticket(warehouse, sb["ticket_id"], 10, "王五", CONFIG, at=dt.datetime(2026, 10, 14, 9, tzinfo=TZ),
                         tz=TZ)
    assert (t["status"], t["due_date"]) == ("open", dt.date(2026, 10, 27))


def test_a_reply_workbook_answers_the_tickets_it_fills_in(warehouse: Warehouse, city, tmp_path: Path) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)
    got = tickets(warehouse)
    wb = Workbook()
    ws = wb.active
    ws.title = REPLY_SHEET
    ws.append(["社保中心 · 请填写后回传"])
    ws.append([])
    ws.append(["校核单号", "类型", "回复说明", "回复人"])
    ws.append([got[("shebao", "record")]["ticket_id"], "失败记录", "手机号漏录一位, 已补正", "赵六"])
    ws.append([got[("shebao", "conflict")]["ticket_id"], "一数一源冲突", None, None])
    ws.append(["JH-SHEBAO-20260930-0099", "失败记录", "不存在的单号", "赵六"])
    path = tmp_path / "回复.xlsx"
    wb.save(path)

    out = import_reply(warehouse, path, at=dt.datetime(2026, 10, 9, 15, tzinfo=TZ), tz=TZ)
    assert out.answered == [got[("shebao", "record")]["ticket_id"]] and out.blank == 1
    assert [i for i, _ in out.skipped] == ["JH-SHEBAO-20260930-0099"]
    after = tickets(warehouse)
    assert (after[("shebao", "record")]["status"], after[("shebao", "record")]["answered_by"],
            after[("shebao", "record")]["answer_note"]) == ("answered", "赵六", "手机号漏录一位, 已补正")
    assert after[("shebao", "conflict")]["status"] == "open"
    [ev] = read_events(warehouse, got[("shebao", "record")]["ticket_id"]).filter(
        pl.col("action") == "answered").iter_rows(named=True)
    assert "回复.xlsx" in ev["note"]


def test_a_ticket_closed_by_an_engineer_is_not_reopened_for_the_same_failure(warehouse: Warehouse, city) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    run_day(warehouse, cat, landing, DAY1)
    sync_tickets(warehouse, cat, DAY1, CONFIG)
    hz = tickets(warehouse)[("huzheng", "record")]["ticket_id"]
    close_ticket(warehouse, hz, "数据工程师甲", "户籍档案确认该出生日期无误")
    deliver_with_defects(landing, DAY2)
    run_day(warehouse, cat, landing, DAY2)
    sync = sync_tickets(warehouse, cat, DAY2, CONFIG)
    assert sync.opened == []
    assert [t["status"] for t in read_tickets(warehouse, department="huzheng").iter_rows(named=True)] == ["closed"]
