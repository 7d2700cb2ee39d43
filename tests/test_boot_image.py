"""Static checks of infra/boot-image/ (Packer cannot build here: no project): the template
installs the pinned driver and the NVIDIA Container Toolkit, pulls the task image and fills the
VMs' shared model cache where the Job looks for it. Each check is also run on a copy with one
piece removed, and must fail there."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import hcl2
import pytest

from batch_jobs.cloud_batch import (
    BOOT_DISK_GB,
    GPU_DRIVER_VERSION,
    IMAGE_UID,
    MODEL_CACHE_HOST,
    MODEL_CACHE_MOUNT,
    PREINSTALLED_GPU_OPTIONS,
)
from batch_jobs.worker_count import (
    DRIVER_INSTALL_SECONDS,
    IMAGE_PULL_SECONDS,
    VM_BOOT_SECONDS,
    batch_throughput,
)
from core.config import Settings

ROOT = Path(__file__).resolve().parent.parent
FOLDER = ROOT / "infra" / "boot-image"
TEMPLATE = "dropbatch-boot.pkr.hcl"


def _clean(value):
    """python-hcl2 keeps HCL quoting and block markers; give plain Python values."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == value[-1] == '"':
            value = value[1:-1].replace('\\"', '"')
        return value
    if isinstance(value, list):
        return [_clean(v) for v in value]
    if isinstance(value, dict):
        return {
            _clean(k): _clean(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__")
        }
    return value


def load(folder: Path) -> dict:
    with open(folder / TEMPLATE) as handle:
        return _clean(hcl2.load(handle))


def variables(template: dict) -> dict[str, dict]:
    return {name: attrs for block in template["variable"] for name, attrs in block.items()}


def commands(template: dict) -> list[str]:
    """Every shell command the build runs, in order."""
    [build] = template["build"]
    found = []
    for block in build["provisioner"]:
        for kind, attrs in block.items():
            if kind == "shell":
                found += attrs["inline"]
    return found


def position(lines: list[str], needle: str) -> int:
    matches = [n for n, line in enumerate(lines) if needle in line]
    assert matches, f"no build step runs {needle!r}"
    return matches[0]


def check_template(folder: Path) -> None:
    template = load(folder)
    known = variables(template)
    [local] = template["locals"]
    [source] = template["source"]
    vm = source["googlecompute"]["dropbatch_boot"]
    # The build VM has the GPU the driver is installed for and checked on; the disk holds
    # what the Job's disk holds.
    assert vm["machine_type"].startswith("g2-") and vm["on_host_maintenance"] == "TERMINATE"
    assert int(vm["disk_size"]) >= BOOT_DISK_GB
    # It builds as the job account, which reads the image repository and the model store.
    assert vm["service_account_email"] == "${var.service_account}"
    lines = commands(template)
    # The driver the Job would otherwise pin, checked on the GPU after the installer's reboot.
    assert known["driver_version"]["default"] == GPU_DRIVER_VERSION
    driver = position(lines, "install_driver --force-version ${var.driver_version}")
    verified = position(lines, "grep -qx ${var.driver_version}")
    # The NVIDIA Container Toolkit wired into Docker: the Job's `--gpus all` needs it.
    assert PREINSTALLED_GPU_OPTIONS == "--gpus all"
    toolkit = position(lines, "apt-get install -y nvidia-container-toolkit")
    wired = position(lines, "nvidia-ctk runtime configure --runtime=docker")
    # The task image by the digest given, then its own self-check on the GPU with --gpus.
    pulled = position(lines, "docker pull ${var.task_image}")
    selfcheck = position(lines, "docker run --rm --gpus all --entrypoint python ${var.task_image}")
    assert "-m batch_jobs.selfcheck" in lines[selfcheck]
    # The chain's models, verified by the image's own model store into the folder the Job
    # mounts as its model cache, owned by the image's user.
    assert (local["model_cache_host"], local["model_cache_mount"]) == (
        MODEL_CACHE_HOST,
        MODEL_CACHE_MOUNT,
    )
    assert local["image_uid"] == str(IMAGE_UID)
    owned = position(lines, "chown ${local.image_uid}:${local.image_uid} ${local.model_cache_host}")
    models = position(lines, "models check --store ${var.model_store} --manifest")
    copy = lines[models]
    assert "-v ${local.model_cache_host}:${local.model_cache_mount}" in copy
    assert "-e DROPBATCH_MODEL_CACHE=${local.model_cache_mount}" in copy
    assert "--user ${local.image_uid}" in copy and "${var.task_image}" in copy
    [build] = template["build"]
    uploads = [b["file"] for b in build["provisioner"] if "file" in b]
    assert {"source": "${var.manifest}", "destination": "/tmp/manifest.yaml"} in uploads
    assert (ROOT / known["manifest"]["default"]).is_file()
    assert driver < verified < toolkit < wired < pulled < selfcheck < owned < models


def test_the_boot_image_bakes_the_driver_the_toolkit_the_image_and_the_models() -> None:
    check_template(FOLDER)


def _drop_line(text: str, needle: str) -> str:
    [line] = [line for line in text.splitlines(keepends=True) if needle in line]
    return text.replace(line, "", 1)


MUTATIONS = {
    "the installer's own driver": lambda t: t.replace(
        "install_driver --force-version ${var.driver_version}", "install_driver"
    ),
    "another driver": lambda t: t.replace(f'"{GPU_DRIVER_VERSION}"', '"550.127.05"'),
    "no toolkit": lambda t: _drop_line(t, "apt-get install -y nvidia-container-toolkit"),
    "toolkit not wired into docker": lambda t: _drop_line(t, "nvidia-ctk runtime configure"),
    "image not pulled": lambda t: _drop_line(t, "docker pull ${var.task_image}"),
    "no models": lambda t: _drop_line(t, "models check --store"),
    "models into another folder": lambda t: t.replace(
        '"/var/lib/dropbatch/models"', '"/opt/models"'
    ),
    "models before the image": lambda t: t.replace(
        '"docker pull ${var.task_image}",', '"true",'
    ).replace('"mkdir -p ${local.model_cache_host}",', '"docker pull ${var.task_image}",'),
    "no GPU on the build VM": lambda t: t.replace('"g2-standard-4"', '"n2-standard-4"'),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_the_check_fails_when_a_piece_is_removed(tmp_path: Path, mutation: str) -> None:
    copy = tmp_path / "boot-image"
    shutil.copytree(FOLDER, copy)
    before = (copy / TEMPLATE).read_text()
    after = MUTATIONS[mutation](before)
    assert after != before
    (copy / TEMPLATE).write_text(after)
    with pytest.raises(AssertionError):
        check_template(copy)


def test_the_readmes_start_up_table_is_what_the_planner_counts() -> None:
    # infra/boot-image/README.md's "What it saves" rows are batch_throughput's figures.
    text = (FOLDER / "README.md").read_text()
    rows = re.findall(r"^\| [^|]+ \| (\d+) s \| (\d+ s|—) \| (\d+ s|—) \| (\d+) s \|$", text, re.M)
    assert len(rows) == 3
    image = "us-central1-docker.pkg.dev/acme/dropbatch/task@sha256:" + "ab" * 32
    settings = [
        Settings(launcher="batch", image=image),
        Settings(launcher="batch", image=image, gpu_driver_preinstalled=True),
        Settings(
            launcher="batch", image=image, gpu_driver_preinstalled=True, boot_image_task_image=image
        ),
    ]
    for (boot, driver, pull, total), deployed in zip(rows, settings, strict=True):
        assert float(boot) == VM_BOOT_SECONDS
        assert driver in ("—", f"{DRIVER_INSTALL_SECONDS:g} s")
        assert pull in ("—", f"{IMAGE_PULL_SECONDS:g} s")
        assert float(total) == batch_throughput(deployed).vm_startup_seconds
