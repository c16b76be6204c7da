"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

A revision must hold for a warehouse in any state (warehouse/migrations/__init__.py): the tables it
changes may not exist yet and the columns it adds may be there already. Name tables through the
warehouse (``layout.warehouse().table_ref(layer, name)``) so it runs on SQLite and PostgreSQL alike.
"""

import sqlalchemy as sa  # noqa: F401
from alembic import op  # noqa: F401

from warehouse.migrations import layout  # noqa: F401

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}


def downgrade() -> None:
    layout.refuse(revision)
