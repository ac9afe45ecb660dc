"""AUTO's choice: every usable provider in order, each with the sentence that says why.
Pure: scores in, candidates out (the core gathers the scores from metrics and breakers)."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import ChatRequest, RoutingPolicy, Usage
from ..providers import BaseProvider
from .evaluation import Evaluation, QualityBar
from .preference import TargetRating

__all__ = ["Candidate", "Score", "order", "estimated_cost", "after_fallback"]

#: Output tokens assumed for a request that sets no cap, when estimating its cost.
_UNCAPPED_ESTIMATE_TOKENS = 1000


@dataclass(frozen=True)
class Candidate:
    provider: BaseProvider
    reason: str
    #: Seconds this attempt has for its first token before AUTO moves on (see first_try.py); None: no limit
    #: but the provider's own timeout.
    first_try_s: float | None = None


@dataclass(slots=True)  # not frozen: one is built per provider per AUTO request, and frozen doubles that cost
class Score:
    """What AUTO knows of one provider for one request; sorts and explains itself."""

    samples: int
    latency_ms: float | None
    latency_kind: str
    success: float | None
    cost: float | None
    #: The target's blind-vote rating (read for the `preferred` policy only).
    rating: TargetRating | None = None
    min_votes: int = 10
    #: The target's pass rate on the request's prompt (read for the `evaluated` policy only).
    evaluation: Evaluation | None = None

    @property
    def rated(self) -> bool:
        return self.rating is not None and self.rating.enough

    def key(self, policy: RoutingPolicy) -> tuple[float, ...]:
        inf = float("inf")
        latency = self.latency_ms or inf
        success = self.success or 0.0
        cost = inf if self.cost is None else self.cost
        if policy == RoutingPolicy.fastest:
            return (latency,)
        if policy == RoutingPolicy.cheapest:
            return (cost, latency)
        if policy == RoutingPolicy.reliable:
            return (-success, latency)
        if policy == RoutingPolicy.preferred:
            # Rated targets first, best rated first; the rest as `balanced` ranks them.
            if self.rating is not None and self.rating.enough:
                return (0.0, -self.rating.rating, latency)
            return (1.0, *self.key(RoutingPolicy.balanced))
        # Balanced: expected seconds to a good answer (a failure costs another try, so divide
        # by the success rate, squared to punish flakiness), plus one second per tenth of a cent.
        return (latency / 1000 / max(success, 0.05) ** 2 + (0.0 if self.cost is None else self.cost * 1000),)

    def explain(self, policy: RoutingPolicy) -> str:
        speed = f"p50 {self.latency_kind} {self.latency_ms:.0f} ms" if self.latency_ms else "no latency data"
        rate = f"{self.success:.0%} success" if self.success is not None else "no success data"
        price = "free" if self.cost == 0 else f"est. ${self.cost:.5f}" if self.cost is not None else "cost unknown"
        if policy == RoutingPolicy.fastest:
            return f"fastest healthy provider: {speed}"
        if policy == RoutingPolicy.cheapest:
            return f"cheapest healthy provider: {price} for this request"
        if policy == RoutingPolicy.reliable:
            return f"most reliable healthy provider: {rate}"
        if policy == RoutingPolicy.preferred:
            if self.rating is not None and self.rating.enough:
                return f"highest rated: {self.rating.describe()}"
            votes = self.rating.votes if self.rating else 0
            needed = self.rating.min_votes if self.rating else self.min_votes
            return f"too few blind votes ({votes} < {needed}): " + self.explain(RoutingPolicy.balanced)
        return f"best balance of speed, reliability and cost: {speed}, {rate}, {price}"


def order(
    usable: list[BaseProvider],
    scores: dict[str, Score],
    probes: list[BaseProvider],
    policy: RoutingPolicy,
    bar: QualityBar | None = None,
) -> list[Candidate]:
    """Half-open probes first (otherwise a provider that failed would rank last on its old
    record and never get the request that shows it recovered), then providers with no history
    (explored, so a new one is not starved), then the rest by the policy's key. Under
    `preferred`, targets rated from enough blind votes come before the unexplored ones:
    people's votes outrank the lack of a latency sample. `evaluated` (with `bar`, the request's
    prompt and the settings): see `_by_evaluation`."""
    rest = [p for p in usable if p not in probes]
    if policy == RoutingPolicy.evaluated:
        return [
            Candidate(p, f"probing {p.name}: it was paused after failures, checking whether it recovered")
            for p in probes
        ] + _by_evaluation(rest, scores, bar or QualityBar(prompt=None))
    rated = [p for p in rest if policy == RoutingPolicy.preferred and scores[p.name].rated]
    fresh = [p for p in rest if scores[p.name].samples == 0 and p not in rated]
    known = [p for p in rest if p not in rated and p not in fresh]
    by_key = lambda group: sorted(group, key=lambda p: scores[p.name].key(policy))  # noqa: E731
    return (
        [Candidate(p, f"probing {p.name}: it was paused after failures, checking whether it recovered") for p in probes]
        + [Candidate(p, scores[p.name].explain(policy)) for p in by_key(rated)]
        + [Candidate(p, f"no history yet for {p.name}: trying it to learn its speed") for p in fresh]
        + [Candidate(p, scores[p.name].explain(policy)) for p in by_key(known)]
    )


def _by_evaluation(rest: list[BaseProvider], scores: dict[str, Score], bar: QualityBar) -> list[Candidate]:
    """`evaluated`: among the targets measured on the request's prompt (from at least
    `bar.min_rows` rows), those within `bar.margin` of the best pass rate come first, the
    cheapest (or fastest) first; then the other measured ones, best pass rate first; then the
    rest as `balanced` ranks them, each reason saying why it is there. With no measured target
    at all, everything is ranked as `balanced` and the reason says why."""

    def measured(p: BaseProvider) -> Evaluation | None:
        found = scores[p.name].evaluation
        return found if found is not None and found.rows >= bar.min_rows else None

    judged = [(p, e) for p in rest if (e := measured(p)) is not None]
    if not judged:
        if bar.prompt is None:
            why = "no prompt in the request (the evaluated policy needs one), so as balanced: "
        else:
            rows = max((s.evaluation.rows for s in scores.values() if s.evaluation is not None), default=None)
            why = (
                f"no target evaluated on prompt '{bar.prompt}', so as balanced: "
                if rows is None
                else f"too few evaluated rows on prompt '{bar.prompt}' ({rows} < {bar.min_rows}), so as balanced: "
            )
        return [Candidate(c.provider, why + c.reason) for c in order(rest, scores, [], RoutingPolicy.balanced)]

    inf = float("inf")
    best = max(e.pass_rate for _, e in judged)
    floor = best - bar.margin - 1e-9  # 0.91 is within 2 points of 0.93 despite binary fractions

    def thrift(item: tuple[BaseProvider, Evaluation]) -> tuple[float, ...]:
        score = scores[item[0].name]
        cost = inf if score.cost is None else score.cost
        latency = score.latency_ms or inf
        first, second = (cost, latency) if bar.prefer == "cheapest" else (latency, cost)
        return (first, -item[1].pass_rate, second)

    within = sorted([j for j in judged if j[1].pass_rate >= floor], key=thrift)
    below = sorted([j for j in judged if j[1].pass_rate < floor], key=lambda j: -j[1].pass_rate)
    points = bar.points
    ranked = [
        Candidate(
            p, f"{bar.prefer} within {points} of the best pass rate: {e.pass_rate:.2f} vs {best:.2f} on {e.source}"
        )
        for p, e in within
    ] + [
        Candidate(p, f"pass rate {e.pass_rate:.2f}, more than {points} below the best {best:.2f}, on {e.source}")
        for p, e in below
    ]
    if len(judged) == len(rest):
        return ranked
    done = {p for p, _ in judged}
    others = [p for p in rest if p not in done]
    for candidate in order(others, scores, [], RoutingPolicy.balanced):
        evaluation = scores[candidate.provider.name].evaluation
        why = (
            f"not evaluated on prompt '{bar.prompt}'"
            if evaluation is None
            else f"too few evaluated rows ({evaluation.rows} < {bar.min_rows})"
        )
        ranked.append(Candidate(candidate.provider, f"{why}, so after the evaluated ones: {candidate.reason}"))
    return ranked


def estimated_cost(provider: BaseProvider, request: ChatRequest) -> float | None:
    # ~4 characters a token; the answer priced at its ceiling so the ranking is cautious.
    chars = sum(len(m.content) for m in request.messages)
    usage = Usage(input_tokens=max(1, chars // 4), output_tokens=request.max_tokens or _UNCAPPED_ESTIMATE_TOKENS)
    return provider.estimate_cost(usage, provider.resolve_model(request))


def after_fallback(candidate: Candidate, failed: Candidate) -> str:
    return f"{failed.provider.name} failed, so the next in line: {candidate.reason}"
