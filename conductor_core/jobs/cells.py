"""The worker's side: the cell task, and the worker loop around procrastinate's.

    options = WorkerOptions(concurrency=8)
    run_worker(conductor, store, options)   # until SIGTERM / SIGINT

A job (args: run_id, position, and the row and variant of its first cell) answers a chunk of
one lane: LANE_CHUNK of its provider's cells, one after another, in one of procrastinate's
threads. For each cell:
1. the run was stopped (its `stop_requested`, read at most every `stop_poll_s`): the cell is
   stored as cancelled, no call;
2. else the variant is asked (runner.CellRunner, as the in-process runner asks it), the stream
   closed at its next event if Stop comes meanwhile (the cell is stored as cancelled), then the
   rubric checks' judges grade it;
3. the cell is stored once (ON CONFLICT DO NOTHING), and the run marked completed / stopped when
   its last cell is in; the chunk's last cell queues the lane's next chunk in the same
   transaction (only the job that stored it does). A job tried again skips the cells stored.
A worker shutting down (SIGTERM) lets its cells finish for `grace_s`, then closes their calls at
the next event and puts their chunks back in the queue (the cells not stored): another worker
(or this one, restarted) answers them. A worker killed outright stops beating; after
`stalled_after_s` any live worker puts its cells back in the queue.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import procrastinate

from ..workbench.experiments import Cell, Experiment, ExperimentStore, Run
from ..workbench.runner import CellRunner
from .queue import CELL_TASK, DEFAULT_STALLED_AFTER_S, QUEUE, enqueue_next, lane_cell, queue_conninfo

__all__ = ["WorkerOptions", "make_app", "run_worker"]

log = logging.getLogger("conductor.worker")


@dataclass(frozen=True)
class WorkerOptions:
    concurrency: int = 8  # cells at once in this worker (each provider's lanes limit them too)
    heartbeat_s: float = 5.0  # how often this worker says it is alive
    stalled_after_s: float = DEFAULT_STALLED_AFTER_S  # a worker silent this long is gone
    grace_s: float = 30.0  # SIGTERM: how long cells in flight may finish before they are put back
    poll_s: float = 0.25  # how often an idle worker looks for a job a lane freed (no notification)
    stop_poll_s: float = 0.5  # how often a run's Stop flag is read while its cells run


#: Tries of a cell's job before its cell is stored as an internal error (an outage lasting minutes).
_ATTEMPTS = 30


class _ShutDown(Exception):
    """The worker is stopping: the cell goes back to the queue (procrastinate retries it)."""


class _Runs:
    """What the worker knows of the runs it works on: each run's experiment and cell runner,
    and its Stop flag read at most every `stop_poll_s`. Thread-safe."""

    def __init__(self, conductor: Any, store: ExperimentStore, stop_poll_s: float) -> None:
        self._conductor = conductor
        self._store = store
        self._stop_poll_s = stop_poll_s
        self._lock = threading.Lock()
        self._known: dict[str, tuple[Run, Experiment]] = {}
        self._state_read: dict[str, tuple[float, bool, bool]] = {}  # run -> (read at, stop asked, finished)
        #: Rubric judges asked at once by this worker's cells, whatever run they belong to (the
        #: in-process runner gives each run as many judge threads): experiment_judge_concurrency.
        self.judges = threading.BoundedSemaphore(max(1, int(conductor.settings.experiment_judge_concurrency)))

    def get(self, run_id: str) -> tuple[Run, Experiment]:
        with self._lock:
            found = self._known.get(run_id)
        if found is None:
            run = self._store.run(run_id)
            found = (run, self._store.experiment(run.experiment_id))
            with self._lock:
                if len(self._known) > 64:  # runs come and go; keep the recent ones
                    self._known.clear()
                self._known[run_id] = found
        return found

    def _state(self, run_id: str) -> tuple[bool, bool]:
        """(Stop asked, finished), read from the run's row at most every `stop_poll_s`."""
        now = time.monotonic()
        with self._lock:
            read = self._state_read.get(run_id)
        if read is None or now - read[0] >= self._stop_poll_s:
            state = self._store.run_state(run_id)
            read = (now, *state)
            with self._lock:
                self._state_read[run_id] = read
        return read[1], read[2]

    def stopped(self, run_id: str) -> bool:
        return self._state(run_id)[0]

    def finished(self, run_id: str) -> bool:
        return self._state(run_id)[1]


