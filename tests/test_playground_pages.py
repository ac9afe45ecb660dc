"""The playground's pages under `streamlit.testing.v1.AppTest`, with scripted providers
injected through the playground's factory (tests/playground_fakes.py): no SDK is patched."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

import tests.playground_fakes as fakes  # the same module object the app imports
from conductor_core.errors import AuthenticationError, ProviderUnavailableError
from conductor_core.models import AttemptRecord, Vote, utcnow
from conductor_core.testing.fakes import Reply
from conductor_core.testing.protocol_servers import GeminiServer, OpenAIServer
from playground import charts, controls
from playground import dashboard_data as dd
from playground import state as playground_state
from tests.playground_support import settle_workers  # `env`, the fixture, is there too

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "playground" / "app.py"

pytestmark = pytest.mark.timeout(120)


def new_session(**query) -> AppTest:
    """A new browser tab; `session=...` opens that URL."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(env) -> AppTest:
    return new_session()


def conductor():
    return fakes.CONDUCTORS[-1]


def settle(at: AppTest) -> AppTest:
    """What a person sees once the answers have arrived (the page refreshes itself)."""
    settle_workers()
    at.run()
    assert not at.exception, at.exception
    return at


def plain(text: str) -> str:
    return text.replace("\\", "")


def send(at: AppTest, text: str, provider: str | None = None) -> AppTest:
    if provider is not None:
        at.sidebar.selectbox(key="chat_provider").set_value(provider).run()
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return settle(at)


def assistant_messages(at: AppTest):
    return [m for m in at.chat_message if m.name == "assistant"]


def user_texts(at: AppTest) -> list[str]:
    return [t.value for m in at.chat_message if m.name == "user" for t in m.text]


def answer_text(message) -> list[str]:
    return [m.value for m in message.markdown if "-badge[" not in m.value]


def figures(message) -> str:
    return plain(next(m.value for m in message.markdown if "badge[:material/dns:" in m.value))


def button(at_or_block, label: str, n: int = 0):
    return [b for b in at_or_block.button if b.label == label][n]


def listed(at: AppTest) -> list[str]:
    """The sessions the sidebar lists, by title (each button also says when it was used: "title · 14:05")."""
    return [b.label.split(" · ")[0] for b in at.sidebar.button if " · " in b.label]


def session_button(at: AppTest, title: str):
    return next(b for b in at.sidebar.button if b.label.split(" · ")[0] == title)


def no_traceback(at: AppTest) -> None:
    assert not at.exception, at.exception
    for element in [*at.error, *at.markdown, *at.caption]:
        assert "Traceback" not in str(element.value)


def contents(call) -> list[str]:
    return [m.content for m in call.messages]


# --- Playground (chat) ---------------------------------------------------------------------


def test_chat_answer_appears_with_its_figures(app):
    send(app, "Hello there", provider="alpha")
    answer = assistant_messages(app)[-1]
    assert answer_text(answer) == ["Alpha answers first."]
    shown = figures(answer)
    for expected in ("alpha · alpha-small", " ms]", "first token", "tok/s", " in → ", " out]", "payments: $0.0000"):
        assert expected in shown, shown
    # The conversation survives reruns (and a page switch and back).
    app.run()
    app.switch_page("views/dashboard.py").run()
    app.switch_page("views/chat.py").run()
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    assert app.sidebar.selectbox(key="chat_provider").value == "alpha"
    assert app.query_params["session"].startswith("ses_")


def test_an_example_prompt_starts_the_conversation(app):
    app.sidebar.selectbox(key="chat_provider").set_value("gamma").run()
    app.pills(key="chat_example").set_value("Write a haiku about latency.").run()
    settle(app)
    no_traceback(app)
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    assert fakes.FAKES["gamma"].calls[-1].messages[-1].content == "Write a haiku about latency."
    assert len(fakes.FAKES["gamma"].calls) == 1  # sent once, not again on later runs
    assert not app.pills  # the examples make way for the conversation


def test_chat_lists_models_and_sends_parameters(app):
    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
    model = app.sidebar.selectbox(key="chat_model_alpha")
    assert model.options == ["alpha-small", "alpha-large"]
    model.set_value("alpha-large").run()
    app.sidebar.slider(key="chat_temperature").set_value(1.5).run()
    app.sidebar.number_input(key="chat_max_tokens").set_value(77).run()
    app.sidebar.number_input(key="chat_top_p").set_value(0.4).run()
    app.sidebar.number_input(key="chat_seed").set_value(1234).run()
    app.sidebar.text_area(key="chat_stop").set_value("END\n\\n\\n").run()
    app.sidebar.text_area(key="chat_system").set_value("Be brief.").run()
    send(app, "Hi")
    request = fakes.FAKES["alpha"].calls[-1]
    assert (request.model, request.temperature, request.max_tokens) == ("alpha-large", 1.5, 77)
    assert (request.top_p, request.seed, request.stop) == (0.4, 1234, ["END", "\n\n"])
    assert request.messages[0].role.value == "system" and request.messages[0].content == "Be brief."
    assert "alpha-large" in figures(assistant_messages(app)[-1])


def test_reload_and_a_second_tab_keep_the_session_and_its_settings(app):
    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
    app.sidebar.slider(key="chat_temperature").set_value(0.25).run()
    app.sidebar.text_area(key="chat_system").set_value("You are a pirate.").run()
    send(app, "First question")
    send(app, "Second question")
    url = app.query_params["session"]
    # A reload is a new browser session on the same URL.
    again = new_session(session=url)
    assert user_texts(again) == ["First question", "Second question"]
    assert answer_text(assistant_messages(again)[-1]) == ["Alpha answers first."]
    assert again.sidebar.selectbox(key="chat_provider").value == "alpha"
    assert again.sidebar.slider(key="chat_temperature").value == 0.25
    assert again.sidebar.text_area(key="chat_system").value == "You are a pirate."
    # Settings changed in one tab reach the other on its next run, and are what it sends.
    again.sidebar.slider(key="chat_temperature").set_value(1.75).run()
    app.run()
    assert app.sidebar.slider(key="chat_temperature").value == 1.75
    send(app, "Third")
    assert fakes.FAKES["alpha"].calls[-1].temperature == 1.75
    settle(again)
    assert user_texts(again) == ["First question", "Second question", "Third"]
    # The sidebar lists it, titled by the first prompt; a new chat starts empty.
    assert "First question" in listed(again)
    button(again.sidebar, "New chat").click().run()
    assert not again.chat_message and "session" not in again.query_params
    session_button(again, "First question").click().run()
    assert user_texts(again) == ["First question", "Second question", "Third"]


