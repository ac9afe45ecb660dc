"""AUTO's `preferred` policy: providers ranked by their blind-vote rating (real arena matches,
real votes, the real Bradley–Terry fit), `balanced` where a target has too few votes, the
reason saying which; the ratings cached and refitted only when the votes change."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from conductor_core.config import load_settings
from conductor_core.models import ChatMessage, ChatRequest, RoutingPolicy
from conductor_core.router import Conductor
from conductor_core.routing.ranking import Score
from conductor_core.testing.fakes import ScriptedProvider
from conductor_core.workbench.arena import Arena, answers_table
from conductor_core.workbench.ratings import Rating
from conductor_core.workbench.variants import Variant


@pytest.fixture
def conductor(tmp_path):
    providers = [
        ScriptedProvider("liked", reply="People like this.", models=["liked-1"]),
        ScriptedProvider("quick", reply="Fast and cheap.", models=["quick-1"]),
    ]
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, max_retries=0)
    made = Conductor(settings, extra_providers=providers)
    yield made
    made.close()


def cast(arena: Arena, conductor: Conductor, winner: str | None, targets=("liked/liked-1", "quick/quick-1")) -> None:
    """One blind match answered by both, and a vote for `winner` (a target) or a tie."""
    variants = [Variant(provider=t.split("/")[0], model=t.split("/")[1]) for t in targets]
    match = arena.start("Which is better?", variants)
    events = list(arena.answers(conductor, match.id))
    assert sum(e.finished for e in events) == len(targets)
    if winner is None:
        arena.vote(match.id, "tie")
        return
    a = answers_table.c
    with arena.engine.connect() as conn:
        slot = conn.execute(select(a.slot).where(a.match_id == match.id, a.target == winner)).scalar_one()
    arena.vote(match.id, "ABCD"[slot])


def warm_quick_first(conductor: Conductor) -> None:
    """Give both a history in which `quick` is clearly the better balance."""
    from conductor_core.models import AttemptRecord

    for _ in range(5):
        conductor.metrics.record(
            AttemptRecord(request_id="r", provider="quick", model="quick-1", status="ok", latency_ms=20.0)
        )
        conductor.metrics.record(
            AttemptRecord(request_id="r", provider="liked", model="liked-1", status="ok", latency_ms=900.0)
        )


def ask() -> ChatRequest:
    return ChatRequest(
        provider="auto", policy=RoutingPolicy.preferred, messages=[ChatMessage(role="user", content="hi")]
    )


def test_too_few_votes_falls_back_to_balanced_and_says_so(conductor):
    arena = Arena(conductor.log)
    warm_quick_first(conductor)
    for _ in range(3):
        cast(arena, conductor, "liked/liked-1")
    conductor.core.ratings.refresh()
    response = conductor.chat(ask())
    assert response.metadata.provider == "quick"  # balanced's choice, not the 3-vote favourite
    assert response.routing.reason.startswith(
        "too few blind votes (3 < 10): best balance of speed, reliability and cost"
    )


def test_enough_votes_ranks_by_rating_and_quotes_it(conductor):
    arena = Arena(conductor.log)
    warm_quick_first(conductor)
    for n in range(12):
        cast(arena, conductor, "liked/liked-1" if n % 4 else None)  # 9 wins, 3 ties
    conductor.core.ratings.refresh()
    board = conductor.core.ratings.leaderboard()
    liked = board.get("liked/liked-1")
    assert liked is not None and liked.enough and liked.votes == 12
    response = conductor.chat(ask())
    assert response.metadata.provider == "liked"
    assert response.routing.reason == f"highest rated: {liked.rating:,.0f} ± {liked.margin:,.0f} from 12 blind votes"
    ranked = conductor.rank(ask().model_copy(), RoutingPolicy.preferred)
    assert [c.provider.name for c in ranked] == ["liked", "quick"]


def test_threshold_is_a_setting(tmp_path):
    providers = [ScriptedProvider("liked", models=["liked-1"]), ScriptedProvider("quick", models=["quick-1"])]
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, preferred_min_votes=2)
    conductor = Conductor(settings, extra_providers=providers)
    try:
        arena = Arena(conductor.log)
        warm_quick_first(conductor)
        cast(arena, conductor, "liked/liked-1")
        cast(arena, conductor, "liked/liked-1")
        conductor.core.ratings.refresh()
        response = conductor.chat(ask())
        assert response.metadata.provider == "liked"
        assert response.routing.reason.startswith("highest rated: ") and response.routing.reason.endswith(
            "from 2 blind votes"
        )
    finally:
        conductor.close()


def test_ratings_are_fitted_once_and_refitted_only_when_votes_change(conductor):
    arena = Arena(conductor.log)
    ratings = conductor.core.ratings
    cast(arena, conductor, "liked/liked-1")
    ratings.get("liked/liked-1")  # the first read loads
    fits = ratings.fits
    assert fits == 1
    for _ in range(50):
        conductor.rank(ask(), RoutingPolicy.preferred)
    assert not ratings.refresh()  # nothing changed: no refit
    assert ratings.fits == fits
    cast(arena, conductor, "quick/quick-1")
    assert ratings.refresh()  # a new vote: refitted
    assert ratings.fits == fits + 1
    assert ratings.get("quick/quick-1").votes == 2


def test_a_request_never_refits_on_its_own_thread(conductor, monkeypatch):
    """Past the first load, a due check runs in a background thread: the request only reads."""
    import threading

    arena = Arena(conductor.log)
    cast(arena, conductor, "liked/liked-1")
    ratings = conductor.core.ratings
    ratings.get("liked/liked-1")
    calls: list[str] = []
    original = ratings.refresh

    def spy() -> bool:
        calls.append(threading.current_thread().name)
        return original()

    monkeypatch.setattr(ratings, "refresh", spy)
    ratings._checked = float("-inf")  # due now
    conductor.rank(ask(), RoutingPolicy.preferred)
    for thread in threading.enumerate():
        if thread.name == "conductor-ratings":
            thread.join(5)
    assert calls == ["conductor-ratings"]


def test_other_policies_do_not_read_ratings(conductor):
    ratings = conductor.core.ratings
    conductor.chat(
        ChatRequest(provider="auto", policy=RoutingPolicy.balanced, messages=[ChatMessage(role="user", content="hi")])
    )
    assert ratings.fits == 0


def test_reasons_are_pure_functions_of_the_score():
    rated = Rating(
        subject="a/m",
        rating=1112.4,
        ci_low=1072.0,
        ci_high=1152.0,
        votes=57,
        wins=40,
        losses=10,
        ties=7,
        enough=True,
        min_votes=10,
    )
    few = rated.model_copy(update={"votes": 3, "enough": False})
    base = dict(samples=5, latency_ms=200.0, latency_kind="latency", success=1.0, cost=0.0)
    assert (
        Score(**base, rating=rated).explain(RoutingPolicy.preferred) == "highest rated: 1,112 ± 40 from 57 blind votes"
    )
    assert Score(**base, rating=few).explain(RoutingPolicy.preferred) == (
        "too few blind votes (3 < 10): best balance of speed, reliability and cost: p50 latency 200 ms, 100% success, free"
    )
    assert Score(**base).explain(RoutingPolicy.preferred).startswith("too few blind votes (0 < 10): ")


def test_the_gateway_takes_the_preferred_policy_and_says_why(tmp_path):
    """Over HTTP with the openai client: `policy: preferred` (extra_body) is accepted and
    routed by rating; the completion's `conductor.reason` quotes the rating."""
    import openai

    from gateway.main import create_app
    from tests.test_gateway import serve

    providers = [
        ScriptedProvider("liked", reply="People like this.", models=["liked-1"]),
        ScriptedProvider("quick", reply="Fast and cheap.", models=["quick-1"]),
    ]
    settings = load_settings(
        _env_file=None, local_enabled=False, data_dir=tmp_path, max_retries=0, preferred_min_votes=3
    )
    conductor = Conductor(settings, extra_providers=providers, source="gateway")
    try:
        arena = Arena(conductor.log)
        warm_quick_first(conductor)
        for _ in range(3):
            cast(arena, conductor, "liked/liked-1")
        with serve(create_app(conductor)) as url:
            client = openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=30)
            completion = client.chat.completions.create(
                model="auto", messages=[{"role": "user", "content": "hi"}], extra_body={"policy": "preferred"}
            )
            info = completion.model_extra["conductor"]
            assert info["provider"] == "liked" and info["policy"] == "preferred"
            assert info["reason"].startswith("highest rated: ") and info["reason"].endswith("from 3 blind votes")
            with pytest.raises(openai.BadRequestError):
                client.chat.completions.create(
                    model="auto", messages=[{"role": "user", "content": "hi"}], extra_body={"policy": "liked"}
                )
    finally:
        conductor.close()


