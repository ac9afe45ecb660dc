"""People (conductor_core/team): users, workspaces and memberships, with the implicit local user
(usr_local) as owner of the Default workspace (wsp_default); and sessions' workspace_id,
created_by and visibility ("private" or "workspace"). Sessions made before belong to the local
user in Default and stay shared with the workspace: everyone who could open them still can.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from conductor_core.store import SafeString, UTCDateTime

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# The same values as conductor_core/team/people.py, written out: a migration must not change
# when the code it predates does.
LOCAL_USER_ID = "usr_local"
LOCAL_EMAIL = "local"
DEFAULT_WORKSPACE_ID = "wsp_default"
DEFAULT_WORKSPACE_NAME = "Default"


def upgrade() -> None:
    users = op.create_table(
        "users",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("email", SafeString(), nullable=False, unique=True),
        sa.Column("name", SafeString()),
        sa.Column("password_hash", sa.String()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    workspaces = op.create_table(
        "workspaces",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", SafeString(), nullable=False, unique=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    memberships = op.create_table(
        "memberships",
        sa.Column("user_id", sa.String(), sa.ForeignKey("users.id"), primary_key=True),
        sa.Column("workspace_id", sa.String(), sa.ForeignKey("workspaces.id"), primary_key=True),
        sa.Column("role", sa.String(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
    )
    now = datetime.now(UTC)
    op.bulk_insert(users, [{"id": LOCAL_USER_ID, "email": LOCAL_EMAIL, "name": None, "created_at": now}])
    op.bulk_insert(workspaces, [{"id": DEFAULT_WORKSPACE_ID, "name": DEFAULT_WORKSPACE_NAME, "created_at": now}])
    op.bulk_insert(
        memberships,
        [{"user_id": LOCAL_USER_ID, "workspace_id": DEFAULT_WORKSPACE_ID, "role": "owner", "created_at": now}],
    )

    with op.batch_alter_table("wb_sessions") as batch:
        batch.add_column(sa.Column("workspace_id", sa.String(), nullable=True))
        batch.add_column(sa.Column("created_by", sa.String(), nullable=True))
        batch.add_column(sa.Column("visibility", sa.String(), nullable=True))
    op.execute(
        sa.text(
            "UPDATE wb_sessions SET workspace_id = :workspace, created_by = :user, visibility = 'workspace'"
        ).bindparams(workspace=DEFAULT_WORKSPACE_ID, user=LOCAL_USER_ID)
    )
    with op.batch_alter_table("wb_sessions") as batch:
        batch.alter_column("workspace_id", existing_type=sa.String(), nullable=False)
        batch.alter_column("created_by", existing_type=sa.String(), nullable=False)
        batch.alter_column("visibility", existing_type=sa.String(), nullable=False)
    op.create_index("ix_wb_sessions_workspace_kind_updated", "wb_sessions", ["workspace_id", "kind", "updated_ts"])


def downgrade() -> None:
    op.drop_index("ix_wb_sessions_workspace_kind_updated", table_name="wb_sessions")
    with op.batch_alter_table("wb_sessions") as batch:
        batch.drop_column("visibility")
        batch.drop_column("created_by")
        batch.drop_column("workspace_id")
    op.drop_table("memberships")
    op.drop_table("workspaces")
    op.drop_table("users")
