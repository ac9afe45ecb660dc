"""OpenAI, and any OpenAI-compatible server (Ollama, vLLM, llama.cpp server, LM Studio, Groq,
OpenRouter...), on the official `openai` SDK. A named endpoint is configuration, not code."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import openai

from ..config import EndpointConfig, Settings
from ..errors import NotConfiguredError, ProviderError, sdk_error
from ..models import ChatRequest, Usage
from .base import BaseProvider, Completion, StreamPiece

OPENAI_MODELS = ["gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "gpt-4.1", "gpt-4.1-nano"]


class OpenAICompatProvider(BaseProvider):
    display_name = "OpenAI"
    key_env_var = "OPENAI_API_KEY"
    price_provider_id = "openai"

    def __init__(
        self,
        name: str,
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str = "gpt-4o-mini",
        models: list[str] | None = None,
        timeout_s: float = 60.0,
        display_name: str | None = None,
        key_env_var: str | None = None,
        price_provider_id: str | None = "openai",
        official: bool = True,
    ) -> None:
        super().__init__(name, default_model=default_model, timeout_s=timeout_s)
        # max_retries=0: the router is the only retry loop.
        self._client = openai.OpenAI(api_key=api_key, base_url=base_url, max_retries=0, timeout=timeout_s)
        self._configured_models = models or [default_model]
        self.display_name = display_name or ("OpenAI" if official else name)
        self.key_env_var = key_env_var
        self.price_provider_id = price_provider_id
        # The official API renamed max_tokens; compatible servers still expect the old name.
        self._max_tokens_param = "max_completion_tokens" if official else "max_tokens"

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "openai") -> "OpenAICompatProvider":
        if settings.openai_api_key is None:
            raise NotConfiguredError("set OPENAI_API_KEY", provider=name)
        return cls(
            name,
            api_key=settings.openai_api_key.get_secret_value(),
            base_url=settings.openai_base_url,
            models=OPENAI_MODELS,
            timeout_s=settings.timeout_s,
            key_env_var="OPENAI_API_KEY",
        )

    @classmethod
    def from_endpoint(cls, name: str, endpoint: EndpointConfig, settings: Settings) -> "OpenAICompatProvider":
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
        )

    # --- converters (pure) --------------------------------------------------------

    def _to_request(self, request: ChatRequest, model: str) -> dict[str, Any]:
        params: dict[str, Any] = {
            "model": model,
            "messages": [{"role": m.role.value, "content": m.content} for m in request.messages],
            "temperature": request.temperature,
            self._max_tokens_param: request.max_tokens,
        }
        if request.top_p is not None:
            params["top_p"] = request.top_p
        if request.stop:
            params["stop"] = list(request.stop)
        if request.seed is not None:
            params["seed"] = request.seed
        return params

    @staticmethod
    def _usage(usage: Any) -> Usage | None:
        if usage is None:
            return None
        details = getattr(usage, "prompt_tokens_details", None)
        return Usage(
            input_tokens=usage.prompt_tokens or 0,
            output_tokens=usage.completion_tokens or 0,
            cached_tokens=(getattr(details, "cached_tokens", None) or 0) if details else 0,
        )

    # --- hooks ----------------------------------------------------------------------

    def _complete(self, request: ChatRequest, model: str) -> Completion:
        result = self._client.chat.completions.create(**self._to_request(request, model))
        if not result.choices:
            raise ValueError("response has no choices")
        choice = result.choices[0]
        return Completion(
            text=choice.message.content or "",
            model=result.model or model,
            finish_reason=choice.finish_reason,
            usage=self._usage(result.usage),
        )

    def _stream(self, request: ChatRequest, model: str) -> Iterator[StreamPiece]:
        stream = self._client.chat.completions.create(
            **self._to_request(request, model), stream=True, stream_options={"include_usage": True}
        )
        finish_reason, served_model, usage = None, model, None
        with stream:
            for chunk in stream:
                served_model = chunk.model or served_model
                if chunk.usage is not None:
                    usage = self._usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.delta and choice.delta.content:
                        yield choice.delta.content
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        if finish_reason is None:
            raise ValueError("stream ended without a finish reason")
        yield Completion(text="", model=served_model, finish_reason=finish_reason, usage=usage)

    def _map_error(self, exc: Exception) -> ProviderError:
        return sdk_error(self.name, exc, openai, key_hint=self.key_env_var, timeout_s=self.timeout_s)

    def health_check(self) -> bool:
        try:
            self._client.with_options(timeout=min(self.timeout_s, 10.0)).models.list()
        except openai.NotFoundError:
            return self.mark_health(True)  # some compatible servers have no /models, but they answered
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            return self.mark_health(False, self._map_error(exc).message)
        return self.mark_health(True)

    def get_available_models(self) -> list[str]:
        """The configured models first, then whatever the server lists."""

        def fetch() -> list[str]:
            return sorted(m.id for m in self._client.with_options(timeout=5.0).models.list())

        return self._cached_models(fetch, self._configured_models)
