"""The gateway serves saved prompts: `model="prompt:NAME@LABEL"` through the official openai
client over real HTTP, in front of a loopback OpenAI-compatible upstream."""

from __future__ import annotations

import openai
import pytest

from conductor_core.models import ResponseFormatJsonSchema
from conductor_core.testing.protocol_servers import OpenAIServer
from conductor_core.workbench.prompts import PromptContent, PromptMessage, PromptStore
from conductor_core.workbench.variants import Variant
from gateway.main import create_app
from gateway.prompts import apply_prompt
from tests.test_gateway import client, make_conductor, serve
from tests.test_gateway_async import endpoints

pytestmark = pytest.mark.timeout(180)

SCHEMA = ResponseFormatJsonSchema.model_validate(
    {"type": "json_schema", "json_schema": {"name": "reply", "schema": {"type": "object"}}}
)


def content(system: str, temperature: float) -> PromptContent:
    return PromptContent(
        system=system,
        messages=(PromptMessage(role="user", content="Customer asks: {{question}}"),),
        variant=Variant(provider="up", model="m", temperature=temperature, max_tokens=90, response_format=SCHEMA),
    )


def test_a_prompt_is_served_at_its_label_and_moving_the_label_serves_the_new_version(tmp_path) -> None:
    with OpenAIServer(reply="{}") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        try:
            prompts = PromptStore(conductor.log)
            prompts.save("support-reply", content("You answer for {{company}}.", 0.2), by="ana")
            prompts.save("support-reply", content("You answer kindly for {{company}}.", 0.9), by="ana")
            prompts.move_label("support-reply", "production", 1, by="ana")
            with serve(create_app(conductor)) as url:
                api = client(url)
                variables = {"company": "Acme", "question": "Where is my parcel?"}
                raw = api.chat.completions.with_raw_response.create(
                    model="prompt:support-reply@production", messages=[], extra_body={"variables": variables}
                )
                assert raw.headers["x-conductor-prompt"] == "support-reply@1"  # the version the label named
                assert raw.parse().model == "up/m"
                body = upstream.requests[-1]["json"]
                assert body["messages"] == [
                    {"role": "system", "content": "You answer for Acme."},
                    {"role": "user", "content": "Customer asks: Where is my parcel?"},
                ]
                assert body["model"] == "m" and body["temperature"] == 0.2 and body["max_tokens"] == 90
                assert body["response_format"] == {
                    "type": "json_schema",
                    "json_schema": {"name": "reply", "schema": {"type": "object"}},
                }
                assert "variables" not in body

                # The label moves: the next request gets version 2, with no restart.
                prompts.move_label("support-reply", "production", 2, by="ben")
                follow_up = [{"role": "assistant", "content": "Let me look."}, {"role": "user", "content": "Thanks"}]
                moved = api.chat.completions.with_raw_response.create(
                    model="prompt:support-reply",  # bare: the production label
                    messages=follow_up,
                    temperature=0.0,  # set by the client: wins over the prompt's 0.9
                    max_completion_tokens=12,
                    stream=False,
                    extra_body={"variables": variables},
                )
                assert moved.headers["x-conductor-prompt"] == "support-reply@2"
                body = upstream.requests[-1]["json"]
                assert body["messages"][0] == {"role": "system", "content": "You answer kindly for Acme."}
                assert body["messages"][2:] == follow_up  # the request's own messages after the prompt's
                assert body["temperature"] == 0.0 and body["max_completion_tokens"] == 12 and "max_tokens" not in body

                # A version by number, streamed.
                streamed = api.chat.completions.with_raw_response.create(
                    model="prompt:support-reply@1", messages=[], stream=True, extra_body={"variables": variables}
                )
                assert streamed.headers["x-conductor-prompt"] == "support-reply@1"
                chunks = list(streamed.parse())
                assert chunks and upstream.requests[-1]["json"]["messages"][0]["content"] == "You answer for Acme."
                served = len(upstream.requests)

                # What the client must change, in OpenAI's error shape; nothing reaches the upstream.
                with pytest.raises(openai.BadRequestError) as missing:
                    api.chat.completions.create(
                        model="prompt:support-reply@production", messages=[], extra_body={"variables": {"company": "A"}}
                    )
                error = missing.value.body
                assert missing.value.status_code == 400 and error["param"] == "variables"
                assert "needs a value for: question (given: company)" in error["message"]
                with pytest.raises(openai.NotFoundError) as unknown:
                    api.chat.completions.create(model="prompt:nope@production", messages=[])
                assert unknown.value.body["param"] == "model"
                assert "no prompt named 'nope' (prompts: support-reply)" in unknown.value.body["message"]
                with pytest.raises(openai.NotFoundError) as label:
                    api.chat.completions.create(model="prompt:support-reply@staging", messages=[])
                assert "has no label 'staging' (labels: production (v2))" in label.value.body["message"]
                with pytest.raises(openai.NotFoundError, match="has no version 9"):
                    api.chat.completions.create(model="prompt:support-reply@9", messages=[])
                with pytest.raises(openai.BadRequestError, match="not a prompt name"):
                    api.chat.completions.create(model="prompt:support reply", messages=[])
                assert len(upstream.requests) == served
                # Variables with another model are Conductor's: never sent upstream.
                api.chat.completions.create(
                    model="up/m", messages=[{"role": "user", "content": "hi"}], extra_body={"variables": {"a": "b"}}
                )
                assert "variables" not in upstream.requests[-1]["json"]
        finally:
            conductor.close()


