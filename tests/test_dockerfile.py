"""Dockerfile.gpu and the Job builder agree: the entrypoint is the Job's command, the image sets
no setting the Job passes, every DROPBATCH_* name the task reads comes from the Job, and the
packages the task imports are in the image."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from batch_jobs.cloud_batch import (
    DRIVER_BRANCH_CUDA,
    GPU_DRIVER_VERSION,
    IMAGE_UID,
    TASK_COMMANDS,
    TASK_ENTRYPOINT,
    task_environment,
)
from core.config import Settings
from core.status.model import JobRecord
from dropbatch.build_function import closure
from tests.wheel_metadata import lock_pins

ROOT = Path(__file__).resolve().parent.parent
# Read by the task but optional, with defaults in code: the Job need not pass them.
OPTIONAL_TASK_ENV = {"DROPBATCH_LOG_LEVEL"}


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", path.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def stages(steps: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, those of the stages it builds FROM included first."""
    own: dict[str, tuple[str, list[tuple[str, str]]]] = {}
    current: list[tuple[str, str]] = []
    for word, args in steps:
        if word == "FROM":
            base, _, name = args.partition(" AS ")
            current = []
            own[name.strip() or f"stage{len(own)}"] = (base.strip(), current)
        current.append((word, args))

    def resolve(name: str) -> list[tuple[str, str]]:
        base, body = own[name]
        return [*resolve(base), *body] if base in own else body

    return {name: resolve(name) for name in own}


@pytest.fixture(scope="module", params=["slim", "ultralytics"])
def target(request: pytest.FixtureRequest) -> list[tuple[str, str]]:
    return stages(instructions(ROOT / "Dockerfile.gpu"))[request.param]


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    """What a plain `docker build` gives: the last stage, with the stages it builds on."""
    steps = instructions(ROOT / "Dockerfile.gpu")
    last = [args for word, args in steps if word == "FROM"][-1].partition(" AS ")[2].strip()
    assert last == "slim"  # the default target is the slim one
    return stages(steps)[last]


def env_names(steps: list[tuple[str, str]]) -> set[str]:
    names = set()
    for word, args in steps:
        if word == "ENV":
            names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args))
    return names


def test_entrypoint_is_the_jobs_command(target: list[tuple[str, str]]) -> None:
    [*_, entrypoint] = [json.loads(args) for word, args in target if word == "ENTRYPOINT"]
    assert entrypoint == [TASK_ENTRYPOINT, *TASK_COMMANDS]


