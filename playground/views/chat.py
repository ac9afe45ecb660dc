"""Playground: a conversation with one provider (or AUTO), kept as a session.

The URL names the session; its settings and every turn live in the database, so a reload,
a second tab or another day opens it as it was. Answers stream in the background (they
complete if you leave the page) and can be stopped, regenerated and flipped through; a
message can be edited (a branch) or deleted; failed and stopped turns are not sent again.
"""

from __future__ import annotations

import streamlit as st

from playground import attachments, controls, prompt_open, session_nav, share, state, tool_calls, tools_editor, turns

c = state.conductor()
store = state.sessions()

prompt_open.take("chat")  # ?open_prompt=NAME@LABEL: a saved prompt, sent once its variables are filled in
sid = session_nav.current("chat")
conversation = store.conversation(sid) if sid else None
if sid and conversation is None:
    session_nav.forget("chat")
    sid = None
session = conversation.session if conversation else None
busy = bool(conversation and conversation.live)
refusal = session_nav.send_refusal(session)  # a viewer reads and exports, never sends

# --- settings: the session's, loaded into the controls when it opens or another tab changed them
stored = session.variants[0] if session else st.session_state.get("chat_draft", controls.DEFAULT_VARIANT)
revision = (sid, session.settings_rev if session else None)
if st.session_state.get("chat_loaded") != revision or not (controls.loaded("chat") and tools_editor.loaded("chat")):
    controls.load("chat", stored)
    tools_editor.load("chat", tools_editor.ToolSet.of(stored))
    st.session_state["chat_loaded"] = revision

with st.sidebar:
    session_nav.sidebar_list("chat", sid)
    st.subheader("Model")
    labels = {name: state.provider_label(c, name) for name in ["auto", *state.provider_names(c)]}
    variant = controls.variant_controls(c, "chat", providers=state.provider_names(c), allow_auto=True, labels=labels)
    with st.expander(f"Tools ({len(stored.tools or ())})", icon=":material/build:"):
        tools = tools_editor.tool_editor("chat")
    variant = tools.apply(variant) if variant is not None and tools is not None else None
    held = attachments.held_message("chat", c, variant)  # a message with attachments this target could not read

if variant is not None and variant != stored and not refusal:
    if session is not None:
        st.session_state["chat_loaded"] = (sid, store.set_variants(sid, [variant]))
    else:
        st.session_state["chat_draft"] = variant

# --- the conversation ---------------------------------------------------------------------------
st.title("Playground")
session_nav.header("chat", session, busy=busy)
if (opened_prompt := prompt_open.form("chat")) is not None:
    reference, version, values = opened_prompt
    prompt_open.send("chat", reference, version, values, [version.variant(values)])
    st.rerun()
if store.memory:
    st.info(
        "Prompt logging is off (CONDUCTOR_LOG_PROMPTS=false), so sessions are **not kept**: they live in this "
        "server's memory only and are gone when it restarts. Nothing of them is written to disk.",
        icon=":material/visibility_off:",
    )
if (variant or stored).provider in ("auto", "local"):
    st.caption(state.LOCAL_NOTE)
turns.take_note()

for index, turn in enumerate(conversation.turns if conversation else []):
    last = index == len(conversation.turns) - 1
    if not turn.continues:  # a turn that continues after tool results has no message of its own
        with st.chat_message("user"):
            turns.render_prompt(turn.prompt)
            attachments.show(conversation, turn)
            if not refusal:
                turns.turn_actions(session, turn, busy=busy)
    with st.chat_message("assistant"):
        answer = turn.chosen.get(0)
        if answer is None:
            st.caption("(no answer)")
        elif answer.live or answer.settling:
            turns.live_answer(answer.id)
        else:
            turns.render_answer(answer, key=answer.id)
            turns.answer_actions(session, turn, 0, busy=busy or bool(refusal), last=last, regenerate=not refusal)
            if tool_calls.waiting(conversation, index) and not refusal:
                tool_calls.answer_form(session, turn, answer, busy=busy)

if conversation is not None and conversation.turns and not busy:
    with st.expander("Share: export or get code", icon=":material/ios_share:"):
        st.caption("This conversation as a file for people who will never run the tool. No key is ever written.")
        share.export_buttons(
            lambda: share.transcript(store.conversation(sid)),
            key=f"chat_export_{sid}",
            name=share.file_stem("conversation", session.title or "chat"),
        )
        last = len(conversation.turns) - 1
        sent = conversation.turns[last].chosen.get(0)
        if sent is not None:
            st.markdown("**Get code** for the last request")
            shown = conversation.turns[last]
            request = share.last_request(
                sent.variant,
                conversation.context(0, last),
                None if shown.continues else shown.prompt,
                conversation.attachments(shown),
            )
            share.get_code(c, request, prompt=prompt_open.prompt_call(sid, last))

EXAMPLES = [
    "Explain what a circuit breaker is in one paragraph.",
    "Write a haiku about latency.",
    "Give three tips for writing a good prompt.",
]


def _take_example() -> None:
    # Read once, then cleared: a chosen example is sent once, never again on a later run.
    st.session_state["chat_pending_example"] = st.session_state.get("chat_example")
    st.session_state["chat_example"] = None


if not (conversation and conversation.turns) and not refusal:
    st.markdown(
        "##### Ask something to get started\n"
        "Pick **AUTO** to let Conductor choose the fastest healthy provider, or pick one yourself. "
        "Every answer shows who served it, how fast, and what it cost."
    )
    st.pills("Try an example", EXAMPLES, key="chat_example", label_visibility="collapsed", on_change=_take_example)
example = st.session_state.pop("chat_pending_example", None)

with st.bottom:
    if refusal:
        st.caption(f":material/visibility: {refusal}")
    submitted = st.chat_input(
        "Viewers cannot send"
        if refusal
        else "An answer is streaming: stop it or wait…"
        if busy
        else "Ask anything, attach images or PDFs…",
        disabled=busy or bool(refusal),
        key="chat_input",
        accept_file="multiple",
        file_type=list(attachments.ACCEPTED_EXTENSIONS),
        max_upload_size=attachments.LIMIT_MB,
    )
    st.caption(f":material/attach_file: {attachments.LIMIT_NOTE}", help="Attach with the clip in the input.")
    controls.cost_caption(c, variant, conversation.context(0) if conversation else [])

prompt, files, refused = (
    (submitted.text or "", *attachments.take(submitted.files)) if submitted else (example or "", [], [])
)
if held is not None:
    prompt, files = held
if refused:
    turns.note(attachments.refused_note(refused, prompt))
    st.rerun()
if (prompt.strip() or files) and variant is not None and not busy and not refusal:
    earlier = attachments.history_attaches(conversation)
    if not attachments.hold_if_unreadable("chat", c, variant, prompt, files, history=earlier):
        turns.send("chat", sid, [variant], prompt, files)
        st.rerun()  # draw the new turn, its answer streaming, and the input disabled
