"""Where Conductor's per-request time goes: profiles N calls of Conductor.chat (provider
named, or AUTO) against a loopback upstream in another process, and prints the top of
the profile. Not a benchmark (no JSON): the tool used to find the costs BENCHMARKS.md lists.

    python -m benchmarks.profile_overhead [--auto] [--stream] [-n 300] [--pyinstrument]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import sys
import tempfile
import time
from pathlib import Path

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.bench_overhead import MODEL, REPLY, _conductor_variant
from benchmarks.common import Upstreams, quiet_logging, scrub_environ


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--auto", action="store_true", help="profile AUTO instead of the named provider")
    p.add_argument("--stream", action="store_true", help="profile Conductor.stream instead of .chat")
    p.add_argument("-n", type=int, default=300)
    p.add_argument("--latency-ms", type=float, default=0.0, help="upstream latency (0: only our own costs show)")
    p.add_argument(
        "--pyinstrument", action="store_true", help="use pyinstrument (pip install pyinstrument) instead of cProfile"
    )
    p.add_argument("--top", type=int, default=35)
    args = p.parse_args(argv)
    scrub_environ()
    quiet_logging()

    from conductor_core.config import EndpointConfig, load_settings
    from conductor_core.router import Conductor

    with tempfile.TemporaryDirectory() as tmp, Upstreams([args.latency_ms], reply=REPLY) as upstream:
        settings = load_settings(
            _env_file=None,
            local_enabled=False,
            endpoints={"up": EndpointConfig(base_url=upstream.url, models=[MODEL])},
            data_dir=Path(tmp),
        )
        conductor = Conductor(settings, source="benchmark")
        run = _conductor_variant(conductor, "auto" if args.auto else "up")
        run(20, args.stream)  # warm-up
        t0 = time.perf_counter()
        if args.pyinstrument:
            from pyinstrument import Profiler

            profiler = Profiler(interval=0.0002)
            profiler.start()
            run(args.n, args.stream)
            profiler.stop()
            print(profiler.output_text(unicode=True, color=False, show_all=False))
        else:
            profile = cProfile.Profile()
            profile.enable()
            run(args.n, args.stream)
            profile.disable()
            pstats.Stats(profile).sort_stats("cumulative").print_stats(args.top)
        elapsed = time.perf_counter() - t0
        print(f"{args.n} calls in {elapsed:.2f} s under the profiler ({elapsed / args.n * 1000:.2f} ms per call)")
        print("request-log rows:", conductor.log.count(), "write errors:", conductor.log.write_errors)
        conductor.close()


if __name__ == "__main__":
    main()
