"""The OpenAI-compatible surface: ``POST /v1/chat/completions`` (JSON or server-sent events)
and ``GET /v1/models``. Converters are pure functions, so tests can call them directly."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from contextlib import aclosing
from contextvars import Token
from functools import partial
from typing import Any

import anyio
import orjson
from fastapi import APIRouter, Request, Security
from fastapi.responses import Response, StreamingResponse
from fastapi.security import HTTPBearer
from pydantic import BaseModel, ValidationError
from starlette.types import Receive, Scope, Send

from conductor_core import overhead
from conductor_core.config import redact
from conductor_core.errors import NotConfiguredError, ProviderError
from conductor_core.keys import KeyUse, reset_use, using
from conductor_core.keys.counters import Admission
from conductor_core.models import (
    SPELLED_BY_CLIENT,
    TEXT_CHECKED,
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ContentPart,
    FilePart,
    ImagePart,
    MessageRole,
    StatusNotice,
    StreamDone,
    StreamIncomplete,
    StreamStart,
    TextDelta,
    TextPart,
    ToolCallDelta,
    known_provider_names,
    tool_choice_from_function_call,
    tools_from_functions,
)
from conductor_core.routing import AsyncConductor
from conductor_core.secrets import registered

from .asgi import DisconnectWatch, read_body
from .body import check_message_count, check_text, load_json, may_hold_surrogate, off_loop
from .core import core_of, core_of_app
from .errors import (
    ERROR_RESPONSES,
    PROVIDER_RESPONSES,
    ApiError,
    ClientDisconnected,
    error_body,
    provider_error,
    response_for,
    validation_error,
)
from .keys import admit, check_model, key_of, settle
from .middleware import OVERHEAD_HEADER, overhead_value
from .prompts import PROMPT_HEADER, prompt_reference, prompted, with_prompt
from .schemas import (
    BLANK,
    ChatCompletion,
    ChatCompletionRequest,
    ConductorInfo,
    FileContentPart,
    ImageContentPart,
    ModelCard,
    ModelList,
    OpenAIChatRequest,
    TextContentPart,
)

__all__ = [
    "router",
    "parse_completion_request",
    "to_chat_request",
    "to_completion",
    "completion_body",
    "conductor_info",
    "conductor_info_body",
    "serve_chat",
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
    return ChatCompletionRequest.model_validate(load_completion_data(raw, max_messages))


def load_completion_data(raw: bytes, max_messages: int) -> Any:
    """The body as JSON, checked as `parse_completion_request` says, not yet validated (a
    saved prompt is applied to it first: gateway/prompts.py)."""
    data = load_json(raw)
    if may_hold_surrogate(raw):
        check_text(data)
    messages = data.get("messages") if isinstance(data, dict) else None
    if isinstance(messages, list):
        check_message_count(len(messages), max_messages)
    return data


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
    content, parts = m.content, None
    if isinstance(content, list):  # a user message's parts (checked by the core's rules already)
        content, parts = _parts(content)
    return ChatMessage.model_construct(
        role=_ROLE[m.role],
        content=content if content is not None else "",  # an assistant that only calls tools: null
        parts=parts,
        tool_calls=fields.get("tool_calls"),
        tool_call_id=fields.get("tool_call_id"),
        name=fields.get("name"),
    )


def _parts(parts: list[Any]) -> tuple[str, list[ContentPart] | None]:
    """A user message's OpenAI parts as (its text, the core's parts): text alone stays text, as
    before parts existed (joined); with an image or a file, every part in order, and the text
    joined as ChatMessage joins it."""
    if all(isinstance(part, TextContentPart) for part in parts):
        return "".join(part.text for part in parts), None
    out: list[ContentPart] = []
    for part in parts:
        if isinstance(part, ImageContentPart):
            out.append(ImagePart.model_construct(url=part.image_url.url, detail=part.image_url.detail))
        elif isinstance(part, FileContentPart):
            out.append(FilePart.model_construct(url=part.file.file_data, filename=part.file.filename))
        else:
            out.append(TextPart.model_construct(text=part.text))
    return "\n".join(part.text for part in out if isinstance(part, TextPart)), out


def conductor_info(response: ChatResponse, overhead_ms: float | None = None) -> ConductorInfo:
    return ConductorInfo.model_validate(conductor_info_body(response, overhead_ms))


def conductor_info_body(response: ChatResponse, overhead_ms: float | None = None) -> dict[str, Any]:
    """`conductor_info` as the JSON it dumps to (built directly: the hot path's)."""
    a, r = response.analytics, response.routing
    return {
        "request_id": response.metadata.id,
        "provider": response.metadata.provider,
        "model": response.metadata.model,
        "route": r.mode,
        "policy": r.policy.value if r.policy else None,
        "reason": r.reason,
        "attempts": [attempt.model_dump(mode="json") for attempt in r.attempts],
        "latency_ms": a.latency_ms,
        "time_to_first_token_ms": a.time_to_first_token_ms,
        "tokens_per_second": a.tokens_per_second,
        "cost_usd": a.cost_usd,
        "overhead_ms": None if overhead_ms is None else round(overhead_ms, 3),
    }


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


def to_completion(
    response: ChatResponse, *, legacy_functions: bool = False, overhead_ms: float | None = None
) -> ChatCompletion:
    return ChatCompletion.model_validate(
        completion_body(response, legacy_functions=legacy_functions, overhead_ms=overhead_ms)
    )


def completion_body(
    response: ChatResponse, *, legacy_functions: bool = False, overhead_ms: float | None = None
) -> dict[str, Any]:
    """`to_completion` as the JSON it dumps to, built directly (the hot path's: validating the
    answer into the response models and dumping them again cost more than the rest of it)."""
    choices = [_choice(response, legacy_functions)]
    for index, more in enumerate(response.more_choices or (), 1):  # OpenAI's n (several choices)
        message = {"function_call": None, **more["message"]}
        choices.append({**more, "index": index, "message": message, "finish_reason": _finish(more["finish_reason"])})
    usage = _usage(response)
    usage.setdefault("prompt_tokens_details", None)
    return {
        "id": completion_id(response.metadata.id, response.metadata.upstream_id),
        "object": "chat.completion",
        "created": int(response.metadata.finished_at.timestamp()),
        "model": _label(response),
        "choices": choices,
        "usage": usage,
        "system_fingerprint": response.metadata.system_fingerprint,
        "conductor": conductor_info_body(response, overhead_ms),
    }


def _choice(response: ChatResponse, legacy_functions: bool, index: int = 0) -> dict[str, Any]:
    """The answer as one of OpenAI's choices."""
    message: dict[str, Any] = {
        "role": "assistant",
        "content": response.content,
        "refusal": None,
        "tool_calls": None,
        "function_call": None,
    }
    finish = _finish(response.metadata.finish_reason)
    if response.tool_calls:
        if legacy_functions:  # a client that sent `functions` reads `function_call`
            message["function_call"] = response.tool_calls[0].function.model_dump(mode="json")
            finish = "function_call"
        else:
            message["tool_calls"] = [call.model_dump(mode="json") for call in response.tool_calls]
            finish = "tool_calls"
        message["content"] = response.content or None
    return {"index": index, "message": message, "finish_reason": finish, "logprobs": response.logprobs}


def _logprobs(content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"content": content, "refusal": None}


# --- n > 1 ------------------------------------------------------------------------------------


def asking_for_n(request: ChatRequest, n: int) -> ChatRequest:
    """`request` with OpenAI's `n` for an upstream that answers it (sent as the client wrote it)."""
    return request.model_copy(update={"extra_params": {**(request.extra_params or {}), "n": n}})


def merged(responses: list[ChatResponse], legacy_functions: bool) -> ChatResponse:
    """`n` answers to the same request as one with `n` choices: the first's figures, with the
    tokens and the cost of all (unknown if any one's is unknown) and the longest latency."""
    first = responses[0]
    costs = [r.analytics.cost_usd for r in responses]
    analytics = first.analytics.model_copy(
        update={
            "input_tokens": sum(r.analytics.input_tokens for r in responses),
            "output_tokens": sum(r.analytics.output_tokens for r in responses),
            "cached_tokens": sum(r.analytics.cached_tokens for r in responses),
            "cost_usd": None if any(c is None for c in costs) else sum(c for c in costs if c is not None),
            "latency_ms": max(r.analytics.latency_ms for r in responses),
        }
    )
    more = [_choice(r, legacy_functions, index) for index, r in enumerate(responses[1:], 1)]
    return first.model_copy(update={"analytics": analytics, "more_choices": more or None})


async def fan_out(core: AsyncConductor, request: ChatRequest, n: int, request_id: str) -> list[ChatResponse]:
    """`n` calls at once, for an upstream without OpenAI's `n`: each is an attempt of this
    request in the log. The first failure fails the request (as one call's would) and stops
    the others."""
    tasks: list[asyncio.Task[ChatResponse]] = []
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(core.chat(request, request_id=request_id)) for _ in range(n)]
    except BaseExceptionGroup as failed:
        raise _first_failure(failed) from None
    return [task.result() for task in tasks]


