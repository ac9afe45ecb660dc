"""Alembic's environment: always run on the connection that migrate.py hands over (it holds
the lock and the transaction), with the models' tables as the autogenerate target."""

from __future__ import annotations

from alembic import context

from conductor_core.store import migrate

connection = context.config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("run migrations through conductor_core.store.migrate or `python -m conductor_core.store`")

context.configure(connection=connection, target_metadata=migrate.model_metadata(), **migrate.CONTEXT_OPTIONS)
with context.begin_transaction():
    context.run_migrations()
