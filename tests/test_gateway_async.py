"""Issue 13 over real HTTP with the official openai client: a hung upstream stops nothing
else, a client that leaves cancels its upstream work, what the client sends arrives (and
a provider without it answers 400), tool calls round-trip, and the protocol details (request
ids, Retry-After, HEAD, CORS, deep JSON, masked keys, no key on a public address).

The hung upstream holds its requests until the test releases them (it never answers by
itself), so "nothing waited behind it" is proven by an answer at all, not by a clock; the
clients that leave do so when the test says, once every request is in flight."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from conductor_core.config import EndpointConfig
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer
from gateway.main import create_app
from gateway.settings import GatewaySettings
from tests.test_gateway import client, make_conductor, serve, user

HANG_S = 30.0  # how long a check waits before calling an answer missing
ROOT = Path(__file__).resolve().parents[1]


def endpoints(**servers: OpenAIServer) -> dict[str, EndpointConfig]:
    """Each server as an OpenAI-compatible endpoint that serves the model "m"."""
    for srv in servers.values():
        srv.models = ["m"]
    return {name: EndpointConfig(base_url=srv.url, models=["m"]) for name, srv in servers.items()}


@contextlib.contextmanager
def waiting_clients(url: str, n: int, model: str) -> Iterator[Callable[[], list[Any]]]:
    """`n` concurrent chats to `model`, from a thread and loop of their own, each waiting for its
    answer until the test calls the function this yields: then they all go away (their
    connections close, as a closed tab's would), and it returns what each got ("left")."""
    loop = asyncio.new_event_loop()
    leave = asyncio.Event()

    async def one(http: httpx.AsyncClient) -> Any:
        post = asyncio.ensure_future(http.post(f"{url}/v1/chat/completions", json={"model": model, "messages": user()}))
        gone = asyncio.ensure_future(leave.wait())
        await asyncio.wait({post, gone}, return_when=asyncio.FIRST_COMPLETED)
        if post.done():
            gone.cancel()
            return post.result()
        post.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await post
        return "left"

    async def all_of_them() -> list[Any]:
        async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=n + 10)) as http:
            return await asyncio.gather(*(one(http) for _ in range(n)))

    pool = ThreadPoolExecutor(max_workers=1)
    results = pool.submit(loop.run_until_complete, all_of_them())

    def go_away() -> list[Any]:
        loop.call_soon_threadsafe(leave.set)
        return results.result(timeout=120)

    try:
        yield go_away
    finally:
        if not results.done():
            go_away()
        pool.shutdown()
        loop.close()


def until(check: Callable[[], object], what: str, timeout_s: float = 120.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)


def test_a_hung_upstream_stops_nothing_else_and_leaving_clients_cancel_it(tmp_path) -> None:
    with OpenAIServer(reply="fine") as hung, OpenAIServer(reply="healthy answer") as healthy:
        n = 120
        hung.hold()  # it answers nothing until released (never, here)
        conductor = make_conductor(tmp_path, endpoints=endpoints(hung=hung, ok=healthy), timeout_s=600)
        with serve(create_app(conductor)) as url, waiting_clients(url, n, "hung/m") as go_away:
            bulkhead = conductor.core.attempts.bulkhead(conductor.registry.get("hung"))
            until(lambda: bulkhead.running == n and hung.held == n, "every hung request in flight at the upstream")

            # Had any of these waited behind the hung calls, it would never have answered.
            with httpx.Client(base_url=url, timeout=HANG_S) as http:
                for path in ("/health", "/status", "/v1/models"):
                    assert http.get(path).status_code == 200, path
                assert http.head("/health").status_code == 200
                answer = client(url).chat.completions.create(model="ok/m", messages=user())
                assert answer.choices[0].message.content == "healthy answer"
                streamed = list(client(url).chat.completions.create(model="ok/m", messages=user(), stream=True))
                assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == "healthy answer"

            assert go_away() == ["left"] * n
            # ...and their upstream calls were closed with them, not left waiting at the upstream.
            until(lambda: bulkhead.running == 0 and hung.held == 0, "the upstream calls closed")
            records = [r for r in conductor.log.records() if r.provider == "hung"]
            assert len(records) == n and {(r.status, r.error_type) for r in records} == {("error", "cancelled")}
            assert conductor.breaker("hung").state.value == "closed"  # a client leaving is not the provider's fault
        conductor.close()


