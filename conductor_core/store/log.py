"""`RequestLog`: the one object the rest of Conductor holds. It puts the parts together
(the database, the writer with its spool, the reads, the export) and keeps the public
surface in one place; each part lives in its own module."""

from __future__ import annotations

import atexit
import os
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from sqlalchemy import Engine, MetaData

from ..models import AttemptRecord, ProviderUsage, Vote
from . import rollups
from .database import Database
from .export import Verdicts, export_records
from .reads import NO_KEY, GatewayOverhead, LogReader
from .schema import default_data_dir
from .spool import spool_directory
from .writer import LogHealth, LogWriter

if TYPE_CHECKING:
    import pandas as pd

    from ..config import Settings

__all__ = ["NO_KEY", "RequestLog"]

_open_logs: weakref.WeakSet[RequestLog] = weakref.WeakSet()


@atexit.register
def _flush_open_logs() -> None:
    # Attempts submitted just before the process exits are written, not left to the next start.
    for request_log in list(_open_logs):
        request_log._writer.at_exit()


def _after_fork_in_child() -> None:
    # A server that forks workers after building its Conductor (gunicorn --preload): each
    # worker writes through spool files and connections of its own.
    for request_log in list(_open_logs):
        request_log._db.after_fork()
        request_log._writer.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


