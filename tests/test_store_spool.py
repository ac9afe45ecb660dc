"""The request log loses nothing: `submit()` spools each attempt to disk before it returns,
`kill -9` keeps it, the next process replays it exactly once, several processes share the
takeover, torn lines are skipped and counted, and a database that goes down and comes back
gets every attempt that waited. On SQLite and PostgreSQL (see tests/store_backends.py).

Processes are really killed (SIGKILL from inside, right after the step under test), and the
database is really made unreachable: a TCP proxy in front of PostgreSQL that stops
forwarding, a SQLite file whose folder disappears."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import MetaData, create_engine, text
from sqlalchemy.engine import make_url

from conductor_core.config import register_secret
from conductor_core.models import AttemptRecord, Vote
from conductor_core.store import RequestLog, spool
from conductor_core.store import writer as writer_module
from tests.store_backends import REPO_ROOT, T0, Backend, make_record

# A process that opens the log, submits attempts and dies by SIGKILL: no atexit, no flush,
# no close, exactly like `kill -9` from outside. MODE "before": the writer never commits
# (it lingers an hour). MODE "after": the writer commits the batch, and the process dies
# between the commit and giving the spool's bytes back. MODE "wait": the process lives until
# its stdin closes, then exits normally (it looks for orphans only when it starts).
_SUBMITTER = r"""
import json, os, signal, sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from conductor_core.models import AttemptRecord
from conductor_core.store import RequestLog
from conductor_core.store import spool as spool_module

url, data_dir, tag, n, mode = sys.argv[1] or None, Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5]
log = RequestLog(url, data_dir=data_dir)
t0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
log.linger_s = 3600.0  # nothing is committed unless flushed
if mode == "wait":
    import conductor_core.store.writer as writer_module
    writer_module.RESCAN_S = 3600.0  # looks for orphans when it starts, not again during the test
if mode == "after":
    def consume_then_die(self, batch):
        os.kill(os.getpid(), signal.SIGKILL)
    spool_module.Spool.consume = consume_then_die
for i in range(n):
    log.submit(AttemptRecord(
        id=f"att_{tag}_{i:04d}", request_id=f"req_{tag}_{i}", provider=("alpha", "beta")[i % 2], status="ok",
        created_at=t0 + timedelta(seconds=7 * i), latency_ms=10.0 + i, input_tokens=i, output_tokens=2 * i,
        prompt=f"user: prompt {tag} {i}", answer="an answer",
    ))
if mode == "after":
    log.flush(timeout=60)  # one batch: committed, then the process dies before the spool is told
    sys.exit("the commit did not happen")
if mode == "wait":
    print("ready", flush=True)
    sys.stdin.read()
    sys.exit(0)
os.kill(os.getpid(), signal.SIGKILL)
"""


def _run_submitter(backend: Backend, tag: str, n: int, mode: str = "before", **popen: Any) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", _SUBMITTER, backend.url or "", str(backend.data_dir), tag, str(n), mode],
        env=env,
        text=True,
        **popen,
    )


def _killed_submitter(backend: Backend, tag: str, n: int, mode: str = "before") -> None:
    proc = _run_submitter(backend, tag, n, mode, stderr=subprocess.PIPE)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGKILL, err


def _spool_files(backend: Backend) -> list[Path]:
    return sorted((backend.data_dir / "spool").glob("*/*.spool"))


def _ids(tag: str, n: int) -> set[str]:
    return {f"att_{tag}_{i:04d}" for i in range(n)}


def _rollup_rows(backend: Backend) -> list[tuple[Any, ...]]:
    return sorted(
        tuple(round(float(v), 6) if isinstance(v, float) else v for v in row)
        for row in backend.raw_rows("attempt_rollups")
    )


# --- kill -9 ----------------------------------------------------------------------------------


def test_submitted_attempts_survive_kill_9_and_are_replayed_on_open(backend: Backend) -> None:
    _killed_submitter(backend, "k9", 50)
    files = _spool_files(backend)
    assert len(files) == 1 and files[0].read_bytes().count(b"\n") == 50  # on disk before submit() returned
    log = backend.make()
    assert {r.id for r in log.records()} == _ids("k9", 50)  # the first read takes the orphan over
    health = log.health()
    assert (health.recovered, health.written, health.pending, health.corrupt_lines) == (50, 50, 0, 0)
    assert _spool_files(backend) == []  # committed, so deleted
    assert log.provider_totals()["alpha"].total_requests == 25
    assert (files[0].parent / "DATABASE").read_text().strip() == log.url  # which database, no password


def test_a_spool_orphaned_while_this_process_runs_is_taken_over_by_the_rescan(
    backend: Backend,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not only at start: a process that dies while this one runs leaves a spool that this
    one's periodic rescan takes over (every RESCAN_S, short here), with no new open and no
    read to prompt it."""
    monkeypatch.setattr(writer_module, "RESCAN_S", 0.2)
    log = backend.make()
    assert log.count() == 0  # the writer has started, and made its first look for orphans
    _killed_submitter(backend, "late", 20)
    assert len(_spool_files(backend)) == 1
    deadline = time.monotonic() + 60
    while log.health().recovered < 20:  # health() reads counters only: it prompts nothing
        assert time.monotonic() < deadline, "the orphaned spool was not taken over by a rescan"
        time.sleep(0.05)
    assert {r.id for r in log.records()} == _ids("late", 20)
    assert log.health().recovered == 20 and _spool_files(backend) == []


