"""What a route that answers in plain ASGI (without FastAPI's per-request machinery) needs:
its body, read within the gateway's limit, and cancellation when the client goes away."""

from __future__ import annotations

import asyncio

from starlette.types import Receive

from .errors import ClientDisconnected
from .middleware import too_large

__all__ = ["DisconnectWatch", "read_body"]


async def read_body(receive: Receive, max_bytes: int) -> bytes:
    """The whole request body; 413 (ApiError) as soon as it passes `max_bytes`,
    `ClientDisconnected` if the client leaves before it is sent."""
    first = await receive()
    if first["type"] == "http.disconnect":
        raise ClientDisconnected()
    body: bytes = first.get("body", b"")
    if len(body) > max_bytes:
        raise too_large(max_bytes)
    if not first.get("more_body", False):
        return body
    parts = [body]
    size = len(body)
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientDisconnected()
        part = message.get("body", b"")
        size += len(part)
        if size > max_bytes:
            raise too_large(max_bytes)
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


class DisconnectWatch:
    """Cancels the task that made it if the client disconnects, until `close()`: its upstream
    call (or its place in a provider's queue, or its stream) is given up at once, and the
    core records it as cancelled. The task tells such a cancellation from any other by
    `gone`, and then `uncancel()`s itself to clean up. One watcher for the whole request (a
    stream's head and body alike), after its body has been read: only a disconnect can come
    from `receive` then."""

    __slots__ = ("gone", "_task", "_watcher")

    def __init__(self, receive: Receive) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._task = task
        self.gone = False
        self._watcher = asyncio.get_running_loop().create_task(self._watch(receive))

    async def _watch(self, receive: Receive) -> None:
        while (await receive())["type"] != "http.disconnect":
            pass
        self.gone = True
        self._task.cancel()

    def close(self) -> None:
        self._watcher.cancel()
