"""The loopback protocol servers, exercised through the REAL official SDKs over HTTP.

Nothing here mocks an SDK: if these pass, openai / anthropic / google-genai
accept our wire format (paths, headers, JSON shapes, SSE framing) unchanged, and
scripted faults surface as the exceptions a real outage would produce.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar, cast

import anthropic
import httpx
import openai
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types as genai_types

from conductor_core.providers.spec import provider_specs
from conductor_core.testing.protocol_servers import (
    AnthropicServer,
    Fault,
    GeminiServer,
    OpenAIServer,
    ProtocolServer,
)

try:  # The current openai/anthropic/google-genai releases ship on httpx2 (an httpx fork).
    import httpx2

    _TRANSPORT_ERRORS: tuple[type[BaseException], ...] = (httpx.TransportError, httpx2.TransportError)
except ImportError:  # pragma: no cover
    _TRANSPORT_ERRORS = (httpx.TransportError,)

T = TypeVar("T")

# The models each server serves by default: its provider's current ones (providers/spec.py).
GPT = provider_specs()["openai"].default_model
CLAUDE = provider_specs()["anthropic"].default_model
GEMINI = provider_specs()["gemini"].default_model
REPLY = "The quick brown fox jumps over the lazy dog."
REPLY_WORDS = len(REPLY.split())  # 9
PROMPT = "say something about foxes please"  # 5 words


# ---------------------------------------------------------------------------- per-SDK adapters
# Each adapter drives one official SDK; the fault tests below are parametrized over them.


@dataclass
class Result:
    text: str
    input_tokens: int
    output_tokens: int
    finish: str


@dataclass
class Adapter:
    name: str
    server_cls: type[ProtocolServer]
    model: str
    complete: Callable[..., Result]  # (server, *, key, timeout, max_tokens) -> Result
    stream: Callable[..., Result]  # (server, deltas: list[str], *, key, timeout, max_tokens) -> Result
    rate_limit_error: type[BaseException]
    auth_error: type[BaseException]
    unavailable_error: type[BaseException]
    cut_stream_errors: tuple[type[BaseException], ...]
    malformed_errors: tuple[type[BaseException], ...]
    timeout_errors: tuple[type[BaseException], ...]
    status_of: Callable[[BaseException], int]
    headers_of: Callable[[BaseException], Any]


# SDK clients cost 50-100 ms each to build (SSL contexts), so reuse them for the whole module.
# The lock matters for the concurrency test: a duplicate client built by a racing thread would be
# garbage-collected mid-request, and google-genai's Client closes its HTTP pool when collected.
_CLIENTS: dict[tuple[str, ProtocolServer, str, float], Any] = {}
_CLIENTS_LOCK = threading.Lock()


def _cached(kind: str, srv: ProtocolServer, key: str, timeout: float, build: Callable[[], T]) -> T:
    ck = (kind, srv, key, timeout)
    with _CLIENTS_LOCK:
        if ck not in _CLIENTS:
            _CLIENTS[ck] = build()
        return cast(T, _CLIENTS[ck])


def _openai(srv: ProtocolServer, key: str, timeout: float) -> openai.OpenAI:
    return _cached(
        "openai",
        srv,
        key,
        timeout,
        lambda: openai.OpenAI(base_url=srv.url, api_key=key, max_retries=0, timeout=timeout),
    )


def oa_complete(
    srv: ProtocolServer, *, key: str = "test", timeout: float = 30.0, max_tokens: int | None = None
) -> Result:
    extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    r = _openai(srv, key, timeout).chat.completions.create(
        model=GPT, messages=[{"role": "user", "content": PROMPT}], **extra
    )
    assert r.model == GPT and r.usage is not None
    return Result(
        r.choices[0].message.content or "",
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        r.choices[0].finish_reason,
    )


def oa_stream(
    srv: ProtocolServer,
    deltas: list[str],
    *,
    key: str = "test",
    timeout: float = 30.0,
    max_tokens: int | None = None,
) -> Result:
    extra: dict[str, Any] = {} if max_tokens is None else {"max_tokens": max_tokens}
    finish, usage = "", None
    for chunk in _openai(srv, key, timeout).chat.completions.create(
        model=GPT,
        messages=[{"role": "user", "content": PROMPT}],
        stream=True,
        stream_options={"include_usage": True},
        **extra,
    ):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert usage is not None
    return Result("".join(deltas), usage.prompt_tokens, usage.completion_tokens, finish)


def _anthropic(srv: ProtocolServer, key: str, timeout: float) -> anthropic.Anthropic:
    return _cached(
        "anthropic",
        srv,
        key,
        timeout,
        lambda: anthropic.Anthropic(base_url=srv.url, api_key=key, max_retries=0, timeout=timeout),
    )


def an_complete(
    srv: ProtocolServer, *, key: str = "test", timeout: float = 30.0, max_tokens: int | None = None
) -> Result:
    m = _anthropic(srv, key, timeout).messages.create(
        model=CLAUDE,
        max_tokens=max_tokens or 256,
        system="You are terse.",
        messages=[{"role": "user", "content": PROMPT}],
    )
    assert m.model == CLAUDE
    text = "".join(b.text for b in m.content if b.type == "text")
    return Result(text, m.usage.input_tokens, m.usage.output_tokens, m.stop_reason or "")


def an_stream(
    srv: ProtocolServer,
    deltas: list[str],
    *,
    key: str = "test",
    timeout: float = 30.0,
    max_tokens: int | None = None,
) -> Result:
    with _anthropic(srv, key, timeout).messages.stream(
        model=CLAUDE,
        max_tokens=max_tokens or 256,
        system="You are terse.",
        messages=[{"role": "user", "content": PROMPT}],
    ) as stream:
        for text in stream.text_stream:
            deltas.append(text)
        m = stream.get_final_message()
    return Result("".join(deltas), m.usage.input_tokens, m.usage.output_tokens, m.stop_reason or "")


def _gemini(srv: ProtocolServer, key: str, timeout: float) -> genai.Client:
    return _cached(
        "gemini",
        srv,
        key,
        timeout,
        lambda: genai.Client(
            api_key=key, http_options=genai_types.HttpOptions(base_url=srv.url, timeout=int(timeout * 1000))
        ),
    )


@pytest.fixture(scope="module", autouse=True)
def _drop_cached_clients() -> Iterator[None]:
    yield
    for client in _CLIENTS.values():
        client.close()
    _CLIENTS.clear()


def _gemini_config(max_tokens: int | None) -> genai_types.GenerateContentConfig:
    return genai_types.GenerateContentConfig(system_instruction="You are terse.", max_output_tokens=max_tokens)


def ge_complete(
    srv: ProtocolServer, *, key: str = "test", timeout: float = 30.0, max_tokens: int | None = None
) -> Result:
    r = _gemini(srv, key, timeout).models.generate_content(
        model=GEMINI, contents=PROMPT, config=_gemini_config(max_tokens)
    )
    assert r.model_version == GEMINI and r.usage_metadata is not None and r.candidates
    finish = r.candidates[0].finish_reason
    return Result(
        r.text or "",
        r.usage_metadata.prompt_token_count or 0,
        r.usage_metadata.candidates_token_count or 0,
        finish.value if finish else "",
    )


def ge_stream(
    srv: ProtocolServer,
    deltas: list[str],
    *,
    key: str = "test",
    timeout: float = 30.0,
    max_tokens: int | None = None,
) -> Result:
    last = None
    for chunk in _gemini(srv, key, timeout).models.generate_content_stream(
        model=GEMINI, contents=PROMPT, config=_gemini_config(max_tokens)
    ):
        if chunk.text:
            deltas.append(chunk.text)
        last = chunk
    assert last is not None and last.usage_metadata is not None and last.candidates
    finish = last.candidates[0].finish_reason
    return Result(
        "".join(deltas),
        last.usage_metadata.prompt_token_count or 0,
        last.usage_metadata.candidates_token_count or 0,
        finish.value if finish else "",
    )


def _status_openai(e: BaseException) -> int:
    assert isinstance(e, openai.APIStatusError)
    return e.status_code


def _status_anthropic(e: BaseException) -> int:
    assert isinstance(e, anthropic.APIStatusError)
    return e.status_code


def _status_gemini(e: BaseException) -> int:
    assert isinstance(e, genai_errors.APIError)
    return e.code


def _headers_sdk(e: BaseException) -> Any:
    return e.response.headers  # type: ignore[attr-defined]


ADAPTERS = [
    Adapter(
        name="openai",
        server_cls=OpenAIServer,
        model=GPT,
        complete=oa_complete,
        stream=oa_stream,
        rate_limit_error=openai.RateLimitError,
        auth_error=openai.AuthenticationError,
        unavailable_error=openai.InternalServerError,
        # openai wraps transport errors raised while iterating a stream.
        cut_stream_errors=(openai.APIConnectionError,),
        malformed_errors=(json.JSONDecodeError,),
        timeout_errors=(openai.APITimeoutError,),
        status_of=_status_openai,
        headers_of=_headers_sdk,
    ),
    Adapter(
        name="anthropic",
        server_cls=AnthropicServer,
        model=CLAUDE,
        complete=an_complete,
        stream=an_stream,
        rate_limit_error=anthropic.RateLimitError,
        auth_error=anthropic.AuthenticationError,
        # 503 -> ServiceUnavailableError, a subclass of InternalServerError.
        unavailable_error=anthropic.InternalServerError,
        # anthropic does NOT wrap: the raw httpx2.RemoteProtocolError escapes from stream iteration.
        cut_stream_errors=(anthropic.APIConnectionError, *_TRANSPORT_ERRORS),
        malformed_errors=(json.JSONDecodeError,),
        timeout_errors=(anthropic.APITimeoutError,),
        status_of=_status_anthropic,
        headers_of=_headers_sdk,
    ),
    Adapter(
        name="gemini",
        server_cls=GeminiServer,
        model=GEMINI,
        complete=ge_complete,
        stream=ge_stream,
        rate_limit_error=genai_errors.ClientError,
        auth_error=genai_errors.ClientError,
        unavailable_error=genai_errors.ServerError,
        cut_stream_errors=_TRANSPORT_ERRORS,  # google-genai lets httpx2.RemoteProtocolError through
        malformed_errors=(json.JSONDecodeError, genai_errors.UnknownApiResponseError),
        timeout_errors=_TRANSPORT_ERRORS,  # httpx2.ReadTimeout
        status_of=_status_gemini,
        headers_of=_headers_sdk,
    ),
]


@pytest.fixture(params=ADAPTERS, ids=lambda a: a.name)
def adapter(request: pytest.FixtureRequest) -> Adapter:
    return cast(Adapter, request.param)


@pytest.fixture(scope="module")
def _shared_servers() -> Iterator[dict[str, ProtocolServer]]:
    # One running server per protocol for the module (uvicorn takes ~0.2 s to shut down);
    # each test gets it reset() to the constructor settings.
    servers = {a.name: a.server_cls(reply=REPLY).start() for a in ADAPTERS}
    yield servers
    for srv in servers.values():
        srv.stop()


@contextlib.contextmanager
def _reset(srv: ProtocolServer) -> Iterator[ProtocolServer]:
    srv.reset()
    try:
        yield srv
    finally:
        srv.reset()


@pytest.fixture
def server(adapter: Adapter, _shared_servers: dict[str, ProtocolServer]) -> ProtocolServer:
    srv = _shared_servers[adapter.name]
    srv.reset()
    return srv


# ---------------------------------------------------------------------------- happy paths


def test_non_stream_text_and_usage(adapter: Adapter, server: ProtocolServer) -> None:
    r = adapter.complete(server)
    assert r.text == REPLY
    assert r.output_tokens == REPLY_WORDS
    # Prompt words (plus the system prompt for Anthropic / Gemini).
    assert r.input_tokens == (5 if adapter.name == "openai" else 5 + 3)
    assert r.finish in ("stop", "end_turn", "STOP")
    rec = server.requests[-1]
    assert (
        rec["stream"] is False
        and rec["fault"] is None
        and rec["json"]["contents" if adapter.name == "gemini" else "messages"]
    )
    assert all(k == k.lower() for k in rec["headers"])


def test_stream_text_and_usage(adapter: Adapter, server: ProtocolServer) -> None:
    deltas: list[str] = []
    r = adapter.stream(server, deltas)
    assert r.text == REPLY
    assert len(deltas) == REPLY_WORDS  # word-ish chunks
    assert r.output_tokens == REPLY_WORDS
    assert r.input_tokens >= 5
    assert r.finish in ("stop", "end_turn", "STOP")
    assert server.requests[-1]["stream"] is True


def test_max_tokens_truncates(adapter: Adapter, server: ProtocolServer) -> None:
    r = adapter.complete(server, max_tokens=3)
    assert r.text == "The quick brown "
    assert r.output_tokens == 3
    assert r.finish in ("length", "max_tokens", "MAX_TOKENS")
    deltas: list[str] = []
    r = adapter.stream(server, deltas, max_tokens=3)
    assert deltas == ["The ", "quick ", "brown "]
    assert r.finish in ("length", "max_tokens", "MAX_TOKENS")


def test_request_log_details(_shared_servers: dict[str, ProtocolServer]) -> None:
    with _reset(_shared_servers["openai"]) as srv:
        oa_complete(srv, key="sk-abc")
        rec = srv.requests[0]
        assert rec["path"] == "/v1/chat/completions"
        assert rec["headers"]["authorization"] == "Bearer sk-abc"
        assert rec["json"]["model"] == GPT and rec["model"] == GPT
        assert srv.request_count == 1
    with _reset(_shared_servers["anthropic"]) as srv:
        an_complete(srv)
        rec = srv.requests[0]
        assert rec["path"] == "/v1/messages"
        # anthropic 2.x sends api_key as "Authorization: Bearer"; older releases used x-api-key.
        assert rec["headers"].get("authorization") == "Bearer test" or rec["headers"].get("x-api-key") == "test"
        assert "anthropic-version" in rec["headers"]
        assert rec["system"] == "You are terse."
    with _reset(_shared_servers["gemini"]) as srv:
        ge_complete(srv)
        rec = srv.requests[0]
        # google-genai 3.x defaults to api_version "v1"; the server accepts any version segment.
        assert rec["path"].endswith(f"/models/{GEMINI}:generateContent")
        assert rec["headers"]["x-goog-api-key"] == "test"
        assert rec["json"]["systemInstruction"]["parts"][0]["text"] == "You are terse."


def test_gemini_v1beta_and_sse_query() -> None:
    with GeminiServer(reply="a b c") as srv:
        client = genai.Client(
            api_key="test", http_options=genai_types.HttpOptions(base_url=srv.url, api_version="v1beta")
        )
        assert client.models.generate_content(model=GEMINI, contents="hi").text == "a b c"
        text = "".join(c.text or "" for c in client.models.generate_content_stream(model=GEMINI, contents="hi"))
        assert text == "a b c"
        assert srv.requests[0]["path"] == f"/v1beta/models/{GEMINI}:generateContent"
        assert srv.requests[1]["path"] == f"/v1beta/models/{GEMINI}:streamGenerateContent"
        assert srv.requests[1]["query"] == {"alt": "sse"}


def test_model_listing(_shared_servers: dict[str, ProtocolServer]) -> None:
    with _reset(_shared_servers["openai"]) as srv:
        srv.models = ["m1", "m2"]  # runtime-changeable
        assert [m.id for m in _openai(srv, "test", 5).models.list()] == ["m1", "m2"]
    with _reset(_shared_servers["anthropic"]) as srv:
        srv.models = ["claude-a", "claude-b"]
        page = _anthropic(srv, "test", 5).models.list()
        assert [m.id for m in page.data] == ["claude-a", "claude-b"] and page.has_more is False
    with _reset(_shared_servers["gemini"]) as srv:
        srv.models = [GEMINI]
        models = list(_gemini(srv, "test", 5).models.list())
        assert [m.name for m in models] == [f"models/{GEMINI}"]
        assert models[0].supported_actions == ["generateContent", "countTokens"]
        assert srv.requests[0]["path"].endswith("/models")


def test_latency_and_chunk_delay() -> None:
    with OpenAIServer(reply="one two three four", latency_s=0.15, chunk_delay_s=0.05) as srv:
        client = _openai(srv, "test", 5)
        t0 = time.perf_counter()
        stream = client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}], stream=True)
        first_text_at = None
        for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content and first_text_at is None:
                first_text_at = time.perf_counter() - t0
        total = time.perf_counter() - t0
        assert first_text_at is not None and first_text_at >= 0.15
        assert total >= 0.15 + 3 * 0.05
        # Runtime-changeable, shown by bounds that prove it rather than speeds: a minute's latency
        # outlasts a 1 s client timeout; set back to 0, an answer comes well within 30 s.
        srv.latency_s = 60.0
        with pytest.raises(openai.APITimeoutError):
            _openai(srv, "test", 1).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}])
        srv.latency_s = 0.0
        _openai(srv, "test", 30).chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}])


# ---------------------------------------------------------------------------- faults


def test_rate_limit_with_retry_after(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("status", status=429, retry_after=7, message="slow down"))
    with pytest.raises(adapter.rate_limit_error) as exc:
        adapter.complete(server)
    assert adapter.status_of(exc.value) == 429
    assert adapter.headers_of(exc.value)["retry-after"] == "7"
    body = json.loads(exc.value.response.text)  # type: ignore[attr-defined]
    if adapter.name == "openai":
        assert body["error"]["message"] == "slow down" and set(body["error"]) == {
            "message",
            "type",
            "param",
            "code",
        }
    elif adapter.name == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    else:
        assert body["error"] == {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}
    # The script is consumed: the next request is normal again.
    assert adapter.complete(server).text == REPLY
    assert [r["fault"] for r in server.requests] == ["status", None]


def test_script_runs_in_order(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("status", status=500), Fault("status", status=429))
    with pytest.raises(adapter.unavailable_error) as e1:
        adapter.complete(server)
    assert adapter.status_of(e1.value) == 500
    with pytest.raises(adapter.rate_limit_error):
        adapter.complete(server)
    assert adapter.complete(server).text == REPLY


def test_cut_stream_raises_after_first_delta(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("cut"))
    deltas: list[str] = []
    with pytest.raises(adapter.cut_stream_errors):
        adapter.stream(server, deltas)
    assert deltas == ["The "]  # at least one delta arrived before the connection dropped
    assert server.requests[-1]["fault"] == "cut"


def test_error_event_after_first_delta_raises_with_its_message(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("error_event", status=500, message="overloaded mid-answer"), Fault("error_event", status=503))
    deltas: list[str] = []
    with pytest.raises((openai.APIError, anthropic.APIError, genai_errors.APIError)) as caught:
        adapter.stream(server, deltas)
    assert deltas == ["The "] and "overloaded mid-answer" in str(caught.value)
    assert server.requests[-1]["fault"] == "error_event" and server.requests[-1]["status"] == 200
    with pytest.raises(adapter.unavailable_error):  # not streamed: the status error
        adapter.complete(server)


def test_cut_before_first_raises_without_delta(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("cut_before_first"))
    deltas: list[str] = []
    with pytest.raises(adapter.cut_stream_errors):
        adapter.stream(server, deltas)
    assert deltas == []


def test_cut_non_stream_raises(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("cut"))
    with pytest.raises((openai.APIConnectionError, anthropic.APIConnectionError, *_TRANSPORT_ERRORS)):
        adapter.complete(server)


def test_malformed_raises(adapter: Adapter, server: ProtocolServer) -> None:
    server.script(Fault("malformed"), Fault("malformed"))
    with pytest.raises(adapter.malformed_errors):
        adapter.complete(server)
    with pytest.raises(adapter.malformed_errors):
        adapter.stream(server, [])


def test_require_key(adapter: Adapter) -> None:
    with adapter.server_cls(reply=REPLY, require_key="sk-right") as srv:
        with pytest.raises(adapter.auth_error) as exc:
            adapter.complete(srv, key="sk-wrong")
        assert adapter.status_of(exc.value) == 401
        assert adapter.complete(srv, key="sk-right").text == REPLY


def test_anthropic_accepts_x_api_key_header() -> None:
    with AnthropicServer(reply="ok", require_key="k1") as srv:
        body = {"model": CLAUDE, "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
        ok = httpx.post(f"{srv.url}/v1/messages", headers={"x-api-key": "k1"}, json=body)
        assert ok.status_code == 200 and ok.json()["content"][0]["text"] == "ok"
        bad = httpx.post(f"{srv.url}/v1/messages", headers={"x-api-key": "k2"}, json=body)
        assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"


def test_gemini_key_query_param() -> None:
    with GeminiServer(reply="ok", require_key="k1") as srv:
        url = f"{srv.url}/v1beta/models/{GEMINI}:generateContent"
        body = {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]}
        assert httpx.post(url, params={"key": "k1"}, json=body).status_code == 200
        bad = httpx.post(url, params={"key": "nope"}, json=body)
        assert bad.status_code == 401 and bad.json()["error"]["status"] == "UNAUTHENTICATED"


def test_set_down(adapter: Adapter, server: ProtocolServer) -> None:
    server.set_down(True)
    with pytest.raises(adapter.unavailable_error) as exc:
        adapter.complete(server)
    assert adapter.status_of(exc.value) == 503
    server.set_down(False)
    assert adapter.complete(server).text == REPLY


def test_hang_times_out_then_recovers(adapter: Adapter, server: ProtocolServer) -> None:
    # Had the client waited out the hang, the server would have answered: the error is the proof.
    server.script(Fault("hang", hang_s=60.0))
    with pytest.raises(adapter.timeout_errors):
        adapter.complete(server, timeout=0.25)
    # A short hang with a patient client just delays a normal answer.
    server.script(Fault("hang", hang_s=0.2))
    t0 = time.perf_counter()
    assert adapter.complete(server).text == REPLY
    assert time.perf_counter() - t0 >= 0.2


def until(check: Callable[[], bool], what: str, timeout_s: float = 60.0) -> None:
    """Poll for a state with a generous deadline (a busy machine is slow, not wrong)."""
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout_s:g} s")
        time.sleep(0.01)


def test_held_requests_answer_only_when_released(adapter: Adapter, server: ProtocolServer) -> None:
    """hold(): requests arrive, are recorded and wait; release(n) lets n through (a scripted
    fault answered then), release() the rest; a client that gives up stops waiting (and its
    request is marked disconnected, as a hang's is)."""
    server.script(Fault("status", status=503))
    server.hold()
    with ThreadPoolExecutor(max_workers=3) as pool:
        answers = [pool.submit(adapter.stream, server, [], timeout=60.0) for _ in range(3)]
        until(lambda: server.held == 3, "three requests held")
        assert server.request_count == 3 and not any(a.done() for a in answers)
        server.release(1)
        until(lambda: sum(a.done() for a in answers) == 1, "one request answered")
        assert server.held == 2
        [failed] = [a for a in answers if a.done()]
        with pytest.raises(adapter.unavailable_error):
            failed.result()  # the first request's scripted fault, answered once released
        server.release()
        texts = [a.result(timeout=60).text for a in answers if a is not failed]
    assert texts == [REPLY, REPLY] and server.held == 0

    server.hold()
    with pytest.raises((*adapter.timeout_errors, *_TRANSPORT_ERRORS)):
        adapter.stream(server, [], timeout=0.5)
    until(lambda: server.held == 0, "the abandoned request stops waiting")
    until(lambda: server.requests[-1].get("disconnected") is True, "the abandoned request marked disconnected")
    server.release()


def test_a_stream_held_mid_answer(adapter: Adapter, server: ProtocolServer) -> None:
    """hold(after_chunks=2): a stream sends two text chunks, then waits for release()."""
    deltas: list[str] = []
    server.hold(after_chunks=2)
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(adapter.stream, server, deltas, timeout=60.0)
        until(lambda: len(deltas) == 2 and server.held == 1, "two chunks sent, then held")
        assert not answer.done()
        server.release()
        assert answer.result(timeout=60).text == REPLY and "".join(deltas) == REPLY


def test_a_client_that_closes_a_held_stream_leaves_the_line() -> None:
    with OpenAIServer(reply=REPLY) as srv:
        srv.hold(after_chunks=1)
        client = _openai(srv, "test", 60)
        stream = client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}], stream=True)
        first = next(c for c in stream if c.choices and c.choices[0].delta.content)
        assert first.choices[0].delta.content == REPLY.split()[0] + " "
        until(lambda: srv.held == 1, "held after the first chunk")
        stream.close()
        until(lambda: srv.held == 0 and srv.in_flight == 0, "the closed stream left the line")


