"""Department reports: the numbers in the HTML and the XLSX, no raw identifier anywhere, the 校核
deadline over National Day, delivery by SMTP and to the outbox, escalation of overdue tickets, the
Dagster assets and the commands."""

from __future__ import annotations

import base64
import datetime as dt
import email
import io
import re
from email.policy import default as default_policy
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, materialize
from openpyxl import load_workbook

from assets.reports import build_department_reports_asset
from assets.scorecard import build_scorecard_asset
from assets.tickets import build_tickets_asset
from desensitize.pseudonym import PseudonymKey, token_of
from quality.config import ScorecardConfig
from quality.mail import Mailer, SmtpSettings, read_deliveries
from quality.report.context import build_report, report_reference
from quality.report.deliver import REPORT_CATEGORY
from quality.report.inputs import load_inputs
from quality.report.period import ReportRun, outcome_lines, produce_reports, report_lines
from quality.report.render import render_xlsx
from quality.rules import Dimension
from quality.scorecard.period import run_scorecard
from quality.tickets.commands import REPLY_SHEET, import_reply
from quality.tickets.store import read_tickets
from quality.tickets.sync import sync_tickets
from tests import citykit, test_mailer
from tests.citykit import PEOPLE
from tests.test_terminal import columns_aligned
from tests.test_tickets import DAY1, DAY2, HEADER, deliver_with_defects, run_day
from warehouse.store import Warehouse

KEY = PseudonymKey(b"test-only-pseudonym-key-0123456789")
CONFIG = ScorecardConfig()
ENGINEERS = ["dev@bureau.example"]  # GONGSHU_ENGINEER_EMAILS

smtp_server = test_mailer.smtp_server  # fixture: a local aiosmtpd server
MOBILES = ["13800000001", "13900000002", "1370000003", "13700000003"]
RAW = [p[0] for p in PEOPLE] + [p[1] for p in PEOPLE] + ["赵钢"] + MOBILES

# Hand-computed scores of the defects in tests.test_tickets.deliver_with_defects (batch date 2026-09-30):
# 户政 常住人口: 准确性 = (3·100 [unique] + 100 [date range] + 66.67 [1 of 3 birth dates ≠ ID] + 100 [gender]) / 6
#   = 94.44; every other dimension 100 (一致性: no copies) → S = (1500 + 2000 + 20·94.44 + 1500 + 500) / 75
#   = 98.52 = Q; R = 100 (nothing due) → total 0.8·98.52 + 20 = 98.81 (A).
# 社保 参保人员: 规范性 = (3·100 [ID] + 66.67 [1 of 3 mobiles] + 100 [parse]) / 5 = 93.33; 一致性 = 2 of 3 names
#   equal 户政's = 66.67 → S = (15·93.33 + 2000 + 2000 + 25·66.67 + 1500 + 500) / 100 = 90.67 → total 92.53 (B).
HZ_TOTAL = 0.8 * (1500 + 2000 + 20 * (300 + 100 + 200 / 3 + 100) / 6 + 1500 + 500) / 75 + 20
SB_TOTAL = 0.8 * (15 * (300 + 200 / 3 + 100) / 5 + 2000 + 2000 + 25 * 200 / 3 + 1500 + 500) / 100 + 20


def masked_id(number: str) -> str:
    """Hutool ID_CARD: the share layer publishes 出生日期 in full beside the same token."""
    return number[0] + "*" * 15 + number[-2:]


def night(wh: Warehouse, cat, landing: Path, tmp_path: Path, day: dt.date = DAY1, *, deliver: bool = True,
          mailer: Mailer | None = None, **kw) -> ReportRun:
    """The end of a nightly run: 归集 of ``day`` (unless ``deliver`` is off), tickets, scorecard, reports."""
    if deliver:
        deliver_with_defects(landing, day)
        run_day(wh, cat, landing, day)
    sync_tickets(wh, cat, day, CONFIG, {d.code: report_reference(cat, d.code, day) for d in cat.departments})
    run_scorecard(wh, cat, day, CONFIG, run_id=f"run-{day}")
    mailer = mailer or Mailer(wh, None, tmp_path / "outbox", "gongshu@bureau.example")
    return produce_reports(wh, cat, day, CONFIG, mailer=mailer, key=KEY, root=tmp_path / "reports", **kw)


def html_of(run: ReportRun, dept: str) -> str:
    return next(o for o in run.outcomes if o.department == dept).html.read_text(encoding="utf-8")


