"""The FastAPI app. `create_app(conductor)` builds one around a Conductor (or its async core);
the module-level `app` (for ``uvicorn gateway.main:app``) builds its core at startup, with
source="gateway", from the same settings as the playground, so both write to one request
log and gateway traffic shows on the dashboard.

Every route awaits the async core on uvicorn's event loop: waiting on a provider costs no
thread, so a hung upstream holds only its own bulkhead's slots, and `/health`, `/status`
and `/v1/models` answer while it hangs."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter
from starlette.middleware.cors import CORSMiddleware

from conductor_core import __version__
from conductor_core.models import ChatRequest, known_provider_names
from conductor_core.router import Conductor
from conductor_core.routing import AsyncConductor

from . import native_api, openai_api
from .errors import install_error_handlers
from .middleware import BearerKeyMiddleware, BodyLimitMiddleware, RedactingFilter, RequestIdMiddleware
from .schemas import ChatCompletionChunk
from .settings import GatewaySettings

__all__ = ["app", "create_app"]

log = logging.getLogger("gateway")

DESCRIPTION = """\
Conductor's gateway: one OpenAI-compatible API over Gemini, OpenAI, Anthropic, any
OpenAI-compatible server (Ollama, vLLM, Groq...) and an embedded local model.

* Point any OpenAI client at `http://HOST:PORT/v1` and set `model` to `auto` (Conductor
  chooses, retries and falls back), a provider name such as `local`, or `provider/model`
  such as `gemini/gemini-2.5-flash`. `GET /v1/models` lists them.
* Conductor's figures (provider, latency, cost, why AUTO chose it) travel in `x-conductor-*`
  headers and in an extra `conductor` field that OpenAI clients ignore.
* Every error has one body: OpenAI's `error` object plus Conductor's fields (`type`,
  `provider`, `retryable`, `retry_after`...). 429 and 503 carry `Retry-After` when known.
* When `CONDUCTOR_API_KEY` is set, every endpoint but `/health` needs
  `Authorization: Bearer <key>`. Without one the gateway serves loopback only (unless
  `CONDUCTOR_GATEWAY_ALLOW_UNAUTHENTICATED=true`).
* Every response carries `x-request-id` (yours, when you send a valid one). 503s from a
  paused or full provider carry `Retry-After` and `x-should-retry: true`.
* Browsers: set `CONDUCTOR_CORS_ORIGINS` to allow cross-origin calls.
"""

TAGS = [
    {"name": "OpenAI-compatible", "description": "Drop-in for OpenAI's Chat Completions and Models APIs."},
    {"name": "Conductor", "description": "Conductor's native request and response, with full analytics."},
    {"name": "Status", "description": "Health, performance and usage per provider."},
]

_LOGGERS = ("gateway", "uvicorn", "uvicorn.error", "uvicorn.access")


def _install_log_redaction() -> None:
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactingFilter) for f in logger.filters):
            logger.addFilter(RedactingFilter())


def create_app(
    conductor: Conductor | AsyncConductor | None = None, *, settings: GatewaySettings | None = None
) -> FastAPI:
    """The gateway around `conductor`; without one, a core is built at startup (lifespan) from
    the environment with source="gateway" and closed at shutdown."""
    gateway_settings = settings or GatewaySettings()
    _install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned = app.state.core is None
        if owned:
            # Reading the log's recent history is synchronous: off the loop, once.
            # Conductor wires the core to the arena's ratings (the `preferred` policy); the gateway awaits the core.
            app.state.core = await asyncio.to_thread(lambda: Conductor(source="gateway").core)
            log.info("Conductor ready: providers %s", ", ".join(app.state.core.registry.providers) or "none")
        try:
            yield
        finally:
            if owned and app.state.core is not None:
                await app.state.core.aclose()
                app.state.core = None
            elif app.state.core is not None:
                for provider in app.state.core.registry.providers.values():
                    await provider.aclose()  # this loop's clients; the core itself is the caller's

    app = FastAPI(
        title="Conductor gateway",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.core = conductor.core if isinstance(conductor, Conductor) else conductor
    app.state.gateway_settings = gateway_settings
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(native_api.router)
    app.include_router(native_api.health_router)

    def current_key() -> Any:
        current = app.state.core
        return current.settings.api_key if current is not None else None

    # Added last = outermost. The request id first (every response has one), then CORS (a
    # browser's preflight needs no key), then the key, then the body limit (both before
    # the body is read).
    app.add_middleware(BodyLimitMiddleware, max_bytes=gateway_settings.max_body_bytes)
    app.add_middleware(
        BearerKeyMiddleware, get_key=current_key, allow_unauthenticated=gateway_settings.allow_unauthenticated
    )
    origins = gateway_settings.cors_origin_list()
    if origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=origins,
            allow_methods=["GET", "POST", "HEAD", "OPTIONS"],
            allow_headers=["authorization", "content-type", "x-request-id"],
            expose_headers=EXPOSED_HEADERS,
            max_age=600,
        )
    app.add_middleware(RequestIdMiddleware)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


#: Headers a browser page may read from a cross-origin answer.
EXPOSED_HEADERS = [
    "x-request-id",
    "x-should-retry",
    "retry-after",
    "x-conductor-provider",
    "x-conductor-model",
    "x-conductor-route",
    "x-conductor-route-reason",
    "x-conductor-latency-ms",
    "x-conductor-ttft-ms",
    "x-conductor-cost-usd",
    "x-conductor-attempts",
]


def _openapi(app: FastAPI) -> dict[str, Any]:
    """FastAPI's document, with its 422 responses removed: validation errors are 400s in the
    `GatewayError` shape (what OpenAI clients expect), which every operation documents."""
    schema = get_openapi(
        title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
    )
    for path in schema.get("paths", {}).values():
        for operation in path.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    # Shapes the document refers to but FastAPI does not see: the streamed chunk, and the
    # native chat request (parsed by hand, strictly).
    for model in (ChatCompletionChunk, ChatRequest):
        definition = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}")
        for name, nested in definition.pop("$defs", {}).items():
            components.setdefault(name, nested)
        components[model.__name__] = definition
    # The provider names this gateway knows (built-ins and configured endpoints), as an enum.
    provider = components["ChatRequest"]["properties"]["provider"]
    provider.pop("type", None)
    provider["enum"] = known_provider_names()
    provider["type"] = "string"
    return schema


app = create_app()
