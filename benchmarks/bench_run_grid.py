"""The run grid at scale: an experiment run of 1,000 rows × 4 variants, shown as the dense table.

A run is written straight into a SQLite store (`ExperimentStore.write_cells`, the runner's own
write): every cell with an answer of about 60 words, a contains check and a judge's score, a
fifth of them failing, some rated. Then, in this process:

* data: what the page does to build the table, timed step by step (median of several):
  `store.grid` over every row without pictures (two queries), `run_grid.grid_frame`, a filter
  with a search (`select_rows`), and Streamlit's conversion of the shown columns to Arrow (what
  `st.dataframe` sends; the browser draws only the rows in view: it is virtualised);
* first render: the whole Experiments page run once by Streamlit's `AppTest` on that run's URL
  (the header, figures, summary, the table), the same as a browser's first visit asks of the
  server. The baseline in the same run: the same page over a run of 25 rows (what the old card
  page drew at most per page), so the ratio says what 40× the rows costs.

Target: the page usable within 2 s at 1,000 × 4 (its first render).

    python -m benchmarks.bench_run_grid [--quick] [--out DIR]
"""

from __future__ import annotations

import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    REPO,
    envelope,
    parser,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "run_grid"
VARIANTS = 4
SIZES = {"quick": {"rows": 300, "repeats": 2}, "full": {"rows": 1_000, "repeats": 5}}
BASELINE_ROWS = 25
LIMIT_FIRST_RENDER_S = 2.0
ANSWER = " ".join(f"word{i}" for i in range(60))


def fill(store: Any, rows: int) -> tuple[str, str]:
    """An experiment of `rows` rows × 4 variants and one finished run of it: (experiment, run)."""
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import Cell, CheckResult, Judgement
    from conductor_core.workbench.variants import Variant

    data = "country,expected\n" + "".join(f"Land {i},{'word7' if i % 5 else 'Lima'}\n" for i in range(rows))
    variants = [Variant(provider="openai", model=f"model-{v}", max_tokens=64) for v in range(VARIANTS)]
    experiment = store.create(f"Grid {rows}", "Capital of {{country}}?", read_dataset(data), variants)
    run = store.new_run(experiment, "contains", {"openai": 8})
    cells = [
        Cell(
            row=r,
            variant=v,
            status="ok",
            answer=f"Row {r} variant {v}: {ANSWER}",
            latency_ms=100.0 + (r * 7 + v * 13) % 900,
            ttft_ms=40.0,
            input_tokens=12,
            output_tokens=60,
            cost_usd=0.0001,
            passed=bool(r % 5),
            rating=(1 if r % 7 == 0 else -1 if r % 11 == 0 else None) if v == 0 else None,
            checks=[
                CheckResult(
                    passed=bool(r % 5),
                    score=((r + v) % 10) / 10,
                    judge=Judgement(status="ok", reason="fine", latency_ms=50.0, cost_usd=0.0),
                )
            ],
        )
        for r in range(rows)
        for v in range(VARIANTS)
    ]
    for start in range(0, len(cells), 500):
        store.write_cells(run.id, cells[start : start + 500])
    store.finish_run(run.id, "completed")
    return experiment.id, run.id


def median_time(fn: Any, repeats: int) -> tuple[float, Any]:
    times, result = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def build_steps(store: Any, experiment_id: str, run_id: str, repeats: int) -> dict[str, Any]:
    """The table's data, step by step, as `draw_grid` builds it."""
    from streamlit import dataframe_util

    from playground import run_grid

    experiment = store.experiment(experiment_id)
    read_s, rows = median_time(lambda: store.grid(run_id, offset=0, limit=experiment.row_count, images=False), repeats)
    frame_s, frame = median_time(lambda: run_grid.grid_frame(rows, experiment.labels), repeats)
    view = run_grid.GridView(failed_only=True, search="word3", sort_variant=1, descending=True)
    select_s, shown = median_time(lambda: run_grid.select_rows(frame, view), repeats)
    arrow_s, arrow = median_time(
        lambda: dataframe_util.convert_pandas_df_to_arrow_bytes(frame[run_grid.shown_columns(frame)]), repeats
    )
    return {
        "store_read_s": rounded(read_s, 4),
        "frame_build_s": rounded(frame_s, 4),
        "filter_search_sort_s": rounded(select_s, 4),
        "arrow_s": rounded(arrow_s, 4),
        "total_s": rounded(read_s + frame_s + select_s + arrow_s, 4),
        "rows": len(frame),
        "rows_after_filter": len(shown),
        "arrow_kb": rounded(len(arrow) / 1024, 1),
    }


