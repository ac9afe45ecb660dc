"""Gateway keys in the request log's database, and each process's cached view of them.

A key is `sk-cnd-` and 43 random URL-safe characters (256 bits, `secrets.token_urlsafe`). It
is shown once, when made; the database keeps only its SHA-256 and a short prefix to recognise
it by. SHA-256, not a password KDF (argon2, bcrypt): a KDF slows the guessing of a secret
people chose, and there is nothing to guess in 256 random bits, while every request's key
is looked up, so the hash must be cheap (GitHub's and Stripe's tokens are kept the same way).
`sk-` is the shape `redact()` already removes from any text where nobody registered it.

`KeyRing` is what the hot path reads: every key (revoked ones too) by its hash, in a dict the
ring's thread replaces every `refresh_s` (0.25 s) from the database, the one place every
process shares (with or without Redis), so a revocation made through any process is seen by
every other within one refresh plus the read's time. A key made in another process since the
last refresh is looked up by hash once (`find`); an unknown one is remembered until the next
refresh, so a stream of made-up keys costs no query each.

A key's owner is free text for now (a person's or a team's name); it becomes a user or a
workspace with the teams work (issue 23, points 1 and 2)."""

from __future__ import annotations

import hashlib
import json
import logging
import secrets
import threading
import time
from datetime import UTC, datetime
from typing import Any, Literal, NamedTuple

from pydantic import BaseModel, Field
from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, and_, case, func, select, update

from ..models import new_id, utcnow
from ..store import RequestLog
from ..store.schema import SafeString, SafeText, UTCDateTime, attempts

__all__ = [
    "KEY_PREFIX",
    "BudgetPeriod",
    "GatewayKey",
    "KeyRing",
    "KeySpend",
    "KeyStore",
    "hash_key",
    "keys_table",
    "metadata",
    "period_bounds",
]

log = logging.getLogger("conductor.keys")

#: Every gateway key starts with this; the rest is secret.
KEY_PREFIX = "sk-cnd-"
_VISIBLE = 4  # random characters kept with the prefix, to tell keys apart in a list

BudgetPeriod = Literal["day", "month"]

metadata = MetaData()

keys_table = Table(
    "gateway_keys",
    metadata,
    Column("id", String(), primary_key=True),
    Column("name", SafeString(), nullable=False),
    Column("owner", SafeString()),  # free text for now: a person or a team (issue 23, points 1-2)
    Column("prefix", String(), nullable=False),  # sk-cnd- and the first 4 characters
    Column("secret_hash", String(), nullable=False, unique=True),  # SHA-256 hex of the whole key
    Column("models", SafeText()),  # JSON list of allowed models/providers; NULL: any
    Column("rpm", Integer()),
    Column("tpm", Integer()),
    Column("budget_usd", Double()),
    Column("budget_period", String()),  # day | month, with budget_usd
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("created_by", SafeString(), nullable=False),
    Column("revoked_at", UTCDateTime()),
    Column("revoked_ts", Double()),
    Index("ix_gateway_keys_created_ts", "created_ts"),
)


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def period_bounds(period: BudgetPeriod, now: datetime | None = None) -> tuple[datetime, datetime]:
    """The calendar day or month (UTC) `now` is in: its start and the next one's."""
    now = (now or utcnow()).astimezone(UTC)
    if period == "day":
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, datetime.fromtimestamp(start.timestamp() + 86400, tz=UTC)
    start = now.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
    following = (
        start.replace(year=start.year + 1, month=1) if start.month == 12 else start.replace(month=start.month + 1)
    )
    return start, following


class GatewayKey(BaseModel):
    """A key as stored and listed: never the key itself, nor its hash."""

    id: str
    name: str
    owner: str | None = Field(default=None, description="Who the key is for: free text for now (a person or a team).")
    prefix: str = Field(description="The key's first characters, to recognise it (sk-cnd-AbCd...).")
    models: list[str] | None = Field(
        default=None,
        description="Allowed models: 'provider' (any of its models), 'provider/model', or 'auto'. None: any.",
    )
    rpm: int | None = Field(default=None, description="Requests per minute (a moving window), across replicas.")
    tpm: int | None = Field(default=None, description="Tokens (input + output) per minute, across replicas.")
    budget_usd: float | None = Field(default=None, description="Spend allowed per budget period, in USD.")
    budget_period: BudgetPeriod | None = Field(default=None, description="'day' or 'month' (UTC, calendar).")
    created_at: datetime
    created_by: str
    revoked_at: datetime | None = None

    @property
    def revoked(self) -> bool:
        return self.revoked_at is not None

    def allows(self, provider: str, model: str | None, default_model: str | None = None) -> bool:
        """Whether a request for `provider`/`model` (None: the provider's default) may be sent."""
        if self.models is None:
            return True
        if provider == "auto":
            return "auto" in self.models
        wanted = f"{provider}/{model or default_model or ''}"
        return any(entry == provider or entry == wanted for entry in self.models)


def _key_of(row: Any) -> GatewayKey:
    return GatewayKey(
        id=row.id,
        name=row.name,
        owner=row.owner,
        prefix=row.prefix,
        models=json.loads(row.models) if row.models is not None else None,
        rpm=row.rpm,
        tpm=row.tpm,
        budget_usd=row.budget_usd,
        budget_period=row.budget_period,
        created_at=row.created_at,
        created_by=row.created_by,
        revoked_at=row.revoked_at,
    )


class KeySpend(NamedTuple):
    """What the request log holds for a key since a moment: its attempts, the cost of the
    priced ones, and its answers whose price is unknown (unknown is not free: a budget's
    figure with any of them is a lower bound)."""

    attempts: int
    answers: int  # successful attempts
    cost_usd: float
    unpriced: int  # answers without a known price


