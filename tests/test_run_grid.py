"""The run grid's frame builder (playground/run_grid.py): marks, truncation, filters, search, sort."""

from __future__ import annotations

import pytest

from conductor_core.workbench.experiments import Cell, CheckResult, GridRow, Judgement
from playground import run_grid
from playground.run_grid import GridView, grid_frame, select_rows

LABELS = ["openai · gpt", "local · gemma"]
A, B = (run_grid.variant_column(i, label) for i, label in enumerate(LABELS))


def cell(row: int, variant: int, answer: str | None = "Paris", **kw) -> Cell:
    kw.setdefault("status", "ok")
    kw.setdefault("latency_ms", 100.0 * (variant + 1))
    return Cell(row=row, variant=variant, answer=answer, **kw)


def rubric(passed: bool | None, score: float | None, status: str = "ok") -> CheckResult:
    return CheckResult(passed=passed, score=score, judge=Judgement(status=status, reason="because"))


def rows() -> list[GridRow]:
    return [
        # 0: both pass, same answer
        GridRow(
            row=0,
            values={"country": "France"},
            expected="Paris",
            cells=[cell(0, 0, passed=True), cell(0, 1, passed=True, latency_ms=2500.0)],
        ),
        # 1: B fails, answers differ
        GridRow(
            row=1,
            values={"country": "Japan"},
            expected="Tokyo",
            cells=[cell(1, 0, "Tokyo", passed=True), cell(1, 1, "Kyoto", passed=False)],
        ),
        # 2: judge scores; a person's 👎 on A, which the judge passed: they disagree
        GridRow(
            row=2,
            values={"country": "Kenya"},
            expected=None,
            cells=[
                cell(2, 0, "Nairobi " + "x" * 200, passed=True, rating=-1, checks=[rubric(True, 0.9)]),
                cell(2, 1, "nairobi", passed=True, rating=1, checks=[rubric(True, 0.4)]),
            ],
        ),
        # 3: the judge failed on A; B was cancelled
        GridRow(
            row=3,
            values={"country": "Peru"},
            expected=None,
            cells=[
                cell(3, 0, "Lima", checks=[rubric(None, None, status="failed")]),
                cell(3, 1, None, status="cancelled", latency_ms=None),
            ],
        ),
        # 4: A errored; B not run yet
        GridRow(
            row=4,
            values={"country": "Chile"},
            expected=None,
            cells=[cell(4, 0, None, status="error", error_message="upstream said 503"), None],
        ),
    ]


@pytest.fixture
def frame():
    return grid_frame(rows(), LABELS)


def test_marks_come_first_in_each_cell(frame):
    texts = frame.set_index(run_grid.ROW)
    assert texts.loc[1, A].startswith("✓ · 100 ms — Paris")
    assert texts.loc[1, B].startswith("✓ · 2.5 s — Paris")
    assert texts.loc[2, B].startswith("✗ · 200 ms — Kyoto")
    assert texts.loc[3, A].startswith("✓ · 0.90 · 100 ms — Nairobi")  # the score after the mark
    assert texts.loc[4, A].startswith("⚠ judge failed · 100 ms — Lima")
    assert texts.loc[4, B] == "⊘ cancelled"
    assert texts.loc[5, A] == "⚠ error · 100 ms — upstream said 503"
    assert texts.loc[5, B] == "– not run"
    kept_none = cell(0, 0, None, passed=None)  # prompt logging off: answered, nothing stored
    assert run_grid.cell_text(kept_none) == "○ · 100 ms — (answer not kept)"
    assert grid_frame(rows(), LABELS, live=True).set_index(run_grid.ROW).loc[5, B] == "… waiting"
    assert list(frame[run_grid.MARKS]) == ["A✓ B✓", "A✓ B✗", "A✓ B✓", "A⚠ B⊘", "A⚠ B–"]


def test_answers_and_inputs_are_cut_to_one_short_line(frame):
    long = frame.set_index(run_grid.ROW).loc[3, A]
    answer = long.split(" — ", 1)[1]
    assert len(answer) == run_grid.ANSWER_WIDTH and answer.endswith("…")
    assert run_grid.clip("a\n b   c") == "a b c"
    assert list(frame[run_grid.INPUT])[:2] == [
        "country = France · expected: Paris",
        "country = Japan · expected: Tokyo",
    ]
    assert run_grid.shown_columns(frame) == [run_grid.ROW, run_grid.MARKS, run_grid.INPUT, A, B]


def test_filters_keep_exactly_the_rows_they_name(frame):
    assert list(select_rows(frame, GridView())[run_grid.ROW]) == [1, 2, 3, 4, 5]
    assert list(select_rows(frame, GridView(failed_only=True))[run_grid.ROW]) == [2]
    assert list(select_rows(frame, GridView(disagree_only=True))[run_grid.ROW]) == [3]
    # Row 3's answers differ only in case and length; row 1's are the same; rows 4-5 have one answer.
    assert list(select_rows(frame, GridView(differ_only=True))[run_grid.ROW]) == [2, 3]
    assert list(select_rows(frame, GridView(differ_only=True, failed_only=True))[run_grid.ROW]) == [2]


def test_search_reads_inputs_and_whole_answers(frame):
    assert list(select_rows(frame, GridView(search="kyoto"))[run_grid.ROW]) == [2]
    assert list(select_rows(frame, GridView(search=" PERU "))[run_grid.ROW]) == [4]
    # Beyond the 80 characters shown: the search reads the whole answer.
    assert list(select_rows(frame, GridView(search="x" * 150))[run_grid.ROW]) == [3]
    assert list(select_rows(frame, GridView(search="(?i)"))[run_grid.ROW]) == []  # text, not a pattern


def test_sort_by_a_variants_score_or_latency_puts_empty_cells_last(frame):
    by_score = select_rows(frame, GridView(sort_variant=1, sort_by="score", descending=True))
    assert list(by_score[run_grid.ROW]) == [3, 1, 2, 4, 5]
    by_latency = select_rows(frame, GridView(sort_variant=1, sort_by="latency", descending=True))
    assert list(by_latency[run_grid.ROW]) == [1, 2, 3, 4, 5]
    fastest = select_rows(frame, GridView(sort_variant=1, sort_by="latency"))
    assert list(fastest[run_grid.ROW])[:3] == [2, 3, 1]
    with pytest.raises(ValueError, match="no variant C"):
        select_rows(frame, GridView(sort_variant=2))


def test_an_empty_run_builds_an_empty_frame():
    empty = grid_frame([], LABELS)
    assert len(empty) == 0 and run_grid.shown_columns(empty)[-2:] == [A, B]
    assert len(select_rows(empty, GridView(failed_only=True, search="x", sort_variant=0))) == 0
