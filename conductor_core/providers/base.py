"""The interface every provider follows.

A provider file supplies small async hooks: `_complete` (one call, whole answer), `_stream`
(an async generator of pieces: text, tool-call pieces, then the final `Completion`),
`_map_error` (its SDK's exceptions -> our tree), `_health` and `_list_models`. The public
`achat` and `astream` here wrap those hooks with the timing, time to first token, cost,
error mapping and per-provider counters, so that no provider measures itself differently.

Waiting costs no thread: cloud providers use their SDK's async client, the local model
runs in one worker thread of its own. `chat_completion`, `stream`, `health_check` and
`get_available_models` are the same calls for synchronous code (through `conductor_core.aio`).
"""

from __future__ import annotations

import asyncio
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import AsyncGenerator, Callable, Iterator
from contextlib import aclosing
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, ClassVar, TypeVar, cast

from .. import aio, overhead, pricing
from ..errors import BadRequestError, ProviderError, StreamInterruptedError, classify
from ..models import (
    SPELLED_BY_CLIENT,
    ChatRequest,
    ChatResponse,
    FunctionCall,
    ProviderState,
    ResponseAnalytics,
    ResponseMetadata,
    StatusNotice,
    StreamDone,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    Usage,
    tokens_per_second,
    utcnow,
)
from .spec import FEATURE_SETTINGS, SAMPLING_SETTINGS, ProviderSpec

__all__ = [
    "BaseProvider",
    "Completion",
    "Served",
    "Loaded",
    "StreamPiece",
    "StreamStats",
    "SAMPLING_SETTINGS",
    "FEATURE_SETTINGS",
]

_MODELS_CACHE_S = 300.0
_MODELS_FETCH_S = 5.0

T = TypeVar("T")


@dataclass
class Completion:
    """What a provider's converter hands back: the answer, the model that gave it, and usage."""

    text: str
    model: str
    finish_reason: str | None = None
    usage: Usage | None = None  # None: the provider did not report it (cost is then unknown)
    tool_calls: list[ToolCall] | None = None
    logprobs: dict[str, Any] | None = None
    load_ms: float | None = None  # time spent loading the model before generating (local)
    response_id: str | None = None  # the upstream's own id for the answer
    system_fingerprint: str | None = None
    more_choices: list[dict[str, Any]] | None = None  # choices after the first (OpenAI's n), in OpenAI's shape


@dataclass(slots=True)
class Served:
    """A stream piece: the upstream named the model that answers (before its first text), and
    its own id for the answer when it gives one."""

    model: str
    response_id: str | None = None
    system_fingerprint: str | None = None


@dataclass(slots=True)
class Loaded:
    """A stream piece: the model finished loading after `ms`; timings restart from here."""

    ms: float


StreamPiece = str | TextDelta | ToolCallDelta | StatusNotice | Served | Loaded | Completion


@dataclass(slots=True)
class StreamStats:
    """What a stream has shown so far, kept up to date as it goes: the router reads it when a
    stream ends early (cut, stopped), so a partial answer has true figures too."""

    model: str = ""
    started_at: datetime = field(default_factory=utcnow)
    t0: float = field(default_factory=time.perf_counter)
    load_ms: float | None = None
    ttft_ms: float | None = None
    chunks: int = 0  # text and tool-call pieces received
    response_id: str | None = None  # the upstream's id for the answer (Served)
    system_fingerprint: str | None = None

    def elapsed_ms(self) -> float:
        return (time.perf_counter() - self.t0) * 1000


