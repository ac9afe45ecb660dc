"""The gateway's own settings (where to listen, how much to accept). Everything about
providers, keys, routing and the request log comes from `conductor_core.config.Settings`,
shared with the playground, so both processes see the same configuration."""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["GatewaySettings"]


class GatewaySettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CONDUCTOR_GATEWAY_", env_file=".env", extra="ignore")

    host: str = Field(default="127.0.0.1", description="Interface to listen on; 0.0.0.0 in a container.")
    port: int = Field(default=8000, ge=0, le=65535)
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    max_messages: int = Field(
        default=2048,
        ge=1,
        description="Most messages in one chat request (400 above): bounds the work one request can cost.",
    )
    workers: int = Field(
        default=1,
        ge=1,
        description="Worker processes. One process is bound by one core (the GIL); on 2 cores, 2 workers served "
        "+68% requests/s (BENCHMARKS.md). They share the request log (SQLite WAL or PostgreSQL).",
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = "info"
    allow_unauthenticated: bool = Field(
        default=False,
        description="Serve on a non-loopback address without CONDUCTOR_API_KEY (a trusted network only). Off: the "
        "gateway refuses to start there without a key.",
    )
    cors_origins: str = Field(
        default="",
        validation_alias=AliasChoices("CONDUCTOR_CORS_ORIGINS", "cors_origins"),
        description="Comma-separated origins browsers may call the gateway from ('*' for any); empty: CORS off.",
    )

    def cors_origin_list(self) -> list[str]:
        return [origin.strip() for origin in self.cors_origins.split(",") if origin.strip()]
