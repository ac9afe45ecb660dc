"""Gateway throughput behind the reverse proxy: 1 and 2 gateway processes, and what the proxy costs.

Caddy (Debian's `caddy`, run here on loopback with a generated Caddyfile) in front of
(a) one gateway process and (b) two gateway processes, balanced exactly as the team stack's
gateway site balances them (its `:8000` block is read from `docker/team/Caddyfile`: round
robin, health checks, retries); and (c) the same gateway with no proxy, the baseline that shows
what the proxy itself costs. The gateways run as users run them (`python -m gateway`, one
process each, its own port) and share one request log: a scratch PostgreSQL database next to
CONDUCTOR_TEST_POSTGRES_URL's, as in the team stack (one SQLite file in a shared data directory
when that variable is unset). The load is the gateway load benchmark's (its raw-socket
generator, 50 keep-alive connections, a loopback upstream with 50 ms latency), non-streaming
and streaming, the three configurations in interleaved blocks (A B C, C B A, ...) so load from
other work on the machine hits all alike; the load average is recorded beside every block.

Every request must be answered (no error, no refused connection) and written to the request
log exactly once: the benchmark counts the log's rows after the gateways stop. A paced stream
(a second upstream sends its 20 deltas 20 ms apart) must reach the client through Caddy as it
comes, its first text long before its end, as directly. It exits with status 1 when a check fails.

    python -m benchmarks.bench_proxy [--quick] [--out DIR]
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_gateway_load import (
    CONCURRENCY,
    KEY,
    MODEL,
    REPLY,
    UPSTREAM_LATENCY_MS,
    _block,
    _Connection,
    _raw_request,
)
from benchmarks.common import (
    REPO,
    GatewayProcess,
    ServerProcess,
    Upstreams,
    envelope,
    free_port,
    load,
    parser,
    percentile,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    write_result,
)

NAME = "proxy"
TEAM_CADDYFILE = REPO / "docker" / "team" / "Caddyfile"
MISSING_CADDY = "caddy is not installed (apt-get install caddy; the benchmark runs the binary itself, no service)"
SIZES = {
    "quick": {"rounds": 1, "block_s": 1.0, "warmup_s": 0.3, "replica_checks": 10, "paced_streams": 4},
    "full": {"rounds": 6, "block_s": 5.0, "warmup_s": 2.0, "replica_checks": 40, "paced_streams": 20},
}
# (c), (a), (b) of the brief: the baseline first.
CONFIGS = ("gateway_direct", "proxy_1_gateway", "proxy_2_gateways")
PACED_CHUNK_DELAY_MS = 20.0  # the paced upstream's gap between text deltas (a stream of about 0.45 s)


class CaddyProcess(ServerProcess):
    """`caddy run` with the team stack's gateway site on two free loopback ports: one in
    front of `one` gateway, one in front of `two` (round robin, as in the stack)."""

    name = "caddy"
    ready_timeout_s = 30.0

    def __init__(self, binary: str, directory: Path, one: list[str], two: list[str]) -> None:
        self.ports = {"proxy_1_gateway": free_port(), "proxy_2_gateways": free_port()}
        self.urls = {name: f"http://127.0.0.1:{port}/v1" for name, port in self.ports.items()}
        team = TEAM_CADDYFILE.read_text()
        caddyfile = directory / "Caddyfile"
        caddyfile.write_text(
            "{\n\tadmin off\n\tauto_https off\n}\n\n"
            + gateway_site(team, self.ports["proxy_1_gateway"], one)
            + "\n"
            + gateway_site(team, self.ports["proxy_2_gateways"], two)
        )
        self.caddyfile = caddyfile
        self._log = directory / "caddy.log"
        # Caddy keeps certificates and autosaved config under XDG dirs: keep them in the temp dir.
        env = {**os.environ, "XDG_DATA_HOME": str(directory), "XDG_CONFIG_HOME": str(directory)}
        with self._log.open("wb") as log_file:
            self._process = subprocess.Popen(
                [binary, "run", "--config", str(caddyfile), "--adapter", "caddyfile"],
                cwd=directory,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            self.wait_ready()
        except (RuntimeError, TimeoutError) as error:
            self.close()
            raise RuntimeError(f"{error}; caddy's output:\n{self._log.read_text()[-3000:]}") from None

    def _answers(self) -> bool:
        import httpx

        return all(
            httpx.get(url.removesuffix("/v1") + "/health", timeout=1.0).status_code == 200 for url in self.urls.values()
        )


def gateway_site(team_caddyfile: str, port: int, upstreams: list[str]) -> str:
    """The team stack's gateway site (`:8000 { reverse_proxy gateway-1:8000 gateway-2:8000 {...} }`)
    on `127.0.0.1:port` in front of `upstreams`, its options (balancing, health checks, retries)
    unchanged."""
    found = re.search(r"^:8000 \{\n(.*?)^\}", team_caddyfile, re.MULTILINE | re.DOTALL)
    if found is None:
        raise RuntimeError(f"{TEAM_CADDYFILE} has no ':8000 {{' site: the benchmark copies its balancing from it")
    body, replaced = re.subn(r"reverse_proxy [^{\n]*\{", "reverse_proxy " + " ".join(upstreams) + " {", found.group(1))
    if replaced != 1:
        raise RuntimeError(f"{TEAM_CADDYFILE}'s ':8000' site has no single 'reverse_proxy ... {{' line")
    # In the stack the gateways are hosts of their own (gateway-1, gateway-2); here both are 127.0.0.1.
    body = body.replace("{http.reverse_proxy.upstream.host}", "{http.reverse_proxy.upstream.hostport}")
    return f":{port} {{\n\tbind 127.0.0.1\n{body}}}\n"


@contextmanager
def shared_request_log(data_dir: Path) -> Iterator[tuple[str | None, str]]:
    """(database URL for every gateway, description): a scratch PostgreSQL database created next
    to CONDUCTOR_TEST_POSTGRES_URL's and dropped afterwards, or None (one SQLite file in the
    shared data directory) when that variable is unset."""
    admin_url = os.environ.get("CONDUCTOR_TEST_POSTGRES_URL")
    if not admin_url:
        yield None, "one SQLite file in a data directory both gateways use (CONDUCTOR_TEST_POSTGRES_URL unset)"
        return
    import psycopg
    from sqlalchemy.engine import make_url

    name = f"conductor_bench_proxy_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        yield url, "one PostgreSQL database both gateways write (as in the team stack), a scratch one on loopback"
    finally:
        with psycopg.connect(admin_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


async def _measure(targets: dict[str, tuple[str, dict[str, int]]], size: dict[str, Any]) -> dict[str, Any]:
    """Every configuration warmed up, then `rounds` rounds of one block each (order reversed
    every other round), non-streaming then streaming. `targets`: name -> (base URL, processes
    whose CPU is counted)."""
    out: dict[str, Any] = {"answered": 0, "errors": 0}
    model = f"up/{MODEL}"
    for mode, stream in (("non_streaming", False), ("streaming", True)):
        blocks: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
        for url, _ in targets.values():
            warm = await _block(url, model, stream, size["warmup_s"])
            out["answered"] += len(warm["total"])
            out["errors"] += warm["errors"]
        order = list(targets)
        for index in range(size["rounds"]):
            for name in order if index % 2 == 0 else list(reversed(order)):
                url, pids = targets[name]
                before = load()
                block = await _block(url, model, stream, size["block_s"], pids)
                block["load_average"] = {"before": before, "after": load()}
                blocks[name].append(block)
                out["answered"] += len(block["total"])
                out["errors"] += block["errors"]
        out[mode] = _section(blocks, stream)
    return out


def _section(blocks: dict[str, list[dict[str, Any]]], stream: bool) -> dict[str, Any]:
    """One mode's figures per configuration: medians over blocks for rates and CPU,
    percentiles over every request for latency."""
    section: dict[str, Any] = {}
    for name, runs in blocks.items():
        latency = [x for run in runs for x in run["total"]]
        cpu_runs = [run["cpu_ms_per_request"] for run in runs]
        for cpu in cpu_runs:
            cpu["gateways"] = cpu.get("gateway_1", 0.0) + cpu.get("gateway_2", 0.0)
        figures: dict[str, Any] = {
            "requests_per_s": rounded(statistics.median(run["rps"] for run in runs), 1),
            "requests_per_s_blocks": [rounded(run["rps"], 1) for run in runs],
            "requests": len(latency),
            "errors": sum(run["errors"] for run in runs),
            "latency_ms": _pcts(latency),
            "cpu_ms_per_request": {
                process: rounded(statistics.median(cpu[process] for cpu in cpu_runs), 3) for process in cpu_runs[0]
            },
            "load_average_1min": [run["load_average"]["before"][0] for run in runs if run["load_average"]["before"]],
        }
        if stream:
            figures["ttft_ms"] = _pcts([x for run in runs for x in run["ttft"]])
        if name == "proxy_2_gateways":
            # How the work split: gateway 1's share of the two gateways' CPU (0.5 is even).
            shares = [cpu["gateway_1"] / cpu["gateways"] for cpu in cpu_runs if cpu["gateways"]]
            figures["gateway_1_cpu_share"] = rounded(statistics.median(shares), 3) if shares else None
        section[name] = figures
    rps = {name: section[name]["requests_per_s"] for name in blocks}
    p50 = {name: section[name]["latency_ms"]["p50"] for name in blocks}
    section["comparison"] = {
        "proxy_1_over_direct_rps": _ratio(rps["proxy_1_gateway"], rps["gateway_direct"]),
        "proxy_2_over_proxy_1_rps": _ratio(rps["proxy_2_gateways"], rps["proxy_1_gateway"]),
        "proxy_2_over_direct_rps": _ratio(rps["proxy_2_gateways"], rps["gateway_direct"]),
        "proxy_added_p50_ms": rounded(p50["proxy_1_gateway"] - p50["gateway_direct"])
        if p50["proxy_1_gateway"] is not None and p50["gateway_direct"] is not None
        else None,
    }
    return section


def _pcts(samples: list[float]) -> dict[str, Any]:
    return {
        "n": len(samples),
        "p50": rounded(percentile(samples, 0.5)),
        "p95": rounded(percentile(samples, 0.95)),
        "p99": rounded(percentile(samples, 0.99)),
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return rounded(a / b, 3) if a and b else None


def _replicas_seen(url: str, n: int) -> dict[str, int]:
    """`n` requests one at a time through a proxy site: how many each gateway answered
    (`X-Conductor-Replica`, host:port). Round robin over two: n/2 each."""
    import httpx

    body = {"model": f"up/{MODEL}", "messages": [{"role": "user", "content": "Which replica?"}], "max_tokens": 5}
    seen: Counter[str] = Counter()
    with httpx.Client(headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as client:
        for _ in range(n):
            response = client.post(f"{url}/chat/completions", json=body)
            response.raise_for_status()
            seen[response.headers.get("x-conductor-replica", "(none)")] += 1
    return dict(seen)


async def _paced_streams(url: str, n: int) -> dict[str, Any]:
    """`n` streams one at a time from the paced upstream: the p50 of the time to the first text
    and of the whole stream (ms). Passed on as it comes, the first text arrives long before the
    end; a proxy that buffered would deliver both at once."""
    host, port, raw = _raw_request(url, f"paced/{MODEL}", True)
    connection = _Connection(host, port)
    first: list[float] = []
    whole: list[float] = []
    try:
        for _ in range(n):
            t0 = time.perf_counter()
            status, ttft = await connection.send(raw, t0)
            if status != 200 or ttft is None:
                raise RuntimeError(f"a paced stream through {url} failed: status {status}, first text {ttft}")
            whole.append((time.perf_counter() - t0) * 1000)
            first.append(ttft * 1000)
    finally:
        await connection.close()
    return {"n": n, "ttft_p50_ms": rounded(percentile(first, 0.5)), "total_p50_ms": rounded(percentile(whole, 0.5))}


def _logged_rows(url: str | None, data_dir: Path, expected: int) -> int:
    """Rows in the shared request log once the gateways have stopped (each writes what it
    holds on exit; a little grace for a spool replayed late)."""
    from conductor_core.store import RequestLog

    log = RequestLog(url, data_dir=data_dir)
    try:
        deadline = time.monotonic() + 15
        rows = log.count()
        while rows < expected and time.monotonic() < deadline:
            time.sleep(0.5)
            rows = log.count()
        return rows
    finally:
        log.close()


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()
    caddy_binary = shutil.which("caddy")
    if caddy_binary is None:
        if not args.quick:
            raise SystemExit(MISSING_CADDY)
        # The quick run (CI's benchmark test) goes on without it; the result file says why.
        payload = envelope(NAME, args, started, skipped=MISSING_CADDY, targets=[])
        report([f"proxy -> {write_result(args.out, NAME, payload)}", f"  skipped: {MISSING_CADDY}"])
        return payload
    caddy_version = subprocess.run([caddy_binary, "version"], capture_output=True, text=True).stdout.split(" ")[0]

    from conductor_core.store import RequestLog

    with (
        tempfile.TemporaryDirectory(prefix="conductor-bench-proxy-") as tmp,
        Upstreams([UPSTREAM_LATENCY_MS], reply=REPLY) as upstream,
        Upstreams([UPSTREAM_LATENCY_MS], reply=REPLY, chunk_delay_ms=PACED_CHUNK_DELAY_MS) as paced,
    ):
        data_dir = Path(tmp) / "gateway-data"  # one for both gateways, as the stack's shared volume
        with shared_request_log(data_dir) as (database_url, database):
            # The schema made once, before two gateways would both try on a fresh database.
            log = RequestLog(database_url, data_dir=data_dir)
            log.open()
            log.close()
            extra_env = {"CONDUCTOR_DATABASE_URL": database_url} if database_url else None
            gateways: list[GatewayProcess] = []
            caddy: CaddyProcess | None = None
            try:
                for _ in range(2):  # both start at once, then both must answer
                    gateways.append(
                        GatewayProcess(
                            {"up": upstream.url, "paced": paced.url},
                            data_dir,
                            api_key=KEY,
                            extra_env=extra_env,
                            wait=False,
                        )
                    )
                for gateway in gateways:
                    gateway.wait_ready()
                first, second = gateways
                hostports = [f"127.0.0.1:{gateway.port}" for gateway in gateways]
                caddy = CaddyProcess(caddy_binary, Path(tmp), hostports[:1], hostports)
                pids = {"gateway_1": first.pid, "gateway_2": second.pid, "upstream": upstream.pid}
                targets = {
                    "gateway_direct": (first.url, pids),
                    "proxy_1_gateway": (caddy.urls["proxy_1_gateway"], {**pids, "caddy": caddy.pid}),
                    "proxy_2_gateways": (caddy.urls["proxy_2_gateways"], {**pids, "caddy": caddy.pid}),
                }
                load_at_start = load()
                results = asyncio.run(_measure(targets, size))
                load_at_end = load()
                replicas = {
                    name: _replicas_seen(caddy.urls[name], size["replica_checks"])
                    for name in ("proxy_1_gateway", "proxy_2_gateways")
                }
                paced_streams = {
                    name: asyncio.run(_paced_streams(url, size["paced_streams"]))
                    for name, url in (("gateway_direct", first.url), *caddy.urls.items())
                }
                caddyfile = caddy.caddyfile.read_text()
            finally:
                if caddy is not None:
                    caddy.close()
                for gateway in gateways:
                    gateway.close()
            answered = results.pop("answered") + 2 * size["replica_checks"] + 3 * size["paced_streams"]
            rows = _logged_rows(database_url, data_dir, answered)

    errors = results.pop("errors")
    balanced = sorted(replicas["proxy_2_gateways"].values()) == [size["replica_checks"] // 2] * 2
    # Streamed as it comes: the first text within the first half of the stream (the deltas span ~0.4 s).
    buffered = [name for name, r in paced_streams.items() if r["ttft_p50_ms"] > r["total_p50_ms"] / 2]
    checks = {
        "errors": errors,
        "answered": answered,
        "request_log_rows": rows,
        "every_request_logged_once": rows == answered,
        "replicas_seen": replicas,
        "round_robin_even": balanced,
        "paced_streams": paced_streams,
        "streamed_as_it_comes": not buffered,
    }
    failed = [
        what
        for what, bad in (
            (f"{errors} request(s) failed", errors != 0),
            (f"the request log holds {rows} rows for {answered} answers", rows != answered),
            (f"through 2 gateways, one at a time, the answers came from {replicas['proxy_2_gateways']}", not balanced),
            (f"paced streams arrived whole, not as they came, through {buffered}: {paced_streams}", bool(buffered)),
        )
        if bad
    ]
    payload = envelope(
        NAME,
        args,
        started,
        config={
            **size,
            "concurrency": CONCURRENCY,
            "upstream_latency_ms": UPSTREAM_LATENCY_MS,
            "paced_chunk_delay_ms": PACED_CHUNK_DELAY_MS,
            "reply_words": len(REPLY.split()),
            "gateways": "python -m gateway, one uvicorn process each on its own port, access log off",
            "request_log": database,
            "proxy": f"caddy {caddy_version} (Debian), the gateway site of docker/team/Caddyfile on loopback",
            "caddyfile": caddyfile,
            "load_generator": "bench_gateway_load's: asyncio, one keep-alive HTTP/1.1 connection per worker, "
            "in this process",
            "cores_shared_by": "the load generator, Caddy, the gateways, the upstream and PostgreSQL",
        },
        load_average={"start": load_at_start, "end": load_at_end},
        checks=checks,
        failed_checks=failed,
        **results,
        targets=[],
    )
    out = write_result(args.out, NAME, payload)
    lines = [f"proxy -> {out}  (load average {load_at_start} -> {load_at_end})"]
    for mode in ("non_streaming", "streaming"):
        section = results[mode]
        lines.append(f"  {mode}:")
        for name in CONFIGS:
            r = section[name]
            cpu = r["cpu_ms_per_request"]
            lines.append(
                f"    {name:<17} {r['requests_per_s']:>7} req/s  p50 {r['latency_ms']['p50']} ms "
                f"p95 {r['latency_ms']['p95']} ms  CPU ms/req gateways {cpu['gateways']} caddy {cpu.get('caddy', '-')} "
                f"load generator {cpu['load_generator']}  errors {r['errors']}"
            )
        lines.append(f"    {section['comparison']}")
    lines.append(f"  answered {answered}, request log rows {rows}, through 2 gateways one at a time: {replicas}")
    lines.append(f"  paced streams (first text / whole, p50 ms): {paced_streams}")
    lines.extend(f"  CHECK FAILED: {what}" for what in failed)
    report(lines)
    if failed:
        raise SystemExit(1)
    return payload


if __name__ == "__main__":
    main()
