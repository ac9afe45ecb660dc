"""Pydantic models at every boundary: requests, responses, stream events, status and errors.

Every model documents itself (field descriptions and examples) so that the gateway's
OpenAPI page and the playground's tooltips come from one place.
"""

from __future__ import annotations

import os
import threading
from datetime import datetime, timezone
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

__all__ = [
    "MessageRole",
    "Provider",
    "ProviderName",
    "register_provider_name",
    "known_provider_names",
    "ChatMessage",
    "ChatRequest",
    "RoutingPolicy",
    "Usage",
    "ResponseMetadata",
    "ResponseAnalytics",
    "Attempt",
    "RoutingInfo",
    "ChatResponse",
    "TextDelta",
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
    "SystemStatus",
    "ErrorResponse",
    "HealthResponse",
    "Target",
    "AttemptRecord",
    "Vote",
    "CompareEvent",
    "utcnow",
    "new_id",
]


def utcnow() -> datetime:
    return datetime.now(timezone.utc)


def new_id(prefix: str = "req") -> str:
    # 20 random hex digits, as uuid4().hex[:20] gave, at a sixth of the cost (several ids a request).
    return f"{prefix}_{os.urandom(10).hex()}"


class MessageRole(StrEnum):
    system = "system"
    user = "user"
    assistant = "assistant"


class Provider(StrEnum):
    """The built-in providers. Named OpenAI-compatible endpoints from configuration
    (``ollama``, ``groq``...) are addressed by their name as well: see `ProviderName`."""

    auto = "auto"
    local = "local"
    gemini = "gemini"
    openai = "openai"
    anthropic = "anthropic"


# Names of configured OpenAI-compatible endpoints join the built-ins here when the
# registry reads configuration, so a request can say provider="ollama".
_BUILTIN_NAMES = tuple(p.value for p in Provider)
_extra_names: set[str] = set()
_names_lock = threading.Lock()
# Every ChatRequest checks its provider name: the list and its set are rebuilt when a name
# is registered, not on each request. One tuple, so a reader never sees them out of step.
_known: tuple[tuple[str, ...], frozenset[str]] = (_BUILTIN_NAMES, frozenset(_BUILTIN_NAMES))


def register_provider_name(name: str) -> None:
    global _known
    with _names_lock:
        if name in _extra_names:
            return
        _extra_names.add(name)
        names = _BUILTIN_NAMES + tuple(sorted(_extra_names.difference(_BUILTIN_NAMES)))
        _known = (names, frozenset(names))


def known_provider_names() -> list[str]:
    return list(_known[0])


def _check_provider_name(value: str) -> str:
    name = value.strip().lower()
    if name not in _known[1]:
        raise ValueError(f"unknown provider {value!r}; available: {', '.join(known_provider_names())}")
    return name


ProviderName = Annotated[
    str,
    AfterValidator(_check_provider_name),
    Field(description="A built-in provider, a configured endpoint name, or 'auto'.", examples=["auto", "local", "gemini"]),
]


class RoutingPolicy(StrEnum):
    balanced = "balanced"
    fastest = "fastest"
    cheapest = "cheapest"
    reliable = "reliable"


