"""Datasets from real traffic, in a real browser (issue 21, item 3): a request sent through the
router to a loopback upstream shows on the Dashboard; "Add to dataset" saves its message as a
row of a new dataset with its answer marked good as `expected`; a chat answer adds a second row
(version 2); the Experiments page starts a run on version 1, and the run records it
("dataset capitals v1")."""

from __future__ import annotations

import browser_support
import pytest
from browser_support import Playground, ask, choose, endpoint_config, eventually, launch, wait_idle, wait_settled

services = browser_support.services
shots = browser_support.shots

pytestmark = pytest.mark.timeout(420)

QUESTION = "What is the capital of France?"
CHAT_QUESTION = "And the capital of Italy?"
GOOD = "Paris is the capital."  # alpha's answer, the one marked good
OTHER = "It is Paris, surely."  # beta's: does not contain alpha's answer, so its check fails


@pytest.fixture(scope="module")
def app(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("datasets")
    servers = {
        "alpha": OpenAIServer(reply=GOOD, models=["alpha-1"], chunk_delay_s=0.001).start(),
        "beta": OpenAIServer(reply=OTHER, models=["beta-1"], chunk_delay_s=0.001).start(),
    }
    config = "".join(endpoint_config(server, name) for name, server in servers.items())
    server = Playground(work, config=config, name="datasets", extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"})
    try:
        yield {"url": server.url, "work": work, "servers": servers}
    finally:
        server.stop()
        for s in servers.values():
            s.stop()


def send_through_the_router(app) -> None:
    """One request from outside the playground (a script, the gateway): the log keeps its transcript."""
    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.models import ChatMessage, ChatRequest, MessageRole
    from conductor_core.router import Conductor

    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=app["work"] / "data",
        endpoints={name: EndpointConfig(base_url=s.url, models=[f"{name}-1"]) for name, s in app["servers"].items()},
    )
    conductor = Conductor(settings)
    try:
        request = ChatRequest(
            provider="alpha", model="alpha-1", messages=[ChatMessage(role=MessageRole.user, content=QUESTION)]
        )
        assert conductor.chat(request, request_id="req_from_traffic").content == GOOD
        assert conductor.log.flush()
    finally:
        conductor.close()


def stores(app):
    from conductor_core.store import RequestLog
    from conductor_core.workbench.dataset_store import DatasetStore
    from conductor_core.workbench.experiments import ExperimentStore

    log = RequestLog(None, data_dir=app["work"] / "data")
    return log, DatasetStore(log), ExperimentStore(log)


def test_add_a_logged_request_to_a_dataset_then_run_an_experiment_on_that_version(app, shots):
    from playwright.sync_api import sync_playwright

    send_through_the_router(app)
    browser_page = None
    with sync_playwright() as p:
        browser = launch(p)
        try:
            browser_page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            page = browser_page
            page.goto(app["url"] + "/dashboard")
            page.get_by_role("heading", name="Dashboard", exact=True).wait_for(timeout=120_000)
            add = page.get_by_role("button", name="Add to dataset")
            add.wait_for(timeout=120_000)
            wait_idle(page)
            add.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_text("Answer is good → use as expected").wait_for(timeout=60_000)
            # The dialog's code blocks are drawn a moment after its widgets.
            eventually(lambda: QUESTION in dialog.inner_text(), what="the dialog shows the request's message")
            dialog.get_by_label("Name of the new dataset").fill("capitals")
            dialog.get_by_label("Name of the new dataset").press("Tab")
            wait_idle(page)
            dialog.get_by_text("Answer is good → use as expected").click()
            wait_idle(page)
            shots(page, "add_to_dataset")
            dialog.get_by_role("button", name="Add").click()
            dialog.get_by_text("Added to capitals v1 (1 row).").wait_for(timeout=60_000)
            wait_idle(page)
            shots(page, "added_to_dataset")
            # Added once: no second Add in this dialog (it reads "Added", disabled), only "another dataset".
            assert dialog.get_by_role("button", name="Add", exact=True).count() == 0
            assert dialog.get_by_role("button", name="Added").is_disabled()
            assert dialog.get_by_label("Name of the new dataset").is_disabled()
            assert dialog.get_by_role("button", name="Add it to another dataset").is_visible()

            log, datasets, experiments = stores(app)
            try:
                saved = datasets.load("capitals", 1)
                assert saved.rows[0]["prompt"] == QUESTION
                assert saved.rows[0]["messages"] == [{"role": "user", "content": QUESTION}]
                assert saved.expected(0) == GOOD
            finally:
                log.close()
            page.keyboard.press("Escape")

            # A chat answer: its message (as the playground sent it) is the next version's new row.
            page.goto(app["url"])
            page.get_by_test_id("stChatInputTextArea").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            ask(page, CHAT_QUESTION)
            add = page.get_by_test_id("stMain").get_by_role("button", name="Add to dataset")
            add.wait_for(timeout=120_000)  # drawn once the answer is done
            wait_idle(page)
            add.click()
            dialog = page.get_by_role("dialog")
            dialog.get_by_role("button", name="Add").wait_for(timeout=60_000)
            choose(page, "Dataset", "capitals", within=dialog)
            wait_idle(page)
            dialog.get_by_role("button", name="Add").click()
            dialog.get_by_text("Added to capitals v2 (2 rows).").wait_for(timeout=60_000)
            page.keyboard.press("Escape")
            log, datasets, experiments = stores(app)
            try:
                latest = datasets.load("capitals")
                assert [row["prompt"] for row in latest.rows] == [QUESTION, CHAT_QUESTION]
                assert latest.rows[1]["messages"][-1] == {"role": "user", "content": CHAT_QUESTION}
                assert latest.expected(1) is None  # not marked good
                assert [v.note for v in datasets.versions("capitals")] == [
                    "1 row from Chat",
                    "1 row from Dashboard (answer marked good)",
                ]
            finally:
                log.close()

            # Experiments: start from the saved dataset at version 1 (the newest is 2).
            page.goto(app["url"] + "/experiments")
            page.get_by_role("heading", name="Experiments", exact=True).wait_for(timeout=120_000)
            page.get_by_role("button", name="Run experiment").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            page.get_by_label("Prompt template", exact=True).fill("{{prompt}} One word.")
            page.keyboard.press("Tab")
            wait_idle(page)
            page.get_by_text("Saved dataset", exact=True).click()
            wait_idle(page)
            choose(page, "Version", "v1")
            wait_idle(page)
            page.get_by_text("capitals v1: 1 row from Dashboard (answer marked good)", exact=False).wait_for(
                timeout=60_000
            )
            page.get_by_text("1 row (limit", exact=False).wait_for(timeout=60_000)
            page.get_by_role("button", name="Run experiment").click()
            page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=180_000)
            wait_settled(page)
            main = page.get_by_test_id("stMain")
            eventually(lambda: "dataset capitals v1" in main.inner_text(), what="the run page names its dataset")
            shots(page, "run_on_a_saved_dataset", full_page=True)

            log, datasets, experiments = stores(app)
            try:
                run = experiments.run(page.evaluate("() => new URLSearchParams(location.search).get('run')"))
                assert (run.dataset_name, run.dataset_version) == ("capitals", 1)
                stats = experiments.stats(run.id)
                # The answer marked good is the expected one: alpha's answer contains it, beta's does not.
                assert sorted((s.label.split("/")[0], s.pass_rate) for s in stats) == [("alpha", 1.0), ("beta", 0.0)]
            finally:
                log.close()
            sent = [r for s in app["servers"].values() for r in s.requests if r["path"].endswith("/chat/completions")]
            assert any(f"{QUESTION} One word." in str(r) for r in sent)
        except BaseException:
            if browser_page is not None:
                try:
                    shots(browser_page, "failure_datasets", full_page=True)
                except Exception:  # noqa: BLE001 - the original failure matters more
                    pass
            raise
        finally:
            browser.close()
