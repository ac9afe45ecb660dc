"""Leases (conductor_core/store/leases.py): work a live process holds, known by every process
the moment the holder dies. On SQLite (a file lock beside the database) and PostgreSQL (an
advisory lock), with real processes killed with SIGKILL (nothing of theirs runs at exit).

And what they are for: an experiment run whose process died reads `interrupted` at once,
although its heartbeat still looks fresh (it used to read "running in another server
process" for 30 s after a restart, with Re-run disabled)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from sqlalchemy import update

from conductor_core.store import RequestLog
from conductor_core.store.leases import leases_for
from conductor_core.workbench.datasets import read_dataset
from conductor_core.workbench.experiments import CheckKind, ExperimentStore, runs_table
from conductor_core.workbench.variants import Variant

ROOT = Path(__file__).resolve().parent.parent

pytestmark = pytest.mark.timeout(120)


class Holder:
    """Another process that runs `code` (with `log`, a RequestLog on the same database), prints
    one line, then waits until it is killed."""

    def __init__(self, url: str | None, data_dir: Path, code: str) -> None:
        script = (
            textwrap.dedent(
                f"""
            import sys
            from conductor_core.store import RequestLog
            log = RequestLog({url!r}, data_dir={str(data_dir)!r})
            """
            )
            + textwrap.dedent(code)
            + "\nprint(said, flush=True)\nsys.stdin.read()\n"
        )
        self.process = subprocess.Popen(
            [sys.executable, "-c", script],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self.said = self.process.stdout.readline().strip()
        assert self.said, f"the holder process said nothing (exit {self.process.poll()})"

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def close(self) -> None:
        if self.process.poll() is None:
            self.kill()


def eventually(check, what: str, timeout_s: float = 10.0) -> None:
    """PostgreSQL ends a dead client's session a moment after the kernel closes its socket."""
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)


def test_a_lease_is_seen_by_its_own_process_until_released(request_log: RequestLog) -> None:
    leases = leases_for(request_log.engine)
    assert not leases.held("job:1")
    with leases.hold("job:1"):
        assert leases.held("job:1") and not leases.held("job:2")
    assert not leases.held("job:1")
    lease = leases.hold("job:1")
    lease.release()
    lease.release()  # twice is once
    assert not leases.held("job:1")


def test_another_process_s_lease_is_held_while_it_lives_and_free_once_it_is_killed(
    request_log: RequestLog,
    database_url: str | None,
    tmp_path: Path,
) -> None:
    holder = Holder(
        database_url,
        tmp_path / "data",
        """
        from conductor_core.store.leases import leases_for
        lease = leases_for(log.engine).hold("job:elsewhere")
        said = "holding"
        """,
    )
    try:
        leases = leases_for(request_log.engine)
        assert holder.said == "holding" and leases.held("job:elsewhere")
        holder.kill()
        eventually(lambda: not leases.held("job:elsewhere"), "the dead process's lease let go")
        with leases.hold("job:elsewhere"):  # and it can be taken again
            assert leases.held("job:elsewhere")
    finally:
        holder.close()


def test_a_run_whose_process_is_killed_reads_interrupted_at_once(
    request_log: RequestLog,
    database_url: str | None,
    tmp_path: Path,
) -> None:
    store = ExperimentStore(request_log)
    experiment = store.create("x", "{{q}}", read_dataset("q\na\n"), [Variant(provider="local")] * 2)
    holder = Holder(
        database_url,
        tmp_path / "data",
        f"""
        from conductor_core.workbench.experiments import CheckKind, ExperimentStore
        store = ExperimentStore(log)
        said = store.new_run(store.experiment({experiment.id!r}), CheckKind.contains, {{"local": 1}}).id
        """,
    )
    try:
        run_id = holder.said
        # Its heartbeat looks alive for an hour: only the lease can say the process is gone.
        with store.engine.begin() as conn:
            conn.execute(update(runs_table).where(runs_table.c.id == run_id).values(heartbeat_ts=time.time() + 3600))
        assert store.run(run_id).status == "running"  # another live process runs it
        holder.kill()
        eventually(lambda: store.run(run_id).status == "interrupted", "the killed run read as interrupted")
        assert [r.status for r in store.runs(experiment.id)] == ["interrupted"]
    finally:
        holder.close()


def test_a_run_this_process_started_reads_running_until_it_is_finished(request_log: RequestLog) -> None:
    store = ExperimentStore(request_log)
    experiment = store.create("x", "{{q}}", read_dataset("q\na\n"), [Variant(provider="local")] * 2)
    run = store.new_run(experiment, CheckKind.contains, {"local": 1})
    assert store.run(run.id).status == "running"
    store.finish_run(run.id, "completed")
    assert store.run(run.id).status == "completed"
    assert not store.leases.held(f"experiment-run:{run.id}")


def test_on_postgresql_the_lease_connection_is_open_only_while_a_lease_is_held(tmp_path: Path) -> None:
    """Other tests (and other people) share the database: the holder is found by its lock, not counted."""
    from sqlalchemy import text

    from conductor_core.store.leases import _advisory_key
    from tests.store_backends import postgres_schema

    def holder(log: RequestLog, name: str) -> int | None:
        key = _advisory_key(name) & 0xFFFFFFFFFFFFFFFF  # pg_locks shows a bigint key as two oids
        query = (
            "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND classid = :high AND objid = :low "
            "AND objsubid = 1 AND granted"
        )
        with log.engine.connect() as conn:
            return conn.execute(text(query), {"high": key >> 32, "low": key & 0xFFFFFFFF}).scalar()

    def alive(log: RequestLog, pid: int) -> bool:
        with log.engine.connect() as conn:
            return bool(
                conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE pid = :pid"), {"pid": pid}).scalar()
            )

    with postgres_schema() as url:
        log = RequestLog(url, data_dir=tmp_path / "data")
        try:
            leases = leases_for(log.engine)
            with leases.hold("job:a"), leases.hold("job:b"):
                pid = holder(log, "job:a")
                assert pid is not None and holder(log, "job:b") == pid  # one connection for every lease
            assert holder(log, "job:a") is None
            eventually(lambda: not alive(log, pid), "the lease connection closed")
        finally:
            log.close()
