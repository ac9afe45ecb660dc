"""The Conductor with scripted providers: routing choices and their reasons, retries, fallbacks,
breakers, compare fan-out, the request log, restarts and concurrency."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from conductor_core.config import load_settings
from conductor_core.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderError,
    ProviderUnavailableError,
    RateLimitError,
)
from conductor_core.models import (
    BreakerState,
    ChatMessage,
    ChatRequest,
    RoutingPolicy,
    StatusNotice,
    StreamDone,
    StreamIncomplete,
    StreamStart,
    Target,
    TextDelta,
    Vote,
)
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.testing.fakes import Reply, ScriptedProvider


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def sleeps():
    return []


@pytest.fixture
def make(tmp_path, clock, sleeps):
    made: list[Conductor] = []

    def build(*providers, **settings_overrides) -> Conductor:
        settings = load_settings(
            _env_file=None, local_enabled=False, data_dir=tmp_path, **{"breaker_failures": 3, **settings_overrides}
        )
        conductor = Conductor(settings, extra_providers=list(providers), clock=clock, sleep=sleeps.append)
        made.append(conductor)
        return conductor

    yield build
    for conductor in made:
        conductor.close()


def ask(provider: str = "auto", **kw) -> ChatRequest:
    return ChatRequest(provider=provider, messages=[ChatMessage(role="user", content="hello world")], **kw)


def warm(conductor: Conductor, provider: ScriptedProvider, n: int = 3) -> None:
    for _ in range(n):
        conductor.chat(ask(provider.name))


# --- manual routing, retries -------------------------------------------------------------


def test_manual_request_is_served_and_logged(make):
    a = ScriptedProvider("alpha", reply="Hi from alpha")
    conductor = make(a)
    response = conductor.chat(ask("alpha"))
    assert response.content == "Hi from alpha"
    assert response.routing.mode == "manual" and response.routing.reason == "chosen by you"
    [record] = conductor.log.records()
    assert (record.provider, record.status, record.route, record.request_id) == (
        "alpha",
        "ok",
        "manual",
        response.metadata.id,
    )
    assert record.prompt == "user: hello world" and record.answer == "Hi from alpha"


def test_retryable_error_is_retried_then_succeeds(make, sleeps):
    a = ScriptedProvider("alpha").script(ProviderUnavailableError("503", provider="alpha"), "second time lucky")
    conductor = make(a)
    assert conductor.chat(ask("alpha")).content == "second time lucky"
    assert len(sleeps) == 1 and 0 < sleeps[0] <= 4.0  # exponential backoff with jitter
    statuses = sorted(r.status for r in conductor.log.records())
    assert statuses == ["error", "ok"]


def test_retry_after_is_waited_out_not_hammered(make, sleeps):
    a = ScriptedProvider("alpha").script(RateLimitError("slow down", provider="alpha", retry_after=2.5), "ok now")
    conductor = make(a)
    assert conductor.chat(ask("alpha")).content == "ok now"
    assert sleeps == [2.5] and len(a.calls) == 2


def test_retries_are_bounded_in_count(make, sleeps):
    a = ScriptedProvider("alpha")
    a.down = True
    conductor = make(a, max_retries=2, breaker_failures=10)
    with pytest.raises(ProviderUnavailableError) as info:
        conductor.chat(ask("alpha"))
    assert len(a.calls) == 3 and len(sleeps) == 2
    assert len(info.value.attempts) == 3


def test_retries_are_bounded_in_time(make, sleeps):
    a = ScriptedProvider("alpha").script(
        *[RateLimitError("wait", provider="alpha", retry_after=100.0) for _ in range(3)]
    )
    conductor = make(a, max_retries=5, retry_budget_s=5.0)
    with pytest.raises(RateLimitError):
        conductor.chat(ask("alpha"))
    assert len(a.calls) == 1  # the server asked for longer than the whole budget: give up now


def test_backoff_grows_with_each_retry(make, sleeps):
    # The first attempt runs outside tenacity; the retries must still count it as attempt 1.
    a = ScriptedProvider("alpha").script(
        ProviderUnavailableError("503", provider="alpha"), ProviderUnavailableError("503", provider="alpha"), "third"
    )
    conductor = make(a, max_retries=2, breaker_failures=10)
    assert conductor.chat(ask("alpha")).content == "third"
    assert len(sleeps) == 2
    assert 0.2 <= sleeps[0] <= 0.4 and 0.4 <= sleeps[1] <= 0.6  # 0.2 * 2^(n-1) + up to 0.2 of jitter


def test_the_first_attempt_counts_against_the_retry_budget(make, sleeps):
    # The first attempt alone spends the budget (the provider sleeps that long before failing),
    # so there is no retry even though max_retries allows several.
    a = ScriptedProvider("alpha").script(
        Reply(error=ProviderUnavailableError("503", provider="alpha"), latency_s=0.5), "too late"
    )
    conductor = make(a, max_retries=3, retry_budget_s=0.5)
    with pytest.raises(ProviderUnavailableError):
        conductor.chat(ask("alpha"))
    assert len(a.calls) == 1 and sleeps == []


def test_a_stream_is_retried_before_any_text(make, sleeps):
    a = ScriptedProvider("alpha").script(
        RateLimitError("slow down", provider="alpha", retry_after=1.5), Reply(text="second time lucky")
    )
    conductor = make(a)
    events = list(conductor.stream(ask("alpha")))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "second time lucky"
    assert isinstance(events[-1], StreamDone) and sleeps == [1.5] and len(a.calls) == 2
    assert sorted(r.status for r in conductor.log.records()) == ["error", "ok"]


def test_a_stream_that_keeps_failing_before_text_stops_at_max_retries(make, sleeps):
    a = ScriptedProvider("alpha")
    a.down = True
    conductor = make(a, max_retries=2, breaker_failures=10)
    with pytest.raises(ProviderUnavailableError) as info:
        list(conductor.stream(ask("alpha")))
    assert len(a.calls) == 3 and len(sleeps) == 2 and len(info.value.attempts) == 3


def test_non_retryable_errors_are_not_retried(make, sleeps):
    a = ScriptedProvider("alpha").script(BadRequestError("prompt too long", provider="alpha"))
    conductor = make(a)
    with pytest.raises(BadRequestError):
        conductor.chat(ask("alpha"))
    assert len(a.calls) == 1 and sleeps == []


# --- AUTO ----------------------------------------------------------------------------------


def test_auto_explores_a_provider_with_no_history(make):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta")
    conductor = make(a, b)
    warm(conductor, a)
    response = conductor.chat(ask())
    assert response.metadata.provider == "beta"
    assert "no history yet" in response.routing.reason


def test_auto_fastest_picks_lowest_p50_and_says_why(make):
    fast, slow = ScriptedProvider("fast"), ScriptedProvider("slow")
    conductor = make(fast, slow)
    for provider, ms in ((fast, 40.0), (slow, 400.0)):
        for _ in range(5):
            conductor.metrics.record(_ok(provider.name, ms))
    response = conductor.chat(ask(policy=RoutingPolicy.fastest))
    assert response.metadata.provider == "fast"
    assert response.routing.reason == "fastest healthy provider: p50 latency 40 ms"


def test_auto_cheapest_picks_lowest_estimated_cost(make):
    pricey = ScriptedProvider("pricey", cost_per_token=0.001)
    cheap = ScriptedProvider("cheap", cost_per_token=0.000001)
    conductor = make(pricey, cheap)
    warm(conductor, pricey)
    warm(conductor, cheap)
    response = conductor.chat(ask(policy=RoutingPolicy.cheapest))
    assert response.metadata.provider == "cheap"
    assert response.routing.reason.startswith("cheapest healthy provider: est. $")


def test_auto_reliable_picks_highest_success_rate(make):
    shaky, solid = ScriptedProvider("shaky"), ScriptedProvider("solid")
    conductor = make(shaky, solid, breaker_failures=100, breaker_failure_rate=1.0)
    for i in range(10):
        conductor.metrics.record(_ok("solid", 100.0))
        conductor.metrics.record(_ok("shaky", 10.0) if i % 2 else _err("shaky"))
    response = conductor.chat(ask(policy=RoutingPolicy.reliable))
    assert response.metadata.provider == "solid"
    assert response.routing.reason == "most reliable healthy provider: 100% success"


def test_auto_falls_back_and_lists_the_attempts(make, sleeps):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta", reply="beta saves the day")
    a.down = True
    conductor = make(a, b, max_retries=0)
    response = conductor.chat(ask())
    assert response.metadata.provider == "beta" and response.content == "beta saves the day"
    assert [(x.provider, x.ok, x.error_type) for x in response.routing.attempts] == [("alpha", False, "unavailable")]
    assert response.routing.mode == "auto"
    assert (
        response.routing.reason
        == "alpha failed, so the next in line: no history yet for beta: trying it to learn its speed"
    )


def test_auto_falls_back_on_a_bad_key_too(make):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta")
    a.script(AuthenticationError("alpha rejected the API key: check ALPHA_KEY", provider="alpha"))
    conductor = make(a, b)
    assert conductor.chat(ask()).metadata.provider == "beta"


def test_auto_never_picks_an_unhealthy_provider_while_another_is_available(make):
    sick, well = ScriptedProvider("sick", healthy=False), ScriptedProvider("well")
    conductor = make(sick, well)
    conductor.health(refresh=True)
    for _ in range(5):
        assert conductor.chat(ask()).metadata.provider == "well"
    assert sick.calls == []


def test_auto_with_everything_failing_says_what_was_tried(make):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta")
    a.down = b.down = True
    conductor = make(a, b, max_retries=0)
    with pytest.raises(ProviderError) as info:
        conductor.chat(ask())
    assert "alpha" in info.value.message and "beta" in info.value.message
    assert {x.provider for x in info.value.attempts} == {"alpha", "beta"}


# --- breakers ---------------------------------------------------------------------------------


def test_breaker_opens_then_half_open_probe_closes_it(make, clock):
    a = ScriptedProvider("alpha")
    a.down = True
    conductor = make(a, max_retries=0, breaker_failures=3, breaker_cooldown_s=10.0)
    for _ in range(3):
        with pytest.raises(ProviderUnavailableError):
            conductor.chat(ask("alpha"))
    status = conductor.provider_status("alpha")
    assert status.reliability.breaker == BreakerState.open
    assert status.reliability.retry_in_s == pytest.approx(10.0)
    assert status.health.state.value == "circuit_open"
    # While open, requests fail fast and the provider sees no traffic.
    calls = len(a.calls)
    with pytest.raises(ProviderUnavailableError) as info:
        conductor.chat(ask("alpha"))
    assert "paused" in info.value.message and len(a.calls) == calls
    # After the cooldown one probe goes through; the provider has recovered, so it closes.
    a.down = False
    clock.now += 10.5
    assert conductor.breaker("alpha").state == BreakerState.half_open
    conductor.chat(ask("alpha"))
    assert conductor.breaker("alpha").state == BreakerState.closed


def test_breaker_cooldown_grows_when_the_probe_fails(make, clock):
    a = ScriptedProvider("alpha")
    a.down = True
    conductor = make(a, max_retries=0, breaker_failures=2, breaker_cooldown_s=10.0)
    for _ in range(2):
        with pytest.raises(ProviderError):
            conductor.chat(ask("alpha"))
    clock.now += 11
    with pytest.raises(ProviderError):
        conductor.chat(ask("alpha"))  # the probe fails
    assert conductor.breaker("alpha").retry_in_s() == pytest.approx(20.0)


def test_bad_requests_do_not_trip_the_breaker(make):
    a = ScriptedProvider("alpha").script(*[BadRequestError("bad", provider="alpha") for _ in range(5)])
    conductor = make(a, breaker_failures=2)
    for _ in range(5):
        with pytest.raises(BadRequestError):
            conductor.chat(ask("alpha"))
    assert conductor.breaker("alpha").state == BreakerState.closed


# --- streams ---------------------------------------------------------------------------------


def test_stream_emits_deltas_then_done_with_routing(make):
    a = ScriptedProvider("alpha", reply="one two three")
    conductor = make(a)
    events = list(conductor.stream(ask("alpha")))
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "one two three"
    done = events[-1]
    assert isinstance(done, StreamDone) and done.response.routing.reason == "chosen by you"
    [record] = conductor.log.records()
    assert record.streamed and record.status == "ok" and record.ttft_ms is not None


def test_stream_cut_before_first_token_falls_back(make):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta", reply="from beta")
    a.script(Reply(text="never shown", cut_after=0))
    conductor = make(a, b, max_retries=0)
    events = list(conductor.stream(ask()))
    assert any(isinstance(e, StatusNotice) and "trying beta" in e.message for e in events)
    done = events[-1]
    assert isinstance(done, StreamDone) and done.response.metadata.provider == "beta"
    assert [x.provider for x in done.response.routing.attempts] == ["alpha"]
    assert done.response.routing.reason.startswith("alpha failed, so the next in line")


def test_stream_cut_after_text_is_incomplete_never_success(make):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta")
    a.script(Reply(text="one two three four", cut_after=2))
    conductor = make(a, b, max_retries=2)
    events = list(conductor.stream(ask()))
    assert not any(isinstance(e, StreamDone) for e in events)
    last = events[-1]
    assert isinstance(last, StreamIncomplete)
    assert last.partial.content == "one two" and last.error.provider == "alpha"
    assert b.calls == [] and len(a.calls) == 1  # no retry, no fallback once text was shown
    [record] = conductor.log.records()
    assert record.status == "incomplete" and record.answer == "one two"


def test_abandoned_stream_is_recorded_not_lost(make):
    a = ScriptedProvider("alpha", reply="a b c d e f")
    conductor = make(a)
    stream = conductor.stream(ask("alpha"))
    next(stream)
    stream.close()  # a Streamlit rerun abandons the generator like this
    [record] = conductor.log.records()
    assert record.status == "incomplete" and record.error_type == "cancelled"
    assert conductor.breaker("alpha").state == BreakerState.closed


# --- compare -------------------------------------------------------------------------------


class BarrierProvider(ScriptedProvider):
    """Refuses to answer until every target of the compare is in flight at once."""

    def __init__(self, name: str, barrier: asyncio.Barrier) -> None:
        super().__init__(name, reply=f"answer from {name}")
        self.barrier = barrier

    async def _stream(self, request, model):
        # Times out (and the target fails) if the calls ran one by one.
        await asyncio.wait_for(self.barrier.wait(), 10)
        async for piece in super()._stream(request, model):
            yield piece


def test_compare_runs_targets_concurrently_and_tags_events(make):
    barrier = asyncio.Barrier(3)
    providers = [BarrierProvider(n, barrier) for n in ("alpha", "beta", "gamma")]
    conductor = make(*providers)
    targets = [Target(provider=p.name) for p in providers]
    events = list(conductor.compare(ask(), targets))
    done = {e.index: e.event.response for e in events if isinstance(e.event, StreamDone)}
    assert set(done) == {0, 1, 2}
    assert [done[i].content for i in range(3)] == ["answer from alpha", "answer from beta", "answer from gamma"]
    group = {e.group_id for e in events}
    assert len(group) == 1
    records = conductor.log.records()
    assert len(records) == 3 and {r.route for r in records} == {"compare"} and {r.group_id for r in records} == group
    assert conductor.record_vote(Vote(group_id=group.pop(), targets=[t.label for t in targets], winner="beta"))
    assert conductor.log.votes()[0].winner == "beta"


def test_compare_same_provider_two_models_and_a_failing_target(make):
    a = ScriptedProvider("alpha", models=["small", "large"])
    b = ScriptedProvider("beta")
    b.down = True
    conductor = make(a, b, max_retries=0)
    targets = [
        Target(provider="alpha", model="small"),
        Target(provider="alpha", model="large"),
        Target(provider="beta"),
    ]
    events = list(conductor.compare(ask(), targets))
    done = {e.index: e.event.response.metadata.model for e in events if isinstance(e.event, StreamDone)}
    assert done == {0: "small", 1: "large"}
    [failed] = [e for e in events if e.error]
    assert failed.index == 2 and failed.error.provider == "beta" and failed.error.retryable


def test_compare_takes_two_to_four_targets(make):
    conductor = make(ScriptedProvider("alpha"))
    with pytest.raises(BadRequestError):
        list(conductor.compare(ask(), [Target(provider="alpha")]))
    with pytest.raises(BadRequestError):
        list(conductor.compare(ask(), [Target(provider="alpha")] * 5))


# --- requests and their attempts in the log -----------------------------------------------------


class HeldProvider(ScriptedProvider):
    """Answers at once, except while `held`: a call then waits (holding its bulkhead slot)
    until the test lets it go; `entered` says a call is waiting."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.held = threading.Event()
        self.entered = threading.Event()

    async def _complete(self, request, model):
        while self.held.is_set():
            self.entered.set()
            await asyncio.sleep(0.01)
        return await super()._complete(request, model)


