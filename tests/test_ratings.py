"""Bradley–Terry ratings: worked examples with answers solved by hand, ties, an independent
maximum-likelihood check, and bootstrap intervals that repeat with their seed."""

from __future__ import annotations

import math

import numpy as np
import pytest

from conductor_core.workbench.ratings import Judgement, Rating, RatingError, bradley_terry, fit_ratings


def votes(a: str, b: str, wins_a: int, wins_b: int, ties: int = 0) -> list[Judgement]:
    return (
        [Judgement(subjects=(a, b), winner=a)] * wins_a
        + [Judgement(subjects=(a, b), winner=b)] * wins_b
        + [Judgement(subjects=(a, b))] * ties
    )


def by_subject(board) -> dict[str, float]:
    return {r.subject: r.rating for r in board.ratings}


def test_two_subjects_three_to_one() -> None:
    # The MLE of p_A / p_B is the ratio of wins, 3: A is 400·log10(3) = 190.85 points above B,
    # and (prior 0) the ratings' mean is 1000.
    board = fit_ratings(votes("A", "B", 3, 1), prior=0, rounds=0, min_votes=1)
    gap = 400 * math.log10(3)
    assert by_subject(board) == pytest.approx({"A": 1000 + gap / 2, "B": 1000 - gap / 2}, abs=0.01)


def test_a_tie_is_half_a_win_each_way() -> None:
    # 2 wins for A and 2 ties: A scored 3 of 4, exactly as in the example above.
    with_ties = fit_ratings(votes("A", "B", 2, 0, ties=2), prior=0, rounds=0, min_votes=1)
    assert by_subject(with_ties) == pytest.approx(
        by_subject(fit_ratings(votes("A", "B", 3, 1), prior=0, rounds=0)), abs=0.01
    )
    assert [(r.subject, r.wins, r.losses, r.ties) for r in with_ties.ratings] == [("A", 2, 0, 2), ("B", 0, 2, 2)]
    # Only ties: equal strength.
    assert by_subject(fit_ratings(votes("A", "B", 0, 0, ties=5), prior=0, rounds=0)) == pytest.approx(
        {"A": 1000, "B": 1000}
    )


def test_three_subjects_whose_results_fit_the_model_exactly() -> None:
    # A beats B 2:1, B beats C 2:1, A beats C 4:1. Strengths 4, 2, 1 give exactly these win
    # probabilities (2/3, 2/3, 4/5), so they satisfy the likelihood equations: the MLE is
    # 4:2:1, i.e. 120.41 points (400·log10 2) between neighbours.
    judgements = votes("A", "B", 2, 1) + votes("B", "C", 2, 1) + votes("A", "C", 4, 1)
    step = 400 * math.log10(2)
    board = fit_ratings(judgements, prior=0, rounds=0, min_votes=1)
    assert by_subject(board) == pytest.approx({"A": 1000 + step, "B": 1000, "C": 1000 - step}, abs=0.01)
    assert [r.subject for r in board.ratings] == ["A", "B", "C"]


def test_the_fit_agrees_with_an_independent_maximum_likelihood() -> None:
    # Random comparisons among five subjects (with ties), fitted by another algorithm.
    rng = np.random.default_rng(7)
    truth = np.array([0.0, 0.3, -0.2, 0.6, -0.5])
    wins = np.zeros((5, 5))
    for _ in range(400):
        i, j = rng.choice(5, size=2, replace=False)
        p = 1 / (1 + 10 ** (truth[j] - truth[i]))
        if rng.random() < 0.1:
            wins[i, j] += 0.5
            wins[j, i] += 0.5
        elif rng.random() < p:
            wins[i, j] += 1
        else:
            wins[j, i] += 1
    ours = bradley_terry(wins, prior=0)
    # Zermelo's iteration (Hunter 2004's MM algorithm): p_i <- W_i / sum_j n_ij / (p_i + p_j).
    games = wins + wins.T
    p = np.ones(5)
    for _ in range(20_000):
        p = wins.sum(axis=1) / (games / (p[:, None] + p[None, :])).sum(axis=1)
        p /= np.exp(np.log(p).mean())
    theta = np.log(p)
    assert ours == pytest.approx(theta / math.log(10), abs=1e-6)


