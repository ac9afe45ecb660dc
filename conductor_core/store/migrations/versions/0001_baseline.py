"""Baseline: the schema of the last release before migrations (a40b370), log and workbench.

A database that release made is stamped at this revision on open (migrate.py) instead of
running it.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

from alembic import op

from conductor_core.store.migrations.baseline import baseline_tables

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    baseline_tables().create_all(op.get_bind(), checkfirst=False)


def downgrade() -> None:
    baseline_tables().drop_all(op.get_bind(), checkfirst=False)
