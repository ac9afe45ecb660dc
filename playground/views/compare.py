"""Compare: one prompt, 2 to 4 targets streaming side by side; the fastest and the cheapest
are marked, the user votes, re-runs, or reopens a past comparison."""

from __future__ import annotations

import time
from datetime import datetime

import streamlit as st

from conductor_core.errors import ProviderError
from conductor_core.models import ChatMessage, ChatRequest, StatusNotice, StreamDone, StreamIncomplete, Target, TextDelta, Vote

from playground import components as ui
from playground import state

c = state.conductor()
runs: list[dict] = st.session_state.setdefault("compare_runs", [])

st.title("Compare")
st.caption("One prompt, several models side by side. Answers stream in parallel; vote for the better one.")

available = state.configured_names(c)
labels = {name: state.provider_label(c, name) for name in available}  # computed now, in this session

# --- sidebar: parameters and history ----------------------------------------------------------
with st.sidebar:
    st.subheader("Parameters")
    temperature, max_tokens, system = ui.generation_controls("cmp")
    if runs:
        if st.session_state.pop("cmp_show_latest", False):
            st.session_state["cmp_view"] = len(runs) - 1  # set before the menu is drawn
        st.subheader("Past comparisons")
        order = list(range(len(runs) - 1, -1, -1))
        st.selectbox(
            "Reopen", order, key="cmp_view", label_visibility="collapsed",
            format_func=lambda i: f"#{i + 1} · {runs[i]['created']:%H:%M:%S} · {runs[i]['prompt'][:40]}",
        )

if not available:
    st.warning("No provider is configured yet: add a key or an endpoint on the Providers page.", icon=":material/key:")
    st.page_link("views/providers.py", label="Open Providers", icon=":material/arrow_forward:")
    st.stop()

# --- targets and prompt -------------------------------------------------------------------
count = st.segmented_control("Targets", [2, 3, 4], default=2, key="cmp_count", persist_state="session", required=True) or 2
targets: list[Target] = []
columns = st.columns(count)
for i, column in enumerate(columns):
    with column:
        default = available[i % len(available)]
        provider = st.selectbox(
            f"Target {i + 1}", available, index=available.index(default), key=f"cmp_provider_{i}", persist_state="session",
            format_func=labels.__getitem__,
        )
        models = state.models_of(c, provider)
        model = st.selectbox(
            "Model", models, key=f"cmp_model_{i}_{provider}", persist_state="session", label_visibility="collapsed",
            accept_new_options=True,
        )
        targets.append(Target(provider=provider, model=model))

target_labels = [t.label for t in targets]
duplicates = len(set(target_labels)) < len(target_labels)
if duplicates and len(available) == 1 and len(state.models_of(c, available[0])) < 2:
    st.info(
        f"A compare needs two different targets, and only {labels[available[0]].lstrip('● ')} is configured. "
        "Add a key or an OpenAI-compatible endpoint (Ollama, vLLM...) to compare it with another model.",
        icon=":material/key:",
    )
    st.page_link("views/providers.py", label="Open Providers", icon=":material/arrow_forward:")
elif duplicates:
    st.warning("Two columns name the same provider and model: pick another model for one of them.", icon=":material/warning:")

with st.form("cmp_form", border=False):
    prompt = st.text_area("Prompt", key="cmp_prompt", height=110, placeholder="Ask the same thing to every target…")
    submitted = st.form_submit_button("Run compare", type="primary", icon=":material/play_arrow:", disabled=duplicates)


# --- running -------------------------------------------------------------------------------
def run_compare(config: dict) -> dict:
    """Streams a compare into columns, showing which targets are still working; returns the run."""
    targets = [Target(**t) for t in config["targets"]]
    run = {**config, "created": datetime.now(), "group_id": None, "vote": None}
    results = [ui.Answer() for _ in targets]
    run["results"] = results
    progress = st.status(f"Comparing {len(targets)} targets…", expanded=False)
    cells = []
    for target, column in zip(targets, st.columns(len(targets))):
        with column.container(border=True):
            st.markdown(f"**{ui.escape_md(target.label)}**")
            cells.append({"status": st.empty(), "body": st.empty(), "drawn": 0.0})
    for cell in cells:
        cell["status"].caption(":material/hourglass_top: working…")
    messages = ([ChatMessage(role="system", content=config["system"])] if config["system"] else []) + [
        ChatMessage(role="user", content=config["prompt"])
    ]
    request = ChatRequest(messages=messages, temperature=config["temperature"], max_tokens=config["max_tokens"])
    finished: set[int] = set()
    try:
        for event in c.compare(request, targets, overrides=state.overrides()):
            run["group_id"] = event.group_id
            answer, cell = results[event.index], cells[event.index]
            if event.error is not None:
                answer.error, answer.error_type = event.error.message, event.error.type
                cell["status"].error(ui.escape_md(event.error.message), icon=":material/error:")
            elif isinstance(event.event, StatusNotice):
                cell["status"].caption(f":material/hourglass_top: {ui.escape_md(event.event.message)}")
            elif isinstance(event.event, TextDelta):
                answer.content += event.event.text
                if time.monotonic() - cell["drawn"] > 0.08:  # redraw a few times a second, not per token
                    cell["body"].markdown(answer.content + " ▌")
                    cell["drawn"] = time.monotonic()
            elif isinstance(event.event, StreamDone):
                answer.response = event.event.response
                answer.content = answer.response.content or answer.content
                cell["status"].caption(":green[:material/check_circle:] done")
            elif isinstance(event.event, StreamIncomplete):
                answer.response = event.event.partial
                answer.error, answer.incomplete = event.event.error.message, True
                cell["status"].warning("stopped part-way", icon=":material/content_cut:")
            if event.finished:
                finished.add(event.index)
                if answer.content:
                    cell["body"].markdown(answer.content)
                working = [targets[i].label for i in range(len(targets)) if i not in finished]
                progress.update(label=f"Still working: {', '.join(working)}" if working else "All targets answered")
        progress.update(label="All targets answered", state="complete")
    except ProviderError as error:
        progress.update(label=error.message, state="error")
        run["error"] = error.message
    return run


