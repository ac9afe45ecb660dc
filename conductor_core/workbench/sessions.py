"""Sessions: every chat and every comparison, kept in the request log's database.

A session has 1 to 4 *lanes* (a chat has one; a comparison one per column), each with its
own `Variant` (who answers, and how). A person's messages are *turns*; each turn gets one
*answer* per lane, and more when an answer is regenerated (alternatives). Editing a turn
adds a sibling turn (a branch). What the page shows is one *path* through that tree: at
every fork the most recently chosen branch or alternative (`selected_ts`).

Schema (tables prefixed ``wb_``; other workbench modules add their own beside these, and
may add session kinds, without changing them)::

    wb_sessions   id PK "ses_…", kind ("chat" | "compare" | …), title, created_at,
                  updated_at, updated_ts (float epoch, for ordering), settings_rev (bumped
                  when a lane's variant changes, so other tabs reload their controls),
                  workspace_id and created_by (conductor_core/team: ids, no foreign key, as
                  an in-memory store has no users), visibility ("private": its author's
                  only; "workspace": shared with the workspace; see team/people.py)
    wb_lanes      (session_id → wb_sessions, lane 0-3) PK, variant (Variant as JSON)
    wb_turns      id PK "turn_…", session_id → wb_sessions, parent_id (the turn before,
                  NULL for the first), after_answer_id (single-lane sessions: the answer
                  alternative this turn followed; NULL in comparisons, whose later rounds
                  follow every column), prompt, created_at/created_ts, selected_ts,
                  vote (a comparison's verdict: a lane label, "tie" or "both_bad"), vote_id,
                  continues (true: no prompt of its own; it continues after the tool results of
                  the answer before it)
    wb_answers    id PK "ans_…", session_id, turn_id → wb_turns, lane, variant (what
                  answered, as JSON), status, content (the text so far), notice (the last
                  progress message), error_type, error_message, request_id (→ the request
                  log's ``attempts.request_id``), response (the ChatResponse as JSON: figures
                  and routing), attempts (failed attempts as JSON), use_as_context (NULL:
                  by status), created_at/created_ts, updated_ts (progress/heartbeat),
                  finished_ts, selected_ts, elapsed_ms and first_text_ms (as the page saw
                  them: a stopped answer has no response), tool_calls (the calls the answer
                  made, as JSON, written while they stream), tool_results (what the person
                  answered them with, as JSON {call id: text})
    attachments   sha256 PK (of the bytes: each image or PDF stored once, whichever turns,
                  columns and retries send it), media_type, size, data, created_at
    wb_turn_attachments  (turn_id → wb_turns, position) PK, sha256 → attachments, name
                  (as the person named the file): a turn's images and PDFs, in order
    arena_match_attachments  (match_id → arena_matches, position) PK, sha256, name: a
                  blind round's (kept here, with every other use of `attachments`, so the
                  bytes no use references any more are found in one place)
    experiment_row_attachments  (experiment_id, row_index, position) PK, sha256, name: an
                  experiment dataset row's images (its image columns, in order)

Answer statuses: ``streaming`` (a worker is writing it), ``done``, ``error`` (failed before
any text), ``incomplete`` (the stream broke after text), ``stopped`` (a person stopped
it), ``interrupted`` (its worker went away: the process ended; found by a heartbeat older
than `STALE_S`). Only ``done`` answers are sent as context by default; a person can
include a stopped/incomplete/interrupted answer's text, or leave a done one out
(`use_as_context`). A failed turn is therefore never re-sent by accident.

Tool calls: a done answer that called tools is sent as context once every call has a
result (`set_tool_results`): the assistant message with its `tool_calls`, then one `tool`
message per call. The model's next answer is a turn that `continues` (no user message):
in a comparison it has an answer in each lane that continued.

Thread-safe; one `SessionStore` per process. On PostgreSQL every process sees every
session (a team's shared playground).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    Column,
    Double,
    Engine,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    create_engine,
    delete,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.pool import StaticPool

from ..models import Attempt, ChatMessage, ChatResponse, MessageRole, ToolCall, new_id
from ..secrets import redact, redact_json
from ..store import RequestLog, SafeText, UTCDateTime
from ..team.people import LOCAL, PRIVATE, Person, Visibility, may_manage, may_read, may_write
from .attachments import Attachment, AttachmentRef, message_parts
from .variants import Variant, variant_labels

__all__ = [
    "SessionStore",
    "SessionInfo",
    "Turn",
    "Answer",
    "Conversation",
    "SessionKind",
    "AnswerStatus",
    "LIVE",
    "FINISHED",
    "STALE_S",
    "MAX_LANES",
    "metadata",
    "keep_attachments",
    "keep_bytes",
    "row_attachments_table",
    "dataset_row_attachments_table",
    "attachments_table",
    "attachments_of",
    "match_attachments_table",
]

SessionKind = str  # "chat", "compare"; other modules may add kinds
AnswerStatus = Literal["streaming", "done", "error", "incomplete", "stopped", "interrupted"]
LIVE: AnswerStatus = "streaming"
FINISHED: frozenset[str] = frozenset({"done", "error", "incomplete", "stopped", "interrupted"})
#: A streaming answer whose worker has not written for this long is taken as interrupted
#: (its process ended). Workers write at least every few seconds, even while waiting.
STALE_S = 30.0
MAX_LANES = 4
TITLE_CHARS = 80

metadata = MetaData()

sessions_table = Table(
    "wb_sessions",
    metadata,
    Column("id", String(), primary_key=True),
    Column("kind", String(), nullable=False),
    Column("title", SafeText(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("updated_at", UTCDateTime(), nullable=False),
    Column("updated_ts", Double(), nullable=False),
    Column("settings_rev", Integer(), nullable=False),
    Column("workspace_id", String(), nullable=False),
    Column("created_by", String(), nullable=False),
    Column("visibility", String(), nullable=False),
    Index("ix_wb_sessions_kind_updated", "kind", "updated_ts"),
    Index("ix_wb_sessions_workspace_kind_updated", "workspace_id", "kind", "updated_ts"),
)

lanes_table = Table(
    "wb_lanes",
    metadata,
    Column("session_id", String(), ForeignKey("wb_sessions.id"), primary_key=True),
    Column("lane", Integer(), primary_key=True),
    Column("variant", SafeText(), nullable=False),
)

turns_table = Table(
    "wb_turns",
    metadata,
    Column("id", String(), primary_key=True),
    Column("session_id", String(), ForeignKey("wb_sessions.id"), nullable=False),
    Column("parent_id", String()),
    Column("after_answer_id", String()),
    Column("prompt", SafeText(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("selected_ts", Double(), nullable=False),
    Column("vote", String()),
    Column("vote_id", String()),
    Column("continues", Boolean()),
    Index("ix_wb_turns_session", "session_id", "created_ts"),
)

answers_table = Table(
    "wb_answers",
    metadata,
    Column("id", String(), primary_key=True),
    Column("session_id", String(), ForeignKey("wb_sessions.id"), nullable=False),
    Column("turn_id", String(), ForeignKey("wb_turns.id"), nullable=False),
    Column("lane", Integer(), nullable=False),
    Column("variant", SafeText(), nullable=False),
    Column("status", String(), nullable=False),
    Column("content", SafeText(), nullable=False),
    Column("notice", SafeText()),
    Column("error_type", String()),
    Column("error_message", SafeText()),
    Column("request_id", String()),
    Column("response", SafeText()),
    Column("attempts", SafeText()),
    Column("use_as_context", Boolean()),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("updated_ts", Double(), nullable=False),
    Column("finished_ts", Double()),
    Column("selected_ts", Double(), nullable=False),
    Column("elapsed_ms", Double()),
    Column("first_text_ms", Double()),
    Column("tool_calls", SafeText()),
    Column("tool_results", SafeText()),
    Index("ix_wb_answers_session", "session_id", "created_ts"),
    Index("ix_wb_answers_turn", "turn_id"),
    Index("ix_wb_answers_request", "request_id"),
)


attachments_table = Table(
    "attachments",
    metadata,
    Column("sha256", String(), primary_key=True),
    Column("media_type", String(), nullable=False),
    Column("size", Integer(), nullable=False),
    Column("data", LargeBinary(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)

turn_attachments_table = Table(
    "wb_turn_attachments",
    metadata,
    Column("turn_id", String(), ForeignKey("wb_turns.id"), primary_key=True),
    Column("position", Integer(), primary_key=True),
    Column("sha256", String(), ForeignKey("attachments.sha256"), nullable=False),
    Column("name", SafeText(), nullable=False),
    Index("ix_wb_turn_attachments_sha256", "sha256"),
)


match_attachments_table = Table(
    "arena_match_attachments",
    metadata,
    Column("match_id", String(), primary_key=True),  # arena_matches.id (the arena's own metadata)
    Column("position", Integer(), primary_key=True),
    Column("sha256", String(), ForeignKey("attachments.sha256"), nullable=False),
    Column("name", SafeText(), nullable=False),
)

row_attachments_table = Table(
    "experiment_row_attachments",
    metadata,
    Column("experiment_id", String(), primary_key=True),  # experiments.id (the experiments' own metadata)
    Column("row_index", Integer(), primary_key=True),
    Column("position", Integer(), primary_key=True),
    Column("sha256", String(), ForeignKey("attachments.sha256"), nullable=False),
    Column("name", SafeText(), nullable=False),
    Index("ix_experiment_row_attachments_sha256", "sha256"),
)

dataset_row_attachments_table = Table(
    "dataset_row_attachments",
    metadata,
    Column("dataset_id", String(), primary_key=True),  # datasets.id (dataset_store.py's metadata)
    Column("row_id", Integer(), primary_key=True),
    Column("position", Integer(), primary_key=True),
    Column("sha256", String(), ForeignKey("attachments.sha256"), nullable=False),
    Column("name", SafeText(), nullable=False),
    Index("ix_dataset_row_attachments_sha256", "sha256"),
)

#: Every table that references `attachments` (by its sha256 column): bytes none of them names are dropped.
_ATTACHMENT_USES = (
    turn_attachments_table,
    match_attachments_table,
    row_attachments_table,
    dataset_row_attachments_table,
)


def _now() -> tuple[datetime, float]:
    moment = datetime.now(UTC)
    return moment, moment.timestamp()


def _title(prompt: str) -> str:
    text = " ".join(prompt.split())
    return text if len(text) <= TITLE_CHARS else text[: TITLE_CHARS - 1] + "…"


# --- what the store hands back ---------------------------------------------------------------


@dataclass
class SessionInfo:
    id: str
    kind: SessionKind
    title: str
    created_at: datetime
    updated_at: datetime
    settings_rev: int
    variants: list[Variant]
    workspace_id: str = LOCAL.workspace_id
    created_by: str = LOCAL.user_id
    visibility: Visibility = PRIVATE

    @property
    def shared(self) -> bool:
        return self.visibility != PRIVATE

    def readable_by(self, person: Person) -> bool:
        return may_read(person, author=self.created_by, workspace_id=self.workspace_id, visibility=self.visibility)

    def writable_by(self, person: Person) -> bool:
        """Whether `person` may add to it (send, regenerate, vote): not a viewer."""
        return may_write(person, author=self.created_by, workspace_id=self.workspace_id, visibility=self.visibility)

    def manageable_by(self, person: Person) -> bool:
        """Whether `person` may rename, delete, share or make it private."""
        return may_manage(person, author=self.created_by, workspace_id=self.workspace_id, visibility=self.visibility)

    @property
    def labels(self) -> list[str]:
        """A label per lane, saying what differs between lanes (`variant_labels`)."""
        return variant_labels(self.variants) if len(self.variants) > 1 else [v.target for v in self.variants]


@dataclass
class Answer:
    id: str
    turn_id: str
    lane: int
    variant: Variant
    status: AnswerStatus
    content: str
    notice: str | None
    error_type: str | None
    error_message: str | None
    request_id: str | None
    response: ChatResponse | None
    attempts: list[Attempt]
    use_as_context: bool | None
    created_at: datetime
    updated_ts: float
    elapsed_ms: float | None
    first_text_ms: float | None
    selected_ts: float = 0.0
    #: The calls the answer made (while it streams: as far as they have come).
    tool_calls: list[ToolCall] = field(default_factory=list)
    #: What each call was answered with (call id -> text), once the person sent them.
    tool_results: dict[str, str] = field(default_factory=dict)

    @property
    def live(self) -> bool:
        return self.status == LIVE

    @property
    def tools_answered(self) -> bool:
        """A done answer that called tools, each of whose calls has its result."""
        return (
            self.status == "done"
            and bool(self.tool_calls)
            and all(call.id in self.tool_results for call in self.tool_calls)
        )

    @property
    def awaiting_tools(self) -> bool:
        """A done answer whose tool calls have not all been answered yet."""
        return self.status == "done" and bool(self.tool_calls) and not self.tools_answered

    def messages(self) -> list[ChatMessage]:
        """This answer as history: the assistant message (with its tool calls and a `tool`
        message per call once they are all answered; its text alone before that)."""
        if not self.tools_answered:
            return [ChatMessage(role=MessageRole.assistant, content=self.content)]
        return [
            ChatMessage(role=MessageRole.assistant, content=self.content, tool_calls=self.tool_calls),
            *(
                ChatMessage(role=MessageRole.tool, content=self.tool_results[call.id], tool_call_id=call.id)
                for call in self.tool_calls
            ),
        ]

    @property
    def settling(self) -> bool:
        """Stopped by a person, and its worker has not yet saved what had arrived (it does
        within moments; a worker that died never will: then this ends with the heartbeat)."""
        return self.status == "stopped" and self.elapsed_ms is None and time.time() - self.updated_ts < STALE_S

    @property
    def in_context(self) -> bool:
        """Whether later requests send this answer (and its prompt) as history."""
        if not self.content.strip() and not self.tools_answered:
            return False  # an empty answer would make two user messages in a row
        if self.use_as_context is None:
            return self.status == "done"
        return self.use_as_context


@dataclass
class Turn:
    id: str
    parent_id: str | None
    after_answer_id: str | None
    prompt: str
    created_at: datetime
    vote: str | None
    vote_id: str | None
    #: Every answer per lane, oldest first (the alternatives).
    alternatives: dict[int, list[Answer]] = field(default_factory=dict)
    #: The shown alternative per lane.
    chosen: dict[int, Answer] = field(default_factory=dict)
    #: Turn ids at the same fork (this one and its edits), oldest first.
    branches: list[str] = field(default_factory=list)
    #: No prompt of its own: the model continues after the previous answer's tool results.
    continues: bool = False
    #: The images and PDFs sent with the prompt, in order (their bytes: `SessionStore.attachment`).
    attachments: list[AttachmentRef] = field(default_factory=list)

    @property
    def branch_index(self) -> int:
        return self.branches.index(self.id) if self.id in self.branches else 0

    def alternative_index(self, lane: int) -> int:
        chosen = self.chosen.get(lane)
        options = self.alternatives.get(lane, [])
        return next((i for i, a in enumerate(options) if chosen and a.id == chosen.id), 0)


@dataclass
class Conversation:
    session: SessionInfo
    #: The path shown: one turn per exchange, oldest first.
    turns: list[Turn]
    #: Reads an attachment's bytes by hash (the store's), for `context` and `user_message`.
    load_attachment: Any = None

    @property
    def live(self) -> list[Answer]:
        return [a for t in self.turns for a in t.chosen.values() if a.live]

    @property
    def settling(self) -> list[Answer]:
        return [a for t in self.turns for a in t.chosen.values() if a.settling]

    def context(self, lane: int, upto: int | None = None) -> list[ChatMessage]:
        """The history lane `lane` sends before turn number `upto` (default: after the last):
        each earlier turn whose chosen answer is in context, as a user/assistant pair (an
        answer whose tool calls were answered adds them and their results; a turn that
        continues after them adds its answer alone, and only when they were sent)."""
        messages: list[ChatMessage] = []
        sent_tools = False  # the turn before sent tool calls with their results
        for turn in self.turns[: len(self.turns) if upto is None else upto]:
            answer = turn.chosen.get(lane)
            if answer is None or not answer.in_context or (turn.continues and not sent_tools):
                sent_tools = False
                continue
            if not turn.continues:
                messages.append(self.user_message(turn))
            messages.extend(answer.messages())
            sent_tools = answer.tools_answered
        return messages

    def index_of(self, turn_id: str) -> int | None:
        return next((i for i, t in enumerate(self.turns) if t.id == turn_id), None)

    def attachments(self, turn: Turn) -> list[Attachment]:
        """A turn's attachments with their bytes, in order."""
        if not turn.attachments:
            return []
        if self.load_attachment is None:
            raise ValueError("this conversation was read without its attachments' store")
        return [Attachment(ref, self.load_attachment(ref.sha256)) for ref in turn.attachments]

    def user_message(self, turn: Turn) -> ChatMessage:
        """The turn's message as sent: its text, then its images and PDFs (`parts`)."""
        if not turn.attachments:
            return ChatMessage(role=MessageRole.user, content=turn.prompt)
        return ChatMessage(role=MessageRole.user, parts=message_parts(turn.prompt, self.attachments(turn)))