def sheet(run: ReportRun, dept: str, name: str) -> list[tuple]:
    path = next(o for o in run.outcomes if o.department == dept).xlsx
    wb = load_workbook(path, read_only=True)
    try:
        return [r for r in wb[name].iter_rows(values_only=True)]
    finally:
        wb.close()


def text_of(html: str) -> str:
    """The HTML as a reader sees it: tags and embedded images removed, whitespace collapsed."""
    html = re.sub(r"data:image/png;base64,[A-Za-z0-9+/=]+", "", html)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_the_report_shows_the_departments_known_failures_in_html_and_xlsx(warehouse: Warehouse, city, tmp_path) -> None:
    cat, landing = city
    run = night(warehouse, cat, landing, tmp_path)
    hz_ticket = read_tickets(warehouse, department="huzheng").row(0, named=True)["ticket_id"]
    person = PEOPLE[1][0]

    text = text_of(html_of(run, "huzheng"))
    assert "报告编号 ZL-SHANHAI-HUZHENG-20260930" in text
    assert "校核期限 2026-10-13 前" in text  # 5 working days after 09-30: National Day skipped, Sat 10-10 counted
    assert f"{HZ_TOTAL:.1f} A — 3/4 98.5 100.0" in text  # total, grade, change, rank, Q, R
    assert "准确性 94.4 — — 20" in text and "规范性 100.0" in text and "一致性 — — — 25" in text
    assert "常住人口 出生日期: 出生日期与身份号码一致 准确性 警告 3 1 66.67%" in text
    assert "共检查 10 条规则, 1 条有失败记录, 其余 9 条全部通过" in text
    assert f"{hz_ticket} 常住人口 {masked_id(person)} {token_of(person, KEY)} 出生日期" in text
    assert "1992-**-** 与身份号码中的出生日期一致" in text
    assert f"{hz_ticket} 失败记录 常住人口 {masked_id(person)} 出生日期: 出生日期与身份号码一致 2026-09-30 2026-10-13 待校核" in text
    assert "常住人口 每日 2026-09-30 24:00 2026-10-08 24:00 0 分钟 正常" in text

    sb = text_of(html_of(run, "shebao"))
    assert f"{SB_TOTAL:.1f} B — 4/4 90.7 100.0" in sb
    assert "参保人员 姓名: 与权威部门(户政中心)一致 一致性 警告 3 1 66.67%" in sb
    # the conflict: its ticket, the entity's token, both values masked, what was expected, where it was delivered
    conflict_ticket = read_tickets(warehouse, department="shebao").filter(pl.col("kind") == "conflict").item(0, "ticket_id")
    assert (f"{conflict_ticket} 姓名 {masked_id(PEOPLE[2][0])} {token_of(PEOPLE[2][0], KEY)} 赵*** 与权威来源 户政中心 一致 "
            "赵*** shebao_canbao.20260930.1 · 第 3 行") in sb
    assert "电话: 手机号码格式 137***0003 11 位手机号码 (1 开头, 第二位 3–9)" in sb  # 期望: what would have passed
    assert "电话: 手机号码格式 137***0003" in sb

    summary = dict((r[0], r[1]) for r in sheet(run, "huzheng", "概况") if r[0])
    assert summary["综合得分"] == pytest.approx(round(HZ_TOTAL, 2)) and summary["等级"] == "A"
    assert (summary["排名"], summary["失败记录数"], summary["待校核工单"], summary["校核期限"]) == ("3/4", 1, 1, "2026-10-13")
    rules = {r[1]: r for r in sheet(run, "huzheng", "规则结果")[1:]}
    assert rules["dob.id_birth_date"][5:8] == (3, 1, pytest.approx(2 / 3))
    assert rules["delivery.timely"][2] == "按更新周期(每日)及时交付 (1 天 + 1 个工作日)"
    [failure] = sheet(run, "huzheng", "失败记录")[1:]
    assert failure[:6] == (hz_ticket, "常住人口", masked_id(person), token_of(person, KEY), "出生日期", "dob.id_birth_date")
    assert failure[9:] == ("1992-**-**", "与身份号码中的出生日期一致", "huzheng_renkou.20260930.1", 2)
    form = sheet(run, "huzheng", REPLY_SHEET)
    assert form[2][:9] == ("校核单号", "类型", "资源", "主体标识(脱敏)", "令牌", "问题", "发出日期", "校核期限", "状态")
    assert form[3][:9] == (hz_ticket, "失败记录", "常住人口", masked_id(person), token_of(person, KEY),
                           "出生日期: 出生日期与身份号码一致", "2026-09-30", "2026-10-13", "待校核")
    [conflict] = sheet(run, "shebao", "一数一源冲突")[1:]
    assert conflict[:8] == (conflict_ticket, "姓名", "户政中心", masked_id(PEOPLE[2][0]), token_of(PEOPLE[2][0], KEY),
                            "赵***", "与权威来源 户政中心 一致", "赵***")
    assert conflict[11:] == ("shebao_canbao.20260930.1", 3)


