"""A summary AUTO reads on every request, kept cheap on the hot path (the blind-vote ratings of
`preferred`, the prompts' pass rates of `evaluated`).

A request only reads what is cached. At most every `check_every_s` a request notices the cache
is due for a check and starts one in a background thread (never on the request's own thread or
event loop); the subclass's `refresh()` runs one small query for a signature and reloads only
when it changed, so every process sees another replica's writes a few seconds late at most.
The very first read loads synchronously once (so AUTO never says "nothing measured" merely
because the process just started); if that fails, the subclass's `_fallback()` says what to
read until a background check succeeds.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

__all__ = ["BackgroundRefreshed"]

log = logging.getLogger("conductor.refreshed")


class BackgroundRefreshed:
    #: What the cache holds, for log lines ("blind-vote ratings").
    what = "a cached summary"
    #: The background check's thread name (tests find it by this).
    thread_name = "conductor-refresh"

    def __init__(self, *, check_every_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._check_every_s = check_every_s
        self._clock = clock
        self._lock = threading.Lock()
        self._checked = float("-inf")
        self._checking = False

    def refresh(self) -> bool:
        """Check now, on this thread; reload when the signature changed (True: reloaded). Sets
        `self._checked = self._clock()` under the lock once it has checked."""
        raise NotImplementedError

    def _loaded(self) -> bool:
        raise NotImplementedError

    def _fallback(self) -> None:
        """After a failed first load, under the lock: something empty to read meanwhile."""
        raise NotImplementedError

    def _maybe_refresh(self) -> None:
        if not self._loaded():
            with self._lock:
                first = not self._loaded() and not self._checking
                if first:
                    self._checking = True
            if first:
                try:
                    self.refresh()
                except Exception:
                    log.exception("%s could not be read", self.what)
                    with self._lock:  # read empty until a background check succeeds
                        self._fallback()
                        self._checked = self._clock()
                finally:
                    with self._lock:
                        self._checking = False
            return
        if self._checking or self._clock() - self._checked < self._check_every_s:
            return  # the common case, read without the lock (a stale read only delays a check)
        with self._lock:
            if self._checking or self._clock() - self._checked < self._check_every_s:
                return
            self._checking = True
        threading.Thread(target=self._background_check, name=self.thread_name, daemon=True).start()

    def _background_check(self) -> None:
        try:
            self.refresh()
        except Exception:
            log.exception("%s could not be refreshed", self.what)
            with self._lock:
                self._checked = self._clock()
        finally:
            with self._lock:
                self._checking = False
