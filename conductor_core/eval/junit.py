"""A run as JUnit XML, the format every CI system shows: one testsuite per variant, one
testcase per dataset row, then one per threshold.

A row's testcase fails (`<failure>`) when a check failed on it, saying which checks and why,
with the answer; it is an `<error>` when the call failed (no whole answer); `<skipped>` when
the run was stopped before it. A row no check applies to passes if it was answered. A
threshold's testcase fails with the value measured. Every text comes from the store, whose
answers and error messages are redacted (no key reaches the file).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any

from ..workbench.experiments import Cell, Check, Experiment, ExperimentStore, GridRow
from .thresholds import Verdict

__all__ = ["run_junit"]

_PAGE = 200
_ANSWER_CHARS = 2000
# Characters XML 1.0 cannot hold (a model may write them): replaced, or the file would not parse.
_NOT_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _x(text: str) -> str:
    return _NOT_XML.sub("\ufffd", text)


def _row_name(row: GridRow) -> str:
    """The testcase's name, "row 3: France": the row's values, clipped."""
    shown = ", ".join(str(v) for k, v in row.values.items() if k != "expected")
    shown = " ".join(shown.split())
    return f"row {row.row + 1}" + (f": {shown[:60]}{'…' if len(shown) > 60 else ''}" if shown else "")


def _failed_checks(cell: Cell, checks: Sequence[Check]) -> list[str]:
    return [
        f"{check.label}: {result.detail or 'failed'}"
        for check, result in zip(checks, cell.checks or [], strict=False)
        if result.passed is False
    ]


def _case(suite: ET.Element, classname: str, row: GridRow, cell: Cell | None, checks: Sequence[Check]) -> str:
    """Adds the row's testcase; returns its outcome (passed, failure, error, skipped)."""
    case = ET.SubElement(suite, "testcase", classname=_x(classname), name=_x(_row_name(row)))
    if cell is not None and cell.latency_ms is not None:
        case.set("time", f"{cell.latency_ms / 1000:.3f}")
    if cell is None or cell.status == "cancelled":
        ET.SubElement(case, "skipped", message="not run: the run was stopped")
        return "skipped"
    answer = (cell.answer or "")[:_ANSWER_CHARS]
    if cell.status in ("error", "incomplete"):
        message = f"{cell.error_type or cell.status}: {cell.error_message or 'no answer'}"
        element = ET.SubElement(case, "error", message=_x(message), type=cell.error_type or cell.status)
        element.text = _x(message + (f"\n\npartial answer:\n{answer}" if answer else ""))
        return "error"
    failed = _failed_checks(cell, checks)
    if failed:
        element = ET.SubElement(case, "failure", message=_x("; ".join(failed)), type="checks")
        expected = f"\nexpected: {row.expected}" if row.expected is not None else ""
        element.text = _x("\n".join(failed) + expected + f"\n\nanswer:\n{answer}")
        return "failure"
    return "passed"


def run_junit(
    store: ExperimentStore,
    experiment: Experiment,
    run_id: str,
    checks: Sequence[Check],
    verdicts: Sequence[Verdict],
    *,
    url: str | None = None,
) -> str:
    """The run as a JUnit XML document (UTF-8 text), read from the store a page at a time."""
    labels = experiment.labels
    root = ET.Element("testsuites", name=_x(experiment.name))
    suites: list[ET.Element] = []
    counts: list[dict[str, int]] = []
    times = [0.0 for _ in labels]
    for index, label in enumerate(labels):
        suite = ET.SubElement(root, "testsuite", name=_x(f"{chr(65 + index)} · {label}"))
        properties = ET.SubElement(suite, "properties")
        ET.SubElement(properties, "property", name="target", value=experiment.variants[index].target)
        ET.SubElement(properties, "property", name="run_id", value=run_id)
        if url:
            ET.SubElement(properties, "property", name="url", value=url)
        suites.append(suite)
        counts.append({"tests": 0, "failure": 0, "error": 0, "skipped": 0})
    offset = 0
    while True:
        page = store.grid(run_id, offset=offset, limit=_PAGE)
        for row in page:
            for index, suite in enumerate(suites):
                cell = row.cells[index]
                outcome = _case(suite, f"{experiment.name}.{labels[index]}", row, cell, checks)
                counts[index]["tests"] += 1
                if outcome != "passed":
                    counts[index][outcome] += 1
                if cell is not None and cell.latency_ms is not None:
                    times[index] += cell.latency_ms / 1000
        if len(page) < _PAGE:
            break
        offset = page[-1].row + 1
    for verdict in verdicts:
        suite = suites[verdict.variant]
        case = ET.SubElement(
            suite,
            "testcase",
            classname=_x(f"{experiment.name}.{labels[verdict.variant]}.thresholds"),
            name=f"threshold {verdict.threshold.text}",
        )
        counts[verdict.variant]["tests"] += 1
        if not verdict.holds:
            measured = "nothing" if verdict.measured is None else f"{verdict.measured:g}"
            ET.SubElement(case, "failure", message=f"measured {measured}", type="threshold").text = _x(verdict.text)
            counts[verdict.variant]["failure"] += 1
    totals: dict[str, Any] = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
    for suite, count, seconds in zip(suites, counts, times, strict=True):
        figures = {
            "tests": count["tests"],
            "failures": count["failure"],
            "errors": count["error"],
            "skipped": count["skipped"],
        }
        for name, value in figures.items():
            suite.set(name, str(value))
            totals[name] += value
        suite.set("time", f"{seconds:.3f}")
    for name, value in totals.items():
        root.set(name, str(value))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"
