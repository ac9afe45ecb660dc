"""The database behind the log: engine, its schema brought to this code's on first use
(migrate.py), and what a failure means (retry now, back off, or the row itself is refused:
a schema that does not match is never taken for an outage)."""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, create_engine, event, inspect
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, make_url

from ..config import redact
from . import migrate, rollups
from .migrate import SchemaError
from .schema import default_data_dir, normalize_database_url

__all__ = [
    "Database",
    "LogClosed",
    "is_missing_table",
    "is_outage",
    "is_schema_mismatch",
    "is_schema_race",
    "is_transient",
]

log = logging.getLogger("conductor.store")

# SQLite: how long a writer waits for the file lock before "database is locked", and how
# often a write retries on top of that. Twenty threads writing at once queue up well
# inside the timeout (each insert holds the lock for well under a millisecond); the retry
# covers the rare busy error the timeout does not (a connection opening while another
# switches the journal mode).
SQLITE_BUSY_TIMEOUT_MS = 5_000
WRITE_ATTEMPTS = 4
#: After the schema was found unusable, how long every use fails with the same error before
#: it is checked again (a person may have run the upgrade meanwhile).
SCHEMA_RECHECK_S = 30.0


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
    """A table is gone (the database emptied under a running process, say): check the schema
    again (an empty database is migrated afresh) and run the same statement once more."""
    if isinstance(exc, SchemaError):
        return False
    message = _message(exc)
    return "no such table" in message or ("relation" in message and "does not exist" in message)


def is_schema_mismatch(exc: BaseException) -> bool:
    """The database is up but its schema is not this code's (a table or column missing, a
    newer release's database): the statement will fail however often it is retried."""
    if isinstance(exc, SchemaError):
        return True
    message = _message(exc)
    return any(words in message for words in ("no such table", "no such column", "has no column named")) or (
        "does not exist" in message and ("relation" in message or "column" in message)
    )


def is_schema_race(exc: BaseException) -> bool:
    message = _message(exc)
    return is_transient(exc) or "already exists" in message or "duplicate key" in message


def is_outage(exc: BaseException) -> bool:
    """The database cannot take writes right now (unreachable, restarting, disk full, the
    data directory unusable), as opposed to refusing these particular rows: wait and try the
    same rows again later. A schema mismatch is not an outage: waiting would never end."""
    if is_schema_mismatch(exc):
        return False
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

    def __init__(self, url: str | None, data_dir: Path | None, *, pool_size: int | None = None) -> None:
        self.sqlite_dir: Path | None = None
        if url is None:
            directory = Path(data_dir) if data_dir is not None else default_data_dir()
            self.sqlite_dir = directory
            self.url: URL = URL.create("sqlite+pysqlite", database=str(directory / "conductor.db"))
        else:
            self.url = make_url(normalize_database_url(url))
            if self.url.get_backend_name() == "sqlite" and self.url.database not in (None, "", ":memory:"):
                self.sqlite_dir = Path(self.url.database).parent
        self.engine = _create_engine(self.url, pool_size)
        self.dialect: str = self.engine.dialect.name
        self.closed = False
        #: Why the schema could not be brought to this code's on open (a `SchemaError`'s
        #: message: what to run or which release to use); None when it was.
        self.schema_error: str | None = None
        self._ready = False
        self._ready_lock = threading.Lock()
        self._upsert: Any = None
        self._tables: set[str] | None = None
        self._failure: SchemaError | None = None  # why the last check failed...
        self._unusable_until = 0.0  # ...and no new check before this

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
        """On first use: the directory, and the schema brought to this code's (migrate.py:
        one SELECT when it already is). Safe when several processes start at once. Raises
        `SchemaError` when the database cannot be used by this code (and remembers why, for
        `schema_error`); an outage raises the driver's error (the caller waits and retries)."""
        if self._ready:
            return
        with self._ready_lock:
            if self._ready:
                return
            if self.closed:
                raise LogClosed()
            if self._failure is not None and time.monotonic() < self._unusable_until:
                # Each write would otherwise check again; a new instance: raised from many threads.
                raise type(self._failure)(str(self._failure))
            if self.sqlite_dir is not None:
                self.sqlite_dir.mkdir(parents=True, exist_ok=True)
            try:
                self._with_retries(lambda: migrate.ensure_current(self.engine, self.safe_url))
            except SchemaError as exc:
                self._unusable(exc)
                raise
            except Exception as exc:
                if is_outage(exc) or is_transient(exc):
                    raise
                # A migration failed on this database's data (its transaction rolled back).
                error = SchemaError(
                    f"The database {self.safe_url} could not be upgraded to this release's schema "
                    f"({self.describe(exc)}). Nothing was changed. Run `python -m conductor_core.store upgrade` "
                    "to see the whole error."
                )
                self._unusable(error)
                raise error from exc
            self.schema_error, self._failure = None, None
            self._tables = None
            self._ready = True

    def _unusable(self, error: SchemaError) -> None:
        self.schema_error, self._failure = str(error), error
        self._unusable_until = time.monotonic() + SCHEMA_RECHECK_S
        log.error("request log: %s", error)

    def forget_schema(self) -> None:
        """Check the schema again before the next statement."""
        self._ready = False

    def require_tables(self, extra: MetaData) -> None:
        """Check that another module's tables (sessions, experiments...) exist, after the
        migrations ran: a table the migrations do not create is a clear error, not a failed
        statement later."""
        self.ensure_schema()
        missing = sorted(set(extra.tables) - self._table_names())
        if missing:
            self._tables = None  # read again once: it may have been created since
            missing = sorted(set(extra.tables) - self._table_names())
        if missing:
            raise SchemaError(
                f"The database {self.safe_url} has no table {', '.join(missing)}: no migration creates it (or it was "
                'dropped by hand). A new table needs a migration (README, "Adding a migration"); then run '
                "`python -m conductor_core.store upgrade`."
            )

    def _table_names(self) -> set[str]:
        if self._tables is None:
            with self.engine.connect() as conn:
                self._tables = set(inspect(conn).get_table_names())
        return self._tables

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
        if isinstance(exc, SchemaError):  # written to be shown whole
            return redact(str(exc))
        original = getattr(exc, "orig", None) or exc
        first_line = (str(original).strip().splitlines() or [""])[0]
        message = f"{type(original).__name__}: {first_line}"[:500]
        if self.url.password:
            message = message.replace(str(self.url.password), "***")
        return redact(message)

    def schema_mismatch(self, exc: BaseException) -> str:
        """What to tell a person when a statement failed because the schema is not this
        code's (`is_schema_mismatch`): the error, and what to run."""
        if isinstance(exc, SchemaError):
            return self.describe(exc)
        return (
            f"{self.describe(exc)}: the schema of {self.safe_url} is not this release's (a newer release upgraded it, "
            "or it was changed by hand). `python -m conductor_core.store check` lists the differences; a newer "
            "release's database needs that release."
        )

    def after_fork(self) -> None:
        """In a forked child: new connections of its own, leaving the parent's alone."""
        self.engine.dispose(close=False)

    def dispose(self) -> None:
        self.closed = True
        self.engine.dispose()


def _create_engine(url: URL, pool_size: int | None = None) -> Engine:
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
    # pool_size: connections kept open. A process with more threads at the database at once
    # than that opens (and closes again) a connection each time it is short of one: a worker
    # answering dozens of cells at once asks for one that fits them.
    sized = {"pool_size": pool_size} if pool_size is not None else {}
    # pre_ping: after a database restart the first write gets a fresh connection, not an error.
    return create_engine(url, hide_parameters=True, pool_pre_ping=True, connect_args=connect_args, **sized)
