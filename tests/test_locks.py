"""The lock files (locks/, `python -m dropbatch.locks`): the image's CUDA is the one its locked
GPU wheels were built for, read from those wheels' own metadata on the registry; every lock
satisfies pyproject.toml and pins every package with hashes; the things that install use them."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from batch_jobs.cloud_batch import DRIVER_BRANCH_CUDA, GPU_DRIVER_VERSION
from dropbatch.locks import LOCK_FILES, LOCKS, REGENERATE, function_inputs
from tests.wheel_metadata import cuda_majors, lock_pins, normal, wheel_member, wheel_metadata

ROOT = Path(__file__).resolve().parent.parent
IMAGE_LOCKS = ["image-slim", "image-ultralytics"]


def image_base() -> tuple[int, int, int]:
    """(CUDA major, CUDA minor, cuDNN major) of Dockerfile.gpu's base image tag."""
    text = (ROOT / "Dockerfile.gpu").read_text()
    tag = re.search(r"^ARG CUDA_IMAGE=nvidia/cuda:(\S+)", text, re.M).group(1)
    found = re.fullmatch(r"(\d+)\.(\d+)\.\d+-cudnn(\d*)-runtime-ubuntu[\d.]+", tag)
    assert found, f"not an nvidia/cuda X.Y.Z-cudnn-runtime tag: {tag}"
    # NVIDIA's tags named cuDNN 8 `cudnn8`; since cuDNN 9 they say `cudnn` alone.
    return int(found.group(1)), int(found.group(2)), int(found.group(3) or 9)


@pytest.mark.parametrize("target", IMAGE_LOCKS)
def test_the_locked_onnxruntime_gpu_wheel_is_built_for_the_images_cuda_and_cudnn(
    target: str,
) -> None:
    """The issue: onnxruntime-gpu ≥ 1.27 on PyPI is CUDA 13, and on a CUDA 12 image its CUDA
    provider does not load, so every step ran on the CPU without a word."""
    major, _, cudnn_major = image_base()
    pin = lock_pins(LOCKS / f"{target}.txt")["onnxruntime-gpu"]
    cuda, cudnn = cuda_majors(wheel_metadata(pin))
    assert cuda and {m for m, _ in cuda} == {major}, (
        f"onnxruntime-gpu=={pin.version} is built for CUDA {sorted(cuda)}, "
        f"the image (Dockerfile.gpu) is CUDA {major}"
    )
    assert cudnn == {cudnn_major}, (
        f"onnxruntime-gpu=={pin.version} wants cuDNN {sorted(cudnn)}, the image has {cudnn_major}"
    )


def test_the_locked_torch_wheel_is_built_for_the_images_cuda_and_the_driver_runs_it() -> None:
    major, minor, cudnn_major = image_base()
    pin = lock_pins(LOCKS / "image-ultralytics.txt")["torch"]
    cuda, cudnn = cuda_majors(wheel_metadata(pin))
    assert cuda and {m for m, _ in cuda} == {major}, (pin.version, sorted(cuda), major)
    assert cudnn == {cudnn_major}, (pin.version, sorted(cudnn), cudnn_major)
    # torch brings its CUDA as wheels: the same minor as the image's, which the pinned driver
    # runs (tests/test_dockerfile.py holds the image to the driver).
    assert {n for _, n in cuda} == {minor}, (pin.version, sorted(cuda), minor)
    assert DRIVER_BRANCH_CUDA[GPU_DRIVER_VERSION.split(".")[0]] >= (major, minor)


def test_the_locked_torchvision_wheel_is_built_for_the_images_cuda() -> None:
    """torchvision names its CUDA only in its version label (0.29.1+cu130, 0.29.2+cu132): a
    newer one brings kernels for a CUDA the pinned driver does not run natively."""
    major, minor, _ = image_base()
    pin = lock_pins(LOCKS / "image-ultralytics.txt")["torchvision"]
    label = re.search(
        r"__version__ = '[^']*\+cu(\d+)'", wheel_member(pin, "torchvision/version.py")
    )
    assert label and label.group(1) == f"{major}{minor}", (pin.version, label, (major, minor))


@pytest.mark.parametrize("target", IMAGE_LOCKS)
def test_no_image_lock_installs_cuda_wheels_of_another_cuda(target: str) -> None:
    major, minor, cudnn_major = image_base()
    pins = lock_pins(LOCKS / f"{target}.txt")
    for name, pin in pins.items():
        suffix = re.search(r"-cu(\d+)$", name)
        assert not suffix or int(suffix.group(1)) == major, (name, pin.version)
        if name in ("cuda-toolkit", "nvidia-cuda-runtime"):
            assert pin.version.split(".")[:2] == [str(major), str(minor)], (name, pin.version)
        if name.startswith("nvidia-cudnn-"):
            assert int(pin.version.split(".")[0]) == cudnn_major, (name, pin.version)
    # One onnxruntime (a CPU one would shadow the GPU build) and one OpenCV (Dockerfile.gpu).
    assert "onnxruntime-gpu" in pins and "onnxruntime" not in pins
    assert "opencv-python-headless" in pins and "opencv-python" not in pins


def _project_requirements(extras: tuple[str, ...]) -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    lines = list(project["dependencies"])
    for extra in extras:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


@pytest.mark.parametrize("lock", LOCK_FILES, ids=lambda lock: lock.name)
def test_every_lock_satisfies_pyproject_and_hashes_every_pin(lock: object) -> None:
    """A lock compiled before pyproject changed fails here, naming what to run."""
    pins = lock_pins(lock.path)
    if lock.name == "function":
        wanted = [Requirement(line) for line in function_inputs()]
    elif lock.inputs:
        lines = (LOCKS / lock.inputs).read_text().splitlines()
        wanted = [Requirement(line) for line in lines if line and not line.startswith("#")]
    else:
        wanted = _project_requirements(lock.extras)
    stale = [
        str(req)
        for req in wanted
        if normal(req.name) not in pins
        or not req.specifier.contains(pins[normal(req.name)].version, prereleases=True)
    ]
    assert not stale, f"{lock.path.name} does not satisfy {stale}: run `{REGENERATE}`"
    assert [name for name, pin in pins.items() if not pin.hashes] == []
    assert f"#    {REGENERATE}" in lock.path.read_text()


def test_what_installs_packages_installs_them_from_the_locks() -> None:
    dockerfile = (ROOT / "Dockerfile.gpu").read_text()
    for target in IMAGE_LOCKS:
        assert f"pip install --require-hashes --no-deps -r locks/{target}.txt" in dockerfile
    ci = (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    for text in (ci, readme):
        assert "pip install -q -r locks/dev.txt" in text or "pip install -r locks/dev.txt" in text
        assert "pip install -q --no-deps -e ." in text or "pip install --no-deps -e ." in text
    assert "python -m venv .venv-ci" in ci  # fresh each run
    # Command 1 (the demo) installs the default install's lock, the versions the suite ran with.
    command_1 = readme.split("**2. Run the tests:**")[0]
    assert "pip install -r locks/base.txt && pip install --no-deps -e ." in command_1
    assert REGENERATE in readme
    # The Cloud Function's requirements.txt is its lock (tests/test_function_build.py).
