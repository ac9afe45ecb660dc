"""One request fanned out to 2-4 targets at once: a task per target, their events merged as
they come, so the wall time is that of the slowest target, not the sum. Stopping the
compare (closing it) cancels every target still running, each recorded as cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable

from ..errors import BadRequestError, ProviderError
from ..models import ChatRequest, CompareEvent, Target, new_id
from .recording import Route

__all__ = ["fan_out", "check_targets"]

log = logging.getLogger("conductor.router")

_DONE = object()


def check_targets(targets: list[Target]) -> None:
    if not 2 <= len(targets) <= 4:
        raise BadRequestError(f"a compare takes 2 to 4 targets, got {len(targets)}", status_code=400)
    if any(t.provider == "auto" for t in targets):
        raise BadRequestError("compare targets name a provider; 'auto' is not a target", status_code=400)


async def fan_out(
    request: ChatRequest, targets: list[Target], stream: Callable[[ChatRequest, Route], AsyncIterator]
) -> AsyncIterator[CompareEvent]:
    """`stream(sub_request, route)` is the core's stream for one target."""
    check_targets(targets)
    group_id = new_id("cmp")
    events: asyncio.Queue = asyncio.Queue()

    async def run(index: int, target: Target) -> None:
        sub = request.model_copy(update={"provider": target.provider, "model": target.model})
        route = Route(sub, "compare", None, group_id)
        try:
            async for event in stream(sub, route):
                events.put_nowait(CompareEvent(index=index, target=target, group_id=group_id, event=event))
        except ProviderError as error:
            events.put_nowait(
                CompareEvent(index=index, target=target, group_id=group_id, error=error.to_response(route.request_id))
            )
        except Exception as exc:
            log.exception("compare target %s crashed", target.label)
            err = ProviderError(f"{target.label} failed unexpectedly: {exc}", provider=target.provider)
            events.put_nowait(CompareEvent(index=index, target=target, group_id=group_id, error=err.to_response()))
        finally:
            events.put_nowait(_DONE)

    tasks = [asyncio.ensure_future(run(i, t)) for i, t in enumerate(targets)]
    running = len(tasks)
    try:
        while running:
            item = await events.get()
            if item is _DONE:
                running -= 1
            else:
                yield item
    finally:
        for task in tasks:
            task.cancel()  # a target still streaming records itself as cancelled
        await asyncio.gather(*tasks, return_exceptions=True)
