"""Routing state shared by every replica through Redis (or Valkey): breakers and AUTO's
rolling metrics.

The hot path never waits on the network. A request reads this process's own breakers and
metrics; what it leaves behind (a breaker verdict, a metrics entry) is put on an in-memory
queue. One daemon thread per process does all the talking to Redis:

* verdicts run a Lua script that makes the breaker's transition atomically for everyone
  (the same rules as `CircuitBreaker`: consecutive failures or a failure rate over a
  window, a cooldown that doubles after a failed probe);
* every `poll_s` it reads each breaker back into the local copies, claims the half-open
  probe when a cooldown is over (one replica wins it: `SET`-like, inside a script), and
  keeps a running probe's claim alive;
* metrics entries are pushed to one capped list per provider, and the lists that changed
  are read back into the local `MetricsRegistry` windows, so AUTO everywhere ranks on
  everyone's traffic.

Times inside the scripts are Redis's own (`TIME`), so replicas' clocks never disagree.
If Redis cannot be reached, the thread switches every breaker to local mode (each replica
alone, as without Redis), says so in `info()`, and tries again every few seconds; on its
return, breakers that opened meanwhile are handed to Redis so no replica forgets them.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
import uuid
from typing import Any

import redis
from redis.commands.core import Script

from ..metrics import MetricsRegistry, window_fields
from ..models import AttemptRecord, BreakerState, RoutingStateInfo
from ..secrets import redact
from .breakers import SharedBreaker

__all__ = ["RedisRoutingState", "safe_url"]

log = logging.getLogger("conductor.state")

_POLL_S = 0.2  # breakers read back at least this often: a trip reaches every replica well within 1 s
_METRICS_POLL_S = 0.5
_RECONNECT_S = 2.0
_PROBE_TTL_MS = 2000  # a claimed probe that is not running is free for another replica after this
_TIMEOUT_S = 0.5

# The state as a reply: state, ms until a probe, cooldown ms, trips, probe holder.
_READ = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function reply(h, now)
  local f = redis.call('HMGET', h, 'state', 'opened_at', 'cooldown', 'trips', 'probe')
  local state = f[1] or 'closed'
  local left = 0
  if state == 'open' then left = math.max(0, tonumber(f[2]) + tonumber(f[3]) - now) end
  return {state, left, tonumber(f[3] or ARGV[1]), tonumber(f[4] or 0), f[5] or ''}
end
"""

# KEYS: hash, outcomes list. ARGV: base cooldown ms, outcomes in order ('1' failed, '0' succeeded),
# failures, rate, window, max cooldown ms. A replica sends its verdicts in batches (successes
# wait for the next read; a failure is sent at once), applied in order as CircuitBreaker would.
_RECORD = (
    _READ
    + """
local h, w = KEYS[1], KEYS[2]
local now = now_ms()
local window = tonumber(ARGV[5])
local function trip(cooldown)
  redis.call('HSET', h, 'state', 'open', 'opened_at', now, 'cooldown', cooldown, 'consecutive', 0,
             'probe', '', 'probe_until', 0)
  redis.call('HINCRBY', h, 'trips', 1)
  redis.call('DEL', w)
end
local seq = ARGV[2]
for i = 1, #seq do
  local state = redis.call('HGET', h, 'state') or 'closed'
  if seq:sub(i, i) == '1' then
    if state == 'half_open' then
      local cooldown = tonumber(redis.call('HGET', h, 'cooldown') or ARGV[1])
      trip(math.min(cooldown * 2, tonumber(ARGV[6])))
    elseif state == 'closed' then
      redis.call('LPUSH', w, '1')
      redis.call('LTRIM', w, 0, window - 1)
      local consecutive = redis.call('HINCRBY', h, 'consecutive', 1)
      local outcomes = redis.call('LRANGE', w, 0, -1)
      local bad = 0
      for _, o in ipairs(outcomes) do if o == '1' then bad = bad + 1 end end
      if consecutive >= tonumber(ARGV[3]) or (#outcomes == window and bad / #outcomes >= tonumber(ARGV[4])) then
        trip(tonumber(redis.call('HGET', h, 'cooldown') or ARGV[1]))
      end
    end
  else
    if state == 'half_open' then
      redis.call('HSET', h, 'state', 'closed', 'cooldown', ARGV[1], 'consecutive', 0, 'probe', '', 'probe_until', 0)
      redis.call('DEL', w)
    elseif state == 'closed' then
      redis.call('LPUSH', w, '0')
      redis.call('LTRIM', w, 0, window - 1)
      redis.call('HSET', h, 'consecutive', 0)
    end
  end
end
return reply(h, now)
"""
)