if submitted and prompt.strip():
    st.session_state["cmp_pending"] = {
        "prompt": prompt.strip(), "system": system, "temperature": temperature, "max_tokens": max_tokens,
        "targets": [t.model_dump() for t in targets],
    }
elif submitted:
    st.warning("Type a prompt first.", icon=":material/edit:")

pending = st.session_state.pop("cmp_pending", None)
if pending:
    runs.append(run_compare(pending))
    st.session_state["cmp_show_latest"] = True
    st.rerun()


# --- a finished run: answers, marks, votes -------------------------------------------------
def winners(results: list[ui.Answer]) -> tuple[set[int], set[int]]:
    done = [(i, a.response) for i, a in enumerate(results) if a.response is not None and not a.error]
    fastest, cheapest = set(), set()
    if len(done) >= 2:
        best = min(r.analytics.latency_ms for _, r in done)
        fastest = {i for i, r in done if r.analytics.latency_ms == best}
        priced = [(i, r.analytics.cost_usd) for i, r in done if r.analytics.cost_usd is not None]
        if priced:
            low = min(cost for _, cost in priced)
            cheapest = {i for i, cost in priced if cost == low}
    return fastest, cheapest


def vote(run: dict, winner: str) -> None:
    labels = [Target(**t).label for t in run["targets"]]
    if run.get("group_id") and c.record_vote(Vote(group_id=run["group_id"], targets=labels, winner=winner)):
        run["vote"] = winner
    else:
        run["vote_error"] = "The vote could not be saved to the request log; try again."


def rerun(run: dict) -> None:
    st.session_state["cmp_pending"] = {key: run[key] for key in ("prompt", "system", "temperature", "max_tokens", "targets")}


def show_run(index: int, run: dict) -> None:
    labels = [Target(**t).label for t in run["targets"]]
    results: list[ui.Answer] = run["results"]
    head, action = st.columns([6, 1], vertical_alignment="bottom")
    with head:
        st.markdown(f"#### Comparison #{index + 1}")
        st.caption(
            f"{run['created']:%H:%M:%S} · temperature {run['temperature']:g} · max tokens {run['max_tokens']}"
            + (" · with a system prompt" if run["system"] else "")
        )
    with action:
        st.button("Re-run", icon=":material/replay:", key=f"cmp_rerun_{index}", on_click=rerun, args=(run,), width="stretch")
    with st.container(border=True):
        st.markdown(run["prompt"])
    if run.get("error"):
        ui.render_error(run["error"])
    fastest, cheapest = winners(results)
    for i, (column, answer) in enumerate(zip(st.columns(len(results)), results)):
        with column.container(border=True):
            st.markdown(f"**{ui.escape_md(labels[i])}**")
            marks = st.container(horizontal=True, gap="small")
            with marks:
                if i in fastest:
                    st.badge("Fastest", icon=":material/bolt:", color="green")
                if i in cheapest:
                    st.badge("Cheapest", icon=":material/savings:", color="blue")
                if run.get("vote") == labels[i]:
                    st.badge("Your pick", icon=":material/thumb_up:", color="violet")
            if answer.content or not answer.error:
                ui.render_answer_text(answer.content)
            if answer.error:
                ui.render_error(answer.error, incomplete=answer.incomplete)
            if answer.response is not None:
                ui.render_figures(answer.response)
                ui.copy_control(answer.content, key=f"cmp_copy_{index}_{i}")
    # Votes: left/right/tie/both bad for two; the best one for more.
    if run.get("vote"):
        verdict = {"tie": "a tie", "both_bad": "all bad"}.get(run["vote"], run["vote"])
        st.success(f"Vote recorded: {ui.escape_md(verdict)}. Thank you!", icon=":material/how_to_vote:")
        return
    if not run.get("group_id"):
        return
    st.markdown("**Which answer is better?**")
    buttons = st.container(horizontal=True, gap="small")
    with buttons:
        if len(labels) == 2:
            choices = [
                ("Left is better", labels[0], ":material/arrow_back:"),
                ("Right is better", labels[1], ":material/arrow_forward:"),
                ("Tie", "tie", ":material/balance:"),
                ("Both bad", "both_bad", ":material/thumb_down:"),
            ]
        else:
            choices = [(f"Best: {label}", label, ":material/emoji_events:") for label in labels] + [
                ("Tie", "tie", ":material/balance:"),
                ("All bad", "both_bad", ":material/thumb_down:"),
            ]
        for n, (text, winner, icon) in enumerate(choices):
            st.button(text, key=f"cmp_vote_{index}_{n}", on_click=vote, args=(run, winner), icon=icon)
    if run.get("vote_error"):
        st.error(run["vote_error"])


if runs:
    st.divider()
    view = st.session_state.get("cmp_view", len(runs) - 1)
    view = view if isinstance(view, int) and 0 <= view < len(runs) else len(runs) - 1
    show_run(view, runs[view])
