"""The request log: every attempt at every provider, and every compare vote.

A SQLite file under ``data_dir`` by default (nothing to install or start), PostgreSQL when
``database_url`` says so (several processes, one shared history). SQLAlchemy 2 Core only:
the rows are flat and the hot paths (write, dashboard reads) want no ORM overhead.

Promises kept here:

* ``write()`` never raises. A request must not fail because its log line could not be
  written (disk full, database down, file locked): the failure is counted, kept and logged.
* No key reaches the disk: free text (error messages, prompts, answers) goes through
  ``redact()`` before it is written, and again on export in case an older row slipped by.
* Dashboard reads are bounded: ``aggregate()``, ``count()`` and ``provider_totals()`` read
  per-minute, per-provider rollups (``attempt_rollups``), kept in the same transaction as
  every insert, so their cost follows the minutes in the window, not the rows in the log.

Timestamps are stored twice: ``created_at`` (timezone-aware, exact, for people and
round trips) and ``created_ts`` (float epoch seconds), which every range filter, ordering
and bucket uses because it is fast to compare and portable across SQLite and PostgreSQL.
"""

from __future__ import annotations

import csv
import io
import json
import atexit
import logging
import queue
import threading
import weakref
import time
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    DateTime,
    Double,
    Engine,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    bindparam,
    case,
    cast,
    create_engine,
    event,
    func,
    insert,
    literal_column,
    select,
    text,
    union_all,
)
from sqlalchemy.engine import URL, make_url
from sqlalchemy.schema import CreateIndex, CreateTable
from sqlalchemy.sql.elements import ColumnElement

from .config import redact
from .models import AttemptRecord, ProviderUsage, Vote

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from .config import Settings

__all__ = ["RequestLog", "FRAME_COLUMNS", "AGGREGATE_COLUMNS", "normalize_database_url", "UTCDateTime", "SafeText"]

log = logging.getLogger("conductor.store")

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
    "requests",
    "ok",
    "errors",
    "incomplete",
    "priced",  # attempts with a known cost
    "mean_latency_ms",  # over successful attempts with a latency...
    "latency_n",  # ...this many
    "mean_ttft_ms",  # over successful attempts with a time to first token...
    "ttft_n",  # ...this many
    "generation_tokens",  # output tokens of streamed successes, and the seconds spent
    "generation_s",  # generating them (latency - ttft): their ratio is tokens per second
    "cost_usd",
    "input_tokens",
    "output_tokens",
)

_ATTEMPT_FIELDS: tuple[str, ...] = tuple(AttemptRecord.model_fields)
_REDACTED_FIELDS = ("error_message", "prompt", "answer")
_LABEL_COLUMNS = {"provider", "model", "route", "status", "error_type", "source"}

# SQLite: how long a writer waits for the file lock before "database is locked", and how
# often write() retries on top of that. Twenty threads writing at once queue up well
# inside the timeout (each insert holds the lock for well under a millisecond); the retry
# covers the rare busy error the timeout does not (a connection opening while another
# switches the journal mode). Kept short: write() runs on the request path.
_SQLITE_BUSY_TIMEOUT_MS = 5_000
_WRITE_ATTEMPTS = 4
# Ids bound in one rollup update: PostgreSQL's protocol takes at most 65,535 parameters a
# statement, SQLite builds from 32,766 up.
_IDS_PER_STATEMENT = 10_000
# frame() reads in chunks of this many rows (bounded extra memory, same speed).
_FETCH_CHUNK_ROWS = 50_000
# A key for pg_advisory_xact_lock so processes starting at once create tables in turn
# (CREATE TABLE IF NOT EXISTS alone races in PostgreSQL's catalog).
_PG_SCHEMA_LOCK_KEY = 0x436F6E64  # "Cond"


def _default_data_dir() -> Path:
    # Same default as Settings.data_dir; repeated so the store works without Settings.
    return Path.home() / ".local" / "share" / "conductor"


def _as_utc(value: datetime) -> datetime:
    """Naive datetimes are taken to be UTC (that is how we store them in SQLite)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=timezone.utc)
    return value.astimezone(timezone.utc)


def _epoch(value: datetime) -> float:
    return _as_utc(value).timestamp()


class UTCDateTime(TypeDecorator[datetime]):
    """A timezone-aware datetime on every backend: SQLite keeps no offset, so values are
    converted to UTC on the way in and marked UTC on the way out."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _as_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else _as_utc(value)


class SafeText(TypeDecorator[str]):
    """Free text that any caller may send. PostgreSQL's text types cannot hold NUL, so there
    a NUL is stored as U+2400 (the visible symbol for NUL) instead of failing the insert."""

    impl = Text()
    cache_ok = True

    def process_bind_param(self, value: str | None, dialect: Any) -> str | None:
        if value is not None and dialect.name == "postgresql" and "\x00" in value:
            return value.replace("\x00", "\u2400")
        return value


