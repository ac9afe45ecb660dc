"""Experiments: a prompt template with {{variables}} over a dataset (pasted or uploaded CSV or
JSONL, or a saved dataset at a version, which the run records), answered by 2-4 variants, with a grid of every answer, figures per variant, ratings
and checks against an `expected` column. Runs are carried out by the process (the runner's
threads), never by the page: a reload or another page loses nothing, and the URL
(`?experiment=…&run=…`) opens the run again. Every run is stored; open an earlier one,
re-run, and see what changed since another run of the same experiment.

Images: a column named `image` or ending in `_image` holds a picture per row (a data URL, or a
path inside a .zip uploaded with the rows), sent after the row's text; a row opened from the grid shows it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

import pandas as pd
import streamlit as st

from conductor_core.jobs import queued_progress
from conductor_core.models import ChatMessage
from conductor_core.workbench import exports, judging
from conductor_core.workbench.datasets import DATA_EXTENSIONS, Dataset, DatasetError, read_dataset
from conductor_core.workbench.experiments import (
    Cell,
    Check,
    CheckKind,
    Experiment,
    ExperimentError,
    GridRow,
    JudgeTarget,
    Run,
)
from conductor_core.workbench.prompts import PromptError
from conductor_core.workbench.runner import PairwiseHandle, RunHandle, image_refusals, start_pairwise, start_run
from conductor_core.workbench.templates import Template, TemplateError
from conductor_core.workbench.variants import Variant, variant_labels
from playground import attachments as pictures
from playground import components as ui
from playground import controls, run_grid, share, state, structured_view, tools_editor
from playground.access import spending_refusal, who

c = state.conductor()
store = state.experiments()
ss = st.session_state

#: How often a running run's progress and grid are redrawn.
REFRESH_S = 1.0
EXAMPLE_TEMPLATE = "What is the capital of {{country}}? Answer with the city only."
EXAMPLE_DATA = "country,expected\nFrance,Paris\nJapan,Tokyo\nKenya,Nairobi\nCanada,Ottawa\nPeru,Lima\n"
KEEP = "session"  # persist_state: a form's values survive a visit to another page
IMAGES_HELP = (
    "Images: a column named `image` or ending in `_image` holds one per row, sent after the prompt's text: "
    "a data URL (data:image/png;base64,…), or the path of a file inside a .zip that holds the CSV/JSONL "
    "and the images (e.g. `scans/1.png`). PNG, JPEG, WebP or GIF, at most 5 MB each."
)
_CHECK_HELP = {
    "contains": "The answer contains the expected text (case ignored).",
    "regex": "The expected value is a regular expression searched in the answer (add (?i) to ignore case).",
    "equals": "The answer is the expected text (case and surrounding spaces ignored).",
}


_TEXT_KINDS = (CheckKind.contains, CheckKind.regex, CheckKind.equals)
#: The checks beyond the expected column, as the editor offers them.
_MORE_CHECKS = {
    CheckKind.schema: "valid against the schema",
    CheckKind.json_path: "JSON path equals a column",
    CheckKind.called_tool: "called a tool",
    CheckKind.tool_argument: "tool argument equals a column",
    CheckKind.no_tool: "called no tool",
    CheckKind.rubric: "graded by a judge (rubric)",
}
EXAMPLE_RUBRIC = "The answer to “{{country}}” names {{expected}} and nothing wrong. Answer: {{answer}}"


def letter(i: int) -> str:
    return chr(65 + i)


# --- which experiment and run this tab shows ---------------------------------------------------


def current() -> tuple[str | None, str | None]:
    """The URL's experiment and run, else the ones this tab had open here (Streamlit clears the
    query parameters on a page switch, so they are remembered and put back)."""
    query = st.query_params
    if query.get("experiment") and query.get("experiment") != ss.get("exp_open"):
        ss["exp_open"], ss["exp_run"] = query.get("experiment"), query.get("run")
    elif query.get("run") and query.get("run") != ss.get("exp_run"):
        ss["exp_run"] = query.get("run")
    experiment_id, run_id = ss.get("exp_open"), ss.get("exp_run")
    if experiment_id and query.get("experiment") != experiment_id:
        query["experiment"] = experiment_id
    if run_id and query.get("run") != run_id:
        query["run"] = run_id
    return experiment_id, run_id


def open_run(experiment_id: str | None, run_id: str | None) -> None:
    ss["exp_open"], ss["exp_run"] = experiment_id, run_id
    for name, value in (("experiment", experiment_id), ("run", run_id)):
        if value:
            st.query_params[name] = value
        elif name in st.query_params:
            del st.query_params[name]


def note(message: str) -> None:
    ss["exp_note"] = message  # for the next run of the page (callbacks cannot draw)


# --- actions (widget callbacks: they run before the page, which then draws the new state) ---------


def take_open_prompt() -> None:
    """?open_prompt=NAME@LABEL: fill the form from that prompt version (its last user message as the
    template, its settings as variant A and B); a run started with the template unchanged records
    the version (experiment_runs.prompt_version_id)."""
    reference = st.query_params.get("open_prompt")
    if not reference:
        return
    del st.query_params["open_prompt"]
    try:
        version = state.prompts().resolve(reference)
    except PromptError as error:
        note(f"Cannot open prompt {reference}: {error}")
        return
    user = [m.content for m in version.content.messages if m.role == "user"]
    variant = version.content.variant.model_copy(update={"system": version.content.system})
    ss.update(exp_name=reference, exp_template=user[-1] if user else "", exp_count=2)
    ss["exp_variants_draft"] = [variant, variant]
    for i in range(2):
        controls.load(f"exp{i}", variant)
    tools_editor.load("exp", tools_editor.ToolSet.of(variant))
    ss["exp_prompt"] = (version.id, f"{version.name}@{version.version}", ss["exp_template"])
    if len(version.content.messages) > 1 or (version.content.system and Template(version.content.system).variables):
        note(
            f"From prompt {reference}: an experiment sends one templated message per row, so its last user message "
            "is the template; its earlier messages are not sent, and {{variables}} in its system prompt are sent as "
            "written."
        )
    open_run(None, None)


def prompt_version_of(template_text: str) -> str | None:
    """The prompt version the form was filled from, while its template is unchanged."""
    version_id, _reference, template = ss.get("exp_prompt") or (None, None, None)
    return version_id if template == template_text else None


def rerun(experiment_id: str) -> None:
    try:
        first = store.runs(experiment_id)[-1:]  # the runs of one experiment share its prompt version
        handle = start_run(
            c,
            store,
            experiment_id,
            checks=checks_from_state(f"exp_rerun_check_{experiment_id}"),
            concurrency=_concurrency(ss.get(f"exp_rerun_conc_{experiment_id}")),
            overrides=state.overrides(),
            prompt_version_id=first[0].prompt_version_id if first else None,
        )
    except (DatasetError, TemplateError, ExperimentError) as error:
        note(str(error))
        return
    open_run(experiment_id, handle.run_id)


def stop(run_id: str) -> None:
    handle = RunHandle.find(run_id)
    if handle is not None:
        handle.stop()
    elif not store.request_stop(run_id):  # the workers, or the process running it, read it
        note("This run is not running any more.")


def rate(run_id: str, row: int, variant: int, key: str) -> None:
    value = ss.get(key)
    try:
        store.rate(run_id, row, variant, None if value is None else (1 if value == 1 else -1))
    except ExperimentError as error:
        note(str(error))


def edit_as_new(experiment_id: str) -> None:
    """Fill the form with this experiment (template, rows as JSONL, variants): change what you
    want and run it as a new experiment (an experiment never changes, so runs stay comparable)."""
    experiment = store.experiment(experiment_id)
    rows = list(store.iter_rows(experiment_id))
    if experiment.image_columns and rows:
        # The pictures go back into their cells as data URLs (the stored values are their names).
        stored = store.images(experiment_id, 0, rows[-1][0])
        for index, values, _expected in rows:
            kept = iter(stored.get(index, []))
            for column in experiment.image_columns:
                if str(values.get(column) or "").strip() and (picture := next(kept, None)) is not None:
                    values[column] = picture.url
    lines = [json.dumps(values, ensure_ascii=False) for _index, values, _expected in rows]
    ss.update(
        exp_name=f"{experiment.name} (copy)",
        exp_template=experiment.template,
        exp_source="Paste",
        exp_data_text="\n".join(lines) + "\n",
        exp_count=len(experiment.variants),
    )
    # Rows from a saved dataset version: the copy starts from that version again (the rows are
    # in the Paste box too, to change them there).
    source = next((r for r in store.runs(experiment_id) if r.dataset_name is not None), None)
    if source is not None:
        ss.update(exp_source=SAVED, exp_saved_name=source.dataset_name, exp_saved_version=str(source.dataset_version))
    ss["exp_variants_draft"] = list(experiment.variants)
    for i, variant in enumerate(experiment.variants):
        controls.load(f"exp{i}", variant)
    tools_editor.load("exp", tools_editor.ToolSet.of(experiment.variants[0]))
    open_run(None, None)


def new_experiment() -> None:
    open_run(None, None)


def use_example() -> None:
    ss.update(exp_source="Paste", exp_data_text=EXAMPLE_DATA)
    if not (ss.get("exp_template") or "").strip():
        ss["exp_template"] = EXAMPLE_TEMPLATE


def _concurrency(value: int | None) -> dict[str, int] | None:
    # '*' sets every provider's limit; a provider configured on its own (local: 1) keeps its own.
    return {"*": int(value)} if value else None


# --- the sidebar: experiments, newest first ------------------------------------------------------

take_open_prompt()  # ?open_prompt=NAME@LABEL from the Prompts page
experiment_id, run_id = current()
with st.sidebar:
    st.button(
        "New experiment",
        icon=":material/add:",
        key="exp_new",
        width="stretch",
        on_click=new_experiment,
        disabled=experiment_id is None,
    )
    try:
        recent = store.experiments(limit=15)
    except Exception as exc:  # noqa: BLE001 - a database problem is a message; the page keeps working
        recent = []
        st.caption(f"Experiments unavailable: {ui.escape_md(ui.unexpected_error(exc))}")
    if not recent:
        st.caption("Your experiments will be listed here.")
    for item in recent:
        mine = item.id == experiment_id
        st.button(
            ui.literal_label(item.name[:40] + ("…" if len(item.name) > 40 else "")),
            key=f"exp_open_{item.id}",
            icon=":material/chevron_right:" if mine else ":material/science:",
            type="secondary" if mine else "tertiary",
            help=f"{item.row_count} rows × {len(item.variants)} variants · {item.created_at:%Y-%m-%d %H:%M} UTC",
            width="stretch",
            on_click=open_run,
            args=(item.id, None),
        )

st.title("Experiments")
st.caption(
    "One prompt template over many inputs, answered by 2-4 models or settings: every answer in a grid, with "
    "latency, cost, checks against an expected answer and your ratings. Runs are kept; re-run and compare."
)
if not store.keeps_text:
    st.info(
        "Prompt logging is off (CONDUCTOR_LOG_PROMPTS=false), so answers are **not kept**: each run keeps its "
        "figures, checks and ratings only. Exports then hold no answers either.",
        icon=":material/visibility_off:",
    )
message = ss.pop("exp_note", None)
if message:
    st.warning(ui.escape_md(message), icon=":material/info:")
saved_note = ss.pop("exp_saved_note", None)
if saved_note:
    st.success(ui.escape_md(saved_note), icon=":material/save:")

experiment: Experiment | None = None
if experiment_id:
    try:
        experiment = store.experiment(experiment_id)
    except ExperimentError:
        st.warning("That experiment does not exist any more.", icon=":material/search_off:")
        open_run(None, None)
        experiment_id = run_id = None


# --- a new experiment -----------------------------------------------------------------------------


def experiment_tools(first: Variant) -> tools_editor.ToolSet | None:
    """The tools every variant may call (one set for the experiment), edited as on Chat; None
    while one is wrong (the editor says which). Mocks are for answering calls by hand: none here."""
    if not tools_editor.loaded("exp"):
        tools_editor.load("exp", tools_editor.ToolSet.of(first))
    with st.expander(f"Tools, the same for every variant ({len(first.tools or ())})", icon=":material/build:"):
        return tools_editor.tool_editor("exp", mocks=False)


SAVED = "Saved dataset"
LATEST = "latest"


def saved_choice() -> tuple[str, int] | None:
    """The saved dataset and version the form names (latest: its newest now), or None."""
    name = ss.get("exp_saved_name")
    if ss.get("exp_source") != SAVED or not name:
        return None
    picked = ss.get("exp_saved_version") or LATEST
    try:
        return name, state.datasets().version(name, None if picked == LATEST else int(picked)).version
    except (DatasetError, ValueError):
        return None


def save_as_dataset(dataset: Dataset, label: str) -> None:
    """Keep the pasted or uploaded rows as a saved dataset (a new version when the name exists),
    and use it: the run then records the version."""
    name = (ss.get("exp_save_name") or "").strip()
    try:
        saved = state.datasets().import_dataset(name, dataset, by=who(), note=f"saved from Experiments ({label})")
    except DatasetError as error:
        note(f"Not saved: {error}")
        return
    ss.update(exp_source=SAVED, exp_saved_name=saved.name, exp_saved_version=LATEST)
    ss["exp_saved_note"] = f"Saved as {saved.label}: the run will record it."


def read_input() -> tuple[Dataset | None, str | None]:
    """The dataset the form holds, or the reason it cannot be read (naming the line)."""
    limit = c.settings.dataset_max_rows
    try:
        if ss.get("exp_source") == SAVED:
            chosen = saved_choice()
            if chosen is None:
                return None, None
            dataset = state.datasets().load(*chosen)
            if len(dataset) > limit:
                return None, f"{chosen[0]} v{chosen[1]} has {len(dataset):,} rows; the limit is {limit:,}"
            return dataset, None
        if ss.get("exp_source") == "Upload a file":
            uploaded = ss.get("exp_data_file")
            if uploaded is None:
                return None, None
            return read_dataset(uploaded.getvalue(), filename=uploaded.name, max_rows=limit), None
        text = ss.get("exp_data_text") or ""
        if not text.strip():
            return None, None
        return read_dataset(text, max_rows=limit), None
    except DatasetError as error:
        return None, str(error)


def new_experiment_form() -> None:
    available = state.configured_names(c)
    if not available:
        st.warning(
            "No provider is configured yet: add a key or an endpoint on the Providers page.", icon=":material/key:"
        )
        st.page_link("views/providers.py", label="Open Providers", icon=":material/arrow_forward:")
        return
    # The form's widgets keep their values for the browser session (persist_state), so what
    # was typed is still there after a visit to another page.
    ss.setdefault("exp_source", "Paste")
    ss.setdefault("exp_count", 3 if len(available) > 2 else 2)
    ss.setdefault("exp_check", CheckKind.contains.value)

    st.subheader("New experiment")
    if len(available) == 1 and len(state.models_of(c, available[0])) < 2:
        st.info(
            f"Only {state.display_name(c, available[0])} is configured: compare it with itself at other settings "
            "(temperature, system prompt…), or add a key or an OpenAI-compatible endpoint (Ollama, vLLM…) on the "
            "Providers page to compare it with another model.",
            icon=":material/key:",
        )
    st.text_input("Name", key="exp_name", placeholder="e.g. Capitals: three models", max_chars=80, persist_state=KEEP)
    template_text = st.text_area(
        "Prompt template",
        key="exp_template",
        height=110,
        placeholder=EXAMPLE_TEMPLATE,
        help="{{column}} is replaced by that column's value in each row. Write \\{{ for a literal {{.",
        persist_state=KEEP,
    )
    if prompt_version_of(template_text) is not None:
        st.caption(f":material/notes: From prompt {ui.escape_md(ss['exp_prompt'][1])}: a run records this version.")
    template: Template | None = None
    if template_text.strip():
        try:
            template = Template(template_text)
            if template.variables:
                st.caption("Variables: " + ui.escape_md(", ".join(f"{{{{{v}}}}}" for v in template.variables)))
        except TemplateError as error:
            st.error(f"The template cannot be used: {ui.escape_md(error)}", icon=":material/error:")

    st.segmented_control(
        "Dataset", ["Paste", "Upload a file", SAVED], key="exp_source", required=True, persist_state=KEEP
    )
    if ss.get("exp_source") == SAVED:
        saved_picker()
    elif ss.get("exp_source") == "Upload a file":
        st.file_uploader(
            "CSV, TSV or JSONL file, or a .zip of one with its images",
            type=[*DATA_EXTENSIONS, "zip"],
            key="exp_data_file",
            help="A header line, then one row a line (CSV); or one JSON object a line (JSONL). " + IMAGES_HELP,
        )
        st.caption(IMAGES_HELP)
    else:
        st.text_area(
            "Rows: CSV with a header line, or JSONL (one JSON object a line)",
            key="exp_data_text",
            height=150,
            placeholder=EXAMPLE_DATA,
            persist_state=KEEP,
        )
        st.button(
            "Use an example", key="exp_example", icon=":material/lightbulb:", type="tertiary", on_click=use_example
        )
    dataset, problem = read_input()
    limit = c.settings.dataset_max_rows
    if problem:
        st.error(f"The dataset cannot be used: {ui.escape_md(problem)}", icon=":material/error:")
    elif dataset is not None:
        has = (
            "an `expected` column: answers are checked"
            if dataset.has_expected
            else "no `expected` column: answers are not checked"
        )
        images_note = (
            f" · images from {', '.join(dataset.image_columns)}: "
            f"{len({a.ref.sha256 for row in dataset.images for a in row}):,} distinct"
            if dataset.image_columns
            else ""
        )
        st.caption(
            f"{len(dataset):,} row{'s' if len(dataset) != 1 else ''} (limit {limit:,}) · columns: "
            + ui.escape_md(", ".join(dataset.columns))
            + f" · {has}"
            + ui.escape_md(images_note)
        )
        preview = pd.DataFrame([{k: _plain(v) for k, v in row.items()} for row in dataset.rows[:5]])
        st.dataframe(preview, hide_index=True, height="auto")
        if ss.get("exp_source") != SAVED:
            with st.popover("Save as a dataset", icon=":material/save:"):
                st.text_input("Dataset name", key="exp_save_name", placeholder="e.g. capitals")
                st.caption("A new dataset, or a new version of one with this name; runs record the version.")
                st.button(
                    "Save",
                    key="exp_save_dataset",
                    icon=":material/save:",
                    on_click=save_as_dataset,
                    args=(dataset, ss.get("exp_source") or "Paste"),
                )
        if template is not None and template.missing(dataset.columns):
            st.error(
                "The dataset has no column for "
                + ui.escape_md(", ".join(f"{{{{{m}}}}}" for m in template.missing(dataset.columns)))
                + ": rename a column or the variable.",
                icon=":material/error:",
            )

    st.markdown("**Variants**")
    count = (
        st.segmented_control(
            "Variants", [2, 3, 4], key="exp_count", required=True, label_visibility="collapsed", persist_state=KEEP
        )
        or 2
    )
    draft = list(ss.get("exp_variants_draft") or [])
    defaults = (draft + controls.default_variants(c, available, 4))[:4]
    labels = {name: state.provider_label(c, name) for name in available}
    shown = []
    for i, column in enumerate(st.columns(count, gap="small")):
        if not controls.loaded(f"exp{i}"):
            controls.load(f"exp{i}", defaults[i])
        with column.container(border=True):
            st.markdown(f"**{letter(i)}**")
            shown.append(
                controls.variant_controls(
                    c, f"exp{i}", providers=available, allow_auto=False, labels=labels, compact=True
                )
            )
    tools = experiment_tools(defaults[0])
    variants = [tools.apply(v) for v in shown if v is not None] if tools is not None else []
    if any(v.provider == "local" for v in variants):
        st.caption(state.LOCAL_NOTE_SHORT + " It answers one request at a time.")
    if len(variants) == count:
        ss["exp_variants_draft"] = variants + defaults[count:]
        if len({v.target for v in variants}) < count:
            st.caption(
                "Same model twice: labelled by what differs · "
                + ui.escape_md(" · ".join(f"{letter(i)}: {label}" for i, label in enumerate(variant_labels(variants))))
            )

    settings_row = st.columns([3, 2])
    with settings_row[0]:
        checks_editor("exp_check", dataset.columns if dataset is not None else (), keep=KEEP)
    with settings_row[1]:
        configured = c.settings.experiment_concurrency
        st.number_input(
            "Calls at once per provider",
            min_value=1,
            max_value=64,
            value=None,
            step=1,
            key="exp_concurrency",
            persist_state=KEEP,
            placeholder=f"configured ({configured.get('*', 4)}; "
            + ", ".join(f"{k} {v}" for k, v in configured.items() if k != "*")
            + ")",
            help="At most this many requests in flight to each provider. Empty: the configured limits "
            "(CONDUCTOR_EXPERIMENT_CONCURRENCY); the local model answers one at a time.",
        )
    if dataset is not None and len(variants) == count and template is not None:
        estimates = [
            controls.estimate_cost(c, v, [ChatMessage(role="user", content=template.source)]) for v in variants
        ]
        bounds = [e.bound for e in estimates]
        priced = [b for b in bounds if b is not None]
        total = (
            f"≤ {controls.format_bound(sum(priced) * len(dataset))}"
            if priced and sum(priced)
            else ("free" if priced else "unknown")
        )
        unknown = sum(b is None for b in bounds)
        st.caption(
            f":material/payments: {len(dataset) * count:,} requests; estimated cost {total}"
            + (f" (+ {unknown} variant{'s' if unknown > 1 else ''} with no known price)" if unknown and priced else ""),
            help="The template's length plus each variant's max tokens, per row, at each model's price.",
        )

    # The image columns that send a picture (all blank: none), and who cannot read them.
    pictured = dataset.image_columns if dataset is not None and any(dataset.images) else ()
    unreadable = image_refusals(c, variants, pictured, state.overrides())
    if unreadable:
        # Said before Run too: the run would be refused, and nothing sent.
        st.warning(ui.escape_md("; ".join(unreadable)), icon=":material/hide_image:")
    refusal = spending_refusal()
    if refusal:
        st.caption(f":material/visibility: {refusal}")
    if st.button(
        "Run experiment", type="primary", icon=":material/play_arrow:", key="exp_run_button", disabled=bool(refusal)
    ):
        if not template_text.strip():
            st.error(
                "Write a prompt template first, with a {{variable}} for each column to use.", icon=":material/edit:"
            )
        elif dataset is None:
            st.error(
                problem
                and f"The dataset cannot be used: {ui.escape_md(problem)}"
                or "Paste or upload a dataset first.",
                icon=":material/error:",
            )
        elif len(variants) != count:
            st.error("A variant's settings cannot be sent: see the message in its column.", icon=":material/error:")
        elif unreadable:
            st.error(
                f"Not started: {ui.escape_md('; '.join(unreadable))}. Nothing was sent.", icon=":material/hide_image:"
            )
        else:
            try:
                name = (ss.get("exp_name") or "").strip() or _clip(template_text)  # like a chat's title
                created = store.create(name, template_text, dataset, variants, max_rows=limit)
                handle = start_run(
                    c,
                    store,
                    created.id,
                    # No expected column: a comparison with it would check nothing.
                    checks=[
                        ch
                        for ch in checks_from_state("exp_check")
                        if ch.kind not in _TEXT_KINDS or dataset.has_expected
                    ],
                    concurrency=_concurrency(ss.get("exp_concurrency")),
                    overrides=state.overrides(),
                    dataset=saved_choice(),
                    prompt_version_id=prompt_version_of(template_text),
                )
            except (DatasetError, TemplateError, ExperimentError) as error:
                st.error(f"Not started: {ui.escape_md(error)}. Nothing was sent.", icon=":material/error:")
            else:
                open_run(created.id, handle.run_id)
                ss["exp_scroll_top"] = handle.run_id
                st.rerun()


def saved_picker() -> None:
    """A saved dataset and its version (the newest by default)."""
    found = state.datasets().datasets()
    if not found:
        st.info(
            "No saved dataset yet: paste or upload rows and save them, or use “Add to dataset” on the Dashboard, "
            "Chat or Compare.",
            icon=":material/dataset:",
        )
        return
    names = [d.name for d in found]
    if ss.get("exp_saved_name") not in names:
        ss["exp_saved_name"] = names[0]
    columns = st.columns([3, 2])
    columns[0].selectbox(
        "Saved dataset",
        names,
        key="exp_saved_name",
        format_func=lambda n: f"{n} ({next(d for d in found if d.name == n).latest.row_count:,} rows)",
    )
    versions = state.datasets().versions(ss["exp_saved_name"])
    options = [LATEST, *(str(v.version) for v in versions)]
    if ss.get("exp_saved_version") not in options:
        ss["exp_saved_version"] = LATEST
    columns[1].selectbox(
        "Version",
        options,
        key="exp_saved_version",
        format_func=lambda o: f"latest (v{versions[0].version})" if o == LATEST else f"v{o}",
    )
    chosen = saved_choice()
    if chosen is not None:
        version = next(v for v in versions if v.version == chosen[1])
        st.caption(
            ui.escape_md(
                f"{version.label}: {version.note or 'saved'} by {version.created_by}, "
                f"{version.created_at:%Y-%m-%d %H:%M} UTC"
            )
        )
        downloads = st.container(horizontal=True, gap="small")
        for fmt, mime in (("csv", "text/csv"), ("jsonl", "application/jsonl")):
            downloads.download_button(
                f"Export {fmt.upper()}",
                state.datasets().export(*chosen, fmt),
                file_name=f"{share.file_stem('dataset', chosen[0], f'v{chosen[1]}')}.{fmt}",
                mime=mime,
                icon=":material/download:",
                type="tertiary",
                key=f"exp_saved_export_{fmt}",
            )


# --- checks: which ones a run makes (an editor keyed by a prefix, read back in callbacks too) -------


def load_checks(prefix: str, checks: Sequence[Check]) -> None:
    """Put a run's checks into the editor keyed by `prefix`."""
    text = next((ch.kind.value for ch in checks if ch.kind in _TEXT_KINDS), None)
    ss[prefix] = text
    ss[f"{prefix}_more"] = [ch.kind.value for ch in checks if ch.kind not in _TEXT_KINDS]
    for ch in checks:
        if ch.kind == CheckKind.json_path:
            ss[f"{prefix}_path"], ss[f"{prefix}_path_column"] = ch.path, ch.column
        elif ch.kind in (CheckKind.called_tool, CheckKind.tool_argument):
            ss[f"{prefix}_tool"] = ch.tool
            if ch.kind == CheckKind.tool_argument:
                ss[f"{prefix}_argument"], ss[f"{prefix}_argument_column"] = ch.path, ch.column
        elif ch.kind == CheckKind.rubric:
            ss[f"{prefix}_rubric"] = ch.rubric
            if ch.judge is not None:
                ss[f"{prefix}_judge"], ss[f"{prefix}_judge_model"] = ch.judge.provider, ch.judge.model or ""


