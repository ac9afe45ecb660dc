"""The run grid in a real browser (issue 21 item 5): a run of 30 rows × 2 variants on loopback
upstreams shows as one table; "Failed checks only" leaves exactly the failing rows; choosing a
row opens it below with its whole answer (the table cuts it); at a phone's 390 px the pass/fail
marks are drawn whole inside the screen."""

from __future__ import annotations

import pytest
from grid_support import choose_grid_row, grid, grid_frame_locator

from tests.test_browser import Playground, endpoint_config, wait_idle, wait_settled
from tests.test_browser_dashboard import DRAWN, RECORD_TEXT
from tests.test_browser_experiments import browser_page, open_experiments, start_run_from_page, store

pytestmark = pytest.mark.timeout(420)

ROWS = 30
FAILING = 6  # the last six rows expect Lima: both answers name Paris, so both fail there
DATASET = "country,expected\n" + "".join(
    f"Land {i:02d},{'Lima' if i >= ROWS - FAILING else 'Paris'}\n" for i in range(ROWS)
)
TEMPLATE = "What is the capital of {{country}}? One word."
SHORT = "Paris."
LONG = "It is Paris, " + "a city of bridges, cafés and museums, " * 4 + "THE-WHOLE-ANSWER-ENDS-HERE"


@pytest.fixture(scope="module")
def lab(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("run_grid")
    short = OpenAIServer(reply=SHORT, models=["short-1"]).start()
    long = OpenAIServer(reply=LONG, models=["long-1"]).start()
    server = Playground(
        work,
        config=endpoint_config(short, "short") + endpoint_config(long, "long"),
        name="run_grid",
        extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"},
    )
    try:
        yield {"url": server.url, "work": work}
    finally:
        server.stop()
        short.stop()
        long.stop()


def make_experiment(work, name: str) -> str:
    from conductor_core.models import register_provider_name
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.variants import Variant

    for endpoint in ("short", "long"):
        register_provider_name(endpoint)
    log, exp = store(work)
    try:
        variants = [Variant(provider=p, model=f"{p}-1", max_tokens=64) for p in ("short", "long")]
        return exp.create(name, TEMPLATE, read_dataset(DATASET), variants).id
    finally:
        log.close()


def run_once(page, lab, name: str) -> None:
    experiment_id = make_experiment(lab["work"], name)
    open_experiments(page, f"{lab['url']}/experiments?experiment={experiment_id}", ready="Re-run")
    start_run_from_page(page, 1)
    page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=180_000)
    wait_settled(page)


def test_the_grid_filters_failing_rows_and_opens_a_row_in_full(lab, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, browser_page(p, shots, "run_grid", viewport={"width": 1400, "height": 1000}) as page:
        run_once(page, lab, "Grid")
        page.get_by_text(f"{ROWS} of {ROWS} rows", exact=False).wait_for(timeout=60_000)
        rows = grid(page)
        a, b = "A · short/short-1", "B · long/long-1"
        first = rows[0]
        assert first["Row"] == "1" and first["Marks"] == "A✓ B✓", first
        assert first[a].startswith("✓ · ") and first[a].endswith(" — Paris.")
        # The long answer is cut in the table (one line, an ellipsis), its end not shown.
        assert first[b].startswith("✓ · ") and first[b].endswith("…") and "THE-WHOLE-ANSWER" not in first[b]
        assert "THE-WHOLE-ANSWER-ENDS-HERE" not in page.get_by_test_id("stMain").inner_text()
        shots(page, "run_grid_table", full_page=True)

        # Failed checks only: exactly the failing rows, each marked ✗ for both variants.
        page.get_by_text("Failed checks only", exact=True).click()
        page.get_by_text(f"{FAILING} of {ROWS} rows", exact=False).wait_for(timeout=60_000)
        page.wait_for_function(
            "(n) => document.querySelectorAll('[data-testid=\"stDataFrame\"] tbody tr').length === n",
            arg=FAILING,
            timeout=60_000,
            polling=200,
        )
        failing = grid(page)
        assert [r["Row"] for r in failing] == [str(i) for i in range(ROWS - FAILING + 1, ROWS + 1)], failing
        assert all(r["Marks"] == "A✗ B✗" and r[a].startswith("✗") and r[b].startswith("✗") for r in failing)

        # Choose the second failing row: it opens below, with the whole answer and its 👍/👎.
        choose_grid_row(page, 1)
        chosen = page.get_by_text(f"Row {ROWS - FAILING + 2}", exact=True)
        chosen.wait_for(timeout=60_000)
        page.get_by_text("THE-WHOLE-ANSWER-ENDS-HERE", exact=False).wait_for(timeout=30_000)
        assert page.get_by_test_id("stFeedback").count() == 2  # one per variant of the open row
        assert f"Land {ROWS - FAILING + 1:02d}" in page.get_by_test_id("stMain").inner_text()
        shots(page, "run_grid_row_open", full_page=True)


def test_the_marks_stay_on_screen_at_phone_width(lab, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        phone = {**p.devices["iPhone 13"], "viewport": {"width": 390, "height": 844}, "device_scale_factor": 1}
        phone.pop("default_browser_type", None)
        with browser_page(p, shots, "run_grid_phone", **phone) as page:
            page.add_init_script(script=RECORD_TEXT)
            run_once(page, lab, "Grid on a phone")
            frame = grid_frame_locator(page)
            frame.scroll_into_view_if_needed()
            page.wait_for_function(
                "() => window.__drawnTexts.some(d => d.text === 'A✓ B✓')", timeout=60_000, polling=200
            )
            wait_idle(page)
            # Every mark the canvas drew is whole inside its clip and inside the 390 px screen
            # (the canvas draws in its own pixels, from the grid's left edge; scale 1).
            box = frame.bounding_box()
            assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= 391, box
            drawn = page.evaluate(DRAWN, "B✓")
            assert drawn and all(d["whole"] and box["x"] + d["right"] <= 390 for d in drawn), drawn
            shots(page, "run_grid_phone")
