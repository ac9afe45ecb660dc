"""Each cloud provider through its real SDK over real HTTP, against a loopback server that
speaks the provider's protocol: answers, streams, usage, cost, and every failure mapped to
the right `ProviderError`."""

from __future__ import annotations

import pytest

from conductor_core.config import load_settings
from conductor_core.errors import (
    AuthenticationError,
    BadRequestError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    RateLimitError,
    StreamInterruptedError,
)
from conductor_core.models import ChatMessage, ChatRequest, StreamDone, TextDelta
from conductor_core.providers import build_provider
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer

REPLY = "The quick brown fox jumps over the lazy dog."
KEY = "sk-Yc8s31bI4f2OuS31GmKFtx9J"

# provider name -> (server class, settings fields that point the provider at it, key env var)
KINDS = {
    "openai": (OpenAIServer, "openai_api_key", "openai_base_url", "OPENAI_API_KEY"),
    "anthropic": (AnthropicServer, "anthropic_api_key", "anthropic_base_url", "ANTHROPIC_API_KEY"),
    "gemini": (GeminiServer, "gemini_api_key", "gemini_base_url", "GEMINI_API_KEY"),
}


@pytest.fixture(params=list(KINDS), scope="module")
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def server(kind):
    server_cls = KINDS[kind][0]
    with server_cls(reply=REPLY, require_key=KEY) as srv:
        yield srv


@pytest.fixture
def provider(kind, server, tmp_path):
    server.script()  # nothing queued from an earlier test
    server.set_down(False)
    _, key_field, url_field, _ = KINDS[kind]
    settings = load_settings(
        _env_file=None, timeout_s=30.0, data_dir=tmp_path, **{key_field: KEY, url_field: server.url}
    )
    return build_provider(kind, settings)


def _request(**kw) -> ChatRequest:
    messages = [
        ChatMessage(role="system", content="You are terse."),
        ChatMessage(role="user", content="Say the pangram please"),
    ]
    return ChatRequest(provider="auto", messages=messages, **{"max_tokens": 100, **kw})


def test_chat_completion_with_usage_and_cost(provider, server):
    response = provider.chat_completion(_request())
    assert response.content == REPLY
    assert response.metadata.provider == provider.name
    assert response.metadata.model == provider.default_model
    assert response.metadata.finish_reason == "stop"
    a = response.analytics
    assert a.input_tokens > 0 and a.output_tokens == len(REPLY.split())
    assert a.cost_usd is not None and a.cost_usd > 0  # default models are all priced by genai-prices
    assert a.latency_ms > 0 and a.time_to_first_token_ms is None
    assert provider.successful_requests == 1 and provider.failed_requests == 0


def test_stream_yields_deltas_then_done(provider):
    events = list(provider.stream(_request()))
    deltas = [e.text for e in events if isinstance(e, TextDelta)]
    assert len(deltas) > 1 and "".join(deltas) == REPLY
    done = events[-1]
    assert isinstance(done, StreamDone)
    a = done.response.analytics
    assert done.response.content == REPLY
    assert a.output_tokens == len(REPLY.split()) and a.input_tokens > 0
    assert a.time_to_first_token_ms is not None and a.time_to_first_token_ms <= a.latency_ms
    assert a.cost_usd is not None and a.cost_usd > 0


def test_system_prompt_reaches_the_wire_in_the_provider_format(kind, provider, server):
    provider.chat_completion(_request())
    body = server.requests[-1]["json"]
    if kind == "openai":
        assert body["messages"][0] == {"role": "system", "content": "You are terse."}
    elif kind == "anthropic":
        assert body["system"] == "You are terse."
        assert all(m["role"] != "system" for m in body["messages"])
    else:
        assert body["systemInstruction"]["parts"][0]["text"] == "You are terse."


@pytest.mark.parametrize("streamed", [False, True])
def test_top_p_stop_and_seed_reach_the_wire_where_the_provider_has_them(kind, provider, server, streamed):
    request = _request(top_p=0.5, stop=["\n\n", "END"], seed=42)
    if streamed:
        list(provider.stream(request))
    else:
        provider.chat_completion(request)
    body = server.requests[-1]["json"]
    if kind == "openai":
        assert (body["top_p"], body["stop"], body["seed"]) == (0.5, ["\n\n", "END"], 42)
        assert provider.ignored_settings(request) == []
    elif kind == "anthropic":
        assert body["stop_sequences"] == ["\n\n", "END"]
        assert "top_p" not in body and "seed" not in body and "temperature" not in body
        # What it cannot pass on, it says, so the playground can show it beside the control.
        assert provider.ignored_settings(request) == ["temperature", "top_p", "seed"]
    else:
        config = body["generationConfig"]
        assert (config["topP"], config["stopSequences"], config["seed"]) == (0.5, ["\n\n", "END"], 42)
        assert provider.ignored_settings(request) == []


