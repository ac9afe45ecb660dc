"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` (JSON or server-sent events)
and ``GET /v1/models``. Converters are pure functions, so tests can call them directly."""

from __future__ import annotations

import json
import logging
import time
import uuid
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Body, Request, Security
from fastapi.responses import JSONResponse, Response, StreamingResponse
from fastapi.security import HTTPBearer

from conductor_core.config import redact
from conductor_core.errors import NotConfiguredError, ProviderError
from conductor_core.models import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    StatusNotice,
    StreamDone,
    StreamIncomplete,
    TextDelta,
    known_provider_names,
)
from conductor_core.router import Conductor

from .core import ThreadedStream, call, conductor_of, stream_executor
from .errors import ERROR_RESPONSES, PROVIDER_RESPONSES, ApiError, error_body, provider_error
from .schemas import (
    ChatCompletion,
    ChatCompletionRequest,
    ConductorInfo,
    ModelCard,
    ModelList,
)

__all__ = ["router", "to_chat_request", "to_completion", "conductor_info", "resolve_model", "list_models"]

log = logging.getLogger("gateway")

bearer = HTTPBearer(auto_error=False, description="CONDUCTOR_API_KEY, when the gateway is started with one.")
router = APIRouter(dependencies=[Security(bearer)])

MODELS_HINT = "GET /v1/models lists the available models"
_FINISH = {"stop", "length", "content_filter", "tool_calls", "function_call"}
_ROLES = {"developer": "system"}


# --- converters (pure) -------------------------------------------------------------------


def to_chat_request(body: ChatCompletionRequest, provider: str, model: str | None) -> ChatRequest:
    max_tokens = body.max_completion_tokens or body.max_tokens
    fields: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "messages": [ChatMessage(role=_ROLES.get(m.role, m.role), content=m.content) for m in body.messages],
    }
    if body.temperature is not None:
        fields["temperature"] = body.temperature
    if max_tokens is not None:
        fields["max_tokens"] = max_tokens
    if body.policy is not None:
        fields["policy"] = body.policy
    return ChatRequest(**fields)


def conductor_info(response: ChatResponse) -> ConductorInfo:
    a, r = response.analytics, response.routing
    return ConductorInfo(
        request_id=response.metadata.id,
        provider=response.metadata.provider,
        model=response.metadata.model,
        route=r.mode,
        policy=r.policy.value if r.policy else None,
        reason=r.reason,
        attempts=r.attempts,
        latency_ms=a.latency_ms,
        time_to_first_token_ms=a.time_to_first_token_ms,
        tokens_per_second=a.tokens_per_second,
        cost_usd=a.cost_usd,
    )


def _finish(reason: str | None) -> str:
    return reason if reason in _FINISH else "stop"


def _usage(response: ChatResponse) -> dict[str, Any]:
    a = response.analytics
    usage: dict[str, Any] = {
        "prompt_tokens": a.input_tokens,
        "completion_tokens": a.output_tokens,
        "total_tokens": a.input_tokens + a.output_tokens,
    }
    if a.cached_tokens:
        usage["prompt_tokens_details"] = {"cached_tokens": a.cached_tokens}
    return usage


def _label(response: ChatResponse) -> str:
    return f"{response.metadata.provider}/{response.metadata.model}"


def to_completion(response: ChatResponse) -> ChatCompletion:
    return ChatCompletion(
        id=f"chatcmpl-{response.metadata.id.removeprefix('req_')}",
        created=int(response.metadata.finished_at.timestamp()),
        model=_label(response),
        choices=[
            {
                "index": 0,
                "message": {"role": "assistant", "content": response.content},
                "finish_reason": _finish(response.metadata.finish_reason),
            }
        ],
        usage=_usage(response),
        conductor=conductor_info(response),
    )


def _header(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)  # headers are latin-1, one line
    return redact(text)[:512]


def conductor_headers(response: ChatResponse) -> dict[str, str]:
    """Conductor's figures as response headers (for clients that only see the OpenAI body)."""
    a, r = response.analytics, response.routing
    headers = {
        "x-request-id": response.metadata.id,
        "x-conductor-provider": response.metadata.provider,
        "x-conductor-model": response.metadata.model,
        "x-conductor-route": r.mode,
        "x-conductor-latency-ms": f"{a.latency_ms:.1f}",
        "x-conductor-cost-usd": "unknown" if a.cost_usd is None else f"{a.cost_usd:.8f}",
        "x-conductor-attempts": str(len(r.attempts)),
    }
    if a.time_to_first_token_ms is not None:
        headers["x-conductor-ttft-ms"] = f"{a.time_to_first_token_ms:.1f}"
    if r.reason:
        headers["x-conductor-route-reason"] = r.reason
    return {k: _header(v) for k, v in headers.items()}


# --- model names ----------------------------------------------------------------------------


