"""The blind arena: 2-4 variants answer one prompt as A, B, C, D in a random order; a person
votes (one best, a tie, or all bad); then the names are revealed. Every vote feeds the
Bradley–Terry leaderboard (`ratings.py`).

    arena = Arena(conductor.log)
    match = arena.start(prompt, variants)                 # BlindMatch: an id and letters, no names
    for event in arena.answers(conductor, match.id):      # BlindEvent: a letter and text, no names
        ...
    reveal = arena.vote(match.id, "B")                    # or "tie" / "all_bad": then the names
    arena.leaderboard()                                   # ratings over every blind vote

Blindness is kept on the server side: which letter is which variant lives only in the
database (shuffled with the `secrets` generator) until the vote. What a page gets before the
vote — `BlindMatch`, `BlindEvent` — carries letters, text and whether an answer failed, never
a provider, a model, an error message (they name the provider) or figures (a latency can give
a local model away). `reveal()` refuses until the match is voted.

Stop: `stop()` closes the answers still coming (stored as cancelled at once, so every page and
process sees the round end); the process answering them cancels their upstream calls (within
`POLL_S` in its own process, `REMOTE_POLL_S` from another), the log records those attempts as
cancelled, and what had arrived is kept. The process answering a round holds its lease
(`store/leases.py`) until every answer is stored; a round with answers pending and no lease
held was cut off by a dead server, and `close_if_abandoned()` closes it the same way.

What a vote judges: the answers that arrived complete. A failed, cut or cancelled answer is
not part of the verdict (reliability is measured elsewhere, from the request log); a vote
needs at least two complete answers. The vote is stored with the `request_id` of every answer
it judged, so each verdict links to its rows in the request log.

Tables:

    arena_matches  id, created_at/_ts, prompt, status (open / voted), choice (a letter, tie,
                   all_bad), voted_at/_ts, judged (JSON list of request_ids)
    arena_answers  (match_id, slot) -> variant (JSON), label, target (provider/model that
                   answered), status (pending / ok / error / incomplete / cancelled),
                   request_id, answer, latency_ms, ttft_ms, cost_usd, error_type
                   ("cancelled" when stopped, "interrupted" when its server died)
"""

from __future__ import annotations

import json
import logging
import queue
import secrets
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import Column, Double, Index, Integer, MetaData, String, Table, insert, select, update

from ..config import redact
from ..errors import ProviderError
from ..models import ChatMessage, MessageRole, StreamDone, StreamIncomplete, TextDelta, new_id, utcnow
from ..store import RequestLog, SafeText, UTCDateTime
from ..store.leases import Lease, leases_for
from . import sessions as _sessions
from .attachments import Attachment, AttachmentRef, message_parts
from .experiments import _variant
from .ratings import Judgement, Leaderboard, fit_ratings
from .streaming import REMOTE_POLL_S, stoppable_events
from .variants import Variant, variant_labels

__all__ = [
    "Arena",
    "ArenaError",
    "BlindMatch",
    "BlindEvent",
    "BlindAnswer",
    "Reveal",
    "RevealedAnswer",
    "LETTERS",
    "metadata",
]

log = logging.getLogger("conductor.arena")

LETTERS = "ABCD"
Choice = Literal["A", "B", "C", "D", "tie", "all_bad"]
AnswerStatus = Literal["pending", "ok", "error", "incomplete", "cancelled"]


class ArenaError(ValueError):
    pass


metadata = MetaData()

matches_table = Table(
    "arena_matches",
    metadata,
    Column("id", String(), primary_key=True),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("created_ts", Double(), nullable=False),
    Column("prompt", SafeText(), nullable=False),
    Column("status", String(), nullable=False),
    Column("choice", String()),
    Column("voted_at", UTCDateTime()),
    Column("voted_ts", Double()),
    Column("judged", SafeText()),
    Index("ix_arena_matches_voted_ts", "voted_ts"),
)

