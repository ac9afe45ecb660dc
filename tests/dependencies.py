"""What a test needs from outside the code under test (a package that compiles, a browser, a
database): skipped with the reason on a developer's machine that lacks it, a failure in CI
(`CONDUCTOR_REQUIRE_SERVICES=1`, set by `.ci/run`), where a missing piece is a broken build,
not a reason to pass. Use these instead of `pytest.importorskip`, which always skips."""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import NoReturn

import pytest

__all__ = ["REQUIRE_SERVICES", "missing", "require_module"]

REQUIRE_SERVICES = os.environ.get("CONDUCTOR_REQUIRE_SERVICES") == "1"


def missing(reason: str) -> NoReturn:
    """Skip (in a test, a fixture or at module level), saying why; fail under CONDUCTOR_REQUIRE_SERVICES=1."""
    if REQUIRE_SERVICES:
        pytest.fail(f"CONDUCTOR_REQUIRE_SERVICES=1 but {reason}", pytrace=False)
    pytest.skip(reason, allow_module_level=True)


def require_module(name: str) -> ModuleType:
    """`name` imported, or `missing()` saying it is not installed."""
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        reason = f"{name} could not be imported ({exc}): pip install -r requirements.txt -r requirements-dev.txt"
    missing(reason)  # outside the except: the report shows the reason, not a chain of two errors
