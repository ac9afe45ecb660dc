"""What Conductor knows about a provider, in one record per provider: `ProviderSpec`.

Each built-in provider module defines its `SPEC` next to its class, and everything that
needs to know about providers reads the specs: the registry (which class, which key is
required), `Settings` (the key and base-URL variables), request validation and the gateway's
schema (provider names), the playground (display names, key fields), Get code (the SDK and
its call) and AUTO (what each provider can do).

Reading the specs must not import an SDK (`import anthropic` alone takes seconds): provider
modules import their SDK inside the functions that use it, so importing a module for its
`SPEC` costs little more than `providers/base.py` (tested in tests/test_provider_specs.py).

A provider that is not built in (a plugin, a test's toy) joins with `register(SPEC)`.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from typing import Any, Literal

__all__ = [
    "SAMPLING_SETTINGS",
    "FEATURE_SETTINGS",
    "Capabilities",
    "ModelSpec",
    "CodeStyle",
    "ProviderSpec",
    "BUILTIN_MODULES",
    "provider_specs",
    "get_spec",
    "register",
    "unregister",
    "registered",
    "specs_version",
    "on_change",
    "describe",
    "provider_variables",
]

#: ChatRequest fields that tune generation and that not every provider can honour. Where a
#: provider cannot, the request's `unsupported` says whether they are ignored or rejected.
SAMPLING_SETTINGS: tuple[str, ...] = ("temperature", "top_p", "stop", "seed", "presence_penalty", "frequency_penalty")
#: Fields that change what comes back: never silently dropped (a provider without them answers 400).
#: A provider that lacks `extra_params` answers 400 naming each parameter in it (but those every
#: provider honours through Conductor's own fields: `models.SPELLED_BY_CLIENT`).
FEATURE_SETTINGS: tuple[str, ...] = (
    "response_format",
    "tools",
    "tool_choice",
    "parallel_tool_calls",
    "logit_bias",
    "logprobs",
    "top_logprobs",
    "extra_params",
)

#: The built-in providers' modules, in the order people see them. Adding a built-in provider
#: is one module (its class and its `SPEC`) and its name here.
BUILTIN_MODULES: tuple[str, ...] = (
    "conductor_core.providers.local",
    "conductor_core.providers.gemini",
    "conductor_core.providers.openai_compat",
    "conductor_core.providers.anthropic",
)

StructuredOutput = Literal["json_object", "json_schema"]
Snippet = Literal["openai", "openai_compatible", "anthropic", "gemini"]
_NAME = re.compile(r"[a-z][a-z0-9_]{0,31}")
_ENV_VAR = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class Capabilities:
    """What a provider passes on to its API (and so what AUTO may send it). A setting it has
    not is ignored (sampling) or refused with a 400 naming it (features): see
    `BaseProvider.unsupported`."""

    streaming: bool = True
    #: The sampling settings it passes on (a subset of SAMPLING_SETTINGS; seed among them).
    sampling: frozenset[str] = frozenset()
    tools: bool = False  # function tools, and tool calls and results in the conversation
    tool_choice: bool = False  # "auto", "none", "required" or a named function
    parallel_tool_calls: bool = False
    structured_output: frozenset[StructuredOutput] = frozenset()  # response_format kinds
    logprobs: bool = False  # logprobs and top_logprobs
    logit_bias: bool = False
    #: OpenAI parameters Conductor has no field for (`reasoning_effort`, `service_tier`...), sent
    #: as the client wrote them.
    extra_params: bool = False
    #: The API takes images (and PDFs) in user messages (`ChatMessage.parts`).
    vision: bool = False

    def __post_init__(self) -> None:
        unknown = set(self.sampling) - set(SAMPLING_SETTINGS)
        if unknown:
            raise ValueError(f"unknown sampling settings {sorted(unknown)}; known: {', '.join(SAMPLING_SETTINGS)}")
        if (self.tool_choice or self.parallel_tool_calls) and not self.tools:
            raise ValueError("tool_choice and parallel_tool_calls need tools")

    @property
    def seed(self) -> bool:
        return "seed" in self.sampling

    def settings(self) -> frozenset[str]:
        """The optional ChatRequest fields these capabilities pass on."""
        flags = {
            "tools": self.tools,
            "tool_choice": self.tool_choice,
            "parallel_tool_calls": self.parallel_tool_calls,
            "response_format": bool(self.structured_output),
            "logprobs": self.logprobs,
            "top_logprobs": self.logprobs,
            "logit_bias": self.logit_bias,
            "extra_params": self.extra_params,
        }
        return frozenset(self.sampling) | {name for name, on in flags.items() if on}


@dataclass(frozen=True)
class ModelSpec:
    """A model a provider offers by default."""

    id: str
    #: The provider's announced shutdown date (None: none announced). Requests to a model past
    #: it fail; a test fails first (tests/test_provider_specs.py).
    retires: date | None = None
    #: Fields the provider adds to each call to this model (for OpenAI's GPT-6 Luna,
    #: reasoning_effort "none": only then does Chat Completions take temperature, top_p,
    #: logprobs and function tools on it). Get code writes them too.
    request_fields: Mapping[str, Any] = field(default_factory=dict, hash=False)
    #: What a person should know (shown nowhere yet; for whoever updates the list).
    note: str = ""

    def retired(self, today: date) -> bool:
        return self.retires is not None and today >= self.retires


@dataclass(frozen=True)
class CodeStyle:
    """How Get code writes a call to this provider with its own SDK."""

    package: str | None = None  # what `pip install` needs, e.g. "google-genai"
    snippet: Snippet | None = None  # None: no SDK snippet (the embedded model runs in Conductor)


@dataclass(frozen=True)
class ProviderSpec:
    """One provider, as everything outside its module needs to know it."""

    name: str  # what requests say: provider="gemini", model="gemini/..."
    display_name: str  # what people read
    module: str
    class_name: str
    default_model: str
    models: tuple[ModelSpec, ...]
    capabilities: Capabilities
    #: The variables holding its key, in the order they are read (the first is the one to
    #: suggest). Empty: it needs no key.
    key_env_vars: tuple[str, ...] = ()
    base_url_env_vars: tuple[str, ...] = ()
    price_provider_id: str | None = None  # genai-prices provider id: None means cost unknown
    #: Where the API lists its models, for a person told that a model was not found.
    models_endpoint: str = "GET /v1/models"
    code: CodeStyle = field(default_factory=CodeStyle)

    def __post_init__(self) -> None:
        if not _NAME.fullmatch(self.name) or self.name == "auto":
            raise ValueError(f"provider name {self.name!r}: lower-case letters, digits and _, not 'auto'")
        for var in (*self.key_env_vars, *self.base_url_env_vars):
            if not _ENV_VAR.fullmatch(var):
                raise ValueError(f"{self.name}: {var!r} is not an environment variable name")
        ids = [m.id for m in self.models]
        if len(set(ids)) != len(ids):
            raise ValueError(f"{self.name}: a model is listed twice in {ids}")
        if self.default_model not in ids:
            raise ValueError(f"{self.name}: the default model {self.default_model!r} is not among {ids}")

    # --- names derived from the spec (one place each) -------------------------------------

    @property
    def key_setting(self) -> str | None:
        """The Settings name of its key (`Settings(gemini_api_key=...)`, conductor.toml)."""
        return f"{self.name}_api_key" if self.key_env_vars else None

    @property
    def base_url_setting(self) -> str | None:
        return f"{self.name}_base_url" if self.base_url_env_vars else None

    @property
    def needs_key(self) -> bool:
        return bool(self.key_env_vars)

    @property
    def key_hint(self) -> str:
        """What a person sets to enable it: "set GEMINI_API_KEY (or GOOGLE_API_KEY)"."""
        if not self.key_env_vars:
            return ""
        first, *others = self.key_env_vars
        return f"set {first}" + (f" (or {', '.join(others)})" if others else "")

    @property
    def model_ids(self) -> list[str]:
        return [m.id for m in self.models]

    def model(self, model_id: str) -> ModelSpec | None:
        return next((m for m in self.models if m.id == model_id), None)

    def retired_models(self, today: date) -> list[ModelSpec]:
        return [m for m in self.models if m.retired(today)]

    def provider_class(self) -> type[Any]:
        """The class (importing its module; the SDK itself loads when a provider is built)."""
        return getattr(importlib.import_module(self.module), self.class_name)


# --- the registry -----------------------------------------------------------------------------

_lock = threading.Lock()
_builtin: dict[str, ProviderSpec] | None = None
_registered: dict[str, ProviderSpec] = {}
_version = 0
_listeners: list[Callable[[], None]] = []


def _load_builtins() -> dict[str, ProviderSpec]:
    global _builtin
    if _builtin is None:
        found: dict[str, ProviderSpec] = {}
        for module in BUILTIN_MODULES:
            spec = importlib.import_module(module).SPEC
            if spec.module != module:
                raise ValueError(f"{module}.SPEC names another module ({spec.module})")
            found[spec.name] = spec
        _builtin = found
    return _builtin


def provider_specs() -> dict[str, ProviderSpec]:
    """Every provider's spec by name: the built-ins in display order, then registered ones."""
    builtin = _load_builtins()
    with _lock:
        return {**builtin, **_registered}


