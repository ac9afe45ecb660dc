"""Who answers, in a real browser: the provider a person picks stays picked whatever its state
(a breaker that opens must not turn the choice into AUTO), and AUTO keeps answering fast when
an endpoint it has never tried hangs.

The playground runs with three OpenAI-compatible loopback endpoints (the real openai SDK over
HTTP; the local model is off): `hang` (listed first, so AUTO tries it first while nothing is
known), `alpha` and `beta`. A hang lasts until the test releases it, so nothing here races on
speed: without the fixes the awaited state never comes.
"""

from __future__ import annotations

import pytest
from browser_support import (
    Playground,
    ask,
    choose,
    endpoint_config,
    eventually,
    launch,
    log_records,
    wait_idle,
    wait_settled,
)

from conductor_core.testing.protocol_servers import Fault

pytestmark = pytest.mark.timeout(420)

REPLIES = {
    "hang": "The hanging endpoint answers at last.",
    "alpha": "Alpha answers from a loopback server.",
    "beta": "Beta answers from another loopback server.",
}
FIRST_TRY_S = 4


@pytest.fixture(scope="module")
def routing_app(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("browser_routing")
    servers = {name: OpenAIServer(reply=reply, models=[f"{name}-model"]).start() for name, reply in REPLIES.items()}
    config = (
        "local_enabled = false\n"
        "max_retries = 0\n"
        "breaker_failures = 2\n"
        "breaker_cooldown_s = 600\n"  # paused for the whole test once it opens
        f"first_try_timeout_s = {FIRST_TRY_S}\n"
        "timeout_s = 300\n"  # a hang outlasts every wait below: only the first-try deadline ends it early
        + "".join(endpoint_config(server, name) for name, server in servers.items())
    )
    app = Playground(work, config=config, name="routing")
    try:
        yield {"url": app.url, "work": work, "servers": servers}
    finally:
        for server in servers.values():
            server.release()
        app.stop()
        for server in servers.values():
            server.stop()


@pytest.fixture
def servers(routing_app):
    for server in routing_app["servers"].values():
        server.reset()
    yield routing_app["servers"]
    for server in routing_app["servers"].values():
        server.release()


def chats(server) -> list[dict]:
    return [r for r in server.requests if r["path"].endswith("/chat/completions")]


_ANSWERED = """(n) => {
    if (document.querySelector('[data-stale="true"]') || document.querySelector('[data-testid="stStatusWidget"]')) return false;
    const m = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
        .filter(e => e.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
    const input = document.querySelector('[data-testid="stChatInputTextArea"]');
    if (m.length < n || !input || input.disabled) return false;
    const text = m[n - 1].innerText;
    return !text.includes('Stop') && !text.includes('Waiting for the first token') && !text.includes('▌');
}"""


def answered(page, count: int, timeout_ms: int = 90_000):
    """The `count`-th assistant message once it has ended (answer or error) and the input is back."""
    page.wait_for_function(_ANSWERED, arg=count, timeout=timeout_ms, polling=100)
    wait_idle(page)
    return page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarAssistant"])').nth(
        count - 1
    )


def chosen_provider(page) -> str:
    """What the sidebar's Provider control shows (its option's label)."""
    return page.get_by_test_id("stSidebar").get_by_role("combobox", name="Provider").input_value()


def stored_provider(work, url: str) -> str:
    """The provider the chat session in `url` is saved with, read from the app's database as
    stored (the endpoints' names are not registered in this process)."""
    import json

    from sqlalchemy import select

    from conductor_core.store import RequestLog
    from conductor_core.workbench.sessions import lanes_table

    session_id = url.split("session=")[1].split("&")[0]
    log = RequestLog(None, data_dir=work / "data")
    try:
        with log.engine.connect() as conn:
            stored = conn.execute(select(lanes_table.c.variant).where(lanes_table.c.session_id == session_id)).scalar()
        return json.loads(stored)["provider"]
    finally:
        log.close()


