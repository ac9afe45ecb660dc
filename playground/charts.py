"""Chart builders: a data frame in, an Altair chart out. Pure (no Streamlit), tested with
`chart.to_dict()`.

Made to be read at a glance, with 6-8 providers over an hour:

* **A few dozen points per line** (`dashboard_data` sizes the buckets), each drawn in the
  middle of its bucket. Lines are straight segments between real points, broken where a
  bucket has no data (a success rate measured at 12:00 and at 12:10 is two points, not a
  curve through 12:05); every point is a dot, so a bucket with no neighbour still shows.
* **p50 as a line, p95 as a band** above it (latency, time to first token). The bands are
  faint while every provider shows, and stand out for an isolated one. When the top of the
  axis is more than `LOG_SCALE_SPREAD` times the fastest provider's typical p50, the axis is
  logarithmic (and the title says so): a slow local model or one long spike does not
  flatten the others onto the axis.
* **A click on a legend entry isolates that provider** (the others fade; shift-click adds
  one, a double-click shows all again): a point selection named `ISOLATE`, bound to the
  legend. The page shows these charts with `on_select="rerun"` so that Streamlit keeps the
  selection when the live refresh redraws the chart (with "ignore" it is lost every 2 s).
* **Small multiples** (`split=True`): one short row per provider, on shared axes, instead of
  one tangle. A vertical concatenation, so Streamlit still stretches it to the column.
* **The requests behind a success rate**: dots sized by the attempts they count, faded under
  `FEW_REQUESTS`, with the counts in the tooltip (a 0% from one request is not an outage).
* **Unknown is not zero**: a provider with no known price has no cost line (not a flat $0),
  and the cost charts say which answers are unpriced.

Counts per bucket are steps. Legends wrap into rows, so eight providers stay readable.
Every builder sends at most `MAX_POINTS` rows to the browser: the dashboard's series are
already bounded (`dashboard_data`), and each builder bounds its input again, evenly, so a
caller that passes a raw frame cannot flood the page either.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

import altair as alt
import numpy as np
import pandas as pd

__all__ = [
    "MAX_POINTS",
    "ISOLATE",
    "FEW_REQUESTS",
    "LOG_SCALE_SPREAD",
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
#: The name of the legend selection that isolates a provider.
ISOLATE = "isolate"
#: A success rate from fewer attempts than this is drawn faded.
FEW_REQUESTS = 5
#: From this many attempts on, a success-rate dot has its full size.
_FULL_DOT_REQUESTS = 20

# Streamlit fits the whole chart (title, axis, legend) into the height: more legend rows
# take more of it, so the height grows with them (`_height`).
_HEIGHT = 290
_LEGEND_ROW_PX = 18
# One row of the small multiples.
_ROW_HEIGHT = 64
# A grid of at most three columns: eight providers are three short rows, and a phone's
# narrow chart still shows every name (cut to 110 px with an ellipsis at worst).
_LEGEND_OPTIONS = dict(orient="bottom", title=None, columns=3, labelLimit=110, columnPadding=12, rowPadding=4)
# Full-strength symbols: a legend merged from a faint band would otherwise be faint too.
_LEGEND = alt.Legend(symbolType="stroke", symbolStrokeWidth=3, symbolOpacity=1, **_LEGEND_OPTIONS)
_AREA_LEGEND = alt.Legend(symbolType="square", symbolOpacity=1, **_LEGEND_OPTIONS)
# Bigger dots on a line while they are few enough to read.
_POINTS_PER_LINE = 40
# How much of a provider shows when another one is isolated.
_FADED = 0.08

#: What a time-series builder returns: one view, a layer, or small multiples.
TimeChart = alt.Chart | alt.LayerChart | alt.VConcatChart
Layers = Callable[[alt.X, alt.Color, "alt.Parameter | None"], alt.Chart | alt.LayerChart]


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


def _time_format(start: datetime | None, end: datetime | None) -> str:
    """Clock times for short windows, dates for long ones."""
    if start is None or end is None:
        return "%H:%M:%S"
    span_s = (end - start).total_seconds()
    return "%H:%M:%S" if span_s <= 600 else "%H:%M" if span_s <= 2 * 86400 else "%b %d"


def _x(start: datetime | None, end: datetime | None, field: str = "time", *, labels: bool = True) -> alt.X:
    axis = alt.Axis(format=_time_format(start, end), labelOverlap=True, grid=False, tickCount=6)
    if not labels:  # the upper rows of small multiples: the bottom row's axis reads for all
        axis = alt.Axis(labels=False, ticks=False, domain=False, grid=False, tickCount=6)
    if start is None or end is None:
        return alt.X(f"{field}:T", title=None, axis=axis)
    # The domain is the whole window, so a live chart moves with time even when no request arrives.
    return alt.X(f"{field}:T", title=None, scale=alt.Scale(domain=[start.isoformat(), end.isoformat()]), axis=axis)


def _when(start: datetime | None, end: datetime | None) -> alt.Tooltip:
    """The bucket's start, in the tooltip."""
    fmt = _time_format(start, end)
    return alt.Tooltip("bucket:T", title="From", format="%b %d %H:%M" if fmt == "%b %d" else fmt)


