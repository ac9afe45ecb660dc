"""OpenAI, and any OpenAI-compatible server (Ollama, vLLM, llama.cpp server, LM Studio, Groq,
OpenRouter...), on the official `openai` SDK's async client. A named endpoint is configuration,
not code. Every OpenAI parameter a request sets is passed on as it is.

The hot path is the gateway's, so the SDK is used the cheapest way it documents:

* Its aiohttp transport (`openai.DefaultAioHttpClient`, the `openai[aiohttp]` extra), which
  the SDK recommends for concurrency: ~1.2 ms less CPU per call than the default transport
  under 50 concurrent calls (BENCHMARKS.md, gateway CPU).
* `client.post("/chat/completions", body=..., cast_to=httpx2.Response)`, the SDK's documented
  way to send a body as it is: the request is built, authenticated, sent and its errors
  raised by the SDK (the same `APIStatusError` tree), but the SDK neither re-walks the
  parameters against its typed schema (~0.6 ms a call; the body is what the client sent,
  already validated by Conductor) nor builds a model object per answer or streamed chunk
  (11.1 -> 4.4 ms of CPU per 20-chunk stream, benchmarks/profile_stream_parsing.py). The
  answers are parsed here, strictly: `_from_response` and `_stream` raise on a body that is
  not a chat completion, and tests feed them malformed, cut and error-carrying answers.
* Per call the SDK rebuilds what does not change between calls: `_Client` keeps the URL
  of each path (`_prepare_url`, the hook the SDK's own `AzureOpenAI` overrides) and the
  request options of a chat are copied from one made once (`_Sdk.chat`) rather than built
  field by field (`post` builds them with every default deep-copied). ~0.2 ms of the
  gateway's CPU a chat (BENCHMARKS.md, gateway CPU).
"""

from __future__ import annotations

import functools
import json
from collections.abc import AsyncGenerator
from contextlib import aclosing
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple

import orjson
from pydantic import ValidationError

from .. import aio
from ..errors import (
    MalformedResponse,
    NotConfiguredError,
    ProviderError,
    ProviderUnavailableError,
    error_for_status,
    sdk_error,
)
from ..models import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    FilePart,
    ImagePart,
    ToolCall,
    ToolCallDelta,
    Usage,
    tool_choice_from_function_call,
    tools_from_functions,
)
from .base import BaseProvider, Completion, Served, StreamPiece
from .spec import SAMPLING_SETTINGS, Capabilities, CodeStyle, ModelSpec, ProviderSpec

if TYPE_CHECKING:
    import httpx2

    from ..config import EndpointConfig, Settings

# OpenAI's models as of 2026-12-07 (OpenAI's deprecations page; the pinned SDK's ChatModel
# type lists the shutdown dates): gpt-4o, gpt-4o-mini, gpt-4.1 and gpt-4.1-mini shut down on
# 2027-01-14 (replacement: gpt-6-luna), gpt-4.1-nano shut down on 2026-10-23 and gpt-5, gpt-5-mini
# and gpt-5-nano on 2026-12-11. The three below have no shutdown date. They reason by default,
# and with a reasoning effort other than "none" Chat Completions refuses temperature, top_p,
# logprobs and function tools: Conductor asks for "none" (OpenAI's GPT-6 migration guidance).
_NO_REASONING = MappingProxyType({"reasoning_effort": "none"})
SPEC = ProviderSpec(
    name="openai",
    display_name="OpenAI",
    module=__name__,
    class_name="OpenAICompatProvider",
    default_model="gpt-6-luna",
    models=(
        ModelSpec("gpt-6-luna", request_fields=_NO_REASONING, note="the cheapest ($0.10 / $0.50 per MTok)"),
        ModelSpec("gpt-6-sol", request_fields=_NO_REASONING),
        ModelSpec("gpt-5.4-mini", request_fields=_NO_REASONING),
    ),
    # Every OpenAI parameter is passed on as it is (compatible servers take the same ones).
    capabilities=Capabilities(
        sampling=frozenset(SAMPLING_SETTINGS),
        tools=True,
        tool_choice=True,
        parallel_tool_calls=True,
        structured_output=frozenset({"json_object", "json_schema"}),
        logprobs=True,
        logit_bias=True,
        extra_params=True,
        vision=True,
    ),
    key_env_vars=("OPENAI_API_KEY",),
    base_url_env_vars=("OPENAI_BASE_URL",),
    price_provider_id="openai",
    code=CodeStyle(package="openai", snippet="openai"),
)
# ChatRequest fields passed on under the same name when set.
_PASSED_ON = (
    "top_p",
    "seed",
    "presence_penalty",
    "frequency_penalty",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "user",
)
#: A legacy `function_call` answer has no id; the tool call it becomes is given this one.
_FUNCTION_CALL_ID = "function_call"
#: What reading an answer of the wrong shape raises (a string where an object belongs, a
#: missing key...): the upstream's doing, reported as MalformedResponse.
_WRONG_SHAPE = (KeyError, IndexError, TypeError, AttributeError, ValidationError)


