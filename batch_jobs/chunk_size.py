"""`compute.chunk_seconds: auto`: how long a chunk is when the manifest does not say.

Workers pull chunks (batch_jobs/claims.py), so chunks are the unit of balance, not of
parallelism: a job of `P` workers is cut into at least `CHUNKS_PER_WORKER × P` chunks when the
video is long enough, so a slow or preempted VM holds up at most a small share of the job.
Three bounds keep chunks from getting too small or too large:

- pre/post-roll (the chain's context frames, decoded around every chunk and thrown away) stays
  at most `ROLL_SHARE` of the frames a chunk decodes: chunk ≥ roll × (1 − share) / share;
- a chunk is at least `MIN_CHUNK_SECONDS`, so its fixed cost in a worker (claim, seek and
  pre-roll decode, encoder start, part upload, two status writes) stays small beside it;
- a chunk is at most `MAX_CHUNK_SECONDS` (unless the roll bound asks for more), which bounds
  the work a preemption throws away.

An explicit `chunk_seconds` in the manifest always wins.
"""

from __future__ import annotations

import math

CHUNKS_PER_WORKER = 3
ROLL_SHARE = 0.05
MIN_CHUNK_SECONDS = 4.0
MAX_CHUNK_SECONDS = 120.0


def auto_chunk_seconds(
    job_seconds: float, fps: float, workers: int, before: int, after: int
) -> float:
    """Chunk length for one item: `job_seconds`, the output seconds of the whole job (every
    item; the workers share them); `fps`, this item's rate; `before`/`after`, its chain's
    context frames; `workers`, the job's worker count (batch_jobs/worker_count.py)."""
    roll_frames = before + after
    # roll / (chunk + roll) <= share  <=>  chunk >= roll * (1 - share) / share
    roll_floor = roll_frames * (1 - ROLL_SHARE) / ROLL_SHARE / fps
    floor = max(MIN_CHUNK_SECONDS, roll_floor)
    balanced = job_seconds / (max(1, workers) * CHUNKS_PER_WORKER)
    seconds = min(max(balanced, floor), max(MAX_CHUNK_SECONDS, floor))
    # A tenth of a second up: whole, readable numbers in the plan; never below 1 s (the
    # manifest's own lower bound for an explicit value).
    return max(1.0, math.ceil(seconds * 10) / 10)
