"""Gemini on `google-genai`, Google's maintained SDK (`google-generativeai` reached end of
life on 2025-11-30)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from google import genai
from google.genai import errors as genai_errors
from google.genai import types

from ..config import Settings
from ..errors import NotConfiguredError, ProviderError, error_for_status, parse_retry_after, transport_error
from ..models import ChatRequest, MessageRole, Usage
from .base import BaseProvider, Completion, StreamPiece

GEMINI_MODELS = ["gemini-2.5-flash", "gemini-2.5-flash-lite", "gemini-2.5-pro", "gemini-2.0-flash"]
_FINISH = {"STOP": "stop", "MAX_TOKENS": "length", "SAFETY": "content_filter"}


class GeminiProvider(BaseProvider):
    display_name = "Google Gemini"
    key_env_var = "GEMINI_API_KEY"
    price_provider_id = "google"

    def __init__(
        self,
        name: str = "gemini",
        *,
        api_key: str,
        base_url: str | None = None,
        default_model: str = "gemini-2.5-flash",
        timeout_s: float = 60.0,
    ) -> None:
        super().__init__(name, default_model=default_model, timeout_s=timeout_s)
        # No retry_options: the SDK then makes one attempt, and the router owns retries.
        self._client = genai.Client(
            api_key=api_key,
            http_options=types.HttpOptions(base_url=base_url, timeout=int(timeout_s * 1000)),
        )

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "gemini") -> "GeminiProvider":
        if settings.gemini_api_key is None:
            raise NotConfiguredError("set GEMINI_API_KEY (or GOOGLE_API_KEY)", provider=name)
        return cls(
            name,
            api_key=settings.gemini_api_key.get_secret_value(),
            base_url=settings.gemini_base_url,
            timeout_s=settings.timeout_s,
        )

    # --- converters (pure) --------------------------------------------------------

    @staticmethod
    def _to_request(request: ChatRequest) -> tuple[list[types.Content], types.GenerateContentConfig]:
        system = "\n\n".join(m.content for m in request.messages if m.role == MessageRole.system)
        contents = [
            types.Content(role="model" if m.role == MessageRole.assistant else "user", parts=[types.Part(text=m.content)])
            for m in request.messages
            if m.role != MessageRole.system
        ]
        config = types.GenerateContentConfig(
            system_instruction=system or None,
            temperature=request.temperature,
            max_output_tokens=request.max_tokens,
            top_p=request.top_p,
            stop_sequences=list(request.stop) if request.stop else None,
            seed=request.seed,
        )
        return contents, config

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

    # --- hooks ----------------------------------------------------------------------

    def _complete(self, request: ChatRequest, model: str) -> Completion:
        contents, config = self._to_request(request)
        response = self._client.models.generate_content(model=model, contents=contents, config=config)
        return Completion(
            text=response.text or "",
            model=response.model_version or model,
            finish_reason=self._finish(response),
            usage=self._usage(response.usage_metadata),
        )

    def _stream(self, request: ChatRequest, model: str) -> Iterator[StreamPiece]:
        contents, config = self._to_request(request)
        served, finish, usage = model, None, None
        for chunk in self._client.models.generate_content_stream(model=model, contents=contents, config=config):
            if chunk.text:
                yield chunk.text
            served = chunk.model_version or served
            finish = self._finish(chunk) or finish
            usage = self._usage(chunk.usage_metadata) or usage
        if finish is None:
            raise ValueError("stream ended without a finish reason")
        yield Completion(text="", model=served, finish_reason=finish, usage=usage)

    def _map_error(self, exc: Exception) -> ProviderError:
        if isinstance(exc, genai_errors.APIError):
            headers = getattr(exc.response, "headers", None)
            return error_for_status(
                self.name,
                exc.code,
                exc.message or exc.status or "error",
                retry_after=parse_retry_after(headers),
                key_hint="GEMINI_API_KEY",
            )
        return transport_error(self.name, exc) or ProviderError(f"{self.name} failed: {exc}", provider=self.name)

    def health_check(self) -> bool:
        try:
            next(iter(self._client.models.list(config={"page_size": 1})), None)
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            return self.mark_health(False, self._map_error(exc).message)
        return self.mark_health(True)

    def get_available_models(self) -> list[str]:
        def fetch() -> list[str]:
            return sorted(
                m.name.removeprefix("models/")
                for m in self._client.models.list()
                if m.name and "generateContent" in (m.supported_actions or ["generateContent"])
            )

        return self._cached_models(fetch, GEMINI_MODELS)
