"""Experiments' checks beyond the answer's text: valid against the schema, a JSON path equal to a
dataset column, which tools the model called and with what, and several checks per run, each
with its own pass rate per variant. Answers come through the real openai SDK from a loopback
OpenAI server scripted to answer known JSON per row."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from workbench_support import KEYS

from conductor_core.config import load_settings
from conductor_core.models import ResponseFormatJsonSchema, Tool
from conductor_core.router import Conductor
from conductor_core.structured import EXAMPLE_SCHEMAS
from conductor_core.testing.protocol_servers import OpenAIServer
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import (
    Check,
    CheckError,
    CheckKind,
    ExperimentStore,
    same_value,
)
from conductor_core.workbench.exports import run_report, to_csv, to_html, to_json
from conductor_core.workbench.runner import start_run
from conductor_core.workbench.variants import Variant

INVOICE_FORMAT = ResponseFormatJsonSchema.model_validate(
    {"type": "json_schema", "json_schema": {"name": "invoice", "schema": EXAMPLE_SCHEMAS["Invoice"], "strict": True}}
)
WEATHER = Tool.model_validate(
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
)


class PerPromptServer(OpenAIServer):
    """An OpenAI server whose JSON answer is scripted per prompt and temperature."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.answers: dict[tuple[str, float], str] = {}

    async def _generate(self, request: Any, call: Any, **extra: Any) -> Any:
        key = (call.body["messages"][-1]["content"], call.body.get("temperature"))
        # Read by the base class before its first await, so concurrent requests cannot mix up.
        self.json_reply = self.answers.get(key, self.json_reply)
        return await super()._generate(request, call, **extra)


@pytest.fixture(scope="module")
def upstream() -> Iterator[PerPromptServer]:
    server = PerPromptServer(require_key=KEYS["openai"]).start()
    yield server
    server.stop()


def make_conductor(server: OpenAIServer, tmp_path: Path, database_url: str | None) -> Conductor:
    server.reset()
    return Conductor(
        load_settings(
            _env_file=None,
            local_enabled=False,
            data_dir=tmp_path,
            database_url=database_url,
            max_retries=0,
            timeout_s=20.0,
            openai_api_key=KEYS["openai"],
            openai_base_url=server.url,
        )
    )


def invoice(i: int, total: Any, *, currency: str | None = "EUR") -> str:
    body: dict[str, Any] = {"vendor": f"Vendor {i}", "date": f"2026-01-{i + 1:02d}", "total": total}
    if currency is not None:
        body["currency"] = currency
    return json.dumps(body)


def expected_total(i: int) -> str:
    return f"{100 + i}.50"  # compared as a number: 100.5 equals "100.50"


def scripted_invoices(server: PerPromptServer) -> tuple[str, int]:
    """Twenty rows. The careful variant (T=0) answers each row right; the sloppy one (T=1):
    rows 1-2 not JSON, rows 3-5 JSON without its currency (invalid, but the right total),
    rows 6-11 valid with a wrong total, rows 12-20 valid and right."""
    lines = ["text,expected_total"]
    for i in range(20):
        prompt_text = f"Invoice {i}: Vendor {i} charged {expected_total(i)} EUR"
        lines.append(f"{prompt_text},{expected_total(i)}")
        prompt = f"Extract: {prompt_text}"
        right = 100.5 + i
        server.answers[(prompt, 0.0)] = invoice(i, right)
        if i < 2:
            sloppy = "Sorry, I cannot read that invoice."
        elif i < 5:
            sloppy = invoice(i, right, currency=None)
        elif i < 11:
            sloppy = invoice(i, right + 1)
        else:
            sloppy = f"```json\n{invoice(i, right)}\n```"  # a fenced answer is forgiven its fence
        server.answers[(prompt, 1.0)] = sloppy
    return "\n".join(lines) + "\n", 20