def test_unset_optional_settings_are_not_sent(kind, provider, server):
    provider.chat_completion(_request())
    body = server.requests[-1]["json"]
    sent = body.get("generationConfig", body)
    assert not {"top_p", "topP", "stop", "stop_sequences", "stopSequences", "seed"} & set(sent)


def test_max_tokens_reports_length(provider):
    response = provider.chat_completion(_request(max_tokens=3))
    assert response.metadata.finish_reason == "length"


def test_models_listed_from_the_api(provider, server):
    models = provider.get_available_models()
    assert provider.default_model in models
    assert provider.health_check() is True and provider.last_check is not None


def test_wrong_key_is_an_authentication_error_naming_the_variable(kind, server, tmp_path):
    _, key_field, url_field, env_var = KINDS[kind]
    settings = load_settings(
        _env_file=None, timeout_s=30.0, **{key_field: "sk-ZBLEYD3wxmiM7OYEyHjOJNs3", url_field: server.url}
    )
    bad = build_provider(kind, settings)
    with pytest.raises(AuthenticationError) as info:
        bad.chat_completion(_request())
    assert info.value.status_code == 401 and not info.value.retryable
    assert env_var in info.value.message
    assert bad.health_check() is False and bad.state.value == "unhealthy"


def test_rate_limit_carries_retry_after(provider, server):
    server.script(Fault("status", status=429, retry_after=3))
    with pytest.raises(RateLimitError) as info:
        provider.chat_completion(_request())
    assert info.value.retryable and info.value.retry_after == pytest.approx(3.0)
    assert provider.failed_requests == 1


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retryable_unavailable(provider, server, status):
    server.script(Fault("status", status=status))
    with pytest.raises(ProviderUnavailableError) as info:
        provider.chat_completion(_request())
    assert info.value.status_code == status and info.value.retryable


def test_bad_request_is_not_retryable(provider, server):
    server.script(Fault("status", status=400, message="max_tokens is too large"))
    with pytest.raises(BadRequestError) as info:
        provider.chat_completion(_request())
    assert not info.value.retryable and "too large" in info.value.message


def test_hang_past_the_timeout_is_a_timeout(kind, server, tmp_path):
    _, key_field, url_field, _ = KINDS[kind]
    settings = load_settings(
        _env_file=None, timeout_s=1.0, data_dir=tmp_path, **{key_field: KEY, url_field: server.url}
    )
    impatient = build_provider(kind, settings)
    server.script(Fault("hang", hang_s=120.0))  # far past the timeout, however slow the machine
    with pytest.raises(ProviderTimeoutError) as info:
        impatient.chat_completion(_request())
    assert info.value.retryable


def test_malformed_json_is_unavailable(provider, server):
    server.script(Fault("malformed"))
    with pytest.raises(ProviderUnavailableError):
        provider.chat_completion(_request())


def test_malformed_stream_is_reported(provider, server):
    server.script(Fault("malformed"))
    with pytest.raises((ProviderUnavailableError, StreamInterruptedError)):
        list(provider.stream(_request()))


def test_stream_cut_after_text_keeps_the_partial_text(provider, server):
    server.script(Fault("cut"))
    seen: list[str] = []
    with pytest.raises(StreamInterruptedError) as info:
        for event in provider.stream(_request()):
            assert not isinstance(event, StreamDone), "a cut stream must never end as a success"
            seen.append(event.text)
    assert seen and info.value.partial_text == "".join(seen)
    assert provider.failed_requests == 1 and provider.successful_requests == 0


def test_stream_cut_before_first_token_is_a_plain_failure(provider, server):
    server.script(Fault("cut_before_first"))
    with pytest.raises((ProviderUnavailableError, StreamInterruptedError)) as info:
        list(provider.stream(_request()))
    assert getattr(info.value, "partial_text", "") == ""
    assert info.value.retryable


def test_stream_rate_limited_before_start(provider, server):
    server.script(Fault("status", status=429, retry_after=1))
    with pytest.raises(RateLimitError):
        list(provider.stream(_request()))


def test_unreachable_server_is_unavailable(kind, tmp_path):
    _, key_field, url_field, _ = KINDS[kind]
    settings = load_settings(_env_file=None, timeout_s=2.0, **{key_field: KEY, url_field: "http://127.0.0.1:9"})
    dead = build_provider(kind, settings)
    with pytest.raises((ProviderUnavailableError, ProviderTimeoutError)):
        dead.chat_completion(_request())
    assert dead.get_available_models()  # falls back to the built-in list


