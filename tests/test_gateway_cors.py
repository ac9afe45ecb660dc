"""Issue 18, item 2: CORS for the official JavaScript SDK, in a real browser.

A page served from another loopback origin loads the official openai-node client (npm
package `openai`, pinned in tests/package.json, installed with `npm ci --prefix tests`) in
Debian's Chromium through Playwright, and calls the gateway with `dangerouslyAllowBrowser`:
a chat and a stream succeed (openai-node's preflight asks for its `x-stainless-*` headers,
which Starlette's defaults refused with a plain-text 400). From an origin that is not allowed
the call fails in the browser, and the preflight it sent was answered in the gateway's JSON
error shape."""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from conductor_core.testing.protocol_servers import OpenAIServer
from gateway.main import create_app
from gateway.settings import GatewaySettings
from tests.browser_support import CHROMIUM, launch
from tests.test_gateway import make_conductor, serve
from tests.test_gateway_async import endpoints

TESTS = Path(__file__).resolve().parent
OPENAI_NODE = TESTS / "node_modules" / "openai" / "index.mjs"
GATEWAY_KEY = "Wq4nZ8vR2tLx7KpM3cYh9BsD5fGj6NaE1uTo"


def _unavailable() -> str | None:
    if not Path(CHROMIUM).exists():
        return f"Debian chromium is not installed at {CHROMIUM} (apt-get install chromium)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright Python package is not installed"
    if not OPENAI_NODE.exists():
        npm = shutil.which("npm")
        if npm is None:
            return "npm is not installed (apt-get install npm), so openai-node cannot be installed"
        # The pinned version, from the lockfile: what .ci/run does too.
        done = subprocess.run([npm, "ci", "--no-audit", "--no-fund"], cwd=TESTS, capture_output=True, text=True)
        if done.returncode != 0 or not OPENAI_NODE.exists():
            return f"npm ci in tests/ failed: {done.stderr[-400:]}"
    return None


