"""`n` > 1 and streamed log probabilities through the gateway, with the official `openai` SDK
against the gateway (uvicorn, loopback) in front of the loopback protocol servers: `n` is sent
to OpenAI-compatible upstreams and made as `n` calls where the upstream has no `n`
(Anthropic, Gemini) and when streamed; each call is an attempt of the request in the log."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from typing import Any

import pytest

from conductor_core.config import EndpointConfig
from conductor_core.router import Conductor
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer
from gateway.main import create_app
from tests.test_gateway import KEY, client, make_conductor, serve, user

REPLY = "Three answers to one question."


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {
        "compat": OpenAIServer(reply=REPLY, models=["m"]),
        "anthropic": AnthropicServer(reply=REPLY, require_key=KEY),
        "gemini": GeminiServer(reply=REPLY, require_key=KEY),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory) -> Iterator[tuple[str, Conductor]]:
    conductor = make_conductor(
        tmp_path_factory.mktemp("n"),
        **{f"{name}_api_key": KEY for name in ("anthropic", "gemini")},
        **{f"{name}_base_url": upstreams[name].url for name in ("anthropic", "gemini")},
        endpoints={"compat": EndpointConfig(base_url=upstreams["compat"].url, models=["m"])},
    )
    with serve(create_app(conductor)) as url:
        yield url, conductor
    conductor.close()


def _calls_during(server: Any, action) -> tuple[Any, list[dict[str, Any]]]:
    before = server.request_count
    result = action()
    return result, server.requests[before:]


@pytest.mark.parametrize("name", ["anthropic", "gemini"])
def test_n_on_an_upstream_without_n_is_n_calls_answered_as_n_choices(gateway, upstreams, name):
    url, conductor = gateway
    sdk = client(url)
    one = sdk.chat.completions.create(model=name, messages=user())
    three, calls = _calls_during(upstreams[name], lambda: sdk.chat.completions.create(model=name, messages=user(), n=3))
    assert [c.index for c in three.choices] == [0, 1, 2]
    assert [c.message.content for c in three.choices] == [REPLY] * 3
    assert [c.finish_reason for c in three.choices] == ["stop"] * 3
    assert len(calls) == 3 and all(
        "n" not in call["json"] and "candidateCount" not in str(call["json"]) for call in calls
    )
    # Usage and cost are all three calls'.
    assert three.usage.prompt_tokens == 3 * one.usage.prompt_tokens
    assert three.usage.completion_tokens == 3 * one.usage.completion_tokens
    cost_one, cost_three = one.model_extra["conductor"]["cost_usd"], three.model_extra["conductor"]["cost_usd"]
    assert cost_one is not None and cost_one > 0 and cost_three == pytest.approx(3 * cost_one)
    # Each upstream call is an attempt of this request in the log.
    logged = conductor.log.records(request_id=three.model_extra["conductor"]["request_id"])
    assert len(logged) == 3 and {r.provider for r in logged} == {name} and {r.status for r in logged} == {"ok"}


def test_n_reaches_an_openai_compatible_upstream_in_one_call(gateway, upstreams):
    url, conductor = gateway
    answer, calls = _calls_during(
        upstreams["compat"], lambda: client(url).chat.completions.create(model="compat", messages=user(), n=3)
    )
    assert len(calls) == 1 and calls[0]["json"]["n"] == 3
    assert [c.index for c in answer.choices] == [0, 1, 2]
    assert [c.message.content for c in answer.choices] == [REPLY] * 3
    assert answer.usage.completion_tokens == 3 * len(REPLY.split())  # the upstream's usage covers all three
    assert len(conductor.log.records(request_id=answer.model_extra["conductor"]["request_id"])) == 1


@pytest.mark.parametrize("name", ["anthropic", "compat"])
def test_streamed_n_interleaves_choices_by_index(gateway, upstreams, name):
    url, conductor = gateway
    sdk = client(url)
    chunks, calls = _calls_during(
        upstreams[name],
        lambda: list(
            sdk.chat.completions.create(
                model=name, messages=user(), n=3, stream=True, stream_options={"include_usage": True}
            )
        ),
    )
    assert len(calls) == 3  # streamed, n is n calls even where the upstream has n
    texts: dict[int, str] = defaultdict(str)
    finishes: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
            if choice.finish_reason:
                finishes[choice.index] = choice.finish_reason
    assert dict(texts) == {0: REPLY, 1: REPLY, 2: REPLY}
    assert finishes == {0: "stop", 1: "stop", 2: "stop"}
    usage = chunks[-1].usage
    assert chunks[-1].choices == [] and usage.completion_tokens == 3 * len(REPLY.split())
    info = next(c.model_extra["conductor"] for c in chunks if (c.model_extra or {}).get("conductor"))
    assert len(conductor.log.records(request_id=info["request_id"])) == 3


def test_n_above_openais_limit_is_refused(gateway):
    import openai

    url, _ = gateway
    with pytest.raises(openai.BadRequestError) as caught:
        client(url).chat.completions.create(model="compat", messages=user(), n=129)
    assert "n must be" in caught.value.message and "128" in caught.value.message


def test_streamed_logprobs_reach_the_client_chunk_by_chunk(gateway, upstreams):
    url, _ = gateway
    stream, calls = _calls_during(
        upstreams["compat"],
        lambda: list(
            client(url).chat.completions.create(
                model="compat", messages=user(), stream=True, logprobs=True, top_logprobs=2
            )
        ),
    )
    assert calls[0]["json"]["logprobs"] is True and calls[0]["json"]["top_logprobs"] == 2
    with_text = [c for c in stream if c.choices and c.choices[0].delta.content]
    assert with_text and all(c.choices[0].logprobs is not None for c in with_text)
    for chunk in with_text:  # each chunk carries its own tokens' log probabilities
        tokens = chunk.choices[0].logprobs.content
        assert "".join(t.token for t in tokens) == chunk.choices[0].delta.content
        assert all(t.logprob < 0 and len(t.top_logprobs) == 2 for t in tokens)
    assert "".join(t.token for c in with_text for t in c.choices[0].logprobs.content) == REPLY


def test_unstreamed_logprobs_are_the_upstreams(gateway, upstreams):
    url, _ = gateway
    answer = client(url).chat.completions.create(model="compat", messages=user(), logprobs=True)
    assert "".join(t.token for t in answer.choices[0].logprobs.content) == REPLY


def test_one_failed_call_fails_the_request_and_is_logged(gateway, upstreams):
    import openai

    url, conductor = gateway
    server = upstreams["anthropic"]
    server.script(Fault("status", status=400, message="scripted refusal of one of the three"))
    try:
        with pytest.raises(openai.BadRequestError) as caught:
            client(url).chat.completions.create(model="anthropic", messages=user(), n=3)
    finally:
        server.script()
    assert "scripted refusal" in caught.value.message  # no answer with two choices passed off as three
    request_id = caught.value.response.headers["x-request-id"]
    assert "error" in {r.status for r in conductor.log.records(request_id=request_id)}


def test_a_stream_that_breaks_ends_the_answer_with_an_error_not_a_finish(gateway, upstreams):
    import openai

    url, _ = gateway
    server = upstreams["anthropic"]
    server.script(Fault("cut"))  # the first of the three streams is cut after its first text
    seen: list[Any] = []
    try:
        with pytest.raises(openai.APIError):
            for chunk in client(url).chat.completions.create(model="anthropic", messages=user(), n=3, stream=True):
                seen.append(chunk)
    finally:
        server.script()
    finishes = {c.index for chunk in seen for c in chunk.choices if c.finish_reason}
    assert len(finishes) < 3  # never every choice finished: the broken one did not
