"""The FastAPI app. `create_app(conductor)` builds one around a Conductor (or its async core);
the module-level `app` (for ``uvicorn gateway.main:app``) builds its core at startup, with
source="gateway", from the same settings as the playground, so both write to one request
log and gateway traffic shows on the dashboard.

Every route awaits the async core on uvicorn's event loop: waiting on a provider costs no
thread, so a hung upstream holds only its own bulkhead's slots, and `/health`, `/status`
and `/v1/models` answer while it hangs."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from typing import Any, Literal

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.routing import APIRoute
from pydantic import TypeAdapter
from starlette.types import Receive, Scope, Send

from conductor_core import __version__
from conductor_core.models import ChatRequest, known_provider_names
from conductor_core.router import Conductor
from conductor_core.routing import AsyncConductor

from . import keys, keys_api, native_api, openai_api
from .errors import install_error_handlers
from .middleware import OVERHEAD_HEADER, FrontDoor, RedactingFilter
from .schemas import ChatCompletionChunk, ChatCompletionRequest
from .settings import GatewaySettings

__all__ = ["GatewayApp", "app", "create_app"]

log = logging.getLogger("gateway")

DESCRIPTION = """\
Conductor's gateway: one OpenAI-compatible API over Gemini, OpenAI, Anthropic, any
OpenAI-compatible server (Ollama, vLLM, Groq...) and an embedded local model.

* Point any OpenAI client at `http://HOST:PORT/v1` and set `model` to `auto` (Conductor
  chooses, retries and falls back), a provider name such as `local`, or `provider/model`
  such as `gemini/gemini-3.5-flash-lite`. `GET /v1/models` lists them.
* Every Chat Completions parameter you send arrives: those Conductor models are checked and
  translated for each provider; the others (`reasoning_effort`, `service_tier`, `store`,
  `metadata`, any newer one) are sent as they are to OpenAI and OpenAI-compatible upstreams,
  and another provider answers 400 naming them. The answer keeps the upstream's `id` and
  `system_fingerprint`; Conductor's own id is in `x-request-id`.
* Conductor's figures (provider, latency, cost, why AUTO chose it) travel in `x-conductor-*`
  headers and in an extra `conductor` field that OpenAI clients ignore.
* Every error has one body: OpenAI's `error` object plus Conductor's fields (`type`,
  `provider`, `retryable`, `retry_after`...). 429 and 503 carry `Retry-After` when known. A
  provider's own error code (e.g. `context_length_exceeded`) is kept in `error.code`.
* A chat request holds at most `CONDUCTOR_GATEWAY_MAX_MESSAGES` messages (2048 by default)
  and `CONDUCTOR_GATEWAY_MAX_BODY_BYTES` bytes (1 MiB): 400 and 413 above.
* When `CONDUCTOR_API_KEY` is set, every endpoint but `/health` needs
  `Authorization: Bearer <key>` (without it, `/health` says only up or down). Without a key
  the gateway serves loopback only (unless `CONDUCTOR_GATEWAY_ALLOW_UNAUTHENTICATED=true`);
  on another address the key must have at least 32 characters.
* Gateway keys (`POST /v1/conductor/keys`, admin key only) each carry allowed models, rpm and tpm
  limits and a budget per day or month, counted across gateway processes (through Redis when
  `CONDUCTOR_REDIS_URL` is set). Over a rate limit: 429 with `Retry-After`, naming the limit;
  budget spent: 429 with `code: insufficient_quota`, naming when it resets; a model the key
  may not use: 403 naming those it may; a revoked key: 401.
* Every response carries `x-request-id` (yours, when you send a valid one). 503s from a
  paused or full provider carry `Retry-After` and `x-should-retry: true`. HEAD works on every
  GET route.
* Browsers: set `CONDUCTOR_CORS_ORIGINS` to allow cross-origin calls (any request header
  from an allowed origin, as the official SDKs send their own).
