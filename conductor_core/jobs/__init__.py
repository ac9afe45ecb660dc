"""Experiment runs as durable jobs in PostgreSQL, processed by `python -m conductor_core.worker`.

    run = store.new_run(experiment, checks, limits, enqueue=lambda conn, run: enqueue_run(conn, run, experiment, limits))
    QueuedRun(store, run.id).progress()     # read from the database, by any process
    store.request_stop(run.id)              # from any process: every worker stops it
    run_worker(conductor, store, options)   # a worker: takes cells until SIGTERM

Where it runs: with `CONDUCTOR_EXPERIMENT_RUNNER=jobs` (PostgreSQL only) `runner.start_run`
queues a run's cells here; the default, `in_process`, runs them in the process that started the
run, as before (SQLite, `make run`, and single-process PostgreSQL deployments need no worker).

The queue: procrastinate (pinned, requirements.txt), chosen over PgQueuer for what this needs:
- it speaks psycopg 3, the driver the request log already uses, and runs sync tasks in threads
  (a cell calls the sync `Conductor.stream`, as the in-process runner's threads do);
- its schema is one SQL file with documented SQL functions: a run's cells are enqueued by
  calling `procrastinate_defer_jobs_v1` inside our own SQLAlchemy transaction (its Python `defer`
  opens its own connection, so it could not join the transaction that creates the run), and
  migration 0012 applies the pinned schema like any other revision;
- its job `lock` gives per-provider concurrency across every worker in the database itself: a
  run's cells for one provider are dealt to `limit` lanes (lock `run:provider:k`), and PostgreSQL
  never hands out two jobs of one lane at once, so at most `limit` calls to that provider run at
  once for the run, however many workers there are (as the in-process runner gives each
  provider `limit` threads). A job waiting for its lane is not fetched, so it holds no worker
  slot; a lane freed wakes the workers (a trigger of migration 0012). Only each lane's head is
  in the queue (procrastinate looks at every waiting job of a busy lane on each fetch: 25 ms
  with 2,000 waiting), and a job answers a chunk of its lane (cells.LANE_CHUNK cells, one after
  another), queueing the lane's next chunk when it stores the chunk's last cell: the queue's
  own work per job (fetch, finish, the wake-up) is paid once per chunk;
- workers heartbeat in its `procrastinate_workers` table, and `get_stalled_jobs` finds the
  jobs of a worker that stopped beating (kill -9): any worker puts them back in the queue.

A cell is stored once: `experiment_cells` is keyed by (run, row, variant) and workers insert
with ON CONFLICT DO NOTHING, so a cell retried after a worker vanished (or answered twice by a
worker presumed dead) keeps the first answer stored. Rubric checks are judged inside the cell's
job, right after its answer: the cell is then stored once, whole, with its verdicts, and an
answer never waits in the queue's table (answers are not kept when prompt logging is off).
"""

from __future__ import annotations

from .queue import (
    CELL_TASK,
    QUEUE,
    enqueue_run,
    in_flight,
    lane_lock,
    queue_conninfo,
    workers_seen,
)
from .runs import QueuedRun, queued_progress

__all__ = [
    "CELL_TASK",
    "QUEUE",
    "QueuedRun",
    "enqueue_run",
    "in_flight",
    "lane_lock",
    "queue_conninfo",
    "queued_progress",
    "workers_seen",
]
