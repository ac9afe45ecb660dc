"""The Experiments page and the share buttons under `streamlit.testing.v1.AppTest`, with the
scripted providers of tests/playground_fakes.py (no SDK patched): the logic a browser test
would take minutes to walk through. The helpers are tests/test_playground_pages.py's, the `env`
fixture tests/playground_support.py's.
"""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

import tests.playground_fakes as fakes
from conductor_core.config import register_secret
from conductor_core.workbench import exports
from conductor_core.workbench.runner import RunHandle
from playground import share
from playground import state as playground_state
from tests.test_playground_pages import (
    APP,
    no_traceback,
    plain,
    run_compare,
    send,
)

pytestmark = pytest.mark.timeout(120)

DATA = "country,expected\nFrance,Alpha\nJapan,first\nKenya,Tokyo\n"
TEMPLATE = "Capital of {{country}}?"


def experiments_page(**query) -> AppTest:
    """A new browser tab on the Experiments page (`experiment=…, run=…` open that URL)."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query)
    at.run()
    at.switch_page("views/experiments.py")
    at.query_params.update(query)
    at.run()
    no_traceback(at)
    return at


def fill(at: AppTest, *, template: str = TEMPLATE, data: str = DATA) -> AppTest:
    at.text_area(key="exp_template").set_value(template).run()
    at.text_area(key="exp_data_text").set_value(data).run()
    no_traceback(at)
    return at


def finish(at: AppTest) -> AppTest:
    """Until the run the page shows has ended (the process runs it), then what the page shows."""
    run_id = at.query_params["run"]
    handle = RunHandle.find(run_id)
    if handle is not None:
        assert handle.wait(30), "the run did not finish"
    at.run()
    no_traceback(at)
    return at


def start(at: AppTest) -> AppTest:
    at.button(key="exp_run_button").click().run()
    no_traceback(at)
    assert "run" in at.query_params, [e.value for e in at.error]
    return at


def summary(at: AppTest) -> dict[str, dict[str, str]]:
    frame = at.table[0].value
    return {letter: dict(row) for letter, row in frame.iterrows()}


def grid(at: AppTest):
    """The run grid's table (a line per row; the variants' cells as the page shows them)."""
    return next(d for d in at.dataframe if (d.key or "").startswith("exp_grid_")).value


def open_row(at: AppTest, position: int) -> AppTest:
    """Choose the `position`-th line of the run grid: the row opens below it in full."""
    table = next(d for d in at.dataframe if (d.key or "").startswith("exp_grid_"))
    at.session_state[table.key] = {"selection": {"rows": [position], "columns": [], "cells": []}}
    at.run()
    no_traceback(at)
    return at


def texts(at: AppTest) -> list[str]:
    return [plain(m.value) for m in at.markdown] + [plain(c.value) for c in at.caption] + [t.value for t in at.text]


def test_a_run_over_three_variants_with_one_failing(env):
    at = experiments_page()
    fakes.FAKES["beta"].down = True
    at = finish(start(fill(at)))
    assert any("Run 1 completed" in s.value for s in at.success)
    rows = summary(at)
    assert [rows[k]["variant"] for k in "ABC"] == ["alpha/alpha-small", "beta/beta-1", "gamma/gamma-1"]
    assert [rows[k]["success"] for k in "ABC"] == ["100%", "0%", "100%"]
    # "Alpha answers first." contains "Alpha" (row 1) and "first" (row 2); gamma's answer neither.
    assert [rows[k]["pass rate"] for k in "ABC"] == ["67%", "0%", "0%"]
    assert rows["B"]["p50"] == "—" and rows["B"]["total cost"] == "—"
    # Each of beta's cells shows its error, mark first; the other variants' answers are there.
    table = grid(at)
    [a, b, c] = [col for col in table.columns if col[:4] in ("A · ", "B · ", "C · ")]
    assert all(t.startswith("⚠ error") and "beta is down" in t for t in table[b]), list(table[b])
    assert all(t.endswith("— Alpha answers first.") for t in table[a]) and all(
        t.endswith("— Gamma is free.") for t in table[c]
    )
    # A row opened from the grid shows its cells in full: beta's error as an error.
    open_row(at, 0)
    assert sum("beta is down" in plain(e.value) for e in at.error) == 1
    shown = texts(at)
    assert shown.count("Alpha answers first.") == 1 and shown.count("Gamma is free.") == 1
    assert {call.messages[-1].content for call in fakes.FAKES["alpha"].calls} == {
        "Capital of France?",
        "Capital of Japan?",
        "Capital of Kenya?",
    }
    store = playground_state.experiments()
    cells = store.cells(at.query_params["run"])
    assert [c.status for c in cells].count("error") == 3 and [c.status for c in cells].count("ok") == 6
    assert {c.passed for c in cells if c.variant == 1} == {False}  # a failure is never a pass


def test_a_run_started_from_the_form_is_scrolled_to_on_every_full_run(env):
    """Run is clicked at the bottom of a long form: the page scrolls to the run's top. The
    script goes out with every full run while that run is shown (once, it was popped on the
    first: a busy browser had not drawn it when the run's next rerun replaced it, and the run
    stayed scrolled down); the browser scrolls once per run. A tab that opens the run by its
    URL is not scrolled."""

    def scroll_scripts(at: AppTest) -> list[str]:
        return [h.value for h in at.get("html") if "scrollTo" in h.value]

    at = start(fill(experiments_page()))
    run_id = at.query_params["run"]
    assert len(scroll_scripts(at)) == 1 and f'"conductor-run-opened-{run_id}"' in scroll_scripts(at)[0]
    at = finish(at)  # the full rerun after the run ended
    assert any("Run 1 completed" in s.value for s in at.success)
    assert len(scroll_scripts(at)) == 1 and f'"conductor-run-opened-{run_id}"' in scroll_scripts(at)[0]
    elsewhere = experiments_page(experiment=at.query_params["experiment"], run=run_id)
    assert scroll_scripts(elsewhere) == []


def test_ratings_a_rerun_what_changed_and_an_earlier_run_by_url(env):
    at = finish(start(fill(experiments_page())))
    experiment_id, first_run = at.query_params["experiment"], at.query_params["run"]
    store = playground_state.experiments()

    open_row(at, 0)
    at.get("feedback")[0].set_value(1).run()  # 👍 on row 1, variant A
    no_traceback(at)
    assert store.cells(first_run, limit=1)[0].rating == 1
    assert summary(at)["A"]["rating"].startswith("+1.00")

    fakes.FAKES["gamma"].script("Tokyo, I think.", "Tokyo, I think.", "Tokyo, I think.")
    at.button(key=f"exp_rerun_{experiment_id}").click().run()
    second_run = at.query_params["run"]
    assert second_run != first_run
    finish(at)
    assert any("Run 2 completed" in s.value for s in at.success)
    said = " ".join(texts(at))
    assert "variant C (gamma/gamma-1): pass rate 0% → 33%" in said and "since run 1" in said

    # A reload (a new tab on the same URL) opens the earlier run, not the newest.
    again = experiments_page(experiment=experiment_id, run=first_run)
    assert any("Run 1 completed" in s.value for s in again.success)
    assert summary(again)["A"]["rating"].startswith("+1.00")


def test_bad_input_is_named_and_nothing_is_sent(env, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_DATASET_MAX_ROWS", "5")
    at = experiments_page()

    fill(at, data='country\nFrance\n"Japan\n')
    assert any("line 3" in plain(e.value) and "quoted field" in plain(e.value) for e in at.error), [
        e.value for e in at.error
    ]

    jsonl = '{"country": "France"}\n{"land": "Japan"}\n'
    fill(at, data=jsonl)
    at.button(key="exp_run_button").click().run()
    refused = " ".join(plain(e.value) for e in at.error)
    assert "row 2 has no value for {{country}}" in refused and "Nothing was sent" in refused
    assert at.text_area(key="exp_data_text").value == jsonl and at.text_area(key="exp_template").value == TEMPLATE

    fill(at, data="country\n" + "".join(f"C{i}\n" for i in range(6)))
    assert any("6 rows; the limit is 5" in plain(e.value) for e in at.error)
    at.button(key="exp_run_button").click().run()
    assert "run" not in at.query_params
    assert all(not fake.calls for fake in fakes.FAKES.values())
    assert playground_state.experiments().experiments() == []


def test_a_run_goes_on_while_the_page_is_left_and_stop_keeps_what_finished(env):
    at = experiments_page()
    fakes.FAKES["alpha"].latency_s = 0.25
    at = fill(at, data="country\n" + "".join(f"C{i}\n" for i in range(12)))
    at.number_input(key="exp_concurrency").set_value(1).run()
    start(at)
    run_id = at.query_params["run"]
    handle = RunHandle.find(run_id)
    assert handle is not None and not handle.finished

    at.switch_page("views/dashboard.py").run()  # leave the page: the run goes on
    at.switch_page("views/experiments.py").run()
    no_traceback(at)
    assert at.query_params["run"] == run_id and at.get("progress")
    for progress in handle.updates(0.1):
        if progress.per_variant[0] >= 2:
            break
    at.button(key=f"exp_stop_{run_id}").click().run()
    assert handle.wait(30)
    at.run()
    no_traceback(at)
    assert any("Run 1 was stopped" in w.value for w in at.warning)
    cells = playground_state.experiments().cells(run_id)
    alpha = [c for c in cells if c.variant == 0]
    assert len(alpha) == 12 and 2 <= sum(c.status == "ok" for c in alpha) < 12
    assert "cancelled" in {c.status for c in alpha}
    logged = {r.request_id: r.status for r in fakes.CONDUCTORS[-1].log.records()}
    assert all(logged.get(c.request_id) == "ok" for c in cells if c.status == "ok")
    assert summary(at)["A"]["success"] == "100%"  # cancelled cells are not failures, nor successes


CANARY = "0qX06KzBNqr1HB63jVpynp4G"


def test_share_a_conversation_and_a_comparison_without_the_key(env):
    register_secret(CANARY)
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    fakes.FAKES["alpha"].script(f"Alpha says # not a heading and my key is {CANARY}")
    send(at, "What is :red[this]?", provider="alpha")
    expander = next(e for e in at.expander if e.label == "Share: export or get code")
    assert [b.proto.label for b in expander.get("download_button")] == ["Markdown", "JSON", "HTML report"]
    # The fakes are no endpoint: Get code says so instead of inventing a call.
    assert any("unknown provider" in plain(c.value) for c in expander.caption)

    conversation = playground_state.sessions().conversation(at.query_params["session"])
    doc = share.transcript(conversation)
    for body in (exports.to_markdown(doc), exports.to_json(doc), exports.to_html(doc, charts=False)):
        assert CANARY not in body and "What is :red[this]?" in body
    data = json.loads(exports.to_json(doc))
    assert [t["role"] for t in data["turns"]] == ["user", "assistant"]
    answer = data["turns"][1]
    assert answer["label"] == "alpha/alpha-small" and answer["status"] == "ok" and answer["figures"]["latency_ms"] > 0
    assert answer["request_id"] == conversation.turns[0].chosen[0].request_id

    at = AppTest.from_file(str(APP), default_timeout=60)  # a new tab (this one's URL names the chat)
    at.run()
    run_compare(at, "Which is best?", count=2)
    expander = next(e for e in at.expander if e.label.startswith("Share this round"))
    assert len(expander.get("download_button")) == 3
    next(b for b in at.button if b.label == "Left is better").click().run()
    compared = playground_state.sessions().conversation(at.query_params["session"])
    data = json.loads(exports.to_json(share.comparison(compared, 0)))
    assert data["prompt"] == "Which is best?" and [c["label"] for c in data["columns"]] == [
        "alpha/alpha-small",
        "beta/beta-1",
    ]
    assert data["vote"] == "alpha/alpha-small" and data["columns"][1]["answer"] == "Beta answers too."


def test_edit_as_a_new_experiment_fills_the_form_and_runs_a_new_one(env):
    at = finish(start(fill(experiments_page())))
    experiment_id = at.query_params["experiment"]
    at.button(key=f"exp_edit_{experiment_id}").click().run()
    no_traceback(at)
    assert "experiment" not in at.query_params
    assert at.text_area(key="exp_template").value == TEMPLATE
    rows = [json.loads(line) for line in at.text_area(key="exp_data_text").value.splitlines()]
    assert rows[0] == {"country": "France", "expected": "Alpha"} and len(rows) == 3
    assert at.text_input(key="exp_name").value == f"{TEMPLATE} (copy)"  # unnamed: titled by its template
    at.slider(key="exp1_temperature").set_value(0.0).run()  # the one change: B's temperature
    finish(start(at))
    store = playground_state.experiments()
    copy = store.experiment(at.query_params["experiment"])
    assert copy.id != experiment_id and copy.name == f"{TEMPLATE} (copy)"
    assert [v.temperature for v in copy.variants] == [0.7, 0.0, 0.7]
    assert len(store.runs(experiment_id)) == 1  # the original is unchanged


def test_with_prompt_logging_off_the_page_says_answers_are_not_kept(env, monkeypatch):
    monkeypatch.setenv("CONDUCTOR_LOG_PROMPTS", "false")
    at = experiments_page()
    assert any("answers are **not kept**" in i.value for i in at.info)
    finish(start(fill(at)))
    assert summary(at)["A"]["success"] == "100%"  # the figures are kept
    assert "Alpha answers first." not in texts(at)
    table = grid(at)
    answers = [str(v) for col in table.columns if col[1:4] == " · " for v in table[col]]
    assert len(answers) == 9 and all(a.endswith("(answer not kept)") for a in answers), answers
    assert not any("Alpha answers first." in a for a in answers)
    open_row(at, 0)
    assert sum("answer not kept" in plain(c.value) for c in at.caption) == 3
    assert all(c.answer is None for c in playground_state.experiments().cells(at.query_params["run"]))


def test_a_comparison_export_names_columns_by_the_settings_they_answered_with(env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    at.switch_page("views/compare.py").run()
    at.selectbox(key="cmp1_provider").set_value("alpha").run()
    at.slider(key="cmp1_temperature").set_value(0.0).run()
    run_compare(at, "Same model, two temperatures", count=2)
    at.slider(key="cmp1_temperature").set_value(0.7).run()  # settings for the next message
    no_traceback(at)
    compared = playground_state.sessions().conversation(at.query_params["session"])
    data = json.loads(exports.to_json(share.comparison(compared, 0)))
    assert [c["label"] for c in data["columns"]] == ["alpha/alpha-small · T=0.7", "alpha/alpha-small · T=0"]
    assert [c["settings"]["temperature"] for c in data["columns"]] == [0.7, 0.0]


def test_an_image_column_refuses_text_only_variants_then_runs_and_edits_as_new_with_its_pictures(env, monkeypatch):
    import base64
    import io

    from PIL import Image

    from conductor_core.models import ImagePart

    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (200, 30, 30)).save(buffer, format="PNG")
    url = "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()
    at = fill(experiments_page(), template="Describe {{id}}", data=f'id,image\n1,"{url}"\n2,"{url}"\n')
    assert any("images from image: 1 distinct" in t for t in texts(at))
    # The scripted providers read text only: said before Run, refused on it, nothing sent.
    assert any("alpha reads text only: remove it or the image column (image)" in plain(w.value) for w in at.warning), [
        w.value for w in at.warning
    ]
    at.button(key="exp_run_button").click().run()
    assert "run" not in at.query_params and not any(f.calls for f in fakes.FAKES.values())
    assert any("Nothing was sent" in e.value for e in at.error)

    for fake in fakes.FAKES.values():
        monkeypatch.setattr(fake, "reads_attachments", True)
    at = finish(start(at.run()))
    sent = fakes.FAKES["alpha"].calls
    assert len(sent) == 2 and all(
        [p.url for p in r.messages[-1].parts or () if isinstance(p, ImagePart)] == [url] for r in sent
    )
    # Edit as a new experiment: the pictures come back into their cells as data URLs.
    at.button(key=f"exp_edit_{at.query_params['experiment']}").click().run()
    no_traceback(at)
    rows = [json.loads(line) for line in at.text_area(key="exp_data_text").value.splitlines()]
    assert rows == [{"id": "1", "image": url}, {"id": "2", "image": url}]


def test_pasted_rows_saved_as_a_dataset_are_what_the_run_records(env):
    """Save as a dataset: the form switches to the saved dataset (latest version), the run
    records "dataset capitals v1"; saving other rows under the name makes v2, and v1 can still be run."""
    at = fill(experiments_page())
    at.text_input(key="exp_save_name").set_value("capitals").run()
    at.button(key="exp_save_dataset").click().run()
    no_traceback(at)
    assert at.session_state["exp_source"] == "Saved dataset"
    assert at.selectbox(key="exp_saved_name").value == "capitals"
    assert any("Saved as capitals v1" in plain(m.value) for m in at.success)
    at = finish(start(at))
    store = playground_state.experiments()
    run = store.run(at.query_params["run"])
    assert (run.dataset_name, run.dataset_version) == ("capitals", 1)
    assert any("dataset capitals v1" in plain(c.value) for c in at.caption)

    # Other rows under the same name: version 2; version 1 is still there to run.
    at = fill(experiments_page(), data="country,expected\nPeru,Lima\n")
    at.text_input(key="exp_save_name").set_value("capitals").run()
    at.button(key="exp_save_dataset").click().run()
    assert [v.version for v in playground_state.datasets().versions("capitals")] == [2, 1]
    assert at.selectbox(key="exp_saved_version").value == "latest"
    at.selectbox(key="exp_saved_version").set_value("1").run()
    at = finish(start(at))
    run = store.run(at.query_params["run"])
    assert run.dataset_version == 1 and store.experiment(run.experiment_id).row_count == 3
    # Edit as a new experiment starts from the same dataset version.
    at.button(key=f"exp_edit_{run.experiment_id}").click().run()
    no_traceback(at)
    assert at.session_state["exp_source"] == "Saved dataset"
    assert (at.selectbox(key="exp_saved_name").value, at.selectbox(key="exp_saved_version").value) == ("capitals", "1")
