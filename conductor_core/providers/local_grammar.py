"""Structured output on the local model: `response_format` as a llama.cpp grammar.

`json_object` is llama.cpp's generic JSON grammar (root: an object); `json_schema` is the
schema converted to GBNF by llama-cpp-python's own converter (`json_schema_to_gbnf`, a copy
of llama.cpp's json-schema-to-grammar). Sampling under the grammar cannot produce anything
else, so an answer that ends by itself (finish_reason "stop") is JSON of that shape.

The converter silently ignores keywords it cannot express (`multipleOf`, `uniqueItems`,
`not`, numeric bounds...), and `jsonschema` (which checks the answer) enforces them: an
answer would then be constrained only in part while looking fully constrained. So the schema
is read first, and a keyword the grammar would not keep is refused (`GrammarError`, a 400
naming it and where it is). Numeric bounds are kept for the shapes people use most (a
0..1 confidence, a 1..5 rating, a count of at least 0 or 1): those rules are written here.

Converting is pure Python and cached by the schema's canonical JSON (bounded), so a schema
used row after row in an experiment is converted once. Only the generator in local.py
touches llama.cpp.
"""

from __future__ import annotations

import json
import math
from functools import lru_cache
from typing import Any

from ..models import ResponseFormatJsonObject, ResponseFormatJsonSchema

__all__ = ["GrammarError", "grammar_for", "schema_grammar", "structured_instruction"]

#: How many converted schemas are kept.
CACHE_SIZE = 64
#: The widest closed range of numbers written out value by value.
MAX_RANGE = 1000

# Draft 2020-12 keywords that constrain and that the converter drops: refused. Annotations
# (title, description, default, format: jsonschema asserts none of them) and keywords it does
# not know (OpenAPI's "nullable") constrain nothing and pass.
_DROPPED = frozenset(
    {
        "allOf",
        "not",
        "if",
        "then",
        "else",
        "multipleOf",
        "uniqueItems",
        "contains",
        "minContains",
        "maxContains",
        "minProperties",
        "maxProperties",
        "dependentRequired",
        "dependentSchemas",
        "patternProperties",
        "propertyNames",
        "unevaluatedItems",
        "unevaluatedProperties",
        "$dynamicRef",
    }
)
# Keywords the grammar keeps (with the combinations `_problems` refuses).
_KEPT = frozenset(
    {
        "type",
        "enum",
        "const",
        "properties",
        "required",
        "additionalProperties",
        "items",
        "prefixItems",
        "minItems",
        "maxItems",
        "minLength",
        "maxLength",
        "pattern",
        "anyOf",
        "oneOf",
        "$ref",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
    }
)
_BOUNDS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")


class GrammarError(ValueError):
    """A schema the local model's grammar cannot keep to; the message says what and where."""


def _where(path: str) -> str:
    return f"at {path}" if path else "at the top of the schema"


def _problems(schema: Any, path: str = "") -> list[str]:
    """What in `schema` a grammar from llama-cpp-python's converter would not enforce."""
    if not isinstance(schema, dict):
        return [] if isinstance(schema, bool) and schema else [f"{_where(path)}: a schema that is {schema!r}"]
    found: list[str] = []
    keys = set(schema) & (_KEPT | _DROPPED)
    for key in sorted(keys & _DROPPED):
        found.append(f"{key} {_where(path)}")
    constraining = keys - {"type"}
    union = next((k for k in ("anyOf", "oneOf", "$ref") if k in schema), None)
    if union and len(keys - {union}) > 0:
        others = ", ".join(sorted(keys - {union}))
        found.append(f"{union} beside {others} {_where(path)} (move them into each alternative)")
    types = schema.get("type")
    if isinstance(types, list) and constraining:
        found.append(f"a list of types beside {', '.join(sorted(constraining))} {_where(path)} (use anyOf)")
    if "pattern" in schema and ({"minLength", "maxLength"} & keys):
        found.append(f"pattern beside minLength/maxLength {_where(path)}")
    if {"minLength", "maxLength"} & keys and types != "string":
        found.append(f'minLength/maxLength without "type": "string" {_where(path)}')
    if {"minItems", "maxItems"} & keys and "items" not in schema and "prefixItems" not in schema:
        found.append(f"minItems/maxItems without items {_where(path)}")
    if "items" in schema and "prefixItems" in schema:
        found.append(f"items beside prefixItems {_where(path)}")
    if {"enum", "const"} & keys and len(keys - {"enum", "const", "type"}) > 0:
        found.append(f"enum/const beside {', '.join(sorted(keys - {'enum', 'const', 'type'}))} {_where(path)}")
    required = schema.get("required") or []
    defined = schema.get("properties") or {}
    for name in required:
        if name not in defined:
            found.append(f"required names {name!r}, which properties does not define, {_where(path)}")
    if set(_BOUNDS) & keys:
        problem = _bounds_problem(schema)
        if problem:
            found.append(f"{problem} {_where(path)}")
    found += _children_problems(schema, path)
    return found


