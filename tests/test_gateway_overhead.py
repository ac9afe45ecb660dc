"""`x-conductor-overhead-ms`: the time a request spent in Conductor, the upstream's excluded.
Through the official `openai` SDK against the gateway under uvicorn, in front of a loopback
server speaking OpenAI's protocol that waits `UPSTREAM_S` before it answers: a figure that
counted the upstream could not stay below the client's total minus that wait. Each figure is
checked against what the client measured and against the log row that carries it."""

from __future__ import annotations

import time
from typing import Any

import httpx
import openai
import pytest

from conductor_core.testing.protocol_servers import Fault, GeminiServer, OpenAIServer
from gateway.main import create_app
from tests.test_gateway import KEY, REPLY, client, make_conductor, serve, user

UPSTREAM_S = 0.25
HEADER = "x-conductor-overhead-ms"


def figure(headers: Any) -> float:
    value = float(headers[HEADER])
    assert value >= 0.0
    return value


@pytest.fixture
def gateway(tmp_path):
    with OpenAIServer(reply=REPLY, require_key=KEY, latency_s=UPSTREAM_S) as upstream:
        conductor = make_conductor(tmp_path, openai_api_key=KEY, openai_base_url=upstream.url)
        try:
            with serve(create_app(conductor)) as url:
                yield url, conductor, upstream
        finally:
            conductor.close()


def test_a_chat_carries_its_overhead_in_the_header_the_body_and_the_log_row(gateway) -> None:
    url, conductor, _ = gateway
    began = time.perf_counter()
    raw = client(url).chat.completions.with_raw_response.create(model="openai", messages=user())
    total_ms = (time.perf_counter() - began) * 1000
    completion = raw.parse()
    assert completion.choices[0].message.content == REPLY
    spent = figure(raw.headers)
    assert spent < total_ms - UPSTREAM_S * 1000, "the upstream's wait is not Conductor's time"
    assert completion.model_extra["conductor"]["overhead_ms"] == pytest.approx(spent, abs=0.001)
    (row,) = conductor.log.records()
    assert row.status == "ok" and row.overhead_ms == pytest.approx(spent, abs=0.001)


def test_a_stream_has_the_time_to_its_head_in_the_header_and_the_whole_in_its_last_chunk(gateway) -> None:
    url, conductor, _ = gateway
    began = time.perf_counter()
    with client(url).chat.completions.with_streaming_response.create(
        model="openai", messages=user(), stream=True
    ) as raw:
        head = figure(raw.headers)
        chunks = list(raw.parse())
    total_ms = (time.perf_counter() - began) * 1000
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == REPLY
    whole = chunks[-1].model_extra["conductor"]["overhead_ms"]
    # The header is sent before the body, the last chunk at its end: the whole includes the head.
    assert head <= whole < total_ms - UPSTREAM_S * 1000
    (row,) = conductor.log.records()
    assert row.status == "ok" and row.streamed and row.overhead_ms == pytest.approx(whole, abs=0.001)


def test_an_upstream_error_carries_the_figure_and_its_row_has_it(gateway) -> None:
    url, conductor, upstream = gateway
    upstream.script(Fault("status", status=429, message="Rate limit reached"))
    began = time.perf_counter()
    with pytest.raises(openai.RateLimitError) as caught:
        client(url).chat.completions.create(model="openai", messages=user())
    total_ms = (time.perf_counter() - began) * 1000
    spent = figure(caught.value.response.headers)
    assert spent < total_ms
    (row,) = conductor.log.records()
    assert row.status == "error" and row.overhead_ms is not None and 0.0 <= row.overhead_ms <= spent + 0.001


def test_gateway_errors_and_other_endpoints_carry_the_figure(gateway) -> None:
    url, _, _ = gateway
    cases = [
        ("POST", "/v1/chat/completions", {"model": "openai"}),  # no messages
        ("POST", "/v1/chat/completions", {"model": "nope/none", "messages": user()}),  # unknown provider
        ("GET", "/v1/models", None),
        ("GET", "/health", None),
    ]
    statuses = []
    with httpx.Client(base_url=url, timeout=30) as http:
        for method, path, body in cases:
            began = time.perf_counter()
            answer = http.request(method, path, json=body)
            total_ms = (time.perf_counter() - began) * 1000
            assert figure(answer.headers) < total_ms, (method, path, answer.status_code)
            statuses.append(answer.status_code)
    assert statuses[0] == 400 and statuses[1] in (400, 404) and statuses[2:] == [200, 200]


def test_a_refused_key_carries_the_figure(tmp_path) -> None:
    conductor = make_conductor(tmp_path, api_key="cnd-Qv7fT2mZk9Lw4Rx8Hb3Ns6Pd1Yj5Ge0U")
    try:
        with serve(create_app(conductor)) as url:
            answer = httpx.post(f"{url}/v1/chat/completions", json={"model": "openai", "messages": user()})
    finally:
        conductor.close()
    assert answer.status_code == 401 and figure(answer.headers) < answer.elapsed.total_seconds() * 1000


def test_each_attempt_of_a_fallback_logs_its_share_and_the_shares_add_up_to_the_header(tmp_path) -> None:
    with (
        GeminiServer(reply=REPLY, require_key=KEY) as down,
        OpenAIServer(reply=REPLY, require_key=KEY, latency_s=UPSTREAM_S) as up,
    ):
        # Fresh providers are tried in registry order: gemini (down), then openai.
        conductor = make_conductor(
            tmp_path, gemini_api_key=KEY, gemini_base_url=down.url, openai_api_key=KEY, openai_base_url=up.url
        )
        down.set_down(True)
        try:
            with serve(create_app(conductor)) as url:
                raw = client(url).chat.completions.with_raw_response.create(model="auto", messages=user())
                spent = figure(raw.headers)
            rows = conductor.log.records()
        finally:
            conductor.close()
    assert sorted(row.status for row in rows) == ["error", "ok"]
    assert all(row.overhead_ms is not None and row.overhead_ms >= 0 for row in rows)
    assert sum(row.overhead_ms or 0.0 for row in rows) == pytest.approx(spent, abs=0.01)
