"""The local provider's prompt, exactly: the few-shot transcript for base models, the choice
of a GGUF's own chat template, and the separation of the examples from the quality
benchmark's questions. Pure functions: no model is loaded here."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from conductor_core.models import ChatMessage, ChatRequest
from conductor_core.providers.local_prompt import (
    FEW_SHOT_EXAMPLES,
    FEW_SHOT_HEADER,
    STOP_SEQUENCES,
    ChatTemplate,
    build_prompt,
    chat_template_of,
    plan_prompt,
    transcript,
)
from tests.dependencies import require_module

QUESTIONS = Path(__file__).resolve().parents[1] / "benchmarks" / "quality_questions.toml"

# Gemma 3's instruction-tuned chat template (string contents), as a GGUF of such a model
# carries it in `tokenizer.chat_template`.
GEMMA_TEMPLATE = (
    "{{ bos_token }}"
    "{%- if messages[0]['role'] == 'system' -%}"
    "{%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}"
    "{%- set loop_messages = messages[1:] -%}"
    "{%- else -%}"
    "{%- set first_user_prefix = '' -%}"
    "{%- set loop_messages = messages -%}"
    "{%- endif -%}"
    "{%- for message in loop_messages -%}"
    "{%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}"
    "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
    "{%- endif -%}"
    "{%- if message['role'] == 'assistant' -%}{%- set role = 'model' -%}{%- else -%}{%- set role = message['role'] -%}{%- endif -%}"
    "{{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else '') }}"
    "{{ message['content'] | trim }}"
    "{{ '<end_of_turn>\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\n' }}{%- endif -%}"
)

EXAMPLES_TEXT = (
    "User: What is the capital of Italy?\nAssistant: The capital of Italy is Rome.\n\n"
    "User: What is 14 + 5?\nAssistant: 14 + 5 = 19.\n\n"
    "User: Why do leaves fall in autumn?\nAssistant: Trees drop their leaves to save water and energy through the winter.\n\n"
    "User: Who wrote Don Quixote?\nAssistant: Miguel de Cervantes wrote Don Quixote.\n"
    "User: What language did he write it in?\nAssistant: He wrote it in Spanish."
)


def chat(*turns: tuple[str, str]) -> ChatRequest:
    return ChatRequest(provider="local", messages=[ChatMessage(role=role, content=text) for role, text in turns])


def test_few_shot_prompt_is_examples_then_the_transcript() -> None:
    request = chat(("user", "Hi"), ("assistant", "Hello!"), ("user", "  Name a colour. "))
    assert build_prompt(request) == (
        f"{FEW_SHOT_HEADER}\n\n{EXAMPLES_TEXT}\n\nUser: Hi\nAssistant: Hello!\nUser: Name a colour.\nAssistant:"
    )


def test_a_users_system_prompt_comes_right_before_the_conversation_it_governs() -> None:
    request = chat(
        ("system", "Be brief."), ("user", "Hi"), ("system", "Answer in French."), ("user", "Capital of Spain?")
    )
    prompt = build_prompt(request)
    assert prompt == (
        f"{FEW_SHOT_HEADER}\n\n{EXAMPLES_TEXT}\n\n"
        "Be brief.\nAnswer in French.\nUser: Hi\nUser: Capital of Spain?\nAssistant:"
    )
    # After every example: the last instruction the model reads before the conversation.
    assert prompt.index("Be brief.") > prompt.index(EXAMPLES_TEXT) + len(EXAMPLES_TEXT)


def test_every_request_shares_the_preamble_as_a_prefix() -> None:
    # llama.cpp reuses the KV cache of the longest common prefix: the examples are evaluated once.
    prompts = [
        build_prompt(chat(("user", "What is 2 + 2?"))),
        build_prompt(chat(("system", "You are a pirate."), ("user", "Hello"))),
        build_prompt(chat(("user", "Hi"), ("assistant", "Hello!"), ("user", "Bye"))),
    ]
    preamble = f"{FEW_SHOT_HEADER}\n\n{EXAMPLES_TEXT}\n\n"
    assert all(p.startswith(preamble) for p in prompts)


def test_transcript_labels_turns_and_leaves_system_out() -> None:
    messages = chat(("system", "S"), ("user", "a"), ("assistant", "b"), ("user", "c")).messages
    assert transcript(messages) == "User: a\nAssistant: b\nUser: c\nAssistant:"


def test_stop_sequences_end_the_answer_where_a_new_turn_would_start() -> None:
    # Each example turn starts on a new line with one of these labels: a model that goes on
    # writing examples of its own is cut before the first of them.
    for conversation in FEW_SHOT_EXAMPLES:
        for question, answer in conversation:
            assert "\n" not in question and "\n" not in answer
    assert {"\nUser:", "\nAssistant:", "\nSystem:"} <= set(STOP_SEQUENCES)
    plan = plan_prompt(chat(("user", "Hi")), None)
    assert plan.format == "few-shot" and plan.add_bos is True and plan.stop == STOP_SEQUENCES
    assert plan.stop is not STOP_SEQUENCES  # a copy: a caller adding stops changes nothing shared


# --- the few-shot examples and the quality benchmark's questions ------------------------------


def _normal(text: str) -> str:
    return " ".join(re.sub(r"[^\w+\-]", " ", text.lower()).split())


def test_no_question_of_the_benchmark_is_in_the_examples() -> None:
    questions = tomllib.loads(QUESTIONS.read_text())["question"]
    asked = [q["ask"] for q in questions] + [
        text for q in questions for role, text in q.get("history", []) if role == "user"
    ]
    examples = [question for conversation in FEW_SHOT_EXAMPLES for question, _ in conversation]
    preamble = _normal(build_prompt(chat(("user", "x"))))
    assert len(questions) >= 60
    for question in asked:
        q = _normal(question)
        assert q not in preamble, f"benchmark question in the prompt: {question!r}"
        for example in map(_normal, examples):
            assert example not in q and q not in example, (question, example)


def test_every_benchmark_question_has_a_category_and_a_valid_answer_pattern() -> None:
    questions = tomllib.loads(QUESTIONS.read_text())["question"]
    categories = {q["category"] for q in questions}
    assert {
        "capitals",
        "arithmetic",
        "units and counting",
        "everyday science",
        "people and works",
        "language",
        "follow-ups",
    } <= categories
    for q in questions:
        re.compile(q["answer"])
        if "reject" in q:
            re.compile(q["reject"])
        for role, _ in q.get("history", []):
            assert role in ("user", "assistant")
    assert sum(1 for q in questions if q["category"] == "follow-ups" and q.get("history")) >= 5


# --- GGUFs with a chat template -------------------------------------------------------------


def test_chat_template_is_read_from_gguf_metadata() -> None:
    assert chat_template_of({"tokenizer.chat_template": GEMMA_TEMPLATE, "general.name": "x"}) == GEMMA_TEMPLATE
    assert chat_template_of({"general.architecture": "gemma3"}) is None  # the bundled model's case
    assert chat_template_of({"tokenizer.chat_template": "  "}) is None


def test_a_model_with_a_template_gets_its_own_format_not_the_examples() -> None:
    require_module("llama_cpp")
    template = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>")
    request = chat(("system", "Be brief."), ("user", "Hi"), ("assistant", "Hello!"), ("user", "Name a colour."))
    plan = plan_prompt(request, template)
    assert plan.format == "chat-template"
    assert plan.text == (
        "<bos><start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n"
        "<start_of_turn>model\nHello!<end_of_turn>\n"
        "<start_of_turn>user\nName a colour.<end_of_turn>\n"
        "<start_of_turn>model\n"
    )
    assert plan.add_bos is False  # the template wrote <bos> itself
    assert plan.stop == ["<eos>"]
    assert FEW_SHOT_HEADER not in plan.text and "Don Quixote" not in plan.text


def test_a_template_that_refuses_the_conversation_says_why() -> None:
    require_module("llama_cpp")
    template = ChatTemplate(GEMMA_TEMPLATE, bos_token="<bos>", eos_token="<eos>")
    with pytest.raises(ValueError, match="must alternate"):
        plan_prompt(chat(("user", "a"), ("user", "b")), template)
