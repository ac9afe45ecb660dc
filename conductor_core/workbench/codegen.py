"""Get code: the same request as a program a person can run elsewhere — Python with the
`openai` client against Conductor's gateway, Python with the provider's own SDK (sending what
Conductor's provider sends), and curl against the gateway.

    target = code_target(conductor.settings, "openai")             # or with an EndpointConfig
    snippets(request, target)    # {"python_gateway": ..., "python_sdk": ... | None, "curl": ...}

No snippet ever holds a key: each reads it from an environment variable (the provider's own,
e.g. OPENAI_API_KEY, or CONDUCTOR_API_KEY for the gateway). Strings are written with Python's
`repr` and JSON, so any prompt (quotes, newlines, backslashes) comes out as valid code.

This module knows each SDK's call, one function per SDK, mirroring the provider files; which
SDK a provider uses, its default model, key variable and settings come from its spec
(providers/spec.py). The official OpenAI API takes `max_completion_tokens`, compatible servers
`max_tokens`; the anthropic SDK 2.x takes no sampling parameters (only stop sequences), and the
system prompt goes in `system`; google-genai takes a `GenerateContentConfig`.

Images and PDFs: the snippets read each attached file from disk, under the name it was
attached with (`cat.png`, in the folder the program runs in), rather than embed its bytes, so a
5 MB picture makes a short program: the Python ones with `Path("cat.png").read_bytes()` into each
SDK's shape (OpenAI `image_url` / `file` parts with a data URL, Anthropic base64 image /
document blocks, Gemini inline data), curl with `base64 < cat.png` into a shell variable.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..config import EndpointConfig, Settings
from ..models import ChatRequest, FilePart, ImagePart, MessageRole, parse_data_url, response_schema
from ..providers.spec import ProviderSpec, get_spec

__all__ = [
    "CodeTarget",
    "PromptCall",
    "code_target",
    "gateway_python",
    "sdk_python",
    "curl",
    "prompt_gateway_python",
    "prompt_curl",
    "snippets",
    "DEFAULT_GATEWAY_URL",
]

DEFAULT_GATEWAY_URL = "http://127.0.0.1:8000/v1"
SdkKind = Literal["openai", "openai_compatible", "anthropic", "gemini", "local"]


class CodeTarget(BaseModel):
    """Where a request goes, as far as code needs to know."""

    provider: str
    kind: SdkKind
    model: str = Field(description="The model to name (the provider's default when the request has none).")
    base_url: str | None = Field(default=None, description="A non-default base URL (compatible endpoints, overrides).")
    key_env: str | None = Field(default=None, description="The environment variable holding the key; None: no key.")


def code_target(
    settings: Settings,
    provider: str,
    model: str | None = None,
    *,
    endpoint: EndpointConfig | None = None,
    default_model: str | None = None,
) -> CodeTarget:
    """The target for a provider name: one with a spec (a built-in), a configured endpoint, or
    `endpoint` (one a browser session added). `default_model`: the provider's default, when
    `model` is None."""
    spec = get_spec(provider)
    if spec is not None:
        return CodeTarget(
            provider=provider,
            kind=spec.code.snippet or "local",
            model=model or default_model or spec.default_model,
            base_url=settings.provider_base_url(provider),
            key_env=spec.key_env_vars[0] if spec.key_env_vars else None,
        )
    found = endpoint or settings.endpoints.get(provider)
    if found is None:
        raise ValueError(f"unknown provider {provider!r}: no built-in and no configured endpoint of that name")
    chosen = model or default_model or found.default_model or (found.models[0] if found.models else None)
    if chosen is None:
        raise ValueError(f"{provider} has no model to name: pick one from its list first")
    # A key typed in the browser is never written out: the snippet reads an env var instead.
    key_env = found.api_key_env or (
        f"{provider.upper().replace('-', '_')}_API_KEY" if found.api_key is not None else None
    )
    return CodeTarget(
        provider=provider, kind="openai_compatible", model=chosen, base_url=found.base_url, key_env=key_env
    )


class _Code(str):
    """Python code written as it is where a value's repr would go (a file read from disk)."""

    def __repr__(self) -> str:
        return str(self)


