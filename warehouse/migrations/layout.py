"""What the revisions use: the warehouse being migrated, its tables' columns, column changes that work
on SQLite and PostgreSQL, and the refusal of downgrades."""

from __future__ import annotations

import sqlite3

import sqlalchemy as sa
from alembic import op

from warehouse.migrations import IrreversibleMigration
from warehouse.store import Warehouse

# SQLite drops and renames columns in place since 3.35 (this machine's Python: see sqlite3.sqlite_version);
# an older one has Alembic recreate the table and copy its rows.
_SQLITE_RECREATE = "never" if sqlite3.sqlite_version_info >= (3, 35) else "always"


def warehouse() -> Warehouse:
    """The warehouse being migrated (its layer naming: ``table_ref``, ``qualified``)."""
    return op.get_context().config.attributes["warehouse"]


def columns(layer: str, name: str) -> dict[str, sa.types.TypeEngine] | None:
    """The columns of a layer table and their types, seen in the migration's transaction; None when
    the table does not exist (yet)."""
    schema, table = warehouse().table_ref(layer, name)
    insp = sa.inspect(op.get_bind())
    if not insp.has_table(table, schema=schema):
        return None
    return {c["name"]: c["type"] for c in insp.get_columns(table, schema=schema)}


def add_column(layer: str, name: str, column: sa.Column) -> bool:
    """Add ``column`` to an existing table that lacks it; True when it was added."""
    have = columns(layer, name)
    if have is None or column.name in have:
        return False
    schema, table = warehouse().table_ref(layer, name)
    op.add_column(table, column, schema=schema)
    return True


def alter(layer: str, name: str):
    """A batch of column changes on one table: in place where the database can (PostgreSQL, SQLite
    ≥ 3.35), else the table recreated with its rows."""
    schema, table = warehouse().table_ref(layer, name)
    recreate = "never" if warehouse().is_postgres else _SQLITE_RECREATE
    return op.batch_alter_table(table, schema=schema, recreate=recreate)


def execute(sql: str, params: dict | None = None) -> None:
    op.get_bind().execute(sa.text(sql), params or {})


def refuse(revision: str) -> None:
    raise IrreversibleMigration(revision)


def tables(layer: str) -> list[str]:
    """Names of the tables a layer holds, seen in the migration's transaction."""
    schema, prefix = warehouse().table_ref(layer, "")
    names = sa.inspect(op.get_bind()).get_table_names(schema=schema)
    return sorted(n[len(prefix):] for n in names if n.startswith(prefix))
