"""One place that turns every failure into the gateway's error body (`GatewayError`) and
an HTTP status an OpenAI client understands:

    400 validation / rejected request    -> openai.BadRequestError
    401 missing or wrong gateway key     -> openai.AuthenticationError
    404 unknown model or provider        -> openai.NotFoundError
    413 body too large
    429 provider rate limit              -> openai.RateLimitError   (Retry-After when known)
    500 a bug in Conductor (an id to quote; never counted against a provider)
    502 provider rejected our key, broke -> openai.InternalServerError
    503 provider down, nothing available -> openai.InternalServerError (Retry-After when known)
    504 provider timed out               -> openai.InternalServerError

`x-should-retry` tells OpenAI's SDKs whether their own retry may help; every message
goes through `redact()` so no key leaves in a body, a header or a log line.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable, Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel, ValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Route

from conductor_core.config import redact
from conductor_core.errors import (
    AuthenticationError,
    BadRequestError,
    InternalError,
    NoProviderAvailableError,
    NotConfiguredError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    StreamInterruptedError,
)
from conductor_core.models import ChatRequest, new_id

from .schemas import ChatCompletionRequest, GatewayError, OpenAIChatRequest, OpenAIErrorBody, bounds

__all__ = [
    "ApiError",
    "ClientDisconnected",
    "ERROR_RESPONSES",
    "error_body",
    "error_response",
    "install_error_handlers",
    "provider_error",
    "response_for",
    "validation_error",
]

log = logging.getLogger("gateway")

_OPENAI_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    404: "invalid_request_error",
    405: "invalid_request_error",
    413: "invalid_request_error",
    429: "rate_limit_error",
}


class ClientDisconnected(Exception):
    """The client went away before its answer: the work was cancelled; nobody reads a reply."""


class ApiError(Exception):
    """An error the gateway itself raises (as opposed to a provider's)."""

    def __init__(
        self,
        status: int,
        type: str,
        message: str,
        *,
        param: str | None = None,
        provider: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
        details: Any = None,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
        code: str | None = None,
    ) -> None:
        self.status = status
        self.type = type
        self.code = code  # OpenAI's error.code, when not Conductor's kind (an upstream's own code)
        self.message = redact(message)
        self.param = param
        self.provider = provider
        self.retryable = retryable
        self.retry_after = retry_after
        self.details = details
        self.request_id = request_id
        self.headers = headers or {}
        super().__init__(self.message)


def error_body(error: ApiError, request_id: str | None = None) -> dict[str, Any]:
    body = GatewayError(
        error=OpenAIErrorBody(
            message=error.message,
            type=_OPENAI_TYPES.get(error.status, "server_error" if error.status >= 500 else "invalid_request_error"),
            param=error.param,
            code=error.code or error.type,
        ),
        type=error.type,
        message=error.message,
        provider=error.provider,
        status_code=error.status,
        retryable=error.retryable,
        retry_after=error.retry_after,
        request_id=error.request_id or request_id or new_id(),
        details=error.details,
    )
    return body.model_dump(mode="json")


def error_headers(error: ApiError, request_id: str) -> dict[str, str]:
    headers = {"x-request-id": request_id, "x-should-retry": "true" if error.retryable else "false", **error.headers}
    if error.retry_after is not None and error.status in (429, 503):
        headers["retry-after"] = str(max(0, math.ceil(error.retry_after)))
    return headers


def error_response(error: ApiError, request_id: str | None = None) -> JSONResponse:
    body = error_body(error, request_id)
    return JSONResponse(body, status_code=error.status, headers=error_headers(error, body["request_id"]))


# --- provider errors ------------------------------------------------------------------------


def _status_for(error: ProviderError) -> int:
    if isinstance(error, InternalError):  # a bug in Conductor, not the provider's doing
        return 500
    if isinstance(error, RateLimitError):
        return 429
    if isinstance(error, ProviderTimeoutError):
        return 504
    if isinstance(error, (ProviderUnavailableError, NoProviderAvailableError)):
        return 503
    if isinstance(error, NotConfiguredError):
        return 404
    if isinstance(error, BadRequestError):
        return 404 if error.status_code == 404 else 400
    if isinstance(error, (AuthenticationError, StreamInterruptedError)):
        # The provider refused *our* key, or broke: the caller's request is fine.
        return 502
    if error.status_code in (400, 404):
        return error.status_code
    return 502


def provider_error(error: ProviderError, *, hint: str | None = None) -> ApiError:
    """A `ProviderError` from the core as the gateway's error: the provider, whether a retry
    may help, when, and (for AUTO) every attempt that was made."""
    status = _status_for(error)
    attempts = getattr(error, "attempts", None) or []
    details: dict[str, Any] = {}
    if error.status_code is not None and error.status_code != status:
        details["upstream_status_code"] = error.status_code
    if attempts:
        details["attempts"] = [a.model_dump(mode="json") for a in attempts]
    message = error.message
    if hint and status == 404:
        message = f"{message}. {hint}"
    if attempts and not error.provider and len({a.provider for a in attempts}) == 1:
        error.provider = attempts[0].provider
    return ApiError(
        status,
        error.type,
        message,
        param="model" if status == 404 else error.param,
        provider=error.provider,
        retryable=bool(error.retryable),
        retry_after=error.retry_after,
        details=details or None,
        request_id=getattr(error, "request_id", None),
        # The upstream's own code, where its 4xx is the client's to act on (not its refusal of our key).
        code=error.code if 400 <= status < 500 else None,
    )


# --- validation errors ------------------------------------------------------------------------

#: The request models a ValidationError may be about, by its title.
_MODELS: dict[str, type[BaseModel]] = {m.__name__: m for m in (ChatRequest, ChatCompletionRequest, OpenAIChatRequest)}

_UNSUPPORTED = {
    "tools": "tools are not supported by Conductor's gateway: send the request without tools",
    "n": None,  # filled in by the range rule ("n must be 1, got 2")
}


_MESSAGE_TAGS = {"system", "developer", "user", "assistant", "tool"}
#: Discriminated unions: pydantic puts the chosen shape's tag in the path, people do not.
_TAGGED = {"response_format": {"text", "json_object", "json_schema"}, "content": {"text", "parts"}}
#: ...and in the path of a list's items: a user message's parts (after their index).
_TAGGED_ITEMS = {"parts": {"text", "image_url", "file"}}
#: A union's member, as pydantic names it in an error's path ("constrained-str",
#: "list[constrained-str]", "literal['none','auto']", "NamedToolChoice", "function-after[...]").
_MEMBER = re.compile(r"^(?:[A-Z]\w*|[a-z]+(?:-[a-z]+)*(?:\[.*\])?|literal\[.*\])$")
_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]*$")


