"""AUTO's first-try deadline: a provider with no recent success gets a short time to show its
first token while other providers remain to fall back to. Pure: candidates in, candidates out.

Why: AUTO explores a provider it knows nothing about (or whose recent calls all failed) with
the person's real message. An endpoint that accepts the connection and then hangs would hold
that message for the provider's whole timeout (60 s by default) before the fallback. A healthy
provider sends its first token within a few seconds however long its answer, so a deadline on
the first token tells a hang from a long answer; a deadline on the whole answer would punish
long answers. A cheap probe was the other choice: it costs a call (and money) on every first
try, and a probe that passes says little about the real request.

What it costs: a provider that is slow to start (a model still loading, a reasoning model)
can miss the deadline; the miss is a timeout, logged and counted against it like any other,
so AUTO ranks it lower. The last candidate has no deadline (nothing to fall back to), nor does
a provider that answered recently, nor a provider named in the request (never AUTO's choice).
`CONDUCTOR_FIRST_TRY_TIMEOUT_S=0` turns the deadline off.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from .ranking import Candidate

__all__ = ["with_first_try_deadlines", "why"]


def with_first_try_deadlines(
    candidates: Sequence[Candidate], proven: Callable[[str], bool], deadline_s: float
) -> list[Candidate]:
    """`candidates` in the same order, each one that is not `proven` (no recent success) and
    not the last given `deadline_s` for its first token. `deadline_s` <= 0: none is."""
    if deadline_s <= 0:
        return list(candidates)
    last = len(candidates) - 1
    return [
        replace(c, first_try_s=deadline_s) if i < last and not proven(c.provider.name) else c
        for i, c in enumerate(candidates)
    ]


def why(name: str, deadline_s: float) -> str:
    """The sentence a missed deadline is logged with."""
    return (
        f"{name} sent no first token within {deadline_s:g} s, the first-try deadline for a provider with no "
        "recent success while others can answer (CONDUCTOR_FIRST_TRY_TIMEOUT_S)"
    )
