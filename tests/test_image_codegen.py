"""Get code with images and PDFs: each snippet reads the attached files from disk and sends
them in its SDK's shape. Run for real: each provider-SDK program against a loopback server,
its body compared with what Conductor's own provider sends for the same turn; the gateway's
openai-client program and curl against a running gateway, the picture checked at the upstream."""

from __future__ import annotations

import base64
import os
import subprocess
from pathlib import Path

import pytest
from test_codegen import run_python, serve
from workbench_support import KEYS, cloud_conductor

from conductor_core.models import ChatMessage, ChatRequest
from conductor_core.workbench.attachments import from_upload, message_parts
from conductor_core.workbench.codegen import code_target, curl, gateway_python, sdk_python

pytestmark = pytest.mark.timeout(120)

# Big enough that embedding it would make a long program; the snippets read it from disk.
CAT = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) * 400
DOC = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"


def turn(provider: str, *, pdf: bool = True) -> ChatRequest:
    """A two-turn conversation: an earlier picture in the history, then a picture and a PDF."""
    cat = from_upload("photos/cat.png", CAT)
    files = [from_upload("cat.png", CAT + b"2"), *([from_upload("bill.pdf", DOC)] if pdf else [])]
    messages = [
        ChatMessage(role="user", parts=message_parts("What is this?", [cat])),
        ChatMessage(role="assistant", content="A cat."),
        ChatMessage(role="user", parts=message_parts("And these?", files)),
    ]
    return ChatRequest(provider=provider, messages=messages, temperature=0.2, max_tokens=40)


def write_files(folder: Path) -> None:
    (folder / "cat.png").write_bytes(CAT)
    (folder / "cat-2.png").write_bytes(CAT + b"2")  # a second file of the same name: numbered
    (folder / "bill.pdf").write_bytes(DOC)


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_the_sdk_snippet_reads_the_files_and_sends_what_conductor_sends(
    kind: str, clouds, tmp_path: Path, monkeypatch
) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    server = clouds[kind]
    try:
        req = turn(kind)
        conductor.chat(req)
        ours = server.requests[-1]
        target = code_target(conductor.settings, kind, default_model=conductor.registry.get(kind).default_model)
        code = sdk_python(req, target)
        assert code is not None
        assert base64.b64encode(CAT).decode()[:40] not in code  # read from disk, not embedded
        assert "'cat.png'" in code and "'cat-2.png'" in code and "'bill.pdf'" in code
        folder = tmp_path / "here"
        folder.mkdir()
        write_files(folder)
        monkeypatch.chdir(folder)
        printed = run_python(code, {target.key_env: KEYS[kind]})
        theirs = server.requests[-1]
        assert printed.strip() == server.reply
        assert theirs["path"] == ours["path"]
        assert theirs["json"] == ours["json"]  # the pictures and the PDF, byte for byte, in place
        sent = str(theirs["json"])  # Gemini's JSON carries bytes in URL-safe base64
        assert any(encode(CAT + b"2").decode() in sent for encode in (base64.b64encode, base64.urlsafe_b64encode))
    finally:
        conductor.close()


def test_the_gateway_snippets_send_the_pictures_to_the_upstream(clouds, tmp_path: Path, monkeypatch) -> None:
    from gateway.main import create_app

    conductor = cloud_conductor(clouds, tmp_path)
    try:
        req = turn("openai", pdf=False)
        model = conductor.registry.get("openai").default_model
        target = code_target(conductor.settings, "openai", model)
        folder = tmp_path / "here"
        folder.mkdir()
        write_files(folder)
        monkeypatch.chdir(folder)
        wanted = [
            [{"type": "text", "text": "What is this?"}, image_url(CAT)],
            [{"type": "text", "text": "And these?"}, image_url(CAT + b"2")],
        ]
        with serve(create_app(conductor)) as url:
            code = gateway_python(req, target, gateway_url=url)
            assert run_python(code, {"CONDUCTOR_API_KEY": "unused"}).strip() == clouds["openai"].reply
            sent = clouds["openai"].requests[-1]["json"]["messages"]
            assert [sent[0]["content"], sent[2]["content"]] == wanted

            command = curl(req, target, gateway_url=url)
            assert base64.b64encode(CAT).decode()[:40] not in command
            env = {**os.environ, "CONDUCTOR_API_KEY": "unused"}
            answer = subprocess.run(
                ["bash", "-c", command], env=env, cwd=folder, capture_output=True, text=True, timeout=60
            )
            assert answer.returncode == 0, answer.stderr
            assert clouds["openai"].reply in answer.stdout
            sent = clouds["openai"].requests[-1]["json"]["messages"]
            assert [sent[0]["content"], sent[2]["content"]] == wanted
    finally:
        conductor.close()


def image_url(data: bytes) -> dict:
    return {"type": "image_url", "image_url": {"url": "data:image/png;base64," + base64.b64encode(data).decode()}}
