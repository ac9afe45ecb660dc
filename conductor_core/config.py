"""Settings from the environment, a `.env` file and an optional `conductor.toml`.

Keys are `SecretStr`: their repr and model dumps show `**********`. Every key that is
loaded is also registered with `redact()` (`conductor_core.secrets`, re-exported here),
which every exit applies to any text that came from outside, so a key, or any piece of
one, that an SDK echoes back in an error message never reaches a user, a log line or the disk.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import AliasChoices, BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

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

    # Cloud providers: the SDKs' own variable names.
    gemini_api_key: SecretStr | None = Field(
        default=None, validation_alias=AliasChoices("GEMINI_API_KEY", "GOOGLE_API_KEY")
    )
    gemini_base_url: str | None = Field(default=None, validation_alias=AliasChoices("GOOGLE_GEMINI_BASE_URL"))
    openai_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("OPENAI_API_KEY"))
    openai_base_url: str | None = Field(default=None, validation_alias=AliasChoices("OPENAI_BASE_URL"))
    anthropic_api_key: SecretStr | None = Field(default=None, validation_alias=AliasChoices("ANTHROPIC_API_KEY"))
    anthropic_base_url: str | None = Field(default=None, validation_alias=AliasChoices("ANTHROPIC_BASE_URL"))

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
        # Explicit arguments win, then the environment, then .env, then conductor.toml.
        return init_settings, env_settings, dotenv_settings, toml

    @model_validator(mode="after")
    def _register_secrets(self) -> Settings:
        for key in (self.gemini_api_key, self.openai_api_key, self.anthropic_api_key, self.api_key):
            register_secret(key)
        for endpoint in self.endpoints.values():
            register_secret(endpoint.resolved_key())
        return self


def load_settings(**overrides: Any) -> Settings:
    """Settings as the environment gives them; keyword arguments override (tests use `_env_file=None`)."""
    return Settings(**overrides)
