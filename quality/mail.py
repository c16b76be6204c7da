"""Outgoing mail: SMTP when configured, an outbox folder otherwise; every send audited.

    mailer = Mailer(warehouse, SmtpSettings("mail.gov.example", 465, "ssl", "gongshu", password), outbox)
    record = mailer.send(["sjzl@swj.example"], "【数据时效】…", html, [Attachment("失败记录.xlsx", data)])

SMTP is used when a server is given (the edge's ``MailerResource`` fills it from ``GONGSHU_SMTP_HOST``,
``_PORT``, ``_TLS`` = none | starttls | ssl, ``_USER``, ``_PASSWORD``, ``_FROM``, ``_TIMEOUT``); otherwise
each message is written to the outbox folder (``$GONGSHU_HOME/outbox``) as one ``.eml`` file
(attachments also beside it, in ``<name>.files/``, for readers without a mail client). Every attempt,
delivered or failed, becomes one row of ``audit.deliveries``.
"""

from __future__ import annotations

import datetime as dt
import html as htmllib
import mimetypes
import re
import smtplib
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from email.policy import SMTP as SMTP_POLICY
from email.utils import format_datetime, make_msgid
from pathlib import Path

import polars as pl
import sqlalchemy as sa

from warehouse.store import Column, Warehouse

DELIVERIES = "deliveries"
DELIVERY_SCHEMA: dict[str, pl.DataType] = {
    "delivery_id": pl.String(),
    "sent_at": pl.Datetime("us"),  # UTC, naive (as ods.batches.received_at)
    "transport": pl.String(),  # smtp | outbox
    "status": pl.String(),  # sent | failed
    "category": pl.String(),  # what kind of message: freshness, run_failure, quality_report, ...
    "reference": pl.String(),  # what it is about: a resource id, a run id, a report number
    "sender": pl.String(),
    "recipients": pl.String(),  # "; "-joined
    "subject": pl.String(),
    "message_id": pl.String(),
    "attachments": pl.String(),  # "; "-joined file names
    "size_bytes": pl.Int64(),
    "location": pl.String(),  # the .eml path, or smtp host:port
    "error": pl.String(),
}


class MailError(RuntimeError):
    """A message could not be delivered (it is still recorded in audit.deliveries, as failed)."""


@dataclass(frozen=True)
class Attachment:
    filename: str
    content: bytes
    mime_type: str = "application/octet-stream"

    @classmethod
    def from_path(cls, path: Path | str, mime_type: str | None = None) -> Attachment:
        path = Path(path)
        guessed = mime_type or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
        return cls(path.name, path.read_bytes(), guessed)


TLS_MODES = ("none", "starttls", "ssl")


def port_and_tls(port: int | None, tls: str | None) -> tuple[int, str]:
    """The usual pairing when only one is given: 465 ↔ ssl, 587 ↔ starttls, otherwise 25 and none."""
    tls = (tls or "").lower()
    port = port or {"ssl": 465, "starttls": 587}.get(tls, 25)
    return port, tls or {465: "ssl", 587: "starttls"}.get(port, "none")


@dataclass(frozen=True)
class SmtpSettings:
    host: str
    port: int = 25
    tls: str = "none"  # none | starttls | ssl
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    timeout_s: float = 30.0

    def __post_init__(self) -> None:
        if self.tls not in TLS_MODES:
            raise ValueError(f"SMTP 加密方式应为 none、starttls 或 ssl, 得到 {self.tls!r}")


@dataclass(frozen=True)
class DeliveryRecord:
    """What was sent, how and where: one row of ``audit.deliveries``."""

    delivery_id: str
    sent_at: dt.datetime
    transport: str
    status: str
    category: str
    reference: str | None
    sender: str
    recipients: tuple[str, ...]
    subject: str
    message_id: str
    attachments: tuple[str, ...]
    size_bytes: int
    location: str
    error: str | None = None

    def row(self) -> dict:
        return {**self.__dict__, "recipients": "; ".join(self.recipients),
                "attachments": "; ".join(self.attachments) or None}


def addresses(value: str | Sequence[str]) -> list[str]:
    """Mail addresses, comma, semicolon or space separated (``GONGSHU_ENGINEER_EMAILS``), each once."""
    parts = re.split(r"[,;\s]+", value) if isinstance(value, str) else list(value)
    out: list[str] = []
    for p in parts:
        p = p.strip()
        if p and p not in out:
            out.append(p)
    return out


def html_to_text(html: str) -> str:
    """A readable plain-text alternative of an HTML body (table cells separated by tabs)."""
    text = re.sub(r"(?is)<(script|style).*?</\1>", "", html)
    text = re.sub(r"(?i)</t[dh]>\s*", "\t", text)
    text = re.sub(r"(?i)<br\s*/?>|</(p|tr|h\d|li|div|table)>", "\n", text)
    text = htmllib.unescape(re.sub(r"<[^>]+>", "", text))
    lines = [re.sub(r"[ \t]*\t[ \t]*", "\t", ln).strip() for ln in text.splitlines()]
    return "\n".join(ln for ln in lines if ln) + "\n"


