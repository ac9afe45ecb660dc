"""Where the playground keeps things.

* **One Conductor per process**, in `st.cache_resource`, shared by every session (it is
  thread-safe). How it is built is configuration: by default `Conductor()`; when
  `CONDUCTOR_PLAYGROUND_FACTORY="module:function"` is set, that function builds it (tests
  inject scripted fakes this way, never by patching SDK internals).
* **Sessions** (every chat and comparison, with its settings and turns) in the request log's
  database through one `SessionStore` per process, and answers streamed by one
  `AnswerWorker` per process (background threads: an answer completes whatever the page
  does). Pages read both; the URL's ``?session=`` names the session a tab shows.
* **Per-browser-session state** in `st.session_state`: which session each page shows, the
  controls' values, and the providers this browser session built from a key typed on the
  Providers page or an endpoint it added. Those are passed to the core as `overrides`; the
  key itself is never stored (only the provider object built from it, whose repr shows no
  key), and never written with a session.
* **The dashboard's data**, shared by all sessions and refreshed at most every couple of
  seconds (longer when the log is big), so many open dashboards do not multiply the load.
"""

from __future__ import annotations

import importlib
import os
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from conductor_core.errors import ProviderError
from conductor_core.keys import GatewayKey, KeyStore
from conductor_core.models import ProviderState, utcnow
from conductor_core.providers import BaseProvider, get_spec
from conductor_core.router import Conductor
from conductor_core.store import NO_KEY
from conductor_core.team import TeamStore
from conductor_core.workbench.arena import Arena
from conductor_core.workbench.dataset_store import DatasetStore
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.prompts import PromptStore
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.streaming import AnswerWorker

from . import dashboard_data as dd
from .arena_live import BlindRounds

__all__ = [
    "FACTORY_ENV",
    "LOCAL_NOTE",
    "LOCAL_NOTE_SHORT",
    "FRAME_ROW_LIMIT",
    "conductor",
    "sessions",
    "team",
    "arena",
    "blind_rounds",
    "vote_verdicts",
    "worker",
    "experiments",
    "session_providers",
    "overrides",
    "provider_names",
    "configured_names",
    "display_name",
    "default_model",
    "models_of",
    "PLACEHOLDER_MODEL",
    "provider_label",
    "provider_status",
    "provider_hint",
    "readiness",
    "DashboardSnapshot",
    "dashboard_snapshot",
    "gateway_keys",
    "key_list",
]

FACTORY_ENV = "CONDUCTOR_PLAYGROUND_FACTORY"
LOCAL_NOTE_SHORT = (
    "Gemma 3 270M is a small *base* model that runs on this machine: good for trying the tool, not for answer quality."
)
LOCAL_NOTE = (
    "The local model is **Gemma 3 270M**, a small *base* model that runs on this machine: "
    "good for trying the tool, not for answer quality. Add a key on the Providers page for better answers."
)

# --- the shared Conductor ---------------------------------------------------------------


def _load_factory(spec: str):
    module, _, attr = spec.partition(":")
    return getattr(importlib.import_module(module), attr or "build_conductor")


@st.cache_resource(show_spinner="Starting Conductor…")
def _shared_conductor(factory_spec: str) -> Conductor:
    # The spec is the cache key: a test that names another factory gets another Conductor.
    if factory_spec:
        return _load_factory(factory_spec)()
    return Conductor(source="playground")


def conductor() -> Conductor:
    return _shared_conductor(os.environ.get(FACTORY_ENV, ""))


@st.cache_resource(show_spinner=False)
def _workbench(factory_spec: str) -> tuple[SessionStore, AnswerWorker]:
    c = _shared_conductor(factory_spec)
    store = SessionStore.for_log(c.log)
    return store, AnswerWorker(c, store)


@st.cache_resource(show_spinner=False)
def _arena(factory_spec: str) -> tuple[Arena, BlindRounds]:
    c = _shared_conductor(factory_spec)
    arena = Arena(c.log)
    return arena, BlindRounds(arena, c)


def arena() -> Arena:
    """Blind rounds and their votes (the request log's database)."""
    return _arena(os.environ.get(FACTORY_ENV, ""))[0]


def blind_rounds() -> BlindRounds:
    """Blind rounds being answered by this process, in the background."""
    return _arena(os.environ.get(FACTORY_ENV, ""))[1]


