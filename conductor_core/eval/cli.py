"""`python -m conductor_core.eval FILE [--junit PATH] [--html PATH] [--base-url URL]`

Runs the experiment an eval file describes (spec.py) through the same engine and storage as
the Experiments page (`ExperimentStore.create`, `runner.start_run`), so the run opens in the
playground afterwards by the URL it prints. Exit status:

    0   every threshold holds
    1   a threshold failed (each one is named, with the value measured)
    2   the file is bad, or the run could not start or stopped by itself, a report could not be
        written, or anything else went wrong (a crash never reads as a failed threshold)
    130 stopped with Ctrl-C (what finished is kept, as the page's Stop keeps it)

A progress bar on a terminal; plain lines, one per tenth of the cells, when the output is not
one (CI logs).
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import IO, Any

from pydantic import ValidationError

from ..config import load_settings, redact
from ..jobs.runs import QueuedRun
from ..models import register_provider_name
from ..providers import get_spec
from ..router import Conductor
from ..workbench import exports
from ..workbench.dataset_store import DatasetStore
from ..workbench.datasets import DatasetError, read_dataset
from ..workbench.experiments import ExperimentError, ExperimentStore, VariantStats
from ..workbench.prompts import PromptStore
from ..workbench.runner import Progress, RunHandle, start_run
from ..workbench.templates import TemplateError
from .junit import run_junit
from .spec import (
    Document,
    EvalFileError,
    EvalSpec,
    parse_spec,
    parse_store,
    read_document,
    resolve_dataset,
    resolve_prompt,
)
from .thresholds import Verdict, judge

__all__ = ["main", "EXIT_OK", "EXIT_THRESHOLD", "EXIT_BAD", "EXIT_INTERRUPTED", "run_url"]

EXIT_OK, EXIT_THRESHOLD, EXIT_BAD, EXIT_INTERRUPTED = 0, 1, 2, 130
DEFAULT_BASE_URL = "http://localhost:8501"
BASE_URL_ENV = "CONDUCTOR_PLAYGROUND_URL"  # a team's playground, for CI's links


def run_url(base_url: str, experiment_id: str, run_id: str) -> str:
    """Where the Experiments page opens this run (its `?experiment=…&run=…` parameters)."""
    return f"{base_url.rstrip('/')}/experiments?experiment={experiment_id}&run={run_id}"


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m conductor_core.eval",
        description="Run an experiment described in a YAML or JSON file; exit 1 when a threshold fails.",
    )
    parser.add_argument("file", type=Path, help="the eval file (YAML, or JSON when it ends in .json)")
    parser.add_argument("--junit", type=Path, help="write JUnit XML here (a testsuite per variant, a testcase per row)")
    parser.add_argument("--html", type=Path, help="write the self-contained HTML report here")
    parser.add_argument(
        "--base-url",
        default=os.environ.get(BASE_URL_ENV) or DEFAULT_BASE_URL,
        help=f"the playground's address, for the run's link (${BASE_URL_ENV}, else {DEFAULT_BASE_URL})",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None, *, out: IO[str] | None = None) -> int:
    args = _arguments(argv)
    out = out or sys.stdout
    try:
        doc = read_document(args.file)
        store_spec = parse_store(doc)
        try:
            settings = load_settings(**store_spec.settings(doc.folder))
        except ValidationError as error:  # the environment's settings, not the file: no value is shown
            said = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors(include_input=False))
            print(f"could not start: a setting is not valid: {said}", file=sys.stderr)
            return EXIT_BAD
        for name in settings.endpoints:  # a variant may name a configured endpoint
            register_provider_name(name)
        spec = parse_spec(doc)
    except EvalFileError as error:
        print(error, file=sys.stderr)
        return EXIT_BAD
    try:
        conductor = Conductor(settings, source="eval")
    except Exception as error:  # noqa: BLE001 - a database or provider that cannot start: say which
        print(f"could not start: {type(error).__name__}: {redact(error)}", file=sys.stderr)
        return EXIT_BAD
    try:
        return _run(conductor, doc, spec, args, out)
    except Exception:  # noqa: BLE001 - a crash must not read as a failed threshold (exit 1) in CI
        print(redact(traceback.format_exc()), file=sys.stderr)
        print("The eval could not finish (the error above).", file=sys.stderr)
        return EXIT_BAD
    finally:
        conductor.close()


def _run(conductor: Conductor, doc: Document, spec: EvalSpec, args: argparse.Namespace, out: IO[str]) -> int:
    unready = [
        doc.problem(_not_configured(variant.provider), ("variants", index))
        for index, variant in enumerate(spec.variants)
        if variant.provider not in conductor.registry.providers
    ]
    if unready:
        print(EvalFileError(doc.path.name, unready), file=sys.stderr)
        return EXIT_BAD
    saved: tuple[str, int] | None = None  # the saved dataset's (name, version), which the run records
    dataset_path = doc.folder / (spec.dataset.path or "")
    filename = spec.dataset.ref or dataset_path.name
    try:
        if spec.dataset.ref is not None:
            dataset, saved = resolve_dataset(spec.dataset.ref, DatasetStore(conductor.log))
        else:
            data = dataset_path.read_bytes()
            dataset = read_dataset(data, filename=filename, max_rows=conductor.settings.dataset_max_rows)
    except OSError as error:
        print(doc.error(f"cannot read {dataset_path} ({error.strerror or error})", ("dataset",)), file=sys.stderr)
        return EXIT_BAD
    except DatasetError as error:
        print(f"{filename}: {error}", file=sys.stderr)
        return EXIT_BAD
    except ValueError as error:  # a reference that cannot be read
        print(doc.error(str(error), ("dataset",)), file=sys.stderr)
        return EXIT_BAD
    prompt, prompt_version_id = spec.prompt, None
    if prompt.ref is not None:
        try:
            prompt, prompt_version_id = resolve_prompt(prompt.ref, PromptStore(conductor.log))
        except ValueError as error:
            print(doc.error(str(error), ("prompt",)), file=sys.stderr)
            return EXIT_BAD
    system = prompt.system
    variants = [v if v.system or not system else v.model_copy(update={"system": system}) for v in spec.variants]
    store = ExperimentStore(conductor.log)
    try:
        experiment = store.create(spec.name or doc.path.stem, prompt.user or "", dataset, variants)
        handle = start_run(
            conductor,
            store,
            experiment.id,
            checks=spec.checks,
            concurrency=spec.concurrency_limits(),
            dataset=saved,
            prompt_version_id=prompt_version_id,
        )
    except TemplateError as error:
        print(doc.error(str(error), ("prompt",)), file=sys.stderr)
        return EXIT_BAD
    except (DatasetError, ExperimentError) as error:
        print(f"{doc.path.name}: the run could not start: {error}", file=sys.stderr)
        return EXIT_BAD
    url = run_url(args.base_url, experiment.id, handle.run_id)
    print(
        f"{experiment.name}: {experiment.row_count} rows × {len(variants)} variants, run {handle.run_id} "
        f"stored in {conductor.log.url}",
        file=out,
        flush=True,
    )
    interrupted = _follow(handle, out)
    if interrupted is None:
        return EXIT_INTERRUPTED  # Ctrl-C twice: left at once, without the reports
    stats = store.stats(handle.run_id)
    verdicts = _verdicts(spec, stats)
    print(_summary(store, handle.run_id, stats), file=out)
    problems = _write_reports(store, experiment, handle.run_id, spec, verdicts, url, args)
    for verdict in verdicts:
        print(verdict.text, file=out)
    if not verdicts:
        print("No thresholds in the file: the exit status says only that the run finished.", file=out)
    print(f"Open the run: {url}", file=out, flush=True)
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        return EXIT_BAD
    if interrupted:
        print("Stopped with Ctrl-C: the cells that finished are kept; the rest are marked cancelled.", file=sys.stderr)
        return EXIT_INTERRUPTED
    if handle.progress().state != "completed":
        # The run stopped itself (it could not read its rows): its figures cover part of the dataset.
        why = handle.progress().database_error or "see the log above"
        print(f"The run stopped before every cell ran ({why}); no threshold is judged on part of it.", file=sys.stderr)
        return EXIT_BAD
    failed = [v for v in verdicts if not v.holds]
    if failed:
        print(f"{len(failed)} threshold(s) failed:", file=sys.stderr)
        for verdict in failed:
            print(f"  {verdict.text}", file=sys.stderr)
        return EXIT_THRESHOLD
    return EXIT_OK


def _not_configured(provider: str) -> str:
    spec = get_spec(provider)
    variables = " or ".join(spec.key_env_vars) if spec is not None and spec.key_env_vars else None
    how = f"set {variables}" if variables else "configure it (CONDUCTOR_ENDPOINTS or conductor.toml)"
    return f"provider {provider!r} is not configured here: {how}, or remove the variant"


def _follow(handle: RunHandle | QueuedRun, out: IO[str]) -> bool | None:
    """Shows progress until the run ends. True when Ctrl-C stopped it (after it stored what
    finished), None on a second Ctrl-C (leave at once), False when it ran to the end."""
    try:
        if out.isatty():
            _bar(handle, out)
        else:
            _lines(handle, out)
        return False
    except KeyboardInterrupt:
        handle.stop()  # before saying so: whoever reads "Stopping" may rely on no new call starting
        print("\nStopping: no new calls, calls in flight are closed (Ctrl-C again to leave at once)…", file=sys.stderr)
        try:
            handle.wait()
        except KeyboardInterrupt:
            return None
        return True


def _said(p: Progress) -> str:
    return f"{p.done}/{p.total} cells (ok {p.ok}, errors {p.errors}, incomplete {p.incomplete})" + (
        f", {p.cancelled} cancelled" if p.cancelled else ""
    )


def _bar(handle: RunHandle | QueuedRun, out: IO[str]) -> None:
    from tqdm import tqdm

    total = handle.progress().total
    with tqdm(total=total, unit="cell", file=out, dynamic_ncols=True, leave=True) as bar:
        for p in handle.updates(0.2):
            bar.update(p.done - bar.n)
            bar.set_postfix_str(f"ok {p.ok} · errors {p.errors}", refresh=False)


def _lines(handle: RunHandle | QueuedRun, out: IO[str]) -> None:
    """A line per tenth of the cells and one at the end: a CI log stays short."""
    total = handle.progress().total
    step = max(1, total // 10)
    next_at = step
    for p in handle.updates(0.5):
        if p.done >= next_at and not p.finished:
            print(_said(p), file=out, flush=True)
            next_at = (p.done // step + 1) * step
    print(f"{_said(handle.progress())} — {handle.progress().state}", file=out, flush=True)


def _verdicts(spec: EvalSpec, stats: list[VariantStats]) -> list[Verdict]:
    verdicts = []
    for s in stats:
        for threshold in spec.thresholds_of(s.variant):
            index = spec.check_index(threshold.check) if threshold.check is not None else None
            verdicts.append(judge(threshold, s, index))
    return verdicts


def _text_table(head: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = ["  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *rows]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _summary(store: ExperimentStore, run_id: str, stats: list[VariantStats]) -> str:
    """The figures per variant as the page and the reports show them (ratings left out: none yet)."""
    head, rows = exports.stats_table(stats)
    keep = [i for i, name in enumerate(head) if name != "rating"]
    head = [head[i] or "" for i in keep]
    rows = [[row[i] for i in keep] for row in rows]
    for row, s in zip(rows, stats, strict=True):
        row.insert(2, f"{s.ok}/{s.cells - s.cancelled}")
    head.insert(2, "answered")
    parts = ["", _text_table(head, rows)]
    run = store.run(run_id)
    if len(run.checks) > 1:
        check_head, check_rows = exports.check_rates_table(list(run.checks), stats)
        parts += ["", _text_table(check_head, check_rows)]
    return "\n".join(parts) + "\n"


def _write_reports(
    store: ExperimentStore,
    experiment: Any,
    run_id: str,
    spec: EvalSpec,
    verdicts: list[Verdict],
    url: str,
    args: argparse.Namespace,
) -> list[str]:
    """Writes the asked reports; returns what could not be written."""
    problems = []
    if args.junit is not None:
        try:
            _write(args.junit, run_junit(store, experiment, run_id, spec.checks, verdicts, url=url))
        except OSError as error:
            problems.append(f"could not write the JUnit XML to {args.junit}: {error.strerror or error}")
    if args.html is not None:
        try:
            _write(args.html, exports.to_html(exports.run_report(store, run_id)))
        except OSError as error:
            problems.append(f"could not write the HTML report to {args.html}: {error.strerror or error}")
    return problems


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