answers_table = Table(
    "arena_answers",
    metadata,
    Column("match_id", String(), primary_key=True),
    Column("slot", Integer(), primary_key=True),
    Column("variant", SafeText(), nullable=False),
    Column("label", SafeText(), nullable=False),
    Column("target", String(), nullable=False),
    Column("status", String(), nullable=False),
    Column("request_id", String()),
    Column("answer", SafeText()),
    Column("latency_ms", Double()),
    Column("ttft_ms", Double()),
    Column("cost_usd", Double()),
    Column("error_type", String()),
)


class BlindMatch(BaseModel):
    """What a page may show before the vote."""

    model_config = ConfigDict(frozen=True)

    id: str
    prompt: str
    letters: tuple[str, ...]
    #: The prompt's images and PDFs, in order (their bytes: `Arena.attachments`).
    attachments: tuple[AttachmentRef, ...] = ()


class BlindEvent(BaseModel):
    """A piece of one anonymous answer. `finished` is set once, with `failed` when the answer
    did not arrive complete (no reason is given before the vote: it would name the provider)."""

    letter: str
    text: str | None = None
    finished: bool = False
    failed: bool = False


BlindState = Literal["pending", "ok", "failed", "stopped"]
#: A stored status as a page may see it before the vote (any other status: "failed").
_BLIND_STATES: dict[str, BlindState] = {"pending": "pending", "ok": "ok", "cancelled": "stopped"}


class BlindAnswer(BaseModel):
    """One letter's stored answer before the vote: text and whether it can be voted for
    ("stopped": by Stop, or by the death of the server answering it; not the provider's doing)."""

    letter: str
    text: str | None
    state: BlindState


class RevealedAnswer(BaseModel):
    letter: str
    label: str = Field(description="The variant's label, saying what differs between twins.")
    target: str = Field(description="provider/model that answered.")
    variant: Variant
    status: AnswerStatus
    request_id: str | None
    answer: str | None
    latency_ms: float | None
    ttft_ms: float | None
    cost_usd: float | None
    error_type: str | None
    judged: bool = Field(description="Part of the verdict (a complete answer).")


class Reveal(BaseModel):
    match_id: str
    prompt: str
    choice: Choice
    voted_at: datetime
    answers: list[RevealedAnswer]

    @property
    def winner(self) -> RevealedAnswer | None:
        return next((a for a in self.answers if a.letter == self.choice), None)

    def describe(self) -> str:
        if self.choice == "tie":
            return "a tie between " + ", ".join(a.label for a in self.answers if a.judged)
        if self.choice == "all_bad":
            return "all bad: " + ", ".join(a.label for a in self.answers if a.judged)
        winner = self.winner
        return f"{self.choice} was {winner.label}" if winner else self.choice


