"""Build the Cloud Functions source folder from this repository:
`python -m dropbatch.build_function OUT_DIR`.

The folder holds `main.py` (the entry points, re-exported from `triggers.main`), exactly the
first-party modules those entry points import (followed statically through every `import`,
including the lazy ones inside functions, so a backend chosen by configuration is there), the
package data those packages ship, and a `requirements.txt`: the lock `locks/function.txt`,
every distribution pinned with the registry's hashes, compiled (`python -m dropbatch.locks`)
from `locks/function.in`, pyproject's lines for the third-party distributions those modules
import. Terraform zips this folder; the tests serve this folder.
"""

from __future__ import annotations

import argparse
import ast
import re
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("batch_jobs", "core", "dropbatch", "manifests", "processors", "triggers")
ENTRY = "triggers.main"
FUNCTIONS = ("on_inbox_object", "on_batch_state", "on_sweep")
# Imported by the Functions runtime itself, not by our code; always required.
RUNTIME_REQUIREMENTS = ("functions-framework",)
# The function's lock and the requirement lines it was compiled from (dropbatch/locks.py).
LOCK = Path("locks") / "function.txt"
LOCK_INPUT = Path("locks") / "function.in"


def module_file(name: str, root: Path = ROOT) -> Path | None:
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def imports_of(path: Path, module: str) -> set[str]:
    """Every module name `path` imports, anywhere in the file (absolute names)."""
    names: set[str] = set()
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            # `from pkg import mod` imports a module when mod is one.
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(entry: str = ENTRY, root: Path = ROOT) -> tuple[set[str], set[str]]:
    """(first-party modules, third-party module names) reachable from `entry`."""
    modules, importers = import_graph(entry, root)
    return modules, set(importers)


def import_graph(entry: str = ENTRY, root: Path = ROOT) -> tuple[set[str], dict[str, set[str]]]:
    """(first-party modules, third-party module name → the first-party modules importing it)."""
    seen: set[str] = set()
    third: dict[str, set[str]] = {}
    todo = [entry]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            continue
        seen.add(name)
        parts = name.split(".")
        todo.extend(".".join(parts[:i]) for i in range(1, len(parts)))  # parent packages
        for imported in imports_of(path, name):
            top = imported.split(".")[0]
            if top in FIRST_PARTY:
                todo.append(imported)
            elif top and top not in sys.stdlib_module_names and top != "__future__":
                third.setdefault(imported, set()).add(name)
    return seen, third


class UndeclaredImport(RuntimeError):
    """A module the functions import belongs to no dependency pyproject.toml declares."""


class StaleLock(RuntimeError):
    """locks/function.txt was compiled from other requirements than the function's imports
    select now: it would install something else than pyproject says."""


def locked(lines: list[str], root: Path = ROOT) -> str:
    """The function's requirements.txt: its lock, provided the lock was compiled from `lines`
    (the requirements the import graph selects now)."""
    inputs, lock = root / LOCK_INPUT, root / LOCK
    compiled_from = (
        [line for line in inputs.read_text().splitlines() if line and not line.startswith("#")]
        if inputs.is_file()
        else None
    )
    if compiled_from != lines or not lock.is_file():
        raise StaleLock(
            f"{LOCK} is not compiled from the function's requirements ({', '.join(lines)}; "
            f"{LOCK_INPUT} has {', '.join(compiled_from) if compiled_from else 'nothing'}): "
            "run `python -m dropbatch.locks function` and commit locks/"
        )
    return lock.read_text()


def function_config(root: Path = ROOT) -> dict:
    return _pyproject(root).get("tool", {}).get("dropbatch", {}).get("function", {})


def _pyproject(root: Path) -> dict:
    return tomllib.loads((root / "pyproject.toml").read_text())


def declared(root: Path = ROOT) -> dict[str, str]:
    """Distribution (normalised) → its requirement line: `[project].dependencies`, then the
    extras `[tool.dropbatch.function].extras` names (the trigger's face check needs one)."""
    project = _pyproject(root)["project"]
    specs = list(project.get("dependencies", []))
    extras = project.get("optional-dependencies", {})
    for extra in function_config(root).get("extras", []):
        specs.extend(extras[extra])
    by_name: dict[str, str] = {}
    for spec in specs:
        by_name.setdefault(_normal(re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0]), spec)
    return by_name