def test_a_batch_committed_just_before_the_kill_counts_once(backend: Backend) -> None:
    _killed_submitter(backend, "dup", 40, mode="after")
    assert len(backend.raw_rows("attempts")) == 40  # the commit happened...
    assert sum(1 for f in _spool_files(backend) for _ in f.read_bytes().splitlines()) == 40  # ...the spool kept them
    committed = _rollup_rows(backend)
    log = backend.make()
    assert log.count() == 40
    assert sum(usage.total_requests for usage in log.provider_totals().values()) == 40  # rollups not doubled
    assert log.health().recovered == 40 and log.health().written == 0
    assert _rollup_rows(backend) == committed
    log.rebuild_rollups()
    assert _rollup_rows(backend) == committed
    assert _spool_files(backend) == []


def test_processes_share_the_takeover_of_orphaned_spools(backend: Backend) -> None:
    """Three processes died with attempts in their spools and one is alive with its own:
    four processes opening the log at once take every orphan over, each attempt lands once,
    and nobody touches the living process's spool."""
    alive = _run_submitter(backend, "live", 10, mode="wait", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert alive.stdout is not None and alive.stdout.readline().strip() == "ready"
        for tag in ("o1", "o2", "o3"):
            _killed_submitter(backend, tag, 30)
        assert len(_spool_files(backend)) == 4
        script = (
            "import sys\nfrom pathlib import Path\nfrom conductor_core.store import RequestLog\n"
            "log = RequestLog(sys.argv[1] or None, data_dir=Path(sys.argv[2]))\n"
            "ok = any(log.flush(timeout=30) for _ in range(4))  # False is 'not yet' (a deadlock retried later)\n"
            "print(log.health().recovered)\n"
            "print(log.health(), file=sys.stderr)\n"
            "log.close()\n"
            "sys.exit(0 if ok else 1)\n"
        )
        env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
        takers = [
            subprocess.Popen(
                [sys.executable, "-c", script, backend.url or "", str(backend.data_dir)],
                env=env,
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(4)
        ]
        outputs = [taker.communicate(timeout=120)[0] for taker in takers]
        assert [taker.returncode for taker in takers] == [0] * 4, outputs
        assert sum(int(out.strip()) for out in outputs) == 90  # every orphan taken over exactly once
        reader = backend.make()
        assert {r.id for r in reader.records()} == _ids("o1", 30) | _ids("o2", 30) | _ids("o3", 30)
        assert sum(usage.total_requests for usage in reader.provider_totals().values()) == 90
        remaining = _spool_files(backend)
        assert len(remaining) == 1 and remaining[0].name.startswith(f"{alive.pid}-")  # the living one's
    finally:
        alive.communicate(input="", timeout=60)  # its stdin closes: it exits normally
    assert alive.returncode == 0
    # At exit the living process wrote its attempts and gave its spool back.
    assert reader.count() == 100 and _spool_files(backend) == []


def test_a_torn_last_line_is_skipped_and_counted(backend: Backend) -> None:
    _killed_submitter(backend, "torn", 20)
    (path,) = _spool_files(backend)
    data = path.read_bytes()
    last = data.rstrip(b"\n").rfind(b"\n") + 1
    path.write_bytes(data[: last + (len(data) - last) // 2])  # a kill in the middle of the last append
    log = backend.make()
    assert log.flush() is True  # not fatal
    assert {r.id for r in log.records()} == _ids("torn", 19)
    assert log.health().corrupt_lines == 1 and log.write_errors == 0
    assert _spool_files(backend) == []


def test_a_zero_filled_block_from_a_power_cut_is_read_around(backend: Backend) -> None:
    _killed_submitter(backend, "zero", 6)
    (path,) = _spool_files(backend)
    lines = path.read_bytes().splitlines(keepends=True)
    # Delayed allocation can leave a block of zeros where lines were not written back yet,
    # glued to the line after it.
    path.write_bytes(b"".join(lines[:2]) + lines[2][:40] + b"\x00" * 4096 + b"".join(lines[3:]))
    log = backend.make()
    assert {r.id for r in log.records()} == _ids("zero", 6) - {"att_zero_0002"}
    assert log.health().corrupt_lines == 1


def test_spooled_text_is_redacted_and_respects_log_prompts(backend: Backend) -> None:
    canary = "sk-wp02om_zzdEaQi51EhZG0ohl"
    register_secret(canary)
    log = backend.make(log_prompts=False)
    log.linger_s = 3600.0
    log.submit(make_record(error_message=f"bad key {canary}", prompt="the secret plan", answer="the answer"))
    (path,) = _spool_files(backend)
    spooled = path.read_bytes()
    assert canary.encode() not in spooled and b"[REDACTED]" in spooled  # before any commit
    assert b"the secret plan" not in spooled and b"the answer" not in spooled
    assert log.flush()
    assert canary not in (log.records()[0].error_message or "")


def test_the_spool_gives_its_bytes_back(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(spool, "ROTATE_BYTES", 4096)  # a few attempts a file, so files rotate under load
    log = backend.make()
    log.linger_s = 0.01

    def submit(n: int) -> None:
        for i in range(150):
            log.submit(make_record(provider=f"p{n}", created_at=T0 + timedelta(seconds=i)))

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert log.flush()
    assert log.count() == 600 and log.write_errors == 0
    files = _spool_files(backend)
    assert len(files) <= 1 and all(f.stat().st_size == 0 for f in files)  # truncated once committed
    log.close()
    assert _spool_files(backend) == []  # and deleted at close


# --- any text ----------------------------------------------------------------------------------


def test_nul_bytes_and_lone_surrogates_are_stored(backend: Backend) -> None:
    log = backend.make()
    nul = "nul\u0000byte"
    fields = {
        name: nul
        for name in ("request_id", "model", "group_id", "source", "error_type", "error_message", "prompt", "answer")
    }
    spooled = make_record(id="att_nul_submit", provider="prov\u0000ider", **fields)
    direct = make_record(id="att_nul_write", **fields)
    surrogate = make_record(id="att_surrogate", prompt="half \ud83d of an emoji", answer="pair \ud83d\ude00 joined")
    log.submit(spooled)
    log.submit(surrogate)
    assert log.write(direct)
    assert log.write_vote(Vote(group_id=nul, targets=[nul, "b"], winner=nul))
    assert log.flush() and log.write_errors == 0, log.last_write_error
    stored = {r.id: r for r in log.records()}
    assert set(stored) == {"att_nul_submit", "att_nul_write", "att_surrogate"}
    kept = "nul\u2400byte" if backend.name == "postgresql" else nul  # PostgreSQL cannot hold NUL
    for record in (stored["att_nul_submit"], stored["att_nul_write"]):
        assert {name: getattr(record, name) for name in fields} == {name: kept for name in fields}
    assert stored["att_nul_submit"].provider == ("prov\u2400ider" if backend.name == "postgresql" else "prov\u0000ider")
    assert stored["att_surrogate"].prompt == "half \ufffd of an emoji"
    assert stored["att_surrogate"].answer == "pair \U0001f600 joined"
    assert log.votes()[0].winner == kept
    # Filters go through the same encoding, so the value that was sent finds its rows.
    assert log.count(provider="prov\u0000ider") == 1
    assert log.health().rejected == 0


def test_a_row_the_database_refuses_is_set_aside_and_does_not_block_the_rest(backend: Backend) -> None:
    log = backend.make()
    log.linger_s = 3600.0
    log.submit(make_record(id="att_fine_1"))
    log.submit(make_record(id="att_too_big", input_tokens=2**70))  # no INTEGER column holds it
    log.submit(make_record(id="att_fine_2"))
    assert log.flush()
    assert {r.id for r in log.records()} == {"att_fine_1", "att_fine_2"}
    health = log.health()
    assert (health.rejected, health.write_errors, health.pending) == (1, 1, 0)
    rejected = (Path(health.spool_dir or "") / "rejected.jsonl").read_text().splitlines()
    assert [AttemptRecord.model_validate_json(line).id for line in rejected] == ["att_too_big"]


# --- the database goes down and comes back -----------------------------------------------


class _TcpProxy:
    """A loopback TCP forwarder that can stop forwarding: the database "goes down" for
    whoever talks through it (connections cut, new ones refused) and "comes back"."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.up = True
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def down(self) -> None:
        self.up = False
        with self._lock:
            for sock in self._open:
                try:
                    sock.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
            self._open.clear()

    def close(self) -> None:
        self.down()
        self.server.close()


@dataclass
class Outage:
    """A log whose database can be taken away (`down`) and given back (`back`)."""

    log: RequestLog
    url: str
    down: Callable[[], None]
    back: Callable[[], None]


@pytest.fixture
def outage(backend: Backend, tmp_path: Path) -> Iterator[Outage]:
    if backend.name == "postgresql":
        assert backend.url
        real = make_url(backend.url)
        proxy = _TcpProxy((real.host or "127.0.0.1", real.port or 5432))
        url = real.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
        log = RequestLog(url, data_dir=backend.data_dir)
        backend.opened.append(log)
        try:
            yield Outage(log, url, proxy.down, lambda: setattr(proxy, "up", True))
        finally:
            proxy.close()
        return
    # SQLite: the database's folder goes away (an unmounted volume; a file sits where it
    # was, so nothing can create it again) and comes back with its file.
    volume, away = tmp_path / "volume", tmp_path / "volume.away"
    url = f"sqlite:///{volume / 'conductor.db'}"
    log = RequestLog(url, data_dir=backend.data_dir)
    backend.opened.append(log)

    def down() -> None:
        log._db.engine.dispose()
        if volume.exists():
            volume.rename(away)
        volume.write_text("not a folder")

    def back() -> None:
        volume.unlink()
        if away.exists():
            away.rename(volume)

    yield Outage(log, url, down, back)


def test_the_database_down_then_back(outage: Outage) -> None:
    log = outage.log
    assert log.write(make_record(id="att_before"))
    outage.down()
    for i in range(5):
        log.submit(make_record(id=f"att_down_{i}"))
    assert log.flush(timeout=60) is False  # tried, and could not
    health = log.health()
    assert (health.pending, health.write_errors, health.database_ok, health.written) == (5, 5, False, 0)
    assert health.last_error and health.last_error_at and "conductor:conductor" not in health.last_error
    for i in range(3):
        log.submit(make_record(id=f"att_later_{i}"))
    assert log.flush(timeout=60) is False
    assert log.health().write_errors == 8  # each attempt counted once, however often retried
    outage.back()
    assert log.flush(timeout=60) is True
    expected = {f"att_down_{i}" for i in range(5)} | {f"att_later_{i}" for i in range(3)}
    assert {r.id for r in log.records()} == expected | {"att_before"}
    health = log.health()
    assert (health.pending, health.write_errors, health.database_ok, health.written) == (0, 8, True, 8)
    assert sum(usage.total_requests for usage in log.provider_totals().values()) == 9


def test_attempts_left_at_close_while_down_are_written_by_the_next_process(outage: Outage, backend: Backend) -> None:
    outage.down()  # before the first use: not even the tables can be created
    for i in range(4):
        outage.log.submit(make_record(id=f"att_left_{i}"))
    outage.log.close()  # one more try, then the spool is left for whoever opens the log next
    assert len(_spool_files(backend)) == 1
    outage.back()
    reopened = RequestLog(outage.url, data_dir=backend.data_dir)
    backend.opened.append(reopened)
    assert {r.id for r in reopened.records()} == {f"att_left_{i}" for i in range(4)}
    assert reopened.health().recovered == 4 and _spool_files(backend) == []


def test_a_table_dropped_by_hand_is_a_schema_mismatch_set_aside_not_an_outage(backend: Backend) -> None:
    """The database is up but lacks a table the migrations made: retrying would never end
    (SQLite reports it as an OperationalError, like an outage). The rows are set aside, and
    health() says why."""
    log = backend.make()
    assert log.write(make_record(id="att_first"))
    engine = create_engine(backend.sqlalchemy_url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE attempts"))
    engine.dispose()
    for i in range(3):
        log.submit(make_record(id=f"att_after_drop_{i}"))
    assert log.flush(timeout=60) is True  # nothing left waiting: set aside, not retried for ever
    health = log.health()
    assert (health.pending, health.rejected, health.database_ok) == (0, 3, True)
    assert health.schema_error and "attempts" in health.schema_error
    assert "python -m conductor_core.store check" in health.schema_error  # what to run
    rejected = (Path(health.spool_dir or "") / "rejected.jsonl").read_text()
    assert all(f"att_after_drop_{i}" in rejected for i in range(3))


def test_a_database_emptied_under_a_running_process_is_migrated_again(backend: Backend) -> None:
    """Every table gone, the version table too (a schema dropped and created again): the next
    write finds an empty database and the migrations build it afresh."""
    log = backend.make()
    assert log.write(make_record(id="att_first"))
    engine = create_engine(backend.sqlalchemy_url)
    everything = MetaData()
    everything.reflect(engine)
    assert "alembic_version" in everything.tables
    if engine.dialect.name == "postgresql":
        # Literally so: the job queue's functions and types (migration 0012) depend on its tables,
        # and go with the schema.
        with engine.begin() as conn:
            schema = conn.execute(text("SELECT current_schema()")).scalar_one()
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    else:
        everything.drop_all(engine)
    engine.dispose()
    log.submit(make_record(id="att_after_drop"))
    assert log.flush() is True
    assert [r.id for r in log.records()] == ["att_after_drop"]
    assert log.health().rejected == 0 and log.write_errors == 0 and log.health().schema_error is None


def test_submit_after_close_is_counted(backend: Backend) -> None:
    log = backend.make()
    log.close()
    log.submit(make_record())
    assert log.write_errors == 1 and "closed" in (log.last_write_error or "")


def test_a_log_without_a_usable_spool_still_writes(backend: Backend, tmp_path: Path) -> None:
    """The data dir is unusable for the spool (a file is in the way): attempts are kept in
    memory, written all the same, and the trouble is counted."""
    if backend.name == "sqlite":
        db = tmp_path / "db" / "conductor.db"
        url = f"sqlite:///{db}"
        db.parent.mkdir()
    else:
        assert backend.url
        url = backend.url
    blocked = tmp_path / "blocked"
    blocked.write_text("a file where the data directory should be")
    log = RequestLog(url, data_dir=blocked)
    backend.opened.append(log)
    for i in range(3):
        log.submit(make_record(id=f"att_mem_{i}"))
    assert log.health().in_memory == 3 and log.health().spool_errors >= 1
    assert log.flush() and log.count() == 3
    assert log.health().in_memory == 0


def test_a_busy_spool_rotates_and_deletes_what_is_committed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Under steady load the file in use never empties: once large it is sealed, a new one
    takes the appends, and the sealed one is deleted as soon as it is read to its end."""
    monkeypatch.setattr(spool, "ROTATE_BYTES", 100)
    box = spool.Spool(tmp_path, database_label="test")
    line = b'{"attempt": "' + b"x" * 16 + b'"}\n'  # 30 bytes
    for _ in range(4):
        assert box.append(line)
    (first,) = tmp_path.glob("*.spool")
    box.consume(box.read(2))
    box.rotate_if_large()  # 120 bytes, half committed: sealed
    assert box.append(line)
    assert len(list(tmp_path.glob("*.spool"))) == 2 and box.pending == 3
    rest = box.read(10)
    assert rest is not None and len(rest.lines) == 2  # the sealed file's last two
    box.consume(rest)
    assert not first.exists()
    (second,) = tmp_path.glob("*.spool")
    last = box.read(10)
    assert last is not None and len(last.lines) == 1
    box.consume(last)
    assert second.stat().st_size == 0 and box.pending == 0 and box.read(10) is None  # emptied in place
    box.release()
    assert list(tmp_path.glob("*.spool")) == []


def test_every_field_round_trips_through_the_spool(backend: Backend) -> None:
    from tests.store_backends import full_record

    log = backend.make()
    log.submit(full_record())
    assert log.flush()
    assert log.records() == [full_record()]


def test_a_forked_child_writes_through_a_spool_of_its_own(backend: Backend) -> None:
    """A server that forks its workers after the log was used (gunicorn --preload): the
    child must not append to, commit from, or truncate the parent's spool."""
    log = backend.make()
    log.linger_s = 3600.0
    log.submit(make_record(id="att_parent_before"))
    pid = os.fork()
    if pid == 0:  # the child: exit without running the parent's test machinery
        code = 1
        try:
            log.submit(make_record(id="att_child"))
            code = 0 if log.flush(timeout=60) and log.health().pending == 0 else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    log.submit(make_record(id="att_parent_after"))
    assert log.health().pending == 2  # the child committed only its own
    assert log.flush()
    assert {r.id for r in log.records()} == {"att_parent_before", "att_child", "att_parent_after"}
