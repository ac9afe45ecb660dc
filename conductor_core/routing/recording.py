"""What an attempt leaves behind: the breaker's verdict, the live metrics, a request-log row,
and, on the route, the list of attempts a user sees. One place, so that chat, streams and
compares record alike.

Failures the request caused or a person chose (`provider_at_fault` is False: a bad
request, a stopped stream) are logged but free the breaker instead of counting against it;
the metrics leave them out of success rates too."""

from __future__ import annotations

import time
from collections.abc import Callable

from .. import overhead
from ..breaker import CircuitBreaker
from ..config import redact
from ..errors import NotConfiguredError, ProviderError, provider_at_fault
from ..keys.usage import current_use
from ..metrics import MetricsRegistry
from ..models import (
    Attempt,
    AttemptRecord,
    AttemptStatus,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ResponseAnalytics,
    RouteMode,
    RoutingInfo,
    RoutingPolicy,
    TextPart,
    describe_attachment,
    new_id,
    tokens_per_second,
)
from ..providers import BaseProvider
from ..providers.base import StreamStats
from ..store import RequestLog

__all__ = ["Route", "Recorder", "cancelled_error"]


class Route:
    """Per-request bookkeeping: what was tried, for the response and the log."""

    __slots__ = ("request_id", "mode", "policy", "group_id", "attempts", "reason", "prompt", "started", "logged")

    def __init__(
        self,
        request: ChatRequest,
        mode: RouteMode,
        policy: RoutingPolicy | None,
        group_id: str | None,
        request_id: str | None = None,
    ) -> None:
        self.request_id = request_id or new_id()
        self.mode = mode
        self.policy = policy
        self.group_id = group_id
        self.attempts: list[Attempt] = []
        self.reason: str | None = None
        self.started = False  # a stream has shown its first content (StreamStart sent)
        self.prompt = "\n".join(f"{m.role.value}: {_logged_text(m)}" for m in request.messages)
        # Attempts written to the log so far. Not len(attempts): that also lists calls
        # refused before they were made (breaker open, bulkhead full), which are not logged.
        self.logged = 0

    def next_attempt_index(self) -> int:
        """The log position of the attempt about to be written: 0 for the first, 1, 2... for
        the retries and fallbacks after it (what makes "requests" countable in the log)."""
        index = self.logged
        self.logged += 1
        return index

    def info(self) -> RoutingInfo:
        return RoutingInfo(
            mode=self.mode, policy=self.policy, reason=self.reason, attempts=list(self.attempts), group_id=self.group_id
        )


def _logged_text(message: ChatMessage) -> str:
    """A message as the log keeps it: its text, and each attachment named, never its bytes."""
    if not message.parts:
        return message.content
    return "\n".join(p.text if isinstance(p, TextPart) else describe_attachment(p) for p in message.parts)


def cancelled_error(provider: str, what: str = "the client stopped reading before the end") -> ProviderError:
    error = ProviderError(what, provider=provider)
    error.type = "cancelled"
    return error


