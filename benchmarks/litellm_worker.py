"""The LiteLLM side of the overhead benchmark, in its own interpreter.

LiteLLM is a benchmark-only dependency: installing it into the project's virtualenv would
downgrade python-dateutil (4.0.0 -> 2.9.0.post0, through botocore), so it lives in
`.venv-bench` (see requirements-bench.txt) and this worker runs there. It imports only
litellm and openai, never the project.

It measures, in its own process, both LiteLLM's Router and the same request straight
through the openai SDK, so LiteLLM's added time is taken against a baseline in the same
process, exactly as Conductor's is in the parent. Timing happens here: the pipe between
the processes is not part of any figure.

Protocol: one JSON object per line on stdin, one answer per line on stdout.
    {"cmd": "setup", "url": "...", "model": "bench-model"}
    {"cmd": "run", "variant": "litellm" | "direct", "stream": false, "n": 20, "request": {...}}
        -> {"total_ms": [...], "ttft_ms": [...], "cpu_ms": [...]}   (cpu: this process's CPU time)
    {"cmd": "quit"}
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

# No network: LiteLLM would otherwise fetch its model price map from GitHub at import.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
os.environ.setdefault("LITELLM_LOG", "ERROR")


def _versions() -> dict[str, str | None]:
    from importlib import metadata

    found: dict[str, str | None] = {}
    for name in ("litellm", "openai", "httpx", "pydantic"):
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    return found


class Worker:
    def __init__(self, url: str, model: str) -> None:
        import litellm
        import openai
        from litellm import Router

        litellm.suppress_debug_info = True
        self.model = model
        self.direct = openai.OpenAI(base_url=url, api_key="sk-Ry4KmpNXF9-NAVrCkFK_23wY", max_retries=0, timeout=60)
        # LiteLLM's documented way to reach any OpenAI-compatible server: the "openai/" prefix
        # and api_base. Everything else is LiteLLM's default Router.
        self.router = Router(
            model_list=[
                {
                    "model_name": model,
                    "litellm_params": {
                        "model": f"openai/{model}",
                        "api_base": url,
                        "api_key": "sk-Ry4KmpNXF9-NAVrCkFK_23wY",
                    },
                }
            ]
        )

    def _call(self, variant: str, stream: bool, request: dict[str, Any]) -> tuple[float, float | None, float]:
        c0, t0 = time.process_time(), time.perf_counter()
        ttft = None
        if variant == "direct":
            kwargs = dict(request, model=self.model)
            if stream:
                with self.direct.chat.completions.create(
                    **kwargs, stream=True, stream_options={"include_usage": True}
                ) as s:
                    for chunk in s:
                        if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                            ttft = time.perf_counter()
            else:
                self.direct.chat.completions.create(**kwargs)
        else:
            if stream:
                response = self.router.completion(
                    model=self.model, **request, stream=True, stream_options={"include_usage": True}
                )
                for chunk in response:
                    if ttft is None and chunk.choices and chunk.choices[0].delta.content:
                        ttft = time.perf_counter()
            else:
                self.router.completion(model=self.model, **request)
        end = time.perf_counter()
        return (end - t0) * 1000, None if ttft is None else (ttft - t0) * 1000, (time.process_time() - c0) * 1000

    def run(self, variant: str, stream: bool, n: int, request: dict[str, Any]) -> dict[str, list[float | None]]:
        total, ttft, cpu = [], [], []
        for _ in range(n):
            t, f, c = self._call(variant, stream, request)
            total.append(t)
            ttft.append(f)
            cpu.append(c)
        return {"total_ms": total, "ttft_ms": ttft, "cpu_ms": cpu}


def main() -> None:
    worker: Worker | None = None
    for line in sys.stdin:
        message = json.loads(line)
        command = message["cmd"]
        try:
            if command == "setup":
                worker = Worker(message["url"], message["model"])
                answer: dict[str, Any] = {"ok": True, "versions": _versions()}
            elif command == "run":
                assert worker is not None, "setup first"
                answer = worker.run(message["variant"], bool(message["stream"]), int(message["n"]), message["request"])
            elif command == "quit":
                return
            else:
                answer = {"error": f"unknown command {command!r}"}
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which fails the run
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        sys.stdout.write(json.dumps(answer) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