class BaseProvider(ABC):
    #: What Conductor knows about this provider (providers/spec.py). A class that sets it takes
    #: the attributes below from it; a provider without one (a fake, a configured endpoint)
    #: sets them itself, on the class or per instance (hence not ClassVar).
    spec: ProviderSpec | None = None
    #: Shown in the UI.
    display_name: str = "Provider"
    #: The variable a user sets to enable it (None: needs no key).
    key_env_var: str | None = None
    #: genai-prices provider id used for cost (None: unknown unless overridden).
    price_provider_id: str | None = None
    can_stream: ClassVar[bool] = True
    #: The optional ChatRequest settings this provider passes on (see SAMPLING_SETTINGS and
    #: FEATURE_SETTINGS). `ignored_settings` and `check` say what it cannot.
    supported_settings: frozenset[str] = frozenset(SAMPLING_SETTINGS)
    #: Whether it can be sent images and files (ChatMessage.parts); never sent one it would drop.
    reads_attachments: bool = False
    #: Whether it answers OpenAI's `n` (several choices in one call, `extra_params`, not streamed);
    #: where not, the gateway makes `n` calls.
    answers_n: ClassVar[bool] = False
    #: Most concurrent calls (None: the configured `bulkhead_limit`).
    max_concurrency: ClassVar[int | None] = None
    #: The most tokens one answer can have (None: not known here; the upstream says, as OpenAI does).
    max_output_tokens: int | None = None
    #: Said after that limit in a refusal, e.g. which setting raises it.
    output_limit_note: ClassVar[str] = ""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        spec = cls.__dict__.get("spec")
        if spec is not None:
            cls.display_name = spec.display_name
            cls.key_env_var = spec.key_env_vars[0] if spec.key_env_vars else None
            cls.price_provider_id = spec.price_provider_id
            cls.can_stream = spec.capabilities.streaming
            cls.supported_settings = spec.capabilities.settings()
            cls.reads_attachments = spec.capabilities.vision

    def __init__(self, name: str, *, default_model: str | None = None, timeout_s: float = 60.0) -> None:
        if default_model is None:
            if self.spec is None:
                raise TypeError(f"{type(self).__name__} has no spec: give it a default_model")
            default_model = self.spec.default_model
        self.name = name
        self.default_model = default_model
        self.timeout_s = timeout_s
        self.is_healthy: bool = True
        self.last_check: datetime | None = None
        self.total_requests = 0
        self.successful_requests = 0
        self.failed_requests = 0
        self.total_latency = 0.0  # milliseconds, summed over every call
        self.last_error: str | None = None
        self._counter_lock = threading.Lock()
        self._models_cache: tuple[float, list[str]] | None = None
        self._models_fetch: asyncio.Task[list[str]] | None = None

    # --- hooks a provider implements --------------------------------------------

    @abstractmethod
    async def _complete(self, request: ChatRequest, model: str) -> Completion: ...

    @abstractmethod
    def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        """Yield text pieces (and tool-call pieces, status notices), then exactly one `Completion`."""

    @abstractmethod
    def _map_error(self, exc: Exception) -> ProviderError:
        """The one place this provider's SDK exceptions become our `ProviderError` tree."""

    @abstractmethod
    async def _health(self) -> None:
        """Raise if the provider cannot be reached (a cheap call: list one model)."""

    async def _list_models(self) -> list[str]:
        """What the provider's API lists (the built-in list comes first anyway)."""
        return []

    def builtin_models(self) -> list[str]:
        """The models offered before the API is asked: the default first, then the spec's."""
        return list(dict.fromkeys([self.default_model, *(self.spec.model_ids if self.spec else ())]))

    def estimate_cost(self, tokens: Usage, model: str) -> float | None:
        return pricing.estimate_cost(tokens, model, self.price_provider_id)

    async def aclose(self) -> None:  # noqa: B027 - optional hook: most providers hold nothing to close
        """Close what this provider holds on the running loop (SDK clients)."""

    # --- state --------------------------------------------------------------------

    @property
    def state(self) -> ProviderState:
        return ProviderState.ready if self.is_healthy else ProviderState.unhealthy

    def describe(self) -> str | None:
        """A sentence for a person when the provider is not simply ready."""
        return self.last_error if not self.is_healthy else None

    def mark_health(self, healthy: bool, error: str | None = None) -> bool:
        self.is_healthy = healthy
        self.last_check = utcnow()
        if error:
            self.last_error = error
        return healthy

    def update_metrics(self, success: bool, latency_ms: float, error: str | None = None) -> None:
        with self._counter_lock:
            self.total_requests += 1
            self.total_latency += latency_ms
            if success:
                self.successful_requests += 1
            else:
                self.failed_requests += 1
                self.last_error = error

    # --- what a request may ask of this provider -------------------------------------

    def ignored_settings(self, request: ChatRequest | None = None) -> list[str]:
        """The sampling settings this provider does not pass on: all it cannot honour, or,
        given a request, those the request actually sets."""
        names = [n for n in SAMPLING_SETTINGS if n not in self.supported_settings]
        if request is None:
            return names
        return [n for n in names if _is_set(n, getattr(request, n))]

    def unsupported(self, request: ChatRequest) -> list[str]:
        """What `request` asks for that this provider cannot do and that may not be dropped:
        features it lacks, tool calls in the conversation, and, when the request says
        `unsupported="reject"`, sampling settings it lacks."""
        missing = [n for n in FEATURE_SETTINGS if n not in self.supported_settings and _is_set(n, getattr(request, n))]
        if "extra_params" in missing:  # named one by one, as the client sent them
            missing.remove("extra_params")
            missing += [
                name
                for name, value in (request.extra_params or {}).items()
                if value is not None and name not in SPELLED_BY_CLIENT
            ]
        if "tools" not in self.supported_settings and "tools" not in missing and request.uses_tools():
            missing.append("tool calls in messages")
        if not self.reads_attachments and request.attachments():
            missing.append(_ATTACHMENTS)
        if request.unsupported == "reject":
            missing = self.ignored_settings(request) + missing
        if self._too_many_tokens(request):
            missing.append(f"max_tokens above {self.max_output_tokens}")
        return missing

    def _too_many_tokens(self, request: ChatRequest) -> bool:
        limit = self.max_output_tokens
        return limit is not None and request.max_tokens is not None and request.max_tokens > limit

    def check(self, request: ChatRequest) -> None:
        """BadRequestError naming each parameter and this provider, if it cannot serve `request`."""
        if self._too_many_tokens(request):  # as OpenAI says it: no silent cap
            limit = self.max_output_tokens
            error = BadRequestError(
                f"max_tokens is too large: {request.max_tokens}. {self.name} ({self.resolve_model(request)}) can "
                f"produce at most {limit} tokens{self.output_limit_note}: ask for at most {limit}",
                provider=self.name,
                status_code=400,
            )
            error.param = "max_tokens"
            raise error
        missing = self.unsupported(request)
        if missing == [_ATTACHMENTS]:  # a person's attachment, not an API parameter: say who reads it
            error = BadRequestError(
                f"{self.name} does not support {_ATTACHMENTS}: remove them from the message, or choose a provider "
                "that reads them (OpenAI, Anthropic, Gemini, or an OpenAI-compatible endpoint with vision)",
                provider=self.name,
                status_code=400,
            )
            error.param = "messages"
            raise error
        if missing:
            names = ", ".join(missing)
            error = BadRequestError(
                f"{self.name} does not support {names}: remove {'it' if len(missing) == 1 else 'them'} from the "
                "request, or choose a provider that has it (OpenAI and OpenAI-compatible servers take every "
                "OpenAI parameter)",
                provider=self.name,
                status_code=400,
            )
            error.param = "messages" if missing[0].endswith(" in messages") else missing[0]
            raise error

    def resolve_model(self, request: ChatRequest) -> str:
        return request.model or self.default_model

    def _prepared(self, build: Callable[..., T], *args: Any) -> T:
        """`build(*args)`: the upstream request, as Conductor builds it from ours. Nothing it
        raises is the upstream's doing: the request's fault or a bug in Conductor (`classify`)."""
        try:
            return build(*args)
        except Exception as exc:
            raise classify(self.name, exc) from exc

    # --- the public calls ----------------------------------------------------------

    async def achat(self, request: ChatRequest) -> ChatResponse:
        self.check(request)
        model = self.resolve_model(request)
        started_at, t0 = utcnow(), time.perf_counter()
        clock = overhead.current()  # the upstream's time, left out of Conductor's overhead
        if clock is not None:
            clock.upstream_started()
        try:
            completion = await self._complete(request, model)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to our tree, none escapes raw
            # A model the upstream does not know is explained by asking it (its list): upstream time too.
            raise self._fail(await self._explain_missing_model(exc, model), t0) from None
        finally:
            if clock is not None:
                clock.upstream_ended()
        latency_ms = (time.perf_counter() - t0) * 1000 - (completion.load_ms or 0.0)
        self.update_metrics(True, latency_ms)
        return self._response(completion, started_at, latency_ms, ttft_ms=None)

    async def astream(self, request: ChatRequest, *, stats: StreamStats | None = None) -> AsyncGenerator[Any, None]:
        """Text (and tool-call) deltas as they arrive, then one `StreamDone`. A break after
        text raises `StreamInterruptedError` carrying the partial text; a break before it
        raises the mapped error. `stats` (optional) is kept up to date as the stream goes."""
        self.check(request)
        model = self.resolve_model(request)
        stats = stats if stats is not None else StreamStats()
        stats.model, stats.started_at, stats.t0 = model, utcnow(), time.perf_counter()
        parts: list[str] = []
        calls: dict[int, list[Any]] = {}
        completion: Completion | None = None
        clock = overhead.current()  # the upstream's time (to its latest piece), left out of the overhead
        if clock is not None:
            clock.upstream_started()
        try:
            # aclosing: a reader that stops (a closed tab, a Stop button) closes the upstream stream now.
            async with aclosing(self._stream(request, model)) as pieces:
                async for piece in pieces:
                    if clock is not None:
                        clock.upstream_piece()
                    kind = type(piece)  # once per piece (the hot path); each branch casts to what it holds
                    if kind is str:
                        if not piece:
                            continue
                        if stats.ttft_ms is None:
                            stats.ttft_ms = stats.elapsed_ms()
                        stats.chunks += 1
                        text = cast(str, piece)
                        parts.append(text)
                        yield TextDelta(text=text)
                    elif kind is TextDelta:  # text with its log probabilities
                        delta = cast(TextDelta, piece)
                        if stats.ttft_ms is None:
                            stats.ttft_ms = stats.elapsed_ms()
                        stats.chunks += 1
                        parts.append(delta.text)
                        yield delta
                    elif kind is ToolCallDelta:
                        if stats.ttft_ms is None:
                            stats.ttft_ms = stats.elapsed_ms()
                        stats.chunks += 1
                        _add_call_piece(calls, cast(ToolCallDelta, piece))
                        yield piece
                    elif kind is Served:
                        served = cast(Served, piece)
                        stats.model = served.model
                        stats.response_id = served.response_id or stats.response_id
                        stats.system_fingerprint = served.system_fingerprint or stats.system_fingerprint
                    elif kind is Loaded:
                        stats.load_ms = cast(Loaded, piece).ms
                        stats.t0 = time.perf_counter()  # loading is not a first-token time
                    elif kind is StatusNotice:
                        yield piece
                    else:
                        completion = cast(Completion, piece)
            if completion is None:
                raise StreamInterruptedError(f"{self.name} ended the stream without finishing it", provider=self.name)
        except Exception as exc:  # noqa: BLE001 - every failure is mapped to our tree, none escapes raw
            error = self._fail(exc if stats.chunks else await self._explain_missing_model(exc, model), stats.t0)
            if stats.chunks:
                raise StreamInterruptedError(
                    f"{self.name} stream broke after {stats.chunks} chunks: {error.message}",
                    provider=self.name,
                    status_code=error.status_code,
                    partial_text="".join(parts),
                ) from None
            raise error from None
        finally:
            if clock is not None:
                clock.upstream_ended()
        latency_ms = stats.elapsed_ms()
        if not completion.text:
            completion.text = "".join(parts)
        if completion.tool_calls is None and calls:
            completion.tool_calls = _finished_calls(calls)
        completion.load_ms = stats.load_ms
        completion.response_id = completion.response_id or stats.response_id
        completion.system_fingerprint = completion.system_fingerprint or stats.system_fingerprint
        self.update_metrics(True, latency_ms)
        yield StreamDone(
            response=self._response(completion, stats.started_at, latency_ms, stats.ttft_ms, chunks=stats.chunks)
        )

    async def ahealth_check(self) -> bool:
        try:
            await asyncio.wait_for(self._health(), min(self.timeout_s, 10.0))
        except Exception as exc:  # noqa: BLE001 - a health check reports, it does not raise
            mapped = self._map_error(exc) if not isinstance(exc, asyncio.TimeoutError) else None
            return self.mark_health(False, mapped.message if mapped else f"{self.name} did not answer its health check")
        return self.mark_health(True)

    async def aget_available_models(self, *, wait_s: float = _MODELS_FETCH_S) -> list[str]:
        """The built-in models first, then what the API lists; asked at most every few minutes
        (the UI asks on every rerun). Waits at most `wait_s` for a listing: a slow or failed
        one answers with what is known, and a slow one finishes in the background."""
        cached = self._models_cache
        if cached and time.monotonic() - cached[0] < _MODELS_CACHE_S:
            return cached[1]
        fetch = self._models_fetch
        if fetch is None or fetch.done() or fetch.get_loop() is not asyncio.get_running_loop():
            fetch = self._models_fetch = asyncio.get_running_loop().create_task(self._fetch_models())
        try:
            return await asyncio.wait_for(asyncio.shield(fetch), wait_s)
        except TimeoutError:
            return cached[1] if cached else self.builtin_models()

    async def _fetch_models(self) -> list[str]:
        try:
            listed = await asyncio.wait_for(self._list_models(), _MODELS_FETCH_S)
        except Exception:  # noqa: BLE001 - listing is best effort
            listed = []
        models = list(dict.fromkeys([*self.builtin_models(), *listed]))
        self._models_cache = (time.monotonic(), models)
        return models

    # --- the same, for synchronous callers ---------------------------------------------

    def chat_completion(self, request: ChatRequest) -> ChatResponse:
        return aio.run(self.achat(request))

    def stream(self, request: ChatRequest) -> Iterator[Any]:
        return aio.iterate(lambda: self.astream(request))

    def health_check(self) -> bool:
        return aio.run(self.ahealth_check())

    def get_available_models(self) -> list[str]:
        return aio.run(self.aget_available_models())

    # --- helpers ---------------------------------------------------------------------

    def models_endpoint(self) -> str:
        """Where the API lists its models, in words for a person."""
        return self.spec.models_endpoint if self.spec is not None else "its model list"

    async def _explain_missing_model(self, exc: Exception, model: str) -> Exception:
        """A 404 for a model the API does not list (retired, mistyped) as a request error that
        says so and names what it lists; any other failure, or a listing that fails or shows
        the model after all (another 404), as it was."""
        error = exc if isinstance(exc, ProviderError) else self._map_error(exc)
        if not (isinstance(error, BadRequestError) and error.status_code == 404):
            return error
        try:
            listed = await asyncio.wait_for(self._list_models(), _MODELS_FETCH_S)
        except Exception:  # noqa: BLE001 - the original error is still the answer
            return error
        if not listed or model in listed:
            return error
        listed = sorted(listed)
        shown = ", ".join(listed[:12]) + (f" and {len(listed) - 12} more" if len(listed) > 12 else "")
        return BadRequestError(
            f"model {model!r} was not found at {self.name}: {self.models_endpoint()} lists {shown}",
            provider=self.name,
            status_code=404,
            code=error.code,  # the upstream's own (model_not_found, not_found_error, NOT_FOUND)
            param="model",
        )

    def _fail(self, exc: Exception, t0: float) -> ProviderError:
        error = exc if isinstance(exc, ProviderError) else self._map_error(exc)
        error.provider = error.provider or self.name
        self.update_metrics(False, (time.perf_counter() - t0) * 1000, f"{error.type}: {error.message}")
        return error

    def _response(
        self, completion: Completion, started_at: datetime, latency_ms: float, ttft_ms: float | None, chunks: int = 0
    ) -> ChatResponse:
        usage = completion.usage
        estimated = usage is None and chunks > 0
        out_tokens = usage.output_tokens if usage else chunks
        return ChatResponse(
            content=completion.text,
            metadata=ResponseMetadata(
                provider=self.name,
                model=completion.model,
                finish_reason=completion.finish_reason,
                upstream_id=completion.response_id,
                system_fingerprint=completion.system_fingerprint,
                started_at=started_at,
                finished_at=utcnow(),
            ),
            analytics=ResponseAnalytics(
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=out_tokens,
                output_tokens_estimated=estimated,
                cached_tokens=usage.cached_tokens if usage else 0,
                latency_ms=round(latency_ms, 3),
                time_to_first_token_ms=round(ttft_ms, 3) if ttft_ms is not None else None,
                tokens_per_second=_rounded(tokens_per_second(out_tokens, latency_ms, ttft_ms)),
                load_ms=round(completion.load_ms, 3) if completion.load_ms is not None else None,
                cost_usd=self.estimate_cost(usage, completion.model) if usage else None,
            ),
            tool_calls=completion.tool_calls or None,
            logprobs=completion.logprobs,
            more_choices=completion.more_choices,
        )

    def __repr__(self) -> str:  # never shows a client (and so never a key)
        return f"<{type(self).__name__} {self.name!r} model={self.default_model!r}>"


#: What `unsupported` names for a message's images and files on a provider that cannot read them.
_ATTACHMENTS = "images and files in messages"


def _rounded(value: float | None) -> float | None:
    return round(value, 2) if value is not None else None


def _is_set(name: str, value: Any) -> bool:
    """Whether a request setting asks for something (False and [] ask for nothing, except
    parallel_tool_calls=False, which asks for one call at a time)."""
    if value is None:
        return False
    if value is False and name != "parallel_tool_calls":
        return False
    return not (isinstance(value, (list, dict)) and not value)


def _add_call_piece(calls: dict[int, list[Any]], piece: ToolCallDelta) -> None:
    entry = calls.setdefault(piece.index, [None, None, []])
    if piece.id:
        entry[0] = piece.id
    if piece.name:
        entry[1] = piece.name
    if piece.arguments:
        entry[2].append(piece.arguments)


def _finished_calls(calls: dict[int, list[Any]]) -> list[ToolCall]:
    return [
        ToolCall(id=call_id or f"call_{index}", function=FunctionCall(name=name or "unknown", arguments="".join(args)))
        for index, (call_id, name, args) in sorted(calls.items())
    ]
