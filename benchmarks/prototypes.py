"""Prototypes of the core changes BENCHMARKS.md recommends, so their gain is measured in the
same run as the code they would replace (bench_overhead --prototypes). Nothing here is used
by Conductor itself; each class is written so it could move into conductor_core as is.

* `BackgroundRequestLog`: `write()` queues the record and returns; one writer thread turns
  queued records into rows and inserts them in batches (one transaction per batch). Every
  read first waits for the queue to drain, so a process still reads its own writes.
* `CachedRoutingConductor`: AUTO ranks providers on a metrics snapshot at most
  `max_age_s` old instead of recomputing percentiles over the window on every request.
* `GatedCompareConductor`: `compare` starts every target's thread first and only then lets
  them all go (one Event). `Thread.start()` waits for the new thread to run, and a thread
  that is building its SDK request holds the GIL for up to the 5 ms switch interval, so
  starting them one after the other delays the last target's request by ~5 ms a target.
* `RollupRequestLog`: every insert also adds its attempts to a per-minute, per-provider
  rollup table (an upsert in the same transaction), and the dashboard's reads (`count`,
  `aggregate`, `provider_totals`) sum rollups instead of scanning every attempt: their
  cost follows the window's minutes, not the log's rows.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from typing import Any

from sqlalchemy import Column, Double, Integer, MetaData, String, Table, text
from sqlalchemy.schema import CreateTable

from conductor_core.errors import BadRequestError, ProviderError
from conductor_core.models import AttemptRecord, CompareEvent, ProviderUsage, new_id
from conductor_core.router import Conductor, _Route, _Score
from conductor_core.store import _WRITE_ATTEMPTS, RequestLog, _epoch, _is_transient, attempts

_STOP = object()


class BackgroundRequestLog(RequestLog):
    """A RequestLog whose `write()` costs a queue put on the caller's thread."""

    def __init__(self, *args: Any, max_batch: int = 500, linger_s: float = 0.0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_batch = max_batch
        # How long the writer lets records gather before a batch: one transaction (and one
        # wake-up of this thread, competing for the GIL) per batch instead of per record.
        self._linger_s = linger_s
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._pending = 0
        self._drained = threading.Condition()
        self._writer = threading.Thread(target=self._drain, name="request-log-writer", daemon=True)
        self._writer.start()

    def write(self, record: AttemptRecord) -> bool:
        if self._closed:
            return self._failed(f"attempt {record.id}", RuntimeError("the request log is closed"))
        with self._drained:
            self._pending += 1
        self._queue.put(record)
        return True  # queued: a failed insert is counted in write_errors, as before

    def _drain(self) -> None:
        while True:
            item = self._queue.get()
            if self._linger_s and item is not _STOP:
                time.sleep(self._linger_s)
            batch = [item]
            while len(batch) < self._max_batch:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            records = [r for r in batch if r is not _STOP]
            if records:
                self._insert_batch(records)
            with self._drained:
                self._pending -= len(records)
                self._drained.notify_all()
            if len(records) != len(batch):
                return

    def _insert_batch(self, records: list[AttemptRecord]) -> None:
        rows = []
        for record in records:
            try:
                rows.append(self._attempt_row(record))
            except Exception as exc:  # noqa: BLE001 - "never raises", as write()
                self._failed(f"attempt {record.id}", exc)
        if not rows:
            return
        if len(rows) == 1 or not self._insert_quiet(rows):
            # One bad row must not lose its batch: retry one by one (each counts its failure).
            for row in rows:
                self._insert(attempts, [row], f"attempt {row['id']}")

    def _insert_quiet(self, rows: list[dict[str, Any]]) -> bool:
        try:
            self._ensure_schema()
            with self._engine.begin() as conn:
                conn.execute(attempts.insert(), rows)
            return True
        except Exception:  # noqa: BLE001 - the row-by-row retry reports it
            return False

    def flush(self, timeout: float | None = 30.0) -> bool:
        """Wait until every queued record is written (or failed)."""
        with self._drained:
            return self._drained.wait_for(lambda: self._pending == 0, timeout)

    # Reads see every write made before them in this process.
    def records(self, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return super().records(*args, **kwargs)

    def count(self, *args: Any, **kwargs: Any) -> int:
        self.flush()
        return super().count(*args, **kwargs)

    def frame(self, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return super().frame(*args, **kwargs)

    def aggregate(self, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return super().aggregate(*args, **kwargs)

    def provider_totals(self) -> Any:
        self.flush()
        return super().provider_totals()

    def recent_for_metrics(self, *args: Any, **kwargs: Any) -> Any:
        self.flush()
        return super().recent_for_metrics(*args, **kwargs)

    def close(self) -> None:
        if not self._closed:
            self.flush()
            self._queue.put(_STOP)
            self._writer.join(timeout=30)
        super().close()


class CachedRoutingConductor(Conductor):
    """AUTO scores from a per-provider metrics snapshot cached for `max_age_s` seconds."""

    routing_snapshot_max_age_s = 1.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._routing_snapshots: dict[str, tuple[float, Any]] = {}

    def _score(self, p: Any, request: Any, streaming: bool) -> _Score:
        now = time.monotonic()
        cached = self._routing_snapshots.get(p.name)
        if cached is None or now - cached[0] > self.routing_snapshot_max_age_s:
            cached = self._routing_snapshots[p.name] = (now, self.metrics.snapshot(p.name))
        snap = cached[1]
        ttft = snap.performance.p50_ttft_ms if streaming else None
        return _Score(
            samples=snap.samples,
            latency_ms=ttft or snap.performance.p50_latency_ms,
            latency_kind="time to first token" if ttft else "latency",
            success=snap.success_rate,
            cost=self._estimated_cost(p, request),
        )



class GatedCompareConductor(Conductor):
    """`Conductor.compare` with its target threads released together (see the module doc).
    The body is the shipped one; the lines marked "gate" are the change."""

    def compare(self, request: Any, targets: list[Any], *, overrides: Any = None) -> Any:
        if not 2 <= len(targets) <= 4:
            raise BadRequestError(f"a compare takes 2 to 4 targets, got {len(targets)}", status_code=400)
        if any(t.provider == "auto" for t in targets):
            raise BadRequestError("compare targets name a provider; 'auto' is not a target", status_code=400)
        group_id = new_id("cmp")
        events: queue.Queue[Any] = queue.Queue()
        cancelled = threading.Event()
        go = threading.Event()  # gate

        def run(index: int, target: Any) -> None:
            go.wait()  # gate: every thread is started before any builds its request
            sub = request.model_copy(update={"provider": target.provider, "model": target.model})
            route = _Route(sub, "compare", None, group_id)
            try:
                for event in self.stream(sub, overrides=overrides, _route=route):
                    if cancelled.is_set():
                        return
                    events.put(CompareEvent(index=index, target=target, group_id=group_id, event=event))
            except ProviderError as error:
                events.put(CompareEvent(index=index, target=target, group_id=group_id, error=error.to_response(route.request_id)))
            except Exception as exc:  # noqa: BLE001
                logging.getLogger("conductor.router").exception("compare target %s crashed", target.label)
                err = ProviderError(f"{target.label} failed unexpectedly: {exc}", provider=target.provider)
                events.put(CompareEvent(index=index, target=target, group_id=group_id, error=err.to_response()))
            finally:
                events.put(None)

        threads = [threading.Thread(target=run, args=(i, t), name=f"compare-{i}", daemon=True) for i, t in enumerate(targets)]
        for thread in threads:
            thread.start()
        go.set()  # gate
        running = len(threads)
        try:
            while running:
                item = events.get()
                if item is None:
                    running -= 1
                else:
                    yield item
        finally:
            cancelled.set()
            go.set()  # gate: never leave a thread waiting


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

    def _ensure_schema(self) -> None:
        super()._ensure_schema()
        if not self._rollups_ready:
            with self._engine.begin() as conn:
                conn.execute(CreateTable(rollups, if_not_exists=True))
            self._rollups_ready = True

    def _upsert(self) -> Any:
        if self.dialect == "postgresql":
            from sqlalchemy.dialects.postgresql import insert as dialect_insert
        else:
            from sqlalchemy.dialects.sqlite import insert as dialect_insert
        stmt = dialect_insert(rollups)
        return stmt.on_conflict_do_update(
            index_elements=[rollups.c.provider, rollups.c.bucket_ts],
            set_={name: rollups.c[name] + stmt.excluded[name] for name in _SUMMED},
        )

    def _insert(self, table: Table, rows: list[dict[str, Any]], what: str) -> bool:
        if table is not attempts:
            return super()._insert(table, rows, what)
        if self._closed:
            return self._failed(what, RuntimeError("the request log is closed"))
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
                return self._failed(what, exc)
        return False

    def rebuild_rollups(self) -> None:
        """Rollups from the attempts already logged (a migration for an existing log)."""
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
