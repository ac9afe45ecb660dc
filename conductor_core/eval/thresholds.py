"""Thresholds: what a variant's figures must reach for an eval to pass, and their verdicts.

A threshold is written either as a short comparison or as a mapping (both read the same):

    pass_rate >= 0.9                 # every check that applies, over the cells that ran
    pass_rate[mentions_refund] >= 80%   # one check's pass rate: its `name`, its label, or its number (1, 2, ...)
    p50_latency_ms <= 2000
    {metric: p95_latency_ms, op: "<=", value: 5000}
    {metric: pass_rate, check: mentions_refund, op: ">=", value: 0.8}

A metric with no value (no cell was checked, no answer to time) fails its threshold: a gate
that measured nothing must not pass.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Sequence
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..workbench.experiments import VariantStats

__all__ = ["METRICS", "Threshold", "Verdict", "judge"]

Op = Literal["<", "<=", ">", ">=", "==", "!="]
_OPS: dict[str, Callable[[float, float], bool]] = {
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
    "==": operator.eq,
    "!=": operator.ne,
}

#: Metric name -> (what it measures, how to read it from a variant's stats).
METRICS: dict[str, tuple[str, Callable[[VariantStats], float | None]]] = {
    "pass_rate": ("cells that passed every check that applies ÷ cells checked", lambda s: s.pass_rate),
    "success_rate": ("cells answered without error ÷ cells that ran", lambda s: s.success_rate),
    "p50_latency_ms": ("median latency of the answers, ms", lambda s: s.p50_latency_ms),
    "p95_latency_ms": ("95th percentile latency of the answers, ms", lambda s: s.p95_latency_ms),
    "p50_ttft_ms": ("median time to first token, ms", lambda s: s.p50_ttft_ms),
    "cost_usd": ("total cost of the answers whose price is known, USD", lambda s: s.cost_usd if s.priced else None),
    "errors": ("cells that failed with an error", lambda s: float(s.errors)),
    "incomplete": ("answers cut off mid-stream", lambda s: float(s.incomplete)),
    "win_rate": ("rows won ÷ rows decided (see the Experiments page)", lambda s: s.win_rate),
}

_WRITTEN = re.compile(
    r"^\s*(?P<metric>[A-Za-z_][A-Za-z0-9_]*)\s*(?:\[\s*(?P<check>[^\]]+?)\s*\])?\s*"
    r"(?P<op><=|>=|==|!=|<|>)\s*(?P<value>\S+)\s*$"
)


def _number(text: Any) -> Any:
    """A threshold's value: a number, or a percentage ("90%" is 0.9)."""
    if isinstance(text, str) and text.strip().endswith("%"):
        try:
            return float(text.strip()[:-1]) / 100
        except ValueError:
            return text
    return text


class Threshold(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(description=f"One of: {', '.join(METRICS)}.")
    check: str | None = Field(default=None, description="pass_rate only: one check's name, label or number.")
    op: Op
    value: float

    @model_validator(mode="before")
    @classmethod
    def _written(cls, data: Any) -> Any:
        if isinstance(data, str):
            match = _WRITTEN.match(data)
            if match is None:
                raise ValueError(
                    f"{data!r} is not a threshold; write METRIC OP VALUE, e.g. 'pass_rate >= 0.9', "
                    "'pass_rate[my_check] >= 80%' or 'p50_latency_ms <= 2000'"
                )
            data = match.groupdict()
        if isinstance(data, dict):
            data = {**data, "value": _number(data.get("value"))}
        return data

    @field_validator("metric")
    @classmethod
    def _known(cls, metric: str) -> str:
        if metric not in METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of: {', '.join(METRICS)}")
        return metric

    @model_validator(mode="after")
    def _check_on_pass_rate(self) -> Threshold:
        if self.check is not None and self.metric != "pass_rate":
            raise ValueError(f"only pass_rate takes a check ([{self.check}]); {self.metric} is per variant")
        return self

    @property
    def text(self) -> str:
        """How it reads: "pass_rate[mentions_refund] >= 0.8"."""
        metric = self.metric + (f"[{self.check}]" if self.check is not None else "")
        return f"{metric} {self.op} {self.value:g}"


class Verdict(BaseModel):
    """One threshold on one variant: what was measured and whether it holds."""

    variant: int
    label: str
    threshold: Threshold
    measured: float | None
    holds: bool

    @property
    def text(self) -> str:
        measured = "nothing (no value to compare)" if self.measured is None else f"{self.measured:g}"
        mark = "ok  " if self.holds else "FAIL"
        return f"{mark} variant {chr(65 + self.variant)} ({self.label}): {self.threshold.text}, measured {measured}"


def measure(threshold: Threshold, stats: VariantStats, check_index: int | None = None) -> float | None:
    """A variant's value of the threshold's metric (a check's pass rate when `check_index`)."""
    if check_index is not None:
        return stats.checks[check_index].pass_rate if check_index < len(stats.checks) else None
    return METRICS[threshold.metric][1](stats)


def judge(threshold: Threshold, stats: VariantStats, check_index: int | None = None) -> Verdict:
    measured = measure(threshold, stats, check_index)
    holds = measured is not None and _OPS[threshold.op](round(measured, 9), threshold.value)
    return Verdict(variant=stats.variant, label=stats.label, threshold=threshold, measured=measured, holds=holds)


def failed(verdicts: Sequence[Verdict]) -> list[Verdict]:
    return [v for v in verdicts if not v.holds]
