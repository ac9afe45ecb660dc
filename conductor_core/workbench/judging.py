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

Pairwise (`judge_pair`): the judge is shown one row's two answers and asked which is better,
then asked again with the answers' order swapped (judges favour a position); the same answer
picked both times wins the row, a flip or a "tie" is a tie, and a missing verdict is no vote.
Agreement (`Agreement`, `cohens_kappa`): a person's 👍 counts as a pass and 👎 as a fail.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

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
from .experiments import Check, CheckKind, CheckResult, Judgement, JudgeTarget
from .templates import Template, TemplateError

__all__ = [
    "JUDGE_SCHEMA",
    "JUDGE_FORMAT",
    "JUDGE_SYSTEM",
    "judge_prompt",
    "judge_request",
    "read_verdict",
    "judge_answer",
    "ask_judge",
    "Asked",
    "PAIRWISE_SCHEMA",
    "pairwise_prompt",
    "pair_outcome",
    "judge_pair",
    "PairVerdict",
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
#: What is sent as the `response_format`: the same without the score's bounds, which Anthropic's
#: and (strict) OpenAI's structured output do not all take; the answer is checked against the
#: whole schema, bounds included, when it comes back.
JUDGE_WIRE_SCHEMA: dict[str, Any] = {
    **JUDGE_SCHEMA,
    "properties": {**JUDGE_SCHEMA["properties"], "score": {"type": "number"}},
}
JUDGE_FORMAT = ResponseFormatJsonSchema.model_validate(
    {"type": "json_schema", "json_schema": {"name": "judgement", "schema": JUDGE_WIRE_SCHEMA, "strict": True}}
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
    return _verdict_of(checked.value)


def _verdict_of(value: dict[str, Any]) -> tuple[bool, float, str]:
    """A verdict that matched JUDGE_SCHEMA, its reason on one line."""
    return bool(value["pass"]), float(value["score"]), _one_line(value["reason"])


def cancelled_judgement(request_id: str | None = None) -> CheckResult:
    return CheckResult(
        passed=None,
        detail="not judged: the run was stopped",
        judge=Judgement(status="cancelled", request_id=request_id),
    )


def _failed(
    error: str, *, request_id: str | None = None, latency_ms: float | None = None, cost: float | None = None
) -> CheckResult:
    return CheckResult(
        passed=None,
        detail=f"the judge failed: {error}",
        judge=Judgement(status="failed", error=error, request_id=request_id, latency_ms=latency_ms, cost_usd=cost),
    )


@dataclass(frozen=True)
class Asked:
    """One call to a judge: the JSON it answered (status ok) or why there is none."""

    status: Literal["ok", "failed", "cancelled"]
    value: Any = None
    error: str | None = None
    request_id: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None


def ask_judge(
    conductor: Any,
    request: ChatRequest,
    schema: dict[str, Any],
    *,
    overrides: Mapping[str, Any] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> Asked:
    """Ask a judge through the router (`Conductor.stream`) for JSON matching `schema`. Never
    raises for what the judge did: a provider error, an answer cut off or one that does not match
    the schema is `failed` (with the error); `stopped()` before or during the call, `cancelled`."""
    if stopped():
        return Asked("cancelled")
    request_id = new_id("judge")
    try:
        stream = conductor.stream(request, overrides=overrides, request_id=request_id)
    except ProviderError as error:
        return Asked("failed", error=f"{error.type}: {error.message}", request_id=request_id)
    try:
        for event in stream:
            if isinstance(event, StreamDone):
                a = event.response.analytics
                checked = check_json(event.response.content, schema)
                if not checked.ok:
                    why = f"the judge's answer is not a verdict ({checked.error})"
                    if event.response.metadata.finish_reason == "length":
                        why = f"the judge's answer was cut at its {request.max_tokens} tokens before the verdict ended"
                    return Asked("failed", None, why, request_id, a.latency_ms, a.cost_usd)
                return Asked("ok", checked.value, None, request_id, a.latency_ms, a.cost_usd)
            if isinstance(event, StreamIncomplete):
                a = event.partial.analytics
                why = f"the judge's answer was cut off ({event.error.message})"
                return Asked("failed", None, why, request_id, a.latency_ms, a.cost_usd)
            if stopped():
                # Closing the stream (finally) makes the log record this attempt as cancelled.
                return Asked("cancelled", request_id=request_id)
        return Asked("failed", error="the judge's stream ended without an answer", request_id=request_id)
    except ProviderError as error:
        return Asked("failed", error=f"{error.type}: {error.message}", request_id=request_id)
    finally:
        stream.close()


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
    asked = ask_judge(conductor, request, JUDGE_SCHEMA, overrides=overrides, stopped=stopped)
    if asked.status == "cancelled":
        return cancelled_judgement(asked.request_id)
    if asked.status == "failed":
        return _failed(
            asked.error or "no verdict", request_id=asked.request_id, latency_ms=asked.latency_ms, cost=asked.cost_usd
        )
    passed, score, reason = _verdict_of(asked.value)
    return CheckResult(
        passed=passed,
        detail=None if passed else reason,
        score=score,
        judge=Judgement(
            status="ok",
            reason=reason,
            request_id=asked.request_id,
            latency_ms=asked.latency_ms,
            cost_usd=asked.cost_usd,
        ),
    )


def _one_line(text: Any) -> str:
    return " ".join(str(text).split())


# --- pairwise: which of two answers is better, asked twice with the order swapped ----------------

#: What a pairwise judge answers: which answer is better ("1", "2" or "tie") and why.
PAIRWISE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"better": {"type": "string", "enum": ["1", "2", "tie"]}, "reason": {"type": "string"}},
    "required": ["better", "reason"],
    "additionalProperties": False,
}
PAIRWISE_FORMAT = ResponseFormatJsonSchema.model_validate(
    {"type": "json_schema", "json_schema": {"name": "preference", "schema": PAIRWISE_SCHEMA, "strict": True}}
)
PAIRWISE_SYSTEM = (
    "You compare two answers to the same prompt. Reply with JSON only: "
    '{"better": "1", "2" or "tie", "reason": one short sentence}.'
)
DEFAULT_CRITERIA = "Which answer is better: more correct, more helpful, clearer?"


def pairwise_prompt(prompt: str, first: str, second: str, criteria: str | None = None) -> str:
    return (
        f"{(criteria or '').strip() or DEFAULT_CRITERIA}\n\nThe prompt:\n{prompt}\n\n"
        f"Answer 1:\n{first}\n\nAnswer 2:\n{second}"
    )


def pairwise_request(judge: JudgeTarget, prompt: str) -> ChatRequest:
    return ChatRequest(
        provider=judge.provider,
        model=judge.model,
        messages=[
            ChatMessage(role=MessageRole.system, content=PAIRWISE_SYSTEM),
            ChatMessage(role=MessageRole.user, content=prompt),
        ],
        temperature=0.0,
        max_tokens=JUDGE_MAX_TOKENS,
        response_format=PAIRWISE_FORMAT,
    )


def pair_outcome(first: str | None, second: str | None) -> Literal["a", "b", "tie"] | None:
    """The row's result from the two verdicts: `first` asked with A as answer 1, `second` with B
    as answer 1. The same answer picked both times wins; a flip (position bias) or a tie is a
    tie; None when either verdict is missing."""
    if first is None or second is None:
        return None
    if (first, second) == ("1", "2"):
        return "a"
    if (first, second) == ("2", "1"):
        return "b"
    return "tie"


def judge_pair(
    conductor: Any,
    judge: JudgeTarget,
    *,
    prompt: str,
    answer_a: str,
    answer_b: str,
    criteria: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    stopped: Callable[[], bool] = lambda: False,
) -> PairVerdict:
    """Ask the judge twice, A first then B first, and combine the verdicts (`pair_outcome`)."""
    asked = []
    for first, second in ((answer_a, answer_b), (answer_b, answer_a)):
        request = pairwise_request(judge, pairwise_prompt(prompt, first, second, criteria))
        asked.append(ask_judge(conductor, request, PAIRWISE_SCHEMA, overrides=overrides, stopped=stopped))
        if asked[-1].status != "ok":
            break
    picks = [a.value["better"] if a.status == "ok" else None for a in asked] + [None] * (2 - len(asked))
    outcome = pair_outcome(picks[0], picks[1])
    costs = [a.cost_usd for a in asked if a.request_id is not None]
    latencies = [a.latency_ms for a in asked if a.latency_ms is not None]
    last = asked[-1]
    return PairVerdict(
        outcome=outcome if outcome is not None else ("cancelled" if last.status == "cancelled" else "failed"),
        first=picks[0],
        second=picks[1],
        reason=" | ".join(_one_line(a.value["reason"]) for a in asked if a.status == "ok") or None,
        error=last.error if last.status == "failed" else None,
        latency_ms=sum(latencies) if latencies else None,
        cost_usd=None if not costs or any(c is None for c in costs) else sum(c for c in costs if c is not None),
        calls=len(costs),
    )


@dataclass(frozen=True)
class PairVerdict:
    """One row's pairwise judgement: `outcome` a (A better both times), b, tie, failed or cancelled."""

    outcome: Literal["a", "b", "tie", "failed", "cancelled"]
    first: str | None  # the verdict with A shown first: "1", "2" or "tie"
    second: str | None  # with B shown first
    reason: str | None
    error: str | None
    latency_ms: float | None  # both calls
    cost_usd: float | None  # both calls; None when either's cost is unknown
    calls: int


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