def _children_problems(schema: dict[str, Any], path: str) -> list[str]:
    found: list[str] = []
    for name, sub in (schema.get("properties") or {}).items():
        found += _problems(sub, f"{path}/properties/{name}")
    for key in ("$defs", "definitions"):
        for name, sub in (schema.get(key) or {}).items():
            found += _problems(sub, f"{path}/{key}/{name}")
    for key in ("anyOf", "oneOf", "prefixItems"):
        for i, sub in enumerate(schema.get(key) or []):
            found += _problems(sub, f"{path}/{key}/{i}")
    items = schema.get("items")
    if isinstance(items, list):
        for i, sub in enumerate(items):
            found += _problems(sub, f"{path}/items/{i}")
    elif items is not None:
        found += _problems(items, f"{path}/items")
    extra = schema.get("additionalProperties")
    if isinstance(extra, dict):
        found += _problems(extra, f"{path}/additionalProperties")
    return found


# --- numeric bounds ---------------------------------------------------------------------------


def _bounds(schema: dict[str, Any]) -> tuple[float | None, float | None, bool, bool]:
    """(low, high, low is exclusive, high is exclusive)."""
    low, high = schema.get("minimum"), schema.get("maximum")
    low_ex, high_ex = "exclusiveMinimum" in schema, "exclusiveMaximum" in schema
    if low_ex:
        low = schema["exclusiveMinimum"] if low is None else max(low, schema["exclusiveMinimum"])
    if high_ex:
        high = schema["exclusiveMaximum"] if high is None else min(high, schema["exclusiveMaximum"])
    return low, high, low_ex, high_ex


def _integral(value: Any) -> bool:
    return (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value) and value == int(value)
    )


def _bounds_problem(schema: dict[str, Any]) -> str | None:
    kind = schema.get("type")
    said = ", ".join(f"{k} {schema[k]}" for k in _BOUNDS if k in schema)
    if kind not in ("integer", "number"):
        return f'{said} without "type": "integer" or "number"'
    low, high, low_ex, high_ex = _bounds(schema)
    if not all(_integral(v) for v in (low, high) if v is not None):
        return f"{said}: the local model's grammar keeps to whole-number bounds only"
    if kind == "integer":
        low = None if low is None else int(low) + (1 if low_ex else 0)
        high = None if high is None else int(high) - (1 if high_ex else 0)
    elif low_ex or high_ex:
        return f"{said}: the local model's grammar keeps exclusive bounds on integers only"
    if low is None or low < 0:
        return f"{said}: the local model's grammar keeps bounds from 0 upwards only (give a minimum of 0 or more)"
    if high is None:
        if low > 1 or (kind == "number" and low != 0):
            return f"{said}: with no maximum the local model's grammar keeps a minimum of 0 (or 1 for integers) only"
    elif high < low or high - low > MAX_RANGE:
        return f"{said}: the local model's grammar keeps ranges of up to {MAX_RANGE} whole numbers"
    return None


def _alternatives(low: int, high: int) -> str:
    return "(" + " | ".join(f'"{n}"' for n in range(low, high + 1)) + ")"


_DIGITS = "[0-9]{1,16}"
_NATURAL = "[1-9] [0-9]{0,15}"


