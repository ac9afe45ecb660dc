"""The database's schema is this code's: what happens when Conductor opens a database.

Schema changes are Alembic migrations (``migrations/versions/``), one history for the whole
database (the request log and the workbench's tables). On open (`ensure_current`):

* **Up to date** (``alembic_version`` holds `HEAD`): one SELECT and nothing else; Alembic is
  not even imported, so a process start stays fast.
* **Empty**: every migration runs, from nothing.
* **Made before migrations** (Conductor's tables, no ``alembic_version``): compared with the
  baseline (migrations/baseline.py). What older releases added later and this one may add
  itself (a workbench table never used, the rollups, a rollup counter, an index) is created;
  the database is then stamped at the baseline and upgraded in place. Anything else missing is
  a `SchemaMismatchError`, with nothing changed.
* **At an older revision**: upgraded.
* **At a revision this code does not know** (a newer release upgraded it):
  `DatabaseNewerError`, with nothing changed.

Every change runs in one transaction under a lock, so processes opening the database at once
take turns and the later ones find the work done: SQLite's write lock (BEGIN IMMEDIATE) and
PostgreSQL's advisory lock; both have transactional DDL, so a failed upgrade changes nothing.

By hand: ``python -m conductor_core.store upgrade`` (and ``current``, ``check``, ``history``,
``downgrade``, ``revision --autogenerate``): see __main__.py and the README's "Upgrading".
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import Column, Connection, DefaultClause, Engine, MetaData, create_engine, inspect, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.types import TypeDecorator

if TYPE_CHECKING:
    from alembic.config import Config

__all__ = [
    "BASELINE",
    "HEAD",
    "DatabaseNewerError",
    "SchemaError",
    "SchemaMismatchError",
    "alembic_config",
    "current_revisions",
    "differences",
    "downgrade",
    "ensure_current",
    "model_metadata",
    "new_revision",
    "refuse_unknown",
    "upgrade",
]

log = logging.getLogger("conductor.store")

#: The newest revision in migrations/versions/ (a test checks it is Alembic's head): what an
#: up-to-date database holds, checked on open without loading Alembic.
HEAD = "0014"
#: The schema of the last release before migrations (migrations/baseline.py).
BASELINE = "0001"
SCRIPT_DIR = Path(__file__).with_name("migrations")
#: pg_advisory_xact_lock's key: processes opening one PostgreSQL database change it in turn.
_PG_LOCK_KEY = 0x436F6E64  # "Cond"
#: How long a process opening a SQLite database waits while another one upgrades it.
SQLITE_MIGRATION_WAIT_S = 600


class SchemaError(RuntimeError):
    """The database's schema is not one this code can use. The message says what to run or
    which release to use; retrying does not help (unlike an outage)."""


class DatabaseNewerError(SchemaError):
    """A newer release upgraded the database: this code does not know its revision."""


class SchemaMismatchError(SchemaError):
    """The database has Conductor's tables, but not in a shape any migration starts from."""


def _rendered_type(type_: str, obj: Any, autogen_context: Any) -> str | bool:
    """Autogenerate writes a model's TypeDecorator (SafeText, UTCDateTime) as the plain type
    it stores: a migration must not import the models it predates."""
    if type_ == "type" and isinstance(obj, TypeDecorator):
        return "sa." + repr(obj.impl)
    return False


def _ours(name: str | None, type_: str, parent_names: Any) -> bool:
    """Whether autogenerate and the comparison look at this object: not the job queue's own
    tables (procrastinate_*, PostgreSQL only, revision 0012), which its library describes."""
    return not (type_ == "table" and (name or "").startswith(QUEUE_TABLE_PREFIX))


#: The job queue's tables (conductor_core/jobs): made by migration 0012 from the library's schema.
QUEUE_TABLE_PREFIX = "procrastinate_"

#: Alembic's options, the same for migrations, autogenerate and the comparison test.
CONTEXT_OPTIONS: dict[str, Any] = {
    "include_name": _ours,
    "render_as_batch": True,  # SQLite can only drop or change a column by copying its table
    "compare_type": True,
    "compare_server_default": True,
    "render_item": _rendered_type,
}


