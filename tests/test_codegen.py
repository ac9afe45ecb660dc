"""Get code: each snippet is run for real — the provider-SDK programs against loopback
servers, compared with what Conductor's own provider puts on the wire; the openai-client
program and curl against a running gateway — and none holds a key."""

from __future__ import annotations

import contextlib
import io
import json
import os
import shlex
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from workbench_support import KEYS, cloud_conductor

from conductor_core.config import EndpointConfig, SecretStr, load_settings
from conductor_core.models import ChatMessage, ChatRequest
from conductor_core.providers.spec import provider_specs
from conductor_core.structured import EXAMPLE_SCHEMAS
from conductor_core.workbench.codegen import code_target, curl, gateway_python, sdk_python, snippets

CLAUDE = provider_specs()["anthropic"].default_model
TRICKY = 'Say "hi" — it\'s a test\nwith a second line and a \\ backslash'


def request(provider: str, **kw: Any) -> ChatRequest:
    messages = [ChatMessage(role="system", content="Be terse."), ChatMessage(role="user", content=TRICKY)]
    return ChatRequest(
        provider=provider, messages=messages, **{"temperature": 0.3, "max_tokens": 50, "stop": ["END"], **kw}
    )


def run_python(code: str, env: dict[str, str]) -> str:
    out = io.StringIO()
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(code, "<snippet>", "exec"), {"__name__": "__main__"})
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return out.getvalue()


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_the_sdk_snippet_sends_what_conductor_sends(kind: str, clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    server = clouds[kind]
    try:
        extra = {} if kind == "anthropic" else {"top_p": 0.9, "seed": 7}
        req = request(kind, **extra)
        conductor.chat(req)
        ours = server.requests[-1]
        target = code_target(conductor.settings, kind, default_model=conductor.registry.get(kind).default_model)
        code = sdk_python(req, target)
        assert code is not None and KEYS[kind] not in code and server.url in code
        printed = run_python(code, {target.key_env: KEYS[kind]})
        theirs = server.requests[-1]
        assert printed.strip() == server.reply
        assert theirs["path"] == ours["path"]
        assert theirs["json"] == ours["json"]
    finally:
        conductor.close()


INVOICE_FORMAT = {
    "type": "json_schema",
    "json_schema": {"name": "invoice", "schema": EXAMPLE_SCHEMAS["Invoice"], "strict": True},
}


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
@pytest.mark.parametrize("response_format", [INVOICE_FORMAT, {"type": "json_object"}], ids=["schema", "object"])
def test_the_sdk_snippet_asks_for_the_same_json_output(
    kind: str, response_format: dict[str, Any], clouds, tmp_path: Path
) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    server = clouds[kind]
    try:
        req = request(kind, response_format=response_format)
        conductor.chat(req)
        ours = server.requests[-1]["json"]
        target = code_target(conductor.settings, kind, default_model=conductor.registry.get(kind).default_model)
        code = sdk_python(req, target)
        assert code is not None
        run_python(code, {target.key_env: KEYS[kind]})
        assert server.requests[-1]["json"] == ours  # the schema, name and strict, as the provider sends them
        assert ('"vendor"' in json.dumps(ours)) == (response_format is INVOICE_FORMAT)  # the schema went out
        gateway_code = gateway_python(req, target)
        assert f"response_format={response_format!r}" in gateway_code
        assert json.loads(shlex.split(curl(req, target).split(" -d ", 1)[1])[0])["response_format"] == response_format
    finally:
        conductor.close()


@contextlib.contextmanager
def serve(app: Any) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    server = uvicorn.Server(
        uvicorn.Config(app, lifespan="on", log_config=None, access_log=False, timeout_graceful_shutdown=2)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 90
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the gateway did not start"
        time.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}/v1"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


def test_the_gateway_snippets_run_against_a_gateway(clouds, tmp_path: Path) -> None:
    from gateway.main import create_app

    conductor = cloud_conductor(clouds, tmp_path, api_key="sej1A5wPkGPdXDJ-hFzKnGwW")
    try:
        req = request("anthropic")
        target = code_target(conductor.settings, "anthropic", CLAUDE)
        with serve(create_app(conductor)) as url:
            code = gateway_python(req, target, gateway_url=url)
            assert "sej1A5wPkGPdXDJ" not in code and f"model='anthropic/{CLAUDE}'" in code and "stop=['END']" in code
            printed = run_python(code, {"CONDUCTOR_API_KEY": "sej1A5wPkGPdXDJ-hFzKnGwW"})
            assert printed.strip() == clouds["anthropic"].reply
            body = clouds["anthropic"].requests[-1]["json"]
            assert body["system"] == "Be terse." and body["messages"] == [{"role": "user", "content": TRICKY}]
            # The gateway passes stop on; the settings Anthropic has no equivalent for are left out.
            assert (body["model"], body["max_tokens"], body["stop_sequences"]) == (CLAUDE, 50, ["END"])
            assert "temperature=" not in code and "top_p=" not in code and "seed=" not in code

            command = curl(req, target, gateway_url=url)
            env = {**os.environ, "CONDUCTOR_API_KEY": "sej1A5wPkGPdXDJ-hFzKnGwW"}
            answer = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
            assert answer.returncode == 0, answer.stderr
            reply = json.loads(answer.stdout)
            assert reply["choices"][0]["message"]["content"] == clouds["anthropic"].reply
            assert clouds["anthropic"].requests[-1]["json"]["messages"] == [{"role": "user", "content": TRICKY}]
    finally:
        conductor.close()


def test_targets_follow_the_configuration_and_never_write_a_key() -> None:
    settings = load_settings(
        _env_file=None,
        openai_api_key="sk-koD2iSdVs3smATnbpPuhcYhT",
        endpoints={
            "groq": EndpointConfig(
                base_url="https://api.groq.com/openai/v1", api_key_env="GROQ_API_KEY", models=["llama-3.3-70b"]
            )
        },
    )
    req = request("openai")  # the provider named in the code is the target's, not the request's
    groq = code_target(settings, "groq")
    assert (groq.kind, groq.model, groq.key_env) == ("openai_compatible", "llama-3.3-70b", "GROQ_API_KEY")
    code = sdk_python(req, groq)
    assert "max_tokens=50" in code and "max_completion_tokens" not in code  # compatible servers' name
    assert "os.environ['GROQ_API_KEY']" in code
    assert "max_completion_tokens=50" in sdk_python(request("openai"), code_target(settings, "openai"))
    for snippet in snippets(request("openai"), code_target(settings, "openai")).values():
        assert snippet and "koD2iSdVs3sm" not in snippet
    # A key typed in the browser for a session endpoint is referred to by a variable name.
    typed = EndpointConfig(
        base_url="http://10.0.0.5:8000/v1", api_key=SecretStr("sk-x0TBQA9ou8refc5FkALKBD4_"), models=["m"]
    )
    session = code_target(settings, "my-vllm", endpoint=typed)
    assert session.key_env == "MY_VLLM_API_KEY" and "x0TBQA9ou8re" not in sdk_python(req, session)
    local = snippets(request("local"), code_target(settings, "local"))
    assert local["python_sdk"] is None and '"model": "local/gemma-3-270m"' in local["curl"]
    anthropic = sdk_python(request("anthropic", top_p=0.5, seed=1), code_target(settings, "anthropic"))
    assert "top_p=" not in anthropic and "seed=" not in anthropic and "temperature=" not in anthropic
    with pytest.raises(ValueError, match="unknown provider 'nope'"):
        code_target(settings, "nope")
