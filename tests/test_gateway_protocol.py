"""The gateway's protocol details (issue 18's small items): the import graph of the package,
public binds and key length, /health without a key, HEAD on every GET route, 400 messages in
users' words, and the upstream's own error code kept."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _gateway_imports() -> dict[str, set[str]]:
    """Each gateway module and the gateway modules it imports (at the top or inside a function)."""
    graph: dict[str, set[str]] = {}
    for path in sorted((ROOT / "gateway").glob("*.py")):
        name = path.stem
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                if node.module:
                    found.add(node.module.split(".")[0])
                else:
                    found.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("gateway."):
                found.add(node.module.split(".")[1])
        graph[name] = found - {name}
    return graph


def test_the_gateway_package_has_no_import_cycle() -> None:
    graph = _gateway_imports()
    assert "core" in graph["openai_api"]  # the graph is read (a sanity check on the parser)

    def cycle_from(start: str, path: list[str]) -> list[str] | None:
        for nxt in sorted(graph.get(path[-1], ())):
            if nxt == start:
                return [*path, nxt]
            if nxt not in path:
                found = cycle_from(start, [*path, nxt])
                if found:
                    return found
        return None

    cycles = [c for c in (cycle_from(m, [m]) for m in graph) if c]
    assert not cycles, " -> ".join(cycles[0])
