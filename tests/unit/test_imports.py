"""The house stays a house: no import circle among dapo_rl's modules, and no module imports from a
higher floor than its own (the floors are read from docs/architecture.md). Every import counts,
also those inside functions and under TYPE_CHECKING."""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
SRC = REPO / "src"
DOC = REPO / "docs" / "architecture.md"


def _modules(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


def import_graph(root: Path = SRC, own_submodules: bool = False) -> dict[str, set[str]]:
    """module -> the modules of ours it imports. A package's imports of its own submodules count
    only with ``own_submodules`` (the circle check leaves them out, as Python's import does)."""
    mods = _modules(root)
    graph: dict[str, set[str]] = {}
    for name, path in mods.items():
        is_pkg = path.name == "__init__.py"
        pkg = name if is_pkg else name.rpartition(".")[0]
        deps: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    kept = pkg.split(".")[: len(pkg.split(".")) - (node.level - 1)]
                    base = ".".join(kept + ([node.module] if node.module else []))
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            for dep in targets:
                own = is_pkg and dep.startswith(name + ".")
                if dep in mods and dep != name and (own_submodules or not own):
                    deps.add(dep)
        graph[name] = deps
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def doc_floors(text: str) -> dict[str, int]:
    """``pattern -> floor`` from the lines ``floor N  <title>  name name x.* ...`` of the doc."""
    floors: dict[str, int] = {}
    for line in text.splitlines():
        match = re.match(r"floor (\d+)\s{2,}.+?\s{2,}(.*)$", line)
        if match:
            for pattern in match.group(2).split():
                floors[pattern] = int(match.group(1))
    return floors


def floor_of(module: str, floors: dict[str, int]) -> int | None:
    """The floor of ``module`` (``dapo_rl.x.y``): its exact name, else the longest ``pkg.*``."""
    name = module.removeprefix("dapo_rl.") if module != "dapo_rl" else "dapo_rl"
    if name in floors:
        return floors[name]
    parts = name.split(".")
    for cut in range(len(parts) - 1, 0, -1):
        pattern = ".".join(parts[:cut]) + ".*"
        if pattern in floors:
            return floors[pattern]
    return None


def test_no_import_circle() -> None:
    assert circles(import_graph()) == []


def test_the_circle_check_can_fail(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg.b import x\n")
    (pkg / "b.py").write_text("def f():\n    from pkg import c\n")  # inside a function: still counts
    (pkg / "c.py").write_text("import pkg.a\n")
    assert circles(import_graph(tmp_path)) == [["pkg.a", "pkg.b", "pkg.c"]]


def test_every_module_has_a_floor_in_the_doc() -> None:
    floors = doc_floors(DOC.read_text(encoding="utf-8"))
    assert sorted(set(floors.values())) == [0, 1, 2, 3, 4]
    missing = [m for m in sorted(import_graph()) if floor_of(m, floors) is None]
    assert not missing, f"give these modules a floor in docs/architecture.md: {missing}"


def test_no_module_imports_from_a_higher_floor() -> None:
    floors = doc_floors(DOC.read_text(encoding="utf-8"))
    graph = import_graph(own_submodules=True)
    upward = [
        f"{m} (floor {floor_of(m, floors)}) imports {d} (floor {floor_of(d, floors)})"
        for m in sorted(graph)
        for d in sorted(graph[m])
        if (floor_of(d, floors) or 0) > (floor_of(m, floors) or 0)
    ]
    assert not upward, "\n".join(upward)


def test_the_floor_check_can_fail() -> None:
    floors = doc_floors("floor 1  top  b\nfloor 0  ground  a  x.*\n")
    assert floors == {"b": 1, "a": 0, "x.*": 0}
    assert floor_of("dapo_rl.x.y", floors) == 0 and floor_of("dapo_rl.b", floors) == 1
    assert floor_of("dapo_rl.z", floors) is None
