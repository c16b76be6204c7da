"""Baseline: the layout of the versions before Alembic.

Revision ID: 0001
Revises:
Create Date: 2026-12-10

Nothing to do. The code creates each table in its current layout the first time it writes it, so
there was never a fixed starting schema to create here; a warehouse without a version table (written
before Alembic, or new) starts from this revision, and the ones after it bring each table that exists
to the current layout.
"""

from warehouse.migrations import layout

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    layout.refuse(revision)