def first_render(experiment_id: str, run_id: str) -> tuple[float, int]:
    """The Experiments page's first full run on the run's URL (seconds, lines in its table)."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(str(REPO / "playground" / "app.py"), default_timeout=600)
    at.run()
    at.switch_page("views/experiments.py")
    at.query_params.update({"experiment": experiment_id, "run": run_id})
    t0 = time.perf_counter()
    at.run()
    took = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"the page failed: {at.exception[0].value}")
    tables = [d for d in at.dataframe if (d.key or "").startswith("exp_grid_")]
    if not tables:
        raise RuntimeError("the page drew no run grid")
    return took, len(tables[0].value)


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()
    with tempfile.TemporaryDirectory(prefix="bench-run-grid-") as tmp:
        os.environ["CONDUCTOR_DATA_DIR"] = tmp
        os.environ["CONDUCTOR_LOCAL_ENABLED"] = "false"
        from conductor_core.store import RequestLog
        from conductor_core.workbench.experiments import ExperimentStore

        log = RequestLog(None, data_dir=Path(tmp))
        store = ExperimentStore(log)
        t0 = time.perf_counter()
        big = fill(store, size["rows"])
        fill_s = time.perf_counter() - t0
        small = fill(store, BASELINE_ROWS)
        steps = build_steps(store, *big, size["repeats"])
        baseline_steps = build_steps(store, *small, size["repeats"])
        first_render(*small)  # warm: imports, the Conductor, Streamlit's caches
        renders, baseline_renders, lines = [], [], 0
        for _ in range(size["repeats"]):  # interleaved: a busy machine slows both alike
            took, lines = first_render(*big)
            renders.append(took)
            baseline_renders.append(first_render(*small)[0])
        log.close()
    render_s, baseline_s = statistics.median(renders), statistics.median(baseline_renders)
    payload = envelope(
        NAME,
        args,
        started,
        config={"rows": size["rows"], "variants": VARIANTS, "repeats": size["repeats"], "baseline_rows": BASELINE_ROWS},
        fill_s=rounded(fill_s),
        data=steps,
        first_render_s=rounded(render_s, 4),
        table_lines=lines,
        baseline={
            "what": f"the same page and data steps over a run of {BASELINE_ROWS} rows × {VARIANTS} "
            "(what the old card page drew at most per page)",
            "data": baseline_steps,
            "first_render_s": rounded(baseline_s, 4),
        },
        ratio_to_baseline=rounded(render_s / baseline_s, 3) if baseline_s else None,
        targets=[
            target(
                f"Experiments page first render, run of {size['rows']:,} rows × {VARIANTS} variants (dense table)",
                render_s,
                LIMIT_FIRST_RENDER_S,
                unit="s",
            )
        ],
    )
    if lines != size["rows"]:
        raise RuntimeError(f"the table showed {lines} of {size['rows']} rows")
    path = write_result(args.out, NAME, payload)
    report(
        [
            f"run_grid -> {path}",
            f"  {size['rows']:,} rows × {VARIANTS}: first render {render_s:.3f} s "
            f"(target <= {LIMIT_FIRST_RENDER_S} s); {BASELINE_ROWS} rows: {baseline_s:.3f} s; "
            f"ratio {payload['ratio_to_baseline']}",
            f"  data: read {steps['store_read_s']} s, frame {steps['frame_build_s']} s, "
            f"filter {steps['filter_search_sort_s']} s, arrow {steps['arrow_s']} s ({steps['arrow_kb']} kB)",
        ]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
