"""Exports: Markdown, JSON and one self-contained HTML file for a conversation, a comparison,
an experiment run and the arena; no key in any of them (canary); the HTML opened in Chromium
with the network blocked, making no request and running no model-written markup."""

from __future__ import annotations

import json
import os
import re
from html import unescape
from pathlib import Path

import pytest
from browser_support import CHROMIUM, launch

from conductor_core.config import load_settings, register_secret
from conductor_core.router import Conductor
from conductor_core.testing.fakes import ScriptedProvider
from conductor_core.workbench.arena import Arena
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import ExperimentStore
from conductor_core.workbench.exports import (
    Column,
    Comparison,
    Figures,
    Transcript,
    Turn,
    arena_report,
    filename,
    run_report,
    to_html,
    to_json,
    to_markdown,
)
from conductor_core.workbench.report_charts import cost_chart, latency_chart, rates_chart, ratings_chart
from conductor_core.workbench.runner import start_run
from conductor_core.workbench.variants import Variant
from tests.secret_support import leaks

CANARY = "uKJilX1XBmy_ZeT7wHvoV8Ta"  # not key-shaped: only its registration redacts it
HOSTILE = (
    "Sure. <script>alert('x')</script> <img src=\"http://127.0.0.1:9/pixel.png\"> "
    "![tracker](http://127.0.0.1:9/track.png) and **bold** with `code`."
)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory: pytest.TempPathFactory):
    register_secret(CANARY)
    tmp = tmp_path_factory.mktemp("exports")
    good = ScriptedProvider("good", reply=f"Paris. The key is {CANARY}")
    bad = ScriptedProvider("bad", reply=HOSTILE, cost_per_token=None)
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp / "data", max_retries=0)
    conductor = Conductor(settings, extra_providers=[good, bad])
    store = ExperimentStore(conductor.log)
    dataset = read_dataset(
        f'question,expected\nCapital of France?,paris\nMy key is {CANARY}?,paris\n"a | pipe\nand a line",x\n'
    )
    experiment = store.create(
        "Capitals <b>quiz</b>", "Answer: {{question}}", dataset, [Variant(provider="good"), Variant(provider="bad")]
    )
    first = start_run(conductor, store, experiment.id)
    first.wait(30)
    store.rate(first.run_id, 0, 0, 1)
    second = start_run(conductor, store, experiment.id)
    second.wait(30)
    arena = Arena(conductor.log)
    for n in range(3):
        match = arena.start(f"prompt {n} {CANARY}", [Variant(provider="good"), Variant(provider="bad")])
        letters = {}
        for event in arena.answers(conductor, match.id):
            if event.text:
                letters[event.letter] = letters.get(event.letter, "") + event.text
        arena.vote(match.id, next(letter for letter, text in letters.items() if text.startswith("Paris")))
    yield {
        "report": run_report(store, second.run_id, leaderboard=arena.leaderboard(min_votes=2)),
        "arena": arena_report(arena, min_votes=2),
    }
    conductor.close()


def transcript() -> Transcript:
    return Transcript(
        title="Chat about keys",
        settings=Variant(provider="local", temperature=0.2),
        turns=[
            Turn(role="user", content=f"# not a heading\n```\nmy key {CANARY}\n```"),
            Turn(
                role="assistant",
                content=HOSTILE,
                label="local",
                figures=Figures(latency_ms=812.4, ttft_ms=45.0, output_tokens=12, cost_usd=0.0),
                request_id="req_1",
            ),
            Turn(role="user", content="and then?"),
            Turn(role="assistant", content="partial", label="local", status="stopped"),
        ],
    )


def comparison() -> Comparison:
    return Comparison(
        title="Two temperatures",
        prompt="Write a haiku",
        columns=[
            Column(
                label="openai/gpt-4o-mini · T=0",
                answer="Calm *lake*",
                figures=Figures(latency_ms=400, cost_usd=0.00012),
            ),
            Column(label="openai/gpt-4o-mini · T=1", answer=None, status="failed", error=f"bad key sk-proj-{CANARY}"),
        ],
        vote="openai/gpt-4o-mini · T=0",
    )


def all_documents(finished_run):
    return [transcript(), comparison(), finished_run["report"], finished_run["arena"]]


def test_no_export_holds_a_key(finished_run) -> None:
    for doc in all_documents(finished_run):
        assert CANARY in doc.model_dump_json() or doc.kind != "conversation"  # the inputs do hold it
        for render in (to_markdown, to_json, to_html):
            out = render(doc)
            assert CANARY not in out, (doc.kind, render.__name__)
            assert "[REDACTED]" in out, (doc.kind, render.__name__)