class _Files:
    """The request's attached files (by data URL), each named by the file the snippet reads."""

    def __init__(self, request: ChatRequest) -> None:
        self.by_url: dict[str, tuple[str, str]] = {}  # data URL -> (file name, media type)
        taken: set[str] = set()
        for m in request.messages:
            for part in m.parts or ():
                if not isinstance(part, ImagePart | FilePart) or part.url in self.by_url:
                    continue
                parsed = parse_data_url(part.url)
                if parsed is None:
                    continue  # an https URL travels as it is
                media_type = parsed[0]
                given = part.name if isinstance(part, ImagePart) else part.filename
                name = _file_name(given, media_type, len(self.by_url) + 1, taken)
                taken.add(name)
                self.by_url[part.url] = (name, media_type)

    def __bool__(self) -> bool:
        return bool(self.by_url)

    @property
    def names(self) -> str:
        return ", ".join(name for name, _ in self.by_url.values())

    def swap(self, value: Any, code: Callable[[str, str, str], Any]) -> Any:
        """`value` with every file's data URL, or its bare base64, replaced by `code(url, name, type)`."""
        bare = {url.split(",", 1)[1]: url for url in self.by_url}
        if isinstance(value, dict):
            return {k: self.swap(v, code) for k, v in value.items()}
        if isinstance(value, list):
            return [self.swap(v, code) for v in value]
        if isinstance(value, str) and (url := value if value in self.by_url else bare.get(value)) is not None:
            name, media_type = self.by_url[url]
            return code(value, name, media_type)
        return value

    def python_helpers(self) -> str:
        if not self:
            return ""
        return (
            f"# The attached files, read from the folder this runs in: {self.names}\n"
            "def data_url(path, media_type):\n"
            '    return f"data:{media_type};base64," + base64.b64encode(Path(path).read_bytes()).decode()\n\n\n'
        )


def _file_name(given: str | None, media_type: str, number: int, taken: set[str]) -> str:
    """A plain file name for an attachment: the one it was given (its folder dropped), else one of its type."""
    extension = media_type.split("/")[1].replace("jpeg", "jpg")
    name = re.sub(r"[^\w.\- ]", "_", (given or "").replace("\\", "/").rsplit("/", 1)[-1]).strip(" .")
    name = name or f"attachment-{number}.{extension}"
    stem, dot, suffix = name.rpartition(".")
    candidate, n = name, 2
    while candidate in taken:
        candidate = f"{stem}-{n}.{suffix}" if dot else f"{name}-{n}"
        n += 1
    return candidate


def _read_as_data_url(url: str, name: str, media_type: str) -> _Code:
    return _Code(f"data_url({name!r}, {media_type!r})")


def _python_imports(files: _Files) -> str:
    return "import base64\nimport os\nfrom pathlib import Path\n\n" if files else "import os\n\n"


def _messages(request: ChatRequest, *, system: bool = True) -> list[dict[str, Any]]:
    """OpenAI's shape: an assistant's tool calls and each tool result's call id go with them;
    a message with images or PDFs has OpenAI's content parts."""
    from ..providers.openai_compat import _part

    out: list[dict[str, Any]] = []
    for m in request.messages:
        if not system and m.role == MessageRole.system:
            continue
        message: dict[str, Any] = {"role": m.role.value, "content": m.content}
        if m.parts is not None:
            message["content"] = [_part(part) for part in m.parts]
        if m.tool_calls:
            message["content"] = m.content or None  # an assistant that only calls tools sends null
            message["tool_calls"] = [call.model_dump(mode="json") for call in m.tool_calls]
        if m.tool_call_id:
            message["tool_call_id"] = m.tool_call_id
        out.append(message)
    return out


def _openai_tools(request: ChatRequest) -> dict[str, object]:
    """`tools` and `tool_choice` as OpenAI (and the gateway) take them, when the request has tools."""
    if not request.tools:
        return {}
    params: dict[str, object] = {"tools": [tool.model_dump(mode="json", exclude_none=True) for tool in request.tools]}
    choice = request.tool_choice
    if choice is not None:
        params["tool_choice"] = choice if isinstance(choice, str) else choice.model_dump(mode="json")
    return params


