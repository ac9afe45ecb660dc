"""What the openai SDK costs to read a stream: CPU per streamed completion, read through the
SDK's `Stream` (a model object built per chunk) and the same HTTP response read as raw SSE
lines with `json.loads` (`with_streaming_response`). The difference is what
providers/openai_compat.py could save per stream (BENCHMARKS.md, recommended changes).
Not a benchmark with a target (no JSON): a measurement behind a recommendation.

    python -m benchmarks.profile_stream_parsing [--chunks 20] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import Upstreams, scrub_environ


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chunks", type=int, default=20, help="words in the reply (one chunk each)")
    p.add_argument("--rounds", type=int, default=10)
    p.add_argument("--per-round", type=int, default=30)
    args = p.parse_args(argv)
    scrub_environ()
    import openai

    reply = " ".join(f"word{i}" for i in range(args.chunks))
    with Upstreams([0], reply=reply) as upstream:
        client = openai.OpenAI(base_url=upstream.url, api_key="sk-Ry4KmpNXF9-NAVrCkFK_23wY", max_retries=0)
        request = dict(
            model="bench-model",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=4000,
            temperature=0.7,
            stream=True,
            stream_options={"include_usage": True},
        )

        def through_sdk() -> int:
            pieces = 0
            with client.chat.completions.create(**request) as stream:
                for chunk in stream:
                    if chunk.choices and chunk.choices[0].delta.content:
                        pieces += 1
            return pieces

        def raw_sse() -> int:
            pieces = 0
            with client.chat.completions.with_streaming_response.create(**request) as response:
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    data = json.loads(line[6:])
                    for choice in data.get("choices") or ():
                        if (choice.get("delta") or {}).get("content"):
                            pieces += 1
            return pieces

        assert through_sdk() == raw_sse() == args.chunks
        for run in (through_sdk, raw_sse):
            for _ in range(args.per_round):
                run()
        cpu: dict[str, list[float]] = {"openai SDK Stream": [], "raw SSE + json.loads": []}
        for _ in range(args.rounds):
            for name, run in (("openai SDK Stream", through_sdk), ("raw SSE + json.loads", raw_sse)):
                c0 = time.process_time()
                for _ in range(args.per_round):
                    run()
                cpu[name].append((time.process_time() - c0) / args.per_round * 1000)
    for name, values in cpu.items():
        print(f"{name:22} {statistics.median(values):7.3f} ms CPU per {args.chunks}-chunk stream")


if __name__ == "__main__":
    main()
