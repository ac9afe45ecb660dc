"""Rollups by rule 2, their version kept by Alembic: the `conductor_schema` table goes.

Before migrations, the store rebuilt the rollups on open when `conductor_schema` said they
were built by an older rule (ROLLUPS_VERSION < 2), or were missing while attempts existed.
That check runs here once, then the table it read is dropped.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conductor_core.store import rollup_rules

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

_facts = sa.table("conductor_schema", sa.column("key", sa.String()), sa.column("value", sa.String()))


def _exists(conn: sa.Connection, name: str) -> bool:
    return conn.execute(sa.select(sa.literal_column("1")).select_from(sa.table(name)).limit(1)).first() is not None


def upgrade() -> None:
    conn = op.get_bind()
    found = conn.execute(sa.select(_facts.c.value).where(_facts.c.key == "rollups_version")).scalar()
    if _exists(conn, "attempts") and (found is None or int(found) < 2 or not _exists(conn, "attempt_rollups")):
        rollup_rules.rebuild(conn, rule=2)
    op.drop_table("conductor_schema")


def downgrade() -> None:
    op.create_table(
        "conductor_schema",
        sa.Column("key", sa.String(), primary_key=True),
        sa.Column("value", sa.String(), nullable=False),
    )
    op.bulk_insert(_facts, [{"key": "rollups_version", "value": "2"}])
