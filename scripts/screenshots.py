"""The README's screenshots (docs/*.png), from a real run: `make screenshots`.

    python scripts/screenshots.py [--out docs] [--keep]

1. Loopback servers speak the OpenAI, Anthropic and Gemini wire protocols (and an
   OpenAI-compatible "vLLM" endpoint, whose price nobody knows), each with its own latency
   and failure rate; the embedded local model answers for real. Each server answers a prompt
   from a small book of answers (`answer_for`), in its own words.
2. An hour of traffic: about 500 requests through the core's `Conductor` (the official SDKs
   over HTTP) into a scratch log, one thread per provider. Gemini fails and slows down in
   the last quarter of it. The attempts are then written to the playground's request log
   with `RequestLog.write_many`, each request at its place in the hour before now.
3. An experiment run and Arena rounds with votes, through the core, in the playground's log.
4. `streamlit run` on that log, and Chromium: a chat of two turns, a Compare round, the
   experiment's run, a revealed Arena round, the Dashboard (last hour, its live refresh
   paused for the picture), the Providers page, and the Dashboard at a phone's 390 px. Each
   page is waited for (its state, not a delay).

Nothing is random between runs but the machine's timing: seeds are fixed. Needs the dev
requirements (playwright) and Debian's chromium (`tests/browser_support.py`).
"""

from __future__ import annotations

import argparse
import math
import random
import shutil
import sys
import tempfile
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from browser_support import Playground, choose, launch, open_page, wait_idle  # noqa: E402

from conductor_core.testing.protocol_servers import (  # noqa: E402
    AnthropicServer,
    GeminiServer,
    OpenAIServer,
    ProtocolServer,
)

# --- what each provider says ------------------------------------------------------------------

CHAT = [
    "Explain what a circuit breaker is in one paragraph.",
    "And how should retries work with it?",
]
COMPARE_PROMPT = "Give me three tips for writing a good commit message."
ARENA_PROMPTS = [
    "Write a haiku about latency.",
    "Explain a p95 latency to a product manager in two sentences.",
    "Suggest a name for a dashboard that compares LLM providers.",
    "What is the difference between a timeout and a retry budget?",
]
CAPITALS = {"France": "Paris", "Japan": "Tokyo", "Kenya": "Nairobi", "Australia": "Canberra", "Canada": "Ottawa"}
TEMPLATE = "What is the capital of {{country}}? Answer in one word."
TRAFFIC_PROMPTS = [
    "Summarise this support ticket in one line.",
    "Classify the sentiment of this review: positive, neutral or negative.",
    "Extract the order number from this email.",
    "Translate 'the build is green' into French.",
    "Write a haiku about latency.",
]

