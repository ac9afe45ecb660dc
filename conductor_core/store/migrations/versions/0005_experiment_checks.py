"""Experiments with several checks and the model's tool calls: experiment_runs.checks (the
run's checks, JSON), experiment_cells.tool_calls (the calls the model made, JSON) and
experiment_cells.checks (one verdict per check, JSON). NULL in rows from before: a run reads
as one check of its check_kind, a cell's verdict is its `passed`.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("experiment_runs", sa.Column("checks", sa.Text(), nullable=True))
    op.add_column("experiment_cells", sa.Column("tool_calls", sa.Text(), nullable=True))
    op.add_column("experiment_cells", sa.Column("checks", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiment_cells") as batch:
        batch.drop_column("checks")
        batch.drop_column("tool_calls")
    with op.batch_alter_table("experiment_runs") as batch:
        batch.drop_column("checks")
