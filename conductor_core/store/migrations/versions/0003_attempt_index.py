"""attempts.attempt_index (0 = a request's first logged attempt; retries and fallbacks 1,
2...), filled for old rows; attempt_rollups.first_attempts (requests), filled by a rebuild
with rule 3.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conductor_core.store import rollup_rules

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_attempts = sa.table(
    "attempts",
    sa.column("id", sa.String()),
    sa.column("request_id", sa.String()),
    sa.column("created_ts", sa.Double()),
    sa.column("attempt_index", sa.Integer()),
)


def upgrade() -> None:
    op.add_column("attempts", sa.Column("attempt_index", sa.Integer(), nullable=True))
    # Old rows: their order within the request, by time (ties by id, as records() orders).
    a = _attempts.c
    row_number = sa.func.row_number().over(partition_by=a.request_id, order_by=(a.created_ts, a.id))
    position = row_number - sa.literal_column("1")
    ranked = sa.select(a.id, position.label("position")).subquery("ranked")
    op.execute(_attempts.update().where(a.id == ranked.c.id).values(attempt_index=ranked.c.position))
    op.add_column("attempt_rollups", sa.Column("first_attempts", sa.Integer(), nullable=False, server_default="0"))
    rollup_rules.rebuild(op.get_bind(), rule=3)


def downgrade() -> None:
    with op.batch_alter_table("attempt_rollups") as batch:
        batch.drop_column("first_attempts")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("attempt_index")
