"""The Mailer: a real local SMTP server (aiosmtpd) and the outbox folder; every send audited."""

from __future__ import annotations

import email
import socket
from email.policy import default as default_policy
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from dagster import build_resources

from assets.resources import MailerResource, Settings, SettingsError, WarehouseResource, resources_from_env
from quality.mail import (
    Attachment,
    Mailer,
    MailError,
    SmtpSettings,
    html_to_text,
    read_deliveries,
)
from warehouse.store import Warehouse

HTML = "<html><body><p>市税务局:</p><table><tr><th>资源</th><td>纳税人登记信息</td></tr></table></body></html>"
XLSX = b"PK\x03\x04 not really a workbook \x00\xff"


class Inbox:
    """An aiosmtpd handler that keeps every envelope it receives."""

    def __init__(self) -> None:
        self.envelopes: list = []

    async def handle_DATA(self, server, session, envelope) -> str:
        self.envelopes.append(envelope)
        return "250 OK"


def _authenticate(server, session, envelope, mechanism, auth_data) -> AuthResult:
    ok = isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"gongshu", b"s3cret")
    return AuthResult(success=ok, handled=False)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=_free_port(), authenticator=_authenticate,
                            auth_require_tls=False)
    controller.start()
    yield inbox, controller.port
    controller.stop()


def test_without_smtp_each_message_is_one_eml_in_the_outbox_and_is_audited(warehouse: Warehouse, tmp_path) -> None:
    outbox = tmp_path / "outbox"
    mailer = Mailer(warehouse, smtp=None, outbox=outbox, sender="gongshu@bureau.example")
    record = mailer.send("sjzl@swj.example; dev@bureau.example", "【数据时效】纳税人登记信息已超期", HTML,
                         [Attachment("失败记录.xlsx", XLSX, "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet")],
                         category="quality_report", reference="swj/2026-11")

    [eml] = sorted(outbox.glob("*.eml"))
    assert record.location == str(eml) and record.transport == "outbox" and record.status == "sent"
    assert record.size_bytes == eml.stat().st_size
    msg = email.message_from_bytes(eml.read_bytes(), policy=default_policy)
    assert msg["Subject"] == "【数据时效】纳税人登记信息已超期"
    assert msg["To"] == "sjzl@swj.example, dev@bureau.example" and msg["From"] == "gongshu@bureau.example"
    assert msg["Message-ID"] == record.message_id
    assert msg.get_body(("html",)).get_content().strip() == HTML
    assert "资源\t纳税人登记信息" in msg.get_body(("plain",)).get_content()
    [att] = list(msg.iter_attachments())
    assert att.get_filename() == "失败记录.xlsx" and att.get_content() == XLSX
    assert (outbox / f"{eml.stem}.files" / "失败记录.xlsx").read_bytes() == XLSX

    [row] = read_deliveries(warehouse).iter_rows(named=True)
    assert row["delivery_id"] == record.delivery_id and row["sent_at"] == record.sent_at
    assert (row["transport"], row["status"], row["category"], row["reference"]) == (
        "outbox", "sent", "quality_report", "swj/2026-11")
    assert row["recipients"] == "sjzl@swj.example; dev@bureau.example"
    assert row["attachments"] == "失败记录.xlsx" and row["location"] == str(eml) and row["error"] is None


def test_with_smtp_configured_the_message_goes_to_the_server_after_login(
    smtp_server, tmp_path: Path, monkeypatch
) -> None:
    inbox, port = smtp_server
    monkeypatch.setenv("GONGSHU_SMTP_HOST", "127.0.0.1")
    monkeypatch.setenv("GONGSHU_SMTP_PORT", str(port))
    monkeypatch.setenv("GONGSHU_SMTP_TLS", "none")
    monkeypatch.setenv("GONGSHU_SMTP_USER", "gongshu")
    monkeypatch.setenv("GONGSHU_SMTP_PASSWORD", "s3cret")
    monkeypatch.setenv("GONGSHU_SMTP_FROM", "gongshu@bureau.example")
    monkeypatch.setenv("GONGSHU_HOME", str(tmp_path))
    monkeypatch.setenv("GONGSHU_WAREHOUSE_URL", f"sqlite:///{tmp_path / 'w.db'}")
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    outbox = tmp_path / "outbox"
    with build_resources(resources_from_env()) as built:  # the code location's mailer, as a run has it
        mailer = built.mailer.get()
        assert repr(mailer.smtp).count("s3cret") == 0  # the password never shows in logs

        record = mailer.send(["xxzx@rsj.example", "dev@bureau.example"], "【公数告警】运行失败", HTML,
                             [Attachment("明细.csv", "证件号,原因\n".encode(), "text/csv")], category="run_failure")

    [env] = inbox.envelopes
    assert env.mail_from == "gongshu@bureau.example"
    assert env.rcpt_tos == ["xxzx@rsj.example", "dev@bureau.example"]
    msg = email.message_from_bytes(env.original_content, policy=default_policy)
    assert msg["Subject"] == "【公数告警】运行失败" and msg["Message-ID"] == record.message_id
    assert [a.get_filename() for a in msg.iter_attachments()] == ["明细.csv"]
    assert not outbox.exists()
    [row] = read_deliveries(wh).iter_rows(named=True)
    assert (row["transport"], row["status"], row["location"]) == ("smtp", "sent", f"127.0.0.1:{port}")
    wh.dispose()


