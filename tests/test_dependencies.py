"""No silent skips in CI: with CONDUCTOR_REQUIRE_SERVICES=1 (`.ci/run`), a test whose
dependency is missing fails; without it, it is skipped with the reason. Shown for real with
the local model's package hidden from a pytest run (as if llama-cpp-python had failed to build)."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A pytest plugin (-p) that makes `import llama_cpp` fail, as on a machine where it did not build.
HIDE_LLAMA_CPP = """
import sys

class _Hidden:
    def find_spec(self, name, path=None, target=None):
        if name == "llama_cpp" or name.startswith("llama_cpp."):
            raise ModuleNotFoundError(f"No module named {name!r} (hidden for this test)", name=name)
        return None

sys.meta_path.insert(0, _Hidden())
"""


def run_local_model_tests(tmp_path: Path, *files: str, require: bool) -> subprocess.CompletedProcess[str]:
    (tmp_path / "hide_llama_cpp.py").write_text(HIDE_LLAMA_CPP)
    env = {k: v for k, v in os.environ.items() if k != "CONDUCTOR_REQUIRE_SERVICES"}
    env["PYTHONPATH"] = os.pathsep.join([str(tmp_path), str(ROOT)])
    if require:
        env["CONDUCTOR_REQUIRE_SERVICES"] = "1"
    command = [sys.executable, "-m", "pytest", "-p", "hide_llama_cpp", "-p", "no:cacheprovider", "-q", "-rs"]
    return subprocess.run([*command, *files], cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


LOCAL_MODEL_TESTS = ("tests/test_local_provider.py", "tests/test_local_prompt.py")


def test_a_missing_local_model_is_a_skip_on_a_developer_machine(tmp_path):
    run = run_local_model_tests(tmp_path, *LOCAL_MODEL_TESTS, require=False)
    assert run.returncode == 0, run.stdout[-3000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert "failed" not in summary and "error" not in summary and "skipped" in summary, summary
    assert "llama_cpp could not be imported" in run.stdout


def test_a_missing_local_model_fails_in_ci(tmp_path):
    # A module that needs it at the top cannot even be collected: the run stops, failed.
    run = run_local_model_tests(tmp_path, *LOCAL_MODEL_TESTS, require=True)
    assert run.returncode != 0
    assert "Interrupted: 1 error during collection" in run.stdout
    assert "CONDUCTOR_REQUIRE_SERVICES=1 but llama_cpp could not be imported" in run.stdout
    # The tests that need it inside fail, one by one.
    run = run_local_model_tests(tmp_path, "tests/test_local_prompt.py", require=True)
    summary = run.stdout.strip().splitlines()[-1]
    assert run.returncode == 1 and "2 failed" in summary and "skipped" not in summary, summary


def test_no_test_uses_importorskip():
    """`pytest.importorskip` always skips, CI or not: tests.dependencies.require_module instead."""
    offenders = []
    for path in sorted((ROOT / "tests").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Attribute) and node.attr == "importorskip":
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert offenders == []


@pytest.mark.parametrize("require", [False, True])
def test_missing_skips_or_fails(monkeypatch, require):
    from tests import dependencies

    monkeypatch.setattr(dependencies, "REQUIRE_SERVICES", require)
    expected = pytest.fail.Exception if require else pytest.skip.Exception
    with pytest.raises(expected, match="no_such_module_here could not be imported"):
        dependencies.require_module("no_such_module_here")
