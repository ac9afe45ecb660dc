"""Share buttons: Export (Markdown, JSON, one self-contained HTML report) and Get code (the
same request as Python with the `openai` client against the gateway, with the provider's own
SDK, and as curl), for a conversation, a comparison round and an experiment run.

The documents are built by `conductor_core.workbench.exports` and the snippets by
`codegen`; this module only turns the page's session objects into their inputs and draws
the controls. Exports are built when a button is clicked (deferred `data`), never on every
rerun, and every one passes through `redact()`, so no key reaches a file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import streamlit as st

from conductor_core.models import ChatMessage, ChatRequest
from conductor_core.router import Conductor
from conductor_core.workbench import codegen, exports
from conductor_core.workbench.attachments import Attachment, message_parts
from conductor_core.workbench.sessions import Answer, Conversation, Turn
from conductor_core.workbench.variants import variant_labels

from . import components as ui
from . import state

__all__ = ["figures", "transcript", "comparison", "export_buttons", "get_code", "session_endpoints", "file_stem"]

_FORMATS = (
    ("Markdown", "md", "text/markdown", exports.to_markdown),
    ("JSON", "json", "application/json", exports.to_json),
    ("HTML report", "html", "text/html", exports.to_html),
)


def session_endpoints() -> dict:
    """Endpoints this browser session added (name -> EndpointConfig), for Get code's base URL."""
    return st.session_state.setdefault("session_endpoints", {})


# --- session objects -> export documents --------------------------------------------------------


def figures(answer: Answer) -> exports.Figures | None:
    if answer.response is None:
        return None
    a = answer.response.analytics
    return exports.Figures(
        latency_ms=a.latency_ms,
        ttft_ms=a.time_to_first_token_ms,
        tokens_per_second=a.tokens_per_second,
        input_tokens=a.input_tokens,
        output_tokens=a.output_tokens,
        cost_usd=a.cost_usd,
    )


def _status(answer: Answer) -> str:
    return "ok" if answer.status == "done" else answer.status


def _label(answer: Answer) -> str:
    if answer.response is not None:
        return f"{answer.response.metadata.provider}/{answer.response.metadata.model}"
    return answer.variant.target


def attached(conversation: Conversation, turn: Turn) -> list[exports.Attached]:
    """A turn's images and PDFs for an export (the bytes go only into the HTML)."""
    return [
        exports.Attached(
            name=a.ref.name, media_type=a.ref.media_type, size=a.ref.size, sha256=a.ref.sha256, data=a.data
        )
        for a in conversation.attachments(turn)
    ]


def transcript(conversation: Conversation) -> exports.Transcript:
    """The conversation as shown: each message and its chosen answer."""
    turns: list[exports.Turn] = []
    variant = conversation.session.variants[0] if conversation.session.variants else None
    if variant is not None and variant.system:
        turns.append(exports.Turn(role="system", content=variant.system))
    for turn in conversation.turns:
        if not turn.continues:  # a turn that continues after tool results has no message of its own
            turns.append(exports.Turn(role="user", content=turn.prompt, attachments=attached(conversation, turn)))
        answer = turn.chosen.get(0)
        if answer is not None:
            turns.append(
                exports.Turn(
                    role="assistant",
                    content=answer.content,
                    label=_label(answer),
                    status=_status(answer),
                    error=answer.error_message,
                    figures=figures(answer),
                    request_id=answer.request_id,
                    tool_calls=answer.tool_calls or None,
                )
            )
            turns += [
                exports.Turn(
                    role="tool", content=answer.tool_results[call.id], tool_call_id=call.id, name=call.function.name
                )
                for call in answer.tool_calls
                if call.id in answer.tool_results
            ]
    return exports.Transcript(
        title=conversation.session.title or "Conversation",
        created_at=conversation.session.created_at,
        settings=variant,
        turns=turns,
    )


