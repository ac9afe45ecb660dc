"""Chart builders (playground/charts.py) and the dashboard's data preparation
(playground/dashboard_data.py): fields, encodings and the point bound, via `to_dict()`."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from conductor_core.models import Vote
from playground import charts
from playground import dashboard_data as dd

NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)
PROVIDERS = ["anthropic", "gemini", "local", "openai"]


def attempts(n: int, *, span_s: float = 3600, providers=PROVIDERS, seed: int = 0) -> pd.DataFrame:
    """Raw attempts shaped like RequestLog.frame(): oldest first."""
    rng = np.random.default_rng(seed)
    seconds = np.sort(rng.random(n) * span_s)
    created = pd.to_datetime((NOW.timestamp() - span_s + seconds) * 1e6, unit="us", utc=True)
    provider = np.asarray(providers, dtype=object)[rng.integers(0, len(providers), n)]
    ok = rng.random(n) > 0.1
    latency = rng.lognormal(6, 0.5, n)
    cost = np.where(provider == "local", 0.0, 2e-5)
    cost = np.where(provider == "gemini", np.nan, cost)  # a provider whose price is unknown
    return pd.DataFrame(
        {
            "created_at": created,
            "provider": provider,
            "status": np.where(ok, "ok", "error"),
            "latency_ms": latency,
            "ttft_ms": np.where(ok, latency / 5, np.nan),
            "output_tokens": np.where(ok, 50, 0),
            "cost_usd": cost,
        }
    )


def series_for(frame: pd.DataFrame, window_s: int = 3600) -> tuple[pd.DataFrame, datetime, datetime]:
    start, end = dd.window_bounds(window_s, NOW)
    series, _ = dd.series_from_frame(frame, start=start, end=end)
    return series, start, end


def data_rows(spec: dict) -> list[int]:
    return [len(values) for values in spec.get("datasets", {}).values()]


# --- dashboard_data ---------------------------------------------------------------------------


@pytest.mark.parametrize("span_s", [60, 300, 3600, 6 * 3600, 86400, 7 * 86400, 365 * 86400, 10 * 365 * 86400])
def test_bucket_size_bounds_the_number_of_buckets(span_s):
    size = dd.bucket_seconds(span_s)
    assert span_s / size <= dd.MAX_BUCKETS
    many = dd.bucket_seconds(span_s, providers=60)
    assert (span_s / many + 1) * 60 <= dd.MAX_POINTS + 60


@pytest.mark.parametrize("window", [label for label, span in dd.WINDOWS.items() if span])
def test_every_window_draws_a_few_dozen_points_per_line(window):
    # 120 thirty-second zig-zags per provider made an hour unreadable; a few dozen points make a line.
    series, _, _ = series_for(attempts(20_000, span_s=dd.WINDOWS[window]), window_s=dd.WINDOWS[window])
    per_line = series.groupby("provider").size()
    assert 24 <= per_line.min() and per_line.max() <= 40 + 1, per_line.to_dict()  # + 1: a bucket the window cuts


def test_points_are_drawn_inside_the_window():
    # A window from 11:00:20 cuts its first two-minute bucket (10:58-11:00 is not even in it):
    # every point sits in the middle of the part of its bucket inside the window.
    start, end = NOW - timedelta(minutes=59, seconds=40), NOW + timedelta(seconds=20)
    series, size = dd.series_from_frame(attempts(2_000, span_s=3560), start=start, end=end)
    assert size == 120
    times = series["time"]
    assert times.min() >= pd.Timestamp(start) and times.max() <= pd.Timestamp(end)
    first = series[series["bucket"] == series["bucket"].min()].iloc[0]
    first_end = first["bucket"] + pd.Timedelta(seconds=size)
    assert first["time"] == pd.Timestamp(start) + (first_end - pd.Timestamp(start)) / 2
    middle = series.iloc[10]
    assert middle["time"] == middle["bucket"] + pd.Timedelta(seconds=size / 2)


def test_the_current_bucket_rate_is_over_the_time_it_covers():
    # One request every 10 s (6 a minute); the window ends 60 s into a 2-minute bucket.
    end = NOW + timedelta(seconds=60)
    frame = rows(*[(-60 + 10 * i + 5, "a", "ok", None, 0.0) for i in range(30)])
    series, _ = dd.series_from_frame(frame, start=end - timedelta(minutes=5), end=end, bucket_s=120)
    current = series[series["bucket"] == series["bucket"].max()].iloc[0]
    assert current["requests"] == 6 and current["requests_per_min"] == pytest.approx(6.0)  # not 3: no dip


def test_cumulative_cost_is_unknown_until_a_priced_answer():
    frame = rows(
        (290, "a", "ok", None, None),  # a's first answer has no price...
        (170, "a", "ok", None, 2e-3),  # ...its second has one
        (100, "a", "ok", None, 1e-3),
        (250, "b", "ok", None, None),  # b's price is never known
        (50, "b", "ok", None, None),
    )
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=60)
    a = series[series.provider == "a"].set_index("bucket")["cumulative_cost_usd"]
    assert a.iloc[:2].isna().all() and a.iloc[2] == pytest.approx(2e-3) and a.iloc[-1] == pytest.approx(3e-3)
    assert series.loc[series.provider == "b", "cumulative_cost_usd"].isna().all()  # no flat line at $0


def test_series_from_frame_computes_the_figures():
    frame = pd.DataFrame(
        {
            "created_at": pd.to_datetime([NOW - timedelta(seconds=s) for s in (50, 40, 30, 20)], utc=True),
            "provider": ["a", "a", "a", "b"],
            "status": ["ok", "ok", "error", "ok"],
            "latency_ms": [100.0, 300.0, 5000.0, 50.0],
            "ttft_ms": [20.0, 100.0, np.nan, 10.0],
            "output_tokens": [8, 20, 0, 4],
            "cost_usd": [0.01, 0.03, np.nan, np.nan],
        }
    )
    series, size = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=300)
    assert size == 300 and list(series.columns) == list(dd.SERIES_COLUMNS)
    row_a = series[(series.provider == "a") & (series.requests > 0)].iloc[0]
    assert (row_a.requests, row_a.ok, row_a.errors) == (3, 2, 1)
    assert row_a.success_rate == pytest.approx(2 / 3)
    assert row_a.p50_latency_ms == pytest.approx(200.0)  # failures do not count in latency
    assert row_a.p95_latency_ms == pytest.approx(290.0)
    assert row_a.p50_ttft_ms == pytest.approx(60.0)
    assert row_a.p95_ttft_ms == pytest.approx(96.0)
    # The tokens after the first, over the time after the first token (the log's rollup rule).
    assert row_a.tokens_per_second == pytest.approx((7 + 19) / ((80 + 200) / 1000))
    assert row_a.cost_usd == pytest.approx(0.04)
    assert row_a.cost_per_request_usd == pytest.approx(0.02)  # over the priced attempts
    assert row_a.requests_per_min == pytest.approx(3 / 5)
    row_b = series[(series.provider == "b") & (series.requests > 0)].iloc[0]
    assert np.isnan(row_b.cost_per_request_usd)  # unknown price stays unknown


def test_series_cover_the_window_with_a_bounded_grid():
    frame = attempts(20_000)
    series, start, end = series_for(frame)
    assert len(series) <= dd.MAX_POINTS
    assert series.groupby("provider").size().max() <= dd.MAX_BUCKETS + 1
    assert series["bucket"].min() <= pd.Timestamp(start) + pd.Timedelta(seconds=60)
    assert int(series["requests"].sum()) == 20_000
    cumulative = series[series.provider == "openai"]["cumulative_cost_usd"].to_numpy()
    assert (np.diff(cumulative) >= 0).all()


def test_series_from_a_million_rows_is_bounded():
    frame = attempts(1_000_000, span_s=86400, providers=[f"p{i}" for i in range(30)])
    series, _, _ = series_for(frame, window_s=86400)
    assert len(series) <= dd.MAX_POINTS
    assert int(series["requests"].sum()) == 1_000_000
    for builder in (charts.latency_chart, charts.requests_per_minute_chart, charts.success_rate_chart):
        assert max(data_rows(builder(series).to_dict())) <= charts.MAX_POINTS


def test_series_from_aggregate_matches_the_sql_shape():
    buckets = pd.to_datetime([NOW - timedelta(minutes=m) for m in (30, 30, 10)], utc=True).floor("60s")
    aggregate = pd.DataFrame(
        {
            "provider": ["a", "b", "a"],
            "bucket": buckets,
            "requests": [10, 4, 6],
            "ok": [9, 4, 3],
            "errors": [1, 0, 3],
            "incomplete": [0, 0, 0],
            "priced": [10, 4, 6],
            "mean_latency_ms": [100.0, 50.0, 200.0],
            "latency_n": [9, 4, 3],
            "mean_ttft_ms": [20.0, np.nan, 40.0],
            "ttft_n": [4, 0, 1],
            "generation_tokens": [400, 0, 50],
            "generation_s": [4.0, 0.0, 1.0],
            "cost_usd": [0.1, 0.0, 0.2],
            "input_tokens": [1, 1, 1],
            "output_tokens": [1, 1, 1],
        }
    )
    start, end = dd.window_bounds(3600, NOW)
    series = dd.series_from_aggregate(aggregate, start=start, end=end, bucket_s=600)
    assert list(series.columns) == list(dd.SERIES_COLUMNS) and len(series) <= 2 * 7
    assert int(series["requests"].sum()) == 20
    a = series[(series.provider == "a") & (series.requests > 0)]
    assert a["success_rate"].round(2).tolist() == [0.9, 0.5]
    assert series["p50_latency_ms"].isna().all() and a["mean_latency_ms"].tolist() == [100.0, 200.0]
    assert a["mean_ttft_ms"].tolist() == [20.0, 40.0] and a["tokens_per_second"].tolist() == [100.0, 50.0]
    assert series["p50_ttft_ms"].isna().all()
    # Re-bucketing weights each mean by its own count, and sums tokens and seconds.
    wide = dd.series_from_aggregate(aggregate, start=start, end=end, bucket_s=3600)
    a_wide = wide[(wide.provider == "a") & (wide.requests > 0)].iloc[0]
    assert a_wide["mean_latency_ms"] == pytest.approx((900 + 600) / 12)
    assert a_wide["mean_ttft_ms"] == pytest.approx((80 + 40) / 5)
    assert a_wide["tokens_per_second"] == pytest.approx(450 / 5)
    ttft = charts.ttft_chart(wide).to_dict()
    assert ttft["title"]["text"] == "Time to first token (ms, mean)"
    assert [v["mid"] for v in next(iter(ttft["datasets"].values()))] == [pytest.approx((80 + 40) / 5)]


def test_empty_inputs_give_empty_series():
    start, end = dd.window_bounds(300, NOW)
    series, _ = dd.series_from_frame(attempts(0), start=start, end=end)
    assert series.empty and list(series.columns) == list(dd.SERIES_COLUMNS)
    assert dd.summary(series)["requests"] == 0
    assert dd.series_from_aggregate(pd.DataFrame(), start=start, end=end, bucket_s=60).empty


def test_all_time_window_starts_at_the_first_row():
    first = NOW - timedelta(days=3)
    start, end = dd.window_bounds(None, NOW, first)
    assert (start, end) == (first, NOW)
    assert dd.window_bounds(None, NOW)[0] == NOW - timedelta(hours=1)


def test_win_rates_from_votes():
    votes = [
        Vote(group_id="1", targets=["local/gemma", "openai/gpt"], winner="openai/gpt"),
        Vote(group_id="2", targets=["local/gemma", "openai/gpt"], winner="tie"),
        Vote(group_id="3", targets=["local/gemma", "openai/gpt", "gemini/flash"], winner="local/gemma"),
        Vote(group_id="4", targets=["local/gemma", "gemini/flash"], winner="both_bad"),
    ]
    table = dd.win_rates(votes).set_index("target")
    assert table.loc["local/gemma", ["votes", "wins", "ties", "both_bad"]].tolist() == [4, 1, 1, 1]
    assert table.loc["openai/gpt", "win_rate"] == pytest.approx(1 / 3)
    assert dd.win_rates([]).empty


def test_status_table_rows(tmp_path):
    from conductor_core.config import load_settings
    from conductor_core.router import Conductor
    from conductor_core.testing.fakes import ScriptedProvider

    conductor = Conductor(
        load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path),
        extra_providers=[ScriptedProvider("fake")],
    )
    try:
        table = dd.status_table(conductor.status()).set_index("Name")
    finally:
        conductor.close()
    assert table.loc["fake", "State"] == "● ready"
    assert table.loc["gemini", "State"] == "○ not configured"
    assert "GEMINI_API_KEY" in table.loc["gemini", "Detail / last error"]
    assert table.loc["fake", "Breaker"] == "closed"


def test_a_table_cell_never_says_zero_for_an_unknown_price():
    from playground.components import format_cost

    assert dd.cost_text(0.0, answers=0, unpriced=0, format_cost=format_cost) == "—"  # nothing answered
    assert dd.cost_text(0.0, answers=3, unpriced=3, format_cost=format_cost) == "unknown"
    assert dd.cost_text(0.0, answers=3, unpriced=0, format_cost=format_cost) == "free"
    assert dd.cost_text(0.0012, answers=3, unpriced=1, format_cost=format_cost) == "$0.001200 + 1 unpriced"
    assert dd.cost_text(0.0, answers=3, unpriced=1, format_cost=format_cost) == "$0 + 1 unpriced"
    assert dd.cost_text(0.0123, answers=3, unpriced=0, format_cost=format_cost) == "$0.0123"


def test_window_figures_per_provider():
    frame = rows(
        (280, "a", "ok", None, 1e-3),
        (150, "a", "ok", None, 1e-3),
        (100, "a", "error", "timeout", None),
        (20, "b", "ok", None, None),
    )
    frame.loc[1, "latency_ms"] = 300.0
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=60)
    figures = dd.window_figures(series)
    a, b = figures.loc["a"], figures.loc["b"]
    assert (a["requests"], a["ok"], a["unpriced"], a["cost_usd"]) == (3, 2, 0, pytest.approx(2e-3))
    assert a["latency_trend"] == [100.0, 300.0]  # p50 of each bucket with answers, no gap
    assert a["traffic"] == series.loc[series.provider == "a", "requests"].tolist() and sum(a["traffic"]) == 3
    assert (b["unpriced"], b["latency_trend"]) == (1, None)  # one point is no trend
    assert dd.window_figures(series.iloc[0:0]).empty


# Widths of some texts in the table's font (14 px Source Sans), measured in Chromium.
MEASURED_PX = {
    "12034 ms": 55.1,
    "Local (Gemma 3 270M)": 131.8,
    "○ not configured": 96.7,
    "unknown": 55.1,
    "$0.000123 + 3 unpriced": 133.6,
}


def test_text_widths_err_a_little_wide_never_narrow():
    for text, measured in MEASURED_PX.items():
        assert measured <= dd.text_width(text) <= measured * 1.3 + 4, text


def test_columns_are_as_wide_as_their_longest_text():
    table = pd.DataFrame({"p50 ms": [90.0, 12034.0, np.nan], "Cost": ["free", "unknown", None]})
    widths = dd.fit_widths(table, {"p50 ms": "{:.0f} ms".format, "Cost": str, "Missing": str})
    assert widths["p50 ms"] == dd.text_width("12034 ms") + 20  # grows with the value, not its first draw
    assert widths["Cost"] == dd.text_width("unknown") + 20
    assert widths["Missing"] == dd.text_width("Missing") + 20  # the header, at least
    narrow = dd.fit_widths(table.iloc[:1], {"p50 ms": "{:.0f} ms".format})
    assert narrow["p50 ms"] < widths["p50 ms"]


def test_bucket_sizes_are_said_in_words():
    assert [dd.bucket_name(s) for s in (10, 30, 120, 600, 3600, 21600, 86400, 90)] == [
        "10-second",
        "30-second",
        "2-minute",
        "10-minute",
        "1-hour",
        "6-hour",
        "1-day",
        "90-second",
    ]


# --- charts ---------------------------------------------------------------------------------

TIME_SERIES = [
    (charts.success_rate_chart, "success_rate"),
    (charts.ttft_chart, "mid"),
    (charts.tokens_per_second_chart, "tokens_per_second"),
    (charts.cumulative_cost_chart, "cumulative_cost_usd"),
    (charts.cost_per_request_chart, "cost_per_request_usd"),
    (charts.requests_per_minute_chart, "requests_per_min"),
]
ALL_TIME_SERIES = [(charts.latency_chart, "mid"), *TIME_SERIES]


def mark_type(view: dict) -> str:
    mark = view["mark"]
    return mark if isinstance(mark, str) else mark["type"]


def views(spec: dict, inherited: dict | None = None) -> list[dict]:
    """The single views of a chart (itself, its layers, or its small multiples' layers), each
    with the encoding it draws with: the layer's shared channels and its own."""
    encoding = {**(inherited or {}), **spec.get("encoding", {})}
    if "vconcat" in spec:
        return [v for row in spec["vconcat"] for v in views(row, encoding)]
    if "layer" in spec:
        return [v for layer in spec["layer"] for v in views(layer, encoding)]
    return [{**spec, "encoding": encoding}]


def main_view(spec: dict) -> dict:
    """The view that draws the value: the line (or the area of a stacked chart)."""
    found = [v for v in views(spec) if mark_type(v) in ("line", "area") and "y2" not in v["encoding"]]
    return found[0]


def params(spec: dict) -> list[dict]:
    found = [p for v in [spec, *views(spec)] for p in v.get("params", [])]
    return [p for n, p in enumerate(found) if p not in found[:n]]  # a single view is its own only view


@pytest.mark.parametrize(("builder", "field"), ALL_TIME_SERIES)
def test_time_series_charts(builder, field):
    series, start, end = series_for(attempts(5_000))
    spec = builder(series, providers=PROVIDERS, start=start, end=end).to_dict()
    encoding = main_view(spec)["encoding"]
    steps = builder in (charts.cumulative_cost_chart, charts.requests_per_minute_chart)
    # Lines are drawn at their buckets' middles; steps from their buckets' starts.
    assert encoding["x"]["field"] == ("bucket" if steps else "time") and encoding["x"]["type"] == "temporal"
    assert encoding["x"]["scale"]["domain"] == [start.isoformat(), end.isoformat()]
    assert encoding["y"]["field"] == field and encoding["y"]["type"] == "quantitative"
    assert encoding["color"]["field"] == "provider" and encoding["color"]["scale"]["domain"] == PROVIDERS
    tooltips = {t["field"] for v in views(spec) for t in v["encoding"].get("tooltip", [])}
    assert {"provider", "bucket", field} <= tooltips
    assert tooltips & {"requests", "ok", "counted"}  # how many requests are behind each point
    rows = data_rows(spec)
    assert len(rows) == 1 and 0 < rows[0] <= charts.MAX_POINTS
    (values,) = spec["datasets"].values()
    sent = {"provider", "bucket", "time", field, "high", "segment", "requests", "ok", "counted", "failed", "weight"}
    assert set(values[0]) <= sent  # only what the chart draws is sent
    assert all(v[field] is not None for v in values)


def test_latency_is_a_p50_line_with_a_band_up_to_the_p95():
    series, start, end = series_for(attempts(5_000))
    spec = charts.latency_chart(series, start=start, end=end).to_dict()
    band, line = spec["layer"]
    assert mark_type(band) == "area" and band["encoding"]["y"]["field"] == "mid"
    assert band["encoding"]["y2"]["field"] == "high"
    assert mark_type(line) == "line" and line["encoding"]["y"]["field"] == "mid"
    assert spec["title"]["text"] == "Latency (ms) · p50, band to p95"
    (values,) = spec["datasets"].values()
    assert len(values) <= charts.MAX_POINTS
    drawn = {(v["provider"], pd.Timestamp(v["bucket"])): (v["mid"], v["high"]) for v in values}
    for row in series.dropna(subset=["p50_latency_ms"]).itertuples():
        assert drawn[(row.provider, row.bucket)] == pytest.approx((row.p50_latency_ms, row.p95_latency_ms))


def test_latencies_an_order_of_magnitude_apart_are_drawn_on_a_log_scale():
    # A local model at ~13 s beside APIs at ~0.5 s: on a linear axis the APIs are a flat line at 0.
    frame = attempts(2_000)
    slow = frame["provider"] == "local"
    frame.loc[slow, "latency_ms"] *= 40
    frame.loc[slow, "ttft_ms"] *= 40
    series, start, end = series_for(frame)
    for builder in (charts.latency_chart, charts.ttft_chart):
        spec = builder(series, start=start, end=end).to_dict()
        assert spec["layer"][1]["encoding"]["y"]["scale"] == {"type": "log"}, builder.__name__
        assert spec["title"]["text"].endswith("· log scale")
    close, _, _ = series_for(attempts(2_000))  # every provider within a few times of the others
    spec = charts.latency_chart(close, start=start, end=end).to_dict()
    assert "scale" not in spec["layer"][1]["encoding"]["y"] and "log" not in spec["title"]["text"]
    # One long wait sets a linear axis as surely as a slow provider does.
    spike = attempts(2_000)
    spike.loc[spike.index[spike["provider"] == "local"][:3], "ttft_ms"] = 60_000.0
    series, start, end = series_for(spike)
    assert charts.ttft_chart(series, start=start, end=end).to_dict()["title"]["text"].endswith("· log scale")


def test_time_to_first_token_has_its_p95_band_too():
    series, start, end = series_for(attempts(2_000))
    spec = charts.ttft_chart(series, start=start, end=end).to_dict()
    band, _ = spec["layer"]
    (values,) = spec["datasets"].values()
    assert band["encoding"]["y2"]["field"] == "high"
    assert all(v["high"] >= v["mid"] for v in values)
    assert spec["title"]["text"] == "Time to first token (ms) · p50, band to p95"


def test_latency_chart_falls_back_to_the_mean_from_sql_sums():
    aggregate = pd.DataFrame(
        {
            "provider": ["a"],
            "bucket": [pd.Timestamp(NOW - timedelta(minutes=5)).floor("60s")],
            "requests": [3],
            "ok": [3],
            "errors": [0],
            "incomplete": [0],
            "mean_latency_ms": [120.0],
            "latency_n": [3],
            "cost_usd": [0.0],
            "input_tokens": [1],
            "output_tokens": [1],
        }
    )
    start, end = dd.window_bounds(3600, NOW)
    series = dd.series_from_aggregate(aggregate, start=start, end=end, bucket_s=60)
    spec = charts.latency_chart(series).to_dict()
    (values,) = spec["datasets"].values()
    assert [v["mid"] for v in values] == [120.0] and "high" not in values[0]
    assert [mark_type(v) for v in views(spec)] == ["line"]  # no band without percentiles
    assert spec["title"]["text"] == "Latency (ms, mean)"


@pytest.mark.parametrize(("builder", "field"), ALL_TIME_SERIES)
def test_a_click_on_the_legend_isolates_a_provider(builder, field):
    series, start, end = series_for(attempts(2_000))
    spec = builder(series, providers=PROVIDERS, start=start, end=end).to_dict()
    (isolate,) = params(spec)
    assert isolate["name"] == charts.ISOLATE == "isolate"
    assert isolate["select"] == {"type": "point", "fields": ["provider"]} and isolate["bind"] == "legend"
    for view in views(spec):  # every mark fades unless its provider is the one isolated
        opacity = view["encoding"]["opacity"]
        conditions = opacity["condition"] if isinstance(opacity["condition"], list) else [opacity["condition"]]
        assert any(c.get("param") == "isolate" for c in conditions), mark_type(view)


def test_bands_are_faint_until_a_provider_is_isolated():
    series, _, _ = series_for(attempts(1_000))
    band = charts.latency_chart(series).to_dict()["layer"][0]
    isolated, none_isolated = band["encoding"]["opacity"]["condition"]
    assert isolated == {"param": "isolate", "empty": False, "value": pytest.approx(0.28)}
    assert none_isolated["test"] == "!length(data('isolate_store'))" and none_isolated["value"] < isolated["value"]
    assert band["encoding"]["opacity"]["value"] == 0  # another provider is isolated: its band goes


def test_success_rate_dots_say_how_many_requests_are_behind_them():
    frame = rows(
        (290, "a", "error", "timeout", None),  # one attempt, failed: 0%, but only one
        *[(170 - i, "a", "ok", None, 0.0) for i in range(12)],
        (165, "a", "error", "timeout", None),
    )
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=60)
    spec = charts.success_rate_chart(series).to_dict()
    line, dots = spec["layer"]
    assert mark_type(line) == "line" and mark_type(dots) == "circle"
    assert dots["encoding"]["size"]["field"] == "counted" and dots["encoding"]["size"]["scale"]["type"] == "sqrt"
    assert dots["encoding"]["opacity"]["condition"]["field"] == "weight"
    assert {"counted", "failed", "requests"} <= {t["field"] for t in dots["encoding"]["tooltip"]}
    (values,) = spec["datasets"].values()
    lone, busy = sorted(values, key=lambda v: v["counted"])
    assert (lone["success_rate"], lone["counted"], lone["failed"], lone["weight"]) == (0.0, 1, 1, 0.35)  # faded
    assert (busy["counted"], busy["failed"], busy["weight"]) == (13, 1, 1.0)
    assert "fewer than 5" in spec["title"]["subtitle"]