def test_no_raw_identifier_reaches_the_html_the_workbook_or_the_mail(city, tmp_path: Path) -> None:
    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    run = night(wh, cat, landing, tmp_path)
    texts = []
    for o in run.outcomes:
        texts.append(o.html.read_text(encoding="utf-8"))
        wb = load_workbook(o.xlsx, read_only=True)
        texts += [str(v) for ws in wb for row in ws.iter_rows(values_only=True) for v in row if v is not None]
        wb.close()
    emls = sorted((tmp_path / "outbox").glob("*.eml"))
    assert len(emls) == 1  # only 户政 has an address; the others have none and no engineers are configured
    msg = email.message_from_bytes(emls[0].read_bytes(), policy=default_policy)
    for part in msg.walk():
        if part.get_content_maintype() == "text":
            texts.append(part.get_content())
        elif part.get_filename():
            wb = load_workbook(io.BytesIO(part.get_content()), read_only=True)
            texts += [str(v) for ws in wb for row in ws.iter_rows(values_only=True) for v in row if v is not None]
            wb.close()
    everything = "\n".join(texts)
    assert masked_id(PEOPLE[1][0]) in everything and masked_id(PEOPLE[2][0]) in everything  # the checks saw them
    leaks = [v for v in RAW if v in everything]
    assert leaks == []
    assert "-**-**" in everything and "1992-03-16" not in everything  # birth dates: year only
    wh.dispose()


def test_reports_are_mailed_through_smtp_when_configured_with_the_workbook_attached(
    city, smtp_server, tmp_path: Path
) -> None:
    inbox, port = smtp_server
    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    smtp = SmtpSettings("127.0.0.1", port, "none", "gongshu", "s3cret")
    run = night(wh, cat, landing, tmp_path, mailer=Mailer(wh, smtp, tmp_path / "outbox", "gongshu@bureau.example"),
                engineers=ENGINEERS)

    assert [o.delivery for o in run.outcomes] == ["sent (smtp)"] * 4
    mails = [(tuple(e.rcpt_tos), email.message_from_bytes(e.original_content, policy=default_policy))
             for e in inbox.envelopes]
    [(to, hz)] = [(to, m) for to, m in mails if "户政中心" in str(m["Subject"])]
    assert to == ("hz@shanhai.example",)
    assert str(hz["Subject"]) == f"【数据质量报告】户政中心 2026-09-30 综合得分 {HZ_TOTAL:.1f} (A) · 待校核 1 件 " \
                                 "(ZL-SHANHAI-HUZHENG-20260930)"
    html = hz.get_body(("html",)).get_content()
    assert html.replace("\r\n", "\n").strip() == html_of(run, "huzheng").strip()  # the same page as the file
    [att] = list(hz.iter_attachments())
    assert att.get_filename() == "户政中心_数据质量报告_20260930.xlsx"
    wb = load_workbook(io.BytesIO(att.get_content()), read_only=True)
    assert [r[0] for r in wb["失败记录"].iter_rows(values_only=True)][1:] == \
        [read_tickets(wh, department="huzheng").row(0, named=True)["ticket_id"]]
    wb.close()
    [(to, gs)] = [(to, m) for to, m in mails if "工商所" in str(m["Subject"])]
    assert to == ("dev@bureau.example",)  # no address in the catalogue: the data engineers get it
    assert list(gs.iter_attachments()) == []  # nothing to list: the short report, no workbook
    audit = read_deliveries(wh, REPORT_CATEGORY)
    assert sorted(audit.get_column("reference").to_list()) == sorted(o.reference for o in run.outcomes)
    assert set(audit.get_column("transport")) == {"smtp"} and set(audit.get_column("status")) == {"sent"}
    wh.dispose()


