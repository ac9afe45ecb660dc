"""Leases: the work a live process is doing, known by every process the moment that process dies.

    leases = leases_for(log.engine)        # one per database and process
    lease = leases.hold("run:run_123")     # while the work runs; `with leases.hold(...)` works too
    leases.held("run:run_123")             # True while a live process (this one included) holds it
    lease.release()

A heartbeat only says a process was alive some seconds ago, so a reader must wait that long
before it may call the work dead (an experiment run showed "running in another server
process" for 30 s after a restart). A lease is held by the operating system or the database
exactly as long as its process lives, so a reader knows at once:

* **PostgreSQL**: a session advisory lock, taken on one connection the process keeps for its
  leases while it holds any (outside the pool, in autocommit: no transaction stays open). The server drops it
  when that connection ends, however the process ended. Read by trying the lock inside a
  transaction of one's own (`pg_try_advisory_xact_lock`, released at once). If the lease
  connection breaks (a database restart), `renew()` reconnects and takes its leases again.
* **SQLite in a file**: an exclusive `flock` on a small file in a directory beside the database
  (``conductor.db.leases/``), which the kernel drops when the process's descriptor closes (as
  the request log's spool files are held). SQLite lives on one machine, and so do its readers.
* **SQLite in memory**: a count in this process (no other process can open that database).

Names are free text ("run:…", "arena:…"); hold each name in one place at a time.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import re
import threading
import weakref
from collections import Counter
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.pool import NullPool

__all__ = ["Lease", "Leases", "leases_for"]


class Lease:
    """A held lease; `release()` (or leaving its `with` block) lets it go. Idempotent."""

    def __init__(self, leases: Leases, name: str) -> None:
        self.leases = leases
        self.name = name
        self._released = False
        self._lock = threading.Lock()

    def renew(self) -> None:
        """Make sure the lease is still held (PostgreSQL: after a lost connection, take it again)."""
        self.leases.renew()

    def release(self) -> None:
        with self._lock:
            if self._released:
                return
            self._released = True
        self.leases._release(self.name)

    def __enter__(self) -> Lease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        return f"Lease({self.name!r}{', released' if self._released else ''})"


class Leases:
    """The leases of one database, in this process. Thread-safe."""

    def hold(self, name: str) -> Lease:
        self._hold(name)
        return Lease(self, name)

    def held(self, name: str) -> bool:
        raise NotImplementedError

    def renew(self) -> None:
        """Nothing to do unless the backend can lose its leases without the process dying."""

    def _hold(self, name: str) -> None:
        raise NotImplementedError

    def _release(self, name: str) -> None:
        raise NotImplementedError


class _ProcessLeases(Leases):
    """An in-memory database: only this process can see it, so only it can hold its leases."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: Counter[str] = Counter()

    def held(self, name: str) -> bool:
        with self._lock:
            return self._held[name] > 0

    def _hold(self, name: str) -> None:
        with self._lock:
            self._held[name] += 1

    def _release(self, name: str) -> None:
        with self._lock:
            self._held[name] -= 1
            if self._held[name] <= 0:
                del self._held[name]


