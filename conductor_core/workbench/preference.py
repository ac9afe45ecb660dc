"""The blind-vote ratings AUTO's `preferred` policy reads, kept cheap on the hot path: the
workbench's side of routing's `RatingsSource` (`conductor_core.routing.preference`), given to
the core by `conductor_core.router.Conductor`.

A Bradley–Terry fit with bootstrap intervals takes tens of milliseconds: far too much per
request. So the fitted leaderboard is cached, and a request only reads the cache. At most
every `check_every_s` a request notices the cache is due for a check and starts one in a
background thread (never on the request's own thread or event loop): one small query for
the votes' signature (how many, and the newest), and a refit only when that changed. Every
process sees every vote this way (on PostgreSQL too, a vote cast through another replica),
a few seconds late at most.

The first read has nothing cached: it loads synchronously once (so AUTO never says "no
ratings" merely because the process just started).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..routing.preference import DEFAULT_MIN_VOTES
from ..store import RequestLog

if TYPE_CHECKING:  # numpy comes with them: loaded on the first read, not with the router
    from .arena import Arena
    from .ratings import Leaderboard, Rating

__all__ = ["PreferenceRatings"]

log = logging.getLogger("conductor.preference")


class PreferenceRatings:
    """Ratings per target ("provider/model") from every blind arena vote. Thread-safe."""

    def __init__(
        self,
        log_: RequestLog,
        *,
        min_votes: int = DEFAULT_MIN_VOTES,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log_
        self.min_votes = min_votes
        self._check_every_s = check_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._board: Leaderboard | None = None
        self._by_target: dict[str, Rating] = {}
        self._signature: tuple[int, float | None] | None = None
        self._checked = float("-inf")
        self._checking = False
        self._arena: Arena | None = None
        self.fits = 0  # how many times the ratings were fitted (tests read it)

    def get(self, target: str) -> Rating | None:
        """The target's rating, or None when it has no blind vote. Never waits on the
        database except on the very first read."""
        self._maybe_refresh()
        return self._by_target.get(target)

    def leaderboard(self) -> Leaderboard:
        self._maybe_refresh()
        return self._board if self._board is not None else self._empty()

    def _empty(self) -> Leaderboard:
        from .ratings import Leaderboard

        return Leaderboard(ratings=[], votes=0, min_votes=self.min_votes, rounds=0, seed=0)

    def refresh(self) -> bool:
        """Check now, on this thread; refit if the votes changed. True when it refitted."""
        from .arena import Arena, matches_table  # the arena's tables, created on first use

        if self._arena is None:
            self._arena = Arena(self._log)
        arena = self._arena
        m = matches_table.c
        with arena.engine.connect() as conn:
            count, newest = conn.execute(select(func.count(), func.max(m.voted_ts)).where(m.status == "voted")).one()
        signature = (int(count or 0), newest)
        with self._lock:
            self._checked = self._clock()
            if signature == self._signature and self._board is not None:
                return False
        board = arena.leaderboard(min_votes=self.min_votes)
        with self._lock:
            self._board = board
            self._by_target = {r.subject: r for r in board.ratings}
            self._signature = signature
            self.fits += 1
        return True

    def _maybe_refresh(self) -> None:
        if self._board is None:
            with self._lock:
                first = self._board is None and not self._checking
                if first:
                    self._checking = True
            if first:
                try:
                    self.refresh()
                except Exception:
                    log.exception("blind-vote ratings could not be read")
                    with self._lock:  # ranked without ratings until a background check succeeds
                        self._board = self._board or self._empty()
                        self._checked = self._clock()
                finally:
                    with self._lock:
                        self._checking = False
            return
        with self._lock:
            if self._checking or self._clock() - self._checked < self._check_every_s:
                return
            self._checking = True
        threading.Thread(target=self._background_check, name="conductor-ratings", daemon=True).start()

    def _background_check(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("blind-vote ratings could not be refreshed")
            with self._lock:
                self._checked = self._clock()
        finally:
            with self._lock:
                self._checking = False
