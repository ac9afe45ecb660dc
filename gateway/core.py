"""The gateway's side of the core: the `AsyncConductor` it awaits on uvicorn's event loop (no
thread per request: a request waiting on a provider is a suspended coroutine), the request
id every response carries, and cancellation when the client goes away."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any, TypeVar

from fastapi import Request

from conductor_core.routing import AsyncConductor

from .asgi import DisconnectWatch
from .errors import ApiError, ClientDisconnected

__all__ = ["ClientDisconnected", "core_of", "core_of_app", "request_id_of", "until_disconnect"]

T = TypeVar("T")


def core_of(request: Request) -> AsyncConductor:
    return core_of_app(request.app)


def core_of_app(app: Any) -> AsyncConductor:
    core = getattr(app.state, "core", None)
    if core is None:  # only before the lifespan has built it
        raise ApiError(
            503, "starting", "the gateway is still starting; retry in a moment", retryable=True, retry_after=1
        )
    return core


def request_id_of(request: Request) -> str:
    """The id the front door chose (the client's own, when valid)."""
    return request.scope["state"]["request_id"]


async def until_disconnect(request: Request, work: Awaitable[T]) -> T:
    """`await work`, cancelled if the client disconnects meanwhile: its upstream call (or its
    place in a provider's queue) is given up at once, and recorded as cancelled."""
    watch = DisconnectWatch(request.receive)
    try:
        return await work
    except asyncio.CancelledError:
        if not watch.gone:
            raise
        if (task := asyncio.current_task()) is not None:  # always: this is a coroutine
            task.uncancel()
        raise ClientDisconnected() from None
    finally:
        watch.close()
