"""The Cloud Batch Job for one dropbatch job, built field by field so a reader can point at the
line that sets the GPU, Spot, the retry policy or the notification.

One task group of `parallelism` tasks, each a worker that claims chunks from the status store
until none is left (batch_jobs/task.py), so the Job itself carries no plan and stays small
whatever the manifest holds; one task per VM because each VM has one GPU.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

from google.cloud import batch_v1
from google.protobuf import duration_pb2

from batch_jobs.ids import JOB_ID_RE
from batch_jobs.launcher import Capacity, LaunchError
from batch_jobs.pool_rules import ENGINE_ENV, POOL_ENV, POOL_WORKER_SECONDS
from core.config import Settings
from core.domain import Plan
from core.status.model import JobRecord

# The command every task runs; Dockerfile.gpu's ENTRYPOINT is the same (a test keeps them equal).
TASK_ENTRYPOINT = "python"
TASK_COMMANDS = ("-m", "batch_jobs.task")

# Exit codes a task is retried on (up to max_retry_count); every other non-zero exit fails it
# at once: Batch's RETRY_TASK policy fails what it does not list. 2 is our "misconfigured".
SPOT_PREEMPTED = 50001  # Batch: the Spot VM running the task was preempted
TASK_FAILED_RETRYABLE = 1  # batch_jobs.task: this attempt failed, another may not
RETRY_EXIT_CODES = (SPOT_PREEMPTED, TASK_FAILED_RETRYABLE)


POOL_COMMANDS = ("-m", "batch_jobs.pool")


@dataclass(frozen=True)
class MachineShape:
    """A VM for one task: machine type, its GPU, and what the task may use of it."""

    machine_type: str
    accelerator: str  # "" for none
    cpu_milli: int
    memory_mib: int


# gpu: l4 → g2-standard-8: one NVIDIA L4, 8 vCPU, 32 GB (decode and x264 encode run on the CPU).
# The compute resource asks for (nearly) the whole VM so Batch never packs two tasks onto one GPU.
MACHINES = {
    "l4": MachineShape("g2-standard-8", "nvidia-l4", cpu_milli=7500, memory_mib=28 * 1024),
    "none": MachineShape("n2-standard-8", "", cpu_milli=7500, memory_mib=28 * 1024),
}
# A VM runs a job's tasks one after another (one task per VM at a time): a host folder they
# share keeps the verified model copies, so each model is fetched once per VM, not per task.
MODEL_CACHE_HOST = "/var/lib/dropbatch/models"
MODEL_CACHE_MOUNT = "/var/cache/dropbatch/models"  # where the container sees it
# The NVIDIA driver Batch installs on a GPU VM. Pinned: Batch's default follows Google's
# installer and has been a 550 driver (CUDA 12.4), while Dockerfile.gpu is CUDA 13.0, which
# needs a 580+ driver (the CUDA image's NVIDIA_REQUIRE_CUDA makes the container refuse to start
# on less). 580.82.07 is the R580 long-term branch (CUDA up to 13.0) that Google's installer
# ships as its production and LTS driver. Sources: docs/decisions/0088-pin-r580-driver.md.
GPU_DRIVER_VERSION = "580.82.07"
# The newest CUDA each driver branch runs (NVIDIA's CUDA release notes, table 3); the tests
# hold the image's CUDA to the pinned branch.
DRIVER_BRANCH_CUDA = {
    "550": (12, 4),
    "560": (12, 6),
    "570": (12, 8),
    "575": (12, 9),
    "580": (13, 0),
}
IMAGE_UID = 10001  # Dockerfile.gpu's user: the folder must be writable by it
# A boot image with the driver already on it (`gpu_driver_preinstalled`, infra/boot-image/):
# Batch's GPU page (https://cloud.google.com/batch/docs/create-run-job-gpus, "Install GPU
# drivers") has such a custom image carry the driver and, for container runnables on an OS
# other than Container-Optimized OS, the NVIDIA Container Toolkit, with installGpuDrivers left
# false. Nothing there has Batch hand the GPU to a container it did not install a driver for,
# so the container asks for it itself: Docker's `--gpus` (served by that toolkit) through
# `Container.options`, "arbitrary additional options to include in the docker run command"
# (the API reference of Runnable.Container.options).
PREINSTALLED_GPU_OPTIONS = "--gpus all"
# Exit code of the VM-side check below: not retried (RETRY_EXIT_CODES), like batch_jobs.task's 2.
MISCONFIGURED_EXIT = 2
# The boot disk holds the OS, the pulled image (compressed layers while they download, then
# extracted: about 9 GB for the slim target, 16 GB with ultralytics, README "Image
# variants"), the model cache and a chunk's scratch. pd-ssd: image extraction and boot are
# disk-bound, and pd-ssd's baseline throughput is well above pd-balanced's at this size, while
# 50 GB of pd-ssd costs less per hour than the 100 GB of pd-balanced this used to take.
# Sources: docs/decisions/0092-boot-disk-pd-ssd.md.
BOOT_DISK_TYPE = "pd-ssd"
BOOT_DISK_GB = 50

# max_run_duration: model fetch and load, then chunks at the slowest chain we ship (about
# 1 frame/s at 30 fps, so 30 s per video second), plus a stitch of the longest item. A worker
# may end up doing every chunk (the others preempted), so the whole job's seconds count.
TASK_SETUP_SECONDS = 600
PROCESS_SECONDS_PER_VIDEO_SECOND = 30
STITCH_SECONDS_PER_VIDEO_SECOND = 0.5

LABEL_RE = re.compile(r"[^a-z0-9_-]+")


def job_parent(settings: Settings) -> str:
    return f"projects/{settings.project}/locations/{settings.region}"


def job_name(settings: Settings, job_id: str) -> str:
    return f"{job_parent(settings)}/jobs/{job_id}"


def request_id_for(job_id: str) -> str:
    """The same job id always sends the same request id, so Batch de-duplicates our retries."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"dropbatch:{job_id}"))


