"""Health and status, answered without waiting on providers: `/health` and `/status` must
stay quick while an upstream hangs.

* Health checks run in the background (every configured provider at once, bounded by a
  timeout) at most every `_HEALTH_CACHE_S`; a caller gets the last result at once, and
  waits only for the very first one (briefly).
* Status reads everyone's traffic from the request log (several processes may share it) in
  a worker thread, cached for a couple of seconds: the dashboard polls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping
from datetime import datetime, timedelta

from ..breaker import CircuitBreaker
from ..config import redact
from ..metrics import MetricsRegistry
from ..models import (
    AttemptRecord,
    BreakerState,
    HealthResponse,
    HealthStatus,
    OverallStatus,
    ProviderHealth,
    ProviderReliability,
    ProviderState,
    ProviderStatus,
    ProviderUsage,
    RoutingStateInfo,
    SystemStatus,
    utcnow,
)
from ..providers import BaseProvider, ProviderRegistry, get_spec
from ..store import RequestLog

__all__ = ["StatusView"]

log = logging.getLogger("conductor.router")

_HEALTH_CACHE_S = 15.0
_FIRST_HEALTH_WAIT_S = 2.0
_SHARED_STATUS_CACHE_S = 2.0


class StatusView:
    def __init__(
        self,
        registry: ProviderRegistry,
        request_log: RequestLog,
        metrics: MetricsRegistry,
        breaker: Callable[[str], CircuitBreaker],
        started_at: datetime,
        clock: Callable[[], float],
        routing_state: Callable[[], RoutingStateInfo] | None = None,
    ) -> None:
        self.registry = registry
        self.log = request_log
        self.metrics = metrics
        self.breaker = breaker
        self.started_at = started_at
        self._clock = clock
        self._routing_state = routing_state
        self._health: tuple[float, HealthResponse] | None = None
        self._health_task: asyncio.Task[HealthResponse] | None = None
        self._health_lock = threading.Lock()
        self._shared: tuple[float, MetricsRegistry, dict[str, ProviderUsage]] | None = None
        self._log_totals: ProviderUsage | None = None  # the whole log's, read with `_shared`
        self._shared_lock = threading.Lock()

    # --- health ---------------------------------------------------------------------------

    async def health(self, *, refresh: bool = False) -> HealthResponse:
        """The last health result (refreshed in the background when stale). Only `refresh`
        or the very first call waits, and the first one at most a couple of seconds."""
        cached = self._health
        if cached is not None and self._clock() - cached[0] < _HEALTH_CACHE_S and not refresh:
            return cached[1]
        task = self._refresh_task()
        if refresh:
            return await asyncio.shield(task)
        if cached is not None:
            return cached[1]
        try:
            return await asyncio.wait_for(asyncio.shield(task), _FIRST_HEALTH_WAIT_S)
        except TimeoutError:
            return self._from_flags()  # what the providers' own state says until the checks answer

    def _refresh_task(self) -> asyncio.Task[HealthResponse]:
        loop = asyncio.get_running_loop()
        with self._health_lock:
            task = self._health_task
            if task is None or task.done() or task.get_loop() is not loop:
                task = self._health_task = loop.create_task(self._check_all())
        return task

    async def _check_all(self) -> HealthResponse:
        providers = self.registry.providers
        results = await asyncio.gather(*(_safe_health_check(p) for p in providers.values()))
        response = _health_response(dict(zip(providers, results, strict=True)))
        self._health = (self._clock(), response)
        return response

    def _from_flags(self) -> HealthResponse:
        return _health_response({name: p.is_healthy for name, p in self.registry.providers.items()})

    # --- status ---------------------------------------------------------------------------

    async def provider_status(self, name: str, provider: BaseProvider | None) -> ProviderStatus:
        shared, totals = await self.shared_view()
        return self._provider_status(name, provider, shared, totals)

    async def status(self, providers: Mapping[str, BaseProvider], names: list[str]) -> SystemStatus:
        shared, totals = await self.shared_view()
        statuses = {name: self._provider_status(name, providers.get(name), shared, totals) for name in names}
        configured = [p for p in statuses.values() if p.health.state != ProviderState.not_configured]
        ready = [p for p in configured if p.health.healthy]
        overall: OverallStatus = (
            "healthy" if configured and len(ready) == len(configured) else "degraded" if ready else "down"
        )
        # Requests, not attempts: from the log's rollups (a request's retries and fallbacks
        # count once). Without them, the providers' calls are all there is to add up.
        totals_all = self._log_totals or ProviderUsage(
            total_requests=sum(p.usage.total_requests for p in statuses.values()),
            total_attempts=sum(p.usage.total_attempts for p in statuses.values()),
            successful_requests=sum(p.usage.successful_requests for p in statuses.values()),
            failed_requests=sum(p.usage.failed_requests for p in statuses.values()),
            input_tokens=sum(p.usage.input_tokens for p in statuses.values()),
            output_tokens=sum(p.usage.output_tokens for p in statuses.values()),
            cost_usd=sum(p.usage.cost_usd for p in statuses.values()),
        )
        return SystemStatus(
            status=overall,
            providers=statuses,
            totals=totals_all,
            started_at=self.started_at,
            uptime_s=(utcnow() - self.started_at).total_seconds(),
            request_log=self.log.health(),
            routing_state=self._routing_state() if self._routing_state is not None else None,
        )

    def _provider_status(
        self, name: str, provider: BaseProvider | None, shared: MetricsRegistry, totals: dict[str, ProviderUsage]
    ) -> ProviderStatus:
        snap = shared.snapshot(name)
        breaker = self.breaker(name)
        if provider is None:
            detail = self.registry.unavailable.get(name)
            health = ProviderHealth(
                healthy=False, state=ProviderState.not_configured, detail=redact(detail) if detail else detail
            )
            spec = get_spec(name)
            display, models = (spec.display_name if spec is not None else name), []
        else:
            state = provider.state
            if state == ProviderState.ready and breaker.state == BreakerState.open:
                state = ProviderState.circuit_open
            health = ProviderHealth(
                healthy=provider.is_healthy and state in (ProviderState.ready, ProviderState.loading),
                state=state,
                detail=redact(provider.describe() or "") or None,
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
                last_error=redact(snap.last_error or (provider.last_error if provider else None) or "") or None,
                breaker=breaker.state,
                retry_in_s=breaker.retry_in_s(),
            ),
            usage=totals.get(name, ProviderUsage()),
        )

    # --- the shared view (everyone's traffic, from the log) ------------------------------------

    def recent_from_log(self) -> list[AttemptRecord]:
        since = utcnow() - timedelta(seconds=self.metrics.window_s)
        try:
            return self.log.recent_for_metrics(self.metrics.window_size, since)
        except Exception as exc:  # noqa: BLE001 - a broken log must not stop routing
            log.warning("could not read the request log: %s", redact(exc))
            return []

    async def shared_view(self) -> tuple[MetricsRegistry, dict[str, ProviderUsage]]:
        """Metrics rebuilt from the log, so that several processes sharing one database all
        show everyone's traffic. Read in a worker thread (the database is synchronous) and
        cached briefly: the dashboard polls every couple of seconds."""
        with self._shared_lock:
            if self._shared and self._clock() - self._shared[0] < _SHARED_STATUS_CACHE_S:
                return self._shared[1], self._shared[2]
        return await asyncio.to_thread(self._read_shared)

    def _read_shared(self) -> tuple[MetricsRegistry, dict[str, ProviderUsage]]:
        shared = MetricsRegistry(window_size=self.metrics.window_size, window_s=self.metrics.window_s)
        shared.seed(self.recent_from_log())
        try:
            totals = self.log.provider_totals()
            log_totals: ProviderUsage | None = self.log.usage_totals()
        except Exception as exc:  # noqa: BLE001
            log.warning("could not read totals from the request log: %s", redact(exc))
            totals, log_totals = {}, None
        with self._shared_lock:
            self._shared = (self._clock(), shared, totals)
            self._log_totals = log_totals
        return shared, totals


def _health_response(results: dict[str, bool]) -> HealthResponse:
    healthy = sum(results.values())
    status: HealthStatus = "ok" if results and healthy == len(results) else "degraded" if healthy else "down"
    return HealthResponse(status=status, providers=results)


async def _safe_health_check(provider: BaseProvider) -> bool:
    try:
        return bool(await provider.ahealth_check())
    except Exception as exc:  # noqa: BLE001 - a health check reports, it never raises
        return provider.mark_health(False, redact(exc))
