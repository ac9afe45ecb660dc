"""The Dashboard in a real browser, as a person reads it (issue 19): a click on a chart's legend
isolates a provider and stays through the live refresh; the Providers table says "unknown"
for a provider with no known price; a p50 that grows after the table was first drawn is
still shown whole, at 1400 px and at a phone's 390 px.

Each test has its own playground over a fresh request log it writes: traffic from the local
model (free) and from a loopback endpoint (no known price), its p50 at 90 ms when the page
first draws the table. A server shared between tests would make what a test sees depend on
the tests before it (a column first drawn for an earlier "12034 ms" fits a later value).

The table is drawn on a canvas (glide-data-grid): its accessible <table> holds the values but
has no layout, so `scrollWidth`/`clientWidth` cannot tell a cut text. The page records what
the canvas draws instead (`RECORD_TEXT`): each text, where it is drawn and the clip rectangle
it is drawn in; a text is whole when it lies inside its clip.
"""

from __future__ import annotations

from datetime import timedelta

import browser_support
import pytest
from browser_support import Playground, endpoint_config, launch, open_page, wait_idle

from conductor_core.providers.spec import get_spec

# The fixtures this module uses, bound by name (pytest finds fixtures among a module's names).
services = browser_support.services
shots = browser_support.shots

pytestmark = pytest.mark.timeout(300)

SLOW_MS = 12034.0  # "12034 ms" was read "034 ms" in a column sized for "90 ms"

# Run before the page's own scripts: every text a 2D canvas draws, with its left and right
# edges and the clip rectangle in force (x and width), in the canvas's pixels.
RECORD_TEXT = """(() => {
  const P = CanvasRenderingContext2D.prototype;
  const states = new WeakMap();
  const of = (ctx) => { let s = states.get(ctx); if (!s) { s = {saved: [], clip: null, rect: null}; states.set(ctx, s); } return s; };
  const wrap = (name, before) => { const original = P[name]; P[name] = function (...args) { before(this, of(this), args); return original.apply(this, args); }; };
  window.__drawnTexts = [];
  wrap('save', (ctx, s) => s.saved.push(s.clip));
  wrap('restore', (ctx, s) => { s.clip = s.saved.length ? s.saved.pop() : null; });
  wrap('beginPath', (ctx, s) => { s.rect = null; });
  wrap('rect', (ctx, s, [x, y, w]) => { const t = ctx.getTransform(); s.rect = {x: x * t.a + t.e, w: w * t.a}; });
  wrap('clip', (ctx, s) => { if (s.rect) s.clip = s.rect; });
  wrap('fillText', (ctx, s, [text, x]) => {
    const t = ctx.getTransform();
    const width = ctx.measureText(String(text)).width * t.a;
    const at = x * t.a + t.e;
    const left = ['right', 'end'].includes(ctx.textAlign) ? at - width : ctx.textAlign === 'center' ? at - width / 2 : at;
    window.__drawnTexts.push({text: String(text), left, right: left + width, clip: s.clip && {...s.clip}});
  });
})();"""

# The texts drawn so far that end with `suffix`, each with whether it lies inside its clip.
DRAWN = """(suffix) => window.__drawnTexts.filter(d => d.text.endsWith(suffix)).map(d => ({
    text: d.text, left: d.left, right: d.right, clip: d.clip,
    whole: !d.clip || (d.left >= d.clip.x - 0.5 && d.right <= d.clip.x + d.clip.w + 0.5)}))"""

# The Providers table's cell in `row` (the provider's name) and `column` (its header), read
# from the grid's accessible table (the raw value: 12034, unknown).
CELL = """([row, column]) => {
    const grid = document.querySelector('[data-testid="stDataFrame"] table');
    if (!grid) return null;
    const headers = [...grid.querySelectorAll('th')].map(th => th.innerText.trim());
    const index = headers.indexOf(column);
    const tr = [...grid.querySelectorAll('tbody tr')].find(tr => tr.querySelector('td')?.innerText.trim() === row);
    return index < 0 || !tr ? null : tr.querySelectorAll('td')[index]?.innerText.trim() ?? null;
}"""

