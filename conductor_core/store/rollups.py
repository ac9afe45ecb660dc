"""Per-minute, per-provider sums of the attempts (`attempt_rollups`): what the dashboard,
`count()` and `provider_totals()` read, so their cost follows the minutes in a window, not
the rows in the log. Every insert into `attempts` adds to them in the same transaction;
`fill()` rebuilds them from the rows (a log from before rollups, a bulk import)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer, bindparam, cast, func, insert, inspect, literal_column, select, text
from sqlalchemy.sql.elements import ColumnElement

from .schema import ROLLUP_S, ROLLUP_SUMS, ROLLUPS_VERSION, attempt_rollups, attempts, schema_info

__all__ = ["bucket", "fill", "upgrade", "upsert_for_ids"]

_VERSION_KEY = "rollups_version"


def bucket(dialect: str, bucket_s: int, ts: ColumnElement[Any] = attempts.c.created_ts) -> ColumnElement[Any]:
    """The start of `ts`'s bucket of `bucket_s` seconds, in SQL."""
    # bucket_s goes in as a literal: with bound parameters PostgreSQL sees the SELECT and
    # GROUP BY expressions as different ($1 vs $2) and rejects the query.
    size: ColumnElement[Any] = literal_column(str(int(bucket_s)))
    if dialect == "sqlite":
        # SQLite's floor() exists only in builds with math functions; for positive
        # epochs truncation is floor.
        return cast(ts / size, Integer) * size
    return func.floor(ts / size) * size


def _select(dialect: str, *where: ColumnElement[bool]) -> Any:
    """Rollup rows for the attempts matching `where`, in key order (so PostgreSQL
    transactions updating the same rows lock them in one order and cannot deadlock)."""
    minute = bucket(dialect, ROLLUP_S)
    return (
        select(
            attempts.c.provider,
            minute.label("bucket_ts"),
            *(func.sum(expr).label(name) for name, expr in ROLLUP_SUMS.items()),
        )
        .where(*where)
        .group_by(attempts.c.provider, minute)
        .order_by(attempts.c.provider, minute)
    )


def _dialect_insert(dialect: str) -> Any:
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as dialect_insert
    else:
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    return dialect_insert


def upsert_for_ids(dialect: str) -> Any:
    """A statement that adds the rollups of the attempts whose ids are bound as `ids`.
    Build it once per engine: building costs more than running it."""
    dialect_insert = _dialect_insert(dialect)
    rows = _select(dialect, attempts.c.id.in_(bindparam("ids", expanding=True)))
    stmt = dialect_insert(attempt_rollups).from_select(["provider", "bucket_ts", *ROLLUP_SUMS], rows)
    return stmt.on_conflict_do_update(
        index_elements=[attempt_rollups.c.provider, attempt_rollups.c.bucket_ts],
        set_={name: attempt_rollups.c[name] + stmt.excluded[name] for name in ROLLUP_SUMS},
    )


def fill(conn: Any) -> None:
    """Recompute every rollup from the attempts, in `conn`'s transaction."""
    conn.execute(attempt_rollups.delete())
    conn.execute(
        insert(attempt_rollups).from_select(["provider", "bucket_ts", *ROLLUP_SUMS], _select(conn.dialect.name))
    )


def upgrade(conn: Any) -> bool:
    """Bring the rollups up to `ROLLUPS_VERSION` in `conn`'s transaction (which holds the
    schema lock): add the columns an older log lacks, then rebuild every rollup from the rows
    once, so old minutes follow today's rules too. True when it rebuilt them."""
    # A write first: on SQLite it takes the database's write lock for the rest of this
    # transaction, so processes starting at once upgrade one after the other (the second then
    # finds the work done) instead of both adding the same column or version row.
    claim = _dialect_insert(conn.dialect.name)(schema_info).values(key=_VERSION_KEY, value="0")
    conn.execute(claim.on_conflict_do_nothing(index_elements=[schema_info.c.key]))
    found = conn.execute(select(schema_info.c.value).where(schema_info.c.key == _VERSION_KEY)).scalar()
    has_rows = conn.execute(select(literal_column("1")).select_from(attempts).limit(1)).first() is not None
    if found is not None and int(found) >= ROLLUPS_VERSION:
        # Up to date, unless the rollups were lost (a table dropped by hand): rebuild them.
        if has_rows and conn.execute(select(literal_column("1")).select_from(attempt_rollups).limit(1)).first() is None:
            fill(conn)
            return True
        return False
    present = {column["name"] for column in inspect(conn).get_columns(attempt_rollups.name)}
    for column in attempt_rollups.columns:
        if column.name not in present:  # only counters are ever added
            kind = column.type.compile(dialect=conn.dialect)
            conn.execute(text(f"ALTER TABLE {attempt_rollups.name} ADD COLUMN {column.name} {kind} NOT NULL DEFAULT 0"))
    if has_rows:
        fill(conn)
    conn.execute(schema_info.update().where(schema_info.c.key == _VERSION_KEY).values(value=str(ROLLUPS_VERSION)))
    return has_rows
