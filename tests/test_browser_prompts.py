"""In Chromium: a prompt saved twice on the Prompts page, labelled, diffed, then opened in Compare
at its label, its variables filled in and sent; the loopback upstream receives the labelled
version, rendered."""

from __future__ import annotations

import pytest
from browser_support import Playground, choose, endpoint_config, launch, open_page, wait_idle
from test_browser import chat_requests, open_chat

pytestmark = pytest.mark.timeout(600)

REPLY = "Your parcel left the depot this morning."


def test_save_twice_label_diff_and_open_in_compare_at_the_label(services, tmp_path, shots):
    from playwright.sync_api import expect, sync_playwright

    from conductor_core.testing.protocol_servers import OpenAIServer

    upstream = OpenAIServer(models=["m"], reply=REPLY).start()
    server = Playground(tmp_path, config=endpoint_config(upstream))
    try:
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page(viewport={"width": 1500, "height": 1000})
                open_chat(page, server.url)
                open_page(page, "Prompts")
                wait_idle(page)

                # Version 1, on the loopback endpoint.
                page.get_by_role("textbox", name="Name", exact=True).fill("support-reply")
                choose(page, "Provider", "loopback")
                wait_idle(page)
                system = page.get_by_role("textbox", name="System prompt", exact=True)
                system.fill("You answer for {{company}}.")
                page.get_by_role("textbox", name="Message", exact=True).fill("Customer asks: {{question}}")
                page.get_by_role("button", name="Save prompt").click()
                expect(page.get_by_text("Saved support-reply version 1.")).to_be_visible(timeout=60_000)
                wait_idle(page)

                # Version 2: another system prompt.
                system = page.get_by_role("textbox", name="System prompt", exact=True)
                expect(system).to_have_value("You answer for {{company}}.", timeout=30_000)  # loaded from v1
                system.fill("You answer kindly for {{company}}.")
                page.get_by_role("button", name="Save as new version").click()
                expect(page.get_by_text("Saved support-reply version 2.")).to_be_visible(timeout=60_000)
                wait_idle(page)

                # production -> v2, recorded; the diff of v1 and v2.
                choose(page, "Version", "v2")
                page.get_by_role("button", name="Move label", exact=True).click()
                expect(page.get_by_text("production now points at v2.")).to_be_visible(timeout=60_000)
                wait_idle(page)
                diff = page.get_by_test_id("stCode").filter(has_text="--- support-reply@1")
                expect(diff).to_contain_text("-You answer for {{company}}.", timeout=30_000)
                expect(diff).to_contain_text("+You answer kindly for {{company}}.")
                shots(page, "prompts-page", full_page=True)

                # Open in Compare at the label, fill the variables, send.
                choose(page, "At", "production")
                wait_idle(page)
                page.get_by_role("link", name="Open in Compare").click()
                page.get_by_role("heading", name="Compare", exact=True).wait_for(timeout=60_000)
                expect(page.get_by_text("Prompt support-reply@production")).to_be_visible(timeout=60_000)
                wait_idle(page)
                page.get_by_role("textbox", name="company", exact=True).fill("Acme")
                page.get_by_role("textbox", name="question", exact=True).fill("Where is my parcel?")
                page.get_by_role("button", name="Send", exact=True).click()

                def served() -> list[dict]:
                    return [
                        r
                        for r in chat_requests(upstream)
                        if r["messages"][0] == {"role": "system", "content": "You answer kindly for Acme."}
                    ]

                page.wait_for_function(
                    "(reply) => document.body.innerText.includes(reply)", arg=REPLY, timeout=120_000, polling=200
                )
                assert served(), chat_requests(upstream)
                first = served()[0]
                assert first["messages"][1:] == [{"role": "user", "content": "Customer asks: Where is my parcel?"}]
                assert first["model"] == "m"
                expect(page.get_by_text("Customer asks: Where is my parcel?").first).to_be_visible()
                shots(page, "prompts-open-in-compare", full_page=True)
                # Get code for column 1's request: the gateway call of the prompt at its label.
                page.get_by_text("Share this round: export or get code").click()
                snippet = page.get_by_role("tabpanel", name="Python · gateway").get_by_test_id("stCode")
                expect(snippet).to_contain_text("model='prompt:support-reply@production'", timeout=30_000)
                expect(snippet).to_contain_text("'question': 'Where is my parcel?'")
            finally:
                browser.close()
    finally:
        server.stop()
        upstream.stop()
