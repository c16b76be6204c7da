"""``audit.reconciliation.withheld``: why a batch is kept out of the base library (a failed blocking rule).

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-10

Batches reconciled before it was recorded get NULL: they were merged.
"""

import sqlalchemy as sa

from warehouse.migrations import layout

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    layout.add_column("audit", "reconciliation", sa.Column("withheld", sa.Text()))


def downgrade() -> None:
    layout.refuse(revision)