def test_explicit_request_settings_win_and_the_prompts_fill_the_rest() -> None:
    from datetime import UTC, datetime

    from conductor_core.models import Tool
    from conductor_core.workbench.prompts import PromptVersion

    tool = Tool.model_validate({"type": "function", "function": {"name": "track", "parameters": {"type": "object"}}})
    version = PromptVersion(
        id="pv_x",
        name="p",
        version=1,
        created_at=datetime.now(UTC),
        created_by="local",
        content=PromptContent(
            messages=(PromptMessage(role="user", content="Hi {{name}}"),),
            variant=Variant(
                provider="auto", policy="cheapest", temperature=0.3, seed=4, tools=(tool,), tool_choice="required"
            ),
        ).checked(),
    )
    data = {"model": "prompt:p", "messages": [], "variables": {"name": "Ada"}, "seed": 9, "top_p": None}
    out = apply_prompt(data, version)
    assert out["model"] == "auto" and out["policy"] == "cheapest"
    assert out["seed"] == 9 and "top_p" in out and out["top_p"] is None  # the client's own (null: nothing set)
    assert out["temperature"] == 0.3 and out["max_tokens"] == 1000
    assert out["tools"][0]["function"]["name"] == "track" and out["tool_choice"] == "required"
    assert out["messages"] == [{"role": "user", "content": "Hi Ada"}] and "variables" not in out
    own_tools = [{"type": "function", "function": {"name": "other"}}]
    out = apply_prompt({**data, "tools": own_tools}, version)
    assert out["tools"] == own_tools and "tool_choice" not in out


def test_the_get_code_snippets_for_an_open_prompt_run_against_the_gateway(tmp_path) -> None:
    import json
    import os
    import subprocess

    from conductor_core.workbench.codegen import PromptCall, code_target, snippets
    from tests.test_codegen import run_python

    with OpenAIServer(reply="Your parcel is on its way.") as upstream:
        conductor = make_conductor(tmp_path, endpoints=endpoints(up=upstream))
        try:
            prompts = PromptStore(conductor.log)
            plain = content("You answer for {{company}}.", 0.2)
            plain = plain.model_copy(update={"variant": plain.variant.model_copy(update={"response_format": None})})
            version = prompts.save("support-reply", plain, by="ana")
            prompts.move_label("support-reply", "production", 1, by="ana")
            call = PromptCall(
                reference="support-reply@production", variables={"company": "Acme", "question": 'It\'s "late"'}
            )
            request = version.variant(call.variables).request(version.render(call.variables)[1])
            with serve(create_app(conductor)) as url:
                code = snippets(
                    request, code_target(conductor.settings, "up", "m"), gateway_url=f"{url}/v1", prompt=call
                )
                python = code["python_gateway"]
                assert "model='prompt:support-reply@production'" in python and "'company': 'Acme'" in python
                assert run_python(python, {}).strip() == "Your parcel is on its way."
                sent = upstream.requests[-1]["json"]["messages"]
                assert sent == [
                    {"role": "system", "content": "You answer for Acme."},
                    {"role": "user", "content": 'Customer asks: It\'s "late"'},
                ]
                answer = subprocess.run(
                    ["bash", "-c", code["curl"]], env=dict(os.environ), capture_output=True, text=True, timeout=30
                )
                assert answer.returncode == 0, answer.stderr
                assert json.loads(answer.stdout)["choices"][0]["message"]["content"] == "Your parcel is on its way."
                assert upstream.requests[-1]["json"]["messages"] == sent
                # The provider SDK's snippet sends the rendered prompt itself.
                assert "You answer for Acme." in (code["python_sdk"] or "")
        finally:
            conductor.close()
