"""What a run costs on Cloud Batch and how long it waits, from a simulation of the job.

One model serves `dropbatch cost`, the README's cost table and `bench/cloud.py`. The job is
planned by the real planner (`batch_jobs.plan.build_plan`: the chunks, their pre/post-roll);
then `parallelism` VMs start (one worker each: one GPU), each pays its start-up (boot, GPU
driver, image pull) and its worker's setup (container start, imports, model load) once, and
then pulls chunks one at a time with the workers' claim rule (`next_claim`) until none is
left; a chunk costs a fixed overhead plus its decoded frames at the chain's speed. The worker
that finishes an item's last chunk stitches it. A Spot preemption ends a VM mid-chunk: its
claim is taken over once the lease runs out, and Batch starts a new VM for the task.

The floor is the GPU time the frames alone need: output frames / chain speed, at the same
hourly rate. Prices change (Spot prices daily): the rate table is a default to replace with
your region's current prices.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from fractions import Fraction

from batch_jobs.claims import next_claim
from batch_jobs.cloud_batch import BOOT_DISK_GB, MACHINES
from batch_jobs.worker_count import Throughput, job_throughput
from core.domain import Plan, VideoInfo
from manifests.model import ComputeOptions, Manifest

# USD per VM hour in us-central1 (machine incl. its GPU), as listed when this was written.
# Spot rates move daily; pass your own `Rates` for a real quote.
VM_HOURLY_USD = {
    ("g2-standard-8", "standard"): 0.8536,
    ("g2-standard-8", "spot"): 0.3400,
    ("n2-standard-8", "standard"): 0.3885,
    ("n2-standard-8", "spot"): 0.0940,
}
DISK_GB_MONTH_USD = 0.17  # pd-ssd, the boot disk's type (batch_jobs/cloud_batch.py)
HOURS_PER_MONTH = 730
# How long a silent worker's claim lasts before another worker may take its chunk (the
# workers' CLAIM_LEASE_SECONDS).
CLAIM_LEASE_SECONDS = 60.0


@dataclass(frozen=True)
class Rates:
    vm_hourly: dict[tuple[str, str], float]
    disk_gb_month: float = DISK_GB_MONTH_USD


DEFAULT_RATES = Rates(VM_HOURLY_USD)


@dataclass
class SimClaim:
    """One chunk's claim, with the fields the workers' claim rule reads (`ChunkClaim`)."""

    item: int
    chunk: int
    owner: str = ""
    expires_at: float = 0.0
    done: bool = False


ClaimRule = Callable[..., "SimClaim | None"]


@dataclass
class Simulation:
    """What the simulated run used: VM time, wall time, the floor, and counts."""

    vm_seconds: float
    wall_seconds: float
    floor_seconds: float
    vms_started: int
    workers: int
    chunks: int
    preemptions: int
    chunk_seconds: float
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def ratio(self) -> float:
        return self.vm_seconds / self.floor_seconds if self.floor_seconds else math.inf


def synthetic_plan(
    compute: ComputeOptions,
    video_seconds: float,
    fps: float = 30.0,
    chain: list | None = None,
    size: tuple[int, int] = (1920, 1080),
    manifest: Manifest | None = None,
    speed: Throughput | None = None,
) -> Plan:
    """The real planner's plan for one video of this length (its chunks and their rolls, and
    its workers, sized by `speed` as the trigger sizes them with the deployment's figures):
    with `manifest`, its chain and compute; else `compute` and `chain` (manifest syntax)."""
    from batch_jobs.plan import build_plan
    from manifests.resolve import ResolvedItem

    rate = Fraction(fps).limit_denominator(1001)
    frames = max(1, round(video_seconds * rate))
    info = VideoInfo(
        duration=float(frames / rate),
        fps_num=rate.numerator,
        fps_den=rate.denominator,
        frame_count=frames,
        width=size[0],
        height=size[1],
    )
    if manifest is None:
        manifest = Manifest.model_validate(
            {"version": 1, "inputs": ["video.mp4"], "chain": chain or [], "compute": compute}
        )
    item = (ResolvedItem(0, "video.mp4", None, None), info)
    return build_plan(manifest, "", [item], speed=speed or Throughput())


def simulate(
    plan: Plan,
    speed: Throughput,
    *,
    seed: int = 0,
    claim_rule: ClaimRule = next_claim,
    lease_seconds: float = CLAIM_LEASE_SECONDS,
) -> Simulation:
    """Run the plan's job on simulated VMs (see the module doc); deterministic per seed."""
    rng = random.Random(seed)
    claims = [SimClaim(item.index, chunk.index) for item in plan.items for chunk in item.chunks]
    by_key = {(c.item, c.chunk): c for c in claims}
    items = {item.index: item for item in plan.items}
    left = {item.index: len(item.chunks) for item in plan.items}
    workers = plan.parallelism
    rate = speed.preemptions_per_vm_hour / 3600

    vm_seconds = wall = 0.0
    vms = preemptions = 0
    timeline: list[tuple[float, str]] = []
    # Events: (time, order, worker name, VM start, preemption time, item of the chunk it
    # just finished or None). A worker is asked for its next chunk at `time`; its VM started
    # at `VM start` and is taken back at `preempt`.
    events: list[tuple[float, int, str, float, float, int | None]] = []
    order = 0

    def start_vm(at: float, name: str) -> None:
        nonlocal vms, order
        vms += 1
        preempt = at + rng.expovariate(rate) if rate > 0 else math.inf
        ready = at + speed.vm_startup_seconds + speed.worker_setup_seconds
        order += 1
        heapq.heappush(events, (ready, order, name, at, preempt, None))

    for w in range(workers):
        start_vm(0.0, f"w{w}")
    while events:
        now, _, name, started, preempt, finished = heapq.heappop(events)
        if now >= preempt:  # taken back before (or while) setting up: Batch retries the task
            preemptions += 1
            vm_seconds += preempt - started
            start_vm(preempt, name)
            continue
        if finished is not None:
            left[finished] -= 1
            if left[finished] == 0:  # this worker completed the item's set: it stitches
                item = items[finished]
                end = now + speed.stitch_seconds
                end += item.info.duration * speed.stitch_seconds_per_video_second
                timeline.append((end, f"{name} stitched item {finished}"))
                order += 1
                heapq.heappush(events, (end, order, name, started, preempt, None))
                continue
        pick = claim_rule(claims, now, prefer_item=None)
        if pick is None:  # nothing claimable: the worker's work is over, its VM goes away
            vm_seconds += now - started
            wall = max(wall, now)
            continue
        item = items[pick.item]
        chunk = item.chunks[pick.chunk]
        frames = (chunk.end_frame - chunk.start_frame) + chunk.preroll + chunk.postroll
        end = now + speed.chunk_overhead_seconds + frames / speed.frames_per_second
        pick.owner, pick.expires_at = name, end + lease_seconds  # renewed while it works
        if preempt < end:  # lost mid-chunk: the claim lapses a lease after the last renewal
            pick.expires_at = preempt + lease_seconds
            preemptions += 1
            vm_seconds += preempt - started
            timeline.append((preempt, f"{name} preempted in chunk {pick.chunk}"))
            start_vm(preempt, name)
            continue
        by_key[(pick.item, pick.chunk)].done = True
        order += 1
        heapq.heappush(events, (end, order, name, started, preempt, pick.item))

    frames_out = sum(c.end_frame - c.start_frame for i in plan.items for c in i.chunks)
    return Simulation(
        vm_seconds=vm_seconds,
        wall_seconds=wall,
        floor_seconds=frames_out / speed.frames_per_second,
        vms_started=vms,
        workers=workers,
        chunks=len(claims),
        preemptions=preemptions,
        chunk_seconds=plan.chunk_seconds,
        timeline=timeline,
    )


