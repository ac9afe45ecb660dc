"""Experiments end to end: a dataset through the real SDKs to loopback servers, the
per-provider limit seen at the upstream, Stop, storage on SQLite and PostgreSQL, and the
statistics computed in SQL."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import update
from workbench_support import cloud_conductor

from conductor_core.config import load_settings
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.testing.fakes import ScriptedProvider
from conductor_core.workbench.datasets import DatasetTooLargeError, read_dataset
from conductor_core.workbench.experiments import (
    Cell,
    CheckError,
    CheckKind,
    ExperimentError,
    ExperimentStore,
    check_answer,
    runs_table,
)
from conductor_core.workbench.runner import RunHandle, start_run
from conductor_core.workbench.templates import TemplateError
from conductor_core.workbench.variants import Variant

COUNTRIES = ["France", "Italy", "Spain", "Japan", "Peru", "Chile", "Kenya", "Laos", "Fiji", "Oman"]


def ten_rows() -> str:
    # Rows 1-5 expect "paris", 6-10 "rome": the servers' fixed replies pass some and fail others.
    return "country,expected\n" + "".join(f"{c},{'paris' if i < 5 else 'rome'}\n" for i, c in enumerate(COUNTRIES))


def test_a_ten_row_dataset_over_three_variants_with_one_failing_upstream(clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)  # resets the servers first
    clouds["gemini"].set_down(True)
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Capitals",
            "What is the capital of {{ country }}?",
            read_dataset(ten_rows()),
            [Variant(provider="openai", temperature=0.0), Variant(provider="anthropic"), Variant(provider="gemini")],
        )
        seen = []
        handle = start_run(conductor, store, experiment.id, check=CheckKind.contains, on_progress=seen.append)
        assert handle.wait(60)
        progress = handle.progress()
        assert (progress.state, progress.done, progress.total, progress.ok, progress.errors) == (
            "completed",
            30,
            30,
            20,
            10,
        )
        assert progress.per_variant == (10, 10, 10)
        assert seen and seen[-1].finished and [p.done for p in seen] == sorted(p.done for p in seen)

        # Every row's prompt reached each working upstream through its SDK.
        sent = [r["json"]["messages"][-1]["content"] for r in clouds["openai"].requests]
        assert sorted(sent) == sorted(f"What is the capital of {c}?" for c in COUNTRIES)
        assert all(r["json"]["temperature"] == 0.0 for r in clouds["openai"].requests)
        assert len(clouds["anthropic"].requests) == 10

        stats = {s.label: s for s in store.stats(handle.run_id)}
        openai, anthropic, gemini = stats["openai"], stats["anthropic"], stats["gemini"]
        assert (openai.ok, openai.success_rate, anthropic.success_rate) == (10, 1.0, 1.0)
        assert (gemini.ok, gemini.errors, gemini.success_rate, gemini.pass_rate) == (0, 10, 0.0, 0.0)
        # openai says Paris (passes rows 1-5), anthropic too; nobody says Rome except the failing one.
        assert (openai.checked, openai.passed, openai.pass_rate) == (10, 5, 0.5)
        assert anthropic.pass_rate == 0.5
        assert openai.priced == 10 and openai.unpriced == 0 and openai.cost_usd > 0
        assert openai.p50_latency_ms is not None and openai.p50_ttft_ms is not None and gemini.p50_latency_ms is None

        # Each cell is linked to its request-log rows by request_id.
        cells = store.cells(handle.run_id)
        assert len(cells) == 30
        logged = {r.request_id: r for r in conductor.log.records()}
        for cell in cells:
            assert cell.request_id is not None
            if cell.status == "ok":
                assert logged[cell.request_id].status == "ok" and logged[cell.request_id].answer == cell.answer
        failed = [c for c in cells if c.variant == 2]
        # The upstream's 503s, until the breaker pauses the provider (no call is made then).
        assert {(c.status, c.error_type) for c in failed} <= {("error", "unavailable"), ("error", "circuit_open")}
        assert any(c.error_type == "unavailable" for c in failed)
        # Until the breaker opened, each failure is a log row of its own.
        assert any(logged.get(c.request_id) and logged[c.request_id].status == "error" for c in failed)
    finally:
        conductor.close()


def test_the_concurrency_limit_per_provider_is_what_the_upstream_sees(clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    clouds["openai"].latency_s = 0.3
    clouds["anthropic"].latency_s = 0.3
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Limits",
            "{{country}}",
            read_dataset(ten_rows()),
            # Two variants on openai share its limit of 2; anthropic may run 3 at once.
            [
                Variant(provider="openai", temperature=0.0),
                Variant(provider="openai", temperature=1.0),
                Variant(provider="anthropic"),
            ],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2, "anthropic": 3})
        assert handle.limits == {"openai": 2, "anthropic": 3}
        assert handle.wait(60) and handle.progress().ok == 30
        assert clouds["openai"].peak_in_flight == 2
        assert clouds["anthropic"].peak_in_flight == 3
        assert len(clouds["openai"].requests) == 20
        assert store.run(handle.run_id).concurrency == {"openai": 2, "anthropic": 3}
    finally:
        conductor.close()


def test_stop_keeps_what_finished_marks_the_rest_and_the_log_says_cancelled(clouds, tmp_path: Path) -> None:
    conductor = cloud_conductor(clouds, tmp_path)
    clouds["openai"].latency_s = 0.05
    clouds["openai"].chunk_delay_s = 0.1  # several chunks, so a stop lands mid-stream
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "Stop",
            "{{country}}",
            read_dataset(ten_rows()),
            [Variant(provider="openai"), Variant(provider="openai", temperature=0)],
        )
        handle = start_run(conductor, store, experiment.id, concurrency={"openai": 2})
        assert RunHandle.find(handle.run_id) is handle
        deadline = time.monotonic() + 60
        while handle.progress().ok < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        handle.stop()
        assert handle.progress().state in ("stopping", "stopped")
        assert handle.wait(60)
        progress = handle.progress()
        assert progress.state == "stopped" and progress.done == progress.total == 20
        assert progress.ok >= 3 and progress.cancelled == 20 - progress.ok - progress.errors
        assert RunHandle.find(handle.run_id) is None

        run = store.run(handle.run_id)
        assert run.status == "stopped" and run.finished_at is not None
        cells = store.cells(handle.run_id)
        assert len(cells) == 20
        assert {c.status for c in cells} <= {"ok", "cancelled"}
        kept = [c for c in cells if c.status == "ok"]
        assert len(kept) == progress.ok and all(c.answer == clouds["openai"].reply for c in kept)
        # Calls in flight were closed: the log says cancelled, with the part that had arrived.
        cancelled = conductor.log.records(status="incomplete")
        assert cancelled and all(r.error_type == "cancelled" for r in cancelled)
        assert len(clouds["openai"].requests) == progress.ok + len(cancelled) < 20
        stats = store.stats(handle.run_id)
        assert sum(s.cancelled for s in stats) == progress.cancelled
        assert all(s.success_rate == 1.0 for s in stats if s.ok)  # cancelled cells are not failures
    finally:
        conductor.close()


# --- storage, on both databases ---------------------------------------------------------------


def scripted_conductor(tmp_path: Path, database_url: str | None, *providers: ScriptedProvider) -> Conductor:
    settings = load_settings(
        _env_file=None, local_enabled=False, data_dir=tmp_path / "data", database_url=database_url, max_retries=0
    )
    return Conductor(settings, extra_providers=list(providers))


def test_runs_are_stored_reopened_rated_rerun_and_compared(database_url, tmp_path: Path) -> None:
    fast = ScriptedProvider("fast", reply="Paris, of course")
    slow = ScriptedProvider("slow", reply="No idea", cost_per_token=None)
    conductor = scripted_conductor(tmp_path, database_url, fast, slow)
    try:
        store = ExperimentStore(conductor.log)
        dataset = read_dataset(
            '{"q": "France?", "expected": "paris"}\n{"q": "Nul \\u0000 byte", "expected": "paris"}\n{"q": "Peru?"}\n'
        )
        experiment = store.create(
            "Stored", "Capital: {{q}}", dataset, [Variant(provider="fast"), Variant(provider="slow")]
        )
        first = start_run(conductor, store, experiment.id, check="contains")
        assert first.wait(30)
        store.rate(first.run_id, 2, 1, 1)  # 👍 on "slow" for the row without an expected answer
        store.rate(first.run_id, 0, 0, -1)
        with pytest.raises(ExperimentError, match="rating is"):
            store.rate(first.run_id, 0, 0, 5)

        # Another process (a new log and store on the same database) sees all of it.
        other_log = RequestLog(database_url, data_dir=tmp_path / "data")
        try:
            other = ExperimentStore(other_log)
            assert [e.id for e in other.experiments()] == [experiment.id]
            again = other.experiment(experiment.id)
            assert again.variants == experiment.variants and again.labels == ["fast", "slow"]
            assert other.rows(experiment.id)[1][1]["q"] == "Nul \x00 byte" or database_url  # PG keeps NUL as U+2400
            grid = other.grid(first.run_id, offset=1, limit=2)
            assert [g.row for g in grid] == [1, 2] and grid[1].expected is None
            assert grid[1].cells[1].rating == 1 and grid[1].cells[1].passed is None
            stats = other.stats(first.run_id)
            assert (stats[0].thumbs_down, stats[0].avg_rating, stats[1].thumbs_up, stats[1].avg_rating) == (
                1,
                -1.0,
                1,
                1.0,
            )
            assert (stats[0].pass_rate, stats[1].pass_rate) == (1.0, 0.0)
            assert (stats[1].priced, stats[1].unpriced, stats[1].cost_usd) == (0, 3, 0.0)
        finally:
            other_log.close()

        # A re-run is run 2; the comparison is in words.
        slow.reply = "Paris!"
        second = start_run(conductor, store, experiment.id, check="contains")
        assert second.wait(30)
        assert [r.number for r in store.runs(experiment.id)] == [2, 1]
        changes = store.changes(second.run_id)
        assert changes[1].startswith("variant B (slow): pass rate 0% → 100%") and changes[1].endswith("since run 1")
        assert store.changes(first.run_id) == []
    finally:
        conductor.close()


def test_a_run_whose_process_died_shows_as_interrupted(request_log: RequestLog) -> None:
    store = ExperimentStore(request_log)
    experiment = store.create(
        "x", "{{q}}", read_dataset("q\na\n"), [Variant(provider="local"), Variant(provider="local", temperature=0)]
    )
    run = store.new_run(experiment, CheckKind.contains, {"local": 1})
    assert store.run(run.id).status == "running"
    with store.engine.begin() as conn:
        conn.execute(update(runs_table).where(runs_table.c.id == run.id).values(heartbeat_ts=time.time() - 600))
    assert store.run(run.id).status == "interrupted"


def test_statistics_in_sql_match_numpy_and_the_win_rate_definition(request_log: RequestLog) -> None:
    store = ExperimentStore(request_log)
    rows = "q,expected\n" + "".join(f"r{i},x\n" for i in range(7))
    experiment = store.create(
        "s", "{{q}}", read_dataset(rows), [Variant(provider="local"), Variant(provider="local", temperature=0)]
    )
    run = store.new_run(experiment, CheckKind.contains, {"local": 1})
    a_latency = [120.0, 80.0, 300.0, 95.5, 101.0, 250.0]
    cells = [
        Cell(
            row=i,
            variant=0,
            status="ok",
            latency_ms=ms,
            ttft_ms=ms / 2,
            cost_usd=0.001,
            passed=i % 2 == 0,
            request_id=f"req_a{i}",
        )
        for i, ms in enumerate(a_latency)
    ]
    cells.append(Cell(row=6, variant=0, status="cancelled"))
    cells += [
        Cell(row=0, variant=1, status="ok", latency_ms=50.0, passed=True, rating=-1),  # A: 2+1=3 vs B: -4+2+1=-1 -> A
        Cell(row=1, variant=1, status="ok", latency_ms=60.0, passed=False, rating=1),  # A: 1 vs B: 5 -> B
        Cell(row=2, variant=1, status="ok", latency_ms=70.0, passed=True),  # A: 3 vs B: 3 -> undecided
        Cell(row=3, variant=1, status="error", passed=False),  # A: 1 vs B: 0 -> A
        Cell(row=4, variant=1, status="incomplete", latency_ms=10.0, passed=False),  # A: 3 vs B: 0 -> A
        Cell(row=5, variant=1, status="ok", latency_ms=40.0, passed=False),  # A: 1 vs B: 1 -> undecided
        Cell(row=6, variant=1, status="ok", latency_ms=30.0, passed=True),  # A cancelled: alone, undecided
    ]
    store.write_cells(run.id, cells)
    a, b = store.stats(run.id)
    for q, field in ((0.5, "p50_latency_ms"), (0.95, "p95_latency_ms")):
        assert getattr(a, field) == pytest.approx(float(np.quantile(a_latency, q)))
    assert a.p50_ttft_ms == pytest.approx(float(np.quantile([ms / 2 for ms in a_latency], 0.5)))
    assert b.p50_latency_ms == pytest.approx(float(np.quantile([50.0, 60.0, 70.0, 40.0, 30.0], 0.5)))
    assert (a.cells, a.ok, a.cancelled, a.success_rate) == (7, 6, 1, 1.0)
    assert (b.ok, b.errors, b.incomplete, b.success_rate) == (5, 1, 1, pytest.approx(5 / 7))
    assert (a.checked, a.passed) == (6, 3) and (b.checked, b.passed) == (7, 3)
    assert a.cost_usd == pytest.approx(0.006) and a.priced == 6
    assert (b.priced, b.unpriced) == (0, 6)  # answers (an incomplete one too) with no price: unpriced
    assert (a.decided_rows, a.wins, b.wins) == (4, 3.0, 1.0)
    assert (a.win_rate, b.win_rate) == (0.75, 0.25)


def test_check_kinds() -> None:
    assert check_answer("contains", "The capital is PARIS.", " paris ")
    assert not check_answer("contains", "Lyon", "paris")
    assert check_answer("equals", "  Paris\n", "paris") and not check_answer("equals", "Paris.", "paris")
    assert check_answer("regex", "answer: 42", r"\b4\d\b") and not check_answer("regex", "Answer", "answer")
    assert check_answer(CheckKind.regex, "Answer", "(?i)answer")


def test_bad_experiments_are_refused_before_anything_is_sent(request_log: RequestLog) -> None:
    store = ExperimentStore(request_log)
    two = [Variant(provider="local"), Variant(provider="local", temperature=0)]
    rows = read_dataset("country,expected\nFrance,paris\nPeru,\n")
    with pytest.raises(ExperimentError, match="2 to 4 variants, got 1"):
        store.create("x", "{{country}}", rows, two[:1])
    with pytest.raises(ExperimentError, match="'auto'"):
        store.create("x", "{{country}}", rows, [Variant(provider="auto"), two[0]])
    with pytest.raises(TemplateError, match=r"no column for \{\{city\}\} \(columns: country, expected\)"):
        store.create("x", "{{country}} {{city}}", rows, two)
    with pytest.raises(TemplateError, match="uses no"):
        store.create("x", "no variables", rows, two)
    with pytest.raises(TemplateError, match="row 2 has no value for {{b}}"):
        store.create("x", "{{a}} {{b}}", read_dataset('{"a": 1, "b": 2}\n{"a": 3}\n'), two)
    with pytest.raises(TemplateError, match="row 2: the prompt is empty"):
        store.create("x", "{{expected}}", rows, two)
    with pytest.raises(DatasetTooLargeError):
        store.create("x", "{{country}}", rows, two, max_rows=1)
    experiment = store.create("x", "{{country}}", read_dataset("country,expected\nFrance,paris\nPeru,[unclosed\n"), two)
    with pytest.raises(CheckError, match="row 2: expected is not a valid regular expression"):
        store.new_run(experiment, CheckKind.regex, {})
    assert store.runs(experiment.id) == []


def test_a_run_is_refused_when_the_dataset_is_over_the_configured_limit(tmp_path: Path) -> None:
    provider = ScriptedProvider("p")
    settings = load_settings(_env_file=None, local_enabled=False, data_dir=tmp_path, dataset_max_rows=2)
    conductor = Conductor(settings, extra_providers=[provider])
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "x", "{{q}}", read_dataset("q\na\nb\nc\n"), [Variant(provider="p"), Variant(provider="p", temperature=0)]
        )
        with pytest.raises(DatasetTooLargeError, match="3 rows; the limit is 2"):
            start_run(conductor, store, experiment.id)
        assert provider.calls == [] and store.runs(experiment.id) == []
    finally:
        conductor.close()


def test_cells_the_database_refused_are_kept_and_written_later(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    conductor = scripted_conductor(tmp_path, None, ScriptedProvider("p", reply="fine"))
    try:
        store = ExperimentStore(conductor.log)
        experiment = store.create(
            "x",
            "{{q}}",
            read_dataset("q\n" + "".join(f"r{i}\n" for i in range(6))),
            [Variant(provider="p"), Variant(provider="p", temperature=0)],
        )
        real, refusals, errors_seen = store.write_cells, [2], []

        def flaky(run_id, cells):
            if refusals[0]:
                refusals[0] -= 1
                raise OSError("disk full")
            return real(run_id, cells)

        monkeypatch.setattr(store, "write_cells", flaky)
        handle = start_run(conductor, store, experiment.id, on_progress=lambda p: errors_seen.append(p.database_error))
        assert handle.wait(30)
        assert any(e and "disk full" in e for e in errors_seen)  # said so while it lasted
        assert handle.progress().database_error is None
        assert len(store.cells(handle.run_id)) == 12 and store.run(handle.run_id).status == "completed"
    finally:
        conductor.close()