def test_a_full_bulkhead_answers_503_with_retry_after(tmp_path) -> None:
    with OpenAIServer() as hung:
        hung.hold()
        conductor = make_conductor(
            tmp_path, endpoints=endpoints(hung=hung), bulkhead_limit=2, bulkhead_queue=2, timeout_s=600
        )
        with serve(create_app(conductor)) as url, waiting_clients(url, 4, "hung/m") as go_away:
            bulkhead = conductor.core.attempts.bulkhead(conductor.registry.get("hung"))
            until(lambda: (bulkhead.running, bulkhead.waiting) == (2, 2), "two calls running and two waiting")
            with pytest.raises(openai.InternalServerError) as caught:
                client(url).chat.completions.create(model="hung/m", messages=user())
            response = caught.value.response
            assert response.status_code == 503 and response.headers["retry-after"] == "1"
            assert response.headers["x-should-retry"] == "true"
            body = response.json()
            assert body["type"] == "busy" and "CONDUCTOR_BULKHEAD_LIMIT=2" in body["message"]
            assert body["request_id"] == response.headers["x-request-id"]
            assert go_away() == ["left"] * 4
        conductor.close()


def test_an_open_breaker_answers_503_with_retry_after_and_should_retry(tmp_path) -> None:
    with OpenAIServer() as down:
        down.set_down(True)
        conductor = make_conductor(tmp_path, endpoints=endpoints(down=down), breaker_failures=2, breaker_cooldown_s=9)
        with serve(create_app(conductor)) as url:
            for _ in range(2):
                with pytest.raises(openai.InternalServerError):
                    client(url).chat.completions.create(model="down/m", messages=user())
            with pytest.raises(openai.InternalServerError) as caught:
                client(url).chat.completions.create(model="down/m", messages=user())
            response = caught.value.response
            assert response.status_code == 503 and response.json()["type"] == "circuit_open"
            assert 1 <= int(response.headers["retry-after"]) <= 9 and response.headers["x-should-retry"] == "true"
        conductor.close()


# --- what the client sends arrives -------------------------------------------------------------

EVERY_PARAMETER: dict[str, Any] = {
    "temperature": 0.3,
    "top_p": 0.9,
    "stop": ["END"],
    "seed": 7,
    "presence_penalty": 0.5,
    "frequency_penalty": -0.5,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "top_logprobs": 2,
    "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}},
    "user": "user-42",
    "parallel_tool_calls": False,
    "tools": [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}}}],
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "max_completion_tokens": 77,
}


@pytest.mark.parametrize("stream", [False, True])
def test_every_openai_parameter_reaches_an_openai_compatible_upstream(tmp_path, stream: bool) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            result = client(url).chat.completions.create(
                model="up/m", messages=user(), stream=stream, **EVERY_PARAMETER
            )
            if stream:
                list(result)
            body = upstream.requests[-1]["json"]
            for name, value in EVERY_PARAMETER.items():
                assert body.get(name) == value, name  # under the name the client used

            upstream.requests.clear()
            client(url).chat.completions.create(model="up/m", messages=user())
            body = upstream.requests[-1]["json"]
            # Nothing the client did not send: no default temperature, no token cap.
            assert not {"temperature", "max_tokens", "max_completion_tokens", "top_p", "tools"} & set(body)
        conductor.close()