def label_value(text: str) -> str:
    """Batch/Compute label values: lowercase letters, digits, '-' and '_', at most 63."""
    return LABEL_RE.sub("-", text.lower())[:63]


def image_digest(image: str) -> str:
    """The `sha256:…` an image reference pins (`…/task@sha256:…`), or "" for a tag."""
    return image.partition("@")[2]


def notification_topic(settings: Settings) -> str:
    topic = settings.notification_topic
    return topic if topic.startswith("projects/") else f"projects/{settings.project}/topics/{topic}"


def allowed_locations(settings: Settings) -> list[str]:
    configured = [loc.strip() for loc in settings.allowed_locations.split(",") if loc.strip()]
    return configured or [f"regions/{settings.region}"]


def max_run_seconds(plan: Plan) -> int:
    longest_item = max((item.info.duration for item in plan.items), default=0.0)
    job_seconds = sum(item.info.duration for item in plan.items)
    return int(
        TASK_SETUP_SECONDS
        + job_seconds * PROCESS_SECONDS_PER_VIDEO_SECOND
        + longest_item * STITCH_SECONDS_PER_VIDEO_SECOND
    )


def task_environment(record: JobRecord, settings: Settings) -> dict[str, str]:
    """What `python -m batch_jobs.task` reads: the trigger's settings and the job id; the
    model cache is the VM's shared folder unless one is configured."""
    env = {**settings.to_env(), "DROPBATCH_JOB_ID": record.job_id}
    if not settings.model_cache:
        env["DROPBATCH_MODEL_CACHE"] = MODEL_CACHE_MOUNT
    return env


def require_settings(settings: Settings) -> None:
    missing = [
        f"DROPBATCH_{name.upper()}"
        for name in ("project", "region", "image", "job_service_account", "notification_topic")
        if not getattr(settings, name)
    ]
    if missing:
        raise LaunchError(f"the Cloud Batch launcher needs {', '.join(missing)}")


