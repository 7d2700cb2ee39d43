"""The stitch lease: which task assembles an item, and when another may take over from it.

Kept apart from the stitch itself (no media code), so the local executor and the functions
that import it stay light. Rules: docs/decisions/0020-done-set-and-stitch-lease.md and
docs/decisions/0023-stitch-takeover-when-holder-known-dead.md.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from batch_jobs.liveness import owner_alive
from core.logs import event
from core.status.base import StatusStore
from core.status.model import JobRecord, LeaseHolder, StitchLease

log = logging.getLogger("dropbatch.stitch")


def holder_dead(current: StitchLease, claimant: LeaseHolder | None) -> str:
    """Why the stitch lease's holder is known dead before its lease runs out ('' if not)."""
    return holder_gone(current.holder, claimant)


def holder_gone(held: LeaseHolder | None, claimant: LeaseHolder | None) -> str:
    """Why a lease's holder (stitch lease or chunk claim) is known dead before its lease runs
    out ('' if it is not): a later attempt of the same task is running (Batch and the local
    executor run one attempt of a task at a time, and retry only one that ended), or its
    process is gone (this host)."""
    if held is None:
        return ""
    if (
        claimant is not None
        and claimant.task_index is not None
        and held.task_index == claimant.task_index
        and held.attempt is not None
        and claimant.attempt is not None
        and held.attempt < claimant.attempt
    ):
        return f"task {held.task_index} attempt {held.attempt} was retried"
    if held.process is not None and owner_alive(held.process) is False:
        return f"process {held.process.pid} on {held.process.host} is gone"
    return ""


def claim_stitch(
    status: StatusStore,
    job_id: str,
    item: int,
    owner: str,
    lease: float,
    holder: LeaseHolder | None = None,
) -> str:
    """'claimed', 'done' (already stitched) or 'held' (a live lease belongs to another).

    A lease whose holder is known dead (`holder_dead`) is taken over at once; any other only
    once it has run out."""
    taken_over = ""

    def mutate(record: JobRecord) -> str:
        nonlocal taken_over
        taken_over = ""
        if item in record.items_stitched:
            return "done"
        now = time.time()
        current = record.stitch_leases.get(str(item))
        if current and current.owner != owner and current.expires_at > now:
            taken_over = holder_dead(current, holder)
            if not taken_over:
                return "held"
        granted = StitchLease(owner=owner, expires_at=now + lease, holder=holder)
        record.stitch_leases[str(item)] = granted
        record.stitch_claims.append(granted)
        return "claimed"

    _, outcome = status.transact(job_id, mutate)
    if outcome == "claimed" and taken_over:
        event(log, "stitch taken over", job_id=job_id, item=item, reason=taken_over)
    return outcome


def release_task_leases(status: StatusStore, job_id: str, task_index: int, attempt: int) -> int:
    """The executor saw this attempt of the task end in failure: drop the stitch leases it held,
    so a waiting stitcher takes over now rather than when they run out. How many it held."""

    def mutate(record: JobRecord) -> int:
        dead = [
            key
            for key, lease in record.stitch_leases.items()
            if lease.holder is not None
            and (lease.holder.task_index, lease.holder.attempt) == (task_index, attempt)
        ]
        for key in dead:
            del record.stitch_leases[key]
        return len(dead)

    _, released = status.transact(job_id, mutate)
    return released


def renew_stitch(status: StatusStore, job_id: str, item: int, owner: str, lease: float) -> bool:
    """Extend our lease; False if it is no longer ours (it expired and another took over)."""

    def mutate(record: JobRecord) -> bool:
        current = record.stitch_leases.get(str(item))
        if current is None or current.owner != owner:
            return False
        current.expires_at = time.time() + lease
        return True

    _, still_ours = status.transact(job_id, mutate)
    return still_ours


class Renewer:
    """Calls `renew` every third of `lease` seconds in a background thread while the `with`
    block runs, until `renew` says the lease is no longer ours. A failed renewal is logged as
    `failure_event` and retried at the next tick (the lease outlives two missed ones)."""

    def __init__(
        self, renew: Callable[[], bool], lease: float, name: str, failure_event: str
    ) -> None:
        self._renew, self._lease, self._failure_event = renew, lease, failure_event
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self._lease / 3):
            try:
                if not self._renew():
                    return
            except Exception as exc:  # a missed renewal is not fatal; the next one may land
                event(log, self._failure_event, logging.WARNING, reason=str(exc))

    def __enter__(self) -> Renewer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


class LeaseKeeper(Renewer):
    """Renews a stitch lease every third of its length while the stitch runs, so a long
    stitch (a big upload) keeps it and only a stitcher that died loses it."""

    def __init__(
        self, status: StatusStore, job_id: str, item: int, owner: str, lease: float
    ) -> None:
        super().__init__(
            lambda: renew_stitch(status, job_id, item, owner, lease),
            lease,
            "stitch-lease",
            "stitch lease renewal failed",
        )


def release_stitch(status: StatusStore, job_id: str, item: int, owner: str) -> None:
    def mutate(record: JobRecord) -> None:
        lease = record.stitch_leases.get(str(item))
        if lease and lease.owner == owner:
            del record.stitch_leases[str(item)]

    status.transact(job_id, mutate)
