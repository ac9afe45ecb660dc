"""Gateway keys as deployed: two `python -m gateway` processes sharing one request log (SQLite or PostgreSQL)
and one real Redis, the official openai client, a loopback OpenAI upstream. Keys are made,
listed and revoked through the admin API; their limits hold across both processes; the key
itself is never seen again after its creation (logs, request log, errors, exports).

Times are never asserted: revocation is bounded by counting the other process's key
refreshes (every 0.25 s), and everything else waits for a state with a generous deadline."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from sqlalchemy import create_engine, inspect, text

from conductor_core.keys import GatewayKey, KeyUse
from conductor_core.keys.counters import Admission, KeyCounters, OverLimit
from conductor_core.models import utcnow
from conductor_core.store import RequestLog, normalize_database_url
from conductor_core.testing.protocol_servers import OpenAIServer
from tests.redis_support import RedisServer
from tests.store_backends import REPO_ROOT, Backend, postgres_schema
from tests.test_durability import _SCRUB, GPT, UPSTREAM_KEY, _free_port

ADMIN_KEY = "Vt3kQp8ZrW6mXc2NbJ9hLy4GdS7fTa5E"  # CONDUCTOR_API_KEY: 32 characters
PRICED = "gpt-4o-mini"  # a model genai-prices knows: its answers cost something
ADMIN = {"Authorization": f"Bearer {ADMIN_KEY}"}


class Gateway:
    """`python -m gateway`, its output (uvicorn's access lines included) kept in a file."""

    def __init__(self, backend: Backend, upstream: OpenAIServer, redis_url: str, prefix: str, cwd: Path, n: int):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = cwd / f"gateway{n}.log"
        env = {k: v for k, v in os.environ.items() if k not in _SCRUB}
        env.update(
            {
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
                "CONDUCTOR_GATEWAY_HOST": "127.0.0.1",
                "CONDUCTOR_GATEWAY_PORT": str(self.port),
                "CONDUCTOR_GATEWAY_LOG_LEVEL": "info",
                "CONDUCTOR_API_KEY": ADMIN_KEY,
                "OPENAI_API_KEY": UPSTREAM_KEY,
                "OPENAI_BASE_URL": upstream.url,
                "CONDUCTOR_LOCAL_ENABLED": "false",
                "CONDUCTOR_DATA_DIR": str(backend.data_dir),
                "CONDUCTOR_MAX_RETRIES": "0",
                "CONDUCTOR_REDIS_URL": redis_url,
                "CONDUCTOR_REDIS_PREFIX": prefix,
            }
        )
        if backend.url:
            env["CONDUCTOR_DATABASE_URL"] = backend.url
        with self.output.open("wb") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "gateway"], cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 90
        while True:
            assert self.proc.poll() is None, f"python -m gateway exited: {self.output.read_text()[-2000:]}"
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the gateway did not answer /health in 90 s"
            time.sleep(0.2)

    def client(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.url}/v1", api_key=key, max_retries=0, timeout=60)

    def admin(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        headers = kwargs.pop("headers", ADMIN)
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=30, **kwargs)

    def make_key(self, **fields: Any) -> dict[str, Any]:
        made = self.admin("POST", "/v1/conductor/keys", json={"name": "test", **fields})
        assert made.status_code == 201, made.text
        return made.json()

    def refreshes(self) -> int:
        return int(self.admin("GET", "/v1/conductor/keys").json()["refreshes"])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)


