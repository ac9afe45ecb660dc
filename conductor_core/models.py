"""Pydantic models at every boundary: requests, responses, stream events, status and errors.

Every model documents itself (field descriptions and examples) so that the gateway's
OpenAPI page and the playground's tooltips come from one place.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import threading
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

__all__ = [
    "RoutingStateInfo",
    "MessageRole",
    "FunctionCall",
    "ToolCall",
    "ToolFunction",
    "Tool",
    "NamedToolChoice",
    "ResponseFormat",
    "JsonSchemaSpec",
    "response_schema",
    "ProviderName",
    "register_provider_name",
    "known_provider_names",
    "TextPart",
    "ImagePart",
    "FilePart",
    "ContentPart",
    "IMAGE_MEDIA_TYPES",
    "FILE_MEDIA_TYPES",
    "IMAGE_URL_PATTERN",
    "FILE_URL_PATTERN",
    "data_url",
    "parse_data_url",
    "describe_attachment",
    "describe_size",
    "ChatMessage",
    "ChatRequest",
    "TEXT_CHECKED",
    "SPELLED_BY_CLIENT",
    "needs",
    "tools_from_functions",
    "tool_choice_from_function_call",
    "CONTROL_CHARACTERS",
    "check_model_name",
    "unencodable_text",
    "unencodable_message",
    "RoutingPolicy",
    "Usage",
    "ResponseMetadata",
    "ResponseAnalytics",
    "tokens_per_second",
    "MAX_TOKENS_LIMIT",
    "Attempt",
    "RouteMode",
    "RoutingInfo",
    "ChatResponse",
    "TextDelta",
    "ToolCallDelta",
    "StreamStart",
    "StatusNotice",
    "StreamDone",
    "StreamIncomplete",
    "StreamEvent",
    "ProviderState",
    "BreakerState",
    "ProviderHealth",
    "ProviderPerformance",
    "ProviderReliability",
    "ProviderUsage",
    "ProviderStatus",
    "OverallStatus",
    "SystemStatus",
    "LogHealth",
    "ErrorResponse",
    "HealthStatus",
    "HealthResponse",
    "Target",
    "AttemptStatus",
    "AttemptRecord",
    "Vote",
    "CompareEvent",
    "utcnow",
    "new_id",
]


def utcnow() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str = "req") -> str:
    # 20 random hex digits, as uuid4().hex[:20] gave, at a sixth of the cost (several ids a request).
    return f"{prefix}_{os.urandom(10).hex()}"


class MessageRole(StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"
    tool = "tool"


# The names a request may give: "auto", every provider with a spec (providers/spec.py), and
# the configured OpenAI-compatible endpoints, which join when the registry reads configuration
# (so a request can say provider="ollama"). Every ChatRequest checks its provider name: the
# list and its set are rebuilt when a name or a spec is registered, not on each request. One
# tuple, so a reader never sees them out of step.
_extra_names: set[str] = set()
_names_lock = threading.RLock()
_known: tuple[tuple[str, ...], frozenset[str]] | None = None  # None: to be rebuilt


def _known_names() -> tuple[tuple[str, ...], frozenset[str]]:
    global _known
    known = _known
    if known is None:
        from .providers import spec  # not at the top: providers/ imports this module

        spec.on_change(_forget_names)
        with _names_lock:
            builtin = ("auto", *spec.provider_specs())
            names = builtin + tuple(sorted(_extra_names.difference(builtin)))
            known = _known = (names, frozenset(names))
    return known


def _forget_names() -> None:
    global _known
    with _names_lock:  # not while a rebuild is reading the old names
        _known = None


def register_provider_name(name: str) -> None:
    """Let requests name a configured endpoint (a provider with a spec is known already)."""
    with _names_lock:
        if name in _extra_names or name in _known_names()[0]:
            return
        _extra_names.add(name)
        _forget_names()


def known_provider_names() -> list[str]:
    return list(_known_names()[0])


def _check_provider_name(value: str) -> str:
    name = value.strip().lower()
    if name not in (_known or _known_names())[1]:
        raise ValueError(f"unknown provider {value!r}; available: {', '.join(known_provider_names())}")
    return name


ProviderName = Annotated[
    str,
    AfterValidator(_check_provider_name),
    Field(
        description="A built-in provider, a configured endpoint name, or 'auto'.", examples=["auto", "local", "gemini"]
    ),
]


#: The largest max_tokens a ChatRequest may ask for: the seed's contract (the native route, the
#: playground's controls). The gateway's OpenAI route keeps OpenAI's own (an integer >= 1).
MAX_TOKENS_LIMIT = 4000


class RoutingPolicy(StrEnum):
    balanced = "balanced"
    fastest = "fastest"
    cheapest = "cheapest"
    reliable = "reliable"
    preferred = "preferred"  # by blind-vote rating; `balanced` where too few votes
    evaluated = "evaluated"  # by a saved prompt's measured pass rate; `balanced` without one


#: Shapes that come from OpenAI's wire format: strict, so that what the gateway's schema says
#: (a boolean is true or false, not 0) is what is accepted.
_WIRE = ConfigDict(strict=True)


class FunctionCall(BaseModel):
    model_config = _WIRE

    name: str = Field(min_length=1, description="The function the model calls.")
    arguments: str = Field(default="", description="Its arguments, as the JSON text the model wrote.")


class ToolCall(BaseModel):
    """A call the model asked for (OpenAI's shape: every provider's tool use is translated to it)."""

    model_config = _WIRE

    id: str = Field(min_length=1)
    type: Literal["function"] = "function"
    function: FunctionCall


class ToolFunction(BaseModel):
    model_config = ConfigDict(extra="allow", strict=True)  # e.g. OpenAI's "strict" travels on to OpenAI

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    parameters: dict[str, Any] | None = Field(default=None, description="JSON Schema of the arguments.")


class Tool(BaseModel):
    type: Literal["function"] = "function"
    function: ToolFunction


class ToolName(BaseModel):
    model_config = _WIRE

    name: str = Field(min_length=1)


class NamedToolChoice(BaseModel):
    """Call this function: {'type': 'function', 'function': {'name': ...}}."""

    model_config = _WIRE

    type: Literal["function"] = "function"
    function: ToolName


class JsonSchemaSpec(BaseModel):
    # Dumped as OpenAI spells it ("schema"), so a stored or exported format reads back anywhere.
    model_config = ConfigDict(extra="allow", populate_by_name=True, serialize_by_alias=True, strict=True)

    name: str = Field(min_length=1, max_length=64)
    description: str | None = None
    schema_: dict[str, Any] = Field(alias="schema", description="The JSON Schema the answer must match.")
    strict: bool | None = None


class ResponseFormatText(BaseModel):
    model_config = _WIRE

    type: Literal["text"]


class ResponseFormatJsonObject(BaseModel):
    model_config = _WIRE

    type: Literal["json_object"]


class ResponseFormatJsonSchema(BaseModel):
    model_config = _WIRE

    type: Literal["json_schema"]
    json_schema: JsonSchemaSpec


#: OpenAI's `response_format`: free text, any JSON object, or JSON matching a schema.
ResponseFormat = Annotated[
    ResponseFormatText | ResponseFormatJsonObject | ResponseFormatJsonSchema, Field(discriminator="type")
]


def response_schema(response_format: Any) -> dict[str, Any] | None:
    """The JSON Schema a response format asks for (None for text or any JSON object)."""
    return response_format.json_schema.schema_ if isinstance(response_format, ResponseFormatJsonSchema) else None


def tools_from_functions(functions: list[Any]) -> list[Tool]:
    """OpenAI's deprecated `functions` as `tools` (each function becomes a function tool)."""
    return [Tool(function=f if isinstance(f, ToolFunction) else ToolFunction.model_validate(f)) for f in functions]


