"""Evals headless and in CI: `python -m conductor_core.eval FILE` runs the experiment a YAML or
JSON file describes, through the same engine and storage as the Experiments page, and exits 1
when a threshold fails (cli.py). The file's format: spec.py; thresholds: thresholds.py; the
JUnit XML it writes: junit.py."""

from .cli import main, run_url
from .junit import run_junit
from .spec import EvalFileError, EvalSpec, parse_spec, read_document
from .thresholds import METRICS, Threshold, Verdict, judge

__all__ = [
    "main",
    "run_url",
    "run_junit",
    "EvalFileError",
    "EvalSpec",
    "parse_spec",
    "read_document",
    "METRICS",
    "Threshold",
    "Verdict",
    "judge",
]
