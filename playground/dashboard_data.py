"""The dashboard's data preparation: request-log rows in, small per-provider time series out.

Pure functions (pandas/numpy in, pandas out; no Streamlit, no I/O), so they can be tested
and benchmarked on their own. The promises:

* **A few dozen points per line.** The bucket size is chosen from the window so that a
  series has at most `MAX_BUCKETS` (40) buckets per provider, at least 24 for every window
  the page offers, and at most `MAX_POINTS` rows in all, however long the log grows: a
  line a person can follow (not 120 zig-zags), and a bounded number of points sent to
  the browser.
* **Vectorised.** One `groupby` over integer bucket codes; no Python loop over rows.
  A million rows take well under a second.

Two sources feed the same series shape:

* `series_from_frame` — raw attempts (`RequestLog.frame()`): everything, including the
  p50/p95 latency, time to first token and tokens per second that need individual rows.
  Failures the request caused (`conductor_core.errors.provider_at_fault` is False: a bad
  request, a stopped answer) are counted as requests but not in the success rate.
* `series_from_aggregate` — per-bucket sums from the log's per-minute rollups
  (`RequestLog.aggregate()`): for windows too large to read row by row. Latency and time
  to first token are then means (percentiles need rows); everything else is exact
  (the rollups count the failures the request caused apart: `not_at_fault`).

Tokens per second, on both paths: over streamed successes with at least two output tokens,
the tokens after the first over the time after the first token (the first token's wait is
not generation) — the rule of the providers' own figures and of the log's rollups.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from conductor_core.errors import NOT_PROVIDER_FAULTS

__all__ = [
    "WINDOWS",
    "WINDOW_NAMES",
    "MAX_BUCKETS",
    "MAX_POINTS",
    "SERIES_COLUMNS",
    "bucket_seconds",
    "window_bounds",
    "series_from_frame",
    "series_from_aggregate",
    "summary",
    "cost_tile",
    "win_rates",
    "leaderboard_table",
    "LEADERBOARD_COLUMNS",
    "status_table",
    "window_figures",
    "cost_text",
    "fit_widths",
    "text_width",
    "humanize_seconds",
    "bucket_name",
    "compact_count",
]

#: Time windows offered by the dashboard, in seconds (None: everything in the log). Short
#: labels: all seven fit one row at phone width (390 px).
WINDOWS: dict[str, int | None] = {
    "5m": 5 * 60,
    "15m": 15 * 60,
    "1h": 3600,
    "6h": 6 * 3600,
    "24h": 24 * 3600,
    "7d": 7 * 24 * 3600,
    "All": None,
}
#: How each window is said in sentences ("Last 15 minutes").
WINDOW_NAMES: dict[str, str] = {
    "5m": "5 minutes",
    "15m": "15 minutes",
    "1h": "hour",
    "6h": "6 hours",
    "24h": "24 hours",
    "7d": "7 days",
    "All": "whole log",
}

#: Most buckets per provider in one series: every window the page offers gets 24 to 40 (a
#: few dozen points per line; an hour is 30 two-minute buckets).
MAX_BUCKETS = 40
#: Most rows in one series (all providers together). The busiest chart (latency) draws
#: two points per row (p50 and p95), so this keeps every chart under 5,000 points.
MAX_POINTS = 2_500

# Bucket sizes people read easily; the smallest one that keeps the buckets bounded wins.
_NICE_BUCKETS_S = (
    1,
    2,
    5,
    10,
    15,
    30,
    60,
    120,
    300,
    600,
    900,
    1800,
    3600,
    2 * 3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    2 * 86400,
    7 * 86400,
    14 * 86400,
    30 * 86400,
)

SERIES_COLUMNS: tuple[str, ...] = (
    "provider",
    "bucket",  # the bucket's start
    "time",  # where its point is drawn: the middle of the part of the bucket inside the window
    "requests",  # attempts, retries and fallbacks included
    "first_attempts",  # requests: attempts with attempt_index 0 (or unknown)
    "ok",
    "errors",
    "counted",  # attempts that say something about the provider: successes and its failures
    "unpriced",  # successful attempts whose cost is not known
    "success_rate",  # ok / counted
    "p50_latency_ms",
    "p95_latency_ms",
    "mean_latency_ms",
    "p50_ttft_ms",
    "p95_ttft_ms",
    "mean_ttft_ms",
    "tokens_per_second",
    "cost_usd",
    "cost_per_request_usd",
    "cumulative_cost_usd",  # NaN until the provider's first priced answer: unknown is not $0
    "requests_per_min",
)

_NS = 1_000_000_000


def bucket_seconds(
    span_s: float, *, providers: int = 1, max_buckets: int = MAX_BUCKETS, max_points: int = MAX_POINTS
) -> int:
    """The bucket size (seconds) for a window of `span_s` seconds: the smallest "nice" size
    giving at most `max_buckets` buckets, and at most `max_points` rows over `providers`."""
    providers = max(1, int(providers))
    buckets = max(1, min(max_buckets, max_points // providers))
    needed = max(float(span_s), 1.0) / buckets
    for size in _NICE_BUCKETS_S:
        if size >= needed:
            return size
    return int(math.ceil(needed / 86400) * 86400)


def window_bounds(window_s: int | None, now: datetime, first: datetime | None = None) -> tuple[datetime, datetime]:
    """Start and end of a window ending at `now`. For "All time" (None), it starts at the
    oldest row (`first`), or one hour back when the log is empty."""
    now = _utc(now)
    if window_s is not None:
        return now - timedelta(seconds=window_s), now
    start = _utc(first) if first is not None else now - timedelta(hours=1)
    return min(start, now - timedelta(minutes=1)), now


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _ns(values: Any) -> np.ndarray:
    """Epoch nanoseconds (int64) of a datetime column, whatever its unit or timezone."""
    series = pd.Series(values)
    if not isinstance(series.dtype, pd.DatetimeTZDtype) and not pd.api.types.is_datetime64_dtype(series.dtype):
        series = pd.to_datetime(series, utc=True)
    elif isinstance(series.dtype, pd.DatetimeTZDtype):
        series = series.dt.tz_convert("UTC")
    return series.dt.tz_localize(None).astype("datetime64[ns]").to_numpy().view("int64")


def _floats(frame: pd.DataFrame, name: str, fill: float = np.nan) -> np.ndarray:
    if name not in frame:
        return np.full(len(frame), fill)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype="float64", na_value=fill)


def _empty_series() -> pd.DataFrame:
    frame = pd.DataFrame({name: pd.Series(dtype="float64") for name in SERIES_COLUMNS})
    frame["provider"] = pd.Series(dtype=object)
    frame["bucket"] = pd.Series(dtype="datetime64[ns, UTC]")
    frame["time"] = pd.Series(dtype="datetime64[ns, UTC]")
    for name in ("requests", "first_attempts", "ok", "errors", "counted", "unpriced"):
        frame[name] = pd.Series(dtype="int64")
    return frame


def _grid(providers: np.ndarray, start_code: int, n_buckets: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (provider index, bucket code) pair, provider-major: a full, bounded grid so a
    quiet bucket shows 0 requests/min instead of a line drawn straight across the gap."""
    provider_idx = np.repeat(np.arange(len(providers)), n_buckets)
    bucket_code = np.tile(np.arange(start_code, start_code + n_buckets), len(providers))
    return provider_idx, bucket_code


