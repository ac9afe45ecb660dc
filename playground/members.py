"""The workspace's members, for its owners (in the sidebar): each member's role, changed in
place, and a person added (a new account with a password, or an existing one). The same as
``python -m conductor_core.team``; the password typed here is dropped from the browser
session's state as soon as it is hashed."""

from __future__ import annotations

import streamlit as st

from conductor_core.team import LOCAL_USER_ID, ROLES, Person

from . import state

__all__ = ["members_section"]

_NOTE = "members_note"


def _set_role(user_id: str, workspace_id: str, key: str) -> None:
    state.team().set_role(user_id, workspace_id, st.session_state[key])


def _add(workspace_id: str) -> None:
    email = (st.session_state.get("member_email") or "").strip()
    password = st.session_state.pop("member_password", "") or None
    role = st.session_state.get("member_role") or "member"
    team = state.team()
    try:
        user = team.user(email) if email else None
        if user is None:
            user = team.add_user(email, password=password)
        team.set_role(user.id, workspace_id, role)
    except ValueError as error:
        st.session_state[_NOTE] = ("error", str(error))
        return
    st.session_state["member_email"] = ""
    st.session_state[_NOTE] = ("ok", f"{user.email} is {role} here.")


def members_section(me: Person) -> None:
    """Nothing for members and viewers; an expander for owners."""
    if me.role != "owner":
        return
    team = state.team()
    with st.expander("Members", icon=":material/group:"):
        for user, role in team.members(me.workspace_id):
            if user.id == LOCAL_USER_ID:  # nobody signs in as the local user: the page without a login is theirs
                continue
            key = f"member_role_{me.workspace_id}_{user.id}_{role}"  # a role changed elsewhere: a new widget
            st.selectbox(
                user.name or user.email,
                ROLES,
                index=ROLES.index(role),
                key=key,
                on_change=_set_role,
                args=(user.id, me.workspace_id, key),
                disabled=user.id == me.user_id,  # an owner cannot demote themselves out of managing it
                help=user.email if user.name else None,
            )
        with st.form("members_add", border=False, clear_on_submit=False):
            st.text_input("Email", key="member_email", placeholder="name@example.com")
            st.text_input(
                "Password",
                type="password",
                key="member_password",
                autocomplete="new-password",
                help="For a new account; leave it empty for someone who signs in with the identity provider, "
                "or who has an account already.",
            )
            st.selectbox("Role", ROLES, index=ROLES.index("member"), key="member_role")
            st.form_submit_button(
                "Add to this workspace", icon=":material/person_add:", on_click=_add, args=(me.workspace_id,)
            )
        note = st.session_state.pop(_NOTE, None)
        if note:
            (st.error if note[0] == "error" else st.success)(note[1])
