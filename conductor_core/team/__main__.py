"""``python -m conductor_core.team``: password accounts and roles, by hand.

    python -m conductor_core.team add-user ana@example.com --workspace Research --role owner
    python -m conductor_core.team set-password ana@example.com
    python -m conductor_core.team set-role bo@example.com --workspace Research --role viewer
    python -m conductor_core.team list

The password is asked twice at a terminal, or read as one line from standard input
(``printf '%s\\n' "$PASSWORD" | python -m …``); never from the command line, where other users
of the machine and the shell's history would see it. A workspace named for the first time is
made. The database is Conductor's (CONDUCTOR_DATABASE_URL, or the SQLite file under
CONDUCTOR_DATA_DIR), or ``--url``/``--data-dir``. Exit status: 0 done, 1 refused (the message
says why), 2 bad arguments.
"""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from ..store import RequestLog
from .people import DEFAULT_WORKSPACE_NAME, ROLES
from .store import TeamStore, Workspace


def _log(args: argparse.Namespace) -> RequestLog:
    if args.url is not None or args.data_dir is not None:
        return RequestLog(args.url, data_dir=Path(args.data_dir) if args.data_dir else None)
    from ..config import load_settings

    settings = load_settings()
    return RequestLog(settings.database_url, data_dir=settings.data_dir)


def _password(email: str) -> str:
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise ValueError("no password on standard input (one line expected)")
        return line.rstrip("\r\n")
    first = getpass.getpass(f"Password for {email}: ")
    if getpass.getpass("Again: ") != first:
        raise ValueError("the two passwords differ")
    return first


def _workspace(team: TeamStore, name: str) -> Workspace:
    found = team.workspace(name)
    if found is not None:
        return found
    made = team.add_workspace(name)
    print(f"made the workspace {made.name!r}")
    return made


def _run(args: argparse.Namespace, team: TeamStore) -> None:
    if args.command == "add-user":
        password = None if args.no_password else _password(args.email)
        user = team.add_user(args.email, name=args.name or "", password=password)
        workspace = _workspace(team, args.workspace)
        team.set_role(user.id, workspace.id, args.role)
        how = "signs in with the identity provider" if password is None else "signs in with a password"
        print(f"added {user.email} ({how}), {args.role} of {workspace.name!r}")
    elif args.command == "set-password":
        team.set_password(args.email, _password(args.email))
        print(f"the password of {args.email} is changed")
    elif args.command == "set-role":
        found = team.user(args.email)
        if found is None:
            raise ValueError(f"{args.email} has no account (add-user makes one)")
        workspace = _workspace(team, args.workspace)
        team.set_role(found.id, workspace.id, args.role)
        print(f"{found.email} is {args.role} of {workspace.name!r}")
    elif args.command == "list":
        for workspace_id, name in team.workspaces():
            print(name)
            for user, role in team.members(workspace_id):
                sign_in = "password" if user.has_password else "identity provider"
                print(f"  {user.email:<32} {role:<7} {sign_in}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conductor_core.team", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a database URL (default: CONDUCTOR_DATABASE_URL, or the SQLite file)")
    parser.add_argument("--data-dir", help="the directory of the SQLite file (default: CONDUCTOR_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    add = commands.add_parser("add-user", help="a new account, member of a workspace")
    add.add_argument("email")
    add.add_argument("--name", help="how the page names them (default: the email)")
    add.add_argument("--workspace", default=DEFAULT_WORKSPACE_NAME, help="made if new (default: %(default)s)")
    add.add_argument("--role", choices=ROLES, default="member")
    add.add_argument(
        "--no-password", action="store_true", help="no password: signs in with the identity provider ([auth])"
    )
    change = commands.add_parser("set-password", help="a new password for an account")
    change.add_argument("email")
    role = commands.add_parser("set-role", help="add an account to a workspace, or change its role there")
    role.add_argument("email")
    role.add_argument("--workspace", default=DEFAULT_WORKSPACE_NAME)
    role.add_argument("--role", choices=ROLES, required=True)
    commands.add_parser("list", help="every workspace and its members")
    args = parser.parse_args(argv)

    log = _log(args)
    try:
        _run(args, TeamStore(log))
    except ValueError as error:
        print(f"refused: {error}", file=sys.stderr)
        return 1
    finally:
        log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
