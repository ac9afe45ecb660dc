"""Stopping a blind round, and closing one its server left behind (conductor_core/workbench/arena.py).

Two OpenAI-compatible loopback endpoints (the real openai SDK over HTTP): `quick` answers,
`stuck` hangs until released, so a round can only end by Stop. Stop from the process that
answers the round and from another (a second `Arena` on the same database: the answering
one learns it from the row); either way the stuck call is cancelled at the upstream, logged
as cancelled, and the round is closed, never left pending. On SQLite and PostgreSQL.
"""

from __future__ import annotations

import threading
import time

import pytest

from conductor_core.config import EndpointConfig, load_settings
from conductor_core.router import Conductor
from conductor_core.store import RequestLog
from conductor_core.testing.protocol_servers import Fault, OpenAIServer
from conductor_core.workbench.arena import Arena, ArenaError
from conductor_core.workbench.variants import Variant

pytestmark = pytest.mark.timeout(120)

QUICK = "The quick endpoint answers."


@pytest.fixture
def endpoints():
    servers = {
        "quick": OpenAIServer(reply=QUICK, models=["quick-1"]).start(),
        "stuck": OpenAIServer(reply="Too late.", models=["stuck-1"]).start(),
    }
    servers["stuck"].script(Fault("hang", hang_s=600))
    yield servers
    for server in servers.values():
        server.release()
        server.stop()


@pytest.fixture
def conductor(endpoints, database_url, tmp_path):
    settings = load_settings(
        _env_file=None,
        local_enabled=False,
        data_dir=tmp_path / "data",
        database_url=database_url,
        max_retries=0,
        timeout_s=300,  # only a Stop ends the hang
        endpoints={n: EndpointConfig(base_url=s.url, models=[f"{n}-1"]) for n, s in endpoints.items()},
    )
    made = Conductor(settings)
    yield made
    made.close()


def wait_for(check, what: str, timeout_s: float = 60.0):
    deadline = time.monotonic() + timeout_s
    while not (found := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout_s:g} s"
        time.sleep(0.05)
    return found


class Answering:
    """`arena.answers()` read on a thread of its own, as the playground's BlindRounds reads it."""

    def __init__(self, arena: Arena, conductor: Conductor, match_id: str) -> None:
        self.events: list = []
        lease = arena.claim(match_id)
        self.thread = threading.Thread(
            target=lambda: self.events.extend(arena.answers(conductor, match_id, lease=lease)), daemon=True
        )
        self.thread.start()

    def ended(self) -> bool:
        return not self.thread.is_alive()


def start(arena: Arena) -> str:
    return arena.start(
        "Who answers?", [Variant(provider="quick", model="quick-1"), Variant(provider="stuck", model="stuck-1")]
    ).id


def states(arena: Arena, match_id: str) -> list[str]:
    return sorted(a.state for a in arena.blind_answers(match_id))


def stopped_cleanly(arena: Arena, conductor: Conductor, endpoints, match_id: str) -> None:
    """The stuck answer is closed as cancelled, its call cancelled at the upstream and logged so."""
    assert states(arena, match_id) == ["ok", "stopped"] and arena.finished(match_id)
    assert not arena.answering(match_id)  # the round's lease is let go once every answer is stored
    wait_for(lambda: endpoints["stuck"].in_flight == 0, "the stuck call cancelled at the upstream")
    assert all(r.get("disconnected") for r in endpoints["stuck"].requests)
    [stuck] = [a for a in arena.unjudgeable(match_id) if a.target.startswith("stuck")]
    assert (stuck.status, stuck.error_type, stuck.judged) == ("cancelled", "cancelled", False)
    [logged] = wait_for(lambda: conductor.log.records(request_id=stuck.request_id), "the stuck attempt logged")
    assert (logged.provider, logged.status, logged.error_type) == ("stuck", "error", "cancelled")
    with pytest.raises(ArenaError, match="fewer than two answers"):
        arena.vote(match_id, "A")


def test_stop_ends_a_round_whose_contestant_hangs(conductor, endpoints):
    arena = Arena(conductor.log)
    match_id = start(arena)
    answering = Answering(arena, conductor, match_id)
    wait_for(lambda: states(arena, match_id) == ["ok", "pending"], "the quick answer stored")
    assert arena.answering(match_id)
    assert arena.stop(match_id)
    wait_for(answering.ended, "the round's answers ended")
    stopped_cleanly(arena, conductor, endpoints, match_id)
    assert not arena.stop(match_id)  # nothing left to stop


def test_stop_from_another_process_reaches_the_one_answering(conductor, endpoints, database_url, tmp_path):
    arena = Arena(conductor.log)
    match_id = start(arena)
    answering = Answering(arena, conductor, match_id)
    wait_for(lambda: states(arena, match_id) == ["ok", "pending"], "the quick answer stored")
    other_log = RequestLog(database_url, data_dir=tmp_path / "data")  # another replica's view of the database
    try:
        other = Arena(other_log)
        assert other.answering(match_id) and not other.close_if_abandoned(match_id)
        assert other.stop(match_id)
        assert sorted(a.state for a in other.blind_answers(match_id)) == ["ok", "stopped"]  # closed at once
    finally:
        other_log.close()
    wait_for(answering.ended, "the answering process saw the Stop")
    stopped_cleanly(arena, conductor, endpoints, match_id)


def test_a_round_nobody_answers_is_closed_not_left_pending(conductor):
    arena = Arena(conductor.log)
    match_id = start(arena)
    with arena.claim(match_id):  # a live process is on it: not abandoned
        assert not arena.close_if_abandoned(match_id)
        assert states(arena, match_id) == ["pending", "pending"]
    assert arena.close_if_abandoned(match_id)  # its server is gone
    assert states(arena, match_id) == ["stopped", "stopped"] and arena.finished(match_id)
    assert {a.error_type for a in arena.unjudgeable(match_id)} == {"interrupted"}
    assert not arena.close_if_abandoned(match_id)
    with pytest.raises(ArenaError, match="already been answered"):
        list(arena.answers(conductor, match_id))
