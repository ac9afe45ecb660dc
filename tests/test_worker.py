"""Experiment runs as jobs (conductor_core/jobs) answered by real `python -m conductor_core.worker`
processes, on the loopback PostgreSQL, against the loopback OpenAI and Anthropic servers (the
real SDKs over HTTP). The run is started as the playground starts it (`start_run` with
CONDUCTOR_EXPERIMENT_RUNNER=jobs) and read as any replica reads it (`queued_progress`).

Every wait is for a state (the upstream holding N requests, a worker seen, a run finished),
with a generous deadline: the machine is shared and slow.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from workbench_support import KEYS, cloud_conductor

from conductor_core.jobs import QueuedRun, queued_progress, workers_seen
from conductor_core.providers.spec import provider_variables
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import Check, ExperimentError, ExperimentStore
from conductor_core.workbench.runner import RunHandle, start_run
from conductor_core.workbench.variants import Variant
from tests.store_backends import REPO_ROOT, postgres_schema

pytestmark = pytest.mark.timeout(300)

DEADLINE_S = 120.0


def rows(n: int) -> str:
    return "country,expected\n" + "".join(f"country {i},Paris\n" for i in range(n))


def wait_for(condition: Callable[[], Any], what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@pytest.fixture
def database(tmp_path: Path) -> Iterator[str]:
    with postgres_schema() as url:
        yield url


class Workers:
    """Worker processes started for one test, each logging to its own file; stopped at the end."""

    def __init__(self, clouds: dict[str, Any], database: str, tmp_path: Path) -> None:
        self.env = {
            k: v for k, v in os.environ.items() if k not in provider_variables() and not k.startswith("CONDUCTOR_")
        }
        self.env.update(
            OPENAI_API_KEY=KEYS["openai"],
            OPENAI_BASE_URL=clouds["openai"].url,
            ANTHROPIC_API_KEY=KEYS["anthropic"],
            ANTHROPIC_BASE_URL=clouds["anthropic"].url,
            CONDUCTOR_DATABASE_URL=database,
            CONDUCTOR_LOCAL_ENABLED="false",
            CONDUCTOR_MAX_RETRIES="0",
            CONDUCTOR_TIMEOUT_S="60",
            CONDUCTOR_DATA_DIR=str(tmp_path / "worker-data"),
            CONDUCTOR_CONFIG=str(tmp_path / "none.toml"),
            # Fast heartbeats, so a killed worker is found gone in seconds, not the default 30.
            CONDUCTOR_WORKER_HEARTBEAT_S="0.5",
            CONDUCTOR_WORKER_STALLED_AFTER_S="3",
            CONDUCTOR_WORKER_GRACE_S="60",
            PYTHONPATH=str(REPO_ROOT),
            PYTHONUNBUFFERED="1",
        )
        self.tmp_path = tmp_path
        self.started: list[subprocess.Popen[bytes]] = []

    def start(self, concurrency: int, **env: str) -> subprocess.Popen[bytes]:
        log = open(self.tmp_path / f"worker-{len(self.started)}.log", "wb")
        process = subprocess.Popen(
            [sys.executable, "-m", "conductor_core.worker", "--concurrency", str(concurrency)],
            cwd=self.tmp_path,
            env=self.env | env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        self.started.append(process)
        return process

    def logs(self) -> str:
        return "\n".join(
            f"--- worker {i} ---\n" + (self.tmp_path / f"worker-{i}.log").read_text(errors="replace")
            for i in range(len(self.started))
        )

    def stop_all(self) -> None:
        for process in self.started:
            if process.poll() is None:
                process.kill()
            process.wait(30)


@pytest.fixture
def workers(clouds: dict[str, Any], database: str, tmp_path: Path) -> Iterator[Workers]:
    found = Workers(clouds, database, tmp_path)
    yield found
    found.stop_all()


def playground(clouds: dict[str, Any], database: str, tmp_path: Path) -> tuple[Conductor, ExperimentStore]:
    """What a playground replica holds, set to queue runs for the workers."""
    conductor = cloud_conductor(clouds, tmp_path / "data", database, experiment_runner="jobs")
    return conductor, ExperimentStore(conductor.log)


def wait_for_workers(store: ExperimentStore, n: int, workers: Workers) -> None:
    try:
        wait_for(lambda: workers_seen(store.engine) >= n, f"{n} worker(s) to start")
    except AssertionError:
        raise AssertionError(workers.logs()) from None


def finished(store: ExperimentStore, run_id: str, workers: Workers, timeout: float = DEADLINE_S) -> str:
    try:
        return wait_for(lambda: (s := store.run(run_id).status) != "running" and s, "the run to finish", timeout)
    except AssertionError:
        raise AssertionError(workers.logs()) from None


def stored_once(store: ExperimentStore, run_id: str, total: int) -> list[Any]:
    cells = store.cells(run_id)
    assert len(cells) == total
    assert len({(c.row, c.variant) for c in cells}) == total
    return cells


def test_two_workers_share_a_run_and_every_cell_is_answered_once(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    conductor, store = playground(clouds, database, tmp_path)
    try:
        for name in ("openai", "anthropic"):
            clouds[name].hold()
        workers.start(concurrency=2)
        workers.start(concurrency=2)
        wait_for_workers(store, 2, workers)
        experiment = store.create(
            "Shared", "{{country}}", read_dataset(rows(10)), [Variant(provider="openai"), Variant(provider="anthropic")]
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2, "anthropic": 2})
        assert isinstance(handle, QueuedRun) and RunHandle.find(handle.run_id) is None
        # Four lanes (two per provider) and two cells at once per worker: four calls held at
        # once means both workers are answering this run.
        wait_for(lambda: clouds["openai"].held + clouds["anthropic"].held == 4, "four calls held by two workers")
        progress = handle.progress()
        assert (progress.state, progress.running, progress.workers, progress.done) == ("running", 4, 2, 0)
        for name in ("openai", "anthropic"):
            clouds[name].release()
        assert finished(store, handle.run_id, workers) == "completed"
        cells = stored_once(store, handle.run_id, 20)
        assert {c.status for c in cells} == {"ok"}
        assert (clouds["openai"].request_count, clouds["anthropic"].request_count) == (10, 10)
        final = handle.progress()
        assert (final.state, final.done, final.ok, final.per_variant) == ("completed", 20, 20, (10, 10))
    finally:
        conductor.close()


def test_a_providers_limit_holds_across_all_workers(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    conductor, store = playground(clouds, database, tmp_path)
    try:
        clouds["openai"].latency_s = 0.1
        workers.start(concurrency=4)
        workers.start(concurrency=4)
        wait_for_workers(store, 2, workers)
        experiment = store.create(
            "Limit",
            "{{country}}",
            read_dataset(rows(12)),
            [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2})
        assert finished(store, handle.run_id, workers) == "completed"
        stored_once(store, handle.run_id, 24)
        assert clouds["openai"].request_count == 24
        # Eight cells at once across the two workers, and never more than the limit upstream.
        assert clouds["openai"].peak_in_flight == 2
    finally:
        conductor.close()


def test_a_worker_killed_mid_run_has_its_cells_answered_by_another_once(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    conductor, store = playground(clouds, database, tmp_path)
    upstream = clouds["openai"]
    try:
        upstream.hold()
        doomed = workers.start(concurrency=2)
        wait_for_workers(store, 1, workers)
        experiment = store.create(
            "Killed",
            "{{country}}",
            read_dataset(rows(6)),
            [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2})
        wait_for(lambda: upstream.held == 2, "the first worker's two calls held upstream")
        workers.start(concurrency=2)
        wait_for_workers(store, 2, workers)
        doomed.send_signal(signal.SIGKILL)
        doomed.wait(30)
        # The run goes on without the process that died: not interrupted, one worker alive.
        run = store.run(handle.run_id)
        assert run.status == "running"
        wait_for(lambda: workers_seen(store.engine, 3.0) == 1, "the killed worker to be seen gone")
        assert queued_progress(store, store.run(handle.run_id), stalled_after_s=3.0).state == "running"
        # Its two cells go back to the queue after 3 s of silence; the other worker takes them.
        wait_for(lambda: upstream.request_count >= 3, "the second worker to retry a killed worker's cell")
        upstream.release()
        assert finished(store, handle.run_id, workers) == "completed"
        cells = stored_once(store, handle.run_id, 12)
        assert {c.status for c in cells} == {"ok"}
        # Twelve answers, plus the two calls the killed worker had open (their clients went away).
        disconnected = [r for r in upstream.requests if r.get("disconnected")]
        assert len(disconnected) == 2 and upstream.request_count == 14
    finally:
        conductor.close()


def test_stop_from_another_replica_stops_the_workers_and_cancels_what_did_not_start(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    conductor, store = playground(clouds, database, tmp_path)
    upstream = clouds["openai"]
    other = RequestLog(database, data_dir=tmp_path / "other")
    try:
        upstream.reply = " ".join(f"word{i}" for i in range(40))  # a long stream...
        upstream.chunk_delay_s = 0.2  # ...that is still streaming when Stop is read
        upstream.hold(after_chunks=1)
        workers.start(concurrency=4)
        wait_for_workers(store, 1, workers)
        experiment = store.create(
            "Stopped",
            "{{country}}",
            read_dataset(rows(8)),
            [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2})
        wait_for(lambda: upstream.held == 2, "two answers streaming")
        assert ExperimentStore(other).request_stop(handle.run_id)  # another replica's store
        assert store.run(handle.run_id).stop_requested and handle.progress().state == "stopping"
        upstream.release()
        assert finished(store, handle.run_id, workers) == "stopped"
        cells = stored_once(store, handle.run_id, 16)
        # The two calls in flight were closed at their next chunk, and no other call started.
        assert {c.status for c in cells} == {"cancelled"}
        assert upstream.request_count == 2
        cut = [c for c in cells if c.answer]
        assert len(cut) == 2 and all(upstream.reply.startswith(c.answer.strip()) for c in cut)
        assert handle.progress().state == "stopped"
    finally:
        other.close()
        conductor.close()


def test_sigterm_puts_the_cells_in_flight_back_and_the_worker_exits_cleanly(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    conductor, store = playground(clouds, database, tmp_path)
    upstream = clouds["openai"]
    try:
        upstream.chunk_delay_s = 0.05
        upstream.hold(after_chunks=1)
        leaving = workers.start(concurrency=2, CONDUCTOR_WORKER_GRACE_S="0.5")
        wait_for_workers(store, 1, workers)
        experiment = store.create(
            "Restarted",
            "{{country}}",
            read_dataset(rows(3)),
            [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2})
        wait_for(lambda: upstream.held == 2, "two answers streaming")
        leaving.send_signal(signal.SIGTERM)
        # After the grace period the worker aborts its cells; they close at their next chunk.
        wait_for(lambda: "Aborting them" in workers.logs(), "the worker to give up waiting for its cells")
        upstream.release()
        assert leaving.wait(DEADLINE_S) == 0, workers.logs()
        assert store.cells(handle.run_id) == []  # nothing half-done was stored
        assert store.run(handle.run_id).status == "running"
        workers.start(concurrency=2)
        assert finished(store, handle.run_id, workers) == "completed"
        assert {c.status for c in stored_once(store, handle.run_id, 6)} == {"ok"}
    finally:
        conductor.close()


def test_sigterm_answers_the_cell_in_flight_and_hands_the_rest_of_its_chunk_back(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    """A job answers a chunk of its lane's cells; a worker told to stop finishes the cell in
    flight and puts the rest of the chunk back in the queue at once (not after its grace)."""
    conductor, store = playground(clouds, database, tmp_path)
    upstream = clouds["openai"]
    try:
        upstream.hold()
        # One lane of twelve cells, one chunk; CONDUCTOR_WORKER_GRACE_S=60: time enough to answer it all.
        leaving = workers.start(concurrency=1)
        wait_for_workers(store, 1, workers)
        experiment = store.create(
            "Handed back",
            "{{country}}",
            read_dataset(rows(6)),
            [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 1})
        wait_for(lambda: upstream.held == 1, "the lane's first call held upstream")
        leaving.send_signal(signal.SIGTERM)
        wait_for(lambda: "stopping:" in workers.logs(), "the worker to take the signal")
        upstream.release()  # nothing is held any more: a worker that kept going would answer all twelve
        assert leaving.wait(DEADLINE_S) == 0, workers.logs()
        assert [(c.row, c.variant, c.status) for c in store.cells(handle.run_id)] == [(0, 0, "ok")]
        assert store.run(handle.run_id).status == "running" and upstream.request_count == 1
        workers.start(concurrency=1)
        assert finished(store, handle.run_id, workers) == "completed"
        assert {c.status for c in stored_once(store, handle.run_id, 12)} == {"ok"}
        assert upstream.request_count == 12
    finally:
        conductor.close()


def test_a_queued_run_s_rubric_is_judged_by_the_workers_at_most_the_judge_limit_at_once(
    clouds: dict[str, Any], database: str, workers: Workers, tmp_path: Path
) -> None:
    """Answers from Anthropic, graded by a rubric whose judge is the OpenAI upstream: every cell
    carries the judge's verdict, and a worker answering 4 cells at once asks at most
    experiment_judge_concurrency (1 here) judges at once."""
    conductor, store = playground(clouds, database, tmp_path)  # resets the servers
    judge = clouds["openai"]
    judge.json_reply = json.dumps({"pass": True, "score": 0.9, "reason": "names Paris"})
    judge.latency_s = 0.3  # judgements overlap unless the worker keeps them apart
    try:
        workers.start(concurrency=4, CONDUCTOR_EXPERIMENT_JUDGE_CONCURRENCY="1")
        wait_for_workers(store, 1, workers)
        experiment = store.create(
            "Judged",
            "{{country}}",
            read_dataset(rows(6)),
            [Variant(provider="anthropic", temperature=t) for t in (0, 1)],
        )
        rubric = Check.model_validate(
            {"kind": "rubric", "rubric": "Does {{answer}} name {{expected}}?", "judge": {"provider": "openai"}}
        )
        handle = start_run(conductor, store, experiment.id, checks=[rubric], concurrency={"anthropic": 4})
        assert finished(store, handle.run_id, workers) == "completed"
        cells = stored_once(store, handle.run_id, 12)
        verdicts = {(c.checks[0].passed, c.checks[0].score, c.checks[0].judge.status) for c in cells}  # type: ignore[index,union-attr]
        assert verdicts == {(True, 0.9, "ok")}
        assert sum(r["path"].endswith("/chat/completions") for r in judge.requests) == 12
        assert judge.peak_in_flight == 1
    finally:
        conductor.close()


def test_jobs_need_postgresql_and_say_so(clouds: dict[str, Any], tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path / "data", None, experiment_runner="jobs")
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "SQLite", "{{country}}", read_dataset(rows(2)), [Variant(provider="openai"), Variant(provider="anthropic")]
        )
        with pytest.raises(ExperimentError, match="needs a PostgreSQL database"):
            start_run(conductor, store, experiment.id)
        assert store.runs(experiment.id) == [] and clouds["openai"].request_count == 0
    finally:
        conductor.close()


def test_a_worker_without_postgresql_says_what_to_set(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_")}
    env.update(PYTHONPATH=str(REPO_ROOT), CONDUCTOR_DATA_DIR=str(tmp_path), CONDUCTOR_CONFIG=str(tmp_path / "none"))
    done = subprocess.run(
        [sys.executable, "-m", "conductor_core.worker"], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2 and "CONDUCTOR_DATABASE_URL=postgresql://" in done.stderr


def test_the_page_says_a_queued_run_waits_for_a_worker_and_its_stop_reaches_the_workers(
    env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No worker running: the page shows the queued run's progress from the database, says it
    waits for a worker (not a silent spinner), and its Stop sets the flag every worker reads."""
    from playground import state as playground_state
    from tests.test_playground_experiments import experiments_page, fill, start

    with postgres_schema() as url:
        monkeypatch.setenv("CONDUCTOR_DATABASE_URL", url)
        monkeypatch.setenv("CONDUCTOR_EXPERIMENT_RUNNER", "jobs")
        at = start(fill(experiments_page()))
        run_id = at.query_params["run"]
        assert RunHandle.find(run_id) is None  # queued, not run by this process
        assert any("Waiting for a worker" in i.value for i in at.info)
        (bar,) = at.get("progress")
        assert "0 of 9 answers" in bar.proto.text and "another server process" not in bar.proto.text
        at.button(key=f"exp_stop_{run_id}").click().run()
        store = playground_state.experiments()
        assert store.run(run_id).stop_requested and store.run(run_id).status == "running"
        (bar,) = at.get("progress")
        assert bar.proto.text.startswith("Stopping")


