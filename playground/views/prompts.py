"""Prompts: named prompts with versions and labels (conductor_core.workbench.prompts).

Write a system prompt and messages with {{variables}} and the model settings; every save is a
new version, never changed afterwards. Labels (`production`, `staging`, any name) point at one
version each and are moved here, each move recorded. Two versions can be diffed. A version or a
label opens in Compare, Chat or Experiments, and the gateway serves it as
`model="prompt:NAME@LABEL"`.
"""

from __future__ import annotations

import streamlit as st

from conductor_core.workbench import codegen
from conductor_core.workbench.prompts import (
    DEFAULT_LABEL,
    PromptContent,
    PromptError,
    PromptMessage,
    PromptVersion,
    diff,
)
from conductor_core.workbench.variants import Variant
from playground import access, controls, state, tools_editor
from playground import components as ui

c = state.conductor()
store = state.prompts()
ss = st.session_state

st.title("Prompts")
st.caption(
    "Named prompts with {{variables}} and their model settings. Every save is a new version; labels such as "
    "production point at one version and move with a record of who moved them. The gateway serves a prompt as "
    '`model="prompt:NAME@production"`.'
)

NEW = ""
summaries = store.summaries()
names = [s.name for s in summaries]
if just_saved := ss.pop("pr_select_next", None):  # set before the widgets are drawn (Streamlit's rule)
    ss["pr_selected"] = just_saved
    ss.pop(f"pr_base_{just_saved}", None)  # the editor shows the version just saved
    ss.pop("pr_note", None)
wanted = st.query_params.get("prompt")
if wanted in names and ss.get("pr_taken_param") != wanted:
    ss["pr_selected"] = wanted  # a link to one prompt (after a save, too)
    ss["pr_taken_param"] = wanted
if ss.get("pr_selected") not in [NEW, *names]:
    ss["pr_selected"] = names[0] if names else NEW
selected = st.selectbox(
    "Prompt",
    [NEW, *names],
    key="pr_selected",
    format_func=lambda n: "＋ New prompt" if n == NEW else n,
)
if selected != NEW:
    st.query_params["prompt"] = selected
elif "prompt" in st.query_params:
    del st.query_params["prompt"]
versions: list[PromptVersion] = store.versions(selected) if selected else []
latest = versions[0] if versions else None

# --- the editor: loaded from the latest version when another prompt (or a new save) is shown ---
DEFAULT = PromptContent(
    messages=(PromptMessage(role="user", content=""),),
    variant=Variant(provider="auto", temperature=0.7, max_tokens=256),
)


def _load(content: PromptContent) -> None:
    controls.load("pr", content.variant.model_copy(update={"system": content.system}))
    tools_editor.load("pr", tools_editor.ToolSet.of(content.variant))
    ss["pr_message_ids"] = list(range(len(content.messages)))
    ss["pr_next_id"] = len(content.messages)
    for i, message in enumerate(content.messages):
        ss[f"pr_role_{i}"] = message.role
        ss[f"pr_text_{i}"] = message.content


base = latest
if len(versions) > 1:  # edit from an earlier version (saving it again restores it as the newest)
    number = st.selectbox(
        "Edit from",
        [v.version for v in versions],
        key=f"pr_base_{selected}",
        format_func=lambda n: f"version {n}" + (" (latest)" if n == versions[0].version else ""),
    )
    base = next(v for v in versions if v.version == number)
shown = (selected, base.version if base else None)
if ss.get("pr_loaded") != shown or not (controls.loaded("pr") and tools_editor.loaded("pr")):
    _load(base.content if base else DEFAULT)
    ss["pr_loaded"] = shown


def _add_message() -> None:
    ids = ss["pr_message_ids"]
    new = ss["pr_next_id"]
    ss["pr_next_id"] = new + 1
    ss[f"pr_role_{new}"] = "assistant" if ids and ss.get(f"pr_role_{ids[-1]}") == "user" else "user"
    ss[f"pr_text_{new}"] = ""
    ids.append(new)


