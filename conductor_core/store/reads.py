"""Reading the log: rows for people (`records`), counts and sums for status and the
dashboard (`count`, `aggregate`, `provider_totals`, from the rollups where whole minutes
allow), DataFrames for charts (`frame`), the window that seeds live metrics
(`recent_for_metrics`), compare votes and the gateway's own overhead (`gateway_overhead`).

Reads raise on failure (unlike writes): a dashboard should say the log is unreachable, not
show an empty chart. Each read in the writing process flushes first (see `RequestLog`), so
it sees its own writes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from sqlalchemy import Boolean, Double, Integer, Table, func, select, union_all
from sqlalchemy.sql.elements import ColumnElement

from ..models import AttemptRecord, ProviderUsage, Vote
from . import rollups
from .database import Database
from .schema import (
    AGGREGATE_COLUMNS,
    ATTEMPT_FIELDS,
    FRAME_COLUMNS,
    ROLLUP_S,
    ROLLUP_SUMS,
    attempt_rollups,
    attempts,
    epoch,
    votes_table,
)

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

__all__ = ["NO_KEY", "GatewayOverhead", "LogReader"]

#: `key_id=NO_KEY` in a read: the attempts made without a gateway key (the playground, the
#: admin key, scripts). No key id is empty, so it cannot name a key.
NO_KEY = ""

_LABEL_COLUMNS = {"provider", "model", "route", "status", "error_type", "source"}
_STATUS_COLUMN = {"ok": "ok", "error": "errors", "incomplete": "incomplete"}
# frame() reads in chunks of this many rows (bounded extra memory, same speed).
_FETCH_CHUNK_ROWS = 50_000


#: gateway_overhead() reads at most this many of the newest rows: its percentiles stay cheap
#: to refresh every few seconds however long the window.
OVERHEAD_ROW_LIMIT = 20_000


class GatewayOverhead(NamedTuple):
    """Percentiles of the time gateway requests spent in Conductor (`x-conductor-overhead-ms`),
    per request (its attempts' shares summed), over the newest `requests` of a window."""

    requests: int
    p50_ms: float
    p99_ms: float


def _range(table: Table, since: datetime | None, until: datetime | None) -> list[ColumnElement[bool]]:
    where: list[ColumnElement[bool]] = []
    if since is not None:
        where.append(table.c.created_ts >= epoch(since))
    if until is not None:
        where.append(table.c.created_ts < epoch(until))
    return where


def _by_key(key_id: str | None) -> list[ColumnElement[bool]]:
    """The attempts made with one gateway key (`NO_KEY`: with none); None: every attempt."""
    if key_id is None:
        return []
    return [attempts.c.key_id.is_(None) if key_id == NO_KEY else attempts.c.key_id == key_id]


class LogReader:
    def __init__(self, database: Database) -> None:
        self._db = database

    def _filters(
        self,
        since: datetime | None,
        until: datetime | None,
        provider: str | None,
        status: str | None,
        request_id: str | None = None,
        key_id: str | None = None,
    ) -> list[ColumnElement[bool]]:
        where = _range(attempts, since, until) + _by_key(key_id)
        if request_id is not None:
            where.append(attempts.c.request_id == request_id)
        if provider is not None:
            where.append(attempts.c.provider == provider)
        if status is not None:
            where.append(attempts.c.status == status)
        return where

    def records(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        request_id: str | None = None,
        key_id: str | None = None,
    ) -> list[AttemptRecord]:
        self._db.ensure_schema()
        columns = [attempts.c[name] for name in ATTEMPT_FIELDS]
        stmt = (
            select(*columns)
            .where(*self._filters(since, until, provider, status, request_id, key_id))
            .order_by(attempts.c.created_ts.desc(), attempts.c.id.desc())
        )
        if limit is not None:
            stmt = stmt.limit(limit)
        with self._db.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [AttemptRecord.model_validate(dict(row)) for row in rows]

    def count(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        provider: str | None = None,
        status: str | None = None,
        limit: int | None = None,
        key_id: str | None = None,
    ) -> int:
        self._db.ensure_schema()
        if status is not None and status not in _STATUS_COLUMN:
            return 0  # no attempt has any other status
        cells = self._cells(since, until, key_id=key_id)
        column = cells.c[_STATUS_COLUMN[status] if status is not None else "requests"]
        stmt = select(func.coalesce(func.sum(column), 0))
        if provider is not None:
            stmt = stmt.where(cells.c.provider == provider)
        with self._db.engine.connect() as conn:
            total = int(conn.execute(stmt).scalar_one())
        return min(total, limit) if limit is not None else total

    def _cells(
        self, since: datetime | None, until: datetime | None, *, bucket_s: int = ROLLUP_S, key_id: str | None = None
    ) -> Any:
        """Sums per provider and `ts` covering exactly [since, until): whole minutes from the
        rollups, the partial minutes at either edge from the attempts themselves (one cell per
        attempt). For buckets that minutes do not divide evenly, every cell is an attempt; so
        is it for one key's attempts (`key_id`: the rollups do not keep keys apart), read
        through the (key_id, created_ts) index."""
        start = epoch(since) if since is not None else None
        end = epoch(until) if until is not None else None
        whole_from = -(-start // ROLLUP_S) * ROLLUP_S if start is not None else None  # ceil to the minute
        whole_to = end // ROLLUP_S * ROLLUP_S if end is not None else None
        use_rollups = (
            key_id is None
            and bucket_s % ROLLUP_S == 0
            and (whole_from is None or whole_to is None or whole_from <= whole_to)
        )

        def raw(lo: float | None, hi: float | None) -> Any:
            ts = attempts.c.created_ts
            where = ([ts >= lo] if lo is not None else []) + ([ts < hi] if hi is not None else []) + _by_key(key_id)
            return select(
                attempts.c.provider, ts.label("ts"), *(expr.label(name) for name, expr in ROLLUP_SUMS.items())
            ).where(*where)

        if not use_rollups:
            return raw(start, end).subquery("cells")
        r = attempt_rollups.c
        where = ([r.bucket_ts >= whole_from] if whole_from is not None else []) + (
            [r.bucket_ts < whole_to] if whole_to is not None else []
        )
        parts = [select(r.provider, r.bucket_ts.label("ts"), *(r[name] for name in ROLLUP_SUMS)).where(*where)]
        if start is not None and whole_from is not None and start < whole_from:
            parts.append(raw(start, whole_from))
        if end is not None and whole_to is not None and whole_to < end:
            parts.append(raw(whole_to, end))
        return (parts[0] if len(parts) == 1 else union_all(*parts)).subquery("cells")

    def frame(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        columns: Sequence[str] | None = None,
        key_id: str | None = None,
    ) -> pd.DataFrame:
        # Imported here, not at the top: only dashboards need them, and the router (which
        # imports the store in every process) starts faster without pandas.
        import pandas as pd

        self._db.ensure_schema()
        wanted = list(columns) if columns is not None else list(FRAME_COLUMNS)
        unknown = [name for name in wanted if name not in attempts.c or name == "created_ts"]
        if unknown:
            raise ValueError(f"unknown column(s) {unknown}; available: {list(ATTEMPT_FIELDS)}")
        # created_at is read from the float created_ts: parsing SQLite's datetime text for a
        # million rows would cost more than everything else together.
        selected = [attempts.c.created_ts if name == "created_at" else attempts.c[name] for name in wanted]
        if "created_at" not in wanted:
            selected.append(attempts.c.created_ts)  # needed to order the rows
        # No ORDER BY: rows come back in insertion order, which is almost always time order,
        # and checking (or sorting) in numpy is far cheaper than SQLite sorting the rows.
        matrix = self._fetch_matrix(select(*selected).where(*_range(attempts, since, until), *_by_key(key_id)))
        ts_position = wanted.index("created_at") if "created_at" in wanted else len(selected) - 1
        ts = matrix[:, ts_position].astype("float64")
        frame = pd.DataFrame(
            {name: _frame_column(name, matrix[:, position]) for position, name in enumerate(wanted)},
            columns=wanted,
        )
        if len(ts) > 1 and bool((ts[1:] < ts[:-1]).any()):
            frame = frame.iloc[ts.argsort(kind="stable")].reset_index(drop=True)
        return frame

    def _fetch_matrix(self, stmt: Any) -> np.ndarray:
        """Rows of a Core select as a 2-D object array, read from the DBAPI cursor directly.

        SQLAlchemy Row objects and ``pd.read_sql`` cost several times more per row. Chunks
        keep the peak memory near the size of the result instead of twice it."""
        import numpy as np

        width = len(stmt.selected_columns)
        chunks: list[np.ndarray] = []
        for rows in self._fetch_raw_chunks(stmt):
            chunk = np.array(rows, dtype=object)  # about twice as fast as filling np.empty
            if chunk.shape != (len(rows), width):  # a cell numpy took for a sequence: be exact
                chunk = np.empty((len(rows), width), dtype=object)
                chunk[:] = rows
            chunks.append(chunk)
        if not chunks:
            return np.empty((0, width), dtype=object)
        return chunks[0] if len(chunks) == 1 else np.concatenate(chunks)

    def _fetch_raw_chunks(self, stmt: Any, size: int = _FETCH_CHUNK_ROWS) -> Iterator[list[tuple[Any, ...]]]:
        """Run a Core select on the DBAPI cursor directly: plain tuples, no Row objects (and
        no bind processing: only numbers and plain ids, such as a key's, may be bound here)."""
        with self._db.engine.connect() as conn:
            compiled = stmt.compile(dialect=conn.dialect)
            params = compiled.construct_params()
            if compiled.positional:
                parameters: Any = tuple(params[name] for name in compiled.positiontup or ())
            else:
                parameters = params
            cursor = conn.connection.cursor()  # the pooled connection's: the driver's own cursor
            try:
                cursor.execute(str(compiled), parameters)
                while rows := cursor.fetchmany(size):
                    yield list(rows)
            finally:
                cursor.close()

    def _fetch_raw(self, stmt: Any) -> list[tuple[Any, ...]]:
        return [row for rows in self._fetch_raw_chunks(stmt) for row in rows]

    def aggregate(
        self,
        *,
        since: datetime | None = None,
        until: datetime | None = None,
        bucket_s: int,
        key_id: str | None = None,
    ) -> pd.DataFrame:
        if int(bucket_s) <= 0:
            raise ValueError("bucket_s must be a positive number of seconds")
        import pandas as pd

        self._db.ensure_schema()
        cells = self._cells(since, until, bucket_s=int(bucket_s), key_id=key_id)
        bucket = rollups.bucket(self._db.dialect, int(bucket_s), cells.c.ts)
        sums = {name: func.sum(cells.c[name]) for name in ROLLUP_SUMS}
        stmt = select(
            cells.c.provider,
            bucket.label("bucket"),
            *(
                sums[name]
                for name in ("requests", "first_attempts", "ok", "errors", "incomplete", "not_at_fault", "priced")
            ),
            sums["latency_sum_ms"] / func.nullif(sums["latency_n"], 0),
            sums["latency_n"],
            sums["ttft_sum_ms"] / func.nullif(sums["ttft_n"], 0),
            *(
                sums[name]
                for name in ("ttft_n", "generation_tokens", "generation_s", "cost_usd", "input_tokens", "output_tokens")
            ),
        ).group_by(cells.c.provider, bucket)
        frame = pd.DataFrame(self._fetch_raw(stmt), columns=list(AGGREGATE_COLUMNS))
        frame["bucket"] = pd.to_datetime(frame["bucket"].astype("float64"), unit="s", utc=True)
        for name in (
            "requests",
            "first_attempts",
            "ok",
            "errors",
            "incomplete",
            "not_at_fault",
            "priced",
            "latency_n",
            "ttft_n",
            "generation_tokens",
            "input_tokens",
            "output_tokens",
        ):
            frame[name] = frame[name].fillna(0).astype("int64")  # PostgreSQL sums come back as Decimal
        for name in ("mean_latency_ms", "mean_ttft_ms", "generation_s", "cost_usd"):
            frame[name] = frame[name].astype("float64")
        frame[["generation_s", "cost_usd"]] = frame[["generation_s", "cost_usd"]].fillna(0.0)
        frame["provider"] = frame["provider"].astype(object)
        return frame.sort_values(["bucket", "provider"], kind="stable").reset_index(drop=True)

    def provider_totals(self) -> dict[str, ProviderUsage]:
        self._db.ensure_schema()
        r = attempt_rollups.c
        stmt = select(
            r.provider,
            func.sum(r.requests),
            func.sum(r.ok),
            func.sum(r.input_tokens),
            func.sum(r.output_tokens),
            func.sum(r.cost_usd),
        ).group_by(r.provider)
        totals: dict[str, ProviderUsage] = {}
        for provider, total, ok, tokens_in, tokens_out, cost in self._fetch_raw(stmt):
            totals[provider] = ProviderUsage(
                total_requests=int(total),  # every attempt is a call to the provider
                total_attempts=int(total),
                successful_requests=int(ok or 0),
                failed_requests=int(total) - int(ok or 0),
                input_tokens=int(tokens_in or 0),
                output_tokens=int(tokens_out or 0),
                cost_usd=float(cost or 0.0),
            )
        return totals

    def usage_totals(self) -> ProviderUsage:
        self._db.ensure_schema()
        r = attempt_rollups.c
        stmt = select(
            *(
                func.coalesce(func.sum(column), 0)
                for column in (r.first_attempts, r.requests, r.ok, r.input_tokens, r.output_tokens, r.cost_usd)
            )
        )
        ((requests, attempted, ok, tokens_in, tokens_out, cost),) = self._fetch_raw(stmt)
        return ProviderUsage(
            total_requests=int(requests),
            total_attempts=int(attempted),
            successful_requests=int(ok),
            # A request succeeds at most once; a row of unknown position counts as a request.
            failed_requests=max(0, int(requests) - int(ok)),
            input_tokens=int(tokens_in),
            output_tokens=int(tokens_out),
            cost_usd=float(cost),
        )

    def recent_for_metrics(self, limit_per_provider: int, since: datetime) -> list[AttemptRecord]:
        self._db.ensure_schema()
        start = epoch(since)
        fields = [name for name in ATTEMPT_FIELDS if name not in ("prompt", "answer")]
        columns = [attempts.c[name] for name in fields]
        found: list[AttemptRecord] = []
        with self._db.engine.connect() as conn:
            providers = (
                conn.execute(select(attempts.c.provider).where(attempts.c.created_ts >= start).distinct())
                .scalars()
                .all()
            )
            for provider in providers:
                stmt = (
                    select(*columns)
                    .where(attempts.c.provider == provider, attempts.c.created_ts >= start)
                    .order_by(attempts.c.created_ts.desc(), attempts.c.id.desc())
                    .limit(limit_per_provider)
                )
                found.extend(AttemptRecord.model_validate(dict(row)) for row in conn.execute(stmt).mappings())
        found.sort(key=lambda record: (record.created_at, record.id))
        return found

    def gateway_overhead(self, since: datetime | None = None) -> GatewayOverhead | None:
        import numpy as np

        self._db.ensure_schema()
        a = attempts.c
        newest = (
            select(a.request_id, a.overhead_ms)
            .where(a.source == "gateway", a.overhead_ms.is_not(None), *_range(attempts, since, None))
            .order_by(a.created_ts.desc())
            .limit(OVERHEAD_ROW_LIMIT)
            .subquery()
        )
        stmt = select(func.sum(newest.c.overhead_ms)).group_by(newest.c.request_id)
        values = np.array([float(total) for (total,) in self._fetch_raw(stmt)], dtype="float64")
        if not len(values):
            return None
        p50, p99 = np.percentile(values, [50, 99])
        return GatewayOverhead(len(values), float(p50), float(p99))

    def votes(self, since: datetime | None = None) -> list[Vote]:
        self._db.ensure_schema()
        stmt = (
            select(*(votes_table.c[name] for name in ("id", "created_at", "group_id", "targets", "winner")))
            .where(*_range(votes_table, since, None))
            .order_by(votes_table.c.created_ts, votes_table.c.id)
        )
        with self._db.engine.connect() as conn:
            rows = conn.execute(stmt).mappings().all()
        return [Vote.model_validate({**row, "targets": json.loads(row["targets"])}) for row in rows]


def _frame_column(name: str, values: np.ndarray) -> Any:
    import numpy as np
    import pandas as pd

    if name == "created_at":
        # Via integer microseconds: a float epoch carries ~0.2 us of noise that would
        # otherwise show up as odd nanoseconds.
        micros = np.round(values.astype("float64") * 1_000_000).astype("int64")
        return pd.to_datetime(micros, unit="us", utc=True)
    if name in _LABEL_COLUMNS:
        # Sorted categories, so sorting or factorizing the column gives alphabetical
        # order; None becomes code -1, i.e. NaN.
        codes, categories = pd.factorize(values, sort=True)
        return pd.Categorical.from_codes(codes, categories=pd.Index(categories))
    column_type = attempts.c[name].type
    if isinstance(column_type, Double):
        return values.astype("float64")  # None becomes NaN
    if isinstance(column_type, Integer):
        # A column that may hold NULL (attempt_index) as float64, where None is NaN.
        return values.astype("float64" if attempts.c[name].nullable else "int64")
    if isinstance(column_type, Boolean):
        return values.astype("bool")  # SQLite gives 0/1
    return values  # free text and ids stay Python strings