def checks_from_state(prefix: str) -> list[Check]:
    """The checks the editor keyed by `prefix` shows (a run with none checks nothing)."""
    checks = [Check(kind=CheckKind(ss[prefix]))] if ss.get(prefix) else []
    tool = (ss.get(f"{prefix}_tool") or "").strip() or None
    for kind in ss.get(f"{prefix}_more") or []:
        kind = CheckKind(kind)
        if kind == CheckKind.json_path:
            checks.append(Check(kind=kind, path=ss.get(f"{prefix}_path"), column=ss.get(f"{prefix}_path_column")))
        elif kind == CheckKind.tool_argument:
            path = (ss.get(f"{prefix}_argument") or "").strip() or None
            checks.append(Check(kind=kind, tool=tool, path=path, column=ss.get(f"{prefix}_argument_column")))
        elif kind == CheckKind.called_tool:
            checks.append(Check(kind=kind, tool=tool))
        elif kind == CheckKind.rubric:
            checks.append(rubric_from_state(prefix))
        else:
            checks.append(Check(kind=kind))
    return checks


def rubric_from_state(prefix: str) -> Check:
    """The rubric check the editor shows; what it lacks is said when the run starts."""
    provider = (ss.get(f"{prefix}_judge") or "").strip()
    judge = JudgeTarget(provider=provider, model=ss.get(f"{prefix}_judge_model")) if provider else None
    return Check(kind=CheckKind.rubric, rubric=(ss.get(f"{prefix}_rubric") or "").strip() or None, judge=judge)


