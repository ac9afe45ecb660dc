"""The checks docker/smoke-test.sh runs against the containers, from the host, as a user would:
the official openai client against the gateway's published port, Playwright + Debian's chromium
against the playground's. Each subcommand exits non-zero with a sentence saying what failed.

    python docker/smoke.py health URL/health
    python docker/smoke.py chat URL               (the key in CONDUCTOR_API_KEY)
    python docker/smoke.py first-page URL
    python docker/smoke.py dashboard URL --requests N
    python docker/smoke.py ports-free PORT...      (each free on 127.0.0.1, or the taken one named)
    python docker/smoke.py published "$(docker port NAME 8000)"   (the URL of a published port)

It never asserts the words the model writes (they differ from one CPU to the next): an answer
arrived, from the local model, with the token counts the gateway reports.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python docker/smoke.py` from the checkout
    sys.path.insert(0, str(ROOT))

from conductor_core.providers.spec import get_spec  # noqa: E402 - the root is on the path first
from conductor_core.testing.chromium import CHROMIUM, CHROMIUM_ARGS  # noqa: E402 - the same flags as the browser tests

LOCAL_MODEL = f"local/{get_spec('local').default_model}"  # the image keeps the bundled model's name


class SmokeFailure(Exception):
    pass


def check(condition: object, message: str) -> None:
    if not condition:
        raise SmokeFailure(message)


def wait_health(url: str, timeout_s: float) -> float:
    """Poll `url` until it answers 200; the seconds it took."""
    started = time.monotonic()
    last = "no answer"
    while time.monotonic() - started < timeout_s:
        try:
            with urllib.request.urlopen(url, timeout=2) as answer:
                if answer.status == 200:
                    return time.monotonic() - started
                last = f"HTTP {answer.status}"
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
        except OSError as exc:
            last = str(exc)
        time.sleep(0.1)
    raise SmokeFailure(f"{url} did not answer 200 within {timeout_s:g} s (last: {last})")


def chat(base_url: str, key: str) -> dict:
    """A request without the key is refused; one with it is answered by the local model."""
    import openai

    anonymous = openai.OpenAI(base_url=f"{base_url}/v1", api_key="not-the-key", max_retries=0, timeout=30)
    try:
        anonymous.models.list()
    except openai.AuthenticationError:
        pass
    else:
        raise SmokeFailure("the gateway answered /v1/models with a wrong key: CONDUCTOR_API_KEY is not in force")

    client = openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=180)
    models = [m.id for m in client.models.list().data]
    check(LOCAL_MODEL in models, f"{LOCAL_MODEL} is not among the gateway's models: {models}")
    started = time.monotonic()
    reply = client.chat.completions.create(
        model=LOCAL_MODEL,
        messages=[{"role": "user", "content": "What is the capital of France?"}],
        max_tokens=16,
        temperature=0,
    )
    seconds = time.monotonic() - started
    check(reply.object == "chat.completion" and len(reply.choices) == 1, f"not one chat completion: {reply!r}")
    choice = reply.choices[0]
    check(
        choice.message.role == "assistant" and isinstance(choice.message.content, str),
        f"the answer is not an assistant message: {choice!r}",
    )
    check(choice.finish_reason in ("stop", "length"), f"unexpected finish_reason {choice.finish_reason!r}")
    check(reply.model == LOCAL_MODEL, f"not served by {LOCAL_MODEL}: {reply.model!r}")
    check(reply.usage is not None and reply.usage.prompt_tokens > 0, f"no prompt token count: {reply.usage!r}")
    return {
        "model": reply.model,
        "finish_reason": choice.finish_reason,
        "completion_tokens": reply.usage.completion_tokens,
        "seconds": round(seconds, 3),
    }


def _browser():
    from playwright.sync_api import sync_playwright

    check(Path(CHROMIUM).exists(), f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    manager = sync_playwright().start()
    browser = manager.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    return manager, browser


def _shot(page, screenshots: Path | None, name: str) -> None:
    if screenshots is not None:
        screenshots.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(screenshots / f"{name}.png"))


def _no_error_on_page(page) -> None:
    for test_id in ("stException", "stAlertContentError"):
        errors = page.get_by_test_id(test_id)
        check(errors.count() == 0, f"the page shows an error: {errors.first.inner_text() if errors.count() else ''}")


def first_page(url: str, screenshots: Path | None) -> dict:
    """The playground's first page in Chromium, at desktop and phone width: the chat input, the
    page navigation and the local model's readiness, and no error."""
    manager, browser = _browser()
    try:
        found = {}
        for name, viewport in (
            ("first-page", {"width": 1440, "height": 960}),
            ("first-page-phone", {"width": 390, "height": 844}),
        ):
            page = browser.new_page(viewport=viewport)
            page.goto(url)
            page.get_by_role("heading", name="Playground", exact=True).wait_for(timeout=120_000)
            page.get_by_test_id("stChatInput").wait_for(timeout=60_000)
            page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=60_000)
            _no_error_on_page(page)
            check(page.title() == "Conductor", f"the page title is {page.title()!r}, not 'Conductor'")
            _shot(page, screenshots, name)
            if name == "first-page":
                nav = page.get_by_test_id("stSidebarNav").inner_text()
                for title in ("Playground", "Compare", "Dashboard", "Providers"):
                    check(title in nav, f"the navigation lacks {title!r}: {nav!r}")
                # Drawn only once Conductor has started in the container (configuration read).
                sidebar = page.get_by_test_id("stSidebar").inner_text()
                ready = re.search(r"\d+ of \d+ configured providers? ready", sidebar)
                check(ready, f"the sidebar does not say which providers are ready: {sidebar[:300]!r}")
                found["readiness"] = ready.group(0)
            page.close()
        return found
    finally:
        browser.close()
        manager.stop()


