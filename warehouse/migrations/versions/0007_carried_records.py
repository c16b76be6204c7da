"""Full snapshots delivered again: ``_digest`` on every ODS table, ``ods.batches.carried_from`` and
``rows_carried``, ``audit.reconciliation.rows_carried``.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04

Rows stored before get a NULL digest: a later delivery finds nothing to carry from their batch and
stores its records whole, as before. Batches before get NULL (nothing carried).
"""

import sqlalchemy as sa

from warehouse.migrations import layout

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

NOT_RESOURCES = {"batches", "delivery_failures", "carried"}


def upgrade() -> None:
    for name in layout.tables("ods"):
        if name not in NOT_RESOURCES:
            layout.add_column("ods", name, sa.Column("_digest", sa.BigInteger()))
    layout.add_column("ods", "batches", sa.Column("carried_from", sa.Text()))
    layout.add_column("ods", "batches", sa.Column("rows_carried", sa.BigInteger()))
    layout.add_column("audit", "reconciliation", sa.Column("rows_carried", sa.BigInteger()))


def downgrade() -> None:
    layout.refuse(revision)
