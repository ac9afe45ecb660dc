"""Suite-wide checks, and the fixtures many test modules share.

Every key a test registers (through `Settings` or `register_secret`) stays registered for the
rest of the pytest process, and `redact()` removes six of its letters or digits in a row from
every later text: a key made of words would silently edit unrelated tests' messages. So each
test's newly registered keys are checked against tests/secret_support.py's rule, and the test
that registered an unfit one fails, naming it.
"""

from __future__ import annotations

import pytest

from conductor_core import secrets
from tests.secret_support import problems

# The shared fixtures' modules, as plugins: a test module names a fixture as a parameter and
# imports only helpers (the modules' names as tests import them; a dependency before its users).
pytest_plugins = ["tests.store_backends", "workbench_support", "browser_support", "tests.playground_support"]

_seen: frozenset[str] = frozenset()  # checked already (the first test also checks what imports registered)


@pytest.fixture(autouse=True)
def _test_keys_are_random_looking():
    global _seen
    yield
    registered = secrets._registry.registered()
    new, _seen = registered - _seen, registered
    unfit = {key: found for key in sorted(new) if (found := problems(key))}
    if unfit:
        lines = [f"  {key!r}: {'; '.join(found)}" for key, found in unfit.items()]
        pytest.fail(
            "keys registered by this test would redact ordinary text from every later test in the run; "
            "use random-looking keys (see tests/secret_support.py):\n" + "\n".join(lines),
            pytrace=False,
        )