def test_a_cell_answered_twice_is_stored_once_and_the_run_finishes_once(database: str, tmp_path: Path) -> None:
    """What a worker presumed dead and the worker that retried its cell both do: the first answer
    stored stays, the second is dropped, and the run is marked finished by its last cell only."""
    from conductor_core.workbench.experiments import Cell

    log = RequestLog(database, data_dir=tmp_path / "data")
    try:
        store = ExperimentStore(log)
        experiment = store.create(
            "Twice", "{{country}}", read_dataset(rows(1)), [Variant(provider="openai"), Variant(provider="anthropic")]
        )
        run = store.new_run(experiment, "contains", {"openai": 1, "anthropic": 1}, enqueue=lambda conn, run: None)
        first = Cell(row=0, variant=0, status="ok", answer="first", input_tokens=1, output_tokens=1)
        store.write_cells(run.id, [first], once=True)
        assert store.finish_if_complete(run.id) is None  # one of two cells
        store.write_cells(run.id, [first.model_copy(update={"answer": "second"})], once=True)
        assert [(c.variant, c.answer) for c in store.cells(run.id)] == [(0, "first")]
        store.write_cells(run.id, [Cell(row=0, variant=1, status="cancelled")], once=True)
        assert store.finish_if_complete(run.id) == "completed"
        assert store.finish_if_complete(run.id) is None  # finished once
        assert store.run(run.id).status == "completed"
    finally:
        log.close()


