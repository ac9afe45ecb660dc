"""Exports for people who will never run the tool: a conversation, a comparison, an experiment
run or the arena's leaderboard, as Markdown, JSON, or one self-contained HTML file.

The inputs are small pydantic models of their own (`Transcript`, `Comparison`, `RunReport`,
`ArenaReport`), so a page converts its session objects into them in a few lines, and the
exports never depend on how sessions are stored. `run_report()` and `arena_report()` build
the last two from the stores.

    to_markdown(doc) / to_json(doc) / to_html(doc)      # str; every one redacted

Promises:

* No key in an export: every string of the document is redacted before it is rendered (any
  piece of a registered key, anything shaped like a key), and the Markdown and HTML output
  again as a whole, whatever field it came from.
* The HTML opens offline: styles inline, charts as inline SVG (Altair specs rendered by
  vl-convert, no script), and a Content-Security-Policy that allows no network request at all,
  so even an image link inside a model's answer cannot make the file fetch anything.
* Model output is Markdown rendered with raw HTML off (markdown-it-py: `<script>` shows as
  text) and images off; what a person typed (prompts, templates) is shown literally.
* A message's attachments are named in JSON and Markdown (`[image: cat.png, 12 KB]`); the HTML
  embeds the images as data URLs (put in after the redaction: base64 is not text a key hides
  in, and a redaction inside it would break the picture) and names the PDFs.
"""

from __future__ import annotations

import base64
import csv
import io
import json
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..models import IMAGE_MEDIA_TYPES, ToolCall, describe_size, utcnow
from ..secrets import redact, redact_json
from ..store.export import neutralize_formula
from .arena import Arena, Reveal
from .experiments import (
    Cell,
    Check,
    CheckKind,
    CheckResult,
    CheckStats,
    ExperimentStore,
    GridRow,
    PairwiseStats,
    VariantStats,
)
from .judging import agreements
from .ratings import Leaderboard
from .variants import Variant

__all__ = [
    "Attached",
    "Figures",
    "Turn",
    "Transcript",
    "Column",
    "Comparison",
    "RunReport",
    "ArenaReport",
    "Document",
    "run_report",
    "arena_report",
    "to_markdown",
    "to_json",
    "to_html",
    "to_csv",
    "check_rates_table",
    "agreement_table",
    "pairwise_table",
    "ratings_table",
    "JudgeAgreement",
    "filename",
    "stats_table",
    "total_cost_text",
]

EXPORT_VERSION = 1


class Figures(BaseModel):
    latency_ms: float | None = None
    ttft_ms: float | None = None
    tokens_per_second: float | None = None
    input_tokens: int | None = None
    output_tokens: int | None = None
    cost_usd: float | None = None


class Attached(BaseModel):
    """An image or PDF sent with a message: named in every export, its bytes only in the HTML."""

    name: str
    media_type: str
    size: int
    sha256: str
    data: bytes | None = Field(default=None, exclude=True, description="For the HTML report's pictures only.")

    @property
    def is_image(self) -> bool:
        return self.media_type in IMAGE_MEDIA_TYPES

    def label(self) -> str:
        return f"[{'image' if self.is_image else 'file'}: {self.name}, {describe_size(self.size)}]"


class Turn(BaseModel):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    attachments: list[Attached] = Field(default_factory=list, description="A user message's images and PDFs.")
    label: str | None = Field(default=None, description="Who answered (provider/model and what differs).")
    status: str = Field(default="ok", description="ok, stopped, failed, interrupted, incomplete...")
    error: str | None = None
    figures: Figures | None = None
    request_id: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, description="Assistant: the tools it called.")
    tool_call_id: str | None = Field(default=None, description="Tool: the call this result answers.")
    name: str | None = Field(default=None, description="Tool: the tool's name.")


class Transcript(BaseModel):
    kind: Literal["conversation"] = "conversation"
    title: str
    created_at: datetime | None = None
    settings: Variant | None = None
    turns: list[Turn]


class Column(BaseModel):
    label: str
    answer: str | None = None
    status: str = "ok"
    error: str | None = None
    figures: Figures | None = None
    request_id: str | None = None
    settings: Variant | None = None
    tool_calls: list[ToolCall] | None = None
    tool_results: dict[str, str] | None = Field(default=None, description="Call id -> the result it was given.")


class Comparison(BaseModel):
    kind: Literal["comparison"] = "comparison"
    title: str
    prompt: str
    attachments: list[Attached] = Field(default_factory=list, description="The prompt's images and PDFs.")
    created_at: datetime | None = None
    columns: list[Column] = Field(min_length=1, max_length=4)
    vote: str | None = Field(default=None, description="The chosen column's label, 'tie' or 'all_bad'.")


class JudgeAgreement(BaseModel):
    """How often a rubric check's judge agreed with a person's 👍/👎, over every variant."""

    check: int = Field(description="The check's position in the run's checks (0-based).")
    label: str
    n: int = Field(description="Cells with both a verdict and a 👍/👎.")
    agreed: int
    rate: float | None
    kappa: float | None = Field(description="Cohen's kappa; None when undefined (see kappa_note).")
    kappa_note: str | None = None


