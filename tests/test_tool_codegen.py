"""Get code carries the tools: each snippet of a request with tools (and a tool exchange in
its history) is run for real against the loopback servers and sends what Conductor sends."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_codegen import run_python, serve
from workbench_support import KEYS, cloud_conductor

from conductor_core.models import (
    ChatMessage,
    ChatRequest,
    FunctionCall,
    NamedToolChoice,
    Tool,
    ToolCall,
    ToolFunction,
    ToolName,
)
from conductor_core.providers.spec import provider_specs
from conductor_core.workbench.codegen import code_target, gateway_python, sdk_python

WEATHER = Tool(
    function=ToolFunction(
        name="get_weather",
        description="The weather in a city.",
        parameters={"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    )
)
CALL = ToolCall(id="call_1", function=FunctionCall(name="get_weather", arguments='{"city": "Paris"}'))


def asking(provider: str, **kw) -> ChatRequest:
    """A first request: the model is offered the tool (and calls it)."""
    return ChatRequest(
        provider=provider,
        messages=[ChatMessage(role="user", content="Weather in Paris?")],
        temperature=0.3,
        max_tokens=50,
        tools=[WEATHER],
        **kw,
    )


def answered(provider: str) -> ChatRequest:
    """The request after the person answered the call: the exchange is in the history."""
    return ChatRequest(
        provider=provider,
        messages=[
            ChatMessage(role="user", content="Weather in Paris?"),
            ChatMessage(role="assistant", content="", tool_calls=[CALL]),
            ChatMessage(role="tool", content='{"sky": "sunny"}', tool_call_id="call_1"),
        ],
        temperature=0.3,
        max_tokens=50,
        tools=[WEATHER],
        tool_choice="auto",
    )


@pytest.mark.parametrize("kind", ["openai", "anthropic", "gemini"])
def test_the_sdk_snippet_sends_the_tools_and_the_tool_exchange_as_conductor_does(kind, clouds, tmp_path: Path):
    conductor = cloud_conductor(clouds, tmp_path)
    server = clouds[kind]
    try:
        target = code_target(conductor.settings, kind, default_model=conductor.registry.get(kind).default_model)
        named = NamedToolChoice(function=ToolName(name="get_weather"))
        for req, says in ((asking(kind, tool_choice=named), "[tool call] get_weather"), (answered(kind), server.reply)):
            conductor.chat(req)
            ours = server.requests[-1]
            code = sdk_python(req, target)
            assert code is not None and KEYS[kind] not in code
            printed = run_python(code, {target.key_env: KEYS[kind]})
            theirs = server.requests[-1]
            assert theirs["json"] == ours["json"]
            assert says in printed
    finally:
        conductor.close()


def test_the_gateway_snippet_sends_the_tools_and_prints_the_streamed_call(clouds, tmp_path: Path) -> None:
    from gateway.main import create_app

    conductor = cloud_conductor(clouds, tmp_path)
    try:
        model = provider_specs()["openai"].default_model
        target = code_target(conductor.settings, "openai", model)
        with serve(create_app(conductor)) as url:
            code = gateway_python(asking("openai", tool_choice="required"), target, gateway_url=url)
            printed = run_python(code, {"CONDUCTOR_API_KEY": "unused"})
            assert '[tool call] get_weather {"city": "Paris"}' in printed
            body = clouds["openai"].requests[-1]["json"]
            assert body["tools"] == [WEATHER.model_dump(mode="json", exclude_none=True)]
            assert body["tool_choice"] == "required"

            code = gateway_python(answered("openai"), target, gateway_url=url)
            assert run_python(code, {"CONDUCTOR_API_KEY": "unused"}).strip() == clouds["openai"].reply
            sent = clouds["openai"].requests[-1]["json"]["messages"]
            assert sent[-2]["tool_calls"][0]["id"] == "call_1"
            assert sent[-1] == {"role": "tool", "content": '{"sky": "sunny"}', "tool_call_id": "call_1"}
    finally:
        conductor.close()