def test_stop_is_not_blocked_by_a_hanging_request() -> None:
    srv = OpenAIServer().start()
    srv.script(Fault("hang", hang_s=120))
    with pytest.raises(openai.APITimeoutError):
        oa_complete(srv, timeout=0.2)
    t0 = time.perf_counter()
    srv.stop()
    assert time.perf_counter() - t0 < 60  # a bound that proves it (the hang is 120 s), not a speed


def test_faults_do_not_hit_model_listing() -> None:
    with OpenAIServer() as srv:
        srv.script(Fault("status", status=500))
        client = _openai(srv, "test", 5)
        assert [m.id for m in client.models.list()]  # listing does not consume the scripted fault
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}])
        srv.set_down(True)  # ...but "down" applies to every endpoint
        with pytest.raises(openai.InternalServerError):
            client.models.list()


def test_failure_rate_is_seeded() -> None:
    n, rate, seed = 200, 0.3, 1
    with OpenAIServer(failure_rate=rate, seed=seed) as srv, httpx.Client(base_url=srv.url) as http:
        body = {"model": GPT, "messages": [{"role": "user", "content": "x"}]}
        statuses = [http.post("/chat/completions", json=body).status_code for _ in range(n)]
        assert srv.request_count == n
    failures = statuses.count(500)
    assert set(statuses) == {200, 500}
    assert 0.15 * n <= failures <= 0.45 * n
    # Seeded: request i fails iff the i-th draw of random.Random(seed) is below the rate.
    rng = random.Random(seed)
    assert statuses == [500 if rng.random() < rate else 200 for _ in range(n)]


