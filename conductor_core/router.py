"""The Conductor: picks a provider (AUTO), retries, falls back, keeps circuit breakers,
fans a request out for compares, and writes every attempt to the request log.

It is the only retry loop in the process (every SDK client is built with retries off).
One Conductor is shared by every playground session and gateway request: everything
here is thread-safe, and per-request state lives on the stack.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import closing
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta

from tenacity import (
    AttemptManager,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from .breaker import CircuitBreaker
from .config import EndpointConfig, Settings, load_settings, redact
from .errors import (
    BadRequestError,
    NoProviderAvailableError,
    NotConfiguredError,
    ProviderError,
    ProviderUnavailableError,
    StreamInterruptedError,
)
from .metrics import MetricsRegistry
from .models import (
    Attempt,
    AttemptRecord,
    BreakerState,
    ChatRequest,
    ChatResponse,
    CompareEvent,
    HealthResponse,
    ProviderHealth,
    ProviderReliability,
    ProviderState,
    ProviderStatus,
    ProviderUsage,
    RoutingInfo,
    RoutingPolicy,
    StatusNotice,
    StreamDone,
    StreamEvent,
    StreamIncomplete,
    SystemStatus,
    Target,
    TextDelta,
    Usage,
    Vote,
    new_id,
    utcnow,
)
from .providers import BaseProvider, ProviderRegistry, build_registry
from .store import RequestLog

__all__ = ["Conductor", "Candidate"]

log = logging.getLogger("conductor.router")

_HEALTH_CACHE_S = 15.0
_SNAPSHOT_MAX_AGE_S = 1.0
_SNAPSHOT_CACHE_MIN_SAMPLES = 20
_SHARED_STATUS_CACHE_S = 2.0


@dataclass(frozen=True)
class Candidate:
    provider: BaseProvider
    reason: str


@dataclass(slots=True)  # not frozen: one is built per provider per AUTO request, and frozen doubles that cost
class _Score:
    """What AUTO knows of one provider for one request; sorts and explains itself."""

    samples: int
    latency_ms: float | None
    latency_kind: str
    success: float | None
    cost: float | None

    def key(self, policy: RoutingPolicy) -> tuple[float, ...]:
        inf = float("inf")
        latency = self.latency_ms or inf
        success = self.success or 0.0
        cost = inf if self.cost is None else self.cost
        if policy == RoutingPolicy.fastest:
            return (latency,)
        if policy == RoutingPolicy.cheapest:
            return (cost, latency)
        if policy == RoutingPolicy.reliable:
            return (-success, latency)
        # Balanced: expected seconds to a good answer (a failure costs another try, so divide
        # by the success rate, squared to punish flakiness), plus one second per tenth of a cent.
        return (latency / 1000 / max(success, 0.05) ** 2 + (0.0 if self.cost is None else self.cost * 1000),)

    def explain(self, policy: RoutingPolicy) -> str:
        speed = f"p50 {self.latency_kind} {self.latency_ms:.0f} ms" if self.latency_ms else "no latency data"
        rate = f"{self.success:.0%} success" if self.success is not None else "no success data"
        price = "free" if self.cost == 0 else f"est. ${self.cost:.5f}" if self.cost is not None else "cost unknown"
        if policy == RoutingPolicy.fastest:
            return f"fastest healthy provider: {speed}"
        if policy == RoutingPolicy.cheapest:
            return f"cheapest healthy provider: {price} for this request"
        if policy == RoutingPolicy.reliable:
            return f"most reliable healthy provider: {rate}"
        return f"best balance of speed, reliability and cost: {speed}, {rate}, {price}"


class _Route:
    """Per-request bookkeeping: what was tried, for the response and the log."""

    def __init__(self, request: ChatRequest, mode: str, policy: RoutingPolicy | None, group_id: str | None) -> None:
        self.request_id = new_id()
        self.mode = mode
        self.policy = policy
        self.group_id = group_id
        self.attempts: list[Attempt] = []
        self.reason: str | None = None
        self.prompt = "\n".join(f"{m.role.value}: {m.content}" for m in request.messages)

    def info(self) -> RoutingInfo:
        return RoutingInfo(
            mode=self.mode, policy=self.policy, reason=self.reason, attempts=list(self.attempts), group_id=self.group_id
        )


class Conductor:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: ProviderRegistry | None = None,
        request_log: RequestLog | None = None,
        extra_providers: tuple[BaseProvider, ...] | list[BaseProvider] = (),
        source: str = "playground",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or load_settings()
        self.registry = registry or build_registry(self.settings, extra_providers)
        if registry is not None:
            for provider in extra_providers:
                registry.add(provider)
        self.log = request_log if request_log is not None else RequestLog.from_settings(self.settings)
        self.source = source
        self.started_at = utcnow()
        self._clock = clock  # breakers and caches read it; tests move it instead of waiting
        self._sleep = sleep  # retry waits go through it, so tests can see them without waiting
        self.metrics = MetricsRegistry()
        self.metrics.seed(self._recent_from_log())  # after a restart, routing remembers
        self._breakers: dict[str, CircuitBreaker] = {}
        self._snapshots: dict[str, tuple[float, object]] = {}  # routing's view of the metrics
        self._breakers_lock = threading.Lock()
        self._health: tuple[float, HealthResponse] | None = None
        self._health_lock = threading.Lock()
        self._shared: tuple[float, MetricsRegistry, dict[str, ProviderUsage]] | None = None
        self._shared_lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="conductor-health")

    # --- public API ---------------------------------------------------------------------

    def chat(self, request: ChatRequest, *, overrides: Mapping[str, BaseProvider] | None = None) -> ChatResponse:
        """One answer. Raises `ProviderError` (with `.attempts`) when every candidate failed."""
        route, candidates = self._plan(request, overrides, streaming=False)
        last_error: ProviderError | None = None
        for position, candidate in enumerate(candidates):
            if position:
                route.reason = _after_fallback(candidate, candidates[position - 1])
            try:
                response = self._call_with_retries(candidate, request, route)
            except ProviderError as error:
                last_error = error
                if route.mode != "auto":
                    break
                continue
            route.reason = route.reason or candidate.reason
            response.routing = route.info()
            return response
        raise self._exhausted(route, last_error)

    def stream(
        self, request: ChatRequest, *, overrides: Mapping[str, BaseProvider] | None = None, _route: _Route | None = None
    ) -> Iterator[StreamEvent]:
        """Text deltas, then `StreamDone`, or `StreamIncomplete` if the stream broke after text.
        Raises `ProviderError` (with `.attempts`) if every candidate failed before any text."""
        route, candidates = self._plan(request, overrides, streaming=True, route=_route)
        last_error: ProviderError | None = None
        for position, candidate in enumerate(candidates):
            if position:
                route.reason = _after_fallback(candidate, candidates[position - 1])
                yield StatusNotice(
                    message=f"{candidates[position - 1].provider.name} failed: trying {candidate.provider.name}",
                    provider=candidate.provider.name,
                )
            try:
                yield from self._stream_with_retries(candidate, request, route)
                return
            except ProviderError as error:
                last_error = error
                if route.mode != "auto":
                    break
        raise self._exhausted(route, last_error)

    def compare(
        self,
        request: ChatRequest,
        targets: list[Target],
        *,
        overrides: Mapping[str, BaseProvider] | None = None,
    ) -> Iterator[CompareEvent]:
        """Streams one request to 2-4 targets at once; events arrive tagged by target as they
        come, so the wall time is that of the slowest target, not the sum."""
        if not 2 <= len(targets) <= 4:
            raise BadRequestError(f"a compare takes 2 to 4 targets, got {len(targets)}", status_code=400)
        if any(t.provider == "auto" for t in targets):
            raise BadRequestError("compare targets name a provider; 'auto' is not a target", status_code=400)
        group_id = new_id("cmp")
        events: queue.Queue[CompareEvent | None] = queue.Queue()
        cancelled = threading.Event()
        # Every thread is started before any of them builds its request: Thread.start() waits
        # for the new thread to run, and one building an SDK request holds the GIL for up to
        # the 5 ms switch interval, which delayed the last target by ~5 ms a target.
        go = threading.Event()

        def run(index: int, target: Target) -> None:
            go.wait()
            sub = request.model_copy(update={"provider": target.provider, "model": target.model})
            route = _Route(sub, "compare", None, group_id)
            try:
                for event in self.stream(sub, overrides=overrides, _route=route):
                    if cancelled.is_set():
                        return  # closing the generator records the attempt as cancelled
                    events.put(CompareEvent(index=index, target=target, group_id=group_id, event=event))
            except ProviderError as error:
                events.put(
                    CompareEvent(index=index, target=target, group_id=group_id, error=error.to_response(route.request_id))
                )
            except Exception as exc:  # noqa: BLE001 - one target's bug must not hang the others
                log.exception("compare target %s crashed", target.label)
                err = ProviderError(f"{target.label} failed unexpectedly: {exc}", provider=target.provider)
                events.put(CompareEvent(index=index, target=target, group_id=group_id, error=err.to_response()))
            finally:
                events.put(None)

        threads = [
            threading.Thread(target=run, args=(i, t), name=f"compare-{i}", daemon=True) for i, t in enumerate(targets)
        ]
        for thread in threads:
            thread.start()
        go.set()
        running = len(threads)
        try:
            while running:
                item = events.get()
                if item is None:
                    running -= 1
                else:
                    yield item
        finally:
            cancelled.set()
            go.set()

    def models(self, provider: str, *, overrides: Mapping[str, BaseProvider] | None = None) -> list[str]:
        return self._provider(provider, overrides).get_available_models()

    def add_endpoint(self, name: str, endpoint: EndpointConfig) -> BaseProvider:
        """A named OpenAI-compatible endpoint, added at run time (the playground's settings page)."""
        return self.registry.add_endpoint(name, endpoint, self.settings)

    def record_vote(self, vote: Vote) -> bool:
        return self.log.write_vote(vote)

    # --- status ---------------------------------------------------------------------------

    def breaker(self, name: str) -> CircuitBreaker:
        # Read several times a request: the lock is only needed to create one (dict.get is atomic).
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        with self._breakers_lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                s = self.settings
                breaker = self._breakers[name] = CircuitBreaker(
                    failures=s.breaker_failures,
                    failure_rate=s.breaker_failure_rate,
                    window=s.breaker_window,
                    cooldown_s=s.breaker_cooldown_s,
                    max_cooldown_s=s.breaker_max_cooldown_s,
                    clock=self._clock,
                )
            return breaker

    def provider_status(self, name: str, *, overrides: Mapping[str, BaseProvider] | None = None) -> ProviderStatus:
        shared, totals = self._shared_view()
        providers = {**self.registry.providers, **(overrides or {})}
        provider = providers.get(name)
        unavailable = self.registry.unavailable
        if provider is None and name not in unavailable:
            self._provider(name, overrides)  # raises the "unknown provider" error
        snap = shared.snapshot(name)
        breaker = self.breaker(name)
        if provider is None:
            health = ProviderHealth(healthy=False, state=ProviderState.not_configured, detail=unavailable[name])
            display, models = name, []
        else:
            state = provider.state
            if state == ProviderState.ready and breaker.state.value == "open":
                state = ProviderState.circuit_open
            health = ProviderHealth(
                healthy=provider.is_healthy and state in (ProviderState.ready, ProviderState.loading),
                state=state,
                detail=provider.describe(),
                last_check=provider.last_check,
            )
            display, models = getattr(provider, "display_name", name), [provider.default_model]
        return ProviderStatus(
            name=name,
            display_name=display,
            models=models,
            health=health,
            performance=snap.performance,
            reliability=ProviderReliability(
                success_rate=snap.success_rate,
                last_error=snap.last_error or (provider.last_error if provider else None),
                breaker=breaker.state,
                retry_in_s=breaker.retry_in_s(),
            ),
            usage=totals.get(name, ProviderUsage()),
        )

    def status(self, *, overrides: Mapping[str, BaseProvider] | None = None) -> SystemStatus:
        names = list(dict.fromkeys([*self.registry.names(), *(overrides or {})]))
        providers = {name: self.provider_status(name, overrides=overrides) for name in names}
        configured = [p for p in providers.values() if p.health.state != ProviderState.not_configured]
        ready = [p for p in configured if p.health.healthy]
        overall = "healthy" if configured and len(ready) == len(configured) else "degraded" if ready else "down"
        totals = ProviderUsage(
            total_requests=sum(p.usage.total_requests for p in providers.values()),
            successful_requests=sum(p.usage.successful_requests for p in providers.values()),
            failed_requests=sum(p.usage.failed_requests for p in providers.values()),
            input_tokens=sum(p.usage.input_tokens for p in providers.values()),
            output_tokens=sum(p.usage.output_tokens for p in providers.values()),
            cost_usd=sum(p.usage.cost_usd for p in providers.values()),
        )
        return SystemStatus(
            status=overall,
            providers=providers,
            totals=totals,
            started_at=self.started_at,
            uptime_s=(utcnow() - self.started_at).total_seconds(),
        )

    def health(self, *, refresh: bool = False) -> HealthResponse:
        """Runs every configured provider's health check concurrently; cached for a few seconds."""
        with self._health_lock:
            if not refresh and self._health and self._clock() - self._health[0] < _HEALTH_CACHE_S:
                return self._health[1]
        providers = self.registry.providers
        futures = {name: self._pool.submit(_safe_health_check, p) for name, p in providers.items()}
        results = {name: future.result() for name, future in futures.items()}
        healthy = sum(results.values())
        status = "ok" if results and healthy == len(results) else "degraded" if healthy else "down"
        response = HealthResponse(status=status, providers=results)
        with self._health_lock:
            self._health = (self._clock(), response)
        return response

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.log.close()

    # --- planning ------------------------------------------------------------------------

    def _provider(self, name: str, overrides: Mapping[str, BaseProvider] | None) -> BaseProvider:
        if overrides and name in overrides:
            return overrides[name]
        return self.registry.get(name)

    def _plan(
        self,
        request: ChatRequest,
        overrides: Mapping[str, BaseProvider] | None,
        *,
        streaming: bool,
        route: _Route | None = None,
    ) -> tuple[_Route, list[Candidate]]:
        if request.provider != "auto":
            route = route or _Route(request, "manual", None, None)
            provider = self._provider(request.provider, overrides)
            route.reason = route.reason or ("chosen for compare" if route.mode == "compare" else "chosen by you")
            return route, [Candidate(provider, route.reason)]
        policy = request.policy or RoutingPolicy(self.settings.routing_policy)
        route = route or _Route(request, "auto", policy, None)
        candidates = self.rank(request, policy, streaming=streaming, overrides=overrides)
        route.reason = candidates[0].reason
        return route, candidates

    def rank(
        self,
        request: ChatRequest,
        policy: RoutingPolicy = RoutingPolicy.balanced,
        *,
        streaming: bool = False,
        overrides: Mapping[str, BaseProvider] | None = None,
    ) -> list[Candidate]:
        """Every usable provider, best first, each with the sentence that explains its place."""
        providers = {**self.registry.providers, **(overrides or {})}
        if not providers:
            raise NoProviderAvailableError(
                "no provider is configured: " + "; ".join(f"{n}: {h}" for n, h in self.registry.unavailable.items()),
                retryable=False,
            )
        usable = [p for p in providers.values() if p.is_healthy and self.breaker(p.name).would_allow()]
        if not usable:
            # Nothing is clearly usable: try the ones whose breaker would let a call through.
            usable = [p for p in providers.values() if self.breaker(p.name).would_allow()]
        if not usable:
            waits = ", ".join(f"{p.name} in {self.breaker(p.name).retry_in_s() or 0:.0f} s" for p in providers.values())
            raise NoProviderAvailableError(f"every provider is failing; they will be retried: {waits}")

        scores = {p.name: self._score(p, request, streaming) for p in usable}
        # A half-open breaker's probe goes first: otherwise a provider that failed would rank
        # last on its old record and never get the request that shows it has recovered.
        probes = [p for p in usable if self.breaker(p.name).state == BreakerState.half_open]
        # Explore: a provider with no history is tried next, so a new one is not starved.
        fresh = [p for p in usable if scores[p.name].samples == 0 and p not in probes]
        known = sorted(
            (p for p in usable if p not in probes and p not in fresh), key=lambda p: scores[p.name].key(policy)
        )
        return (
            [Candidate(p, f"probing {p.name}: it was paused after failures, checking whether it recovered") for p in probes]
            + [Candidate(p, f"no history yet for {p.name}: trying it to learn its speed") for p in fresh]
            + [Candidate(p, scores[p.name].explain(policy)) for p in known]
        )

    def _score(self, p: BaseProvider, request: ChatRequest, streaming: bool) -> _Score:
        snap = self._routing_snapshot(p.name)
        ttft = snap.performance.p50_ttft_ms if streaming else None
        return _Score(
            samples=snap.samples,
            latency_ms=ttft or snap.performance.p50_latency_ms,
            latency_kind="time to first token" if ttft else "latency",
            success=snap.success_rate,
            cost=self._estimated_cost(p, request),
        )

    def _routing_snapshot(self, name: str):
        """Percentiles over a full window cost more than the rest of a request, and ranking
        does not need them fresher than a second. A provider with little history is read
        fresh every time (cheap), so exploration and a first failure count at once."""
        now = time.monotonic()
        cached = self._snapshots.get(name)
        if cached and now - cached[0] < _SNAPSHOT_MAX_AGE_S:
            return cached[1]
        snap = self.metrics.snapshot(name)
        if snap.samples >= _SNAPSHOT_CACHE_MIN_SAMPLES:
            self._snapshots[name] = (now, snap)
        return snap

    @staticmethod
    def _estimated_cost(p: BaseProvider, request: ChatRequest) -> float | None:
        # ~4 characters a token; the answer priced at its ceiling so the ranking is cautious.
        chars = sum(len(m.content) for m in request.messages)
        usage = Usage(input_tokens=max(1, chars // 4), output_tokens=request.max_tokens)
        return p.estimate_cost(usage, p.resolve_model(request))

    # --- calling -----------------------------------------------------------------------

    def _retrying(self) -> Retrying:
        s = self.settings

        def wait(state: RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome else None
            retry_after = getattr(error, "retry_after", None)
            if retry_after is not None:
                return min(retry_after, s.retry_budget_s)  # honour the server, never past our budget
            return wait_exponential_jitter(initial=0.2, max=4.0, jitter=0.2)(state)

        return Retrying(
            retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
            stop=stop_after_attempt(s.max_retries + 1) | stop_before_delay(s.retry_budget_s),
            wait=wait,
            sleep=self._sleep,
            reraise=True,
        )

    # Most calls succeed at the first try, so the first attempt runs outside tenacity, whose
    # per-call Retrying loop costs more than the rest of an attempt's bookkeeping. Only a
    # retryable failure enters the loop (`_retries`), with the same waits, Retry-After,
    # max_retries and budget as if tenacity had run the first attempt itself.

    def _retries(self, started: float, first_error: ProviderError) -> Iterator[AttemptManager]:
        """tenacity's attempts after a first one (begun at monotonic `started`) failed with
        `first_error`: it is replayed as tenacity's attempt 1, dated from when it began, so
        the stop, wait and reraise decisions are tenacity's own."""
        replay: ProviderError | None = first_error
        for attempt in self._retrying():
            if replay is None:
                yield attempt
                continue
            with attempt:  # records the failure; tenacity's next step sleeps or re-raises it
                attempt.retry_state.start_time = started
                error, replay = replay, None
                raise error

    def _call_with_retries(self, candidate: Candidate, request: ChatRequest, route: _Route) -> ChatResponse:
        started = time.monotonic()
        try:
            return self._call_once(candidate.provider, request, route)
        except ProviderError as error:
            if not error.retryable:
                raise
            first_error = error
        for attempt in self._retries(started, first_error):
            with attempt:
                return self._call_once(candidate.provider, request, route)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _call_once(self, provider: BaseProvider, request: ChatRequest, route: _Route) -> ChatResponse:
        breaker = self._admit(provider)
        started = time.perf_counter()
        try:
            response = provider.chat_completion(request)
        except ProviderError as error:
            self._record_failure(provider, request, route, error, started, streamed=False)
            raise
        except BaseException:
            breaker.release()
            raise
        self._record_success(provider, request, route, response, streamed=False)
        return response

    def _stream_with_retries(self, candidate: Candidate, request: ChatRequest, route: _Route) -> Iterator[StreamEvent]:
        started = time.monotonic()
        try:
            yield from self._stream_once(candidate, request, route)
            return
        except ProviderError as error:
            if not error.retryable:
                raise
            first_error = error
        for attempt in self._retries(started, first_error):
            with attempt:
                yield from self._stream_once(candidate, request, route)
                return
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _stream_once(self, candidate: Candidate, request: ChatRequest, route: _Route) -> Iterator[StreamEvent]:
        provider = candidate.provider
        breaker = self._admit(provider)
        started = time.perf_counter()
        parts: list[str] = []
        finished = False
        try:
            # closing(): a reader that goes away must release the provider at once
            # (the local model holds a lock for the whole generation).
            with closing(provider.stream(request)) as events:
                for event in events:
                    if isinstance(event, TextDelta):
                        parts.append(event.text)
                    elif isinstance(event, StreamDone):
                        finished = True
                        route.reason = route.reason or candidate.reason
                        event.response.routing = route.info()
                        self._record_success(provider, request, route, event.response, streamed=True)
                    yield event
        except StreamInterruptedError as error:
            if not error.partial_text and not parts:
                self._record_failure(provider, request, route, error, started, streamed=True)
                raise  # nothing shown yet: retry or fall back
            yield self._incomplete(provider, request, route, error, started, "".join(parts))
        except ProviderError as error:
            self._record_failure(provider, request, route, error, started, streamed=True)
            raise
        except GeneratorExit:
            if not finished:  # the reader went away (a rerun, a closed tab): keep the record
                breaker.release()
                cancelled = ProviderError("the client stopped reading before the end", provider=provider.name)
                cancelled.type = "cancelled"
                self._write(self._record(provider, request, route, "incomplete", started, cancelled, "".join(parts), True))
            raise

    def _incomplete(
        self, provider: BaseProvider, request: ChatRequest, route: _Route, error: ProviderError, started: float, text: str
    ) -> StreamIncomplete:
        self.breaker(provider.name).record_failure()
        record = self._record(provider, request, route, "incomplete", started, error, text, True)
        self._write(record)
        route.attempts.append(_attempt(record))
        route.reason = route.reason or "stream broke after text was shown"
        partial = ChatResponse(
            content=text,
            metadata={"id": route.request_id, "provider": provider.name, "model": provider.resolve_model(request), "finish_reason": "incomplete"},
            analytics={"latency_ms": record.latency_ms or 0.0, "output_tokens": 0},
            routing=route.info(),
        )
        return StreamIncomplete(partial=partial, error=error.to_response(route.request_id))

    def _admit(self, provider: BaseProvider) -> CircuitBreaker:
        """The provider's breaker, once it lets this attempt through; else a non-retryable error."""
        breaker = self.breaker(provider.name)
        if not breaker.allow():
            raise self._breaker_open(provider.name)
        return breaker

    def _breaker_open(self, name: str) -> ProviderUnavailableError:
        wait = self.breaker(name).retry_in_s()
        when = f" in {wait:.0f} s" if wait else " soon"
        return ProviderUnavailableError(
            f"{name} is failing repeatedly, so Conductor paused it; it will be tried again{when}",
            provider=name,
            retryable=False,
        )

    def _exhausted(self, route: _Route, last_error: ProviderError | None) -> ProviderError:
        error = last_error or NoProviderAvailableError("no provider could take the request")
        if route.mode == "auto" and len({a.provider for a in route.attempts}) > 1:
            tried = ", ".join(f"{a.provider} ({a.error_type})" for a in route.attempts)
            error = NoProviderAvailableError(f"every provider failed: {tried}. Last: {error.message}", retryable=error.retryable)
        error.attempts = list(route.attempts)  # type: ignore[attr-defined]
        error.request_id = route.request_id  # type: ignore[attr-defined]
        return error

    # --- recording -----------------------------------------------------------------------

    def _record_success(
        self, provider: BaseProvider, request: ChatRequest, route: _Route, response: ChatResponse, *, streamed: bool
    ) -> None:
        self.breaker(provider.name).record_success()
        a = response.analytics
        record = AttemptRecord(
            request_id=route.request_id,
            provider=provider.name,
            model=response.metadata.model,
            route=route.mode,
            group_id=route.group_id,
            source=self.source,
            streamed=streamed,
            status="ok",
            input_tokens=a.input_tokens,
            output_tokens=a.output_tokens,
            latency_ms=a.latency_ms,
            ttft_ms=a.time_to_first_token_ms,
            cost_usd=a.cost_usd,
            prompt=route.prompt,
            answer=response.content,
        )
        response.metadata.id = route.request_id
        self._write(record)

    def _record_failure(
        self,
        provider: BaseProvider,
        request: ChatRequest,
        route: _Route,
        error: ProviderError,
        started: float,
        *,
        streamed: bool,
    ) -> None:
        if isinstance(error, BadRequestError) or isinstance(error, NotConfiguredError):
            self.breaker(provider.name).release()  # the request's fault, not the provider's
        else:
            self.breaker(provider.name).record_failure()
        record = self._record(provider, request, route, "error", started, error, None, streamed)
        self._write(record)
        route.attempts.append(_attempt(record))

    def _record(
        self,
        provider: BaseProvider,
        request: ChatRequest,
        route: _Route,
        status: str,
        started: float,
        error: ProviderError,
        answer: str | None,
        streamed: bool,
    ) -> AttemptRecord:
        return AttemptRecord(
            request_id=route.request_id,
            provider=provider.name,
            model=provider.resolve_model(request),
            route=route.mode,
            group_id=route.group_id,
            source=self.source,
            streamed=streamed,
            status=status,
            error_type=error.type,
            error_message=redact(error.message),
            latency_ms=round((time.perf_counter() - started) * 1000, 3),
            prompt=route.prompt,
            answer=answer,
        )

    def _write(self, record: AttemptRecord) -> None:
        self.metrics.record(record)
        # Queued for the log's writer thread: never raises, never waits for a commit.
        self.log.submit(record)

    # --- shared view (everyone's traffic, from the log) -------------------------------------

    def _recent_from_log(self) -> list[AttemptRecord]:
        since = utcnow() - timedelta(seconds=self.metrics.window_s)
        try:
            return self.log.recent_for_metrics(self.metrics.window_size, since)
        except Exception as exc:  # noqa: BLE001 - a broken log must not stop routing
            log.warning("could not read the request log: %s", redact(exc))
            return []

    def _shared_view(self) -> tuple[MetricsRegistry, dict[str, ProviderUsage]]:
        """Metrics rebuilt from the log, so that several processes sharing one database all
        show everyone's traffic. Cached briefly: the dashboard polls every couple of seconds."""
        with self._shared_lock:
            if self._shared and self._clock() - self._shared[0] < _SHARED_STATUS_CACHE_S:
                return self._shared[1], self._shared[2]
        shared = MetricsRegistry(window_size=self.metrics.window_size, window_s=self.metrics.window_s)
        shared.seed(self._recent_from_log())
        try:
            totals = self.log.provider_totals()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read totals from the request log: %s", redact(exc))
            totals = {}
        with self._shared_lock:
            self._shared = (self._clock(), shared, totals)
        return shared, totals


def _after_fallback(candidate: Candidate, failed: Candidate) -> str:
    return f"{failed.provider.name} failed, so the next in line: {candidate.reason}"


def _attempt(record: AttemptRecord) -> Attempt:
    return Attempt(
        provider=record.provider,
        model=record.model,
        ok=record.status == "ok",
        error_type=record.error_type,
        error=record.error_message,
        latency_ms=record.latency_ms,
    )


def _safe_health_check(provider: BaseProvider) -> bool:
    try:
        return bool(provider.health_check())
    except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
        return provider.mark_health(False, redact(exc))