def _first_failure(group: BaseExceptionGroup) -> BaseException:
    """The error to answer with: a provider's, else the first."""
    found = group.exceptions
    return next((e for e in found if isinstance(e, ProviderError)), found[0])


def _header(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value)
    if not (text.isascii() and text.isprintable()):  # headers are latin-1, one line
        text = "".join(c if 32 <= ord(c) < 127 else "?" for c in text)
    return redact(text)[:512]


def _known_header(value: str) -> str:
    """`_header(value)` for text that repeats from request to request (provider, model, route,
    reason), remembered until another key is registered (what redaction removes changes)."""
    cache = _HEADER_CACHE
    if cache.keys_seen is not registered():
        cache.clear()
        cache.keys_seen = registered()
    found = cache.get(value)
    if found is None:
        if len(cache) >= _HEADER_CACHE_SIZE:
            cache.clear()
        found = cache[value] = _header(value)
    return found


class _HeaderCache(dict[str, str]):
    keys_seen: object = None


_HEADER_CACHE = _HeaderCache()
_HEADER_CACHE_SIZE = 512


def conductor_headers(response: ChatResponse) -> dict[str, str]:
    """Conductor's figures as response headers (for clients that only see the OpenAI body).
    Text goes through `redact()` (a model's name comes from the upstream); the figures are
    numbers Conductor formats itself."""
    a, r = response.analytics, response.routing
    headers = {
        "x-request-id": _header(response.metadata.id),
        "x-conductor-provider": _known_header(response.metadata.provider),
        "x-conductor-model": _known_header(response.metadata.model),
        "x-conductor-route": _known_header(r.mode),
        "x-conductor-latency-ms": f"{a.latency_ms:.1f}",
        "x-conductor-cost-usd": "unknown" if a.cost_usd is None else f"{a.cost_usd:.8f}",
        "x-conductor-attempts": str(len(r.attempts)),
    }
    if a.time_to_first_token_ms is not None:
        headers["x-conductor-ttft-ms"] = f"{a.time_to_first_token_ms:.1f}"
    if r.reason:
        headers["x-conductor-route-reason"] = _known_header(r.reason)
    return headers


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
        f"unknown model {text!r}: use 'auto', a provider name (configured: {configured}), 'provider/model' "
        f"or 'prompt:NAME@LABEL' (a saved prompt); {MODELS_HINT}",
        param="model",
    )