# Per provider (named by its legend entry's colour): the opacity of each line of chart `n`.
LINE_OPACITIES = """(n) => {
    const chart = document.querySelectorAll('[data-testid="stVegaLiteChart"]')[n];
    const names = [...chart.querySelectorAll('.role-legend-label text')].map(t => t.textContent);
    const colours = [...chart.querySelectorAll('.role-legend-symbol path')].map(p => p.getAttribute('stroke') || p.getAttribute('fill'));
    const byColour = Object.fromEntries(colours.map((c, i) => [c, names[i]]));
    const out = {};
    for (const path of chart.querySelectorAll('.mark-line.role-mark path')) {
        const name = byColour[path.getAttribute('stroke')] ?? path.getAttribute('stroke');
        (out[name] ??= []).push(Number(path.getAttribute('stroke-opacity') ?? path.getAttribute('opacity') ?? 1));
    }
    return out;
}"""


def write_traffic(work, *, loopback_ms: float, tag: str, n: int = 40) -> None:
    """Attempts over the last ten minutes, as the playground would have logged them."""
    from conductor_core.models import AttemptRecord, utcnow
    from conductor_core.store import RequestLog

    now = utcnow()
    records = [
        AttemptRecord(
            request_id=f"{tag}-{provider}-{i}",
            provider=provider,
            model=model,
            status="ok",
            created_at=now - timedelta(seconds=600 * (1 - i / n)),
            latency_ms=latency,
            ttft_ms=latency / 5,
            output_tokens=40,
            streamed=True,
            cost_usd=cost,
        )
        for i in range(n)
        for provider, model, latency, cost in (
            ("local", "gemma-3-270m", 300.0 + i, 0.0),
            ("loopback", "loopback-model", loopback_ms, None),  # an endpoint: no known price
        )
    ]
    log = RequestLog(data_dir=work / "data")
    try:
        assert log.write_many(records) == len(records)
    finally:
        log.close()


