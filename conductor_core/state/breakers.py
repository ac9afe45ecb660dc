"""`SharedBreaker`: a replica's copy of a circuit breaker whose state lives in Redis.

While `shared` is on, this object never changes state by itself: its outcomes go to Redis,
whose scripts make every transition for all replicas at once, and the sync thread writes
the result back here (`follow`). Only the half-open probe is decided locally, once Redis
has granted it to this replica (`granted_probe`). When Redis cannot be reached the sync
turns `shared` off and the breaker works alone, exactly as a `CircuitBreaker`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..breaker import CircuitBreaker
from ..models import BreakerState

__all__ = ["SharedBreaker"]

_CLOSED, _OPEN, _HALF_OPEN = BreakerState.closed, BreakerState.open, BreakerState.half_open


class SharedBreaker(CircuitBreaker):
    def __init__(self, name: str, report: Callable[[str, bool, bool], None], **kwargs: Any) -> None:
        """`report(name, failed, urgent)` hands one verdict to the sync (it must not block)."""
        super().__init__(**kwargs)
        self.name = name
        self._report = report
        self.shared = False
        self.probe_mine = False  # Redis granted this replica the half-open probe

    # --- the protocol, when shared: verdicts go to Redis -------------------------------

    def _current(self) -> BreakerState:
        if self.shared:
            return self._state  # Redis decides when a cooldown ends (one replica probes)
        return super()._current()

    def record_success(self) -> None:
        if not self.shared:
            super().record_success()
            return
        # A probe's slot stays taken until Redis's verdict comes back: no second probe meanwhile.
        self._report(self.name, False, self._state is not _CLOSED)

    def record_failure(self) -> None:
        if not self.shared:
            super().record_failure()
            return
        self._report(self.name, True, True)

    def release(self) -> None:
        with self._lock:
            if not self.shared or self.probe_mine:
                self._probe_in_flight = False

    # --- written by the sync thread ------------------------------------------------------

    def follow(self, state: BreakerState, retry_in_s: float, cooldown_s: float, trips: int, probe_mine: bool) -> None:
        """Take Redis's state (read by the sync, at most a fraction of a second old)."""
        with self._lock:
            if not self.shared:
                return  # alone since that read began (Redis went away): keep what it learns alone
            if state is not _HALF_OPEN or not probe_mine:
                # Someone else's probe (or none): nothing may go through here until Redis says so.
                self._probe_in_flight = state is _HALF_OPEN
            elif not self.probe_mine:
                self._probe_in_flight = False  # newly ours: the next call is the probe
            self.probe_mine = state is _HALF_OPEN and probe_mine
            if state is _CLOSED and self._state is not _CLOSED:
                self._outcomes.clear()
            self._state = state
            self._cooldown_s = cooldown_s
            self._opened_at = self._clock() + retry_in_s - cooldown_s
            self.trips = trips

    def probe_running(self) -> bool:
        """Whether this replica's probe is in flight (the sync keeps its claim alive)."""
        with self._lock:
            return self.probe_mine and self._probe_in_flight

    def wants_probe(self) -> bool:
        """Open with its cooldown over: time to ask Redis for the probe."""
        with self._lock:
            return self._state is _OPEN and self._clock() >= self._opened_at + self._cooldown_s

    def go_local(self) -> None:
        """Redis is gone: carry on alone from the last state seen."""
        with self._lock:
            self.shared = False
            if self._state is _HALF_OPEN and not self.probe_mine:
                self._probe_in_flight = False  # the other replica's probe will not report here
            self.probe_mine = False

    def local_view(self) -> tuple[BreakerState, float]:
        """State and seconds until a probe, as this replica alone saw them (to hand to Redis
        when it comes back)."""
        with self._lock:
            state = super()._current()
            return state, max(0.0, self._opened_at + self._cooldown_s - self._clock())