async def list_models(conductor: Conductor) -> list[ModelCard]:
    """`auto`, then every model of every configured provider as `provider/model`. Providers are
    asked concurrently; one that cannot list its models shows its configured ones."""
    created = int(conductor.started_at.timestamp())
    names = list(conductor.registry.providers)
    found: dict[str, list[str]] = {}

    async def one(name: str) -> None:
        try:
            found[name] = await call(conductor.models, name)
        except (ProviderError, ApiError) as exc:
            log.warning("could not list %s's models: %s", name, redact(exc))
            found[name] = []

    async with anyio.create_task_group() as group:
        for name in names:
            group.start_soon(one, name)
    cards = [ModelCard(id="auto", created=created, owned_by="conductor")]
    for name in names:
        for model in dict.fromkeys(found.get(name, [])):
            cards.append(ModelCard(id=f"{name}/{model}", created=created, owned_by=name))
    return cards


async def resolve_model(conductor: Conductor, requested: str) -> tuple[str, str | None]:
    """`model` as (provider, model or None for its default):
    'auto', 'local', 'gemini/gemini-2.5-flash', or a bare model some configured provider lists."""
    text = requested.strip()
    known = known_provider_names()
    if text.lower() == "auto":
        return "auto", None
    prefix, slash, rest = text.partition("/")
    if slash and prefix.lower() in known and prefix.lower() != "auto":
        return prefix.lower(), rest or None
    if not slash and text.lower() in known:
        return text.lower(), None
    # A bare model name ("gpt-4o-mini"): the first configured provider that lists it.
    for card in await list_models(conductor):
        provider, _, model = card.id.partition("/")
        if model == text:
            return provider, model
    configured = ", ".join(conductor.registry.providers) or "none"
    raise ApiError(
        404,
        "model_not_found",
        f"unknown model {text!r}: use 'auto', a provider name (configured: {configured}) or 'provider/model'; "
        f"{MODELS_HINT}",
        param="model",
    )


# --- endpoints ------------------------------------------------------------------------------


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=ERROR_RESPONSES,
    summary="List models (OpenAI format)",
    description="'auto' plus every model of every configured provider, as 'provider/model'.",
    tags=["OpenAI-compatible"],
)
async def get_models(request: Request) -> ModelList:
    return ModelList(data=await list_models(conductor_of(request)))


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses={**ERROR_RESPONSES, 404: PROVIDER_RESPONSES[404]},
    summary="Retrieve one model (OpenAI format)",
    tags=["OpenAI-compatible"],
)
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in await list_models(conductor_of(request)):
        if card.id == model_id:
            return card
    raise ApiError(404, "model_not_found", f"unknown model {model_id!r}; {MODELS_HINT}", param="model")


def _json_data(ref: str) -> dict[str, Any]:
    return {
        "type": "string",
        "contentMediaType": "application/json",
        "contentSchema": {"$ref": f"#/components/schemas/{ref}"},
    }


# One server-sent event (OpenAPI before 3.2 describes each event with `schema`): a chunk,
# the closing `[DONE]`, or, for a stream that broke after text, an `error` event.
_STREAM_SCHEMA = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "description": "With stream=true: `data: <ChatCompletionChunk>` events, then `data: [DONE]`. A stream "
            "that breaks after text ends with `event: error` and a GatewayError, without [DONE].",
            "required": ["data"],
            "properties": {
                "event": {"type": "string", "enum": ["message", "error"]},
                "data": {"type": "string"},
            },
            "if": {"properties": {"data": {"const": "[DONE]"}}},
            "then": {},
            "else": {
                "if": {"properties": {"event": {"const": "error"}}, "required": ["event"]},
                "then": {"properties": {"data": _json_data("GatewayError")}},
                "else": {"properties": {"data": _json_data("ChatCompletionChunk")}},
            },
        }
    }
}


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={**ERROR_RESPONSES, **PROVIDER_RESPONSES, 200: {"content": _STREAM_SCHEMA, "description": "The answer."}},
    summary="Chat completion (OpenAI format)",
    description="OpenAI's Chat Completions API over every Conductor provider. Figures travel in `x-conductor-*` "
    "headers and in the extra `conductor` field (on the final chunk when streaming).",
    tags=["OpenAI-compatible"],
)
async def chat_completions(
    request: Request, body: Annotated[ChatCompletionRequest, Body(openapi_examples=CHAT_EXAMPLES)]
) -> Response:
    conductor = conductor_of(request)
    provider, model = await resolve_model(conductor, body.model)
    chat_request = to_chat_request(body, provider, model)
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(conductor, chat_request, body.model, include_usage, stream_executor(request))
    try:
        response = await call(conductor.chat, chat_request)
    except ProviderError as error:
        raise _with_hint(error) from None
    return JSONResponse(to_completion(response).model_dump(mode="json"), headers=conductor_headers(response))


