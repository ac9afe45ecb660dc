"""Settings from the environment, a `.env` file and an optional `conductor.toml`.

Keys are `SecretStr`: their repr and model dumps show `**********`. Every key that is
loaded is also registered with `redact()` (`conductor_core.secrets`, re-exported here),
which every exit applies to any text that came from outside, so a key, or any piece of
one, that an SDK echoes back in an error message never reaches a user, a log line or the disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

if TYPE_CHECKING:
    from .providers.spec import ProviderSpec

from .secrets import REDACTED, redact, register_secret

__all__ = ["REDACTED", "EndpointConfig", "Settings", "load_settings", "redact", "register_secret"]

# --- settings --------------------------------------------------------------------


class EndpointConfig(BaseModel):
    """A named OpenAI-compatible endpoint (Ollama, vLLM, LM Studio, Groq, OpenRouter...)."""

    base_url: str = Field(description="Base URL including /v1, e.g. http://localhost:11434/v1")
    api_key_env: str | None = Field(default=None, description="Environment variable holding its key, if it needs one.")
    api_key: SecretStr | None = Field(default=None, description="A key given directly (playground session only).")
    models: list[str] = Field(default_factory=list, description="Models to offer when the server cannot list them.")
    default_model: str | None = None
    display_name: str | None = None
    price_provider: str | None = Field(default=None, description="genai-prices provider id for cost, e.g. 'groq'.")
    vision: bool = Field(
        default=True,
        description="Whether its models read images and PDFs (sent as OpenAI's content parts); false for a text-only "
        "server, which the playground then greys out for a message with attachments.",
    )

    def resolved_key(self) -> SecretStr | None:
        if self.api_key is not None:
            return self.api_key
        if self.api_key_env and os.environ.get(self.api_key_env):
            return SecretStr(os.environ[self.api_key_env])
        return None


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        # env_ignore_empty: `OPENAI_API_KEY=` (empty) must mean "not configured", not an empty key.
        env_prefix="CONDUCTOR_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        env_ignore_empty=True,
    )

    # Providers' keys and base URLs, by provider name, from the variables each provider's spec
    # names (providers/spec.py), which are the SDKs' own: GEMINI_API_KEY or GOOGLE_API_KEY,
    # GOOGLE_GEMINI_BASE_URL, OPENAI_API_KEY... in the environment, .env or conductor.toml.
    # Read them with `provider_key(name)` and `provider_base_url(name)`; the names `gemini_api_key`,
    # `openai_base_url`... still work as arguments, attributes and conductor.toml keys.
    provider_keys: dict[str, SecretStr] = Field(default_factory=dict, description="API keys by provider name.")
    provider_base_urls: dict[str, str] = Field(default_factory=dict, description="Base URLs by provider name.")

    # The embedded model.
    local_enabled: bool = True
    local_model_path: str | None = Field(default=None, description="Any GGUF file; default: the bundled Gemma 3 270M.")
    local_threads: int = Field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))
    local_context: int = 2048

    endpoints: dict[str, EndpointConfig] = Field(default_factory=dict)

    timeout_s: float = Field(default=60.0, gt=0, description="Per-call timeout handed to every SDK.")
    default_provider: str = "auto"

    # Routing (the router reads these).
    routing_policy: str = "balanced"
    preferred_min_votes: int = Field(
        default=10, ge=1, description="Blind votes a target needs before the `preferred` policy ranks it by rating."
    )
    evaluated_margin: float = Field(
        default=0.02,
        ge=0,
        le=1,
        description="The `evaluated` policy picks among the targets whose pass rate on the prompt is within this of "
        "the best (0.02: 2 points).",
    )
    evaluated_prefer: Literal["cheapest", "fastest"] = Field(
        default="cheapest", description="Which of those the `evaluated` policy picks first."
    )
    evaluated_min_rows: int = Field(
        default=20,
        ge=1,
        description="Rows a target's latest run of the prompt must have checked before `evaluated` ranks it by its "
        "pass rate (fewer: `balanced`).",
    )
    first_try_timeout_s: float = Field(
        default=5.0,
        ge=0,
        description="AUTO gives a provider with no recent success this long for its first token, while other "
        "providers remain to fall back to (a hanging endpoint then costs seconds, not the whole timeout). 0: off.",
    )
    max_retries: int = Field(default=2, ge=0, le=10)
    retry_budget_s: float = Field(default=30.0, gt=0)
    breaker_failures: int = Field(default=5, ge=1, description="Consecutive failures that open a breaker.")
    breaker_failure_rate: float = Field(default=0.5, gt=0, le=1)
    breaker_window: int = Field(default=20, ge=2, description="Recent calls the failure rate is computed over.")
    breaker_cooldown_s: float = Field(default=10.0, gt=0)
    breaker_max_cooldown_s: float = Field(default=300.0, gt=0)
    # Bulkheads: one provider that hangs cannot take every connection and every slot.
    bulkhead_limit: int = Field(default=256, ge=1, description="Concurrent calls to one provider (the local model: 1).")
    bulkhead_queue: int = Field(
        default=256, ge=0, description="Calls that may wait for a slot; past that a call fails at once (busy, 503)."
    )

    # Request log.
    database_url: str | None = None
    data_dir: Path = Field(default_factory=lambda: Path.home() / ".local" / "share" / "conductor")
    log_prompts: bool = Field(default=True, description="Store prompts and answers in the request log.")

    # Experiments (conductor_core.workbench): refused above this many rows, before any call.
    dataset_max_rows: int = Field(default=1000, ge=1, description="Most rows an experiment's dataset may have.")
    experiment_concurrency: dict[str, int] = Field(
        default_factory=lambda: {"*": 4, "local": 1},
        description="Calls at once per provider in an experiment run ('*': every other provider). "
        "The embedded model answers one request at a time, so more would only queue.",
    )
    experiment_runner: Literal["in_process", "jobs"] = Field(
        default="in_process",
        description="Where experiment runs execute: in the process that starts them, or as jobs in the "
        "PostgreSQL database for `python -m conductor_core.worker` (jobs needs a PostgreSQL database_url).",
    )
    experiment_judge_concurrency: int = Field(
        default=2,
        ge=1,
        description="Judge calls at once in an experiment run (rubric checks), beside the answers' own limits; "
        "for runs queued for workers, at once in each worker process.",
    )

    # Shared routing state (conductor_core.state): several replicas share breakers and AUTO's metrics.
    redis_url: str | None = Field(
        default=None,
        description="Redis or Valkey URL (redis://host:6379/0). Unset: each process keeps its own routing state.",
    )
    redis_prefix: str = Field(default="conductor:", description="Prefix of every key Conductor writes in Redis.")

    # Gateway.
    api_key: SecretStr | None = Field(default=None, description="When set, the gateway requires this bearer key.")

    config_file: Path | None = Field(default=None, exclude=True)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = Path(os.environ.get("CONDUCTOR_CONFIG", "conductor.toml"))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=toml_path if toml_path.is_file() else None)
        providers = _ProviderVariables(settings_cls, init_settings, env_settings, dotenv_settings, toml)
        # Explicit arguments win, then the environment, then .env, then conductor.toml.
        return init_settings, env_settings, dotenv_settings, toml, providers

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        for key in (*self.provider_keys.values(), self.api_key):
            register_secret(key)
        for endpoint in self.endpoints.values():
            register_secret(endpoint.resolved_key())
        if self.redis_url:
            register_secret(urlsplit(self.redis_url).password)  # the URL itself is shown with it hidden
        return self

    def provider_key(self, provider: str) -> SecretStr | None:
        """A provider's key (None: not set)."""
        return self.provider_keys.get(provider)

    def provider_base_url(self, provider: str) -> str | None:
        """A provider's base URL (None: its SDK's default)."""
        return self.provider_base_urls.get(provider)

    def with_api_key(self, provider: str, key: str | SecretStr) -> Settings:
        """A copy with `provider`'s key set (the playground: a key typed for one session)."""
        secret = key if isinstance(key, SecretStr) else SecretStr(key)
        register_secret(secret)
        return self.model_copy(update={"provider_keys": {**self.provider_keys, provider: secret}})

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Settings:
        names = _provider_settings()
        if update and any(name in names for name in update):  # model_copy(update={"openai_api_key": ...})
            keys, urls = dict(self.provider_keys), dict(self.provider_base_urls)
            for setting, value in update.items():
                if setting in names:
                    provider, kind = names[setting]
                    _set(keys if kind == "key" else urls, provider, value, secret=kind == "key")
            update = {
                **{k: v for k, v in update.items() if k not in names},
                "provider_keys": keys,
                "provider_base_urls": urls,
            }
        return super().model_copy(update=update, deep=deep)

    if not TYPE_CHECKING:

        def __getattr__(self, name: str) -> Any:
            # settings.gemini_api_key, settings.openai_base_url: the names from before specs.
            found = _provider_settings().get(name)
            if found is not None:
                provider, kind = found
                return self.provider_key(provider) if kind == "key" else self.provider_base_url(provider)
            return super().__getattr__(name)


