"""Issue 18, item 1: one client's bad input must never pause a provider for everyone.

Only what the upstream did counts against a provider and its breaker. Over the real SDKs
against the loopback servers, for OpenAI(-compatible), Anthropic and Gemini, chat and
stream, a named provider and AUTO, one test per class of failure:

* upstream-caused (a 500, a malformed body): counts, the breaker opens;
* request-caused (text no provider can be sent): 400 naming the field, no upstream call,
  the breaker untouched, in the gateway and in the core;
* Conductor-caused (a bug while building the call): 500 `internal_error` with an id, logged
  and recorded, no retry, no fallback, the breaker untouched.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conductor_core.config import load_settings
from conductor_core.errors import InternalError, MalformedResponse, UnsendableRequestError
from conductor_core.models import ChatMessage, ChatRequest, MessageRole
from conductor_core.providers.anthropic import AnthropicProvider
from conductor_core.providers.gemini import GeminiProvider
from conductor_core.providers.openai_compat import OpenAICompatProvider
from conductor_core.providers.spec import provider_specs
from conductor_core.routing import AsyncConductor
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer
from gateway.main import create_app
from tests.test_gateway import make_conductor, serve

KEY = "sk-Qm7vT2xK9pLd4RwZ8nBc"
SERVERS = {"openai": OpenAIServer, "anthropic": AnthropicServer, "gemini": GeminiServer}
CLASSES = {"openai": OpenAICompatProvider, "anthropic": AnthropicProvider, "gemini": GeminiProvider}
# A valid JSON body whose text holds a lone surrogate: the escape as a client writes it.
LONE_SURROGATE = b'{"model": "%s", "messages": [{"role": "user", "content": "a\\ud800b"}]%s}'


def settings_for(servers: dict[str, Any]) -> dict[str, Any]:
    fields: dict[str, Any] = {}
    for name, srv in servers.items():
        fields[f"{name}_api_key"] = KEY
        fields[f"{name}_base_url"] = srv.url
    return fields


@contextlib.contextmanager
def gateway(tmp_path: Path, names: list[str], **overrides: Any) -> Iterator[tuple[str, Any, dict[str, Any]]]:
    """A gateway over the loopback servers of `names`: (its URL, the conductor, the servers)."""
    with contextlib.ExitStack() as stack:
        servers = {name: stack.enter_context(SERVERS[name]()) for name in names}
        conductor = make_conductor(tmp_path, **settings_for(servers), **overrides)
        stack.callback(conductor.close)
        url = stack.enter_context(serve(create_app(conductor)))
        yield url, conductor, servers


def post(url: str, body: bytes, *, stream: bool = False) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", content=body, headers={"content-type": "application/json"}, timeout=60
    )


def generation_calls(servers: dict[str, Any]) -> int:
    return sum(1 for srv in servers.values() for r in srv.requests if r["method"] == "POST")


def breakers(conductor: Any, names: list[str]) -> dict[str, str]:
    return {name: conductor.breaker(name).state.value for name in names}


# --- the case, first ----------------------------------------------------------------------


@pytest.mark.parametrize("model", [f"openai/{provider_specs()['openai'].default_model}", "auto"])
def test_two_lone_surrogate_requests_do_not_pause_providers_for_another_client(tmp_path, model: str) -> None:
    """As reported: the default settings (2 retries, a breaker that opens after 5 failures),
    one client sends a lone surrogate twice, then another client sends a valid request. It
    used to be 3 attempts each charged to the provider, and 503 circuit_open for the next
    client (every provider's, with model auto)."""
    names = ["openai", "anthropic", "gemini"]
    with gateway(tmp_path, names, max_retries=2, breaker_failures=5) as (url, conductor, servers):
        for _ in range(2):
            bad = post(url, LONE_SURROGATE % (model.encode(), b""))
            assert bad.status_code == 400, bad.text
            body = bad.json()
            assert body["error"]["param"] == "messages[0].content" and body["type"] == "validation_error"
            assert "messages[0].content" in body["message"] and "lone surrogate" in body["message"]
            assert bad.headers["x-should-retry"] == "false"
        assert generation_calls(servers) == 0  # refused before any provider was tried
        assert set(breakers(conductor, names).values()) == {"closed"}

        other = httpx.post(
            f"{url}/v1/chat/completions",
            json={"model": model, "messages": [{"role": "user", "content": "a valid question"}]},
            timeout=60,
        )
        assert other.status_code == 200, other.text
        assert other.json()["choices"][0]["message"]["content"]


@pytest.mark.parametrize("route", ["/v1/chat/completions", "/v1/conductor/chat"])
@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (b'"content": "a\\ud800b"', "messages[0].content"),
        (b'"content": "a\\uDFFFb"', "messages[0].content"),
        (b'"content": "ok", "name": "x\\udc00"', "messages[0].name"),
        (b'"content": "a\xed\xa0\x80b"', "messages[0].content"),  # the surrogate as raw bytes
    ],
)
def test_unencodable_text_is_a_400_naming_the_field_on_both_routes(
    tmp_path, route: str, raw: bytes, field: str
) -> None:
    with gateway(tmp_path, ["openai"]) as (url, conductor, servers):
        key = b"model" if route.endswith("completions") else b"provider"
        body = b'{"%s": "openai", "messages": [{"role": "user", %s}]}' % (key, raw)
        response = httpx.post(f"{url}{route}", content=body, headers={"content-type": "application/json"})
        assert response.status_code == 400, response.text
        assert response.json()["error"]["param"] == field
        assert f"{field} holds text that cannot be sent" in response.json()["message"]
        # A valid surrogate pair (an emoji, escaped) is text like any other.
        emoji = b'{"%s": "openai", "messages": [{"role": "user", "content": "\\ud83d\\ude00"}]}' % key
        assert httpx.post(f"{url}{route}", content=emoji, headers={"content-type": "application/json"}).is_success
        assert generation_calls(servers) == 1
        assert breakers(conductor, ["openai"]) == {"openai": "closed"}