CHAT_EXAMPLES = {
    "auto": {
        "summary": "AUTO: Conductor picks the provider",
        "value": {"model": "auto", "messages": [{"role": "user", "content": "What is a circuit breaker?"}], "max_tokens": 128},
    },
    "provider_model": {
        "summary": "A provider's model",
        "value": {
            "model": "gemini/gemini-2.5-flash",
            "messages": [
                {"role": "system", "content": "Answer in one sentence."},
                {"role": "user", "content": "Why do retries need jitter?"},
            ],
            "temperature": 0.3,
        },
    },
    "local_stream": {
        "summary": "The embedded model, streamed",
        "value": {
            "model": "local",
            "messages": [{"role": "user", "content": "Name three colours."}],
            "max_tokens": 32,
            "stream": True,
            "stream_options": {"include_usage": True},
        },
    },
    "fastest": {
        "summary": "AUTO with a routing policy (Conductor extension)",
        "value": {"model": "auto", "policy": "fastest", "messages": [{"role": "user", "content": "Hi!"}]},
    },
}


def _with_hint(error: ProviderError) -> ApiError:
    return provider_error(error, hint=MODELS_HINT if isinstance(error, NotConfiguredError) else None)


# --- streaming ------------------------------------------------------------------------------


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n".encode()


class _Chunks:
    """Builds the chunks of one streamed answer."""

    def __init__(self, model: str) -> None:
        self.id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.created = int(time.time())
        self.model = model

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
            **extra,
        }
        return _sse(body)

    def usage(self, response: ChatResponse) -> bytes:
        return _sse(
            {
                "id": self.id,
                "object": "chat.completion.chunk",
                "created": self.created,
                "model": _label(response),
                "system_fingerprint": None,
                "choices": [],
                "usage": _usage(response),
            }
        )


class _SSEResponse(StreamingResponse):
    """Closes the body iterator whatever happens (a client that goes away makes `send` raise),
    so the core stream is stopped and the provider released promptly, not when GC runs."""

    async def stream_response(self, send) -> None:  # type: ignore[no-untyped-def]
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                await self.body_iterator.aclose()  # type: ignore[union-attr]


async def _stream(
    conductor: Conductor, chat_request: ChatRequest, requested: str, include_usage: bool, executor: Executor
) -> Response:
    stream = ThreadedStream(conductor.stream(chat_request), executor)
    # Wait for the first text before answering: routing, retries and fallbacks happen before
    # it, so a request that fails outright gets a real HTTP status (429, 503...), which OpenAI
    # clients turn into the right exception, rather than a 200 with an error inside.
    head: list[Any] = []
    try:
        while all(isinstance(event, StatusNotice) for event in head):
            batch = await stream.batch()
            if not batch:
                break
            head.extend(batch)
    except ProviderError as error:
        raise _with_hint(error) from None
    except BaseException:
        stream.cancel()
        raise
    chunks = _Chunks(requested)

    def render(event: Any) -> tuple[bytes, bool]:
        """One core event as SSE bytes, and whether it ends the stream."""
        if isinstance(event, TextDelta):
            return chunks.chunk({"content": event.text}), False
        if isinstance(event, StatusNotice):
            return f": {_header(event.message)}\n\n".encode(), False  # an SSE comment: clients skip it
        if isinstance(event, StreamDone):
            response = event.response
            info = conductor_info(response).model_dump(mode="json")
            out = chunks.chunk({}, _finish(response.metadata.finish_reason), conductor=info)
            if include_usage:
                out += chunks.usage(response)
            return out + b"data: [DONE]\n\n", True
        if isinstance(event, StreamIncomplete):
            return _incomplete(event), True
        return b"", False

    async def body() -> AsyncIterator[bytes]:
        try:
            pending, out = head, [chunks.chunk({"role": "assistant", "content": ""})]
            while True:
                finished = False
                for event in pending:
                    data, finished = render(event)
                    out.append(data)
                    if finished:
                        break
                if out:
                    yield b"".join(out)  # whatever arrived meanwhile, in one write
                    out = []
                if finished:
                    return
                pending = await stream.batch()
                if not pending:  # the core ended without StreamDone: not a success either
                    error = ApiError(502, "stream_interrupted", "the stream ended before it finished")
                    yield _sse(error_body(error), "error")
                    return
        except ProviderError as error:
            yield _sse(error_body(provider_error(error)), "error")
        except ApiError as error:
            yield _sse(error_body(error), "error")
        finally:
            stream.cancel()

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no"}
    return _SSEResponse(body(), media_type="text/event-stream", headers=headers)


def _incomplete(event: StreamIncomplete) -> bytes:
    """The break after text, as OpenAI's error shape in an `error` event: OpenAI's SDKs raise
    `APIError` on it, and there is no finish_reason and no [DONE], so nothing reads it as done."""
    err = event.error
    error = ApiError(
        502,
        err.type,
        err.message,
        provider=err.provider,
        retryable=err.retryable,
        retry_after=err.retry_after,
        request_id=err.request_id,
        details={
            "partial_content_chars": len(event.partial.content),
            "upstream_status_code": err.status_code,
            "attempts": [a.model_dump(mode="json") for a in event.partial.routing.attempts],
        },
    )
    return _sse(error_body(error), "error")