def _y_axis(fmt: str | None, *, split: bool, ticks: int = 4) -> alt.Axis:
    """A value axis. In small multiples its labels sit inside the plot, above their grid
    lines: Streamlit gives each row the column's whole width for its plot, so labels beside
    it would push the rows past the column's edge."""
    if not split:
        return alt.Axis(format=fmt, tickCount=ticks) if fmt else alt.Axis(tickCount=ticks)
    return alt.Axis(
        format=fmt or alt.Undefined,
        tickCount=2,
        ticks=False,
        domain=False,
        labelAlign="left",
        labelBaseline="bottom",
        labelPadding=-4,
        labelFontSize=10,
        labelColor="#6b6f80",
    )


def _title(text: str, subtitle: str | None = None) -> alt.TitleParams:
    if not subtitle:
        return alt.TitleParams(text, anchor="start", fontSize=14)
    return alt.TitleParams(
        text, subtitle=subtitle, anchor="start", fontSize=14, subtitleFontSize=11, subtitleColor="#6b6f80"
    )


def _isolate() -> alt.Parameter:
    return alt.selection_point(name=ISOLATE, fields=["provider"], bind="legend")


# Encodings are given as typed channel objects, never as the dicts `alt.value` and
# `alt.condition` return: Altair resolves a dict against the whole schema (~15 ms each), and
# eight charts are built on every refresh.
_SEGMENT = alt.Detail("segment:N")


def _opacity(pick: alt.Parameter | None, shown: float) -> alt.OpacityValue:
    """`shown` for the isolated provider (or every provider while none is), faded otherwise."""
    if pick is None:
        return alt.OpacityValue(shown)
    return alt.OpacityValue(_FADED, condition={"param": ISOLATE, "value": shown})


