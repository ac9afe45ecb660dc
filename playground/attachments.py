"""Images and PDFs on a message (Chat, Compare, Arena): taking what a person picked (a refused
file says why), who can read them (a target that cannot is greyed out with the reason, never
sent them), and showing a turn's attachments (thumbnails; a PDF as a named chip)."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import streamlit as st

from conductor_core.router import Conductor
from conductor_core.workbench.attachments import (
    ACCEPTED_EXTENSIONS,
    LIMIT_MB,
    LIMIT_NOTE,
    Attachment,
    AttachmentError,
    AttachmentRef,
    from_upload,
)
from conductor_core.workbench.variants import Variant

from . import components as ui
from . import state

__all__ = [
    "ACCEPTED_EXTENSIONS",
    "LIMIT_NOTE",
    "take",
    "refused_note",
    "refusal",
    "cannot_read",
    "show",
    "show_refs",
    "uploader",
    "contestants",
    "readable_lanes",
    "history_attaches",
    "skipped_column",
    "hold_if_unreadable",
    "held_message",
]

THUMBNAIL_PX = 160


def take(files: Iterable[Any]) -> tuple[list[Attachment], list[str]]:
    """The picked files (Streamlit's UploadedFile) as attachments, in order, and why each
    refused one was refused (the caller sends nothing then: not the message the person meant)."""
    taken: list[Attachment] = []
    refused: list[str] = []
    for file in files or ():
        try:
            taken.append(from_upload(file.name, file.getvalue()))
        except AttachmentError as error:
            refused.append(str(error))
    return taken, refused


def refused_note(refused: Sequence[str], prompt: str) -> str:
    """Why a message was not sent, with its text, so nothing typed is lost."""
    typed = f' Your message was: "{prompt.strip()}"' if prompt.strip() else ""
    return f"Not sent: {'; '.join(refused)}. {LIMIT_NOTE} can be attached.{typed}"


def refusal(c: Conductor, variant: Variant) -> str | None:
    """Why `variant` cannot be sent images or PDFs ("local: reads text only"), or None when it can."""
    return cannot_read(c, variant.provider)


def cannot_read(c: Conductor, name: str) -> str | None:
    """Why provider `name` cannot be sent images or PDFs, or None when it can. AUTO can when any
    configured provider can: the router then chooses only among those (`unsupported()`)."""
    providers = {**c.registry.providers, **state.session_providers()}
    if name == "auto":
        if any(p.reads_attachments for p in providers.values()):
            return None
        return "auto: no configured provider reads images or PDFs"
    provider = providers.get(name)
    if provider is None or provider.reads_attachments:
        return None
    return f"{name}: reads text only"


def history_attaches(conversation: Any, lane: int = 0) -> bool:
    """Whether the history `lane` sends with its next message carries images or PDFs."""
    if conversation is None:
        return False
    return any(
        turn.attachments and (answer := turn.chosen.get(lane)) is not None and answer.in_context
        for turn in conversation.turns
    )


def readable_lanes(
    c: Conductor, variants: Sequence[Variant], files: Sequence[Attachment], conversation: Any = None
) -> list[int] | None:
    """The columns a message goes to (None: every one): a column that cannot read images or
    PDFs sits out a message that has some, or whose history has."""
    lanes = [
        i for i, v in enumerate(variants) if not (files or history_attaches(conversation, i)) or refusal(c, v) is None
    ]
    return lanes if len(lanes) < len(variants) else None


def contestants(
    c: Conductor, chosen: Sequence[str], targets: Sequence[str], files: Sequence[Attachment]
) -> tuple[list[str], list[str]]:
    """Arena: the chosen targets ("provider/model") that read `files`, topped up to two by a
    random draw among the other targets that do; and why the others were left out."""
    if not files:
        return list(chosen), []
    unable = {t: cannot_read(c, t.partition("/")[0]) for t in targets}
    kept = [t for t in chosen if unable[t] is None]
    spare = [t for t in targets if t not in kept and unable[t] is None]
    secrets.SystemRandom().shuffle(spare)
    kept += spare[: max(0, 2 - len(kept))]
    left_out = sorted({reason for t in chosen if (reason := unable[t]) is not None})
    return kept, left_out


def uploader(key: str) -> list[Any]:
    """A file picker for a form (Compare, Arena): its files, unchecked (see `take`)."""
    return (
        st.file_uploader(
            "Attach images or PDFs",
            type=list(ACCEPTED_EXTENSIONS),
            accept_multiple_files=True,
            key=key,
            help=LIMIT_NOTE,
            max_upload_size=LIMIT_MB,  # the picker states the real limit (Streamlit's default says 200 MB)
        )
        or []
    )


def show_refs(refs: Sequence[AttachmentRef], load: Callable[[str], bytes]) -> None:
    """Thumbnails of the images, a chip per PDF, in the order they were sent."""
    if not refs:
        return
    row = st.container(horizontal=True, gap="small")
    with row:
        for ref in refs:
            if ref.is_image:
                try:
                    data = load(ref.sha256)
                except KeyError:
                    st.caption(f":material/broken_image: {ui.escape_md(ref.label())} (no longer stored)")
                    continue
                st.image(data, caption=ref.name, width=THUMBNAIL_PX)
            else:
                st.badge(ui.escape_badge(ref.label()[1:-1]), icon=":material/picture_as_pdf:", color="gray")


def skipped_column(c: Conductor, column: Any, variant: Variant) -> None:
    """A Compare column that sat a message out: greyed, with the reason."""
    with column.container(border=True):
        st.markdown(f":gray[**{ui.escape_md(variant.target)}**]")
        reason = refusal(c, variant) or f"{variant.provider}: did not read this message's attachments"
        st.caption(
            f":material/hide_image: Skipped for this message ({ui.escape_md(reason)}): it was not sent the images or PDFs."
        )


def show(conversation: Any, turn: Any) -> None:
    """A session turn's attachments, under its prompt."""
    show_refs(turn.attachments, conversation.load_attachment)


# --- Chat: a message whose target cannot read its attachments is held, not sent ------------------


def _held_key(kind: str) -> str:
    return f"{kind}_held_message"


def hold_if_unreadable(
    kind: str, c: Conductor, variant: Variant, prompt: str, files: list[Attachment], *, history: bool = False
) -> bool:
    """Hold the message (and rerun, to say why beside the provider control) when `variant`
    cannot read its attachments, or those of the `history` sent with it. False: it may be sent."""
    if not (files or history) or refusal(c, variant) is None:
        return False
    st.session_state[_held_key(kind)] = (prompt, files)
    st.rerun()
    return True  # not reached: st.rerun() ends this run


def held_message(kind: str, c: Conductor, variant: Variant | None) -> tuple[str, list[Attachment]] | None:
    """Beside the provider control: why a message was not sent, and (once another target is
    chosen) a button that sends it. Returns the message when that button is pressed."""
    reason = refusal(c, variant) if variant is not None else None
    held = st.session_state.get(_held_key(kind))
    if held is None:
        if reason is not None:
            st.caption(f":material/hide_image: {ui.escape_md(reason)}: images and PDFs cannot be sent to it")
        return None
    prompt, files = held
    names = ", ".join(a.ref.name for a in files)
    what = f"your message attaches {names}" if files else "the conversation before it has images or PDFs"
    if reason is not None:
        st.error(
            f"Not sent ({ui.escape_md(reason)}): {ui.escape_md(what)}. "
            "Pick a provider that reads images and PDFs, then send it.",
            icon=":material/hide_image:",
        )
    else:
        st.info(f"Held message ({ui.escape_md(what)}): ready to send.", icon=":material/attach_file:")
    row = st.container(horizontal=True, gap="small")
    with row:
        send = st.button(
            "Send held message",
            key=f"{kind}_held_send",
            type="primary",
            disabled=reason is not None,
            icon=":material/send:",
        )
        if st.button("Discard", key=f"{kind}_held_discard", type="tertiary", icon=":material/delete:"):
            st.session_state.pop(_held_key(kind), None)
            st.rerun()
    if send:
        st.session_state.pop(_held_key(kind), None)
        return prompt, files
    return None
