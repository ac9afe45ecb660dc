"""Sessions (conductor_core.workbench.sessions) and the answer worker (.streaming), on SQLite
and PostgreSQL (one schema per test, as in tests/test_store.py), with answers streamed by a
real Conductor from loopback servers speaking the OpenAI protocol through the openai SDK."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.models import ChatMessage, ChatResponse, MessageRole
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.testing.fakes import Reply, ScriptedProvider
from conductor_core.testing.protocol_servers import OpenAIServer
from conductor_core.workbench.sessions import STALE_S, SessionStore, answers_table
from conductor_core.workbench.streaming import AnswerWorker
from conductor_core.workbench.variants import Variant
from tests.secret_support import leaks
from tests.store_backends import postgres_schema

pytestmark = pytest.mark.timeout(120)

CHAT = Variant(provider="local", model="gemma-3-270m", temperature=0.2)


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None
    else:
        with postgres_schema() as url:
            yield url


@pytest.fixture
def logs(database_url, tmp_path):
    """Make request logs on the test's database (two of them act as two processes)."""
    opened: list[RequestLog] = []

    def make(**kwargs) -> RequestLog:
        log = RequestLog(database_url, data_dir=tmp_path / "data", **kwargs)
        opened.append(log)
        return log

    yield make
    for log in opened:
        log.close()


@pytest.fixture
def store(logs) -> SessionStore:
    return SessionStore.for_log(logs())


def finish_done(store: SessionStore, answer, text: str) -> None:
    response = ChatResponse(
        content=text,
        metadata={
            "id": f"req_{uuid.uuid4().hex[:8]}",
            "provider": answer.variant.provider,
            "model": answer.variant.model or "m",
        },
        analytics={"latency_ms": 12.0, "input_tokens": 3, "output_tokens": len(text.split())},
    )
    assert store.finish(answer.id, "done", content=text, response=response)


def say(store: SessionStore, session, prompt: str, reply: str | None, *, status: str = "done"):
    """One exchange on the shown path: the turn, and its answer finished with `status`."""
    conversation = store.conversation(session.id)
    last = conversation.turns[-1] if conversation.turns else None
    turn, answers = store.add_turn(
        session.id, prompt, parent_id=last.id if last else None, after_answer_id=last.chosen[0].id if last else None
    )
    for answer in answers:
        if status == "done":
            finish_done(store, answer, reply or "")
        else:
            store.finish(
                answer.id, status, content=reply or "", error_type="bad_request" if status == "error" else None
            )
    return turn, answers


# --- sessions ----------------------------------------------------------------------------------


def test_a_session_keeps_its_settings_and_is_found_again(store):
    session = store.create("chat", [CHAT])
    assert session.title == "" and store.get(session.id).variants == [CHAT]
    say(store, session, "What is   a circuit\nbreaker?", "A pattern.")
    found = store.get(session.id)
    assert found.title == "What is a circuit breaker?"  # from the first prompt, on one line
    changed = CHAT.model_copy(
        update={"temperature": 1.3, "system": "Be brief.", "top_p": 0.5, "stop": ("END",), "seed": 7}
    )
    rev = store.set_variants(session.id, [changed])
    assert rev == found.settings_rev + 1
    assert store.get(session.id).variants == [changed]
    # The title is only set once; rename changes it.
    say(store, session, "Second question", "ok")
    assert store.get(session.id).title == "What is a circuit breaker?"
    assert store.rename(session.id, "  Breakers  ")
    assert store.get(session.id).title == "Breakers"
    with pytest.raises(ValueError, match="cannot be empty"):
        store.rename(session.id, "   ")


def test_recent_sessions_newest_first_by_kind_and_searched_by_text(store):
    first = store.create("chat", [CHAT])
    say(store, first, "Tell me about zebras", "Zebras are striped.")
    second = store.create("compare", [CHAT, CHAT.model_copy(update={"temperature": 1.0})])
    say_compare = store.add_turn(second.id, "Which is faster, 100% or 50_%?", parent_id=None)
    third = store.create("chat", [CHAT])
    say(store, third, "Hello", "Hi there, about giraffes.")
    assert [s.id for s in store.recent()] == [third.id, second.id, first.id]
    assert [s.id for s in store.recent("chat")] == [third.id, first.id]
    assert [s.id for s in store.recent(search="ZEBRA")] == [first.id]  # title / prompt, any case
    assert [s.id for s in store.recent(search="giraffes")] == [third.id]  # answers too
    # LIKE's wildcards are searched for literally.
    assert [s.id for s in store.recent(search="50_%")] == [second.id]
    assert [s.id for s in store.recent(search="%")] == [second.id]
    assert say_compare[0].prompt.startswith("Which")


