"""Images in Chat, in a real browser: a PNG attached in the chat input reaches an
OpenAI-compatible loopback upstream as an `image_url` part carrying exactly its bytes (checked
at the upstream); the local model, which reads text only, is named as such beside the provider
control and a message with an image is held there with the reason, never sent to it; once
another provider is picked the held message goes; after a reload the thumbnails are still in
the history; the request log names the image and never holds its bytes. Compare greys out the
local model's column for a round with an image; the Arena draws its contestants among those
that read images.

Skipped with the reason when chromium, playwright or the local model is missing, unless
CONDUCTOR_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import base64

import pytest
from browser_support import (
    Playground,
    choose,
    endpoint_config,
    eventually,
    launch,
    log_records,
    wait_idle,
    wait_settled,
)

pytestmark = pytest.mark.timeout(420)

# A 2x2 PNG (real pixels, so the browser draws a thumbnail).
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAIAAAACCAIAAAD91JpzAAAAFklEQVR4nGM8ISfHwMDAxMDAwMDAAAANBAEIfXHKZgAAAABJRU5ErkJggg=="
)
REPLY = "A tiny picture with four pixels."
SECOND_REPLY = "Four red pixels, I think."


@pytest.fixture(scope="module")
def app(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("attachments")
    upstream = OpenAIServer(reply=REPLY, models=["vision-model"], chunk_delay_s=0.01).start()
    second = OpenAIServer(reply=SECOND_REPLY, models=["second-model"], chunk_delay_s=0.01).start()
    config = endpoint_config(upstream) + endpoint_config(second, "vision2")
    server = Playground(work, config=config)
    try:
        yield {"url": server.url, "upstream": upstream, "second": second, "work": work}
    finally:
        server.stop()
        upstream.stop()
        second.stop()


def chat_requests(server) -> list[dict]:
    return [r["json"] for r in server.requests if r["path"].endswith("/chat/completions")]


def user_messages(page):
    return page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])')


def attach_and_send(page, path, prompt: str) -> None:
    """Pick a file with the input's clip, wait until it is uploaded (its chip shows), type, send."""
    chat = page.get_by_test_id("stChatInput")
    chat.locator("input[type=file]").set_input_files(str(path))
    chat.get_by_text(path.name).first.wait_for(timeout=60_000)
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    eventually(lambda: not chat.get_by_role("button").last.is_disabled(), what="the send button is enabled")
    box.press("Enter")


def answered(page, count: int) -> bool:
    messages = page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarAssistant"])')
    return messages.count() >= count and REPLY in messages.nth(count - 1).inner_text()


def test_an_image_reaches_the_upstream_and_a_text_only_model_is_refused_with_the_reason(app, tmp_path, shots):
    from playwright.sync_api import sync_playwright

    picture = tmp_path / "dots.png"
    picture.write_bytes(PNG)
    upstream = app["upstream"]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app["url"])
            page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            sidebar = page.get_by_test_id("stSidebar")
            assert "at most 5 MB each" in page.get_by_test_id("stBottom").inner_text()
            choose(page, "Provider", "loopback", within=sidebar)
            wait_idle(page)

            attach_and_send(page, picture, "What is in this picture?")
            eventually(lambda: answered(page, 1), 120, "the loopback answer")
            wait_settled(page)
            sent = chat_requests(upstream)[-1]
            content = sent["messages"][-1]["content"]
            assert [part["type"] for part in content] == ["text", "image_url"]
            assert content[0]["text"] == "What is in this picture?"
            url = content[1]["image_url"]["url"]
            assert url.startswith("data:image/png;base64,") and base64.b64decode(url.split(",", 1)[1]) == PNG
            first = user_messages(page).first
            first.locator("img").first.wait_for(timeout=30_000)
            assert "dots.png" in first.inner_text()
            shots(page, "attachments-1-sent")

            # A file that is not what its name says is refused, with why, and nothing is sent.
            fake = tmp_path / "fake.png"
            fake.write_bytes(b"just some text, not a picture")
            calls = len(chat_requests(upstream))
            attach_and_send(page, fake, "Is this a picture?")
            page.get_by_text("fake.png is not a PNG, JPEG, WebP or GIF image or a PDF").first.wait_for(timeout=60_000)
            wait_idle(page)
            assert user_messages(page).count() == 1 and len(chat_requests(upstream)) == calls
            assert 'Your message was: "Is this a picture?"' in page.get_by_test_id("stMain").inner_text()

            # The local model reads text only: said beside the provider control, and a message
            # with an image is held there with the reason, never sent.
            choose(page, "Provider", "Local (Gemma 3 270M)", within=sidebar)
            wait_idle(page)
            sidebar.get_by_text("local: reads text only").first.wait_for(timeout=30_000)
            calls = len(chat_requests(upstream))
            attach_and_send(page, picture, "And this one?")
            refused = sidebar.get_by_text("Not sent (local: reads text only)")
            refused.wait_for(timeout=60_000)
            wait_idle(page)
            assert user_messages(page).count() == 1  # nothing was added to the conversation
            assert len(chat_requests(upstream)) == calls
            send_held = sidebar.get_by_role("button", name="Send held message")
            assert send_held.is_disabled()
            shots(page, "attachments-2-refused")

            # Another provider picked: the held message goes, with its image.
            choose(page, "Provider", "loopback", within=sidebar)
            wait_idle(page)
            eventually(lambda: not send_held.is_disabled(), what="the held message can be sent")
            send_held.click()
            eventually(lambda: answered(page, 2), 120, "the second answer")
            second = chat_requests(upstream)[-1]["messages"]
            assert [m["role"] for m in second] == ["user", "assistant", "user"]
            assert second[0]["content"][1]["image_url"]["url"] == url  # history keeps its image
            assert second[2]["content"][0]["text"] == "And this one?"

            # Text alone to the local model is held too: the history it would send has images.
            choose(page, "Provider", "Local (Gemma 3 270M)", within=sidebar)
            wait_idle(page)
            page.get_by_test_id("stChatInputTextArea").fill("Now in words only")
            page.get_by_test_id("stChatInputTextArea").press("Enter")
            sidebar.get_by_text("the conversation before it has images or PDFs").wait_for(timeout=60_000)
            assert user_messages(page).count() == 2
            sidebar.get_by_role("button", name="Discard").click()
            # The click's rerun may not have begun when the page first reads idle: wait for the state.
            eventually(lambda: sidebar.get_by_text("Not sent").count() == 0, 60, "the held message discarded")

            # A reload draws the history from the store: both thumbnails are there.
            page.reload()
            page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
            eventually(lambda: user_messages(page).count() == 2, 60, "both messages after the reload")
            for n in range(2):
                user_messages(page).nth(n).locator("img").first.wait_for(timeout=30_000)
            shots(page, "attachments-3-reloaded")
        finally:
            browser.close()

    records = eventually(lambda: log_records(app["work"], status="ok"), 60, "the logged requests")
    assert len(records) >= 2
    for record in records:
        assert "[image: dots.png, 1 KB]" in (record.prompt or "")
        assert base64.b64encode(PNG).decode()[:24] not in (record.prompt or "")