class _FileLeases(Leases):
    """One locked file per held name in `directory` (SQLite's, beside the database file)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._lock = threading.Lock()
        self._fds: dict[str, int] = {}

    def _path(self, name: str) -> Path:
        # Readable, and safe as a file name; the hash keeps two names that read alike apart.
        readable = re.sub(r"[^A-Za-z0-9_.-]", "_", name)[:80]
        return self.directory / f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:12]}.lock"

    def held(self, name: str) -> bool:
        path = self._path(name)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True  # its holder is alive (a descriptor of this process counts too)
        finally:
            os.close(fd)  # also lets go of the lock, if this call took it
        return False

    def _hold(self, name: str) -> None:
        with self._lock:
            if name in self._fds:
                raise RuntimeError(f"lease {name!r} is already held by this process")
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self._path(name)
            for _ in range(5):
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    os.close(fd)
                    raise RuntimeError(f"lease {name!r} is held by another live process") from None
                if os.fstat(fd).st_nlink > 0:  # not deleted by its last holder between our open and lock
                    self._fds[name] = fd
                    return
                os.close(fd)
            raise OSError(errno.EAGAIN, f"could not take the lease file {path}")

    def _release(self, name: str) -> None:
        with self._lock:
            fd = self._fds.pop(name, None)
        if fd is None:
            return
        # Delete, then unlock (in that order, as the spool does): whoever opens the path next
        # finds a fresh file, never one a holder is about to delete.
        try:
            os.unlink(self._path(name))
        except OSError:
            pass  # left behind: an unlocked file reads as not held
        finally:
            os.close(fd)


def _advisory_key(name: str) -> int:
    """A signed 64-bit key for pg_advisory_lock(bigint), from the name."""
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


class _PostgresLeases(Leases):
    def __init__(self, engine: Engine) -> None:
        self._engine = engine  # readers use the pool
        # Holders use one connection of their own, outside the pool, for the life of the process.
        self._holder_engine = create_engine(
            engine.url, poolclass=NullPool, hide_parameters=True, connect_args={"connect_timeout": 5}
        )
        self._lock = threading.Lock()
        self._connection: Any = None
        self._held: Counter[str] = Counter()

    def held(self, name: str) -> bool:
        with self._engine.begin() as conn:
            free = conn.execute(text("SELECT pg_try_advisory_xact_lock(:key)"), {"key": _advisory_key(name)}).scalar()
        return not free

    def _holder(self) -> Any:
        """The lease connection (lock held); a new one takes every lease again."""
        if self._connection is not None and not self._connection.closed and not self._connection.invalidated:
            return self._connection
        connection = self._holder_engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        for name, count in self._held.items():
            for _ in range(count):
                connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": _advisory_key(name)})
        self._connection = connection
        return connection

    def _run(self, statement: str, name: str) -> None:
        try:
            self._holder().execute(text(statement), {"key": _advisory_key(name)})
        except SQLAlchemyError:
            # A broken lease connection (its leases are gone with it): a new one, once.
            self._drop()
            self._holder().execute(text(statement), {"key": _advisory_key(name)})

    def _drop(self) -> None:
        if self._connection is not None:
            try:
                self._connection.invalidate()
            except SQLAlchemyError:
                pass  # it is broken already
        self._connection = None

    def _hold(self, name: str) -> None:
        with self._lock:
            self._run("SELECT pg_advisory_lock(:key)", name)
            self._held[name] += 1

    def _release(self, name: str) -> None:
        with self._lock:
            if self._held[name] <= 0:
                return
            self._held[name] -= 1
            if self._held[name] == 0:
                del self._held[name]
            if self._connection is None:
                return
            try:
                self._connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": _advisory_key(name)})
                if not self._held:  # nothing held: no connection kept open for nothing
                    self._connection.close()
                    self._connection = None
            except SQLAlchemyError:  # a lost connection has let go of it already
                self._drop()

    def renew(self) -> None:
        with self._lock:
            if not self._held:
                return
            try:
                self._holder().execute(text("SELECT 1"))
            except SQLAlchemyError:  # reconnect and take the leases again
                self._drop()
                self._holder()


_by_engine: weakref.WeakKeyDictionary[Engine, Leases] = weakref.WeakKeyDictionary()
_by_engine_lock = threading.Lock()


def leases_for(engine: Engine) -> Leases:
    """The leases of `engine`'s database, one object per engine (the stores that share a
    request log's engine share its leases)."""
    with _by_engine_lock:
        found = _by_engine.get(engine)
        if found is None:
            found = _by_engine[engine] = _new_leases(engine)
        return found


def _new_leases(engine: Engine) -> Leases:
    if engine.dialect.name == "postgresql":
        return _PostgresLeases(engine)
    database = engine.url.database
    if engine.dialect.name == "sqlite" and database not in (None, "", ":memory:"):
        path = Path(database)
        return _FileLeases(path.with_name(path.name + ".leases"))
    return _ProcessLeases()