def test_sessions_are_searched_renamed_and_deleted(app):
    send(app, "Tell me about zebras", provider="gamma")
    button(app.sidebar, "New chat").click().run()
    send(app, "Now giraffes")
    app.sidebar.text_input(key="chat_search").set_value("zebra").run()
    assert listed(app) == ["Tell me about zebras"]
    app.sidebar.text_input(key="chat_search").set_value("").run()
    sid = app.query_params["session"]
    app.text_input(key=f"rename_{sid}").set_value("Giraffe facts").run()
    button(app, "Rename").click().run()
    assert "Giraffe facts" in listed(app)
    button(app, "Delete this chat").click().run()  # asks first
    assert any("for good" in w.value for w in app.warning) and playground_state.sessions().get(sid) is not None
    button(app, "Cancel").click().run()
    assert playground_state.sessions().get(sid) is not None
    button(app, "Delete this chat").click().run()
    button(app, "Delete chat").click().run()
    no_traceback(app)
    assert not app.chat_message and "Giraffe facts" not in listed(app)
    assert playground_state.sessions().get(sid) is None
    # Its URL, opened later, says so instead of failing.
    gone = new_session(session=sid)
    assert any("does not exist any more" in w.value for w in gone.warning)


def test_chat_keeps_the_conversation_and_sends_it_as_history(app):
    send(app, "First", provider="gamma")
    send(app, "Second")
    send(app, "Third")
    assert [m.name for m in app.chat_message] == ["user", "assistant"] * 3
    last = fakes.FAKES["gamma"].calls[-1]
    assert contents(last) == ["First", "Gamma is free.", "Second", "Gamma is free.", "Third"]


def test_prompts_are_shown_exactly_as_typed(app):
    prompt = "# Big heading\n:red[x] :material/home: $E=mc^2$ **bold**"
    send(app, prompt, provider="gamma")
    assert user_texts(app) == [prompt]  # st.text: no Markdown, directives or LaTeX
    assert not [m for m in app.chat_message[0].markdown if "Big heading" in m.value]
    # The session's title (from the prompt) is literal too, in the sidebar and the header.
    label = next(b.label for b in app.sidebar.button if "Big heading" in b.label)
    assert ":\u2060material/home\\:\u2060" in label  # the shortcode broken by word joiners: shown, not drawn
    assert fakes.FAKES["gamma"].calls[-1].messages[-1].content == prompt


def test_a_failed_turn_is_shown_but_not_sent_again(app):
    from conductor_core.errors import BadRequestError

    send(app, "Hello", provider="alpha")
    fakes.FAKES["alpha"].script(
        BadRequestError(
            "alpha rejected the request (HTTP 400: 3,730 tokens is over the context window)",
            provider="alpha",
            status_code=400,
        )
    )
    send(app, "x" * 20_000)
    assert any("over the context window" in plain(e.value) for e in app.error)
    assert any("not sent as context" in c.value for c in app.caption)
    send(app, "hi")
    assert contents(fakes.FAKES["alpha"].calls[-1]) == ["Hello", "Alpha answers first.", "hi"]
    assert answer_text(assistant_messages(app)[-1]) == ["Alpha answers first."]
    # It stays visible, and can be deleted.
    assert "x" * 20_000 in user_texts(app)
    failed = [m for m in app.chat_message if m.name == "user"][1]
    button(failed, "Delete").click().run()
    assert user_texts(app) == ["Hello", "hi"]


def test_regenerate_with_another_model_keeps_both_answers(app):
    send(app, "Pick a colour", provider="alpha")
    app.sidebar.selectbox(key="chat_model_alpha").set_value("alpha-large").run()
    fakes.FAKES["alpha"].script("Blue, from the large model.")
    button(assistant_messages(app)[0], "Regenerate").click().run()
    settle(app)
    answer = assistant_messages(app)[0]
    assert answer_text(answer) == ["Blue, from the large model."]
    assert "alpha-large" in figures(answer)
    assert any("answer 2/2" in c.value for c in answer.caption)
    assert contents(fakes.FAKES["alpha"].calls[-1]) == ["Pick a colour"]  # the same history, once
    button(answer, "‹").click().run()  # the previous alternative
    answer = assistant_messages(app)[0]
    assert answer_text(answer) == ["Alpha answers first."] and any("answer 1/2" in c.value for c in answer.caption)
    # The next message follows the answer shown.
    send(app, "Why?")
    assert contents(fakes.FAKES["alpha"].calls[-1]) == ["Pick a colour", "Alpha answers first.", "Why?"]


def test_edit_resends_from_there_and_keeps_the_old_branch(app):
    send(app, "Capital of Frnace?", provider="gamma")
    send(app, "And its population?")
    first = [m for m in app.chat_message if m.name == "user"][0]
    first.text_area(key=next(k for k in [w.key for w in first.text_area] if k.startswith("edit_"))).set_value(
        "Capital of France?"
    )
    button(first, "Send edited").click().run()
    settle(app)
    assert user_texts(app) == ["Capital of France?"]
    assert contents(fakes.FAKES["gamma"].calls[-1]) == ["Capital of France?"]
    first = [m for m in app.chat_message if m.name == "user"][0]
    assert any("version 2/2" in c.value for c in first.caption)
    button(first, "‹").click().run()  # back to the first version, with what followed it
    assert user_texts(app) == ["Capital of Frnace?", "And its population?"]


def test_stop_keeps_the_partial_answer_and_the_log_says_cancelled(app):
    slow = fakes.FAKES["beta"]
    slow.script(Reply(text="This answer would take a long time to arrive.", latency_s=1.5))
    app.sidebar.selectbox(key="chat_provider").set_value("beta").run()
    app.chat_input[0].set_value("Take your time").run()
    # While it streams: a Stop button, and the input is disabled (no second message meanwhile).
    assert app.chat_input[0].disabled
    button(app, "Stop").click().run()
    settle(app)
    answer = assistant_messages(app)[-1]
    assert any("Stopped" in c.value for c in answer.caption)
    assert any("not sent as context" in c.value for c in answer.caption)
    assert not app.chat_input[0].disabled
    cancelled = [r for r in conductor().log.records() if r.error_type == "cancelled"]
    assert [r.provider for r in cancelled] == ["beta"]  # stopped while it waited: cancelled at once
    stopped = playground_state.sessions().conversation(app.query_params["session"]).turns[-1].chosen[0]
    assert stopped.request_id == cancelled[0].request_id  # the answer names its log row
    send(app, "Next")
    assert contents(slow.calls[-1]) == ["Next"]  # the stopped turn is not sent


