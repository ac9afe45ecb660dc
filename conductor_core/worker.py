"""`python -m conductor_core.worker`: answers experiment runs queued in PostgreSQL
(CONDUCTOR_EXPERIMENT_RUNNER=jobs; conductor_core/jobs). Start as many as you like, on any
machines that reach the database and the providers: they share the cells, each provider's
calls at once stay within the run's limit across all of them, and a worker that dies has its
cells answered by the others. SIGTERM / SIGINT: the cells in flight finish (for
CONDUCTOR_WORKER_GRACE_S seconds, then they go back to the queue) and the worker exits 0.

Settings: the ones the playground reads (CONDUCTOR_DATABASE_URL, the providers' keys and base
URLs, CONDUCTOR_ENDPOINTS, ...), and
    CONDUCTOR_WORKER_CONCURRENCY      cells at once in this worker (default 8)
    CONDUCTOR_WORKER_HEARTBEAT_S      how often it says it is alive (default 5)
    CONDUCTOR_WORKER_STALLED_AFTER_S  a worker silent this long is gone: its cells are retried (default 30)
    CONDUCTOR_WORKER_GRACE_S          SIGTERM: how long cells in flight may finish (default 30)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from .config import load_settings, redact
from .jobs.cells import WorkerOptions, run_worker
from .router import Conductor
from .store import RequestLog
from .workbench.experiments import ExperimentStore

__all__ = ["main"]


def _number(name: str, default: float) -> float:
    value = os.environ.get(name)
    if value is None or not value.strip():
        return default
    try:
        number = float(value)
    except ValueError:
        raise SystemExit(f"{name}={value!r} is not a number") from None
    if number <= 0:
        raise SystemExit(f"{name} must be more than 0 (got {value})")
    return number


#: procrastinate's lines kept at INFO: the worker's start and stop (it writes one per job besides).
_LIFECYCLE = {"start_worker", "stopping_worker", "stop_worker", "abort_job"}


def _worker_lifecycle(record: logging.LogRecord) -> bool:
    if not record.name.startswith("procrastinate") or record.levelno >= logging.WARNING:
        return True
    return getattr(record, "action", None) in _LIFECYCLE


def options_from_env() -> WorkerOptions:
    return WorkerOptions(
        concurrency=int(_number("CONDUCTOR_WORKER_CONCURRENCY", 8)),
        heartbeat_s=_number("CONDUCTOR_WORKER_HEARTBEAT_S", 5.0),
        stalled_after_s=_number("CONDUCTOR_WORKER_STALLED_AFTER_S", 30.0),
        grace_s=_number("CONDUCTOR_WORKER_GRACE_S", 30.0),
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conductor_core.worker", description=__doc__.split("\n\n")[0])
    parser.add_argument("--concurrency", type=int, help="cells at once in this worker (CONDUCTOR_WORKER_CONCURRENCY)")
    args = parser.parse_args(argv)
    # Warnings from the libraries (not a line per HTTP request); the worker's own lines and the queue's start/stop.
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    for name in ("conductor", "procrastinate"):
        logging.getLogger(name).setLevel(logging.INFO)
    for handler in logging.getLogger().handlers:
        handler.addFilter(_worker_lifecycle)
    options = options_from_env()
    if args.concurrency is not None:
        if args.concurrency < 1:
            parser.error("--concurrency must be at least 1")
        options = WorkerOptions(**{**options.__dict__, "concurrency": args.concurrency})
    settings = load_settings()
    if not settings.database_url or not settings.database_url.startswith(("postgres", "postgresql")):
        print(
            "a worker needs the PostgreSQL database the playground uses: set CONDUCTOR_DATABASE_URL=postgresql://...",
            file=sys.stderr,
        )
        return 2
    try:
        # A connection for each cell at once, the request log's writer and the queue's own work.
        log = RequestLog.from_settings(settings, pool_size=options.concurrency + 4)
        conductor = Conductor(settings, request_log=log, source="worker")
        store = ExperimentStore(conductor.log)
    except Exception as error:  # noqa: BLE001 - a database or provider that cannot start: say which
        print(f"could not start: {type(error).__name__}: {redact(error)}", file=sys.stderr)
        return 2
    logging.getLogger("conductor.worker").info(
        "worker started: %d cells at once, providers: %s",
        options.concurrency,
        ", ".join(sorted(conductor.registry.providers)) or "none",
    )
    try:
        run_worker(conductor, store, options)
    finally:
        conductor.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