@dataclass(frozen=True)
class CostEstimate:
    tasks: int  # Batch tasks: one worker each
    vms: int
    chunks: int
    chunk_seconds: float
    vm_hours: float
    floor_hours: float
    wall_seconds: float
    usd: float
    floor_usd: float
    machine_type: str
    provisioning: str
    hourly_usd: float
    frames_per_second: float  # the chain's speed the run was simulated at
    video_seconds: float

    @property
    def usd_per_video_minute(self) -> float:
        return self.usd / (self.video_seconds / 60) if self.video_seconds else math.inf

    @property
    def ratio(self) -> float:
        return self.vm_hours / self.floor_hours if self.floor_hours else math.inf


def hourly_rate(compute: ComputeOptions, rates: Rates = DEFAULT_RATES) -> tuple[str, str, float]:
    """(machine type, provisioning, USD per VM hour with its boot disk)."""
    machine = MACHINES[compute.gpu].machine_type
    provisioning = "spot" if compute.spot else "standard"
    hourly = rates.vm_hourly[(machine, provisioning)]
    return machine, provisioning, hourly + BOOT_DISK_GB * rates.disk_gb_month / HOURS_PER_MONTH


def estimate(
    plan: Plan,
    compute: ComputeOptions,
    speed: Throughput,
    rates: Rates = DEFAULT_RATES,
    *,
    seed: int = 0,
    claim_rule: ClaimRule = next_claim,
) -> CostEstimate:
    """The simulated run of `plan`, priced."""
    machine, provisioning, hourly = hourly_rate(compute, rates)
    sim = simulate(plan, speed, seed=seed, claim_rule=claim_rule)
    return CostEstimate(
        tasks=sim.workers,
        vms=sim.vms_started,
        chunks=sim.chunks,
        chunk_seconds=sim.chunk_seconds,
        vm_hours=sim.vm_seconds / 3600,
        floor_hours=sim.floor_seconds / 3600,
        wall_seconds=sim.wall_seconds,
        usd=sim.vm_seconds / 3600 * hourly,
        floor_usd=sim.floor_seconds / 3600 * hourly,
        machine_type=machine,
        provisioning=provisioning,
        hourly_usd=hourly,
        frames_per_second=speed.frames_per_second,
        video_seconds=sum(item.info.duration for item in plan.items),
    )


def estimate_cost(
    compute: ComputeOptions,
    video_seconds: float,
    fps: float = 30.0,
    throughput: Throughput | None = None,
    rates: Rates = DEFAULT_RATES,
    chain: list | None = None,
    manifest: Manifest | None = None,
) -> CostEstimate:
    """The cost of processing `video_seconds` of video at `fps` with these compute settings
    (and the manifest's chain, whose context frames every chunk decodes and whose steps set its
    speed where `throughput.frames_per_second` is 0; no preemptions unless `throughput` says
    so)."""
    speed = throughput or Throughput()
    plan = synthetic_plan(compute, video_seconds, fps, chain, manifest=manifest, speed=speed)
    # The speed the planner sized the job with: its own chain's, from the step-cost table,
    # where `throughput` gives none.
    return estimate(plan, compute, job_throughput(speed, compute.gpu, plan.items), rates)