@pytest.mark.parametrize(("builder", "field"), ALL_TIME_SERIES)
def test_small_multiples_draw_one_row_per_provider(builder, field):
    series, start, end = series_for(attempts(2_000, providers=["anthropic", "gemini", "openai"]))
    spec = builder(series, providers=PROVIDERS, start=start, end=end, split=True).to_dict()
    rows = spec["vconcat"]
    # One row per provider with data (no "local" here, and no cost for gemini, whose price is
    # unknown), in the legend's order, in its colour.
    shown = ["anthropic", "openai"] if "cost" in field else ["anthropic", "gemini", "openai"]
    assert [row["title"]["text"] for row in rows] == shown
    for name, row in zip(shown, rows, strict=True):
        assert row["transform"] == [{"filter": {"field": "provider", "equal": name}}]
    assert spec["resolve"]["scale"] == {"x": "shared", "y": "shared", "color": "shared"}
    assert len(data_rows(spec)) == 1  # one dataset for every row
    assert not params(spec)  # no legend to click
    for n, row in enumerate(rows):
        for view in views(row):
            assert view["encoding"]["color"]["legend"] is None
            assert view["encoding"]["color"]["scale"]["domain"] == PROVIDERS
            assert view["encoding"]["x"]["axis"].get("labels", True) is (n == len(rows) - 1)  # the bottom row's
            # Values labelled inside the plot: Streamlit gives each row's plot the column's width.
            assert view["encoding"]["y"]["axis"]["labelPadding"] < 0


