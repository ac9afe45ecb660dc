"""What every benchmark shares: arguments, the machine description, statistics, the JSON
result file, loopback upstream servers in their own process, and a clean environment.

Conventions (see BENCHMARKS.md):

* Every figure that has a target is a ratio or a difference against a baseline measured in
  the same run, on the same machine, in interleaved rounds, so a noisy machine moves both.
* A round measures every variant once (in a shuffled order); a variant's figure is the
  median of its round medians, and p99 is over all of its samples.
* Upstream servers run in a separate process: a server thread inside the measuring process
  would compete with the client for the GIL and bill its own work to the client.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any, Self

from conductor_core.providers.spec import provider_variables

REPO = Path(__file__).resolve().parents[1]
RESULTS_DIR = REPO / "benchmarks" / "results"

# Variables that would point a Conductor at real providers or another config: a benchmark
# must measure only the loopback endpoints it configures itself.
SCRUBBED_ENV = (
    *provider_variables(),  # every provider's key and base URL (their specs)
    "CONDUCTOR_API_KEY",
    "CONDUCTOR_DATABASE_URL",
    "CONDUCTOR_CONFIG",
    "CONDUCTOR_ENDPOINTS",
    "CONDUCTOR_DATA_DIR",
)

_PACKAGES = (
    "openai",
    "httpx",
    "pydantic",
    "SQLAlchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "pandas",
    "numpy",
    "altair",
    "streamlit",
    "llama_cpp_python",
    "psycopg",
    "tenacity",
)


# --- arguments and results ------------------------------------------------------------------


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--quick", action="store_true", help="small sizes (CI): proves the benchmark runs, figures are rough"
    )
    p.add_argument(
        "--out", type=Path, default=RESULTS_DIR, help="directory for the JSON result (default: benchmarks/results)"
    )
    return p


def machine() -> dict[str, Any]:
    """Cores, CPU model, memory, Python and the versions that matter, plus the load now."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    memory_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                memory_gb = round(int(line.split()[1]) / 1024 / 1024, 1)
    except OSError:
        pass
    versions = {}
    for name in _PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory_gb": memory_gb,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": load(),
        "packages": versions,
    }


def load() -> list[float]:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:  # pragma: no cover - not on Linux
        return []


def write_result(out_dir: Path, name: str, payload: dict[str, Any]) -> Path:
    """`out_dir/name.json`, written whole or not at all (a tmp file renamed into place)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=2, sort_keys=False, default=_json_default) + "\n")
    tmp.replace(path)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def envelope(name: str, args: argparse.Namespace, started: float, **body: Any) -> dict[str, Any]:
    """The common head of every result file."""
    return {
        "benchmark": name,
        "quick": bool(args.quick),
        "run_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "duration_s": round(time.perf_counter() - started, 2),
        "machine": machine(),
        **body,
    }


def target(
    description: str, measured: float | None, limit: float, *, at_most: bool = True, unit: str = ""
) -> dict[str, Any]:
    """One target: met when `measured` is at most (or at least) `limit`. None: not measured."""
    met = None if measured is None else (measured <= limit if at_most else measured >= limit)
    return {
        "target": description,
        "measured": None if measured is None else round(float(measured), 4),
        "limit": limit,
        "comparison": "<=" if at_most else ">=",
        "unit": unit,
        "met": met,
    }


# --- statistics -------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile (0..1), linear between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def rounded(value: float | None, digits: int = 3) -> float | None:
    return None if value is None or not math.isfinite(value) else round(value, digits)


@dataclass
class Rounds:
    """Samples per variant, kept per round, for "median of round medians" and p99."""

    rounds: dict[str, list[list[float]]] = field(default_factory=dict)

    def add(self, variant: str, round_samples: list[float]) -> None:
        round_samples = [x for x in round_samples if x == x]  # drop NaN (no first token seen)
        if round_samples:
            self.rounds.setdefault(variant, []).append(list(round_samples))

    def samples(self, variant: str) -> list[float]:
        return [x for r in self.rounds.get(variant, []) for x in r]

    def median_of_medians(self, variant: str) -> float | None:
        medians = [statistics.median(r) for r in self.rounds.get(variant, []) if r]
        return statistics.median(medians) if medians else None

    def summary(self, variant: str) -> dict[str, Any]:
        samples = self.samples(variant)
        return {
            "n": len(samples),
            "rounds": len(self.rounds.get(variant, [])),
            "median_of_round_medians": rounded(self.median_of_medians(variant)),
            "p50": rounded(percentile(samples, 0.5)),
            "p99": rounded(percentile(samples, 0.99)),
            "min": rounded(min(samples) if samples else None),
            "mean": rounded(statistics.fmean(samples) if samples else None),
        }

    def added(self, variant: str, baseline: str) -> dict[str, Any]:
        """What `variant` adds over `baseline`: the difference of their medians of round
        medians, the median of the per-round differences (paired, so drifts between rounds
        cancel), and the difference of their p99s."""
        a, b = self.rounds.get(variant, []), self.rounds.get(baseline, [])
        paired = [statistics.median(x) - statistics.median(y) for x, y in zip(a, b, strict=False) if x and y]
        mv, mb = self.median_of_medians(variant), self.median_of_medians(baseline)
        pv, pb = percentile(self.samples(variant), 0.99), percentile(self.samples(baseline), 0.99)
        return {
            "p50": rounded(mv - mb if mv is not None and mb is not None else None),
            "paired_round_median": rounded(statistics.median(paired) if paired else None),
            "p99": rounded(pv - pb if pv is not None and pb is not None else None),
        }


def interleaved(
    variants: dict[str, Callable[[int], dict[str, list[float]]]],
    *,
    rounds: int,
    per_round: int,
    warmup: int,
    seed: int = 1,
) -> dict[str, Rounds]:
    """Warm every variant up, then `rounds` rounds in which each variant (in a shuffled
    order) runs `per_round` requests. A variant is a function `n -> {metric: n samples}`;
    the result is one `Rounds` per metric."""
    for run in variants.values():
        if warmup:
            run(warmup)
    rng = random.Random(seed)
    results: dict[str, Rounds] = {}
    names = list(variants)
    for _ in range(rounds):
        rng.shuffle(names)
        for name in names:
            for metric, samples in variants[name](per_round).items():
                results.setdefault(metric, Rounds()).add(name, samples)
    return results


# --- environment ---------------------------------------------------------------------------------


def scrub_environ() -> None:
    """Remove provider keys and Conductor overrides from this process's environment."""
    for name in SCRUBBED_ENV:
        os.environ.pop(name, None)


