"""Secrets. A canary key: set recognisable fake keys, cause auth failures and other errors
through the real SDKs (upstreams that quote pieces of the key), and prove no piece of a key
appears anywhere: not in errors, reprs, dumps, logs or the log DB. Then `redact()` itself:
property tests with random keys quoted at random, against a plain reference implementation.
(The same over the gateway's HTTP and the playground's page: tests/test_secrets_canary.py.)"""

from __future__ import annotations

import logging
import sqlite3
import string
import threading

import pytest
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st

from conductor_core import secrets
from conductor_core.config import load_settings, redact
from conductor_core.errors import ProviderError
from conductor_core.models import ChatMessage, ChatRequest
from conductor_core.router import Conductor
from conductor_core.secrets import PUBLIC_PREFIXES, REDACTED, WINDOW, Redactor
from conductor_core.testing.protocol_servers import AnthropicServer, Fault, GeminiServer, OpenAIServer
from tests.secret_support import leaks, problems, quotes

CANARIES = {
    "openai": "sk-rkgPVapB_sLLx0xXYYymJleh",
    "anthropic": "sk-ant-api03-phY1pMNWM3O_VTxZtYDIA2ey",
    "gemini": "AIza3dOfKU7RDSkB2fuDWbrNS535",
}


@pytest.fixture
def servers():
    # Each server expects a different key, so every canary is rejected with a 401.
    with (
        OpenAIServer(require_key="right-key-1") as o,
        AnthropicServer(require_key="right-key-2") as a,
        GeminiServer(require_key="right-key-3") as g,
    ):
        yield {"openai": o, "anthropic": a, "gemini": g}


def _all_text(*objects) -> str:
    return "\n".join(str(o) + "\n" + repr(o) for o in objects)


def test_canary_keys_never_leak(servers, tmp_path, caplog, monkeypatch):
    caplog.set_level(logging.DEBUG)  # SDK and httpx debug logging included
    monkeypatch.setenv("OPENAI_LOG", "debug")
    settings = load_settings(
        _env_file=None,
        openai_api_key=CANARIES["openai"],
        openai_base_url=servers["openai"].url,
        anthropic_api_key=CANARIES["anthropic"],
        anthropic_base_url=servers["anthropic"].url,
        gemini_api_key=CANARIES["gemini"],
        gemini_base_url=servers["gemini"].url,
        local_enabled=False,
        data_dir=tmp_path,
        timeout_s=5.0,  # the hang below outlasts it; anything else answers at once
        max_retries=0,
    )
    conductor = Conductor(settings)
    seen: list[object] = [settings, settings.model_dump(), settings.model_dump_json(), conductor.registry.providers]
    prompt = [ChatMessage(role="user", content="hello there")]
    for name in CANARIES:
        request = ChatRequest(provider=name, messages=prompt, max_tokens=20)
        for call in (conductor.chat, lambda r: list(conductor.stream(r))):
            with pytest.raises(ProviderError) as info:
                call(request)
            error = info.value
            assert error.type == "authentication"
            seen += [error, error.message, error.to_response().model_dump_json(), error.__cause__, error.__context__]
        # Other failures too: a 401 and a 500 whose bodies quote pieces of the key, and a timeout.
        servers[name].require_key = None
        servers[name].script(
            Fault("status", status=401, message=quotes(CANARIES[name])),
            Fault("status", status=500, message=f"upstream saw key {quotes(CANARIES[name])}"),
            Fault("hang", hang_s=120),
        )
        for _ in range(3):
            with pytest.raises(ProviderError) as info:
                conductor.chat(request)
            seen += [info.value, info.value.to_response().model_dump_json()]
    # AUTO over all three failing providers.
    for server in servers.values():
        server.set_down(True)
    with pytest.raises(ProviderError) as info:
        conductor.chat(ChatRequest(messages=prompt, max_tokens=20))
    seen += [info.value, getattr(info.value, "attempts", None)]
    seen += [conductor.status().model_dump_json(), conductor.health(refresh=True).model_dump_json()]
    seen += [r.message for r in caplog.records] + [r.getMessage() for r in caplog.records] + [caplog.text]
    exported = conductor.log.export("csv").decode() + conductor.log.export("json").decode()
    conductor.close()
    db_dump = "\n".join(sqlite3.connect(tmp_path / "conductor.db").iterdump())

    haystack = _all_text(*seen) + exported + db_dump
    # Control: each key really went over the wire (so not finding it below means something).
    for name, key in CANARIES.items():
        assert any(key in str(r["headers"]) for r in servers[name].requests), name
    assert "authentication" in exported  # the failures were recorded...
    for name, key in CANARIES.items():
        assert not leaks(key, haystack), f"{name} key leaked"  # ...and no piece of a key with them


