"""The Alembic environment of the warehouse, driven from :mod:`warehouse.migrations` (no alembic.ini).

All pending revisions run in one transaction: PostgreSQL and SQLite both roll DDL back, so a failed
upgrade leaves the warehouse as it was. Processes that open the same warehouse at once take turns: on
PostgreSQL under an advisory layout lock, on SQLite under the write lock (``BEGIN IMMEDIATE``); the
second finds the version table at head and has nothing to do.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import context

from warehouse.migrations import version_table
from warehouse.store import Warehouse

config = context.config
if context.is_offline_mode():
    raise SystemExit("仓库迁移只能在线执行 (不支持 --sql)")
wh: Warehouse | None = config.attributes.get("warehouse")
if wh is None:
    raise SystemExit("仓库迁移需要仓库: 请用 python -m warehouse.migrations --url URL upgrade")

schema, table = version_table(wh)
with wh.begin() as conn:
    wh.lock_layout(conn, "migrations")
    if schema and not sa.inspect(conn).has_schema(schema):
        wh.lock_layout(conn, f"schema {schema}")  # the lock Warehouse.create takes for the schema
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {wh.quote(schema)}"))
    context.configure(connection=conn, version_table=table, version_table_schema=schema,
                      transaction_per_migration=False)
    with context.begin_transaction():
        context.run_migrations()
