"""experiment_judge_votes: per row of a run, which of two variants' answers a judge model found
better, asked twice with the order swapped (a flip is a tie). Judge votes, kept apart from
people's votes (`votes`, the arena's).

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_judge_votes",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("run_id", sa.String(), nullable=False),
        sa.Column("row_index", sa.Integer(), nullable=False),
        sa.Column("variant_a", sa.Integer(), nullable=False),
        sa.Column("variant_b", sa.Integer(), nullable=False),
        sa.Column("judge", sa.Text(), nullable=False),
        sa.Column("criteria", sa.Text()),
        sa.Column("outcome", sa.String(), nullable=False),
        sa.Column("first", sa.String()),
        sa.Column("second", sa.String()),
        sa.Column("reason", sa.Text()),
        sa.Column("error", sa.Text()),
        sa.Column("latency_ms", sa.Double()),
        sa.Column("cost_usd", sa.Double()),
        sa.Column("calls", sa.Integer(), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
    )
    op.create_index("ix_experiment_judge_votes_run_id", "experiment_judge_votes", ["run_id"])


def downgrade() -> None:
    op.drop_index("ix_experiment_judge_votes_run_id", table_name="experiment_judge_votes")
    op.drop_table("experiment_judge_votes")
