"""Keys in tests: the rule every key a test registers follows (checked by tests/conftest.py),
the ways an upstream quotes a key, and how a test looks for any piece of one in a text.

Keys are registered for the whole process, and from then on `redact()` removes any six
letters or digits of a key that appear in a row from every text. So a test key such as
"sk-test-provider-key-000000" would take "provider" (and "000000") out of every later
message in the same pytest run, and break unrelated tests depending on their order. Test
keys are random-looking literals (fixed, so a run is reproducible): no run of six of their
letters and digits may appear in ordinary text (README.md stands for it: the project's own
words and plain English), and none may be six identical or consecutive characters.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from conductor_core.secrets import REDACTED, fold, windows_of

__all__ = ["leaks", "problems", "quotes"]

README = Path(__file__).resolve().parent.parent / "README.md"


@cache
def _ordinary_text() -> str:
    return fold(README.read_text(encoding="utf-8"))


def _run(window: str) -> bool:
    """Six identical or consecutive characters ("000000", "123456", "fedcba")."""
    steps = {ord(b) - ord(a) for a, b in zip(window, window[1:], strict=False)}
    return len(steps) == 1 and steps <= {-1, 0, 1}


def problems(key: str) -> list[str]:
    """What makes `key` unfit for a test (empty when it is fit)."""
    found = []
    for window in sorted(windows_of(key)):
        if window in _ordinary_text():
            found.append(f"{window!r} is ordinary text (it is in README.md)")
        elif _run(window):
            found.append(f"{window!r} is a run of identical or consecutive characters")
    return found


def quotes(key: str) -> str:
    """A sentence quoting `key` the ways upstreams do: its last six characters, its first ten
    upper-cased, a stretch of it spaced out, and the whole key."""
    return (
        f"Incorrect API key provided: ...{key[-6:]}. Keys starting {key[:10].upper()} are revoked; "
        f"you sent '{' '.join(key[-14:-2])}' ({key})."
    )


def leaks(key: str, text: str) -> list[str]:
    """The runs of six of `key`'s letters and digits (any case, anything between them) that
    `text` still holds outside `[REDACTED]`."""
    parts = [fold(part) for part in text.split(REDACTED)]
    return sorted(window for window in windows_of(key) if any(window in part for part in parts))
