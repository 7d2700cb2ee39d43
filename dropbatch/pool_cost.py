"""The warm pool of workers shared across jobs, simulated: what a stream of uploads costs and
how long each waits, against each upload on VMs of its own (issue 22).

The same model as `dropbatch/cost.py` (its `simulate()` is the per-job baseline), with the
pool's rules from `batch_jobs/pool_rules.py` (imported, not copied):

- Each upload is a job planned at arrival by the real planner (`planner`), told how many
  workers are free for it (`Throughput.warm_workers`), by the pool's own rule
  (`pool_rules.free_workers`): those up and idle, those on a job with no claimable chunk left
  ("finishing") and VMs still starting, less what the jobs already waiting want (each job
  with claimable chunks wants min(its planned workers − the workers on it, its claimable
  chunks); the trigger counts the jobs queued and not started yet, which is the same while a
  job's workers start together). `free_rule` "soon" is a proposed change, for comparison.
  The trigger launches `shortfall(wanted, free, live, cap)` VMs.
- A VM pays its start-up and its worker's setup once per life, not per job; that time is
  billed to the job it was launched for.
- After every chunk (and when it is ready, and when a job arrives while it is idle) a worker
  takes the job `pick_job` names (fewest workers, stay on ties, then oldest) and within it
  the chunk `next_claim` names; a chunk costs the per-chunk fixed cost and its frames at the
  job's chain speed, whichever job the worker came from (same chain here: the models are
  loaded once per VM). The worker that ends an item's last chunk stitches it, as in
  `simulate()`.
- A worker with nothing to claim stays up `warm_seconds`, billed to the deployment (not to a
  job), then its VM goes. With `warm_seconds` 0 and jobs that never overlap, each job runs
  exactly as `simulate()` runs it.

No Spot preemptions here (the pool part of bench/cloud.py prices without them, as `dropbatch
cost` does by default).
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal

from batch_jobs.claims import claimable, next_claim
from batch_jobs.pool_rules import JobLoad, free_workers, pick_job, shortfall
from batch_jobs.worker_count import Throughput, job_throughput
from core.domain import Plan
from dropbatch.cost import CLAIM_LEASE_SECONDS, SimClaim, simulate, synthetic_plan
from manifests.model import ComputeOptions, Manifest

# The deployment-wide cap on live workers (starting ones included) the scenarios assume.
POOL_CAP = 20


@dataclass(frozen=True)
class Upload:
    """One upload: when it arrives (seconds from the scenario's start) and its length."""

    at: float
    video_seconds: float


# Issue 22's scenarios (bench/cloud.py, README's cost table): 20 one-minute uploads 30 s
# apart, then a 10-minute one 30 s after the last; and one 1-minute upload alone.
BURST = [Upload(30.0 * n, 60.0) for n in range(20)] + [Upload(20 * 30.0, 600.0)]
ALONE = [Upload(0.0, 60.0)]


# Which workers count as free for a new job. "stated": the rule of issue 22 (idle and
# finishing workers, and starting VMs beyond what the waiting jobs want). "soon", a proposed
# change: only those free before a VM launched now would be ready, and the waiting jobs'
# wants served from them first.
FreeRule = Literal["stated", "soon"]

# The real planner for one upload, given the deployment's figures with `warm_workers` set.
Planner = Callable[[Upload, Throughput], Plan]


def planner(
    compute: ComputeOptions | None = None, manifest: Manifest | None = None, fps: float = 30.0
) -> Planner:
    """The planner `dropbatch cost` uses (`synthetic_plan`): 1080p video at `fps` with the
    manifest's chain and compute (else `compute` and no chain)."""
    comp = manifest.compute if manifest is not None else compute or ComputeOptions()

    def plan(upload: Upload, speed: Throughput) -> Plan:
        return synthetic_plan(comp, upload.video_seconds, fps, manifest=manifest, speed=speed)

    return plan


@dataclass
class JobRun:
    """One upload's job: when its output was ready, and the VM time billed to it."""

    at: float
    done_at: float
    vm_seconds: float  # its chunks and stitch, and the start-ups of the VMs launched for it
    floor_seconds: float  # its output frames at its chain's speed on one GPU
    workers: int  # what the planner gave it
    free: int  # workers free for it at arrival (`warm_workers` in its plan)
    launched: int  # VMs the trigger started for it
    chunks: int

    @property
    def wait_seconds(self) -> float:
        """Upload to output."""
        return self.done_at - self.at

    @property
    def ratio(self) -> float:
        return self.vm_seconds / self.floor_seconds if self.floor_seconds else math.inf


@dataclass
class PoolRun:
    """What a stream of uploads used: every VM's time, the part billed to nobody's job (warm
    workers with nothing to claim), and each job."""

    jobs: list[JobRun]
    vm_seconds: float  # every VM from its start to its end
    idle_seconds: float  # warm time with nothing to claim: the deployment's
    vms_started: int
    peak_live: int
    timeline: list[tuple[float, str]] = field(default_factory=list)

    @property
    def floor_seconds(self) -> float:
        return sum(job.floor_seconds for job in self.jobs)

    @property
    def ratio(self) -> float:
        return self.vm_seconds / self.floor_seconds if self.floor_seconds else math.inf

    def wait_quantile(self, q: float) -> float:
        """Upload-to-output seconds at quantile q (0.5: the median) over the jobs, between
        the nearest two waits (numpy's default, "linear")."""
        waits = sorted(job.wait_seconds for job in self.jobs)
        at = (len(waits) - 1) * q
        low = math.floor(at)
        high = min(low + 1, len(waits) - 1)
        return waits[low] + (waits[high] - waits[low]) * (at - low)


def per_job_vms(uploads: Sequence[Upload], speed: Throughput, plan: Planner) -> PoolRun:
    """Today's behaviour: each upload planned with no free workers and run on VMs of its own
    (`simulate()`); nothing is kept warm."""
    jobs: list[JobRun] = []
    total = 0.0
    vms = 0
    for upload in uploads:
        job_plan = plan(upload, replace(speed, warm_workers=0))
        sim = simulate(job_plan, job_throughput(speed, job_plan.gpu, job_plan.items))
        stitched = max((t for t, what in sim.timeline if "stitched" in what), default=0.0)
        jobs.append(
            JobRun(
                at=upload.at,
                done_at=upload.at + stitched,
                vm_seconds=sim.vm_seconds,
                floor_seconds=sim.floor_seconds,
                workers=sim.workers,
                free=0,
                launched=sim.vms_started,
                chunks=sim.chunks,
            )
        )
        total += sim.vm_seconds
        vms += sim.vms_started
    return PoolRun(jobs, total, 0.0, vms, peak_live=0)


@dataclass
class _Job:
    key: str  # the job id pick_job compares (arrival order)
    run: JobRun
    plan: Plan
    speed: Throughput
    claims: list[SimClaim]
    unfinished: dict[int, int]  # chunks not yet ended, per item
    wanted: int
    workers: int = 0  # workers holding one of its chunks now
    stitched: list[float] = field(default_factory=list)  # its items' stitches' ends

    def claimable(self, now: float) -> int:
        return sum(1 for c in self.claims if claimable(c, now))


@dataclass
class _Worker:
    name: str
    started: float  # its VM's start
    launched_for: _Job | None  # None: up before the first upload
    ready: bool = False
    job: _Job | None = None  # the job it is on (or was last on)
    item: int | None = None  # the item it last worked on (the claim rule's preference)
    busy: bool = False  # in a chunk or a stitch
    holding: tuple[_Job, int] | None = None  # the job and item of the chunk it is in
    free_at: float = 0.0  # when it is ready, or ends its chunk (and the stitch after it)
    idle_since: float | None = None
    gone: bool = False


# Event ranks at equal times: an arrival first (idle workers then see the new job), then
# workers asking for work, then warm times running out.
_ARRIVE, _ASK, _EXPIRE = 0, 1, 2


def simulate_pool(
    uploads: Sequence[Upload],
    speed: Throughput,
    plan: Planner,
    *,
    warm_seconds: float,
    cap: int = POOL_CAP,
    plan_with_free: bool = True,
    free_rule: FreeRule = "stated",
    idle_at_start: int = 0,
    lease_seconds: float = CLAIM_LEASE_SECONDS,
) -> PoolRun:
    """The uploads run on one warm pool (see the module doc). `speed`: the deployment's
    figures (VM start-up, worker setup, chunk and stitch costs; `frames_per_second` 0: each
    job's chain speed from the step-cost table). `plan_with_free` False plans every job as if
    no worker were free (the planner's `warm_workers` left at 0), to show what that input buys.
    `free_rule`: which workers count as free for a new job (`FreeRule`). `idle_at_start`:
    workers already up and idle at the first upload (a pool warm from earlier work; their
    time before it is not counted)."""
    events: list[tuple[float, int, int, object]] = []
    order = 0
    workers: list[_Worker] = []
    jobs: list[_Job] = []
    runs: list[JobRun] = []
    timeline: list[tuple[float, str]] = []
    vm_seconds = idle = 0.0
    peak = 0

    def push(at: float, rank: int, what: object) -> None:
        nonlocal order
        order += 1
        heapq.heappush(events, (at, rank, order, what))

    def live() -> list[_Worker]:
        return [w for w in workers if not w.gone]

    def free_for_new_job(now: float) -> int:
        # What the jobs already waiting (with claimable chunks) still want.
        wants = sum(
            max(0, min(j.wanted - j.workers, j.claimable(now))) for j in jobs if j.claimable(now)
        )
        idle_now = [w for w in live() if w.ready and not w.busy]
        finishing = [w for w in live() if w.busy and w.job is not None and not w.job.claimable(now)]
        starting = [w for w in live() if not w.ready]
        if free_rule == "stated":  # the pool's own rule
            return free_workers(len(idle_now), len(finishing), len(starting), wants)
        # "soon": a busy or starting worker counts only if it is free before a VM launched
        # now would be ready, and the waiting jobs get those first.
        soon = [w for w in finishing + starting if w.free_at <= now + speed.start_seconds]
        return len(idle_now) + max(0, len(soon) - wants)

    def end_vm(worker: _Worker, now: float) -> None:
        nonlocal vm_seconds
        worker.gone = True
        vm_seconds += now - worker.started

    def arrive(upload: Upload, now: float) -> None:
        nonlocal peak
        free = free_for_new_job(now)
        job_plan = plan(upload, replace(speed, warm_workers=free if plan_with_free else 0))
        job_speed = job_throughput(speed, job_plan.gpu, job_plan.items)
        claims = [SimClaim(i.index, c.index) for i in job_plan.items for c in i.chunks]
        frames = sum(c.end_frame - c.start_frame for i in job_plan.items for c in i.chunks)
        run = JobRun(
            at=now,
            done_at=math.inf,
            vm_seconds=0.0,
            floor_seconds=frames / job_speed.frames_per_second,
            workers=job_plan.parallelism,
            free=free,
            launched=0,
            chunks=len(claims),
        )
        job = _Job(
            key=f"job{len(jobs):05d}",
            run=run,
            plan=job_plan,
            speed=job_speed,
            claims=claims,
            unfinished={i.index: len(i.chunks) for i in job_plan.items},
            wanted=job_plan.parallelism,
        )
        jobs.append(job)
        runs.append(run)
        run.launched = shortfall(job.wanted, free, len(live()), cap)
        for _ in range(run.launched):
            worker = _Worker(f"w{len(workers)}", now, job, free_at=now + speed.start_seconds)
            workers.append(worker)
            push(now + speed.start_seconds, _ASK, (worker, False))
        peak = max(peak, len(live()))
        timeline.append((now, f"{job.key} arrives: {free} free, wants {job.wanted}, "
                              f"launches {run.launched}"))  # fmt: skip
        for worker in live():  # idle workers see the new job at once
            if worker.ready and not worker.busy:
                push(now, _ASK, (worker, True))

    def ask(worker: _Worker, now: float, wake: bool) -> None:
        nonlocal idle
        if worker.gone or (wake and worker.idle_since is None):
            return  # a stale wake-up: another job's arrival woke it and it took work then
        if not worker.ready:  # start-up and setup: billed to the job it was launched for
            worker.ready = True
            assert worker.launched_for is not None  # workers up at the start are ready
            worker.launched_for.run.vm_seconds += now - worker.started
        if worker.holding is not None:  # its chunk has ended
            job, item_index = worker.holding
            worker.holding = None
            job.workers -= 1
            job.unfinished[item_index] -= 1
            if job.unfinished[item_index] == 0:  # it completed the item: it stitches it
                item = job.plan.items[item_index]
                end = now + speed.stitch_seconds
                end += item.info.duration * speed.stitch_seconds_per_video_second
                job.run.vm_seconds += end - now
                job.stitched.append(end)
                if not any(job.unfinished.values()):
                    job.run.done_at = max(job.stitched)
                timeline.append((end, f"{worker.name} stitched {job.key} item {item_index}"))
                push(end, _ASK, (worker, False))
                return
        worker.busy = False
        loads = [JobLoad(j.key, j.run.at, j.claimable(now), j.workers) for j in jobs]
        current = worker.job.key if worker.job is not None else None
        chosen = pick_job(loads, current=current)
        if chosen is None:
            if worker.idle_since is None:
                worker.idle_since = now
                if warm_seconds > 0:
                    push(now + warm_seconds, _EXPIRE, (worker, now))
                else:
                    worker.idle_since = None
                    end_vm(worker, now)
            return
        job = next(j for j in jobs if j.key == chosen)
        if worker.idle_since is not None:  # warm time with nothing to do: the deployment's
            idle += now - worker.idle_since
            worker.idle_since = None
        prefer = worker.item if worker.job is job else None
        pick = next_claim(job.claims, now, prefer_item=prefer)
        assert pick is not None  # pick_job named a job with a claimable chunk
        chunk = job.plan.items[pick.item].chunks[pick.chunk]
        frames = (chunk.end_frame - chunk.start_frame) + chunk.preroll + chunk.postroll
        end = now + speed.chunk_overhead_seconds + frames / job.speed.frames_per_second
        pick.owner, pick.expires_at, pick.done = worker.name, end + lease_seconds, True
        job.run.vm_seconds += end - now
        job.workers += 1
        worker.job, worker.item, worker.busy = job, pick.item, True
        worker.holding = (job, pick.item)
        worker.free_at = end
        if job.unfinished[pick.item] == 1:  # it will complete the item, then stitch it
            worker.free_at += speed.stitch_seconds + (
                job.plan.items[pick.item].info.duration * speed.stitch_seconds_per_video_second
            )
        push(end, _ASK, (worker, False))

    def expire(worker: _Worker, since: float, now: float) -> None:
        nonlocal idle
        if worker.gone or worker.idle_since != since:
            return  # it took work after going idle then
        idle += now - since
        worker.idle_since = None
        end_vm(worker, now)

    start = min((u.at for u in uploads), default=0.0)
    for _ in range(idle_at_start):
        worker = _Worker(f"w{len(workers)}", start, None, ready=True, idle_since=start)
        workers.append(worker)
        push(start + warm_seconds, _EXPIRE, (worker, start))
    for upload in sorted(uploads, key=lambda u: u.at):
        push(upload.at, _ARRIVE, upload)
    while events:
        now, rank, _, what = heapq.heappop(events)
        if rank == _ARRIVE:
            arrive(what, now)  # type: ignore[arg-type]
        elif rank == _ASK:
            worker, wake = what  # type: ignore[misc]
            ask(worker, now, wake)
        else:
            worker, since = what  # type: ignore[misc]
            expire(worker, since, now)
    return PoolRun(runs, vm_seconds, idle, len(workers) - idle_at_start, peak, timeline)