_BOOK: dict[str, dict[str, str]] = {
    "circuit breaker": {
        "openai": "A circuit breaker watches calls to a dependency and, once failures pass a threshold, stops "
        "sending them for a while: callers get an immediate error instead of waiting on a timeout. After a "
        "cool-down it lets one trial request through and closes again if that succeeds.",
        "anthropic": "Think of it as a fuse for remote calls: when too many requests to a service fail, the breaker "
        "trips and further calls fail fast instead of piling up behind timeouts. After a pause it lets a single "
        "probe through, and only a success closes it again.",
        "gemini": "A circuit breaker is a pattern that stops calling a failing service after repeated errors, "
        "returns errors immediately while open, and probes the service again after a timeout.",
        "vllm": "It is a guard around a remote call: closed while things work, open after too many failures "
        "(fail fast), half-open to test recovery.",
    },
    "retries": {
        "openai": "Retry only what is safe to repeat, with exponential back-off and jitter, and a budget per "
        "request. Count each failed retry against the breaker, and never retry while it is open: the breaker "
        "decides whether to try, the retry policy decides how often.",
        "anthropic": "Retries sit inside the breaker: back off exponentially with jitter, cap the attempts (or "
        "the total time), and stop as soon as the breaker opens, so retries cannot turn an outage into a storm.",
        "gemini": "Use exponential back-off with jitter, limit the number of attempts, and do not retry when "
        "the circuit is open.",
        "vllm": "Back off, add jitter, cap attempts; skip retries while the breaker is open.",
    },
    "commit message": {
        "openai": "1. Summarise the change in the first line, under 50 characters.\n2. Say *why* in the body, "
        "not only what.\n3. Keep one logical change per commit.",
        "anthropic": '- Lead with an imperative summary ("Fix retry loop on 429").\n- Explain the reason and '
        "the effect in the body.\n- Reference the issue, and keep unrelated changes out.",
        "gemini": "Use a short imperative subject, explain why in the body, and keep commits small.",
        "vllm": "Short subject line; a body that explains why; one change per commit.",
    },
    "haiku": {
        "openai": "Tokens drip like rain\nthe spinner counts every beat\nfirst word, finally",
        "anthropic": "Ninety-fifth percentile\nwaits at the end of the line\npatience, measured in ms",
        "gemini": "Request goes out fast\nsilence stretches, then a word\nlatency has weight",
        "vllm": "Packets cross the room\nthe GPU hums and answers\ntime, in milliseconds",
    },
    "p95": {
        "openai": "The p95 latency is the time 95 out of 100 requests finish within. It shows what the slowest "
        "users regularly feel, which an average hides.",
        "anthropic": "Line up a hundred requests from fastest to slowest: the 95th one's time is the p95. It is "
        "the wait your unluckiest regular users see, so it is the number to set goals on.",
        "gemini": "p95 means 95% of requests are faster than this value. It captures the slow tail.",
        "vllm": "95% of requests finish faster than the p95.",
    },
    "name for a dashboard": {
        "openai": "How about **Switchboard**: it routes calls and shows who answers best.",
        "anthropic": "**Conductor** would fit: it keeps every provider in time and shows you who plays best.",
        "gemini": "Try **ModelScope** or **LLM Radar**.",
        "vllm": "**Panel of Models**.",
    },
    "timeout and a retry budget": {
        "openai": "A timeout limits one attempt; a retry budget limits how many attempts (or how much time) a "
        "whole request may spend. You need both: timeouts stop hangs, budgets stop retry storms.",
        "anthropic": "A timeout says how long to wait for one try. A retry budget says how much trying a request "
        "gets in total, so a slow dependency cannot multiply your load.",
        "gemini": "Timeout: per attempt. Retry budget: the total attempts or time allowed for a request.",
        "vllm": "Timeout is per try; the budget is for all tries.",
    },
}
_TRAFFIC_REPLIES = {
    "openai": "Done: here is the result, in one line as asked.",
    "anthropic": "Here is the answer, kept to a single line as requested.",
    "gemini": "Result: see below.",
    "vllm": "Answer follows.",
}
# Who gets a capital wrong (so the experiment's check has something to say).
_WRONG_CAPITALS = {("vllm", "Australia"): "Sydney", ("vllm", "Canada"): "Toronto", ("gemini", "Australia"): "Sydney"}


def answer_for(prompt: str, provider: str) -> str:
    """What `provider` answers to `prompt`: from the book, a capital, or a short reply."""
    text = prompt.lower()
    for country, capital in CAPITALS.items():
        if f"capital of {country.lower()}" in text:
            return _WRONG_CAPITALS.get((provider, country), capital) + "."
    for key, answers in _BOOK.items():
        if key in text:
            return answers[provider]
    return _TRAFFIC_REPLIES[provider]


def _last_user_text(body: dict[str, Any]) -> str:
    """The last user message of an OpenAI, Anthropic or Gemini request body."""
    turns = body.get("messages") or body.get("contents") or []
    for turn in reversed(turns):
        if turn.get("role") != "user":
            continue
        content = turn.get("content", turn.get("parts"))
        if isinstance(content, str):
            return content
        return " ".join(part.get("text", "") for part in content or [] if isinstance(part, dict))
    return ""


