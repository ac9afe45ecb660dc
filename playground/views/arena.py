"""Arena: a blind test. 2-4 models answer one prompt as A, B, C, D in a random order; the
person votes (best, tie, all bad); then the names are revealed with each answer's figures.
Votes feed the ratings on the Dashboard and AUTO's `preferred` policy.

The URL names the round (``?match=…``), so a reload or a second tab shows it again; the
answers stream in a background thread of this process (`arena_live.py`), so a reload does
not cut them. Which letter is which model lives only in the database until the vote."""

from __future__ import annotations

from typing import Any

import streamlit as st

from conductor_core.models import ProviderState
from conductor_core.workbench.arena import ArenaError, Reveal, RevealedAnswer
from conductor_core.workbench.variants import Variant
from playground import access, attachments, controls, state, structured_view
from playground import components as ui

c = state.conductor()
arena = state.arena()
rounds = state.blind_rounds()

st.title("Arena")
st.caption(
    "A blind test: 2 to 4 models answer the same prompt as A, B, C, D, in a random order. Vote for the best "
    "answer; the names are revealed after the vote. Every vote feeds the ratings on the Dashboard and AUTO's "
    "*preferred* policy."
)


def _note(message: str) -> None:
    st.session_state["arena_note"] = message


note = st.session_state.pop("arena_note", None)
if note:
    st.warning(ui.escape_md(note), icon=":material/warning:")


def _leave_round() -> None:
    st.query_params.pop("match", None)


def _stop(match_id: str) -> None:
    rounds.stop(match_id)


def _vote(match_id: str, choice: str) -> None:
    try:
        arena.vote(match_id, choice)
    except ArenaError as error:
        _note(str(error))


# --- a new round ------------------------------------------------------------------------------


def _bytes_of(match_id: str, sha256: str) -> bytes:
    found = {a.ref.sha256: a.data for a in arena.attachments(match_id)}
    if sha256 not in found:
        raise KeyError(sha256)
    return found[sha256]


def _ready(name: str) -> bool:
    provider = state.session_providers().get(name) or c.registry.providers.get(name)
    return (
        provider is not None
        and provider.state in (ProviderState.ready, ProviderState.loading)
        and c.breaker(name).state.value != "open"
    )


def new_round() -> None:
    available = state.configured_names(c)
    targets = [f"{name}/{model}" for name in available for model in state.models_of(c, name)]
    if len(targets) < 2:
        st.warning(
            "A blind round needs at least two models, and fewer are configured: add a key or an OpenAI-compatible "
            "endpoint (Ollama, vLLM…) on the Providers page.",
            icon=":material/key:",
        )
        st.page_link("views/providers.py", label="Open Providers", icon=":material/arrow_forward:")
        return
    ready = [n for n in available if _ready(n)]
    default = [f"{name}/{state.models_of(c, name)[0]}" for name in ready][:4]
    if len(default) < 2:
        default = targets[:2]
    if "arena_targets" not in st.session_state:
        st.session_state["arena_targets"] = default

    def label(target: str) -> str:
        provider, _, model = target.partition("/")
        return f"{state.display_name(c, provider)} · {model}"

    chosen = st.multiselect(
        "Contestants (2 to 4)",
        targets,
        key="arena_targets",
        max_selections=4,
        format_func=label,
        help="Their answers are shown as A, B, C, D in a random order; the names are revealed after your vote.",
    )
    with st.expander("Settings (the same for every contestant)", icon=":material/tune:"):
        left, right = st.columns(2)
        temperature = left.slider("Temperature", 0.0, 2.0, 0.7, 0.1, key="arena_temperature")
        max_tokens = right.number_input("Max tokens", 1, 4000, 256, key="arena_max_tokens")
        response_format, output_problem = _output_control(chosen)
    with st.form("arena_form", border=False):
        prompt = st.text_area(
            "Prompt", key="arena_prompt", height=110, placeholder="Ask something all of them will answer…"
        )
        files = attachments.uploader("arena_files")
        refusal = access.spending_refusal()
        started = st.form_submit_button(
            "Start blind round", type="primary", icon=":material/play_arrow:", disabled=bool(refusal)
        )
    if refusal:
        st.caption(f":material/visibility: {refusal}")
    if not started or refusal:
        return
    if not 2 <= len(chosen) <= 4:
        st.warning("Choose 2 to 4 contestants.", icon=":material/group:")
        return
    if output_problem:
        st.warning(f"Fix the output schema first: {ui.escape_md(output_problem)}", icon=":material/data_object:")
        return
    taken, refused = attachments.take(files)
    if refused:
        st.error(ui.escape_md(attachments.refused_note(refused, prompt or "")), icon=":material/block:")
        return
    chosen, left_out = attachments.contestants(c, chosen, targets, taken)
    if len(chosen) < 2:
        st.warning(
            "A blind round with images or PDFs needs two contestants that read them, and fewer are configured ("
            + ui.escape_md("; ".join(left_out))
            + ").",
            icon=":material/hide_image:",
        )
        return
    variants = [
        Variant(
            provider=t.partition("/")[0],
            model=t.partition("/")[2],
            temperature=temperature,
            max_tokens=int(max_tokens),
            response_format=response_format,
        )
        for t in chosen
    ]
    try:
        match = arena.start(prompt or "", variants, taken)
    except ArenaError as error:
        st.warning(ui.escape_md(str(error).capitalize() + "."), icon=":material/edit:")
        return
    if left_out:  # said beside the round's prompt for as long as it is shown
        st.session_state[f"arena_left_out_{match.id}"] = "; ".join(left_out)
    rounds.launch(match.id, state.overrides())
    st.query_params["match"] = match.id
    st.rerun()


