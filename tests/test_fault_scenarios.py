"""Fault scenarios over real HTTP: the openai SDK talking to loopback OpenAI-compatible servers
configured as named endpoints, with numbers asserted."""

from __future__ import annotations

import pytest

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.errors import ProviderError
from conductor_core.models import BreakerState, ChatMessage, ChatRequest, StatusNotice, StreamDone, StreamIncomplete
from conductor_core.router import Conductor
from conductor_core.testing.protocol_servers import Fault, OpenAIServer

pytestmark = pytest.mark.slow


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def ask(provider: str = "auto", **kw) -> ChatRequest:
    return ChatRequest(
        provider=provider, messages=[ChatMessage(role="user", content="status report please")], max_tokens=50, **kw
    )


def conductor_for(tmp_path, servers: dict[str, OpenAIServer], clock, sleeps, **overrides) -> Conductor:
    for name, srv in servers.items():
        srv.models = [f"{name}-model"]  # each server serves the model its endpoint names
    endpoints = {name: EndpointConfig(base_url=srv.url, models=srv.models) for name, srv in servers.items()}
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=tmp_path,
        endpoints=endpoints,
        timeout_s=60.0,  # no test here hangs: a busy machine must not turn a slow answer into a failure
        **{"breaker_failures": 5, "max_retries": 1, **overrides},
    )
    return Conductor(settings, clock=clock, sleep=sleeps.append)


def test_one_down_one_flaky_one_healthy_1000_auto_requests(tmp_path):
    clock, sleeps = Clock(), []
    with (
        OpenAIServer(reply="dead") as dead,
        OpenAIServer(reply="flaky", failure_rate=0.3, seed=3) as flaky,
        OpenAIServer(reply="healthy") as healthy,
    ):
        dead.set_down(True)
        conductor = conductor_for(tmp_path, {"dead": dead, "flaky": flaky, "healthy": healthy}, clock, sleeps)
        ok = 0
        served: dict[str, int] = {}
        for _ in range(1000):
            try:
                response = conductor.chat(ask())
            except ProviderError:
                continue
            ok += 1
            served[response.metadata.provider] = served.get(response.metadata.provider, 0) + 1

        assert ok >= 999
        threshold = conductor.settings.breaker_failures
        # The dead provider stopped receiving AUTO traffic within its breaker threshold.
        assert "dead" not in served and 1 <= dead.request_count <= threshold
        dead_auto = dead.request_count
        # Every attempt is in the log, failures included.
        records = conductor.log.records()
        assert len(records) == dead.request_count + flaky.request_count + healthy.request_count
        assert sum(r.status == "ok" for r in records) == ok

        # Asked for by name, it fails until its breaker opens at the threshold; then it gets nothing.
        breaker = conductor.breaker("dead")
        before = dead.request_count
        for _ in range(threshold):
            with pytest.raises(ProviderError):
                conductor.chat(ask("dead"))
        assert breaker.state == BreakerState.open and breaker.trips == 1
        assert dead.request_count - before <= threshold  # consecutive failures, counted across both
        sent = dead.request_count
        for _ in range(20):
            conductor.chat(ask())
        assert dead.request_count == sent

        # Recovery: the server comes back; after the cooldown AUTO sends it one probe, which closes it.
        dead.set_down(False)
        clock.now += conductor.settings.breaker_cooldown_s + 0.1
        assert breaker.state == BreakerState.half_open
        probe = conductor.chat(ask())
        assert probe.metadata.provider == "dead" and probe.routing.reason.startswith("probing dead")
        assert breaker.state == BreakerState.closed
        print(
            f"\n1000 AUTO requests: {ok} ok, served by {served}; dead got {dead_auto} AUTO requests, "
            f"flaky {flaky.request_count}, healthy {healthy.request_count}; breaker trips {breaker.trips}"
        )
        conductor.close()


def test_429_with_retry_after_is_waited_out_not_hammered(tmp_path):
    clock, sleeps = Clock(), []
    with OpenAIServer(reply="patience") as server:
        conductor = conductor_for(tmp_path, {"limited": server}, clock, sleeps, max_retries=3)
        server.script(Fault("status", status=429, retry_after=1.5))
        assert conductor.chat(ask("limited")).content == "patience"
        assert sleeps == [1.5] and server.request_count == 2
        conductor.close()


def test_stream_cut_before_first_token_falls_back(tmp_path):
    clock, sleeps = Clock(), []
    with OpenAIServer(reply="first") as first, OpenAIServer(reply="second answer") as second:
        conductor = conductor_for(tmp_path, {"first": first, "second": second}, clock, sleeps, max_retries=0)
        first.script(Fault("cut_before_first"))
        events = list(conductor.stream(ask()))
        assert any(isinstance(e, StatusNotice) for e in events)
        done = events[-1]
        assert isinstance(done, StreamDone) and done.response.metadata.provider == "second"
        assert done.response.content == "second answer"
        assert [a.provider for a in done.response.routing.attempts] == ["first"]
        conductor.close()


def test_stream_cut_after_first_token_is_incomplete_and_logged(tmp_path):
    clock, sleeps = Clock(), []
    with OpenAIServer(reply="one two three four five") as first, OpenAIServer(reply="unused") as second:
        conductor = conductor_for(tmp_path, {"first": first, "second": second}, clock, sleeps)
        first.script(Fault("cut"))
        events = list(conductor.stream(ask()))
        assert not any(isinstance(e, StreamDone) for e in events)
        incomplete = events[-1]
        assert isinstance(incomplete, StreamIncomplete) and incomplete.partial.content
        assert second.request_count == 0
        [record] = conductor.log.records()
        assert record.status == "incomplete" and record.provider == "first"
        assert record.answer == incomplete.partial.content
        conductor.close()