class _FromTheBook(ProtocolServer):
    """A protocol server that answers each prompt from `answer_for` in its provider's words
    (mixed in before the protocol's own class: `OpenAIBook(_FromTheBook, OpenAIServer)`)."""

    provider = ""

    async def _generate(self, request: Any, call: Any, **extra: Any) -> Any:
        # The base class reads `reply` before its first await: set on the server's one event
        # loop just before, no other request can change it in between.
        self.reply = answer_for(_last_user_text(call.body), self.provider)
        return await super()._generate(request, call, **extra)


class OpenAIBook(_FromTheBook, OpenAIServer):
    provider = "openai"


class VLLMBook(_FromTheBook, OpenAIServer):
    provider = "vllm"


class AnthropicBook(_FromTheBook, AnthropicServer):
    provider = "anthropic"


class GeminiBook(_FromTheBook, GeminiServer):
    provider = "gemini"


# --- the simulated hour -----------------------------------------------------------------------

VLLM_MODEL = "qwen2.5-7b-instruct"
KEYS = {
    "OPENAI_API_KEY": "sk-screenshots-not-a-key",
    "ANTHROPIC_API_KEY": "sk-ant-screenshots-not-a-key",
    "GEMINI_API_KEY": "screenshots-not-a-key",
}
# Per provider: requests in the hour, median latency (s), spread, time between words (s),
# failure rate. Gemini fails and slows down in the hour's last quarter.
PROFILES: dict[str, dict[str, float]] = {
    "openai": {"requests": 150, "latency": 0.45, "spread": 0.35, "chunk": 0.012, "failures": 0.02},
    "anthropic": {"requests": 110, "latency": 0.8, "spread": 0.3, "chunk": 0.02, "failures": 0.01},
    "gemini": {"requests": 140, "latency": 0.32, "spread": 0.3, "chunk": 0.008, "failures": 0.02},
    "vllm": {"requests": 90, "latency": 0.6, "spread": 0.4, "chunk": 0.03, "failures": 0.03},
    "local": {"requests": 16},
}
DEGRADED_FROM = 0.75
HOUR_S = 56 * 60  # the last minutes before the pictures belong to the experiment and the Arena


class Loopback:
    """The four servers, started together."""

    def __init__(self) -> None:
        self.servers = {
            "openai": OpenAIBook(seed=1),
            "anthropic": AnthropicBook(seed=2),
            "gemini": GeminiBook(seed=3),
            "vllm": VLLMBook(seed=4, models=[VLLM_MODEL]),
        }

    def __enter__(self) -> Loopback:
        for server in self.servers.values():
            server.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        for server in self.servers.values():
            server.stop()

    def env(self) -> dict[str, str]:
        return {
            **KEYS,
            "OPENAI_BASE_URL": self.servers["openai"].url,
            "ANTHROPIC_BASE_URL": self.servers["anthropic"].url,
            "GOOGLE_GEMINI_BASE_URL": self.servers["gemini"].url,
        }

    def config(self) -> str:
        """conductor.toml: the vLLM endpoint (no price is known for its model)."""
        url = self.servers["vllm"].url
        return f'[endpoints.vllm]\nbase_url = "{url}"\nmodels = ["{VLLM_MODEL}"]\ndisplay_name = "vLLM (on-prem)"\n'

    def conductor(self, data_dir: Path) -> Any:
        from conductor_core.config import EndpointConfig, load_settings
        from conductor_core.router import Conductor

        settings = load_settings(
            _env_file=None,
            data_dir=data_dir,
            openai_api_key=KEYS["OPENAI_API_KEY"],
            openai_base_url=self.servers["openai"].url,
            anthropic_api_key=KEYS["ANTHROPIC_API_KEY"],
            anthropic_base_url=self.servers["anthropic"].url,
            gemini_api_key=KEYS["GEMINI_API_KEY"],
            gemini_base_url=self.servers["gemini"].url,
            endpoints={"vllm": EndpointConfig(base_url=self.servers["vllm"].url, models=[VLLM_MODEL])},
        )
        return Conductor(settings)


