"""Who is acting, and what they may do with a piece of shared work: pure rules, no database.

A `Person` is a user acting in one workspace with one role. With no login configured there
is one implicit person, `LOCAL` (the local user, owner of the "Default" workspace): a laptop
run of the playground behaves as it always did.

Roles: an *owner* manages the workspace (members, and any shared work in it); a *member*
makes and shares work; a *viewer* opens what is shared and exports it, but spends nothing
(cannot send). Work (a session) is private to its author until shared with the workspace.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "DEFAULT_WORKSPACE_NAME",
    "LOCAL",
    "LOCAL_EMAIL",
    "LOCAL_USER_ID",
    "PRIVATE",
    "ROLES",
    "SHARED",
    "Person",
    "Role",
    "Visibility",
    "may_manage",
    "may_read",
    "may_write",
]

Role = Literal["owner", "member", "viewer"]
ROLES: tuple[str, ...] = get_args(Role)
Visibility = Literal["private", "workspace"]
PRIVATE: Visibility = "private"
SHARED: Visibility = "workspace"

#: The implicit user when nobody signs in (and the author of everything made before accounts).
LOCAL_USER_ID = "usr_local"
LOCAL_EMAIL = "local"  # not an address: no account can take it
#: Every deployment's first workspace; people who sign in with an identity provider join it.
DEFAULT_WORKSPACE_ID = "wsp_default"
DEFAULT_WORKSPACE_NAME = "Default"


@dataclass(frozen=True)
class Person:
    """A user acting in one workspace, with their role there."""

    user_id: str
    email: str
    workspace_id: str
    role: Role
    name: str = ""

    @property
    def can_send(self) -> bool:
        """Whether this person may spend (send a message, run a comparison)."""
        return self.role != "viewer"

    @property
    def label(self) -> str:
        return self.name or self.email


LOCAL = Person(LOCAL_USER_ID, LOCAL_EMAIL, DEFAULT_WORKSPACE_ID, "owner")


def may_read(person: Person, *, author: str, workspace_id: str, visibility: str) -> bool:
    """The author, or anyone in the workspace once it is shared there."""
    if workspace_id != person.workspace_id:
        return False
    return author == person.user_id or visibility == SHARED


def may_write(person: Person, *, author: str, workspace_id: str, visibility: str) -> bool:
    """Add to it (send, regenerate, vote): whoever may read it, unless they are a viewer."""
    return person.can_send and may_read(person, author=author, workspace_id=workspace_id, visibility=visibility)


def may_manage(person: Person, *, author: str, workspace_id: str, visibility: str) -> bool:
    """Rename, delete, share or make private: its author, or a workspace owner once it is shared."""
    if not may_write(person, author=author, workspace_id=workspace_id, visibility=visibility):
        return False
    return author == person.user_id or person.role == "owner"