def prepare_script(boot_image: str, driver_on_image: bool) -> str:
    """The VM-side script run before the container: the shared model folder and, where the boot
    image is to carry the driver and the container toolkit, a check that it does."""
    lines = [f"mkdir -p {MODEL_CACHE_HOST} && chown {IMAGE_UID}:{IMAGE_UID} {MODEL_CACHE_HOST}"]
    if driver_on_image:
        lines.append(
            "if ! nvidia-smi -L || ! command -v nvidia-ctk >/dev/null; then "
            f"echo 'boot image {boot_image} has no working NVIDIA driver or no NVIDIA Container "
            "Toolkit, yet gpu_driver_preinstalled is set: build it with infra/boot-image/, or "
            f"unset gpu_driver_preinstalled' >&2; exit {MISCONFIGURED_EXIT}; fi"
        )
    return "\n".join(lines)


def build_job(
    record: JobRecord, settings: Settings, capacity: Capacity | None = None
) -> batch_v1.Job:
    """The job's own Batch job, or (`capacity`) warm-pool capacity launched for it: that
    many workers of its pool, which serve other jobs too (batch_jobs/pool.py)."""
    require_settings(settings)
    plan = record.plan
    if plan is None:
        raise LaunchError(f"job {record.job_id} has no plan")
    if not JOB_ID_RE.match(record.job_id):
        raise LaunchError(f"job id {record.job_id!r} does not fit Cloud Batch's id rule")
    workers = capacity.workers if capacity else plan.parallelism
    machine = MACHINES[plan.gpu]
    task = task_spec(record, settings, plan, machine, capacity)
    # One task per worker, all at once (min(max_parallel_tasks, chunks)); the workers pull the
    # chunks; one task per VM (one GPU each).
    group = batch_v1.TaskGroup()
    group.task_spec = task
    group.task_count = workers
    group.parallelism = workers
    group.task_count_per_node = 1

    instance = instance_policy(settings, plan, machine)
    labels = job_labels(record, settings, capacity)
    allocation = batch_v1.AllocationPolicy()
    allocation.instances = [instance]
    allocation.location = batch_v1.AllocationPolicy.LocationPolicy(
        allowed_locations=allowed_locations(settings)
    )
    allocation.service_account = batch_v1.ServiceAccount(email=settings.job_service_account)
    allocation.labels = labels  # on the VMs, for billing reports

    job = batch_v1.Job()
    job.task_groups = [group]
    job.allocation_policy = allocation
    job.labels = labels  # on the job and every log entry it writes
    job.logs_policy = batch_v1.LogsPolicy(destination=batch_v1.LogsPolicy.Destination.CLOUD_LOGGING)
    # Every job state change goes to Pub/Sub, where on_batch_state reconciles the record.
    notify = batch_v1.JobNotification()
    notify.pubsub_topic = notification_topic(settings)
    notify.message = batch_v1.JobNotification.Message(
        type_=batch_v1.JobNotification.Type.JOB_STATE_CHANGED
    )
    job.notifications = [notify]
    return job


