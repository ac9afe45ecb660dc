"""Which session a page shows, and the sidebar's list of sessions.

The URL names the session (``?session=ses_…``), so a reload, a bookmark or a second tab
opens it again. Streamlit clears query parameters on a page switch, so each page also
remembers its session in the browser session's state and puts it back in the URL.

A session is its author's until they share it with the workspace (conductor_core/team): the
list shows the person's own and the shared ones; a URL naming someone else's private session
opens nothing of it.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import streamlit as st

from conductor_core.workbench.sessions import SessionInfo

from . import access, state
from . import components as ui

__all__ = [
    "PAGES",
    "NOT_YOURS",
    "current",
    "open_session",
    "forget",
    "sidebar_list",
    "session_labels",
    "header",
    "send_refusal",
]

#: The page that shows each kind of session.
PAGES = {"chat": "views/chat.py", "compare": "views/compare.py"}
_NOUN = {"chat": "chat", "compare": "comparison"}
NOT_YOURS = "That session is not yours: its author has not shared it with this workspace."


def _state_key(kind: str) -> str:
    return f"{kind}_session"


def current(kind: str) -> str | None:
    """The session this page shows: the URL's, else the one this tab had open here."""
    ss = st.session_state
    me = access.person()
    wanted = st.query_params.get("session")
    if wanted and wanted != ss.get(_state_key(kind)):
        found = state.sessions().get(wanted)
        if found is None:
            st.warning("That session does not exist any more (it may have been deleted).", icon=":material/search_off:")
            del st.query_params["session"]
        elif not found.readable_by(me):
            st.warning(NOT_YOURS, icon=":material/lock:")
            del st.query_params["session"]
        elif found.kind != kind and found.kind in PAGES:
            ss[_state_key(found.kind)] = found.id
            st.switch_page(PAGES[found.kind], query_params={"session": found.id})
        else:
            ss[_state_key(kind)] = found.id
    sid = ss.get(_state_key(kind))
    if sid:  # still theirs to see? Its author may have made it private since; a workspace switch leaves it
        kept = state.sessions().get(sid)
        if kept is not None and not kept.readable_by(me):
            if kept.workspace_id == me.workspace_id:
                st.warning(NOT_YOURS, icon=":material/lock:")
            forget(kind)
            return None
    if sid and st.query_params.get("session") != sid:
        st.query_params["session"] = sid
    return sid


def open_session(kind: str, session_id: str) -> None:
    st.session_state[_state_key(kind)] = session_id
    st.query_params["session"] = session_id


def forget(kind: str) -> None:
    """Show a new, empty session (made when the first message is sent)."""
    st.session_state.pop(_state_key(kind), None)
    if "session" in st.query_params:
        del st.query_params["session"]


def sidebar_list(kind: str, current_id: str | None) -> None:
    """New session, search, and the recent sessions of this kind (opened in this tab; the
    address bar then names the session, to bookmark or open in another tab)."""
    noun = _NOUN.get(kind, "session")
    st.button(
        f"New {noun}",
        icon=":material/add_comment:",
        key=f"{kind}_new",
        width="stretch",
        on_click=forget,
        args=(kind,),
        disabled=current_id is None,
    )
    search = st.text_input(
        "Search sessions",
        key=f"{kind}_search",
        placeholder=f"Search {noun}s…",
        label_visibility="collapsed",
        icon=":material/search:",
    )
    try:
        found = state.sessions().recent(kind, search=search or "", limit=12, person=access.person())
    except Exception as exc:  # noqa: BLE001 - a database problem is a message, the page keeps working
        st.caption(f"Sessions unavailable: {ui.escape_md(ui.unexpected_error(exc))}")
        return
    if not found:
        st.caption(f"No {noun}s match “{ui.escape_md(search)}”." if search else f"Your {noun}s will be listed here.")
        return
    zone = _browser_zone()
    team = access.signed_in()
    labels = session_labels(found, noun=noun, now=datetime.now(zone), zone=zone)
    for session, label in zip(found, labels, strict=True):
        title = session.title or f"Untitled {noun}"
        mine = session.id == current_id
        st.button(
            ui.literal_label(label),
            key=f"{kind}_open_{session.id}",
            icon=":material/chevron_right:"
            if mine
            else ":material/group:"
            if session.shared and team
            else ":material/chat_bubble_outline:",
            type="secondary" if mine else "tertiary",
            help=f"{title} · updated {session.updated_at.astimezone(zone):%Y-%m-%d %H:%M} ({zone.key})"
            + (" · shared with the workspace" if session.shared and team else ""),
            width="stretch",
            on_click=open_session,
            args=(kind, session.id),
        )


