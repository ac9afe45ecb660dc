"""Attachments: images and PDFs a person adds to a message, kept once by their content.

An attachment is identified by the SHA-256 of its bytes, so the same picture sent in ten
turns, in four Compare columns or retried three times is stored once (the sessions' table
``attachments``); a turn references it by hash, with the name the person gave it. The
request log never holds the bytes: its prompt says ``[image: cat.png, 123 KB]``
(`models.describe_attachment`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from ..models import (
    FILE_MEDIA_TYPES,
    IMAGE_MEDIA_TYPES,
    MAX_ATTACHMENT_BYTES,
    FilePart,
    ImagePart,
    TextPart,
    data_url,
    describe_attachment,
    describe_size,
)

__all__ = [
    "Attachment",
    "AttachmentRef",
    "AttachmentError",
    "ACCEPTED_EXTENSIONS",
    "LIMIT_MB",
    "LIMIT_NOTE",
    "sniff_media_type",
    "from_upload",
    "describe_attachment",
    "describe_size",
    "message_parts",
]

#: What the file picker offers (its names; the bytes decide, see `sniff_media_type`).
ACCEPTED_EXTENSIONS = ("png", "jpg", "jpeg", "webp", "gif", "pdf")
LIMIT_MB = MAX_ATTACHMENT_BYTES // (1024 * 1024)
LIMIT_NOTE = f"PNG, JPEG, WebP, GIF or PDF, at most {LIMIT_MB} MB each"

# The first bytes of each type we accept: a file is what its bytes say, not what its name says.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"%PDF-", "application/pdf"),
)


class AttachmentError(ValueError):
    """A file that cannot be attached; the message says why and what to do."""


def sniff_media_type(data: bytes) -> str | None:
    """The media type of `data` from its first bytes (one we accept), or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return next((kind for magic, kind in _SIGNATURES if data.startswith(magic)), None)


@dataclass(frozen=True)
class AttachmentRef:
    """What a turn keeps: which bytes (by hash), under which name."""

    sha256: str
    name: str
    media_type: str
    size: int

    @property
    def is_image(self) -> bool:
        return self.media_type in IMAGE_MEDIA_TYPES

    def label(self) -> str:
        """`[image: cat.png, 123 KB]`: how logs and text exports name it."""
        return f"[{'image' if self.is_image else 'file'}: {self.name}, {describe_size(self.size)}]"


@dataclass(frozen=True)
class Attachment:
    """An attachment with its bytes."""

    ref: AttachmentRef
    data: bytes

    @property
    def url(self) -> str:
        return data_url(self.ref.media_type, self.data)

    def part(self) -> ImagePart | FilePart:
        """How it travels in a message."""
        if self.ref.is_image:
            return ImagePart(url=self.url, name=self.ref.name)
        return FilePart(url=self.url, filename=self.ref.name)


def from_upload(name: str, data: bytes) -> Attachment:
    """An attachment from a file a person picked. Raises AttachmentError saying why not."""
    name = (name or "").strip() or "attachment"
    if not data:
        raise AttachmentError(f"{name} is empty")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise AttachmentError(
            f"{name} is {describe_size(len(data))}: at most {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB per file"
        )
    media_type = sniff_media_type(data)
    if media_type is None or media_type not in (*IMAGE_MEDIA_TYPES, *FILE_MEDIA_TYPES):
        raise AttachmentError(f"{name} is not a PNG, JPEG, WebP or GIF image or a PDF (by its content)")
    digest = hashlib.sha256(data).hexdigest()
    return Attachment(AttachmentRef(digest, name, media_type, len(data)), data)


def message_parts(text: str, attachments: list[Attachment]) -> list[TextPart | ImagePart | FilePart]:
    """A user message's parts: the text first, then the attachments in the order given."""
    parts: list[TextPart | ImagePart | FilePart] = [TextPart(text=text)] if text.strip() else []
    return parts + [a.part() for a in attachments]
