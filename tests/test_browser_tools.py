"""Tool calls in a real browser, as a person uses them: tools imported from an OpenAI `tools`
array, a call streamed in pieces and shown as it arrives, answered by hand, and the model
continuing (Chat, and after a reload); and a Compare of two upstreams that both call tools,
shown side by side, answered with the tools' mocks and continued.

The upstreams are the loopback OpenAI servers: offered tools, they call the first one with
{"city": "Paris"} (streamed as id and name, then argument pieces); sent a tool result last,
they answer with text. What they received is checked there."""

from __future__ import annotations

import json

import pytest
from browser_support import (
    Playground,
    ask,
    choose,
    eventually,
    launch,
    open_page,
    wait_idle,
    wait_settled,
)
from test_browser import assistant_messages, chat_requests, open_chat

pytestmark = pytest.mark.timeout(420)

FINAL = "Sunny and 22 degrees in Paris today."
TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "The weather in a city.",
            "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        },
    }
]


@pytest.fixture(scope="module")
def app(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("browser_tools")
    first = OpenAIServer(reply=FINAL, models=["tool-a"], chunk_delay_s=0.02).start()
    second = OpenAIServer(reply="Column two says: mild.", models=["tool-b"], chunk_delay_s=0.02).start()
    config = "".join(
        f'[endpoints.{name}]\nbase_url = "{server.url}"\nmodels = ["{server.models[0]}"]\n'
        for name, server in (("loopa", first), ("loopb", second))
    )
    server = Playground(work, config=config, extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"})
    try:
        yield {"url": server.url, "first": first, "second": second}
    finally:
        server.stop()
        first.stop()
        second.stop()


def import_tools(page, within, mock: str | None = None) -> None:
    """Open Tools, paste an OpenAI tools array, import it (and give it a mock result)."""
    within.get_by_text("Tools", exact=False).first.click()
    within.get_by_role("button", name="Import OpenAI tools").click()
    box = page.get_by_label("OpenAI tools JSON", exact=True)
    box.fill(json.dumps(TOOLS))
    box.press("Tab")
    wait_idle(page)
    page.get_by_role("button", name="Import", exact=True).click()
    wait_idle(page)
    page.keyboard.press("Escape")  # close the popover
    name = within.get_by_label("Name", exact=True)
    name.first.wait_for(timeout=30_000)
    assert name.first.input_value() == "get_weather"
    if mock is not None:
        result = within.get_by_label("Mock result", exact=True)
        result.fill(mock)
        result.press("Tab")
        wait_idle(page)


def test_a_tool_call_answered_by_hand_in_chat_and_the_model_continues(app, shots):
    from playwright.sync_api import sync_playwright

    upstream = app["first"]
    upstream.reset()
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            open_chat(page, app["url"])
            sidebar = page.get_by_test_id("stSidebar")
            choose(page, "Provider", "loopa", within=sidebar)
            wait_idle(page)
            import_tools(page, sidebar)

            # The call streams in pieces: held after its name and the first piece of its arguments.
            upstream.hold(after_chunks=2)
            try:
                ask(page, "What is the weather in Paris?")
                live = assistant_messages(page).first
                live.get_by_text("Calling get_weather", exact=False).wait_for(timeout=60_000)
                live.get_by_text('{"city":', exact=False).wait_for(timeout=30_000)
                assert "Paris" not in live.inner_text()  # the second piece has not come yet
            finally:
                upstream.release()
            answer = assistant_messages(page).first
            answer.get_by_text("Called get_weather", exact=False).wait_for(timeout=60_000)
            wait_idle(page)
            answer.get_by_text("Arguments match the tool's parameters").wait_for()
            assert '"city": "Paris"' in answer.inner_text()  # pretty-printed
            first = chat_requests(upstream)[-1]
            assert first["tools"] == TOOLS and first["tool_choice"] == "auto"

            result = answer.get_by_label("Result of get_weather", exact=False)
            result.fill('{"sky": "sunny", "celsius": 22}')
            result.press("Tab")
            wait_idle(page)
            shots(page, "tool_call_answered_by_hand")
            answer.get_by_role("button", name="Continue").click()
            page.get_by_text(FINAL).wait_for(timeout=120_000)
            wait_idle(page)
            wait_settled(page)

            second = chat_requests(upstream)[-1]
            call = second["messages"][-2]
            assert call["role"] == "assistant" and call["tool_calls"][0]["function"]["name"] == "get_weather"
            assert json.loads(call["tool_calls"][0]["function"]["arguments"]) == {"city": "Paris"}
            assert second["messages"][-1] == {
                "role": "tool",
                "content": '{"sky": "sunny", "celsius": 22}',
                "tool_call_id": call["tool_calls"][0]["id"],
            }
            assert second["messages"][0] == {"role": "user", "content": "What is the weather in Paris?"}
            assert len(second["messages"]) == 3 and second["tools"] == TOOLS

            # A reload shows the whole exchange: the call, the result sent, the final answer.
            page.reload()
            main = page.get_by_test_id("stMain")
            for text in (FINAL, "Called get_weather", "Result sent", '"celsius": 22'):
                main.get_by_text(text, exact=False).first.wait_for(timeout=120_000)
            wait_idle(page)
            assert page.get_by_role("button", name="Continue").count() == 0  # answered: nothing waits
            shots(page, "tool_call_round_trip", full_page=True)
        finally:
            browser.close()


def test_compare_shows_each_columns_calls_side_by_side_and_continues_them_with_mocks(app, shots):
    from playwright.sync_api import sync_playwright

    first, second = app["first"], app["second"]
    first.reset()
    second.reset()
    with sync_playwright() as p:
        browser = launch(p)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 1000})
            open_chat(page, app["url"])
            open_page(page, "Compare")
            wait_idle(page)
            main = page.get_by_test_id("stMain")
            columns = main.get_by_text("Columns:", exact=False).first
            assert "loopa" in columns.inner_text() and "loopb" in columns.inner_text()
            import_tools(page, main, mock="mock: sunny")
            page.get_by_label("Prompt", exact=True).fill("Weather in Paris?")
            page.get_by_role("button", name="Run compare").click()
            calls = main.get_by_text("Called get_weather", exact=False)
            eventually(lambda: calls.count() == 2, 120, "both columns' calls")
            wait_idle(page)
            # Side by side: one call in each column, each with its own answer box.
            boxes = main.get_by_label("Result of get_weather", exact=False)
            assert boxes.count() == 2
            left, right = (calls.nth(i).bounding_box() for i in range(2))
            assert abs(left["y"] - right["y"]) < 150 and right["x"] > left["x"] + 200  # one row, two columns
            mock_buttons = main.get_by_role("button", name="Use mock", exact=True)
            assert [mock_buttons.nth(i).is_enabled() for i in range(2)] == [True, True]  # each tool has its mock
            main.get_by_role("button", name="Use mocks for all").click()
            eventually(
                lambda: [boxes.nth(i).input_value() for i in range(2)] == ["mock: sunny", "mock: sunny"],
                60,
                "the mocks in both answer boxes",
            )
            wait_idle(page)
            shots(page, "compare_tool_calls", full_page=True)
            # One column continues on its own; the other then joins the same continued round.
            main.get_by_role("button", name="Continue this column").first.click()
            main.get_by_text(FINAL).wait_for(timeout=120_000)
            wait_idle(page)
            assert chat_requests(second)[-1]["messages"][-1]["role"] == "user"  # column two not sent yet
            assert boxes.count() == 1 and boxes.first.input_value() == "mock: sunny"
            main.get_by_role("button", name="Continue this column").click()
            main.get_by_text("Column two says: mild.").wait_for(timeout=120_000)
            wait_idle(page)
            for upstream in (first, second):
                sent = chat_requests(upstream)[-1]["messages"]
                assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
                assert sent[-2]["tool_calls"][0]["function"]["name"] == "get_weather"
                assert sent[-1]["content"] == "mock: sunny"
            assert main.get_by_text("Continued after the tool results", exact=False).count() == 1

            # A follow-up: both call the tool again; Continue all columns answers both at once.
            page.get_by_label("Follow-up", exact=True).fill("And tomorrow?")
            page.get_by_role("button", name="Send follow-up").click()
            eventually(lambda: calls.count() == 4, 120, "both columns' second calls")
            wait_idle(page)
            main.get_by_role("button", name="Use mocks for all").click()
            eventually(lambda: [b.input_value() for b in boxes.all()] == ["mock: sunny"] * 2, 60, "the mocks")
            wait_idle(page)
            main.get_by_role("button", name="Continue all columns").click()
            shown = main.get_by_text(FINAL).filter(visible=True)  # (Copy holds a hidden copy of each answer)
            eventually(lambda: shown.count() == 2, 120, "column one's second answer")
            shown = main.get_by_text("Column two says: mild.").filter(visible=True)
            eventually(lambda: shown.count() == 2, 120, "column two's second answer")
            wait_idle(page)
            for upstream in (first, second):
                sent = chat_requests(upstream)[-1]["messages"]
                # Each column's own history: its first exchange, its answer, the follow-up, its second exchange.
                assert [m["role"] for m in sent] == [
                    "user",
                    "assistant",
                    "tool",
                    "assistant",
                    "user",
                    "assistant",
                    "tool",
                ]
                assert sent[3]["content"] == upstream.reply and sent[4]["content"] == "And tomorrow?"
            assert main.get_by_text("Continued after the tool results", exact=False).count() == 2
        finally:
            browser.close()
