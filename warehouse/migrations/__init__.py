"""Warehouse migrations with Alembic: the layout a warehouse is in, and bringing it to the current one.

The Alembic environment is driven from code (:func:`config`), no ``alembic.ini``: the script folder is
this package, the revisions are in ``versions/``, and the version table lives in the audit layer
(``audit.alembic_version`` on PostgreSQL, ``audit__alembic_version`` on SQLite).

Every entry point opens a warehouse through :func:`open_warehouse`, which runs ``upgrade head`` once per
process and URL. Tables are created lazily by the code that first writes them, so a revision must hold
for a warehouse in any state: a table it changes may not exist yet (nothing to do; the code creates it in
its current layout) and a column it adds may be there already (a table the current code created). A new
warehouse runs every revision as a no-op and is stamped head. History is migrated one way: a downgrade
is refused (:class:`IrreversibleMigration`). ``python -m warehouse.migrations`` is the command line.
"""

from __future__ import annotations

import threading
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from warehouse.store import Warehouse

HERE = Path(__file__).resolve().parent
VERSION_LAYER, VERSION_TABLE = "audit", "alembic_version"


class IrreversibleMigration(RuntimeError):
    """A downgrade was asked for: migrations of the warehouse's history run one way."""

    def __init__(self, revision: str):
        self.revision = revision
        super().__init__(f"仓库迁移 {revision} 不可回退: 历史数据的迁移是单向的, 请从备份恢复")


def config(wh: Warehouse | None = None) -> Config:
    """The Alembic configuration of the warehouse, built in code; ``wh``: the warehouse env.py migrates."""
    cfg = Config()
    cfg.set_main_option("script_location", str(HERE))
    cfg.set_main_option("version_locations", str(HERE / "versions"))
    cfg.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    if wh is not None:
        cfg.attributes["warehouse"] = wh
    return cfg


def script() -> ScriptDirectory:
    return ScriptDirectory.from_config(config())


def heads() -> list[str]:
    return list(script().get_heads())


def version_table(wh: Warehouse) -> tuple[str | None, str]:
    """(schema, table) of the version table: the audit layer's ``alembic_version``."""
    return wh.table_ref(VERSION_LAYER, VERSION_TABLE)


def current(wh: Warehouse) -> str | None:
    """The revision the warehouse is at; None when it was never stamped."""
    schema, table = version_table(wh)
    with wh.engine.connect() as conn:
        ctx = MigrationContext.configure(conn, opts={"version_table": table, "version_table_schema": schema})
        return ctx.get_current_revision()


def upgrade(wh: Warehouse, target: str = "head") -> None:
    """Run the revisions up to ``target`` in one transaction (env.py), whatever this process did before."""
    command.upgrade(config(wh), target)


def downgrade(wh: Warehouse, target: str) -> None:
    """Refused by the first revision it would undo (:class:`IrreversibleMigration`)."""
    command.downgrade(config(wh), target)


_upgraded: set[str] = set()
_lock = threading.Lock()


def ensure_upgraded(wh: Warehouse) -> None:
    """``upgrade head`` once per process and URL."""
    with _lock:
        if wh.url in _upgraded:
            return
        upgrade(wh)
        _upgraded.add(wh.url)


def open_warehouse(url: str) -> Warehouse:
    """The warehouse at ``url``, brought to the current layout first (once per process). Every entry
    point (the Dagster resource, which the ``gongshu`` commands build too) opens the warehouse here."""
    wh = Warehouse(url)
    ensure_upgraded(wh)
    return wh
