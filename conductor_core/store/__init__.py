"""The request log: every attempt at every provider, and every compare vote.

A SQLite file under ``data_dir`` by default (nothing to install or start), PostgreSQL when
``database_url`` says so (several processes, one shared history). SQLAlchemy 2 Core only:
the rows are flat and the hot paths (write, dashboard reads) want no ORM overhead.

One file, one job:

* ``schema.py``  tables, column types (`SafeText`: any text is storable), table creation
* ``database.py`` the engine, first-use schema and rollup migration, what an error means
* ``rollups.py`` per-minute sums kept with every insert, and their rebuild
* ``spool.py``   append-only spool files: durable between `submit()` and the commit
* ``writer.py``  `submit()` and the background batch writer; `write()`, `write_many()`, votes
* ``reads.py``   records, counts, frames, aggregates, totals, metrics seed, votes
* ``export.py``  CSV (formula-safe) and JSON downloads
* ``log.py``     `RequestLog`, the facade that the rest of Conductor holds

Promises kept here:

* Nothing is lost. `submit()` appends the attempt to a spool file before it returns (the
  router submits before the response is sent), so a finished request survives ``kill -9``;
  the spool is replayed by the next process that opens the database, and replaying is
  idempotent (see spool.py for what survives a power cut).
* Writes never raise into a request. A failure is counted once per attempt, logged
  (redacted) and shown by `RequestLog.health()`; submitted attempts are retried with backoff
  while the database is down, and rows the database refuses are set aside, not dropped.
* Any text is stored: NUL bytes (escaped on PostgreSQL) and lone surrogates included.
* No key reaches the disk: free text (error messages, prompts, answers) goes through
  ``redact()`` before it is spooled or written, and again on export.
* Dashboard reads are bounded: ``aggregate()``, ``count()`` and ``provider_totals()`` read
  the per-minute rollups, so their cost follows the minutes in the window, not the rows.
"""

from __future__ import annotations

from .log import RequestLog
from .schema import (
    AGGREGATE_COLUMNS,
    FRAME_COLUMNS,
    SafeString,
    SafeText,
    UTCDateTime,
    attempt_rollups,
    attempts,
    metadata,
    normalize_database_url,
    votes_table,
)
from .writer import LogHealth

__all__ = [
    "AGGREGATE_COLUMNS",
    "FRAME_COLUMNS",
    "LogHealth",
    "RequestLog",
    "SafeString",
    "SafeText",
    "UTCDateTime",
    "attempt_rollups",
    "attempts",
    "metadata",
    "normalize_database_url",
    "votes_table",
]
