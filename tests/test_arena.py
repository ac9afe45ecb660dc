"""The blind arena: answers tagged by letter only, a vote, the reveal, votes linked to the log
rows they judged, and the leaderboard from every blind vote. On SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest
from workbench_support import cloud_conductor

from conductor_core.config import load_settings
from conductor_core.providers.spec import provider_specs
from conductor_core.router import Conductor
from conductor_core.testing.fakes import ScriptedProvider
from conductor_core.workbench.arena import Arena, ArenaError, BlindEvent
from conductor_core.workbench.variants import Variant

SPECS = provider_specs()
# What must not show before the vote: the providers' names and the models that answer.
NAMES = (
    "openai",
    "anthropic",
    "gemini",
    "claude",
    *(SPECS[p].default_model for p in ("openai", "anthropic", "gemini")),
)


def drain(arena: Arena, conductor: Conductor, match_id: str) -> dict[str, str]:
    texts: dict[str, str] = {}
    finished: dict[str, bool] = {}
    for event in arena.answers(conductor, match_id):
        assert isinstance(event, BlindEvent)
        if event.text:
            texts[event.letter] = texts.get(event.letter, "") + event.text
        if event.finished:
            finished[event.letter] = event.failed
    return {letter: ("FAILED" if failed else texts.get(letter, "")) for letter, failed in finished.items()}


def test_a_blind_match_over_real_sdks_votes_then_reveals(clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    try:
        arena = Arena(conductor.log)
        variants = [
            Variant(provider="openai", model=SPECS["openai"].default_model),
            Variant(provider="anthropic"),
            Variant(provider="gemini"),
        ]
        match = arena.start("Capital of France?", variants)
        assert match.letters == ("A", "B", "C")
        blind = [match.model_dump_json()]
        texts: dict[str, str] = {}
        for event in arena.answers(conductor, match.id):
            blind.append(event.model_dump_json())
            if event.text:
                texts[event.letter] = texts.get(event.letter, "") + event.text
        # Before the vote, nothing the page gets names a provider or a model.
        for name in NAMES:
            assert all(name not in item.lower() for item in blind), name
        assert sorted(texts.values()) == sorted(s.reply for s in clouds.values())
        with pytest.raises(ArenaError, match="vote first"):
            arena.reveal(match.id)
        with pytest.raises(ArenaError, match="vote for one of A, B, C"):
            arena.vote(match.id, "D")

        reveal = arena.vote(match.id, "B")
        assert reveal.choice == "B" and reveal.winner is not None
        assert {a.letter: a.answer for a in reveal.answers} == texts
        assert sorted(a.variant.provider for a in reveal.answers) == ["anthropic", "gemini", "openai"]
        assert reveal.describe() == f"B was {reveal.winner.label}"
        # The verdict is stored with the request_id of every answer it judged.
        logged = {r.request_id: r for r in conductor.log.records()}
        for answer in reveal.answers:
            assert answer.judged and logged[answer.request_id].answer == answer.answer
            assert answer.target == f"{answer.variant.provider}/{logged[answer.request_id].model}"
        with pytest.raises(ArenaError, match="already has a vote"):
            arena.vote(match.id, "A")
        assert arena.reveal(match.id) == reveal
    finally:
        conductor.close()


def test_a_failed_answer_is_shown_failed_without_a_reason_and_not_judged(clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    clouds["gemini"].set_down(True)
    try:
        arena = Arena(conductor.log)
        match = arena.start(
            "Hi", [Variant(provider="openai"), Variant(provider="gemini"), Variant(provider="anthropic")]
        )
        events = list(arena.answers(conductor, match.id))
        failed = [e for e in events if e.failed]
        assert len(failed) == 1 and failed[0].finished and failed[0].text is None
        assert all("unavailable" not in e.model_dump_json() for e in events)
        with pytest.raises(ArenaError, match="already been answered"):
            list(arena.answers(conductor, match.id))
        with pytest.raises(ArenaError, match="vote for one of"):
            arena.vote(match.id, failed[0].letter)  # a failed answer cannot win
        reveal = arena.vote(match.id, "tie")
        judged = {a.variant.provider for a in reveal.answers if a.judged}
        assert judged == {"openai", "anthropic"}
        assert reveal.describe().startswith("a tie between ")

        lonely = arena.start("Hi", [Variant(provider="openai"), Variant(provider="gemini")])
        list(arena.answers(conductor, lonely.id))
        with pytest.raises(ArenaError, match="fewer than two answers"):
            arena.vote(lonely.id, "all_bad")
    finally:
        conductor.close()


def scripted(tmp_path: Path, database_url: str | None, *providers: ScriptedProvider) -> Conductor:
    settings = load_settings(
        _env_file=None, local_enabled=False, data_dir=tmp_path / "data", database_url=database_url, max_retries=0
    )
    return Conductor(settings, extra_providers=list(providers))


def test_votes_are_stored_and_feed_the_leaderboard(database_url, tmp_path: Path) -> None:
    good, meh = ScriptedProvider("good", reply="a fine answer"), ScriptedProvider("meh", reply="a weak answer")
    conductor = scripted(tmp_path, database_url, good, meh)
    try:
        arena = Arena(conductor.log)
        orders = set()
        for n in range(24):
            match = arena.start(f"question {n}", [Variant(provider="good"), Variant(provider="meh")])
            answers = drain(arena, conductor, match.id)
            orders.add(tuple(sorted(answers, key=lambda letter: answers[letter])))
            # The voter prefers the fine answer 3 times in 4, and calls every fourth a tie.
            best = next(
                letter for letter, text in answers.items() if text == ("a fine answer" if n % 4 else "a weak answer")
            )
            arena.vote(match.id, "tie" if n % 8 == 0 else best)
        assert len(orders) == 2  # the letters were shuffled: each order happened

        again = Arena(conductor.log)  # as another process would read them
        judgements = again.judgements()
        assert len(judgements) == 24 and {j.subjects for j in judgements} <= {
            ("good/good-model", "meh/meh-model"),
            ("meh/meh-model", "good/good-model"),
        }
        board = again.leaderboard(min_votes=10, seed=1)
        top, second = board.ratings
        assert (top.subject, second.subject) == ("good/good-model", "meh/meh-model")
        assert top.rating > 1000 > second.rating and top.votes == 24 and top.ties == 3
        assert top.describe().endswith("from 24 blind votes")
        assert again.leaderboard(by="provider").ratings[0].subject == "good"
        assert board == again.leaderboard(min_votes=10, seed=1)
        assert len(again.votes(limit=5)) == 5
    finally:
        conductor.close()


class WordByWord(ScriptedProvider):
    """Streams its reply a word every 50 ms, so a reader can leave in the middle."""

    async def _stream(self, request, model):
        async for piece in super()._stream(request, model):
            if isinstance(piece, str):
                await asyncio.sleep(0.05)
            yield piece


def test_closing_the_answers_early_cancels_the_calls_in_flight(tmp_path: Path) -> None:
    conductor = scripted(tmp_path, None, WordByWord("slow", reply="one two three four five six seven eight"))
    try:
        arena = Arena(conductor.log)
        match = arena.start("Hi", [Variant(provider="slow"), Variant(provider="slow", temperature=0)])
        events = arena.answers(conductor, match.id)
        assert next(events).text
        assert not arena.finished(match.id)
        events.close()  # the page went away (a rerun, a closed tab)
        deadline = time.monotonic() + 60
        while not arena.finished(match.id) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert arena.finished(match.id)
        with pytest.raises(ArenaError, match="fewer than two answers"):
            arena.vote(match.id, "tie")
        cancelled = conductor.log.records(status="incomplete")
        assert len(cancelled) == 2 and {r.error_type for r in cancelled} == {"cancelled"}
    finally:
        conductor.close()


def test_bad_matches_are_refused(tmp_path: Path) -> None:
    conductor = scripted(tmp_path, None, ScriptedProvider("a"))
    try:
        arena = Arena(conductor.log)
        with pytest.raises(ArenaError, match="2 to 4"):
            arena.start("Hi", [Variant(provider="a")])
        with pytest.raises(ArenaError, match="'auto'"):
            arena.start("Hi", [Variant(provider="auto"), Variant(provider="a")])
        with pytest.raises(ArenaError, match="write a prompt"):
            arena.start("  ", [Variant(provider="a"), Variant(provider="a", temperature=0)])
        with pytest.raises(ArenaError, match="no match"):
            arena.vote("arena_nope", "A")
    finally:
        conductor.close()