def test_redact_removes_registered_and_key_shaped_strings():
    load_settings(_env_file=None, openai_api_key="sk-crKw-O8wkiV-tqtAWZjLD-GA")
    assert "sk-crKw-O8wkiV-tqtAWZjLD-GA" not in redact("bad key sk-crKw-O8wkiV-tqtAWZjLD-GA given")
    assert "AIzaSyA1234567890abcdefghijk" not in redact("key=AIzaSyA1234567890abcdefghijk")
    assert redact("an ordinary sentence") == "an ordinary sentence"


# Texts made of key-shaped pieces, masks and ellipses, and ordinary words, in any order.
_PIECES = st.sampled_from(
    [
        "sk-",
        "AIza",
        "Bearer ",
        "Bearer\t",
        "***",
        "•••",
        "···",
        "...",
        "…",
        "*",
        "key",
        "api",
        "sk",
        "abcdefghijklmnopqrstuvwx",
        "0123456789",
        "-",
        "_",
        " ",
        ".",
        "word",
        "zqUPca",
        "9041",
        "é",
    ]
)


@settings(deadline=None)  # a shared, busy machine: no per-example deadline
@given(st.lists(_PIECES, max_size=12).map("".join))
@example("key…9041")  # one text per shape, each with only the marker that shape needs
@example("api...9041")
@example("zqUPca***9041")
@example("zq•••41")
@example("zq···41")
@example("Bearer\tabcdefghijklmnop")
@example("AIzaabcdefghijklmnopqrstuvwx")
@example("sk-abcdefghijklmnop")
def test_redact_skips_its_patterns_only_when_they_cannot_match(text):
    # redact() runs the key patterns only on a text holding one of their markers: the result
    # must be the one the patterns give on every text (no key registered: the patterns alone).
    assert Redactor().redact(text) == secrets.KEY_PATTERNS.sub(REDACTED, text)


# --- pieces of a key, however they are quoted ------------------------------------------------

KEY = "Zq8xVt-3mPw_L9kRb2Ty4Hn7Jc5D"  # a private Redactor's: nothing is registered for the process


def _redactor(*keys: str) -> Redactor:
    redactor = Redactor()
    for key in keys:
        redactor.register(key)
    return redactor


@pytest.mark.parametrize(
    "quoted",
    [
        KEY,
        f"...{KEY[-6:]}",  # OpenAI's "Incorrect API key provided: sk-...Jc5D" style, longer
        KEY[:10].upper(),
        " ".join(KEY[4:14]),  # spaced out
        "•".join(KEY[8:16]),
        "-".join(KEY[3:12].lower()),
        "\u200b".join(KEY[-8:]),  # zero-width spaces
        "\\n".join(KEY[:6]),  # no: "n" is a letter; see the assertion below
        f'{{"error": {{"message": "bad key {KEY[6:20]}"}}}}',
        f"a\ud800b {KEY[2:9]}",  # a lone surrogate in the text
    ],
)
def test_every_quote_of_six_key_characters_is_removed_with_what_lies_between(quoted):
    text = f"upstream said: {quoted} (status 401)"
    out = _redactor(KEY).redact(text)
    assert out.startswith("upstream said: ") and out.endswith(" (status 401)")
    if quoted == "\\n".join(KEY[:6]):  # a literal backslash-n between each: the letter n breaks the run
        assert out == text
        return
    assert REDACTED in out and not leaks(KEY, out), out
    assert out.count(REDACTED) == 1  # one span, separators inside it included


def test_fewer_than_six_key_characters_in_a_row_stay():
    redactor = _redactor(KEY)
    for text in (KEY[:5], f"{KEY[:5]} and {KEY[5:10]}", "-".join(KEY[4:9]), "x" + KEY[-5:]):
        assert redactor.redact(text) == text


def test_ordinary_text_is_left_alone():
    text = "The quick brown fox: 401 Incorrect API key provided. See https://platform.openai.com/account/api-keys."
    assert _redactor(KEY, "sk-proj-" + KEY, "AIzaQw3rTy8uIo2pAs").redact(text) == text


