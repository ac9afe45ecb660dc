"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` (JSON or server-sent events)
and ``GET /v1/models``. Converters are pure functions, so tests can call them directly."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import aclosing
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request, Security
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError

from conductor_core.config import redact
from conductor_core.errors import NotConfiguredError, ProviderError
from conductor_core.models import (
    SPELLED_BY_CLIENT,
    TEXT_CHECKED,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    MessageRole,
    StatusNotice,
    StreamDone,
    StreamIncomplete,
    StreamStart,
    TextDelta,
    ToolCallDelta,
    known_provider_names,
    tool_choice_from_function_call,
    tools_from_functions,
)
from conductor_core.routing import AsyncConductor

from .body import check_message_count, check_text, load_json, may_hold_surrogate, off_loop
from .core import core_of, request_id_of, until_disconnect
from .errors import ERROR_RESPONSES, PROVIDER_RESPONSES, ApiError, error_body, provider_error, validation_error
from .schemas import (
    BLANK,
    ChatCompletion,
    ChatCompletionRequest,
    ConductorInfo,
    ModelCard,
    ModelList,
    OpenAIChatRequest,
)

__all__ = [
    "router",
    "parse_completion_request",
    "to_chat_request",
    "to_completion",
    "conductor_info",
    "resolve_model",
    "list_models",
]

log = logging.getLogger("gateway")

bearer = HTTPBearer(auto_error=False, description="CONDUCTOR_API_KEY, when the gateway is started with one.")
router = APIRouter(dependencies=[Security(bearer)])

MODELS_HINT = "GET /v1/models lists the available models"
_FINISH = {"stop", "length", "content_filter", "tool_calls", "function_call"}


# --- converters (pure) -------------------------------------------------------------------


def parse_completion_request(raw: bytes, max_messages: int) -> ChatCompletionRequest:
    """The body as a ChatCompletionRequest. Refused (400 naming the field) before anything is
    sent: text no provider can be sent (checked only when the bytes could hold it), more than
    `max_messages` messages (counted before the messages are validated one by one)."""
    data = load_json(raw)
    if may_hold_surrogate(raw):
        check_text(data)
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list):
        check_message_count(len(messages), max_messages)
    return ChatCompletionRequest.model_validate(data)


def to_chat_request(body: ChatCompletionRequest, provider: str, model: str | None) -> ChatRequest:
    """The OpenAI request as the core's, field for field. Nothing the client did not send is
    added: no temperature, no token cap (the core's defaults are for the native route). Its
    text was checked with the body (`parse_completion_request`)."""
    fields: dict[str, Any] = {
        "provider": provider,
        "model": model,
        "messages": [_message(m) for m in body.messages],
        "temperature": body.temperature,
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "unsupported": "reject",  # a provider without a parameter answers 400 naming it
    }
    # What OpenAI-compatible upstreams get as the client sent it: parameters Conductor does not
    # model (the upstream's business), and the client's own spelling of some it does.
    extra = dict(body.model_extra or {})
    sent = body.model_fields_set
    for name in SPELLED_BY_CLIENT:
        if name in sent and getattr(body, name) is not None:
            extra[name] = _as_sent(getattr(body, name))
    if extra:
        fields["extra_params"] = extra
    for name in _PASSED_ON:
        value = getattr(body, name)
        if value is not None:
            fields[name] = value
    if isinstance(body.stop, str):
        fields["stop"] = [body.stop]
    if body.functions is not None and body.tools is None:  # the deprecated form of tools
        fields["tools"] = tools_from_functions(body.functions)
        if body.function_call is not None:
            fields["tool_choice"] = tool_choice_from_function_call(body.function_call)
    try:
        return OpenAIChatRequest.model_validate(fields, context=TEXT_CHECKED)
    except ValidationError as error:  # a combination the core refuses (tool_choice without tools...)
        raise validation_error(list(error.errors()), OpenAIChatRequest) from None


_PASSED_ON = (
    "top_p",
    "stop",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "user",
    "policy",
)


def _as_sent(value: Any) -> Any:
    """A validated value as the client wrote it (the fields it set, no defaults added)."""
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(value, list):
        return [_as_sent(item) for item in value]
    return value


