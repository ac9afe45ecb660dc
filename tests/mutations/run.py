"""Does the suite catch the bugs it is meant to catch? Each `*.patch` here injects one fault
(a bug once missed, or one the tests must pin); its first line says what the fault is, and a
`Tests:` line which pytest arguments must then fail. This copies the working tree (your
uncommitted changes too) to a temporary directory, checks that those tests pass there
untouched, then applies each patch in turn, runs its tests and reverts it:

    python tests/mutations/run.py                 # every patch (about 15 minutes on 2 cores)
    python tests/mutations/run.py ratings_*       # some of them

A table says which faults were caught (their tests failed) and which survived; the exit status
is 1 when one survived or could not be tried. Slow, so CI does not run it; run it after changing
a test these patches name or the code they touch (a patch that no longer applies says so).
Set CONDUCTOR_TEST_POSTGRES_URL to run the PostgreSQL cases too.
"""

from __future__ import annotations

import argparse
import fnmatch
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent


@dataclass
class Mutation:
    name: str
    what: str
    tests: list[str]
    patch: Path

    @classmethod
    def read(cls, patch: Path) -> Mutation:
        header = patch.read_text().split("\ndiff --git ", 1)[0].strip().splitlines()
        tests = next((line.removeprefix("Tests:").strip() for line in header if line.startswith("Tests:")), "")
        if not tests:
            raise SystemExit(f"{patch.name}: no 'Tests:' line before the diff")
        return cls(patch.stem, header[0], shlex.split(tests), patch)


@dataclass
class Outcome:
    verdict: str  # caught, SURVIVED, or why it could not be tried
    failed: int
    seconds: float


def copy_tree(destination: Path) -> None:
    """The files git knows of or would add (tracked and untracked, not ignored), as they are now."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout
    for name in filter(None, listed.decode().split("\0")):
        source = ROOT / name
        if source.is_file():
            target = destination / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def pytest(tree: Path, args: list[str], log: Path) -> tuple[int, int]:
    """Runs pytest in `tree` (its own code, not this checkout's); exit code and failed tests."""
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args]
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    with log.open("w") as out:
        code = subprocess.run(command, cwd=tree, env=env, stdout=out, stderr=subprocess.STDOUT).returncode
    failed = sum(1 for line in log.read_text().splitlines() if line.startswith(("FAILED ", "ERROR ")))
    return code, failed


def git_apply(tree: Path, patch: Path, *, reverse: bool = False) -> subprocess.CompletedProcess[str]:
    command = ["git", "apply", *(["--reverse"] if reverse else []), str(patch)]
    return subprocess.run(command, cwd=tree, capture_output=True, text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="patch names or globs (default: all)")
    parser.add_argument("--keep", action="store_true", help="keep the copy and the logs")
    options = parser.parse_args()
    mutations = [Mutation.read(p) for p in sorted(HERE.glob("*.patch"))]
    if options.names:
        mutations = [m for m in mutations if any(fnmatch.fnmatch(m.name, pattern) for pattern in options.names)]
    if not mutations:
        print("no patch matches", file=sys.stderr)
        return 1

    work = Path(tempfile.mkdtemp(prefix="conductor-mutations-"))
    tree, logs = work / "tree", work / "logs"
    logs.mkdir()
    copy_tree(tree)
    print(f"copied the working tree to {tree}")

    # Each selection must pass with no fault injected, or a "caught" below would mean nothing.
    for tests in dict.fromkeys(tuple(m.tests) for m in mutations):
        print(f"no fault: {' '.join(tests)} ...", flush=True)
        log = logs / f"baseline-{len(list(logs.iterdir()))}.log"
        code, failed = pytest(tree, list(tests), log)
        if code != 0:
            print(f"they fail with no fault injected ({failed} failed, pytest exit {code}): see {log}")
            return 2

    outcomes: dict[str, Outcome] = {}
    for mutation in mutations:
        print(f"{mutation.name}: {mutation.what}", flush=True)
        applied = git_apply(tree, mutation.patch)
        if applied.returncode != 0:
            outcomes[mutation.name] = Outcome(f"patch does not apply: {applied.stderr.strip()}", 0, 0.0)
            continue
        started = time.monotonic()
        try:
            code, failed = pytest(tree, mutation.tests, logs / f"{mutation.name}.log")
        finally:
            reverted = git_apply(tree, mutation.patch, reverse=True)
            if reverted.returncode != 0:
                raise SystemExit(f"could not revert {mutation.name}: {reverted.stderr}")
        # pytest's exit codes: 1 tests failed, 0 all passed, 2+ interrupted/usage/no tests.
        verdict = {0: "SURVIVED", 1: "caught"}.get(code, f"pytest exit {code}")
        outcomes[mutation.name] = Outcome(verdict, failed, time.monotonic() - started)

    width = max(len(m.name) for m in mutations)
    print(f"\n{'fault':<{width}}  {'result':<8}  {'failed':>6}  {'time':>6}  tests")
    for mutation in mutations:
        o = outcomes[mutation.name]
        print(
            f"{mutation.name:<{width}}  {o.verdict:<8}  {o.failed:>6}  {o.seconds:>5.0f}s  {' '.join(mutation.tests)}"
        )
    if options.keep:
        print(f"\nkept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if all(o.verdict == "caught" for o in outcomes.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