def distribution_for(module: str, import_names: dict[str, str]) -> str:
    """The distribution an import belongs to: the longest dotted prefix in pyproject's
    `import-names` table, else the top-level name itself (`numpy` → numpy)."""
    parts = module.split(".")
    for i in range(len(parts), 0, -1):
        prefix = ".".join(parts[:i])
        if prefix in import_names:
            return _normal(import_names[prefix])
    return _normal(parts[0])


def requirements(
    third_party: set[str], root: Path = ROOT, importers: dict[str, set[str]] | None = None
) -> list[str]:
    """One line per distribution the functions import, with pyproject's own specifier.

    A pure function of pyproject.toml and the import graph: nothing installed where the build
    runs is consulted, so every build machine writes the same file. An import that maps to no
    declared distribution fails the build, naming the module and who imports it."""
    config = function_config(root)
    import_names = config.get("import-names", {})
    not_installed = set(config.get("not-installed", {}))
    by_name = declared(root)
    # `from google.cloud import storage` also yields the namespace `google.cloud`: a name that
    # is only the parent of other imported names is covered by them.
    leaves = {m for m in third_party if not any(o.startswith(m + ".") for o in third_party)}
    dists = {_normal(d) for d in RUNTIME_REQUIREMENTS}
    missing: list[str] = []
    for module in sorted(leaves):
        if module.split(".")[0] in not_installed or module in not_installed:
            continue
        dist = distribution_for(module, import_names)
        if dist in by_name:
            dists.add(dist)
        else:
            where = ", ".join(sorted((importers or {}).get(module, ()))) or "?"
            missing.append(f"{module} (imported by {where}; looked for distribution {dist!r})")
    missing += [f"{d} (always needed by the Functions runtime)" for d in dists - set(by_name)]
    if missing:
        raise UndeclaredImport(
            "the function imports modules no declared dependency provides: "
            + "; ".join(missing)
            + ". Declare the distribution in pyproject.toml [project].dependencies (or an extra"
            " listed in [tool.dropbatch.function].extras), map the import name in"
            " [tool.dropbatch.function.import-names], or, if the functions never run it, list"
            " it in [tool.dropbatch.function].not-installed with the reason."
        )
    return [by_name[d] for d in sorted(dists)]


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def package_data(packages: set[str], root: Path = ROOT) -> list[Path]:
    """Files named in pyproject's [tool.setuptools.package-data] for the packages we ship."""
    config = tomllib.loads((root / "pyproject.toml").read_text())
    globs = config.get("tool", {}).get("setuptools", {}).get("package-data", {})
    files = []
    for package, patterns in globs.items():
        if package in packages:
            for pattern in patterns:
                files.extend(sorted(root.joinpath(*package.split(".")).glob(pattern)))
    return files


MAIN = '''"""Cloud Functions entry points, built from triggers/main.py."""

from triggers.main import {names}

__all__ = [{quoted}]
'''


def build(out: Path, root: Path = ROOT) -> list[str]:
    """Write the function source to `out` (emptied first); returns the modules it holds."""
    modules, importers = import_graph(ENTRY, root)
    lines = requirements(set(importers), root, importers)  # fails before anything is written
    lock = locked(lines, root)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    for name in sorted(modules):
        source = module_file(name, root)
        assert source is not None
        target = out / source.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    packages = {m for m in modules if module_file(m, root).name == "__init__.py"}
    for data in package_data(packages, root):
        target = out / data.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(data, target)
    (out / "main.py").write_text(
        MAIN.format(names=", ".join(FUNCTIONS), quoted=", ".join(f'"{f}"' for f in FUNCTIONS))
    )
    # Hashes in it put pip in hash-checking mode: the runtime installs exactly the lock.
    (out / "requirements.txt").write_text(lock)
    return sorted(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (replaced)")
    parser.add_argument("--root", type=Path, default=ROOT, help="checkout to build from")
    args = parser.parse_args(argv)
    try:
        modules = build(args.out, args.root)
    except (UndeclaredImport, StaleLock) as exc:
        print(f"build_function: {exc}", file=sys.stderr)
        return 1
    print(f"{args.out}: main.py, requirements.txt and {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
