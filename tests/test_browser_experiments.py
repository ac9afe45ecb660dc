"""The Experiments page in a real browser (Playwright + Debian's chromium), against loopback
OpenAI-compatible servers: a 10-row dataset over 3 variants with one failing (a wrong key,
which is also the canary: it must never reach a page or an export), Stop in the middle of a
run after a reload, the exports downloaded and parsed, an earlier run opened from the URL
after a reload, and bad input named on the page with nothing sent.

The helpers (the app process, chromium's flags, waiting for the page to settle) are
tests/test_browser.py's, imported rather than copied; the fixtures are tests/browser_support.py's.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import pytest
from grid_support import choose_grid_row, grid, wait_grid_text

from tests.test_browser import (
    Playground,
    ask,
    assistant_with_figures,
    choose,
    endpoint_config,
    eventually,
    launch,
    wait_idle,
    wait_settled,
)

pytestmark = pytest.mark.timeout(420)

CANARY = "sk-2M7ZmzxVxKtn_upTSApQfNdA"
RIGHT_KEY = "sk-the-key-the-server-wants-000000"
FAST_REPLY = "The capital is Paris, of course."
SLOW_REPLY = "Slowly: I believe it is Paris."
# The slow upstream also echoes the key the app holds for `broken` (a leaky server): the page and
# every export must show the answer without it.
SLOW_LEAK = f"{SLOW_REPLY} Your key: {CANARY}"
ROW_LIMIT = 25
COUNTRIES = ["France", "Japan", "Kenya", "Canada", "Peru", "Italy", "Chile", "Egypt", "India", "Spain"]
# Six rows expect "Paris" (both replies contain it: pass), four expect the real capital (fail).
EXPECTED = ["Paris"] * 6 + ["Tokyo", "Nairobi", "Ottawa", "Lima"]
DATASET = "country,expected\n" + "".join(f"{c},{e}\n" for c, e in zip(COUNTRIES, EXPECTED, strict=True))
TEMPLATE = "What is the capital of {{country}}? One word."


@pytest.fixture(scope="module")
def lab(services, tmp_path_factory):
    """A playground whose only providers are three loopback endpoints: `fast`, `slow` and
    `broken` (it wants another key than the one configured: every call answers 401)."""
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("experiments")
    fast = OpenAIServer(reply=FAST_REPLY, models=["fast-1"], chunk_delay_s=0.005).start()
    slow = OpenAIServer(reply=SLOW_LEAK, models=["slow-1"], latency_s=0.05, chunk_delay_s=0.005).start()
    broken = OpenAIServer(reply="never", models=["broken-1"], require_key=RIGHT_KEY).start()
    config = (
        endpoint_config(fast, "fast")
        + endpoint_config(slow, "slow")
        + endpoint_config(broken, "broken")
        + 'api_key_env = "BROKEN_API_KEY"\n'
    )
    server = Playground(
        work,
        config=config,
        name="experiments",
        extra_env={
            "CONDUCTOR_LOCAL_ENABLED": "false",
            "BROKEN_API_KEY": CANARY,
            "CONDUCTOR_DATASET_MAX_ROWS": str(ROW_LIMIT),
            # A call held at its upstream until the test releases it must not time out first.
            "CONDUCTOR_TIMEOUT_S": "600",
        },
    )
    try:
        yield {"url": server.url, "work": work, "fast": fast, "slow": slow, "broken": broken}
    finally:
        server.stop()
        for s in (fast, slow, broken):
            s.stop()


@contextmanager
def browser_page(p, shots, name: str, **context):
    """A page in a fresh browser; a screenshot named after the test when it fails."""
    browser = launch(p)
    page = browser.new_context(**({"viewport": {"width": 1280, "height": 900}} | context)).new_page()
    try:
        yield page
    except BaseException:
        try:
            shots(page, f"failure_{name}", full_page=True)
        except Exception:  # noqa: BLE001 - the original failure matters more
            pass
        raise
    finally:
        browser.close()


def generations(server) -> int:
    return sum(1 for r in server.requests if r["path"].endswith("/chat/completions"))


def store(work: Path):
    from conductor_core.store import RequestLog
    from conductor_core.workbench.experiments import ExperimentStore

    log = RequestLog(None, data_dir=work / "data")
    return log, ExperimentStore(log)


def assert_logged_ok(log, cells) -> None:
    """Every cell shown as answered is a request the log recorded as a success (the log is
    written behind the answers: wait for it)."""
    answered = {c.request_id for c in cells if c.status == "ok"}
    assert None not in answered

    def logged():
        found = {r.request_id: r.status for r in log.records()}
        return answered <= set(found) and all(found[i] == "ok" for i in answered)

    eventually(logged, what="every answered cell is a successful request-log row")


def open_experiments(page, url: str, *, ready: str = "Run experiment") -> None:
    """Open the page and wait until it is drawn to its end (the button `ready` is there): typing
    into a page whose first run has not finished makes Streamlit drop the state the interrupted
    run gave the variants' controls (they come back as the widgets' defaults)."""
    page.goto(url.rstrip("/") + "/experiments" if "?" not in url else url)
    page.get_by_role("heading", name="Experiments", exact=True).wait_for(timeout=120_000)
    if ready:
        page.get_by_role("button", name=ready).first.wait_for(timeout=120_000)
    wait_idle(page, 120_000)


def fill_form(page, *, template: str = TEMPLATE, data: str = DATASET) -> None:
    page.get_by_label("Prompt template", exact=True).fill(template)
    page.get_by_label("Rows: CSV with a header line, or JSONL (one JSON object a line)", exact=True).fill(data)
    page.keyboard.press("Tab")  # commit the text area
    wait_idle(page)


def run_text(page) -> str:
    """The page's text once its script has finished drawing it: "settled" alone (nothing faded)
    can come while a rerun is still drawing the grid, before its status widget shows (seen on a
    busy machine: the text ended at row 1)."""
    wait_idle(page)
    wait_settled(page)
    return page.get_by_test_id("stMain").inner_text()


def summary_rows(page) -> dict[str, list[str]]:
    """The per-variant table above the grid: letter -> its cells."""
    page.wait_for_function(
        "() => document.querySelectorAll('[data-testid=\"stTable\"] tbody tr').length > 0", timeout=30_000, polling=100
    )
    wait_settled(page)
    table = page.get_by_test_id("stTable").first
    rows = {}
    for tr in table.locator("tbody tr").all():
        cells = [c.inner_text().strip() for c in tr.locator("th, td").all()]
        rows[cells[0]] = cells[1:]
    return rows


def test_ten_rows_three_variants_one_failing_then_export(lab, shots):
    from playwright.sync_api import sync_playwright

    upstreams = ("fast", "slow", "broken")
    before = {name: generations(lab[name]) for name in upstreams}  # the module's other tests may have run first
    with (
        sync_playwright() as p,
        browser_page(
            # Wide enough for the grid's three answer columns side by side (its accessible table
            # holds the columns in view).
            p,
            shots,
            "ten_rows",
            accept_downloads=True,
            viewport={"width": 1920, "height": 1000},
        ) as page,
    ):
        open_experiments(page, lab["url"])
        fill_form(page)
        page.get_by_text("10 rows (limit 25)", exact=False).wait_for(timeout=30_000)
        assert "an expected column" in run_text(page).replace("`", "")
        page.get_by_role("button", name="Run experiment").click()  # at the bottom of a long form
        page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=120_000)
        wait_settled(page)
        # The run opens at its top (its progress and Stop), not scrolled down where the form ended.
        # Waited for, not read once: a busy browser draws the page's scroll late (and once drew it
        # never: the script went out once, and the run's next rerun replaced it before it was drawn).
        page.wait_for_function(
            "() => document.querySelector('[data-testid=\"stMain\"]').scrollTop === 0", timeout=60_000, polling=100
        )

        # The upstreams got every row; the broken one refused each call until Conductor's
        # breaker paused it (its later cells fail without a call, and say so). Its breaker may
        # be paused already when another test ran first, so its refusals are counted over them all.
        sent = {name: generations(lab[name]) - before[name] for name in upstreams}
        assert sent["fast"] == 10 and sent["slow"] == 10, sent
        assert sent["broken"] <= 10 and generations(lab["broken"]) >= 1, sent
        rows = summary_rows(page)
        assert set(rows) == {"A", "B", "C"}, rows
        # variant, success, p50, p95, p50 first token, total cost, pass rate, rating, win rate
        assert rows["A"][0] == "fast/fast-1" and rows["B"][0] == "slow/slow-1" and rows["C"][0] == "broken/broken-1"
        assert rows["A"][1] == "100%" and rows["B"][1] == "100%" and rows["C"][1] == "0%"
        assert rows["A"][6] == "60%" and rows["B"][6] == "60%" and rows["C"][6] == "0%"
        assert rows["C"][2] == "—" and rows["C"][5] == "—"  # no latency and no cost from failures
        # The grid: a line per row, each variant's mark first; the broken variant's errors named.
        table = grid(page)
        assert len(table) == 10, table
        a, b, c = (next(k for k in table[0] if k.startswith(f"{v} · ")) for v in "ABC")
        assert sum(r[a].endswith(f"— {FAST_REPLY}") for r in table) == 10
        assert sum(f"— {SLOW_REPLY}" in r[b] for r in table) == 10
        assert [r[a][0] for r in table] == ["✓"] * 6 + ["✗"] * 4
        errors = [r[c] for r in table]
        assert all(e.startswith("⚠ error") for e in errors) and "rejected the API key" in errors[0], errors[:2]
        assert all("rejected the API key" in e or "paused it" in e for e in errors), errors
        assert CANARY not in page.content()
        # Row 1 opened from the grid: each answer in full, the error as an error.
        choose_grid_row(page, 0)
        page.get_by_text("Row 1", exact=True).wait_for(timeout=30_000)
        text = run_text(page)
        assert text.count(FAST_REPLY) == 1 and text.count(SLOW_REPLY) == 1
        [error] = page.get_by_test_id("stAlertContentError").all_inner_texts()
        assert "rejected the API key" in error or "paused it" in error, error
        assert CANARY not in page.content()
        shots(page, "experiment_run", full_page=True)

        # The stored run agrees with the page: each ok cell names its request-log row.
        log, exp = store(lab["work"])
        try:
            run = exp.run(page.evaluate("() => new URLSearchParams(location.search).get('run')"))
            assert run.status == "completed"
            cells = exp.cells(run.id)
            assert [c.status for c in cells].count("ok") == 20 and [c.status for c in cells].count("error") == 10
            assert_logged_ok(log, cells)
        finally:
            log.close()

        # Rate a cell: the page and the store keep it.
        page.get_by_test_id("stFeedback").first.locator("button").first.click()  # 👍 on row 1, A
        wait_settled(page)
        eventually(lambda: exp_rating(lab["work"], run.id) == 1, what="the rating is stored")

        # Exports: each download parses, holds the answers and the rating, and no key.
        page.get_by_text("Share: export or get code").click()
        downloads = {}
        for label in ("Markdown", "JSON", "HTML report"):
            with page.expect_download(timeout=60_000) as download:
                page.get_by_role("button", name=label, exact=True).click()
            downloads[label] = Path(download.value.path()).read_text()
        assert all(CANARY not in body for body in downloads.values())
        report = json.loads(downloads["JSON"])
        assert report["kind"] == "experiment_run" and report["rows_total"] == 10 and len(report["rows"]) == 10
        answers = [cell["answer"] for row in report["rows"] for cell in row["cells"] if cell and cell["answer"]]
        assert answers.count(FAST_REPLY) == 10 and sum(a.startswith(SLOW_REPLY) for a in answers) == 10
        assert report["rows"][0]["cells"][0]["rating"] == 1
        assert [s["pass_rate"] for s in report["stats"]] == [0.6, 0.6, 0.0]
        assert FAST_REPLY in downloads["Markdown"] and "| A |" in downloads["Markdown"]
        assert downloads["HTML report"].startswith("<!doctype html>") and "<svg" in downloads["HTML report"]
        assert FAST_REPLY in downloads["HTML report"]

        # Get code: the same request as code, with no key in it.
        page.get_by_role("tab", name="curl").click()
        code = page.get_by_test_id("stCode").all_inner_texts()
        assert any("What is the capital of France? One word." in c for c in code)
        assert all(CANARY not in c for c in code)


def exp_rating(work: Path, run_id: str) -> int | None:
    log, exp = store(work)
    try:
        return exp.cells(run_id, limit=1)[0].rating
    finally:
        log.close()


def make_experiment(work: Path, name: str) -> str:
    """The 10-row experiment over fast, slow and broken, stored the way the page stores one
    (the test and the app share the SQLite file)."""
    from conductor_core.models import register_provider_name
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.variants import Variant

    for endpoint in ("fast", "slow", "broken"):  # the app's endpoints, which this process has not loaded
        register_provider_name(endpoint)
    log, exp = store(work)
    try:
        variants = [Variant(provider=p, model=f"{p}-1", max_tokens=64) for p in ("fast", "slow", "broken")]
        return exp.create(name, TEMPLATE, read_dataset(DATASET), variants).id
    finally:
        log.close()


def start_run_from_page(page, number: int, *, calls_at_once: int | None = None) -> None:
    page.get_by_role("button", name="Re-run").click()
    if calls_at_once is not None:
        page.get_by_label("Calls at once per provider", exact=True).last.fill(str(calls_at_once))
        page.keyboard.press("Tab")
        wait_idle(page)
    page.get_by_role("button", name=f"Start run {number}").click()


def test_stop_after_a_reload_keeps_what_finished_and_an_earlier_run_reopens(lab, shots):
    from playwright.sync_api import sync_playwright

    experiment_id = make_experiment(lab["work"], "Stop and reopen")
    with sync_playwright() as p, browser_page(p, shots, "stop") as page:
        open_experiments(page, f"{lab['url']}/experiments?experiment={experiment_id}", ready="Re-run")
        start_run_from_page(page, 1)
        page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=120_000)
        wait_settled(page)

        # Run 2, one call at a time; the slow upstream answers only when told (held), so Stop
        # lands while variant B's cells are pending however fast or slow the machine is.
        lab["slow"].hold()
        try:
            start_run_from_page(page, 2, calls_at_once=1)
            page.get_by_test_id("stProgress").wait_for(timeout=30_000)
            assert "run=" in page.url

            # Reload mid-run: the run goes on in the server, and the page finds it again.
            page.reload()
            page.get_by_role("button", name="Stop", exact=True).wait_for(timeout=60_000)
            before = page.get_by_test_id("stProgress").inner_text()
            assert "of 30 answers" in before
            eventually(lambda: lab["slow"].held == 1, 60, "variant B's first call waiting at its upstream")
            lab["slow"].release(1)  # one answer from the slow variant, the rest stay pending
            page.wait_for_function(  # the bar moves by itself (no click, no reload)
                "(before) => { const p = document.querySelector('[data-testid=\"stProgress\"]');"
                " return p && p.innerText !== before; }",
                arg=before,
                timeout=60_000,
                polling=100,
            )
            wait_grid_text(page, "Slowly: I believe")  # the slow variant's answer is in
            eventually(lambda: lab["slow"].held == 1, 60, "variant B's next call waiting at its upstream")
            page.get_by_role("button", name="Stop", exact=True).click()
            # A call still waiting for its first byte is closed when that byte comes (the
            # runner's documented limit): once Stop has landed, the upstream answers it.
            page.get_by_text("Stopping: closing the calls in flight", exact=False).wait_for(timeout=60_000)
        finally:
            lab["slow"].release()
        page.get_by_text("Run 2 was stopped", exact=False).wait_for(timeout=60_000)
        text = run_text(page)
        assert any(r[k].startswith("⊘ cancelled") for r in grid(page) for k in r if k[1:4] == " · ")
        # A row with a cancelled cell, opened: it says when the stop came.
        cancelled_at = next(i for i, r in enumerate(grid(page)) if "⊘" in r["Marks"])
        choose_grid_row(page, cancelled_at)
        page.get_by_text("cancelled: the run was stopped", exact=False).first.wait_for(timeout=30_000)
        shots(page, "experiment_stopped", full_page=True)

        log, exp = store(lab["work"])
        try:
            run_id = page.evaluate("() => new URLSearchParams(location.search).get('run')")
            run = exp.run(run_id)
            assert run.status == "stopped" and run.number == 2 and run.concurrency["slow"] == 1
            cells = exp.cells(run_id)
            statuses = [c.status for c in cells]
            assert len(cells) == 30 and "cancelled" in statuses
            # Nothing reported as a success that was not: every ok cell is a logged success.
            assert_logged_ok(log, cells)
            slow_ok = sum(1 for c in cells if c.variant == 1 and c.status == "ok")
            assert slow_ok == 1  # the one answer released before Stop
            stats = exp.stats(run_id)
            assert stats[1].ok == slow_ok and stats[1].success_rate == 1.0  # cancelled cells are not failures
            finished = sum(1 for c in cells if c.status != "cancelled")
            assert f"{finished} of 30 requests finished" in text.replace(",", "")
            changes = exp.changes(run_id)
        finally:
            log.close()
        assert "since run 1" in text and changes[1] in text.replace("\\", "")

        # Open run 1 from the list; a reload shows run 1 again (the URL names it).
        choose(page, "Run", "Run 1 ·")
        page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=30_000)
        wait_settled(page)
        page.reload()
        page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=60_000)
        wait_settled(page)
        assert "Run 2 was stopped" not in run_text(page)


def alert(page, containing: str) -> str:
    """The error message on the page that contains `containing`, once the page has drawn it."""
    found = page.get_by_test_id("stAlertContentError").filter(has_text=containing).first
    found.wait_for(timeout=30_000)
    return found.inner_text()


def test_bad_input_is_named_on_the_page_and_nothing_is_sent(lab, shots):
    from playwright.sync_api import sync_playwright

    sent_before = sum(generations(lab[name]) for name in ("fast", "slow", "broken"))
    with sync_playwright() as p, browser_page(p, shots, "bad_input") as page:
        open_experiments(page, lab["url"])
        if page.get_by_role("button", name="New experiment").is_enabled():
            page.get_by_role("button", name="New experiment").click()
            wait_idle(page)

        # A malformed CSV: the line is named, and the text stays as typed.
        broken_csv = 'country,expected\nFrance,Paris\n"Japan,Tokyo\n'
        fill_form(page, data=broken_csv)
        error = alert(page, "line 3")
        assert "quoted field" in error, error
        box = page.get_by_label("Rows: CSV with a header line, or JSONL (one JSON object a line)", exact=True)
        assert box.input_value() == broken_csv

        # A row without a variable's value: the variable and the row are named on Run.
        jsonl = '{"country": "France"}\n{"country": "Japan"}\n{"nation": "Kenya"}\n'
        fill_form(page, data=jsonl)
        page.get_by_role("button", name="Run experiment").click()
        error = alert(page, "row 3")
        assert "{{country}}" in error and "Nothing was sent" in error, error
        assert box.input_value() == jsonl

        # Over the row limit: refused before anything is sent, saying which setting raises it.
        too_many = "country\n" + "".join(f"Country {i}\n" for i in range(ROW_LIMIT + 1))
        fill_form(page, data=too_many)
        error = alert(page, f"{ROW_LIMIT + 1} rows")
        assert "CONDUCTOR_DATASET_MAX_ROWS" in error, error
        page.get_by_role("button", name="Run experiment").click()
        wait_idle(page)
        assert page.get_by_label("Prompt template", exact=True).input_value() == TEMPLATE

        # An uploaded file: a bad JSONL line is named with its column; a good CSV file is read.
        page.get_by_text("Upload a file", exact=True).click()
        upload = page.locator("input[type=file]")
        upload.wait_for(state="attached", timeout=30_000)
        upload.set_input_files(
            files=[
                {
                    "name": "rows.jsonl",
                    "mimeType": "application/json",
                    "buffer": b'{"country": "France"}\n{"country": }\n',
                }
            ]
        )
        error = alert(page, "line 2, column")
        assert "not valid JSON" in error, error
        upload.set_input_files(files=[{"name": "rows.csv", "mimeType": "text/csv", "buffer": DATASET.encode()}])
        page.get_by_text("10 rows (limit 25)", exact=False).wait_for(timeout=30_000)
        shots(page, "experiment_bad_input", full_page=True)
    assert sum(generations(lab[name]) for name in ("fast", "slow", "broken")) == sent_before


def test_the_experiments_page_at_phone_width(lab, shots):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        phone = {**p.devices["iPhone 13"], "viewport": {"width": 390, "height": 844}, "device_scale_factor": 1}
        phone.pop("default_browser_type", None)
        with browser_page(p, shots, "phone", **phone) as page:
            open_experiments(page, lab["url"])
            shots(page, "phone_experiments_form", full_page=True)
            experiment_id = make_experiment(lab["work"], "On a phone")
            open_experiments(page, f"{lab['url']}/experiments?experiment={experiment_id}", ready="Re-run")
            start_run_from_page(page, 1)
            page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=120_000)
            wait_settled(page)
            overflow = page.evaluate(
                "() => document.querySelector('[data-testid=\"stMain\"]').scrollWidth - window.innerWidth"
            )
            assert overflow <= 1, f"the run is {overflow}px wider than the phone"
            shots(page, "phone_experiment_run", full_page=True)


def test_share_a_conversation_and_a_comparison(lab, shots):
    """Export and Get code on the Playground chat and on a Compare round, through the page's
    downloads: the files parse and hold the answers, and never the key (the slow upstream
    echoes it in every answer)."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, browser_page(p, shots, "share", accept_downloads=True) as page:
        page.goto(lab["url"])
        page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
        wait_idle(page, 120_000)
        choose(page, "Provider", "slow", within=page.get_by_test_id("stSidebar"))
        wait_idle(page)
        ask(page, "Name a capital. Say `#1` literally.")
        assistant_with_figures(page, 1, timeout_ms=60_000)
        wait_idle(page)
        # The page shows the echoed answer without the key, also after a reload (from the store).
        assert SLOW_REPLY in page.content() and CANARY not in page.content()
        page.reload()
        assistant_with_figures(page, 1, timeout_ms=60_000)
        assert CANARY not in page.content()
        page.get_by_text("Share: export or get code").click()
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="Markdown", exact=True).click()
        markdown = Path(download.value.path()).read_text()
        assert "Name a capital. Say `#1` literally." in markdown and SLOW_REPLY in markdown and CANARY not in markdown
        page.get_by_role("tab", name="Python · provider SDK").click()
        code = "\n".join(page.get_by_test_id("stCode").all_inner_texts())
        assert lab["slow"].url in code and "'slow-1'" in code and CANARY not in code
        shots(page, "chat_share", full_page=True)

        page.get_by_test_id("stSidebarNav").get_by_text("Compare", exact=True).click()
        page.get_by_label("Prompt", exact=True).wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_label("Prompt", exact=True).fill("Which city is the capital of France?")
        page.get_by_role("button", name="Run compare").click()
        page.get_by_text("Which answer is better?").wait_for(timeout=60_000)
        wait_idle(page)
        page.get_by_role("button", name="Right is better").click()
        page.get_by_text("Vote recorded").wait_for(timeout=30_000)
        wait_idle(page)
        assert CANARY not in page.content()
        share = page.get_by_text("Share this round: export or get code")
        eventually(lambda: share.count() == 1, what="one round drawn (a rerun may briefly draw it twice)")
        share.click()
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="JSON", exact=True).click()
        body = Path(download.value.path()).read_text()
        assert CANARY not in body
        comparison = json.loads(body)
        assert comparison["kind"] == "comparison" and comparison["prompt"] == "Which city is the capital of France?"
        assert [c["answer"] for c in comparison["columns"]][0] == FAST_REPLY
        assert comparison["columns"][1]["answer"].startswith(SLOW_REPLY)
        assert comparison["vote"] == comparison["columns"][1]["label"]
        with page.expect_download(timeout=60_000) as download:
            page.get_by_role("button", name="HTML report", exact=True).click()
        html = Path(download.value.path()).read_text()
        assert html.startswith("<!doctype html>") and FAST_REPLY in html and CANARY not in html
        shots(page, "compare_share", full_page=True)
