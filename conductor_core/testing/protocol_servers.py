"""Loopback servers that speak the real provider wire protocols.

Why this exists: Conductor talks to OpenAI, Anthropic and Google Gemini through
their official SDKs. Mocking the SDK objects would hide exactly the bugs we care
about (wrong paths, header handling, SSE parsing, retry/timeout behaviour on a
broken connection). Instead, these servers speak the providers' HTTP protocols -
JSON and SSE streaming - on 127.0.0.1, so the unmodified SDKs can be pointed at
them with a base URL:

    with OpenAIServer(reply="hi there") as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="test", max_retries=0)

    with AnthropicServer() as srv:
        client = anthropic.Anthropic(base_url=srv.url, api_key="test", max_retries=0)

    with GeminiServer() as srv:
        client = genai.Client(api_key="test",
                              http_options=types.HttpOptions(base_url=srv.url))

Each server is a small Starlette app served by uvicorn in a daemon thread, so
it is concurrent (hundreds of simultaneous streams) and cheap enough for load
tests and latency benchmarks.

Behaviour can be scripted:

* ``script(Fault(...), ...)`` - the next N *generation* requests get these
  faults in order (HTTP error with the protocol's error body, hang, connection
  cut mid-stream, cut before the first token, malformed JSON).
* ``release()`` - every request hanging now (a scripted ``hang``) answers at once (a test's
  upstream that "hangs until told", with no race on speed). A hanging request whose client
  goes away ends there, its entry in ``requests`` marked ``"disconnected": True`` (the client
  cancelled its call).
* ``set_down(True)`` - every request (including model listing) answers 503.
* ``hold()`` - generation requests wait (arrived and recorded, nothing answered) until
  ``release(n)`` lets the ``n`` longest waiting through (or the next ``n`` to arrive), or
  ``release()`` all and stops holding: an upstream that answers when the test says so, so
  a test waits for a state (``held`` requests waiting) instead of racing a latency. A held
  request whose client went away stops waiting (marked ``"disconnected"`` as a hang's is).
  ``hold(after_chunks=n)`` holds streams
  mid-answer instead, after their first ``n`` text chunks (an answer still streaming for as
  long as the test needs it to).
* ``failure_rate`` - that fraction of generation requests answers 500, chosen
  by a ``random.Random(seed)`` so runs are reproducible.
* ``require_key`` - requests carrying another API key get 401.
* ``models`` - the models the server serves (default: its provider's spec models, those not
  past their retirement date; providers/spec.py). A generation request for any other model
  gets the API's own 404 (OpenAI ``model_not_found``, Anthropic ``not_found_error``, Gemini
  ``NOT_FOUND``), as a retired or mistyped name does from the real API; ``/models`` lists
  them, and retrieving one that is not served is a 404 too.
* Tool calls (every protocol): a request that offers tools (and does not say "none") and
  does not end with a tool result is answered with a call to the named or first tool,
  arguments ``{"city": "Paris"}``, in each API's own shape: OpenAI ``tool_calls`` (streamed as
  id and name, then argument pieces); Anthropic ``tool_use`` blocks (streamed as
  ``content_block_start`` then ``input_json_delta`` pieces, ``stop_reason: "tool_use"``; with
  ``tool_choice`` auto a short text block comes first, as Claude writes one; forced calls have
  none); Gemini a whole ``functionCall`` part in one chunk (``finishReason: "STOP"``).
* OpenAI's deprecated ``functions`` (without tools): answered with a ``function_call`` (streamed
  as ``delta.function_call`` pieces, ``finish_reason: "function_call"``).
* JSON output: a request that asks for it (OpenAI ``response_format`` json_object/json_schema,
  Anthropic ``output_config.format``, Gemini ``responseMimeType: application/json``) gets
  ``json_reply`` instead of ``reply``.

Every request is kept whole in ``requests`` (method, path, headers, the JSON body), so
tests can check each field that arrived.

Images and documents are checked as the real APIs check them: a malformed part (an OpenAI
``image_url`` without a url or of another type, an Anthropic image block without
``media_type``, a Gemini ``inlineData`` without its type or with data that is not base64)
gets the API's 400, and an image outside a user turn too. OpenAI's ``n`` is answered with
``n`` choices, and ``logprobs: true`` with a log probability per reply chunk (streamed in
each chunk, as OpenAI does).

Scripted faults and ``failure_rate`` apply only to generation endpoints
(chat completions / messages / generateContent), so an SDK or router that lists
models first does not silently consume a scripted fault. ``set_down`` and
``require_key`` apply to every endpoint. What goes wrong first: down, then a wrong key,
then an unknown model (which consumes no scripted fault), then the script.

Token usage is deterministic: input tokens = whitespace-separated words of all
prompt text (min 1), output tokens = number of reply chunks (words).
``max_tokens`` / ``max_completion_tokens`` / ``maxOutputTokens`` smaller than the
reply truncates it (finish reason "length" / "max_tokens" / "MAX_TOKENS").

Timing: ``latency_s`` delays successful (and malformed / cut) answers - for
streams, headers go out at once and the delay comes before the first SSE frame,
like a real time-to-first-token. Status errors (scripted, down, auth, random)
answer immediately. ``chunk_delay_s`` separates text deltas.

What the faults look like on the wire:

* ``cut`` (stream): preamble + first text delta, then the connection is dropped
  without the terminating chunk. Non-stream: Content-Length promised, half the
  body sent, connection dropped.
* ``cut_before_first`` (stream): only the protocol preamble that carries no text
  (OpenAI: the role chunk with content ""; Anthropic: message_start,
  content_block_start, ping; Gemini: nothing) then the drop.
* ``malformed``: 200 with truncated JSON; for streams one SSE frame with broken
  JSON (after the preamble), then a clean end of body.
* ``error_event`` (stream): preamble + first text delta, then the protocol's own in-stream
  error carrying the fault's ``message`` (OpenAI and Anthropic ``event: error``, Gemini a
  chunk ``{"error": {...}}``), then a clean end of body: how each API reports a failure
  after it has begun to answer. Non-stream: answered as ``status``.

Per-request state is thread-safe; ``reset()`` restores the constructor settings
so one server can be shared by many tests (stopping uvicorn takes ~0.2 s).

Using async SDK clients against these servers: close them explicitly
(``await client.close()``). In load runs, a dropped AsyncOpenAI client whose
server had already stopped scheduled its ``aclose()`` from ``__del__`` and
stalled other streams on the same event loop (a client-side issue; the server
had answered every request).
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import re
import socket
import threading
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, MutableMapping
from dataclasses import dataclass
from datetime import date
from typing import Any, ClassVar, Literal, Self

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..providers.spec import get_spec

__all__ = [
    "AnthropicServer",
    "Fault",
    "FaultKind",
    "GeminiServer",
    "OpenAIServer",
    "ProtocolServer",
]

FaultKind = Literal["status", "hang", "cut", "cut_before_first", "malformed", "error_event"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

# A frame of a streamed body, tagged so the generic streaming loop knows where
# text deltas are (for chunk delays and for the "cut"/"malformed" faults):
#   "pre"  - protocol preamble before any text (e.g. Anthropic message_start)
#   "text" - a frame carrying one text delta
#   "post" - the protocol's proper ending (finish reason, usage, [DONE], ...)
FrameKind = Literal["pre", "text", "post"]
Frame = tuple[FrameKind, bytes]


@dataclass
class Fault:
    """One scripted misbehaviour for one request (see ``ProtocolServer.script``)."""

    kind: FaultKind
    status: int = 500  # kind="status" (and "error_event"): HTTP status, sent with the protocol's own error JSON
    retry_after: float | None = None  # adds a Retry-After header (seconds) when set
    hang_s: float = 30.0  # kind="hang": sleep this long (or until `release()`) before answering normally
    message: str = "scripted failure"
    code: str | None = None  # kind="status": the error's own code (OpenAI's error.code), if not the usual one


class _ScriptedCut(Exception):
    """Raised inside a response body iterator to make uvicorn drop the connection.

    Once the response has started, uvicorn cannot send an error any more, so an
    exception from the app makes it close the transport without the terminating
    chunk / without the promised Content-Length - exactly what a client sees when
    an upstream dies mid-response.
    """


def _is_scripted_cut(exc: BaseException | None) -> bool:
    if isinstance(exc, _ScriptedCut):
        return True
    # Starlette may wrap it in an exception group depending on the ASGI spec version.
    if isinstance(exc, BaseExceptionGroup):
        return bool(exc.exceptions) and all(_is_scripted_cut(e) for e in exc.exceptions)
    return False


class _DropScriptedCutLogs(logging.Filter):
    """Keeps uvicorn's 'Exception in ASGI application' traceback for deliberate cuts out of test output."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not _is_scripted_cut(exc)


