"""Gemini on `google-genai`, Google's maintained SDK (`google-generativeai` reached end of
life on 2025-11-30), through its async client (`client.aio`). Tools become function
declarations, tool calls and results `function_call` / `function_response` parts, JSON
output `response_mime_type` (and `response_json_schema`). The SDK is imported when a provider
is built or a request converted, not with this module: see providers/spec.py."""

from __future__ import annotations

import json
import mimetypes
from collections.abc import AsyncGenerator
from contextlib import aclosing
from datetime import date
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .. import aio
from ..errors import (
    MalformedResponse,
    NotConfiguredError,
    ProviderError,
    ProviderUnavailableError,
    classify,
    error_for_status,
    parse_retry_after,
    transport_error,
)
from ..models import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    FunctionCall,
    MessageRole,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    new_id,
    parse_data_url,
    response_schema,
)
from .base import BaseProvider, Completion, Served, StreamPiece
from .spec import SAMPLING_SETTINGS, Capabilities, CodeStyle, ModelSpec, ProviderSpec

if TYPE_CHECKING:
    from google.genai import types

    from ..config import Settings

# Models as of 2026-12-07 (Google's Gemini deprecations page): gemini-2.5-flash and
# gemini-2.5-pro shut down on 2026-12-01 (their named replacements: gemini-3.5-flash-lite and
# gemini-3.8-flash), gemini-2.0-flash on 2026-06-01.
SPEC = ProviderSpec(
    name="gemini",
    display_name="Google Gemini",
    module=__name__,
    class_name="GeminiProvider",
    default_model="gemini-3.5-flash-lite",
    models=(
        ModelSpec("gemini-3.5-flash-lite", note="no shutdown date announced"),
        ModelSpec("gemini-3.8-flash", note="no shutdown date announced"),
        ModelSpec("gemini-3.1-flash-lite", retires=date(2027, 5, 7), note="the cheapest ($0.25 / $1.50 per MTok)"),
    ),
    capabilities=Capabilities(
        sampling=frozenset(SAMPLING_SETTINGS),
        tools=True,
        tool_choice=True,  # as function_calling_config (parallel calls cannot be turned off)
        structured_output=frozenset({"json_object", "json_schema"}),  # response_mime_type / response_json_schema
        vision=True,
    ),
    key_env_vars=("GEMINI_API_KEY", "GOOGLE_API_KEY"),
    base_url_env_vars=("GOOGLE_GEMINI_BASE_URL",),
    price_provider_id="google",
    code=CodeStyle(package="google-genai", snippet="gemini"),
)
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}
_MODES = {"auto": "AUTO", "required": "ANY", "none": "NONE"}
#: What reading an answer of the wrong shape raises: the upstream's doing (MalformedResponse).
_WRONG_SHAPE = (KeyError, IndexError, TypeError, AttributeError)


