"""The request log's tables and column types (what the code expects; the migrations in
``migrations/`` create them, see migrate.py).

Timestamps are stored twice: ``created_at`` (timezone-aware, exact, for people and round
trips) and ``created_ts`` (float epoch seconds), which every range filter, ordering and
bucket uses because it is fast to compare and portable across SQLite and PostgreSQL.

Every string column is `SafeString`/`SafeText`: any text a caller sends is stored. PostgreSQL
cannot hold NUL in text, so there NUL is stored as U+2400 (the visible symbol for NUL; the
one change to the text, on that backend only); a lone UTF-16 surrogate (valid in JSON and in
a Python string, but not encodable as UTF-8, so refused by both drivers) becomes U+FFFD.

A change to a table here is not enough: add a migration (README, "Adding a migration");
tests/test_migrations.py fails until the migrations build what these tables describe.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)

from ..models import AttemptRecord
from . import rollup_rules

__all__ = [
    "AGGREGATE_COLUMNS",
    "FRAME_COLUMNS",
    "ROLLUP_S",
    "SafeString",
    "SafeText",
    "UTCDateTime",
    "attempt_rollups",
    "attempts",
    "metadata",
    "normalize_database_url",
    "votes_table",
]

# Columns `frame()` returns by default: what charts need, none of the free text.
FRAME_COLUMNS: tuple[str, ...] = (
    "created_at",
    "provider",
    "model",
    "route",
    "status",
    "error_type",
    "latency_ms",
    "ttft_ms",
    "input_tokens",
    "output_tokens",
    "cost_usd",
    "source",
)

AGGREGATE_COLUMNS: tuple[str, ...] = (
    "provider",
    "bucket",
    "requests",  # attempts, retries and fallbacks included
    "first_attempts",  # requests: attempts with attempt_index 0 (or unknown)
    "ok",
    "errors",
    "incomplete",
    "not_at_fault",  # failures the request caused or a person chose (errors.NOT_PROVIDER_FAULTS)
    "priced",  # attempts with a known cost
    "mean_latency_ms",  # over successful attempts with a latency...
    "latency_n",  # ...this many
    "mean_ttft_ms",  # over successful attempts with a time to first token...
    "ttft_n",  # ...this many
    "generation_tokens",  # tokens after the first of streamed successes, and the seconds
    "generation_s",  # spent generating them (latency - ttft): their ratio is tokens per second
    "cost_usd",
    "input_tokens",
    "output_tokens",
)

ATTEMPT_FIELDS: tuple[str, ...] = tuple(AttemptRecord.model_fields)


def default_data_dir() -> Path:
    # Same default as Settings.data_dir; repeated so the store works without Settings.
    return Path.home() / ".local" / "share" / "conductor"


def as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (that is how we store them in SQLite)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def epoch(value: datetime) -> float:
    return as_utc(value).timestamp()


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 here (psycopg2 is not installed)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


# --- column types ------------------------------------------------------------------------


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime on every backend: SQLite keeps no offset, so values are
    converted to UTC on the way in and marked UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)


def storable_text(value: str, dialect_name: str) -> str:
    """`value` as the database can hold it (see the module docstring)."""
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            # Lone surrogates: through UTF-16, where a pair that belongs together joins up
            # again and a lone half becomes U+FFFD.
            value = value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if dialect_name == "postgresql" and "\x00" in value:
        value = value.replace("\x00", "\u2400")
    return value


class SafeText(TypeDecorator[str]):
    """Free text that any caller may send. PostgreSQL's text types cannot hold NUL, so there
    a NUL is stored as U+2400 (the visible symbol for NUL) instead of failing the insert;
    lone surrogates, which no UTF-8 driver accepts, become U+FFFD on every backend."""

    impl: String = Text()  # typed as String, which SafeString below uses
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        return None if value is None else storable_text(value, dialect.name)


class SafeString(SafeText):
    """`SafeText` for short labels and ids: String() without a length, i.e. VARCHAR on
    PostgreSQL (no limit to overflow) and TEXT affinity on SQLite."""

    impl = String()
    cache_ok = True


# --- tables ------------------------------------------------------------------------------

metadata = MetaData()

attempts = Table(
    "attempts",
    metadata,
    Column("id", SafeString(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("request_id", SafeString(), nullable=False),
    Column("provider", SafeString(), nullable=False),
    Column("model", SafeString()),
    Column("route", SafeString(), nullable=False),
    Column("group_id", SafeString()),
    Column("source", SafeString(), nullable=False),
    Column("streamed", Boolean(), nullable=False),
    Column("status", SafeString(), nullable=False),
    Column("error_type", SafeString()),
    Column("error_message", SafeText()),
    Column("input_tokens", Integer(), nullable=False),
    Column("output_tokens", Integer(), nullable=False),
    Column("latency_ms", Double()),
    Column("ttft_ms", Double()),
    Column("cost_usd", Double()),
    Column("prompt", SafeText()),
    Column("answer", SafeText()),
    # Position of this logged attempt within its request: 0 the first, retries and fallbacks 1, 2...
    Column("attempt_index", Integer()),
    # Time Conductor itself spent on the request, the upstream's time excluded.
    Column("overhead_ms", Double()),
    # The gateway key the request was made with (conductor_core/keys); NULL: the admin key or no gateway.
    Column("key_id", SafeString()),
    # Range filters, ordering and buckets all go through created_ts (see module docstring).
    Index("ix_attempts_created_ts", "created_ts"),
    Index("ix_attempts_provider_created_ts", "provider", "created_ts"),
    Index("ix_attempts_key_id_created_ts", "key_id", "created_ts"),  # a key's spend in its budget period
)

votes_table = Table(
    "votes",
    metadata,
    Column("id", SafeString(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("group_id", SafeString(), nullable=False),
    Column("targets", SafeText(), nullable=False),  # JSON array of target labels
    Column("winner", SafeString(), nullable=False),
    Index("ix_votes_created_ts", "created_ts"),
    Index("ix_votes_group_id", "group_id"),
)

# One row per provider and minute, summing the attempts of that minute: what the dashboard
# and status read, so a 1M-row log costs them minutes, not rows. Every insert into
# `attempts` updates it in the same transaction (all or nothing); `ROLLUP_SUMS` below (the
# current rule of rollup_rules.py) is the one definition of each sum, used both there and to
# rebuild it (see rollups.py).
ROLLUP_S = rollup_rules.ROLLUP_S
attempt_rollups = Table(
    "attempt_rollups",
    metadata,
    Column("provider", SafeString(), primary_key=True),
    Column("bucket_ts", Double(), primary_key=True),  # start of the minute, epoch seconds
    Column("requests", Integer(), nullable=False),  # attempts
    Column("ok", Integer(), nullable=False),
    Column("errors", Integer(), nullable=False),
    Column("incomplete", Integer(), nullable=False),
    Column("not_at_fault", Integer(), nullable=False, server_default="0"),
    Column("priced", Integer(), nullable=False),
    Column("latency_sum_ms", Double(), nullable=False),
    Column("latency_n", Integer(), nullable=False),
    Column("ttft_sum_ms", Double(), nullable=False),
    Column("ttft_n", Integer(), nullable=False),
    Column("generation_tokens", Integer(), nullable=False),
    Column("generation_s", Double(), nullable=False),
    Column("cost_usd", Double(), nullable=False),  # unknown costs count as 0
    Column("input_tokens", Integer(), nullable=False),
    Column("output_tokens", Integer(), nullable=False),
    Column("first_attempts", Integer(), nullable=False, server_default="0"),  # requests
)

ROLLUP_SUMS = rollup_rules.sums(attempts.c)