_uvicorn_error_logger = logging.getLogger("uvicorn.error")
if not any(isinstance(f, _DropScriptedCutLogs) for f in _uvicorn_error_logger.filters):
    _uvicorn_error_logger.addFilter(_DropScriptedCutLogs())


_WORD_CHUNK = re.compile(r"\S+\s*")


def _split_reply(reply: str) -> list[str]:
    """Split into word-ish chunks that keep their trailing spaces, so "".join(chunks) == reply."""
    chunks = _WORD_CHUNK.findall(reply)
    lead = reply[: len(reply) - len(reply.lstrip())]
    if chunks and lead:
        chunks[0] = lead + chunks[0]
    return chunks


def _collect_text(node: Any) -> list[str]:
    """All prompt text in a message structure (strings under text/content/parts keys)."""
    if isinstance(node, str):
        return [node]
    if isinstance(node, list):
        return [s for item in node for s in _collect_text(item)]
    if isinstance(node, dict):
        out: list[str] = []
        for key in ("text", "content", "parts"):
            if key in node:
                out.extend(_collect_text(node[key]))
        return out
    return []


def _count_words(*nodes: Any) -> int:
    return max(1, sum(len(s.split()) for node in nodes for s in _collect_text(node)))


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False).encode()


def _as_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


_IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")
_BASE64_TEXT = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def _is_base64(value: Any, *, url_safe: bool = False) -> bool:
    """Standard base64; with `url_safe`, its URL-safe alphabet too (`-` `_`), which Gemini's
    JSON takes (protobuf's bytes) and google-genai sends."""
    if url_safe and isinstance(value, str):
        value = value.replace("-", "+").replace("_", "/")
    return isinstance(value, str) and bool(value) and _BASE64_TEXT.fullmatch(value) is not None


def _token_logprobs(text: str, position: int, top: int) -> dict[str, Any]:
    """A made-up but deterministic log probability for one reply chunk, in OpenAI's shape."""
    entry = {"token": text, "logprob": round(-0.05 * (position + 1), 4), "bytes": list(text.encode())}
    alternatives = [
        {"token": f"alt{k}", "logprob": round(-1.0 - k, 4), "bytes": list(f"alt{k}".encode())} for k in range(top)
    ]
    return {**entry, "top_logprobs": alternatives}


class _Held:
    """A request waiting in `ProtocolServer.hold()`."""

    __slots__ = ("released",)

    def __init__(self) -> None:
        self.released = False


@dataclass
class _Call:
    """A parsed generation request, in protocol-neutral form."""

    model: str
    stream: bool
    input_tokens: int
    max_tokens: int | None
    body: dict[str, Any]
    image_tokens: int = 0  # of input_tokens, those counted for images (Gemini reports them apart)