def model_metadata() -> list[MetaData]:
    """Every table the code expects: the log's and the workbench's (imported here, not at the
    top: the store does not otherwise depend on the workbench)."""
    from ..keys import store as keys
    from ..team import store as team
    from ..workbench import arena, dataset_store, experiments, prompts, sessions
    from . import schema

    return [
        schema.metadata,
        sessions.metadata,
        arena.metadata,
        experiments.metadata,
        dataset_store.metadata,
        prompts.metadata,
        keys.metadata,
        team.metadata,
    ]


def alembic_config(connection: Connection | None = None) -> Config:
    """An Alembic Config built in code (no alembic.ini): our script directory, and the
    connection every command runs on (env.py takes it from `attributes`)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(SCRIPT_DIR))
    config.set_main_option("path_separator", "os")
    config.set_main_option("file_template", "%%(rev)s_%%(slug)s")
    config.attributes["connection"] = connection
    return config


# --- on open ---------------------------------------------------------------------------------


_READ_VERSION = text("SELECT version_num FROM alembic_version")


def current_revisions(conn: Connection) -> tuple[str, ...]:
    """What ``alembic_version`` holds; () when the table does not exist (an empty database,
    or one made before migrations)."""
    if not inspect(conn).has_table("alembic_version"):
        return ()
    return tuple(sorted(conn.execute(_READ_VERSION).scalars()))


def ensure_current(engine: Engine, label: str) -> bool:
    """Bring the database to `HEAD` if it is not there (see the module docstring). True when
    it changed something. `label` names the database in messages (no password)."""
    with engine.connect() as conn:
        try:
            if tuple(conn.execute(_READ_VERSION).scalars()) == (HEAD,):
                return False  # the fast path: one statement
        except sa_exc.DBAPIError as exc:
            message = str(getattr(exc, "orig", exc)).lower()
            if not ("alembic_version" in message and ("no such table" in message or "does not exist" in message)):
                raise
    return upgrade(engine, label) != ()


def upgrade(engine: Engine, label: str, target: str = "head") -> tuple[str, ...]:
    """Upgrade (adopting a database made before migrations) to `target`, under the lock.
    Returns the revisions it started from; () if there was nothing to do."""
    from alembic import command

    with _locked(engine) as conn:
        before = current_revisions(conn)
        refuse_unknown(before, label)
        if not before and _has_conductor_tables(conn):
            _adopt(conn, label)
            command.stamp(alembic_config(conn), BASELINE)
            before = (f"{BASELINE} (adopted)",)
        command.upgrade(alembic_config(conn), target)
        after = current_revisions(conn)
    if after == before:
        return ()
    log.warning(
        "request log: upgraded the schema of %s from %s to %s", label, ", ".join(before) or "nothing", ", ".join(after)
    )
    return before or ("nothing",)


def downgrade(engine: Engine, label: str, target: str) -> tuple[str, ...]:
    """Downgrade to `target` (a revision, or "base" for nothing), under the lock."""
    from alembic import command

    with _locked(engine) as conn:
        before = current_revisions(conn)
        refuse_unknown(before, label)
        command.downgrade(alembic_config(conn), target)
    return before


def differences(engine: Engine) -> list[Any]:
    """What autogenerate finds between the models (`model_metadata`) and the database: []
    when the migrations built exactly what the code expects."""
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    models = MetaData()  # compare_metadata takes one
    for metadata in model_metadata():
        for table in metadata.tables.values():
            table.to_metadata(models)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={**CONTEXT_OPTIONS, "target_metadata": models})
        return list(compare_metadata(context, models))


def new_revision(message: str, *, autogenerate: bool, engine: Engine | None = None) -> Path:
    """Write the next revision file into migrations/versions/. With `autogenerate`, its
    operations are what the models have that the database (by default a scratch SQLite file
    upgraded to head) lacks: review them before committing."""
    from alembic import command
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(SCRIPT_DIR))
    head = script.get_current_head()
    rev_id = f"{int(head or 0) + 1:04d}"
    with tempfile.TemporaryDirectory() as scratch:
        target = engine if engine is not None else create_engine(f"sqlite:///{Path(scratch) / 'head.db'}")
        try:
            if engine is None:
                upgrade(target, "a scratch database")
            with _locked(target) as conn:
                if current_revisions(conn) != ((head,) if head else ()):
                    raise SchemaError(f"the database is not at the newest revision ({head}): upgrade it first")
                made = command.revision(alembic_config(conn), message, autogenerate=autogenerate, rev_id=rev_id)
        finally:
            if engine is None:
                target.dispose()
    assert made is not None and not isinstance(made, list)
    return Path(made.path)


# --- the parts ---------------------------------------------------------------------------------


@contextmanager
def _locked(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that holds the schema lock; committed if the block ends
    normally, rolled back otherwise."""
    with engine.connect() as conn:
        wait_ms: int | None = None
        try:
            if conn.dialect.name == "sqlite":
                # The write lock from the first statement on (a plain BEGIN takes it only at
                # the first write). Another process upgrading a big log may hold it for a while.
                wait_ms = int(conn.exec_driver_sql("PRAGMA busy_timeout").scalar() or 0)
                conn.exec_driver_sql(f"PRAGMA busy_timeout={SQLITE_MIGRATION_WAIT_S * 1000}")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            elif conn.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            if wait_ms is not None:  # the connection goes back to the pool as it came
                conn.exec_driver_sql(f"PRAGMA busy_timeout={wait_ms}")
                conn.commit()