def test_failure_rate_seen_by_sdk() -> None:
    with AnthropicServer(failure_rate=1.0) as srv:
        with pytest.raises(anthropic.InternalServerError):
            an_complete(srv)
        srv.failure_rate = 0.0  # runtime-changeable
        assert an_complete(srv).text


def test_reset_restores_constructor_settings() -> None:
    with OpenAIServer(reply="a b", failure_rate=0.5, seed=3) as srv:
        client = _openai(srv, "test", 5)
        srv.reply, srv.failure_rate, srv.latency_s = "changed", 0.0, 0.01
        srv.script(Fault("status"))
        srv.set_down(True)
        with pytest.raises(openai.InternalServerError):
            client.models.list()
        srv.reset()
        assert srv.request_count == 0 and srv.reply == "a b" and srv.failure_rate == 0.5 and srv.latency_s == 0.0
        srv.failure_rate = 0.0
        assert oa_complete(srv).text == "a b"  # not down, script cleared


def test_concurrent_streams(adapter: Adapter) -> None:
    n = 50
    with adapter.server_cls(reply="alpha beta gamma delta", chunk_delay_s=0.03) as srv:

        def one(_: int) -> str:
            return adapter.stream(srv, [], timeout=120.0).text

        # Proof of concurrency that does not depend on machine speed: the server holds every
        # stream until all of them are open at once. (Wall time is not asserted: the SDKs and the
        # server share one GIL, so a loaded CI box skews it.)
        srv.hold()
        with ThreadPoolExecutor(max_workers=n) as pool:
            answers = [pool.submit(one, i) for i in range(n)]
            until(lambda: srv.held == n, f"{n} streams open at once")
            assert srv.peak_in_flight >= n
            srv.release()
            texts = [answer.result() for answer in answers]
        assert texts == ["alpha beta gamma delta"] * n
        assert srv.request_count == n
        until(lambda: srv.in_flight == 0, "the server's last sends done")  # may end just after the client


