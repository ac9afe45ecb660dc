"""The tools a model may call, edited once per session (Chat, Compare: every column gets
the same) or per experiment (every variant): each tool's name, description, JSON-schema
parameters and an optional fixed mock result, an "Import" of an OpenAI `tools` array, and
the tool choice (auto, required, none, or one named tool).

What the editor shows lives in the page's widget state under a prefix; `load` puts a
variant's tools there, `tool_editor` draws them and returns a `ToolSet` (None while one is
wrong, with the reason beside it), and `ToolSet.apply` puts them on a variant. The tools
and the choice are `Variant.tools` / `Variant.tool_choice` (sent); the mocks are
`Variant.tool_mocks` (kept with the variant, so with the session's lanes; never sent).
The parsing and checking are pure functions, tested without a page.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from conductor_core.models import NamedToolChoice, Tool, ToolFunction, ToolName
from conductor_core.structured import schema_problem
from conductor_core.workbench.variants import Variant

from . import components as ui
from .controls import KEEP

__all__ = [
    "ToolSet",
    "ToolDraft",
    "CHOICES",
    "parse_tools_json",
    "build_tools",
    "choice_value",
    "choice_label",
    "load",
    "loaded",
    "tool_editor",
    "EXAMPLE",
]

#: The tool choices besides a named tool.
CHOICES = ("auto", "required", "none")

#: What "Add a tool" starts from.
EXAMPLE = {
    "type": "object",
    "properties": {"city": {"type": "string", "description": "A city name"}},
    "required": ["city"],
}


@dataclass(frozen=True)
class ToolSet:
    """The tools a session or experiment offers, how the model must use them, and the mocks."""

    tools: tuple[Tool, ...] = ()
    tool_choice: str | NamedToolChoice | None = None
    mocks: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, variant: Variant) -> ToolSet:
        return cls(tuple(variant.tools or ()), variant.tool_choice, dict(variant.tool_mocks or {}))

    def apply(self, variant: Variant) -> Variant:
        """`variant` offering these tools (and none when there are none)."""
        return variant.model_copy(
            update={
                "tools": self.tools or None,
                "tool_choice": self.tool_choice if self.tools else None,
                "tool_mocks": {k: v for k, v in self.mocks.items() if any(t.function.name == k for t in self.tools)}
                or None,
            }
        )


@dataclass
class ToolDraft:
    """One tool as the person typed it (parameters as JSON text)."""

    name: str = ""
    description: str = ""
    parameters: str = ""
    mock: str = ""


def _tool(draft: ToolDraft, where: str) -> Tool:
    """The tool a draft describes, or ValueError saying which tool and what to change."""
    name = draft.name.strip()
    if not name:
        raise ValueError(f"{where}: give it a name (letters, digits, _ or -, up to 64)")
    label = f"{where} ({name})"
    if len(name) > 64 or not all(ch.isalnum() or ch in "_-" for ch in name):
        raise ValueError(f"{label}: a tool name has only letters, digits, _ and -, up to 64 of them")
    parameters: Any = None
    if draft.parameters.strip():
        try:
            parameters = json.loads(draft.parameters)
        except ValueError as exc:
            raise ValueError(f"{label}: parameters are not JSON ({exc})") from None
        problem = schema_problem(parameters)
        if problem:
            raise ValueError(f"{label}: parameters: {problem}")
    return Tool(function=ToolFunction(name=name, description=draft.description.strip() or None, parameters=parameters))


def build_tools(drafts: list[ToolDraft]) -> tuple[list[Tool], list[str]]:
    """The tools the drafts describe, and what is wrong (each problem names its tool)."""
    tools: list[Tool] = []
    problems: list[str] = []
    for number, draft in enumerate(drafts, 1):
        try:
            tool = _tool(draft, f"tool {number}")
        except ValueError as error:
            problems.append(str(error))
            continue
        if any(t.function.name == tool.function.name for t in tools):
            problems.append(f"tool {number} ({tool.function.name}): another tool has this name; names must differ")
            continue
        tools.append(tool)
    return tools, problems


def parse_tools_json(text: str) -> list[ToolDraft]:
    """An OpenAI `tools` array (or one tool, or the deprecated `functions` form) as drafts.
    ValueError says which tool is wrong and what to change."""
    try:
        value = json.loads(text)
    except ValueError as exc:
        raise ValueError(f'not JSON ({exc}): paste an OpenAI tools array, [{{"type": "function", ...}}]') from None
    if isinstance(value, dict):
        value = value.get("tools", [value]) if "tools" in value else [value]
    if not isinstance(value, list) or not value:
        raise ValueError('paste an OpenAI tools array: [{"type": "function", "function": {"name": ...}}]')
    drafts: list[ToolDraft] = []
    for number, item in enumerate(value, 1):
        where = f"tool {number}"
        if not isinstance(item, dict):
            raise ValueError(f"{where}: each tool is a JSON object, not {type(item).__name__}")
        if item.get("type", "function") != "function":
            raise ValueError(f"{where}: only function tools can be called here (type is {item.get('type')!r})")
        function = item.get("function", item)  # {"name": ...} alone is the deprecated `functions` form
        if not isinstance(function, dict) or not isinstance(function.get("name"), str):
            raise ValueError(f'{where}: it needs "function": {{"name": ..., "parameters": {{...}}}}')
        parameters = function.get("parameters")
        description = function.get("description") or ""
        if not isinstance(description, str):
            raise ValueError(f"{where} ({function['name']}): description must be text")
        draft = ToolDraft(
            name=function["name"],
            description=description,
            parameters=json.dumps(parameters, indent=2) if parameters is not None else "",
        )
        _tool(draft, where)  # the same checks as a typed tool, said the same way
        drafts.append(draft)
    return drafts


def choice_value(option: str) -> str | NamedToolChoice:
    """The tool choice a control option means ("auto", "required", "none", or a tool's name)."""
    if option in CHOICES:
        return option
    return NamedToolChoice(function=ToolName(name=option))


def choice_label(option: str) -> str:
    return {
        "auto": "auto: the model decides",
        "required": "required: call at least one tool",
        "none": "none: answer in text",
    }.get(option, f"call {option}")


def _choice_option(choice: str | NamedToolChoice | None) -> str:
    if isinstance(choice, NamedToolChoice):
        return choice.function.name
    return choice or "auto"


# --- the widgets ------------------------------------------------------------------------------


def _key(prefix: str, name: str) -> str:
    return f"{prefix}_tools_{name}"


def load(prefix: str, tools: ToolSet) -> None:
    """Put a tool set into the editor keyed by `prefix` (before it is drawn)."""
    ss = st.session_state
    ids = []
    for tool in tools.tools:
        tid = uuid.uuid4().hex[:8]
        ids.append(tid)
        function = tool.function
        ss[_key(prefix, f"{tid}_name")] = function.name
        ss[_key(prefix, f"{tid}_description")] = function.description or ""
        ss[_key(prefix, f"{tid}_parameters")] = (
            json.dumps(function.parameters, indent=2) if function.parameters is not None else ""
        )
        ss[_key(prefix, f"{tid}_mock")] = tools.mocks.get(function.name, "")
    ss[_key(prefix, "ids")] = ids
    ss[_key(prefix, "choice")] = _choice_option(tools.tool_choice)
    ss.pop(_key(prefix, "import_error"), None)


def loaded(prefix: str) -> bool:
    """Whether the editor keyed by `prefix` holds its values (Streamlit forgets a widget's
    value once a page without it has run: coming back to a page means loading again)."""
    ss = st.session_state
    fields = ("name", "description", "parameters", "mock")
    return _key(prefix, "choice") in ss and all(
        _key(prefix, f"{tid}_{name}") in ss for tid in ss.get(_key(prefix, "ids"), []) for name in fields
    )


def _drafts(prefix: str) -> list[ToolDraft]:
    ss = st.session_state
    return [
        ToolDraft(
            name=ss.get(_key(prefix, f"{tid}_name"), ""),
            description=ss.get(_key(prefix, f"{tid}_description"), ""),
            parameters=ss.get(_key(prefix, f"{tid}_parameters"), ""),
            mock=ss.get(_key(prefix, f"{tid}_mock"), ""),
        )
        for tid in ss.get(_key(prefix, "ids"), [])
    ]


def _add(prefix: str, drafts: list[ToolDraft]) -> None:
    ss = st.session_state
    ids = list(ss.get(_key(prefix, "ids"), []))
    for draft in drafts:
        tid = uuid.uuid4().hex[:8]
        ids.append(tid)
        ss[_key(prefix, f"{tid}_name")] = draft.name
        ss[_key(prefix, f"{tid}_description")] = draft.description
        ss[_key(prefix, f"{tid}_parameters")] = draft.parameters
        ss[_key(prefix, f"{tid}_mock")] = draft.mock
    ss[_key(prefix, "ids")] = ids


def _add_blank(prefix: str) -> None:
    _add(prefix, [ToolDraft(name="", parameters=json.dumps(EXAMPLE, indent=2))])


def _remove(prefix: str, tid: str) -> None:
    ss = st.session_state
    ss[_key(prefix, "ids")] = [t for t in ss.get(_key(prefix, "ids"), []) if t != tid]


def _import(prefix: str) -> None:
    ss = st.session_state
    try:
        drafts = parse_tools_json(ss.get(_key(prefix, "import"), ""))
    except ValueError as error:
        ss[_key(prefix, "import_error")] = str(error)
        return
    ss.pop(_key(prefix, "import_error"), None)
    ss[_key(prefix, "import")] = ""
    _add(prefix, drafts)


def tool_editor(prefix: str, *, mocks: bool = True) -> ToolSet | None:
    """Draw the editor; return the tools it shows (None while one is wrong, said beside it).
    `mocks`: offer a mock result per tool (Chat and Compare, where calls are answered)."""
    ss = st.session_state
    ss.setdefault(_key(prefix, "ids"), [])
    drafts = _drafts(prefix)
    for tid, draft in zip(ss[_key(prefix, "ids")], drafts, strict=True):
        title = draft.name.strip() or "(unnamed tool)"
        with st.container(border=True, key=_key(prefix, f"{tid}_box")):
            st.text_input("Name", key=_key(prefix, f"{tid}_name"), placeholder="get_weather", persist_state=KEEP)
            st.text_input(
                "Description", key=_key(prefix, f"{tid}_description"), placeholder="What it does", persist_state=KEEP
            )
            st.text_area(
                "Parameters (JSON Schema)",
                key=_key(prefix, f"{tid}_parameters"),
                persist_state=KEEP,
                height=140,
                help="The arguments the model must pass, as a JSON Schema object. Empty: no parameters.",
            )
            if mocks:
                st.text_area(
                    "Mock result",
                    key=_key(prefix, f"{tid}_mock"),
                    persist_state=KEEP,
                    height=68,
                    placeholder="Optional: answers a call with one click",
                    help="A fixed result for this tool's calls (Use mock). Kept with the session; never sent.",
                )
            st.button(
                f"Remove {title}",
                key=_key(prefix, f"{tid}_remove"),
                icon=":material/delete:",
                type="tertiary",
                on_click=_remove,
                args=(prefix, tid),
            )
    st.button("Add a tool", key=_key(prefix, "add"), icon=":material/add:", on_click=_add_blank, args=(prefix,))
    with st.popover("Import OpenAI tools", icon=":material/upload:"):
        st.text_area(
            "OpenAI tools JSON",
            key=_key(prefix, "import"),
            height=160,
            placeholder='[{"type": "function", "function": {"name": "get_weather", "parameters": {...}}}]',
        )
        st.button("Import", key=_key(prefix, "import_go"), type="primary", on_click=_import, args=(prefix,))
        if ss.get(_key(prefix, "import_error")):
            st.error(f"Not imported: {ui.escape_md(ss[_key(prefix, 'import_error')])}", icon=":material/error:")

    tools, problems = build_tools(drafts)
    names = [t.function.name for t in tools]
    options = [*CHOICES, *names]
    if ss.get(_key(prefix, "choice")) not in options:
        ss[_key(prefix, "choice")] = "auto"
    option = st.selectbox(
        "Tool choice",
        options,
        key=_key(prefix, "choice"),
        persist_state=KEEP,
        format_func=choice_label,
        disabled=not tools,
        help="Whether the model may, must, or must not call a tool, or which one it must call.",
    )
    if problems:
        for problem in problems:
            st.error(ui.escape_md(problem), icon=":material/error:")
        return None
    mock_of = {d.name.strip(): d.mock for d in drafts if mocks and d.mock.strip()}
    return ToolSet(tuple(tools), choice_value(option) if tools else None, mock_of)
