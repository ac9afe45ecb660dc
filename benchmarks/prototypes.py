"""Prototypes of the core changes BENCHMARKS.md recommends, so their gain is measured in the
same run as the code they would replace (bench_dashboard, bench_request_log).
Nothing here is used by Conductor itself; each class is written so it could move into
conductor_core as is. (Three earlier prototypes have since landed in the core: a background
request-log writer, `RequestLog.submit`; a cached routing snapshot for AUTO,
`Conductor._routing_snapshot`; and compare threads released together, the `go` event in
`Conductor.compare`.)

* `LingeringRequestLog`: the shipped background writer (`RequestLog.submit`) wakes and
  commits once per attempt; this one lets attempts gather for up to `linger_s` (50 ms)
  after the first arrives and commits them as one batch. In a single process the writer
  thread competes with the request threads for the GIL, so a commit per request still costs
  the request path most of what a synchronous write cost; one commit per batch does not.
  `flush()` (every read) cuts the wait short, so reads still see their own writes at once.
* `RollupRequestLog`: every insert also adds its attempts to a per-minute, per-provider
  rollup table (an upsert in the same transaction), and the dashboard's reads (`count`,
  `aggregate`, `provider_totals`) sum rollups instead of scanning every attempt: their
  cost follows the window's minutes, not the log's rows.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Double, Integer, MetaData, String, Table, text
from sqlalchemy.schema import CreateTable

from conductor_core import store
from conductor_core.models import ProviderUsage
from conductor_core.store import _WRITE_ATTEMPTS, RequestLog, _epoch, _is_transient, attempts


class LingeringRequestLog(RequestLog):
    """`RequestLog` whose writer thread batches what arrives within `linger_s`. The body of
    `_drain` is the shipped one; the lines marked "linger" are the change."""

    linger_s = 0.05

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._cut_short = threading.Event()  # linger: set by flush()

    def flush(self, timeout: float | None = 30.0) -> bool:
        self._cut_short.set()  # linger: a reader does not wait out the linger
        return super().flush(timeout)

    def _drain(self) -> None:
        while True:
            first = self._queue.get()
            if first is not store._STOP:  # linger: let a batch gather
                self._cut_short.wait(self.linger_s)
                self._cut_short.clear()
            batch = [first]
            while len(batch) < store._BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            records = [item for item in batch if item is not store._STOP]
            if records:
                self._write_batch(records)
                with self._pending_cond:
                    self._pending -= len(records)
                    self._pending_cond.notify_all()
            if len(records) != len(batch):
                return


# --- rollups ---------------------------------------------------------------------------------

ROLLUP_S = 60
_rollup_metadata = MetaData()  # not the store's: its schema code must not see this table
rollups = Table(
    "attempt_rollups",
    _rollup_metadata,
    Column("provider", String(), primary_key=True),
    Column("bucket_ts", Double(), primary_key=True),  # start of the minute, epoch seconds
    Column("requests", Integer(), nullable=False),
    Column("ok", Integer(), nullable=False),
    Column("errors", Integer(), nullable=False),
    Column("incomplete", Integer(), nullable=False),
    Column("latency_sum_ms", Double(), nullable=False),  # over successful attempts with a latency
    Column("latency_n", Integer(), nullable=False),
    Column("cost_usd", Double(), nullable=False),  # unknown costs count 0, like aggregate()
    Column("input_tokens", Integer(), nullable=False),
    Column("output_tokens", Integer(), nullable=False),
)
_SUMMED = [c.name for c in rollups.columns if c.name not in ("provider", "bucket_ts")]


def _rollup_increments(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    cells: dict[tuple[str, float], dict[str, Any]] = {}
    for row in rows:
        key = (row["provider"], float(int(row["created_ts"] // ROLLUP_S) * ROLLUP_S))
        cell = cells.get(key)
        if cell is None:
            cell = cells[key] = {"provider": key[0], "bucket_ts": key[1], **{name: 0 for name in _SUMMED}}
        status = row["status"]
        cell["requests"] += 1
        cell["ok"] += status == "ok"
        cell["errors"] += status == "error"
        cell["incomplete"] += status == "incomplete"
        if status == "ok" and row["latency_ms"] is not None:
            cell["latency_sum_ms"] += row["latency_ms"]
            cell["latency_n"] += 1
        cell["cost_usd"] += row["cost_usd"] or 0.0
        cell["input_tokens"] += row["input_tokens"]
        cell["output_tokens"] += row["output_tokens"]
    return list(cells.values())


class RollupRequestLog(RequestLog):
    """A RequestLog that keeps per-minute rollups on write and reads them for dashboards."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rollups_ready = False
        self._upsert_stmt: Any = None

    def _ensure_schema(self) -> None:
        super()._ensure_schema()
        if not self._rollups_ready:
            with self._engine.begin() as conn:
                conn.execute(CreateTable(rollups, if_not_exists=True))
            self._rollups_ready = True

    def _upsert(self) -> Any:
        # Built once: constructing the statement costs more than executing it.
        if self._upsert_stmt is None:
            self._upsert_stmt = self._build_upsert()
        return self._upsert_stmt

    def _build_upsert(self) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(rollups)
        return stmt.on_conflict_do_update(
            index_elements=[rollups.c.provider, rollups.c.bucket_ts],
            set_={name: rollups.c[name] + stmt.excluded[name] for name in _SUMMED},
        )

    def _insert(self, table: Table, rows: list[dict[str, Any]], what: str, **kwargs: Any) -> bool:
        if table is not attempts:
            return super()._insert(table, rows, what, **kwargs)
        quiet = kwargs.get("quiet", False)
        if self._closed:
            return False if quiet else self._failed(what, RuntimeError("the request log is closed"))
        increments = _rollup_increments(rows)
        for attempt in range(_WRITE_ATTEMPTS):
            try:
                self._ensure_schema()
                with self._engine.begin() as conn:  # the attempt and its rollup: all or nothing
                    conn.execute(attempts.insert(), rows[0] if len(rows) == 1 else rows)
                    conn.execute(self._upsert(), increments[0] if len(increments) == 1 else increments)
                return True
            except Exception as exc:  # noqa: BLE001 - "never raises"
                if attempt < _WRITE_ATTEMPTS - 1 and _is_transient(exc):
                    time.sleep(0.02 * 2**attempt)
                    continue
                return False if quiet else self._failed(what, exc)
        return False

    def rebuild_rollups(self) -> None:
        """Rollups from the attempts already logged (a migration for an existing log)."""
        self.flush()
        self._ensure_schema()
        minute = f"CAST(created_ts / {ROLLUP_S} AS INTEGER) * {ROLLUP_S}"
        if self.dialect == "postgresql":
            minute = f"FLOOR(created_ts / {ROLLUP_S}) * {ROLLUP_S}"
        with self._engine.begin() as conn:
            conn.execute(rollups.delete())
            conn.execute(
                text(
                    f"INSERT INTO attempt_rollups ({', '.join(c.name for c in rollups.columns)}) "
                    f"SELECT provider, {minute}, COUNT(*), "
                    "SUM(CASE WHEN status = 'ok' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN status = 'error' THEN 1 ELSE 0 END), "
                    "SUM(CASE WHEN status = 'incomplete' THEN 1 ELSE 0 END), "
                    "COALESCE(SUM(CASE WHEN status = 'ok' THEN latency_ms END), 0), "
                    "SUM(CASE WHEN status = 'ok' AND latency_ms IS NOT NULL THEN 1 ELSE 0 END), "
                    "COALESCE(SUM(cost_usd), 0), SUM(input_tokens), SUM(output_tokens) "
                    f"FROM attempts GROUP BY provider, {minute}"
                )
            )

    # --- reads: whole minutes from rollups, the partial first minute from attempts ----------

    def _split(self, since: datetime) -> tuple[float, float]:
        start = _epoch(since)
        first_full = -(-start // ROLLUP_S) * ROLLUP_S  # ceil to the minute
        return start, float(first_full)

    def count(self, *, since: datetime | None = None, until: datetime | None = None, provider: str | None = None,
              status: str | None = None, limit: int | None = None) -> int:
        if until is not None or provider is not None or status is not None:
            return super().count(since=since, until=until, provider=provider, status=status, limit=limit)
        self.flush()
        self._ensure_schema()
        start, first_full = self._split(since) if since is not None else (float("-inf"), float("-inf"))
        with self._engine.connect() as conn:
            total = conn.execute(
                text("SELECT COALESCE(SUM(requests), 0) FROM attempt_rollups WHERE bucket_ts >= :m"), {"m": first_full}
            ).scalar_one()
            if since is not None:
                total += conn.execute(
                    text("SELECT COUNT(*) FROM attempts WHERE created_ts >= :s AND created_ts < :m"),
                    {"s": start, "m": first_full},
                ).scalar_one()
        total = int(total)
        return min(total, limit) if limit is not None else total

    def aggregate(self, *, since: datetime | None = None, until: datetime | None = None, bucket_s: int) -> Any:
        if until is not None or int(bucket_s) % ROLLUP_S != 0:
            return super().aggregate(since=since, until=until, bucket_s=bucket_s)
        import pandas as pd

        from conductor_core.store import AGGREGATE_COLUMNS

        self.flush()
        self._ensure_schema()
        size = int(bucket_s)
        start, first_full = self._split(since) if since is not None else (float("-inf"), float("-inf"))
        floor = "FLOOR(b / {size}) * {size}" if self.dialect == "postgresql" else "CAST(b / {size} AS INTEGER) * {size}"
        sql = (
            f"SELECT provider, {floor.format(size=size)} AS bucket, SUM(requests), SUM(ok), SUM(errors), SUM(incomplete), "
            "SUM(latency_sum_ms) / NULLIF(SUM(latency_n), 0), SUM(cost_usd), SUM(input_tokens), SUM(output_tokens) FROM ("
            "SELECT provider, bucket_ts AS b, requests, ok, errors, incomplete, latency_sum_ms, latency_n, cost_usd, "
            "input_tokens, output_tokens FROM attempt_rollups WHERE bucket_ts >= :m "
            "UNION ALL "
            "SELECT provider, created_ts AS b, 1, CASE WHEN status = 'ok' THEN 1 ELSE 0 END, "
            "CASE WHEN status = 'error' THEN 1 ELSE 0 END, CASE WHEN status = 'incomplete' THEN 1 ELSE 0 END, "
            "CASE WHEN status = 'ok' AND latency_ms IS NOT NULL THEN latency_ms ELSE 0 END, "
            "CASE WHEN status = 'ok' AND latency_ms IS NOT NULL THEN 1 ELSE 0 END, COALESCE(cost_usd, 0), "
            "input_tokens, output_tokens FROM attempts WHERE created_ts >= :s AND created_ts < :m"
            ") AS cells GROUP BY provider, bucket"
        )
        with self._engine.connect() as conn:
            rows = conn.execute(text(sql), {"m": first_full, "s": start}).all()
        frame = pd.DataFrame([tuple(r) for r in rows], columns=list(AGGREGATE_COLUMNS))
        frame["bucket"] = pd.to_datetime(frame["bucket"].astype("float64"), unit="s", utc=True)
        for name in ("requests", "ok", "errors", "incomplete", "input_tokens", "output_tokens"):
            frame[name] = frame[name].fillna(0).astype("int64")
        frame["mean_latency_ms"] = frame["mean_latency_ms"].astype("float64")
        frame["cost_usd"] = frame["cost_usd"].astype("float64").fillna(0.0)
        frame["provider"] = frame["provider"].astype(object)
        return frame.sort_values(["bucket", "provider"], kind="stable").reset_index(drop=True)

    def provider_totals(self) -> dict[str, ProviderUsage]:
        self.flush()
        self._ensure_schema()
        sql = (
            "SELECT provider, SUM(requests), SUM(ok), SUM(requests) - SUM(ok), SUM(input_tokens), "
            "SUM(output_tokens), SUM(cost_usd) FROM attempt_rollups GROUP BY provider"
        )
        with self._engine.connect() as conn:
            rows = conn.execute(text(sql)).all()
        return {
            provider: ProviderUsage(
                total_requests=int(total), successful_requests=int(ok or 0), failed_requests=int(failed or 0),
                input_tokens=int(tokens_in or 0), output_tokens=int(tokens_out or 0), cost_usd=float(cost or 0.0),
            )
            for provider, total, ok, failed, tokens_in, tokens_out, cost in rows
        }