def test_leaving_the_page_while_an_answer_streams_loses_nothing(app):
    fakes.FAKES["beta"].script(Reply(text="Finished while you were away.", latency_s=0.8))
    app.sidebar.selectbox(key="chat_provider").set_value("beta").run()
    app.chat_input[0].set_value("Long question").run()
    app.switch_page("views/dashboard.py").run()
    settle_workers()
    app.switch_page("views/chat.py").run()
    assert answer_text(assistant_messages(app)[-1]) == ["Finished while you were away."]
    assert "beta · beta-1" in figures(assistant_messages(app)[-1])


def test_provider_error_is_a_message_and_the_app_keeps_working(app):
    fakes.FAKES["alpha"].script(
        AuthenticationError("alpha rejected the API key: check ALPHA_API_KEY", provider="alpha")
    )
    send(app, "Hello", provider="alpha")
    no_traceback(app)
    assert any("alpha rejected the API key: check ALPHA_API_KEY" in plain(e.value) for e in app.error)
    send(app, "Again")
    assert answer_text(assistant_messages(app)[-1]) == ["Alpha answers first."]
    no_traceback(app)


def test_unconfigured_provider_says_what_to_set(app):
    send(app, "Hello", provider="gemini")
    no_traceback(app)
    texts = [plain(e.value) for e in [*app.sidebar.info, *app.error]]
    assert any("GEMINI_API_KEY" in text for text in texts), texts


def test_auto_falls_back_and_shows_the_attempt(app):
    fakes.FAKES["alpha"].script(
        ProviderUnavailableError("alpha is unavailable (HTTP 503: overloaded)", provider="alpha")
    )
    send(app, "Hello", provider="auto")
    no_traceback(app)
    answer = assistant_messages(app)[-1]
    assert answer_text(answer)[0] == "Beta answers too."
    routing = " ".join(plain(c.value) for c in answer.caption)
    assert "AUTO (balanced) chose **beta**" in routing and "alpha failed, so the next in line" in routing
    attempts = answer.expander[0]
    assert "1 failed attempt" in attempts.label
    assert "alpha is unavailable (HTTP 503: overloaded)" in plain(" ".join(m.value for m in attempts.markdown))


def test_html_in_prompts_and_answers_is_markdown_text_not_html(app):
    fakes.FAKES["alpha"].script("<script>alert(1)</script> <b>bold?</b>")
    send(app, "<script>alert(1)</script>", provider="alpha")
    assert user_texts(app) == ["<script>alert(1)</script>"]
    assert "<script>alert(1)</script> <b>bold?</b>" in answer_text(assistant_messages(app)[0])
    assert not app.get("html")  # nothing goes through st.html
    for element in app.markdown:
        assert not element.proto.allow_html, element.value


def test_the_cost_of_the_next_request_is_shown_before_sending(app):
    def shown() -> str:
        return plain(next(c.value for c in app.caption if "Next request" in c.value))

    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()  # priced at 1e-6 a token
    assert shown().startswith(":material/payments: Next request: **≤ $0.00026")  # ~1 + 4 tokens in, 256 out
    app.sidebar.number_input(key="chat_max_tokens").set_value(1000).run()
    assert "≤ $0.001" in shown()  # the max-tokens bound moves it
    app.sidebar.selectbox(key="chat_provider").set_value("gamma").run()
    assert "**free**" in shown()
    app.sidebar.selectbox(key="chat_provider").set_value("beta").run()
    assert "**unknown**" in shown()
    app.sidebar.selectbox(key="chat_provider").set_value("auto").run()
    assert "free to ≤ $0.0010, unknown on beta" in shown()


def test_a_setting_the_provider_ignores_says_so_beside_the_control(env, monkeypatch):
    from conductor_core.testing.protocol_servers import AnthropicServer

    server = AnthropicServer(reply="Claude here.").start()
    try:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-lZTC3CPUnybYyTQGQZGnqnCu")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.url)
        st.cache_resource.clear()
        at = new_session()
        at.sidebar.selectbox(key="chat_provider").set_value("anthropic").run()
        notes = [plain(c.value) for c in at.sidebar.caption if "block" in c.value]
        assert any("Anthropic ignores temperature" in n for n in notes), notes
        assert any("Anthropic ignores top_p" in n for n in notes) and any("Anthropic ignores seed" in n for n in notes)
        assert not any("stop sequences" in n for n in notes)  # it passes stop sequences on
        at.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
        assert not [c for c in at.sidebar.caption if "ignores" in c.value]
        at.sidebar.selectbox(key="chat_provider").set_value("auto").run()
        assert any("If AUTO picks Anthropic, temperature is not sent" in plain(c.value) for c in at.sidebar.caption)
        at.sidebar.selectbox(key="chat_provider").set_value("anthropic").run()
        at.sidebar.text_area(key="chat_stop").set_value("STOP").run()
        send(at, "Hello Claude")
        body = server.requests[-1]["json"]
        assert body["stop_sequences"] == ["STOP"] and "temperature" not in body
    finally:
        server.stop()