def test_delete_removes_the_session_and_everything_in_it(store):
    session = store.create("chat", [CHAT])
    say(store, session, "One", "1")
    other = store.create("chat", [CHAT])
    say(store, other, "Kept", "yes")
    assert store.delete(session.id)
    assert store.get(session.id) is None and store.conversation(session.id) is None
    with store.engine.connect() as conn:
        left = conn.execute(text("SELECT session_id FROM wb_answers")).scalars().all()
    assert set(left) == {other.id}
    assert not store.delete(session.id)


def test_failed_stopped_and_interrupted_turns_are_not_sent_as_context(store):
    session = store.create("chat", [CHAT])
    say(store, session, "First", "One.")
    say(store, session, "x" * 20_000, None, status="error")  # e.g. a context overflow
    say(store, session, "Long answer please", "It was going to be long but", status="stopped")
    say(store, session, "And this?", "half an", status="incomplete")
    conversation = store.conversation(session.id)
    assert [t.chosen[0].status for t in conversation.turns] == ["done", "error", "stopped", "incomplete"]
    sent = conversation.context(0)
    assert [(m.role, m.content) for m in sent] == [(MessageRole.user, "First"), (MessageRole.assistant, "One.")]
    # The person may choose to send a stopped answer's text after all, or leave a good one out.
    stopped = conversation.turns[2].chosen[0]
    store.set_context(stopped.id, True)
    store.set_context(conversation.turns[0].chosen[0].id, False)
    sent = store.conversation(session.id).context(0)
    assert [m.content for m in sent] == ["Long answer please", "It was going to be long but"]
    # A failed answer with no text is never sent, even when asked (two user messages in a row).
    store.set_context(conversation.turns[1].chosen[0].id, True)
    assert "x" * 20_000 not in [m.content for m in store.conversation(session.id).context(0)]


def test_regenerate_keeps_alternatives_and_later_turns_follow_the_answer_they_saw(store):
    session = store.create("chat", [CHAT])
    one, (first,) = say(store, session, "Q1", "A1")
    two, _ = say(store, session, "Q2", "A2")
    # Regenerate the first answer with another model: the path now ends there, because Q2
    # was asked after A1, not after the new answer.
    other = CHAT.model_copy(update={"provider": "openai", "model": "gpt-4o-mini"})
    regenerated = store.add_answer(session.id, one.id, 0, other)
    finish_done(store, regenerated, "A1 bis")
    conversation = store.conversation(session.id)
    assert [t.prompt for t in conversation.turns] == ["Q1"]
    turn = conversation.turns[0]
    assert [a.content for a in turn.alternatives[0]] == ["A1", "A1 bis"]
    assert turn.chosen[0].content == "A1 bis" and turn.alternative_index(0) == 1
    assert turn.chosen[0].variant == other
    # Flip back: the old continuation is there again.
    store.choose_answer(first.id)
    conversation = store.conversation(session.id)
    assert [t.prompt for t in conversation.turns] == ["Q1", "Q2"]
    assert [m.content for m in conversation.context(0)] == ["Q1", "A1", "Q2", "A2"]


def test_edit_makes_a_branch_you_can_go_back_to(store):
    session = store.create("chat", [CHAT])
    say(store, session, "Q1", "A1")
    two, _ = say(store, session, "Q2 with a typo", "A2")
    say(store, session, "Q3", "A3")
    conversation = store.conversation(session.id)
    edited, (answer,) = store.add_turn(
        session.id, "Q2 fixed", parent_id=two.parent_id, after_answer_id=two.after_answer_id
    )
    # What the edited turn sends: the history before the turn it replaces.
    assert [m.content for m in conversation.context(0, upto=conversation.index_of(two.id))] == ["Q1", "A1"]
    finish_done(store, answer, "A2 fixed")
    conversation = store.conversation(session.id)
    assert [t.prompt for t in conversation.turns] == ["Q1", "Q2 fixed"]
    assert conversation.turns[1].branches == [two.id, edited.id] and conversation.turns[1].branch_index == 1
    store.choose_turn(two.id)
    assert [t.prompt for t in store.conversation(session.id).turns] == ["Q1", "Q2 with a typo", "Q3"]


