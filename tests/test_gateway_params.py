"""Issue 18, items 3 and 6: every OpenAI Chat Completions parameter the client sends arrives.

With the official `openai` client against the gateway in front of a loopback OpenAI
upstream: every key of the installed SDK's `ChatCompletionCreateParams` (read from the SDK,
so a parameter a newer SDK adds fails here until it is handled) arrives unchanged, streamed
and not; unknown fields pass through; the upstream's id and system_fingerprint come back;
providers that cannot honour a parameter say so by name (400); the OpenAI route keeps
OpenAI's max_tokens contract and the native route the seed's."""

from __future__ import annotations

import json
import typing
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import completion_create_params

from conductor_core.models import ChatRequest
from conductor_core.providers.spec import provider_specs
from conductor_core.testing.protocol_servers import AnthropicServer, OpenAIServer
from gateway.main import create_app
from tests.test_gateway import client, make_conductor, serve, user
from tests.test_gateway_async import endpoints, one_provider

TOOLS = [{"type": "function", "function": {"name": "weather", "parameters": {"type": "object"}, "strict": False}}]
FUNCTIONS = [{"name": "lookup", "description": "Look a word up", "parameters": {"type": "object"}}]

#: A value for every ChatCompletionCreateParams key but model and messages (n stays 1 here).
SAMPLES: dict[str, Any] = {
    "audio": {"voice": "alloy", "format": "wav"},
    "frequency_penalty": -0.5,
    "function_call": {"name": "lookup"},
    "functions": FUNCTIONS,
    "logit_bias": {"50256": -100},
    "logprobs": True,
    "max_completion_tokens": 77,
    "max_tokens": 66,
    "metadata": {"team": "search", "run": "42"},
    "modalities": ["text"],
    "moderation": {"enabled": False},
    "n": 1,
    "parallel_tool_calls": False,
    "prediction": {"type": "content", "content": "The weather is"},
    "presence_penalty": 0.5,
    "prompt_cache_key": "cache-key-7",
    "prompt_cache_options": {"ttl": "1h"},
    "prompt_cache_retention": "24h",
    "reasoning_effort": "low",
    "response_format": {"type": "json_schema", "json_schema": {"name": "city", "schema": {"type": "object"}}},
    "safety_identifier": "user-hash-1",
    "seed": 7,
    "service_tier": "flex",
    "stop": ["END"],
    "store": True,
    "stream_options": {"include_usage": True, "include_obfuscation": False},
    "temperature": 0.3,
    "tool_choice": {"type": "function", "function": {"name": "weather"}},
    "tools": TOOLS,
    "top_logprobs": 2,
    "top_p": 0.9,
    "user": "user-42",
    "verbosity": "low",
    "web_search_options": {"search_context_size": "low"},
}


def sdk_parameters() -> set[str]:
    """Every parameter the installed openai SDK can send to chat.completions.create."""
    return set(typing.get_type_hints(completion_create_params.CompletionCreateParamsBase)) - {"model", "messages"}


@pytest.mark.parametrize("stream", [False, True])
def test_every_parameter_of_the_sdk_arrives_at_an_openai_upstream_unchanged(tmp_path, stream: bool) -> None:
    missing = sdk_parameters() - set(SAMPLES)
    assert not missing, f"the openai SDK sends {sorted(missing)}: add a sample here and make sure it arrives"
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            params = {name: SAMPLES[name] for name in sorted(sdk_parameters())}
            result = client(url).chat.completions.create(model="up/m", messages=user(), stream=stream, **params)
            if stream:
                list(result)
            body = upstream.requests[-1]["json"]
            for name, value in params.items():
                assert name in body, f"{name} did not arrive"
                assert body[name] == value, name
            assert body["model"] == "m" and body["messages"] == user() and body.get("stream", False) is stream
            unexpected = set(body) - set(params) - {"model", "messages", "stream"}
            assert not unexpected, f"Conductor added {sorted(unexpected)}"
        conductor.close()