class RequestLog:
    """The persistent request log. Thread-safe: share one instance per process.

    `data_dir` holds the SQLite file when no `url` is given, and the spool (see
    ``conductor_core/store/spool.py``) for every database, PostgreSQL included; without it,
    Settings' default (``~/.local/share/conductor``)."""

    def __init__(
        self,
        url: str | None = None,
        *,
        data_dir: Path | None = None,
        log_prompts: bool = True,
        pool_size: int | None = None,
    ) -> None:
        self._db = Database(url, data_dir, pool_size=pool_size)
        spool_dir = None
        if not self._db.in_memory:  # an in-memory database dies with its process: nothing to replay
            spool_dir = spool_directory(
                Path(data_dir) if data_dir is not None else default_data_dir(), self._db.identity
            )
        self._writer = LogWriter(self._db, spool_dir, log_prompts=log_prompts)
        self._reader = LogReader(self._db)
        _open_logs.add(self)

    @classmethod
    def from_settings(cls, settings: Settings, *, pool_size: int | None = None) -> RequestLog:
        """`pool_size`: database connections kept open (None: SQLAlchemy's default, 5)."""
        return cls(
            settings.database_url, data_dir=settings.data_dir, log_prompts=settings.log_prompts, pool_size=pool_size
        )

    def __repr__(self) -> str:
        return f"RequestLog({self.url!r}, log_prompts={self.log_prompts})"

    # --- what the log is -------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The database URL with its password hidden (safe to show or log)."""
        return self._db.safe_url

    @property
    def dialect(self) -> str:
        return self._db.dialect

    @property
    def engine(self) -> Engine:
        """The database engine, for modules that keep their own tables next to the log
        (sessions, experiments): one database, one connection pool. Call `require_tables`
        with their MetaData before first use."""
        return self._db.engine

    def open(self) -> None:
        """Bring the database's schema to this code's now (it happens on first use anyway):
        nothing when it already is, an upgrade in place when it is older (see migrate.py).
        Raises `SchemaError` (what to run, or which release to use) when this code cannot use
        it; an unreachable database raises the driver's error."""
        self._db.ensure_schema()

    def require_tables(self, extra: MetaData) -> None:
        """Check that another module's tables exist in this database, once the migrations ran
        (they create every table, the workbench's too). Raises `SchemaError` naming the ones
        no migration created."""
        self._db.require_tables(extra)

    @property
    def schema_error(self) -> str | None:
        """Why this code cannot use the database (a newer release's, or one whose schema does
        not match), as found on open: what to run or which release to use. None otherwise."""
        return self._db.schema_error

    @property
    def log_prompts(self) -> bool:
        return self._writer.log_prompts

    @log_prompts.setter
    def log_prompts(self, value: bool) -> None:
        self._writer.log_prompts = value

    @property
    def linger_s(self) -> float:
        """How long the background writer lets attempts gather before it writes them as one
        batch (see `LogWriter.linger_s`). Reads in this process cut the wait short."""
        return self._writer.linger_s

    @linger_s.setter
    def linger_s(self, value: float) -> None:
        self._writer.linger_s = value

    @property
    def write_errors(self) -> int:
        """Attempts (and direct writes) that failed at least once, each counted once."""
        return self._writer.write_errors

    @property
    def last_write_error(self) -> str | None:
        """The last write error, one line, redacted."""
        return self._writer.last_write_error

    def health(self) -> LogHealth:
        """Pending, spooled, written, failed and rejected counts and the last error: what a
        status page shows about the log's writing."""
        return self._writer.health()

    # --- writing -------------------------------------------------------------------------

    def submit(self, record: AttemptRecord) -> None:
        """Record one attempt durably and return at once: the router's path. The attempt is
        in the spool (on disk, survives a kill -9) when this returns; the background writer
        commits it in a batch within `linger_s`. Never raises, never waits for the database."""
        self._writer.submit(record)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write what is waiting now (and take over dead processes' spools on first use).
        True once nothing waits; False if the database could not take it or `timeout` passed."""
        return self._writer.flush(timeout)

    def write(self, record: AttemptRecord) -> bool:
        """Insert one attempt now. Never raises: returns False and counts the failure instead."""
        return self._writer.write(record)

    def write_many(self, records: Iterable[AttemptRecord], *, quiet: bool = False) -> int:
        """Insert many attempts in one transaction (imports, benchmarks): all or nothing.
        Same redaction and failure policy as `write()`; returns how many rows were written.
        `quiet`: a failure is not counted (the caller retries row by row and counts those)."""
        return self._writer.write_many(records, quiet=quiet)

    def write_vote(self, vote: Vote) -> bool:
        """Insert one compare vote. Same failure policy as `write()`."""
        return self._writer.write_vote(vote)

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the attempts (after rows were loaded into `attempts`
        by other means than this class, e.g. a bulk import with the database's own tools)."""
        self.flush()
        self._db.ensure_schema()
        with self._db.engine.begin() as conn:
            rollups.fill(conn)

    # --- reading (each flushes first, so this process sees its own writes) -------------------

    def records(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
        key_id: str | None = None,
    ) -> list[AttemptRecord]:
        """Attempts newest first. `since` is inclusive, `until` exclusive. `request_id`: the
        attempts of one request (not indexed: for a person's look-up, not a hot path).
        `key_id`: the attempts made with one gateway key (`NO_KEY`: with none)."""
        self.flush()
        return self._reader.records(
            since=since,
            until=until,
            provider=provider,
            status=status,
            limit=limit,
            request_id=request_id,
            key_id=key_id,
        )

    def count(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        key_id: str | None = None,
    ) -> int:
        """How many attempts match (at most `limit`, to mirror `records()`); requests are
        `aggregate()`'s `first_attempts`. With `key_id` (`NO_KEY`: none) the key's rows are
        counted, not the rollups."""
        self.flush()
        return self._reader.count(
            since=since, until=until, provider=provider, status=status, limit=limit, key_id=key_id
        )

    def frame(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
        key_id: str | None = None,
    ) -> pd.DataFrame:
        """Attempts as a DataFrame for dashboards, oldest first (`since` inclusive, `until`
        exclusive). Default columns: `FRAME_COLUMNS`; any attempt field may be asked for.

        dtypes: created_at datetime64[us, UTC]; provider, model, route, status, error_type
        and source are categoricals (few distinct values: small and fast to group by);
        numbers are float64 (None as NaN) or int64 (float64 for attempt_index, which may be
        None).

        For a whole-log overview prefer `aggregate()`: this returns one row per attempt,
        and on SQLite most of its time is the driver turning cells into Python objects.
        `key_id`: one gateway key's attempts only (`NO_KEY`: those made without one)."""
        self.flush()
        return self._reader.frame(since=since, until=until, columns=columns, key_id=key_id)

    def aggregate(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket_s: int,
        key_id: str | None = None,
    ) -> pd.DataFrame:
        """Per provider and time bucket, computed in SQL: at most providers x buckets rows.

        Columns (`AGGREGATE_COLUMNS`): provider, bucket (UTC start of the bucket), requests
        (attempts, retries and fallbacks included), first_attempts (the requests they belong
        to), ok, errors, incomplete, not_at_fault, priced, mean_latency_ms and latency_n (over successful
        attempts, like the live metrics), mean_ttft_ms and ttft_n, generation_tokens and
        generation_s (streamed successes: tokens per second is their ratio), cost_usd
        (unknown costs count as 0), input_tokens, output_tokens. Oldest bucket first.
        When `bucket_s` is a whole number of minutes (the dashboard's case) this reads the
        rollups, and costs the same for a thousand rows or a million; with `key_id` (one gateway
        key's attempts; `NO_KEY`: those made without one) it sums that key's rows instead."""
        self.flush()
        return self._reader.aggregate(since=since, until=until, bucket_s=bucket_s, key_id=key_id)

    def export(
        self,
        fmt: Literal["csv", "json"],
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        verdicts: Verdicts | None = None,
        key_id: str | None = None,
        key_names: Mapping[str, str] | None = None,
    ) -> bytes:
        """The matching attempts (newest first, like `records()`) as CSV with a header, or a
        JSON array of objects with ISO 8601 timestamps. UTF-8. JSON is exact; in CSV a text
        cell that a spreadsheet would run as a formula gets a leading quote (see export.py).
        `key_id` narrows them to one gateway key's (`NO_KEY`: none); `key_names` (key id ->
        name) adds each row's `key_name` beside its `key_id`."""
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt!r}; use 'csv' or 'json'")
        found = self.records(since=since, until=until, provider=provider, status=status, limit=limit, key_id=key_id)
        return export_records(found, fmt, verdicts=verdicts, key_names=key_names)

    def provider_totals(self) -> dict[str, ProviderUsage]:
        """Usage per provider over the whole log, summed from the rollups. For one provider
        every attempt is a request sent to it: `total_requests` equals `total_attempts`."""
        self.flush()
        return self._reader.provider_totals()

    def usage_totals(self) -> ProviderUsage:
        """Usage over the whole log, from the rollups: `total_requests` counts requests (a
        request's retries and fallbacks once), `total_attempts` every attempt."""
        self.flush()
        return self._reader.usage_totals()

    def recent_for_metrics(self, limit_per_provider: int, since: datetime) -> list[AttemptRecord]:
        """The newest `limit_per_provider` attempts of each provider since `since`, oldest
        first, without prompts and answers (metrics never need them). One indexed query per
        provider on (provider, created_ts)."""
        self.flush()
        return self._reader.recent_for_metrics(limit_per_provider, since)

    def gateway_overhead(self, since: datetime | None = None) -> GatewayOverhead | None:
        """p50/p99 of `x-conductor-overhead-ms` over the gateway's requests since `since` (the
        newest 20,000 attempts at most, by the created_ts index), or None if it has none."""
        self.flush()
        return self._reader.gateway_overhead(since)

    def votes(self, since: datetime | None = None) -> list[Vote]:
        """Compare votes, oldest first (the order a leaderboard replays them in)."""
        return self._reader.votes(since)

    # --- shutdown ---------------------------------------------------------------------------

    def close(self) -> None:
        """Write what is waiting, then release every connection and spool file. What the
        database could not take stays in the spool for the next process that opens it.
        Later writes return False (and are counted)."""
        self._writer.close()
        self._db.dispose()
        _open_logs.discard(self)

    # For code that reached into the old single module (benchmarks create the schema first).
    def _ensure_schema(self) -> None:
        self._db.ensure_schema()
