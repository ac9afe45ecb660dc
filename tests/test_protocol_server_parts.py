"""The loopback protocol servers refuse malformed image and document parts as the real APIs
do (so a provider that sends one fails in tests as it would in production), keep every request
they received, and answer OpenAI's `n` and `logprobs`."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from conductor_core.testing.protocol_servers import AnthropicServer, GeminiServer, OpenAIServer

PNG64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="


@pytest.fixture(scope="module")
def servers() -> Iterator[dict[str, object]]:
    with (
        OpenAIServer(models=["m"]) as openai,
        AnthropicServer(models=["m"]) as anthropic,
        GeminiServer(models=["m"]) as gemini,
    ):
        yield {"openai": openai, "anthropic": anthropic, "gemini": gemini}


def _openai(server, content, role="user", **extra) -> httpx.Response:
    body = {"model": "m", "messages": [{"role": role, "content": content}], **extra}
    return httpx.post(f"{server.url}/chat/completions", json=body, headers={"authorization": "Bearer k"}, timeout=30)


def _anthropic(server, content, role="user") -> httpx.Response:
    body = {"model": "m", "max_tokens": 10, "messages": [{"role": role, "content": content}]}
    return httpx.post(f"{server.url}/v1/messages", json=body, headers={"x-api-key": "k"}, timeout=30)


def _gemini(server, parts) -> httpx.Response:
    body = {"contents": [{"role": "user", "parts": parts}]}
    return httpx.post(
        f"{server.url}/v1beta/models/m:generateContent", json=body, headers={"x-goog-api-key": "k"}, timeout=30
    )


def test_openai_refuses_what_openai_refuses(servers):
    server = servers["openai"]
    good = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}", "detail": "low"}}
    assert _openai(server, [{"type": "text", "text": "hi"}, good]).status_code == 200
    refused = [
        ([{"type": "image_url", "image_url": {}}], "image_url.url"),
        ([{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}], "image MIME type"),
        ([{"type": "image_url", "image_url": {"url": "https://x/y.png", "detail": "ultra"}}], "detail"),
        ([{"type": "file", "file": {}}], "file.file_data"),
        ([{"type": "video"}], "Supported values"),
    ]
    for content, says in refused:
        answer = _openai(server, content)
        assert answer.status_code == 400 and says in answer.json()["error"]["message"], content
    assert _openai(server, [good], role="system").status_code == 400  # images only in user turns
    assert server.requests[-1]["json"]["messages"][0]["content"] == [good]  # kept whole, refused or not


def test_anthropic_refuses_an_image_block_without_media_type(servers):
    server = servers["anthropic"]
    image = {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG64}}
    assert _anthropic(server, [image, {"type": "text", "text": "hi"}]).status_code == 200
    refused = [
        ({"type": "image", "source": {"type": "base64", "data": PNG64}}, "media_type: Field required"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/tiff", "data": PNG64}}, "media_type"),
        ({"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "not base64!"}}, "base64"),
        ({"type": "document", "source": {"type": "base64", "media_type": "image/png", "data": PNG64}}, "pdf"),
        ({"type": "image", "source": {"type": "url"}}, "url"),
    ]
    for block, says in refused:
        answer = _anthropic(server, [block])
        assert answer.status_code == 400 and says in answer.json()["error"]["message"], block
        assert answer.json()["type"] == "error"


def test_gemini_refuses_inline_data_without_its_type_or_base64(servers):
    server = servers["gemini"]
    assert _gemini(server, [{"inlineData": {"mimeType": "image/png", "data": PNG64}}]).status_code == 200
    for part, says in [
        ({"inlineData": {"data": PNG64}}, "mime_type"),
        ({"inline_data": {"mime_type": "image/png", "data": "%%%"}}, "Base64"),
        ({"fileData": {"mimeType": "image/png"}}, "file_uri"),
    ]:
        answer = _gemini(server, [part])
        assert answer.status_code == 400 and says in answer.json()["error"]["message"], part
        assert answer.json()["error"]["status"] == "INVALID_ARGUMENT"


def test_openai_answers_n_choices_and_logprobs(servers):
    server = servers["openai"]
    answer = _openai(server, "Hello", n=3, logprobs=True, top_logprobs=1).json()
    assert [c["index"] for c in answer["choices"]] == [0, 1, 2]
    words = len(server.reply.split())
    assert answer["usage"]["completion_tokens"] == 3 * words
    content = answer["choices"][2]["logprobs"]["content"]
    assert "".join(t["token"] for t in content) == server.reply and all(len(t["top_logprobs"]) == 1 for t in content)
