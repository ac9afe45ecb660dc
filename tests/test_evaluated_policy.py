"""AUTO's `evaluated` policy: among the targets measured on the request's prompt, the cheapest
(or fastest) within a margin of the best pass rate, with the reason that says so; `balanced`
(and why) without a prompt, without a measured target or with too few rows; an open breaker
still skips a target. Pure: scores and a fake source in, candidates out."""

from __future__ import annotations

import pytest

from conductor_core.config import load_settings
from conductor_core.models import AttemptRecord, ChatMessage, ChatRequest, RoutingPolicy
from conductor_core.routing import AsyncConductor
from conductor_core.routing.evaluation import Evaluation, QualityBar
from conductor_core.routing.ranking import Score, order
from conductor_core.testing.fakes import ScriptedProvider

CHEAP, DEAR, QUICK = (ScriptedProvider(name, models=[f"{name}-1"]) for name in ("cheap", "dear", "quick"))
WHERE = "dataset invoices v3, run 12"


def score(cost: float, latency_ms: float, evaluation: Evaluation | None = None) -> Score:
    return Score(
        samples=5, latency_ms=latency_ms, latency_kind="latency", success=1.0, cost=cost, evaluation=evaluation
    )


def evaluated(rate: float, rows: int = 40) -> Evaluation:
    return Evaluation(pass_rate=rate, rows=rows, source=WHERE)


def ranked(scores: dict[str, Score], bar: QualityBar) -> list[tuple[str, str]]:
    usable = [p for p in (CHEAP, DEAR, QUICK) if p.name in scores]
    return [(c.provider.name, c.reason) for c in order(usable, scores, [], RoutingPolicy.evaluated, bar)]


def test_the_cheapest_within_the_margin_of_the_best_is_chosen_and_the_reason_quotes_both_rates() -> None:
    scores = {
        "cheap": score(0.001, 900, evaluated(0.91)),
        "dear": score(0.010, 300, evaluated(0.93)),
        "quick": score(0.0001, 50, evaluated(0.80)),  # cheapest and fastest, but 13 points below
    }
    assert ranked(scores, QualityBar("invoices")) == [
        ("cheap", f"cheapest within 2 points of the best pass rate: 0.91 vs 0.93 on {WHERE}"),
        ("dear", f"cheapest within 2 points of the best pass rate: 0.93 vs 0.93 on {WHERE}"),
        ("quick", f"pass rate 0.80, more than 2 points below the best 0.93, on {WHERE}"),
    ]
    # A narrower margin leaves only the best.
    assert [name for name, _ in ranked(scores, QualityBar("invoices", margin=0.01))] == ["dear", "cheap", "quick"]
    # A wider one lets the cheapest through.
    wide = ranked(scores, QualityBar("invoices", margin=0.15))
    assert wide[0] == ("quick", f"cheapest within 15 points of the best pass rate: 0.80 vs 0.93 on {WHERE}")


def test_fastest_picks_by_latency_within_the_margin() -> None:
    scores = {"cheap": score(0.001, 900, evaluated(0.91)), "dear": score(0.010, 300, evaluated(0.93))}
    assert ranked(scores, QualityBar("invoices", prefer="fastest")) == [
        ("dear", f"fastest within 2 points of the best pass rate: 0.93 vs 0.93 on {WHERE}"),
        ("cheap", f"fastest within 2 points of the best pass rate: 0.91 vs 0.93 on {WHERE}"),
    ]


def test_too_few_rows_or_no_evaluation_or_no_prompt_ranks_as_balanced_and_says_so() -> None:
    balanced = {"cheap": score(0.0, 900), "dear": score(0.0, 100)}
    plain = [(c.provider.name, c.reason) for c in order([CHEAP, DEAR], balanced, [], RoutingPolicy.balanced)]
    assert [name for name, _ in plain] == ["dear", "cheap"]

    few = {"cheap": score(0.0, 900, evaluated(1.0, rows=12)), "dear": score(0.0, 100, evaluated(0.5, rows=8))}
    assert ranked(few, QualityBar("invoices")) == [
        (name, f"too few evaluated rows on prompt 'invoices' (12 < 20), so as balanced: {why}") for name, why in plain
    ]
    assert ranked(balanced, QualityBar("invoices")) == [
        (name, f"no target evaluated on prompt 'invoices', so as balanced: {why}") for name, why in plain
    ]
    assert ranked(balanced, QualityBar(None)) == [
        (name, f"no prompt in the request (the evaluated policy needs one), so as balanced: {why}")
        for name, why in plain
    ]