# --- the store --------------------------------------------------------------------------------


class SessionStore:
    """Sessions, turns and answers in the request log's database (see the module docstring)."""

    def __init__(self, engine: Engine, *, ensure: Any = None, memory: bool = False) -> None:
        self._engine = engine
        self._ensure = ensure
        self._ready = False
        self._ready_lock = threading.Lock()
        # One shared in-memory SQLite connection: Python's sqlite3 objects must not be used
        # by two threads at once, so memory mode takes turns.
        self._lock: Any = threading.RLock() if memory else nullcontext()
        self.memory = memory

    @classmethod
    def for_log(cls, log: RequestLog) -> SessionStore:
        """Sessions next to `log`'s tables, or, when the log keeps no prompts
        (`CONDUCTOR_LOG_PROMPTS=false`), in this process's memory only."""
        if not log.log_prompts:
            return cls.in_memory()
        return cls(log.engine, ensure=lambda: log.require_tables(metadata))

    @classmethod
    def in_memory(cls) -> SessionStore:
        """Kept in this process only, gone when it ends (nothing written to disk)."""
        engine = create_engine("sqlite://", poolclass=StaticPool, connect_args={"check_same_thread": False})
        return cls(engine, ensure=lambda: metadata.create_all(engine), memory=True)

    @property
    def engine(self) -> Engine:
        return self._engine

    def _ready_or_create(self) -> None:
        if self._ready:
            return
        with self._ready_lock:
            if not self._ready:
                if self._ensure is not None:
                    self._ensure()
                self._ready = True

    def _begin(self):
        self._ready_or_create()
        return _Transaction(self._engine, self._lock)

    # --- sessions ---------------------------------------------------------------------------

    def create(
        self, kind: SessionKind, variants: Sequence[Variant], *, title: str = "", by: Person = LOCAL
    ) -> SessionInfo:
        """A new session of `by`'s, in their workspace, private to them until shared."""
        if not 1 <= len(variants) <= MAX_LANES:
            raise ValueError(f"a session has 1 to {MAX_LANES} lanes, got {len(variants)}")
        moment, ts = _now()
        session_id = new_id("ses")
        with self._begin() as conn:
            conn.execute(
                insert(sessions_table).values(
                    id=session_id,
                    kind=kind,
                    title=_title(title) if title else "",
                    created_at=moment,
                    updated_at=moment,
                    updated_ts=ts,
                    settings_rev=0,
                    workspace_id=by.workspace_id,
                    created_by=by.user_id,
                    visibility=PRIVATE,
                )
            )
            conn.execute(
                insert(lanes_table),
                [{"session_id": session_id, "lane": i, "variant": v.model_dump_json()} for i, v in enumerate(variants)],
            )
        return SessionInfo(
            session_id,
            kind,
            _title(title) if title else "",
            moment,
            moment,
            0,
            list(variants),
            by.workspace_id,
            by.user_id,
        )

    def get(self, session_id: str) -> SessionInfo | None:
        found = self._sessions(select(sessions_table).where(sessions_table.c.id == session_id))
        return found[0] if found else None

    def recent(
        self, kind: SessionKind | None = None, *, search: str = "", limit: int = 30, person: Person | None = None
    ) -> list[SessionInfo]:
        """Newest first. `search` matches titles, prompts and answers (case-insensitive). With
        `person`: only the sessions they may open (their own, and those shared with their
        workspace); without, every session (tools that are not a person's view)."""
        s = sessions_table.c
        stmt = select(sessions_table)
        if person is not None:
            stmt = stmt.where(
                s.workspace_id == person.workspace_id, or_(s.created_by == person.user_id, s.visibility != PRIVATE)
            )
        if kind is not None:
            stmt = stmt.where(s.kind == kind)
        text = search.strip()
        if text:
            in_turns = select(turns_table.c.session_id).where(turns_table.c.prompt.icontains(text, autoescape=True))
            in_answers = select(answers_table.c.session_id).where(
                answers_table.c.content.icontains(text, autoescape=True)
            )
            stmt = stmt.where(or_(s.title.icontains(text, autoescape=True), s.id.in_(in_turns), s.id.in_(in_answers)))
        return self._sessions(stmt.order_by(s.updated_ts.desc(), s.id.desc()).limit(limit))

    def _sessions(self, stmt: Any) -> list[SessionInfo]:
        with self._begin() as conn:
            rows = conn.execute(stmt).mappings().all()
            ids = [row["id"] for row in rows]
            lanes: dict[str, list[Variant]] = {i: [] for i in ids}
            if ids:
                for lane in conn.execute(
                    select(lanes_table)
                    .where(lanes_table.c.session_id.in_(ids))
                    .order_by(lanes_table.c.session_id, lanes_table.c.lane)
                ).mappings():
                    lanes[lane["session_id"]].append(Variant.model_validate_json(lane["variant"]))
        return [
            SessionInfo(
                r["id"],
                r["kind"],
                r["title"],
                r["created_at"],
                r["updated_at"],
                r["settings_rev"],
                lanes[r["id"]],
                r["workspace_id"],
                r["created_by"],
                r["visibility"],
            )
            for r in rows
        ]

    def set_visibility(self, session_id: str, visibility: Visibility) -> bool:
        """Share a session with its workspace ("workspace") or make it its author's again ("private")."""
        if visibility not in ("private", "workspace"):
            raise ValueError(f"a session is 'private' or shared with the 'workspace', not {visibility!r}")
        with self._begin() as conn:
            return (
                conn.execute(
                    update(sessions_table).where(sessions_table.c.id == session_id).values(visibility=visibility)
                ).rowcount
                > 0
            )

    def rename(self, session_id: str, title: str) -> bool:
        title = _title(title)
        if not title:
            raise ValueError("a session's name cannot be empty")
        with self._begin() as conn:
            return (
                conn.execute(
                    update(sessions_table).where(sessions_table.c.id == session_id).values(title=title)
                ).rowcount
                > 0
            )

    def delete(self, session_id: str) -> bool:
        """The session and everything in it (its request-log rows stay: the log is history)."""
        with self._begin() as conn:
            turn_ids = select(turns_table.c.id).where(turns_table.c.session_id == session_id)
            conn.execute(delete(turn_attachments_table).where(turn_attachments_table.c.turn_id.in_(turn_ids)))
            for table in (answers_table, turns_table, lanes_table):
                conn.execute(delete(table).where(table.c.session_id == session_id))
            _forget_unused_attachments(conn)
            return conn.execute(delete(sessions_table).where(sessions_table.c.id == session_id)).rowcount > 0

    def set_variants(self, session_id: str, variants: Sequence[Variant]) -> int:
        """Replace the lanes' variants (the number of lanes may change only while the session
        has no turns). Returns the new settings revision."""
        if not 1 <= len(variants) <= MAX_LANES:
            raise ValueError(f"a session has 1 to {MAX_LANES} lanes, got {len(variants)}")
        with self._begin() as conn:
            current = conn.execute(
                select(func.count()).select_from(lanes_table).where(lanes_table.c.session_id == session_id)
            ).scalar_one()
            if current != len(variants):
                turns = conn.execute(
                    select(func.count()).select_from(turns_table).where(turns_table.c.session_id == session_id)
                ).scalar_one()
                if turns:
                    raise ValueError("the number of columns is fixed once a session has messages: start a new one")
            conn.execute(delete(lanes_table).where(lanes_table.c.session_id == session_id))
            conn.execute(
                insert(lanes_table),
                [{"session_id": session_id, "lane": i, "variant": v.model_dump_json()} for i, v in enumerate(variants)],
            )
            conn.execute(
                update(sessions_table)
                .where(sessions_table.c.id == session_id)
                .values(settings_rev=sessions_table.c.settings_rev + 1)
            )
            return int(
                conn.execute(
                    select(sessions_table.c.settings_rev).where(sessions_table.c.id == session_id)
                ).scalar_one()
            )

    def _touch(self, conn: Any, session_id: str, title_from: str | None = None) -> None:
        moment, ts = _now()
        values: dict[str, Any] = {"updated_at": moment, "updated_ts": ts}
        conn.execute(update(sessions_table).where(sessions_table.c.id == session_id).values(**values))
        if title_from:
            conn.execute(
                update(sessions_table)
                .where(sessions_table.c.id == session_id, sessions_table.c.title == "")
                .values(title=_title(title_from))
            )

    # --- turns and answers ----------------------------------------------------------------------

    def add_turn(
        self,
        session_id: str,
        prompt: str,
        *,
        parent_id: str | None,
        after_answer_id: str | None = None,
        lanes: Iterable[int] | None = None,
        continues: bool = False,
        attachments: Sequence[Attachment] = (),
    ) -> tuple[Turn, list[Answer]]:
        """A new turn (chosen at its fork) with a streaming answer in each of `lanes` (default:
        every lane, with each lane's current variant), and its `attachments` (kept once each,
        by content). Refused while the session has an answer still streaming, so two tabs
        cannot interleave turns. A turn that `continues` after tool results has no prompt."""
        if continues:
            prompt, attachments = "", ()
        elif not prompt.strip() and not attachments:
            raise ValueError("a message cannot be empty")
        moment, ts = _now()
        turn_id = new_id("turn")
        with self._begin() as conn:
            # Taking the session row first serialises two tabs sending at once.
            self._touch(conn, session_id, title_from=prompt or (attachments[0].ref.name if attachments else None))
            self._refuse_if_live(conn, session_id)
            variants = self._lane_variants(conn, session_id)
            conn.execute(
                insert(turns_table).values(
                    continues=continues or None,
                    id=turn_id,
                    session_id=session_id,
                    parent_id=parent_id,
                    after_answer_id=after_answer_id,
                    prompt=prompt,
                    created_at=moment,
                    created_ts=ts,
                    selected_ts=ts,
                )
            )
            keep_attachments(conn, turn_attachments_table, turn_id, attachments, moment)
            answers = [
                self._insert_answer(conn, session_id, turn_id, lane, variants[lane])
                for lane in (lanes or range(len(variants)))
            ]
        turn = Turn(turn_id, parent_id, after_answer_id, prompt, moment, None, None, continues=continues)
        turn.attachments = [a.ref for a in attachments]
        return turn, answers

    def attachment(self, sha256: str) -> bytes:
        """An attachment's bytes (KeyError when no turn ever kept them)."""
        with self._begin() as conn:
            data = conn.execute(
                select(attachments_table.c.data).where(attachments_table.c.sha256 == sha256)
            ).scalar_one_or_none()
        if data is None:
            raise KeyError(f"no attachment {sha256}")
        return bytes(data)

    def add_answer(self, session_id: str, turn_id: str, lane: int, variant: Variant | None = None) -> Answer:
        """Another alternative for `lane` of a turn (regenerate), chosen at once; `variant`
        defaults to the lane's current one."""
        return self.add_answers(session_id, turn_id, [lane], [variant] if variant is not None else None)[0]

    def add_answers(
        self, session_id: str, turn_id: str, lanes: Sequence[int], variants: Sequence[Variant] | None = None
    ) -> list[Answer]:
        """Another alternative in each of `lanes` (a comparison's re-run), in one transaction."""
        with self._begin() as conn:
            self._touch(conn, session_id)
            self._refuse_if_live(conn, session_id)
            current = self._lane_variants(conn, session_id)
            chosen = list(variants) if variants is not None else [current[lane] for lane in lanes]
            return [
                self._insert_answer(conn, session_id, turn_id, lane, v) for lane, v in zip(lanes, chosen, strict=False)
            ]

    def _refuse_if_live(self, conn: Any, session_id: str) -> None:
        a = answers_table.c
        live = conn.execute(
            select(func.count())
            .select_from(answers_table)
            .where(a.session_id == session_id, a.status == LIVE, a.updated_ts >= time.time() - STALE_S)
        ).scalar_one()
        if live:
            raise ValueError("an answer is still streaming in this session: wait for it, or stop it")

    def _lane_variants(self, conn: Any, session_id: str) -> list[Variant]:
        rows = (
            conn.execute(
                select(lanes_table.c.variant).where(lanes_table.c.session_id == session_id).order_by(lanes_table.c.lane)
            )
            .scalars()
            .all()
        )
        if not rows:
            raise KeyError(f"no session {session_id!r}: it may have been deleted")
        return [Variant.model_validate_json(v) for v in rows]

    def _insert_answer(self, conn: Any, session_id: str, turn_id: str, lane: int, variant: Variant) -> Answer:
        moment, ts = _now()
        answer_id = new_id("ans")
        conn.execute(
            insert(answers_table).values(
                id=answer_id,
                session_id=session_id,
                turn_id=turn_id,
                lane=lane,
                variant=variant.model_dump_json(),
                status=LIVE,
                content="",
                created_at=moment,
                created_ts=ts,
                updated_ts=ts,
                selected_ts=ts,
            )
        )
        return Answer(
            answer_id,
            turn_id,
            lane,
            variant,
            LIVE,
            "",
            None,
            None,
            None,
            None,
            None,
            [],
            None,
            moment,
            ts,
            None,
            None,
            ts,
        )

    def progress(
        self,
        answer_id: str,
        content: str,
        *,
        notice: str | None = None,
        tool_calls: Sequence[ToolCall] | None = None,
    ) -> bool:
        """A streaming answer's text (and tool calls) so far (also its heartbeat). False when it
        is no longer streaming (stopped, or its session deleted): the worker then stops reading."""
        # Redacted as the request log is: an upstream may echo a key, and this text is shown.
        values: dict[str, Any] = {"content": redact(content), "updated_ts": time.time()}
        if notice is not None:
            values["notice"] = redact(notice)
        if tool_calls:
            values["tool_calls"] = _calls_json(tool_calls)
        with self._begin() as conn:
            return (
                conn.execute(
                    update(answers_table)
                    .where(answers_table.c.id == answer_id, answers_table.c.status == LIVE)
                    .values(**values)
                ).rowcount
                > 0
            )

    def link_request(self, answer_id: str, request_id: str) -> None:
        """The request id the answer's request-log rows carry (set when its request starts)."""
        with self._begin() as conn:
            conn.execute(update(answers_table).where(answers_table.c.id == answer_id).values(request_id=request_id))

    def heartbeat(self, answer_ids: Iterable[str]) -> None:
        ids = list(answer_ids)
        if not ids:
            return
        with self._begin() as conn:
            conn.execute(
                update(answers_table)
                .where(answers_table.c.id.in_(ids), answers_table.c.status == LIVE)
                .values(updated_ts=time.time())
            )

    def finish(
        self,
        answer_id: str,
        status: AnswerStatus,
        *,
        content: str,
        response: ChatResponse | None = None,
        error_type: str | None = None,
        error_message: str | None = None,
        request_id: str | None = None,
        attempts: Sequence[Attempt] = (),
        elapsed_ms: float | None = None,
        first_text_ms: float | None = None,
        tool_calls: Sequence[ToolCall] | None = None,
    ) -> bool:
        """The end of an answer. A streaming answer takes any final status; one a person
        stopped keeps "stopped" and gains the rest of its text and figures. Its tool calls
        are the response's, else `tool_calls` (as far as they streamed)."""
        if status not in FINISHED:
            raise ValueError(f"not a final status: {status!r}")
        calls = (response.tool_calls if response is not None else None) or tool_calls
        values: dict[str, Any] = {
            "tool_calls": _calls_json(calls) if calls else None,
            "content": redact(content),
            # Its strings redacted, not its JSON (whose escapes and quotes redaction must not meet).
            "response": json.dumps(redact_json(response.model_dump(mode="json"))) if response is not None else None,
            "error_type": error_type,
            "error_message": redact(error_message) if error_message is not None else None,
            "request_id": request_id or (response.metadata.id if response is not None else None),
            "attempts": json.dumps(redact_json([a.model_dump(mode="json") for a in attempts])) if attempts else None,
            "updated_ts": time.time(),
            "finished_ts": time.time(),
            "elapsed_ms": elapsed_ms,
            "first_text_ms": first_text_ms,
            "notice": None,
        }
        a = answers_table.c
        with self._begin() as conn:
            done = conn.execute(
                update(answers_table).where(a.id == answer_id, a.status == LIVE).values(status=status, **values)
            ).rowcount
            if done:
                return True
            values.pop("finished_ts")
            return (
                conn.execute(
                    update(answers_table).where(a.id == answer_id, a.status == "stopped").values(**values)
                ).rowcount
                > 0
            )

    def stop(self, answer_id: str) -> bool:
        """Mark a streaming answer stopped, at once (its worker, in whichever process, sees it
        at its next write and closes the provider's stream). False if it had already ended."""
        a = answers_table.c
        with self._begin() as conn:
            return (
                conn.execute(
                    update(answers_table)
                    .where(a.id == answer_id, a.status == LIVE)
                    .values(status="stopped", finished_ts=time.time(), notice=None)
                ).rowcount
                > 0
            )

    def interrupt_stale(self, session_id: str | None = None, *, older_than_s: float = STALE_S) -> int:
        """Mark answers whose worker stopped writing (its process ended) interrupted."""
        a = answers_table.c
        where = [a.status == LIVE, a.updated_ts < time.time() - older_than_s]
        if session_id is not None:
            where.append(a.session_id == session_id)
        with self._begin() as conn:
            return conn.execute(update(answers_table).where(*where).values(status="interrupted", notice=None)).rowcount

    def interrupt(self, answer_ids: Iterable[str]) -> int:
        ids = list(answer_ids)
        if not ids:
            return 0
        a = answers_table.c
        with self._begin() as conn:
            return conn.execute(
                update(answers_table).where(a.id.in_(ids), a.status == LIVE).values(status="interrupted", notice=None)
            ).rowcount

    def answers(self, answer_ids: Iterable[str]) -> dict[str, Answer]:
        """Some answers by id, fresh from the database (what a refreshing page polls)."""
        ids = list(answer_ids)
        if not ids:
            return {}
        with self._begin() as conn:
            rows = conn.execute(select(answers_table).where(answers_table.c.id.in_(ids))).mappings().all()
        return {row["id"]: _answer(row) for row in rows}

    def answer_for_request(self, request_id: str) -> Answer | None:
        with self._begin() as conn:
            row = conn.execute(select(answers_table).where(answers_table.c.request_id == request_id)).mappings().first()
        return _answer(row) if row else None

    def choose_turn(self, turn_id: str) -> None:
        """Show this branch at its fork."""
        with self._begin() as conn:
            conn.execute(update(turns_table).where(turns_table.c.id == turn_id).values(selected_ts=time.time()))

    def choose_answer(self, answer_id: str) -> None:
        """Show this alternative in its lane."""
        with self._begin() as conn:
            conn.execute(update(answers_table).where(answers_table.c.id == answer_id).values(selected_ts=time.time()))

    def set_tool_results(self, answer_id: str, results: dict[str, str]) -> None:
        """What each of the answer's tool calls is answered with (call id -> text): every call
        must have one, and the answer must be done."""
        found = self.answers([answer_id]).get(answer_id)
        if found is None:
            raise KeyError(f"no answer {answer_id!r}: it may have been deleted")
        if found.status != "done" or not found.tool_calls:
            raise ValueError("only a finished answer that called tools can be given tool results")
        missing = [call.function.name for call in found.tool_calls if call.id not in results]
        if missing:
            raise ValueError(f"answer every tool call first (no result yet for {', '.join(missing)})")
        kept = {call.id: redact(results[call.id]) for call in found.tool_calls}
        with self._begin() as conn:
            conn.execute(
                update(answers_table).where(answers_table.c.id == answer_id).values(tool_results=json.dumps(kept))
            )

    def set_context(self, answer_id: str, include: bool | None) -> None:
        """Send this answer as history (True), never (False), or by its status (None)."""
        with self._begin() as conn:
            conn.execute(update(answers_table).where(answers_table.c.id == answer_id).values(use_as_context=include))

    def set_vote(self, turn_id: str, winner: str | None, vote_id: str | None) -> None:
        """A comparison round's verdict (None clears it: its answers were regenerated)."""
        with self._begin() as conn:
            conn.execute(update(turns_table).where(turns_table.c.id == turn_id).values(vote=winner, vote_id=vote_id))

    def verdicts(self, records: Iterable[Any]) -> dict[str, tuple[str, str]]:
        """How comparison votes judged these attempts' answers, for the request log's exports
        (`RequestLog.export(verdicts=...)`): request_id -> (verdict, vote id), the verdict one
        of "best", "not best", "tie", "all bad". A vote judged the answers its round showed
        (each lane's chosen alternative), named by the labels they had."""
        wanted = sorted({r.request_id for r in records})
        a, t = answers_table.c, turns_table.c
        voted: set[str] = set()
        with self._begin() as conn:
            for start in range(0, len(wanted), 500):  # IN lists have limits
                voted.update(
                    conn.execute(
                        select(a.turn_id)
                        .join(turns_table, t.id == a.turn_id)
                        .where(t.vote.is_not(None), a.request_id.in_(wanted[start : start + 500]))
                    ).scalars()
                )
            rows = []
            ids = sorted(voted)
            for start in range(0, len(ids), 500):
                rows += (
                    conn.execute(
                        select(answers_table, t.vote, t.vote_id.label("turn_vote_id"))
                        .join(turns_table, t.id == a.turn_id)
                        .where(a.turn_id.in_(ids[start : start + 500]))
                    )
                    .mappings()
                    .all()
                )
        chosen = _selected_answers([_answer(row) for row in rows])
        verdict_of = {row["turn_id"]: (row["vote"], row["turn_vote_id"]) for row in rows}
        found: dict[str, tuple[str, str]] = {}
        for turn_id in voted:
            lanes = sorted(lane for (tid, lane) in chosen if tid == turn_id)
            shown = [chosen[(turn_id, lane)] for lane in lanes]
            labels = variant_labels([answer.variant for answer in shown])
            vote, vote_id = verdict_of[turn_id]
            for answer, label in zip(shown, labels, strict=True):
                if answer.request_id is None:
                    continue
                if vote == "tie":
                    verdict = "tie"
                elif vote == "both_bad":
                    verdict = "all bad"
                else:
                    verdict = "best" if label == vote else "not best"
                found[answer.request_id] = (verdict, vote_id or turn_id)
        return found

    def delete_turn(self, turn_id: str) -> bool:
        """Remove one exchange; the turns after it stay, attached to the turn before it."""
        t = turns_table.c
        with self._begin() as conn:
            row = conn.execute(select(turns_table).where(t.id == turn_id)).mappings().first()
            if row is None:
                return False
            live = conn.execute(
                select(func.count())
                .select_from(answers_table)
                .where(answers_table.c.turn_id == turn_id, answers_table.c.status == LIVE)
            ).scalar_one()
            if live:
                raise ValueError("this turn's answer is still streaming: stop it first")
            conn.execute(
                update(turns_table)
                .where(t.parent_id == turn_id)
                .values(parent_id=row["parent_id"], after_answer_id=row["after_answer_id"])
            )
            conn.execute(delete(answers_table).where(answers_table.c.turn_id == turn_id))
            conn.execute(delete(turn_attachments_table).where(turn_attachments_table.c.turn_id == turn_id))
            _forget_unused_attachments(conn)
            conn.execute(delete(turns_table).where(t.id == turn_id))
            self._touch(conn, row["session_id"])
            return True

    # --- reading a conversation -----------------------------------------------------------------

    def conversation(self, session_id: str) -> Conversation | None:
        """The session and the path through its turns that is shown (see the module docstring).
        A streaming answer whose worker stopped writing is marked interrupted on the way
        (a write only then: pages read this on every rerun)."""
        session = self.get(session_id)
        if session is None:
            return None
        rows = self._conversation_rows(session_id)
        cutoff = time.time() - STALE_S
        if any(r["status"] == LIVE and r["updated_ts"] < cutoff for r in rows[1]):
            self.interrupt_stale(session_id)
            rows = self._conversation_rows(session_id)
        turn_rows, answer_rows, attachment_rows = rows
        path = _path(turn_rows, [_answer(r) for r in answer_rows], single_lane=len(session.variants) == 1)
        refs: dict[str, list[AttachmentRef]] = {}
        for row in attachment_rows:
            refs.setdefault(row["turn_id"], []).append(
                AttachmentRef(row["sha256"], row["name"], row["media_type"], row["size"])
            )
        for turn in path:
            turn.attachments = refs.get(turn.id, [])
        return Conversation(session, path, load_attachment=self.attachment)

    def _conversation_rows(self, session_id: str) -> tuple[Sequence[Any], Sequence[Any], Sequence[Any]]:
        with self._begin() as conn:
            turn_rows = (
                conn.execute(
                    select(turns_table)
                    .where(turns_table.c.session_id == session_id)
                    .order_by(turns_table.c.created_ts, turns_table.c.id)
                )
                .mappings()
                .all()
            )
            answer_rows = (
                conn.execute(
                    select(answers_table)
                    .where(answers_table.c.session_id == session_id)
                    .order_by(answers_table.c.created_ts, answers_table.c.id)
                )
                .mappings()
                .all()
            )
            ta, at = turn_attachments_table.c, attachments_table.c
            attachment_rows = (  # names and sizes only: the bytes are read when sent or shown
                conn.execute(
                    select(ta.turn_id, ta.sha256, ta.name, at.media_type, at.size)
                    .join(attachments_table, at.sha256 == ta.sha256)
                    .join(turns_table, turns_table.c.id == ta.turn_id)
                    .where(turns_table.c.session_id == session_id)
                    .order_by(ta.turn_id, ta.position)
                )
                .mappings()
                .all()
            )
        return turn_rows, answer_rows, attachment_rows