def _remove_message(mid: int) -> None:
    ss["pr_message_ids"] = [i for i in ss["pr_message_ids"] if i != mid]


edit, settings_column = st.columns([3, 2], gap="large")
with settings_column:
    st.subheader("Model settings")
    labels = {name: state.provider_label(c, name) for name in ["auto", *state.provider_names(c)]}
    variant = controls.variant_controls(
        c, "pr", providers=state.provider_names(c), allow_auto=True, labels=labels, system_label="System prompt"
    )
    with st.expander("Tools", icon=":material/build:"):
        tools = tools_editor.tool_editor("pr", mocks=False)
with edit:
    st.subheader("Messages")
    st.caption(
        "The system prompt is with the model settings. Write `{{name}}` for a variable, `\\{{` for a literal `{{`."
    )
    for mid in list(ss["pr_message_ids"]):
        with st.container(border=True, key=f"pr_message_{mid}"):
            role_column, remove_column = st.columns([4, 1], vertical_alignment="center")
            role_column.segmented_control(
                "Role", ["user", "assistant"], key=f"pr_role_{mid}", required=True, label_visibility="collapsed"
            )
            remove_column.button(
                "Remove",
                key=f"pr_remove_{mid}",
                on_click=_remove_message,
                args=(mid,),
                type="tertiary",
                icon=":material/delete:",
            )
            st.text_area("Message", key=f"pr_text_{mid}", height=100, label_visibility="collapsed")
    st.button("Add message", on_click=_add_message, icon=":material/add:")

    st.divider()
    name = selected or st.text_input("Name", key="pr_new_name", placeholder="support-reply")
    note = st.text_input("What changed (optional)", key="pr_note", placeholder="e.g. shorter system prompt")
    save = st.button(
        "Save as new version" if selected else "Save prompt",
        type="primary",
        icon=":material/save:",
        disabled=variant is None or tools is None,
    )
    if save and variant is not None and tools is not None:
        with_tools = tools.apply(variant)
        content = PromptContent(
            system=with_tools.system,
            messages=tuple(
                PromptMessage(role=ss[f"pr_role_{mid}"] or "user", content=ss[f"pr_text_{mid}"])
                for mid in ss["pr_message_ids"]
                if (ss[f"pr_text_{mid}"] or "").strip()
            ),
            variant=with_tools.model_copy(update={"tool_mocks": None}),
        )
        try:
            saved = store.save(name or "", content, by=access.who(), note=note)
        except PromptError as error:
            st.error(ui.escape_md(str(error)), icon=":material/error:")
        else:
            ss["pr_saved_note"] = f"Saved {saved.name} version {saved.version}."
            ss["pr_select_next"] = saved.name
            st.rerun()
if said := ss.pop("pr_saved_note", None):
    st.success(ui.escape_md(said), icon=":material/check:")

if latest is None:
    st.stop()

st.divider()
numbers = [v.version for v in versions]
by_number = {v.version: v for v in versions}
labels_now = store.labels(selected)

# --- labels ----------------------------------------------------------------------------------
st.subheader("Labels")
if labels_now:
    st.markdown(" · ".join(f"`{ui.escape_md(label)}` → v{v}" for label, v in labels_now.items()))
else:
    st.caption("No label yet. The gateway's bare `prompt:NAME` serves the production label.")
with st.form("pr_label_form", border=False):
    label_column, version_column, button_column, remove_column = st.columns([3, 2, 2, 2], vertical_alignment="bottom")
    label = label_column.text_input("Label", value=DEFAULT_LABEL, key="pr_label_name")
    target = version_column.selectbox("Version", numbers, key="pr_label_version", format_func=lambda n: f"v{n}")
    moved = button_column.form_submit_button("Move label", icon=":material/sell:")
    removed = remove_column.form_submit_button("Remove label", icon=":material/label_off:", type="tertiary")
