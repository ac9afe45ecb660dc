"""`Conductor`: the async core (`conductor_core.routing.AsyncConductor`) for synchronous
callers: the playground, scripts, notebooks. Every call runs on one long-lived event loop
in a daemon thread (`conductor_core.aio`), so any thread may call it at any time (Streamlit
runs each rerun in a new script thread, and one Conductor serves every session), and no
SDK client is ever left bound to a dead loop.

The routing, retries, breakers, bulkheads, metrics and logging are the core's: there is one
implementation, and this module only carries calls across. Code that runs on an event loop
(the gateway) uses `conductor.core` directly.

This is also where routing meets the workbench: the core's `preferred` policy reads the
arena's blind-vote ratings (`workbench.preference`) through routing's `RatingsSource`, its
`evaluated` policy the prompts' measured pass rates (`workbench.evaluation`) through routing's
`EvaluationSource`, and routing itself imports nothing from the workbench.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from . import aio
from .breaker import CircuitBreaker
from .config import EndpointConfig, Settings, load_settings
from .metrics import MetricsRegistry
from .models import (
    ChatRequest,
    ChatResponse,
    CompareEvent,
    HealthResponse,
    ProviderStatus,
    RoutingPolicy,
    SystemStatus,
    Target,
    Vote,
)
from .providers import BaseProvider, ProviderRegistry
from .routing import AsyncConductor, Candidate
from .store import RequestLog
from .workbench.evaluation import EvaluatedPassRates
from .workbench.preference import PreferenceRatings

if TYPE_CHECKING:
    from .workbench.ratings import Leaderboard

__all__ = ["Conductor", "AsyncConductor", "Candidate"]

Overrides = Mapping[str, BaseProvider] | None


class Conductor:
    def __init__(
        self,
        settings: Settings | None = None,
        *,
        registry: ProviderRegistry | None = None,
        request_log: RequestLog | None = None,
        extra_providers: tuple[BaseProvider, ...] | list[BaseProvider] = (),
        source: str = "playground",
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Any] | None = None,
    ) -> None:
        """`sleep` receives each retry wait instead of asyncio's sleep (tests pass a function
        that records it); a coroutine function is awaited."""
        settings = settings or load_settings()
        log = request_log if request_log is not None else RequestLog.from_settings(settings)
        #: The arena's blind-vote ratings: the core's `preferred` policy ranks by them, the
        #: Dashboard shows them (`ratings()`). Fitted in the background, read cached.
        self.preference = PreferenceRatings(log, min_votes=settings.preferred_min_votes, clock=clock)
        #: The prompts' pass rates from experiment runs: the core's `evaluated` policy ranks by
        #: them. Read in the background, read cached.
        self.evaluations = EvaluatedPassRates(log, clock=clock)
        self.core = AsyncConductor(
            settings,
            registry=registry,
            request_log=log,
            extra_providers=extra_providers,
            source=source,
            clock=clock,
            sleep=None if sleep is time.sleep else sleep,
            ratings=self.preference,
            evaluations=self.evaluations,
        )

    # --- what the core holds --------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self.core.settings

    @property
    def registry(self) -> ProviderRegistry:
        return self.core.registry

    @property
    def log(self) -> RequestLog:
        return self.core.log

    @property
    def metrics(self) -> MetricsRegistry:
        return self.core.metrics

    @property
    def source(self) -> str:
        return self.core.source

    @property
    def started_at(self):
        return self.core.started_at

    # --- answers ------------------------------------------------------------------------------

    def chat(self, request: ChatRequest, *, overrides: Overrides = None, request_id: str | None = None) -> ChatResponse:
        """One answer. Raises `ProviderError` (with `.attempts` and `.request_id`) when every candidate failed."""
        return aio.run(self.core.chat(request, overrides=overrides, request_id=request_id))

    def stream(
        self, request: ChatRequest, *, overrides: Overrides = None, request_id: str | None = None
    ) -> Iterator[Any]:
        """`StreamStart`, text deltas, then `StreamDone`, or `StreamIncomplete` if the stream broke
        after text; `StatusNotice`s along the way. Raises `ProviderError` (with `.attempts`) if
        every candidate failed before any text. Closing it early records a cancelled attempt."""
        return aio.iterate(lambda: self.core.stream(request, overrides=overrides, request_id=request_id))

    def compare(
        self, request: ChatRequest, targets: list[Target], *, overrides: Overrides = None
    ) -> Iterator[CompareEvent]:
        """Streams one request to 2-4 targets at once; events arrive tagged by target as they come."""
        from .routing.compare import check_targets

        check_targets(targets)  # at once, as before: a wrong compare is the caller's bug
        return aio.iterate(lambda: self.core.compare(request, targets, overrides=overrides))

    def models(self, provider: str, *, overrides: Overrides = None) -> list[str]:
        return aio.run(self.core.models(provider, overrides=overrides))

    def add_endpoint(self, name: str, endpoint: EndpointConfig) -> BaseProvider:
        """A named OpenAI-compatible endpoint, added at run time (the playground's settings page)."""
        return self.core.add_endpoint(name, endpoint)

    def record_vote(self, vote: Vote) -> bool:
        return self.core.record_vote(vote)

    # --- status -----------------------------------------------------------------------------

    def ratings(self, *, fresh: bool = False) -> Leaderboard:
        """The blind-vote leaderboard AUTO's `preferred` policy reads (cached; `fresh` checks
        the votes first, which a page may afford and a request path should not)."""
        if fresh:
            self.preference.refresh()
        return self.preference.leaderboard()

    def breaker(self, name: str) -> CircuitBreaker:
        return self.core.breaker(name)

    def rank(
        self,
        request: ChatRequest,
        policy: RoutingPolicy = RoutingPolicy.balanced,
        *,
        streaming: bool = False,
        overrides: Overrides = None,
    ) -> list[Candidate]:
        return self.core.rank(request, policy, streaming=streaming, overrides=overrides)

    def provider_status(self, name: str, *, overrides: Overrides = None) -> ProviderStatus:
        return aio.run(self.core.provider_status(name, overrides=overrides))

    def status(self, *, overrides: Overrides = None) -> SystemStatus:
        return aio.run(self.core.status(overrides=overrides))

    def health(self, *, refresh: bool = False) -> HealthResponse:
        return aio.run(self.core.health(refresh=refresh))

    def close(self) -> None:
        aio.run(self.core.aclose())
