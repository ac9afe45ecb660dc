"""Tool exchanges in sessions: wb_answers.tool_calls (the calls an answer made, written as
they stream) and wb_answers.tool_results (what the person answered them with), and
wb_turns.continues (a turn with no prompt: the model continues after the tool results).
NULL in older rows: no tool calls, an ordinary turn.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conductor_core.store import SafeText

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("wb_answers", sa.Column("tool_calls", SafeText(), nullable=True))
    op.add_column("wb_answers", sa.Column("tool_results", SafeText(), nullable=True))
    op.add_column("wb_turns", sa.Column("continues", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("wb_turns") as batch:
        batch.drop_column("continues")
    with op.batch_alter_table("wb_answers") as batch:
        batch.drop_column("tool_results")
        batch.drop_column("tool_calls")
