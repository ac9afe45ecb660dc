"""A server that dies under a running experiment, in a real browser: the next server shows the
run interrupted at once, with Re-run, not "running in another server process" with Re-run
disabled (for 30 s, until the dead run's heartbeat went stale).

One playground process starts a run against a loopback endpoint that hangs (so the run is
certainly still running), is killed with SIGKILL (nothing of it runs at exit), and a second
process opens the same data directory, as a restart does.
"""

from __future__ import annotations

import re
import time

import pytest
from browser_support import (
    Playground,
    endpoint_config,
    launch,
    wait_idle,
    wait_settled,
)

from conductor_core.testing.protocol_servers import Fault

pytestmark = pytest.mark.timeout(420)


def make_experiment(work, server) -> str:
    """A two-row experiment on the `hang` endpoint, stored the way the page stores one."""
    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import ExperimentStore
    from conductor_core.workbench.variants import Variant

    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=work / "data",
        endpoints={"hang": EndpointConfig(base_url=server.url, models=["hang-1"])},
    )
    conductor = Conductor(settings)  # knows the endpoint's name, as the app does
    try:
        variants = [Variant(provider="hang", model="hang-1", temperature=t) for t in (0.0, 1.0)]
        return (
            ExperimentStore(conductor.log)
            .create("Cut off", "Say {{word}}.", read_dataset("word\nhi\nho\n"), variants)
            .id
        )
    finally:
        conductor.close()


def freshen_heartbeats(work) -> None:
    """Date every running run's heartbeat an hour ahead: only the dead process's lease can then
    tell that the run stopped (a restart on a busy machine may take longer than the 30 s after
    which a heartbeat alone reads stale)."""
    from sqlalchemy import update

    from conductor_core.store import RequestLog
    from conductor_core.workbench.experiments import runs_table

    log = RequestLog(None, data_dir=work / "data")
    try:
        with log.engine.begin() as conn:
            conn.execute(
                update(runs_table).where(runs_table.c.status == "running").values(heartbeat_ts=time.time() + 3600)
            )
    finally:
        log.close()


def test_a_run_cut_off_by_a_restart_reads_interrupted_at_once(services, tmp_path, shots):
    from playwright.sync_api import sync_playwright

    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path
    server = OpenAIServer(reply="Hello.", models=["hang-1"]).start()
    server.script(*[Fault("hang", hang_s=600)] * 4)
    config = "local_enabled = false\n" + endpoint_config(server, "hang")
    experiment_id = make_experiment(work, server)
    first = Playground(work, config=config, name="first")
    second = None
    try:
        with sync_playwright() as p:
            browser = launch(p)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            try:
                page.goto(f"{first.url}/experiments?experiment={experiment_id}")
                page.get_by_role("button", name="Re-run").wait_for(timeout=60_000)
                wait_idle(page)
                page.get_by_role("button", name="Re-run").click()
                page.get_by_role("button", name="Start run 1").click()
                page.get_by_role("button", name="Stop", exact=True).wait_for(timeout=60_000)
                deadline = time.monotonic() + 60
                while not server.requests:  # the run's calls are at the upstream, hanging
                    assert time.monotonic() < deadline, "the run sent nothing"
                    time.sleep(0.1)

                # The server dies with the run in flight; another starts on the same data.
                first.process.kill()
                first.process.wait(30)
                freshen_heartbeats(work)
                second = Playground(work, config=config, name="second")
                page.goto(f"{second.url}/experiments?experiment={experiment_id}")
                page.get_by_role("button", name="Re-run").wait_for(timeout=60_000)
                # The header draws before the run's state: wait for the state, whichever it is, then judge it.
                page.get_by_text(re.compile("Run 1 was interrupted|running in another server process")).first.wait_for(
                    timeout=60_000
                )
                wait_settled(page)
                text = page.get_by_test_id("stMain").inner_text()
                assert "running in another server process" not in text
                assert "Run 1 was interrupted: the server stopped while it ran" in text
                assert page.get_by_role("button", name="Re-run").is_enabled()
                shots(page, "experiment-interrupted-after-restart-1280", full_page=True)

                phone = browser.new_page(viewport={"width": 390, "height": 844})
                phone.goto(f"{second.url}/experiments?experiment={experiment_id}")
                phone.get_by_text("was interrupted", exact=False).wait_for(timeout=60_000)
                wait_settled(phone)
                shots(phone, "experiment-interrupted-after-restart-390", full_page=True)
                phone.close()
            finally:
                browser.close()
    finally:
        if first.process.poll() is None:
            first.stop()
        else:
            first.log.close()
        if second is not None:
            second.stop()
        server.release()
        server.stop()