def get_spec(name: str) -> ProviderSpec | None:
    return provider_specs().get(name)


def specs_version() -> int:
    """Changes whenever a spec is registered or unregistered (for caches built from specs)."""
    return _version


def on_change(listener: Callable[[], None]) -> None:
    """Call `listener` whenever a spec is registered or unregistered (caches built from specs)."""
    with _lock:
        if listener not in _listeners:
            _listeners.append(listener)


def _changed() -> None:
    global _version
    _version += 1
    for listener in list(_listeners):
        listener()


def register(spec: ProviderSpec) -> ProviderSpec:
    """Add a provider that is not built in: from now on the registry builds it, Settings reads
    its variables, requests may name it, and the playground and Get code show it."""
    if spec.name in _load_builtins():
        raise ValueError(f"{spec.name!r} is a built-in provider")
    with _lock:
        _registered[spec.name] = spec
    _changed()
    return spec


def unregister(name: str) -> None:
    with _lock:
        removed = _registered.pop(name, None)
    if removed is not None:
        _changed()


@contextmanager
def registered(spec: ProviderSpec) -> Iterator[ProviderSpec]:
    """`register(spec)` for the duration of a block (tests)."""
    register(spec)
    try:
        yield spec
    finally:
        unregister(spec.name)


def provider_variables() -> tuple[str, ...]:
    """Every variable a provider reads (keys and base URLs): what a test or a benchmark clears
    so that a developer's own keys never reach it."""
    found = (v for spec in provider_specs().values() for v in (*spec.key_env_vars, *spec.base_url_env_vars))
    return tuple(dict.fromkeys(found))


def describe() -> str:
    """Every provider's spec as text a person reads (`python -m conductor_core.providers`)."""
    lines = []
    for spec in provider_specs().values():
        key = spec.key_hint or "no key"
        url = f", base URL from {' or '.join(spec.base_url_env_vars)}" if spec.base_url_env_vars else ""
        lines.append(f"{spec.name} ({spec.display_name}): {key}{url}")
        for model in spec.models:
            marks = [m for m in ("default" if model.id == spec.default_model else "", _retires(model)) if m]
            lines.append(f"  {model.id}" + (f" ({', '.join(marks)})" if marks else ""))
    return "\n".join(lines)


def _retires(model: ModelSpec) -> str:
    return f"retires {model.retires.isoformat()}" if model.retires else ""
