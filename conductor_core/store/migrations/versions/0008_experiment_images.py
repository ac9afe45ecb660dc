"""experiment_row_attachments: an experiment dataset row's images (its image columns, in order),
each a reference by SHA-256 to `attachments`, where a picture used by many rows, runs or
sessions is stored once.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "experiment_row_attachments",
        sa.Column("experiment_id", sa.String(), primary_key=True),
        sa.Column("row_index", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(), sa.ForeignKey("attachments.sha256"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
    )
    op.create_index("ix_experiment_row_attachments_sha256", "experiment_row_attachments", ["sha256"])


def downgrade() -> None:
    op.drop_index("ix_experiment_row_attachments_sha256", table_name="experiment_row_attachments")
    op.drop_table("experiment_row_attachments")