def test_small_multiples_of_an_empty_series_are_one_empty_chart():
    series, start, end = series_for(attempts(0))
    spec = charts.latency_chart(series, start=start, end=end, split=True).to_dict()
    assert "vconcat" not in spec and data_rows(spec) == [0]


def test_cost_charts_say_which_answers_have_no_price():
    series, start, end = series_for(attempts(2_000))  # gemini's price is unknown in these attempts
    unpriced = int(series.loc[series.provider == "gemini", "unpriced"].sum())
    for builder in (charts.cumulative_cost_chart, charts.cost_per_request_chart):
        spec = builder(series, providers=PROVIDERS, start=start, end=end).to_dict()
        assert spec["title"]["subtitle"] == f"Price unknown, not counted: {unpriced:,} answers from gemini"
        (values,) = spec["datasets"].values()
        assert "gemini" not in {v["provider"] for v in values}  # no line at $0 for it
    priced = series[series.provider != "gemini"]
    assert "subtitle" not in charts.cumulative_cost_chart(priced).to_dict()["title"]


def test_steps_run_to_the_end_of_the_window():
    start, end = NOW - timedelta(minutes=59, seconds=40), NOW + timedelta(seconds=20)  # ends 20 s into a bucket
    series, _ = dd.series_from_frame(attempts(1_000), start=start, end=end)
    (values,) = charts.requests_per_minute_chart(series, start=start, end=end).to_dict()["datasets"].values()
    last = {v["provider"]: v["bucket"] for v in values if pd.Timestamp(v["bucket"]) == pd.Timestamp(end)}
    assert set(last) == set(PROVIDERS)


