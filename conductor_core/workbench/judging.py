"""Model-graded checks: a judge model grades an answer against a rubric, and how far a person
agrees with the judge.

    verdict = judge_answer(conductor, check, answer=..., values=row, expected=...)
    verdict.passed, verdict.score, verdict.judge.reason     # or verdict.judge.status == "failed"
    Agreement.of([[both_pass, judge_pass_person_fail], [judge_fail_person_pass, both_fail]]).kappa

The judge is asked through the router (`Conductor.stream`: breakers, retries and the request log
apply) for JSON matching `JUDGE_SCHEMA` (the structured-output path), and its answer is checked
with `structured.check_json`. Its request id starts with `judge_`, so the request log says
which rows are judges' calls. Three ways a judgement ends other than a verdict, each stored
as such and never as the cell failing its rubric: the judge call failed (a provider error, an
answer cut off), the judge's answer is not a verdict (not JSON, or not matching the schema),
or the run was stopped (cancelled).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import ProviderError
from ..models import (
    ChatMessage,
    ChatRequest,
    MessageRole,
    ResponseFormatJsonSchema,
    StreamDone,
    StreamIncomplete,
    new_id,
)
from ..structured import check_json
from .experiments import Check, CheckKind, CheckResult, Judgement
from .templates import Template, TemplateError

__all__ = [
    "JUDGE_SCHEMA",
    "JUDGE_FORMAT",
    "JUDGE_SYSTEM",
    "judge_prompt",
    "judge_request",
    "read_verdict",
    "judge_answer",
    "cancelled_judgement",
    "Agreement",
    "cohens_kappa",
    "agreements",
]

#: What a judge answers: pass/fail, a score 0..1 and a one-line reason.
JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "pass": {"type": "boolean"},
        "score": {"type": "number", "minimum": 0, "maximum": 1},
        "reason": {"type": "string"},
    },
    "required": ["pass", "score", "reason"],
    "additionalProperties": False,
}
JUDGE_FORMAT = ResponseFormatJsonSchema.model_validate(
    {"type": "json_schema", "json_schema": {"name": "judgement", "schema": JUDGE_SCHEMA, "strict": True}}
)
JUDGE_SYSTEM = (
    "You grade an answer against a rubric. Reply with JSON only: "
    '{"pass": true or false, "score": a number from 0 to 1, "reason": one short sentence}.'
)
#: Enough for a verdict and a one-line reason.
JUDGE_MAX_TOKENS = 300


def judge_prompt(rubric: str, *, answer: str, values: Mapping[str, Any], expected: str | None, row: int) -> str:
    """The rubric filled from the row's columns, `{{answer}}` and `{{expected}}`. A rubric that
    does not place the answer itself gets it after the rubric (the judge must see it)."""
    template = Template(rubric)
    filled = template.render({**values, "answer": answer, "expected": expected}, row=row + 1)
    if "answer" in template.variables:
        return filled
    return f"{filled}\n\nThe answer to grade:\n{answer}"


def judge_request(check: Check, prompt: str) -> ChatRequest:
    assert check.judge is not None
    return ChatRequest(
        provider=check.judge.provider,
        model=check.judge.model,
        messages=[
            ChatMessage(role=MessageRole.system, content=JUDGE_SYSTEM),
            ChatMessage(role=MessageRole.user, content=prompt),
        ],
        temperature=0.0,
        max_tokens=JUDGE_MAX_TOKENS,
        response_format=JUDGE_FORMAT,
    )


def read_verdict(text: str) -> tuple[bool, float, str] | str:
    """(pass, score, reason) from a judge's answer, or why it is not a verdict."""
    checked = check_json(text, JUDGE_SCHEMA)
    if not checked.ok:
        return f"the judge's answer is not a verdict ({checked.error})"
    value = checked.value
    return bool(value["pass"]), float(value["score"]), " ".join(str(value["reason"]).split())


def cancelled_judgement(request_id: str | None = None) -> CheckResult:
    return CheckResult(
        passed=None,
        detail="not judged: the run was stopped",
        judge=Judgement(status="cancelled", request_id=request_id),
    )


def _failed(error: str, *, request_id: str | None = None, latency_ms: float | None = None, cost: float | None = None):
    return CheckResult(
        passed=None,
        detail=f"the judge failed: {error}",
        judge=Judgement(status="failed", error=error, request_id=request_id, latency_ms=latency_ms, cost_usd=cost),
    )


