"""A loopback OpenAI server that judges: its answer to each request is scripted by the content
of the prompt (a row's id appearing in the judge's prompt), so a test knows every verdict.
Shared by tests/test_judging.py and the browser test."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from conductor_core.testing.protocol_servers import Fault, OpenAIServer

__all__ = ["ScriptedJudge", "verdict"]


def verdict(passed: bool, score: float, reason: str) -> str:
    return json.dumps({"pass": passed, "score": score, "reason": reason})


class ScriptedJudge(OpenAIServer):
    """`script(prompt)` is the judge's whole answer (a JSON verdict, or any text) for the last
    message's text, or a `Fault` answered as that HTTP error; None: the server's usual reply."""

    def __init__(self, script: Callable[[str], str | Fault | None], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.verdicts = script

    def prompts(self) -> list[str]:
        """The last message of every generation request, in order of arrival."""
        return [_text(r["json"]["messages"][-1]) for r in self.requests if r["path"].endswith("/chat/completions")]

    async def _generate(self, request: Any, call: Any, **extra: Any) -> Any:
        answer = self.verdicts(_text(call.body["messages"][-1]))
        if isinstance(answer, Fault):
            self._record(request, call.body, call.stream, answer, model=call.model)
            return self._error_response(answer)
        # Read by the base class before its first await, so concurrent requests cannot mix up;
        # a prompt the script does not know gets the server's own reply back.
        if answer is None:
            self.reply, self.json_reply = self._defaults["reply"], self._defaults["json_reply"]
        else:
            self.json_reply = self.reply = answer
        return await super()._generate(request, call, **extra)


def _text(message: dict[str, Any]) -> str:
    content = message.get("content")
    if isinstance(content, list):
        return "".join(part.get("text", "") for part in content if isinstance(part, dict))
    return str(content or "")
