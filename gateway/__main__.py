"""``python -m gateway``: serve the gateway with uvicorn on CONDUCTOR_GATEWAY_HOST and
CONDUCTOR_GATEWAY_PORT (default 127.0.0.1:8000), in CONDUCTOR_GATEWAY_WORKERS processes
(default 1), on uvloop and httptools when installed (uvicorn picks them).

It refuses to listen on a non-loopback address without a CONDUCTOR_API_KEY of at least 32
characters, unless CONDUCTOR_GATEWAY_ALLOW_UNAUTHENTICATED=true says that is meant."""

from __future__ import annotations

import copy
from typing import Any

import uvicorn
from uvicorn.config import LOGGING_CONFIG

from .middleware import exposure_error
from .settings import GatewaySettings


def _key() -> str | None:
    from conductor_core.config import load_settings

    key = load_settings().api_key
    return key.get_secret_value() if key is not None else None


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging, plus the gateway's and the core's loggers on the same handlers, with
    every line passed through `redact()` at the handler (so no logger can bypass it)."""
    config = copy.deepcopy(LOGGING_CONFIG)
    config.setdefault("filters", {})["redact"] = {"()": "gateway.middleware.RedactingFilter"}
    for handler in config["handlers"].values():
        handler.setdefault("filters", []).append("redact")
    for name in ("gateway", "conductor"):
        config["loggers"][name] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config


def main() -> None:
    settings = GatewaySettings()
    refusal = exposure_error(settings.host, _key(), settings.allow_unauthenticated)
    if refusal is not None:
        raise SystemExit(f"Conductor gateway: {refusal}.")
    uvicorn.run(
        "gateway.main:app",
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        log_config=log_config(settings.log_level),
        # Access lines are logged at INFO: above it uvicorn would still build each line's
        # arguments (the client's address, the quoted path) for nothing.
        access_log=settings.log_level in ("info", "debug"),
        # Long streams and many clients: keep-alive a little longer than proxies' defaults.
        timeout_keep_alive=30,
        backlog=4096,
        workers=settings.workers,
    )


if __name__ == "__main__":
    main()
