"""Tool calls on a page: each call an answer made (its name, its arguments pretty-printed,
whether they match the tool's parameters), a box per call to answer it by hand or with the
tool's mock, and Continue: the results are kept with the answer and the model's next
answer streams in a turn that continues after them (`SessionStore.add_turn(continues=True)`).

Shared by Chat (one lane) and Compare (each column its own calls, continued alone or all
at once); the answers stream through `turns.launch`, as every other answer does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import streamlit as st

from conductor_core.models import ToolCall
from conductor_core.structured import tool_call_problem
from conductor_core.workbench.sessions import Answer, Conversation, SessionInfo, Turn

from . import components as ui
from . import state, turns

__all__ = ["render_calls", "render_live_calls", "waiting", "answer_form", "continue_lanes", "use_mocks", "result_key"]


def pretty_arguments(arguments: str) -> str:
    """The arguments indented when they are JSON; as the model wrote them otherwise."""
    try:
        return json.dumps(json.loads(arguments or "{}"), indent=2, ensure_ascii=False)
    except ValueError:
        return arguments


def result_key(answer_id: str, call_id: str) -> str:
    return f"toolres_{answer_id}_{call_id}"


def render_live_calls(calls: Sequence[ToolCall]) -> None:
    """Calls as far as they have streamed: the name, and the arguments so far."""
    for call in calls:
        st.markdown(f":material/build: Calling **{ui.escape_md(call.function.name)}** ▌")
        st.code(call.function.arguments or " ", language="json", wrap_lines=True)


def render_calls(answer: Answer) -> None:
    """A finished answer's calls, each checked against its tool, with its result once sent."""
    for call in answer.tool_calls:
        with st.container(border=True, key=f"toolcall_{answer.id}_{call.id}"):
            st.markdown(f":material/build: Called **{ui.escape_md(call.function.name)}**")
            st.code(pretty_arguments(call.function.arguments), language="json", wrap_lines=True)
            problem = tool_call_problem(call, answer.variant.tools)
            if problem:
                st.caption(f":material/error: :red[Arguments do not validate:] {ui.escape_md(problem)}")
            else:
                st.caption(":material/check_circle: :green[Arguments match the tool's parameters]")
            if call.id in answer.tool_results:
                st.caption("Result sent")
                st.code(answer.tool_results[call.id], language=None, wrap_lines=True)


def _mocks(session: SessionInfo, answer: Answer) -> dict[str, str]:
    # The session's mocks now (edited since the call, perhaps), else those it had when called.
    current = session.variants[answer.lane].tool_mocks if answer.lane < len(session.variants) else None
    return {**(answer.variant.tool_mocks or {}), **(current or {})}


def use_mocks(session: SessionInfo, answers: Sequence[Answer]) -> None:
    """Fill each call's answer box with its tool's mock (calls without a mock are left as they are)."""
    for answer in answers:
        mocks = _mocks(session, answer)
        for call in answer.tool_calls:
            if call.function.name in mocks:
                st.session_state[result_key(answer.id, call.id)] = mocks[call.function.name]


def _use_mock(key: str, mock: str) -> None:
    st.session_state[key] = mock


def waiting(conversation: Conversation, index: int) -> list[Answer]:
    """The answers of turn `index` whose tool calls can be answered now: it is the last turn,
    or only a continuation of it follows (made by another column, which this one may join)."""
    shown = conversation.turns
    following = shown[index + 1] if index + 1 < len(shown) else None
    if following is not None and not (index + 2 == len(shown) and following.continues):
        return []
    taken = set(following.chosen) if following is not None else set()
    turn = shown[index]
    return [turn.chosen[lane] for lane in sorted(turn.chosen) if turn.chosen[lane].awaiting_tools and lane not in taken]


def answer_form(session: SessionInfo, turn: Turn, answer: Answer, *, busy: bool, label: str = "Continue") -> None:
    """A box per call to answer it, "Use mock" beside each, and Continue (this answer's lane)."""
    mocks = _mocks(session, answer)
    st.markdown("**Answer the tool calls**")
    for call in answer.tool_calls:
        key = result_key(answer.id, call.id)
        st.text_area(f"Result of {call.function.name} ({call.id})", key=key, height=80)
        mock = mocks.get(call.function.name)
        st.button(
            "Use mock",
            key=f"mock_{answer.id}_{call.id}",
            icon=":material/smart_toy:",
            type="tertiary",
            disabled=mock is None,
            on_click=_use_mock,
            args=(key, mock or ""),
            help="Fill in this tool's mock result (set in Tools)."
            if mock
            else "This tool has no mock result: set one in Tools.",
        )
    st.button(
        label,
        key=f"continue_{answer.id}",
        icon=":material/play_arrow:",
        type="primary",
        disabled=busy,
        on_click=continue_lanes,
        args=(session.id, turn.id, [answer.id]),
        help="Send the results; the model's next answer streams in below.",
    )


def continue_lanes(session_id: str, turn_id: str, answer_ids: Sequence[str]) -> None:
    """Keep each answer's typed results and stream the model's next answer in its lane, in a
    turn that continues after this one (a comparison's columns share it)."""
    store = state.sessions()
    conversation = store.conversation(session_id)
    index = conversation.index_of(turn_id) if conversation else None
    if index is None:
        return
    turn = conversation.turns[index]
    chosen = {a.id: a for a in turn.chosen.values()}
    answers = [chosen[a] for a in answer_ids if a in chosen and chosen[a].awaiting_tools]
    typed = {
        answer.id: {call.id: st.session_state.get(result_key(answer.id, call.id)) or "" for call in answer.tool_calls}
        for answer in answers
    }
    missing = [c.function.name for a in answers for c in a.tool_calls if not typed[a.id][c.id].strip()]
    if missing:
        turns.note(f"Answer every tool call first (no result yet for {', '.join(missing)}), or use its mock.")
        return
    if not answers:
        return
    try:
        for answer in answers:
            store.set_tool_results(answer.id, typed[answer.id])
        lanes = [a.lane for a in answers]
        following = conversation.turns[index + 1] if index + 1 < len(conversation.turns) else None
        if following is not None and following.continues and not set(lanes) & set(following.chosen):
            # Another column continued already: this one joins that turn.
            fresh = store.conversation(session_id)
            started = store.add_answers(session_id, following.id, lanes)
            turns.launch(fresh, index + 1, None, started)
            return
        single = len(conversation.session.variants) == 1
        new_turn, started = store.add_turn(
            session_id,
            "",
            parent_id=turn.id,
            after_answer_id=answers[0].id if single else None,
            lanes=lanes,
            continues=True,
        )
    except (ValueError, KeyError) as error:
        turns.note(str(error).strip("'\""))
        return
    fresh = store.conversation(session_id)
    turns.launch(fresh, fresh.index_of(new_turn.id), None, started)