def _system(request: ChatRequest) -> str:
    return "\n\n".join(m.content for m in request.messages if m.role == MessageRole.system)


def _kwargs(params: dict[str, object], indent: str = "    ") -> str:
    return "".join(f"{indent}{name}={value!r},\n" for name, value in params.items())


def _optional(request: ChatRequest, names: dict[str, str]) -> dict[str, object]:
    """The request's optional settings that are set, under the names an API gives them."""
    values = {"top_p": request.top_p, "stop": list(request.stop) if request.stop else None, "seed": request.seed}
    return {names[key]: value for key, value in values.items() if key in names and value is not None}


def _response_format(request: ChatRequest) -> dict[str, object]:
    """OpenAI's `response_format` (the gateway's and OpenAI-compatible APIs' own), when the
    request asks for JSON: as the request carries it, schema, name and strict included."""
    if request.response_format is None or request.response_format.type == "text":
        return {}
    return {"response_format": request.response_format.model_dump(mode="json", by_alias=True, exclude_none=True)}


def _anthropic_output(request: ChatRequest) -> dict[str, object]:
    """Anthropic's structured output (`output_config.format`), as Conductor's provider sends it."""
    if request.response_format is None or request.response_format.type == "text":
        return {}
    schema = response_schema(request.response_format) or {"type": "object"}
    return {"extra_body": {"output_config": {"format": {"type": "json_schema", "schema": schema}}}}


def _gemini_output(request: ChatRequest) -> dict[str, object]:
    """Gemini's JSON output: a MIME type and, for a schema, `response_json_schema`."""
    if request.response_format is None or request.response_format.type == "text":
        return {}
    fields: dict[str, object] = {"response_mime_type": "application/json"}
    if (schema := response_schema(request.response_format)) is not None:
        fields["response_json_schema"] = schema
    return fields


def _spec(target: CodeTarget) -> ProviderSpec | None:
    return get_spec(target.provider)  # None for a configured endpoint


def _gateway_body(request: ChatRequest, target: CodeTarget) -> dict[str, object]:
    body: dict[str, object] = {
        "model": f"{target.provider}/{target.model}",
        "messages": _messages(request),
        "temperature": request.temperature,
        "max_tokens": request.max_tokens,
    }
    body.update(_optional(request, {"top_p": "top_p", "stop": "stop", "seed": "seed"}))
    body.update(_response_format(request))
    body.update(_openai_tools(request))
    # Sampling settings the target's provider cannot take (its spec's capabilities): the
    # gateway answers 400 to a parameter its provider has no equivalent for, so the snippet
    # leaves them out rather than hand the reader a call that fails.
    spec = _spec(target)
    if spec is not None:
        for name in ("temperature", "top_p", "stop", "seed"):
            if name not in spec.capabilities.sampling:
                body.pop(name, None)
    return body


def gateway_python(request: ChatRequest, target: CodeTarget, *, gateway_url: str = DEFAULT_GATEWAY_URL) -> str:
    """The `openai` client against Conductor's gateway (OpenAI-compatible), streamed."""
    files = _Files(request)
    body = files.swap(_gateway_body(request, target), _read_as_data_url)
    # With tools, the calls stream too: each call's name first, then its arguments in pieces.
    calls = (
        "    for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:\n"
        "        if call.function and call.function.name:\n"
        '            print(f"\\n[tool call] {call.function.name}", end=" ")\n'
        "        if call.function and call.function.arguments:\n"
        '            print(call.function.arguments, end="", flush=True)\n'
        if request.tools
        else ""
    )
    return (
        _python_imports(files) + "from openai import OpenAI\n\n" + files.python_helpers() + ""
        "# Conductor's gateway (python -m gateway). CONDUCTOR_API_KEY only if the gateway requires one.\n"
        f'client = OpenAI(base_url={gateway_url!r}, api_key=os.environ.get("CONDUCTOR_API_KEY", "unused"))\n'
        "stream = client.chat.completions.create(\n" + _kwargs(body) + "    stream=True,\n)\n"
        "for chunk in stream:\n"
        "    if chunk.choices and chunk.choices[0].delta.content:\n"
        '        print(chunk.choices[0].delta.content, end="", flush=True)\n' + calls + "print()\n"
    )


