"""What AUTO's `preferred` policy reads: a rating per target ("provider/model") from people's
blind votes, through a small interface.

Routing neither counts votes nor fits ratings: the workbench does (its arena and
`workbench.preference.PreferenceRatings`), and `conductor_core.router.Conductor` hands the
core that source. `rank()` reads it on every `preferred` request, so a source answers from
memory. Without one (`NoRatings`) no target is rated, and `preferred` ranks as `balanced`
does, saying "too few blind votes".
"""

from __future__ import annotations

from typing import Protocol

__all__ = ["DEFAULT_MIN_VOTES", "NoRatings", "RatingsSource", "TargetRating"]

#: Blind votes a target needs before `preferred` ranks it by rating (below: `balanced`).
DEFAULT_MIN_VOTES = 10


class TargetRating(Protocol):
    """One target's rating, as ranking reads and explains it."""

    @property
    def rating(self) -> float: ...

    @property
    def votes(self) -> int: ...

    @property
    def enough(self) -> bool:
        """At least `min_votes` votes: ranked by its rating."""
        ...

    @property
    def min_votes(self) -> int: ...

    def describe(self) -> str:
        """The rating as the routing reason quotes it ("1,112 ± 40 from 57 blind votes")."""
        ...


class RatingsSource(Protocol):
    @property
    def min_votes(self) -> int: ...

    def get(self, target: str) -> TargetRating | None:
        """The target's rating, or None when it has no blind vote. Called per request: no waiting."""
        ...


class NoRatings:
    """A source with no votes at all."""

    def __init__(self, min_votes: int = DEFAULT_MIN_VOTES) -> None:
        self.min_votes = min_votes

    def get(self, target: str) -> TargetRating | None:
        return None