def test_delete_a_turn_keeps_the_turns_after_it(store):
    session = store.create("chat", [CHAT])
    say(store, session, "Q1", "A1")
    bad, _ = say(store, session, "oops", None, status="error")
    say(store, session, "Q3", "A3")
    assert store.delete_turn(bad.id)
    conversation = store.conversation(session.id)
    assert [t.prompt for t in conversation.turns] == ["Q1", "Q3"]
    assert [m.content for m in conversation.context(0)] == ["Q1", "A1", "Q3", "A3"]
    assert not store.delete_turn(bad.id)


def test_a_comparison_keeps_one_history_per_column(store):
    cold, hot = CHAT.model_copy(update={"temperature": 0.0}), CHAT.model_copy(update={"temperature": 1.5})
    session = store.create("compare", [cold, hot])
    assert session.labels == ["local/gemma-3-270m · T=0", "local/gemma-3-270m · T=1.5"]
    turn, (a, b) = store.add_turn(session.id, "Round 1", parent_id=None)
    assert (a.lane, a.variant, b.lane, b.variant) == (0, cold, 1, hot)
    finish_done(store, a, "cold one")
    store.finish(b.id, "error", content="", error_type="timeout", error_message="too slow")
    turn2, (c, d) = store.add_turn(session.id, "Round 2", parent_id=turn.id)
    conversation = store.conversation(session.id)
    assert [t.prompt for t in conversation.turns] == ["Round 1", "Round 2"]
    # Each column sends its own history: the failed column starts afresh.
    assert [m.content for m in conversation.context(0, upto=1)] == ["Round 1", "cold one"]
    assert conversation.context(1, upto=1) == []
    store.set_vote(turn.id, "tie", "vote_1")
    assert store.conversation(session.id).turns[0].vote == "tie"
    # The number of columns is fixed once there are messages; their settings are not.
    with pytest.raises(ValueError, match="start a new one"):
        store.set_variants(session.id, [cold, hot, cold])
    store.set_variants(session.id, [cold, hot.model_copy(update={"max_tokens": 64})])


def test_two_tabs_cannot_interleave_turns_while_an_answer_streams(store):
    session = store.create("chat", [CHAT])
    turn, (answer,) = store.add_turn(session.id, "Q1", parent_id=None)
    with pytest.raises(ValueError, match="still streaming"):
        store.add_turn(session.id, "Q2", parent_id=turn.id, after_answer_id=answer.id)
    with pytest.raises(ValueError, match="still streaming"):
        store.add_answer(session.id, turn.id, 0)
    assert store.stop(answer.id)
    store.add_turn(session.id, "Q2", parent_id=turn.id, after_answer_id=answer.id)


def test_stop_is_immediate_and_the_worker_adds_what_had_arrived(store):
    session = store.create("chat", [CHAT])
    _, (answer,) = store.add_turn(session.id, "Q", parent_id=None)
    assert store.progress(answer.id, "Once upon")
    assert store.stop(answer.id)
    assert not store.stop(answer.id)
    assert not store.progress(answer.id, "Once upon a time")  # the worker learns it must stop
    assert store.finish(answer.id, "stopped", content="Once upon a time", elapsed_ms=50.0)
    shown = store.answers([answer.id])[answer.id]
    assert (shown.status, shown.content, shown.elapsed_ms) == ("stopped", "Once upon a time", 50.0)
    # A stopped answer stays stopped, even if the stream's end arrives after all.
    finish_done(store, answer, "Once upon a time, the end.")
    assert store.answers([answer.id])[answer.id].status == "stopped"


def test_an_answer_whose_worker_went_away_is_interrupted(store):
    session = store.create("chat", [CHAT])
    _, (answer,) = store.add_turn(session.id, "Q", parent_id=None)
    store.progress(answer.id, "partial text")
    with store.engine.begin() as conn:  # as if its process died STALE_S ago
        conn.execute(answers_table.update().values(updated_ts=time.time() - STALE_S - 1))
    shown = store.conversation(session.id).turns[0].chosen[0]
    assert (shown.status, shown.content) == ("interrupted", "partial text")
    assert not shown.in_context


