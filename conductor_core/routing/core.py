"""`AsyncConductor`: picks a provider (AUTO), retries, falls back, keeps circuit breakers and
bulkheads, fans a request out for compares, and writes every attempt to the request log.

Async end to end, so a request waiting on a provider holds no thread: the gateway awaits it
on its event loop, and `conductor_core.router.Conductor` runs it for synchronous callers on
one long-lived loop. One instance is shared by every request: everything here is safe to
use from several threads and loops at once, and per-request state lives on the stack.
"""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from contextlib import aclosing
from typing import Any

from ..breaker import CircuitBreaker
from ..config import EndpointConfig, Settings, load_settings
from ..errors import BadRequestError, NoProviderAvailableError, ProviderError
from ..metrics import MetricsRegistry
from ..models import (
    BreakerState,
    ChatRequest,
    ChatResponse,
    CompareEvent,
    HealthResponse,
    ProviderStatus,
    RoutingPolicy,
    StatusNotice,
    SystemStatus,
    Target,
    Vote,
    utcnow,
)
from ..providers import BaseProvider, ProviderRegistry, build_registry
from ..state import open_routing_state
from ..store import RequestLog
from . import first_try, ranking
from .attempts import Attempts
from .compare import fan_out
from .evaluation import EvaluationSource, NoEvaluations, QualityBar
from .preference import NoRatings, RatingsSource
from .ranking import Candidate, Score
from .recording import Recorder, Route
from .status import StatusView

__all__ = ["AsyncConductor"]

_SNAPSHOT_MAX_AGE_S = 1.0
_SNAPSHOT_CACHE_MIN_SAMPLES = 20

Overrides = Mapping[str, BaseProvider] | None


def _awaitable_sleep(sleep: Callable[[float], Any] | None) -> Callable[[float], Awaitable[None]]:
    """Retry waits go through `sleep`: asyncio's by default; tests pass a plain function that
    records the wait instead of waiting."""
    if sleep is None:
        return asyncio.sleep
    if inspect.iscoroutinefunction(sleep):
        return sleep

    async def call(seconds: float) -> None:
        sleep(seconds)

    return call


def _falls_back(route: Route, error: ProviderError) -> bool:
    """Whether AUTO tries the next candidate after `error`: after any failure of the provider
    (a wrong key, a limit, an outage, a broken or paused or full provider, a model it does not
    serve: its configured one), but not after an error every provider would meet alike (not
    `falls_back`: Conductor's own, text no provider can take) nor after a bad request: the
    request itself must change, and another provider would only refuse it too."""
    if route.mode != "auto" or not error.falls_back:
        return False
    return not isinstance(error, BadRequestError) or error.status_code == 404


