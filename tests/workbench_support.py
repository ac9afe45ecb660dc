"""Shared by the workbench tests: a request log on SQLite or PostgreSQL (each PostgreSQL test
in its own schema, as tests/test_store.py does), and a Conductor in front of loopback servers
that speak the real OpenAI, Anthropic and Gemini protocols."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from conductor_core.config import load_settings
from conductor_core.models import ChatMessage, ChatResponse
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.testing.protocol_servers import AnthropicServer, GeminiServer, OpenAIServer
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.variants import Variant
from tests.store_backends import postgres_schema

KEYS = {
    "openai": "sk-cs0nkEdBf_8NzORVABv5sVnd",
    "anthropic": "sk-ant-api03-O6rVCoNhYu0QR64FXm32FyBN",
    "gemini": "AIzaFndD4fdhzhyeX3EIZgUzivMs",
}


def database_urls(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    """None (the default SQLite file under tmp_path) or a PostgreSQL URL bound to a fresh schema."""
    if request.param == "sqlite":
        yield None
        return
    with postgres_schema() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str | None]:
    yield from database_urls(request, tmp_path)


@pytest.fixture
def request_log(database_url: str | None, tmp_path: Path) -> Iterator[RequestLog]:
    log = RequestLog(database_url, data_dir=tmp_path / "data")
    yield log
    log.close()


@pytest.fixture(scope="module")
def clouds() -> Iterator[dict[str, Any]]:
    """One loopback server per cloud protocol, shared by a module (reset per test)."""
    servers = {
        "openai": OpenAIServer(reply="Paris is the capital, I believe.", require_key=KEYS["openai"]),
        "anthropic": AnthropicServer(reply="It is Paris.", require_key=KEYS["anthropic"]),
        "gemini": GeminiServer(reply="Rome, surely.", require_key=KEYS["gemini"]),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


def cloud_conductor(
    servers: dict[str, Any], data_dir: Path, database_url: str | None = None, **settings: Any
) -> Conductor:
    for server in servers.values():
        server.reset()
    values: dict[str, Any] = {
        "_env_file": None,
        "local_enabled": False,
        "data_dir": data_dir,
        "database_url": database_url,
        "max_retries": 0,
        "timeout_s": 10.0,
        "openai_api_key": KEYS["openai"],
        "openai_base_url": servers["openai"].url,
        "anthropic_api_key": KEYS["anthropic"],
        "anthropic_base_url": servers["anthropic"].url,
        "gemini_api_key": KEYS["gemini"],
        "gemini_base_url": servers["gemini"].url,
    }
    values.update(settings)
    return Conductor(load_settings(**values))


def chat_in_a_session(conductor: Conductor, store: SessionStore, variant: Variant, prompts: list[str]) -> ChatResponse:
    """A chat session in `store` with these prompts, each answered through `conductor` with
    the history before it, as the Playground page sends them. Returns the last response."""
    session = store.create("chat", [variant])
    parent = after = None
    for prompt in prompts:
        turn, answers = store.add_turn(session.id, prompt, parent_id=parent, after_answer_id=after)
        history = store.conversation(session.id).context(0)
        response = conductor.chat(variant.request([*history, ChatMessage(role="user", content=prompt)]))
        store.finish(answers[0].id, "done", content=response.content, response=response)
        parent, after = turn.id, answers[0].id
    return response
