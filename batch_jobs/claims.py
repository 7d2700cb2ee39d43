"""Chunk claims: how a worker (one Batch task) picks the next chunk to process, and how it
records it done.

Each planned chunk has a claim (`ChunkClaim`: owner, expiry, holder, done) on a small document
of its own in the status store (`StatusStore.transact_claim`). The claims are also the job's
done-set: a finished chunk sets `done` on its own claim, never on the job document, and the
job's progress (`dropbatch status`, the status file) is a count of done claims. So with a crowd
of workers every document still takes few writes: a claim document is written once to claim,
once every third of the lease while its chunk runs, and once when done
(docs/decisions/0019-one-claim-document-per-chunk.md, 0105-done-set-on-the-claims.md).

How a worker finds its chunks (`ChunkPicker`): it starts at its own place in the job, task
index × chunks / task count (so a hundred starting workers claim a hundred different chunks,
none of them reading anything first), and walks on from there. When its walk meets a chunk
another worker has, it jumps into the middle of a long run of free chunks (splitting the
run with the worker walking it), from what it knows; only a second lost race in a row, or
running out of free chunks, makes it read the claims again — the open ones only, once it
has seen every chunk's claim. With none free but some held by others it waits for their
leases (a holder stopped or gone silent loses its chunk when its lease runs out, one known
dead at once) and exits only once every chunk is done.

The simulation's decision is a pure function, so `bench/cloud.py` runs it without a store:

    next_claim(chunks, now, *, dead=None, prefer_item=None) -> ChunkClaim | None

- `chunks`: one `ChunkClaim` per planned chunk (`ChunkClaim(item=i, chunk=c)` for a chunk
  nobody claimed, `done=True` for a finished one, `owner`/`expires_at` for a held one);
- `now`: seconds (same clock as `expires_at`);
- `dead`: `claim -> reason` ('' while its holder may be alive); default: nobody is known dead,
  a held claim is free only once its lease has expired;
- `prefer_item`: the item the worker has set up already (its side inputs, its chain), taken
  first while it has claimable chunks.

It returns the chunk to claim (an unclaimed one, one whose lease expired or whose holder is
dead), in (item, chunk) order after the preferred item, or None when none is claimable.
"""

from __future__ import annotations

import itertools
import logging
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from batch_jobs.leases import Renewer, holder_gone
from core.domain import Plan
from core.logs import event
from core.status.base import StatusContention, StatusStore
from core.status.model import ChunkClaim, LeaseHolder

log = logging.getLogger("dropbatch.claims")
T = TypeVar("T")

# The default of `Settings.claim_lease_seconds`: a worker renews its claim every third of it
# while it processes the chunk; a worker stopped or gone silent loses its chunk after it.
CLAIM_LEASE_SECONDS = 60.0
# A worker waiting for chunks others hold looks again at least this often (a holder found
# dead meanwhile is taken over then), and at each lease's end.
CLAIM_POLL_SECONDS = 2.0
# How long a worker keeps trying to record a finished chunk done before it gives up (exit 1);
# its claim is renewed meanwhile, and the pause between tries grows up to the cap.
DONE_RETRY_SECONDS = 120.0
DONE_RETRY_PAUSE_CAP = 10.0

Dead = Callable[[ChunkClaim], str]


@dataclass(frozen=True)
class Finished:
    first: bool  # this worker marked the chunk done (False: another had finished it)
    item_complete: bool  # every chunk of its item is done now


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


def dead_for(claimant: LeaseHolder | None) -> Dead:
    """The liveness rules of the stitch lease, seen from this worker."""
    return lambda claim: holder_gone(claim.holder, claimant)


def _take(
    status: StatusStore,
    job_id: str,
    item: int,
    chunk: int,
    owner: str,
    holder: LeaseHolder | None,
    lease: float,
) -> tuple[ChunkClaim, bool]:
    """Take the chunk if it is still claimable (checked again inside the transaction): the
    stored claim after the transaction, and whether we got it. Losing every retry of a
    contended transaction counts as a lost race."""
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

    try:
        stored, won = status.transact_claim(job_id, item, chunk, mutate)
    except StatusContention as exc:
        event(
            log, "chunk claim contended", logging.WARNING, item=item, chunk=chunk, reason=str(exc)
        )
        return ChunkClaim(item=item, chunk=chunk, owner="?", expires_at=time.time() + lease), False
    if won and why not in ("unclaimed", ""):
        event(log, "chunk taken over", job_id=job_id, item=item, chunk=chunk, reason=why)
    return stored, won


