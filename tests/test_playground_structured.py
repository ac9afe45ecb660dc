"""The Output control (Text / JSON object / JSON schema) on Chat and Compare, kept across reruns,
reloads and sessions; the schema checked before anything is sent; each answer's JSON verdict
shown beside it; a provider without structured output named beside the control."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest
from test_playground_pages import (
    assistant_messages,
    new_session,
    no_traceback,
    plain,
    run_compare,
    send,
    settle,
)

import tests.playground_fakes as fakes
from conductor_core.models import ResponseFormatJsonSchema
from conductor_core.providers.spec import FEATURE_SETTINGS
from conductor_core.structured import EXAMPLE_SCHEMAS
from conductor_core.testing.fakes import Reply
from playground import controls

pytestmark = pytest.mark.timeout(180)

INVOICE = {"vendor": "Acme", "date": "2026-01-02", "total": 12.5, "currency": "EUR"}


@pytest.fixture
def app(env) -> AppTest:
    at = new_session()
    # alpha and gamma take response_format (as OpenAI-compatible providers do); beta does not.
    for name in ("alpha", "gamma"):
        fake = fakes.FAKES[name]
        fake.supported_settings = fake.supported_settings | {"response_format"}
    assert "response_format" in FEATURE_SETTINGS
    return at


def badges(block) -> list[str]:
    return [
        plain(m.value) for m in block.markdown if "-badge[" in m.value and "JSON" in m.value or "invalid" in m.value
    ]


def choose_invoice_schema(at: AppTest, prefix: str, *, sidebar: bool = False) -> None:
    # The element tree is read again after each run (a block read before a run is stale).
    (at.sidebar if sidebar else at.main).segmented_control(key=f"{prefix}_output").set_value("JSON schema").run()
    (at.sidebar if sidebar else at.main).selectbox(key=f"{prefix}_schema_example").set_value("Invoice").run()


def test_chat_asks_for_the_schema_shows_the_verdict_and_keeps_the_choice(app: AppTest) -> None:
    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
    choose_invoice_schema(app, "chat", sidebar=True)
    assert json.loads(app.sidebar.text_area(key="chat_schema_text").value) == EXAMPLE_SCHEMAS["Invoice"]
    app.sidebar.text_input(key="chat_schema_name").set_value("invoice").run()
    fakes.FAKES["alpha"].script(Reply(text=json.dumps(INVOICE)), Reply(text=json.dumps({**INVOICE, "total": "12"})))
    send(app, "Extract the invoice")
    sent = fakes.FAKES["alpha"].calls[-1].response_format
    assert isinstance(sent, ResponseFormatJsonSchema)
    assert (sent.json_schema.name, sent.json_schema.schema_, sent.json_schema.strict) == (
        "invoice",
        EXAMPLE_SCHEMAS["Invoice"],
        True,
    )
    assert any("valid JSON ✓ (schema invoice)" in b for b in badges(assistant_messages(app)[-1]))
    assert '"total": 12.5' in assistant_messages(app)[-1].code[0].value  # pretty, in its expander

    send(app, "And this one")
    second = badges(assistant_messages(app)[-1])
    assert any("invalid: $.total: '12' is not of type 'number'" in b for b in second), second

    # A rerun and a reload (a new browser session on the URL) show the same choice.
    app.run()
    assert app.sidebar.segmented_control(key="chat_output").value == "JSON schema"
    again = new_session(session=app.query_params["session"])
    assert again.sidebar.segmented_control(key="chat_output").value == "JSON schema"
    assert again.sidebar.text_input(key="chat_schema_name").value == "invoice"
    assert json.loads(again.sidebar.text_area(key="chat_schema_text").value) == EXAMPLE_SCHEMAS["Invoice"]
    # Both answers keep their verdicts after the reload.
    verdicts = [b for m in assistant_messages(again) for b in badges(m)]
    assert len(verdicts) == 2 and "valid JSON ✓" in verdicts[0] and verdicts[1].startswith(":red-badge")


def test_a_broken_schema_is_said_where_and_nothing_is_sent(app: AppTest) -> None:
    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
    choose_invoice_schema(app, "chat", sidebar=True)
    app.sidebar.text_area(key="chat_schema_text").set_value('{"type": "object", "properties": {"total": {"type": 3}}}')
    app.run()
    said = [plain(e.value) for e in app.sidebar.error]
    assert any("not a valid JSON Schema at $.properties.total.type" in s for s in said), said
    app.chat_input[0].set_value("Extract").run()
    settle(app)
    assert fakes.FAKES["alpha"].calls == [] and not assistant_messages(app)
    app.sidebar.text_area(key="chat_schema_text").set_value("{not json").run()
    assert any("The schema is not JSON" in plain(e.value) for e in app.sidebar.error)


def test_a_provider_without_structured_output_is_named_beside_the_control(app: AppTest) -> None:
    app.sidebar.selectbox(key="chat_provider").set_value("beta").run()
    app.sidebar.segmented_control(key="chat_output").set_value("JSON object").run()
    notes = [plain(c.value) for c in app.sidebar.caption]
    assert any("no structured output" in n and "response_format" in n for n in notes), notes
    app.sidebar.selectbox(key="chat_provider").set_value("alpha").run()
    assert not any("no structured output" in plain(c.value) for c in app.sidebar.caption)


def test_compare_columns_each_keep_their_output_through_reruns_and_reloads(app: AppTest) -> None:
    app.switch_page("views/compare.py").run()
    app.selectbox(key="cmp0_provider").set_value("alpha").run()
    app.selectbox(key="cmp1_provider").set_value("gamma").run()
    choose_invoice_schema(app, "cmp0")
    app.segmented_control(key="cmp1_output").set_value("JSON schema").run()
    app.selectbox(key="cmp1_schema_example").set_value("Invoice").run()
    fakes.FAKES["alpha"].script(Reply(text=json.dumps(INVOICE)))
    fakes.FAKES["gamma"].script(Reply(text="Here is your invoice: Acme, 12.50"))
    run_compare(app, "Extract the invoice")
    no_traceback(app)
    assert isinstance(fakes.FAKES["alpha"].calls[-1].response_format, ResponseFormatJsonSchema)
    assert isinstance(fakes.FAKES["gamma"].calls[-1].response_format, ResponseFormatJsonSchema)
    shown = badges(app.main)
    assert len(shown) == 2 and "valid JSON ✓ (schema invoice)" in shown[0] and "not JSON" in shown[1], shown
    app.run()
    assert [app.segmented_control(key=f"cmp{i}_output").value for i in range(2)] == ["JSON schema"] * 2
    again = new_session(session=app.query_params["session"])
    settle(again)
    assert [again.segmented_control(key=f"cmp{i}_output").value for i in range(2)] == ["JSON schema"] * 2
    assert len(badges(again.main)) == 2


def test_output_format_values_are_read_as_the_control_shows_them() -> None:
    assert controls.output_format("Text", "", "", True) == (None, None)
    json_object, problem = controls.output_format("JSON object", "", "", True)
    assert problem is None and json_object is not None and json_object.type == "json_object"
    schema, problem = controls.output_format("JSON schema", json.dumps(EXAMPLE_SCHEMAS["Sentiment"]), "mood", False)
    assert problem is None and isinstance(schema, ResponseFormatJsonSchema) and schema.json_schema.strict is False
    assert controls.output_format("JSON schema", "[1]", "x", True)[1] == (
        'The schema: a JSON Schema is a JSON object, such as {"type": "object", "properties": {...}}'
    )
    assert "Name the schema" in (controls.output_format("JSON schema", "{}", "my schema!", True)[1] or "")


def test_an_experiment_with_a_schema_check_and_a_json_path_check_from_the_page(app: AppTest) -> None:
    from test_playground_experiments import finish, start

    from conductor_core.workbench.experiments import Check, CheckKind
    from playground import state as playground_state

    app.switch_page("views/experiments.py").run()
    app.text_area(key="exp_template").set_value("Extract: {{text}}").run()
    app.text_area(key="exp_data_text").set_value("text,total\nAcme 12.50,12.5\nAcme 13,13\n").run()
    app.segmented_control(key="exp_count").set_value(2).run()
    for i in range(2):
        app.selectbox(key=f"exp{i}_provider").set_value("alpha" if i == 0 else "gamma").run()
        choose_invoice_schema(app, f"exp{i}")
    app.segmented_control(key="exp_check").set_value(None).run()
    app.multiselect(key="exp_check_more").set_value(["schema", "json_path"]).run()
    app.text_input(key="exp_check_path").set_value("$.total").run()
    app.selectbox(key="exp_check_path_column").set_value("total").run()
    # alpha answers the right invoice each time; gamma the first row's total for both.
    fakes.FAKES["alpha"].script(Reply(text=json.dumps(INVOICE)), Reply(text=json.dumps({**INVOICE, "total": 13})))
    fakes.FAKES["gamma"].script(Reply(text=json.dumps(INVOICE)), Reply(text=json.dumps(INVOICE)))
    app = finish(start(app))
    store = playground_state.experiments()
    run = store.run(app.query_params["run"])
    assert run.checks == (Check(kind=CheckKind.schema), Check(kind=CheckKind.json_path, path="$.total", column="total"))
    rates = {row["check"]: dict(row) for _, row in app.table[1].value.reset_index().iterrows()}
    assert list(rates) == ["valid against the schema", "$.total = {{total}}"]
    assert list(rates["$.total = {{total}}"].values())[1:] == ["2/2 (100%)", "1/2 (50%)"]
    # The grid is one table; each row's cells, with their badges, show when that row is opened.
    from test_playground_experiments import open_row

    valid, failed = 0, []
    for position in range(2):
        open_row(app, position)
        valid += sum("valid JSON ✓ (schema invoice)" in b for b in badges(app.main))
        failed += [plain(c.value) for c in app.caption if "$.total: 12.5 is not '13'" in plain(c.value)]
    assert valid == 4
    assert len(failed) == 1, failed


def test_an_arena_round_sends_one_output_format_to_every_contestant(app: AppTest) -> None:
    from test_arena_page import start_round

    at = app
    at.switch_page("views/arena.py").run()
    at.multiselect(key="arena_targets").set_value(["alpha/alpha-small", "gamma/gamma-1"]).run()
    choose_invoice_schema(at, "arena")
    fakes.FAKES["alpha"].script(Reply(text=json.dumps(INVOICE)))
    fakes.FAKES["gamma"].script(Reply(text="Acme, 12.50 EUR"))
    start_round(at, "Extract the invoice")
    for name in ("alpha", "gamma"):
        sent = fakes.FAKES[name].calls[-1].response_format
        assert isinstance(sent, ResponseFormatJsonSchema) and sent.json_schema.name == "invoice"
    assert not badges(at.main)  # before the vote: nothing that could tell the contestants apart
    next(b for b in at.button if b.label == "Tie").click().run()
    shown = badges(at.main)
    assert len(shown) == 2 and sum("valid JSON ✓ (schema invoice)" in b for b in shown) == 1
    assert sum("not JSON" in b for b in shown) == 1
