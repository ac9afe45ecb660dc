"""The admin API for gateway keys (`CONDUCTOR_API_KEY` only): make one (the answer holds the key,
shown once), list them (never the key or its hash), revoke one. Enforcement: keys.py."""

from __future__ import annotations

import asyncio
import json
import re
from typing import Any

from fastapi import APIRouter, Request, Security
from pydantic import BaseModel, Field, field_validator

from conductor_core.keys import BudgetPeriod, GatewayKey
from conductor_core.models import known_provider_names

from .core import core_of
from .errors import ERROR_RESPONSES, ApiError
from .keys import gate_of
from .openai_api import bearer

__all__ = ["KeyCreate", "KeyCreated", "KeyList", "router"]

router = APIRouter(dependencies=[Security(bearer)])

_BLANK = " \t\n\r\f\v"  # what a name may not be made of only (the schema's pattern says the same)
_MOST = 1_000_000_000  # rpm and tpm: stored as 32-bit integers (PostgreSQL's INTEGER)


class KeyCreate(BaseModel):
    """A new gateway key. Limits left out are not applied."""

    model_config = {"extra": "forbid", "strict": True}  # true is not 1, "5" is not 5

    name: str = Field(
        min_length=1, max_length=200, pattern=r"[^ \t\n\r\f\v]", description="What the key is for (an app, a person)."
    )
    owner: str | None = Field(
        default=None, max_length=200, description="Who the key belongs to: free text for now (a person or a team)."
    )
    models: list[str] | None = Field(
        default=None,
        min_length=1,
        description="Allowed models: a provider ('openai': any of its models), 'provider/model', or 'auto' (which "
        "may route to any provider). Left out: any model.",
        examples=[["openai/gpt-5.4-mini", "local"]],
    )
    rpm: int | None = Field(
        default=None, ge=1, le=_MOST, strict=False, description="Requests per minute, across every gateway process."
    )
    tpm: int | None = Field(
        default=None, ge=1, le=_MOST, strict=False, description="Tokens (input + output) per minute, across processes."
    )
    budget_usd: float | None = Field(
        default=None, gt=0, le=1e12, description="USD the key may spend per budget_period."
    )
    budget_period: BudgetPeriod = Field(default="month", description="'day' or 'month' (calendar, UTC).")

    @field_validator("rpm", "tpm", mode="before")
    @classmethod
    def _whole_number(cls, value: Any) -> Any:
        # JSON's 60.0 is the integer 60 (as JSON Schema reads it); true and "60" are not numbers.
        if isinstance(value, bool | str):
            raise ValueError(f"must be a whole number, got {json.dumps(value)}")
        return value

    @field_validator("name", mode="before")
    @classmethod
    def _name_said(cls, name: Any) -> Any:
        if isinstance(name, str):
            if not name.strip(_BLANK):
                raise ValueError("must not be blank: say what the key is for (an app, a person)")
            return name.strip(_BLANK)
        return name

    @field_validator("models")
    @classmethod
    def _known_providers(cls, models: list[str] | None) -> list[str] | None:
        if models is None:
            return None
        pattern = re.compile(models_pattern())
        for entry in models:
            if not pattern.fullmatch(entry):
                providers = ", ".join(sorted(_providers()))
                raise ValueError(f"{entry!r} is not 'auto', a provider ({providers}) or 'provider/model'")
        return list(dict.fromkeys(models))


def _providers() -> list[str]:
    return [name for name in known_provider_names() if name != "auto"]


def models_pattern() -> str:
    """What a `models` entry must be (the schema shows it): 'auto', or a provider and an optional '/model'."""
    return f"^(auto|({'|'.join(re.escape(name) for name in _providers())})(/.+)?)$"


class KeyCreated(GatewayKey):
    key: str = Field(description="The key itself: shown this once, stored only as a hash. Keep it now.")


class KeyList(BaseModel):
    object: str = "list"
    data: list[GatewayKey]
    refreshes: int = Field(
        description="Times this gateway process has read every key from the database (every 0.25 s): a "
        "revocation made elsewhere is seen here by the next one."
    )
    counters: dict[str, Any] = Field(description="Where rate and spend counters live: shared (Redis) or local.")


def _admin_only(request: Request) -> None:
    if core_of(request).settings.api_key is None:
        raise ApiError(
            403,
            "admin_key_required",
            "gateway keys need an admin key: set CONDUCTOR_API_KEY (without it the gateway is open, and a key "
            "would limit nothing), then call this with 'Authorization: Bearer <CONDUCTOR_API_KEY>'",
        )


_KEY_RESPONSES: dict[int | str, dict[str, Any]] = {
    **ERROR_RESPONSES,
    403: {"model": ERROR_RESPONSES[400]["model"], "description": "A gateway key, or no CONDUCTOR_API_KEY is set."},
}


@router.post(
    "/v1/conductor/keys",
    response_model=KeyCreated,
    status_code=201,
    responses=_KEY_RESPONSES,
    summary="Make a gateway key",
    description="A key with its limits; the answer holds the key itself, shown this once. Admin key only.",
    tags=["Keys"],
)
async def create_key(body: KeyCreate, request: Request) -> KeyCreated:
    _admin_only(request)
    gate = gate_of(request.app)
    made, secret = await asyncio.to_thread(
        gate.store.create,
        body.name,
        owner=body.owner,
        models=body.models,
        rpm=body.rpm,
        tpm=body.tpm,
        budget_usd=body.budget_usd,
        budget_period=body.budget_period,
    )
    await asyncio.to_thread(gate.ring.changed)
    return KeyCreated(**made.model_dump(), key=secret)


@router.get(
    "/v1/conductor/keys",
    response_model=KeyList,
    responses=_KEY_RESPONSES,
    summary="List gateway keys",
    description="Every key, revoked ones too, with its limits; never the key or its hash. Admin key only.",
    tags=["Keys"],
)
async def list_keys(request: Request) -> KeyList:
    _admin_only(request)
    gate = gate_of(request.app)
    keys = await asyncio.to_thread(gate.store.list)
    return KeyList(data=keys, refreshes=gate.ring.refreshes, counters=gate.counters.info())


@router.delete(
    "/v1/conductor/keys/{key_id}",
    response_model=GatewayKey,
    responses={**_KEY_RESPONSES, 404: {"model": ERROR_RESPONSES[400]["model"], "description": "No such key."}},
    summary="Revoke a gateway key",
    description="Refused from then on by every gateway process (each reads the keys every 0.25 s). Revoking "
    "twice keeps the first time. Admin key only.",
    tags=["Keys"],
)
async def revoke_key(key_id: str, request: Request) -> GatewayKey:
    _admin_only(request)
    gate = gate_of(request.app)
    revoked = await asyncio.to_thread(gate.store.revoke, key_id)
    if revoked is None:
        raise ApiError(404, "key_not_found", f"no gateway key {key_id!r}; GET /v1/conductor/keys lists them")
    await asyncio.to_thread(gate.ring.changed)
    return revoked