def vote_verdicts(records: Any) -> dict[str, tuple[str, str]]:
    """Every vote on these attempts' answers, blind (the Arena) and open (Compare), for exports."""
    return {**sessions().verdicts(records), **arena().verdicts(records)}


def sessions() -> SessionStore:
    """Every chat and comparison (shared by all browser sessions, and on PostgreSQL by every process)."""
    return _workbench(os.environ.get(FACTORY_ENV, ""))[0]


def worker() -> AnswerWorker:
    """Streams answers in the background, into `sessions()`."""
    return _workbench(os.environ.get(FACTORY_ENV, ""))[1]


@st.cache_resource(show_spinner=False)
def _team_store(factory_spec: str) -> TeamStore:
    return TeamStore(_shared_conductor(factory_spec).log)


def team() -> TeamStore:
    """Users, workspaces and roles (conductor_core/team), when the page has sign-in."""
    return _team_store(os.environ.get(FACTORY_ENV, ""))


@st.cache_resource(show_spinner=False)
def _experiment_store(factory_spec: str) -> ExperimentStore:
    return ExperimentStore(_shared_conductor(factory_spec).log)


def experiments() -> ExperimentStore:
    """Experiments and their runs (runs are carried out by the process, not the page: see
    conductor_core.workbench.runner, whose `RunHandle.find` a page uses after a reload)."""
    return _experiment_store(os.environ.get(FACTORY_ENV, ""))


@st.cache_resource(show_spinner=False)
def _dataset_store(factory_spec: str) -> DatasetStore:
    return DatasetStore(_shared_conductor(factory_spec).log)


def datasets() -> DatasetStore:
    """Saved datasets and their versions (the request log's database)."""
    return _dataset_store(os.environ.get(FACTORY_ENV, ""))


@st.cache_resource(show_spinner=False)
def _prompt_store(factory_spec: str) -> PromptStore:
    return PromptStore(_shared_conductor(factory_spec).log)


def prompts() -> PromptStore:
    """Saved prompts, their versions and labels (workbench/prompts.py)."""
    return _prompt_store(os.environ.get(FACTORY_ENV, ""))


class _KeyList:
    """Every key, read again when older than `max_age_s` (the Dashboard's Key filter draws
    them on every rerun: a query per rerun for a list that rarely changes). Thread-safe."""

    def __init__(self, store: KeyStore, max_age_s: float = 5.0) -> None:
        self.store, self.max_age_s = store, max_age_s
        self._lock = threading.Lock()
        self._read_at = float("-inf")
        self._keys: list[GatewayKey] = []

    def get(self, fresh: bool = False) -> list[GatewayKey]:
        with self._lock:
            if fresh or time.monotonic() - self._read_at > self.max_age_s:
                self._keys, self._read_at = self.store.list(), time.monotonic()
            return list(self._keys)


@st.cache_resource(show_spinner=False)
def _key_store(factory_spec: str) -> tuple[KeyStore, _KeyList]:
    store = KeyStore(_shared_conductor(factory_spec).log)
    return store, _KeyList(store)


def gateway_keys() -> KeyStore:
    """The gateway's keys (the request log's database): the Keys page writes them, every
    gateway process reads them (conductor_core/keys)."""
    return _key_store(os.environ.get(FACTORY_ENV, ""))[0]


def key_list(*, fresh: bool = False) -> list[GatewayKey]:
    """Every key, revoked ones too, oldest first, read at most every few seconds; `fresh`:
    read now (after this process changed one)."""
    return _key_store(os.environ.get(FACTORY_ENV, ""))[1].get(fresh)


# --- per-session providers ----------------------------------------------------------------


def session_providers() -> dict[str, BaseProvider]:
    """Providers this browser session built (typed keys, added endpoints): name -> provider."""
    return st.session_state.setdefault("session_providers", {})


def overrides() -> dict[str, BaseProvider]:
    return dict(session_providers())


def provider_names(c: Conductor) -> list[str]:
    """Every provider this session can see, in display order."""
    return list(dict.fromkeys([*c.registry.names(), *session_providers()]))


def configured_names(c: Conductor) -> list[str]:
    """Providers that can take a request now (configured, for everyone or this session)."""
    ready = {**c.registry.providers, **session_providers()}
    return [name for name in provider_names(c) if name in ready]


def _provider(c: Conductor, name: str) -> BaseProvider | None:
    return session_providers().get(name) or c.registry.providers.get(name)


def default_model(c: Conductor, name: str) -> str:
    provider = _provider(c, name)
    return provider.default_model if provider is not None else "default"


