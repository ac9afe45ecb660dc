"""Registry and factory: builds the providers that configuration enables.

What Conductor knows about each provider is its spec (providers/spec.py), defined next to its
class in its own module. A provider whose key is missing is kept as a sentence saying exactly
what to set, before its module's SDK is imported (importing an SDK costs seconds: a person with
no Anthropic key never waits for `import anthropic`). Each class builds itself with
`from_settings`, and raises `NotConfiguredError` naming what is missing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from typing import TYPE_CHECKING

from ..errors import NotConfiguredError, ProviderError
from ..models import known_provider_names, register_provider_name
from .base import BaseProvider, Completion
from .spec import ProviderSpec, get_spec, provider_specs

if TYPE_CHECKING:
    from ..config import EndpointConfig, Settings

__all__ = [
    "BaseProvider",
    "Completion",
    "ProviderRegistry",
    "ProviderSpec",
    "build_registry",
    "build_provider",
    "provider_specs",
    "get_spec",
]


class ProviderRegistry:
    """The providers one Conductor uses. Thread-safe: sessions may add endpoints while others read."""

    def __init__(self) -> None:
        self._providers: dict[str, BaseProvider] = {}
        self._unavailable: dict[str, str] = {}
        self._lock = threading.Lock()

    def add(self, provider: BaseProvider) -> BaseProvider:
        register_provider_name(provider.name)
        with self._lock:
            self._providers[provider.name] = provider
            self._unavailable.pop(provider.name, None)
        return provider

    def mark_unavailable(self, name: str, what_to_set: str) -> None:
        register_provider_name(name)
        with self._lock:
            if name not in self._providers:
                self._unavailable[name] = what_to_set

    def add_endpoint(self, name: str, endpoint: EndpointConfig, settings: Settings) -> BaseProvider:
        from .openai_compat import OpenAICompatProvider

        return self.add(OpenAICompatProvider.from_endpoint(name, endpoint, settings))

    def get(self, name: str) -> BaseProvider:
        with self._lock:
            provider = self._providers.get(name)
            hint = self._unavailable.get(name)
        if provider is not None:
            return provider
        if hint is not None:
            raise NotConfiguredError(f"{name} is not configured: {hint}", provider=name)
        raise ProviderError(
            f"unknown provider {name!r}; available: {', '.join(known_provider_names())}", provider=name, status_code=400
        )

    def __contains__(self, name: str) -> bool:
        with self._lock:
            return name in self._providers

    @property
    def providers(self) -> dict[str, BaseProvider]:
        with self._lock:
            return dict(self._providers)

    @property
    def unavailable(self) -> dict[str, str]:
        """Providers that are known but not configured, with what to set."""
        with self._lock:
            return dict(self._unavailable)

    def names(self) -> list[str]:
        """Every known provider, configured or not, in display order."""
        specs = provider_specs()
        with self._lock:
            return list(dict.fromkeys([*specs, *self._providers, *self._unavailable]))


def build_registry(settings: Settings, extra: Iterable[BaseProvider] = ()) -> ProviderRegistry:
    """Every provider with a spec that `settings` enables, every configured endpoint, plus
    `extra` (scripted fakes in tests, or providers a caller built itself)."""
    registry = ProviderRegistry()
    for name, spec in provider_specs().items():
        if spec.needs_key and settings.provider_key(name) is None:
            registry.mark_unavailable(name, spec.key_hint)
            continue
        try:
            registry.add(spec.provider_class().from_settings(settings, name))
        except NotConfiguredError as missing:
            registry.mark_unavailable(name, missing.message)
    for name, endpoint in settings.endpoints.items():
        try:
            registry.add_endpoint(name, endpoint, settings)
        except NotConfiguredError as missing:
            registry.mark_unavailable(name, missing.message)
    for provider in extra:
        registry.add(provider)
    return registry


def build_provider(name: str, settings: Settings) -> BaseProvider:
    """One provider with a spec, from `settings` (the playground builds session-only providers
    this way from a key a person typed). Raises `NotConfiguredError` naming what to set."""
    spec = get_spec(name)
    if spec is None:
        raise ProviderError(
            f"unknown built-in provider {name!r}; built-ins: {', '.join(provider_specs())}", provider=name
        )
    return spec.provider_class().from_settings(settings, name)