def test_json_is_the_document_with_a_version(finished_run) -> None:
    report = finished_run["report"]
    data = json.loads(to_json(report))
    assert data["export_version"] == 1 and data["kind"] == "experiment_run"
    assert data["run_number"] == 2 and len(data["rows"]) == 3 and len(data["stats"]) == 2
    assert data["changes"][0].startswith("variant A (good): pass rate")
    assert json.loads(to_json(transcript()))["turns"][3]["status"] == "stopped"


def test_markdown_shows_prompts_literally_and_answers_as_markdown(finished_run) -> None:
    md = to_markdown(transcript())
    # The user's text is fenced with more backticks than it holds, so "# not a heading" stays text.
    assert "````text\n# not a heading\n```\nmy key [REDACTED]\n```\n````" in md
    assert "**bold**" in md and "## local (stopped)" in md and "latency 812 ms · first token 45 ms" in md
    report = to_markdown(finished_run["report"])
    assert "| A | good | 100% |" in report
    assert "Run 2 · completed · check: contains · 3 rows × 2 variants" in report
    assert "a | pipe" in report  # inside a fence, untouched
    assert "## Ratings" in report and "from 3 blind votes" in report
    compare = to_markdown(comparison())
    assert "**Vote:** openai/gpt-4o-mini · T=0" in compare and "## openai/gpt-4o-mini · T=1 (failed)" in compare
    assert "cost $0.00012" in compare


def test_html_keeps_model_markup_inert(finished_run) -> None:
    html = to_html(finished_run["report"])
    assert "<script" not in html.lower()
    assert "<img" not in html.lower()  # neither raw HTML nor Markdown images from an answer
    assert "&lt;script&gt;alert" in html and "<strong>bold</strong>" in html
    assert "Capitals &lt;b&gt;quiz&lt;/b&gt;" in html  # the experiment's name is text
    assert re.search(r'http-equiv="Content-Security-Policy" content="default-src \'none\'', html)
    assert html.count("<svg") == 4  # rates, latency, cost, ratings
    assert not re.search(r'\ssrc="', html)  # no attribute that would load anything (escaped text has &quot;)


def test_file_names_are_safe(finished_run) -> None:
    assert filename(finished_run["report"], "html") == "experiment_run-Capitals--b-quiz--b--run-2.html"
    assert filename(transcript(), "md") == "conversation-Chat-about-keys.md"


def test_report_charts_are_specs_with_the_data() -> None:
    from conductor_core.workbench.experiments import VariantStats
    from conductor_core.workbench.ratings import Rating

    stats = [
        VariantStats(
            variant=0,
            label="a",
            p50_latency_ms=100,
            p95_latency_ms=180,
            success_rate=1.0,
            pass_rate=0.5,
            cost_usd=0.01,
            priced=2,
        )
    ]
    assert {row["ms"] for row in next(iter(latency_chart(stats).to_dict()["datasets"].values()))} == {100, 180}
    assert {row["rate"] for row in next(iter(rates_chart(stats).to_dict()["datasets"].values()))} == {"success", "pass"}
    assert next(iter(cost_chart(stats).to_dict()["datasets"].values()))[0]["note"] == "all priced"
    rating = Rating(
        subject="x", rating=1010, ci_low=990, ci_high=1030, votes=3, wins=2, losses=1, ties=0, enough=False, min_votes=5
    )
    assert next(iter(ratings_chart([rating]).to_dict()["datasets"].values()))[0]["ranked"] is False


def test_a_cost_chart_with_no_priced_answer_says_so() -> None:
    from conductor_core.workbench.experiments import VariantStats
    from conductor_core.workbench.report_charts import svg

    unpriced = [
        VariantStats(variant=0, label="endpoint/llama", cells=3, ok=3, unpriced=3),
        VariantStats(variant=1, label="broken", cells=3, errors=3),
    ]
    spec = cost_chart(unpriced).to_dict()
    assert spec["mark"]["type"] == "text"
    assert spec["encoding"]["x"] == {"value": 4}  # a sentence at a fixed place, no axis
    (values,) = spec["datasets"].values()
    assert values[0]["note"].startswith("No priced answers")
    drawn = svg(cost_chart(unpriced))
    assert "No priced answers" in drawn
    assert "role-axis" not in drawn  # not an empty axis with a single "0" tick