def _browser_zone() -> ZoneInfo:
    """The reader's time zone (the browser says it), else UTC."""
    try:
        return ZoneInfo(st.context.timezone or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def session_labels(sessions: Sequence[SessionInfo], *, noun: str, now: datetime, zone: ZoneInfo) -> list[str]:
    """A button label per session: its title (shortened) and, beside it, when it was last
    used ("14:05" today, "12 Mar 14:05" this year, "12 Mar 2024" before), so sessions with the
    same title can be told apart on a phone too, where no tooltip shows. Labels that would
    still be the same get the seconds."""

    def when(moment: datetime, seconds: bool = False) -> str:
        local = moment.astimezone(zone)
        clock = f"{local:%H:%M:%S}" if seconds else f"{local:%H:%M}"
        if local.date() == now.date():
            return clock
        return f"{local:%d %b} {clock}" if local.year == now.year else f"{local:%d %b %Y}"

    def title(session: SessionInfo) -> str:
        text = session.title or f"Untitled {noun}"
        return text[:40] + ("…" if len(text) > 40 else "")

    labels = [f"{title(s)} · {when(s.updated_at)}" for s in sessions]
    repeated = {label for label in labels if labels.count(label) > 1}
    return [
        f"{title(s)} · {when(s.updated_at, seconds=True)}" if label in repeated else label
        for s, label in zip(sessions, labels, strict=True)
    ]


def _managed(session_id: str) -> bool:
    """Whether this person may still change the session (its sharing may have changed since the
    menu was drawn); a note says so when not."""
    found, me = state.sessions().get(session_id), access.person()
    if found is not None and found.manageable_by(me):
        return True
    if found is not None and found.readable_by(me):  # else the page says it is not theirs
        st.session_state["session_note"] = (
            "Only its author, or a workspace owner once it is shared, can change this session."
        )
    return False


def _rename(session_id: str, key: str) -> None:
    title = (st.session_state.get(key) or "").strip()
    if not _managed(session_id):
        return
    try:
        state.sessions().rename(session_id, title)
        st.toast("Renamed.", icon=":material/edit:")
    except ValueError as error:
        st.session_state["session_note"] = str(error)


def _delete(kind: str, session_id: str) -> None:
    if not _managed(session_id):
        return
    state.sessions().delete(session_id)
    forget(kind)
    st.toast("Session deleted.", icon=":material/delete:")


def _ask_delete(session_id: str, asked: bool) -> None:
    st.session_state[_asked_key(session_id)] = asked


def _asked_key(session_id: str) -> str:
    return f"delete_asked_{session_id}"


def _share(session_id: str, shared: bool) -> None:
    if not _managed(session_id):
        return
    state.sessions().set_visibility(session_id, "workspace" if shared else "private")
    st.toast(
        "Shared with the workspace." if shared else "Private: only its author can open it now.",
        icon=":material/group:" if shared else ":material/lock:",
    )


def _sharing_button(session: SessionInfo, noun: str) -> None:
    if session.shared:
        st.button(
            "Make private",
            key=f"unshare_{session.id}",
            icon=":material/lock:",
            on_click=_share,
            args=(session.id, False),
            help=f"Only its author can open this {noun} again.",
        )
    else:
        st.button(
            "Share with the workspace",
            key=f"share_{session.id}",
            icon=":material/group:",
            on_click=_share,
            args=(session.id, True),
            help=f"Everyone in this workspace can open this {noun}; members can add to it, viewers read it.",
        )


def send_refusal(session: SessionInfo | None) -> str | None:
    """Why this person cannot send here (None: they can): a viewer looks and exports, never spends."""
    refusal = access.spending_refusal()
    if refusal:
        return refusal
    return None if session is None or session.writable_by(access.person()) else NOT_YOURS


def _menu(kind: str, session: SessionInfo, noun: str, *, busy: bool, team: bool) -> None:
    """Rename, share (when people sign in) and delete, behind the ⋯ beside the session's name."""
    actions = "Rename, share or delete" if team else "Rename or delete"
    with st.popover("", icon=":material/more_horiz:", help=f"{actions} this {noun}", type="tertiary"):
        key = f"rename_{session.id}"
        st.text_input("Name", value=session.title, key=key, max_chars=80)
        st.button(
            "Rename",
            key=f"do_rename_{session.id}",
            on_click=_rename,
            args=(session.id, key),
            icon=":material/edit:",
        )
        st.divider()
        if team:  # with nobody signed in, there is nobody to share with
            _sharing_button(session, noun)
            st.divider()
        if st.session_state.get(_asked_key(session.id)) and not busy:
            # Deleting cannot be undone: say what goes, and wait for a second click.
            st.warning(
                f"Delete **{ui.escape_md(session.title or f'Untitled {noun}')}** for good, with every "
                "message and answer in it? The requests it made stay in the request log (Dashboard).",
                icon=":material/delete_forever:",
            )
            with st.container(horizontal=True, gap="small"):
                st.button(
                    f"Delete {noun}",
                    key=f"delete_confirmed_{session.id}",
                    type="primary",
                    icon=":material/delete:",
                    on_click=_delete,
                    args=(kind, session.id),
                )
                st.button(
                    "Cancel", key=f"delete_cancelled_{session.id}", on_click=_ask_delete, args=(session.id, False)
                )
        else:
            st.button(
                f"Delete this {noun}",
                key=f"delete_{session.id}",
                on_click=_ask_delete,
                args=(session.id, True),
                icon=":material/delete:",
                disabled=busy,
                help="Stop the answer that is streaming first."
                if busy
                else "Asks before it deletes; its request-log rows stay on the Dashboard.",
            )


def header(kind: str, session: SessionInfo | None, *, busy: bool) -> None:
    """The session's name, with rename, delete, and sharing with the workspace (for whoever
    may manage it: its author, or a workspace owner once it is shared)."""
    noun = _NOUN.get(kind, "session")
    if session is None:
        st.caption(f"New {noun}: it is saved when you send the first message.")
        return
    row = st.container(horizontal=True, vertical_alignment="center", gap="small")
    with row:
        st.markdown(f"**{ui.literal_label(session.title or f'Untitled {noun}')}**")
        team = access.signed_in()
        if session.shared and team:
            st.badge("Shared with the workspace", icon=":material/group:", color="blue")
        if session.manageable_by(access.person()):
            _menu(kind, session, noun, busy=busy, team=team)
    note = st.session_state.pop("session_note", None)
    if note:
        st.warning(ui.escape_md(note))