class _Sdk(NamedTuple):
    """What this module takes from the SDK, loaded when the first provider is built."""

    openai: Any  # the module (its exception classes)
    client: Any  # _Client below
    response: Any  # httpx2.Response: `post` hands back the raw answer
    timeout: Any  # httpx2.Timeout
    chat: Any  # what `client.post("/chat/completions", body=...)` builds, made once; each call copies it


@functools.cache
def _sdk() -> _Sdk:
    import httpx2
    import openai
    from openai._base_client import _merge_headers
    from openai._models import FinalRequestOptions
    from openai._types import NotGiven

    class _Client(openai.AsyncOpenAI):
        """The SDK's async client, keeping the URL it prepares for each path: `_prepare_url`
        parses the path and the joined base URL on every call (~5% of the gateway's CPU a
        chat, most of it in httpx2's URL parser), and the answer only changes with the base
        URL, which the setter below clears it for. Keeping the headers it builds from the
        same parts (`_build_headers`). And no idempotency key nobody sends."""

        def __init__(self, **kwargs: Any) -> None:
            self._urls: dict[str, httpx2.URL] = {}
            self._headers: dict[tuple[Any, ...], httpx2.Headers] = {}
            super().__init__(**kwargs)

        def _build_headers(self, options: FinalRequestOptions, *, retries_taken: int = 0) -> httpx2.Headers:
            # The SDK builds the same ~17 headers anew for every call, through httpx2's
            # case-insensitive Headers (~5% of the gateway's CPU a chat). They are made of the
            # client's auth and default headers (merged here as the SDK merges them), its
            # timeout and the retry count; a call that brings no headers, idempotency key or
            # timeout of its own gets a copy of what the SDK built from the same parts.
            if options.headers or options.idempotency_key or not isinstance(options.timeout, NotGiven):
                return super()._build_headers(options, retries_taken=retries_taken)
            parts = _merge_headers(self._auth_headers(options.security), self.default_headers)
            key = (retries_taken, repr(self.timeout), *parts.items())
            built = self._headers.get(key)
            if built is None:
                if len(self._headers) >= 8:  # a changed key or default header: the old ones go
                    self._headers.clear()
                built = self._headers[key] = super()._build_headers(options, retries_taken=retries_taken)
            return built.copy()

        def _prepare_url(self, url: str) -> httpx2.URL:
            prepared = self._urls.get(url)
            if prepared is None:
                prepared = self._urls[url] = super()._prepare_url(url)
            return prepared

        def _idempotency_key(self) -> str:
            # The SDK draws a uuid4 a call for an idempotency header, which OpenAI's client does
            # not send (`_idempotency_header` is None): no key then, as none goes out.
            return "" if self._idempotency_header is None else super()._idempotency_key()

        @property
        def base_url(self) -> httpx2.URL:
            return super().base_url

        @base_url.setter
        def base_url(self, url: httpx2.URL | str) -> None:
            self._urls = {}
            # mypy reads a property on the class as its value's type, not as the property.
            openai.AsyncOpenAI.base_url.fset(self, url)  # type: ignore[attr-defined]

    return _Sdk(
        openai=openai,
        client=_Client,
        response=httpx2.Response,
        timeout=httpx2.Timeout,
        chat=FinalRequestOptions.construct(method="post", url="/chat/completions"),
    )