def test_cells_stored_at_the_same_moment_by_many_workers_finish_the_run(database: str, tmp_path: Path) -> None:
    """The last cells of a run stored at once, in concurrent transactions: the run is finished
    by exactly one of them (each counts the cells after its own commit, so the last to commit sees all)."""
    import threading

    from conductor_core.workbench.experiments import Cell

    log = RequestLog(database, data_dir=tmp_path / "data")
    try:
        store = ExperimentStore(log)
        experiment = store.create(
            "Race", "{{country}}", read_dataset(rows(8)), [Variant(provider="openai"), Variant(provider="anthropic")]
        )
        for _round in range(5):
            run = store.new_run(experiment, "contains", {"openai": 8, "anthropic": 8}, enqueue=lambda conn, run: None)
            start = threading.Barrier(16)
            finished: list[str | None] = []

            def store_cell(
                row: int, variant: int, run_id: str = run.id, start: Any = start, finished: list[Any] = finished
            ) -> None:
                start.wait()
                cell = Cell(row=row, variant=variant, status="ok", input_tokens=1, output_tokens=1)
                finished.append(store.write_cells(run_id, [cell], once=True, finish=True))

            threads = [threading.Thread(target=store_cell, args=(r, v)) for r in range(8) for v in range(2)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(60)
            assert (finished.count("completed"), finished.count(None)) == (1, 15)
            assert store.run(run.id).status == "completed"
    finally:
        log.close()


def test_stop_from_another_process_stops_a_run_in_process_too(clouds: dict[str, Any], tmp_path: Path) -> None:
    """The default runner (in the process that started the run): Stop asked through another
    store (another replica's page) is read by the process running it, as its own Stop."""
    conductor = cloud_conductor(clouds, tmp_path / "data")
    upstream = clouds["openai"]
    other = RequestLog(None, data_dir=tmp_path / "data")
    try:
        upstream.reply = " ".join(f"word{i}" for i in range(40))
        upstream.chunk_delay_s = 0.05
        upstream.hold(after_chunks=1)
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Elsewhere", "{{country}}", read_dataset(rows(6)), [Variant(provider="openai"), Variant(provider="openai")]
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2})
        assert isinstance(handle, RunHandle)
        wait_for(lambda: upstream.held == 2, "two answers streaming")
        assert ExperimentStore(other).request_stop(handle.run_id)
        wait_for(lambda: handle.progress().state == "stopping", "the run to read its Stop flag")
        upstream.release()
        assert handle.wait(DEADLINE_S) and handle.progress().state == "stopped"
        cells = store.cells(handle.run_id)
        assert len(cells) == 12 and {c.status for c in cells} == {"cancelled"}
        assert upstream.request_count == 2
    finally:
        other.close()
        conductor.close()
