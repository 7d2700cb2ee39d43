"""The warm pool's decisions, as pure functions: which job a free worker takes next, and how
much capacity a new job needs. The worker (batch_jobs/pool.py), the trigger
(batch_jobs/pool_capacity.py) and the simulation (bench/cloud.py) all decide with these; the
module is light (no media or model imports), so the trigger's cold start stays short.

Rules (docs/decisions/0119-warm-pool-of-workers.md):

- A worker that may take work looks at the jobs of its pool (same task image, same machine
  kind) that have a chunk it could claim now, and takes the one with the FEWEST workers on it;
  among equals it stays on the job it is on (no switch costs nothing), then the oldest job.
  It chooses again after every chunk, so a long job holding every worker gives each new job
  a fair share within one chunk's time: no job starves behind another.
- A new job wants `workers` (auto or the manifest's number). Workers already up and free
  for it — idle, or on a job with no chunk left to claim ("finishing"), or launched and still
  starting — count against that; capacity is launched only for the shortfall, and never past
  the deployment's cap on live workers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from batch_jobs.liveness import HEARTBEAT_TIMEOUT, owner_alive
from core.config import Settings
from core.status.model import JobRecord, PoolWorker

POOL_ENV = "DROPBATCH_POOL"  # the pool a capacity task serves (its image and machine kind)
ENGINE_ENV = "DROPBATCH_ENGINE_JOB"  # the capacity job (or local launch) it runs in
# A pool worker takes no new chunk after this long up; Batch's max_run_duration for a capacity
# task is this plus its first job's own bound.
POOL_WORKER_SECONDS = 12 * 3600
BUSY_STATES = frozenset({"busy", "finishing"})
LIVE_STATES = BUSY_STATES | {"idle"}


LOCAL_POOL = "local|"  # how the key of a pool with no task image (this machine's) begins


def pool_key(image: str, gpu: str, spot: bool) -> str:
    """Workers of one pool can run each other's jobs: the same task image, the same machine
    kind (GPU, Spot or standard). Locally: this machine's packages."""
    return f"{image or LOCAL_POOL[:-1]}|{gpu}|{'spot' if spot else 'standard'}"


def record_pool(settings: Settings, record: JobRecord) -> str:
    assert record.plan is not None
    return pool_key(settings.image, record.plan.gpu, record.plan.spot)


def worker_alive(worker: PoolWorker, now: float, starting_grace: float) -> bool:
    """Up (a heartbeat within HEARTBEAT_TIMEOUT, and where it runs on this machine, its process
    there) or launched and still within its start-up."""
    if worker.state == "starting":
        return now - worker.launched_at < starting_grace
    if worker.process is not None and owner_alive(worker.process) is False:
        return False  # on this machine, and its process is gone (a killed serve, say)
    return worker.state in LIVE_STATES and now - worker.updated_at < HEARTBEAT_TIMEOUT


def starting_grace(settings: Settings) -> float:
    """How long a launched worker counts as coming before its first heartbeat: three of its
    VM's start-ups (Batch's provisioning varies) and a minute; locally a minute."""
    if settings.launcher == "local":
        return 60.0
    from batch_jobs.worker_count import batch_throughput

    return 3 * batch_throughput(settings).start_seconds + 60.0


@dataclass(frozen=True)
class JobLoad:
    """A job as a free worker sees it."""

    job_id: str
    created_at: float
    claimable: int  # chunks a worker could claim now (unclaimed, lease run out, holder dead)
    workers: int  # workers on it now (holding one of its chunks)


def pick_job(loads: Sequence[JobLoad], current: str | None = None) -> str | None:
    """The job a free worker takes next, or None when no job has a chunk to claim."""
    open_jobs = [load for load in loads if load.claimable > 0]
    if not open_jobs:
        return None
    best = min(
        open_jobs,
        key=lambda load: (load.workers, load.job_id != current, load.created_at, load.job_id),
    )
    return best.job_id


def free_workers(idle: int, finishing: int, starting: int, waiting: int) -> int:
    """Workers a new job may count on: those idle, those on their job's last chunks, and those
    launched and still starting, less what the jobs already waiting for workers want (they
    were counted first: one free worker is not counted for every upload of a burst)."""
    return max(0, idle + finishing + starting - waiting)


def shortfall(wanted: int, available: int, live: int, cap: int) -> int:
    """Workers to launch for a new job: what it wants beyond the free workers (`available`),
    within what the cap leaves beside the `live` ones (starting ones included)."""
    return max(0, min(wanted - available, cap - live))
