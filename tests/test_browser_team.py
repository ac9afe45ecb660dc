"""Two people in two browsers (two contexts), on a playground with password accounts (a
secrets.toml the test writes, `[accounts] password_sign_in = true`): a wrong password is
refused; Ana's new session is invisible to Bo, also by its URL; Ana shares it and Bo opens it;
Bo made a viewer cannot send; Bo's other workspace (the switcher) does not show it.

Skipped with the reason when chromium or playwright is missing, unless
CONDUCTOR_REQUIRE_SERVICES=1 (CI), where that is a failure.
"""

from __future__ import annotations

import pytest
from browser_support import Playground, choose, endpoint_config, launch, open_page, wait_idle

from conductor_core.store import RequestLog
from conductor_core.team import DEFAULT_WORKSPACE_ID, TeamStore

pytestmark = pytest.mark.timeout(420)

REPLY = "Noted, from the loopback server."
ANA = ("ana@example.com", "ana's long passphrase")
BO = ("bo@example.com", "bo's long passphrase")
PLAN = "Ana's private plan for the demo"


@pytest.fixture(scope="module")
def team_server(services, tmp_path_factory):
    from conductor_core.testing.protocol_servers import OpenAIServer

    work = tmp_path_factory.mktemp("team")
    log = RequestLog(None, data_dir=work / "data")  # the SQLite file the playground opens
    team = TeamStore(log)
    ana = team.add_user(ANA[0], name="Ana", password=ANA[1])
    bo = team.add_user(BO[0], name="Bo", password=BO[1])
    research = team.add_workspace("Research")
    team.set_role(ana.id, DEFAULT_WORKSPACE_ID, "owner")
    team.set_role(bo.id, DEFAULT_WORKSPACE_ID, "member")
    team.set_role(bo.id, research.id, "member")
    secrets = work / "secrets.toml"
    secrets.write_text("[accounts]\npassword_sign_in = true\n")
    loopback = OpenAIServer(reply=REPLY, models=["loopback-model"], chunk_delay_s=0.01).start()
    server = Playground(
        work,
        config=endpoint_config(loopback),
        extra_env={"CONDUCTOR_LOCAL_ENABLED": "false"},
        extra_args=("--secrets.files", str(secrets)),
    )
    try:
        yield {"url": server.url, "team": team, "bo": bo}
    finally:
        server.stop()
        loopback.stop()
        log.close()


def sign_in(page, url: str, email: str, password: str) -> None:
    page.goto(url)
    page.get_by_role("textbox", name="Email").fill(email)
    page.get_by_role("textbox", name="Password").fill(password)
    page.get_by_role("button", name="Sign in").click()
    wait_idle(page, 120_000)


def signed_in(page, url: str, account: tuple[str, str]) -> None:
    sign_in(page, url, *account)
    page.get_by_test_id("stChatInput").wait_for(timeout=120_000)
    wait_idle(page, 120_000)


def sidebar_text(page) -> str:
    wait_idle(page)
    return page.get_by_test_id("stSidebar").inner_text()


def test_private_sessions_sharing_and_a_viewer_in_two_browsers(team_server, shots):
    from playwright.sync_api import sync_playwright

    url = team_server["url"]
    with sync_playwright() as p:
        browser = launch(p)
        try:
            ana = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
            bo = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()

            # Nothing of the app before signing in; a wrong password is refused, clearly.
            sign_in(bo, url, BO[0], "not the password")
            bo.get_by_text("That email and password do not match an account.").wait_for(timeout=60_000)
            assert bo.get_by_test_id("stChatInput").count() == 0
            shots(bo, "team_wrong_password")

            # Ana starts a session: private to her.
            signed_in(ana, url, ANA)
            assert "Signed in as Ana (owner)" in sidebar_text(ana)
            choose(ana, "Provider", "loopback", within=ana.get_by_test_id("stSidebar"))
            wait_idle(ana)
            box = ana.get_by_test_id("stChatInputTextArea")
            box.fill(PLAN)
            box.press("Enter")
            ana.get_by_text(REPLY).wait_for(timeout=60_000)
            wait_idle(ana)
            assert "session=ses_" in ana.url
            session_url = ana.url
            assert PLAN in sidebar_text(ana)

            # Bo sees nothing of it: not in his list, and not by its URL.
            signed_in(bo, url, BO)
            assert "Signed in as Bo (member)" in sidebar_text(bo) and PLAN not in sidebar_text(bo)
            signed_in(bo, session_url, BO)
            bo.get_by_text("That session is not yours").wait_for(timeout=60_000)
            assert PLAN not in bo.get_by_test_id("stApp").inner_text()
            assert REPLY not in bo.get_by_test_id("stApp").inner_text()
            shots(bo, "team_not_yours")

            # Ana shares it with the workspace.
            ana.get_by_role("button").filter(has_text="more_horiz").first.click()
            ana.get_by_role("button", name="Share with the workspace").click()
            ana.get_by_text("Shared with the workspace").first.wait_for(timeout=60_000)
            wait_idle(ana)

            # Bo now finds it in his list, opens it, and as a member may add to it.
            open_page(bo, "Compare")
            open_page(bo, "Playground")
            listed = bo.get_by_test_id("stSidebar").get_by_role("button", name=PLAN[:30], exact=False)
            listed.wait_for(timeout=60_000)
            listed.click()
            bo.get_by_text(REPLY).wait_for(timeout=60_000)
            wait_idle(bo)
            assert PLAN in bo.get_by_test_id("stMain").inner_text()
            assert bo.get_by_test_id("stChatInputTextArea").is_enabled()
            assert bo.get_by_role("button").filter(has_text="more_horiz").count() == 0  # Ana's to rename or delete
            shots(bo, "team_shared")

            # Made a viewer, Bo can read it but not send, and is told why.
            team_server["team"].set_role(team_server["bo"].id, DEFAULT_WORKSPACE_ID, "viewer")
            listed.click()
            bo.get_by_text("You are a viewer in this workspace").wait_for(timeout=60_000)
            wait_idle(bo)
            assert PLAN in bo.get_by_test_id("stMain").inner_text()
            assert bo.get_by_test_id("stChatInputTextArea").is_disabled()
            assert bo.get_by_role("button", name="Regenerate").count() == 0
            assert "Signed in as Bo (viewer)" in sidebar_text(bo)
            shots(bo, "team_viewer")

            # In his other workspace, Bo's list does not have it.
            choose(bo, "Workspace", "Research", within=bo.get_by_test_id("stSidebar"))
            wait_idle(bo)
            assert PLAN not in sidebar_text(bo) and PLAN not in bo.get_by_test_id("stMain").inner_text()
            assert bo.get_by_test_id("stChatInputTextArea").is_enabled()  # a member there

            # Ana makes it private again: Bo, back in Default, no longer finds it.
            ana.get_by_role("button").filter(has_text="more_horiz").first.click()
            ana.get_by_role("button", name="Make private").click()
            wait_idle(ana)
            team_server["team"].set_role(team_server["bo"].id, DEFAULT_WORKSPACE_ID, "member")
            choose(bo, "Workspace", "Default", within=bo.get_by_test_id("stSidebar"))
            wait_idle(bo)
            assert PLAN not in sidebar_text(bo)
        finally:
            browser.close()
