"""Experiments: a prompt template over a dataset, against 2-4 variants, and its runs.

    store = ExperimentStore(conductor.log)
    experiment = store.create("Capitals", "Capital of {{country}}?", dataset, variants)
    handle = start_run(conductor, store, experiment.id, checks=[Check(kind="contains"),
                       Check(kind="json_path", path="$.total", column="expected_total")])   # runner.py
    handle.progress()            # poll it (a page every second); handle.stop() keeps what finished
    store.stats(handle.run_id)   # per variant, computed in SQL
    store.grid(handle.run_id, offset=0, limit=25)   # one page of rows x variants
    store.changes(handle.run_id) # "variant B: pass rate 82% → 74%, p50 +120 ms since run 3"

An experiment is immutable once created (its template, dataset and variants), so every run of
it is comparable with every other; change something and it is a new experiment. A run picks
its checks and its concurrency per provider. A check compares the answer with the `expected`
column (contains / regex / equals), or checks it is valid against the schema, that a JSON path
in it equals a column, that the model called a tool (with an argument equal to a column), or
that it called none; or a judge model grades it against a rubric (`rubric`, judging.py: its
pass, score 0-1, reason, latency and cost are stored in the cell's verdict; a judge that gave
no verdict is a failed judge, not a failed answer). A cell passes when every check that applies
to its row passes; each check's verdict is stored per cell, and the stats give each check's pass
rate per variant (a rubric's also its mean score, judge failures, cost, and its agreement with
the cells' 👍/👎).

Tables (beside the request log, created by its migrations, conductor_core/store/migrations):

    experiments       id, created_at/_ts, name, template, variants (JSON list of Variant),
                      columns (JSON), row_count, has_expected
    experiment_rows   (experiment_id, row_index) -> line, row_values (JSON), expected
    experiment_row_attachments  (experiment_id, row_index, position) -> sha256, name: a
                      row's images (its image columns', in order), each picture's bytes once
                      in `attachments` (sessions.py) however many rows, runs and chats use it
    experiment_runs   id, experiment_id, number (1, 2, ... per experiment), created_at/_ts,
                      check_kind (the first check's), checks (JSON list; NULL before 0005:
                      one check of check_kind), concurrency (JSON), status (running /
                      completed / stopped), heartbeat_ts, finished_at, cells_total,
                      prompt_version_id (the prompt version it started from, prompts.py),
                      runner (NULL: in the process that started it; "jobs": queued for the workers,
                      conductor_core/jobs), stop_requested (Stop, from any process; 0012)
    experiment_cells  (run_id, row_index, variant_index) -> status (ok / error / incomplete /
                      cancelled), request_id (the request log's attempts.request_id), answer,
                      error_type, error_message, latency_ms, ttft_ms, input/output tokens,
                      cost_usd, passed, rating (+1 / -1), finished_ts, tool_calls (JSON),
                      checks (JSON: one verdict per run check; NULL before 0005: `passed`)
    experiment_judge_votes  id -> run_id, row_index, variant_a, variant_b, judge (JSON), criteria,
                      outcome (a / b / tie / failed / cancelled), first, second (the verdicts with
                      A, then B, shown first), reason, error, latency_ms, cost_usd, calls: pairwise
                      judgements (0009), judge votes kept apart from people's

A queued run (runner "jobs") belongs to no process: it is running until its last cell is stored
(`finish_if_complete`), whichever workers come and go. A run whose process died shows as `interrupted` at once: the process holds the run's lease
(`store/leases.py`: an advisory lock on PostgreSQL, a file lock beside SQLite's file) from
`new_run` to `finish_run`, and the lease dies with it. A run whose heartbeat (written at least
every few seconds while it runs) went stale is interrupted too (a process alive but stuck). Statistics are computed in SQL (percentiles with window
functions), so a page costs the same for 10 rows or 1,000; nothing holds a whole run in memory.

Win rate, defined: in each row, every answered variant gets a score — 4 × its rating (+1 👍,
−1 👎, 0 unrated) + 2 if it passed the check + 1 if it answered without error — so a person's
verdict outweighs the automatic check, which outweighs merely answering. The variants with the
row's top score share that row's win (two at the top get half each). A row where every
variant scores the same decides nothing and is left out. Win rate = a variant's wins ÷ the
rows that were decided. Cancelled cells take no part.
"""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator
from sqlalchemy import (
    Boolean,
    Column,
    Double,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    UniqueConstraint,
    and_,
    case,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError

from ..config import redact
from ..models import RoutingPolicy, ToolCall, new_id, response_schema, utcnow
from ..secrets import redact_json
from ..store import RequestLog, SafeText, UTCDateTime
from ..store.leases import Lease, leases_for
from ..structured import check_json, json_path_problem, json_path_values, schema_problem
from .attachments import Attachment, AttachmentRef
from .datasets import DEFAULT_MAX_ROWS, Dataset, DatasetTooLargeError, is_image_column
from .sessions import keep_bytes, row_attachments_table
from .sessions import metadata as attachments_metadata
from .templates import Template, TemplateError
from .variants import Variant, variant_labels

if TYPE_CHECKING:
    from .ratings import Leaderboard

__all__ = [
    "CheckKind",
    "Check",
    "CheckResult",
    "JudgeTarget",
    "Judgement",
    "RUBRIC_VARIABLES",
    "evaluate",
    "all_passed",
    "as_checks",
    "applies",
    "failed_checks",
    "CheckError",
    "ExperimentError",
    "Experiment",
    "Run",
    "Cell",
    "GridRow",
    "VariantStats",
    "ExperimentStore",
    "JudgeVote",
    "PairwiseStats",
    "check_answer",
    "metadata",
]

CellStatus = Literal["ok", "error", "incomplete", "cancelled"]
RunStatus = Literal["running", "completed", "stopped", "interrupted"]
#: A running run whose heartbeat is older than this is shown as interrupted (its process died).
STALE_AFTER_S = 30.0


class ExperimentError(ValueError):
    """The experiment cannot be created or run as asked; the message says what to change."""


class CheckError(ExperimentError):
    pass


class CheckKind(StrEnum):
    """What a check asks of an answer. The first three compare the answer's text with the row's
    `expected` value; the others read its JSON or its tool calls."""

    contains = "contains"  # the answer contains it (case and surrounding spaces ignored)
    regex = "regex"  # Python `re.search` of it in the answer (add (?i) to ignore case)
    equals = "equals"  # the answer is it (case and surrounding spaces ignored)
    schema = "schema"  # the answer is JSON valid against the schema (the check's, else the variant's)
    json_path = "json_path"  # the value at `path` in the answer's JSON equals the row's `column`
    called_tool = "called_tool"  # the model called tool `tool`
    tool_argument = "tool_argument"  # it called `tool` with argument `path` equal to the row's `column`
    no_tool = "no_tool"  # the model called no tool
    rubric = "rubric"  # a judge model grades the answer against `rubric` (judging.py)


_TEXT_CHECKS = (CheckKind.contains, CheckKind.regex, CheckKind.equals)


def check_answer(kind: CheckKind | str, answer: str, expected: str) -> bool:
    kind = CheckKind(kind)
    if kind == CheckKind.regex:
        return re.search(expected, answer) is not None
    if kind == CheckKind.equals:
        return _same_text(answer, expected)
    if kind not in _TEXT_CHECKS:
        raise CheckError(f"{kind.value} is not a check of the answer's text against the expected column")
    return expected.strip().casefold() in answer.casefold()


def _same_text(a: str, b: str) -> bool:
    return a.strip().casefold() == b.strip().casefold()


def same_value(found: Any, wanted: str) -> bool:
    """A JSON value against a column's text: numbers as numbers (12 == "12.0"), anything else
    as text with case and surrounding spaces ignored (as the equals check)."""
    if isinstance(found, (int, float)) and not isinstance(found, bool):
        try:
            return float(found) == float(wanted)
        except ValueError:
            return False
    text = found if isinstance(found, str) else json.dumps(found, ensure_ascii=False)
    return _same_text(text, wanted)


#: What a rubric may use besides the row's columns.
RUBRIC_VARIABLES = ("answer", "expected")


class JudgeTarget(BaseModel):
    """Who judges a rubric check: a provider (a built-in one, an endpoint, the embedded `local`)
    and a model (None: the provider's default). Plain text, so a stored check always reads back
    (an endpoint another process added is checked when a run starts)."""

    model_config = ConfigDict(frozen=True)

    provider: str = Field(min_length=1)
    model: str | None = None

    @field_validator("provider")
    @classmethod
    def _plain_provider(cls, value: str) -> str:
        return value.strip().lower()

    @field_validator("model")
    @classmethod
    def _plain_model(cls, value: str | None) -> str | None:
        return (value or "").strip() or None

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.model else self.provider


class Check(BaseModel):
    """One check of a run. `column` names the dataset column a value is compared with
    (`{{expected_total}}` or `expected_total`; the text checks use `expected`). A rubric check
    has its `rubric` (with `{{column}}`, `{{answer}}`, `{{expected}}`) and its `judge`:
    `{"kind": "rubric", "rubric": "Is {{answer}} polite?", "judge": {"provider": "openai"}}`."""

    model_config = ConfigDict(frozen=True, populate_by_name=True, serialize_by_alias=True)

    kind: CheckKind
    path: str | None = Field(
        default=None, description="json_path: $.total; tool_argument: the argument (city or $.city)."
    )
    column: str | None = Field(default=None, description="The dataset column compared with (json_path, tool_argument).")
    tool: str | None = Field(default=None, description="called_tool, tool_argument: the tool's name.")
    schema_: dict[str, Any] | None = Field(
        default=None, alias="schema", description="schema: the JSON Schema (None: the variant's output schema)."
    )
    rubric: str | None = Field(default=None, description="rubric: what the judge grades the answer against.")
    judge: JudgeTarget | None = Field(default=None, description="rubric: the provider and model that judge.")

    @field_validator("column")
    @classmethod
    def _bare_column(cls, value: str | None) -> str | None:
        if value is None:
            return None
        bare = value.strip()
        if bare.startswith("{{") and bare.endswith("}}"):
            bare = bare[2:-2].strip()
        return bare or None

    @property
    def label(self) -> str:
        """How the check reads on the page and in exports ("$.total = {{expected_total}}")."""
        if self.kind in _TEXT_CHECKS:
            return self.kind.value  # against the expected column, as every run before said
        if self.kind == CheckKind.schema:
            return "valid against the schema" + (" (the check's)" if self.schema_ is not None else "")
        if self.kind == CheckKind.json_path:
            return f"{self.path} = {{{{{self.column}}}}}"
        if self.kind == CheckKind.called_tool:
            return f"called {self.tool}"
        if self.kind == CheckKind.tool_argument:
            return f"{self.tool}({self.path} = {{{{{self.column}}}}})"
        if self.kind == CheckKind.rubric:
            text = " ".join((self.rubric or "").split())
            clipped = text if len(text) <= 40 else text[:39] + "…"
            return f"rubric “{clipped}” (judge {self.judge.label if self.judge else 'none'})"
        return "called no tool"

    def problem(self, experiment: Experiment) -> str | None:
        """What is missing for this check to run on this experiment, said before any call."""
        if self.kind == CheckKind.rubric:
            return self._rubric_problem(experiment.columns)
        if self.kind in (CheckKind.json_path, CheckKind.tool_argument):
            if not self.path:
                return f"{self.label}: say which {'field' if self.kind == CheckKind.json_path else 'argument'}"
            if self.kind == CheckKind.json_path or self.path.startswith("$"):
                if problem := json_path_problem(self.path):
                    return problem
            if not self.column:
                return f"{self.label}: say which column it equals, e.g. {{{{expected_total}}}}"
            if self.column not in experiment.columns:
                return f"the dataset has no column {self.column!r} (columns: {', '.join(experiment.columns)})"
        if self.kind in (CheckKind.called_tool, CheckKind.tool_argument) and not (self.tool or "").strip():
            return f"the {self.kind.value} check needs the tool's name"
        if self.kind == CheckKind.schema:
            if self.schema_ is not None:
                return schema_problem(self.schema_)
            if any(response_schema(v.response_format) is None for v in experiment.variants):
                return "the schema check needs a schema: give every variant a JSON schema output, or the check one"
        return None

    def _rubric_problem(self, columns: Sequence[str]) -> str | None:
        if not (self.rubric or "").strip():
            return "the rubric check needs a rubric: what a good answer does, e.g. “{{answer}} names the capital”"
        if self.judge is None:
            return "the rubric check needs a judge: a provider (and model) that grades the answers"
        if self.judge.provider == "auto":
            return "the judge names a provider: 'auto' could grade each answer with another model"
        try:
            variables = Template(self.rubric or "").variables
        except TemplateError as exc:
            return f"the rubric cannot be used: {exc}"
        unknown = [v for v in variables if v not in columns and v not in RUBRIC_VARIABLES]
        if unknown:
            have = ", ".join(dict.fromkeys([*columns, *RUBRIC_VARIABLES]))
            return f"the rubric uses {', '.join(f'{{{{{v}}}}}' for v in unknown)}, which no column holds ({have})"
        return None


class Judgement(BaseModel):
    """What became of a judge's call for one rubric check of one cell."""

    model_config = ConfigDict(frozen=True)

    status: Literal["pending", "ok", "failed", "cancelled"]
    reason: str | None = Field(default=None, description="The judge's one-line reason (status ok).")
    error: str | None = Field(default=None, description="Why there is no verdict (status failed).")
    request_id: str | None = Field(default=None, description="The judge call's request id in the request log.")
    latency_ms: float | None = None
    cost_usd: float | None = Field(default=None, description="None: unknown (or no call was made).")


class CheckResult(BaseModel):
    """One check's verdict on one cell: passed (None: the row has no value to compare with, or
    the judge gave no verdict) and why it failed; a rubric check's score and judgement."""

    model_config = ConfigDict(frozen=True)

    passed: bool | None
    detail: str | None = None
    score: float | None = Field(default=None, description="rubric: the judge's score, 0..1.")
    judge: Judgement | None = Field(default=None, description="rubric: the judge's call.")


def evaluate(
    check: Check,
    *,
    answer: str,
    tool_calls: Sequence[ToolCall],
    values: dict[str, Any],
    expected: str | None,
    response_format: Any = None,
) -> CheckResult:
    """One check of a finished answer (its text and tool calls) on its row."""
    kind = check.kind
    if not applies(check, values, expected):
        return CheckResult(passed=None)
    if kind == CheckKind.rubric:
        # Graded by its judge after the answer (runner.py, judging.py).
        return CheckResult(passed=None, detail="waiting for the judge", judge=Judgement(status="pending"))
    if kind in _TEXT_CHECKS:
        assert expected is not None
        passed = check_answer(kind, answer, expected)
        return CheckResult(passed=passed, detail=None if passed else f"does not {kind.value} {expected!r}")
    if kind == CheckKind.schema:
        schema = check.schema_ if check.schema_ is not None else response_schema(response_format)
        if schema is None:
            return CheckResult(passed=False, detail="no schema to check against")
        verdict = check_json(answer, schema)
        return CheckResult(passed=verdict.ok, detail=verdict.error)
    if kind == CheckKind.no_tool:
        names = ", ".join(c.function.name for c in tool_calls)
        return CheckResult(passed=not tool_calls, detail=f"called {names}" if tool_calls else None)
    wanted = _column_value(values, check.column)
    if kind == CheckKind.json_path:
        if wanted is None:
            return CheckResult(passed=None)
        verdict = check_json(answer, None)
        if not verdict.parsed:
            return CheckResult(passed=False, detail=verdict.error)
        return _found_equals(json_path_values(verdict.value, check.path or "$"), wanted, check.path or "$")
    calls = [c for c in tool_calls if c.function.name == check.tool]
    if not calls:
        called = ", ".join(c.function.name for c in tool_calls) or "no tool"
        return CheckResult(passed=False, detail=f"did not call {check.tool} (called {called})")
    if kind == CheckKind.called_tool:
        return CheckResult(passed=True)
    if wanted is None:
        return CheckResult(passed=None)
    found: list[Any] = []
    for call in calls:
        try:
            arguments = json.loads(call.function.arguments or "{}")
        except ValueError:
            continue
        path = check.path or ""
        if path.startswith("$"):
            found.extend(json_path_values(arguments, path))
        elif isinstance(arguments, dict) and path in arguments:
            found.append(arguments[path])
    return _found_equals(found, wanted, f"{check.tool}({check.path})")


def applies(check: Check, values: dict[str, Any], expected: str | None) -> bool:
    """Whether the row has what the check compares with (a blank expected value checks nothing)."""
    if check.kind in _TEXT_CHECKS:
        return expected is not None
    if check.kind in (CheckKind.json_path, CheckKind.tool_argument):
        return _column_value(values, check.column) is not None
    if check.kind == CheckKind.rubric and expected is None:
        try:
            return "expected" not in Template(check.rubric or "").variables
        except TemplateError:
            return True  # said by problem() before the run
    return True


def failed_checks(checks: Sequence[Check], values: dict[str, Any], expected: str | None, why: str) -> list[CheckResult]:
    """The verdicts of a cell that got no (whole) answer: failed, where the check applies."""
    return [
        CheckResult(passed=False, detail=why) if applies(c, values, expected) else CheckResult(passed=None)
        for c in checks
    ]


def _column_value(values: dict[str, Any], column: str | None) -> str | None:
    value = values.get(column or "")
    if value is None:
        return None
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return text if text.strip() else None


def _found_equals(found: list[Any], wanted: str, where: str) -> CheckResult:
    if not found:
        return CheckResult(passed=False, detail=f"{where}: not found")
    if any(same_value(value, wanted) for value in found):
        return CheckResult(passed=True)
    shown = json.dumps(found[0], ensure_ascii=False)
    return CheckResult(passed=False, detail=f"{where}: {shown} is not {wanted!r}")


def all_passed(results: Sequence[CheckResult]) -> bool | None:
    """A cell passes when every check that applies to its row passes (None: none applies)."""
    verdicts = [r.passed for r in results if r.passed is not None]
    return all(verdicts) if verdicts else None


def as_checks(checks: CheckKind | str | Check | Sequence[CheckKind | str | Check]) -> tuple[Check, ...]:
    """A run's checks from a kind, a check or a list of either (a bare kind: the text checks)."""
    items = [checks] if isinstance(checks, (str, Check)) else list(checks)
    return tuple(item if isinstance(item, Check) else Check(kind=CheckKind(item)) for item in items)


# --- tables ----------------------------------------------------------------------------------

metadata = MetaData()

experiments_table = Table(
    "experiments",
    metadata,
    Column("id", String(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("name", SafeText(), nullable=False),
    Column("template", SafeText(), nullable=False),
    Column("variants", SafeText(), nullable=False),
    Column("columns", SafeText(), nullable=False),
    Column("row_count", Integer(), nullable=False),
    Column("has_expected", Boolean(), nullable=False),
    Index("ix_experiments_created_ts", "created_ts"),
)

rows_table = Table(
    "experiment_rows",
    metadata,
    Column("experiment_id", String(), primary_key=True),
    Column("row_index", Integer(), primary_key=True),
    Column("line", Integer()),
    Column("row_values", SafeText(), nullable=False),
    Column("expected", SafeText()),
)

runs_table = Table(
    "experiment_runs",
    metadata,
    Column("id", String(), primary_key=True),
    Column("experiment_id", String(), nullable=False),
    Column("number", Integer(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("check_kind", String(), nullable=False),
    Column("concurrency", SafeText(), nullable=False),
    Column("status", String(), nullable=False),
    Column("heartbeat_ts", Double(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("cells_total", Integer(), nullable=False),
    Column("checks", SafeText()),  # JSON list of Check; NULL: a run from before, one check of check_kind
    # The saved dataset version its rows came from (dataset_store.py); NULL: pasted or uploaded.
    Column("dataset_name", SafeText()),
    Column("dataset_version", Integer()),
    Column("prompt_version_id", String()),  # the prompt version it started from (prompts.py); NULL: none
    Column("runner", String()),  # NULL: runs in the process that started it; "jobs": queued for workers (0012)
    Column("stop_requested", Boolean()),  # Stop asked, from any process; workers read it (0012)
    UniqueConstraint("experiment_id", "number", name="uq_experiment_runs_number"),
)

cells_table = Table(
    "experiment_cells",
    metadata,
    Column("run_id", String(), primary_key=True),
    Column("row_index", Integer(), primary_key=True),
    Column("variant_index", Integer(), primary_key=True),
    Column("status", String(), nullable=False),
    Column("request_id", String()),
    Column("answer", SafeText()),
    Column("error_type", String()),
    Column("error_message", SafeText()),
    Column("latency_ms", Double()),
    Column("ttft_ms", Double()),
    Column("input_tokens", Integer(), nullable=False),
    Column("output_tokens", Integer(), nullable=False),
    Column("cost_usd", Double()),
    Column("passed", Boolean()),
    Column("rating", Integer()),
    Column("finished_ts", Double(), nullable=False),
    Column("tool_calls", SafeText()),  # JSON list of ToolCall the model made; NULL: none
    Column("checks", SafeText()),  # JSON list of CheckResult, one per run check; NULL: a run from before
    Index("ix_experiment_cells_request_id", "request_id"),
)

# Pairwise judgements (0009): per row, which of two variants' answers a judge found better,
# asked twice with the order swapped. Judge votes, kept apart from people's votes.
judge_votes_table = Table(
    "experiment_judge_votes",
    metadata,
    Column("id", String(), primary_key=True),
    Column("run_id", String(), nullable=False),
    Column("row_index", Integer(), nullable=False),
    Column("variant_a", Integer(), nullable=False),
    Column("variant_b", Integer(), nullable=False),
    Column("judge", SafeText(), nullable=False),  # JSON JudgeTarget
    Column("criteria", SafeText()),
    Column("outcome", String(), nullable=False),  # a / b / tie / failed / cancelled
    Column("first", String()),  # the verdict with A shown first: "1", "2", "tie"
    Column("second", String()),  # with B shown first
    Column("reason", SafeText()),
    Column("error", SafeText()),
    Column("latency_ms", Double()),
    Column("cost_usd", Double()),
    Column("calls", Integer(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Index("ix_experiment_judge_votes_run_id", "run_id"),
)


# --- models ----------------------------------------------------------------------------------


def _variant(data: dict[str, Any]) -> Variant:
    """A stored variant. Its provider may be an endpoint this process has not registered (added
    in another browser session): it is still shown, not refused."""
    try:
        return Variant.model_validate(data)
    except ValidationError:
        fields = dict(data)
        if fields.get("stop") is not None:
            fields["stop"] = tuple(fields["stop"])
        if fields.get("policy") is not None:
            fields["policy"] = RoutingPolicy(fields["policy"])
        return Variant.model_construct(**fields)


class Experiment(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    created_at: datetime
    name: str
    template: str
    variants: tuple[Variant, ...]
    columns: tuple[str, ...]
    row_count: int
    has_expected: bool

    @property
    def labels(self) -> list[str]:
        """One label per variant, saying what differs between variants of one target."""
        return variant_labels(self.variants)

    @property
    def image_columns(self) -> tuple[str, ...]:
        """The columns whose cells are pictures, sent after each row's text (datasets.py)."""
        return tuple(c for c in self.columns if is_image_column(c))


class Run(BaseModel):
    model_config = ConfigDict(frozen=True)

    id: str
    experiment_id: str
    number: int
    created_at: datetime
    checks: tuple[Check, ...]
    concurrency: dict[str, int]
    status: RunStatus
    finished_at: datetime | None
    cells_total: int
    dataset_name: str | None = None
    dataset_version: int | None = None

    @property
    def dataset_label(self) -> str | None:
        """The run's dataset as the page says it: "dataset invoices v3" (None: pasted or uploaded)."""
        if self.dataset_name is None:
            return None
        return f"dataset {self.dataset_name} v{self.dataset_version}"

    prompt_version_id: str | None = Field(default=None, description="The prompt version it ran (prompts.py).")
    runner: Literal["in_process", "jobs"] = Field(
        default="in_process", description="Where its cells run: the process that started it, or the workers."
    )
    stop_requested: bool = False

    @property
    def queued(self) -> bool:
        """Its cells are jobs for `python -m conductor_core.worker` (conductor_core/jobs)."""
        return self.runner == "jobs"

    @property
    def check(self) -> CheckKind | None:
        """The first check's kind (a run of the previous release had exactly one)."""
        return self.checks[0].kind if self.checks else None

    @property
    def checks_label(self) -> str:
        return ", ".join(check.label for check in self.checks) or "no check"


class Cell(BaseModel):
    """One answer of a run: one row, one variant."""

    row: int = Field(description="0-based row index in the dataset.")
    variant: int = Field(description="0-based index into the experiment's variants.")
    status: CellStatus
    request_id: str | None = Field(default=None, description="The request log's request_id for this answer.")
    answer: str | None = None
    error_type: str | None = None
    error_message: str | None = None
    latency_ms: float | None = None
    ttft_ms: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float | None = None
    passed: bool | None = Field(default=None, description="Every check that applies passed (None: none applies).")
    rating: int | None = Field(default=None, description="+1 (👍), -1 (👎) or None (not rated).")
    tool_calls: list[ToolCall] | None = Field(default=None, description="The tools the model called.")
    checks: list[CheckResult] | None = Field(default=None, description="One result per run check, in order.")


class JudgeVote(BaseModel):
    """One row's pairwise judgement of variants `a` and `b` (judging.py `judge_pair`)."""

    row: int
    a: int
    b: int
    judge: JudgeTarget
    criteria: str | None = None
    outcome: Literal["a", "b", "tie", "failed", "cancelled"]
    first: str | None = None
    second: str | None = None
    reason: str | None = None
    error: str | None = None
    latency_ms: float | None = None
    cost_usd: float | None = None
    calls: int = 0


class PairwiseStats(BaseModel):
    """A pair of variants judged by one judge over a run's rows: who won how often."""

    a: int
    b: int
    judge: JudgeTarget
    wins_a: int = 0
    wins_b: int = 0
    ties: int = Field(default=0, description="Rows where the judge said tie, or flipped with the order.")
    failed: int = 0
    cancelled: int = 0
    cost_usd: float = 0.0
    unpriced: int = Field(default=0, description="Rows whose judge calls' cost is unknown.")

    @property
    def judged(self) -> int:
        return self.wins_a + self.wins_b + self.ties

    def win_rate(self, variant: int) -> float | None:
        """Rows the variant won ÷ rows judged (ties count for neither)."""
        if not self.judged:
            return None
        return (self.wins_a if variant == self.a else self.wins_b) / self.judged


class GridRow(BaseModel):
    """One row of the results grid: the row's values and one cell per variant (None: not run yet)."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    row: int
    values: dict[str, Any]
    expected: str | None
    cells: list[Cell | None]
    images: list[Attachment] = Field(default_factory=list, description="The row's pictures, in column order.")


class CheckStats(BaseModel):
    """One check's pass rate for one variant."""

    label: str
    checked: int = Field(default=0, description="Cells that ran whose row the check applies to.")
    passed: int = 0
    pass_rate: float | None = None
    # A rubric check's judgements (None / 0 for other checks).
    judged: int = Field(default=0, description="rubric: cells the judge gave a verdict on.")
    mean_score: float | None = Field(default=None, description="rubric: mean of the judge's scores.")
    judge_calls: int = Field(default=0, description="rubric: calls made to the judge (failed ones too).")
    judge_failed: int = Field(default=0, description="rubric: judge calls that gave no verdict.")
    judge_cancelled: int = Field(default=0, description="rubric: judgements cancelled by Stop.")
    judge_cost_usd: float = Field(default=0.0, description="rubric: judge calls' cost, where known.")
    judge_unpriced: int = Field(default=0, description="rubric: judge calls whose cost is unknown.")
    agreement: list[list[int]] = Field(
        default_factory=lambda: [[0, 0], [0, 0]],
        description="rubric: [[judge pass & 👍, judge pass & 👎], [judge fail & 👍, judge fail & 👎]].",
    )


class VariantStats(BaseModel):
    variant: int
    label: str
    cells: int = 0
    ok: int = 0
    errors: int = 0
    incomplete: int = 0
    cancelled: int = 0
    success_rate: float | None = Field(default=None, description="ok / cells that ran (cancelled ones excluded).")
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    p50_ttft_ms: float | None = None
    cost_usd: float = Field(default=0.0, description="Sum over answers whose cost is known.")
    priced: int = Field(default=0, description="Answers with a known cost.")
    unpriced: int = Field(default=0, description="Answers whose cost is unknown (not in cost_usd).")
    checked: int = Field(default=0, description="Cells that ran on a row some check applies to.")
    passed: int = 0
    pass_rate: float | None = None
    thumbs_up: int = 0
    thumbs_down: int = 0
    avg_rating: float | None = Field(default=None, description="Mean of +1/-1 over rated cells.")
    checks: list[CheckStats] = Field(default_factory=list, description="Per run check, in order.")
    wins: float = Field(default=0.0, description="Rows won (shared wins count as fractions).")
    decided_rows: int = Field(default=0, description="Rows where the variants' scores differed.")
    win_rate: float | None = None


# --- the store -------------------------------------------------------------------------------


def _percentile_positions(n: int, q: float) -> tuple[int, float]:
    position = (n - 1) * q
    low = int(position)
    return low, position - low


class ExperimentStore:
    """Experiments, their datasets, runs and cells, in the request log's database.
    Thread-safe (one engine, short transactions); share one per process."""

    def __init__(self, log: RequestLog) -> None:
        self.log = log
        self.engine = log.engine
        self.leases = leases_for(log.engine)
        self._run_leases: dict[str, Lease] = {}  # the runs this store started and has not finished
        self._run_leases_lock = threading.Lock()
        #: With CONDUCTOR_LOG_PROMPTS=false answers are not kept (figures, checks and ratings are).
        self.keeps_text = log.log_prompts
        log.require_tables(metadata)
        log.require_tables(attachments_metadata)

    # --- experiments ---------------------------------------------------------------------

    def create(
        self,
        name: str,
        template: str,
        dataset: Dataset,
        variants: Sequence[Variant],
        *,
        max_rows: int = DEFAULT_MAX_ROWS,
    ) -> Experiment:
        """Check everything a run needs before storing it: 2-4 variants that name a provider,
        a template whose variables the dataset has in every row, a dataset within the limit."""
        if not 2 <= len(variants) <= 4:
            raise ExperimentError(f"an experiment compares 2 to 4 variants, got {len(variants)}")
        if any(v.provider == "auto" for v in variants):
            raise ExperimentError("each variant names a provider: 'auto' would answer each row from another one")
        if len(dataset) > max_rows:
            raise DatasetTooLargeError(len(dataset), max_rows)
        parsed = Template(template)  # raises TemplateError with line and column
        if not parsed.variables:
            raise TemplateError("the template uses no {{variable}}: every row would send the same prompt")
        missing = parsed.missing(dataset.columns)
        if missing:
            names = ", ".join(f"{{{{{m}}}}}" for m in missing)
            raise TemplateError(f"the dataset has no column for {names} (columns: {', '.join(dataset.columns)})")
        for index, row in enumerate(dataset.rows):
            # A row without a value names itself now, not in the middle of a run.
            if not parsed.render(row, row=index + 1).strip():
                raise TemplateError(f"row {index + 1}: the prompt is empty (its values are blank)")
        experiment = Experiment(
            id=new_id("exp"),
            created_at=utcnow(),
            name=name.strip() or "Untitled experiment",
            template=template,
            variants=tuple(variants),
            columns=dataset.columns,
            row_count=len(dataset),
            has_expected=dataset.has_expected,
        )
        rows = [
            {
                "experiment_id": experiment.id,
                "row_index": index,
                "line": dataset.lines[index] if index < len(dataset.lines) else None,
                "row_values": json.dumps(dict(row), ensure_ascii=False),
                "expected": dataset.expected(index),
            }
            for index, row in enumerate(dataset.rows)
        ]
        with self.engine.begin() as conn:
            conn.execute(
                insert(experiments_table),
                {
                    "id": experiment.id,
                    "created_at": experiment.created_at,
                    "created_ts": experiment.created_at.timestamp(),
                    "name": experiment.name,
                    "template": template,
                    "variants": json.dumps([v.model_dump(mode="json") for v in variants]),
                    "columns": json.dumps(list(dataset.columns), ensure_ascii=False),
                    "row_count": len(dataset),
                    "has_expected": dataset.has_expected,
                },
            )
            conn.execute(insert(rows_table), rows)
            pictures = [
                (index, position, picture)
                for index, row in enumerate(dataset.images)
                for position, picture in enumerate(row)
            ]
            for _index, _position, picture in pictures:
                keep_bytes(conn, picture, experiment.created_at)  # once per content, not per row
            if pictures:
                conn.execute(
                    insert(row_attachments_table),
                    [
                        {
                            "experiment_id": experiment.id,
                            "row_index": index,
                            "position": position,
                            "sha256": picture.ref.sha256,
                            "name": picture.ref.name,
                        }
                        for index, position, picture in pictures
                    ],
                )
        return experiment

    def experiment(self, experiment_id: str) -> Experiment:
        with self.engine.connect() as conn:
            row = (
                conn.execute(select(experiments_table).where(experiments_table.c.id == experiment_id))
                .mappings()
                .first()
            )
        if row is None:
            raise ExperimentError(f"no experiment {experiment_id!r}")
        return self._experiment(row)

    def experiments(self, *, limit: int = 50) -> list[Experiment]:
        """The newest first."""
        stmt = select(experiments_table).order_by(experiments_table.c.created_ts.desc()).limit(limit)
        with self.engine.connect() as conn:
            return [self._experiment(row) for row in conn.execute(stmt).mappings()]

    @staticmethod
    def _experiment(row: Any) -> Experiment:
        return Experiment(
            id=row["id"],
            created_at=row["created_at"],
            name=row["name"],
            template=row["template"],
            variants=tuple(_variant(v) for v in json.loads(row["variants"])),
            columns=tuple(json.loads(row["columns"])),
            row_count=row["row_count"],
            has_expected=bool(row["has_expected"]),
        )

    def rows(
        self, experiment_id: str, *, offset: int = 0, limit: int = 200
    ) -> list[tuple[int, dict[str, Any], str | None]]:
        """(row index, values, expected) for one page of the dataset, in order."""
        r = rows_table.c
        stmt = (
            select(r.row_index, r.row_values, r.expected)
            .where(r.experiment_id == experiment_id, r.row_index >= offset)
            .order_by(r.row_index)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [(i, json.loads(values), expected) for i, values, expected in conn.execute(stmt)]

    def iter_rows(self, experiment_id: str, *, page: int = 200) -> Iterator[tuple[int, dict[str, Any], str | None]]:
        """Every row, read a page at a time (memory stays flat in the number of rows)."""
        offset = 0
        while True:
            chunk = self.rows(experiment_id, offset=offset, limit=page)
            yield from chunk
            if len(chunk) < page:
                return
            offset = chunk[-1][0] + 1

    def images(self, experiment_id: str, first: int, last: int | None = None) -> dict[int, list[Attachment]]:
        """The pictures of rows `first`..`last` (inclusive; default: just `first`), by row, in order."""
        ra, at = row_attachments_table.c, attachments_metadata.tables["attachments"].c
        stmt = (
            select(ra.row_index, ra.sha256, ra.name, at.media_type, at.size, at.data)
            .join(attachments_metadata.tables["attachments"], at.sha256 == ra.sha256)
            .where(
                ra.experiment_id == experiment_id,
                ra.row_index >= first,
                ra.row_index <= (first if last is None else last),
            )
            .order_by(ra.row_index, ra.position)
        )
        found: dict[int, list[Attachment]] = {}
        with self.engine.connect() as conn:
            for r in conn.execute(stmt):
                ref = AttachmentRef(r.sha256, r.name, r.media_type, r.size)
                found.setdefault(r.row_index, []).append(Attachment(ref, bytes(r.data)))
        return found

    def has_images(self, experiment_id: str) -> bool:
        """Whether any row has a picture (an experiment from before image columns has none)."""
        ra = row_attachments_table.c
        with self.engine.connect() as conn:
            return (
                conn.execute(select(ra.row_index).where(ra.experiment_id == experiment_id).limit(1)).first() is not None
            )

    def prompt(self, experiment: Experiment, values: dict[str, Any], row: int) -> str:
        return Template(experiment.template).render(values, row=row + 1)

    # --- runs ----------------------------------------------------------------------------

    def new_run(
        self,
        experiment: Experiment,
        checks: CheckKind | str | Check | Sequence[CheckKind | str | Check],
        concurrency: dict[str, int],
        dataset: tuple[str, int] | None = None,
        *,
        prompt_version_id: str | None = None,
        enqueue: Callable[[Connection, Run], object] | None = None,
    ) -> Run:
        """Number the run (1, 2, ... per experiment; several processes may race for a number).
        With `enqueue` the run is queued for the workers (conductor_core/jobs): `enqueue(conn,
        run)` adds its cells' jobs in the transaction that creates the run, and no process holds
        its lease (the workers' heartbeats say it is alive).
        Every check is checked first: one that cannot run says so before any call. `dataset`
        is the saved dataset (name, version) the experiment's rows came from; when not given,
        the run inherits the one an earlier run of this experiment recorded (same rows)."""
        checks = as_checks(checks)
        for check in checks:
            if problem := check.problem(experiment):
                raise CheckError(problem)
        if any(check.kind == CheckKind.regex for check in checks) and experiment.has_expected:
            for index, _values, expected in self.iter_rows(experiment.id):
                if expected is None:
                    continue
                try:
                    re.compile(expected)
                except re.error as exc:
                    raise CheckError(f"row {index + 1}: expected is not a valid regular expression ({exc})") from None
        now = utcnow()
        run_id = new_id("run")
        if enqueue is not None:
            return self._insert_run(run_id, experiment, checks, concurrency, now, dataset, prompt_version_id, enqueue)
        # Held before the row exists, so no reader ever sees this run running and unheld.
        lease = self.leases.hold(_run_lease(run_id))
        try:
            run = self._insert_run(run_id, experiment, checks, concurrency, now, dataset, prompt_version_id)
        except BaseException:
            lease.release()
            raise
        with self._run_leases_lock:
            self._run_leases[run_id] = lease
        return run

    def _insert_run(
        self,
        run_id: str,
        experiment: Experiment,
        checks: tuple[Check, ...],
        concurrency: dict[str, int],
        now: datetime,
        dataset: tuple[str, int] | None,
        prompt_version_id: str | None = None,
        enqueue: Callable[[Connection, Run], object] | None = None,
    ) -> Run:
        for attempt in range(5):
            try:
                with self.engine.begin() as conn:
                    latest = conn.execute(
                        select(func.max(runs_table.c.number)).where(runs_table.c.experiment_id == experiment.id)
                    ).scalar()
                    if dataset is None:
                        dataset = _earlier_dataset(conn, experiment.id)
                    run = Run(
                        id=run_id,
                        experiment_id=experiment.id,
                        number=(latest or 0) + 1,
                        created_at=now,
                        checks=checks,
                        concurrency=concurrency,
                        status="running",
                        finished_at=None,
                        cells_total=experiment.row_count * len(experiment.variants),
                        dataset_name=dataset[0] if dataset else None,
                        dataset_version=dataset[1] if dataset else None,
                        prompt_version_id=prompt_version_id,
                        runner="jobs" if enqueue is not None else "in_process",
                    )
                    conn.execute(
                        insert(runs_table),
                        {
                            "id": run.id,
                            "experiment_id": run.experiment_id,
                            "number": run.number,
                            "created_at": now,
                            "created_ts": now.timestamp(),
                            # The first check's kind, as the previous release kept it ("" for none).
                            "check_kind": checks[0].kind.value if checks else "",
                            "checks": json.dumps([c.model_dump(mode="json") for c in checks], ensure_ascii=False),
                            "concurrency": json.dumps(concurrency),
                            "status": "running",
                            "heartbeat_ts": time.time(),
                            "cells_total": run.cells_total,
                            "dataset_name": run.dataset_name,
                            "dataset_version": run.dataset_version,
                            "prompt_version_id": prompt_version_id,
                            "runner": "jobs" if enqueue is not None else None,
                        },
                    )
                    if enqueue is not None:
                        enqueue(conn, run)
                return run
            except IntegrityError:
                if attempt == 4:
                    raise
                # Another process took this number at the same moment: take the next one.
        raise AssertionError("unreachable")  # pragma: no cover

    def run(self, run_id: str) -> Run:
        with self.engine.connect() as conn:
            row = conn.execute(select(runs_table).where(runs_table.c.id == run_id)).mappings().first()
        if row is None:
            raise ExperimentError(f"no run {run_id!r}")
        return self._run(row)

    def runs(self, experiment_id: str) -> list[Run]:
        """Every run of an experiment, the newest first."""
        stmt = (
            select(runs_table).where(runs_table.c.experiment_id == experiment_id).order_by(runs_table.c.number.desc())
        )
        with self.engine.connect() as conn:
            return [self._run(row) for row in conn.execute(stmt).mappings()]

    def run_is_live(self, run_id: str) -> bool:
        """Whether a live process (this one included) holds the run's lease."""
        return self.leases.held(_run_lease(run_id))

    def _run(self, row: Any) -> Run:
        status = row["status"]
        queued = row.get("runner") == "jobs"
        # A queued run lives in the queue, not in a process: it is running until its last cell
        # is stored, whichever workers come and go (the page says when none is there).
        if (
            status == "running"
            and not queued
            and (time.time() - row["heartbeat_ts"] > STALE_AFTER_S or not self.run_is_live(row["id"]))
        ):
            status = "interrupted"
        return Run(
            id=row["id"],
            experiment_id=row["experiment_id"],
            number=row["number"],
            created_at=row["created_at"],
            checks=_run_checks(row),
            concurrency=json.loads(row["concurrency"]),
            status=status,
            finished_at=row["finished_at"],
            cells_total=row["cells_total"],
            dataset_name=row["dataset_name"],
            dataset_version=row["dataset_version"],
            prompt_version_id=row.get("prompt_version_id"),
            runner="jobs" if queued else "in_process",
            stop_requested=bool(row.get("stop_requested")),
        )

    def request_stop(self, run_id: str) -> bool:
        """Ask a running run to stop, from any process: the workers (and the process running it)
        read the flag before each cell and while a call streams. False if it was not running."""
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(runs_table)
                .where(runs_table.c.id == run_id, runs_table.c.status == "running")
                .values(stop_requested=True)
            ).rowcount
        return bool(changed)

    def stop_requested(self, run_id: str) -> bool:
        return self.run_state(run_id)[0]

    def run_state(self, run_id: str) -> tuple[bool, bool]:
        """(Stop asked, finished) of a run, in one small read (a worker asks it while it streams)."""
        r = runs_table.c
        with self.engine.connect() as conn:
            found = conn.execute(select(r.stop_requested, r.status).where(r.id == run_id)).first()
        if found is None:
            raise ExperimentError(f"no run {run_id!r}")
        return bool(found.stop_requested), found.status != "running"

    def finish_if_complete(self, run_id: str) -> RunStatus | None:
        """Mark a queued run completed (or stopped, if Stop was asked) once every cell is stored;
        any worker may call it after storing a cell, several at once: the first one wins. The
        status it set, or None while cells are missing (or it was finished already)."""
        with self.engine.begin() as conn:
            conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(heartbeat_ts=time.time()))
            return _finish_if_complete(conn, run_id)

    def has_cell(self, run_id: str, row: int, variant: int) -> bool:
        c = cells_table.c
        stmt = select(c.status).where(c.run_id == run_id, c.row_index == row, c.variant_index == variant)
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def cell_counts(self, run_id: str) -> dict[tuple[int, str], int]:
        """Stored cells per (variant, status): a run's progress read from the database, by
        any process (a queued run's cells are stored by the workers)."""
        c = cells_table.c
        stmt = (
            select(c.variant_index, c.status, func.count())
            .where(c.run_id == run_id)
            .group_by(c.variant_index, c.status)
        )
        with self.engine.connect() as conn:
            return {(variant, status): int(n) for variant, status, n in conn.execute(stmt)}

    def heartbeat(self, run_id: str) -> None:
        self._renew(run_id)
        with self.engine.begin() as conn:
            conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(heartbeat_ts=time.time()))

    def _renew(self, run_id: str) -> None:
        with self._run_leases_lock:
            lease = self._run_leases.get(run_id)
        if lease is not None:
            lease.renew()

    def finish_run(self, run_id: str, status: Literal["completed", "stopped"]) -> None:
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    update(runs_table)
                    .where(runs_table.c.id == run_id)
                    .values(status=status, finished_at=utcnow(), heartbeat_ts=time.time())
                )
        finally:
            with self._run_leases_lock:
                lease = self._run_leases.pop(run_id, None)
            if lease is not None:
                lease.release()

    def write_cells(
        self,
        run_id: str,
        cells: Sequence[Cell],
        *,
        once: bool = False,
        finish: bool = False,
        on_stored: Callable[[Connection], object] | None = None,
    ) -> RunStatus | None:
        """Insert finished cells in one transaction (and beat the run's heart). With `once` (a
        queued run's worker), a cell stored already is left as it is (a worker retrying a job
        another worker finished: a cell is stored once, by the first), and the run's heart is not
        beaten (a queued run lives while its workers do): the transaction then takes no lock on
        the run's row, so the cells of one run are stored side by side, not one at a time. With
        `finish`, the run is marked finished if these were its last cells (its status then), in
        a transaction of its own after this one commits: of two cells stored at once, the one
        that commits last sees both, so the last cell always finishes the run.
        `on_stored(conn)` runs in the transaction when every cell was stored by this call (none
        was there already): a worker queues the next cells of its lane there, exactly once."""
        if not cells:
            return None
        now = time.time()
        rows = []
        for cell in cells:
            row = cell.model_dump()
            row["row_index"] = row.pop("row")
            row["variant_index"] = row.pop("variant")
            row["run_id"] = run_id
            row["finished_ts"] = now
            row["answer"] = redact(cell.answer) if cell.answer is not None and self.keeps_text else None
            row["error_message"] = redact(cell.error_message) if cell.error_message is not None else None
            # Tool calls are what the model wrote, as its answer is: kept only when answers are.
            row["tool_calls"] = (
                json.dumps([c.model_dump(mode="json") for c in cell.tool_calls], ensure_ascii=False)
                if cell.tool_calls and self.keeps_text
                else None
            )
            row["checks"] = (
                json.dumps([self._kept_verdict(r) for r in cell.checks], ensure_ascii=False)
                if cell.checks is not None
                else None
            )
            rows.append(row)
        self._renew(run_id)
        statement = insert(cells_table)
        if once:
            statement = _insert_once(self.engine.dialect.name)
        with self.engine.begin() as conn:
            if not once:
                conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(heartbeat_ts=now))
            if on_stored is None:
                conn.execute(statement, rows)
            elif len(conn.execute(statement.returning(cells_table.c.row_index), rows).all()) == len(rows):
                on_stored(conn)  # every cell is stored by this call (a rowcount says -1 here)
        if not finish:
            return None
        with self.engine.begin() as conn:
            return _finish_if_complete(conn, run_id)

    def _kept_verdict(self, result: CheckResult) -> dict[str, Any]:
        """A verdict as stored: redacted (a judge may quote an answer that holds a key); a judge's
        reason is model-written text, so it is kept only when answers are."""
        if result.judge is not None and result.judge.reason is not None and not self.keeps_text:
            result = result.model_copy(
                update={"detail": None, "judge": result.judge.model_copy(update={"reason": None})}
            )
        return redact_json(result.model_dump(mode="json"))

    def rate(self, run_id: str, row: int, variant: int, rating: int | None) -> None:
        """👍 (+1), 👎 (-1) or clear (None) one cell's rating."""
        if rating not in (1, -1, None):
            raise ExperimentError("a rating is +1 (👍), -1 (👎) or None (clear it)")
        c = cells_table.c
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(cells_table)
                .where(c.run_id == run_id, c.row_index == row, c.variant_index == variant, c.status != "cancelled")
                .values(rating=rating)
            ).rowcount
        if not changed:
            raise ExperimentError(f"row {row + 1}, variant {variant + 1} of this run has no answer to rate")

    # --- reading results -----------------------------------------------------------------

    def cells(self, run_id: str, *, offset: int = 0, limit: int | None = None) -> list[Cell]:
        """Cells ordered by row then variant (exports read them in pages with `limit`)."""
        c = cells_table.c
        stmt = select(cells_table).where(c.run_id == run_id).order_by(c.row_index, c.variant_index).offset(offset)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            return [self._cell(row) for row in conn.execute(stmt).mappings()]

    @staticmethod
    def _cell(row: Any) -> Cell:
        plain = {
            name: row[name] for name in Cell.model_fields if name not in ("row", "variant", "tool_calls", "checks")
        }
        return Cell(
            row=row["row_index"],
            variant=row["variant_index"],
            tool_calls=json.loads(row["tool_calls"]) if row["tool_calls"] else None,
            checks=json.loads(row["checks"]) if row["checks"] is not None else None,
            **plain,
        )

    def sent_for(self, request_id: str) -> tuple[Experiment, Run, int, str, list[Attachment]] | None:
        """Which cell sent a logged request (replay): its experiment, run, variant index, the
        prompt its row rendered and the row's pictures (sent after it); None when no cell did."""
        c = cells_table.c
        with self.engine.connect() as conn:
            cell = conn.execute(
                select(c.run_id, c.row_index, c.variant_index).where(c.request_id == request_id)
            ).first()
            if cell is None:
                return None
            run = self.run(cell.run_id)
            values = conn.execute(
                select(rows_table.c.row_values).where(
                    rows_table.c.experiment_id == run.experiment_id, rows_table.c.row_index == cell.row_index
                )
            ).scalar()
        experiment = self.experiment(run.experiment_id)
        prompt = self.prompt(experiment, json.loads(values) if values else {}, cell.row_index)
        pictures = (
            self.images(experiment.id, cell.row_index).get(cell.row_index, []) if experiment.image_columns else []
        )
        return experiment, run, cell.variant_index, prompt, pictures

    def grid(self, run_id: str, *, offset: int = 0, limit: int = 25, images: bool = True) -> list[GridRow]:
        """One page of the results grid: `limit` rows from `offset`, one cell per variant (and the
        rows' pictures unless `images` is False: the dense table reads a whole run without them)."""
        run = self.run(run_id)
        experiment = self.experiment(run.experiment_id)
        rows = self.rows(experiment.id, offset=offset, limit=limit)
        if not rows:
            return []
        c = cells_table.c
        stmt = select(cells_table).where(c.run_id == run_id, c.row_index >= rows[0][0], c.row_index <= rows[-1][0])
        with self.engine.connect() as conn:
            found = {(r["row_index"], r["variant_index"]): self._cell(r) for r in conn.execute(stmt).mappings()}
        width = len(experiment.variants)
        want_pictures = images and experiment.image_columns
        pictures = self.images(experiment.id, rows[0][0], rows[-1][0]) if want_pictures else {}
        return [
            GridRow(
                row=index,
                values=values,
                expected=expected,
                cells=[found.get((index, v)) for v in range(width)],
                images=pictures.get(index, []),
            )
            for index, values, expected in rows
        ]

    def stats(self, run_id: str) -> list[VariantStats]:
        """Per variant, in the experiment's order. A few aggregate queries; no cell is loaded."""
        run = self.run(run_id)
        experiment = self.experiment(run.experiment_id)
        labels = experiment.labels
        stats = [VariantStats(variant=i, label=label) for i, label in enumerate(labels)]
        c = cells_table.c
        ran = c.status != "cancelled"
        answered = c.status.in_(("ok", "incomplete"))

        def n(condition: Any) -> Any:
            return func.sum(case((condition, 1), else_=0))

        counts = (
            select(
                c.variant_index,
                func.count(),
                n(c.status == "ok"),
                n(c.status == "error"),
                n(c.status == "incomplete"),
                n(c.status == "cancelled"),
                func.sum(case((answered & c.cost_usd.is_not(None), c.cost_usd), else_=0.0)),
                n(answered & c.cost_usd.is_not(None)),
                n(answered & c.cost_usd.is_(None)),
                n(ran & c.passed.is_not(None)),
                n(ran & (c.passed == True)),  # noqa: E712 - SQL, not Python truthiness
                n(c.rating == 1),
                n(c.rating == -1),
            )
            .where(c.run_id == run_id)
            .group_by(c.variant_index)
        )
        with self.engine.connect() as conn:
            for row in conn.execute(counts):
                s = stats[row[0]]
                (s.cells, s.ok, s.errors, s.incomplete, s.cancelled) = (int(x or 0) for x in row[1:6])
                s.cost_usd = float(row[6] or 0.0)
                (s.priced, s.unpriced, s.checked, s.passed, s.thumbs_up, s.thumbs_down) = (
                    int(x or 0) for x in row[7:13]
                )
                s.success_rate = s.ok / (s.cells - s.cancelled) if s.cells - s.cancelled else None
                s.pass_rate = s.passed / s.checked if s.checked else None
                rated = s.thumbs_up + s.thumbs_down
                s.avg_rating = (s.thumbs_up - s.thumbs_down) / rated if rated else None
            ok = (c.run_id == run_id) & (c.status == "ok")
            for field, column, q in (
                ("p50_latency_ms", c.latency_ms, 0.5),
                ("p95_latency_ms", c.latency_ms, 0.95),
                ("p50_ttft_ms", c.ttft_ms, 0.5),
            ):
                for variant, value in self._percentiles(conn, column, ok & column.is_not(None), q).items():
                    setattr(stats[variant], field, value)
            self._win_rates(conn, run_id, stats)
            self._check_rates(conn, run, stats)
        return stats

    @staticmethod
    def _check_rates(conn: Any, run: Run, stats: list[VariantStats]) -> None:
        """Each check's pass rate per variant, read a batch of cells' verdicts at a time (a
        run's cells are never all in memory). A cell of a run from before several checks has
        its one verdict in `passed`. A rubric check adds its judge's scores, failures, cost,
        and a 2x2 table of the judge's verdict against the cell's 👍/👎 (agreement)."""
        per = [[CheckStats(label=check.label) for check in run.checks] for _ in stats]
        scores = [[0.0 for _ in run.checks] for _ in stats]
        c = cells_table.c
        result = conn.execution_options(yield_per=500).execute(
            select(c.variant_index, c.checks, c.passed, c.rating).where(c.run_id == run.id, c.status != "cancelled")
        )
        for variant, checks, passed, rating in result:
            results = json.loads(checks) if checks is not None else [{"passed": passed}]
            for index, found in enumerate(results[: len(run.checks)]):
                s = per[variant][index]
                verdict = found.get("passed")
                if verdict is not None:
                    s.checked += 1
                    s.passed += bool(verdict)
                judge = found.get("judge")
                if not judge:
                    continue
                status = judge.get("status")
                s.judge_failed += status == "failed"
                s.judge_cancelled += status == "cancelled"
                if status in ("ok", "failed") and judge.get("request_id"):
                    s.judge_calls += 1
                    if judge.get("cost_usd") is None:
                        s.judge_unpriced += 1
                    else:
                        s.judge_cost_usd += float(judge["cost_usd"])
                if status == "ok" and found.get("score") is not None:
                    s.judged += 1
                    scores[variant][index] += float(found["score"])
                if verdict is not None and rating in (1, -1):
                    s.agreement[0 if verdict else 1][0 if rating == 1 else 1] += 1
        for s, per_check, sums in zip(stats, per, scores, strict=True):
            for check_stats, total in zip(per_check, sums, strict=True):
                n = check_stats.checked
                check_stats.pass_rate = check_stats.passed / n if n else None
                check_stats.mean_score = total / check_stats.judged if check_stats.judged else None
            s.checks = per_check

    @staticmethod
    def _percentiles(conn: Any, column: Any, where: Any, q: float) -> dict[int, float]:
        """The q-quantile of `column` per variant, interpolated like numpy's default, reading
        only the two values either side of it (window functions; SQLite and PostgreSQL)."""
        c = cells_table.c
        ranked = (
            select(
                c.variant_index.label("variant"),
                column.label("value"),
                func.row_number().over(partition_by=c.variant_index, order_by=column).label("rank"),
                func.count().over(partition_by=c.variant_index).label("n"),
            )
            .where(where)
            .subquery()
        )
        # 0-based position of the lower neighbour: (n - 1) * q, in integer arithmetic (floor on
        # both databases), as hundredths so q = 0.95 is exact.
        low = (ranked.c.n - 1) * int(round(q * 100)) // 100
        stmt = select(ranked.c.variant, ranked.c.value, ranked.c.rank, ranked.c.n).where(
            (ranked.c.rank - 1 == low) | (ranked.c.rank - 2 == low)
        )
        found: dict[int, dict[int, float]] = {}
        sizes: dict[int, int] = {}
        for variant, value, rank, size in conn.execute(stmt):
            found.setdefault(variant, {})[int(rank) - 1] = float(value)
            sizes[variant] = int(size)
        out: dict[int, float] = {}
        for variant, values in found.items():
            lo, frac = _percentile_positions(sizes[variant], q)
            below = values[lo]
            above = values.get(lo + 1, below)
            out[variant] = below + (above - below) * frac
        return out

    @staticmethod
    def _win_rates(conn: Any, run_id: str, stats: list[VariantStats]) -> None:
        c = cells_table.c
        score = (
            4 * func.coalesce(c.rating, 0)
            + case((c.passed == True, 2), else_=0)  # noqa: E712
            + case((c.status == "ok", 1), else_=0)
        )
        scored = (
            select(c.row_index.label("row"), c.variant_index.label("variant"), score.label("score"))
            .where(c.run_id == run_id, c.status != "cancelled")
            .subquery()
        )
        ranged = select(
            scored.c.row,
            scored.c.variant,
            scored.c.score,
            func.max(scored.c.score).over(partition_by=scored.c.row).label("top"),
            func.min(scored.c.score).over(partition_by=scored.c.row).label("bottom"),
        ).subquery()
        tops = select(
            ranged,
            func.sum(case((ranged.c.score == ranged.c.top, 1), else_=0))
            .over(partition_by=ranged.c.row)
            .label("at_top"),
        ).subquery()
        decided = and_(tops.c.top > tops.c.bottom)
        wins = select(
            tops.c.variant,
            func.sum(case((decided & (tops.c.score == tops.c.top), literal(1.0) / tops.c.at_top), else_=0.0)),
        ).group_by(tops.c.variant)
        decided_rows = select(func.count(func.distinct(tops.c.row))).where(decided)
        total = int(conn.execute(decided_rows).scalar() or 0)
        for variant, won in conn.execute(wins):
            stats[variant].wins = round(float(won or 0.0), 6)
        for s in stats:
            s.decided_rows = total
            s.win_rate = s.wins / total if total else None

    # --- pairwise judge votes --------------------------------------------------------------

    def clear_judge_votes(self, run_id: str, a: int, b: int) -> None:
        """Forget a pair's earlier judgement of this run (a new one replaces it)."""
        v = judge_votes_table.c
        pair = ((v.variant_a == a) & (v.variant_b == b)) | ((v.variant_a == b) & (v.variant_b == a))
        with self.engine.begin() as conn:
            conn.execute(judge_votes_table.delete().where(v.run_id == run_id, pair))

    def write_judge_votes(self, run_id: str, votes: Sequence[JudgeVote]) -> None:
        if not votes:
            return
        now = time.time()
        rows = [
            {
                "id": new_id("jvote"),
                "run_id": run_id,
                "row_index": vote.row,
                "variant_a": vote.a,
                "variant_b": vote.b,
                "judge": vote.judge.model_dump_json(),
                "criteria": vote.criteria,
                "outcome": vote.outcome,
                "first": vote.first,
                "second": vote.second,
                "reason": redact(vote.reason) if vote.reason is not None else None,
                "error": redact(vote.error) if vote.error is not None else None,
                "latency_ms": vote.latency_ms,
                "cost_usd": vote.cost_usd,
                "calls": vote.calls,
                "created_ts": now,
            }
            for vote in votes
        ]
        with self.engine.begin() as conn:
            conn.execute(insert(judge_votes_table), rows)

    def judge_votes(self, run_id: str) -> list[JudgeVote]:
        v = judge_votes_table.c
        stmt = select(judge_votes_table).where(v.run_id == run_id).order_by(v.variant_a, v.variant_b, v.row_index)
        with self.engine.connect() as conn:
            return [self._judge_vote(row) for row in conn.execute(stmt).mappings()]

    @staticmethod
    def _judge_vote(row: Any) -> JudgeVote:
        return JudgeVote(
            row=row["row_index"],
            a=row["variant_a"],
            b=row["variant_b"],
            judge=JudgeTarget.model_validate_json(row["judge"]),
            **{k: row[k] for k in ("criteria", "outcome", "first", "second", "reason", "error", "latency_ms")},
            cost_usd=row["cost_usd"],
            calls=row["calls"],
        )

    def pairwise_stats(self, run_id: str) -> list[PairwiseStats]:
        """Per pair of variants and judge: wins, ties (flips included), failures and cost."""
        v = judge_votes_table.c
        stmt = (
            select(
                v.variant_a,
                v.variant_b,
                v.judge,
                v.outcome,
                func.count(),
                func.sum(func.coalesce(v.cost_usd, 0.0)),
                func.sum(case(((v.cost_usd.is_(None)) & (v.calls > 0), 1), else_=0)),
            )
            .where(v.run_id == run_id)
            .group_by(v.variant_a, v.variant_b, v.judge, v.outcome)
        )
        found: dict[tuple[int, int, str], PairwiseStats] = {}
        with self.engine.connect() as conn:
            for a, b, judge, outcome, n, cost, unpriced in conn.execute(stmt):
                s = found.setdefault(
                    (a, b, judge), PairwiseStats(a=a, b=b, judge=JudgeTarget.model_validate_json(judge))
                )
                field = {"a": "wins_a", "b": "wins_b", "tie": "ties"}.get(outcome, outcome)
                setattr(s, field, getattr(s, field) + int(n))
                s.cost_usd += float(cost or 0.0)
                s.unpriced += int(unpriced or 0)
        return [found[key] for key in sorted(found)]

    def judge_leaderboard(self, **options: Any) -> Leaderboard:
        """Bradley–Terry ratings from every judge vote of every run (a win, or a tie), the
        variants named by their labels: the judges' leaderboard, never mixed with people's votes
        (the arena's and Compare's `votes`). `options` go to `ratings.fit_ratings`."""
        from .ratings import Judgement as Comparison
        from .ratings import fit_ratings

        v, r = judge_votes_table.c, runs_table.c
        stmt = (
            select(r.experiment_id, v.variant_a, v.variant_b, v.outcome)
            .join(runs_table, r.id == v.run_id)
            .where(v.outcome.in_(("a", "b", "tie")))
        )
        labels: dict[str, list[str]] = {}
        comparisons = []
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt))
        for experiment_id, a, b, outcome in rows:
            if experiment_id not in labels:
                labels[experiment_id] = self.experiment(experiment_id).labels
            names = labels[experiment_id]
            if names[a] == names[b]:
                continue
            winner = {"a": names[a], "b": names[b]}.get(outcome)
            comparisons.append(Comparison(subjects=(names[a], names[b]), winner=winner))
        return fit_ratings(comparisons, **{**options, "voters": "judge"})

    def changes(self, run_id: str, earlier_run_id: str | None = None) -> list[str]:
        """What moved since an earlier run of the same experiment (default: the one before),
        a sentence per variant: "variant B · local: pass rate 82% → 74%, p50 +120 ms since run 3".
        Empty when there is no earlier run."""
        run = self.run(run_id)
        if earlier_run_id is None:
            earlier = next((r for r in self.runs(run.experiment_id) if r.number < run.number), None)
        else:
            earlier = self.run(earlier_run_id)
            if earlier.experiment_id != run.experiment_id:
                raise ExperimentError("runs of different experiments cannot be compared")
        if earlier is None:
            return []
        now, before = self.stats(run.id), self.stats(earlier.id)
        return [describe_change(a, b, earlier.number) for a, b in zip(now, before, strict=True)]


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def describe_change(now: VariantStats, before: VariantStats, since_run: int) -> str:
    letter = chr(ord("A") + now.variant)
    parts: list[str] = []
    if now.pass_rate is not None or before.pass_rate is not None:
        parts.append(f"pass rate {_pct(before.pass_rate)} → {_pct(now.pass_rate)}")
    if now.success_rate != before.success_rate:
        parts.append(f"success {_pct(before.success_rate)} → {_pct(now.success_rate)}")
    if now.p50_latency_ms is not None and before.p50_latency_ms is not None:
        parts.append(f"p50 {int(round(now.p50_latency_ms - before.p50_latency_ms)):+d} ms")
    if now.avg_rating is not None and before.avg_rating is not None and now.avg_rating != before.avg_rating:
        parts.append(f"rating {before.avg_rating:+.2f} → {now.avg_rating:+.2f}")
    if now.priced and before.priced and now.cost_usd != before.cost_usd:
        parts.append(f"cost ${before.cost_usd:.4f} → ${now.cost_usd:.4f}")
    said = ", ".join(parts) if parts else "no change"
    return f"variant {letter} ({now.label}): {said} since run {since_run}"


def _run_checks(row: Any) -> tuple[Check, ...]:
    """A run's checks; a run from before several checks has one, of its `check_kind`."""
    if row["checks"] is None:
        return (Check(kind=CheckKind(row["check_kind"])),)
    return tuple(Check.model_validate(c) for c in json.loads(row["checks"]))


def _earlier_dataset(conn: Any, experiment_id: str) -> tuple[str, int] | None:
    """The saved dataset version an earlier run of the experiment recorded (its rows are the same)."""
    r = runs_table.c
    found = conn.execute(
        select(r.dataset_name, r.dataset_version)
        .where(r.experiment_id == experiment_id, r.dataset_name.is_not(None))
        .order_by(r.number.desc())
        .limit(1)
    ).first()
    return (found.dataset_name, found.dataset_version) if found is not None else None


def _finish_if_complete(conn: Connection, run_id: str) -> RunStatus | None:
    """After the transaction that stored the cells committed (it sees them, and every cell
    committed before; two runs of it at once: the second finds the run finished already)."""
    r, c = runs_table.c, cells_table.c
    stored = select(func.count()).where(c.run_id == run_id).scalar_subquery()
    status = case((r.stop_requested == True, "stopped"), else_="completed")  # noqa: E712
    found = conn.execute(
        update(runs_table)
        .where(r.id == run_id, r.status == "running", r.cells_total <= stored)
        .values(status=status, finished_at=utcnow(), heartbeat_ts=time.time())
        .returning(r.status)
    ).first()
    return found[0] if found is not None else None


def _insert_once(dialect: str) -> Any:
    """An insert of cells that skips a cell already stored (the table's key: run, row, variant)."""
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(cells_table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(cells_table).on_conflict_do_nothing()


def _run_lease(run_id: str) -> str:
    return f"experiment-run:{run_id}"
