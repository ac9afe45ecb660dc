"""Compare: one prompt, 2 to 4 columns side by side, each with its own provider, model and
settings (the same model twice at two temperatures is two columns, labelled by what
differs). A follow-up goes to every column, each keeping its own history. A comparison is
a session: the URL names it, and the sidebar lists past ones."""

from __future__ import annotations

import streamlit as st

from conductor_core.models import Vote
from conductor_core.workbench.sessions import Conversation, Turn
from conductor_core.workbench.variants import Variant, differing_settings, variant_labels
from playground import (
    attachments,
    compare_links,
    controls,
    prompt_open,
    session_nav,
    share,
    state,
    tool_calls,
    tools_editor,
    turns,
)
from playground import components as ui

c = state.conductor()
store = state.sessions()
# ?compare=provider/model,…&prompt=… : set up those columns and send the prompt, once.
compare_links.take_url_comparison(c, lambda variants, prompt: turns.send("compare", None, variants, prompt))
# ?replay=REQUEST_ID&with=… : a logged request again, against other targets (from the Dashboard).
compare_links.take_replay(
    c,
    store,
    lambda session_id, variants, prompt, files: turns.send(
        "compare", session_id, variants, prompt, files, attachments.readable_lanes(c, variants, files)
    ),
)

# ?open_prompt=NAME@LABEL : a saved prompt, sent once its variables are filled in (prompt_open.py).
prompt_open.take("compare")

sid = session_nav.current("compare")
conversation = store.conversation(sid) if sid else None
if sid and conversation is None:
    session_nav.forget("compare")
    sid = None
session = conversation.session if conversation else None
busy = bool(conversation and conversation.live)
started = bool(conversation and conversation.turns)
refusal = session_nav.send_refusal(session)  # a viewer reads and exports, never sends

with st.sidebar:
    session_nav.sidebar_list("compare", sid)

st.title("Compare")
st.caption(
    "One prompt, several models or settings side by side. Answers stream in parallel; follow-ups go to every "
    "column, each with its own history. Vote for the better answer."
)
session_nav.header("compare", session, busy=busy)
opened_prompt = prompt_open.form("compare")
turns.take_note()
compare_links.show_notes(sid)
if conversation is not None and conversation.turns:
    link = compare_links.comparison_link(st.context.url or "", session.variants, conversation.turns[0].prompt)
    with st.container(horizontal=True, gap="small", vertical_alignment="center"):
        ui.copy_button(
            "Copy link", link, key=f"cmp_copy_link_{sid}", copied="Link copied", failed="Not copied: see Show link"
        )
        with st.popover("Show link", icon=":material/link:", type="tertiary"):
            st.caption(
                "Opens these columns (each provider and model) and sends the first prompt again, for anyone who has "
                "them configured. The answers and the other settings are not in the link."
            )
            st.code(link, language=None, wrap_lines=True)

available = state.configured_names(c)
if not available:
    st.warning("No provider is configured yet: add a key or an endpoint on the Providers page.", icon=":material/key:")
    st.page_link("views/providers.py", label="Open Providers", icon=":material/arrow_forward:")
    st.stop()
labels = {name: state.provider_label(c, name) for name in available}
if len(available) == 1 and len(state.models_of(c, available[0])) < 2 and not started:
    st.info(
        f"Only {state.display_name(c, available[0])} is configured: compare it with itself at other settings "
        "(temperature, system prompt…), or add a key or an OpenAI-compatible endpoint (Ollama, vLLM…) "
        "on the Providers page to compare it with another model.",
        icon=":material/key:",
    )


def default_variants(count: int) -> list[Variant]:
    return controls.default_variants(c, available, count)


# --- the columns' settings ---------------------------------------------------------------------
if started:
    count = len(session.variants)
else:
    initial = len(session.variants) if session else 2
    if "cmp_count" not in st.session_state:
        st.session_state["cmp_count"] = initial
    count = st.segmented_control("Columns", [2, 3, 4], key="cmp_count", required=True) or initial
draft: list[Variant] = st.session_state.get("cmp_draft") or []
stored = list(session.variants) if session else (draft + default_variants(4))[:4]
if not started and len(stored) < count:
    stored = (stored + default_variants(4))[:count]
