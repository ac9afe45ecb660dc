"""Issue 18, item 4: many-message bodies must not stall the event loop.

Four concurrent bodies of 30,000 tiny messages (each under the 1 MiB limit) pushed `/health`
from 1-2 ms to 1.56 s: the body was parsed and validated on the event loop. Now a chat
request holds at most CONDUCTOR_GATEWAY_MAX_MESSAGES messages (2048; 400 naming the
setting), and a large body is parsed in a worker thread.

The gateway runs as users run it (`python -m gateway`, its own process) in front of a
loopback upstream (its own process), measured by benchmarks/probe_large_bodies.py. No
wall-clock figure is asserted, only bounds taken from the same run on the same machine:
while 4 clients keep sending the issue's 30,000-message bodies, `/health`'s p99 stays below
25 times its unloaded p99 (it was ~780 times in the issue, ~145 times at the previous
commit on this machine); while they send the largest bodies the gateway takes (1 MiB, 2048
messages), it stays below that bound or the median time those requests take themselves,
whichever is larger (a probe never waits as long as a whole large request).
"""

from __future__ import annotations

import asyncio

import httpx
import pytest

from benchmarks.common import GatewayProcess, Upstreams, percentile
from benchmarks.probe_large_bodies import MAX_MESSAGES, maximal_body, probe, tiny_messages_body
from conductor_core.testing.protocol_servers import OpenAIServer
from gateway.main import create_app
from gateway.settings import GatewaySettings
from tests.test_gateway import make_conductor, serve, user
from tests.test_gateway_async import endpoints

pytestmark = pytest.mark.slow


def test_health_stays_responsive_under_four_concurrent_maximal_bodies(tmp_path) -> None:
    accepted, refused = maximal_body(), tiny_messages_body()
    with Upstreams([0], reply="ok") as upstream, GatewayProcess({"bench": upstream.url}, tmp_path / "data") as gateway:
        root = gateway.url.removesuffix("/v1")
        quiet = asyncio.run(probe(root, None, seconds=4))
        busy = asyncio.run(probe(root, accepted, seconds=10))
        flood = asyncio.run(probe(root, refused, seconds=8))
    print(
        f"\n/health p99: unloaded {quiet.p(0.99):.1f} ms; 4 x {MAX_MESSAGES}-message 1 MiB bodies {busy.p(0.99):.1f} ms "
        f"(each answered in {percentile(busy.body_ms, 0.5):.0f} ms); 4 x 30,000 tiny messages {flood.p(0.99):.1f} ms "
        f"(each refused in {percentile(flood.body_ms, 0.5):.0f} ms)"
    )
    assert busy.statuses == {200: busy.sent} and busy.sent >= 4  # the largest bodies are served
    assert flood.statuses == {400: flood.sent} and flood.sent >= 4  # the bodies: over the cap
    assert flood.p(0.99) < 25 * quiet.p(0.99)
    assert busy.p(0.99) < max(25 * quiet.p(0.99), percentile(busy.body_ms, 0.5))


def test_too_many_messages_is_a_400_naming_the_setting_on_both_routes(tmp_path) -> None:
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        settings = GatewaySettings(_env_file=None, max_messages=3)
        with serve(create_app(conductor, settings=settings)) as url:
            for route, key in (("/v1/chat/completions", "model"), ("/v1/conductor/chat", "provider")):
                body = {key: "up", "messages": user() * 4}
                r = httpx.post(f"{url}{route}", json=body, timeout=30)
                assert r.status_code == 400, r.text
                assert r.json()["error"]["param"] == "messages"
                assert r.json()["message"] == (
                    "messages holds 4 messages; the gateway takes at most 3 in one request "
                    "(CONDUCTOR_GATEWAY_MAX_MESSAGES): send fewer, or raise the limit"
                )
                assert httpx.post(f"{url}{route}", json={**body, "messages": user() * 3}, timeout=30).is_success
            assert upstream.request_count == 2
            schema = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
            for name in ("ChatCompletionRequest", "ChatRequest"):
                assert schema[name]["properties"]["messages"]["maxItems"] == 3
            assert "CONDUCTOR_GATEWAY_MAX_MESSAGES" in httpx.get(f"{url}/openapi.json").json()["info"]["description"]
        conductor.close()
