"""kill -9 loses nothing: the gateway, started as users start it (`python -m gateway`), under
load from the official `openai` client against a loopback OpenAI server, is killed with
SIGKILL mid-load (every process of it at once), started again, and every request whose
response completed has its attempt in the request log exactly once. SQLite and PostgreSQL;
one worker process and two.

Only the gateway's public surface is used (the command, environment variables, HTTP), plus
the request log itself. A request is identified by a unique marker in its prompt, which the
log keeps (prompt logging is on by default).

How many completed requests were not in the database yet at the moment of the kill (so only
the spool had them) is printed: the writer batches for `linger_s`, so under load that is
usually a handful."""

from __future__ import annotations

import asyncio
import collections
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from sqlalchemy import create_engine, text

from conductor_core.providers.spec import provider_specs, provider_variables
from conductor_core.store import RequestLog
from conductor_core.store.writer import LogWriter
from conductor_core.testing.protocol_servers import OpenAIServer
from tests.store_backends import REPO_ROOT, Backend

GPT = provider_specs()["openai"].default_model  # served by the loopback OpenAIServer

pytestmark = pytest.mark.slow

UPSTREAM_KEY = "sk-oXoHq8StKhhdUZc04ZGgo66b"
GATEWAY_KEY = "hl1q5e8EZWgR6CvOW_h6N1Uk"
REPLY = " ".join(f"w{i}" for i in range(12))
CONCURRENCY = 24
KILL_AFTER = 60  # completed requests before the kill, at least...
# ...and this long after the first one. The gateway's writer wakes with the first attempt
# and commits once per `linger_s`: this aims halfway through a batch wait, when the most
# completed requests are in the spool and not yet in the database.
KILL_AT_S = 2.5 * LogWriter.linger_s
MARKER = re.compile(r"durability-[a-z0-9]+-\d+")
# Variables that would point the gateway elsewhere or enable other providers.
_SCRUB = (
    *provider_variables(),  # every provider's key and base URL (their specs)
    "CONDUCTOR_API_KEY",
    "CONDUCTOR_DATABASE_URL",
    "CONDUCTOR_CONFIG",
    "CONDUCTOR_DATA_DIR",
)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Gateway:
    """`python -m gateway` in its own process group, so SIGKILL reaches every worker at once."""

    def __init__(
        self, backend: Backend, upstream: OpenAIServer, workers: int, cwd: Path, extra_env: dict[str, str] | None = None
    ) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
                "CONDUCTOR_GATEWAY_HOST": "127.0.0.1",
                "CONDUCTOR_GATEWAY_PORT": str(self.port),
                "CONDUCTOR_GATEWAY_LOG_LEVEL": "warning",
                "CONDUCTOR_GATEWAY_WORKERS": str(workers),
                "CONDUCTOR_API_KEY": GATEWAY_KEY,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "OPENAI_BASE_URL": upstream.url,
                "CONDUCTOR_LOCAL_ENABLED": "false",
                "CONDUCTOR_DATA_DIR": str(backend.data_dir),
                "CONDUCTOR_MAX_RETRIES": "0",
            }
        )
        if backend.url:
            env["CONDUCTOR_DATABASE_URL"] = backend.url
        env.update(extra_env or {})
        # cwd: an empty folder, so no developer's .env or conductor.toml is read.
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway"], cwd=cwd, env=env, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, "python -m gateway exited"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /health in 90 s"
            time.sleep(0.2)

    def kill_9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill_9()
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)  # a worker left behind, if any
        except ProcessLookupError:
            pass


async def _one(client: openai.AsyncOpenAI, marker: str, stream: bool) -> bool:
    """True once the response is complete: the whole body, or a stream up to its finish."""
    messages = [{"role": "user", "content": marker}]
    if not stream:
        response = await client.chat.completions.create(model=f"openai/{GPT}", messages=messages, max_tokens=50)
        return response.choices[0].finish_reason is not None
    finished = False
    events = await client.chat.completions.create(model=f"openai/{GPT}", messages=messages, max_tokens=50, stream=True)
    async for chunk in events:
        finished = finished or any(choice.finish_reason for choice in chunk.choices)
    return finished