# ---------------------------------------------------------------------------- tool calls and JSON output
# Each server answers tools and JSON output in its own API's shape; the official SDKs parse it.

WEATHER_SCHEMA = {"type": "object", "properties": {"city": {"type": "string"}}}


def test_anthropic_tool_use_parsed_by_the_sdk(_shared_servers: dict[str, ProtocolServer]) -> None:
    with _reset(_shared_servers["anthropic"]) as srv:
        client = _anthropic(srv, "test", 5.0)
        tools = [{"name": "weather", "description": "Weather in a city", "input_schema": WEATHER_SCHEMA}]
        ask = [{"role": "user", "content": "Weather in Paris?"}]
        message = client.messages.create(model=CLAUDE, max_tokens=100, messages=ask, tools=tools)
        assert message.stop_reason == "tool_use"
        text, use = message.content  # Claude writes a sentence before a call it chose to make
        assert text.type == "text" and text.text == AnthropicServer.TOOL_PREAMBLE
        assert (
            use.type == "tool_use"
            and use.name == "weather"
            and use.input == {"city": "Paris"}
            and use.id.startswith("toolu_")
        )

        forced = client.messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=ask,
            tools=tools,
            tool_choice={"type": "tool", "name": "weather"},
        )
        assert [b.type for b in forced.content] == ["tool_use"]  # a forced call comes without text

        with client.messages.stream(model=CLAUDE, max_tokens=100, messages=ask, tools=tools) as stream:
            events = list(stream)
            final = stream.get_final_message()
        assert final.stop_reason == "tool_use" and final.content[1].input == {"city": "Paris"}
        pieces = [
            e.delta.partial_json
            for e in events
            if e.type == "content_block_delta" and e.delta.type == "input_json_delta"
        ]
        assert pieces == ["", *AnthropicServer.TOOL_ARGUMENTS]  # the input arrives in pieces, the first empty

        answer = [
            *ask,
            {"role": "assistant", "content": [b.model_dump() for b in message.content]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]},
        ]
        done = client.messages.create(model=CLAUDE, max_tokens=100, messages=answer, tools=tools)
        assert done.stop_reason == "end_turn" and done.content[0].text == REPLY
        none = client.messages.create(
            model=CLAUDE, max_tokens=100, messages=ask, tools=tools, tool_choice={"type": "none"}
        )
        assert none.content[0].text == REPLY