def test_unevaluated_targets_come_after_the_evaluated_ones_as_balanced() -> None:
    scores = {
        "cheap": score(0.001, 900, evaluated(0.70)),
        "dear": score(0.0, 100, evaluated(0.99, rows=5)),  # too few rows to count
        "quick": score(0.0, 50),
    }
    names = ranked(scores, QualityBar("invoices"))
    assert names[0] == ("cheap", f"cheapest within 2 points of the best pass rate: 0.70 vs 0.70 on {WHERE}")
    assert names[1][0] == "quick" and names[1][1].startswith(
        "not evaluated on prompt 'invoices', so after the evaluated ones: best balance of speed"
    )
    assert names[2][0] == "dear" and names[2][1].startswith("too few evaluated rows (5 < 20), so after the evaluated")


class FakeEvaluations:
    """A source: how each target did on each prompt, and which (prompt, target) were asked."""

    def __init__(self, table: dict[str, dict[str, Evaluation]]) -> None:
        self.table = table
        self.asked: list[tuple[str, str]] = []

    def get(self, prompt: str, target: str) -> Evaluation | None:
        self.asked.append((prompt, target))
        return self.table.get(prompt, {}).get(target)


@pytest.fixture
def core(tmp_path):
    providers = [
        ScriptedProvider("cheap", models=["cheap-1"], cost_per_token=0.000001),
        ScriptedProvider("dear", models=["dear-1"], cost_per_token=0.0000011),
    ]
    settings = load_settings(
        _env_file=None, local_enabled=False, data_dir=tmp_path, evaluated_margin=0.05, evaluated_min_rows=10
    )
    source = FakeEvaluations(
        {"invoices": {"cheap/cheap-1": evaluated(0.90, rows=10), "dear/dear-1": evaluated(0.94, rows=10)}}
    )
    made = AsyncConductor(settings, extra_providers=providers, evaluations=source)
    for _ in range(5):  # a history in which `dear` is the better balance (fast), `cheap` slow
        made.metrics.record(AttemptRecord(request_id="r", provider="dear", model="dear-1", status="ok", latency_ms=10))
        made.metrics.record(
            AttemptRecord(request_id="r", provider="cheap", model="cheap-1", status="ok", latency_ms=5000)
        )
    yield made, source
    made.log.close()


def ask(prompt: str | None) -> ChatRequest:
    return ChatRequest(provider="auto", prompt_name=prompt, messages=[ChatMessage(role="user", content="hi")])


def test_the_core_reads_the_settings_and_the_requests_prompt(core) -> None:
    made, source = core
    chosen = made.rank(ask("invoices"), RoutingPolicy.evaluated)
    assert [c.provider.name for c in chosen] == ["cheap", "dear"]
    assert chosen[0].reason == f"cheapest within 5 points of the best pass rate: 0.90 vs 0.94 on {WHERE}"
    assert ("invoices", "cheap/cheap-1") in source.asked

    # Another policy, or no prompt, never asks the source.
    source.asked.clear()
    assert made.rank(ask("invoices"), RoutingPolicy.balanced)[0].provider.name == "dear"
    no_prompt = made.rank(ask(None), RoutingPolicy.evaluated)
    assert no_prompt[0].provider.name == "dear" and no_prompt[0].reason.startswith("no prompt in the request")
    assert source.asked == []

    # A target whose breaker is open is skipped, however well it did.
    breaker = made.breaker("cheap")
    while breaker.would_allow():
        breaker.record_failure()
    assert [c.provider.name for c in made.rank(ask("invoices"), RoutingPolicy.evaluated)] == ["dear"]
