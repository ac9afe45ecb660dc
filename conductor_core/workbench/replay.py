"""Replay a logged request: what it sent, recovered from what was kept, to run it again.

    replay = replay_of(log, sessions, request_id)
    replay.messages    # system prompt, history, the last user message
    replay.variant     # who answered, with the parameters it was sent with (when known)
    replay.note        # what was recovered, and what could not be

Sources, the better first:

* **A playground session** (chat or comparison): the answer linked to the request
  (`wb_answers.request_id`) keeps the variant it was sent with — model, temperature, max
  tokens, top_p, stop, seed, system prompt — and its turn gives the prompt and the history
  before it (the turns on the conversation's path, as that lane sent them), with their
  images and PDFs (kept by the session, so they are sent again).
* **A blind round** (the Arena): the contestant's variant and the round's prompt.
* **An experiment run**: the cell's variant, and the prompt its row rendered from the template.
* **The request log alone** (gateway traffic, scripts): each attempt row keeps the provider,
  the model and the prompt as a transcript (``role: content`` lines), and no sampling
  parameters. The messages are read back from the transcript (a message whose text holds a
  line starting ``user:`` would be split there: the log's format cannot tell); the parameters
  are the defaults, and the note says so. The log names attachments (``[image: cat.png,
  12 KB]``) and keeps none of their bytes: such a replay sends the names, and says so.

With prompt logging off (`CONDUCTOR_LOG_PROMPTS=false`) nothing of the prompt is kept, and
a replay is refused with that reason.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from sqlalchemy import select

from ..models import ChatMessage, FilePart, ImagePart, MessageRole, parse_data_url
from ..store import RequestLog
from .arena import Arena
from .attachments import Attachment, AttachmentError, from_upload, message_parts
from .experiments import ExperimentStore
from .sessions import SessionStore, answers_table, turns_table
from .variants import Variant

__all__ = ["Replay", "ReplayError", "replay_of", "parse_transcript", "attachments_of"]


class ReplayError(ValueError):
    pass


#: What a workbench source knows of a request: the variant, the messages, and a note for the page.
Sent = tuple[Variant, list[ChatMessage], str]


@dataclass(frozen=True)
class Replay:
    request_id: str
    target: str
    messages: list[ChatMessage]
    variant: Variant
    parameters_known: bool
    note: str

    @property
    def history(self) -> list[tuple[str, str]]:
        """The (user, assistant) pairs before the last user message."""
        turns = [m for m in self.messages if m.role != MessageRole.system]
        return [(turns[i].content, turns[i + 1].content) for i in range(0, len(turns) - 1, 2)]

    @property
    def prompt(self) -> str:
        return self.messages[-1].content

    @property
    def turns(self) -> list[tuple[ChatMessage, str]]:
        """`history` with each user message whole (its images and PDFs: `attachments_of`)."""
        turns = [m for m in self.messages if m.role != MessageRole.system]
        return [(turns[i], turns[i + 1].content) for i in range(0, len(turns) - 1, 2)]

    @property
    def prompt_attachments(self) -> list[Attachment]:
        """The last user message's images and PDFs, to send again."""
        return attachments_of(self.messages[-1])


def attachments_of(message: ChatMessage) -> list[Attachment]:
    """A message's attachments back as the playground keeps them (links, which the playground
    never attaches, are left out)."""
    found = []
    for part in message.parts or ():
        if not isinstance(part, (ImagePart, FilePart)):
            continue
        parsed = parse_data_url(part.url)
        if parsed is None:
            continue
        name = part.name if isinstance(part, ImagePart) else part.filename
        try:
            found.append(from_upload(name or "attachment", parsed[1]))
        except AttachmentError:
            continue
    return found


_LOGGED_ATTACHMENT = re.compile(r"^\[(image|file): ", re.MULTILINE)
_ROLE_LINE = re.compile(r"^(system|user|assistant|tool): ", re.MULTILINE)


def parse_transcript(text: str) -> list[ChatMessage]:
    """The request log's ``role: content`` transcript back into messages."""
    marks = list(_ROLE_LINE.finditer(text))
    if not marks or marks[0].start() != 0:
        return [ChatMessage(role=MessageRole.user, content=text)] if text.strip() else []
    messages = []
    for mark, following in zip(marks, [*marks[1:], None], strict=True):
        content = text[mark.end() : following.start() - 1 if following else len(text)]
        if mark.group(1) != "tool":
            messages.append(ChatMessage(role=MessageRole(mark.group(1)), content=content))
    return messages