def curl(request: ChatRequest, target: CodeTarget, *, gateway_url: str = DEFAULT_GATEWAY_URL) -> str:
    """curl against the gateway; the key comes from $CONDUCTOR_API_KEY. Each attached file is
    read into a shell variable (base64 < cat.png) that the body names; the body then goes on
    curl's standard input (printf is the shell's own, so a large picture is no argument too long)."""
    files = _Files(request)
    variables = {url: f"CONDUCTOR_FILE_{i}" for i, url in enumerate(files.by_url, 1)}
    body = json.dumps(
        files.swap(_gateway_body(request, target), lambda url, _n, _t: f"@@{variables[url]}@@"),
        ensure_ascii=False,
        indent=2,
    )
    quoted = shlex.quote(body)
    reads = ""
    for url, (name, media_type) in files.by_url.items():
        variable = variables[url]
        # Out of the body's single quotes for the variable, then back in.
        quoted = quoted.replace(f"@@{variable}@@", f"'\"${variable}\"'")
        reads += f"{variable}=\"data:{media_type};base64,$(base64 < {shlex.quote(name)} | tr -d '\\n')\"\n"
    command = (
        f"curl -sS {shlex.quote(gateway_url.rstrip('/') + '/chat/completions')} \\\n"
        '  -H "Content-Type: application/json" \\\n'
        '  -H "Authorization: Bearer ${CONDUCTOR_API_KEY:-unused}" \\\n'
    )
    if files:
        return f"{reads}printf '%s' {quoted} | " + command + "  --data-binary @-\n"
    return command + f"  -d {quoted}\n"


def sdk_python(request: ChatRequest, target: CodeTarget) -> str | None:
    """The provider's own SDK, sending what Conductor's provider sends. None for the embedded
    model, which runs inside Conductor (call it through the gateway)."""
    return {"openai": _openai, "openai_compatible": _openai, "anthropic": _anthropic, "gemini": _gemini}.get(
        target.kind, lambda *_: None
    )(request, target)


def _key(target: CodeTarget, default: str = "not-needed") -> str:
    return f"os.environ[{target.key_env!r}]" if target.key_env else repr(default)


def _openai(request: ChatRequest, target: CodeTarget) -> str:
    official = target.kind == "openai"
    params: dict[str, object] = {
        "model": target.model,
        "messages": _messages(request),
        "temperature": request.temperature,
        ("max_completion_tokens" if official else "max_tokens"): request.max_tokens,
    }
    params.update(_optional(request, {"top_p": "top_p", "stop": "stop", "seed": "seed"}))
    params.update(_openai_tools(request))
    spec = _spec(target)
    known = spec.model(target.model) if spec is not None else None
    if known is not None:
        params.update(known.request_fields)  # what Conductor's provider adds for this model
    params.update(_response_format(request))
    files = _Files(request)
    params = files.swap(params, _read_as_data_url)
    base = f", base_url={target.base_url!r}" if target.base_url else ""
    calls = (
        "for call in response.choices[0].message.tool_calls or []:\n"
        '    print("[tool call]", call.function.name, call.function.arguments)\n'
        if request.tools
        else ""
    )
    return (
        _python_imports(files) + "from openai import OpenAI\n\n" + files.python_helpers() + ""
        f"client = OpenAI(api_key={_key(target)}{base})\n"
        "response = client.chat.completions.create(\n" + _kwargs(params) + ")\n"
        "print(response.choices[0].message.content)\n" + calls
    )


