"""Costs come from genai-prices; the cached fast path must agree with the library exactly."""

from __future__ import annotations

import random

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from conductor_core.models import Usage
from conductor_core.pricing import estimate_cost

MODELS = [
    ("openai", "gpt-4o-mini"),
    ("openai", "gpt-4.1"),
    ("anthropic", "claude-haiku-4-5"),
    ("anthropic", "claude-sonnet-4-5"),
    ("google", "gemini-2.5-flash"),
    ("google", "gemini-2.5-pro"),  # tiered above 200k input tokens: priced by the library itself
    ("groq", "llama-3.3-70b-versatile"),
]


@pytest.mark.parametrize("provider_id,model", MODELS)
def test_fast_path_matches_genai_prices(provider_id, model):
    rng = random.Random(7)
    for _ in range(25):
        inp = rng.randint(1, 300_000)
        cached = rng.choice([0, rng.randint(0, inp)])
        out = rng.randint(0, 8000)
        expected = calc_price(
            PriceUsage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached or None),
            model_ref=model,
            provider_id=provider_id,
        ).total_price
        got = estimate_cost(Usage(input_tokens=inp, output_tokens=out, cached_tokens=cached), model, provider_id)
        assert got == pytest.approx(float(expected), rel=1e-9, abs=1e-12)


def test_unknown_model_is_none_not_a_guess():
    assert estimate_cost(Usage(input_tokens=10, output_tokens=10), "my-private-model-9000", "openai") is None
    assert estimate_cost(Usage(input_tokens=10, output_tokens=10), "whatever", None) is None


def test_zero_tokens_cost_nothing():
    assert estimate_cost(Usage(), "gpt-4o-mini", "openai") == 0.0
