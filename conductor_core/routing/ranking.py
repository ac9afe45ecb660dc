"""AUTO's choice: every usable provider in order, each with the sentence that says why.
Pure: scores in, candidates out (the core gathers the scores from metrics and breakers)."""

from __future__ import annotations

from dataclasses import dataclass

from ..models import ChatRequest, RoutingPolicy, Usage
from ..providers import BaseProvider
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
    usable: list[BaseProvider], scores: dict[str, Score], probes: list[BaseProvider], policy: RoutingPolicy
) -> list[Candidate]:
    """Half-open probes first (otherwise a provider that failed would rank last on its old
    record and never get the request that shows it recovered), then providers with no history
    (explored, so a new one is not starved), then the rest by the policy's key. Under
    `preferred`, targets rated from enough blind votes come before the unexplored ones:
    people's votes outrank the lack of a latency sample."""
    rest = [p for p in usable if p not in probes]
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


def estimated_cost(provider: BaseProvider, request: ChatRequest) -> float | None:
    # ~4 characters a token; the answer priced at its ceiling so the ranking is cautious.
    chars = sum(len(m.content) for m in request.messages)
    usage = Usage(input_tokens=max(1, chars // 4), output_tokens=request.max_tokens or _UNCAPPED_ESTIMATE_TOKENS)
    return provider.estimate_cost(usage, provider.resolve_model(request))


def after_fallback(candidate: Candidate, failed: Candidate) -> str:
    return f"{failed.provider.name} failed, so the next in line: {candidate.reason}"
