"""The time Conductor itself spends on a request, the upstream's time excluded: the figure the
gateway sends as `x-conductor-overhead-ms` and logs per attempt (`attempts.overhead_ms`),
as LiteLLM (`x-litellm-overhead-duration-ms`) and TensorZero publish theirs.

A server that wants the figure starts a `RequestClock` when a request arrives and makes it
current (`started()`); the core then marks, without knowing who listens:

* the upstream's time: from handing a provider's SDK the request until it has answered
  (`BaseProvider.achat`); for a stream, until its last piece arrived (`astream`), while the
  stream is still open, until the latest piece so far. Everything else is overhead: reading
  and checking the request, routing, waiting for a slot, converting the request and the
  answer, recording, retry backoff, building the response.
* each attempt's share, when the recorder writes it (`attribute`): the overhead since the
  previous attempt's share. The attempt that answered is held back (`hold`) until the
  response is ready (`release`, before a byte of it is sent), so its row and the response
  carry the same figure, and the row is spooled before the client has its answer.

Without a current clock (the playground, scripts) nothing is measured or held."""

from __future__ import annotations

from contextvars import ContextVar
from time import perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .models import AttemptRecord
    from .store import RequestLog

__all__ = ["RequestClock", "current", "started"]

_CURRENT: ContextVar[RequestClock | None] = ContextVar("conductor_request_clock", default=None)
current = _CURRENT.get


class RequestClock:
    __slots__ = ("arrived", "_upstream_s", "_open_from", "_open_last", "_counted_ms", "_held")

    def __init__(self, arrived: float | None = None) -> None:
        self.arrived = perf_counter() if arrived is None else arrived
        self._upstream_s = 0.0  # closed upstream intervals
        self._open_from: float | None = None  # the upstream call in progress (a stream)
        self._open_last = 0.0  # when its latest piece arrived
        self._counted_ms = 0.0  # overhead already attributed to logged attempts
        self._held: tuple[AttemptRecord, RequestLog] | None = None

    # --- the upstream (providers) ------------------------------------------------------------

    def upstream_started(self) -> None:
        self._open_from = self._open_last = perf_counter()

    def upstream_piece(self) -> None:
        self._open_last = perf_counter()

    def upstream_ended(self) -> None:
        started = self._open_from
        if started is not None:
            self._upstream_s += perf_counter() - started
            self._open_from = None

    # --- the figure ----------------------------------------------------------------------------

    def overhead_ms(self, now: float | None = None) -> float:
        """Milliseconds since arrival that were not the upstream's (an open stream: up to its
        latest piece), at `now` (default: this moment)."""
        now = perf_counter() if now is None else now
        upstream = self._upstream_s
        if self._open_from is not None:
            upstream += self._open_last - self._open_from
        return max(0.0, (now - self.arrived - upstream) * 1000)

    # --- the request log (the recorder) -----------------------------------------------------

    def attribute(self) -> float:
        """This attempt's share: the overhead since the last share was taken."""
        total = self.overhead_ms()
        share = max(0.0, total - self._counted_ms)
        self._counted_ms = total
        return round(share, 3)

    def hold(self, record: AttemptRecord, log: RequestLog) -> None:
        """Keep the answering attempt's row until the response is ready (`release`)."""
        self.release()
        self._held = (record, log)

    def release(self, now: float | None = None) -> float:
        """Write the held row (if any) with its share up to `now`, and return the request's
        overhead at `now`: call it before the response's first byte, and again (harmless)
        when the request ends, so that no row is ever left behind."""
        total = self.overhead_ms(now)
        held = self._held
        if held is not None:
            self._held = None
            record, log = held
            record.overhead_ms = round(max(0.0, total - self._counted_ms), 3)
            self._counted_ms = total
            log.submit(record)
        return total


def started(arrived: float | None = None) -> RequestClock:
    """A clock for the request being handled in this context (task), made current."""
    clock = RequestClock(arrived)
    _CURRENT.set(clock)
    return clock
