"""What the local provider feeds its model: pure functions, no llama.cpp state.

A GGUF either carries a chat template in its metadata (`tokenizer.chat_template`, as
instruction-tuned models do) or it does not (base models, like the bundled Gemma 3 270M).

* With a template, llama-cpp-python's own Jinja2 chat formatter renders the messages, as
  `Llama.create_chat_completion` would.
* Without one, the model is a text continuer: it gets a plain transcript (`User: ...` /
  `Assistant: ...`) behind a few worked question/answer examples (few-shot), which shows it
  what an answer looks like far better than an instruction does. The examples are a fixed
  prefix, the same for every request, so llama.cpp's KV cache keeps them evaluated from one
  request to the next (`Llama.generate` reuses the longest common prefix). A user's own
  system prompt comes after them, right before the conversation it governs; the stop
  sequences end the answer where the model would start the next turn itself.

Only the model sees this prompt: the request log stores the messages the user sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from ..models import ChatMessage, ChatRequest, MessageRole

if TYPE_CHECKING:
    from llama_cpp.llama_types import ChatCompletionRequestMessage

__all__ = [
    "FEW_SHOT_HEADER",
    "FEW_SHOT_EXAMPLES",
    "STOP_SEQUENCES",
    "PromptPlan",
    "ChatTemplate",
    "build_prompt",
    "chat_template_of",
    "plan_prompt",
    "transcript",
    "with_instruction",
]

FEW_SHOT_HEADER = (
    "The following are conversations between a user and a helpful assistant that answers correctly and briefly."
)

# Generic questions of the everyday kinds people try first (a place, a sum, a "why", a book
# and a follow-up that needs the previous answer), each answered in one plain sentence that
# restates the question. None is a question of the quality benchmark's set
# (benchmarks/quality_questions.toml; tests/test_local_prompt.py checks it).
FEW_SHOT_EXAMPLES: tuple[tuple[tuple[str, str], ...], ...] = (
    (("What is the capital of Italy?", "The capital of Italy is Rome."),),
    (("What is 14 + 5?", "14 + 5 = 19."),),
    (("Why do leaves fall in autumn?", "Trees drop their leaves to save water and energy through the winter."),),
    (
        ("Who wrote Don Quixote?", "Miguel de Cervantes wrote Don Quixote."),
        ("What language did he write it in?", "He wrote it in Spanish."),
    ),
)

# Where the model would begin a turn of its own: the answer ends there.
STOP_SEQUENCES = ["\nUser:", "\nSystem:", "\nAssistant:", "User:"]

_LABELS = {MessageRole.user: "User", MessageRole.assistant: "Assistant"}


def transcript(messages: list[ChatMessage]) -> str:
    """`User: ...` / `Assistant: ...` lines (system messages left out), ending with `Assistant:`."""
    turns = [f"{_LABELS[m.role]}: {m.content.strip()}" for m in messages if m.role != MessageRole.system]
    return "\n".join(turns) + "\nAssistant:"


def _system_text(messages: list[ChatMessage]) -> str:
    return "\n".join(m.content.strip() for m in messages if m.role == MessageRole.system)


def _examples() -> str:
    return "\n\n".join(
        "\n".join(f"User: {question}\nAssistant: {answer}" for question, answer in conversation)
        for conversation in FEW_SHOT_EXAMPLES
    )


_PREAMBLE = f"{FEW_SHOT_HEADER}\n\n{_examples()}\n\n"


def build_prompt(request: ChatRequest) -> str:
    """The prompt for a model without a chat template: the few-shot preamble, the user's
    system prompt (if any), then the transcript."""
    system = _system_text(request.messages)
    return _PREAMBLE + (f"{system}\n" if system else "") + transcript(request.messages)


def with_instruction(request: ChatRequest, instruction: str) -> ChatRequest:
    """`request` with `instruction` as a system line after the user's own system prompt (first
    in the conversation when there is none; chat templates take a system message there)."""
    messages = list(request.messages)
    at = next((i for i, m in enumerate(messages) if m.role != MessageRole.system), len(messages))
    if at > 0:
        last = messages[at - 1]
        messages[at - 1] = ChatMessage(role=MessageRole.system, content=f"{last.content.rstrip()}\n{instruction}")
    else:
        messages.insert(0, ChatMessage(role=MessageRole.system, content=instruction))
    return request.model_copy(update={"messages": messages})


# --- GGUFs that carry a chat template ---------------------------------------------------------


def chat_template_of(metadata: dict[str, Any]) -> str | None:
    """The model's default chat template from its GGUF metadata, or None (a base model)."""
    template = metadata.get("tokenizer.chat_template")
    return template if isinstance(template, str) and template.strip() else None


class ChatTemplate:
    """A model's own chat template, rendered by llama-cpp-python's `Jinja2ChatFormatter`
    with the model's BOS/EOS tokens, as `Llama` itself sets it up for
    `create_chat_completion`."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        self.template = template
        self._formatter = Jinja2ChatFormatter(template=template, eos_token=eos_token, bos_token=bos_token)

    @classmethod
    def of(cls, llm: Any) -> ChatTemplate | None:
        """The template of a loaded `Llama`, or None when its GGUF has none."""
        template = chat_template_of(llm.metadata)
        if template is None:
            return None
        return cls(template, bos_token=_token_text(llm, llm.token_bos()), eos_token=_token_text(llm, llm.token_eos()))

    def render(self, messages: list[ChatMessage]) -> tuple[str, list[str]]:
        """The prompt text (BOS written by the template) and the template's stop strings.
        A template that refuses the conversation (some require strictly alternating turns)
        raises ValueError with its reason."""
        import jinja2

        try:
            # llama_cpp types each role's message apart; ours are those same role/content pairs.
            turns = [{"role": m.role.value, "content": m.content} for m in messages]
            result = self._formatter(messages=cast("list[ChatCompletionRequestMessage]", turns))
        except jinja2.TemplateError as exc:
            raise ValueError(str(exc)) from exc
        stop = result.stop if isinstance(result.stop, list) else [result.stop] if result.stop else []
        return result.prompt, [s for s in stop if s]


def _token_text(llm: Any, token_id: int) -> str:
    return llm._model.token_get_text(token_id) if token_id != -1 else ""


@dataclass(frozen=True)
class PromptPlan:
    """Everything about the prompt that generation needs."""

    text: str
    stop: list[str]
    add_bos: bool  # False when a chat template writes BOS itself
    format: str  # "few-shot" or "chat-template": what was chosen, for logs and tests


def plan_prompt(request: ChatRequest, template: ChatTemplate | None) -> PromptPlan:
    """The model's own chat template when it has one; the few-shot transcript otherwise."""
    if template is not None:
        text, stop = template.render(request.messages)
        return PromptPlan(text=text, stop=stop, add_bos=False, format="chat-template")
    return PromptPlan(text=build_prompt(request), stop=list(STOP_SEQUENCES), add_bos=True, format="few-shot")