def display_name(c: Conductor, name: str) -> str:
    """A provider's name for people ("Google Gemini"), configured or not (from its spec)."""
    provider = _provider(c, name)
    display = getattr(provider, "display_name", None) if provider is not None else None
    spec = get_spec(name)
    return display or (spec.display_name if spec is not None else name)


#: What an OpenAI-compatible endpoint configured without models calls its model
#: (providers/openai_compat.py). A server that checks names answers 404 to it: never offered.
PLACEHOLDER_MODEL = "default"


def models_of(c: Conductor, name: str) -> list[str]:
    """The models a provider offers: its configured ones, then what it lists (its default
    when it cannot list them). Never the placeholder "default" (empty: type a name)."""
    try:
        models = c.models(name, overrides=overrides()) or []
    except ProviderError:
        models = []
    models = models or [default_model(c, name)]
    return [m for m in models if m != PLACEHOLDER_MODEL]


def provider_label(c: Conductor, name: str) -> str:
    """How a provider is named in menus: its display name, and whether it is configured.

    Never its live state (loading, paused, unhealthy: `provider_status` says that beside the
    control). Streamlit knows a chosen option by its label: a label that changed since the
    choice is no option any more, and the control falls back to its first one, AUTO."""
    if name == "auto":
        return "✦ AUTO · Conductor chooses"
    provider = _provider(c, name)
    if provider is None:
        return f"○ {display_name(c, name)} · not configured"
    display = getattr(provider, "display_name", None) or name
    return display if name.lower() in display.lower() else f"{display} ({name})"


def provider_status(c: Conductor, name: str) -> str | None:
    """A configured provider's live state as a sentence for beside its control, or None when
    it is ready. A request that names a paused provider fails at once with that error (it is
    never sent to another provider); AUTO sends it elsewhere."""
    provider = _provider(c, name)
    if name == "auto" or provider is None:
        return None
    state = provider.state
    if state == ProviderState.loading:
        return "◐ Loading: the first answer waits until the model has loaded."
    if state == ProviderState.unhealthy:
        why = provider.describe()
        return "✕ Unhealthy" + (f": {why}" if why else "") + ". Requests to it are still sent."
    breaker = c.breaker(name)
    if breaker.state.value == "open":
        wait = breaker.retry_in_s()
        when = f"in {wait:.0f} s" if wait else "soon"
        return (
            f"◆ Paused after repeated failures: it is tried again {when}; until then a request to it fails at once "
            "(AUTO answers with another provider)."
        )
    return None


def readiness(c: Conductor) -> tuple[int, int, int]:
    """(ready, configured, loading) over the providers this session can use; cheap (no log read)."""
    providers = {**c.registry.providers, **session_providers()}
    ready = loading = 0
    for name, provider in providers.items():
        current = provider.state
        loading += current == ProviderState.loading
        ready += current in (ProviderState.ready, ProviderState.loading) and c.breaker(name).state.value != "open"
    return ready, len(providers), loading


def provider_hint(c: Conductor, name: str) -> str | None:
    """What to do to use a provider that is not configured ("set GEMINI_API_KEY"), else None."""
    if name == "auto" or _provider(c, name) is not None:
        return None
    return c.registry.unavailable.get(name, "add it on the Providers page")


# --- the dashboard's shared data --------------------------------------------------------

#: Above this many attempts in a window, the dashboard reads the log's per-minute rollups
#: (RequestLog.aggregate) instead of rows, and shows mean latency and time to first token
#: instead of percentiles. Reading rows costs ~5-8 us each: this keeps a refresh under ~0.5 s.
FRAME_ROW_LIMIT = 50_000
_FRAME_COLUMNS = [
    "created_at",
    "provider",
    "status",
    "error_type",
    "latency_ms",
    "ttft_ms",
    "output_tokens",
    "cost_usd",
    "attempt_index",  # 0 (or unknown) marks a request's first attempt: requests are counted apart
]


@dataclass
class DashboardSnapshot:
    series: pd.DataFrame
    bucket_s: int
    start: datetime
    end: datetime
    rows: int
    from_rows: bool  # True: p50/p95 from rows; False: per-minute rollups (means only)
    wins: pd.DataFrame
    took_s: float
    log_since: datetime | None = None  # the oldest attempt in the whole log (everyone's)
    taken_at: float = field(default_factory=time.monotonic)
    error: str | None = None


