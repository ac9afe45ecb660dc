"""Experiment runs as jobs (conductor_core/jobs): experiment_runs.runner (NULL: the run executes
in the process that started it; "jobs": its cells are queued for `python -m conductor_core.worker`)
and experiment_runs.stop_requested (Stop, read by every worker before each cell and while it
streams). On PostgreSQL only, the job queue's own tables: procrastinate's schema, as the pinned
release ships it (migrations/sql/procrastinate_3.10.0.sql, copied verbatim, so this revision
builds the same tables whatever procrastinate is installed later; a procrastinate upgrade comes
with a revision that applies its migration files). SQLite never gets them.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import re
from pathlib import Path

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

QUEUE_SCHEMA = Path(__file__).resolve().parents[1] / "sql" / "procrastinate_3.10.0.sql"


def upgrade() -> None:
    with op.batch_alter_table("experiment_runs") as batch:
        batch.add_column(sa.Column("runner", sa.String(), nullable=True))
        batch.add_column(sa.Column("stop_requested", sa.Boolean(), nullable=True))
    if op.get_bind().dialect.name == "postgresql":
        # On the driver's cursor with no parameters: the file's RAISE messages hold a '%' that
        # SQLAlchemy's execute would hand psycopg as a placeholder. Same connection, same transaction.
        with op.get_bind().connection.dbapi_connection.cursor() as cursor:  # type: ignore[union-attr]
            cursor.execute(QUEUE_SCHEMA.read_text())
            cursor.execute(LANE_FREED)


# A job whose lock (an experiment run's provider lane, conductor_core/jobs) was held leaves `doing`:
# the next job of that lane can run now. procrastinate only wakes its workers when a job is
# inserted, so without this an idle worker would find it at its next poll. The notification is
# the one procrastinate's own insert trigger sends (its workers then fetch at once).
LANE_FREED = """
CREATE FUNCTION conductor_notify_lane_freed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'procrastinate_queue_v1#' || OLD.queue_name,
        json_build_object('type', 'job_inserted', 'job_id', OLD.id)::text
    );
    RETURN NULL;
END;
$$;
CREATE TRIGGER conductor_lane_freed_on_update
    AFTER UPDATE OF status ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status = 'doing' AND NEW.status <> 'doing' AND OLD.lock IS NOT NULL)
    EXECUTE PROCEDURE conductor_notify_lane_freed();
CREATE TRIGGER conductor_lane_freed_on_delete
    AFTER DELETE ON procrastinate_jobs
    FOR EACH ROW WHEN (OLD.status = 'doing' AND OLD.lock IS NOT NULL)
    EXECUTE PROCEDURE conductor_notify_lane_freed();
"""


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP FUNCTION IF EXISTS conductor_notify_lane_freed CASCADE")
        sql = QUEUE_SCHEMA.read_text()
        for kind in ("TABLE", "FUNCTION", "PROCEDURE", "TYPE"):
            for name in dict.fromkeys(re.findall(rf"CREATE {kind} (procrastinate_\w+)", sql)):
                op.execute(f"DROP {kind} IF EXISTS {name} CASCADE")
    with op.batch_alter_table("experiment_runs") as batch:
        batch.drop_column("stop_requested")
        batch.drop_column("runner")
