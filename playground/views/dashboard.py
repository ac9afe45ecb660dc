"""Dashboard: everyone's traffic, live. Reads the request log and `Conductor.status()` (never a
session's own state) and refreshes itself every two seconds without reloading the page."""

from __future__ import annotations

from datetime import timedelta

import streamlit as st

from conductor_core.keys import period_bounds
from conductor_core.models import utcnow
from conductor_core.store import NO_KEY
from conductor_core.workbench.replay import parse_transcript
from playground import charts, state
from playground import components as ui
from playground import dashboard_data as dd
from playground import keys_data as kd
from playground.add_to_dataset import add_to_dataset

c = state.conductor()

st.title("Dashboard")

controls = st.columns([5, 1.3, 1.3, 1.3], vertical_alignment="bottom")
with controls[0]:
    window_label = (
        st.segmented_control(
            "Time window",
            list(dd.WINDOWS),
            default="15m",
            key="dash_window",
            persist_state="session",
            required=True,
            help="The last 5 or 15 minutes, 1, 6 or 24 hours, 7 days, or the whole log.",
        )
        or "15m"
    )
with controls[1]:
    live = st.toggle("Live", value=True, key="dash_live", persist_state="session", help="Refresh every 2 seconds.")
window_s = dd.WINDOWS[window_label]
window_name = dd.WINDOW_NAMES[window_label]
in_window = "in the whole log" if window_s is None else f"in the last {window_name}"

# The Key filter, once the gateway has keys (read every few seconds at most, not per refresh).
ALL_KEYS = "all"  # no key id is "all" (they are key_<hex>); NO_KEY ("") is the traffic without one
try:
    gateway_keys = {k.id: k for k in state.key_list()}
except Exception:  # noqa: BLE001 - the live panel says when the log cannot be read
    gateway_keys = {}
key_id: str | None = None  # None: every request
if gateway_keys:
    chosen_key = st.selectbox(
        "Key",
        [ALL_KEYS, *gateway_keys, NO_KEY],
        format_func=lambda k: (
            "All traffic"
            if k == ALL_KEYS
            else "No key (playground, admin key)"
            if k == NO_KEY
            else kd.key_label(gateway_keys[k])
        ),
        key="dash_key",
        persist_state="session",
        # The replay list below follows the filter: a request chosen from another key's is no option any more.
        on_change=lambda: [st.session_state.pop(k, None) for k in ("dash_replay_request", "dash_replay_with")],
        width=420,
        help="The requests made with one gateway key (the Keys page makes them), or without any.",
    )
    key_id = None if chosen_key in (ALL_KEYS, None) else chosen_key
    if key_id is not None:
        in_window += " with no key" if key_id == NO_KEY else f" with the key {ui.escape_md(gateway_keys[key_id].name)}"


def export(fmt: str):
    def build() -> bytes:
        since = utcnow() - timedelta(seconds=window_s) if window_s is not None else None
        names = {k.id: k.name for k in state.gateway_keys().list()}  # key_name beside key_id; never the key
        return c.log.export(fmt, since=since, verdicts=state.vote_verdicts, key_id=key_id, key_names=names)

    return build


suffix = window_label.replace(" ", "") + ("" if key_id is None else "-nokey" if key_id == NO_KEY else f"-{key_id}")
with controls[2]:
    st.download_button(
        "CSV",
        export("csv"),
        file_name=f"conductor-log-{suffix}.csv",
        mime="text/csv",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
        help=f"The request log {in_window} as CSV, with the votes (Arena and Compare) that judged each answer.",
    )
with controls[3]:
    st.download_button(
        "JSON",
        export("json"),
        file_name=f"conductor-log-{suffix}.json",
        mime="application/json",
        icon=":material/download:",
        on_click="ignore",
        width="stretch",
        help=f"The request log {in_window} as JSON, with the votes (Arena and Compare) that judged each answer.",
    )


#: The charts "Per provider" draws as small multiples, one at a time (all seven at once cost
#: the server several times a refresh of the grid).
SMALL_MULTIPLES = {
    "Latency": charts.latency_chart,
    "Success": charts.success_rate_chart,
    "First token": charts.ttft_chart,
    "Tokens/s": charts.tokens_per_second_chart,
    "Requests/min": charts.requests_per_minute_chart,
    "Cost": charts.cumulative_cost_chart,
    "Cost/request": charts.cost_per_request_chart,
}


