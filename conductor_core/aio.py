"""The bridge from synchronous callers (the playground, scripts, tests) to the async core.

One event loop per process runs in a daemon thread for the life of the process, so an SDK
client made on it is never left bound to a dead loop: Streamlit runs every rerun in a new
script thread, and a loop per call or per thread would strand clients and connections.
Any thread may call `run()` or iterate `iterate()`; the loop does the waiting.

Code that already runs on an event loop (the gateway) awaits the core directly instead.
"""

from __future__ import annotations

import asyncio
import os
import threading
import weakref
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["loop", "run", "iterate", "in_loop_thread", "PerLoop"]

T = TypeVar("T")

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
#: How long closing an abandoned stream may wait for the core to record it.
_CLOSE_TIMEOUT_S = 10.0


def loop() -> asyncio.AbstractEventLoop:
    """The process's loop, started on first use (and again in a forked child)."""
    global _loop, _thread
    current = _loop
    if current is not None:
        return current
    with _lock:
        if _loop is None:
            ready = threading.Event()
            new = asyncio.new_event_loop()
            thread = threading.Thread(target=_serve, args=(new, ready), name="conductor-loop", daemon=True)
            thread.start()
            ready.wait()
            _thread, _loop = thread, new
    return _loop


def _serve(new: asyncio.AbstractEventLoop, ready: threading.Event) -> None:
    asyncio.set_event_loop(new)
    new.call_soon(ready.set)
    new.run_forever()


def _forget_after_fork() -> None:
    # The loop's thread does not exist in a forked child: start another on first use.
    global _loop, _thread, _lock
    _loop, _thread, _lock = None, None, threading.Lock()


os.register_at_fork(after_in_child=_forget_after_fork)


def in_loop_thread() -> bool:
    return threading.current_thread() is _thread


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run `coro` on the process's loop and wait for its result in this thread."""
    if in_loop_thread():
        coro.close()
        raise RuntimeError("a synchronous Conductor call was made on Conductor's own event loop; await the async API")
    future = asyncio.run_coroutine_threadsafe(coro, loop())
    try:
        return future.result()
    except BaseException:
        future.cancel()  # KeyboardInterrupt and the like: stop the work too
        raise


async def _next(iterator: AsyncIterator[T]) -> T:
    return await iterator.__anext__()


def iterate(make: Callable[[], AsyncIterator[T]]) -> Iterator[T]:
    """The async iterator `make()` builds, as a generator for this thread. Closing it early
    (or dropping it: Streamlit abandons generators mid-stream) closes the async iterator on
    the loop and waits until it has finished, so a stopped stream is recorded before
    `close()` returns."""
    events = make()
    done = False
    try:
        while True:
            future = asyncio.run_coroutine_threadsafe(_next(events), loop())
            try:
                item = future.result()
            except StopAsyncIteration:
                done = True
                return
            except BaseException:
                done = True  # the iterator raised: it has finished its own clean-up
                future.cancel()
                raise
            yield item
    finally:
        if not done:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                closing = asyncio.run_coroutine_threadsafe(aclose(), loop())
                if not in_loop_thread():  # finalised by the GC on the loop's own thread: cannot wait
                    try:
                        closing.result(timeout=_CLOSE_TIMEOUT_S)
                    except Exception:  # noqa: BLE001 - closing reports through the core's own records
                        pass


class PerLoop(Generic[T]):
    """One object per event loop, built on first use there (SDK clients: httpx's connection
    pool belongs to the loop it was made on). Dropped with its loop."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build = build
        self._items: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, T] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()

    def get(self) -> T:
        current = asyncio.get_running_loop()
        item = self._items.get(current)
        if item is None:
            with self._lock:
                item = self._items.get(current)
                if item is None:
                    item = self._items[current] = self._build()
        return item

    def pop_current(self) -> T | None:
        """This loop's object, forgotten (to close it)."""
        try:
            current = asyncio.get_running_loop()
        except RuntimeError:
            return None
        with self._lock:
            return self._items.pop(current, None)