def test_a_twenty_row_run_with_a_schema_check_and_a_json_path_check(
    upstream: PerPromptServer, tmp_path: Path, database_url: str | None
) -> None:
    conductor = make_conductor(upstream, tmp_path, database_url)
    try:
        data, rows = scripted_invoices(upstream)
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Invoices",
            "Extract: {{text}}",
            read_dataset(data),
            [
                Variant(provider="openai", temperature=0.0, response_format=INVOICE_FORMAT),
                Variant(provider="openai", temperature=1.0, response_format=INVOICE_FORMAT),
            ],
        )
        checks = [Check(kind="schema"), Check(kind="json_path", path="$.total", column="{{expected_total}}")]
        handle = start_run(conductor, store, experiment.id, checks=checks)
        assert handle.wait(120)
        assert handle.progress().ok == 2 * rows

        # The schema went to the upstream as OpenAI's response_format, on every call.
        sent = [r["json"]["response_format"] for r in upstream.requests]
        assert len(sent) == 2 * rows and all(s["json_schema"]["name"] == "invoice" for s in sent)

        run = store.run(handle.run_id)
        assert [c.label for c in run.checks] == ["valid against the schema", "$.total = {{expected_total}}"]
        careful, sloppy = store.stats(handle.run_id)
        assert [(c.checked, c.passed) for c in careful.checks] == [(20, 20), (20, 20)]
        assert [(c.checked, c.passed) for c in sloppy.checks] == [(20, 15), (20, 12)]
        assert [c.pass_rate for c in sloppy.checks] == [0.75, 0.6]
        # A cell passes when all its checks pass: rows 12-20 only.
        assert (careful.passed, careful.checked, sloppy.passed, sloppy.checked) == (20, 20, 9, 20)

        cells = {(c.row, c.variant): c for c in store.cells(handle.run_id)}
        not_json, no_currency, wrong_total = cells[(0, 1)], cells[(2, 1)], cells[(5, 1)]
        assert not_json.checks is not None and not_json.checks[0].passed is False
        assert (not_json.checks[0].detail or "").startswith("not JSON")
        assert no_currency.checks is not None and [r.passed for r in no_currency.checks] == [False, True]
        assert "currency" in (no_currency.checks[0].detail or "")
        assert wrong_total.checks is not None and [r.passed for r in wrong_total.checks] == [True, False]
        assert wrong_total.checks[1].detail == "$.total: 106.5 is not '105.50'"

        # The exports carry every check's verdict per cell.
        report = run_report(store, handle.run_id)
        exported = json.loads(to_json(report))
        assert [Check.model_validate(c) for c in exported["checks"]] == list(run.checks)
        verdicts = [[r["passed"] for r in cell["checks"]] for row in exported["rows"] for cell in row["cells"] if cell]
        assert verdicts.count([True, True]) == 20 + 9
        table = list(csv.DictReader(io.StringIO(to_csv(report))))
        assert len(table) == 2 * rows
        first_check, second_check = "check 1: valid against the schema", "check 2: $.total = {{expected_total}}"
        assert sum(line[first_check] == "pass" for line in table) == 20 + 15
        assert sum(line[second_check] == "pass" for line in table) == 20 + 12
        assert "$.total: 106.5 is not '105.50'" in {line[f"{second_check} (why)"] for line in table}
        html = to_html(report, charts=False)
        assert "15/20 (75%)" in html and "12/20 (60%)" in html
    finally:
        conductor.close()


