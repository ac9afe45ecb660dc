"""The Arena, the leaderboard, comparison links and replay, in a real browser.

The playground runs with two OpenAI-compatible loopback endpoints (`alpha` and `beta`, the
real openai SDK over HTTP; the local model is off, so rounds are quick) and is driven with
Playwright in Debian's chromium: a blind round whose names stay hidden until the vote (and
survive a reload), the vote stored, on the Dashboard's leaderboard and in its CSV export; a
comparison opened from a URL (sent once; an unconfigured target named with its key); a
logged request replayed from the Dashboard with its messages and parameters. The replies
are fixed texts the servers send, never a model's words.
"""

from __future__ import annotations

import csv
import io
import os
from pathlib import Path

import pytest
from browser_support import (
    Playground,
    choose,
    commit,
    endpoint_config,
    eventually,
    launch,
    wait_idle,
    wait_settled,
)

pytestmark = pytest.mark.timeout(420)

REPLIES = {"alpha": "First reply from a loopback server.", "beta": "Second reply from another loopback server."}
MODELS = {"alpha": "alpha-model", "beta": "beta-model"}


@pytest.fixture(scope="module")
def arena_app(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("browser_arena")
    servers = {
        name: OpenAIServer(reply=REPLIES[name], models=[MODELS[name]], chunk_delay_s=0.01).start() for name in REPLIES
    }
    config = "local_enabled = false\n" + "".join(endpoint_config(server, name) for name, server in servers.items())
    app = Playground(work, config=config, name="arena")
    try:
        yield {"url": app.url, "work": work, "servers": servers}
    finally:
        app.stop()
        for server in servers.values():
            server.stop()


@pytest.fixture
def servers(arena_app):
    for server in arena_app["servers"].values():
        server.reset()
    yield arena_app["servers"]


def chats(server) -> list[dict]:
    return [r["json"] for r in server.requests if r["path"].endswith("/chat/completions")]


def _log(work: Path):
    from conductor_core.store import RequestLog

    return RequestLog(os.environ.get("CONDUCTOR_TEST_DB_URL") or None, data_dir=work / "data")


def main_text(page) -> str:
    """The page's text once its script has finished drawing it (settled alone can come while a
    rerun is still drawing, before its status widget shows)."""
    wait_idle(page)
    wait_settled(page)
    return page.get_by_test_id("stMain").inner_text()


def leaderboard_rows(page) -> list[str]:
    """The leaderboard's rows as text (st.dataframe draws on a canvas; its grid is in the DOM for screen readers)."""
    grid = page.get_by_test_id("stDataFrame").filter(has_text="Blind votes")
    return [row.text_content() for row in grid.locator("[role=row]").all()][1:]


def test_a_blind_vote_hides_the_names_until_the_vote_then_rates_them(arena_app, servers, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{arena_app['url']}/arena")
            page.get_by_role("heading", name="Arena", exact=True).wait_for(timeout=60_000)
            wait_idle(page)
            # Both ready endpoints are the contestants by default.
            chosen = page.get_by_test_id("stMultiSelect").inner_text()
            assert "alpha-model" in chosen and "beta-model" in chosen
            page.get_by_label("Prompt").fill("Which reply is better?")
            page.get_by_role("button", name="Start blind round").click()
            page.get_by_text("Which answer is best?").wait_for(timeout=60_000)
            wait_settled(page)
            assert "?match=arena_" in page.url
            shots(page, "arena-blind-1280", full_page=True)

            def blind_view_is_anonymous() -> None:
                text = main_text(page)
                assert REPLIES["alpha"] in text and REPLIES["beta"] in text
                assert "Answer A" in text and "Answer B" in text
                for name in (*MODELS, *MODELS.values()):
                    assert name not in text, f"{name!r} shown before the vote"

            blind_view_is_anonymous()
            # A reload keeps the round, still blind.
            page.reload()
            page.get_by_text("Which answer is best?").wait_for(timeout=60_000)
            wait_settled(page)
            blind_view_is_anonymous()
            assert len(chats(servers["alpha"])) == 1 and len(chats(servers["beta"])) == 1  # not asked again

            page.get_by_role("button", name="A is best").click()
            page.get_by_text("Your vote:").wait_for(timeout=30_000)
            wait_settled(page)
            text = main_text(page)
            assert "alpha/alpha-model" in text and "beta/beta-model" in text
            assert "Your pick" in text and "total" in text  # each answer's latency, with its cost
            shots(page, "arena-reveal-1280", full_page=True)
            match_id = page.url.split("match=")[1].split("&")[0]

            # The vote is stored, with the log rows of the answers it judged.
            from conductor_core.workbench.arena import Arena

            log = _log(arena_app["work"])
            try:
                reveal = Arena(log).reveal(match_id)
                winner = reveal.winner.target
                assert reveal.choice == "A" and winner in ("alpha/alpha-model", "beta/beta-model")
                judged = {a.request_id for a in reveal.answers if a.judged}
                assert len(judged) == 2 and judged <= {r.request_id for r in log.records()}
            finally:
                log.close()

            # The leaderboard counts it: each target with one blind vote, W/L as voted.
            page.get_by_role("link", name="See the ratings on the Dashboard").click()
            page.get_by_text("Leaderboard from blind votes").wait_for(timeout=60_000)
            rows = eventually(lambda: leaderboard_rows(page), 30, "leaderboard rows")
            loser = ({"alpha/alpha-model", "beta/beta-model"} - {winner}).pop()
            by_target = {next(t for t in (winner, loser) if t in row): row for row in rows}
            assert "1 / 0 / 0" in by_target[winner] and "0 / 1 / 0" in by_target[loser]
            assert all("too few votes (1 < 10)" in row for row in rows)
            page.get_by_text("Leaderboard from blind votes").scroll_into_view_if_needed()
            shots(page, "dashboard-leaderboard-1280")

            # The CSV export carries the verdict on each judged answer.
            with page.expect_download() as download:
                page.get_by_test_id("stDownloadButton").filter(has_text="CSV").click()
            rows = list(csv.DictReader(io.StringIO(Path(download.value.path()).read_text(encoding="utf-8"))))
            verdicts = {(r["provider"], r["vote"], r["vote_id"]) for r in rows if r["vote"]}
            assert verdicts == {(winner.split("/")[0], "best", match_id), (loser.split("/")[0], "not best", match_id)}

            # At phone width the round and its reveal still read top to bottom.
            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(f"{arena_app['url']}/arena?match={match_id}")
            phone.get_by_text("Your vote:").wait_for(timeout=60_000)
            wait_settled(phone)
            assert (
                phone.get_by_test_id("stSidebar").bounding_box()["x"] < 0
                or not phone.get_by_test_id("stSidebar").is_visible()
            )
            shots(phone, "arena-reveal-390", full_page=True)
            phone.close()
        finally:
            browser.close()


def test_a_comparison_opens_from_a_url_once_and_names_what_is_missing(arena_app, servers, shots):
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright

    prompt = "Compare us: # not a heading & 100%"
    url = (
        f"{arena_app['url']}/compare?compare=alpha/alpha-model,openai/gpt-4o-mini,beta/beta-model,nosuch/x"
        f"&prompt={quote(prompt)}"
    )
    with sync_playwright() as p:
        browser = launch(p)
        # Clipboard permissions, as a person's browser grants a page it is using.
        context = browser.new_context(
            viewport={"width": 1280, "height": 900}, permissions=["clipboard-read", "clipboard-write"]
        )
        page = context.new_page()
        try:
            page.goto(url)
            page.get_by_text(REPLIES["beta"]).wait_for(timeout=60_000)
            page.get_by_text(REPLIES["alpha"]).wait_for(timeout=60_000)
            wait_settled(page)
            text = main_text(page)
            assert "'openai/gpt-4o-mini' is not configured" in text and "OPENAI_API_KEY" in text
            assert "'nosuch/x' is not a provider Conductor knows" in text
            assert "?session=ses_" in page.url and "prompt=" not in page.url and "compare=" not in page.url
            for name in ("alpha", "beta"):
                sent = chats(servers[name])
                assert len(sent) == 1 and sent[0]["model"] == MODELS[name]
                assert sent[0]["messages"][-1] == {"role": "user", "content": prompt}
            shots(page, "compare-from-url-1280", full_page=True)

            # "Copy link" puts the URL that opens this comparison again on the clipboard...
            page.evaluate("() => navigator.clipboard.writeText('nothing yet')")
            page.get_by_role("button", name="Copy link").click()
            page.get_by_text("Link copied").wait_for(timeout=10_000)
            link = page.evaluate("() => navigator.clipboard.readText()")
            assert "compare=alpha/alpha-model,beta/beta-model" in link and "prompt=Compare+us" in link
            # ...and the link is still there to read, for a browser that will not copy.
            page.get_by_role("button", name="Show link").click()
            assert page.get_by_test_id("stCode").filter(has_text="compare=").inner_text().strip() == link
            shots(page, "compare-copy-link-1280")

            # A reload shows the comparison and sends nothing again.
            page.reload()
            page.get_by_text(REPLIES["alpha"]).wait_for(timeout=60_000)
            wait_settled(page)
            page.wait_for_timeout(1000)
            assert len(chats(servers["alpha"])) == 1 and len(chats(servers["beta"])) == 1
        finally:
            browser.close()


def test_a_logged_request_is_replayed_from_the_dashboard_with_its_parameters(arena_app, servers, shots):
    """A playground chat (written from this process into the app's database, as the chat page
    would) with history and non-default parameters, replayed against the other endpoint."""
    from playwright.sync_api import sync_playwright
    from workbench_support import chat_in_a_session

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor
    from conductor_core.workbench.sessions import SessionStore
    from conductor_core.workbench.variants import Variant

    work = arena_app["work"]
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=work / "data",
        endpoints={n: EndpointConfig(base_url=s.url, models=[MODELS[n]]) for n, s in servers.items()},
    )
    conductor = Conductor(settings)
    try:
        store = SessionStore.for_log(conductor.log)
        variant = Variant(
            provider="alpha",
            model="alpha-model",
            temperature=0.3,
            max_tokens=42,
            top_p=0.8,
            stop=("END",),
            seed=5,
            system="Answer briefly.",
        )
        chat_in_a_session(conductor, store, variant, ["First, a question", "Replay me, please"])
        conductor.log.flush()
    finally:
        conductor.close()
    sent_before = chats(servers["alpha"])[-1]
    for server in servers.values():
        server.requests.clear()

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{arena_app['url']}/dashboard")
            page.get_by_text("Replay a logged request").wait_for(timeout=60_000)
            wait_idle(page)
            choose(page, "Request", "Replay me, please")
            wait_idle(page)
            against = page.get_by_test_id("stMultiSelect").filter(
                has_text="Against (it runs again on alpha/alpha-model"
            )
            assert "beta/beta-model" in against.inner_text()  # the other endpoint is offered first
            page.get_by_text("Replay a logged request").scroll_into_view_if_needed()
            shots(page, "dashboard-replay-1280")
            page.get_by_role("button", name="Replay in Compare").click()
            page.get_by_role("heading", name="Compare", exact=True).wait_for(timeout=60_000)
            page.get_by_text(REPLIES["beta"]).last.wait_for(timeout=60_000)
            eventually(
                lambda: len(chats(servers["alpha"])) == 1 and len(chats(servers["beta"])) == 1, 30, "both replayed"
            )
            wait_settled(page)
            assert "Replay of request" in main_text(page)
            shots(page, "compare-replay-1280", full_page=True)
        finally:
            browser.close()

    expected = {
        k: sent_before[k]
        for k in ("messages", "temperature", "max_tokens", "top_p", "stop", "seed")
        if k in sent_before
    }
    assert (
        expected["messages"][0] == {"role": "system", "content": "Answer briefly."} and len(expected["messages"]) == 4
    )
    for name in ("alpha", "beta"):
        replayed = chats(servers[name])[0]
        assert replayed["model"] == MODELS[name]
        assert {k: replayed.get(k) for k in expected} == expected, name


def test_a_hanging_contestant_is_stopped_and_a_round_left_by_a_dead_server_is_closed(arena_app, servers, shots):
    """beta hangs until the test ends: only Stop can end the round. Then a round that no server
    answers (its server died) is closed when it is opened, not shown waiting for ever."""
    from playwright.sync_api import sync_playwright

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor
    from conductor_core.testing.protocol_servers import Fault
    from conductor_core.workbench.arena import Arena
    from conductor_core.workbench.variants import Variant

    servers["beta"].script(Fault("hang", hang_s=600))
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                page.goto(f"{arena_app['url']}/arena")
                page.get_by_role("heading", name="Arena", exact=True).wait_for(timeout=60_000)
                wait_idle(page)
                page.get_by_label("Prompt").fill("Will both of you answer?")
                page.get_by_role("button", name="Start blind round").click()
                page.get_by_text(REPLIES["alpha"]).wait_for(timeout=60_000)
                page.get_by_text("Waiting for the first token").wait_for(timeout=30_000)
                eventually(lambda: chats(servers["beta"]), 30, "beta asked")
                match_id = page.url.split("match=")[1].split("&")[0]
                shots(page, "arena-waiting-1280")

                page.get_by_role("button", name="Stop", exact=True).click()
                page.get_by_text("Fewer than two answers arrived complete").wait_for(timeout=30_000)
                wait_settled(page)
                assert "was stopped before it finished" in main_text(page)
                shots(page, "arena-stopped-1280", full_page=True)
                # The hanging call is cancelled at the upstream, not left to run to its timeout.
                eventually(lambda: servers["beta"].in_flight == 0, 30, "beta's call cancelled")
                calls = [r for r in servers["beta"].requests if r["path"].endswith("/chat/completions")]
                assert calls and all(r.get("disconnected") for r in calls)

                page.get_by_role("button", name="Reveal without a vote").click()
                page.get_by_text("Not judged: cancelled").wait_for(timeout=30_000)
                wait_settled(page)
                assert "beta/beta-model" in main_text(page)

                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.goto(f"{arena_app['url']}/arena?match={match_id}")
                phone.get_by_text("Fewer than two answers arrived complete").wait_for(timeout=60_000)
                wait_settled(phone)
                shots(phone, "arena-stopped-390", full_page=True)
                phone.close()

                # A round its server left behind (answers pending, no live process on it).
                work = arena_app["work"]
                settings = load_settings(
                    _env_file=None,
                    local_enabled=False,
                    data_dir=work / "data",
                    endpoints={n: EndpointConfig(base_url=s.url, models=[MODELS[n]]) for n, s in servers.items()},
                )
                conductor = Conductor(settings)
                try:
                    orphan = Arena(conductor.log).start(
                        "Left behind", [Variant(provider=n, model=MODELS[n]) for n in ("alpha", "beta")]
                    )
                finally:
                    conductor.close()
                page.goto(f"{arena_app['url']}/arena?match={orphan.id}")
                page.get_by_text("The server answering this round stopped").wait_for(timeout=60_000)
                page.get_by_text("Fewer than two answers arrived complete").wait_for(timeout=30_000)
                wait_settled(page)
                shots(page, "arena-abandoned-1280")
            finally:
                browser.close()
    finally:
        servers["beta"].release()

    log = _log(arena_app["work"])
    try:
        arena = Arena(log)
        stopped = {a.target.split("/")[0]: a for a in arena.unjudgeable(match_id)}
        assert stopped["alpha"].status == "ok" and stopped["beta"].status == "cancelled"
        [cancelled] = log.records(request_id=stopped["beta"].request_id)
        assert (cancelled.provider, cancelled.error_type) == ("beta", "cancelled")
        assert {a.status for a in arena.unjudgeable(orphan.id)} == {"cancelled"}
    finally:
        log.close()


def test_a_blind_round_s_request_is_replayed_with_its_parameters(arena_app, servers, shots):
    """A blind round with 123 max tokens (not the defaults), then one of its requests replayed
    from the Dashboard: both columns get 123, and the page names where the request came from."""
    from playwright.sync_api import sync_playwright

    prompt = "Replay this blind round, please"
    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{arena_app['url']}/arena")
            page.get_by_role("heading", name="Arena", exact=True).wait_for(timeout=60_000)
            wait_idle(page)
            page.get_by_text("Settings (the same for every contestant)").click()
            tokens = page.get_by_label("Max tokens", exact=True)
            tokens.fill("123")
            commit(page, tokens)
            page.get_by_label("Prompt").fill(prompt)
            page.get_by_role("button", name="Start blind round").click()
            page.get_by_text("Which answer is best?").wait_for(timeout=60_000)
            assert {chats(servers[n])[0]["max_tokens"] for n in REPLIES} == {123}
            for server in servers.values():
                server.requests.clear()

            page.goto(f"{arena_app['url']}/dashboard")
            page.get_by_text("Replay a logged request").wait_for(timeout=60_000)
            wait_idle(page)
            choose(page, "Request", prompt)
            wait_idle(page)
            page.get_by_role("button", name="Replay in Compare").click()
            page.get_by_role("heading", name="Compare", exact=True).wait_for(timeout=60_000)
            eventually(lambda: chats(servers["alpha"]) and chats(servers["beta"]), 60, "both columns replayed")
            # The note names the blind round (waited for: the replay opens its comparison with a
            # rerun of its own, and a read between the two found the main pane empty).
            page.get_by_text("blind round (Arena)", exact=False).wait_for(timeout=60_000)
            text = main_text(page)
            assert "blind round (Arena)" in text and "outside the playground" not in text
            shots(page, "compare-arena-replay-1280", full_page=True)
        finally:
            browser.close()
    for name in REPLIES:
        [sent] = chats(servers[name])
        assert sent["max_tokens"] == 123 and sent["messages"] == [{"role": "user", "content": prompt}], name


def test_same_titled_comparisons_are_told_apart_on_a_phone_and_delete_asks_first(arena_app, servers, shots):
    """Two comparisons with the same prompt (so the same title), opened from a link; on a phone the
    sidebar tells them apart by when each was used. Deleting one asks first: Cancel keeps it."""
    from urllib.parse import quote

    from playwright.sync_api import sync_playwright
    from sqlalchemy import select

    from conductor_core.workbench.sessions import sessions_table

    title = "The same question twice"
    link = f"{arena_app['url']}/compare?compare=alpha/alpha-model,beta/beta-model&prompt={quote(title)}"

    def sessions_titled() -> list[str]:
        log = _log(arena_app["work"])  # read as stored (this process knows no endpoint names)
        try:
            with log.engine.connect() as conn:
                return list(conn.execute(select(sessions_table.c.id).where(sessions_table.c.title == title)).scalars())
        finally:
            log.close()

    with sync_playwright() as p:
        browser = launch(p)
        phone = {**p.devices["iPhone 13"], "viewport": {"width": 390, "height": 844}, "device_scale_factor": 1}
        phone.pop("default_browser_type", None)
        page = browser.new_context(**phone).new_page()
        try:
            for _ in range(2):
                page.goto(link)
                page.get_by_text(REPLIES["alpha"]).wait_for(timeout=60_000)
                page.get_by_text(REPLIES["beta"]).wait_for(timeout=60_000)
                wait_settled(page)
                page.wait_for_timeout(1_100)  # the second one is at least a second newer
            assert len(sessions_titled()) == 2
            kept = page.url.split("session=")[1].split("&")[0]

            page.get_by_test_id("stExpandSidebarButton").click()
            sidebar = page.get_by_test_id("stSidebar")
            buttons = sidebar.get_by_role("button").filter(has_text=title)
            eventually(lambda: buttons.count() == 2, 30, "both comparisons listed")
            page.wait_for_function(  # slid open
                "() => document.querySelector('[data-testid=\"stSidebar\"]').getBoundingClientRect().left >= 0",
                timeout=10_000,
            )
            labels = [b.get_by_test_id("stMarkdownContainer").inner_text() for b in buttons.all()]  # not the icon
            assert labels[0] != labels[1], labels  # not only in a tooltip, which a phone never shows
            assert all(" · " in label for label in labels)
            shots(page, "compare-sessions-phone-390")
            page.get_by_test_id("stSidebarCollapseButton").locator("button").click()

            # Delete asks first; Cancel keeps the comparison.
            page.get_by_role("button").filter(has_text="more_horiz").first.click()
            page.get_by_role("button", name="Delete this comparison").click()
            page.get_by_text("for good").wait_for(timeout=30_000)
            wait_settled(page)
            assert kept in sessions_titled()
            shots(page, "compare-delete-asks-390")
            page.get_by_role("button", name="Cancel", exact=True).click()
            page.get_by_role("button", name="Delete this comparison").wait_for(timeout=30_000)
            wait_settled(page)
            assert kept in sessions_titled() and f"session={kept}" in page.url

            page.get_by_role("button", name="Delete this comparison").click()
            page.get_by_role("button", name="Delete comparison", exact=True).click()
            eventually(lambda: kept not in sessions_titled(), 30, "the comparison deleted")
            assert len(sessions_titled()) == 1
        finally:
            browser.close()


def test_compare_column_headers_say_what_differs_between_different_models(arena_app, servers, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = launch(p)
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(f"{arena_app['url']}/compare")
            page.get_by_role("heading", name="Compare", exact=True).wait_for(timeout=60_000)
            wait_idle(page)
            if page.get_by_role("button", name="New comparison").is_enabled():
                page.get_by_role("button", name="New comparison").click()
                wait_idle(page)
            tokens = page.get_by_label("Max tokens", exact=True).first  # column 1 (alpha)
            tokens.fill("64")
            commit(page, tokens)
            page.get_by_label("Prompt", exact=True).fill("Same prompt, other settings")
            page.get_by_role("button", name="Run compare").click()
            page.get_by_text(REPLIES["alpha"]).wait_for(timeout=60_000)
            page.get_by_text(REPLIES["beta"]).wait_for(timeout=60_000)
            wait_settled(page)
            headers = [
                box.inner_text()
                for box in page.get_by_test_id("stVerticalBlock").filter(has_text=REPLIES["alpha"]).all()
                + page.get_by_test_id("stVerticalBlock").filter(has_text=REPLIES["beta"]).all()
            ]
            assert any("alpha/alpha-model" in h and "max 64 tok" in h and "max 256 tok" not in h for h in headers)
            assert any("beta/beta-model" in h and "max 256 tok" in h and "max 64 tok" not in h for h in headers)
            shots(page, "compare-headers-differ-1280", full_page=True)
        finally:
            browser.close()
    assert chats(servers["alpha"])[0]["max_tokens"] == 64 and chats(servers["beta"])[0]["max_tokens"] == 256
