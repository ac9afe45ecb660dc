"""What the Keys page and the Dashboard say about gateway keys: pure functions (keys and their
spend in, rows and sentences out; no Streamlit, no I/O), tested on their own.

Spend follows the Dashboard's honesty rule: an answer with no known price is not free, so a
key whose answers are all unpriced has spent an "unknown" amount, and one with some unpriced
answers has spent "at least" its priced cost ("$0.0123 + 3 unpriced")."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import datetime

import pandas as pd

from conductor_core.keys import GatewayKey, KeySpend, period_bounds
from conductor_core.keys.store import BudgetPeriod

from . import dashboard_data as dd

__all__ = [
    "KEY_TABLE_COLUMNS",
    "budget_text",
    "key_label",
    "key_period",
    "key_table",
    "model_choices",
    "models_text",
    "spend_line",
    "spend_text",
    "status_text",
    "usd",
    "used_share",
]

FormatCost = Callable[[float | None], str]

#: What a glance needs first (it fits a phone's width): which key, is it active, what has it spent.
KEY_TABLE_COLUMNS = [
    "Name",
    "Key",
    "Status",
    "Spent this period",
    "Used",
    "Budget",
    "Models",
    "RPM",
    "TPM",
    "Owner",
    "Created",
    "id",
]


def key_label(key: GatewayKey) -> str:
    """How a key is named in a list: its name and the start of the key (never more)."""
    return f"{key.name} · {key.prefix}…" + (" (revoked)" if key.revoked else "")


def key_period(key: GatewayKey) -> BudgetPeriod:
    """The period a key's spend is shown over: its budget's, else the calendar month."""
    return key.budget_period or "month"


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M}"  # UTC, as every time on these pages


def status_text(key: GatewayKey) -> str:
    return f"revoked {_when(key.revoked_at)} UTC" if key.revoked_at is not None else "active"


def models_text(key: GatewayKey) -> str:
    return "any" if key.models is None else ", ".join(key.models)


def usd(value: float) -> str:
    """A budget as people set it: "$5.00", "$1,200.00" (a fraction of a cent in full)."""
    return f"${value:,.2f}" if value >= 0.01 else f"${value:g}"


def budget_text(key: GatewayKey) -> str:
    if key.budget_usd is None:
        return "none"
    return f"{usd(key.budget_usd)} / {key.budget_period or 'month'}"


def spend_text(spend: KeySpend, format_cost: FormatCost) -> str:
    """A key's spend over its period: "—" with no answer, "unknown" when none of its answers
    has a known price, "$0.0123 + 3 unpriced" when some have none, else the cost."""
    if not spend.attempts:
        return "nothing yet"
    if not spend.answers:  # failures only: nothing was answered, nothing known was charged
        return format_cost(spend.cost_usd)
    return dd.cost_text(spend.cost_usd, spend.answers, spend.unpriced, format_cost)


def used_share(key: GatewayKey, spend: KeySpend) -> float | None:
    """The budget's share spent (priced answers only: a lower bound when some are unpriced);
    None without a budget."""
    if key.budget_usd is None:
        return None
    return spend.cost_usd / key.budget_usd


def key_table(keys: Iterable[GatewayKey], spends: Mapping[str, KeySpend], format_cost: FormatCost) -> pd.DataFrame:
    """One row per key, newest first, for the Keys page: never the key itself (its prefix only)."""
    rows = []
    for key in sorted(keys, key=lambda k: k.created_at, reverse=True):
        spend = spends.get(key.id, KeySpend(0, 0, 0.0, 0))
        rows.append(
            {
                "Name": key.name,
                "Owner": key.owner or "",
                "Key": f"{key.prefix}…",
                "Models": models_text(key),
                "RPM": key.rpm,
                "TPM": key.tpm,
                "Budget": budget_text(key),
                "Spent this period": f"{spend_text(spend, format_cost)} this {key_period(key)}",
                "Used": used_share(key, spend),
                "Created": _when(key.created_at),
                "Status": status_text(key).removesuffix(" UTC"),  # the column says UTC
                "id": key.id,
            }
        )
    return pd.DataFrame(rows, columns=KEY_TABLE_COLUMNS).astype({"RPM": "Int64", "TPM": "Int64", "Used": "float64"})


def spend_line(key: GatewayKey, spend: KeySpend, format_cost: FormatCost, now: datetime | None = None) -> str:
    """The Dashboard's line for one key (markdown-free text): what it has spent this period
    against its budget, saying when unknown prices make the figure a lower bound."""
    period = key_period(key)
    start, reset = period_bounds(period, now)
    since = f"since {start:%b %d}" if period == "month" else f"today (since {start:%H:%M} UTC)"
    spent = spend_text(spend, format_cost)
    if spend.attempts and spend.unpriced:
        unknown = (
            "the price of every answer is unknown"
            if spend.cost_usd == 0
            else f"{spend.unpriced:,} answer{'s' if spend.unpriced != 1 else ''} without a known price are not counted: "
            "the spend is at least this"
        )
    else:
        unknown = ""
    if key.budget_usd is None:
        text = f"{key.name} has spent {spent} {since}; it has no budget"
    else:
        share = used_share(key, spend) or 0.0
        text = (
            f"{key.name} has spent {spent} of its {usd(key.budget_usd)} {'daily' if period == 'day' else 'monthly'} "
            f"budget {since} ({share:.1%}); it resets {reset:%b %d %H:%M} UTC"
        )
    return text + (f" ({unknown})" if unknown else "") + "."


def model_choices(models_by_provider: Mapping[str, Iterable[str]]) -> list[str]:
    """What a key may be limited to, as the gateway reads it: 'auto' (AUTO may route to any
    provider), each provider (any of its models), and each 'provider/model'."""
    choices = ["auto"]
    for provider, models in models_by_provider.items():
        choices.append(provider)
        choices.extend(f"{provider}/{model}" for model in models)
    return list(dict.fromkeys(choices))