def test_a_vote_among_several_answers() -> None:
    # One best of three: two wins. A tie among three: three pairwise ties.
    board = fit_ratings(
        [Judgement(subjects=("A", "B", "C"), winner="A"), Judgement(subjects=("A", "B", "C"))],
        prior=0.5,
        rounds=0,
        min_votes=1,
    )
    a, b = board.get("A"), board.get("B")
    assert (a.wins, a.ties, a.votes, b.losses, b.ties) == (1, 1, 2, 1, 1)
    assert a.rating > b.rating == pytest.approx(board.get("C").rating)


def test_an_unbeaten_subject_needs_the_prior_to_have_a_finite_rating() -> None:
    with pytest.raises(RatingError, match="won no vote or lost none"):
        fit_ratings(votes("A", "B", 5, 0), prior=0, rounds=0)
    board = fit_ratings(votes("A", "B", 5, 0), rounds=50)
    assert all(math.isfinite(r.rating) and math.isfinite(r.ci_low) for r in board.ratings)
    assert board.get("A").rating > 1000 > board.get("B").rating


def test_the_bootstrap_interval_repeats_with_its_seed_and_covers_the_estimate() -> None:
    judgements = votes("A", "B", 30, 18, ties=6) + votes("B", "C", 25, 20) + votes("A", "C", 20, 10, ties=4)
    first = fit_ratings(judgements, seed=3)
    assert fit_ratings(judgements, seed=3) == first
    assert fit_ratings(judgements, seed=4) != first
    for r in first.ratings:
        assert r.ci_low < r.rating < r.ci_high
    # More votes, narrower intervals.
    wide = fit_ratings(judgements[::4], seed=3)
    assert wide.get("A").margin > first.get("A").margin


def test_leaderboard_says_too_few_votes_and_ranks_them_last() -> None:
    judgements = votes("A", "B", 6, 5) + votes("C", "A", 1, 0)
    board = fit_ratings(judgements, min_votes=5, rounds=20)
    assert [r.subject for r in board.ratings][-1] == "C"
    c = board.get("C")
    assert not c.enough and c.describe() == "too few votes: 1 of the 5 needed"
    assert board.votes == 12


def test_describe_reads_like_a_leaderboard_line() -> None:
    rating = Rating(
        subject="x",
        rating=1112.4,
        ci_low=1070.0,
        ci_high=1150.2,
        votes=57,
        wins=30,
        losses=20,
        ties=7,
        enough=True,
        min_votes=10,
    )
    assert rating.describe() == "1,112 ± 40 from 57 blind votes"


def test_a_winner_outside_the_judged_answers_is_refused() -> None:
    with pytest.raises(RatingError, match="not one of the judged"):
        fit_ratings([Judgement(subjects=("A", "B"), winner="C")])


def luce_tournament(rng: np.random.Generator, truth: dict[str, float], n: int) -> list[Judgement]:
    """`n` blind votes among four answers, the winner drawn by the model's own law: each
    subject wins with probability proportional to its strength 10^((rating - 1000) / 400)."""
    names = list(truth)
    strength = np.array([10 ** ((truth[s] - 1000) / 400) for s in names])
    judgements = []
    for _ in range(n):
        shown = rng.choice(len(names), size=4, replace=False)
        winner = rng.choice(shown, p=strength[shown] / strength[shown].sum())
        judgements.append(Judgement(subjects=tuple(names[i] for i in shown), winner=names[winner]))
    return judgements


def test_the_95_percent_interval_covers_the_true_rating_about_95_percent_of_the_time() -> None:
    """60 synthetic tournaments of 150 four-answer votes among subjects of known strength: the
    share of "95%" intervals that contain the true rating. The votes are four-answer ones
    because a vote's three pairs share its winner: resampling pairs instead of votes then
    shows as intervals too narrow. Seen with seed 0: 0.94 (0.91-0.94 over seeds 0-5: 100
    resamples and the prior undercover slightly); with the interval shrunk to 50%: 0.50
    (0.40-0.53 over seeds 0-2); with pairs resampled instead of votes: 0.82 (0.78-0.82)."""
    truth = {"a": 850.0, "b": 950.0, "c": 1050.0, "d": 1150.0}  # centred on the prior's 1000
    rng = np.random.default_rng(0)
    covered = []
    for tournament in range(60):
        board = fit_ratings(luce_tournament(rng, truth, 150), rounds=100, seed=tournament)
        covered += [r.ci_low <= truth[r.subject] <= r.ci_high for r in board.ratings]
    coverage = sum(covered) / len(covered)
    assert len(covered) == 240
    assert 0.87 <= coverage <= 0.99, f"the 95% interval covered the true rating in {coverage:.1%} of cases"