def tool_choice_from_function_call(value: Any) -> str | NamedToolChoice:
    """OpenAI's deprecated `function_call` ("none", "auto" or {"name": ...}) as a `tool_choice`."""
    if isinstance(value, str):
        return value
    name = value.name if isinstance(value, ToolName) else value["name"]
    return NamedToolChoice(function=ToolName(name=name))


#: What a message may attach (what the three wires all take), and how big one attachment may be
#: (Anthropic's per-image limit; OpenAI's and Gemini's are larger).
IMAGE_MEDIA_TYPES = ("image/png", "image/jpeg", "image/webp", "image/gif")
FILE_MEDIA_TYPES = ("application/pdf",)
MAX_ATTACHMENT_BYTES = 5 * 1024 * 1024

_DATA_URL = re.compile(r"data:(?P<type>[\w.+-]+/[\w.+-]+)(?:;[\w-]+=[^;,]*)*;base64,(?P<data>[A-Za-z0-9+/=\s]*)\Z")


_BASE64 = r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"
#: What an image's and a file's `url` may be, whole (the documented schema says the same; the
#: size is checked apart): a data URL of canonical base64, or (images) an http(s) URL.
IMAGE_URL_PATTERN = rf"^(?:data:image/(?:png|jpeg|webp|gif);base64,{_BASE64}|https?://)"
FILE_URL_PATTERN = rf"^data:application/pdf;base64,{_BASE64}"


def data_url(media_type: str, data: bytes) -> str:
    """`data:<type>;base64,<data>`: how an attachment travels in a message."""
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def parse_data_url(url: str) -> tuple[str, bytes] | None:
    """(media type, bytes) of a base64 data URL; None for any other URL (https://...)."""
    found = _DATA_URL.match(url) if url.startswith("data:") else None
    if found is None:
        return None
    try:
        return found.group("type").lower(), base64.b64decode(found.group("data"))
    except binascii.Error:  # not base64 after all (bad padding)
        return None


def _type_required(schema: dict[str, Any]) -> None:
    """A part's `type` has a default (`TextPart(text=...)`), but a list of parts is told apart by
    it, so validation needs it: the documented schema says so."""
    schema["required"] = ["type", *schema.get("required", [])]


#: A message part's config: strict, as every wire model, and `type` required in its schema.
_PART = ConfigDict(strict=True, json_schema_extra=_type_required)


class TextPart(BaseModel):
    model_config = _PART

    type: Literal["text"] = "text"
    text: str