async def _load_then_kill(gateway: Gateway, tag: str) -> tuple[set[str], set[str], list[str]]:
    """Requests from CONCURRENCY clients, half of them streams; SIGKILL once KILL_AFTER have
    completed and KILL_AT_S has passed. Returns (sent, completed, errors before the kill)."""
    client = openai.AsyncOpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60)
    sent: set[str] = set()
    completed: set[str] = set()
    errors: list[str] = []
    killed = asyncio.Event()
    counter = iter(range(1_000_000))

    async def worker() -> None:
        while not killed.is_set():
            n = next(counter)
            marker = f"durability-{tag}-{n}"
            sent.add(marker)
            try:
                done = await _one(client, marker, stream=n % 2 == 0)
            except Exception as exc:  # noqa: BLE001 - after the kill, every request in flight fails
                if not killed.is_set():
                    errors.append(f"{type(exc).__name__}: {exc}")
                continue
            if done and not killed.is_set():
                completed.add(marker)

    async def killer() -> None:
        # On a clock of its own, not on a completion: responses bunch up right after each
        # of the gateway's commits, so killing on one would mostly kill just after a commit.
        while not completed:
            await asyncio.sleep(0.005)
        first_done = time.monotonic()
        while len(completed) < KILL_AFTER or time.monotonic() - first_done < KILL_AT_S:
            await asyncio.sleep(0.005)
        gateway.kill_9()  # synchronously, from the event loop: no completion is counted after it
        killed.set()

    try:
        await asyncio.wait_for(asyncio.gather(killer(), *(worker() for _ in range(CONCURRENCY))), timeout=180)
    finally:
        await client.close()
    return sent, completed, errors


def _markers_in_database(backend: Backend) -> collections.Counter[str]:
    """Markers of the attempts the database holds, read without RequestLog (which would take
    the dead gateway's spool over)."""
    engine = create_engine(backend.sqlalchemy_url)
    try:
        with engine.connect() as conn:
            prompts = conn.execute(text("SELECT prompt FROM attempts")).scalars().all()
    finally:
        engine.dispose()
    return collections.Counter(m for prompt in prompts for m in MARKER.findall(prompt or ""))


def _logged_markers(backend: Backend, expected: set[str], wait_s: float = 60.0) -> collections.Counter[str]:
    """Markers in the log once every expected one is there (the restarted gateway commits
    what it took over within a batch wait), or whatever is there after `wait_s`."""
    log = RequestLog(backend.url, data_dir=backend.data_dir)
    try:
        deadline = time.monotonic() + wait_s
        while True:
            found = collections.Counter(m for r in log.records() for m in MARKER.findall(r.prompt or ""))
            if expected <= set(found) or time.monotonic() > deadline:
                return found
            time.sleep(0.2)
    finally:
        log.close()


def _spool_lines(backend: Backend) -> int:
    return sum(path.read_bytes().count(b"\n") for path in (backend.data_dir / "spool").glob("*/*.spool"))


@pytest.mark.parametrize("workers", [1, 2], ids=["1-worker", "2-workers"])
def test_kill_9_mid_load_loses_no_completed_request(backend: Backend, workers: int, tmp_path: Path) -> None:
    upstream = OpenAIServer(reply=REPLY, require_key=UPSTREAM_KEY).start()
    upstream.latency_s, upstream.chunk_delay_s = 0.03, 0.002
    gateway = Gateway(backend, upstream, workers, tmp_path)
    restarted: Gateway | None = None
    try:
        sent, completed, errors = asyncio.run(_load_then_kill(gateway, "a"))
        assert not errors, errors[:5]
        assert len(completed) >= KILL_AFTER
        in_database = _markers_in_database(backend)
        only_spooled = completed - set(in_database)
        spooled_lines = _spool_lines(backend)
        print(
            f"\n{backend.name}, {workers} worker(s): {len(sent)} sent, {len(completed)} completed before the kill; "
            f"{len(only_spooled)} of them were not in the database yet ({spooled_lines} lines in the dead spools)"
        )
        assert spooled_lines >= len(only_spooled)  # what the database lacks, the spool has

        restarted = Gateway(backend, upstream, workers, tmp_path)  # takes the dead spools over at start
        client = openai.OpenAI(base_url=f"{restarted.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60)
        after = {f"durability-b-{n}" for n in range(5)}
        for marker in sorted(after):
            client.chat.completions.create(
                model=f"openai/{GPT}", messages=[{"role": "user", "content": marker}], max_tokens=20
            )
        client.close()

        logged = _logged_markers(backend, completed | after)
        missing = (completed | after) - set(logged)
        assert not missing, (
            f"{len(missing)} completed request(s) have no attempt in the log, e.g. {sorted(missing)[:5]}"
        )
        twice = {marker: n for marker, n in logged.items() if n > 1}
        assert not twice, f"recorded more than once: {dict(list(twice.items())[:5])}"
        assert set(logged) <= sent | after  # nothing else
    finally:
        for running in (gateway, restarted):
            if running is not None:
                running.stop()
        upstream.stop()
    # A gateway stopped gracefully writes what waits and gives its spool back.
    assert _spool_lines(backend) == 0