def test_without_prompt_logging_the_page_says_sessions_are_not_kept(env, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_LOG_PROMPTS", "false")
    st.cache_resource.clear()
    at = new_session()
    assert any("sessions are **not kept**" in i.value for i in at.info)
    send(at, "private words 7c1d", provider="gamma")
    assert user_texts(at) == ["private words 7c1d"]
    for path in env.rglob("*"):
        if path.is_file():
            assert b"private words 7c1d" not in path.read_bytes(), path


# --- Compare --------------------------------------------------------------------------------


def run_compare(at: AppTest, prompt: str, count: int = 2) -> AppTest:
    at.switch_page("views/compare.py").run()
    if at.segmented_control:
        at.segmented_control(key="cmp_count").set_value(count).run()
    at.text_area(key="cmp_prompt").set_value(prompt)
    at.get("form_submit_button")[0].click().run()
    no_traceback(at)
    return settle(at)


def column_titles(at: AppTest) -> list[str]:
    return [plain(m.value) for m in at.markdown if m.value.startswith("**") and "/" in m.value]


def marks(at: AppTest) -> tuple[list[str], list[str]]:
    """The columns that carry the Fastest and Cheapest badges."""
    fastest, cheapest, column = [], [], None
    for node in at.main:  # every element, in page order
        value = getattr(node, "value", None) if getattr(node, "type", None) == "markdown" else None
        if not isinstance(value, str):
            continue
        if value.startswith("**") and "/" in value:
            column = plain(value).strip("*")
        elif "Fastest" in value and column:
            fastest.append(column)
        elif "Cheapest" in value and column:
            cheapest.append(column)
    return fastest, cheapest


def test_compare_three_columns_marks_fastest_and_cheapest_and_records_the_vote(app):
    # Latencies far apart (a shared machine's scheduling noise is tens of milliseconds).
    fakes.FAKES["beta"].script(Reply(text="Beta answers too.", latency_s=0.6))
    fakes.FAKES["gamma"].script(Reply(text="Gamma is free.", latency_s=0.4))
    run_compare(app, "Which is best?", count=3)
    texts = [m.value for m in app.markdown]
    for reply in ("Alpha answers first.", "Beta answers too.", "Gamma is free."):
        assert reply in texts
    assert {call.messages[-1].content for name in ("alpha", "beta", "gamma") for call in fakes.FAKES[name].calls} == {
        "Which is best?"
    }
    assert column_titles(app) == ["**alpha/alpha-small**", "**beta/beta-1**", "**gamma/gamma-1**"]
    # alpha is quickest; among the priced answers (alpha, gamma) gamma is free: cheapest.
    fastest, cheapest = marks(app)
    assert (fastest, cheapest) == (["alpha/alpha-small"], ["gamma/gamma-1"])
    vote = next(b for b in app.button if b.label == "Best: gamma/gamma-1")
    vote.click().run()
    votes = conductor().log.votes()
    assert [(v.targets, v.winner) for v in votes] == [
        (["alpha/alpha-small", "beta/beta-1", "gamma/gamma-1"], "gamma/gamma-1")
    ]
    assert any("Vote recorded" in s.value for s in app.success)
    # The vote names the round; the round's answers name their request-log rows.
    turn = playground_state.sessions().conversation(app.query_params["session"]).turns[0]
    assert votes[0].group_id == turn.id and turn.vote == "gamma/gamma-1"
    answered = {a.request_id for a in turn.chosen.values()}
    assert answered == {r.request_id for r in conductor().log.records()}


def test_compare_badges_ties_and_cheapest_only_among_priced_answers():
    from conductor_core.models import ChatResponse
    from playground.components import compare_marks

    def answer(latency: float, cost: float | None) -> ChatResponse:
        return ChatResponse(
            content="x", metadata={"provider": "p", "model": "m"}, analytics={"latency_ms": latency, "cost_usd": cost}
        )

    # Both show "756 ms": a tie. Free against unknown: no cheapest (unknown may be free too).
    assert compare_marks([answer(756.2, 0.0), answer(756.4, None)]) == ({0, 1}, set())
    assert compare_marks([answer(900, 0.0), answer(400, 0.002), answer(500, None)]) == ({1}, {0})
    assert compare_marks([answer(1231, 0.001), answer(1234, 0.001)]) == ({0, 1}, {0, 1})  # "1.23 s" both
    assert compare_marks([answer(100, 0.001), None]) == (set(), set())


def test_compare_the_same_model_at_two_settings_labelled_by_what_differs(app):
    app.switch_page("views/compare.py").run()
    app.selectbox(key="cmp1_provider").set_value("alpha").run()
    app.selectbox(key="cmp1_model_alpha").set_value("alpha-small").run()
    app.slider(key="cmp0_temperature").set_value(0.0).run()
    app.slider(key="cmp1_temperature").set_value(1.2).run()
    app.text_area(key="cmp1_system").set_value("Answer like a poet.").run()
    app.text_area(key="cmp_prompt").set_value("Same model twice")
    app.get("form_submit_button")[0].click().run()
    settle(app)
    no_traceback(app)
    calls = fakes.FAKES["alpha"].calls
    assert sorted((c.temperature, c.messages[0].content) for c in calls) == [
        (0.0, "Same model twice"),
        (1.2, "Answer like a poet."),
    ]
    titles = column_titles(app)
    assert titles == [
        "**alpha/alpha-small · T=0 · no system prompt**",
        "**alpha/alpha-small · T=1.2 · system “Answer like a poet.”**",
    ]
    next(b for b in app.button if b.label == "Right is better").click().run()
    assert conductor().log.votes()[-1].winner == "alpha/alpha-small · T=1.2 · system “Answer like a poet.”"


def test_a_follow_up_goes_to_every_column_with_its_own_history(app):
    fakes.FAKES["beta"].script(ProviderUnavailableError("beta is unavailable (HTTP 503: overloaded)", provider="beta"))
    run_compare(app, "Round one", count=2)
    assert any("beta is unavailable" in plain(e.value) for e in app.error)
    app.text_area(key="cmp_prompt").set_value("Round two")
    app.get("form_submit_button")[0].click().run()
    settle(app)
    # alpha's column sends its history; beta's first round failed, so its column starts afresh.
    assert contents(fakes.FAKES["alpha"].calls[-1]) == ["Round one", "Alpha answers first.", "Round two"]
    assert contents(fakes.FAKES["beta"].calls[-1]) == ["Round two"]
    assert [m.value for m in app.markdown if m.value.startswith("####")] == ["#### Message 1", "#### Follow-up 2"]
    # The comparison is a session: another tab opens it from the URL.
    other = new_session(session=app.query_params["session"])
    assert any(m.value == "#### Follow-up 2" for m in other.markdown)
    assert [t.value for t in other.text] == ["Round one", "Round two"]


def test_a_comparison_url_opened_on_the_playground_shows_the_comparison(app):
    run_compare(app, "Opened from a link", count=2)
    sid = app.query_params["session"]
    tab = new_session(session=sid)  # the bare URL opens the Playground page first
    no_traceback(tab)
    assert tab.title[0].value == "Compare" and "Opened from a link" in [t.value for t in tab.text]
    assert tab.query_params["session"] == sid


def test_compare_rerun_keeps_the_earlier_answers_and_votes_again(app):
    run_compare(app, "Left or right?", count=2)
    next(b for b in app.button if b.label == "Left is better").click().run()
    assert conductor().log.votes()[-1].winner == "alpha/alpha-small"
    fakes.FAKES["alpha"].script("Alpha, second take.")
    next(b for b in app.button if b.label == "Re-run").click().run()
    settle(app)
    no_traceback(app)
    assert "Alpha, second take." in [m.value for m in app.markdown]
    assert any("answer 2/2" in c.value for c in app.caption)
    next(b for b in app.button if b.label == "Tie").click().run()
    assert [v.winner for v in conductor().log.votes()] == ["alpha/alpha-small", "tie"]
    # Past comparisons are listed in the sidebar and reopen with their votes.
    app.switch_page("views/chat.py").run()
    app.switch_page("views/compare.py").run()
    assert "Left or right?" in [t.value for t in app.text]
    assert any("Vote recorded: a tie" in plain(s.value) for s in app.success)


def test_compare_column_failure_is_shown_in_its_column(app):
    fakes.FAKES["beta"].down = True
    run_compare(app, "One fails", count=2)
    assert any("beta is down" in plain(e.value) for e in app.error)
    assert "Alpha answers first." in [m.value for m in app.markdown]


# --- Dashboard ------------------------------------------------------------------------------


def chart_rows(at: AppTest) -> list[int]:
    rows = []
    for chart in at.get("vega_lite_chart"):
        for dataset in chart.proto.datasets:
            rows.append(pa.ipc.open_stream(dataset.data.data).read_all().num_rows)
    return rows


def test_dashboard_with_an_empty_log(app):
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    assert any("No requests in this window yet" in i.value for i in app.info)
    assert len(app.dataframe) == 1
    assert {m.label for m in app.metric} >= {"Requests", "Success rate", "Requests / min", "Est. cost", "Log since"}
    assert next(m for m in app.metric if m.label == "Log since").value == "—"
    assert len(app.get("download_button")) == 2


def test_dashboard_figures_tell_the_truth(app):
    log = conductor().log
    now = utcnow()
    started = now - timedelta(minutes=3)
    bulk_write(
        log,
        [
            AttemptRecord(
                request_id="r1", provider="alpha", status="ok", created_at=started, latency_ms=100.0, cost_usd=1e-3
            ),
            AttemptRecord(
                request_id="r2", provider="beta", status="ok", created_at=now - timedelta(minutes=2), latency_ms=90.0
            ),
            AttemptRecord(
                request_id="r3",
                provider="alpha",
                status="error",
                error_type="bad_request",
                created_at=now - timedelta(minutes=1),
                error_message="context overflow",
            ),
            AttemptRecord(
                request_id="r4",
                provider="alpha",
                status="incomplete",
                error_type="cancelled",
                created_at=now - timedelta(seconds=50),
            ),
            AttemptRecord(
                request_id="r5",
                provider="beta",
                status="error",
                error_type="timeout",
                created_at=now - timedelta(seconds=40),
            ),
        ],
    )
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    tile = {m.label: m.value for m in app.metric}
    assert tile["Requests"] == "5"
    assert tile["Success rate"] == "66.7%"  # 2 of 3: the bad request and the stopped answer are the request's doing
    cost = next(m for m in app.metric if m.label == "Est. cost")
    assert (cost.value, cost.delta) == ("$0.001000", "+ 1 unpriced")  # beta's success has no known price
    assert tile["Log since"] == f"{started:%H:%M} UTC" or tile["Log since"] == f"{started:%b %d}"
    log_since = next(m for m in app.metric if m.label == "Log since")
    assert "This server has been up for" in log_since.proto.help and log_since.delta.startswith("this server up ")
    assert next(m for m in app.metric if m.label == "Success rate").delta == "2 left out"


def test_dashboard_requests_card_counts_the_messages_sent_and_shows_attempts_apart(app):
    """What a person saw: messages typed on the Playground, some retried or answered by a
    fallback, and the "Requests" card counted every attempt (17 messages showed as 22). It
    counts requests now, with the attempts beside them."""
    c = conductor()
    c.settings.max_retries = 1
    alpha, beta, gamma = (fakes.FAKES[name] for name in ("alpha", "beta", "gamma"))
    alpha.script(ProviderUnavailableError("alpha is overloaded", provider="alpha", status_code=503, retry_after=0.01))
    send(app, "First: alpha answers on its second try", provider="alpha")
    beta.down = gamma.down = True  # AUTO falls back to alpha from whichever it tries first
    send(app, "Second: through AUTO", provider="auto")
    beta.down = gamma.down = False
    send(app, "Third: plain", provider="alpha")
    assert len(assistant_messages(app)) == 3
    records = c.log.records()
    assert len({r.request_id for r in records}) == 3 and len(records) >= 4  # at least the retry
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    card = next(m for m in app.metric if m.label == "Requests")
    assert (card.value, card.delta) == ("3", f"{len(records)} attempts")
    assert "3 requests" in card.proto.help and f"{len(records)} attempts" in card.proto.help


def test_a_database_newer_than_this_release_is_said_plainly_on_every_page(env):
    from sqlalchemy import create_engine, text

    from conductor_core.store import RequestLog

    made = RequestLog(data_dir=env)
    made.open()
    made.close()
    engine = create_engine(f"sqlite:///{env / 'conductor.db'}")
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '0099'"))  # a newer release's
    engine.dispose()
    at = new_session()
    for page in (None, "views/dashboard.py"):
        if page:
            at.switch_page(page).run()
        assert not at.exception, at.exception
        (error,) = at.error
        assert "cannot be used by this release" in error.value and "0099" in error.value
        assert "newer release" in error.value and "Something went wrong" not in error.value


def test_the_dashboard_says_when_the_log_refuses_rows_for_its_schema(app):
    """A column gone under a running server (a newer release's migration, a hand edit): the
    answers still arrive, their log rows are set aside, and the Dashboard says why."""
    from sqlalchemy import create_engine, text

    c = conductor()
    send(app, "Written to the log", provider="alpha")
    assert c.log.flush(timeout=30)
    engine = create_engine(f"sqlite:///{c.log.url.split(':///', 1)[1]}")
    with engine.begin() as conn:
        conn.execute(text("ALTER TABLE attempts DROP COLUMN answer"))
    engine.dispose()
    send(app, "Set aside", provider="alpha")
    assert len(assistant_messages(app)) == 2
    assert c.log.flush(timeout=30) and c.log.health().rejected == 1
    app.switch_page("views/dashboard.py").run()
    assert not app.exception, app.exception
    (banner,) = [plain(e.value) for e in app.error if "The request log is not being written" in e.value]
    assert "no column named answer" in banner and "python -m conductor_core.store check" in banner


def bulk_write(log, records: list[AttemptRecord]) -> None:
    # One transaction for all 10,000 rows (write() would be one per row).
    assert log.write_many(records) == len(records)


def test_dashboard_with_ten_thousand_rows_draws_bounded_charts(app):
    log = conductor().log
    rng = np.random.default_rng(1)
    now = utcnow()
    records = []
    for i in range(10_000):
        provider = ("alpha", "beta", "gamma", "local")[i % 4]
        ok = bool(rng.random() > 0.1)
        latency = float(rng.lognormal(5, 0.4))
        records.append(
            AttemptRecord(
                request_id=f"r{i}",
                provider=provider,
                model=f"{provider}-m",
                status="ok" if ok else "error",
                created_at=now - timedelta(seconds=3500 * (1 - i / 10_000)),
                latency_ms=latency,
                ttft_ms=latency / 4 if ok else None,
                input_tokens=5,
                output_tokens=40 if ok else 0,
                cost_usd=None if provider == "beta" else 2e-5,
                error_type=None if ok else "timeout",
            )
        )
    bulk_write(log, records)
    log.write_vote(Vote(group_id="g", targets=["alpha/a", "beta/b"], winner="alpha/a"))
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    assert app.segmented_control(key="dash_window").value == "15m"
    app.segmented_control(key="dash_window").set_value("1h").run()
    requests = next(m for m in app.metric if m.label == "Requests")
    assert requests.value == "10,000"
    assert len(app.get("vega_lite_chart")) == 8  # seven time series and the win rate
    rows = chart_rows(app)
    assert rows and max(rows) <= charts.MAX_POINTS and min(rows) > 0
    # The window selector changes the view and survives reruns.
    app.segmented_control(key="dash_window").set_value("5m").run()
    no_traceback(app)
    assert next(m for m in app.metric if m.label == "Requests").value != "10,000"
    app.run()
    assert app.segmented_control(key="dash_window").value == "5m"
    app.switch_page("views/chat.py").run()
    app.switch_page("views/dashboard.py").run()
    assert app.segmented_control(key="dash_window").value == "5m"  # kept across pages


def test_per_provider_draws_one_chart_of_small_multiples(app):
    now = utcnow()
    bulk_write(
        conductor().log,
        [
            AttemptRecord(
                request_id=f"r{i}-{provider}",
                provider=provider,
                status="ok",
                created_at=now - timedelta(seconds=20 * i + 5),
                latency_ms=100.0 + i,
                ttft_ms=20.0,
                output_tokens=8,
                streamed=True,
            )
            for i in range(30)
            for provider in ("alpha", "beta")
        ],
    )
    app.switch_page("views/dashboard.py").run()
    grid = [json.loads(c.proto.spec) for c in app.get("vega_lite_chart")]
    assert len(grid) == 7 and all("vconcat" not in spec for spec in grid)
    assert all(c.proto.selection_mode == ["isolate"] for c in app.get("vega_lite_chart"))  # the legend click

    app.toggle(key="dash_split").set_value(True).run()
    no_traceback(app)
    (chart,) = app.get("vega_lite_chart")  # one chart at a time: all seven would cost several refreshes
    spec = json.loads(chart.proto.spec)
    assert [row["title"]["text"] for row in spec["vconcat"]] == ["alpha", "beta"]
    assert spec["title"]["text"].startswith("Latency")
    app.segmented_control(key="dash_split_chart").set_value("Success").run()
    (chart,) = app.get("vega_lite_chart")
    assert json.loads(chart.proto.spec)["title"]["text"] == "Success rate"
    app.run()  # a refresh keeps the choice
    assert app.toggle(key="dash_split").value and app.segmented_control(key="dash_split_chart").value == "Success"


def test_dashboard_reads_rollups_when_the_window_is_too_big_for_rows(app, monkeypatch):
    import playground.state as playground_state

    log = conductor().log
    now = utcnow()
    bulk_write(
        log,
        [
            AttemptRecord(
                request_id=f"r{i}",
                provider="alpha",
                model="alpha-small",
                status="ok",
                created_at=now - timedelta(days=2, seconds=i * 60),
                latency_ms=100.0 + i,
                cost_usd=1e-4,
                streamed=True,
                ttft_ms=20.0,
                output_tokens=8,
            )
            for i in range(50)
        ],
    )
    monkeypatch.setattr(playground_state, "FRAME_ROW_LIMIT", 10)
    app.switch_page("views/dashboard.py").run()
    app.segmented_control(key="dash_window").set_value("All").run()
    no_traceback(app)
    assert next(m for m in app.metric if m.label == "Requests").value == "50"
    assert any("from per-minute sums" in c.value for c in app.caption)
    latency = json.loads(app.get("vega_lite_chart")[0].proto.spec)
    assert latency["title"]["text"] == "Latency (ms, mean)"
    # Time to first token and tokens/s come from the rollups' sums too (not empty charts).
    data = {
        json.loads(c.proto.spec)["title"]["text"]: pa.ipc.open_stream(c.proto.datasets[0].data.data)
        .read_all()
        .to_pandas()
        for c in app.get("vega_lite_chart")
        if c.proto.datasets
    }
    assert set(data["Time to first token (ms, mean)"]["mid"].dropna()) == {20.0}
    assert (data["Tokens per second"]["tokens_per_second"].dropna() > 0).any()
    assert max(chart_rows(app)) <= charts.MAX_POINTS


def test_dashboard_shows_everyones_traffic_but_sessions_keep_their_conversations(env):
    one = new_session()
    send(one, "Private question from session one", provider="alpha")
    two = new_session()
    assert not two.chat_message  # session two does not see session one's conversation
    two.switch_page("views/dashboard.py").run()
    assert next(m for m in two.metric if m.label == "Requests").value == "1"


def test_the_providers_table_says_unknown_for_a_provider_with_no_price(app):
    # alpha has a price, beta none (an endpoint), gamma is free; the built-ins have no traffic.
    for provider in ("alpha", "beta", "gamma"):
        send(app, f"Hello {provider}", provider=provider)
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    table = app.dataframe[0].value
    table.index = list(conductor().status().providers)  # the fakes all show as "Scripted"
    cost = table["Cost"].to_dict()
    assert cost["beta"] == "unknown"  # not "$0.00000": nothing says it is free
    assert cost["gamma"] == "free" and cost["alpha"].startswith("$") and cost["alpha"] != "$0"
    assert cost["openai"] == "—"  # no answer in this window
    assert table.loc["beta", "Requests"] == 1 and table.loc["openai", "Requests"] == 0
    assert len(table.loc["beta", "Traffic"]) >= 24  # a sparkline over the window's buckets
    # Each column is as wide as its longest text (the grid would otherwise keep its first width).
    config = json.loads(app.dataframe[0].proto.columns)
    assert config["Cost"]["width"] > dd.text_width("unknown") and config["p50 ms"]["width"] > dd.text_width("p50 ms")
    assert config["Latency trend"]["type_config"]["type"] == "line_chart"


# --- Providers ------------------------------------------------------------------------------


def test_providers_page_says_what_to_set(app):
    app.switch_page("views/providers.py").run()
    no_traceback(app)
    text = plain(" ".join(m.value for m in app.markdown))
    for hint in (
        "set GEMINI_API_KEY",
        "set OPENAI_API_KEY",
        "set ANTHROPIC_API_KEY",
        "set CONDUCTOR_LOCAL_ENABLED=true",
    ):
        assert hint in text, hint
    assert "Gemma 3 270M" in " ".join(c.value for c in app.caption)
    badges = " ".join(m.value for m in app.markdown if "badge" in m.value)
    assert "Ready" in badges and "Not configured" in badges
    next(b for b in app.button if b.label == "Run health checks").click().run()
    no_traceback(app)
    assert any("Health check: 3 of 3" in i.value for i in app.info)


CANARY = "tnAaRnhOkTdg0Pry_cthCL2S"


def test_a_typed_key_is_used_for_the_session_only_and_never_stored(env, monkeypatch):
    server = GeminiServer(reply="Gemini via the session key.", require_key=CANARY).start()
    try:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        st.cache_resource.clear()
        at = new_session()
        at.switch_page("views/providers.py").run()
        at.text_input(key="key_input_gemini").set_value(CANARY)
        next(b for b in at.get("form_submit_button") if b.form_id == "key_form_gemini").click().run()
        no_traceback(at)
        assert any("Key set for this session" in s.value for s in at.success)
        at.switch_page("views/chat.py").run()
        send(at, "Hello Gemini", provider="gemini")
        assert answer_text(assistant_messages(at)[-1]) == ["Gemini via the session key."]
        # The key reached the server, and nowhere else.
        dump = repr(at.session_state.to_dict()) + json.dumps(at.session_state.to_dict(), default=repr)
        assert CANARY not in dump
        for element in at:
            assert CANARY not in str(getattr(element, "value", "")) and CANARY not in str(getattr(element, "proto", ""))
        log = conductor().log
        assert CANARY not in log.export("json").decode() and CANARY not in log.export("csv").decode()
        for path in env.rglob("*"):
            if path.is_file():
                assert CANARY.encode() not in path.read_bytes(), path
        # Another session does not get the key.
        other = new_session()
        other.switch_page("views/providers.py").run()
        assert "set GEMINI_API_KEY" in plain(" ".join(m.value for m in other.markdown))
    finally:
        server.stop()


def test_a_wrong_key_is_an_actionable_message(env, monkeypatch):
    server = GeminiServer(require_key="the-right-key-123").start()
    try:
        monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", server.url)
        st.cache_resource.clear()
        at = new_session()
        at.switch_page("views/providers.py").run()
        at.text_input(key="key_input_gemini").set_value("f8CZpUTCx6Fx1aIVSEpaWHhT")
        next(b for b in at.get("form_submit_button") if b.form_id == "key_form_gemini").click().run()
        at.switch_page("views/chat.py").run()
        send(at, "Hello", provider="gemini")
        no_traceback(at)
        errors = [plain(e.value) for e in at.error]
        assert any("gemini rejected the API key: check GEMINI_API_KEY" in e for e in errors), errors
        assert not any("f8CZpUTCx6Fx1aIVSEpaWHhT" in e for e in errors)
    finally:
        server.stop()


def test_an_endpoint_added_for_the_session(env):
    server = OpenAIServer(reply="Hello from the loopback endpoint.", models=["loopback-model"]).start()
    try:
        at = new_session()
        at.switch_page("views/providers.py").run()
        at.text_input(key="ep_name").set_value("loopy")
        at.text_input(key="ep_url").set_value(server.url)
        at.text_input(key="ep_models").set_value("loopback-model")
        next(b for b in at.get("form_submit_button") if b.form_id == "endpoint_form").click().run()
        no_traceback(at)
        assert any("Endpoint loopy added" in s.value for s in at.success)
        at.switch_page("views/chat.py").run()
        send(at, "Hi endpoint", provider="loopy")
        assert answer_text(assistant_messages(at)[-1]) == ["Hello from the loopback endpoint."]
        assert "loopy" not in conductor().registry.providers  # session only
        other = new_session()
        assert "loopy" not in other.sidebar.selectbox(key="chat_provider").options
    finally:
        server.stop()


def test_an_endpoint_added_without_models_sends_a_model_it_lists(env):
    server = OpenAIServer(reply="Listed model here.", models=["qwen2.5:7b", "llama3.2:latest"]).start()
    try:
        at = new_session()
        at.switch_page("views/providers.py").run()
        at.text_input(key="ep_name").set_value("ollama")
        at.text_input(key="ep_url").set_value(server.url)
        next(b for b in at.get("form_submit_button") if b.form_id == "endpoint_form").click().run()
        no_traceback(at)
        assert any("with 2 models (llama3.2:latest, qwen2.5:7b)" in plain(s.value) for s in at.success)
        at.switch_page("views/chat.py").run()
        at.sidebar.selectbox(key="chat_provider").set_value("ollama").run()
        assert at.sidebar.selectbox(key="chat_model_ollama").options == ["llama3.2:latest", "qwen2.5:7b"]
        send(at, "Hi")
        assert answer_text(assistant_messages(at)[-1]) == ["Listed model here."]
        sent = [r["json"]["model"] for r in server.requests if r["path"].endswith("/chat/completions")]
        assert sent == ["llama3.2:latest"]  # a name the server knows, never "default"
        # A URL that does not answer is refused with what to check, and nothing is added.
        at.switch_page("views/providers.py").run()
        at.text_input(key="ep_name").set_value("nowhere")
        at.text_input(key="ep_url").set_value("http://127.0.0.1:9/v1")
        next(b for b in at.get("form_submit_button") if b.form_id == "endpoint_form").click().run()
        assert any("did not answer" in plain(e.value) and "type the model names" in plain(e.value) for e in at.error)
        at.switch_page("views/chat.py").run()
        assert "nowhere" not in at.sidebar.selectbox(key="chat_provider").options
    finally:
        server.stop()


def test_compare_with_one_provider_says_what_to_add(env, monkeypatch):
    monkeypatch.setattr(fakes, "build_conductor", _only_gamma)
    st.cache_resource.clear()
    at = new_session()
    at.switch_page("views/compare.py").run()
    no_traceback(at)
    assert any("Only Scripted is configured: compare it with itself at other settings" in i.value for i in at.info)
    at.slider(key="cmp1_temperature").set_value(1.5).run()
    at.text_area(key="cmp_prompt").set_value("Myself, twice")
    at.get("form_submit_button")[0].click().run()
    settle(at)
    assert column_titles(at) == ["**gamma/gamma-model · T=0.7**", "**gamma/gamma-model · T=1.5**"]


def _only_gamma():
    from conductor_core.config import load_settings
    from conductor_core.router import Conductor
    from conductor_core.testing.fakes import ScriptedProvider

    conductor = Conductor(
        load_settings(_env_file=None, local_enabled=False), extra_providers=[ScriptedProvider("gamma")]
    )
    fakes.CONDUCTORS.append(conductor)
    return conductor


def test_a_password_from_secrets_guards_the_page(env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["playground_password"] = "correct horse 42"
    at.run()
    assert not at.chat_input and not at.sidebar.selectbox  # nothing of the app before the password
    at.text_input(key="access_password").set_value("wrong")
    at.get("form_submit_button")[0].click().run()
    assert any("not right" in e.value for e in at.error) and not at.chat_input
    at.text_input(key="access_password").set_value("correct horse 42")
    at.get("form_submit_button")[0].click().run()
    no_traceback(at)
    assert at.chat_input and at.title[0].value == "Playground"
    assert "correct horse 42" not in repr(at.session_state.to_dict())


def test_a_conductor_that_cannot_start_is_a_message(env, monkeypatch):
    def broken():
        raise ValueError("endpoint 'x' has no base_url")

    monkeypatch.setattr(fakes, "build_conductor", broken)
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert any("Conductor could not start: ValueError: endpoint 'x' has no base" in plain(e.value) for e in at.error)


def _controls_never_loaded() -> None:
    """A Compare column's controls drawn before anything loaded their values (a rerun racing
    the page's first load, as a quick typist or a slow machine makes happen)."""
    from playground import controls, state

    c = state.conductor()
    controls.variant_controls(
        c, "unloaded", providers=state.provider_names(c), allow_auto=True, labels={}, compact=True
    )


def test_controls_drawn_before_they_were_loaded_start_at_the_defaults_not_at_their_minimum(env):
    """Seen in CI: a Compare column sent max_tokens=1 ("stopped at max tokens" after one word)
    because its number input started at its minimum."""
    at = AppTest.from_function(_controls_never_loaded, default_timeout=60).run()
    assert not at.exception, at.exception
    assert at.number_input(key="unloaded_max_tokens").value == controls.DEFAULT_VARIANT.max_tokens
    assert at.slider(key="unloaded_temperature").value == controls.DEFAULT_VARIANT.temperature


def test_sessions_are_listed_with_when_they_were_used_beside_their_title() -> None:
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from conductor_core.workbench.sessions import SessionInfo
    from playground.session_nav import session_labels

    utc, paris = ZoneInfo("UTC"), ZoneInfo("Europe/Paris")

    def session(title: str, *when: int) -> SessionInfo:
        moment = datetime(*when, tzinfo=utc)
        return SessionInfo("ses_" + title, "chat", title, moment, moment, 1, [])

    now = datetime(2025, 6, 2, 18, 0, tzinfo=paris)
    found = [
        session("Capitals", 2025, 6, 2, 12, 5, 1),  # today (14:05 in Paris)
        session("Capitals", 2025, 3, 12, 9, 0),  # this year
        session("Capitals", 2024, 3, 12, 9, 0),  # an earlier year
        session("", 2025, 6, 2, 12, 30, 7),
        session("", 2025, 6, 2, 12, 30, 45),  # the same title and minute: the seconds tell them apart
        session("A title far longer than a phone's sidebar can show in full", 2025, 6, 2, 12, 0),
    ]
    assert session_labels(found, noun="chat", now=now, zone=paris) == [
        "Capitals · 14:05",
        "Capitals · 12 Mar 10:00",
        "Capitals · 12 Mar 2024",
        "Untitled chat · 14:30:07",
        "Untitled chat · 14:30:45",
        "A title far longer than a phone's sideba… · 14:00",
    ]


def test_dashboard_shows_the_gateways_overhead_per_request(app):
    """p50/p99 of x-conductor-overhead-ms over the gateway's requests (a request's attempts'
    shares summed); the card is absent while only the playground has traffic."""
    log = conductor().log
    now = utcnow()
    bulk_write(
        log, [AttemptRecord(request_id="p1", provider="alpha", status="ok", source="playground", created_at=now)]
    )
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    assert "Gateway overhead" not in {m.label for m in app.metric}

    def row(request_id: str, overhead_ms: float, status: str = "ok") -> AttemptRecord:
        return AttemptRecord(
            request_id=request_id,
            provider="alpha",
            status=status,
            source="gateway",
            created_at=now - timedelta(seconds=30),
            overhead_ms=overhead_ms,
        )

    # Requests of 1, 2, ... 100 ms; the 10 ms one was a failed attempt (4 ms) and a fallback (6 ms).
    rows = [row(f"g{n}", float(n)) for n in range(1, 101) if n != 10]
    rows += [row("g10", 4.0, "error"), row("g10", 6.0)]
    bulk_write(log, rows)
    app.run()
    no_traceback(app)
    card = next(m for m in app.metric if m.label == "Gateway overhead")
    assert (card.value, card.delta) == ("50.50 ms", "p99 99.01 ms")
    assert "100 requests" in card.proto.help
    assert log.gateway_overhead(since=now - timedelta(seconds=5)) is None  # a window without them
