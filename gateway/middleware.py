"""Pure ASGI middleware (no BaseHTTPMiddleware: it would buffer server-sent events): the
request id and the overhead figure every response carries, the bearer key (and the refusal
to serve a non-loopback address without one), and the request body limit, all before a body
is read, in one layer (`FrontDoor`); CORS's refusals in the gateway's error shape; and the
filter that redacts every log line."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import SecretStr
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware.cors import CORSMiddleware
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conductor_core import overhead
from conductor_core.config import redact
from conductor_core.keys.store import KEY_PREFIX
from conductor_core.models import new_id

from .errors import ApiError, error_response

__all__ = [
    "CorsMiddleware",
    "FrontDoor",
    "OVERHEAD_HEADER",
    "RedactingFilter",
    "Routes",
    "overhead_value",
    "too_large",
    "OPEN_PATHS",
    "MIN_PUBLIC_KEY_LENGTH",
    "is_loopback",
    "exposure_error",
    "presents_key",
]

#: Reachable without the key: a load balancer's probe must not need a secret.
OPEN_PATHS = frozenset({"/health"})
#: A client's x-request-id is kept when it looks like an id (and cannot inject anything).
_CLIENT_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


#: The shortest CONDUCTOR_API_KEY a gateway on a non-loopback address accepts: a short one can be guessed.
MIN_PUBLIC_KEY_LENGTH = 32
MAKE_A_KEY = 'python -c "import secrets; print(secrets.token_urlsafe(32))"'


def exposure_error(host: str, key: str | None, allow_unauthenticated: bool) -> str | None:
    """Why serving on `host` with this gateway key is refused, or None. A gateway on a
    non-loopback address would spend its providers' keys for anyone who can reach it, or
    guess a short key."""
    if allow_unauthenticated or is_loopback(host):
        return None
    if not key:
        return (
            f"refusing to serve on {host} without an API key: anyone who can reach it could spend your providers' "
            f"keys. Set CONDUCTOR_API_KEY to a random secret of at least {MIN_PUBLIC_KEY_LENGTH} characters (make one "
            f"with {MAKE_A_KEY}; clients then send 'Authorization: Bearer <key>'), "
            "or, on a trusted network only, set CONDUCTOR_GATEWAY_ALLOW_UNAUTHENTICATED=true"
        )
    if len(key) < MIN_PUBLIC_KEY_LENGTH:
        return (
            f"refusing to serve on {host} with a {len(key)}-character CONDUCTOR_API_KEY: on a non-loopback address "
            f"it must be at least {MIN_PUBLIC_KEY_LENGTH} characters, or it can be guessed. Make one with {MAKE_A_KEY}"
        )
    return None


#: (method, path) -> an ASGI handler that answers without FastAPI (see `FrontDoor`).
Routes = dict[tuple[str, str], ASGIApp]

OVERHEAD_HEADER = "x-conductor-overhead-ms"
_OVERHEAD = OVERHEAD_HEADER.encode()


def overhead_value(ms: float) -> str:
    return f"{ms:.3f}"


class FrontDoor:
    """Every HTTP request's way in, as one pure-ASGI layer (three separate middlewares cost a
    call, a wrapped `send` and a wrapped `receive` each, on every request): the request id,
    the overhead clock, CORS, the bearer key and the body limit. Then `routes`, the hot
    endpoints, which answer without FastAPI's per-request machinery (they read their own
    body, within the same limit, and set their own headers), or else the app.

    The order is the one the separate middlewares had: the request id first (every response
    has one), then CORS (a browser's preflight needs no key), then the key, then the body
    limit (both before the body is read).

    * `x-request-id` on every response: the client's own when it sent a valid one (so its
      logs and ours agree), else a new id. The core logs each attempt under it.
    * `x-conductor-overhead-ms` on every response: the time spent in Conductor, the upstream's
      excluded (`conductor_core.overhead`), measured from here.
    * When a key is configured, every path but /health needs `Authorization: Bearer <key>`.
      `get_key` is read per request, so the key comes from the Conductor's settings.
    * 413 for a body over `max_body_bytes`: at once when Content-Length says so, otherwise as
      soon as the streamed body passes the limit (before the endpoint has answered anything).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        get_key: Callable[[], SecretStr | None],
        max_body_bytes: int,
        allow_unauthenticated: bool = False,
        cors: dict[str, Any] | None = None,
        routes: Routes | None = None,
        check_gateway_key: Callable[[Scope, str], Awaitable[ApiError | None]] | None = None,
    ) -> None:
        self.app = app
        self.get_key = get_key
        self.check_gateway_key = check_gateway_key
        self.max_body_bytes = max_body_bytes
        self.allow_unauthenticated = allow_unauthenticated
        self.routes: Routes = routes or {}
        self.cors = CorsMiddleware(self._guarded, **cors) if cors else None
        self._refusals: dict[tuple[str, str], str | None] = {}  # (server host, key) -> exposure_error

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        clock = overhead.started()
        request_id = None
        origin = False
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                if request_id is None:
                    candidate = value.decode("latin-1").strip()
                    request_id = candidate if _CLIENT_ID.fullmatch(candidate) else ""
            elif name == b"origin":
                origin = True
        request_id = request_id or new_id()
        scope.setdefault("state", {})["request_id"] = request_id
        try:
            if self.cors is not None and origin:
                await self.cors(scope, receive, _stamped(send, request_id, clock))
            else:
                await self._guarded(scope, receive, send)
        finally:
            clock.release()  # the answer's log row, if nothing sent it yet (an error, a client gone)

    async def _guarded(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["path"] not in OPEN_PATHS:
            refusal = self._refusal(scope)
            if refusal is _GATEWAY_KEY:  # not the admin key, but shaped as a gateway key: looked up
                assert self.check_gateway_key is not None
                refusal = await self.check_gateway_key(scope, _bearer(scope) or "")
            if refusal is not None:
                request_id = scope["state"]["request_id"]
                await error_response(refusal, request_id)(scope, receive, _stamped(send, request_id))
                return
        route = self.routes.get((scope["method"], _route_path(scope)))
        if route is not None:  # it reads its body within the limit and sets its own headers
            await route(scope, receive, send)
            return
        await self._limited(scope, receive, _stamped(send, scope["state"]["request_id"]))

    def _refusal(self, scope: Scope) -> ApiError | None:
        key = self.get_key()
        secret = key.get_secret_value() if key is not None else ""
        if len(secret) < MIN_PUBLIC_KEY_LENGTH:
            # `uvicorn gateway.main:app --host 0.0.0.0` bypasses `python -m gateway`'s check:
            # a request that reached a non-loopback address is refused here instead.
            server = scope.get("server") or ("127.0.0.1", 0)
            cache_key = (str(server[0]), secret)
            if cache_key not in self._refusals:
                if len(self._refusals) > 64:
                    self._refusals.clear()
                self._refusals[cache_key] = exposure_error(cache_key[0], secret, self.allow_unauthenticated)
            refusal = self._refusals[cache_key]
            if refusal is not None:
                return ApiError(403, "unauthenticated_exposure", refusal)
        presented = _bearer(scope)
        if secret and presented is not None and hmac.compare_digest(presented.encode(), secret.encode()):
            return None  # the admin key
        if self.check_gateway_key is not None and presented is not None and presented.startswith(KEY_PREFIX):
            return _GATEWAY_KEY
        if not secret:
            return None
        if presented is None:
            reason = "missing API key: send 'Authorization: Bearer <CONDUCTOR_API_KEY>' or a gateway key"
        else:
            reason = "invalid API key: the bearer key is neither CONDUCTOR_API_KEY nor a gateway key"
        return ApiError(401, "authentication", reason, headers={"www-authenticate": "Bearer"})

    async def _limited(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app, with the body limit."""
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = 0
                if declared > self.max_body_bytes:
                    await error_response(too_large(self.max_body_bytes), scope["state"]["request_id"])(
                        scope, receive, send
                    )
                    return
        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    raise _TooLarge(413, too_large(self.max_body_bytes).message)
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
            await error_response(too_large(self.max_body_bytes), scope["state"]["request_id"])(scope, receive, send)


def _route_path(scope: Scope) -> str:
    """The path without the root path a proxy mounted the gateway under (as Starlette routes)."""
    path: str = scope["path"]
    root = scope.get("root_path")
    return path[len(root) :] if root and path.startswith(root) else path


def _stamped(send: Send, request_id: str, clock: overhead.RequestClock | None = None) -> Send:
    """`send`, adding `x-request-id` and `x-conductor-overhead-ms` to a response that lacks them,
    and writing the answer's held log row before the response's first byte."""
    clock = clock or overhead.current()
    header = (b"x-request-id", request_id.encode())

    async def send_stamped(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = list(message.get("headers", ()))
            names = {name.lower() for name, _ in headers}
            if b"x-request-id" not in names:
                headers.append(header)
            if clock is not None:
                spent = clock.release()
                if _OVERHEAD not in names:
                    headers.append((_OVERHEAD, overhead_value(spent).encode()))
            message["headers"] = headers
        elif clock is not None:
            clock.release()  # a row held after the start (a stream's answer) leaves before its last byte
        await send(message)

    return send_stamped


def _scope_request_id(scope: Scope) -> str | None:
    return scope.get("state", {}).get("request_id")


def presents_key(scope: Scope, key: SecretStr | None) -> bool:
    """Whether the request carries the gateway's key (True when none is configured)."""
    secret = key.get_secret_value() if key is not None else ""
    if not secret:
        return True
    presented = _bearer(scope)
    return presented is not None and hmac.compare_digest(presented.encode(), secret.encode())


def _bearer(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"authorization":
            text = value.decode("latin-1").strip()
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
            return None
    return None


#: `_refusal`'s answer for a bearer shaped as a gateway key: `check_gateway_key` decides.
_GATEWAY_KEY = ApiError(401, "authentication", "a gateway key")


class _TooLarge(StarletteHTTPException):
    """Raised from `receive`: FastAPI re-raises HTTP exceptions met while reading a body, so
    the app's own handler renders it as a 413."""


def too_large(max_bytes: int) -> ApiError:
    mib = max_bytes / (1024 * 1024)
    size = f"{mib:g} MiB" if mib >= 1 else f"{max_bytes} bytes"
    return ApiError(
        413,
        "request_too_large",
        f"request body is larger than the gateway accepts ({size}); shorten the conversation "
        "or raise CONDUCTOR_GATEWAY_MAX_BODY_BYTES",
    )


class CorsMiddleware(CORSMiddleware):
    """Starlette's CORS, with its refusals of a preflight in the gateway's JSON error shape (it
    answers them in plain text), saying what to change. Give it `allow_headers=["*"]`: an
    allowed origin may then send any header (they are reflected), as the official SDKs need
    (openai-node always sends `x-stainless-*` headers)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            headers = Headers(scope=scope)
            if "origin" in headers and "access-control-request-method" in headers:
                response = self.preflight_response(request_headers=headers)
                if response.status_code >= 400:
                    response = self._refusal(response, headers, scope)
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    def _refusal(self, refused: Response, asked: Headers, scope: Scope) -> Response:
        said = bytes(refused.body).decode()
        failures = said.removeprefix("Disallowed CORS ").split(", ")
        reasons = []
        if "origin" in failures:
            reasons.append(
                f"the origin {asked['origin']} may not call this gateway from a browser: "
                "add it to CONDUCTOR_CORS_ORIGINS"
            )
        if "method" in failures:
            reasons.append(
                f"{asked['access-control-request-method']} is not allowed from a browser: the gateway takes "
                f"{', '.join(m for m in self.allow_methods if m != 'OPTIONS')}"
            )
        if "headers" in failures:
            reasons.append(f"the headers {asked.get('access-control-request-headers')} are not allowed")
        if "private-network" in failures:
            reasons.append("a public page may not call a gateway on a private network")
        error = ApiError(400, "cors_rejected", "; ".join(reasons) or said)
        response = error_response(error, _scope_request_id(scope))
        for name, value in refused.headers.items():
            if name.startswith("access-control-") or name == "vary":
                response.headers[name] = value
        if "origin" in failures and "access-control-allow-headers" in response.headers:
            del response.headers["access-control-allow-headers"]  # nothing granted to a refused origin
        return response


class RedactingFilter(logging.Filter):
    """Runs `redact()` over a record's line, arguments and traceback: whatever a library logs,
    no key reaches a log line. Attached to the gateway's and uvicorn's loggers and handlers.

    The line as it will read is checked (one redact() for the usual clean line), so a key
    split between the message and an argument, or two arguments, is caught. Each part is
    redacted on its own when the line needed it (formatters such as uvicorn's access one
    read the arguments again: they keep their shape, numbers stay numbers) or may hide it
    (an argument shown by its repr writes a line break as the letters "\\n"); a line still
    holding a piece of a key then is kept as one redacted string."""

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "conductor_redacted", False):  # by the logger's filter, now at its handler
            return True
        record.conductor_redacted = True
        if not isinstance(record.msg, str):
            record.msg = str(record.msg)
        line = _line(record)
        if line is None or redact(line) != line or (record.args and _REPR.search(record.msg)):
            record.msg = redact(record.msg)
            if isinstance(record.args, tuple):
                record.args = tuple(_redact_arg(arg) for arg in record.args)
            elif isinstance(record.args, dict):
                record.args = {key: _redact_arg(value) for key, value in record.args.items()}
            line = _line(record) if record.args else None
            if line is not None and (clean := redact(line)) != line:
                record.msg, record.args = clean, None
        if record.exc_info:
            record.exc_text = redact(logging.Formatter().formatException(record.exc_info))
            record.exc_info = None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


# A %-conversion that shows an argument by its repr: %r, %a, %(name)r, %-10r...
_REPR = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\*|\d+)?(?:\.(?:\*|\d+))?[ra]")


def _line(record: logging.LogRecord) -> str | None:
    try:
        return record.getMessage()
    except Exception:  # noqa: BLE001 - a bad format: logging reports it when it prints
        return None


def _redact_arg(value: object) -> object:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    return redact(value)
