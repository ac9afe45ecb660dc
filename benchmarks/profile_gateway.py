"""Where the gateway's CPU goes, and what a change saved: the gateway's CPU per request and
per 20-chunk stream under benchmark 6's load (50 keep-alive clients, 50 ms upstream), for
this checkout and, with `--baseline REV`, the same gateway at another git revision, in
interleaved blocks of the same run (a loaded machine slows both alike). Optionally samples
the gateway with py-spy (`--py-spy DIR`: collapsed stacks per mode, `pip install py-spy`; `benchmarks.profile_gateway --summarise FILE` ranks them).

CPU per request is the gateway process's CPU seconds (user + system, all threads, from
/proc) over the requests it answered in the block: steadier than wall time on a shared
machine. Not a benchmark with a target (no JSON in results/): the tool behind the figures
in BENCHMARKS.md's gateway section.

    python -m benchmarks.profile_gateway [--baseline main] [--floor] [--blocks 4] [--block-s 6] [--py-spy /tmp/flames]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import re
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_gateway_load import KEY, MODEL, REPLY, UPSTREAM_LATENCY_MS, _block
from benchmarks.common import (
    REPO,
    FloorProcess,
    GatewayProcess,
    Upstreams,
    load,
    quiet_logging,
    scrub_environ,
)


def _export(revision: str, into: Path) -> Path:
    """The tree of `revision` (a commit, branch or tag of this repository) under `into`."""
    archive = subprocess.run(["git", "archive", revision], cwd=REPO, capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(into, filter="data")
    return into


def summarise(path: Path, top: int = 40) -> None:
    """py-spy's collapsed stacks ranked: inclusive share per function (each counted once per
    sample) and self share, so "what is under this call" and "who burns it" both show."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = [re.sub(r" \((.*?)/(site-packages/|wt/[^/]+/|gw2/[^/]+/)?", " (", f) for f in stack.split(";")]
        frames = [re.sub(r":\d+\)$", ")", f) for f in frames if not f.startswith(("process ", "thread "))]
        total += n
        for frame in set(frames):
            inclusive[frame] += n
        if frames:
            own[frames[-1]] += n
    print(f"{total} samples")
    for title, counter in (("inclusive", inclusive), ("self", own)):
        print(f"--- {title}")
        for frame, n in counter.most_common(top):
            print(f"{n / total * 100:5.1f}%  {frame}")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--summarise", type=Path, help="rank the stacks of a py-spy raw file and exit")
    p.add_argument("--baseline", help="a git revision to measure beside this checkout (e.g. main)")
    p.add_argument("--blocks", type=int, default=4, help="blocks per gateway and mode")
    p.add_argument("--block-s", type=float, default=6.0)
    p.add_argument("--py-spy", type=Path, help="record this checkout's gateway with py-spy into DIR (slows it)")
    p.add_argument("--modes", default="chat,stream")
    p.add_argument("--floor", action="store_true", help="also measure the floor (benchmarks/floor_proxy.py)")
    args = p.parse_args(argv)
    if args.summarise:
        summarise(args.summarise)
        return
    scrub_environ()
    quiet_logging()
    with (
        tempfile.TemporaryDirectory(prefix="conductor-profile-gw-") as tmp,
        Upstreams([UPSTREAM_LATENCY_MS], reply=REPLY) as upstream,
    ):
        repos = {"this checkout": REPO}
        if args.baseline:
            repos[f"baseline {args.baseline}"] = _export(args.baseline, Path(tmp) / "baseline")
        gateways: dict[str, GatewayProcess | FloorProcess] = {
            name: GatewayProcess({"up": upstream.url}, Path(tmp) / f"data-{i}", api_key=KEY, repo=repo)
            for i, (name, repo) in enumerate(repos.items())
        }
        if args.floor:
            gateways["floor (uvicorn + aiohttp)"] = FloorProcess(upstream.url, KEY)
        models = {name: MODEL if isinstance(g, FloorProcess) else f"up/{MODEL}" for name, g in gateways.items()}
        try:
            for mode in args.modes.split(","):
                stream = mode == "stream"
                cpu: dict[str, list[float]] = {name: [] for name in gateways}
                rps: dict[str, list[float]] = {name: [] for name in gateways}
                for name, gateway in gateways.items():
                    asyncio.run(_block(gateway.url, models[name], stream, 2.0))  # warm-up
                spy = None
                if args.py_spy:
                    args.py_spy.mkdir(parents=True, exist_ok=True)
                    out = args.py_spy / f"gateway-{mode}.txt"
                    spy = subprocess.Popen(
                        [
                            str(Path(sys.executable).with_name("py-spy")),
                            "record",
                            "-p",
                            str(gateways["this checkout"].pid),
                            "-o",
                            str(out),
                            "-f",
                            "raw",
                            "-r",
                            "200",
                            "--nonblocking",
                        ],
                        stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL,
                    )
                names = list(gateways)
                for index in range(args.blocks):
                    for name in names if index % 2 == 0 else reversed(names):
                        gateway = gateways[name]
                        block = asyncio.run(
                            _block(gateway.url, models[name], stream, args.block_s, {"gateway": gateway.pid})
                        )
                        cpu[name].append(block["cpu_ms_per_request"]["gateway"])
                        rps[name].append(block["rps"])
                        if block["errors"]:
                            print(f"  {name}: {block['errors']} errors in a block", flush=True)
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its file on SIGINT
                    spy.wait(timeout=60)
                unit = "20-chunk stream" if stream else "request"
                print(f"{mode} (load average {load()}):")
                for name in gateways:
                    print(
                        f"  {name:28} CPU {statistics.median(cpu[name]):6.2f} ms per {unit} "
                        f"(blocks {', '.join(f'{x:.2f}' for x in cpu[name])}); "
                        f"{statistics.median(rps[name]):6.1f} per s"
                    )
                if len(gateways) > 1:  # block by block (neighbours in time): drifts of the machine's load cancel
                    first = names[0]
                    for name in names[1:]:
                        paired = [a - b for a, b in zip(cpu[first], cpu[name], strict=True)]
                        print(f"  {first} - {name}: median of paired blocks {statistics.median(paired):+.3f} ms")
        finally:
            for gateway in gateways.values():
                gateway.close()


if __name__ == "__main__":
    main()
