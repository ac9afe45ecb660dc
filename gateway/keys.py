"""Gateway keys at the gateway: their enforcement on the requests that bear one (the admin API
that makes, lists and revokes them is keys_api.py; conductor_core/keys has the storage and
the counters).

* `CONDUCTOR_API_KEY` stays the admin key: it alone reaches the admin API (and every other
  endpoint), and its requests are counted against nothing.
* A gateway key (`sk-cnd-...`) reaches `POST /v1/chat/completions` and `GET /v1/models` only.
  Unknown or revoked: 401. Another endpoint: 403. A model the key does not allow: 403 naming
  the ones it does (not OpenAI's 404 for a model "that does not exist or you do not have
  access to": the model exists, and the key is what to change). Over rpm or tpm: 429 with
  Retry-After, naming the limit. Budget spent: 429 with `code: insufficient_quota` (what
  OpenAI answers when an account's quota is spent; OpenAI clients raise RateLimitError, and
  `x-should-retry: false` keeps them from retrying), naming the budget and when it resets,
  with Retry-After at the reset.
* The key lookup is a dict read in this process (`KeyRing`); only the counters (with Redis)
  cost a round trip, and only for the limits a key has.
"""

from __future__ import annotations

import asyncio
from typing import Any

from starlette.types import Scope

from conductor_core.keys import GatewayKey, KeyRing, KeyStore, KeyUse, hash_key
from conductor_core.keys.counters import Admission, KeyCounters, OverLimit, estimate_tokens

from .core import core_of_app
from .errors import ApiError

__all__ = ["KeyGate", "admit", "check_gateway_key", "check_model", "gate_of", "key_of", "settle"]

#: What a gateway key may call (method, path); everything else needs the admin key.
KEY_ROUTES = {("POST", "/v1/chat/completions"), ("GET", "/v1/models"), ("HEAD", "/v1/models")}
_MODEL_PATH = "/v1/models/"


class KeyGate:
    """One per app: the key store, this process's view of the keys, and their counters."""

    def __init__(self, core: Any) -> None:
        self.core = core
        self.store = KeyStore(core.log)
        self.ring = KeyRing(self.store)
        self.counters = KeyCounters(
            self.store.spent_since, redis_url=core.settings.redis_url, prefix=core.settings.redis_prefix
        )

    async def identify(self, secret: str) -> GatewayKey | None:
        secret_hash = hash_key(secret)
        found = self.ring.get(secret_hash)
        if found is None:  # made in another process since the last refresh, or unknown
            found = await asyncio.to_thread(self.ring.find, secret_hash)
        return found

    async def aclose(self) -> None:
        self.ring.close()
        await self.counters.aclose()


def gate_of(app: Any) -> KeyGate:
    """The app's gate, made on first use (the core's request log and Redis)."""
    core = core_of_app(app)
    gate = getattr(app.state, "key_gate", None)
    if gate is None or gate.core is not core:
        gate = app.state.key_gate = KeyGate(core)
    return gate


async def check_gateway_key(app: Any, scope: Scope, secret: str) -> ApiError | None:
    """The front door's check of a bearer shaped as a gateway key: None to let it through
    (the key is then in the request's state), or the refusal."""
    try:
        gate = gate_of(app)
    except ApiError as starting:  # the core is not built yet
        return starting
    key = await gate.identify(secret)
    unauthenticated = {"www-authenticate": "Bearer"}
    if key is None:
        return ApiError(401, "authentication", "invalid API key: no such gateway key", headers=unauthenticated)
    if key.revoked:
        return ApiError(
            401,
            "authentication",
            f"this gateway key ({key.prefix}..., {key.name!r}) was revoked",
            headers=unauthenticated,
        )
    method, path = scope["method"], scope["path"]
    if (method, path) not in KEY_ROUTES and not (method in ("GET", "HEAD") and path.startswith(_MODEL_PATH)):
        return ApiError(
            403,
            "permission_denied",
            f"a gateway key may call POST /v1/chat/completions and GET /v1/models; {method} {path} needs the admin "
            "key (CONDUCTOR_API_KEY)",
        )
    scope["state"]["gateway_key"] = key
    return None


def key_of(scope: Scope) -> GatewayKey | None:
    return scope["state"].get("gateway_key")


def check_model(key: GatewayKey, provider: str, model: str | None, default_model: str | None) -> None:
    if not key.allows(provider, model, default_model):
        asked = "auto" if provider == "auto" else f"{provider}/{model or default_model or '(default)'}"
        raise ApiError(
            403,
            "model_not_allowed",
            f"this gateway key may not use {asked}; it may use: {', '.join(key.models or [])}",
            param="model",
        )


async def admit(app: Any, key: GatewayKey, body_bytes: int, max_tokens: int | None, choices: int) -> Admission:
    try:
        return await gate_of(app).counters.admit(key, estimate_tokens(body_bytes, max_tokens, choices))
    except OverLimit as over:
        if over.limit == "budget":
            raise ApiError(
                429, "budget_exceeded", over.message, code="insufficient_quota", retry_after=over.retry_after_s
            ) from None
        raise ApiError(
            429, f"{over.limit}_limit_exceeded", over.message, retryable=True, retry_after=over.retry_after_s
        ) from None


async def settle(app: Any, admission: Admission, use: KeyUse) -> None:
    await gate_of(app).counters.settle(admission, use)
