"""attachments (images and PDFs, one row per distinct content, by SHA-256), wb_turn_attachments
(a session turn's attachments, in order, with the names people gave them) and
arena_match_attachments (a blind round's).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "attachments",
        sa.Column("sha256", sa.String(), primary_key=True),
        sa.Column("media_type", sa.String(), nullable=False),
        sa.Column("size", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "wb_turn_attachments",
        sa.Column("turn_id", sa.String(), sa.ForeignKey("wb_turns.id"), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(), sa.ForeignKey("attachments.sha256"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
    )
    op.create_index("ix_wb_turn_attachments_sha256", "wb_turn_attachments", ["sha256"])
    op.create_table(
        "arena_match_attachments",
        sa.Column("match_id", sa.String(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(), sa.ForeignKey("attachments.sha256"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("arena_match_attachments")
    op.drop_index("ix_wb_turn_attachments_sha256", table_name="wb_turn_attachments")
    op.drop_table("wb_turn_attachments")
    op.drop_table("attachments")