def claim_chunk(
    status: StatusStore,
    job_id: str,
    item: int,
    chunk: int,
    owner: str,
    holder: LeaseHolder | None,
    lease: float = CLAIM_LEASE_SECONDS,
) -> ChunkClaim | None:
    """Take the chunk if it is still claimable; the granted claim, or None if another worker
    got it first (or it is done)."""
    granted, won = _take(status, job_id, item, chunk, owner, holder, lease)
    return granted if won else None


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


def finish_claim(
    status: StatusStore, job_id: str, item: int, chunk: int, seconds: float = 0.0
) -> bool:
    """Mark the chunk done: its entry in the job's done-set, with the worker `seconds` it took
    (the job's VM-seconds are their sum). True if this call marked it, False if it was done
    already (a worker that lost the chunk to a takeover and finished it anyway, second): a
    set, so the second finisher changes nothing."""

    def mutate(claim: ChunkClaim) -> bool:
        first = not claim.done
        claim.done = True
        if first:
            claim.seconds = round(seconds, 3)
        return first

    _, first = status.transact_claim(job_id, item, chunk, mutate)
    return first


def persist(what: str, write: Callable[[], T], give_up_after: float = DONE_RETRY_SECONDS) -> T:
    """Run a bookkeeping write until it lands: retried with a growing, random pause (a crowd
    of workers hitting a busy store spreads out), for up to `give_up_after` seconds; then its
    last error. The chunk's work is done and stored by then: a failed write must not throw
    it away (and if it finally does fail, the next claimant finds the part, `part_done`)."""
    deadline = time.monotonic() + give_up_after
    for tries in itertools.count():
        try:
            return write()
        except Exception as exc:  # any store error: contention, a dropped connection, a 503
            pause = random.uniform(0.5, 1.0) * min(DONE_RETRY_PAUSE_CAP, 0.1 * 2**tries)
            if time.monotonic() + pause > deadline:
                raise
            event(log, f"{what} failed, retrying", logging.WARNING, reason=str(exc), tries=tries)
            time.sleep(pause)
    raise AssertionError("unreachable")


def record_done(
    status: StatusStore, job_id: str, plan: Plan, item: int, chunk: int, seconds: float = 0.0
) -> Finished:
    """Mark the chunk done (retried until it lands, `persist`), then count the item's done
    chunks: whether this worker was the first to finish the chunk and whether the item is now
    complete. Of two workers finishing an item's last chunks at once, the later count sees
    both (each counts after its own mark), so one of them, or both, stitches it; the stitch
    lease lets one do it."""
    first = persist("chunk done mark", lambda: finish_claim(status, job_id, item, chunk, seconds))
    done = persist("chunk done count", lambda: status.count_done(job_id, item))
    return Finished(first=first, item_complete=done >= len(plan.items[item].chunks))


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


def fail_claim(status: StatusStore, job_id: str, claim: ChunkClaim, reason: str) -> int:
    """Give up our claim as `release_claim` does, counting the failure on the chunk's own
    claim (the warm pool fails a job on these counts, whichever worker ran the chunk); the
    chunk's failures so far."""

    def mutate(stored: ChunkClaim) -> int:
        if stored.owner == claim.owner and not stored.done:
            stored.expires_at = 0.0
            stored.failures += 1
            stored.last_failure = reason[:1000]
        return stored.failures

    _, failures = status.transact_claim(job_id, claim.item, claim.chunk, mutate)
    return failures


