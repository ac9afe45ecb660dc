"""Attachments (conductor_core/workbench/attachments.py and the sessions' tables): a file is
what its bytes say, refused with the reason; each content is stored once however many turns,
columns and retries send it; a turn sends its text then its attachments, in order; the
request log names them and never holds their bytes; who cannot read them is never sent them."""

from __future__ import annotations

import base64
import json
import re

import pytest
from sqlalchemy import text

from conductor_core.config import load_settings
from conductor_core.errors import BadRequestError
from conductor_core.models import (
    MAX_ATTACHMENT_BYTES,
    ChatMessage,
    ChatRequest,
    FilePart,
    ImagePart,
    TextPart,
    describe_attachment,
)
from conductor_core.router import Conductor
from conductor_core.testing.fakes import ScriptedProvider
from conductor_core.workbench import attachments
from conductor_core.workbench.attachments import AttachmentError, from_upload
from conductor_core.workbench.replay import attachments_of
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.variants import Variant
from tests.test_sessions import database_url, logs, store  # noqa: F401  (fixtures: both databases)

pytestmark = pytest.mark.timeout(120)

PNG = bytes.fromhex(
    "89504e470d0a1a0a0000000d4948445200000001000000010806000000"
    "1f15c4890000000d49444154789c63f8cfc0f01f0005000201a5f6a2d10000000049454e44ae426082"
)
GIF = b"GIF89a\x01\x00\x01\x00\x00\x00\x00;"
WEBP = b"RIFF\x1a\x00\x00\x00WEBPVP8L\x0d\x00\x00\x00/\x00\x00\x00\x10\x07\x10\x11\x11\x88\x88\xfe\x07\x00"
JPEG = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\x00" * 20 + b"\xff\xd9"
PDF = b"%PDF-1.4\n1 0 obj<<>>endobj\ntrailer<<>>\n%%EOF\n"
CHAT = Variant(provider="openai", model="gpt-4o-mini")


class Seer(ScriptedProvider):
    """A scripted provider that reads images (as OpenAI's does)."""

    reads_attachments = True


def test_a_file_is_what_its_bytes_say_and_a_refused_one_says_why():
    found = {
        name: from_upload(name, data).ref.media_type
        for name, data in [("a.png", PNG), ("b.gif", GIF), ("c.webp", WEBP), ("d.jpg", JPEG), ("e.pdf", PDF)]
    }
    assert found == {
        "a.png": "image/png",
        "b.gif": "image/gif",
        "c.webp": "image/webp",
        "d.jpg": "image/jpeg",
        "e.pdf": "application/pdf",
    }
    # A name does not make a picture; too big is refused before anything is stored or sent.
    with pytest.raises(AttachmentError, match=r"notes.png is not a PNG, JPEG, WebP or GIF image or a PDF"):
        from_upload("notes.png", b"just some text")
    with pytest.raises(AttachmentError, match=r"big.png is 5.0 MB: at most 5 MB per file"):
        from_upload("big.png", PNG + b"\x00" * MAX_ATTACHMENT_BYTES)
    with pytest.raises(AttachmentError, match="empty.png is empty"):
        from_upload("empty.png", b"")
    # At exactly the limit it is taken (and the core's part accepts it).
    edge = from_upload("edge.png", PNG + b"\x00" * (MAX_ATTACHMENT_BYTES - len(PNG)))
    assert isinstance(edge.part(), ImagePart)


def test_a_message_is_its_text_then_its_attachments_in_order_and_the_log_names_them():
    picture, document = from_upload("cat.png", PNG), from_upload("report.pdf", PDF)
    parts = attachments.message_parts("What is in these?", [document, picture])
    assert [type(p) for p in parts] == [TextPart, FilePart, ImagePart]
    assert parts[2].url == "data:image/png;base64," + base64.b64encode(PNG).decode()
    assert (parts[1].filename, parts[2].name) == ("report.pdf", "cat.png")
    message = ChatMessage(role="user", parts=parts)
    assert message.content == "What is in these?"  # what token estimates and text views read
    assert describe_attachment(parts[2]) == "[image: cat.png, 1 KB]"
    assert describe_attachment(parts[1]) == "[file: report.pdf, 1 KB]"
    big = from_upload("photo.jpg", JPEG + b"\x00" * (2 * 1024 * 1024))
    assert describe_attachment(big.part()) == "[image: photo.jpg, 2.0 MB]"
    assert picture.ref.label() == "[image: cat.png, 1 KB]"