class RunReport(BaseModel):
    kind: Literal["experiment_run"] = "experiment_run"
    title: str
    template: str
    run_number: int
    status: str
    check: str = Field(description="The run's checks, in words.")
    checks: list[Check] = Field(default_factory=list)
    created_at: datetime
    finished_at: datetime | None
    variants: list[Variant]
    labels: list[str]
    columns: list[str]
    stats: list[VariantStats]
    changes: list[str] = Field(default_factory=list, description="Since the previous run, in words.")
    rows: list[GridRow]
    rows_total: int
    leaderboard: Leaderboard | None = None
    agreement: list[JudgeAgreement] = Field(default_factory=list, description="Per rubric check: judge vs person.")
    pairwise: list[PairwiseStats] = Field(default_factory=list, description="Pairs of variants a judge compared.")


class ArenaReport(BaseModel):
    kind: Literal["arena"] = "arena"
    title: str = "Blind arena"
    leaderboard: Leaderboard
    votes: list[Reveal] = Field(default_factory=list)


Document = Transcript | Comparison | RunReport | ArenaReport


def run_report(
    store: ExperimentStore, run_id: str, *, max_rows: int | None = None, leaderboard: Leaderboard | None = None
) -> RunReport:
    """A run with its figures, the changes since the run before, and its rows (all, or the
    first `max_rows`), read from the store a page at a time."""
    run = store.run(run_id)
    experiment = store.experiment(run.experiment_id)
    limit = experiment.row_count if max_rows is None else min(max_rows, experiment.row_count)
    rows: list[GridRow] = []
    while len(rows) < limit:
        page = store.grid(run_id, offset=len(rows), limit=min(200, limit - len(rows)))
        if not page:
            break
        rows.extend(page)
    stats = store.stats(run_id)
    return RunReport(
        title=experiment.name,
        template=experiment.template,
        run_number=run.number,
        status=run.status,
        check=run.checks_label,
        checks=list(run.checks),
        created_at=run.created_at,
        finished_at=run.finished_at,
        variants=list(experiment.variants),
        labels=experiment.labels,
        columns=list(experiment.columns),
        stats=stats,
        agreement=judge_agreement(list(run.checks), stats),
        pairwise=store.pairwise_stats(run_id),
        changes=store.changes(run_id),
        rows=rows,
        rows_total=experiment.row_count,
        leaderboard=leaderboard,
    )


def judge_agreement(checks: list[Check], stats: list[VariantStats]) -> list[JudgeAgreement]:
    return [
        JudgeAgreement(
            check=index,
            label=check.label,
            n=a.n,
            agreed=a.agreed,
            rate=a.rate,
            kappa=a.kappa,
            kappa_note=a.kappa_note,
        )
        for index, check, a in agreements(checks, stats)
    ]


def agreement_table(checks: list[Check], stats: list[VariantStats]) -> tuple[list[str], list[list[str]]]:
    """Per rubric check, the judge against a person's 👍/👎 (head, rows): "6 of 7 (86%)", "κ = 0.70"."""
    rows = []
    for _index, check, a in agreements(checks, stats):
        kappa = "—" if a.n == 0 else (f"{a.kappa:.2f}" if a.kappa is not None else (a.kappa_note or "undefined"))
        rows.append([check.label, str(a.n), "—" if a.rate is None else f"{a.agreed} of {a.n} ({a.rate:.0%})", kappa])
    return ["rubric check", "cells rated by both", "agreed", "Cohen's κ"], rows


def pairwise_table(labels: list[str], pairs: list[PairwiseStats]) -> tuple[list[str], list[list[str]]]:
    """Each judged pair (head, rows): wins per variant, ties (flips included), win rates, cost."""
    head = ["pair", "judge", "wins", "ties", "no verdict", "win rate", "judges' cost"]
    rows = []
    for p in pairs:
        a, b = chr(65 + p.a), chr(65 + p.b)
        rates = [p.win_rate(p.a), p.win_rate(p.b)]
        priced = p.judged + p.failed - p.unpriced > 0
        cost = _usd(p.cost_usd if priced else None) + (f" + {p.unpriced} unpriced" if p.unpriced and priced else "")
        rows.append(
            [
                f"{a} · {labels[p.a]} vs {b} · {labels[p.b]}",
                p.judge.label,
                f"{a} {p.wins_a} · {b} {p.wins_b}",
                str(p.ties),
                str(p.failed + p.cancelled),
                f"{a} {_pct(rates[0])} · {b} {_pct(rates[1])}",
                cost,
            ]
        )
    return head, rows


def ratings_table(board: Leaderboard) -> tuple[list[str], list[list[str]]]:
    """A leaderboard (head, rows), its votes named for whose they are (people's or judges')."""
    rows = _ratings_rows(board)
    if board.voters == "judge":
        for row in rows:
            row[-1] = row[-1].replace("blind vote", "judge vote")
    return list(_RATINGS_HEAD), rows


def _describe(a: JudgeAgreement) -> str:
    from .judging import Agreement

    return Agreement(n=a.n, agreed=a.agreed, kappa=a.kappa, kappa_note=a.kappa_note).describe()


