"""How each per-minute rollup column sums the attempts, by rule number: the one definition,
used by every insert (through `schema.ROLLUP_SUMS`, the current rule), by `rollups.fill()`
and by the migrations that rebuild the rollups.

Append-only. A migration names the rule it rebuilds with, and must rebuild the same way for
ever, whatever the code does later: so a rule, once released, never changes. Changing a sum
or adding a counter is a new rule (`CURRENT` moves to it) and a migration that adds the
column and calls `rebuild(conn, new_rule)`. The rules read only the columns of the
attempts table that existed when they were written, named here, not the live models.

Rule 2: the sums of the release before migrations (its ROLLUPS_VERSION 2).
Rule 3: rule 2 plus `first_attempts` (attempts with `attempt_index` 0: requests; an attempt
        whose position is unknown, NULL, counts as a request of its own), and `internal_error`
        (a bug in Conductor, new in the same release) among the failures that are not the
        provider's.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Double, Integer, String, case, cast, column, func, insert, literal_column, or_, select, table
from sqlalchemy.sql.elements import ColumnClause, ColumnElement

__all__ = ["CURRENT", "EXCUSED", "ROLLUP_S", "bucket", "rebuild", "sums"]

#: The rule new rows are summed by.
CURRENT = 3
#: Seconds in one rollup bucket.
ROLLUP_S = 60
#: Failures that do not count against a provider (errors.NOT_PROVIDER_FAULTS), as each rule
#: knew them. A test checks the current rule's set against errors.NOT_PROVIDER_FAULTS.
EXCUSED: dict[int, frozenset[str]] = {
    2: frozenset({"bad_request", "cancelled", "busy", "circuit_open"}),
    3: frozenset({"bad_request", "cancelled", "busy", "circuit_open", "internal_error"}),
}


def bucket(dialect: str, bucket_s: int, ts: ColumnElement[Any]) -> ColumnElement[Any]:
    """The start of `ts`'s bucket of `bucket_s` seconds, in SQL."""
    # bucket_s goes in as a literal: with bound parameters PostgreSQL sees the SELECT and
    # GROUP BY expressions as different ($1 vs $2) and rejects the query.
    size: ColumnElement[Any] = literal_column(str(int(bucket_s)))
    if dialect == "sqlite":
        # SQLite's floor() exists only in builds with math functions; for positive
        # epochs truncation is floor.
        return cast(ts / size, Integer) * size
    return func.floor(ts / size) * size


def sums(a: Any, rule: int = CURRENT) -> dict[str, ColumnElement[Any]]:
    """Each rollup column of `rule` as a per-attempt SQL expression over the attempts
    columns `a` (summed per provider and minute)."""
    if rule not in EXCUSED:
        raise ValueError(f"no rollup rule {rule}; known: {sorted(EXCUSED)}")
    ok = a.status == "ok"
    timed = ok & a.latency_ms.is_not(None)
    first = ok & a.ttft_ms.is_not(None)
    # Tokens per second is over streamed successes with at least two tokens: the tokens after
    # the first over the time after the first (the rule of BaseProvider's figures and of
    # dashboard_data.series_from_frame): the first token's wait is not generation.
    generating = timed & first & (a.latency_ms > a.ttft_ms) & (a.output_tokens >= 2)
    # Inlined constants, not bound parameters: these expressions are also compiled into
    # statements that SQLAlchemy cannot expand an IN list in (INSERT ... SELECT, unions).
    excused = or_(*(a.error_type == literal_column(f"'{kind}'") for kind in sorted(EXCUSED[rule])))
    found: dict[str, ColumnElement[Any]] = {
        "requests": literal_column("1"),  # attempts (the column's name predates rule 3)
        "ok": case((ok, 1), else_=0),
        "errors": case((a.status == "error", 1), else_=0),
        "incomplete": case((a.status == "incomplete", 1), else_=0),
        "not_at_fault": case((~ok & excused, 1), else_=0),
        "priced": case((a.cost_usd.is_not(None), 1), else_=0),
        "latency_sum_ms": case((timed, a.latency_ms), else_=0.0),
        "latency_n": case((timed, 1), else_=0),
        "ttft_sum_ms": case((first, a.ttft_ms), else_=0.0),
        "ttft_n": case((first, 1), else_=0),
        "generation_tokens": case((generating, a.output_tokens - 1), else_=0),
        "generation_s": case((generating, (a.latency_ms - a.ttft_ms) / 1000.0), else_=0.0),
        "cost_usd": func.coalesce(a.cost_usd, 0.0),
        "input_tokens": a.input_tokens,
        "output_tokens": a.output_tokens,
    }
    if rule >= 3:
        found["first_attempts"] = case(
            (or_(a.attempt_index == literal_column("0"), a.attempt_index.is_(None)), 1), else_=0
        )
    return found


def _attempts(rule: int) -> Any:
    """The attempts columns `rule` reads, typed as stored."""
    columns: list[ColumnClause[Any]] = [
        column("id", String()),
        column("provider", String()),
        column("created_ts", Double()),
        column("status", String()),
        column("error_type", String()),
        column("input_tokens", Integer()),
        column("output_tokens", Integer()),
        column("latency_ms", Double()),
        column("ttft_ms", Double()),
        column("cost_usd", Double()),
    ]
    if rule >= 3:
        columns.append(column("attempt_index", Integer()))
    return table("attempts", *columns)


def rebuild(conn: Any, rule: int = CURRENT) -> None:
    """Recompute every rollup from the attempts by `rule`, in `conn`'s transaction (the
    rollups table must have that rule's columns)."""
    a = _attempts(rule).c
    found = sums(a, rule)
    rollups = table("attempt_rollups", column("provider"), column("bucket_ts"), *(column(name) for name in found))
    minute = bucket(conn.dialect.name, ROLLUP_S, a.created_ts)
    rows = select(a.provider, minute.label("bucket_ts"), *(func.sum(e).label(n) for n, e in found.items())).group_by(
        a.provider, minute
    )
    conn.execute(rollups.delete())
    conn.execute(insert(rollups).from_select(["provider", "bucket_ts", *found], rows))