def _count(sessions: SessionStore, table: str) -> int:
    with sessions.engine.connect() as conn:
        return conn.execute(text(f"SELECT COUNT(*) FROM {table}")).scalar_one()


def test_each_content_is_stored_once_and_turns_keep_their_own_names_and_order(store):  # noqa: F811
    picture, document = from_upload("cat.png", PNG), from_upload("report.pdf", PDF)
    chat = store.create("chat", [CHAT])
    first, answers = store.add_turn(chat.id, "Look", parent_id=None, attachments=[picture, document])
    assert [a.name for a in first.attachments] == ["cat.png", "report.pdf"]
    # The same picture again, under another name, in a comparison of four columns.
    again = from_upload("same cat.png", PNG)
    compare = store.create("compare", [CHAT, CHAT.model_copy(update={"temperature": 0.5}), CHAT, CHAT])
    _, four = store.add_turn(compare.id, "", parent_id=None, attachments=[again])
    assert len(four) == 4
    for answer in four:
        store.finish(answer.id, "done", content="ok")
    rerun = store.add_answers(compare.id, four[0].turn_id, [0, 1])  # re-runs reference the same turn
    for answer in rerun:
        store.finish(answer.id, "done", content="ok again")
    assert _count(store, "attachments") == 2  # PNG and PDF, once each
    assert _count(store, "wb_turn_attachments") == 3

    conversation = store.conversation(chat.id)
    (turn,) = conversation.turns
    assert [(r.name, r.media_type, r.size) for r in turn.attachments] == [
        ("cat.png", "image/png", len(PNG)),
        ("report.pdf", "application/pdf", len(PDF)),
    ]
    assert [a.data for a in conversation.attachments(turn)] == [PNG, PDF]
    shown = store.conversation(compare.id)
    assert [r.name for r in shown.turns[0].attachments] == ["same cat.png"]
    assert shown.session.title == "same cat.png"  # an image alone names the session

    # Deleting one turn keeps the bytes another turn still uses; deleting the last user drops them.
    store.finish(answers[0].id, "done", content="A cat and a report.")
    store.delete_turn(turn.id)
    assert _count(store, "attachments") == 1
    assert store.attachment(picture.ref.sha256) == PNG
    with pytest.raises(KeyError):
        store.attachment(document.ref.sha256)
    assert store.delete(compare.id)
    assert _count(store, "attachments") == 0 and _count(store, "wb_turn_attachments") == 0


def test_a_turns_attachments_are_sent_again_with_later_turns(store):  # noqa: F811
    picture = from_upload("cat.png", PNG)
    session = store.create("chat", [CHAT])
    turn, (answer,) = store.add_turn(session.id, "What is this?", parent_id=None, attachments=[picture])
    store.finish(answer.id, "done", content="A cat.")
    context = store.conversation(session.id).context(0)
    assert [m.role.value for m in context] == ["user", "assistant"]
    assert context[0].parts is not None and [p.type for p in context[0].parts] == ["text", "image"]
    assert context[0].parts[1].url == picture.url


