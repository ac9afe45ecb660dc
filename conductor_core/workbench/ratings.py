"""Ratings from blind votes: the Bradley–Terry model, as LMArena uses it, on an Elo-like scale,
with bootstrap confidence intervals.

    board = fit_ratings(judgements, min_votes=10, rounds=200, seed=0)
    board.ratings[0].describe()   # "1,112 ± 40 from 57 blind votes"
    board.get("openai/gpt-6-luna")

The model: each subject i has a strength p_i, and i beats j with probability p_i / (p_i + p_j).
The rating is 1000 + 400 · log10(p_i), so 400 points mean 10:1 odds and 120 points 2:1, as
on LMArena's leaderboard.

Votes to comparisons: a vote among k answers that picks one best is k − 1 wins of the best
over each of the others; a tie, and "all bad", is a tie between every pair (LMArena treats
"both bad" as a tie too). A tie counts as half a win each way — the classic treatment, which
keeps the Bradley–Terry likelihood (Davidson's extension would add a tie parameter that a
few hundred votes cannot pin down).

The fit: maximum likelihood by Newton's method on the (concave) log-likelihood, damped so an
extreme record cannot overshoot; it converges in a handful of steps for any data whose graph
of comparisons is connected, where Zermelo's classic iteration (the test's cross-check) needs
thousands. Plain numpy: a few lines, exact, and no scipy (35 MB) for it.
`prior` adds that many virtual ties per subject against a fixed reference at 1000: it keeps
the ratings finite when a subject has won (or lost) every vote, and pulls a subject with few
votes towards 1000; at the default of one virtual tie it moves a rating with 50 votes by a few
points. With `prior=0` the fit is the plain maximum likelihood (normalised so the ratings'
mean is 1000).

Confidence intervals: the fit is repeated on `rounds` bootstrap resamples of the votes (votes
drawn with replacement; a vote is the unit, since its pairs are not independent), with a
seeded generator, so the same votes give the same interval every time; the 95% interval is
the 2.5th to 97.5th percentile of the resampled ratings. With few votes, or votes that all
agree, every resample looks alike and the interval understates the uncertainty (three votes
won by A give ± 0): that is what `min_votes` is for — below it a subject is "too few votes".
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Judgement",
    "Rating",
    "Leaderboard",
    "Voters",
    "fit_ratings",
    "bradley_terry",
    "RatingError",
    "SCALE",
    "BASE",
]

SCALE = 400.0
BASE = 1000.0
_TOLERANCE = 1e-9
_MAX_ITERATIONS = 100


class RatingError(ValueError):
    pass


class Judgement(BaseModel):
    """One blind vote: the subjects whose answers were judged, and the verdict."""

    model_config = ConfigDict(frozen=True)

    subjects: tuple[str, ...] = Field(min_length=2, description="What each judged answer came from (e.g. a target).")
    winner: str | None = Field(default=None, description="The subject picked as best; None for a tie or all bad.")


class Rating(BaseModel):
    subject: str
    rating: float
    ci_low: float
    ci_high: float
    votes: int = Field(description="Blind votes this subject took part in.")
    wins: int
    losses: int
    ties: int
    enough: bool = Field(description="At least the minimum number of votes to be ranked.")
    min_votes: int

    @property
    def margin(self) -> float:
        """Half the width of the 95% interval (the "± 40")."""
        return (self.ci_high - self.ci_low) / 2

    def describe(self) -> str:
        if not self.enough:
            return f"too few votes: {self.votes} of the {self.min_votes} needed"
        return f"{self.rating:,.0f} ± {self.margin:,.0f} from {self.votes} blind vote{'s' if self.votes != 1 else ''}"


#: Who voted: people (the arena's blind votes, Compare's) or judge models (Experiments' pairwise
#: judgements). Never fitted together: each has its own leaderboard.
Voters = Literal["people", "judge"]


class Leaderboard(BaseModel):
    ratings: list[Rating] = Field(description="Best first; subjects with too few votes after the others.")
    votes: int
    min_votes: int
    rounds: int
    seed: int
    voters: Voters = Field(default="people", description="Whose votes these ratings come from.")

    def get(self, subject: str) -> Rating | None:
        return next((r for r in self.ratings if r.subject == subject), None)


def _pairs(
    judgements: Sequence[Judgement], index: dict[str, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every pairwise outcome as arrays: vote number, i, j, and i's score against j (1, 0.5)."""
    votes, first, second, score = [], [], [], []
    for number, judgement in enumerate(judgements):
        subjects = list(dict.fromkeys(judgement.subjects))
        if judgement.winner is not None:
            w = index[judgement.winner]
            for other in subjects:
                if other != judgement.winner:
                    votes.append(number)
                    first.append(w)
                    second.append(index[other])
                    score.append(1.0)
        else:
            for a in range(len(subjects)):
                for b in range(a + 1, len(subjects)):
                    votes.append(number)
                    first.append(index[subjects[a]])
                    second.append(index[subjects[b]])
                    score.append(0.5)
    return (
        np.array(votes, dtype=np.int64),
        np.array(first, dtype=np.int64),
        np.array(second, dtype=np.int64),
        np.array(score),
    )


