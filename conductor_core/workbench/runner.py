"""Runs an experiment: every row × every variant through the sync `Conductor.stream`, at most
N calls at once per provider, with progress to poll, a Stop that keeps what finished, and
every cell stored as it finishes.

    handle = start_run(conductor, store, experiment.id, check=CheckKind.contains, overrides=session_providers)
    handle.progress()    # a Progress snapshot; cheap, thread-safe: poll it (st.fragment(run_every=1))
    handle.stop()        # no new calls; calls in flight are closed at their next chunk
    handle.wait()        # until every cell is finished or marked cancelled and the run is stored
    RunHandle.find(run_id)   # the live handle of a run in this process (a page after a rerun)

The schedule: each provider gets `limit` worker threads that take that provider's cells in
row order (a provider's variants share its limit), so a slow provider never holds back a
fast one, and the wall time is the slowest provider's cells × latency ÷ limit. Cells go to
the database in batches from one writer thread (one transaction per batch, not per cell);
the runner keeps counters, never the results, so memory stays flat in the number of rows.

Stop (`handle.stop()`, or `store.request_stop(run_id)` from any process, read every second):
workers take no new cell; a call in flight is closed at its next stream event, so the
request log records it as cancelled (the core cannot interrupt a call that is still waiting
for its first byte: that one is closed when the byte comes). Cells never started are stored
as `cancelled` too, so a stopped run's grid says what did not run.

Rubric checks (judging.py): a cell whose answer finished goes to the judges' queue, where
`experiment_judge_concurrency` threads (default 2) ask each rubric check's judge, then the cell
is stored with its verdicts. Stop cancels them too: a judgement not begun, or in flight (closed
at its next event), is stored as cancelled, and says so.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from types import EllipsisType
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError

from ..errors import ProviderError
from ..models import ChatMessage, MessageRole, StreamDone, StreamIncomplete, TextDelta
from .attachments import message_parts
from .datasets import DatasetTooLargeError
from .experiments import (
    Cell,
    Check,
    CheckKind,
    CheckResult,
    Experiment,
    ExperimentError,
    ExperimentStore,
    Judgement,
    JudgeTarget,
    JudgeVote,
    all_passed,
    as_checks,
    evaluate,
    failed_checks,
)
from .judging import cancelled_judgement, judge_answer, judge_pair
from .templates import Template, TemplateError

if TYPE_CHECKING:
    from ..jobs import QueuedRun

__all__ = [
    "Progress",
    "RunHandle",
    "start_run",
    "concurrency_limits",
    "image_refusals",
    "judge_problems",
    "PairwiseHandle",
    "PairwiseProgress",
    "start_pairwise",
]

log = logging.getLogger("conductor.experiments")

_BATCH = 200  # most cells in one insert
_LINGER_S = 0.25  # how long the writer lets cells gather
_HEARTBEAT_S = 5.0  # the run's heartbeat, also when no cell finishes (a slow model)
_STOP_READ_S = 1.0  # how often the run's Stop flag (set by any process) is read

State = Literal["running", "stopping", "completed", "stopped"]


@dataclass(frozen=True)
class Progress:
    """Where a run stands. `done` counts finished cells of every status, cancelled included."""

    run_id: str
    total: int
    done: int
    ok: int
    errors: int
    incomplete: int
    cancelled: int
    running: int
    state: State
    elapsed_s: float
    per_variant: tuple[int, ...]  # finished cells per variant
    database_error: str | None = None  # the database refused the last batch (it is retried) or a read
    judging: int = 0  # answers waiting for (or with) their judges
    workers: int | None = None  # a queued run (conductor_core/jobs): workers alive now, 0 = none; else None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 1.0

    @property
    def finished(self) -> bool:
        return self.state in ("completed", "stopped")


def concurrency_limits(
    settings_limits: Mapping[str, int], providers: list[str], asked: Mapping[str, int] | None
) -> dict[str, int]:
    """Calls at once per provider: asked for this run, else configured for the provider, else '*'."""
    merged = {**settings_limits, **(asked or {})}
    default = merged.get("*", 4)
    limits = {name: int(merged.get(name, default)) for name in providers}
    bad = [name for name, n in limits.items() if n < 1]
    if bad:
        raise ExperimentError(f"concurrency must be at least 1 (got {limits[bad[0]]} for {bad[0]})")
    return limits


class _Cells:
    """One provider's cells in row order, shared by its workers (a lock around a generator)."""

    def __init__(self, store: ExperimentStore, experiment: Experiment, variants: list[int]) -> None:
        self._lock = threading.Lock()
        self._source = (
            (row, values, expected, v) for row, values, expected in store.iter_rows(experiment.id) for v in variants
        )

    def next(self) -> tuple[int, dict[str, Any], str | None, int] | None:
        with self._lock:
            return next(self._source, None)

    def rest(self) -> Iterator[tuple[int, dict[str, Any], str | None, int]]:
        while (item := self.next()) is not None:
            yield item


