"""Routing state shared through a real Redis: two Conductors stand for two replicas (each
with its own request log and its own copy of the same providers), as two gateway processes
would be. A breaker one opens is open in the other within two of its reads; only one takes
the half-open probe; AUTO in one ranks on the other's traffic; with Redis gone each carries
on alone and says so, and what it learned alone is handed back when Redis returns."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from conductor_core.breaker import CircuitBreaker
from conductor_core.config import load_settings
from conductor_core.errors import ProviderError, ProviderUnavailableError
from conductor_core.models import BreakerState, ChatMessage, ChatRequest
from conductor_core.router import Conductor
from conductor_core.secrets import redact
from conductor_core.state import LocalRoutingState
from conductor_core.state.redis_state import RedisRoutingState
from conductor_core.testing.fakes import ScriptedProvider
from tests.redis_support import RedisServer

PASSWORD = "Zq7Wk2Xv9Rj4Lm8Tn3"  # never to be seen in /status, errors or logs


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path_factory.mktemp("redis"), password=PASSWORD).start()
    yield server
    server.stop()


@pytest.fixture
def replicas(redis_server, tmp_path, request) -> Iterator[Callable[..., Conductor]]:
    made: list[Conductor] = []
    prefix = f"t{abs(hash(request.node.nodeid)) % 10**8}:"  # one test's keys never meet another's

    def build(name: str, *providers: ScriptedProvider, **overrides) -> Conductor:
        if redis_server.process is None:
            redis_server.start()
        settings = load_settings(
            _env_file=None,
            local_enabled=False,
            data_dir=tmp_path / name,
            redis_url=redis_server.url,
            redis_prefix=prefix,
            **{"breaker_failures": 3, "breaker_cooldown_s": 30.0, "max_retries": 0, **overrides},
        )
        conductor = Conductor(settings, extra_providers=list(providers))
        assert shared(conductor).wait_connected(30), "the replica did not reach Redis"
        made.append(conductor)
        return conductor

    yield build
    for conductor in made:
        conductor.close()


def shared(conductor: Conductor) -> RedisRoutingState:
    state = conductor.core.routing_state
    assert isinstance(state, RedisRoutingState)
    return state


def until(check: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def ask(provider: str = "auto") -> ChatRequest:
    return ChatRequest(provider=provider, messages=[ChatMessage(role="user", content="hello")])


def down(name: str) -> ProviderError:
    return ProviderUnavailableError(f"{name} is down", provider=name, status_code=503)


def fail(conductor: Conductor, provider: str, times: int) -> None:
    for _ in range(times):
        with pytest.raises(ProviderError):
            conductor.chat(ask(provider))


def test_a_breaker_opened_by_one_replica_is_open_in_the_other_within_two_reads(replicas):
    one = replicas("one", ScriptedProvider("flaky").script(*(down("flaky") for _ in range(3))))
    two = replicas("two", ScriptedProvider("flaky"))
    two.core.breaker("flaky")  # the second replica knows the provider (as after its first request)
    fail(one, "flaky", 3)
    until(lambda: one.core.breaker("flaky").state is BreakerState.open, "replica one to open its breaker")
    reads_before = shared(two).reads
    until(lambda: two.core.breaker("flaky").state is BreakerState.open, "replica two to see the breaker open")
    assert shared(two).reads - reads_before <= 2  # reads are 0.2 s apart: well within 1 s
    assert two.core.breaker("flaky").retry_in_s() > 20  # the cooldown travels with it
    with pytest.raises(ProviderError) as refused:
        two.chat(ask("flaky"))
    assert refused.value.type == "circuit_open"
    assert two.core.registry.get("flaky").calls == []  # replica two never called it


def test_failures_seen_by_two_replicas_add_up_to_one_trip(replicas):
    one = replicas("one", ScriptedProvider("flaky").script(down("flaky"), down("flaky")))
    two = replicas("two", ScriptedProvider("flaky").script(down("flaky")))
    fail(one, "flaky", 2)
    fail(two, "flaky", 1)  # the third consecutive failure, counted across both
    for replica in (one, two):
        until(lambda replica=replica: replica.core.breaker("flaky").state is BreakerState.open, "both open")
        assert replica.core.breaker("flaky").trips == 1


def test_one_replica_probes_after_the_cooldown_and_both_recover(replicas):
    one = replicas("one", ScriptedProvider("flaky").script(*(down("flaky") for _ in range(3))), breaker_cooldown_s=0.5)
    two = replicas("two", ScriptedProvider("flaky"), breaker_cooldown_s=0.5)
    two.core.breaker("flaky")
    fail(one, "flaky", 3)
    breakers = [one.core.breaker("flaky"), two.core.breaker("flaky")]
    until(lambda: all(b.state is BreakerState.half_open for b in breakers), "the cooldown to end everywhere")
    until(lambda: any(b.would_allow() for b in breakers), "one replica to be granted the probe")
    # Exactly one replica may probe; the other waits for its verdict.
    assert [b.would_allow() for b in breakers].count(True) == 1
    prober = one if breakers[0].would_allow() else two
    prober.chat(ask("flaky"))  # the provider answers again
    until(lambda: all(b.state is BreakerState.closed for b in breakers), "both replicas to close the breaker")
    two.chat(ask("flaky"))
    one.chat(ask("flaky"))


def test_a_failed_probe_opens_the_breaker_again_for_longer_everywhere(replicas):
    one = replicas("one", ScriptedProvider("flaky").script(*(down("flaky") for _ in range(4))), breaker_cooldown_s=0.5)
    two = replicas("two", ScriptedProvider("flaky").script(down("flaky")), breaker_cooldown_s=0.5)
    two.core.breaker("flaky")
    fail(one, "flaky", 3)
    breakers = [one.core.breaker("flaky"), two.core.breaker("flaky")]
    until(lambda: all(b.trips == 1 for b in breakers), "both replicas to see the trip")
    until(lambda: any(b.would_allow() for b in breakers), "one replica to be granted the probe")
    fail(one if breakers[0].would_allow() else two, "flaky", 1)
    for breaker in breakers:
        until(lambda breaker=breaker: breaker.state is BreakerState.open and breaker.trips == 2, "open again")
        assert 0.5 < breaker._cooldown_s <= 1.0  # doubled from 0.5 s


def test_auto_in_one_replica_ranks_on_the_traffic_another_served(replicas):
    def pair() -> list[ScriptedProvider]:
        return [ScriptedProvider("quick", latency_s=0.001), ScriptedProvider("sluggish", latency_s=0.2)]

    one = replicas("one", *pair())
    two = replicas("two", *pair())
    for _ in range(6):
        one.chat(ask("quick"))
        one.chat(ask("sluggish"))
    until(lambda: two.core.metrics.snapshot("sluggish").samples == 6, "replica two to read replica one's traffic")
    assert two.core.metrics.snapshot("quick").samples == 6
    [first, *_] = two.core.rank(ask())
    assert first.provider.name == "quick"
    assert two.chat(ask()).metadata.provider == "quick"


def test_without_redis_each_replica_routes_alone_says_so_and_hands_back_what_it_learned(replicas, redis_server):
    one = replicas("one", ScriptedProvider("flaky").script(*(down("flaky") for _ in range(3))), ScriptedProvider("ok"))
    two = replicas("two", ScriptedProvider("flaky"), ScriptedProvider("ok"))
    two.core.breaker("flaky")
    assert one.status().routing_state.mode == "shared"
    redis_server.stop()
    until(lambda: one.status().routing_state.mode == "local", "replica one to notice Redis is gone")
    status = one.status().routing_state
    assert status.detail and "unreachable" in status.detail and PASSWORD not in status.detail
    assert PASSWORD not in status.model_dump_json() and PASSWORD not in redact(redis_server.url)
    assert one.chat(ask("ok")).content  # still answering
    fail(one, "flaky", 3)  # trips alone
    assert one.core.breaker("flaky").state is BreakerState.open
    assert two.core.breaker("flaky").state is BreakerState.closed  # nobody told replica two yet
    redis_server.start()
    until(lambda: two.status().routing_state.mode == "shared", "replica two to reconnect", 90)
    until(lambda: two.core.breaker("flaky").state is BreakerState.open, "the breaker learned alone to be shared", 90)


def test_without_a_redis_url_nothing_changes(tmp_path):
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, max_retries=0)
    conductor = Conductor(settings, extra_providers=[ScriptedProvider("solo")])
    try:
        assert isinstance(conductor.core.routing_state, LocalRoutingState)
        assert type(conductor.core.breaker("solo")) is CircuitBreaker
        info = conductor.status().routing_state
        assert info.mode == "local" and info.backend is None
    finally:
        conductor.close()


def test_an_unreachable_redis_at_start_is_local_state_not_an_outage(tmp_path):
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=tmp_path,
        redis_url=f"redis://:{PASSWORD}@127.0.0.1:9/0",  # nothing listens on port 9
    )
    conductor = Conductor(settings, extra_providers=[ScriptedProvider("solo")])
    try:
        assert conductor.chat(ask("solo")).content
        until(lambda: conductor.status().routing_state.detail not in (None, "connecting"), "the first attempt")
        info = conductor.status().routing_state
        assert info.mode == "local" and info.backend == "redis://127.0.0.1:9"
        assert PASSWORD not in info.model_dump_json()
    finally:
        conductor.close()


def test_the_dashboard_says_whether_routing_state_is_shared_and_when_it_is_local(env, redis_server, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from tests.playground_fakes import CONDUCTORS

    if redis_server.process is None:
        redis_server.start()
    monkeypatch.setenv("CONDUCTOR_REDIS_URL", redis_server.url)
    at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "playground" / "app.py"), default_timeout=60)
    at.run()
    assert shared(CONDUCTORS[-1]).wait_connected(30)
    at.switch_page("views/dashboard.py").run()
    assert not at.exception, at.exception
    captions = [c.value.replace("\\", "") for c in at.caption if "shared with every replica" in c.value]
    assert captions and f"through redis://127.0.0.1:{redis_server.port}." in captions[0]
    assert not [w for w in at.warning if "Routing state is local" in w.value]
    redis_server.stop()
    until(lambda: CONDUCTORS[-1].status().routing_state.mode == "local", "the playground to notice Redis is gone")
    at.run()
    (warning,) = [w.value for w in at.warning if "Routing state is local" in w.value]
    assert "unreachable" in warning and "requests are still served" in warning
    page_text = " ".join(str(e.value) for e in [*at.caption, *at.warning, *at.markdown] if hasattr(e, "value"))
    assert PASSWORD not in page_text


def test_two_gateway_processes_share_a_breaker_and_keep_answering_without_redis(redis_server, tmp_path):
    """As deployed: `python -m gateway` twice, one Redis, the official openai client. A breaker
    opened through gateway one is open in gateway two's /status; with Redis gone both still
    answer and say their state is local."""
    import httpx
    import openai

    from conductor_core.testing.protocol_servers import OpenAIServer
    from tests.store_backends import Backend
    from tests.test_durability import GATEWAY_KEY, GPT, Gateway

    if redis_server.process is None:
        redis_server.start()
    backend = Backend("sqlite", None, tmp_path / "data")
    env = {
        "CONDUCTOR_REDIS_URL": redis_server.url,
        "CONDUCTOR_REDIS_PREFIX": f"gw{time.time_ns()}:",
        "CONDUCTOR_BREAKER_FAILURES": "3",
        "CONDUCTOR_BREAKER_COOLDOWN_S": "1",
    }
    with OpenAIServer() as upstream:
        gateways = [Gateway(backend, upstream, 1, tmp_path, env), Gateway(backend, upstream, 1, tmp_path, env)]
        try:
            one, two = (openai.OpenAI(base_url=f"{g.url}/v1", api_key=GATEWAY_KEY, max_retries=0) for g in gateways)

            def breaker(gateway: Gateway) -> str:
                status = httpx.get(f"{gateway.url}/status", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}).json()
                return status["providers"]["openai"]["reliability"]["breaker"]

            def routing_mode(gateway: Gateway) -> str:
                status = httpx.get(f"{gateway.url}/status", headers={"Authorization": f"Bearer {GATEWAY_KEY}"}).json()
                return status["routing_state"]["mode"]

            def ask(client: openai.OpenAI) -> str | None:
                answer = client.chat.completions.create(
                    model=f"openai/{GPT}", messages=[{"role": "user", "content": "hi"}], max_tokens=5
                )
                return answer.choices[0].message.content

            until(lambda: all(routing_mode(g) == "shared" for g in gateways), "both gateways to reach Redis")
            upstream.set_down(True)
            for _ in range(3):
                with pytest.raises(openai.APIStatusError):
                    ask(one)
            until(lambda: breaker(gateways[1]) == "open", "gateway two to show the breaker gateway one opened")
            served_before = upstream.request_count
            with pytest.raises(openai.APIStatusError) as refused:
                ask(two)
            assert refused.value.status_code == 503 and upstream.request_count == served_before  # never called
            upstream.set_down(False)
            until(lambda: breaker(gateways[0]) != "open" and breaker(gateways[1]) != "open", "the cooldown to end")

            def recovered() -> bool:
                for client in (one, two):  # the replica that holds the probe answers and closes it for both
                    try:
                        ask(client)
                    except openai.APIStatusError:
                        pass
                return all(breaker(g) == "closed" for g in gateways)

            until(recovered, "both gateways to close the breaker")
            assert ask(one) and ask(two)

            redis_server.stop()
            until(lambda: all(routing_mode(g) == "local" for g in gateways), "both gateways to say state is local")
            assert ask(one) and ask(two)
        finally:
            for gateway in gateways:
                gateway.stop()
