"""Prompts with versions and labels (workbench/prompts.py): prompts, prompt_versions,
prompt_labels and prompt_label_moves; and experiment_runs.prompt_version_id, the exact prompt
version a run started from (NULL: a run typed by hand, or from before).

Revision ID: 0010
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conductor_core.store import SafeString, SafeText, UTCDateTime

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "prompts",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", SafeString(), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("created_by", SafeString(), nullable=False),
    )
    op.create_table(
        "prompt_versions",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("prompt_id", sa.String(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("created_by", SafeString(), nullable=False),
        sa.Column("note", SafeText()),
        sa.Column("system", SafeText()),
        sa.Column("messages", SafeText(), nullable=False),
        sa.Column("variant", SafeText(), nullable=False),
        sa.UniqueConstraint("prompt_id", "version", name="uq_prompt_versions_version"),
    )
    op.create_table(
        "prompt_labels",
        sa.Column("prompt_id", sa.String(), primary_key=True),
        sa.Column("label", SafeString(), primary_key=True),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("moved_at", UTCDateTime(), nullable=False),
        sa.Column("moved_ts", sa.Double(), nullable=False),
        sa.Column("moved_by", SafeString(), nullable=False),
    )
    op.create_table(
        "prompt_label_moves",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("prompt_id", sa.String(), nullable=False),
        sa.Column("label", SafeString(), nullable=False),
        sa.Column("from_version", sa.Integer()),
        sa.Column("to_version", sa.Integer()),
        sa.Column("moved_at", UTCDateTime(), nullable=False),
        sa.Column("moved_ts", sa.Double(), nullable=False),
        sa.Column("moved_by", SafeString(), nullable=False),
    )
    op.create_index("ix_prompt_label_moves_prompt_id", "prompt_label_moves", ["prompt_id", "moved_ts"])
    op.add_column("experiment_runs", sa.Column("prompt_version_id", sa.String(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiment_runs") as batch:
        batch.drop_column("prompt_version_id")
    op.drop_index("ix_prompt_label_moves_prompt_id", table_name="prompt_label_moves")
    op.drop_table("prompt_label_moves")
    op.drop_table("prompt_labels")
    op.drop_table("prompt_versions")
    op.drop_table("prompts")
