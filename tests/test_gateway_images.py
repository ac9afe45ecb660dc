"""Images and PDFs through the gateway: the official `openai` SDK sends OpenAI's content parts
to the gateway (uvicorn, loopback), which passes them to each upstream in that API's own
format; what arrived is checked at the upstream (the loopback protocol servers). Parts the
gateway cannot pass on (audio, file ids) are refused with a 400 that says what to send."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import openai
import pytest

from conductor_core.config import EndpointConfig
from conductor_core.testing.protocol_servers import AnthropicServer, GeminiServer, OpenAIServer
from gateway.main import create_app
from tests.test_gateway import KEY, client, make_conductor, serve

PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PNG64 = base64.b64encode(PNG).decode()
PDF64 = base64.b64encode(b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n").decode()
IMAGE = {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG64}", "detail": "high"}}
PDF = {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{PDF64}", "filename": "invoice.pdf"}}
ASK = {"type": "text", "text": "What is in the picture and the document?"}


@pytest.fixture(scope="module")
def upstreams() -> Iterator[dict[str, Any]]:
    servers = {
        "openai": OpenAIServer(reply="A red dot.", require_key=KEY),
        "compat": OpenAIServer(reply="A red dot.", models=["vlm"]),
        "textonly": OpenAIServer(reply="Text only.", models=["tiny"]),
        "anthropic": AnthropicServer(reply="A red dot.", require_key=KEY),
        "gemini": GeminiServer(reply="A red dot.", require_key=KEY),
    }
    for server in servers.values():
        server.start()
    yield servers
    for server in servers.values():
        server.stop()


@pytest.fixture(scope="module")
def gateway(upstreams, tmp_path_factory) -> Iterator[str]:
    conductor = make_conductor(
        tmp_path_factory.mktemp("images"),
        **{f"{name}_api_key": KEY for name in ("openai", "anthropic", "gemini")},
        **{f"{name}_base_url": upstreams[name].url for name in ("openai", "anthropic", "gemini")},
        endpoints={
            "compat": EndpointConfig(base_url=upstreams["compat"].url, models=["vlm"]),
            "textonly": EndpointConfig(base_url=upstreams["textonly"].url, models=["tiny"], vision=False),
        },
    )
    with serve(create_app(conductor)) as url:
        yield url
    conductor.close()


def _arrived(upstreams: dict[str, Any], name: str) -> Any:
    """The user turn's content as the upstream received it."""
    body = upstreams[name].requests[-1]["json"]
    if name == "gemini":
        return body["contents"][-1]["parts"]
    return body["messages"][-1]["content"]


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize("name", ["openai", "compat"])
def test_openai_compatible_upstreams_get_the_parts_as_sent(gateway, upstreams, name, stream):
    sdk = client(gateway)
    if stream:
        chunks = list(
            sdk.chat.completions.create(
                model=name, messages=[{"role": "user", "content": [ASK, IMAGE, PDF]}], stream=True
            )
        )
        assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "A red dot."
    else:
        answer = sdk.chat.completions.create(model=name, messages=[{"role": "user", "content": [ASK, IMAGE, PDF]}])
        assert answer.choices[0].message.content == "A red dot."
    assert _arrived(upstreams, name) == [ASK, IMAGE, PDF]


def test_anthropic_gets_image_and_document_blocks(gateway, upstreams):
    answer = client(gateway).chat.completions.create(
        model="anthropic", messages=[{"role": "user", "content": [ASK, IMAGE, PDF]}]
    )
    assert answer.choices[0].message.content == "A red dot."
    assert _arrived(upstreams, "anthropic") == [
        ASK,
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG64}},
        {
            "type": "document",
            "source": {"type": "base64", "media_type": "application/pdf", "data": PDF64},
            "title": "invoice.pdf",
        },
    ]


def test_gemini_gets_inline_data(gateway, upstreams):
    answer = client(gateway).chat.completions.create(
        model="gemini", messages=[{"role": "user", "content": [ASK, IMAGE, PDF]}]
    )
    assert answer.choices[0].message.content == "A red dot."
    parts = _arrived(upstreams, "gemini")
    assert parts[0] == {"text": ASK["text"]}
    # google-genai writes the blob's type in snake_case; the Gemini API reads either spelling.
    assert [
        (p["inlineData"]["data"], p["inlineData"].get("mimeType") or p["inlineData"].get("mime_type"))
        for p in parts[1:]
    ] == [
        (PNG64, "image/png"),
        (PDF64, "application/pdf"),
    ]


def test_an_image_url_reaches_each_upstream_as_a_url(gateway, upstreams):
    url = "https://example.com/cat.png"
    part = {"type": "image_url", "image_url": {"url": url}}
    for name in ("openai", "anthropic", "gemini"):
        client(gateway).chat.completions.create(model=name, messages=[{"role": "user", "content": [part, ASK]}])
    assert _arrived(upstreams, "openai")[0] == part
    assert _arrived(upstreams, "anthropic")[0] == {"type": "image", "source": {"type": "url", "url": url}}
    file_data = _arrived(upstreams, "gemini")[0]["fileData"]
    assert (file_data.get("fileUri") or file_data.get("file_uri")) == url


def _refused(gateway: str, content: Any, model: str = "openai") -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as caught:
        client(gateway).chat.completions.create(model=model, messages=[{"role": "user", "content": content}])
    return caught.value


def test_audio_and_file_ids_are_refused_saying_what_to_send(gateway, upstreams):
    before = {name: server.request_count for name, server in upstreams.items()}
    audio = _refused(gateway, [ASK, {"type": "input_audio", "input_audio": {"data": "AAAA", "format": "wav"}}])
    assert "audio parts (input_audio) are not supported" in audio.message
    file_id = _refused(gateway, [ASK, {"type": "file", "file": {"file_id": "file-abc123"}}])
    assert "file_id is not supported" in file_id.message and "file_data" in file_id.message
    tiff = _refused(gateway, [{"type": "image_url", "image_url": {"url": "data:image/tiff;base64,AAAA"}}])
    assert "image/tiff cannot be sent" in tiff.message and "image/png" in tiff.message
    assert "messages[0].content" in (tiff.body or {}).get("param", "")
    assert {name: server.request_count for name, server in upstreams.items()} == before  # nothing was sent


def test_a_text_only_endpoint_is_never_sent_an_image(gateway, upstreams):
    before = upstreams["textonly"].request_count
    refused = _refused(gateway, [ASK, IMAGE], model="textonly")
    assert "textonly does not support images and files in messages" in refused.message
    assert upstreams["textonly"].request_count == before
    # Text parts alone are text, as before parts existed.
    answer = client(gateway).chat.completions.create(model="textonly", messages=[{"role": "user", "content": [ASK]}])
    assert answer.choices[0].message.content == "Text only."
    assert _arrived(upstreams, "textonly") == ASK["text"]