@pytest.mark.parametrize(
    ("provider", "parameter", "value"),
    [
        ("anthropic", "seed", 7),
        ("anthropic", "temperature", 0.2),
        ("anthropic", "logit_bias", {"1": 5}),
        ("gemini", "logit_bias", {"1": 5}),
        ("gemini", "logprobs", True),
    ],
)
def test_a_provider_without_a_parameter_answers_400_naming_both(tmp_path, provider, parameter, value) -> None:
    servers = {"anthropic": AnthropicServer(), "gemini": GeminiServer()}
    with servers[provider] as upstream:
        settings = {f"{provider}_api_key": "sk-Yc8s31bI4f2OuS31GmKFtx9J", f"{provider}_base_url": upstream.url}
        conductor = make_conductor(tmp_path, **settings)
        with serve(create_app(conductor)) as url:
            with pytest.raises(openai.BadRequestError) as caught:
                client(url).chat.completions.create(model=provider, messages=user(), **{parameter: value})
            assert f"{provider} does not support {parameter}" in caught.value.message
            body = caught.value.response.json()
            assert body["error"]["param"] == parameter and body["provider"] == provider
            assert upstream.request_count == 0  # refused before any call
            [record] = conductor.log.records()  # logged, and not held against the provider
            assert record.error_type == "bad_request"
            assert conductor.breaker(provider).state.value == "closed"
        conductor.close()


def test_translated_parameters_reach_anthropic_and_gemini(tmp_path) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "c", "schema": schema}}
    with AnthropicServer() as anthropic_srv, GeminiServer() as gemini_srv:
        conductor = make_conductor(
            tmp_path,
            anthropic_api_key="sk-Yc8s31bI4f2OuS31GmKFtx9J",
            anthropic_base_url=anthropic_srv.url,
            gemini_api_key="sk-Yc8s31bI4f2OuS31GmKFtx9J",
            gemini_base_url=gemini_srv.url,
        )
        with serve(create_app(conductor)) as url:
            api = client(url)
            api.chat.completions.create(model="anthropic", messages=user(), stop="END", response_format=fmt, user="u1")
            body = anthropic_srv.requests[-1]["json"]
            assert body["stop_sequences"] == ["END"] and body["metadata"] == {"user_id": "u1"}
            assert body["output_config"] == {"format": {"type": "json_schema", "schema": schema}}
            api.chat.completions.create(
                model="gemini",
                messages=user(),
                top_p=0.5,
                stop=["END"],
                seed=3,
                presence_penalty=1.0,
                response_format=fmt,
            )
            config = gemini_srv.requests[-1]["json"]["generationConfig"]
            assert (config["topP"], config["stopSequences"], config["seed"], config["presencePenalty"]) == (
                0.5,
                ["END"],
                3,
                1.0,
            )
            assert config["responseMimeType"] == "application/json" and config["responseJsonSchema"] == schema
        conductor.close()


# --- tool calls -------------------------------------------------------------------------------

TOOLS = [
    {
        "type": "function",
        "function": {"name": "weather", "description": "Weather in a city", "parameters": {"type": "object"}},
    }
]


PROVIDER_KEY = "sk-Yc8s31bI4f2OuS31GmKFtx9J"


@contextlib.contextmanager
def one_provider(tmp_path: Path, provider: str, reply: str) -> Iterator[tuple[Any, str, Any]]:
    """A gateway whose only provider is `provider` (an OpenAI-compatible endpoint, Anthropic
    or Gemini) on its loopback server: (the server, the gateway's URL, the conductor)."""
    servers = {"openai": OpenAIServer, "anthropic": AnthropicServer, "gemini": GeminiServer}
    with servers[provider](reply=reply) as upstream:
        if provider == "openai":
            conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        else:
            conductor = make_conductor(
                tmp_path, **{f"{provider}_api_key": PROVIDER_KEY, f"{provider}_base_url": upstream.url}
            )
        try:
            with serve(create_app(conductor)) as url:
                yield upstream, url, conductor
        finally:
            conductor.close()


MODELS = {"openai": "up/m", "anthropic": "anthropic", "gemini": "gemini"}


