"""Answers stream in background threads owned by the process, not by a page.

Streamlit reruns a page's script on every click and abandons whatever it was doing, so an
answer streamed by the page itself is lost when the person clicks elsewhere, switches page
or reloads. Here each answer is read from `Conductor.stream` by a worker thread that writes
its progress to the `SessionStore` (a few times a second); pages only read the store. An
answer therefore completes whatever the page does, and any tab (or process, on
PostgreSQL) shows its true state.

Stop marks the answer "stopped" in the store at once. Its worker, wherever it runs, sees
that within `POLL_S` (its own process) or `REMOTE_POLL_S` (a Stop clicked on another
replica, read from the store), even while it waits for the first token: it cancels the
core's stream on the core's event loop, which closes the provider's stream and records the
attempt as cancelled, then saves what had arrived. Each answer carries its own request id
(given to the core), so its log rows are found from it whatever happened. A worker that
dies with its process leaves an answer whose heartbeat goes stale: the store then reports
it "interrupted", with its partial text.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import logging
import threading
import time
import weakref
from collections.abc import Callable, Generator, Mapping
from typing import Any

from .. import aio
from ..errors import ProviderError
from ..models import (
    ChatRequest,
    FunctionCall,
    StatusNotice,
    StreamDone,
    StreamIncomplete,
    TextDelta,
    ToolCall,
    ToolCallDelta,
    new_id,
)
from .sessions import LIVE, STALE_S, SessionStore

__all__ = ["AnswerWorker", "FLUSH_S", "HEARTBEAT_S", "POLL_S", "REMOTE_POLL_S", "stoppable_events"]

log = logging.getLogger("conductor.workbench")

#: Most time between two writes of an answer's text while it streams.
FLUSH_S = 0.2
#: A worker waiting for text (a model loading, a slow first token) still says it is alive this often.
HEARTBEAT_S = min(5.0, STALE_S / 4)
#: How often a worker waiting for the next piece checks for a Stop from its own process...
POLL_S = 0.1
#: ...and from another process (a read of the answer's row).
REMOTE_POLL_S = 1.0

_workers: weakref.WeakSet[AnswerWorker] = weakref.WeakSet()

#: What `stoppable_events(quiet=True)` yields when no piece came within `POLL_S`: a moment to
#: write text that arrived just before an upstream paused (it would otherwise wait for the next piece).
_QUIET = object()


@atexit.register
def _interrupt_on_exit() -> None:
    # A process that ends mid-answer says so at once instead of waiting for the heartbeat.
    for worker in list(_workers):
        worker.close()


class AnswerWorker:
    """Streams answers into a `SessionStore`. Thread-safe; one per process."""

    def __init__(
        self, conductor: Any, store: SessionStore, *, flush_s: float = FLUSH_S, heartbeat_s: float = HEARTBEAT_S
    ) -> None:
        self.conductor = conductor
        self.store = store
        self.flush_s = flush_s
        self.heartbeat_s = heartbeat_s
        self._lock = threading.Lock()
        self._jobs: dict[str, tuple[threading.Thread, threading.Event]] = {}
        self._beating = threading.Event()
        self._closed = False
        self._heart: threading.Thread | None = None
        _workers.add(self)

    # --- public ---------------------------------------------------------------------------

    def start(self, answer_id: str, request: ChatRequest, overrides: Mapping[str, Any] | None = None) -> None:
        """Stream `request` into the answer `answer_id` (a streaming row the store made)."""
        stop = threading.Event()
        thread = threading.Thread(
            target=self._run,
            args=(answer_id, request, dict(overrides or {}), stop),
            name=f"answer-{answer_id}",
            daemon=True,
        )
        with self._lock:
            if self._closed:
                raise RuntimeError("the answer worker is closed")
            self._jobs[answer_id] = (thread, stop)
            self._start_heartbeat()
        thread.start()

    def stop(self, answer_id: str) -> bool:
        """Stop an answer, whichever process streams it. True if it was still streaming."""
        stopped = self.store.stop(answer_id)
        with self._lock:
            job = self._jobs.get(answer_id)
        if job is not None:
            job[1].set()
        return stopped

    def running(self) -> set[str]:
        with self._lock:
            return set(self._jobs)

    def wait(self, answer_id: str, timeout: float | None = None) -> bool:
        """Until this process's worker for `answer_id` has finished (True), or `timeout`."""
        with self._lock:
            job = self._jobs.get(answer_id)
        if job is None:
            return True
        job[0].join(timeout)
        return not job[0].is_alive()

    def wait_all(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for answer_id in list(self.running()):
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self.wait(answer_id, left):
                return False
        return True

    def close(self) -> None:
        """Stop taking work; answers still streaming are marked interrupted."""
        with self._lock:
            self._closed = True
            jobs = dict(self._jobs)
        for _, stop in jobs.values():
            stop.set()
        try:
            self.store.interrupt(jobs)
        except Exception:  # noqa: BLE001 - at exit the database may be gone already
            log.warning("could not mark %d streaming answers interrupted", len(jobs))
        self._beating.set()

    # --- the work -------------------------------------------------------------------------------

    def _stopped(self, answer_id: str, stop: threading.Event) -> Callable[[], bool]:
        """Whether the answer was stopped: here at once, elsewhere as its row says (read at
        most every `REMOTE_POLL_S`)."""
        checked = [time.monotonic()]

        def stopped() -> bool:
            if stop.is_set():
                return True
            if time.monotonic() - checked[0] >= REMOTE_POLL_S:
                checked[0] = time.monotonic()
                found = self.store.answers([answer_id]).get(answer_id)
                if found is None or found.status != LIVE:
                    stop.set()
            return stop.is_set()

        return stopped

    def _run(self, answer_id: str, request: ChatRequest, overrides: dict[str, Any], stop: threading.Event) -> None:
        store = self.store
        started = time.perf_counter()
        first_text_ms: float | None = None
        parts: list[str] = []
        calls = _CallsSoFar()
        written = 0.0
        unwritten = False  # text arrived since the last write
        kept = True  # False once the store says the answer no longer streams (stopped, deleted)
        request_id = new_id("req")  # given to the core: the log's rows for this answer carry it
        store.link_request(answer_id, request_id)
        stopped = self._stopped(answer_id, stop)

        def elapsed() -> float:
            return round((time.perf_counter() - started) * 1000, 3)

        events = stoppable_events(
            self.conductor, request, overrides=overrides, request_id=request_id, stopped=stopped, quiet=True
        )
        try:
            for event in events:
                if event is _QUIET or isinstance(event, TextDelta | ToolCallDelta):
                    if isinstance(event, TextDelta | ToolCallDelta):
                        if first_text_ms is None:
                            first_text_ms = elapsed()
                        if isinstance(event, TextDelta):
                            parts.append(event.text)
                        else:
                            calls.add(event)
                        unwritten = True
                    # At most every flush_s while text comes; and what came last is written
                    # when the upstream pauses, not when (if ever) its next piece comes.
                    if unwritten and time.monotonic() - written >= self.flush_s:
                        kept = store.progress(answer_id, "".join(parts), tool_calls=calls.calls())
                        written = time.monotonic()
                        unwritten = False
                elif isinstance(event, StatusNotice):
                    kept = store.progress(answer_id, "".join(parts), notice=event.message, tool_calls=calls.calls())
                    written = time.monotonic()
                    unwritten = False
                elif isinstance(event, StreamDone):
                    response = event.response
                    store.finish(
                        answer_id,
                        "done",
                        content=response.content or "".join(parts),
                        response=response,
                        elapsed_ms=elapsed(),
                        first_text_ms=first_text_ms,
                    )
                    return
                elif isinstance(event, StreamIncomplete):
                    store.finish(
                        answer_id,
                        "incomplete",
                        content=event.partial.content or "".join(parts),
                        response=event.partial,
                        error_type=event.error.type,
                        error_message=event.error.message,
                        request_id=event.error.request_id or event.partial.metadata.id,
                        attempts=event.partial.routing.attempts,
                        elapsed_ms=elapsed(),
                        first_text_ms=first_text_ms,
                        tool_calls=calls.calls(),
                    )
                    return
                if not kept:
                    stop.set()
                    break
            # Stopped (here or in another process), deleted, or closed: keep what arrived.
            events.close()  # closes the provider's stream; the log records a cancelled attempt
            store.finish(
                answer_id,
                "stopped",
                content="".join(parts),
                request_id=request_id,
                elapsed_ms=elapsed(),
                first_text_ms=first_text_ms,
                tool_calls=calls.calls(),
            )
        except ProviderError as error:
            store.finish(
                answer_id,
                "error",
                content="".join(parts),
                error_type=error.type,
                error_message=error.message,
                request_id=getattr(error, "request_id", None) or request_id,
                attempts=getattr(error, "attempts", None) or (),
                elapsed_ms=elapsed(),
                first_text_ms=first_text_ms,
            )
        except Exception as exc:
            log.exception("answer %s failed unexpectedly", answer_id)
            from ..config import redact

            try:
                store.finish(
                    answer_id,
                    "error",
                    content="".join(parts),
                    error_type="unexpected",
                    error_message=f"Something went wrong: {redact(f'{type(exc).__name__}: {exc}')}",
                    elapsed_ms=elapsed(),
                    first_text_ms=first_text_ms,
                )
            except Exception:
                log.exception("could not record the failure of answer %s", answer_id)
        finally:
            events.close()
            with self._lock:
                self._jobs.pop(answer_id, None)

    def _start_heartbeat(self) -> None:
        if self._heart is not None and self._heart.is_alive():
            return
        self._heart = threading.Thread(target=self._beat, name="answer-heartbeat", daemon=True)
        self._heart.start()

    def _beat(self) -> None:
        while not self._beating.wait(self.heartbeat_s):
            ids = self.running()
            if not ids:
                continue
            try:
                self.store.heartbeat(ids)
            except Exception:
                log.warning("answer heartbeat failed", exc_info=True)


class _CallsSoFar:
    """Tool calls put together from their streamed pieces (`ToolCallDelta`), as far as they came."""

    def __init__(self) -> None:
        self._pieces: dict[int, dict[str, str]] = {}

    def add(self, piece: ToolCallDelta) -> None:
        call = self._pieces.setdefault(piece.index, {"id": "", "name": "", "arguments": ""})
        if piece.id:
            call["id"] = piece.id
        if piece.name:
            call["name"] = piece.name
        call["arguments"] += piece.arguments

    def calls(self) -> list[ToolCall]:
        # A piece may come before its call's id or name (never on OpenAI's wire): shown as "?".
        return [
            ToolCall(
                id=call["id"] or f"call_{index}",
                function=FunctionCall(name=call["name"] or "?", arguments=call["arguments"]),
            )
            for index, call in sorted(self._pieces.items())
        ]


def stoppable_events(
    conductor: Any,
    request: ChatRequest,
    *,
    overrides: Mapping[str, Any] | None,
    request_id: str,
    stopped: Callable[[], bool],
    quiet: bool = False,
) -> Generator[Any, None, None]:
    """The core's stream of `request` as a generator for the calling thread that ends as soon as
    `stopped()` says so, even between two pieces of text or before the first: the pending read
    is cancelled on the core's loop, which cancels the upstream call and records the attempt as
    cancelled. `stopped` is polled every `POLL_S`; with `quiet`, each poll that found no piece
    also yields `_QUIET`. (Used by the answer worker and the Arena.)"""
    core = getattr(conductor, "core", None)
    if core is None:  # a synchronous Conductor-like object (tests): stop between events
        events = conductor.stream(request, overrides=overrides or None, request_id=request_id)
        try:
            for event in events:
                yield event
                if stopped():
                    return
        finally:
            events.close()
        return
    stream = core.stream(request, overrides=overrides or None, request_id=request_id)
    loop = aio.loop()
    finished = False
    try:
        while True:
            future = asyncio.run_coroutine_threadsafe(_next(stream), loop)
            while True:
                try:
                    event = future.result(timeout=POLL_S)
                    break
                except concurrent.futures.TimeoutError:
                    if stopped():
                        future.cancel()
                        return
                    if quiet:
                        try:
                            yield _QUIET
                        except GeneratorExit:
                            future.cancel()
                            raise
                except StopAsyncIteration:
                    finished = True
                    return
                except BaseException:
                    finished = True  # the stream raised: it has finished its own clean-up
                    raise
            yield event
            if stopped():
                return
    finally:
        if not finished:
            closing = asyncio.run_coroutine_threadsafe(stream.aclose(), loop)
            try:
                closing.result(timeout=10)
            except Exception:  # noqa: BLE001 - a cancelled read may already have closed it
                pass


async def _next(stream: Any) -> Any:
    return await stream.__anext__()
