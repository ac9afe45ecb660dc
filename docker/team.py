"""`make team-test`: the replicated stack (docker-compose.team.yml) checked as a team would use it,
from the host. docker/team.sh builds the images and calls this with the compose command:

    python docker/team.py test [--no-worker] -- docker compose -p PROJECT -f ... -f ...

It starts the upstreams (the project's loopback protocol servers: an OpenAI and an Anthropic one,
reachable from the containers through a relay on the Docker bridge), brings the stack up with the
gateways pointed at them (docker/team/test.yml), then checks, each step printing what it saw:

1. both gateways share their routing state through Redis (`/status` routing_state.mode "shared");
2. AUTO (fastest) on gateway 2 picks the provider that gateway 1's traffic showed faster, before
   gateway 2 has sent either a request, and says so in its route reason;
3. a breaker opened by failures through gateway 1 is open on gateway 2, which never called the
   failing upstream and refuses with circuit_open; after the upstream recovers, one probe closes
   it on both;
4. with Redis stopped both gateways keep answering and say "local"; started again, "shared";
5. through the proxy: the gateways in turn (round robin); the playgrounds sticky (a cookie keeps a
   browser on one replica); the playground's page in Chromium, its websocket through the proxy;
6. in Chromium through the proxy, one browser held to each playground: a run started on playground
   1's Experiments page is answered by the workers and shown progressing on playground 2's page; a
   worker killed (`docker kill`) while it holds a cell, every cell is still stored exactly once; Stop
   on playground 2's page stops the next run in the workers.

Gateway 2's reads of Redis leave no trace outside its process, so the test watches Redis itself
(`redis-cli MONITOR`: every command, in Redis's order, with the client's address). Step 2 sends
gateway 2's first request only once gateway 2 has read gateway 1's latencies back (without sharing,
that request would explore a provider it has no history for, and say so).

Timing: "open on gateway 2 within 1 s" is not asserted against the wall clock (a busy CI machine
would make that flaky). It is measured on Redis's clock and printed: from gateway 1's script call
that tripped the breaker to gateway 2's next read of it (which can only answer "open"), next to how
often gateway 2 reads it. What is asserted is that gateway 2, which never saw a failure, reads it,
shows it open and refuses without calling the upstream (generous deadlines);
tests/test_shared_state.py asserts the bound in-process, by counting the state thread's reads (at
most two, 0.2 s apart).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shlex
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python docker/team.py` from the checkout
    sys.path.insert(0, str(ROOT))

import smoke  # noqa: E402 - docker/smoke.py: the browser and URL helpers the smoke test uses

from conductor_core.testing.protocol_servers import AnthropicServer, OpenAIServer, ProtocolServer  # noqa: E402
from tests import browser_support  # noqa: E402 - waiting for the playground's reruns, as the browser tests do

SmokeFailure, check = smoke.SmokeFailure, smoke.check
UPSTREAM_KEY = "team-test-upstream-key"
PREFIX = "conductor:"  # the keys' prefix in Redis (CONDUCTOR_REDIS_PREFIX's default)
SLOW_S = 0.4  # the OpenAI upstream's latency; the Anthropic one answers at once
DEADLINE_S = 120.0  # for every state the stack must reach (the machine is shared and busy)


def say(message: str) -> None:
    print(message, flush=True)


def until(probe: Callable[[], Any], what: str, timeout_s: float = DEADLINE_S, every_s: float = 0.1) -> Any:
    """Poll `probe` until it returns something truthy; that value."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except (OSError, SmokeFailure) as exc:
            last = exc
        else:
            if last:
                return last
        time.sleep(every_s)
    raise SmokeFailure(f"timed out after {timeout_s:g} s waiting for {what} (last: {last!r})")


# --- the upstreams, reachable from the containers -----------------------------------------------


class Relay:
    """A TCP relay from `host`:(a free port) to a loopback server: the protocol servers listen
    on 127.0.0.1 only, the containers reach the host at the Docker bridge's address."""

    def __init__(self, host: str, target_port: int) -> None:
        self.host, self.target_port, self.port = host, target_port, 0
        self._loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True, name=f"relay:{target_port}").start()
        check(started.wait(10) and self.port, f"the relay to 127.0.0.1:{target_port} did not start on {host}")

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._serve, self.host, 0))
        self.port = server.sockets[0].getsockname()[1]
        started.set()
        self._loop.run_forever()

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter) -> None:
        try:
            upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            client_w.close()
            return

        async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            try:
                while data := await reader.read(65536):
                    writer.write(data)
                    await writer.drain()
            except OSError:
                pass
            finally:
                writer.close()

        await asyncio.gather(pipe(client_r, upstream_w), pipe(upstream_r, client_w))


