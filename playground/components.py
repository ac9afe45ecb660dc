"""Rendering shared by the pages: an answer's figures, routing, errors, and the marks of a
comparison.

Model output and prompts are shown as markdown or text only, never with
`unsafe_allow_html`: Streamlit's markdown shows raw HTML (a `<script>` tag...) as text.
Values we put into our own markdown (model names, error messages) are escaped first.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from typing import Any

import streamlit as st

from conductor_core.config import redact
from conductor_core.models import (
    Attempt,
    ChatResponse,
)

__all__ = [
    "escape_md",
    "literal_label",
    "format_cost",
    "format_total_cost",
    "format_ms",
    "figures_line",
    "seen_figures_line",
    "compare_marks",
    "render_figures",
    "render_routing",
    "render_attempts",
    "render_error",
    "render_answer_text",
    "copy_control",
    "copy_button",
    "unexpected_error",
]

log = logging.getLogger("conductor.playground")

# ":" too: Streamlit reads ":red[...]", ":material/home:" and ":smile:" as directives.
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$:])")


def escape_md(text: Any) -> str:
    """`text` with markdown's special characters escaped, for values inside our own markdown."""
    return _MD_SPECIAL.sub(r"\\\1", str(text))


def literal_label(text: Any) -> str:
    """`text` for a widget label (a button, a link), shown as typed: Markdown escaped, and a
    word joiner after each colon, because labels read ":material/home:" as an icon even
    when the colons are escaped. Display only: the text itself is stored unchanged."""
    return escape_md(text).replace(":", ":\u2060")


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


def figures_line(response: ChatResponse) -> str:
    """The figures of an answer as a row of small badges (markdown): provider and model,
    latency, time to first token, speed, tokens in/out, estimated cost."""
    a, m = response.analytics, response.metadata
    cost = format_cost(a.cost_usd)
    # A stream cut short may come without usage: 0 tokens then means "not reported", not zero.
    unreported = m.finish_reason == "incomplete"
    tokens_in = "—" if unreported and not a.input_tokens else f"{a.input_tokens:,}"
    tokens_out = "—" if unreported and not a.output_tokens else f"{a.output_tokens:,}"
    if a.output_tokens_estimated and tokens_out != "—":
        tokens_out = f"≈{tokens_out}"  # counted from the pieces that arrived: the provider did not say
    parts = [
        f":violet-badge[:material/dns: {escape_badge(m.provider)} · {escape_badge(m.model)}]",
        f":gray-badge[:material/timer: {format_ms(a.latency_ms)}]",
        f":gray-badge[:material/bolt: first token {format_ms(a.time_to_first_token_ms)}]",
        f":gray-badge[:material/speed: {a.tokens_per_second:,.1f} tok/s]"
        if a.tokens_per_second
        else ":gray-badge[:material/speed: — tok/s]",
        f":gray-badge[:material/token: {tokens_in} in → {tokens_out} out]",
        f":{'green' if cost == 'free' else 'orange' if cost == 'unknown' else 'blue'}-badge[:material/payments: {cost}]",
    ]
    if a.load_ms:
        parts.append(f":gray-badge[:material/downloading: model load {format_ms(a.load_ms)}, not counted above]")
    if m.finish_reason == "length":
        parts.append(":gray-badge[:material/content_cut: stopped at max tokens]")
    return " ".join(parts)


def seen_figures_line(target: str, elapsed_ms: float, first_text_ms: float | None) -> str:
    """For an answer stopped or interrupted before the provider reported figures: what the
    page itself saw (the request log has the provider's row, marked cancelled)."""
    return " ".join(
        [
            f":violet-badge[:material/dns: {escape_badge(target)}]",
            f":gray-badge[:material/timer: {format_ms(elapsed_ms)} until stopped]",
            f":gray-badge[:material/bolt: first text {format_ms(first_text_ms)}]",
        ]
    )