def test_tool_checks_read_the_calls_the_model_made(
    upstream: PerPromptServer, tmp_path: Path, database_url: str | None
) -> None:
    conductor = make_conductor(upstream, tmp_path, database_url)
    try:
        cities = ["Paris"] * 6 + ["Rome"] * 4  # the loopback server always asks for Paris's weather
        data = "city,expected_city\n" + "".join(f"{c} {i},{c}\n" for i, c in enumerate(cities))
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Weather",
            "What is the weather in {{city}}?",
            read_dataset(data),
            [Variant(provider="openai", tools=(WEATHER,)), Variant(provider="openai", temperature=0.1)],
        )
        checks = [
            Check(kind="called_tool", tool="get_weather"),
            Check(kind="tool_argument", tool="get_weather", path="city", column="expected_city"),
            Check(kind="no_tool"),
        ]
        handle = start_run(conductor, store, experiment.id, checks=checks)
        assert handle.wait(120)
        with_tools, without = store.stats(handle.run_id)
        assert [(c.checked, c.passed) for c in with_tools.checks] == [(10, 10), (10, 6), (10, 0)]
        assert [(c.checked, c.passed) for c in without.checks] == [(10, 0), (10, 0), (10, 10)]
        assert (with_tools.passed, without.passed) == (0, 0)  # no variant both calls and does not

        cells = {(c.row, c.variant): c for c in store.cells(handle.run_id)}
        called = cells[(7, 0)]
        assert called.tool_calls is not None and [c.function.name for c in called.tool_calls] == ["get_weather"]
        assert json.loads(called.tool_calls[0].function.arguments) == {"city": "Paris"}
        assert called.checks is not None and called.checks[1].detail == "get_weather(city): \"Paris\" is not 'Rome'"
        assert cells[(7, 1)].tool_calls is None

        report = run_report(store, handle.run_id)
        first = json.loads(to_json(report))["rows"][0]["cells"][0]
        assert first["tool_calls"][0]["function"]["name"] == "get_weather"
        table = list(csv.DictReader(io.StringIO(to_csv(report))))
        assert [json.loads(line["tool_calls"])[0]["function"]["name"] for line in table[::2]] == ["get_weather"] * 10
        assert all(line["tool_calls"] == "" for line in table[1::2])
    finally:
        conductor.close()


def test_a_check_that_cannot_run_is_refused_before_any_call(
    upstream: PerPromptServer, tmp_path: Path, database_url: str | None
) -> None:
    conductor = make_conductor(upstream, tmp_path, database_url)
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Plain",
            "Say {{word}}",
            read_dataset("word,expected\nhi,hi\nbye,bye\n"),
            [Variant(provider="openai"), Variant(provider="openai", temperature=0.0)],
        )
        for check, said in [
            (Check(kind="schema"), "needs a schema"),
            (Check(kind="schema", schema={"type": "nombre"}), "not a valid JSON Schema"),
            (Check(kind="json_path", path="$.total[", column="expected"), "not a JSON path"),
            (Check(kind="json_path", path="$.total", column="expected_total"), "no column 'expected_total'"),
            (Check(kind="called_tool"), "needs the tool's name"),
        ]:
            with pytest.raises(CheckError, match=said):
                start_run(conductor, store, experiment.id, checks=[check])
        assert upstream.requests == [] and store.runs(experiment.id) == []
        # A schema given to the check itself checks variants that ask for plain text.
        handle = start_run(conductor, store, experiment.id, checks=[CheckKind.equals, Check(kind="schema", schema={})])
        assert handle.wait(60)
        assert [c.label for c in store.run(handle.run_id).checks] == [
            "equals",
            "valid against the schema (the check's)",
        ]
    finally:
        conductor.close()


def test_values_compare_as_numbers_when_they_are_numbers_else_as_trimmed_text() -> None:
    assert same_value(100.5, "100.50") and same_value(12, " 12 ") and not same_value(12, "twelve")
    assert same_value("Paris", " paris ") and not same_value("12", "12.0")
    assert same_value(True, "true") and same_value(None, "null")


def test_the_csv_export_neutralises_formulas_in_answers_and_values(tmp_path: Path) -> None:
    from conductor_core.testing.fakes import ScriptedProvider

    formula = '=HYPERLINK("http://example.invalid/x","click")'
    providers = [ScriptedProvider("sheet", reply=formula), ScriptedProvider("other", reply="-1 is fine")]
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, max_retries=0)
    conductor = Conductor(settings, extra_providers=providers)
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Formulas",
            "Say {{word}}",
            read_dataset('{"word": "@SUM(A1:A9)", "expected": "=1+1", "count": -3}\n'),
            [Variant(provider="sheet"), Variant(provider="other")],
        )
        handle = start_run(conductor, store, experiment.id, checks=["equals"])
        assert handle.wait(60)
        table = list(csv.DictReader(io.StringIO(to_csv(run_report(store, handle.run_id)))))
        assert [line["answer"] for line in table] == ["'" + formula, "'-1 is fine"]
        assert {line["word"] for line in table} == {"'@SUM(A1:A9)"} and {line["count"] for line in table} == {"-3"}
        assert {line["expected"] for line in table} == {"'=1+1"}
    finally:
        conductor.close()