def chart_grid(snapshot: state.DashboardSnapshot) -> None:
    series, start, end = snapshot.series, snapshot.start, snapshot.end
    providers = sorted(series["provider"].dropna().unique().tolist())
    hint, toggle = st.columns([5, 1.6], vertical_alignment="center")
    with toggle:
        split = st.toggle(
            "Per provider",
            key="dash_split",
            persist_state="session",
            help="Small multiples: one chart, a short row per provider on shared axes, instead of all of them at once.",
        )
    options = {"providers": providers, "start": start, "end": end}
    if split:
        hint.caption("One row per provider, on shared axes.")
        metric = (
            st.segmented_control(
                "Chart",
                list(SMALL_MULTIPLES),
                default="Latency",
                key="dash_split_chart",
                persist_state="session",
                required=True,
                label_visibility="collapsed",
            )
            or "Latency"
        )
        with st.container(border=True):
            # "stretch" said explicitly: Streamlit gives a column of layered rows its content
            # width by default (a nested composition).
            chart = SMALL_MULTIPLES[metric](series, **options, split=True)
            st.altair_chart(chart, key="dash_chart_split", width="stretch")
    else:
        hint.caption("Click a legend entry to isolate a provider (shift-click adds one, double-click shows all again).")

        def show(chart, key: str) -> None:
            # With "rerun" Streamlit keeps a legend click (a provider isolated) when the live
            # refresh redraws the chart; with "ignore" the click is forgotten within 2 seconds.
            st.altair_chart(chart, key=key, on_select="rerun")

        pairs = [
            (charts.latency_chart(series, **options), charts.requests_per_minute_chart(series, **options)),
            (charts.success_rate_chart(series, **options), charts.ttft_chart(series, **options)),
            (charts.tokens_per_second_chart(series, **options), charts.cumulative_cost_chart(series, **options)),
        ]
        for n, (left, right) in enumerate(pairs):
            a, b = st.columns(2, gap="medium")
            with a.container(border=True):
                show(left, f"dash_chart_{n}_l")
            with b.container(border=True):
                show(right, f"dash_chart_{n}_r")
    a, b = st.columns(2, gap="medium")
    if not split:
        with a.container(border=True):
            st.altair_chart(charts.cost_per_request_chart(series, **options), key="dash_chart_cost", on_select="rerun")
    with (a if split else b).container(border=True):
        if snapshot.wins.empty:
            st.markdown("**Win rate from compare votes**")
            st.caption("No votes in this window yet: vote on the Compare page.")
        else:
            st.altair_chart(charts.win_rate_chart(snapshot.wins), key="dash_chart_wins")


def _key_said() -> str:
    if key_id is None:
        return ""
    return " · without a key" if key_id == NO_KEY else f" · key {ui.escape_md(gateway_keys[key_id].name)}"


def _when(moment) -> str:
    """A start time that fits a tile: the clock today, the date before."""
    now = utcnow()
    return (
        f"{moment:%H:%M} UTC"
        if moment.date() == now.date()
        else f"{moment:%b %d}"
        if moment.year == now.year
        else f"{moment:%Y-%m-%d}"
    )


def key_spend_line(key) -> None:
    """One key's spend this period against its budget (from its rows in the log)."""
    try:
        spend = state.gateway_keys().spend(key.id, period_bounds(kd.key_period(key))[0])
    except Exception as exc:  # noqa: BLE001
        st.error(f"The key's spend could not be read: {ui.escape_md(ui.unexpected_error(exc))}")
        return
    over = key.budget_usd is not None and spend.cost_usd >= key.budget_usd
    st.markdown(
        f":material/key: {ui.escape_md(kd.spend_line(key, spend, ui.format_cost))}"
        + (" :red[Over budget: the gateway refuses it until the reset.]" if over else "")
        + (f" :gray[This key was {kd.status_text(key)}.]" if key.revoked else "")
    )


