"""Run every benchmark, each in its own process (so one's memory, threads and imports do not
weigh on the next), then print every target as met or missed.

    python -m benchmarks                 # full sizes, results in benchmarks/results/
    python -m benchmarks --quick         # CI sizes (about a minute in all)
    python -m benchmarks --only overhead,fanout --out /tmp/results

Exit status: 0 when every benchmark ran (missed targets are reported, not failures), 1 when
one crashed.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import REPO, RESULTS_DIR, child_env, load, machine, wait_for_quiet, write_result

# Cheapest first; the local model's two last (they keep both cores busy).
BENCHMARKS = {
    "redact": "benchmarks.bench_redact",
    "request_log": "benchmarks.bench_request_log",
    "overhead": "benchmarks.bench_overhead",
    "fanout": "benchmarks.bench_fanout",
    "experiments": "benchmarks.bench_experiments",
    "workers": "benchmarks.bench_workers",
    "run_grid": "benchmarks.bench_run_grid",
    "gateway_load": "benchmarks.bench_gateway_load",
    "shared_state": "benchmarks.bench_shared_state",
    "proxy": "benchmarks.bench_proxy",
    "dashboard": "benchmarks.bench_dashboard",
    "quality": "benchmarks.bench_quality",
    "local": "benchmarks.bench_local",
    "local_grammar": "benchmarks.bench_local_grammar",
}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="Run Conductor's benchmarks.")
    p.add_argument("--quick", action="store_true", help="small sizes (CI)")
    p.add_argument("--out", type=Path, default=RESULTS_DIR)
    p.add_argument("--only", help=f"comma-separated subset of: {', '.join(BENCHMARKS)}")
    p.add_argument(
        "--wait-for-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each benchmark, wait up to this long for the 1-minute load average to drop below 2",
    )
    p.add_argument(
        "--summary-only", action="store_true", help="run nothing: rebuild summary.json from the result files"
    )
    args = p.parse_args(argv)
    names = [n.strip() for n in args.only.split(",")] if args.only else list(BENCHMARKS)
    unknown = [n for n in names if n not in BENCHMARKS]
    if unknown:
        p.error(f"unknown benchmark(s): {', '.join(unknown)}")

    started = time.perf_counter()
    failed: list[str] = []
    timings: dict[str, float] = {}
    for name in [] if args.summary_only else names:
        if args.wait_for_quiet:
            wait_for_quiet(2.0, args.wait_for_quiet)
        print(f"== {name} (load {load()})", flush=True)
        command = [sys.executable, "-m", BENCHMARKS[name], "--out", str(args.out)]
        if args.quick:
            command.append("--quick")
        t0 = time.perf_counter()
        code = subprocess.run(command, cwd=REPO, env=child_env()).returncode
        timings[name] = round(time.perf_counter() - t0, 1)
        if code != 0:
            failed.append(name)
            print(f"!! {name} failed (exit {code})", flush=True)

    rows = summary(args.out, names)
    write_result(
        args.out,
        "summary",
        {
            "quick": args.quick,
            "machine": machine(),
            "note": "rebuilt from the result files" if args.summary_only else None,
            "seconds": {**timings, "total": round(time.perf_counter() - started, 1)},
            "failed": failed,
            "targets": rows,
        },
    )
    print("\nTargets")
    for row in rows:
        mark = {True: "MET   ", False: "MISSED", None: "n/a   "}[row["met"]]
        measured = "—" if row["measured"] is None else f"{row['measured']:g}"
        print(
            f"  {mark} {row['benchmark']:<12} {row['target']}: {measured} {row['unit']} ({row['comparison']} {row['limit']:g})"
        )
    print(f"\n{len(names)} benchmark(s) in {time.perf_counter() - started:.0f} s; results in {args.out}")
    return 1 if failed else 0


def summary(out: Path, names: list[str]) -> list[dict[str, Any]]:
    rows = []
    for name in names:
        path = Path(out) / f"{name}.json"
        if not path.exists():
            continue
        for row in json.loads(path.read_text()).get("targets", []):
            rows.append({"benchmark": name, **row})
    return rows


if __name__ == "__main__":
    sys.exit(main())