stored = stored[:count]
revision = (sid, session.settings_rev if session else None, count)
if st.session_state.get("cmp_loaded") != revision or not (
    all(controls.loaded(f"cmp{i}") for i in range(count)) and tools_editor.loaded("cmp")
):
    for i, v in enumerate(stored):
        controls.load(f"cmp{i}", v)
    tools_editor.load("cmp", tools_editor.ToolSet.of(stored[0]))  # the same tools in every column
    st.session_state["cmp_loaded"] = revision

shown: list[Variant | None] = []
summary = " · ".join(f"{i + 1}. {v.target}" for i, v in enumerate(stored))
with st.expander(f"Columns: {summary}", expanded=not started, icon=":material/view_column:"):
    if started:
        st.caption(
            f"{count} columns, fixed for this comparison (start a new one for another number). "
            "Settings changed here apply to the next message."
        )
    for i, column in enumerate(st.columns(count, gap="small")):
        with column.container(border=True):
            st.markdown(f"**Column {i + 1}**")
            shown.append(
                controls.variant_controls(
                    c, f"cmp{i}", providers=available, allow_auto=False, labels=labels, compact=True
                )
            )
            unreadable = attachments.refusal(c, shown[-1]) if shown[-1] is not None else None
            if unreadable:
                st.caption(
                    f":material/hide_image: {ui.escape_md(unreadable)}: skipped for messages with images or PDFs"
                )
with st.expander(f"Tools, the same in every column ({len(stored[0].tools or ())})", icon=":material/build:"):
    tools = tools_editor.tool_editor("cmp")
variants = [tools.apply(v) for v in shown if v is not None] if tools is not None else []
ready = len(variants) == count
if ready and variants != stored and not refusal:
    if session is not None:
        try:
            st.session_state["cmp_loaded"] = (sid, store.set_variants(sid, variants), count)
        except ValueError as error:
            st.warning(ui.escape_md(str(error)), icon=":material/warning:")
    else:
        st.session_state["cmp_draft"] = variants
if ready and len(set(v.target for v in variants)) < len(variants):
    st.caption(
        "Columns with the same model are labelled by the settings that differ: "
        + ui.escape_md(" · ".join(f"{i + 1}. {label}" for i, label in enumerate(variant_labels(variants))))
    )


# --- a round: the prompt, each column's answer, marks and votes ------------------------------------
def _stop_all(answer_ids: list[str]) -> None:
    for answer_id in answer_ids:
        state.worker().stop(answer_id)


def _vote(session_id: str, turn_id: str, targets: list[str], winner: str) -> None:
    vote = Vote(group_id=turn_id, targets=targets, winner=winner)
    if c.record_vote(vote):
        store.set_vote(turn_id, winner, vote.id)
    else:
        turns.note("The vote could not be saved to the request log; try again.")


def _rerun_round(session_id: str, turn_id: str) -> None:
    """Every column answers the last message again (the earlier answers are kept)."""
    fresh = store.conversation(session_id)
    index = fresh.index_of(turn_id) if fresh else None
    if index is None:
        return
    turn = fresh.turns[index]
    # A round that continued after tool results has answers only in the columns that continued;
    # a round with attachments only in those that could read them.
    lanes = sorted(turn.chosen) if turn.continues or turn.attachments else list(range(len(fresh.session.variants)))
    try:
        answers = store.add_answers(session_id, turn_id, lanes)
    except ValueError as error:
        turns.note(str(error))
        return
    store.set_vote(turn_id, None, None)
    turns.launch(fresh, index, None if turn.continues else turn.prompt, answers, fresh.attachments(turn))


def _share_round(conv: Conversation, index: int, turn: Turn) -> None:
    if any(answer.live or answer.settling for answer in turn.chosen.values()):
        return
    labels = variant_labels([turn.chosen[lane].variant for lane in sorted(turn.chosen)])
    with st.expander("Share this round: export or get code", icon=":material/ios_share:"):
        st.caption("The prompt, every column's answer and figures, and the vote, as a file. No key is ever written.")
        session_id = conv.session.id
        share.export_buttons(
            lambda: share.comparison(store.conversation(session_id), index),
            key=f"cmp_export_{turn.id}",
            name=share.file_stem("comparison", conv.session.title or "compare", f"message-{index + 1}"),
        )
        lanes = sorted(turn.chosen)
        st.markdown("**Get code** for one column's request")
        lane = st.selectbox(
            "Column", lanes, key=f"cmp_code_lane_{turn.id}", format_func=lambda n: labels[lanes.index(n)]
        )
        answer = turn.chosen[lane]
        share.get_code(
            c,
            share.last_request(
                answer.variant,
                conv.context(lane, index),
                None if turn.continues else turn.prompt,
                conv.attachments(turn),
            ),
            prompt=prompt_open.prompt_call(session_id, index) if lane == 0 else None,
        )