def test_each_logged_attempt_knows_its_place_in_its_request(make):
    """0 for a request's first logged attempt, then 1, 2... for its retries and fallbacks. A
    call refused before it was made (a full bulkhead) is not logged, so it takes no place."""
    alpha, beta = HeldProvider("alpha"), ScriptedProvider("beta")
    conductor = make(alpha, beta, max_retries=1, bulkhead_limit=1, bulkhead_queue=1, breaker_failures=10)
    alpha.timeout_s = 0.2  # how long a call waits for a slot before it is refused
    for provider, ms in ((alpha, 40.0), (beta, 400.0)):  # AUTO's fastest is alpha
        for _ in range(5):
            conductor.metrics.record(_ok(provider.name, ms))

    plain = conductor.chat(ask("beta"))
    beta.script(ProviderUnavailableError("503", provider="beta"), "second time lucky")
    retried = conductor.chat(ask("beta"))
    # alpha's one slot taken by a call in flight: AUTO's next request waits for it, is refused
    # (not logged, but listed in its routing) and falls back to beta, its first logged attempt.
    alpha.held.set()
    holder = threading.Thread(target=conductor.chat, args=(ask("alpha"),))
    holder.start()
    assert alpha.entered.wait(30)
    refused_first = conductor.chat(ask(policy=RoutingPolicy.fastest))
    alpha.held.clear()
    holder.join(30)
    assert [(a.provider, a.error_type) for a in refused_first.routing.attempts][0] == ("alpha", "busy")
    alpha.script(AuthenticationError("alpha rejected the key", provider="alpha"))
    fallen_back = [e for e in conductor.stream(ask(policy=RoutingPolicy.fastest)) if isinstance(e, StreamDone)][0]

    logged: dict[str, list[tuple[str, str, int | None]]] = {}
    for record in sorted(conductor.log.records(), key=lambda r: (r.created_at, r.attempt_index or 0)):
        logged.setdefault(record.request_id, []).append((record.provider, record.status, record.attempt_index))
    assert logged[plain.metadata.id] == [("beta", "ok", 0)]
    assert logged[retried.metadata.id] == [("beta", "error", 0), ("beta", "ok", 1)]
    assert logged[fallen_back.response.metadata.id] == [("alpha", "error", 0), ("beta", "ok", 1)]
    assert logged[refused_first.metadata.id] == [("beta", "ok", 0)]
    # Five requests (the held one included), seven attempts: counted apart.
    totals = conductor.status().totals
    assert (totals.total_requests, totals.total_attempts, totals.successful_requests) == (5, 7, 5)
    assert conductor.log.usage_totals() == totals
    assert sum(p.usage.total_requests for p in conductor.status().providers.values()) == 7  # calls per provider