def rubric_editor(prefix: str, keep: str | None) -> None:
    """A rubric and its judge: any configured provider (the local model too) and a model."""
    st.text_area(
        "Rubric",
        key=f"{prefix}_rubric",
        height=90,
        placeholder=EXAMPLE_RUBRIC,
        persist_state=keep,
        help="What a good answer does. {{column}} is the row's value, {{answer}} the answer graded, {{expected}} "
        "the expected column. The judge answers pass/fail, a score from 0 to 1 and a one-line reason.",
    )
    judges = state.configured_names(c)
    left, right = st.columns([3, 2])
    left.selectbox(
        "Judge",
        judges,
        key=f"{prefix}_judge",
        format_func=lambda name: state.provider_label(c, name),
        persist_state=keep,
        help="Who grades every answer (asked after each answer, at most "
        f"{c.settings.experiment_judge_concurrency} at once; Stop cancels them).",
    )
    chosen = ss.get(f"{prefix}_judge")
    right.text_input(
        "Judge model",
        key=f"{prefix}_judge_model",
        placeholder=state.default_model(c, chosen) if chosen else "the provider's default",
        persist_state=keep,
        help="Empty: the provider's default model.",
    )


def checks_editor(prefix: str, columns: Sequence[str], *, keep: str | None = None) -> None:
    """Compare with `expected` (contains / regex / equals, or not), and the other checks, each
    with what it needs (a JSON path and a column, a tool's name, an argument and a column)."""
    ss.setdefault(prefix, CheckKind.contains.value)
    ss.setdefault(f"{prefix}_more", [])
    st.segmented_control(
        "Check answers against `expected`",
        [k.value for k in _TEXT_KINDS],
        key=prefix,
        persist_state=keep,
        help=" ".join(f"{k}: {v}" for k, v in _CHECK_HELP.items()) + " None chosen: no comparison with `expected`.",
    )
    more = st.multiselect(
        "More checks",
        [k.value for k in _MORE_CHECKS],
        key=f"{prefix}_more",
        persist_state=keep,
        format_func=lambda k: _MORE_CHECKS[CheckKind(k)],
        help="Valid against the schema: the variant's JSON schema output. JSON path: a field of the answer's JSON "
        "equals a column (numbers as numbers). Tool checks read the calls the model made. A rubric is graded by "
        "a judge model. A cell passes when every check passes.",
    )
    # Columns of expected values first (expected_total...): what a check usually compares with.
    choices = sorted((c for c in columns if c != "expected"), key=lambda c: not c.startswith("expected")) or list(
        columns
    )
    if CheckKind.json_path.value in more:
        left, right = st.columns(2)
        left.text_input("JSON path", key=f"{prefix}_path", placeholder="$.total", persist_state=keep)
        right.selectbox("equals the column", choices, key=f"{prefix}_path_column", persist_state=keep)
    if CheckKind.called_tool.value in more or CheckKind.tool_argument.value in more:
        st.text_input("Tool", key=f"{prefix}_tool", placeholder="get_weather", persist_state=keep)
    if CheckKind.tool_argument.value in more:
        left, right = st.columns(2)
        left.text_input(
            "Argument", key=f"{prefix}_argument", placeholder="city (or $.address.city)", persist_state=keep
        )
        right.selectbox("equals the column", choices, key=f"{prefix}_argument_column", persist_state=keep)
    if CheckKind.rubric.value in more:
        rubric_editor(prefix, keep)