# --- a round in progress, its vote, its reveal --------------------------------------------------


@st.fragment(run_every=0.5)
def answering(match_id: str) -> None:
    """The anonymous answers as they arrive; the whole page reruns when they are all in."""
    stored = {a.letter: a for a in arena.blind_answers(match_id)}
    live = rounds.live(match_id)
    if all(a.state != "pending" for a in stored.values()):
        st.rerun()
        return
    for letter, column in zip(stored, st.columns(len(stored), gap="small"), strict=True):
        with column.container(border=True):
            st.markdown(f"**Answer {letter}**")
            answer = stored[letter]
            text = answer.text if answer.state != "pending" else (live.text.get(letter, "") if live else "")
            if answer.state == "stopped":
                st.caption(f":material/stop_circle: Answer {letter} was stopped: it is not part of the vote.")
            elif answer.state == "failed" or (live and live.finished.get(letter)):
                st.warning(
                    f"Answer {letter} failed: it is not part of the vote (why is shown after the vote).",
                    icon=":material/error:",
                )
            elif answer.state == "pending":
                if text:
                    st.markdown(text + " ▌")  # Markdown as it will be drawn; raw HTML stays inert
                else:
                    st.caption(":material/hourglass_top: Waiting for the first token…")
            else:
                ui.render_answer_text(text or "")
    st.button(
        "Stop",
        icon=":material/stop_circle:",
        key=f"arena_stop_{match_id}",
        on_click=_stop,
        args=(match_id,),
        help="Stop the answers still coming: they are left out of the vote (the ones that arrived can still be "
        "judged), and their requests are cancelled.",
    )


def voting(match_id: str) -> None:
    answers = arena.blind_answers(match_id)
    for answer, column in zip(answers, st.columns(len(answers), gap="small"), strict=True):
        with column.container(border=True):
            st.markdown(f"**Answer {answer.letter}**")
            if answer.state == "ok":
                ui.render_answer_text(answer.text or "")
            elif answer.state == "stopped":
                st.caption(
                    f":material/stop_circle: Answer {answer.letter} was stopped before it finished: it is not part "
                    "of the vote."
                )
            else:
                st.warning(
                    f"Answer {answer.letter} failed: it is not part of the vote (why is shown after the vote).",
                    icon=":material/error:",
                )
    complete = [a.letter for a in answers if a.state == "ok"]
    if len(complete) < 2:
        st.info(
            "Fewer than two answers arrived complete, so there is nothing to compare. See who answered, or start another round.",
            icon=":material/info:",
        )
        st.button("Reveal without a vote", key="arena_reveal_anyway", on_click=_reveal_only, args=(match_id,))
        return
    st.markdown("**Which answer is best?**")
    with st.container(horizontal=True, gap="small"):
        for letter in complete:
            st.button(
                f"{letter} is best",
                key=f"arena_vote_{letter}",
                icon=":material/emoji_events:",
                on_click=_vote,
                args=(match_id, letter),
            )
        st.button("Tie", key="arena_vote_tie", icon=":material/balance:", on_click=_vote, args=(match_id, "tie"))
        st.button(
            "All bad",
            key="arena_vote_all_bad",
            icon=":material/thumb_down:",
            on_click=_vote,
            args=(match_id, "all_bad"),
        )


