"""A saved prompt opened in Chat or Compare: `?open_prompt=NAME@LABEL` (or `NAME@3`).

The page shows a small form with the prompt's variables; sending it starts a new session whose
settings are the prompt's (in Compare: the first column's; the other columns keep their own
model and settings and take the prompt's system prompt, output schema and tools), with the
prompt's earlier messages as answered turns and its last user message sent. Get code then shows
the gateway call `model="prompt:NAME@LABEL"` with those variables.
"""

from __future__ import annotations

from collections.abc import Sequence

import streamlit as st

from conductor_core.workbench.codegen import PromptCall
from conductor_core.workbench.prompts import PromptError, PromptVersion, as_turns, parse_reference
from conductor_core.workbench.variants import Variant

from . import access, session_nav, state, turns
from . import components as ui

__all__ = ["take", "form", "prompt_call"]

_PARAM = "open_prompt"


def _key(kind: str) -> str:
    return f"{kind}_open_prompt"


def take(kind: str) -> None:
    """Act on ?open_prompt=REF once: the prompt stays open on this page (a new session when sent)."""
    params = st.query_params
    if _PARAM not in params:
        return
    reference = params.get(_PARAM, "")
    del params[_PARAM]
    st.session_state[_key(kind)] = reference
    session_nav.forget(kind)  # a new session, not the one this tab had open


def _open(kind: str) -> tuple[str, PromptVersion] | None:
    reference = st.session_state.get(_key(kind))
    if not reference:
        return None
    try:
        parse_reference(reference)
        return reference, state.prompts().resolve(reference)
    except PromptError as error:
        st.warning(f"Cannot open prompt {ui.escape_md(reference)}: {ui.escape_md(str(error))}", icon=":material/notes:")
        st.session_state.pop(_key(kind), None)
        return None


def form(kind: str) -> tuple[str, PromptVersion, dict[str, str]] | None:
    """The open prompt's form; (reference, version, values) on the run its Send was pressed."""
    found = _open(kind)
    if found is None:
        return None
    reference, version = found
    with st.container(border=True, key=f"{kind}_prompt_form_box"):
        head, close = st.columns([6, 1], vertical_alignment="center")
        head.markdown(
            f":material/notes: **Prompt {ui.escape_md(reference)}** · version {version.version} · "
            f"{ui.escape_md(version.content.variant.target)}"
        )
        if close.button("Close", key=f"{kind}_prompt_close", type="tertiary", icon=":material/close:"):
            st.session_state.pop(_key(kind), None)
            st.rerun()
        with st.form(f"{kind}_prompt_form", border=False):
            values = {name: st.text_input(name, key=f"{kind}_prompt_var_{name}") for name in version.variables}
            if not version.variables:
                st.caption("This prompt has no variables.")
            sent = st.form_submit_button("Send", icon=":material/send:", type="primary")
    if not sent:
        return None
    missing = [name for name, value in values.items() if not value.strip()]
    if missing:
        st.warning(f"Fill in {', '.join(missing)} first.", icon=":material/edit:")
        return None
    return reference, version, values


def columns_for(version: PromptVersion, values: dict[str, str], others: Sequence[Variant]) -> list[Variant]:
    """Compare's columns: the prompt's own settings first, then each other column's model and
    settings with the prompt's system prompt, output schema and tools."""
    mine = version.variant(values)
    same = {"system": mine.system, "response_format": mine.response_format, "tools": mine.tools}
    same["tool_choice"] = mine.tool_choice
    return [mine, *(v.model_copy(update=same) for v in others)]


def send(
    kind: str, reference: str, version: PromptVersion, values: dict[str, str], variants: Sequence[Variant]
) -> None:
    """A new session with these variants: the prompt's earlier messages as answered turns, its
    last user message sent (nothing is sent when it ends with an answer)."""
    _, messages = version.render(values)
    pairs, last = as_turns(messages)
    refusal = session_nav.send_refusal(None)
    if refusal:
        turns.note(refusal)
        return
    store = state.sessions()
    session_id = store.create(kind, list(variants), title=f"{reference}", by=access.person()).id
    session_nav.open_session(kind, session_id)
    parent = None
    for user, assistant in pairs:
        turn, answers = store.add_turn(session_id, user, parent_id=parent)
        for answer in answers:  # the prompt's own answer, the same in every column: context for what follows
            store.finish(answer.id, "done", content=assistant)
        parent = turn.id
    # Get code shows the prompt's gateway call for the round it sent (the one after its history).
    st.session_state[f"prompt_call_{session_id}"] = (PromptCall(reference=reference, variables=values), len(pairs))
    st.session_state.pop(_key(kind), None)
    if last is not None:
        turns.send(kind, session_id, list(variants), last)


def prompt_call(session_id: str | None, index: int) -> PromptCall | None:
    """The prompt the session was opened from, when round `index` is the one it sent (Get code)."""
    call, sent = st.session_state.get(f"prompt_call_{session_id}") or (None, None)
    return call if sent == index else None
