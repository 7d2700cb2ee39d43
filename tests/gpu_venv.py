"""The separate Python environment the ultralytics tests run in.

ultralytics pulls CUDA torch (about 6 GB): it must not land in the interpreter everything
else uses, so it lives in its own venv, built once per lock and reused
(`.cache/venv-gpu-<lock digest>` in the repository, or `DROPBATCH_GPU_VENV`). It is built on
request — `python tests/gpu_venv.py`, which `.ci/run` does before the tests — never by a plain
`pytest`, which would otherwise take minutes and gigabytes on a fresh machine: without it the
ultralytics tests are not run and the session's summary says so, with this command
(tests/conftest.py).
Our code reaches it through PYTHONPATH, so the venv holds only third-party packages.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Exactly the versions the ultralytics tests last passed with, hashed (compiled from
# locks/gpu-venv.in by `python -m dropbatch.locks`).
LOCK = ROOT / "locks" / "gpu-venv.txt"
READY = ".dropbatch-ready"


class VenvError(RuntimeError):
    pass


def venv_dir() -> Path:
    """Named by the lock's digest: a venv built from an older lock is never taken for this
    one's (a changed lock builds a new venv beside it)."""
    digest = hashlib.sha256(LOCK.read_bytes()).hexdigest()[:12]
    return Path(os.environ.get("DROPBATCH_GPU_VENV") or ROOT / ".cache" / f"venv-gpu-{digest}")


def venv_python(path: Path | None = None) -> Path:
    return (path or venv_dir()) / "bin" / "python"


def venv_ready(path: Path | None = None) -> bool:
    """Built completely (the marker is written last)."""
    path = path or venv_dir()
    return (path / READY).is_file() and venv_python(path).is_file()


def ensure_venv(path: Path | None = None, timeout: float = 3600) -> Path:
    """The venv's python, building the venv first if it is not complete."""
    path = path or venv_dir()
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.parent / f".{path.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two test runs at once build it once
        marker = path / READY
        if marker.is_file() and venv_python(path).is_file():
            return venv_python(path)
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
        proc = subprocess.run(
            [str(venv_python(path)), "-m", "pip", "install", "-q", "-r", str(LOCK)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if proc.returncode != 0:
            raise VenvError(
                f"could not build the ultralytics venv at {path} "
                f"(pip install -r {LOCK}):\n{proc.stderr[-4000:]}"
            )
        marker.write_text(f"{LOCK.name} sha256 {hashlib.sha256(LOCK.read_bytes()).hexdigest()}\n")
    return venv_python(path)


if __name__ == "__main__":
    print(ensure_venv())
    sys.exit(0)