def bridge_address(docker: str) -> str:
    """The host's address on Docker's default bridge: what `host-gateway` resolves to in a container."""
    out = subprocess.run(
        [docker, "network", "inspect", "bridge", "-f", "{{range .IPAM.Config}}{{.Gateway}} {{end}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    check(out, "Docker's default bridge has no gateway address")
    return out[0]


def parse_monitor_line(line: str) -> tuple[float, str, list[str]] | None:
    """One line of `redis-cli MONITOR` as (Redis time, client address, command words, the
    command lower-cased); None for what is not a command ("OK", a value shlex cannot read)."""
    # 1701965470.123456 [0 172.18.0.5:41234] "LRANGE" "conductor:metrics:anthropic" "0" "-1"
    stamp, _, rest = line.partition(" [")
    client, _, words = rest.partition("] ")
    try:
        parts = shlex.split(words)
        name = parts[0].lower()
        # A script sent whole (EVAL) reads like one sent by its hash: numkeys, then the keys.
        parts[0] = "evalsha" if name == "eval" else name
        return float(stamp), client.split(" ")[-1].rsplit(":", 1)[0], parts
    except (ValueError, IndexError):
        return None


class RedisMonitor:
    """Every command Redis runs, in its order, with its client's address: `redis-cli MONITOR`
    in the Redis container. How the test sees what a gateway has read from Redis (the state
    thread's reads leave no other trace outside the process)."""

    def __init__(self, docker: str, container: str) -> None:
        self._process = subprocess.Popen(
            [docker, "exec", container, "redis-cli", "monitor"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # "Server closed the connection" when step 4 stops Redis: expected
            text=True,
        )
        self.lines: list[tuple[float, str, list[str]]] = []  # (Redis time, client address, command words)
        self._ready = threading.Event()  # redis-cli printed "OK": monitoring
        threading.Thread(target=self._read, daemon=True, name="redis-monitor").start()
        check(self._ready.wait(DEADLINE_S), "redis-cli MONITOR did not start")

    def _read(self) -> None:
        assert self._process.stdout is not None
        for line in self._process.stdout:
            self._ready.set()
            parsed = parse_monitor_line(line)
            if parsed is not None:
                self.lines.append(parsed)

    def commands(self, client: str | None = None, name: str | None = None, key: str | None = None):
        """The lines (time, client, words) of `client` running `name` on `key`, in Redis's order."""
        return [
            (i, line)
            for i, line in enumerate(list(self.lines))
            if (client is None or line[1] == client)
            and (name is None or line[2][:1] == [name])
            and (key is None or key in line[2][1:4])
        ]


def container_address(docker: str, container: str) -> str:
    return subprocess.run(
        [docker, "inspect", "-f", "{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", container],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()


def generations(server: ProtocolServer) -> int:
    return sum(1 for r in server.requests if "/models" not in r["path"])


# --- the gateways ------------------------------------------------------------------------------


class Gateway:
    def __init__(self, name: str, url: str, key: str, address: str = "") -> None:
        import openai

        self.name, self.url, self.key = name, url, key
        self.address = address  # in the compose network: how Redis's MONITOR names its connections
        self.client = openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=60)

    def status(self) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.url}/status", headers={"Authorization": f"Bearer {self.key}"})
        with urllib.request.urlopen(request, timeout=10) as answer:
            return json.load(answer)

    def mode(self) -> str:
        return self.status()["routing_state"]["mode"]

    def breaker(self, provider: str) -> str:
        return self.status()["providers"][provider]["reliability"]["breaker"]

    def chat(self, model: str, **extra: Any) -> tuple[str, dict[str, str]]:
        """One answer: (the text, the response's x-conductor-* headers)."""
        raw = self.client.chat.completions.with_raw_response.create(
            model=model, messages=[{"role": "user", "content": "hello"}], max_tokens=8, extra_body=extra or None
        )
        reply = raw.parse()
        headers = {k: v for k, v in raw.headers.items() if k.startswith("x-conductor")}
        check(reply.choices and reply.choices[0].message.content, f"{self.name}: an empty answer from {model}")
        return reply.choices[0].message.content, headers

    def refusal(self, model: str) -> tuple[int, str]:
        """A request that must fail: (HTTP status, the error's code)."""
        import openai

        try:
            self.chat(model)
        except openai.APIStatusError as exc:
            return exc.status_code, str(exc.code)  # error.code: Conductor's kind of error
        raise SmokeFailure(f"{self.name} answered {model} when it should have refused")


# --- the checks ----------------------------------------------------------------------------------


def check_shared(gateways: list[Gateway]) -> None:
    for gw in gateways:
        until(lambda gw=gw: gw.mode() == "shared", f"{gw.name} to share its routing state through Redis")
        backend = gw.status()["routing_state"]["backend"]
        check(gw.key not in json.dumps(gw.status()), f"{gw.name}'s /status shows its key")
        say(f"  {gw.name}: routing_state shared ({backend})")


def check_auto(one: Gateway, two: Gateway, fast: ProtocolServer, monitor: RedisMonitor) -> None:
    before = generations(fast)
    for _ in range(5):  # gateway 1's traffic only: gateway 2 has called neither provider
        one.chat("openai")
        one.chat("anthropic")
    check(generations(fast) - before == 5, "gateway 1's requests did not all reach the fast upstream")

    # Gateway 2's state thread reads a provider's latencies back when they change. Wait until it
    # has read them after gateway 1's last entry landed, so its first AUTO request ranks on them
    # (without sharing, that request would explore: "no history yet").
    def read_by_two() -> bool:
        for provider in ("openai", "anthropic"):
            key = f"{PREFIX}metrics:{provider}"
            pushes = monitor.commands(name="lpush", key=key)
            if sum(len(words) - 2 for _, (_, _, words) in pushes) < 5:
                return False
            if not any(i > pushes[-1][0] for i, _ in monitor.commands(two.address, "lrange", key)):
                return False
        return True

    until(read_by_two, "gateway 2 to read gateway 1's latencies from Redis")
    _, headers = two.chat("auto", policy="fastest")
    provider, reason = headers.get("x-conductor-provider"), headers.get("x-conductor-route-reason", "")
    check(provider == "anthropic", f"AUTO on gateway 2 chose {provider!r} ({reason}), not the faster anthropic")
    check("fastest" in reason and "no history" not in reason, f"AUTO's reason is not the shared latency: {reason!r}")
    say(f"  AUTO (fastest) on gateway 2, its first request, chose anthropic: {reason!r}")


def check_breaker(
    one: Gateway, two: Gateway, failing: ProtocolServer, failures: int, monitor: RedisMonitor
) -> dict[str, float]:
    calls_at_start = generations(failing)
    failing.set_down(True)
    for _ in range(failures):
        status, kind = one.refusal("openai")
        check(status >= 500, f"gateway 1 answered a failing upstream with HTTP {status} ({kind})")
    until(lambda: one.breaker("openai") == "open", "gateway 1's openai breaker to open")
    until(lambda: two.breaker("openai") == "open", "gateway 2's openai breaker to open (shared)", every_s=0.05)

    # When it spread, on Redis's clock: gateway 1's last verdict (the script call that tripped it,
    # two keys) to gateway 2's next read of that breaker (which can only have answered "open").
    key = f"{PREFIX}breaker:openai"
    verdicts = [(i, line) for i, line in monitor.commands(one.address, "evalsha", key) if line[2][2] == "2"]
    check(verdicts, "no breaker verdict from gateway 1 in Redis")
    trip_index, (trip_time, _, _) = verdicts[-1]
    reads = [line[0] for i, line in monitor.commands(two.address, "evalsha", key) if i > trip_index]
    check(reads, "gateway 2 shows the breaker open without having read it from Redis")
    spread_ms = (reads[0] - trip_time) * 1000
    before = [line[0] for i, line in monitor.commands(two.address, "evalsha", key) if i < trip_index][-20:]
    gaps = sorted(b - a for a, b in zip(before, before[1:], strict=False))
    poll_ms = gaps[len(gaps) // 2] * 1000 if gaps else float("nan")
    say(
        f"  open on gateway 2: its first read of the breaker after gateway 1 tripped it came {spread_ms:.0f} ms later "
        f"(Redis clock; gateway 2 reads it every {poll_ms:.0f} ms, median)"
    )
    calls_before = generations(failing)
    status, kind = two.refusal("openai")
    check((status, kind) == (503, "circuit_open"), f"gateway 2 answered HTTP {status} {kind}, not 503 circuit_open")
    check(generations(failing) == calls_before, "gateway 2 called the upstream its shared breaker holds open")
    check(
        calls_before - calls_at_start == failures,
        f"the failing upstream got {calls_before - calls_at_start} calls, not {failures}",
    )
    say("  gateway 2 refuses openai with 503 circuit_open without calling it")

    failing.set_down(False)
    recovered = time.monotonic()

    def probe_through_either() -> bool:  # the cooldown ends; whichever replica holds the probe answers
        for gw in (one, two):
            try:
                gw.chat("openai")
                return True
            except Exception:  # noqa: BLE001 - circuit_open until the probe: poll on
                pass
        return False

    until(probe_through_either, "a probe to close the openai breaker", every_s=0.5)
    for gw in (one, two):
        until(lambda gw=gw: gw.breaker("openai") == "closed", f"{gw.name}'s openai breaker to close")
    say(f"  after the upstream recovered: closed on both ({time.monotonic() - recovered:.1f} s, cooldown included)")
    return {"breaker spread ms (Redis clock)": round(spread_ms), "gateway 2 read interval ms": round(poll_ms)}


def check_redis_outage(one: Gateway, two: Gateway, docker: str, container: str) -> None:
    subprocess.run([docker, "stop", container], check=True, capture_output=True)
    for gw in (one, two):
        until(lambda gw=gw: gw.mode() == "local", f"{gw.name} to say its routing state is local")
        detail = gw.status()["routing_state"]["detail"]
        gw.chat("anthropic")
        say(f"  Redis stopped: {gw.name} answers, routing_state local ({detail})")
    subprocess.run([docker, "start", container], check=True, capture_output=True)
    for gw in (one, two):
        until(lambda gw=gw: gw.mode() == "shared", f"{gw.name} to share its state again")
        gw.chat("anthropic")
    say("  Redis started again: both gateways shared")


def replica_of(url: str, cookie: str | None = None) -> tuple[str, str | None]:
    """(the replica the proxy sent a request to, the sticky cookie it set)."""
    request = urllib.request.Request(url, headers={"Cookie": cookie} if cookie else {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        set_cookie = answer.headers.get("Set-Cookie")
        return answer.headers["X-Conductor-Replica"], set_cookie.split(";", 1)[0] if set_cookie else None


def check_proxy(proxy_gateway: Gateway, proxy_playground: str) -> None:
    served = {proxy_gateway.chat("anthropic")[1].get("x-conductor-provider") for _ in range(4)}
    check(served == {"anthropic"}, f"answers through the proxy: {served}")
    gateways = {replica_of(f"{proxy_gateway.url}/health")[0] for _ in range(6)}
    check(gateways == {"gateway-1", "gateway-2"}, f"the proxy sent gateway requests to {gateways}, not to both")
    say(f"  gateways through the proxy: answered, round robin over {sorted(gateways)}")

    health = f"{proxy_playground}/_stcore/health"
    fresh = {replica_of(health)[0] for _ in range(20)}  # no cookie: the proxy picks at random
    check(fresh == {"playground-1", "playground-2"}, f"new browsers went to {fresh} only")
    replica, cookie = replica_of(health)
    check(cookie and cookie.startswith("conductor_replica="), f"the proxy set no sticky cookie: {cookie!r}")
    kept = {replica_of(health, cookie)[0] for _ in range(10)}
    check(kept == {replica}, f"a browser with the cookie for {replica} went to {kept}")
    say(f"  playgrounds: new browsers spread over {sorted(fresh)}; with its cookie one stays on {replica}")

    manager, browser = smoke._browser()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 960})
        sockets: list[str] = []
        page.on("websocket", lambda ws: sockets.append(ws.url))
        page.goto(proxy_playground)
        # The page is drawn by the app over Streamlit's websocket: the heading means it is connected.
        page.get_by_role("heading", name="Playground", exact=True).wait_for(timeout=120_000)
        page.get_by_test_id("stChatInput").wait_for(timeout=60_000)
        smoke._no_error_on_page(page)
        check(any("/_stcore/stream" in url for url in sockets), f"no Streamlit websocket through the proxy: {sockets}")
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        check("conductor_replica" in cookies, f"the browser holds no sticky cookie: {sorted(cookies)}")
        say(f"  the playground through the proxy renders in Chromium, websocket {sockets[0]}")
    finally:
        browser.close()
        manager.stop()


# --- the run ---------------------------------------------------------------------------------------


# --- 6. experiments on the workers --------------------------------------------------------------

# Run inside playground 1's container: the experiment, stored as the page stores one (its settings:
# PostgreSQL, CONDUCTOR_EXPERIMENT_RUNNER=jobs, the test's upstreams). Its runs start from the page.
_CREATE_EXPERIMENT = """
import sys
from conductor_core.router import Conductor
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.variants import Variant
rows, name = int(sys.argv[1]), sys.argv[2]
conductor = Conductor()
store = ExperimentStore(conductor.log)
data = "country,expected\\n" + "".join(f"country {i},Paris\\n" for i in range(rows))
variants = [Variant(provider="openai", temperature=0.0), Variant(provider="openai", temperature=1.0)]
print(store.create(name, "{{country}}", read_dataset(data), variants).id)
conductor.close()
"""


def in_container(compose: list[str], service: str, script: str, *args: str) -> str:
    result = subprocess.run(
        [*compose, "exec", "-T", service, "python", "-c", script, *args], capture_output=True, text=True
    )
    check(result.returncode == 0, f"python in {service} failed: {result.stdout}{result.stderr}")
    return result.stdout.strip().splitlines()[-1]


def psql(compose: list[str], sql: str) -> str:
    result = subprocess.run(
        [*compose, "exec", "-T", "postgres", "psql", "-U", "conductor", "-d", "conductor", "-tAc", sql],
        capture_output=True,
        text=True,
    )
    check(result.returncode == 0, f"psql failed: {result.stderr}")
    return result.stdout.strip()


def page_on(browser: Any, proxy_playground: str, replica: str) -> Any:
    """A browser page whose sticky cookie holds it to `replica`: new browsers (contexts) are
    spread at random over the playgrounds; the first that lands on `replica` is kept."""
    for _ in range(40):
        context = browser.new_context(viewport={"width": 1440, "height": 960})
        answer = context.request.get(f"{proxy_playground}/_stcore/health")
        if answer.headers.get("x-conductor-replica") == replica:
            return context.new_page()  # the context's cookie jar holds the proxy's cookie
        context.close()
    raise SmokeFailure(f"40 new browsers and none went to {replica}")


def open_experiment(page: Any, url: str) -> None:
    page.goto(url)
    page.get_by_role("heading", name="Experiments", exact=True).wait_for(timeout=120_000)
    page.get_by_role("button", name="Re-run").wait_for(timeout=120_000)
    browser_support.wait_idle(page, 120_000)


def start_run_on(page: Any, number: int) -> None:
    """Re-run → Start run N, as a person starts one (the configured calls at once per provider)."""
    page.get_by_role("button", name="Re-run").click()
    page.get_by_role("button", name=f"Start run {number}").click()


def progress_text(page: Any) -> str:
    bar = page.get_by_test_id("stProgress")
    return bar.inner_text() if bar.count() else ""


def check_workers(compose: list[str], docker: str, upstream: OpenAIServer, proxy_playground: str) -> dict[str, Any]:
    """In Chromium, through the proxy: a run started on playground 1's page is answered by the
    workers, shown progressing on playground 2's page, survives `docker kill` of a worker holding
    a cell with every cell stored once, and Stop on playground 2's page stops the next run."""
    workers = subprocess.run([*compose, "ps", "-q", "worker"], capture_output=True, text=True, check=True)
    containers = workers.stdout.split()
    check(len(containers) == 2, f"expected two worker containers, found {containers}")
    experiment_id = in_container(compose, "playground-1", _CREATE_EXPERIMENT, "6", "workers")
    url = f"{proxy_playground}/experiments?experiment={experiment_id}"
    runs_sql = f"SELECT id, status FROM experiment_runs WHERE experiment_id = '{experiment_id}' ORDER BY number"

    def runs() -> list[tuple[str, str]]:
        return [(line.split("|")[0], line.split("|")[1]) for line in psql(compose, runs_sql).splitlines() if line]

    manager, browser = smoke._browser()
    try:
        one = page_on(browser, proxy_playground, "playground-1")
        two = page_on(browser, proxy_playground, "playground-2")
        say(f"experiment {experiment_id} (12 cells); two browsers, held by the proxy to playground 1 and 2")

        upstream.reset()
        upstream.hold()  # every call waits: the test decides when cells finish
        open_experiment(one, url)
        start_run_on(one, 1)
        # One cell at once per worker (test.yml): two calls held means each worker holds one.
        until(lambda: upstream.held == 2, "each worker to hold one cell upstream")
        run_id = runs()[0][0]
        say(f"run 1 ({run_id}) started on playground 1's page; each worker holds a cell upstream")

        open_experiment(two, f"{url}&run={run_id}")
        seen = until(
            lambda: "2 in flight" in (text := progress_text(two)) and text, "playground 2's page to show the run"
        )
        check("of 12 answers" in seen, f"playground 2's page shows {seen!r}")
        check(two.get_by_text("Waiting for a worker").count() == 0, "playground 2's page waits for a worker")
        say(f"playground 2's page: {seen!r}")

        subprocess.run([docker, "kill", containers[0]], capture_output=True, check=True)
        say("killed one worker (docker kill) while it held a cell")
        upstream.release()
        two.get_by_text("Run 1 completed").wait_for(timeout=240_000)
        say("playground 2's page: 'Run 1 completed'")
        cells_sql = f"SELECT count(*), count(DISTINCT (row_index, variant_index)) FROM experiment_cells WHERE run_id = '{run_id}'"
        stored, distinct = psql(compose, cells_sql).split("|")
        check(stored == distinct == "12", f"{stored} cells stored for 12 ({distinct} distinct)")
        ok = psql(compose, f"SELECT count(*) FROM experiment_cells WHERE run_id = '{run_id}' AND status = 'ok'")
        check(ok == "12", f"{ok} of 12 cells answered")
        # Twelve answers, and the call the killed worker had open (answered again by the other). The
        # pages' model lists are requests to the upstream too: only chat calls count.
        calls = sum(1 for r in upstream.requests if r["method"] == "POST")
        check(calls >= 13, f"the upstream saw {calls} calls for 12 cells and a kill")
        logs = subprocess.run([*compose, "logs", "--no-color", "worker"], capture_output=True, text=True).stdout
        put_back = logs.count("stopped beating is back in the queue")
        say(
            f"completed: 12 cells stored once each; the upstream saw {calls} chat calls (and "
            f"{upstream.request_count - calls} model lists); {put_back} cells put back by the stalled-worker check"
        )

        upstream.hold()
        open_experiment(one, url)
        start_run_on(one, 2)
        until(lambda: upstream.held >= 1, "run 2's first cell held upstream")
        stopped_id = runs()[-1][0]
        open_experiment(two, f"{url}&run={stopped_id}")
        two.get_by_role("button", name="Stop", exact=True).click()
        upstream.release()
        two.get_by_text("Run 2 was stopped").wait_for(timeout=240_000)
        status = dict(runs())[stopped_id]
        check(status == "stopped", f"the run stopped from playground 2 ended {status}")
        cancelled = psql(
            compose, f"SELECT count(*) FROM experiment_cells WHERE run_id = '{stopped_id}' AND status = 'cancelled'"
        )
        check(int(cancelled) > 0, "no cell was cancelled by the Stop")
        say(f"Stop on playground 2's page: run 2 stopped there and in the workers, {cancelled} cells cancelled")
    finally:
        browser.close()
        manager.stop()
    return {"worker_run_calls": calls}


def compose_url(compose: list[str], service: str, port: int) -> str:
    out = subprocess.run([*compose, "port", service, str(port)], capture_output=True, text=True, check=True).stdout
    return smoke.published(out)


def service_container(compose: list[str], service: str) -> str:
    found = subprocess.run([*compose, "ps", "-q", service], capture_output=True, text=True, check=True).stdout.split()
    check(len(found) == 1, f"expected one {service} container, found {found}")
    return found[0]


def run(compose: list[str], docker: str, worker: bool, timings: dict[str, float]) -> dict[str, Any]:
    key = os.environ.get("CONDUCTOR_API_KEY")
    check(key, "set CONDUCTOR_API_KEY to the gateways' key")
    failures = 3
    slow = OpenAIServer(latency_s=SLOW_S, require_key=UPSTREAM_KEY).start()
    fast = AnthropicServer(require_key=UPSTREAM_KEY).start()
    bridge = bridge_address(docker)
    relays = {name: Relay(bridge, server.port) for name, server in (("openai", slow), ("anthropic", fast))}
    env = {
        **os.environ,
        "TEAM_TEST_UPSTREAM_KEY": UPSTREAM_KEY,
        "TEAM_TEST_OPENAI_BASE_URL": f"http://host.docker.internal:{relays['openai'].port}{slow.url_path}",
        "TEAM_TEST_ANTHROPIC_BASE_URL": f"http://host.docker.internal:{relays['anthropic'].port}{fast.url_path}",
        "TEAM_TEST_BREAKER_FAILURES": str(failures),
    }
    say(f"upstreams: openai (latency {SLOW_S} s) and anthropic on 127.0.0.1, relayed from {bridge}")

    started = time.monotonic()
    up = [*compose, "up", "-d", "--wait", "--wait-timeout", "600"]
    if not worker:
        up += ["--scale", "worker=0"]
    result = subprocess.run(up, env=env, capture_output=True, text=True)
    if result.returncode:
        raise SmokeFailure(f"the stack did not come up healthy:\n{result.stdout}{result.stderr}")
    timings["compose up --wait"] = round(time.monotonic() - started, 1)
    say(f"stack healthy after {timings['compose up --wait']} s")

    one, two = (
        Gateway(
            f"gateway {n}",
            compose_url(compose, f"gateway-{n}", 8000),
            key,
            container_address(docker, service_container(compose, f"gateway-{n}")),
        )
        for n in (1, 2)
    )
    redis = service_container(compose, "redis")
    proxy_gateway = Gateway("the proxy's gateway", compose_url(compose, "proxy", 8000), key)
    proxy_playground = compose_url(compose, "proxy", 8080)
    say(f"gateway 1 {one.url}, gateway 2 {two.url}, proxy: gateway {proxy_gateway.url}, playground {proxy_playground}")

    results: dict[str, Any] = {}
    monitor = RedisMonitor(docker, redis)  # ends when Redis is stopped (step 4)
    for title, step in (
        ("1. routing state shared", lambda: check_shared([one, two])),
        ("2. AUTO on gateway 2 ranks on gateway 1's traffic", lambda: check_auto(one, two, fast, monitor)),
        ("3. a breaker opened through gateway 1", lambda: check_breaker(one, two, slow, failures, monitor)),
        ("4. Redis stopped and started", lambda: check_redis_outage(one, two, docker, redis)),
        ("5. the proxy", lambda: check_proxy(proxy_gateway, proxy_playground)),
    ):
        say(f"\n-- {title}")
        t = time.monotonic()
        results.update(step() or {})
        timings[title] = round(time.monotonic() - t, 1)
    if worker:
        say("\n-- 6. experiments on the workers")
        t = time.monotonic()
        results.update(check_workers(compose, docker, slow, proxy_playground))
        timings["6. experiments on the workers"] = round(time.monotonic() - t, 1)
    logs = subprocess.run([*compose, "logs", "--no-color"], capture_output=True, text=True).stdout
    check(UPSTREAM_KEY not in logs and key not in logs, "a key appears in the stack's logs")
    if not worker:
        say(
            "\n-- 6. experiments on the workers: SKIPPED (conductor_core.worker is not in this tree; the worker "
            "service is in docker-compose.team.yml and runs once it is)"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["test"])
    parser.add_argument("--no-worker", action="store_true", help="conductor_core.worker is missing: scale it to 0")
    parser.add_argument("--docker", default="docker")
    argv = sys.argv[1:] if argv is None else argv
    split = argv.index("--") if "--" in argv else len(argv)
    args = parser.parse_args(argv[:split])
    compose = argv[split + 1 :]  # after --: the compose command, with its -p and -f
    if not compose:
        parser.error("give the compose command after --")
    timings: dict[str, float] = {}
    try:
        results = run(compose, args.docker, not args.no_worker, timings)
    except SmokeFailure as exc:
        print(f"FAILED: {exc}", file=sys.stderr)
        return 1
    say("\n-- timings (s): " + json.dumps(timings))
    say("-- measured: " + json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