class Arena:
    """Blind matches and their votes, in the request log's database. Thread-safe."""

    def __init__(self, log: RequestLog) -> None:
        self.engine = log.engine
        self.keeps_text = log.log_prompts
        self._leases = leases_for(log.engine)
        self._stops: dict[str, threading.Event] = {}  # rounds answered here: match -> its Stop
        self._stops_lock = threading.Lock()
        log.require_tables(metadata)
        log.require_tables(_sessions.metadata)  # where attachments are kept

    def start(self, prompt: str, variants: Sequence[Variant], attachments: Sequence[Attachment] = ()) -> BlindMatch:
        """A new round; `attachments` (images, PDFs) go after the prompt to every contestant,
        which must all be able to read them (the page draws them among those that can)."""
        if not prompt.strip() and not attachments:
            raise ArenaError("write a prompt first")
        if not 2 <= len(variants) <= 4:
            raise ArenaError(f"a blind match takes 2 to 4 contestants, got {len(variants)}")
        if any(v.provider == "auto" for v in variants):
            raise ArenaError("each contestant names a provider: 'auto' is not a contestant")
        order = list(range(len(variants)))
        secrets.SystemRandom().shuffle(order)  # slot -> variant; stored, never shown before the vote
        labels = variant_labels(variants)
        now = utcnow()
        match = BlindMatch(
            id=new_id("arena"),
            prompt=prompt,
            letters=tuple(LETTERS[: len(variants)]),
            attachments=tuple(a.ref for a in attachments),
        )
        with self.engine.begin() as conn:
            _sessions.keep_attachments(conn, _sessions.match_attachments_table, match.id, attachments, now)
            conn.execute(
                insert(matches_table),
                {"id": match.id, "created_at": now, "created_ts": now.timestamp(), "prompt": prompt, "status": "open"},
            )
            conn.execute(
                insert(answers_table),
                [
                    {
                        "match_id": match.id,
                        "slot": slot,
                        "variant": json.dumps(variants[chosen].model_dump(mode="json")),
                        "label": labels[chosen],
                        "target": variants[chosen].target,
                        "status": "pending",
                    }
                    for slot, chosen in enumerate(order)
                ],
            )
        return match

    def match(self, match_id: str) -> BlindMatch:
        row, answers = self._load(match_id)
        return BlindMatch(
            id=match_id,
            prompt=row["prompt"],
            letters=tuple(LETTERS[a["slot"]] for a in answers),
            attachments=tuple(a.ref for a in self.attachments(match_id)),
        )

    def attachments(self, match_id: str) -> list[Attachment]:
        """The round's images and PDFs with their bytes, in order."""
        with self.engine.connect() as conn:
            return _sessions.attachments_of(conn, _sessions.match_attachments_table, match_id)

    def blind_answers(self, match_id: str) -> list[BlindAnswer]:
        """Each letter's answer as stored so far, with no name, figure or error message (a
        page draws a round from this after a reload)."""
        row, slots = self._load(match_id)
        return [
            BlindAnswer(
                letter=LETTERS[a["slot"]],
                text=a["answer"],
                state=_BLIND_STATES.get(a["status"], "failed"),
            )
            for a in slots
        ]

    def voted(self, match_id: str) -> bool:
        return self._load(match_id)[0]["status"] == "voted"

    def finished(self, match_id: str) -> bool:
        """Whether every answer has arrived, failed or been cancelled (a vote may be cast)."""
        return all(a["status"] != "pending" for a in self._load(match_id)[1])

    def claim(self, match_id: str) -> Lease:
        """The round's lease, for the process that will answer it: take it before the answers
        start (`answers(lease=...)` lets it go when they are all stored), so the round never
        looks abandoned in between."""
        return self._leases.hold(_round_lease(match_id))

    def answering(self, match_id: str) -> bool:
        """Whether a live process (this one included) is answering the round."""
        return self._leases.held(_round_lease(match_id))

    def answers(
        self,
        conductor: Any,
        match_id: str,
        *,
        overrides: Mapping[str, Any] | None = None,
        lease: Lease | None = None,
    ) -> Iterator[BlindEvent]:
        """Stream every contestant at once; events are tagged by letter only. Each answer is
        stored as it finishes. `stop()` (from any process), or closing the iterator early (a
        rerun, a closed tab), cancels the calls in flight (the log says cancelled) and stores
        those answers as cancelled. `lease`: the round's, from `claim()` (taken here if None)."""
        try:
            row, slots = self._load(match_id)
            if row["status"] != "open" or any(a["status"] != "pending" for a in slots):
                raise ArenaError("this match has already been answered")
            lease = lease or self.claim(match_id)
        except BaseException:
            if lease is not None:
                lease.release()
            raise
        prompt = row["prompt"]
        attached = self.attachments(match_id)
        message = (
            ChatMessage(role=MessageRole.user, parts=message_parts(prompt, attached))
            if attached
            else ChatMessage(role=MessageRole.user, content=prompt)
        )
        events: queue.Queue[BlindEvent | None] = queue.Queue()
        stop = threading.Event()
        with self._stops_lock:
            self._stops[match_id] = stop
        running = [len(slots)]
        running_lock = threading.Lock()

        def all_stored() -> None:
            # The last contestant to finish lets the round go: no answer of it is pending any more.
            with running_lock:
                running[0] -= 1
                if running[0]:
                    return
            with self._stops_lock:
                if self._stops.get(match_id) is stop:
                    del self._stops[match_id]
            lease.release()

        def contest(slot: dict[str, Any]) -> None:
            letter = LETTERS[slot["slot"]]
            variant = _variant(json.loads(slot["variant"]))
            result: dict[str, Any] = {"status": "error"}
            try:
                result = self._answer(
                    conductor,
                    variant,
                    message,
                    overrides,
                    self._stopped(match_id, slot["slot"], stop),
                    lambda t: events.put(BlindEvent(letter=letter, text=t)),
                )
            except Exception:
                log.exception("arena contestant %s crashed", letter)
                result = {"status": "error", "error_type": "internal"}
            finally:
                try:
                    self._store_answer(match_id, slot["slot"], result)
                except Exception:
                    log.exception("arena answer %s of %s could not be stored", letter, match_id)
                all_stored()
                events.put(BlindEvent(letter=letter, finished=True, failed=result["status"] != "ok"))
                events.put(None)

        threads = [
            threading.Thread(target=contest, args=(slot,), daemon=True, name=f"arena-{slot['slot']}") for slot in slots
        ]
        for thread in threads:
            thread.start()
        waiting = len(threads)
        try:
            while waiting:
                item = events.get()
                if item is None:
                    waiting -= 1
                else:
                    yield item
        finally:
            stop.set()

    def stop(self, match_id: str) -> bool:
        """Stop the answers still coming: stored as cancelled now (every page sees the round
        end); their calls are cancelled by the process answering them. True if any was."""
        stopped = self._close_pending(match_id, "cancelled")
        with self._stops_lock:
            stop = self._stops.get(match_id)
        if stop is not None:
            stop.set()
        return stopped

    def close_if_abandoned(self, match_id: str) -> bool:
        """Close a round cut off by a dead server: answers pending and no live process holding
        the round. Its pending answers are stored as cancelled ("interrupted"). True if it was."""
        _row, slots = self._load(match_id)
        if not any(a["status"] == "pending" for a in slots) or self.answering(match_id):
            return False
        return self._close_pending(match_id, "interrupted")

    def _close_pending(self, match_id: str, why: str) -> bool:
        a = answers_table.c
        with self.engine.begin() as conn:
            closed = conn.execute(
                update(answers_table)
                .where(a.match_id == match_id, a.status == "pending")
                .values(status="cancelled", error_type=why)
            ).rowcount
        return bool(closed)

    def _stopped(self, match_id: str, slot: int, stop: threading.Event) -> Callable[[], bool]:
        """Whether this answer was stopped: here at once, from another process as its row says
        (read at most every `REMOTE_POLL_S`)."""
        checked = [time.monotonic()]

        def stopped() -> bool:
            if stop.is_set():
                return True
            if time.monotonic() - checked[0] >= REMOTE_POLL_S:
                checked[0] = time.monotonic()
                a = answers_table.c
                with self.engine.connect() as conn:
                    status = conn.execute(select(a.status).where(a.match_id == match_id, a.slot == slot)).scalar()
                if status != "pending":
                    stop.set()
            return stop.is_set()

        return stopped

    @staticmethod
    def _answer(
        conductor: Any,
        variant: Variant,
        message: ChatMessage,
        overrides: Mapping[str, Any] | None,
        stopped: Callable[[], bool],
        emit: Any,
    ) -> dict[str, Any]:
        request = variant.request([message])
        request_id = new_id("req")  # given to the core: a stopped answer still names its log rows
        events = stoppable_events(conductor, request, overrides=overrides, request_id=request_id, stopped=stopped)
        parts: list[str] = []
        try:
            for event in events:
                if isinstance(event, TextDelta):
                    parts.append(event.text)
                    emit(event.text)
                elif isinstance(event, (StreamDone, StreamIncomplete)):
                    response = event.response if isinstance(event, StreamDone) else event.partial
                    a = response.analytics
                    return {
                        "status": "ok" if isinstance(event, StreamDone) else "incomplete",
                        "request_id": response.metadata.id,
                        "target": f"{response.metadata.provider}/{response.metadata.model}",
                        "answer": response.content,
                        "latency_ms": a.latency_ms,
                        "ttft_ms": a.time_to_first_token_ms,
                        "cost_usd": a.cost_usd,
                        "error_type": None if isinstance(event, StreamDone) else event.error.type,
                    }
            if stopped():
                return {
                    "status": "cancelled",
                    "request_id": request_id,
                    "answer": "".join(parts) or None,
                    "error_type": "cancelled",
                }
            return {"status": "error", "request_id": request_id, "error_type": "incomplete"}
        except ProviderError as error:
            return {
                "status": "error",
                "request_id": getattr(error, "request_id", None) or request_id,
                "error_type": error.type,
            }
        finally:
            events.close()

    def _store_answer(self, match_id: str, slot: int, result: dict[str, Any]) -> None:
        values = dict(result)
        if values.get("answer") is not None:
            values["answer"] = redact(values["answer"]) if self.keeps_text else None
        a = answers_table.c
        with self.engine.begin() as conn:
            stored = conn.execute(
                update(answers_table)
                .where(a.match_id == match_id, a.slot == slot, a.status == "pending")
                .values(**values)
            ).rowcount
            if not stored:
                # Stopped or closed first: that verdict stays; what arrived is kept with it.
                kept = {k: v for k, v in values.items() if k not in ("status", "error_type")}
                if kept:
                    conn.execute(update(answers_table).where(a.match_id == match_id, a.slot == slot).values(**kept))

    def vote(self, match_id: str, choice: str) -> Reveal:
        """Record the verdict, then reveal. `choice`: a letter of a complete answer, 'tie' or 'all_bad'."""
        row, slots = self._load(match_id)
        if row["status"] == "voted":
            raise ArenaError("this match already has a vote")
        if any(a["status"] == "pending" for a in slots):
            raise ArenaError("wait until every answer has arrived, then vote")
        complete = [a for a in slots if a["status"] == "ok"]
        if len(complete) < 2:
            raise ArenaError(
                "fewer than two answers arrived complete, so there is nothing to compare; start another match"
            )
        letters = {LETTERS[a["slot"]] for a in complete}
        if choice not in ("tie", "all_bad") and choice not in letters:
            raise ArenaError(f"vote for one of {', '.join(sorted(letters))}, or 'tie', or 'all_bad'")
        now = utcnow()
        judged = [a["request_id"] for a in complete]
        m = matches_table.c
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(matches_table)
                .where(m.id == match_id, m.status == "open")
                .values(
                    status="voted", choice=choice, voted_at=now, voted_ts=now.timestamp(), judged=json.dumps(judged)
                )
            ).rowcount
        if not changed:
            raise ArenaError("this match already has a vote")
        return self.reveal(match_id)

    def reveal(self, match_id: str) -> Reveal:
        row, slots = self._load(match_id)
        if row["status"] != "voted":
            raise ArenaError("vote first: the names are revealed after the vote")
        return Reveal(
            match_id=match_id,
            prompt=row["prompt"],
            choice=row["choice"],
            voted_at=row["voted_at"],
            answers=[self._revealed(a) for a in slots],
        )

    def unjudgeable(self, match_id: str) -> list[RevealedAnswer]:
        """The names of a match that can take no vote: every answer ended, fewer than two
        complete (so nothing blind is left to protect). Refuses any other open match."""
        row, slots = self._load(match_id)
        if row["status"] == "voted":
            return self.reveal(match_id).answers
        if any(a["status"] == "pending" for a in slots) or sum(a["status"] == "ok" for a in slots) >= 2:
            raise ArenaError("vote first: the names are revealed after the vote")
        return [self._revealed(a) for a in slots]

    @staticmethod
    def _revealed(a: dict[str, Any]) -> RevealedAnswer:
        return RevealedAnswer(
            letter=LETTERS[a["slot"]],
            label=a["label"],
            target=a["target"],
            variant=_variant(json.loads(a["variant"])),
            status=a["status"],
            request_id=a["request_id"],
            answer=a["answer"],
            latency_ms=a["latency_ms"],
            ttft_ms=a["ttft_ms"],
            cost_usd=a["cost_usd"],
            error_type=a["error_type"],
            judged=a["status"] == "ok",
        )

    def sent_for(self, request_id: str) -> tuple[Variant, str] | None:
        """The contestant's variant and the round's prompt behind a logged request (replay), or None."""
        a, m = answers_table.c, matches_table.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(a.variant, m.prompt).join(matches_table, m.id == a.match_id).where(a.request_id == request_id)
            ).first()
        return None if row is None else (_variant(json.loads(row[0])), row[1])

    def _load(self, match_id: str) -> tuple[Any, list[dict[str, Any]]]:
        with self.engine.connect() as conn:
            row = conn.execute(select(matches_table).where(matches_table.c.id == match_id)).mappings().first()
            if row is None:
                raise ArenaError(f"no match {match_id!r}")
            slots = (
                conn.execute(
                    select(answers_table).where(answers_table.c.match_id == match_id).order_by(answers_table.c.slot)
                )
                .mappings()
                .all()
            )
        return row, [dict(s) for s in slots]

    # --- ratings -------------------------------------------------------------------------

    def judgements(self, *, by: Literal["target", "provider", "label"] = "target") -> list[Judgement]:
        """Every blind vote, oldest first, as the subjects it judged and the winner.
        `by`: rate each provider/model ("target"), each provider, or each variant label."""
        m, a = matches_table.c, answers_table.c
        stmt = (
            select(m.id, m.choice, a.slot, a.target, a.label)
            .join(answers_table, a.match_id == m.id)
            .where(m.status == "voted", a.status == "ok")
            .order_by(m.voted_ts, m.id, a.slot)
        )
        found: dict[str, tuple[str, dict[str, str]]] = {}
        with self.engine.connect() as conn:
            for match_id, choice, slot, target, label in conn.execute(stmt):
                subject = {"target": target, "provider": target.split("/", 1)[0], "label": label}[by]
                found.setdefault(match_id, (choice, {}))[1][LETTERS[slot]] = subject
        judgements = []
        for choice, subjects in found.values():
            if len(set(subjects.values())) < 2:
                continue  # the same subject twice judges nothing about it
            winner = subjects.get(choice)
            judgements.append(Judgement(subjects=tuple(subjects.values()), winner=winner))
        return judgements

    def verdicts(self, records: Sequence[Any]) -> dict[str, tuple[str, str]]:
        """How blind votes judged these attempts' answers, for the request log's exports
        (`RequestLog.export(verdicts=arena.verdicts)`): request_id -> (verdict, match id), the
        verdict one of "best", "not best", "tie", "all bad"."""
        wanted = {r.request_id for r in records}
        if not wanted:
            return {}
        m, a = matches_table.c, answers_table.c
        stmt = (
            select(a.request_id, a.slot, m.id, m.choice)
            .join(matches_table, m.id == a.match_id)
            .where(m.status == "voted", a.status == "ok", a.request_id.is_not(None))
        )
        found: dict[str, tuple[str, str]] = {}
        with self.engine.connect() as conn:
            # Chunks of ids: IN lists have limits (SQLite's is 32,766 parameters).
            ids = sorted(wanted)
            for start in range(0, len(ids), 500):
                for request_id, slot, match_id, choice in conn.execute(
                    stmt.where(a.request_id.in_(ids[start : start + 500]))
                ):
                    if choice == "tie":
                        verdict = "tie"
                    elif choice == "all_bad":
                        verdict = "all bad"
                    else:
                        verdict = "best" if LETTERS[slot] == choice else "not best"
                    found[request_id] = (verdict, match_id)
        return found

    def votes(self, *, limit: int = 50) -> list[Reveal]:
        """The newest votes first, revealed (for a history list or an export)."""
        stmt = (
            select(matches_table.c.id)
            .where(matches_table.c.status == "voted")
            .order_by(matches_table.c.voted_ts.desc())
            .limit(limit)
        )
        with self.engine.connect() as conn:
            ids = conn.execute(stmt).scalars().all()
        return [self.reveal(match_id) for match_id in ids]

    def leaderboard(
        self,
        *,
        by: Literal["target", "provider", "label"] = "target",
        min_votes: int = 10,
        rounds: int = 200,
        seed: int = 0,
    ) -> Leaderboard:
        return fit_ratings(self.judgements(by=by), min_votes=min_votes, rounds=rounds, seed=seed)


def _round_lease(match_id: str) -> str:
    return f"arena-round:{match_id}"