@st.fragment(run_every=2.0 if live else None)
def live_panel() -> None:
    try:
        snapshot = state.dashboard_snapshot(c, window_s, key_id)
        status = c.status(overrides=state.overrides())
        gateway = c.log.gateway_overhead(since=utcnow() - timedelta(seconds=window_s) if window_s else None)
    except Exception as exc:  # noqa: BLE001 - an unreachable log is a message, the page keeps working
        st.error(
            f"The request log could not be read: {ui.escape_md(ui.unexpected_error(exc))}", icon=":material/error:"
        )
        return
    totals = dd.summary(snapshot.series)
    configured = [p for p in status.providers.values() if p.health.state.value != "not_configured"]
    ready = [p for p in configured if p.health.healthy]
    if status.request_log is not None and status.request_log.schema_error:
        st.error(
            f"The request log is not being written: {ui.escape_md(status.request_log.schema_error)}",
            icon=":material/database:",
        )
    routing_state = status.routing_state
    if routing_state is not None and routing_state.backend is not None:
        if routing_state.mode == "local":
            st.warning(
                f"Routing state is local: {ui.escape_md(routing_state.detail or routing_state.backend)}. Breakers and "
                "AUTO's metrics are this server's own until Redis answers again; requests are still served.",
                icon=":material/lan:",
            )
        else:
            st.caption(
                f":material/lan: Breakers and AUTO's metrics are shared with every replica through "
                f"{ui.escape_md(routing_state.backend)}."
            )
    if key_id is not None and key_id != NO_KEY:
        key_spend_line(gateway_keys[key_id])
    top, bottom = st.columns(3), st.columns(3)
    attempts, requests = totals["requests"], totals["first_attempts"]
    top[0].metric(
        "Requests",
        dd.compact_count(requests),
        delta=f"{dd.compact_count(attempts)} attempt{'s' if attempts != 1 else ''}" if attempts else None,
        delta_color="off",
        delta_arrow="off",
        help=f"{requests:,} requests {in_window}, sent as {attempts:,} attempts: "
        "a retry or a fallback to another provider is another attempt of the same request.",
        border=True,
    )
    rate = totals["success_rate"]
    left_out = totals["requests"] - totals["counted"]
    top[1].metric(
        "Success rate",
        "—" if rate is None else f"{rate:.1%}",
        border=True,
        delta=f"{left_out:,} left out" if left_out else None,
        delta_color="off",
        delta_arrow="off",
        help="Successes over the attempts that say something about a provider"
        + (
            f": {left_out:,} failed because of the request itself (a bad request, an answer stopped), shown in the log but left out here."
            if left_out
            else "."
        ),
    )
    top[2].metric(
        "Requests / min",
        f"{totals['first_attempts_per_min']:,.1f}",
        help=f"Requests per minute {in_window}; with retries and fallbacks, {totals['requests_per_min']:,.1f} "
        "attempts per minute.",
        border=True,
    )
    unpriced = totals["unpriced"]
    value, extra = dd.cost_tile(totals["cost_usd"], unpriced, totals["requests"], ui.format_total_cost)
    bottom[0].metric(
        "Est. cost",
        value,
        delta=extra,
        delta_color="off",
        delta_arrow="off",
        border=True,
        help="Known prices only"
        + (f"; {unpriced:,} answers have no known price" if unpriced else "")
        + f". Whole log: {ui.format_cost(status.totals.cost_usd)} over {status.totals.total_requests:,} requests.",
    )
    bottom[1].metric("Providers ready", f"{len(ready)} / {len(configured)}", border=True)
    since = snapshot.log_since
    started = (
        f"The request log (every process's traffic) starts {since:%Y-%m-%d %H:%M} UTC."
        if since
        else "The request log is empty."
    )
    bottom[2].metric(
        "Log since",
        _when(since) if since else "—",
        border=True,
        delta=f"this server up {dd.humanize_seconds(status.uptime_s)}",
        delta_color="off",
        delta_arrow="off",
        help=f"{started} This server has been up for {dd.humanize_seconds(status.uptime_s)}.",
    )

    if gateway is not None:  # only where the gateway served requests
        st.columns(3)[0].metric(
            "Gateway overhead",
            f"{gateway.p50_ms:.2f} ms",
            delta=f"p99 {gateway.p99_ms:.2f} ms",
            delta_color="off",
            delta_arrow="off",
            border=True,
            help=f"Time spent in Conductor per gateway request (x-conductor-overhead-ms: the upstream's time "
            f"excluded), median and 99th percentile over {gateway.requests:,} requests {in_window}.",
        )

    st.markdown("##### Providers")
    table = dd.status_table(status, series=snapshot.series, format_cost=ui.format_cost)
    if not table.empty:
        table["Provider"] = [state.display_name(c, name) for name in table["Name"]]
    # Widths from the values themselves: the grid sizes a column once, for what it first
    # draws, so a p50 grown from "90 ms" to "2034 ms" would read "034 ms".
    widths = dd.fit_widths(
        table,
        {
            "Provider": str,
            "State": str,
            "Breaker": str,
            "p50 ms": "{:.0f} ms".format,
            "p95 ms": "{:.0f} ms".format,
            "Requests": "{:d}".format,
            "Cost": str,
            "Last check": str,
        },
    )
    live_figures = "the router's live figures: its last attempts within the hour, what AUTO ranks by"
    st.dataframe(
        table,
        hide_index=True,
        placeholder="—",
        key="dash_providers",
        # What a glance needs first, so that it fits 1400 px: the live figures, then the
        # window's requests and cost, the trends, and the details (the breaker is in State too).
        column_order=[
            "Provider",
            "State",
            "p50 ms",
            "p95 ms",
            "Success",
            "Requests",
            "Cost",
            "Latency trend",
            "Traffic",
            "Breaker",
            "Detail / last error",
            "Last check",
        ],
        column_config={
            "Provider": st.column_config.TextColumn("Provider", width=widths["Provider"]),
            "State": st.column_config.TextColumn("State", width=widths["State"]),
            "Breaker": st.column_config.TextColumn("Breaker", width=widths["Breaker"]),
            "p50 ms": st.column_config.NumberColumn(
                "p50", format="%.0f ms", width=widths["p50 ms"], help=f"Median latency, from {live_figures}."
            ),
            "p95 ms": st.column_config.NumberColumn(
                "p95", format="%.0f ms", width=widths["p95 ms"], help=f"95th percentile latency, from {live_figures}."
            ),
            "Success": st.column_config.ProgressColumn(
                "Success",
                format="percent",
                min_value=0.0,
                max_value=1.0,
                width=120,
                help=f"Success rate, from {live_figures}.",
            ),
            "Latency trend": st.column_config.LineChartColumn(
                "Latency trend",
                width=110,
                y_min=0,
                help=f"p50 latency of each bucket with answers, {in_window} (the mean for long windows).",
            ),
            "Requests": st.column_config.NumberColumn(
                "Requests", format="%d", width=widths["Requests"], help=f"Attempts on this provider {in_window}."
            ),
            "Traffic": st.column_config.BarChartColumn(
                "Traffic", width=100, y_min=0, help=f"Attempts in each bucket, {in_window}."
            ),
            "Cost": st.column_config.TextColumn(
                "Cost",
                width=widths["Cost"],
                help=f"Estimated cost of its answers {in_window}: unknown when no price is known for them.",
            ),
            "Detail / last error": st.column_config.TextColumn("Detail / last error", width="large"),
            "Last check": st.column_config.TextColumn("Last check", width=widths["Last check"]),
        },
    )
    source = (
        "individual requests"
        if snapshot.from_rows
        else "per-minute sums (means of latency and first token; p50/p95 need a shorter window)"
    )
    st.caption(
        f"{'Whole log' if window_s is None else f'Last {window_name}'}{_key_said()} · {snapshot.rows:,} attempts · {dd.bucket_name(snapshot.bucket_s)} buckets · from {source} · "
        f"updated {snapshot.end:%H:%M:%S} UTC"
        + (" · live" if live else " · paused")
        + f" · this server up for {dd.humanize_seconds(status.uptime_s)}"
    )
    if snapshot.series.empty or not totals["requests"]:
        st.info(
            "No requests in this window yet. Send a prompt on the Playground or Compare page and watch it appear here.",
            icon=":material/insights:",
        )
        if not snapshot.wins.empty:
            st.altair_chart(charts.win_rate_chart(snapshot.wins), key="dash_chart_wins_only")
        return
    chart_grid(snapshot)