class GeminiProvider(BaseProvider):
    spec = SPEC

    def __init__(
        self,
        name: str = "gemini",
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        from google import genai
        from google.genai import types

        super().__init__(name, default_model=default_model, timeout_s=timeout_s)
        # No retry_options: the SDK then makes one attempt, and the router owns retries.
        # One client per event loop (its connection pool belongs to the loop it was made on).
        self._clients = aio.PerLoop(
            lambda: (
                genai.Client(
                    api_key=api_key, http_options=types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000))
                ).aio
            )
        )

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "gemini") -> GeminiProvider:
        key = settings.provider_key(SPEC.name)
        if key is None:
            raise NotConfiguredError(SPEC.key_hint, provider=name)
        return cls(
            name,
            api_key=key.get_secret_value(),
            base_url=settings.provider_base_url(SPEC.name),
            timeout_s=settings.timeout_s,
        )

    # --- converters (pure) --------------------------------------------------------

    @staticmethod
    def _to_request(request: ChatRequest) -> tuple[list[types.Content], types.GenerateContentConfig]:
        from google.genai import types

        system = "\n\n".join(m.content for m in request.messages if m.role == MessageRole.system)
        fields: dict[str, Any] = {
            "system_instruction": system or None,
            "temperature": request.temperature,
            "max_output_tokens": request.max_tokens,
            "top_p": request.top_p,
            "stop_sequences": list(request.stop) if request.stop else None,
            "seed": request.seed,
            "presence_penalty": request.presence_penalty,
            "frequency_penalty": request.frequency_penalty,
        }
        response_format = request.response_format
        if response_format is not None and response_format.type != "text":
            fields["response_mime_type"] = "application/json"
            fields["response_json_schema"] = response_schema(response_format)
        if request.tools:
            fields["tools"] = [
                types.Tool(
                    function_declarations=[
                        types.FunctionDeclaration(
                            name=tool.function.name,
                            description=tool.function.description,
                            parameters_json_schema=tool.function.parameters,
                        )
                        for tool in request.tools
                    ]
                )
            ]
            # Declarations only, never Python callables: the SDK must not run anything itself.
            fields["automatic_function_calling"] = types.AutomaticFunctionCallingConfig(disable=True)
        choice = request.tool_choice if request.tools else None
        if choice is not None:
            if not isinstance(choice, str):
                calling = types.FunctionCallingConfig(
                    mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[choice.function.name]
                )
            else:
                calling = types.FunctionCallingConfig(mode=types.FunctionCallingConfigMode(_MODES[choice]))
            fields["tool_config"] = types.ToolConfig(function_calling_config=calling)
        return _contents(request.messages), types.GenerateContentConfig(**fields)

    @staticmethod
    def _usage(meta: Any) -> Usage | None:
        if meta is None:
            return None
        return Usage(
            input_tokens=meta.prompt_token_count or 0,
            output_tokens=(meta.candidates_token_count or 0) + (meta.thoughts_token_count or 0),
            cached_tokens=meta.cached_content_token_count or 0,
        )

    @staticmethod
    def _finish(response: Any) -> str | None:
        if not response.candidates or response.candidates[0].finish_reason is None:
            return None
        reason = response.candidates[0].finish_reason
        reason = getattr(reason, "value", reason)
        return _FINISH.get(str(reason), str(reason).lower())

    @staticmethod
    def _calls(response: Any) -> list[ToolCall]:
        if not response.candidates or response.candidates[0].content is None:
            return []
        return [
            ToolCall(
                id=part.function_call.id or new_id("call"),
                function=FunctionCall(
                    name=part.function_call.name or "unknown", arguments=json.dumps(part.function_call.args or {})
                ),
            )
            for part in response.candidates[0].content.parts or ()
            if part.function_call is not None
        ]

    @staticmethod
    def _text(response: Any) -> str:
        if not response.candidates or response.candidates[0].content is None:
            return ""
        return "".join(
            part.text for part in response.candidates[0].content.parts or () if part.text and not part.thought
        )

    # --- hooks ----------------------------------------------------------------------

    async def _complete(self, request: ChatRequest, model: str) -> Completion:
        contents, config = self._prepared(self._to_request, request)
        response = await self._clients.get().models.generate_content(model=model, contents=contents, config=config)
        try:
            calls = self._calls(response)
            return Completion(
                text=self._text(response),
                model=response.model_version or model,
                finish_reason="tool_calls" if calls else self._finish(response),
                usage=self._usage(response.usage_metadata),
                tool_calls=calls or None,
                response_id=response.response_id,
            )
        except _WRONG_SHAPE as exc:
            raise MalformedResponse(f"not a GenerateContentResponse ({type(exc).__name__}: {exc})") from exc

    async def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        contents, config = self._prepared(self._to_request, request)
        served, finish, usage, called = None, None, None, 0
        chunks = await self._clients.get().models.generate_content_stream(model=model, contents=contents, config=config)
        # The SDK annotates an AsyncIterator; what it returns is an async generator, which has aclose().
        async with aclosing(chunks):  # type: ignore[type-var]
            async for chunk in chunks:
                try:
                    if served is None and chunk.model_version:
                        served = chunk.model_version
                        yield Served(served, chunk.response_id)
                    text = self._text(chunk)
                    if text:
                        yield text
                    for call in self._calls(chunk):  # Gemini sends each call whole
                        yield ToolCallDelta(
                            index=called, id=call.id, name=call.function.name, arguments=call.function.arguments
                        )
                        called += 1
                    finish = self._finish(chunk) or finish
                    usage = self._usage(chunk.usage_metadata) or usage
                except _WRONG_SHAPE as exc:
                    raise MalformedResponse(f"not a GenerateContentResponse ({type(exc).__name__}: {exc})") from exc
        if finish is None:
            raise MalformedResponse("stream ended without a finish reason")
        yield Completion(text="", model=served or model, finish_reason="tool_calls" if called else finish, usage=usage)

    def _map_error(self, exc: Exception) -> ProviderError:
        from google.genai import errors as genai_errors

        if isinstance(exc, genai_errors.APIError):
            headers = getattr(exc.response, "headers", None)
            return error_for_status(
                self.name,
                exc.code,
                exc.message or exc.status or "error",
                retry_after=parse_retry_after(headers),
                key_hint=self.key_env_var,
                code=exc.status or None,  # Google's own code, e.g. INVALID_ARGUMENT
            )
        if isinstance(exc, genai_errors.UnknownApiResponseError):  # the SDK could not read the answer
            return ProviderUnavailableError(f"{self.name} sent a malformed response ({exc})", provider=self.name)
        return transport_error(self.name, exc) or classify(self.name, exc)

    async def _health(self) -> None:
        pager = await self._clients.get().models.list(config={"page_size": 1})
        async for _ in pager:
            break

    async def _list_models(self) -> list[str]:
        pager = await self._clients.get().models.list()
        return sorted(
            [
                m.name.removeprefix("models/")
                async for m in pager
                if m.name and "generateContent" in (m.supported_actions or ["generateContent"])
            ]
        )