def _output_control(chosen: list[str]) -> tuple[Any, str | None]:
    """One output format for the round, sent to every contestant alike (the round stays blind)."""
    return controls.output_control(c, "arena", [t.partition("/")[0] for t in chosen], compact=True)


def _output_check(answer: RevealedAnswer, match_id: str) -> None:
    """After the reveal: whether each answer parsed and matched the round's schema."""
    if answer.status == "ok":
        structured_view.show_output_check(
            answer.answer, answer.variant.response_format, key=f"arena_{match_id}_{answer.letter}"
        )


def _reveal_only(match_id: str) -> None:
    st.session_state[f"arena_unvoted_{match_id}"] = True


def _figures(answer) -> str:
    parts = [f"{ui.format_ms(answer.latency_ms)} total"] if answer.latency_ms is not None else []
    if answer.ttft_ms is not None:
        parts.append(f"first token {ui.format_ms(answer.ttft_ms)}")
    parts.append("cost unknown" if answer.cost_usd is None else ui.format_cost(answer.cost_usd))
    return " · ".join(parts)


def revealed(reveal: Reveal | None, match_id: str) -> None:
    if reveal is not None:
        st.success(f"Your vote: {ui.escape_md(reveal.describe())}. Recorded.", icon=":material/how_to_vote:")
        answers = reveal.answers
    else:
        answers = arena.unjudgeable(match_id)
    for answer, column in zip(answers, st.columns(len(answers), gap="small"), strict=True):
        with column.container(border=True):
            st.markdown(f"**{answer.letter} · {ui.escape_md(answer.label)}**")
            if reveal is not None and reveal.choice == answer.letter:
                st.badge("Your pick", icon=":material/thumb_up:", color="violet")
            if answer.status == "ok":
                ui.render_answer_text(answer.answer or "")
                _output_check(answer, match_id)
            else:
                if answer.answer:
                    ui.render_answer_text(answer.answer)
                st.warning(
                    f"Not judged: {ui.escape_md(answer.status)} ({ui.escape_md(answer.error_type or 'no detail')}).",
                    icon=":material/error:",
                )
            st.caption(ui.escape_md(_figures(answer)))
    st.page_link("views/dashboard.py", label="See the ratings on the Dashboard", icon=":material/leaderboard:")


match_id = st.query_params.get("match")
if match_id:
    try:
        match = arena.match(match_id)
    except ArenaError:
        st.warning("That blind round does not exist (any more): start a new one.", icon=":material/search_off:")
        _leave_round()
        match = None
    if match is not None:
        with st.container(horizontal=True, vertical_alignment="center"):
            st.markdown(f"#### Blind round · {len(match.letters)} answers")
            st.button("New round", icon=":material/add:", key="arena_new", on_click=_leave_round, type="tertiary")
        with st.container(border=True):
            st.text(match.prompt)  # literally what was typed
            attachments.show_refs(list(match.attachments), lambda sha: _bytes_of(match.id, sha))
            left_out = st.session_state.get(f"arena_left_out_{match.id}")
            if left_out:
                st.caption(
                    ":material/hide_image: Left out of this round, as they cannot read its images or PDFs: "
                    + ui.escape_md(left_out)
                )
        if arena.voted(match.id):
            revealed(arena.reveal(match.id), match.id)
        elif not arena.finished(match.id) and rounds.live(match.id) is None and arena.close_if_abandoned(match.id):
            # No live process holds the round: the server answering it died. Closed, not waited on for ever.
            _note(
                "The server answering this round stopped before every answer arrived: those answers are closed "
                "(not part of the vote)."
            )
            st.rerun()
        elif not arena.finished(match.id):
            answering(match.id)
        elif st.session_state.get(f"arena_unvoted_{match.id}"):
            revealed(None, match.id)
        else:
            voting(match.id)
        st.stop()

new_round()
