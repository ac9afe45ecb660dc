"""Experiment runs as jobs: a 1,000-row × 4-variant run answered by 1 and by 2
`python -m conductor_core.worker` processes on the loopback PostgreSQL, against the in-process
runner on the same database as a reference.

Setup: 4 variants, each on its own provider (an OpenAI-compatible endpoint, its own loopback
upstream with a fixed latency), at most LIMIT calls at once per provider (the run's per-provider
limit, which holds across all workers). Four providers rather than two providers × two variants:
each provider's cells then form one stream of lanes of the same length, so the ideal schedule
(cells × latency ÷ limit, per provider; the run's ideal is the largest) is the same for every
provider and any lag shows as a ratio above 1, not hidden behind a slower provider. Each worker
takes up to 4 × LIMIT cells at once, so one worker alone can fill every lane: 1 and 2 workers
have the same ideal.

Upstream latency: LATENCY_MS (250 ms), limit LIMIT (4, `experiment_concurrency`'s default): 16
calls at once, 64 cells a second for the ideal (62.5 s for 1,000 rows). Real model calls take
seconds; a quarter of one is already a severe test of the per-cell overhead (the queue's fetch,
the cell's reads, storing it and queueing its lane's next), since every cell of a lane waits for
the one before it, while 64 cells a second stays within what two shared cores can serve (the
upstream process, PostgreSQL and the runner all take their share of them).

Measured in interleaved rounds (1 worker, 2 workers, then 2, 1, ...) so the machine's load hits
both alike; every timed run is preceded, for that worker set, by a short warm-up run. Per run:
wall time (the run's own created -> finished timestamps in the database) ÷ ideal, cells per
second, the gap in each lane between a cell's answer and its next cell's call starting (p50 /
p90, from the stored cells), the workers' CPU per cell, and the load average. Every run is
checked: every cell stored exactly once, each with its own request, all answered.

    python -m benchmarks.bench_workers [--quick] [--out DIR] [--rounds N]

Needs PostgreSQL: CONDUCTOR_TEST_POSTGRES_URL (a fresh schema is created and dropped); without
it the result file says it was skipped.
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    REPO,
    Upstreams,
    child_env,
    cpu_seconds,
    envelope,
    load,
    parser,
    percentile,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "workers"
MODEL = "bench-model"
PROVIDERS = ("w0", "w1", "w2", "w3")
LATENCY_MS = 250.0
LIMIT = 4  # calls at once per provider (the run's limit, across every worker): experiment_concurrency's default
REPLY = " ".join(f"word{i}" for i in range(12))
SIZES = {"quick": {"rows": 64, "rounds": 1}, "full": {"rows": 1000, "rounds": 2}}
WARM_ROWS = 2 * LIMIT
LIMIT_RATIO = 1.15
DEADLINE_S = 900.0


@contextmanager
def _schema(base: str) -> Iterator[str]:
    """A fresh schema on the PostgreSQL database at `base` (the URL with its search_path), dropped after."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from conductor_core.store import normalize_database_url

    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(normalize_database_url(base))
    try:
        with admin.begin() as conn:
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        url = make_url(normalize_database_url(base)).update_query_dict({"options": f"-csearch_path={schema}"})
        yield url.render_as_string(hide_password=False)
    finally:
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        admin.dispose()


def _dataset(rows: int) -> str:
    return "question,expected\n" + "".join(f"What is item {i}?,word{i % 12}\n" for i in range(rows))


class _Workers:
    """N worker processes for one measurement: started, seen in the database, stopped (SIGTERM)."""

    def __init__(self, env: dict[str, str], n: int, logs: Path) -> None:
        self.processes = []
        for i in range(n):
            log = open(logs / f"worker-{uuid.uuid4().hex[:6]}-{i}.log", "wb")
            self.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "conductor_core.worker"],
                    cwd=REPO,
                    env=env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            )

    def cpu_s(self) -> float:
        return sum(cpu_seconds(p.pid) or 0.0 for p in self.processes)

    def stop(self) -> None:
        for p in self.processes:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.processes:
            try:
                p.wait(60)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def _wait(condition: Any, what: str, timeout: float = DEADLINE_S) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := condition():
            return value
        time.sleep(0.05)
    raise RuntimeError(f"timed out after {timeout:.0f} s waiting for {what}")