# --- status, restart, concurrency, a broken log ---------------------------------------------------


def test_status_reports_every_provider_and_unconfigured_ones(make):
    conductor = make(ScriptedProvider("alpha"))
    warm(conductor, conductor.registry.get("alpha"), 4)
    status = conductor.status()
    alpha = status.providers["alpha"]
    assert alpha.usage.total_requests == 4 and alpha.usage.successful_requests == 4
    assert alpha.performance.p50_latency_ms is not None and alpha.reliability.success_rate == 1.0
    gemini = status.providers["gemini"]
    assert gemini.health.state.value == "not_configured" and "GEMINI_API_KEY" in gemini.health.detail
    assert status.status == "healthy" and status.totals.total_requests == 4 and status.uptime_s >= 0


def test_restart_restores_status_from_the_log(tmp_path, clock):
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path)
    first = Conductor(settings, extra_providers=[ScriptedProvider("alpha"), ScriptedProvider("beta")], clock=clock)
    first.registry.get("beta").down = True
    for _ in range(6):
        first.chat(ask("alpha"))
    with pytest.raises(ProviderError):
        first.chat(ask("beta"))
    before = first.status()
    first.close()
    second = Conductor(settings, extra_providers=[ScriptedProvider("alpha"), ScriptedProvider("beta")], clock=clock)
    after = second.status()
    for name in ("alpha", "beta"):
        assert after.providers[name].usage == before.providers[name].usage
        assert after.providers[name].performance == before.providers[name].performance
        assert after.providers[name].reliability.success_rate == before.providers[name].reliability.success_rate
    # Routing remembers too: alpha has history, so AUTO does not treat it as new.
    assert second.metrics.snapshot("alpha").samples == 6
    second.close()