def comparison(conversation: Conversation, index: int) -> exports.Comparison:
    """One round of a comparison: its prompt, each column's answer, the vote."""
    turn: Turn = conversation.turns[index]
    lanes = sorted(turn.chosen)
    # Labelled by the settings the answers were given with (as the page and the vote name them),
    # not the columns' current settings, which may have changed since.
    labels = variant_labels([turn.chosen[lane].variant for lane in lanes])
    columns = []
    for lane, label in zip(lanes, labels, strict=True):
        answer = turn.chosen[lane]
        columns.append(
            exports.Column(
                label=label,
                answer=answer.content or None,
                status=_status(answer),
                error=answer.error_message,
                figures=figures(answer),
                request_id=answer.request_id,
                settings=answer.variant,
                tool_calls=answer.tool_calls or None,
                tool_results=answer.tool_results or None,
            )
        )
    title = conversation.session.title or "Comparison"
    if len(conversation.turns) > 1:
        title += f" (message {index + 1})"
    vote = {"both_bad": "all bad"}.get(turn.vote or "", turn.vote)
    prompt = "(continued after the tool results)" if turn.continues else turn.prompt
    return exports.Comparison(
        title=title,
        prompt=prompt,
        attachments=attached(conversation, turn),
        created_at=turn.created_at,
        columns=columns,
        vote=vote,
    )


# --- the controls ---------------------------------------------------------------------------------


def export_buttons(build: Callable[[], exports.Document], *, key: str, name: str) -> None:
    """Three downloads of the document `build()` makes (called only when one is clicked).
    `name` is the file name's stem."""
    row = st.container(horizontal=True, gap="small")
    with row:
        for label, extension, mime, render in _FORMATS:
            st.download_button(
                label,
                data=lambda render=render: render(build()),
                file_name=f"{name}.{extension}",
                mime=mime,
                key=f"{key}_{extension}",
                icon=":material/download:",
                on_click="ignore",
                help="A self-contained file (styles and charts inside): it opens offline and makes no network request."
                if extension == "html"
                else None,
            )


def file_stem(*parts: str) -> str:
    """A download's file name without its extension: the parts, made safe (as exports.filename)."""
    stem = "".join(ch if ch.isalnum() or ch in "-_" else "-" for ch in "-".join(parts)).strip("-")
    return stem[:80] or "export"


def get_code(c: Conductor, request: ChatRequest, *, prompt: codegen.PromptCall | None = None) -> None:
    """The three snippets for one request, in tabs. Keys are read from environment variables.
    `prompt`: the saved prompt it came from (the gateway snippets then ask for it by name)."""
    provider = request.provider
    try:
        target = codegen.code_target(
            c.settings,
            provider,
            request.model,
            endpoint=session_endpoints().get(provider),
            default_model=state.default_model(c, provider),
        )
    except ValueError as error:
        st.caption(f":material/code_off: {ui.escape_md(str(error))}")
        return
    snippets = codegen.snippets(request, target, prompt=prompt)
    tabs = st.tabs(["Python · gateway", "Python · provider SDK", "curl"])
    with tabs[0]:
        st.caption("The `openai` client against Conductor's gateway (`python -m gateway`).")
        st.code(snippets["python_gateway"], language="python", wrap_lines=True)
    with tabs[1]:
        if snippets["python_sdk"] is None:
            st.caption("The embedded model runs inside Conductor: call it through the gateway.")
        else:
            st.code(snippets["python_sdk"], language="python", wrap_lines=True)
    with tabs[2]:
        st.code(snippets["curl"], language="bash", wrap_lines=True)
    st.caption(
        f":material/key: No key is written in these: the SDK's reads {target.key_env} from the environment, "
        "the gateway's CONDUCTOR_API_KEY (if the gateway asks for one)."
        if target.key_env
        else ":material/key: No key is written in these: this target needs none; the gateway's reads "
        "CONDUCTOR_API_KEY from the environment (if the gateway asks for one)."
    )


def last_request(
    variant, history: list[ChatMessage], prompt: str | None, attachments: Sequence[Attachment] = ()
) -> ChatRequest:
    """What was sent: the history, then the prompt with its images and PDFs (None: a turn that
    continued after tool results)."""
    if prompt is None:
        return variant.request(history)
    last = (
        ChatMessage(role="user", parts=message_parts(prompt, list(attachments)))
        if attachments
        else ChatMessage(role="user", content=prompt)
    )
    return variant.request([*history, last])
