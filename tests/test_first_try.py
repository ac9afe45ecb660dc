"""AUTO's first-try deadline (conductor_core/routing/first_try.py): a provider with no recent
success gets a short time for its first token while others remain to fall back to.

The policy is checked alone (pure), then through the router: an OpenAI-compatible loopback
endpoint that hangs until released (the real openai SDK over HTTP) is left for the next
candidate once the deadline passes, the missed deadline is logged as a timeout against it and
its call is cancelled; a provider that answered recently, the last candidate and a provider
named in the request get no deadline. Nothing here measures time: each case is decided by
who answered and what was recorded.
"""

from __future__ import annotations

import threading
import time

import pytest

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.errors import ProviderTimeoutError
from conductor_core.models import AttemptRecord, ChatMessage, ChatRequest, RoutingPolicy, StatusNotice, StreamDone
from conductor_core.router import Conductor
from conductor_core.routing.first_try import with_first_try_deadlines
from conductor_core.routing.ranking import Candidate
from conductor_core.testing.fakes import Reply, ScriptedProvider
from conductor_core.testing.protocol_servers import Fault, OpenAIServer

DEADLINE_S = 1.0


def ask(provider: str = "auto", **kw) -> ChatRequest:
    return ChatRequest(provider=provider, messages=[ChatMessage(role="user", content="hello there")], **kw)


def candidates(*names: str) -> list[Candidate]:
    return [Candidate(ScriptedProvider(name), f"reason for {name}") for name in names]


# --- the policy, alone ------------------------------------------------------------------------


def test_only_unproven_candidates_with_others_behind_them_get_the_deadline():
    ranked = candidates("new", "proven", "failing", "last")
    given = with_first_try_deadlines(ranked, lambda name: name == "proven", 4.0)
    assert [(c.provider.name, c.first_try_s) for c in given] == [
        ("new", 4.0),
        ("proven", None),
        ("failing", 4.0),
        ("last", None),  # nothing to fall back to: the provider's own timeout
    ]
    assert [c.reason for c in given] == [c.reason for c in ranked]  # order and reasons untouched


def test_a_deadline_of_zero_turns_it_off_and_one_candidate_never_gets_one():
    assert all(c.first_try_s is None for c in with_first_try_deadlines(candidates("a", "b"), lambda _: False, 0))
    assert with_first_try_deadlines(candidates("only"), lambda _: False, 4.0)[0].first_try_s is None


# --- through the router, against a loopback endpoint that hangs ---------------------------------


@pytest.fixture
def endpoints():
    servers = {
        "hang": OpenAIServer(reply="The hanging endpoint, at last.", models=["hang-model"]).start(),
        "good": OpenAIServer(reply="The good endpoint answers.", models=["good-model"]).start(),
    }
    servers["hang"].script(*[Fault("hang", hang_s=600)] * 3)
    yield servers
    for server in servers.values():
        server.release()
        server.stop()


@pytest.fixture
def conductor(endpoints, tmp_path):
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=tmp_path,
        max_retries=0,
        timeout_s=300,  # longer than the test's own timeout: only the deadline ends the hang
        first_try_timeout_s=DEADLINE_S,
        # "hang" first: with nothing known, AUTO tries providers in the order they are configured.
        endpoints={n: EndpointConfig(base_url=s.url, models=[f"{n}-model"]) for n, s in endpoints.items()},
    )
    made = Conductor(settings)
    yield made
    made.close()


def wait_for(check, what: str, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)
    return found


def without_the_hang(call, endpoints, timeout_s: float = 60.0):
    """`call()`'s result, which must come while the endpoint still hangs (a generous bound: the
    deadline is a second). Without the deadline AUTO would wait out the hang: fail then,
    not at the test's timeout."""
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(value=call()), daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        endpoints["hang"].release()  # let the call in flight end
        worker.join(30)
        raise AssertionError(f"AUTO was still waiting on the hanging endpoint after {timeout_s:g} s")
    return result["value"]