def test_redacting_twice_equals_once_even_for_a_key_that_spells_redacted():
    key = "xyRedactedQ7w2"
    redactor = _redactor(key)
    assert redactor.redact(REDACTED) == REDACTED
    assert redactor.redact(f"it was {REDACTED} and {REDACTED}") == f"it was {REDACTED} and {REDACTED}"
    once = redactor.redact(f"{key} and [redacted] and {REDACTED}edQ7 and REDACTEDq7w2")
    assert once == f"{REDACTED} and [{REDACTED}] and {REDACTED}edQ7 and {REDACTED}"
    # Quotes that touch (only separators between them) go as one span.
    assert redactor.redact(f"{key} [redacted]") == f"{REDACTED}]"
    assert redactor.redact(once) == once


def test_a_providers_public_prefix_is_not_a_secret():
    key = "sk-ant-api03-Hq2Wc9Lx4Rt7Ym1Pz"
    redactor = _redactor(key)
    # "antapi" is in "important API": only the characters after the documented prefix count.
    assert redactor.redact("an important API, a tenant API") == "an important API, a tenant API"
    assert redactor.redact(f"bad key {key}") == f"bad key sk-ant-api03-{REDACTED}"
    assert redactor.redact(f"bad key ...api03-{key[13:19]}") == f"bad key ...api03-{REDACTED}"
    assert set(PUBLIC_PREFIXES) >= {"sk-ant-api03-", "sk-proj-"}


def test_short_keys_are_treated_alike_and_shorter_values_are_not_registered():
    redactor = _redactor("Hq2Wc9", "short")  # 6 characters: every quote of all six; 5: ignored
    assert redactor.registered() == {"Hq2Wc9"}
    assert redactor.redact("hq2wc9 or H Q 2 W C 9 or short") == f"{REDACTED} or {REDACTED} or short"


def test_a_key_of_fewer_than_six_letters_and_digits_is_removed_where_it_appears_whole():
    key = "++==ab.c9=="
    redactor = _redactor(key)
    assert redactor.redact(f"got {key} here; ab c9 elsewhere") == f"got {REDACTED} here; ab c9 elsewhere"


def test_a_key_registered_while_others_redact_is_seen_whole_or_not_at_all():
    redactor = _redactor(KEY)
    keys = [f"Qw{n:02d}x{KEY[n : n + 8]}Lp" for n in range(12)]
    errors: list[BaseException] = []

    def read() -> None:
        try:
            for _ in range(300):
                assert not leaks(KEY, redactor.redact(f"say {KEY} now"))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    readers = [threading.Thread(target=read) for _ in range(3)]
    for thread in readers:
        thread.start()
    for key in keys:
        redactor.register(key)
    for thread in readers:
        thread.join()
    assert not errors and redactor.registered() == {KEY, *keys}


# --- property tests: random keys, quoted at random -------------------------------------------

_KEY_CHARS = string.ascii_letters + string.digits + "-_"
# What an upstream or a formatter may put between a key's characters.
_SEPARATORS = " \t\n-_.:,;/|\\*'\"()[]{}<>+=~•·‧∙●…–—\u00a0\u200b\u3000"
_FILLER = st.text(
    alphabet=st.one_of(st.sampled_from(string.printable), st.sampled_from("éßİKΣ日本\u200b\ud800")), max_size=30
)


@st.composite
def _keys(draw) -> str:
    alphabet = draw(st.text(alphabet=_KEY_CHARS, min_size=3, max_size=20).filter(lambda a: any(c.isalnum() for c in a)))
    key = draw(st.text(alphabet=alphabet, min_size=20, max_size=80))
    assume(sum(c.isalnum() for c in key) >= WINDOW and not key.startswith(PUBLIC_PREFIXES))
    return key


@st.composite
def _quote(draw, key: str) -> str:
    """Any stretch of the key with six or more letters and digits, in any case mix, with
    separators put between its characters."""
    positions = [i for i, c in enumerate(key) if c.isalnum()]
    first = draw(st.integers(0, len(positions) - WINDOW))
    last = draw(st.integers(first + WINDOW - 1, len(positions) - 1))
    start = draw(st.integers(positions[first - 1] + 1 if first else 0, positions[first]))
    stretch = key[start : positions[last] + 1]
    out = []
    for char in stretch:
        out.append(char.upper() if draw(st.booleans()) else char.lower())
        out.append(draw(st.text(alphabet=_SEPARATORS, max_size=3)))
    return "".join(out)