def test_without_smtp_each_report_is_an_eml_in_the_outbox_and_is_sent_once(city, tmp_path: Path) -> None:
    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    outbox = Mailer(wh, None, tmp_path / "outbox")
    run = night(wh, cat, landing, tmp_path, mailer=outbox, engineers=ENGINEERS)
    emls = sorted((tmp_path / "outbox").glob("*quality_report*.eml"))
    assert len(emls) == 4 and [o.delivery for o in run.outcomes] == ["sent (outbox)"] * 4
    subjects = sorted(str(email.message_from_bytes(p.read_bytes(), policy=default_policy)["Subject"]) for p in emls)
    assert any(s.startswith("【数据质量报告】社保中心 2026-09-30 综合得分 92.5 (B)") for s in subjects)
    assert sorted(p.name for p in (tmp_path / "outbox").glob("*.files/*")) == \
        ["户政中心_数据质量报告_20260930.xlsx", "社保中心_数据质量报告_20260930.xlsx"]
    lines = outcome_lines(run, cat)
    assert "户政中心" in "\n".join(lines) and "已发送(发件箱)  huzheng.html, huzheng.xlsx" in "\n".join(lines)
    assert columns_aligned(lines[2:], ["部门", "户政中心", "社保中心", "工商所"], ["文件", "huzheng.html"])

    again = produce_reports(wh, cat, DAY1, CONFIG, mailer=outbox, key=KEY, root=tmp_path / "reports",
                            engineers=ENGINEERS)
    assert [o.delivery for o in again.outcomes] == ["already sent"] * 4
    assert len(list((tmp_path / "outbox").glob("*quality_report*.eml"))) == 4
    produce_reports(wh, cat, DAY1, CONFIG, mailer=outbox, key=KEY, root=tmp_path / "reports",
                    engineers=ENGINEERS, resend=True)
    assert len(list((tmp_path / "outbox").glob("*quality_report*.eml"))) == 8
    assert read_deliveries(wh, REPORT_CATEGORY).height == 8
    summary = "\n".join(report_lines(wh, cat, DAY1, tmp_path / "reports"))
    assert "社保中心" in summary and "92.5 B" in summary and "已发送(发件箱)" in summary
    wh.dispose()


def test_a_department_with_nothing_wrong_gets_a_short_report_with_its_charts(city, tmp_path: Path) -> None:
    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    run = night(wh, cat, landing, tmp_path)
    html = html_of(run, "gongshang")
    text = text_of(html)
    assert "本期未发现失败记录、一数一源冲突、待校核工单或超期交付" in text and "100.0 A — 1/4" in text
    assert "评分说明: 满分: 全部规则通过, 无到期未处理的工单" in text
    assert "五、" not in text and "六、" not in text and "七、" not in text
    assert "共检查 12 条规则, 0 条有失败记录, 其余 12 条全部通过" in text
    pngs = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(pngs) == 2 and all(base64.b64decode(p).startswith(b"\x89PNG\r\n\x1a\n") for p in pngs)
    assert next(o for o in run.outcomes if o.department == "gongshang").delivery == "no recipients"
    wh.dispose()


def test_an_overdue_ticket_escalates_in_the_next_report_and_to_the_engineers(city, tmp_path: Path) -> None:
    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    night(wh, cat, landing, tmp_path, engineers=ENGINEERS)
    due = dt.date(2026, 10, 13)
    run = night(wh, cat, landing, tmp_path, due, deliver=False, engineers=ENGINEERS)  # nothing since: overdue, stale

    text = text_of(html_of(run, "huzheng"))
    # R = 100·0/1 − 5·1 → 0; 时效性 0 (a 每日 resource last delivered 09-30 is stale since 10-09):
    # Q = (1500 + 2000 + 20·94.44 + 0 + 500) / 75 = 78.52; total = 0.8·78.52 = 62.81 (D), 36.0 below the last report
    total = 0.8 * (1500 + 2000 + 20 * (300 + 100 + 200 / 3 + 100) / 6 + 500) / 75
    assert re.search(rf"{total:.1f} D -36\.0 \d/4 78\.5 0\.0", text)
    assert "本期: 到期 1, 按期 0, 超期 1" in text
    assert "已超期 1 件" in text and "超期工单已上报数据工程师" in text
    assert "2026-09-30 2026-10-13 已超期" in text
    assert "时效性 0.0 100.0 -100.0 15" in text
    assert run.escalated == 3 and run.escalation == "sent (outbox)"
    [eml] = sorted((tmp_path / "outbox").glob("*ticket_escalation*.eml"))
    msg = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert msg["To"] == "dev@bureau.example" and str(msg["Subject"]).startswith("【校核超期】3 件校核工单超期未处理")
    body = msg.get_body(("html",)).get_content()
    assert all(t in body for t in read_tickets(wh).get_column("ticket_id").to_list())
    [form] = [r for r in sheet(run, "huzheng", REPLY_SHEET)[3:]]
    assert form[8] == "已超期"
    # two working days later (Wed 10-14, Thu 10-15) the report says by how much it is late
    later = night(wh, cat, landing, tmp_path, dt.date(2026, 10, 15), deliver=False, engineers=ENGINEERS)
    assert "2026-09-30 2026-10-13 已超期 2 个工作日" in text_of(html_of(later, "huzheng"))
    wh.dispose()


