"""People in the request log's database: users, workspaces and memberships (migration 0014).

    users        id PK "usr_…", email (unique; "local" for the implicit local user), name,
                 password_hash (argon2id, NULL: signs in with the identity provider only), created_at
    workspaces   id PK "wsp_…", name (unique), created_at
    memberships  (user_id → users, workspace_id → workspaces) PK, role (owner | member | viewer), created_at

The migration makes the local user and the "Default" workspace (ids in people.py), the local
user its owner. Passwords are hashed with argon2id (argon2-cffi's defaults, RFC 9106's
low-memory profile); a password is never stored, logged or returned. Thread-safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import Column, ForeignKey, MetaData, String, Table, insert, select, update
from sqlalchemy.exc import IntegrityError

from ..models import new_id, utcnow
from ..store import RequestLog
from ..store.schema import SafeString, UTCDateTime
from .people import DEFAULT_WORKSPACE_ID, ROLES, Person, Role

__all__ = [
    "MIN_PASSWORD_CHARS",
    "Membership",
    "TeamStore",
    "User",
    "Workspace",
    "memberships_table",
    "metadata",
    "users_table",
    "workspaces_table",
]

MIN_PASSWORD_CHARS = 8

metadata = MetaData()

users_table = Table(
    "users",
    metadata,
    Column("id", String(), primary_key=True),
    Column("email", SafeString(), nullable=False, unique=True),
    Column("name", SafeString()),
    Column("password_hash", String()),
    Column("created_at", UTCDateTime(), nullable=False),
)

workspaces_table = Table(
    "workspaces",
    metadata,
    Column("id", String(), primary_key=True),
    Column("name", SafeString(), nullable=False, unique=True),
    Column("created_at", UTCDateTime(), nullable=False),
)

memberships_table = Table(
    "memberships",
    metadata,
    Column("user_id", String(), ForeignKey("users.id"), primary_key=True),
    Column("workspace_id", String(), ForeignKey("workspaces.id"), primary_key=True),
    Column("role", String(), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)


@dataclass(frozen=True)
class User:
    id: str
    email: str
    name: str
    has_password: bool
    created_at: datetime


@dataclass(frozen=True)
class Workspace:
    id: str
    name: str


@dataclass(frozen=True)
class Membership:
    workspace: Workspace
    role: Role


def _user(row) -> User:
    return User(row.id, row.email, row.name or "", row.password_hash is not None, row.created_at)


def normalize_email(email: str) -> str:
    return email.strip().lower()


def _checked_email(email: str) -> str:
    email = normalize_email(email)
    local, at, domain = email.partition("@")
    if not (local and at and domain) or any(c.isspace() for c in email):
        raise ValueError(f"{email!r} is not an email address (name@example.com)")
    return email


def _checked_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_CHARS:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return password


class TeamStore:
    """Users, workspaces and memberships in the request log's database."""

    def __init__(self, log: RequestLog, *, hasher: PasswordHasher | None = None) -> None:
        self.engine = log.engine
        log.require_tables(metadata)
        self._hasher = hasher or PasswordHasher()
        # Verified against when the email is unknown, so a wrong email costs what a wrong password does.
        self._decoy = self._hasher.hash("no such account")

    # --- users -------------------------------------------------------------------------------

    def add_user(self, email: str, *, name: str = "", password: str | None = None) -> User:
        """A new user (ValueError: not an address, already there, or a password too short)."""
        email = _checked_email(email)
        hashed = self._hasher.hash(_checked_password(password)) if password is not None else None
        row = {"id": new_id("usr"), "email": email, "name": name.strip() or None, "password_hash": hashed}
        try:
            with self.engine.begin() as conn:
                conn.execute(insert(users_table).values(**row, created_at=utcnow()))
        except IntegrityError:  # the email is unique: here already, or made a moment ago by another process
            raise ValueError(f"{email} has an account already") from None
        found = self.user(email)
        assert found is not None
        return found

    def user(self, email: str) -> User | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(users_table).where(users_table.c.email == normalize_email(email))).first()
        return _user(row) if row is not None else None

    def set_password(self, email: str, password: str) -> None:
        hashed = self._hasher.hash(_checked_password(password))
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(users_table).where(users_table.c.email == normalize_email(email)).values(password_hash=hashed)
            ).rowcount
        if not changed:
            raise ValueError(f"{normalize_email(email)} has no account")

    def check_password(self, email: str, password: str) -> User | None:
        """The user whose password this is, else None (an unknown email and a wrong password
        take the same time and give the same answer)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(users_table).where(users_table.c.email == normalize_email(email))).first()
        stored = row.password_hash if row is not None and row.password_hash else None
        try:
            self._hasher.verify(stored or self._decoy, password)
        except (VerificationError, InvalidHashError):
            return None
        if stored is None or row is None:
            return None
        if self._hasher.check_needs_rehash(stored):  # the library's parameters moved on: keep up
            self.set_password(row.email, password)
        return _user(row)

    def signed_in(self, email: str, name: str = "") -> User:
        """The user an identity provider vouched for: made on the first sign-in, as a member of
        the Default workspace."""
        email = normalize_email(email)
        found = self.user(email)
        if found is not None:
            return found
        try:
            made = self.add_user(email, name=name)
        except ValueError:  # another tab or replica made it a moment ago
            again = self.user(email)
            if again is None:
                raise
            return again
        self.set_role(made.id, DEFAULT_WORKSPACE_ID, "member")
        return made

    # --- workspaces and roles ------------------------------------------------------------------

    def add_workspace(self, name: str) -> Workspace:
        name = " ".join(name.split())
        if not name:
            raise ValueError("a workspace needs a name")
        if self.workspace(name) is not None:
            raise ValueError(f"there is a workspace named {name!r} already")
        workspace = Workspace(new_id("wsp"), name)
        with self.engine.begin() as conn:
            conn.execute(insert(workspaces_table).values(id=workspace.id, name=name, created_at=utcnow()))
        return workspace

    def workspaces(self) -> list[tuple[str, str]]:
        """Every workspace's (id, name), Default first."""
        w = workspaces_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(select(w.id, w.name).order_by(w.id != DEFAULT_WORKSPACE_ID, w.name)).all()
        return [(r.id, r.name) for r in rows]

    def workspace(self, name: str) -> Workspace | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                select(workspaces_table).where(workspaces_table.c.name == " ".join(name.split()))
            ).first()
        return Workspace(row.id, row.name) if row is not None else None

    def set_role(self, user_id: str, workspace_id: str, role: str) -> None:
        """Make the user a member of the workspace with `role`, or change their role there."""
        if role not in ROLES:
            raise ValueError(f"the role {role!r} is not one of {', '.join(ROLES)}")
        m = memberships_table.c
        with self.engine.begin() as conn:
            changed = conn.execute(
                update(memberships_table).where(m.user_id == user_id, m.workspace_id == workspace_id).values(role=role)
            ).rowcount
            if not changed:
                conn.execute(
                    insert(memberships_table).values(
                        user_id=user_id, workspace_id=workspace_id, role=role, created_at=utcnow()
                    )
                )

    def memberships(self, user_id: str) -> list[Membership]:
        """The user's workspaces (Default first, then by name) and their role in each."""
        m, w = memberships_table.c, workspaces_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(w.id, w.name, m.role)
                .join(workspaces_table, w.id == m.workspace_id)
                .where(m.user_id == user_id)
                .order_by(w.id != DEFAULT_WORKSPACE_ID, w.name)
            ).all()
        return [Membership(Workspace(r.id, r.name), r.role) for r in rows]

    def members(self, workspace_id: str) -> list[tuple[User, Role]]:
        m = memberships_table.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(users_table, m.role)
                .join(memberships_table, m.user_id == users_table.c.id)
                .where(m.workspace_id == workspace_id)
                .order_by(users_table.c.email)
            ).all()
        return [(_user(r), r.role) for r in rows]

    def person(self, user: User, workspace_id: str | None = None) -> Person | None:
        """The user acting in `workspace_id` (default: their first), or None when they belong
        to no workspace (or not to that one)."""
        for membership in self.memberships(user.id):
            if workspace_id is None or membership.workspace.id == workspace_id:
                return Person(user.id, user.email, membership.workspace.id, membership.role, user.name)
        return None
