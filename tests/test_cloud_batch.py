"""The Cloud Batch Job we send, as the real BatchServiceClient puts it on the wire to the local
stand-in: GPU, Spot, retry policy, parallelism, notification, environment, ids and size."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.cloud import batch_v1

from batch_jobs.batch_launcher import BatchLauncher, batch_client
from batch_jobs.cloud_batch import (
    BOOT_DISK_GB,
    GPU_DRIVER_VERSION,
    IMAGE_UID,
    MISCONFIGURED_EXIT,
    MODEL_CACHE_HOST,
    MODEL_CACHE_MOUNT,
    PREINSTALLED_GPU_OPTIONS,
    RETRY_EXIT_CODES,
    SPOT_PREEMPTED,
    build_job,
    max_run_seconds,
    prepare_script,
    request_id_for,
)
from batch_jobs.ids import JOB_ID_RE, job_id_for
from batch_jobs.launcher import LaunchError
from batch_jobs.launchers import open_launcher
from core.config import Settings
from core.domain import Plan, VideoInfo
from core.status.model import JobRecord
from tests.batch_standin import BatchStandin
from tests.crowd import even_chunks, named_item

INFO = VideoInfo(duration=95.0, fps_num=30, fps_den=1, frame_count=2850, width=1920, height=1080)


def record_with(
    chunks_per_item: list[int],
    *,
    gpu: str = "l4",
    spot: bool = True,
    max_parallel: int = 10,
    retries: int = 3,
    chunk_seconds: float = 10.0,
    bucket: str = "acme.inbox",
) -> JobRecord:
    items = [
        named_item(
            n,
            f"{'long-name-' * 8}{n:04d}",
            "campaign-7/clips/",
            "campaign-7/out/",
            INFO,
            even_chunks(c, 300),
            chain=[{"name": "crop", "options": {"aspect": "9:16"}}],
        )
        for n, c in enumerate(chunks_per_item)
    ]
    plan = Plan(
        items=items,
        max_parallel_tasks=max_parallel,
        max_retries=retries,
        gpu=gpu,
        spot=spot,
        chunk_seconds=chunk_seconds,
    )
    manifest = "campaign-7/manifest.yaml"
    return JobRecord(
        job_id=job_id_for(bucket, manifest, 1700000000000001),
        bucket=bucket,
        manifest=manifest,
        manifest_generation=1700000000000001,
        manifest_uri=f"gs://{bucket}/{manifest}",
        plan=plan,
    )


@pytest.fixture
def standin() -> Iterator[BatchStandin]:
    server = BatchStandin(run_jobs=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def settings(standin: BatchStandin) -> Settings:
    return Settings(
        launcher="batch",
        project="acme-video",
        region="us-central1",
        image="us-central1-docker.pkg.dev/acme-video/dropbatch/task:1",
        job_service_account="dropbatch-job@acme-video.iam.gserviceaccount.com",
        notification_topic="dropbatch-batch-state",
        allowed_locations="zones/us-central1-a,zones/us-central1-b",
        batch_emulator_host=standin.endpoint,
    )


def test_the_job_on_the_wire_has_gpu_spot_retries_parallelism_and_notification(
    standin: BatchStandin, settings: Settings
) -> None:
    record = record_with([7, 5], max_parallel=4, retries=2, chunk_seconds=10)
    name = open_launcher(settings).launch(record, settings)

    [request] = standin.requests
    assert name == f"projects/acme-video/locations/us-central1/jobs/{record.job_id}"
    assert request.parent == "projects/acme-video/locations/us-central1"
    assert request.job_id == record.job_id and JOB_ID_RE.match(request.job_id)
    assert uuid.UUID(request.request_id) == uuid.UUID(request_id_for(record.job_id))
    job = request.job
    [group] = job.task_groups
    # Four workers pull the 12 chunks (both items): min(12 chunks, max_parallel_tasks 4).
    assert (group.task_count, group.parallelism) == (4, 4)
    assert group.task_count_per_node == 1
    spec = group.task_spec
    prepare, runnable = spec.runnables
    # The VM's shared model cache: made on the host for the image's user, mounted in the task.
    assert prepare.script.text == (
        f"mkdir -p {MODEL_CACHE_HOST} && chown {IMAGE_UID}:{IMAGE_UID} {MODEL_CACHE_HOST}"
    )
    assert list(runnable.container.volumes) == [f"{MODEL_CACHE_HOST}:{MODEL_CACHE_MOUNT}"]
    assert runnable.container.image_uri == settings.image
    assert runnable.container.options == ""  # Batch installs the driver and hands on the GPU
    assert [runnable.container.entrypoint, *runnable.container.commands] == [
        "python",
        "-m",
        "batch_jobs.task",
    ]
    assert spec.max_retry_count == 2
    [policy] = spec.lifecycle_policies
    assert policy.action == batch_v1.LifecyclePolicy.Action.RETRY_TASK
    assert SPOT_PREEMPTED == 50001 and 50001 in policy.action_condition.exit_codes
    assert list(policy.action_condition.exit_codes) == list(RETRY_EXIT_CODES)
    assert spec.max_run_duration.seconds == max_run_seconds(record.plan)
    # A worker may end up doing every chunk: the limit covers the whole job's seconds.
    assert spec.max_run_duration.seconds >= 2 * INFO.duration * 30
    env = spec.environment.variables
    assert env["DROPBATCH_JOB_ID"] == record.job_id
    assert env == {
        **settings.to_env(),
        "DROPBATCH_JOB_ID": record.job_id,
        "DROPBATCH_MODEL_CACHE": MODEL_CACHE_MOUNT,
    }

    [instance] = job.allocation_policy.instances
    assert instance.install_gpu_drivers
    assert instance.policy.machine_type.startswith("g2-standard-")
    [gpu] = instance.policy.accelerators
    assert (gpu.type_, gpu.count) == ("nvidia-l4", 1)
    assert gpu.driver_version == GPU_DRIVER_VERSION  # a branch that runs the image's CUDA
    # Batch's Debian image on an SSD persistent disk sized for the image (VM start-up).
    disk = instance.policy.boot_disk
    assert (disk.image, disk.type_, disk.size_gb) == ("batch-debian", "pd-ssd", BOOT_DISK_GB)
    assert instance.policy.provisioning_model == batch_v1.AllocationPolicy.ProvisioningModel.SPOT
    assert list(job.allocation_policy.location.allowed_locations) == [
        "zones/us-central1-a",
        "zones/us-central1-b",
    ]
    assert job.allocation_policy.service_account.email == settings.job_service_account
    assert job.logs_policy.destination == batch_v1.LogsPolicy.Destination.CLOUD_LOGGING
    assert job.labels["dropbatch-job"] == record.job_id
    assert job.labels["dropbatch-inbox"] == "acme-inbox"  # dots are not allowed in labels
    [note] = job.notifications
    assert note.pubsub_topic == "projects/acme-video/topics/dropbatch-batch-state"
    assert note.message.type_ == batch_v1.JobNotification.Type.JOB_STATE_CHANGED


def test_the_image_digest_is_pulled_and_recorded_on_the_job(settings: Settings) -> None:
    digest = "sha256:" + "0123456789abcdef" * 4
    pinned = settings.model_copy(
        update={"image": f"us-central1-docker.pkg.dev/acme-video/dropbatch/task@{digest}"}
    )
    job = build_job(record_with([2]), pinned)
    [_, runnable] = job.task_groups[0].task_spec.runnables
    assert runnable.container.image_uri.endswith(f"/task@{digest}")
    assert job.labels["dropbatch-image"] == ("sha256-" + "0123456789abcdef" * 4)[:63]
    assert job.allocation_policy.labels["dropbatch-image"] == job.labels["dropbatch-image"]
    # A tag pins nothing, so no digest label claims one.
    assert "dropbatch-image" not in build_job(record_with([2]), settings).labels


def test_a_boot_image_with_the_driver_installs_no_driver_and_hands_the_gpu_to_the_container(
    standin: BatchStandin, settings: Settings
) -> None:
    image = "projects/acme-video/global/images/family/dropbatch-boot"
    prebuilt = settings.model_copy(update={"boot_image": image, "gpu_driver_preinstalled": True})
    open_launcher(prebuilt).launch(record_with([2]), prebuilt)
    job = standin.requests[-1].job
    [instance] = job.allocation_policy.instances
    assert instance.policy.boot_disk.image == image
    assert not instance.install_gpu_drivers  # the driver is on the image already
    [gpu] = instance.policy.accelerators
    assert (gpu.type_, gpu.count, gpu.driver_version) == ("nvidia-l4", 1, "")
    # Batch's GPU page: a custom image with the driver and the NVIDIA Container Toolkit, and
    # installGpuDrivers false; the container asks Docker for the GPU itself.
    prepare, runnable = job.task_groups[0].task_spec.runnables
    assert runnable.container.options == PREINSTALLED_GPU_OPTIONS == "--gpus all"
    assert "nvidia-smi -L" in prepare.script.text and image in prepare.script.text
    # The tasks learn the deployment's settings too (they pass them on unchanged).
    env = job.task_groups[0].task_spec.environment.variables
    seen = Settings.from_env(env)
    assert (seen.boot_image, seen.gpu_driver_preinstalled) == (image, True)


def _host_with(tmp_path: Path, *tools: str) -> dict[str, str]:
    """An environment whose PATH holds only these stand-in host tools (each exits 0) and the
    shell's own commands: a VM with or without the driver's nvidia-smi and the toolkit."""
    folder = tmp_path / "host-bin"
    folder.mkdir()
    for tool in tools:
        (folder / tool).write_text("#!/bin/sh\nexit 0\n")
        (folder / tool).chmod(0o755)
    return {"PATH": f"{folder}:/usr/bin:/bin"}


@pytest.mark.parametrize(
    "tools,code",
    [
        ((), MISCONFIGURED_EXIT),
        (("nvidia-smi",), MISCONFIGURED_EXIT),
        (("nvidia-smi", "nvidia-ctk"), 0),
    ],
)
def test_a_boot_image_without_the_driver_fails_its_task_at_once_with_the_fix(
    tmp_path: Path, tools: tuple[str, ...], code: int
) -> None:
    # The VM-side check, run by a real shell (the folder line needs root and /var/lib: left out).
    image = "projects/acme-video/global/images/family/dropbatch-boot"
    _, check = prepare_script(image, driver_on_image=True).split("\n")
    run = subprocess.run(
        ["bash", "-c", check], env=_host_with(tmp_path, *tools), capture_output=True, text=True
    )
    assert run.returncode == code, run.stderr
    assert code not in RETRY_EXIT_CODES  # 0 or misconfigured: never retried
    if code:
        assert image in run.stderr and "infra/boot-image/" in run.stderr
    # Without the setting there is nothing to check: Batch installs the driver.
    assert "nvidia" not in prepare_script(image, driver_on_image=False)


def test_standard_vms_without_gpu_when_the_manifest_says_so(settings: Settings) -> None:
    job = build_job(record_with([3], gpu="none", spot=False, max_parallel=10), settings)
    [instance] = job.allocation_policy.instances
    assert not instance.install_gpu_drivers and not instance.policy.accelerators
    # No GPU, nothing to hand on, whatever the boot image carries.
    baked = settings.model_copy(update={"gpu_driver_preinstalled": True})
    no_gpu = build_job(record_with([3], gpu="none", spot=False, max_parallel=10), baked)
    assert no_gpu.task_groups[0].task_spec.runnables[1].container.options == ""
    assert instance.policy.provisioning_model == (
        batch_v1.AllocationPolicy.ProvisioningModel.STANDARD
    )
    assert job.task_groups[0].parallelism == 3  # fewer chunks than max_parallel_tasks
    assert list(job.allocation_policy.location.allowed_locations) == [
        "zones/us-central1-a",
        "zones/us-central1-b",
    ]


def test_job_definition_stays_under_1_mb_with_500_inputs(settings: Settings) -> None:
    record = record_with([40] * 500)  # 20 000 tasks, long names
    size = len(batch_v1.Job.serialize(build_job(record, settings)))
    assert record.plan is not None and len(record.plan.model_dump_json()) > 1 << 20
    assert size < 16 << 10  # the plan stays in the status store; the Job names the job id


def test_launching_twice_creates_one_job(standin: BatchStandin, settings: Settings) -> None:
    record = record_with([2])
    launcher = BatchLauncher(settings)
    first = launcher.launch(record, settings)
    again = launcher.launch(record, settings)
    assert first == again
    assert len(standin.requests) == 2 and len(standin.jobs) == 1
    assert {r.request_id for r in standin.requests} == {request_id_for(record.job_id)}


def test_already_exists_is_success_and_reads_the_job_back(
    standin: BatchStandin, settings: Settings
) -> None:
    record = record_with([2])
    # An earlier attempt created the job under another request id (say, an older version).
    client = batch_client(settings)
    earlier = client.create_job(
        request=batch_v1.CreateJobRequest(
            parent="projects/acme-video/locations/us-central1",
            job_id=record.job_id,
            job=build_job(record, settings),
            request_id=str(uuid.uuid4()),
        )
    )
    name = BatchLauncher(settings).launch(record, settings)
    assert name == earlier.name
    assert len(standin.jobs) == 1 and len(standin.requests) == 2


def test_missing_batch_settings_are_named(settings: Settings) -> None:
    incomplete = settings.model_copy(update={"image": "", "notification_topic": ""})
    with pytest.raises(LaunchError, match="DROPBATCH_IMAGE, DROPBATCH_NOTIFICATION_TOPIC"):
        build_job(record_with([1]), incomplete)


def test_long_manifest_names_still_give_batch_job_ids() -> None:
    for manifest in ["A" * 300 + ".yaml", "Ünïcode/ファイル.yaml", "9-starts-with-digit.yml"]:
        job_id = job_id_for("bucket", manifest, 1)
        assert JOB_ID_RE.match(job_id) and len(job_id) <= 63