def test_success_rate_axis_is_a_percentage_from_0_to_1():
    series, _, _ = series_for(attempts(1_000))
    y = main_view(charts.success_rate_chart(series).to_dict())["encoding"]["y"]
    assert y["axis"]["format"] == "%" and y["scale"]["domain"] == [0, 1]


def test_every_chart_bounds_a_raw_oversized_input():
    # A caller that passes far too many rows still sends at most MAX_POINTS.
    n = 3 * charts.MAX_POINTS
    raw = pd.DataFrame(
        {
            "provider": np.asarray(PROVIDERS, dtype=object)[np.arange(n) % 4],
            "bucket": pd.date_range(NOW - timedelta(days=1), NOW, periods=n, tz="UTC"),
            **{
                name: np.random.default_rng(0).random(n)
                for name in dd.SERIES_COLUMNS
                if name not in ("provider", "bucket", "time")
            },
        }
    )
    for builder, _ in ALL_TIME_SERIES:
        for split in (False, True):
            rows = data_rows(builder(raw, end=NOW, start=NOW - timedelta(days=1), split=split).to_dict())
            assert max(rows) <= charts.MAX_POINTS, builder.__name__
    bounded = charts.bound_points(raw)
    assert len(bounded) == charts.MAX_POINTS and bounded.index[0] == 0 and bounded.index[-1] == n - 1


