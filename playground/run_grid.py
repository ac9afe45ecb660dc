"""The run grid as one dense table: a line per dataset row, a column per variant (promptfoo's eval
view). Pure functions, no Streamlit: `grid_frame` turns the store's grid rows into a pandas frame
once; `select_rows` filters, searches and sorts it on every rerun. Each variant's cell text puts
its mark first (✓ ✗, judge failed, cancelled…) so a narrow screen that cuts the text still shows
it; the score and latency follow, then the answer cut to `ANSWER_WIDTH` characters.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import pandas as pd

from conductor_core.workbench.experiments import Cell, GridRow

#: Characters of an answer (and of a row's inputs) shown in a cell.
ANSWER_WIDTH = 80
ROW = "Row"
MARKS = "Marks"
INPUT = "Input"

PASS, FAIL = "✓", "✗"
MARK_JUDGE_FAILED = "⚠ judge failed"
MARK_CANCELLED = "⊘ cancelled"
MARK_ERROR = "⚠ error"
MARK_CUT = "✂ cut short"
MARK_WAITING = "… waiting"
MARK_NOT_RUN = "– not run"
MARK_NO_CHECK = "○"  # answered; no check applies


def letter(i: int) -> str:
    return chr(65 + i)


def variant_column(i: int, label: str) -> str:
    return f"{letter(i)} · {label}"


def clip(text: str, width: int = ANSWER_WIDTH) -> str:
    """One line, at most `width` characters (an ellipsis says it was cut)."""
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _plain(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)


def judge_failed(cell: Cell) -> bool:
    return any(r.judge is not None and r.judge.status == "failed" for r in cell.checks or [])


def score(cell: Cell | None) -> float | None:
    """The mean of the cell's rubric scores (None: no judge gave one)."""
    if cell is None:
        return None
    scores = [r.score for r in cell.checks or [] if r.score is not None]
    return sum(scores) / len(scores) if scores else None


def mark(cell: Cell | None, *, live: bool = False) -> str:
    """What became of a cell, in a few characters: the first thing its text shows."""
    if cell is None:
        return MARK_WAITING if live else MARK_NOT_RUN
    if cell.status == "cancelled":
        return MARK_CANCELLED
    if cell.status == "error":
        return MARK_ERROR
    if judge_failed(cell) and cell.passed is not False:
        return MARK_JUDGE_FAILED
    if cell.passed is not None:
        return PASS if cell.passed else FAIL
    return MARK_CUT if cell.status == "incomplete" else MARK_NO_CHECK


def _seconds(ms: float | None) -> str:
    if ms is None:
        return ""
    return f"{ms:,.0f} ms" if ms < 1000 else f"{ms / 1000:,.1f} s"


def cell_text(cell: Cell | None, *, live: bool = False, width: int = ANSWER_WIDTH) -> str:
    """The mark first, then the score and latency, then the answer (or the error) cut to `width`."""
    parts = [mark(cell, live=live)]
    if cell is None or cell.status == "cancelled":
        return parts[0]
    if (s := score(cell)) is not None:
        parts.append(f"{s:.2f}")
    if cell.latency_ms is not None:
        parts.append(_seconds(cell.latency_ms))
    if cell.answer is not None:
        body = cell.answer
    elif cell.status == "error":
        body = cell.error_message or "the request failed"
    else:  # answered, but the answer was not stored
        body = "(answer not kept)"
    text = " · ".join(parts)
    return f"{text} — {clip(body, width)}" if body else text


def disagrees(cell: Cell | None) -> bool:
    """A person's 👍/👎 and a judge's verdict on the same cell differ."""
    if cell is None or not cell.rating:
        return False
    verdicts = [r.passed for r in cell.checks or [] if r.judge is not None and r.passed is not None]
    return any(v != (cell.rating > 0) for v in verdicts)


def _normal(answer: str) -> str:
    return " ".join(answer.split()).casefold()