def test_a_department_answers_by_filling_in_the_workbook_it_received(city, tmp_path: Path) -> None:
    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    run = night(wh, cat, landing, tmp_path)
    path = next(o for o in run.outcomes if o.department == "shebao").xlsx
    wb = load_workbook(path)
    ws = wb[REPLY_SHEET]
    header = [c.value for c in ws[3]]
    first = 4
    ws.cell(first, header.index("回复说明") + 1, "姓名已按户籍更正")
    ws.cell(first, header.index("回复人") + 1, "社保中心 钱七")
    reply = tmp_path / "社保中心_回复.xlsx"
    wb.save(reply)

    out = import_reply(wh, reply)
    ticket_id = ws.cell(first, 1).value
    assert out.answered == [ticket_id] and out.blank == 1 and out.skipped == []
    t = read_tickets(wh).filter(pl.col("ticket_id") == ticket_id).row(0, named=True)
    assert (t["status"], t["answered_by"], t["answer_note"]) == ("answered", "社保中心 钱七", "姓名已按户籍更正")
    wh.dispose()


def test_tickets_then_scorecard_then_reports_are_dagster_assets_after_every_base_library(
    city, tmp_path: Path
) -> None:
    from assets.keys import base_key, daily_partitions
    from assets.resources import MailerResource, PseudonymKeyResource, Settings, WarehouseResource

    cat, landing = city
    url = f"sqlite:///{tmp_path / 'w.db'}"
    wh = Warehouse(url)
    deliver_with_defects(landing, DAY1)
    run_day(wh, cat, landing, DAY1)
    parts = daily_partitions(cat)
    tickets = build_tickets_asset(cat, parts)
    card, reports = build_scorecard_asset(cat, parts), build_department_reports_asset(cat, parts)
    libraries, ticket_key = {base_key(lib) for lib in cat.libraries}, AssetKey(["quality", "tickets"])
    tspec = tickets.specs_by_key[ticket_key]
    assert tspec.group_name == "quality" and {d.asset_key for d in tspec.deps} == libraries
    spec = card.specs_by_key[AssetKey(["quality", "scorecard"])]  # R counts the synced tickets
    assert spec.group_name == "quality" and {d.asset_key for d in spec.deps} == libraries | {ticket_key}
    rspec = reports.specs_by_key[AssetKey(["quality", "department_reports"])]
    assert {d.asset_key for d in rspec.deps} == {AssetKey(["quality", "scorecard"]), ticket_key}
    assert rspec.group_name == "quality"

    warehouse = WarehouseResource(url=url)
    alone = materialize([card], partition_key=DAY1.isoformat(), resources={"warehouse": warehouse,
                                                                            "settings": Settings(home=str(tmp_path / "home"))})
    assert alone.success and read_tickets(wh).height == 0  # the scorecard computes; it opens no ticket
    result = materialize([tickets, card, reports], partition_key=DAY1.isoformat(), resources={
        "warehouse": warehouse, "mailer": MailerResource(warehouse=warehouse, outbox=str(tmp_path / "outbox")),
        "pseudonym": PseudonymKeyResource(key="dagster-test-key-0123456789"),
        "settings": Settings(home=str(tmp_path / "home"))})
    assert result.success
    tmeta = result.asset_materializations_for_node(tickets.node_def.name)[0].metadata
    assert (tmeta["新开校核单"].value, tmeta["待校核"].value, tmeta["新超期(已上报)"].value) == (3, 3, 0)
    assert read_tickets(wh).height == 3
    md = result.asset_materializations_for_node(card.node_def.name)[0].metadata["评分表"].value
    assert "| 排名 | 部门 | 总分 | 等级 | 较上期 | 数据分Q | 响应分R | 规范性 |" in md
    assert f"| 3 | 户政中心 | {HZ_TOTAL:.1f} | A | — | 98.5 | 100.0 | 100.0 | 100.0 | 94.4 | — | 100.0 | 100.0 | 0 |" in md
    meta = result.asset_materializations_for_node(reports.node_def.name)[0].metadata
    assert meta["报告数"].value == 4 and meta["已发送"].value == 1
    assert (tmp_path / "home" / "reports" / "2026-09-30" / "shebao.xlsx").exists()
    wh.dispose()