@st.composite
def _quoted_texts(draw) -> tuple[list[str], str]:
    keys = draw(st.lists(_keys(), min_size=1, max_size=3))
    pieces = [draw(_FILLER)]
    for _ in range(draw(st.integers(1, 4))):
        pieces += [draw(_quote(draw(st.sampled_from(keys)))), draw(_FILLER)]
    return keys, "".join(pieces)


def _reference(keys: list[str], text: str) -> str:
    """What redact() must return, the plain way: mark every position of the text's letters and
    digits that starts a run of six equal (lower-cased) to six of a key's, replace each stretch of
    marked characters (from its first to its last) by one [REDACTED], between earlier ones."""
    windows = set()
    for key in keys:
        chars = [c.lower() for c in key if c.isalnum()]
        windows |= {"".join(chars[i : i + WINDOW]) for i in range(len(chars) - WINDOW + 1)}

    def one(part: str) -> str:
        where = [i for i, c in enumerate(part) if c.isalnum()]
        chars = [low if len(low := part[i].lower()) == 1 else part[i] for i in where]
        marked = [False] * len(where)
        for i in range(len(chars) - WINDOW + 1):
            if "".join(chars[i : i + WINDOW]) in windows:
                marked[i : i + WINDOW] = [True] * WINDOW
        out, i, done = [], 0, 0
        while i < len(marked):
            if not marked[i]:
                i += 1
                continue
            j = i
            while j + 1 < len(marked) and marked[j + 1]:
                j += 1
            out += [part[done : where[i]], REDACTED]
            done, i = where[j] + 1, j + 1
        return "".join(out) + part[done:]

    return secrets.KEY_PATTERNS.sub(REDACTED, REDACTED.join(one(part) for part in text.split(REDACTED)))


@settings(max_examples=300, deadline=None)
@given(_quoted_texts())
def test_no_run_of_six_key_characters_survives_any_quoting(case):
    keys, text = case
    redactor = _redactor(*keys)
    out = redactor.redact(text)
    for key in keys:
        assert not leaks(key, out), (key, text, out)
    assert out == _reference(keys, text)
    assert redactor.redact(out) == out  # idempotent


@settings(max_examples=300, deadline=None)
@given(st.lists(_keys(), min_size=1, max_size=3), st.lists(st.one_of(_FILLER, st.just(REDACTED)), max_size=8))
def test_any_text_is_redacted_as_the_reference_says(keys, pieces):
    text = "".join(pieces)
    redactor = _redactor(*keys)
    out = redactor.redact(text)
    assert out == _reference(keys, text)
    assert redactor.redact(out) == out


# Keys from the first half of the alphabet, text from the second: no piece of a key can be in it.
_LOW_KEYS = st.text(alphabet="abcdefghijklmABCDEFGHIJKLM01234-_", min_size=20, max_size=80).filter(
    lambda key: sum(c.isalnum() for c in key) >= WINDOW
)
_HIGH_TEXT = st.text(alphabet="nopqrstuvwxyzNOPQRSTUVWXYZ56789 \t\n.,;:!?()'\"-_/éü日本—…\u200b", max_size=300)


@settings(max_examples=200, deadline=None)
@given(st.lists(_LOW_KEYS, min_size=1, max_size=3), _HIGH_TEXT)
def test_text_holding_no_piece_of_a_key_is_returned_unchanged(keys, text):
    assert _redactor(*keys).redact(text) == text


def test_the_test_key_rule_flags_words_and_runs_and_passes_random_keys():
    assert any("provid" in p for p in problems("sk-test-provider-key-000000"))
    assert any("run" in p for p in problems("sk-test-provider-key-000000"))
    assert any("gatewa" in p for p in problems("gateway-bearer-key-123456"))
    assert problems("sk-rkgPVapB_sLLx0xXYYymJleh") == []


def test_a_letter_that_is_not_ascii_breaks_a_quote_and_a_key_may_hold_one():
    redactor = _redactor(KEY)
    # Dropping every non-ASCII character finds "Zq8" + "xVt": the exact fold says é is a letter.
    assert redactor.redact(f"café {KEY[:3]}é{KEY[3:6]} naïve") == f"café {KEY[:3]}é{KEY[3:6]} naïve"
    assert redactor.redact(f"café {KEY[:3]}•{KEY[3:6]} naïve") == f"café {REDACTED} naïve"
    accented = _redactor("Zq8xVé3mPw_L9kR")
    assert accented.redact("hier: ZQ8XVÉ3M und zq8xvé3m") == f"hier: {REDACTED} und {REDACTED}"
    assert accented.redact("ascii only: zq8xv3mpw") == "ascii only: zq8xv3mpw"
