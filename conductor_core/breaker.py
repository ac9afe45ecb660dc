"""A circuit breaker per provider: closed -> open -> half-open -> closed.

Written here rather than taken from pybreaker/aiobreaker because those wrap one function
call and trip on consecutive failures only; Conductor needs a failure-rate window, a
cooldown that grows each time the breaker trips again, a single probe that a stream can
hold open for its whole length, and a state it can show ("retries in 8 s").
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable

from .models import BreakerState

__all__ = ["CircuitBreaker"]

# Module constants compared with `is`: an enum member read off its class costs more than the
# rest of a check, and the breaker is asked several times a request.
_CLOSED, _OPEN, _HALF_OPEN = BreakerState.closed, BreakerState.open, BreakerState.half_open


class CircuitBreaker:
    def __init__(
        self,
        *,
        failures: int = 5,
        failure_rate: float = 0.5,
        window: int = 20,
        cooldown_s: float = 10.0,
        max_cooldown_s: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failures = failures
        self.failure_rate = failure_rate
        self.window = window
        self.base_cooldown_s = cooldown_s
        self.max_cooldown_s = max_cooldown_s
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _CLOSED
        self._outcomes: deque[bool] = deque(maxlen=window)  # True = failure
        self._consecutive = 0
        self._cooldown_s = cooldown_s
        self._opened_at = 0.0
        self._probe_in_flight = False
        self.trips = 0

    # --- reading -----------------------------------------------------------------

    @property
    def state(self) -> BreakerState:
        with self._lock:
            return self._current()

    def retry_in_s(self) -> float | None:
        """Seconds until an open breaker lets a probe through; None unless open."""
        with self._lock:
            if self._current() is not _OPEN:
                return None
            return max(0.0, self._opened_at + self._cooldown_s - self._clock())

    def would_allow(self) -> bool:
        """Whether `allow()` would let a call through now, without taking the probe."""
        with self._lock:
            state = self._current()
            return state is _CLOSED or (state is _HALF_OPEN and not self._probe_in_flight)

    # --- the protocol: allow(), then exactly one of success/failure/release ----------

    def allow(self) -> bool:
        with self._lock:
            state = self._current()
            if state is _CLOSED:
                return True
            if state is _HALF_OPEN and not self._probe_in_flight:
                self._probe_in_flight = True
                return True
            return False

    def record_success(self) -> None:
        with self._lock:
            self._outcomes.append(False)
            self._consecutive = 0
            if self._current() is _HALF_OPEN:
                # The probe got through: close, and forget the history that tripped it.
                self._state = _CLOSED
                self._cooldown_s = self.base_cooldown_s
                self._outcomes.clear()
            self._probe_in_flight = False

    def record_failure(self) -> None:
        with self._lock:
            state = self._current()
            self._probe_in_flight = False
            if state is _HALF_OPEN:
                # The probe failed: open again, for longer each time.
                self._cooldown_s = min(self._cooldown_s * 2, self.max_cooldown_s)
                self._trip()
                return
            if state is _OPEN:
                return
            self._outcomes.append(True)
            self._consecutive += 1
            full_window = len(self._outcomes) == self.window
            rate = sum(self._outcomes) / len(self._outcomes)
            if self._consecutive >= self.failures or (full_window and rate >= self.failure_rate):
                self._trip()

    def release(self) -> None:
        """The call ended with no verdict (the caller went away): free the probe slot."""
        with self._lock:
            self._probe_in_flight = False

    # --- internals (lock held) -------------------------------------------------------

    def _current(self) -> BreakerState:
        if self._state is _OPEN and self._clock() >= self._opened_at + self._cooldown_s:
            self._state = _HALF_OPEN
        return self._state

    def _trip(self) -> None:
        self._state = _OPEN
        self._opened_at = self._clock()
        self._consecutive = 0
        self._outcomes.clear()
        self.trips += 1