def compare_marks(responses: list[ChatResponse | None]) -> tuple[set[int], set[int]]:
    """(fastest, cheapest) positions among successful answers, compared as they are shown,
    so two columns that both say "756 ms" are tied. Cheapest is only given among priced
    answers, and only when at least two are priced (free is not cheaper than unknown)."""
    done = [(i, r) for i, r in enumerate(responses) if r is not None]
    if len(done) < 2:
        return set(), set()
    latency = {i: r.analytics.latency_ms for i, r in done}
    best = format_ms(min(latency.values()))
    fastest = {i for i, v in latency.items() if format_ms(v) == best}
    priced = {i: r.analytics.cost_usd for i, r in done if r.analytics.cost_usd is not None}
    cheapest: set[int] = set()
    if len(priced) >= 2:
        low = format_cost(min(priced.values()))
        cheapest = {i for i, v in priced.items() if format_cost(v) == low}
    return fastest, cheapest


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
        st.caption(
            f":material/auto_awesome: AUTO ({escape_md(policy)}) chose **{escape_md(served)}**: {escape_md(routing.reason or '')}"
        )
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


# A button that puts a text on the clipboard: Streamlit has none (st.code's icon shows on hover
# only). Our own constant HTML and script; the text and the words arrive as data and are set
# as text (never parsed as HTML). Without the Clipboard API (a page served over plain HTTP
# from another machine), a hidden text area and the browser's copy command are the fallback;
# if both fail the button says so, and the caller shows the text to copy by hand.
_COPY_HTML = (
    '<button type="button" class="copy"><svg viewBox="0 0 24 24" aria-hidden="true"><path d="M3.9 12c0-1.71 1.39-3.1'
    " 3.1-3.1h4V7H7c-2.76 0-5 2.24-5 5s2.24 5 5 5h4v-1.9H7c-1.71 0-3.1-1.39-3.1-3.1zM8 13h8v-2H8v2zm9-6h-4v1.9h4c1.71"
    ' 0 3.1 1.39 3.1 3.1s-1.39 3.1-3.1 3.1h-4V17h4c2.76 0 5-2.24 5-5s-2.24-5-5-5z"/></svg>'
    '<span class="label"></span></button><span class="said" role="status"></span>'
)
_COPY_CSS = """
.copy { font: inherit; font-size: 0.875rem; padding: 0.25rem 0.75rem; min-height: 2.5rem; cursor: pointer;
  display: inline-flex; align-items: center; gap: 0.4rem;
  border-radius: 0.5rem; border: 1px solid var(--st-border-color, rgba(49, 51, 63, 0.2));
  background: var(--st-background-color, #fff); color: var(--st-text-color, inherit); }
.copy:hover { border-color: var(--st-primary-color, #ff4b4b); color: var(--st-primary-color, #ff4b4b); }
.copy svg { width: 1.1rem; height: 1.1rem; fill: currentColor; }
.said { margin-left: 0.5rem; font-size: 0.875rem; opacity: 0.75; }
"""
_COPY_JS = """
export default function (component) {
    const { data, parentElement } = component;
    const button = parentElement.querySelector("button.copy");
    const said = parentElement.querySelector(".said");
    button.querySelector(".label").textContent = data.label;
    button.onclick = async () => {
        let copied = false;
        try {
            await navigator.clipboard.writeText(data.text);
            copied = true;
        } catch (error) {
            const area = document.createElement("textarea");
            area.value = data.text;
            area.setAttribute("readonly", "");
            area.style.position = "fixed";
            area.style.opacity = "0";
            document.body.appendChild(area);
            area.select();
            try { copied = document.execCommand("copy"); } catch (ignored) { copied = false; }
            area.remove();
        }
        said.textContent = copied ? data.copied : data.failed;
        button.dataset.copied = String(copied);
    };
}
"""
_copy_component = st.components.v2.component("conductor.copy_button", html=_COPY_HTML, css=_COPY_CSS, js=_COPY_JS)


def copy_button(label: str, text: str, *, key: str, copied: str = "Copied", failed: str = "Not copied") -> None:
    """A button that copies `text` to the clipboard, then says `copied` (or `failed`) beside it."""
    _copy_component(data={"label": label, "text": text, "copied": copied, "failed": failed}, key=key, width="content")


def unexpected_error(exc: BaseException) -> str:
    """A sentence for a bug (not a provider failure): logged with its traceback, shown without."""
    log.exception("unexpected error in the playground")
    return f"Something went wrong: {redact(f'{type(exc).__name__}: {exc}')}. The app keeps working: try again."