def test_runs_as_a_non_root_user_with_ffmpeg_on_cuda(target: list[tuple[str, str]]) -> None:
    users = [args for word, args in target if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The Job makes the VM's model cache folder for this uid (batch_jobs/cloud_batch.py).
    [created] = [args for word, args in target if word == "RUN" and "useradd" in args]
    assert f"--uid {IMAGE_UID} {users[-1]}" in created
    assert any(word == "RUN" and "ffmpeg" in args for word, args in target)
    # NVENC/NVDEC need the driver's video libraries mounted into the container.
    [capabilities] = re.findall(r"NVIDIA_DRIVER_CAPABILITIES=(\S+)", " ".join(a for _, a in target))
    assert {"compute", "utility", "video"} <= set(capabilities.split(","))
    text = (ROOT / "Dockerfile.gpu").read_text()
    base = re.search(r"ARG CUDA_IMAGE=(\S+)", text).group(1)
    assert re.fullmatch(r"nvidia/cuda:\d+\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    # The locked GPU wheels' CUDA and cuDNN against this tag: tests/test_locks.py.


def extras() -> dict[str, list[str]]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def locked(target: str) -> set[str]:
    return set(lock_pins(ROOT / "locks" / f"image-{target}.txt"))


def test_the_slim_target_has_onnxruntime_gpu_and_no_torch() -> None:
    slim = stages(instructions(ROOT / "Dockerfile.gpu"))["build-slim"]
    installs = " ".join(args for word, args in slim if word == "RUN" and "pip install" in args)
    assert "pip install --require-hashes --no-deps -r locks/image-slim.txt" in installs
    assert "torch" not in installs and "ultralytics" not in installs
    assert "onnxruntime-gpu" in locked("slim") and not {"torch", "ultralytics"} & locked("slim")
    assert any(dep.startswith("onnxruntime-gpu") for dep in extras()["gpu"])
    assert not [d for d in extras()["gpu"] if re.match(r"(torch|ultralytics)\b", d)]
    # The slim image copies the slim venv; only the ultralytics image copies the other.
    copies = {
        name: [a for w, a in body if w == "COPY" and "--from=" in a]
        for name, body in stages(instructions(ROOT / "Dockerfile.gpu")).items()
    }
    assert copies["slim"] == ["--from=build-slim /opt/venv /opt/venv"]
    assert copies["ultralytics"] == ["--from=build-ultralytics /opt/venv /opt/venv"]


def test_the_ultralytics_target_adds_torch_and_ultralytics() -> None:
    body = stages(instructions(ROOT / "Dockerfile.gpu"))["build-ultralytics"]
    installs = [args for word, args in body if word == "RUN" and "pip install" in args]
    assert any("-r locks/image-slim.txt" in a for a in installs)  # built on the slim venv
    assert any("-r locks/image-ultralytics.txt" in a for a in installs)
    assert {"onnxruntime-gpu", "torch", "torchvision", "ultralytics"} <= locked("ultralytics")
    assert {re.match(r"[\w-]+", d).group(0) for d in extras()["ultralytics"]} == {
        "torch",
        "ultralytics",
    }


def test_settings_come_from_the_job_not_the_image(final_stage: list[tuple[str, str]]) -> None:
    steps = instructions(ROOT / "Dockerfile.gpu")
    assert not {n for n in env_names(steps) if n.startswith("DROPBATCH_")}
    record = JobRecord(
        job_id="db-x",
        bucket="b",
        manifest="m.yaml",
        manifest_generation=1,
        manifest_uri="gs://b/m.yaml",
    )
    job_env = set(task_environment(record, Settings()))
    read = set()
    for module in (
        "batch_jobs/task.py",
        "batch_jobs/stitch.py",
        "core/config.py",
        "core/logs.py",
    ):
        read.update(
            re.findall(
                r"""environ(?:\.get)?[(\[]\s*["'](DROPBATCH_\w+)""", (ROOT / module).read_text()
            )
        )
    settings_env = {f"DROPBATCH_{name.upper()}" for name in Settings.model_fields}
    assert "DROPBATCH_JOB_ID" in read and settings_env <= job_env
    assert read - job_env - OPTIONAL_TASK_ENV == set()


def test_the_image_holds_every_package_the_task_imports() -> None:
    steps = instructions(ROOT / "Dockerfile.gpu")
    copied = {args.split()[0] for word, args in steps if word == "COPY" and "--from" not in args}
    modules, _ = closure("batch_jobs.task")
    packages = {m.split(".")[0] for m in modules}
    assert packages and packages <= copied
    assert not [a for w, a in steps if w == "COPY" and re.search(r"\.(onnx|pt|pth)\b", a)]


def test_one_opencv_in_the_image() -> None:
    """ultralytics asks for opencv-python, whose cv2/ overwrites opencv-python-headless's: its
    lock leaves it out (dropbatch/locks.py), the install takes no other dependency, and the build
    proves headless alone owns cv2 after the last install."""
    steps = stages(instructions(ROOT / "Dockerfile.gpu"))["build-ultralytics"]
    runs = [args for word, args in steps if word == "RUN"]
    assert "opencv-python" not in locked("ultralytics")
    assert "opencv-python-headless" in locked("ultralytics")
    installs = [i for i, a in enumerate(runs) if "pip install" in a]
    assert all("--no-deps" in runs[i] for i in installs)
    [check] = [a for a in runs if "assert owners == ['opencv-python-headless']" in a]
    assert runs.index(check) > max(installs)
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert any(d.startswith("opencv-python-headless") for d in deps)


def test_the_pinned_driver_runs_the_images_cuda() -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    major, minor = map(int, re.search(r"ARG CUDA_IMAGE=nvidia/cuda:(\d+)\.(\d+)\.", text).groups())
    # Build and run stages on the same CUDA image (the venv's Python is the run stage's).
    bases = {a.split()[0] for w, a in instructions(ROOT / "Dockerfile.gpu") if w == "FROM"}
    assert bases == {"${CUDA_IMAGE}", "build-slim", "runtime"}, bases
    branch = GPU_DRIVER_VERSION.split(".")[0]
    assert DRIVER_BRANCH_CUDA[branch] >= (major, minor), (GPU_DRIVER_VERSION, major, minor)
    # torch's own CUDA wheels against the same: tests/test_locks.py.


def deploy_steps() -> str:
    readme = (ROOT / "README.md").read_text()
    start = readme.index("## Deploy on Google Cloud")
    return readme[start : readme.index("What Terraform wires up", start)]


def test_readme_deploy_steps_run_from_the_root_of_a_fresh_clone() -> None:
    steps = deploy_steps()
    assert not re.search(r"\bcd\s+infra\b", steps)
    terraform = re.findall(r"\bterraform\s+(\S+)", steps)
    assert terraform and all(arg == "-chdir=infra" for arg in terraform), terraform
    for path in re.findall(r"\b(infra/[\w.]+|Dockerfile\.gpu)\b", steps):
        # terraform.tfvars is the copy the steps make; everything else must be in the clone.
        assert path == "infra/terraform.tfvars" or (ROOT / path).exists(), path
    # The function build runs before anything is installed: stdlib only.
    assert "python -m dropbatch.build_function build/function" in steps
    [build] = [line for line in steps.splitlines() if "docker build" in line]
    assert "--platform linux/amd64" in build and "-f Dockerfile.gpu" in build
    assert build.rstrip().endswith(" .")  # the context is the clone's root


def test_readme_deploys_the_image_by_digest_through_terraform() -> None:
    from tests.test_infra import INFRA, load

    steps = deploy_steps()
    infra = load(INFRA)
    for target in re.findall(r"-target=(\w+)\.(\w+)", steps):
        assert target[1] in infra[f"resource.{target[0]}"], target
    assert '-var "image_digest=$DIGEST"' in steps
    assert "image_summary.digest" in steps
    default = re.search(
        r'function_source_dir.*?default\s*=\s*"([^"]+)"', (INFRA / "variables.tf").read_text(), re.S
    )
    # -chdir=infra: Terraform resolves the default against infra/, where build/ is one up.
    assert (INFRA / default.group(1)).resolve() == (ROOT / "build" / "function").resolve()
