"""Per-minute, per-provider sums of the attempts (`attempt_rollups`): what the dashboard,
`count()` and `provider_totals()` read, so their cost follows the minutes in a window, not
the rows in the log. Every insert into `attempts` adds to them in the same transaction;
`fill()` rebuilds them from the rows (a bulk import). How each column sums is
rollup_rules.py's current rule; a change of rule is a migration that rebuilds them."""

from __future__ import annotations

from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.sql.elements import ColumnElement

from . import rollup_rules
from .schema import ROLLUP_S, ROLLUP_SUMS, attempt_rollups, attempts

__all__ = ["bucket", "fill", "upsert_for_ids"]


def bucket(dialect: str, bucket_s: int, ts: ColumnElement[Any] = attempts.c.created_ts) -> ColumnElement[Any]:
    """The start of `ts`'s bucket of `bucket_s` seconds, in SQL."""
    return rollup_rules.bucket(dialect, bucket_s, ts)


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


def dialect_insert(dialect: str) -> Any:
    """The dialect's `insert` (it has `on_conflict_do_*`): PostgreSQL's or SQLite's."""
    from sqlalchemy.dialects import postgresql, sqlite

    return postgresql.insert if dialect == "postgresql" else sqlite.insert


def upsert_for_ids(dialect: str) -> Any:
    """A statement that adds the rollups of the attempts whose ids are bound as `ids`.
    Build it once per engine: building costs more than running it."""
    rows = _select(dialect, attempts.c.id.in_(bindparam("ids", expanding=True)))
    stmt = dialect_insert(dialect)(attempt_rollups).from_select(["provider", "bucket_ts", *ROLLUP_SUMS], rows)
    return stmt.on_conflict_do_update(
        index_elements=[attempt_rollups.c.provider, attempt_rollups.c.bucket_ts],
        set_={name: attempt_rollups.c[name] + stmt.excluded[name] for name in ROLLUP_SUMS},
    )


def fill(conn: Any) -> None:
    """Recompute every rollup from the attempts (the current rule), in `conn`'s transaction."""
    rollup_rules.rebuild(conn, rollup_rules.CURRENT)