def judge_answer(
    conductor: Any,
    check: Check,
    *,
    answer: str,
    values: Mapping[str, Any],
    expected: str | None,
    row: int,
    overrides: Mapping[str, Any] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> CheckResult:
    """Ask `check`'s judge about one answer, through the router. Never raises for what the judge
    did: a failed call or an answer that is not a verdict is a failed judgement (passed None,
    the error kept); `stopped()` true before or during the call is a cancelled one."""
    if check.kind != CheckKind.rubric or check.judge is None or not check.rubric:
        raise ValueError("judge_answer grades rubric checks (with a rubric and a judge)")
    if stopped():
        return cancelled_judgement()
    try:
        prompt = judge_prompt(check.rubric, answer=answer, values=values, expected=expected, row=row)
        request = judge_request(check, prompt)
    except (TemplateError, ValueError) as exc:
        return _failed(f"the rubric cannot be filled: {exc}")
    request_id = new_id("judge")
    try:
        stream = conductor.stream(request, overrides=overrides, request_id=request_id)
    except ProviderError as error:
        return _failed(f"{error.type}: {error.message}", request_id=request_id)
    try:
        for event in stream:
            if isinstance(event, StreamDone):
                a = event.response.analytics
                verdict = read_verdict(event.response.content)
                if isinstance(verdict, str):
                    return _failed(verdict, request_id=request_id, latency_ms=a.latency_ms, cost=a.cost_usd)
                passed, score, reason = verdict
                return CheckResult(
                    passed=passed,
                    detail=None if passed else reason,
                    score=score,
                    judge=Judgement(
                        status="ok",
                        reason=reason,
                        request_id=request_id,
                        latency_ms=a.latency_ms,
                        cost_usd=a.cost_usd,
                    ),
                )
            if isinstance(event, StreamIncomplete):
                a = event.partial.analytics
                return _failed(
                    f"the judge's answer was cut off ({event.error.message})",
                    request_id=request_id,
                    latency_ms=a.latency_ms,
                    cost=a.cost_usd,
                )
            if stopped():
                # Closing the stream (finally) makes the log record this attempt as cancelled.
                return cancelled_judgement(request_id)
        return _failed("the judge's stream ended without an answer", request_id=request_id)
    except ProviderError as error:
        return _failed(f"{error.type}: {error.message}", request_id=request_id)
    finally:
        stream.close()


# --- agreement between the judge and a person ----------------------------------------------------


def cohens_kappa(table: Sequence[Sequence[int]]) -> float | None:
    """Cohen's kappa of a 2x2 table [[both yes, judge yes person no], [judge no person yes,
    both no]] (any square table works). None when it is undefined: no pairs, or every label of
    both raters is the same one class (chance agreement is then 1, and kappa is 0/0)."""
    size = len(table)
    n = sum(sum(row) for row in table)
    if n == 0:
        return None
    observed = sum(table[i][i] for i in range(size)) / n
    rows = [sum(table[i]) / n for i in range(size)]
    columns = [sum(table[i][j] for i in range(size)) / n for j in range(size)]
    chance = sum(r * c for r, c in zip(rows, columns, strict=True))
    if chance >= 1.0:
        return None
    return (observed - chance) / (1.0 - chance)


@dataclass(frozen=True)
class Agreement:
    """How often the judge and a person agreed on cells both graded (a person's 👍 is a pass)."""

    n: int
    agreed: int
    kappa: float | None
    kappa_note: str | None  # why kappa is undefined, when it is

    @property
    def rate(self) -> float | None:
        return self.agreed / self.n if self.n else None

    @classmethod
    def of(cls, table: Sequence[Sequence[int]]) -> Agreement:
        n = sum(sum(row) for row in table)
        agreed = table[0][0] + table[1][1]
        kappa = cohens_kappa(table)
        note = None
        if n == 0:
            note = "no cell has both a verdict and a 👍/👎"
        elif kappa is None:
            note = "undefined: the judge and the person each gave one same label to every cell"
        return cls(n=n, agreed=agreed, kappa=kappa, kappa_note=note)

    def describe(self) -> str:
        if not self.n:
            return "no cell rated by a person has a verdict yet"
        kappa = f"κ = {self.kappa:.2f}" if self.kappa is not None else f"κ {self.kappa_note}"
        return f"agreed on {self.agreed} of {self.n} ({self.agreed / self.n:.0%}) · {kappa}"


def agreements(checks: Sequence[Check], stats: Sequence[Any]) -> list[tuple[int, Check, Agreement]]:
    """Per rubric check of a run (its index, the check, the agreement over every variant): the
    variants' 2x2 tables (`CheckStats.agreement`, from `ExperimentStore.stats`) added up."""
    out = []
    for index, check in enumerate(checks):
        if check.kind != CheckKind.rubric:
            continue
        table = [[0, 0], [0, 0]]
        for s in stats:
            if index < len(s.checks):
                for i in range(2):
                    for j in range(2):
                        table[i][j] += s.checks[index].agreement[i][j]
        out.append((index, check, Agreement.of(table)))
    return out