#: Cells of one lane a job answers one after another (the queue holds the lane's next chunk
#: meanwhile). The queue's own work for a job (fetch it, finish it, wake a worker for the next
#: one when the lane's lock is freed) is then paid once for them rather than once a cell: on a
#: busy machine it cost more than a 200 ms call. Between chunks the lane goes back to the queue,
#: so a worker that starts mid-run takes lanes at their next chunk.
LANE_CHUNK = 16


def _lane_job(
    runs: _Runs,
    store: ExperimentStore,
    conductor: Any,
    context: Any,
    run_id: str,
    position: int,
    variant: int,
    failure: str | None = None,
    leaving: threading.Event | None = None,
) -> None:
    """Answer the chunk of a run's lane that starts at `position` (its provider's cells are
    dealt round the lanes, queue.lane_cell): LANE_CHUNK cells, `lanes` apart. Each cell is
    stored on its own; the chunk's last one queues the lane's next chunk in the transaction
    that stores it (only the job that stored it does). A job tried again (a worker that
    vanished, a shutdown) skips the cells stored already, so each is asked once; chunks are
    fixed by `position`, so a retried job and one presumed dead end on the same cell and only
    one of them queues the next. `failure`: the last try, every cell left is stored as this
    error (the run can finish). `leaving`: set when the worker was told to stop; the cell in
    flight finishes, the rest of the chunk goes back to the queue."""
    run, experiment = runs.get(run_id)
    provider = experiment.variants[variant].provider
    lanes = max(1, int(run.concurrency.get(provider, 1)))
    chunk = [
        (at, found)
        for at in range(position, position + LANE_CHUNK * lanes, lanes)
        if (found := lane_cell(experiment, provider, at)) is not None
    ]
    if not chunk:
        return
    retried = context.job.attempts > 0 or failure is not None
    first_row, last_row = chunk[0][1][0], chunk[-1][1][0]
    rows = (
        {
            index: (values, expected)
            for index, values, expected in store.rows(experiment.id, offset=first_row, limit=last_row - first_row + 1)
        }
        if failure is None
        else {}
    )

    def shutting_down() -> bool:
        return context.should_abort()

    def stopped() -> bool:
        return shutting_down() or runs.stopped(run_id)

    cells = CellRunner(conductor, store, experiment, run.checks, None, stopped=stopped)
    for k, (at, (row, cell_variant)) in enumerate(chunk):
        if runs.finished(run_id):
            return  # every cell is in (stored by a job presumed dead, or by this one's earlier try)
        if retried and store.has_cell(run_id, row, cell_variant):
            continue  # answered already (the last of the chunk queued the next chunk with it)
        if failure is not None:
            cell = Cell(row=row, variant=cell_variant, status="error", error_type="internal", error_message=failure)
        elif runs.stopped(run_id):
            cell = Cell(row=row, variant=cell_variant, status="cancelled")
        else:
            values, expected = rows[row]
            try:
                cell = cells.run_cell(row, values, expected, cell_variant)
            except Exception as exc:
                log.exception("experiment cell %s/%s crashed", row, cell_variant)
                cell = Cell(
                    row=row, variant=cell_variant, status="error", error_type="internal", error_message=str(exc)
                )
            if cells.rubrics and cell.status == "ok":
                with runs.judges:
                    cell = cells.judged_safely(cell, values, expected)
            cut = cell.status == "cancelled" or any(
                r.judge is not None and r.judge.status == "cancelled" for r in cell.checks or []
            )
            if cut and shutting_down() and not runs.stopped(run_id):
                # Closed by the shutdown, not by Stop: another worker answers it (and the rest) whole.
                raise _ShutDown(f"cell {row}/{cell_variant} of run {run_id} goes back to the queue")

        def queue_next(conn: Any, at: int = at, cell_variant: int = cell_variant) -> None:
            enqueue_next(conn, run_id, experiment, run.concurrency, at, cell_variant)

        last = k == len(chunk) - 1
        # The run's last cell is a lane's last, so the last of a chunk: only then can the run be finished.
        status = store.write_cells(run_id, [cell], once=True, finish=last, on_stored=queue_next if last else None)
        if status is not None:
            log.info("experiment run %s %s", run_id, status)
        if leaving is not None and leaving.is_set() and not last:
            raise _ShutDown(
                f"the rest of the chunk after cell {row}/{cell_variant} of run {run_id} goes back to the queue"
            )


