"""The Cloud Function's requirements are a pure function of pyproject.toml and the import
graph: the same from an interpreter with no third-party package at all, every line pyproject's
own, and an import no declared dependency provides fails the build by name. requirements.txt is
their lock (locks/function.txt, hashed), and a lock compiled from other lines fails the build."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from dropbatch.build_function import (
    FIRST_PARTY,
    LOCK,
    ROOT,
    StaleLock,
    UndeclaredImport,
    build,
    declared,
    distribution_for,
    function_config,
    import_graph,
    requirements,
)
from tests.wheel_metadata import lock_pins, normal


def _tree(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


def _names(requirements: str) -> set[str]:
    import re

    return {re.split(r"[<>=!~ \[;]", line, maxsplit=1)[0] for line in requirements.split()}


@pytest.fixture
def source_copy(tmp_path: Path) -> Path:
    """The first-party packages and pyproject.toml, to edit without touching the checkout."""
    root = tmp_path / "repo"
    for package in FIRST_PARTY:
        shutil.copytree(
            ROOT / package, root / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy2(ROOT / "pyproject.toml", root / "pyproject.toml")
    return root


def test_an_interpreter_without_site_packages_builds_the_same_folder(tmp_path: Path) -> None:
    here = tmp_path / "here"
    build(here)
    # `-S`: no site-packages, so no installed distribution is visible to the build at all.
    bare = {**os.environ, "PYTHONPATH": str(ROOT)}
    probe = subprocess.run(
        [sys.executable, "-S", "-c", "import importlib.util as u; print(u.find_spec('yaml'))"],
        env=bare,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    assert probe.stdout.strip() == "None"  # really nothing third-party there
    subprocess.run(
        [sys.executable, "-S", "-m", "dropbatch.build_function", str(tmp_path / "bare")],
        env=bare,
        cwd=tmp_path,
        check=True,
        capture_output=True,
    )
    assert _tree(tmp_path / "bare") == _tree(here)


def test_every_requirement_is_pyprojects_own_line_and_requirements_txt_is_their_lock(
    tmp_path: Path,
) -> None:
    build(tmp_path / "fn")
    _, importers = import_graph()
    lines = requirements(set(importers), ROOT, importers)
    assert set(lines) <= set(declared().values()), lines
    names = _names("\n".join(lines))
    # What the runtime installs: the lock compiled from those lines, every pin hashed (pip's
    # hash-checking mode), each line's distribution in it.
    written = (tmp_path / "fn" / "requirements.txt").read_text()
    assert written == (ROOT / LOCK).read_text()
    pins = lock_pins(tmp_path / "fn" / "requirements.txt")
    assert {normal(n) for n in names} <= set(pins)
    assert all(pin.hashes for pin in pins.values())
    # The face check (SCRFD on onnxruntime) ships; nothing that needs a compiler does.
    assert {"onnxruntime", "functions-framework", "google-cloud-batch", "pyyaml"} <= names
    assert "insightface" not in names
    assert not set(function_config()["not-installed"]) & names


def test_the_import_names_table_agrees_with_what_installs_each_module() -> None:
    """pyproject's import-name table against the installed files here: a wrong or missing
    mapping (say `cv2` → opencv-python) shows up as a different owning distribution."""
    owners: dict[str, str] = {}
    for dist in importlib.metadata.distributions():
        for file in dist.files or []:
            if file.suffix == ".py":
                owners.setdefault(file.as_posix(), dist.metadata["Name"])
    _, importers = import_graph()
    config = function_config()
    checked = 0
    for module in sorted(importers):
        if module.split(".")[0] in config["not-installed"]:
            continue
        parts = module.split(".")
        while parts and not {f"{'/'.join(parts)}/__init__.py", f"{'/'.join(parts)}.py"} & set(
            owners
        ):
            parts.pop()
        if not parts or "/".join(parts) == "google":
            continue  # a class imported from a module, or the bare namespace
        path = "/".join(parts)
        owner = owners.get(f"{path}/__init__.py") or owners[f"{path}.py"]
        expected = distribution_for(module, config.get("import-names", {}))
        assert expected == owner.lower().replace("_", "-"), module
        checked += 1
    assert checked >= 10


def test_an_installed_but_undeclared_import_fails_the_build(source_copy: Path) -> None:
    # scipy is installed here (the dev extra) but no runtime dependency: the trap.
    intake = source_copy / "batch_jobs" / "intake.py"
    intake.write_text(intake.read_text() + "\n\ndef _late() -> None:\n    import scipy.signal\n")
    out = source_copy.parent / "fn"
    with pytest.raises(UndeclaredImport, match=r"scipy\.signal \(imported by batch_jobs\.intake"):
        build(out, source_copy)
    assert not out.exists()  # nothing half-written
    pyproject = source_copy / "pyproject.toml"
    pyproject.write_text(
        pyproject.read_text().replace('"grpcio>=1.60",', '"grpcio>=1.60", "scipy>=1.10",')
    )
    _, importers = import_graph(root=source_copy)
    assert "scipy>=1.10" in requirements(set(importers), source_copy, importers)
    # Declared now, but the function's lock was compiled without it: the build refuses to ship
    # a requirements.txt that would not install it, and says how to regenerate the lock.
    shutil.copytree(ROOT / "locks", source_copy / "locks")
    with pytest.raises(StaleLock, match=r"scipy>=1\.10.*python -m dropbatch\.locks function"):
        build(out, source_copy)
    assert not out.exists()


def test_a_dependency_dropped_from_pyproject_fails_the_build(source_copy: Path) -> None:
    pyproject = source_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('    "pyyaml>=6",\n', ""))
    with pytest.raises(UndeclaredImport, match=r"yaml.*looked for distribution 'pyyaml'"):
        build(source_copy.parent / "fn", source_copy)


def test_the_command_line_reports_an_undeclared_import(source_copy: Path) -> None:
    pyproject = source_copy / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('extras = ["cpu"]', "extras = []"))
    result = subprocess.run(
        [sys.executable, "-m", "dropbatch.build_function", "--root", str(source_copy), "fn"],
        cwd=source_copy.parent,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    assert result.returncode == 1
    assert "onnxruntime (imported by processors.faces, processors.models.sessions" in result.stderr
    assert "Traceback" not in result.stderr
