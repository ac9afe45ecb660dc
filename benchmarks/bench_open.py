"""Opening an up-to-date database: what every process start pays (the playground opens the
store on every server start, the gateway on every worker start), this checkout against
another one (by default the release before migrations, which created tables with CREATE
TABLE IF NOT EXISTS), in interleaved rounds of fresh processes.

Each round starts one process per checkout that imports the store and the workbench, opens
a `RequestLog` (the schema check), then the session store, the arena and the experiment
store (their tables' check), on a database that checkout already brought up to date:

* ``open_log_ms``  `RequestLog` opened (schema check or creation)
* ``open_all_ms``  and the three workbench stores
* ``process_ms``   the whole process, interpreter start to exit

    git archive a40b370 | tar -x -C /tmp/previous-release
    python benchmarks/bench_open.py --baseline /tmp/previous-release [--rounds 15] [--postgres]

Not part of `python -m benchmarks` (it needs the other checkout); its figures are in the
change that introduced migrations. PostgreSQL: $CONDUCTOR_TEST_POSTGRES_URL (a throwaway
schema per checkout, dropped afterwards).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parents[1]

CHILD = """
import json, sys, time
t0 = time.perf_counter()
from pathlib import Path
from conductor_core.store import RequestLog
from conductor_core.workbench.arena import Arena
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.sessions import SessionStore
t1 = time.perf_counter()
url, data_dir = sys.argv[1], sys.argv[2]
log = RequestLog(None if url == "-" else url, data_dir=Path(data_dir))
log._ensure_schema()
t2 = time.perf_counter()
SessionStore.for_log(log).recent(limit=1)
Arena(log)
ExperimentStore(log)
t3 = time.perf_counter()
print(json.dumps({"import_ms": (t1 - t0) * 1e3, "open_log_ms": (t2 - t1) * 1e3, "open_all_ms": (t3 - t1) * 1e3}))
log.close()
"""


def run(code: Path, url: str, data_dir: Path) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code)}
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", CHILD, url, str(data_dir)], cwd=code, env=env, capture_output=True, text=True
    )
    elapsed = (time.perf_counter() - started) * 1e3
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    found = json.loads(done.stdout.strip().splitlines()[-1])
    return {**found, "process_ms": elapsed}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", required=True, type=Path, help="the other checkout (e.g. the previous release)")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--postgres", action="store_true", help="also on $CONDUCTOR_TEST_POSTGRES_URL")
    args = parser.parse_args()
    checkouts = {"baseline": args.baseline.resolve(), "this": HERE}
    backends = ["sqlite"] + (["postgresql"] if args.postgres else [])
    schemas: list[str] = []
    admin = None
    with tempfile.TemporaryDirectory() as tmp:
        places: dict[tuple[str, str], tuple[str, Path]] = {}
        for backend in backends:
            for name in checkouts:
                data_dir = Path(tmp) / f"{backend}-{name}"
                url = "-"
                if backend == "postgresql":
                    from sqlalchemy import create_engine, text
                    from sqlalchemy.engine import make_url

                    base = os.environ["CONDUCTOR_TEST_POSTGRES_URL"].replace("postgresql://", "postgresql+psycopg://")
                    admin = admin or create_engine(base)
                    schema = f"bench_open_{uuid.uuid4().hex[:8]}"
                    with admin.begin() as conn:
                        conn.execute(text(f"CREATE SCHEMA {schema}"))
                    schemas.append(schema)
                    url = make_url(base).update_query_dict({"options": f"-csearch_path={schema}"})
                    url = url.render_as_string(hide_password=False)
                places[(backend, name)] = (url, data_dir)
                run(checkouts[name], url, data_dir)  # creates (or upgrades) it: not measured
        samples: dict[tuple[str, str], list[dict[str, float]]] = {key: [] for key in places}
        try:
            for _ in range(args.rounds):
                keys = list(places)
                random.shuffle(keys)
                for key in keys:
                    url, data_dir = places[key]
                    samples[key].append(run(checkouts[key[1]], url, data_dir))
        finally:
            if admin is not None:
                from sqlalchemy import text

                with admin.begin() as conn:
                    for schema in schemas:
                        conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
    print(
        f"{'backend':<11} {'checkout':<9} {'open_log_ms':>12} {'open_all_ms':>12} {'import_ms':>10} {'process_ms':>11}"
    )
    summary = {}
    for (backend, name), found in samples.items():
        medians = {k: statistics.median(s[k] for s in found) for k in found[0]}
        summary[f"{backend}/{name}"] = medians
        print(
            f"{backend:<11} {name:<9} {medians['open_log_ms']:>12.1f} {medians['open_all_ms']:>12.1f} "
            f"{medians['import_ms']:>10.1f} {medians['process_ms']:>11.1f}"
        )
    print(json.dumps({"rounds": args.rounds, "medians": summary}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