def show_round(conv: Conversation, index: int, turn: Turn) -> None:
    last = index == len(conv.turns) - 1
    lanes = sorted(turn.chosen)
    answered_labels = variant_labels([turn.chosen[lane].variant for lane in lanes])
    head = st.container(horizontal=True, vertical_alignment="center", gap="small")
    with head:
        heading = "Continued after the tool results" if turn.continues else "Message" if index == 0 else "Follow-up"
        st.markdown(f"#### {heading} {index + 1}")
        if last and not refusal:
            st.button(
                "Re-run",
                icon=":material/replay:",
                key=f"cmp_rerun_{turn.id}",
                disabled=busy,
                type="tertiary",
                on_click=_rerun_round,
                args=(conv.session.id, turn.id),
                help="Every column answers this message again with its current settings; the answers so far are kept.",
            )
    if not turn.continues:
        with st.container(border=True):
            turns.render_prompt(turn.prompt)
            attachments.show(conv, turn)
    live = [turn.chosen[lane].id for lane in lanes if turn.chosen[lane].live]
    finished = [turn.chosen[lane] for lane in lanes]
    if all(a.status == "done" and a.response is None and a.request_id is None for a in finished):
        # A replay's (or a prompt's) history: one answer, sent as context to every column.
        with st.container(border=True):
            st.caption(
                "An earlier answer (history of the replayed request or the prompt, sent as context to every column):"
            )
            ui.render_answer_text(finished[0].content)
        return
    fastest, cheapest = ui.compare_marks([a.response if a.status == "done" else None for a in finished])
    waiting = tool_calls.waiting(conv, index)  # answers whose tool calls this round can still answer
    settings = differing_settings([turn.chosen[lane].variant for lane in lanes])
    every = range(len(conv.session.variants)) if len(lanes) < len(conv.session.variants) else lanes
    for lane, column in zip(every, st.columns(len(every), gap="small"), strict=True):
        if lane not in turn.chosen:  # it could not read this message's attachments
            attachments.skipped_column(c, column, conv.session.variants[lane])
            continue
        answer = turn.chosen[lane]
        with column.container(border=True):
            label = answered_labels[lanes.index(lane)]
            st.markdown(f"**{ui.escape_md(label)}**")
            # What differs between the columns (the label names it only between twins of one model).
            unsaid = [part for part in settings[lanes.index(lane)] if part not in label]
            if unsaid:
                st.caption(ui.escape_md(" · ".join(unsaid)))
            if answer.live or answer.settling:
                turns.live_answer(answer.id)
                continue
            marks = st.container(horizontal=True, gap="small")
            with marks:
                if lane in fastest:
                    st.badge("Fastest" if len(fastest) == 1 else "Tied fastest", icon=":material/bolt:", color="green")
                if lane in cheapest:
                    st.badge(
                        "Cheapest" if len(cheapest) == 1 else "Tied cheapest", icon=":material/savings:", color="blue"
                    )
                if turn.vote == answered_labels[lanes.index(lane)]:
                    st.badge("Your pick", icon=":material/thumb_up:", color="violet")
            turns.render_answer(answer, key=answer.id)
            turns.answer_actions(
                conv.session, turn, lane, busy=busy or bool(refusal), last=last, regenerate=last and not refusal
            )
            if answer.id in {a.id for a in waiting} and not refusal:
                tool_calls.answer_form(conv.session, turn, answer, busy=busy, label="Continue this column")
    if waiting and not live and not refusal:
        with st.container(horizontal=True, gap="small"):
            st.button(
                "Use mocks for all",
                key=f"cmp_mocks_{turn.id}",
                icon=":material/smart_toy:",
                on_click=tool_calls.use_mocks,
                args=(conv.session, waiting),
                help="Answer every column's calls with their tools' mock results (set in Tools).",
            )
            st.button(
                "Continue all columns",
                key=f"cmp_continue_all_{turn.id}",
                icon=":material/fast_forward:",
                type="primary",
                disabled=busy,
                on_click=tool_calls.continue_lanes,
                args=(conv.session.id, turn.id, [a.id for a in waiting]),
            )
    if live:
        st.button(
            "Stop all", icon=":material/stop_circle:", key=f"cmp_stop_{turn.id}", on_click=_stop_all, args=(live,)
        )
        return
    priced = [
        a
        for a in finished
        if a.status == "done" and a.response is not None and a.response.analytics.cost_usd is not None
    ]
    done = [a for a in finished if a.status == "done"]
    if len(done) >= 2 and len(priced) < len(done):
        st.caption(":material/savings: Cheapest is given among priced answers only: some columns' price is unknown.")
    if turn.vote:
        verdict = {"tie": "a tie", "both_bad": "all bad"}.get(turn.vote, turn.vote)
        st.success(f"Vote recorded: {ui.escape_md(verdict)}. Thank you!", icon=":material/how_to_vote:")
        return
    if not done or refusal:
        return
    st.markdown("**Which answer is better?**")
    buttons = st.container(horizontal=True, gap="small")
    with buttons:
        if len(lanes) == 2:
            choices = [
                ("Left is better", answered_labels[0], ":material/arrow_back:"),
                ("Right is better", answered_labels[1], ":material/arrow_forward:"),
                ("Tie", "tie", ":material/balance:"),
                ("Both bad", "both_bad", ":material/thumb_down:"),
            ]
        else:
            choices = [(f"Best: {label}", label, ":material/emoji_events:") for label in answered_labels] + [
                ("Tie", "tie", ":material/balance:"),
                ("All bad", "both_bad", ":material/thumb_down:"),
            ]
        for n, (text, winner, icon) in enumerate(choices):
            st.button(
                text,
                key=f"cmp_vote_{turn.id}_{n}",
                icon=icon,
                on_click=_vote,
                args=(conv.session.id, turn.id, answered_labels, winner),
            )


