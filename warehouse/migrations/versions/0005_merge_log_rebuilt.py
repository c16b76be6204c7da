"""``audit.merge_log``: ``rebuilt_entities`` replaces ``skipped_older``.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-10

A merge of an earlier batch date folds the histories from that date again instead of skipping the
older values; the merges logged before it rebuilt nothing (0), and their ``skipped_older`` counts go.
"""

import sqlalchemy as sa

from warehouse.migrations import layout

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if not layout.add_column("audit", "merge_log", sa.Column("rebuilt_entities", sa.BigInteger())):
        return
    layout.execute(f"UPDATE {layout.warehouse().qualified('audit', 'merge_log')} SET rebuilt_entities = 0")
    if "skipped_older" in (layout.columns("audit", "merge_log") or {}):
        with layout.alter("audit", "merge_log") as table:
            table.drop_column("skipped_older")


def downgrade() -> None:
    layout.refuse(revision)
