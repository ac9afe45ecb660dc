"""What AUTO's `evaluated` policy reads: how each target ("provider/model") did on a saved
prompt in the Experiments page's runs, through a small interface.

Routing runs no experiment and reads no run: the workbench does
(`workbench.evaluation.EvaluatedPassRates`), and `conductor_core.router.Conductor` hands the
core that source. `rank()` reads it on every `evaluated` request that names a prompt, so a
source answers from memory. Without one (`NoEvaluations`) nothing is evaluated, and
`evaluated` ranks as `balanced` does, saying so.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol

__all__ = ["DEFAULT_MARGIN", "DEFAULT_MIN_ROWS", "Evaluation", "EvaluationSource", "NoEvaluations", "QualityBar"]

#: How far below the best pass rate a target may be and still be chosen for its price or speed.
DEFAULT_MARGIN = 0.02
#: Rows a target's run must have checked before `evaluated` ranks it by its pass rate.
DEFAULT_MIN_ROWS = 20


@dataclass(frozen=True, slots=True)
class Evaluation:
    """One target's latest completed run of a prompt, as ranking reads and quotes it."""

    pass_rate: float
    #: Cells the pass rate counts (rows the measured check applied to).
    rows: int
    #: Where it was measured, as the reason quotes it: "dataset invoices v3, run 12".
    source: str


@dataclass(frozen=True, slots=True)
class QualityBar:
    """What an `evaluated` request is ranked against: its prompt and the settings."""

    prompt: str | None
    margin: float = DEFAULT_MARGIN
    prefer: Literal["cheapest", "fastest"] = "cheapest"
    min_rows: int = DEFAULT_MIN_ROWS

    @property
    def points(self) -> str:
        """The margin as the reason says it: "2 points"."""
        return f"{self.margin * 100:g} point" + ("" if self.margin == 0.01 else "s")


class EvaluationSource(Protocol):
    def get(self, prompt: str, target: str) -> Evaluation | None:
        """How `target` ("provider/model") last did on `prompt`, or None when no completed run
        of it measured that target. Called per request: no waiting."""
        ...


class NoEvaluations:
    """A source with no runs at all."""

    def get(self, prompt: str, target: str) -> Evaluation | None:
        return None
