"""``share.outputs.base_merges`` and ``audit.share_builds.mode``: share outputs built incrementally.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04

A share output records the digest of its library's merges up to the date it shows (``base_merges``);
the next date's build masks only the entities whose version changed when that digest still holds.
Outputs recorded before get NULL: their next build is a full one, which records it. Builds logged
before get a NULL ``mode`` (they were all full builds).
"""

import sqlalchemy as sa

from warehouse.migrations import layout

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    layout.add_column("share", "outputs", sa.Column("base_merges", sa.Text()))
    layout.add_column("audit", "share_builds", sa.Column("mode", sa.Text()))


def downgrade() -> None:
    layout.refuse(revision)