# --- endpoints ------------------------------------------------------------------------------


@router.get(
    "/v1/models",
    response_model=ModelList,
    responses=ERROR_RESPONSES,
    summary="List models (OpenAI format)",
    description="'auto' plus every model of every configured provider, as 'provider/model' (for a gateway key "
    "limited to some models, those only).",
    tags=["OpenAI-compatible"],
)
async def get_models(request: Request) -> ModelList:
    cards = await list_models(core_of(request))
    key = key_of(request.scope)
    if key is not None and key.models is not None:  # a gateway key sees the models it may use
        cards = [card for card in cards if key.allows(*_provider_model(card.id))]
    return ModelList(data=cards)


def _provider_model(model_id: str) -> tuple[str, str | None]:
    provider, _, model = model_id.partition("/")
    return provider, model or None


@router.get(
    "/v1/models/{model_id:path}",
    response_model=ModelCard,
    responses={**ERROR_RESPONSES, 404: PROVIDER_RESPONSES[404]},
    summary="Retrieve one model (OpenAI format)",
    tags=["OpenAI-compatible"],
)
async def get_model(model_id: str, request: Request) -> ModelCard:
    key = key_of(request.scope)
    for card in await list_models(core_of(request)):
        if card.id == model_id and (key is None or key.allows(*_provider_model(card.id))):
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
    "prompt": {
        "summary": "A saved prompt at a label, with its variables (Conductor extension)",
        "description": "The prompt's system prompt and messages, rendered with `variables`, come first, then the "
        "request's messages; its settings apply where the request sets none. `prompt:NAME` is the `production` "
        "label, `prompt:NAME@3` version 3.",
        "value": {
            "model": "prompt:support-reply@production",
            "variables": {"company": "Acme", "question": "Where is my parcel?"},
            "messages": [],
        },
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
    "headers and in the extra `conductor` field (on the final chunk when streaming).\n\n"
    '**Saved prompts**: `model: "prompt:NAME@LABEL"` (or `prompt:NAME@3` for version 3; `prompt:NAME` is the '
    "`production` label) serves a prompt saved on the playground's Prompts page, rendered with the `variables` "
    'field (with the openai client: `extra_body={"variables": {...}}`). Its system prompt and messages come '
    "first, then the request's own messages. Its settings (target, temperature, max tokens, top_p, stop, seed, "
    "response_format, tools) apply except where the request sets one explicitly: the request's value wins. A "
    "missing variable is a 400 that names it (param `variables`); an unknown prompt, version or label a 404 "
    "(param `model`). The label is read on every request, so moving it serves the new version at once; the "
    "`x-conductor-prompt` header names the version that answered (`support-reply@2`).",
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
    # Documentation, and the way in for an app that mounts this router itself: the gateway's
    # front door hands this path straight to `serve_chat` (no FastAPI machinery per request).
    return _Handled(partial(serve_chat, request.app))


class _Handled(Response):
    """A handler that answers in plain ASGI, as FastAPI's endpoint response."""

    def __init__(self, handler: Callable[[Scope, Receive, Send], Awaitable[None]]) -> None:
        self.handler = handler
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.handler(scope, receive, send)


async def serve_chat(app: Any, scope: Scope, receive: Receive, send: Send) -> None:
    """``POST /v1/chat/completions`` in plain ASGI, the gateway's hot path: the body is read
    and checked here (a large one parsed, and turned into the core's request, in a worker
    thread, off the event loop), the answer is built as bytes, and every failure is answered
    as the app's exception handlers answer it (`response_for`). The client going away cancels
    the request wherever it is (`DisconnectWatch`)."""
    request_id: str = scope["state"]["request_id"]
    clock = overhead.current()
    watch: DisconnectWatch | None = None
    started = False
    served_prompt: list[tuple[bytes, bytes]] = []  # x-conductor-prompt: the version a prompt request got
    key = key_of(scope)  # a gateway key's request: its models and limits apply, its attempts carry its id
    admission: Admission | None = None
    use: KeyUse | None = None
    use_token: Token[KeyUse | None] | None = None

    async def start(status: int, headers: list[tuple[bytes, bytes]]) -> None:
        nonlocal started
        started = True
        await send({"type": "http.response.start", "status": status, "headers": headers + served_prompt})

    try:
        settings = app.state.gateway_settings
        raw = await read_body(receive, settings.max_body_bytes)
        watch = DisconnectWatch(receive)
        data = await off_loop(len(raw), load_completion_data, raw, settings.max_messages)
        if (reference := prompt_reference(data)) is not None:  # model "prompt:NAME@LABEL"
            data, version = await prompted(app, core_of_app(app), reference, data)
            served_prompt.append((PROMPT_HEADER, version.encode()))
        body = await off_loop(len(raw), ChatCompletionRequest.model_validate, data)
        core = core_of_app(app)
        provider, model = await resolve_model(core, body.model)
        if key is not None:
            known = core.registry.providers.get(provider)
            check_model(key, provider, model, known.default_model if known is not None else None)
            admission = await admit(app, key, len(raw), body.max_completion_tokens or body.max_tokens, body.n or 1)
            use = KeyUse(key.id)
            use_token = using(use)
        chat_request = await off_loop(len(raw), to_chat_request, body, provider, model)
        if served_prompt:  # the evaluated policy routes by the prompt's name
            chat_request = with_prompt(chat_request, served_prompt[0][1].decode())
        legacy = body.functions is not None and body.tools is None  # the client reads function_call
        n = body.n or 1
        upstream = core.registry.providers.get(provider)
        if n > 1 and not body.stream and upstream is not None and upstream.answers_n:
            chat_request, n = asking_for_n(chat_request, n), 1  # one call: the upstream answers all n
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            if n > 1:
                await _serve_streams(core, chat_request, n, include_usage, request_id, legacy, start, send)
            else:
                await _serve_stream(core, chat_request, include_usage, request_id, legacy, start, send)
            return
        try:
            if n > 1:
                response = merged(await fan_out(core, chat_request, n, request_id), legacy)
            else:
                response = await core.chat(chat_request, request_id=request_id)
        except ProviderError as error:
            raise _with_hint(error) from None
        spent = clock.release() if clock is not None else None
        content = orjson.dumps(completion_body(response, legacy_functions=legacy, overhead_ms=spent))
        headers = _raw(conductor_headers(response))
        if spent is not None:
            headers.append((_OVERHEAD, overhead_value(spent).encode()))
        headers += [(b"content-length", str(len(content)).encode()), (b"content-type", b"application/json")]
        await start(200, headers)
        await send({"type": "http.response.body", "body": content})
    except asyncio.CancelledError:
        if watch is None or not watch.gone:
            raise
        if (task := asyncio.current_task()) is not None:  # always: this is a coroutine
            task.uncancel()  # the client left: nobody to answer
    except ClientDisconnected:
        pass
    except Exception as exc:  # answered as the app's handlers answer it
        if started:
            raise
        answer = response_for(exc, request_id, scope["method"], scope["path"])
        if clock is not None:
            answer.headers[OVERHEAD_HEADER] = overhead_value(clock.release())
        await answer(scope, receive, send)
    finally:
        if watch is not None:
            watch.close()
        if use_token is not None:
            reset_use(use_token)
        if admission is not None and use is not None:
            await settle(app, admission, use)


def _raw(headers: dict[str, str]) -> list[tuple[bytes, bytes]]:
    return [(name.encode(), value.encode("latin-1")) for name, value in headers.items()]


_OVERHEAD = OVERHEAD_HEADER.encode()


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

    def chunk(
        self,
        delta: dict[str, Any],
        finish: str | None = None,
        *,
        index: int = 0,
        logprobs: dict[str, Any] | None = None,
        **extra: Any,
    ) -> bytes:
        body = {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "system_fingerprint": self.fingerprint,
            "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            **extra,
        }
        return _sse(body)

    def piece(self, event: Any, legacy_functions: bool, index: int = 0) -> bytes | None:
        """A text, tool-call or status event as SSE bytes (None for any other event)."""
        kind = type(event)
        if kind is TextDelta:
            if event.logprobs:  # the upstream's, for this piece's tokens
                return self.chunk({"content": event.text}, index=index, logprobs=_logprobs(event.logprobs))
            return self.chunk({"content": event.text}, index=index)
        if kind is ToolCallDelta:
            function = {"arguments": event.arguments}
            if event.name:
                function["name"] = event.name
            if legacy_functions:  # a client that sent `functions` reads `function_call` pieces
                return self.chunk({"function_call": function}, index=index)
            call: dict[str, Any] = {"index": event.index}
            if event.id:
                call.update(id=event.id, type="function")
            call["function"] = function
            return self.chunk({"tool_calls": [call]}, index=index)
        if kind is StatusNotice:
            return f": {_header(event.message)}\n\n".encode()  # an SSE comment: clients skip it
        return None

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

    async def stream_response(self, send: Send) -> None:
        try:
            await super().stream_response(send)
        finally:
            with anyio.CancelScope(shield=True):
                if isinstance(self.body_iterator, AsyncGenerator):  # ours always is
                    await self.body_iterator.aclose()


async def coalesced(source: AsyncIterator[bytes]) -> AsyncGenerator[bytes, None]:
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


async def _serve_stream(
    core: AsyncConductor,
    chat_request: ChatRequest,
    include_usage: bool,
    request_id: str,
    legacy_functions: bool,
    start: Callable[[int, list[tuple[bytes, bytes]]], Awaitable[None]],
    send: Send,
) -> None:
    events = core.stream(chat_request, request_id=request_id)
    # Wait for the first content before answering: a request that fails outright gets a real
    # HTTP status (429, 503...), which OpenAI clients turn into the right exception, rather
    # than a 200 with an error inside.
    try:
        head = await _head(events)
    except ProviderError as error:
        await events.aclose()
        raise _with_hint(error) from None
    except BaseException:
        await events.aclose()
        raise
    start_event = next((e for e in head if isinstance(e, StreamStart)), None)
    headers = [
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-request-id", request_id.encode()),
    ]
    if start_event is not None:
        headers.append((b"x-conductor-provider", _known_header(start_event.provider).encode("latin-1")))
        headers.append((b"x-conductor-model", _known_header(start_event.model).encode("latin-1")))
    clock = overhead.current()
    if clock is not None:  # as a header, only the time before the first byte: the last chunk has all of it
        headers.append((_OVERHEAD, overhead_value(clock.overhead_ms()).encode()))
    headers.append((b"content-type", b"text/event-stream; charset=utf-8"))
    pieces = coalesced(
        _stream_body(events, head, start_event, chat_request, include_usage, request_id, legacy_functions)
    )
    async with aclosing(pieces):
        await start(200, headers)
        async for data in pieces:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _stream_body(
    events: AsyncGenerator[Any, None],
    head: list[Any],
    start: StreamStart | None,
    chat_request: ChatRequest,
    include_usage: bool,
    request_id: str,
    legacy_functions: bool,
) -> AsyncIterator[bytes]:
    """The SSE bytes of a stream whose first events (`head`) were read already."""
    served = f"{start.provider}/{start.model}" if start else chat_request.model or chat_request.provider
    chunks = _Chunks(request_id, served, start)

    def render(event: Any) -> tuple[bytes, bool]:
        """One core event as SSE bytes, and whether it ends the stream."""
        kind = type(event)
        piece = chunks.piece(event, legacy_functions)
        if piece is not None:
            return piece, False
        if kind is StreamDone:
            response = event.response
            clock = overhead.current()
            # The whole figure, up to this last chunk; the answer's log row is written with it, now.
            spent = clock.release() if clock is not None else None
            info = conductor_info_body(response, spent)
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
            error = ApiError(502, "stream_interrupted", "the stream ended before it finished", request_id=request_id)
            yield _sse(error_body(error), "error")
        except ProviderError as error:
            yield _sse(error_body(provider_error(error), request_id), "error")
        except ApiError as error:
            yield _sse(error_body(error, request_id), "error")


async def _serve_streams(
    core: AsyncConductor,
    chat_request: ChatRequest,
    n: int,
    include_usage: bool,
    request_id: str,
    legacy_functions: bool,
    start: Callable[[int, list[tuple[bytes, bytes]]], Awaitable[None]],
    send: Send,
) -> None:
    """`n` > 1 streamed: `n` streams at once (each an attempt of this request in the log),
    their chunks interleaved as they come, each carrying its choice's index. As with one
    stream, the answer starts once every stream has its first content, so a failure before
    that gets a real HTTP status."""
    streams = [core.stream(chat_request, request_id=request_id) for _ in range(n)]
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(_head(events)) for events in streams]
        heads = [task.result() for task in tasks]
    except BaseExceptionGroup as failed:
        await _close_all(streams)
        error = _first_failure(failed)
        if isinstance(error, ProviderError):
            raise _with_hint(error) from None
        raise error from None
    except BaseException:
        await _close_all(streams)
        raise
    start_event = next((e for e in heads[0] if isinstance(e, StreamStart)), None)
    headers = [
        (b"cache-control", b"no-cache"),
        (b"x-accel-buffering", b"no"),
        (b"x-request-id", request_id.encode()),
        (b"content-type", b"text/event-stream; charset=utf-8"),
    ]
    pieces = coalesced(
        _streams_body(streams, heads, start_event, chat_request, include_usage, request_id, legacy_functions)
    )
    async with aclosing(pieces):
        await start(200, headers)
        async for data in pieces:
            await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _close_all(streams: list[AsyncGenerator[Any, None]]) -> None:
    with anyio.CancelScope(shield=True):
        for events in streams:
            await events.aclose()