def start_position(task_index: int, task_count: int, chunks: int) -> int:
    """Where a worker's walk starts in the job's chunks (item, chunk order): evenly spaced by
    task index, so the first claims of a crowd of workers starting together never collide."""
    if chunks == 0:
        return 0
    return (task_index * chunks // max(task_count, 1)) % chunks


class ChunkPicker:
    """One worker's way through a job's chunks (the module doc): `next()` claims the next
    chunk for it, or returns None once every chunk is done.

    It keeps what it knows of each chunk's claim (`view`: what its own transactions and its
    reads returned), starts with none (nothing is read to begin with: its first claim is one
    transaction), and reads the claims again only when its view runs out."""

    def __init__(
        self,
        status: StatusStore,
        job_id: str,
        plan: Plan,
        owner: str,
        holder: LeaseHolder | None,
        *,
        task_index: int,
        task_count: int,
        lease: float = CLAIM_LEASE_SECONDS,
        poll: float = CLAIM_POLL_SECONDS,
    ) -> None:
        self.status, self.job_id, self.owner, self.holder = status, job_id, owner, holder
        self.lease, self.poll = lease, poll
        self.order = [(item.index, chunk.index) for item in plan.items for chunk in item.chunks]
        self.view: dict[tuple[int, int], ChunkClaim] = {}
        self.cursor: int | None = start_position(task_index, task_count, len(self.order))
        self.losses = 0  # races lost in a row
        self.rng = random.Random(owner)
        self.reads = {"all": 0, "pending": 0}  # claim reads so far, for the bench and tests
        self._dead = dead_for(holder)
        self._waiting = False

    def next(self, wait: bool = True) -> ChunkClaim | None:
        """`wait` False: None at once when every chunk left is held by another worker (a
        warm-pool worker has other jobs to look at, batch_jobs/pool.py)."""
        fresh = False  # the view was read since the last lost race
        while self.order:
            now = time.time()
            index = self._walk(now)
            if index is None and (fresh or self.losses < 2):
                index = self._steal(now)
            if index is None:
                if not fresh:
                    self._refresh()
                    fresh, self.losses = True, 0
                    continue
                if self._all_done() or not wait:
                    return None
                self._wait(now)  # every chunk left is held by another worker
                fresh = False
                continue
            claim, won = _take(
                self.status, self.job_id, *self.order[index], self.owner, self.holder, self.lease
            )
            self.view[self.order[index]] = claim
            if won:
                self.cursor, self.losses = (index + 1) % len(self.order), 0
                self._waiting = False
                return claim
            self.cursor, fresh = None, False
            self.losses += 1
        return None

    def _free(self, index: int, now: float) -> bool:
        claim = self.view.get(self.order[index])
        return claim is None or bool(claimable(claim, now, self._dead))

    def _walk(self, now: float) -> int | None:
        """The next chunk of this worker's walk, if it is free as far as we know."""
        if self.cursor is None or not self._free(self.cursor, now):
            self.cursor = None
            return None
        return self.cursor

    def _steal(self, now: float) -> int | None:
        """The middle of a run of free chunks (as far as we know), a long run more likely than
        a short one: the worker walking that run keeps its first half. None if none is free."""
        count = len(self.order)
        free = [self._free(i, now) for i in range(count)]
        if all(free):
            return self.rng.randrange(count)
        runs: list[tuple[int, int]] = []  # (first index, length), around the ring
        start = free.index(False)
        length = 0
        for step in range(1, count + 1):
            i = (start + step) % count
            if free[i]:
                length += 1
            elif length:
                runs.append(((i - length) % count, length))
                length = 0
        if not runs:
            return None
        first, length = self.rng.choices(runs, weights=[n for _, n in runs])[0]
        return (first + length // 2) % count

    def _refresh(self) -> None:
        """Read the claims again: every one while some chunk's claim was never seen (it may
        not exist yet), else only the open ones (a claim once seen and now missing from them
        is done: claims are never removed and `done` is never unset)."""
        if len(self.view) < len(self.order):
            self.reads["all"] += 1
            for claim in self.status.claims(self.job_id):
                self.view[(claim.item, claim.chunk)] = claim
            return
        self.reads["pending"] += 1
        pending = {(c.item, c.chunk): c for c in self.status.claims(self.job_id, pending=True)}
        for key, claim in self.view.items():
            if key in pending:
                self.view[key] = pending[key]
            elif not claim.done:
                self.view[key] = claim.model_copy(update={"done": True})

    def _all_done(self) -> bool:
        return len(self.view) == len(self.order) and all(c.done for c in self.view.values())

    def _wait(self, now: float) -> None:
        """Until the first lease of the chunks others hold runs out (or `poll`, a holder
        may be found dead before), plus a little: the waiting workers do not all look at the
        same instant."""
        ends = [c.expires_at for c in self.view.values() if not c.done and c.owner]
        until = min(ends, default=now + self.poll) - now
        pause = min(max(until, 0.0), self.poll) + self.rng.uniform(0.05, 0.25)
        if not self._waiting:  # once per stretch of waiting, not once per look
            event(log, "waiting for chunks others hold", seconds=round(pause, 2))
        self._waiting = True
        time.sleep(pause)
