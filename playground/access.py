"""Who may use the page, and who is there (README: "Exposing the playground", "Team deployment").

Nothing is asked by default: the page listens on 127.0.0.1 only (.streamlit/config.toml), and
the person is the implicit local user, owner of the Default workspace. A deployment that
exposes it configures a gate in ``.streamlit/secrets.toml``:

* ``[accounts]`` with ``password_sign_in = true`` — people sign in with an email and a password
  (accounts made by ``python -m conductor_core.team add-user``; conductor_core/team);
* ``[auth]`` (Streamlit's OIDC login, `st.login`: Google, Microsoft, Okta, Auth0…; needs the
  Authlib package) — a person signs in with the identity provider and becomes a user (made on
  the first sign-in, a member of Default). Both may be set: the page then offers both;
* ``playground_password = "…"`` — one shared password, asked once per browser session; who is
  let in is the local user (no accounts).

`person()` is the one place the pages ask who is there (a `Person`: user, workspace, role);
`who()` is that person's email, for the "by" of what they save.
"""

from __future__ import annotations

import hmac
import time

import streamlit as st

from conductor_core.team import LOCAL, Membership, Person, User

from . import members

__all__ = ["require_access", "who", "person", "signed_in", "spending_refusal"]

_OK = "_access_granted"
_USER = "_access_user"  # the signed-in account (password or identity provider)
_PERSON = "_access_person"  # who is there on this run: the user in the chosen workspace
_WORKSPACE = "access_workspace"  # the workspace switcher's key
WRONG_SIGN_IN = "That email and password do not match an account."


def _secrets() -> dict:
    try:
        return st.secrets.to_dict()
    except Exception:  # noqa: BLE001 - no secrets.toml: nothing is configured
        return {}


def _password_accounts(secrets: dict) -> bool:
    accounts = secrets.get("accounts")
    return isinstance(accounts, dict) and bool(accounts.get("password_sign_in"))


def _team():
    from . import state

    return state.team()


def _team_or_stop():
    """The accounts' store, or a sentence saying why there is none (never a traceback)."""
    from . import components as ui

    try:
        return _team()
    except Exception as exc:  # noqa: BLE001 - a broken database is a message on the sign-in page too
        ui.log.exception("accounts unavailable")
        st.error(f"Accounts are unavailable: {ui.escape_md(ui.unexpected_error(exc))}", icon=":material/database:")
        st.stop()


def _check_password(expected: str) -> None:
    typed = st.session_state.pop("access_password", "") or ""
    if hmac.compare_digest(typed.encode(), expected.encode()):
        st.session_state[_OK] = True
    else:
        time.sleep(1.0)  # a wrong password costs a second: guessing is slow
        st.session_state["access_error"] = "That password is not right."


def _sign_in() -> None:
    email = (st.session_state.get("access_email") or "").strip()
    typed = st.session_state.pop("access_password", "") or ""
    try:
        user = _team().check_password(email, typed) if email and typed else None
    except Exception as exc:  # noqa: BLE001 - said on the form, never a traceback
        from . import components as ui

        st.session_state["access_error"] = f"Signing in is unavailable: {ui.unexpected_error(exc)}"
        return
    if user is None:
        time.sleep(1.0)  # as the shared password: guessing is slow
        st.session_state["access_error"] = WRONG_SIGN_IN
        return
    st.session_state[_USER] = user
    st.session_state.pop(_WORKSPACE, None)


def _sign_out(identity_provider: bool) -> None:
    for key in (_USER, _PERSON, _WORKSPACE):
        st.session_state.pop(key, None)
    if identity_provider:
        st.logout()


def _sign_in_page(*, passwords: bool, identity_provider: bool) -> None:
    st.title("Conductor")
    st.write("This playground is shared: sign in to use it.")
    if passwords:
        with st.form("sign_in_form", border=True):
            st.text_input("Email", key="access_email", autocomplete="username")
            st.text_input("Password", type="password", key="access_password", autocomplete="current-password")
            st.form_submit_button("Sign in", icon=":material/login:", type="primary", on_click=_sign_in)
        error = st.session_state.pop("access_error", None)
        if error:
            st.error(error, icon=":material/lock:")
        st.caption("Ask an owner of this playground for an account.")
    if identity_provider:
        st.button(
            "Sign in with your identity provider" if passwords else "Sign in",
            icon=":material/login:",
            type="secondary" if passwords else "primary",
            on_click=st.login,
        )
    st.stop()


