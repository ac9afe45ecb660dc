"""Playground: a conversation with one provider (or AUTO), answers streamed as they arrive,
with the figures of each answer underneath."""

from __future__ import annotations

import streamlit as st

from conductor_core.errors import ProviderError
from conductor_core.models import ChatMessage, ChatRequest, RoutingPolicy

from playground import components as ui
from playground import state

c = state.conductor()
messages: list[dict] = st.session_state.setdefault("chat_messages", [])

# --- sidebar: who answers, and how ------------------------------------------------------
with st.sidebar:
    st.subheader("Model")
    options = ["auto", *state.provider_names(c)]
    labels = {name: state.provider_label(c, name) for name in options}  # computed now, in this session
    provider = st.selectbox(
        "Provider", options, format_func=labels.__getitem__, key="chat_provider",
        persist_state="session", help="AUTO picks the best healthy provider and falls back when one fails.",
    )
    hint = state.provider_hint(c, provider)
    policy = None
    model = None
    if provider == "auto":
        policy = st.selectbox(
            "AUTO policy", [p.value for p in RoutingPolicy], key="chat_policy", persist_state="session",
            format_func=str.capitalize, help="What AUTO optimises for.",
        )
        st.selectbox("Model", ["chosen by AUTO"], disabled=True, key="chat_model_auto")
    elif hint:
        st.selectbox("Model", ["—"], disabled=True, key="chat_model_missing")
        st.info(f"**{ui.escape_md(state.display_name(c, provider))}** is not configured: {ui.escape_md(hint)}.", icon=":material/key:")
        st.page_link("views/providers.py", label="Add a key for this session", icon=":material/arrow_forward:")
    else:
        try:
            models = c.models(provider, overrides=state.overrides()) or []
        except ProviderError as error:
            models = []
            st.warning(error.message, icon=":material/warning:")
        model = st.selectbox(
            "Model", models or ["default"], key=f"chat_model_{provider}", persist_state="session",
            accept_new_options=True, help="Listed by the provider; you can also type a model name.",
        )
        model = None if model == "default" else model
    st.subheader("Parameters")
    temperature, max_tokens, system = ui.generation_controls("chat")
    if st.button("Clear chat", icon=":material/delete_sweep:", disabled=not messages, width="stretch"):
        messages.clear()
        st.rerun()

# --- the conversation -----------------------------------------------------------------
st.title("Playground")
st.caption(state.LOCAL_NOTE)


def show_assistant(entry: dict, index: int) -> None:
    answer: ui.Answer = entry["answer"]
    if answer.content or not answer.error:
        ui.render_answer_text(answer.content)
    if answer.error:
        ui.render_error(answer.error, attempts=answer.attempts, incomplete=answer.incomplete)
    if answer.response is not None:
        row = st.columns([10, 1.4], vertical_alignment="center")
        with row[0]:
            ui.render_figures(answer.response)
        with row[1]:
            ui.copy_control(answer.content, key=f"copy_{index}")
        ui.render_routing(answer.response)


for index, entry in enumerate(messages):
    with st.chat_message(entry["role"]):
        if entry["role"] == "user":
            st.markdown(entry["content"])
        else:
            show_assistant(entry, index)

EXAMPLES = [
    "Explain what a circuit breaker is in one paragraph.",
    "Write a haiku about latency.",
    "Give three tips for writing a good prompt.",
]
example = None
if not messages:
    st.markdown(
        "##### Ask something to get started\n"
        "Pick **AUTO** to let Conductor choose the fastest healthy provider, or pick one yourself. "
        "Every answer shows who served it, how fast, and what it cost."
    )
    example = st.pills("Try an example", EXAMPLES, key="chat_example", label_visibility="collapsed")

prompt = st.chat_input("Ask anything…") or example
if prompt and prompt.strip():
    history = [
        ChatMessage(role=m["role"], content=m["content"] if m["role"] == "user" else m["answer"].content)
        for m in messages
        if (m["content"] if m["role"] == "user" else m["answer"].content)
    ]
    conversation = ([ChatMessage(role="system", content=system)] if system else []) + history
    conversation.append(ChatMessage(role="user", content=prompt))
    messages.append({"role": "user", "content": prompt})
    with st.chat_message("user"):
        st.markdown(prompt)
    with st.chat_message("assistant"):
        request = ChatRequest(
            provider=provider, model=model, messages=conversation, temperature=temperature, max_tokens=max_tokens,
            policy=RoutingPolicy(policy) if policy else None,
        )
        answer = ui.stream_answer(c, request, state.overrides())
    messages.append({"role": "assistant", "answer": answer})
    st.rerun()  # draw the new answer with its figures from the session's history
