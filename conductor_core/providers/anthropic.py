"""Anthropic on the official `anthropic` SDK's async client. System messages go to the
`system` parameter, tools and tool calls to Anthropic's tool_use / tool_result blocks, JSON
output to `output_config.format`. The SDK (2.x) has no sampling parameters on
`messages.create` (temperature, top_p, top_k...): only stop sequences. The SDK is imported
when a provider is built, not with this module (it takes seconds): see providers/spec.py."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

from .. import aio
from ..errors import MalformedResponse, NotConfiguredError, ProviderError, sdk_error
from ..models import (
    ChatMessage,
    ChatRequest,
    ContentPart,
    FilePart,
    FunctionCall,
    ImagePart,
    MessageRole,
    TextPart,
    ToolCall,
    ToolCallDelta,
    Usage,
    parse_data_url,
    response_schema,
)
from .base import BaseProvider, Completion, Served, StreamPiece
from .spec import Capabilities, CodeStyle, ModelSpec, ProviderSpec

if TYPE_CHECKING:
    from ..config import Settings

# Models as of 2026-12-07 (Anthropic's model deprecations page; the pinned SDK's table,
# anthropic/_data/deprecated_models.py, retires claude-sonnet-4-5 on 2026-11-30 and
# claude-opus-4-5 on 2027-01-22; claude-opus-4-1 retired on 2026-08-05, claude-3-5-haiku on
# 2026-02-19). All three below are active, with no retirement date announced.
SPEC = ProviderSpec(
    name="anthropic",
    display_name="Anthropic",
    module=__name__,
    class_name="AnthropicProvider",
    default_model="claude-haiku-5-5",
    models=(
        ModelSpec("claude-haiku-5-5", note="the cheapest ($0.10 / $0.50 per MTok); refuses an assistant prefill"),
        ModelSpec("claude-sonnet-5-5", note="refuses forced tool use (tool_choice required or a named tool)"),
        ModelSpec("claude-opus-5-5", note="refuses forced tool use (tool_choice required or a named tool)"),
    ),
    capabilities=Capabilities(
        sampling=frozenset({"stop"}),  # messages.create has stop_sequences and no other sampling setting
        tools=True,
        tool_choice=True,
        parallel_tool_calls=True,  # as tool_choice.disable_parallel_tool_use
        structured_output=frozenset({"json_object", "json_schema"}),  # both as output_config.format
        vision=True,
    ),
    key_env_vars=("ANTHROPIC_API_KEY",),
    base_url_env_vars=("ANTHROPIC_BASE_URL",),
    price_provider_id="anthropic",
    code=CodeStyle(package="anthropic", snippet="anthropic"),
)
_FINISH = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "refusal": "content_filter",
    "tool_use": "tool_calls",
}
#: Anthropic requires a cap; this one applies when the request sets none.
DEFAULT_MAX_TOKENS = 4096
#: What reading an answer of the wrong shape raises: the upstream's doing (MalformedResponse).
_WRONG_SHAPE = (KeyError, IndexError, TypeError, AttributeError)


class AnthropicProvider(BaseProvider):
    spec = SPEC

    def __init__(
        self,
        name: str = "anthropic",
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str | None = None,
        timeout_s: float = 60.0,
    ) -> None:
        import anthropic

        super().__init__(name, default_model=default_model, timeout_s=timeout_s)
        # max_retries=0: the router is the only retry loop. One client per event loop.
        self._clients = aio.PerLoop(
            lambda: anthropic.AsyncAnthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        )

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "anthropic") -> AnthropicProvider:
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
    def _to_request(request: ChatRequest, model: str) -> dict[str, Any]:
        system = "\n\n".join(m.content for m in request.messages if m.role == MessageRole.system)
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens or DEFAULT_MAX_TOKENS,
            "messages": _messages(request.messages),
        }
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
        if request.tools:
            params["tools"] = [
                {
                    "name": tool.function.name,
                    **({"description": tool.function.description} if tool.function.description else {}),
                    "input_schema": tool.function.parameters or {"type": "object", "properties": {}},
                }
                for tool in request.tools
            ]
        choice = _tool_choice(request)
        if choice is not None:
            params["tool_choice"] = choice
        if request.response_format is not None and request.response_format.type != "text":
            schema = response_schema(request.response_format) or {"type": "object"}
            params["output_config"] = {"format": {"type": "json_schema", "schema": schema}}
        if request.user:
            params["metadata"] = {"user_id": request.user}
        return params

    @staticmethod
    def _usage(usage: Any) -> Usage:
        cache_read = getattr(usage, "cache_read_input_tokens", None) or 0
        cache_write = getattr(usage, "cache_creation_input_tokens", None) or 0
        # Anthropic reports cache reads/writes apart from input_tokens; genai-prices wants the total.
        return Usage(
            input_tokens=(usage.input_tokens or 0) + cache_read + cache_write,
            output_tokens=usage.output_tokens or 0,
            cached_tokens=cache_read,
        )

    @staticmethod
    def _from_message(message: Any, model: str) -> Completion:
        """A Message as our Completion; MalformedResponse if it is not one."""
        try:
            text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
            calls = [
                ToolCall(id=block.id, function=FunctionCall(name=block.name, arguments=json.dumps(block.input)))
                for block in message.content
                if getattr(block, "type", None) == "tool_use"
            ]
            return Completion(
                text=text,
                model=message.model or model,
                finish_reason=_FINISH.get(message.stop_reason or "", message.stop_reason),
                usage=AnthropicProvider._usage(message.usage),
                tool_calls=calls or None,
                response_id=message.id,
            )
        except (*_WRONG_SHAPE, ValueError) as exc:
            raise MalformedResponse(f"not a message ({type(exc).__name__}: {exc})") from exc

    # --- hooks ----------------------------------------------------------------------

    async def _complete(self, request: ChatRequest, model: str) -> Completion:
        params = self._prepared(self._to_request, request, model)
        message = await self._clients.get().messages.create(**params)
        return self._from_message(message, model)

    async def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        served, stop_reason = model, None
        input_usage: Any = None
        output_tokens = 0
        tool_index: dict[int, int] = {}  # Anthropic's block index -> OpenAI's tool-call index
        params = self._prepared(self._to_request, request, model)
        stream = await self._clients.get().messages.create(**params, stream=True)
        async with stream:
            async for event in stream:
                try:
                    kind = event.type
                    if kind == "content_block_delta":
                        delta = event.delta
                        if delta.type == "text_delta":
                            yield delta.text
                        elif delta.type == "input_json_delta" and event.index in tool_index:
                            yield ToolCallDelta(index=tool_index[event.index], arguments=delta.partial_json)
                    elif kind == "content_block_start" and event.content_block.type == "tool_use":
                        block = event.content_block
                        tool_index[event.index] = len(tool_index)
                        yield ToolCallDelta(index=tool_index[event.index], id=block.id, name=block.name)
                    elif kind == "message_start":
                        served = event.message.model or model
                        input_usage = event.message.usage
                        yield Served(served, event.message.id)
                    elif kind == "message_delta":
                        stop_reason = event.delta.stop_reason or stop_reason
                        output_tokens = event.usage.output_tokens or output_tokens
                except _WRONG_SHAPE as exc:
                    raise MalformedResponse(f"not a message event ({type(exc).__name__}: {exc})") from exc
        if stop_reason is None:
            raise MalformedResponse("stream ended without a stop reason")
        usage = self._usage(input_usage) if input_usage is not None else Usage()
        yield Completion(
            text="",
            model=served,
            finish_reason=_FINISH.get(stop_reason, stop_reason),
            usage=usage.model_copy(update={"output_tokens": output_tokens}),
        )

    def _map_error(self, exc: Exception) -> ProviderError:
        import anthropic

        return sdk_error(self.name, exc, anthropic, key_hint=self.key_env_var, timeout_s=self.timeout_s)

    async def _health(self) -> None:
        await self._clients.get().with_options(timeout=min(self.timeout_s, 10.0)).models.list(limit=1)

    async def _list_models(self) -> list[str]:
        page = await self._clients.get().with_options(timeout=5.0).models.list(limit=100)
        return [m.id for m in page.data]

    async def aclose(self) -> None:
        client = self._clients.pop_current()
        if client is not None:
            await client.close()


def _messages(messages: list[ChatMessage]) -> list[dict[str, Any]]:
    """Our conversation in Anthropic's shape: tool calls as tool_use blocks, tool results as
    tool_result blocks in a user turn (several results in a row share one turn)."""
    out: list[dict[str, Any]] = []
    for m in messages:
        if m.role == MessageRole.system:
            continue
        if m.role == MessageRole.tool:
            block = {"type": "tool_result", "tool_use_id": m.tool_call_id, "content": m.content}
            last = out[-1] if out else None
            if last and last["role"] == "user" and isinstance(last["content"], list) and last.get("_results"):
                last["content"].append(block)
            else:
                out.append({"role": "user", "content": [block], "_results": True})
            continue
        if m.role == MessageRole.assistant and m.tool_calls:
            blocks: list[dict[str, Any]] = [{"type": "text", "text": m.content}] if m.content else []
            for call in m.tool_calls:
                blocks.append(
                    {"type": "tool_use", "id": call.id, "name": call.function.name, "input": _arguments(call)}
                )
            out.append({"role": "assistant", "content": blocks})
            continue
        if m.role == MessageRole.assistant and not m.content:
            continue  # an empty turn (OpenAI allows it): Anthropic refuses empty text
        if m.parts is not None:
            # Anthropic refuses an empty text block.
            blocks = [_block(part) for part in m.parts if not isinstance(part, TextPart) or part.text]
            out.append({"role": m.role.value, "content": blocks})
            continue
        out.append({"role": m.role.value, "content": m.content})
    for message in out:
        message.pop("_results", None)
    return out


def _block(part: ContentPart) -> dict[str, Any]:
    """One content part as an Anthropic block: images as image blocks, PDFs as document blocks,
    each from its data URL's bytes (base64 source) or from an https URL (url source)."""
    if isinstance(part, ImagePart | FilePart):
        parsed = parse_data_url(part.url)
        if parsed is None:
            source: dict[str, Any] = {"type": "url", "url": part.url}
        else:
            media_type, data = parsed
            source = {"type": "base64", "media_type": media_type, "data": base64.b64encode(data).decode("ascii")}
        if isinstance(part, ImagePart):
            return {"type": "image", "source": source}
        return {"type": "document", "source": source, **({"title": part.filename} if part.filename else {})}
    return {"type": "text", "text": part.text}


def _arguments(call: ToolCall) -> Any:
    try:
        return json.loads(call.function.arguments or "{}")
    except ValueError:
        return {"_raw": call.function.arguments}  # what the model wrote, even when it is not JSON


def _tool_choice(request: ChatRequest) -> dict[str, Any] | None:
    choice = request.tool_choice if request.tools else None
    out: dict[str, Any] | None
    if choice is None:
        out = None
    elif not isinstance(choice, str):
        out = {"type": "tool", "name": choice.function.name}
    else:
        out = {"type": {"auto": "auto", "required": "any", "none": "none"}[choice]}
    if request.parallel_tool_calls is False:
        out = {**(out or {"type": "auto"}), "disable_parallel_tool_use": True}
    return out
