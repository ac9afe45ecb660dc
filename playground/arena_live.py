"""Blind rounds answered in the background, so a reload or a click elsewhere never cuts them.

`Arena.answers()` streams on the thread that reads it, and closing it cancels the calls: a
Streamlit rerun would do exactly that. So one `BlindRounds` per process (in
`st.cache_resource`) reads each round's stream on a daemon thread and keeps the text that
has arrived per letter, in memory. It claims the round's lease before that thread starts, so
no page (of any process) takes a round being answered for one a dead server left behind;
`stop()` is the page's Stop. The page draws from here while a round runs; once an
answer ends it is in the arena's tables (the source of truth after a reload or a restart).
Only letters and text are kept here, never which model answered: the page cannot leak it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from conductor_core.store.leases import Lease
from conductor_core.workbench.arena import Arena

__all__ = ["BlindRounds", "LiveRound"]

log = logging.getLogger("conductor.playground.arena")


@dataclass
class LiveRound:
    text: dict[str, str] = field(default_factory=dict)
    finished: dict[str, bool] = field(default_factory=dict)  # letter -> failed
    running: bool = True
    ended: float | None = None  # monotonic time the round's answers ended


class BlindRounds:
    """Thread-safe: every browser session of this process shares it."""

    def __init__(self, arena: Arena, conductor: Any) -> None:
        self.arena = arena
        self.conductor = conductor
        self._lock = threading.Lock()
        self._rounds: dict[str, LiveRound] = {}

    #: How long an ended round's text stays here (the page reads the tables by then).
    KEEP_ENDED_S = 60.0

    def launch(self, match_id: str, overrides: Mapping[str, Any] | None = None) -> None:
        with self._lock:
            now = time.monotonic()
            for gone in [
                k for k, r in self._rounds.items() if r.ended is not None and now - r.ended > self.KEEP_ENDED_S
            ]:
                del self._rounds[gone]
            if match_id in self._rounds:
                return
            self._rounds[match_id] = LiveRound()
        try:
            lease = self.arena.claim(match_id)
        except Exception:
            with self._lock:
                del self._rounds[match_id]
            raise
        threading.Thread(
            target=self._run, args=(match_id, dict(overrides or {}), lease), daemon=True, name=f"arena-{match_id}"
        ).start()

    def stop(self, match_id: str) -> bool:
        """Stop the round's answers still coming (whichever process answers them)."""
        return self.arena.stop(match_id)

    def live(self, match_id: str) -> LiveRound | None:
        """A copy of what has arrived, or None when this process is not answering the round."""
        with self._lock:
            found = self._rounds.get(match_id)
            if found is None:
                return None
            return LiveRound(text=dict(found.text), finished=dict(found.finished), running=found.running)

    def _run(self, match_id: str, overrides: dict[str, Any], lease: Lease) -> None:
        try:
            for event in self.arena.answers(self.conductor, match_id, overrides=overrides or None, lease=lease):
                with self._lock:
                    current = self._rounds[match_id]
                    if event.text:
                        current.text[event.letter] = current.text.get(event.letter, "") + event.text
                    if event.finished:
                        current.finished[event.letter] = event.failed
        except Exception:
            log.exception("blind round %s failed", match_id)
        finally:
            with self._lock:
                self._rounds[match_id].running = False
                self._rounds[match_id].ended = time.monotonic()
