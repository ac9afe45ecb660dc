"""Dashboard at scale: request logs of 10 thousand, 100 thousand and 1 million rows.

Each log is a SQLite file made by `RequestLog` (its schema and indexes), filled with
synthetic attempts spread over the last 24 hours by `executemany` in large batches (not
one `write()` per row). Then one dashboard refresh for the "24 hours" window (every row
in the window: the worst case) is measured, made the way the dashboard page makes it:

* data: `playground.state._build_snapshot` (the function behind `dashboard_snapshot`, which
  picks rows or SQL sums by the window's size), `dashboard_data.summary`, and the
  providers table, `dashboard_data.status_table(conductor.status())` (status rebuilt from
  the log each time, as after its 2-second cache expires);
* charts: the eight builders `chart_grid` calls, each converted to the Vega-Lite spec the
  way `st.altair_chart` converts it (Streamlit's own converter, Arrow datasets); the same
  latency chart as small multiples (what the page's "Per provider" toggle draws first) is
  timed apart (`small_multiples_s`, not in `total_s`).

For every size, three paths: "page" (the page's choice: rows up to
`state.FRAME_ROW_LIMIT` attempts in the window, the log's per-minute rollups above it),
"rows" (forced to read every row: p50/p95 from individual attempts) and "sql" (forced to
the rollups). Time is the median of several refreshes; peak memory is traced
(tracemalloc) in a separate refresh; points per chart are the data rows in
`chart.to_dict()`. The log is loaded with raw inserts, so the store builds its rollups
when it first opens it (timed: what opening a log from before rollups costs, once).

    python -m benchmarks.bench_dashboard [--quick] [--out DIR] [--sizes 10000,100000]
"""

from __future__ import annotations

import math
import sqlite3
import statistics
import sys
import tempfile
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import envelope, parser, quiet_logging, report, rounded, scrub_environ, target, write_result

NAME = "dashboard"
WINDOW_LABEL = "24h"
SIZES = {"quick": [1_000, 5_000], "full": [10_000, 100_000, 1_000_000]}
REPEATS = {"quick": 1, "full": 5}
PROVIDERS = ["gemini", "openai", "anthropic", "local", "ollama"]
PROVIDER_WEIGHTS = [0.3, 0.25, 0.2, 0.15, 0.1]
LIMIT_S = 1.0
LIMIT_POINTS = 5_000
LIMIT_MEMORY_SLOPE = 1.1  # peak memory ~ rows^slope: 1 is linear
BATCH = 100_000


# --- the synthetic log ---------------------------------------------------------------------