def _anthropic(request: ChatRequest, target: CodeTarget) -> str:
    params: dict[str, object] = {
        "model": target.model,
        "max_tokens": request.max_tokens,
        "messages": _messages(request, system=False),
    }
    if _system(request):
        params["system"] = _system(request)
    params.update(_optional(request, {"stop": "stop_sequences"}))
    params.update(_anthropic_output(request))
    calls = ""
    files = _Files(request)
    if request.uses_tools() or files:
        # Tools, tool calls and results, images and documents in Anthropic's shape, exactly as
        # Conductor's provider sends them.
        from ..providers.anthropic import AnthropicProvider

        sent = AnthropicProvider._to_request(request, target.model)
        params["messages"] = files.swap(sent["messages"], lambda _b, name, _t: _Code(f"b64({name!r})"))
        params.update({name: sent[name] for name in ("tools", "tool_choice") if name in sent})
    if request.uses_tools():
        calls = (
            "for block in message.content:\n"
            '    if block.type == "tool_use":\n'
            '        print("[tool call]", block.name, block.input)\n'
        )
    helpers = (
        f"# The attached files, read from the folder this runs in: {files.names}\n"
        "def b64(path):\n    return base64.b64encode(Path(path).read_bytes()).decode()\n\n\n"
        if files
        else ""
    )
    base = f", base_url={target.base_url!r}" if target.base_url else ""
    return (
        _python_imports(files) + "import anthropic\n\n" + helpers + ""
        f"client = anthropic.Anthropic(api_key={_key(target)}{base})\n"
        "# No temperature, top_p or seed: the anthropic SDK 2.x has no sampling parameters on messages.create.\n"
        "message = client.messages.create(\n" + _kwargs(params) + ")\n"
        'print("".join(block.text for block in message.content if block.type == "text"))\n' + calls
    )


def _gemini_parts(message: Any, names: dict[str, str], files: _Files) -> str:
    """A message's parts as google-genai code: text, images and files (inline data read from
    disk), function calls, a function's result."""
    if message.parts is not None:
        out = []
        for part in message.parts:
            if isinstance(part, ImagePart | FilePart) and part.url in files.by_url:
                name, media_type = files.by_url[part.url]
                out.append(f"types.Part.from_bytes(data=Path({name!r}).read_bytes(), mime_type={media_type!r})")
            elif isinstance(part, ImagePart | FilePart):
                out.append(f"types.Part(file_data=types.FileData(file_uri={part.url!r}))")
            elif part.text:  # Gemini refuses an empty text part
                out.append(f"types.Part(text={part.text!r})")
        return ", ".join(out)
    if message.role == MessageRole.tool:
        try:
            result = json.loads(message.content)
        except ValueError:
            result = message.content
        response = result if isinstance(result, dict) else {"result": result}
        name = names.get(message.tool_call_id or "", "unknown")
        return (
            f"types.Part(function_response=types.FunctionResponse(id={message.tool_call_id!r}, name={name!r}, "
            f"response={response!r}))"
        )
    parts = [f"types.Part(text={message.content!r})"] if message.content or not message.tool_calls else []
    for call in message.tool_calls or ():
        try:
            args = json.loads(call.function.arguments or "{}")
        except ValueError:
            args = {"_raw": call.function.arguments}
        args = args if isinstance(args, dict) else {"value": args}
        parts.append(
            f"types.Part(function_call=types.FunctionCall(id={call.id!r}, name={call.function.name!r}, args={args!r}))"
        )
    return ", ".join(parts)


def _gemini(request: ChatRequest, target: CodeTarget) -> str:
    names = {call.id: call.function.name for m in request.messages for call in m.tool_calls or ()}
    files = _Files(request)
    contents = "".join(
        f"        types.Content(role={('model' if m.role == MessageRole.assistant else 'user')!r}, parts=[{_gemini_parts(m, names, files)}]),\n"
        for m in request.messages
        if m.role != MessageRole.system
    )
    config: dict[str, object] = {"temperature": request.temperature, "max_output_tokens": request.max_tokens}
    if _system(request):
        config = {"system_instruction": _system(request), **config}
    config.update(_optional(request, {"top_p": "top_p", "stop": "stop_sequences", "seed": "seed"}))
    config.update(_gemini_output(request))
    tool_config = ""
    if request.tools:
        declarations = "".join(
            f"                types.FunctionDeclaration(name={t.function.name!r}, description={t.function.description!r}, "
            f"parameters_json_schema={t.function.parameters!r}),\n"
            for t in request.tools
        )
        tool_config = (
            "        tools=[\n            types.Tool(function_declarations=[\n"
            + declarations
            + "            ])\n        ],\n"
            "        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),\n"
        )
        choice = request.tool_choice
        if choice is not None:
            mode = "ANY" if not isinstance(choice, str) else {"auto": "AUTO", "required": "ANY", "none": "NONE"}[choice]
            only = f", allowed_function_names=[{choice.function.name!r}]" if not isinstance(choice, str) else ""
            tool_config += (
                "        tool_config=types.ToolConfig(\n"
                f"            function_calling_config=types.FunctionCallingConfig(mode={mode!r}{only})\n"
                "        ),\n"
            )
    options = f", http_options=types.HttpOptions(base_url={target.base_url!r})" if target.base_url else ""
    return (
        ("import os\nfrom pathlib import Path\n\n" if files else "import os\n\n") + "from google import genai\n"
        "from google.genai import types\n\n"
        + (f"# The attached files, read from the folder this runs in: {files.names}\n" if files else "")
        + f"client = genai.Client(api_key={_key(target)}{options})\n"
        "response = client.models.generate_content(\n"
        f"    model={target.model!r},\n"
        "    contents=[\n" + contents + "    ],\n"
        "    config=types.GenerateContentConfig(\n" + _kwargs(config, "        ") + tool_config + "    ),\n"
        ")\n"
        "print(response.text)\n"
        + (
            'for call in response.function_calls or []:\n    print("[tool call]", call.name, call.args)\n'
            if request.tools
            else ""
        )
    )


