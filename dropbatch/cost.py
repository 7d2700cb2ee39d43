"""What a run costs on Cloud Batch, estimated from a manifest's `compute` settings.

Batch starts `parallelism` VMs (one task per VM: one GPU each), each a worker that sets up once
and then pulls chunks one after another, so the bill is the VMs' start-up and setup once per VM
plus every chunk's processing time (and its small fixed cost),
at the hourly rate of the machine (Spot or standard). Prices change (Spot prices daily): the
rate table is a default to replace with your region's current prices.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from batch_jobs.chunk_size import auto_chunk_seconds
from batch_jobs.cloud_batch import BOOT_DISK_GB, MACHINES
from manifests.model import ComputeOptions

# USD per VM hour in us-central1 (machine incl. its GPU), as listed when this was written.
# Spot rates move daily; pass your own `Rates` for a real quote.
VM_HOURLY_USD = {
    ("g2-standard-8", "standard"): 0.8536,
    ("g2-standard-8", "spot"): 0.3400,
    ("n2-standard-8", "standard"): 0.3885,
    ("n2-standard-8", "spot"): 0.0940,
}
DISK_GB_MONTH_USD = 0.10  # pd-balanced
HOURS_PER_MONTH = 730


@dataclass(frozen=True)
class Rates:
    vm_hourly: dict[tuple[str, str], float]
    disk_gb_month: float = DISK_GB_MONTH_USD


DEFAULT_RATES = Rates(VM_HOURLY_USD)


@dataclass(frozen=True)
class Throughput:
    """How fast the chain runs on one VM and how long a VM takes to be ready."""

    frames_per_second: float = 30.0  # processing speed of the chain on one VM
    vm_startup_seconds: float = 240.0  # boot, GPU driver install, image pull
    # per worker (one per VM): container start, imports, model fetch and load
    task_setup_seconds: float = 30.0
    # per chunk in a worker: claim, seek and pre-roll decode, encoder start, part upload
    chunk_setup_seconds: float = 2.0


@dataclass(frozen=True)
class CostEstimate:
    tasks: int  # chunks (each VM's worker pulls them)
    vms: int  # workers: one Batch task per VM
    vm_hours: float
    wall_seconds: float
    usd: float
    machine_type: str
    provisioning: str
    hourly_usd: float
    chunk_seconds: float = 10.0


def estimate_cost(
    compute: ComputeOptions,
    video_seconds: float,
    fps: float = 30.0,
    throughput: Throughput | None = None,
    rates: Rates = DEFAULT_RATES,
) -> CostEstimate:
    """The cost of processing `video_seconds` of video at `fps` with these compute settings."""
    speed = throughput or Throughput()
    machine = MACHINES[compute.gpu].machine_type
    provisioning = "spot" if compute.spot else "standard"
    hourly = rates.vm_hourly[(machine, provisioning)]
    hourly += BOOT_DISK_GB * rates.disk_gb_month / HOURS_PER_MONTH
    seconds = chunk_seconds_for(compute, video_seconds, fps)
    tasks = max(1, math.ceil(video_seconds / seconds))
    vms = min(tasks, compute.max_parallel_tasks)
    chunk_frames = seconds * fps
    # Workers pull chunks: each VM pays start-up and setup once, then chunks back to back.
    chunk_time = speed.chunk_setup_seconds + chunk_frames / speed.frames_per_second
    per_vm = speed.vm_startup_seconds + speed.task_setup_seconds
    busy_seconds = tasks * chunk_time + vms * per_vm
    wall = per_vm + math.ceil(tasks / vms) * chunk_time
    vm_hours = busy_seconds / 3600
    return CostEstimate(
        tasks=tasks,
        vms=vms,
        vm_hours=vm_hours,
        wall_seconds=wall,
        usd=vm_hours * hourly,
        machine_type=machine,
        provisioning=provisioning,
        hourly_usd=hourly,
        chunk_seconds=seconds,
    )


def chunk_seconds_for(compute: ComputeOptions, video_seconds: float, fps: float) -> float:
    """The manifest's chunk length, or what `auto` chooses for a chain without context."""
    if compute.chunk_seconds == "auto":
        return auto_chunk_seconds(video_seconds, fps, compute.max_parallel_tasks, 0, 0)
    return compute.chunk_seconds
