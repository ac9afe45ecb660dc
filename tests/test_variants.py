"""Variants: one provider/model with its own settings, and labels that say what differs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from conductor_core.models import ChatMessage, RoutingPolicy
from conductor_core.workbench.variants import Variant, differing_settings, variant_labels


def test_a_variant_builds_the_request_with_its_own_system_prompt_first() -> None:
    variant = Variant(
        provider="local", temperature=0.0, max_tokens=50, top_p=0.9, stop=("END",), seed=3, system="Be terse."
    )
    request = variant.request(
        [ChatMessage(role="system", content="an older system prompt"), ChatMessage(role="user", content="Hi")]
    )
    assert [(m.role.value, m.content) for m in request.messages] == [("system", "Be terse."), ("user", "Hi")]
    assert (request.provider, request.model, request.temperature, request.max_tokens) == ("local", None, 0.0, 50)
    assert (request.top_p, request.stop, request.seed, request.policy) == (0.9, ["END"], 3, None)


def test_the_policy_only_travels_with_auto() -> None:
    messages = [ChatMessage(role="user", content="Hi")]
    assert Variant(provider="auto", policy=RoutingPolicy.fastest).request(messages).policy == RoutingPolicy.fastest
    assert Variant(provider="local", policy=RoutingPolicy.fastest).request(messages).policy is None


def test_labels_name_the_target_and_only_what_differs_between_twins() -> None:
    labels = variant_labels(
        [
            Variant(provider="openai", model="gpt-4o-mini", temperature=0.0),
            Variant(provider="openai", model="gpt-4o-mini", temperature=1.0),
            Variant(provider="local", system="You are a pirate."),
            Variant(provider="local"),
        ]
    )
    assert labels == [
        "openai/gpt-4o-mini · T=0",
        "openai/gpt-4o-mini · T=1",
        "local · system “You are a pirate.”",
        "local · no system prompt",
    ]


def test_identical_variants_are_numbered_and_distinct_targets_stay_bare() -> None:
    assert variant_labels([Variant(provider="local"), Variant(provider="local")]) == ["local #1", "local #2"]
    assert variant_labels([Variant(provider="local"), Variant(provider="gemini")]) == ["local", "gemini"]


def test_bad_settings_are_refused_naming_the_field() -> None:
    for bad, field in (
        (dict(temperature=3), "temperature"),
        (dict(top_p=2), "top_p"),
        (dict(provider="nope"), "provider"),
    ):
        with pytest.raises(ValidationError, match=field):
            Variant(**{"provider": "local", **bad})


def test_differing_settings_name_what_differs_between_all_variants_whatever_their_targets() -> None:
    from conductor_core.workbench.variants import differing_settings

    same = [Variant(provider="openai", model="gpt-4o-mini"), Variant(provider="local")]
    assert differing_settings(same) == [(), ()]
    columns = [
        Variant(provider="openai", model="gpt-4o-mini", temperature=0.2, max_tokens=64),
        Variant(provider="local", temperature=1.0, max_tokens=64, system="Be brief."),
        Variant(provider="local", temperature=1.0, max_tokens=64),
    ]
    assert differing_settings(columns) == [
        ("T=0.2", "no system prompt"),
        ("T=1", "system “Be brief.”"),
        ("T=1", "no system prompt"),
    ]


def test_labels_say_the_output_format_where_it_differs() -> None:
    from conductor_core.models import ResponseFormatJsonSchema
    from conductor_core.structured import EXAMPLE_SCHEMAS

    invoice = ResponseFormatJsonSchema.model_validate(
        {"type": "json_schema", "json_schema": {"name": "invoice", "schema": EXAMPLE_SCHEMAS["Invoice"]}}
    )
    variants = [
        Variant(provider="openai", response_format=invoice),
        Variant(provider="openai", response_format={"type": "json_object"}),
        Variant(provider="openai"),
    ]
    assert variant_labels(variants) == ["openai · schema invoice", "openai · JSON", "openai · text"]
    assert differing_settings([variants[0], Variant(provider="local", response_format=invoice)]) == [(), ()]
    assert differing_settings([variants[0], Variant(provider="local")]) == [("schema invoice",), ("text",)]
