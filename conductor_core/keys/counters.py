"""A gateway key's rate limits and budget, counted where every replica sees them.

With `CONDUCTOR_REDIS_URL`, counters live in Redis, so a limit holds across gateway processes;
without it (or while Redis cannot be reached: never an outage), in this process.

* **rpm**: `limits`' moving window (exact: the 6th request within any 60 s is refused), one
  entry per request. Every request a key sends is counted, a refused one too.
* **tpm**: `limits`' fixed window of 60 s, counted in tokens (input + output). Admission
  reserves an estimate (the body's bytes / 4 for the input, plus `max_tokens`, or 512 when
  unset, per choice; at most the whole limit, so one request can always pass an empty
  window); when the answer is done the reservation is settled to the tokens the attempts
  really used (the difference added or given back). A fixed window can let through up to
  twice the limit across a window's edge; a moving window would need one Redis entry per
  token.
* **budget**: USD per calendar day or month (UTC). A period's spend starts from what the
  request log has priced for the key in it (read once per process and period; in Redis, kept
  by whichever process is first), and grows by each request's priced cost when it ends. A
  request is admitted while spent + reserved < budget, and reserves the largest cost this
  process has seen a request of this key have (0 before the first); so parallel requests
  overshoot by at most one request's cost plus whatever requests in flight cost beyond the
  largest earlier one. An attempt whose price is unknown counts 0 (it cannot be charged).

Redis gone: each process counts alone, from empty windows (a limit then holds per process),
says so (`info()`), and tries Redis again after `RETRY_S`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from limits import RateLimitItem, RateLimitItemPerMinute
from limits.aio.storage import MemoryStorage, RedisStorage, Storage
from limits.aio.strategies import FixedWindowRateLimiter, MovingWindowRateLimiter

from ..secrets import redact
from .store import GatewayKey, period_bounds
from .usage import KeyUse

__all__ = ["Admission", "KeyCounters", "OverLimit", "estimate_tokens"]

log = logging.getLogger("conductor.keys")

RETRY_S = 2.0  # after Redis failed, count locally this long before trying it again
OUTPUT_GUESS = 512  # tokens reserved for an answer whose request sets no max_tokens
_RESERVED_TTL_S = 600  # a reservation a killed process never settled is forgotten after this
_TIMEOUT_S = 0.5

Limit = Literal["rpm", "tpm", "budget"]


class OverLimit(Exception):
    """A request a key's limit refuses: which limit, what it is, and when to retry."""

    def __init__(self, limit: Limit, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.limit = limit
        self.message = message
        self.retry_after_s = retry_after_s


@dataclass
class Admission:
    """What a request reserved, to be settled when it ends."""

    key: GatewayKey
    tokens: int = 0
    budget_usd: float = 0.0
    slot: str | None = None  # the budget period's counter
    shared: bool = False  # counted in Redis


def estimate_tokens(body_bytes: int, max_tokens: int | None, choices: int) -> int:
    return body_bytes // 4 + (max_tokens or OUTPUT_GUESS) * max(1, choices)


# KEYS: spent, reserved. ARGV: budget, reservation, reserved ttl. Replies {admitted (-1: the
# period's spend is not known here yet), spent, reserved} (numbers as strings: Lua truncates floats).
_RESERVE = """
local spent = redis.call('GET', KEYS[1])
if not spent then return {-1, '0', '0'} end
local reserved = tonumber(redis.call('GET', KEYS[2]) or '0')
if reserved < 0 then reserved = 0 end
if tonumber(spent) + reserved >= tonumber(ARGV[1]) then return {0, spent, tostring(reserved)} end
if tonumber(ARGV[2]) > 0 then
  redis.call('INCRBYFLOAT', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return {1, spent, tostring(reserved)}
"""

# KEYS: spent, reserved. ARGV: the reservation given back, the cost. A period whose spend Redis
# lost is read from the request log again on the next request (the cost is there).
_SETTLE = """
if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('INCRBYFLOAT', KEYS[1], ARGV[2]) end
if tonumber(ARGV[1]) > 0 then redis.call('INCRBYFLOAT', KEYS[2], '-' .. ARGV[1]) end
return 1
"""


class _Windows:
    """`limits`' two strategies over one storage."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.moving = MovingWindowRateLimiter(storage)
        self.fixed = FixedWindowRateLimiter(storage)


class KeyCounters:
    def __init__(
        self,
        spent_since: Callable[[str, datetime], float],
        *,
        redis_url: str | None = None,
        prefix: str = "conductor:",
    ) -> None:
        self._spent_since = spent_since  # the request log's priced spend (KeyStore.spent_since): blocking
        self._local = _Windows(MemoryStorage())
        self._local_spent: dict[str, float] = {}
        self._local_reserved: dict[str, float] = {}
        self._largest: dict[str, float] = {}  # key id -> largest cost of one of its requests seen here
        self._items: dict[tuple[str, int], RateLimitItem] = {}
        self._prefix = prefix
        self._shared: _Windows | None = None
        self._redis: Any = None
        self._scripts: dict[str, Any] = {}
        self._local_until = 0.0  # monotonic time until which Redis is not tried again
        self.detail = "this process only (CONDUCTOR_REDIS_URL is not set)"
        if redis_url:
            import redis.asyncio

            storage = RedisStorage(
                "async+" + redis_url,
                implementation="redispy",
                key_prefix=prefix + "limits",
                socket_timeout=_TIMEOUT_S,
                socket_connect_timeout=_TIMEOUT_S,
            )
            self._shared = _Windows(storage)
            self._redis = redis.asyncio.Redis.from_url(
                redis_url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S, decode_responses=True
            )
            self._scripts = {
                "reserve": self._redis.register_script(_RESERVE),
                "settle": self._redis.register_script(_SETTLE),
            }
            self.detail = "shared through Redis"

    @property
    def shared(self) -> bool:
        return self._shared is not None and time.monotonic() >= self._local_until

    def info(self) -> dict[str, Any]:
        return {"mode": "shared" if self.shared else "local", "detail": self.detail}

    def _item(self, kind: str, amount: int) -> RateLimitItem:
        found = self._items.get((kind, amount))
        if found is None:
            found = self._items[(kind, amount)] = RateLimitItemPerMinute(amount, namespace=kind)
        return found

    def _went_local(self, exc: BaseException) -> None:
        if self.shared:
            log.warning("key limits counted in this process only: Redis unreachable (%s)", redact(str(exc)))
        self.detail = redact(f"Redis unreachable ({type(exc).__name__}); each process counts alone")
        self._local_until = time.monotonic() + RETRY_S

    # --- admission ------------------------------------------------------------------------------

    async def admit(self, key: GatewayKey, estimated_tokens: int) -> Admission:
        """Count a request against `key`'s limits and reserve its share; raises `OverLimit`."""
        if self.shared:
            try:
                return await self._admit(key, estimated_tokens, shared=True)
            except OverLimit:
                raise
            except Exception as exc:  # noqa: BLE001 - Redis away: count here, never refuse for it
                self._went_local(exc)
        return await self._admit(key, estimated_tokens, shared=False)

    async def _admit(self, key: GatewayKey, estimated_tokens: int, *, shared: bool) -> Admission:
        """The key's limits checked at once (with Redis, one round trip's wait instead of one
        per limit); if any refuses, what the others reserved is given back."""
        windows = self._shared if shared and self._shared is not None else self._local
        admission = Admission(key=key, shared=shared)
        checks = []
        if key.rpm is not None:
            checks.append(self._count_request(windows, key))
        if key.tpm is not None:
            checks.append(self._reserve_tokens(windows, key, estimated_tokens, admission))
        if key.budget_usd is not None and key.budget_period is not None:
            checks.append(self._reserve_budget(key, admission, shared=shared))
        if not checks:
            return admission
        outcomes = await asyncio.gather(*checks, return_exceptions=True)
        failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
        if failures:
            await self._give_back(windows, admission)
            refusals = [f for f in failures if isinstance(f, OverLimit)]
            raise refusals[0] if refusals else failures[0]
        return admission

    async def _count_request(self, windows: _Windows, key: GatewayKey) -> None:
        assert key.rpm is not None
        item = self._item("rpm", key.rpm)
        if not await windows.moving.hit(item, key.id):
            stats = await windows.moving.get_window_stats(item, key.id)
            wait = _until(stats.reset_time)
            raise OverLimit(
                "rpm",
                f"this key's rate limit of {key.rpm} requests per minute is reached; retry in {_seconds(wait)}",
                wait,
            )

    async def _reserve_tokens(self, windows: _Windows, key: GatewayKey, estimated: int, admission: Admission) -> None:
        assert key.tpm is not None
        item = self._item("tpm", key.tpm)
        reserve = max(1, min(estimated, key.tpm))
        if not await windows.fixed.hit(item, key.id, cost=reserve):
            await windows.storage.incr(item.key_for(key.id), item.get_expiry(), amount=-reserve)  # not used
            stats = await windows.fixed.get_window_stats(item, key.id)
            wait = _until(stats.reset_time)
            raise OverLimit(
                "tpm",
                f"this key's limit of {key.tpm} tokens per minute is reached (this request would use about "
                f"{estimated}: a lower max_tokens may fit sooner); retry in {_seconds(wait)}",
                wait,
            )
        admission.tokens = reserve

    async def _reserve_budget(self, key: GatewayKey, admission: Admission, *, shared: bool) -> None:
        assert key.budget_usd is not None and key.budget_period is not None
        start, end = period_bounds(key.budget_period)
        slot = f"spend:{key.id}:{int(start.timestamp())}"
        reservation = self._largest.get(key.id, 0.0)
        if shared:
            keys = [self._prefix + slot, self._prefix + slot + ":reserved"]
            args = [repr(key.budget_usd), repr(reservation), _RESERVED_TTL_S]
            admitted, spent, _ = await self._scripts["reserve"](keys=keys, args=args)
            if int(admitted) == -1:  # first use of this period in Redis: from the request log
                seed = await asyncio.to_thread(self._spent_since, key.id, start)
                ttl = max(60, int(end.timestamp() - time.time()) + 86400)
                await self._redis.set(keys[0], repr(seed), nx=True, ex=ttl)
                admitted, spent, _ = await self._scripts["reserve"](keys=keys, args=args)
            spent = float(spent)
        else:
            if slot not in self._local_spent:
                seed = await asyncio.to_thread(self._spent_since, key.id, start)
                self._local_spent.setdefault(slot, seed)
            spent = self._local_spent[slot]
            admitted = spent + self._local_reserved.get(slot, 0.0) < key.budget_usd
            if admitted:
                self._local_reserved[slot] = self._local_reserved.get(slot, 0.0) + reservation
        if not int(admitted):
            wait = end.timestamp() - time.time()
            raise OverLimit(
                "budget",
                f"this key's budget of ${key.budget_usd:g} per {key.budget_period} is spent (${spent:.6f} so far); "
                f"it resets at {end.strftime('%Y-%m-%d %H:%M')} UTC, or raise the key's budget_usd",
                wait,
            )
        admission.slot = slot
        admission.budget_usd = reservation

    # --- settling -------------------------------------------------------------------------------

    async def settle(self, admission: Admission, use: KeyUse) -> None:
        """The request ended: its reservations become what its attempts really used."""
        key = admission.key
        self._largest[key.id] = max(self._largest.get(key.id, 0.0), use.cost_usd)
        windows = self._shared if admission.shared and self._shared is not None else self._local
        try:
            if key.tpm is not None and use.tokens != admission.tokens:
                item = self._item("tpm", key.tpm)
                await windows.storage.incr(
                    item.key_for(key.id), item.get_expiry(), amount=use.tokens - admission.tokens
                )
            if admission.slot is not None:
                await self._settle_budget(admission, use.cost_usd)
        except Exception as exc:  # noqa: BLE001 - Redis went away mid-request: the log has the cost
            self._went_local(exc)

    async def _settle_budget(self, admission: Admission, cost: float) -> None:
        assert admission.slot is not None
        if admission.shared:
            keys = [self._prefix + admission.slot, self._prefix + admission.slot + ":reserved"]
            await self._scripts["settle"](keys=keys, args=[repr(admission.budget_usd), repr(cost)])
        else:
            self._local_spent[admission.slot] = self._local_spent.get(admission.slot, 0.0) + cost
            left = self._local_reserved.get(admission.slot, 0.0) - admission.budget_usd
            self._local_reserved[admission.slot] = max(0.0, left)
        admission.slot = None  # settled once

    async def _give_back(self, windows: _Windows, admission: Admission) -> None:
        """What a refused request reserved (its rpm entry stays: a refused request counts)."""
        try:
            if admission.tokens and admission.key.tpm is not None:
                item = self._item("tpm", admission.key.tpm)
                await windows.storage.incr(item.key_for(admission.key.id), item.get_expiry(), amount=-admission.tokens)
            if admission.slot is not None:
                await self._settle_budget(admission, 0.0)
        except Exception as exc:  # noqa: BLE001 - Redis went away meanwhile
            self._went_local(exc)

    async def aclose(self) -> None:
        if self._redis is not None:
            await self._redis.aclose()
        if self._shared is not None:
            client = getattr(getattr(self._shared.storage, "bridge", None), "storage", None)
            if client is not None:
                await client.aclose()


def _until(reset_time: float) -> float:
    return max(1.0, reset_time - time.time())


def _seconds(wait: float) -> str:
    return f"{math.ceil(wait)} s"
