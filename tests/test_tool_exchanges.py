"""Tool exchanges in sessions: an answer's tool calls (kept while they stream), the results a
person gives them, and the turn that continues after them, as the history each lane sends.
On SQLite and PostgreSQL; the worker test streams a real tool call from the loopback OpenAI
server through the openai SDK."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator

import pytest

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.models import ChatMessage, ChatResponse, FunctionCall, Tool, ToolCall, ToolFunction
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.testing.protocol_servers import OpenAIServer
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.streaming import AnswerWorker
from conductor_core.workbench.variants import Variant
from tests.store_backends import postgres_schema

pytestmark = pytest.mark.timeout(120)

WEATHER = Tool(
    function=ToolFunction(
        name="get_weather",
        description="The weather in a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
)
CHAT = Variant(provider="local", model="gemma-3-270m", tools=(WEATHER,), tool_mocks={"get_weather": "sunny"})


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path) -> Iterator[RequestLog]:
    if request.param == "sqlite":
        opened = RequestLog(None, data_dir=tmp_path / "data")
        yield opened
        opened.close()
    else:
        with postgres_schema() as url:
            opened = RequestLog(url, data_dir=tmp_path / "data")
            yield opened
            opened.close()


@pytest.fixture
def store(log) -> SessionStore:
    return SessionStore.for_log(log)


def call(call_id: str, city: str = "Paris") -> ToolCall:
    return ToolCall(id=call_id, function=FunctionCall(name="get_weather", arguments=json.dumps({"city": city})))


def finish(store: SessionStore, answer, text: str = "", calls: list[ToolCall] | None = None) -> None:
    response = ChatResponse(
        content=text,
        tool_calls=calls,
        metadata={"id": f"req_{uuid.uuid4().hex[:8]}", "provider": "local", "model": "m"},
        analytics={"latency_ms": 1.0, "input_tokens": 1, "output_tokens": 1},
    )
    assert store.finish(answer.id, "done", content=text, response=response)


def shapes(messages: list[ChatMessage]) -> list[tuple]:
    return [(m.role.value, m.content, [c.id for c in m.tool_calls or []], m.tool_call_id) for m in messages]


def test_a_tool_exchange_is_sent_once_every_call_has_its_result_and_the_model_continues(store):
    session = store.create("chat", [CHAT])
    turn, (asked,) = store.add_turn(session.id, "Weather in Paris and Rome?", parent_id=None)
    finish(store, asked, calls=[call("call_1"), call("call_2", "Rome")])
    conversation = store.conversation(session.id)
    (shown,) = conversation.turns
    assert shown.chosen[0].awaiting_tools and [c.id for c in shown.chosen[0].tool_calls] == ["call_1", "call_2"]
    # Unanswered calls are never sent (a tool call without its result is refused by every API).
    assert conversation.context(0) == []

    with pytest.raises(ValueError, match="no result yet for get_weather"):
        store.set_tool_results(asked.id, {"call_1": "sunny"})
    store.set_tool_results(asked.id, {"call_1": "sunny, 24 °C", "call_2": "rain"})
    conversation = store.conversation(session.id)
    assert conversation.turns[0].chosen[0].tools_answered
    expected = [
        ("user", "Weather in Paris and Rome?", [], None),
        ("assistant", "", ["call_1", "call_2"], None),
        ("tool", "sunny, 24 °C", [], "call_1"),
        ("tool", "rain", [], "call_2"),
    ]
    assert shapes(conversation.context(0)) == expected

    # The model continues: a turn with no prompt, after the answer that called the tools.
    follow, (answer,) = store.add_turn(session.id, "", parent_id=turn.id, after_answer_id=asked.id, continues=True)
    assert follow.continues and follow.prompt == ""
    conversation = store.conversation(session.id)
    assert [t.continues for t in conversation.turns] == [False, True]
    assert shapes(conversation.context(0, upto=1)) == expected  # what the continuation is sent
    request = CHAT.request(conversation.context(0, upto=1))
    assert request.messages[-1].role == "tool" and request.tools == [WEATHER]
    finish(store, answer, "Sunny in Paris, rain in Rome.")

    # The next message carries the whole exchange, then the final answer, then itself.
    store.add_turn(session.id, "Thanks", parent_id=follow.id, after_answer_id=answer.id)
    conversation = store.conversation(session.id)
    assert shapes(conversation.context(0, upto=2)) == [
        *expected,
        ("assistant", "Sunny in Paris, rain in Rome.", [], None),
    ]
    # The session's title comes from the person's message, never from a continuation.
    assert store.get(session.id).title == "Weather in Paris and Rome?"


def test_a_continuation_is_sent_only_after_its_tool_exchange(store):
    session = store.create("chat", [CHAT])
    turn, (asked,) = store.add_turn(session.id, "Weather?", parent_id=None)
    finish(store, asked, "Let me look.", calls=[call("call_1")])
    store.set_tool_results(asked.id, {"call_1": "sunny"})
    follow, (answer,) = store.add_turn(session.id, "", parent_id=turn.id, after_answer_id=asked.id, continues=True)
    finish(store, answer, "It is sunny.")
    # Left out by the person: the exchange and what continued it go together.
    store.set_context(asked.id, False)
    assert store.conversation(session.id).context(0) == []
    store.set_context(asked.id, None)
    assert shapes(store.conversation(session.id).context(0)) == [
        ("user", "Weather?", [], None),
        ("assistant", "Let me look.", ["call_1"], None),
        ("tool", "sunny", [], "call_1"),
        ("assistant", "It is sunny.", [], None),
    ]
    # Regenerated: the new alternative has no tool results, and the continuation followed the old one.
    again = store.add_answer(session.id, turn.id, 0)
    finish(store, again, "Sunny, I think.")
    conversation = store.conversation(session.id)
    assert len(conversation.turns) == 1
    assert shapes(conversation.context(0)) == [
        ("user", "Weather?", [], None),
        ("assistant", "Sunny, I think.", [], None),
    ]
    # Tool results go only to an answer that called tools.
    with pytest.raises(ValueError, match="only a finished answer"):
        store.set_tool_results(again.id, {"call_1": "x"})


def test_in_a_comparison_each_column_continues_its_own_calls(store):
    plain = CHAT.model_copy(update={"temperature": 0.0})
    session = store.create("compare", [CHAT, plain])
    turn, (a, b) = store.add_turn(session.id, "Weather?", parent_id=None)
    finish(store, a, calls=[call("call_a")])
    finish(store, b, "No tools needed: sunny.")
    store.set_tool_results(a.id, {"call_a": "sunny"})
    follow, (continued,) = store.add_turn(session.id, "", parent_id=turn.id, lanes=[0], continues=True)
    assert continued.lane == 0
    finish(store, continued, "Sunny.")
    store.add_turn(session.id, "And tomorrow?", parent_id=follow.id)
    conversation = store.conversation(session.id)
    assert [t.continues for t in conversation.turns] == [False, True, False]
    assert shapes(conversation.context(0, upto=2)) == [
        ("user", "Weather?", [], None),
        ("assistant", "", ["call_a"], None),
        ("tool", "sunny", [], "call_a"),
        ("assistant", "Sunny.", [], None),
    ]
    # The other column called no tool: its history skips the continuation.
    assert shapes(conversation.context(1, upto=2)) == [
        ("user", "Weather?", [], None),
        ("assistant", "No tools needed: sunny.", [], None),
    ]


def test_mock_results_are_kept_with_the_variant_and_never_sent():
    again = Variant.model_validate_json(CHAT.model_dump_json())
    assert again.tool_mocks == {"get_weather": "sunny"}
    body = CHAT.request([ChatMessage(role="user", content="hi")]).model_dump(exclude_none=True)
    assert "sunny" not in json.dumps(body)


# --- the worker: a real streamed tool call ---------------------------------------------------------


@pytest.fixture
def upstream():
    server = OpenAIServer(reply="It is sunny in Paris.", models=["tool-model"], chunk_delay_s=0.02).start()
    yield server
    server.stop()


def test_streamed_tool_call_pieces_are_kept_as_they_arrive_and_the_model_continues(log, upstream):
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        max_retries=0,
        endpoints={"loop": EndpointConfig(base_url=upstream.url, models=["tool-model"])},
    )
    conductor = Conductor(settings, request_log=log)
    store = SessionStore.for_log(log)
    worker = AnswerWorker(conductor, store, flush_s=0.0)
    try:
        variant = Variant(provider="loop", model="tool-model", tools=(WEATHER,), tool_choice="auto")
        session = store.create("chat", [variant])
        turn, (asked,) = store.add_turn(session.id, "Weather in Paris?", parent_id=None)
        upstream.hold(after_chunks=2)  # the call's id and name, the first piece of its arguments, then a wait
        try:
            worker.start(asked.id, variant.request([ChatMessage(role="user", content="Weather in Paris?")]))
            partial = wait_for(
                lambda: (
                    (a := store.answers([asked.id])[asked.id]).live
                    and a.tool_calls[-1:]
                    and a.content == ""
                    and a.tool_calls[0].function.arguments
                    and a
                )
            )
            (piece,) = partial.tool_calls
            assert piece.function.name == "get_weather"
            assert piece.function.arguments == OpenAIServer.TOOL_ARGUMENTS[0]  # only the first piece so far
        finally:
            upstream.release()
        assert worker.wait(asked.id, 60)
        done = store.answers([asked.id])[asked.id]
        assert done.status == "done" and done.awaiting_tools
        (made,) = done.tool_calls
        assert json.loads(made.function.arguments) == {"city": "Paris"}

        store.set_tool_results(asked.id, {made.id: "22 °C and sunny"})
        follow, (answer,) = store.add_turn(session.id, "", parent_id=turn.id, after_answer_id=asked.id, continues=True)
        conversation = store.conversation(session.id)
        worker.start(answer.id, variant.request(conversation.context(0, upto=1)))
        assert worker.wait(answer.id, 60)
        final = store.answers([answer.id])[answer.id]
        assert (final.status, final.content, final.tool_calls) == ("done", upstream.reply, [])
        sent = upstream.requests[-1]["json"]["messages"]
        assert sent[-2]["role"] == "assistant" and sent[-2]["tool_calls"][0]["id"] == made.id
        assert sent[-1] == {"role": "tool", "content": "22 °C and sunny", "tool_call_id": made.id}
    finally:
        worker.close()
        conductor.close()


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


# --- the tools editor's parsing, and exports ----------------------------------------------------


def test_importing_openai_tools_says_which_tool_is_wrong_and_what_to_change():
    from playground.tools_editor import ToolDraft, ToolSet, build_tools, choice_value, parse_tools_json

    tools = [WEATHER.model_dump(mode="json", exclude_none=True), {"type": "function", "function": {"name": "now"}}]
    drafts = parse_tools_json(json.dumps(tools))
    assert [d.name for d in drafts] == ["get_weather", "now"] and drafts[1].parameters == ""
    built, problems = build_tools(drafts)
    assert problems == [] and built[0] == WEATHER and built[1].function.parameters is None
    # The deprecated `functions` form and {"tools": [...]} are taken too.
    assert parse_tools_json(json.dumps({"name": "now"}))[0].name == "now"
    assert len(parse_tools_json(json.dumps({"tools": tools}))) == 2

    bad_schema = [tools[0], {"type": "function", "function": {"name": "f", "parameters": {"type": "objekt"}}}]
    with pytest.raises(ValueError, match=r"tool 2 \(f\): parameters: not a valid JSON Schema"):
        parse_tools_json(json.dumps(bad_schema))
    with pytest.raises(ValueError, match=r"tool 1: only function tools"):
        parse_tools_json(json.dumps([{"type": "web_search"}]))
    with pytest.raises(ValueError, match=r"tool 2: it needs \"function\""):
        parse_tools_json(json.dumps([tools[0], {"type": "function"}]))
    with pytest.raises(ValueError, match="not JSON"):
        parse_tools_json("[{")
    with pytest.raises(ValueError, match=r"tool 1 \(get weather\): a tool name has only letters"):
        parse_tools_json(json.dumps([{"type": "function", "function": {"name": "get weather"}}]))

    typed = [ToolDraft("a", parameters="{"), ToolDraft("b"), ToolDraft("b"), ToolDraft("")]
    _, problems = build_tools(typed)
    assert problems == [
        "tool 1 (a): parameters are not JSON (Expecting property name enclosed in double quotes: line 1 column 2 (char 1))",
        "tool 3 (b): another tool has this name; names must differ",
        "tool 4: give it a name (letters, digits, _ or -, up to 64)",
    ]
    # A tool set on a variant, and off again; a named choice is sent as OpenAI names it.
    named = ToolSet((WEATHER,), choice_value("get_weather"), {"get_weather": "sunny", "gone": "x"})
    on = named.apply(Variant(provider="local"))
    assert on.tools == (WEATHER,) and on.tool_mocks == {"get_weather": "sunny"}
    sent = on.request([ChatMessage(role="user", content="hi")]).model_dump(mode="json", exclude_none=True)
    assert sent["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
    assert ToolSet.of(on) == ToolSet((WEATHER,), named.tool_choice, {"get_weather": "sunny"})
    off = ToolSet((), "required", {}).apply(on)
    assert (off.tools, off.tool_choice, off.tool_mocks) == (None, None, None)


def test_exports_carry_the_tools_the_calls_and_the_results(store):
    from conductor_core.workbench import exports
    from playground import share

    session = store.create("chat", [CHAT])
    turn, (asked,) = store.add_turn(session.id, "Weather?", parent_id=None)
    finish(store, asked, calls=[call("call_1")])
    store.set_tool_results(asked.id, {"call_1": "sunny <b>hot</b>"})
    _, (answer,) = store.add_turn(session.id, "", parent_id=turn.id, after_answer_id=asked.id, continues=True)
    finish(store, answer, "It is sunny.")
    transcript = share.transcript(store.conversation(session.id))
    assert [t.role for t in transcript.turns] == ["user", "assistant", "tool", "assistant"]
    assert transcript.turns[1].tool_calls == [call("call_1")]
    assert (transcript.turns[2].name, transcript.turns[2].tool_call_id) == ("get_weather", "call_1")

    markdown = exports.to_markdown(transcript)
    assert "Tools (tool choice: default):" in markdown and "- `get_weather`: The weather in a city." in markdown
    assert "**Tool call** `get_weather` (call_1):" in markdown and '{"city": "Paris"}' in markdown
    assert "## Tool result: get_weather" in markdown and "sunny <b>hot</b>" in markdown
    html = exports.to_html(transcript)
    assert "Tool call <strong>get_weather</strong>" in html and "sunny &lt;b&gt;hot&lt;/b&gt;" in html
    assert "<th>Parameters</th>" in html and "Tool result: get_weather" in html
    again = exports.Transcript.model_validate_json(exports.to_json(transcript))
    assert again.settings.tools == (WEATHER,) and again.turns[1].tool_calls == [call("call_1")]

    compare = store.create("compare", [CHAT, CHAT.model_copy(update={"temperature": 0.0})])
    _, (a, b) = store.add_turn(compare.id, "Weather?", parent_id=None)
    finish(store, a, calls=[call("call_a")])
    finish(store, b, "Sunny.")
    store.set_tool_results(a.id, {"call_a": "rain"})
    round_ = share.comparison(store.conversation(compare.id), 0)
    assert round_.columns[0].tool_results == {"call_a": "rain"} and round_.columns[1].tool_calls is None
    markdown = exports.to_markdown(round_)
    assert "**Tool call** `get_weather` (call_a):" in markdown and "**Result:**" in markdown
    assert "Tool call <strong>get_weather</strong>" in exports.to_html(round_)
