"""The tools editor on the Experiments form, under `streamlit.testing.v1.AppTest` with the
scripted providers (Chat and Compare are walked through in a real browser:
tests/test_browser_tools.py): a wrong tool is named before anything is sent, the tools and
the tool choice go to every variant, and "Edit as new" brings them back."""

from __future__ import annotations

import json

import pytest

from playground import state as playground_state
from tests.test_playground_experiments import experiments_page, fill, finish, start
from tests.test_playground_pages import no_traceback, plain

pytestmark = pytest.mark.timeout(120)

PARAMETERS = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}


def labelled(widgets, label: str):
    return [w for w in widgets if w.label == label and (w.key or "").startswith("exp_tools_")]


def test_an_experiments_tools_go_to_every_variant_and_come_back_with_edit_as_new(env):
    at = fill(experiments_page())
    at.button(key="exp_tools_add").click().run()
    no_traceback(at)
    assert not labelled(at.text_area, "Mock result")  # mocks answer calls by hand: not in experiments
    (name,) = labelled(at.text_input, "Name")
    name.set_value("get_weather").run()
    (parameters,) = labelled(at.text_area, "Parameters (JSON Schema)")
    parameters.set_value('{"type": "objekt"}').run()
    errors = [plain(e.value) for e in at.error]
    assert any("tool 1 (get_weather): parameters: not a valid JSON Schema" in e for e in errors), errors
    at.button(key="exp_run_button").click().run()
    assert "run" not in at.query_params  # nothing is sent while a tool is wrong

    (parameters,) = labelled(at.text_area, "Parameters (JSON Schema)")
    parameters.set_value(json.dumps(PARAMETERS)).run()
    at.selectbox(key="exp_tools_choice").set_value("get_weather").run()
    no_traceback(at)
    finish(start(at))
    store = playground_state.experiments()
    experiment_id = at.query_params["experiment"]
    experiment = store.experiment(experiment_id)
    for variant in experiment.variants:
        (tool,) = variant.tools
        assert (tool.function.name, tool.function.parameters) == ("get_weather", PARAMETERS)
        assert variant.tool_choice.function.name == "get_weather" and variant.tool_mocks is None

    at.button(key=f"exp_edit_{experiment_id}").click().run()
    no_traceback(at)
    assert [w.value for w in labelled(at.text_input, "Name")] == ["get_weather"]
    assert at.selectbox(key="exp_tools_choice").value == "get_weather"
