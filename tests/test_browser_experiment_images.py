"""Experiments over images in a real browser (Playwright + Debian's chromium): a .zip holding a
CSV and five pictures uploaded on the Experiments page; a variant whose endpoint reads text only
is refused on Run with the reason and sent nothing; with two that read images the run goes,
each row's picture reaches the loopback upstream as an image_url part (its bytes checked
there), and the grid shows a thumbnail per row."""

from __future__ import annotations

import base64
import io
import zipfile

import pytest
from grid_support import choose_grid_row

from tests.test_browser import Playground, endpoint_config, wait_idle, wait_settled
from tests.test_browser_experiments import alert, browser_page, generations, open_experiments

pytestmark = pytest.mark.timeout(420)

ROWS = 5
TEMPLATE = "Extract invoice {{id}} in this image as JSON"


def pictures() -> dict[str, bytes]:
    """Five real PNGs, each a different colour (so each row's bytes differ)."""
    from PIL import Image

    out = {}
    for n in range(1, ROWS + 1):
        buffer = io.BytesIO()
        Image.new("RGB", (24, 16), (40 * n, 255 - 40 * n, 90)).save(buffer, format="PNG")
        out[f"scans/invoice-{n}.png"] = buffer.getvalue()
    return out


def dataset_zip(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("invoices.csv", "id,image\n" + "".join(f"{n},scans/invoice-{n}.png\n" for n in range(1, 6)))
        for name, data in files.items():
            archive.writestr(name, data)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def lab(services, tmp_path_factory):
    """Two endpoints that read images (alpha, beta: one loopback server) and one that reads
    text only (zeta: `vision = false`)."""
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("experiment_images")
    seer = OpenAIServer(reply='{"total": 12}', models=["seer-1"]).start()
    blind = OpenAIServer(reply="never", models=["blind-1"]).start()
    config = (
        endpoint_config(seer, "alpha")
        + endpoint_config(seer, "beta")
        + endpoint_config(blind, "zeta")
        + "vision = false\n"
    )
    server = Playground(work, config=config, name="images", extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"})
    try:
        yield {"url": server.url, "seer": seer, "blind": blind}
    finally:
        server.stop()
        seer.stop()
        blind.stop()


def test_a_zip_of_rows_and_pictures_runs_and_a_text_only_variant_is_refused(lab, shots):
    from playwright.sync_api import sync_playwright

    files = pictures()
    with sync_playwright() as p, browser_page(p, shots, "experiment_images") as page:
        open_experiments(page, lab["url"])
        page.get_by_label("Prompt template", exact=True).fill(TEMPLATE)
        page.keyboard.press("Tab")
        wait_idle(page)
        page.get_by_text("Upload a file", exact=True).click()
        upload = page.locator("input[type=file]")
        upload.wait_for(state="attached", timeout=30_000)
        upload.set_input_files(
            files=[{"name": "invoices.zip", "mimeType": "application/zip", "buffer": dataset_zip(files)}]
        )
        page.get_by_text("images from image: 5 distinct", exact=False).wait_for(timeout=60_000)
        wait_idle(page)

        # Three variants (alpha, beta, zeta): zeta reads text only, said before Run and refused on it.
        warning = page.get_by_test_id("stAlertContentWarning").filter(has_text="reads text only").first
        warning.wait_for(timeout=30_000)
        assert "zeta reads text only: remove it or the image column (image)" in warning.inner_text()
        page.get_by_role("button", name="Run experiment").click()
        error = alert(page, "reads text only")
        assert "zeta reads text only: remove it or the image column (image)" in error, error
        assert "Nothing was sent" in error
        assert generations(lab["seer"]) == 0 and generations(lab["blind"]) == 0

        # Two variants: alpha and beta, both read images. The run goes.
        page.get_by_test_id("stButtonGroup").filter(has_text="4").get_by_text("2", exact=True).click()
        wait_idle(page)
        page.get_by_test_id("stAlertContentWarning").filter(has_text="reads text only").wait_for(
            state="detached", timeout=30_000
        )
        page.get_by_role("button", name="Run experiment").click()
        page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=180_000)
        wait_settled(page)

        sent = [
            r["json"]["messages"][-1]["content"]
            for r in lab["seer"].requests
            if r["path"].endswith("/chat/completions")
        ]
        assert len(sent) == 2 * ROWS and generations(lab["blind"]) == 0
        for text, image in sent:
            n = int(text["text"].split()[2])
            assert text == {"type": "text", "text": f"Extract invoice {n} in this image as JSON"}
            assert image["type"] == "image_url"
            assert (
                image["image_url"]["url"]
                == "data:image/png;base64," + base64.b64encode(files[f"scans/invoice-{n}.png"]).decode()
            )
        assert sorted(int(t["text"].split()[2]) for t, _ in sent) == sorted(list(range(1, ROWS + 1)) * 2)

        # The grid: each row, opened, shows its thumbnail, named as the dataset names it.
        for n in range(1, ROWS + 1):
            choose_grid_row(page, n - 1)
            page.get_by_text(f"Row {n}", exact=True).wait_for(timeout=30_000)
            # The opened row is redrawn by a rerun: wait for this row's picture, not any picture
            # (the previous row's can still be on screen when the heading has changed).
            expected = page.get_by_test_id("stImageCaption").filter(has_text=f"scans/invoice-{n}.png")
            expected.first.wait_for(timeout=30_000)
            wait_settled(page)
            captions = [c.strip() for c in page.get_by_test_id("stImageCaption").all_inner_texts()]
            assert captions == [f"scans/invoice-{n}.png"], captions
        shots(page, "experiment_images", full_page=True)
