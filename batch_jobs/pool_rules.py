"""The warm pool's decisions, as pure functions: which job a free worker takes next, and how
much capacity a new job needs. The worker (batch_jobs/pool.py), the trigger
(batch_jobs/intake.py) and the simulation (bench/cloud.py) all decide with these.

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


def shortfall(wanted: int, available: int, live: int, cap: int) -> int:
    """Workers to launch for a new job: what it wants beyond the free workers (`available`),
    within what the cap leaves beside the `live` ones (starting ones included)."""
    return max(0, min(wanted - available, cap - live))
