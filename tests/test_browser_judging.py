"""A rubric check in a real browser (Playwright + Debian's chromium): an experiment over 10 rows
and two loopback OpenAI-compatible endpoints, one of which also judges (a loopback judge scripted
by the row id in its prompt), its exact rubric pass rates and a cell's reason on the page, then a
person's 👍/👎 and the judge's agreement with them (n, %, Cohen's kappa)."""

from __future__ import annotations

import json

import pytest
from grid_support import choose_grid_row, grid
from judge_support import ScriptedJudge, verdict

from tests.test_browser import Playground, endpoint_config, eventually, wait_idle, wait_settled
from tests.test_browser_experiments import browser_page, open_experiments, run_text, store

pytestmark = pytest.mark.timeout(420)

ROWS = [f"r{i:02d}" for i in range(1, 11)]
DATASET = "id,country,expected\n" + "".join(f"{r},Land {r},Paris\n" for r in ROWS)
TEMPLATE = "Capital of {{country}}? One word."
RUBRIC = "Row {{id}}: the answer names {{expected}}. Answer: {{answer}}"
ALPHA, BETA = "Alpha says Paris.", "Beta says Rome."


def pairwise(prompt: str) -> str:
    """Which answer is better: alpha's on rows 1-6 both times, beta's on rows 7-8; row 9 always
    the first shown (it flips with the order: a tie), row 10 a tie."""
    row = next(i for i, r in enumerate(ROWS) if f"Land {r}?" in prompt)
    alpha_first = prompt.index(ALPHA) < prompt.index(BETA)
    if row < 6:
        better = "1" if alpha_first else "2"
    elif row < 8:
        better = "2" if alpha_first else "1"
    else:
        better = "1" if row == 8 else "tie"
    return json.dumps({"better": better, "reason": f"row {ROWS[row]}"})


def script(prompt: str) -> str | None:
    """alpha's answers pass on rows 1-7; beta's on rows 1-4, fail on 5-9, and row 10's judge
    answers prose (a failed judge, not a failed answer). Anything else is an ordinary answer."""
    if "Answer 1:" in prompt:
        return pairwise(prompt)
    row = next((i for i, r in enumerate(ROWS) if f"Row {r}:" in prompt), None)
    if row is None:
        return None
    if ALPHA in prompt:
        return verdict(True, 1.0, f"{ROWS[row]} names Paris") if row < 7 else verdict(False, 0.0, "too vague")
    if row < 4:
        return verdict(True, 0.8, "fine")
    return verdict(False, 0.1, "names Rome") if row < 9 else "Looks good to me!"


