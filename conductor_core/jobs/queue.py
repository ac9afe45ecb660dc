"""The queue's side that needs no worker: enqueue a run's cells (in the caller's transaction),
and what the page reads (cells in flight, workers alive). Plain SQL on procrastinate's
documented schema (migration 0012), so the playground never imports the worker's machinery."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine, make_url

from ..store import normalize_database_url

__all__ = ["CELL_TASK", "QUEUE", "enqueue_run", "in_flight", "lane_lock", "queue_conninfo", "workers_seen"]

#: The task and the queue of a cell's job (the worker registers the task under this name).
CELL_TASK = "conductor.experiment_cell"
QUEUE = "experiments"
#: A worker that has not beaten for this long is gone: its cells go back to the queue.
DEFAULT_STALLED_AFTER_S = 30.0

# procrastinate_defer_jobs_v1 is the function its own `defer` calls (procrastinate/sql/queries.sql);
# the array is built from one JSON parameter, in job order (the cells in row order).
_DEFER = text(
    """
    SELECT procrastinate_defer_jobs_v1(ARRAY(
        SELECT ROW(:queue, :task, 0, j->>'lock', NULL, j->'args', NULL)::procrastinate_job_to_defer_v1
        FROM jsonb_array_elements(CAST(:jobs AS jsonb)) WITH ORDINALITY AS t(j, n)
        ORDER BY n
    ))
    """
)


def lane_lock(run_id: str, provider: str, lane: int) -> str:
    """The job lock of one of a run's `limit` lanes for a provider: one job of a lane at a time."""
    return f"experiment-run:{run_id}:{provider}:{lane}"


def enqueue_run(conn: Connection, run: Any, experiment: Any, limits: Mapping[str, int]) -> int:
    """Queue every cell of `run` (row × variant) in `conn`'s transaction: if the run's row is not
    committed, neither is any job. Each provider's cells, in row order, are dealt round the
    provider's `limits[provider]` lanes. Returns the number of jobs."""
    if conn.dialect.name != "postgresql":
        raise RuntimeError("experiment jobs need PostgreSQL")
    dealt: dict[str, int] = {}
    jobs = []
    for row in range(experiment.row_count):
        for index, variant in enumerate(experiment.variants):
            provider = variant.provider
            n = dealt.get(provider, 0)
            dealt[provider] = n + 1
            jobs.append(
                {
                    "lock": lane_lock(run.id, provider, n % max(1, int(limits.get(provider, 1)))),
                    "args": {"run_id": run.id, "row": row, "variant": index},
                }
            )
    if jobs:
        conn.execute(_DEFER, {"queue": QUEUE, "task": CELL_TASK, "jobs": json.dumps(jobs)})
    return len(jobs)


def in_flight(engine: Engine, run_id: str) -> int:
    """A queued run's cells a worker is working on now."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM procrastinate_jobs WHERE status = 'doing' "
                    "AND task_name = :task AND args->>'run_id' = :run"
                ),
                {"task": CELL_TASK, "run": run_id},
            ).scalar()
            or 0
        )


def workers_seen(engine: Engine, within_s: float = DEFAULT_STALLED_AFTER_S) -> int:
    """Workers that beat within `within_s` seconds (0: nobody would take a queued run's cells)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                text(
                    "SELECT count(*) FROM procrastinate_workers "
                    "WHERE last_heartbeat > now() - make_interval(secs => :within)"
                ),
                {"within": float(within_s)},
            ).scalar()
            or 0
        )


def queue_conninfo(database_url: str) -> str:
    """The libpq URL of the request log's PostgreSQL database (procrastinate's psycopg pool
    takes it as it is; the SQLAlchemy URL names a driver, libpq does not)."""
    url = make_url(normalize_database_url(database_url))
    if url.get_backend_name() != "postgresql":
        raise ValueError("the job queue needs a PostgreSQL database (CONDUCTOR_DATABASE_URL=postgresql://...)")
    return url.set(drivername="postgresql").render_as_string(hide_password=False)