def refuse_unknown(revisions: tuple[str, ...], label: str) -> None:
    """`DatabaseNewerError` when `revisions` (a database's) include one this code does not know."""
    if not revisions or revisions == (HEAD,):
        return
    from alembic.script import ScriptDirectory

    script = ScriptDirectory(str(SCRIPT_DIR))
    known = {found.revision for found in script.walk_revisions()}
    unknown = [revision for revision in revisions if revision not in known]
    if unknown:
        raise DatabaseNewerError(
            f"The database {label} is at schema revision {', '.join(unknown)}, which this release of Conductor does "
            f"not know (its newest is {HEAD}): a newer release upgraded it. Run that release or a newer one "
            "against this database, or point CONDUCTOR_DATABASE_URL (or CONDUCTOR_DATA_DIR) at another one. "
            "Nothing was changed."
        )


def _has_conductor_tables(conn: Connection) -> bool:
    from .migrations.baseline import baseline_tables

    return bool(set(inspect(conn).get_table_names()) & set(baseline_tables().tables))


def _adopt(conn: Connection, label: str) -> None:
    """Give a database made before migrations the baseline's shape, or refuse (nothing
    changed) when it lacks something no release ever added later."""
    from alembic.operations import Operations
    from alembic.runtime.migration import MigrationContext

    from .migrations.baseline import baseline_tables

    baseline = baseline_tables()
    found = inspect(conn)
    present = set(found.get_table_names())
    missing: dict[str, list[Column[Any]]] = {}
    for table in baseline.sorted_tables:
        if table.name in present:
            have = {column["name"] for column in found.get_columns(table.name)}
            gone = [column for column in table.columns if column.name not in have]
            if gone:
                missing[table.name] = gone
    # Only counters with a default were ever added to an existing table (the rollups'
    # not_at_fault): anything else missing means this is not a database any release made.
    unknown = {name: [c.name for c in gone if c.server_default is None] for name, gone in missing.items()}
    unknown = {name: columns for name, columns in unknown.items() if columns}
    if unknown:
        details = "; ".join(f"table {name} lacks {', '.join(columns)}" for name, columns in sorted(unknown.items()))
        raise SchemaMismatchError(
            f"The database {label} has Conductor's tables, but not in a shape this release can upgrade ({details}). "
            "Nothing was changed. Point CONDUCTOR_DATABASE_URL (or CONDUCTOR_DATA_DIR) at a new database, or restore "
            "this one from a backup; `python -m conductor_core.store check` lists every difference."
        )
    ops = Operations(MigrationContext.configure(conn))
    absent = [table for table in baseline.sorted_tables if table.name not in present]
    if absent:
        # Releases before migrations created a module's tables on its first use.
        log.warning("request log: %s lacked %s: created", label, ", ".join(table.name for table in absent))
    for table in baseline.sorted_tables:
        if table.name not in present:
            table.create(conn)  # with its indexes
            continue
        for column in missing.get(table.name, []):
            default = column.server_default
            # Only columns with a default are added (above); the baseline's are plain text ("0").
            assert isinstance(default, DefaultClause) and isinstance(default.arg, str)
            ops.add_column(
                table.name, Column(column.name, column.type, nullable=column.nullable, server_default=default.arg)
            )
        indexed = {index["name"] for index in found.get_indexes(table.name)}
        for index in table.indexes:
            if index.name not in indexed:
                index.create(conn)
