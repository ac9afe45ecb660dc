"""A variant: one provider and model with its own settings. A chat session has one; each
column of a comparison, each arm of an experiment and each contestant of a blind arena is
one. The same model twice with other settings is two variants, labelled by what differs.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from ..models import (
    ChatMessage,
    ChatRequest,
    MessageRole,
    NamedToolChoice,
    ProviderName,
    ResponseFormat,
    ResponseFormatJsonObject,
    ResponseFormatJsonSchema,
    RoutingPolicy,
    Tool,
)

__all__ = ["Variant", "variant_labels", "differing_settings"]

# The settings a label may mention, in the order it mentions them, with how to say each.
_LABELLED = (
    ("temperature", lambda v: f"T={v.temperature:g}"),
    ("max_tokens", lambda v: f"max {v.max_tokens} tok"),
    ("top_p", lambda v: "top_p default" if v.top_p is None else f"top_p={v.top_p:g}"),
    ("stop", lambda v: "no stop" if not v.stop else f"stop×{len(v.stop)}"),
    ("seed", lambda v: "random seed" if v.seed is None else f"seed {v.seed}"),
    ("system", lambda v: "no system prompt" if not v.system else f"system “{_clip(v.system)}”"),
    ("policy", lambda v: f"{v.policy.value if v.policy else 'default'} policy"),
    ("response_format", lambda v: _say_output(v.response_format)),
)


def _say_output(response_format: object) -> str:
    if isinstance(response_format, ResponseFormatJsonSchema):
        return f"schema {response_format.json_schema.name}"
    if isinstance(response_format, ResponseFormatJsonObject):
        return "JSON"
    return "text"


def _setting(variant: Variant, name: str) -> Hashable:
    """A setting's value, hashable (an output format is a model holding a dict)."""
    value = getattr(variant, name)
    return value.model_dump_json() if isinstance(value, BaseModel) and name == "response_format" else value


def _clip(text: str, width: int = 24) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


class Variant(BaseModel):
    """Who answers and how. Maps onto `ChatRequest` field for field (plus a system prompt)."""

    model_config = ConfigDict(frozen=True)

    provider: ProviderName = Field(description="A provider name, or 'auto' (chat sessions only).")
    model: str | None = Field(default=None, description="None: the provider's default model.")
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    max_tokens: int = Field(default=1000, ge=1, le=4000)
    top_p: float | None = Field(default=None, ge=0.0, le=1.0)
    stop: tuple[Annotated[str, Field(min_length=1)], ...] | None = Field(default=None, max_length=4)
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    system: str | None = Field(default=None, description="System prompt sent before the conversation.")
    policy: RoutingPolicy | None = Field(default=None, description="AUTO's policy when provider is 'auto'.")
    response_format: ResponseFormat | None = Field(
        default=None, description="What the answer must be: text (None), any JSON object, or JSON matching a schema."
    )
    tools: tuple[Tool, ...] | None = Field(default=None, description="Functions the model may call.")
    tool_choice: Literal["none", "auto", "required"] | NamedToolChoice | None = Field(
        default=None, description="With tools: whether and which one the model must call (None: the provider's)."
    )
    tool_mocks: dict[str, str] | None = Field(
        default=None,
        description="A fixed result per tool name, to answer its calls with one click (kept here, never sent).",
    )

    def __hash__(self) -> int:  # its output format and tools are not hashable models
        return hash(self.model_dump_json())

    @property
    def target(self) -> str:
        """`provider/model`, or the provider alone when it uses its default model."""
        return f"{self.provider}/{self.model}" if self.model else self.provider

    def request(self, messages: Sequence[ChatMessage]) -> ChatRequest:
        """The request this variant sends for a conversation (its system prompt first)."""
        conversation = [m for m in messages if m.role != MessageRole.system]
        if self.system and self.system.strip():
            conversation.insert(0, ChatMessage(role=MessageRole.system, content=self.system))
        return ChatRequest(
            provider=self.provider,
            model=self.model,
            messages=conversation,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
            top_p=self.top_p,
            stop=list(self.stop) if self.stop else None,
            seed=self.seed,
            policy=self.policy if self.provider == "auto" else None,
            response_format=self.response_format,
            tools=list(self.tools) if self.tools else None,
            tool_choice=self.tool_choice if self.tools else None,
        )


def variant_labels(variants: Sequence[Variant]) -> list[str]:
    """A short label per variant: its target, plus the settings in which it differs from the
    others that share that target ("openai/gpt-6-luna · T=0", "openai/gpt-6-luna · T=1").
    Variants that are identical in every setting are numbered ("local #1", "local #2")."""
    labels: list[str] = []
    for variant in variants:
        twins = [v for v in variants if v.target == variant.target]
        parts = [variant.target]
        if len(twins) > 1:
            for name, say in _LABELLED:
                if len({_setting(v, name) for v in twins}) > 1:
                    parts.append(say(variant))
        labels.append(" · ".join(parts))
    # Same label twice (identical settings): number them in order of appearance.
    for label in set(labels):
        positions = [i for i, seen in enumerate(labels) if seen == label]
        if len(positions) > 1:
            for n, i in enumerate(positions, 1):
                labels[i] = f"{label} #{n}"
    return labels


def differing_settings(variants: Sequence[Variant]) -> list[tuple[str, ...]]:
    """Per variant, its value of every setting that differs between the variants, whatever
    their targets (("T=0.2", "max 64 tok"); () when they share every setting). A Compare
    column's header shows them under the column's label, leaving out what the label says."""
    differ = [say for name, say in _LABELLED if len({_setting(v, name) for v in variants}) > 1]
    return [tuple(say(v) for say in differ) for v in variants]
