"""Validation at every edge of ChatRequest and ChatMessage, with errors that name the field."""

from __future__ import annotations

import pytest
from pydantic import TypeAdapter, ValidationError

from conductor_core.models import (
    ChatMessage,
    ChatRequest,
    ChatResponse,
    ErrorResponse,
    MessageRole,
    ProviderStatus,
    StreamDone,
    StreamEvent,
    SystemStatus,
    TextDelta,
    known_provider_names,
    register_provider_name,
)

USER = [{"role": "user", "content": "hi"}]


def _error_fields(exc: ValidationError) -> list[tuple]:
    return [e["loc"] for e in exc.errors()]


def test_defaults_are_exactly_as_specified():
    r = ChatRequest(messages=USER)
    assert (r.provider, r.model, r.temperature, r.max_tokens) == ("auto", None, 0.7, 1000)


@pytest.mark.parametrize("value", [0.0, 2.0, 1.3])
def test_temperature_inside_bounds(value):
    assert ChatRequest(messages=USER, temperature=value).temperature == value


@pytest.mark.parametrize("value", [-0.01, 2.01, 3])
def test_temperature_outside_bounds_names_field(value):
    with pytest.raises(ValidationError) as info:
        ChatRequest(messages=USER, temperature=value)
    assert _error_fields(info.value) == [("temperature",)]
    assert "2" in str(info.value) or "0" in str(info.value)


@pytest.mark.parametrize("value", [1, 1000, 4000])
def test_max_tokens_inside_bounds(value):
    assert ChatRequest(messages=USER, max_tokens=value).max_tokens == value


@pytest.mark.parametrize("value", [0, 4001, 1_000_001, -5])  # the seed's contract: 1 to 4000
def test_max_tokens_outside_bounds_names_field(value):
    with pytest.raises(ValidationError) as info:
        ChatRequest(messages=USER, max_tokens=value)
    assert _error_fields(info.value) == [("max_tokens",)]


def test_messages_required_and_non_empty():
    with pytest.raises(ValidationError) as info:
        ChatRequest(messages=[])
    assert _error_fields(info.value) == [("messages",)]
    with pytest.raises(ValidationError) as info:
        ChatRequest()
    assert _error_fields(info.value) == [("messages",)]


def test_message_content_at_least_one_character():
    assert ChatMessage(role="user", content="x").content == "x"
    with pytest.raises(ValidationError) as info:
        ChatMessage(role="user", content="")
    assert _error_fields(info.value) == [("content",)]


def test_message_role_typo_rejected():
    with pytest.raises(ValidationError) as info:
        ChatMessage(role="usr", content="hello")
    assert _error_fields(info.value) == [("role",)]
    assert "'system', 'user', 'assistant' or 'tool'" in str(info.value)
    assert ChatMessage(role="assistant", content="x").role is MessageRole.assistant


def test_unknown_provider_lists_available_ones():
    with pytest.raises(ValidationError) as info:
        ChatRequest(provider="gemnini", messages=USER)
    text = str(info.value)
    assert _error_fields(info.value) == [("provider",)]
    for name in ("auto", "local", "gemini", "openai", "anthropic"):
        assert name in text


def test_configured_endpoint_names_are_addressable():
    with pytest.raises(ValidationError):
        ChatRequest(provider="my-ollama", messages=USER)
    register_provider_name("my-ollama")
    assert ChatRequest(provider="my-ollama", messages=USER).provider == "my-ollama"
    assert "my-ollama" in known_provider_names()


def test_known_provider_names_built_ins_first_then_registered_names_sorted_once():
    register_provider_name("zz-endpoint")
    register_provider_name("aa-endpoint")
    register_provider_name("aa-endpoint")
    register_provider_name("openai")  # a built-in registered again is not listed twice
    names = known_provider_names()
    assert names[:5] == ["auto", "local", "gemini", "openai", "anthropic"]
    extra = names[5:]
    assert extra == sorted(extra) and len(extra) == len(set(extra)) and {"aa-endpoint", "zz-endpoint"} <= set(extra)
    names.append("mutated")  # callers get a copy: the cached list cannot be changed through it
    assert "mutated" not in known_provider_names()
    with pytest.raises(ValidationError):
        ChatRequest(provider="mutated", messages=USER)


def test_ids_keep_their_format():
    from conductor_core.models import new_id

    ids = {new_id() for _ in range(100)}
    assert len(ids) == 100
    for value in ids:
        prefix, digits = value.split("_")
        assert prefix == "req" and len(digits) == 20 and int(digits, 16) >= 0
    assert new_id("att").startswith("att_")


def test_provider_names_are_case_insensitive():
    assert ChatRequest(provider="Gemini", messages=USER).provider == "gemini"


def test_stream_events_are_a_discriminated_union():
    adapter = TypeAdapter(StreamEvent)
    assert isinstance(adapter.validate_python({"type": "text", "text": "a"}), TextDelta)
    done = adapter.validate_python(
        {
            "type": "done",
            "response": {
                "content": "x",
                "metadata": {"provider": "local", "model": "m"},
                "analytics": {"latency_ms": 1.0},
            },
        }
    )
    assert isinstance(done, StreamDone) and done.response.content == "x"


def test_models_document_themselves():
    for model in (ChatRequest, ChatMessage, ChatResponse, ErrorResponse):
        schema = model.model_json_schema()
        assert schema.get("examples"), model.__name__
    props = ChatRequest.model_json_schema()["properties"]
    # None is allowed too (no temperature, no cap: the provider's defaults).
    temperature, max_tokens = (
        next(s for s in props[n]["anyOf"] if s["type"] != "null") for n in ("temperature", "max_tokens")
    )
    assert temperature["maximum"] == 2.0 and temperature["minimum"] == 0.0
    assert max_tokens["maximum"] == 4000 and max_tokens["minimum"] == 1
    assert all("description" in p for p in props.values())
    # Status models carry their sub-sections.
    assert set(ProviderStatus.model_fields) >= {"health", "performance", "reliability", "usage"}
    assert set(SystemStatus.model_fields) >= {"status", "providers", "totals", "uptime_s"}


def test_optional_sampling_settings_are_validated_with_messages_that_say_what_to_change() -> None:
    message = [{"role": "user", "content": "hi"}]
    request = ChatRequest(messages=message, top_p=0.9, stop=["END"], seed=7)
    assert (request.top_p, request.stop, request.seed) == (0.9, ["END"], 7)
    assert ChatRequest(messages=message).top_p is None  # unset: the provider's own default
    for bad, field in (
        (dict(top_p=5), "top_p"),
        (dict(stop=["a", "b", "c", "d", "e"]), "stop"),
        (dict(stop=[""]), "stop"),
        (dict(seed=-1), "seed"),
    ):
        with pytest.raises(ValidationError, match=field):
            ChatRequest(messages=message, **bad)