live_panel()

#: The leaderboard's figures (latency, success, cost) come from row reads: at most this far back.
_FIGURES_MAX_S = 7 * 86400


@st.cache_data(ttl=10, show_spinner=False)
def _target_figures(window: int | None):
    since = utcnow() - timedelta(seconds=min(window or _FIGURES_MAX_S, _FIGURES_MAX_S))
    return c.log.frame(since=since, columns=["provider", "model", "status", "error_type", "latency_ms", "cost_usd"])


@st.fragment(run_every=5.0 if live else None)
def leaderboard() -> None:
    st.markdown("##### Leaderboard from blind votes")
    try:
        board = c.ratings(fresh=True)
        table = dd.leaderboard_table(board, _target_figures(window_s) if board.ratings else None)
    except Exception as exc:  # noqa: BLE001
        st.error(f"The ratings could not be read: {ui.escape_md(ui.unexpected_error(exc))}", icon=":material/error:")
        return
    if table.empty:
        st.info(
            "No blind votes yet. Vote in the Arena: models answer anonymously, you pick the best, and the ratings "
            f"appear here (a model is ranked from {board.min_votes} votes on).",
            icon=":material/leaderboard:",
        )
        st.page_link("views/arena.py", label="Open the Arena", icon=":material/how_to_vote:")
        return
    # Prices as everywhere else: "free" for 0, "unknown" where no price is known.
    table["Cost / request"] = [ui.format_cost(None if v != v else v) for v in table.pop("Cost / request $")]
    figures_over = (
        "the whole log's last 7 days" if window_s is None or window_s > _FIGURES_MAX_S else f"the last {window_name}"
    )
    st.dataframe(
        table,
        hide_index=True,
        placeholder="—",
        key="dash_leaderboard",
        column_config={
            "Rating": st.column_config.NumberColumn(
                "Rating",
                format="%.0f",
                help="Bradley–Terry rating on an Elo-like scale (1000 = average; +120 ≈ 2:1 odds).",
            ),
            "95% CI": st.column_config.TextColumn("95% CI", help="Bootstrap 95% interval over the votes."),
            "p50 ms": st.column_config.NumberColumn("p50", format="%.0f ms"),
            "Success": st.column_config.ProgressColumn("Success", format="percent", min_value=0.0, max_value=1.0),
            "Cost / request": st.column_config.TextColumn("Cost / request", help="Mean over its priced requests."),
        },
    )
    st.caption(
        f"{board.votes:,} blind vote{'s' if board.votes != 1 else ''} · ranked from {board.min_votes} votes on "
        f"(AUTO's *preferred* policy uses the same ratings) · latency, success and cost over {figures_over}."
    )


