"""Conductor's routing, one job per module:

    ranking.py    AUTO's order of candidates and the sentence that explains each (pure)
    preference.py what the `preferred` policy reads: blind-vote ratings, through an interface the workbench provides
    evaluation.py what the `evaluated` policy reads: prompts' pass rates, through an interface the workbench provides
    retry.py      when to retry and how long to wait: tenacity's policy, honouring Retry-After (pure)
    recording.py  what an attempt leaves behind: the breaker's verdict, metrics, the request log
    attempts.py   running attempts: admission (breaker, bulkhead), one call or stream, retries
    status.py     health, status and the shared view rebuilt from the request log
    compare.py    one request fanned out to 2-4 targets at once
    core.py       `AsyncConductor`, which puts them together

`conductor_core.router.Conductor` is the same core for synchronous callers.
"""

from .core import AsyncConductor
from .ranking import Candidate

__all__ = ["AsyncConductor", "Candidate"]
