"""Wire shapes of the OpenAI-compatible API, and the error body every endpoint returns.

The request models are strict (a JSON string is not a number) so that what the OpenAPI
document promises is exactly what the gateway accepts. Every Chat Completions parameter the
client sends arrives (see `gateway.openai_api.to_chat_request`): those Conductor models are
checked and translated for each provider; the others (reasoning_effort, service_tier, store,
metadata, any newer one) are the upstream's business, sent as they are to OpenAI and
OpenAI-compatible upstreams. A provider that cannot honour one answers 400 naming it. `n` > 1
is sent on where the upstream takes it, and made as `n` calls where it does not.
"""

from __future__ import annotations

from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
)
from pydantic.fields import FieldInfo

from conductor_core.models import (
    CONTROL_CHARACTERS,
    FILE_URL_PATTERN,
    IMAGE_URL_PATTERN,
    Attempt,
    ChatRequest,
    ErrorResponse,
    FilePart,
    ImagePart,
    NamedToolChoice,
    ResponseFormat,
    Tool,
    ToolCall,
    ToolFunction,
    ToolName,
    check_model_name,
    needs,
)

__all__ = [
    "ChatCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ConductorInfo",
    "GatewayError",
    "ModelCard",
    "ModelList",
    "OpenAIChatRequest",
    "OpenAIErrorBody",
    "PublicHealth",
    "StreamOptions",
    "bounds",
]


def bounds(field: str, model: type[BaseModel] = ChatRequest) -> tuple[Any, Any]:
    """(lowest, highest) allowed for a numeric field of `model` (None where unbounded): one
    source of truth for the core's limits, the OpenAI shape's limits and the error sentences."""
    info = model.model_fields[field]
    return _bounds_of([*info.metadata, info.annotation])


def _bounds_of(items: list[Any]) -> tuple[Any, Any]:
    low = high = None
    for item in items:
        if get_origin(item) is Annotated:
            inner = _bounds_of(list(get_args(item)[1:]))
        elif get_origin(item) in (Union, UnionType):
            inner = _bounds_of(list(get_args(item)))
        elif isinstance(item, FieldInfo):  # Field(ge=..., le=...) inside an Annotated
            inner = _bounds_of(list(item.metadata))
        elif get_origin(item) is dict:  # a map's values (logit_bias)
            inner = _bounds_of([get_args(item)[1]])
        else:
            inner = (getattr(item, "ge", None), getattr(item, "le", None))
        low = inner[0] if inner[0] is not None else low
        high = inner[1] if inner[1] is not None else high
    return low, high


def integral(value: Any) -> Any:
    """JSON Schema counts 300.0 as an integer, so the gateway does too (but not "300" or true)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


# A blank model is ASCII whitespace only. str.strip() also drops controls such as \x1c, which
# a JSON Schema pattern's \s does not: an explicit class means the same to both.
BLANK = " \t\n\r\f\v"
MODEL_NOT_BLANK = r"[^ \t\n\r\f\v]"  # has a character not in BLANK
#: A model name holds no control character (a JSON Schema `not`: a pattern alone would need
#: anchors, and `$` means different things to different regex engines).
NO_CONTROL_CHARACTERS: dict[str, Any] = {"type": "string", "pattern": CONTROL_CHARACTERS}
_TEMPERATURE = bounds("temperature")
_SEED = bounds("seed")
# Bounds before the validator, or pydantic writes them as "ge"/"le", which JSON Schema ignores.
# OpenAI's contract for the token cap: an integer >= 1 (the model's own limit is the upstream's to say).
MaxTokens = Annotated[int, Field(ge=1), BeforeValidator(integral)]
#: OpenAI's limit on `n`.
Choices = Annotated[int, Field(ge=1, le=128), BeforeValidator(integral)]


class OpenAIChatRequest(ChatRequest):
    """The core's request as the OpenAI route builds it: OpenAI's contract for `max_tokens` (an
    integer >= 1, no Conductor cap; a provider whose model cannot produce that many says so)
    instead of the seed's 1-4000."""

    max_tokens: int | None = Field(default=None, ge=1, description="Most tokens to generate; None sends no cap.")


def _content_text(value: Any) -> str:
    """OpenAI content (a string, or a list of text parts) as one string."""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        pieces = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ValueError(
                    "only text parts ({'type': 'text', 'text': '...'}) are supported here: images and files go in "
                    "user messages"
                )
            piece = part.get("text")
            if not isinstance(piece, str) or not piece:
                raise ValueError("a text part needs a non-empty 'text' string")
            pieces.append(piece)
        return "".join(pieces)
    raise ValueError("must be a string or a list of text parts")