class ProtocolServer:
    """Base class: lifecycle, fault scripting, request log and the generic response flow.

    Subclasses provide the routes and the protocol-specific JSON shapes.
    """

    provider: ClassVar[str] = ""  # whose spec names the models served by default
    url_path: ClassVar[str] = ""  # appended to http://127.0.0.1:PORT to form ``url``

    @classmethod
    def default_models(cls) -> list[str]:
        """The provider's spec models that have not retired (today, by the clock)."""
        spec = get_spec(cls.provider)
        today = date.today()
        return [m.id for m in spec.models if not m.retired(today)] if spec is not None else []

    def __init__(
        self,
        *,
        reply: str = "Hello from the loopback server.",
        json_reply: str = '{"city": "Paris"}',
        latency_s: float = 0.0,
        chunk_delay_s: float = 0.0,
        models: list[str] | None = None,
        failure_rate: float = 0.0,
        seed: int = 0,
        require_key: str | None = None,
    ) -> None:
        # Remembered so reset() can restore them (session-scoped servers are much faster than
        # one server per test: uvicorn needs ~0.2 s to shut down).
        self._defaults: dict[str, Any] = {
            "reply": reply,
            "json_reply": json_reply,
            "latency_s": latency_s,
            "chunk_delay_s": chunk_delay_s,
            "models": list(models) if models is not None else None,
            "failure_rate": failure_rate,
            "seed": seed,
            "require_key": require_key,
        }
        # Plain attributes: tests may change them while the server runs.
        self.reply: str = reply
        self.json_reply: str = json_reply
        self.latency_s: float = latency_s
        self.chunk_delay_s: float = chunk_delay_s
        self.models: list[str] = list(models) if models is not None else self.default_models()
        self.failure_rate: float = failure_rate
        self.require_key: str | None = require_key
        self.requests: list[dict[str, Any]] = []
        self.url: str = ""
        self.port: int = 0
        # Concurrency gauges, handy for load tests.
        self.in_flight: int = 0
        self.peak_in_flight: int = 0

        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._script: deque[Fault] = deque()
        self._down = False
        self._holding = False
        self._hold_after = 0  # hold streams after this many text chunks (0: before answering)
        self._waiting: deque[_Held] = deque()  # held requests, longest waiting first
        self._permits = 0  # released by release(n) before any request waited for them
        self._stopping = False
        self._releases = 0  # release() counts up; a hang that began before the count moved ends
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self._app = Starlette(routes=self._routes())

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> Self:
        """Bind a free loopback port, start uvicorn in a daemon thread and wait until it accepts."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping = False
        # Binding the socket ourselves gives us the port before uvicorn starts.
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit TCP_NODELAY from the listener. Without it, the body write that
        # follows the header write waits for the client's delayed ACK: ~40 ms per response.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind(("127.0.0.1", 0))
        self._sock = sock
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._asgi,
            log_level="warning",
            access_log=False,
            lifespan="off",
            interface="asgi3",  # uvicorn's auto-detection mistakes a bound method for ASGI2
            proxy_headers=False,  # no proxy in front of a loopback server; skip the middleware
            log_config=None,  # don't let uvicorn reconfigure the host process's logging
            timeout_graceful_shutdown=2,  # backstop: never let stop() wait on a stuck handler
            timeout_keep_alive=30,
            backlog=4096,
        )
        server = uvicorn.Server(config)
        self._server = server
        thread = threading.Thread(
            target=server.run,
            kwargs={"sockets": [sock]},
            name=f"{type(self).__name__}:{self.port}",
            daemon=True,
        )
        self._thread = thread
        thread.start()
        deadline = time.monotonic() + 10.0
        while not server.started:
            if not thread.is_alive():
                raise RuntimeError(f"{type(self).__name__} failed to start")
            if time.monotonic() > deadline:
                raise TimeoutError(f"{type(self).__name__} did not start within 10 s")
            time.sleep(0.002)
        self.url = f"http://127.0.0.1:{self.port}{self.url_path}"
        return self

    def stop(self) -> None:
        """Ask uvicorn to exit (hanging handlers wake up early) and join the thread."""
        server, thread = self._server, self._thread
        if server is None or thread is None:
            return
        self._stopping = True
        server.should_exit = True
        thread.join(timeout=5.0)
        if thread.is_alive():  # pragma: no cover - only if a handler ignores cancellation
            server.force_exit = True
            thread.join(timeout=5.0)
        if self._sock is not None:
            try:
                self._sock.close()
            except OSError:  # pragma: no cover
                pass
        self._server = self._thread = self._sock = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ scripting

    def script(self, *faults: Fault) -> None:
        """Queue faults: the next N generation requests get them in order, then normal behaviour."""
        with self._lock:
            self._script.extend(faults)

    def set_down(self, down: bool) -> None:
        """While down, every request answers 503 with the protocol's error body."""
        self._down = down

    def hold(self, *, after_chunks: int = 0) -> None:
        """From now on, generation requests wait for `release()` before answering (after their
        fault is picked and they are recorded: a scripted fault is answered once released).
        With `after_chunks`, streams wait after sending that many text chunks instead, and
        answers that are not streamed are not held."""
        with self._lock:
            self._holding = True
            self._hold_after = after_chunks
            self._permits = 0

    def release(self, n: int | None = None) -> None:
        """Let the `n` longest-held requests answer (or, past those waiting, the next to arrive);
        without `n`, every one, and stop holding, and end every scripted hang in progress (those
        requests are answered normally)."""
        with self._lock:
            if n is None:
                self._releases += 1
                self._holding = False
                n = len(self._waiting)
            for _ in range(n):
                if self._waiting:
                    self._waiting.popleft().released = True
                else:
                    self._permits += 1

    @property
    def held(self) -> int:
        """Requests waiting in `hold()` right now."""
        return len(self._waiting)

    def reset(self) -> None:
        """Back to the constructor's settings: clears the script, the down flag, the request log
        and the concurrency gauges, and re-seeds the failure RNG. The server keeps running."""
        d = self._defaults
        with self._lock:
            self.reply = d["reply"]
            self.json_reply = d["json_reply"]
            self.latency_s = d["latency_s"]
            self.chunk_delay_s = d["chunk_delay_s"]
            self.models = list(d["models"]) if d["models"] is not None else self.default_models()
            self.failure_rate = d["failure_rate"]
            self.require_key = d["require_key"]
            self._rng.seed(d["seed"])
            self._script.clear()
            self._down = False
            self._holding = False
            self._hold_after = 0
            self._permits = 0
            for waiting in self._waiting:
                waiting.released = True
            self._waiting.clear()
            self.requests.clear()
            self.peak_in_flight = self.in_flight

    @property
    def request_count(self) -> int:
        return len(self.requests)

    # ------------------------------------------------------------------ protocol hooks (subclasses)

    def _routes(self) -> list[Route]:
        raise NotImplementedError

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        raise NotImplementedError

    def _presented_key(self, request: Request) -> str | None:
        raise NotImplementedError

    def _completion(self, call: _Call, chunks: list[str], truncated: bool) -> dict[str, Any]:
        raise NotImplementedError

    def _stream_frames(self, call: _Call, chunks: list[str], truncated: bool) -> Iterable[Frame]:
        raise NotImplementedError

    def _malformed_body(self) -> bytes:
        raise NotImplementedError

    def _malformed_frame(self) -> bytes:
        raise NotImplementedError

    def _error_frame(self, fault: Fault) -> bytes:
        """The protocol's in-stream error event (kind="error_event")."""
        raise NotImplementedError

    def _extra_headers(self) -> dict[str, str]:
        return {}

    def _wants_json(self, call: _Call) -> bool:
        """Whether the request asks for JSON output (the protocol's own setting)."""
        return False

    def _bad_content(self, body: dict[str, Any]) -> str | None:
        """The API's words for an image or document part it refuses (None: all are well formed)."""
        return None

    #: The arguments of every tool call these servers make, in the pieces they stream them in.
    TOOL_ARGUMENTS: ClassVar[list[str]] = ['{"city": ', '"Paris"}']
    TOOL_INPUT: ClassVar[dict[str, Any]] = {"city": "Paris"}

    # ------------------------------------------------------------------ generic machinery

    async def _asgi(self, scope: Scope, receive: Receive, send: Send) -> None:
        # Thin wrapper to track concurrency; runs only on the server's event loop thread.
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        self.in_flight += 1
        if self.in_flight > self.peak_in_flight:
            self.peak_in_flight = self.in_flight
        try:
            await self._app(scope, receive, send)
        finally:
            self.in_flight -= 1

    async def _sleep(self, seconds: float) -> None:
        """asyncio.sleep that returns early when the server is stopping (so 'hang' never blocks stop())."""
        if seconds <= 0:
            return
        if seconds <= 0.2:
            await asyncio.sleep(seconds)
            return
        deadline = time.monotonic() + seconds
        while not self._stopping:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            await asyncio.sleep(min(left, 0.1))

    async def _hang(self, request: Request, seconds: float) -> bool:
        """Wait `seconds`, or until `release()`, or the server stops; True if the client went
        away meanwhile (it cancelled the call)."""
        releases = self._releases
        deadline = time.monotonic() + seconds
        while not self._stopping and self._releases == releases and time.monotonic() < deadline:
            if await request.is_disconnected():
                return True
            await asyncio.sleep(0.05)
        return False

    async def _read_json(self, request: Request) -> Any:
        raw = await request.body()
        if not raw:
            return None
        try:
            return json.loads(raw)
        except ValueError:
            return None

    async def _wait_for_release(self, request: Request) -> bool:
        """While `hold()` is on: wait until `release()` lets this request through; True if the
        client went away meanwhile (it cancelled the call)."""
        with self._lock:
            if not self._holding:
                return False
            if self._permits:
                self._permits -= 1
                return False
            held = _Held()
            self._waiting.append(held)
        try:
            while not held.released and not self._stopping:
                if await request.is_disconnected():
                    return True
                await asyncio.sleep(0.01)
            return False
        finally:  # released, or the client gave up (or a stream's body was cancelled): out of the line
            with self._lock:
                if not held.released and held in self._waiting:
                    self._waiting.remove(held)

    def _key_ok(self, request: Request) -> bool:
        return self.require_key is None or self._presented_key(request) == self.require_key

    def _model_not_found(self, model: str) -> str:
        """The API's own words for a model it does not serve."""
        raise NotImplementedError

    def _pick_fault(self, request: Request, generation: bool, model: str | None = None) -> Fault | None:
        """Decide what goes wrong with this request: down > bad key > unknown model > script >
        random failure."""
        if self._down:
            return Fault("status", status=503, message="The service is temporarily unavailable (server is down).")
        if not self._key_ok(request):
            return Fault("status", status=401, message="Invalid API key provided.")
        if model is not None and model not in self.models:
            return Fault("status", status=404, message=self._model_not_found(model))
        if not generation:
            return None
        with self._lock:
            if self._script:
                return self._script.popleft()
            # Always draw, so the i-th generation request's fate depends only on the seed.
            if self._rng.random() < self.failure_rate:
                return Fault("status", status=500, message="Randomly injected server error.")
        return None

    def _record(self, request: Request, body: Any, stream: bool, fault: Fault | None, **extra: Any) -> dict[str, Any]:
        entry: dict[str, Any] = {
            "method": request.method,
            "path": request.url.path,
            "query": dict(request.query_params),
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "json": body,
            "stream": stream,
            "fault": fault.kind if fault else None,
            "status": fault.status if fault and fault.kind == "status" else 200,
        }
        entry.update(extra)
        with self._lock:
            self.requests.append(entry)
        return entry

    def _error_response(self, fault: Fault) -> Response:
        headers = self._extra_headers()
        if fault.retry_after is not None:
            ra = fault.retry_after  # "7", not "7.0": HTTP's delay-seconds is an integer
            headers["retry-after"] = str(int(ra)) if float(ra).is_integer() else str(ra)
        body = self._error_body(fault.status, fault.message)
        inner = body.get("error")
        if fault.code is not None and isinstance(inner, dict) and not isinstance(inner.get("code"), int):
            inner["code"] = fault.code  # OpenAI's string code (Gemini's `code` is the HTTP status)
        return Response(
            _dumps(body),
            status_code=fault.status,
            media_type="application/json",
            headers=headers,
        )

    async def _simple(
        self, request: Request, payload: Callable[[], dict[str, Any]], *, model: str | None = None
    ) -> Response:
        """Non-generation endpoints (model listing, one model): only down, auth and, given a
        `model`, whether it is served apply."""
        fault = self._pick_fault(request, generation=False, model=model)
        self._record(request, await self._read_json(request), False, fault)
        if fault is not None:
            return self._error_response(fault)
        return Response(_dumps(payload()), media_type="application/json", headers=self._extra_headers())

    async def _generate(self, request: Request, call: _Call, **extra: Any) -> Response:
        """The shared flow for a generation request, whatever the protocol."""
        fault = self._pick_fault(request, generation=True, model=call.model)
        if fault is None or fault.kind != "status":  # what the real API refuses before generating
            problem = self._bad_content(call.body)
            if problem is not None:
                fault = Fault("status", status=400, message=problem)
        entry = self._record(request, call.body, call.stream, fault, model=call.model, **extra)
        if self._holding and not (call.stream and self._hold_after) and await self._wait_for_release(request):
            entry["disconnected"] = True
            return Response(status_code=499)  # nobody reads it: the client has gone
        if fault is not None and (fault.kind == "status" or (fault.kind == "error_event" and not call.stream)):
            return self._error_response(fault)
        if fault is not None and fault.kind == "hang":
            # The client should time out or give up; otherwise answer normally once it ends.
            if await self._hang(request, fault.hang_s):
                entry["disconnected"] = True
                return Response(status_code=499)  # nobody reads it: the client has gone
            fault = None

        chunks = _split_reply(self.json_reply if self._wants_json(call) else self.reply)
        truncated = call.max_tokens is not None and call.max_tokens < len(chunks)
        if truncated:
            chunks = chunks[: max(call.max_tokens or 0, 0)]
        kind = fault.kind if fault is not None else None

        if call.stream:
            return StreamingResponse(
                self._stream_body(request, call, chunks, truncated, kind, fault),
                media_type="text/event-stream",
                headers={"cache-control": "no-cache", **self._extra_headers()},
            )

        await self._sleep(self.latency_s)
        if kind == "malformed":
            return Response(self._malformed_body(), media_type="application/json", headers=self._extra_headers())
        body = _dumps(self._completion(call, chunks, truncated))
        if kind in ("cut", "cut_before_first"):
            # Promise the full Content-Length, deliver part of it, then drop the connection.
            partial = b"" if kind == "cut_before_first" else body[: len(body) // 2]
            return StreamingResponse(
                self._cut_body(partial),
                media_type="application/json",
                headers={"content-length": str(len(body)), **self._extra_headers()},
            )
        return Response(body, media_type="application/json", headers=self._extra_headers())

    async def _cut_body(self, partial: bytes) -> AsyncIterator[bytes]:
        if partial:
            yield partial
        raise _ScriptedCut("scripted connection cut")

    async def _stream_body(
        self,
        request: Request,
        call: _Call,
        chunks: list[str],
        truncated: bool,
        fault: FaultKind | None,
        scripted: Fault | None = None,
    ) -> AsyncIterator[bytes]:
        """Generic SSE loop: latency before the first frame, chunk delay between text frames, faults."""
        await self._sleep(self.latency_s)
        sent_text = 0
        for frame_kind, data in self._stream_frames(call, chunks, truncated):
            if frame_kind == "pre":
                yield data
                continue
            if fault == "cut_before_first" or (fault == "cut" and frame_kind == "post"):
                # cut_before_first: preamble only. "cut" with an empty reply also ends up here.
                raise _ScriptedCut("scripted stream cut")
            if fault == "malformed":
                yield self._malformed_frame()
                return  # end the body cleanly: the client must fail on the JSON, not the connection
            if frame_kind == "text":
                if sent_text and self.chunk_delay_s > 0:
                    await self._sleep(self.chunk_delay_s)
                yield data
                sent_text += 1
                if fault == "cut":
                    raise _ScriptedCut("scripted stream cut")
                if fault == "error_event" and scripted is not None:
                    yield self._error_frame(scripted)
                    return
                if self._holding and sent_text == self._hold_after and await self._wait_for_release(request):
                    return  # the client has gone
            else:
                yield data


# ====================================================================== OpenAI


class OpenAIServer(ProtocolServer):
    """OpenAI Chat Completions: ``POST /v1/chat/completions`` and ``GET /v1/models``.

    ``url`` ends in ``/v1`` because the openai SDK's base_url includes the version.
    Auth: ``Authorization: Bearer <key>``.
    """

    provider: ClassVar[str] = "openai"
    url_path: ClassVar[str] = "/v1"

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        #: Sent as `system_fingerprint` on every answer and chunk (OpenAI's own is a string such as fp_...).
        self.system_fingerprint: str | None = None
        #: The `id` of every answer given (a stream's chunks share one), in order.
        self.response_ids: list[str] = []

    def reset(self) -> None:
        super().reset()
        self.system_fingerprint = None
        self.response_ids.clear()

    _ERROR_TYPES: ClassVar[dict[int, tuple[str, str | None]]] = {
        400: ("invalid_request_error", None),
        401: ("invalid_request_error", "invalid_api_key"),
        403: ("permission_error", None),
        404: ("invalid_request_error", "model_not_found"),
        429: ("requests", "rate_limit_exceeded"),
    }

    def _routes(self) -> list[Route]:
        return [
            Route("/v1/chat/completions", self._chat, methods=["POST"]),
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self._model, methods=["GET"]),
        ]

    def _presented_key(self, request: Request) -> str | None:
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth[:7].lower() == "bearer " else None

    def _extra_headers(self) -> dict[str, str]:
        return {"x-request-id": f"req_{uuid.uuid4().hex[:24]}"}

    def _model_not_found(self, model: str) -> str:
        return f"The model `{model}` does not exist or you do not have access to it."

    @staticmethod
    def _model_card(model: str) -> dict[str, Any]:
        return {"id": model, "object": "model", "created": 1_700_000_000, "owned_by": "system"}

    async def _model(self, request: Request) -> Response:
        model = request.path_params["model"]
        return await self._simple(request, lambda: self._model_card(model), model=model)

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        err_type, code = self._ERROR_TYPES.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        return {"error": {"message": message, "type": err_type, "param": None, "code": code}}

    async def _list_models(self, request: Request) -> Response:
        return await self._simple(
            request,
            lambda: {"object": "list", "data": [self._model_card(m) for m in self.models]},
        )

    async def _chat(self, request: Request) -> Response:
        body = await self._read_json(request)
        if not isinstance(body, dict):
            fault = Fault("status", status=400, message="We could not parse the JSON body of your request.")
            self._record(request, None, False, fault)
            return self._error_response(fault)
        max_tokens = _as_int(body.get("max_completion_tokens"))
        if max_tokens is None:
            max_tokens = _as_int(body.get("max_tokens"))
        call = _Call(
            model=str(body.get("model", "")),
            stream=bool(body.get("stream", False)),
            input_tokens=_count_words(body.get("messages", [])),
            max_tokens=max_tokens,
            body=body,
        )
        return await self._generate(request, call)

    def _usage(self, call: _Call, chunks: list[str]) -> dict[str, Any]:
        completion = len(chunks) * (1 if call.stream else self._choices(call))  # streams answer one choice
        return {
            "prompt_tokens": call.input_tokens,
            "completion_tokens": completion,
            "total_tokens": call.input_tokens + completion,
        }

    @staticmethod
    def _choices(call: _Call) -> int:
        """OpenAI's `n`: how many choices to answer with."""
        return max(_as_int(call.body.get("n")) or 1, 1)

    @staticmethod
    def _logprobs(call: _Call, chunks: list[str], first: int = 0) -> dict[str, Any] | None:
        """With `logprobs: true`, one entry per reply chunk (`first`: the chunk's position)."""
        if call.body.get("logprobs") is not True:
            return None
        top = _as_int(call.body.get("top_logprobs")) or 0
        content = [_token_logprobs(text, first + i, top) for i, text in enumerate(chunks)]
        return {"content": content, "refusal": None}

    def _bad_content(self, body: dict[str, Any]) -> str | None:
        messages = body.get("messages")
        for i, message in enumerate(messages if isinstance(messages, list) else ()):
            content = message.get("content") if isinstance(message, dict) else None
            for j, part in enumerate(content if isinstance(content, list) else ()):
                where = f"messages[{i}].content[{j}]"
                kind = part.get("type") if isinstance(part, dict) else None
                if kind not in ("text", "image_url", "input_audio", "file", "refusal"):
                    return f"Invalid value: {kind!r}. Supported values are: 'text', 'image_url', 'input_audio', 'refusal', and 'file'."
                if kind in ("image_url", "file") and message.get("role") != "user":
                    return f"Invalid '{where}': image and file parts are only allowed for messages with role 'user'."
                if kind == "image_url":
                    image = part.get("image_url")
                    url = image.get("url") if isinstance(image, dict) else None
                    if not isinstance(url, str):
                        return f"Missing required parameter: '{where}.image_url.url'."
                    if url.startswith("data:") and not any(url.startswith(f"data:{t};base64,") for t in _IMAGE_TYPES):
                        return (
                            f"Invalid '{where}.image_url.url'. Expected a base64-encoded data URL with an image MIME "
                            "type (e.g. 'data:image/png;base64,aW1nIGJ5dGVzIGhlcmU=')."
                        )
                    if not url.startswith(("data:", "https://", "http://")):
                        return f"Invalid '{where}.image_url.url': expected a URL or a data URL."
                    if image.get("detail") not in (None, "auto", "low", "high"):
                        return f"Invalid '{where}.image_url.detail': expected one of 'auto', 'low' or 'high'."
                if kind == "file":
                    file = part.get("file")
                    if not isinstance(file, dict) or not (file.get("file_data") or file.get("file_id")):
                        return f"Missing required parameter: '{where}.file.file_data' or '{where}.file.file_id'."
        return None

    def _wants_json(self, call: _Call) -> bool:
        fmt = call.body.get("response_format")
        return isinstance(fmt, dict) and fmt.get("type") in ("json_object", "json_schema")

    @staticmethod
    def _tool_call(call: _Call) -> dict[str, Any] | None:
        """Offered tools (and not told "none"), and not answering a tool result, the server
        calls a tool: the one `tool_choice` names, else the first."""
        body = call.body
        tools = body.get("tools") or []
        choice = body.get("tool_choice")
        messages = body.get("messages") or []
        if not tools or choice == "none" or (messages and messages[-1].get("role") == "tool"):
            return None
        name = choice["function"]["name"] if isinstance(choice, dict) else tools[0]["function"]["name"]
        return {"id": f"call_{uuid.uuid4().hex[:12]}", "type": "function", "function": {"name": name}}

    @staticmethod
    def _function_call(call: _Call) -> str | None:
        """The deprecated form: offered `functions` (no tools, not told "none", not answering a
        function's result), the server answers with a `function_call` to the named or first one."""
        body = call.body
        functions = body.get("functions") or []
        choice = body.get("function_call")
        messages = body.get("messages") or []
        if body.get("tools") or not functions or choice == "none":
            return None
        if messages and messages[-1].get("role") in ("function", "tool"):
            return None
        return choice["name"] if isinstance(choice, dict) else functions[0]["name"]

    def _completion(self, call: _Call, chunks: list[str], truncated: bool) -> dict[str, Any]:
        tool = self._tool_call(call)
        function = self._function_call(call)
        message: dict[str, Any] = {"role": "assistant", "content": "".join(chunks), "refusal": None, "annotations": []}
        finish = "length" if truncated else "stop"
        if tool is not None:
            tool["function"]["arguments"] = "".join(self.TOOL_ARGUMENTS)
            message.update(content=None, tool_calls=[tool])
            finish, chunks = "tool_calls", self.TOOL_ARGUMENTS
        elif function is not None:
            message.update(content=None, function_call={"name": function, "arguments": "".join(self.TOOL_ARGUMENTS)})
            finish, chunks = "function_call", self.TOOL_ARGUMENTS
        answer_id = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.response_ids.append(answer_id)
        return {
            "id": answer_id,
            "object": "chat.completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": [
                {"index": index, "message": message, "logprobs": self._logprobs(call, chunks), "finish_reason": finish}
                for index in range(self._choices(call))
            ],
            "usage": self._usage(call, chunks),
            "system_fingerprint": self.system_fingerprint,
        }

    def _stream_frames(self, call: _Call, chunks: list[str], truncated: bool) -> Iterable[Frame]:
        cid = f"chatcmpl-{uuid.uuid4().hex[:24]}"
        self.response_ids.append(cid)
        created = int(time.time())
        opts = call.body.get("stream_options")
        include_usage = isinstance(opts, dict) and bool(opts.get("include_usage"))
        tool = self._tool_call(call)
        function = self._function_call(call)
        fingerprint = self.system_fingerprint

        def chunk(delta: dict[str, Any], finish: str | None, logprobs: dict[str, Any] | None = None) -> bytes:
            obj: dict[str, Any] = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": call.model,
                "system_fingerprint": fingerprint,
                "choices": [{"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish}],
            }
            if include_usage:
                obj["usage"] = None  # real API: null on every chunk but the last
            return b"data: " + _dumps(obj) + b"\n\n"

        yield "pre", chunk({"role": "assistant", "content": "", "refusal": None}, None)
        if tool is None and function is not None:  # the deprecated form: name first, then argument pieces
            yield "text", chunk({"function_call": {"name": function, "arguments": ""}}, None)
            for piece in self.TOOL_ARGUMENTS:
                yield "text", chunk({"function_call": {"arguments": piece}}, None)
            chunks = self.TOOL_ARGUMENTS
            yield "post", chunk({}, "function_call")
        elif tool is not None:  # as OpenAI streams a call: id and name first, then the arguments in pieces
            yield (
                "text",
                chunk({"tool_calls": [{"index": 0, **tool, "function": {**tool["function"], "arguments": ""}}]}, None),
            )
            for piece in self.TOOL_ARGUMENTS:
                yield "text", chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]}, None)
            chunks = self.TOOL_ARGUMENTS
            yield "post", chunk({}, "tool_calls")
        else:
            for position, text in enumerate(chunks):
                yield "text", chunk({"content": text}, None, self._logprobs(call, [text], position))
            yield "post", chunk({}, "length" if truncated else "stop")
        if include_usage:
            usage_obj = {
                "id": cid,
                "object": "chat.completion.chunk",
                "created": created,
                "model": call.model,
                "system_fingerprint": fingerprint,
                "choices": [],
                "usage": self._usage(call, chunks),
            }
            yield "post", b"data: " + _dumps(usage_obj) + b"\n\n"
        yield "post", b"data: [DONE]\n\n"

    def _malformed_body(self) -> bytes:
        return b'{"id": "chatcmpl-broken", "object": "chat.completion", "choices": ['

    def _malformed_frame(self) -> bytes:
        return b'data: {"id": "chatcmpl-broken", "object": "chat.completion.chunk", "choices": [{"delta": {\n\n'

    def _error_frame(self, fault: Fault) -> bytes:
        return b"event: error\ndata: " + _dumps(self._error_body(fault.status, fault.message)) + b"\n\n"


