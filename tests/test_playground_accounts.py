"""Sign-in with password accounts (playground/access.py), private and shared sessions, and the
viewer role, on the playground's pages (AppTest; the two-browser flow is
tests/test_browser_team.py). With no login configured nothing is asked and nothing of sharing
shows: the local user's playground is as it was."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from conductor_core.team import DEFAULT_WORKSPACE_ID, Person
from conductor_core.workbench.variants import Variant
from playground import state as playground_state
from playground.access import WRONG_SIGN_IN

ROOT = Path(__file__).resolve().parent.parent
APP = ROOT / "playground" / "app.py"
PASSWORD = "correct horse 42"
ACCOUNTS = {"password_sign_in": True}


def chat() -> Variant:
    # Made once the fake Conductor exists: it registers the provider name "gamma".
    return Variant(provider="gamma", model="gamma-1")


pytestmark = pytest.mark.timeout(120)


def page(**query) -> AppTest:
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["accounts"] = ACCOUNTS
    at.query_params.update(query)
    return at


def sign_in(at: AppTest, email: str, password: str) -> AppTest:
    at.run()
    at.text_input(key="access_email").set_value(email)
    at.text_input(key="access_password").set_value(password)
    at.get("form_submit_button")[0].click().run()
    assert not at.exception, at.exception
    return at


def account(email: str, role: str) -> str:
    team = playground_state.team()
    user = team.add_user(email, password=PASSWORD)
    team.set_role(user.id, DEFAULT_WORKSPACE_ID, role)
    return user.id


def buttons(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def test_nothing_of_the_app_shows_until_an_account_signs_in(env):
    account("ana@example.com", "member")
    at = sign_in(page(), "ana@example.com", "not the password")
    assert [e.value for e in at.error] == [WRONG_SIGN_IN] and not at.chat_input
    at = sign_in(at, "nobody@example.com", PASSWORD)  # an unknown email gets the same answer
    assert [e.value for e in at.error] == [WRONG_SIGN_IN] and not at.chat_input
    at = sign_in(at, "ANA@example.com", PASSWORD)
    assert at.chat_input and not at.chat_input[0].disabled and at.title[0].value == "Playground"
    assert any(c.value == "Signed in as ana@example.com (member)" for c in at.sidebar.caption)
    assert PASSWORD not in repr(at.session_state.to_dict())
    at.sidebar.button[0].click().run()  # Sign out
    assert not at.chat_input and at.get("form_submit_button")


def test_an_account_in_no_workspace_is_told_to_ask_an_owner(env):
    playground_state.team().add_user("lone@example.com", password=PASSWORD)
    at = sign_in(page(), "lone@example.com", PASSWORD)
    assert any("belongs to no workspace" in w.value for w in at.warning) and not at.chat_input


def test_a_session_is_private_until_its_author_shares_it(env):
    ana = account("ana@example.com", "member")
    account("bo@example.com", "member")
    store = playground_state.sessions()
    # Ana's session, as the page makes it: her id, her workspace.
    mine = store.create(
        "chat", [chat()], title="Ana's plan", by=Person(ana, "ana@example.com", DEFAULT_WORKSPACE_ID, "member")
    )
    at = sign_in(page(), "bo@example.com", PASSWORD)
    assert "Ana's plan" not in [b.label.split(" · ")[0] for b in at.sidebar.button]
    at = sign_in(page(session=mine.id), "bo@example.com", PASSWORD)
    assert any("not yours" in w.value for w in at.warning)
    assert all("Ana's plan" not in m.value for m in at.markdown)

    at = sign_in(page(session=mine.id), "ana@example.com", PASSWORD)
    assert "Share with the workspace" in buttons(at) and "Make private" not in buttons(at)
    next(b for b in at.button if b.label == "Share with the workspace").click().run()
    assert store.get(mine.id).visibility == "workspace" and "Make private" in buttons(at)

    at = sign_in(page(session=mine.id), "bo@example.com", PASSWORD)
    assert not at.warning and any("Ana's plan" in m.value for m in at.markdown)
    assert "Share with the workspace" not in buttons(at) and "Make private" not in buttons(at)  # not Bo's to manage
    assert not at.chat_input[0].disabled


def test_a_viewer_reads_a_shared_session_but_cannot_send(env):
    account("cy@example.com", "viewer")
    shared = playground_state.sessions().create("chat", [chat()], title="Shared demo")
    playground_state.sessions().set_visibility(shared.id, "workspace")
    at = sign_in(page(session=shared.id), "cy@example.com", PASSWORD)
    assert any("Shared demo" in m.value for m in at.markdown)
    assert at.chat_input[0].disabled
    assert any("You are a viewer in this workspace" in c.value for c in at.caption)
    at = sign_in(page(), "cy@example.com", PASSWORD)  # a new chat: no sending either
    assert at.chat_input[0].disabled
    at.switch_page("views/compare.py").run()
    assert next(b for b in at.get("form_submit_button") if b.label == "Run compare").disabled
    at.switch_page("views/arena.py").run()
    assert at.get("form_submit_button")[0].disabled  # Start blind round
    assert any("You are a viewer in this workspace" in c.value for c in at.caption)
    at.switch_page("views/experiments.py").run()
    assert next(b for b in at.button if b.label == "Run experiment").disabled


def test_with_no_login_nothing_is_asked_and_sharing_is_not_offered(env):
    session = playground_state.sessions().create("chat", [chat()], title="Laptop chat")
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params["session"] = session.id
    at.run()
    assert not at.exception and at.chat_input and not at.chat_input[0].disabled
    assert not at.get("form_submit_button")
    assert "Share with the workspace" not in buttons(at) and "Rename" in buttons(at)
    assert not any("Signed in" in c.value for c in at.sidebar.caption)


def test_a_menu_drawn_before_the_author_made_the_session_private_changes_nothing(env):
    account("ana@example.com", "owner")  # an owner manages what is shared in her workspace
    bo = account("bo@example.com", "member")
    store = playground_state.sessions()
    theirs = store.create(
        "chat", [chat()], title="Bo's demo", by=Person(bo, "bo@example.com", DEFAULT_WORKSPACE_ID, "member")
    )
    store.set_visibility(theirs.id, "workspace")
    at = sign_in(page(session=theirs.id), "ana@example.com", PASSWORD)
    assert "Make private" in buttons(at)  # drawn while it is shared
    store.set_visibility(theirs.id, "private")  # meanwhile, Bo takes it back
    at.text_input(key=f"rename_{theirs.id}").set_value("Ana's now")
    next(b for b in at.button if b.label == "Rename").click().run()
    assert store.get(theirs.id).title == "Bo's demo"
    assert any("not yours" in w.value for w in at.warning)  # and nothing of it is shown
    assert all("Bo's demo" not in m.value for m in at.markdown)


def test_an_owner_adds_a_member_and_changes_a_role_in_the_sidebar(env):
    ana = account("ana@example.com", "owner")
    bo = account("bo@example.com", "member")
    at = sign_in(page(), "ana@example.com", PASSWORD)
    team = playground_state.team()
    assert at.sidebar.selectbox(key=f"member_role_{DEFAULT_WORKSPACE_ID}_{bo}_member").value == "member"
    assert at.sidebar.selectbox(key=f"member_role_{DEFAULT_WORKSPACE_ID}_{ana}_owner").disabled  # her own
    assert not [
        b for b in at.sidebar.selectbox if (b.key or "").startswith(f"member_role_{DEFAULT_WORKSPACE_ID}_usr_local")
    ]

    at.sidebar.selectbox(key=f"member_role_{DEFAULT_WORKSPACE_ID}_{bo}_member").set_value("viewer").run()
    assert team.person(team.user("bo@example.com")).role == "viewer"

    at.sidebar.text_input(key="member_email").set_value("cy@example.com")
    at.sidebar.text_input(key="member_password").set_value("cy's long passphrase")
    at.sidebar.selectbox(key="member_role").set_value("viewer")
    next(b for b in at.sidebar.get("form_submit_button") if b.label == "Add to this workspace").click().run()
    assert any("cy@example.com is viewer here." in s.value for s in at.sidebar.success)
    assert team.check_password("cy@example.com", "cy's long passphrase") is not None
    assert "cy's long passphrase" not in repr(at.session_state.to_dict())

    at.sidebar.text_input(key="member_email").set_value("dee@example.com")
    at.sidebar.text_input(key="member_password").set_value("short")
    next(b for b in at.sidebar.get("form_submit_button") if b.label == "Add to this workspace").click().run()
    assert any("at least 8 characters" in e.value for e in at.sidebar.error) and team.user("dee@example.com") is None


def test_members_and_viewers_see_no_members_section(env):
    account("bo@example.com", "member")
    at = sign_in(page(), "bo@example.com", PASSWORD)
    assert not [e for e in at.sidebar.expander if e.label == "Members"]


def test_only_owners_make_and_revoke_gateway_keys(env):
    account("ed@example.com", "member")
    account("fay@example.com", "owner")
    made, _secret = playground_state.gateway_keys().create("ci app")
    at = sign_in(page(), "ed@example.com", PASSWORD)
    at.switch_page("views/keys.py").run()
    assert not at.exception, at.exception
    assert any("Only the workspace's owners" in c.value for c in at.caption)
    submits = [b.label for b in at.get("form_submit_button")]
    assert "Create key" not in submits and "Revoke…" not in buttons(at)  # nothing to create or revoke with
    at = sign_in(page(), "fay@example.com", PASSWORD)
    at.switch_page("views/keys.py").run()
    assert "Create key" in [b.label for b in at.get("form_submit_button")]
    assert "Revoke…" in buttons(at)
    assert not playground_state.gateway_keys().get(made.id).revoked