def _text_content(value: Any) -> Any:
    return None if value is None else _content_text(value)


_PARTS = {
    "type": "array",
    "items": {
        "type": "object",
        "required": ["type", "text"],
        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string", "minLength": 1}},
    },
}
_DESCRIPTION = "The message text, or a list of text parts (joined). Images and files go in user messages."
#: Text that must not be empty (system and developer messages).
RequiredText = Annotated[
    str,
    BeforeValidator(_text_content),
    Field(min_length=1),
    WithJsonSchema(
        {"anyOf": [{"type": "string", "minLength": 1}, {**_PARTS, "minItems": 1}], "description": _DESCRIPTION}
    ),
]
#: Text that may be empty or null (an assistant that only calls tools; a tool's result).
OptionalText = Annotated[
    str | None,
    BeforeValidator(_text_content),
    WithJsonSchema({"anyOf": [{"type": "string"}, _PARTS, {"type": "null"}], "description": _DESCRIPTION}),
]


# --- a user message's parts: text, images and PDFs (OpenAI's content parts) -------------------


class TextContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["text"]
    text: str = Field(min_length=1)


class ImageURL(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    url: str = Field(
        min_length=1,
        description="data:image/png;base64,... (PNG, JPEG, WebP or GIF, at most 5 MB) or an http(s) URL the "
        "provider fetches itself.",
        json_schema_extra={"pattern": IMAGE_URL_PATTERN},  # checked by ImagePart, with the size
    )
    detail: Literal["auto", "low", "high"] | None = Field(default=None, description="OpenAI's; others ignore it.")

    @field_validator("url")
    @classmethod
    def _url(cls, value: str) -> str:
        return _checked(ImagePart, url=value).url


class ImageContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["image_url"]
    image_url: ImageURL


class FileData(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    file_data: str = Field(
        min_length=1,
        description="The PDF as a data URL: data:application/pdf;base64,... (at most 5 MB).",
        json_schema_extra={"pattern": FILE_URL_PATTERN},  # checked by FilePart, with the size
    )
    filename: str | None = None

    @field_validator("file_data")
    @classmethod
    def _file_data(cls, value: str) -> str:
        return _checked(FilePart, url=value).url


class FileContentPart(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    type: Literal["file"]
    file: FileData


def _checked(part: type[ImagePart] | type[FilePart], **fields: Any) -> Any:
    """The core's part, or its complaint as this field's (the core's rules, said once)."""
    try:
        return part.model_validate(fields)
    except ValidationError as error:
        raise ValueError(error.errors()[0]["msg"].removeprefix("Value error, ")) from None


_REFUSED_PART = {
    "input_audio": "audio parts (input_audio) are not supported: send text, image_url or file parts",
    "image_file": "image_file parts (the Assistants API's) are not supported: send the image as image_url",
}


def _user_parts(value: Any) -> Any:
    """Clear words for the parts OpenAI has and Conductor does not pass on (before the shape
    is checked, which would only say the part matches none of text, image_url and file)."""
    if isinstance(value, list):
        for part in value:
            if not isinstance(part, dict):
                continue
            kind = part.get("type")
            if isinstance(kind, str) and kind in _REFUSED_PART:
                raise ValueError(_REFUSED_PART[kind])
            file = part.get("file")
            if kind == "file" and isinstance(file, dict) and "file_id" in file and "file_data" not in file:
                raise ValueError(
                    "file.file_id is not supported (Conductor has no Files API): send the PDF inline as "
                    "file.file_data, data:application/pdf;base64,..."
                )
    return value


#: One part of a user message, by `type`.
UserPart = Annotated[TextContentPart | ImageContentPart | FileContentPart, Field(discriminator="type")]
UserContent = Annotated[
    Annotated[str, Field(min_length=1), Tag("text")] | Annotated[list[UserPart], Field(min_length=1), Tag("parts")],
    # Text or parts by the value's type, so an error names only the form that was sent.
    Discriminator(lambda value: "parts" if isinstance(value, list) else "text"),
    BeforeValidator(_user_parts),
    Field(
        description="The message text, or its parts in order: text, images (image_url: a data URL or an http(s) "
        "URL) and PDFs (file with file_data). Audio and file_id are not supported."
    ),
]


class SystemMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer"] = Field(description="'developer' is treated as 'system'.")
    content: RequiredText
    name: str | None = Field(default=None, description="Passed on to OpenAI-compatible upstreams.")


class UserMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["user"]
    content: UserContent
    name: str | None = Field(default=None, description="Passed on to OpenAI-compatible upstreams.")


class AssistantTurn(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["assistant"]
    content: OptionalText = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = Field(default=None, description="The tool calls it made.")


class ToolMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["tool"]
    content: OptionalText = None
    tool_call_id: str = Field(min_length=1, description="The assistant's tool call this answers.")


#: One message of an OpenAI conversation, by role.
OpenAIMessage = Annotated[SystemMessage | UserMessage | AssistantTurn | ToolMessage, Field(discriminator="role")]


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="allow")  # newer options travel on to OpenAI upstreams

    include_usage: bool | None = Field(
        default=None, description="Send a last chunk with `usage` and an empty `choices` list before [DONE]."
    )


class ChatCompletionRequest(BaseModel):
    """OpenAI's Chat Completions request. `model` picks the provider: `auto`, a provider name
    (its default model), or `provider/model`. Parameters not listed here (reasoning_effort,
    service_tier, store, metadata, prediction, ...) are sent as they are to OpenAI and
    OpenAI-compatible upstreams; other providers answer 400 naming them."""

    model_config = ConfigDict(
        strict=True,
        extra="allow",
        json_schema_extra={
            # What the validators below check: OpenAI refuses these without what they choose from.
            "allOf": [needs("tool_choice", "tools"), needs("function_call", "functions")],
            "examples": [
                {
                    "model": "auto",
                    "messages": [
                        {"role": "system", "content": "Answer in one sentence."},
                        {"role": "user", "content": "What is a circuit breaker?"},
                    ],
                    "temperature": 0.7,
                    "max_tokens": 128,
                },
                {
                    "model": "gemini/gemini-3.5-flash-lite",
                    "messages": [{"role": "user", "content": "Write a haiku about latency."}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ],
        },
    )

    model: str = Field(
        min_length=1,
        description="'auto' (Conductor chooses), a provider name such as 'local' (its default model), "
        "'provider/model' such as 'gemini/gemini-3.5-flash-lite' (GET /v1/models lists them), or a saved prompt: "
        "'prompt:NAME@LABEL', 'prompt:NAME@3' (version 3), 'prompt:NAME' (its production label).",
        examples=[
            "auto",
            "local",
            "gemini/gemini-3.5-flash-lite",
            "ollama/llama3.2",
            "prompt:support-reply@production",
        ],
        # Documented, checked by the validator below (which gives the clearer message).
        json_schema_extra={"pattern": MODEL_NOT_BLANK, "not": NO_CONTROL_CHARACTERS},
    )
    messages: list[OpenAIMessage] = Field(min_length=1, description="The conversation, oldest first (at least one).")
    temperature: float | None = Field(
        default=None,
        ge=_TEMPERATURE[0],
        le=_TEMPERATURE[1],
        description="Sampling temperature; unset: the provider's default.",
    )
    max_tokens: MaxTokens | None = Field(default=None, description="Most tokens to generate; unset: no cap is sent.")
    max_completion_tokens: MaxTokens | None = Field(
        default=None, description="Newer name for max_tokens; wins if both are set."
    )
    stream: bool | None = Field(default=False, description="Answer with server-sent events in OpenAI's chunk format.")
    stream_options: StreamOptions | None = None
    n: Choices | None = Field(
        default=None,
        description="Number of choices (1-128). OpenAI and OpenAI-compatible upstreams are sent `n` and answer all "
        "of them in one call (streamed: `n` calls). Anthropic, Gemini, the local model and `auto` get `n` calls at "
        "once (each an attempt in the request log; with `auto` each is routed on its own), answered as choices "
        "0..n-1 with their usage and cost summed. Streamed, every chunk carries its choice's index.",
    )
    top_p: float | None = Field(default=None, ge=0.0, le=1.0, description="Nucleus sampling, 0 to 1.")
    stop: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Annotated[str, Field(min_length=1)]], Field(max_length=4)]
        | None
    ) = Field(default=None, description="Up to 4 sequences that end the answer.")
    seed: Annotated[int, Field(ge=_SEED[0], le=_SEED[1]), BeforeValidator(integral)] | None = Field(
        default=None, description="Repeatable sampling."
    )
    presence_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    frequency_penalty: float | None = Field(default=None, ge=-2.0, le=2.0)
    logit_bias: dict[str, Annotated[float, Field(ge=-100, le=100)]] | None = Field(
        default=None, description="Token id -> bias (-100 to 100)."
    )
    logprobs: bool | None = Field(default=None, description="Return log probabilities of the output tokens.")
    top_logprobs: Annotated[int, Field(ge=0, le=20), BeforeValidator(integral)] | None = None
    response_format: ResponseFormat | None = Field(
        default=None, description="{'type': 'json_object'} or {'type': 'json_schema', 'json_schema': {...}}."
    )
    tools: list[Tool] | None = Field(default=None, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    functions: list[ToolFunction] | None = Field(
        default=None, description="Deprecated form of tools: taken as tools (answers carry function_call)."
    )
    function_call: Literal["none", "auto"] | ToolName | None = Field(
        default=None, description="Deprecated form of tool_choice."
    )
    policy: Literal["balanced", "fastest", "cheapest", "reliable", "preferred", "evaluated"] | None = Field(
        default=None,
        description="Conductor extension: the AUTO routing policy for this request (model 'auto' only; "
        "'preferred' ranks by blind-vote rating, as 'balanced' where too few votes; 'evaluated', with a saved "
        "prompt, by the targets' pass rates on it, as 'balanced' without). "
        "OpenAI clients pass it with extra_body.",
    )
    user: str | None = Field(default=None, description="End-user id: passed on where the provider has one.")
    variables: dict[str, Any] | None = Field(
        default=None,
        description="Conductor extension: values for a saved prompt's {{variables}}, with model "
        "'prompt:NAME@LABEL' only (name -> text; numbers and other JSON values are written as JSON). OpenAI clients "
        "pass it with extra_body.",
        examples=[{"company": "Acme", "question": "Where is my parcel?"}],
    )

    @field_validator("model")
    @classmethod
    def _model_not_blank(cls, value: str) -> str:
        if not value.strip(BLANK):
            raise ValueError("must not be blank: use 'auto', a provider name or 'provider/model'")
        check_model_name(value)
        return value

    # OpenAI refuses a tool choice without tools (400); so does the gateway, rather than drop it.
    @field_validator("tool_choice")
    @classmethod
    def _tool_choice_needs_tools(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not info.data.get("tools"):
            raise ValueError("needs tools: send the functions the model may call in tools, or leave tool_choice out")
        return value

    @field_validator("function_call")
    @classmethod
    def _function_call_needs_functions(cls, value: Any, info: ValidationInfo) -> Any:
        if value is not None and not info.data.get("functions"):
            raise ValueError("needs functions: send the functions the model may call, or leave function_call out")
        return value


# --- responses ----------------------------------------------------------------------------


class ConductorInfo(BaseModel):
    """Conductor's figures for one answer. OpenAI clients ignore this extra field."""

    request_id: str
    provider: str = Field(examples=["gemini"])
    model: str = Field(examples=["gemini-3.5-flash-lite"])
    route: Literal["manual", "auto", "compare"] = "manual"
    policy: str | None = None
    reason: str | None = Field(default=None, description="Why this provider served (AUTO).")
    attempts: list[Attempt] = Field(default_factory=list, description="Failed attempts before the one that served.")
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    tokens_per_second: float | None = None
    cost_usd: float | None = Field(default=None, description="Estimated; null when the price is unknown.")
    overhead_ms: float | None = Field(
        default=None,
        description="Time spent in Conductor, the upstream's excluded (as in the x-conductor-overhead-ms header, "
        "which for a stream can only hold the time before its first byte; this is the whole figure).",
    )


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str | None
    refusal: str | None = None
    tool_calls: list[ToolCall] | None = None
    function_call: dict[str, Any] | None = Field(default=None, description="Only when the request used `functions`.")


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = Field(examples=["stop"], description="stop, length, content_filter or tool_calls.")
    logprobs: dict[str, Any] | None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "chatcmpl-3f2a9c",
                    "object": "chat.completion",
                    "created": 1767225600,
                    "model": "gemini/gemini-3.5-flash-lite",
                    "choices": [
                        {
                            "index": 0,
                            "message": {
                                "role": "assistant",
                                "content": "Packets wait; the answer blooms.",
                                "refusal": None,
                            },
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
                    "system_fingerprint": None,
                    "conductor": {
                        "request_id": "req_3f2a9c",
                        "provider": "gemini",
                        "model": "gemini-3.5-flash-lite",
                        "route": "auto",
                        "policy": "balanced",
                        "reason": "best balance of speed, reliability and cost: p50 latency 410 ms, 100% success, est. $0.00002",
                        "attempts": [],
                        "latency_ms": 412.5,
                        "cost_usd": 0.00002,
                    },
                }
            ]
        }
    )

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str = Field(description="'provider/model' that answered.")
    choices: list[Choice]
    usage: CompletionUsage
    system_fingerprint: str | None = None
    conductor: ConductorInfo


class ChunkToolCall(BaseModel):
    index: int
    id: str | None = None
    type: Literal["function"] | None = None
    function: dict[str, str] | None = None


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ChunkToolCall] | None = None
    function_call: dict[str, str] | None = Field(default=None, description="Only when the request used `functions`.")


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: dict[str, Any] | None = None


class ChatCompletionChunk(BaseModel):
    """One server-sent event of a streamed answer (`data: {...}`). The chunk with the
    finish_reason carries `conductor`; with include_usage a last chunk carries `usage`
    and no choices; `data: [DONE]` ends a complete stream. A stream that breaks after text
    ends with `event: error` and an error body instead, and no [DONE]."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: CompletionUsage | None = None
    system_fingerprint: str | None = None
    conductor: ConductorInfo | None = None


class ModelCard(BaseModel):
    id: str = Field(examples=["gemini/gemini-3.5-flash-lite"])
    object: Literal["model"] = "model"
    created: int
    owned_by: str = Field(examples=["gemini"], description="The provider, or 'conductor' for auto.")


class ModelList(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "object": "list",
                    "data": [
                        {"id": "auto", "object": "model", "created": 1767225600, "owned_by": "conductor"},
                        {"id": "local/gemma-3-270m", "object": "model", "created": 1767225600, "owned_by": "local"},
                    ],
                }
            ]
        }
    )

    object: Literal["list"] = "list"
    data: list[ModelCard]


class PublicHealth(BaseModel):
    """What /health tells a caller without the gateway's key (a load balancer's probe): only
    whether the gateway can serve. Which providers it has is for key holders."""

    model_config = ConfigDict(json_schema_extra={"examples": [{"status": "up"}]})

    status: Literal["up", "down"] = Field(description="up: at least one provider is healthy; down: none is.")


# --- errors -------------------------------------------------------------------------------


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"], description="OpenAI's error class.")
    param: str | None = Field(default=None, description="The request field at fault, if any.")
    code: str | None = Field(
        default=None,
        description="The upstream provider's own code for a 4xx it answered (e.g. context_length_exceeded), else "
        "Conductor's machine-readable kind (the top-level `type`), e.g. rate_limit.",
    )


class GatewayError(ErrorResponse):
    """Every error the gateway returns: Conductor's `ErrorResponse` fields, plus OpenAI's
    `error` object so that OpenAI clients raise their usual exceptions. `status_code` is the
    HTTP status of this response; an upstream provider's own status is in
    `details.upstream_status_code`."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "error": {
                        "message": "temperature must be between 0.0 and 2.0, got 3",
                        "type": "invalid_request_error",
                        "param": "temperature",
                        "code": "validation_error",
                    },
                    "type": "validation_error",
                    "message": "temperature must be between 0.0 and 2.0, got 3",
                    "provider": None,
                    "status_code": 400,
                    "retryable": False,
                    "retry_after": None,
                    "timestamp": "2026-01-01T00:00:00Z",
                    "request_id": "req_1",
                    "details": [{"field": "temperature", "message": "temperature must be between 0.0 and 2.0, got 3"}],
                },
                {
                    "error": {
                        "message": "openai is rate limiting requests; retry after 2 s (Rate limit reached)",
                        "type": "rate_limit_error",
                        "param": None,
                        "code": "rate_limit",
                    },
                    "type": "rate_limit",
                    "message": "openai is rate limiting requests; retry after 2 s (Rate limit reached)",
                    "provider": "openai",
                    "status_code": 429,
                    "retryable": True,
                    "retry_after": 2.0,
                    "timestamp": "2026-01-01T00:00:00Z",
                    "request_id": "req_2",
                    "details": {"upstream_status_code": 429, "attempts": []},
                },
            ]
        }
    )

    error: OpenAIErrorBody