class Recorder:
    def __init__(
        self,
        metrics: MetricsRegistry,
        log: RequestLog,
        source: str,
        breaker,
        share: Callable[[AttemptRecord], None] | None = None,
    ) -> None:
        self.metrics = metrics
        self.log = log
        self.source = source
        self._breaker = breaker  # name -> CircuitBreaker
        self._share = share  # the attempt for other replicas' metrics (conductor_core.state)

    def success(self, provider: BaseProvider, route: Route, response: ChatResponse, *, streamed: bool) -> None:
        self._breaker(provider.name).record_success()
        a = response.analytics
        response.metadata.id = route.request_id
        self.write(
            AttemptRecord(
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
                attempt_index=route.next_attempt_index(),
            )
        )

    def failure(
        self,
        provider: BaseProvider,
        request: ChatRequest,
        route: Route,
        error: ProviderError,
        started: float,
        *,
        streamed: bool,
        stats: StreamStats | None = None,
    ) -> AttemptRecord:
        """A failed attempt (before any text, or a non-streamed call): error status."""
        self.verdict(self._breaker(provider.name), error)
        record = self.record(provider, request, route, "error", error, started, streamed=streamed, stats=stats)
        self.write(record)
        route.attempts.append(attempt_of(record))
        return record

    def incomplete(
        self,
        provider: BaseProvider,
        request: ChatRequest,
        route: Route,
        error: ProviderError,
        started: float,
        text: str,
        stats: StreamStats,
    ) -> AttemptRecord:
        """A stream that ended after text (cut, or stopped by its reader): incomplete."""
        self.verdict(self._breaker(provider.name), error)
        record = self.record(
            provider, request, route, "incomplete", error, started, streamed=True, stats=stats, answer=text
        )
        self.write(record)
        route.attempts.append(attempt_of(record))
        return record

    @staticmethod
    def verdict(breaker: CircuitBreaker, error: ProviderError) -> None:
        if provider_at_fault(error.type) and not isinstance(error, NotConfiguredError):
            breaker.record_failure()
        else:
            breaker.release()  # the request's fault (or its reader's choice), not the provider's

    def record(
        self,
        provider: BaseProvider,
        request: ChatRequest,
        route: Route,
        status: AttemptStatus,
        error: ProviderError,
        started: float,
        *,
        streamed: bool,
        stats: StreamStats | None = None,
        answer: str | None = None,
    ) -> AttemptRecord:
        # What arrived before the end counts too: first-token time and chunks (the provider
        # reported no usage for a stream that did not finish: counted, see partial analytics).
        latency = stats.elapsed_ms() if stats is not None else (time.perf_counter() - started) * 1000
        return AttemptRecord(
            request_id=route.request_id,
            provider=provider.name,
            model=(stats.model if stats is not None and stats.model else provider.resolve_model(request)),
            route=route.mode,
            group_id=route.group_id,
            source=self.source,
            streamed=streamed,
            status=status,
            error_type=error.type,
            error_message=redact(error.message),
            output_tokens=stats.chunks if stats is not None else 0,
            latency_ms=round(latency, 3),
            ttft_ms=round(stats.ttft_ms, 3) if stats is not None and stats.ttft_ms is not None else None,
            prompt=route.prompt,
            answer=answer,
            attempt_index=route.next_attempt_index(),
        )

    def write(self, record: AttemptRecord) -> None:
        use = current_use()
        if use is not None:  # made with a gateway key: stamped with its id, counted against its limits
            use.add(record)
        self.metrics.record(record)
        if self._share is not None:
            self._share(record)
        clock = overhead.current()
        if clock is not None:  # a server timing the request: this attempt's share of Conductor's time
            if record.status == "ok":
                clock.hold(record, self.log)  # written with its share when the response is ready
                return
            record.overhead_ms = clock.attribute()
        # Queued for the log's writer thread: never raises, never waits for a commit.
        self.log.submit(record)


def attempt_of(record: AttemptRecord) -> Attempt:
    return Attempt(
        provider=record.provider,
        model=record.model,
        ok=record.status == "ok",
        error_type=record.error_type,
        error=record.error_message,
        latency_ms=record.latency_ms,
    )


def partial_analytics(record: AttemptRecord, stats: StreamStats) -> ResponseAnalytics:
    """The figures of a stream that ended early."""
    latency = record.latency_ms or 0.0
    return ResponseAnalytics(
        latency_ms=latency,
        time_to_first_token_ms=record.ttft_ms,
        output_tokens=stats.chunks,
        output_tokens_estimated=True,
        tokens_per_second=_round(tokens_per_second(stats.chunks, latency, record.ttft_ms)),
        load_ms=round(stats.load_ms, 3) if stats.load_ms is not None else None,
    )


def _round(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None
