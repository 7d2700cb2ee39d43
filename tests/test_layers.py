"""Layers you can see: one layer per top-level folder (core < processors < manifests < batch_jobs <
{triggers, dropbatch}), no circle of files, the low layers (config, storage, status, logs, the
domain types) never import the command-line layer, and the status package only carries the
domain types.

Read from the source (every import anywhere in a file, followed through first-party modules),
so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from dropbatch.build_function import ROOT, import_graph

LOW_LAYERS = sorted(
    [
        "core.config",
        "core.logs",
        "core.domain",
        *(f"core.storage.{p.stem}" for p in (ROOT / "core" / "storage").glob("*.py")),
        *(f"core.status.{p.stem}" for p in (ROOT / "core" / "status").glob("*.py")),
    ]
)
COMMAND_LINE = ("dropbatch.cli", "dropbatch.watcher", "dropbatch.demo", "dropbatch.cost",
                "dropbatch.doctor", "dropbatch.access", "dropbatch.canary",
                "dropbatch.build_function")  # fmt: skip
DOMAIN_TYPES = {"VideoInfo", "Plan", "PlannedItem", "Chunk", "JobError"}


@pytest.mark.parametrize("module", LOW_LAYERS)
def test_a_low_layer_never_imports_the_command_line_layer(module: str) -> None:
    reached, _ = import_graph(module.removesuffix(".__init__"))
    assert reached, f"{module} not found"
    assert not reached & set(COMMAND_LINE), (
        f"{module} reaches {sorted(reached & set(COMMAND_LINE))}"
    )


def test_the_status_package_defines_no_domain_type() -> None:
    defined = {
        node.name: path.name
        for path in (ROOT / "core" / "status").glob("*.py")
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.ClassDef)
    }
    assert defined, "no classes found: the check would pass vacuously"
    assert not DOMAIN_TYPES & set(defined), {n: defined[n] for n in DOMAIN_TYPES & set(defined)}
    domain = ast.parse((ROOT / "core" / "domain.py").read_text())
    assert {n.name for n in ast.walk(domain) if isinstance(n, ast.ClassDef)} >= DOMAIN_TYPES


# -- one layer per top-level folder -----------------------------------------------------------
# From the ground up; a folder imports only its own and lower ones. triggers/ (the Cloud
# Functions) and dropbatch/ (the command line and operator tools) are both entry points on
# top: neither imports the other, so the function ships without the command line and the
# command line starts jobs through batch_jobs/ as the trigger does.
LAYERS = {
    "core": 0,
    "processors": 1,
    "manifests": 2,
    "batch_jobs": 3,
    "triggers": 4,
    "dropbatch": 4,
}


def first_party_modules(root: Path) -> dict[str, Path]:
    """Every module of the layered folders, by dotted name (a package by its own name)."""
    found = {}
    for top in LAYERS:
        for path in sorted((root / top).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def _type_checking_only(tree: ast.AST) -> set[int]:
    """The nodes under `if TYPE_CHECKING:`: never run, so they order no loading."""
    skipped = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return skipped


def file_imports(root: Path) -> dict[str, dict[str, bool]]:
    """Module -> {first-party module it imports: whether at run time (not TYPE_CHECKING-only)},
    every import anywhere in the file, inside functions included."""
    modules = first_party_modules(root)

    def owner(name: str) -> str | None:  # the longest prefix that is a module of ours
        parts = name.split(".")
        for end in range(len(parts), 0, -1):
            if ".".join(parts[:end]) in modules:
                return ".".join(parts[:end])
        return None

    graph: dict[str, dict[str, bool]] = {}
    for module, path in modules.items():
        tree = ast.parse(path.read_text(), str(path))
        typing_only = _type_checking_only(tree)
        package = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, bool] = {}
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*parent, base] if base else parent)
                # `from pkg import mod` imports mod when it is a module, else pkg's name.
                names = [
                    f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                    for a in node.names
                ]
            else:
                continue
            for name in names:
                target = owner(name)
                if target and target != module:
                    edges[target] = edges.get(target, False) or id(node) not in typing_only
        graph[module] = edges
    return graph


def upward_imports(root: Path) -> list[str]:
    """Imports of a higher folder (or of the other top folder) from a lower one."""
    bad = []
    for module, edges in file_imports(root).items():
        low = module.split(".")[0]
        for target in edges:
            high = target.split(".")[0]
            if high != low and LAYERS[high] >= LAYERS[low]:
                bad.append(f"{module} -> {target}")
    return sorted(bad)


def file_cycles(root: Path) -> list[list[str]]:
    """Circles of files: strongly connected groups of the run-time import graph (Tarjan)."""
    graph = {m: [t for t, runtime in e.items() if runtime] for m, e in file_imports(root).items()}
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    cycles = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                cycles.append(sorted(group))

    for node in graph:
        if node not in index:
            visit(node)
    return cycles


def test_every_folder_imports_only_its_own_and_lower_layers() -> None:
    assert len(file_imports(ROOT)) > 100, "too few modules read: the check would pass vacuously"
    assert upward_imports(ROOT) == []


def test_no_circle_of_files() -> None:
    assert file_cycles(ROOT) == []


def test_the_checks_see_an_upward_import_and_a_circle(tmp_path: Path) -> None:
    """The two checks above on a tree made to break both rules: they must say so."""
    for top in LAYERS:
        (tmp_path / top).mkdir()
        (tmp_path / top / "__init__.py").write_text("")
    (tmp_path / "core" / "low.py").write_text("def f():\n    from processors import high\n")
    (tmp_path / "processors" / "high.py").write_text("from processors.other import g\n")
    (tmp_path / "processors" / "other.py").write_text("import processors.high\n")
    (tmp_path / "batch_jobs" / "typed.py").write_text(
        "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dropbatch import tool\n"
    )
    (tmp_path / "dropbatch" / "tool.py").write_text("from triggers import main\n")
    (tmp_path / "triggers" / "main.py").write_text("")
    assert upward_imports(tmp_path) == [
        "batch_jobs.typed -> dropbatch.tool",  # a type-only import counts for the layers
        "core.low -> processors.high",
        "dropbatch.tool -> triggers.main",
    ]
    assert file_cycles(tmp_path) == [["processors.high", "processors.other"]]