def _switch_workspace() -> None:
    # Another workspace's page starts empty: the session the URL names belongs to the last one.
    if "session" in st.query_params:
        del st.query_params["session"]


def _acting(user: User, memberships: list[Membership]) -> Person:
    """The user in the workspace they chose (the switcher, when they belong to several)."""
    by_id = {m.workspace.id: m for m in memberships}
    if st.session_state.get(_WORKSPACE) not in by_id:  # none chosen yet, or no longer theirs
        st.session_state.pop(_WORKSPACE, None)
    chosen = by_id.get(st.session_state.get(_WORKSPACE) or "", memberships[0])
    st.caption(f"Signed in as {user.name or user.email} ({chosen.role})")
    if len(memberships) > 1:
        st.selectbox(
            "Workspace",
            list(by_id),
            format_func=lambda wid: by_id[wid].workspace.name,
            key=_WORKSPACE,
            on_change=_switch_workspace,
        )
    return Person(user.id, user.email, chosen.workspace.id, chosen.role, user.name)


def require_access() -> None:
    """Stop the page here until the person is let in (when a gate is configured), and settle
    who they are on this run (`person()`)."""
    secrets = _secrets()
    passwords, identity_provider = _password_accounts(secrets), "auth" in secrets
    st.session_state.pop(_PERSON, None)
    if passwords or identity_provider:
        user: User | None = st.session_state.get(_USER)
        if user is None and identity_provider and st.user.is_logged_in:
            email = str(st.user.get("email") or "")
            if not email:
                st.error("The identity provider gave no email address: Conductor needs one to know who you are.")
                st.stop()
            user = _team_or_stop().signed_in(email, str(st.user.get("name") or ""))
            st.session_state[_USER] = user
        if user is None:
            _sign_in_page(passwords=passwords, identity_provider=identity_provider)
            return
        memberships = _team_or_stop().memberships(user.id)
        with st.sidebar:
            if not memberships:
                st.caption(f"Signed in as {user.name or user.email}")
                st.button("Sign out", icon=":material/logout:", on_click=_sign_out, args=(identity_provider,))
                st.warning("Your account belongs to no workspace yet: ask an owner to add you to one.")
                st.stop()
            acting = st.session_state[_PERSON] = _acting(user, memberships)
            members.members_section(acting)
            st.button(
                "Sign out",
                icon=":material/logout:",
                on_click=_sign_out,
                args=(identity_provider and st.user.is_logged_in,),
                type="tertiary",
            )
        return
    password = secrets.get("playground_password")
    if not password or st.session_state.get(_OK):
        return
    st.title("Conductor")
    with st.form("access_form", border=True):
        st.text_input("Password", type="password", key="access_password", autocomplete="current-password")
        st.form_submit_button(
            "Enter", icon=":material/lock_open:", type="primary", on_click=_check_password, args=(str(password),)
        )
    error = st.session_state.pop("access_error", None)
    if error:
        st.error(error, icon=":material/lock:")
    st.caption("Ask the person who runs this playground for the password.")
    st.stop()


def person() -> Person:
    """Who is there: the signed-in user in their chosen workspace, else the local user (no
    login configured, or the one shared password)."""
    found = st.session_state.get(_PERSON)
    return found if isinstance(found, Person) else LOCAL


def spending_refusal() -> str | None:
    """Why this person may not send anything to a provider (None: they may): viewers look and export."""
    if person().can_send:
        return None
    return "You are a viewer in this workspace: you can read and export, not send to a provider."


def signed_in() -> bool:
    """Whether someone signed in (accounts): else there is nobody to share with, and the page
    says nothing of sharing."""
    return isinstance(st.session_state.get(_PERSON), Person)


def who() -> str:
    """Who did something (saved a dataset version): the signed-in person's email, else "local"."""
    found = st.session_state.get(_PERSON)
    if isinstance(found, Person):
        return found.email
    try:
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("name") or "signed in")
    except Exception:  # noqa: BLE001 - no login configured: st.user has nothing to say
        pass
    return "local"