def test_text_with_nul_bytes_and_any_unicode_is_kept(store):
    session = store.create("chat", [CHAT])
    prompt = "nul\x00byte, emoji 🎈, RTL مرحبا"
    _, (answer,) = store.add_turn(session.id, prompt, parent_id=None)
    finish_done(store, answer, "ok\x00")
    turn = store.conversation(session.id).turns[0]
    on_postgres = store.engine.dialect.name == "postgresql"
    assert turn.prompt == (prompt.replace("\x00", "\u2400") if on_postgres else prompt)


def test_two_processes_share_sessions(logs):
    one, two = SessionStore.for_log(logs()), SessionStore.for_log(logs())
    session = one.create("chat", [CHAT])
    say(one, session, "From process one", "answered")
    seen = two.conversation(session.id)
    assert [t.prompt for t in seen.turns] == ["From process one"]
    two.rename(session.id, "Renamed by two")
    assert one.get(session.id).title == "Renamed by two"


def test_without_prompt_logging_sessions_live_in_memory_only(tmp_path):
    log = RequestLog(None, data_dir=tmp_path / "data", log_prompts=False)
    try:
        store = SessionStore.for_log(log)
        assert store.memory
        session = store.create("chat", [CHAT])
        say(store, session, "secret prompt 5f1c", "secret answer")
        assert store.conversation(session.id).turns[0].prompt == "secret prompt 5f1c"
        log.flush()
        for path in (tmp_path / "data").rglob("*"):
            if path.is_file():
                assert b"secret prompt 5f1c" not in path.read_bytes()
        assert SessionStore.for_log(log).get(session.id) is None  # another store (process) never sees it
    finally:
        log.close()


# --- the worker ---------------------------------------------------------------------------------


@pytest.fixture
def upstream():
    server = OpenAIServer(
        reply=" ".join(f"word{i}" for i in range(60)), models=["slow-model"], chunk_delay_s=0.05
    ).start()
    yield server
    server.stop()


@pytest.fixture
def conductor(logs, upstream):
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        max_retries=0,
        endpoints={"loop": EndpointConfig(base_url=upstream.url, models=["slow-model"])},
    )
    scripted = ScriptedProvider("scripted", reply="Scripted reply.", models=["s-1"])
    c = Conductor(settings, request_log=logs(), extra_providers=[scripted])
    yield c
    c.close()