def test_a_chosen_provider_stays_chosen_when_its_breaker_opens(routing_app, servers, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(routing_app["url"])
            page.get_by_test_id("stChatInput").wait_for(timeout=60_000)
            wait_idle(page)
            sidebar = page.get_by_test_id("stSidebar")
            choose(page, "Provider", "alpha", within=sidebar)
            wait_idle(page)
            assert "alpha" in chosen_provider(page) and "AUTO" not in chosen_provider(page)

            ask(page, "First message")
            assert REPLIES["alpha"] in answered(page, 1).inner_text()

            # alpha starts failing: two failures in a row open its breaker (breaker_failures = 2).
            servers["alpha"].script(*[Fault("status", status=500, message="alpha is broken")] * 4)
            for n, prompt in ((2, "Second message"), (3, "Third message")):
                ask(page, prompt)
                assert "alpha is unavailable" in answered(page, n).inner_text()
            # A request for the paused provider fails at once with its error: it is never sent to another.
            # (Before, the option's label changed to "paused", Streamlit reset the control to AUTO
            # on the next message, and AUTO sent it elsewhere, saving AUTO into the session.)
            ask(page, "Fourth message")
            eventually(
                lambda: chats(servers["beta"]) or chats(servers["hang"]) or page.evaluate(_ANSWERED, 4),
                90,
                "the fourth message answered, or sent elsewhere",
            )
            assert chats(servers["beta"]) == [] and chats(servers["hang"]) == []
            fourth = answered(page, 4).inner_text()
            assert "paused it" in fourth and "tried again in" in fourth, fourth
            assert len(chats(servers["alpha"])) == 3  # the fourth never reached it
            wait_settled(page)
            # The choice holds, and the state is said beside it (not in the option's label).
            assert "alpha" in chosen_provider(page) and "AUTO" not in chosen_provider(page)
            assert stored_provider(routing_app["work"], page.url) == "alpha"
            assert "Paused after repeated failures" in page.get_by_test_id("stSidebar").inner_text()
            shots(page, "chat-provider-paused-1280")

            # A bookmarked session reopens on its provider.
            page.reload()
            page.get_by_test_id("stChatInput").wait_for(timeout=60_000)
            wait_settled(page)
            assert "alpha" in chosen_provider(page) and "AUTO" not in chosen_provider(page)
            assert stored_provider(routing_app["work"], page.url) == "alpha"
        finally:
            browser.close()


def test_auto_answers_fast_when_an_endpoint_it_never_tried_hangs(routing_app, servers, shots):
    """AUTO tries `hang` first (nothing is known yet, and it is listed first); `hang` sends nothing
    until the test ends. The answer must come from another endpoint once the first-try deadline
    passes, not after the provider's timeout (five minutes here)."""
    from playwright.sync_api import sync_playwright

    servers["hang"].script(Fault("hang", hang_s=600))
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(routing_app["url"])
            page.get_by_test_id("stChatInput").wait_for(timeout=60_000)
            wait_idle(page)
            assert "AUTO" in chosen_provider(page)
            ask(page, "Who answers first?")
            # Generous, yet far below the hang: without the deadline the answer waits for the timeout.
            answer = answered(page, 1, timeout_ms=60_000).inner_text()
            served_by = next(name for name in ("alpha", "beta") if REPLIES[name] in answer)
            assert chats(servers["hang"]) and "hang" in answer  # it was tried first, and the page says so
            shots(page, "chat-auto-first-try-1280")
        finally:
            browser.close()

    [missed] = log_records(routing_app["work"], provider="hang")
    assert missed.error_type == "timeout" and f"within {FIRST_TRY_S} s" in missed.error_message
    [served] = [r for r in log_records(routing_app["work"], provider=served_by) if r.prompt.endswith("first?")]
    assert served.status == "ok" and served.request_id == missed.request_id