# KEYS: hash. ARGV: base cooldown ms, replica, probe ttl ms, probe running here (0/1). The probe
# goes to one replica: the first to ask once the cooldown is over, or anyone once a claim lapsed
# unused by its holder; a replica whose probe is running keeps its claim alive.
_CLAIM = (
    _READ
    + """
local h = KEYS[1]
local now = now_ms()
local f = redis.call('HMGET', h, 'state', 'opened_at', 'cooldown', 'probe', 'probe_until')
local until_ms = now + tonumber(ARGV[3])
if f[1] == 'open' and now >= tonumber(f[2]) + tonumber(f[3]) then
  redis.call('HSET', h, 'state', 'half_open', 'probe', ARGV[2], 'probe_until', until_ms)
elseif f[1] == 'half_open' and ((f[4] == ARGV[2] and ARGV[4] == '1') or (f[4] ~= ARGV[2] and tonumber(f[5] or 0) < now)) then
  redis.call('HSET', h, 'probe', ARGV[2], 'probe_until', until_ms)
end
return reply(h, now)
"""
)

# KEYS: hash. ARGV: base cooldown ms, ms left, cooldown ms. A breaker this replica opened while
# Redis was away: open it for everyone too, unless Redis already has it open.
_ADOPT = (
    _READ
    + """
local h = KEYS[1]
local now = now_ms()
if (redis.call('HGET', h, 'state') or 'closed') == 'closed' then
  redis.call('HSET', h, 'state', 'open', 'opened_at', now + tonumber(ARGV[2]) - tonumber(ARGV[3]),
             'cooldown', ARGV[3], 'consecutive', 0, 'probe', '', 'probe_until', 0)
  redis.call('HINCRBY', h, 'trips', 1)
end
return reply(h, now)
"""
)

_STATES = {s.value: s for s in BreakerState}


def safe_url(url: str) -> str:
    """The URL with any password hidden (safe for /status, logs and errors)."""
    try:
        parsed = redis.connection.parse_url(url)
    except (ValueError, TypeError):
        return "redis (unreadable URL)"
    host = parsed.get("host") or parsed.get("path") or "localhost"
    port = f":{parsed['port']}" if parsed.get("port") else ""
    db = f"/{parsed['db']}" if parsed.get("db") else ""
    scheme = url.split("://", 1)[0]
    return f"{scheme}://{host}{port}{db}"