def test_charts_accept_an_empty_series():
    series, start, end = series_for(attempts(0))
    for builder, _ in ALL_TIME_SERIES:
        spec = builder(series, start=start, end=end).to_dict()
        assert data_rows(spec) == [0]


def test_win_rate_chart():
    table = dd.win_rates([Vote(group_id="1", targets=["a/x", "b/y"], winner="b/y")])
    spec = charts.win_rate_chart(table).to_dict()
    assert spec["mark"]["type"] == "bar"
    assert spec["encoding"]["x"]["field"] == "win_rate" and spec["encoding"]["x"]["axis"]["format"] == "%"
    assert spec["encoding"]["y"]["field"] == "target" and spec["encoding"]["y"]["sort"] == ["b/y", "a/x"]
    (values,) = spec["datasets"].values()
    assert [(v["target"], v["win_rate"]) for v in values] == [("b/y", 1.0), ("a/x", 0.0)]


def test_dashboard_tiles_show_big_numbers_compactly():
    # A tile is a sixth of the page: "1,000,000" and "$45.471234" would be cut off there.
    assert [dd.compact_count(n) for n in (0, 99_999, 100_000, 299_878, 1_000_000, 12_345_678)] == [
        "0",
        "99,999",
        "100.0k",
        "299.9k",
        "1M",
        "12.3M",
    ]
    from playground.components import format_total_cost

    assert [format_total_cost(c) for c in (0.0, 0.000123, 0.0123, 45.471234, 1234.5, 250_000.0)] == [
        "free",
        "$0.000123",
        "$0.0123",
        "$45.47",
        "$1,234.50",
        "$250.0k",
    ]


