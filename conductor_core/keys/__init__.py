"""Gateway keys: made and revoked through the admin API, each with its allowed models, rate
limits (rpm, tpm) and a budget per day or month, enforced by the gateway across replicas.

    store.py     the keys table, `KeyStore`, and `KeyRing` (each process's cached view)
    counters.py  rpm, tpm and spend counters: in Redis (CONDUCTOR_REDIS_URL) or in-process
    usage.py     the key a request was made with, stamped on its attempts in the request log
"""

from __future__ import annotations

from .store import KEY_PREFIX, BudgetPeriod, GatewayKey, KeyRing, KeySpend, KeyStore, hash_key, period_bounds
from .usage import KeyUse, current_use, reset_use, using

__all__ = [
    "KEY_PREFIX",
    "BudgetPeriod",
    "GatewayKey",
    "KeyRing",
    "KeySpend",
    "KeyStore",
    "KeyUse",
    "current_use",
    "hash_key",
    "period_bounds",
    "reset_use",
    "using",
]