"""

TAGS = [
    {"name": "OpenAI-compatible", "description": "Drop-in for OpenAI's Chat Completions and Models APIs."},
    {"name": "Conductor", "description": "Conductor's native request and response, with full analytics."},
    {"name": "Status", "description": "Health, performance and usage per provider."},
    {
        "name": "Keys",
        "description": "Gateway keys with allowed models, rate limits and budgets (admin key only).",
    },
]

# "conductor": the core logs a bug met while calling a provider there, with its traceback.
_LOGGERS = ("gateway", "conductor", "uvicorn", "uvicorn.error", "uvicorn.access")


def _install_log_redaction() -> None:
    """The filter on the gateway's and uvicorn's loggers, and on every handler already set up
    (uvicorn's, the root's, the last-resort one): a handler's filter also sees the records of
    loggers that only propagate to it, such as the core's `conductor.*`. `python -m gateway`
    puts it on its handlers itself (`log_config`)."""
    handlers = {logging.lastResort, *logging.getLogger().handlers}
    for name in _LOGGERS:
        logger = logging.getLogger(name)
        handlers.update(logger.handlers)
        _add_filter(logger)
    for handler in handlers:
        if handler is not None:
            _add_filter(handler)


def _add_filter(target: logging.Filterer) -> None:
    if not any(isinstance(f, RedactingFilter) for f in target.filters):
        target.addFilter(RedactingFilter())


class GatewayApp(FastAPI):
    """FastAPI, entered through the gateway's `FrontDoor` (request id, overhead clock, CORS, key,
    body limit, and the hot routes that answer in plain ASGI) for every HTTP request."""

    front: FrontDoor

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)


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
            settle_heap()
        try:
            yield
        finally:
            gate = getattr(app.state, "key_gate", None)
            if gate is not None:
                app.state.key_gate = None
                await gate.aclose()
            if owned and app.state.core is not None:
                await app.state.core.aclose()
                app.state.core = None
            elif app.state.core is not None:
                for provider in app.state.core.registry.providers.values():
                    await provider.aclose()  # this loop's clients; the core itself is the caller's

    app = GatewayApp(
        title="Conductor gateway",
        version=__version__,
        description=DESCRIPTION,
        openapi_tags=TAGS,
        lifespan=lifespan,
    )
    app.state.core = conductor.core if isinstance(conductor, Conductor) else conductor
    app.state.gateway_settings = gateway_settings
    install_error_handlers(app)
    app.state.routes = []  # every route, for a 405's Allow header (errors.py)
    for router in (openai_api.router, native_api.router, native_api.health_router, keys_api.router):
        for route in router.routes:  # HEAD on every GET route: the same answer without its body
            if isinstance(route, APIRoute) and route.methods and "GET" in route.methods:
                route.methods.add("HEAD")
        app.state.routes += router.routes
        app.include_router(router)

    def current_key() -> Any:
        current = app.state.core
        return current.settings.api_key if current is not None else None

    origins = gateway_settings.cors_origin_list()
    cors = (
        {
            "allow_origins": origins,
            "allow_methods": ["GET", "POST", "HEAD", "OPTIONS"],
            # Any header an allowed origin asks for (reflected): the official SDKs send their own
            # (openai-node: x-stainless-*), and the origin, not the header, is what is trusted.
            "allow_headers": ["*"],
            "expose_headers": EXPOSED_HEADERS,
            "max_age": 600,
        }
        if origins
        else None
    )
    app.front = FrontDoor(
        partial(FastAPI.__call__, app),
        get_key=current_key,
        max_body_bytes=gateway_settings.max_body_bytes,
        allow_unauthenticated=gateway_settings.allow_unauthenticated,
        cors=cors,
        # The hot path, without FastAPI's routing, dependencies and exception middleware per request.
        routes={("POST", "/v1/chat/completions"): partial(openai_api.serve_chat, app)},
        check_gateway_key=partial(keys.check_gateway_key, app),
    )

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _openapi(app, gateway_settings.max_messages)
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]  # FastAPI's documented way to customise the schema
    return app


def settle_heap() -> None:
    """For a process that is the gateway (the core built here, at startup, not handed in by an
    embedding program): what startup built (modules, the core, the SDKs' types) lives as long
    as the process, so it is frozen out of the cyclic garbage collector, whose full passes
    would walk it again and again; and young collections run every 50,000 net allocations
    instead of 700 (each walks the objects of the requests in flight, whatever the interval:
    the fewer, the cheaper; a request leaves a few dozen objects behind for a while: metrics
    windows, the log's queue). Measured by benchmarks/profile_gateway.py against the same
    gateway without it, paired blocks of one run: -0.35 ms CPU per chat, -0.28 ms per stream
    (700 -> 7,000); 7,000 -> 50,000: -0.04 and -0.09 ms a chat in two runs, -0.06 a stream,
    +3 MB of resident memory (169 MB)."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(_YOUNG_COLLECTION_EVERY, *gc.get_threshold()[1:])


_YOUNG_COLLECTION_EVERY = 50_000


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
    "x-conductor-prompt",  # the saved prompt's version that answered (gateway/prompts.py)
    OVERHEAD_HEADER,
]


def _openapi(app: FastAPI, max_messages: int) -> dict[str, Any]:
    """FastAPI's document, with its 422 responses removed: validation errors are 400s in the
    `GatewayError` shape (what OpenAI clients expect), which every operation documents."""
    with warnings.catch_warnings():  # a HEAD operation shares its GET's id: both named, the HEAD one removed below
        warnings.filterwarnings("ignore", message="Duplicate Operation ID", category=UserWarning)
        schema = get_openapi(
            title=app.title, version=app.version, description=app.description, routes=app.routes, tags=app.openapi_tags
        )
    for path in schema.get("paths", {}).values():
        path.pop("head", None)  # HEAD answers as GET does, without a body: said in the description
        for operation in path.values():
            if isinstance(operation, dict):
                operation.get("responses", {}).pop("422", None)
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    for unused in ("HTTPValidationError", "ValidationError"):
        components.pop(unused, None)
    # Shapes the document refers to but FastAPI does not see: the streamed chunk, and the two
    # chat requests (each route reads its body itself).
    _add_schema(components, ChatCompletionChunk, "validation")
    for model in (ChatCompletionRequest, ChatRequest):
        _add_schema(components, model, "validation")
        components[model.__name__]["properties"]["messages"]["maxItems"] = max_messages
    # The provider names this gateway knows (built-ins and configured endpoints), as an enum.
    provider = components["ChatRequest"]["properties"]["provider"]
    provider.pop("type", None)
    provider["enum"] = known_provider_names()
    provider["type"] = "string"
    # A gateway key's models: 'auto', or a known provider with an optional '/model'.
    models = next(s for s in components["KeyCreate"]["properties"]["models"]["anyOf"] if s.get("type") == "array")
    models["items"]["pattern"] = keys_api.models_pattern()
    return schema


def _add_schema(components: dict[str, Any], model: type, mode: Literal["validation", "serialization"]) -> None:
    """`model`'s JSON Schema under its name, with the models it uses. One FastAPI described
    already keeps its name when the two agree; a different one is added as `Name-Input` (as
    FastAPI names a model whose request and response shapes differ)."""
    definition = TypeAdapter(model).json_schema(ref_template="#/components/schemas/{model}", mode=mode)
    nested = definition.pop("$defs", {})
    renamed = {
        name: f"{name}-Input"
        for name, shape in nested.items()
        if name in components and _without_defaults(components[name]) != _without_defaults(shape)
    }
    text = json.dumps({"definition": definition, "nested": nested})
    for old, new in renamed.items():
        text = text.replace(f'"#/components/schemas/{old}"', f'"#/components/schemas/{new}"')
    rewritten = json.loads(text)
    for name, shape in rewritten["nested"].items():
        components.setdefault(renamed.get(name, name), shape)
    components[model.__name__] = rewritten["definition"]


def _without_defaults(shape: Any) -> Any:
    """A schema without its `default`s (FastAPI leaves out `default: null`; pydantic writes it)."""
    if isinstance(shape, dict):
        return {k: _without_defaults(v) for k, v in shape.items() if k != "default"}
    if isinstance(shape, list):
        return [_without_defaults(v) for v in shape]
    return shape


app = create_app()
