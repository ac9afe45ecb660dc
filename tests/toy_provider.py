"""A provider added the way a built-in one is: this one file, its class and its SPEC (README,
"Adding a provider"). tests/test_adding_a_provider.py registers it and finds it everywhere.

Toy answers by echoing the last user message back in upper case, word by word, so the test
needs no server; everything else about it is what a real provider file has."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING

from conductor_core.errors import NotConfiguredError, ProviderError
from conductor_core.models import ChatRequest, MessageRole, Usage
from conductor_core.providers.base import BaseProvider, Completion, StreamPiece
from conductor_core.providers.spec import Capabilities, ModelSpec, ProviderSpec

if TYPE_CHECKING:
    from conductor_core.config import Settings

SPEC = ProviderSpec(
    name="toy",
    display_name="Toy Echo",
    module=__name__,
    class_name="ToyProvider",
    default_model="toy-small",
    models=(ModelSpec("toy-small"), ModelSpec("toy-large")),
    capabilities=Capabilities(sampling=frozenset({"temperature", "stop"})),  # no tools, no JSON mode
    key_env_vars=("TOY_API_KEY",),
    base_url_env_vars=("TOY_BASE_URL",),
)


class ToyProvider(BaseProvider):
    spec = SPEC

    def __init__(self, name: str = "toy", *, api_key: str, timeout_s: float = 60.0) -> None:
        super().__init__(name, timeout_s=timeout_s)
        self._api_key = api_key  # a real provider hands it to its SDK client

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "toy") -> ToyProvider:
        key = settings.provider_key(SPEC.name)
        if key is None:
            raise NotConfiguredError(SPEC.key_hint, provider=name)
        return cls(name, api_key=key.get_secret_value(), timeout_s=settings.timeout_s)

    @staticmethod
    def _words(request: ChatRequest) -> list[str]:
        last = next(m.content for m in reversed(request.messages) if m.role == MessageRole.user)
        return [f"{word} " for word in last.upper().split()]

    async def _complete(self, request: ChatRequest, model: str) -> Completion:
        words = self._words(request)
        return Completion(text="".join(words), model=model, finish_reason="stop", usage=Usage(output_tokens=len(words)))

    async def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        words = self._words(request)
        for word in words:
            yield word
        yield Completion(text="", model=model, finish_reason="stop", usage=Usage(output_tokens=len(words)))

    def _map_error(self, exc: Exception) -> ProviderError:
        return ProviderError(f"{self.name} failed: {exc}", provider=self.name)

    async def _health(self) -> None:
        return None
