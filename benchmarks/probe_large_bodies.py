"""Whether large request bodies pause the gateway for everyone (issue 18): `/health`'s
latency, unloaded and while 4 clients keep sending the largest bodies the gateway takes
(1 MiB, CONDUCTOR_GATEWAY_MAX_MESSAGES messages), and bodies of 30,000 tiny messages (the
issue's case: refused by the message cap, but they must be read to be counted).

The gateway runs as users run it (`python -m gateway`, its own process) in front of a
loopback OpenAI-compatible upstream (its own process). `--baseline REV` measures the gateway
at another revision in the same run, in interleaved blocks. Informational (no target file
in results/): tests/test_gateway_bodies.py asserts the same measurement against a bound
taken from the same run, and BENCHMARKS.md keeps the figures.

    python -m benchmarks.probe_large_bodies [--baseline main] [--blocks 2] [--block-s 8]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import GatewayProcess, Upstreams, percentile, quiet_logging, scrub_environ

MODEL = "bench/bench-model"
CLIENTS = 4
MAX_BODY_BYTES = 1024 * 1024
MAX_MESSAGES = 2048
PROBE_EVERY_S = 0.01
TARGET_P99_MS = 100.0  # issue 18's target for /health under 4 concurrent maximal bodies


def maximal_body(messages: int = MAX_MESSAGES, size: int = MAX_BODY_BYTES - 4096, model: str = MODEL) -> bytes:
    """`messages` user messages of equal length, the whole body just under `size` bytes."""
    empty = json.dumps({"model": model, "messages": [{"role": "user", "content": ""}] * messages}).encode()
    text = "word " * ((size - len(empty)) // messages // 5)
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": text}] * messages}).encode()
    assert len(body) <= size, len(body)
    return body


def tiny_messages_body(messages: int = 30_000, model: str = MODEL) -> bytes:
    """The issue's body: many one-character messages (under 1 MiB)."""
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": "a"}] * messages}).encode()
    assert len(body) < MAX_BODY_BYTES, len(body)
    return body


@dataclass
class Probe:
    """`/health` latencies (ms) and what the senders got back."""

    health_ms: list[float] = field(default_factory=list)
    statuses: dict[int, int] = field(default_factory=dict)
    sent: int = 0
    body_ms: list[float] = field(default_factory=list)  # each large request's own latency

    def p(self, q: float) -> float:
        return percentile(self.health_ms, q) or 0.0


async def probe(root: str, body: bytes | None, *, seconds: float, clients: int = CLIENTS, key: str = "") -> Probe:
    """`/health` every PROBE_EVERY_S for `seconds`, while `clients` loops post `body` (none: unloaded)."""
    result = Probe()
    headers = {"content-type": "application/json", **({"authorization": f"Bearer {key}"} if key else {})}
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=clients + 2)
    async with httpx.AsyncClient(base_url=root, timeout=120, limits=limits) as http:

        async def send() -> None:
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                response = await http.post("/v1/chat/completions", content=body, headers=headers)
                result.body_ms.append((time.perf_counter() - t0) * 1000)
                result.statuses[response.status_code] = result.statuses.get(response.status_code, 0) + 1
                result.sent += 1

        async def measure() -> None:
            await asyncio.sleep(min(0.5, seconds / 4) if body else 0)  # the senders are under way
            while time.monotonic() < deadline:
                t0 = time.perf_counter()
                response = await http.get("/health")
                result.health_ms.append((time.perf_counter() - t0) * 1000)
                assert response.status_code == 200, response.text
                await asyncio.sleep(PROBE_EVERY_S)

        senders = [send() for _ in range(clients)] if body else []
        await asyncio.gather(measure(), *senders)
    return result


def _export(revision: str, into: Path) -> Path:
    from benchmarks.profile_gateway import _export as export

    return export(revision, into)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--baseline", help="a git revision to measure beside this checkout (e.g. main)")
    p.add_argument("--blocks", type=int, default=2)
    p.add_argument("--block-s", type=float, default=8.0)
    args = p.parse_args(argv)
    scrub_environ()
    quiet_logging()
    loads = {
        "unloaded": None,
        f"{CLIENTS} x {MAX_MESSAGES} messages, 1 MiB": maximal_body(),
        f"{CLIENTS} x 30,000 tiny messages": tiny_messages_body(),
    }
    with tempfile.TemporaryDirectory() as tmp, Upstreams([0], reply="ok") as upstream:
        trees = {"this checkout": None}
        if args.baseline:
            trees[args.baseline] = _export(args.baseline, Path(tmp) / "baseline")
        gateways = {
            name: GatewayProcess({"bench": upstream.url}, Path(tmp) / f"data-{i}", **({"repo": tree} if tree else {}))
            for i, (name, tree) in enumerate(trees.items())
        }
        try:
            results: dict[tuple[str, str], Probe] = {}
            for _ in range(args.blocks):
                for load_name, body in loads.items():
                    for name, gateway in gateways.items():
                        root = gateway.url.removesuffix("/v1")
                        got = asyncio.run(probe(root, body, seconds=args.block_s))
                        kept = results.setdefault((name, load_name), Probe())
                        kept.health_ms += got.health_ms
                        kept.body_ms += got.body_ms
                        kept.sent += got.sent
                        for status, n in got.statuses.items():
                            kept.statuses[status] = kept.statuses.get(status, 0) + n
        finally:
            for gateway in gateways.values():
                gateway.close()
    for (name, load_name), got in results.items():
        print(
            f"{name:>14} | {load_name:<32} | /health p50 {got.p(0.5):7.1f} ms  p99 {got.p(0.99):7.1f} ms  "
            f"max {max(got.health_ms):7.1f} ms ({len(got.health_ms)} probes) | bodies answered {got.statuses}, "
            f"p50 {percentile(got.body_ms, 0.5) or 0:.0f} ms each"
        )


if __name__ == "__main__":
    main()
