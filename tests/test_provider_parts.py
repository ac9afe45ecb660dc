"""Images and PDFs (`ChatMessage.parts`) reach each cloud provider's wire in its own format, in
order, through the real SDKs over real HTTP to the loopback protocol servers."""

from __future__ import annotations

import base64

import pytest

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.errors import BadRequestError
from conductor_core.models import ChatMessage, ChatRequest, FilePart, ImagePart, TextPart, data_url
from conductor_core.providers import build_provider
from conductor_core.providers.openai_compat import OpenAICompatProvider
from conductor_core.testing.protocol_servers import AnthropicServer, GeminiServer, OpenAIServer

KEY = "sk-Pq7rT2vW9xZ4bN6mK1jH8gF3"
# A 1x1 PNG and a tiny PDF: what the bytes are matters less than that they arrive unchanged.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
KINDS = {
    "openai": (OpenAIServer, "openai_api_key", "openai_base_url"),
    "anthropic": (AnthropicServer, "anthropic_api_key", "anthropic_base_url"),
    "gemini": (GeminiServer, "gemini_api_key", "gemini_base_url"),
}


@pytest.fixture(params=list(KINDS), scope="module")
def kind(request):
    return request.param


@pytest.fixture(scope="module")
def server(kind):
    with KINDS[kind][0](reply="A red dot.", require_key=KEY) as srv:
        yield srv


@pytest.fixture
def provider(kind, server, tmp_path):
    server.script()
    _, key_field, url_field = KINDS[kind]
    settings = load_settings(
        _env_file=None, timeout_s=30.0, data_dir=tmp_path, **{key_field: KEY, url_field: server.url}
    )
    return build_provider(kind, settings)


def _camel(node):
    """The Gemini API reads both spellings of a field (proto JSON); google-genai sends some in
    snake_case (`mime_type`): compare in one."""
    if isinstance(node, list):
        return [_camel(item) for item in node]
    if isinstance(node, dict):
        return {_camel_name(key): _camel(value) for key, value in node.items()}
    return node


def _camel_name(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word.title() for word in rest)


def _with_parts(*parts) -> ChatRequest:
    return ChatRequest(provider="auto", max_tokens=50, messages=[ChatMessage(role="user", parts=list(parts))])


@pytest.mark.parametrize("streamed", [False, True])
def test_text_image_and_pdf_arrive_in_order_in_the_providers_format(kind, provider, server, streamed):
    request = _with_parts(
        TextPart(text="What is in these?"),
        ImagePart(url=data_url("image/png", PNG), detail="low"),
        FilePart(url=data_url("application/pdf", PDF), filename="invoice.pdf"),
    )
    if streamed:
        list(provider.stream(request))
    else:
        provider.chat_completion(request)
    body = server.requests[-1]["json"]
    png64, pdf64 = base64.b64encode(PNG).decode(), base64.b64encode(PDF).decode()
    if kind == "openai":
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "What is in these?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{png64}", "detail": "low"}},
            {"type": "file", "file": {"file_data": f"data:application/pdf;base64,{pdf64}", "filename": "invoice.pdf"}},
        ]
    elif kind == "anthropic":
        assert body["messages"][0]["content"] == [
            {"type": "text", "text": "What is in these?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": png64}},
            {
                "type": "document",
                "source": {"type": "base64", "media_type": "application/pdf", "data": pdf64},
                "title": "invoice.pdf",
            },
        ]
    else:
        assert _camel(body["contents"][0]["parts"]) == [
            {"text": "What is in these?"},
            {"inlineData": {"mimeType": "image/png", "data": png64}},
            {"inlineData": {"mimeType": "application/pdf", "data": pdf64}},
        ]


def test_an_https_image_is_passed_as_a_url_for_the_upstream_to_fetch(kind, provider, server):
    url = "https://example.com/cat.jpg"
    provider.chat_completion(_with_parts(ImagePart(url=url), TextPart(text="Which animal?")))
    body = server.requests[-1]["json"]
    if kind == "openai":
        assert body["messages"][0]["content"][0] == {"type": "image_url", "image_url": {"url": url}}
    elif kind == "anthropic":
        assert body["messages"][0]["content"][0] == {"type": "image", "source": {"type": "url", "url": url}}
    else:  # the Gemini API fetches public and signed URLs itself (file_data)
        assert _camel(body["contents"][0]["parts"])[0] == {"fileData": {"fileUri": url, "mimeType": "image/jpeg"}}


def test_earlier_text_turns_keep_their_plain_content(kind, provider, server):
    request = ChatRequest(
        provider="auto",
        messages=[
            ChatMessage(role="user", content="Hello"),
            ChatMessage(role="assistant", content="Hi."),
            ChatMessage(role="user", parts=[ImagePart(url=data_url("image/png", PNG))]),
        ],
    )
    provider.chat_completion(request)
    body = server.requests[-1]["json"]
    if kind == "gemini":
        assert body["contents"][0]["parts"] == [{"text": "Hello"}]
    else:
        assert body["messages"][0] == {"role": "user", "content": "Hello"}


def test_a_configured_endpoint_reads_images_unless_configured_text_only(tmp_path):
    settings = load_settings(_env_file=None, data_dir=tmp_path)
    request = _with_parts(TextPart(text="What is this?"), ImagePart(url=data_url("image/png", PNG)))
    vision = OpenAICompatProvider.from_endpoint("vllm", EndpointConfig(base_url="http://127.0.0.1:9/v1"), settings)
    assert vision.reads_attachments and vision.unsupported(request) == []
    text_only = OpenAICompatProvider.from_endpoint(
        "textonly", EndpointConfig(base_url="http://127.0.0.1:9/v1", vision=False), settings
    )
    assert not text_only.reads_attachments
    with pytest.raises(BadRequestError, match="textonly does not support images and files in messages") as caught:
        text_only.check(request)
    assert caught.value.status_code == 400 and caught.value.param == "messages"
    assert OpenAICompatProvider.reads_attachments  # the instance's setting, not the class's
