"""Shared routing state: what Redis costs the gateway, and how fast a breaker travels.

Two gateways run as users run them (`python -m gateway`, SQLite request log on) in front of
the same loopback OpenAI-compatible upstream: one with its routing state in the process (no
CONDUCTOR_REDIS_URL), one sharing it through a real `redis-server` on loopback. Measured in
the same run, in interleaved blocks:

* added latency: requests one at a time (no queueing to hide or inflate it), the p50 of each
  gateway minus the upstream's own p50;
* CPU per request of the gateway process (and of redis-server) at concurrency 50, from the
  gateway load benchmark's generator;
* propagation: a breaker tripped through a third gateway sharing the same Redis, and the time
  until the Redis gateway's /status says it is open (the issue's "within 1 s").

    python -m benchmarks.bench_shared_state [--quick] [--out DIR]
"""

from __future__ import annotations

import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_gateway_load import KEY, _Connection, _raw_request, _run
from benchmarks.common import (
    GatewayProcess,
    Upstreams,
    cpu_seconds,
    envelope,
    free_port,
    parser,
    percentile,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "shared_state"
MODEL = "bench-model"
UPSTREAM_LATENCY_MS = 5.0
REPLY = " ".join(f"word{i}" for i in range(20))
LIMIT_ADDED_P50_MS = 0.3  # issue 22: Redis may add at most this to a request's p50...
LIMIT_CPU_RATIO = 1.15  # ...and at most 15% to the gateway's CPU per request
LIMIT_PROPAGATION_S = 1.0  # a breaker opened by one replica is open in another within this
SIZES = {
    "quick": {"sequential": 150, "rounds": 1, "block_s": 0.7, "warmup_s": 0.2, "trips": 2},
    "full": {"sequential": 2000, "rounds": 3, "block_s": 6.0, "warmup_s": 2.0, "trips": 10},
}


class RedisProcess:
    """Debian's redis-server on a free loopback port, no persistence."""

    def __init__(self, directory: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise SystemExit("redis-server is not installed (apt-get install redis-server)")
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        args = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self._process = subprocess.Popen(args, cwd=directory, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        import redis

        deadline = time.monotonic() + 30
        while True:
            try:
                redis.Redis.from_url(self.url).ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline or self._process.poll() is not None:
                    raise RuntimeError("redis-server did not start") from None
                time.sleep(0.05)

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        self._process.terminate()
        self._process.wait(timeout=10)


async def _sequential(urls: dict[str, str], n: int) -> dict[str, list[float]]:
    """Requests one at a time, alternating between the targets, `n` each (ms)."""
    connections = {}
    raws = {}
    for name, url in urls.items():
        model = MODEL if name == "direct" else f"up/{MODEL}"
        host, port, raw = _raw_request(url, model, False)
        connections[name], raws[name] = _Connection(host, port), raw
    samples: dict[str, list[float]] = {name: [] for name in urls}
    try:
        for i in range(n + 20):
            for name in urls if i % 2 == 0 else reversed(list(urls)):
                t0 = time.perf_counter()
                status, _ = await connections[name].send(raws[name], t0)
                if status == 200 and i >= 20:  # the first 20 warm up
                    samples[name].append((time.perf_counter() - t0) * 1000)
    finally:
        for connection in connections.values():
            await connection.close()
    return samples


def _status(gateway: GatewayProcess) -> dict[str, Any]:
    import httpx

    root = gateway.url.removesuffix("/v1")
    return httpx.get(f"{root}/status", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()


def _propagation(tripper: GatewayProcess, watcher: GatewayProcess, upstream: Any, trips: int) -> list[float]:
    """Seconds from the request that trips the breaker (through `tripper`) answering, to
    `watcher`'s /status showing it open; the breaker is closed again between trips."""
    import httpx

    out = []
    body = {"model": "flaky/" + _served(), "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    headers = {"Authorization": f"Bearer {KEY}"}
    for _ in range(trips):
        upstream.set_down(True)
        for _ in range(3):
            httpx.post(f"{tripper.url}/chat/completions", json=body, headers=headers, timeout=30)
        tripped = time.perf_counter()
        while _status(watcher)["providers"]["flaky"]["reliability"]["breaker"] != "open":
            if time.perf_counter() - tripped > 30:
                raise RuntimeError("the breaker never reached the other gateway")
            time.sleep(0.005)
        out.append(time.perf_counter() - tripped)
        upstream.set_down(False)
        deadline = time.perf_counter() + 60
        while _status(watcher)["providers"]["flaky"]["reliability"]["breaker"] != "closed":
            httpx.post(f"{watcher.url}/chat/completions", json=body, headers=headers, timeout=30)
            httpx.post(f"{tripper.url}/chat/completions", json=body, headers=headers, timeout=30)
            if time.perf_counter() > deadline:
                raise RuntimeError("the breaker did not close again")
            time.sleep(0.05)
    return out


def _served() -> str:
    from conductor_core.testing.protocol_servers import OpenAIServer

    return OpenAIServer.default_models()[0]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()
    from conductor_core.testing.protocol_servers import OpenAIServer

    with (
        tempfile.TemporaryDirectory(prefix="conductor-bench-state-") as tmp,
        Upstreams([UPSTREAM_LATENCY_MS], reply=REPLY) as upstream,
        OpenAIServer() as flaky,
    ):
        redis_server = RedisProcess(Path(tmp))
        shared = {
            "CONDUCTOR_REDIS_URL": redis_server.url,
            "CONDUCTOR_BREAKER_FAILURES": "3",
            "CONDUCTOR_BREAKER_COOLDOWN_S": "0.5",
            "CONDUCTOR_MAX_RETRIES": "0",
        }
        endpoints = {"up": upstream.url, "flaky": flaky.url}
        gateways = []
        try:
            models = (MODEL, _served())  # the flaky endpoint serves only its protocol's models
            local = GatewayProcess(endpoints, Path(tmp) / "local", models=models, api_key=KEY)
            gateways.append(local)
            with_redis = GatewayProcess(endpoints, Path(tmp) / "redis", models=models, api_key=KEY, extra_env=shared)
            gateways.append(with_redis)
            tripper = GatewayProcess(endpoints, Path(tmp) / "tripper", models=models, api_key=KEY, extra_env=shared)
            gateways.append(tripper)
            deadline = time.monotonic() + 60
            while _status(with_redis)["routing_state"]["mode"] != "shared":
                if time.monotonic() > deadline:
                    raise RuntimeError("the gateway never reached Redis")
                time.sleep(0.1)
            urls = {"direct": upstream.url, "gateway": local.url, "gateway_redis": with_redis.url}
            sequential = asyncio.run(_sequential(urls, size["sequential"]))
            p50 = {name: percentile(values, 0.5) for name, values in sequential.items()}
            added = {name: rounded(p50[name] - p50["direct"], 3) for name in ("gateway", "gateway_redis")}
            redis_cpu0 = cpu_seconds(redis_server.pid)
            load = asyncio.run(
                _run(
                    {
                        "direct": (upstream.url, MODEL, {"upstream": upstream.pid}),
                        "gateway": (local.url, f"up/{MODEL}", {"gateway": local.pid}),
                        "gateway_redis": (
                            with_redis.url,
                            f"up/{MODEL}",
                            {"gateway": with_redis.pid, "redis": redis_server.pid},
                        ),
                    },
                    size,
                )
            )
            redis_cpu_s = (cpu_seconds(redis_server.pid) or 0.0) - (redis_cpu0 or 0.0)
            propagation = _propagation(tripper, with_redis, flaky, size["trips"])
        finally:
            for gateway in gateways:
                gateway.close()
            redis_server.close()

    cpu = {
        mode: {
            "gateway": load[mode]["cpu_ms_per_request"]["gateway"]["gateway"],
            "gateway_redis": load[mode]["cpu_ms_per_request"]["gateway_redis"]["gateway"],
            "redis_server": load[mode]["cpu_ms_per_request"]["gateway_redis"].get("redis"),
        }
        for mode in ("non_streaming", "streaming")
    }
    for figures in cpu.values():
        figures["ratio"] = rounded(figures["gateway_redis"] / figures["gateway"], 3) if figures["gateway"] else None
    results = {
        "sequential_p50_ms": {name: rounded(value, 3) for name, value in p50.items()},
        "added_p50_ms": added,
        "redis_added_p50_ms": rounded(added["gateway_redis"] - added["gateway"], 3),
        "cpu_ms_per_request": cpu,
        "requests_per_s": {mode: load[mode]["requests_per_s"] for mode in ("non_streaming", "streaming")},
        "errors": {mode: load[mode]["errors"] for mode in ("non_streaming", "streaming")},
        "redis_cpu_s_total": rounded(redis_cpu_s, 3),
        "propagation_s": {
            "n": len(propagation),
            "median": rounded(statistics.median(propagation), 3),
            "max": rounded(max(propagation), 3),
        },
    }
    results["targets"] = [
        target("Redis's added p50 latency per request", results["redis_added_p50_ms"], LIMIT_ADDED_P50_MS, unit="ms"),
        target(
            "Gateway CPU per request with Redis, x without", cpu["non_streaming"]["ratio"], LIMIT_CPU_RATIO, unit="x"
        ),
        target(
            "Gateway CPU per 20-chunk stream with Redis, x without",
            cpu["streaming"]["ratio"],
            LIMIT_CPU_RATIO,
            unit="x",
        ),
        target(
            "A breaker opened through one gateway, open in another's /status (max)",
            results["propagation_s"]["max"],
            LIMIT_PROPAGATION_S,
            unit="s",
        ),
    ]
    payload = envelope(
        NAME,
        args,
        started,
        config={
            **size,
            "upstream_latency_ms": UPSTREAM_LATENCY_MS,
            "redis": f"redis-server (Debian) on loopback, {urlsplit(redis_server.url).scheme}",
            "gateways": "python -m gateway (1 process each), SQLite request log on; one without CONDUCTOR_REDIS_URL, "
            "two with it (one measured, one tripping breakers)",
        },
        **results,
    )
    out = write_result(args.out, NAME, payload)
    lines = [
        f"shared_state -> {out}",
        f"  added p50 (sequential): local {added['gateway']} ms, with Redis {added['gateway_redis']} ms "
        f"(Redis adds {results['redis_added_p50_ms']} ms)",
        f"  CPU ms/request: {json.dumps(cpu)}",
        f"  breaker propagation: median {results['propagation_s']['median']} s, max {results['propagation_s']['max']} s",
    ]
    report(lines)
    return payload


if __name__ == "__main__":
    main()
