"""The playground's pages under `streamlit.testing.v1.AppTest`, with scripted providers
injected through the playground's factory (tests/playground_fakes.py): no SDK is patched."""

from __future__ import annotations

import json
import sys
from datetime import timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conductor_core.errors import AuthenticationError, ProviderUnavailableError  # noqa: E402
from conductor_core.models import AttemptRecord, Vote, utcnow  # noqa: E402
from conductor_core.testing.protocol_servers import GeminiServer, OpenAIServer  # noqa: E402

import tests.playground_fakes as fakes  # noqa: E402  (the same module object the app imports)
from playground import charts  # noqa: E402
from playground.state import FACTORY_ENV  # noqa: E402

APP = ROOT / "playground" / "app.py"
KEY_VARS = (
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL",
    "GOOGLE_GEMINI_BASE_URL", "ANTHROPIC_BASE_URL", "CONDUCTOR_CONFIG", "CONDUCTOR_DATABASE_URL",
)

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_DATA_DIR", str(tmp_path))
    monkeypatch.setenv(FACTORY_ENV, "tests.playground_fakes:build_conductor")
    for name in KEY_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env or conductor.toml
    st.cache_resource.clear()  # a fresh Conductor (and fresh fakes) for every test
    yield tmp_path
    st.cache_resource.clear()
    while fakes.CONDUCTORS:
        fakes.CONDUCTORS.pop().close()


def new_session() -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def app(env) -> AppTest:
    return new_session()


def conductor():
    return fakes.CONDUCTORS[-1]


def plain(text: str) -> str:
    return text.replace("\\", "")


def send(at: AppTest, text: str, provider: str | None = None) -> AppTest:
    if provider is not None:
        at.sidebar.selectbox(key="chat_provider").set_value(provider).run()
    at.chat_input[0].set_value(text).run()
    assert not at.exception, at.exception
    return at


def assistant_messages(at: AppTest):
    return [m for m in at.chat_message if m.name == "assistant"]


def answer_text(message) -> list[str]:
    return [m.value for m in message.markdown if "-badge[" not in m.value]


def figures(message) -> str:
    return plain(next(m.value for m in message.markdown if "badge[:material/dns:" in m.value))


def no_traceback(at: AppTest) -> None:
    assert not at.exception, at.exception
    for element in [*at.error, *at.markdown, *at.caption]:
        assert "Traceback" not in str(element.value)


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


def test_an_example_prompt_starts_the_conversation(app):
    app.sidebar.selectbox(key="chat_provider").set_value("gamma").run()
    app.pills(key="chat_example").set_value("Write a haiku about latency.").run()
    no_traceback(app)
    assert [m.name for m in app.chat_message] == ["user", "assistant"]
    assert fakes.FAKES["gamma"].calls[-1].messages[-1].content == "Write a haiku about latency."
    assert not app.pills  # the examples make way for the conversation


def test_chat_lists_models_and_sends_parameters(app):
    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
    model = app.sidebar.selectbox(key="chat_model_alpha")
    assert model.options == ["alpha-small", "alpha-large"]
    model.set_value("alpha-large").run()
    app.sidebar.slider(key="chat_temperature").set_value(1.5).run()
    app.sidebar.number_input(key="chat_max_tokens").set_value(77).run()
    app.sidebar.text_area(key="chat_system").set_value("Be brief.").run()
    send(app, "Hi")
    request = fakes.FAKES["alpha"].calls[-1]
    assert (request.model, request.temperature, request.max_tokens) == ("alpha-large", 1.5, 77)
    assert request.messages[0].role.value == "system" and request.messages[0].content == "Be brief."
    assert "alpha-large" in figures(assistant_messages(app)[-1])


def test_chat_keeps_the_conversation_and_clears_it(app):
    send(app, "First", provider="gamma")
    send(app, "Second")
    send(app, "Third")
    assert [m.name for m in app.chat_message] == ["user", "assistant"] * 3
    # Earlier turns are sent as history.
    last = fakes.FAKES["gamma"].calls[-1]
    assert [m.content for m in last.messages] == ["First", "Gamma is free.", "Second", "Gamma is free.", "Third"]
    app.sidebar.button[0].click().run()
    assert not app.chat_message


def test_provider_error_is_a_message_and_the_app_keeps_working(app):
    fakes.FAKES["alpha"].script(AuthenticationError("alpha rejected the API key: check ALPHA_API_KEY", provider="alpha"))
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
    fakes.FAKES["alpha"].script(ProviderUnavailableError("alpha is unavailable (HTTP 503: overloaded)", provider="alpha"))
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
    assert any(m.value == "<script>alert(1)</script>" for m in app.chat_message[0].markdown)
    assert not app.get("html")  # nothing goes through st.html
    for element in app.markdown:
        assert not element.proto.allow_html, element.value


# --- Compare --------------------------------------------------------------------------------


