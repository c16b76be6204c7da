"""``python -m warehouse.migrations``: the warehouse's migrations from the command line.

    python -m warehouse.migrations revision -m "ods.batches: a new column"   # a new revision file
    python -m warehouse.migrations history
    python -m warehouse.migrations --url URL current
    python -m warehouse.migrations --url URL upgrade

There is no downgrade: history is migrated one way. ``make migration MSG=...`` runs ``revision``.
"""

from __future__ import annotations

import argparse
import sys

from alembic import command

from warehouse.migrations import config, current, heads, script, upgrade
from warehouse.store import Warehouse


def next_revision_id() -> str:
    """Revisions are numbered 0001, 0002, …: the next after the head."""
    (head,) = heads()
    return f"{int(head) + 1:04d}" if head.isdigit() else head + "_next"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m warehouse.migrations", description="仓库迁移 (Alembic)")
    parser.add_argument("--url", help="仓库的 SQLAlchemy URL (current、upgrade 需要)")
    sub = parser.add_subparsers(dest="command", required=True)
    rev = sub.add_parser("revision", help="新建一个迁移文件 (warehouse/migrations/versions/)")
    rev.add_argument("-m", "--message", required=True, help="迁移说明")
    sub.add_parser("history", help="列出全部迁移")
    sub.add_parser("current", help="仓库当前所在的迁移")
    sub.add_parser("upgrade", help="把仓库升级到最新迁移 (head)")
    args = parser.parse_args(argv)

    if args.command == "revision":
        command.revision(config(), message=args.message, rev_id=next_revision_id())  # prints the file's path
        return 0
    if args.command == "history":
        for s in script().walk_revisions():
            print(f"{s.down_revision or '<base>'} -> {s.revision}{' (head)' if s.is_head else ''}: {s.doc}")
        return 0
    if not args.url:
        parser.error(f"{args.command} 需要 --url")
    wh = Warehouse(args.url)
    try:
        if args.command == "upgrade":
            upgrade(wh)
        print(f"{wh.safe_url}: {current(wh) or '未标记 (尚未迁移)'} (head: {', '.join(heads())})")
    finally:
        wh.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