@pytest.fixture(scope="module")
def browser_ready() -> None:
    reason = _unavailable()
    if reason:
        if os.environ.get("CONDUCTOR_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CONDUCTOR_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)


class _Pages(http.server.SimpleHTTPRequestHandler):
    """tests/ as static files (an empty page, and node_modules/ with openai-node's modules)."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript"}

    def log_message(self, *args: Any) -> None:  # quiet
        pass


@pytest.fixture(scope="module")
def page_server(browser_ready) -> Iterator[int]:
    (TESTS / "node_modules" / "cors-page.html").write_text("<!doctype html><title>cors</title>")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Pages, directory=str(TESTS)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


class _Preflights:
    """ASGI wrapper that keeps each OPTIONS exchange as the browser saw it (the browser does
    not show a preflight's answer to the page)."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.seen: list[dict[str, Any]] = []

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["method"] != "OPTIONS":
            await self.app(scope, receive, send)
            return
        entry: dict[str, Any] = {"request": {k.decode(): v.decode() for k, v in scope["headers"]}, "body": b""}
        self.seen.append(entry)

        async def keep(message: Any) -> None:
            if message["type"] == "http.response.start":
                entry["status"] = message["status"]
                entry["headers"] = {k.decode().lower(): v.decode() for k, v in message["headers"]}
            elif message["type"] == "http.response.body":
                entry["body"] += message.get("body", b"")
            await send(message)

        await self.app(scope, receive, keep)


CALLS = """
async ([gateway, key, model]) => {
  const { default: OpenAI } = await import('/node_modules/openai/index.mjs');
  const client = new OpenAI({ baseURL: gateway + '/v1', apiKey: key, dangerouslyAllowBrowser: true, maxRetries: 0 });
  try {
    const chat = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }] });
    const stream = await client.chat.completions.create({
      model, messages: [{ role: 'user', content: 'Hi' }], stream: true, stream_options: { include_usage: true },
    });
    const pieces = [];
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.choices.length) pieces.push(chunk.choices[0].delta.content || '');
      if (chunk.usage) usage = chunk.usage;
    }
    const raw = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'Hi' }] }).asResponse();
    return { ok: true, chat: chat.choices[0].message.content, streamed: pieces.join(''), usage,
             requestId: raw.headers.get('x-request-id'), provider: raw.headers.get('x-conductor-provider') };
  } catch (error) {
    return { ok: false, name: error.constructor.name, message: String(error.message) };
  }
}
"""


def test_openai_node_in_chromium_calls_the_gateway_from_an_allowed_origin_only(page_server: int, tmp_path) -> None:
    from playwright.sync_api import sync_playwright

    allowed = f"http://127.0.0.1:{page_server}"
    refused = f"http://localhost:{page_server}"  # the same page, another origin
    with OpenAIServer(reply="Hello from the loopback server.") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream), api_key=GATEWAY_KEY)
        app = _Preflights(create_app(conductor, settings=GatewaySettings(_env_file=None, cors_origins=allowed)))
        with serve(app) as gateway, sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page()
                page.goto(f"{allowed}/node_modules/cors-page.html")
                result = page.evaluate(CALLS, [gateway, GATEWAY_KEY, "up/m"])
                assert result["ok"], result
                assert result["chat"] == result["streamed"] == "Hello from the loopback server."
                assert result["usage"]["completion_tokens"] == 5
                # Exposed headers: a page can read Conductor's figures and the request id.
                assert result["requestId"].startswith("req_") and result["provider"] == "up"
                asked = [e["request"].get("access-control-request-headers", "") for e in app.seen]
                assert any("x-stainless" in headers for headers in asked)  # what openai-node always sends
                assert {e["status"] for e in app.seen} == {200}

                app.seen.clear()
                calls = upstream.request_count
                page.goto(f"{refused}/node_modules/cors-page.html")
                result = page.evaluate(CALLS, [gateway, GATEWAY_KEY, "up/m"])
                assert not result["ok"] and result["name"] == "APIConnectionError", result
                assert upstream.request_count == calls  # the browser sent nothing past the preflight
            finally:
                browser.close()
        [preflight] = app.seen
        assert preflight["status"] == 400 and preflight["headers"]["content-type"] == "application/json"
        assert "access-control-allow-origin" not in preflight["headers"]
        body = json.loads(preflight["body"])
        assert body["type"] == "cors_rejected" and body["error"]["type"] == "invalid_request_error"
        assert body["message"] == (
            f"the origin {refused} may not call this gateway from a browser: add it to CONDUCTOR_CORS_ORIGINS"
        )
        assert body["request_id"] == preflight["headers"]["x-request-id"]
        conductor.close()


def test_preflight_errors_are_in_the_gateways_json_shape(tmp_path) -> None:
    """The same answers without a browser: any requested header is allowed for an allowed
    origin (reflected), and every refusal is a JSON error saying what to change."""
    conductor = make_conductor(tmp_path, api_key=GATEWAY_KEY)
    settings = GatewaySettings(_env_file=None, cors_origins="https://app.example")
    with serve(create_app(conductor, settings=settings)) as url:
        asked = "authorization,content-type,x-stainless-os,x-stainless-retry-count,openai-organization"
        ok = httpx.options(
            f"{url}/v1/chat/completions",
            headers={
                "origin": "https://app.example",
                "access-control-request-method": "POST",
                "access-control-request-headers": asked,
            },
        )
        assert ok.status_code == 200 and ok.headers["access-control-allow-headers"] == asked
        assert ok.headers["access-control-allow-origin"] == "https://app.example"
        cases = {
            ("https://evil.example", "POST"): "the origin https://evil.example may not call this gateway",
            ("https://app.example", "DELETE"): "DELETE is not allowed from a browser: the gateway takes GET, POST",
        }
        for (origin, method), says in cases.items():
            r = httpx.options(
                f"{url}/v1/chat/completions",
                headers={"origin": origin, "access-control-request-method": method},
            )
            assert r.status_code == 400 and r.headers["content-type"] == "application/json"
            assert r.json()["type"] == "cors_rejected" and says in r.json()["message"]
            assert r.json()["request_id"] == r.headers["x-request-id"]
            assert "access-control-allow-headers" not in r.headers
    conductor.close()
