"""Regenerate every lock file in `locks/` from pyproject.toml: `python -m dropbatch.locks`.

One lock per thing that installs packages, each pinned with the registry's sha256 hashes:

  base.txt               the default install, README command 1 (`pip install -r locks/base.txt`,
                         then `pip install --no-deps -e .`)
  dev.txt                the test install (README, .ci/run: `pip install -r locks/dev.txt`, then
                         `pip install --no-deps -e .`)
  image-slim.txt         Dockerfile.gpu's default target (the package + the `gpu` extra)
  image-ultralytics.txt  its `ultralytics` target (+ torch and ultralytics)
  function.txt           the Cloud Function's requirements.txt (dropbatch.build_function),
                         compiled from function.in, the lines the function's imports select
  gpu-venv.txt           the ultralytics tests' own venv (tests/gpu_venv.py), from gpu-venv.in

Resolution is uv's (`uv pip compile`, in the `dev` extra) against PyPI itself, with no pip or uv
configuration read, so a local index or a constraint file on the machine that runs this cannot
put a version or a hash into a lock that the registry does not have. The image and function
locks are constrained by dev.txt: a package they share with the test install gets the version
the suite ran with. An existing lock is the starting point (uv keeps its pins where they still
fit), so a regeneration moves versions only on purpose: `--upgrade` or `--upgrade-package NAME`.
"""

from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
from dataclasses import dataclass
from pathlib import Path

from dropbatch.build_function import ENTRY, import_graph, requirements

ROOT = Path(__file__).resolve().parent.parent
LOCKS = ROOT / "locks"
INDEX = "https://pypi.org/simple"
REGENERATE = "python -m dropbatch.locks"
# torchvision states its CUDA only in its version label (0.29.1+cu130, 0.29.2+cu132), not in
# its metadata, so no constraint on CUDA wheels reaches it: the newest build for each image CUDA
# is held here (tests/test_locks.py reads the label from the locked wheel).
TORCHVISION_FOR_CUDA = {(13, 0): "torchvision<0.29.2"}


@dataclass(frozen=True)
class Lock:
    name: str
    python: str
    # uv's target platform: the image is Ubuntu 24.04 (glibc 2.39), the python311 Functions
    # runtime older (manylinux_2_28 wheels). None: universal, for whichever Python ≥ 3.11 and
    # system a developer or CI runs the tests on (markers say where a pin applies).
    platform: str | None
    extras: tuple[str, ...] = ()
    constraints: tuple[str, ...] = ()  # other locks, compiled before this one
    # Packages a dependency asks for that must not be installed (the reason in the comment).
    excludes: tuple[str, ...] = ()
    # The build backend, locked too: the image builds our package with --no-build-isolation
    # so nothing unhashed is fetched for it.
    with_build_system: bool = False
    # A requirements file in locks/ to compile instead of pyproject.toml's extras.
    inputs: str | None = None

    @property
    def path(self) -> Path:
        return LOCKS / f"{self.name}.txt"


LOCK_FILES = (
    Lock("dev", python="3.11", platform=None, extras=("dev",)),
    # The default install (README command 1, the demo): the versions the suite ran with.
    Lock("base", python="3.11", platform=None, constraints=("dev",)),
    # Ubuntu 24.04's python3 is 3.12: the image's venv runs it.
    Lock(
        "image-slim",
        python="3.12",
        platform="x86_64-manylinux_2_39",
        extras=("gpu",),
        constraints=("dev",),
        with_build_system=True,
    ),
    Lock(
        "image-ultralytics",
        python="3.12",
        platform="x86_64-manylinux_2_39",
        extras=("gpu", "ultralytics"),
        constraints=("image-slim", "dev"),
        # ultralytics asks for opencv-python, whose cv2/ overwrites opencv-python-headless's:
        # the image has headless alone (Dockerfile.gpu checks it).
        excludes=("opencv-python",),
        with_build_system=True,
    ),
    Lock("function", python="3.11", platform="x86_64-manylinux_2_28", constraints=("dev",)),
    # The test venv ultralytics runs in (CUDA torch, run on the CPU): the interpreter CI runs.
    Lock("gpu-venv", python="3.11", platform="x86_64-manylinux_2_28", inputs="gpu-venv.in"),
)


def image_cuda(root: Path = ROOT) -> tuple[int, int]:
    """(major, minor) of the CUDA in Dockerfile.gpu's base image (`ARG CUDA_IMAGE`)."""
    text = (root / "Dockerfile.gpu").read_text()
    found = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.", text, re.M)
    if not found:
        raise SystemExit("locks: no `ARG CUDA_IMAGE=nvidia/cuda:X.Y.Z-…` in Dockerfile.gpu")
    return int(found.group(1)), int(found.group(2))