class KeyStore:
    """Keys in the request log's database. Thread-safe (one engine, short transactions)."""

    def __init__(self, log: RequestLog) -> None:
        self.log = log
        self.engine = log.engine
        log.require_tables(metadata)

    def create(
        self,
        name: str,
        *,
        owner: str | None = None,
        models: list[str] | None = None,
        rpm: int | None = None,
        tpm: int | None = None,
        budget_usd: float | None = None,
        budget_period: BudgetPeriod | None = None,
        created_by: str = "admin",
    ) -> tuple[GatewayKey, str]:
        """A new key: its record, and the key itself (shown once, never stored)."""
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        now = utcnow()
        row = {
            "id": new_id("key"),
            "name": name,
            "owner": owner,
            "prefix": secret[: len(KEY_PREFIX) + _VISIBLE],
            "secret_hash": hash_key(secret),
            "models": json.dumps(models) if models is not None else None,
            "rpm": rpm,
            "tpm": tpm,
            "budget_usd": budget_usd,
            "budget_period": budget_period if budget_usd is not None else None,
            "created_at": now,
            "created_ts": now.timestamp(),
            "created_by": created_by,
        }
        with self.engine.begin() as conn:
            conn.execute(keys_table.insert().values(**row))
        made = GatewayKey.model_validate({**row, "models": models})
        return made, secret

    def list(self) -> list[GatewayKey]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(keys_table).order_by(keys_table.c.created_ts, keys_table.c.id))
            return [_key_of(row) for row in rows]

    def get(self, key_id: str) -> GatewayKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(keys_table).where(keys_table.c.id == key_id)).first()
        return _key_of(row) if row is not None else None

    def revoke(self, key_id: str) -> GatewayKey | None:
        """Revoke a key (once: a second revocation keeps the first time). None: no such key."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(keys_table)
                .where(keys_table.c.id == key_id, keys_table.c.revoked_at.is_(None))
                .values(revoked_at=now, revoked_ts=now.timestamp())
            )
        return self.get(key_id)

    def by_hash(self) -> dict[str, GatewayKey]:
        """Every key (revoked ones too) by the hash of its secret."""
        with self.engine.connect() as conn:
            return {row.secret_hash: _key_of(row) for row in conn.execute(select(keys_table))}

    def find(self, secret_hash: str) -> GatewayKey | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(keys_table).where(keys_table.c.secret_hash == secret_hash)).first()
        return _key_of(row) if row is not None else None

    def spent_since(self, key_id: str, since: datetime) -> float:
        """What the request log has priced for `key_id`'s attempts since `since` (USD; an
        unknown price counts 0 here: the budget cannot charge what it cannot price)."""
        a = attempts.c
        stmt = select(func.coalesce(func.sum(a.cost_usd), 0.0)).where(
            a.key_id == key_id, a.created_ts >= since.timestamp()
        )
        self.log.flush()  # this process's own queued rows first
        with self.engine.connect() as conn:
            return float(conn.execute(stmt).scalar() or 0.0)

    def spend(self, key_id: str, since: datetime) -> KeySpend:
        """`key_id`'s attempts since `since`, what the priced ones cost, and how many of its
        answers (successful attempts) have no known price, as the Dashboard counts them."""
        a = attempts.c
        ok = case((a.status == "ok", 1), else_=0)
        unpriced = case((and_(a.status == "ok", a.cost_usd.is_(None)), 1), else_=0)
        stmt = select(
            func.count(),
            func.coalesce(func.sum(ok), 0),
            func.coalesce(func.sum(a.cost_usd), 0.0),
            func.coalesce(func.sum(unpriced), 0),
        ).where(a.key_id == key_id, a.created_ts >= since.timestamp())
        self.log.flush()  # this process's own queued rows first
        with self.engine.connect() as conn:
            count, answers, cost, unknown = conn.execute(stmt).one()
        return KeySpend(int(count), int(answers), float(cost), int(unknown))


class KeyRing:
    """This process's view of every key, refreshed from the database by a daemon thread every
    `refresh_s`. `get` never waits on the database; `find` (a miss) may, off the event loop."""

    def __init__(self, store: KeyStore, *, refresh_s: float = 0.25) -> None:
        self.store = store
        self.refresh_s = refresh_s
        self.refreshes = 0  # completed reads of the whole table (tests count them instead of timing)
        self._keys: dict[str, GatewayKey] = {}
        self._unknown: set[str] = set()
        self._stop = threading.Event()
        self._refresh()
        self._thread = threading.Thread(target=self._run, name="conductor-key-ring", daemon=True)
        self._thread.start()

    def get(self, secret_hash: str) -> GatewayKey | None:
        return self._keys.get(secret_hash)

    def find(self, secret_hash: str) -> GatewayKey | None:
        """A key this view does not hold yet (made in another process since the last refresh),
        from the database; one unknown until the next refresh is not looked up again."""
        found = self._keys.get(secret_hash)
        if found is not None or secret_hash in self._unknown:
            return found
        found = self.store.find(secret_hash)
        if found is None:
            self._unknown.add(secret_hash)
        else:
            self._keys = {**self._keys, secret_hash: found}
        return found

    def changed(self) -> None:
        """A key this process made or revoked: seen here at once (the whole table read again)."""
        self._refresh()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2)

    def _refresh(self) -> None:
        self._keys = self.store.by_hash()
        self._unknown = set()
        self.refreshes += 1

    def _run(self) -> None:
        while not self._stop.wait(self.refresh_s):
            try:
                self._refresh()
            except Exception:
                log.warning("could not refresh gateway keys; using the last view", exc_info=True)
                time.sleep(self.refresh_s)