class Stack:
    def __init__(self, one: Gateway, two: Gateway, upstream: OpenAIServer, backend: Backend) -> None:
        self.one, self.two, self.upstream, self.backend = one, two, upstream, backend
        self.keys: list[str] = []  # every key made: none may appear anywhere afterwards

    def make_key(self, **fields: Any) -> dict[str, Any]:
        made = self.one.make_key(**fields)
        self.keys.append(made["key"])
        return made


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def stack(request: pytest.FixtureRequest, tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("keys")
    with ExitStack() as cleanup:
        url = cleanup.enter_context(postgres_schema()) if request.param == "postgresql" else None
        yield from _stack(root, Backend(request.param, url, root / "data"))


def _stack(root: Path, backend: Backend) -> Iterator[Stack]:
    redis = RedisServer(root).start()
    gateways: list[Gateway] = []
    try:
        with OpenAIServer(models=[GPT, "gpt-6-sol", PRICED]) as upstream:
            prefix = f"keys{time.time_ns()}:"
            for n in (1, 2):
                gateways.append(Gateway(backend, upstream, redis.url, prefix, root, n))
            yield Stack(gateways[0], gateways[1], upstream, backend)
    finally:
        for gateway in gateways:
            gateway.stop()
        redis.stop()


def until(check: Callable[[], object], what: str, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def chats(upstream: OpenAIServer) -> int:
    """Chat requests the upstream received (listing its models is not one)."""
    return sum(r["path"].endswith("/chat/completions") for r in upstream.requests)


def ask(client: openai.OpenAI, model: str = f"openai/{GPT}") -> str | None:
    answer = client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=5)
    return answer.choices[0].message.content


@pytest.mark.slow
def test_the_admin_api_needs_the_admin_key_and_says_what_to_change(stack: Stack) -> None:
    body = {"name": "app", "rpm": 5}
    assert stack.one.admin("POST", "/v1/conductor/keys", json=body, headers={}).status_code == 401
    wrong = {"Authorization": "Bearer not-the-admin-key-at-all-0123456789"}
    assert stack.one.admin("GET", "/v1/conductor/keys", headers=wrong).status_code == 401
    made = stack.make_key(name="reader", owner="ana")
    as_key = {"Authorization": f"Bearer {made['key']}"}
    for method, path in (("GET", "/v1/conductor/keys"), ("POST", "/v1/conductor/keys"), ("GET", "/status")):
        refused = stack.one.admin(method, path, headers=as_key, json=body)
        assert refused.status_code == 403, refused.text
        assert "admin key" in refused.json()["error"]["message"]
    # Bad input: a 400 naming the field and what to change.
    for bad, field, words in (
        ({"name": "x", "rpm": 0}, "rpm", "rpm must be at least 1"),
        ({"name": "x", "models": ["nowhere/model"]}, "models", "is not 'auto', a provider ("),
        ({"name": "x", "budget_usd": 5, "budget_period": "week"}, "budget_period", "'day' or 'month'"),
        ({"name": "x", "rpn": 5}, "rpn", "not permitted"),
        ({"rpm": 5}, "name", "name is required"),
    ):
        answer = stack.one.admin("POST", "/v1/conductor/keys", json=bad)
        assert answer.status_code == 400, (bad, answer.text)
        error = answer.json()["error"]
        assert error["param"] == field and words in error["message"], (bad, error)
    # Listed by both processes, never with the key or its hash.
    for gateway in (stack.one, stack.two):
        listed = gateway.admin("GET", "/v1/conductor/keys").json()
        (found,) = [k for k in listed["data"] if k["id"] == made["id"]]
        assert found["prefix"] == made["key"][:11] and found["owner"] == "ana" and found["revoked_at"] is None
        assert made["key"] not in json.dumps(listed) and "hash" not in json.dumps(listed)
        assert listed["counters"]["mode"] == "shared"
    assert stack.one.admin("DELETE", "/v1/conductor/keys/key_nosuchkey").status_code == 404
    # Documented in /docs.
    paths = stack.one.admin("GET", "/openapi.json").json()["paths"]
    assert {"post", "get"} <= set(paths["/v1/conductor/keys"]) and "delete" in paths["/v1/conductor/keys/{key_id}"]


@pytest.mark.slow
def test_a_key_with_rpm_5_gets_429_on_the_6th_request_across_two_gateways(stack: Stack) -> None:
    key = stack.make_key(name="rpm", rpm=5)["key"]
    one, two = stack.one.client(key), stack.two.client(key)
    for client in (one, two, one, two, one):
        assert ask(client)
    served = chats(stack.upstream)
    for client in (two, one):  # the 6th within the minute, whichever process it reaches
        with pytest.raises(openai.RateLimitError) as refused:
            ask(client)
        response = refused.value.response
        assert response.status_code == 429 and int(response.headers["retry-after"]) >= 1
        error = response.json()["error"]
        assert "5 requests per minute" in error["message"] and error["code"] == "rpm_limit_exceeded"
    assert chats(stack.upstream) == served  # never sent upstream


@pytest.mark.slow
def test_a_key_over_its_tokens_per_minute_is_refused_naming_the_limit(stack: Stack) -> None:
    key = stack.make_key(name="tpm", tpm=1)["key"]
    assert ask(stack.one.client(key))  # admitted (an empty window); its real tokens are counted after
    with pytest.raises(openai.RateLimitError) as refused:
        ask(stack.two.client(key))
    error = refused.value.response.json()["error"]
    assert "1 tokens per minute" in error["message"] and error["code"] == "tpm_limit_exceeded"
    assert int(refused.value.response.headers["retry-after"]) >= 1


@pytest.mark.slow
def test_an_exhausted_budget_gives_the_documented_error_on_every_gateway(stack: Stack) -> None:
    key = stack.make_key(name="budget", budget_usd=1e-9, budget_period="month")["key"]
    assert ask(stack.one.client(key), f"openai/{PRICED}")  # spent 0 < budget: admitted; it costs more
    for gateway in (stack.two, stack.one):
        with pytest.raises(openai.RateLimitError) as refused:
            ask(gateway.client(key), f"openai/{PRICED}")
        response = refused.value.response
        error = response.json()["error"]
        assert error["code"] == "insufficient_quota" and response.json()["type"] == "budget_exceeded"
        assert "budget of $1e-09 per month is spent" in error["message"] and "resets at" in error["message"]
        assert response.headers["x-should-retry"] == "false" and int(response.headers["retry-after"]) >= 1


@pytest.mark.slow
def test_a_key_limited_to_one_model_cannot_reach_another(stack: Stack) -> None:
    key = stack.make_key(name="one model", models=[f"openai/{GPT}"])["key"]
    client = stack.two.client(key)
    assert ask(client, f"openai/{GPT}")
    assert ask(client, "openai")  # the provider's default model: the one allowed
    served = chats(stack.upstream)
    for other in ("openai/gpt-6-sol", "gpt-6-sol", "auto"):
        with pytest.raises(openai.PermissionDeniedError) as refused:
            ask(client, other)
        error = refused.value.response.json()["error"]
        assert error["code"] == "model_not_allowed" and f"it may use: openai/{GPT}" in error["message"], other
    assert chats(stack.upstream) == served
    assert [m.id for m in client.models.list().data] == [f"openai/{GPT}"]  # what it may use, listed
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("openai/gpt-6-sol")
    assert stack.two.client(ADMIN_KEY).models.retrieve("openai/gpt-6-sol").id == "openai/gpt-6-sol"


@pytest.mark.slow
def test_a_revoked_key_is_refused_by_both_gateways_within_two_refreshes(stack: Stack) -> None:
    made = stack.make_key(name="revoked")
    one, two = stack.one.client(made["key"]), stack.two.client(made["key"])
    assert ask(one) and ask(two)  # both processes hold the key in their view
    revoked = stack.one.admin("DELETE", f"/v1/conductor/keys/{made['id']}")
    assert revoked.status_code == 200 and revoked.json()["revoked_at"] is not None
    seen_from = stack.two.refreshes()  # read after the revocation was committed
    with pytest.raises(openai.AuthenticationError):
        ask(one)  # the process that revoked it: at once
    # The other process: by its second refresh after the commit (one may have begun before it),
    # 0.25 s apart: well within 1 s.
    until(lambda: stack.two.refreshes() >= seen_from + 2, "gateway two to refresh its keys twice")
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(two)
    assert "revoked" in refused.value.response.json()["error"]["message"]
    listed = stack.two.admin("GET", "/v1/conductor/keys").json()["data"]
    assert [k["revoked_at"] is not None for k in listed if k["id"] == made["id"]] == [True]


@pytest.mark.slow
def test_an_unknown_key_is_refused_in_openais_shape(stack: Stack) -> None:
    with pytest.raises(openai.AuthenticationError) as refused:
        ask(stack.one.client("sk-cnd-" + "x" * 43))
    assert refused.value.response.json()["error"]["message"] == "invalid API key: no such gateway key"


@pytest.mark.slow
def test_every_attempt_records_its_key_and_no_key_appears_anywhere(stack: Stack) -> None:
    """Runs last in this module: the canary over everything the tests above did."""
    made = stack.make_key(name="canary", owner="ops", tpm=100_000)
    assert ask(stack.one.client(made["key"])) and ask(stack.two.client(made["key"]))
    streamed = stack.two.client(made["key"]).chat.completions.create(
        model=f"openai/{GPT}", messages=[{"role": "user", "content": "hi"}], max_tokens=5, stream=True
    )
    assert "".join(chunk.choices[0].delta.content or "" for chunk in streamed if chunk.choices)
    assert stack.one.client(ADMIN_KEY).models.list().data  # the admin key's requests carry no key id
    assert ask(stack.one.client(ADMIN_KEY))
    database = stack.backend.url or f"sqlite:///{stack.backend.data_dir / 'conductor.db'}"
    engine = create_engine(normalize_database_url(database))
    try:

        def rows() -> list[dict[str, Any]]:
            with engine.connect() as conn:
                return [dict(r._mapping) for r in conn.execute(text("SELECT * FROM attempts"))]

        def attributed() -> bool:  # the key's three attempts (one streamed), and the admin key's with no key id
            found = rows()
            return sum(r["key_id"] == made["id"] for r in found) == 3 and any(r["key_id"] is None for r in found)

        until(attributed, "the key's three attempts and the admin key's in the log")
        with engine.connect() as conn:
            dump = [
                json.dumps([list(map(str, row)) for row in conn.execute(text(f"SELECT * FROM {table}"))])
                for table in inspect(conn).get_table_names()
            ]
    finally:
        engine.dispose()
    log = RequestLog(stack.backend.url, data_dir=stack.backend.data_dir)
    try:
        exports = [log.export("csv").decode(), log.export("json").decode()]
    finally:
        log.close()
    assert made["id"] in exports[1]  # exports carry the key's id (never the key)
    status = stack.one.admin("GET", "/status").text
    logs = [gateway.output.read_text() for gateway in (stack.one, stack.two)]
    assert "POST /v1/chat/completions" in logs[0]  # the access lines are there to look through
    for key in stack.keys:
        secret = key.removeprefix("sk-cnd-")
        places = {"the database": dump, "/status": [status], "the logs": logs, "the exports": exports}
        for where, found in places.items():
            content = "\n".join(found)
            assert secret not in content and secret[:12] not in content, f"a key in {where}"


# --- the counters alone, in this process (no Redis: the single-machine default) ----------------


def _key(**limits: Any) -> GatewayKey:
    return GatewayKey(id="key_t", name="t", prefix="sk-cnd-abcd", created_at=utcnow(), created_by="admin", **limits)


def _refused(counters: KeyCounters, key: GatewayKey, tokens: int = 10) -> OverLimit:
    with pytest.raises(OverLimit) as refused:
        asyncio.run(counters.admit(key, tokens))
    return refused.value


def test_without_redis_rpm_and_tpm_count_in_the_process() -> None:
    counters = KeyCounters(lambda key_id, since: 0.0)
    assert counters.info()["mode"] == "local"
    key = _key(rpm=2, tpm=100)
    for _ in range(2):
        asyncio.run(counters.settle(asyncio.run(counters.admit(key, 10)), KeyUse(key.id)))
    over = _refused(counters, key)
    assert over.limit == "rpm" and 1 <= over.retry_after_s <= 60
    tpm = _key(tpm=100)
    admitted = asyncio.run(counters.admit(tpm, 60))
    used = KeyUse(tpm.id)
    used.input_tokens, used.output_tokens = 30, 80  # more than reserved: the window gets the difference
    asyncio.run(counters.settle(admitted, used))
    over = _refused(counters, tpm, tokens=1)
    assert over.limit == "tpm" and "100 tokens per minute" in over.message


def test_a_budget_starts_from_the_logged_spend_and_parallel_requests_overshoot_by_one_request_at_most() -> None:
    asked: list[str] = []

    def logged(key_id: str, since: Any) -> float:
        asked.append(key_id)
        return 0.5  # what the request log priced for the key earlier in the period

    counters = KeyCounters(logged)
    key = _key(budget_usd=1.0, budget_period="month")

    def spend(admission: Admission, cost: float) -> None:
        use = KeyUse(key.id)
        use.cost_usd = cost
        asyncio.run(counters.settle(admission, use))

    spend(asyncio.run(counters.admit(key, 10)), 0.125)  # 0.625 spent; a request costs 0.125 (reserved from now on)

    async def burst() -> list[Admission | OverLimit]:
        async def one() -> Admission | OverLimit:
            try:
                return await counters.admit(key, 10)
            except OverLimit as over:
                return over

        return await asyncio.gather(*(one() for _ in range(10)))

    results = asyncio.run(burst())  # ten at once, none settled yet
    admitted = [r for r in results if isinstance(r, Admission)]
    assert len(admitted) == 3  # 0.625 + 3 x 0.125 reserved reaches the budget: the rest are refused
    for admission in admitted:
        spend(admission, 0.125)
    over = _refused(counters, key)
    assert over.limit == "budget" and "budget of $1 per month is spent ($1.000000 so far)" in over.message
    assert asked == [key.id]  # the log is read once per period and process


def test_an_unreachable_redis_counts_locally_and_says_so() -> None:
    counters = KeyCounters(lambda key_id, since: 0.0, redis_url=f"redis://127.0.0.1:{_free_port()}/0")
    key = _key(rpm=1)
    asyncio.run(counters.admit(key, 10))  # served: Redis down is never an outage
    assert counters.info()["mode"] == "local" and "unreachable" in counters.info()["detail"]
    assert _refused(counters, key).limit == "rpm"  # still limited, here


def test_without_an_admin_key_no_gateway_key_can_be_made(tmp_path: Path) -> None:
    """An open gateway (no CONDUCTOR_API_KEY) takes every request anyway: a key would limit
    nothing, so the keys API says what to set instead of making one."""
    from fastapi.testclient import TestClient

    from conductor_core.config import load_settings
    from conductor_core.router import Conductor
    from gateway.main import create_app
    from gateway.settings import GatewaySettings

    conductor = Conductor(load_settings(_env_file=None, local_enabled=False, api_key=None, data_dir=tmp_path))
    try:
        app = create_app(conductor, settings=GatewaySettings(allow_unauthenticated=True))
        with TestClient(app) as client:
            refused = client.post("/v1/conductor/keys", json={"name": "app"})
            assert refused.status_code == 403
            assert "set CONDUCTOR_API_KEY" in refused.json()["error"]["message"]
            assert client.get("/v1/conductor/keys").status_code == 403
    finally:
        conductor.close()
