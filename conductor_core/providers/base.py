"""The interface every provider follows.

A provider file supplies small hooks: `_complete` (one call, whole answer), `_stream`
(text pieces, then the final `Completion`), `_map_error` (its SDK's exceptions -> our
tree), `health_check` and `get_available_models`. The public `chat_completion` and
`stream` here wrap those hooks with the timing, time to first token, cost, error mapping
and per-provider counters, so that no provider measures itself differently.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from .. import pricing
from ..errors import ProviderError, StreamInterruptedError
from ..models import (
    ChatRequest,
    ChatResponse,
    ProviderState,
    ResponseAnalytics,
    ResponseMetadata,
    StatusNotice,
    StreamDone,
    TextDelta,
    Usage,
    utcnow,
)

__all__ = ["BaseProvider", "Completion", "StreamPiece", "SAMPLING_SETTINGS"]

#: ChatRequest fields that tune generation and that not every provider can honour.
SAMPLING_SETTINGS: tuple[str, ...] = ("temperature", "top_p", "stop", "seed")

_MODELS_CACHE_S = 300.0


@dataclass
class Completion:
    """What a provider's converter hands back: the answer, the model that gave it, and usage."""

    text: str
    model: str
    finish_reason: str | None = None
    usage: Usage | None = None  # None: the provider did not report it (cost is then unknown)


StreamPiece = str | StatusNotice | Completion