class _ProviderVariables(PydanticBaseSettingsSource):
    """Each provider's key and base URL, from the variables its spec names. An argument by one
    of those names wins (`Settings(gemini_api_key=...)`; None or "" means not set), then the
    environment, then .env, then conductor.toml (where the spec's setting name works too,
    `gemini_api_key = "..."`). Read from what pydantic-settings' own sources loaded, so case,
    empty values and the choice of `.env` file behave as for every other setting."""

    def __init__(
        self,
        settings_cls: type[BaseSettings],
        init: PydanticBaseSettingsSource,
        env: PydanticBaseSettingsSource,
        dotenv: PydanticBaseSettingsSource,
        toml: TomlConfigSettingsSource,
    ) -> None:
        super().__init__(settings_cls)
        self._arguments: dict[str, Any] = getattr(init, "init_kwargs", {})
        self._layers = [source for source in (env, dotenv) if isinstance(source, EnvSettingsSource)]
        self._toml = toml.toml_data

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover - unused
        return None, field_name, False

    def _value(self, variables: Iterable[str], setting: str | None) -> Any:
        names = (*([setting] if setting else []), *variables)
        for name in names:
            if name in self._arguments:
                return self._arguments[name]
        for layer in self._layers:
            for variable in variables:
                value = layer.env_vars.get(variable if layer.case_sensitive else variable.lower())
                if value:
                    return value
        for name in names:
            if self._toml.get(name):
                return self._toml[name]
        return None

    def __call__(self) -> dict[str, Any]:
        from .providers.spec import provider_specs

        keys: dict[str, Any] = {}
        urls: dict[str, Any] = {}
        for name, spec in provider_specs().items():
            _set(keys, name, self._value(spec.key_env_vars, spec.key_setting), secret=True)
            _set(urls, name, self._value(spec.base_url_env_vars, spec.base_url_setting), secret=False)
        return {"provider_keys": keys, "provider_base_urls": urls}