@pytest.fixture
def dashboard_server(services, tmp_path):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path
    loopback = OpenAIServer(models=["loopback-model"]).start()
    write_traffic(work, loopback_ms=90.0, tag="first")
    # The local model is not loaded: its traffic is in the log, which is all the dashboard reads.
    server = Playground(work, config=endpoint_config(loopback), extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"})
    try:
        yield {"url": server.url, "work": work}
    finally:
        server.stop()
        loopback.stop()


def open_dashboard(page, url: str) -> None:
    page.goto(url)
    page.get_by_test_id("stSidebarNav").wait_for(timeout=120_000)
    open_page(page, "Dashboard")
    wait_idle(page)
    page.locator('[data-testid="stVegaLiteChart"] .role-legend-label text').first.wait_for(timeout=60_000)


def wait_refreshes(page, count: int) -> None:
    """Until the live panel has redrawn `count` times (its caption's clock moved)."""
    for _ in range(count):
        before = page.get_by_text("updated", exact=False).first.inner_text()
        page.wait_for_function(
            "(before) => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
            ".some(e => e.innerText.includes('updated') && e.innerText !== before)",
            arg=before,
            timeout=30_000,
        )


def test_a_legend_click_isolates_a_provider_through_the_live_refresh(dashboard_server, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            open_dashboard(page, dashboard_server["url"])
            latency = page.get_by_test_id("stVegaLiteChart").first
            assert latency.locator(".role-title-text", has_text="Latency").count() == 1
            shown = page.evaluate(LINE_OPACITIES, 0)
            assert set(shown) == {"local", "loopback"} and min(shown["local"] + shown["loopback"]) == 1, shown

            latency.locator(".role-legend-label text", has_text="loopback").click()
            page.wait_for_function(
                f"() => {{ const o = ({LINE_OPACITIES})(0); return o.local && o.local.every(v => v < 0.2); }}",
                timeout=30_000,
            )
            # The live refresh redraws the chart every 2 seconds: the provider stays isolated.
            wait_refreshes(page, 2)
            wait_idle(page)
            isolated = page.evaluate(LINE_OPACITIES, 0)
            assert all(v < 0.2 for v in isolated["local"]), isolated
            assert all(v == 1 for v in isolated["loopback"]), isolated
            shots(page, "dashboard_isolated")
        finally:
            browser.close()


def test_the_providers_table_says_unknown_and_keeps_a_grown_p50_whole(dashboard_server, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context(viewport={"width": 1400, "height": 1000})
            context.add_init_script(script=RECORD_TEXT)
            page = context.new_page()
            open_dashboard(page, dashboard_server["url"])
            page.wait_for_function(CELL, arg=["loopback", "p50"], timeout=60_000)
            assert page.evaluate(CELL, ["loopback", "Cost"]) == "unknown"  # never "$0.00000"
            local_name = get_spec("local").display_name  # the table names providers for people
            assert page.evaluate(CELL, [local_name, "Cost"]) == "free"

            # The table was drawn for a 90 ms p50; then the endpoint slows down.
            write_traffic(dashboard_server["work"], loopback_ms=SLOW_MS, tag="slow", n=400)
            page.wait_for_function(
                f"(want) => ({CELL})(['loopback', 'p50']) === want", arg=f"{SLOW_MS:.0f}", timeout=60_000
            )
            page.evaluate("() => { window.__drawnTexts = []; }")
            page.wait_for_function(
                "(text) => window.__drawnTexts.some(d => d.text === text)", arg=f"{SLOW_MS:.0f} ms", timeout=30_000
            )
            drawn = [d for d in page.evaluate(DRAWN, " ms") if d["text"] == f"{SLOW_MS:.0f} ms"]
            assert drawn and all(d["whole"] for d in drawn), drawn
            shots(page, "dashboard_providers_1400")
        finally:
            browser.close()


def test_a_grown_p50_is_whole_at_phone_width(dashboard_server, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        try:
            phone = {**p.devices["iPhone 13"], "viewport": {"width": 390, "height": 844}, "device_scale_factor": 1}
            phone.pop("default_browser_type", None)
            context = browser.new_context(**phone)
            context.add_init_script(script=RECORD_TEXT)
            page = context.new_page()
            page.goto(dashboard_server["url"])
            page.get_by_test_id("stExpandSidebarButton").click()
            page.get_by_test_id("stSidebarNav").get_by_text("Dashboard", exact=True).click()
            page.get_by_role("heading", name="Dashboard", exact=True).wait_for(timeout=60_000)
            wait_idle(page)
            page.get_by_test_id("stDataFrame").first.scroll_into_view_if_needed()
            page.wait_for_function(CELL, arg=["loopback", "p50"], timeout=60_000)
            # Drawn for a 90 ms p50; then the endpoint slows down.
            write_traffic(dashboard_server["work"], loopback_ms=SLOW_MS, tag="slow", n=400)
            page.wait_for_function(
                f"(want) => ({CELL})(['loopback', 'p50']) === want", arg=f"{SLOW_MS:.0f}", timeout=60_000
            )
            page.evaluate("() => { window.__drawnTexts = []; }")
            page.wait_for_function(
                "(text) => window.__drawnTexts.some(d => d.text === text)", arg=f"{SLOW_MS:.0f} ms", timeout=30_000
            )
            drawn = page.evaluate(DRAWN, " ms")  # every p50 and p95 the phone shows
            assert drawn and all(d["whole"] for d in drawn), [d for d in drawn if not d["whole"]]
            overflow = page.evaluate(
                "() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, f"the Dashboard is {overflow}px wider than the phone"
            shots(page, "dashboard_providers_390")
        finally:
            browser.close()
