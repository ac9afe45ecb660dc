"""People: users, workspaces and roles (issue 23, points 1 and 2).

people.py    `Person` (a user acting in a workspace, with a role), the local user and the
             Default workspace, and the rules of who may read, add to and manage shared work
store.py     the users, workspaces and memberships tables, `TeamStore` (argon2id passwords)
__main__.py  ``python -m conductor_core.team add-user EMAIL --workspace W --role owner``
"""

from __future__ import annotations

from .people import (
    DEFAULT_WORKSPACE_ID,
    DEFAULT_WORKSPACE_NAME,
    LOCAL,
    LOCAL_EMAIL,
    LOCAL_USER_ID,
    PRIVATE,
    ROLES,
    SHARED,
    Person,
    Role,
    Visibility,
    may_manage,
    may_read,
    may_write,
)
from .store import MIN_PASSWORD_CHARS, Membership, TeamStore, User, Workspace

__all__ = [
    "DEFAULT_WORKSPACE_ID",
    "DEFAULT_WORKSPACE_NAME",
    "LOCAL",
    "LOCAL_EMAIL",
    "LOCAL_USER_ID",
    "MIN_PASSWORD_CHARS",
    "PRIVATE",
    "ROLES",
    "SHARED",
    "Membership",
    "Person",
    "Role",
    "TeamStore",
    "User",
    "Visibility",
    "Workspace",
    "may_manage",
    "may_read",
    "may_write",
]
