"""Writing the log: `submit()` (the router's path: spool, then a background batch commit),
and the direct `write()`, `write_many()` and `write_vote()`.

Failure policy. Writes never raise into a request. A direct write that fails returns False
and is counted. A submitted attempt is never given up on while the database cannot take
writes (unreachable, restarting, locked, disk full): it stays in the spool and the writer
tries again with backoff (`BACKOFF_S` doubling to `BACKOFF_MAX_S`; a `flush()` tries at once).
An attempt the database itself refuses (the database is up but rejects that row) is set
aside in ``rejected.jsonl`` next to the spool, counted and logged, so one bad row cannot
block the rows behind it and is not lost either. A schema that does not match this code (a
newer release's database, a table or column missing) is such a refusal, not an outage: the
rows are set aside at once and `health()` says why (`schema_error`) instead of retrying them
for ever. Every failure counts once per attempt in `write_errors`, however many times it is
retried; `health()` says what is waiting, where, and the last error (redacted).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Table, insert

from ..config import redact
from ..models import AttemptRecord, LogHealth, Vote
from . import rollups
from .database import (
    WRITE_ATTEMPTS,
    Database,
    LogClosed,
    is_missing_table,
    is_outage,
    is_schema_mismatch,
    is_transient,
)
from .schema import attempts, epoch, votes_table
from .spool import RESCAN_S, Batch, Spool

__all__ = ["LogHealth", "LogWriter"]

log = logging.getLogger("conductor.store")

REDACTED_FIELDS = ("error_message", "prompt", "answer")
#: Most attempts in one background transaction.
BATCH_ROWS = 500
#: Waits between tries while the database cannot take writes.
BACKOFF_S = 0.5
BACKOFF_MAX_S = 30.0
# Ids bound in one rollup update: PostgreSQL's protocol takes at most 65,535 parameters a
# statement, SQLite builds from 32,766 up.
_IDS_PER_STATEMENT = 10_000
REJECTED_FILE = "rejected.jsonl"


class LogWriter:
    """Everything that writes rows. Thread-safe; the background thread starts on first use."""

    #: How long the background writer lets attempts gather before it writes them as one
    #: batch. A batch costs ~0.5 ms of Python in the writer thread (which competes with
    #: request threads for the GIL) plus ~0.1 ms a row: fewer, bigger batches keep it off
    #: the requests' way. The spool is what makes the wait safe.
    linger_s = 0.5

    def __init__(self, database: Database, spool_dir: Path | None, *, log_prompts: bool) -> None:
        self._db = database
        self.log_prompts = log_prompts
        self._spool = Spool(spool_dir, database_label=database.safe_url)
        self._cond = threading.Condition()  # guards the spool, the counters and the flags below
        self._thread: threading.Thread | None = None
        self._idle = False  # the thread waits for work: submit() wakes it
        self._flush_upto = 0  # a flush waits until this many lines are consumed
        self._stopping = False
        self._closed = False
        self._scanned = spool_dir is None  # the first look for orphaned spools is done
        self._failed_rounds = 0  # background write attempts that failed (flush() waits for one)
        self._retry_at = 0.0
        self._backoff = BACKOFF_S
        self._down_since: float | None = None
        self.written = 0
        self.write_errors = 0
        self.rejected = 0
        self.last_write_error: str | None = None
        self._last_error_at: datetime | None = None
        self._database_ok = True
        self._schema_refusal: str | None = None  # the last write refused for a schema mismatch

    # --- the router's path ----------------------------------------------------------------

    def submit(self, record: AttemptRecord) -> None:
        """Put one attempt in the spool and return: a few microseconds and one ``write(2)``,
        never a database round trip. The background writer commits it within `linger_s`;
        reads in this process flush first, so they see their own writes."""
        try:
            line = _encode(self.prepare(record))
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            self.failed(f"attempt {record.id}", exc)
            return
        with self._cond:
            if self._closed:
                closed = True
            else:
                closed = False
                self._spool.append(line)
                if self._thread is None:
                    self._start()
                elif self._idle:
                    self._idle = False
                    self._cond.notify_all()
        if closed:
            self.failed(f"attempt {record.id}", LogClosed())

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Write what was submitted before this call (and, on first use, what dead processes
        left in their spools). True once it is all written; False when the database could
        not take it (the writer tried once more and failed: the attempts stay in the spool
        and are retried) or `timeout` passed."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            if self._scanned and self._spool.pending == 0:
                return True
            if self._closed:
                return self._spool.pending == 0
            if self._thread is None:
                self._start()
            if not self._cond.wait_for(lambda: self._scanned or self._thread is None, _left(deadline)):
                return False
            upto = self._spool.added
            failed_before = self._failed_rounds
            self._flush_upto = max(self._flush_upto, upto)
            self._idle = False
            self._cond.notify_all()
            self._cond.wait_for(
                lambda: self._spool.consumed >= upto or self._failed_rounds > failed_before or self._thread is None,
                _left(deadline),
            )
            return self._spool.consumed >= upto

    @property
    def _flush_requested(self) -> bool:
        return self._flush_upto > self._spool.consumed

    def _start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    # --- the background writer -------------------------------------------------------------

    def _run(self) -> None:
        next_scan = 0.0
        try:
            while True:
                with self._cond:
                    while True:
                        now = time.monotonic()
                        if self._stopping:
                            return
                        if self._has_work(now) or now >= next_scan:
                            break
                        wake = next_scan if self._spool.pending == 0 else min(next_scan, self._retry_at)
                        self._idle = True
                        self._cond.wait(max(0.0, wake - now))
                    self._idle = False
                if now >= next_scan:
                    self._adopt_orphans()
                    next_scan = time.monotonic() + RESCAN_S
                with self._cond:
                    if not self._has_work(time.monotonic()):
                        continue
                    # Let a batch gather: one transaction (and one wake-up of this thread,
                    # which competes with request threads for the GIL) per batch, not per
                    # attempt. A flush or close cuts the wait short.
                    self._cond.wait_for(lambda: self._flush_requested or self._stopping, self.linger_s)
                    gathered = self._spool.pending
                    unsynced = self._spool.unsynced_fds()
                # Before the commit gives the spool's bytes back: what a power cut can take is
                # then one batch wait, not the kernel's write-back delay (~30 s).
                self._spool.sync(unsynced)
                self._drain(gathered)
        finally:
            with self._cond:
                self._thread = None
                self._cond.notify_all()

    def _has_work(self, now: float) -> bool:
        # While backing off, only a flush brings the next try forward.
        return self._spool.pending > 0 and (now >= self._retry_at or self._flush_requested)

    def _adopt_orphans(self) -> None:
        try:
            found = self._spool.adopt_orphans()
        except OSError as exc:
            log.warning("request log: could not look for orphaned spools: %s", exc)
            found = []
        with self._cond:
            self._spool.add_adopted(found)
            self._scanned = True
            self._cond.notify_all()

    def _drain(self, gathered: int) -> None:
        """Commit what gathered during the wait (everything, while a flush waits), in
        batches, until done or the database stops taking them. What arrives meanwhile waits
        for the next round, so under steady load the writer still wakes once per linger."""
        drained = 0
        while True:
            with self._cond:
                if drained >= gathered and not self._flush_requested:
                    return
            batch = self._spool.read(BATCH_ROWS)
            if batch is None:
                return
            outcome = self._commit(batch)
            with self._cond:
                if outcome is None:  # the database cannot take writes now: back off
                    self._failed_rounds += 1
                    self._flush_upto = 0  # the flush gets its answer; the backoff holds
                    self._retry_at = time.monotonic() + self._backoff
                    self._backoff = min(self._backoff * 2, BACKOFF_MAX_S)
                    self._cond.notify_all()
                    return
                self._spool.consume(batch)
                self._spool.rotate_if_large()
                drained += len(batch.lines)
                self.written += outcome
                self._backoff, self._retry_at = BACKOFF_S, 0.0
                self._cond.notify_all()
            self._back_up()

    def _commit(self, batch: Batch) -> int | None:
        """Insert the batch's new rows. Returns how many were new, or None if the database
        cannot take writes (the batch stays in the spool)."""
        records, rows = [], []
        for line in batch.lines:
            for record in _decode(line):
                if record is None:
                    with self._cond:
                        self._spool.stats.corrupt_lines += 1
                    log.warning(
                        "request log: skipped an unreadable spool line (%d bytes%s)",
                        len(line),
                        ", torn by a kill" if batch.torn_tail else "",
                    )
                    continue
                records.append(record)
                rows.append(row_of(record))
        if not rows:
            return 0
        try:
            return self._insert_new(rows)
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            if is_outage(exc):
                self._outage(batch, exc)
                return None
            batch_error = exc
        # The database refused the batch: find the rows it refuses, one by one (every row,
        # when its schema is not this code's: no need to ask).
        if len(rows) == 1 or is_schema_mismatch(batch_error):
            self._reject([_encode(record).rstrip(b"\n") for record in records], batch_error)
            return 0
        new, refused = 0, []
        for record, row in zip(records, rows, strict=True):
            try:
                new += self._insert_new([row])
            except Exception as exc:  # noqa: BLE001
                if is_outage(exc):
                    self._outage(batch, exc)
                    return None  # rows committed so far are skipped on the retry (idempotent)
                refused.append((record, exc))
        for record, error in refused:
            self._reject([_encode(record).rstrip(b"\n")], error)
        return new

    def _insert_new(self, rows: list[dict[str, Any]]) -> int:
        """Insert the rows whose id is not in the log yet, and add exactly those to the
        rollups, in one transaction: replaying a committed batch changes nothing."""
        stmt = (
            rollups.dialect_insert(self._db.dialect)(attempts)
            .on_conflict_do_nothing(index_elements=[attempts.c.id])
            .returning(attempts.c.id)
        )
        for attempt in range(WRITE_ATTEMPTS):
            try:
                self._db.ensure_schema()
                with self._db.engine.begin() as conn:
                    ids = list(conn.execute(stmt, rows).scalars())
                    for at in range(0, len(ids), _IDS_PER_STATEMENT):
                        conn.execute(self._db.rollup_upsert(), {"ids": ids[at : at + _IDS_PER_STATEMENT]})
                self._schema_refusal = None
                return len(ids)
            except Exception as exc:
                if attempt < WRITE_ATTEMPTS - 1 and self._retry_now(exc, attempt):
                    continue
                raise
        raise AssertionError("not reached")

    def _retry_now(self, exc: BaseException, attempt: int) -> bool:
        """Whether the same statement should run again at once (after a short pause)."""
        if is_missing_table(exc):
            self._db.forget_schema()
            return True
        if is_transient(exc):
            time.sleep(0.02 * 2**attempt)  # a locked SQLite file frees up within milliseconds
            return True
        return False

    def _outage(self, batch: Batch, exc: BaseException) -> None:
        message = self._db.describe(exc)
        with self._cond:
            fresh = self._spool.mark_failed(batch)
            self.write_errors += fresh
            self.last_write_error = message
            self._last_error_at = _now()
            self._database_ok = False
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
            waiting = self._spool.pending
        if first:
            log.warning(
                "request log: cannot write to %s (%s); %d attempt(s) wait in the spool and are retried",
                self._db.safe_url,
                message,
                waiting,
            )

    def _back_up(self) -> None:
        with self._cond:
            if self._down_since is None:
                return
            down_s = time.monotonic() - self._down_since
            self._down_since = None
            self._database_ok = True
        log.warning("request log: writing to %s again after %.1f s", self._db.safe_url, down_s)

    def _reject(self, lines: list[bytes], exc: BaseException) -> None:
        """Set aside rows the database refuses, next to the spool, so they are kept for a
        person to look at without blocking the rows behind them."""
        message = self._db.describe(exc)
        if is_schema_mismatch(exc):
            self._schema_refusal = self._db.schema_mismatch(exc)
        where = "nowhere: no spool folder"
        directory = self._spool.directory
        if directory is not None:
            try:
                directory.mkdir(parents=True, exist_ok=True)
                with open(directory / REJECTED_FILE, "ab") as handle:
                    for line in lines:
                        handle.write(line + b"\n")
                where = str(directory / REJECTED_FILE)
            except OSError as file_error:
                where = f"nowhere ({file_error})"
        with self._cond:
            self.rejected += len(lines)
            self.write_errors += len(lines)
            self.last_write_error = message
            self._last_error_at = _now()
        log.warning(
            "request log: %s refused %d attempt(s) (%s); kept in %s", self._db.safe_url, len(lines), message, where
        )

    # --- direct writes ------------------------------------------------------------------------

    def prepare(self, record: AttemptRecord) -> AttemptRecord:
        """The record as it may be stored: no key in its free text, no prompt or answer when
        prompt logging is off. Done before anything reaches the disk, spool included."""
        update: dict[str, Any] = {}
        if not self.log_prompts:
            update["prompt"] = update["answer"] = None
        for name in REDACTED_FIELDS:
            value = update.get(name, getattr(record, name))
            if value is not None:
                clean = redact(value)
                if clean != value:
                    update[name] = clean
        return record.model_copy(update=update) if update else record

    def write(self, record: AttemptRecord) -> bool:
        try:
            row = row_of(self.prepare(record))
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            return self.failed(f"attempt {record.id}", exc)
        return self.insert(attempts, [row], f"attempt {record.id}")

    def write_many(self, records: Iterable[AttemptRecord], *, quiet: bool = False) -> int:
        try:
            rows = [row_of(self.prepare(record)) for record in records]
        except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
            if not quiet:
                self.failed("attempts", exc)
            return 0
        if not rows:
            return 0
        return len(rows) if self.insert(attempts, rows, f"{len(rows)} attempts", quiet=quiet) else 0

    def write_vote(self, vote: Vote) -> bool:
        row = {
            "id": vote.id,
            "created_at": vote.created_at,
            "created_ts": epoch(vote.created_at),
            "group_id": vote.group_id,
            "targets": json.dumps(list(vote.targets)),
            "winner": vote.winner,
        }
        return self.insert(votes_table, [row], f"vote {vote.id}")

    def insert(self, table: Table, rows: list[dict[str, Any]], what: str, *, quiet: bool = False) -> bool:
        """Insert rows in one transaction, all or nothing (a duplicate id fails them all)."""
        if self._db.closed:
            return False if quiet else self.failed(what, LogClosed())
        for attempt in range(WRITE_ATTEMPTS):
            try:
                self._db.ensure_schema()
                with self._db.engine.begin() as conn:
                    conn.execute(insert(table), rows[0] if len(rows) == 1 else rows)
                    if table is attempts:  # the rollups move with the rows, or neither does
                        ids = [row["id"] for row in rows]
                        for at in range(0, len(ids), _IDS_PER_STATEMENT):
                            conn.execute(self._db.rollup_upsert(), {"ids": ids[at : at + _IDS_PER_STATEMENT]})
                if table is attempts:
                    self._schema_refusal = None
                return True
            except Exception as exc:  # noqa: BLE001 - the promise is "never raises"
                if attempt < WRITE_ATTEMPTS - 1 and self._retry_now(exc, attempt):
                    continue
                return False if quiet else self.failed(what, exc)
        return False  # not reached: the last round returns from the except clause

    def failed(self, what: str, exc: BaseException) -> bool:
        message = self._db.describe(exc)
        if is_schema_mismatch(exc):
            self._schema_refusal = self._db.schema_mismatch(exc)
        with self._cond:
            self.write_errors += 1
            self.last_write_error = message
            self._last_error_at = _now()
        log.warning("request log: could not write %s to %s: %s", what, self._db.safe_url, message)
        return False

    # --- status and shutdown ----------------------------------------------------------------

    def health(self) -> LogHealth:
        with self._cond:
            spool = self._spool
            return LogHealth(
                pending=spool.pending,
                spool_files=spool.files,
                spooled_bytes=spool.bytes_waiting,
                in_memory=spool.in_memory,
                written=self.written,
                recovered=spool.stats.recovered_lines,
                write_errors=self.write_errors,
                rejected=self.rejected,
                corrupt_lines=spool.stats.corrupt_lines,
                spool_errors=spool.stats.spool_errors,
                database_ok=self._database_ok,
                last_error=self.last_write_error,
                last_error_at=self._last_error_at,
                spool_dir=str(spool.directory) if spool.directory is not None else None,
                schema_error=self._db.schema_error or self._schema_refusal,
            )

    def close(self, timeout: float = 30.0) -> None:
        """Write what is waiting (one more try), stop the thread, and let the spool files go:
        what could not be written stays in them for the next process that opens the log."""
        if self._thread is not None:
            self.flush(timeout)
        with self._cond:
            self._closed = True
            self._stopping = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            thread.join(timeout)
        self._let_go()

    def after_fork(self) -> None:
        """In a child forked from this process: the spool files, the waiting attempts and the
        writer thread are the parent's (the parent commits them). Start afresh: the child's
        first submit opens a spool file of its own."""
        self._spool.forget()
        self._spool = Spool(self._spool.directory, database_label=self._db.safe_url)
        self._cond = threading.Condition()  # another thread may have held it at the fork
        self._thread = None
        self._idle = False
        self._flush_upto = 0
        self._scanned = self._spool.directory is None

    def at_exit(self) -> None:
        """At interpreter exit: write what is waiting, then delete the spool files that are
        fully committed (the writer keeps running for daemon threads that still submit)."""
        if self._thread is not None:
            self.flush(timeout=10)
        with self._cond:
            if self._spool.pending == 0:
                self._spool.release()

    def _let_go(self) -> None:
        with self._cond:
            in_memory = self._spool.in_memory
            left = self._spool.release()
        if left:
            log.warning(
                "request log: %d attempt(s) not yet written stay in %s for the next start", left, self._spool.directory
            )
        if in_memory:
            log.warning("request log: %d attempt(s) that had no spool could not be written and are lost", in_memory)


def row_of(record: AttemptRecord) -> dict[str, Any]:
    # Its fields are all plain values, so its __dict__ is what model_dump() gives, at a
    # quarter of the cost (once per attempt, in the writer thread).
    row = dict(record.__dict__)
    row["created_ts"] = epoch(record.created_at)
    return row


def _encode(record: AttemptRecord) -> bytes:
    try:
        return record.model_dump_json().encode("utf-8") + b"\n"
    except ValueError:
        # Lone surrogates, which UTF-8 cannot encode: JSON's \\u escapes can carry them.
        return json.dumps(record.model_dump(mode="json")).encode("ascii") + b"\n"


def _decode(line: bytes) -> list[AttemptRecord | None]:
    """The record(s) in one spool line; None for what cannot be read."""
    if not line.strip():
        return []
    try:
        return [AttemptRecord.model_validate_json(line)]
    except ValueError:
        pass
    try:
        return [AttemptRecord.model_validate(json.loads(line))]
    except (ValueError, TypeError):
        pass
    if b"\x00" in line:
        # A power cut can leave zero-filled blocks where the end of a file was: lines never
        # hold a raw NUL (JSON escapes it), so read around them.
        return [found for part in line.split(b"\x00") if part.strip() for found in _decode(part)]
    return [None]


def _left(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


def _now() -> datetime:
    return datetime.now(UTC)