class CellRunner:
    """One cell of a run: render the row's prompt, stream the variant's answer, check it, and
    grade it with the rubric checks' judges. Shared by the threads of a run in this process
    (RunHandle) and by the workers (conductor_core/jobs), so both store the same cells.
    `stopped` is asked before the call and at each stream event: True closes the call."""

    def __init__(
        self,
        conductor: Any,
        store: ExperimentStore,
        experiment: Experiment,
        checks: tuple[Check, ...],
        overrides: Mapping[str, Any] | None,
        stopped: Callable[[], bool],
    ) -> None:
        self.experiment = experiment
        self.checks = checks
        self.rubrics = [i for i, check in enumerate(checks) if check.kind == CheckKind.rubric]
        self._conductor = conductor
        self._store = store
        self._template = Template(experiment.template)
        self._overrides = overrides
        self._stopped = stopped

    def judged(self, cell: Cell, values: dict[str, Any], expected: str | None) -> Cell:
        """The cell with each of its pending rubric checks graded by its judge (or cancelled)."""
        results = list(cell.checks or [])
        for i in self.rubrics:
            judgement = results[i].judge
            if judgement is None or judgement.status != "pending":
                continue  # the check does not apply to this row
            if self._stopped():
                results[i] = cancelled_judgement()
                continue
            results[i] = judge_answer(
                self._conductor,
                self.checks[i],
                answer=cell.answer or "",
                values=values,
                expected=expected,
                row=cell.row,
                overrides=self._overrides,
                stopped=self._stopped,
            )
        return cell.model_copy(update={"checks": results, "passed": all_passed(results)})

    def judged_safely(self, cell: Cell, values: dict[str, Any], expected: str | None) -> Cell:
        """`judged`, and a judging that crashed is each pending check's failed judgement."""
        try:
            return self.judged(cell, values, expected)
        except Exception as exc:
            log.exception("experiment cell %s/%s: judging crashed", cell.row, cell.variant)
            results = list(cell.checks or [])
            for i in self.rubrics:
                if (judgement := results[i].judge) is not None and judgement.status == "pending":
                    error = f"internal: {type(exc).__name__}: {exc}"
                    results[i] = CheckResult(
                        passed=None,
                        detail=f"the judge failed: {error}",
                        judge=Judgement(status="failed", error=error),
                    )
            return cell.model_copy(update={"checks": results, "passed": all_passed(results)})

    def run_cell(self, row: int, values: dict[str, Any], expected: str | None, variant_index: int) -> Cell:
        variant = self.experiment.variants[variant_index]
        if self._stopped():
            return Cell(row=row, variant=variant_index, status="cancelled")
        try:
            prompt = self._template.render(values, row=row + 1)
            pictures = self._store.images(self.experiment.id, row).get(row) if self.experiment.image_columns else None
            message = (
                ChatMessage(role=MessageRole.user, parts=message_parts(prompt, pictures))
                if pictures
                else ChatMessage(role=MessageRole.user, content=prompt)
            )
            request = variant.request([message])
        except (TemplateError, ValidationError) as exc:
            return self._failed(row, values, variant_index, expected, "bad_request", str(exc), None)
        stream = self._conductor.stream(request, overrides=self._overrides)
        parts: list[str] = []
        try:
            for event in stream:
                if isinstance(event, StreamDone):
                    response = event.response
                    a = response.analytics
                    results = [
                        evaluate(
                            check,
                            answer=response.content,
                            tool_calls=response.tool_calls or [],
                            values=values,
                            expected=expected,
                            response_format=variant.response_format,
                        )
                        for check in self.checks
                    ]
                    return Cell(
                        row=row,
                        variant=variant_index,
                        status="ok",
                        request_id=response.metadata.id,
                        answer=response.content,
                        latency_ms=a.latency_ms,
                        ttft_ms=a.time_to_first_token_ms,
                        input_tokens=a.input_tokens,
                        output_tokens=a.output_tokens,
                        cost_usd=a.cost_usd,
                        passed=all_passed(results),
                        tool_calls=response.tool_calls or None,
                        checks=results,
                    )
                if isinstance(event, StreamIncomplete):
                    partial = event.partial
                    a = partial.analytics
                    return Cell(
                        row=row,
                        variant=variant_index,
                        status="incomplete",
                        request_id=partial.metadata.id,
                        answer=partial.content,
                        error_type=event.error.type,
                        error_message=event.error.message,
                        latency_ms=a.latency_ms,
                        ttft_ms=a.time_to_first_token_ms,
                        input_tokens=a.input_tokens,
                        output_tokens=a.output_tokens,
                        cost_usd=a.cost_usd,
                        **self._verdicts(values, expected, "the answer was cut off"),
                    )
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                if self._stopped():
                    # Closing the stream (finally) makes the log record this attempt as cancelled.
                    return Cell(row=row, variant=variant_index, status="cancelled", answer="".join(parts) or None)
            return self._failed(
                row, values, variant_index, expected, "incomplete", "the stream ended without an answer", None
            )
        except ProviderError as error:
            return self._failed(
                row, values, variant_index, expected, error.type, error.message, getattr(error, "request_id", None)
            )
        finally:
            stream.close()

    def _verdicts(self, values: dict[str, Any], expected: str | None, why: str) -> dict[str, Any]:
        results = failed_checks(self.checks, values, expected, why)
        return {"passed": all_passed(results), "checks": results}

    def _failed(
        self,
        row: int,
        values: dict[str, Any],
        variant: int,
        expected: str | None,
        kind: str,
        message: str,
        request_id: str | None,
    ) -> Cell:
        return Cell(
            row=row,
            variant=variant,
            status="error",
            request_id=request_id,
            error_type=kind,
            error_message=message,
            **self._verdicts(values, expected, "no answer"),
        )


