"""Conductor's own endpoints: the native chat call (JSON, or server-sent core events with
`?stream=true`) and the status the dashboard shows. None of them waits behind a provider:
`/health` answers from the last background check, `/status` from the request log."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing

from fastapi import APIRouter, Path, Query, Request, Security
from fastapi.responses import JSONResponse, Response

from conductor_core.errors import ProviderError
from conductor_core.models import (
    TEXT_CHECKED,
    ChatRequest,
    ChatResponse,
    HealthResponse,
    ProviderStatus,
    SystemStatus,
)

from .body import check_message_count, check_text, load_json, may_hold_surrogate, off_loop
from .core import core_of, request_id_of, until_disconnect
from .errors import ERROR_RESPONSES, PROVIDER_RESPONSES, ApiError, error_body, provider_error
from .middleware import presents_key
from .openai_api import _head, _SSEResponse, bearer, conductor_headers
from .schemas import PublicHealth, integral

__all__ = ["router", "health_router"]

router = APIRouter(dependencies=[Security(bearer)])

# With ?stream=true: one server-sent event per core event (OpenAPI before 3.2 describes each
# event with `schema`).
_NATIVE_STREAM = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "description": "`event:` the core event's type (start, status, text, tool_call, done, incomplete) or "
            "error; `data:` the event (or a GatewayError) as JSON.",
            "required": ["data"],
            "properties": {
                "event": {
                    "type": "string",
                    "enum": ["start", "status", "text", "tool_call", "done", "incomplete", "error"],
                },
                "data": {"type": "string", "contentMediaType": "application/json"},
            },
        }
    }
}
health_router = APIRouter()


@router.post(
    "/v1/conductor/chat",
    response_model=ChatResponse,
    responses={**ERROR_RESPONSES, **PROVIDER_RESPONSES, 200: {"content": _NATIVE_STREAM, "description": "The answer."}},
    summary="Chat (Conductor's native shape)",
    description="A ChatRequest in, a ChatResponse out, with metadata, analytics and routing (AUTO's reason and "
    "every failed attempt).",
    tags=["Conductor"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
        }
    },
)
async def native_chat(
    request: Request,
    stream: bool = Query(
        default=False,
        description="Answer with server-sent events, one per core event (`event: start|text|tool_call|status|done|"
        "incomplete|error`, `data:` the event as JSON).",
    ),
) -> Response:
    # Parsed here, strictly and in JSON mode (a string is not a number, false is not 0.0):
    # FastAPI would validate the core's model leniently. The schema is documented below. A
    # large body is parsed in a worker thread, off the event loop.
    raw = await request.body()
    body = await off_loop(len(raw), parse_chat_request, raw, request.app.state.gateway_settings.max_messages)
    core = core_of(request)
    request_id = request_id_of(request)
    if stream:
        return await _native_stream(request, body, request_id)
    response = await until_disconnect(request, core.chat(body, request_id=request_id))
    return JSONResponse(response.model_dump(mode="json"), headers=conductor_headers(response))


def _event(name: str, payload: str) -> bytes:
    return f"event: {name}\ndata: {payload}\n\n".encode()


async def _native_stream(request: Request, body: ChatRequest, request_id: str) -> Response:
    events = core_of(request).stream(body, request_id=request_id)
    try:
        head = await until_disconnect(request, _head(events))  # failures before text: a real HTTP status
    except BaseException:
        await events.aclose()
        raise

    async def sse() -> AsyncIterator[bytes]:
        async with aclosing(events):
            try:
                for event in head:
                    yield _event(event.type, event.model_dump_json())
                async for event in events:
                    yield _event(event.type, event.model_dump_json())
            except ProviderError as error:
                yield _event("error", json.dumps(error_body(provider_error(error), request_id)))

    return _SSEResponse(
        sse(), media_type="text/event-stream", headers={"cache-control": "no-cache", "x-request-id": request_id}
    )


_INTEGERS = {"max_tokens", "seed", "top_logprobs"}


def parse_chat_request(raw: bytes, max_messages: int) -> ChatRequest:
    """The body as a ChatRequest, strictly, in JSON mode. A ValidationError becomes a 400
    naming the field (its handler), as do text no provider can be sent (checked only when the
    bytes could hold it) and more than `max_messages` messages."""
    if not raw.strip():
        raise ApiError(400, "validation_error", "a JSON request body is required", details=[])
    if may_hold_surrogate(raw):
        check_text(load_json(raw))
    try:
        data = json.loads(raw)
    except RecursionError:
        raise ApiError(
            400, "validation_error", "request body is nested too deeply to read: send a flat ChatRequest", details=[]
        ) from None
    except ValueError:
        data = None
    if isinstance(data, dict) and _INTEGERS & data.keys():
        # JSON Schema counts 300.0 as an integer; pydantic's strict mode does not.
        for name in _INTEGERS & data.keys():
            data[name] = integral(data[name])
        raw = json.dumps(data).encode()
    body = ChatRequest.model_validate_json(raw, strict=True, context=TEXT_CHECKED)
    check_message_count(len(body.messages), max_messages)
    return body


@router.get(
    "/status",
    response_model=SystemStatus,
    responses=ERROR_RESPONSES,
    summary="System status",
    description="Every provider's health, performance, reliability and usage, from the shared request log "
    "(playground and gateway traffic alike).",
    tags=["Status"],
)
async def system_status(request: Request) -> SystemStatus:
    return await core_of(request).status()


@router.get(
    "/providers/{name}/status",
    response_model=ProviderStatus,
    responses={**ERROR_RESPONSES, 404: {**PROVIDER_RESPONSES[404], "description": "No provider has this name."}},
    summary="One provider's status",
    tags=["Status"],
)
async def provider_status(
    request: Request, name: str = Path(description="A provider name from /status.", examples=["local", "gemini"])
) -> ProviderStatus:
    core = core_of(request)
    if name == "auto" or name not in core.registry.names():
        raise ApiError(
            404,
            "unknown_provider",
            f"unknown provider {name!r}; known: {', '.join(core.registry.names())}",
            param="name",
        )
    try:
        return await core.provider_status(name)
    except ProviderError as error:
        raise ApiError(404, "unknown_provider", error.message, param="name") from None


@health_router.get(
    "/health",
    response_model=HealthResponse | PublicHealth,
    responses={
        500: ERROR_RESPONSES[500],
        503: {**PROVIDER_RESPONSES[503], "description": "The gateway is still starting."},
    },
    summary="Health",
    description="The providers' health, from checks run in the background (never waiting on a slow provider). "
    "Always 200 while the gateway runs: read `status` (ok, degraded, down) for the providers. HEAD answers the "
    "same without a body. Needs no key; when CONDUCTOR_API_KEY is set, a caller without it reads only `status` "
    "up or down (PublicHealth), not which providers there are.",
    tags=["Status"],
)
async def health(request: Request) -> HealthResponse | PublicHealth:
    core = core_of(request)
    full = await core.health()
    if presents_key(request.scope, core.settings.api_key):
        return full
    return PublicHealth(status="down" if full.status == "down" else "up")