# --- figures that tell the truth (issue 11, point 7) ---------------------------------------------


def rows(*items: tuple[float, str, str, str | None, float | None]) -> pd.DataFrame:
    """Attempts as (seconds before NOW, provider, status, error_type, cost)."""
    return pd.DataFrame(
        {
            "created_at": pd.to_datetime([NOW.timestamp() - s for s, *_ in items], unit="s", utc=True),
            "provider": [p for _, p, *_ in items],
            "status": [st for _, _, st, *_ in items],
            "error_type": [e for *_, e, _ in items],
            "latency_ms": [100.0] * len(items),
            "ttft_ms": [20.0] * len(items),
            "output_tokens": [10] * len(items),
            "cost_usd": [c for *_, c in items],
        }
    )


def test_tokens_per_second_needs_two_tokens():
    frame = rows((30, "a", "ok", None, 0.0))
    frame["output_tokens"] = [1]  # one token: no speed can be measured from it
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=300)
    assert series["tokens_per_second"].isna().all()


def test_the_rollup_path_leaves_out_failures_the_request_caused_too():
    aggregate = pd.DataFrame(
        {
            "provider": ["a"],
            "bucket": [pd.Timestamp(NOW - timedelta(minutes=2)).floor("60s")],
            "requests": [4],
            "ok": [2],
            "errors": [2],
            "incomplete": [0],
            "not_at_fault": [1],
            "priced": [2],
            "cost_usd": [0.0],
        }
    )
    series = dd.series_from_aggregate(aggregate, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=60)
    row = series[series.requests > 0].iloc[0]
    assert (row.requests, row.counted) == (4, 3) and row.success_rate == pytest.approx(2 / 3)


