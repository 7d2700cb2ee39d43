"""Capacity, not jobs: what the trigger launches for a job when the deployment keeps a warm
pool (`warm_minutes` > 0 and a launcher that pools: Cloud Batch, `dropbatch serve`).

The job is recorded QUEUED with its pool first (so a free worker finds it from then on); then
the pool's workers are counted from their documents (batch_jobs/pool.py): live ones that are
idle or finishing their job's last chunks, and launched ones still starting, less what the
jobs queued before it and not started yet wait for, are free for it. Capacity is launched only for
the shortfall (batch_jobs/pool_rules.shortfall), within `pool_max_workers`; each launched
worker gets a `starting` document at once, so the next upload of a burst counts it.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from batch_jobs.launcher import Capacity, Launcher
from batch_jobs.pool_rules import (
    free_workers,
    record_pool,
    shortfall,
    starting_grace,
    worker_alive,
)
from core.config import Settings
from core.logs import event
from core.status.base import StatusStore
from core.status.model import ENGINE_STATES, ChunkClaim, JobRecord, JobState, PoolWorker

log = logging.getLogger("dropbatch.pool")


def pooled(launcher: Launcher, settings: Settings) -> bool:
    """Does this deployment run jobs on a warm pool?"""
    return settings.warm_minutes > 0 and bool(getattr(launcher, "pools", False))


@dataclass(frozen=True)
class PoolCount:
    live: int  # up, or launched and still starting, in every pool (the cap is the deployment's)
    free: int  # of the job's own pool, what a new job may count on
    own: int  # alive in the job's own pool


def count_pool(status: StatusStore, pool: str, job_id: str, starting_grace: float) -> PoolCount:
    """The pool's workers as the trigger counts them for `job_id` (the module doc); launched
    ones count while within `starting_grace` of their launch."""
    now = time.time()
    grace = starting_grace
    everyone = [w for w in status.pool_workers(present=True) if worker_alive(w, now, grace)]
    alive = [w for w in everyone if w.pool == pool]
    idle = sum(1 for w in alive if w.state == "idle")
    finishing = sum(1 for w in alive if w.state == "finishing")
    starting = sum(1 for w in alive if w.state == "starting")
    waiting = sum(
        r.plan.parallelism
        for r in status.by_state([JobState.QUEUED])
        if r.pool == pool and r.job_id != job_id and r.plan is not None
    )
    free = free_workers(idle, finishing, starting, waiting)
    return PoolCount(live=len(everyone), free=free, own=len(alive))


def pool_alive(status: StatusStore, pool: str, starting_grace: float) -> bool:
    """Is any worker of the pool up, or launched and within `starting_grace` of its launch?"""
    now = time.time()
    return any(
        worker_alive(w, now, starting_grace) for w in status.pool_workers(pool, present=True)
    )


def capacity_name(job_id: str, attempt: int = 0) -> str:
    """The engine job for capacity launched for `job_id`: the job's own id the first time
    (Batch's notifications then name the job), `-p<n>` after when the sweep relaunches."""
    return job_id if attempt == 0 else f"{job_id[:58]}-p{attempt}"


def launch_capacity(
    status: StatusStore, launcher: Launcher, settings: Settings, record: JobRecord, attempt: int = 0
) -> str | None:
    """Launch what `record`'s job lacks; the engine's name, or None when the pool covers it."""
    assert record.plan is not None
    pool = record_pool(settings, record)
    # Counted again after the planner's count (intake._throughput): only a count made once the
    # job is recorded QUEUED closes the race with a worker's last look before it exits.
    count = count_pool(status, pool, record.job_id, starting_grace(settings))
    wanted = record.plan.parallelism
    workers = shortfall(wanted, count.free, count.live, settings.pool_max_workers)
    event(
        log,
        "pool counted",
        job_id=record.job_id,
        wanted=wanted,
        free=count.free,
        live=count.live,
        cap=settings.pool_max_workers,
        launching=workers,
    )
    if workers <= 0:
        status.transact(record.job_id, lambda r: setattr(r, "pool_counted", True))
        return None
    capacity = Capacity(capacity_name(record.job_id, attempt), pool, workers)
    # Counted by the next trigger from now on: a burst of uploads does not launch for the same
    # free worker twice.
    for index in range(workers):
        status.put_worker(
            PoolWorker(
                worker_id=f"{capacity.name}-{index}",
                pool=pool,
                engine_job=capacity.name,
                job_id=record.job_id,
            )
        )
    try:
        name = launcher.launch_capacity(record, settings, capacity)
    except Exception:
        for index in range(workers):  # never coming: not counted any more
            status.put_worker(
                PoolWorker(
                    worker_id=f"{capacity.name}-{index}", pool=pool, engine_job=capacity.name,
                    state="gone",
                )
            )  # fmt: skip
        raise

    def note(r: JobRecord) -> None:
        r.pool_counted = True
        r.capacity_launched = r.capacity_launched or workers
        if name not in r.capacity_jobs:
            r.capacity_jobs.append(name)

    status.transact(record.job_id, note)
    return name


def sweep_pool(status: StatusStore, launcher: Launcher, settings: Settings) -> list[str]:
    """Open warm-pool jobs with none of their pool's workers alive get capacity again: a
    serve restarted after its workers died with it, capacity that failed or was preempted
    whole, workers that all exited. The ids of the jobs it launched for."""
    if not pooled(launcher, settings):
        return []
    grace = starting_grace(settings)
    alive: dict[str, bool] = {}
    launched = []
    for record in status.by_state(list(ENGINE_STATES)):
        if not record.pool or record.plan is None:
            continue
        if record.pool not in alive:
            alive[record.pool] = pool_alive(status, record.pool, grace)
        if alive[record.pool]:
            continue
        attempt = len(record.capacity_jobs)
        if launch_capacity(status, launcher, settings, record, attempt) is not None:
            event(log, "pool capacity relaunched", job_id=record.job_id, attempt=attempt)
            alive[record.pool] = True  # what it launched serves the pool's other jobs too
            launched.append(record.job_id)
    return launched


def release_workers(status: StatusStore, engine_job: str, worker_id: str | None = None) -> int:
    """A capacity job (or one local pool process, `worker_id`) that failed, was preempted or
    was stopped: the chunks its workers held are free at once, not when their leases run
    out, and its workers are not counted any more. Returns how many chunks were freed."""
    freed = 0
    for worker in status.pool_workers(present=True):
        if worker.engine_job != engine_job or worker.state == "gone":
            continue
        if worker_id is not None and worker.worker_id != worker_id:
            continue
        if worker.job_id and worker.item is not None and worker.chunk is not None:
            owner = worker.owner

            def mutate(claim: ChunkClaim, owner: str = owner) -> bool:
                if claim.owner != owner or claim.done or not owner:
                    return False
                claim.expires_at = 0.0
                return True

            _, released = status.transact_claim(worker.job_id, worker.item, worker.chunk, mutate)
            freed += int(released)
        worker.state, worker.item, worker.chunk = "gone", None, None
        status.put_worker(worker)
    if freed:
        event(log, "pool chunks released", engine_job=engine_job, chunks=freed)
    return freed
