"""Routing state: the circuit breakers and AUTO's rolling metrics, and where they live.

    LocalRoutingState   in this process only (the default: `make run`, one gateway)
    RedisRoutingState   shared by every replica through Redis/Valkey (`CONDUCTOR_REDIS_URL`);
                        falls back to local state, and says so, while Redis is unreachable

Both give the core the same three things: a breaker per provider, a hook for each attempt
(`record_attempt`), and `info()` for /status. The hot path never waits on the network.
"""

from __future__ import annotations

from typing import Any, Protocol

from ..breaker import CircuitBreaker
from ..config import Settings
from ..metrics import MetricsRegistry
from ..models import AttemptRecord, RoutingStateInfo

__all__ = ["LocalRoutingState", "RoutingState", "open_routing_state"]


class RoutingState(Protocol):
    def breaker(self, name: str, **settings: Any) -> CircuitBreaker: ...
    def attach(self, metrics: MetricsRegistry) -> None: ...
    def record_attempt(self, record: AttemptRecord) -> None: ...
    def info(self) -> RoutingStateInfo: ...
    def close(self) -> None: ...


class LocalRoutingState:
    def breaker(self, name: str, **settings: Any) -> CircuitBreaker:
        return CircuitBreaker(**settings)

    def attach(self, metrics: MetricsRegistry) -> None:
        pass

    def record_attempt(self, record: AttemptRecord) -> None:
        pass

    def info(self) -> RoutingStateInfo:
        return RoutingStateInfo(mode="local", detail="this process only (CONDUCTOR_REDIS_URL is not set)")

    def close(self) -> None:
        pass


def open_routing_state(settings: Settings) -> RoutingState:
    if not settings.redis_url:
        return LocalRoutingState()
    from .redis_state import RedisRoutingState  # redis is imported only by those who use it

    return RedisRoutingState(settings.redis_url, prefix=settings.redis_prefix)