def _build_snapshot(c: Conductor, window_s: int | None, key_id: str | None = None) -> DashboardSnapshot:
    """The window's figures, everyone's (`key_id` None: from the rollups when the window is
    big) or one gateway key's (`NO_KEY`: the attempts made without one), read from its rows."""
    t0 = time.perf_counter()
    now = utcnow()
    log = c.log
    since = now - timedelta(seconds=window_s) if window_s is not None else None
    rows = log.count(since=since, key_id=key_id)
    if rows <= FRAME_ROW_LIMIT:
        frame = log.frame(since=since, columns=_FRAME_COLUMNS, key_id=key_id)
        first = frame["created_at"].iloc[0].to_pydatetime() if len(frame) else None
        start, end = dd.window_bounds(window_s, now, first)
        series, bucket_s = dd.series_from_frame(frame, start=start, end=end)
        from_rows = True
    else:
        if window_s is None:
            daily = log.aggregate(bucket_s=86400, key_id=key_id)
            first = daily["bucket"].min().to_pydatetime() if len(daily) else None
        else:
            first = None
        start, end = dd.window_bounds(window_s, now, first)
        span_s = (end - start).total_seconds()
        # The bucket is chosen before the query, from the providers Conductor knows (no
        # session state here: the snapshot is shared); more providers in the log than that
        # are handled by re-bucketing the sums, which stay exact.
        bucket_s = dd.bucket_seconds(span_s, providers=len(c.registry.names()))
        aggregate = log.aggregate(since=start, bucket_s=bucket_s, key_id=key_id)
        series = dd.series_from_aggregate(aggregate, start=start, end=end, bucket_s=bucket_s)
        if len(series) > dd.MAX_POINTS:
            bucket_s = dd.bucket_seconds(span_s, providers=series["provider"].nunique())
            series = dd.series_from_aggregate(aggregate, start=start, end=end, bucket_s=bucket_s)
        from_rows = False
    # Votes are cast in the playground and the Arena, never with a gateway key.
    wins = dd.win_rates(log.votes(since=since) if key_id is None or key_id == NO_KEY else [])
    return DashboardSnapshot(
        series, bucket_s, start, end, rows, from_rows, wins, time.perf_counter() - t0, log_since=_log_since(c)
    )


_LOG_SINCE_S = 60.0
_log_since_cache: dict[int, tuple[float, datetime | None]] = {}


def _log_since(c: Conductor) -> datetime | None:
    """When the request log starts, to the minute, from its rollups (two small queries,
    asked at most once a minute: the answer only changes when old rows are removed)."""
    cached = _log_since_cache.get(id(c))
    if cached and time.monotonic() - cached[0] < _LOG_SINCE_S and cached[1] is not None:
        return cached[1]
    daily = c.log.aggregate(bucket_s=86400)
    found = None
    if len(daily):
        day = daily["bucket"].min().to_pydatetime()
        minutes = c.log.aggregate(since=day, until=day + timedelta(days=1), bucket_s=60)
        found = (minutes["bucket"].min() if len(minutes) else daily["bucket"].min()).to_pydatetime()
    _log_since_cache[id(c)] = (time.monotonic(), found)
    return found


class _SnapshotCache:
    """One snapshot per window, shared by every session; rebuilt when older than two seconds,
    or three times what it took to build (a big log must not keep the server busy)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._build_locks: dict[Any, threading.Lock] = {}
        self._snapshots: dict[Any, DashboardSnapshot] = {}

    def get(
        self, c: Conductor, window_s: int | None, min_age_s: float = 2.0, key_id: str | None = None
    ) -> DashboardSnapshot:
        key = (id(c), window_s, key_id)
        with self._lock:
            build_lock = self._build_locks.setdefault(key, threading.Lock())
        with build_lock:  # one build per window at a time; the others wait and share it
            cached = self._snapshots.get(key)
            if cached and time.monotonic() - cached.taken_at < max(min_age_s, 3 * cached.took_s):
                return cached
            snapshot = _build_snapshot(c, window_s, key_id)
            self._snapshots[key] = snapshot
            return snapshot


@st.cache_resource
def _snapshot_cache() -> _SnapshotCache:
    return _SnapshotCache()


def dashboard_snapshot(c: Conductor, window_s: int | None, key_id: str | None = None) -> DashboardSnapshot:
    """The Dashboard's figures over a window: everyone's, or one gateway key's (`key_id`;
    `NO_KEY`: the traffic made without one)."""
    return _snapshot_cache().get(c, window_s, key_id=key_id)