class _Transaction:
    """engine.begin(), holding the memory store's lock for the whole transaction."""

    def __init__(self, engine: Engine, lock: Any) -> None:
        self._engine, self._lock = engine, lock
        self._context: Any = None

    def __enter__(self):
        self._lock.__enter__()
        try:
            self._context = self._engine.begin()
            return self._context.__enter__()
        except BaseException:
            self._lock.__exit__(None, None, None)
            raise

    def __exit__(self, *exc: Any) -> Any:
        try:
            return self._context.__exit__(*exc)
        finally:
            self._lock.__exit__(None, None, None)


def keep_attachments(
    conn: Any, uses: Table, owner_id: str, attachments: Sequence[Attachment], moment: datetime
) -> None:
    """An owner's attachments (a turn's, a blind round's): each one's bytes stored once (by
    hash), the owner's references in order in `uses` (whose first column names the owner)."""
    for position, attachment in enumerate(attachments):
        keep_bytes(conn, attachment, moment)
        owner = uses.c[0].name
        ref = attachment.ref
        conn.execute(
            insert(uses).values({owner: owner_id, "position": position, "sha256": ref.sha256, "name": ref.name})
        )


def keep_bytes(conn: Any, attachment: Attachment, moment: datetime) -> None:
    """An attachment's bytes in `attachments`, once per content (nothing when they are there)."""
    at = attachments_table.c
    ref = attachment.ref
    known = conn.execute(select(at.sha256).where(at.sha256 == ref.sha256)).first()
    if known is None:
        # Two sessions attaching the same file at the same moment: the second insert finds it.
        conn.execute(
            _insert_new(conn, attachments_table).values(
                sha256=ref.sha256, media_type=ref.media_type, size=ref.size, data=attachment.data, created_at=moment
            )
        )