def grid_frame(rows: Sequence[GridRow], labels: Sequence[str], *, live: bool = False) -> pd.DataFrame:
    """One line per row: `Row` (1-based), `Marks` (every variant's mark, "A✓ B✗"), `Input` (the
    row's values, cut), one text column per variant (`variant_column`), then hidden columns the
    filters and sorts read: `_row` (0-based), `_failed`, `_disagree`, `_differ`, `_haystack`
    (inputs and full answers, lower case, for search), and per variant `_score_i`, `_latency_i`."""
    names = [variant_column(i, label) for i, label in enumerate(labels)]
    records = []
    for grid_row in rows:
        values = ", ".join(f"{k} = {_plain(v)}" for k, v in grid_row.values.items() if k != "expected")
        if grid_row.expected is not None:
            values += f" · expected: {grid_row.expected}"
        cells = list(grid_row.cells) + [None] * (len(labels) - len(grid_row.cells))
        answers = [cell.answer for cell in cells if cell is not None and cell.answer is not None]
        record: dict[str, Any] = {
            ROW: grid_row.row + 1,
            MARKS: " ".join(f"{letter(i)}{mark(cell, live=live).split(' ')[0]}" for i, cell in enumerate(cells)),
            INPUT: clip(values),
        }
        for name, cell in zip(names, cells, strict=True):
            record[name] = cell_text(cell, live=live)
        record["_row"] = grid_row.row
        record["_failed"] = any(cell is not None and cell.passed is False for cell in cells)
        record["_disagree"] = any(disagrees(cell) for cell in cells)
        record["_differ"] = len({_normal(a) for a in answers}) > 1
        record["_haystack"] = "\n".join([values, *answers]).casefold()
        for i, cell in enumerate(cells):
            record[f"_score_{i}"] = score(cell)
            record[f"_latency_{i}"] = None if cell is None else cell.latency_ms
        records.append(record)
    columns = [ROW, MARKS, INPUT, *names, "_row", "_failed", "_disagree", "_differ", "_haystack"]
    columns += [f"_{what}_{i}" for i in range(len(labels)) for what in ("score", "latency")]
    frame = pd.DataFrame.from_records(records, columns=columns)
    for i in range(len(labels)):  # numbers even when every cell is empty (sorting wants floats)
        frame[f"_score_{i}"] = frame[f"_score_{i}"].astype("float64")
        frame[f"_latency_{i}"] = frame[f"_latency_{i}"].astype("float64")
    return frame


@dataclass(frozen=True)
class GridView:
    """What the person asked the table to show."""

    failed_only: bool = False
    disagree_only: bool = False
    differ_only: bool = False
    search: str = ""
    sort_variant: int | None = None
    sort_by: Literal["score", "latency"] = "score"
    descending: bool = False


def select_rows(frame: pd.DataFrame, view: GridView) -> pd.DataFrame:
    """The rows `view` keeps, in its order (the row order when it sorts by nothing; cells with no
    score or latency last either way)."""
    keep = pd.Series(True, index=frame.index)
    if view.failed_only:
        keep &= frame["_failed"]
    if view.disagree_only:
        keep &= frame["_disagree"]
    if view.differ_only:
        keep &= frame["_differ"]
    if needle := view.search.strip().casefold():
        keep &= frame["_haystack"].str.contains(needle, regex=False)
    chosen = frame[keep]
    if view.sort_variant is not None:
        column = f"_{view.sort_by}_{view.sort_variant}"
        if column not in chosen.columns:
            raise ValueError(f"there is no variant {letter(view.sort_variant)} to sort by")
        chosen = chosen.sort_values(column, ascending=not view.descending, kind="stable", na_position="last")
    return chosen


def shown_columns(frame: pd.DataFrame) -> list[str]:
    """The columns a person sees (the hidden ones start with an underscore)."""
    return [c for c in frame.columns if not c.startswith("_")]