leaderboard()


def _request_label(record) -> str:
    target = f"{record.provider}/{record.model}" if record.model else record.provider
    said = [m.content for m in parse_transcript(record.prompt or "") if m.role == "user"]
    turns = f" (after {len(said) - 1} earlier)" if len(said) > 1 else ""
    prompt = " ".join(said[-1].split()) + turns if said else "(prompt not logged)"
    prompt = prompt if len(prompt) <= 70 else prompt[:69] + "…"
    return f"{record.created_at:%H:%M:%S} · {target} · {record.status} · {prompt}"


def replay_panel() -> None:
    st.markdown("##### Replay a logged request, or add it to a dataset")
    records = c.log.records(limit=200, key_id=key_id)  # the Key filter's, when one is chosen
    latest: dict[str, object] = {}
    for record in records:  # newest first: one entry per request (its last attempt)
        latest.setdefault(record.request_id, record)
    if not latest:
        st.caption("No requests in the log yet.")
        return
    choices = list(latest)[:50]
    with st.container(border=True):
        chosen = st.selectbox(
            "Request",
            choices,
            format_func=lambda rid: _request_label(latest[rid]),
            key="dash_replay_request",
            on_change=st.session_state.pop,  # another request: its own default targets below
            args=("dash_replay_with", None),
            help="The 50 newest requests. Its messages and, for the playground's own requests, its parameters "
            "(temperature, max tokens, top_p, stop, seed, system prompt) are sent again.",
        )
        record = latest[chosen]
        served = f"{record.provider}/{record.model}" if record.model else record.provider
        others = [
            f"{name}/{model}"
            for name in state.configured_names(c)
            for model in state.models_of(c, name)
            if f"{name}/{model}" != served
        ]
        against = st.multiselect(
            f"Against (it runs again on {served} too)",
            others,
            default=others[:1],
            max_selections=3,
            # One key whatever the request: a widget whose key changes is a new widget, and the old one stays
            # drawn beside it until the run's cleanup, which a live refresh can skip (streamlit#16708).
            key="dash_replay_with",
        )
        buttons = st.container(horizontal=True, gap="small")
        if buttons.button("Replay in Compare", icon=":material/replay:", key="dash_replay_go", disabled=not against):
            st.switch_page("views/compare.py", query_params={"replay": chosen, "with": ",".join(against)})
        if buttons.button(
            "Add to dataset",
            icon=":material/playlist_add:",
            key="dash_add_to_dataset",
            help="Its messages as a row of a saved dataset (Experiments can run on it), and its answer as the "
            "expected one if you mark it good.",
        ):
            add_to_dataset(chosen, "dashboard")


replay_panel()
