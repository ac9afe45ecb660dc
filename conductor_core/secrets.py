"""What `redact()` removes from every text that leaves the process or is stored.

Every key Conductor loads is registered (`Settings` registers the keys it reads, the
playground a key typed for a session). From then on `redact()` removes from any text every
run of six or more of a key's characters, however an upstream quotes it: in any case, and
with anything that is not a letter or a digit between the characters ("…y7Q2kz", the first
ten upper-cased, "y 7 Q 2 k z", "y-7-Q-2-k-z", "y•7•Q•2•k•z"). Only letters and digits count:
they are what a key is made of and what a quote shows, and a key's own `-` and `_` carry
nothing secret; so a quote is found whatever was put between its characters (spaces, any
punctuation, bullets, line breaks, zero-width characters), and no list of separators can
miss one. The whole quoted span is replaced, separators inside it included. Keys also
shaped like well-known ones (`sk-…`, `AIza…`, `Bearer …`, masked `ab***yz`) are removed even
when nobody registered them.

How, in one pass: the text's UTF-8 is folded to its ASCII letters and digits, lower-cased
(one `bytes.translate`), and an Aho-Corasick automaton (`ahocorasick_rs`, over the keys' six-
character windows) finds every window in it. For ASCII text that is the whole answer; for
other text, dropping its other characters can only join more, so only the stretches found
get the exact fold (where "é" is a letter and "•" is not). Positions in the original text
are worked out only when something matched. BENCHMARKS.md ("Redaction") has the costs.

Rules that keep it sound:

* Idempotent: `[REDACTED]` is never read as letters, even for a key that contains "redacted":
  the text between two of them is redacted on its own. So redacting twice equals once.
* Six characters: fewer would eat ordinary words; a shorter value is not registered at all.
  Short keys (6-11 characters) get the same treatment: six of them are most of the key.
* A provider's documented key prefix (`sk-ant-api03-`, `sk-proj-`...) is public: it is not
  a secret on its own, and its windows ("antapi" is in "important API") would eat words.
* A key made of fewer than six letters and digits is removed where it appears whole, as typed.
"""

from __future__ import annotations

import re
import string
import threading
from collections.abc import Iterable
from typing import Any

from ahocorasick_rs import BytesAhoCorasick, Implementation, MatchKind
from pydantic import SecretStr

__all__ = [
    "KEY_MARKERS",
    "KEY_PATTERNS",
    "PUBLIC_PREFIXES",
    "REDACTED",
    "WINDOW",
    "Redactor",
    "fold",
    "redact",
    "redact_json",
    "register_secret",
    "registered",
    "windows_of",
]

REDACTED = "[REDACTED]"
_REDACTED_BYTES = REDACTED.encode()
#: Key characters in a row that count as a quote of the key.
WINDOW = 6

# Prefixes providers put in front of every key: printed in their documentation, so not secret
# (the characters after them are). Longest first: the first that matches is removed.
PUBLIC_PREFIXES = ("sk-ant-admin01-", "sk-ant-api03-", "sk-svcacct-", "sk-or-v1-", "sk-admin-", "sk-proj-")

# Everything that is not a letter or a digit (str.isalnum); `\w` is exactly isalnum plus "_".
_NOT_KEY_CHARS = re.compile(r"[\W_]+")
_ASCII_NOT_KEY = bytes(c for c in range(128) if not chr(c).isalnum())
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())
# Every byte but ASCII letters and digits (UTF-8 bytes of other characters included).
_NOT_ASCII_KEY_BYTES = bytes(c for c in range(256) if not (c < 128 and chr(c).isalnum()))
# 1 for a key character, 0 for anything else: the positions a match maps back to.
_ASCII_KEY_MASK = bytes(1 if c < 128 and chr(c).isalnum() else 0 for c in range(256))
_BLOCK = 4096

