"""Whether an answer that was asked to be JSON is JSON, and valid against its schema: a badge
("valid JSON ✓ (schema invoice)", "not JSON", "invalid: $.total: '12' is not of type
'number'") and the JSON pretty-printed in a collapsible box. Chat, Compare, Arena and
Experiments call `show_output_check`; the verdict itself is the core's (`structured.check_output`).
"""

from __future__ import annotations

from typing import Any, Literal

import streamlit as st

from conductor_core.models import ResponseFormatJsonSchema
from conductor_core.structured import OutputCheck, check_output

from . import components as ui

__all__ = ["verdict_text", "show_output_check"]


def verdict_text(verdict: OutputCheck, response_format: Any) -> str:
    """The badge's words: the first error when it failed, which schema when it passed."""
    if not verdict.parsed:
        return "not JSON"
    if not verdict.ok:
        return f"invalid: {verdict.error}"
    if isinstance(response_format, ResponseFormatJsonSchema):
        return f"valid JSON ✓ (schema {response_format.json_schema.name})"
    return "valid JSON ✓"


def show_output_check(
    text: str | None,
    response_format: Any,
    *,
    key: str,
    box: Literal["expander", "popover"] = "expander",
) -> OutputCheck | None:
    """The badge and the pretty JSON for an answer, when its request asked for JSON (nothing
    for text output). `box="popover"` where an expander cannot go (inside another one)."""
    verdict = check_output(text or "", response_format)
    if verdict is None:
        return None
    said = verdict_text(verdict, response_format)
    color = "green" if verdict.ok else ("red" if verdict.parsed else "orange")
    icon = ":material/check_circle:" if verdict.ok else ":material/error:"
    with st.container(key=f"json_check_{key}"):
        st.badge(ui.escape_md(said), icon=icon, color=color)
        if verdict.parsed and verdict.pretty is not None:
            holder = (
                st.expander("JSON", icon=":material/data_object:")
                if box == "expander"
                else st.popover("JSON", icon=":material/data_object:")
            )
            with holder:
                st.code(verdict.pretty, language="json")
    return verdict
