"""Reading a request body, the gateway's own way (the routes read it themselves rather than
let FastAPI do it): JSON, checked for text no provider can be sent and for too many
messages before anything else, and parsed off the event loop when it is large, so that
one client's big body never pauses every other request (`/health` included).

A worker thread still shares the GIL, but the interpreter hands it back to the event loop
every few milliseconds (`sys.getswitchinterval()`), where a parse on the loop would hold it
for the whole body."""

from __future__ import annotations

import asyncio
import json
import re
import weakref
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import orjson

from conductor_core.models import unencodable_message, unencodable_text

from .errors import ApiError

__all__ = ["INLINE_BYTES", "load_json", "may_hold_surrogate", "check_text", "check_message_count", "off_loop"]

T = TypeVar("T")

#: Bodies up to this size are parsed on the event loop (a thread hop costs more than they do).
INLINE_BYTES = 64 * 1024

# A lone surrogate reaches Python's text only as a JSON escape \uD800-\uDFFF, or as the raw
# UTF-8-style bytes ED A0..BF (which Python's json reads with 'surrogatepass'). A body with
# neither cannot hold one: it skips the walk over its text.
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")


def may_hold_surrogate(raw: bytes) -> bool:
    return _SURROGATE.search(raw) is not None


def load_json(raw: bytes) -> Any:
    """The body as JSON: orjson (fast and strict) first; Python's json for what orjson refuses
    (lone surrogates, numbers past 64 bits), so that those reach the checks that name the
    field, and its error message when it is not JSON. NaN and Infinity are not JSON: refused."""
    if not raw.strip():
        raise ApiError(400, "validation_error", "a JSON request body is required", details=[])
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        pass
    try:
        return json.loads(raw, parse_constant=_not_json)
    except RecursionError:
        raise ApiError(
            400, "validation_error", "request body could not be read as JSON (nested too deeply)", details=[]
        ) from None
    except ValueError as exc:
        raise ApiError(400, "validation_error", f"request body is not valid JSON ({exc})", details=[]) from None


def _not_json(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_text(data: Any) -> None:
    """400 naming the field whose text cannot be encoded (a lone surrogate): no provider could
    be sent it, so it is refused before any is tried."""
    found = unencodable_text(data)
    if found:
        message = unencodable_message(*found)
        raise ApiError(
            400, "validation_error", message, param=found[0], details=[{"field": found[0], "message": message}]
        )


def check_message_count(count: int, limit: int) -> None:
    if count > limit:
        raise ApiError(
            400,
            "validation_error",
            f"messages holds {count} messages; the gateway takes at most {limit} in one request "
            "(CONDUCTOR_GATEWAY_MAX_MESSAGES): send fewer, or raise the limit",
            param="messages",
        )


async def off_loop(size: int, work: Callable[..., T], *args: Any) -> T:
    """`work(*args)`, on the event loop for a small body, in a worker thread for a large one,
    one large body at a time: each thread at work takes turns at the GIL with the event loop,
    so several would leave the loop a smaller share (parsing is CPU-bound: more threads would
    not finish sooner)."""
    if size <= INLINE_BYTES:
        return work(*args)
    return await anyio.to_thread.run_sync(work, *args, limiter=_one_at_a_time())


def _one_at_a_time() -> anyio.CapacityLimiter:
    """This event loop's limiter (made on first use, inside the loop, as anyio asks)."""
    loop = asyncio.get_running_loop()
    limiter = _LIMITERS.get(loop)
    if limiter is None:
        limiter = _LIMITERS[loop] = anyio.CapacityLimiter(1)
    return limiter


_LIMITERS: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, anyio.CapacityLimiter] = weakref.WeakKeyDictionary()
