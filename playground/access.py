"""Who may use the page, when it is shared (README: "Exposing the playground").

Nothing is asked by default: the page listens on 127.0.0.1 only (.streamlit/config.toml).
A deployment that exposes it configures one of two gates in ``.streamlit/secrets.toml``:

* ``[auth]`` (Streamlit's OIDC login, `st.login`: Google, Microsoft, Okta, Auth0…; needs
  the Authlib package) — a person signs in with the identity provider;
* ``playground_password = "…"`` — one shared password, asked once per browser session.
"""

from __future__ import annotations

import hmac
import time

import streamlit as st

__all__ = ["require_access", "who"]

_OK = "_access_granted"


def _secrets() -> dict:
    try:
        return st.secrets.to_dict()
    except Exception:  # noqa: BLE001 - no secrets.toml: nothing is configured
        return {}


def _check_password(expected: str) -> None:
    typed = st.session_state.pop("access_password", "") or ""
    if hmac.compare_digest(typed.encode(), expected.encode()):
        st.session_state[_OK] = True
    else:
        time.sleep(1.0)  # a wrong password costs a second: guessing is slow
        st.session_state["access_error"] = "That password is not right."


def require_access() -> None:
    """Stop the page here until the person is let in (when a gate is configured)."""
    secrets = _secrets()
    if "auth" in secrets:
        if not st.user.is_logged_in:
            st.title("Conductor")
            st.write("This playground is shared: sign in to use it.")
            st.button("Sign in", icon=":material/login:", type="primary", on_click=st.login)
            st.stop()
        with st.sidebar:
            st.caption(f"Signed in as {st.user.get('email') or st.user.get('name') or 'you'}")
            st.button("Sign out", icon=":material/logout:", on_click=st.logout, type="tertiary")
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


def who() -> str:
    """Who is acting, for records such as a prompt label's move: the signed-in person's email or
    name when the deployment has a login, else "local" (there are no user accounts yet)."""
    try:
        if st.user.is_logged_in:
            return str(st.user.get("email") or st.user.get("name") or "signed in")
    except Exception:  # noqa: BLE001 - no [auth] configured: st.user has no login to ask about
        pass
    return "local"
