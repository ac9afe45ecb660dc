"""A gateway key's life in a real browser (issue 23, points 3-4): a person makes a key on the Keys
page and copies it (shown once); an app uses it through a real `python -m gateway` on the same
database with the official openai client, against a loopback OpenAI upstream; the Dashboard
filtered by that key shows exactly its 2 requests and its spend; the person revokes it on the
page, and the app is refused (401) from then on. After a reload, neither the page nor the
Dashboard's exports (nor the servers' own logs) hold any part of the key but its prefix.

SQLite and PostgreSQL: the playground and the gateway are separate processes sharing one
database, as deployed. Nothing is timed: every step waits for a state, with a deadline."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import browser_support
import openai
import pytest
from browser_support import Playground, choose, eventually, launch, open_page, wait_idle

from tests.redis_support import RedisServer
from tests.secret_support import leaks
from tests.store_backends import Backend, postgres_schema
from tests.test_durability import GPT, UPSTREAM_KEY
from tests.test_gateway_keys import ADMIN_KEY, PRICED, Gateway

services = browser_support.services
shots = browser_support.shots

pytestmark = pytest.mark.timeout(600)

PREFIX_LENGTH = len("sk-cnd-") + 4  # what the page shows of a key: sk-cnd- and 4 characters


class Deployment:
    def __init__(self, playground: Playground, gateway: Gateway, work: Path) -> None:
        self.playground, self.gateway, self.work = playground, gateway, work


@pytest.fixture(params=["sqlite", "postgresql"])
def deployment(request: pytest.FixtureRequest, services, tmp_path: Path) -> Iterator[Deployment]:
    from conductor_core.testing.protocol_servers import OpenAIServer

    with ExitStack() as cleanup:
        url = cleanup.enter_context(postgres_schema()) if request.param == "postgresql" else None
        backend = Backend(request.param, url, tmp_path / "data")
        upstream = cleanup.enter_context(OpenAIServer(models=[GPT, PRICED]))
        redis = RedisServer(tmp_path).start()
        cleanup.callback(redis.stop)
        env = {
            "CONDUCTOR_LOCAL_ENABLED": "false",
            "OPENAI_API_KEY": UPSTREAM_KEY,
            "OPENAI_BASE_URL": upstream.url,
            **({"CONDUCTOR_DATABASE_URL": url} if url else {}),
        }
        playground = Playground(tmp_path, config="", extra_env=env)  # its data dir: tmp_path / "data"
        cleanup.callback(playground.stop)
        gateway = Gateway(backend, upstream, redis.url, f"keyspage{id(backend)}:", tmp_path, 1)
        cleanup.callback(gateway.stop)
        yield Deployment(playground, gateway, tmp_path)


def page_text(page) -> str:
    """Everything the page holds: its text and its HTML (the tables' accessible cells included)."""
    return page.inner_text("body") + "\n" + page.content()


def metric(page, label: str) -> str | None:
    return page.evaluate(
        """(label) => {
            const tile = [...document.querySelectorAll('[data-testid="stMetric"]')]
                .find(m => m.querySelector('[data-testid="stMetricLabel"]')?.innerText.trim() === label);
            return tile ? tile.querySelector('[data-testid="stMetricValue"]').innerText.trim() : null;
        }""",
        label,
    )


def overflow(page) -> int:
    """How much wider than the window the page's content is (px)."""
    return page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth - window.innerWidth")


def download(page, label: str) -> bytes:
    with page.expect_download(timeout=60_000) as started:
        page.get_by_test_id("stDownloadButton").filter(has_text=label).first.click()
    return Path(started.value.path()).read_bytes()


def ask(client: openai.OpenAI) -> None:
    client.chat.completions.create(model=f"openai/{PRICED}", messages=[{"role": "user", "content": "hi"}], max_tokens=5)


def test_a_key_made_on_the_page_is_used_filtered_revoked_and_never_shown_again(deployment: Deployment, shots):
    from playwright.sync_api import sync_playwright

    url, gateway = deployment.playground.url, deployment.gateway
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            page.goto(url)
            page.get_by_test_id("stSidebarNav").wait_for(timeout=120_000)
            open_page(page, "Keys")
            wait_idle(page)

            # Make it: a name, the openai provider only, a budget.
            page.get_by_label("Name", exact=True).fill("ci bot")
            page.get_by_test_id("stMultiSelect").click()
            page.get_by_role("option").filter(has_text="openai (any of its models)").first.click()
            page.keyboard.press("Escape")
            page.get_by_label("Budget (USD)").fill("5")
            page.get_by_role("button", name="Create key").click()
            code = page.get_by_test_id("stCode").first
            code.wait_for(timeout=60_000)
            wait_idle(page)
            secret = code.inner_text().strip()
            assert secret.startswith("sk-cnd-") and len(secret) == 50, secret
            assert page.get_by_text("stored only as a hash", exact=False).count() == 1
            prefix, hidden = secret[:PREFIX_LENGTH], secret[PREFIX_LENGTH:]
            shots(page, "keys_created")

            # An app uses it, through the gateway, with the official client.
            client = gateway.client(secret)
            for _ in range(2):
                ask(client)
            with pytest.raises(openai.PermissionDeniedError):  # the key allows openai only
                client.chat.completions.create(model="auto", messages=[{"role": "user", "content": "hi"}])

            ask(gateway.client(ADMIN_KEY))  # and one request without a gateway key

            # The Dashboard, filtered by the key, shows exactly its 2 requests (the refused one was refused before
            # any attempt: never logged), and its spend against its budget.
            open_page(page, "Dashboard")
            wait_idle(page)
            choose(page, "Key", f"ci bot · {prefix}")
            page.get_by_text("ci bot has spent", exact=False).wait_for(timeout=60_000)
            eventually(lambda: metric(page, "Requests") == "2", what="the key's 2 requests on the Dashboard")
            assert page.get_by_text("of its $5.00 monthly budget", exact=False).count() == 1
            shots(page, "dashboard_key_filter")
            choose(page, "Key", "No key (playground, admin key)")
            page.get_by_text("without a key", exact=False).first.wait_for(timeout=60_000)
            eventually(lambda: metric(page, "Requests") == "1", what="the request without a key")
            choose(page, "Key", "All traffic")
            eventually(lambda: metric(page, "Requests") == "3", what="everyone's requests")

            # Revoke it on the page, after the confirmation.
            open_page(page, "Keys")
            wait_idle(page)
            page.get_by_role("button", name="Revoke…").click()
            page.get_by_role("button", name="Yes, revoke it").click()
            page.get_by_text("every gateway refuses it", exact=False).wait_for(timeout=60_000)
            wait_idle(page)
            assert page.get_by_role("button", name="Revoke…").count() == 0  # it cannot be revoked twice

            def refused() -> bool:
                try:
                    ask(client)
                except openai.AuthenticationError as error:
                    return error.status_code == 401 and "revoked" in str(error)
                return False

            eventually(refused, what="the revoked key refused with 401")

            # After a reload: the prefix, and nothing more of the key, anywhere.
            page.reload()
            page.get_by_role("heading", name="Keys", exact=True).wait_for(timeout=60_000)
            wait_idle(page)
            # The table is a canvas; its accessible cells hold the values.
            page.locator('[data-testid="stDataFrame"] td', has_text="revoked ").first.wait_for(
                state="attached", timeout=60_000
            )
            shown = page_text(page)
            assert f"{prefix}…" in shown and "ci bot" in shown
            assert leaks(hidden, shown) == [] and page.get_by_test_id("stCode").count() == 0
            shots(page, "keys_desktop", full_page=True)

            open_page(page, "Dashboard")
            wait_idle(page)
            exported_csv, exported_json = download(page, "CSV"), download(page, "JSON")
            rows = json.loads(exported_json)
            assert sorted((row["key_name"] or "", row["status"]) for row in rows) == [
                ("", "ok"),
                *[("ci bot", "ok")] * 2,
            ]
            assert b"ci bot" in exported_csv and b"key_name" in exported_csv
            for exported in (exported_csv, exported_json):
                assert leaks(hidden, exported.decode()) == []
            for output in (gateway.output, deployment.work / "streamlit.log"):
                assert leaks(hidden, output.read_text(errors="replace")) == [], output

            phone = {**p.devices["iPhone 13"], "viewport": {"width": 390, "height": 844}, "device_scale_factor": 1}
            phone.pop("default_browser_type", None)
            context = browser.new_context(**phone)
            small = context.new_page()
            small.goto(f"{url}/keys")
            small.get_by_role("heading", name="Keys", exact=True).wait_for(timeout=120_000)
            wait_idle(small)
            small.locator('[data-testid="stDataFrame"] td', has_text="ci bot").first.wait_for(
                state="attached", timeout=60_000
            )
            assert leaks(hidden, page_text(small)) == []
            assert overflow(small) <= 1, "the Keys page is wider than the phone"
            shots(small, "keys_phone", full_page=True)
            small.get_by_test_id("stExpandSidebarButton").click()
            open_page(small, "Dashboard")
            wait_idle(small)
            small.get_by_test_id("stSelectbox").filter(has=small.get_by_text("Key", exact=True)).wait_for(
                timeout=60_000
            )
            assert overflow(small) <= 1, "the Dashboard with its Key filter is wider than the phone"
            shots(small, "dashboard_key_filter_390")
            context.close()
        finally:
            browser.close()