def test_unknown_fields_pass_through_and_names_keep_the_clients_spelling(tmp_path) -> None:
    with OpenAIServer() as compatible, OpenAIServer() as official:
        conductor = make_conductor(
            tmp_path,
            endpoints=endpoints(up=compatible),
            openai_api_key="sk-Hv3nW8qJ5tYr2LcP6xZa",
            openai_base_url=official.url,
        )
        with serve(create_app(conductor)) as url:
            api = client(url)
            for upstream, model in (
                (compatible, "up/m"),
                (official, f"openai/{provider_specs()['openai'].default_model}"),
            ):
                # OpenRouter's own `provider` (routing preferences) is not Conductor's provider here.
                vendor = {"vendor_option": {"x": [1, 2]}, "provider": {"order": ["a", "b"]}}
                api.chat.completions.create(model=model, messages=user(), max_tokens=12, extra_body=vendor)
                body = upstream.requests[-1]["json"]
                assert body["max_tokens"] == 12 and "max_completion_tokens" not in body
                assert {k: body[k] for k in vendor} == vendor  # the upstream's business
                api.chat.completions.create(model=model, messages=user(), max_completion_tokens=13)
                body = upstream.requests[-1]["json"]
                assert body["max_completion_tokens"] == 13 and "max_tokens" not in body
                assert "vendor_option" not in body
            # Conductor's own extension is Conductor's: not forwarded.
            api.chat.completions.create(model="auto", messages=user(), extra_body={"policy": "fastest"})
            assert "policy" not in (compatible.requests + official.requests)[-1]["json"]
        conductor.close()


def test_stream_options_arrive_and_usage_is_relayed_only_when_asked(tmp_path) -> None:
    with OpenAIServer(reply="one two") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            api = client(url)
            for options, relayed in (
                (None, False),
                ({"include_obfuscation": True}, False),
                ({"include_usage": False}, False),
                ({"include_usage": True}, True),
            ):
                extra = {} if options is None else {"stream_options": options}
                chunks = list(api.chat.completions.create(model="up/m", messages=user(), stream=True, **extra))
                sent = upstream.requests[-1]["json"]["stream_options"]
                assert sent == {**(options or {}), "include_usage": True}  # Conductor still needs the usage
                assert any(c.usage for c in chunks) is relayed, options
                assert [c for c in chunks if not c.choices] == [c for c in chunks if c.usage]
            records = conductor.log.records()
            assert {r.output_tokens for r in records} == {2}  # the usage was read every time
        conductor.close()


@pytest.mark.parametrize("stream", [False, True])
def test_the_upstream_id_and_system_fingerprint_come_back(tmp_path, stream: bool) -> None:
    with OpenAIServer(reply="fine") as upstream:
        upstream.system_fingerprint = "fp_loopback_1"
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            raw = client(url).chat.completions.with_raw_response.create(model="up/m", messages=user(), stream=stream)
            conductor_id = raw.headers["x-request-id"]
            answer = raw.parse()
            if stream:
                chunks = list(answer)
                ids, prints = {c.id for c in chunks}, {c.system_fingerprint for c in chunks}
                final = next(c for c in chunks if c.model_extra.get("conductor"))
                info = final.model_extra["conductor"]
            else:
                ids, prints = {answer.id}, {answer.system_fingerprint}
                info = answer.model_extra["conductor"]
            [upstream_id] = upstream.response_ids
            assert ids == {upstream_id} and prints == {"fp_loopback_1"}
            assert info["request_id"] == conductor_id and conductor_id.startswith("req_")
        conductor.close()


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("provider", ["anthropic", "gemini"])
def test_other_providers_answer_with_their_own_response_id(tmp_path, provider: str, stream: bool) -> None:
    with one_provider(tmp_path, provider, "fine") as (upstream, url, _):
        answer = client(url).chat.completions.create(model=provider, messages=user(), stream=stream)
        ids = {c.id for c in answer} if stream else {answer.id}
        prefix = "msg_" if provider == "anthropic" else ""
        [only] = ids
        assert only.startswith(prefix) and not only.startswith("chatcmpl-")


@pytest.mark.parametrize("stream", [False, True])
def test_legacy_functions_arrive_as_sent_and_function_call_comes_back(tmp_path, stream: bool) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            result = client(url).chat.completions.create(
                model="up/m", messages=user("Look up 'latency'"), functions=FUNCTIONS, stream=stream
            )
            body = upstream.requests[-1]["json"]
            assert body["functions"] == FUNCTIONS and "tools" not in body and "tool_choice" not in body
            if stream:
                chunks = list(result)
                pieces = [
                    c.choices[0].delta.function_call for c in chunks if c.choices and c.choices[0].delta.function_call
                ]
                name = pieces[0].name
                arguments = "".join(p.arguments or "" for p in pieces)
                finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
                assert all(not (c.choices and c.choices[0].delta.tool_calls) for c in chunks)
            else:
                message = result.choices[0].message
                name, arguments = message.function_call.name, message.function_call.arguments
                finish = [result.choices[0].finish_reason]
                assert message.tool_calls is None
            assert name == "lookup" and json.loads(arguments) == {"city": "Paris"} and finish == ["function_call"]
        conductor.close()