def _sent_tool_turns(provider: str, body: dict[str, Any]) -> tuple[Any, Any]:
    """The assistant's tool call and the tool's result as the upstream received them."""
    turns = body["contents"] if provider == "gemini" else body["messages"]
    return turns[1], turns[2]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_tool_call_round_trip(tmp_path, provider: str, stream: bool) -> None:
    """The openai client offers a tool, gets the call back in OpenAI's shape (streamed as
    OpenAI's chunks), answers it with a tool message, and gets the final text: for an
    OpenAI-compatible upstream, Anthropic (tool_use / tool_result) and Gemini (functionCall /
    functionResponse), each speaking its own protocol on the wire."""
    with one_provider(tmp_path, provider, "It is sunny in Paris.") as (upstream, url, _):
        api = client(url)
        model = MODELS[provider]
        if stream:
            chunks = list(api.chat.completions.create(model=model, messages=user("Weather?"), tools=TOOLS, stream=True))
            pieces = [tc for c in chunks if c.choices for tc in c.choices[0].delta.tool_calls or ()]
            assert pieces[0].id and pieces[0].function.name == "weather" and {p.index for p in pieces} == {0}
            call_id, arguments = pieces[0].id, "".join(p.function.arguments or "" for p in pieces)
            content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) or None
            assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == [
                "tool_calls"
            ]
            assert len({c.id for c in chunks}) == 1 and len({c.model for c in chunks}) == 1
        else:
            first = api.chat.completions.create(model=model, messages=user("Weather?"), tools=TOOLS)
            assert first.choices[0].finish_reason == "tool_calls"
            [call] = first.choices[0].message.tool_calls
            call_id, arguments, content = call.id, call.function.arguments, first.choices[0].message.content
        assert json.loads(arguments) == {"city": "Paris"}
        # Claude writes a sentence before a call it chose to make; the others only call.
        assert content == ("Let me look that up." if provider == "anthropic" else None)

        conversation = [
            *user("Weather?"),
            {
                "role": "assistant",
                "content": content,
                "tool_calls": [
                    {"id": call_id, "type": "function", "function": {"name": "weather", "arguments": arguments}}
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": '{"sky": "sunny"}'},
        ]
        final = api.chat.completions.create(model=model, messages=conversation, tools=TOOLS, stream=stream)
        text = (
            "".join(c.choices[0].delta.content or "" for c in final if c.choices)
            if stream
            else final.choices[0].message.content
        )
        assert text == "It is sunny in Paris."
        called, result = _sent_tool_turns(provider, upstream.requests[-1]["json"])
        if provider == "openai":
            assert called == {"role": "assistant", "content": None, "tool_calls": conversation[1]["tool_calls"]}
            assert result == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": call_id}
        elif provider == "anthropic":
            use = {"type": "tool_use", "id": call_id, "name": "weather", "input": {"city": "Paris"}}
            assert called == {"role": "assistant", "content": [{"type": "text", "text": content}, use]}
            assert result == {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": call_id, "content": '{"sky": "sunny"}'}],
            }
        else:
            assert called == {
                "role": "model",
                "parts": [{"functionCall": {"id": call_id, "name": "weather", "args": {"city": "Paris"}}}],
            }
            response = {"id": call_id, "name": "weather", "response": {"sky": "sunny"}}
            assert result == {"role": "user", "parts": [{"functionResponse": response}]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_response_format_becomes_each_providers_json_output(tmp_path, provider: str, stream: bool) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}
    formats = {
        "json_schema": {"type": "json_schema", "json_schema": {"name": "city", "schema": schema}},
        "json_object": {"type": "json_object"},
    }
    with one_provider(tmp_path, provider, "not JSON at all") as (upstream, url, _):
        for kind, fmt in formats.items():
            result = client(url).chat.completions.create(
                model=MODELS[provider], messages=user("Which city?"), response_format=fmt, stream=stream
            )
            text = (
                "".join(c.choices[0].delta.content or "" for c in result if c.choices)
                if stream
                else result.choices[0].message.content
            )
            assert json.loads(text) == {"city": "Paris"}  # the upstream answered in its JSON mode
            body = upstream.requests[-1]["json"]
            expected = schema if kind == "json_schema" else None
            if provider == "openai":
                assert body["response_format"] == fmt
            elif provider == "anthropic":
                assert body["output_config"] == {
                    "format": {"type": "json_schema", "schema": expected or {"type": "object"}}
                }
            else:
                config = body["generationConfig"]
                assert config["responseMimeType"] == "application/json" and config.get("responseJsonSchema") == expected
        plain = client(url).chat.completions.create(model=MODELS[provider], messages=user("Which city?"))
        assert plain.choices[0].message.content == "not JSON at all"


def test_empty_assistant_content_is_a_valid_conversation(tmp_path) -> None:
    with OpenAIServer(reply="ok") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            messages = [*user("one"), {"role": "assistant", "content": ""}, *user("two")]
            assert (
                client(url).chat.completions.create(model="up/m", messages=messages).choices[0].message.content == "ok"
            )
        conductor.close()


# --- protocol details --------------------------------------------------------------------------


def test_request_ids_streams_and_auto_chunks_are_consistent(tmp_path) -> None:
    with OpenAIServer(reply="one two three") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            api = client(url, default_headers={"x-request-id": "client-id-123"})
            raw = api.chat.completions.with_raw_response.create(model="auto", messages=user())
            assert raw.headers["x-request-id"] == "client-id-123"
            with api.chat.completions.with_streaming_response.create(
                model="auto", messages=user(), stream=True, stream_options={"include_usage": True}
            ) as response:
                assert response.headers["x-request-id"] == "client-id-123"
                chunks = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: {")]
            assert {c["model"] for c in chunks} == {"up/m"}  # never "auto": the serving model, as in the usage chunk
            assert {c["id"] for c in chunks} == {upstream.response_ids[-1]}  # one id: the upstream's own
            assert chunks[-2]["conductor"]["request_id"] == "client-id-123"  # Conductor's, with the header
            assert chunks[-1]["usage"]["completion_tokens"] == 3
            assert {r.request_id for r in conductor.log.records()} == {"client-id-123"}
            bad = httpx.post(
                f"{url}/v1/chat/completions",
                json={"model": "up/m", "messages": user()},
                headers={"x-request-id": "no spaces\tor tabs"},
            )
            assert bad.headers["x-request-id"].startswith("req_")
            assert httpx.get(f"{url}/nothing").headers["x-request-id"]  # errors have one too
        conductor.close()


def test_json_nested_1000_deep_is_a_400_on_both_routes_and_the_connection_survives(tmp_path) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url, httpx.Client(base_url=url) as http:
            deep = b'{"model": "up/m", "messages": ' + b"[" * 1000 + b"]" * 1000 + b"}"
            for path in ("/v1/chat/completions", "/v1/conductor/chat"):
                r = http.post(path, content=deep, headers={"content-type": "application/json"})
                assert r.status_code == 400, (path, r.text)
                assert r.json()["error"]["message"]
            assert http.get("/health").status_code == 200  # same keep-alive connection, still served
        conductor.close()


def test_native_route_streams_core_events(tmp_path) -> None:
    with OpenAIServer(reply="a b c") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            body = {"provider": "up", "messages": user()}
            with httpx.stream("POST", f"{url}/v1/conductor/chat?stream=true", json=body) as r:
                events = [line[7:] for line in r.iter_lines() if line.startswith("event: ")]
            assert events[0] == "start" and events.count("text") == 3 and events[-1] == "done"
        conductor.close()


def test_a_masked_key_in_an_upstream_error_reaches_no_one(tmp_path) -> None:
    masked = "zqUPca**********9041"
    with OpenAIServer() as upstream:
        upstream.script(
            Fault("status", status=401, message=f"Incorrect API key provided: {masked}. See your dashboard.")
        )
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            with pytest.raises(openai.InternalServerError) as caught:
                client(url).chat.completions.create(model="up/m", messages=user())
            status = httpx.get(f"{url}/status").text
            records = conductor.log.records()
        seen = [caught.value.response.text, status, *(r.error_message or "" for r in records)]
        assert records and all("zqUPca" not in text and "9041" not in text for text in seen)
        assert "[REDACTED]" in caught.value.response.text
        conductor.close()


def test_status_shows_the_request_log_health_while_its_database_is_away(tmp_path) -> None:
    """/status says whether the request log keeps up: written, then (the database's folder
    gone, as an unmounted volume) attempts waiting in the spool, the failure counted, the
    last error named (redacted); answered requests are never held back by it."""
    volume = tmp_path / "volume"
    volume.mkdir()
    with OpenAIServer(reply="logged") as upstream:
        conductor = make_conductor(
            tmp_path, endpoints=endpoints(up=upstream), database_url=f"sqlite:///{volume / 'log.db'}"
        )
        with serve(create_app(conductor)) as url, httpx.Client(base_url=url, timeout=30) as http:
            client(url).chat.completions.create(model="up/m", messages=user())
            assert conductor.log.flush() is True
            healthy = http.get("/status").json()["request_log"]
            assert (healthy["written"], healthy["pending"], healthy["write_errors"]) == (1, 0, 0)
            assert healthy["database_ok"] is True and healthy["last_error"] is None

            conductor.log._db.engine.dispose()
            volume.rename(tmp_path / "volume.away")
            volume.write_text("not a folder")  # nothing can create the database there again
            for _ in range(3):
                assert client(url).chat.completions.create(model="up/m", messages=user()).choices[0].message.content
            assert conductor.log.flush(timeout=30) is False  # tried, and could not
            down = http.get("/status").json()["request_log"]
            assert down["pending"] == 3 and down["spool_files"] == 1 and down["spooled_bytes"] > 0
            assert down["write_errors"] == 3 and down["database_ok"] is False and down["written"] == 1
            assert down["last_error"] and down["last_error_at"]

            volume.unlink()
            (tmp_path / "volume.away").rename(volume)
            assert conductor.log.flush(timeout=30) is True
            back = http.get("/status").json()["request_log"]
            assert (back["pending"], back["written"], back["database_ok"]) == (0, 4, True)

            schema = http.get("/openapi.json").json()["components"]["schemas"]
            documented = schema["SystemStatus"]["properties"]["request_log"]
            assert {"$ref": "#/components/schemas/LogHealth"} in documented["anyOf"]
            assert {"pending", "written", "write_errors", "rejected", "last_error"} <= set(
                schema["LogHealth"]["properties"]
            )
        conductor.close()


def test_cors_is_off_by_default_and_a_preflight_needs_no_key(tmp_path) -> None:
    conductor = make_conductor(tmp_path, api_key="eccfUHIapFMftqYAznMuNvET")
    preflight = {
        "origin": "https://app.example",
        "access-control-request-method": "POST",
        "access-control-request-headers": "authorization,content-type",
    }
    with serve(create_app(conductor, settings=GatewaySettings(_env_file=None))) as url:
        r = httpx.options(f"{url}/v1/chat/completions", headers=preflight)
        assert "access-control-allow-origin" not in r.headers
    settings = GatewaySettings(_env_file=None, cors_origins="https://app.example")
    with serve(create_app(conductor, settings=settings)) as url:
        r = httpx.options(f"{url}/v1/chat/completions", headers=preflight)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "https://app.example"
        r = httpx.get(f"{url}/status", headers={"origin": "https://app.example"})
        assert r.status_code == 401  # the key is still required for the call itself
        assert r.headers["access-control-allow-origin"] == "https://app.example"
        assert "x-request-id" in r.headers["access-control-expose-headers"]
    conductor.close()


def test_the_gateway_refuses_a_public_address_without_a_key(tmp_path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_") and k != "OPENAI_API_KEY"}
    env.update(CONDUCTOR_GATEWAY_HOST="0.0.0.0", CONDUCTOR_GATEWAY_PORT="8659", CONDUCTOR_DATA_DIR=str(tmp_path))
    run = subprocess.run(
        [sys.executable, "-m", "gateway"],
        cwd=tmp_path,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode != 0
    assert "refusing to serve on 0.0.0.0" in run.stderr and "CONDUCTOR_API_KEY" in run.stderr
    assert "CONDUCTOR_GATEWAY_ALLOW_UNAUTHENTICATED=true" in run.stderr

    # `uvicorn gateway.main:app --host 0.0.0.0` skips that check: a request that arrives on a
    # non-loopback address is refused instead ("testserver" is not loopback).
    from starlette.testclient import TestClient

    conductor = make_conductor(tmp_path)
    with TestClient(create_app(conductor, settings=GatewaySettings(_env_file=None))) as test:
        r = test.get("/status")
        assert r.status_code == 403 and "CONDUCTOR_API_KEY" in r.json()["message"]
        assert test.get("/health").status_code == 200  # the probe stays open
    conductor.close()