def _contents(messages: list[ChatMessage]) -> list[types.Content]:
    """Our conversation in Gemini's shape: the assistant is "model", tool calls are
    function_call parts, tool results function_response parts (named after their call)."""
    from google.genai import types

    names = {call.id: call.function.name for m in messages for call in m.tool_calls or ()}
    out: list[types.Content] = []
    for m in messages:
        if m.role == MessageRole.system:
            continue
        if m.role == MessageRole.tool:
            part = types.Part(
                function_response=types.FunctionResponse(
                    id=m.tool_call_id, name=names.get(m.tool_call_id or "", "unknown"), response=_result(m.content)
                )
            )
            if out and out[-1].role == "user" and out[-1].parts and out[-1].parts[0].function_response is not None:
                out[-1].parts.append(part)
            else:
                out.append(types.Content(role="user", parts=[part]))
            continue
        if m.parts is not None:  # text, images and files in order; Gemini refuses an empty text part
            parts = [_part(part) for part in m.parts if not isinstance(part, TextPart) or part.text]
        else:
            parts = [types.Part(text=m.content)] if m.content else []
        for call in m.tool_calls or ():
            parts.append(
                types.Part(function_call=types.FunctionCall(id=call.id, name=call.function.name, args=_args(call)))
            )
        if parts:
            out.append(types.Content(role="model" if m.role == MessageRole.assistant else "user", parts=parts))
    return out


def _part(part: ContentPart) -> types.Part:
    """A text, image or file part: a data URL's bytes as inline data; an https URL as file data,
    which the Gemini API fetches itself (public and signed URLs, since early 2026; Google's
    "Increased file size limits and expanded inputs support in Gemini API")."""
    from google.genai import types

    if isinstance(part, TextPart):
        return types.Part(text=part.text)
    parsed = parse_data_url(part.url)
    if parsed is None:
        media_type = mimetypes.guess_type(urlsplit(part.url).path)[0]  # None when the URL does not say: the API decides
        return types.Part(file_data=types.FileData(file_uri=part.url, mime_type=media_type))
    media_type, data = parsed
    return types.Part(inline_data=types.Blob(data=data, mime_type=media_type))


def _args(call: ToolCall) -> dict[str, Any]:
    try:
        value = json.loads(call.function.arguments or "{}")
    except ValueError:
        return {"_raw": call.function.arguments}
    return value if isinstance(value, dict) else {"value": value}


def _result(content: str) -> dict[str, Any]:
    try:
        value = json.loads(content)
    except ValueError:
        return {"result": content}
    return value if isinstance(value, dict) else {"result": value}
