"""People (conductor_core/team): password accounts, workspaces and roles, and private sessions,
on SQLite and PostgreSQL; and the `python -m conductor_core.team` command."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from sqlalchemy import select

from conductor_core.store import RequestLog
from conductor_core.team import (
    DEFAULT_WORKSPACE_ID,
    LOCAL,
    LOCAL_USER_ID,
    Person,
    TeamStore,
)
from conductor_core.team.store import users_table
from conductor_core.workbench.sessions import SessionStore
from conductor_core.workbench.variants import Variant
from tests.store_backends import REPO_ROOT, postgres_schema

pytestmark = pytest.mark.timeout(120)

CHAT = Variant(provider="local", model="gemma-3-270m")
# The cheapest argon2 parameters: these tests check what is stored and compared, not the cost.
FAST = PasswordHasher(time_cost=1, memory_cost=8, parallelism=1)


@pytest.fixture(params=["sqlite", "postgresql"])
def log(request, tmp_path) -> Iterator[RequestLog]:
    if request.param == "sqlite":
        opened = RequestLog(None, data_dir=tmp_path / "data")
        yield opened
        opened.close()
        return
    with postgres_schema() as url:
        opened = RequestLog(url, data_dir=tmp_path / "data")
        yield opened
        opened.close()


@pytest.fixture
def team(log) -> TeamStore:
    return TeamStore(log, hasher=FAST)


def test_a_new_database_has_the_local_user_as_owner_of_default(team):
    (membership,) = team.memberships(LOCAL_USER_ID)
    assert (membership.workspace.id, membership.workspace.name, membership.role) == (
        DEFAULT_WORKSPACE_ID,
        "Default",
        "owner",
    )
    assert team.user("local").id == LOCAL_USER_ID and not team.user("local").has_password


def test_a_password_is_stored_as_an_argon2_hash_and_checked(team, log):
    made = team.add_user(" Ana@Example.com ", name="Ana", password="correct horse 42")
    assert made.email == "ana@example.com" and made.has_password
    with log.engine.connect() as conn:
        stored = conn.execute(select(users_table.c.password_hash).where(users_table.c.id == made.id)).scalar_one()
    assert stored.startswith("$argon2id$") and "correct horse" not in stored
    assert team.check_password("ANA@example.com", "correct horse 42").id == made.id
    assert team.check_password("ana@example.com", "correct horse 43") is None
    assert team.check_password("nobody@example.com", "correct horse 42") is None
    assert team.check_password("local", "") is None  # the local user has no password to sign in with
    team.set_password("ana@example.com", "battery staple 7")
    assert team.check_password("ana@example.com", "correct horse 42") is None
    assert team.check_password("ana@example.com", "battery staple 7").id == made.id


def test_bad_accounts_are_refused_with_what_to_change(team):
    team.add_user("ana@example.com", password="correct horse 42")
    with pytest.raises(ValueError, match="has an account already"):
        team.add_user("ANA@example.com", password="another one 42")
    with pytest.raises(ValueError, match="not an email address"):
        team.add_user("ana", password="correct horse 42")
    with pytest.raises(ValueError, match="at least 8 characters"):
        team.add_user("bo@example.com", password="short")
    with pytest.raises(ValueError, match="not one of owner, member, viewer"):
        team.set_role(team.user("ana@example.com").id, DEFAULT_WORKSPACE_ID, "admin")
    with pytest.raises(ValueError, match="has no account"):
        team.set_password("nobody@example.com", "correct horse 42")


def test_a_hash_made_with_older_parameters_is_upgraded_on_sign_in(log):
    TeamStore(log, hasher=FAST).add_user("ana@example.com", password="correct horse 42")
    stronger = PasswordHasher(time_cost=2, memory_cost=16, parallelism=1)
    assert TeamStore(log, hasher=stronger).check_password("ana@example.com", "correct horse 42") is not None
    with log.engine.connect() as conn:
        stored = conn.execute(select(users_table.c.password_hash)).scalars().all()
    assert any("m=16,t=2" in h for h in stored if h)


def test_an_identity_provider_sign_in_makes_a_member_of_default_once(team):
    first = team.signed_in("Cy@Example.com", "Cy")
    again = team.signed_in("cy@example.com")
    assert first.id == again.id and not first.has_password
    person = team.person(first)
    assert person == Person(first.id, "cy@example.com", DEFAULT_WORKSPACE_ID, "member", "Cy")


def test_roles_per_workspace_and_a_person_in_each(team):
    ana = team.add_user("ana@example.com", password="correct horse 42")
    research = team.add_workspace("Research")
    team.set_role(ana.id, research.id, "viewer")
    team.set_role(ana.id, DEFAULT_WORKSPACE_ID, "member")
    assert [(m.workspace.name, m.role) for m in team.memberships(ana.id)] == [
        ("Default", "member"),
        ("Research", "viewer"),
    ]
    team.set_role(ana.id, research.id, "owner")  # a change, not a second membership
    assert team.person(ana, research.id).role == "owner"
    assert team.person(ana, "wsp_elsewhere") is None
    assert [(u.email, role) for u, role in team.members(research.id)] == [("ana@example.com", "owner")]
    with pytest.raises(ValueError, match="named 'Research' already"):
        team.add_workspace(" Research ")


def test_sessions_are_private_to_their_author_until_shared(log):
    sessions = SessionStore.for_log(log)
    ana = Person("usr_ana", "ana@example.com", DEFAULT_WORKSPACE_ID, "member")
    bo = Person("usr_bo", "bo@example.com", DEFAULT_WORKSPACE_ID, "member")
    viewer = Person("usr_cy", "cy@example.com", DEFAULT_WORKSPACE_ID, "viewer")
    owner = Person("usr_di", "di@example.com", DEFAULT_WORKSPACE_ID, "owner")
    elsewhere = Person("usr_ed", "ed@example.com", "wsp_other", "owner")

    made = sessions.create("chat", [CHAT], title="Ana's draft", by=ana)
    sessions.create("chat", [CHAT], title="Bo's own", by=bo)
    stored = sessions.get(made.id)
    assert (stored.created_by, stored.workspace_id, stored.visibility) == ("usr_ana", DEFAULT_WORKSPACE_ID, "private")
    assert [s.title for s in sessions.recent("chat", person=ana)] == ["Ana's draft"]
    assert [s.title for s in sessions.recent("chat", person=bo)] == ["Bo's own"]
    assert not stored.readable_by(bo) and not stored.readable_by(owner)  # private means private, owners too
    assert stored.manageable_by(ana) and stored.writable_by(ana)

    assert sessions.set_visibility(made.id, "workspace")
    shared = sessions.get(made.id)
    assert [s.title for s in sessions.recent("chat", person=bo)] == ["Bo's own", "Ana's draft"]  # newest first
    assert shared.readable_by(bo) and shared.writable_by(bo) and not shared.manageable_by(bo)
    assert shared.readable_by(viewer) and not shared.writable_by(viewer)
    assert shared.manageable_by(owner)  # a workspace owner manages what is shared there
    assert not shared.readable_by(elsewhere) and sessions.recent("chat", person=elsewhere) == []
    assert {s.title for s in sessions.recent("chat", search="draft", person=viewer)} == {"Ana's draft"}

    assert sessions.set_visibility(made.id, "private")
    assert [s.title for s in sessions.recent("chat", person=bo)] == ["Bo's own"]
    with pytest.raises(ValueError, match="'private' or shared with the 'workspace'"):
        sessions.set_visibility(made.id, "public")
    # Without a person (no login, tools): every session, as before accounts.
    assert len(sessions.recent("chat")) == 2 and sessions.create("chat", [CHAT]).created_by == LOCAL.user_id


def test_the_in_memory_store_keeps_authors_too():
    sessions = SessionStore.in_memory()
    ana = Person("usr_ana", "ana@example.com", DEFAULT_WORKSPACE_ID, "member")
    sessions.create("chat", [CHAT], title="kept in memory", by=ana)
    assert sessions.recent(person=LOCAL) == [] and len(sessions.recent(person=ana)) == 1


def test_the_command_adds_accounts_reading_the_password_from_stdin_never_argv(tmp_path: Path):
    data = tmp_path / "data"

    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "conductor_core.team", "--data-dir", str(data), *args],
            input=stdin,
            capture_output=True,
            text=True,
            cwd=REPO_ROOT,
            timeout=120,
        )

    added = run("add-user", "ana@example.com", "--workspace", "Research", "--role", "owner", stdin="correct horse 42\n")
    assert added.returncode == 0, added.stderr
    assert "made the workspace 'Research'" in added.stdout and "owner of 'Research'" in added.stdout
    assert "correct horse" not in added.stdout + added.stderr
    short = run("add-user", "bo@example.com", stdin="short\n")
    assert short.returncode == 1 and "at least 8 characters" in short.stderr
    assert run("add-user", "bo@example.com", "--role", "viewer", stdin="battery staple 7\n").returncode == 0
    assert run("set-role", "bo@example.com", "--workspace", "Research", "--role", "member").returncode == 0
    listed = run("list").stdout
    assert "ana@example.com" in listed and "Research" in listed and "viewer" in listed
    refused = run("add-user", "--password", "x", "cy@example.com")
    assert refused.returncode == 2  # there is no way to put a password on the command line

    log = RequestLog(None, data_dir=data)
    try:
        team = TeamStore(log, hasher=FAST)
        ana = team.check_password("ana@example.com", "correct horse 42")
        assert ana is not None and team.person(ana).role == "owner"
        bo = team.user("bo@example.com")
        assert [(m.workspace.name, m.role) for m in team.memberships(bo.id)] == [
            ("Default", "viewer"),
            ("Research", "member"),
        ]
    finally:
        log.close()
