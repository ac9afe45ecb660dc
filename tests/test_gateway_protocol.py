"""The gateway's protocol details (issue 18's small items): the import graph of the package,
public binds and key length, /health without a key, HEAD on every GET route, 400 messages in
users' words, and the upstream's own error code kept."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from starlette.testclient import TestClient

from conductor_core.testing.protocol_servers import Fault, OpenAIServer
from gateway.main import create_app
from gateway.middleware import MIN_PUBLIC_KEY_LENGTH, exposure_error
from gateway.settings import GatewaySettings
from tests.test_gateway import make_conductor, serve, user
from tests.test_gateway_async import endpoints, one_provider

ROOT = Path(__file__).resolve().parents[1]


def _gateway_imports() -> dict[str, set[str]]:
    """Each gateway module and the gateway modules it imports (at the top or inside a function)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "gateway").glob("*.py")):
        name = path.stem
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway."):
                found.add(node.module.split(".")[1])
        graph[name] = found - {name}
    return graph


def test_the_gateway_package_has_no_import_cycle() -> None:
    graph = _gateway_imports()
    assert "core" in graph["openai_api"]  # the graph is read (a sanity check on the parser)

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path:
                found = cycle_from(start, [*path, nxt])
                if found:
                    return found
        return None

    cycles = [c for c in (cycle_from(m, [m]) for m in graph) if c]
    assert not cycles, " -> ".join(cycles[0])


# --- a public bind needs a key of at least 32 characters ---------------------------------------

SHORT_KEY = "Tz6pQw2RkN9vXc4mLh8JyB"  # 22 characters
LONG_KEY = "Xk7RmP2vQ9wLt4ZcN8hB3sYd6FgJ5aTu"


def _python_m_gateway(tmp_path, key: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONDUCTOR_") and k != "OPENAI_API_KEY"}
    env.update(
        CONDUCTOR_GATEWAY_HOST="0.0.0.0",
        CONDUCTOR_GATEWAY_PORT="8659",
        CONDUCTOR_DATA_DIR=str(tmp_path),
        CONDUCTOR_API_KEY=key,
        PYTHONPATH=str(ROOT),
    )
    return subprocess.run(
        [sys.executable, "-m", "gateway"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )


def test_a_public_bind_refuses_a_key_shorter_than_32_characters(tmp_path) -> None:
    assert MIN_PUBLIC_KEY_LENGTH == 32
    run = _python_m_gateway(tmp_path, SHORT_KEY)
    assert run.returncode != 0
    assert f"refusing to serve on 0.0.0.0 with a {len(SHORT_KEY)}-character CONDUCTOR_API_KEY" in run.stderr
    assert "at least 32 characters" in run.stderr and "secrets.token_urlsafe(32)" in run.stderr
    assert exposure_error("0.0.0.0", "k" * 32, False) is None
    assert exposure_error("127.0.0.1", "k", False) is None  # loopback: any key (or none)
    assert exposure_error("0.0.0.0", "k", True) is None  # a trusted network, said so
    assert "secrets.token_urlsafe(32)" in (exposure_error("0.0.0.0", None, False) or "")

    # `uvicorn gateway.main:app --host 0.0.0.0` skips that check: the middleware refuses instead
    # ("testserver" is not loopback), even with the right bearer key.
    for key, status in ((SHORT_KEY, 403), (LONG_KEY, 200)):
        conductor = make_conductor(tmp_path / key[:5], api_key=key)
        with TestClient(create_app(conductor, settings=GatewaySettings(_env_file=None))) as test:
            r = test.get("/status", headers={"authorization": f"Bearer {key}"})
            assert r.status_code == status, r.text
            if status == 403:
                assert "at least 32 characters" in r.json()["message"]
            assert test.get("/health").status_code == 200  # the probe stays open
        conductor.close()


# --- /health without the key says only up or down ------------------------------------------------


def test_health_without_the_key_says_only_up_or_down(tmp_path) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(secret_name=upstream), api_key=LONG_KEY)
        with serve(create_app(conductor)) as url:
            anonymous = httpx.get(f"{url}/health")
            assert anonymous.status_code == 200 and anonymous.json() == {"status": "up"}
            assert "secret_name" not in anonymous.text
            wrong = httpx.get(f"{url}/health", headers={"authorization": "Bearer nope"})
            assert wrong.json() == {"status": "up"}
            full = httpx.get(f"{url}/health", headers={"authorization": f"Bearer {LONG_KEY}"}).json()
            assert full["status"] == "ok" and full["providers"] == {"secret_name": True}
        conductor.close()
    with OpenAIServer() as upstream:
        upstream.set_down(True)
        conductor = make_conductor(tmp_path / "down", endpoints=endpoints(up=upstream), api_key=LONG_KEY)
        with serve(create_app(conductor)) as url:
            deadline = time.monotonic() + 30  # the checks run in the background: wait for their verdict
            while (answer := httpx.get(f"{url}/health").json()) != {"status": "down"} and time.monotonic() < deadline:
                time.sleep(0.2)
            assert answer == {"status": "down"}
        conductor.close()
    conductor = make_conductor(tmp_path / "open", endpoints={})  # no key configured: everything, to anyone
    with serve(create_app(conductor)) as url:
        assert set(httpx.get(f"{url}/health").json()) >= {"status", "providers", "version"}
    conductor.close()


# --- HEAD on every GET route ----------------------------------------------------------------------


def test_head_answers_on_every_get_route_as_get_does_without_a_body(tmp_path) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream), api_key=LONG_KEY)
        with serve(create_app(conductor)) as url, httpx.Client(base_url=url, timeout=30) as http:
            auth = {"authorization": f"Bearer {LONG_KEY}"}
            paths = http.get("/openapi.json", headers=auth).json()["paths"]
            gets = [path for path, operations in paths.items() if "get" in operations]
            fill = {"{model_id}": "up/m", "{name}": "up"}
            concrete = []
            for path in gets:
                for hole, value in fill.items():
                    path = path.replace(hole, value)
                concrete.append(path)
            assert {"/v1/models", "/v1/models/up/m", "/status", "/providers/up/status", "/health"} <= set(concrete)
            for path in [*concrete, "/docs", "/openapi.json", "/nothing-here"]:
                got, head = http.get(path, headers=auth), http.head(path, headers=auth)
                assert head.status_code == got.status_code, path
                assert head.content == b"" and head.headers["content-type"] == got.headers["content-type"], path
                assert head.headers["x-request-id"]
            assert not [p for p, ops in paths.items() if "head" in ops]  # documented in words, not as operations
        conductor.close()


