"""Comparisons opened from a URL, and the link that opens the current one.

    /compare?compare=openai/gpt-6-luna,local/gemma-3-270m&prompt=Why+is+the+sky+blue%3F

opens Compare with those columns and sends that prompt once: the parameters are then taken
off the URL, which names the new session instead (a reload shows it, never re-sends it). A
target that is unknown or not configured is named with what it needs; the rest still open.
Without `prompt` the columns are set up and nothing is sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit, urlunsplit

import streamlit as st

from conductor_core.router import Conductor
from conductor_core.workbench.replay import ReplayError, attachments_of, replay_of
from conductor_core.workbench.variants import Variant

from . import access, session_nav, state
from . import components as ui

__all__ = ["parse_targets", "resolve_targets", "comparison_link", "take_url_comparison", "NOTES_KEY"]

NOTES_KEY = "cmp_link_notes"
REPLAY_NOTE_KEY = "cmp_replay_note"
MAX_COLUMNS = 4


def parse_targets(text: str) -> list[tuple[str, str | None]]:
    """ "openai/gpt-6-luna, local" -> [("openai", "gpt-6-luna"), ("local", None)]."""
    found = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        provider, _, model = part.partition("/")
        found.append((provider.strip(), model.strip() or None))
    return found


def resolve_targets(c: Conductor, text: str) -> tuple[list[Variant], list[str]]:
    """The columns the URL asks for that can answer, and a sentence for each that cannot."""
    configured = state.configured_names(c)
    known = state.provider_names(c)
    variants: list[Variant] = []
    problems: list[str] = []
    for provider, model in parse_targets(text):
        target = f"{provider}/{model}" if model else provider
        if provider not in known:
            names = ", ".join(configured) or "none yet"
            problems.append(f"'{target}' is not a provider Conductor knows (configured: {names}); it was left out.")
            continue
        if provider not in configured:
            hint = state.provider_hint(c, provider) or "add it on the Providers page"
            problems.append(
                f"'{target}' is not configured ({hint}; or type a key on the Providers page); it was left out."
            )
            continue
        variants.append(
            Variant(provider=provider, model=model or state.default_model(c, provider), temperature=0.7, max_tokens=256)
        )
    if len(variants) > MAX_COLUMNS:
        dropped = ", ".join(v.target for v in variants[MAX_COLUMNS:])
        problems.append(f"Compare shows at most {MAX_COLUMNS} columns: {dropped} left out.")
        variants = variants[:MAX_COLUMNS]
    return variants, problems


def comparison_link(page_url: str, variants: Sequence[Variant], prompt: str | None) -> str:
    """A URL that opens these columns (their provider and model) and sends `prompt`."""
    scheme, netloc, path, _, _ = urlsplit(page_url)
    query = {"compare": ",".join(v.target for v in variants)}
    if prompt:
        query["prompt"] = prompt
    return urlunsplit((scheme, netloc, path, urlencode(query, safe="/,"), ""))


def take_url_comparison(c: Conductor, send) -> None:
    """Act on ?compare=…&prompt=… once, then take them off the URL. `send(variants, prompt)`
    starts the comparison (a new session) and returns its id; with fewer than two columns, or no prompt, the
    columns are only set up for the person to complete."""
    params = st.query_params
    if "compare" not in params:
        return
    spec, prompt = params.get("compare", ""), (params.get("prompt") or "").strip()
    del params["compare"]
    if "prompt" in params:
        del params["prompt"]
    variants, problems = resolve_targets(c, spec)
    if not variants:
        problems.append("None of the targets in the link can answer here, so nothing was sent.")
    elif len(variants) < 2:
        problems.append("A comparison needs two columns: add one below, then run it.")
    st.session_state[NOTES_KEY] = (None, problems)
    if not variants:
        return
    st.session_state.pop("compare_session", None)  # a new comparison, not the one this tab had open
    if "session" in params:
        del params["session"]
    columns = variants if len(variants) >= 2 else [variants[0], variants[0]]
    st.session_state["cmp_draft"] = columns
    st.session_state["cmp_count"] = len(columns)
    st.session_state.pop("cmp_loaded", None)
    if prompt and len(variants) >= 2:
        st.session_state[NOTES_KEY] = (send(variants, prompt), problems)
    elif prompt:
        st.session_state["cmp_prompt"] = prompt


def take_replay(c: Conductor, store, send) -> None:
    """Act on ?replay=REQUEST_ID&with=provider/model,… once: a new comparison whose first
    column is the logged request's target with its parameters, the others the same request
    to the `with` targets; the logged history is seeded as earlier turns (context for every
    column), and the last user message is sent."""
    params = st.query_params
    if "replay" not in params:
        return
    request_id, spec = params.get("replay", ""), params.get("with", "")
    for name in ("replay", "with"):
        if name in params:
            del params[name]
    try:
        replay = replay_of(c.log, store, request_id)
    except ReplayError as error:
        st.session_state[NOTES_KEY] = (None, [f"Cannot replay: {error}."])
        return
    others, problems = resolve_targets(c, spec)
    same = {k: v for k, v in replay.variant.model_dump().items() if k not in ("provider", "model")}
    variants = [replay.variant] + [v.model_copy(update=same) for v in others][: MAX_COLUMNS - 1]
    if len(variants) < 2:
        problems.append("A replay needs at least one other target to compare with: choose one on the Dashboard.")
        st.session_state[NOTES_KEY] = (None, problems)
        return
    refusal = session_nav.send_refusal(None)
    if refusal:
        st.session_state[NOTES_KEY] = (None, [refusal])
        return
    st.session_state.pop("compare_session", None)
    if "session" in params:
        del params["session"]
    session_id = store.create("compare", variants, title=f"Replay: {replay.prompt[:60]}", by=access.person()).id
    session_nav.open_session("compare", session_id)
    parent = None
    for user, assistant in replay.turns:
        turn, answers = store.add_turn(session_id, user.content, parent_id=parent, attachments=attachments_of(user))
        for answer in answers:  # the logged answer, the same in every column: context for what follows
            store.finish(answer.id, "done", content=assistant)
        parent = turn.id
    st.session_state[NOTES_KEY] = (send(session_id, variants, replay.prompt, replay.prompt_attachments), problems)
    st.session_state[REPLAY_NOTE_KEY] = (
        session_id,
        f"Replay of request {request_id} ({replay.target}): {replay.note}.",
    )


def show_notes(session_id: str | None) -> None:
    """What the link asked for and could not get, for as long as its comparison is shown."""
    owner, said = st.session_state.get(REPLAY_NOTE_KEY) or (None, None)
    if said and owner == session_id:
        st.info(ui.escape_md(said), icon=":material/replay:")
    elif said:
        st.session_state.pop(REPLAY_NOTE_KEY, None)
    owner, problems = st.session_state.get(NOTES_KEY) or (None, [])
    if owner != session_id:
        st.session_state.pop(NOTES_KEY, None)
        return
    for problem in problems:
        st.warning(ui.escape_md(problem), icon=":material/link_off:")