def test_the_core_refuses_unencodable_text_naming_the_field() -> None:
    """The playground and library callers build a ChatRequest: refused there too, by field."""
    with pytest.raises(ValueError, match=r"messages\[1\]\.content holds text that cannot be sent"):
        ChatRequest(messages=[{"role": "user", "content": "hi"}, {"role": "user", "content": "a\ud800"}])
    with pytest.raises(ValueError, match=r"tools\[0\]\.function\.parameters\.properties\.city\.description"):
        ChatRequest(
            messages=[{"role": "user", "content": "hi"}],
            tools=[
                {
                    "function": {
                        "name": "weather",
                        "parameters": {"properties": {"city": {"description": "\udfff"}}},
                    }
                }
            ],
        )
    with pytest.raises(ValueError, match="a key of logit_bias"):
        ChatRequest(messages=[{"role": "user", "content": "hi"}], logit_bias={"\ud800": 1})
    ChatRequest(messages=[{"role": "user", "content": "naïve café \U0001f600"}])  # real text is fine


# --- one test per class of failure, over each provider's real SDK ---------------------------------


def _model(provider: str, mode: str) -> str:
    return "auto" if mode == "auto" else provider


@pytest.mark.parametrize("mode", ["manual", "auto"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_an_upstream_failure_counts_against_the_provider(tmp_path, provider: str, stream: bool, mode: str) -> None:
    with gateway(tmp_path, [provider], breaker_failures=2) as (url, conductor, servers):
        servers[provider].script(Fault("status", status=500), Fault("malformed"))
        for _ in range(2):
            response = httpx.post(
                f"{url}/v1/chat/completions",
                json={
                    "model": _model(provider, mode),
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": stream,
                },
                timeout=60,
            )
            assert response.status_code in (502, 503), response.text
        assert generation_calls(servers) == 2
        assert breakers(conductor, [provider]) == {provider: "open"}  # two upstream failures: paused
        kinds = sorted(r.error_type for r in conductor.log.records())
        assert kinds == ["unavailable", "unavailable"]
        assert "malformed response" in " ".join(r.error_message or "" for r in conductor.log.records())


@pytest.mark.parametrize("mode", ["manual", "auto"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_request_fault_is_a_400_and_never_the_providers(tmp_path, provider: str, stream: bool, mode: str) -> None:
    with gateway(tmp_path, [provider], breaker_failures=1, max_retries=2) as (url, conductor, servers):
        extra = b', "stream": true' if stream else b""
        for _ in range(3):
            response = post(url, LONE_SURROGATE % (_model(provider, mode).encode(), extra))
            assert response.status_code == 400 and response.json()["error"]["param"] == "messages[0].content"
        assert generation_calls(servers) == 0
        assert breakers(conductor, [provider]) == {provider: "closed"}


def _surrogate_request(provider: str) -> ChatRequest:
    """A request built around validation (as a caller that skips it could): the provider's
    SDK meets the unencodable text while encoding the call."""
    message = ChatMessage.model_construct(
        role=MessageRole.user, content="a\ud800b", tool_calls=None, tool_call_id=None, name=None
    )
    valid = ChatRequest(provider=provider, messages=[{"role": "user", "content": "x"}], max_tokens=20)
    return valid.model_copy(update={"messages": [message]})


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic"])
def test_unencodable_text_met_by_the_sdk_is_the_requests_fault(tmp_path, provider: str, stream: bool) -> None:
    """Past validation, the SDK's own encoding raises UnicodeEncodeError: a 400 for the
    request (no retry, no fallback, no upstream call), never a malformed-response failure.
    (Gemini's SDK escapes such text instead, so its upstream would answer for itself.)"""
    with contextlib.ExitStack() as stack:
        # Not Gemini here: in AUTO it could rank first, and its SDK sends such text (escaped).
        servers = {name: stack.enter_context(SERVERS[name]()) for name in ("openai", "anthropic")}
        settings = load_settings(
            _env_file=None,
            **settings_for(servers),
            local_enabled=False,
            data_dir=tmp_path,
            api_key=None,
            max_retries=2,
            breaker_failures=1,
        )

        async def run() -> None:
            core = AsyncConductor(settings, source="gateway")
            try:
                for request in (_surrogate_request(provider), _surrogate_request("auto")):
                    with pytest.raises(UnsendableRequestError) as caught:
                        if stream:
                            async for _ in core.stream(request):
                                pass
                        else:
                            await core.chat(request)
                    assert caught.value.status_code == 400 and caught.value.type == "bad_request"
                    assert len(caught.value.attempts) == 1  # no retry, and AUTO did not fall back
                records = core.log.records()
                assert len(records) == 2 and {r.error_type for r in records} == {"bad_request"}
                assert {core.breaker(name).state.value for name in servers} == {"closed"}
            finally:
                await core.aclose()

        asyncio.run(run())
        assert generation_calls(servers) == 0


def _bug(*args: Any, **kwargs: Any) -> Any:
    raise TypeError(f"an unexpected keyword argument (a bug in Conductor's converter, near {KEY})")


@pytest.mark.parametrize("mode", ["manual", "auto"])
@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["openai", "anthropic", "gemini"])
def test_a_bug_in_conductor_is_a_500_and_never_the_providers(
    tmp_path, monkeypatch, caplog, provider: str, stream: bool, mode: str
) -> None:
    """A bug while Conductor builds the upstream call (here its converter raises, as a bug
    would): 500 internal_error with an id that the log line and the request log also carry;
    not retried, the breaker untouched."""
    monkeypatch.setattr(CLASSES[provider], "_to_request", _bug)
    with gateway(tmp_path, [provider], breaker_failures=1, max_retries=2) as (url, conductor, servers):
        caplog.set_level(logging.ERROR, logger="conductor")
        body = {"model": _model(provider, mode), "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 500, response.text
        error = response.json()
        assert error["type"] == "internal_error" and error["error"]["type"] == "server_error"
        assert error["provider"] == provider and response.headers["x-should-retry"] == "false"
        assert "bug in Conductor" in error["message"]
        incident = error["message"].split("quote ")[1].split()[0]
        assert incident.startswith("err_")
        [record] = conductor.log.records()  # one attempt: not retried
        assert record.provider == provider and record.error_type == "internal_error"
        assert incident in (record.error_message or "")
        logged = [r for r in caplog.records if incident in r.getMessage()]
        assert logged and "TypeError" in logged[0].getMessage()
        assert "Traceback" in (logged[0].exc_text or "") and "_bug" in (logged[0].exc_text or "")
        assert KEY not in caplog.text and KEY not in response.text  # logged redacted, traceback too
        assert generation_calls(servers) == 0
        assert breakers(conductor, [provider]) == {provider: "closed"}


@pytest.mark.parametrize("stream", [False, True])
def test_auto_does_not_fall_back_after_a_bug_every_provider_would_meet(tmp_path, monkeypatch, stream: bool) -> None:
    names = list(SERVERS)
    for cls in CLASSES.values():
        monkeypatch.setattr(cls, "_to_request", _bug)
    with gateway(tmp_path, names, breaker_failures=1) as (url, conductor, servers):
        body = {"model": "auto", "messages": [{"role": "user", "content": "hi"}], "stream": stream}
        response = httpx.post(f"{url}/v1/chat/completions", json=body, timeout=60)
        assert response.status_code == 500 and response.json()["type"] == "internal_error"
        [record] = conductor.log.records()  # the first choice only
        assert record.error_type == "internal_error" and response.json()["provider"] == record.provider
        assert generation_calls(servers) == 0
        assert set(breakers(conductor, names).values()) == {"closed"}


# --- converters: a body that is not what the protocol says is a MalformedResponse -----------------


@pytest.mark.parametrize(
    "body",
    [
        {"choices": []},
        {"choices": ["not an object"]},
        {"choices": [{"message": {"content": ["a", "list"]}}]},
        {"choices": [{"message": {"tool_calls": [{"id": "", "function": {}}]}}]},
        {"error": {"message": "overloaded"}},
    ],
)
def test_the_openai_converter_calls_a_wrong_body_malformed(body: dict[str, Any]) -> None:
    with pytest.raises(MalformedResponse):
        OpenAICompatProvider._from_response(body, "m")


def test_an_internal_error_is_not_held_against_the_provider_anywhere() -> None:
    from conductor_core.errors import NOT_PROVIDER_FAULTS, provider_at_fault

    assert "internal_error" in NOT_PROVIDER_FAULTS and not provider_at_fault(InternalError.type)
    assert json.dumps(sorted(NOT_PROVIDER_FAULTS))  # the dashboard and the store read the same set
