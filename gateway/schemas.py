"""Wire shapes of the OpenAI-compatible API, and the error body every endpoint returns.

The request models are strict (a JSON string is not a number) so that what the OpenAPI
document promises is exactly what the gateway accepts. Unknown OpenAI parameters
(``top_p``, ``seed``, ``response_format``...) are ignored rather than rejected, so existing
clients work unchanged; the ones Conductor cannot honour (``n`` > 1, ``tools``) are rejected
with a sentence saying so.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainValidator, WithJsonSchema

from conductor_core.models import Attempt, ChatRequest, ErrorResponse

__all__ = [
    "ChatCompletionRequest",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ConductorInfo",
    "GatewayError",
    "ModelCard",
    "ModelList",
    "OpenAIErrorBody",
    "StreamOptions",
    "bounds",
]


def bounds(field: str) -> tuple[Any, Any]:
    """(lowest, highest) allowed for a numeric field of `ChatRequest`: one source of truth for
    the core's limits, the OpenAI shape's limits and the error sentences."""
    low = high = None
    for item in ChatRequest.model_fields[field].metadata:
        low = getattr(item, "ge", low)
        high = getattr(item, "le", high)
    return low, high


def integral(value: Any) -> Any:
    """JSON Schema counts 300.0 as an integer, so the gateway does too (but not "300" or true)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_TEMPERATURE = bounds("temperature")
_MAX_TOKENS = bounds("max_tokens")
# Bounds before the validator, or pydantic writes them as "ge"/"le", which JSON Schema ignores.
MaxTokens = Annotated[int, Field(ge=_MAX_TOKENS[0], le=_MAX_TOKENS[1]), BeforeValidator(integral)]
OneChoice = Annotated[int, Field(ge=1, le=1), BeforeValidator(integral)]


def _content_text(value: Any) -> str:
    """OpenAI content (a string, or a list of text parts) as one string."""
    if isinstance(value, str):
        text = value
    elif isinstance(value, list):
        pieces = []
        for part in value:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise ValueError("only text parts ({'type': 'text', 'text': '...'}) are supported, not images, audio or files")
            piece = part.get("text")
            if not isinstance(piece, str) or not piece:
                raise ValueError("a text part needs a non-empty 'text' string")
            pieces.append(piece)
        text = "".join(pieces)
    else:
        raise ValueError("must be a string or a list of text parts")
    if not text:
        raise ValueError("must not be empty")
    return text


MessageContent = Annotated[
    str,
    PlainValidator(_content_text),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "string", "minLength": 1},
                {
                    "type": "array",
                    "minItems": 1,
                    "items": {
                        "type": "object",
                        "required": ["type", "text"],
                        "properties": {"type": {"type": "string", "enum": ["text"]}, "text": {"type": "string", "minLength": 1}},
                    },
                },
            ],
            "title": "Content",
            "description": "The message text, or a list of text parts (joined). Images, audio and files are not supported.",
        }
    ),
]