def fill_log(data_dir: Path, rows: int, *, seed: int = 7, votes: int = 300) -> float:
    """Create the request log under `data_dir` and insert `rows` synthetic attempts (and a
    few compare votes) spread over the 24 hours before now. Returns the seconds it took."""
    import numpy as np

    from conductor_core.store import RequestLog, attempts, votes_table

    t0 = time.perf_counter()
    log = RequestLog(data_dir=data_dir)
    log._ensure_schema()
    log.close()
    rng = np.random.default_rng(seed)
    now = time.time()
    con = sqlite3.connect(str(data_dir / "conductor.db"), isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=OFF")  # loading only; the dashboard reads a normal file
    columns = [c.name for c in attempts.columns]
    sql = f"INSERT INTO attempts ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    prompts = [
        "user: Explain circuit breakers in one sentence.",
        "user: Write a haiku about latency.",
        "user: Summarise this text.",
    ]
    answers = [
        "A circuit breaker stops calls to a failing service for a while. " * 3,
        "Packets drift slowly / the router hums " * 4,
    ]
    done = 0
    while done < rows:
        n = min(BATCH, rows - done)
        # Time order = insertion order, as in a real log.
        ts = now - 86_400 + (np.arange(done, done + n) + rng.random(n)) * (86_400 / rows)
        provider = rng.choice(len(PROVIDERS), size=n, p=PROVIDER_WEIGHTS)
        draw = rng.random(n)
        status = np.where(draw < 0.94, "ok", np.where(draw < 0.99, "error", "incomplete"))
        streamed = rng.random(n) < 0.6
        latency = rng.lognormal(mean=6.5, sigma=0.5, size=n)  # ~700 ms
        ttft = np.where(streamed & (status == "ok"), latency * rng.uniform(0.1, 0.4, size=n), np.nan)
        tokens_in = rng.integers(5, 400, size=n)
        tokens_out = np.where(status == "ok", rng.integers(10, 600, size=n), 0)
        cost = np.where(provider == PROVIDERS.index("local"), 0.0, (tokens_in * 0.15 + tokens_out * 0.6) / 1e6)
        cost = np.where(provider == PROVIDERS.index("ollama"), np.nan, cost)
        micros = (ts * 1_000_000).astype("int64").astype("datetime64[us]")
        created_at = np.char.replace(np.datetime_as_string(micros, unit="us"), "T", " ")
        route = np.array(["manual", "auto", "compare"])[rng.choice(3, size=n, p=[0.5, 0.4, 0.1])]
        source = np.array(["playground", "gateway"])[rng.integers(0, 2, size=n)]
        ok = status == "ok"
        values = {
            "id": [f"att_{i:012x}" for i in range(done, done + n)],
            "created_at": created_at.tolist(),
            "created_ts": ts.tolist(),
            "request_id": [f"req_{i:012x}" for i in range(done, done + n)],
            "provider": np.array(PROVIDERS)[provider].tolist(),
            "model": np.array(["gemini-3.5-flash-lite", "gpt-6-luna", "claude-haiku-5-5", "gemma-3-270m", "llama3.2"])[
                provider
            ].tolist(),
            "route": route.tolist(),
            "group_id": [None] * n,
            "source": source.tolist(),
            "streamed": streamed.astype(int).tolist(),
            "status": status.tolist(),
            "error_type": np.where(
                ok, None, np.where(status == "error", "rate_limited", "stream_interrupted")
            ).tolist(),
            "error_message": np.where(ok, None, "upstream said no").tolist(),
            "input_tokens": tokens_in.tolist(),
            "output_tokens": tokens_out.tolist(),
            "latency_ms": np.round(latency, 3).tolist(),
            "ttft_ms": [None if math.isnan(x) else round(x, 3) for x in ttft.tolist()],
            "cost_usd": [None if math.isnan(x) else x for x in cost.tolist()],
            "prompt": np.array(prompts)[rng.integers(0, len(prompts), size=n)].tolist(),
            "answer": np.where(ok, np.array(answers)[rng.integers(0, len(answers), size=n)], None).tolist(),
            # Every 20th attempt a retry (the dashboard counts requests by first attempts).
            "attempt_index": (rng.random(n) < 0.05).astype(int).tolist(),
            "overhead_ms": np.where(source == "gateway", np.round(rng.uniform(0.5, 3.0, size=n), 3), None).tolist(),
            "key_id": [None] * n,  # made with no gateway key (playground, or the admin key)
        }
        con.execute("BEGIN")
        con.executemany(sql, zip(*(values[c] for c in columns), strict=True))
        con.execute("COMMIT")
        done += n
    vote_columns = [c.name for c in votes_table.columns]
    vote_sql = f"INSERT INTO votes ({', '.join(vote_columns)}) VALUES ({', '.join('?' * len(vote_columns))})"
    labels = ["gemini/gemini-3.5-flash-lite", "openai/gpt-6-luna", "anthropic/claude-haiku-5-5", "local/gemma-3-270m"]
    vote_rows = []
    for i in range(votes):
        ts = now - 86_400 + (i + 0.5) * 86_400 / votes
        pair = [labels[i % 4], labels[(i + 1) % 4]]
        winner = [pair[0], pair[1], "tie", "both_bad"][int(rng.integers(0, 4))]
        created = datetime.fromtimestamp(ts, UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")
        vote_rows.append(
            {
                "id": f"vote_{i:08x}",
                "created_at": created,
                "created_ts": ts,
                "group_id": f"cmp_{i:08x}",
                "targets": f'["{pair[0]}", "{pair[1]}"]',
                "winner": winner,
            }
        )
    con.execute("BEGIN")
    con.executemany(vote_sql, [tuple(row[c] for c in vote_columns) for row in vote_rows])
    con.execute("COMMIT")
    con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    con.close()
    return time.perf_counter() - t0


def build_rollups(data_dir: Path) -> float:
    """Open the raw-loaded log the way every process does: the store finds attempts without
    rollups and builds them once (the migration of a log from before rollups). Returns the
    seconds that first read took."""
    from conductor_core.store import RequestLog

    log = RequestLog(data_dir=data_dir)
    t0 = time.perf_counter()
    log.count()
    took = time.perf_counter() - t0
    log.close()
    return took


# --- one refresh, as the page makes it -----------------------------------------------------------


def _streamlit_spec():
    """Streamlit's own Altair -> Vega-Lite conversion (what `st.altair_chart` sends), or plain
    `to_dict()` if a Streamlit release moved it."""
    try:
        from streamlit.elements.vega_charts import _convert_altair_to_vega_lite_spec

        return _convert_altair_to_vega_lite_spec
    except ImportError:  # pragma: no cover
        return lambda chart: chart.to_dict()


def chart_options(snapshot: Any) -> dict[str, Any]:
    series = snapshot.series
    providers = sorted(series["provider"].dropna().unique().tolist())
    return {"providers": providers, "start": snapshot.start, "end": snapshot.end}


def build_charts(snapshot: Any) -> list[tuple[str, Any]]:
    """The charts `chart_grid` in playground/views/dashboard.py builds, with the same options."""
    from playground import charts

    series = snapshot.series
    options = chart_options(snapshot)
    built = [
        ("latency", charts.latency_chart(series, **options)),
        ("requests_per_minute", charts.requests_per_minute_chart(series, **options)),
        ("success_rate", charts.success_rate_chart(series, **options)),
        ("ttft", charts.ttft_chart(series, **options)),
        ("tokens_per_second", charts.tokens_per_second_chart(series, **options)),
        ("cumulative_cost", charts.cumulative_cost_chart(series, **options)),
        ("cost_per_request", charts.cost_per_request_chart(series, **options)),
    ]
    if not snapshot.wins.empty:
        built.append(("win_rate", charts.win_rate_chart(snapshot.wins)))
    return built


def refresh(conductor: Any, window_s: int | None, to_spec: Any) -> dict[str, Any]:
    """One dashboard refresh; the seconds each part took."""
    from playground import charts, state
    from playground import dashboard_data as dd
    from playground.components import format_cost

    t0 = time.perf_counter()
    snapshot = state._build_snapshot(conductor, window_s)
    t1 = time.perf_counter()
    dd.summary(snapshot.series)
    conductor._shared = None
    table = dd.status_table(conductor.status(), series=snapshot.series, format_cost=format_cost)
    dd.fit_widths(table, {"p50 ms": "{:.0f} ms".format, "p95 ms": "{:.0f} ms".format, "Cost": str})
    t2 = time.perf_counter()
    built = build_charts(snapshot)
    t3 = time.perf_counter()
    for _, chart in built:
        to_spec(chart)
    t4 = time.perf_counter()
    # The "Per provider" toggle, apart from the total: one chart of small multiples (latency first).
    to_spec(charts.latency_chart(snapshot.series, **chart_options(snapshot), split=True))
    t5 = time.perf_counter()
    return {
        "snapshot_s": t1 - t0,
        "summary_and_status_s": t2 - t1,
        "charts_build_s": t3 - t2,
        "charts_serialize_s": t4 - t3,
        "total_s": t4 - t0,
        "small_multiples_s": t5 - t4,
        "snapshot": snapshot,
        "charts": built,
    }


def points(chart: Any) -> int:
    """Data rows a chart sends: every row of every dataset in its spec (and inline values)."""
    spec = chart.to_dict()
    count = sum(len(rows) for rows in (spec.get("datasets") or {}).values())
    data = spec.get("data") or {}
    return count + len(data.get("values") or [])


def measure(conductor: Any, window_s: int, repeats: int, to_spec: Any, *, warm: bool = True) -> dict[str, Any]:
    if warm:
        refresh(conductor, window_s, to_spec)  # warm: imports, SQLite page cache, Altair schema
    runs = [refresh(conductor, window_s, to_spec) for _ in range(repeats)]
    parts = (
        "snapshot_s",
        "summary_and_status_s",
        "charts_build_s",
        "charts_serialize_s",
        "total_s",
        "small_multiples_s",
    )
    timing = {part: rounded(statistics.median(r[part] for r in runs), 4) for part in parts}
    last = runs[-1]
    del runs
    snapshot = last["snapshot"]
    per_chart = {name: points(chart) for name, chart in last["charts"]}
    del last
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    refresh(conductor, window_s, to_spec)
    peak = tracemalloc.get_traced_memory()[1] - base
    tracemalloc.stop()
    return {
        "time_s": timing,
        "from_rows": snapshot.from_rows,
        "rows_in_window": snapshot.rows,
        "bucket_s": snapshot.bucket_s,
        "series_rows": len(snapshot.series),
        "points_per_chart": per_chart,
        "max_points": max(per_chart.values()) if per_chart else 0,
        "peak_memory_mb": round(peak / 2**20, 2),
    }


def _slopes(sizes: list[int], values: list[float]) -> list[float | None]:
    """log-log slope between consecutive sizes: 1 means linear growth, 0 flat."""
    out: list[float | None] = []
    pairs = zip(zip(sizes, values, strict=True), zip(sizes[1:], values[1:], strict=True), strict=False)
    for (n1, v1), (n2, v2) in pairs:
        out.append(round(math.log(v2 / v1) / math.log(n2 / n1), 3) if v1 > 0 and v2 > 0 else None)
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--sizes", help="comma-separated row counts (default: 10k,100k,1M; quick: 1k,5k)")
    p.add_argument("--repeats", type=int, help="refreshes timed per size and path")
    args = p.parse_args(argv)
    mode = "quick" if args.quick else "full"
    sizes = [int(x) for x in args.sizes.split(",")] if args.sizes else SIZES[mode]
    repeats = args.repeats or REPEATS[mode]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor
    from playground import dashboard_data as dd
    from playground import state

    window_s = dd.WINDOWS[WINDOW_LABEL]
    to_spec = _streamlit_spec()
    default_limit = state.FRAME_ROW_LIMIT
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="conductor-bench-dash-") as tmp:
        for rows in sizes:
            data_dir = Path(tmp) / str(rows)
            load_s = fill_log(data_dir, rows)
            rebuild_s = build_rollups(data_dir)
            db_mb = sum(f.stat().st_size for f in data_dir.glob("conductor.db*")) / 2**20
            settings = load_settings(
                _env_file=None,
                local_enabled=False,
                endpoints={"ollama": EndpointConfig(base_url="http://127.0.0.1:9/v1", models=["llama3.2"])},
                data_dir=data_dir,
            )
            conductor = Conductor(settings, source="benchmark")
            entry: dict[str, Any] = {
                "fill_s": round(load_s, 2),
                "rollup_rebuild_s": round(rebuild_s, 2),
                "database_mb": round(db_mb, 1),
            }
            try:
                for path, limit in (("page", default_limit), ("rows", math.inf), ("sql", -1)):
                    state.FRAME_ROW_LIMIT = limit
                    entry[path] = measure(conductor, window_s, repeats, to_spec, warm=not args.quick)
            finally:
                state.FRAME_ROW_LIMIT = default_limit
                conductor.close()
            results[str(rows)] = entry
            page = entry["page"]
            report(
                [
                    f"  {rows:>9,} rows: page {page['time_s']['total_s']:.3f} s "
                    f"({'rows' if page['from_rows'] else 'sql'}), rows path {entry['rows']['time_s']['total_s']:.3f} s, "
                    f"sql path {entry['sql']['time_s']['total_s']:.3f} s, max points {page['max_points']}, "
                    f"peak {page['peak_memory_mb']} MB"
                ]
            )

    growth = {}
    for path in ("page", "rows", "sql"):
        growth[path] = {
            "time_slope": _slopes(sizes, [results[str(n)][path]["time_s"]["total_s"] for n in sizes]),
            "memory_slope": _slopes(sizes, [results[str(n)][path]["peak_memory_mb"] for n in sizes]),
        }
    largest = results[str(sizes[-1])]["page"]
    max_points = max(results[str(n)][path]["max_points"] for n in sizes for path in ("page", "rows", "sql"))
    page_slopes = [s for s in growth["page"]["memory_slope"] if s is not None]
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "window": WINDOW_LABEL,
            "sizes": sizes,
            "repeats": repeats,
            "providers": PROVIDERS,
            "frame_row_limit": default_limit,
            "database": "SQLite file (WAL), schema, indexes and rollups from RequestLog",
        },
        sizes=results,
        growth=growth,
        targets=[
            target(
                f"Dashboard refresh (data + status + charts) for {sizes[-1]:,} rows",
                largest["time_s"]["total_s"],
                LIMIT_S,
                unit="s",
            ),
            target(
                "Peak memory growth with the log (log-log slope; 1 = linear)",
                max(page_slopes) if page_slopes else None,
                LIMIT_MEMORY_SLOPE,
                unit="",
            ),
            target("Most points in one chart (any size, any path)", max_points, LIMIT_POINTS, unit="points"),
        ],
    )
    out = write_result(args.out, NAME, payload)
    report([f"dashboard -> {out}", f"  growth: {growth}"])
    return payload


if __name__ == "__main__":
    main()
