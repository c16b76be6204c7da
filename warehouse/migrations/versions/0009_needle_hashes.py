"""``audit.leak_needles`` dropped: the leak scanner's needles are stored as hashes.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05

The needles (every raw identifier of the base libraries) were stored as one Parquet value of their
text in ``audit.leak_needles``. They are now kept as two 64-bit hashes a value, in parts, in
``audit.leak_needle_hashes`` (desensitize/leaks.py): the old table would keep a copy of every raw
identifier that nothing reads. It only ever held what the base libraries hold, and the next step
that needs the needles collects them again.
"""

from warehouse.migrations import layout

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    if layout.columns("audit", "leak_needles") is not None:
        layout.execute(f"DROP TABLE {layout.warehouse().qualified('audit', 'leak_needles')}")


def downgrade() -> None:
    layout.refuse(revision)