if removed:
    try:
        gone = store.remove_label(selected, label.strip(), by=access.who())
    except PromptError as error:
        st.error(ui.escape_md(str(error)), icon=":material/error:")
    else:
        ss["pr_moved_note"] = f"{gone.label} removed (it pointed at v{gone.from_version})."
        st.rerun()
if moved:
    try:
        move = store.move_label(selected, label, int(target), by=access.who())
    except PromptError as error:
        st.error(ui.escape_md(str(error)), icon=":material/error:")
    else:
        ss["pr_moved_note"] = f"{move.label} now points at v{move.to_version}" + (
            f" (was v{move.from_version})." if move.from_version else "."
        )
        st.rerun()
if said := ss.pop("pr_moved_note", None):
    st.success(ui.escape_md(said), icon=":material/sell:")

# --- open it elsewhere -------------------------------------------------------------------------
st.subheader("Open")
places = [*(f"@{label}" for label in labels_now), *(f"@{n}" for n in numbers)]
at = st.selectbox(
    "At",
    places,
    key="pr_open_at",
    format_func=lambda p: f"{p[1:]} (v{labels_now[p[1:]]})" if p[1:] in labels_now else f"version {p[1:]}",
)
reference = f"{selected}{at}"
with st.container(horizontal=True, gap="small"):
    st.page_link(
        "views/compare.py",
        label="Open in Compare",
        icon=":material/view_column:",
        query_params={"open_prompt": reference},
    )
    st.page_link(
        "views/chat.py", label="Open in Chat", icon=":material/forum:", query_params={"open_prompt": reference}
    )
    st.page_link(
        "views/experiments.py",
        label="Open in Experiments",
        icon=":material/science:",
        query_params={"open_prompt": reference},
    )
with st.expander("Get code: the gateway serves it", icon=":material/code:"):
    opened = store.resolve(reference)
    call = codegen.PromptCall(reference=reference, variables={v: f"<{v}>" for v in opened.variables})
    st.code(codegen.prompt_gateway_python(call), language="python", wrap_lines=True)
    st.code(codegen.prompt_curl(call), language="bash", wrap_lines=True)

# --- history and diff ---------------------------------------------------------------------------
st.subheader("History")
st.dataframe(
    [
        {
            "Version": v.version,
            "Saved": v.created_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
            "By": v.created_by,
            "Labels": ", ".join(v.labels),
            "Model": v.content.variant.target,
            "What changed": v.note,
        }
        for v in versions
    ],
    hide_index=True,
    width="stretch",
)
moves = store.moves(selected)
if moves:
    with st.expander(f"Label moves ({len(moves)})", icon=":material/history:"):
        st.dataframe(
            [
                {
                    "When": m.moved_at.strftime("%Y-%m-%d %H:%M:%S UTC"),
                    "Label": m.label,
                    "From": f"v{m.from_version}" if m.from_version else "(new)",
                    "To": f"v{m.to_version}" if m.to_version else "(removed)",
                    "By": m.moved_by,
                }
                for m in moves
            ],
            hide_index=True,
            width="stretch",
        )

if len(versions) > 1:
    st.subheader("Diff")
    old_column, new_column = st.columns(2)
    old = old_column.selectbox("From", numbers, index=1, key="pr_diff_old", format_func=lambda n: f"v{n}")
    new = new_column.selectbox("To", numbers, index=0, key="pr_diff_new", format_func=lambda n: f"v{n}")
    found = diff(by_number[old], by_number[new])
    if found.same:
        st.caption("The two versions are the same.")
    else:
        if found.text:
            st.code(found.text, language="diff")
        else:
            st.caption("The messages are the same.")
        if found.settings:
            st.markdown("**Settings that changed**")
            st.dataframe(
                [{"Setting": s.name, f"v{old}": s.before, f"v{new}": s.after} for s in found.settings],
                hide_index=True,
                width="stretch",
            )
