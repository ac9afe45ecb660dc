"""Overhead: what a request costs through Conductor, over the same request sent straight
through the openai SDK, side by side with LiteLLM's Router.

One loopback OpenAI-compatible upstream (its own process) answers after a fixed latency.
The same request goes, in interleaved rounds after a warm-up:

  direct           the openai SDK, straight to the upstream (the baseline)
  conductor        Conductor.chat / .stream with the provider named ("up")
  auto             Conductor AUTO (ranking, breaker checks, cost estimate)
  gateway          the openai SDK -> Conductor's gateway (`python -m gateway`) -> upstream
  litellm          LiteLLM Router.completion, in a worker on `.venv-bench` (see litellm_worker.py)
  litellm_direct   the openai SDK straight to the upstream, timed in that same worker

Non-streaming: latency. Streaming: time to first token (and total). Conductor's request
log stays on (SQLite under a temporary data_dir): it is part of Conductor's real cost.

Then AUTO's ranking alone (`rank()`, no call made), per policy, in interleaved rounds over
three providers with a history: `balanced` against `evaluated` on a saved prompt whose
experiment run measured every target (real tables, read through the real cached source).

    python -m benchmarks.bench_overhead [--quick] [--out DIR] [--rank-only]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # `python benchmarks/bench_overhead.py`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    REPO,
    GatewayProcess,
    Rounds,
    Upstreams,
    child_env,
    envelope,
    interleaved,
    parser,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "overhead"
MODEL = "bench-model"
UPSTREAM_LATENCY_MS = 20.0
REPLY = " ".join(f"word{i}" for i in range(20))
REQUEST: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Say hello to the benchmark in twenty words."}],
    "max_tokens": 64,
    "temperature": 0.7,
}
SIZES = {
    "quick": {"rounds": 2, "per_round": 2, "warmup": 1},
    "full": {"rounds": 100, "per_round": 3, "warmup": 30},
}
LIMIT_ADDED_MS = 0.5
LIMIT_RATIO = 0.1
LIMIT_TTFT_MS = 1.0
#: `rank()` under `evaluated` may take at most this times as long as under `balanced`.
LIMIT_EVALUATED_RANK_RATIO = 1.2
RANK_SIZES = {
    "quick": {"rounds": 5, "per_round": 200, "warmup": 200},
    "full": {"rounds": 30, "per_round": 2000, "warmup": 2000},
}


# --- LiteLLM, in its own interpreter ---------------------------------------------------------


def litellm_python() -> tuple[str | None, str]:
    """The interpreter that has litellm: $CONDUCTOR_BENCH_LITELLM_PYTHON, else .venv-bench,
    else this one if litellm is importable here. (None, why) when there is none."""
    configured = os.environ.get("CONDUCTOR_BENCH_LITELLM_PYTHON")
    candidates = [configured] if configured else [str(REPO / ".venv-bench" / "bin" / "python")]
    for candidate in candidates:
        if candidate and Path(candidate).exists():
            probe = subprocess.run(
                [candidate, "-c", "import litellm"], capture_output=True, env=child_env(), timeout=300
            )
            if probe.returncode == 0:
                return candidate, "found"
    if find_spec("litellm") is not None:
        return sys.executable, "found"
    return None, (
        "litellm is not installed: it is a benchmark-only dependency; "
        "python3 -m venv .venv-bench && .venv-bench/bin/pip install -r requirements-bench.txt"
    )


class LiteLLMWorker:
    """The worker process; `ready()` waits for its setup (LiteLLM takes seconds to import),
    so it can start while the rest of the benchmark is being set up."""

    def __init__(self, python: str, url: str) -> None:
        self._process = subprocess.Popen(
            [python, str(REPO / "benchmarks" / "litellm_worker.py")],
            cwd=REPO,
            env=child_env(),
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._send({"cmd": "setup", "url": url, "model": MODEL})
        self.versions: dict[str, Any] = {}

    def ready(self) -> LiteLLMWorker:
        self.versions = self._receive()["versions"]
        return self

    def _send(self, message: dict[str, Any]) -> None:
        assert self._process.stdin is not None
        self._process.stdin.write(json.dumps(message) + "\n")
        self._process.stdin.flush()

    def _ask(self, message: dict[str, Any]) -> dict[str, Any]:
        self._send(message)
        return self._receive()

    def _receive(self) -> dict[str, Any]:
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            raise RuntimeError("the LiteLLM worker exited")
        answer = json.loads(line)
        if "error" in answer:
            raise RuntimeError(f"LiteLLM worker: {answer['error']}")
        return answer

    def run(self, variant: str, stream: bool, n: int) -> dict[str, list[float]]:
        answer = self._ask({"cmd": "run", "variant": variant, "stream": stream, "n": n, "request": REQUEST})
        ttft = [float("nan") if x is None else x for x in answer["ttft_ms"]]
        return {"total": answer["total_ms"], "ttft": ttft, "cpu": answer["cpu_ms"]}

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                self._ask({"cmd": "quit"})
            except (RuntimeError, OSError, ValueError):
                pass
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()


# --- the variants -----------------------------------------------------------------------------


def _sdk_variant(client: Any, model: str) -> Any:
    def run(n: int, stream: bool) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"total": [], "ttft": [], "cpu": []}
        for _ in range(n):
            c0, t0 = time.process_time(), time.perf_counter()
            if stream:
                ttft = None
                with client.chat.completions.create(
                    model=model, **REQUEST, stream=True, stream_options={"include_usage": True}
                ) as events:
                    for chunk in events:
                        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                            ttft = time.perf_counter()
                out["ttft"].append((ttft - t0) * 1000 if ttft else float("nan"))
            else:
                client.chat.completions.create(model=model, **REQUEST)
            out["total"].append((time.perf_counter() - t0) * 1000)
            out["cpu"].append((time.process_time() - c0) * 1000)
        return out

    return run


def _conductor_variant(conductor: Any, provider: str) -> Any:
    from conductor_core.models import ChatMessage, ChatRequest, StreamDone, TextDelta

    def run(n: int, stream: bool) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {"total": [], "ttft": [], "cpu": []}
        for _ in range(n):
            c0, t0 = time.process_time(), time.perf_counter()
            # Building the request is part of the call, as the SDK's is part of the baseline.
            request = ChatRequest(
                provider=provider,
                messages=[ChatMessage(**m) for m in REQUEST["messages"]],
                max_tokens=REQUEST["max_tokens"],
                temperature=REQUEST["temperature"],
            )
            if stream:
                ttft, done = None, False
                for event in conductor.stream(request):
                    if ttft is None and isinstance(event, TextDelta):
                        ttft = time.perf_counter()
                    elif isinstance(event, StreamDone):
                        done = True
                if not done:
                    raise RuntimeError("the stream did not finish")
                out["ttft"].append((ttft - t0) * 1000 if ttft else float("nan"))
            else:
                conductor.chat(request)
            out["total"].append((time.perf_counter() - t0) * 1000)
            out["cpu"].append((time.process_time() - c0) * 1000)
        return out

    return run


def _both_modes(run: Any) -> tuple[Any, Any]:
    """A variant's two modes as separate variants: metrics latency/cpu, and
    stream_total/ttft/stream_cpu."""

    def plain(n: int) -> dict[str, list[float]]:
        out = run(n, False)
        return {"latency": out["total"], "cpu": out["cpu"]}

    def streamed(n: int) -> dict[str, list[float]]:
        out = run(n, True)
        return {"stream_total": out["total"], "ttft": out["ttft"], "stream_cpu": out["cpu"]}

    return plain, streamed


_MEASURED = ("conductor", "auto", "gateway")


def _section(results: Rounds, variants: list[str], litellm: bool) -> dict[str, Any]:
    section: dict[str, Any] = {"variants": {v: results.summary(v) for v in variants if v in results.rounds}}
    added = {v: results.added(v, "direct") for v in _MEASURED if v in results.rounds and v in variants}
    if litellm and "litellm" in results.rounds:
        added["litellm"] = results.added("litellm", "litellm_direct")
    section["added_over_direct_ms"] = added
    ratios: dict[str, Any] = {}
    if "litellm" in added:
        base = added["litellm"]["p50"]
        for v in _MEASURED:
            if v in added and base and base > 0:
                ratios[v] = rounded(added[v]["p50"] / base, 4)
    section["ratio_to_litellm_added_p50"] = ratios
    return section


def _evaluated_conductor(data_dir: Path, url: str) -> Any:
    """A Conductor with three providers (never called) and one completed 20-row experiment run
    of the saved prompt "bench" that measured all three, as the Experiments page stores it."""
    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.models import AttemptRecord
    from conductor_core.router import Conductor
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import Cell, ExperimentStore
    from conductor_core.workbench.prompts import PromptContent, PromptMessage, PromptStore
    from conductor_core.workbench.variants import Variant

    names = ("a", "b", "c")
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        endpoints={n: EndpointConfig(base_url=url, models=[MODEL]) for n in names},
        data_dir=data_dir,
    )
    conductor = Conductor(settings, source="benchmark")
    for i in range(30):  # a history, so `balanced` ranks on real figures
        for k, n in enumerate(names):
            conductor.metrics.record(
                AttemptRecord(request_id=f"r{i}", provider=n, model=MODEL, status="ok", latency_ms=20.0 + 10 * k + i)
            )
    version = PromptStore(conductor.log).save(
        "bench",
        PromptContent(messages=(PromptMessage(role="user", content="{{q}}"),), variant=Variant(provider="auto")),
        by="benchmark",
    )
    rows = "q,expected\n" + "".join(f"question {i},yes\n" for i in range(20))
    store = ExperimentStore(conductor.log)
    experiment = store.create("bench", "{{q}}", read_dataset(rows), [Variant(provider=n, model=MODEL) for n in names])
    run = store.new_run(experiment, "contains", {}, prompt_version_id=version.id)
    passes = {0: 19, 1: 18, 2: 15}  # 0.95, 0.90, 0.75
    cells = [
        Cell(row=r, variant=v, status="ok", answer="yes", passed=r < passes[v]) for r in range(20) for v in range(3)
    ]
    store.write_cells(run.id, cells)
    store.finish_run(run.id, "completed")
    return conductor


def _rank_cost(conductor: Any, size: dict[str, int]) -> dict[str, Any]:
    """Microseconds per `rank()` call, `balanced` and `evaluated`, interleaved in rounds."""
    from conductor_core.models import ChatRequest, RoutingPolicy

    request = ChatRequest.model_validate({**REQUEST, "provider": "auto", "prompt_name": "bench"})
    evaluated = conductor.rank(request, RoutingPolicy.evaluated)
    assert "best pass rate" in evaluated[0].reason, evaluated[0].reason  # the source answered: measured

    def variant(policy: Any) -> Any:
        def run(n: int) -> dict[str, list[float]]:
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                conductor.rank(request, policy)
                samples.append((time.perf_counter() - t0) * 1e6)
            return {"rank_us": samples}

        return run

    results = interleaved(
        {"balanced": variant(RoutingPolicy.balanced), "evaluated": variant(RoutingPolicy.evaluated)}, **size
    )["rank_us"]
    balanced, chosen = results.median_of_medians("balanced"), results.median_of_medians("evaluated")
    return {
        "unit": "microseconds per rank() call (3 providers)",
        "balanced": results.summary("balanced"),
        "evaluated": results.summary("evaluated"),
        "ratio_evaluated_to_balanced": rounded(chosen / balanced if balanced and chosen else None, 4),
        "evaluated_reason": evaluated[0].reason,
        **size,
    }


def _rank_only(args: Any, started: float) -> dict[str, Any]:
    scrub_environ()
    quiet_logging()
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        conductor = _evaluated_conductor(Path(tmp) / "ranking", "http://127.0.0.1:9/v1")
        try:
            ranking = _rank_cost(conductor, RANK_SIZES["quick" if args.quick else "full"])
        finally:
            conductor.close()
    targets = [_rank_target(ranking)]
    payload = envelope(f"{NAME}_ranking", args, started, ranking=ranking, targets=targets)
    path = write_result(args.out, f"{NAME}_ranking", payload)
    report([f"ranking -> {path}", f"  {_rank_line(ranking)}"])
    return payload


def _rank_target(ranking: dict[str, Any]) -> dict[str, Any]:
    return target(
        "AUTO rank(): evaluated / balanced (median of round medians)",
        ranking["ratio_evaluated_to_balanced"],
        LIMIT_EVALUATED_RANK_RATIO,
        unit="x",
    )


def _rank_line(ranking: dict[str, Any]) -> str:
    return (
        f"rank() balanced {ranking['balanced']['median_of_round_medians']} us, "
        f"evaluated {ranking['evaluated']['median_of_round_medians']} us "
        f"(x{ranking['ratio_evaluated_to_balanced']})"
    )


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--no-gateway", action="store_true", help="skip the gateway variant")
    p.add_argument("--rank-only", action="store_true", help="only the rank() comparison (no upstream, no LiteLLM)")
    args = p.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    if args.rank_only:
        return _rank_only(args, started)
    scrub_environ()
    quiet_logging()

    import openai

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor

    python, why = litellm_python()
    litellm_info: dict[str, Any] = {"status": "measured" if python else "skipped", "reason": None if python else why}
    if python is None and not args.quick:
        raise SystemExit(f"overhead: {why} (the full run compares against LiteLLM; --quick skips it)")

    with (
        tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp,
        Upstreams([UPSTREAM_LATENCY_MS], reply=REPLY) as upstream,
    ):
        # The slow starters first, in the background: the gateway and LiteLLM import for seconds.
        gateway = (
            None if args.no_gateway else GatewayProcess({"up": upstream.url}, Path(tmp) / "gateway-data", wait=False)
        )
        worker = LiteLLMWorker(python, upstream.url) if python else None
        settings = load_settings(
            _env_file=None,
            local_enabled=False,
            endpoints={"up": EndpointConfig(base_url=upstream.url, models=[MODEL])},
            data_dir=Path(tmp) / "data",
        )
        conductor = Conductor(settings, source="benchmark")
        direct = openai.OpenAI(base_url=upstream.url, api_key="sk-Ry4KmpNXF9-NAVrCkFK_23wY", max_retries=0, timeout=60)
        runs = {
            "direct": _sdk_variant(direct, MODEL),
            "conductor": _conductor_variant(conductor, "up"),
            "auto": _conductor_variant(conductor, "auto"),
        }
        try:
            if gateway is not None:
                gateway.wait_ready()
                via_gateway = openai.OpenAI(
                    base_url=gateway.url, api_key="sk-Ry4KmpNXF9-NAVrCkFK_23wY", max_retries=0, timeout=60
                )
                runs["gateway"] = _sdk_variant(via_gateway, f"up/{MODEL}")
            if worker is not None:
                worker.ready()
                litellm_info.update(python=python, versions=worker.versions)
                runs["litellm"] = lambda n, stream, w=worker: w.run("litellm", stream, n)
                runs["litellm_direct"] = lambda n, stream, w=worker: w.run("direct", stream, n)
            variants: dict[str, Any] = {}
            for name, run in runs.items():
                plain, streamed = _both_modes(run)
                variants[name] = plain
                variants[f"{name}+stream"] = streamed
            results = interleaved(variants, **size)
        finally:
            if worker is not None:
                worker.close()
            if gateway is not None:
                gateway.close()
        logged = conductor.log.count()
        log_errors = conductor.log.write_errors
        conductor.close()
        ranked_by = _evaluated_conductor(Path(tmp) / "ranking", upstream.url)
        try:
            ranking = _rank_cost(ranked_by, RANK_SIZES["quick" if args.quick else "full"])
        finally:
            ranked_by.close()

    names = list(runs)
    latency = results["latency"]
    cpu = results["cpu"]
    ttft, stream_total, stream_cpu = Rounds(), Rounds(), Rounds()
    for name in names:  # the streamed variants carry a "+stream" suffix: drop it
        ttft.rounds[name] = results["ttft"].rounds.get(f"{name}+stream", [])
        stream_total.rounds[name] = results["stream_total"].rounds.get(f"{name}+stream", [])
        stream_cpu.rounds[name] = results["stream_cpu"].rounds.get(f"{name}+stream", [])
    has_litellm = python is not None
    non_streaming = _section(latency, names, has_litellm)
    # CPU time of the calling process per request (all its threads): the work a path does,
    # which scheduling noise on a busy machine inflates far less than wall time. The
    # gateway's own process is not in it (only its client's).
    non_streaming["cpu_ms"] = _section(cpu, [n for n in names if n != "gateway"], has_litellm)
    streaming = {
        "ttft": _section(ttft, names, has_litellm),
        "total": _section(stream_total, names, has_litellm),
        "cpu_ms": _section(stream_cpu, [n for n in names if n != "gateway"], has_litellm),
    }
    added = non_streaming["added_over_direct_ms"]
    ratios = non_streaming["ratio_to_litellm_added_p50"]
    ttft_added = streaming["ttft"]["added_over_direct_ms"]
    targets = [
        target(
            "Conductor (provider named): added p50 latency over the direct SDK call",
            added["conductor"]["p50"],
            LIMIT_ADDED_MS,
            unit="ms",
        ),
        target(
            "Conductor AUTO: added p50 latency over the direct SDK call",
            added["auto"]["p50"],
            LIMIT_ADDED_MS,
            unit="ms",
        ),
        target(
            "Conductor (provider named): added p50 / LiteLLM Router's added p50",
            ratios.get("conductor"),
            LIMIT_RATIO,
            unit="x",
        ),
        target("Conductor AUTO: added p50 / LiteLLM Router's added p50", ratios.get("auto"), LIMIT_RATIO, unit="x"),
        target(
            "Conductor (provider named): added streaming time to first token",
            ttft_added["conductor"]["p50"],
            LIMIT_TTFT_MS,
            unit="ms",
        ),
        target(
            "Conductor AUTO: added streaming time to first token", ttft_added["auto"]["p50"], LIMIT_TTFT_MS, unit="ms"
        ),
        _rank_target(ranking),
    ]
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "upstream_latency_ms": UPSTREAM_LATENCY_MS,
            "reply_words": len(REPLY.split()),
            "request": REQUEST,
            **size,
            "request_log": "SQLite (WAL) under a temporary data_dir, on",
            "gateway": "python -m gateway, access log off (log level warning)",
        },
        litellm=litellm_info,
        request_log={"rows_written": logged, "write_errors": log_errors},
        non_streaming=non_streaming,
        streaming=streaming,
        ranking=ranking,
        targets=targets,
    )
    path = write_result(args.out, NAME, payload)
    lines = [f"overhead -> {path}"]
    for label, section in (("latency", non_streaming), ("ttft", streaming["ttft"]), ("cpu", non_streaming["cpu_ms"])):
        for name, fig in section["added_over_direct_ms"].items():
            lines.append(
                f"  {label:8} {name:10} added p50 {fig['p50']} ms (paired {fig['paired_round_median']}), p99 {fig['p99']} ms"
            )
    lines.append(f"  ratios to LiteLLM: {ratios}  litellm: {litellm_info['status']}")
    lines.append(f"  {_rank_line(ranking)}")
    report(lines)
    return payload


if __name__ == "__main__":
    main()