def test_gemini_function_call_parsed_by_the_sdk(_shared_servers: dict[str, ProtocolServer]) -> None:
    with _reset(_shared_servers["gemini"]) as srv:
        client = _gemini(srv, "test", 5.0)
        declaration = genai_types.FunctionDeclaration(
            name="weather", description="Weather", parameters_json_schema=WEATHER_SCHEMA
        )
        config = genai_types.GenerateContentConfig(
            tools=[genai_types.Tool(function_declarations=[declaration])],
            automatic_function_calling=genai_types.AutomaticFunctionCallingConfig(disable=True),
        )
        response = client.models.generate_content(model=GEMINI, contents="Weather in Paris?", config=config)
        [call] = response.function_calls
        assert call.name == "weather" and call.args == {"city": "Paris"}
        assert response.candidates[0].finish_reason == genai_types.FinishReason.STOP
        sent = srv.requests[-1]["json"]
        assert sent["tools"][0]["functionDeclarations"][0]["name"] == "weather"

        chunks = list(client.models.generate_content_stream(model=GEMINI, contents="Weather?", config=config))
        assert len(chunks) == 1 and chunks[0].function_calls[0].args == {"city": "Paris"}  # sent whole, in one chunk

        none = config.model_copy(
            update={
                "tool_config": genai_types.ToolConfig(
                    function_calling_config=genai_types.FunctionCallingConfig(mode="NONE")
                )
            }
        )
        assert client.models.generate_content(model=GEMINI, contents="Weather?", config=none).text == REPLY
        history = [
            genai_types.Content(role="user", parts=[genai_types.Part(text="Weather?")]),
            response.candidates[0].content,
            genai_types.Content(
                role="user",
                parts=[
                    genai_types.Part(
                        function_response=genai_types.FunctionResponse(name="weather", response={"sky": "sunny"})
                    )
                ],
            ),
        ]
        assert client.models.generate_content(model=GEMINI, contents=history, config=config).text == REPLY