metadata = MetaData()

# String() without a length: VARCHAR on PostgreSQL (no limit to overflow), TEXT affinity on SQLite.
attempts = Table(
    "attempts",
    metadata,
    Column("id", String(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("request_id", String(), nullable=False),
    Column("provider", String(), nullable=False),
    Column("model", String()),
    Column("route", String(), nullable=False),
    Column("group_id", String()),
    Column("source", String(), nullable=False),
    Column("streamed", Boolean(), nullable=False),
    Column("status", String(), nullable=False),
    Column("error_type", String()),
    Column("error_message", Text()),
    Column("input_tokens", Integer(), nullable=False),
    Column("output_tokens", Integer(), nullable=False),
    Column("latency_ms", Double()),
    Column("ttft_ms", Double()),
    Column("cost_usd", Double()),
    Column("prompt", Text()),
    Column("answer", Text()),
    # Range filters, ordering and buckets all go through created_ts (see module docstring).
    Index("ix_attempts_created_ts", "created_ts"),
    Index("ix_attempts_provider_created_ts", "provider", "created_ts"),
)

votes_table = Table(
    "votes",
    metadata,
    Column("id", String(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("group_id", String(), nullable=False),
    Column("targets", Text(), nullable=False),  # JSON array of target labels
    Column("winner", String(), nullable=False),
    Index("ix_votes_created_ts", "created_ts"),
    Index("ix_votes_group_id", "group_id"),
)

# One row per provider and minute, summing the attempts of that minute: what the dashboard
# and status read, so a 1M-row log costs them minutes, not rows. Every insert into
# `attempts` updates it in the same transaction (all or nothing); `_ROLLUP_SUMS` below is
# the one definition of each sum, used both there and to rebuild it.
ROLLUP_S = 60
attempt_rollups = Table(
    "attempt_rollups",
    metadata,
    Column("provider", String(), primary_key=True),
    Column("bucket_ts", Double(), primary_key=True),  # start of the minute, epoch seconds
    Column("requests", Integer(), nullable=False),
    Column("ok", Integer(), nullable=False),
    Column("errors", Integer(), nullable=False),
    Column("incomplete", Integer(), nullable=False),
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
)


def _rollup_sums() -> dict[str, ColumnElement[Any]]:
    """Each rollup column as a per-attempt SQL expression (summed per provider and minute)."""
    a = attempts.c
    ok = a.status == "ok"
    timed = ok & a.latency_ms.is_not(None)
    first = ok & a.ttft_ms.is_not(None)
    # Tokens per second is over streamed successes: output tokens over the time after the
    # first token (the same rule as dashboard_data.series_from_frame).
    generating = timed & first & (a.latency_ms > a.ttft_ms) & (a.output_tokens > 0)
    return {
        "requests": literal_column("1"),
        "ok": case((ok, 1), else_=0),
        "errors": case((a.status == "error", 1), else_=0),
        "incomplete": case((a.status == "incomplete", 1), else_=0),
        "priced": case((a.cost_usd.is_not(None), 1), else_=0),
        "latency_sum_ms": case((timed, a.latency_ms), else_=0.0),
        "latency_n": case((timed, 1), else_=0),
        "ttft_sum_ms": case((first, a.ttft_ms), else_=0.0),
        "ttft_n": case((first, 1), else_=0),
        "generation_tokens": case((generating, a.output_tokens), else_=0),
        "generation_s": case((generating, (a.latency_ms - a.ttft_ms) / 1000.0), else_=0.0),
        "cost_usd": func.coalesce(a.cost_usd, 0.0),
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
    }


_ROLLUP_SUMS = _rollup_sums()
_STATUS_COLUMN = {"ok": "ok", "error": "errors", "incomplete": "incomplete"}


_STOP = object()  # tells a writer thread to finish
_BATCH = 500  # most attempts in one background transaction
_open_logs: weakref.WeakSet[RequestLog] = weakref.WeakSet()


@atexit.register
def _flush_open_logs() -> None:
    # Attempts submitted just before the process exits are written, not dropped.
    for log in list(_open_logs):
        log.flush(timeout=10)


def _create_tables(conn: Any, tables: MetaData) -> None:
    """CREATE TABLE/INDEX IF NOT EXISTS for `tables`, in `conn`'s transaction. On PostgreSQL
    an advisory lock makes processes starting at once take turns (IF NOT EXISTS alone races
    in the catalog)."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_SCHEMA_LOCK_KEY})
    for table in tables.sorted_tables:
        conn.execute(CreateTable(table, if_not_exists=True))
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            conn.execute(CreateIndex(index, if_not_exists=True))


def normalize_database_url(url: str) -> str:
    """``postgres://`` and ``postgresql://`` mean psycopg 3 here (psycopg2 is not installed)."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def _is_transient(exc: BaseException) -> bool:
    message = str(getattr(exc, "orig", None) or exc).lower()
    # "deadlock detected": two PostgreSQL transactions updating the same rollup rows; one is
    # aborted and can simply run again.
    return any(word in message for word in ("database is locked", "database table is locked", "busy", "deadlock detected"))


def _is_schema_race(exc: BaseException) -> bool:
    message = str(getattr(exc, "orig", None) or exc).lower()
    return _is_transient(exc) or "already exists" in message or "duplicate key" in message


class RequestLog:
    """The persistent request log. Thread-safe: share one instance per process."""

    #: How long the background writer lets attempts gather before it writes them as one
    #: batch. A batch costs ~0.5 ms of Python in the writer thread (which competes with
    #: request threads for the GIL) plus ~0.1 ms a row: fewer, bigger batches keep it off
    #: the requests' way (measured: 0.5 s instead of 0.05 s took ~0.15 ms off Conductor's
    #: added p50). Reads in this process cut the wait short (`flush`); other processes
    #: (a dashboard refreshing every 2 s) see rows at most this much later.
    linger_s = 0.5

    def __init__(self, url: str | None = None, *, data_dir: Path | None = None, log_prompts: bool = True) -> None:
        self.log_prompts = log_prompts
        self.write_errors = 0
        self.last_write_error: str | None = None
        self._sqlite_dir: Path | None = None
        if url is None:
            directory = Path(data_dir) if data_dir is not None else _default_data_dir()
            self._sqlite_dir = directory
            self._url: URL = URL.create("sqlite+pysqlite", database=str(directory / "conductor.db"))
        else:
            self._url = make_url(normalize_database_url(url))
            if self._url.get_backend_name() == "sqlite" and self._url.database not in (None, "", ":memory:"):
                self._sqlite_dir = Path(self._url.database).parent
        self._engine = self._create_engine(self._url)
        self._ready = False
        self._ready_lock = threading.Lock()
        self._counter_lock = threading.Lock()
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._pending_cond = threading.Condition()
        self._writer: threading.Thread | None = None
        self._cut_short = threading.Event()  # set by flush(): stop lingering, write now
        self._upsert: Any = None

    @classmethod
    def from_settings(cls, settings: Settings) -> RequestLog:
        return cls(settings.database_url, data_dir=settings.data_dir, log_prompts=settings.log_prompts)

    def __repr__(self) -> str:
        return f"RequestLog({self.url!r}, log_prompts={self.log_prompts})"

    @property
    def url(self) -> str:
        """The database URL with its password hidden (safe to show or log)."""
        return self._url.render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return self._engine.dialect.name

    @property
    def engine(self) -> Engine:
        """The database engine, for modules that keep their own tables next to the log
        (sessions, experiments): one database, one connection pool. Call `ensure_tables`
        with their MetaData before first use."""
        return self._engine

    def ensure_tables(self, extra: MetaData) -> None:
        """Create another module's tables in this database (if missing), with the same care
        as the log's own: IF NOT EXISTS, an advisory lock on PostgreSQL, retried races."""
        self._ensure_schema()
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                with self._engine.begin() as conn:
                    _create_tables(conn, extra)
                return
            except Exception as exc:
                if attempt == _WRITE_ATTEMPTS - 1 or not _is_schema_race(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    # --- engine and schema -----------------------------------------------------------------

    @staticmethod
    def _create_engine(url: URL) -> Engine:
        # hide_parameters: a failed INSERT must not put prompt text into an exception message.
        if url.get_backend_name() == "sqlite":
            engine = create_engine(
                url,
                hide_parameters=True,
                # Many threads share the pool; each connection is used by one thread at a time.
                connect_args={"check_same_thread": False, "timeout": _SQLITE_BUSY_TIMEOUT_MS / 1000},
            )

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                try:
                    # busy_timeout first: switching to WAL itself may have to wait for a lock.
                    cursor.execute(f"PRAGMA busy_timeout={_SQLITE_BUSY_TIMEOUT_MS}")
                    # WAL: readers (the dashboard) never block writers (the router), and
                    # several processes can share the file. NORMAL is durable enough in WAL.
                    cursor.execute("PRAGMA journal_mode=WAL")
                    cursor.execute("PRAGMA synchronous=NORMAL")
                finally:
                    cursor.close()

            return engine
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
            # write() runs on the request path: an unreachable database must cost seconds, not minutes.
            connect_args["connect_timeout"] = 5
        # pre_ping: after a database restart the first write gets a fresh connection, not an error.
        return create_engine(url, hide_parameters=True, pool_pre_ping=True, connect_args=connect_args)

    def _ensure_schema(self) -> None:
        """Create directory and tables on first use. Safe when several processes start at once:
        IF NOT EXISTS on both backends, plus an advisory lock on PostgreSQL."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            if self._closed:
                raise RuntimeError("the request log is closed")
            if self._sqlite_dir is not None:
                self._sqlite_dir.mkdir(parents=True, exist_ok=True)
            for attempt in range(_WRITE_ATTEMPTS):
                try:
                    with self._engine.begin() as conn:
                        _create_tables(conn, metadata)
                        if self._rollups_missing(conn):
                            # A log written before rollups existed: build them once, here,
                            # inside the same lock/transaction, so no process counts twice.
                            self._fill_rollups(conn)
                    break
                except Exception as exc:
                    # Another process won a race the statements above could not prevent (a
                    # locked SQLite file, a catalog conflict): the next round finds the tables.
                    # Anything else (database down) fails at once: write() is on the request path.
                    if attempt == _WRITE_ATTEMPTS - 1 or not _is_schema_race(exc):
                        raise
                    time.sleep(0.05 * (attempt + 1))
            self._ready = True

    # --- rollups ---------------------------------------------------------------------------

    def _rollup_select(self, *where: ColumnElement[bool]) -> Any:
        """Rollup rows for the attempts matching `where`, in key order (so PostgreSQL
        transactions updating the same rows lock them in one order and cannot deadlock)."""
        minute = self._bucket(ROLLUP_S)
        return (
            select(attempts.c.provider, minute.label("bucket_ts"), *(func.sum(expr).label(name) for name, expr in _ROLLUP_SUMS.items()))
            .where(*where)
            .group_by(attempts.c.provider, minute)
            .order_by(attempts.c.provider, minute)
        )

    def _rollup_upsert(self) -> Any:
        """Add the rollups of the attempts whose ids are bound as `ids` (built once: building
        the statement costs more than running it)."""
        if self._upsert is None:
            if self.dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            else:
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            rows = self._rollup_select(attempts.c.id.in_(bindparam("ids", expanding=True)))
            stmt = dialect_insert(attempt_rollups).from_select(["provider", "bucket_ts", *_ROLLUP_SUMS], rows)
            self._upsert = stmt.on_conflict_do_update(
                index_elements=[attempt_rollups.c.provider, attempt_rollups.c.bucket_ts],
                set_={name: attempt_rollups.c[name] + stmt.excluded[name] for name in _ROLLUP_SUMS},
            )
        return self._upsert

    def _rollups_missing(self, conn: Any) -> bool:
        has_rollup = conn.execute(select(literal_column("1")).select_from(attempt_rollups).limit(1)).first()
        return has_rollup is None and conn.execute(select(literal_column("1")).select_from(attempts).limit(1)).first() is not None

    def _fill_rollups(self, conn: Any) -> None:
        conn.execute(attempt_rollups.delete())
        conn.execute(insert(attempt_rollups).from_select(["provider", "bucket_ts", *_ROLLUP_SUMS], self._rollup_select()))

    def rebuild_rollups(self) -> None:
        """Recompute every rollup from the attempts (after rows were loaded into `attempts`
        by other means than this class, e.g. a bulk import with the database's own tools)."""
        self.flush()
        self._ensure_schema()
        with self._engine.begin() as conn:
            self._fill_rollups(conn)

    # --- writing ---------------------------------------------------------------------------

    def write(self, record: AttemptRecord) -> bool:
        """Insert one attempt. Never raises: returns False and counts the failure instead."""
        try:
            row = self._attempt_row(record)
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            return self._failed(f"attempt {record.id}", exc)
        return self._insert(attempts, [row], f"attempt {record.id}")

    def write_many(self, records: Iterable[AttemptRecord], *, quiet: bool = False) -> int:
        """Insert many attempts in one transaction (imports, benchmarks): all or nothing.
        Same redaction and failure policy as `write()`; returns how many rows were written.
        `quiet`: a failure is not counted (the caller retries row by row and counts those)."""
        try:
            rows = [self._attempt_row(record) for record in records]
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            if not quiet:
                self._failed("attempts", exc)
            return 0
        if not rows:
            return 0
        return len(rows) if self._insert(attempts, rows, f"{len(rows)} attempts", quiet=quiet) else 0

    def write_vote(self, vote: Vote) -> bool:
        """Insert one compare vote. Same failure policy as `write()`."""
        row = {
            "id": vote.id,
            "created_at": vote.created_at,
            "created_ts": _epoch(vote.created_at),
            "group_id": vote.group_id,
            "targets": json.dumps(list(vote.targets)),
            "winner": vote.winner,
        }
        return self._insert(votes_table, [row], f"vote {vote.id}")

    # --- writing off the request path ----------------------------------------------------

    def submit(self, record: AttemptRecord) -> None:
        """Queue one attempt for the background writer and return at once. This is the
        router's path: a database commit costs more than everything else Conductor does for
        a request. Records are inserted in batches; reads in this process flush first, so
        they see their own writes; a failed insert is counted exactly as `write()` counts it."""
        with self._pending_cond:
            self._pending += 1
            if self._writer is None:
                self._writer = threading.Thread(target=self._drain, name="request-log-writer", daemon=True)
                self._writer.start()
                _open_logs.add(self)
        self._queue.put(record)

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every submitted attempt is written (or counted as failed)."""
        self._cut_short.set()
        with self._pending_cond:
            return self._pending_cond.wait_for(lambda: self._pending == 0, timeout)

    def _drain(self) -> None:
        while True:
            batch = [self._queue.get()]
            if batch[0] is not _STOP:
                # Let a batch gather: one transaction (and one wake-up of this thread, which
                # competes with request threads for the GIL) per batch, not per attempt.
                self._cut_short.wait(self.linger_s)
                self._cut_short.clear()
            while len(batch) < _BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [item for item in batch if item is not _STOP]
            if records:
                self._write_batch(records)
                with self._pending_cond:
                    self._pending -= len(records)
                    self._pending_cond.notify_all()
            if len(records) != len(batch):
                return

    def _write_batch(self, records: list[AttemptRecord]) -> None:
        if len(records) == 1 or not self.write_many(records, quiet=True):
            for record in records:  # one bad row must not lose its batch: each counts its own failure
                self.write(record)

    def _attempt_row(self, record: AttemptRecord) -> dict[str, Any]:
        row = record.model_dump()
        row["created_ts"] = _epoch(record.created_at)
        if not self.log_prompts:
            row["prompt"] = None
            row["answer"] = None
        for name in _REDACTED_FIELDS:
            if row[name] is not None:
                row[name] = redact(row[name])
        return row

    def _insert(self, table: Table, rows: list[dict[str, Any]], what: str, *, quiet: bool = False) -> bool:
        if self._closed:
            return False if quiet else self._failed(what, RuntimeError("the request log is closed"))
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                self._ensure_schema()
                with self._engine.begin() as conn:
                    conn.execute(insert(table), rows[0] if len(rows) == 1 else rows)
                    if table is attempts:  # the rollups move with the rows, or neither does
                        ids = [row["id"] for row in rows]
                        for at in range(0, len(ids), _IDS_PER_STATEMENT):
                            conn.execute(self._rollup_upsert(), {"ids": ids[at : at + _IDS_PER_STATEMENT]})
                return True
            except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
                if attempt < _WRITE_ATTEMPTS - 1 and _is_transient(exc):
                    time.sleep(0.02 * 2**attempt)  # a locked SQLite file frees up within milliseconds
                    continue
                return False if quiet else self._failed(what, exc)
        return False  # not reached: the last round returns from the except clause

    def _failed(self, what: str, exc: BaseException) -> bool:
        message = self._describe(exc)
        with self._counter_lock:
            self.write_errors += 1
            self.last_write_error = message
        log.warning("request log: could not write %s to %s: %s", what, self.url, message)
        return False

    def _describe(self, exc: BaseException) -> str:
        # The driver's own message (SQLAlchemy's wrapper adds the SQL text), one line, no secrets.
        original = getattr(exc, "orig", None) or exc
        first_line = (str(original).strip().splitlines() or [""])[0]
        message = f"{type(original).__name__}: {first_line}"[:500]
        if self._url.password:
            message = message.replace(str(self._url.password), "***")
        return redact(message)

    # --- reading ---------------------------------------------------------------------------
    # Reads raise on failure (unlike writes): a dashboard should say the log is unreachable,
    # not show an empty chart.

    @staticmethod
    def _range(
        table: Table, since: datetime | None, until: datetime | None
    ) -> list[ColumnElement[bool]]:
        where: list[ColumnElement[bool]] = []
        if since is not None:
            where.append(table.c.created_ts >= _epoch(since))
        if until is not None:
            where.append(table.c.created_ts < _epoch(until))
        return where

    def _filters(
        self,
        since: datetime | None,
        until: datetime | None,
        provider: str | None,
        status: str | None,
    ) -> list[ColumnElement[bool]]:
        where = self._range(attempts, since, until)
        if provider is not None:
            where.append(attempts.c.provider == provider)
        if status is not None:
            where.append(attempts.c.status == status)
        return where

    def records(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> list[AttemptRecord]:
        """Attempts newest first. `since` is inclusive, `until` exclusive."""
        self.flush()
        self._ensure_schema()
        columns = [attempts.c[name] for name in _ATTEMPT_FIELDS]
        stmt = (
            select(*columns)
            .where(*self._filters(since, until, provider, status))
            .order_by(attempts.c.created_ts.desc(), attempts.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [AttemptRecord.model_validate(dict(row)) for row in rows]

    def count(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> int:
        """How many attempts match (at most `limit`, to mirror `records()`)."""
        self.flush()
        self._ensure_schema()
        if status is not None and status not in _STATUS_COLUMN:
            return 0  # no attempt has any other status
        cells = self._cells(since, until)
        column = cells.c[_STATUS_COLUMN[status] if status is not None else "requests"]
        stmt = select(func.coalesce(func.sum(column), 0))
        if provider is not None:
            stmt = stmt.where(cells.c.provider == provider)
        with self._engine.connect() as conn:
            total = int(conn.execute(stmt).scalar_one())
        return min(total, limit) if limit is not None else total

    def _cells(self, since: datetime | None, until: datetime | None, *, bucket_s: int = ROLLUP_S) -> Any:
        """Sums per provider and `ts` covering exactly [since, until): whole minutes from the
        rollups, the partial minutes at either edge from the attempts themselves (one cell per
        attempt). For buckets that minutes do not divide evenly, every cell is an attempt."""
        start = _epoch(since) if since is not None else None
        end = _epoch(until) if until is not None else None
        whole_from = -(-start // ROLLUP_S) * ROLLUP_S if start is not None else None  # ceil to the minute
        whole_to = end // ROLLUP_S * ROLLUP_S if end is not None else None
        use_rollups = bucket_s % ROLLUP_S == 0 and (whole_from is None or whole_to is None or whole_from <= whole_to)

        def raw(lo: float | None, hi: float | None) -> Any:
            ts = attempts.c.created_ts
            where = ([ts >= lo] if lo is not None else []) + ([ts < hi] if hi is not None else [])
            return select(attempts.c.provider, ts.label("ts"), *(expr.label(name) for name, expr in _ROLLUP_SUMS.items())).where(*where)

        if not use_rollups:
            return raw(start, end).subquery("cells")
        r = attempt_rollups.c
        where = ([r.bucket_ts >= whole_from] if whole_from is not None else []) + ([r.bucket_ts < whole_to] if whole_to is not None else [])
        parts = [select(r.provider, r.bucket_ts.label("ts"), *(r[name] for name in _ROLLUP_SUMS)).where(*where)]
        if start is not None and start < whole_from:
            parts.append(raw(start, whole_from))
        if end is not None and whole_to < end:
            parts.append(raw(whole_to, end))
        return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("cells")

    def frame(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame:
        """Attempts as a DataFrame for dashboards, oldest first (`since` inclusive, `until`
        exclusive). Default columns: `FRAME_COLUMNS`; any attempt field may be asked for.

        dtypes: created_at datetime64[us, UTC]; provider, model, route, status, error_type
        and source are categoricals (few distinct values: small and fast to group by);
        numbers are float64 (None as NaN) or int64.

        For a whole-log overview prefer `aggregate()`: this returns one row per attempt,
        and on SQLite most of its time is the driver turning cells into Python objects."""
        self.flush()
        # Imported here, not at the top: only dashboards need them, and the router (which
        # imports this module in every process) starts faster without pandas.
        import pandas as pd

        self._ensure_schema()
        wanted = list(columns) if columns is not None else list(FRAME_COLUMNS)
        unknown = [name for name in wanted if name not in attempts.c or name == "created_ts"]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; available: {list(_ATTEMPT_FIELDS)}")
        # created_at is read from the float created_ts: parsing SQLite's datetime text for a
        # million rows would cost more than everything else together.
        selected = [attempts.c.created_ts if name == "created_at" else attempts.c[name] for name in wanted]
        if "created_at" not in wanted:
            selected.append(attempts.c.created_ts)  # needed to order the rows
        # No ORDER BY: rows come back in insertion order, which is almost always time order,
        # and checking (or sorting) in numpy is far cheaper than SQLite sorting the rows.
        matrix = self._fetch_matrix(select(*selected).where(*self._range(attempts, since, until)))
        ts_position = wanted.index("created_at") if "created_at" in wanted else len(selected) - 1
        ts = matrix[:, ts_position].astype("float64")
        frame = pd.DataFrame(
            {name: self._frame_column(name, matrix[:, position]) for position, name in enumerate(wanted)},
            columns=wanted,
        )
        if len(ts) > 1 and bool((ts[1:] < ts[:-1]).any()):
            frame = frame.iloc[ts.argsort(kind="stable")].reset_index(drop=True)
        return frame

    @staticmethod
    def _frame_column(name: str, values: np.ndarray) -> Any:
        import numpy as np
        import pandas as pd

        if name == "created_at":
            # Via integer microseconds: a float epoch carries ~0.2 us of noise that would
            # otherwise show up as odd nanoseconds.
            micros = np.round(values.astype("float64") * 1_000_000).astype("int64")
            return pd.to_datetime(micros, unit="us", utc=True)
        if name in _LABEL_COLUMNS:
            # Sorted categories, so sorting or factorizing the column gives alphabetical
            # order; None becomes code -1, i.e. NaN.
            codes, categories = pd.factorize(values, sort=True)
            return pd.Categorical.from_codes(codes, categories=categories)
        column_type = attempts.c[name].type
        if isinstance(column_type, Double):
            return values.astype("float64")  # None becomes NaN
        if isinstance(column_type, Integer):
            return values.astype("int64")
        if isinstance(column_type, Boolean):
            return values.astype("bool")  # SQLite gives 0/1
        return values  # free text and ids stay Python strings

    def _fetch_matrix(self, stmt: Any) -> np.ndarray:
        """Rows of a Core select as a 2-D object array, read from the DBAPI cursor directly.

        SQLAlchemy Row objects and ``pd.read_sql`` cost several times more per row. Chunks
        keep the peak memory near the size of the result instead of twice it."""
        import numpy as np

        width = len(stmt.selected_columns)
        chunks: list[np.ndarray] = []
        for rows in self._fetch_raw_chunks(stmt):
            chunk = np.array(rows, dtype=object)  # about twice as fast as filling np.empty
            if chunk.shape != (len(rows), width):  # a cell numpy took for a sequence: be exact
                chunk = np.empty((len(rows), width), dtype=object)
                chunk[:] = rows
            chunks.append(chunk)
        if not chunks:
            return np.empty((0, width), dtype=object)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _fetch_raw_chunks(self, stmt: Any, size: int = _FETCH_CHUNK_ROWS) -> Iterator[list[tuple[Any, ...]]]:
        """Run a Core select on the DBAPI cursor directly: plain tuples, no Row objects."""
        with self._engine.connect() as conn:
            compiled = stmt.compile(dialect=conn.dialect)
            params = compiled.construct_params()
            if compiled.positional:
                parameters: Any = tuple(params[name] for name in compiled.positiontup or ())
            else:
                parameters = params
            cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
            try:
                cursor.execute(str(compiled), parameters)
                while rows := cursor.fetchmany(size):
                    yield list(rows)
            finally:
                cursor.close()

    def _fetch_raw(self, stmt: Any) -> list[tuple[Any, ...]]:
        return [row for rows in self._fetch_raw_chunks(stmt) for row in rows]

    def _bucket(self, bucket_s: int, ts: ColumnElement[Any] = attempts.c.created_ts) -> ColumnElement[Any]:
        # bucket_s goes in as a literal: with bound parameters PostgreSQL sees the SELECT and
        # GROUP BY expressions as different ($1 vs $2) and rejects the query.
        size: ColumnElement[Any] = literal_column(str(int(bucket_s)))
        if self.dialect == "sqlite":
            # SQLite's floor() exists only in builds with math functions; for positive
            # epochs truncation is floor.
            return cast(ts / size, Integer) * size
        return func.floor(ts / size) * size

    def aggregate(
        self, *, since: datetime | None = None, until: datetime | None = None, bucket_s: int
    ) -> pd.DataFrame:
        """Per provider and time bucket, computed in SQL: at most providers x buckets rows.

        Columns (`AGGREGATE_COLUMNS`): provider, bucket (UTC start of the bucket), requests,
        ok, errors, incomplete, priced, mean_latency_ms and latency_n (over successful
        attempts, like the live metrics), mean_ttft_ms and ttft_n, generation_tokens and
        generation_s (streamed successes: tokens per second is their ratio), cost_usd
        (unknown costs count as 0), input_tokens, output_tokens. Oldest bucket first.
        When `bucket_s` is a whole number of minutes (the dashboard's case) this reads the
        rollups, and costs the same for a thousand rows or a million."""
        self.flush()
        if int(bucket_s) <= 0:
            raise ValueError("bucket_s must be a positive number of seconds")
        import pandas as pd

        self._ensure_schema()
        cells = self._cells(since, until, bucket_s=int(bucket_s))
        bucket = self._bucket(int(bucket_s), cells.c.ts)
        sums = {name: func.sum(cells.c[name]) for name in _ROLLUP_SUMS}
        stmt = select(
            cells.c.provider,
            bucket.label("bucket"),
            *(sums[name] for name in ("requests", "ok", "errors", "incomplete", "priced")),
            sums["latency_sum_ms"] / func.nullif(sums["latency_n"], 0),
            sums["latency_n"],
            sums["ttft_sum_ms"] / func.nullif(sums["ttft_n"], 0),
            *(sums[name] for name in ("ttft_n", "generation_tokens", "generation_s", "cost_usd", "input_tokens", "output_tokens")),
        ).group_by(cells.c.provider, bucket)
        frame = pd.DataFrame(self._fetch_raw(stmt), columns=list(AGGREGATE_COLUMNS))
        frame["bucket"] = pd.to_datetime(frame["bucket"].astype("float64"), unit="s", utc=True)
        for name in ("requests", "ok", "errors", "incomplete", "priced", "latency_n", "ttft_n", "generation_tokens", "input_tokens", "output_tokens"):
            frame[name] = frame[name].fillna(0).astype("int64")  # PostgreSQL sums come back as Decimal
        for name in ("mean_latency_ms", "mean_ttft_ms", "generation_s", "cost_usd"):
            frame[name] = frame[name].astype("float64")
        frame[["generation_s", "cost_usd"]] = frame[["generation_s", "cost_usd"]].fillna(0.0)
        frame["provider"] = frame["provider"].astype(object)
        return frame.sort_values(["bucket", "provider"], kind="stable").reset_index(drop=True)

    def export(
        self,
        fmt: Literal["csv", "json"],
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
    ) -> bytes:
        """The matching attempts (newest first, like `records()`) as CSV with a header, or a
        JSON array of objects with ISO 8601 timestamps. UTF-8."""
        self.flush()
        if fmt not in ("csv", "json"):
            raise ValueError(f"unknown export format {fmt!r}; use 'csv' or 'json'")
        found = self.records(since=since, until=until, provider=provider, status=status, limit=limit)
        rows = [self._export_row(record) for record in found]
        if fmt == "json":
            return json.dumps(rows, ensure_ascii=False).encode("utf-8")
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=list(_ATTEMPT_FIELDS), lineterminator="\n")
        writer.writeheader()
        for row in rows:
            writer.writerow({key: "" if value is None else value for key, value in row.items()})
        return buffer.getvalue().encode("utf-8")

    @staticmethod
    def _export_row(record: AttemptRecord) -> dict[str, Any]:
        row = record.model_dump(mode="json")
        row["created_at"] = record.created_at.isoformat()
        # Redacted on write already; again here for rows written before a key was registered.
        for name in _REDACTED_FIELDS:
            if row[name] is not None:
                row[name] = redact(row[name])
        return row

    def provider_totals(self) -> dict[str, ProviderUsage]:
        """Usage per provider over the whole log, summed from the rollups."""
        self.flush()
        self._ensure_schema()
        r = attempt_rollups.c
        stmt = select(
            r.provider, func.sum(r.requests), func.sum(r.ok), func.sum(r.input_tokens), func.sum(r.output_tokens), func.sum(r.cost_usd)
        ).group_by(r.provider)
        totals: dict[str, ProviderUsage] = {}
        for provider, total, ok, tokens_in, tokens_out, cost in self._fetch_raw(stmt):
            totals[provider] = ProviderUsage(
                total_requests=int(total),
                successful_requests=int(ok or 0),
                failed_requests=int(total) - int(ok or 0),
                input_tokens=int(tokens_in or 0),
                output_tokens=int(tokens_out or 0),
                cost_usd=float(cost or 0.0),
            )
        return totals

    def recent_for_metrics(self, limit_per_provider: int, since: datetime) -> list[AttemptRecord]:
        """The newest `limit_per_provider` attempts of each provider since `since`, oldest
        first, without prompts and answers (metrics never need them). One indexed query per
        provider on (provider, created_ts)."""
        self.flush()
        self._ensure_schema()
        start = _epoch(since)
        fields = [name for name in _ATTEMPT_FIELDS if name not in ("prompt", "answer")]
        columns = [attempts.c[name] for name in fields]
        found: list[AttemptRecord] = []
        with self._engine.connect() as conn:
            providers = conn.execute(
                select(attempts.c.provider).where(attempts.c.created_ts >= start).distinct()
            ).scalars().all()
            for provider in providers:
                stmt = (
                    select(*columns)
                    .where(attempts.c.provider == provider, attempts.c.created_ts >= start)
                    .order_by(attempts.c.created_ts.desc(), attempts.c.id.desc())
                    .limit(limit_per_provider)
                )
                found.extend(AttemptRecord.model_validate(dict(row)) for row in conn.execute(stmt).mappings())
        found.sort(key=lambda record: (record.created_at, record.id))
        return found

    def votes(self, since: datetime | None = None) -> list[Vote]:
        """Compare votes, oldest first (the order a leaderboard replays them in)."""
        self._ensure_schema()
        stmt = (
            select(*(votes_table.c[name] for name in ("id", "created_at", "group_id", "targets", "winner")))
            .where(*self._range(votes_table, since, None))
            .order_by(votes_table.c.created_ts, votes_table.c.id)
        )
        with self._engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [Vote.model_validate({**row, "targets": json.loads(row["targets"])}) for row in rows]

    def close(self) -> None:
        """Write what is queued, then release every connection. Later writes return False (and are counted)."""
        if self._writer is not None and not self._closed:
            self.flush()
            self._queue.put(_STOP)
            self._writer.join(timeout=30)
        self._closed = True
        self._engine.dispose()
