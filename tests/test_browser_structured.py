"""In Chromium: a JSON-schema Compare across two OpenAI-compatible loopback upstreams (one
answers valid JSON, one JSON whose total is a string) and the local model, each column showing
whether its answer parsed and matched the schema. The upstreams are checked to have received
the schema as OpenAI's response_format."""

from __future__ import annotations

import json

import pytest
from browser_support import Playground, commit, launch, open_page, wait_idle
from test_browser import chat_requests, open_chat

from conductor_core.providers.spec import get_spec
from conductor_core.structured import EXAMPLE_SCHEMAS

pytestmark = pytest.mark.timeout(600)

INVOICE = {"vendor": "Acme", "date": "2026-01-02", "total": 12.5, "currency": "EUR"}

#: The text of the Compare result column whose header names `target` (the innermost column).
COLUMN_TEXT = """(target) => {
    const columns = [...document.querySelectorAll('[data-testid="stColumn"]')].filter(c =>
        [...c.querySelectorAll('strong')].some(s => s.innerText.trim().startsWith(target)));
    const inner = columns.filter(c => !columns.some(o => o !== c && c.contains(o)));
    return inner.length ? inner[inner.length - 1].innerText : null;
}"""


def local_honours_schemas() -> bool:
    spec = get_spec("local")
    return spec is not None and "json_schema" in spec.capabilities.structured_output


def test_a_json_schema_compare_shows_each_columns_verdict(services, tmp_path, shots):
    from playwright.sync_api import sync_playwright

    from conductor_core.testing.protocol_servers import OpenAIServer

    good = OpenAIServer(models=["good-model"], json_reply=json.dumps(INVOICE)).start()
    bad = OpenAIServer(models=["bad-model"], json_reply=json.dumps({**INVOICE, "total": "12"})).start()
    config = "".join(
        f'[endpoints.{name}]\nbase_url = "{server.url}"\nmodels = ["{name}-model"]\n'
        for name, server in (("good", good), ("bad", bad))
    )
    server = Playground(tmp_path, config=config)
    try:
        with sync_playwright() as p:
            browser = launch(p)
            try:
                page = browser.new_page(viewport={"width": 1600, "height": 1000})
                open_chat(page, server.url)
                open_page(page, "Compare")
                wait_idle(page)
                page.get_by_test_id("stButtonGroup").filter(has_text="2").get_by_text("3", exact=True).click()
                wait_idle(page)
                # Columns start as the local model, then each endpoint (the configured order).
                providers = page.get_by_label("Provider")
                page.wait_for_function(
                    "() => document.querySelectorAll('[data-testid=\"stSelectbox\"]').length >= 6", timeout=60_000
                )
                assert providers.count() == 3
                for i in range(3):
                    page.get_by_test_id("stButtonGroup").filter(has_text="JSON schema").nth(i).get_by_text(
                        "JSON schema", exact=True
                    ).click()
                    wait_idle(page)
                tokens = page.get_by_label("Max tokens", exact=True).first  # the local model's column
                tokens.fill("200")
                commit(page, tokens)
                body = page.inner_text("body")
                if not local_honours_schemas():
                    # Said beside the local column's control before anything is sent.
                    assert "no structured output, so this request would be refused" in body
                page.get_by_label("Prompt", exact=True).fill("Extract the invoice: Acme charged 12.50 EUR on 2 Jan.")
                page.get_by_role("button", name="Run compare").click()

                def column(target: str) -> str:
                    return page.evaluate(COLUMN_TEXT, target) or ""

                page.wait_for_function(
                    """(f) => {
                        const text = document.body.innerText;
                        return !text.includes('Stop all') && text.includes('(schema invoice)')
                            && text.includes("is not of type 'number'") && text.includes('Regenerate')
                            && !document.querySelector('[data-stale="true"]');
                    }""",
                    timeout=240_000,
                    polling=250,
                )
                page.wait_for_function(
                    f"() => {{ const t = ({COLUMN_TEXT})('local/'); return t && (t.includes('Regenerate') "
                    "|| t.includes('failed') || t.includes('error') || t.includes('refuse')); }",
                    timeout=240_000,
                    polling=250,
                )
                wait_idle(page)
                assert "valid JSON ✓ (schema invoice)" in column("good/good-model")
                assert "invalid: $.total: '12' is not of type 'number'" in column("bad/bad-model")
                local = column("local/")
                if local_honours_schemas():
                    # The grammar-constrained local model: its answer is JSON (parsed), judged
                    # against the schema like the others (its words are the model's, not asserted).
                    assert "valid JSON ✓ (schema invoice)" in local or "invalid: " in local, local
                else:
                    # This branch's local model has no structured output: refused, and said so.
                    assert "response_format" in local and "valid JSON" not in local, local
                # The pretty JSON opens from the column's expander.
                # The good column's (every column that parsed has one, the local model's too).
                good_column = (
                    page.get_by_test_id("stColumn")
                    .filter(has_text="good/good-model")
                    .filter(has_not_text="bad/bad-model")
                    .filter(has_not_text="local/")
                )
                pretty = good_column.get_by_test_id("stCode")
                assert not pretty.first.is_visible()  # collapsed until opened
                good_column.get_by_test_id("stExpander").get_by_text("JSON", exact=True).click()
                pretty.first.wait_for(state="visible", timeout=30_000)
                assert '"total": 12.5' in pretty.first.inner_text()
                shots(page, "compare_json_schema", full_page=True)
                for upstream in (good, bad):
                    (sent,) = chat_requests(upstream)
                    assert sent["response_format"]["type"] == "json_schema"
                    assert sent["response_format"]["json_schema"]["name"] == "invoice"
                    assert sent["response_format"]["json_schema"]["schema"] == EXAMPLE_SCHEMAS["Invoice"]
            finally:
                browser.close()
    finally:
        server.stop()
        good.stop()
        bad.stop()