def _parts(loc: tuple[Any, ...]) -> tuple[list[Any], list[str]]:
    """An error's path as people read it, and the union members pydantic put in it."""
    raw = list(loc[1:] if loc and loc[0] in ("body", "query", "path", "header") else loc)
    parts: list[Any] = []
    members: list[str] = []
    for i, part in enumerate(raw):
        before = raw[i - 1] if i else None
        if isinstance(part, str) and part in _MESSAGE_TAGS and isinstance(before, int):
            continue  # a message's role picks its shape
        if isinstance(part, str) and part in _TAGGED.get(str(before), ()):
            continue
        if isinstance(part, str) and isinstance(before, int) and part in _TAGGED_ITEMS.get(str(raw[i - 2]), ()):
            continue
        if isinstance(part, str) and not _FIELD_NAME.match(part) and _MEMBER.match(part):
            members.append(part)
            continue
        parts.append(part)
    return parts, members


def _field(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in _parts(loc)[0]:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


_KINDS: dict[type, str] = {dict: "an object", list: "an array"}


def _show(value: Any) -> str:
    if isinstance(value, (bool, int, float)) or value is None:
        return json.dumps(value)
    if isinstance(value, str):
        return repr(value if len(value) <= 40 else value[:40] + "...")
    return _KINDS.get(type(value), type(value).__name__)


def _range(name: str, model: type[BaseModel], ctx: dict[str, Any]) -> tuple[Any, Any]:
    """The field's (lowest, highest), from the model it belongs to (a value of a map such as
    logit_bias: the map's), else from the error itself."""
    low = high = None
    for candidate in (name, name.split(".")[0].split("[")[0]):
        try:
            low, high = bounds(candidate, model)
            break
        except KeyError:
            continue
    low = low if low is not None else ctx.get("ge", ctx.get("gt"))
    high = high if high is not None else ctx.get("le", ctx.get("lt"))
    return low, high


def _sentence(err: Mapping[str, Any], model: type[BaseModel]) -> str:
    name = _field(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    given = err.get("input")
    what = name or "request body"
    if kind == "missing":
        return f"{what} is required" if name else "a JSON request body is required"
    if kind == "json_invalid":
        return f"request body is not valid JSON ({ctx.get('error', 'parse error')})"
    if kind in ("greater_than_equal", "less_than_equal", "greater_than", "less_than"):
        low, high = _range(name, model, ctx)
        if low is not None and low == high:
            return f"{what} must be {low!r}, got {_show(given)}"
        if low is not None and high is not None:
            return f"{what} must be between {low!r} and {high!r}, got {_show(given)}"
        if low is not None:
            return f"{what} must be at least {low!r}, got {_show(given)}"
        if high is not None:
            return f"{what} must be at most {high!r}, got {_show(given)}"
    if kind in ("union_tag_invalid", "union_tag_not_found"):
        tag = str(ctx.get("discriminator", "role")).strip("'")
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        if not expected and tag == "role":
            expected = "system, developer, user, assistant, tool"
        allowed = f" must be one of {expected}" if expected else " is not one the gateway knows"
        if kind == "union_tag_not_found":
            return f"{what}.{tag} is required" + (f": one of {expected}" if expected else "")
        return f"{what}.{tag}{allowed}, got {_show(ctx.get('tag'))}"
    if kind == "too_short":
        if name == "messages":
            return "messages must contain at least one message"
        if isinstance(given, str):
            return f"{what} must not be empty"
        return f"{what} must have at least {ctx.get('min_length', 1)} item(s)"
    if kind == "too_long" and (unsupported := _UNSUPPORTED.get(name)):
        return unsupported
    if kind == "too_long":
        return f"{what} must have at most {ctx.get('max_length')} items, got {ctx.get('actual_length')}"
    if kind == "string_too_short":
        return f"{what} must not be empty"
    if kind in ("literal_error", "enum"):
        expected = str(ctx.get("expected", "one of the documented values"))
        return f"{what} must be {expected}, got {_show(given)}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"{what} must be a JSON object, got {_show(given)}"
    if kind in ("float_type", "float_parsing"):
        return f"{what} must be a number, got {_show(given)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"{what} must be an integer, got {_show(given)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"{what} must be true or false, got {_show(given)}"
    if kind in ("string_type",):
        return f"{what} must be a string, got {_show(given)}"
    if kind in ("list_type",):
        return f"{what} must be an array, got {_show(given)}"
    message = str(err.get("msg", "is invalid")).removeprefix("Value error, ")
    return f"{what} {message}" if message.startswith(("must ", "needs ")) else f"{what}: {message}"


def _branch(member: str) -> str:
    """What a union member takes, in words."""
    if member.startswith("literal["):
        return _either(re.findall(r"'[^']*'", member))
    if member.startswith("list[") or member == "list":
        return "an array"
    if member[:1].isupper() or member.startswith("dict"):
        return "a JSON object"
    if "str" in member:
        return "a string"
    if "int" in member:
        return "an integer"
    if "float" in member:
        return "a number"
    return member


def _wrong_type(err: Mapping[str, Any], depth: int) -> bool:
    """Whether a union member's error says only that the value is not of that member's type."""
    parts, _ = _parts(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    if len(parts) > depth:  # an error inside the value: this member is the right kind of value
        return False
    return (
        kind.endswith("_type")
        or kind in ("model_attributes_type",)
        or (kind == "literal_error" and not isinstance(err.get("input"), str))
    )


def _union_sentences(errors: list[Mapping[str, Any]], model: type[BaseModel]) -> list[tuple[str, str]]:
    """One member's errors for a value no member of a union took: the member of the value's
    kind (a string for a string...), else one sentence naming every kind allowed."""
    loc = tuple(errors[0].get("loc", ()))
    field = _field(loc)
    depth = len(_parts(loc)[0])
    by_member: dict[str, list[Mapping[str, Any]]] = {}
    for err in errors:
        by_member.setdefault(_parts(tuple(err.get("loc", ())))[1][0], []).append(err)
    fitting = [errs for errs in by_member.values() if not all(_wrong_type(e, depth) for e in errs)]
    if fitting:
        chosen = fitting[0]
        sentences = [(_field(tuple(e.get("loc", ()))), _sentence(e, model)) for e in chosen]
        # A value of the right kind but not one of the words allowed: say the other kinds too.
        if len(chosen) == 1 and chosen[0].get("type") == "literal_error" and len(by_member) > 1:
            words = re.findall(r"'[^']*'", str((chosen[0].get("ctx") or {}).get("expected", "")))
            kinds = words + [_branch(m) for m in by_member if not m.startswith("literal[")]
            name = sentences[0][0]
            sentences = [(name, f"{name} must be {_either(kinds)}, got {_show(chosen[0].get('input'))}")]
        return sentences
    given = next((e.get("input") for e in errors if len(_parts(tuple(e.get("loc", ())))[0]) == depth), None)
    kinds = list(dict.fromkeys(_branch(m) for m in by_member))
    return [(field, f"{field or 'request body'} must be {_either(kinds)}, got {_show(given)}")]


def _either(words: list[str]) -> str:
    return words[0] if len(words) == 1 else f"{', '.join(words[:-1])} or {words[-1]}"


def _name(err: Mapping[str, Any]) -> str:
    """The field an error is about (a message's role, not the message, when the role is wrong)."""
    name = _field(tuple(err.get("loc", ())))
    if err.get("type") in ("union_tag_invalid", "union_tag_not_found"):
        tag = str((err.get("ctx") or {}).get("discriminator", "role")).strip("'")
        return f"{name}.{tag}" if name else tag
    return name


def validation_error(errors: Iterable[Mapping[str, Any]], model: type[BaseModel] | str | None = None) -> ApiError:
    """Pydantic's errors as one sentence per field (the first leads) plus field-level details,
    in users' words: no pydantic type names, one sentence for a value a union did not take.
    `model`: the model (or its name, a ValidationError's title) the errors are about."""
    shape = model if isinstance(model, type) else _MODELS.get(model or "", ChatRequest)
    unions: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    plain: list[Mapping[str, Any]] = []
    for err in errors:
        parts, members = _parts(tuple(err.get("loc", ())))
        if members:  # keyed by where the union sits: the path before its first member
            loc = tuple(err.get("loc", ()))
            cut = next(i for i, p in enumerate(loc) if p == members[0])
            unions.setdefault(loc[:cut], []).append(err)
        else:
            plain.append(err)
    found: list[tuple[str, str]] = [(_name(e), _sentence(e, shape)) for e in plain]
    for grouped in unions.values():
        found += _union_sentences(grouped, shape)
    seen: dict[str, str] = {}
    for name, text in found:
        seen.setdefault(name, redact(text))
    sentences = list(seen.values())
    message = sentences[0] if len(sentences) == 1 else "; ".join(sentences)
    first = next(iter(seen), None)
    details = [{"field": name or None, "message": text} for name, text in seen.items()]
    return ApiError(400, "validation_error", message, param=first or None, details=details)


# --- handlers -----------------------------------------------------------------------------


def _id(request: Request) -> str | None:
    return request.scope.get("state", {}).get("request_id")


def install_error_handlers(app: FastAPI) -> None:
    for kind in (ClientDisconnected, ApiError, ProviderError, RequestValidationError, ValidationError):
        app.add_exception_handler(kind, _handler)
    app.add_exception_handler(StarletteHTTPException, _handler)
    app.add_exception_handler(Exception, _handler)


async def _handler(request: Request, exc: Exception) -> Response:
    response = response_for(exc, _id(request), request.method, request.url.path)
    if response.status_code == 405:
        # Starlette names the methods of the first route at this path only; a path served by
        # several routes (GET and POST /v1/conductor/keys) allows all of theirs.
        allowed = _methods_at(request)
        if allowed:
            response.headers["allow"] = ", ".join(allowed)
    return response


def _methods_at(request: Request) -> list[str]:
    """Every method the app's routes serve at this path (`app.state.routes`: main.py's list)."""
    methods: set[str] = set()
    for route in getattr(request.app.state, "routes", ()):
        if isinstance(route, Route) and route.methods and route.path_regex.match(request.url.path):
            methods |= route.methods
    return sorted(methods)


def response_for(exc: BaseException, request_id: str | None, method: str, path: str) -> Response:
    """The gateway's answer to `exc`, raised while handling `method path`: one mapping for the
    app's exception handlers and for the routes that answer without FastAPI (`routes.py`)."""
    if isinstance(exc, ClientDisconnected):
        return Response(status_code=499)  # nobody reads it: the client went away (nginx's 499)
    if isinstance(exc, ApiError):
        return error_response(exc, request_id)
    if isinstance(exc, ProviderError):
        return error_response(provider_error(exc), request_id)
    if isinstance(exc, RequestValidationError):
        return error_response(validation_error(list(exc.errors())), request_id)
    if isinstance(exc, ValidationError):
        return error_response(validation_error(list(exc.errors()), exc.title), request_id)
    if isinstance(exc, StarletteHTTPException):
        status = exc.status_code
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "request_too_large"}
        if status == 404:
            message = f"no endpoint at {method} {path}; see /docs"
        elif status == 405:
            message = f"{method} is not allowed on {path}; see /docs"
        else:
            message = str(exc.detail)
        headers = dict(exc.headers or {})
        if status == 400 and "parsing the body" in message:  # FastAPI's words for JSON it could not read
            message = "request body could not be read as JSON (nested too deeply, or not JSON at all)"
        return error_response(ApiError(status, kinds.get(status, "http_error"), message, headers=headers), request_id)
    return error_response(unexpected(exc), request_id)


def unexpected(exc: BaseException) -> ApiError:
    """A bug, not a provider failure: logged (redacted) with an id the caller can quote."""
    request_id = new_id()
    log.error("unexpected error %s: %s: %s", request_id, type(exc).__name__, redact(exc))
    return ApiError(
        500,
        "internal_error",
        f"Conductor's gateway failed unexpectedly; quote request id {request_id} when reporting it",
        request_id=request_id,
    )


# Documented on every operation, so /docs and schema checks know each status and its body.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "model": GatewayError,
        "description": "The request is invalid: the message names the field and what is allowed.",
    },
    401: {"model": GatewayError, "description": "CONDUCTOR_API_KEY is set and the bearer key is missing or wrong."},
    413: {"model": GatewayError, "description": "The request body is larger than the gateway accepts."},
    500: {"model": GatewayError, "description": "A bug in the gateway; the body carries an id to report."},
}
PROVIDER_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {
        "model": GatewayError,
        "description": "Unknown or unconfigured model or provider; GET /v1/models lists them.",
    },
    429: {
        "model": GatewayError,
        "description": "The provider is rate limiting; Retry-After says when to retry, if known.",
    },
    502: {"model": GatewayError, "description": "The provider rejected Conductor's key, or its answer broke."},
    503: {
        "model": GatewayError,
        "description": "The provider is down, or no provider is available; Retry-After when known.",
    },
    504: {"model": GatewayError, "description": "The provider did not answer in time."},
}
