"""Which gateway key a request was made with, and what its attempts used, without the core
knowing about keys: the gateway makes a `KeyUse` current for the request (a context
variable, as `overhead` does for its clock); the recorder stamps every attempt it logs with
the key's id (`attempts.key_id`) and adds the attempt's tokens and cost to it. Tasks the
request starts (several choices at once, `n` > 1) copy the context, so they add to the same
one. Without a current use (the admin key, the playground, scripts) nothing is stamped."""

from __future__ import annotations

from contextvars import ContextVar
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..models import AttemptRecord

__all__ = ["KeyUse", "current_use", "reset_use", "using"]


class KeyUse:
    __slots__ = ("key_id", "input_tokens", "output_tokens", "cost_usd", "unpriced")

    def __init__(self, key_id: str) -> None:
        self.key_id = key_id
        self.input_tokens = 0
        self.output_tokens = 0
        self.cost_usd = 0.0
        self.unpriced = 0  # attempts that used tokens at an unknown price

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    def add(self, record: AttemptRecord) -> None:
        record.key_id = self.key_id
        self.input_tokens += record.input_tokens
        self.output_tokens += record.output_tokens
        if record.cost_usd is not None:
            self.cost_usd += record.cost_usd
        elif record.input_tokens or record.output_tokens:
            self.unpriced += 1


_CURRENT: ContextVar[KeyUse | None] = ContextVar("conductor_key_use", default=None)
current_use = _CURRENT.get
using = _CURRENT.set
reset_use = _CURRENT.reset