def _bounded_rule(schema: dict[str, Any]) -> str:
    """The GBNF body for a number or integer within its (already checked) bounds."""
    low, high, low_ex, high_ex = _bounds(schema)
    if schema["type"] == "integer":
        lo = int(low) + (1 if low_ex else 0)  # type: ignore[arg-type]
        if high is None:
            return f'("0" | {_NATURAL})' if lo == 0 else f"({_NATURAL})"
        return _alternatives(lo, int(high) - (1 if high_ex else 0))
    fraction = f'("." {_DIGITS})?'
    if high is None:  # minimum 0: any number without a sign
        return f'("0" | {_NATURAL}) {fraction}'
    lo, hi = int(low), int(high)  # type: ignore[arg-type]
    at_top = f'"{hi}" ("." "0"{{1,16}})?'  # the maximum itself, and no more
    return at_top if lo == hi else f"({_alternatives(lo, hi - 1)} {fraction} | {at_top})"


# --- conversion ---------------------------------------------------------------------------------


def _converter() -> Any:
    from llama_cpp.llama_grammar import RESERVED_NAMES, SchemaConverter

    class BoundedConverter(SchemaConverter):
        """The converter, plus numeric bounds (which it ignores)."""

        def visit(self, schema: dict[str, Any], name: str) -> str:
            if schema is True or (isinstance(schema, dict) and not set(schema) & _KEPT):
                schema = {}  # annotations only (or keywords jsonschema ignores): any value
            if isinstance(schema, dict) and set(_BOUNDS) & set(schema):
                rule_name = name + "-" if name in RESERVED_NAMES else name or "root"
                return str(self._add_rule(rule_name, _bounded_rule(schema) + " space"))
            return str(super().visit(schema, name))

    return BoundedConverter(prop_order={}, allow_fetch=False, dotall=False, raw_pattern=False)


# The converter's string character admits raw control characters (a newline), which JSON
# forbids inside strings (`json.loads` refuses them); llama.cpp's later converter excludes them.
_JSON_CHAR = r'[^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4})'


@lru_cache(maxsize=CACHE_SIZE)
def _converted(canonical: str) -> str:
    schema = json.loads(canonical)
    problems = _problems(schema)
    if problems:
        raise GrammarError("; ".join(problems[:5]) + ("; …" if len(problems) > 5 else ""))
    converter = _converter()
    try:
        schema = converter.resolve_refs(schema, "schema")
        converter.visit(schema, "")
    except RecursionError:
        raise GrammarError("the schema refers to itself without end") from None
    except (
        AssertionError,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
    ) as exc:  # the converter says what it cannot do
        raise GrammarError(f"llama.cpp's converter cannot turn it into a grammar ({exc})") from None
    if "char" in converter._rules:
        converter._rules["char"] = _JSON_CHAR
    return str(converter.format_grammar())


def schema_grammar(schema: dict[str, Any]) -> str:
    """GBNF for `schema`, converted once per distinct schema. GrammarError says why not.
    The cache key keeps the order of the schema's keys: the answer's properties come in the
    order the schema gives them (a "reasoning" before an "answer" is meant that way)."""
    return _converted(json.dumps(schema, separators=(",", ":"), ensure_ascii=False))


def _json_object_grammar() -> str:
    from llama_cpp.llama_grammar import JSON_GBNF

    return str(JSON_GBNF)  # its root is an object


def grammar_for(response_format: Any) -> str | None:
    """The GBNF a request's `response_format` asks for (None: free text)."""
    if isinstance(response_format, ResponseFormatJsonSchema):
        return schema_grammar(response_format.json_schema.schema_)
    if isinstance(response_format, ResponseFormatJsonObject):
        return _json_object_grammar()
    return None


def structured_instruction(response_format: Any) -> str | None:
    """A line for the prompt, so the model's words suit the shape the grammar holds it to."""
    if isinstance(response_format, ResponseFormatJsonSchema):
        schema = json.dumps(response_format.json_schema.schema_, separators=(",", ":"), ensure_ascii=False)
        return f"Answer with a JSON object that matches this JSON Schema: {schema}"
    if isinstance(response_format, ResponseFormatJsonObject):
        return "Answer with a JSON object."
    return None