_live: dict[str, RunHandle] = {}
_live_lock = threading.Lock()


class RunHandle:
    """A run in progress in this process. Thread-safe."""

    def __init__(
        self,
        conductor: Any,
        store: ExperimentStore,
        experiment: Experiment,
        run_id: str,
        checks: tuple[Check, ...],
        limits: dict[str, int],
        overrides: Mapping[str, Any] | None,
        on_progress: Callable[[Progress], None] | None,
    ) -> None:
        self.run_id = run_id
        self.experiment = experiment
        self.checks = checks
        self.limits = limits
        self._conductor = conductor
        self._store = store
        self._overrides = overrides
        self._on_progress = on_progress
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._started = time.monotonic()
        self._ended: float | None = None
        width = len(experiment.variants)
        self._progress = Progress(
            run_id=run_id,
            total=experiment.row_count * width,
            done=0,
            ok=0,
            errors=0,
            incomplete=0,
            cancelled=0,
            running=0,
            state="running",
            elapsed_s=0.0,
            per_variant=(0,) * width,
        )
        self._results: queue.SimpleQueue[Cell | None] = queue.SimpleQueue()
        by_provider: dict[str, list[int]] = {}
        for index, variant in enumerate(experiment.variants):
            by_provider.setdefault(variant.provider, []).append(index)
        self._sources = {name: _Cells(store, experiment, indexes) for name, indexes in by_provider.items()}
        cells_of = {name: experiment.row_count * len(indexes) for name, indexes in by_provider.items()}
        self._workers = [
            threading.Thread(target=self._work, args=(source,), name=f"experiment-{name}-{i}", daemon=True)
            for name, source in self._sources.items()
            for i in range(max(1, min(limits[name], cells_of[name])))
        ]
        self._cells = CellRunner(conductor, store, experiment, checks, overrides, stopped=self._stop.is_set)
        self._rubrics = self._cells.rubrics
        judges = max(1, int(getattr(conductor.settings, "experiment_judge_concurrency", 2))) if self._rubrics else 0
        # Bounded: answers faster than their judges wait here (memory stays flat in the rows).
        self._to_judge: queue.Queue[tuple[Cell, dict[str, Any], str | None] | None] = queue.Queue(
            maxsize=max(16, 4 * judges)
        )
        self._judges = [
            threading.Thread(target=self._judge_work, name=f"experiment-judge-{i}", daemon=True) for i in range(judges)
        ]
        self._writer = threading.Thread(target=self._write, name="experiment-writer", daemon=True)
        self._supervisor = threading.Thread(target=self._supervise, name="experiment-run", daemon=True)

    # --- public --------------------------------------------------------------------------

    @classmethod
    def find(cls, run_id: str) -> RunHandle | None:
        """The live handle of a run started by this process, while it runs."""
        with _live_lock:
            return _live.get(run_id)

    def progress(self) -> Progress:
        with self._lock:
            end = self._ended if self._ended is not None else time.monotonic()
            return replace(self._progress, elapsed_s=round(end - self._started, 3))

    def stop(self) -> None:
        """Take no new cell; close the calls in flight. Returns at once (see `wait`)."""
        self._stop.set()
        with self._lock:
            if self._progress.state == "running":
                self._progress = replace(self._progress, state="stopping")

    @property
    def finished(self) -> bool:
        return self._done.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        """Until the run is stored as completed or stopped; False if `timeout` passed first."""
        return self._done.wait(timeout)

    def updates(self, interval_s: float = 0.5) -> Iterator[Progress]:
        """A snapshot at least every `interval_s` until the run finishes (the last one is final)."""
        while not self._done.wait(interval_s):
            yield self.progress()
        yield self.progress()

    # --- running -------------------------------------------------------------------------

    def _start(self) -> None:
        with _live_lock:
            _live[self.run_id] = self
        self._writer.start()
        for worker in self._workers:
            worker.start()
        for judge in self._judges:
            judge.start()
        self._supervisor.start()

    def _work(self, source: _Cells) -> None:
        while not self._stop.is_set():
            try:
                item = source.next()
            except Exception as exc:
                log.exception("experiment run %s: could not read the dataset", self.run_id)
                with self._lock:
                    self._progress = replace(
                        self._progress, database_error=f"could not read the dataset: {type(exc).__name__}"
                    )
                self.stop()
                return
            if item is None:
                return
            row, values, expected, variant = item
            self._count(running=1)
            try:
                cell = self._cells.run_cell(row, values, expected, variant)
            except Exception as exc:
                log.exception("experiment cell %s/%s crashed", row, variant)
                cell = Cell(row=row, variant=variant, status="error", error_type="internal", error_message=str(exc))
            if self._rubrics and cell.status == "ok":
                self._count(running=-1, judging=1)
                self._to_judge.put((cell, values, expected))
            else:
                self._finish(cell)

    def _judge_work(self) -> None:
        while (item := self._to_judge.get()) is not None:
            cell, values, expected = item
            self._finish(self._cells.judged_safely(cell, values, expected), was_running=False, was_judging=True)

    def _count(self, *, running: int = 0, judging: int = 0) -> None:
        with self._lock:
            p = self._progress
            self._progress = replace(p, running=p.running + running, judging=p.judging + judging)

    def _finish(self, cell: Cell, *, was_running: bool = True, was_judging: bool = False) -> None:
        self._results.put(cell)
        with self._lock:
            p = self._progress
            per_variant = list(p.per_variant)
            per_variant[cell.variant] += 1
            self._progress = replace(
                p,
                done=p.done + 1,
                ok=p.ok + (cell.status == "ok"),
                errors=p.errors + (cell.status == "error"),
                incomplete=p.incomplete + (cell.status == "incomplete"),
                cancelled=p.cancelled + (cell.status == "cancelled"),
                running=p.running - (1 if was_running else 0),
                judging=p.judging - (1 if was_judging else 0),
                per_variant=tuple(per_variant),
            )
        self._notify()

    def _notify(self) -> None:
        if self._on_progress is None:
            return
        try:
            self._on_progress(self.progress())
        except Exception:
            log.exception("experiment progress callback failed")

    def _supervise(self) -> None:
        for worker in self._workers:
            worker.join()
        for _judge in self._judges:
            self._to_judge.put(None)  # after every answer that was queued: each judge takes one and ends
        for judge in self._judges:
            judge.join()
        stopped = self._stop.is_set()
        if stopped:
            for source in self._sources.values():
                try:
                    for row, _values, _expected, variant in source.rest():
                        self._finish(Cell(row=row, variant=variant, status="cancelled"), was_running=False)
                except Exception:
                    log.exception("experiment run %s: could not mark the cells that did not run", self.run_id)
        self._results.put(None)
        self._writer.join()
        status: Literal["completed", "stopped"] = "stopped" if stopped else "completed"
        try:
            self._store.finish_run(self.run_id, status)
        except Exception as exc:  # noqa: BLE001
            log.error("could not mark run %s %s: %s", self.run_id, status, exc)
        with self._lock:
            self._ended = time.monotonic()
            self._progress = replace(self._progress, state=status)
        with _live_lock:
            _live.pop(self.run_id, None)
        self._done.set()
        self._notify()

    def _write(self) -> None:
        pending: list[Cell] = []
        last_beat = last_stop_read = time.monotonic()
        finishing = False
        while True:
            try:
                item: Cell | EllipsisType | None = self._results.get(timeout=1.0)
            except queue.Empty:
                item = ...
            if item is None:
                finishing = True
            elif isinstance(item, Cell):
                pending.append(item)
                deadline = time.monotonic() + _LINGER_S
                while len(pending) < _BATCH and (left := deadline - time.monotonic()) > 0:
                    try:
                        more = self._results.get(timeout=left)
                    except queue.Empty:
                        break
                    if more is None:
                        finishing = True
                        break
                    pending.append(more)
            if pending or time.monotonic() - last_beat > _HEARTBEAT_S:
                pending = self._flush(pending, final=finishing)
                last_beat = time.monotonic()
            if not finishing and time.monotonic() - last_stop_read > _STOP_READ_S:
                self._read_stop()
                last_stop_read = time.monotonic()
            if finishing and not pending:
                return
            if finishing:
                time.sleep(1.0)  # the database refused the batch: retry until it takes it

    def _read_stop(self) -> None:
        """Stop asked from another process (a replica's page: `ExperimentStore.request_stop`)."""
        if self._stop.is_set():
            return
        try:
            asked = self._store.stop_requested(self.run_id)
        except Exception:  # the database is away: read again next time
            log.debug("experiment run %s: could not read its Stop flag", self.run_id, exc_info=True)
            return
        if asked:
            self.stop()

    def _flush(self, pending: list[Cell], *, final: bool) -> list[Cell]:
        try:
            if pending:
                for at in range(0, len(pending), _BATCH):
                    self._store.write_cells(self.run_id, pending[at : at + _BATCH])
            else:
                self._store.heartbeat(self.run_id)
        except Exception as exc:  # noqa: BLE001 - keep the cells and say so; retried next round
            message = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
            log.warning("experiment run %s: could not store %d cell(s): %s", self.run_id, len(pending), message)
            with self._lock:
                self._progress = replace(self._progress, database_error=message)
            self._notify()
            return pending
        with self._lock:
            if self._progress.database_error:
                self._progress = replace(self._progress, database_error=None)
        return []


