"""The database behind the log: engine, first-use schema creation (and the rollup
migration), and what a failure means (retry now, back off, or the row itself is refused)."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from ..config import redact
from . import rollups
from .schema import create_tables, default_data_dir, metadata, normalize_database_url

__all__ = ["Database", "LogClosed", "is_missing_table", "is_outage", "is_schema_race", "is_transient"]

# SQLite: how long a writer waits for the file lock before "database is locked", and how
# often a write retries on top of that. Twenty threads writing at once queue up well
# inside the timeout (each insert holds the lock for well under a millisecond); the retry
# covers the rare busy error the timeout does not (a connection opening while another
# switches the journal mode).
SQLITE_BUSY_TIMEOUT_MS = 5_000
WRITE_ATTEMPTS = 4


class LogClosed(RuntimeError):
    """The request log was closed: later writes are counted as failed."""

    def __init__(self) -> None:
        super().__init__("the request log is closed")


def _message(exc: BaseException) -> str:
    return str(getattr(exc, "orig", None) or exc).lower()


def is_transient(exc: BaseException) -> bool:
    """A conflict that clears within milliseconds: run the same statement again."""
    # "deadlock detected": two PostgreSQL transactions updating the same rollup rows; one is
    # aborted and can simply run again.
    return any(
        word in _message(exc)
        for word in ("database is locked", "database table is locked", "busy", "deadlock detected")
    )


def is_missing_table(exc: BaseException) -> bool:
    """The tables are gone (dropped by hand, a SQLite file deleted under a running process):
    create them again and run the same statement."""
    message = _message(exc)
    return "no such table" in message or ("relation" in message and "does not exist" in message)


def is_schema_race(exc: BaseException) -> bool:
    message = _message(exc)
    return is_transient(exc) or "already exists" in message or "duplicate key" in message


def is_outage(exc: BaseException) -> bool:
    """The database cannot take writes right now (unreachable, restarting, disk full, the
    data directory unusable), as opposed to refusing these particular rows: wait and try the
    same rows again later."""
    if isinstance(
        exc,
        (
            sa_exc.OperationalError,
            sa_exc.InterfaceError,
            sa_exc.DisconnectionError,
            sa_exc.TimeoutError,
            OSError,
            LogClosed,
        ),
    ):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and exc.connection_invalidated


class Database:
    """One engine (one connection pool) and its schema, created on first use."""

    def __init__(self, url: str | None, data_dir: Path | None) -> None:
        self.sqlite_dir: Path | None = None
        if url is None:
            directory = Path(data_dir) if data_dir is not None else default_data_dir()
            self.sqlite_dir = directory
            self.url: URL = URL.create("sqlite+pysqlite", database=str(directory / "conductor.db"))
        else:
            self.url = make_url(normalize_database_url(url))
            if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
                self.sqlite_dir = Path(self.url.database).parent
        self.engine = _create_engine(self.url)
        self.dialect: str = self.engine.dialect.name
        self.closed = False
        self._ready = False
        self._ready_lock = threading.Lock()
        self._upsert: Any = None

    @property
    def safe_url(self) -> str:
        """The URL with its password hidden (safe to show or log)."""
        return self.url.render_as_string(hide_password=True)

    @property
    def identity(self) -> str:
        """Which database this is, the same in every process that opens it (spools are kept
        per database, so they are only ever replayed into the one they were meant for)."""
        url = self.url.set(password=None)
        if self.dialect == "sqlite" and url.database not in (None, "", ":memory:"):
            url = url.set(database=str(Path(url.database).resolve()))
        return url.render_as_string(hide_password=True)

    @property
    def in_memory(self) -> bool:
        return self.dialect == "sqlite" and self.url.database in (None, "", ":memory:")

    def rollup_upsert(self) -> Any:
        if self._upsert is None:
            self._upsert = rollups.upsert_for_ids(self.dialect)
        return self._upsert

    def ensure_schema(self) -> None:
        """Create directory and tables on first use. Safe when several processes start at once:
        IF NOT EXISTS on both backends, plus an advisory lock on PostgreSQL."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            if self.closed:
                raise LogClosed()
            if self.sqlite_dir is not None:
                self.sqlite_dir.mkdir(parents=True, exist_ok=True)
            self._with_retries(self._create_log_tables)
            self._ready = True

    def forget_schema(self) -> None:
        """Check (and create) the tables again before the next statement."""
        self._ready = False

    def _create_log_tables(self) -> None:
        with self.engine.begin() as conn:
            create_tables(conn, metadata)
            # A log written before rollups existed, or by an older rule: (re)build them once,
            # here, inside the same lock/transaction, so no process counts twice.
            rollups.upgrade(conn)

    def ensure_tables(self, extra: MetaData) -> None:
        """Create another module's tables in this database (if missing), with the same care
        as the log's own."""
        self.ensure_schema()

        def create() -> None:
            with self.engine.begin() as conn:
                create_tables(conn, extra)

        self._with_retries(create)

    @staticmethod
    def _with_retries(step: Any) -> None:
        for attempt in range(WRITE_ATTEMPTS):
            try:
                step()
                return
            except Exception as exc:
                # Another process won a race the statements could not prevent (a locked
                # SQLite file, a catalog conflict): the next round finds the tables. Anything
                # else (database down) fails at once.
                if attempt == WRITE_ATTEMPTS - 1 or not is_schema_race(exc):
                    raise
                time.sleep(0.05 * (attempt + 1))

    def describe(self, exc: BaseException) -> str:
        """The driver's own message (SQLAlchemy's wrapper adds the SQL text), one line, no
        secrets: safe for a log line, a status page or `last_write_error`."""
        original = getattr(exc, "orig", None) or exc
        first_line = (str(original).strip().splitlines() or [""])[0]
        message = f"{type(original).__name__}: {first_line}"[:500]
        if self.url.password:
            message = message.replace(str(self.url.password), "***")
        return redact(message)

    def after_fork(self) -> None:
        """In a forked child: new connections of its own, leaving the parent's alone."""
        self.engine.dispose(close=False)

    def dispose(self) -> None:
        self.closed = True
        self.engine.dispose()


def _create_engine(url: URL) -> Engine:
    # hide_parameters: a failed INSERT must not put prompt text into an exception message.
    if url.get_backend_name() == "sqlite":
        engine = create_engine(
            url,
            hide_parameters=True,
            # Many threads share the pool; each connection is used by one thread at a time.
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            try:
                # busy_timeout first: switching to WAL itself may have to wait for a lock.
                cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
                # WAL: readers (the dashboard) never block writers (the router), and
                # several processes can share the file. NORMAL is durable enough in WAL.
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
            finally:
                cursor.close()

        return engine
    connect_args: dict[str, Any] = {}
    if url.get_backend_name() == "postgresql" and "connect_timeout" not in url.query:
        # An unreachable database must cost seconds, not minutes.
        connect_args["connect_timeout"] = 5
    # pre_ping: after a database restart the first write gets a fresh connection, not an error.
    return create_engine(url, hide_parameters=True, pool_pre_ping=True, connect_args=connect_args)
