"""Structured output and tool calls, checked: is a JSON Schema valid, did an answer parse and
match its schema, do a tool call's arguments match the tool's parameters, what a JSON path
finds in an answer.

Every page shows these results the same way, and Experiments' checks read them, so they live
here (the core), not in a page. Validation is `jsonschema` (Draft 2020-12, what OpenAI's and
Gemini's schemas are written in); JSON paths are RFC 9535 (`python-jsonpath`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import jsonpath
from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from .models import ResponseFormatJsonObject, ResponseFormatJsonSchema, Tool, ToolCall

__all__ = [
    "EXAMPLE_SCHEMAS",
    "schema_problem",
    "OutputCheck",
    "check_output",
    "check_json",
    "tool_call_problem",
    "json_path_problem",
    "json_path_values",
]

#: Ready schemas a person can start from (the Output control's examples).
EXAMPLE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Invoice": {
        "type": "object",
        "properties": {
            "vendor": {"type": "string"},
            "date": {"type": "string", "description": "ISO 8601 date"},
            "total": {"type": "number"},
            "currency": {"type": "string", "enum": ["USD", "EUR", "GBP"]},
        },
        "required": ["vendor", "date", "total", "currency"],
        "additionalProperties": False,
    },
    "Sentiment": {
        "type": "object",
        "properties": {
            "sentiment": {"type": "string", "enum": ["positive", "neutral", "negative"]},
            "confidence": {"type": "number", "minimum": 0, "maximum": 1},
        },
        "required": ["sentiment", "confidence"],
        "additionalProperties": False,
    },
    "Entities": {
        "type": "object",
        "properties": {
            "people": {"type": "array", "items": {"type": "string"}},
            "places": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["people", "places"],
        "additionalProperties": False,
    },
}


def _first_error(validator: Draft202012Validator, value: Any) -> str | None:
    # The most relevant error (jsonschema's own ranking), said with where it is.
    from jsonschema.exceptions import best_match

    error = best_match(validator.iter_errors(value))
    if error is None:
        return None
    where = error.json_path if error.path else "the answer"
    return f"{where}: {error.message}"


def schema_problem(schema: Any) -> str | None:
    """Why `schema` is not a usable JSON Schema (None when it is): said before anything is sent."""
    if not isinstance(schema, dict):
        return 'a JSON Schema is a JSON object, such as {"type": "object", "properties": {...}}'
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        where = f" at {exc.json_path}" if exc.path else ""
        return f"not a valid JSON Schema{where}: {exc.message}"
    return None


@dataclass(frozen=True)
class OutputCheck:
    """What became of an answer that was asked to be JSON."""

    parsed: bool  # the answer is JSON
    valid: bool | None  # it matches the schema (None: no schema asked, and it is an object)
    error: str | None  # the parse error, or the first validation error
    value: Any = None  # the parsed JSON

    @property
    def ok(self) -> bool:
        return self.parsed and self.valid is not False

    @property
    def pretty(self) -> str | None:
        return json.dumps(self.value, indent=2, ensure_ascii=False) if self.parsed else None


def check_json(text: str, schema: dict[str, Any] | None) -> OutputCheck:
    """Parse `text` as JSON and, given a schema, validate it. A model that wraps its JSON in a
    Markdown fence (```json ... ```) is forgiven the fence: the JSON inside is what is checked."""
    body = _unfenced(text)
    try:
        value = json.loads(body)
    except ValueError as exc:
        return OutputCheck(parsed=False, valid=False if schema else None, error=f"not JSON: {exc}")
    if schema is None:
        if not isinstance(value, dict):
            return OutputCheck(parsed=True, valid=False, error="JSON, but not an object", value=value)
        return OutputCheck(parsed=True, valid=None, error=None, value=value)
    error = _first_error(Draft202012Validator(schema), value)
    return OutputCheck(parsed=True, valid=error is None, error=error, value=value)


def check_output(text: str, response_format: Any) -> OutputCheck | None:
    """The check for an answer given the request's `response_format` (None for text output)."""
    if isinstance(response_format, ResponseFormatJsonSchema):
        return check_json(text, response_format.json_schema.schema_)
    if isinstance(response_format, ResponseFormatJsonObject):
        return check_json(text, None)
    return None


def _unfenced(text: str) -> str:
    stripped = text.strip()
    if stripped.startswith("```") and stripped.endswith("```") and len(stripped) >= 6:
        inner = stripped[3:-3]
        newline = inner.find("\n")
        return inner[newline + 1 :] if newline >= 0 else inner
    return stripped


def tool_call_problem(call: ToolCall, tools: list[Tool] | tuple[Tool, ...] | None) -> str | None:
    """Why a tool call is wrong (an unknown tool, arguments that are not JSON or do not match
    the tool's parameters), or None when it is right."""
    tool = next((t for t in tools or () if t.function.name == call.function.name), None)
    if tool is None:
        known = ", ".join(t.function.name for t in tools or ()) or "none"
        return f"called {call.function.name!r}, which is not among the tools ({known})"
    try:
        arguments = json.loads(call.function.arguments or "{}")
    except ValueError as exc:
        return f"arguments are not JSON: {exc}"
    schema = tool.function.parameters
    if not schema:
        return None
    return _first_error(Draft202012Validator(schema), arguments)


def json_path_problem(path: str) -> str | None:
    """Why `path` is not a JSON path ($.total, $.items[0].price), or None."""
    try:
        jsonpath.compile(path)
    except jsonpath.JSONPathError as exc:
        return f"not a JSON path ({exc}); write one such as $.total or $.items[0].price"
    return None


def json_path_values(value: Any, path: str) -> list[Any]:
    """Every value `path` finds in `value` (an empty list when none)."""
    return list(jsonpath.findall(path, value))
