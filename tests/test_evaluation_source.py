"""The cached source AUTO's `evaluated` policy reads (workbench/evaluation.py), on SQLite and
PostgreSQL: each target's latest completed run of a prompt, the rubric check's pass rate when
the run has one (else the run's overall one), read again only when the runs change."""

from __future__ import annotations

import time
from pathlib import Path

from conductor_core.config import load_settings
from conductor_core.routing.evaluation import Evaluation
from conductor_core.store import RequestLog
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.evaluation import EvaluatedPassRates
from conductor_core.workbench.experiments import Cell, Check, CheckResult, ExperimentStore, JudgeTarget
from conductor_core.workbench.prompts import PromptContent, PromptMessage, PromptStore
from conductor_core.workbench.variants import Variant

ROWS = "q,expected\n" + "".join(f"question {i},yes\n" for i in range(10))
RUBRIC = Check(kind="rubric", rubric="{{answer}} answers {{q}}", judge=JudgeTarget(provider="openai"))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def content() -> PromptContent:
    return PromptContent(messages=(PromptMessage(role="user", content="{{q}}"),), variant=Variant(provider="auto"))


def test_latest_completed_run_per_target_rubric_first_cached_until_the_runs_change(
    tmp_path: Path, database_url: str | None
) -> None:
    log = RequestLog.from_settings(
        load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, database_url=database_url)
    )
    try:
        prompts = PromptStore(log)
        v1 = prompts.save("invoices", content(), by="ana")
        v2 = prompts.save("invoices", content(), by="ana")
        other = prompts.save("other", content(), by="ana")
        store = ExperimentStore(log)
        experiment = store.create(
            "Invoices", "{{q}}", read_dataset(ROWS), [Variant(provider="openai", model="m"), Variant(provider="gemini")]
        )

        def run(checks, version_id, passes: tuple[int, int], rubric: tuple[int, int] | None = None, done=True):
            """A run whose first check passes `passes[v]` of 10 rows per variant, its rubric check `rubric[v]`."""
            made = store.new_run(experiment, checks, {}, prompt_version_id=version_id)
            cells = []
            for v in range(2):
                for r in range(10):
                    results = [CheckResult(passed=r < passes[v])]
                    if rubric is not None:
                        results.append(CheckResult(passed=r < rubric[v], score=1.0))
                    passed = all(x.passed for x in results)
                    cells.append(Cell(row=r, variant=v, status="ok", answer="yes", passed=passed, checks=results))
            store.write_cells(made.id, cells)
            if done:
                store.finish_run(made.id, "completed")
            return made

        clock = Clock()
        source = EvaluatedPassRates(log, clock=clock, check_every_s=2.0)
        assert source.get("invoices", "openai/m") is None and source.loads == 1  # nothing yet, loaded once

        run("contains", v1.id, (3, 4))  # an older run of version 1: overall pass rates
        newer = run(["contains", RUBRIC], v2.id, (9, 9), rubric=(7, 5))  # the newest: rubric wins
        run("contains", v2.id, (1, 1), done=False)  # still running: not counted
        run("contains", other.id, (10, 10))  # another prompt
        assert source.refresh() is True and source.loads == 2
        where = f"experiment Invoices, run {newer.number}"
        assert source.get("invoices", "openai/m") == Evaluation(pass_rate=0.7, rows=10, source=where)
        # gemini ran on its default model: found for any model of gemini.
        assert source.get("invoices", "gemini/g-default") == Evaluation(pass_rate=0.5, rows=10, source=where)
        assert source.get("invoices", "anthropic/m") is None and source.get("nope", "openai/m") is None
        assert source.get("other", "openai/m") is not None and source.get("other", "openai/m").pass_rate == 1.0  # type: ignore[union-attr]

        # Nothing changed: a check reads the signature only.
        assert source.refresh() is False and source.loads == 2
        # Reads within check_every_s never check; after it, a read starts a check in the background.
        clock.now = 10.0
        source.get("invoices", "openai/m")
        deadline = time.monotonic() + 60
        while source._checking and time.monotonic() < deadline:  # wait for the background check's end
            time.sleep(0.01)
        assert not source._checking and source.loads == 2
    finally:
        log.close()