def test_a_core_given_no_ratings_ranks_preferred_as_balanced(tmp_path):
    """Routing knows ratings only through the source it is given: without one, no target is
    rated, and the reason says so."""
    import asyncio

    from conductor_core.routing import AsyncConductor

    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, max_retries=0)
    core = AsyncConductor(settings, extra_providers=[ScriptedProvider("solo", models=["solo-1"])])
    try:
        response = asyncio.run(core.chat(ask()))
        assert response.routing.reason == "no history yet for solo: trying it to learn its speed"
        [candidate] = core.rank(ask(), RoutingPolicy.preferred)
        assert candidate.reason.startswith("too few blind votes (0 < 10): best balance of speed, reliability and cost")
    finally:
        asyncio.run(core.aclose())


def test_the_gateway_built_from_the_environment_ranks_by_the_arena_votes(tmp_path, monkeypatch):
    """`python -m gateway` builds its own core (no Conductor given to `create_app`): it reads the
    same blind votes as the playground, so `preferred` routes by them."""
    from fastapi.testclient import TestClient

    from conductor_core.testing.protocol_servers import OpenAIServer
    from gateway.main import create_app
    from tests.browser_support import KEY_VARS

    with (
        OpenAIServer(reply="People like this.", models=["liked-1"]) as liked,
        OpenAIServer(reply="Fast and cheap.", models=["quick-1"]) as quick,
    ):
        config = tmp_path / "conductor.toml"
        config.write_text(
            "".join(
                f'[endpoints.{name}]\nbase_url = "{server.url}"\nmodels = ["{name}-1"]\n'
                for name, server in (("liked", liked), ("quick", quick))
            )
        )
        for var in KEY_VARS:
            monkeypatch.delenv(var, raising=False)
        monkeypatch.setenv("CONDUCTOR_CONFIG", str(config))
        monkeypatch.setenv("CONDUCTOR_DATA_DIR", str(tmp_path / "data"))
        monkeypatch.setenv("CONDUCTOR_LOCAL_ENABLED", "false")
        monkeypatch.setenv("CONDUCTOR_PREFERRED_MIN_VOTES", "3")
        monkeypatch.setenv("CONDUCTOR_API_KEY", "2wukQKqZViwZooD2tcQjUvdx6kZEUjTSbQfz")
        playground = Conductor(load_settings(_env_file=None))
        try:
            arena = Arena(playground.log)
            for _ in range(3):
                cast(arena, playground, "liked/liked-1")
        finally:
            playground.close()

        with TestClient(create_app()) as client:  # the lifespan builds the core from the environment
            answer = client.post(
                "/v1/chat/completions",
                json={"model": "auto", "messages": [{"role": "user", "content": "hi"}], "policy": "preferred"},
                headers={"Authorization": "Bearer 2wukQKqZViwZooD2tcQjUvdx6kZEUjTSbQfz"},
            )
        assert answer.status_code == 200, answer.text
        info = answer.json()["conductor"]
        assert info["provider"] == "liked"
        assert info["reason"].startswith("highest rated: ") and info["reason"].endswith("from 3 blind votes")
