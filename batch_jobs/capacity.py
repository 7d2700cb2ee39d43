"""Jobs the engine never starts: no GPU quota, no capacity in the allowed zones, an image that
cannot be pulled. Batch keeps such a job QUEUED (or SCHEDULED, creating VMs it cannot get)
without end and sends no notification; only asking it tells why. The sweep (the scheduled
function, or `dropbatch serve`'s timer) looks each unstarted job up, keeps the engine's latest
events in the record (`dropbatch status`: "waiting for capacity: …"), and past
`queued_timeout_minutes` deletes the engine's job and ends ours FAILED `NO_CAPACITY` with the
engine's reason.
"""

from __future__ import annotations

import logging
import time

from batch_jobs.launcher import Launcher
from core.config import Settings
from core.domain import JobError
from core.jobstatus import publish, transition
from core.logs import event
from core.status.base import StatusStore
from core.status.model import EngineWait, JobRecord, JobState
from core.storage.base import ObjectStore

log = logging.getLogger("dropbatch.capacity")

NO_CAPACITY = "NO_CAPACITY"
# Our RUNNING follows Batch's SCHEDULED (VMs asked for): a job is unstarted until one of its
# workers reports progress.
UNSTARTED_STATES = [JobState.QUEUED, JobState.RUNNING]


def queued_since(record: JobRecord) -> float:
    """When the job was handed to the engine: its latest QUEUED state change."""
    return next(
        (h.at for h in reversed(record.history) if h.state == JobState.QUEUED), record.created_at
    )


def capacity_error(wait: EngineWait) -> JobError:
    """Why a job that never started ended: how long it waited and the engine's last word."""
    minutes = (wait.gave_up_after or 0) / 60
    reason = wait.reason or f"no reason given (its state stayed {wait.state})"
    return JobError(
        code=NO_CAPACITY,
        message=f"the engine did not start the job within {minutes:.0f} min "
        f"(queued_timeout_minutes), so it was deleted; the engine said: {reason}. Check GPU "
        "quota (GPUS_ALL_REGIONS, the L4 quota of the region), the allowed zones and the "
        "image, then upload the manifest again",
    )


def sweep_unstarted(
    store: ObjectStore,
    status: StatusStore,
    launcher: Launcher,
    settings: Settings,
    now: float | None = None,
) -> list[str]:
    """Look up every job handed to the engine that no worker has started; record what the
    engine says; end those waiting past `queued_timeout_minutes`. Returns the ended job ids."""
    ended = []
    for record in status.by_state(UNSTARTED_STATES):
        if record.batch_job is None:
            continue  # not handed to the engine yet (its launch is retried by redelivery)
        started = record.state == JobState.RUNNING and bool(status.progress(record.job_id))
        wait = None if started else launcher.look_up(record)
        if wait is None:  # started, or unknown to the engine: the notifications settle it
            if record.engine_wait is not None and record.engine_wait.gave_up_after is None:
                _forget(store, status, record)  # capacity came: the old reason would mislead
            continue
        waited = (now or time.time()) - queued_since(record)
        if waited >= settings.queued_timeout_minutes * 60:
            if _give_up(
                store, status, launcher, record, wait.model_copy(update={"gave_up_after": waited})
            ):
                ended.append(record.job_id)
        else:
            _note(store, status, record, wait)
    return ended


def _note(store: ObjectStore, status: StatusStore, record: JobRecord, wait: EngineWait) -> None:
    """Keep the engine's account in the record (written only when it changed)."""
    before = record.engine_wait
    if before is not None and (before.state, before.events) == (wait.state, wait.events):
        return

    def mutate(r: JobRecord) -> bool:
        if r.state not in UNSTARTED_STATES:
            return False
        r.engine_wait = wait
        return True

    _, noted = status.transact(record.job_id, mutate)
    if noted:
        event(
            log, "waiting for capacity", job_id=record.job_id, state=wait.state, reason=wait.reason
        )
        publish(store, status, record.job_id)


def _forget(store: ObjectStore, status: StatusStore, record: JobRecord) -> None:
    def mutate(r: JobRecord) -> bool:
        if r.engine_wait is None or r.engine_wait.gave_up_after is not None:
            return False
        r.engine_wait = None
        return True

    _, forgotten = status.transact(record.job_id, mutate)
    if forgotten:
        publish(store, status, record.job_id)


def _give_up(
    store: ObjectStore, status: StatusStore, launcher: Launcher, record: JobRecord, wait: EngineWait
) -> bool:
    """Mark, delete, end: the mark first, so the deletion's own notification (Batch sends
    DELETION_IN_PROGRESS) ends the job NO_CAPACITY rather than CANCELLED; a deletion that
    fails leaves the job as it was for the next sweep."""
    status.transact(record.job_id, lambda r: setattr(r, "engine_wait", wait))
    try:
        launcher.delete(record)
    except Exception as exc:  # the engine unreachable: the next sweep tries again
        event(log, "engine job not deleted", logging.WARNING, job_id=record.job_id, reason=str(exc))
        return False
    moved = transition(
        store,
        status,
        record.job_id,
        JobState.FAILED,
        allowed_from=frozenset(UNSTARTED_STATES),
        error=capacity_error(wait),
    )
    event(log, "gave up waiting for capacity", job_id=record.job_id, reason=wait.reason)
    return moved or (status.get(record.job_id) or record).state == JobState.FAILED
