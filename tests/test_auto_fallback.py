"""AUTO's second path, streamed as the playground streams every answer: when the provider AUTO
chose first fails before any text, the answer comes from the next one, whatever the failure
(a wrong key, a rate limit, a timeout or a hang, an outage, a malformed answer, a stream cut
before its first token, a breaker that opened, a provider whose calls and queue are full). A
bad request is the request's fault: no fallback, the 400 comes back. And when every provider
is full, the caller gets a 503 with Retry-After, not a crash. (A model the provider does not
serve, a 404, is the provider's: AUTO falls back.)

Real SDKs over real HTTP: the first choice is each cloud provider in turn (openai, anthropic,
google-genai against loopback servers speaking their protocols), the fallback an OpenAI-
compatible endpoint. Nothing waits on the clock except where the failure is the wait itself
(a hang past a short timeout); the rest waits for states (a request held at the server, a
caller queued for a slot)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor

import openai
import pytest

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.errors import BadRequestError, ProviderError, ProviderUnavailableError
from conductor_core.models import (
    AttemptRecord,
    ChatMessage,
    ChatRequest,
    RoutingPolicy,
    StatusNotice,
    StreamDone,
    StreamStart,
    TextDelta,
)
from conductor_core.providers import build_provider
from conductor_core.router import Conductor
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer

FIRST_REPLY = "The first choice answered."
BACKUP_REPLY = "The backup answered instead."
KEY = "sk-ofvd5xkPG091J4cGQoLTGgNP"

# provider name -> (server class, settings field of its key, settings field of its base URL)
KINDS = {
    "openai": (OpenAIServer, "openai_api_key", "openai_base_url"),
    "anthropic": (AnthropicServer, "anthropic_api_key", "anthropic_base_url"),
    "gemini": (GeminiServer, "gemini_api_key", "gemini_base_url"),
}
NO_CLOUD_KEYS = {"openai_api_key": None, "anthropic_api_key": None, "gemini_api_key": None}


class Clock:
    """Breakers read it: it stands still, so an open breaker stays open for the test."""

    now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=list(KINDS), scope="module")
def kind(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def first(kind) -> Iterator:
    with KINDS[kind][0](reply=FIRST_REPLY) as server:
        yield server


@pytest.fixture(scope="module")
def backup() -> Iterator[OpenAIServer]:
    with OpenAIServer(reply=BACKUP_REPLY, models=["backup-1"]) as server:
        yield server


@pytest.fixture
def make(kind, first, backup, tmp_path) -> Iterator[Callable[..., Conductor]]:
    """A Conductor whose AUTO (policy `fastest`) tries `kind` first, then `backup`."""
    made: list[Conductor] = []
    first.reset()
    backup.reset()

    def build(*, timeout_s: float = 60.0, slots: int | None = None, **overrides) -> Conductor:
        _, key_field, url_field = KINDS[kind]
        # The first choice gets its own timeout (a hang test makes it short); the backup keeps 60 s.
        own = load_settings(_env_file=None, timeout_s=timeout_s, **{key_field: KEY, url_field: first.url})
        provider = build_provider(kind, own)
        if slots is not None:
            provider.max_concurrency = slots
        settings = load_settings(
            _env_file=None,
            **NO_CLOUD_KEYS,
            local_enabled=False,
            data_dir=tmp_path,
            endpoints={"backup": EndpointConfig(base_url=backup.url, models=["backup-1"])},
            timeout_s=60.0,
            **{"max_retries": 0, **overrides},
        )
        conductor = Conductor(settings, extra_providers=[provider], clock=Clock())
        for _ in range(10):  # a history in which the first choice is the fastest
            conductor.metrics.record(AttemptRecord(request_id="r", provider=kind, status="ok", latency_ms=10.0))
            conductor.metrics.record(AttemptRecord(request_id="r", provider="backup", status="ok", latency_ms=900.0))
        assert [c.provider.name for c in conductor.rank(ask(), RoutingPolicy.fastest, streaming=True)] == [
            kind,
            "backup",
        ]
        made.append(conductor)
        return conductor

    yield build
    first.release()
    for conductor in made:
        conductor.close()


def ask(provider: str = "auto") -> ChatRequest:
    return ChatRequest(
        provider=provider,
        policy=RoutingPolicy.fastest,
        messages=[ChatMessage(role="user", content="Which one answers?")],
        max_tokens=50,
    )


def until(check: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.01)


def in_background(work: Callable[[], object]) -> Future:
    pool = ThreadPoolExecutor(max_workers=1)
    future = pool.submit(work)
    pool.shutdown(wait=False)
    return future


def assert_served_by_backup(events: list, kind: str, error_types: set[str]) -> StreamDone:
    """Text only from the backup, a notice that says why, and the failed attempt listed."""
    notices = [e for e in events if isinstance(e, StatusNotice)]
    assert [n.message for n in notices] == [f"{kind} failed: trying backup"]
    [start] = [e for e in events if isinstance(e, StreamStart)]
    assert start.provider == "backup"
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == BACKUP_REPLY
    done = events[-1]
    assert isinstance(done, StreamDone), events[-1]
    assert done.response.metadata.provider == "backup" and done.response.content == BACKUP_REPLY
    [failed] = done.response.routing.attempts
    assert failed.provider == kind and not failed.ok and failed.error_type in error_types, failed
    assert done.response.routing.reason.startswith(f"{kind} failed, so the next in line")
    return done


# What each failure looks like on the wire, and the error type Conductor gives it.
FAILURES = {
    "wrong key (401)": (Fault("status", status=401, message="Invalid API key provided."), {"authentication"}),
    "rate limit (429, Retry-After)": (Fault("status", status=429, retry_after=7), {"rate_limit"}),
    "gateway timeout (504)": (Fault("status", status=504, message="upstream timed out"), {"timeout"}),
    "unavailable (503)": (Fault("status", status=503, message="overloaded"), {"unavailable"}),
    "malformed answer": (Fault("malformed"), {"unavailable", "stream_interrupted"}),
    "stream cut before the first token": (Fault("cut_before_first"), {"unavailable", "stream_interrupted"}),
}


@pytest.mark.parametrize("failure", list(FAILURES))
def test_a_stream_falls_back_when_the_first_choice_fails(make, kind, first, backup, failure):
    fault, error_types = FAILURES[failure]
    conductor = make()
    first.script(fault)
    events = list(conductor.stream(ask()))
    done = assert_served_by_backup(events, kind, error_types)
    assert first.request_count == 1 and backup.request_count == 1
    # Both attempts are in the request log, under the one request id.
    records = {r.provider: r for r in conductor.log.records()}
    assert records[kind].status == "error" and records[kind].error_type in error_types
    assert records["backup"].status == "ok" and records["backup"].answer == BACKUP_REPLY
    assert {r.request_id for r in records.values()} == {done.response.metadata.id}


def test_a_stream_falls_back_when_the_first_choice_hangs(make, kind, first, backup):
    """The one test that waits on a clock: the failure is the wait (past a 0.5 s timeout)."""
    conductor = make(timeout_s=0.5)
    first.script(Fault("hang", hang_s=120))
    events = list(conductor.stream(ask()))
    assert_served_by_backup(events, kind, {"timeout"})


def test_a_stream_falls_back_when_the_first_choice_is_full(make, kind, first, backup):
    """Its one slot is held by another caller and no slot frees while this one waits in its
    queue: busy (Conductor's own refusal, no call made), so the backup answers."""
    conductor = make(timeout_s=0.5, slots=1, bulkhead_queue=1)
    bulkhead = conductor.core.attempts.bulkhead(conductor.registry.get(kind))
    asyncio.run(bulkhead.acquire())  # the other caller's slot
    try:
        events = list(conductor.stream(ask()))
    finally:
        bulkhead.release()
    assert_served_by_backup(events, kind, {"busy"})
    assert first.request_count == 0
    assert [r.provider for r in conductor.log.records()] == ["backup"]  # no call, so no row for the refusal


def test_a_stream_falls_back_when_the_breaker_opens_while_it_waits(make, kind, first, backup):
    """A named request holds the first choice's only slot (held at the server) while an AUTO
    request waits in its queue; the named one fails, which opens the breaker (one failure
    trips it here): the waiting request is refused by the breaker (no call), and falls back."""
    conductor = make(slots=1, bulkhead_queue=1, breaker_failures=1)
    bulkhead = conductor.core.attempts.bulkhead(conductor.registry.get(kind))
    first.script(Fault("status", status=500, message="it broke"))
    first.hold()
    named = in_background(lambda: list(conductor.stream(ask(kind))))
    until(lambda: first.held == 1, "the named request held at the server")
    auto = in_background(lambda: list(conductor.stream(ask())))
    until(lambda: bulkhead.waiting == 1, "the AUTO request queued for the slot")
    first.release()
    with pytest.raises(ProviderUnavailableError):
        named.result(timeout=60)
    assert_served_by_backup(auto.result(timeout=60), kind, {"circuit_open"})
    assert first.request_count == 1


def test_an_open_breaker_is_not_tried_at_all(make, kind, first, backup):
    conductor = make(breaker_failures=1)
    first.script(Fault("status", status=503))
    with pytest.raises(ProviderError):
        list(conductor.stream(ask(kind)))
    events = list(conductor.stream(ask()))
    assert not any(isinstance(e, StatusNotice) for e in events)
    done = events[-1]
    assert isinstance(done, StreamDone) and done.response.metadata.provider == "backup"
    assert first.request_count == 1  # only the named request reached it


@pytest.mark.parametrize("streamed", [True, False])
def test_a_bad_request_does_not_fall_back(make, kind, first, backup, streamed):
    """The request must change (here: too long for the model): the provider's words come back
    as a bad request, and nothing more is sent anywhere."""
    conductor = make()
    first.script(Fault("status", status=400, message="This model's maximum context length is 8 tokens"))
    with pytest.raises(BadRequestError) as caught:
        if streamed:
            list(conductor.stream(ask()))
        else:
            conductor.chat(ask())
    assert "maximum context length" in caught.value.message and not caught.value.retryable
    assert [(a.provider, a.error_type) for a in caught.value.attempts] == [(kind, "bad_request")]
    assert first.request_count == 1 and backup.request_count == 0


@pytest.mark.parametrize("streamed", [True, False])
def test_a_model_the_first_choice_does_not_serve_falls_back(make, kind, first, backup, streamed):
    """The model the first choice is set up with is not served (retired or mistyped: a 404).
    AUTO named no model, so that is the provider's fault, not the request's: the backup answers."""
    conductor = make()
    first.models = ["another-model"]
    if streamed:
        assert_served_by_backup(list(conductor.stream(ask())), kind, {"bad_request"})
    else:
        response = conductor.chat(ask())
        assert response.metadata.provider == "backup" and response.content == BACKUP_REPLY
        [failed] = response.routing.attempts
        assert failed.provider == kind and failed.error_type == "bad_request"
    assert backup.request_count == 1


def test_a_bad_request_after_a_fallback_is_still_a_bad_request(make, kind, first, backup):
    conductor = make()
    first.script(Fault("status", status=401))
    backup.script(Fault("status", status=400, message="max_tokens is too large for backup-1"))
    with pytest.raises(BadRequestError) as caught:
        list(conductor.stream(ask()))
    assert "too large" in caught.value.message
    assert [(a.provider, a.error_type) for a in caught.value.attempts] == [
        (kind, "authentication"),
        ("backup", "bad_request"),
    ]


def test_every_provider_full_is_a_503_with_retry_after_at_the_gateway(make, kind, first, backup):
    """Each provider's only slot is taken by a named stream held at its server, and no queue:
    AUTO through the gateway (the openai client, streaming) gets 503, Retry-After and
    x-should-retry, and the held answers complete once released."""
    from gateway.main import create_app
    from tests.test_gateway import serve

    conductor = make(slots=1, bulkhead_queue=0, bulkhead_limit=1)
    for server in (first, backup):
        server.hold()
    held = [in_background(lambda name=name: list(conductor.stream(ask(name)))) for name in (kind, "backup")]
    until(lambda: first.held == 1 and backup.held == 1, "one call held at each provider")
    try:
        with serve(create_app(conductor)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=60)
            with pytest.raises(openai.InternalServerError) as caught:
                client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "anyone free?"}], stream=True
                )
    finally:
        first.release()
        backup.release()
    response = caught.value.response
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1" and response.headers["x-should-retry"] == "true"
    body = response.json()
    assert body["type"] == "no_provider_available" and body["retryable"] is True
    assert f"{kind} (busy)" in body["error"]["message"] and "backup (busy)" in body["error"]["message"]
    for future in held:
        assert isinstance(future.result(timeout=60)[-1], StreamDone)
    assert first.request_count == 1 and backup.request_count == 1  # AUTO's request reached neither


def test_every_provider_full_in_the_core_says_when_to_retry(make, kind, first, backup):
    conductor = make(slots=1, bulkhead_queue=0, bulkhead_limit=1)
    bulkheads = [conductor.core.attempts.bulkhead(conductor.registry.get(n)) for n in (kind, "backup")]
    for bulkhead in bulkheads:
        asyncio.run(bulkhead.acquire())
    try:
        for call in (lambda: list(conductor.stream(ask())), lambda: conductor.chat(ask())):
            with pytest.raises(ProviderError) as caught:
                call()
            assert caught.value.retryable and caught.value.retry_after == 1.0
            assert [a.error_type for a in caught.value.attempts] == ["busy", "busy"]
    finally:
        for bulkhead in bulkheads:
            bulkhead.release()
    assert first.request_count == 0 and backup.request_count == 0