def arena_report(arena: Arena, *, votes: int = 50, **leaderboard_options: Any) -> ArenaReport:
    return ArenaReport(leaderboard=arena.leaderboard(**leaderboard_options), votes=arena.votes(limit=votes))


def filename(doc: Document, extension: str) -> str:
    """A file name for a download: the title, made safe, and the extension."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in doc.kind + "-" + _title(doc)).strip("-")
    return f"{stem[:80] or 'export'}.{extension}"


def _title(doc: Document) -> str:
    return doc.title if not isinstance(doc, RunReport) else f"{doc.title}-run-{doc.run_number}"


# --- JSON ------------------------------------------------------------------------------------


def to_json(doc: Document) -> str:
    payload = {"export_version": EXPORT_VERSION, "exported_at": utcnow().isoformat(), **doc.model_dump(mode="json")}
    # The values redacted, not the JSON text: its escapes ("\n" reads as a letter) would hide a
    # quote from redaction, and a span replaced across two fields would break the JSON.
    return json.dumps(redact_json(payload), ensure_ascii=False, indent=2)


# --- Markdown --------------------------------------------------------------------------------


def _fence(text: str) -> str:
    """`text` in a code fence longer than any run of backticks inside it: shown literally."""
    longest = max((len(run) for run in text.split("\n") for run in _backtick_runs(run)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}text\n{text}\n{fence}"


def _backtick_runs(line: str) -> list[str]:
    runs, current = [], ""
    for ch in line:
        if ch == "`":
            current += ch
        elif current:
            runs.append(current)
            current = ""
    return runs + ([current] if current else [])


def _cell(text: Any) -> str:
    """A Markdown table cell: one line, pipes escaped."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ").strip() or " "


def _ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms"


def _usd(value: float | None) -> str:
    if value is None:
        return "unknown"
    return "free" if value == 0 else f"${value:,.6f}".rstrip("0").rstrip(".")


def _pct(value: float | None) -> str:
    return "—" if value is None else f"{value:.0%}"


def _figures_line(f: Figures | None) -> str:
    if f is None:
        return ""
    parts = [f"latency {_ms(f.latency_ms)}", f"first token {_ms(f.ttft_ms)}"]
    if f.tokens_per_second is not None:
        parts.append(f"{f.tokens_per_second:.1f} tok/s")
    if f.input_tokens is not None or f.output_tokens is not None:
        parts.append(f"{f.input_tokens or 0} in → {f.output_tokens or 0} out")
    parts.append(f"cost {_usd(f.cost_usd)}")
    return " · ".join(parts)


def _stats_rows(stats: list[VariantStats]) -> list[list[str]]:
    return [
        [
            chr(65 + s.variant),
            s.label,
            _pct(s.success_rate),
            _ms(s.p50_latency_ms),
            _ms(s.p95_latency_ms),
            _ms(s.p50_ttft_ms),
            total_cost_text(s),
            _pct(s.pass_rate),
            "—" if s.avg_rating is None else f"{s.avg_rating:+.2f} ({s.thumbs_up}👍 {s.thumbs_down}👎)",
            _pct(s.win_rate),
        ]
        for s in stats
    ]


def total_cost_text(s: VariantStats) -> str:
    """A variant's total: "—" with no answer (not "free"), "unknown" with no price known."""
    if not s.priced and not s.unpriced:
        return "—"
    return _usd(s.cost_usd if s.priced else None) + (f" + {s.unpriced} unpriced" if s.unpriced and s.priced else "")


_STATS_HEAD = [
    "",
    "variant",
    "success",
    "p50",
    "p95",
    "p50 first token",
    "total cost",
    "pass rate",
    "rating",
    "win rate",
]


def stats_table(stats: list[VariantStats]) -> tuple[list[str], list[list[str]]]:
    """The per-variant figures as the reports show them (head, rows): the page shows the same."""
    return list(_STATS_HEAD), _stats_rows(stats)


def check_rates_table(doc_checks: list[Check], stats: list[VariantStats]) -> tuple[list[str], list[list[str]]]:
    """Each check's pass rate per variant (head, rows): "12/20 (60%)"."""
    head = ["check", *[f"{chr(65 + s.variant)} · {s.label}" for s in stats]]
    rows = [
        [check.label, *[_check_rate(check, s.checks[i]) if i < len(s.checks) else "—" for s in stats]]
        for i, check in enumerate(doc_checks)
    ]
    return head, rows


def _rate(passed: int, checked: int) -> str:
    return f"{passed}/{checked} ({passed / checked:.0%})" if checked else "—"


def _check_rate(check: Check, s: CheckStats) -> str:
    """A check's pass rate; a rubric check's adds its mean score, the judges' failures and cost:
    "7/10 (70%) · mean score 0.69 · judges $0.0012"."""
    said = _rate(s.passed, s.checked)
    if check.kind != CheckKind.rubric:
        return said
    if s.mean_score is not None:
        said += f" · mean score {s.mean_score:.2f}"
    if s.judge_failed:
        said += f" · {s.judge_failed} judge failure{'s' if s.judge_failed > 1 else ''}"
    if s.judge_cancelled:
        said += f" · {s.judge_cancelled} not judged (stopped)"
    if s.judge_calls:
        priced = s.judge_calls - s.judge_unpriced
        cost = _usd(s.judge_cost_usd if priced else None)
        said += f" · judges {cost}" + (f" + {s.judge_unpriced} unpriced" if s.judge_unpriced and priced else "")
    return said