class OpenAIMessage(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    role: Literal["system", "developer", "user", "assistant"] = Field(
        description="Who wrote it; 'developer' is treated as 'system'. Tool messages are not supported."
    )
    content: MessageContent
    name: str | None = Field(default=None, description="Accepted and ignored.")


class StreamOptions(BaseModel):
    model_config = ConfigDict(strict=True, extra="ignore")

    include_usage: bool | None = Field(
        default=None, description="Send a last chunk with `usage` and an empty `choices` list before [DONE]."
    )


class ChatCompletionRequest(BaseModel):
    """OpenAI's Chat Completions request. `model` picks the provider: `auto`, a provider name
    (its default model), or `provider/model`."""

    model_config = ConfigDict(
        strict=True,
        extra="ignore",
        json_schema_extra={
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
                    "model": "gemini/gemini-2.5-flash",
                    "messages": [{"role": "user", "content": "Write a haiku about latency."}],
                    "stream": True,
                    "stream_options": {"include_usage": True},
                },
            ]
        },
    )

    model: str = Field(
        min_length=1,
        description="'auto' (Conductor chooses), a provider name such as 'local' (its default model), or "
        "'provider/model' such as 'gemini/gemini-2.5-flash'. GET /v1/models lists them.",
        examples=["auto", "local", "gemini/gemini-2.5-flash", "ollama/llama3.2"],
    )
    messages: list[OpenAIMessage] = Field(min_length=1, description="The conversation, oldest first (at least one).")
    temperature: float | None = Field(
        default=None, ge=_TEMPERATURE[0], le=_TEMPERATURE[1], description="Sampling temperature; default 0.7."
    )
    max_tokens: MaxTokens | None = Field(default=None, description="Most tokens to generate; default 1000.")
    max_completion_tokens: MaxTokens | None = Field(
        default=None, description="Newer name for max_tokens; wins if both are set."
    )
    stream: bool | None = Field(default=False, description="Answer with server-sent events in OpenAI's chunk format.")
    stream_options: StreamOptions | None = None
    n: OneChoice | None = Field(default=None, description="Number of choices: only 1 is supported.")
    tools: list[dict[str, Any]] | None = Field(
        default=None, max_length=0, description="Not supported: a request with tools is rejected."
    )
    policy: Literal["balanced", "fastest", "cheapest", "reliable"] | None = Field(
        default=None,
        description="Conductor extension: the AUTO routing policy for this request (model 'auto' only). "
        "OpenAI clients pass it with extra_body.",
    )
    user: str | None = Field(default=None, description="Accepted and ignored.")


# --- responses ----------------------------------------------------------------------------


class ConductorInfo(BaseModel):
    """Conductor's figures for one answer. OpenAI clients ignore this extra field."""

    request_id: str
    provider: str = Field(examples=["gemini"])
    model: str = Field(examples=["gemini-2.5-flash"])
    route: Literal["manual", "auto", "compare"] = "manual"
    policy: str | None = None
    reason: str | None = Field(default=None, description="Why this provider served (AUTO).")
    attempts: list[Attempt] = Field(default_factory=list, description="Failed attempts before the one that served.")
    latency_ms: float | None = None
    time_to_first_token_ms: float | None = None
    tokens_per_second: float | None = None
    cost_usd: float | None = Field(default=None, description="Estimated; null when the price is unknown.")


class CompletionUsage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    prompt_tokens_details: dict[str, int] | None = None


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str
    refusal: str | None = None


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: str = Field(examples=["stop"], description="stop, length or content_filter.")
    logprobs: None = None


class ChatCompletion(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "chatcmpl-3f2a9c",
                    "object": "chat.completion",
                    "created": 1767225600,
                    "model": "gemini/gemini-2.5-flash",
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": "Packets wait; the answer blooms.", "refusal": None},
                            "finish_reason": "stop",
                            "logprobs": None,
                        }
                    ],
                    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21},
                    "system_fingerprint": None,
                    "conductor": {
                        "request_id": "req_3f2a9c",
                        "provider": "gemini",
                        "model": "gemini-2.5-flash",
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


class ChunkDelta(BaseModel):
    role: Literal["assistant"] | None = None
    content: str | None = None


class ChunkChoice(BaseModel):
    index: int = 0
    delta: ChunkDelta
    finish_reason: str | None = None
    logprobs: None = None


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
    id: str = Field(examples=["gemini/gemini-2.5-flash"])
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


# --- errors -------------------------------------------------------------------------------


class OpenAIErrorBody(BaseModel):
    message: str
    type: str = Field(examples=["invalid_request_error"], description="OpenAI's error class.")
    param: str | None = Field(default=None, description="The request field at fault, if any.")
    code: str | None = Field(default=None, description="Conductor's machine-readable kind, e.g. rate_limit.")


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
