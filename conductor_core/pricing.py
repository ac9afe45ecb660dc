"""Usage -> USD with genai-prices' bundled price data (no network: its updater stays off).

A model genai-prices does not know is priced None ("unknown"), never guessed.

genai-prices takes ~1-2 ms a call (model matching and unit registries), which is more than
the whole overhead Conductor allows itself per request. So each (provider, model) is
looked up once; when its price is flat per token (the common case) the cost is the
library's own per-million rates times the tokens, and tiered prices go through the
library every time. tests/test_pricing.py checks the fast path against `calc_price`.
"""

from __future__ import annotations

from decimal import Decimal
from functools import lru_cache
from typing import NamedTuple

from genai_prices import Usage as _PriceUsage
from genai_prices import calc_price

from .models import Usage

__all__ = ["estimate_cost", "model_is_priced"]

_MTOK = 1_000_000
_LINEAR_FIELDS = {"input_mtok", "output_mtok", "cache_read_mtok", "input_image_mtok"}


class _FlatRates(NamedTuple):
    input: float
    output: float
    cache_read: float
    image: float  # input image tokens (the input rate where the model has no image price)


@lru_cache(maxsize=512)
def _rates(provider_id: str | None, model: str) -> _FlatRates | str | None:
    """Flat per-token rates; "tiered" when only the library can price it; None when unknown."""
    try:
        found = calc_price(_PriceUsage(input_tokens=1, output_tokens=1), model_ref=model, provider_id=provider_id)
    except LookupError:
        return None
    prices = {k: v for k, v in vars(found.model_price).items() if v is not None and not k.startswith("_")}
    if not set(prices) <= _LINEAR_FIELDS | {"web_searches_kcount", "storage_searches_kcount"} or not all(
        isinstance(prices.get(k, Decimal(0)), Decimal) for k in _LINEAR_FIELDS
    ):
        return "tiered"
    input_rate = float(prices.get("input_mtok", 0)) / _MTOK
    return _FlatRates(
        input=input_rate,
        output=float(prices.get("output_mtok", 0)) / _MTOK,
        cache_read=float(prices["cache_read_mtok"]) / _MTOK if "cache_read_mtok" in prices else input_rate,
        image=float(prices["input_image_mtok"]) / _MTOK if "input_image_mtok" in prices else input_rate,
    )


def model_is_priced(model: str, provider_id: str | None) -> bool:
    return _rates(provider_id, model) is not None


def estimate_cost(usage: Usage, model: str, provider_id: str | None) -> float | None:
    """Estimated cost of `usage` on `model` at `provider_id` (a genai-prices provider id):
    cached input at the cache-read rate and image input at the image rate where the model has
    them (genai-prices' rules), the rest at the input and output rates."""
    rates = _rates(provider_id, model)
    if rates is None:
        return None
    if isinstance(rates, _FlatRates):
        cached = min(usage.cached_tokens, usage.input_tokens)
        images = min(usage.image_tokens, usage.input_tokens - cached)
        return (
            (usage.input_tokens - cached - images) * rates.input
            + cached * rates.cache_read
            + images * rates.image
            + usage.output_tokens * rates.output
        )
    cached = min(usage.cached_tokens, usage.input_tokens)
    images = min(usage.image_tokens, usage.input_tokens - cached)
    priced = _PriceUsage(
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        cache_read_tokens=cached or None,
        input_image_tokens=images or None,
        # Images read from the cache are not reported apart: none (the library wants it said).
        cache_image_read_tokens=0 if cached and images else None,
    )
    try:
        return float(calc_price(priced, model_ref=model, provider_id=provider_id).total_price)
    except (LookupError, ValueError):  # usage the library cannot price for this model: unknown, not 0
        return None