class ChatMessage(BaseModel):
    model_config = ConfigDict(
        json_schema_extra={"examples": [{"role": "user", "content": "Explain circuit breakers in one sentence."}]}
    )

    role: MessageRole = Field(description="Who wrote the message: system, user or assistant.")
    content: str = Field(min_length=1, description="The message text (at least one character).")


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
            ]
        }
    )

    provider: ProviderName = Field(default="auto", description="Provider to use; 'auto' lets Conductor choose.")
    messages: list[ChatMessage] = Field(min_length=1, description="The conversation, oldest first (at least one).")
    model: str | None = Field(default=None, description="Model name; None uses the provider's default.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0, description="Sampling temperature, 0.0 to 2.0.")
    max_tokens: int = Field(default=1000, ge=1, le=4000, description="Most tokens to generate, 1 to 4000.")
    top_p: float | None = Field(
        default=None, ge=0.0, le=1.0, description="Nucleus sampling, 0.0 to 1.0; None uses the provider's default."
    )
    stop: list[Annotated[str, Field(min_length=1)]] | None = Field(
        default=None, max_length=4, description="Up to 4 sequences that end the answer when generated."
    )
    seed: int | None = Field(
        default=None, ge=0, le=2**31 - 1, description="Ask for repeatable sampling (providers that support it)."
    )
    policy: RoutingPolicy | None = Field(
        default=None, description="AUTO policy for this request; None uses the configured default."
    )


class Usage(BaseModel):
    input_tokens: int = Field(default=0, ge=0, description="Prompt tokens as reported by the provider.")
    output_tokens: int = Field(default=0, ge=0, description="Generated tokens as reported by the provider.")
    cached_tokens: int = Field(default=0, ge=0, description="Prompt tokens served from the provider's cache.")


class ResponseMetadata(BaseModel):
    id: str = Field(default_factory=new_id, description="Conductor's id for this response.")
    provider: str = Field(description="Provider that served the answer.", examples=["local"])
    model: str = Field(description="Model that actually answered.", examples=["gemma-3-270m"])
    finish_reason: str | None = Field(default=None, description="Why generation stopped: stop, length, ...")
    started_at: datetime = Field(default_factory=utcnow)
    finished_at: datetime = Field(default_factory=utcnow)


class ResponseAnalytics(BaseModel):
    input_tokens: int = 0
    output_tokens: int = 0
    cached_tokens: int = 0
    latency_ms: float = Field(description="Wall time of the call, request sent to last byte.")
    time_to_first_token_ms: float | None = Field(default=None, description="Streamed calls only.")
    tokens_per_second: float | None = Field(default=None, description="Output tokens over generation time.")
    cost_usd: float | None = Field(default=None, description="Estimated cost; None when the price is unknown.")


class Attempt(BaseModel):
    """One try at one provider, kept on the response so a user sees what AUTO went through."""

    provider: str
    model: str | None = None
    ok: bool
    error_type: str | None = None
    error: str | None = None
    latency_ms: float | None = None


class RoutingInfo(BaseModel):
    mode: Literal["manual", "auto", "compare"] = "manual"
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


# --- stream events: a discriminated union on `type` -------------------------------


class TextDelta(BaseModel):
    type: Literal["text"] = "text"
    text: str


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


StreamEvent = Annotated[TextDelta | StatusNotice | StreamDone | StreamIncomplete, Field(discriminator="type")]


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
    total_requests: int = 0
    successful_requests: int = 0
    failed_requests: int = 0
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


class SystemStatus(BaseModel):
    status: Literal["healthy", "degraded", "down"] = Field(
        description="healthy: every configured provider ready; degraded: some are; down: none."
    )
    providers: dict[str, ProviderStatus]
    totals: ProviderUsage
    started_at: datetime
    uptime_s: float


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


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "down"]
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


class AttemptRecord(BaseModel):
    """One row of the request log: every try at every provider, successful or not."""

    id: str = Field(default_factory=lambda: new_id("att"))
    created_at: datetime = Field(default_factory=utcnow)
    request_id: str = Field(description="The user-level request this attempt belongs to.")
    provider: str
    model: str | None = None
    route: Literal["manual", "auto", "compare"] = "manual"
    group_id: str | None = Field(default=None, description="Compare group, when route is compare.")
    source: str = Field(default="playground", description="Which process sent it: playground, gateway, ...")
    streamed: bool = False
    status: Literal["ok", "error", "incomplete"]
    error_type: str | None = None
    error_message: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cost_usd: float | None = None
    prompt: str | None = Field(default=None, description="Omitted when prompt logging is off.")
    answer: str | None = None


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