def test_json_output_in_each_protocol(_shared_servers: dict[str, ProtocolServer]) -> None:
    wanted = {"city": "Paris"}  # every server's default json_reply
    with _reset(_shared_servers["openai"]) as srv:
        r = _openai(srv, "test", 5.0).chat.completions.create(
            model=GPT,
            messages=[{"role": "user", "content": "City?"}],
            response_format={"type": "json_object"},
        )
        assert json.loads(r.choices[0].message.content or "") == wanted
    with _reset(_shared_servers["anthropic"]) as srv:
        m = _anthropic(srv, "test", 5.0).messages.create(
            model=CLAUDE,
            max_tokens=100,
            messages=[{"role": "user", "content": "City?"}],
            output_config={"format": {"type": "json_schema", "schema": WEATHER_SCHEMA}},
        )
        assert json.loads(m.content[0].text) == wanted
        plain = _anthropic(srv, "test", 5.0).messages.create(
            model=CLAUDE, max_tokens=100, messages=[{"role": "user", "content": "City?"}]
        )
        assert plain.content[0].text == REPLY
    with _reset(_shared_servers["gemini"]) as srv:
        config = genai_types.GenerateContentConfig(
            response_mime_type="application/json", response_json_schema=WEATHER_SCHEMA
        )
        g = _gemini(srv, "test", 5.0).models.generate_content(model=GEMINI, contents="City?", config=config)
        assert json.loads(g.text) == wanted and g.parsed == wanted


