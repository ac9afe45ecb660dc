""" "Add to dataset": a logged request (a Dashboard log row, a chat turn, a Compare round) as a
row of a saved dataset, its answer as `expected` when the person marks it good. The row is
built in the core (dataset_store.row_from_request); this is the small dialog around it."""

from __future__ import annotations

import json

import streamlit as st

from conductor_core.workbench.dataset_store import DatasetStoreError, row_from_request
from conductor_core.workbench.datasets import DatasetError

from . import state
from .access import who

ss = st.session_state

__all__ = ["add_to_dataset", "NEW_DATASET"]

NEW_DATASET = "New dataset…"


def _clip(text: str, limit: int = 400) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


@st.dialog("Add to dataset", width="medium")
def add_to_dataset(request_id: str, source: str) -> None:
    """`source` says where the person clicked ("dashboard", "chat", "compare"): kept on the row."""
    c = state.conductor()
    try:
        found = row_from_request(c.log, state.sessions(), request_id)
    except DatasetStoreError as error:
        st.error(f"This request cannot be added: {error}", icon=":material/error:")
        return
    st.caption("Input (the row's `prompt`; the whole conversation goes in `messages`)")
    st.code(_clip(found.values["prompt"]), language=None, wrap_lines=True)
    extra = [k for k in found.values if k not in ("prompt", "messages")]
    if extra:
        st.caption("Also: " + ", ".join(f"`{k}`" for k in extra))
    added = f"ds_added_{request_id}"
    done = ss.get(added)
    # Once added, the same form is drawn again, disabled, with the result after it. Every widget
    # keeps its place and key: the browser removes what a dialog run did not redraw only when that
    # run ends, and a live refresh starting at that moment leaves it there (streamlit/streamlit#16708),
    # so a form that gave way to another view could keep its old "Add" button under the result.
    store = state.datasets()
    names = store.names()
    choice = st.selectbox(
        "Dataset", [*names, NEW_DATASET], index=len(names), key=f"ds_pick_{request_id}", disabled=bool(done)
    )
    name = (
        st.text_input("Name of the new dataset", key=f"ds_new_{request_id}", disabled=bool(done))
        if choice == NEW_DATASET
        else choice
    )
    has_answer = bool((found.answer or "").strip())
    good = st.checkbox(
        "Answer is good → use as expected",
        key=f"ds_good_{request_id}",
        disabled=not has_answer or bool(done),
        help="The answer becomes the row's `expected` column, which Experiments' checks compare with."
        if has_answer
        else "This request has no answer kept (it failed, or answers are not logged).",
    )
    if has_answer:
        st.caption("Answer")
        st.code(_clip(found.answer or ""), language=None, wrap_lines=True)
    st.caption(found.note)
    if done:
        # Added in this dialog: say where, and offer another dataset rather than a second copy.
        label, rows, row = done
        st.button("Added", icon=":material/check:", key=f"ds_add_{request_id}", disabled=True)
        st.success(f"Added to {label} ({rows:,} row{'s' if rows != 1 else ''}).", icon=":material/check:")
        with st.expander("The row"):
            st.code(json.dumps(row, ensure_ascii=False, indent=2)[:2000], language="json")
        st.button("Add it to another dataset", key=f"ds_again_{request_id}", on_click=ss.pop, args=(added, None))
        return
    if st.button("Add", type="primary", icon=":material/playlist_add:", key=f"ds_add_{request_id}"):
        try:
            row = found.row(answer_is_good=good)
            version = store.add_rows(
                name or "",
                [row],
                by=who(),
                source=f"{source}:{request_id}",
                note=f"1 row from {source.capitalize()}" + (" (answer marked good)" if good else ""),
            )
        except DatasetError as error:
            st.error(str(error), icon=":material/error:")
            return
        ss[added] = (version.label, version.row_count, row)
        st.rerun(scope="fragment")  # the dialog again: the form disabled, the result, no second Add
