"""Experiments at scale: a dataset of 200 rows × 4 variants, each variant on its own
OpenAI-compatible loopback upstream with a fixed latency (100, 200, 300, 400 ms), at most 8
calls at once per provider, through `start_run` (the real SDK, the router, the request log
and the run's own tables).

The ideal schedule is the slowest provider's rows × latency ÷ concurrency (200 × 0.4 s ÷ 8 =
10 s); the target is a wall time within 1.15× of it. While it runs, a poller reads
`handle.progress()` every 100 ms, as a page would: the longest time between two changes of the
finished-cell count is the page's worst refresh (target: at most 1 s). Then memory: the
traced peak (tracemalloc) of a run of 200 rows against one of 50, and of reading a page of
the grid and the statistics for each (the target: flat, the bigger within 1.25× the smaller),
after one untraced run has filled the Conductor's own bounded windows and caches.

    python -m benchmarks.bench_experiments [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
import tempfile
import threading
import time
import tracemalloc
from itertools import pairwise
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    Upstreams,
    envelope,
    parser,
    percentile,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "experiments"
MODEL = "bench-model"
LATENCIES_MS = (100.0, 200.0, 300.0, 400.0)
CONCURRENCY = 8
REPLY = " ".join(f"word{i}" for i in range(12))
SIZES = {"quick": {"rows": 24, "memory_rows": (8, 24)}, "full": {"rows": 200, "memory_rows": (50, 200)}}
LIMIT_RATIO = 1.15
LIMIT_REFRESH_S = 1.0
LIMIT_MEMORY_RATIO = 1.25
POLL_S = 0.1


def _names() -> list[str]:
    return [f"t{int(ms)}" for ms in LATENCIES_MS]


def _dataset(rows: int) -> str:
    return "question,expected\n" + "".join(f"What is item {i}?,word{i % 12}\n" for i in range(rows))


def _direct(urls: list[str], rows: int) -> tuple[float, float]:
    """rows × providers streamed calls with the openai SDK, 8 at a time per upstream: what
    the machine allows with no Conductor at all (wall seconds, process CPU seconds)."""
    import openai

    clients = [
        openai.OpenAI(base_url=url, api_key="sk-Ry4KmpNXF9-NAVrCkFK_23wY", max_retries=0, timeout=60) for url in urls
    ]

    def call(client: Any, i: int) -> None:
        with client.chat.completions.create(
            model=MODEL,
            messages=[{"role": "user", "content": f"What is item {i}?"}],
            max_tokens=64,
            stream=True,
            stream_options={"include_usage": True},
        ) as events:
            for _chunk in events:
                pass

    def provider(client: Any) -> None:
        next_row = iter(range(rows))
        lock = threading.Lock()

        def worker() -> None:
            while True:
                with lock:
                    i = next(next_row, None)
                if i is None:
                    return
                call(client, i)

        workers = [threading.Thread(target=worker) for _ in range(CONCURRENCY)]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    for client in clients:  # warm the connections
        call(client, 0)
    cpu0 = time.process_time()
    t0 = time.perf_counter()
    threads = [threading.Thread(target=provider, args=(client,)) for client in clients]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, time.process_time() - cpu0


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import ExperimentStore
    from conductor_core.workbench.runner import start_run
    from conductor_core.workbench.variants import Variant

    names = _names()
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp, Upstreams(LATENCIES_MS, reply=REPLY) as up:
        settings = load_settings(
            _env_file=None,
            local_enabled=False,
            endpoints={
                name: EndpointConfig(base_url=url, models=[MODEL]) for name, url in zip(names, up.urls, strict=True)
            },
            data_dir=Path(tmp),
            max_retries=0,
            experiment_concurrency={"*": CONCURRENCY},
            dataset_max_rows=1000,
        )
        conductor = Conductor(settings, source="benchmark")
        store = ExperimentStore(conductor.log)
        variants = [Variant(provider=name, model=MODEL, max_tokens=64) for name in names]

        def experiment(rows: int) -> str:
            return store.create(
                f"bench {rows}", "{{question}}", read_dataset(_dataset(rows)), variants, max_rows=1000
            ).id

        # Warm up: SDK clients, connections, the tables.
        warm = start_run(conductor, store, experiment(CONCURRENCY))
        warm.wait()

        # --- the baseline: the same cells, straight through the openai SDK ---------------------
        baseline_s, baseline_cpu_s = _direct(up.urls, size["rows"])

        # --- wall time and progress --------------------------------------------------------
        timed_id = experiment(size["rows"])
        seen: list[tuple[float, int]] = []
        poll_costs: list[float] = []
        cpu0 = time.process_time()
        t0 = time.perf_counter()
        handle = start_run(conductor, store, timed_id)
        stop_polling = threading.Event()

        def poll() -> None:
            while not stop_polling.is_set():
                c0 = time.perf_counter()
                progress = handle.progress()
                poll_costs.append((time.perf_counter() - c0) * 1e6)
                seen.append((time.perf_counter() - t0, progress.done))
                stop_polling.wait(POLL_S)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        handle.wait()
        wall_s = time.perf_counter() - t0
        cpu_s = time.process_time() - cpu0
        stop_polling.set()
        poller.join()
        final = handle.progress()
        changes = [t for (_, before), (t, done) in pairwise(seen) if done != before]
        first_change = changes[0] if changes else None
        gaps = [b - a for a, b in pairwise(changes)]
        worst_gap = max(gaps) if gaps else None
        ideal_s = max(size["rows"] * ms / 1000 / CONCURRENCY for ms in LATENCIES_MS)
        ratio = wall_s / ideal_s
        stats = store.stats(handle.run_id)
        logged = conductor.log.count()

        # --- memory: flat in the number of rows --------------------------------------------
        small_rows, big_rows = size["memory_rows"]
        memory_ids = {rows: experiment(rows) for rows in (small_rows, big_rows)}
        memory: dict[str, dict[str, float]] = {}
        # The Conductor's own bounded windows (metrics, statement caches) fill up in the first
        # few hundred calls of any process; one untraced run of the big size fills them first,
        # so what is measured is the run's own memory.
        start_run(conductor, store, experiment(big_rows)).wait()
        tracemalloc.start()
        for rows, experiment_id in memory_ids.items():
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            run = start_run(conductor, store, experiment_id)
            run.wait()
            run_peak = tracemalloc.get_traced_memory()[1] - base
            tracemalloc.reset_peak()
            base = tracemalloc.get_traced_memory()[0]
            store.grid(run.run_id, offset=0, limit=25)
            store.stats(run.run_id)
            read_peak = tracemalloc.get_traced_memory()[1] - base
            memory[str(rows)] = {"run_peak_mb": run_peak / 2**20, "page_and_stats_peak_mb": read_peak / 2**20}
        tracemalloc.stop()
        conductor.close()

    small, big = memory[str(small_rows)], memory[str(big_rows)]
    run_ratio = big["run_peak_mb"] / small["run_peak_mb"] if small["run_peak_mb"] else None
    read_ratio = (
        big["page_and_stats_peak_mb"] / small["page_and_stats_peak_mb"] if small["page_and_stats_peak_mb"] else None
    )
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "rows": size["rows"],
            "variants": len(LATENCIES_MS),
            "upstream_latencies_ms": LATENCIES_MS,
            "concurrency_per_provider": CONCURRENCY,
            "reply_words": len(REPLY.split()),
            "poll_interval_s": POLL_S,
            "memory_rows": size["memory_rows"],
        },
        wall_s=rounded(wall_s),
        ideal_s=rounded(ideal_s),
        ratio_to_ideal=rounded(ratio, 4),
        cpu_s=rounded(cpu_s),
        cpu_ms_per_cell=rounded(cpu_s * 1000 / final.total),
        baseline={
            "what": "the same cells through the openai SDK alone: a thread per call slot, a semaphore of 8 per upstream",
            "wall_s": rounded(baseline_s),
            "ratio_to_ideal": rounded(baseline_s / ideal_s, 4),
            "cpu_ms_per_cell": rounded(baseline_cpu_s * 1000 / (size["rows"] * len(LATENCIES_MS))),
        },
        ratio_to_baseline=rounded(wall_s / baseline_s, 4),
        cells={"total": final.total, "ok": final.ok, "errors": final.errors, "cancelled": final.cancelled},
        request_log_rows=logged,
        per_variant={
            s.label: {
                "p50_latency_ms": rounded(s.p50_latency_ms),
                "p95_latency_ms": rounded(s.p95_latency_ms),
                "success_rate": s.success_rate,
            }
            for s in stats
        },
        progress={
            "polls": len(seen),
            "first_change_s": rounded(first_change),
            "longest_gap_between_changes_s": rounded(worst_gap),
            "progress_call_us": {
                "p50": rounded(percentile(poll_costs, 0.5)),
                "p99": rounded(percentile(poll_costs, 0.99)),
            },
        },
        memory={
            "by_rows": {k: {n: rounded(v) for n, v in m.items()} for k, m in memory.items()},
            "run_ratio": rounded(run_ratio, 3),
            "page_and_stats_ratio": rounded(read_ratio, 3),
        },
        targets=[
            target(
                "Dataset run wall time / ideal schedule (rows × latency ÷ concurrency, slowest provider)",
                ratio,
                LIMIT_RATIO,
                unit="x",
            ),
            target("Longest wait between two progress changes a page sees", worst_gap, LIMIT_REFRESH_S, unit="s"),
            target(
                f"Traced peak memory of a run: {big_rows} rows / {small_rows} rows",
                run_ratio,
                LIMIT_MEMORY_RATIO,
                unit="x",
            ),
            target(
                f"Traced peak memory of a grid page + statistics: {big_rows} rows / {small_rows} rows",
                read_ratio,
                LIMIT_MEMORY_RATIO,
                unit="x",
            ),
        ],
    )
    if final.ok != final.total:
        raise RuntimeError(f"only {final.ok} of {final.total} cells answered: {final}")
    path = write_result(args.out, NAME, payload)
    report(
        [
            f"experiments -> {path}",
            f"  {size['rows']} rows × {len(LATENCIES_MS)} variants: {wall_s:.2f} s, ideal {ideal_s:.2f} s, ratio {ratio:.3f}; "
            f"SDK-only baseline {baseline_s:.2f} s ({baseline_s / ideal_s:.3f}); CPU {payload['cpu_ms_per_cell']} ms a cell "
            f"(baseline {payload['baseline']['cpu_ms_per_cell']})",
            f"  progress: longest gap between changes {worst_gap if worst_gap is None else round(worst_gap, 3)} s, "
            f"progress() p99 {payload['progress']['progress_call_us']['p99']} µs",
            f"  memory: run peak {small['run_peak_mb']:.2f} MB ({small_rows} rows) vs {big['run_peak_mb']:.2f} MB ({big_rows} rows); "
            f"page+stats {small['page_and_stats_peak_mb']:.3f} vs {big['page_and_stats_peak_mb']:.3f} MB",
        ]
    )
    return payload


if __name__ == "__main__":
    main()
