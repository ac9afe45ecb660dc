"""Live rolling metrics per provider: what AUTO routing and the status page read.

Pure and thread-safe: no I/O, no SDKs. `record()` is on the hot path of every request, so
it only appends to a bounded deque and bumps a few counters (O(1) amortised); sorting
and percentiles happen in `snapshot()`, over the small window.

Two kinds of numbers, on purpose:

* **Windowed** (performance, success rate, sample count): the last `window_size`
  attempts that are also younger than `window_s`. Memory is bounded by the window,
  whatever the number of requests ever made, and a provider that recovered an hour
  ago is not punished for what it did yesterday.
* **Cumulative** (usage totals, consecutive failures, last error): since the process
  started or since `seed()`. Unknown costs (None) add 0 to the total.

An entry's time is the attempt's ``created_at``, not the time `record()` ran, so records
replayed from the request log after a restart land where they belong in the window.

Failures that are not the provider's fault (`conductor_core.errors.provider_at_fault`: a bad
request, a stopped stream, a call Conductor refused itself) count in the usage totals only:
they stay out of the window, the success rate, the failure streak and `last_error`, so they
move neither the breaker nor AUTO's ranking.

Tokens per second is generation speed: over streamed successes with a time to first token
and at least two output tokens, (output tokens - 1) / (latency - TTFT), as a ratio of sums.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from .config import redact
from .errors import provider_at_fault
from .models import AttemptRecord, ProviderPerformance, ProviderUsage

__all__ = ["MetricsRegistry", "MetricsSnapshot", "WindowFields", "percentile", "window_fields"]


def percentile(sorted_values: list[float], q: float) -> float | None:
    """The q-quantile (0..1) of already sorted values, linear interpolation between the
    closest ranks (numpy's default). None for no data; the value itself for one point
    (`statistics.quantiles` needs two points before Python 3.13)."""
    if not sorted_values:
        return None
    position = (len(sorted_values) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (position - low)


# Not frozen: a frozen dataclass sets each field through object.__setattr__, which doubles
# the cost of building one, and one is built per request. Entries are never changed.
@dataclass(slots=True)
class _Entry:
    ts: float  # epoch seconds of the attempt
    ok: bool
    latency_ms: float | None
    ttft_ms: float | None  # streamed successes only
    output_tokens: int


@dataclass(frozen=True)
class MetricsSnapshot:
    """One provider's metrics at one moment."""

    provider: str
    performance: ProviderPerformance = field(default_factory=ProviderPerformance)
    success_rate: float | None = None  # ok / all over the window; None without data
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    samples: int = 0  # attempts in the window
    usage: ProviderUsage = field(default_factory=ProviderUsage)


class _ProviderMetrics:
    """One provider's window and counters, behind its own lock."""

    def __init__(self, name: str, window_size: int) -> None:
        self.name = name
        self.lock = threading.Lock()
        self.window: deque[_Entry] = deque(maxlen=window_size)
        self.consecutive_failures = 0
        self.last_error: str | None = None
        self.last_error_at: datetime | None = None
        self.newest_ts = -math.inf
        self.total = 0
        self.ok = 0
        self.failed = 0
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0

    def add_totals(self, record: AttemptRecord) -> None:
        self.total += 1
        if record.status == "ok":
            self.ok += 1
        else:
            self.failed += 1
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        self.cost_usd += record.cost_usd or 0.0

    def update_streak(self, record: AttemptRecord, ts: float) -> None:
        self.newest_ts = max(self.newest_ts, ts)
        if record.status == "ok":
            self.consecutive_failures = 0
            return
        # An incomplete stream is a failure too: the user did not get the whole answer.
        self.consecutive_failures += 1
        parts = [part for part in (record.error_type or record.status, record.error_message) if part]
        self.last_error = redact(": ".join(parts))
        self.last_error_at = record.created_at

    def expire(self, cutoff: float) -> None:
        # Entries arrive in (nearly) time order, so the expired ones sit on the left.
        window = self.window
        while window and window[0].ts < cutoff:
            window.popleft()


def _counts_for_health(record: AttemptRecord) -> bool:
    return record.status == "ok" or record.error_type is None or provider_at_fault(record.error_type)


# One window entry as plain values (ts, ok, latency ms, TTFT ms, output tokens): what replicas
# share through Redis (conductor_core.state).
WindowFields = tuple[float, bool, float | None, float | None, int]


def window_fields(record: AttemptRecord) -> WindowFields | None:
    """The entry `record` adds to its provider's window; None if it stays out of it."""
    if not _counts_for_health(record):
        return None
    entry = _entry(record)
    return entry.ts, entry.ok, entry.latency_ms, entry.ttft_ms, entry.output_tokens


def _entry(record: AttemptRecord) -> _Entry:
    ok = record.status == "ok"
    return _Entry(
        ts=record.created_at.timestamp(),
        ok=ok,
        latency_ms=record.latency_ms,
        ttft_ms=record.ttft_ms if ok and record.streamed else None,
        output_tokens=record.output_tokens,
    )


class MetricsRegistry:
    """Rolling metrics for every provider that has been recorded. Share one per process."""

    def __init__(
        self,
        window_size: int = 500,
        window_s: float = 3600.0,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if window_size < 1 or window_s <= 0:
            raise ValueError("window_size must be >= 1 and window_s > 0")
        self.window_size = window_size
        self.window_s = window_s
        self._clock = clock  # epoch seconds; tests inject a fake one
        self._providers: dict[str, _ProviderMetrics] = {}
        self._lock = threading.Lock()  # guards the dict only; each provider has its own lock

    def _get(self, provider: str) -> _ProviderMetrics:
        metrics = self._providers.get(provider)
        if metrics is None:
            with self._lock:
                metrics = self._providers.setdefault(provider, _ProviderMetrics(provider, self.window_size))
        return metrics

    def record(self, record: AttemptRecord) -> None:
        """Count one attempt (hot path: O(1) amortised)."""
        metrics = self._get(record.provider)
        if not _counts_for_health(record):
            with metrics.lock:
                metrics.add_totals(record)
            return
        entry = _entry(record)
        cutoff = self._clock() - self.window_s
        with metrics.lock:
            metrics.add_totals(record)
            metrics.update_streak(record, entry.ts)
            if entry.ts >= cutoff:
                metrics.window.append(entry)  # maxlen drops the oldest beyond window_size
            metrics.expire(cutoff)

    def seed(self, records: Iterable[AttemptRecord], usage: Mapping[str, ProviderUsage] | None = None) -> None:
        """Restore state after a restart from the request log (e.g. `recent_for_metrics()`).

        Records may come in any order. They fill the windows and the streaks (a seeded
        record older than what was already recorded live does not change the streak).
        Usage totals: when `usage` is given (e.g. `RequestLog.provider_totals()`) it
        replaces the totals of those providers, otherwise the seeded records add to them."""
        ordered = sorted(records, key=lambda record: record.created_at)
        cutoff = self._clock() - self.window_s
        by_provider: dict[str, list[AttemptRecord]] = {}
        for record in ordered:
            by_provider.setdefault(record.provider, []).append(record)
        for provider, provider_records in by_provider.items():
            metrics = self._get(provider)
            with metrics.lock:
                newest_before = metrics.newest_ts
                fresh: list[_Entry] = []
                for record in provider_records:
                    if usage is None:
                        metrics.add_totals(record)
                    if not _counts_for_health(record):
                        continue
                    entry = _entry(record)
                    if entry.ts >= newest_before:
                        metrics.update_streak(record, entry.ts)
                    if entry.ts >= cutoff:
                        fresh.append(entry)
                merged = sorted([*metrics.window, *fresh], key=lambda entry: entry.ts)
                metrics.window = deque(merged[-self.window_size :], maxlen=self.window_size)
        for provider, totals in (usage or {}).items():
            metrics = self._get(provider)
            with metrics.lock:
                metrics.total = totals.total_requests
                metrics.ok = totals.successful_requests
                metrics.failed = totals.failed_requests
                metrics.input_tokens = totals.input_tokens
                metrics.output_tokens = totals.output_tokens
                metrics.cost_usd = totals.cost_usd

    def replace_window(self, provider: str, entries: Iterable[WindowFields]) -> None:
        """Every replica's recent entries for `provider` (oldest first), read from the shared
        state: they become this process's window. Totals and streaks stay this process's."""
        window = deque((_Entry(*fields) for fields in entries), maxlen=self.window_size)
        metrics = self._get(provider)
        with metrics.lock:
            metrics.window = window

    def providers(self) -> list[str]:
        with self._lock:
            return sorted(self._providers)

    def snapshot(self, provider: str) -> MetricsSnapshot:
        """Metrics for one provider; an empty snapshot (samples 0) for one never recorded."""
        metrics = self._providers.get(provider)
        if metrics is None:
            return MetricsSnapshot(provider=provider)
        cutoff = self._clock() - self.window_s
        with metrics.lock:
            metrics.expire(cutoff)
            # Filter again: an entry recorded slightly out of order can hide behind a newer one.
            window = [entry for entry in metrics.window if entry.ts >= cutoff]
            usage = ProviderUsage(
                total_requests=metrics.total,
                total_attempts=metrics.total,  # for one provider every attempt is a call to it
                successful_requests=metrics.ok,
                failed_requests=metrics.failed,
                input_tokens=metrics.input_tokens,
                output_tokens=metrics.output_tokens,
                cost_usd=metrics.cost_usd,
            )
            streak, last_error, last_error_at = metrics.consecutive_failures, metrics.last_error, metrics.last_error_at
        # The heavy part runs outside the lock, on a private copy of the window.
        return MetricsSnapshot(
            provider=provider,
            performance=_performance(window),
            success_rate=(sum(entry.ok for entry in window) / len(window)) if window else None,
            consecutive_failures=streak,
            last_error=last_error,
            last_error_at=last_error_at,
            samples=len(window),
            usage=usage,
        )

    def snapshots(self) -> dict[str, MetricsSnapshot]:
        return {provider: self.snapshot(provider) for provider in self.providers()}

    # --- conveniences for AUTO routing ------------------------------------------------------

    def p50_latency(self, provider: str) -> float | None:
        return self.snapshot(provider).performance.p50_latency_ms

    def p50_ttft(self, provider: str) -> float | None:
        return self.snapshot(provider).performance.p50_ttft_ms

    def success_rate(self, provider: str) -> float | None:
        return self.snapshot(provider).success_rate

    def samples(self, provider: str) -> int:
        return self.snapshot(provider).samples


def _performance(window: list[_Entry]) -> ProviderPerformance:
    successes = [entry for entry in window if entry.ok]
    latencies = sorted(entry.latency_ms for entry in successes if entry.latency_ms is not None)
    ttfts = sorted(entry.ttft_ms for entry in successes if entry.ttft_ms is not None)
    # Tokens per second as a ratio of sums (tokens after the first / time after the first):
    # a few tiny answers with near-zero durations cannot blow it up the way a mean of ratios
    # can. Only streams know their first token; one token alone says nothing about speed.
    tokens = 0
    seconds = 0.0
    for entry in successes:
        if entry.latency_ms is None or entry.ttft_ms is None or entry.output_tokens < 2:
            continue
        duration_ms = entry.latency_ms - entry.ttft_ms
        if duration_ms > 0:
            tokens += entry.output_tokens - 1
            seconds += duration_ms / 1000
    return ProviderPerformance(
        avg_latency_ms=(sum(latencies) / len(latencies)) if latencies else None,
        p50_latency_ms=percentile(latencies, 0.50),
        p95_latency_ms=percentile(latencies, 0.95),
        p50_ttft_ms=percentile(ttfts, 0.50),
        p90_ttft_ms=percentile(ttfts, 0.90),
        tokens_per_second=(tokens / seconds) if seconds > 0 else None,
    )