def image_refusals(
    conductor: Any,
    variants: Sequence[Any],
    image_columns: Sequence[str],
    overrides: Mapping[str, Any] | None = None,
) -> list[str]:
    """Why variants cannot run a dataset with image columns ("local reads text only: remove it
    or the image column (image)"), one line per provider; empty when every one can."""
    if not image_columns:
        return []
    providers = {**conductor.registry.providers, **(overrides or {})}
    unable = [
        name
        for name in dict.fromkeys(v.provider for v in variants)
        if (provider := providers.get(name)) is not None and not provider.reads_attachments
    ]
    columns = ", ".join(image_columns)
    return [f"{name} reads text only: remove it or the image column ({columns})" for name in unable]


def judge_problems(conductor: Any, checks: Sequence[Check], overrides: Mapping[str, Any] | None = None) -> list[str]:
    """Why rubric checks' judges cannot be asked (a provider not configured here), one line each."""
    ready = {**conductor.registry.providers, **(overrides or {})}
    judges = dict.fromkeys(c.judge.provider for c in checks if c.kind == CheckKind.rubric and c.judge is not None)
    return [
        f"the judge {name!r} is not a configured provider (configured: {', '.join(sorted(ready)) or 'none'})"
        for name in judges
        if name not in ready
    ]


def start_run(
    conductor: Any,
    store: ExperimentStore,
    experiment_id: str,
    *,
    check: CheckKind | str = CheckKind.contains,
    checks: Sequence[Check | CheckKind | str] | None = None,
    concurrency: Mapping[str, int] | None = None,
    overrides: Mapping[str, Any] | None = None,
    on_progress: Callable[[Progress], None] | None = None,
    dataset: tuple[str, int] | None = None,
    prompt_version_id: str | None = None,
) -> RunHandle | QueuedRun:
    """Store a new run of the experiment and start it in the background. `conductor` is a
    `Conductor` (its sync `stream` is called from worker threads); `overrides` are the
    providers a browser session added (passed to every call); `concurrency` overrides the
    configured calls at once per provider for this run. Calling it again re-runs the experiment.
    `dataset` (name, version) records the saved dataset the experiment's rows came from."""
    experiment = store.experiment(experiment_id)
    limit = conductor.settings.dataset_max_rows
    if experiment.row_count > limit:  # the limit may have been lowered since it was created
        raise DatasetTooLargeError(experiment.row_count, limit)
    pictured = experiment.image_columns if store.has_images(experiment.id) else ()
    if refusals := image_refusals(conductor, experiment.variants, pictured, overrides):
        raise ExperimentError("; ".join(refusals) + ". Nothing was sent.")
    kinds = as_checks(checks if checks is not None else check)
    if problems := judge_problems(conductor, kinds, overrides):
        raise ExperimentError("; ".join(problems) + ". Nothing was sent.")
    providers = list(dict.fromkeys(v.provider for v in experiment.variants))
    limits = concurrency_limits(conductor.settings.experiment_concurrency, providers, concurrency)
    if conductor.settings.experiment_runner == "jobs":
        return _queue_run(store, experiment, kinds, limits, overrides, dataset, prompt_version_id)
    # Holds the run's lease until finish_run.
    run = store.new_run(experiment, kinds, limits, dataset, prompt_version_id=prompt_version_id)
    try:
        handle = RunHandle(conductor, store, experiment, run.id, run.checks, limits, overrides, on_progress)
        handle._start()
    except BaseException:
        store.finish_run(run.id, "stopped")  # never left "running" by a live process that does not run it
        raise
    return handle


