"""Chart builders: a data frame in, an Altair chart out. Pure (no Streamlit), tested with
`chart.to_dict()`.

Lines are straight segments between real points, broken where a bucket has no data (a
success rate measured at 12:00 and at 12:10 is two points, not a curve through 12:05);
every point is a dot, so a bucket with no neighbour still shows. Counts per bucket are steps. Legends wrap
into rows, so eight providers stay readable.

Every builder sends at most `MAX_POINTS` rows to the browser: the dashboard's series are
already bounded (`dashboard_data`), and each builder bounds its input again, evenly, so a
caller that passes a raw frame cannot flood the page either.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import altair as alt
import numpy as np
import pandas as pd

__all__ = [
    "MAX_POINTS",
    "bound_points",
    "latency_chart",
    "metric_chart",
    "success_rate_chart",
    "ttft_chart",
    "tokens_per_second_chart",
    "cumulative_cost_chart",
    "cost_per_request_chart",
    "requests_per_minute_chart",
    "win_rate_chart",
]

#: Most data points one chart sends to the browser.
MAX_POINTS = 5_000

# Streamlit fits the whole chart (title, axis, legend) into the height: more legend rows
# take more of it, so the height grows with them (`_height`).
_HEIGHT = 270
_LEGEND_ROW_PX = 18
# A grid of at most three columns: eight providers are three short rows, and a phone's
# narrow chart still shows every name (cut to 110 px with an ellipsis at worst).
_LEGEND_OPTIONS = dict(orient="bottom", title=None, columns=3, labelLimit=110, columnPadding=12, rowPadding=4)
_LEGEND = alt.Legend(symbolType="stroke", symbolStrokeWidth=3, **_LEGEND_OPTIONS)
_AREA_LEGEND = alt.Legend(symbolType="square", **_LEGEND_OPTIONS)
# Bigger dots on a line while they are few enough to read.
_POINTS_PER_LINE = 40


def _height(legend_entries: int) -> int:
    rows = max(1, -(-legend_entries // _LEGEND_OPTIONS["columns"]))
    return _HEIGHT + _LEGEND_ROW_PX * (rows - 1)


def _dots(frame: pd.DataFrame) -> alt.OverlayMarkDef:
    """Readable dots while they are few; small ones (still showing a lone point) when many."""
    lines = max(1, frame["provider"].nunique()) if "provider" in frame and len(frame) else 1
    return alt.OverlayMarkDef(size=22 if len(frame) / lines <= _POINTS_PER_LINE else 8, filled=True)


def bound_points(frame: pd.DataFrame, max_points: int = MAX_POINTS) -> pd.DataFrame:
    """`frame` itself when small enough, else evenly spaced rows (first and last kept)."""
    if len(frame) <= max_points:
        return frame
    positions = np.unique(np.linspace(0, len(frame) - 1, num=max_points).round().astype("int64"))
    return frame.iloc[positions]


def _domain(providers: Sequence[str] | None, frame: pd.DataFrame) -> list[str]:
    if providers:
        return list(providers)
    return sorted(frame["provider"].dropna().unique().tolist()) if "provider" in frame else []


def _x(start: datetime | None, end: datetime | None) -> alt.X:
    if start is None or end is None:
        return alt.X("bucket:T", title=None, axis=alt.Axis(labelOverlap=True, grid=False))
    # Clock times for short windows, dates for long ones; the domain is the whole window,
    # so a live chart moves with time even when no request arrives.
    span_s = (end - start).total_seconds()
    fmt = "%H:%M:%S" if span_s <= 600 else "%H:%M" if span_s <= 2 * 86400 else "%b %d"
    return alt.X(
        "bucket:T",
        title=None,
        scale=alt.Scale(domain=[start.isoformat(), end.isoformat()]),
        axis=alt.Axis(format=fmt, labelOverlap=True, grid=False, tickCount=6),
    )


def _line_codes(data: pd.DataFrame, keys: list[str]) -> np.ndarray:
    """One integer per line (the combination of `keys`)."""
    codes = np.zeros(len(data), dtype="int64")
    for key in keys:
        part, uniques = pd.factorize(data[key], use_na_sentinel=False)
        codes = codes * max(1, len(uniques)) + part
    return codes


def _prepare(
    frame: pd.DataFrame, columns: list[str], value: str | None, *, by: Sequence[str] = ("provider",)
) -> pd.DataFrame:
    """The rows with a value, each tagged with its `segment` (an integer): a run of
    consecutive buckets with data on one line (`by`). A bucket without data ends a segment,
    so the line breaks there. Vectorised, and no sort when the rows already come line by
    line in time order (the dashboard's series do): eight of these run on each refresh."""
    data = frame.loc[:, [c for c in columns if c in frame]] if not frame.empty else pd.DataFrame(columns=columns)
    data = data.reset_index(drop=True)
    keys = [k for k in by if k in data]
    if value is None or value not in data or not len(data):
        data["segment"] = np.zeros(len(data), dtype="int64")
        return bound_points(data)
    line = _line_codes(data, keys)
    changes = np.empty(len(data), dtype=bool)
    changes[0] = True
    changes[1:] = line[1:] != line[:-1]
    times = data["bucket"].to_numpy() if "bucket" in data else None
    ordered = int(changes.sum()) == len(np.unique(line)) and (
        times is None or bool(np.all(changes[1:] | (times[1:] >= times[:-1])))
    )
    if not ordered:
        order = np.lexsort((times, line)) if times is not None else np.argsort(line, kind="stable")
        data, line = data.iloc[order].reset_index(drop=True), line[order]
        changes[1:] = line[1:] != line[:-1]
    try:
        values = data[value].to_numpy(dtype="float64", na_value=np.nan)
    except (TypeError, ValueError):
        values = pd.to_numeric(data[value], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    finite = np.isfinite(values)
    starts = changes.copy()
    starts[1:] |= ~finite[:-1]  # a new line, or the row after a gap
    data["segment"] = np.cumsum(starts) - 1
    return bound_points(data[finite].reset_index(drop=True))


def _lines(base: alt.Chart, data: pd.DataFrame, encodings: dict, *, interpolate: str = "linear") -> alt.Chart:
    """Straight segments, one path per `segment` (so gaps stay gaps), with a dot on every
    point: a point with no neighbour draws no line, and each dot is a bucket with data.
    One mark, not a layer: a layered spec costs Altair twice the validation on each refresh."""
    return base.mark_line(interpolate=interpolate, strokeWidth=2, point=_dots(data)).encode(
        detail="segment:N", **encodings
    )


def metric_chart(
    series: pd.DataFrame,
    field: str,
    *,
    title: str,
    axis_format: str | None = None,
    providers: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    mark: str = "line",
    y_domain: Sequence[float] | None = None,
) -> alt.Chart | alt.LayerChart:
    """One value per provider over time: a line per provider ("line"), stacked steps
    ("area"), or a running total ("step")."""
    data = _prepare(series, ["provider", "bucket", field], field)
    color = alt.Color(
        "provider:N",
        scale=alt.Scale(domain=_domain(providers, data)),
        legend=_AREA_LEGEND if mark == "area" else _LEGEND,
    )
    y = alt.Y(
        f"{field}:Q",
        title=None,
        axis=alt.Axis(format=axis_format) if axis_format else alt.Axis(),
        scale=alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined,
    )
    tooltip = [
        alt.Tooltip("provider:N", title="Provider"),
        alt.Tooltip("bucket:T", title="Time", format="%H:%M:%S"),
        alt.Tooltip(f"{field}:Q", title=title, format=axis_format or ",.2f"),
    ]
    base = alt.Chart(data)
    if mark == "area":
        # Stacked steps: each bucket reads like a bar, and quiet buckets drop to zero.
        chart = base.mark_area(opacity=0.8, interpolate="step-after").encode(
            x=_x(start, end), y=y.stack(True), color=color, tooltip=tooltip
        )
    elif mark == "step":
        # A running total is known at every bucket: one unbroken step line.
        chart = base.mark_line(interpolate="step-after", strokeWidth=2).encode(
            x=_x(start, end), y=y, color=color, tooltip=tooltip, detail="segment:N"
        )
    else:
        chart = _lines(base, data, {"x": _x(start, end), "y": y, "color": color, "tooltip": tooltip})
    return chart.properties(
        height=_height(len(_domain(providers, data))), title=alt.TitleParams(title, anchor="start", fontSize=14)
    )


def latency_chart(
    series: pd.DataFrame,
    *,
    providers: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
) -> alt.Chart:
    """p50 (solid) and p95 (dashed) latency per provider over time. When only the mean is
    known (series built from the per-minute rollups), the mean is drawn instead."""
    columns = ["p50_latency_ms", "p95_latency_ms"]
    has_percentiles = not series.empty and series[[c for c in columns if c in series]].notna().to_numpy().any()
    if not has_percentiles and "mean_latency_ms" in series and series["mean_latency_ms"].notna().any():
        columns = ["mean_latency_ms"]
    names = {"p50_latency_ms": "p50", "p95_latency_ms": "p95", "mean_latency_ms": "mean"}
    wide = (
        series.loc[:, ["provider", "bucket", *[c for c in columns if c in series]]]
        if not series.empty
        else pd.DataFrame(columns=["provider", "bucket", *columns])
    )
    long = wide.melt(id_vars=["provider", "bucket"], var_name="percentile", value_name="latency_ms")
    long["percentile"] = long["percentile"].map(names)
    long = _prepare(
        long, ["provider", "bucket", "percentile", "latency_ms"], "latency_ms", by=("provider", "percentile")
    )
    color = alt.Color("provider:N", scale=alt.Scale(domain=_domain(providers, long)), legend=_LEGEND)
    shown = [names[c] for c in columns]
    title = "Latency (ms) · p50 solid, p95 dashed" if len(shown) > 1 else "Latency (ms) · mean"
    dashes = {"p50": [1, 0], "p95": [5, 3], "mean": [1, 0]}
    dash = alt.StrokeDash(
        "percentile:N",
        scale=alt.Scale(domain=shown, range=[dashes[name] for name in shown]),
        legend=None,  # the title says which line is which
    )
    base = alt.Chart(long)
    encodings = {
        "x": _x(start, end),
        "y": alt.Y("latency_ms:Q", title=None),
        "color": color,
        "strokeDash": dash,
        "tooltip": [
            alt.Tooltip("provider:N", title="Provider"),
            alt.Tooltip("percentile:N", title="Percentile"),
            alt.Tooltip("bucket:T", title="Time", format="%H:%M:%S"),
            alt.Tooltip("latency_ms:Q", title="Latency (ms)", format=",.0f"),
        ],
    }
    return _lines(base, long, encodings).properties(
        height=_height(len(_domain(providers, long))), title=alt.TitleParams(title, anchor="start", fontSize=14)
    )


def success_rate_chart(series: pd.DataFrame, **kwargs) -> alt.LayerChart:
    """Successes over the attempts that count against a provider (not bad requests or stopped answers)."""
    return metric_chart(series, "success_rate", title="Success rate", axis_format="%", y_domain=(0, 1), **kwargs)


def ttft_chart(series: pd.DataFrame, **kwargs) -> alt.Chart:
    """p50 time to first token; the mean when only sums are known (a window read from rollups)."""
    has_p50 = "p50_ttft_ms" in series and series["p50_ttft_ms"].notna().any()
    has_mean = "mean_ttft_ms" in series and series["mean_ttft_ms"].notna().any()
    if has_mean and not has_p50:
        return metric_chart(
            series, "mean_ttft_ms", title="Time to first token (ms, mean)", axis_format=",.0f", **kwargs
        )
    return metric_chart(series, "p50_ttft_ms", title="Time to first token (ms, p50)", axis_format=",.0f", **kwargs)


def tokens_per_second_chart(series: pd.DataFrame, **kwargs) -> alt.Chart:
    return metric_chart(series, "tokens_per_second", title="Tokens per second", axis_format=",.0f", **kwargs)


def cumulative_cost_chart(series: pd.DataFrame, **kwargs) -> alt.Chart:
    return metric_chart(
        series,
        "cumulative_cost_usd",
        title="Estimated cost, cumulative ($)",
        axis_format="$,.4f",
        mark="step",
        **kwargs,
    )


def cost_per_request_chart(series: pd.DataFrame, **kwargs) -> alt.Chart:
    return metric_chart(
        series, "cost_per_request_usd", title="Estimated cost per request ($)", axis_format="$,.5f", **kwargs
    )


def requests_per_minute_chart(series: pd.DataFrame, **kwargs) -> alt.Chart:
    return metric_chart(
        series, "requests_per_min", title="Requests per minute", axis_format=",.1f", mark="area", **kwargs
    )


def win_rate_chart(table: pd.DataFrame) -> alt.Chart:
    """Win rate per compare target (from `dashboard_data.win_rates`), best first."""
    data = bound_points(
        table.loc[:, [c for c in ("target", "win_rate", "wins", "votes", "ties") if c in table]].reset_index(drop=True)
    )
    order = data["target"].tolist() if "target" in data else []
    bars = (
        alt.Chart(data, title=alt.TitleParams("Win rate from compare votes", anchor="start", fontSize=14))
        .mark_bar(cornerRadiusEnd=4, size=18)
        .encode(
            y=alt.Y("target:N", sort=order, title=None, axis=alt.Axis(labelLimit=220)),
            x=alt.X("win_rate:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("target:N", legend=None),
            tooltip=[
                alt.Tooltip("target:N", title="Target"),
                alt.Tooltip("win_rate:Q", title="Win rate", format=".0%"),
                alt.Tooltip("wins:Q", title="Wins"),
                alt.Tooltip("votes:Q", title="Votes"),
            ],
        )
    )
    # The height includes the title and the axis (Streamlit fits the chart to it).
    return bars.properties(height=48 * max(1, len(data)) + 90, padding={"left": 12, "right": 8, "top": 4, "bottom": 4})
