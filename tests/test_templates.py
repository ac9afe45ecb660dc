"""Prompt templates: placeholders, the one escape, and errors that say where and what."""

from __future__ import annotations

import pytest

from conductor_core.workbench.templates import MissingVariableError, Template, TemplateError


def test_placeholders_with_or_without_spaces_are_the_same_variable() -> None:
    template = Template("{{name}} and {{ name }} live in {{  city\t}}.")
    assert template.variables == ["name", "city"]
    assert template.render({"name": "Ada", "city": "London"}) == "Ada and Ada live in London."


def test_column_names_with_spaces_and_punctuation_are_variables() -> None:
    template = Template("Q: {{ first question }} / {{expected-output}}")
    assert template.variables == ["first question", "expected-output"]
    assert template.render({"first question": "why?", "expected-output": "because"}) == "Q: why? / because"


def test_a_backslash_before_two_braces_writes_them_literally() -> None:
    template = Template(r"Fill \{{name}} with {{name}}; JSON {\"a\": {\"b\": 1}} and } }} stay.")
    assert template.variables == ["name"]
    assert template.render({"name": "x"}) == r"Fill {{name}} with x; JSON {\"a\": {\"b\": 1}} and } }} stay."


def test_other_backslashes_and_single_braces_are_left_alone() -> None:
    template = Template(r"C:\path\{x} \n {{ v }}")
    assert template.render({"v": 1}) == r"C:\path\{x} \n 1"


@pytest.mark.parametrize(
    ("source", "where"),
    [("Hello {{ }}", "line 1, column 7"), ("a\nb {{ name", "line 2, column 3"), ("{{{x}}}", "line 1, column 1")],
)
def test_a_malformed_placeholder_names_its_line_and_column_and_the_escape(source: str, where: str) -> None:
    with pytest.raises(TemplateError, match=where) as caught:
        Template(source)
    assert r"\{{" in str(caught.value)


def test_a_missing_variable_names_the_variable_the_row_and_the_columns() -> None:
    template = Template("Capital of {{country}} in {{year}}?")
    with pytest.raises(MissingVariableError) as caught:
        template.render({"country": "France"}, row=7)
    error = caught.value
    assert (error.variable, error.row) == ("year", 7)
    assert str(error) == "row 7 has no value for {{year}} (columns: country)"
    assert template.missing(["country"]) == ["year"]


def test_none_is_missing_but_an_empty_string_is_a_value() -> None:
    template = Template("[{{v}}]")
    assert template.render({"v": ""}) == "[]"
    with pytest.raises(MissingVariableError):
        template.render({"v": None}, row=1)


def test_values_that_are_not_text_are_written_as_json() -> None:
    template = Template("{{n}} {{flag}} {{items}}")
    assert template.render({"n": 3, "flag": True, "items": ["a", "é"]}) == '3 true ["a", "é"]'


def test_nothing_in_a_template_is_evaluated() -> None:
    # Jinja-like syntax is text here: no expression, statement or comment is interpreted.
    source = "{% for x in y %}{# note #}{{ name.upper() }}"
    template = Template(source)
    assert template.variables == ["name.upper()"]
    assert template.render({"name.upper()": "literal"}) == "{% for x in y %}{# note #}literal"
