"""The FastAPI app. `create_app(conductor)` builds one around a Conductor; the module-level
`app` (for ``uvicorn gateway.main:app``) builds its Conductor at startup, with
source="gateway", from the same settings as the playground, so both write to one request
log and gateway traffic shows on the dashboard."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from typing import Any

import anyio.to_thread
from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter
from starlette.concurrency import run_in_threadpool

from conductor_core import __version__
from conductor_core.models import ChatRequest, known_provider_names
from conductor_core.router import Conductor

from . import native_api, openai_api
from .errors import install_error_handlers
from .middleware import BearerKeyMiddleware, BodyLimitMiddleware, RedactingFilter
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
  `Authorization: Bearer <key>`.
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


def create_app(conductor: Conductor | None = None, *, settings: GatewaySettings | None = None) -> FastAPI:
    """The gateway around `conductor`; without one, a Conductor is built at startup
    (lifespan) from the environment with source="gateway" and closed at shutdown."""
    gateway_settings = settings or GatewaySettings()
    _install_log_redaction()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        # Each open stream holds a worker thread while it waits for its next token; anyio's
        # default of 40 would queue the 41st concurrent request.
        limiter = anyio.to_thread.current_default_thread_limiter()
        limiter.total_tokens = max(limiter.total_tokens, gateway_settings.threads)
        app.state.stream_executor = _stream_executor(gateway_settings)
        owned = app.state.conductor is None
        if owned:
            app.state.conductor = await run_in_threadpool(lambda: Conductor(source="gateway"))
            log.info("Conductor ready: providers %s", ", ".join(app.state.conductor.registry.providers) or "none")
        try:
            yield
        finally:
            app.state.stream_executor.shutdown(wait=False, cancel_futures=True)
            if owned and app.state.conductor is not None:
                await run_in_threadpool(app.state.conductor.close)
                app.state.conductor = None

    app = FastAPI(
        title="Conductor gateway",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.conductor = conductor
    app.state.gateway_settings = gateway_settings
    app.state.stream_executor = _stream_executor(gateway_settings)  # replaced at each startup
    install_error_handlers(app)
    app.include_router(openai_api.router)
    app.include_router(native_api.router)
    app.include_router(native_api.health_router)

    def current_key() -> Any:
        current = app.state.conductor
        return current.settings.api_key if current is not None else None

    # Added last = outermost: the key is checked before the body is read.
    app.add_middleware(BodyLimitMiddleware, max_bytes=gateway_settings.max_body_bytes)
    app.add_middleware(BearerKeyMiddleware, get_key=current_key)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _stream_executor(settings: GatewaySettings) -> ThreadPoolExecutor:
    """One worker per open stream, for the stream's life (see `gateway.core.ThreadedStream`)."""
    return ThreadPoolExecutor(max_workers=settings.threads, thread_name_prefix="gateway-stream")


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