# ====================================================================== Anthropic


class AnthropicServer(ProtocolServer):
    """Anthropic Messages: ``POST /v1/messages`` and ``GET /v1/models``.

    ``url`` has no path: the anthropic SDK appends ``/v1/messages`` itself.
    Auth: ``x-api-key`` or ``Authorization: Bearer`` - anthropic 2.x sends
    ``api_key`` as a Bearer token, older releases as ``x-api-key``.
    The request log entry also carries ``"system"`` (the system prompt).
    """

    provider: ClassVar[str] = "anthropic"
    url_path: ClassVar[str] = ""

    _ERROR_TYPES: ClassVar[dict[int, str]] = {
        400: "invalid_request_error",
        401: "authentication_error",
        403: "permission_error",
        404: "not_found_error",
        413: "request_too_large",
        429: "rate_limit_error",
        500: "api_error",
        503: "overloaded_error",
        504: "timeout_error",
        529: "overloaded_error",
    }

    def _routes(self) -> list[Route]:
        return [
            Route("/v1/messages", self._messages, methods=["POST"]),
            Route("/v1/models", self._list_models, methods=["GET"]),
            Route("/v1/models/{model:path}", self._model, methods=["GET"]),
        ]

    def _model_not_found(self, model: str) -> str:
        return f"model: {model}"

    @staticmethod
    def _model_info(model: str) -> dict[str, Any]:
        return {
            "type": "model",
            "id": model,
            "display_name": model.replace("-", " ").title(),
            "created_at": "2025-01-01T00:00:00Z",
        }

    async def _model(self, request: Request) -> Response:
        model = request.path_params["model"]
        return await self._simple(request, lambda: self._model_info(model), model=model)

    def _presented_key(self, request: Request) -> str | None:
        key = request.headers.get("x-api-key")
        if key is not None:
            return key
        auth = request.headers.get("authorization", "")
        return auth[7:] if auth[:7].lower() == "bearer " else None

    def _extra_headers(self) -> dict[str, str]:
        return {"request-id": f"req_{uuid.uuid4().hex[:24]}"}

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        err_type = self._ERROR_TYPES.get(status, "api_error" if status >= 500 else "invalid_request_error")
        return {"type": "error", "error": {"type": err_type, "message": message}}

    async def _list_models(self, request: Request) -> Response:
        def payload() -> dict[str, Any]:
            data = [self._model_info(m) for m in self.models]
            return {
                "data": data,
                "has_more": False,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }

        return await self._simple(request, payload)

    async def _messages(self, request: Request) -> Response:
        body = await self._read_json(request)
        if not isinstance(body, dict):
            fault = Fault("status", status=400, message="messages: request body is not valid JSON")
            self._record(request, None, False, fault)
            return self._error_response(fault)
        call = _Call(
            model=str(body.get("model", "")),
            stream=bool(body.get("stream", False)),
            input_tokens=_count_words(body.get("system", ""), body.get("messages", [])),
            max_tokens=_as_int(body.get("max_tokens")),
            body=body,
        )
        return await self._generate(request, call, system=body.get("system"))

    def _bad_content(self, body: dict[str, Any]) -> str | None:
        messages = body.get("messages")
        for i, message in enumerate(messages if isinstance(messages, list) else ()):
            content = message.get("content") if isinstance(message, dict) else None
            for j, block in enumerate(content if isinstance(content, list) else ()):
                kind = block.get("type") if isinstance(block, dict) else None
                if kind not in ("image", "document"):
                    continue
                where = f"messages.{i}.content.{j}.{kind}"
                if message.get("role") != "user":
                    return f"{where}: images and documents are only allowed in user turns"
                source = block.get("source")
                source_type = source.get("type") if isinstance(source, dict) else None
                if source_type == "url":
                    if not isinstance(source.get("url"), str):
                        return f"{where}.source.url.url: Field required"
                    continue
                if source_type != "base64" and not (kind == "document" and source_type == "text"):
                    return f"{where}.source: Input tag {source_type!r} found using 'type' does not match any of the expected tags"
                if source_type == "text":
                    continue
                allowed = _IMAGE_TYPES if kind == "image" else ("application/pdf",)
                if "media_type" not in source:
                    return f"{where}.source.base64.media_type: Field required"
                if source["media_type"] not in allowed:
                    return f"{where}.source.base64.media_type: Input should be " + " or ".join(repr(t) for t in allowed)
                if not _is_base64(source.get("data")):
                    return f"{where}.source.base64.data: invalid base64 data"
        return None

    #: What Claude writes before a tool call it chose to make (tool_choice auto).
    TOOL_PREAMBLE: ClassVar[str] = "Let me look that up."

    def _wants_json(self, call: _Call) -> bool:
        config = call.body.get("output_config")
        return isinstance(config, dict) and isinstance(config.get("format"), dict)

    @staticmethod
    def _tool_call(call: _Call) -> dict[str, Any] | None:
        """Offered tools (and not told "none"), and not answering tool results, the server
        calls a tool: the one `tool_choice` names, else the first. `forced`: tool_choice
        "any" or "tool", for which Claude writes no text first."""
        body = call.body
        tools = body.get("tools") or []
        choice = given if isinstance(given := body.get("tool_choice"), dict) else {"type": "auto"}
        messages = body.get("messages") or []
        last = messages[-1].get("content") if messages else None
        answering = isinstance(last, list) and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in last)
        if not tools or choice.get("type") == "none" or answering:
            return None
        name = choice["name"] if choice.get("type") == "tool" else tools[0]["name"]
        return {"id": f"toolu_{uuid.uuid4().hex[:24]}", "name": name, "forced": choice.get("type") in ("any", "tool")}

    def _usage(self, call: _Call, output_tokens: int) -> dict[str, Any]:
        return {
            "input_tokens": call.input_tokens,
            "output_tokens": output_tokens,
            "cache_creation_input_tokens": 0,
            "cache_read_input_tokens": 0,
        }

    def _completion(self, call: _Call, chunks: list[str], truncated: bool) -> dict[str, Any]:
        content: list[dict[str, Any]] = [{"type": "text", "text": "".join(chunks)}]
        stop_reason, output_tokens = "max_tokens" if truncated else "end_turn", len(chunks)
        tool = self._tool_call(call)
        if tool is not None:
            content = [] if tool["forced"] else [{"type": "text", "text": self.TOOL_PREAMBLE}]
            content.append({"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": self.TOOL_INPUT})
            stop_reason, output_tokens = "tool_use", len(self.TOOL_ARGUMENTS)
        return {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": content,
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": self._usage(call, output_tokens),
        }

    @staticmethod
    def _event(name: str, data: dict[str, Any]) -> bytes:
        return b"event: " + name.encode() + b"\ndata: " + _dumps(data) + b"\n\n"

    def _stream_frames(self, call: _Call, chunks: list[str], truncated: bool) -> Iterable[Frame]:
        ev = self._event
        message: dict[str, Any] = {
            "id": f"msg_{uuid.uuid4().hex[:24]}",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": self._usage(call, 1),
        }
        yield "pre", ev("message_start", {"type": "message_start", "message": message})
        tool = self._tool_call(call)
        if tool is not None:
            yield from self._tool_frames(tool)
            return
        yield (
            "pre",
            ev(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            ),
        )
        yield "pre", ev("ping", {"type": "ping"})
        for text in chunks:
            yield (
                "text",
                ev(
                    "content_block_delta",
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": text},
                    },
                ),
            )
        yield "post", ev("content_block_stop", {"type": "content_block_stop", "index": 0})
        yield (
            "post",
            ev(
                "message_delta",
                {
                    "type": "message_delta",
                    "delta": {
                        "stop_reason": "max_tokens" if truncated else "end_turn",
                        "stop_sequence": None,
                    },
                    "usage": {"output_tokens": len(chunks)},
                },
            ),
        )
        yield "post", ev("message_stop", {"type": "message_stop"})

    def _tool_frames(self, tool: dict[str, Any]) -> Iterable[Frame]:
        """A tool call as Anthropic streams it: (a text block first unless forced) a tool_use
        block opened with its id and name and empty input, the input as JSON pieces (the
        first one empty, as the API sends it), then stop_reason "tool_use"."""
        ev = self._event
        index = 0
        if not tool["forced"]:
            start = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
            yield "pre", ev("content_block_start", start)
            yield "pre", ev("ping", {"type": "ping"})
            delta = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "text_delta", "text": self.TOOL_PREAMBLE},
            }
            yield "text", ev("content_block_delta", delta)
            yield "post", ev("content_block_stop", {"type": "content_block_stop", "index": 0})
            index = 1
        block = {"type": "tool_use", "id": tool["id"], "name": tool["name"], "input": {}}
        yield "text", ev("content_block_start", {"type": "content_block_start", "index": index, "content_block": block})
        if tool["forced"]:
            yield "pre", ev("ping", {"type": "ping"})
        for piece in ["", *self.TOOL_ARGUMENTS]:
            delta = {
                "type": "content_block_delta",
                "index": index,
                "delta": {"type": "input_json_delta", "partial_json": piece},
            }
            yield "text", ev("content_block_delta", delta)
        yield "post", ev("content_block_stop", {"type": "content_block_stop", "index": index})
        usage = {"output_tokens": len(self.TOOL_ARGUMENTS)}
        yield (
            "post",
            ev(
                "message_delta",
                {"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": None}, "usage": usage},
            ),
        )
        yield "post", ev("message_stop", {"type": "message_stop"})

    def _malformed_body(self) -> bytes:
        return b'{"id": "msg_broken", "type": "message", "content": ['

    def _malformed_frame(self) -> bytes:
        return b'event: content_block_delta\ndata: {"type": "content_block_delta", "index": 0, "delta": {\n\n'

    def _error_frame(self, fault: Fault) -> bytes:
        return b"event: error\ndata: " + _dumps(self._error_body(fault.status, fault.message)) + b"\n\n"