# ---------------------------------------------------------------------------- models served


# Names the real APIs refuse today (retired on 2026-10-23, 2026-08-05 and 2026-12-01).
RETIRED = {"openai": "gpt-4.1-nano", "anthropic": "claude-opus-4-1", "gemini": "gemini-2.5-flash"}


def test_a_model_not_served_is_refused_as_each_api_refuses_it() -> None:
    # A retired or mistyped name: the API's own 404, whatever is scripted, and no scripted fault used.
    with OpenAIServer(reply=REPLY) as o, AnthropicServer(reply=REPLY) as a, GeminiServer(reply=REPLY) as g:
        for srv in (o, a, g):
            srv.script(Fault("status", status=500))
        gpt = openai.OpenAI(base_url=o.url, api_key="k", max_retries=0)
        with pytest.raises(openai.NotFoundError) as info:
            gpt.chat.completions.create(model=RETIRED["openai"], messages=[{"role": "user", "content": "x"}])
        assert info.value.code == "model_not_found" and f"`{RETIRED['openai']}` does not exist" in info.value.message
        with pytest.raises(openai.NotFoundError):
            gpt.chat.completions.create(model="gpt-nope", messages=[{"role": "user", "content": "x"}], stream=True)
        with pytest.raises(openai.NotFoundError):
            gpt.models.retrieve(RETIRED["openai"])
        assert gpt.models.retrieve(GPT).id == GPT

        claude = anthropic.Anthropic(base_url=a.url, api_key="k", max_retries=0)
        with pytest.raises(anthropic.NotFoundError) as refused:
            claude.messages.create(
                model=RETIRED["anthropic"], max_tokens=5, messages=[{"role": "user", "content": "x"}]
            )
        assert refused.value.body == {
            "type": "error",
            "error": {"type": "not_found_error", "message": f"model: {RETIRED['anthropic']}"},
        }
        assert claude.models.retrieve(CLAUDE).id == CLAUDE

        gemini = _gemini(g, "k", 5.0)
        with pytest.raises(genai_errors.ClientError) as missing:
            gemini.models.generate_content(model=RETIRED["gemini"], contents="x")
        assert (missing.value.code, missing.value.status) == (404, "NOT_FOUND")
        with pytest.raises(genai_errors.ClientError):
            gemini.models.get(model=RETIRED["gemini"])

        for srv in (o, a, g):
            assert all(r["status"] in (200, 404) for r in srv.requests) and srv.requests[0]["status"] == 404
            assert len(srv._script) == 1  # the next request for a served model still gets the scripted 500
        with pytest.raises(openai.InternalServerError):
            gpt.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}])


