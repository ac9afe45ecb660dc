"""Load: the gateway started as users start it (`python -m gateway`, its own process) in
front of a loopback OpenAI server; 100 concurrent streams through the official async client
all complete, each recorded exactly once in the request log. The latency the gateway adds
over calling the loopback server directly is measured and printed, never asserted (speed is
for benchmarks, and this machine is shared)."""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
import openai
import pytest

from conductor_core.config import load_settings
from conductor_core.providers.spec import provider_specs, provider_variables
from conductor_core.store import RequestLog
from conductor_core.testing.protocol_servers import OpenAIServer

GPT = provider_specs()["openai"].default_model  # served by the loopback OpenAIServer

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
KEY = "sk-xWhqhUpaOnu-EysF0NmXnbWM"
REPLY = " ".join(f"word{i}" for i in range(30))
CONCURRENCY = 100
SEQUENTIAL = 30
# Variables that would point the gateway elsewhere or enable other providers.
_SCRUB = (
    *provider_variables(),  # every provider's key and base URL (their specs)
    "CONDUCTOR_API_KEY",
    "CONDUCTOR_DATABASE_URL",
    "CONDUCTOR_CONFIG",
)


@dataclass
class Sample:
    total_ms: float
    ttft_ms: float
    text: str
    request_id: str | None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process so far (Linux), to report the gateway's cost per stream."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _one(client: openai.AsyncOpenAI, model: str) -> Sample:
    t0 = time.perf_counter()
    ttft = None
    parts: list[str] = []
    request_id = None
    stream = await client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": "count to thirty"}], max_tokens=100, stream=True
    )
    async for chunk in stream:
        for choice in chunk.choices:
            if choice.delta.content:
                ttft = ttft or time.perf_counter()
                parts.append(choice.delta.content)
        extra = (chunk.model_extra or {}).get("conductor")
        if extra:
            request_id = extra["request_id"]
    end = time.perf_counter()
    return Sample((end - t0) * 1000, ((ttft or end) - t0) * 1000, "".join(parts), request_id)


async def _run(base_url: str, model: str, count: int, concurrency: int) -> list[Sample]:
    client = openai.AsyncOpenAI(base_url=base_url, api_key=KEY, max_retries=0, timeout=120)
    gate = asyncio.Semaphore(concurrency)

    async def guarded() -> Sample:
        async with gate:
            return await _one(client, model)

    try:
        return list(await asyncio.gather(*(guarded() for _ in range(count))))
    finally:
        await client.close()


def _summary(label: str, direct: list[Sample], gateway: list[Sample]) -> str:
    def line(name: str, pick) -> str:  # type: ignore[no-untyped-def]
        d = [pick(s) for s in direct]
        g = [pick(s) for s in gateway]
        return (
            f"  {name:>5}: direct p50 {_pct(d, 0.5):7.1f} p99 {_pct(d, 0.99):7.1f} | gateway p50 {_pct(g, 0.5):7.1f} "
            f"p99 {_pct(g, 0.99):7.1f} | added p50 {_pct(g, 0.5) - _pct(d, 0.5):+7.1f} p99 {_pct(g, 0.99) - _pct(d, 0.99):+7.1f} ms"
        )

    return "\n".join([label, line("total", lambda s: s.total_ms), line("ttft", lambda s: s.ttft_ms)])


def _logged(data_dir: Path, expected: int, wait_s: float = 30.0) -> list:
    """The gateway's request log once `expected` rows are in it (its writer batches for up to
    `RequestLog.linger_s` before other processes see them), or whatever is there after `wait_s`."""
    log = RequestLog.from_settings(load_settings(_env_file=None, data_dir=data_dir, database_url=None))
    try:
        deadline = time.monotonic() + wait_s
        while log.count() < expected and time.monotonic() < deadline:
            time.sleep(0.1)
        return log.records()
    finally:
        log.close()


@pytest.fixture
def gateway_process(tmp_path: Path, request: pytest.FixtureRequest):
    workers = getattr(request, "param", 1)
    upstream = OpenAIServer(reply=REPLY, require_key=KEY).start()
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
    env.update(
        {
            "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")])),
            "CONDUCTOR_GATEWAY_HOST": "127.0.0.1",
            "CONDUCTOR_GATEWAY_PORT": str(port),
            "CONDUCTOR_GATEWAY_LOG_LEVEL": "warning",
            "OPENAI_API_KEY": KEY,
            "OPENAI_BASE_URL": upstream.url,
            "CONDUCTOR_LOCAL_ENABLED": "false",
            "CONDUCTOR_DATA_DIR": str(tmp_path / "data"),
            "CONDUCTOR_MAX_RETRIES": "0",
            "CONDUCTOR_GATEWAY_WORKERS": str(workers),
            "CONDUCTOR_TIMEOUT_S": "600",  # a stream held at the upstream must not time out first
        }
    )
    # cwd: an empty folder, so no developer's .env or conductor.toml is read.
    proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=tmp_path, env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, "python -m gateway exited"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /health in 90 s"
            time.sleep(0.2)
        yield url, upstream, tmp_path / "data", proc.pid
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        upstream.stop()


