"""docs/ARCHITECTURE.md stays true: the files and classes it names exist, and
protege's modules import one another in one direction (no cycles, lazy
imports inside functions included)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PAGE = ROOT / "docs" / "ARCHITECTURE.md"


def test_every_file_and_class_the_page_names_exists():
    text = PAGE.read_text()
    paths = set(re.findall(r"`(protege/[\w/]+(?:\.py)?/?)`", text))
    assert len(paths) >= 30
    missing = [p for p in paths if not (ROOT / p).exists()]
    assert not missing, f"ARCHITECTURE.md names files that do not exist: {missing}"
    # "`protege/x.py` (`Name`, ...)": each name is defined in that file.
    for path, names in re.findall(r"`(protege/[\w/]+\.py)` \(([^)]*)\)", text):
        source = (ROOT / path).read_text()
        for name in re.findall(r"`(\w+)`", names):
            assert re.search(rf"^\s*(?:class|def|async def) {name}\b", source, re.M), f"{name} not in {path}"


def _import_graph() -> dict[str, set[str]]:
    mods = {}
    for p in (ROOT / "protege").rglob("*.py"):
        name = ".".join(p.relative_to(ROOT).with_suffix("").parts)
        mods[name.removesuffix(".__init__")] = p

    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {m: set() for m in mods}
    for m, p in mods.items():
        for node in ast.walk(ast.parse(p.read_text())):
            targets: list[str] = []
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("protege"):
                targets = [f"{node.module}.{a.name}" for a in node.names] + [node.module]
            elif isinstance(node, ast.Import):
                targets = [a.name for a in node.names if a.name.startswith("protege")]
            for t in targets:
                r = resolve(t)
                # A package's __init__ naming its own submodules is not a back-arrow.
                if r and r != m and not (p.name == "__init__.py" and r.startswith(m + ".")):
                    graph[m].add(r)
    # Importing a submodule runs its packages' __init__ first: not an edge we draw.
    return {m: {t for t in ts if not m.startswith(t + ".")} for m, ts in graph.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
                out.append(sorted(comp))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_no_import_cycles():
    graph = _import_graph()
    assert sum(len(v) for v in graph.values()) > 200  # the graph was read
    assert _cycles(graph) == []


def test_a_cycle_would_be_found():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c"]]


def test_the_store_knows_none_of_its_users():
    """The store sits below every stage: the tables it serves come to it from
    above (protege/database.py), so no module under protege/store/ names a stage."""
    graph = _import_graph()
    leaves = {"protege.config", "protege.ids", "protege.safejson"}
    used = {t for m, ts in graph.items() if m.startswith("protege.store") for t in ts}
    assert used and all(t.startswith("protege.store") or t in leaves for t in used), used


def test_stages_reach_the_database_through_the_store():
    """Stages read and write through the store's ways in (``read``, ``write``,
    ``has_table``, ``reflect``), never through its SQLAlchemy engine."""
    raw = re.compile(r"\bstore\.engine\b")
    users = [str(p.relative_to(ROOT)) for p in (ROOT / "protege").rglob("*.py")
             if not p.is_relative_to(ROOT / "protege" / "store") and raw.search(p.read_text())]
    assert users == []
