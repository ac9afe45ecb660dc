"""Registry and factory: builds the providers that configuration enables.

SDKs are imported lazily (a user with no Anthropic key never imports `anthropic`), and a
provider that is not configured is kept as a sentence saying exactly what to set.
Knowledge of a provider stays in its own file: each class builds itself with
`from_settings`, and raises `NotConfiguredError` naming what is missing.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Iterable

from ..config import EndpointConfig, Settings
from ..errors import NotConfiguredError, ProviderError
from ..models import known_provider_names, register_provider_name
from .base import BaseProvider, Completion

__all__ = ["BaseProvider", "Completion", "ProviderRegistry", "build_registry", "build_provider", "BUILTIN_PROVIDERS"]

# name -> (module, class). Order is the order the UI lists them in.
BUILTIN_PROVIDERS: dict[str, tuple[str, str]] = {
    "local": ("conductor_core.providers.local", "LocalProvider"),
    "gemini": ("conductor_core.providers.gemini", "GeminiProvider"),
    "openai": ("conductor_core.providers.openai_compat", "OpenAICompatProvider"),
    "anthropic": ("conductor_core.providers.anthropic", "AnthropicProvider"),
}
# The key each cloud provider needs, checked before its SDK is imported: importing an SDK
# costs seconds, and a person with no Anthropic key should not wait for `import anthropic`.
_REQUIRED_KEYS: dict[str, tuple[str, str]] = {
    "gemini": ("gemini_api_key", "set GEMINI_API_KEY (or GOOGLE_API_KEY)"),
    "openai": ("openai_api_key", "set OPENAI_API_KEY"),
    "anthropic": ("anthropic_api_key", "set ANTHROPIC_API_KEY"),
}


def _provider_class(name: str) -> type[BaseProvider]:
    module, cls = BUILTIN_PROVIDERS[name]
    return getattr(importlib.import_module(module), cls)


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
        with self._lock:
            return list(dict.fromkeys([*BUILTIN_PROVIDERS, *self._providers, *self._unavailable]))


def build_registry(settings: Settings, extra: Iterable[BaseProvider] = ()) -> ProviderRegistry:
    """Every built-in provider that `settings` enables, every configured endpoint, plus `extra`
    (scripted fakes in tests, or providers a caller built itself)."""
    registry = ProviderRegistry()
    for name in BUILTIN_PROVIDERS:
        if name == "local" and not settings.local_enabled:
            registry.mark_unavailable(name, "set CONDUCTOR_LOCAL_ENABLED=true")
            continue
        field, hint = _REQUIRED_KEYS.get(name, (None, ""))
        if field and getattr(settings, field) is None:
            registry.mark_unavailable(name, hint)
            continue
        try:
            registry.add(_provider_class(name).from_settings(settings, name))
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
    """One built-in provider from `settings` (the playground builds session-only providers
    this way from a key a person typed). Raises `NotConfiguredError` naming what to set."""
    if name not in BUILTIN_PROVIDERS:
        raise ProviderError(
            f"unknown built-in provider {name!r}; built-ins: {', '.join(BUILTIN_PROVIDERS)}", provider=name
        )
    return _provider_class(name).from_settings(settings, name)