class RedisRoutingState:
    def __init__(
        self,
        url: str,
        *,
        prefix: str = "conductor:",
        poll_s: float = _POLL_S,
        breaker_settings: dict[str, Any] | None = None,
    ) -> None:
        self.backend = safe_url(url)
        self.prefix = prefix
        self.poll_s = poll_s
        self.replica = uuid.uuid4().hex[:12]
        self._url = url
        self._breaker_settings = breaker_settings or {}
        self._client: redis.Redis | None = None
        self._scripts: dict[str, Script] = {}
        self._breakers: dict[str, SharedBreaker] = {}
        self._breakers_lock = threading.Lock()
        self._metrics: MetricsRegistry | None = None
        self._metric_versions: dict[str, int] = {}
        self._outbox: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = threading.Event()
        self._detail = "connecting"
        self.reads = 0  # breaker read-backs done (tests count them instead of timing them)
        self._since = time.time()
        self._thread = threading.Thread(target=self._run, name="conductor-redis-state", daemon=True)
        self._thread.start()

    # --- what the core calls (never blocks on Redis) ----------------------------------------

    def breaker(self, name: str, **settings: Any) -> SharedBreaker:
        breaker = SharedBreaker(name, self._report, **settings)
        with self._breakers_lock:
            # Made while Redis answers: shared from its first call. Otherwise the sync hands it
            # over on connecting, with anything it learned alone meanwhile.
            breaker.shared = self._connected.is_set()
            self._breakers[name] = breaker
        self._wake.set()  # read its shared state at once
        return breaker

    def attach(self, metrics: MetricsRegistry) -> None:
        self._metrics = metrics

    def record_attempt(self, record: AttemptRecord) -> None:
        if self._connected.is_set():
            self._outbox.put(("entry", record))  # turned into a window entry by the sync thread

    def info(self) -> RoutingStateInfo:
        shared = self._connected.is_set()
        return RoutingStateInfo(
            mode="shared" if shared else "local",
            backend=self.backend,
            detail=None if shared else self._detail,
            since=self._since,
        )

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout=2)

    def _report(self, name: str, failed: bool, urgent: bool) -> None:
        """A verdict for Redis. Only the urgent ones (a failure, a probe's result) wake the sync
        now; a success in a closed breaker changes nothing until it is sent with the next read."""
        self._outbox.put(("verdict", (name, failed)))
        if urgent:
            self._wake.set()

    # --- the sync thread -----------------------------------------------------------------

    def _key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _run(self) -> None:
        next_metrics = 0.0
        while not self._stop.is_set():
            try:
                if not self._connected.is_set():
                    self._connect()
                self._flush()
                self._sync_breakers()
                now = time.monotonic()
                if now >= next_metrics:
                    self._sync_metrics()
                    next_metrics = now + _METRICS_POLL_S
            except (redis.RedisError, OSError) as exc:
                self._go_local(exc)
                self._stop.wait(_RECONNECT_S)
                continue
            except Exception as exc:  # a bug here must not leave breakers frozen: log it, go local
                log.exception("routing state sync failed; routing locally until it recovers")
                self._go_local(exc)
                self._stop.wait(_RECONNECT_S)
                continue
            self._wake.wait(self.poll_s)
            self._wake.clear()
        if self._client is not None:
            self._client.close()

    def _connect(self) -> None:
        client = redis.Redis.from_url(
            self._url, socket_timeout=_TIMEOUT_S, socket_connect_timeout=_TIMEOUT_S, decode_responses=True
        )
        client.ping()
        self._client = client
        self._scripts = {
            "record": client.register_script(_RECORD),
            "claim": client.register_script(_CLAIM),
            "adopt": client.register_script(_ADOPT),
            "read": client.register_script(_READ + "return reply(KEYS[1], now_ms())"),
        }
        with self._breakers_lock:
            self._connected.set()  # breakers made from now on are shared from the start
            alone = [b for b in self._breakers.values() if not b.shared]
        # What this replica learned alone while Redis was away is not forgotten.
        for breaker in alone:
            state, left = breaker.local_view()
            breaker.shared = True
            if state is BreakerState.open:
                key = self._key("breaker", breaker.name)
                self._apply(breaker, self._scripts["adopt"](keys=[key], args=self._adopt_args(breaker, left)))
        self._since = time.time()
        self._detail = ""
        log.info("routing state shared through %s", self.backend)

    def _adopt_args(self, breaker: SharedBreaker, left_s: float) -> list[int]:
        return [_ms(breaker.base_cooldown_s), _ms(left_s), _ms(breaker._cooldown_s)]

    def _go_local(self, exc: BaseException) -> None:
        was_shared = self._connected.is_set()
        self._connected.clear()
        self._detail = redact(f"{self.backend} unreachable ({type(exc).__name__}: {exc}); each process routes alone")
        if was_shared:
            self._since = time.time()
            log.warning("routing state is local: %s", self._detail)
        for _, breaker in self._breakers_snapshot():
            breaker.go_local()
        # Verdicts still queued are applied here, alone; metrics entries are already counted locally.
        while True:
            try:
                kind, item = self._outbox.get_nowait()
            except queue.Empty:
                break
            if kind == "verdict":  # metrics entries are already counted locally
                found = self._breakers.get(item[0])
                if found is not None:
                    (found.record_failure if item[1] else found.record_success)()
        if self._client is not None:
            self._client.close()
            self._client = None

    def _breakers_snapshot(self) -> list[tuple[str, SharedBreaker]]:
        with self._breakers_lock:
            return list(self._breakers.items())

    def _flush(self) -> None:
        assert self._client is not None
        verdicts: dict[str, list[str]] = {}  # by breaker, in the order they were given
        entries: dict[str, list[str]] = {}
        while True:
            try:
                kind, item = self._outbox.get_nowait()
            except queue.Empty:
                break
            if kind == "verdict":
                verdicts.setdefault(item[0], []).append("1" if item[1] else "0")
            else:
                fields = window_fields(item)
                if fields is not None:
                    entries.setdefault(item.provider, []).append(_encode(fields))
        if not verdicts and not entries:
            return
        pipe = self._client.pipeline(transaction=False)
        breakers = [self._breakers[name] for name in verdicts]
        for breaker in breakers:  # their replies come first, in this order
            name = breaker.name
            args: list[str | int | float] = [
                _ms(breaker.base_cooldown_s),
                "".join(verdicts[name]),
                breaker.failures,
                breaker.failure_rate,
                breaker.window,
                _ms(breaker.max_cooldown_s),
            ]
            keys = [self._key("breaker", name), self._key("breaker", name, "outcomes")]
            self._scripts["record"](keys=keys, args=args, client=pipe)
        window = self._metrics.window_size if self._metrics is not None else 500
        for provider, rows in entries.items():
            key = self._key("metrics", provider)
            pipe.lpush(key, *rows)
            pipe.ltrim(key, 0, window - 1)
            pipe.incr(self._key("metrics", provider, "version"))
            pipe.sadd(self._key("metrics"), provider)
        results = pipe.execute()
        for breaker, reply in zip(breakers, results, strict=False):
            self._apply(breaker, reply)

    def _sync_breakers(self) -> None:
        assert self._client is not None
        breakers = self._breakers_snapshot()
        if not breakers:
            return
        pipe = self._client.pipeline(transaction=False)
        for name, breaker in breakers:
            # Reading goes through the claim script too: it only claims when this replica may
            # probe (a cooldown over, or a lapsed claim) or keeps alive a probe it is running.
            running = breaker.probe_running()
            key = self._key("breaker", name)
            if running or breaker.wants_probe() or breaker.state is BreakerState.half_open:
                claim: list[str | int] = [_ms(breaker.base_cooldown_s), self.replica, _PROBE_TTL_MS, int(running)]
                self._scripts["claim"](keys=[key], args=claim, client=pipe)
            else:
                self._scripts["read"](keys=[key], args=[_ms(breaker.base_cooldown_s)], client=pipe)
        for (_, breaker), reply in zip(breakers, pipe.execute(), strict=True):
            self._apply(breaker, reply)
        self.reads += 1

    def _apply(self, breaker: SharedBreaker, reply: list[Any]) -> None:
        state, left_ms, cooldown_ms, trips, probe = reply
        breaker.follow(
            _STATES.get(state, BreakerState.closed),
            int(left_ms) / 1000,
            int(cooldown_ms) / 1000,
            int(trips),
            probe == self.replica,
        )

    def _sync_metrics(self) -> None:
        metrics = self._metrics
        if metrics is None:
            return
        assert self._client is not None
        providers = sorted(str(p) for p in self._client.smembers(self._key("metrics")))
        if not providers:
            return
        versions = self._client.mget([self._key("metrics", p, "version") for p in providers])
        changed = [
            (p, int(v))
            for p, v in zip(providers, versions, strict=True)
            if v is not None and int(v) != self._metric_versions.get(p)
        ]
        if not changed:
            return
        pipe = self._client.pipeline(transaction=False)
        for provider, _ in changed:
            pipe.lrange(self._key("metrics", provider), 0, -1)
        for (provider, version), rows in zip(changed, pipe.execute(), strict=True):
            metrics.replace_window(provider, [_decode(row) for row in reversed(rows)])
            self._metric_versions[provider] = version


def _ms(seconds: float) -> int:
    return int(round(seconds * 1000))


def _encode(fields: tuple[float, bool, float | None, float | None, int]) -> str:
    ts, ok, latency, ttft, tokens = fields
    return f"{ts},{int(ok)},{'' if latency is None else latency},{'' if ttft is None else ttft},{tokens}"


def _decode(row: str) -> tuple[float, bool, float | None, float | None, int]:
    ts, ok, latency, ttft, tokens = row.split(",")
    return float(ts), ok == "1", float(latency) if latency else None, float(ttft) if ttft else None, int(tokens)
