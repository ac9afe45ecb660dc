"""Rendering shared by the pages: an answer's figures, routing, errors, and streaming an
answer into the page.

Model output and prompts are shown as markdown or text only, never with
`unsafe_allow_html`: Streamlit's markdown shows raw HTML (a `<script>` tag...) as text.
Values we put into our own markdown (model names, error messages) are escaped first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from conductor_core.config import redact
from conductor_core.errors import ProviderError
from conductor_core.models import (
    Attempt,
    ChatRequest,
    ChatResponse,
    StatusNotice,
    StreamDone,
    StreamIncomplete,
    TextDelta,
)
from conductor_core.providers import BaseProvider
from conductor_core.router import Conductor

__all__ = [
    "Answer",
    "escape_md",
    "format_cost",
    "format_total_cost",
    "format_ms",
    "figures_line",
    "render_figures",
    "render_routing",
    "render_attempts",
    "render_error",
    "render_answer_text",
    "copy_control",
    "stream_answer",
    "unexpected_error",
    "generation_controls",
]

log = logging.getLogger("conductor.playground")

_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$])")


def escape_md(text: Any) -> str:
    """`text` with markdown's special characters escaped, for values inside our own markdown."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def format_ms(value: float | None) -> str:
    if value is None:
        return "—"
    return f"{value / 1000:,.2f} s" if value >= 1000 else f"{value:,.0f} ms"


def format_cost(value: float | None) -> str:
    """Estimated cost for a person: "unknown" when the price is not known, "free" for 0."""
    if value is None:
        return "unknown"
    if value == 0:
        return "free"
    return f"${value:.6f}" if value < 0.01 else f"${value:,.4f}"


def format_total_cost(value: float) -> str:
    """A total for a dashboard tile (a sixth of the page): cents once it reaches a dollar."""
    if value < 1:
        return format_cost(value)
    return f"${value:,.2f}" if value < 100_000 else f"${value / 1000:,.1f}k"


@dataclass
class Answer:
    """What the page keeps of one answer (in session state, so it survives reruns)."""

    content: str = ""
    response: ChatResponse | None = None
    error: str | None = None
    error_type: str | None = None
    attempts: list[Attempt] = field(default_factory=list)
    incomplete: bool = False


def figures_line(response: ChatResponse) -> str:
    """The figures of an answer as a row of small badges (markdown): provider and model,
    latency, time to first token, speed, tokens in/out, estimated cost."""
    a, m = response.analytics, response.metadata
    cost = format_cost(a.cost_usd)
    parts = [
        f":violet-badge[:material/dns: {escape_badge(m.provider)} · {escape_badge(m.model)}]",
        f":gray-badge[:material/timer: {format_ms(a.latency_ms)}]",
        f":gray-badge[:material/bolt: first token {format_ms(a.time_to_first_token_ms)}]",
        f":gray-badge[:material/speed: {a.tokens_per_second:,.1f} tok/s]" if a.tokens_per_second else ":gray-badge[:material/speed: — tok/s]",
        f":gray-badge[:material/token: {a.input_tokens:,} in → {a.output_tokens:,} out]",
        f":{'green' if cost == 'free' else 'orange' if cost == 'unknown' else 'blue'}-badge[:material/payments: {cost}]",
    ]
    if m.finish_reason == "length":
        parts.append(":gray-badge[:material/content_cut: stopped at max tokens]")
    return " ".join(parts)


def escape_badge(text: Any) -> str:
    # Inside a badge, brackets would end it early; markdown characters are escaped as usual.
    return escape_md(text)


def render_figures(response: ChatResponse) -> None:
    st.markdown(figures_line(response))


def render_attempts(attempts: Iterable[Attempt], *, served_by: str | None = None) -> None:
    failed = [a for a in attempts if not a.ok]
    if not failed:
        return
    title = f"{len(failed)} failed attempt{'s' if len(failed) > 1 else ''}" + (
        f" before {served_by} answered" if served_by else ""
    )
    with st.expander(title, expanded=False, icon=":material/alt_route:"):
        for attempt in failed:
            st.markdown(
                f":red[✗] **{escape_md(attempt.provider)}**"
                + (f" · {escape_md(attempt.model)}" if attempt.model else "")
                + (f" · `{attempt.error_type}`" if attempt.error_type else "")
                + (f" · {format_ms(attempt.latency_ms)}" if attempt.latency_ms is not None else "")
                + f"  \n{escape_md(attempt.error or 'failed')}"
            )


