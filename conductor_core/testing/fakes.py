"""A scripted provider that ships with the package, so tests (and demos) swap providers by
dependency injection instead of patching SDK internals (pydantic-ai's TestModel, llm's mock)."""

from __future__ import annotations

import asyncio
import threading
from collections import deque
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from ..errors import ProviderError, ProviderUnavailableError
from ..models import ChatRequest, Usage
from ..providers.base import BaseProvider, Completion, StreamPiece

__all__ = ["Reply", "ScriptedProvider"]


@dataclass
class Reply:
    """One scripted answer: text, or an error raised before any text, or a stream cut after
    `cut_after` chunks."""

    text: str = "Scripted answer."
    error: ProviderError | None = None
    cut_after: int | None = None
    latency_s: float = 0.0


class ScriptedProvider(BaseProvider):
    display_name = "Scripted"
    price_provider_id = None

    def __init__(
        self,
        name: str = "fake",
        *,
        reply: str = "Scripted answer.",
        latency_s: float = 0.0,
        models: list[str] | None = None,
        cost_per_token: float | None = 0.0,
        healthy: bool = True,
        supported_settings: frozenset[str] | None = None,
    ) -> None:
        models = models or [f"{name}-model"]
        super().__init__(name, default_model=models[0])
        self.reply = reply
        self.latency_s = latency_s
        self.models = models
        self.cost_per_token = cost_per_token
        self.healthy = healthy
        if supported_settings is not None:  # e.g. claim every OpenAI parameter (they are accepted, not acted on)
            self.supported_settings = supported_settings
        self.down = False
        self.calls: list[ChatRequest] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()

    def script(self, *replies: Reply | str | ProviderError) -> ScriptedProvider:
        with self._lock:
            for r in replies:
                if isinstance(r, str):
                    r = Reply(text=r)
                elif isinstance(r, ProviderError):
                    r = Reply(error=r)
                self._script.append(r)
        return self

    def _next(self, request: ChatRequest) -> Reply:
        with self._lock:
            self.calls.append(request)
            if self.down:
                return Reply(
                    error=ProviderUnavailableError(f"{self.name} is down", provider=self.name, status_code=503)
                )
            return self._script.popleft() if self._script else Reply(text=self.reply, latency_s=self.latency_s)

    @staticmethod
    def _usage(request: ChatRequest, text: str) -> Usage:
        words = sum(len(m.content.split()) for m in request.messages)
        return Usage(input_tokens=max(1, words), output_tokens=max(1, len(text.split())))

    async def _complete(self, request: ChatRequest, model: str) -> Completion:
        reply = self._next(request)
        await asyncio.sleep(reply.latency_s)
        if reply.error:
            raise reply.error
        return Completion(text=reply.text, model=model, finish_reason="stop", usage=self._usage(request, reply.text))

    async def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        reply = self._next(request)
        await asyncio.sleep(reply.latency_s)
        if reply.error:
            raise reply.error
        words = reply.text.split(" ")
        for i, word in enumerate(words):
            if reply.cut_after is not None and i >= reply.cut_after:
                raise ProviderUnavailableError(f"{self.name} stream cut", provider=self.name)
            yield word if i == 0 else " " + word
        yield Completion(text=reply.text, model=model, finish_reason="stop", usage=self._usage(request, reply.text))

    def _map_error(self, exc: Exception) -> ProviderError:
        return ProviderError(f"{self.name} failed: {exc}", provider=self.name)

    def estimate_cost(self, tokens: Usage, model: str) -> float | None:
        if self.cost_per_token is None:
            return None
        return (tokens.input_tokens + tokens.output_tokens) * self.cost_per_token

    async def ahealth_check(self) -> bool:
        return self.mark_health(self.healthy and not self.down, None if self.healthy else f"{self.name} is unhealthy")

    async def _health(self) -> None:  # pragma: no cover - ahealth_check answers from the script
        return None

    def builtin_models(self) -> list[str]:
        return list(self.models)