_ENDED = object()  # a stream's last item in the queue below


async def _streams_body(
    streams: list[AsyncGenerator[Any, None]],
    heads: list[list[Any]],
    start: StreamStart | None,
    chat_request: ChatRequest,
    include_usage: bool,
    request_id: str,
    legacy_functions: bool,
) -> AsyncIterator[bytes]:
    """The SSE bytes of `n` streams whose first events (`heads`) were read already: every
    choice's pieces under its index, a finish chunk per choice, then (once all have finished)
    Conductor's figures for all of them, the summed usage and [DONE]. A stream that breaks
    ends the answer with an error event, as one stream's break does."""
    served = f"{start.provider}/{start.model}" if start else chat_request.model or chat_request.provider
    chunks = _Chunks(request_id, served, start)
    queue: asyncio.Queue[tuple[int, Any]] = asyncio.Queue()

    async def pump(index: int, events: AsyncGenerator[Any, None]) -> None:
        try:
            async for event in events:
                await queue.put((index, event))
            await queue.put((index, _ENDED))
        except Exception as exc:  # noqa: BLE001 - handed to the reader below
            await queue.put((index, exc))

    finished: dict[int, ChatResponse] = {}
    loop = asyncio.get_running_loop()
    pumps: list[asyncio.Task[None]] = []
    try:
        out = [chunks.chunk({"role": "assistant", "content": ""}, index=i) for i in range(len(streams))]
        for index, head in enumerate(heads):
            for event in head:
                await queue.put((index, event))
        yield b"".join(out)
        pumps = [loop.create_task(pump(index, events)) for index, events in enumerate(streams)]
        ended = 0
        while ended < len(streams):
            index, event = await queue.get()
            piece = chunks.piece(event, legacy_functions, index)
            if piece is not None:
                yield piece
            elif isinstance(event, StreamDone):
                response = finished[index] = event.response
                finish = _finish(response.metadata.finish_reason)
                if response.tool_calls:
                    finish = "function_call" if legacy_functions else "tool_calls"
                if len(finished) < len(streams):
                    yield chunks.chunk({}, finish, index=index)
                    continue
                clock = overhead.current()
                spent = clock.release() if clock is not None else None
                whole = merged([finished[i] for i in range(len(streams))], legacy_functions)
                tail = chunks.chunk({}, finish, index=index, conductor=conductor_info_body(whole, spent))
                if include_usage:
                    tail += chunks.usage(whole)
                yield tail + b"data: [DONE]\n\n"
                return
            elif isinstance(event, StreamIncomplete):
                yield _incomplete(event)
                return
            elif isinstance(event, ProviderError):
                yield _sse(error_body(provider_error(event), request_id), "error")
                return
            elif isinstance(event, BaseException):
                raise event
            elif event is _ENDED:
                ended += 1
        # A stream ended without StreamDone: not a success either.
        error = ApiError(502, "stream_interrupted", "the stream ended before it finished", request_id=request_id)
        yield _sse(error_body(error), "error")
    finally:
        for task in pumps:
            task.cancel()
        with anyio.CancelScope(shield=True):
            await asyncio.gather(*pumps, return_exceptions=True)
        await _close_all(streams)


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
