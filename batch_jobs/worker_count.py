"""`compute.workers: auto`: how many workers (Batch tasks, one VM each) a job gets.

Every VM pays its start-up (provisioning and boot, the GPU driver install, the image pull) and
its worker's setup (container start, imports, model load) before its first frame, and a user
pays for that time as for GPU work. `auto` starts the most workers (at most
`max_parallel_tasks`) for which everything the job spends beyond its frames — the workers'
starts, each chunk's fixed cost and the pre/post-roll decoded around it, the stitch — stays
within `OVERHEAD_SHARE` of the GPU-time floor (the output frames at the chain's speed on one
GPU): a job then costs at most about 1.5× the floor wherever one VM's start-up leaves room
for it. A one-minute video runs on one VM instead of ten; a long one still gets
`max_parallel_tasks`. A user who wants the result sooner at a higher price asks for a number
(`compute.workers: 10`).

The planner runs in the trigger, before any frame is decoded: the VM start-up comes from the
deployment (`deployment_throughput`), the chain's speed from the job's own chain, its steps'
options and its frame sizes in the per-step cost table (processors/step_costs.yaml,
`job_throughput`) unless the deployment sets `chain_fps`; `dropbatch cost` prices with the
same figures (dropbatch/cost.py); the chunks each choice would cut are the planner's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from core.config import Settings
from core.domain import PlannedItem
from processors.step_costs import chain_fps

# What a job may spend beyond its frames, as a share of its floor: 0.5 keeps a job near 1.5×
# the floor (the cost target), while a long video still spreads over max_parallel_tasks.
OVERHEAD_SHARE = 0.5

# VM start-up on Cloud Batch (sources: docs/decisions/0089-boot-image-with-driver-optional.md
# and bench/RESULTS.md "Cloud model"): provisioning and boot, the driver install that
# `install_gpu_drivers` runs at every boot (none with a boot image that has the driver), and
# the slim image's pull and extraction.
VM_BOOT_SECONDS = 40.0
DRIVER_INSTALL_SECONDS = 150.0
IMAGE_PULL_SECONDS = 60.0


@dataclass(frozen=True)
class Throughput:
    """How fast the chain runs on one VM and what each VM, worker and chunk costs besides.

    Defaults (bench/RESULTS.md, "Cloud model", has the sources): VM start-up is Batch's
    provisioning and boot (~40 s), the GPU driver install at boot (~150 s; 0 with a boot image
    that has it) and the slim image's pull and extraction (~60 s); a worker's setup is the
    container start, imports and model fetch and load; a chunk's overhead is its claim, the
    decoder's seek and start, the encoder's start and flush, the part's upload and the status
    writes, measured with the real-model chain in bench/cloud.py.
    """

    # The chain's speed on one VM (the per-frame cost); 0: the job's own, from the step-cost
    # table (`job_throughput`).
    frames_per_second: float = 30.0
    vm_startup_seconds: float = VM_BOOT_SECONDS + DRIVER_INSTALL_SECONDS + IMAGE_PULL_SECONDS
    worker_setup_seconds: float = 17.0  # 2 measured (chain build) + 15 container and GPU start
    chunk_overhead_seconds: float = 2.6  # measured
    stitch_seconds: float = 10.0  # download the parts, concatenate by stream copy, upload
    stitch_seconds_per_video_second: float = 0.02
    preemptions_per_vm_hour: float = 0.0  # Spot: the chance rate a VM is taken back
    # Workers of the warm pool free for the job (batch_jobs/pool_rules.py): up already, their
    # models loaded, so the first `warm_workers` start nothing.
    warm_workers: int = 0

    @property
    def start_seconds(self) -> float:
        """What one worker costs before its first frame: its VM's start-up and its setup."""
        return self.vm_startup_seconds + self.worker_setup_seconds


# The local executor runs its workers on a machine that is already up, as processes: their
# start is a second or two of imports and model loading, so every chunk may get its own.
LOCAL = Throughput(vm_startup_seconds=0.0, worker_setup_seconds=0.0)


def deployment_throughput(settings: Settings) -> Throughput:
    """The figures the planner sizes a job with on this deployment: on Cloud Batch,
    `batch_throughput`; under the local executor, the chain's speed and no start-up."""
    if settings.launcher == "local":
        return replace(LOCAL, frames_per_second=settings.chain_fps)
    return batch_throughput(settings)


def batch_throughput(settings: Settings) -> Throughput:
    """A Batch VM's figures: the chain's speed (`chain_fps`; 0: each job's own, from the
    step-cost table) and the VM's start-up
    (`vm_startup_seconds`; 0: from the boot image — with the driver on it no install, with
    the job's own task image pulled onto it no pull: infra/boot-image/ bakes both)."""
    startup = settings.vm_startup_seconds
    if not startup:
        driver = 0.0 if settings.gpu_driver_preinstalled else DRIVER_INSTALL_SECONDS
        # Only the very digest the boot image was built with is on its disk: a newer push is
        # pulled at start again until the boot image is rebuilt.
        baked = bool(settings.image) and settings.boot_image_task_image == settings.image
        pull = 0.0 if baked else IMAGE_PULL_SECONDS
        startup = VM_BOOT_SECONDS + driver + pull
    return Throughput(frames_per_second=settings.chain_fps, vm_startup_seconds=startup)


def job_throughput(speed: Throughput, gpu: str, items: Sequence[PlannedItem]) -> Throughput:
    """`speed` with the job's chain speed where it has none (`frames_per_second` 0): each
    item's chain on its frames at the step-cost table's figures for `gpu`'s VM kind, the
    items' frames over the seconds they take together."""
    if speed.frames_per_second > 0:
        return speed
    frames = seconds = 0.0
    for item in items:
        size = (item.info.width, item.info.height)
        count = max(1, item.info.frame_count)
        frames += count
        seconds += count / chain_fps(item.chain, size, gpu)
    fps = frames / seconds if seconds else chain_fps([], (1920, 1080), gpu)
    return replace(speed, frames_per_second=fps)


def auto_workers(
    floor_seconds: float, cap: int, speed: Throughput, beyond_frames: Callable[[int], float]
) -> int:
    """The most workers, at most `cap`, whose start-ups together with `beyond_frames(n)` (the
    job's other costs for n workers: the chunks' fixed costs and pre/post-roll, the stitch)
    stay within `OVERHEAD_SHARE` of the floor (`floor_seconds`: the output frames at the
    chain's speed); at least one."""
    if speed.start_seconds <= 0:
        return max(1, cap)
    budget = OVERHEAD_SHARE * floor_seconds

    def fits(n: int) -> bool:
        return max(0, n - speed.warm_workers) * speed.start_seconds + beyond_frames(n) <= budget

    # More workers never cost less (more start-ups, never fewer chunks), so the answer is
    # found by bisection: a few plans cut even when max_parallel_tasks is 1000.
    low, high = 1, max(1, cap)
    while low < high:
        mid = (low + high + 1) // 2
        if fits(mid):
            low = mid
        else:
            high = mid - 1
    return low