def missed_deadline(conductor: Conductor, endpoints) -> None:
    """What the hanging endpoint's first try left behind: a timeout in the log, counted against
    it, and its call cancelled (the server saw the client go away)."""
    conductor.log.flush()
    [record] = conductor.log.records(provider="hang")
    assert record.status == "error" and record.error_type == "timeout"
    assert "first-try deadline" in record.error_message and f"{DEADLINE_S:g} s" in record.error_message
    snapshot = conductor.metrics.snapshot("hang")
    assert snapshot.samples == 1 and snapshot.success_rate == 0.0
    # No call runs on at the endpoint: it saw the client go away (or, on a busy machine, the call was
    # given up before it was even sent).
    wait_for(lambda: endpoints["hang"].in_flight == 0, "the hanging call cancelled")
    assert all(r.get("disconnected") for r in endpoints["hang"].requests)


@pytest.mark.timeout(120)
def test_a_stream_falls_back_when_an_untried_endpoint_hangs(conductor, endpoints):
    events = without_the_hang(lambda: list(conductor.stream(ask())), endpoints)
    notices = [e.message for e in events if isinstance(e, StatusNotice)]
    assert notices == ["hang failed: trying good"]
    done = events[-1]
    assert isinstance(done, StreamDone) and done.response.content == "The good endpoint answers."
    assert done.response.metadata.provider == "good"
    [attempt] = done.response.routing.attempts
    assert (attempt.provider, attempt.ok, attempt.error_type) == ("hang", False, "timeout")
    missed_deadline(conductor, endpoints)


@pytest.mark.timeout(120)
def test_a_non_streamed_request_falls_back_too(conductor, endpoints):
    response = without_the_hang(lambda: conductor.chat(ask()), endpoints)
    assert response.metadata.provider == "good" and response.content == "The good endpoint answers."
    assert [(a.provider, a.error_type) for a in response.routing.attempts] == [("hang", "timeout")]
    missed_deadline(conductor, endpoints)
    # The first try was streamed to watch for its first token; the fallback answered whole.
    records = {r.provider: r for r in conductor.log.records()}
    assert records["hang"].streamed and records["good"].status == "ok"


@pytest.mark.timeout(120)
def test_a_provider_named_in_the_request_waits_for_its_own_timeout(endpoints, tmp_path):
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=tmp_path,
        max_retries=0,
        timeout_s=2.0,
        first_try_timeout_s=DEADLINE_S,
        endpoints={n: EndpointConfig(base_url=s.url, models=[f"{n}-model"]) for n, s in endpoints.items()},
    )
    named = Conductor(settings)
    try:
        with pytest.raises(ProviderTimeoutError) as raised:
            list(named.stream(ask("hang")))
        assert "first-try" not in raised.value.message  # the provider's own timeout, not AUTO's deadline
    finally:
        named.close()


# --- who gets no deadline, with scripted providers --------------------------------------------------


@pytest.fixture
def make(tmp_path):
    made: list[Conductor] = []

    def build(*providers, **settings) -> Conductor:
        values = {"first_try_timeout_s": 0.2, "max_retries": 0, **settings}
        conductor = Conductor(
            load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, **values),
            extra_providers=list(providers),
        )
        made.append(conductor)
        return conductor

    yield build
    for conductor in made:
        conductor.close()


def _ok(provider: str, latency_ms: float) -> AttemptRecord:
    return AttemptRecord(request_id="r", provider=provider, status="ok", latency_ms=latency_ms, output_tokens=10)


def test_a_provider_that_answered_recently_gets_its_full_time(make):
    slow_start = ScriptedProvider("proven").script(Reply(text="proven, after a while", latency_s=1.0))
    other = ScriptedProvider("other")
    conductor = make(slow_start, other)
    for provider, ms in (("proven", 10.0), ("other", 500.0)):  # "proven" ranks first under `fastest`
        conductor.metrics.record(_ok(provider, ms))
    response = conductor.chat(ask(policy=RoutingPolicy.fastest))
    assert response.metadata.provider == "proven" and response.routing.attempts == []
    assert other.calls == []


def test_the_last_candidate_gets_its_full_time(make):
    lonely = ScriptedProvider("lonely").script(Reply(text="alone, after a while", latency_s=1.0))
    conductor = make(lonely)
    assert conductor.chat(ask()).content == "alone, after a while"


def test_without_a_deadline_auto_waits_for_the_first_candidate(make):
    first = ScriptedProvider("first").script(Reply(text="first, after a while", latency_s=1.0))
    second = ScriptedProvider("second")
    conductor = make(first, second, first_try_timeout_s=0)
    assert conductor.chat(ask()).metadata.provider == "first"
    assert second.calls == []
