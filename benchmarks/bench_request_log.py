"""Request log: `RequestLog.write` per second on SQLite and PostgreSQL, with one writer and
with eight concurrent writers (threads sharing one RequestLog, as the gateway's workers do),
and what `submit()` (the router's path) costs with its spool against the same call without.

Every attempt a Conductor makes is one `write()` on the request path, so the time of one
write is part of every request's overhead (see bench_overhead) and the writes per second
bound how many requests per second one process can log. `write_many` (one transaction for
a batch) is measured too: it is what the router's background writer (`submit`) does. Each
insert also updates the per-minute rollups the dashboard reads, in the same transaction:
their cost is in every figure.

`submit()` is what a request actually waits for: it redacts and encodes the attempt and
appends it to the spool file (one write(2), no fsync) so a finished request survives
kill -9. The baseline in the same run is the same `submit()` with the spool switched off
(attempts kept in memory until the background writer commits them, as before the spool
existed), in interleaved rounds.

PostgreSQL: the URL in $CONDUCTOR_TEST_POSTGRES_URL (a throwaway schema is created and
dropped); without it the PostgreSQL rows are skipped, and the result file says so.

    python -m benchmarks.bench_request_log [--quick] [--out DIR]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import envelope, parser, percentile, quiet_logging, report, rounded, scrub_environ, write_result

NAME = "request_log"
SIZES = {"quick": {"rounds": 1, "writes": 120, "warmup": 20}, "full": {"rounds": 3, "writes": 3000, "warmup": 200}}
WRITERS = 8
BATCH = 100
PROMPT = "user: " + "Explain in detail how a circuit breaker protects a service from a failing dependency. " * 2
ANSWER = "A circuit breaker watches the calls to a dependency and, after repeated failures, stops calling it. " * 4


def _records(n: int) -> list[Any]:
    from conductor_core.models import AttemptRecord

    return [
        AttemptRecord(
            request_id=f"req_{uuid.uuid4().hex[:16]}",
            provider="openai",
            model="gpt-6-luna",
            route="auto",
            source="benchmark",
            streamed=True,
            status="ok",
            input_tokens=42,
            output_tokens=120,
            latency_ms=812.5,
            ttft_ms=211.0,
            cost_usd=0.000081,
            prompt=PROMPT,
            answer=ANSWER,
        )
        for _ in range(n)
    ]


def _single(log: Any, n: int) -> dict[str, float]:
    records = _records(n)
    latencies = []
    t0 = time.perf_counter()
    for record in records:
        t = time.perf_counter()
        log.write(record)
        latencies.append((time.perf_counter() - t) * 1000)
    elapsed = time.perf_counter() - t0
    return {"writes_per_s": n / elapsed, "p50_ms": percentile(latencies, 0.5), "p99_ms": percentile(latencies, 0.99)}


def _concurrent(log: Any, n: int, writers: int) -> dict[str, float]:
    per_writer = max(1, n // writers)
    batches = [_records(per_writer) for _ in range(writers)]
    latencies: list[list[float]] = [[] for _ in range(writers)]
    gate = threading.Barrier(writers + 1)

    def work(index: int) -> None:
        gate.wait()
        mine = latencies[index]
        for record in batches[index]:
            t = time.perf_counter()
            log.write(record)
            mine.append((time.perf_counter() - t) * 1000)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(writers)]
    for thread in threads:
        thread.start()
    gate.wait()
    t0 = time.perf_counter()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - t0
    flat = [x for part in latencies for x in part]
    return {"writes_per_s": len(flat) / elapsed, "p50_ms": percentile(flat, 0.5), "p99_ms": percentile(flat, 0.99)}


def _batched(log: Any, n: int) -> dict[str, float]:
    records = _records(n)
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        log.write_many(records[start : start + BATCH])
    return {"writes_per_s": n / (time.perf_counter() - t0)}


def _submit(log: Any, n: int) -> dict[str, float]:
    records = _records(n)
    latencies = []
    for record in records:
        t = time.perf_counter()
        log.submit(record)
        latencies.append((time.perf_counter() - t) * 1_000_000)
    log.flush()  # not timed: the background commit is off the request path
    return {
        "p50_us": percentile(latencies, 0.5),
        "p99_us": percentile(latencies, 0.99),
        "mean_us": statistics.fmean(latencies),
    }


def _submit_with_and_without_spool(log: Any, size: dict[str, int]) -> dict[str, Any]:
    from conductor_core.store.writer import LogWriter

    spooled = log._writer
    in_memory = LogWriter(log._db, None, log_prompts=log.log_prompts)
    runs: dict[str, list[dict[str, float]]] = {"spool": [], "no_spool": []}
    try:
        for writer in (spooled, in_memory):  # warm-up
            log._writer = writer
            _submit(log, size["warmup"])
        for _ in range(size["rounds"]):
            for name, writer in (("spool", spooled), ("no_spool", in_memory)):
                log._writer = writer
                runs[name].append(_submit(log, size["writes"]))
    finally:
        log._writer = spooled
        in_memory.close()
    out: dict[str, Any] = {
        name: {key: rounded(statistics.median(r[key] for r in results), 2) for key in results[0]}
        for name, results in runs.items()
    }
    out["added_p50_us"] = rounded(out["spool"]["p50_us"] - out["no_spool"]["p50_us"], 2)
    out["added_p99_us"] = rounded(out["spool"]["p99_us"] - out["no_spool"]["p99_us"], 2)
    return out


def _run_backend(log: Any, size: dict[str, int]) -> dict[str, Any]:
    _single(log, size["warmup"])
    runs: dict[str, list[dict[str, float]]] = {"one_writer": [], f"{WRITERS}_writers": [], f"write_many_{BATCH}": []}
    for _ in range(size["rounds"]):
        runs["one_writer"].append(_single(log, size["writes"]))
        runs[f"{WRITERS}_writers"].append(_concurrent(log, size["writes"], WRITERS))
        runs[f"write_many_{BATCH}"].append(_batched(log, size["writes"]))
    out: dict[str, Any] = {}
    for name, results in runs.items():
        out[name] = {key: rounded(statistics.median(r[key] for r in results), 3) for key in results[0]}
    out["submit"] = _submit_with_and_without_spool(log, size)
    out["rows"] = log.count()
    out["write_errors"] = log.write_errors
    out["last_write_error"] = log.last_write_error
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    postgres_url = os.environ.get("CONDUCTOR_TEST_POSTGRES_URL")
    scrub_environ()
    quiet_logging()

    from conductor_core.store import RequestLog, normalize_database_url

    backends: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="conductor-bench-log-") as tmp:
        log = RequestLog(data_dir=Path(tmp) / "sqlite")  # the spool goes under the same data_dir
        try:
            backends["sqlite"] = {"url": "SQLite file (WAL, synchronous=NORMAL)", **_run_backend(log, size)}
        finally:
            log.close()

    if not postgres_url:
        backends["postgresql"] = {"skipped": "CONDUCTOR_TEST_POSTGRES_URL is not set"}
    else:
        from sqlalchemy import create_engine, text
        from sqlalchemy.engine import make_url

        schema = f"bench_{uuid.uuid4().hex[:12]}"
        admin = create_engine(normalize_database_url(postgres_url))
        try:
            with admin.begin() as conn:
                conn.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = make_url(normalize_database_url(postgres_url)).update_query_dict(
                {"options": f"-csearch_path={schema}"}
            )
            try:
                with tempfile.TemporaryDirectory(prefix="conductor-bench-spool-") as spool_dir:
                    log = RequestLog(url.render_as_string(hide_password=False), data_dir=Path(spool_dir))
                    try:
                        backends["postgresql"] = {"url": log.url, **_run_backend(log, size)}
                    finally:
                        log.close()
            finally:
                with admin.begin() as conn:
                    conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        finally:
            admin.dispose()

    payload = envelope(
        NAME,
        args,
        started,
        config={**size, "writers": WRITERS, "batch": BATCH, "prompt_chars": len(PROMPT), "answer_chars": len(ANSWER)},
        backends=backends,
    )
    out = write_result(args.out, NAME, payload)
    lines = [f"request_log -> {out}"]
    for name, figures in backends.items():
        if "skipped" in figures:
            lines.append(f"  {name}: skipped ({figures['skipped']})")
            continue
        lines.append(
            f"  {name}: 1 writer {figures['one_writer']['writes_per_s']:.0f}/s (p50 {figures['one_writer']['p50_ms']} ms), "
            f"{WRITERS} writers {figures[f'{WRITERS}_writers']['writes_per_s']:.0f}/s, "
            f"write_many {figures[f'write_many_{BATCH}']['writes_per_s']:.0f} rows/s, errors {figures['write_errors']}; "
            f"submit p50 {figures['submit']['spool']['p50_us']} us with the spool, {figures['submit']['no_spool']['p50_us']} us without "
            f"(+{figures['submit']['added_p50_us']} us)"
        )
    report(lines)
    return payload


if __name__ == "__main__":
    main()