_ROLE = {role.value: role for role in MessageRole} | {"developer": MessageRole.system}


def _message(m: Any) -> ChatMessage:
    """One validated OpenAI message as the core's, built without validating it again: its shape
    (by role) already holds every rule ChatMessage checks (text where required, tool calls only
    from the assistant, a tool's call id), and checking 2048 messages twice cost ~10 us each."""
    # The fields from the model's __dict__: a missing attribute on a pydantic model raises
    # through its metaclass (~30 us for the three a user message lacks).
    fields = m.__dict__
    return ChatMessage.model_construct(
        role=_ROLE[m.role],
        content=m.content if m.content is not None else "",  # an assistant that only calls tools: null
        tool_calls=fields.get("tool_calls"),
        tool_call_id=fields.get("tool_call_id"),
        name=fields.get("name"),
    )


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


def completion_id(request_id: str, upstream_id: str | None = None) -> str:
    """The answer's id: the upstream's own (chatcmpl-..., msg_..., Gemini's responseId) when it
    gave one, else one from Conductor's request id (which `x-request-id` always carries)."""
    return upstream_id or f"chatcmpl-{request_id.removeprefix('req_')}"


def to_completion(response: ChatResponse, *, legacy_functions: bool = False) -> ChatCompletion:
    message: dict[str, Any] = {"role": "assistant", "content": response.content}
    finish = _finish(response.metadata.finish_reason)
    if response.tool_calls:
        if legacy_functions:  # a client that sent `functions` reads `function_call`
            message["function_call"] = response.tool_calls[0].function.model_dump()
            finish = "function_call"
        else:
            message["tool_calls"] = [call.model_dump() for call in response.tool_calls]
            finish = "tool_calls"
        message["content"] = response.content or None
    return ChatCompletion(
        id=completion_id(response.metadata.id, response.metadata.upstream_id),
        created=int(response.metadata.finished_at.timestamp()),
        model=_label(response),
        choices=[{"index": 0, "message": message, "finish_reason": finish, "logprobs": response.logprobs}],
        usage=_usage(response),
        system_fingerprint=response.metadata.system_fingerprint,
        conductor=conductor_info(response),
    )


def _header(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if not (text.isascii() and text.isprintable()):  # headers are latin-1, one line
        text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
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


async def list_models(core: AsyncConductor) -> list[ModelCard]:
    """`auto`, then every model of every configured provider as `provider/model`. Providers are
    asked concurrently, and none is waited on for long: one that cannot list its models in a
    couple of seconds shows its configured ones (and finishes listing in the background)."""
    created = int(core.started_at.timestamp())
    providers = core.registry.providers

    async def one(provider: Any) -> list[str]:
        try:
            return await provider.aget_available_models(wait_s=_MODELS_WAIT_S)
        except Exception as exc:  # noqa: BLE001 - listing is best effort
            log.warning("could not list %s's models: %s", provider.name, redact(exc))
            return []

    found = await asyncio.gather(*(one(p) for p in providers.values()))
    cards = [ModelCard(id="auto", created=created, owned_by="conductor")]
    for name, models in zip(providers, found, strict=True):
        for model in dict.fromkeys(models):
            cards.append(ModelCard(id=f"{name}/{model}", created=created, owned_by=name))
    return cards


_MODELS_WAIT_S = 2.0


async def resolve_model(core: AsyncConductor, requested: str) -> tuple[str, str | None]:
    """`model` as (provider, model or None for its default):
    'auto', 'local', 'gemini/gemini-3.5-flash-lite', or a bare model some configured provider lists."""
    text = requested.strip(BLANK)
    known = known_provider_names()
    if text.lower() == "auto":
        return "auto", None
    prefix, slash, rest = text.partition("/")
    if slash and prefix.lower() in known and prefix.lower() != "auto":
        return prefix.lower(), rest or None
    if not slash and text.lower() in known:
        return text.lower(), None
    # A bare model name ("gpt-6-luna"): the first configured provider that lists it.
    for card in await list_models(core):
        provider, _, model = card.id.partition("/")
        if model == text:
            return provider, model
    configured = ", ".join(core.registry.providers) or "none"
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
    return ModelList(data=await list_models(core_of(request)))


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses={**ERROR_RESPONSES, 404: PROVIDER_RESPONSES[404]},
    summary="Retrieve one model (OpenAI format)",
    tags=["OpenAI-compatible"],
)
async def get_model(model_id: str, request: Request) -> ModelCard:
    for card in await list_models(core_of(request)):
        if card.id == model_id:
            return card
    raise ApiError(404, "model_not_found", f"unknown model {model_id!r}; {MODELS_HINT}", param="model")