def test_the_log_names_an_attachment_and_never_holds_its_bytes(logs):  # noqa: F811
    log = logs()
    seer = Seer("seer", reply="A cat.", models=["seer-1"])
    blind = ScriptedProvider("blind", reply="?", models=["blind-1"])
    settings = load_settings(_env_file=None, local_enabled=False, max_retries=0)
    conductor = Conductor(settings, request_log=log, extra_providers=[seer, blind])
    try:
        picture = from_upload("cat.png", PNG)
        request = ChatRequest(
            messages=[ChatMessage(role="user", parts=attachments.message_parts("What is this?", [picture]))],
            provider="seer",
        )
        assert conductor.chat(request).content == "A cat."
        assert seer.calls[-1].attachments()[0].url == picture.url  # the provider got the image itself
        # Who cannot read images is refused with the reason, never sent it; AUTO passes it by.
        with pytest.raises(BadRequestError, match="blind does not support images and files in messages"):
            conductor.chat(request.model_copy(update={"provider": "blind"}))
        assert blind.calls == []
        for _ in range(3):
            assert conductor.chat(request.model_copy(update={"provider": "auto"})).metadata.provider == "seer"
        assert blind.calls == []
        log.flush()
        records = log.records(limit=10)
        assert sorted(r.provider for r in records if r.status == "ok") == ["seer"] * 4
        for record in records:
            assert record.prompt == "user: What is this?\n[image: cat.png, 1 KB]"
        with log.engine.connect() as conn:
            stored = conn.execute(text("SELECT prompt FROM attempts")).scalars().all()
        assert stored and not any(base64.b64encode(PNG).decode()[:40] in (p or "") for p in stored)
    finally:
        conductor.close()


def test_exports_name_attachments_and_the_html_embeds_the_exact_picture():
    from conductor_core.workbench import exports

    # Bytes whose base64 holds a key-shaped run ("AIza" and 32 more): a redaction inside the
    # data URL would break the picture, so it is put in after the page is redacted.
    padded = PNG + b"\x00" * (-len(PNG) % 3)
    picture = padded + base64.b64decode("AIza" + "B" * 32)
    assert "AIza" + "B" * 32 in base64.b64encode(picture).decode()
    image = from_upload("cat.png", picture)
    document = from_upload("report.pdf", PDF)
    attached = [
        exports.Attached(
            name=a.ref.name, media_type=a.ref.media_type, size=a.ref.size, sha256=a.ref.sha256, data=a.data
        )
        for a in (image, document)
    ]
    key = "sk-" + "Q7xZp2Lm9Vt4Rw8Kd3Hs6Jf1"
    transcript = exports.Transcript(
        title="Pictures",
        turns=[
            exports.Turn(role="user", content=f"What is this? my key is {key}", attachments=attached),
            exports.Turn(role="assistant", content="A cat and a report."),
        ],
    )
    as_json = json.loads(exports.to_json(transcript))
    sent = as_json["turns"][0]["attachments"]
    assert [(a["name"], a["media_type"], a["size"]) for a in sent] == [
        ("cat.png", "image/png", len(picture)),
        ("report.pdf", "application/pdf", len(PDF)),
    ]
    assert all("data" not in a for a in sent)  # named, never the bytes
    markdown = exports.to_markdown(transcript)
    assert "Attached: [image: cat.png, 1 KB], [file: report.pdf, 1 KB]" in markdown
    html = exports.to_html(transcript)
    assert key not in html and key not in markdown and key not in json.dumps(as_json)
    found = re.findall(r'<img src="data:image/png;base64,([^"]+)" alt="cat.png"', html)
    assert [base64.b64decode(b) for b in found] == [picture]
    assert "📄 [file: report.pdf, 1 KB]" in html
    # A comparison's prompt carries them the same way.
    comparison = exports.Comparison(
        title="Compare",
        prompt="Which?",
        attachments=attached[:1],
        columns=[exports.Column(label="a", answer="A cat")],
    )
    assert re.search(r'<img src="data:image/png;base64,', exports.to_html(comparison))
    assert "Attached: [image: cat.png, 1 KB]" in exports.to_markdown(comparison)


