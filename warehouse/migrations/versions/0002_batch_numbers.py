"""Batch numbers: ``ods.batches.batch_no`` and base-library lineage by number.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-10

Earlier versions stored each base-library value's lineage batch (``x__batch``) as the batch id text
and had no batch numbers. The batches get the numbers 1…n in the order they were received (on
PostgreSQL the sequence ``ods.batch_no_seq`` goes on after the highest), a unique index, and every
lineage column still holding text is turned into the number of the same batch.
"""

import sqlalchemy as sa

from warehouse.migrations import layout

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

SEQUENCE = "ods.batch_no_seq"


def upgrade() -> None:
    wh = layout.warehouse()
    have = layout.columns("ods", "batches")
    if have is None:  # nothing stored yet: the code creates the table, its index and sequence
        return
    batches = wh.qualified("ods", "batches")
    if wh.is_postgres:
        layout.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
    if "batch_no" not in have:
        layout.add_column("ods", "batches", sa.Column("batch_no", sa.BigInteger()))
        layout.execute(
            f"UPDATE {batches} SET batch_no = (SELECT n FROM (SELECT batch_id, ROW_NUMBER() OVER "
            f"(ORDER BY received_at, batch_id) AS n FROM {batches}) numbered WHERE numbered.batch_id = {batches}.batch_id)")
        if wh.is_postgres:
            layout.execute(f"SELECT setval('{SEQUENCE}', MAX(batch_no)) FROM {batches} HAVING MAX(batch_no) IS NOT NULL")
    index = "ux_batches_no" if wh.is_postgres else "ux_ods__batches_no"
    layout.execute(f"CREATE UNIQUE INDEX IF NOT EXISTS {index} ON {batches} (batch_no)")
    for name in layout.tables("base"):
        _number_lineage(wh, name)


def _number_lineage(wh, name: str) -> None:
    text = [c for c, t in (layout.columns("base", name) or {}).items()
            if c.endswith("__batch") and not isinstance(t, sa.Integer)]
    if not text:
        return
    base, batches = wh.qualified("base", name), wh.qualified("ods", "batches")
    for c in text:
        layout.add_column("base", name, sa.Column(c + "_no", sa.BigInteger()))
    layout.execute(f"UPDATE {base} SET " + ", ".join(
        f"{wh.quote(c + '_no')} = (SELECT batch_no FROM {batches} WHERE batch_id = {base}.{wh.quote(c)})"
        for c in text))
    with layout.alter("base", name) as table:
        for c in text:
            table.drop_column(c)
            table.alter_column(c + "_no", new_column_name=c)


def downgrade() -> None:
    layout.refuse(revision)