if conversation is not None:
    for index, turn in enumerate(conversation.turns):
        st.divider()
        show_round(conversation, index, turn)
        _share_round(conversation, index, turn)

# --- the next message -----------------------------------------------------------------------------
st.divider()
with st.form("cmp_form", border=False, clear_on_submit=True):
    prompt = st.text_area(
        "Follow-up" if started else "Prompt",
        key="cmp_prompt",
        height=110,
        placeholder="Sent to every column, each with its own history…"
        if started
        else "Ask the same thing to every column…",
    )
    files = attachments.uploader("cmp_files")
    submitted = st.form_submit_button(
        "Send follow-up" if started else "Run compare",
        type="primary",
        icon=":material/play_arrow:",
        disabled=busy or not ready or bool(refusal),
    )
if refusal:
    st.caption(f":material/visibility: {refusal}")
if ready:
    estimates = [
        controls.estimate_cost(c, v, conversation.context(i) if conversation else []) for i, v in enumerate(variants)
    ]
    st.caption(
        ":material/payments: Next message, per column: "
        + ui.escape_md(" · ".join(f"{i + 1}: {e.text}" for i, e in enumerate(estimates))),
        help="; ".join(f"{i + 1}: {e.detail}" for i, e in enumerate(estimates)),
    )
if busy:
    st.caption(":material/hourglass_top: Answers are streaming: the next message waits for them (or stop them).")

if opened_prompt is not None:
    if ready:
        reference, version, values = opened_prompt
        columns = prompt_open.columns_for(version, values, variants[1:])
        prompt_open.send("compare", reference, version, values, columns)
        st.rerun()
    else:
        st.warning("Set up every column first: the prompt answers in column 1, the others compare.")
if submitted and not (prompt or "").strip() and not files:
    st.warning("Type a prompt first.", icon=":material/edit:")
elif submitted and ready and not busy and not refusal:
    taken, refused = attachments.take(files)
    # A column that cannot read the attachments sits this message out (greyed, with the reason).
    readers = attachments.readable_lanes(c, variants, taken, conversation)
    if refused:
        st.error(ui.escape_md(attachments.refused_note(refused, prompt or "")), icon=":material/block:")
    elif readers == []:
        st.error(
            "Not sent: no column reads images or PDFs ("
            + ui.escape_md("; ".join(attachments.refusal(c, v) or "" for v in variants))
            + "). Pick a provider that does in at least one column.",
            icon=":material/hide_image:",
        )
    else:
        turns.send("compare", sid, variants, prompt, taken, readers)
        st.rerun()
