"""``python -m conductor_core.store``: the request log's database schema, by hand.

    python -m conductor_core.store upgrade            # what every process does on open
    python -m conductor_core.store current            # the database's revision, and this code's
    python -m conductor_core.store check              # models vs database: what a migration would add
    python -m conductor_core.store history
    python -m conductor_core.store downgrade 0003     # development only: "base" empties it
    python -m conductor_core.store revision --autogenerate -m "experiments get a dataset id"

The database is the one Conductor uses (CONDUCTOR_DATABASE_URL, or the SQLite file under
CONDUCTOR_DATA_DIR: the same settings, .env and conductor.toml), or ``--url``. Exit status:
0 done, 1 the database cannot be used or differs from the models, 2 bad arguments.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .database import Database
from .migrate import (
    HEAD,
    SchemaError,
    current_revisions,
    differences,
    downgrade,
    new_revision,
    refuse_unknown,
    upgrade,
)


def _database(args: argparse.Namespace) -> Database:
    if args.url is not None or args.data_dir is not None:
        database = Database(args.url, Path(args.data_dir) if args.data_dir else None)
    else:
        from ..config import load_settings

        settings = load_settings()
        database = Database(settings.database_url, settings.data_dir)
    if database.sqlite_dir is not None:
        database.sqlite_dir.mkdir(parents=True, exist_ok=True)
    return database


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m conductor_core.store", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a database URL (default: CONDUCTOR_DATABASE_URL, or the SQLite file)")
    parser.add_argument("--data-dir", help="the directory of the SQLite file (default: CONDUCTOR_DATA_DIR)")
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser("upgrade", help="bring the database to a revision (default: the newest)")
    up.add_argument("revision", nargs="?", default="head")
    commands.add_parser("current", help="the database's revision and this code's newest")
    commands.add_parser("check", help="differences between the models and the database (none: exit 0)")
    commands.add_parser("history", help="every revision, newest first")
    down = commands.add_parser("downgrade", help="go back to a revision (development; 'base' empties it)")
    down.add_argument("revision")
    new = commands.add_parser("revision", help="write the next revision file into migrations/versions/")
    new.add_argument("-m", "--message", required=True, help="what the revision changes, one line")
    new.add_argument(
        "--autogenerate",
        action="store_true",
        help="fill it with what the models have that the newest schema lacks (review it: renames, data, rollups)",
    )
    args = parser.parse_args(argv)

    if args.command == "history":
        from alembic.script import ScriptDirectory

        from .migrate import SCRIPT_DIR

        for script in ScriptDirectory(str(SCRIPT_DIR)).walk_revisions():
            print(f"{script.revision}  {(script.doc or '').splitlines()[0] if script.doc else ''}")
        return 0
    if args.command == "revision":
        engine = _database(args).engine if args.url is not None else None
        path = new_revision(args.message, autogenerate=args.autogenerate, engine=engine)
        print(
            f"wrote {path}\nreview it, then set HEAD = {path.name.split('_')[0]!r} in conductor_core/store/migrate.py"
        )
        return 0

    database = _database(args)
    label = database.safe_url
    try:
        if args.command == "upgrade":
            before = upgrade(database.engine, label, args.revision)
            with database.engine.connect() as conn:
                now = ", ".join(current_revisions(conn))
            print(f"{label}: " + (f"upgraded from {', '.join(before)} to {now}" if before else f"already at {now}"))
        elif args.command == "current":
            with database.engine.connect() as conn:
                found = current_revisions(conn)
            refuse_unknown(found, label)
            state = "up to date" if found == (HEAD,) else "needs `upgrade`" if found else "not versioned"
            print(f"{label}: {', '.join(found) or 'no revision'} (this code's newest: {HEAD}; {state})")
        elif args.command == "check":
            differing = differences(database.engine)
            for difference in differing:
                print(difference)
            print(
                f"{label}: "
                + (f"{len(differing)} difference(s) from the models" if differing else "matches the models")
            )
            return 1 if differing else 0
        elif args.command == "downgrade":
            before = downgrade(database.engine, label, args.revision)
            print(f"{label}: downgraded from {', '.join(before) or 'nothing'} to {args.revision}")
    except SchemaError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    finally:
        database.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