def _verdict_word(result: CheckResult | None) -> str:
    if result is None:
        return ""
    if result.judge is not None and result.judge.status in ("failed", "cancelled"):
        return "judge failed" if result.judge.status == "failed" else "not judged"
    return "" if result.passed is None else ("pass" if result.passed else "fail")


def _why(result: CheckResult | None) -> str:
    if result is None:
        return ""
    if result.judge is not None and result.judge.status == "ok":
        return result.judge.reason or ""
    return result.detail or ""


def _verdicts(cell: Cell, checks: list[Check]) -> str:
    """Each check's verdict on a cell, in words: "valid against the schema ✗ ($.total: ...)"."""
    said = []
    for check, result in zip(checks, cell.checks or [], strict=False):
        if result.judge is not None and result.judge.status in ("failed", "cancelled"):
            said.append(f"{check.label}: {result.detail}")
            continue
        if result.passed is None:
            continue
        mark = "✓" if result.passed else "✗"
        if result.judge is not None:  # a verdict: its score and reason, pass or fail
            said.append(f"{check.label} {mark} {result.score or 0:.2f} ({result.judge.reason})")
            continue
        said.append(f"{check.label} {mark}" + (f" ({result.detail})" if result.detail and not result.passed else ""))
    return "; ".join(said)


def _tool_calls_text(cell: Cell) -> str:
    return "; ".join(f"{c.function.name}({c.function.arguments})" for c in cell.tool_calls or [])