def bradley_terry(wins: np.ndarray, *, prior: float = 1.0, start: np.ndarray | None = None) -> np.ndarray:
    """Log10 strengths from a matrix `wins[i, j]` = how often i beat j (ties as 0.5 each way).
    With `prior` > 0 the scale is fixed by a reference of strength 1 (log 0); with 0 the mean
    log strength is 0. Raises RatingError when the data have no finite maximum (prior 0 and a
    subject that never won or never lost, or comparisons that fall apart in groups)."""
    wins = np.asarray(wins, dtype=float)
    n = len(wins)
    games = wins + wins.T
    if prior <= 0:
        if np.any(wins.sum(axis=1) <= 0) or np.any(wins.sum(axis=0) <= 0):
            raise RatingError(
                "a subject has won no vote or lost none: its rating has no finite estimate (use prior > 0)"
            )
        if not _connected(games > 0):
            raise RatingError("the votes fall apart into groups never compared with each other (use prior > 0)")
    # Newton's method on the log-likelihood in natural-log strengths: it is concave, and
    # strictly so with a prior, so a few damped steps reach the maximum.
    theta = np.zeros(n) if start is None else np.asarray(start, dtype=float) * math.log(10)
    scored = wins.sum(axis=1) + prior / 2
    for _ in range(_MAX_ITERATIONS):
        p = 1.0 / (1.0 + np.exp(theta[None, :] - theta[:, None]))  # p[i, j]: i beats j
        anchor = 1.0 / (1.0 + np.exp(-theta))  # i beats the reference
        gradient = scored - (games * p).sum(axis=1) - prior * anchor
        curvature = games * p * (1.0 - p)
        hessian = curvature.copy()
        hessian[np.diag_indices(n)] = -curvature.sum(axis=1) - prior * anchor * (1.0 - anchor)
        if prior > 0:
            step = np.linalg.solve(hessian, -gradient)
        else:  # the likelihood is flat along theta + c: the least-squares step, then centre
            step = np.linalg.lstsq(hessian, -gradient, rcond=None)[0]
        largest = np.max(np.abs(step))
        if largest > 2.0:
            step *= 2.0 / largest  # damped: extreme records must not overshoot
        theta = theta + step
        if prior <= 0:
            theta -= theta.mean()
        if largest < _TOLERANCE:
            break
    return theta / math.log(10)


def _connected(adjacent: np.ndarray) -> bool:
    seen = {0}
    frontier = [0]
    while frontier:
        i = frontier.pop()
        for j in np.flatnonzero(adjacent[i]):
            if int(j) not in seen:
                seen.add(int(j))
                frontier.append(int(j))
    return len(seen) == len(adjacent)


def _wins_matrix(first: np.ndarray, second: np.ndarray, score: np.ndarray, weights: np.ndarray, n: int) -> np.ndarray:
    wins = np.zeros((n, n))
    np.add.at(wins, (first, second), score * weights)
    np.add.at(wins, (second, first), (1.0 - score) * weights)
    return wins


def fit_ratings(
    judgements: Sequence[Judgement],
    *,
    min_votes: int = 10,
    rounds: int = 200,
    seed: int = 0,
    prior: float = 1.0,
    voters: Voters = "people",
) -> Leaderboard:
    """A leaderboard from blind votes: rating, 95% bootstrap interval, votes, wins/losses/ties.
    `voters` says whose they are (the caller passes one kind only: people's or judges')."""
    judgements = [j for j in judgements if len(set(j.subjects)) >= 2]
    for judgement in judgements:
        if judgement.winner is not None and judgement.winner not in judgement.subjects:
            raise RatingError(f"the winner {judgement.winner!r} is not one of the judged subjects {judgement.subjects}")
    subjects = sorted({s for j in judgements for s in j.subjects})
    if not subjects:
        return Leaderboard(ratings=[], votes=0, min_votes=min_votes, rounds=rounds, seed=seed, voters=voters)
    index = {s: i for i, s in enumerate(subjects)}
    n = len(subjects)
    vote_of, first, second, score = _pairs(judgements, index)
    ones = np.ones(len(score))
    estimate = bradley_terry(_wins_matrix(first, second, score, ones, n), prior=prior)

    rng = np.random.default_rng(seed)
    samples = np.empty((rounds, n))
    for r in range(rounds):
        # How often each vote is drawn in this resample (multinomial = drawing with replacement).
        drawn = rng.multinomial(len(judgements), np.full(len(judgements), 1 / len(judgements)))
        weights = drawn[vote_of].astype(float)
        wins = _wins_matrix(first, second, score, weights, n)
        try:
            samples[r] = bradley_terry(wins, prior=prior, start=estimate)
        except RatingError:
            samples[r] = np.nan  # only with prior=0: a resample without a finite estimate
    low, high = np.nanpercentile(samples, [2.5, 97.5], axis=0) if rounds else (estimate, estimate)

    tally = {s: [0, 0, 0, 0] for s in subjects}  # votes, wins, losses, ties
    for judgement in judgements:
        for s in set(judgement.subjects):
            tally[s][0] += 1
            if judgement.winner is None:
                tally[s][3] += 1
            elif judgement.winner == s:
                tally[s][1] += 1
            else:
                tally[s][2] += 1
    ratings = [
        Rating(
            subject=s,
            rating=round(BASE + SCALE * float(estimate[i]), 2),
            ci_low=round(BASE + SCALE * float(low[i]), 2),
            ci_high=round(BASE + SCALE * float(high[i]), 2),
            votes=tally[s][0],
            wins=tally[s][1],
            losses=tally[s][2],
            ties=tally[s][3],
            enough=tally[s][0] >= min_votes,
            min_votes=min_votes,
        )
        for i, s in enumerate(subjects)
    ]
    ratings.sort(key=lambda r: (not r.enough, -r.rating, r.subject))
    return Leaderboard(
        ratings=ratings, votes=len(judgements), min_votes=min_votes, rounds=rounds, seed=seed, voters=voters
    )