def _checked(store: Any, run_id: str, total: int) -> dict[str, Any]:
    """Every cell stored exactly once (the table's key guarantees no duplicate (row, variant),
    so: the count, one request per cell, all answered); the lanes' gaps from the stored cells."""
    from sqlalchemy import text

    with store.engine.connect() as conn:
        cells = conn.execute(
            text(
                "SELECT row_index, variant_index, status, request_id, finished_ts, latency_ms "
                "FROM experiment_cells WHERE run_id = :run"
            ),
            {"run": run_id},
        ).all()
    keys = {(c.row_index, c.variant_index) for c in cells}
    requests = {c.request_id for c in cells if c.request_id}
    ok = sum(c.status == "ok" for c in cells)
    if len(cells) != total or len(keys) != total or len(requests) != total or ok != total:
        raise RuntimeError(
            f"run {run_id}: {len(cells)} cells stored ({len(keys)} distinct, {len(requests)} requests, {ok} ok) "
            f"of {total}"
        )
    # A provider's cells are dealt to LIMIT lanes by row (one variant per provider): row % LIMIT.
    # The gap: from a cell's answer (finished_ts) to its lane's next call starting (finished_ts - latency).
    by_lane: dict[tuple[int, int], list[tuple[int, float, float]]] = {}
    for c in cells:
        by_lane.setdefault((c.variant_index, c.row_index % LIMIT), []).append(
            (c.row_index, c.finished_ts, c.latency_ms / 1000)
        )
    gaps = []
    for lane in by_lane.values():
        lane.sort()
        for (_, done, _), (_, next_done, next_latency) in zip(lane, lane[1:], strict=False):
            gaps.append((next_done - next_latency - done) * 1000)
    latencies = [c.latency_ms for c in cells]
    return {
        "stored": len(cells),
        "lane_gap_ms": {"p50": rounded(percentile(gaps, 0.5)), "p90": rounded(percentile(gaps, 0.9))},
        "call_latency_ms_p50": rounded(percentile(latencies, 0.5)),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, help="interleaved rounds of (1 worker, 2 workers)")
    args = p.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    rows, rounds = size["rows"], args.rounds or size["rounds"]
    started = time.perf_counter()
    postgres = os.environ.get("CONDUCTOR_TEST_POSTGRES_URL")
    if not postgres:  # as bench_request_log: the result file says why, the other benchmarks go on
        skipped = "CONDUCTOR_TEST_POSTGRES_URL is not set (workers need PostgreSQL)"
        path = write_result(args.out, NAME, envelope(NAME, args, started, skipped=skipped, targets=[]))
        report([f"workers -> {path}", f"  skipped: {skipped}"])
        return {"skipped": skipped}
    scrub_environ()
    quiet_logging()

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import ExperimentStore
    from conductor_core.workbench.runner import start_run
    from conductor_core.workbench.variants import Variant

    cells_total = rows * len(PROVIDERS)
    ideal_s = rows * LATENCY_MS / 1000 / LIMIT  # per provider; all four are alike
    results: list[dict[str, Any]] = []
    with (
        tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp,
        _schema(postgres) as database,
        Upstreams([LATENCY_MS] * len(PROVIDERS), reply=REPLY) as up,
    ):
        endpoints = {name: {"base_url": url, "models": [MODEL]} for name, url in zip(PROVIDERS, up.urls, strict=True)}
        common = {
            "_env_file": None,
            "local_enabled": False,
            "endpoints": {n: EndpointConfig(**e) for n, e in endpoints.items()},
            "data_dir": Path(tmp) / "data",
            "database_url": database,
            "max_retries": 0,
            "experiment_concurrency": {"*": LIMIT},
            "dataset_max_rows": 1000,
        }
        queued = Conductor(load_settings(**common, experiment_runner="jobs"), source="benchmark")
        in_process = Conductor(load_settings(**common, experiment_runner="in_process"), source="benchmark")
        store = ExperimentStore(queued.log)
        variants = [Variant(provider=name, model=MODEL, max_tokens=64) for name in PROVIDERS]
        worker_env = child_env(
            CONDUCTOR_DATABASE_URL=database,
            CONDUCTOR_ENDPOINTS=json.dumps(endpoints),
            CONDUCTOR_LOCAL_ENABLED="false",
            CONDUCTOR_MAX_RETRIES="0",
            CONDUCTOR_DATA_DIR=str(Path(tmp) / "worker-data"),
            CONDUCTOR_CONFIG=str(Path(tmp) / "none.toml"),
            CONDUCTOR_WORKER_CONCURRENCY=str(LIMIT * len(PROVIDERS)),
            PYTHONUNBUFFERED="1",
        )
        logs = Path(tmp) / "logs"
        logs.mkdir()

        def experiment(n: int) -> str:
            return store.create(f"bench {n}", "{{question}}", read_dataset(_dataset(n)), variants, max_rows=1000).id

        timed_id, warm_id = experiment(rows), experiment(WARM_ROWS)

        def measure(label: str, conductor: Any, workers: _Workers | None) -> dict[str, Any]:
            warm = start_run(conductor, store, warm_id)
            _wait(lambda: store.run(warm.run_id).status != "running", "the warm-up run")
            cpu0 = workers.cpu_s() if workers else time.process_time()
            load_before = load()
            handle = start_run(conductor, store, timed_id)
            run = _wait(lambda: (r := store.run(handle.run_id)).status != "running" and r, f"the {label} run")
            cpu = (workers.cpu_s() if workers else time.process_time()) - cpu0
            wall = (run.finished_at - run.created_at).total_seconds()
            checked = _checked(store, handle.run_id, cells_total)
            # The ideal again with the calls' p50 latency as the runner saw it: on a loaded machine the
            # upstream process answers late too; what is left above this ratio is the runner's own.
            seen_ideal_s = rows * checked["call_latency_ms_p50"] / 1000 / LIMIT
            found = {
                "runner": label,
                "wall_s": rounded(wall),
                "ratio_to_ideal": rounded(wall / ideal_s, 4),
                "ratio_to_ideal_at_seen_latency": rounded(wall / seen_ideal_s, 4),
                "cells_per_s": rounded(cells_total / wall, 1),
                "cpu_ms_per_cell": rounded(cpu * 1000 / cells_total, 2),
                "load_before": load_before,
                "load_after": load(),
                **checked,
            }
            results.append(found)
            print(f"  {label}: {json.dumps(found)}", flush=True)
            return found

        def with_workers(n: int) -> None:
            workers = _Workers(worker_env, n, logs)
            try:
                from conductor_core.jobs import workers_seen

                _wait(lambda: workers_seen(store.engine) >= n, f"{n} worker(s) to start", 120)
                measure(f"{n} worker{'s' if n > 1 else ''}", queued, workers)
            finally:
                workers.stop()
                _wait(lambda: workers_seen(store.engine) == 0, "the workers to stop", 120)

        for i in range(rounds):
            for n in (1, 2) if i % 2 == 0 else (2, 1):
                with_workers(n)
        measure("in-process", in_process, None)
        queued.close()
        in_process.close()

    def median(runner: str, key: str) -> float | None:
        values = [r[key] for r in results if r["runner"] == runner and r[key] is not None]
        return statistics.median(values) if values else None

    summary = {
        runner: {
            key: rounded(median(runner, key), 4)
            for key in ("wall_s", "ratio_to_ideal", "ratio_to_ideal_at_seen_latency", "cells_per_s", "cpu_ms_per_cell")
        }
        for runner in ("1 worker", "2 workers", "in-process")
    }
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "rows": rows,
            "variants": len(PROVIDERS),
            "providers": len(PROVIDERS),
            "upstream_latency_ms": LATENCY_MS,
            "limit_per_provider": LIMIT,
            "worker_concurrency": LIMIT * len(PROVIDERS),
            "rounds": rounds,
        },
        ideal_s=rounded(ideal_s),
        summary=summary,
        runs=results,
        targets=[
            target(
                f"{n} wall time / ideal schedule (cells × latency ÷ limit)",
                summary[n]["ratio_to_ideal"],
                LIMIT_RATIO,
                unit="x",
            )
            for n in ("1 worker", "2 workers")
        ],
    )
    path = write_result(args.out, NAME, payload)
    report(
        [
            f"workers -> {path}",
            f"  {rows} rows × {len(PROVIDERS)} variants, {LATENCY_MS:g} ms upstream, {LIMIT} at once per provider: "
            f"ideal {ideal_s:.2f} s",
            *(
                f"  {runner}: {s['wall_s']} s, {s['ratio_to_ideal']}× ideal "
                f"({s['ratio_to_ideal_at_seen_latency']}× at the latency seen), {s['cells_per_s']} cells/s, "
                f"{s['cpu_ms_per_cell']} ms CPU a cell"
                for runner, s in summary.items()
            ),
        ]
    )
    return payload


if __name__ == "__main__":
    main()
