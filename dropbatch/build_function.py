"""Build the Cloud Functions source folder from this repository:
`python -m dropbatch.build_function OUT_DIR`.

The folder holds `main.py` (the entry points, re-exported from `triggers.main`), exactly the
first-party modules those entry points import (followed statically through every `import`,
including the lazy ones inside functions, so a backend chosen by configuration is there), the
package data those packages ship, and a `requirements.txt` naming the third-party
distributions those modules import. Terraform zips this folder; the tests serve this folder.
"""

from __future__ import annotations

import argparse
import ast
import importlib.metadata
import re
import shutil
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIRST_PARTY = ("batch_jobs", "dropbatch", "manifests", "processors", "triggers")
ENTRY = "triggers.main"
FUNCTIONS = ("on_inbox_object", "on_batch_state")
# Imported by the Functions runtime itself, not by our code; always required.
RUNTIME_REQUIREMENTS = ("functions-framework",)


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
    seen: set[str] = set()
    third: set[str] = set()
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
                third.add(imported)
    return seen, third


def requirements(third_party: set[str], root: Path = ROOT) -> list[str]:
    """One line per distribution: the pyproject's own specifier, else the installed version."""
    declared = tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
    by_name = {_normal(re.split(r"[<>=!~ \[;]", spec, maxsplit=1)[0]): spec for spec in declared}
    dists = {_normal(d) for d in RUNTIME_REQUIREMENTS}
    for name in third_party:
        dist = distribution_of(name)
        if dist:
            dists.add(_normal(dist))
    lines = []
    for dist in sorted(dists):
        if dist in by_name:
            lines.append(by_name[dist])
        else:
            lines.append(f"{dist}=={importlib.metadata.version(dist)}")
    return lines


def _module_owners() -> dict[str, str]:
    """Module file path ('google/cloud/batch_v1/__init__.py') → the distribution installing it.
    By file, not by top-level name: `google` is shared by many distributions."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            if file.suffix == ".py":
                owners.setdefault(file.as_posix(), dist.metadata["Name"])
    return owners


_OWNERS: dict[str, str] = {}


def distribution_of(module: str) -> str | None:
    """The distribution providing `module` (or its nearest provided parent), if installed."""
    if not _OWNERS:
        _OWNERS.update(_module_owners())
    parts = module.split(".")
    while parts:
        base = "/".join(parts)
        for candidate in (f"{base}/__init__.py", f"{base}.py"):
            if candidate in _OWNERS:
                return _OWNERS[candidate]
        parts.pop()
    return None


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
    modules, third = closure(ENTRY, root)
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
    (out / "requirements.txt").write_text("\n".join(requirements(third, root)) + "\n")
    return sorted(modules)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder to write (replaced)")
    args = parser.parse_args(argv)
    modules = build(args.out)
    print(f"{args.out}: main.py, requirements.txt and {len(modules)} modules")
    return 0


if __name__ == "__main__":
    sys.exit(main())
