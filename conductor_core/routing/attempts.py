"""Running attempts at one provider: admission (its circuit breaker and bulkhead), one call
or one stream, and the retries between attempts. The only retry loop in the process (every
SDK client is built with its own retries off).

A caller that goes away cancels its attempt wherever it is: waiting in the bulkhead's
queue, waiting for the upstream, or part-way through a stream (`CancelledError` from the
event loop, `GeneratorExit` from a closed stream). The upstream call is closed, its slot
freed, and the attempt recorded as cancelled (not the provider's fault).

A candidate with a first-try deadline (`Candidate.first_try_s`, see first_try.py) that shows
no first token in time is a timeout, recorded against the provider and not retried here: the
caller moves on to the next candidate. A non-streamed request is streamed for such an attempt
(the answer is the same `ChatResponse`), so the deadline is on its first token too, never on
the length of the answer."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from contextlib import aclosing
from typing import Any

from ..breaker import CircuitBreaker
from ..bulkhead import Bulkhead, BulkheadFull
from ..config import Settings
from ..errors import (
    CircuitOpenError,
    ProviderBusyError,
    ProviderError,
    ProviderTimeoutError,
    StreamInterruptedError,
)
from ..models import (
    Attempt,
    ChatRequest,
    ChatResponse,
    ResponseMetadata,
    StreamDone,
    StreamIncomplete,
    StreamStart,
    TextDelta,
    ToolCallDelta,
)
from ..providers import BaseProvider
from ..providers.base import StreamStats
from . import first_try, retry
from .ranking import Candidate
from .recording import Recorder, Route, cancelled_error, partial_analytics

__all__ = ["Attempts"]

#: Retry-After for a full bulkhead: a slot frees when any call to that provider ends.
_BUSY_RETRY_AFTER_S = 1.0


class Attempts:
    def __init__(
        self,
        settings: Settings,
        recorder: Recorder,
        breaker: Callable[[str], CircuitBreaker],
        sleep: Callable[[float], Awaitable[None]],
    ) -> None:
        self.settings = settings
        self.recorder = recorder
        self.breaker = breaker
        self.sleep = sleep
        self._bulkheads: dict[str, Bulkhead] = {}
        self._bulkheads_lock = threading.Lock()

    # --- admission ------------------------------------------------------------------------

    def bulkhead(self, provider: BaseProvider) -> Bulkhead:
        bulkhead = self._bulkheads.get(provider.name)
        if bulkhead is None:
            with self._bulkheads_lock:
                bulkhead = self._bulkheads.get(provider.name)
                if bulkhead is None:
                    limit = provider.max_concurrency or self.settings.bulkhead_limit
                    bulkhead = self._bulkheads[provider.name] = Bulkhead(limit, self.settings.bulkhead_queue)
        return bulkhead

    def breaker_open(self, name: str) -> CircuitOpenError:
        wait = self.breaker(name).retry_in_s()
        when = f" in {wait:.0f} s" if wait else " soon"
        return CircuitOpenError(
            f"{name} is failing repeatedly, so Conductor paused it; it will be tried again{when}",
            provider=name,
            status_code=503,
            retryable=True,
            retry_after=max(1.0, wait or 0.0),
        )

    async def admit(self, provider: BaseProvider, route: Route) -> Bulkhead:
        """A slot in the provider's bulkhead and its breaker's leave, or a fast failure (not
        logged: no call was made; the route lists it, so AUTO's fallback can say why)."""
        try:
            return await self._admit(provider)
        except ProviderError as error:
            route.attempts.append(
                Attempt(
                    provider=provider.name,
                    model=provider.default_model,
                    ok=False,
                    error_type=error.type,
                    error=error.message,
                )
            )
            raise

    async def _admit(self, provider: BaseProvider) -> Bulkhead:
        breaker = self.breaker(provider.name)
        if not breaker.would_allow():
            raise self.breaker_open(provider.name)
        bulkhead = self.bulkhead(provider)
        try:
            await bulkhead.acquire(timeout=provider.timeout_s)
        except BulkheadFull:
            raise self._busy(
                provider,
                bulkhead,
                f"{provider.name} has {bulkhead.limit} calls running and {bulkhead.waiting} waiting, its most",
            ) from None
        except TimeoutError:
            raise self._busy(
                provider,
                bulkhead,
                f"no call to {provider.name} finished in {provider.timeout_s:g} s to free a slot for this one",
            ) from None
        if not breaker.allow():
            bulkhead.release()
            raise self.breaker_open(provider.name)
        return bulkhead

    @staticmethod
    def _busy(provider: BaseProvider, bulkhead: Bulkhead, why: str) -> ProviderBusyError:
        return ProviderBusyError(
            f"{why}: retry in a moment (limits: CONDUCTOR_BULKHEAD_LIMIT={bulkhead.limit}, "
            f"CONDUCTOR_BULKHEAD_QUEUE={bulkhead.queue})",
            provider=provider.name,
            status_code=503,
            retryable=True,
            retry_after=_BUSY_RETRY_AFTER_S,
        )

    # --- one answer -------------------------------------------------------------------------

    async def call(self, candidate: Candidate, request: ChatRequest, route: Route) -> ChatResponse:
        if candidate.first_try_s is not None and candidate.provider.can_stream:
            return await self._call_by_stream(candidate, request, route)
        started = time.monotonic()
        try:
            return await self._call_once(candidate.provider, request, route)
        except ProviderError as error:
            if not retry.should_retry(error):
                raise
            first_error = error
        async for attempt in retry.after_first(self.settings, self.sleep, started, first_error):
            with attempt:
                return await self._call_once(candidate.provider, request, route)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _call_once(self, provider: BaseProvider, request: ChatRequest, route: Route) -> ChatResponse:
        bulkhead = await self.admit(provider, route)
        started = time.perf_counter()
        try:
            response = await provider.achat(request)
        except ProviderError as error:
            self.recorder.failure(provider, request, route, error, started, streamed=False)
            raise
        except asyncio.CancelledError:  # the client went away: the upstream call is cancelled with it
            self.recorder.failure(
                provider,
                request,
                route,
                cancelled_error(provider.name, "the client went away"),
                started,
                streamed=False,
            )
            raise
        except BaseException:
            self.breaker(provider.name).release()
            raise
        finally:
            bulkhead.release()
        self.recorder.success(provider, route, response, streamed=False)
        return response

    async def _call_by_stream(self, candidate: Candidate, request: ChatRequest, route: Route) -> ChatResponse:
        """A non-streamed answer read from a stream, so a first-try deadline applies to its first
        token. A stream cut after text was recorded as incomplete: the caller may fall back."""
        async with aclosing(self.stream(candidate, request, route)) as events:
            async for event in events:
                if isinstance(event, StreamDone):
                    return event.response
                if isinstance(event, StreamIncomplete):
                    error = event.error
                    raise StreamInterruptedError(
                        error.message, provider=error.provider, status_code=error.status_code, retryable=False
                    )
        raise StreamInterruptedError(
            f"{candidate.provider.name} ended the stream without an answer", provider=candidate.provider.name
        )

    # --- one stream ---------------------------------------------------------------------------

    async def stream(self, candidate: Candidate, request: ChatRequest, route: Route) -> AsyncGenerator[Any, None]:
        started = time.monotonic()
        try:
            async with aclosing(self._stream_once(candidate, request, route)) as events:
                async for event in events:
                    yield event
            return
        except ProviderError as error:
            if not retry.should_retry(error):
                raise
            first_error = error
        async for attempt in retry.after_first(self.settings, self.sleep, started, first_error):
            with attempt:
                async with aclosing(self._stream_once(candidate, request, route)) as events:
                    async for event in events:
                        yield event
                return
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    async def _stream_once(self, candidate: Candidate, request: ChatRequest, route: Route) -> AsyncGenerator[Any, None]:
        provider = candidate.provider
        bulkhead = await self.admit(provider, route)
        started = time.perf_counter()
        stats = StreamStats()
        parts: list[str] = []
        finished = False
        events = provider.astream(request, stats=stats)
        # Until the first content, with a first-try deadline: each piece is awaited with what is left of it.
        first_by = None if candidate.first_try_s is None else time.monotonic() + candidate.first_try_s
        try:
            while True:
                try:
                    if first_by is None:
                        event = await anext(events)
                    else:
                        event = await asyncio.wait_for(anext(events), max(0.0, first_by - time.monotonic()))
                except StopAsyncIteration:
                    break
                except TimeoutError:
                    raise _missed_first_try(provider, candidate.first_try_s) from None
                kind = type(event)
                if kind is TextDelta or kind is ToolCallDelta:
                    first_by = None
                    if not route.started:  # the first content: this attempt serves (no fallback after text)
                        route.started = True
                        yield StreamStart(
                            request_id=route.request_id,
                            provider=provider.name,
                            model=stats.model,
                            upstream_id=stats.response_id,
                            system_fingerprint=stats.system_fingerprint,
                        )
                    if kind is TextDelta:
                        parts.append(event.text)
                elif kind is StreamDone:
                    finished = True
                    route.reason = route.reason or candidate.reason
                    event.response.routing = route.info()
                    self.recorder.success(provider, route, event.response, streamed=True)
                yield event
        except StreamInterruptedError as error:
            if not error.partial_text and not stats.chunks:
                self.recorder.failure(provider, request, route, error, started, streamed=True, stats=stats)
                raise  # nothing shown yet: retry or fall back
            yield self._incomplete(provider, request, route, error, started, "".join(parts), stats)
        except ProviderError as error:
            self.recorder.failure(provider, request, route, error, started, streamed=True, stats=stats)
            raise
        except (GeneratorExit, asyncio.CancelledError):
            if not finished:  # the reader went away (a rerun, a closed tab, a Stop): keep the record
                self._stopped(provider, request, route, started, "".join(parts), stats)
            raise
        finally:
            await events.aclose()  # the upstream stream (or the local model's turn) ends now
            bulkhead.release()

    def _stopped(
        self, provider: BaseProvider, request: ChatRequest, route: Route, started: float, text: str, stats: StreamStats
    ) -> None:
        error = cancelled_error(provider.name)
        if stats.chunks:
            self.recorder.incomplete(provider, request, route, error, started, text, stats)
        else:
            self.recorder.failure(provider, request, route, error, started, streamed=True, stats=stats)

    def _incomplete(
        self,
        provider: BaseProvider,
        request: ChatRequest,
        route: Route,
        error: ProviderError,
        started: float,
        text: str,
        stats: StreamStats,
    ) -> StreamIncomplete:
        record = self.recorder.incomplete(provider, request, route, error, started, text, stats)
        route.reason = route.reason or "stream broke after text was shown"
        partial = ChatResponse(
            content=text,
            metadata=ResponseMetadata(
                id=route.request_id,
                provider=provider.name,
                model=record.model or provider.resolve_model(request),
                finish_reason="incomplete",
                started_at=stats.started_at,
            ),
            analytics=partial_analytics(record, stats),
            routing=route.info(),
        )
        return StreamIncomplete(partial=partial, error=error.to_response(route.request_id))


def _missed_first_try(provider: BaseProvider, deadline_s: float | None) -> ProviderTimeoutError:
    """A timeout (it counts against the provider) that the retry loop leaves to the next candidate."""
    error = ProviderTimeoutError(first_try.why(provider.name, deadline_s or 0.0), provider=provider.name)
    error.retry_in_process = False
    return error
