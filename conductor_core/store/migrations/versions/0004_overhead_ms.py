"""attempts.overhead_ms: the time Conductor itself spent on a request, the upstream's time
excluded (filled by the gateway's timing; NULL for older rows).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("attempts", sa.Column("overhead_ms", sa.Double(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("overhead_ms")
