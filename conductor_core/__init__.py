"""Conductor's provider layer: one interface over Gemini, OpenAI (and compatible servers),
Anthropic and an embedded local model, with routing, metrics and a request log.

    from conductor_core import Conductor, ChatRequest, ChatMessage
    conductor = Conductor()
    for event in conductor.stream(ChatRequest(provider="local", messages=[ChatMessage(role="user", content="Hi")])):
        ...

Heavy modules (the router pulls in SQLAlchemy) load on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import *  # noqa: F403
from .models import *  # noqa: F403

if TYPE_CHECKING:
    from .router import Conductor as Conductor

__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    if name == "Conductor":
        from .router import Conductor

        return Conductor
    raise AttributeError(name)