def make_app(database_url: str) -> procrastinate.App:
    """procrastinate's app on the request log's database (its tables come from migration 0012)."""
    return procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo=queue_conninfo(database_url)))


async def _put_back_stalled(app: procrastinate.App, options: WorkerOptions) -> None:
    """Every heartbeat: the cells of workers that stopped beating go back to the queue (any
    worker may do it; two at once: the second finds the job no longer `doing` and moves on)."""
    while True:
        await asyncio.sleep(options.heartbeat_s)
        try:
            stalled = await app.job_manager.get_stalled_jobs(
                seconds_since_heartbeat=options.stalled_after_s, task_name=CELL_TASK
            )
        except Exception:
            log.warning("could not look for stalled cells", exc_info=True)
            continue
        for job in stalled:
            try:
                await app.job_manager.retry_job(job)
                log.info("cell %s of a worker that stopped beating is back in the queue", job.task_kwargs)
            except Exception:
                log.debug("stalled job %s was taken care of already", job.id, exc_info=True)


def run_worker(conductor: Any, store: ExperimentStore, options: WorkerOptions | None = None) -> None:
    """Process experiment cells until SIGTERM or SIGINT (then as WorkerOptions.grace_s says)."""
    options = options or WorkerOptions()
    database_url = str(store.engine.url.render_as_string(hide_password=False))
    app = make_app(database_url)
    runs = _Runs(conductor, store, options.stop_poll_s)
    leaving = threading.Event()  # SIGTERM / SIGINT came: no new cell, the chunks in hand go back

    @app.task(
        name=CELL_TASK,
        queue=QUEUE,
        pass_context=True,
        # Only a shutdown or an outage escapes the job (a failed call is a stored cell): try again.
        retry=procrastinate.RetryStrategy(max_attempts=_ATTEMPTS, wait=1),
    )
    def experiment_cell(context: Any, run_id: str, row: int, variant: int, position: int) -> None:
        # (row, variant): the chunk's first cell, for the logs; the chunk is fixed by `position`.
        try:
            _lane_job(runs, store, conductor, context, run_id, position, variant, leaving=leaving)
        except _ShutDown:
            raise
        except Exception as exc:
            if context.job.attempts + 1 < _ATTEMPTS:
                raise
            # The last try: the cells left say why, so the run can finish (nothing is left running for ever).
            log.exception("experiment cells from %s/%s of run %s failed %d times", row, variant, run_id, _ATTEMPTS)
            error = f"the worker could not answer it: {type(exc).__name__}: {exc}"
            _lane_job(runs, store, conductor, context, run_id, position, variant, failure=error)

    async def main() -> None:
        # procrastinate runs a sync task in the loop's default executor: min(32, CPUs + 4) threads,
        # 6 on two cores, fewer than `concurrency` cells.
        asyncio.get_running_loop().set_default_executor(
            ThreadPoolExecutor(max_workers=options.concurrency + 2, thread_name_prefix="cell")
        )
        async with app.open_async():
            recovery = asyncio.create_task(_put_back_stalled(app, options), name="put back stalled cells")
            # The worker's own signal handling (procrastinate's, which it replaces, does the same
            # after this): cancelling run_worker_async is its graceful stop, `grace_s` for the jobs.
            loop = asyncio.get_running_loop()
            worker = asyncio.create_task(
                app.run_worker_async(
                    queues=[QUEUE],
                    name="conductor-worker",
                    concurrency=options.concurrency,
                    fetch_job_polling_interval=options.poll_s,
                    abort_job_polling_interval=max(options.poll_s, 1.0),
                    shutdown_graceful_timeout=options.grace_s,
                    update_heartbeat_interval=options.heartbeat_s,
                    stalled_worker_timeout=options.stalled_after_s,
                    delete_jobs="successful",  # the queue keeps what is left to do (and what failed)
                    install_signal_handlers=False,
                ),
                name="worker",
            )

            def stop() -> None:
                if not leaving.is_set():
                    log.info("stopping: the cells in flight finish, the rest of their chunks go back to the queue")
                    leaving.set()
                    worker.cancel()

            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(signum, stop)
            try:
                await worker
            except asyncio.CancelledError:
                if not leaving.is_set():
                    raise
            finally:
                for signum in (signal.SIGTERM, signal.SIGINT):
                    loop.remove_signal_handler(signum)
                recovery.cancel()

    asyncio.run(main())