def draw_cell_checks(run: Run, cell: Cell) -> None:
    """With several checks: each one's verdict on this cell, and why it failed."""
    if len(run.checks) < 2 and not (run.checks and run.checks[0].kind not in _TEXT_KINDS):
        return
    lines = []
    for check, result in zip(run.checks, cell.checks or [], strict=False):
        if (judgement := result.judge) is not None and judgement.status != "ok":
            icon = ":orange[:material/gavel:]" if judgement.status == "failed" else ":gray[:material/block:]"
            lines.append(f"{icon} {ui.escape_md(check.label)} — {ui.escape_md(result.detail or judgement.status)}")
            continue
        if result.passed is None:
            continue
        mark = ":green[:material/check:]" if result.passed else ":red[:material/close:]"
        if judgement is not None:  # the judge's verdict: its score and reason, pass or fail
            figures = f"{ui.format_ms(judgement.latency_ms)} · {ui.format_cost(judgement.cost_usd)}"
            lines.append(
                f"{mark} {ui.escape_md(check.label)} · score {result.score or 0:.2f} — "
                f"{ui.escape_md(judgement.reason or '')} ({ui.escape_md(figures)})"
            )
            continue
        why = f" — {ui.escape_md(result.detail)}" if result.detail and not result.passed else ""
        lines.append(f"{mark} {ui.escape_md(check.label)}{why}")
    if lines:
        st.caption("  \n".join(lines))
    if cell.tool_calls:
        calls = "; ".join(f"{t.function.name}({t.function.arguments})" for t in cell.tool_calls)
        st.caption(f":material/build: {ui.escape_md(calls)}")