def run_compare(at: AppTest, prompt: str, count: int = 2) -> AppTest:
    at.switch_page("views/compare.py").run()
    at.segmented_control(key="cmp_count").set_value(count).run()
    at.text_area(key="cmp_prompt").set_value(prompt)
    at.get("form_submit_button")[0].click().run()
    no_traceback(at)
    return at


def test_compare_three_targets_marks_fastest_and_cheapest_and_records_the_vote(app):
    run_compare(app, "Which is best?", count=3)
    cells = [c for c in app.main.get("flex_container")]
    texts = [m.value for m in app.markdown]
    for reply in ("Alpha answers first.", "Beta answers too.", "Gamma is free."):
        assert reply in texts
    assert {call.messages[-1].content for name in ("alpha", "beta", "gamma") for call in fakes.FAKES[name].calls} == {"Which is best?"}
    badges = [m.value for m in app.markdown if "badge" in m.value]
    assert any("Fastest" in b for b in badges) and any("Cheapest" in b for b in badges)
    # alpha is quickest (10 ms); gamma is free, alpha is priced, beta's price is unknown.
    order = [plain(m.value) for m in app.markdown if m.value.startswith("**") or "badge" in m.value]
    assert order.index("**gamma/gamma-1**") < next(i for i, v in enumerate(order) if "Cheapest" in v)
    assert next(i for i, v in enumerate(order) if "Fastest" in v) < order.index("**beta/beta-1**")
    assert cells  # columns were drawn
    vote = next(b for b in app.button if b.label == "Best: gamma/gamma-1")
    vote.click().run()
    votes = conductor().log.votes()
    assert [(v.targets, v.winner) for v in votes] == [(["alpha/alpha-small", "beta/beta-1", "gamma/gamma-1"], "gamma/gamma-1")]
    assert any("Vote recorded" in s.value for s in app.success)
    group = votes[0].group_id
    assert {r.group_id for r in conductor().log.records()} == {group}


def test_compare_two_targets_vote_rerun_and_reopen(app):
    run_compare(app, "Left or right?", count=2)
    next(b for b in app.button if b.label == "Left is better").click().run()
    assert conductor().log.votes()[-1].winner == "alpha/alpha-small"
    next(b for b in app.button if b.label == "Re-run").click().run()
    no_traceback(app)
    assert "#### Comparison #2" in [m.value for m in app.markdown]
    next(b for b in app.button if b.label == "Tie").click().run()
    assert [v.winner for v in conductor().log.votes()] == ["alpha/alpha-small", "tie"]
    # Reopen the first comparison from the history menu: its vote is still there.
    app.sidebar.selectbox(key="cmp_view").set_value(0).run()
    assert "#### Comparison #1" in [m.value for m in app.markdown]
    assert any("Vote recorded: alpha/alpha-small" in plain(s.value) for s in app.success)
    # Results survive a rerun and a page switch.
    app.switch_page("views/chat.py").run()
    app.switch_page("views/compare.py").run()
    assert "Left or right?" in [m.value for m in app.markdown]


def test_compare_same_provider_with_two_models(app):
    app.switch_page("views/compare.py").run()
    app.selectbox(key="cmp_provider_1").set_value("alpha").run()
    app.selectbox(key="cmp_model_1_alpha").set_value("alpha-large").run()
    app.text_area(key="cmp_prompt").set_value("Same provider")
    app.get("form_submit_button")[0].click().run()
    no_traceback(app)
    assert {c.model for c in fakes.FAKES["alpha"].calls} == {"alpha-small", "alpha-large"}
    next(b for b in app.button if b.label == "Right is better").click().run()
    assert conductor().log.votes()[-1].winner == "alpha/alpha-large"


def test_compare_target_failure_is_shown_in_its_column(app):
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
    assert {m.label for m in app.metric} >= {"Requests", "Success rate", "Requests / min", "Est. cost", "Uptime"}
    assert len(app.get("download_button")) == 2


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
                request_id=f"r{i}", provider=provider, model=f"{provider}-m", status="ok" if ok else "error",
                created_at=now - timedelta(seconds=3500 * (1 - i / 10_000)), latency_ms=latency,
                ttft_ms=latency / 4 if ok else None, input_tokens=5, output_tokens=40 if ok else 0,
                cost_usd=None if provider == "beta" else 2e-5, error_type=None if ok else "timeout",
            )
        )
    bulk_write(log, records)
    log.write_vote(Vote(group_id="g", targets=["alpha/a", "beta/b"], winner="alpha/a"))
    app.switch_page("views/dashboard.py").run()
    no_traceback(app)
    assert app.segmented_control(key="dash_window").value == "15 min"
    app.segmented_control(key="dash_window").set_value("1 hour").run()
    requests = next(m for m in app.metric if m.label == "Requests")
    assert requests.value == "10,000"
    assert len(app.get("vega_lite_chart")) == 8  # seven time series and the win rate
    rows = chart_rows(app)
    assert rows and max(rows) <= charts.MAX_POINTS and min(rows) > 0
    # The window selector changes the view and survives reruns.
    app.segmented_control(key="dash_window").set_value("5 min").run()
    no_traceback(app)
    assert next(m for m in app.metric if m.label == "Requests").value != "10,000"
    app.run()
    assert app.segmented_control(key="dash_window").value == "5 min"
    app.switch_page("views/chat.py").run()
    app.switch_page("views/dashboard.py").run()
    assert app.segmented_control(key="dash_window").value == "5 min"  # kept across pages


