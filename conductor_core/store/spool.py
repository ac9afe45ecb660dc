"""Append-only spool files: where an attempt waits, on disk, between `submit()` and its commit.

`submit()` appends the attempt as one JSON line to this process's spool file before it
returns, and the router submits before the response (or the stream's end) is sent: so a
response a client has received always has its attempt on disk. The background writer reads
the lines back in batches, commits them, and then gives the bytes back (the file is
truncated once everything in it is committed; under steady load, where that moment never
comes, it is sealed at `ROTATE_BYTES` and a new one started, and the old one is deleted once
read to its end).

Layout: ``<data_dir>/spool/<database key>/<pid>-<random>.spool``. The key is a hash of the
database's URL (password left out), so a spool is only ever replayed into the database it was
written for, even when several databases share a data directory (``DATABASE`` in the same
folder names it for people). Each file is held with ``flock`` by the process that writes it,
for as long as it exists. A file nobody holds belongs to a process that died (``kill -9``,
OOM, power cut) or closed while its database was down: any process opening the same
database takes it over (`adopt_orphans`, on first use and every `RESCAN_S` after), commits
its lines and deletes it. The lock makes the takeover safe with several processes sharing a
data dir: exactly one of them gets each orphan, and never one whose writer is alive.

What survives what: `kill -9` loses nothing, because a line handed to ``write(2)`` is in the
kernel's page cache and reaches the file without the process (no fsync per request is
needed). A power cut or kernel crash is different: the writer ``fdatasync``s the spool once
per batch, before it commits (one sync per `linger_s`, off the request path), so what can be
lost is the attempts of the last batch wait (~0.5 s); with SQLite, whose commits are not
synced one by one (``synchronous=NORMAL`` in WAL mode), the last committed batches can roll
back too. A cut can also leave a torn or zero-filled last line: unreadable lines are skipped
and counted (`corrupt_lines`), never fatal.

Replaying twice is harmless: the writer inserts with ``ON CONFLICT (id) DO NOTHING`` and adds
to the rollups only the rows that were new, so a batch committed just before a kill and
replayed after it counts once.

If the spool cannot be written at all (data directory unusable, disk full), the line is kept
in memory instead (counted in `in_memory`): still written when the database is reachable,
but not durable across a kill.

Locking: every method except `read` and `adopt_orphans` is called with the writer's lock
held (one lock per `submit()`, shared with the pending count); `read` and `adopt_orphans`
run only on the writer thread, and `read` needs no lock because it only reads bytes below
the committed size of each file.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import itertools
import logging
import os
import secrets
from collections import deque
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Batch", "Spool", "spool_directory"]

log = logging.getLogger("conductor.store")

SUFFIX = ".spool"
#: A spool file in use is sealed (and a new one begun) once it holds this much.
ROTATE_BYTES = 4 * 1024 * 1024
#: How often a living process looks for orphaned spool files of processes that died.
RESCAN_S = 5.0
_READ_CHUNK = 1024 * 1024


def spool_directory(data_dir: Path, identity: str) -> Path:
    """Where the spools of the database named by `identity` live under `data_dir`."""
    key = hashlib.sha256(identity.encode("utf-8")).hexdigest()[:16]
    return Path(data_dir) / "spool" / key


@dataclass(eq=False)
class _Segment:
    """One spool file, and how far into it the writer has got."""

    path: Path
    fd: int
    owned: bool  # ours (we append to it) or adopted from a dead process (read only)
    size: int  # bytes of whole lines in it
    lines: int  # of them not yet consumed
    done: int = 0  # bytes consumed (committed, or set aside) from the start
    counted: int = 0  # failed writes counted up to this offset, so each line counts once
    sealed: bool = False  # no more appends


@dataclass(eq=False)
class Batch:
    """Up to `max_rows` lines from one source (a spool file or the in-memory fallback)."""

    lines: list[bytes]
    segment: _Segment | None  # None: the in-memory fallback
    start: int
    end: int  # offset after the last line (bytes in a file, lines in memory)
    torn_tail: bool = False  # the last line is a dead process's unfinished append


@dataclass
class _Stats:
    corrupt_lines: int = 0
    recovered_lines: int = 0
    spool_errors: int = 0


class Spool:
    """This process's spool files for one database, plus the orphans it has taken over."""

    def __init__(self, directory: Path | None, *, database_label: str) -> None:
        self.directory = directory  # None: no durable spool (an in-memory database)
        self._label = database_label
        self._segments: list[_Segment] = []  # adopted and sealed ones first, the active one last
        self._active: _Segment | None = None
        self._memory: deque[bytes] = deque()
        self._memory_counted = 0
        self.added = 0  # lines appended or adopted, ever
        self.consumed = 0  # of them committed or set aside
        self.stats = _Stats()
        self._broken_until_rescan = False

    # --- appending (submit's path, writer lock held) -----------------------------------

    @property
    def pending(self) -> int:
        """Lines appended or adopted and not yet consumed."""
        return self.added - self.consumed

    def append(self, line: bytes) -> bool:
        """Append one line (it ends with a newline). True: it is on disk; False: the spool is
        unusable and the line is kept in memory."""
        self.added += 1
        segment = self._active
        if segment is None and not self._broken_until_rescan and self.directory is not None:
            segment = self._open_own()
        if segment is not None:
            try:
                written = os.write(segment.fd, line)
                while written < len(line):  # rare: a short write to a regular file
                    written += os.write(segment.fd, line[written:])
            except OSError as exc:
                # Part of the line may be in the file: seal it so nothing is appended after
                # the torn bytes (its whole lines are still read up to `size`), and try a
                # fresh file next time.
                self._seal_active()
                self.stats.spool_errors += 1
                log.warning("request log: could not append to the spool %s: %s; kept in memory", segment.path, exc)
            else:
                segment.size += len(line)
                segment.lines += 1
                return True
        self._memory.append(line)
        return False

    def _open_own(self) -> _Segment | None:
        assert self.directory is not None
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            label = self.directory / "DATABASE"
            if not label.exists():
                label.write_text(self._label + "\n", encoding="utf-8")
            for _ in range(5):
                path = self.directory / f"{os.getpid()}-{secrets.token_hex(4)}{SUFFIX}"
                fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_APPEND | os.O_CLOEXEC, 0o600)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    # Another process scanning for orphans may have taken the brand-new empty
                    # file between our open and our lock, and deleted it: then start over.
                    if os.fstat(fd).st_nlink > 0:
                        segment = _Segment(path, fd, owned=True, size=0, lines=0)
                        self._segments.append(segment)
                        self._active = segment
                        return segment
                except BlockingIOError:
                    pass
                os.close(fd)
            raise OSError(errno.EAGAIN, "could not lock a new spool file")
        except OSError as exc:
            self.stats.spool_errors += 1
            # Do not retry on every submit (each would pay for a failing mkdir): the next
            # rescan clears this.
            self._broken_until_rescan = True
            log.warning(
                "request log: no spool under %s (%s): attempts are kept in memory until written", self.directory, exc
            )
            return None

    def _seal_active(self) -> None:
        if self._active is not None:
            self._active.sealed = True
            self._active = None

    # --- taking over the spools of dead processes (writer thread) ----------------------

    def adopt_orphans(self) -> list[_Segment]:
        """Lock every spool file of this database that no living process holds. Returns the
        new segments; the caller adds them with `add_adopted` under the writer lock."""
        self._broken_until_rescan = False
        if self.directory is None or not self.directory.is_dir():
            return []
        mine = {segment.path for segment in self._segments}
        found: list[_Segment] = []
        for path in sorted(self.directory.glob(f"*{SUFFIX}")):
            if path in mine:
                continue
            try:
                fd = os.open(path, os.O_RDWR | os.O_CLOEXEC)
            except OSError:
                continue  # deleted meanwhile by its owner or another adopter
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                os.close(fd)  # its writer is alive
                continue
            stat = os.fstat(fd)
            if stat.st_nlink == 0:  # finished and deleted by whoever held it before us
                os.close(fd)
                continue
            if stat.st_size == 0:
                _remove(path, fd)
                continue
            data = _pread_all(fd, stat.st_size)
            lines = data.count(b"\n") + (0 if data.endswith(b"\n") else 1)
            found.append(_Segment(path, fd, owned=False, size=stat.st_size, lines=lines, sealed=True))
            log.info("request log: taking over %d attempt(s) from the orphaned spool %s", lines, path.name)
        return found

    def add_adopted(self, segments: list[_Segment]) -> None:
        for segment in segments:
            self._segments.insert(0, segment)
            self.added += segment.lines
            self.stats.recovered_lines += segment.lines

    # --- reading and consuming (writer thread) -------------------------------------------

    def read(self, max_rows: int) -> Batch | None:
        """The next lines to commit: from the oldest file with unread lines, else memory."""
        for segment in list(self._segments):
            if segment.done < segment.size:
                return self._read_segment(segment, max_rows)
        if self._memory:
            lines = [line.rstrip(b"\n") for line in itertools.islice(self._memory, max_rows)]
            return Batch(lines, None, 0, len(lines))
        return None

    def _read_segment(self, segment: _Segment, max_rows: int) -> Batch:
        start, size = segment.done, segment.size
        chunk = _READ_CHUNK
        while True:
            data = os.pread(segment.fd, min(chunk, size - start), start)
            if not data:  # the file is shorter than we thought (truncated by hand): give up on it
                return Batch([], segment, start, size)
            lines = data.split(b"\n")
            complete, tail = lines[:-1], lines[-1]
            if complete:
                taken = complete[:max_rows]
                end = start + sum(len(line) + 1 for line in taken)
                return Batch(taken, segment, start, end)
            if start + len(data) >= size:
                # No newline up to the end: an adopted file's torn last line.
                return Batch([tail], segment, start, size, torn_tail=True)
            chunk *= 2  # one line longer than the chunk

    def unsynced_fds(self) -> list[int]:
        """This process's files with lines not yet committed (under the writer lock)."""
        return [segment.fd for segment in self._segments if segment.owned and segment.done < segment.size]

    @staticmethod
    def sync(fds: list[int]) -> None:
        """Force the lines to the disk (writer thread, no lock: appends go on meanwhile)."""
        for fd in fds:
            try:
                os.fdatasync(fd)
            except OSError as exc:
                log.warning("request log: could not sync the spool: %s", exc)

    def mark_failed(self, batch: Batch) -> int:
        """The batch could not be written: how many of its lines failed for the first time."""
        if batch.segment is None:
            fresh = max(0, batch.end - self._memory_counted)
            self._memory_counted = max(self._memory_counted, batch.end)
            return fresh
        segment = batch.segment
        if batch.end <= segment.counted:
            return 0
        if batch.start >= segment.counted:
            fresh = len(batch.lines)
        else:  # partly counted before (a smaller batch failed earlier): count the rest
            offset, fresh = batch.start, 0
            for line in batch.lines:
                if offset >= segment.counted:
                    fresh += 1
                offset += len(line) + 1
        segment.counted = batch.end
        return fresh

    def consume(self, batch: Batch) -> None:
        """The batch is committed (or set aside): give its lines back."""
        consumed = len(batch.lines)
        self.consumed += consumed
        segment = batch.segment
        if segment is None:
            for _ in range(batch.end):
                self._memory.popleft()
            self._memory_counted = max(0, self._memory_counted - batch.end)
            return
        segment.done = batch.end
        segment.lines -= consumed
        if segment.done < segment.size:
            return
        if segment is self._active:
            # Everything in the file in use is committed: give the bytes back in place.
            try:
                os.ftruncate(segment.fd, 0)
                segment.size = segment.done = segment.counted = 0
            except OSError as exc:
                log.warning("request log: could not truncate the spool %s: %s", segment.path, exc)
                self._seal_active()
            return
        _remove(segment.path, segment.fd)
        self._segments.remove(segment)

    def rotate_if_large(self) -> None:
        """Seal the file in use once it is large, so its bytes can be given back without
        waiting for a moment with nothing pending (under steady load that may never come)."""
        if self._active is not None and self._active.size >= ROTATE_BYTES:
            self._seal_active()

    # --- status and shutdown ------------------------------------------------------------

    @property
    def files(self) -> int:
        return len(self._segments)

    @property
    def bytes_waiting(self) -> int:
        return sum(segment.size - segment.done for segment in self._segments)

    @property
    def in_memory(self) -> int:
        return len(self._memory)

    def release(self) -> int:
        """Close every file: delete the ones fully committed, leave the others (unlocked) for
        the next process to take over. Returns the lines left behind in files; lines only in
        memory are dropped (the caller says so)."""
        left = 0
        for segment in self._segments:
            if segment.done >= segment.size:
                _remove(segment.path, segment.fd)
            else:
                left += segment.lines
                os.close(segment.fd)
        self._segments.clear()
        self._active = None
        return left

    def forget(self) -> None:
        """Drop everything without touching the files (a forked child's copy: the files and
        their locks stay with the parent, which still has them open)."""
        for segment in self._segments:
            try:
                os.close(segment.fd)
            except OSError:
                pass
        self._segments.clear()
        self._active = None
        self._memory.clear()


def _pread_all(fd: int, size: int) -> bytes:
    parts, offset = [], 0
    while offset < size:
        data = os.pread(fd, size - offset, offset)
        if not data:
            break
        parts.append(data)
        offset += len(data)
    return b"".join(parts)


def _remove(path: Path, fd: int) -> None:
    """Delete a spool file we hold the lock of, then let the lock go (in that order: a
    process waiting for the lock must find the file gone, not empty-but-there)."""
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    except OSError as exc:  # left for the next process to take over and try again
        log.warning("request log: could not delete the spool %s: %s", path, exc)
    finally:
        try:
            os.close(fd)
        except OSError:
            pass  # already closed (a close racing the writer at shutdown)