def test_100_concurrent_streams_complete_and_each_is_logged_once(gateway_process) -> None:
    url, upstream, data_dir, pid = gateway_process
    gateway_v1, direct_v1 = f"{url}/v1", upstream.url

    # Warm both paths (connections, first-call imports), then measure one request at a time:
    # the cleanest view of what the gateway adds to a single call.
    upstream.latency_s, upstream.chunk_delay_s = 0.0, 0.001
    asyncio.run(_run(gateway_v1, f"openai/{GPT}", 5, 1))
    asyncio.run(_run(direct_v1, GPT, 5, 1))
    direct_seq = asyncio.run(_run(direct_v1, GPT, SEQUENTIAL, 1))
    gateway_seq = asyncio.run(_run(gateway_v1, f"openai/{GPT}", SEQUENTIAL, 1))

    # 100 at once, each held at the upstream until all of them are open there at the same
    # time: the gateway must not queue them (anyio's default thread limit of 40 would). No
    # clock decides it: were they queued, the count would stop short, whatever the speed.
    upstream.latency_s, upstream.chunk_delay_s = 0.0, 0.005
    upstream.hold()
    try:
        with ThreadPoolExecutor(max_workers=1) as pool:
            cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
            running = pool.submit(asyncio.run, _run(gateway_v1, f"openai/{GPT}", CONCURRENCY, CONCURRENCY))
            deadline = time.monotonic() + 120
            while upstream.held < CONCURRENCY:
                assert not running.done(), running.result()  # its error, if it failed
                assert time.monotonic() < deadline, (
                    f"only {upstream.held} streams were open upstream at once: the gateway queued them"
                )
                time.sleep(0.05)
            upstream.release()
            gateway_par = running.result(timeout=300)
            wall, cpu1 = time.perf_counter() - t0, _cpu_seconds(pid)
    finally:
        upstream.release()

    print()
    print(_summary(f"gateway load: {SEQUENTIAL} sequential streams (30 chunks each)", direct_seq, gateway_seq))
    cpu = f", gateway CPU {1000 * (cpu1 - cpu0) / CONCURRENCY:.1f} ms per stream" if cpu0 is not None and cpu1 else ""
    print(f"  {CONCURRENCY} concurrent through the gateway, all open upstream at once: wall {wall:.2f} s{cpu}")

    assert all(s.text == REPLY for s in direct_seq + gateway_seq + gateway_par)

    gateway_samples = gateway_seq + gateway_par
    ids = [s.request_id for s in gateway_samples]
    assert None not in ids and len(set(ids)) == len(ids)
    records = _logged(data_dir, 5 + SEQUENTIAL + CONCURRENCY)
    assert len(records) == 5 + SEQUENTIAL + CONCURRENCY  # the warm-up requests too; nothing else
    by_request = {r.request_id: r for r in records}
    assert len(by_request) == len(records), "a request was recorded more than once"
    assert set(ids) <= set(by_request)
    assert {(r.status, r.source, r.streamed, r.provider) for r in records} == {("ok", "gateway", True, "openai")}
    assert statistics.mean(r.output_tokens for r in records) == len(REPLY.split())


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(stat.parent.name))
        except (OSError, ValueError, IndexError):
            continue
    return found


@pytest.mark.parametrize("gateway_process", [2], indirect=True)
def test_two_worker_processes_serve_and_share_one_log(gateway_process) -> None:
    url, upstream, data_dir, pid = gateway_process
    # uvicorn's supervisor plus its workers (multiprocessing may add a resource tracker).
    workers = [
        child
        for child in _children(pid)
        if "multiprocessing.resource_tracker" not in Path(f"/proc/{child}/cmdline").read_text()
    ]
    assert len(workers) == 2, workers
    upstream.latency_s, upstream.chunk_delay_s = 0.2, 0.0
    samples = asyncio.run(_run(f"{url}/v1", f"openai/{GPT}", 40, 20))
    assert [s.text for s in samples] == [REPLY] * 40
    # Both processes write to one SQLite file: every request once, nothing lost.
    records = _logged(data_dir, 40)
    assert sorted(r.request_id for r in records) == sorted(s.request_id for s in samples)