def test_twenty_threads_fifty_requests_each(make):
    a, b = ScriptedProvider("alpha"), ScriptedProvider("beta")
    b.script(*[ProviderUnavailableError("flaky", provider="beta") for _ in range(15)])
    conductor = make(a, b, max_retries=1, breaker_failures=1000, breaker_failure_rate=1.0)

    def worker(i: int) -> tuple[int, int]:
        ok = failed = 0
        for j in range(50):
            request = ask() if j % 2 else ask("alpha" if i % 2 else "beta")
            try:
                conductor.chat(request) if j % 3 else list(conductor.stream(request))
                ok += 1
            except ProviderError:
                failed += 1
        return ok, failed

    with ThreadPoolExecutor(20) as pool:
        results = list(pool.map(worker, range(20)))  # any other exception would surface here
    assert sum(ok + failed for ok, failed in results) == 1000
    assert sum(ok for ok, _ in results) >= 900
    records = conductor.log.records()
    attempts = len(a.calls) + len(b.calls)
    assert len(records) == attempts  # exactly every attempt, none lost, none doubled
    for name in ("alpha", "beta"):
        logged = [r for r in records if r.provider == name]
        usage = conductor.metrics.snapshot(name).usage
        assert usage.total_requests == len(logged)
        assert usage.successful_requests == sum(r.status == "ok" for r in logged)