def attachments_of(conn: Any, uses: Table, owner_id: str) -> list[Attachment]:
    """An owner's attachments with their bytes, in order."""
    at = attachments_table.c
    rows = conn.execute(
        select(uses.c.sha256, uses.c.name, at.media_type, at.size, at.data)
        .join(attachments_table, at.sha256 == uses.c.sha256)
        .where(uses.c[0] == owner_id)
        .order_by(uses.c.position)
    ).all()
    return [Attachment(AttachmentRef(r.sha256, r.name, r.media_type, r.size), bytes(r.data)) for r in rows]


def _insert_new(conn: Any, table: Table) -> Any:
    """INSERT that leaves an existing row (same primary key) as it is, on SQLite and PostgreSQL."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).on_conflict_do_nothing()
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table).on_conflict_do_nothing()


def _forget_unused_attachments(conn: Any) -> None:
    """Drop the bytes no turn references any more (a deleted turn or session was their last)."""
    used = [select(table.c.sha256) for table in _ATTACHMENT_USES]
    conn.execute(delete(attachments_table).where(*[attachments_table.c.sha256.not_in(u) for u in used]))


def _answer(row: Any) -> Answer:
    return Answer(
        id=row["id"],
        turn_id=row["turn_id"],
        lane=row["lane"],
        variant=Variant.model_validate_json(row["variant"]),
        status=row["status"],
        content=row["content"] or "",
        notice=row["notice"],
        error_type=row["error_type"],
        error_message=row["error_message"],
        request_id=row["request_id"],
        response=ChatResponse.model_validate_json(row["response"]) if row["response"] else None,
        attempts=[Attempt.model_validate(a) for a in json.loads(row["attempts"])] if row["attempts"] else [],
        use_as_context=row["use_as_context"],
        created_at=row["created_at"],
        updated_ts=row["updated_ts"],
        elapsed_ms=row["elapsed_ms"],
        first_text_ms=row["first_text_ms"],
        selected_ts=row["selected_ts"],
        tool_calls=[ToolCall.model_validate(c) for c in json.loads(row["tool_calls"])] if row["tool_calls"] else [],
        tool_results=json.loads(row["tool_results"]) if row["tool_results"] else {},
    )


def _calls_json(calls: Sequence[ToolCall]) -> str:
    # Its strings redacted, as the response's are (arguments are model text and may echo a key).
    return json.dumps(redact_json([c.model_dump(mode="json") for c in calls]))


def _path(turn_rows: Sequence[Any], answers: Sequence[Answer], *, single_lane: bool) -> list[Turn]:
    """Walk the tree from the root, taking at each fork the most recently chosen branch; in a
    single-lane session, only the turns that followed the chosen answer continue the path."""
    by_turn: dict[str, list[Answer]] = {}
    for answer in answers:
        by_turn.setdefault(answer.turn_id, []).append(answer)
    children: dict[str | None, list[Any]] = {}
    for row in turn_rows:
        children.setdefault(row["parent_id"], []).append(row)
    known_turns = {row["id"] for row in turn_rows}
    # A turn whose parent was removed by other means (never by this module) joins the root.
    for missing in [p for p in children if p is not None and p not in known_turns]:
        children.setdefault(None, []).extend(children.pop(missing))
    selected_ts = {row["id"]: row["selected_ts"] for row in turn_rows}
    answer_selected = _selected_answers(answers)

    path: list[Turn] = []
    parent: str | None = None
    followed: str | None = None
    seen: set[str] = set()
    while True:
        options = children.get(parent, [])
        if single_lane and parent is not None:
            options = [row for row in options if row["after_answer_id"] in (None, followed)]
        if not options:
            break
        row = max(options, key=lambda r: (selected_ts[r["id"]], r["created_ts"], r["id"]))
        if row["id"] in seen:  # a cycle cannot be made through this API; never loop on one
            break
        seen.add(row["id"])
        slot = [r["id"] for r in options if r["after_answer_id"] == row["after_answer_id"]]
        turn = Turn(
            row["id"],
            row["parent_id"],
            row["after_answer_id"],
            row["prompt"],
            row["created_at"],
            row["vote"],
            row["vote_id"],
            continues=bool(row["continues"]),
        )
        turn.branches = slot
        for answer in by_turn.get(row["id"], []):
            turn.alternatives.setdefault(answer.lane, []).append(answer)
        for lane in turn.alternatives:
            turn.chosen[lane] = answer_selected[(row["id"], lane)]
        path.append(turn)
        parent = row["id"]
        followed = turn.chosen[0].id if 0 in turn.chosen else None
    return path


def _selected_answers(answers: Sequence[Answer]) -> dict[tuple[str, int], Answer]:
    """Per (turn, lane), the most recently chosen alternative."""
    best: dict[tuple[str, int], Answer] = {}
    for answer in answers:
        key = (answer.turn_id, answer.lane)
        current = best.get(key)
        if current is None or (answer.selected_ts, answer.created_at, answer.id) > (
            current.selected_ts,
            current.created_at,
            current.id,
        ):
            best[key] = answer
    return best
