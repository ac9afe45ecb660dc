"""redact(): what finding every six-character piece of every registered key costs, against
the previous redact() (the exact keys, then the key-shape patterns) in the same run.

redact() runs on the hot path: every gateway error, every logged prompt and answer (when
prompt logging is on, in `RequestLog.submit()`, on the caller's thread, before the spool),
every status page and log line. Texts: a provider's short error message, a 1 kB prompt and
a 100 kB prompt (ASCII), and 100 kB of non-ASCII text (the slower path), each without any
piece of a key and with one (a stretch of a key spaced out, in the middle). Keys: four
registered, shaped like real ones (an OpenAI project key of 164 characters, an Anthropic key
of 108, a Gemini key of 39, a gateway key of 43): 300-odd six-character windows.

Variants, in interleaved rounds (each round runs every variant, shuffled; the figure is the
median over rounds of the best of a few timed loops, in µs a call):

* `before`: the previous redact() (kept here as it was, for the comparison);
* `redact`: conductor_core.secrets.redact() (fold + ahocorasick-rs DFA, the shapes after);
* the ways considered for finding the windows in the folded text (finding only): a plain
  Python loop over the text's positions with a set of windows, one `re` alternation of all
  windows, pyahocorasick (when installed: it is not a dependency), ahocorasick-rs;
* `orjson.loads`: parsing a chat request body that carries the text, for scale (what the
  gateway pays for that text before it is logged).

Also: the gateway's log filter on one uvicorn access line, before and now, and the time to
register a key (the automaton is rebuilt).

    python -m benchmarks.bench_redact [--quick] [--out DIR]
"""

from __future__ import annotations

import random
import re
import statistics
import string
import sys
import time
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import envelope, parser, report, rounded, target, write_result

NAME = "redact"
SIZES = {"quick": {"rounds": 2, "budget_s": 0.01}, "full": {"rounds": 7, "budget_s": 0.2}}
#: The target: a 1 kB text without a match may cost at most this much more than before (µs).
ADDED_1KB_LIMIT_US = 30.0

_rng = random.Random(7)
_ALNUM = string.ascii_letters + string.digits


def _random(n: int, alphabet: str = _ALNUM + "-_") -> str:
    return "".join(_rng.choice(alphabet) for _ in range(n))


KEYS = [
    "sk-proj-" + _random(156),
    "sk-ant-api03-" + _random(93, _ALNUM) + "-" + _random(1) + "AA",
    "AIzaSy" + _random(33),
    _random(43),
]
WORDS = (
    "the a of to and in is it that for on with as was be by this are or from at an model answer prompt "
    "token latency provider request stream error cost quickly because which would there their about"
).split()
SHORT_ERROR = (
    "Error code: 401 - {'error': {'message': 'Incorrect API key provided. You can find your API key at "
    "https://platform.openai.com/account/api-keys.', 'type': 'invalid_request_error', 'code': 'invalid_api_key'}}"
)


def _prose(size: int, words: list[str]) -> str:
    out: list[str] = []
    length = 0
    while length < size:
        word = _rng.choice(words)
        out.append(word)
        length += len(word) + 1
    return " ".join(out)[:size]


