"""The request log: every attempt at every provider, and every compare vote.

A SQLite file under ``data_dir`` by default (nothing to install or start), PostgreSQL when
``database_url`` says so (several processes, one shared history). SQLAlchemy 2 Core only:
the rows are flat and the hot paths (write, dashboard reads) want no ORM overhead.

One file, one job:

* ``schema.py``  tables and column types (`SafeText`: any text is storable), as the code expects
* ``migrate.py`` the schema brought to the code's on open (Alembic; ``migrations/``), or a
                 clear `SchemaError`; ``python -m conductor_core.store`` does it by hand
* ``database.py`` the engine, first-use schema check, what an error means
* ``rollups.py`` per-minute sums kept with every insert, and their rebuild
* ``rollup_rules.py`` how each rollup column sums the attempts, by rule (append-only)
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
* The schema is this code's, or nothing is written: a database made before migrations is
  upgraded in place on open; one a newer release upgraded is a clear error (`SchemaError`,
  also in `health().schema_error`), never an outage retried for ever.
* Dashboard reads are bounded: ``aggregate()``, ``count()`` and ``provider_totals()`` read
  the per-minute rollups, so their cost follows the minutes in the window, not the rows.
"""

from __future__ import annotations

from .log import NO_KEY, RequestLog
from .migrate import DatabaseNewerError, SchemaError, SchemaMismatchError
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
    "NO_KEY",
    "DatabaseNewerError",
    "LogHealth",
    "RequestLog",
    "SchemaError",
    "SchemaMismatchError",
    "SafeString",
    "SafeText",
    "UTCDateTime",
    "attempt_rollups",
    "attempts",
    "metadata",
    "normalize_database_url",
    "votes_table",
]
