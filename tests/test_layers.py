"""The package's layers: routing does not depend on the workbench (the `preferred` policy reads
ratings through `routing.preference.RatingsSource`, which the workbench provides, wired by
`conductor_core.router.Conductor`)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ROUTING = ROOT / "conductor_core" / "routing"


def imported_modules(source: str, package: str) -> set[str]:
    """Every module a file of `package` imports, as an absolute name: at the top, in functions
    and under `TYPE_CHECKING` alike (relative imports resolved against `package`)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                module = ".".join(parts[: len(parts) - node.level + 1] + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)  # `from .. import workbench`
    return found


def from_workbench(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if m.split(".")[:2] == ["conductor_core", "workbench"])


def test_the_checker_sees_every_kind_of_import():
    source = (
        "from typing import TYPE_CHECKING\n"
        "from ..workbench.ratings import Rating\n"
        "from .. import workbench\n"
        "from . import ranking\n"
        "if TYPE_CHECKING:\n"
        "    import conductor_core.workbench.arena\n"
        "def later():\n"
        "    from ..store import RequestLog\n"
    )
    found = imported_modules(source, "conductor_core.routing")
    assert from_workbench(found) == [
        "conductor_core.workbench",
        "conductor_core.workbench.arena",
        "conductor_core.workbench.ratings",
        "conductor_core.workbench.ratings.Rating",
    ]
    assert {"conductor_core.routing.ranking", "conductor_core.store"} <= found


def test_routing_imports_nothing_from_the_workbench():
    offenders = {
        path.name: from_workbench(imported_modules(path.read_text(), "conductor_core.routing"))
        for path in sorted(ROUTING.glob("*.py"))
    }
    assert {name: modules for name, modules in offenders.items() if modules} == {}


def loaded_workbench_modules(statement: str) -> list[str]:
    code = f"import sys\n{statement}\nprint(sorted(m for m in sys.modules if m.startswith('conductor_core.workbench')))"
    run = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    return ast.literal_eval(run.stdout.strip())


def test_importing_routing_loads_no_workbench_module_even_indirectly():
    assert loaded_workbench_modules("import conductor_core.routing") == []
    # The sync facade is where the two meet: it gives the core the workbench's ratings.
    assert "conductor_core.workbench.preference" in loaded_workbench_modules("import conductor_core.router")