def _queue_run(
    store: ExperimentStore,
    experiment: Experiment,
    checks: tuple[Check, ...],
    limits: dict[str, int],
    overrides: Mapping[str, Any] | None,
    dataset: tuple[str, int] | None,
    prompt_version_id: str | None,
) -> QueuedRun:
    """CONDUCTOR_EXPERIMENT_RUNNER=jobs: the run and its cells' jobs in one transaction; the
    workers (`python -m conductor_core.worker`) answer them."""
    from ..jobs import QueuedRun, enqueue_run

    if store.engine.dialect.name != "postgresql":
        raise ExperimentError(
            "CONDUCTOR_EXPERIMENT_RUNNER=jobs needs a PostgreSQL database (CONDUCTOR_DATABASE_URL): "
            "with SQLite, unset it and runs execute in this process"
        )
    used = [*(v.provider for v in experiment.variants), *(c.judge.provider for c in checks if c.judge is not None)]
    session_only = [name for name in dict.fromkeys(used) if name in (overrides or {})]
    if session_only:
        raise ExperimentError(
            f"{', '.join(session_only)} was set up in this browser session, and runs are answered by the workers, "
            "which know only the configured providers: configure it on the server, or choose another. Nothing was sent."
        )
    run = store.new_run(
        experiment,
        checks,
        limits,
        dataset,
        prompt_version_id=prompt_version_id,
        enqueue=lambda conn, run: enqueue_run(conn, run, experiment, limits),
    )
    return QueuedRun(store, run.id)


