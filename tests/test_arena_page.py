"""The Arena page, the Dashboard's leaderboard and the AUTO policy selector under AppTest, with
the scripted providers of tests/playground_fakes.py (no SDK patched)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import tests.playground_fakes as fakes  # the same module object the app imports
from conductor_core.errors import AuthenticationError
from conductor_core.providers.spec import provider_variables
from conductor_core.testing.fakes import Reply
from playground import state as playground_state
from playground.state import FACTORY_ENV

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "playground" / "app.py"
CANARY = "sk-6YVbgvpP_uM8UavD64sogJGD"
NAMES = ("alpha", "beta", "gamma")

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def arena_page(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(FACTORY_ENV, "tests.playground_fakes:build_conductor")
    for name in (
        *provider_variables(),  # every provider's key and base URL (their specs)
        "CONDUCTOR_CONFIG",
        "CONDUCTOR_DATABASE_URL",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("views/arena.py").run()
    assert not at.exception, at.exception
    yield at
    st.cache_resource.clear()
    while fakes.CONDUCTORS:
        fakes.CONDUCTORS.pop().close()


def wait_for_round(at: AppTest, timeout_s: float = 30.0) -> AppTest:
    """Until every answer of the round in the URL has ended (the page polls; AppTest does not)."""
    match_id = at.query_params["match"]
    arena = playground_state.arena()
    deadline = time.monotonic() + timeout_s
    while not arena.finished(match_id):
        assert time.monotonic() < deadline, "the blind round did not finish"
        time.sleep(0.05)
    at.run()
    assert not at.exception, at.exception
    return at


def everything_shown(at: AppTest) -> str:
    """Every text and label on the page, Markdown escapes taken out."""
    return ("\n".join(str(getattr(e, "value", "")) for e in at) + "\n".join(b.label for b in at.button)).replace(
        "\\", ""
    )


def start_round(at: AppTest, prompt: str) -> AppTest:
    at.text_area(key="arena_prompt").set_value(prompt)
    next(b for b in at.get("form_submit_button") if b.label == "Start blind round").click().run()
    assert not at.exception, at.exception
    return wait_for_round(at)


def test_a_round_is_blind_a_failure_says_nothing_of_who_and_the_vote_reveals(arena_page):
    at = arena_page
    # Every ready provider is a contestant by default (three here).
    assert at.multiselect(key="arena_targets").value == ["alpha/alpha-small", "beta/beta-1", "gamma/gamma-1"]
    fakes.FAKES["beta"].script(AuthenticationError(f"bad key {CANARY} for beta", provider="beta", status_code=401))
    start_round(at, "Name a colour.")
    shown = everything_shown(at)
    assert "Alpha answers first." in shown and "Gamma is free." in shown
    assert sum("failed: it is not part of the vote" in w.value for w in at.warning) == 1
    for secret in (*NAMES, CANARY, "401", "bad key"):
        assert secret not in shown.replace("Alpha answers", "").replace("Gamma is free", ""), secret
    letters = [b.label.split()[0] for b in at.button if b.label.endswith(" is best")]
    assert len(letters) == 2  # the failed answer cannot be voted for
    assert {"Tie", "All bad"} <= {b.label for b in at.button}

    # The same round from its URL in a new tab: still blind, nothing asked again.
    calls = {name: len(fakes.FAKES[name].calls) for name in NAMES}
    other = AppTest.from_file(str(APP), default_timeout=60)
    other.query_params["match"] = at.query_params["match"]
    other.switch_page("views/arena.py").run()
    assert [b.label for b in other.button if b.label.endswith(" is best")] == [
        f"{letter} is best" for letter in letters
    ]
    assert {name: len(fakes.FAKES[name].calls) for name in NAMES} == calls

    next(b for b in at.button if b.label == "Tie").click().run()
    assert not at.exception, at.exception
    assert any("Your vote: a tie between" in s.value for s in at.success)
    shown = everything_shown(at)
    assert all(f"{name}/" in shown for name in NAMES)
    assert "Not judged: error (authentication)" in shown
    assert CANARY not in shown
    reveal = playground_state.arena().reveal(at.query_params["match"])
    assert reveal.choice == "tie" and sum(a.judged for a in reveal.answers) == 2


def test_a_round_with_one_answer_cannot_be_voted_but_can_be_revealed(arena_page):
    at = arena_page
    at.multiselect(key="arena_targets").set_value(["alpha/alpha-small", "beta/beta-1"]).run()
    fakes.FAKES["beta"].script(AuthenticationError("no", provider="beta", status_code=401))
    start_round(at, "Hello?")
    assert not [b for b in at.button if b.label.endswith(" is best")]
    assert any("Fewer than two answers arrived complete" in i.value for i in at.info)
    next(b for b in at.button if b.label == "Reveal without a vote").click().run()
    assert "beta/beta-1" in everything_shown(at)
    assert not playground_state.arena().voted(at.query_params["match"])


def test_a_round_needs_a_prompt_and_two_contestants(arena_page):
    at = arena_page
    at.multiselect(key="arena_targets").set_value(["alpha/alpha-small"]).run()
    at.text_area(key="arena_prompt").set_value("Hi")
    next(b for b in at.get("form_submit_button") if b.label == "Start blind round").click().run()
    assert any("Choose 2 to 4 contestants" in w.value for w in at.warning)
    at.multiselect(key="arena_targets").set_value(["alpha/alpha-small", "gamma/gamma-1"]).run()
    at.text_area(key="arena_prompt").set_value("   ")
    next(b for b in at.get("form_submit_button") if b.label == "Start blind round").click().run()
    assert any("Write a prompt first" in w.value for w in at.warning)
    assert "match" not in at.query_params


def test_the_leaderboard_says_how_to_get_ratings_then_shows_them(arena_page):
    at = arena_page
    at.switch_page("views/dashboard.py").run()
    assert any("No blind votes yet. Vote in the Arena" in i.value for i in at.info)
    at.switch_page("views/arena.py").run()
    fakes.FAKES["beta"].script(Reply(text="Beta answers too.", latency_s=0.0))
    at.multiselect(key="arena_targets").set_value(["alpha/alpha-small", "beta/beta-1"]).run()
    start_round(at, "One?")
    next(b for b in at.button if b.label == "A is best").click().run()
    winner = playground_state.arena().reveal(at.query_params["match"]).winner.target
    at.switch_page("views/dashboard.py").run()
    assert not at.exception, at.exception
    board = next(d for d in at.dataframe if "Blind votes" in d.value.columns)
    table = board.value.set_index("Target")
    assert set(table.index) == {"alpha/alpha-small", "beta/beta-1"}
    assert table.loc[winner, "W / L / T"] == "1 / 0 / 0" and table.loc[winner, "Blind votes"] == 1
    assert (table["95% CI"] == "too few votes (1 < 10)").all()


def test_the_auto_policy_selector_offers_preferred(arena_page):
    at = arena_page
    at.switch_page("views/chat.py").run()
    at.sidebar.selectbox(key="chat_provider").set_value("auto").run()
    policy = next(s for s in at.sidebar.selectbox if s.label == "AUTO policy")
    assert "Preferred" in policy.options
    assert "highest rated in the Arena" in policy.help
    policy.set_value("preferred").run()
    for n in range(4):  # the first three explore a provider with no history each
        at.chat_input[0].set_value(f"Who answers? {n}").run()
        assert playground_state.worker().wait_all(30)
        at.run()
        assert not at.exception, at.exception
    routing = [c.value for c in at.caption if "AUTO (preferred) chose" in c.value]
    assert routing and "too few blind votes (0 < 10)" in routing[-1].replace("\\", "")
