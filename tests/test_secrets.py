"""A canary key: set recognisable fake keys, cause auth failures and other errors through the
real SDKs, and prove the keys appear nowhere: not in errors, reprs, dumps, logs or the log DB."""

from __future__ import annotations

import logging
import sqlite3
import uuid

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from conductor_core import config
from conductor_core.config import load_settings, redact
from conductor_core.errors import ProviderError
from conductor_core.models import ChatMessage, ChatRequest
from conductor_core.router import Conductor
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer

CANARIES = {
    "openai": f"sk-canary-openai-{uuid.uuid4().hex}",
    "anthropic": f"sk-ant-canary-{uuid.uuid4().hex}",
    "gemini": f"AIzaCanary{uuid.uuid4().hex}",
}


@pytest.fixture
def servers():
    # Each server expects a different key, so every canary is rejected with a 401.
    with (
        OpenAIServer(require_key="right-key-1") as o,
        AnthropicServer(require_key="right-key-2") as a,
        GeminiServer(require_key="right-key-3") as g,
    ):
        yield {"openai": o, "anthropic": a, "gemini": g}


def _all_text(*objects) -> str:
    return "\n".join(str(o) + "\n" + repr(o) for o in objects)


def test_canary_keys_never_leak(servers, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # SDK and httpx debug logging included
    monkeypatch.setenv("OPENAI_LOG", "debug")
    settings = load_settings(
        _env_file=None,
        openai_api_key=CANARIES["openai"],
        openai_base_url=servers["openai"].url,
        anthropic_api_key=CANARIES["anthropic"],
        anthropic_base_url=servers["anthropic"].url,
        gemini_api_key=CANARIES["gemini"],
        gemini_base_url=servers["gemini"].url,
        local_enabled=False,
        data_dir=tmp_path,
        timeout_s=5.0,  # the hang below outlasts it; anything else answers at once
        max_retries=0,
    )
    conductor = Conductor(settings)
    seen: list[object] = [settings, settings.model_dump(), settings.model_dump_json(), conductor.registry.providers]
    prompt = [ChatMessage(role="user", content="hello there")]
    for name in CANARIES:
        request = ChatRequest(provider=name, messages=prompt, max_tokens=20)
        for call in (conductor.chat, lambda r: list(conductor.stream(r))):
            with pytest.raises(ProviderError) as info:
                call(request)
            error = info.value
            assert error.type == "authentication"
            seen += [error, error.message, error.to_response().model_dump_json(), error.__cause__, error.__context__]
        # Other failures too: a 500 whose body echoes the key, and a timeout.
        servers[name].require_key = None
        servers[name].script(
            Fault("status", status=500, message=f"upstream saw key {CANARIES[name]}"), Fault("hang", hang_s=120)
        )
        for _ in range(2):
            with pytest.raises(ProviderError) as info:
                conductor.chat(request)
            seen += [info.value, info.value.to_response().model_dump_json()]
    # AUTO over all three failing providers.
    for server in servers.values():
        server.set_down(True)
    with pytest.raises(ProviderError) as info:
        conductor.chat(ChatRequest(messages=prompt, max_tokens=20))
    seen += [info.value, getattr(info.value, "attempts", None)]
    seen += [conductor.status().model_dump_json(), conductor.health(refresh=True).model_dump_json()]
    seen += [r.message for r in caplog.records] + [r.getMessage() for r in caplog.records] + [caplog.text]
    exported = conductor.log.export("csv").decode() + conductor.log.export("json").decode()
    conductor.close()
    db_dump = "\n".join(sqlite3.connect(tmp_path / "conductor.db").iterdump())

    haystack = _all_text(*seen) + exported + db_dump
    # Control: each key really went over the wire (so not finding it below means something).
    for name, key in CANARIES.items():
        assert any(key in str(r["headers"]) for r in servers[name].requests), name
    assert "authentication" in exported  # the failures were recorded...
    for name, key in CANARIES.items():
        assert key not in haystack, f"{name} key leaked"  # ...and no key with them


def test_redact_removes_registered_and_key_shaped_strings():
    load_settings(_env_file=None, openai_api_key="sk-canary-redact-0123456789")
    assert "sk-canary-redact-0123456789" not in redact("bad key sk-canary-redact-0123456789 given")
    assert "AIzaSyA1234567890abcdefghijk" not in redact("key=AIzaSyA1234567890abcdefghijk")
    assert redact("an ordinary sentence") == "an ordinary sentence"


# Texts made of key-shaped pieces, masks and ellipses, and ordinary words, in any order.
_PIECES = st.sampled_from(
    [
        "sk-",
        "AIza",
        "Bearer ",
        "Bearer\t",
        "***",
        "•••",
        "···",
        "...",
        "…",
        "*",
        "key",
        "api",
        "sk",
        "abcdefghijklmnopqrstuvwx",
        "0123456789",
        "-",
        "_",
        " ",
        ".",
        "word",
        "zqUPca",
        "9041",
        "é",
    ]
)


@given(st.lists(_PIECES, max_size=12).map("".join))
@example("key…9041")  # one text per shape, each with only the marker that shape needs
@example("api...9041")
@example("zqUPca***9041")
@example("zq•••41")
@example("zq···41")
@example("Bearer\tabcdefghijklmnop")
@example("AIzaabcdefghijklmnopqrstuvwx")
@example("sk-abcdefghijklmnop")
def test_redact_skips_its_patterns_only_when_they_cannot_match(text):
    # redact() runs the key patterns only on a text holding one of their markers: the result
    # must be the one the patterns give on every text.
    assert redact(text) == config._KEY_PATTERNS.sub(config.REDACTED, text)