def test_a_replay_sends_the_attachments_again_and_a_log_only_replay_says_it_cannot(logs):  # noqa: F811
    from conductor_core.workbench.replay import replay_of

    log = logs()
    sessions = SessionStore.for_log(log)
    seer = Seer("seer", reply="A cat.", models=["seer-1"])
    settings = load_settings(_env_file=None, local_enabled=False, max_retries=0)
    conductor = Conductor(settings, request_log=log, extra_providers=[seer])
    try:
        picture, document = from_upload("cat.png", PNG), from_upload("report.pdf", PDF)
        session = sessions.create("chat", [CHAT])
        first, (answer,) = sessions.add_turn(session.id, "Look", parent_id=None, attachments=[picture])
        sessions.finish(answer.id, "done", content="A cat.")
        conversation = sessions.conversation(session.id)
        _, (second,) = sessions.add_turn(
            session.id, "And this?", parent_id=first.id, after_answer_id=answer.id, attachments=[document]
        )
        request = second.variant.model_copy(update={"provider": "seer", "model": "seer-1"}).request(
            [*conversation.context(0), conversation.user_message(sessions.conversation(session.id).turns[-1])]
        )
        response = conductor.chat(request)
        sessions.link_request(second.id, response.metadata.id)
        sessions.finish(second.id, "done", content="A report.", response=response)

        replay = replay_of(log, sessions, response.metadata.id)
        assert [a.ref.name for a in replay.prompt_attachments] == ["report.pdf"]
        assert replay.prompt_attachments[0].data == PDF
        ((user, assistant),) = replay.turns
        assert assistant == "A cat." and [a.data for a in attachments_of(user)] == [PNG]

        # Sent outside the playground: the log names the image and keeps no bytes, and says so.
        direct = conductor.chat(
            ChatRequest(
                messages=[ChatMessage(role="user", parts=attachments.message_parts("What?", [picture]))],
                provider="seer",
            )
        )
        from_log = replay_of(log, sessions, direct.metadata.id)
        assert "[image: cat.png, 1 KB]" in from_log.prompt
        assert "keeps none of their bytes" in from_log.note
    finally:
        conductor.close()


def test_a_blind_round_sends_its_image_to_every_contestant_and_keeps_it_once(logs):  # noqa: F811
    from conductor_core.workbench.arena import Arena

    log = logs()
    one = Seer("seer", reply="A cat.", models=["seer-1"])
    two = Seer("seer2", reply="A small cat.", models=["seer2-1"])
    settings = load_settings(_env_file=None, local_enabled=False, max_retries=0)
    conductor = Conductor(settings, request_log=log, extra_providers=[one, two])
    try:
        arena = Arena(log)
        picture = from_upload("cat.png", PNG)
        variants = [Variant(provider="seer", model="seer-1"), Variant(provider="seer2", model="seer2-1")]
        match = arena.start("", variants, [picture])  # an image alone is a question too
        list(arena.answers(conductor, match.id))
        for provider in (one, two):
            (call,) = provider.calls
            assert [p.type for p in call.messages[-1].parts or []] == ["image"]
            assert call.attachments()[0].url == picture.url
        shown = arena.match(match.id)
        assert [r.name for r in shown.attachments] == ["cat.png"]
        assert [a.data for a in arena.attachments(match.id)] == [PNG]
        # The same picture in a session and another round: still one stored copy; deleting the
        # session keeps the bytes the rounds use.
        sessions = SessionStore.for_log(log)
        session = sessions.create("chat", [CHAT])
        sessions.add_turn(session.id, "Again", parent_id=None, attachments=[picture])
        arena.start("And now?", variants, [picture])
        assert _count(sessions, "attachments") == 1
        for answer in sessions.conversation(session.id).turns[0].chosen.values():
            sessions.finish(answer.id, "done", content="ok")
        sessions.delete(session.id)
        assert arena.attachments(match.id)[0].data == PNG
    finally:
        conductor.close()


def test_without_prompt_logging_attachments_live_in_memory_only(tmp_path):
    from conductor_core.store import RequestLog

    log = RequestLog(None, data_dir=tmp_path / "data", log_prompts=False)
    try:
        sessions = SessionStore.for_log(log)
        assert sessions.memory
        marker = PNG + b"private-picture-5f1c"
        session = sessions.create("chat", [CHAT])
        turn, _ = sessions.add_turn(session.id, "Look", parent_id=None, attachments=[from_upload("me.png", marker)])
        conversation = sessions.conversation(session.id)
        assert [a.data for a in conversation.attachments(conversation.turns[0])] == [marker]
        log.flush()
        for path in (tmp_path / "data").rglob("*"):
            if path.is_file():
                assert b"private-picture-5f1c" not in path.read_bytes()
    finally:
        log.close()