def test_dashboard_reads_rollups_when_the_window_is_too_big_for_rows(app, monkeypatch):
    import playground.state as playground_state

    log = conductor().log
    now = utcnow()
    bulk_write(
        log,
        [
            AttemptRecord(request_id=f"r{i}", provider="alpha", model="alpha-small", status="ok",
                          created_at=now - timedelta(days=2, seconds=i * 60), latency_ms=100.0 + i, cost_usd=1e-4,
                          streamed=True, ttft_ms=20.0, output_tokens=8)
            for i in range(50)
        ],
    )
    monkeypatch.setattr(playground_state, "FRAME_ROW_LIMIT", 10)
    app.switch_page("views/dashboard.py").run()
    app.segmented_control(key="dash_window").set_value("All time").run()
    no_traceback(app)
    assert next(m for m in app.metric if m.label == "Requests").value == "50"
    assert any("from per-minute sums" in c.value for c in app.caption)
    latency = json.loads(app.get("vega_lite_chart")[0].proto.spec)
    assert latency["title"]["text"] == "Latency (ms) · mean"
    # Time to first token and tokens/s come from the rollups' sums too (not empty charts).
    data = {
        json.loads(c.proto.spec)["title"]["text"]: pa.ipc.open_stream(c.proto.datasets[0].data.data).read_all().to_pandas()
        for c in app.get("vega_lite_chart")
        if c.proto.datasets
    }
    assert set(data["Time to first token (ms, mean)"]["mean_ttft_ms"].dropna()) == {20.0}
    assert (data["Tokens per second"]["tokens_per_second"].dropna() > 0).any()
    assert max(chart_rows(app)) <= charts.MAX_POINTS


def test_dashboard_shows_everyones_traffic_but_sessions_keep_their_conversations(env):
    one = new_session()
    send(one, "Private question from session one", provider="alpha")
    two = new_session()
    assert not two.chat_message  # session two does not see session one's conversation
    two.switch_page("views/dashboard.py").run()
    assert next(m for m in two.metric if m.label == "Requests").value == "1"


# --- Providers ------------------------------------------------------------------------------


def test_providers_page_says_what_to_set(app):
    app.switch_page("views/providers.py").run()
    no_traceback(app)
    text = plain(" ".join(m.value for m in app.markdown))
    for hint in ("set GEMINI_API_KEY", "set OPENAI_API_KEY", "set ANTHROPIC_API_KEY", "set CONDUCTOR_LOCAL_ENABLED=true"):
        assert hint in text, hint
    assert "Gemma 3 270M" in " ".join(c.value for c in app.caption)
    badges = " ".join(m.value for m in app.markdown if "badge" in m.value)
    assert "Ready" in badges and "Not configured" in badges
    next(b for b in app.button if b.label == "Run health checks").click().run()
    no_traceback(app)
    assert any("Health check: 3 of 3" in i.value for i in app.info)


CANARY = "canary-session-key-5b8e1f02c9d4"


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
        at.text_input(key="key_input_gemini").set_value("a-wrong-key-456789")
        next(b for b in at.get("form_submit_button") if b.form_id == "key_form_gemini").click().run()
        at.switch_page("views/chat.py").run()
        send(at, "Hello", provider="gemini")
        no_traceback(at)
        errors = [plain(e.value) for e in at.error]
        assert any("gemini rejected the API key: check GEMINI_API_KEY" in e for e in errors), errors
        assert not any("a-wrong-key-456789" in e for e in errors)
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


def test_compare_with_one_provider_says_what_to_add(env, monkeypatch):
    monkeypatch.setattr(fakes, "build_conductor", _only_gamma)
    st.cache_resource.clear()
    at = new_session()
    at.switch_page("views/compare.py").run()
    no_traceback(at)
    assert any("needs two different targets" in i.value for i in at.info)
    assert at.get("form_submit_button")[0].disabled


def _only_gamma():
    from conductor_core.config import load_settings
    from conductor_core.router import Conductor
    from conductor_core.testing.fakes import ScriptedProvider

    conductor = Conductor(load_settings(_env_file=None, local_enabled=False), extra_providers=[ScriptedProvider("gamma")])
    fakes.CONDUCTORS.append(conductor)
    return conductor


def test_a_conductor_that_cannot_start_is_a_message(env, monkeypatch):
    def broken():
        raise ValueError("endpoint 'x' has no base_url")

    monkeypatch.setattr(fakes, "build_conductor", broken)
    st.cache_resource.clear()
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    assert not at.exception
    assert any("Conductor could not start: ValueError: endpoint 'x' has no base" in plain(e.value) for e in at.error)
