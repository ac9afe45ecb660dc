"""Named, versioned datasets (workbench/dataset_store.py): datasets, dataset_versions,
dataset_rows (each row carries the version it was added in and the one a later import
removed it in, so a version copies no rows), dataset_row_attachments (a row's pictures by
SHA-256 in `attachments`), and experiment_runs.dataset_name / dataset_version (the dataset
version a run's rows came from; NULL: pasted or uploaded, or a run from before).

Revision ID: 0011
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "datasets",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.UniqueConstraint("name", name="uq_datasets_name"),
    )
    op.create_table(
        "dataset_versions",
        sa.Column("dataset_id", sa.String(), primary_key=True),
        sa.Column("version", sa.Integer(), primary_key=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("columns", sa.Text(), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
    )
    op.create_table(
        "dataset_rows",
        sa.Column("dataset_id", sa.String(), primary_key=True),
        sa.Column("row_id", sa.Integer(), primary_key=True),
        sa.Column("added_in", sa.Integer(), nullable=False),
        sa.Column("removed_in", sa.Integer(), nullable=True),
        sa.Column("row_values", sa.Text(), nullable=False),
        sa.Column("expected", sa.Text(), nullable=True),
        sa.Column("source", sa.Text(), nullable=True),
    )
    op.create_index("ix_dataset_rows_added_in", "dataset_rows", ["dataset_id", "added_in"])
    op.create_table(
        "dataset_row_attachments",
        sa.Column("dataset_id", sa.String(), primary_key=True),
        sa.Column("row_id", sa.Integer(), primary_key=True),
        sa.Column("position", sa.Integer(), primary_key=True),
        sa.Column("sha256", sa.String(), sa.ForeignKey("attachments.sha256"), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
    )
    op.create_index("ix_dataset_row_attachments_sha256", "dataset_row_attachments", ["sha256"])
    op.add_column("experiment_runs", sa.Column("dataset_name", sa.Text(), nullable=True))
    op.add_column("experiment_runs", sa.Column("dataset_version", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("experiment_runs") as batch:
        batch.drop_column("dataset_version")
        batch.drop_column("dataset_name")
    op.drop_index("ix_dataset_row_attachments_sha256", table_name="dataset_row_attachments")
    op.drop_table("dataset_row_attachments")
    op.drop_index("ix_dataset_rows_added_in", table_name="dataset_rows")
    op.drop_table("dataset_rows")
    op.drop_table("dataset_versions")
    op.drop_table("datasets")
