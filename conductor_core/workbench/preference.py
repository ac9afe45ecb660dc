"""The blind-vote ratings AUTO's `preferred` policy reads, kept cheap on the hot path: the
workbench's side of routing's `RatingsSource` (`conductor_core.routing.preference`), given to
the core by `conductor_core.router.Conductor`.

A Bradley–Terry fit with bootstrap intervals takes tens of milliseconds: far too much per
request. So the fitted leaderboard is cached (`refreshed.BackgroundRefreshed`): the signature
checked in the background is the votes' count and newest, and a refit happens only when that
changed. Every process sees every vote this way (on PostgreSQL too, a vote cast through
another replica), a few seconds late at most.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from sqlalchemy import func, select

from ..routing.preference import DEFAULT_MIN_VOTES
from ..store import RequestLog
from .refreshed import BackgroundRefreshed

if TYPE_CHECKING:  # numpy comes with them: loaded on the first read, not with the router
    from .arena import Arena
    from .ratings import Leaderboard, Rating

__all__ = ["PreferenceRatings"]


class PreferenceRatings(BackgroundRefreshed):
    """Ratings per target ("provider/model") from every blind arena vote. Thread-safe."""

    what = "blind-vote ratings"
    thread_name = "conductor-ratings"

    def __init__(
        self,
        log_: RequestLog,
        *,
        min_votes: int = DEFAULT_MIN_VOTES,
        check_every_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(check_every_s=check_every_s, clock=clock)
        self._log = log_
        self.min_votes = min_votes
        self._board: Leaderboard | None = None
        self._by_target: dict[str, Rating] = {}
        self._signature: tuple[int, float | None] | None = None
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

    def _loaded(self) -> bool:
        return self._board is not None

    def _fallback(self) -> None:
        self._board = self._board or self._empty()