def test_legacy_functions_still_reach_other_providers_as_tools(tmp_path) -> None:
    with one_provider(tmp_path, "anthropic", "fine") as (upstream, url, _):
        answer = client(url).chat.completions.create(
            model="anthropic", messages=user(), functions=FUNCTIONS, function_call={"name": "lookup"}
        )
        body = upstream.requests[-1]["json"]
        assert [t["name"] for t in body["tools"]] == ["lookup"] and body["tool_choice"] == {
            "type": "tool",
            "name": "lookup",
        }
        assert answer.choices[0].message.function_call.name == "lookup"


@pytest.mark.parametrize(
    ("provider", "parameter", "value"),
    [
        ("anthropic", "reasoning_effort", "low"),
        ("anthropic", "store", True),
        ("gemini", "service_tier", "flex"),
        ("gemini", "vendor_option", 1),
    ],
)
def test_a_provider_that_cannot_take_an_unmodelled_parameter_answers_400_naming_it(
    tmp_path, provider: str, parameter: str, value: Any
) -> None:
    with one_provider(tmp_path, provider, "fine") as (upstream, url, conductor):
        with pytest.raises(openai.BadRequestError) as caught:
            client(url).chat.completions.create(model=provider, messages=user(), extra_body={parameter: value})
        body = caught.value.response.json()
        assert f"{provider} does not support {parameter}" in body["message"]
        assert body["error"]["param"] == parameter and body["provider"] == provider
        assert upstream.request_count == 0
        # n=1, max_completion_tokens and stream_options are carried by Conductor itself: no refusal.
        client(url).chat.completions.create(
            model=provider, messages=user(), n=1, max_completion_tokens=20, stream_options={"include_usage": True}
        )
        assert conductor.breaker(provider).state.value == "closed"


def test_auto_skips_providers_that_cannot_take_a_parameter_and_says_why(tmp_path) -> None:
    with OpenAIServer() as openai_srv, AnthropicServer() as anthropic_srv:
        conductor = make_conductor(
            tmp_path,
            endpoints=endpoints(up=openai_srv),
            anthropic_api_key="sk-Qm7vT2xK9pLd4RwZ8nBc",
            anthropic_base_url=anthropic_srv.url,
        )
        with serve(create_app(conductor)) as url:
            for _ in range(3):
                raw = client(url).chat.completions.with_raw_response.create(
                    model="auto", messages=user(), extra_body={"reasoning_effort": "low"}
                )
                assert raw.headers["x-conductor-provider"] == "up"
            assert anthropic_srv.request_count == 0
            only_anthropic = make_conductor(
                tmp_path / "a", anthropic_api_key="sk-Qm7vT2xK9pLd4RwZ8nBc", anthropic_base_url=anthropic_srv.url
            )
            with serve(create_app(only_anthropic)) as url2:
                with pytest.raises(openai.BadRequestError) as caught:
                    client(url2).chat.completions.create(
                        model="auto", messages=user(), extra_body={"reasoning_effort": "low"}
                    )
                assert "anthropic lacks reasoning_effort" in caught.value.response.json()["message"]
            only_anthropic.close()
        conductor.close()


@pytest.mark.parametrize(
    ("body", "param", "says"),
    [
        ({"tool_choice": "required"}, "tool_choice", "tool_choice needs tools"),
        ({"tool_choice": {"type": "function", "function": {"name": "f"}}}, "tool_choice", "tool_choice needs tools"),
        ({"function_call": "auto"}, "function_call", "function_call needs functions"),
        ({"model": "up/m\x00"}, "model", "control character"),
        ({"model": "up/m\x1b[31m"}, "model", "control character"),
        ({"model": "up/\x85m"}, "model", "control character"),
    ],
)
def test_what_openai_refuses_is_a_400_before_any_upstream_call(
    tmp_path, body: dict[str, Any], param: str, says: str
) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            response = httpx.post(
                f"{url}/v1/chat/completions", json={"model": "up/m", "messages": user(), **body}, timeout=30
            )
            assert response.status_code == 400, response.text
            assert response.json()["error"]["param"] == param and says in response.json()["message"]
            assert upstream.request_count == 0
        conductor.close()


def test_the_core_refuses_tool_choice_without_tools_and_control_characters_in_a_model() -> None:
    with pytest.raises(ValueError, match="tool_choice needs tools"):
        ChatRequest(messages=user(), tool_choice="required")
    with pytest.raises(ValueError, match="control character"):
        ChatRequest(messages=user(), model="gpt\x00")
