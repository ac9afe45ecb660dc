"""When to retry and how long to wait, as tenacity strategies (pure decisions), and the one
retry loop's entry after a first failed attempt.

Most calls succeed at the first try, so the first attempt runs outside tenacity, whose
per-call loop costs more than the rest of an attempt's bookkeeping. Only a retryable failure
enters the loop (`after_first`), replayed as tenacity's attempt 1 and dated from when it
began, so the stop, wait and reraise decisions are tenacity's own."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

from tenacity import (
    AsyncRetrying,
    AttemptManager,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)

from ..config import Settings
from ..errors import ProviderError

__all__ = ["should_retry", "retrying", "after_first"]

_backoff = wait_exponential_jitter(initial=0.2, max=4.0, jitter=0.2)


def should_retry(error: BaseException) -> bool:
    """Retry in-process what may pass (rate limits, timeouts, 5xx, a stream cut before text),
    never what Conductor refused itself (a paused or full provider: no call was made)."""
    return isinstance(error, ProviderError) and error.retryable and error.retry_in_process


def retrying(settings: Settings, sleep: Callable[[float], Awaitable[None]]) -> AsyncRetrying:
    def wait(state: RetryCallState) -> float:
        error = state.outcome.exception() if state.outcome else None
        retry_after = getattr(error, "retry_after", None)
        if retry_after is not None:
            return min(retry_after, settings.retry_budget_s)  # honour the server, never past our budget
        return _backoff(state)

    return AsyncRetrying(
        retry=retry_if_exception(should_retry),
        stop=stop_after_attempt(settings.max_retries + 1) | stop_before_delay(settings.retry_budget_s),
        wait=wait,
        sleep=sleep,
        reraise=True,
    )


async def after_first(
    settings: Settings, sleep: Callable[[float], Awaitable[None]], started: float, first_error: ProviderError
) -> AsyncIterator[AttemptManager]:
    """tenacity's attempts after a first one (begun at monotonic `started`) failed with
    `first_error`: waits as tenacity decides between them, then re-raises the last error."""
    replay: ProviderError | None = first_error
    async for attempt in retrying(settings, sleep):
        if replay is None:
            yield attempt
            continue
        with attempt:  # records the failure; tenacity's next step sleeps or re-raises it
            attempt.retry_state.start_time = started
            error, replay = replay, None
            raise error
