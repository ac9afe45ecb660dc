"""Markdown tables from the result files, so BENCHMARKS.md shows exactly what the JSON says.

python -m benchmarks.report                        # print the tables
python -m benchmarks.report --update BENCHMARKS.md # replace the text between the markers
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import RESULTS_DIR

START, END = "<!-- results:start -->", "<!-- results:end -->"

LABELS = {
    "direct": "(a) openai SDK, direct",
    "conductor": "(b) Conductor, provider named",
    "auto": "(c) Conductor AUTO",
    "litellm": "(d) LiteLLM Router",
    "litellm_direct": "(d') openai SDK, direct, in LiteLLM's process",
    "gateway": "(e) gateway over HTTP",
}


def _f(value: Any, digits: int = 2) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _load(results: Path, name: str) -> dict[str, Any] | None:
    path = results / f"{name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def _head(result: dict[str, Any]) -> str:
    m = result["machine"]
    return (
        f"_Run {result['run_at']}, {result['duration_s']:.0f} s, load average at the end "
        f"{' / '.join(str(x) for x in m['load_average'])}{', quick sizes' if result['quick'] else ''}._"
    )


def overhead(r: dict[str, Any]) -> list[str]:
    out = [_head(r), ""]
    sections = [
        ("Non-streaming latency (ms)", r["non_streaming"]),
        ("Streaming: time to first token (ms)", r["streaming"]["ttft"]),
        ("Streaming: whole stream (ms)", r["streaming"]["total"]),
    ]
    for title, section in sections:
        out += [
            f"**{title}**",
            "",
            "| path | median of round medians | p99 | added p50 | added p50 (paired rounds) | added p99 | added / LiteLLM's added |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        added, ratios = section["added_over_direct_ms"], section["ratio_to_litellm_added_p50"]
        for name, figures in section["variants"].items():
            a = added.get(name, {})
            out.append(
                f"| {LABELS.get(name, name)} | {_f(figures['median_of_round_medians'])} | {_f(figures['p99'])} | "
                f"{_f(a.get('p50'))} | {_f(a.get('paired_round_median'))} | {_f(a.get('p99'))} | {_f(ratios.get(name), 3)} |"
            )
        out.append("")
    cpu = r["non_streaming"].get("cpu_ms")
    if cpu:
        out += [
            "**CPU time of the calling process per non-streaming request (ms)**",
            "",
            "| path | median | added over (a) |",
            "|---|---:|---:|",
        ]
        for name, figures in cpu["variants"].items():
            out.append(
                f"| {LABELS.get(name, name)} | {_f(figures['median_of_round_medians'], 3)} | {_f(cpu['added_over_direct_ms'].get(name, {}).get('p50'), 3)} |"
            )
        out.append("")
    lite = r["litellm"]
    out.append(
        f"LiteLLM: {lite['status']}"
        + (
            f" ({lite.get('versions', {}).get('litellm')}, in `{lite.get('python')}`)"
            if lite["status"] == "measured"
            else f": {lite['reason']}"
        )
        + f". Request log rows written by Conductor: {r['request_log']['rows_written']:,} (write errors {r['request_log']['write_errors']})."
    )
    return out


def fanout(r: dict[str, Any]) -> list[str]:
    out = [_head(r), "", "| measure | median of round medians (ms) | p99 (ms) |", "|---|---:|---:|"]
    names = {"compare": "Conductor.compare over the four targets"}
    for name, figures in r["variants"].items():
        label = names.get(name) or f"openai SDK stream straight to the {name.removeprefix('direct_t')} ms upstream"
        out.append(f"| {label} | {_f(figures['median_of_round_medians'], 1)} | {_f(figures['p99'], 1)} |")
    out += [
        f"| sum of the four direct calls (what a sequential compare would take) | {_f(r['sequential_sum_direct_ms'], 1)} | |",
        f"| slowest target's own latency inside the compare (provider-measured) | {_f(r['slowest_target_latency_inside_compare_ms'], 1)} | |",
        "",
        f"Compare wall time / slowest target direct: **{_f(r['ratio_to_slowest_direct'], 3)}** "
        f"(paired by round {_f(r['ratio_to_slowest_direct_paired'], 3)}; / the slowest target inside the compare {_f(r['ratio_to_slowest_inside_compare'], 3)}).",
    ]
    return out


def local(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return [_head(r), "", f"Skipped: {r['skipped']}."]
    s, n = r["streaming"], r["non_streaming"]
    out = [
        _head(r),
        "",
        "| measure | Conductor local provider | raw llama-cpp-python | ratio |",
        "|---|---:|---:|---:|",
        f"| streaming tokens/s (after the first token) | {_f(s['tokens_per_second']['conductor']['median_of_round_medians'], 1)} | {_f(s['tokens_per_second']['raw']['median_of_round_medians'], 1)} | {_f(s['tps_ratio'], 3)} |",
        f"| streaming time to first token (ms) | {_f(s['ttft_ms']['conductor']['median_of_round_medians'], 1)} | {_f(s['ttft_ms']['raw']['median_of_round_medians'], 1)} | added {_f(s['ttft_added_ms']['p50'], 1)} ms |",
        f"| non-streaming tokens/s (whole call) | {_f(n['tokens_per_second']['conductor']['median_of_round_medians'], 1)} | {_f(n['tokens_per_second']['raw']['median_of_round_medians'], 1)} | {_f(n['tps_ratio'], 3)} |",
        f"| model load (s) | {_f(r['load_s']['conductor'])} | {_f(r['load_s']['raw'])} | |",
        "",
        f"Model {r['config']['model']}, {r['config']['threads']} threads, context {r['config']['context']}, "
        f"{r['config']['max_tokens']} tokens max, temperature 0 (tokens generated per answer: "
        f"{', '.join(f'{side} {sorted(set(counts))}' for side, counts in r['tokens_generated'].items())}, "
        "the base model stops at a stop sequence); "
        f"parameters checked equal: {', '.join(f'{k}={v[0]}' for k, v in r['config']['params_checked'].items())}.",
    ]
    return out


def quality(r: dict[str, Any]) -> list[str]:
    if "skipped" in r:
        return [_head(r), "", f"Skipped: {r['skipped']}."]
    old, new = r["scores"]["old"], r["scores"]["new"]
    out = [
        _head(r),
        "",
        "| category | questions | old prompt (bare transcript) | default prompt (few-shot) |",
        "|---|---:|---:|---:|",
    ]
    for category, n in new.items():
        o = old[category]
        label = "**all**" if category == "all" else category
        out.append(f"| {label} | {n['asked']} | {o['right']} ({o['share']:.0%}) | {n['right']} ({n['share']:.0%}) |")
    t, c = r["ttft_ms"], r["config"]
    tokens = r["prompt_tokens"]
    out += [
        "",
        "| time to first token (ms) | old prompt | default prompt | ratio | added |",
        "|---|---:|---:|---:|---:|",
    ]
    for mode, label in (("cached", "prefix cached (steady state)"), ("cold", "cache emptied before each request")):
        out.append(
            f"| {label} | {_f(t[f'old_{mode}']['median_of_round_medians'], 1)} | {_f(t[f'new_{mode}']['median_of_round_medians'], 1)} | "
            f"{_f(r['ttft_ratio'][mode], 3)} | {_f(r['ttft_added_ms'][mode]['p50'], 1)} ms |"
        )
    share = r.get("prefix_cache_share", {})
    out += [
        "",
        f"Model {c['model']} ({c['prompt_format']} prompt), {c['threads']} threads, temperature 0, {c['max_tokens']} tokens max, "
        f"{c['questions']} questions from `{c['questions_file']}`. Prompt tokens: old {tokens['old'][0]}-{tokens['old'][1]}, "
        f"default {tokens['new'][0]}-{tokens['new'][1]}. Share of the prompt the KV cache already held (median): "
        + ", ".join(f"{k.replace('_', ' ')} {_f(v, 2)}" for k, v in share.items())
        + ".",
    ]
    return out


def dashboard(r: dict[str, Any]) -> list[str]:
    out = [
        _head(r),
        "",
        "| rows in the log | path | data (s) | status table (s) | charts build (s) | charts to Vega-Lite (s) | **total (s)** | rows read as | peak traced memory (MB) | most points in a chart |",
        "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|",
    ]
    names = {"page": "page (as shipped)", "rows": "forced: every row", "sql": "forced: rollups"}
    for rows, entry in r["sizes"].items():
        for path in ("page", "rows", "sql"):
            if path not in entry:
                continue
            e = entry[path]
            t = e["time_s"]
            out.append(
                f"| {int(rows):,} | {names[path]} | {_f(t['snapshot_s'], 3)} | {_f(t['summary_and_status_s'], 3)} | {_f(t['charts_build_s'], 3)} | "
                f"{_f(t['charts_serialize_s'], 3)} | **{_f(t['total_s'], 3)}** | {'rows' if e['from_rows'] else 'rollups'} | {_f(e['peak_memory_mb'], 1)} | {e['max_points']:,} |"
            )
    out += [
        "",
        "Growth between consecutive sizes (log-log slope: 1 = linear, 0 = flat):",
        "",
        "| path | time | peak memory |",
        "|---|---|---|",
    ]
    for path, g in r["growth"].items():
        out.append(
            f"| {names.get(path, path)} | {', '.join(_f(x, 2) for x in g['time_slope'])} | {', '.join(_f(x, 2) for x in g['memory_slope'])} |"
        )
    fill = ", ".join(
        f"{int(k):,}: {v['fill_s']} s / {v['database_mb']} MB (rollups rebuilt in {v.get('rollup_rebuild_s', '—')} s)"
        for k, v in r["sizes"].items()
    )
    out += [
        "",
        f"Synthetic logs (fill time / file size; the rebuild is what opening a log from before rollups costs once): {fill}.",
    ]
    return out


def request_log(r: dict[str, Any]) -> list[str]:
    out = [
        _head(r),
        "",
        "| backend | 1 writer (writes/s) | p50 / p99 per write (ms) | 8 writers (writes/s) | p50 / p99 per write (ms) | write_many, 100 a batch (rows/s) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for name, b in r["backends"].items():
        if "skipped" in b:
            out.append(f"| {name} | skipped: {b['skipped']} | | | | |")
            continue
        one, eight, many = b["one_writer"], b["8_writers"], b["write_many_100"]
        out.append(
            f"| {name} | {_f(one['writes_per_s'], 0)} | {_f(one['p50_ms'], 2)} / {_f(one['p99_ms'], 2)} | {_f(eight['writes_per_s'], 0)} | "
            f"{_f(eight['p50_ms'], 2)} / {_f(eight['p99_ms'], 2)} | {_f(many['writes_per_s'], 0)} |"
        )
    submits = {name: b["submit"] for name, b in r["backends"].items() if "submit" in b}
    if submits:
        out += [
            "",
            "`submit()`, the router's path (µs per call; the spool makes it survive kill -9, the baseline keeps attempts in memory):",
            "",
            "| backend | with spool p50 / p99 | without spool p50 / p99 | added by the spool p50 / p99 |",
            "|---|---:|---:|---:|",
        ]
        for name, sub in submits.items():
            out.append(
                f"| {name} | {_f(sub['spool']['p50_us'], 1)} / {_f(sub['spool']['p99_us'], 1)} | {_f(sub['no_spool']['p50_us'], 1)} / "
                f"{_f(sub['no_spool']['p99_us'], 1)} | {_f(sub['added_p50_us'], 1)} / {_f(sub['added_p99_us'], 1)} |"
            )
    return out


def gateway_load(r: dict[str, Any]) -> list[str]:
    out = [
        _head(r),
        "",
        "| mode | path | requests/s | p50 (ms) | p99 (ms) | added p50 / p99 (ms) | CPU ms per request: the path's server / upstream / load generator |",
        "|---|---|---:|---:|---:|---:|---|",
    ]
    labels = {
        "direct": "direct",
        "gateway": "gateway (`python -m gateway`)",
        "gateway_2_workers": "gateway, `CONDUCTOR_GATEWAY_WORKERS=2`",
        "floor": "floor (uvicorn + aiohttp, `benchmarks/floor_proxy.py`)",
    }
    for mode in ("non_streaming", "streaming"):
        m = r[mode]
        metric = m.get("ttft_ms") if mode == "streaming" else m["latency_ms"]
        for path in m["requests_per_s"]:
            suffix = "" if path == "gateway" else "_2_workers"
            added = m.get(f"added_ttft_ms{suffix}") if mode == "streaming" else m.get(f"added_latency_ms{suffix}")
            cpu = m.get("cpu_ms_per_request", {}).get(path, {})
            server = "litellm" if path.startswith("litellm") else "floor" if path == "floor" else "gateway"
            shown_added = added and path not in ("direct", "floor") and not path.startswith("litellm")
            out.append(
                f"| {mode.replace('_', '-')}{' (time to first token)' if mode == 'streaming' else ''} | {labels.get(path, path)} | {_f(m['requests_per_s'][path], 1)} | "
                f"{_f(metric[path]['p50'], 1)} | {_f(metric[path]['p99'], 1)} | {(_f(added['p50'], 1) + ' / ' + _f(added['p99'], 1)) if shown_added else ''} | "
                f"{_f(cpu.get(server), 2) if path != 'direct' else '—'} / {_f(cpu.get('upstream'), 2)} / {_f(cpu.get('load_generator'), 2)} |"
            )
    out += [
        "",
        f"Errors: {r['non_streaming']['errors']} (non-streaming), {r['streaming']['errors']} (streaming); rows the gateways logged: {r['gateway_request_log_rows']:,}.",
    ]
    for mode, what in (("non_streaming", "a chat"), ("streaming", "a 20-chunk stream")):
        m = r[mode]
        if "gateway_cpu_over_floor" not in m:
            continue
        header = m.get("overhead_header_ms", {}).get("gateway", {})
        whole = m.get("overhead_whole_ms", {}).get("gateway", {})
        out += [
            "",
            f"Gateway CPU for {what}: {_f(m['gateway_cpu_over_floor'], 2)}x the floor's, {_f(m['gateway_cpu_of_litellm'], 3)} of "
            f"LiteLLM's. `x-conductor-overhead-ms` p50 / p99: header {_f(header.get('p50'), 3)} / {_f(header.get('p99'), 3)} ms, "
            f"the body's whole figure {_f(whole.get('p50'), 3)} / {_f(whole.get('p99'), 3)} ms.",
        ]
    return out


def experiments(r: dict[str, Any]) -> list[str]:
    c, b, p, m = r["config"], r["baseline"], r["progress"], r["memory"]
    out = [
        _head(r),
        "",
        f"{c['rows']} rows × {c['variants']} variants, each on its own loopback upstream "
        f"({', '.join(f'{x:g}' for x in c['upstream_latencies_ms'])} ms), at most {c['concurrency_per_provider']} calls at once per provider.",
        "",
        "| measure | wall (s) | / ideal schedule | CPU a cell (ms) |",
        "|---|---:|---:|---:|",
        f"| ideal schedule (slowest provider: rows × latency ÷ concurrency) | {_f(r['ideal_s'])} | 1.000 | |",
        f"| `start_run` (SDK, router, request log, run tables) | {_f(r['wall_s'])} | **{_f(r['ratio_to_ideal'], 3)}** | {_f(r['cpu_ms_per_cell'])} |",
        f"| baseline: the openai SDK alone, 8 threads per upstream | {_f(b['wall_s'])} | {_f(b['ratio_to_ideal'], 3)} | {_f(b['cpu_ms_per_cell'])} |",
        "",
        f"`start_run` / the SDK-only baseline: {_f(r['ratio_to_baseline'], 3)}. Cells: {r['cells']['ok']:,} of {r['cells']['total']:,} answered; "
        f"request-log rows {r['request_log_rows']:,}.",
        "",
        "| per variant | p50 latency (ms) | p95 latency (ms) |",
        "|---|---:|---:|",
        *[
            f"| {name} | {_f(v['p50_latency_ms'], 1)} | {_f(v['p95_latency_ms'], 1)} |"
            for name, v in r["per_variant"].items()
        ],
        "",
        f"Progress, polled every {c['poll_interval_s']:g} s as a page would: first change after {_f(p['first_change_s'])} s, "
        f"longest wait between two changes **{_f(p['longest_gap_between_changes_s'])} s**; `progress()` costs "
        f"{_f(p['progress_call_us']['p50'], 1)} µs at p50, {_f(p['progress_call_us']['p99'], 1)} µs at p99.",
        "",
        "| rows | traced peak of the run (MB) | traced peak of a grid page + statistics (MB) |",
        "|---:|---:|---:|",
        *[
            f"| {int(rows):,} | {_f(v['run_peak_mb'])} | {_f(v['page_and_stats_peak_mb'], 3)} |"
            for rows, v in m["by_rows"].items()
        ],
        "",
        f"Bigger / smaller: run {_f(m['run_ratio'], 3)}, page + statistics {_f(m['page_and_stats_ratio'], 3)} (flat: the runner keeps counters, "
        "the cells go to the database as they finish, and statistics are SQL aggregates).",
    ]
    return out


def run_grid(r: dict[str, Any]) -> list[str]:
    c, d, b = r["config"], r["data"], r["baseline"]
    return [
        _head(r),
        "",
        f"A finished run of {c['rows']:,} rows × {c['variants']} variants (answers of ~60 words, a check and a judge's "
        f"score per cell), median of {c['repeats']}; the baseline is the same page over {c['baseline_rows']} rows.",
        "",
        f"| measure (s) | {c['rows']:,} rows | {c['baseline_rows']} rows |",
        "|---|---:|---:|",
        f"| `store.grid` (every row, no pictures) | {_f(d['store_read_s'], 3)} | {_f(b['data']['store_read_s'], 3)} |",
        f"| `run_grid.grid_frame` | {_f(d['frame_build_s'], 3)} | {_f(b['data']['frame_build_s'], 3)} |",
        f"| filter + search + sort (`select_rows`) | {_f(d['filter_search_sort_s'], 3)} | "
        f"{_f(b['data']['filter_search_sort_s'], 3)} |",
        f"| Arrow for `st.dataframe` | {_f(d['arrow_s'], 3)} | {_f(b['data']['arrow_s'], 3)} |",
        f"| **the page's first render** (AppTest, whole page) | **{_f(r['first_render_s'], 3)}** | "
        f"{_f(b['first_render_s'], 3)} |",
        "",
        f"Ratio to the {c['baseline_rows']}-row page: {_f(r['ratio_to_baseline'], 2)}; the table sent "
        f"{_f(d['arrow_kb'], 0)} kB for {d['rows']:,} lines (the browser draws only the lines in view).",
    ]


def targets(results: Path) -> list[str]:
    out = ["| benchmark | target | limit | measured | met |", "|---|---|---:|---:|---|"]
    for name in ("overhead", "fanout", "local", "quality", "dashboard", "experiments", "run_grid"):
        r = _load(results, name)
        if r is None:
            continue
        for t in r.get("targets", []):
            mark = {True: "**met**", False: "**missed**", None: "not measured"}[t["met"]]
            digits = 0 if t["unit"] == "points" else 3
            out.append(
                f"| {name} | {t['target']} | {t['comparison']} {t['limit']:g} {t['unit']} | {_f(t['measured'], digits)} {t['unit']} | {mark} |"
            )
    return out


SECTIONS = {
    "overhead": ("1. Overhead", overhead),
    "fanout": ("2. Fan-out", fanout),
    "local": ("3. Local model", local),
    "dashboard": ("4. Dashboard at scale", dashboard),
    "request_log": ("5. Request log", request_log),
    "gateway_load": ("6. Gateway load", gateway_load),
    "experiments": ("7. Experiments: a dataset run", experiments),
    "quality": ("8. Quality of the embedded model", quality),
    "run_grid": ("11. Experiments: the run grid at 1,000 rows", run_grid),
}


def render(results: Path) -> str:
    out = ["### Targets", "", *targets(results), ""]
    for name, (title, fn) in SECTIONS.items():
        r = _load(results, name)
        out += [f"### {title}", ""]
        out += fn(r) if r is not None else ["_No result file._"]
        out.append("")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", type=Path, default=RESULTS_DIR)
    p.add_argument("--update", type=Path, help=f"a markdown file with {START} ... {END}")
    args = p.parse_args(argv)
    text = render(args.results)
    if args.update is None:
        print(text)
        return
    doc = args.update.read_text()
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    args.update.write_text(f"{head}{START}\n{text}\n{END}{tail}")


if __name__ == "__main__":
    main()