class ImagePart(BaseModel):
    """An image: a base64 data URL (what the playground attaches) or an https URL (passed on
    where the provider fetches URLs itself)."""

    model_config = _PART

    type: Literal["image"] = "image"
    url: str = Field(
        min_length=1,
        json_schema_extra={"pattern": IMAGE_URL_PATTERN},  # what _url checks (with clearer words, and the size)
        description="data:image/png;base64,... or https://...",
    )
    detail: Literal["auto", "low", "high"] | None = Field(default=None, description="OpenAI's image detail.")
    name: str | None = Field(
        default=None, description="The image's file name, for people (the log, the history); never sent upstream."
    )

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _check_attachment_url(value, IMAGE_MEDIA_TYPES, "an image", IMAGE_URL_PATTERN)


class FilePart(BaseModel):
    """A document (PDF), as a base64 data URL."""

    model_config = _PART

    type: Literal["file"] = "file"
    url: str = Field(
        min_length=1, json_schema_extra={"pattern": FILE_URL_PATTERN}, description="data:application/pdf;base64,..."
    )
    filename: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        if not value.startswith("data:"):
            raise ValueError("a file travels as a base64 data URL (data:application/pdf;base64,...)")
        return _check_attachment_url(value, FILE_MEDIA_TYPES, "a file", FILE_URL_PATTERN)


def _check_attachment_url(value: str, media_types: tuple[str, ...], what: str, pattern: str) -> str:
    if value.startswith(("https://", "http://")):
        return value
    found = _DATA_URL.match(value) if value.startswith("data:") else None
    if found is None:
        raise ValueError(f"{what} must be a base64 data URL (data:<type>;base64,...) or an http(s) URL")
    media_type = found.group("type").lower()
    if media_type not in media_types:
        raise ValueError(f"{what} of type {media_type} cannot be sent: use one of {', '.join(media_types)}")
    # Python's re, as JSON Schema validators in Python and schema-driven test generators read
    # the documented pattern (`$` also before a final newline, which base64 decoding skips).
    if re.match(pattern, value) is None:
        raise ValueError(f"{what}'s data is not base64: send data:<type>;base64, then the base64 text, no spaces")
    data = base64.b64decode(found.group("data"))
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise ValueError(
            f"{what} of {len(data) / 1e6:.1f} MB is too large: at most {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB"
        )
    return value
    parsed = parse_data_url(value) if value.startswith("data:") else None
    if parsed is None:
        raise ValueError(f"{what} must be a base64 data URL (data:<type>;base64,...) or an http(s) URL")
    media_type, data = parsed
    if media_type not in media_types:
        raise ValueError(f"{what} of type {media_type} cannot be sent: use one of {', '.join(media_types)}")
    # Python's re, as JSON Schema validators in Python and schema-driven test generators read
    # the documented pattern (`$` also before a final newline, which base64 decoding skips).
    if re.match(pattern, value) is None:
        raise ValueError(f"{what}'s data is not base64: send data:<type>;base64, then the base64 text, no spaces")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise ValueError(
            f"{what} of {len(data) / 1e6:.1f} MB is too large: at most {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB"
        )
    return value


def describe_size(size: int) -> str:
    """123 KB, 2.4 MB: an attachment's size for people."""
    if size < 1024 * 1024:
        return f"{max(1, round(size / 1024))} KB"
    return f"{size / (1024 * 1024):.1f} MB"