def test_cost_bars_are_labelled_as_the_tables_say_it() -> None:
    from conductor_core.workbench.experiments import VariantStats

    stats = [
        VariantStats(variant=0, label="priced", cells=3, ok=3, priced=3, cost_usd=0.00042),
        VariantStats(variant=1, label="mixed", cells=3, ok=3, priced=2, unpriced=1, cost_usd=0.0012),
        VariantStats(variant=2, label="endpoint", cells=3, ok=3, unpriced=3),
        VariantStats(variant=3, label="local", cells=3, ok=3, priced=3, cost_usd=0.0),
        VariantStats(variant=4, label="broken", cells=3, errors=3),
    ]
    spec = cost_chart(stats).to_dict()
    (values,) = spec["datasets"].values()
    assert [(v["variant"], v["label"]) for v in values] == [
        ("priced", "$0.00042"),
        ("mixed", "$0.0012 + 1 unpriced"),
        ("endpoint", "unknown"),
        ("local", "free"),
        ("broken", "—"),
    ]
    assert [v["usd"] for v in values][2] is None  # no bar at $0 for an unknown price
    bars, labels = spec["layer"]
    assert bars["mark"]["type"] == "bar" and labels["mark"]["type"] == "text"


def test_the_html_report_opens_in_chromium_with_no_network(finished_run, tmp_path: Path) -> None:
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "the playwright Python package is not installed"
    else:
        reason = None if os.path.exists(CHROMIUM) else f"Debian chromium is not installed at {CHROMIUM}"
    if reason:
        if os.environ.get("CONDUCTOR_REQUIRE_SERVICES") == "1":
            pytest.fail(f"CONDUCTOR_REQUIRE_SERVICES=1 but {reason}")
        pytest.skip(reason)
    path = tmp_path / "report.html"
    path.write_text(to_html(finished_run["report"]), encoding="utf-8")
    requested: list[str] = []
    dialogs: list[str] = []
    with sync_playwright() as p:
        browser = launch(p)
        try:
            context = browser.new_context(offline=True, viewport={"width": 1100, "height": 900})
            context.on("request", lambda request: requested.append(request.url))
            page = context.new_page()
            page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
            page.goto(path.as_uri())
            page.wait_for_load_state("load")
            assert page.title() == "Capitals <b>quiz</b>"
            assert page.locator("svg").count() == 4
            # Charts drew their marks, the answers and the tables are there.
            assert page.locator("svg path, svg rect").count() > 10
            assert page.get_by_text("Results per variant").is_visible()
            assert page.locator("strong", has_text="bold").count() >= 1
            assert page.get_by_text("<script>alert('x')</script>", exact=False).count() >= 1
            page.screenshot(path=str(tmp_path / "report.png"), full_page=True)
            # Phone width: still one readable column.
            page.set_viewport_size({"width": 390, "height": 844})
            assert page.evaluate("document.documentElement.scrollWidth") <= 390 + 600  # wide tables scroll, text wraps
        finally:
            browser.close()
    assert requested == [path.as_uri()], requested  # the file itself, nothing else
    assert dialogs == []


def test_stats_table_says_dash_for_a_variant_with_no_answer_never_free():
    from conductor_core.workbench.experiments import VariantStats
    from conductor_core.workbench.exports import stats_table

    failed = VariantStats(variant=0, label="broken", cells=3, errors=3, success_rate=0.0)
    free = VariantStats(variant=1, label="local", cells=3, ok=3, priced=3, cost_usd=0.0)
    unpriced = VariantStats(variant=2, label="endpoint", cells=3, ok=3, unpriced=3)
    mixed = VariantStats(variant=3, label="mixed", cells=3, ok=3, priced=2, unpriced=1, cost_usd=0.0012)
    head, rows = stats_table([failed, free, unpriced, mixed])
    cost = head.index("total cost")
    assert [row[cost] for row in rows] == ["—", "free", "unknown", "$0.0012 + 1 unpriced"]
    assert [row[0] for row in rows] == ["A", "B", "C", "D"]


def test_pieces_of_a_key_that_markup_or_escapes_would_hide_are_redacted_in_every_format() -> None:
    """Rendering can hide a quote from a redaction of the output while the reader still sees
    the characters side by side: Markdown turns "*a*b*c*" into a<em>b</em>c, JSON writes a
    line break as "\\n". Each format, as its reader sees it, holds no piece of the key."""
    register_secret(CANARY)
    doc = Transcript(
        title="Pieces",
        turns=[
            Turn(role="user", content="What did the upstream say?"),
            Turn(
                role="assistant",
                content=f"It said *{'*'.join(CANARY[2:10])}*, then\n{chr(10).join(CANARY[12:20])}\nand stopped.",
                label="local",
            ),
        ],
    )
    data = json.loads(to_json(doc))
    assert "It said" in data["turns"][1]["content"] and not leaks(CANARY, data["turns"][1]["content"])
    html = to_html(doc)
    shown = unescape(re.sub(r"<[^>]+>", "", html))  # the text as the browser draws it
    assert "It said" in shown and "<em>" in html and not leaks(CANARY, shown)
    assert not leaks(CANARY, to_markdown(doc))
