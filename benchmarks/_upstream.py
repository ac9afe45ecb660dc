"""Loopback OpenAI-compatible upstreams for the benchmarks, in their own process.

    python -m benchmarks._upstream --latency-ms 50,100 --reply "a b c"

Starts one `OpenAIServer` per latency (the project's wire-level test server, on uvicorn),
prints one JSON line {"urls": [...]} and serves until its stdin closes.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading

from conductor_core.testing.protocol_servers import OpenAIServer


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--latency-ms", default="0", help="comma-separated: one server per value")
    p.add_argument("--chunk-delay-ms", type=float, default=0.0)
    p.add_argument("--reply", default="Hello from the loopback server.")
    # The model every benchmark names (a server refuses a model it does not serve, as the APIs do).
    p.add_argument("--models", default="bench-model", help="comma-separated: the models the servers serve")
    args = p.parse_args(argv)
    servers = [
        OpenAIServer(
            reply=args.reply,
            latency_s=float(ms) / 1000,
            chunk_delay_s=args.chunk_delay_ms / 1000,
            models=args.models.split(","),
        ).start()
        for ms in args.latency_ms.split(",")
    ]
    stop = threading.Event()

    def forget_requests() -> None:
        # The server keeps a record of every request for tests; a load test would grow it
        # by gigabytes. Emptying the list in place is safe under the GIL.
        while not stop.wait(1.0):
            for server in servers:
                del server.requests[:]

    threading.Thread(target=forget_requests, daemon=True).start()
    print(json.dumps({"urls": [s.url for s in servers]}), flush=True)
    try:
        sys.stdin.read()  # until the parent closes our stdin (or dies)
    finally:
        stop.set()
        for server in servers:
            server.stop()


if __name__ == "__main__":
    main()