# --- pairwise judging: which of two variants answered a row better ------------------------------


@dataclass(frozen=True)
class PairwiseProgress:
    run_id: str
    a: int
    b: int
    total: int  # rows where both variants answered
    done: int
    state: State


_live_pairs: dict[tuple[str, int, int], PairwiseHandle] = {}


class PairwiseHandle:
    """A pairwise judgement of two variants over a finished run's rows, in this process. Each
    row whose two cells answered is judged twice (order swapped; judging.py `judge_pair`) by
    `experiment_judge_concurrency` threads, and its vote stored as it comes. Stop: no new row;
    a call in flight is closed at its next event and its row stored as cancelled."""

    def __init__(
        self,
        conductor: Any,
        store: ExperimentStore,
        run_id: str,
        a: int,
        b: int,
        judge: JudgeTarget,
        criteria: str | None,
        overrides: Mapping[str, Any] | None,
    ) -> None:
        self.run_id, self.a, self.b, self.judge, self.criteria = run_id, a, b, judge, criteria
        self._conductor, self._store, self._overrides = conductor, store, overrides
        self._stop = threading.Event()
        self._done = threading.Event()
        self._lock = threading.Lock()
        self._pairs = list(self._answered_pairs())
        self._next = iter(self._pairs)
        self._progress = PairwiseProgress(run_id, a, b, len(self._pairs), 0, "running")
        limit = max(1, int(getattr(conductor.settings, "experiment_judge_concurrency", 2)))
        self._threads = [
            threading.Thread(target=self._work, name=f"experiment-pairwise-{i}", daemon=True)
            for i in range(max(1, min(limit, len(self._pairs))))
        ]

    @classmethod
    def find(cls, run_id: str, a: int, b: int) -> PairwiseHandle | None:
        with _live_lock:
            return _live_pairs.get((run_id, a, b))

    @classmethod
    def live(cls, run_id: str) -> list[PairwiseHandle]:
        """The pairs of this run being judged in this process."""
        with _live_lock:
            return [h for (run, _a, _b), h in _live_pairs.items() if run == run_id]

    def _answered_pairs(self) -> Iterator[tuple[int, str, str, str]]:
        """(row, its prompt, A's answer, B's answer) for every row where both answered."""
        experiment = self._store.experiment(self._store.run(self.run_id).experiment_id)
        offset = 0
        while page := self._store.grid(self.run_id, offset=offset, limit=200):
            for grid_row in page:
                one, two = grid_row.cells[self.a], grid_row.cells[self.b]
                if one is None or two is None or one.status != "ok" or two.status != "ok":
                    continue
                if one.answer is None or two.answer is None:
                    continue
                prompt = self._store.prompt(experiment, grid_row.values, grid_row.row)
                yield grid_row.row, prompt, one.answer, two.answer
            offset = page[-1].row + 1

    def progress(self) -> PairwiseProgress:
        with self._lock:
            return self._progress

    def stop(self) -> None:
        self._stop.set()
        with self._lock:
            if self._progress.state == "running":
                self._progress = replace(self._progress, state="stopping")

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def _start(self) -> None:
        with _live_lock:
            _live_pairs[(self.run_id, self.a, self.b)] = self
        for thread in self._threads:
            thread.start()
        threading.Thread(target=self._supervise, name="experiment-pairwise", daemon=True).start()

    def _take(self) -> tuple[int, str, str, str] | None:
        with self._lock:
            return next(self._next, None)

    def _work(self) -> None:
        while (item := self._take()) is not None:
            row, prompt, answer_a, answer_b = item
            try:
                verdict = judge_pair(
                    self._conductor,
                    self.judge,
                    prompt=prompt,
                    answer_a=answer_a,
                    answer_b=answer_b,
                    criteria=self.criteria,
                    overrides=self._overrides,
                    stopped=self._stop.is_set,
                )
                vote = JudgeVote(
                    row=row, a=self.a, b=self.b, judge=self.judge, criteria=self.criteria, **asdict(verdict)
                )
            except Exception as exc:  # the row says what went wrong; the others go on
                log.exception("pairwise judgement of row %s crashed", row)
                vote = JudgeVote(
                    row=row, a=self.a, b=self.b, judge=self.judge, outcome="failed", error=f"internal: {exc}"
                )
            try:
                self._store.write_judge_votes(self.run_id, [vote])
            except Exception:
                log.exception("pairwise judgement of row %s could not be stored", row)
            with self._lock:
                self._progress = replace(self._progress, done=self._progress.done + 1)

    def _supervise(self) -> None:
        for thread in self._threads:
            thread.join()
        with self._lock:
            state: State = "stopped" if self._stop.is_set() else "completed"
            self._progress = replace(self._progress, state=state)
        with _live_lock:
            _live_pairs.pop((self.run_id, self.a, self.b), None)
        self._done.set()


