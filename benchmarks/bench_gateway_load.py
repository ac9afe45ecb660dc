"""Gateway load: requests per second and added latency at concurrency 50.

The gateway runs as users run it (`python -m gateway`, its own process, uvicorn, request
log on) in front of a loopback OpenAI-compatible upstream (its own process, fixed latency).
A load generator (asyncio, 50 workers on 50 keep-alive connections, each sending its next
request as soon as the last one ends) sends the same chat completion for a fixed time,
alternately straight to the upstream, through the gateway, through the LiteLLM proxy and
through the floor of the gateway's stack (`benchmarks/floor_proxy.py`: uvicorn + aiohttp, a
bearer check, nothing else), in interleaved blocks. Non-streaming (latency) and streaming
(time to first token, total). The gateway's CPU per request is reported as a multiple of the
floor's and as a fraction of LiteLLM's, and the gateway's own `x-conductor-overhead-ms`
(header; a stream's whole figure from its last chunk) as p50/p99.

All three processes share this machine's cores, so the figures include the gateway
competing with the load generator and the upstream for CPU, as on a small server.

    python -m benchmarks.bench_gateway_load [--quick] [--out DIR]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    FloorProcess,
    GatewayProcess,
    LiteLLMProxyProcess,
    Rounds,
    Upstreams,
    cpu_seconds,
    envelope,
    parser,
    percentile,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "gateway_load"
KEY = "sk-Ry4KmpNXF9-NAVrCkFK_23wY"  # the same bearer key on the gateway and the LiteLLM proxy
HUNG_WAITING = 500
MODEL = "bench-model"
CONCURRENCY = 50
UPSTREAM_LATENCY_MS = 50.0
# Issues 13 and 18's targets, all same-run comparisons.
LIMIT_OVER_LITELLM = 3.0  # throughput, x the LiteLLM proxy's (chat and streams)
LIMIT_CPU_MS = {"non_streaming": 1.5, "streaming": 3.0}  # gateway CPU per request / per 20-chunk stream
LIMIT_OVER_FLOOR = 2.0  # gateway CPU per request, x the floor's (an aim)
LIMIT_HEALTH_P99_MS = 100.0  # /health with HUNG_WAITING requests stuck on a hung upstream
LIMIT_HEALTHY_RATIO = 1.2  # a healthy provider's p50 then, over its unloaded p50
REPLY = " ".join(f"word{i}" for i in range(20))
SIZES = {
    "quick": {"rounds": 1, "block_s": 0.7, "warmup_s": 0.2},
    "full": {"rounds": 3, "block_s": 8.0, "warmup_s": 3.0},
}
_FIRST_TEXT = re.compile(rb'"content":\s*"[^"]')
_OVERHEAD_HEADER = re.compile(rb"x-conductor-overhead-ms:\s*([0-9.]+)")
_OVERHEAD_FIELD = re.compile(rb'"overhead_ms":\s*([0-9.]+)')


class _Connection:
    """A minimal HTTP/1.1 keep-alive client connection on asyncio streams.

    httpx's AsyncClient spends far more CPU per request than the servers under test when
    50 requests are in flight (encode/httpx#3215); on a 2-core machine the load generator
    would then measure itself. This sends a prepared request and reads the response
    (Content-Length or chunked), noting when the first text delta arrives and, from the
    gateway, its overhead figures (`overhead`: the header; `overhead_whole`: the last
    `conductor.overhead_ms` in the body)."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.overhead: float | None = None
        self.overhead_whole: float | None = None
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def _open(self) -> None:
        self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        sock = self.writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            try:
                await self.writer.wait_closed()
            except OSError:
                pass
            self.reader = self.writer = None

    async def send(self, raw: bytes, t0: float) -> tuple[int, float | None]:
        """(status, seconds to the first text delta or None)."""
        if self.writer is None:
            await self._open()
        assert self.reader is not None and self.writer is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        headers = head.lower()
        first = None
        found = _OVERHEAD_HEADER.search(headers)
        self.overhead = float(found.group(1)) if found else None
        self.overhead_whole = None
        if b"transfer-encoding: chunked" in headers:
            while True:
                size = int((await self.reader.readuntil(b"\r\n")).split(b";")[0].strip(), 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                data = await self.reader.readexactly(size + 2)
                if first is None and _FIRST_TEXT.search(data):
                    first = time.perf_counter() - t0
                if self.overhead is not None and b'"overhead_ms"' in data:
                    whole = _OVERHEAD_FIELD.search(data)
                    self.overhead_whole = float(whole.group(1)) if whole else None
        else:
            match = re.search(rb"content-length:\s*(\d+)", headers)
            body = await self.reader.readexactly(int(match.group(1))) if match else b""
            if first is None and _FIRST_TEXT.search(body):
                first = time.perf_counter() - t0
            if self.overhead is not None:
                whole = _OVERHEAD_FIELD.search(body)
                self.overhead_whole = float(whole.group(1)) if whole else None
        if b"connection: close" in headers:
            await self.close()
        return status, first


def _raw_request(url: str, model: str, stream: bool) -> tuple[str, int, bytes]:
    parts = urlsplit(url)
    body = json.dumps(
        {
            "model": model,
            "messages": [{"role": "user", "content": "Say hello to the load test."}],
            "max_tokens": 64,
            "temperature": 0.7,
            **({"stream": True} if stream else {}),
        }
    ).encode()
    head = (
        f"POST {parts.path}/chat/completions HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        "Content-Type: application/json\r\nAuthorization: Bearer sk-Ry4KmpNXF9-NAVrCkFK_23wY\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode()
    return parts.hostname or "127.0.0.1", parts.port or 80, head + body


async def _block(
    url: str, model: str, stream: bool, seconds: float, pids: dict[str, int] | None = None
) -> dict[str, Any]:
    """`CONCURRENCY` workers, one connection each, for `seconds`; per request the total
    time and (streaming) the time to first text; and the CPU each process in `pids` (and
    this one, the load generator) used per request."""
    host, port, raw = _raw_request(url, model, stream)
    total: list[float] = []
    first: list[float] = []
    overhead: list[float] = []
    overhead_whole: list[float] = []
    errors = 0
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        connection = _Connection(host, port)
        try:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                try:
                    status, ttft = await connection.send(raw, t0)
                except (OSError, asyncio.IncompleteReadError, ValueError):
                    errors += 1
                    await connection.close()
                    continue
                if status != 200:
                    errors += 1
                    continue
                total.append((time.perf_counter() - t0) * 1000)
                if stream and ttft is not None:
                    first.append(ttft * 1000)
                if connection.overhead is not None:
                    overhead.append(connection.overhead)
                if connection.overhead_whole is not None:
                    overhead_whole.append(connection.overhead_whole)
        finally:
            await connection.close()

    pids = pids or {}
    cpu0 = {name: cpu_seconds(pid, children=True) for name, pid in pids.items()}
    own0 = time.process_time()
    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    done = max(1, len(total))
    cpu = {"load_generator": (time.process_time() - own0) * 1000 / done}
    for name, pid in pids.items():
        after = cpu_seconds(pid, children=True)
        if after is not None and cpu0[name] is not None:
            cpu[name] = (after - cpu0[name]) * 1000 / done
    return {
        "total": total,
        "ttft": first,
        "overhead": overhead,
        "overhead_whole": overhead_whole,
        "errors": errors,
        "rps": len(total) / elapsed,
        "cpu_ms_per_request": cpu,
    }


async def _run(targets: dict[str, tuple[str, str, dict[str, int]]], size: dict[str, Any]) -> dict[str, Any]:
    """`targets`: name -> (base URL, model, processes to account CPU to)."""
    out: dict[str, Any] = {}
    for mode, stream in (("non_streaming", False), ("streaming", True)):
        latency, ttft, overhead, overhead_whole = Rounds(), Rounds(), Rounds(), Rounds()
        rps: dict[str, list[float]] = {name: [] for name in targets}
        cpu: dict[str, list[dict[str, float]]] = {name: [] for name in targets}
        errors = {name: 0 for name in targets}
        for url, model, _ in targets.values():
            await _block(url, model, stream, size["warmup_s"])
        order = list(targets)
        for index in range(size["rounds"]):
            for name in order if index % 2 == 0 else list(reversed(order)):
                url, model, pids = targets[name]
                block = await _block(url, model, stream, size["block_s"], pids)
                cpu[name].append(block["cpu_ms_per_request"])
                latency.add(name, block["total"])
                ttft.add(name, block["ttft"])
                overhead.add(name, block["overhead"])
                overhead_whole.add(name, block["overhead_whole"])
                rps[name].append(block["rps"])
                errors[name] += block["errors"]
        section: dict[str, Any] = {
            "requests_per_s": {k: rounded(statistics.median(v), 1) for k, v in rps.items()},
            "latency_ms": {k: _pcts(latency.samples(k)) for k in targets},
            "added_latency_ms": _added(latency),
            **(
                {"added_latency_ms_2_workers": _added(latency, "gateway_2_workers")}
                if "gateway_2_workers" in targets
                else {}
            ),
            "errors": errors,
            # CPU per request of each process (median over blocks): where the machine's time goes.
            "cpu_ms_per_request": {
                name: {proc: rounded(statistics.median(b[proc] for b in blocks if proc in b), 3) for proc in blocks[0]}
                for name, blocks in cpu.items()
                if blocks
            },
        }
        # The gateway's own figure: the header (a stream's: up to its head) and the body's whole.
        section["overhead_header_ms"] = {k: _pcts(overhead.samples(k)) for k in targets if overhead.samples(k)}
        section["overhead_whole_ms"] = {
            k: _pcts(overhead_whole.samples(k)) for k in targets if overhead_whole.samples(k)
        }
        if stream:
            section["ttft_ms"] = {k: _pcts(ttft.samples(k)) for k in targets}
            section["added_ttft_ms"] = _added(ttft)
            if "gateway_2_workers" in targets:
                section["added_ttft_ms_2_workers"] = _added(ttft, "gateway_2_workers")
        out[mode] = section
    return out


def _pcts(samples: list[float]) -> dict[str, Any]:
    return {"n": len(samples), "p50": rounded(percentile(samples, 0.5)), "p99": rounded(percentile(samples, 0.99))}


def _added(rounds: Rounds, name: str = "gateway") -> dict[str, Any]:
    g, d = rounds.samples(name), rounds.samples("direct")
    if not g or not d:
        return {"p50": None, "p99": None}
    return {
        "p50": rounded(percentile(g, 0.5) - percentile(d, 0.5)),
        "p99": rounded(percentile(g, 0.99) - percentile(d, 0.99)),
    }


def _hung_scenario(data_dir: Path, healthy_url: str, quick: bool) -> dict[str, Any]:
    """One upstream hung (answers after 10 minutes) with `HUNG_WAITING` requests waiting on it:
    `/health` latency and a healthy provider's p50, against the same gateway unloaded."""
    waiting = 50 if quick else HUNG_WAITING
    samples = 20 if quick else 200
    with (
        Upstreams([600_000], reply=REPLY) as hung,
        GatewayProcess({"up": healthy_url, "hung": hung.url}, data_dir / "hung", api_key=KEY) as gateway,
    ):
        base = gateway.url.removesuffix("/v1")

        async def measure() -> dict[str, Any]:
            host, port, chat = _raw_request(gateway.url, f"up/{MODEL}", False)
            health = f"GET /health HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode()
            _, _, hung_chat = _raw_request(gateway.url, f"hung/{MODEL}", False)

            async def timed(raw: bytes, n: int) -> list[float]:
                connection, out = _Connection(host, port), []
                for _ in range(n):
                    t0 = time.perf_counter()
                    status, _ = await connection.send(raw, t0)
                    if status == 200:
                        out.append((time.perf_counter() - t0) * 1000)
                await connection.close()
                return out

            unloaded_chat = await timed(chat, samples)
            unloaded_health = await timed(health, samples)
            holders = [_Connection(host, port) for _ in range(waiting)]
            tasks = [asyncio.ensure_future(c.send(hung_chat, time.perf_counter())) for c in holders]
            await asyncio.sleep(2.0 if not quick else 0.5)  # all of them sent and waiting upstream
            loaded_health = await timed(health, samples)
            loaded_chat = await timed(chat, samples)
            for task in tasks:
                task.cancel()
            for connection in holders:
                await connection.close()
            return {
                "waiting_on_hung_upstream": waiting,
                "health_ms": {"unloaded": _pcts(unloaded_health), "with_hung": _pcts(loaded_health)},
                "healthy_chat_ms": {"unloaded": _pcts(unloaded_chat), "with_hung": _pcts(loaded_chat)},
                "healthy_p50_ratio": rounded(percentile(loaded_chat, 0.5) / percentile(unloaded_chat, 0.5), 3)
                if loaded_chat and unloaded_chat
                else None,
            }

        _ = base
        return asyncio.run(measure())


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--two-workers",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also measure the gateway with CONDUCTOR_GATEWAY_WORKERS=2 (default: on, off with --quick)",
    )
    args = p.parse_args(argv)
    two_workers = args.two_workers if args.two_workers is not None else not args.quick
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()

    from benchmarks.bench_overhead import litellm_python
    from conductor_core.store import RequestLog

    litellm, litellm_note = litellm_python()
    if litellm is None and not args.quick:
        raise SystemExit(f"LiteLLM is needed for the side-by-side figures: {litellm_note}")
    with (
        tempfile.TemporaryDirectory(prefix="conductor-bench-gw-") as tmp,
        Upstreams([UPSTREAM_LATENCY_MS], reply=REPLY) as upstream,
    ):
        data_dir = Path(tmp) / "gateway-data"
        with GatewayProcess({"up": upstream.url}, data_dir, api_key=KEY) as gateway:
            targets = {
                "direct": (upstream.url, MODEL, {"gateway": gateway.pid, "upstream": upstream.pid}),
                "gateway": (gateway.url, f"up/{MODEL}", {"gateway": gateway.pid, "upstream": upstream.pid}),
            }
            extra: list[Any] = []
            try:
                if litellm is not None:
                    proxy = LiteLLMProxyProcess(litellm, upstream.url, f"up/{MODEL}", KEY)
                    extra.append(proxy)
                    targets["litellm"] = (proxy.url, f"up/{MODEL}", {"litellm": proxy.pid, "upstream": upstream.pid})
                floor = FloorProcess(upstream.url, KEY)
                extra.append(floor)
                targets["floor"] = (floor.url, MODEL, {"floor": floor.pid, "upstream": upstream.pid})
                if two_workers:
                    second = GatewayProcess({"up": upstream.url}, data_dir, workers=2, api_key=KEY)
                    extra.append(second)
                    targets["gateway_2_workers"] = (
                        second.url,
                        f"up/{MODEL}",
                        {"gateway": second.pid, "upstream": upstream.pid},
                    )
                    if litellm is not None:
                        proxy2 = LiteLLMProxyProcess(litellm, upstream.url, f"up/{MODEL}", KEY, workers=2)
                        extra.append(proxy2)
                        targets["litellm_2_workers"] = (
                            proxy2.url,
                            f"up/{MODEL}",
                            {"litellm": proxy2.pid, "upstream": upstream.pid},
                        )
                results = asyncio.run(_run(targets, size))
            finally:
                for process in extra:
                    process.close()
            results["hung_upstream"] = _hung_scenario(data_dir, upstream.url, args.quick)
        log = RequestLog(data_dir=data_dir)
        logged = log.count()
        log.close()
    for mode in ("non_streaming", "streaming"):
        rps = results[mode]["requests_per_s"]
        for suffix in ("", "_2_workers"):
            if rps.get("litellm" + suffix):
                results[mode]["gateway_over_litellm" + suffix] = rounded(
                    rps["gateway" + suffix] / rps["litellm" + suffix], 2
                )
        cpu = results[mode]["cpu_ms_per_request"]
        gateway_cpu = cpu["gateway"]["gateway"]
        # The gateway's CPU per request against the floor of its stack and against LiteLLM's.
        results[mode]["gateway_cpu_over_floor"] = (
            rounded(gateway_cpu / cpu["floor"]["floor"], 2) if cpu.get("floor", {}).get("floor") else None
        )
        results[mode]["gateway_cpu_of_litellm"] = (
            rounded(gateway_cpu / cpu["litellm"]["litellm"], 3) if cpu.get("litellm", {}).get("litellm") else None
        )
    results["litellm"] = litellm_note
    results["targets"] = _targets(results)

    payload = envelope(
        NAME,
        args,
        started,
        config={
            "concurrency": CONCURRENCY,
            "upstream_latency_ms": UPSTREAM_LATENCY_MS,
            "reply_words": len(REPLY.split()),
            **size,
            "gateway": "python -m gateway (uvicorn, 1 process), access log off, SQLite request log on",
            "load_generator": "asyncio, one keep-alive HTTP/1.1 connection per worker (benchmark process)",
            "gateway_2_workers": "python -m gateway with CONDUCTOR_GATEWAY_WORKERS=2, same request log"
            if two_workers
            else None,
            "litellm": "litellm --config (proxy 1.110.2, .venv-bench), same upstream, same bearer key",
            "floor": "benchmarks/floor_proxy.py: uvicorn + aiohttp, a bearer check, the body forwarded, the answer "
            "streamed back",
            "hung_waiting": HUNG_WAITING,
        },
        gateway_request_log_rows=logged,
        **results,
    )
    out = write_result(args.out, NAME, payload)
    lines = [f"gateway_load -> {out}"]
    for mode in ("non_streaming", "streaming"):
        r = results[mode]
        cpu = r["cpu_ms_per_request"]
        lines.append(
            f"  {mode}: rps direct {r['requests_per_s']['direct']} gateway {r['requests_per_s']['gateway']}; "
            f"added p50 {r['added_latency_ms']['p50']} ms p99 {r['added_latency_ms']['p99']} ms; errors {r['errors']}"
        )
        lines.append(
            f"    CPU ms/request: gateway {cpu['gateway']['gateway']}, floor {cpu.get('floor', {}).get('floor')}, "
            f"LiteLLM {cpu.get('litellm', {}).get('litellm')}; gateway = {r['gateway_cpu_over_floor']}x the floor, "
            f"{r['gateway_cpu_of_litellm']} of LiteLLM"
        )
        header = r["overhead_header_ms"].get("gateway", {})
        whole = r["overhead_whole_ms"].get("gateway", {})
        lines.append(
            f"    x-conductor-overhead-ms: header p50 {header.get('p50')} p99 {header.get('p99')}; "
            f"whole (body) p50 {whole.get('p50')} p99 {whole.get('p99')}"
        )
    report(lines)
    return payload


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for mode, what in (("non_streaming", "requests"), ("streaming", "20-chunk streams")):
        r = results[mode]
        out.append(
            target(
                f"Gateway {what}/s over the LiteLLM proxy's (1 process each)",
                r.get("gateway_over_litellm"),
                LIMIT_OVER_LITELLM,
                at_most=False,
                unit="x",
            )
        )
        out.append(
            target(
                f"Gateway CPU per {what[:-1]}",
                r["cpu_ms_per_request"]["gateway"]["gateway"],
                LIMIT_CPU_MS[mode],
                unit="ms",
            )
        )
        out.append(
            target(
                f"Gateway CPU per {what[:-1]}, x the floor's (uvicorn + aiohttp)",
                r.get("gateway_cpu_over_floor"),
                LIMIT_OVER_FLOOR,
                unit="x",
            )
        )
    hung = results["hung_upstream"]
    out.append(
        target(
            f"/health p99 with {hung['waiting_on_hung_upstream']} requests on a hung upstream",
            hung["health_ms"]["with_hung"]["p99"],
            LIMIT_HEALTH_P99_MS,
            unit="ms",
        )
    )
    out.append(
        target("Healthy provider p50 then / unloaded p50", hung["healthy_p50_ratio"], LIMIT_HEALTHY_RATIO, unit="x")
    )
    return out


if __name__ == "__main__":
    main()