def test_a_broken_log_does_not_take_requests_down(tmp_path, clock):
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path)
    broken = RequestLog("postgresql://nobody:nothing@127.0.0.1:9/none", data_dir=tmp_path)  # its spool stays in tmp
    conductor = Conductor(settings, request_log=broken, extra_providers=[ScriptedProvider("alpha")], clock=clock)
    assert conductor.chat(ask("alpha")).content == "Scripted answer."
    broken.flush()  # writes happen off the request path
    assert broken.write_errors >= 1 and broken.last_write_error
    assert conductor.metrics.snapshot("alpha").usage.total_requests == 1
    conductor.close()


# --- helpers ------------------------------------------------------------------------------------


def _ok(provider: str, latency_ms: float):
    from conductor_core.models import AttemptRecord

    return AttemptRecord(request_id="r", provider=provider, status="ok", latency_ms=latency_ms, output_tokens=10)


def _err(provider: str):
    from conductor_core.models import AttemptRecord

    return AttemptRecord(request_id="r", provider=provider, status="error", error_type="unavailable", latency_ms=5.0)


# --- the sync facade over the async core ---------------------------------------------------------


def test_many_threads_each_a_new_one_like_streamlit_reruns_abandoning_streams(make):
    """Every rerun is a fresh thread; half of them walk away mid-stream. The one loop serves
    them all, and every attempt is recorded: done, or cancelled."""
    a = ScriptedProvider("alpha", reply="one two three four five six")
    conductor = make(a)
    outcomes: list[str] = []
    lock = threading.Lock()

    def rerun(i: int) -> None:
        stream = conductor.stream(ask("alpha"))
        for event in stream:
            if isinstance(event, TextDelta) and i % 2:
                stream.close()  # or simply dropped: Streamlit abandons generators
                with lock:
                    outcomes.append("stopped")
                return
        with lock:
            outcomes.append("done")

    for batch in range(5):
        threads = [threading.Thread(target=rerun, args=(batch * 10 + i,)) for i in range(10)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
    assert outcomes.count("done") == 25 and outcomes.count("stopped") == 25
    records = conductor.log.records()
    assert len(records) == 50
    assert sum(r.status == "ok" for r in records) == 25
    assert {(r.status, r.error_type) for r in records if r.status != "ok"} == {("incomplete", "cancelled")}
    assert conductor.breaker("alpha").state == BreakerState.closed
    assert conductor.metrics.snapshot("alpha").success_rate == 1.0  # stopping is not the provider's fault


def test_a_cut_stream_keeps_its_figures(make):
    a = ScriptedProvider("alpha")
    a.script(Reply(text="one two three four five", cut_after=3))
    conductor = make(a)
    events = list(conductor.stream(ask("alpha")))
    start = next(e for e in events if isinstance(e, StreamStart))
    assert (start.provider, start.model) == ("alpha", "alpha-model")
    incomplete = events[-1]
    assert isinstance(incomplete, StreamIncomplete)
    a_ = incomplete.partial.analytics
    assert a_.output_tokens == 3 and a_.output_tokens_estimated and a_.time_to_first_token_ms is not None
    assert a_.tokens_per_second is not None and a_.latency_ms >= a_.time_to_first_token_ms
    [record] = conductor.log.records()
    assert record.status == "incomplete" and record.output_tokens == 3 and record.ttft_ms == a_.time_to_first_token_ms


def test_a_request_id_given_by_the_caller_names_every_attempt(make):
    a = ScriptedProvider("alpha")
    conductor = make(a)
    assert conductor.chat(ask("alpha"), request_id="mine-1").metadata.id == "mine-1"
    assert [e for e in conductor.stream(ask("alpha"), request_id="mine-2") if isinstance(e, StreamDone)][
        0
    ].response.metadata.id == "mine-2"
    assert {r.request_id for r in conductor.log.records()} == {"mine-1", "mine-2"}
