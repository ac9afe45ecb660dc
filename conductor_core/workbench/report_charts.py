"""Charts for experiment results and ratings: data in, an Altair chart out (pure functions,
tested with `chart.to_dict()`). The HTML report renders them to inline SVG (`svg()`); a page
can show the same charts with `st.altair_chart`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import altair as alt

    from .experiments import VariantStats
    from .ratings import Rating

__all__ = ["latency_chart", "rates_chart", "cost_chart", "ratings_chart", "svg"]

_WIDTH = 420
_BAR = 22


def _height(n: int) -> int:
    return max(60, n * (_BAR + 8))


def latency_chart(stats: Sequence[VariantStats]) -> alt.Chart:
    """p50 and p95 latency and p50 time to first token per variant (ms), as grouped bars."""
    import altair as alt
    import pandas as pd

    rows = [
        {"variant": s.label, "measure": name, "ms": value}
        for s in stats
        for name, value in (
            ("p50 latency", s.p50_latency_ms),
            ("p95 latency", s.p95_latency_ms),
            ("p50 first token", s.p50_ttft_ms),
        )
        if value is not None
    ]
    frame = pd.DataFrame(rows, columns=["variant", "measure", "ms"])
    return (
        alt.Chart(frame, title="Latency per variant (ms)")
        .mark_bar()
        .encode(
            y=alt.Y("variant:N", title=None, sort=[s.label for s in stats], axis=alt.Axis(labelLimit=220)),
            yOffset=alt.YOffset("measure:N", sort=["p50 first token", "p50 latency", "p95 latency"]),
            x=alt.X("ms:Q", title="milliseconds"),
            color=alt.Color("measure:N", legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["variant", "measure", alt.Tooltip("ms:Q", format=",.0f")],
        )
        .properties(width=_WIDTH, height=_height(len(stats)) * 2)
    )


def rates_chart(stats: Sequence[VariantStats]) -> alt.Chart:
    """Success, pass and win rates per variant (0-100%), where each is known."""
    import altair as alt
    import pandas as pd

    rows = [
        {"variant": s.label, "rate": name, "value": value}
        for s in stats
        for name, value in (("success", s.success_rate), ("pass", s.pass_rate), ("win", s.win_rate))
        if value is not None
    ]
    frame = pd.DataFrame(rows, columns=["variant", "rate", "value"])
    return (
        alt.Chart(frame, title="Rates per variant")
        .mark_bar()
        .encode(
            y=alt.Y("variant:N", title=None, sort=[s.label for s in stats], axis=alt.Axis(labelLimit=220)),
            yOffset=alt.YOffset("rate:N", sort=["success", "pass", "win"]),
            x=alt.X("value:Q", title=None, axis=alt.Axis(format="%"), scale=alt.Scale(domain=[0, 1])),
            color=alt.Color("rate:N", legend=alt.Legend(orient="bottom", title=None)),
            tooltip=["variant", "rate", alt.Tooltip("value:Q", format=".0%")],
        )
        .properties(width=_WIDTH, height=_height(len(stats)) * 2)
    )


def cost_chart(stats: Sequence[VariantStats]) -> alt.Chart | alt.LayerChart:
    """Total known cost per variant (USD), each bar labelled as the tables say it ("$0.0012
    + 1 unpriced", "unknown", "free"). With no priced answer at all, a sentence saying so
    instead of an empty axis with a single "0" tick."""
    import altair as alt
    import pandas as pd

    from .exports import total_cost_text

    title = "Total cost per variant (USD, priced answers)"
    if not any(s.priced for s in stats):
        note = pd.DataFrame({"note": ["No priced answers: no price is known for any variant's answers."]})
        return (
            alt.Chart(note, title=title)
            .mark_text(align="left", baseline="middle", fontSize=13, color="#555")
            .encode(text="note:N", x=alt.value(4), y=alt.value(20))
            .properties(width=_WIDTH, height=40)
            .configure_view(stroke=None)
        )
    frame = pd.DataFrame(
        [
            {
                "variant": s.label,
                "usd": s.cost_usd if s.priced else None,
                "label": total_cost_text(s),
                "note": f"{s.unpriced} unpriced" if s.unpriced else "all priced",
            }
            for s in stats
        ],
        columns=["variant", "usd", "label", "note"],
    )
    base = alt.Chart(frame, title=title).encode(
        y=alt.Y("variant:N", title=None, sort=[s.label for s in stats], axis=alt.Axis(labelLimit=220))
    )
    bars = base.mark_bar().encode(
        x=alt.X("usd:Q", title="USD"), tooltip=["variant", alt.Tooltip("usd:Q", format="$,.6f"), "note"]
    )
    # The label sits after the bar; a variant with no known price has no bar, only "unknown".
    labels = base.mark_text(align="left", dx=4, fontSize=11, color="#333").encode(x=alt.X("bar_end:Q"), text="label:N")
    return (bars + labels.transform_calculate(bar_end="isValid(datum.usd) ? datum.usd : 0")).properties(
        width=_WIDTH, height=_height(len(stats))
    )


def ratings_chart(ratings: Sequence[Rating]) -> alt.Chart:
    """Each subject's rating with its 95% interval (a point on a rule), best on top."""
    import altair as alt
    import pandas as pd

    frame = pd.DataFrame(
        [
            {
                "subject": r.subject,
                "rating": r.rating,
                "low": r.ci_low,
                "high": r.ci_high,
                "votes": r.votes,
                "ranked": r.enough,
            }
            for r in ratings
        ],
        columns=["subject", "rating", "low", "high", "votes", "ranked"],
    )
    order = [r.subject for r in ratings]
    base = alt.Chart(frame, title="Ratings from blind votes (95% interval)").encode(
        y=alt.Y("subject:N", title=None, sort=order, axis=alt.Axis(labelLimit=220))
    )
    rule = base.mark_rule(strokeWidth=2).encode(
        x=alt.X("low:Q", title="rating", scale=alt.Scale(zero=False)), x2="high:Q"
    )
    point = base.mark_point(filled=True, size=80).encode(
        x="rating:Q",
        opacity=alt.condition("datum.ranked", alt.value(1.0), alt.value(0.35)),
        tooltip=[
            "subject",
            alt.Tooltip("rating:Q", format=",.0f"),
            alt.Tooltip("low:Q", format=",.0f"),
            alt.Tooltip("high:Q", format=",.0f"),
            "votes",
        ],
    )
    return (rule + point).properties(width=_WIDTH, height=_height(len(ratings)))


def svg(chart: Any) -> str:
    """The chart as a standalone SVG document (no script, no network), for an HTML report."""
    import vl_convert

    return vl_convert.vegalite_to_svg(chart.to_dict())
