"""Adding a provider is one file, its class and its SPEC (README, "Adding a provider"): the toy
in tests/toy_provider.py, once registered (a built-in one is named in BUILTIN_MODULES
instead), is in the registry, Settings, request validation, AUTO and its feature filter, Get
code, and the playground's provider list and Providers page, with nothing else changed."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.toy_provider as toy_provider
from conductor_core.config import load_settings, redact
from conductor_core.errors import BadRequestError
from conductor_core.models import ChatMessage, ChatRequest, StreamDone, Tool, ToolFunction, known_provider_names
from conductor_core.providers import build_registry
from conductor_core.providers.spec import ProviderSpec, provider_specs, registered
from conductor_core.router import Conductor
from conductor_core.workbench.codegen import code_target, curl, snippets
from tests.test_codegen import run_python, serve
from tests.test_playground_pages import (
    answer_text,
    assistant_messages,
    new_session,
    no_traceback,
    plain,
    send,
)

KEY = "QAREzmYmFk412l2JpNK1i7"  # random-looking, as every test key (tests/secret_support.py)


@pytest.fixture
def toy(monkeypatch) -> Iterator[ProviderSpec]:
    monkeypatch.delenv("TOY_API_KEY", raising=False)
    with registered(toy_provider.SPEC) as spec:
        yield spec
    assert "toy" not in known_provider_names()  # gone with it


def user(text: str) -> list[ChatMessage]:
    return [ChatMessage(role="user", content=text)]


def test_the_registry_settings_and_request_names_know_it(toy, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    assert list(provider_specs())[-1] == "toy"
    registry = build_registry(load_settings(_env_file=None, local_enabled=False))
    assert registry.unavailable["toy"] == "set TOY_API_KEY" and "toy" in registry.names()
    assert ChatRequest(provider="toy", messages=user("hi")).provider == "toy"

    monkeypatch.setenv("TOY_API_KEY", KEY)  # its variable, as the SDKs' own are read
    monkeypatch.setenv("TOY_BASE_URL", "http://127.0.0.1:1/toy")
    settings = load_settings(_env_file=None, local_enabled=False)
    assert settings.provider_key("toy").get_secret_value() == KEY and settings.toy_api_key.get_secret_value() == KEY
    assert settings.provider_base_url("toy") == "http://127.0.0.1:1/toy"
    assert redact(f"echoed {KEY}") == "echoed [REDACTED]"
    provider = build_registry(settings).get("toy")
    assert isinstance(provider, toy_provider.ToyProvider)
    assert (provider.display_name, provider.key_env_var, provider.default_model) == (
        "Toy Echo",
        "TOY_API_KEY",
        "toy-small",
    )
    assert provider.get_available_models() == ["toy-small", "toy-large"]
    assert provider.ignored_settings() == ["top_p", "seed", "presence_penalty", "frequency_penalty"]


def test_auto_routes_to_it_and_its_capabilities_filter_it(toy, monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TOY_API_KEY", KEY)
    conductor = Conductor(load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path))
    try:
        answer = conductor.chat(ChatRequest(provider="auto", messages=user("hello toy")))
        assert (answer.metadata.provider, answer.content) == ("toy", "HELLO TOY ")
        done = list(conductor.stream(ChatRequest(provider="auto", messages=user("stream it"))))[-1]
        assert isinstance(done, StreamDone) and done.response.content == "STREAM IT "
        tools = [Tool(function=ToolFunction(name="weather"))]
        with pytest.raises(BadRequestError, match="toy lacks tools"):  # no tools in its spec
            conductor.chat(ChatRequest(provider="auto", messages=user("weather?"), tools=tools))
        assert [r.provider for r in conductor.log.records()] == ["toy", "toy"]
    finally:
        conductor.close()


def test_get_code_writes_it_and_the_gateway_answers_the_snippets(toy, monkeypatch, tmp_path: Path) -> None:
    from gateway.main import create_app

    monkeypatch.setenv("TOY_API_KEY", KEY)
    conductor = Conductor(load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path))
    try:
        request = ChatRequest(provider="toy", messages=user("code please"), temperature=0.5, top_p=0.9)
        target = code_target(conductor.settings, "toy")
        assert (target.model, target.key_env) == ("toy-small", "TOY_API_KEY")
        written = snippets(request, target)
        assert written["python_sdk"] is None  # no SDK of its own: through the gateway
        assert "model='toy/toy-small'" in written["python_gateway"] and "temperature=0.5" in written["python_gateway"]
        assert "top_p" not in written["python_gateway"]  # the toy has no top_p: the gateway would refuse it
        with serve(create_app(conductor)) as url:
            printed = run_python(snippets(request, target, gateway_url=url)["python_gateway"], {})
            assert printed.strip() == "CODE PLEASE"
            env = {**os.environ, "CONDUCTOR_API_KEY": "unused"}
            command = curl(request, target, gateway_url=url)
            answered = subprocess.run(["bash", "-c", command], env=env, capture_output=True, text=True, timeout=30)
            assert answered.returncode == 0, answered.stderr
            assert json.loads(answered.stdout)["choices"][0]["message"]["content"] == "CODE PLEASE "
    finally:
        conductor.close()


@pytest.mark.usefixtures("env")
def test_the_playground_lists_it_and_its_providers_card_takes_its_key(toy) -> None:
    at = new_session()
    assert "○ Toy Echo · not configured" in at.sidebar.selectbox(key="chat_provider").options
    at.switch_page("views/providers.py").run()
    no_traceback(at)
    text = plain(" ".join(m.value for m in at.markdown))
    assert "**Toy Echo** `toy`" in text and "set TOY_API_KEY" in text
    field = at.text_input(key="key_input_toy")
    assert "set TOY_API_KEY before starting" in field.placeholder
    field.set_value(KEY)
    next(b for b in at.get("form_submit_button") if b.form_id == "key_form_toy").click().run()
    assert any("Key set for this session" in s.value for s in at.success)
    at.switch_page("views/chat.py").run()
    send(at, "hello from the page", provider="toy")
    assert answer_text(assistant_messages(at)[-1]) == ["HELLO FROM THE PAGE"]