def _finish(frame: pd.DataFrame, providers: np.ndarray, bucket_s: int, start: datetime, end: datetime) -> pd.DataFrame:
    frame["provider"] = providers[frame.pop("provider_idx").to_numpy()]
    first_ns = frame.pop("bucket_code").to_numpy() * (bucket_s * _NS)
    frame["bucket"] = pd.to_datetime(first_ns, unit="ns", utc=True)
    # The window cuts its first and last buckets: a point is drawn in the middle of the part
    # inside the window (not before the axis starts), and a rate is over that part (the
    # current bucket does not dip because it has just begun), over a quarter of a bucket at
    # least so that a few seconds of traffic do not make a spike.
    lo = np.maximum(first_ns, int(pd.Timestamp(start).value))
    hi = np.maximum(np.minimum(first_ns + bucket_s * _NS, int(pd.Timestamp(end).value)), lo)
    frame["time"] = pd.to_datetime(lo + (hi - lo) // 2, unit="ns", utc=True)
    covered_min = np.clip((hi - lo) / _NS, bucket_s / 4, bucket_s) / 60.0
    counted = frame["counted"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        frame["success_rate"] = np.where(counted > 0, frame["ok"].to_numpy() / np.maximum(counted, 1), np.nan)
        frame["cost_per_request_usd"] = np.where(
            frame["priced"].to_numpy() > 0,
            frame["cost_usd"].to_numpy() / np.maximum(frame["priced"].to_numpy(), 1),
            np.nan,
        )
    by_provider = frame.groupby("provider", sort=False)
    priced_so_far = by_provider["priced"].cumsum().to_numpy()
    frame["cumulative_cost_usd"] = np.where(priced_so_far > 0, by_provider["cost_usd"].cumsum().to_numpy(), np.nan)
    frame["requests_per_min"] = frame["requests"].to_numpy() / covered_min
    for name in SERIES_COLUMNS:
        if name not in frame:
            frame[name] = np.nan
    return frame.loc[:, list(SERIES_COLUMNS)].reset_index(drop=True)


def series_from_frame(
    frame: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    bucket_s: int | None = None,
) -> tuple[pd.DataFrame, int]:
    """Per provider and time bucket from raw attempts (the columns of `RequestLog.frame()`:
    created_at, provider, status, latency_ms, ttft_ms, output_tokens, cost_usd).

    Returns the series (columns `SERIES_COLUMNS`, one row per provider and bucket over the
    whole window, oldest first) and the bucket size used. Latency and time to first token
    (p50, p95) are over successful attempts; tokens per second is the tokens after the first over the
    time after the first token, of streamed successes with two tokens or more."""
    start, end = _utc(start), _utc(end)
    span_s = max((end - start).total_seconds(), 1.0)
    if frame is None or frame.empty:
        return _empty_series(), bucket_s or bucket_seconds(span_s)

    ts = _ns(frame["created_at"])
    start_ns, end_ns = int(pd.Timestamp(start).value), int(pd.Timestamp(end).value)
    keep = (ts >= start_ns) & (ts <= end_ns)
    if not keep.all():
        frame, ts = frame.loc[keep], ts[keep]
    if frame.empty:
        return _empty_series(), bucket_s or bucket_seconds(span_s)

    provider_codes, providers = pd.factorize(frame["provider"], sort=True)
    providers = np.asarray(providers, dtype=object)
    size = bucket_s or bucket_seconds(span_s, providers=len(providers))
    step = size * _NS
    start_code = start_ns // step
    n_buckets = int(end_ns // step - start_code + 1)
    codes = ts // step

    ok = frame["status"].eq("ok").to_numpy(dtype=bool, na_value=False)
    # A request's first attempt (an unknown position counts as one: a request of its own).
    first_attempt = ~(_floats(frame, "attempt_index") > 0)
    if "error_type" in frame:
        blameless = ~ok & frame["error_type"].astype(object).isin(NOT_PROVIDER_FAULTS).to_numpy(dtype=bool)
    else:
        blameless = np.zeros(len(frame), dtype=bool)
    latency = _floats(frame, "latency_ms")
    ttft = _floats(frame, "ttft_ms")
    tokens = _floats(frame, "output_tokens", fill=0.0)
    cost = _floats(frame, "cost_usd")

    # One integer key per (provider, bucket) over the full grid: sums are np.bincount calls
    # and only the quantiles need a groupby (over successful rows only).
    cells = len(providers) * n_buckets
    key = provider_codes.astype("int64") * n_buckets + (codes - start_code)
    generation_s = (latency - ttft) / 1000.0
    streamed_ok = ok & np.isfinite(ttft) & (generation_s > 0) & (tokens >= 2)
    priced = np.isfinite(cost)

    def total(weights: np.ndarray | None = None) -> np.ndarray:
        return np.bincount(key, weights=weights, minlength=cells)[:cells]

    requests = total().astype("int64")
    ok_count = total(ok.astype("float64")).astype("int64")
    provider_idx, bucket_code = _grid(providers, int(start_code), n_buckets)
    full = pd.DataFrame({"provider_idx": provider_idx, "bucket_code": bucket_code})
    full["requests"] = requests
    full["first_attempts"] = total(first_attempt.astype("float64")).astype("int64")
    full["ok"] = ok_count
    full["errors"] = requests - ok_count
    full["counted"] = requests - total(blameless.astype("float64")).astype("int64")
    full["priced"] = total(priced.astype("float64")).astype("int64")
    full["unpriced"] = total((ok & ~priced).astype("float64")).astype("int64")
    full["cost_usd"] = total(np.where(priced, cost, 0.0))
    with np.errstate(invalid="ignore", divide="ignore"):
        generation = total(np.where(streamed_ok, generation_s, 0.0))
        full["tokens_per_second"] = np.where(
            generation > 0, total(np.where(streamed_ok, tokens - 1, 0.0)) / generation, np.nan
        )

    timed = ok & np.isfinite(latency)
    by_cell = pd.Series(latency[timed]).groupby(key[timed], sort=True)
    quantiles = by_cell.quantile([0.5, 0.95]).unstack() if timed.any() else pd.DataFrame(columns=[0.5, 0.95])
    full["p50_latency_ms"] = quantiles[0.5].reindex(range(cells)).to_numpy() if timed.any() else np.nan
    full["p95_latency_ms"] = quantiles[0.95].reindex(range(cells)).to_numpy() if timed.any() else np.nan
    with np.errstate(invalid="ignore", divide="ignore"):
        counts = total(timed.astype("float64"))
        full["mean_latency_ms"] = np.where(counts > 0, total(np.where(timed, latency, 0.0)) / counts, np.nan)
    first = ok & np.isfinite(ttft)
    with np.errstate(invalid="ignore", divide="ignore"):
        counts = total(first.astype("float64"))
        full["mean_ttft_ms"] = np.where(counts > 0, total(np.where(first, ttft, 0.0)) / counts, np.nan)
    if first.any():
        ttft_quantiles = pd.Series(ttft[first]).groupby(key[first], sort=True).quantile([0.5, 0.95]).unstack()
        full["p50_ttft_ms"] = ttft_quantiles[0.5].reindex(range(cells)).to_numpy()
        full["p95_ttft_ms"] = ttft_quantiles[0.95].reindex(range(cells)).to_numpy()
    else:
        full["p50_ttft_ms"] = full["p95_ttft_ms"] = np.nan
    return _finish(full, providers, size, start, end), size


def series_from_aggregate(
    aggregate: pd.DataFrame,
    *,
    start: datetime,
    end: datetime,
    bucket_s: int,
) -> pd.DataFrame:
    """The same series shape from `RequestLog.aggregate(bucket_s=...)` rows (sums per
    provider and bucket). p50/p95 need individual rows, so they are NaN here; the mean
    latency and mean time to first token are set, tokens per second is exact. `bucket_s`
    may be a multiple of the aggregate's bucket: the sums are re-bucketed exactly."""
    if aggregate is None or aggregate.empty:
        return _empty_series()
    start, end = _utc(start), _utc(end)
    step = bucket_s * _NS
    start_code = int(pd.Timestamp(start).value) // step
    n_buckets = int(pd.Timestamp(end).value // step - start_code + 1)
    provider_codes, providers = pd.factorize(aggregate["provider"].to_numpy(), sort=True)
    providers = np.asarray(providers, dtype=object)
    codes = _ns(aggregate["bucket"]) // step
    inside = (codes >= start_code) & (codes < start_code + n_buckets)
    key = (provider_codes.astype("int64") * n_buckets + (codes - start_code))[inside]
    rows = aggregate.loc[inside]
    provider_idx, bucket_code = _grid(providers, start_code, n_buckets)
    full = pd.DataFrame({"provider_idx": provider_idx, "bucket_code": bucket_code})
    full_key = provider_idx.astype("int64") * n_buckets + (bucket_code - start_code)

    def column(name: str, fill: float = 0.0) -> np.ndarray:
        return _floats(rows, name, fill)

    # Means become sums (mean x count) so that re-bucketing stays exact.
    latency_n, ttft_n = column("latency_n"), column("ttft_n")
    latency_mean, ttft_mean = column("mean_latency_ms", np.nan), column("mean_ttft_ms", np.nan)
    sums = pd.DataFrame(
        {
            "requests": column("requests"),
            # Sums without the column (made by hand): each attempt counts as a request.
            "first_attempts": column("first_attempts") if "first_attempts" in rows else column("requests"),
            "ok": column("ok"),
            "not_at_fault": column("not_at_fault"),
            "priced": column("priced"),
            "cost_usd": column("cost_usd"),
            "latency_sum": np.where(latency_n > 0, np.nan_to_num(latency_mean) * latency_n, 0.0),
            "latency_n": latency_n,
            "ttft_sum": np.where(ttft_n > 0, np.nan_to_num(ttft_mean) * ttft_n, 0.0),
            "ttft_n": ttft_n,
            "generation_tokens": column("generation_tokens"),
            "generation_s": column("generation_s"),
        },
        index=key,
    )
    sums = sums.groupby(level=0).sum().reindex(full_key).fillna(0.0)
    for name in ("requests", "first_attempts", "ok", "priced"):
        full[name] = sums[name].astype("int64").to_numpy()
    full["errors"] = full["requests"] - full["ok"]
    full["counted"] = full["requests"] - sums["not_at_fault"].astype("int64").to_numpy()
    full["unpriced"] = np.maximum(full["ok"] - full["priced"], 0)  # errors have no cost
    full["cost_usd"] = sums["cost_usd"].to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        for mean, total, count in (
            ("mean_latency_ms", "latency_sum", "latency_n"),
            ("mean_ttft_ms", "ttft_sum", "ttft_n"),
        ):
            full[mean] = np.where(sums[count] > 0, sums[total] / sums[count], np.nan)
        full["tokens_per_second"] = np.where(
            sums["generation_s"] > 0, sums["generation_tokens"] / sums["generation_s"], np.nan
        )
    return _finish(full, providers, bucket_s, start, end)


def summary(series: pd.DataFrame) -> dict[str, float | int | None]:
    """Totals over a series: attempts (`requests`, retries and fallbacks included) and the
    requests they belong to (`first_attempts`), successes, success rate (over the attempts
    that count against a provider), cost and how many successes are unpriced, mean attempts
    per minute and mean requests per minute."""

    def total(name: str) -> int:
        return int(series[name].sum()) if not series.empty and name in series else 0

    requests, ok, counted, first = total("requests"), total("ok"), total("counted"), total("first_attempts")
    per_bucket = (
        series.groupby("bucket", sort=False)["requests_per_min"].sum()
        if not series.empty
        else pd.Series(dtype="float64")
    )
    return {
        "requests": requests,
        "first_attempts": total("first_attempts"),
        "ok": ok,
        "counted": counted,
        "success_rate": ok / counted if counted else None,
        "cost_usd": float(series["cost_usd"].sum()) if not series.empty else 0.0,
        "unpriced": total("unpriced"),
        "requests_per_min": float(per_bucket.mean()) if len(per_bucket) else 0.0,
        # Every bucket has the same size, so the requests' rate is the attempts' scaled.
        "first_attempts_per_min": float(per_bucket.mean()) * first / requests if requests else 0.0,
    }


def cost_tile(cost_usd: float, unpriced: int, requests: int, format_cost) -> tuple[str, str | None]:
    """The window's cost for a tile, as (value, line under it): ("$0.0123", None), ("free",
    None), or ("$0.0123", "+ 3 unpriced") when some answers have no known price (never
    "free" then: it is not known to be). Read together: "$0.0123 + 3 unpriced"."""
    if not requests:
        return "$0", None
    if not unpriced:
        return format_cost(cost_usd), None
    return ("$0" if cost_usd == 0 else format_cost(cost_usd)), f"+ {compact_count(unpriced)} unpriced"


def win_rates(votes: Iterable[Any]) -> pd.DataFrame:
    """Per target label: compares voted on, wins, ties, 'all bad' verdicts and the win rate
    (wins over compares). `votes` are `Vote` objects (or dicts with targets and winner)."""
    targets: list[str] = []
    winners: list[str] = []
    for vote in votes:
        labels = vote["targets"] if isinstance(vote, Mapping) else vote.targets
        winner = vote["winner"] if isinstance(vote, Mapping) else vote.winner
        targets.extend(labels)
        winners.extend([winner] * len(labels))
    columns = ["target", "votes", "wins", "ties", "both_bad", "win_rate"]
    if not targets:
        return pd.DataFrame(
            {name: pd.Series(dtype="float64" if name == "win_rate" else "int64") for name in columns}
        ).astype({"target": object})
    rows = pd.DataFrame({"target": targets, "winner": winners})
    rows["win"] = (rows["winner"] == rows["target"]).astype("int64")
    rows["tie"] = (rows["winner"] == "tie").astype("int64")
    rows["bad"] = (rows["winner"] == "both_bad").astype("int64")
    table = rows.groupby("target", sort=True).agg(
        votes=("win", "size"), wins=("win", "sum"), ties=("tie", "sum"), both_bad=("bad", "sum")
    )
    table["win_rate"] = table["wins"] / table["votes"]
    return (
        table.reset_index()
        .sort_values(["win_rate", "votes"], ascending=[False, False], kind="stable")
        .reset_index(drop=True)
    )


LEADERBOARD_COLUMNS = [
    "Rank",
    "Target",
    "Rating",
    "95% CI",
    "Blind votes",
    "W / L / T",
    "p50 ms",
    "Success",
    "Cost / request $",
]


def leaderboard_table(board: Any, attempts: pd.DataFrame) -> pd.DataFrame:
    """The blind-vote leaderboard (`Leaderboard`, best first) beside each target's figures
    from the request log (`attempts`: provider, model, status, error_type, latency_ms,
    cost_usd): p50 latency of its successes, success rate (failures the request caused left
    out, as everywhere on the dashboard), mean cost of its priced requests (NaN: unknown).
    Targets with too few votes keep their place after the ranked ones, with no rank."""
    if not board.ratings:
        return pd.DataFrame(columns=LEADERBOARD_COLUMNS)
    figures: dict[str, tuple[float, float, float]] = {}
    if not attempts.empty:
        rows = attempts.assign(target=attempts["provider"].astype(str) + "/" + attempts["model"].astype(str))
        ok = rows["status"].astype(str) == "ok"
        blameless = ~ok & rows["error_type"].astype(object).isin(NOT_PROVIDER_FAULTS)
        rows = rows.assign(ok=ok, counted=~blameless)
        for target, group in rows.groupby("target", sort=False, observed=True):
            counted = int(group["counted"].sum())
            successes = group.loc[group["ok"], "latency_ms"].dropna()
            priced = group["cost_usd"].dropna()
            figures[target] = (
                float(successes.median()) if len(successes) else np.nan,
                float(group["ok"].sum()) / counted if counted else np.nan,
                float(priced.mean()) if len(priced) else np.nan,
            )
    table = []
    rank = 0
    for rating in board.ratings:
        rank += rating.enough
        p50, success, cost = figures.get(rating.subject, (np.nan, np.nan, np.nan))
        table.append(
            {
                "Rank": rank if rating.enough else None,
                "Target": rating.subject,
                "Rating": rating.rating if rating.enough else None,
                "95% CI": f"± {rating.margin:,.0f} ({rating.ci_low:,.0f}–{rating.ci_high:,.0f})"
                if rating.enough
                else f"too few votes ({rating.votes} < {rating.min_votes})",
                "Blind votes": rating.votes,
                "W / L / T": f"{rating.wins} / {rating.losses} / {rating.ties}",
                "p50 ms": p50,
                "Success": success,
                "Cost / request $": cost,
            }
        )
    return pd.DataFrame(table, columns=LEADERBOARD_COLUMNS).astype({"Rank": "Int64"})


_STATE_LABELS = {
    "ready": "● ready",
    "loading": "◐ loading",
    "unhealthy": "✕ unhealthy",
    "circuit_open": "◆ paused (breaker open)",
    "not_configured": "○ not configured",
}


def compact_count(value: int) -> str:
    """A count that fits a dashboard tile: exact up to 99,999, then "299.9k", "1.25M"."""
    if value < 100_000:
        return f"{value:,}"
    if value < 1_000_000:
        return f"{value / 1000:.1f}k"
    return f"{value / 1_000_000:.3g}M"


def bucket_name(bucket_s: int) -> str:
    """A bucket size as said in a sentence: "10-second", "2-minute", "6-hour", "1-day"."""
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60)):
        if bucket_s >= size and bucket_s % size == 0:
            return f"{bucket_s // size}-{unit}"
    return f"{bucket_s}-second"


def humanize_seconds(seconds: float | None) -> str:
    """A short duration for a person: "42 s", "3m 05s", "2h 10m", "3d 4h"."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return "—"
    seconds = max(0.0, float(seconds))
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f}m {seconds % 60:02.0f}s"
    if seconds < 86400:
        return f"{seconds // 3600:.0f}h {seconds % 3600 // 60:02.0f}m"
    return f"{seconds // 86400:.0f}d {seconds % 86400 // 3600:.0f}h"


def _number(value: float | None) -> float:
    return float("nan") if value is None else float(value)


def cost_text(cost_usd: float, answers: int, unpriced: int, format_cost: Callable[[float | None], str]) -> str:
    """A provider's cost in a table cell: "—" with no answer, "unknown" when none of its
    answers has a known price (never "$0.00000": it is not known to be free), "$0.0123 + 3
    unpriced" when some have none, else the cost ("free" for 0)."""
    if not answers:
        return "—"
    if unpriced >= answers:
        return format_cost(None)
    if unpriced:
        return f"{'$0' if cost_usd == 0 else format_cost(cost_usd)} + {compact_count(unpriced)} unpriced"
    return format_cost(cost_usd)


def window_figures(series: pd.DataFrame) -> pd.DataFrame:
    """Per provider over a series: requests, answers, unpriced answers and cost, the latency
    trend (p50 of each bucket with answers, oldest first; the mean when the series comes from
    rollups; None under two points) and the traffic (requests in every bucket)."""
    columns = ["requests", "ok", "unpriced", "cost_usd", "latency_trend", "traffic"]
    if series.empty:
        return pd.DataFrame(columns=columns).rename_axis("provider")
    latency = "p50_latency_ms" if series["p50_latency_ms"].notna().any() else "mean_latency_ms"
    rows = {}
    for provider, group in series.groupby("provider", sort=True):
        trend = group[latency].dropna().round(1).tolist()  # a sparkline takes no gaps
        rows[provider] = {
            "requests": int(group["requests"].sum()),
            "ok": int(group["ok"].sum()),
            "unpriced": int(group["unpriced"].sum()),
            "cost_usd": float(group["cost_usd"].sum()),
            "latency_trend": trend if len(trend) >= 2 else None,
            "traffic": group["requests"].astype(int).tolist(),
        }
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns).rename_axis("provider")


# Character widths of the table's font (14 px Source Sans, measured in Chromium), by class,
# each class at its widest: an estimate that errs wide by a few pixels, never narrow.
_NARROW, _THIN, _DIGIT, _WIDE, _WIDEST, _OTHER = 3.7, 5.0, 7.0, 9.4, 12.3, 7.8
_CHAR_CLASSES = (
    ("ilIj.,:;·'|!", _NARROW),
    ("ftr()-/ ", _THIN),
    ("0123456789$+_", _DIGIT),
    ("mw%MW—◐✕", _WIDEST),
    ("ABCDEFGHJKLNOPQRSTUVXYZ●○◆", _WIDE),
)
_CELL_PADDING_PX = 20  # 8 px each side in the grid, and a little air


def text_width(text: str) -> int:
    """Pixels the table's font needs for `text` (an estimate, 5% wide)."""
    total = sum(next((px for chars, px in _CHAR_CLASSES if ch in chars), _OTHER) for ch in text)
    return math.ceil(total * 1.05)


def fit_widths(table: pd.DataFrame, shown: Mapping[str, Callable[[Any], str]]) -> dict[str, int]:
    """Pixels each column of `shown` needs for its longest text, header included, as the
    table shows it (`shown[column]` formats a value). The grid sizes a column once, for the
    values it first draws, and keeps that width: a p50 that grows from "90 ms" to "2034 ms"
    would read "034 ms"; a width set from the values themselves grows with them."""
    widths = {}
    for column, text in shown.items():
        values = table[column] if column in table else []
        texts = [column, *(text(v) for v in values if v is not None and v == v)]
        widths[column] = max(text_width(t) for t in texts) + _CELL_PADDING_PX
    return widths


def status_table(
    status: Any,
    now: datetime | None = None,
    *,
    series: pd.DataFrame | None = None,
    format_cost: Callable[[float | None], str] | None = None,
) -> pd.DataFrame:
    """One row per provider from `Conductor.status()`: state, breaker and when it retries,
    p50/p95 and success rate from the router's live figures, then from `series` (the
    dashboard's window): the latency trend, requests, traffic and cost (`cost_text`), then the
    last error and last check."""
    now = _utc(now or datetime.now(UTC))
    window = window_figures(series if series is not None else _empty_series())
    format_cost = format_cost or (lambda v: "unknown" if v is None else f"${v:,.6f}")
    rows = []
    for name, p in status.providers.items():
        state = p.health.state.value if hasattr(p.health.state, "value") else str(p.health.state)
        breaker = p.reliability.breaker.value if hasattr(p.reliability.breaker, "value") else str(p.reliability.breaker)
        retry = p.reliability.retry_in_s
        if breaker == "open":
            breaker_text = f"open · retries in {humanize_seconds(retry)}"
        elif breaker == "half_open":
            breaker_text = "half-open · probing"
        else:
            breaker_text = "closed"
        last_check = p.health.last_check
        figures = window.loc[name] if name in window.index else None
        rows.append(
            {
                "Provider": p.display_name if p.display_name and p.display_name != name else name,
                "Name": name,
                "State": _STATE_LABELS.get(state, state),
                "Breaker": breaker_text,
                "p50 ms": _number(p.performance.p50_latency_ms),
                "p95 ms": _number(p.performance.p95_latency_ms),
                "Success": _number(p.reliability.success_rate),
                "Latency trend": None if figures is None else figures["latency_trend"],
                "Requests": 0 if figures is None else int(figures["requests"]),
                "Traffic": None if figures is None else figures["traffic"],
                "Cost": "—"
                if figures is None
                else cost_text(figures["cost_usd"], int(figures["ok"]), int(figures["unpriced"]), format_cost),
                "Detail / last error": p.health.detail or p.reliability.last_error or "",
                "Last check": f"{humanize_seconds((now - _utc(last_check)).total_seconds())} ago"
                if last_check
                else "never",
            }
        )
    return pd.DataFrame(rows)
