"""Issue 18, item 6: the seed's contract for max_tokens. `ChatRequest.max_tokens` is 1-4000
(default 1000) on the seed's model (the native route, the playground's controls); the OpenAI
route keeps OpenAI's contract (an integer >= 1, no Conductor cap) and forwards what the
client sends; a provider whose model cannot produce that many tokens answers 400 naming its
limit, as OpenAI does (the local model: its context window)."""

from __future__ import annotations

import httpx
import openai
import pytest

from conductor_core.models import MAX_TOKENS_LIMIT, ChatRequest
from conductor_core.testing.protocol_servers import OpenAIServer
from gateway.main import create_app
from tests.test_gateway import client, make_conductor, serve, user
from tests.test_gateway_async import endpoints


def test_the_native_route_keeps_the_seeds_max_tokens_contract(tmp_path) -> None:
    assert MAX_TOKENS_LIMIT == 4000
    assert ChatRequest(messages=user()).max_tokens == 1000
    with pytest.raises(ValueError):
        ChatRequest(messages=user(), max_tokens=4001)
    with OpenAIServer() as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            native = {"provider": "up", "messages": user()}
            r = httpx.post(f"{url}/v1/conductor/chat", json={**native, "max_tokens": 4001})
            assert r.status_code == 400 and r.json()["message"] == "max_tokens must be between 1 and 4000, got 4001"
            assert httpx.post(f"{url}/v1/conductor/chat", json=native).status_code == 200
            assert upstream.requests[-1]["json"]["max_tokens"] == 1000  # the seed's default
            schema = httpx.get(f"{url}/openapi.json").json()["components"]["schemas"]
            documented = schema["ChatRequest"]["properties"]["max_tokens"]["anyOf"][0]
            assert (documented["minimum"], documented["maximum"]) == (1, 4000)
            # The OpenAI route: OpenAI's contract (an integer >= 1, no Conductor cap), forwarded as sent.
            client(url).chat.completions.create(model="up/m", messages=user(), max_tokens=100_000)
            assert upstream.requests[-1]["json"]["max_tokens"] == 100_000
            r = httpx.post(f"{url}/v1/chat/completions", json={"model": "up/m", "messages": user(), "max_tokens": 0})
            assert r.status_code == 400 and r.json()["message"] == "max_tokens must be at least 1, got 0"
            openai_max = schema["ChatCompletionRequest"]["properties"]["max_tokens"]["anyOf"][0]
            assert openai_max["minimum"] == 1 and "maximum" not in openai_max
        conductor.close()


def test_the_local_model_refuses_more_tokens_than_its_context_by_name(tmp_path) -> None:
    """As OpenAI answers a max_tokens its model cannot produce: a 400 naming the limit, not a
    silent cap. Refused before the model is even loaded; AUTO passes the local model over."""
    with OpenAIServer(reply="from the cloud") as upstream:
        conductor = make_conductor(tmp_path, local_enabled=True, local_context=2048, endpoints=endpoints(up=upstream))
        with serve(create_app(conductor)) as url:
            for tokens in (4001, 2049):
                with pytest.raises(openai.BadRequestError) as caught:
                    client(url).chat.completions.create(model="local", messages=user(), max_tokens=tokens)
                body = caught.value.response.json()
                assert body["message"] == (
                    f"max_tokens is too large: {tokens}. local (gemma-3-270m) can produce at most 2048 tokens "
                    "(its context window, CONDUCTOR_LOCAL_CONTEXT): ask for at most 2048"
                )
                assert body["error"]["param"] == "max_tokens" and body["provider"] == "local"
            native = httpx.post(
                f"{url}/v1/conductor/chat", json={"provider": "local", "messages": user(), "max_tokens": 3000}
            )
            assert native.status_code == 400 and "can produce at most 2048 tokens" in native.json()["message"]
            raw = client(url).chat.completions.with_raw_response.create(model="auto", messages=user(), max_tokens=3000)
            assert raw.headers["x-conductor-provider"] == "up"  # the local model could not take it
            local = [r for r in conductor.log.records() if r.provider == "local"]
            assert local and {r.error_type for r in local} == {"bad_request"}  # refused, never generated
        conductor.close()
