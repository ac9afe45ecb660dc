"""Conductor's own endpoints: the native chat call and the status the dashboard shows."""

from __future__ import annotations

import json

from fastapi import APIRouter, Path, Request, Security
from fastapi.responses import JSONResponse

from conductor_core.errors import ProviderError
from conductor_core.models import ChatRequest, ChatResponse, HealthResponse, ProviderStatus, SystemStatus

from .core import call, conductor_of
from .errors import ERROR_RESPONSES, PROVIDER_RESPONSES, ApiError
from .openai_api import bearer, conductor_headers
from .schemas import integral

__all__ = ["router", "health_router"]

router = APIRouter(dependencies=[Security(bearer)])
health_router = APIRouter()


@router.post(
    "/v1/conductor/chat",
    response_model=ChatResponse,
    responses={**ERROR_RESPONSES, **PROVIDER_RESPONSES},
    summary="Chat (Conductor's native shape)",
    description="A ChatRequest in, a ChatResponse out, with metadata, analytics and routing (AUTO's reason and "
    "every failed attempt).",
    tags=["Conductor"],
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": "#/components/schemas/ChatRequest"}}},
        }
    },
)
async def native_chat(request: Request) -> JSONResponse:
    # Parsed here, strictly and in JSON mode (a string is not a number, false is not 0.0):
    # FastAPI would validate the core's model leniently. The schema is documented below.
    body = parse_chat_request(await request.body())
    response = await call(conductor_of(request).chat, body)
    return JSONResponse(response.model_dump(mode="json"), headers=conductor_headers(response))


def parse_chat_request(raw: bytes) -> ChatRequest:
    """The body as a ChatRequest, strictly, in JSON mode. A ValidationError becomes a 400
    naming the field (its handler)."""
    if not raw.strip():
        raise ApiError(400, "validation_error", "a JSON request body is required", details=[])
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    if isinstance(data, dict) and "max_tokens" in data:
        # JSON Schema counts 300.0 as an integer; pydantic's strict mode does not.
        data["max_tokens"] = integral(data["max_tokens"])
        raw = json.dumps(data).encode()
    return ChatRequest.model_validate_json(raw, strict=True)


@router.get(
    "/status",
    response_model=SystemStatus,
    responses=ERROR_RESPONSES,
    summary="System status",
    description="Every provider's health, performance, reliability and usage, from the shared request log "
    "(playground and gateway traffic alike).",
    tags=["Status"],
)
async def system_status(request: Request) -> SystemStatus:
    return await call(conductor_of(request).status)


@router.get(
    "/providers/{name}/status",
    response_model=ProviderStatus,
    responses={**ERROR_RESPONSES, 404: {**PROVIDER_RESPONSES[404], "description": "No provider has this name."}},
    summary="One provider's status",
    tags=["Status"],
)
async def provider_status(
    request: Request, name: str = Path(description="A provider name from /status.", examples=["local", "gemini"])
) -> ProviderStatus:
    conductor = conductor_of(request)
    if name == "auto" or name not in conductor.registry.names():
        raise ApiError(
            404,
            "unknown_provider",
            f"unknown provider {name!r}; known: {', '.join(conductor.registry.names())}",
            param="name",
        )
    try:
        return await call(conductor.provider_status, name)
    except ProviderError as error:
        raise ApiError(404, "unknown_provider", error.message, param="name") from None


@health_router.get(
    "/health",
    response_model=HealthResponse,
    responses={500: ERROR_RESPONSES[500], 503: {**PROVIDER_RESPONSES[503], "description": "The gateway is still starting."}},
    summary="Health",
    description="Runs every configured provider's health check (cached briefly). Always 200 while the gateway "
    "runs: read `status` (ok, degraded, down) for the providers. Needs no key.",
    tags=["Status"],
)
async def health(request: Request) -> HealthResponse:
    return await call(conductor_of(request).health)
