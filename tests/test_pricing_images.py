"""Image and cached-input tokens are priced with genai-prices where it knows their rate (an
image rate, a cache-read rate), as input tokens where the model has none (as the providers
bill them), and a model it does not know stays unknown (None), never free."""

from __future__ import annotations

import base64
import random

import pytest
from genai_prices import Usage as PriceUsage
from genai_prices import calc_price

from conductor_core.config import load_settings
from conductor_core.models import ChatMessage, ChatRequest, ImagePart, TextPart, Usage, data_url
from conductor_core.pricing import estimate_cost
from conductor_core.providers import build_provider
from conductor_core.testing.protocol_servers import GeminiServer

KEY = "sk-Hq3wE8rT5yU1iO7pA2sD9fG4"
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
# Models genai-prices gives an image input rate (and cache-read rates), and ones it gives none.
WITH_IMAGE_RATE = [("google", "gemini-live-2.5-flash"), ("openai", "gpt-realtime-mini")]
WITHOUT_IMAGE_RATE = [("google", "gemini-3.5-flash-lite"), ("anthropic", "claude-haiku-4-5")]


def _library(inp: int, out: int, cached: int, images: int, model: str, provider: str) -> float:
    usage = PriceUsage(
        input_tokens=inp,
        output_tokens=out,
        cache_read_tokens=cached or None,
        input_image_tokens=images or None,
        cache_image_read_tokens=0 if cached and images else None,
    )
    return float(calc_price(usage, model_ref=model, provider_id=provider).total_price)


@pytest.mark.parametrize("provider,model", WITH_IMAGE_RATE + WITHOUT_IMAGE_RATE)
def test_image_and_cached_tokens_cost_what_genai_prices_says(provider, model):
    rng = random.Random(11)
    for _ in range(25):
        inp = rng.randint(1, 150_000)
        cached = rng.choice([0, rng.randint(0, inp)])
        images = rng.choice([0, rng.randint(0, inp - cached)])
        out = rng.randint(0, 4000)
        got = estimate_cost(
            Usage(input_tokens=inp, output_tokens=out, cached_tokens=cached, image_tokens=images), model, provider
        )
        assert got == pytest.approx(_library(inp, out, cached, images, model, provider), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("provider,model", WITH_IMAGE_RATE)
def test_a_model_with_an_image_rate_prices_image_tokens_at_it(provider, model):
    as_text = estimate_cost(Usage(input_tokens=10_000, output_tokens=100), model, provider)
    with_images = estimate_cost(Usage(input_tokens=10_000, output_tokens=100, image_tokens=4_000), model, provider)
    assert as_text is not None and with_images is not None and with_images != pytest.approx(as_text)


@pytest.mark.parametrize("provider,model", WITHOUT_IMAGE_RATE)
def test_a_model_without_an_image_rate_prices_image_tokens_as_input(provider, model):
    as_text = estimate_cost(Usage(input_tokens=10_000, output_tokens=100), model, provider)
    with_images = estimate_cost(Usage(input_tokens=10_000, output_tokens=100, image_tokens=4_000), model, provider)
    assert as_text is not None and with_images == pytest.approx(as_text)
    cached = estimate_cost(Usage(input_tokens=10_000, output_tokens=100, cached_tokens=8_000), model, provider)
    assert cached is not None and cached < as_text  # cached input is cheaper, not free and not full price
    assert cached > 0


def test_unknown_stays_unknown_with_images_and_cache():
    usage = Usage(input_tokens=1_000, output_tokens=10, cached_tokens=300, image_tokens=500)
    assert estimate_cost(usage, "my-private-vision-model", "google") is None
    assert estimate_cost(usage, "my-private-vision-model", None) is None


def test_gemini_image_tokens_reach_the_cost(tmp_path):
    """End to end: Gemini reports the prompt's image tokens by modality; the answer's cost is
    genai-prices' for them at the model's image rate."""
    model = "gemini-live-2.5-flash"
    with GeminiServer(reply="A red dot.", require_key=KEY, models=[model]) as server:
        settings = load_settings(
            _env_file=None, timeout_s=30.0, data_dir=tmp_path, gemini_api_key=KEY, gemini_base_url=server.url
        )
        provider = build_provider("gemini", settings)
        parts = [TextPart(text="What is this?"), ImagePart(url=data_url("image/png", PNG))]
        request = ChatRequest(provider="gemini", model=model, messages=[ChatMessage(role="user", parts=parts)])
        answer = provider.chat_completion(request)
    a = answer.analytics
    images = GeminiServer.IMAGE_TOKENS
    assert a.input_tokens == 3 + images  # "What is this?" is 3 words, the image 258 tokens
    assert a.cost_usd == pytest.approx(_library(a.input_tokens, a.output_tokens, 0, images, model, "google"))
    assert a.cost_usd != pytest.approx(_library(a.input_tokens, a.output_tokens, 0, 0, model, "google"))
