"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer server-sent events):
the optional bearer key and the request body limit, both checked before a body is read."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable

from pydantic import SecretStr
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conductor_core.config import redact

from .errors import ApiError, error_response

__all__ = ["BearerKeyMiddleware", "BodyLimitMiddleware", "RedactingFilter", "OPEN_PATHS"]

#: Reachable without the key: a load balancer's probe must not need a secret.
OPEN_PATHS = frozenset({"/health"})


class BearerKeyMiddleware:
    """When a key is configured, every path but /health needs `Authorization: Bearer <key>`.
    `get_key` is read per request, so the key comes from the Conductor's settings."""

    def __init__(self, app: ASGIApp, get_key: Callable[[], SecretStr | None]) -> None:
        self.app = app
        self.get_key = get_key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        key = self.get_key()
        if key is None or not key.get_secret_value():
            await self.app(scope, receive, send)
            return
        presented = _bearer(scope)
        if presented is None:
            reason = "missing API key: send 'Authorization: Bearer <CONDUCTOR_API_KEY>'"
        elif not hmac.compare_digest(presented.encode(), key.get_secret_value().encode()):
            reason = "invalid API key: the bearer key does not match CONDUCTOR_API_KEY"
        else:
            await self.app(scope, receive, send)
            return
        error = ApiError(401, "authentication", reason, headers={"www-authenticate": "Bearer"})
        await error_response(error)(scope, receive, send)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


class _TooLarge(StarletteHTTPException):
    """Raised from `receive`: FastAPI re-raises HTTP exceptions met while reading a body, so
    the app's own handler renders it as a 413."""


class BodyLimitMiddleware:
    """413 for a body over `max_bytes`: at once when Content-Length says so, otherwise as soon
    as the streamed body passes the limit (before the endpoint has answered anything)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    def _error(self) -> ApiError:
        mib = self.max_bytes / (1024 * 1024)
        size = f"{mib:g} MiB" if mib >= 1 else f"{self.max_bytes} bytes"
        return ApiError(
            413,
            "request_too_large",
            f"request body is larger than the gateway accepts ({size}); shorten the conversation "
            "or raise CONDUCTOR_GATEWAY_MAX_BODY_BYTES",
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_bytes:
                    await error_response(self._error())(scope, receive, send)
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    raise _TooLarge(413, self._error().message)
            return message

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _TooLarge:
            if started:
                raise
            await error_response(self._error())(scope, receive, send)


class RedactingFilter(logging.Filter):
    """Runs `redact()` over a record's message, arguments and traceback: whatever a library
    logs, no key reaches a log line. Attached to the gateway's and uvicorn's loggers.
    Arguments keep their shape (uvicorn's access formatter unpacks them): numbers stay
    numbers, everything else becomes its redacted text."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        else:
            record.msg = redact(str(record.msg))
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_arg(value) for key, value in record.args.items()}
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        return True


def _redact_arg(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(value)