@pytest.fixture(scope="module")
def lab(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("judging")
    alpha = ScriptedJudge(script, reply=ALPHA, models=["alpha-1"]).start()
    beta = OpenAIServer(reply=BETA, models=["beta-1"]).start()
    server = Playground(
        work,
        config=endpoint_config(alpha, "alpha") + endpoint_config(beta, "beta"),
        name="judging",
        extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"},
    )
    try:
        yield {"url": server.url, "work": work, "alpha": alpha, "beta": beta}
    finally:
        server.stop()
        alpha.stop()
        beta.stop()


def ratings(work, run_id: str) -> dict[tuple[int, int], int]:
    log, exp = store(work)
    try:
        return {(c.row, c.variant): c.rating for c in exp.cells(run_id) if c.rating is not None}
    finally:
        log.close()


def add_check(page, option: str, *, shows: str) -> None:
    """Pick `option` in "More checks" until the field `shows` appears. A click on a box the page
    has just scrolled to can focus it without opening its menu, and a choice made while a rerun
    is drawing the form can be dropped by it: as a person would, try again."""
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    box = page.get_by_test_id("stMultiSelect").filter(has_text="More checks")
    wanted = page.get_by_role("option", name=option)
    field = page.get_by_label(shows, exact=True)
    for _ in range(5):
        wait_idle(page)
        wait_settled(page)
        box.click()
        try:
            wanted.wait_for(timeout=5_000)
            wanted.click()
            page.keyboard.press("Escape")
            field.wait_for(timeout=15_000)
            return
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    field.wait_for(timeout=1_000)


def table_rows(page, heading: str) -> dict[str, list[str]]:
    """The table under a bold heading on the page: first cell -> the others."""
    table = page.locator("[data-testid='stMarkdown']", has_text=heading).locator(
        "xpath=following::*[@data-testid='stTable'][1]"
    )
    rows = {}
    for tr in table.locator("tbody tr").all():
        cells = [c.inner_text().strip() for c in tr.locator("th, td").all()]
        rows[cells[0]] = cells[1:]
    return rows


def test_a_rubric_check_graded_by_a_judge_then_agreement_with_thumbs(lab, shots):
    from playwright.sync_api import TimeoutError as PlaywrightTimeout
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p, browser_page(p, shots, "judging") as page:
        open_experiments(page, lab["url"])
        page.get_by_label("Prompt template", exact=True).fill(TEMPLATE)
        page.get_by_label("Rows: CSV with a header line, or JSONL (one JSON object a line)", exact=True).fill(DATASET)
        page.keyboard.press("Tab")
        wait_idle(page)
        page.get_by_text("10 rows", exact=False).first.wait_for(timeout=30_000)

        # Add a rubric check beside the comparison with expected, judged by alpha.
        add_check(page, "graded by a judge (rubric)", shows="Rubric")
        wait_idle(page)
        page.get_by_label("Rubric", exact=True).fill(RUBRIC)
        page.keyboard.press("Tab")
        wait_idle(page)
        page.get_by_role("button", name="Run experiment").click()
        page.get_by_text("Run 1 completed", exact=False).wait_for(timeout=180_000)
        wait_settled(page)

        # Every answer was judged once, by alpha (the first configured provider, by default).
        judged = [q for q in lab["alpha"].prompts() if q.startswith("Row ")]
        assert len(judged) == 20, judged
        run_id = page.evaluate("() => new URLSearchParams(location.search).get('run')")
        log, exp = store(lab["work"])
        try:
            [contains, rubric] = exp.run(run_id).checks
            assert (contains.kind, rubric.kind, rubric.rubric) == ("contains", "rubric", RUBRIC)
            assert rubric.judge is not None and rubric.judge.provider == "alpha"
        finally:
            log.close()
        checks = table_rows(page, "Each check's pass rate")
        [rubric_row] = [cells for label, cells in checks.items() if label.startswith("rubric")]
        assert rubric_row[0].startswith("7/10 (70%) · mean score 0.70"), rubric_row
        assert rubric_row[1].startswith("4/9 (44%) · mean score 0.41 · 1 judge failure"), rubric_row
        # The grid: each cell's mark and the judge's score (beta fails "contains" on every row);
        # row 10's judge gave beta no verdict: a mark and a latency, no score.
        table = grid(page)
        a, b = (next(k for k in table[0] if k.startswith(f"{v} · ")) for v in "AB")
        assert table[0][a].startswith("✓ · 1.00 · ") and table[6][a].startswith("✓ · 1.00 · "), table[6]
        assert table[7][a].startswith("✗ · 0.00 · ") and table[4][b].startswith("✗ · 0.10 · "), table[4]
        assert table[9][b].startswith("✗ · ") and len(table[9][b].split(" — ")[0].split(" · ")) == 2, table[9]
        choose_grid_row(page, 6)  # row 7, opened: the judge's reason
        page.get_by_text("r07 names Paris", exact=False).first.wait_for(timeout=30_000)
        choose_grid_row(page, 9)  # row 10: why the judge gave no verdict
        page.get_by_text("the judge failed: the judge's answer is not a verdict (not JSON", exact=False).first.wait_for(
            timeout=30_000
        )
        agreement = table_rows(page, "Judge and person")
        [(_label, cells)] = agreement.items()
        assert cells == ["0", "—", "—"], cells
        shots(page, "experiment_rubric", full_page=True)

        # 👍 row 1 alpha (judge: pass, agree), 👎 row 1 beta (judge: pass, disagree), 👎 row 8
        # alpha (judge: fail, agree). The open row's thumbs: a stFeedback per variant.
        thumbs = page.get_by_test_id("stFeedback")
        for position, index, button, want in (
            (0, 0, 0, {(0, 0): 1}),
            (0, 1, 1, {(0, 1): -1}),
            (7, 0, 1, {(7, 0): -1}),
        ):
            if page.get_by_text(f"Row {position + 1}", exact=True).count() == 0:
                choose_grid_row(page, position)
                page.get_by_text(f"Row {position + 1}", exact=True).wait_for(timeout=30_000)
                wait_settled(page)  # the rest of the opened row is drawn after its heading: not the last row's 👍/👎
            thumbs.nth(index).locator("button").nth(button).click()
            wait_settled(page)
            eventually(lambda want=want: want.items() <= ratings(lab["work"], run_id).items(), what="the rating")
        page.get_by_text("2 of 3 (67%)").wait_for(timeout=60_000)
        wait_settled(page)
        agreement = table_rows(page, "Judge and person")
        [(_label, cells)] = agreement.items()
        assert cells == ["3", "2 of 3 (67%)", "0.40"], cells
        shots(page, "experiment_rubric_agreement", full_page=True)

        # Pairwise: alpha judges A against B, each row twice with the order swapped.
        page.get_by_text("Judge two variants against each other (pairwise)").click()
        # The table's heading (the form's "Pairwise judge" box has the same words).
        table_heading = page.get_by_role("strong").filter(has_text="Pairwise judge")
        started = page.get_by_text("Judging A vs B", exact=False).or_(table_heading)
        for _ in range(3):
            # A click that lands while a live refresh redraws the page can be dropped (seen under
            # load: the form stayed as it was, nothing judged): as a person would, click again.
            wait_settled(page)
            page.get_by_role("button", name="Judge the pair").click()
            try:
                started.first.wait_for(timeout=20_000)
                break
            except PlaywrightTimeout:
                continue
        table_heading.wait_for(timeout=120_000)
        eventually(lambda: "A 6 · B 2" in run_text(page), what="the pairwise result")
        pairs = table_rows(page, "Pairwise judge")
        [(pair, cells)] = pairs.items()
        assert pair == "A · alpha/alpha-1 vs B · beta/beta-1"
        # judge, wins, ties (a flip and a tie answer), no verdict, win rate
        assert cells[:5] == ["alpha", "A 6 · B 2", "2", "0", "A 60% · B 20%"], cells
        assert len([q for q in lab["alpha"].prompts() if "Answer 1:" in q]) == 20
        board = table_rows(page, "Judges' leaderboard")
        assert board["1"][0] == "alpha/alpha-1" and board["1"][4] == "6/2/2", board
        assert "10 judge votes" in board["1"][5], board
        shots(page, "experiment_pairwise", full_page=True)
