"""The floor of the gateway's stack: uvicorn and aiohttp with nothing else. A bearer check,
then the request body forwarded as it is to the upstream's chat completions and the answer
streamed back as it arrives: no routing, validation, logging, retries or conversion.

What no gateway built on these two libraries can go below: benchmark 6 measures it on the
same load, in the same run, and reports the gateway's CPU as a multiple of it.

    FLOOR_UPSTREAM=http://127.0.0.1:PORT/v1 FLOOR_KEY=... FLOOR_PORT=... python -m benchmarks.floor_proxy
"""

from __future__ import annotations

import os
from typing import Any

import aiohttp
import uvicorn

UPSTREAM = os.environ.get("FLOOR_UPSTREAM", "http://127.0.0.1:8001/v1").rstrip("/") + "/chat/completions"
BEARER = b"Bearer " + os.environ.get("FLOOR_KEY", "").encode()
# The upstream's own key (a proxy holds the provider's key; clients hold the proxy's).
UPSTREAM_HEADERS = {"content-type": "application/json", "authorization": "Bearer sk-floor-upstream-key"}


class Floor:
    def __init__(self) -> None:
        self.session: aiohttp.ClientSession | None = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if dict(scope["headers"]).get(b"authorization") != BEARER:
            await send({"type": "http.response.start", "status": 401, "headers": [(b"content-length", b"0")]})
            await send({"type": "http.response.body", "body": b""})
            return
        parts = []
        while True:
            message = await receive()
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        assert self.session is not None
        async with self.session.post(UPSTREAM, data=b"".join(parts), headers=UPSTREAM_HEADERS) as upstream:
            headers = [(b"content-type", upstream.headers.get("content-type", "application/json").encode())]
            if "content-length" in upstream.headers:
                headers.append((b"content-length", upstream.headers["content-length"].encode()))
            await send({"type": "http.response.start", "status": upstream.status, "headers": headers})
            async for piece in upstream.content.iter_any():
                await send({"type": "http.response.body", "body": piece, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _lifespan(self, receive: Any, send: Any) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.session is not None:
                    await self.session.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


app = Floor()

if __name__ == "__main__":
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=int(os.environ.get("FLOOR_PORT", "8002")),
        log_level="warning",
        access_log=False,
        timeout_keep_alive=30,
        backlog=4096,
    )