def _set(found: dict[str, Any], provider: str, value: Any, *, secret: bool) -> None:
    """`found[provider] = value`, or no entry for None or ""; a key as a registered SecretStr."""
    if value is None or value == "":
        found.pop(provider, None)
    elif secret:
        found[provider] = key = value if isinstance(value, SecretStr) else SecretStr(str(value))
        register_secret(key)  # model_copy does not run _register_secrets
    else:
        found[provider] = str(value)


_provider_settings_cache: tuple[int, dict[str, tuple[str, str]]] | None = None


def _provider_settings() -> dict[str, tuple[str, str]]:
    """Every name a provider's key or base URL goes by (its spec's setting name and variables):
    name -> (provider, "key" | "base_url")."""
    global _provider_settings_cache
    from .providers.spec import provider_specs, specs_version

    cached = _provider_settings_cache
    if cached is None or cached[0] != specs_version():
        names: dict[str, tuple[str, str]] = {}
        for provider, spec in provider_specs().items():
            names.update(_names_of(spec, provider))
        cached = _provider_settings_cache = (specs_version(), names)
    return cached[1]


def _names_of(spec: ProviderSpec, provider: str) -> dict[str, tuple[str, str]]:
    names = {variable: (provider, "key") for variable in spec.key_env_vars}
    names.update({variable: (provider, "base_url") for variable in spec.base_url_env_vars})
    if spec.key_setting:
        names[spec.key_setting] = (provider, "key")
    if spec.base_url_setting:
        names[spec.base_url_setting] = (provider, "base_url")
    return names


def load_settings(**overrides: Any) -> Settings:
    """Settings as the environment gives them; keyword arguments override (tests use `_env_file=None`)."""
    return Settings(**overrides)