class OpenAICompatProvider(BaseProvider):
    spec: ProviderSpec | None = SPEC  # None on a configured endpoint

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str | None = None,
        models: list[str] | None = None,
        timeout_s: float = 60.0,
        display_name: str | None = None,
        key_env_var: str | None = None,
        price_provider_id: str | None = "openai",
        official: bool = True,
        vision: bool = True,
    ) -> None:
        if not official:
            self.spec = None  # a configured endpoint: its own models, names and prices
        super().__init__(name, default_model=default_model, timeout_s=timeout_s)
        sdk = self._sdk = _sdk()
        # max_retries=0: the router is the only retry loop. One client per event loop (its
        # connection pool belongs to the loop it was made on).
        self._clients = aio.PerLoop(
            lambda: sdk.client(
                api_key=api_key,
                base_url=base_url,
                max_retries=0,
                # As a Timeout, which httpx2 copies per call, where a number is checked against
                # a runtime Protocol first (~10 us a call); the same timeouts either way.
                timeout=sdk.timeout(timeout_s),
                http_client=sdk.openai.DefaultAioHttpClient(timeout=sdk.timeout(timeout_s)),
            )
        )
        self._configured_models = models or [self.default_model]
        self.display_name = display_name or (SPEC.display_name if official else name)
        self.key_env_var = key_env_var
        self.price_provider_id = price_provider_id
        self._base_url = base_url
        # A configured endpoint says whether it reads images (`vision = false`: a text-only server).
        self.reads_attachments = vision
        # The official API renamed max_tokens; compatible servers still expect the old name.
        self._max_tokens_param = "max_completion_tokens" if official else "max_tokens"

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "openai") -> OpenAICompatProvider:
        key = settings.provider_key(SPEC.name)
        if key is None:
            raise NotConfiguredError(SPEC.key_hint, provider=name)
        return cls(
            name,
            api_key=key.get_secret_value(),
            base_url=settings.provider_base_url(SPEC.name),
            models=SPEC.model_ids,
            timeout_s=settings.timeout_s,
            key_env_var=SPEC.key_env_vars[0],
        )

    @classmethod
    def from_endpoint(cls, name: str, endpoint: EndpointConfig, settings: Settings) -> OpenAICompatProvider:
        key = endpoint.resolved_key()
        if key is None and endpoint.api_key_env:
            raise NotConfiguredError(f"set {endpoint.api_key_env}", provider=name)
        default_model = endpoint.default_model or (endpoint.models[0] if endpoint.models else "default")
        return cls(
            name,
            # Local servers such as Ollama need no key, but the SDK insists on a non-empty one.
            api_key=key.get_secret_value() if key else "not-needed",
            base_url=endpoint.base_url,
            default_model=default_model,
            models=endpoint.models or [default_model],
            timeout_s=settings.timeout_s,
            display_name=endpoint.display_name or name,
            key_env_var=endpoint.api_key_env,
            price_provider_id=endpoint.price_provider,
            official=False,
            vision=endpoint.vision,
        )

    # --- converters (pure) --------------------------------------------------------

    def _to_request(self, request: ChatRequest, model: str) -> dict[str, Any]:
        params: dict[str, Any] = {"model": model, "messages": [_message(m) for m in request.messages]}
        known = self.spec.model(model) if self.spec is not None else None
        if known is not None:
            params.update(known.request_fields)
        if request.temperature is not None:
            params["temperature"] = request.temperature
        if request.max_tokens is not None:
            params[self._max_tokens_param] = request.max_tokens
        if request.stop:
            params["stop"] = list(request.stop)
        for name in _PASSED_ON:
            value = getattr(request, name)
            if value is not None:
                params[name] = value
        if request.response_format is not None:
            params["response_format"] = request.response_format.model_dump(by_alias=True, exclude_none=True)
        if request.tools:
            params["tools"] = [tool.model_dump(exclude_none=True) for tool in request.tools]
            choice = request.tool_choice
            if choice is not None:
                params["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump()
            if request.parallel_tool_calls is not None:
                params["parallel_tool_calls"] = request.parallel_tool_calls
        if request.extra_params:
            _respell(params, request)
            params.update(request.extra_params)  # as the client sent them: the upstream's business
        return params

    @staticmethod
    def _usage(usage: dict[str, Any] | None) -> Usage | None:
        if not usage:
            return None
        details = usage.get("prompt_tokens_details") or {}
        return Usage(
            input_tokens=usage.get("prompt_tokens") or 0,
            output_tokens=usage.get("completion_tokens") or 0,
            cached_tokens=details.get("cached_tokens") or 0,
        )

    @staticmethod
    def _from_response(data: dict[str, Any], model: str) -> Completion:
        """A chat.completion body (parsed JSON) as our Completion; MalformedResponse if it is not one."""
        if "error" in data and "choices" not in data:
            raise MalformedResponse(f"error in a 200 answer: {data['error']}")
        try:
            choices = data.get("choices")
            if not choices:
                raise MalformedResponse("response has no choices")
            choice = choices[0]
            message = choice.get("message") or {}
            calls = [ToolCall.model_validate(call) for call in message.get("tool_calls") or ()]
            if message.get("function_call"):  # the answer to the deprecated `functions`
                calls.append(ToolCall(id=_FUNCTION_CALL_ID, function=message["function_call"]))
            return Completion(
                text=_text(message.get("content")),
                model=data.get("model") or model,
                finish_reason=choice.get("finish_reason"),
                usage=OpenAICompatProvider._usage(data.get("usage")),
                tool_calls=calls or None,
                logprobs=choice.get("logprobs"),
                response_id=_optional_text(data.get("id")),
                system_fingerprint=_optional_text(data.get("system_fingerprint")),
            )
        except _WRONG_SHAPE as exc:
            raise MalformedResponse(f"not a chat completion ({type(exc).__name__}: {exc})") from exc

    # --- hooks ----------------------------------------------------------------------

    async def _complete(self, request: ChatRequest, model: str) -> Completion:
        response = await self._post(self._prepared(self._encoded, request, model, False), stream=False)
        return self._from_response(_json_object(response.content), model)

    def _encoded(self, request: ChatRequest, model: str, stream: bool) -> bytes:
        """The upstream's request body, as the JSON bytes the SDK sends."""
        body = self._to_request(request, model)
        if stream:
            body["stream"] = True
            # The client's stream options, with usage always asked for: Conductor needs it (the
            # gateway relays the usage chunk only to a client that asked for it).
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        return _json_bytes(body)

    async def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        finish_reason, served_model, usage, answer_id, fingerprint = None, None, None, None, None
        logprobs: list[Any] = []
        response = await self._post(self._prepared(self._encoded, request, model, True), stream=True)
        async with aclosing(response):  # the upstream stream ends when the reader stops
            async for line in response.aiter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, event names
                payload = line[5:].strip()
                if payload == "[DONE]":
                    break
                data = _json_object(payload)
                if data.get("error"):
                    raise _stream_error(self.name, data["error"])
                try:
                    if served_model is None and data.get("model"):
                        served_model = data["model"]
                        answer_id = _optional_text(data.get("id"))
                        fingerprint = _optional_text(data.get("system_fingerprint"))
                        yield Served(served_model, answer_id, fingerprint)
                    if data.get("usage"):
                        usage = self._usage(data["usage"])
                    for choice in data.get("choices") or ():
                        delta = choice.get("delta") or {}
                        if delta.get("content"):
                            yield _text(delta["content"])
                        for call in delta.get("tool_calls") or ():
                            function = call.get("function") or {}
                            yield ToolCallDelta(
                                index=call.get("index", 0),
                                id=call.get("id"),
                                name=function.get("name"),
                                arguments=function.get("arguments") or "",
                            )
                        legacy = delta.get("function_call")  # the answer to the deprecated `functions`
                        if legacy:
                            yield ToolCallDelta(
                                index=0,
                                id=_FUNCTION_CALL_ID if legacy.get("name") else None,
                                name=legacy.get("name"),
                                arguments=legacy.get("arguments") or "",
                            )
                        if choice.get("logprobs") and choice["logprobs"].get("content"):
                            logprobs.extend(choice["logprobs"]["content"])
                        if choice.get("finish_reason"):
                            finish_reason = choice["finish_reason"]
                except _WRONG_SHAPE as exc:
                    raise MalformedResponse(f"not a chat completion chunk ({type(exc).__name__}: {exc})") from exc
        if finish_reason is None:
            raise MalformedResponse("stream ended without a finish reason")
        yield Completion(
            text="",
            model=served_model or model,
            finish_reason=finish_reason,
            usage=usage,
            logprobs={"content": logprobs} if logprobs else None,
            response_id=answer_id,
            system_fingerprint=fingerprint,
        )

    async def _post(self, body: bytes, *, stream: bool) -> httpx2.Response:
        """`client.post("/chat/completions", body=body, cast_to=httpx2.Response)`, the options
        copied. `body` is JSON already (the SDK sends bytes as they are)."""
        options = self._sdk.chat.model_copy(update={"json_data": body})
        return await self._clients.get().request(self._sdk.response, options, stream=stream)

    def _map_error(self, exc: Exception) -> ProviderError:
        return sdk_error(self.name, exc, self._sdk.openai, key_hint=self.key_env_var, timeout_s=self.timeout_s)

    async def ahealth_check(self) -> bool:
        try:
            await self._clients.get().with_options(timeout=min(self.timeout_s, 10.0)).models.list()
        except self._sdk.openai.NotFoundError:
            return self.mark_health(True)  # some compatible servers have no /models, but they answered
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            return self.mark_health(False, self._map_error(exc).message)
        return self.mark_health(True)

    async def _health(self) -> None:  # pragma: no cover - ahealth_check is overridden
        await self._clients.get().models.list()

    def models_endpoint(self) -> str:
        if self.spec is None and self._base_url:  # a configured endpoint: its own URL
            return f"GET {self._base_url.rstrip('/')}/models"
        return super().models_endpoint()

    def builtin_models(self) -> list[str]:
        """The configured models first, then whatever the server lists."""
        return list(self._configured_models)

    async def _list_models(self) -> list[str]:
        page = await self._clients.get().with_options(timeout=5.0).models.list()
        return sorted(m.id for m in page.data)

    async def aclose(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.close()


def _respell(params: dict[str, Any], request: ChatRequest) -> None:
    """Leave out Conductor's spelling of a setting the client spelled its own way (in
    extra_params, sent as it is): the token cap's other name; tools and tool_choice made from
    the deprecated functions and function_call (not tools the client sent beside them)."""
    extra = request.extra_params or {}
    if "max_tokens" in extra or "max_completion_tokens" in extra:
        params.pop("max_tokens", None)
        params.pop("max_completion_tokens", None)
    if "functions" in extra and request.tools == tools_from_functions(extra["functions"]):
        params.pop("tools", None)
    if "function_call" in extra and request.tool_choice == tool_choice_from_function_call(extra["function_call"]):
        params.pop("tool_choice", None)


def _message(m: ChatMessage) -> dict[str, Any]:
    out: dict[str, Any] = {"role": m.role.value, "content": m.content}
    if m.parts is not None:
        out["content"] = [_part(part) for part in m.parts]
    if m.tool_calls:
        out["tool_calls"] = [call.model_dump() for call in m.tool_calls]
        if not m.content:
            out["content"] = None  # what OpenAI itself sends for a message that only calls tools
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    if m.name is not None:
        out["name"] = m.name
    return out


def _part(part: ContentPart) -> dict[str, Any]:
    """One content part as OpenAI spells it (compatible servers take the same)."""
    if isinstance(part, ImagePart):
        image = {"url": part.url, **({"detail": part.detail} if part.detail else {})}
        return {"type": "image_url", "image_url": image}
    if isinstance(part, FilePart):
        # OpenAI wants a filename with file_data (its own 400 otherwise).
        return {"type": "file", "file": {"file_data": part.url, "filename": part.filename or "document.pdf"}}
    return {"type": "text", "text": part.text}


def _json_bytes(body: dict[str, Any]) -> bytes:
    """`body` as JSON: by orjson (~10x the SDK's json.dumps: a large conversation is encoded on
    the event loop), else as the SDK encodes it (integers past 64 bits, which a client may
    send in a parameter Conductor passes on; text that is not valid Unicode raises, as there)."""
    try:
        return orjson.dumps(body)
    except TypeError:  # orjson.JSONEncodeError included
        return json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _json_object(raw: bytes | str) -> dict[str, Any]:
    """A JSON object, or a malformed-answer error (orjson's JSONDecodeError, MalformedResponse)."""
    data = orjson.loads(raw)  # ~3x json.loads' speed, once per streamed chunk
    if not isinstance(data, dict):
        raise MalformedResponse(f"expected a JSON object, got {type(data).__name__}")
    return data


def _optional_text(value: Any) -> str | None:
    if value is not None and not isinstance(value, str):
        raise MalformedResponse(f"expected text or null, got {type(value).__name__}")
    return value


def _text(content: Any) -> str:
    """A message's content: text (or null, nothing)."""
    if content is None:
        return ""
    if not isinstance(content, str):
        raise MalformedResponse(f"message content is {type(content).__name__}, not text")
    return content


def _stream_error(provider: str, error: Any) -> ProviderError:
    """An error frame inside a 200 stream (OpenAI sends `data: {"error": {...}}`)."""
    if isinstance(error, dict):
        message = str(error.get("message") or error)
        status = error.get("code") if isinstance(error.get("code"), int) else None
        if status:
            return error_for_status(provider, status, message)
        return ProviderUnavailableError(f"{provider} sent an error in its stream ({message})", provider=provider)
    return ProviderUnavailableError(f"{provider} sent an error in its stream ({error})", provider=provider)
