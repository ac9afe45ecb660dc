"""Structured output and tool calls, checked (conductor_core/structured.py), and the message
parts that carry images and files (conductor_core/models.py)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conductor_core.models import (
    ChatMessage,
    ChatRequest,
    FilePart,
    ImagePart,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    TextPart,
    ToolCall,
    data_url,
    parse_data_url,
)
from conductor_core.structured import (
    EXAMPLE_SCHEMAS,
    check_json,
    check_output,
    json_path_problem,
    json_path_values,
    schema_problem,
    tool_call_problem,
)
from conductor_core.workbench.variants import Variant

INVOICE = EXAMPLE_SCHEMAS["Invoice"]


def test_every_example_schema_is_a_valid_schema():
    assert all(schema_problem(s) is None for s in EXAMPLE_SCHEMAS.values())


def test_a_broken_schema_is_refused_saying_where():
    problem = schema_problem({"type": "object", "properties": {"total": {"type": "nombre"}}})
    assert problem is not None and "properties.total.type" in problem
    assert "JSON object" in (schema_problem(["not", "a", "schema"]) or "")


def test_an_answer_that_matches_its_schema():
    result = check_json('{"vendor": "ACME", "date": "2026-12-01", "total": 12.5, "currency": "EUR"}', INVOICE)
    assert (result.parsed, result.valid, result.error, result.ok) == (True, True, None, True)
    assert '"total": 12.5' in (result.pretty or "")


def test_the_first_validation_error_says_where():
    result = check_json('{"vendor": "ACME", "date": "2026-12-01", "total": "12", "currency": "EUR"}', INVOICE)
    assert (result.parsed, result.valid, result.ok) == (True, False, False)
    assert result.error == "$.total: '12' is not of type 'number'"


def test_an_answer_that_is_not_json():
    result = check_json("Sure! The total is 12.", INVOICE)
    assert (result.parsed, result.valid, result.ok, result.pretty) == (False, False, False, None)
    assert result.error is not None and result.error.startswith("not JSON")


def test_a_fenced_answer_is_checked_inside_its_fence():
    assert check_json('```json\n{"people": [], "places": ["Oslo"]}\n```', EXAMPLE_SCHEMAS["Entities"]).ok


def test_json_object_output_needs_an_object_and_text_output_is_not_checked():
    assert check_output('{"a": 1}', ResponseFormatJsonObject(type="json_object")).ok  # type: ignore[union-attr]
    assert not check_output("[1, 2]", ResponseFormatJsonObject(type="json_object")).ok  # type: ignore[union-attr]
    assert check_output("anything", None) is None
    fmt = ResponseFormatJsonSchema.model_validate(
        {"type": "json_schema", "json_schema": {"name": "i", "schema": INVOICE}}
    )
    assert check_output("{}", fmt).error == "the answer: 'vendor' is a required property"  # type: ignore[union-attr]


def test_tool_calls_are_checked_against_their_tools():
    variant = Variant(
        provider="local",
        tools=[
            {
                "function": {
                    "name": "get_weather",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
                }
            }
        ],
    )

    def call(name: str, arguments: str) -> ToolCall:
        return ToolCall.model_validate({"id": "c1", "function": {"name": name, "arguments": arguments}})

    assert tool_call_problem(call("get_weather", '{"city": "Oslo"}'), variant.tools) is None
    assert tool_call_problem(call("get_weather", "{}"), variant.tools) == "the answer: 'city' is a required property"
    assert "not JSON" in (tool_call_problem(call("get_weather", "{city"), variant.tools) or "")
    assert "not among the tools (get_weather)" in (tool_call_problem(call("send_mail", "{}"), variant.tools) or "")


def test_json_paths():
    assert json_path_values({"total": 3, "items": [{"price": 1}]}, "$.items[0].price") == [1]
    assert json_path_values({"total": 3}, "$.missing") == []
    assert json_path_problem("$.total") is None
    assert json_path_problem("$.[") is not None


def test_a_variant_with_output_and_tools_round_trips_and_sends_them():
    variant = Variant(
        provider="local",
        response_format={"type": "json_schema", "json_schema": {"name": "invoice", "schema": INVOICE}},
        tools=[{"function": {"name": "lookup"}}],
        tool_choice="required",
    )
    assert '"schema":' in variant.model_dump_json()  # as OpenAI spells it, not the field's name
    assert Variant.model_validate_json(variant.model_dump_json()) == variant
    request = variant.request([ChatMessage(role="user", content="hi")])
    assert request.response_format == variant.response_format
    assert [t.function.name for t in request.tools or []] == ["lookup"] and request.tool_choice == "required"


PNG = b"\x89PNG\r\n\x1a\n" + b"\x00" * 16


def test_a_user_message_with_parts_keeps_their_order_and_its_text():
    message = ChatMessage(
        role="user",
        parts=[TextPart(text="What is this?"), ImagePart(url=data_url("image/png", PNG)), TextPart(text="Briefly.")],
    )
    assert message.content == "What is this?\nBriefly."
    assert [p.type for p in message.parts or []] == ["text", "image", "text"]
    assert parse_data_url(message.parts[1].url) == ("image/png", PNG)  # type: ignore[union-attr,index]
    request = ChatRequest(messages=[message])
    assert [p.type for p in request.attachments()] == ["image"]
    assert ChatMessage(role="user", parts=[ImagePart(url="https://example.com/cat.png")]).content == ""


@pytest.mark.parametrize(
    ("part", "says"),
    [
        (lambda: ImagePart(url="data:text/plain;base64,AAAA"), "use one of image/png"),
        (lambda: ImagePart(url="file:///etc/passwd"), "data URL"),
        (lambda: ImagePart(url=data_url("image/png", b"\x00" * (5 * 1024 * 1024 + 1))), "at most 5 MB"),
        (lambda: FilePart(url=data_url("image/png", PNG)), "application/pdf"),
        (lambda: ChatMessage(role="assistant", parts=[TextPart(text="x")]), "only user messages carry parts"),
        (lambda: ChatMessage(role="user", parts=[]), "at least one part"),
    ],
)
def test_attachments_that_cannot_be_sent_are_refused_saying_what_to_change(part, says):
    with pytest.raises(ValidationError, match=says):
        part()