CHAT_EXAMPLES = {
    "auto": {
        "summary": "AUTO: Conductor picks the provider",
        "value": {
            "model": "auto",
            "messages": [{"role": "user", "content": "What is a circuit breaker?"}],
            "max_tokens": 128,
        },
    },
    "provider_model": {
        "summary": "A provider's model",
        "value": {
            "model": "gemini/gemini-3.5-flash-lite",
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
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {
                    "schema": {"$ref": "#/components/schemas/ChatCompletionRequest"},
                    "examples": CHAT_EXAMPLES,
                }
            },
        }
    },
)
async def chat_completions(request: Request) -> Response:
    # The body is read here, not by FastAPI: checked before anything else, and a large one is
    # parsed (and turned into the core's request) in a worker thread, off the event loop.
    raw = await request.body()
    max_messages = request.app.state.gateway_settings.max_messages
    body = await off_loop(len(raw), parse_completion_request, raw, max_messages)
    core = core_of(request)
    provider, model = await resolve_model(core, body.model)
    chat_request = await off_loop(len(raw), to_chat_request, body, provider, model)
    request_id = request_id_of(request)
    legacy = body.functions is not None and body.tools is None  # the client reads function_call
    if body.stream:
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return await _stream(request, core, chat_request, include_usage, request_id, legacy)
    try:
        response = await until_disconnect(request, core.chat(chat_request, request_id=request_id))
    except ProviderError as error:
        raise _with_hint(error) from None
    completion = to_completion(response, legacy_functions=legacy)
    # Serialised by pydantic-core in one pass (no intermediate dict, no json.dumps).
    return Response(completion.model_dump_json(), media_type="application/json", headers=conductor_headers(response))


def _with_hint(error: ProviderError) -> ApiError:
    return provider_error(error, hint=MODELS_HINT if isinstance(error, NotConfiguredError) else None)


# --- streaming ------------------------------------------------------------------------------


def _sse(payload: dict[str, Any], event: str | None = None) -> bytes:
    # orjson: a chunk is encoded ~15x faster than by json.dumps (20+ chunks a stream).
    head = b"event: " + event.encode() + b"\n" if event else b""
    return head + b"data: " + orjson.dumps(payload) + b"\n\n"


