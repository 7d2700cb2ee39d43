"""Layers you can see: the low layers (config, storage, status, logs, the domain types) never
import the command-line layer, and the status package only carries the domain types.

Read from the source (every import anywhere in a file, followed through first-party modules),
so an import inside a function counts as much as one at the top.
"""

from __future__ import annotations

import ast

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