def test_servers_serve_their_providers_current_models_and_list_them() -> None:
    with OpenAIServer() as o, AnthropicServer() as a, GeminiServer() as g:
        assert [m.id for m in openai.OpenAI(base_url=o.url, api_key="k").models.list()] == provider_specs()[
            "openai"
        ].model_ids
        assert [m.id for m in anthropic.Anthropic(base_url=a.url, api_key="k").models.list()] == provider_specs()[
            "anthropic"
        ].model_ids
        listed = [m.name for m in _gemini(g, "k", 5.0).models.list()]
        assert listed == [f"models/{m}" for m in provider_specs()["gemini"].model_ids]
    # The constructor says which models a server serves (an Ollama stand-in serves its own).
    with OpenAIServer(reply="ok", models=["llama3.2"]) as ollama:
        client = openai.OpenAI(base_url=ollama.url, api_key="k", max_retries=0)
        assert client.chat.completions.create(model="llama3.2", messages=[{"role": "user", "content": "x"}])
        with pytest.raises(openai.NotFoundError):
            client.chat.completions.create(model=GPT, messages=[{"role": "user", "content": "x"}])


def test_a_spec_model_past_its_retirement_date_is_not_served() -> None:
    from datetime import date

    from conductor_core.providers.spec import Capabilities, ModelSpec, ProviderSpec, registered

    spec = ProviderSpec(
        name="dated",
        display_name="Dated",
        module=__name__,
        class_name="Unused",
        default_model="current-model",
        models=(ModelSpec("current-model"), ModelSpec("old-model", retires=date(2026, 1, 1))),
        capabilities=Capabilities(),
    )

    class DatedServer(OpenAIServer):
        provider = "dated"

    with registered(spec):
        assert DatedServer.default_models() == ["current-model"]