# ====================================================================== Gemini


class GeminiServer(ProtocolServer):
    """Google Gemini (generativelanguage REST, as used by ``google-genai``).

    ``url`` has no path; use it as ``HttpOptions(base_url=url)``. The SDK calls
    ``POST /{version}/models/{model}:generateContent`` and
    ``POST /{version}/models/{model}:streamGenerateContent?alt=sse``; model
    listing is ``GET /{version}/models``. Any version segment is accepted:
    google-genai 3.x defaults to ``v1`` (``v1beta`` with
    ``HttpOptions(api_version="v1beta")``). Auth: ``x-goog-api-key`` header or
    ``?key=`` query parameter. The log entry's ``"system"`` is the systemInstruction.
    """

    provider: ClassVar[str] = "gemini"
    url_path: ClassVar[str] = ""

    _STATUSES: ClassVar[dict[int, str]] = {
        400: "INVALID_ARGUMENT",
        401: "UNAUTHENTICATED",
        403: "PERMISSION_DENIED",
        404: "NOT_FOUND",
        409: "ABORTED",
        429: "RESOURCE_EXHAUSTED",
        499: "CANCELLED",
        500: "INTERNAL",
        501: "NOT_IMPLEMENTED",
        503: "UNAVAILABLE",
        504: "DEADLINE_EXCEEDED",
    }

    def _routes(self) -> list[Route]:
        # The model segment contains a colon ("gemini-3.5-flash-lite:generateContent"), so take the rest as a path.
        return [
            Route("/{version}/models", self._list_models, methods=["GET"]),
            Route("/{version}/models/{rest:path}", self._model_action, methods=["GET", "POST"]),
        ]

    def _presented_key(self, request: Request) -> str | None:
        return request.headers.get("x-goog-api-key") or request.query_params.get("key")

    def _error_body(self, status: int, message: str) -> dict[str, Any]:
        return {"error": {"code": status, "message": message, "status": self._STATUSES.get(status, "UNKNOWN")}}

    def _model_not_found(self, model: str) -> str:
        return (
            f"models/{model} is not found for this API version, or is not supported for generateContent. "
            "Call ListModels to see the list of available models and their supported methods."
        )

    def _model_info(self, model: str) -> dict[str, Any]:
        return {
            "name": f"models/{model}",
            "version": "001",
            "displayName": model.replace("-", " ").title(),
            "description": f"Loopback stand-in for {model}.",
            "inputTokenLimit": 1_048_576,
            "outputTokenLimit": 65_536,
            "supportedGenerationMethods": ["generateContent", "countTokens"],
        }

    async def _list_models(self, request: Request) -> Response:
        return await self._simple(request, lambda: {"models": [self._model_info(m) for m in self.models]})

    async def _model_action(self, request: Request) -> Response:
        rest: str = request.path_params["rest"]
        if request.method == "GET":
            model = rest.removeprefix("models/")
            return await self._simple(request, lambda: self._model_info(model), model=model)
        model, _, method = rest.rpartition(":")
        if method not in ("generateContent", "streamGenerateContent"):
            fault = Fault("status", status=404, message=f"Method {method!r} is not supported by this server.")
            self._record(request, None, False, fault)
            return self._error_response(fault)
        body = await self._read_json(request)
        if not isinstance(body, dict):
            fault = Fault("status", status=400, message="Invalid JSON payload received.")
            self._record(request, None, method == "streamGenerateContent", fault)
            return self._error_response(fault)
        gen_config = body.get("generationConfig")
        image_tokens = self.IMAGE_TOKENS * self._images(body)
        call = _Call(
            model=model.removeprefix("models/"),
            stream=method == "streamGenerateContent",
            input_tokens=_count_words(body.get("systemInstruction", {}), body.get("contents", [])) + image_tokens,
            max_tokens=_as_int(gen_config.get("maxOutputTokens")) if isinstance(gen_config, dict) else None,
            body=body,
            image_tokens=image_tokens,
        )
        return await self._generate(request, call, system=body.get("systemInstruction"))

    #: What Gemini counts for an image of at most 384x384 pixels.
    IMAGE_TOKENS: ClassVar[int] = 258

    @staticmethod
    def _images(body: dict[str, Any]) -> int:
        """How many image parts the request's contents hold (inline or by URI)."""
        count = 0
        for content in body.get("contents") or ():
            for part in (content.get("parts") if isinstance(content, dict) else None) or ():
                data = part.get("inlineData", part.get("inline_data")) if isinstance(part, dict) else None
                data = data or (part.get("fileData", part.get("file_data")) if isinstance(part, dict) else None)
                mime = (data.get("mimeType", data.get("mime_type")) if isinstance(data, dict) else None) or ""
                count += mime.startswith("image/")
        return count

    def _bad_content(self, body: dict[str, Any]) -> str | None:
        contents = body.get("contents")
        for i, content in enumerate(contents if isinstance(contents, list) else ()):
            parts = content.get("parts") if isinstance(content, dict) else None
            for j, part in enumerate(parts if isinstance(parts, list) else ()):
                if not isinstance(part, dict):
                    continue
                # The API reads both spellings of a field (google-genai sends some in snake_case).
                inline = part.get("inlineData", part.get("inline_data"))
                where = f"contents[{i}].parts[{j}]"
                if inline is not None:
                    mime = inline.get("mimeType", inline.get("mime_type")) if isinstance(inline, dict) else None
                    if not mime:
                        return f"Invalid value at '{where}.inline_data.mime_type': a MIME type is required."
                    if not _is_base64(inline.get("data"), url_safe=True):
                        return f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed"
                file_data = part.get("fileData", part.get("file_data"))
                if file_data is not None:
                    uri = file_data.get("fileUri", file_data.get("file_uri")) if isinstance(file_data, dict) else None
                    if not isinstance(uri, str) or not uri:
                        return f"Invalid value at '{where}.file_data.file_uri': a URI is required."
        return None

    def _wants_json(self, call: _Call) -> bool:
        config = call.body.get("generationConfig")
        return isinstance(config, dict) and config.get("responseMimeType") == "application/json"

    @staticmethod
    def _tool_call(call: _Call) -> dict[str, Any] | None:
        """Offered function declarations (and not mode NONE), and not answering function
        responses, the server calls one: the first allowed name, else the first declared.
        Gemini's Developer API sends the call whole, without an id."""
        body = call.body
        declared = [d.get("name") for tool in body.get("tools") or () for d in tool.get("functionDeclarations") or ()]
        config = (body.get("toolConfig") or {}).get("functionCallingConfig") or {}
        contents = body.get("contents") or []
        last = contents[-1].get("parts") if contents else None
        answering = isinstance(last, list) and any(isinstance(p, dict) and "functionResponse" in p for p in last)
        if not declared or config.get("mode") == "NONE" or answering:
            return None
        allowed = config.get("allowedFunctionNames") or declared
        return {"name": allowed[0]}

    def _response(
        self,
        call: _Call,
        text: str,
        finish: str | None,
        output_tokens: int,
        response_id: str,
        parts: list[dict[str, Any]] | None = None,
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {"content": {"parts": parts or [{"text": text}], "role": "model"}, "index": 0}
        if finish is not None:
            candidate["finishReason"] = finish
        return {
            "candidates": [candidate],
            "usageMetadata": {
                "promptTokenCount": call.input_tokens,
                "candidatesTokenCount": output_tokens,
                "totalTokenCount": call.input_tokens + output_tokens,
                "promptTokensDetails": [{"modality": "TEXT", "tokenCount": call.input_tokens - call.image_tokens}]
                + ([{"modality": "IMAGE", "tokenCount": call.image_tokens}] if call.image_tokens else []),
            },
            "modelVersion": call.model,
            "responseId": response_id,
        }

    def _function_call(self, call: _Call, response_id: str) -> dict[str, Any] | None:
        tool = self._tool_call(call)
        if tool is None:
            return None
        part = {"functionCall": {"name": tool["name"], "args": self.TOOL_INPUT}}
        return self._response(call, "", "STOP", len(self.TOOL_ARGUMENTS), response_id, parts=[part])

    def _completion(self, call: _Call, chunks: list[str], truncated: bool) -> dict[str, Any]:
        rid = uuid.uuid4().hex[:22]
        called = self._function_call(call, rid)
        if called is not None:
            return called
        finish = "MAX_TOKENS" if truncated else "STOP"
        return self._response(call, "".join(chunks), finish, len(chunks), rid)

    def _stream_frames(self, call: _Call, chunks: list[str], truncated: bool) -> Iterable[Frame]:
        # Every chunk is a full GenerateContentResponse; usage is cumulative, the last carries finishReason.
        rid = uuid.uuid4().hex[:22]
        called = self._function_call(call, rid)
        if called is not None:  # one chunk with the whole call and the finish reason
            yield "text", b"data: " + _dumps(called) + b"\r\n\r\n"
            return
        finish = "MAX_TOKENS" if truncated else "STOP"
        for i, text in enumerate(chunks):
            last = i == len(chunks) - 1
            obj = self._response(call, text, finish if last else None, i + 1, rid)
            yield "text", b"data: " + _dumps(obj) + b"\r\n\r\n"
        if not chunks:
            yield "post", b"data: " + _dumps(self._response(call, "", finish, 0, rid)) + b"\r\n\r\n"

    def _malformed_body(self) -> bytes:
        return b'{"candidates": [{"content": {"parts": ['

    def _malformed_frame(self) -> bytes:
        return b'data: {"candidates": [{"content": {"parts": [{"text": \r\n\r\n'

    def _error_frame(self, fault: Fault) -> bytes:
        return b"data: " + _dumps(self._error_body(fault.status, fault.message)) + b"\r\n\r\n"