def test_failures_the_request_caused_do_not_lower_the_success_rate():
    frame = rows(
        (30, "a", "ok", None, 1e-4),
        (29, "a", "error", "bad_request", None),  # a context overflow: the request's fault
        (28, "a", "incomplete", "cancelled", None),  # stopped by the person
        (27, "a", "error", "timeout", None),  # the provider's fault
        (26, "a", "ok", None, 1e-4),
    )
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=300)
    row = series[series.requests > 0].iloc[0]
    assert (row.requests, row.ok, row.counted) == (5, 2, 3)
    assert row.success_rate == pytest.approx(2 / 3)
    totals = dd.summary(series)
    assert totals["requests"] == 5 and totals["success_rate"] == pytest.approx(2 / 3)


def test_requests_are_counted_apart_from_their_attempts_on_both_paths():
    """A request retried once and one that fell back to another provider: 2 requests, 4
    attempts (an attempt of unknown position counts as a request of its own)."""
    frame = rows(
        (40, "a", "error", "unavailable", None),
        (39, "a", "ok", None, 1e-4),  # the retry
        (30, "a", "error", "authentication", None),
        (29, "b", "ok", None, None),  # the fallback
        (10, "b", "ok", None, None),  # written without a position
    )
    frame["attempt_index"] = [0.0, 1.0, 0.0, 1.0, float("nan")]
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=300)
    totals = dd.summary(series)
    assert (totals["requests"], totals["first_attempts"]) == (5, 3)
    assert totals["first_attempts_per_min"] == pytest.approx(totals["requests_per_min"] * 3 / 5)
    aggregate = pd.DataFrame(
        {
            "provider": ["a", "b"],
            "bucket": [pd.Timestamp(NOW - timedelta(minutes=2)).floor("60s")] * 2,
            "requests": [3, 2],
            "first_attempts": [2, 1],
            "ok": [1, 2],
            "not_at_fault": [0, 0],
            "priced": [1, 0],
            "cost_usd": [1e-4, 0.0],
        }
    )
    series = dd.series_from_aggregate(aggregate, start=NOW - timedelta(minutes=5), end=NOW, bucket_s=60)
    totals = dd.summary(series)
    assert (totals["requests"], totals["first_attempts"]) == (5, 3)