def describe_attachment(part: ImagePart | FilePart) -> str:
    """`[image: cat.png, 123 KB]`: how the request log (and text exports) name an attachment,
    never holding its bytes."""
    if not part.url.startswith("data:"):
        return f"[image: {part.url}]"
    payload = part.url.partition(",")[2].strip()
    size = describe_size(len(payload) * 3 // 4 - payload[-2:].count("="))  # decoded size, not decoding
    if isinstance(part, ImagePart):
        return f"[image: {part.name or part.url[5 : part.url.index(';')]}, {size}]"
    return f"[file: {part.filename or 'application/pdf'}, {size}]"


#: A piece of a user message: text, an image or a file, in the order the person put them.
ContentPart = Annotated[TextPart | ImagePart | FilePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    """One message. System and user messages carry text; an assistant message may carry
    `tool_calls` and empty content; a `tool` message answers the call `tool_call_id` names."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [{"role": "user", "content": "Explain circuit breakers in one sentence."}],
            # What the validators below enforce, for clients and schema checks.
            "allOf": [
                {
                    "if": {"properties": {"role": {"const": "system"}}, "required": ["role"]},
                    "then": {"required": ["content"], "properties": {"content": {"type": "string", "minLength": 1}}},
                },
                {
                    "if": {"properties": {"role": {"const": "user"}}, "required": ["role"]},
                    "then": {
                        "anyOf": [
                            {"required": ["content"], "properties": {"content": {"type": "string", "minLength": 1}}},
                            {"required": ["parts"], "properties": {"parts": {"type": "array", "minItems": 1}}},
                        ]
                    },
                },
                {
                    "if": {"properties": {"role": {"enum": ["system", "assistant", "tool"]}}, "required": ["role"]},
                    "then": {"properties": {"parts": {"type": "null"}}},
                },
                {
                    "if": {"properties": {"role": {"const": "tool"}}, "required": ["role"]},
                    "then": {
                        "required": ["tool_call_id"],
                        "properties": {"tool_call_id": {"type": "string", "minLength": 1}},
                    },
                },
                {
                    "if": {"properties": {"role": {"enum": ["system", "user", "tool"]}}, "required": ["role"]},
                    "then": {"properties": {"tool_calls": {"type": "null"}}},
                },
            ],
        }
    )

    role: MessageRole = Field(description="Who wrote the message: system, user, assistant or tool.")
    parts: list[ContentPart] | None = Field(
        default=None,
        json_schema_extra={"minItems": 1},  # what _content and _shape check (with their own message)
        description="User messages with images or files: every part in order (text, image, file). `content` then "
        "holds their text alone (what the log, token estimates and text-only views read).",
    )
    # Never None once validated (an assistant's null becomes ""), so every consumer can treat it as text.
    content: str = Field(
        default="",
        validate_default=True,
        description="The message text (system and user messages: at least one character).",
    )
    tool_calls: list[ToolCall] | None = Field(default=None, description="Assistant only: the calls it made.")
    tool_call_id: str | None = Field(default=None, description="Tool only: the call this message answers.")
    name: str | None = Field(default=None, description="Optional author name (OpenAI passes it on).")

    @field_validator("content", mode="before")
    @classmethod
    def _content(cls, value: Any, info: ValidationInfo) -> Any:
        role = info.data.get("role")
        if value is None and role in (MessageRole.assistant, MessageRole.tool):
            return ""  # an assistant that only calls tools sends null
        parts = info.data.get("parts")
        if parts is not None and not parts:
            raise ValueError("parts, when set, needs at least one part")
        if parts and value in (None, ""):
            return "\n".join(p.text for p in parts if isinstance(p, TextPart))
        if role in (MessageRole.system, MessageRole.user) and value == "":
            raise ValueError(f"a {role.value} message needs non-empty content")
        return value

    @model_validator(mode="after")
    def _shape(self) -> ChatMessage:
        if self.parts is not None and self.role != MessageRole.user:
            raise ValueError("only user messages carry parts (images and files)")
        if self.parts is not None and not self.parts:
            raise ValueError("parts, when set, needs at least one part")
        if self.tool_calls and self.role != MessageRole.assistant:
            raise ValueError("only assistant messages carry tool_calls")
        if self.role == MessageRole.tool and not self.tool_call_id:
            raise ValueError("a tool message needs tool_call_id, the id of the call it answers")
        return self


def unencodable_text(value: Any, path: str = "") -> tuple[str, str] | None:
    """The first text in `value` (a model, a dict, a list: keys included) that cannot be encoded
    as UTF-8, as (its place, e.g. "messages[0].content"; the offending character), or None.
    Valid JSON may hold such text (a lone surrogate escape, "\\ud800"), and no provider can be sent it."""
    if isinstance(value, str):
        if value.isascii():
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as exc:
            return path or "text", value[exc.start : exc.end]
        return None
    if isinstance(value, BaseModel):
        fields = type(value).model_fields
        items = [(fields[k].alias or k if k in fields else k, v) for k, v in value.__dict__.items()]
        items += list((value.__pydantic_extra__ or {}).items())
        return _first_unencodable(items, path)
    if isinstance(value, dict):
        for key in value:
            found = unencodable_text(key)
            if found:
                return f"a key of {path or 'the request'}", found[1]
        return _first_unencodable(value.items(), path)
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            found = unencodable_text(item, f"{path}[{index}]")
            if found:
                return found
    return None


def _first_unencodable(items: Any, path: str) -> tuple[str, str] | None:
    for key, item in items:
        found = unencodable_text(item, f"{path}.{key}" if path else str(key))
        if found:
            return found
    return None


#: `extra_params` that Conductor's own fields already carry for every provider: the client's
#: spelling of a setting Conductor models (max_tokens or max_completion_tokens; functions and
#: function_call, the old form of tools and tool_choice: see `tools_from_functions`), what the
#: gateway handles itself (stream_options: it relays usage only when asked) and n (always 1).
#: An OpenAI-compatible provider sends them as they are, in place of its own spelling of the
#: same setting; other providers never refuse them.
SPELLED_BY_CLIENT = frozenset(
    {"max_tokens", "max_completion_tokens", "functions", "function_call", "stream_options", "n"}
)
#: Keys extra_params may not hold: what Conductor writes in an upstream body itself (model,
#: messages, streaming, and the settings ChatRequest models: set those as its fields), but for
#: the client's spellings above. Conductor's own fields that no upstream body holds (provider,
#: policy...) may be an upstream's own parameters (OpenRouter's `provider`): they pass.
_NOT_EXTRA = frozenset({"model", "messages", "stream"})
_CONDUCTORS_OWN = frozenset({"provider", "policy", "unsupported", "extra_params", "prompt_name"})

# Unicode's control characters (C0, DEL, C1): never part of a model's name.
CONTROL_CHARACTERS = "[\u0000-\u001f\u007f-\u009f]"
_CONTROL = re.compile(CONTROL_CHARACTERS)


def check_model_name(value: str | None) -> str | None:
    """A model name without control characters (they would be sent upstream, in a URL or a body)."""
    if value is not None:
        found = _CONTROL.search(value)
        if found:
            raise ValueError(
                f"must not contain control characters (found {found.group()!r} at position {found.start()}): "
                "use the model's name as GET /v1/models lists it"
            )
    return value


#: Validation context for a ChatRequest whose text was checked already (the gateway checks the
#: raw body, and skips the walk when no lone surrogate can be in it).
TEXT_CHECKED = {"text_checked": True}


def unencodable_message(place: str, character: str) -> str:
    return (
        f"{place} holds text that cannot be sent: {character!r} is a lone surrogate, not a character "
        "(it cannot be encoded as UTF-8); send valid Unicode text"
    )


def needs(field: str, needed: str) -> dict[str, Any]:
    """JSON Schema for "`field` (when set) needs a non-empty `needed` array", as a validator checks."""
    return {
        "if": {"required": [field], "properties": {field: {"not": {"type": "null"}}}},
        "then": {"required": [needed], "properties": {needed: {"type": "array", "minItems": 1}}},
    }


class ChatRequest(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "provider": "auto",
                    "messages": [{"role": "user", "content": "Write a haiku about latency."}],
                    "model": None,
                    "temperature": 0.7,
                    "max_tokens": 256,
                }
            ],
            "allOf": [needs("tool_choice", "tools")],  # what _tool_choice_with_tools checks
        }
    )

    provider: ProviderName = Field(default="auto", description="Provider to use; 'auto' lets Conductor choose.")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation, oldest first (at least one).")
    model: str | None = Field(
        default=None,
        description="Model name; None uses the provider's default.",
        json_schema_extra={"not": {"type": "string", "pattern": CONTROL_CHARACTERS}},  # checked by _model_name
    )
    temperature: float | None = Field(
        default=0.7,
        ge=0.0,
        le=2.0,
        description="Sampling temperature, 0.0 to 2.0; None sends none (the provider's default).",
    )
    max_tokens: int | None = Field(
        default=1000,
        ge=1,
        le=MAX_TOKENS_LIMIT,
        description=f"Most tokens to generate, 1 to {MAX_TOKENS_LIMIT}; None sends no cap (the provider's default).",
    )
    top_p: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Nucleus sampling, 0.0 to 1.0; None uses the provider's default."
    )
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, max_length=4, description="Up to 4 sequences that end the answer when generated."
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="Ask for repeatable sampling (providers that support it)."
    )
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0, description="-2.0 to 2.0 (OpenAI's meaning).")
    frequency_penalty: float | None = Field(
        default=None, ge=-2.0, le=2.0, description="-2.0 to 2.0 (OpenAI's meaning)."
    )
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, description="Token id -> bias, -100 to 100 (token ids of the upstream's tokenizer)."
    )
    logprobs: bool | None = Field(default=None, description="Return the log probabilities of the output tokens.")
    top_logprobs: int | None = Field(default=None, ge=0, le=20, description="With logprobs: alternatives per token.")
    response_format: ResponseFormat | None = Field(default=None, description="Text, any JSON object, or a JSON Schema.")
    tools: list[Tool] | None = Field(default=None, max_length=128, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None,
        description="'none', 'auto', 'required', or {'type': 'function', 'function': {'name': ...}}; "
        "passed on only with tools.",
    )
    parallel_tool_calls: bool | None = Field(
        default=None, description="Whether the model may call several tools at once."
    )
    user: str | None = Field(
        default=None, description="An id for the end user: passed on where the provider has one, else not sent."
    )
    policy: RoutingPolicy | None = Field(
        default=None, description="AUTO policy for this request; None uses the configured default."
    )
    prompt_name: str | None = Field(
        default=None,
        description="The saved prompt this request renders (the gateway's 'prompt:NAME@LABEL' sets it): AUTO's "
        "`evaluated` policy routes by how targets did on it. Never sent to a provider.",
    )
    unsupported: Literal["ignore", "reject"] = Field(
        default="ignore",
        description="A sampling setting the provider cannot honour: 'ignore' it (the playground says so) or 'reject' "
        "the request (400, the gateway's OpenAI route). Features (tools, JSON output, logprobs, logit_bias) are "
        "always rejected where unsupported.",
    )
    extra_params: dict[str, Any] | None = Field(
        default=None,
        description="OpenAI Chat Completions parameters Conductor does not model (reasoning_effort, service_tier, "
        "store, metadata...), or a client's own spelling of one it does (max_completion_tokens, functions): sent "
        "as they are by OpenAI and OpenAI-compatible providers, in their request body; every other provider "
        "answers 400 naming those it cannot take.",
        examples=[{"reasoning_effort": "low", "service_tier": "flex"}],
    )

    @field_validator("model")
    @classmethod
    def _model_name(cls, value: str | None) -> str | None:
        return check_model_name(value)

    @field_validator("extra_params")
    @classmethod
    def _extra_params(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        modelled = (_NOT_EXTRA | cls.model_fields.keys()) - SPELLED_BY_CLIENT - _CONDUCTORS_OWN
        clash = sorted(modelled & (value or {}).keys())
        if clash:
            raise ValueError(f"must not hold {', '.join(clash)}: set them as the request's own fields")
        return value

    @model_validator(mode="after")
    def _tool_choice_with_tools(self) -> ChatRequest:
        if self.tool_choice is not None and not self.tools:
            raise ValueError(
                "tool_choice needs tools: send the functions the model may call in tools, or leave tool_choice out"
            )
        return self

    @model_validator(mode="after")
    def _sendable(self, info: ValidationInfo) -> ChatRequest:
        # Before any provider is tried: no provider can be sent such text, so it is the request's fault.
        if not (info.context and info.context.get("text_checked")):
            found = unencodable_text(self)
            if found:
                raise ValueError(unencodable_message(*found))
        return self

    def attachments(self) -> list[ImagePart | FilePart]:
        """The images and files in the conversation, in order."""
        return [p for m in self.messages for p in m.parts or () if not isinstance(p, TextPart)]

    def uses_tools(self) -> bool:
        """Whether the request offers tools or its conversation contains tool calls or results."""
        return bool(self.tools) or any(m.tool_calls or m.role == MessageRole.tool for m in self.messages)


class Usage(BaseModel):
    input_tokens: int = Field(default=0, ge=0, description="Prompt tokens as reported by the provider.")
    output_tokens: int = Field(default=0, ge=0, description="Generated tokens as reported by the provider.")
    cached_tokens: int = Field(default=0, ge=0, description="Prompt tokens served from the provider's cache.")
    image_tokens: int = Field(
        default=0,
        ge=0,
        description="Of the prompt tokens, those counted for images, where the provider says (Gemini): priced at the "
        "model's image rate where genai-prices has one, else as input tokens (as the providers bill them).",
    )


class ResponseMetadata(BaseModel):
    id: str = Field(default_factory=new_id, description="Conductor's id for this response.")
    provider: str = Field(description="Provider that served the answer.", examples=["local"])
    model: str = Field(description="Model that actually answered.", examples=["gemma-3-270m"])
    finish_reason: str | None = Field(default=None, description="Why generation stopped: stop, length, ...")
    upstream_id: str | None = Field(
        default=None, description="The upstream's own id for the answer (chatcmpl-..., msg_..., Gemini's responseId)."
    )
    system_fingerprint: str | None = Field(default=None, description="OpenAI's system_fingerprint, when sent.")
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime = Field(default_factory=utcnow)


class ResponseAnalytics(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    output_tokens_estimated: bool = Field(
        default=False, description="True when the provider reported no usage and output_tokens counts streamed chunks."
    )
    cached_tokens: int = 0
    latency_ms: float = Field(description="Wall time of the call, request sent to last byte (model loading excluded).")
    time_to_first_token_ms: float | None = Field(
        default=None, description="Streamed calls only: request sent (or model loaded) to the first token."
    )
    tokens_per_second: float | None = Field(
        default=None,
        description="Streamed calls with 2+ output tokens: (output_tokens - 1) / (latency - time to first token).",
    )
    load_ms: float | None = Field(default=None, description="Time spent loading the model first (local model), apart.")
    cost_usd: float | None = Field(default=None, description="Estimated cost; None when the price is unknown.")


def tokens_per_second(output_tokens: int, latency_ms: float | None, ttft_ms: float | None) -> float | None:
    """Generation speed: the tokens after the first over the time after the first. None without a
    first-token time or with fewer than two tokens (one token says nothing about speed)."""
    if output_tokens < 2 or latency_ms is None or ttft_ms is None or latency_ms <= ttft_ms:
        return None
    return (output_tokens - 1) / ((latency_ms - ttft_ms) / 1000)


class Attempt(BaseModel):
    """One try at one provider, kept on the response so a user sees what AUTO went through."""

    provider: str
    model: str | None = None
    ok: bool
    error_type: str | None = None
    error: str | None = None
    latency_ms: float | None = None


RouteMode = Literal["manual", "auto", "compare"]


class RoutingInfo(BaseModel):
    mode: RouteMode = "manual"
    policy: RoutingPolicy | None = None
    reason: str | None = Field(default=None, examples=["fastest healthy provider: p50 410 ms"])
    attempts: list[Attempt] = Field(default_factory=list, description="Failed attempts before the one that served.")
    group_id: str | None = Field(default=None, description="Compare group this response belongs to.")


class ChatResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "content": "Packets wait; the answer blooms.",
                    "metadata": {"id": "req_1", "provider": "local", "model": "gemma-3-270m", "finish_reason": "stop"},
                    "analytics": {"input_tokens": 12, "output_tokens": 9, "latency_ms": 240.0, "cost_usd": 0.0},
                }
            ]
        }
    )

    content: str
    metadata: ResponseMetadata
    analytics: ResponseAnalytics
    routing: RoutingInfo = Field(default_factory=RoutingInfo)
    tool_calls: list[ToolCall] | None = Field(
        default=None, description="Calls the model asked for (finish_reason tool_calls)."
    )
    logprobs: dict[str, Any] | None = Field(
        default=None, description="Log probabilities, in OpenAI's shape, when asked for."
    )
    more_choices: list[dict[str, Any]] | None = Field(
        default=None,
        description="Choices after the first, in OpenAI's shape (index, message, finish_reason, logprobs), when an "
        "upstream that takes OpenAI's `n` was asked for several; `content` and the fields above are choice 0.",
    )


# --- stream events: a discriminated union on `type` -------------------------------


class TextDelta(BaseModel):
    type: Literal["text"] = "text"
    text: str
    logprobs: list[dict[str, Any]] | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # only on streams that asked for them
        description="This piece's tokens' log probabilities, in OpenAI's shape, when asked for and streamed.",
    )


class ToolCallDelta(BaseModel):
    """A piece of a tool call, as OpenAI streams them: the first piece of call `index` has its
    id and name, the following ones more of its arguments (JSON text)."""

    type: Literal["tool_call"] = "tool_call"
    index: int = 0
    id: str | None = None
    name: str | None = None
    arguments: str = ""


class StreamStart(BaseModel):
    """Sent once, just before the first text (or tool call) of the attempt that serves: who answers."""

    type: Literal["start"] = "start"
    request_id: str
    provider: str
    model: str
    upstream_id: str | None = Field(default=None, description="The upstream's own id for the answer, when known.")
    system_fingerprint: str | None = None


class StatusNotice(BaseModel):
    """Progress a person should see before text arrives (model loading, falling back...)."""

    type: Literal["status"] = "status"
    message: str
    provider: str | None = None


class StreamDone(BaseModel):
    type: Literal["done"] = "done"
    response: ChatResponse


class StreamIncomplete(BaseModel):
    """The stream broke after text was shown: what arrived is kept, and it is not a success."""

    type: Literal["incomplete"] = "incomplete"
    partial: ChatResponse
    error: ErrorResponse


StreamEvent = Annotated[
    TextDelta | ToolCallDelta | StreamStart | StatusNotice | StreamDone | StreamIncomplete, Field(discriminator="type")
]


# --- status ------------------------------------------------------------------------


class ProviderState(StrEnum):
    ready = "ready"
    not_configured = "not_configured"
    loading = "loading"
    unhealthy = "unhealthy"
    circuit_open = "circuit_open"


class BreakerState(StrEnum):
    closed = "closed"
    open = "open"
    half_open = "half_open"


class ProviderHealth(BaseModel):
    healthy: bool = True
    state: ProviderState = ProviderState.ready
    detail: str | None = Field(default=None, description="What to do when not ready, e.g. 'set GEMINI_API_KEY'.")
    last_check: datetime | None = None


class ProviderPerformance(BaseModel):
    avg_latency_ms: float | None = None
    p50_latency_ms: float | None = None
    p95_latency_ms: float | None = None
    p50_ttft_ms: float | None = None
    p90_ttft_ms: float | None = None
    tokens_per_second: float | None = None


class ProviderReliability(BaseModel):
    success_rate: float | None = Field(default=None, ge=0.0, le=1.0, description="Over the rolling window.")
    last_error: str | None = None
    breaker: BreakerState = BreakerState.closed
    retry_in_s: float | None = Field(default=None, description="Seconds until an open breaker lets a probe through.")


class ProviderUsage(BaseModel):
    total_requests: int = Field(
        default=0,
        description="In a status's `totals`: the requests made (a request's retries and fallbacks count once). For one "
        "provider: the calls sent to it (each attempt is one).",
    )
    total_attempts: int = Field(
        default=0,
        description="Attempts, retries and fallbacks included (rows of the request log). For one provider this is "
        "`total_requests`.",
    )
    successful_requests: int = Field(default=0, description="Requests (or, for one provider, calls) that succeeded.")
    failed_requests: int = Field(
        default=0,
        description="In `totals`: requests that got no answer. For one provider: its calls that failed.",
    )
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0


class ProviderStatus(BaseModel):
    name: str
    display_name: str | None = None
    models: list[str] = Field(default_factory=list)
    health: ProviderHealth = Field(default_factory=ProviderHealth)
    performance: ProviderPerformance = Field(default_factory=ProviderPerformance)
    reliability: ProviderReliability = Field(default_factory=ProviderReliability)
    usage: ProviderUsage = Field(default_factory=ProviderUsage)


class RoutingStateInfo(BaseModel):
    """Where this process keeps its routing state (`/status` shows it as `routing_state`)."""

    model_config = ConfigDict(frozen=True)

    mode: Literal["local", "shared"] = Field(
        description="shared: breakers and AUTO's metrics are shared with every replica through Redis; local: this "
        "process routes on what it alone has seen (no CONDUCTOR_REDIS_URL, or Redis unreachable)."
    )
    backend: str | None = Field(default=None, description="The shared store's address, password hidden.")
    detail: str | None = Field(default=None, description="Why the state is local while a shared store is configured.")
    since: float | None = Field(default=None, description="Epoch seconds when this mode began.")


class LogHealth(BaseModel):
    """What a status page needs to know about the request log's writing in this process
    (`RequestLog.health()`; `/status` shows it as `request_log`)."""

    model_config = ConfigDict(frozen=True)

    pending: int = Field(
        description="Attempts submitted (or taken over from a dead process) and not yet in the database."
    )
    spool_files: int = Field(description="Spool files this process holds.")
    spooled_bytes: int = Field(description="Bytes in them still waiting to be committed.")
    in_memory: int = Field(
        description="Waiting attempts the spool could not take (disk problem): not durable across a kill."
    )
    written: int = Field(description="Attempts this process's background writer has committed.")
    recovered: int = Field(description="Attempts taken over from the spools of processes that died.")
    write_errors: int = Field(description="Attempts (and direct writes) that failed at least once; each counted once.")
    rejected: int = Field(
        description="Attempts the database refused outright, kept in rejected.jsonl in the spool folder."
    )
    corrupt_lines: int = Field(description="Unreadable spool lines skipped (an append cut by a kill or a power cut).")
    spool_errors: int = Field(description="Times the spool could not be written.")
    database_ok: bool = Field(description="False from a failed write until the next one succeeds.")
    last_error: str | None = Field(default=None, description="The last write error, redacted.")
    last_error_at: datetime | None = None
    spool_dir: str | None = None
    schema_error: str | None = Field(
        default=None,
        description="Set when the database's schema is not this code's (a newer release's database, a table or "
        "column missing): what to run or which release to use. Attempts are then set aside in rejected.jsonl, not "
        "retried.",
    )


OverallStatus = Literal["healthy", "degraded", "down"]


class SystemStatus(BaseModel):
    status: OverallStatus = Field(
        description="healthy: every configured provider ready; degraded: some are; down: none."
    )
    providers: dict[str, ProviderStatus]
    totals: ProviderUsage
    started_at: datetime
    uptime_s: float
    request_log: LogHealth | None = Field(
        default=None,
        description="This process's request-log writer: attempts waiting (spooled) to be committed, written, failed "
        "and rejected, and the last write error (redacted). A growing `pending` with `database_ok` false means the "
        "database is not taking writes; nothing is lost while the spool holds them.",
    )
    routing_state: RoutingStateInfo | None = Field(
        default=None, description="Whether breakers and AUTO's metrics are shared with other replicas (Redis) or local."
    )


class ErrorResponse(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "type": "rate_limit",
                    "message": "openai is rate limiting requests; retry after 2 s",
                    "provider": "openai",
                    "status_code": 429,
                    "retryable": True,
                    "request_id": "req_1",
                }
            ]
        }
    )

    type: str = Field(description="Machine-readable kind: authentication, rate_limit, timeout, unavailable, ...")
    message: str = Field(description="What happened and what to change, for a person.")
    provider: str | None = Field(default=None, description="The provider that failed, if any.")
    status_code: int | None = None
    retryable: bool = False
    retry_after: float | None = None
    timestamp: datetime = Field(default_factory=utcnow)
    request_id: str | None = None
    details: Any = Field(default=None, description="Field-level details for validation errors.")


HealthStatus = Literal["ok", "degraded", "down"]


class HealthResponse(BaseModel):
    status: HealthStatus
    timestamp: datetime = Field(default_factory=utcnow)
    providers: dict[str, bool] = Field(default_factory=dict, description="Health check result per configured provider.")
    version: str = "0.1.0"


class Target(BaseModel):
    """One side of a compare: a provider and, optionally, a model."""

    provider: ProviderName
    model: str | None = None

    @property
    def label(self) -> str:
        return f"{self.provider}/{self.model}" if self.model else self.provider


AttemptStatus = Literal["ok", "error", "incomplete"]


class AttemptRecord(BaseModel):
    """One row of the request log: every try at every provider, successful or not."""

    id: str = Field(default_factory=lambda: new_id("att"))
    created_at: datetime = Field(default_factory=utcnow)
    request_id: str = Field(description="The user-level request this attempt belongs to.")
    provider: str
    model: str | None = None
    route: RouteMode = "manual"
    group_id: str | None = Field(default=None, description="Compare group, when route is compare.")
    source: str = Field(default="playground", description="Which process sent it: playground, gateway, ...")
    streamed: bool = False
    status: AttemptStatus
    error_type: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    prompt: str | None = Field(default=None, description="Omitted when prompt logging is off.")
    answer: str | None = None
    attempt_index: int | None = Field(
        default=None,
        ge=0,
        description="Position of this attempt within its request, as logged: 0 the first, then 1, 2... for its "
        "retries and fallbacks. None: not known (a row written by other means); counted as a request of its own.",
    )
    overhead_ms: float | None = Field(
        default=None, description="Time Conductor itself spent on the request, the upstream's time excluded."
    )
    key_id: str | None = Field(
        default=None,
        description="The gateway key the request was made with (its id, never the key); None: the admin key, "
        "the playground or a script.",
    )


class Vote(BaseModel):
    """A person's verdict on a compare group."""

    id: str = Field(default_factory=lambda: new_id("vote"))
    created_at: datetime = Field(default_factory=utcnow)
    group_id: str
    targets: list[str] = Field(min_length=2, max_length=4, description="Target labels in column order.")
    winner: str = Field(description="A target label, or 'tie' or 'both_bad'.")


class CompareEvent(BaseModel):
    """One event of a compare, tagged with the target (column) it belongs to."""

    index: int = Field(description="Position of the target in the compare, 0-based.")
    target: Target
    group_id: str
    event: StreamEvent | None = None
    error: ErrorResponse | None = Field(default=None, description="Set when this target failed before any text.")

    @property
    def finished(self) -> bool:
        return self.error is not None or isinstance(self.event, (StreamDone, StreamIncomplete))


StreamIncomplete.model_rebuild()
