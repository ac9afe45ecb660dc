"""The prompts' measured pass rates AUTO's `evaluated` policy reads, kept cheap on the hot
path: the workbench's side of routing's `EvaluationSource` (`conductor_core.routing.evaluation`),
given to the core by `conductor_core.router.Conductor`.

What a target's pass rate on a prompt is: among the completed experiment runs whose
`prompt_version_id` is a version of that prompt, the newest one that ran the target; in it,
the rubric (model-graded) check's pass rate when the run has one (the first rubric check),
else the run's overall pass rate (a cell passes when every check that applies passed). A run
with two variants of one target (say two temperatures) counts the first.

Reading that takes a few aggregate queries per run: far too much per request. So it is
cached (`refreshed.BackgroundRefreshed`, as the blind-vote ratings are): the signature checked
in the background is the completed prompt runs' count and newest, and a reload happens only
when that changed.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import func, select

from ..routing.evaluation import Evaluation
from ..store import RequestLog
from .refreshed import BackgroundRefreshed

__all__ = ["EvaluatedPassRates"]


class EvaluatedPassRates(BackgroundRefreshed):
    """Per prompt name, per target ("provider/model", or the provider alone for a variant on its
    default model): its latest completed run's pass rate. Thread-safe."""

    what = "the prompts' pass rates"
    thread_name = "conductor-evaluations"

    def __init__(
        self, log_: RequestLog, *, check_every_s: float = 2.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        super().__init__(check_every_s=check_every_s, clock=clock)
        self._log = log_
        self._by_prompt: dict[str, dict[str, Evaluation]] | None = None
        self._signature: tuple[int, float | None] | None = None
        self.loads = 0  # how many times the runs were read (tests read it)

    def get(self, prompt: str, target: str) -> Evaluation | None:
        """How `target` last did on `prompt`. A target on its provider's default model may be
        stored under the provider alone: looked up there too. Never waits on the database
        except on the very first read."""
        self._maybe_refresh()
        targets = (self._by_prompt or {}).get(prompt)
        if not targets:
            return None
        found = targets.get(target)
        if found is None and "/" in target:
            found = targets.get(target.split("/", 1)[0])
        return found

    def all(self) -> dict[str, dict[str, Evaluation]]:
        self._maybe_refresh()
        return dict(self._by_prompt or {})

    def refresh(self) -> bool:
        """Check now, on this thread; reload if the runs changed. True when it reloaded."""
        from .experiments import CheckKind, ExperimentStore, runs_table  # the tables, created on first use
        from .prompts import PromptStore, prompts_table, versions_table

        experiments = ExperimentStore(self._log)
        PromptStore(self._log)
        r, v, p = runs_table.c, versions_table.c, prompts_table.c
        completed = (r.status == "completed") & r.prompt_version_id.is_not(None)
        with experiments.engine.connect() as conn:
            count, newest = conn.execute(select(func.count(), func.max(r.created_ts)).where(completed)).one()
            signature = (int(count or 0), newest)
            with self._lock:
                self._checked = self._clock()
                if signature == self._signature and self._by_prompt is not None:
                    return False
            runs = conn.execute(
                select(r.id, p.name)
                .join(versions_table, v.id == r.prompt_version_id)
                .join(prompts_table, p.id == v.prompt_id)
                .where(completed)
                .order_by(r.created_ts.desc(), r.number.desc())
            ).all()
        by_prompt: dict[str, dict[str, Evaluation]] = {}
        for run_id, prompt in runs:  # newest first: a target's first sighting is its latest run
            run = experiments.run(run_id)
            experiment = experiments.experiment(run.experiment_id)
            targets = by_prompt.setdefault(prompt, {})
            if all(variant.target in targets for variant in experiment.variants):
                continue
            rubric = next((i for i, check in enumerate(run.checks) if check.kind == CheckKind.rubric), None)
            where = run.dataset_label or f"experiment {experiment.name}"
            for variant, stats in zip(experiment.variants, experiments.stats(run_id), strict=True):
                if variant.target in targets:
                    continue
                measured = stats.checks[rubric] if rubric is not None and rubric < len(stats.checks) else stats
                if measured.pass_rate is None:
                    continue
                targets[variant.target] = Evaluation(
                    pass_rate=measured.pass_rate, rows=measured.checked, source=f"{where}, run {run.number}"
                )
        with self._lock:
            self._by_prompt = by_prompt
            self._signature = signature
            self.loads += 1
        return True

    def _loaded(self) -> bool:
        return self._by_prompt is not None

    def _fallback(self) -> None:
        self._by_prompt = self._by_prompt or {}