def wait_for(predicate, timeout: float = 60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    raise AssertionError("condition not met in time")


def test_the_worker_streams_an_answer_into_the_store(conductor, upstream):
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    variant = Variant(
        provider="loop", model="slow-model", temperature=0.3, max_tokens=200, top_p=0.9, seed=3, system="Terse."
    )
    session = store.create("chat", [variant])
    turn, (answer,) = store.add_turn(session.id, "Count", parent_id=None)
    worker.start(answer.id, variant.request([ChatMessage(role="user", content="Count")]))
    # Progress is visible while it streams, from the store alone.
    partial = wait_for(
        lambda: (a := store.answers([answer.id])[answer.id]).live and a.content.startswith("word0") and a
    )
    assert partial.content and len(partial.content) < len(upstream.reply)
    assert worker.wait(answer.id, 30)
    done = store.answers([answer.id])[answer.id]
    assert (done.status, done.content) == ("done", upstream.reply)
    assert done.response.analytics.output_tokens > 0 and done.first_text_ms is not None
    # The upstream received the variant's settings, system prompt first.
    body = upstream.requests[-1]["json"]
    assert (body["model"], body["temperature"], body["top_p"], body["seed"], body["max_tokens"]) == (
        "slow-model",
        0.3,
        0.9,
        3,
        200,
    )
    assert body["messages"] == [{"role": "system", "content": "Terse."}, {"role": "user", "content": "Count"}]
    # The answer is linked to its request-log row.
    rows = conductor.log.records()
    assert [r.request_id for r in rows if r.status == "ok"] == [done.request_id]
    assert store.answer_for_request(done.request_id).id == answer.id


def test_stop_closes_the_upstream_stream_keeps_the_text_and_the_log_says_cancelled(conductor, upstream):
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    variant = Variant(provider="loop", model="slow-model", max_tokens=500)
    session = store.create("chat", [variant])
    _, (answer,) = store.add_turn(session.id, "Count slowly", parent_id=None)
    worker.start(answer.id, variant.request([ChatMessage(role="user", content="Count slowly")]))
    wait_for(lambda: "word3" in store.answers([answer.id])[answer.id].content)
    assert worker.stop(answer.id)
    assert store.answers([answer.id])[answer.id].status == "stopped"  # at once
    assert worker.wait(answer.id, 10)
    stopped = store.answers([answer.id])[answer.id]
    assert stopped.status == "stopped" and stopped.content.startswith("word0 word1 word2 word3")
    assert len(stopped.content) < len(upstream.reply) and stopped.elapsed_ms > 0
    wait_for(lambda: upstream.in_flight == 0, 10)  # the HTTP stream was closed, long before its end
    cancelled = wait_for(lambda: [r for r in conductor.log.records() if r.error_type == "cancelled"])
    assert cancelled[0].status == "incomplete" and cancelled[0].provider == "loop"
    assert not stopped.in_context


def test_an_answer_that_pauses_shows_every_word_that_came_before_the_pause(conductor, upstream):
    """Text is written at most every FLUSH_S while it comes; when the upstream pauses mid-answer
    (here: held after three words), what came last is written too, not kept back until the next
    word (the page showed "word0" for as long as the pause lasted)."""
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    upstream.chunk_delay_s = 0.0  # the three words come at once, inside one FLUSH_S
    upstream.hold(after_chunks=3)
    try:
        variant = Variant(provider="loop", model="slow-model")
        session = store.create("chat", [variant])
        _, (answer,) = store.add_turn(session.id, "Count", parent_id=None)
        worker.start(answer.id, variant.request([ChatMessage(role="user", content="Count")]))
        wait_for(lambda: upstream.held == 1)
        shown = wait_for(lambda: (a := store.answers([answer.id])[answer.id]).content == "word0 word1 word2 " and a)
        assert shown.live
    finally:
        upstream.release()
    assert worker.wait(answer.id, 60)
    assert store.answers([answer.id])[answer.id].content == upstream.reply


def test_stop_before_the_first_token_closes_the_upstream_at_once(conductor, upstream):
    """A model still loading or an upstream that hangs: Stop does not wait for a token."""
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    upstream.latency_s = 60.0  # nothing arrives for a minute
    variant = Variant(provider="loop", model="slow-model")
    session = store.create("chat", [variant])
    _, (answer,) = store.add_turn(session.id, "Hello?", parent_id=None)
    worker.start(answer.id, variant.request([ChatMessage(role="user", content="Hello?")]))
    wait_for(lambda: upstream.in_flight == 1, 60)
    asked = time.monotonic()
    assert worker.stop(answer.id)
    assert worker.wait(answer.id, 40)
    wait_for(lambda: upstream.in_flight == 0, 40)
    assert time.monotonic() - asked < 45  # before the minute was up (a bound that proves it, not a speed)
    stopped = store.answers([answer.id])[answer.id]
    assert (stopped.status, stopped.content) == ("stopped", "")
    # The answer names its request: the log's cancelled row is found from it.
    rows = wait_for(lambda: [r for r in conductor.log.records() if r.request_id == stopped.request_id])
    assert [r.error_type for r in rows] == ["cancelled"]  # status "error": nothing had arrived


def test_stop_from_another_process_reaches_the_worker(conductor, upstream, logs):
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    other = SessionStore.for_log(logs())  # another playground process on the same database
    variant = Variant(provider="loop", model="slow-model", max_tokens=500)
    session = store.create("chat", [variant])
    _, (answer,) = store.add_turn(session.id, "Count slowly", parent_id=None)
    worker.start(answer.id, variant.request([ChatMessage(role="user", content="Count slowly")]))
    wait_for(lambda: "word2" in other.answers([answer.id])[answer.id].content)
    assert other.stop(answer.id)
    assert worker.wait(answer.id, 10)
    wait_for(lambda: upstream.in_flight == 0, 10)
    assert store.answers([answer.id])[answer.id].status == "stopped"


def test_failures_and_cut_streams_are_recorded_on_the_answer(conductor):
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    scripted = conductor.registry.providers["scripted"]
    from conductor_core.errors import BadRequestError

    scripted.script(
        BadRequestError(
            "scripted rejected the request (HTTP 400: context overflow)", provider="scripted", status_code=400
        ),
        Reply(text="one two three four five six", cut_after=3),
    )
    variant = Variant(provider="scripted", model="s-1")
    session = store.create("chat", [variant])
    turn, (failed,) = store.add_turn(session.id, "Too long", parent_id=None)
    worker.start(failed.id, variant.request([ChatMessage(role="user", content="Too long")]))
    assert worker.wait(failed.id, 10)
    failed = store.answers([failed.id])[failed.id]
    assert (failed.status, failed.error_type) == ("error", "bad_request")
    assert "context overflow" in failed.error_message and failed.request_id
    _, (cut,) = store.add_turn(session.id, "Again", parent_id=turn.id, after_answer_id=failed.id)
    worker.start(
        cut.id, variant.request(store.conversation(session.id).context(0) + [ChatMessage(role="user", content="Again")])
    )
    assert worker.wait(cut.id, 10)
    cut = store.answers([cut.id])[cut.id]
    assert (cut.status, cut.content) == ("incomplete", "one two three")
    assert "stream cut" in cut.error_message
    # The failed turn was not sent with the next one.
    assert [m.content for m in scripted.calls[-1].messages] == ["Again"]


def test_closing_the_worker_marks_its_answers_interrupted(conductor, upstream):
    store = SessionStore.for_log(conductor.log)
    worker = AnswerWorker(conductor, store)
    variant = Variant(provider="loop", model="slow-model", max_tokens=500)
    session = store.create("chat", [variant])
    _, (answer,) = store.add_turn(session.id, "Count", parent_id=None)
    worker.start(answer.id, variant.request([ChatMessage(role="user", content="Count")]))
    wait_for(lambda: store.answers([answer.id])[answer.id].content)
    worker.close()  # what happens at process exit
    assert store.answers([answer.id])[answer.id].status == "interrupted"
    assert worker.wait(answer.id, 10)
    assert store.answers([answer.id])[answer.id].status == "interrupted"
    with pytest.raises(RuntimeError, match="closed"):
        worker.start(answer.id, variant.request([ChatMessage(role="user", content="Count")]))


def test_the_store_path_ignores_missing_parents(store, tmp_path: Path):
    session = store.create("chat", [CHAT])
    turn, (answer,) = store.add_turn(session.id, "orphan", parent_id="turn_gone")
    finish_done(store, answer, "still shown")
    assert [t.prompt for t in store.conversation(session.id).turns] == ["orphan"]


def test_a_key_an_upstream_echoes_is_never_stored_or_shown(logs):
    """An upstream that quotes the caller's key in its answer (seen with misconfigured proxies):
    the session keeps the answer with the key redacted, as the request log does, while it
    streams and once it is done, so neither the page nor the sessions table holds it."""
    canary = "sk-AgI8zakxMJ8tUzFxWBFBmdK8"
    # Whole, and a piece of it one character a line (which the stored JSON writes as "\n").
    reply = f"Your key is {canary}, or:\n{chr(10).join(canary[3:13])}\nand more words follow here"
    echo = OpenAIServer(reply=reply, models=["echo"], chunk_delay_s=0.02).start()
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        max_retries=0,
        endpoints={"echo": EndpointConfig(base_url=echo.url, api_key=canary, models=["echo"])},
    )
    conductor = Conductor(settings, request_log=logs())
    try:
        store = SessionStore.for_log(conductor.log)
        worker = AnswerWorker(conductor, store)
        variant = Variant(provider="echo", model="echo")
        session = store.create("chat", [variant])
        _, (answer,) = store.add_turn(session.id, "What is my key?", parent_id=None)
        worker.start(answer.id, variant.request([ChatMessage(role="user", content="What is my key?")]))
        assert worker.wait(answer.id, 30)
        done = store.answers([answer.id])[answer.id]
        assert done.status == "done" and "Your key is" in done.content
        assert not leaks(canary, done.content) and not leaks(canary, done.response.content)
        with conductor.log.engine.connect() as conn:
            stored = conn.execute(text("SELECT content, response FROM wb_answers")).all()
        assert stored and all(not leaks(canary, content or "") for content, _ in stored)
        for _, response in stored:
            assert response is None or not leaks(canary, json.loads(response)["content"])
    finally:
        conductor.close()
        echo.stop()
