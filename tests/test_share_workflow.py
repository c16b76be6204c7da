"""共享申请 on SQLite and PostgreSQL: every transition of the workflow, the deadlines in Chinese
working days across National Day 2026 and its 调休 Saturday, refusal of 不予共享 with the reason,
opinions routed by 一数一源, expiry, and the append-only audit."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
import sqlalchemy as sa
from openpyxl import load_workbook

from catalog.loader import Catalogue, load_catalogue
from desensitize.pseudonym import PseudonymKey
from pipelines.cli import main, show_lines
from quality.mail import Mailer, read_deliveries
from sharing import commands as sc
from sharing import store
from sharing.extract import write_extract
from sharing.overdue import escalate, overdue_applications, summary_lines
from sharing.report import write_use_report
from sharing.workflow import (
    TRANSITIONS,
    ApplicationError,
    ApplicationKind,
    ApplicationStatus,
    Deadlines,
    Event,
    RequesterType,
    next_status,
)
from tests.share_city import demo_catalogue, persons, write_base
from warehouse.migrations import open_warehouse
from warehouse.store import Warehouse

TZ = ZoneInfo("Asia/Shanghai")
DEMO = Path(__file__).resolve().parent.parent / "catalog" / "demo"
SEP30 = dt.datetime(2026, 9, 30, 10, 0, tzinfo=TZ)  # the day before National Day


@pytest.fixture
def demo() -> Catalogue:
    return load_catalogue(DEMO)


@pytest.fixture
def wh(warehouse_url: str):
    w = open_warehouse(warehouse_url)
    yield w
    w.dispose()


def refusing_catalogue(tmp_path: Path) -> Catalogue:
    """The demo catalogue with 民政 婚姻登记 marked 不予共享."""
    root = tmp_path / "catalog"
    shutil.copytree(DEMO, root)
    f = root / "resources" / "mzj_hydj.yaml"
    f.write_text(f.read_text(encoding="utf-8").replace("share: 有条件共享", "share: 不予共享"), encoding="utf-8")
    return load_catalogue(root)


def apply_rsj(wh: Warehouse, cat: Catalogue, elements=("name", "mobile"), at=SEP30, **kw) -> dict:
    return sc.apply(wh, cat, requester="rsj", library="person", elements=list(elements), purpose="社保待遇资格认证",
                    until=dt.date(2027, 12, 31), at=at, tz=TZ, **kw).application


# --- pure: the table and the deadlines ------------------------------------------------------------


def test_the_opinion_deadline_skips_national_day_and_counts_the_working_saturday() -> None:
    d = Deadlines()
    assert d.opinion_due(dt.date(2026, 9, 30)) == dt.date(2026, 10, 13)  # 10-08, 09, 10(六, 调休), 12, 13
    assert d.opinion_due(dt.date(2026, 9, 30), not_collected=True) == dt.date(2026, 10, 15)  # Wenzhou art. 20: 7
    assert d.approval_due(dt.date(2026, 10, 9)) == dt.date(2026, 10, 15)  # 10-10(六, 调休), 12, 13, 14, 15
    assert d.approval_due(dt.date(2026, 10, 9)) != dt.date(2026, 10, 9) + dt.timedelta(days=7)


def test_every_move_outside_the_table_is_refused() -> None:
    statuses = [None, *ApplicationStatus]
    for s in statuses:
        for e in Event:
            if (s, e) in TRANSITIONS:
                assert next_status(s and s.value, e) == TRANSITIONS[(s, e)]
            else:
                with pytest.raises(ApplicationError):
                    next_status(s and s.value, e)


# --- storage: each transition ---------------------------------------------------------------------


def test_conditional_elements_go_to_their_authorities_and_are_due_in_working_days(wh, demo) -> None:
    app = apply_rsj(wh, demo)
    assert app["application_id"] == "GX-20260930-0001"
    assert app["status"] == "opinion" and app["opinion_due"] == dt.date(2026, 10, 13)
    rows = {r["element"]: r for r in store.read_elements(wh, application_id=app["application_id"]).iter_rows(named=True)}
    assert rows["name"]["authority"] == "gaj" and rows["name"]["decision"] == "pending"
    assert rows["mobile"]["authority"] == "rsj" and rows["mobile"]["share_class"] == "有条件共享"
    ev = store.read_events(wh, app["application_id"])
    assert ev.get_column("action").to_list() == ["submitted"]


def test_opinions_then_approval_grant_the_elements(wh, demo) -> None:
    app_id = apply_rsj(wh, demo)["application_id"]
    with pytest.raises(ApplicationError, match="没有待 mzj"):
        sc.review(wh, app_id, dept="mzj", agree=True, at=SEP30)
    with pytest.raises(ApplicationError, match="不能批准"):
        sc.decide(wh, app_id, approve=True, by="王局")
    a = sc.review(wh, app_id, dept="gaj", agree=True, note="限认证使用", at=dt.datetime(2026, 10, 8, 9, tzinfo=TZ)).application
    assert a["status"] == "opinion"
    a = sc.review(wh, app_id, dept="rsj", agree=True, at=dt.datetime(2026, 10, 9, 9, tzinfo=TZ)).application
    assert a["status"] == "approval" and a["approval_due"] == dt.date(2026, 10, 15)
    a = sc.decide(wh, app_id, approve=True, by="王局", note="同意").application
    assert a["status"] == "approved"
    assert sorted(sc.granted_elements(wh, app_id)) == ["mobile", "name"]
    actions = store.read_events(wh, app_id).get_column("action").to_list()
    assert actions == ["submitted", "opinion", "opinion", "opinions_complete", "approved"]
    with pytest.raises(ApplicationError):
        sc.decide(wh, app_id, approve=False, by="王局", note="再议")


def test_a_disagreeing_department_refuses_its_element_with_the_reason(wh, demo) -> None:
    app_id = apply_rsj(wh, demo)["application_id"]
    with pytest.raises(ApplicationError, match="理由"):
        sc.review(wh, app_id, dept="gaj", agree=False)
    sc.review(wh, app_id, dept="gaj", agree=False, note="姓名不在授权范围")
    a = sc.review(wh, app_id, dept="rsj", agree=True).application
    assert a["status"] == "approval"
    sc.decide(wh, app_id, approve=True, by="王局")
    assert sc.granted_elements(wh, app_id) == ["mobile"]
    name = {r["element"]: r for r in store.read_elements(wh, application_id=app_id).iter_rows(named=True)}["name"]
    assert name["decision"] == "refused" and "姓名不在授权范围" in name["reason"]


def test_all_refused_opinions_reject_the_application(wh, demo) -> None:
    app_id = apply_rsj(wh, demo, elements=["name"])["application_id"]
    a = sc.review(wh, app_id, dept="gaj", agree=False, note="不同意").application
    assert a["status"] == "rejected"


def test_the_bureau_rejects_and_revokes(wh, demo) -> None:
    app_id = apply_rsj(wh, demo, elements=["mobile"])["application_id"]
    sc.review(wh, app_id, dept="rsj", agree=True)
    assert sc.decide(wh, app_id, approve=False, by="王局", note="用途不明确").application["status"] == "rejected"
    app2 = apply_rsj(wh, demo, elements=["mobile"])["application_id"]
    assert app2 == "GX-20260930-0002"
    sc.review(wh, app2, dept="rsj", agree=True)
    sc.decide(wh, app2, approve=True, by="王局")
    assert sc.revoke(wh, app2, by="王局", note="用途已结束").application["status"] == "revoked"
    with pytest.raises(ApplicationError):
        sc.revoke(wh, app2, by="王局", note="again")


def test_unconditional_elements_are_granted_at_once(wh, demo) -> None:
    a = sc.apply(wh, demo, requester="rsj", library="legal_entity", elements=["org_name", "business_status"],
                 purpose="参保单位核验", until=dt.date(2027, 1, 31), at=SEP30, tz=TZ).application
    assert a["status"] == "approved"
    assert sorted(sc.granted_elements(wh, a["application_id"])) == ["business_status", "org_name"]


def test_elements_not_shared_are_refused_at_once_with_the_reason(wh, tmp_path) -> None:
    cat = refusing_catalogue(tmp_path)
    a = apply_rsj(wh, cat, elements=["marital_status"])
    assert a["status"] == "rejected" and "不予共享" in a["decision_note"]
    mixed = apply_rsj(wh, cat, elements=["marital_status", "mobile"])
    rows = {r["element"]: r for r in store.read_elements(wh, application_id=mixed["application_id"]).iter_rows(named=True)}
    assert rows["marital_status"]["decision"] == "refused" and "mzj_hydj" in rows["marital_status"]["reason"]
    assert rows["mobile"]["decision"] == "pending" and mixed["status"] == "opinion"


def test_applications_expire_after_their_date(wh, demo) -> None:
    a = sc.apply(wh, demo, requester="rsj", library="legal_entity", elements=["org_name"], purpose="核验",
                 until=dt.date(2026, 10, 31), at=SEP30, tz=TZ).application
    assert sc.deliverable(wh, dt.date(2026, 10, 31)).height == 1
    assert sc.expire(wh, dt.date(2026, 10, 31)) == []
    assert sc.expire(wh, dt.date(2026, 11, 1)) == [a["application_id"]]
    assert sc.deliverable(wh, dt.date(2026, 11, 1)).height == 0
    assert store.read_applications(wh, application_id=a["application_id"]).item(0, "status") == "expired"


def test_bad_input_is_named(wh, demo) -> None:
    with pytest.raises(ApplicationError, match="没有数据元 nickname"):
        apply_rsj(wh, demo, elements=["nickname"])
    with pytest.raises(ApplicationError, match="没有部门"):
        sc.apply(wh, demo, requester="xyz", library="person", elements=["name"], purpose="p", until=dt.date(2027, 1, 1))
    with pytest.raises(ApplicationError, match="filter"):
        apply_rsj(wh, demo, row_filter="salary > 3")
    with pytest.raises(ApplicationError, match="DATE '2000-01-01'"):
        apply_rsj(wh, demo, row_filter="birth_date > 'abc'")
    assert apply_rsj(wh, demo, row_filter="birth_date >= DATE '1990-01-01'")["row_filter"] == \
        "birth_date >= DATE '1990-01-01'"
    with pytest.raises(ApplicationError, match="公民或企业"):
        sc.apply(wh, demo, requester="rsj", library="person", elements=["gender"], purpose="p",
                 until=dt.date(2027, 1, 1), kind=ApplicationKind.open)
    with pytest.raises(ApplicationError, match="应用场景"):
        sc.apply(wh, demo, requester="张三", requester_type=RequesterType.citizen, library="person",
                 elements=["gender"], purpose="学术研究", until=dt.date(2027, 1, 1), kind=ApplicationKind.open)
    a = sc.apply(wh, demo, requester="张三", requester_type=RequesterType.citizen, library="person",
                 elements=["gender"], purpose="学术研究", until=dt.date(2027, 1, 1), kind=ApplicationKind.open,
                 scenario="人口结构论文", security_measures="单机存储, 不对外提供")
    assert a.application["application_id"].startswith("KF-")


def test_the_audit_tables_refuse_update_and_delete(wh, demo) -> None:
    apply_rsj(wh, demo)
    name = wh.qualified("audit", "share_events")
    for sql in (f"UPDATE {name} SET actor = 'x'", f"DELETE FROM {name}"):
        with pytest.raises(sa.exc.DBAPIError, match="只可追加"), wh.begin() as conn:
            conn.execute(sa.text(sql))
    assert store.read_events(wh).height == 1


def test_the_cli_applies_reviews_approves_lists_and_shows(warehouse_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", warehouse_url)
    assert main(["share", "apply", "--requester", "rsj", "--library", "person", "--elements", "name,mobile",
                 "--purpose", "社保待遇资格认证", "--until", "2099-12-31"]) == 0
    out = capsys.readouterr().out
    app_id = out.split("申请编号 ")[1].split()[0]
    assert main(["share", "review", app_id, "--dept", "gaj", "--agree"]) == 0
    assert main(["share", "review", app_id, "--dept", "rsj", "--agree", "--note", "同意"]) == 0
    assert main(["share", "approve", app_id, "--by", "王局"]) == 0
    assert main(["share", "list", "--status", "approved"]) == 0
    assert app_id in capsys.readouterr().out
    assert main(["share", "show", app_id]) == 0
    shown = capsys.readouterr().out
    assert "市人力社保局" in shown and "准予" in shown and "批准" in shown
    assert main(["share", "approve", app_id, "--by", "王局"]) == 2
    assert "已批准" in capsys.readouterr().err


def test_the_cli_traces_a_leak_or_says_it_cannot(warehouse_url, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("GONGSHU_PSEUDONYM_KEY", "cli-trace-test-key-0123456789")
    wh = open_warehouse(warehouse_url)
    cat = demo_catalogue()
    write_base(wh, cat, persons(300), dt.date(2026, 11, 1))
    app_id = sc.apply(wh, cat, requester="rsj", library="person", elements=["mobile"], purpose="认证",
                      until=dt.date(2099, 1, 1)).application["application_id"]
    sc.review(wh, app_id, dept="rsj", agree=True)
    sc.decide(wh, app_id, approve=True, by="王局")

    x = write_extract(wh, cat, app_id, dt.date(2026, 11, 20), PseudonymKey(b"cli-trace-test-key-0123456789"), tmp_path)
    leak = tmp_path / "leak.csv"
    pl.read_csv(x.files[0], infer_schema=False).sample(100, seed=5).select("mobile").write_csv(leak)
    assert main(["share", "trace", str(leak), "--by", "审计员"]) == 0
    out = capsys.readouterr().out
    assert f"来源: 申请 {app_id} · 申请方 市人力社保局" in out
    other = tmp_path / "other.csv"
    other.write_text("mobile\n" + "\n".join(f"13{i:01d}****{i:04d}" for i in range(200)), encoding="utf-8")
    assert main(["share", "trace", str(other)]) == 1
    assert "无法确定来源" in capsys.readouterr().out
    assert main(["share", "trace", str(tmp_path / "missing.csv")]) == 2
    wh.dispose()


def test_the_cli_trace_fails_when_the_leak_comes_from_another_application_than_expected(
        warehouse_url, tmp_path, monkeypatch, capsys) -> None:
    """``--expect ID`` (what ``make demo`` checks its own application with): exit 0 only when the leak is
    traced to that application; another application, or no verdict, exits 1 with the reason."""
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("GONGSHU_PSEUDONYM_KEY", "cli-trace-test-key-0123456789")
    wh = open_warehouse(warehouse_url)
    cat = demo_catalogue()
    write_base(wh, cat, persons(300), dt.date(2026, 11, 1))
    apps = []
    for dept in ("rsj", "mzj"):
        app_id = sc.apply(wh, cat, requester=dept, library="person", elements=["mobile"], purpose="核对",
                          until=dt.date(2099, 1, 1)).application["application_id"]
        sc.review(wh, app_id, dept="rsj", agree=True)
        sc.decide(wh, app_id, approve=True, by="王局")
        apps.append(app_id)
    mine, other = apps
    x = write_extract(wh, cat, other, dt.date(2026, 11, 20), PseudonymKey(b"cli-trace-test-key-0123456789"), tmp_path)
    leak = tmp_path / "leak.csv"
    pl.read_csv(x.files[0], infer_schema=False).sample(100, seed=5).select("mobile").write_csv(leak)
    assert main(["share", "trace", str(leak), "--expect", mine]) == 1
    captured = capsys.readouterr()
    assert f"来源: 申请 {other}" in captured.out
    assert f"溯源结果为申请 {other}, 不是预期的申请 {mine}" in captured.err
    assert main(["share", "trace", str(leak), "--expect", other]) == 0
    assert "错误" not in capsys.readouterr().err
    unknown = tmp_path / "unknown.csv"
    unknown.write_text("mobile\n" + "\n".join(f"13{i:01d}****{i:04d}" for i in range(200)), encoding="utf-8")
    assert main(["share", "trace", str(unknown), "--expect", other]) == 1
    assert main(["share", "trace", str(leak), "--expect", " "]) == 2  # an empty id ($app unset) checks nothing
    assert "需要预期的申请编号" in capsys.readouterr().err
    wh.dispose()


def test_overdue_opinions_and_approvals_are_in_the_summary_and_mailed_once(wh, demo, tmp_path) -> None:
    late_opinion = apply_rsj(wh, demo)["application_id"]  # due 2026-10-13
    late_approval = apply_rsj(wh, demo, elements=["mobile"])["application_id"]
    sc.review(wh, late_approval, dept="rsj", agree=True, at=dt.datetime(2026, 10, 9, 9, tzinfo=TZ))  # due 10-15
    assert overdue_applications(wh, dt.date(2026, 10, 13)) == []
    late = {a["application_id"]: a for a in overdue_applications(wh, dt.date(2026, 10, 16))}
    assert set(late) == {late_opinion, late_approval}
    assert late[late_opinion]["waiting"] == ["gaj", "rsj"] and late[late_opinion]["late"] == 3  # 10-14, 15, 16
    assert late[late_approval]["stage"] == "approval" and late[late_approval]["late"] == 1
    text = "\n".join(summary_lines(wh, demo, dt.date(2026, 10, 16)))
    assert f"超期 {late_opinion}" in text and "待 市公安局、市人力社保局 出具意见" in text and "待大数据局审批" in text
    mailer = Mailer(wh, outbox=tmp_path / "outbox")
    assert sorted(escalate(wh, demo, dt.date(2026, 10, 16), mailer, ["eng@bureau.cn"])) == sorted([late_opinion, late_approval])
    assert escalate(wh, demo, dt.date(2026, 10, 19), mailer, ["eng@bureau.cn"]) == []  # once
    sent = read_deliveries(wh, "share_overdue")
    assert sent.height == 2
    assert "mail_overdue" in store.read_events(wh, late_opinion).get_column("action").to_list()
    shown = "\n".join(show_lines(wh, late_opinion))  # gongshu share show: the mail by its label, not its code
    assert "超期通知邮件" in shown and "mail_overdue" not in shown
    assert "已于 2026-10-16 通知" in "\n".join(summary_lines(wh, demo, dt.date(2026, 10, 19)))


def test_the_use_report_lists_decisions_events_extracts_and_traces(wh, demo, tmp_path) -> None:
    write_base(wh, demo, persons(200), dt.date(2026, 11, 1))
    app_id = apply_rsj(wh, demo, elements=["mobile"])["application_id"]
    sc.review(wh, app_id, dept="rsj", agree=True)
    sc.decide(wh, app_id, approve=True, by="王局")
    write_extract(wh, demo, app_id, dt.date(2026, 11, 20), PseudonymKey(b"use-report-test-key-0123456789"), tmp_path / "x")
    html, xlsx = write_use_report(wh, app_id, tmp_path / "reports")
    text = html.read_text(encoding="utf-8")
    assert app_id in text and "市人力社保局" in text and "社保待遇资格认证" in text and "批准" in text and "2026-11-20" in text
    wb = load_workbook(xlsx, read_only=True)
    assert wb.sheetnames == ["申请", "数据元", "审计记录", "提取记录", "溯源记录"]
    rows = list(wb["提取记录"].iter_rows(values_only=True))
    assert rows[1][2] == "200"


def test_the_deadlines_are_settings(warehouse_url, monkeypatch, capsys) -> None:
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("GONGSHU_SHARE_OPINION_DAYS", "3")
    assert main(["share", "apply", "--requester", "rsj", "--library", "person", "--elements", "mobile",
                 "--purpose", "认证", "--until", "2099-12-31"]) == 0
    today = dt.datetime.now(TZ).date()
    assert f"数源部门意见期限 {Deadlines(opinion=3).opinion_due(today)}" in capsys.readouterr().out
    monkeypatch.setenv("GONGSHU_SHARE_APPROVAL_DAYS", "0")
    assert main(["share", "list"]) == 2
    assert "GONGSHU_SHARE_APPROVAL_DAYS" in capsys.readouterr().err
