"""Chunk claims: how a worker (one Batch task) picks the next chunk to process.

Each planned chunk has a claim (`ChunkClaim`: owner, expiry, holder, done) on a small document
of its own in the status store (`StatusStore.transact_claim`). A worker reads every claim of the
job, asks `next_claim` which chunk to take, and takes it in a transaction on that chunk's
document alone; two workers racing for one chunk: one wins, the other asks again. While it
works, `ClaimKeeper` renews the lease; a worker that died (its process is gone on this host,
or its task is running a later attempt) loses its claim at once, one that went silent when
its lease runs out. Write rate: a claim document is written once to claim, once every
`CLAIM_LEASE_SECONDS / 3` while its chunk runs, and once when done
(docs/decisions/0019-one-claim-document-per-chunk.md).

The decision is a pure function, so a simulation can run it without a store:

    next_claim(chunks, now, *, dead=None, prefer_item=None) -> ChunkClaim | None

- `chunks`: one `ChunkClaim` per planned chunk (`claim_states` builds them from a plan and the
  stored claims; a simulation can build them directly: `ChunkClaim(item=i, chunk=c)` for a
  chunk nobody claimed, `done=True` for a finished one, `owner`/`expires_at` for a held one);
- `now`: seconds (same clock as `expires_at`);
- `dead`: `claim -> reason` ('' while its holder may be alive); default: nobody is known dead,
  a held claim is free only once its lease has expired;
- `prefer_item`: the item the worker has set up already (its side inputs, its chain), taken
  first while it has claimable chunks.

It returns the chunk to claim (an unclaimed one, one whose lease expired or whose holder is
dead), in (item, chunk) order after the preferred item, or None when every chunk is done or
held by a live worker: the worker's work is over.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable, Sequence

from batch_jobs.leases import Renewer, holder_gone
from dropbatch.domain import Plan
from dropbatch.logs import event
from dropbatch.status.base import StatusStore
from dropbatch.status.model import ChunkClaim, LeaseHolder

log = logging.getLogger("dropbatch.claims")

# A worker renews its claim every third of this while it processes the chunk; a worker gone
# silent on another host (no renewal) loses its chunk after this long.
CLAIM_LEASE_SECONDS = 60.0

Dead = Callable[[ChunkClaim], str]


def claimable(claim: ChunkClaim, now: float, dead: Dead | None = None) -> str:
    """Why the chunk may be claimed now ('' if it may not): never claimed, lease expired, or
    its holder is known dead."""
    if claim.done:
        return ""
    if not claim.owner:
        return "unclaimed"
    if claim.expires_at <= now:
        return "lease expired"
    return dead(claim) if dead is not None else ""


def next_claim(
    chunks: Sequence[ChunkClaim],
    now: float,
    *,
    dead: Dead | None = None,
    prefer_item: int | None = None,
) -> ChunkClaim | None:
    """The chunk a worker should claim next, or None when none is left (see the module doc)."""
    candidates = [c for c in chunks if claimable(c, now, dead)]
    if not candidates:
        return None
    return min(candidates, key=lambda c: (c.item != prefer_item, c.item, c.chunk))


def claim_states(
    plan: Plan, stored: Iterable[ChunkClaim], chunks_done: dict[str, list[int]]
) -> list[ChunkClaim]:
    """One claim per planned chunk: the stored one, or a fresh one for a chunk never claimed.
    The job record's done-set counts too (a worker may die between recording the chunk done
    there and on its claim)."""
    by_key = {(c.item, c.chunk): c for c in stored}
    states = []
    for item in plan.items:
        done = set(chunks_done.get(str(item.index), []))
        for chunk in item.chunks:
            claim = by_key.get((item.index, chunk.index)) or ChunkClaim(
                item=item.index, chunk=chunk.index
            )
            if chunk.index in done and not claim.done:
                claim = claim.model_copy(update={"done": True})
            states.append(claim)
    return states


def dead_for(claimant: LeaseHolder | None) -> Dead:
    """The liveness rules of the stitch lease, seen from this worker."""
    return lambda claim: holder_gone(claim.holder, claimant)


def claim_chunk(
    status: StatusStore,
    job_id: str,
    item: int,
    chunk: int,
    owner: str,
    holder: LeaseHolder | None,
    lease: float = CLAIM_LEASE_SECONDS,
) -> ChunkClaim | None:
    """Take the chunk if it is still claimable (checked again inside the transaction);
    the granted claim, or None if another worker got it first."""
    why = ""

    def mutate(claim: ChunkClaim) -> bool:
        nonlocal why
        now = time.time()
        why = claimable(claim, now, dead_for(holder))
        if not why:
            return False
        claim.owner, claim.expires_at, claim.holder = owner, now + lease, holder
        claim.grants += 1
        return True

    granted, won = status.transact_claim(job_id, item, chunk, mutate)
    if won and why not in ("unclaimed", ""):
        event(log, "chunk taken over", job_id=job_id, item=item, chunk=chunk, reason=why)
    return granted if won else None


def claim_next(
    status: StatusStore,
    job_id: str,
    plan: Plan,
    owner: str,
    holder: LeaseHolder | None,
    prefer_item: int | None = None,
    lease: float = CLAIM_LEASE_SECONDS,
) -> ChunkClaim | None:
    """Claim the next chunk for this worker; None when every chunk is done or held by a live
    worker. A lost race re-reads the claims and asks again."""
    while True:
        record = status.get(job_id)
        if record is None:
            return None
        states = claim_states(plan, status.claims(job_id), record.chunks_done)
        pick = next_claim(states, time.time(), dead=dead_for(holder), prefer_item=prefer_item)
        if pick is None:
            return None
        granted = claim_chunk(status, job_id, pick.item, pick.chunk, owner, holder, lease)
        if granted is not None:
            return granted


def renew_claim(
    status: StatusStore,
    job_id: str,
    item: int,
    chunk: int,
    owner: str,
    lease: float = CLAIM_LEASE_SECONDS,
) -> bool:
    """Extend our claim; False if it is no longer ours (it expired and another took it)."""

    def mutate(claim: ChunkClaim) -> bool:
        if claim.owner != owner or claim.done:
            return False
        claim.expires_at = time.time() + lease
        return True

    _, still_ours = status.transact_claim(job_id, item, chunk, mutate)
    return still_ours


def finish_claim(status: StatusStore, job_id: str, item: int, chunk: int) -> None:
    """Mark the chunk's claim done (after the job record's done-set has it)."""

    def mutate(claim: ChunkClaim) -> None:
        claim.done = True

    status.transact_claim(job_id, item, chunk, mutate)


class ClaimKeeper(Renewer):
    """Renews a chunk claim every third of its lease while the chunk is processed, so only a
    worker that died or went silent loses it."""

    def __init__(
        self,
        status: StatusStore,
        job_id: str,
        claim: ChunkClaim,
        lease: float = CLAIM_LEASE_SECONDS,
    ) -> None:
        super().__init__(
            lambda: renew_claim(status, job_id, claim.item, claim.chunk, claim.owner, lease),
            lease,
            "chunk-claim",
            "chunk claim renewal failed",
        )


def release_claim(status: StatusStore, job_id: str, claim: ChunkClaim) -> None:
    """Give up our claim (this attempt failed): the next worker takes the chunk at once,
    rather than when its lease runs out."""

    def mutate(stored: ChunkClaim) -> None:
        if stored.owner == claim.owner and not stored.done:
            stored.expires_at = 0.0

    status.transact_claim(job_id, claim.item, claim.chunk, mutate)
