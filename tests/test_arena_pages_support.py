"""What the Arena, the leaderboard, the comparison links and replay stand on (no browser):
blind answers before the vote, the names of a match no vote can judge, votes in the request
log's CSV/JSON exports, the leaderboard table, transcripts and replays (from a session and
from the log alone), and the comparison link's shape. SQLite and PostgreSQL where it matters."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pandas as pd
import pytest
from sqlalchemy import select
from workbench_support import chat_in_a_session

from conductor_core.config import load_settings
from conductor_core.errors import ProviderUnavailableError
from conductor_core.models import ChatMessage, MessageRole
from conductor_core.router import Conductor
from conductor_core.testing.fakes import ScriptedProvider
from conductor_core.workbench.arena import Arena, ArenaError, answers_table
from conductor_core.workbench.ratings import Judgement, fit_ratings
from conductor_core.workbench.replay import ReplayError, parse_transcript, replay_of
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.variants import Variant
from playground import dashboard_data as dd
from playground.compare_links import comparison_link, parse_targets


def _conductor(tmp_path: Path, database: str | None = None) -> Conductor:
    providers = [
        ScriptedProvider("alpha", reply="Alpha says =1+1.", models=["alpha-1"], cost_per_token=1e-6),
        ScriptedProvider("beta", reply="Beta says hi.", models=["beta-1"], cost_per_token=None),
    ]
    settings = load_settings(
        _env_file=None, local_enabled=False, data_dir=tmp_path, max_retries=0, database_url=database
    )
    return Conductor(settings, extra_providers=providers)


def _letter_of(arena: Arena, match_id: str, target: str) -> str:
    a = answers_table.c
    with arena.engine.connect() as conn:
        slot = conn.execute(select(a.slot).where(a.match_id == match_id, a.target == target)).scalar_one()
    return "ABCD"[slot]


def variants() -> list[Variant]:
    """After the fakes exist: a provider name is checked against the registered ones."""
    return [Variant(provider="alpha", model="alpha-1"), Variant(provider="beta", model="beta-1")]


def test_blind_answers_carry_text_and_state_but_no_name(database_url, tmp_path: Path) -> None:
    conductor = _conductor(tmp_path, database_url)
    try:
        arena = Arena(conductor.log)
        match = arena.start("Say hi", variants())
        assert [a.state for a in arena.blind_answers(match.id)] == ["pending", "pending"]
        list(arena.answers(conductor, match.id))
        blind = arena.blind_answers(match.id)
        assert {a.state for a in blind} == {"ok"}
        assert sorted(a.text for a in blind) == ["Alpha says =1+1.", "Beta says hi."]
        dumped = json.dumps([a.model_dump() for a in blind])
        assert "alpha" not in dumped.replace("Alpha says", "") and "beta" not in dumped.replace("Beta says", "")
        with pytest.raises(ArenaError, match="vote first"):
            arena.unjudgeable(match.id)  # two complete answers: still blind until the vote
        assert not arena.voted(match.id)
    finally:
        conductor.close()


def test_a_match_with_one_complete_answer_can_be_revealed_without_a_vote(tmp_path: Path) -> None:
    conductor = _conductor(tmp_path)
    try:
        conductor.registry.get("beta").script(ProviderUnavailableError("down", provider="beta"))
        arena = Arena(conductor.log)
        match = arena.start("Say hi", variants())
        list(arena.answers(conductor, match.id))
        states = {a.letter: a.state for a in arena.blind_answers(match.id)}
        assert sorted(states.values()) == ["failed", "ok"]
        with pytest.raises(ArenaError, match="fewer than two"):
            arena.vote(match.id, "tie")
        names = {a.letter: (a.target, a.status) for a in arena.unjudgeable(match.id)}
        assert names[_letter_of(arena, match.id, "beta/beta-1")] == ("beta/beta-1", "error")
    finally:
        conductor.close()


def test_votes_are_in_the_csv_and_json_exports(database_url, tmp_path: Path) -> None:
    conductor = _conductor(tmp_path, database_url)
    try:
        arena = Arena(conductor.log)
        match = arena.start("Say hi", variants())
        list(arena.answers(conductor, match.id))
        arena.vote(match.id, _letter_of(arena, match.id, "alpha/alpha-1"))
        tie = arena.start("Again", variants())
        list(arena.answers(conductor, tie.id))
        arena.vote(tie.id, "tie")
        conductor.chat(variants()[0].request([ChatMessage(role=MessageRole.user, content="not judged")]))

        rows = json.loads(conductor.log.export("json", verdicts=arena.verdicts))
        by_prompt = {}
        for row in rows:
            by_prompt.setdefault(row["prompt"].removeprefix("user: "), {})[row["provider"]] = (
                row["vote"],
                row["vote_id"],
            )
        assert by_prompt["Say hi"] == {"alpha": ("best", match.id), "beta": ("not best", match.id)}
        assert by_prompt["Again"] == {"alpha": ("tie", tie.id), "beta": ("tie", tie.id)}
        assert by_prompt["not judged"] == {"alpha": (None, None)}

        table = list(csv.DictReader(io.StringIO(conductor.log.export("csv", verdicts=arena.verdicts).decode())))
        assert {(r["provider"], r["vote"], r["vote_id"]) for r in table if r["prompt"] == "user: Say hi"} == {
            ("alpha", "best", match.id),
            ("beta", "not best", match.id),
        }
        assert next(r for r in table if r["prompt"] == "user: not judged")["vote"] == ""
        # A CSV answer that would start a formula is still neutralised next to the new columns.
        assert all(not r["answer"].startswith("=") for r in table)
        # Without verdicts the export's columns are as before.
        plain = conductor.log.export("csv").decode().splitlines()[0]
        assert "vote" not in plain.split(",")
    finally:
        conductor.close()


def test_leaderboard_table_puts_ratings_beside_each_targets_figures() -> None:
    votes = [Judgement(subjects=("a/1", "b/1"), winner="a/1")] * 8 + [
        Judgement(subjects=("a/1", "b/1"), winner="b/1")
    ] * 4
    votes += [Judgement(subjects=("a/1", "c/1"), winner=None)]
    board = fit_ratings(votes, min_votes=10, rounds=50)
    attempts = pd.DataFrame(
        {
            "provider": ["a", "a", "a", "b", "b", "b"],
            "model": ["1", "1", "1", "1", "1", "1"],
            "status": ["ok", "ok", "error", "ok", "error", "error"],
            "error_type": [None, None, "server_error", None, "bad_request", "server_error"],
            "latency_ms": [100.0, 300.0, np.nan, 50.0, np.nan, np.nan],
            "cost_usd": [0.001, 0.003, np.nan, np.nan, np.nan, np.nan],
        }
    )
    table = dd.leaderboard_table(board, attempts)
    assert list(table["Target"]) == ["a/1", "b/1", "c/1"]
    assert list(table["Rank"].astype(object).where(table["Rank"].notna(), None)) == [1, 2, None]
    a, b, c = table.to_dict("records")
    assert a["Rating"] > b["Rating"] and a["Blind votes"] == 13 and a["W / L / T"] == "8 / 4 / 1"
    assert (
        a["p50 ms"] == 200.0 and a["Success"] == pytest.approx(2 / 3) and a["Cost / request $"] == pytest.approx(0.002)
    )
    assert b["Success"] == pytest.approx(1 / 2)  # the bad request is the caller's fault: left out
    assert np.isnan(b["Cost / request $"])  # unpriced: unknown, not free
    assert c["95% CI"] == "too few votes (1 < 10)" and pd.isna(c["Rating"]) and np.isnan(c["p50 ms"])
    assert dd.leaderboard_table(fit_ratings([]), attempts).empty


def test_transcripts_are_read_back_into_messages() -> None:
    messages = parse_transcript("system: Be brief.\nuser: Hi\nthere\nassistant: Hello.\nuser: And now?")
    assert [(m.role.value, m.content) for m in messages] == [
        ("system", "Be brief."),
        ("user", "Hi\nthere"),
        ("assistant", "Hello."),
        ("user", "And now?"),
    ]
    assert [(m.role.value, m.content) for m in parse_transcript("no role prefix")] == [("user", "no role prefix")]


def test_a_playground_request_replays_with_its_messages_and_parameters(tmp_path: Path) -> None:
    conductor = _conductor(tmp_path)
    try:
        store = SessionStore.for_log(conductor.log)
        variant = Variant(
            provider="alpha",
            model="alpha-1",
            temperature=0.2,
            max_tokens=77,
            top_p=0.9,
            stop=("END",),
            seed=7,
            system="Be brief.",
        )
        response = chat_in_a_session(conductor, store, variant, ["First question", "Second question"])

        replay = replay_of(conductor.log, store, response.metadata.id)
        assert replay.parameters_known and replay.target == "alpha/alpha-1"
        assert replay.variant == variant
        assert [(m.role.value, m.content) for m in replay.messages] == [
            ("system", "Be brief."),
            ("user", "First question"),
            ("assistant", "Alpha says =1+1."),
            ("user", "Second question"),
        ]
        assert replay.history == [("First question", "Alpha says =1+1.")] and replay.prompt == "Second question"
    finally:
        conductor.close()


def test_a_request_known_only_to_the_log_replays_its_transcript_with_default_parameters(tmp_path: Path) -> None:
    conductor = _conductor(tmp_path)
    try:
        request = Variant(provider="beta", model="beta-1", temperature=0.0, system="Sys").request(
            [
                ChatMessage(role=MessageRole.user, content="Q1"),
                ChatMessage(role=MessageRole.assistant, content="A1"),
                ChatMessage(role=MessageRole.user, content="Q2"),
            ]
        )
        response = conductor.chat(request)
        replay = replay_of(conductor.log, None, response.metadata.id)
        assert not replay.parameters_known and "keeps no sampling parameters" in replay.note
        assert replay.variant.system == "Sys" and replay.variant.temperature == Variant(provider="beta").temperature
        assert replay.history == [("Q1", "A1")] and replay.prompt == "Q2"
        with pytest.raises(ReplayError, match="no request"):
            replay_of(conductor.log, None, "req_missing")
    finally:
        conductor.close()


def test_a_blind_round_s_request_replays_with_its_prompt_and_parameters(tmp_path: Path) -> None:
    conductor = _conductor(tmp_path)
    try:
        arena = Arena(conductor.log)
        contestants = [v.model_copy(update={"temperature": 0.3, "max_tokens": 256}) for v in variants()]
        match = arena.start("Which is best?", contestants)
        list(arena.answers(conductor, match.id))
        [answer] = [a for a in arena.vote(match.id, "tie").answers if a.target == "beta/beta-1"]

        replay = replay_of(conductor.log, SessionStore.for_log(conductor.log), answer.request_id)
        assert replay.parameters_known and "blind round (Arena)" in replay.note
        assert replay.variant == contestants[1]  # max_tokens 256, not the default 1000
        assert [(m.role.value, m.content) for m in replay.messages] == [("user", "Which is best?")]
    finally:
        conductor.close()


def test_an_experiment_cell_s_request_replays_with_its_rendered_prompt_and_parameters(tmp_path: Path) -> None:
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import ExperimentStore
    from conductor_core.workbench.runner import start_run

    conductor = _conductor(tmp_path)
    try:
        store = ExperimentStore(conductor.log)
        arms = [
            Variant(provider="alpha", model="alpha-1", temperature=0.1, max_tokens=64, system="One word."),
            Variant(provider="alpha", model="alpha-1", temperature=0.9, max_tokens=64, system="One word."),
        ]
        experiment = store.create("Capitals", "Capital of {{country}}?", read_dataset("country\nFrance\nPeru\n"), arms)
        handle = start_run(conductor, store, experiment.id)
        assert handle.wait(30)
        [cell] = [c for c in store.cells(handle.run_id) if c.row == 1 and c.variant == 1]

        replay = replay_of(conductor.log, None, cell.request_id)
        assert replay.parameters_known and "experiment “Capitals”, run 1, variant alpha/alpha-1 · T=0.9" in replay.note
        assert replay.variant == arms[1]
        assert [(m.role.value, m.content) for m in replay.messages] == [
            ("system", "One word."),
            ("user", "Capital of Peru?"),
        ]
    finally:
        conductor.close()


def test_with_prompt_logging_off_a_replay_is_refused_with_the_reason(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, log_prompts=False)
    conductor = Conductor(settings, extra_providers=[ScriptedProvider("alpha", models=["alpha-1"])])
    try:
        response = conductor.chat(
            Variant(provider="alpha").request([ChatMessage(role=MessageRole.user, content="secret")])
        )
        with pytest.raises(ReplayError, match="CONDUCTOR_LOG_PROMPTS=false"):
            replay_of(conductor.log, None, response.metadata.id)
    finally:
        conductor.close()


def test_comparison_links_round_trip(tmp_path: Path) -> None:
    _conductor(tmp_path).close()  # registers the provider names the variants use
    link = comparison_link(
        "http://127.0.0.1:8501/compare?session=ses_1",
        [Variant(provider="openai", model="gpt-4o-mini"), Variant(provider="local", model="gemma-3-270m")],
        "Why is the sky blue? & 100% sure",
    )
    parts = urlsplit(link)
    assert parts.path == "/compare" and "session" not in parts.query
    query = parse_qs(parts.query)
    assert query == {
        "compare": ["openai/gpt-4o-mini,local/gemma-3-270m"],
        "prompt": ["Why is the sky blue? & 100% sure"],
    }
    assert parse_targets(query["compare"][0] + ", anthropic ,") == [
        ("openai", "gpt-4o-mini"),
        ("local", "gemma-3-270m"),
        ("anthropic", None),
    ]


def test_compare_votes_are_in_the_exports_too(database_url, tmp_path: Path) -> None:
    """A Compare round's vote (by the labels its columns had) on the answers it showed."""
    conductor = _conductor(tmp_path, database_url)
    try:
        store = SessionStore.for_log(conductor.log)
        session = store.create("compare", variants())
        labels = store.get(session.id).labels
        for prompt, vote in (("Round one", labels[1]), ("Round two", "both_bad")):
            conversation = store.conversation(session.id)
            parent = conversation.turns[-1].id if conversation.turns else None
            turn, answers = store.add_turn(session.id, prompt, parent_id=parent)
            for answer in answers:
                response = conductor.chat(answer.variant.request([ChatMessage(role=MessageRole.user, content=prompt)]))
                store.finish(answer.id, "done", content=response.content, response=response)
            store.set_vote(turn.id, vote, f"vote_{prompt[-3:]}")
        rows = json.loads(conductor.log.export("json", verdicts=store.verdicts))
        got = {(r["prompt"], r["provider"]): (r["vote"], r["vote_id"]) for r in rows}
        assert got == {
            ("user: Round one", "alpha"): ("not best", "vote_one"),
            ("user: Round one", "beta"): ("best", "vote_one"),
            ("user: Round two", "alpha"): ("all bad", "vote_two"),
            ("user: Round two", "beta"): ("all bad", "vote_two"),
        }
    finally:
        conductor.close()
