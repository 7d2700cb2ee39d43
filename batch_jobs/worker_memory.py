"""How many workers a job runs at once on this machine (the local executor).

Each local worker is a process with its own decoder and encoder, its own models and the
frames its steps hold; on a small machine a job's planned workers can take more memory than
there is (a 1080p crop with eight workers took 8.4 GB on a 2-core machine, load 25). With
`local_workers: auto` a job runs at most as many workers as this machine has cores and as its
available memory holds at the job's estimated worker size; a number is the person's choice
for this machine and is taken as given.

A worker's size is estimated from measurements (bench/worker_memory.py, bench/RESULTS.md
"Worker memory"): the worker itself (interpreter, imports, a decoder and an encoder) plus
each step of its chain (`StepSpec.memory`), each a fixed part and a part per million pixels
of the video's frame. The job's largest item sets the size.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from core.config import Settings
from core.domain import Plan
from processors.registry import step_spec
from processors.spec import StepMemory

# A worker with an empty chain (decode → encode), measured: its Python process with the
# imports and the status store, an ffmpeg decoder and an x264 encoder.
WORKER = StepMemory(base_mb=200.0, per_megapixel_mb=135.0)
# The share of the available memory local workers may take: the rest is the executor's own
# process, the stitch, the page cache and whatever else the machine runs.
MEMORY_SHARE = 0.8


@dataclass(frozen=True)
class Machine:
    cores: int
    available_mb: float  # memory a new process can take without swapping


@dataclass(frozen=True)
class WorkerChoice:
    count: int
    reason: str  # why this many, in words (the job's log and status record)


def this_machine() -> Machine:
    """The cores this process may run on and the memory available now: the kernel's
    MemAvailable, at most what the container's memory limit (cgroup v2) leaves."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return Machine(cores=max(1, cores or 1), available_mb=_available_mb())


def _available_mb() -> float:
    available = float("inf")
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) / 1024
    except (OSError, ValueError):
        pass
    if available == float("inf"):  # not Linux: free pages, a lower bound of what is available
        available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2**20
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
        if limit != "max":
            available = min(available, (int(limit) - used) / 2**20)
    except (OSError, ValueError):
        pass  # no cgroup v2 limit on this process
    return max(0.0, available)


def worker_mb(chain: list[dict], width: int, height: int) -> float:
    """The estimated peak resident memory of one worker running `chain` (a plan's steps) on
    frames of width × height."""
    megapixels = width * height / 1e6
    parts = [WORKER, *(step_spec(step["name"]).memory for step in chain)]
    return sum(p.base_mb + p.per_megapixel_mb * megapixels for p in parts)


def plan_worker_mb(plan: Plan) -> float:
    """One worker's estimated size for the job: its largest item's (a worker takes any)."""
    return max(
        (worker_mb(item.chain, item.info.width, item.info.height) for item in plan.items),
        default=WORKER.base_mb,
    )


def choose_local_workers(
    plan: Plan, settings: Settings, machine: Machine | None = None
) -> WorkerChoice:
    """The workers the local executor starts for `plan`: the job's own count (its
    parallelism), at most `local_workers` when that is a number; with `auto`, also at most
    this machine's cores and what MEMORY_SHARE of its available memory holds (at least one:
    a job always runs, and the reason says when even one is more than fits)."""
    planned = plan.parallelism
    if settings.local_workers != "auto":
        count = max(1, min(planned, settings.local_workers))
        return WorkerChoice(
            count, f"{count} of the job's {planned} worker(s): local_workers is {count}"
        )
    machine = machine or this_machine()
    size = plan_worker_mb(plan)
    room = MEMORY_SHARE * machine.available_mb
    fit = int(room // size)
    count = max(1, min(planned, machine.cores, fit))
    facts = (
        f"{machine.cores} core(s), {machine.available_mb:.0f} MB available, "
        f"about {size:.0f} MB a worker"
    )
    if fit < 1:
        return WorkerChoice(1, f"1 worker, though even one may not fit: {facts}")
    bound = "the job's own count" if count == planned else "what this machine holds"
    return WorkerChoice(count, f"{count} of the job's {planned} worker(s), {bound}: {facts}")
