"""Dockerfile.gpu and the Job builder agree: the entrypoint is the Job's command, the image sets
no setting the Job passes, every DROPBATCH_* name the task reads comes from the Job, and the
packages the task imports are in the image."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

import pytest

from batch_jobs.cloud_batch import IMAGE_UID, TASK_COMMANDS, TASK_ENTRYPOINT, task_environment
from dropbatch.build_function import closure
from dropbatch.config import Settings
from dropbatch.status.model import JobRecord

ROOT = Path(__file__).resolve().parent.parent
# Read by the task but optional, with defaults in code: the Job need not pass them.
OPTIONAL_TASK_ENV = {"DROPBATCH_TASK_THREADS", "DROPBATCH_LOG_LEVEL"}


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


@pytest.fixture(scope="module")
def final_stage() -> list[tuple[str, str]]:
    steps = instructions(ROOT / "Dockerfile.gpu")
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def env_names(steps: list[tuple[str, str]]) -> set[str]:
    names = set()
    for word, args in steps:
        if word == "ENV":
            names.update(re.findall(r"([A-Za-z_][A-Za-z0-9_]*)=", args))
    return names


def test_entrypoint_is_the_jobs_command(final_stage: list[tuple[str, str]]) -> None:
    [entrypoint] = [json.loads(args) for word, args in final_stage if word == "ENTRYPOINT"]
    assert entrypoint == [TASK_ENTRYPOINT, *TASK_COMMANDS]


def test_runs_as_a_non_root_user_with_ffmpeg_on_cuda(final_stage: list[tuple[str, str]]) -> None:
    users = [args for word, args in final_stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    # The Job makes the VM's model cache folder for this uid (batch_jobs/cloud_batch.py).
    [created] = [args for word, args in final_stage if word == "RUN" and "useradd" in args]
    assert f"--uid {IMAGE_UID} {users[-1]}" in created
    assert any(word == "RUN" and "ffmpeg" in args for word, args in final_stage)
    text = (ROOT / "Dockerfile.gpu").read_text()
    base = re.search(r"ARG CUDA_IMAGE=(\S+)", text).group(1)
    assert re.fullmatch(r"nvidia/cuda:12\.\d+\.\d+-cudnn-runtime-ubuntu\d+\.\d+", base)
    assert "/whl/cu12" in text  # torch wheels built for the same CUDA major


def test_the_gpu_extra_is_installed(final_stage: list[tuple[str, str]]) -> None:
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert 'pip install ".[gpu]"' in text
    extra = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]["gpu"]
    assert any(dep.startswith("onnxruntime-gpu") for dep in extra)
    assert any(dep.startswith("torch") for dep in extra)


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
        "dropbatch/config.py",
        "dropbatch/logs.py",
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