def child_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in SCRUBBED_ENV}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def quiet_logging() -> None:
    """Warnings from the libraries under test are noise here (streamlit's bare mode, the
    loopback servers); errors still show."""
    logging.basicConfig(level=logging.ERROR)
    for name in ("streamlit", "conductor", "gateway", "uvicorn", "httpx", "LiteLLM", "litellm"):
        logging.getLogger(name).setLevel(logging.ERROR)


# --- loopback upstreams in their own process -------------------------------------------------


class Upstreams:
    """OpenAI-compatible loopback servers (conductor_core.testing.protocol_servers.OpenAIServer),
    one per latency, served by `python -m benchmarks._upstream` in a child process."""

    def __init__(self, latencies_ms: Iterable[float], *, reply: str, chunk_delay_ms: float = 0.0) -> None:
        self.latencies_ms = list(latencies_ms)
        command = [
            sys.executable,
            "-m",
            "benchmarks._upstream",
            "--latency-ms",
            ",".join(f"{x:g}" for x in self.latencies_ms),
            "--chunk-delay-ms",
            f"{chunk_delay_ms:g}",
            "--reply",
            reply,
        ]
        self._process = subprocess.Popen(
            command, cwd=REPO, env=child_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.kill()
            raise RuntimeError("the upstream server process did not start")
        self.urls: list[str] = json.loads(line)["urls"]

    @property
    def url(self) -> str:
        return self.urls[0]

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        if self._process.poll() is None:
            try:
                assert self._process.stdin is not None
                self._process.stdin.close()  # EOF: the child stops its servers and exits
                self._process.wait(timeout=10)
            except (subprocess.TimeoutExpired, OSError):
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Upstreams:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def cpu_seconds(pid: int, *, children: bool = False) -> float | None:
    """CPU time (user + system, all threads) a process has used so far, plus that of its
    live child processes when asked; None off Linux."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None
    if children:
        for task in Path(f"/proc/{pid}/task").glob("*/children"):
            for child in task.read_text().split():
                total += cpu_seconds(int(child), children=True) or 0.0
    return total


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class ServerProcess:
    """A server the benchmarks start in its own process: `_answers()` says when it is ready;
    closing (or leaving the `with` block) terminates it, and kills it after 10 s."""

    name = "the server"
    ready_timeout_s = 60.0
    _process: subprocess.Popen[bytes]

    def _answers(self) -> bool:
        raise NotImplementedError

    def wait_ready(self, timeout_s: float | None = None) -> None:
        import httpx

        deadline = time.monotonic() + (timeout_s or self.ready_timeout_s)
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                error = self._process.stderr.read().decode(errors="replace") if self._process.stderr else ""
                raise RuntimeError(f"{self.name} exited: {error[-2000:]}")
            try:
                if self._answers():
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.close()
        raise TimeoutError(f"{self.name} did not start")

    @property
    def pid(self) -> int:
        return self._process.pid

    def close(self) -> None:
        if self._process.poll() is None:
            self._process.terminate()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LiteLLMProxyProcess(ServerProcess):
    """The LiteLLM proxy (`litellm --config`, its own virtualenv) in front of the same upstream,
    with a master key: the side-by-side baseline of the gateway benchmark."""

    name = "the LiteLLM proxy"
    ready_timeout_s = 180.0

    def __init__(self, python: str, upstream_url: str, model: str, key: str, workers: int = 1) -> None:
        import tempfile

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self._dir = tempfile.mkdtemp(prefix="litellm-bench-")
        config = Path(self._dir) / "config.yaml"
        config.write_text(
            "model_list:\n"
            f"  - model_name: {model}\n"
            "    litellm_params:\n"
            f"      model: openai/{model.split('/')[-1]}\n"
            f"      api_base: {upstream_url}\n"
            "      api_key: sk-2YUtYk7puEkl_r2TPJrz6Dim\n"
            f"general_settings:\n  master_key: {key}\n"
        )
        env = child_env(LITELLM_MASTER_KEY=key, LITELLM_LOCAL_MODEL_COST_MAP="True", LITELLM_LOG="ERROR")
        litellm = str(Path(python).with_name("litellm"))
        command = [
            litellm,
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            str(workers),
        ]
        self._process = subprocess.Popen(
            command, cwd=self._dir, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        self._key = key
        self.wait_ready()

    def _answers(self) -> bool:
        import httpx

        r = httpx.get(self.url + "/models", headers={"Authorization": f"Bearer {self._key}"}, timeout=1.0)
        return r.status_code == 200


class GatewayProcess(ServerProcess):
    """The gateway as users start it (`python -m gateway`, its own process), configured by
    environment variables with one named endpoint pointing at an upstream. `repo`: the
    source tree it runs from (another revision's, for a before/after comparison)."""

    name = "the gateway"
    ready_timeout_s = 120.0

    def __init__(
        self,
        endpoints: dict[str, str],
        data_dir: Path,
        *,
        models: Sequence[str] = ("bench-model",),
        wait: bool = True,
        workers: int = 1,
        api_key: str | None = None,
        repo: Path = REPO,
        extra_env: dict[str, str] | None = None,
    ) -> None:
        """`extra_env`: more settings (e.g. CONDUCTOR_REDIS_URL for the shared-state benchmark)."""
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = {name: {"base_url": url, "models": list(models)} for name, url in endpoints.items()}
        env = child_env(
            CONDUCTOR_GATEWAY_HOST="127.0.0.1",
            CONDUCTOR_GATEWAY_PORT=str(self.port),
            # Access logs off (a line per request on stderr is a cost users tune away).
            CONDUCTOR_GATEWAY_LOG_LEVEL="warning",
            CONDUCTOR_LOCAL_ENABLED="false",
            CONDUCTOR_DATA_DIR=str(data_dir),
            CONDUCTOR_ENDPOINTS=json.dumps(config),
            CONDUCTOR_GATEWAY_WORKERS=str(workers),
            **({"CONDUCTOR_API_KEY": api_key} if api_key else {}),
            **(extra_env or {}),
        )
        env["PYTHONPATH"] = os.pathsep.join([str(repo), *env["PYTHONPATH"].split(os.pathsep)[1:]])
        command = [sys.executable, "-m", "gateway"]
        self._process = subprocess.Popen(command, cwd=repo, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        if wait:
            self.wait_ready()

    def _answers(self) -> bool:
        """/health answers once the gateway has imported and built its Conductor."""
        import httpx

        return httpx.get(self.url.removesuffix("/v1") + "/health", timeout=1.0).status_code < 500


class FloorProcess(ServerProcess):
    """The floor of the gateway's stack (`benchmarks/floor_proxy.py`: uvicorn and aiohttp, a
    bearer check, the body forwarded and the answer streamed back) in its own process."""

    name = "the floor proxy"

    def __init__(self, upstream_url: str, key: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        env = child_env(FLOOR_UPSTREAM=upstream_url, FLOOR_KEY=key, FLOOR_PORT=str(self.port))
        command = [sys.executable, "-m", "benchmarks.floor_proxy"]
        self._process = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        self.wait_ready()

    def _answers(self) -> bool:
        import httpx

        httpx.get(self.url + "/chat/completions", timeout=1.0)  # any answer (401) will do
        return True


@contextmanager
def timed() -> Iterator[Callable[[], float]]:
    """`with timed() as elapsed:` ... `elapsed()` in seconds (frozen at exit)."""
    t0 = time.perf_counter()
    end: list[float] = []
    yield lambda: (end[0] if end else time.perf_counter()) - t0
    end.append(time.perf_counter())


def wait_for_quiet(max_load: float = 2.0, max_wait_s: float = 0.0) -> list[float]:
    """Wait (at most `max_wait_s`) for the 1-minute load average to drop below `max_load`;
    returns the load seen. The figures are ratios and hold on a busy machine, but quieter
    is tighter."""
    deadline = time.monotonic() + max_wait_s
    while load() and load()[0] >= max_load and time.monotonic() < deadline:
        time.sleep(5)
    return load()


def report(lines: Iterable[str]) -> None:
    print("\n".join(lines), flush=True)
