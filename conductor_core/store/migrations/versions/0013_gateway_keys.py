"""Gateway keys (conductor_core/keys): the gateway_keys table (a key's name, owner, allowed
models, rpm/tpm limits and budget; only the SHA-256 of the key and a short prefix are kept),
and attempts.key_id, the key each attempt was made with (NULL for older rows and for the admin
key), indexed with created_ts for a key's spend in its budget period.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from conductor_core.store import SafeString, SafeText, UTCDateTime

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "gateway_keys",
        sa.Column("id", sa.String(), primary_key=True),
        sa.Column("name", SafeString(), nullable=False),
        sa.Column("owner", SafeString()),
        sa.Column("prefix", sa.String(), nullable=False),
        sa.Column("secret_hash", sa.String(), nullable=False, unique=True),
        sa.Column("models", SafeText()),
        sa.Column("rpm", sa.Integer()),
        sa.Column("tpm", sa.Integer()),
        sa.Column("budget_usd", sa.Double()),
        sa.Column("budget_period", sa.String()),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("created_ts", sa.Double(), nullable=False),
        sa.Column("created_by", SafeString(), nullable=False),
        sa.Column("revoked_at", UTCDateTime()),
        sa.Column("revoked_ts", sa.Double()),
    )
    op.create_index("ix_gateway_keys_created_ts", "gateway_keys", ["created_ts"])
    op.add_column("attempts", sa.Column("key_id", SafeString(), nullable=True))
    op.create_index("ix_attempts_key_id_created_ts", "attempts", ["key_id", "created_ts"])


def downgrade() -> None:
    op.drop_index("ix_attempts_key_id_created_ts", table_name="attempts")
    with op.batch_alter_table("attempts") as batch:
        batch.drop_column("key_id")
    op.drop_index("ix_gateway_keys_created_ts", table_name="gateway_keys")
    op.drop_table("gateway_keys")