def _play(conductor: Any, loopback: Loopback, provider: str, seed: int, when: dict[str, float]) -> None:
    """One provider's share of the hour, one request after another. `when[request_id]` is
    where each request belongs in the hour (0 to 1): its place in the provider's sequence."""
    from conductor_core.errors import ProviderError
    from conductor_core.models import ChatMessage, ChatRequest, MessageRole

    rng = random.Random(seed)
    profile = PROFILES[provider]
    server = loopback.servers.get(provider)
    count = int(profile["requests"])
    for n in range(count):
        if server is not None:
            degraded = provider == "gemini" and n >= DEGRADED_FROM * count
            typical = rng.lognormvariate(math.log(profile["latency"]), profile["spread"])
            server.latency_s = typical * (2.5 if degraded else 1.0)
            server.chunk_delay_s = profile["chunk"]
            server.failure_rate = 0.4 if degraded else profile["failures"]
        request_id = f"req_hour_{provider}_{n}"
        when[request_id] = (n + rng.random()) / count
        request = ChatRequest(
            provider=provider,
            messages=[ChatMessage(role=MessageRole.user, content=rng.choice(TRAFFIC_PROMPTS))],
            max_tokens=8 if provider == "local" else 256,
        )
        try:
            for _ in conductor.stream(request, request_id=request_id):
                pass
        except ProviderError:
            pass  # recorded in the log: a failure is part of the hour


def simulate_hour(loopback: Loopback, scratch: Path, data_dir: Path) -> int:
    """Play the hour into a scratch log (the APIs at once, then the local model alone: on a
    busy machine it would otherwise wait on the others' threads), then write its attempts into
    the playground's log, each request at its place in the hour before now and its retries
    as far after it as they really came. Returns how many attempts were written."""
    from conductor_core.models import utcnow
    from conductor_core.store import RequestLog

    conductor = loopback.conductor(scratch)
    when: dict[str, float] = {}
    try:
        apis = [name for name in PROFILES if name != "local"]
        threads = [
            threading.Thread(target=_play, args=(conductor, loopback, name, seed, when), daemon=True)
            for seed, name in enumerate(apis)
        ]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        _play(conductor, loopback, "local", len(apis), when)
        attempts = conductor.log.records()
    finally:
        conductor.close()
    first: dict[str, Any] = {}
    for attempt in attempts:
        first[attempt.request_id] = min(first.get(attempt.request_id, attempt.created_at), attempt.created_at)
    hour_start = utcnow() - timedelta(seconds=HOUR_S + 120)
    moved = [
        a.model_copy(
            update={
                "created_at": hour_start
                + timedelta(seconds=when[a.request_id] * HOUR_S)
                + (a.created_at - first[a.request_id])
            }
        )
        for a in attempts
    ]
    log = RequestLog(data_dir=data_dir)
    try:
        return log.write_many(moved)
    finally:
        log.close()


# --- what a person made: an experiment and blind votes ------------------------------------------