def function_inputs(root: Path = ROOT) -> list[str]:
    """The Cloud Function's direct requirements: pyproject's lines for what triggers.main
    imports (dropbatch.build_function), the input its lock is compiled from."""
    _, importers = import_graph(ENTRY, root)
    return requirements(set(importers), root, importers)


def uv_command() -> list[str]:
    if importlib.util.find_spec("uv") is not None:
        return [sys.executable, "-m", "uv"]
    found = shutil.which("uv")
    if found:
        return [found]
    raise SystemExit("locks: uv is not installed (it is in the dev extra: pip install uv)")


def compile_lock(lock: Lock, upgrade: list[str], root: Path = ROOT) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            *uv_command(),
            "pip",
            "compile",
            "--quiet",
            "--no-config",  # no uv.toml from the machine
            "--index-url",
            INDEX,
            "--python-version",
            lock.python,
            *(["--python-platform", lock.platform] if lock.platform else ["--universal"]),
            "--generate-hashes",
            "--custom-compile-command",
            REGENERATE,
            "--output-file",
            str(lock.path.relative_to(root)),
        ]
        if lock.name == "function":
            inputs = LOCKS / "function.in"
            inputs.write_text(
                "# The Cloud Function's direct requirements (dropbatch.build_function),\n"
                f"# written by `{REGENERATE}`; function.txt is compiled from this.\n"
                + "\n".join(function_inputs(root))
                + "\n"
            )
            args.append(str(inputs.relative_to(root)))
        elif lock.inputs:
            args.append(str((LOCKS / lock.inputs).relative_to(root)))
        else:
            args.append("pyproject.toml")
            for extra in lock.extras:
                args += ["--extra", extra]
        if lock.with_build_system:
            build = Path(tmp) / "build-system.txt"
            pyproject = tomllib.loads((root / "pyproject.toml").read_text())
            build.write_text("\n".join(pyproject["build-system"]["requires"]) + "\n")
            args.append(str(build))
        for other in lock.constraints:
            args += ["--constraints", str((LOCKS / f"{other}.txt").relative_to(root))]
        if lock.name.startswith("image-"):
            # torch brings its own CUDA as wheels: hold them to the image's CUDA minor, which
            # the driver the Job pins runs (batch_jobs/cloud_batch.py, DRIVER_BRANCH_CUDA), so
            # the image has one CUDA, not a newer one beside the base's.
            major, minor = image_cuda(root)
            cuda = Path(tmp) / "cuda.txt"
            cuda.write_text(
                f"cuda-toolkit=={major}.{minor}.*\nnvidia-cuda-runtime=={major}.{minor}.*\n"
                + (TORCHVISION_FOR_CUDA.get((major, minor), "") + "\n")
            )
            args += ["--constraints", str(cuda)]
        if lock.excludes:
            excludes = Path(tmp) / "excludes.txt"
            excludes.write_text("\n".join(lock.excludes) + "\n")
            args += ["--excludes", str(excludes)]
        for name in upgrade:
            args += ["--upgrade"] if name == ":all:" else ["--upgrade-package", name]
        print(f"locks: {lock.path.relative_to(root)}", file=sys.stderr)
        subprocess.run(args, cwd=root, check=True)
        # The temporary file names would differ on every run: name them by what they hold.
        text = lock.path.read_text()
        text = text.replace(str(Path(tmp) / "build-system.txt"), "<pyproject build-system>")
        text = text.replace(str(Path(tmp) / "excludes.txt"), "<excludes>")
        text = text.replace(str(Path(tmp) / "cuda.txt"), "<Dockerfile.gpu CUDA>")
        lock.path.write_text(text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--upgrade", action="store_true", help="move every pin to the newest")
    parser.add_argument(
        "--upgrade-package", action="append", default=[], metavar="NAME", help="move this one"
    )
    parser.add_argument("only", nargs="*", help="lock names to regenerate (default: all)")
    args = parser.parse_args(argv)
    LOCKS.mkdir(exist_ok=True)
    upgrade = [":all:"] if args.upgrade else args.upgrade_package
    for lock in LOCK_FILES:
        if not args.only or lock.name in args.only:
            compile_lock(lock, upgrade)
    return 0


if __name__ == "__main__":
    sys.exit(main())