# --- 400 messages in users' words ----------------------------------------------------------------

PYDANTIC_WORDS = (
    "constrained-str",
    "discriminator",
    "literal[",
    "list[",
    "tagged-union",
    "function-after",
    "Input should",
    "Unable to extract",
    "[type=",
    "NamedToolChoice",
    "ToolName",
)
U = [{"role": "user", "content": "hi"}]
BAD = [
    (
        {"messages": [*U, *U, {"content": "x"}]},
        "messages[2].role is required: one of system, developer, user, assistant, tool",
    ),
    (
        {"messages": [*U, *U, {"role": "robot", "content": "x"}]},
        "messages[2].role must be one of system, developer, user, assistant, tool, got 'robot'",
    ),
    ({"stop": [""]}, "stop[0] must not be empty"),
    ({"stop": ""}, "stop must not be empty"),
    ({"stop": 5}, "stop must be a string or an array, got 5"),
    ({"stop": ["a", "b", "c", "d", "e"]}, "stop must have at most 4 items, got 5"),
    (
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": "sometimes"},
        "tool_choice must be 'none', 'auto', 'required' or a JSON object, got 'sometimes'",
    ),
    (
        {"tools": [{"type": "function", "function": {"name": "f"}}], "tool_choice": {"type": "function"}},
        "tool_choice.function is required",
    ),
    ({"functions": [{"name": "f"}], "function_call": {"nam": "f"}}, "function_call.name is required"),
    ({"response_format": {"type": "xml"}}, "response_format.type must be one of text, json_object, json_schema"),
    ({"response_format": {"type": "json_schema"}}, "response_format.json_schema is required"),
    ({"logit_bias": {"1": 500}}, "logit_bias.1 must be between -100 and 100, got 500"),
    ({"messages": ["hi"]}, "messages[0] must be a JSON object, got 'hi'"),
]


@pytest.mark.parametrize(("extra", "says"), BAD)
def test_400_messages_are_in_users_words(tmp_path, extra: dict, says: str) -> None:
    conductor = make_conductor(tmp_path, api_key=LONG_KEY)  # TestClient's address is not loopback
    with TestClient(create_app(conductor, settings=GatewaySettings(_env_file=None))) as test:
        r = test.post(
            "/v1/chat/completions",
            json={"model": "auto", "messages": U, **extra},
            headers={"authorization": f"Bearer {LONG_KEY}"},
        )
        body = r.json()
        assert r.status_code == 400 and body["message"].startswith(says), body["message"]
        texts = [body["message"], body["error"]["param"] or "", *(d["message"] for d in body["details"] or [])]
        assert not [w for w in PYDANTIC_WORDS if any(w in t for t in texts)], texts
    conductor.close()


# --- the upstream's own error code is kept ----------------------------------------------------------


@pytest.mark.parametrize(
    ("provider", "fault", "code"),
    [
        (
            "openai",
            Fault(
                "status",
                status=400,
                message="This model's maximum context length is 8 tokens.",
                code="context_length_exceeded",
            ),
            "context_length_exceeded",
        ),
        ("anthropic", Fault("status", status=400, message="prompt is too long"), "invalid_request_error"),
        ("gemini", Fault("status", status=400, message="Request contains an invalid argument."), "INVALID_ARGUMENT"),
    ],
)
def test_an_upstream_4xx_keeps_its_own_error_code(tmp_path, provider: str, fault: Fault, code: str) -> None:
    model = {"openai": "up/m", "anthropic": "anthropic", "gemini": "gemini"}[provider]
    with one_provider(tmp_path, provider, "fine") as (upstream, url, conductor):
        upstream.script(fault)
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": user()}, timeout=30)
        body = r.json()
        assert r.status_code == 400 and body["error"]["code"] == code, body
        assert body["type"] == "bad_request"  # Conductor's kind stays in the top-level type
        upstream.script(Fault("status", status=401, message="Incorrect API key provided", code="invalid_api_key"))
        r = httpx.post(f"{url}/v1/chat/completions", json={"model": model, "messages": user()}, timeout=30)
        # The upstream refused Conductor's key: a 502, not the client's key, so not its code.
        assert r.status_code == 502 and r.json()["error"]["code"] == "authentication"