def run_workbench(loopback: Loopback, data_dir: Path) -> dict[str, str]:
    """An experiment run (capitals, four variants) and Arena rounds with votes, in the
    playground's log. Returns the ids the pages open: experiment, run, match."""
    from conductor_core.workbench.arena import Arena
    from conductor_core.workbench.datasets import read_dataset
    from conductor_core.workbench.experiments import ExperimentStore
    from conductor_core.workbench.runner import start_run
    from conductor_core.workbench.variants import Variant

    for server in loopback.servers.values():  # calm servers: the hour's trouble is over
        server.failure_rate, server.chunk_delay_s, server.latency_s = 0.0, 0.03, 0.3
    conductor = loopback.conductor(data_dir)
    try:
        store = ExperimentStore(conductor.log)
        rows = "country,expected\n" + "".join(f"{c},{capital}\n" for c, capital in CAPITALS.items())
        variants = [
            Variant(provider="openai", temperature=0.2, max_tokens=16),
            Variant(provider="anthropic", temperature=0.2, max_tokens=16),
            Variant(provider="vllm", temperature=0.2, max_tokens=16),
            Variant(provider="local", temperature=0.2, max_tokens=8),
        ]
        experiment = store.create("Capitals, one word", TEMPLATE, read_dataset(rows), variants)
        run = start_run(conductor, store, experiment.id)
        if not run.wait(600):
            raise RuntimeError("the experiment run did not finish within 10 minutes")

        arena = Arena(conductor.log)
        strength = {"anthropic": 1.6, "openai": 1.0, "gemini": 0.55}  # who tends to win a vote
        rng = random.Random(11)
        pairs = [("anthropic", "openai"), ("anthropic", "gemini"), ("openai", "gemini")]
        match_id = ""
        for n in range(24):
            names = list(pairs[n % 3]) if n < 23 else ["openai", "anthropic", "gemini"]
            prompt = ARENA_PROMPTS[n % len(ARENA_PROMPTS)]
            match = arena.start(prompt, [Variant(provider=name, max_tokens=256) for name in names])
            texts: dict[str, str] = {}
            for event in arena.answers(conductor, match.id):
                if event.text:
                    texts[event.letter] = texts.get(event.letter, "") + event.text
            # Which letter is whom: the answers are each provider's own words.
            said = {letter: " ".join(text.split()) for letter, text in texts.items()}
            letter_of = {
                name: next(
                    letter for letter, text in said.items() if text == " ".join(answer_for(prompt, name).split())
                )
                for name in names
            }
            weights = [strength[name] for name in names]
            winner = rng.choices(names, weights=weights)[0]
            arena.vote(match.id, letter_of[winner])
            match_id = match.id
        return {"experiment": experiment.id, "run": run.run_id, "match": match_id}
    finally:
        conductor.close()


# --- the pictures -------------------------------------------------------------------------------


def _full_page(page: Any, path: Path) -> None:
    """Streamlit scrolls inside its main block, not the document: the viewport grows to the
    content's height for the picture, then goes back."""
    size = page.viewport_size
    height = page.evaluate(
        '() => Math.max(...[...document.querySelectorAll(\'[data-testid="stMain"], '
        '[data-testid="stMainBlockContainer"]\')].map(e => e.scrollHeight), document.body.scrollHeight)'
    )
    page.set_viewport_size({"width": size["width"], "height": min(max(size["height"], int(height) + 40), 6000)})
    _settled(page)
    page.screenshot(path=str(path))
    page.set_viewport_size(size)


def _settled(page: Any) -> None:
    """Until nothing is faded as stale or still loading, and every chart and table has drawn."""
    wait_idle(page)
    page.wait_for_function(
        """() => !document.querySelector('[data-stale="true"], [data-testid="stSkeleton"]') &&
            [...document.querySelectorAll('[data-testid="stVegaLiteChart"]')].every(c => c.querySelector('svg, canvas')) &&
            [...document.querySelectorAll('[data-testid="stDataFrame"]')].every(t => t.querySelector('canvas'))""",
        timeout=60_000,
        polling=100,
    )


def _open_dashboard_hour(page: Any, url: str) -> None:
    """The Dashboard's last hour, paused: live, it redraws every 2 seconds, and on a busy
    machine a redraw takes most of that, so the page would never be at rest for a picture."""
    page.goto(f"{url}/dashboard")
    page.get_by_role("heading", name="Dashboard", exact=True).wait_for(timeout=120_000)
    page.get_by_test_id("stButtonGroup").get_by_text("1h", exact=True).click()
    page.get_by_text("Last hour", exact=False).first.wait_for(timeout=60_000)
    page.get_by_text("Live", exact=True).click()
    page.get_by_text("· paused", exact=False).first.wait_for(timeout=60_000)
    page.get_by_test_id("stVegaLiteChart").nth(6).wait_for(timeout=60_000)


