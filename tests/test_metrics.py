"""Rolling metrics: percentiles, the window's two bounds, success rate, thread safety, seeding."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from conductor_core.metrics import MetricsRegistry, percentile
from conductor_core.models import AttemptRecord, ProviderUsage

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    def __init__(self, now: datetime = T0) -> None:
        self.now = now.timestamp()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def attempt(
    provider: str = "gemini",
    status: str = "ok",
    *,
    at: datetime = T0,
    latency_ms: float | None = 100.0,
    ttft_ms: float | None = None,
    streamed: bool = False,
    output_tokens: int = 0,
    input_tokens: int = 0,
    cost_usd: float | None = None,
    error_type: str | None = None,
    error_message: str | None = None,
) -> AttemptRecord:
    return AttemptRecord(
        request_id="req_test",
        provider=provider,
        status=status,  # type: ignore[arg-type]
        created_at=at,
        latency_ms=latency_ms,
        ttft_ms=ttft_ms,
        streamed=streamed,
        output_tokens=output_tokens,
        input_tokens=input_tokens,
        cost_usd=cost_usd,
        error_type=error_type,
        error_message=error_message,
    )


def test_percentile_matches_numpy() -> None:
    values = sorted(float(v) for v in np.random.default_rng(1).integers(1, 1000, size=137))
    for q in (0.0, 0.5, 0.9, 0.95, 1.0):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q * 100)))
    assert percentile([], 0.5) is None
    assert percentile([42.0], 0.95) == 42.0


def test_latency_and_ttft_percentiles_on_known_data() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    for i in range(1, 101):  # latencies 1..100 ms, ttft 1..100 ms, streamed
        registry.record(attempt(latency_ms=float(i), ttft_ms=float(i) / 10, streamed=True))
    # Failures do not count towards latency: they would make a broken provider look fast.
    registry.record(attempt(status="error", latency_ms=1.0, error_type="timeout"))
    perf = registry.snapshot("gemini").performance
    assert perf.avg_latency_ms == pytest.approx(50.5)
    assert perf.p50_latency_ms == pytest.approx(50.5)
    assert perf.p95_latency_ms == pytest.approx(95.05)
    assert perf.p50_ttft_ms == pytest.approx(5.05)
    assert perf.p90_ttft_ms == pytest.approx(9.01)
    assert registry.p50_latency("gemini") == pytest.approx(50.5)
    assert registry.p50_ttft("gemini") == pytest.approx(5.05)


def test_ttft_only_from_streamed_successes() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(attempt(latency_ms=100, ttft_ms=10, streamed=False))
    registry.record(attempt(status="incomplete", latency_ms=100, ttft_ms=20, streamed=True))
    assert registry.snapshot("gemini").performance.p50_ttft_ms is None
    registry.record(attempt(latency_ms=100, ttft_ms=30, streamed=True))
    assert registry.snapshot("gemini").performance.p50_ttft_ms == 30


def test_tokens_per_second_is_tokens_after_the_first_over_time_after_the_first() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    # 100 tokens, the first at 100 ms and the last at 1100 ms: 99 tokens in 1 s of generation.
    registry.record(attempt(latency_ms=1100, ttft_ms=100, streamed=True, output_tokens=100))
    # Left out: not streamed (the first token's wait cannot be told apart), and one token alone.
    registry.record(attempt(latency_ms=2000, output_tokens=300))
    registry.record(attempt(latency_ms=500, ttft_ms=100, streamed=True, output_tokens=1))
    assert registry.snapshot("gemini").performance.tokens_per_second == pytest.approx(99.0)
    # 41 tokens after the first in 3 s more: (99 + 41) / (1 + 3).
    registry.record(attempt(latency_ms=3200, ttft_ms=200, streamed=True, output_tokens=42))
    assert registry.snapshot("gemini").performance.tokens_per_second == pytest.approx(140 / 4.0)


@pytest.mark.parametrize("error_type", ["bad_request", "cancelled", "busy", "circuit_open"])
def test_failures_that_are_not_the_providers_fault_do_not_count_against_it(error_type: str) -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(attempt(latency_ms=100))
    for _ in range(5):
        registry.record(attempt(status="error", error_type=error_type, error_message="the request's fault"))
    registry.record(attempt(status="incomplete", error_type=error_type, error_message="stopped"))
    snap = registry.snapshot("gemini")
    assert snap.success_rate == 1.0 and snap.samples == 1
    assert snap.consecutive_failures == 0 and snap.last_error is None
    assert snap.usage.total_requests == 7 and snap.usage.failed_requests == 6  # still logged and counted as usage
    registry.record(attempt(status="error", error_type="unavailable", error_message="down"))
    snap = registry.snapshot("gemini")
    assert snap.success_rate == 0.5 and snap.consecutive_failures == 1 and "down" in snap.last_error


def test_empty_provider_has_no_data() -> None:
    registry = MetricsRegistry()
    snap = registry.snapshot("nobody")
    assert snap.samples == 0 and snap.success_rate is None
    assert snap.performance.p50_latency_ms is None and snap.usage.total_requests == 0
    assert registry.providers() == []  # reading does not create a provider


def test_window_is_bounded_by_count() -> None:
    registry = MetricsRegistry(window_size=10, clock=FakeClock())
    for i in range(1000):
        registry.record(attempt(latency_ms=float(i)))
    snap = registry.snapshot("gemini")
    assert snap.samples == 10
    assert snap.performance.p50_latency_ms == pytest.approx(994.5)  # only 990..999 remain
    assert snap.usage.total_requests == 1000  # totals are cumulative, not windowed
    assert len(registry._providers["gemini"].window) == 10  # memory bounded by the window


def test_window_is_bounded_by_time() -> None:
    clock = FakeClock()
    registry = MetricsRegistry(window_size=500, window_s=60.0, clock=clock)
    for i in range(5):
        registry.record(attempt(status="error", at=T0 - timedelta(seconds=50 - i), latency_ms=1000.0))
    for _ in range(5):
        registry.record(attempt(at=T0, latency_ms=10.0))
    assert registry.snapshot("gemini").samples == 10
    clock.advance(15)  # the five failures are now older than 60 s
    snap = registry.snapshot("gemini")
    assert snap.samples == 5 and snap.success_rate == 1.0
    assert len(registry._providers["gemini"].window) == 5  # dropped at read time, not only filtered
    clock.advance(3600)
    snap = registry.snapshot("gemini")
    assert snap.samples == 0 and snap.success_rate is None and snap.performance.p50_latency_ms is None
    assert snap.usage.total_requests == 10


def test_records_older_than_the_window_are_dropped_at_write_time() -> None:
    registry = MetricsRegistry(window_s=60.0, clock=FakeClock())
    registry.record(attempt(at=T0 - timedelta(hours=2)))
    assert len(registry._providers["gemini"].window) == 0
    assert registry.snapshot("gemini").usage.total_requests == 1


def test_success_rate_counts_incomplete_as_failure() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    for status in ("ok", "ok", "error", "incomplete"):
        registry.record(attempt(status=status, error_type=None if status == "ok" else "stream_interrupted"))
    snap = registry.snapshot("gemini")
    assert snap.success_rate == 0.5
    assert registry.success_rate("gemini") == 0.5
    assert snap.usage.successful_requests == 2 and snap.usage.failed_requests == 2
    assert snap.consecutive_failures == 2


def test_consecutive_failures_and_last_error() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(attempt(status="error", error_type="rate_limit", error_message="slow down sk-abcdefghijklmnop1234"))
    registry.record(attempt(status="error", error_type="timeout", error_message="no answer in 60 s"))
    snap = registry.snapshot("gemini")
    assert snap.consecutive_failures == 2
    assert snap.last_error == "timeout: no answer in 60 s"
    registry.record(attempt(status="ok"))
    snap = registry.snapshot("gemini")
    assert snap.consecutive_failures == 0
    assert snap.last_error == "timeout: no answer in 60 s"  # kept for the status page


def test_last_error_is_redacted() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(
        attempt(status="error", error_type="authentication", error_message="bad key sk-abcdefghijklmnop1234")
    )
    assert "sk-abcdefghijklmnop1234" not in (registry.snapshot("gemini").last_error or "")


def test_usage_totals_treat_unknown_cost_as_zero() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(attempt(input_tokens=10, output_tokens=5, cost_usd=0.25))
    registry.record(attempt(input_tokens=1, output_tokens=2, cost_usd=None))
    registry.record(attempt(status="error", cost_usd=None))
    usage = registry.snapshot("gemini").usage
    assert usage == ProviderUsage(
        total_requests=3,
        total_attempts=3,
        successful_requests=2,
        failed_requests=1,
        input_tokens=11,
        output_tokens=7,
        cost_usd=0.25,
    )


def test_providers_are_separate() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(attempt("gemini", latency_ms=10))
    registry.record(attempt("openai", "error", latency_ms=20, error_type="timeout"))
    assert registry.providers() == ["gemini", "openai"]
    assert registry.success_rate("gemini") == 1.0 and registry.success_rate("openai") == 0.0
    assert set(registry.snapshots()) == {"gemini", "openai"}


def test_thread_safety_counts_are_exact() -> None:
    registry = MetricsRegistry(window_size=100_000, clock=FakeClock())
    threads_n, per_thread = 20, 500
    barrier = threading.Barrier(threads_n)
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                provider = ("gemini", "openai")[i % 2]
                status = "ok" if (index + i) % 4 else "error"
                registry.record(attempt(provider, status, output_tokens=1, cost_usd=0.001))
                if i % 50 == 0:
                    registry.snapshot(provider)  # readers run alongside writers
        except BaseException as exc:  # noqa: BLE001  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(threads_n)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors
    snaps = registry.snapshots()
    assert sum(s.usage.total_requests for s in snaps.values()) == threads_n * per_thread
    assert sum(s.samples for s in snaps.values()) == threads_n * per_thread
    assert sum(s.usage.output_tokens for s in snaps.values()) == threads_n * per_thread
    assert sum(s.usage.failed_requests for s in snaps.values()) == threads_n * per_thread // 4
    assert snaps["gemini"].usage.total_requests == snaps["openai"].usage.total_requests == 5000


def test_seed_restores_window_streak_and_totals() -> None:
    clock = FakeClock()
    history = [attempt("local", "ok", at=T0 - timedelta(minutes=30 - i), latency_ms=float(100 + i)) for i in range(20)]
    history += [
        attempt("local", "error", at=T0 - timedelta(minutes=5), error_type="timeout", error_message="slow"),
        attempt("local", "error", at=T0 - timedelta(minutes=4), error_type="timeout", error_message="slower"),
        attempt("gemini", "ok", at=T0 - timedelta(hours=3)),  # outside the window: totals only
    ]
    registry = MetricsRegistry(window_size=500, window_s=3600.0, clock=clock)
    registry.seed(reversed(history))  # any order
    local = registry.snapshot("local")
    assert local.samples == 22
    assert local.success_rate == pytest.approx(20 / 22)
    assert local.consecutive_failures == 2 and local.last_error == "timeout: slower"
    assert local.performance.p50_latency_ms == pytest.approx(109.5)
    assert local.usage.total_requests == 22
    assert registry.snapshot("gemini").samples == 0
    assert registry.snapshot("gemini").usage.total_requests == 1

    # Live traffic after seeding continues the same state.
    registry.record(attempt("local", "ok", at=T0))
    assert registry.snapshot("local").consecutive_failures == 0
    assert registry.snapshot("local").samples == 23


def test_seed_with_totals_from_the_log_and_window_bound() -> None:
    registry = MetricsRegistry(window_size=5, clock=FakeClock())
    registry.seed(
        [attempt("openai", at=T0 - timedelta(seconds=100 - i), latency_ms=float(i)) for i in range(50)],
        usage={
            "openai": ProviderUsage(total_requests=1234, successful_requests=1200, failed_requests=34, cost_usd=1.5)
        },
    )
    snap = registry.snapshot("openai")
    assert snap.samples == 5
    assert snap.performance.p50_latency_ms == 47.0  # the newest five: 45..49
    assert snap.usage.total_requests == 1234 and snap.usage.cost_usd == 1.5


def test_seed_does_not_override_a_newer_live_streak() -> None:
    registry = MetricsRegistry(clock=FakeClock())
    registry.record(attempt("local", "ok", at=T0))
    registry.seed([attempt("local", "error", at=T0 - timedelta(minutes=1), error_type="timeout")])
    snap = registry.snapshot("local")
    assert snap.consecutive_failures == 0
    assert snap.samples == 2