def _table(head: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(_cell(h) for h in head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return lines


def _ratings_rows(board: Leaderboard) -> list[list[str]]:
    return [
        [
            str(i + 1) if r.enough else "—",
            r.subject,
            f"{r.rating:,.0f}",
            f"{r.ci_low:,.0f} – {r.ci_high:,.0f}",
            str(r.votes),
            f"{r.wins}/{r.losses}/{r.ties}",
            r.describe(),
        ]
        for i, r in enumerate(board.ratings)
    ]


_RATINGS_HEAD = ["rank", "target", "rating", "95% interval", "votes", "won/lost/tied", ""]


def _redacted(doc: Document) -> Document:
    """`doc` with every string in it redacted: before rendering, as rendering can hide a quote
    from a redaction of the output (Markdown turns "a*b*c" into a<em>b</em>c, HTML escapes
    quotes to "&#x27;"), while the reader still sees the characters side by side."""
    return type(doc).model_validate(redact_json(doc.model_dump(mode="json")))


def _tools_lines(settings: Variant | None) -> list[str]:
    """The tools offered: each one's name, description and parameters."""
    if settings is None or not settings.tools:
        return []
    choice = settings.tool_choice
    said = choice if isinstance(choice, str) or choice is None else f"call {choice.function.name}"
    out = [f"Tools (tool choice: {said or 'default'}):", ""]
    for tool in settings.tools:
        description = f": {_cell(tool.function.description)}" if tool.function.description else ""
        out += [f"- `{_cell(tool.function.name)}`{description}"]
    out += [
        "",
        _fence(json.dumps([t.model_dump(mode="json", exclude_none=True) for t in settings.tools], indent=2)),
        "",
    ]
    return out


def _calls_lines(calls: list[ToolCall] | None, results: dict[str, str] | None = None) -> list[str]:
    out: list[str] = []
    for call in calls or ():
        out += [
            f"**Tool call** `{_cell(call.function.name)}` ({_cell(call.id)}):",
            "",
            _fence(call.function.arguments),
            "",
        ]
        if results and call.id in results:
            out += ["**Result:**", "", _fence(results[call.id]), ""]
    return out


def to_markdown(doc: Document) -> str:
    doc = _redacted(doc)
    out: list[str] = [f"# {_cell(doc.title)}", ""]
    if isinstance(doc, Transcript):
        if doc.settings is not None:
            out += [
                f"Settings: `{doc.settings.target}`, temperature {doc.settings.temperature:g}, max {doc.settings.max_tokens} tokens",
                "",
            ]
        out += _tools_lines(doc.settings)
        for turn in doc.turns:
            who = {"user": "You", "system": "System", "tool": f"Tool result: {turn.name or 'tool'}"}.get(
                turn.role, turn.label or "Assistant"
            )
            status = "" if turn.status == "ok" else f" ({turn.status})"
            out += [f"## {_cell(who)}{status}", ""]
            if turn.content or turn.role != "assistant" or not turn.tool_calls:
                out += [_fence(turn.content) if turn.role != "assistant" else turn.content, ""]
            out += _attached_lines(turn.attachments)
            out += _calls_lines(turn.tool_calls)
            if turn.error:
                out += [f"> Error: {_cell(turn.error)}", ""]
            if turn.figures:
                out += [f"_{_figures_line(turn.figures)}_", ""]
    elif isinstance(doc, Comparison):
        out += ["## Prompt", "", _fence(doc.prompt), "", *_attached_lines(doc.attachments)]
        out += _tools_lines(next((c.settings for c in doc.columns if c.settings and c.settings.tools), None))
        for column in doc.columns:
            status = "" if column.status == "ok" else f" ({column.status})"
            answer = column.answer or ("" if column.tool_calls else "_(no answer)_")
            out += [f"## {_cell(column.label)}{status}", "", answer, ""]
            out += _calls_lines(column.tool_calls, column.tool_results)
            if column.error:
                out += [f"> Error: {_cell(column.error)}", ""]
            if column.figures:
                out += [f"_{_figures_line(column.figures)}_", ""]
        if doc.vote:
            out += [f"**Vote:** {_cell(doc.vote)}", ""]
    elif isinstance(doc, RunReport):
        out += [
            f"Run {doc.run_number} · {doc.status} · check: {doc.check} · {doc.rows_total} rows × {len(doc.variants)} variants",
            "",
            "## Template",
            "",
            _fence(doc.template),
            "",
            "## Results per variant",
            "",
            *_table(_STATS_HEAD, _stats_rows(doc.stats)),
            "",
        ]
        if doc.checks:
            out += ["## Checks", "", *_table(*check_rates_table(doc.checks, doc.stats)), ""]
        if doc.agreement:
            out += ["## Judge and person", "", *_table(*agreement_table(doc.checks, doc.stats)), ""]
        if doc.pairwise:
            out += ["## Pairwise judge", "", *_table(*pairwise_table(doc.labels, doc.pairwise)), ""]
        if doc.changes:
            out += ["## Since the previous run", "", *[f"- {_cell(line)}" for line in doc.changes], ""]
        if doc.leaderboard and doc.leaderboard.ratings:
            out += ["## Ratings", "", *_table(_RATINGS_HEAD, _ratings_rows(doc.leaderboard)), ""]
        out += ["## Rows", ""]
        for row in doc.rows:
            values = ", ".join(f"{k} = {v}" for k, v in row.values.items())
            out += [f"### Row {row.row + 1}", "", _fence(values), ""]
            for label, cell in zip(doc.labels, row.cells, strict=False):
                if cell is None:
                    out += [f"**{_cell(label)}**: not run", ""]
                    continue
                verdict = "" if cell.passed is None else (" ✅ pass" if cell.passed else " ❌ fail")
                rating = {1: " 👍", -1: " 👎"}.get(cell.rating or 0, "")
                out += [
                    f"**{_cell(label)}** ({cell.status}{verdict}{rating}, {_ms(cell.latency_ms)}, {_usd(cell.cost_usd)})",
                    "",
                ]
                out += [cell.answer or f"_({cell.error_message or 'no answer'})_", ""]
                if cell.tool_calls:
                    out += [f"Tool calls: `{_cell(_tool_calls_text(cell))}`", ""]
                if verdicts := _verdicts(cell, doc.checks):
                    out += [f"_Checks: {_cell(verdicts)}_", ""]
        if len(doc.rows) < doc.rows_total:
            out += [f"_{doc.rows_total - len(doc.rows)} more rows are not in this export._", ""]
    else:
        out += [f"{doc.leaderboard.votes} blind votes; a target needs {doc.leaderboard.min_votes} to be ranked.", ""]
        out += [*_table(_RATINGS_HEAD, _ratings_rows(doc.leaderboard)), ""]
        if doc.votes:
            out += ["## Recent votes", ""]
            out += [f"- {_cell(_clip(v.prompt))}: {_cell(v.describe())}" for v in doc.votes]
            out.append("")
    return redact("\n".join(out).rstrip() + "\n")


def _attached_lines(attached: list[Attached]) -> list[str]:
    return [f"Attached: {_cell(', '.join(a.label() for a in attached))}", ""] if attached else []


def _clip(text: str, width: int = 80) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


# --- HTML ------------------------------------------------------------------------------------

_CSP = (
    "default-src 'none'; style-src 'unsafe-inline'; img-src data:; font-src data:; base-uri 'none'; form-action 'none'"
)

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{{ csp }}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="generator" content="Conductor">
<title>{{ title }}</title>
<style>
.attached img { max-width: 320px; max-height: 240px; margin: .3rem .5rem .3rem 0; border: 1px solid #ddd; border-radius: 4px; }
.attached .chip { display: inline-block; background: #f0f0f3; border-radius: 1rem; padding: .1rem .7rem; margin: .2rem .4rem .2rem 0; font-size: .85rem; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px; padding: 1.5rem; color: #1d1d1f; }
h1 { font-size: 1.6rem; margin-bottom: .2rem; } h2 { margin-top: 2rem; border-bottom: 1px solid #ddd; }
.meta { color: #666; } pre.literal { white-space: pre-wrap; background: #f5f5f7; padding: .6rem .8rem; border-radius: 6px; }
table { border-collapse: collapse; width: 100%; font-size: .9rem; margin: .6rem 0; } th, td { border: 1px solid #ddd; padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: #fafafa; } .answer { overflow-wrap: anywhere; } .answer pre { white-space: pre-wrap; background: #f5f5f7; padding: .4rem; }
.figures { color: #555; font-size: .85rem; } .bad { color: #b00020; } .good { color: #1b7f3b; } .charts svg { max-width: 100%; height: auto; margin: .5rem 1rem .5rem 0; }
.grid td { min-width: 12rem; } .turn { margin: 1rem 0; } .who { font-weight: 600; }
footer { margin-top: 3rem; color: #888; font-size: .8rem; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="meta">{{ subtitle }}</p>
{{ body }}
<footer>Exported from Conductor on {{ exported }}. This file makes no network request.</footer>
</body>
</html>
"""


def _markdown() -> Any:
    from markdown_it import MarkdownIt

    # commonmark with raw HTML off: a model's <script> is text. Images off: no remote fetches.
    return MarkdownIt("commonmark", {"html": False, "linkify": False}).enable("table").disable("image")


def _charts(charts: list[Any]) -> str:
    from .report_charts import svg

    return '<div class="charts">' + "".join(svg(chart) for chart in charts) + "</div>"


_PICTURE = "conductor-attachment:"  # an image's src until the page is redacted


def _pictures(doc: Document) -> dict[str, str]:
    """sha256 → data URL of every image in `doc` that carries its bytes."""
    attached = [*getattr(doc, "attachments", [])] + [a for t in getattr(doc, "turns", []) for a in t.attachments]
    return {
        a.sha256: f"data:{a.media_type};base64,{base64.b64encode(a.data).decode('ascii')}"
        for a in attached
        if a.is_image and a.data
    }


def to_html(doc: Document, *, charts: bool = True) -> str:
    """One HTML file: answers, figures, votes and ratings, charts as inline SVG, the messages'
    images embedded."""
    pictures = _pictures(doc)  # before the redaction, which drops the bytes (and must not touch them)
    doc = _redacted(doc)
    from jinja2 import Environment
    from markupsafe import Markup

    from . import report_charts

    env = Environment(autoescape=True, trim_blocks=True, lstrip_blocks=True)
    md = _markdown()
    env.filters["markdown"] = lambda text: Markup(md.render(text or ""))
    env.filters["ms"] = _ms
    env.filters["usd"] = _usd
    env.filters["pct"] = _pct
    env.globals["figures_line"] = _figures_line
    env.globals["calls_html"] = lambda calls, results=None: Markup(
        env.from_string(_CALLS_HTML).render(calls=calls or [], results=results or {})
    )
    env.globals["tools_html"] = lambda settings: Markup(
        env.from_string(_TOOLS_HTML).render(tools=settings.tools or [], choice=settings.tool_choice)
    )
    env.globals["attached"] = lambda items: Markup(
        env.from_string(_ATTACHED).render(items=items, src=_PICTURE, shown=pictures)
    )
    chart_html = ""
    if isinstance(doc, RunReport):
        subtitle = f"Run {doc.run_number} · {doc.status} · check: {doc.check} · {doc.rows_total} rows × {len(doc.variants)} variants"
        if charts and doc.stats:
            chart_html = _charts(
                [
                    report_charts.rates_chart(doc.stats),
                    report_charts.latency_chart(doc.stats),
                    report_charts.cost_chart(doc.stats),
                ]
            )
            if doc.leaderboard and doc.leaderboard.ratings:
                chart_html += _charts([report_charts.ratings_chart(doc.leaderboard.ratings)])
    elif isinstance(doc, ArenaReport):
        subtitle = f"{doc.leaderboard.votes} blind votes; a target needs {doc.leaderboard.min_votes} to be ranked"
        if charts and doc.leaderboard.ratings:
            chart_html = _charts([report_charts.ratings_chart(doc.leaderboard.ratings)])
    elif isinstance(doc, Comparison):
        subtitle = f"{len(doc.columns)} answers to one prompt"
    else:
        subtitle = f"{sum(t.role == 'user' for t in doc.turns)} messages" + (
            f" with {doc.settings.target}" if doc.settings else ""
        )
    body = env.from_string(_BODIES[doc.kind]).render(
        doc=doc,
        charts=Markup(chart_html),
        stats_head=_STATS_HEAD,
        stats_rows=_stats_rows(doc.stats) if isinstance(doc, RunReport) else [],
        ratings_head=_RATINGS_HEAD,
        ratings_rows=_ratings_rows(leaderboard) if (leaderboard := getattr(doc, "leaderboard", None)) else [],
        letter=lambda i: chr(65 + i),
        check_head=check_rates_table(doc.checks, doc.stats)[0] if isinstance(doc, RunReport) else [],
        check_rows=check_rates_table(doc.checks, doc.stats)[1] if isinstance(doc, RunReport) else [],
        agreement_head=agreement_table(doc.checks, doc.stats)[0] if isinstance(doc, RunReport) else [],
        agreement_rows=agreement_table(doc.checks, doc.stats)[1] if isinstance(doc, RunReport) else [],
        describe_agreement=lambda a: _describe(a),
        pairwise_head=pairwise_table(doc.labels, doc.pairwise)[0] if isinstance(doc, RunReport) else [],
        pairwise_rows=pairwise_table(doc.labels, doc.pairwise)[1] if isinstance(doc, RunReport) else [],
        verdicts=_verdicts,
        tool_calls_text=_tool_calls_text,
    )
    page = env.from_string(_PAGE).render(
        csp=Markup(_CSP),  # a constant of ours: its quotes must stay quotes
        title=_title(doc) if not isinstance(doc, RunReport) else doc.title,
        subtitle=subtitle,
        body=Markup(body),
        exported=utcnow().strftime("%Y-%m-%d %H:%M UTC"),
    )
    page = redact(page)
    for sha256, url in pictures.items():
        page = page.replace(f'src="{_PICTURE}{sha256}"', f'src="{url}"')
    return page


# --- CSV -------------------------------------------------------------------------------------


def to_csv(doc: RunReport) -> str:
    """A run as a spreadsheet: one line per cell (row × variant), the row's values, the answer,
    the tool calls, and each check's verdict and why it failed. Text that a spreadsheet would
    run as a formula (=, +, -, @...) gets a leading quote, as the request log's CSV does."""
    out = io.StringIO()
    writer = csv.writer(out)
    checks = [f"check {i + 1}: {check.label}" for i, check in enumerate(doc.checks)]
    # A rubric check adds its score and its judge's latency and cost.
    suffixes = [
        ("", " (why)", " (score)", " (judge ms)", " (judge usd)") if check.kind == CheckKind.rubric else ("", " (why)")
        for check in doc.checks
    ]
    writer.writerow(
        [
            "row",
            *doc.columns,
            "variant",
            "status",
            "answer",
            "tool_calls",
            "passed",
            *[f"{name}{suffix}" for name, ends in zip(checks, suffixes, strict=True) for suffix in ends],
            "latency_ms",
            "cost_usd",
            "rating",
            "error",
        ]
    )
    for row in doc.rows:
        values = [row.values.get(column, "") for column in doc.columns]
        for label, cell in zip(doc.labels, row.cells, strict=False):
            if cell is None:
                continue
            results = list(cell.checks or [])
            per_check: list[Any] = []
            for i in range(len(doc.checks)):
                result = results[i] if i < len(results) else None
                per_check += [_verdict_word(result), _why(result)]
                if len(suffixes[i]) > 2:
                    judge = result.judge if result is not None else None
                    per_check += [
                        "" if result is None or result.score is None else result.score,
                        "" if judge is None or judge.latency_ms is None else round(judge.latency_ms, 1),
                        "" if judge is None or judge.cost_usd is None else judge.cost_usd,
                    ]
            writer.writerow(
                _as_text_cells(
                    row.row + 1,
                    *values,
                    label,
                    cell.status,
                    cell.answer or "",
                    json.dumps([c.model_dump(mode="json") for c in cell.tool_calls], ensure_ascii=False)
                    if cell.tool_calls
                    else "",
                    "" if cell.passed is None else ("pass" if cell.passed else "fail"),
                    *per_check,
                    "" if cell.latency_ms is None else round(cell.latency_ms, 1),
                    "" if cell.cost_usd is None else cell.cost_usd,
                    cell.rating or "",
                    cell.error_message or "",
                )
            )
    return redact(out.getvalue())


def _as_text_cells(*values: Any) -> list[Any]:
    return [neutralize_formula(v) if isinstance(v, str) else v for v in values]


_CALLS_HTML = """{% for call in calls %}<div class="figures">Tool call <strong>{{ call.function.name }}</strong> ({{ call.id }})</div>
<pre class="literal">{{ call.function.arguments }}</pre>
{% if call.id in results %}<div class="figures">Result</div><pre class="literal">{{ results[call.id] }}</pre>{% endif %}
{% endfor %}"""

_TOOLS_HTML = """<table><tr><th>Tool</th><th>Description</th><th>Parameters</th></tr>
{% for tool in tools %}<tr><td>{{ tool.function.name }}</td><td>{{ tool.function.description or "" }}</td><td><pre class="literal">{{ tool.function.parameters | tojson(indent=2) }}</pre></td></tr>{% endfor %}
</table>{% if choice %}<p class="meta">Tool choice: {{ choice if choice is string else "call " ~ choice.function.name }}</p>{% endif %}"""

_ATTACHED = """{% if items %}<div class="attached">{% for a in items %}{% if a.sha256 in shown %}<img src="{{ src }}{{ a.sha256 }}" alt="{{ a.name }}" title="{{ a.label() }}">{% else %}<span class="chip">📄 {{ a.label() }}</span>{% endif %}{% endfor %}</div>{% endif %}"""

_RATINGS_TABLE = """
<table><tr>{% for h in ratings_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in ratings_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}
</table>
"""

_BODIES = {
    "conversation": """
{% if doc.settings and doc.settings.tools %}<h2>Tools</h2>{{ tools_html(doc.settings) }}{% endif %}
{% for turn in doc.turns %}
<div class="turn"><div class="who">{{ "You" if turn.role == "user" else ("System" if turn.role == "system" else ("Tool result: " ~ (turn.name or "tool") if turn.role == "tool" else (turn.label or "Assistant"))) }}{% if turn.status != "ok" %} <span class="bad">({{ turn.status }})</span>{% endif %}</div>
{% if turn.role == "assistant" %}<div class="answer">{{ turn.content | markdown }}</div>{{ calls_html(turn.tool_calls) }}{% else %}<pre class="literal">{{ turn.content }}</pre>{% endif %}
{{ attached(turn.attachments) }}
{% if turn.error %}<div class="bad">Error: {{ turn.error }}</div>{% endif %}
{% if turn.figures %}<div class="figures">{{ figures_line(turn.figures) }}</div>{% endif %}
</div>
{% endfor %}
""",
    "comparison": """
<h2>Prompt</h2><pre class="literal">{{ doc.prompt }}</pre>
{{ attached(doc.attachments) }}
{% for c in doc.columns if c.settings and c.settings.tools %}{% if loop.first %}<h2>Tools</h2>{{ tools_html(c.settings) }}{% endif %}{% endfor %}
<table class="grid"><tr>{% for c in doc.columns %}<th>{{ c.label }}{% if c.status != "ok" %} <span class="bad">({{ c.status }})</span>{% endif %}</th>{% endfor %}</tr>
<tr>{% for c in doc.columns %}<td><div class="answer">{{ (c.answer or "") | markdown }}</div>{{ calls_html(c.tool_calls, c.tool_results) }}{% if c.error %}<div class="bad">Error: {{ c.error }}</div>{% endif %}</td>{% endfor %}</tr>
<tr>{% for c in doc.columns %}<td class="figures">{{ figures_line(c.figures) }}</td>{% endfor %}</tr></table>
{% if doc.vote %}<p><strong>Vote:</strong> {{ doc.vote }}</p>{% endif %}
""",
    "experiment_run": """
<h2>Template</h2><pre class="literal">{{ doc.template }}</pre>
<h2>Results per variant</h2>
<table><tr>{% for h in stats_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in stats_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
{% if check_rows %}<h2>Checks</h2><table><tr>{% for h in check_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in check_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>{% endif %}
{% if agreement_rows %}<h2>Judge and person</h2><table><tr>{% for h in agreement_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in agreement_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
<p class="meta">{% for a in doc.agreement %}{{ a.label }}: {{ describe_agreement(a) }}. {% endfor %}</p>{% endif %}
{% if pairwise_rows %}<h2>Pairwise judge</h2><table><tr>{% for h in pairwise_head %}<th>{{ h }}</th>{% endfor %}</tr>
{% for row in pairwise_rows %}<tr>{% for c in row %}<td>{{ c }}</td>{% endfor %}</tr>{% endfor %}</table>
<p class="meta">Each row asked twice, the answers in both orders: the same winner both times is a win; a flip or a tie is a tie.</p>{% endif %}
{{ charts }}
{% if doc.changes %}<h2>Since the previous run</h2><ul>{% for line in doc.changes %}<li>{{ line }}</li>{% endfor %}</ul>{% endif %}
{% if doc.leaderboard and doc.leaderboard.ratings %}<h2>Ratings</h2>"""
    + _RATINGS_TABLE
    + """{% endif %}
<h2>Rows</h2>
<table class="grid"><tr><th>#</th><th>values</th>{% for label in doc.labels %}<th>{{ letter(loop.index0) }} · {{ label }}</th>{% endfor %}</tr>
{% for row in doc.rows %}<tr><td>{{ row.row + 1 }}</td><td><pre class="literal">{% for k, v in row.values.items() %}{{ k }} = {{ v }}
{% endfor %}</pre></td>
{% for cell in row.cells %}<td>{% if cell is none %}<span class="figures">not run</span>{% else %}
<div class="figures">{{ cell.status }}{% if cell.passed is not none %} · <span class="{{ 'good' if cell.passed else 'bad' }}">{{ "pass" if cell.passed else "fail" }}</span>{% endif %}{% if cell.rating == 1 %} · 👍{% elif cell.rating == -1 %} · 👎{% endif %} · {{ cell.latency_ms | ms }} · {{ cell.cost_usd | usd }}</div>
{% if cell.answer %}<div class="answer">{{ cell.answer | markdown }}</div>{% elif cell.error_message %}<div class="bad">{{ cell.error_message }}</div>{% endif %}
{% if cell.tool_calls %}<pre class="literal">{{ tool_calls_text(cell) }}</pre>{% endif %}
{% if verdicts(cell, doc.checks) %}<div class="figures">{{ verdicts(cell, doc.checks) }}</div>{% endif %}
{% endif %}</td>{% endfor %}</tr>
{% endfor %}</table>
{% if doc.rows | length < doc.rows_total %}<p class="meta">{{ doc.rows_total - (doc.rows | length) }} more rows are not in this export.</p>{% endif %}
""",
    "arena": """
{{ charts }}
<h2>Leaderboard</h2>"""
    + _RATINGS_TABLE
    + """
{% if doc.votes %}<h2>Recent votes</h2><ul>{% for v in doc.votes %}<li><pre class="literal">{{ v.prompt }}</pre>{{ v.describe() }}</li>{% endfor %}</ul>{% endif %}
""",
}