_ANSWERS_DONE = """(n) => [...document.querySelectorAll('[data-testid="stChatMessage"]')]
    .filter(e => e.querySelector('[data-testid="stChatMessageAvatarAssistant"]'))
    .filter(e => e.innerText.includes('tok/s')).length >= n"""


def take_screenshots(url: str, ids: dict[str, str], out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    made: list[Path] = []

    def shot(page: Any, name: str, *, full: bool = False) -> None:
        path = out / f"{name}.png"
        if full:
            _full_page(page, path)
        else:
            _settled(page)
            page.screenshot(path=str(path))
        made.append(path)
        print(f"  {path}", flush=True)

    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 960})
            page.goto(url)
            page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
            wait_idle(page, 120_000)
            choose(page, "Provider", "Anthropic", within=page.get_by_test_id("stSidebar"))
            wait_idle(page)
            for n, prompt in enumerate(CHAT, start=1):
                box = page.get_by_test_id("stChatInputTextArea")
                box.fill(prompt)
                box.press("Enter")
                page.wait_for_function(_ANSWERS_DONE, arg=n, timeout=120_000)
                wait_idle(page)
            _settled(page)
            page.evaluate("() => document.querySelector('[data-testid=\"stMain\"]').scrollTo(0, 1e6)")
            shot(page, "chat")

            targets = "openai,anthropic,local"
            page.goto(f"{url}/compare?compare={targets}&prompt={COMPARE_PROMPT.replace(' ', '+')}")
            page.get_by_text("Which answer is better?").wait_for(timeout=300_000)
            shot(page, "compare", full=True)

            page.goto(f"{url}/experiments?experiment={ids['experiment']}&run={ids['run']}")
            page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=120_000)
            page.set_viewport_size({"width": 1280, "height": 1700})
            shot(page, "experiments")
            page.set_viewport_size({"width": 1440, "height": 960})

            page.goto(f"{url}/arena?match={ids['match']}")
            page.get_by_text("See the ratings on the Dashboard").wait_for(timeout=120_000)
            shot(page, "arena", full=True)

            _open_dashboard_hour(page, url)
            shot(page, "dashboard", full=True)

            open_page(page, "Providers")
            page.get_by_role("heading", name="Add an OpenAI-compatible endpoint").wait_for(timeout=60_000)
            shot(page, "providers", full=True)

            phone = {**p.devices["iPhone 13"], "viewport": {"width": 390, "height": 844}, "device_scale_factor": 1}
            phone.pop("default_browser_type", None)
            small = browser.new_context(**phone).new_page()
            _open_dashboard_hour(small, url)
            _settled(small)
            small.get_by_role("heading", name="Providers").evaluate("e => e.scrollIntoView({block: 'start'})")
            shot(small, "phone")
        finally:
            browser.close()
    return made


# --- the whole run ----------------------------------------------------------------------------


def _steps(out: Path, work: Path) -> Iterator[str]:
    with Loopback() as loopback:
        yield "an hour of traffic through the core (a few minutes)"
        written = simulate_hour(loopback, work / "scratch", work / "data")
        yield f"{written} attempts written over the last hour; an experiment run and Arena rounds"
        ids = run_workbench(loopback, work / "data")
        yield "the playground, and Chromium"
        server = Playground(work, config=loopback.config(), extra_env=loopback.env(), name="screenshots")
        try:
            take_screenshots(server.url, ids, out)
        finally:
            server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="The README's screenshots (docs/*.png), from a real run.")
    parser.add_argument("--out", type=Path, default=ROOT / "docs", help="where the PNG files go (default: docs/)")
    parser.add_argument("--keep", action="store_true", help="keep the working directory (logs, database)")
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="conductor-screenshots-"))
    try:
        for step in _steps(args.out, work):
            print(f"- {step}", flush=True)
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