class BaseProvider(ABC):
    #: Shown in the UI.
    display_name: ClassVar[str] = "Provider"
    #: The variable a user sets to enable it (None: needs no key).
    key_env_var: ClassVar[str | None] = None
    #: genai-prices provider id used for cost (None: unknown unless overridden).
    price_provider_id: ClassVar[str | None] = None
    can_stream: ClassVar[bool] = True
    #: The optional ChatRequest settings this provider passes on; the others it ignores, and
    #: `ignored_settings` says so (the playground shows it beside the control).
    supported_settings: ClassVar[frozenset[str]] = frozenset(SAMPLING_SETTINGS)

    def __init__(self, name: str, *, default_model: str, timeout_s: float = 60.0) -> None:
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

    # --- hooks a provider implements --------------------------------------------

    @abstractmethod
    def _complete(self, request: ChatRequest, model: str) -> Completion: ...

    @abstractmethod
    def _stream(self, request: ChatRequest, model: str) -> Iterator[StreamPiece]:
        """Yield text pieces (and optional status notices), then exactly one `Completion`."""

    @abstractmethod
    def _map_error(self, exc: Exception) -> ProviderError:
        """The one place this provider's SDK exceptions become our `ProviderError` tree."""

    @abstractmethod
    def health_check(self) -> bool: ...

    @abstractmethod
    def get_available_models(self) -> list[str]: ...

    def estimate_cost(self, tokens: Usage, model: str) -> float | None:
        return pricing.estimate_cost(tokens, model, self.price_provider_id)

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

    # --- the public calls ----------------------------------------------------------

    def ignored_settings(self, request: ChatRequest | None = None) -> list[str]:
        """The sampling settings this provider does not pass on: all it cannot honour, or,
        given a request, those the request actually sets."""
        names = [n for n in SAMPLING_SETTINGS if n not in self.supported_settings]
        if request is None:
            return names
        return [n for n in names if getattr(request, n) is not None]

    def resolve_model(self, request: ChatRequest) -> str:
        return request.model or self.default_model

    def chat_completion(self, request: ChatRequest) -> ChatResponse:
        model = self.resolve_model(request)
        started_at, t0 = utcnow(), time.perf_counter()
        try:
            completion = self._complete(request, model)
        except Exception as exc:
            raise self._fail(exc, t0) from None
        latency_ms = (time.perf_counter() - t0) * 1000
        self.update_metrics(True, latency_ms)
        return self._response(completion, started_at, latency_ms, ttft_ms=None)

    def stream(self, request: ChatRequest) -> Iterator[TextDelta | StatusNotice | StreamDone]:
        """Text deltas as they arrive, then one `StreamDone`. A break after text raises
        `StreamInterruptedError` carrying the partial text; a break before it raises the mapped error."""
        model = self.resolve_model(request)
        started_at, t0 = utcnow(), time.perf_counter()
        ttft_ms: float | None = None
        parts: list[str] = []
        completion: Completion | None = None
        try:
            for piece in self._stream(request, model):
                if isinstance(piece, str):
                    if not piece:
                        continue
                    if ttft_ms is None:
                        ttft_ms = (time.perf_counter() - t0) * 1000
                    parts.append(piece)
                    yield TextDelta(text=piece)
                elif isinstance(piece, StatusNotice):
                    yield piece
                else:
                    completion = piece
            if completion is None:
                raise StreamInterruptedError(f"{self.name} ended the stream without finishing it", provider=self.name)
        except GeneratorExit:
            raise  # the consumer stopped reading: not the provider's failure
        except Exception as exc:
            error = self._fail(exc, t0)
            if parts:
                raise StreamInterruptedError(
                    f"{self.name} stream broke after {len(parts)} chunks: {error.message}",
                    provider=self.name,
                    status_code=error.status_code,
                    partial_text="".join(parts),
                ) from None
            raise error from None
        latency_ms = (time.perf_counter() - t0) * 1000
        if not completion.text:
            completion.text = "".join(parts)
        self.update_metrics(True, latency_ms)
        yield StreamDone(response=self._response(completion, started_at, latency_ms, ttft_ms))

    # --- helpers ---------------------------------------------------------------------

    def _cached_models(self, fetch: Callable[[], list[str]], builtin: list[str]) -> list[str]:
        """`builtin` first, then what the API lists; asked at most every few minutes, since the
        UI asks on every rerun. A failed listing falls back to `builtin`."""
        cached = self._models_cache
        if cached and time.monotonic() - cached[0] < _MODELS_CACHE_S:
            return cached[1]
        try:
            listed = fetch()
        except Exception:  # noqa: BLE001 - listing is best effort
            listed = []
        models = list(dict.fromkeys([*builtin, *listed]))
        self._models_cache = (time.monotonic(), models)
        return models

    def _fail(self, exc: Exception, t0: float) -> ProviderError:
        error = exc if isinstance(exc, ProviderError) else self._map_error(exc)
        error.provider = error.provider or self.name
        self.update_metrics(False, (time.perf_counter() - t0) * 1000, f"{error.type}: {error.message}")
        return error

    def _response(
        self, completion: Completion, started_at: datetime, latency_ms: float, ttft_ms: float | None
    ) -> ChatResponse:
        usage = completion.usage
        out_tokens = usage.output_tokens if usage else 0
        generation_ms = latency_ms - (ttft_ms or 0.0)
        tps = out_tokens / (generation_ms / 1000) if usage and out_tokens and generation_ms > 0 else None
        return ChatResponse(
            content=completion.text,
            metadata=ResponseMetadata(
                provider=self.name,
                model=completion.model,
                finish_reason=completion.finish_reason,
                started_at=started_at,
                finished_at=utcnow(),
            ),
            analytics=ResponseAnalytics(
                input_tokens=usage.input_tokens if usage else 0,
                output_tokens=out_tokens,
                cached_tokens=usage.cached_tokens if usage else 0,
                latency_ms=round(latency_ms, 3),
                time_to_first_token_ms=round(ttft_ms, 3) if ttft_ms is not None else None,
                tokens_per_second=round(tps, 2) if tps else None,
                cost_usd=self.estimate_cost(usage, completion.model) if usage else None,
            ),
        )

    def __repr__(self) -> str:  # never shows a client (and so never a key)
        return f"<{type(self).__name__} {self.name!r} model={self.default_model!r}>"