def task_spec(
    record: JobRecord,
    settings: Settings,
    plan: Plan,
    machine: MachineShape,
    capacity: Capacity | None = None,
) -> batch_v1.TaskSpec:
    # What each task runs: the image's own command, with our settings as environment.
    container = batch_v1.Runnable.Container()
    container.image_uri = settings.image
    container.entrypoint = TASK_ENTRYPOINT
    container.commands = list(POOL_COMMANDS if capacity else TASK_COMMANDS)
    container.volumes = [f"{MODEL_CACHE_HOST}:{MODEL_CACHE_MOUNT}"]
    driver_on_image = bool(machine.accelerator) and settings.gpu_driver_preinstalled
    if driver_on_image:
        container.options = PREINSTALLED_GPU_OPTIONS  # the GPU, from the image's own driver
    runnable = batch_v1.Runnable()
    runnable.container = container
    # Before it, on the VM itself: the shared model folder, owned by the image's user; and,
    # with the driver on the boot image, proof that it is there (a clear failure, not retried,
    # instead of a chain that finds no GPU).
    prepare = batch_v1.Runnable()
    prepare.script = batch_v1.Runnable.Script(
        text=prepare_script(settings.boot_image, driver_on_image)
    )

    task = batch_v1.TaskSpec()
    task.runnables = [prepare, runnable]
    env = task_environment(record, settings)
    if capacity:
        env.update({POOL_ENV: capacity.pool, ENGINE_ENV: capacity.name})
    task.environment = batch_v1.Environment(variables=env)
    task.compute_resource = batch_v1.ComputeResource(
        cpu_milli=machine.cpu_milli, memory_mib=machine.memory_mib
    )
    # A pool worker serves job after job: it takes no new one past POOL_WORKER_SECONDS.
    run_for = max_run_seconds(plan) + (POOL_WORKER_SECONDS if capacity else 0)
    task.max_run_duration = duration_pb2.Duration(seconds=run_for)
    # Retries: a preempted Spot VM (50001) or a failed attempt (1), at most max_retries times.
    task.max_retry_count = plan.max_retries
    retry = batch_v1.LifecyclePolicy()
    retry.action = batch_v1.LifecyclePolicy.Action.RETRY_TASK
    retry.action_condition = batch_v1.LifecyclePolicy.ActionCondition(
        exit_codes=list(RETRY_EXIT_CODES)
    )
    task.lifecycle_policies = [retry]
    return task


def instance_policy(
    settings: Settings, plan: Plan, machine: MachineShape
) -> batch_v1.AllocationPolicy.InstancePolicyOrTemplate:
    # The VM: g2-standard for an L4, Spot or standard as the manifest's compute asks.
    policy = batch_v1.AllocationPolicy.InstancePolicy()
    policy.machine_type = machine.machine_type
    policy.provisioning_model = (
        batch_v1.AllocationPolicy.ProvisioningModel.SPOT
        if plan.spot
        else batch_v1.AllocationPolicy.ProvisioningModel.STANDARD
    )
    # The boot image: Batch's Debian image, or one with the NVIDIA driver already installed
    # (then no VM spends its start-up installing it: PREINSTALLED_GPU_OPTIONS above);
    # docs/decisions/0089-boot-image-with-driver-optional.md.
    policy.boot_disk = batch_v1.AllocationPolicy.Disk(
        image=settings.boot_image, type_=BOOT_DISK_TYPE, size_gb=BOOT_DISK_GB
    )
    instance = batch_v1.AllocationPolicy.InstancePolicyOrTemplate()
    if machine.accelerator:
        accelerator = batch_v1.AllocationPolicy.Accelerator(type_=machine.accelerator, count=1)
        if not settings.gpu_driver_preinstalled:
            accelerator.driver_version = GPU_DRIVER_VERSION
            instance.install_gpu_drivers = True
        policy.accelerators = [accelerator]
    instance.policy = policy
    return instance


def job_labels(
    record: JobRecord, settings: Settings, capacity: Capacity | None = None
) -> dict[str, str]:
    labels = {
        "app": "dropbatch",
        "dropbatch-job": label_value(record.job_id),
        "dropbatch-inbox": label_value(record.bucket),
    }
    if capacity:
        # Pool capacity: its VMs serve whichever jobs of the pool come; `dropbatch-job` names
        # the job it was launched for, and billing reports group the pool's VMs by these.
        labels["dropbatch-role"] = "pool-capacity"
        labels["dropbatch-pool"] = label_value(capacity.pool)
    if digest := image_digest(settings.image):
        # Which build ran, findable from the job and its logs (the runnable's image_uri holds
        # the whole digest; a label value holds its first 56 hex digits).
        labels["dropbatch-image"] = label_value(digest)
    return labels