class AsyncConductor:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: ProviderRegistry | None = None,
        request_log: RequestLog | None = None,
        extra_providers: tuple[BaseProvider, ...] | list[BaseProvider] = (),
        source: str = "playground",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
        ratings: RatingsSource | None = None,
        evaluations: EvaluationSource | None = None,
    ) -> None:
        """`ratings`: the blind-vote ratings the `preferred` policy ranks by (the workbench's,
        as `conductor_core.router.Conductor` wires them); without them no target is rated.
        `evaluations`: the prompts' measured pass rates the `evaluated` policy ranks by (the
        same); without them nothing is evaluated."""
        self.settings = settings or load_settings()
        self.registry = registry or build_registry(self.settings, extra_providers)
        if registry is not None:
            for provider in extra_providers:
                registry.add(provider)
        self.log = request_log if request_log is not None else RequestLog.from_settings(self.settings)
        self.source = source
        self.started_at = utcnow()
        self._clock = clock  # breakers and caches read it; tests move it instead of waiting
        self.metrics = MetricsRegistry()
        # Breakers and metrics: this process's own, or shared with other replicas (Redis).
        self.routing_state = open_routing_state(self.settings)
        self.routing_state.attach(self.metrics)
        self._breakers: dict[str, CircuitBreaker] = {}
        self._breakers_lock = threading.Lock()
        self._snapshots: dict[str, tuple[float, object]] = {}  # routing's view of the metrics
        self.recorder = Recorder(self.metrics, self.log, source, self.breaker, self.routing_state.record_attempt)
        self.attempts = Attempts(self.settings, self.recorder, self.breaker, _awaitable_sleep(sleep))
        self.view = StatusView(
            self.registry, self.log, self.metrics, self.breaker, self.started_at, clock, self.routing_state.info
        )
        self.metrics.seed(self.view.recent_from_log())  # after a restart, routing remembers
        self.ratings: RatingsSource = ratings if ratings is not None else NoRatings(self.settings.preferred_min_votes)
        self.evaluations: EvaluationSource = evaluations if evaluations is not None else NoEvaluations()

    # --- answers ---------------------------------------------------------------------------

    async def chat(
        self, request: ChatRequest, *, overrides: Overrides = None, request_id: str | None = None
    ) -> ChatResponse:
        """One answer. Raises `ProviderError` (with `.attempts`) when every candidate failed."""
        route, candidates = self._plan(request, overrides, streaming=False, request_id=request_id)
        last_error: ProviderError | None = None
        for position, candidate in enumerate(candidates):
            if position:
                route.reason = ranking.after_fallback(candidate, candidates[position - 1])
            try:
                response = await self.attempts.call(candidate, request, route)
            except ProviderError as error:
                last_error = error
                if not _falls_back(route, error):
                    break
                continue
            route.reason = route.reason or candidate.reason
            response.routing = route.info()
            return response
        raise self._exhausted(route, last_error)

    async def stream(
        self,
        request: ChatRequest,
        *,
        overrides: Overrides = None,
        request_id: str | None = None,
        _route: Route | None = None,
    ) -> AsyncGenerator[Any, None]:
        """`StreamStart`, text (and tool-call) deltas, then `StreamDone`, or `StreamIncomplete`
        if the stream broke after text; `StatusNotice`s along the way. Raises `ProviderError`
        (with `.attempts`) if every candidate failed before any text."""
        route, candidates = self._plan(request, overrides, streaming=True, route=_route, request_id=request_id)
        last_error: ProviderError | None = None
        for position, candidate in enumerate(candidates):
            if position:
                route.reason = ranking.after_fallback(candidate, candidates[position - 1])
                yield StatusNotice(
                    message=f"{candidates[position - 1].provider.name} failed: trying {candidate.provider.name}",
                    provider=candidate.provider.name,
                )
            try:
                # aclosing, here and below: a reader that stops closes every layer at once (a
                # nested async generator would otherwise wait for the garbage collector).
                async with aclosing(self.attempts.stream(candidate, request, route)) as events:
                    async for event in events:
                        yield event
                return
            except ProviderError as error:
                last_error = error
                if not _falls_back(route, error):
                    break
        raise self._exhausted(route, last_error)

    def compare(
        self, request: ChatRequest, targets: list[Target], *, overrides: Overrides = None
    ) -> AsyncIterator[CompareEvent]:
        """Streams one request to 2-4 targets at once; events arrive tagged by target as they come."""
        return fan_out(request, targets, lambda sub, route: self.stream(sub, overrides=overrides, _route=route))

    async def models(self, provider: str, *, overrides: Overrides = None) -> list[str]:
        return await self._provider(provider, overrides).aget_available_models()

    def add_endpoint(self, name: str, endpoint: EndpointConfig) -> BaseProvider:
        """A named OpenAI-compatible endpoint, added at run time (the playground's settings page)."""
        return self.registry.add_endpoint(name, endpoint, self.settings)

    def record_vote(self, vote: Vote) -> bool:
        return self.log.write_vote(vote)

    # --- status ---------------------------------------------------------------------------------

    def breaker(self, name: str) -> CircuitBreaker:
        # Read several times a request: the lock is only needed to create one (dict.get is atomic).
        breaker = self._breakers.get(name)
        if breaker is not None:
            return breaker
        with self._breakers_lock:
            breaker = self._breakers.get(name)
            if breaker is None:
                s = self.settings
                breaker = self._breakers[name] = self.routing_state.breaker(
                    name,
                    failures=s.breaker_failures,
                    failure_rate=s.breaker_failure_rate,
                    window=s.breaker_window,
                    cooldown_s=s.breaker_cooldown_s,
                    max_cooldown_s=s.breaker_max_cooldown_s,
                    clock=self._clock,
                )
            return breaker

    async def provider_status(self, name: str, *, overrides: Overrides = None) -> ProviderStatus:
        providers = {**self.registry.providers, **(overrides or {})}
        if name not in providers and name not in self.registry.unavailable:
            self._provider(name, overrides)  # raises the "unknown provider" error
        return await self.view.provider_status(name, providers.get(name))

    async def status(self, *, overrides: Overrides = None) -> SystemStatus:
        names = list(dict.fromkeys([*self.registry.names(), *(overrides or {})]))
        return await self.view.status({**self.registry.providers, **(overrides or {})}, names)

    async def health(self, *, refresh: bool = False) -> HealthResponse:
        """Every configured provider's health check, run in the background; never waits on a slow one."""
        return await self.view.health(refresh=refresh)

    async def aclose(self) -> None:
        """Close the providers' clients on this loop, and the request log (written out first)."""
        for provider in self.registry.providers.values():
            try:
                await provider.aclose()
            except Exception:  # noqa: BLE001 - closing is best effort
                pass
        self.routing_state.close()
        await asyncio.to_thread(self.log.close)

    # --- planning ------------------------------------------------------------------------

    def _provider(self, name: str, overrides: Overrides) -> BaseProvider:
        if overrides and name in overrides:
            return overrides[name]
        return self.registry.get(name)

    def _plan(
        self,
        request: ChatRequest,
        overrides: Overrides,
        *,
        streaming: bool,
        route: Route | None = None,
        request_id: str | None = None,
    ) -> tuple[Route, list[Candidate]]:
        if request.provider != "auto":
            route = route or Route(request, "manual", None, None, request_id)
            provider = self._provider(request.provider, overrides)
            route.reason = route.reason or ("chosen for compare" if route.mode == "compare" else "chosen by you")
            return route, [Candidate(provider, route.reason)]
        policy = request.policy or RoutingPolicy(self.settings.routing_policy)
        route = route or Route(request, "auto", policy, None, request_id)
        candidates = self._with_first_try_deadlines(
            self.rank(request, policy, streaming=streaming, overrides=overrides)
        )
        route.reason = candidates[0].reason
        return route, candidates

    def _with_first_try_deadlines(self, candidates: list[Candidate]) -> list[Candidate]:
        """A short deadline for the first token of each candidate with no success in its recent
        window, while others remain (first_try.py says why)."""

        def proven(name: str) -> bool:
            return (self._routing_snapshot(name).success_rate or 0.0) > 0

        return first_try.with_first_try_deadlines(candidates, proven, self.settings.first_try_timeout_s)

    def rank(
        self,
        request: ChatRequest,
        policy: RoutingPolicy = RoutingPolicy.balanced,
        *,
        streaming: bool = False,
        overrides: Overrides = None,
    ) -> list[Candidate]:
        """Every usable provider, best first, each with the sentence that explains its place."""
        providers = {**self.registry.providers, **(overrides or {})}
        if not providers:
            raise NoProviderAvailableError(
                "no provider is configured: " + "; ".join(f"{n}: {h}" for n, h in self.registry.unavailable.items()),
                retryable=False,
            )
        able = [p for p in providers.values() if not p.unsupported(request)]
        if not able:
            lacking = "; ".join(f"{p.name} lacks {', '.join(p.unsupported(request))}" for p in providers.values())
            raise BadRequestError(
                f"no configured provider can take this request ({lacking}): remove those parameters or configure "
                "a provider that has them",
                status_code=400,
            )
        usable = [p for p in able if p.is_healthy and self.breaker(p.name).would_allow()]
        if not usable:
            # Nothing is clearly usable: try the ones whose breaker would let a call through.
            usable = [p for p in able if self.breaker(p.name).would_allow()]
        if not usable:
            waits = ", ".join(f"{p.name} in {self.breaker(p.name).retry_in_s() or 0:.0f} s" for p in able)
            soonest = min((self.breaker(p.name).retry_in_s() or 1.0) for p in able)
            raise NoProviderAvailableError(
                f"every provider is failing; they will be retried: {waits}", retry_after=max(1.0, soonest)
            )
        # A provider whose calls and queue are full goes last (it would refuse at once).
        roomy = [p for p in usable if self.attempts.bulkhead(p).has_room()]
        full = [p for p in usable if p not in roomy]
        scores = {p.name: self._score(p, request, streaming, policy) for p in roomy}
        probes = [p for p in roomy if self.breaker(p.name).state == BreakerState.half_open]
        bar = None
        if policy == RoutingPolicy.evaluated:
            s = self.settings
            bar = QualityBar(request.prompt_name, s.evaluated_margin, s.evaluated_prefer, s.evaluated_min_rows)
        ordered = ranking.order(roomy, scores, probes, policy, bar)
        return ordered + [Candidate(p, f"{p.name} is at its concurrency limit: tried last") for p in full]

    def _score(self, p: BaseProvider, request: ChatRequest, streaming: bool, policy: RoutingPolicy) -> Score:
        snap = self._routing_snapshot(p.name)
        ttft = snap.performance.p50_ttft_ms if streaming else None
        preferred = policy == RoutingPolicy.preferred
        evaluation = None
        if policy == RoutingPolicy.evaluated and request.prompt_name is not None:
            evaluation = self.evaluations.get(request.prompt_name, f"{p.name}/{p.resolve_model(request)}")
        return Score(
            samples=snap.samples,
            latency_ms=ttft or snap.performance.p50_latency_ms,
            latency_kind="time to first token" if ttft else "latency",
            success=snap.success_rate,
            cost=ranking.estimated_cost(p, request),
            rating=self.ratings.get(f"{p.name}/{p.resolve_model(request)}") if preferred else None,
            min_votes=self.ratings.min_votes,
            evaluation=evaluation,
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

    def _exhausted(self, route: Route, last_error: ProviderError | None) -> ProviderError:
        error = last_error or NoProviderAvailableError("no provider could take the request")
        # A bad request stays one (400: change the request), whoever refused before it.
        if (
            route.mode == "auto"
            and len({a.provider for a in route.attempts}) > 1
            and not isinstance(error, BadRequestError)
        ):
            tried = ", ".join(f"{a.provider} ({a.error_type})" for a in route.attempts)
            error = NoProviderAvailableError(
                f"every provider failed: {tried}. Last: {error.message}",
                retryable=error.retryable,
                retry_after=error.retry_after,
            )
        error.attempts = list(route.attempts)
        error.request_id = route.request_id
        return error