def test_openai_answers_are_parsed_strictly() -> None:
    # The openai provider reads raw answers (the SDK sends the request and raises its errors;
    # it does not build its models): anything that is not a chat completion is refused, and
    # the ValueError becomes "sent a malformed response" (test_malformed_json_is_unavailable).
    from conductor_core.providers.openai_compat import OpenAICompatProvider, _json_object

    for raw in (b"[]", b'"text"', b"null", b"{", b""):
        with pytest.raises(ValueError):
            _json_object(raw)
    assert _json_object(b'{"a": 1}') == {"a": 1}
    for body in ({"object": "chat.completion"}, {"choices": []}, {"error": {"message": "overloaded"}}):
        with pytest.raises(ValueError):
            OpenAICompatProvider._from_response(body, "m")
    completion = OpenAICompatProvider._from_response(
        {
            "model": "m2",
            "choices": [{"message": {"content": "hi"}, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1},
        },
        "m",
    )
    assert (completion.text, completion.model, completion.usage.input_tokens) == ("hi", "m2", 3)


def test_openai_request_headers_are_the_sdks_own() -> None:
    # The client keeps the headers the SDK builds from the same parts (`_build_headers`): each
    # call's request carries exactly what the SDK would build anew, and a changed key, retry
    # count or call-specific header is built anew.
    import asyncio
    import functools

    import openai

    from conductor_core.providers.openai_compat import OpenAICompatProvider

    provider = OpenAICompatProvider(
        "up", api_key="sk-first-key", base_url="http://127.0.0.1:9/v1", default_model="m", official=False
    )

    async def check() -> None:
        client = provider._clients.get()
        uncached = client.copy()
        uncached._build_headers = functools.partial(openai.AsyncOpenAI._build_headers, uncached)

        def both(retries: int = 0, **update: object) -> tuple[list[tuple[bytes, bytes]], list[tuple[bytes, bytes]]]:
            options = provider._sdk.chat.model_copy(update={"json_data": b"{}", **update})
            return (
                client._build_request(options, retries_taken=retries).headers.raw,
                uncached._build_request(options, retries_taken=retries).headers.raw,
            )

        for _ in range(2):  # built, then kept
            kept, built = both()
            assert kept == built and (b"authorization", b"Bearer sk-first-key") in kept
        kept, built = both(headers={"x-extra": "1"})
        assert kept == built and (b"x-extra", b"1") in kept
        kept, built = both(retries=2)
        assert kept == built and (b"x-stainless-retry-count", b"2") in kept
        client.api_key = uncached.api_key = "sk-second-key"
        kept, built = both()
        assert kept == built and (b"authorization", b"Bearer sk-second-key") in kept
        await client.close()
        await uncached.close()

    asyncio.run(check())


def test_openai_asks_models_that_reason_by_default_not_to(tmp_path) -> None:
    # GPT-6 Luna, the default, reasons unless told not to, and then Chat Completions refuses
    # temperature, top_p, logprobs and function tools: its spec adds reasoning_effort "none".
    from conductor_core.config import EndpointConfig
    from conductor_core.providers.openai_compat import SPEC, OpenAICompatProvider

    with OpenAIServer(reply=REPLY) as server:
        settings = load_settings(_env_file=None, data_dir=tmp_path, openai_api_key=KEY, openai_base_url=server.url)
        provider = build_provider("openai", settings)
        assert provider.default_model == SPEC.default_model
        provider.chat_completion(_request(temperature=0.2))
        body = server.requests[-1]["json"]
        assert (body["model"], body["reasoning_effort"], body["temperature"]) == (SPEC.default_model, "none", 0.2)
        list(provider.stream(_request()))
        assert server.requests[-1]["json"]["reasoning_effort"] == "none"
        # A compatible server is not OpenAI: it gets only what the request says, whatever the name.
        endpoint = EndpointConfig(base_url=server.url, models=[SPEC.default_model])
        OpenAICompatProvider.from_endpoint("compatible", endpoint, settings).chat_completion(_request())
        assert "reasoning_effort" not in server.requests[-1]["json"]


# Names the real APIs refuse today (retired on 2026-10-23, 2026-08-05 and 2026-12-01).
RETIRED = {"openai": "gpt-4.1-nano", "anthropic": "claude-opus-4-1", "gemini": "gemini-2.5-flash"}


@pytest.mark.parametrize("streamed", [False, True])
def test_a_model_the_api_does_not_list_is_a_request_error_naming_what_it_lists(kind, provider, server, streamed):
    request = _request(model=RETIRED[kind])
    with pytest.raises(BadRequestError) as info:
        list(provider.stream(request)) if streamed else provider.chat_completion(request)
    assert info.value.status_code == 404 and not info.value.retryable and info.value.param == "model"
    assert info.value.message == (
        f"model {RETIRED[kind]!r} was not found at {kind}: GET /v1/models lists {', '.join(sorted(server.models))}"
    )
    assert server.requests[-1]["method"] == "GET"  # the listing, asked after the 404


def test_another_404_is_left_as_it_came(provider, server):
    # The model is listed, so the 404 meant something else: nothing to explain.
    server.script(Fault("status", status=404, message="no such route"))
    with pytest.raises(BadRequestError) as info:
        provider.chat_completion(_request())
    assert "no such route" in info.value.message and "was not found at" not in info.value.message
