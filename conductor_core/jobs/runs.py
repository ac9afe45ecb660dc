"""A queued run as the page and the eval see it: the same questions as `RunHandle` (progress,
stop, wait), answered from the database, so any process can ask them about any queued run."""

from __future__ import annotations

import time
from collections.abc import Iterator

from ..workbench.experiments import ExperimentStore, Run
from ..workbench.runner import Progress
from .queue import DEFAULT_STALLED_AFTER_S, in_flight, workers_seen

__all__ = ["QueuedRun", "queued_progress"]


def queued_progress(store: ExperimentStore, run: Run, *, stalled_after_s: float = DEFAULT_STALLED_AFTER_S) -> Progress:
    """Where a queued run stands, read from the database: its stored cells, the cells workers
    hold now, and whether any worker is alive (the page says "waiting for a worker" when not)."""
    counts = store.cell_counts(run.id)
    per_variant = [0] * len(store.experiment(run.experiment_id).variants)
    by_status: dict[str, int] = {}
    for (variant, status), n in counts.items():
        per_variant[variant] += n
        by_status[status] = by_status.get(status, 0) + n
    if run.status == "running":
        state = "stopping" if run.stop_requested else "running"
    else:
        state = "stopped" if run.status in ("stopped", "interrupted") else "completed"
    end = run.finished_at.timestamp() if run.finished_at is not None else time.time()
    live = run.status == "running"
    return Progress(
        run_id=run.id,
        total=run.cells_total,
        done=sum(counts.values()),
        ok=by_status.get("ok", 0),
        errors=by_status.get("error", 0),
        incomplete=by_status.get("incomplete", 0),
        cancelled=by_status.get("cancelled", 0),
        running=in_flight(store.engine, run.id) if live else 0,
        state=state,  # type: ignore[arg-type]
        elapsed_s=round(max(0.0, end - run.created_at.timestamp()), 3),
        per_variant=tuple(per_variant),
        workers=workers_seen(store.engine, stalled_after_s) if live else None,
    )


class QueuedRun:
    """A run whose cells are jobs. Unlike `RunHandle` it holds nothing: every answer is read
    from the database (so a page in another replica, or after a restart, gets the same)."""

    def __init__(self, store: ExperimentStore, run_id: str, *, poll_s: float = 0.25) -> None:
        self.run_id = run_id
        self._store = store
        self._poll_s = poll_s

    def run(self) -> Run:
        return self._store.run(self.run_id)

    def progress(self) -> Progress:
        return queued_progress(self._store, self.run())

    def stop(self) -> None:
        """Ask every worker to stop the run: no new call; calls in flight close at their next
        chunk; cells not started are stored as cancelled."""
        self._store.request_stop(self.run_id)

    @property
    def finished(self) -> bool:
        return self.run().status != "running"

    def wait(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.finished:
            if deadline is not None and time.monotonic() >= deadline:
                return False
            time.sleep(self._poll_s)
        return True

    def updates(self, interval_s: float = 0.5) -> Iterator[Progress]:
        while True:
            p = self.progress()
            if p.finished:
                yield p
                return
            yield p
            time.sleep(interval_s)
