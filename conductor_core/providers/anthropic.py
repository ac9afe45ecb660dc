"""Anthropic on the official `anthropic` SDK. System messages go to the `system` parameter."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anthropic

from ..config import Settings
from ..errors import NotConfiguredError, ProviderError, sdk_error
from ..models import ChatRequest, MessageRole, Usage
from .base import BaseProvider, Completion, StreamPiece

ANTHROPIC_MODELS = ["claude-sonnet-4-5", "claude-haiku-4-5", "claude-opus-4-1", "claude-3-5-haiku-latest"]
_FINISH = {"end_turn": "stop", "stop_sequence": "stop", "max_tokens": "length", "refusal": "content_filter"}


class AnthropicProvider(BaseProvider):
    display_name = "Anthropic"
    key_env_var = "ANTHROPIC_API_KEY"
    price_provider_id = "anthropic"
    # The anthropic SDK (2.x) has no sampling parameters on messages.create: only stop sequences.
    supported_settings = frozenset({"stop"})

    def __init__(
        self,
        name: str = "anthropic",
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str = "claude-haiku-4-5",
        timeout_s: float = 60.0,
    ) -> None:
        super().__init__(name, default_model=default_model, timeout_s=timeout_s)
        # max_retries=0: the router is the only retry loop.
        self._client = anthropic.Anthropic(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "anthropic") -> "AnthropicProvider":
        if settings.anthropic_api_key is None:
            raise NotConfiguredError("set ANTHROPIC_API_KEY", provider=name)
        return cls(
            name,
            api_key=settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            timeout_s=settings.timeout_s,
        )

    # --- converters (pure) --------------------------------------------------------

    @staticmethod
    def _to_request(request: ChatRequest, model: str) -> dict[str, Any]:
        # No temperature: the anthropic SDK (2.x) no longer has sampling parameters on
        # messages.create, so the request's temperature does not apply to Anthropic.
        system = "\n\n".join(m.content for m in request.messages if m.role == MessageRole.system)
        params: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": [
                {"role": m.role.value, "content": m.content} for m in request.messages if m.role != MessageRole.system
            ],
        }
        if system:
            params["system"] = system
        if request.stop:
            params["stop_sequences"] = list(request.stop)
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
    def _text(message: Any) -> str:
        return "".join(block.text for block in message.content if getattr(block, "type", None) == "text")

    # --- hooks ----------------------------------------------------------------------

    def _complete(self, request: ChatRequest, model: str) -> Completion:
        message = self._client.messages.create(**self._to_request(request, model))
        return Completion(
            text=self._text(message),
            model=message.model or model,
            finish_reason=_FINISH.get(message.stop_reason or "", message.stop_reason),
            usage=self._usage(message.usage),
        )

    def _stream(self, request: ChatRequest, model: str) -> Iterator[StreamPiece]:
        with self._client.messages.stream(**self._to_request(request, model)) as stream:
            yield from stream.text_stream
            message = stream.get_final_message()
        if message.stop_reason is None:
            raise ValueError("stream ended without a stop reason")
        yield Completion(
            text=self._text(message),
            model=message.model or model,
            finish_reason=_FINISH.get(message.stop_reason, message.stop_reason),
            usage=self._usage(message.usage),
        )

    def _map_error(self, exc: Exception) -> ProviderError:
        return sdk_error(self.name, exc, anthropic, key_hint="ANTHROPIC_API_KEY", timeout_s=self.timeout_s)

    def health_check(self) -> bool:
        try:
            self._client.with_options(timeout=min(self.timeout_s, 10.0)).models.list(limit=1)
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            return self.mark_health(False, self._map_error(exc).message)
        return self.mark_health(True)

    def get_available_models(self) -> list[str]:
        def fetch() -> list[str]:
            return [m.id for m in self._client.with_options(timeout=5.0).models.list(limit=100)]

        return self._cached_models(fetch, ANTHROPIC_MODELS)
