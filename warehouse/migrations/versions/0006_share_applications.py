"""共享申请: ``share.applications``, ``share.application_elements`` and the append-only audit tables
``audit.share_events``, ``audit.share_extracts`` and ``audit.share_traces``.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04

The workflow's state lives in the first two (one row per application; one per requested element with
its decision, the source department's opinion and the reason). Everything that happened — each
transition, each extract written, each mail, each trace — is appended to the audit tables, which
refuse UPDATE and DELETE (a trigger on SQLite and on PostgreSQL): 数据审计追踪 (Wenzhou art. 25).
The column lists here are the layout of this revision; ``sharing/store.py`` declares the same.
"""

import sqlalchemy as sa
from alembic import op

from warehouse.migrations import layout

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

S, D, T, N, B = sa.String, sa.Date, sa.DateTime, sa.BigInteger, sa.Boolean

TABLES = {
    ("share", "applications"): (["application_id"], [
        ("application_id", S), ("kind", S), ("requester", S), ("requester_type", S), ("requester_name", S),
        ("library", S), ("purpose", S), ("scenario", S), ("security_measures", S), ("row_filter", S), ("valid_until", D), ("linkage", B),
        ("not_collected", B), ("status", S), ("submitted_at", T), ("submitted_by", S), ("opinion_due", D),
        ("opinions_done_on", D), ("approval_due", D), ("decided_at", T), ("decided_by", S), ("decision_note", S),
        ("opinion_escalated_on", D), ("approval_escalated_on", D), ("status_since", T), ("updated_at", T),
    ]),
    ("share", "application_elements"): (["application_id", "element"], [
        ("application_id", S), ("element", S), ("element_name", S), ("share_class", S), ("authority", S),
        ("decision", S), ("reason", S), ("opinion_by", S), ("opinion_at", T), ("opinion_note", S),
    ]),
    ("audit", "share_events"): (["event_id"], [
        ("event_id", S), ("application_id", S), ("at", T), ("action", S), ("from_status", S), ("to_status", S),
        ("actor", S), ("note", S), ("elements", S), ("rows", N),
    ]),
    ("audit", "share_extracts"): (["extract_id"], [
        ("extract_id", S), ("application_id", S), ("as_of", D), ("at", T), ("requester", S), ("library", S),
        ("elements", S), ("rows", N), ("key_id", S), ("watermark_id", S), ("folder", S), ("files", S),
        ("sha256", S), ("leaks", N), ("run_id", S),
    ]),
    ("audit", "share_traces"): (["trace_id"], [
        ("trace_id", S), ("at", T), ("actor", S), ("file", S), ("file_sha256", S), ("rows", N), ("columns", S),
        ("verdict", S), ("application_id", S), ("requester", S), ("evidence", S),
    ]),
}
APPEND_ONLY = [("audit", "share_events"), ("audit", "share_extracts"), ("audit", "share_traces")]


def upgrade() -> None:
    wh = layout.warehouse()
    for (layer, name), (pk, cols) in TABLES.items():
        if layout.columns(layer, name) is not None:
            continue
        schema, table = wh.table_ref(layer, name)
        if schema:
            layout.execute(f"CREATE SCHEMA IF NOT EXISTS {wh.quote(schema)}")
        op.create_table(table, *[sa.Column(n, t(), primary_key=n in pk, nullable=n not in pk) for n, t in cols],
                        schema=schema)
        if name in ("applications",):
            op.create_index(f"ix_{layer}_{name}_status", table, ["status"], schema=schema)
        if layer == "audit":
            op.create_index(f"ix_{layer}_{name}_0", table, ["application_id"], schema=schema)
    for layer, name in APPEND_ONLY:
        qualified = wh.qualified(layer, name)
        if wh.is_postgres:
            layout.execute(
                "CREATE OR REPLACE FUNCTION audit.gongshu_append_only() RETURNS trigger LANGUAGE plpgsql AS $$ "
                "BEGIN RAISE EXCEPTION '审计表只可追加: % 不允许 %', TG_TABLE_NAME, TG_OP; END $$")
            layout.execute(f"DROP TRIGGER IF EXISTS gongshu_append_only ON {qualified}")
            layout.execute(f"CREATE TRIGGER gongshu_append_only BEFORE UPDATE OR DELETE ON {qualified} "
                           "FOR EACH ROW EXECUTE FUNCTION audit.gongshu_append_only()")
        else:
            for op_name in ("update", "delete"):
                trig = wh.quote(f"{layer}__{name}_no_{op_name}")
                layout.execute(f"CREATE TRIGGER IF NOT EXISTS {trig} BEFORE {op_name.upper()} ON {qualified} "
                               f"BEGIN SELECT RAISE(ABORT, '审计表只可追加: {layer}.{name} 不允许 {op_name.upper()}'); END")


def downgrade() -> None:
    layout.refuse(revision)