# Shapes of well-known keys, caught even when nobody registered them, and of keys an upstream
# quotes masked ("zqUPca**********9041", "sk-...9041": the first and last characters of a key
# are still a fragment of it, and several such quotes narrow it down).
KEY_PATTERNS = re.compile(
    r"(sk-[A-Za-z0-9_\-]{12,}|AIza[0-9A-Za-z_\-]{20,}|Bearer\s+[A-Za-z0-9_\-\.]{12,}"
    r"|[A-Za-z0-9_\-]{2,}[*•·]{3,}[A-Za-z0-9_\-]{2,}"
    r"|\b(?:sk|key|api)[A-Za-z0-9_\-]*(?:\.{3}|…)[A-Za-z0-9_\-]+)"
)
# Every shape above contains one of these, so a text without any cannot match: checked
# first, as the patterns cost ~0.1 ms on a 1 kB prompt and most texts hold none. Looked for
# in one pass (eight `in` took ~1 ms on 100 kB of prose: "sk-" is slow to skip through).
KEY_MARKERS = ("sk-", "AIza", "Bearer", "*", "•", "·", "...", "…")
_MARKERS = BytesAhoCorasick([marker.encode() for marker in KEY_MARKERS], matchkind=MatchKind.LeftmostFirst)


def fold(text: str) -> str:
    """The letters and digits of `text`, lower-cased: a key as any quote of it reads."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_LOWER, _ASCII_NOT_KEY).decode("ascii")
    kept = _NOT_KEY_CHARS.sub("", text)
    lowered = kept.lower()
    if len(lowered) == len(kept):
        return lowered
    # A character whose lower case is longer ("İ" becomes two) stays as it is, so that
    # positions still line up with the text's: rare, so a loop is fine.
    return "".join(low if len(low := char.lower()) == 1 else char for char in kept)


def windows_of(key: str) -> frozenset[str]:
    """Every run of `WINDOW` key characters (folded) after the key's public prefix: what
    `redact()` looks for. Empty for a key with fewer letters and digits than that."""
    for prefix in PUBLIC_PREFIXES:
        if key.startswith(prefix):
            key = key[len(prefix) :]
            break
    chars = fold(key)
    return frozenset(chars[i : i + WINDOW] for i in range(len(chars) - WINDOW + 1))


class _Matcher:
    """The registered keys, compiled: immutable, so `redact()` reads it without a lock."""

    def __init__(self, keys: Iterable[str]) -> None:
        windows: set[str] = set()
        whole: set[str] = set()
        for key in keys:
            found = windows_of(key)
            if found:
                windows.update(found)
            else:
                whole.add(key)
        # A DFA scans fastest; past a few thousand windows its build time and memory grow, and
        # the library's own choice (an NFA) is the better trade.
        implementation = Implementation.DFA if len(windows) <= 4096 else None
        patterns = sorted(_utf8(window) for window in windows)
        self.automaton = BytesAhoCorasick(patterns, implementation=implementation) if windows else None
        self.ascii_keys = all(window.isascii() for window in windows)
        self.whole = tuple(sorted(whole, key=len, reverse=True))  # a key that contains another goes first

    def remove(self, text: str, raw: bytes) -> str:
        """`text` (`raw`: its UTF-8) without the keys; the same object when it holds none."""
        for key in self.whole:
            if key in text:
                text = text.replace(key, REDACTED)
                raw = _utf8(text)
        if self.automaton is None:
            return text
        if _REDACTED_BYTES in raw:
            # Earlier redactions are walls: what lies between them is redacted on its own, so
            # the letters of "[REDACTED]" never count as a key's (idempotence).
            return REDACTED.join(self._windows(part, _utf8(part)) for part in text.split(REDACTED))
        return self._windows(text, raw)

    def _windows(self, text: str, raw: bytes) -> str:
        is_ascii = text.isascii()
        if not (is_ascii or self.ascii_keys):
            return self._exact(text)
        # ASCII letters and digits only, at C speed. For a text with other characters too they
        # are all dropped here, which can only join more characters, never split a quote of an
        # ASCII key: every quote lies inside what is found here (nothing found: nothing to do).
        assert self.automaton is not None
        found = self.automaton.find_matches_as_indexes(raw.translate(_ASCII_LOWER, _NOT_ASCII_KEY_BYTES), True)
        if not found:
            return text
        # Offsets in the folded text count key characters: where those at the spans' ends are.
        spans = _merged((start, end) for _, start, end in found)
        where = _ascii_key_offsets(raw, sorted({i for start, end in spans for i in (start, end - 1)}))
        spans = [(where[start], where[end - 1] + 1) for start, end in spans]
        if is_ascii:
            return _replaced(text, spans)
        # Byte offsets as character offsets; then each stretch gets the exact fold.
        out: list[str] = []
        done = 0
        for start, end in spans:
            first, last = _chars(raw, start), _chars(raw, end)
            out += [text[done:first], self._exact(text[first:last])]
            done = last
        out.append(text[done:])
        return "".join(out)

    def _exact(self, text: str) -> str:
        """Every character that is a letter or a digit counts (not only ASCII ones)."""
        assert self.automaton is not None
        encoded = _utf8(fold(text))
        found = self.automaton.find_matches_as_indexes(encoded, True)
        if not found:
            return text
        key_chars = [i for i, char in enumerate(text) if char.isalnum()]
        spans = [(_chars(encoded, start), _chars(encoded, end)) for start, end in _merged((s, e) for _, s, e in found)]
        return _replaced(text, [(key_chars[start], key_chars[end - 1] + 1) for start, end in spans])


def _ascii_key_offsets(raw: bytes, wanted: list[int]) -> dict[int, int]:
    """Where in `raw` (UTF-8) its ASCII letters and digits numbered `wanted` (ascending) are:
    whole blocks are counted, then a binary search by counting inside the block, all in C
    (listing every key character's offset cost ~0.1 ms a kB)."""
    mask = raw.translate(_ASCII_KEY_MASK)
    where: dict[int, int] = {}
    start = counted = 0
    here = mask.count(1, 0, _BLOCK)
    for number in wanted:
        while number >= counted + here:
            counted += here
            start += _BLOCK
            here = mask.count(1, start, start + _BLOCK)
        low, high, target = start, min(start + _BLOCK, len(mask)) - 1, number - counted + 1
        while low < high:  # the first offset with `target` key characters from `start` up to it
            middle = (low + high) // 2
            if mask.count(1, start, middle + 1) >= target:
                high = middle
            else:
                low = middle + 1
        where[number] = low
    return where


def _replaced(text: str, spans: list[tuple[int, int]]) -> str:
    out: list[str] = []
    done = 0
    for start, end in spans:
        out += [text[done:start], REDACTED]
        done = end
    out.append(text[done:])
    return "".join(out)


def _merged(spans: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Overlapping or touching spans as one: a key quoted whole goes as one `[REDACTED]`."""
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def _utf8(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")  # never raises, whatever the text holds


def _chars(encoded: bytes, offset: int) -> int:
    """A UTF-8 byte offset (at a character boundary) as a character offset."""
    return len(encoded[:offset].decode("utf-8", "surrogatepass"))


class Redactor:
    """A set of registered keys and the `redact()` that removes them. The process has one
    (`register_secret`, `redact`); tests make their own to try keys without registering
    them for every other test."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._keys: frozenset[str] = frozenset()
        self._matcher: _Matcher | None = None

    def register(self, value: str | SecretStr | None) -> None:
        if isinstance(value, SecretStr):
            value = value.get_secret_value()
        if not value or len(value) < WINDOW:  # shorter strings would redact ordinary words
            return
        with self._lock:
            if value in self._keys:
                return
            keys = self._keys | {value}
            self._matcher = _Matcher(keys)  # built before it is published: readers see old or new
            self._keys = keys

    def registered(self) -> frozenset[str]:
        """The registered keys (for tests that check which ones a run registered)."""
        return self._keys

    def redact(self, text: Any) -> str:
        """`text` as a string with every registered key's quotes, and anything shaped like a
        key, replaced by `[REDACTED]`."""
        text = str(text)
        raw = _utf8(text)
        matcher = self._matcher
        if matcher is not None:
            clean = matcher.remove(text, raw)
            if clean is not text:
                text, raw = clean, _utf8(clean)
        if _MARKERS.find_matches_as_indexes(raw):
            return KEY_PATTERNS.sub(REDACTED, text)
        return text


_registry = Redactor()
register_secret = _registry.register
redact = _registry.redact
#: The registered keys: a new set whenever one is added, so a cache of redacted text can key on it.
registered = _registry.registered


def redact_json(value: Any) -> Any:
    """A JSON-shaped value (dicts, lists, strings, numbers) with every string redacted: for
    JSON, redact the values, not the encoded text, whose escapes (a key's characters separated
    by "\\n" read as letters) and quotes (a span across two fields) redaction must not meet."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {key: redact_json(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [redact_json(item) for item in value]
    return value