class PromptCall(BaseModel):
    """A saved prompt served by the gateway: `model="prompt:NAME@LABEL"` with its variables."""

    reference: str = Field(description="NAME@LABEL or NAME@3.")
    variables: dict[str, str] = Field(default_factory=dict)


def _prompt_body(call: PromptCall) -> dict[str, object]:
    return {"model": f"prompt:{call.reference}", "messages": []}


def prompt_gateway_python(call: PromptCall, *, gateway_url: str = DEFAULT_GATEWAY_URL) -> str:
    """The `openai` client asking the gateway for a saved prompt, its variables in extra_body."""
    return (
        "import os\n\nfrom openai import OpenAI\n\n"
        "# Conductor's gateway (python -m gateway). CONDUCTOR_API_KEY only if the gateway requires one.\n"
        f'client = OpenAI(base_url={gateway_url!r}, api_key=os.environ.get("CONDUCTOR_API_KEY", "unused"))\n'
        "# The saved prompt's messages and settings; messages you add here go after its own.\n"
        "stream = client.chat.completions.create(\n"
        + _kwargs(_prompt_body(call))
        + f"    extra_body={{'variables': {call.variables!r}}},\n"
        "    stream=True,\n)\n"
        "for chunk in stream:\n"
        "    if chunk.choices and chunk.choices[0].delta.content:\n"
        '        print(chunk.choices[0].delta.content, end="", flush=True)\n'
        "print()\n"
    )


def prompt_curl(call: PromptCall, *, gateway_url: str = DEFAULT_GATEWAY_URL) -> str:
    body = json.dumps({**_prompt_body(call), "variables": call.variables}, ensure_ascii=False, indent=2)
    return (
        f"curl -sS {shlex.quote(gateway_url.rstrip('/') + '/chat/completions')} \\\n"
        '  -H "Content-Type: application/json" \\\n'
        '  -H "Authorization: Bearer ${CONDUCTOR_API_KEY:-unused}" \\\n'
        f"  -d {shlex.quote(body)}\n"
    )


def snippets(
    request: ChatRequest,
    target: CodeTarget,
    *,
    gateway_url: str = DEFAULT_GATEWAY_URL,
    prompt: PromptCall | None = None,
) -> dict[str, str | None]:
    """All three, keyed: python_gateway, python_sdk (None for the embedded model), curl. With
    `prompt` (the page has a saved prompt open), the gateway snippets ask for the prompt by name;
    the provider SDK's sends the rendered request (the SDK knows no saved prompts)."""
    if prompt is not None:
        return {
            "python_gateway": prompt_gateway_python(prompt, gateway_url=gateway_url),
            "python_sdk": sdk_python(request, target),
            "curl": prompt_curl(prompt, gateway_url=gateway_url),
        }
    return {
        "python_gateway": gateway_python(request, target, gateway_url=gateway_url),
        "python_sdk": sdk_python(request, target),
        "curl": curl(request, target, gateway_url=gateway_url),
    }