def _metric(page, label: str) -> str | None:
    for metric in page.get_by_test_id("stMetric").all():
        if metric.get_by_test_id("stMetricLabel").inner_text().strip() == label:
            return metric.get_by_test_id("stMetricValue").inner_text().strip()
    return None


def dashboard(url: str, requests: int, screenshots: Path | None) -> dict:
    """The Dashboard counts the requests the log holds (the gateway's, through PostgreSQL)."""
    manager, browser = _browser()
    try:
        page = browser.new_page(viewport={"width": 1440, "height": 960})
        page.goto(url.rstrip("/") + "/dashboard")
        page.get_by_role("heading", name="Dashboard", exact=True).wait_for(timeout=120_000)
        deadline = time.monotonic() + 60
        shown = caption = None
        while time.monotonic() < deadline:  # the panel refreshes itself every 2 s
            shown = _metric(page, "Requests")
            captions = [c.inner_text() for c in page.get_by_test_id("stCaptionContainer").all()]
            caption = next((c for c in captions if "attempts" in c), None)
            if shown == str(requests) and caption and re.search(rf"\b{requests:,} attempts\b", caption):
                break
            page.wait_for_timeout(500)
        check(shown == str(requests), f"the dashboard shows Requests = {shown!r}, the log holds {requests}")
        check(
            caption and f"{requests:,} attempts" in caption,
            f"the dashboard's caption does not count {requests} attempts: {caption!r}",
        )
        _no_error_on_page(page)
        page.wait_for_timeout(1000)
        _shot(page, screenshots, "dashboard")
        return {"requests": shown, "caption": caption}
    finally:
        browser.close()
        manager.stop()


def ports_free(ports: list[int], host: str = "127.0.0.1") -> dict:
    """Each port free on `host` (a bind succeeds, as Docker's would), else the first taken one
    named, with how to choose others."""
    for port in ports:
        with socket.socket() as sock:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as Docker binds: TIME_WAIT is no owner
            try:
                sock.bind((host, port))
            except OSError as exc:
                raise SmokeFailure(
                    f"{host}:{port} is already in use ({exc.strerror}): another program listens there. Set "
                    "DOCKER_TEST_PORTS to three free ports (gateway alone, compose gateway, compose playground), "
                    "or leave it unset and Docker picks free ones"
                ) from None
    return {"free": ports}


def published(port_output: str) -> str:
    """The loopback URL of a published port, from what `docker port` or `docker compose port`
    prints ("127.0.0.1:49153", one line per address; IPv6 lines are skipped)."""
    for address in port_output.split():
        host, _, port = address.rpartition(":")
        if port.isdigit() and host in ("127.0.0.1", "0.0.0.0"):
            return f"http://127.0.0.1:{port}"
    raise SmokeFailure(f"no IPv4 host port in {port_output!r}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("health")
    p.add_argument("url")
    p.add_argument("--timeout", type=float, default=180)
    p = sub.add_parser("chat")
    p.add_argument("url")
    p = sub.add_parser("first-page")
    p.add_argument("url")
    p.add_argument("--screenshots", type=Path)
    p = sub.add_parser("dashboard")
    p.add_argument("url")
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--screenshots", type=Path)
    p = sub.add_parser("ports-free")
    p.add_argument("ports", type=int, nargs="+")
    p = sub.add_parser("published")
    p.add_argument("port_output")
    args = parser.parse_args(argv)
    try:
        if args.command == "health":
            result: object = {"seconds": round(wait_health(args.url, args.timeout), 3)}
        elif args.command == "chat":
            key = os.environ.get("CONDUCTOR_API_KEY")
            check(key, "set CONDUCTOR_API_KEY to the gateway's key")
            result = chat(args.url.rstrip("/"), key)
        elif args.command == "first-page":
            result = first_page(args.url, args.screenshots)
        elif args.command == "ports-free":
            result = ports_free(args.ports)
        elif args.command == "published":
            print(published(args.port_output))  # the URL alone, for the shell
            return 0
        else:
            result = dashboard(args.url, args.requests, args.screenshots)
    except SmokeFailure as exc:
        print(f"FAILED {args.command}: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
