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

__all__ = [
    "CELL_TASK",
    "QUEUE",
    "enqueue_next",
    "enqueue_run",
    "lane_cell",
    "in_flight",
    "lane_lock",
    "queue_conninfo",
    "workers_seen",
]

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


def lane_cell(experiment: Any, provider: str, position: int) -> tuple[int, int] | None:
    """The (row, variant) at `position` in a provider's cells, in row order (its variants in
    order within a row); None past the last."""
    variants = [i for i, v in enumerate(experiment.variants) if v.provider == provider]
    row, at = divmod(position, len(variants))
    return (row, variants[at]) if row < experiment.row_count else None


def _job(run_id: str, provider: str, lanes: int, position: int, experiment: Any) -> dict[str, Any] | None:
    found = lane_cell(experiment, provider, position)
    if found is None:
        return None
    row, variant = found
    return {
        "lock": lane_lock(run_id, provider, position % lanes),
        "args": {"run_id": run_id, "row": row, "variant": variant, "position": position},
    }


def _defer(conn: Connection, jobs: list[dict[str, Any]]) -> None:
    if jobs:
        conn.execute(_DEFER, {"queue": QUEUE, "task": CELL_TASK, "jobs": json.dumps(jobs)})


def enqueue_run(conn: Connection, run: Any, experiment: Any, limits: Mapping[str, int]) -> int:
    """Queue `run`'s cells in `conn`'s transaction (if the run's row is not committed, neither is
    any job). Each provider's cells, in row order, are dealt round its `limits[provider]` lanes;
    only the head of each lane is queued now; a job answers a chunk of its lane from there and
    queues the lane's next chunk when it stores the chunk's last cell (`enqueue_next`): the
    queue holds a few jobs per run, not every cell (procrastinate looks at every waiting job of
    a busy lane each time it fetches).
    Returns the number of jobs queued."""
    if conn.dialect.name != "postgresql":
        raise RuntimeError("experiment jobs need PostgreSQL")
    jobs: list[dict[str, Any]] = []
    for provider in dict.fromkeys(v.provider for v in experiment.variants):
        lanes = max(1, int(limits.get(provider, 1)))
        jobs.extend(j for k in range(lanes) if (j := _job(run.id, provider, lanes, k, experiment)) is not None)
    _defer(conn, jobs)
    return len(jobs)


def enqueue_next(
    conn: Connection, run_id: str, experiment: Any, limits: Mapping[str, int], position: int, variant: int
) -> None:
    """Queue the job of the lane's cells after the one at `position` (in the transaction that stored it)."""
    provider = experiment.variants[variant].provider
    lanes = max(1, int(limits.get(provider, 1)))
    job = _job(run_id, provider, lanes, position + lanes, experiment)
    _defer(conn, [job] if job is not None else [])


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
