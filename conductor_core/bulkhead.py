"""A bulkhead per provider: at most `limit` calls at once, at most `queue` more waiting for a
slot, and past that a call is refused at once (`ProviderBusyError`: the gateway's 503 with
Retry-After). One provider that hangs then holds its own slots, never everyone's.

Waiting costs no thread: a waiter is a future on its caller's event loop. It works across
loops (the playground's loop and the gateway's may share one Conductor in tests), so the
state is guarded by a plain lock and a slot is handed over with `call_soon_threadsafe`.
A waiter that is cancelled (its client went away) leaves the queue; a slot handed to it
just then is passed on.
"""

from __future__ import annotations

import asyncio
import threading
from collections import deque

__all__ = ["Bulkhead", "BulkheadFull"]


class BulkheadFull(Exception):
    """Every slot is taken and the queue is full."""


class _Waiter:
    __slots__ = ("loop", "future", "granted")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = loop
        self.future: asyncio.Future[None] = loop.create_future()
        self.granted = False


class Bulkhead:
    def __init__(self, limit: int, queue: int) -> None:
        if limit < 1 or queue < 0:
            raise ValueError("a bulkhead needs limit >= 1 and queue >= 0")
        self.limit = limit
        self.queue = queue
        self._lock = threading.Lock()
        self._running = 0
        self._waiters: deque[_Waiter] = deque()

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return len(self._waiters)

    def has_room(self) -> bool:
        """Whether a call now would get a slot or a place in the queue."""
        return self._running < self.limit or len(self._waiters) < self.queue

    async def acquire(self, timeout: float | None = None) -> None:
        """A slot, now or after waiting in the queue (up to `timeout` s: then TimeoutError).
        Raises `BulkheadFull` at once when the queue is full too."""
        with self._lock:
            if self._running < self.limit and not self._waiters:
                self._running += 1
                return
            if len(self._waiters) >= self.queue:
                raise BulkheadFull()
            waiter = _Waiter(asyncio.get_running_loop())
            self._waiters.append(waiter)
        try:
            if timeout is None:
                await waiter.future
            else:
                await asyncio.wait_for(waiter.future, timeout)
        except BaseException:
            with self._lock:
                try:
                    self._waiters.remove(waiter)
                except ValueError:
                    pass
            if waiter.granted:  # release() chose us just as we gave up: pass the slot on
                self.release()
            raise

    def release(self) -> None:
        with self._lock:
            while self._waiters:
                waiter = self._waiters.popleft()
                if waiter.future.done() or waiter.loop.is_closed():
                    continue  # gave up already; its clean-up finds it gone and not granted
                # The slot goes straight to the waiter: _running stays as it is.
                waiter.granted = True
                waiter.loop.call_soon_threadsafe(_grant, waiter.future)
                return
            self._running -= 1


def _grant(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)