def test_a_total_with_unpriced_answers_says_so():
    frame = rows(
        (30, "a", "ok", None, 0.0),
        (20, "b", "ok", None, None),
        (10, "b", "ok", None, None),
        (5, "b", "error", "timeout", None),
    )
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=5), end=NOW)
    totals = dd.summary(series)
    assert totals["unpriced"] == 2  # successes with no price; a failure has no cost to know
    from playground.components import format_total_cost

    assert dd.cost_tile(totals["cost_usd"], totals["unpriced"], totals["requests"], format_total_cost) == (
        "$0",
        "+ 2 unpriced",
    )
    assert dd.cost_tile(0.0123, 0, 4, format_total_cost) == ("$0.0123", None)
    assert dd.cost_tile(0.0, 0, 4, format_total_cost) == ("free", None)
    assert dd.cost_tile(0.0, 0, 0, format_total_cost) == ("$0", None)


def test_lines_are_straight_and_break_where_there_is_no_data():
    # Success rate measured in two buckets ten minutes apart, and one lone bucket for b.
    frame = rows(
        (600, "a", "ok", None, 0.0),
        (590, "a", "error", "timeout", None),
        (30, "a", "ok", None, 0.0),
        (300, "b", "ok", None, 0.0),
    )
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=15), end=NOW, bucket_s=60)
    spec = charts.success_rate_chart(series, start=NOW - timedelta(minutes=15), end=NOW).to_dict()
    line, dots = views(spec)
    assert line["mark"]["type"] == "line" and line["mark"]["interpolate"] == "linear"
    assert line["encoding"]["detail"]["field"] == "segment"  # one path per run of buckets with data
    assert dots["mark"]["type"] == "circle"  # every point a dot: a lone bucket still shows
    (values,) = spec["datasets"].values()
    a = [v for v in values if v["provider"] == "a"]
    assert [v["success_rate"] for v in a] == [0.5, 1.0]
    assert a[0]["segment"] != a[1]["segment"]  # not joined across the 9 empty minutes
    assert len({v["segment"] for v in values}) == 3
    # Latency breaks the same way, and its band too.
    latency = charts.latency_chart(series).to_dict()
    assert {v["encoding"]["detail"]["field"] for v in views(latency)} == {"segment"}
    (points,) = latency["datasets"].values()
    assert len({v["segment"] for v in points if v["provider"] == "a"}) == 2
    tokens = charts.tokens_per_second_chart(series).to_dict()
    assert tokens["mark"]["point"]["filled"]  # a line chart's lone point is a dot


def test_consecutive_buckets_make_one_segment():
    frame = rows(*[(60 * i + 5, "a", "ok", None, 0.0) for i in range(5)])
    series, _ = dd.series_from_frame(frame, start=NOW - timedelta(minutes=10), end=NOW, bucket_s=60)
    (values,) = charts.success_rate_chart(series).to_dict()["datasets"].values()
    assert len(values) == 5 and len({v["segment"] for v in values}) == 1


def test_legends_wrap_so_eight_providers_stay_readable():
    eight = [f"provider-{i}" for i in range(8)]
    series, start, end = series_for(attempts(2_000, providers=eight))
    for builder, _ in ALL_TIME_SERIES:
        spec = builder(series, providers=eight, start=start, end=end).to_dict()
        legend = main_view(spec)["encoding"]["color"]["legend"]
        assert legend["orient"] == "bottom" and legend["columns"] == 3 and legend["labelLimit"] >= 100, builder.__name__
        assert legend["symbolOpacity"] == 1  # not as faint as a band
        assert main_view(spec)["encoding"]["color"]["scale"]["domain"] == eight