def test_a_refused_login_raises_and_is_audited_as_failed(smtp_server, tmp_path: Path) -> None:
    inbox, port = smtp_server
    wh = Warehouse(f"sqlite:///{tmp_path / 'w.db'}")
    mailer = Mailer(wh, SmtpSettings("127.0.0.1", port, "none", "gongshu", "wrong", timeout_s=5))
    with pytest.raises(MailError, match="SMTPAuthenticationError"):
        mailer.send("dev@bureau.example", "测试", HTML, category="freshness", reference="swj_nsrdj")
    assert inbox.envelopes == []
    [row] = read_deliveries(wh).iter_rows(named=True)
    assert (row["status"], row["transport"], row["reference"]) == ("failed", "smtp", "swj_nsrdj")
    assert "535" in row["error"]
    wh.dispose()


def test_smtp_settings_come_from_the_environment_with_tls_following_the_port(monkeypatch) -> None:
    def smtp(**env: str) -> SmtpSettings | None:
        """The server of the code location's mailer, built from these GONGSHU_SMTP_* variables."""
        for var in ("HOST", "PORT", "TLS", "USER", "PASSWORD"):
            monkeypatch.delenv(f"GONGSHU_SMTP_{var}", raising=False)
        for k, v in env.items():
            monkeypatch.setenv(f"GONGSHU_SMTP_{k.upper()}", v)
        with build_resources({"mailer": resources_from_env()["mailer"]}) as built:
            return built.mailer.get().smtp

    assert smtp() is None  # no server: the outbox
    assert (smtp(host="mail.gov.example").port, smtp(host="mail.gov.example").tls) == (25, "none")
    assert smtp(host="mail.gov.example", port="465").tls == "ssl"
    assert smtp(host="mail.gov.example", port="587").tls == "starttls"
    assert smtp(host="mail.gov.example", tls="ssl").port == 465
    with pytest.raises(SettingsError, match="GONGSHU_SMTP_TLS='maybe'"):  # stops the code location's load
        Settings.from_env({"GONGSHU_SMTP_HOST": "mail.gov.example", "GONGSHU_SMTP_TLS": "maybe"})


def test_recipients_are_split_deduplicated_and_required(tmp_path: Path) -> None:
    settings = Settings.from_env({"GONGSHU_ENGINEER_EMAILS": "a@x.cn, b@x.cn;a@x.cn  c@x.cn"})
    assert settings.engineer_emails == ["a@x.cn", "b@x.cn", "c@x.cn"]
    mailer = Mailer(Warehouse(f"sqlite:///{tmp_path / 'w.db'}"), outbox=tmp_path / "o")
    with pytest.raises(ValueError, match="没有收件人"):
        mailer.send(" ; ", "s", HTML)
    assert not (tmp_path / "o").exists()


def test_the_dagster_resource_writes_to_its_outbox_through_its_warehouse(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'w.db'}"
    resource = MailerResource(warehouse=WarehouseResource(url=url), outbox=str(tmp_path / "outbox"))
    resource.get().send("dev@bureau.example", "测试", HTML)
    assert len(list((tmp_path / "outbox").glob("*.eml"))) == 1
    assert read_deliveries(Warehouse(url))["transport"].to_list() == ["outbox"]


def test_html_bodies_get_a_readable_text_alternative() -> None:
    text = html_to_text("<p>甲 &amp; 乙</p><table><tr><th>a</th><td>1</td></tr><tr><th>b</th><td>2</td></tr></table>")
    assert text == "甲 & 乙\na\t1\nb\t2\n"
