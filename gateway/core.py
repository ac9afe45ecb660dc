"""The bridge from async endpoints to the synchronous core: every call runs in a worker
thread so the event loop never blocks; a stream is read by one worker for its whole life."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from typing import Any, TypeVar

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from conductor_core.errors import ProviderError
from conductor_core.router import Conductor

from .errors import ApiError, unexpected

__all__ = ["call", "conductor_of", "stream_executor", "ThreadedStream"]

T = TypeVar("T")
_END = object()


def stream_executor(request: Request) -> Executor:
    return request.app.state.stream_executor


def conductor_of(request: Request) -> Conductor:
    conductor = getattr(request.app.state, "conductor", None)
    if conductor is None:  # only before the lifespan has built it
        raise ApiError(503, "starting", "the gateway is still starting; retry in a moment", retryable=True, retry_after=1)
    return conductor


async def call(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """`fn(*args)` in a worker thread. ProviderErrors pass through (their handler maps them);
    anything else is a bug, logged redacted and answered with a 500 that quotes an id."""
    try:
        return await run_in_threadpool(fn, *args, **kwargs)
    except (ProviderError, ApiError):
        raise
    except Exception as exc:  # noqa: BLE001
        raise unexpected(exc) from None


class ThreadedStream:
    """A core stream consumed by one worker thread for its whole life. Events cross to the
    event loop through a shared list; the loop is woken once per burst, not once per token,
    and takes everything that has arrived in one go. Cheaper than a thread hop per token
    (100 streams x hundreds of tokens), and the generator is only ever touched, and closed,
    by the thread that runs it."""

    def __init__(self, events: Iterator[Any], executor: Executor) -> None:
        self._events = events
        self._loop = asyncio.get_running_loop()
        self._ready = asyncio.Event()
        self._lock = threading.Lock()
        self._pending: list[tuple[Any, BaseException | None]] = []
        self._wake_scheduled = False
        self._stop = threading.Event()
        self._end: tuple[Any, BaseException | None] | None = None
        self._future = executor.submit(self._run)

    def _post(self, item: Any, error: BaseException | None = None) -> None:
        with self._lock:
            self._pending.append((item, error))
            if self._wake_scheduled:
                return  # the reader has a wake-up coming and will take this too
            self._wake_scheduled = True
        try:
            self._loop.call_soon_threadsafe(self._ready.set)
        except RuntimeError:  # the loop is gone (shutdown): nobody is reading
            self._stop.set()

    def _run(self) -> None:
        try:
            for item in self._events:
                if self._stop.is_set():
                    break
                self._post(item)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader, which decides
            self._post(_END, exc)
            return
        finally:
            # The reader went away (or the stream ended): close here, in the generator's own
            # thread, so the core records a cancelled attempt and frees the provider.
            close = getattr(self._events, "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # noqa: BLE001
                    pass
        self._post(_END)

    async def _take(self) -> list[tuple[Any, BaseException | None]]:
        while True:
            with self._lock:
                taken, self._pending = self._pending, []
                if not taken:
                    self._wake_scheduled = False
                    self._ready.clear()
            if taken:
                return taken
            await self._ready.wait()

    async def batch(self) -> list[Any]:
        """Every event that has arrived (waiting for at least one); [] at the end. An error
        from the core is raised after the events that came before it have been returned."""
        items: list[Any] = []
        if self._end is None:
            for item, error in await self._take():
                if item is _END:
                    self._end = (item, error)
                    break
                items.append(item)
        if items:
            return items
        assert self._end is not None
        error = self._end[1]
        self._end = (_END, None)  # raise once
        if error is None:
            return []
        if isinstance(error, (ProviderError, ApiError)):
            raise error
        raise unexpected(error) from None

    def cancel(self) -> None:
        """Stop reading: the worker closes the core stream at its next event."""
        self._stop.set()
