"""``ods.batches``: files none of whose records could be read, and the batch's status.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-10

``unreadable_bytes`` and ``unreadable_lines`` count such files; a batch with any is ``failed``. The
batches stored before these columns get 0, 0 and ``ok``.
"""

import sqlalchemy as sa

from warehouse.migrations import layout

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

ADDED = {"unreadable_bytes": (sa.BigInteger(), "0"), "unreadable_lines": (sa.BigInteger(), "0"),
         "status": (sa.Text(), "'ok'")}


def upgrade() -> None:
    batches = layout.warehouse().qualified("ods", "batches")
    for column, (type_, before) in ADDED.items():
        if layout.add_column("ods", "batches", sa.Column(column, type_)):
            layout.execute(f"UPDATE {batches} SET {column} = {before}")


def downgrade() -> None:
    layout.refuse(revision)