def _band_opacity(pick: alt.Parameter | None) -> Any:
    """A p95 band: faint while every provider shows (eight bands must not hide the lines),
    clear for an isolated provider, gone for the others."""
    if pick is None:
        return alt.OpacityValue(0.22)
    return alt.OpacityValue(
        0.0,
        condition=[
            {"param": ISOLATE, "empty": False, "value": 0.28},
            {"test": f"!length(data('{ISOLATE}_store'))", "value": 0.1},
        ],
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
    if "time" in columns and "time" not in frame and "bucket" in frame:  # a series without point times
        frame = frame.assign(time=frame["bucket"])
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


def _time_chart(
    data: pd.DataFrame,
    layers: Layers,
    *,
    title: str,
    subtitle: str | None = None,
    providers: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    split: bool,
    legend: alt.Legend = _LEGEND,
    x_field: str = "time",
) -> TimeChart:
    """One chart whose legend isolates a provider, or (`split`) one row per provider with
    data, on shared axes: `layers(x, color, pick)` draws what one chart shows, without data.

    Built for the refresh's sake (eight charts every 2 seconds, per open dashboard): the data
    is set once on the finished chart (Altair copies every layer that carries its own), what
    layers share is encoded once on the layer, and height and title are set on the chart
    just built instead of through .properties() (a copy and a validation each)."""
    domain = _domain(providers, data)
    scale = alt.Scale(domain=domain)
    shown = [name for name in domain if name in set(data["provider"])] if split and len(data) else []
    if not shown:
        pick = _isolate()
        chart = layers(_x(start, end, x_field), alt.Color("provider:N", scale=scale, legend=legend), pick)
        chart.data, chart.height, chart.title = data, _height(len(domain)), _title(title, subtitle)
        return chart
    rows = []
    for n, name in enumerate(shown):
        x = _x(start, end, x_field, labels=n == len(shown) - 1)
        row = layers(x, alt.Color("provider:N", scale=scale, legend=None), None)
        row = row.transform_filter(alt.FieldEqualPredicate(field="provider", equal=name))
        row.height, row.title = _ROW_HEIGHT, alt.TitleParams(name, anchor="start", fontSize=12)
        rows.append(row)
    return (
        alt.vconcat(*rows, data=data, spacing=6, title=_title(title, subtitle))
        .resolve_scale(x="shared", y="shared", color="shared")
        .resolve_axis(x="independent", y="independent")
    )


def metric_chart(
    series: pd.DataFrame,
    field: str,
    *,
    title: str,
    subtitle: str | None = None,
    axis_format: str | None = None,
    providers: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    mark: str = "line",
    y_domain: Sequence[float] | None = None,
    split: bool = False,
) -> TimeChart:
    """One value per provider over time: a line per provider ("line"), stacked steps
    ("area"), or a running total ("step")."""
    steps = mark in ("area", "step")
    data = _prepare(series, ["provider", "bucket", "time", "requests", field], field)
    if steps and end is not None and len(data):
        # Steps start at their bucket's start, so the last one would end where it begins:
        # each line's last value is carried to the window's end.
        data = bound_points(data, MAX_POINTS - data["segment"].nunique())
        last = data.groupby("segment", sort=False).tail(1)
        last = last[last["bucket"] < pd.Timestamp(end)].assign(bucket=pd.Timestamp(end))
        data = pd.concat([data, last], ignore_index=True)
    y = alt.Y(
        f"{field}:Q",
        title=None,
        axis=_y_axis(axis_format, split=split),
        scale=alt.Scale(domain=list(y_domain)) if y_domain else alt.Undefined,
    )
    tooltip = [
        alt.Tooltip("provider:N", title="Provider"),
        _when(start, end),
        alt.Tooltip(f"{field}:Q", title=title, format=axis_format or ",.2f"),
        alt.Tooltip("requests:Q", title="Requests", format=","),
    ]

    def layers(x: alt.X, color: alt.Color, pick: alt.Parameter | None) -> alt.Chart:
        base = alt.Chart()
        if mark == "area":
            # Stacked steps: each bucket reads like a bar, and quiet buckets drop to zero.
            chart = base.mark_area(interpolate="step-after", clip=True).encode(
                x=x, y=y.stack(True), color=color, opacity=_opacity(pick, 0.85), tooltip=tooltip
            )
        elif mark == "step":
            # A running total is known at every bucket from the first priced one: one step line.
            chart = base.mark_line(interpolate="step-after", strokeWidth=2, clip=True).encode(
                x=x, y=y, color=color, opacity=_opacity(pick, 1.0), tooltip=tooltip, detail=_SEGMENT
            )
        else:
            chart = base.mark_line(interpolate="linear", strokeWidth=2, point=_dots(data)).encode(
                x=x, y=y, color=color, opacity=_opacity(pick, 1.0), tooltip=tooltip, detail=_SEGMENT
            )
        return chart.add_params(pick) if pick is not None else chart

    return _time_chart(
        data,
        layers,
        title=title,
        subtitle=subtitle,
        providers=providers,
        start=start,
        end=end,
        split=split,
        legend=_AREA_LEGEND if mark == "area" else _LEGEND,
        x_field="bucket" if steps else "time",
    )


def _band_chart(
    series: pd.DataFrame,
    *,
    p50: str,
    p95: str,
    mean: str,
    name: str,
    unit: str,
    providers: Sequence[str] | None,
    start: datetime | None,
    end: datetime | None,
    split: bool,
) -> TimeChart:
    """p50 per provider as a line, with a band from p50 up to p95. When only the mean is
    known (a window read from the per-minute rollups), the mean, with no band."""
    percentiles = p50 in series and series[p50].notna().any()
    means = not percentiles and mean in series and series[mean].notna().any()
    wide = series.rename(columns={mean: "mid"} if means else {p50: "mid", p95: "high"})
    data = _prepare(wide, ["provider", "bucket", "time", "ok", "mid", "high"], "mid")
    title = f"{name} ({unit}, mean)" if means else f"{name} ({unit}) · p50, band to p95"
    log = _needs_log_scale(data)
    if log:
        title += " · log scale"
    value = "Mean" if means else "p50"
    tooltip = [
        alt.Tooltip("provider:N", title="Provider"),
        _when(start, end),
        alt.Tooltip("mid:Q", title=f"{value} ({unit})", format=",.0f"),
        *([] if means else [alt.Tooltip("high:Q", title=f"p95 ({unit})", format=",.0f")]),
        alt.Tooltip("ok:Q", title="Answers", format=","),
    ]
    y = alt.Y(
        "mid:Q",
        title=None,
        axis=_y_axis(",.0f", split=split, ticks=3 if log else 4),  # a log axis with 4 ticks grids every 1-9
        scale=alt.Scale(type="log") if log else alt.Undefined,
    )

    def layers(x: alt.X, color: alt.Color, pick: alt.Parameter | None) -> alt.Chart | alt.LayerChart:
        line = (
            alt.Chart()
            .mark_line(interpolate="linear", strokeWidth=2, point=_dots(data))
            .encode(y=y, opacity=_opacity(pick, 1.0), tooltip=tooltip)
        )
        if pick is not None:
            line = line.add_params(pick)
        if means:
            return line.encode(x=x, color=color, detail=_SEGMENT)
        # No tooltip on the band: an area is one shape, its tooltip would show one point of it.
        band = alt.Chart().mark_area(interpolate="linear").encode(y=y, y2=alt.Y2("high:Q"), opacity=_band_opacity(pick))
        return alt.layer(band, line).encode(x=x, color=color, detail=_SEGMENT)

    return _time_chart(data, layers, title=title, providers=providers, start=start, end=end, split=split)


#: When the top of the axis is this many times a provider's typical p50, the axis is logarithmic.
LOG_SCALE_SPREAD = 20.0


def _needs_log_scale(data: pd.DataFrame) -> bool:
    """What sets a linear axis is the highest value drawn (a p95, a slow provider): when it is
    more than `LOG_SCALE_SPREAD` times the fastest provider's typical p50 (a local model's 13 s
    beside APIs at 0.5 s, or one 20 s spike), that provider's line is flattened onto the axis
    and a degradation there cannot be seen. On a log scale each line stays readable."""
    if data.empty:
        return False
    values = data[[c for c in ("mid", "high") if c in data]].to_numpy(dtype="float64", na_value=np.nan)
    values = values[np.isfinite(values)]
    if not len(values) or values.min() <= 0:
        return False
    fastest = data.groupby("provider", sort=False)["mid"].median().min()
    return bool(values.max() / fastest > LOG_SCALE_SPREAD)


def latency_chart(
    series: pd.DataFrame,
    *,
    providers: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    split: bool = False,
) -> TimeChart:
    """p50 latency of each provider's answers as a line, with a band up to the p95; the mean
    when only sums are known (series built from the per-minute rollups)."""
    return _band_chart(
        series,
        p50="p50_latency_ms",
        p95="p95_latency_ms",
        mean="mean_latency_ms",
        name="Latency",
        unit="ms",
        providers=providers,
        start=start,
        end=end,
        split=split,
    )


def ttft_chart(
    series: pd.DataFrame,
    *,
    providers: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    split: bool = False,
) -> TimeChart:
    """p50 time to first token with a band up to the p95; the mean when only sums are known."""
    return _band_chart(
        series,
        p50="p50_ttft_ms",
        p95="p95_ttft_ms",
        mean="mean_ttft_ms",
        name="Time to first token",
        unit="ms",
        providers=providers,
        start=start,
        end=end,
        split=split,
    )


def success_rate_chart(
    series: pd.DataFrame,
    *,
    providers: Sequence[str] | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    split: bool = False,
) -> TimeChart:
    """Successes over the attempts that count against a provider (not bad requests or stopped
    answers). Each dot is sized by those attempts and faded under `FEW_REQUESTS`, and its
    tooltip gives the counts: a 0% from one request reads as one request, not an outage."""
    data = _prepare(series, ["provider", "bucket", "time", "requests", "counted", "ok", "success_rate"], "success_rate")
    data["failed"] = data["counted"] - data["ok"]
    data["weight"] = np.where(data["counted"] >= FEW_REQUESTS, 1.0, 0.35)
    y = alt.Y("success_rate:Q", title=None, axis=_y_axis("%", split=split, ticks=3), scale=alt.Scale(domain=[0, 1]))
    tooltip = [
        alt.Tooltip("provider:N", title="Provider"),
        _when(start, end),
        alt.Tooltip("success_rate:Q", title="Success rate", format=".0%"),
        alt.Tooltip("counted:Q", title="Attempts counted", format=","),
        alt.Tooltip("failed:Q", title="Failed (its fault)", format=","),
        alt.Tooltip("requests:Q", title="Requests", format=","),
    ]

    def layers(x: alt.X, color: alt.Color, pick: alt.Parameter | None) -> alt.LayerChart:
        line = alt.Chart().mark_line(interpolate="linear", strokeWidth=1.5).encode(opacity=_opacity(pick, 0.6))
        if pick is not None:
            line = line.add_params(pick)
        # Full strength from FEW_REQUESTS on, faded under: the data's own 1.0 or 0.35.
        weight = alt.Opacity("weight:Q", scale=None, legend=None)
        isolated = {"param": ISOLATE, "field": "weight", "type": "quantitative", "scale": None, "legend": None}
        dots = (
            alt.Chart()
            .mark_circle()
            .encode(
                size=alt.Size(
                    "counted:Q",
                    scale=alt.Scale(type="sqrt", domain=[0, _FULL_DOT_REQUESTS], range=[8, 110], clamp=True),
                    legend=None,
                ),
                opacity=weight if pick is None else alt.OpacityValue(_FADED, condition=isolated),
                tooltip=tooltip,
            )
        )
        return alt.layer(line, dots).encode(x=x, y=y, color=color, detail=_SEGMENT)

    return _time_chart(
        data,
        layers,
        title="Success rate",
        subtitle=f"Dot size: attempts behind the point · faded: fewer than {FEW_REQUESTS}",
        providers=providers,
        start=start,
        end=end,
        split=split,
    )


def tokens_per_second_chart(series: pd.DataFrame, **kwargs: Any) -> TimeChart:
    return metric_chart(series, "tokens_per_second", title="Tokens per second", axis_format=",.0f", **kwargs)


def _unpriced_note(series: pd.DataFrame) -> str | None:
    """Which providers answered without a known price (their cost is not in the chart)."""
    if series.empty or "unpriced" not in series:
        return None
    unpriced = series.groupby("provider", sort=True)["unpriced"].sum()
    unpriced = unpriced[unpriced > 0]
    if unpriced.empty:
        return None
    total = int(unpriced.sum())
    answers = f"{total:,} answer{'s' if total != 1 else ''}"
    if len(unpriced) == 1:
        return f"Price unknown, not counted: {answers} from {unpriced.index[0]}"
    return f"Price unknown, not counted: {answers} ({', '.join(f'{n} {c:,}' for n, c in unpriced.items())})"


def cumulative_cost_chart(series: pd.DataFrame, **kwargs: Any) -> TimeChart:
    return metric_chart(
        series,
        "cumulative_cost_usd",
        title="Estimated cost, cumulative ($)",
        subtitle=_unpriced_note(series),
        axis_format="$,.4f",
        mark="step",
        **kwargs,
    )


def cost_per_request_chart(series: pd.DataFrame, **kwargs: Any) -> TimeChart:
    return metric_chart(
        series,
        "cost_per_request_usd",
        title="Estimated cost per request ($)",
        subtitle=_unpriced_note(series),
        axis_format="$,.5f",
        **kwargs,
    )


def requests_per_minute_chart(series: pd.DataFrame, **kwargs: Any) -> TimeChart:
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