def _well_formed(messages: list[ChatMessage]) -> bool:
    """System first (optional), then user/assistant alternating, ending with a user message."""
    turns = [m for m in messages if m.role != MessageRole.system]
    if any(m.role == MessageRole.system for m in messages[1:]) or not turns or len(turns) % 2 == 0:
        return False
    return all(m.role == (MessageRole.user if i % 2 == 0 else MessageRole.assistant) for i, m in enumerate(turns))


def replay_of(log: RequestLog, sessions: SessionStore | None, request_id: str) -> Replay:
    rows = log.records(request_id=request_id, limit=20)
    if not rows:
        raise ReplayError(f"no request {request_id!r} in the request log")
    served = next((r for r in rows if r.status == "ok"), rows[0])  # newest first: the one that answered
    target = f"{served.provider}/{served.model}" if served.model else served.provider
    sent = _from_session(sessions, request_id) if sessions is not None else None
    sent = sent or _from_arena(log, request_id) or _from_experiment(log, request_id)
    if sent is not None:
        variant, messages, note = sent
        variant = variant.model_copy(update={"provider": served.provider, "model": served.model or variant.model})
        return Replay(request_id, target, messages, variant, True, note)
    if served.prompt is None:
        raise ReplayError(
            "the request log kept no prompt for this request (prompt logging was off, CONDUCTOR_LOG_PROMPTS=false), "
            "so there is nothing to replay"
        )
    messages = parse_transcript(served.prompt)
    note = (
        "messages from the request log; the log keeps no sampling parameters (temperature, max tokens, top_p, "
        "stop, seed) for requests made outside the playground, so the defaults are used"
    )
    if _LOGGED_ATTACHMENT.search(served.prompt):
        note += (
            "; the request log names images and files but keeps none of their bytes, so their names are sent in their "
            "place"
        )
    if not _well_formed(messages):
        user = [m for m in messages if m.role == MessageRole.user]
        if not user:
            raise ReplayError("the logged prompt has no user message to replay")
        messages = [user[-1]]
        note += "; the logged conversation could not be split into turns, so only its last user message is replayed"
    system = messages[0].content if messages and messages[0].role == MessageRole.system else None
    variant = Variant(provider=served.provider, model=served.model, system=system)
    return Replay(request_id, target, messages, variant, False, note)


def _single_turn(variant: Variant, prompt: str) -> list[ChatMessage]:
    return variant.request([ChatMessage(role=MessageRole.user, content=prompt)]).messages


def _from_arena(log: RequestLog, request_id: str) -> Sent | None:
    found = Arena(log).sent_for(request_id)
    if found is None:
        return None
    variant, prompt = found
    return variant, _single_turn(variant, prompt), "the prompt and parameters of the blind round (Arena) that sent it"


def _from_experiment(log: RequestLog, request_id: str) -> Sent | None:
    found = ExperimentStore(log).sent_for(request_id)
    if found is None:
        return None
    experiment, run, index, prompt, pictures = found
    variant = experiment.variants[index]
    label = experiment.labels[index]
    asked = ChatMessage(role=MessageRole.user, parts=message_parts(prompt, pictures)) if pictures else None
    return (
        variant,
        variant.request([asked]).messages if asked is not None else _single_turn(variant, prompt),
        f"the prompt and parameters of experiment “{experiment.name}”, run {run.number}, variant {label}",
    )


def _from_session(sessions: SessionStore, request_id: str) -> Sent | None:
    answer = sessions.answer_for_request(request_id)  # first: it creates the tables of a database without them
    if answer is None:
        return None
    a, t = answers_table.c, turns_table.c
    with sessions.engine.connect() as conn:
        row = conn.execute(
            select(a.session_id, a.turn_id, a.lane, t.prompt)
            .join(turns_table, t.id == a.turn_id)
            .where(a.request_id == request_id)
        ).first()
    if row is None:
        return None
    session_id, turn_id, lane, prompt = row
    conversation = sessions.conversation(session_id)
    index = conversation.index_of(turn_id) if conversation is not None else None
    history = conversation.context(lane, index) if conversation is not None and index is not None else []
    variant = answer.variant
    if variant is None:
        return None
    asked = (
        conversation.user_message(conversation.turns[index])
        if conversation is not None and index is not None
        else ChatMessage(role=MessageRole.user, content=prompt)
    )
    messages = [*history, asked]
    if variant.system and variant.system.strip():
        messages.insert(0, ChatMessage(role=MessageRole.system, content=variant.system))
    return variant, messages, "messages and parameters as the playground sent them"
