"""Turns and answers of a session on a page: starting answers, drawing them (live ones
refresh themselves from the store), and the actions on them (stop, regenerate, choose an
alternative or a branch, edit, delete, send or not as context).

Actions run as widget callbacks, before the page's script, so the page then draws the
new state from the store; the answers themselves are streamed by the process's
`AnswerWorker`, never by the page (a click elsewhere cannot cut them short).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import streamlit as st
from pydantic import ValidationError

from conductor_core.models import ChatMessage
from conductor_core.workbench.attachments import Attachment, message_parts
from conductor_core.workbench.sessions import STALE_S, Answer, Conversation, SessionInfo, Turn
from conductor_core.workbench.variants import Variant

from . import access, session_nav, state, structured_view
from . import components as ui
from .add_to_dataset import add_to_dataset

__all__ = [
    "REFRESH_S",
    "launch",
    "send",
    "render_prompt",
    "render_answer",
    "live_answer",
    "answer_actions",
    "turn_actions",
    "take_note",
]

#: How often a streaming answer is redrawn from the store.
REFRESH_S = 0.5
_NOTE = "turn_note"


def note(message: str) -> None:
    """A message for the next run of the page (callbacks cannot draw)."""
    st.session_state[_NOTE] = message


def take_note() -> None:
    message = st.session_state.pop(_NOTE, None)
    if message:
        st.warning(ui.escape_md(message), icon=":material/info:")


# --- starting answers ---------------------------------------------------------------------------


def launch(
    conversation: Conversation | None,
    upto: int | None,
    prompt: str | None,
    answers: Sequence[Answer],
    attachments: Sequence[Attachment] = (),
) -> None:
    """Start streaming each answer: its lane's history before turn `upto`, then `prompt` (and
    its `attachments`, after the text; None: a turn that continues after tool results, which
    ends the history)."""
    store, worker = state.sessions(), state.worker()
    for answer in answers:
        history = conversation.context(answer.lane, upto) if conversation is not None else []
        try:
            if prompt is None:  # continues after tool results: the history ends the request
                asked = []
            elif attachments:
                asked = [ChatMessage(role="user", parts=message_parts(prompt, list(attachments)))]
            else:
                asked = [ChatMessage(role="user", content=prompt)]
            request = answer.variant.request([*history, *asked])
        except ValidationError as error:
            problems = "; ".join(e["msg"] for e in error.errors())
            store.finish(
                answer.id,
                "error",
                content="",
                error_type="bad_request",
                error_message=f"This request cannot be sent: {problems}",
            )
            continue
        worker.start(answer.id, request, state.overrides())


def send(
    kind: str,
    session_id: str | None,
    variants: Sequence[Variant],
    prompt: str,
    attachments: Sequence[Attachment] = (),
    lanes: Sequence[int] | None = None,
) -> str | None:
    """A new turn at the end of the shown path (a new session for the first one), answered
    in every lane (or `lanes`: a column that cannot read the attachments sits this one out).
    Returns the session id, or None with a note when it cannot be sent."""
    store = state.sessions()
    prompt = prompt.strip()
    if not prompt and not attachments:
        return session_id
    if lanes is not None and not lanes:
        note("Not sent: no column reads images or PDFs. Pick a provider that does in at least one column.")
        return session_id
    existing = store.get(session_id) if session_id is not None else None
    refusal = session_nav.send_refusal(existing)
    if refusal:  # the page disables sending for them; a link (?compare=, ?replay=) must not spend either
        note(refusal)
        return session_id
    try:
        if session_id is None or existing is None:
            session_id = store.create(kind, variants, by=access.person()).id
            session_nav.open_session(kind, session_id)
        conversation = store.conversation(session_id)
        last = conversation.turns[-1] if conversation and conversation.turns else None
        single = conversation is not None and len(conversation.session.variants) == 1
        after = last.chosen[0].id if last is not None and single and 0 in last.chosen else None
        _, answers = store.add_turn(
            session_id,
            prompt,
            parent_id=last.id if last else None,
            after_answer_id=after,
            lanes=lanes,
            attachments=attachments,
        )
    except (ValueError, KeyError) as error:
        note(str(error).strip("'\""))
        return session_id
    launch(conversation, None, prompt, answers, attachments)
    return session_id


# --- callbacks ------------------------------------------------------------------------------------


def _stop(answer_id: str) -> None:
    state.worker().stop(answer_id)


def _regenerate(session_id: str, turn_id: str, lane: int) -> None:
    store = state.sessions()
    conversation = store.conversation(session_id)
    index = conversation.index_of(turn_id) if conversation else None
    if index is None:
        return
    try:
        answer = store.add_answer(session_id, turn_id, lane)
    except (ValueError, KeyError) as error:
        note(str(error))
        return
    turn = conversation.turns[index]
    launch(conversation, index, None if turn.continues else turn.prompt, [answer], conversation.attachments(turn))


def _edit(session_id: str, turn_id: str, key: str) -> None:
    store = state.sessions()
    text = (st.session_state.get(key) or "").strip()
    conversation = store.conversation(session_id)
    index = conversation.index_of(turn_id) if conversation else None
    if index is None or not text:
        note("Type the new message first.")
        return
    turn = conversation.turns[index]
    kept = conversation.attachments(turn)  # an edit changes the text; the attachments stay
    lanes = (sorted(turn.chosen) or None) if kept else None  # columns that sat it out still do
    try:
        _, answers = store.add_turn(
            session_id,
            text,
            parent_id=turn.parent_id,
            after_answer_id=turn.after_answer_id,
            lanes=lanes,
            attachments=kept,
        )
    except (ValueError, KeyError) as error:
        note(str(error))
        return
    launch(conversation, index, text, answers, kept)


def _delete_turn(turn_id: str) -> None:
    try:
        state.sessions().delete_turn(turn_id)
    except ValueError as error:
        note(str(error))


def _choose_turn(turn_id: str) -> None:
    state.sessions().choose_turn(turn_id)


def _choose_answer(answer_id: str) -> None:
    state.sessions().choose_answer(answer_id)


def _set_context(answer_id: str, include: bool | None) -> None:
    state.sessions().set_context(answer_id, include)


# --- drawing ----------------------------------------------------------------------------------------


def render_prompt(text: str) -> None:
    """What the person typed, exactly: no Markdown, no Streamlit directives, no LaTeX."""
    st.text(text)


_STATUS = {
    "stopped": (":material/stop_circle:", "Stopped: the partial answer is kept."),
    "interrupted": (
        ":material/power_off:",
        "Interrupted: the server stopped while this answer was streaming; the partial answer is kept.",
    ),
}


def render_answer(answer: Answer, key: str) -> None:
    """A finished answer: its text (Markdown, raw HTML inert), what happened, its figures."""
    if answer.content or (answer.status == "done" and not answer.tool_calls):
        ui.render_answer_text(answer.content)
    _output_check(answer)
    if answer.tool_calls:
        from . import tool_calls  # here, not at the top: tool_calls starts answers through this module

        tool_calls.render_calls(answer)
    if answer.status == "error":
        ui.render_error(answer.error_message or "The request failed.", attempts=answer.attempts)
    elif answer.status == "incomplete":
        ui.render_error(answer.error_message or "the stream broke", attempts=answer.attempts, incomplete=True)
    elif answer.status in _STATUS:
        icon, text = _STATUS[answer.status]
        st.caption(f"{icon} {text}")
    if answer.response is not None:
        ui.render_figures(answer.response)
        ui.render_routing(answer.response)
    elif answer.status in ("stopped", "interrupted") and answer.elapsed_ms is not None:
        st.markdown(ui.seen_figures_line(answer.variant.target, answer.elapsed_ms, answer.first_text_ms))


def _output_check(answer: Answer) -> None:
    """Asked for JSON: whether the finished answer parsed and matched its schema."""
    if answer.status == "done":
        structured_view.show_output_check(answer.content, answer.variant.response_format, key=answer.id)


@st.fragment(run_every=REFRESH_S)
def live_answer(answer_id: str) -> None:
    """A streaming answer, redrawn from the store until it ends; then the whole page reruns
    (the input comes back, the answer gets its figures)."""
    found = state.sessions().answers([answer_id]).get(answer_id)
    if found is None or not (found.live or found.settling) or time.time() - found.updated_ts > STALE_S:
        st.rerun()
        return
    if found.settling:  # stopped: its worker is closing the stream and saving what arrived
        if found.content:
            st.markdown(found.content)
        st.caption(":material/stop_circle: Stopping: closing the stream and keeping what arrived…")
        return
    if found.content:
        st.markdown(found.content + " ▌")
    if found.tool_calls:
        from . import tool_calls  # here, not at the top: tool_calls starts answers through this module

        tool_calls.render_live_calls(found.tool_calls)
    elif not found.content:
        st.caption(f":material/hourglass_top: {ui.escape_md(found.notice or 'Waiting for the first token…')}")
    if found.notice and found.content:
        st.caption(f":material/hourglass_top: {ui.escape_md(found.notice)}")
    st.button(
        "Stop",
        key=f"stop_{answer_id}",
        on_click=_stop,
        args=(answer_id,),
        icon=":material/stop_circle:",
        type="secondary",
    )


def _flip(label: str, options: Sequence[str], index: int, on_choose, key: str, *, help: str) -> None:
    """‹ 2/3 › between alternatives or branches."""
    if len(options) < 2:
        return
    row = st.container(horizontal=True, gap="small", vertical_alignment="center", width="content")
    with row:
        st.button(
            "‹",
            key=f"{key}_prev",
            type="tertiary",
            disabled=index == 0,
            on_click=on_choose,
            args=(options[max(0, index - 1)],),
            help=f"Previous {label}",
        )
        st.caption(f"{label} {index + 1}/{len(options)}", help=help)
        st.button(
            "›",
            key=f"{key}_next",
            type="tertiary",
            disabled=index >= len(options) - 1,
            on_click=on_choose,
            args=(options[min(len(options) - 1, index + 1)],),
            help=f"Next {label}",
        )


def answer_actions(
    session: SessionInfo, turn: Turn, lane: int, *, busy: bool, last: bool, regenerate: bool = True
) -> None:
    """Under an answer: its alternatives, Regenerate, Copy, and whether it is sent as context."""
    answer = turn.chosen[lane]
    row = st.container(horizontal=True, gap="small", vertical_alignment="center")
    with row:
        options = [a.id for a in turn.alternatives.get(lane, [])]
        _flip(
            "answer",
            options,
            turn.alternative_index(lane),
            _choose_answer,
            f"alt_{turn.id}_{lane}",
            help="Answers to this message, kept when you regenerate.",
        )
        if regenerate:
            target = session.variants[lane].target
            st.button(
                "Regenerate",
                icon=":material/refresh:",
                key=f"regen_{turn.id}_{lane}",
                type="tertiary",
                disabled=busy,
                on_click=_regenerate,
                args=(session.id, turn.id, lane),
                help=f"Ask {target} again (change the model in the settings to ask another); the answers so far are kept."
                + ("" if last else " Later messages stay with the answer they followed."),
            )
        ui.copy_control(answer.content, key=f"copy_{answer.id}")
        if answer.request_id and answer.status == "done":
            if st.button(
                "Add to dataset",
                icon=":material/playlist_add:",
                key=f"ds_{answer.id}",
                type="tertiary",
                help="This message (and the conversation before it) as a row of a saved dataset; the answer as "
                "the expected one if you mark it good.",
            ):
                add_to_dataset(answer.request_id, session.kind)
        if answer.content.strip():
            if answer.in_context:
                st.button(
                    "Leave out",
                    icon=":material/visibility_off:",
                    key=f"ctx_{answer.id}",
                    type="tertiary",
                    on_click=_set_context,
                    args=(answer.id, False if answer.status == "done" else None),
                    help="Do not send this message and answer with the next ones.",
                )
            else:
                st.caption(":material/visibility_off: not sent as context")
                st.button(
                    "Send as context",
                    icon=":material/visibility:",
                    key=f"ctx_{answer.id}",
                    type="tertiary",
                    on_click=_set_context,
                    args=(answer.id, True if answer.status != "done" else None),
                    help="Send this message and its (partial) answer with the next ones.",
                )
        elif answer.status != "done":
            st.caption(":material/visibility_off: not sent as context")


def turn_actions(session: SessionInfo, turn: Turn, *, busy: bool) -> None:
    """Under a message: its branches, Edit (resend from here), Delete."""
    row = st.container(horizontal=True, gap="small", vertical_alignment="center")
    with row:
        _flip(
            "version",
            turn.branches,
            turn.branch_index,
            _choose_turn,
            f"branch_{turn.id}",
            help="Edited versions of this message; each keeps the conversation that followed it.",
        )
        with st.popover("Edit", icon=":material/edit:", type="tertiary", disabled=busy, key=f"edit_pop_{turn.id}"):
            key = f"edit_{turn.id}"
            st.text_area("Edit the message", value=turn.prompt, key=key, height=120)
            st.caption("Sends it again from here. What followed stays on the other version, one click away.")
            st.button(
                "Send edited",
                key=f"edit_send_{turn.id}",
                icon=":material/send:",
                type="primary",
                on_click=_edit,
                args=(session.id, turn.id, key),
            )
        st.button(
            "Delete",
            icon=":material/delete:",
            key=f"del_{turn.id}",
            type="tertiary",
            disabled=busy,
            on_click=_delete_turn,
            args=(turn.id,),
            help="Remove this message and its answers; later messages stay.",
        )