def draw_output_check(run: Run, cell: Cell, response_format: object) -> None:
    """The answer's JSON verdict and pretty JSON, when its variant asked for JSON."""
    structured_view.show_output_check(
        cell.answer, response_format, key=f"exp_{run.id}_{cell.row}_{cell.variant}", box="popover"
    )


def differing_output(variant) -> str:
    """A variant's output format in words ("JSON", "schema invoice")."""
    fmt = variant.response_format
    return f"schema {fmt.json_schema.name}" if getattr(fmt, "type", None) == "json_schema" else "JSON"


def _clip(text: str, width: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _plain(value) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


# --- an experiment and its runs ---------------------------------------------------------------------


def _run_label(run: Run) -> str:
    # No status here: a select box keeps an option's first label while the run goes on.
    return f"Run {run.number} · checks: {run.checks_label} · {run.created_at:%Y-%m-%d %H:%M:%S} UTC"


def experiment_header(experiment: Experiment, runs: list[Run], run: Run | None) -> None:
    st.subheader(ui.escape_md(experiment.name))  # as typed: no Markdown, no directives
    source = f" · {run.dataset_label}" if run is not None and run.dataset_label else ""
    st.caption(
        f"{experiment.row_count:,} rows × {len(experiment.variants)} variants · created "
        f"{experiment.created_at:%Y-%m-%d %H:%M} UTC · {len(runs)} run{'s' if len(runs) != 1 else ''}"
        + ui.escape_md(source)
    )
    if run is not None and run.prompt_version_id:
        try:
            started = state.prompts().version_by_id(run.prompt_version_id).reference
        except PromptError:
            started = "a deleted prompt"
        st.caption(f":material/notes: Run {run.number} ran prompt {ui.escape_md(started)}.")
    with st.expander("Template and variants", icon=":material/description:"):
        st.code(experiment.template, language=None, wrap_lines=True)
        for i, (variant, label) in enumerate(zip(experiment.variants, experiment.labels, strict=True)):
            extras = [f"T={variant.temperature:g}", f"max {variant.max_tokens} tok"]
            if variant.top_p is not None:
                extras.append(f"top_p={variant.top_p:g}")
            if variant.seed is not None:
                extras.append(f"seed {variant.seed}")
            if variant.response_format is not None:
                extras.append(f"output: {differing_output(variant)}")
            st.markdown(f"**{letter(i)}** · {ui.escape_md(label)} · {ui.escape_md(', '.join(extras))}")
            if variant.system:
                st.text(f"System prompt: {variant.system}")
    bar = st.container(horizontal=True, gap="small", vertical_alignment="bottom")
    with bar:
        if runs:
            ids = [r.id for r in runs]
            pick = f"exp_pick_{experiment.id}"
            if run is not None and ss.get(pick) != run.id:
                ss[pick] = run.id
            st.selectbox(
                "Run",
                ids,
                key=pick,
                format_func=lambda i: _run_label(next(r for r in runs if r.id == i)),
                on_change=lambda: open_run(experiment.id, ss.get(pick)),
                width=380,
            )
        live = any(r.status == "running" for r in runs)
        with st.popover(
            "Re-run",
            icon=":material/replay:",
            disabled=live,
            help="Wait for the run in progress first." if live else "Run it again: a new run, kept beside the others.",
        ):
            key = f"exp_rerun_check_{experiment.id}"
            if key not in ss:
                load_checks(key, run.checks if run else (Check(kind=CheckKind.contains),))
            checks_editor(key, experiment.columns)
            st.number_input(
                "Calls at once per provider",
                1,
                64,
                value=None,
                key=f"exp_rerun_conc_{experiment.id}",
                placeholder="configured",
            )
            st.button(
                f"Start run {max((r.number for r in runs), default=0) + 1}",
                type="primary",
                icon=":material/play_arrow:",
                key=f"exp_rerun_{experiment.id}",
                on_click=rerun,
                args=(experiment.id,),
            )
        st.button(
            "Edit as a new experiment",
            icon=":material/edit:",
            type="tertiary",
            key=f"exp_edit_{experiment.id}",
            on_click=edit_as_new,
            args=(experiment.id,),
        )


def share_run(experiment: Experiment, run: Run) -> None:
    with st.expander("Share: export or get code", icon=":material/ios_share:"):
        st.caption(
            "The run as a file for people who will never run the tool (answers, figures, ratings; charts in the HTML). No key is ever written."
        )
        stem = share.file_stem("experiment-run", experiment.name, f"run-{run.number}")
        share.export_buttons(lambda: exports.run_report(store, run.id), key=f"exp_export_{run.id}", name=stem)
        csv_download(run, stem)
        st.divider()
        st.markdown("**Get code** for one row's request")
        cols = st.columns([3, 1])
        with cols[0]:
            v = st.selectbox(
                "Variant",
                range(len(experiment.variants)),
                key=f"exp_code_v_{run.id}",
                format_func=lambda i: f"{letter(i)} · {experiment.labels[i]}",
            )
        with cols[1]:
            row = st.number_input("Row", 1, experiment.row_count, 1, key=f"exp_code_row_{run.id}")
        rows = store.rows(experiment.id, offset=int(row) - 1, limit=1)
        if rows:
            index, values, _expected = rows[0]
            try:
                prompt = store.prompt(experiment, values, index)
                share.get_code(c, experiment.variants[v].request([ChatMessage(role="user", content=prompt)]))
            except (TemplateError, ValueError) as error:
                st.caption(ui.escape_md(error))


def csv_download(run: Run, stem: str) -> None:
    """The run as a spreadsheet: a line per cell with its answer, tool calls and each check's verdict."""
    st.download_button(
        "CSV (a line per cell)",
        data=lambda: exports.to_csv(exports.run_report(store, run.id)),
        file_name=f"{stem}.csv",
        mime="text/csv",
        key=f"exp_export_{run.id}_csv",
        icon=":material/download:",
        on_click="ignore",
        help="Each cell's answer, tool calls and every check's verdict with why it failed.",
    )


def _cell_figures(cell: Cell) -> str:
    parts = [ui.format_ms(cell.latency_ms), f"first token {ui.format_ms(cell.ttft_ms)}"]
    if cell.input_tokens or cell.output_tokens:
        parts.append(f"{cell.input_tokens:,} in → {cell.output_tokens:,} out")
    parts.append(ui.format_cost(cell.cost_usd))
    return " · ".join(parts)


def draw_cell(run: Run, cell: Cell | None, *, live: bool, response_format: object = None) -> None:
    if cell is None:
        st.caption(":material/hourglass_top: waiting…" if live else ":material/remove: not run")
        return
    if cell.status == "cancelled":
        when = "while this answer streamed" if cell.answer else "before this answer arrived"
        st.caption(f":material/block: cancelled: the run was stopped {when} (not counted)")
        return
    if cell.passed is not None:
        st.markdown(":green-badge[:material/check: pass]" if cell.passed else ":red-badge[:material/close: fail]")
    draw_cell_checks(run, cell)
    if cell.status == "error":
        st.error(ui.escape_md(cell.error_message or "The request failed."), icon=":material/error:")
    elif cell.status == "incomplete":
        st.warning(
            f"The answer stopped part-way: {ui.escape_md(cell.error_message or 'the stream broke')}",
            icon=":material/content_cut:",
        )
    if cell.answer is not None:
        ui.render_answer_text(cell.answer)
        draw_output_check(run, cell, response_format)
    elif cell.status == "ok":
        st.caption("(answer not kept: prompt logging is off)")
    if cell.status != "error" or cell.latency_ms is not None:
        st.caption(ui.escape_md(_cell_figures(cell)))
    if cell.status in ("ok", "incomplete"):
        key = f"exp_rate_{run.id}_{cell.row}_{cell.variant}"
        if key not in ss:
            ss[key] = {1: 1, -1: 0}.get(cell.rating or 0)
        st.feedback("thumbs", key=key, on_change=rate, args=(run.id, cell.row, cell.variant, key))


def draw_progress(run: Run, stats) -> None:
    handle = RunHandle.find(run.id)
    p = handle.progress() if handle is not None else queued_progress(store, run) if run.queued else None
    if p is not None:
        text = (
            f"{p.done:,} of {p.total:,} answers · {p.ok:,} ok · {p.errors:,} failed"
            + (f" · {p.incomplete:,} cut short" if p.incomplete else "")
            + f" · {p.running} in flight"
            + (f" · {p.judging} with the judge" if p.judging else "")
            + f" · {p.elapsed_s:,.0f} s"
        )
        st.progress(
            p.fraction, text=("Stopping: closing the calls in flight… " if p.state == "stopping" else "") + text
        )
        if p.workers == 0:
            st.info(
                "Waiting for a worker: this run's requests are queued for `python -m conductor_core.worker`, "
                "and none is running. Start one (or more) and the run goes on.",
                icon=":material/hourglass_empty:",
            )
        if p.database_error:
            st.warning(
                f"The database refused the last results (they are kept and retried): {ui.escape_md(p.database_error)}",
                icon=":material/database:",
            )
        st.button(
            "Stop",
            icon=":material/stop_circle:",
            key=f"exp_stop_{run.id}",
            on_click=stop,
            args=(run.id,),
            disabled=p.state == "stopping",
            help="No new request starts; the answers that finished are kept.",
        )
        return
    done = sum(s.cells for s in stats)
    st.progress(
        done / run.cells_total if run.cells_total else 1.0,
        text=("Stopping… " if run.stop_requested else "")
        + f"{done:,} of {run.cells_total:,} answers · running in another server process",
    )
    st.button(
        "Stop",
        icon=":material/stop_circle:",
        key=f"exp_stop_{run.id}",
        on_click=stop,
        args=(run.id,),
        disabled=run.stop_requested,
        help="The process running it stops it within a second; the answers that finished are kept.",
    )


def draw_status(run: Run, stats) -> None:
    done = sum(s.cells - s.cancelled for s in stats)
    cancelled = sum(s.cancelled for s in stats)
    took = f" in {ui.format_ms((run.finished_at - run.created_at).total_seconds() * 1000)}" if run.finished_at else ""
    if run.status == "completed":
        st.success(f"Run {run.number} completed{took}: {done:,} answers.", icon=":material/check_circle:")
    elif run.status == "stopped":
        st.warning(
            f"Run {run.number} was stopped{took}: {done:,} of {run.cells_total:,} requests finished and are kept; "
            f"{cancelled:,} did not run (cancelled, not counted in the figures).",
            icon=":material/stop_circle:",
        )
    elif run.status == "interrupted":
        missing = run.cells_total - done - cancelled
        st.error(
            f"Run {run.number} was interrupted: the server stopped while it ran. {done:,} answers are kept; "
            f"{missing:,} never ran. Re-run to complete it.",
            icon=":material/power_off:",
        )


def draw_summary(stats, run: Run | None = None) -> None:
    head, rows = exports.stats_table(stats)
    # A table, not a data grid: ten short columns, readable (and copyable) as text.
    st.table(pd.DataFrame(rows, columns=[h or " " for h in head]).set_index(head[0] or " "))
    if run is not None and (len(run.checks) > 1 or (run.checks and run.checks[0].kind not in _TEXT_KINDS)):
        check_head, check_rows = exports.check_rates_table(list(run.checks), stats)
        st.markdown("**Each check's pass rate**")
        st.table(pd.DataFrame(check_rows, columns=check_head).set_index(check_head[0]))
    if run is not None and any(ch.kind == CheckKind.rubric for ch in run.checks):
        draw_agreement(run, stats)
    st.caption(
        "Success: answered without error, of the requests that ran. Pass rate: a cell passes when every check "
        "that applies to its row passes (a comparison with expected applies to rows with an expected value). "
        "Win rate: rows where a variant scored best (your rating first, then the check, then answering)."
    )


def draw_agreement(run: Run, stats) -> None:
    """Per rubric check: how often its judge agreed with the 👍/👎 given here (n, %, Cohen's κ)."""
    head, rows = exports.agreement_table(list(run.checks), stats)
    st.markdown(
        "**Judge and person**",
        help="A 👍 counts as a pass and a 👎 as a fail; cells the judge gave "
        "no verdict are left out. Cohen's κ: agreement beyond chance (1 perfect, 0 chance).",
    )
    st.table(pd.DataFrame(rows, columns=head).set_index(head[0]))


def judge_pair_of(run_id: str) -> None:
    """Start judging the pair the pairwise form shows (a callback: the page then shows progress)."""
    prefix = f"exp_pair_{run_id}"
    provider = (ss.get(f"{prefix}_judge") or "").strip()
    if not provider:
        note("Choose a judge first.")
        return
    try:
        start_pairwise(
            c,
            store,
            run_id,
            int(ss.get(f"{prefix}_a") or 0),
            int(ss.get(f"{prefix}_b") or 0),
            JudgeTarget(provider=provider, model=ss.get(f"{prefix}_judge_model")),
            criteria=(ss.get(f"{prefix}_criteria") or "").strip() or None,
            overrides=state.overrides(),
        )
    except ExperimentError as error:
        note(str(error))


def draw_pairwise(experiment: Experiment, run: Run) -> None:
    """Two variants compared row by row by a judge (each row asked twice, the order swapped),
    the pairs judged so far with their win rates, and the judges' own leaderboard."""
    if run.status == "running":
        return
    for handle in PairwiseHandle.live(run.id):
        live_pairwise(run.id, handle.a, handle.b)
    pairs = store.pairwise_stats(run.id)
    if pairs:
        st.markdown("**Pairwise judge**")
        head, rows = exports.pairwise_table(experiment.labels, pairs)
        st.table(pd.DataFrame(rows, columns=head).set_index(head[0]))
        board = store.judge_leaderboard()
        st.markdown(
            "**Judges' leaderboard**",
            help="Bradley–Terry ratings from the judge votes of every run, kept apart from people's votes "
            "(the Arena's and Compare's), which have their own leaderboard.",
        )
        head, rows = exports.ratings_table(board)
        st.table(pd.DataFrame(rows, columns=[h or " " for h in head]).set_index(head[0]))
    prefix = f"exp_pair_{run.id}"
    with st.expander("Judge two variants against each other (pairwise)", icon=":material/balance:"):
        st.caption(
            "A judge model picks the better answer per row, asked twice with the answers in both orders: the same "
            "winner both times is a win; a flip (position bias) or a tie answer is a tie. Judge votes feed the "
            "judges' leaderboard below, never the people's."
        )
        options = list(range(len(experiment.variants)))
        ss.setdefault(f"{prefix}_b", 1)
        name = lambda i: f"{letter(i)} · {experiment.labels[i]}"  # noqa: E731
        left, right = st.columns(2)
        left.selectbox("First variant", options, key=f"{prefix}_a", format_func=name)
        right.selectbox("Second variant", options, key=f"{prefix}_b", format_func=name)
        left, right = st.columns([3, 2])
        left.selectbox(
            "Pairwise judge",
            state.configured_names(c),
            key=f"{prefix}_judge",
            format_func=lambda n: state.provider_label(c, n),
        )
        chosen = ss.get(f"{prefix}_judge")
        right.text_input(
            "Pairwise judge model",
            key=f"{prefix}_judge_model",
            placeholder=state.default_model(c, chosen) if chosen else "the provider's default",
        )
        st.text_input("What makes an answer better", key=f"{prefix}_criteria", placeholder=judging.DEFAULT_CRITERIA)
        st.button(
            "Judge the pair",
            key=f"{prefix}_go",
            icon=":material/balance:",
            on_click=judge_pair_of,
            args=(run.id,),
            disabled=bool(PairwiseHandle.live(run.id)),
        )


@st.fragment(run_every=REFRESH_S)
def live_pairwise(run_id: str, a: int, b: int) -> None:
    handle = PairwiseHandle.find(run_id, a, b)
    if handle is None:
        st.rerun()
        return
    p = handle.progress()
    st.progress(
        p.done / p.total if p.total else 1.0,
        text=f"Judging {letter(a)} vs {letter(b)}: {p.done} of {p.total} rows"
        + (" · stopping" if p.state == "stopping" else ""),
    )
    st.button(
        "Stop judging", key=f"exp_pair_stop_{run_id}_{a}_{b}", icon=":material/stop_circle:", on_click=handle.stop
    )


def draw_changes(experiment: Experiment, runs: list[Run], run: Run) -> None:
    earlier = [r for r in runs if r.number < run.number]
    if not earlier:
        return
    key = f"exp_since_{run.id}"
    since = st.selectbox(
        "Compare with",
        [r.id for r in earlier],
        key=key,
        format_func=lambda i: _run_label(next(r for r in earlier if r.id == i)),
    )
    lines = store.changes(run.id, since)
    st.markdown("\n".join(f"- {ui.escape_md(line)}" for line in lines))


def draw_row_card(experiment: Experiment, run: Run, grid_row: GridRow, *, live: bool) -> None:
    """One row in full: its values, pictures and every variant's whole answer, checks and 👍/👎."""
    with st.container(border=True):
        st.markdown(f"**Row {grid_row.row + 1}**")
        values = ", ".join(f"{k} = {_plain(v)}" for k, v in grid_row.values.items() if k != "expected")
        if grid_row.expected is not None:
            values += f"\nexpected: {grid_row.expected}"
        st.text(values)  # what the person wrote, literally
        pictures.show_refs(
            [a.ref for a in grid_row.images], {a.ref.sha256: a.data for a in grid_row.images}.__getitem__
        )
        for v, column in enumerate(st.columns(len(experiment.variants), gap="small")):
            with column:
                st.markdown(f"**{letter(v)}** · {ui.escape_md(experiment.labels[v])}")
                draw_cell(run, grid_row.cells[v], live=live, response_format=experiment.variants[v].response_format)


def grid_view(run: Run, variants: int) -> run_grid.GridView:
    """The filters, search and sort above the table (their values: the view to show)."""
    key = f"exp_grid_{run.id}"
    left, middle, right = st.columns(3)
    failed = left.toggle("Failed checks only", key=f"{key}_failed")
    disagree = middle.toggle(
        "Judge and person disagree", key=f"{key}_disagree", help="A 👍/👎 differs from a judge's verdict."
    )
    differ = right.toggle("Answers differ", key=f"{key}_differ", help="Rows whose variants gave different answers.")
    left, right = st.columns([3, 2])
    search = left.text_input("Search inputs and answers", key=f"{key}_search", placeholder="words in a row or answer")
    sorts: list[tuple[int, str] | None] = [None] + [(v, by) for v in range(variants) for by in ("score", "latency")]
    sort = right.selectbox(
        "Sort",
        range(len(sorts)),
        key=f"{key}_sort",
        format_func=lambda i: "by row" if sorts[i] is None else f"{letter(sorts[i][0])}'s {sorts[i][1]}, highest first",
    )
    chosen = sorts[sort or 0]
    return run_grid.GridView(
        failed_only=failed,
        disagree_only=disagree,
        differ_only=differ,
        search=search or "",
        sort_variant=None if chosen is None else chosen[0],
        sort_by="latency" if chosen is not None and chosen[1] == "latency" else "score",
        descending=True,
    )


def draw_grid(experiment: Experiment, run: Run, *, live: bool) -> None:
    """Rows × variants as one table (a line per row: each variant's mark, score, latency and
    answer cut short); a row chosen in it opens below with everything the card shows."""
    view = grid_view(run, len(experiment.variants))
    rows = store.grid(run.id, offset=0, limit=max(experiment.row_count, 1), images=False)
    frame = run_grid.grid_frame(rows, experiment.labels, live=live)
    shown = run_grid.select_rows(frame, view)
    st.caption(f"{len(shown):,} of {len(frame):,} rows · choose a row to see it in full")
    answer_columns = run_grid.shown_columns(frame)[3:]
    event = st.dataframe(
        shown[run_grid.shown_columns(frame)],
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        # A new view is a new table: a row chosen under other filters must not open another row.
        key=f"exp_grid_{run.id}_{abs(hash(view))}",
        column_config={
            run_grid.ROW: st.column_config.NumberColumn(width=48, format="%d"),
            run_grid.MARKS: st.column_config.TextColumn(width=80, help="Each variant's mark: ✓ pass, ✗ fail"),
            run_grid.INPUT: st.column_config.TextColumn(width="medium"),
            **{name: st.column_config.TextColumn(width="large") for name in answer_columns},
        },
    )
    picked = event.selection.rows if event is not None else []
    if picked and picked[0] < len(shown):
        index = int(shown["_row"].iloc[picked[0]])
        for grid_row in store.grid(run.id, offset=index, limit=1):
            draw_row_card(experiment, run, grid_row, live=live)


def draw_run(experiment: Experiment, run: Run, runs: list[Run]) -> None:
    live = run.status == "running"
    stats = store.stats(run.id)
    if live:
        draw_progress(run, stats)
    else:
        draw_status(run, stats)
    draw_summary(stats, run)
    if not live:
        draw_pairwise(experiment, run)
        draw_changes(experiment, runs, run)
    draw_grid(experiment, run, live=live)


@st.fragment(run_every=REFRESH_S)
def live_run(experiment_id: str, run_id: str) -> None:
    """A running run, redrawn every second from the store; when it ends the page reruns (its
    status, the changes since the last run, the Re-run button)."""
    run = store.run(run_id)
    if run.status != "running":
        st.rerun()
        return
    experiment = store.experiment(experiment_id)
    draw_run(experiment, run, store.runs(experiment_id))


def scroll_to_top_once(run_id: str) -> str:
    """Run was clicked at the bottom of a long form: the run's view would open scrolled down,
    its progress and Stop out of sight. The script goes out with every full run of the page
    while that run is shown (a busy browser may never draw a one-off element: the run's next
    rerun replaced it first), and scrolls once per run in this tab, so it leaves alone a
    person who scrolls down afterwards. Ours only: the run id is the one thing it carries."""
    key = json.dumps(f"conductor-run-opened-{run_id}")
    return (
        "<script>(() => { const key = " + key + "; if (sessionStorage.getItem(key)) return;"
        " const main = document.querySelector('[data-testid=\"stMain\"]'); if (!main) return;"
        " sessionStorage.setItem(key, '1'); main.scrollTo({top: 0}); })();</script>"
    )


if experiment is None:
    new_experiment_form()
else:
    runs = store.runs(experiment.id)
    run = next((r for r in runs if r.id == run_id), runs[0] if runs else None)
    if run is not None and run.id != run_id:
        open_run(experiment.id, run.id)
    experiment_header(experiment, runs, run)
    if run is None:
        st.info("This experiment has no run yet: Re-run starts one.", icon=":material/info:")
    else:
        share_run(experiment, run)
        if run.status == "running":
            live_run(experiment.id, run.id)
        else:
            draw_run(experiment, run, runs)
    if run is not None and ss.get("exp_scroll_top") == run.id:
        st.html(scroll_to_top_once(run.id), unsafe_allow_javascript=True)