def start_pairwise(
    conductor: Any,
    store: ExperimentStore,
    run_id: str,
    a: int,
    b: int,
    judge: JudgeTarget,
    *,
    criteria: str | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> PairwiseHandle:
    """Judge variants `a` and `b` of a finished run row by row (replacing an earlier judgement
    of the pair). Refused, before any call, for a run still running, a judge not configured,
    or a run whose answers are not kept."""
    run = store.run(run_id)
    experiment = store.experiment(run.experiment_id)
    width = len(experiment.variants)
    if a == b or not (0 <= a < width and 0 <= b < width):
        raise ExperimentError(f"choose two different variants of the {width}")
    if run.status == "running":
        raise ExperimentError("the run is still running: judge its answers once it has finished")
    if judge.provider == "auto":
        raise ExperimentError("the judge names a provider: 'auto' could judge each row with another model")
    if problems := judge_problems(conductor, [Check(kind=CheckKind.rubric, rubric="-", judge=judge)], overrides):
        raise ExperimentError("; ".join(problems) + ". Nothing was sent.")
    if not store.keeps_text:
        raise ExperimentError("answers are not kept (prompt logging is off): there is nothing to compare")
    if PairwiseHandle.find(run_id, a, b) is not None:
        raise ExperimentError("this pair is being judged already")
    store.clear_judge_votes(run_id, a, b)
    handle = PairwiseHandle(conductor, store, run_id, a, b, judge, criteria, overrides)
    handle._start()
    return handle
