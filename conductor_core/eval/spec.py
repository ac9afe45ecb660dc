"""An eval file: the experiment `python -m conductor_core.eval FILE` runs, in YAML or JSON.

    name: Support replies                 # the experiment's name (default: the file's name)
    prompt:
      system: You answer customers of Acme in one short paragraph.   # optional, no {{variables}}
      user: "A customer writes: {{message}}"
    dataset: support.csv                  # relative to this file: CSV, TSV, JSONL, JSON, or a zip with images
                                          # ({ref: NAME@VERSION}: a saved dataset; VERSION may be latest)
    variants:                             # 2 to 4; each is a Variant (conductor_core/workbench/variants.py)
      - target: openai/gpt-4o-mini        # provider/model (or `provider:` and `model:`)
        temperature: 0
      - target: anthropic
        max_tokens: 300
        thresholds: [p50_latency_ms <= 3000]   # this variant only
    checks:                               # each a Check (workbench/experiments.py), plus an optional name
      - kind: contains                    # against the dataset's `expected` column
        name: right_answer
    thresholds:                           # every variant (thresholds.py)
      - pass_rate >= 0.9
      - pass_rate[right_answer] >= 80%
    concurrency: 4                        # calls at once per provider, or {openai: 8, "*": 2}
    store:                                # optional; default: the playground's settings
      database_url: postgresql://...      # (CONDUCTOR_DATABASE_URL), else its SQLite file
      data_dir: .conductor                # (CONDUCTOR_DATA_DIR), relative to this file

`prompt` may also be the user message alone (a string), or `messages:` (one optional system
message, then one user message). A reference to a saved prompt (`prompt: NAME@LABEL`) is read
by `resolve_prompt` from the playground's saved prompts.

A file that cannot run gets one error per problem, each with its line and field and what to
change (`EvalFileError`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from ..workbench.dataset_store import DatasetStore
from ..workbench.datasets import Dataset
from ..workbench.experiments import Check
from ..workbench.prompts import PromptError, PromptStore
from ..workbench.variants import Variant
from .thresholds import Threshold

__all__ = [
    "EvalFileError",
    "Problem",
    "Document",
    "EvalSpec",
    "PromptSpec",
    "StoreSpec",
    "read_document",
    "parse_store",
    "parse_spec",
    "resolve_prompt",
    "resolve_dataset",
    "DatasetSpec",
]

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing to change in the file: where (field path, line) and what."""

    message: str
    path: Path_ = ()
    line: int | None = None

    @property
    def field(self) -> str:
        out = ""
        for part in self.path:
            out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
        return out

    def text(self, filename: str) -> str:
        where = f"{filename}, line {self.line}" if self.line else filename
        return f"{where}: {self.field + ': ' if self.path else ''}{self.message}"


class EvalFileError(ValueError):
    """The eval file must change; `problems` says where and how (one line each)."""

    def __init__(self, filename: str, problems: Sequence[Problem]) -> None:
        self.filename = filename
        self.problems = list(problems)
        super().__init__("\n".join(p.text(filename) for p in self.problems))


# --- the file's text, and where each value is in it ------------------------------------------


@dataclass(frozen=True)
class Document:
    path: Path
    data: dict[str, Any]
    _tree: Any  # PyYAML's node tree (a JSON file is YAML too), for line numbers; None if unavailable

    @property
    def folder(self) -> Path:
        return self.path.parent

    def line(self, path: Path_) -> int | None:
        """The line of the value at `path`, or of the deepest part of it that exists (a
        missing field: its parent mapping's line)."""
        node = self._tree
        if node is None:
            return None
        found = node.start_mark.line + 1
        for part in path:
            child = None
            if isinstance(node, yaml.MappingNode):
                for key, value in node.value:
                    if key.value == str(part):
                        found = key.start_mark.line + 1
                        child = value
                        break
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                child = node.value[part]
                found = child.start_mark.line + 1
            if child is None:
                break
            node = child
        return found

    def problem(self, message: str, path: Path_ = ()) -> Problem:
        return Problem(message, path, self.line(path))

    def error(self, message: str, path: Path_ = ()) -> EvalFileError:
        return EvalFileError(self.path.name, [self.problem(message, path)])


