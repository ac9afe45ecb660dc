"""Serving a saved prompt: `model: "prompt:NAME@LABEL"` (or `@3`, a version; bare `prompt:NAME`
is the `production` label) on ``POST /v1/chat/completions``.

The prompt (workbench/prompts.py) is rendered with the request's `variables` (an object of
name -> value; with the openai client, ``extra_body={"variables": {...}}``) and routed with its
settings. What the request adds, and what wins:

* messages: the prompt's system prompt and messages first, then the request's own messages;
* settings: the prompt's target (provider/model, or `auto` with its policy), temperature, max
  tokens, top_p, stop, seed, output schema (`response_format`) and tools (with their
  tool_choice) are used, except where the request sets one explicitly (a non-null value): then
  the request's wins (`max_tokens` or `max_completion_tokens` in the request replaces the
  prompt's max tokens; the request's `tools` replace the prompt's tools and tool_choice);
* the label is read on every request: moving it serves the new version at once; the answer's
  `x-conductor-prompt` header names the version served (`support-reply@2`);
* the core's request carries the prompt's name (`ChatRequest.prompt_name`, `with_prompt`): AUTO's
  `evaluated` policy routes by how targets did on that prompt in the Experiments page's runs.

A missing variable is a 400 naming every missing one (param `variables`); an unknown prompt,
version or label a 404 naming what exists (param `model`). `variables` with another model are ignored (never
sent upstream), as `policy` is with a model other than `auto`.
The rendered request then goes through the same checks as any other.
"""

from __future__ import annotations

from typing import Any

import anyio

from conductor_core.models import ChatRequest
from conductor_core.routing import AsyncConductor
from conductor_core.workbench.prompts import (
    PromptError,
    PromptNotFoundError,
    PromptStore,
    PromptVariableError,
    PromptVersion,
)

from .errors import ApiError

__all__ = ["PREFIX", "PROMPT_HEADER", "prompt_reference", "apply_prompt", "prompted", "with_prompt"]

PREFIX = "prompt:"
#: Names the version a prompt request was served with (`support-reply@2`), on every answer.
PROMPT_HEADER = b"x-conductor-prompt"


def prompt_reference(data: Any) -> str | None:
    """The prompt a request body names (`NAME@LABEL`), or None for an ordinary model."""
    if not isinstance(data, dict):
        return None
    model = data.get("model")
    if isinstance(model, str) and model.strip().lower().startswith(PREFIX):
        return model.strip()[len(PREFIX) :].strip()
    return None


def _store(app: Any, core: AsyncConductor) -> PromptStore:
    """The app's prompt store, made on first use (its request log's database)."""
    store = getattr(app.state, "prompt_store", None)
    if store is None or store.log is not core.log:
        store = app.state.prompt_store = PromptStore(core.log)
    return store


def _explicit(data: dict[str, Any], name: str) -> bool:
    return data.get(name) is not None


def apply_prompt(data: dict[str, Any], version: PromptVersion) -> dict[str, Any]:
    """The request body with the prompt rendered in front and its settings where the client set
    none (the module docstring says which win). Pure: tests call it directly."""
    variables = data.get("variables")
    if variables is not None and not isinstance(variables, dict):
        raise ApiError(400, "validation_error", "variables must be an object of name -> value", param="variables")
    values = {str(k): v for k, v in (variables or {}).items()}
    try:
        system, messages = version.render(values)
    except PromptVariableError as error:
        raise ApiError(
            400,
            "validation_error",
            f"{error}: send them in variables (with the openai client: extra_body={{'variables': {{...}}}})",
            param="variables",
        ) from None
    own = data.get("messages")
    rendered: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    rendered += [{"role": m.role.value, "content": m.content} for m in messages]
    out = {k: v for k, v in data.items() if k != "variables"}
    out["messages"] = rendered + (own if isinstance(own, list) else [])
    variant = version.content.variant
    out["model"] = variant.target
    settings: dict[str, Any] = {
        "temperature": variant.temperature,
        "top_p": variant.top_p,
        "stop": list(variant.stop) if variant.stop else None,
        "seed": variant.seed,
        "response_format": variant.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)
        if variant.response_format is not None
        else None,
    }
    if variant.provider == "auto" and variant.policy is not None:
        settings["policy"] = variant.policy.value
    for name, value in settings.items():
        if value is not None and not _explicit(data, name):
            out[name] = value
    if not (_explicit(data, "max_tokens") or _explicit(data, "max_completion_tokens")):
        out["max_tokens"] = variant.max_tokens
    if variant.tools and not (_explicit(data, "tools") or _explicit(data, "functions")):
        out["tools"] = [tool.model_dump(mode="json", exclude_none=True) for tool in variant.tools]
        if variant.tool_choice is not None and not _explicit(data, "tool_choice"):
            choice = variant.tool_choice
            out["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump(mode="json")
    return out


def _resolved(app: Any, core: AsyncConductor, reference: str) -> PromptVersion:
    try:
        return _store(app, core).resolve(reference, with_labels=False)  # one query
    except PromptNotFoundError as error:
        raise ApiError(404, "prompt_not_found", str(error), param="model") from None
    except PromptError as error:
        raise ApiError(
            400,
            "validation_error",
            f"{error} (model 'prompt:NAME@LABEL' serves a saved prompt: 'prompt:NAME', 'prompt:NAME@staging' "
            "or 'prompt:NAME@3')",
            param="model",
        ) from None


async def prompted(app: Any, core: AsyncConductor, reference: str, data: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """`data` with the prompt `reference` names applied, and the version it is (`NAME@2`). The
    prompt is read in a worker thread: the store's database calls block."""
    version = await anyio.to_thread.run_sync(_resolved, app, core, reference)
    return apply_prompt(data, version), version.reference


def with_prompt(request: ChatRequest, served: str) -> ChatRequest:
    """The core's request naming the prompt it renders (`served` is the version's reference,
    `NAME@2`), for AUTO's `evaluated` policy."""
    return request.model_copy(update={"prompt_name": served.rsplit("@", 1)[0]})
