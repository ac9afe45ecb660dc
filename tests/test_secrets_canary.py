"""Canary keys over real HTTP. A gateway started as users start it (`python -m gateway`), whose
providers' keys are random canaries shaped like no known key, in front of loopback OpenAI,
Anthropic and Gemini servers whose 401, 400 and 500 bodies, and an error sent in the middle
of a stream, quote pieces of those keys: the last six characters, the first ten upper-cased,
a stretch spaced out, the whole key (tests/secret_support.py `quotes`). A user also pastes a
key into a prompt. No run of six of a key's characters may reach the client's error bodies,
the streamed error event, `/status` and `/providers/{name}/status`, the request log's rows
(SQLite and PostgreSQL), its CSV and JSON exports, or the gateway's log output. Then the
playground in Chromium: the Chat page after such failures, and after a reload.

This process registers none of the canaries, so what it reads from the database and the
exports is what the gateway stored, not something redacted again here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest

from conductor_core.providers.spec import provider_specs
from conductor_core.store import RequestLog
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer
from tests.browser_support import (
    KEY_VARS,
    Playground,
    choose,
    endpoint_config,
    eventually,
    launch,
    wait_idle,
)
from tests.secret_support import leaks, problems, quotes
from tests.store_backends import REPO_ROOT, Backend

pytestmark = pytest.mark.timeout(420)

# Random, and shaped like no known key: only their registration by the gateway redacts them.
KEYS = {
    "openai": "zEihWaaNSqrDLcgioWT5HytV",
    "anthropic": "hB1ySanBg275bk2pLr6AWTIR",
    "gemini": "Kx9vQp2Lr7Ws4Ty8Uz3Nm6Bd",
}
GATEWAY_KEY = "Tae6exbRFh41nD0qXt2RZyu7"
SERVERS = {"openai": OpenAIServer, "anthropic": AnthropicServer, "gemini": GeminiServer}
# Each provider's own variables, from its spec.
BASE_URL_VARS = {name: provider_specs()[name].base_url_env_vars[0] for name in SERVERS}
KEY_ENV = {name: provider_specs()[name].key_env_vars[0] for name in SERVERS}


def _no_piece_of_any_key(where: str, text: str) -> None:
    for name, key in {**KEYS, "gateway": GATEWAY_KEY}.items():
        assert not leaks(key, text), f"pieces of the {name} key in {where}: {leaks(key, text)}"


def test_the_canary_keys_are_random_looking() -> None:
    for key in [*KEYS.values(), GATEWAY_KEY]:
        assert problems(key) == [], key


class _Gateway:
    """`python -m gateway` on a free port, its output (every log line) in a file."""

    def __init__(self, work: Path, store: Backend, upstreams: dict[str, OpenAIServer]) -> None:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.output = work / "gateway.log"
        env = {k: v for k, v in os.environ.items() if k not in KEY_VARS and not k.startswith("CONDUCTOR_")}
        env.update(
            PYTHONPATH=os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")])),
            CONDUCTOR_GATEWAY_PORT=str(self.port),
            CONDUCTOR_GATEWAY_LOG_LEVEL="debug",
            CONDUCTOR_API_KEY=GATEWAY_KEY,
            CONDUCTOR_LOCAL_ENABLED="false",
            CONDUCTOR_DATA_DIR=str(store.data_dir),
            CONDUCTOR_MAX_RETRIES="0",
            CONDUCTOR_BREAKER_FAILURES="1000",  # every call must reach its upstream
            **{KEY_ENV[name]: key for name, key in KEYS.items()},
            **{BASE_URL_VARS[name]: server.url for name, server in upstreams.items()},
        )
        if store.url:
            env["CONDUCTOR_DATABASE_URL"] = store.url
        with open(self.output, "wb") as out:
            # cwd: an empty folder, so no developer's .env or conductor.toml is read.
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway"], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT
            )

        def answers() -> bool:
            assert self.process.poll() is None, self.output.read_text()
            try:
                return httpx.get(f"{self.url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        eventually(answers, 90, "the gateway answering /health")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def test_no_piece_of_a_key_leaves_the_gateway(backend: Backend, tmp_path: Path) -> None:
    upstreams = {name: SERVERS[name](require_key=KEYS[name]).start() for name in KEYS}
    gateway = _Gateway(tmp_path, backend, upstreams)
    auth = {"authorization": f"Bearer {GATEWAY_KEY}"}
    seen: list[str] = []  # everything a client received

    def chat(model: str, *, stream: bool = False, prompt: str = "Hello there") -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": prompt}], "stream": stream}
        answer = httpx.post(f"{gateway.url}/v1/chat/completions", json=body, headers=auth, timeout=60)
        seen.append(answer.text)
        seen.extend(f"{k}: {v}" for k, v in answer.headers.items())
        return answer

    try:
        for name, server in upstreams.items():
            quoted = quotes(KEYS[name])
            server.script(
                Fault("status", status=401, message=quoted),
                Fault("status", status=400, message=quoted),
                Fault("status", status=500, message=quoted),
                Fault("error_event", status=500, message=quoted),
                Fault("error_event", status=500, message=quoted),
            )
            refused = chat(name)
            assert refused.status_code >= 400 and "Incorrect API key provided" in refused.text  # the upstream's words
            assert chat(name, prompt=f"my key is {quotes(KEYS[name])}").status_code == 400
            assert chat(name).status_code >= 500
            streamed = chat(name, stream=True)
            assert streamed.status_code == 200 and "event: error" in streamed.text  # broke after text
            # An official client reading the same kind of stream gets the error, and no piece of the key.
            client = openai.OpenAI(base_url=f"{gateway.url}/v1", api_key=GATEWAY_KEY, max_retries=0, timeout=60)
            with pytest.raises(openai.APIError) as caught:
                for _ in client.chat.completions.create(
                    model=name, messages=[{"role": "user", "content": "Hi"}], stream=True
                ):
                    pass
            seen.append(f"{caught.value} {caught.value.body}")
            # Control: the key really went over the wire, and the quotes really came back.
            assert all(KEYS[name] in str(r["headers"]) for r in server.requests)
        # AUTO: every provider refuses, and the error lists each attempt's (quoting) message.
        for name, server in upstreams.items():
            server.script(Fault("status", status=401, message=quotes(KEYS[name])))
        failed = chat("auto")
        assert failed.status_code >= 500 and len(failed.json()["details"]["attempts"]) == 3
        for path in ("/status", *(f"/providers/{name}/status" for name in KEYS), "/health", "/v1/models"):
            answer = httpx.get(f"{gateway.url}{path}", headers=auth, timeout=30)
            assert answer.status_code == 200, (path, answer.text)
            seen.append(answer.text)
        assert "Incorrect API key provided" in httpx.get(f"{gateway.url}/status", headers=auth).text

        log = RequestLog(backend.url, data_dir=backend.data_dir)
        try:

            def all_attempts() -> list | None:
                found = log.records()
                return found if len(found) >= 18 else None

            rows = eventually(all_attempts, 60, "the 18 attempts in the request log")
            stored = [json.dumps(r.model_dump(mode="json")) for r in rows]
            exported = log.export("csv").decode() + log.export("json").decode()
        finally:
            log.close()
        raw = json.dumps([list(map(str, row)) for row in backend.raw_rows("attempts")])
    finally:
        gateway.stop()
        for server in upstreams.values():
            server.stop()
    output = gateway.output.read_text(errors="replace")

    # Controls: the failures were recorded and logged, with the upstreams' words around the quotes.
    assert len(rows) >= 18 and sum(r.status == "incomplete" for r in rows) == 6  # the streams broke after text
    assert "Incorrect API key provided" in exported and "are revoked" in raw
    assert "POST /v1/chat/completions" in output
    for where, text in [
        ("what clients received", "\n".join(seen)),
        ("the request log's rows", "\n".join(stored)),
        ("the database", raw),
        ("the CSV and JSON exports", exported),
        ("the gateway's log output", output),
    ]:
        _no_piece_of_any_key(where, text)


def test_no_piece_of_a_key_reaches_the_chat_page(services, tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    key = KEYS["openai"]
    upstream = OpenAIServer(reply="Hello there, a streamed answer.", models=["canary-model"], chunk_delay_s=0.02)
    upstream.require_key = key
    upstream.start()
    config = endpoint_config(upstream) + 'api_key_env = "CANARY_ENDPOINT_KEY"\n'
    app = Playground(tmp_path, config=config, extra_env={"CANARY_ENDPOINT_KEY": key})
    try:
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 900})
                page.goto(app.url)
                page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
                wait_idle(page, 120_000)
                choose(page, "Provider", "loopback", within=page.get_by_test_id("stSidebar"))
                wait_idle(page)

                upstream.script(Fault("status", status=401, message=quotes(key)))
                _ask(page, "First question")
                page.get_by_test_id("stAlertContentError").get_by_text("Incorrect API key provided").wait_for(
                    timeout=60_000
                )
                wait_idle(page)
                upstream.script(Fault("error_event", status=500, message=quotes(key)))
                _ask(page, "Second question")
                page.get_by_text("The answer stopped part-way").wait_for(timeout=60_000)
                wait_idle(page)
                _page_holds_no_piece_of(page, key)

                page.reload()
                page.get_by_text("The answer stopped part-way").wait_for(timeout=120_000)
                page.get_by_test_id("stAlertContentError").get_by_text("Incorrect API key provided").wait_for(
                    timeout=60_000
                )
                wait_idle(page)
                _page_holds_no_piece_of(page, key)
            finally:
                browser.close()
        assert sum(key in str(r["headers"]) for r in upstream.requests) >= 2  # control: the key was sent
    finally:
        app.stop()
        upstream.stop()


def _ask(page, prompt: str) -> None:
    box = page.get_by_test_id("stChatInputTextArea")
    box.fill(prompt)
    box.press("Enter")


def _page_holds_no_piece_of(page, key: str) -> None:
    shown = page.inner_text("body")
    assert "Incorrect API key provided" in shown and "Second question" in shown  # control
    for where, text in (("the Chat page's text", shown), ("the Chat page's HTML", page.content())):
        assert not leaks(key, text), f"pieces of the key in {where}: {leaks(key, text)}"