class _Chunks:
    """Builds the chunks of one streamed answer: every chunk has the same id (from the
    request id) and names the model that serves (from `StreamStart`), as the usage chunk does."""

    def __init__(self, request_id: str, model: str, start: StreamStart | None = None) -> None:
        self.id = completion_id(request_id, start.upstream_id if start else None)
        self.created = int(time.time())
        self.model = model
        self.fingerprint = start.system_fingerprint if start else None

    def chunk(self, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
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
                "model": self.model,
                "system_fingerprint": self.fingerprint,
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


async def coalesced(source: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    """`source`'s pieces, joined when several are ready at once. The source runs in its own
    task and this side sends whatever has gathered each time it wakes: chunks that arrive
    together from the upstream (one TCP read often holds many) leave in one write, not one
    `send` (through every middleware, and a syscall) each. Nothing waits for more: a piece
    that arrives alone leaves alone, as soon as the loop runs this side.

    Closing this generator (the response ended, or the client left) cancels the source's
    task, and the source closes as a cancelled stream does (the core records it)."""
    loop = asyncio.get_running_loop()
    ready: list[bytes] = []
    finished = False
    failure: BaseException | None = None
    wake: asyncio.Future[None] | None = None

    async def pump() -> None:
        nonlocal finished, failure
        try:
            async for piece in source:
                ready.append(piece)
                if wake is not None and not wake.done():
                    wake.set_result(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the reader below
            failure = exc
        finally:
            finished = True
            if wake is not None and not wake.done():
                wake.set_result(None)

    task = loop.create_task(pump())
    try:
        while True:
            if not ready and not finished:
                wake = loop.create_future()
                await wake
            if ready:
                out = b"".join(ready) if len(ready) > 1 else ready[0]
                ready.clear()
                yield out
            elif finished:
                if failure is not None and not isinstance(failure, asyncio.CancelledError):
                    raise failure
                return
    finally:
        if not task.done():
            task.cancel()
        with anyio.CancelScope(shield=True):
            try:
                await task
            except BaseException:  # noqa: BLE001 - the source's own clean-up reports through the core
                pass


async def _head(events: AsyncIterator[Any]) -> list[Any]:
    """Events up to and including the first that is not a status notice (routing, retries and
    fallbacks happen before it)."""
    head: list[Any] = []
    async for event in events:
        head.append(event)
        if not isinstance(event, StatusNotice):
            break
    return head


async def _stream(
    request: Request,
    core: AsyncConductor,
    chat_request: ChatRequest,
    include_usage: bool,
    request_id: str,
    legacy_functions: bool = False,
) -> Response:
    events = core.stream(chat_request, request_id=request_id)
    # Wait for the first content before answering: a request that fails outright gets a real
    # HTTP status (429, 503...), which OpenAI clients turn into the right exception, rather
    # than a 200 with an error inside. A client that leaves meanwhile cancels it.
    try:
        head = await until_disconnect(request, _head(events))
    except ProviderError as error:
        raise _with_hint(error) from None
    except BaseException:
        await events.aclose()
        raise
    start = next((e for e in head if isinstance(e, StreamStart)), None)
    served = f"{start.provider}/{start.model}" if start else chat_request.model or chat_request.provider
    chunks = _Chunks(request_id, served, start)

    def render(event: Any) -> tuple[bytes, bool]:
        """One core event as SSE bytes, and whether it ends the stream."""
        kind = type(event)
        if kind is TextDelta:
            return chunks.chunk({"content": event.text}), False
        if kind is ToolCallDelta:
            function = {"arguments": event.arguments}
            if event.name:
                function["name"] = event.name
            if legacy_functions:  # a client that sent `functions` reads `function_call` pieces
                return chunks.chunk({"function_call": function}), False
            call: dict[str, Any] = {"index": event.index}
            if event.id:
                call.update(id=event.id, type="function")
            call["function"] = function
            return chunks.chunk({"tool_calls": [call]}), False
        if kind is StatusNotice:
            return f": {_header(event.message)}\n\n".encode(), False  # an SSE comment: clients skip it
        if kind is StreamDone:
            response = event.response
            info = conductor_info(response).model_dump(mode="json")
            finish = _finish(response.metadata.finish_reason)
            if response.tool_calls:
                finish = "function_call" if legacy_functions else "tool_calls"
            out = chunks.chunk({}, finish, conductor=info)
            if include_usage:
                out += chunks.usage(response)
            return out + b"data: [DONE]\n\n", True
        if kind is StreamIncomplete:
            return _incomplete(event), True
        return b"", False  # StreamStart: already used for the chunks' model

    async def body() -> AsyncIterator[bytes]:
        async with aclosing(events):
            try:
                out = [chunks.chunk({"role": "assistant", "content": ""})]
                for event in head:
                    data, finished = render(event)
                    out.append(data)
                    if finished:
                        yield b"".join(out)
                        return
                yield b"".join(out)
                async for event in events:
                    data, finished = render(event)
                    if data:
                        yield data
                    if finished:
                        return
                # The core ended without StreamDone: not a success either.
                error = ApiError(
                    502, "stream_interrupted", "the stream ended before it finished", request_id=request_id
                )
                yield _sse(error_body(error), "error")
            except ProviderError as error:
                yield _sse(error_body(provider_error(error), request_id), "error")
            except ApiError as error:
                yield _sse(error_body(error, request_id), "error")

    headers = {"cache-control": "no-cache", "x-accel-buffering": "no", "x-request-id": request_id}
    if start is not None:
        headers["x-conductor-provider"] = _header(start.provider)
        headers["x-conductor-model"] = _header(start.model)
    return _SSEResponse(coalesced(body()), media_type="text/event-stream", headers=headers)


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
