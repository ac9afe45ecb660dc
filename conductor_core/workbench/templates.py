"""Prompt templates: text with `{{variable}}` placeholders, filled from a dataset row.

A small, exact engine of our own rather than Jinja2 or Mustache: a prompt is text a person
wrote (code, JSON, LaTeX, other templating languages), and the only thing we may change in
it is a placeholder. Jinja2 would also read `{% ... %}` and `{# ... #}` in a prompt and
evaluate expressions (`{{ name.upper() }}`); Mustache HTML-escapes values and has sections.
Here a template is literal text plus placeholders, and nothing is ever evaluated.

The rules:

* `{{name}}` and `{{ name }}` are the same placeholder. A name is any text without braces or
  line breaks, trimmed (dataset columns such as "first name" or "expected-output" work).
* `\\{{` is a literal `{{` (the backslash goes). Nothing else is an escape: a lone `{`, `}`
  or `}}`, and a backslash anywhere else, stay as written.
* An unescaped `{{` that does not open a well-formed placeholder is an error that says where
  (line and column) and how to write a literal `{{`: a typo never reaches a model silently.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Template", "TemplateError", "MissingVariableError"]

# One token at a time: an escaped `{{`, a placeholder, or a bare `{{` (an error).
_TOKEN = re.compile(r"\\\{\{|\{\{([^{}\n]*)\}\}|\{\{")


class TemplateError(ValueError):
    """The template (or a row it is rendered with) must change; the message says how."""


class MissingVariableError(TemplateError):
    def __init__(self, variable: str, row: int | None, available: list[str]) -> None:
        self.variable = variable
        self.row = row
        where = f"row {row} has" if row is not None else "there is"
        columns = ", ".join(available) if available else "none"
        super().__init__(f"{where} no value for {{{{{variable}}}}} (columns: {columns})")


@dataclass(frozen=True)
class _Part:
    text: str  # literal text, or the variable's name
    variable: bool


def _position(source: str, index: int) -> str:
    line = source.count("\n", 0, index) + 1
    column = index - (source.rfind("\n", 0, index) + 1) + 1
    return f"line {line}, column {column}"


def _parse(source: str) -> tuple[_Part, ...]:
    parts: list[_Part] = []
    literal: list[str] = []
    at = 0
    for match in _TOKEN.finditer(source):
        literal.append(source[at : match.start()])
        at = match.end()
        token = match.group(0)
        if token == "\\{{":
            literal.append("{{")
            continue
        name = match.group(1)
        if name is None or not name.strip():
            problem = "an empty placeholder" if name is not None else "'{{' that does not open a placeholder"
            raise TemplateError(
                f"{_position(source, match.start())}: {problem}; write {{{{name}}}} for a variable, "
                "or \\{{ for a literal '{{'"
            )
        if literal:
            parts.append(_Part("".join(literal), False))
            literal = []
        parts.append(_Part(name.strip(), True))
    literal.append(source[at:])
    if any(literal):
        parts.append(_Part("".join(literal), False))
    return tuple(parts)


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    import json

    # Numbers, booleans and nested values from JSONL read as JSON, the way they were written.
    return json.dumps(value, ensure_ascii=False)


class Template:
    """A parsed prompt template. Parsing checks the syntax once; `render` fills a row."""

    def __init__(self, source: str) -> None:
        self.source = source
        self._parts = _parse(source)

    def __repr__(self) -> str:
        return f"Template({self.source!r})"

    @property
    def variables(self) -> list[str]:
        """The variables the template uses, in order of first use, each once."""
        return list(dict.fromkeys(p.text for p in self._parts if p.variable))

    def missing(self, columns: list[str] | tuple[str, ...] | set[str]) -> list[str]:
        """Variables no column provides (checked once for a whole dataset)."""
        have = set(columns)
        return [name for name in self.variables if name not in have]

    def render(self, values: Mapping[str, Any], *, row: int | None = None) -> str:
        """The prompt for one row. A variable the row lacks (or holds as None) raises
        `MissingVariableError` naming the variable and `row` (1-based, as a person counts)."""
        out: list[str] = []
        for part in self._parts:
            if not part.variable:
                out.append(part.text)
                continue
            value = values.get(part.text)
            if value is None:
                raise MissingVariableError(part.text, row, [str(k) for k in values])
            out.append(_as_text(value))
        return "".join(out)