def render_routing(response: ChatResponse) -> None:
    routing = response.routing
    if routing.mode == "auto":
        policy = routing.policy.value if routing.policy else "balanced"
        served = response.metadata.provider
        # After a fallback the core's reason already says which provider failed first.
        st.caption(f":material/auto_awesome: AUTO ({escape_md(policy)}) chose **{escape_md(served)}**: {escape_md(routing.reason or '')}")
    render_attempts(routing.attempts, served_by=response.metadata.provider)


def render_error(message: str, *, attempts: Iterable[Attempt] = (), incomplete: bool = False) -> None:
    """An error as a sentence a person can act on, in place, never a traceback."""
    if incomplete:
        st.warning(f"The answer stopped part-way: {escape_md(message)}", icon=":material/content_cut:")
    else:
        st.error(escape_md(message), icon=":material/error:")
    render_attempts(attempts)


def render_answer_text(content: str) -> None:
    if content:
        st.markdown(content)
    else:
        st.caption("(empty answer)")


def copy_control(content: str, key: str) -> None:
    """A small "Copy" popover holding the raw answer in a code block (its copy icon copies it)."""
    if not content:
        return
    with st.popover("Copy", icon=":material/content_copy:", type="tertiary", key=key):
        st.caption("Raw text: use the copy icon at the top right.")
        st.code(content, language=None, wrap_lines=True)


def unexpected_error(exc: BaseException) -> str:
    """A sentence for a bug (not a provider failure): logged with its traceback, shown without."""
    log.exception("unexpected error in the playground")
    return f"Something went wrong: {redact(f'{type(exc).__name__}: {exc}')}. The app keeps working: try again."


def stream_answer(
    c: Conductor, request: ChatRequest, overrides: Mapping[str, BaseProvider] | None = None
) -> Answer:
    """Streams an answer into the current container as it arrives, with loading and fallback
    notices shown before the text; returns what to keep. Never raises a provider error."""
    answer = Answer()
    notice = st.empty()
    shown = {"notice": False}

    def pieces():
        for event in c.stream(request, overrides=overrides):
            if isinstance(event, StatusNotice):
                notice.info(escape_md(event.message), icon=":material/hourglass_top:")
                shown["notice"] = True
            elif isinstance(event, TextDelta):
                if shown["notice"]:
                    notice.empty()
                    shown["notice"] = False
                yield event.text
            elif isinstance(event, StreamDone):
                answer.response = event.response
            elif isinstance(event, StreamIncomplete):
                answer.response = event.partial
                answer.error = event.error.message
                answer.error_type = event.error.type
                answer.incomplete = True

    try:
        with st.spinner("Waiting for the first token…", show_time=True):
            stream = pieces()
            first = next(stream, None)
        if first is None:
            written = ""
        else:

            def rest():
                yield first
                yield from stream

            written = st.write_stream(rest())
        answer.content = answer.response.content if answer.response and answer.response.content else (written if isinstance(written, str) else "")
    except ProviderError as error:
        answer.error, answer.error_type = error.message, error.type
        answer.attempts = list(getattr(error, "attempts", []) or [])
    except Exception as exc:  # noqa: BLE001 - a bug must show as a message, not a traceback
        answer.error, answer.error_type = unexpected_error(exc), "unexpected"
    notice.empty()
    return answer


def generation_controls(prefix: str) -> tuple[float, int, str]:
    """Temperature, max tokens and system prompt, kept per page for the whole session."""
    temperature = st.slider(
        "Temperature", 0.0, 2.0, 0.7, 0.05, key=f"{prefix}_temperature", persist_state="session",
        help="0 is focused and repeatable; higher is more varied.",
    )
    max_tokens = st.number_input(
        "Max tokens", min_value=1, max_value=4000, value=256, step=32, key=f"{prefix}_max_tokens", persist_state="session",
        help="The most tokens the answer may use (1 to 4000).",
    )
    system = st.text_area(
        "System prompt", value="", key=f"{prefix}_system", persist_state="session", height=90,
        placeholder="Optional: how the assistant should behave.",
    )
    return float(temperature), int(max_tokens), system.strip()