def _texts() -> dict[str, str]:
    plain = {
        "short error": SHORT_ERROR,
        "1 kB": _prose(1_000, WORDS),
        "100 kB": _prose(100_000, WORDS),
        "100 kB non-ASCII": _prose(100_000, [*WORDS, "é", "naïve", "日本語", "Größe", "—"]),
    }
    quote = " ".join(KEYS[1][-20:-8])  # a stretch of the Anthropic key, spaced out
    matched = {
        f"{name} + match": text[: len(text) // 2] + f" {quote} " + text[len(text) // 2 :]
        for name, text in plain.items()
    }
    return {**plain, **matched}


# --- the previous redact(), as it was -----------------------------------------------------------


def _before(keys: list[str]) -> Callable[[str], str]:
    from conductor_core.secrets import KEY_MARKERS, KEY_PATTERNS, REDACTED

    longest_first = sorted(keys, key=len, reverse=True)

    def redact(text: str) -> str:
        for secret in longest_first:
            if secret in text:
                text = text.replace(secret, REDACTED)
        for marker in KEY_MARKERS:
            if marker in text:
                return KEY_PATTERNS.sub(REDACTED, text)
        return text

    return redact


# --- ways to find the windows (in the folded text) ------------------------------------------------


def _finders(keys: list[str]) -> dict[str, Callable[[str], Any]]:
    from ahocorasick_rs import BytesAhoCorasick, Implementation

    from conductor_core.secrets import fold, windows_of

    windows = sorted(set().union(*(windows_of(key) for key in keys)))
    window_set = frozenset(windows)
    alternation = re.compile("|".join(windows))
    dfa = BytesAhoCorasick([w.encode() for w in windows], implementation=Implementation.DFA)

    def python_loop(text: str) -> list[int]:
        folded = fold(text)
        return [i for i in range(len(folded) - 5) if folded[i : i + 6] in window_set]

    def re_alternation(text: str) -> list[Any]:
        return list(alternation.finditer(fold(text)))

    def ahocorasick_rs(text: str) -> list[Any]:
        return dfa.find_matches_as_indexes(fold(text).encode(), True)

    finders = {"python loop": python_loop, "re alternation": re_alternation}
    try:
        import ahocorasick  # pyahocorasick: not a dependency, measured when installed

        automaton = ahocorasick.Automaton()
        for window in windows:
            automaton.add_word(window, window)
        automaton.make_automaton()
        finders["pyahocorasick"] = lambda text: list(automaton.iter(fold(text)))
    except ImportError:
        pass
    finders["ahocorasick-rs"] = ahocorasick_rs
    return finders


def _per_call_us(call: Callable[[], Any], budget_s: float) -> float:
    """The best of three timed loops, each about `budget_s` long, in µs a call."""
    number = max(1, int(budget_s / max(timeit.timeit(call, number=1), 1e-7)))
    return min(timeit.repeat(call, number=number, repeat=3)) / number * 1e6


def _measure(texts: dict[str, str], variants: dict[str, Callable[[str], Any]], rounds: int, budget_s: float) -> dict:
    samples: dict[str, dict[str, list[float]]] = {name: {} for name in texts}
    order = list(variants)
    for _ in range(rounds):
        for text_name, text in texts.items():
            _rng.shuffle(order)
            for variant in order:
                if variant in ("python loop", "re alternation") and len(text) > 10_000:
                    continue  # ~0.3 and ~1 ms a kB: too slow to matter, and to wait for
                us = _per_call_us(lambda v=variants[variant], t=text: v(t), budget_s)
                samples[text_name].setdefault(variant, []).append(us)
    return {
        text_name: {variant: rounded(statistics.median(values), 2) for variant, values in by_variant.items()}
        for text_name, by_variant in samples.items()
    }


def _log_filter(keys: list[str], rounds: int, budget_s: float) -> dict[str, float | None]:
    """The gateway's RedactingFilter on one uvicorn access record: before (each part alone,
    the previous redact()) and now (each part, then the line as printed)."""
    import logging

    from gateway.middleware import RedactingFilter

    before = _before(keys)

    def old_filter(record: logging.LogRecord) -> bool:
        record.msg = before(record.msg)
        record.args = tuple(a if isinstance(a, (int, float)) else before(str(a)) for a in record.args)  # type: ignore[union-attr]
        return True

    def record() -> logging.LogRecord:
        return logging.LogRecord(
            "uvicorn.access",
            logging.INFO,
            __file__,
            1,
            '%s - "%s %s HTTP/%s" %d',
            ("127.0.0.1:51234", "POST", "/v1/chat/completions", "1.1", 200),
            None,
        )

    new_filter = RedactingFilter()
    # The LogRecord's own construction (~3 µs) is in both and taken out.
    construct = statistics.median(_per_call_us(record, budget_s) for _ in range(rounds))
    old = statistics.median(_per_call_us(lambda: old_filter(record()), budget_s) for _ in range(rounds))
    new = statistics.median(_per_call_us(lambda: new_filter.filter(record()), budget_s) for _ in range(rounds))
    return {"before_us": rounded(old - construct, 2), "now_us": rounded(new - construct, 2)}


def main(argv: list[str] | None = None) -> int:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()

    import orjson

    from conductor_core import secrets

    for key in KEYS:
        secrets.register_secret(key)
    t0 = time.perf_counter()
    probe = secrets.Redactor()
    for key in KEYS:
        probe.register(key)
    register_ms = (time.perf_counter() - t0) * 1000 / len(KEYS)

    texts = _texts()
    bodies = {
        name: orjson.dumps({"model": "auto", "messages": [{"role": "user", "content": t}]}) for name, t in texts.items()
    }
    assert secrets.redact(texts["1 kB"]) == texts["1 kB"] and secrets.REDACTED in secrets.redact(texts["1 kB + match"])
    variants: dict[str, Callable[[str], Any]] = {"before": _before(KEYS), "redact": secrets.redact, **_finders(KEYS)}
    variants["orjson.loads"] = lambda text: orjson.loads(bodies[next(n for n, t in texts.items() if t is text)])
    per_text = _measure(texts, variants, size["rounds"], size["budget_s"])
    added = {name: rounded(row["redact"] - row["before"], 2) for name, row in per_text.items()}
    log_filter = _log_filter(KEYS, size["rounds"], size["budget_s"])

    payload = envelope(
        NAME,
        args,
        started,
        keys={
            "count": len(KEYS),
            "lengths": [len(k) for k in KEYS],
            "windows": sum(len(secrets.windows_of(k)) for k in KEYS),
        },
        register_ms_per_key=rounded(register_ms, 2),
        per_call_us=per_text,
        added_us=added,
        log_filter_per_access_line_us=log_filter,
        targets=[
            target(
                "1 kB text without a match: µs redact() adds over the previous one",
                added["1 kB"],
                ADDED_1KB_LIMIT_US,
                unit="µs",
            )
        ],
    )
    write_result(args.out, NAME, payload)
    names = list(next(iter(per_text.values())))
    lines = [f"redact (µs a call; median of {size['rounds']} rounds; load {payload['machine']['load_average']})"]
    lines.append(f"  {'text':<26}" + "".join(f"{n:>16}" for n in names) + f"{'added':>10}")
    for text_name, row in per_text.items():
        cells = "".join(f"{'—' if row.get(n) is None else f'{row[n]:.1f}':>16}" for n in names)
        lines.append(f"  {text_name:<26}{cells}{added[text_name]:>10.1f}")
    lines.append(f"  log filter on an access line: before {log_filter['before_us']} µs, now {log_filter['now_us']} µs")
    lines.append(f"  registering a key (automaton rebuilt): {payload['register_ms_per_key']} ms")
    report(lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
