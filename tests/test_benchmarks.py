"""The benchmarks run: every script at its --quick size, through `python -m benchmarks
--quick` (each benchmark in its own process), writes a well-formed result file.

No test here asserts a time or a ratio: speed is what the benchmarks report (BENCHMARKS.md),
and this machine is shared. LiteLLM is a benchmark-only dependency (requirements-bench.txt,
its own virtualenv): without it the overhead benchmark records the skip in its JSON.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.dependencies import missing

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(2700),
]  # a hang guard only: on a busy machine the quick run took 775-1100+ s

REPO = Path(__file__).resolve().parents[1]
NAMES = (
    "request_log",
    "overhead",
    "fanout",
    "experiments",
    "run_grid",
    "gateway_load",
    "shared_state",
    "proxy",
    "workers",
    "dashboard",
    "quality",
    "local",
    "local_grammar",
)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess[str]]:
    out = tmp_path_factory.mktemp("bench-results")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_API_KEY")}
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks", "--quick", "--out", str(out)],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=2400,
    )
    return out, run


def _result(out: Path, name: str) -> dict[str, Any]:
    path = out / f"{name}.json"
    assert path.exists(), f"{name}.json was not written"
    return json.loads(path.read_text())


def test_every_benchmark_ran(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, run = quick_run
    assert run.returncode == 0, run.stdout[-4000:] + run.stderr[-4000:]
    assert "Targets" in run.stdout
    summary = _result(out, "summary")
    assert summary["failed"] == []
    assert {row["benchmark"] for row in summary["targets"]} >= {
        "overhead",
        "fanout",
        "dashboard",
        "quality",
        "local",
        "local_grammar",
    }


@pytest.mark.parametrize("name", NAMES)
def test_result_file_is_well_formed(quick_run: tuple[Path, subprocess.CompletedProcess[str]], name: str) -> None:
    out, _ = quick_run
    result = _result(out, name)
    assert result["benchmark"] == name
    assert result["quick"] is True
    machine = result["machine"]
    assert machine["cores"] >= 1 and machine["python"] and machine["cpu"]
    for row in result.get("targets", []):
        assert set(row) >= {"target", "measured", "limit", "comparison", "met"}
        assert row["met"] in (True, False, None)


def test_overhead_measures_every_path_and_records_litellm(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = quick_run
    result = _result(out, "overhead")
    for section in (result["non_streaming"], result["streaming"]["ttft"]):
        assert {"direct", "conductor", "auto", "gateway"} <= set(section["variants"])
        assert section["variants"]["direct"]["n"] > 0
    # The request log stayed on: every Conductor request left its row.
    assert result["request_log"]["rows_written"] > 0 and result["request_log"]["write_errors"] == 0
    # AUTO's rank() under `evaluated` against `balanced`: the evaluated path was the one measured.
    ranking = result["ranking"]
    assert ranking["balanced"]["n"] > 0 and ranking["evaluated"]["n"] == ranking["balanced"]["n"]
    assert ranking["evaluated_reason"].startswith("cheapest within 2 points of the best pass rate")
    litellm = result["litellm"]
    assert litellm["status"] in ("measured", "skipped")
    if litellm["status"] == "skipped":
        assert "litellm" in litellm["reason"]
        assert "litellm" not in result["non_streaming"]["variants"]
    else:
        assert {"litellm", "litellm_direct"} <= set(result["non_streaming"]["variants"])


def test_litellm_is_skipped_when_not_installed(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from benchmarks import bench_overhead

    monkeypatch.setenv("CONDUCTOR_BENCH_LITELLM_PYTHON", str(tmp_path / "no-such-python"))
    monkeypatch.setattr(bench_overhead, "find_spec", lambda name: None)
    python, reason = bench_overhead.litellm_python()
    assert python is None
    assert "litellm" in reason and "requirements-bench.txt" in reason


def test_dashboard_counts_points_and_memory(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = quick_run
    result = _result(out, "dashboard")
    for size in result["sizes"].values():
        for path in ("page", "rows", "sql"):
            figures = size[path]
            assert figures["points_per_chart"] and figures["peak_memory_mb"] > 0
            assert set(figures["time_s"]) >= {"snapshot_s", "charts_build_s", "charts_serialize_s", "total_s"}


def test_request_log_reports_both_backends(quick_run: tuple[Path, subprocess.CompletedProcess[str]]) -> None:
    out, _ = quick_run
    backends = _result(out, "request_log")["backends"]
    assert backends["sqlite"]["write_errors"] == 0 and backends["sqlite"]["one_writer"]["writes_per_s"] > 0
    submit = backends["sqlite"]["submit"]  # the spool's cost, against the same call without it
    assert submit["spool"]["p50_us"] > 0 and submit["no_spool"]["p50_us"] > 0
    assert submit["added_p50_us"] == pytest.approx(submit["spool"]["p50_us"] - submit["no_spool"]["p50_us"], abs=0.01)
    postgres = backends["postgresql"]
    if "skipped" in postgres:
        missing(f"the request-log benchmark left PostgreSQL out: {postgres['skipped']}")
    assert postgres["write_errors"] == 0


def test_fanout_and_gateway_load_complete_without_errors(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = quick_run
    fanout = _result(out, "fanout")
    assert fanout["compare_wall_ms"] > 0 and fanout["slowest_direct_ms"] > 0
    load = _result(out, "gateway_load")
    for mode in ("non_streaming", "streaming"):
        errors = load[mode]["errors"]
        assert {"direct", "gateway"} <= set(errors) and not any(errors.values())  # LiteLLM too, when installed
        assert load[mode]["latency_ms"]["gateway"]["n"] > 0
        # The floor measured beside it, and the gateway's own overhead figure read off its answers.
        assert load[mode]["cpu_ms_per_request"]["floor"]["floor"] > 0 and load[mode]["gateway_cpu_over_floor"] > 0
        assert load[mode]["overhead_header_ms"]["gateway"]["n"] == load[mode]["latency_ms"]["gateway"]["n"]
        assert load[mode]["overhead_whole_ms"]["gateway"]["n"] == load[mode]["latency_ms"]["gateway"]["n"]
    hung = load["hung_upstream"]
    assert hung["health_ms"]["with_hung"]["n"] > 0 and hung["healthy_chat_ms"]["with_hung"]["n"] > 0


def test_shared_state_measures_redis_beside_local_state_and_a_breaker_travelling(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = quick_run
    result = _result(out, "shared_state")
    assert set(result["added_p50_ms"]) == {"gateway", "gateway_redis"}
    assert result["redis_added_p50_ms"] == pytest.approx(
        result["added_p50_ms"]["gateway_redis"] - result["added_p50_ms"]["gateway"], abs=0.002
    )
    for mode in ("non_streaming", "streaming"):
        assert not any(result["errors"][mode].values())
        cpu = result["cpu_ms_per_request"][mode]
        assert cpu["gateway"] > 0 and cpu["gateway_redis"] > 0 and cpu["redis_server"] is not None
    # Every trip reached the other gateway (the benchmark raises if one never does).
    assert result["propagation_s"]["n"] == result["config"]["trips"] and result["propagation_s"]["max"] > 0
    assert {row["target"] for row in result["targets"]} >= {"Redis's added p50 latency per request"}


def test_experiments_runs_every_cell_and_measures_progress_and_memory(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = quick_run
    result = _result(out, "experiments")
    assert result["cells"]["ok"] == result["cells"]["total"] == result["config"]["rows"] * result["config"]["variants"]
    assert result["wall_s"] > 0 and result["ideal_s"] > 0 and result["baseline"]["wall_s"] > 0
    assert result["progress"]["polls"] > 0 and result["progress"]["longest_gap_between_changes_s"] is not None
    assert set(result["memory"]["by_rows"]) == {str(n) for n in result["config"]["memory_rows"]}
    assert len(result["targets"]) == 4


def test_quality_scores_both_prompts_per_category_and_times_them(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, run = quick_run
    result = _result(out, "quality")
    if "skipped" in result:
        missing(f"the quality benchmark was skipped: {result['skipped']}")
    from benchmarks.bench_quality import QUESTIONS, load_questions

    asked = load_questions(QUESTIONS, per_category=1)  # the quick size: one question a category
    assert [a["ask"] for a in result["answers"]] == [q["ask"] for q in asked]
    for variant in ("old", "new"):
        scores = result["scores"][variant]
        assert set(scores) == {q["category"] for q in asked} | {"all"}
        assert scores["all"]["asked"] == len(asked)
        assert scores["all"]["right"] == sum(a[variant]["right"] for a in result["answers"])
        assert all(isinstance(a[variant]["answer"], str) for a in result["answers"])
    assert result["config"]["prompt_format"] == "few-shot"
    assert result["prompt_tokens"]["new"][0] > result["prompt_tokens"]["old"][1]  # the examples are there
    for name in ("new_cached", "old_cached", "new_cold", "old_cold"):
        assert result["ttft_ms"][name]["n"] >= 1
    # llama.cpp reuses the KV cache of the common prefix: with the previous request in the same
    # format, most of the few-shot prompt is already evaluated; emptied, none of it is.
    assert result["prefix_cache_share"]["new_cached"] > 0.5
    assert result["prefix_cache_share"]["new_cold"] == 0
    assert "quality ->" in run.stdout and "default prompt" in run.stdout


def test_quality_answers_are_judged_by_their_patterns() -> None:
    from benchmarks.bench_quality import is_right

    question = {"answer": r"\bcanberra\b", "reject": r"\bsydney\b"}
    assert is_right(question, "The capital of Australia is Canberra.")
    assert is_right(question, "CANBERRA")
    assert not is_right(question, "Sydney, not Canberra.")
    assert not is_right(question, "The capital of Australia is Sydney.")
    assert not is_right({"answer": r"(?<![\d.])5(?![\d.]\d)"}, "2 + 3 = 15.")
    assert is_right({"answer": r"(?<![\d.])5(?![\d.]\d)"}, "2 + 3 = 5.")


def test_local_grammar_measures_each_schema_three_ways_on_the_same_prompt(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, run = quick_run
    result = _result(out, "local_grammar")
    if "skipped" in result:
        missing(f"the local grammar benchmark was skipped: {result['skipped']}")
    schemas = result["config"]["schemas"]
    variants = {f"{s}/{v}" for s in schemas for v in ("constrained", "unconstrained", "whole_vocab")}
    assert set(result["tokens_per_second"]) == variants
    for schema in schemas:
        # Constrained and unconstrained prompts are the same tokens (one input count per schema).
        assert len(result["input_tokens"][schema]) == 1
        picks = result["picked_again"][schema]
        assert picks["tokens"] > 0 and 0 <= picks["whole_vocab"] <= picks["tokens"]
        for variant in ("constrained", "whole_vocab"):
            answers = result["answers"][f"{schema}/{variant}"]
            assert answers["stop"] + answers["length"] + answers.get("other", 0) == answers["runs"] >= 1
            assert answers["valid"] == answers["stop"]  # every answer that ended by itself is valid
        ratio, tps = result["ratio"][schema], result["tokens_per_second"]
        if ratio is not None:
            constrained = tps[f"{schema}/constrained"]["median_of_round_medians"]
            unconstrained = tps[f"{schema}/unconstrained"]["median_of_round_medians"]
            assert ratio == pytest.approx(constrained / unconstrained, rel=0.01)
    [row] = result["targets"]
    assert row["comparison"] == ">=" and row["limit"] == 0.7
    measured = [r for r in result["ratio"].values() if r is not None]
    assert row["measured"] == (min(measured) if measured else None)
    assert "local_grammar ->" in run.stdout


def test_caddy_balances_two_gateways_and_passes_streams_on(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = quick_run
    result = _result(out, "proxy")
    if "skipped" in result:
        missing(result["skipped"])
    assert result["failed_checks"] == []
    checks = result["checks"]
    assert checks["round_robin_even"] and checks["streamed_as_it_comes"]


def test_workers_answered_every_cell_once_on_one_and_two_workers(
    quick_run: tuple[Path, subprocess.CompletedProcess[str]],
) -> None:
    out, _ = quick_run
    result = _result(out, "workers")
    if "skipped" in result:
        missing(result["skipped"])
    # Each run's cells were counted before its figures were kept (the benchmark fails otherwise).
    assert set(result["summary"]) == {"1 worker", "2 workers", "in-process"}
    assert all(s["cells_per_s"] > 0 for s in result["summary"].values())