def read_document(path: Path) -> Document:
    """The file's data (a mapping), JSON when it ends in .json, else YAML."""
    name = path.name
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise EvalFileError(name, [Problem(f"no such file: {path}")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise EvalFileError(name, [Problem(f"cannot read it ({exc}); save it as UTF-8 text")]) from None
    try:
        if path.suffix.lower() == ".json":
            data = json.loads(text)
        else:
            data = yaml.safe_load(text)
    except json.JSONDecodeError as exc:
        raise EvalFileError(
            name, [Problem(f"not valid JSON: {exc.msg} (column {exc.colno})", line=exc.lineno)]
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc)
        raise EvalFileError(
            name, [Problem(f"not valid YAML: {problem}", line=mark.line + 1 if mark is not None else None)]
        ) from None
    if not isinstance(data, dict):
        raise EvalFileError(
            name, [Problem("an eval file is a mapping with prompt, dataset, variants, checks and thresholds")]
        )
    try:
        tree = yaml.compose(text)
    except yaml.YAMLError:  # valid JSON that PyYAML reads otherwise (tabs): no line numbers
        tree = None
    return Document(path, data, tree)


# --- the file's parts ----------------------------------------------------------------------

_REFERENCE = re.compile(r"^(?P<name>[A-Za-z0-9][\w.-]*)@(?P<label>[\w.-]+)$")


class PromptSpec(BaseModel):
    """The user message template (with {{variables}}) and an optional system message, or a
    reference to a saved prompt (`ref: NAME@LABEL`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    user: str | None = Field(default=None, description="The user message, with {{variables}} from the dataset.")
    system: str | None = Field(default=None, description="Sent first to every variant without a system of its own.")
    ref: str | None = Field(default=None, description="NAME@LABEL of a saved prompt.")

    @model_validator(mode="before")
    @classmethod
    def _forms(cls, data: Any) -> Any:
        if isinstance(data, str):
            return {"ref": data} if _REFERENCE.match(data.strip()) else {"user": data}
        if isinstance(data, dict) and "messages" in data:
            rest = {k: v for k, v in data.items() if k != "messages"}
            return {**rest, **_from_messages(data["messages"])}
        return data

    @model_validator(mode="after")
    def _one_source(self) -> PromptSpec:
        if self.ref is not None:
            if self.user is not None or self.system is not None:
                raise ValueError("give either ref (a saved prompt) or user/system, not both")
            if not _REFERENCE.match(self.ref.strip()):
                raise ValueError(f"ref {self.ref!r} is not NAME@LABEL (e.g. support-reply@production)")
        elif not (self.user or "").strip():
            raise ValueError("the prompt needs a user message: prompt: {user: 'Answer {{question}}'}")
        if self.system is not None and "{{" in self.system:
            raise ValueError(
                "the system message cannot use {{variables}} (only the user message is filled from each row); "
                "move them into the user message"
            )
        return self


def _from_messages(messages: Any) -> dict[str, Any]:
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise ValueError("messages is a list of {role: system|user, content: ...}")
    roles = [m.get("role") for m in messages]
    if roles not in (["user"], ["system", "user"]):
        raise ValueError(
            f"messages are {roles}; an eval sends one optional system message, then one user message "
            "(put examples into the user message)"
        )
    contents = {m["role"]: m.get("content") for m in messages}
    return {"user": contents["user"], **({"system": contents["system"]} if "system" in contents else {})}


class DatasetSpec(BaseModel):
    """The rows: a file (`path`, relative to the eval file; `dataset: FILE` is short for it), or a
    named dataset at a version (`ref: NAME@VERSION`)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = None
    ref: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _short(cls, data: Any) -> Any:
        return {"path": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _one_source(self) -> DatasetSpec:
        if (self.path is None) == (self.ref is None):
            raise ValueError("give the dataset's path (dataset: rows.csv) or a ref (dataset: {ref: NAME@VERSION})")
        if self.ref is not None and not _REFERENCE.match(self.ref.strip()):
            raise ValueError(f"ref {self.ref!r} is not NAME@VERSION (e.g. invoices@3)")
        return self


class StoreSpec(BaseModel):
    """Where the run is kept; unset: the playground's own settings (CONDUCTOR_DATABASE_URL, CONDUCTOR_DATA_DIR)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    database_url: str | None = None
    data_dir: str | None = None

    def settings(self, folder: Path) -> dict[str, Any]:
        """The settings it overrides (a relative data_dir is relative to the eval file)."""
        found: dict[str, Any] = {}
        if self.database_url:
            found["database_url"] = self.database_url
        if self.data_dir:
            found["data_dir"] = (folder / self.data_dir).resolve()
        return found


_VARIANT_FIELDS = frozenset(Variant.model_fields)


def _variant_entry(data: Any) -> Any:
    """A variant as written: `target: provider/model` for provider and model; no unknown field
    (a typo would otherwise be ignored and the default used)."""
    if not isinstance(data, dict):
        raise ValueError("a variant is a mapping such as {target: openai/gpt-4o-mini, temperature: 0}")
    data = dict(data)
    target = data.pop("target", None)
    if target is not None:
        if "provider" in data or "model" in data:
            raise ValueError("give target (provider/model) or provider and model, not both")
        provider, _, model = str(target).partition("/")
        data["provider"] = provider
        if model:
            data["model"] = model
    unknown = sorted(set(data) - _VARIANT_FIELDS)
    if unknown:
        raise ValueError(
            f"unknown field {', '.join(unknown)}; a variant takes target (or provider, model), thresholds, "
            f"{', '.join(sorted(_VARIANT_FIELDS - {'provider', 'model'}))}"
        )
    return data


def _listed(value: Any) -> Any:
    """One threshold or check written alone, without a list around it."""
    return [value] if isinstance(value, (str, dict)) else value


class EvalSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str | None = None
    prompt: PromptSpec
    dataset: DatasetSpec = Field(description="The rows' file, relative to the eval file (or a named dataset).")
    variants: list[Annotated[Variant, BeforeValidator(_variant_entry)]] = Field(min_length=2, max_length=4)
    checks: Annotated[list[Check], BeforeValidator(_listed)] = Field(default_factory=list)
    thresholds: Annotated[list[Threshold], BeforeValidator(_listed)] = Field(
        default_factory=list, description="Every variant must meet these."
    )
    concurrency: int | dict[str, int] | None = Field(default=None, description="Calls at once per provider.")
    store: StoreSpec = Field(default_factory=StoreSpec)
    # From each variant's and check's own entry (popped before validation; see _entries):
    variant_thresholds: list[Annotated[list[Threshold], BeforeValidator(_listed)]] = Field(default_factory=list)
    check_names: list[str | None] = Field(default_factory=list)

    @model_validator(mode="before")
    @classmethod
    def _entries(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "variant_thresholds" in data or "check_names" in data:
            raise ValueError("variant_thresholds and check_names are read from the variants and checks")
        variants = data.get("variants")
        if isinstance(variants, list):
            kept = [v.get("thresholds", []) if isinstance(v, dict) else [] for v in variants]
            data["variants"] = [
                {k: x for k, x in v.items() if k != "thresholds"} if isinstance(v, dict) else v for v in variants
            ]
            data["variant_thresholds"] = kept
        checks = _listed(data.get("checks"))
        if isinstance(checks, list):
            checks = [{"kind": c} if isinstance(c, str) else c for c in checks]
            data["check_names"] = [c.get("name") if isinstance(c, dict) else None for c in checks]
            data["checks"] = [{k: x for k, x in c.items() if k != "name"} if isinstance(c, dict) else c for c in checks]
        return data

    def thresholds_of(self, variant: int) -> list[Threshold]:
        """The thresholds variant `variant` must meet: every variant's, then its own."""
        own = self.variant_thresholds[variant] if variant < len(self.variant_thresholds) else []
        return [*self.thresholds, *own]

    def check_index(self, reference: str) -> int | None:
        """Which check a threshold names: by name, by label, or by number (1-based)."""
        for index, name in enumerate(self.check_names):
            if name == reference:
                return index
        for index, check in enumerate(self.checks):
            if check.label == reference:
                return index
        if reference.isdigit() and 1 <= int(reference) <= len(self.checks):
            return int(reference) - 1
        return None

    def concurrency_limits(self) -> dict[str, int] | None:
        if isinstance(self.concurrency, int):
            return {"*": self.concurrency}
        return self.concurrency


def _located(loc: tuple[Any, ...]) -> Path_:
    """A validation error's location as the file has it (a variant's own thresholds are
    written inside the variant; a Variant's validator adds no part for itself)."""
    parts = [p for p in loc if isinstance(p, (str, int))]
    if parts[:1] == ["variant_thresholds"] and len(parts) >= 2:
        return ("variants", parts[1], "thresholds", *parts[2:])
    if parts[:1] == ["check_names"] and len(parts) >= 2:
        return ("checks", parts[1], "name", *parts[2:])
    # Pydantic names the branch of a union (`int`, `dict[str,int]`) or a model's validator: not the file's words.
    return tuple(p for p in parts if not (isinstance(p, str) and ("[" in p or p in ("int", "str", "function-after"))))


_HINTS = {
    "missing": "add it",
    "extra_forbidden": "remove it, or check its spelling",
}


def _problems(doc: Document, error: ValidationError) -> list[Problem]:
    problems: list[Problem] = []
    seen: set[tuple[Path_, str]] = set()
    for item in error.errors(include_url=False):
        path = _located(tuple(item["loc"]))
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in _HINTS:
            message = f"{'unknown field' if item['type'] == 'extra_forbidden' else 'required'}: {_HINTS[item['type']]}"
            if item["type"] == "missing" and path == ("variants",):
                message = "required: list 2 to 4 variants, e.g. - target: openai/gpt-4o-mini"
        if (path, message) in seen:
            continue  # a union reports each branch; once is enough
        seen.add((path, message))
        problems.append(doc.problem(message, path))
    return problems


def parse_store(doc: Document) -> StoreSpec:
    """The `store` part alone: the settings come from it before anything else is read."""
    try:
        return StoreSpec.model_validate(doc.data.get("store") or {})
    except ValidationError as error:
        raise EvalFileError(
            doc.path.name, [doc.problem(p.message, ("store", *p.path)) for p in _problems(doc, error)]
        ) from None


def parse_spec(doc: Document) -> EvalSpec:
    """The whole file, checked, each problem with its line and field: every problem of its
    shape at once, then (in a file of the right shape) the checks its thresholds name."""
    try:
        spec = EvalSpec.model_validate(doc.data)
    except ValidationError as error:
        raise EvalFileError(doc.path.name, _problems(doc, error)) from None
    problems = []
    for where, thresholds in [
        (("thresholds",), spec.thresholds),
        *((("variants", i, "thresholds"), own) for i, own in enumerate(spec.variant_thresholds)),
    ]:
        for index, threshold in enumerate(thresholds):
            if threshold.metric == "pass_rate" and not spec.checks:
                problems.append(
                    doc.problem("a pass rate needs checks: add checks (e.g. - kind: contains)", (*where, index))
                )
            elif threshold.check is not None and spec.check_index(threshold.check) is None:
                known = [n or c.label for n, c in zip(spec.check_names, spec.checks, strict=False)]
                problems.append(
                    doc.problem(
                        f"no check {threshold.check!r}; name one of: {', '.join(known) or 'none'} (or its number)",
                        (*where, index),
                    )
                )
    if problems:
        raise EvalFileError(doc.path.name, problems)
    return spec


def resolve_dataset(reference: str, store: DatasetStore) -> tuple[Dataset, tuple[str, int]]:
    """A saved dataset at a version (`invoices@3`, or `invoices@latest`) as its rows and the
    (name, version) the run records."""
    match = _REFERENCE.match(reference.strip())
    if match is None:  # DatasetSpec has checked it; a caller that did not gets the same words
        raise ValueError(f"ref {reference!r} is not NAME@VERSION (e.g. invoices@3)")
    name, label = match["name"], match["label"]
    if label != "latest" and not label.isdigit():
        raise ValueError(f"ref {reference!r}: a dataset version is a number or 'latest' (e.g. {name}@3)")
    chosen = store.version(name, None if label == "latest" else int(label))
    return store.load(chosen.name, chosen.version), (chosen.name, chosen.version)


def resolve_prompt(reference: str, store: PromptStore) -> tuple[PromptSpec, str]:
    """A saved prompt at a label or version (`support-reply@production`, `support-reply@3`) as
    the PromptSpec it amounts to, and the version's id (which the run records).

    An eval sends one optional system message and one user message filled from each row, so a
    prompt with earlier turns, or {{variables}} in its system prompt, is refused, naming why."""
    try:
        version = store.resolve(reference.strip())
    except PromptError as error:
        raise ValueError(str(error)) from None
    messages = version.content.messages
    if len(messages) != 1 or messages[0].role != "user":
        raise ValueError(
            f"prompt {version.reference} has {len(messages)} message(s) ({', '.join(m.role for m in messages)}); "
            "an eval sends one user message filled from each row: save a version with one user message"
        )
    try:
        return PromptSpec(user=messages[0].content, system=version.content.system), version.id
    except ValidationError as error:
        raise ValueError(
            f"prompt {version.reference}: {error.errors()[0]['msg'].removeprefix('Value error, ')}"
        ) from None