def test_the_commands_answer_extend_and_report(city, tmp_path: Path, monkeypatch, capsys) -> None:
    from pipelines.cli import main

    cat, landing = city
    url = f"sqlite:///{tmp_path / 'w.db'}"
    wh = Warehouse(url)
    night(wh, cat, landing, tmp_path)
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", url)
    monkeypatch.setenv("GONGSHU_CATALOG", str(cat.root))
    monkeypatch.setenv("GONGSHU_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("GONGSHU_SMTP_HOST", raising=False)
    hz, sb = (read_tickets(wh, department=d).row(0, named=True)["ticket_id"] for d in ("huzheng", "shebao"))

    assert main(["ticket", "answer", hz, "--note", "已按户籍档案更正", "--by", "张三"]) == 0
    assert main(["ticket", "extend", sb, "--days", "3", "--approved-by", "李四"]) == 0
    assert main(["ticket", "extend", sb, "--days", "13", "--approved-by", "李四"]) == 2
    out = capsys.readouterr()
    assert f"校核单 {hz} 已登记答复" in out.out and "新期限 2026-10-16, 批准人 李四" in out.out
    assert "超过上限 15 个工作日" in out.err
    rows = {r["ticket_id"]: r for r in read_tickets(wh).iter_rows(named=True)}
    assert (rows[hz]["status"], rows[hz]["answered_by"]) == ("answered", "张三")
    assert (rows[sb]["due_date"], rows[sb]["extended_by"], rows[sb]["extension_days"]) == (dt.date(2026, 10, 16), "李四", 3)

    assert main(["report", "--date", "2026-09-30", "--no-send"]) == 0
    out = capsys.readouterr().out
    assert "部门质量报告 · 批次日期 2026-09-30" in out and "未发送  huzheng.html, huzheng.xlsx" in out
    assert (tmp_path / "home" / "reports" / "2026-09-30" / "huzheng.html").exists()
    wh.dispose()


def test_a_report_row_joined_to_the_share_layer_on_its_token_gives_no_id_number_back(city, tmp_path: Path) -> None:
    from assets.share import build_share_output
    from desensitize.leaks import Needles, scan_file, scan_rows
    from desensitize.policy import share_policies

    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    run = night(wh, cat, landing, tmp_path)
    people = next(p for p in share_policies(cat) if p.name == "people_restricted")
    share = build_share_output(wh, cat, people, DAY1, key=KEY).frame  # publishes 出生日期 in full
    needles = Needles.from_warehouse(wh, cat)
    failures = sheet(run, "huzheng", "失败记录")[1:]
    report = pl.DataFrame({"entity": [r[2] for r in failures], "token": [r[3] for r in failures]})
    joined = report.join(share, left_on="token", right_on="pid__token").select("entity", "dob")
    assert joined.height == 1 and joined.item(0, "entity") == masked_id(PEOPLE[1][0])
    # a 6,4 mask here would be completed by the birth date the share layer publishes beside the same token
    assert scan_rows(joined, needles, "报告 ⋈ share.people_restricted") == []
    assert all(scan_file(o.xlsx, needles) == [] for o in run.outcomes)
    wh.dispose()


def test_workbook_text_cells_never_start_a_formula_and_numbers_stay_numbers(city, tmp_path: Path) -> None:
    from dataclasses import replace

    cat, landing = city
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    night(wh, cat, landing, tmp_path)
    report = build_report(cat, "huzheng", load_inputs(wh, cat, DAY1, KEY), CONFIG)
    evil = '=HYPERLINK("http://evil","x")'
    planted = replace(report, failures=report.failures.with_columns(
        pl.lit(evil).alias("value_masked"), pl.lit("-2+3+cmd|' /C calc'!A0").alias("expected"),
        pl.lit("@SUM(A1)").alias("label")))
    wb = load_workbook(io.BytesIO(render_xlsx(planted)))  # not read-only: cell types are checked
    [row] = list(wb["失败记录"].iter_rows(min_row=2))
    cells = {wb["失败记录"].cell(1, c.column).value: c for c in row}
    assert (cells["发现值(脱敏)"].value, cells["期望"].value, cells["规则"].value) == (
        "'" + evil, "'-2+3+cmd|' /C calc'!A0", "'@SUM(A1)")
    assert {cells[h].data_type for h in ("发现值(脱敏)", "期望", "规则")} == {"s"}  # strings, never formulas
    assert cells["行号"].value == 2 and cells["行号"].data_type == "n"
    rules = list(wb["规则结果"].iter_rows(min_row=2, values_only=True))
    assert all(isinstance(r[5], int) and isinstance(r[6], int) for r in rules)
    wh.dispose()


def test_a_late_department_gets_no_green_banner_and_its_headline_says_how_late(warehouse: Warehouse, city,
                                                                             tmp_path: Path) -> None:
    cat, landing = city
    night(warehouse, cat, landing, tmp_path)
    run = night(warehouse, cat, landing, tmp_path, dt.date(2026, 10, 15), deliver=False)  # nobody delivered since 09-30

    gs = text_of(html_of(run, "gongshang"))  # no failure, no ticket: only late
    assert "本期未发现失败记录" not in gs and "感谢贵单位" not in gs
    assert "本期需贵单位处理: 「企业名录」超期 6 个工作日未更新 (更新周期 每日, 最近交付 2026-09-30 24:00)" in gs
    # the score beside it, and what lowered it: 时效性 (企业名录 0, B类许可 100) = 50 → Q 90, total 92.0
    assert "综合得分 92.0 (B) = 0.8 × 数据质量分 Q 90.0 + 0.2 × 校核响应分 R 100.0" in gs
    assert "评分说明: 时效性 50.0: 企业名录「按更新周期(每日)及时交付 (1 天 + 1 个工作日)」1/1 未通过。" in gs
    hz = text_of(html_of(run, "huzheng"))
    assert "「常住人口」超期 6 个工作日未更新" in hz and "已超期校核工单 1 件 (最长超期 2 个工作日), 已上报数据工程师" in hz
    assert "校核响应分 R 0.0: 到期工单 1 件, 按期处理 0 件, 超期 1 件 (每件超期扣 5 分)" in hz
    summary = dict((r[0], r[1]) for r in sheet(run, "gongshang", "概况") if r[0])
    assert summary["本期需处理"].startswith("「企业名录」超期 6 个工作日未更新")
    assert summary["评分说明"].startswith("综合得分 92.0 (B)")


def test_tickets_opened_on_an_earlier_day_stay_in_the_headline_and_count_in_the_score(
    warehouse: Warehouse, city, tmp_path: Path
) -> None:
    cat, landing = city
    night(warehouse, cat, landing, tmp_path)  # 户政's ticket for person 1 opens on 09-30, due 10-13
    deliver_with_defects(landing, DAY2, fixed=True)
    citykit.write_csv(landing / "hz" / f"{DAY2:%Y%m%d}" / "renkou.csv", HEADER,
                      [[p, n, s, b] for p, n, s, b in PEOPLE if p != PEOPLE[1][0]])  # an increment without person 1
    run_day(warehouse, cat, landing, DAY2)
    run = night(warehouse, cat, landing, tmp_path, DAY2, deliver=False)
    [ticket] = read_tickets(warehouse, department="huzheng").iter_rows(named=True)
    assert (ticket["status"], ticket["opened_on"]) == ("open", DAY1)  # not carried again: still open

    text = text_of(html_of(run, "huzheng"))
    assert "本期需贵单位处理: 待校核工单 1 件 (其中 1 件为此前报告发出, 最早期限 2026-10-13)" in text
    # the open ticket counts as the failure it still is: 出生日期 3 evaluated (2 delivered + 1 standing), 1 failed,
    # the same score as the night it was found — not 100.0 A with "0 rules with failures"
    assert f"{HZ_TOTAL:.1f} A" in text and "100.0 A" not in text
    assert "常住人口 出生日期: 出生日期与身份号码一致 准确性 警告 3 1 66.67%" in text
    assert "共检查 10 条规则, 1 条有失败记录" in text
    assert "此前报告发出、至今未校核的工单 1 件, 其记录本期交付未再包含: 按失败记录计入各自规则 (数据质量分 Q)" in text
    assert f"{ticket['ticket_id']} 失败记录 常住人口 {masked_id(PEOPLE[1][0])}" in text


def test_failing_records_are_sorted_by_rule_then_key_and_say_what_was_expected(warehouse: Warehouse, city,
                                                                            tmp_path: Path) -> None:
    cat, landing = city
    deliver_with_defects(landing, DAY1)
    p0, p1, p2 = PEOPLE
    bad_id = p0[0][:-1] + ("0" if p0[0][-1] != "0" else "1")  # the check character no longer fits
    citykit.write_csv(landing / "hz" / f"{DAY1:%Y%m%d}" / "renkou.csv", HEADER, [
        [p1[0], p1[1], p1[2], "19920316"],  # row 1: birth date ≠ ID
        [p2[0], p2[1], "F", p2[3]],  # row 2: sex ≠ ID
        [p0[0], p0[1], p0[2], "19800102"],  # row 3: birth date ≠ ID
        [bad_id, "钱七", "M", "19800101"],  # row 4: invalid ID number
    ])
    run_day(warehouse, cat, landing, DAY1)
    run = night(warehouse, cat, landing, tmp_path, deliver=False)

    rows = sheet(run, "huzheng", "失败记录")[1:]
    # by rule, then by key (p0's 370202…1980 before p1's 370203…); not in delivery order
    assert [(r[5], r[12], r[10]) for r in rows] == [
        ("dob.id_birth_date", 3, "与身份号码中的出生日期一致"),
        ("dob.id_birth_date", 1, "与身份号码中的出生日期一致"),
        ("pid.id_number", 4, "18 位且校验码正确 (GB 11643, 出生日期有效)"),
        ("sex.id_gender", 2, "与身份号码中的性别一致"),
    ]
    assert all(r[10] != r[6] for r in rows)  # 期望 is never the rule's name again
    text = text_of(html_of(run, "huzheng"))
    order = [text.index(masked_id(p)) for p in (p0[0], p1[0])]
    assert order == sorted(order)
    assert "身份号码: 公民身份号码格式与校验位" in text and "18 位且校验码正确" in text


def test_the_charts_are_drawn_in_chinese_and_every_line_stays_inside_its_axes() -> None:
    import warnings

    from quality.report.charts import (
        MissingCJKFont,
        dimension_figure,
        pick_cjk_font,
        render_charts,
        trend_figure,
    )

    # a department falling to 40 with R = 100: its data score Q (25) lies far below the total
    points = pl.DataFrame({"period": [dt.date(2026, 10, d) for d in (8, 9, 12)], "score": [92.0, 64.0, 40.0],
                           "data_score": [90.0, 55.0, 25.0]})
    grades = list(CONFIG.grades.values())
    ax = trend_figure(points, grades).axes[0]
    assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == ("综合得分趋势", "批次日期", "得分")
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["综合得分", "数据质量分 Q"]
    low, high = ax.get_ylim()
    plotted = [y for line in ax.get_lines() for y in line.get_ydata() if line.get_label() in ("综合得分", "数据质量分 Q")]
    assert -5 <= low < min(plotted) and max(plotted) <= 100 < high <= 105  # no line below (or above) its axis
    dims = [{"name": d.value, "value": v} for d, v in zip(Dimension, [93.3, 100, 94.4, None, 0.0, 100], strict=True)]
    ax = dimension_figure(dims).axes[0]
    assert (ax.get_title(), ax.get_xlabel()) == ("各维度得分 (GB/T 36344)", "得分")
    assert [t.get_text() for t in ax.get_yticklabels()] == [d.value for d in Dimension]
    assert "无规则" in [t.get_text() for t in ax.texts] and ax.get_xlim() == (0, 112)

    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib warns "Glyph … missing from font(s)" where it would draw a box
        charts = render_charts(points, dims, grades)
    assert [c["alt"] for c in charts] == ["综合得分趋势", "各维度得分"]
    assert pick_cjk_font(["DejaVu Sans", "Noto Sans CJK JP", "Noto Sans CJK SC"]) == "Noto Sans CJK SC"
    assert pick_cjk_font(["DejaVu Sans", "Liberation Sans"]) is None
    assert "fonts-noto-cjk" in str(MissingCJKFont())