def compose(
    sender: str, to: Sequence[str], subject: str, html: str, attachments: Sequence[Attachment] = (),
    *, domain: str | None = None, now: dt.datetime | None = None,
) -> EmailMessage:
    """The MIME message: plain text and HTML alternatives, then the attachments (UTF-8 throughout)."""
    msg = EmailMessage(policy=SMTP_POLICY)
    msg["From"] = sender
    msg["To"] = ", ".join(to)
    msg["Subject"] = subject
    msg["Date"] = format_datetime(now or dt.datetime.now(dt.UTC))
    msg["Message-ID"] = make_msgid(domain=domain or sender.rpartition("@")[2] or "gongshu.local")
    msg.set_content(html_to_text(html))
    msg.add_alternative(html, subtype="html")
    for a in attachments:
        maintype, _, subtype = a.mime_type.partition("/")
        msg.add_attachment(a.content, maintype=maintype, subtype=subtype or "octet-stream",
                           filename=Path(a.filename).name)
    return msg


def deliveries_table(wh: Warehouse) -> sa.Table:
    return wh.table("audit", DELIVERIES, [Column(n, t) for n, t in DELIVERY_SCHEMA.items()],
                    primary_key=["delivery_id"], indexes=[["category", "reference"], ["sent_at"]])


def read_deliveries(wh: Warehouse, category: str | None = None) -> pl.DataFrame:
    """The audit trail of sent messages, oldest first."""
    if not wh.exists("audit", DELIVERIES):
        return pl.DataFrame(schema=DELIVERY_SCHEMA)
    where, params = ("WHERE category = :c", {"c": category}) if category else ("", {})
    with wh.engine.connect() as conn:
        return wh.read(conn, f"SELECT {', '.join(DELIVERY_SCHEMA)} FROM {wh.qualified('audit', DELIVERIES)} "
                             f"{where} ORDER BY sent_at, delivery_id", DELIVERY_SCHEMA, params)


class Mailer:
    """Sends a message through SMTP or into the outbox, and records it in ``audit.deliveries``."""

    def __init__(self, warehouse: Warehouse, smtp: SmtpSettings | None = None, outbox: Path | None = None,
                 sender: str | None = None):
        if smtp is None and outbox is None:
            raise ValueError("邮件既无 SMTP 服务器也无发件箱目录")
        self.warehouse = warehouse
        self.smtp = smtp
        self.outbox = Path(outbox) if outbox else None
        self.sender = sender or (smtp.user if smtp and smtp.user and "@" in smtp.user else "gongshu@localhost")

    @property
    def transport(self) -> str:
        return "smtp" if self.smtp else "outbox"

    def send(
        self,
        to: str | Sequence[str],
        subject: str,
        html: str,
        attachments: Sequence[Attachment] = (),
        *,
        category: str = "general",
        reference: str | None = None,
    ) -> DeliveryRecord:
        """Deliver one message and return its audit record; raises :class:`MailError` if it failed."""
        recipients = addresses(to)
        if not recipients:
            raise ValueError("没有收件人")
        now = dt.datetime.now(dt.UTC)
        msg = compose(self.sender, recipients, subject, html, attachments, now=now)
        data = msg.as_bytes()
        delivery_id = uuid.uuid4().hex
        error = None
        try:
            location = self._smtp(msg, recipients) if self.smtp else self._write(msg, data, attachments, now,
                                                                              category, delivery_id)
        except (OSError, smtplib.SMTPException) as exc:
            location = f"{self.smtp.host}:{self.smtp.port}" if self.smtp else str(self.outbox)
            error = f"{type(exc).__name__}: {exc}"
        record = DeliveryRecord(
            delivery_id=delivery_id, sent_at=now.replace(tzinfo=None), transport=self.transport,
            status="failed" if error else "sent", category=category, reference=reference, sender=self.sender,
            recipients=tuple(recipients), subject=subject, message_id=str(msg["Message-ID"]),
            attachments=tuple(Path(a.filename).name for a in attachments), size_bytes=len(data),
            location=location, error=error,
        )
        self._record(record)
        if error:
            raise MailError(f"邮件「{subject}」发送失败 ({location}): {error}")
        return record

    def _smtp(self, msg: EmailMessage, recipients: list[str]) -> str:
        s = self.smtp
        assert s is not None
        if s.tls == "ssl":
            client: smtplib.SMTP = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s,
                                                    context=ssl.create_default_context())
        else:
            client = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        with client:
            if s.tls == "starttls":
                client.starttls(context=ssl.create_default_context())
            if s.user:
                client.login(s.user, s.password or "")
            client.send_message(msg, from_addr=self.sender, to_addrs=recipients)
        return f"{s.host}:{s.port}"

    def _write(self, msg: EmailMessage, data: bytes, attachments: Sequence[Attachment], now: dt.datetime,
               category: str, delivery_id: str) -> str:
        assert self.outbox is not None
        self.outbox.mkdir(parents=True, exist_ok=True)
        stem = f"{now:%Y%m%dT%H%M%S}_{re.sub(r'[^A-Za-z0-9_-]', '_', category)}_{delivery_id[:12]}"
        path = self.outbox / f"{stem}.eml"
        tmp = path.with_suffix(".eml.tmp")
        tmp.write_bytes(data)
        tmp.replace(path)  # a reader never sees half a message
        if attachments:
            folder = self.outbox / f"{stem}.files"
            folder.mkdir(exist_ok=True)
            for a in attachments:
                (folder / Path(a.filename).name).write_bytes(a.content)
        return str(path)

    def _record(self, record: DeliveryRecord) -> None:
        table = deliveries_table(self.warehouse)
        with self.warehouse.begin() as conn:
            self.warehouse.create(conn, table)
            self.warehouse.insert(conn, table, pl.DataFrame([record.row()], schema=DELIVERY_SCHEMA))