def test_compare_greys_out_the_column_that_reads_text_only_and_sends_the_image_to_the_others(app, tmp_path, shots):
    from playwright.sync_api import sync_playwright

    picture = tmp_path / "chart.png"
    picture.write_bytes(PNG)
    upstream = app["upstream"]
    before = len(chat_requests(upstream))
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(app["url"])
            page.get_by_test_id("stSidebarNav").get_by_text("Compare", exact=True).click()
            page.get_by_role("button", name="Run compare").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            # The default columns: the local model, then the loopback endpoint.
            page.get_by_text("local: reads text only: skipped for messages with images or PDFs").wait_for(
                timeout=30_000
            )
            page.get_by_label("Prompt", exact=True).fill("Describe the chart.")
            uploader = page.get_by_test_id("stFileUploader")
            assert "5MB per file" in uploader.inner_text() and "200MB" not in uploader.inner_text()  # the real limit
            uploader.locator("input[type=file]").set_input_files(str(picture))
            page.get_by_test_id("stFileUploader").get_by_text("chart.png").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Run compare").click()
            page.get_by_text("Skipped for this message (local: reads text only)").wait_for(timeout=120_000)
            eventually(lambda: REPLY in page.inner_text("body"), 120, "the loopback column's answer")
            wait_settled(page)
            sent = chat_requests(upstream)[before:]
            assert len(sent) == 1
            content = sent[0]["messages"][-1]["content"]
            assert content[0] == {"type": "text", "text": "Describe the chart."}
            assert base64.b64decode(content[1]["image_url"]["url"].split(",", 1)[1]) == PNG
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)  # the round's thumbnail
            shots(page, "attachments-4-compare", full_page=True)
        finally:
            browser.close()
    records = log_records(app["work"])
    assert not [r for r in records if r.provider == "local"]  # never sent to the model that would drop it


def test_arena_draws_its_contestants_among_those_that_read_the_image(app, tmp_path, shots):
    from playwright.sync_api import sync_playwright

    picture = tmp_path / "red.png"
    picture.write_bytes(PNG)
    upstreams = [app["upstream"], app["second"]]
    before = [len(chat_requests(u)) for u in upstreams]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto(f"{app['url']}/arena")
            page.get_by_role("button", name="Start blind round").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            chosen = page.get_by_test_id("stMultiSelect").inner_text()
            assert "gemma" in chosen and "vision-model" in chosen and "second-model" in chosen
            page.get_by_label("Prompt").fill("What colour is it?")
            page.get_by_test_id("stFileUploader").locator("input[type=file]").set_input_files(str(picture))
            page.get_by_test_id("stFileUploader").get_by_text("red.png").first.wait_for(timeout=60_000)
            page.get_by_role("button", name="Start blind round").click()
            page.get_by_text("Which answer is best?").wait_for(timeout=120_000)
            wait_settled(page)
            main = page.get_by_test_id("stMain").inner_text()
            assert "Left out of this round, as they cannot read its images or PDFs: local: reads text only" in main
            assert "Answer C" not in main  # two contestants: the local model was not drawn
            page.locator("[data-testid='stImage'] img").first.wait_for(timeout=30_000)
            for upstream, seen in zip(upstreams, before, strict=True):
                (sent,) = chat_requests(upstream)[seen:]
                url = sent["messages"][-1]["content"][1]["image_url"]["url"]
                assert base64.b64decode(url.split(",", 1)[1]) == PNG
            shots(page, "attachments-5-arena", full_page=True)
        finally:
            browser.close()
    assert not [r for r in log_records(app["work"]) if r.provider == "local"]
