"""Fan-out: a compare across four targets whose upstreams answer after 50, 100, 150 and
200 ms. A compare runs its targets at once, so its wall time should be that of the
slowest target, not the sum.

Per round (interleaved, after a warm-up): one `Conductor.compare` over the four targets
(streamed to the end), and the same request streamed straight through the openai SDK to
each upstream alone. Figures: compare wall time / the slowest target's direct time
(the target), and / the slowest target's own latency inside the compare.

    python -m benchmarks.bench_fanout [--quick] [--out DIR]
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    Upstreams,
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

NAME = "fanout"
MODEL = "bench-model"
LATENCIES_MS = (50.0, 100.0, 150.0, 200.0)
REPLY = " ".join(f"word{i}" for i in range(20))
REQUEST: dict[str, Any] = {
    "messages": [{"role": "user", "content": "Compare yourselves in twenty words."}],
    "max_tokens": 64,
    "temperature": 0.7,
}
SIZES = {"quick": {"rounds": 2, "per_round": 1, "warmup": 1}, "full": {"rounds": 25, "per_round": 2, "warmup": 2}}
LIMIT_RATIO = 1.10


def _names() -> list[str]:
    return [f"t{int(ms)}" for ms in LATENCIES_MS]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()

    import openai

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.models import ChatMessage, ChatRequest, StreamDone, Target
    from conductor_core.router import Conductor

    names = _names()
    inner_slowest: list[float] = []  # the 200 ms target's own latency inside each compare
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp, Upstreams(LATENCIES_MS, reply=REPLY) as up:
        settings = load_settings(
            _env_file=None,
            local_enabled=False,
            endpoints={
                name: EndpointConfig(base_url=url, models=[MODEL]) for name, url in zip(names, up.urls, strict=True)
            },
            data_dir=Path(tmp),
        )
        conductor = Conductor(settings, source="benchmark")
        clients = {
            name: openai.OpenAI(base_url=url, api_key="sk-Ry4KmpNXF9-NAVrCkFK_23wY", max_retries=0, timeout=60)
            for name, url in zip(names, up.urls, strict=True)
        }
        targets = [Target(provider=name, model=MODEL) for name in names]

        def compare(n: int) -> dict[str, list[float]]:
            walls = []
            for _ in range(n):
                t0 = time.perf_counter()
                request = ChatRequest(
                    messages=[ChatMessage(**m) for m in REQUEST["messages"]],
                    max_tokens=REQUEST["max_tokens"],
                    temperature=REQUEST["temperature"],
                )
                finished: dict[str, float] = {}
                for event in conductor.compare(request, targets):
                    if event.error is not None:
                        raise RuntimeError(f"compare target failed: {event.error}")
                    if isinstance(event.event, StreamDone):
                        finished[event.target.provider] = event.event.response.analytics.latency_ms
                walls.append((time.perf_counter() - t0) * 1000)
                if len(finished) != len(targets):
                    raise RuntimeError(f"only {sorted(finished)} finished")
                inner_slowest.append(finished[names[-1]])
            return {"wall": walls}

        def direct(name: str) -> Any:
            client = clients[name]

            def run(n: int) -> dict[str, list[float]]:
                walls = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    with client.chat.completions.create(
                        model=MODEL, **REQUEST, stream=True, stream_options={"include_usage": True}
                    ) as events:
                        for _chunk in events:
                            pass
                    walls.append((time.perf_counter() - t0) * 1000)
                return {"wall": walls}

            return run

        variants = {"compare": compare, **{f"direct_{name}": direct(name) for name in names}}
        results = interleaved(variants, **size)["wall"]
        logged = conductor.log.count()
        conductor.close()

    slowest = f"direct_{names[-1]}"
    compare_ms = results.median_of_medians("compare")
    slowest_ms = results.median_of_medians(slowest)
    ratio = compare_ms / slowest_ms if compare_ms and slowest_ms else None
    paired = [
        statistics.median(c) / statistics.median(s)
        for c, s in zip(results.rounds["compare"], results.rounds[slowest], strict=True)
        if c and s
    ]
    # The warm-up's compares are included in inner_slowest: drop them.
    inner = inner_slowest[size["warmup"] :]
    inner_ratio = compare_ms / statistics.median(inner) if compare_ms and inner else None
    sum_direct = sum(results.median_of_medians(f"direct_{n}") or 0 for n in names)
    payload = envelope(
        NAME,
        args,
        started,
        config={"upstream_latencies_ms": LATENCIES_MS, "reply_words": len(REPLY.split()), "request": REQUEST, **size},
        variants={name: results.summary(name) for name in variants},
        compare_wall_ms=rounded(compare_ms),
        slowest_direct_ms=rounded(slowest_ms),
        sequential_sum_direct_ms=rounded(sum_direct),
        ratio_to_slowest_direct=rounded(ratio, 4),
        ratio_to_slowest_direct_paired=rounded(statistics.median(paired), 4) if paired else None,
        slowest_target_latency_inside_compare_ms=rounded(statistics.median(inner)) if inner else None,
        ratio_to_slowest_inside_compare=rounded(inner_ratio, 4),
        request_log_rows=logged,
        targets=[target("Compare wall time / the slowest target's time (direct)", ratio, LIMIT_RATIO, unit="x")],
    )
    path = write_result(args.out, NAME, payload)
    report(
        [
            f"fanout -> {path}",
            f"  compare {compare_ms:.1f} ms, slowest direct {slowest_ms:.1f} ms, ratio {ratio:.3f} "
            f"(paired {payload['ratio_to_slowest_direct_paired']}), sum of targets {sum_direct:.0f} ms",
        ]
    )
    return payload


if __name__ == "__main__":
    main()
