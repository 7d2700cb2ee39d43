"""Fold engine job-state notifications (Cloud Batch via Pub/Sub, or the local executor) into
the status record, so a job whose tasks all failed never stays RUNNING forever."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from batch_jobs.capacity import capacity_error
from batch_jobs.pool_capacity import count_pool, release_workers
from core.domain import JobError
from core.jobstatus import fail, transition
from core.status.base import StatusStore
from core.status.model import TERMINAL_STATES, JobRecord, JobState
from core.storage.base import ObjectStore


@dataclass(frozen=True)
class BatchNotification:
    """What a Cloud Batch JOB_STATE_CHANGED notification carries (attributes of the message)."""

    job_name: str  # projects/…/locations/…/jobs/<job_id>, <job_id>, or local/<job_id>
    new_state: str  # QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, DELETION_IN_PROGRESS, …
    reason: str = ""
    job_uid: str = ""

    @classmethod
    def from_pubsub(cls, attributes: dict[str, str], text: str) -> BatchNotification | None:
        """A Batch Pub/Sub message (attributes JobUID, JobName, NewJobState, Type); None for
        task-level messages, whose progress the tasks report themselves."""
        if attributes.get("Type", "JOB_STATE_CHANGED") != "JOB_STATE_CHANGED":
            return None
        if not attributes.get("JobName") or not attributes.get("NewJobState"):
            return None
        return cls(
            job_name=attributes["JobName"],
            new_state=attributes["NewJobState"],
            reason=text.strip(),
            job_uid=attributes.get("JobUID", ""),
        )

    @property
    def job_id(self) -> str:
        return self.job_name.rsplit("/", 1)[-1]


EngineReason = Callable[[str], str]  # job name → why the engine says it ended


def ending_reason(
    status: StatusStore, note: BatchNotification, engine_reason: EngineReason | None
) -> str:
    """The engine's account (Batch: the job's status events via GetJob) and, when a task said
    why it failed, the first such task's own words."""
    reason = (engine_reason(note.job_name) if engine_reason else "") or note.reason
    failed = sorted(
        (p for p in status.progress(note.job_id) if p.state == "FAILED" and p.message),
        key=lambda p: p.task_index,
    )
    if failed and failed[0].message not in reason:
        first = failed[0]
        reason = f"{reason}; task {first.task_index} (chunk {first.chunk}): {first.message}"
    return reason.strip("; ")


def failure_code(status: StatusStore, job_id: str) -> tuple[str, str | None]:
    """The first failed task's own code and the object at fault (a misconfigured model says
    MODEL_INCOMPATIBLE, a deleted input INPUT_GONE with its URI), else the generic
    TASKS_FAILED."""
    for p in sorted(status.progress(job_id), key=lambda p: p.task_index):
        if p.state == "FAILED" and p.code:
            return p.code, p.uri or None
    return "TASKS_FAILED", None


def gave_up(record: JobRecord) -> bool:
    """Whether the sweep deleted the job's engine job for lack of capacity."""
    return record.engine_wait is not None and record.engine_wait.gave_up_after is not None


def apply_notification(
    store: ObjectStore,
    status: StatusStore,
    note: BatchNotification,
    engine_reason: EngineReason | None = None,
) -> None:
    state = note.new_state.upper()
    if state in ("FAILED", "CANCELLED", "DELETION_IN_PROGRESS"):
        # Warm-pool capacity gone (a failed or preempted VM, a deleted job): the chunks its
        # workers held are free at once. Nothing when it was a job's own Batch job.
        release_workers(status, note.job_id)
    record = status.get(note.job_id)
    if record is None or record.state in TERMINAL_STATES:
        return  # not ours, or settled: late and out-of-order notifications change nothing
    if record.pool:
        _capacity_state(store, status, note, record, engine_reason)
        return
    if state in ("FAILED", "CANCELLED", "DELETION_IN_PROGRESS"):
        note = BatchNotification(
            note.job_name, note.new_state, ending_reason(status, note, engine_reason), note.job_uid
        )
    if state in ("SCHEDULED", "RUNNING"):
        transition(
            store, status, note.job_id, JobState.RUNNING, allowed_from=frozenset({JobState.QUEUED})
        )
    elif state == "FAILED":
        code, uri = failure_code(status, note.job_id)
        transition(
            store,
            status,
            note.job_id,
            JobState.FAILED,
            error=JobError(code=code, message=note.reason or "the batch job failed", uri=uri),
        )
    elif state in ("CANCELLED", "DELETION_IN_PROGRESS") and gave_up(record):
        # We deleted it: it waited past queued_timeout_minutes (batch_jobs/capacity.py).
        assert record.engine_wait is not None
        transition(
            store, status, note.job_id, JobState.FAILED, error=capacity_error(record.engine_wait)
        )
    elif state in ("CANCELLED", "DELETION_IN_PROGRESS"):
        transition(
            store,
            status,
            note.job_id,
            JobState.CANCELLED,
            error=JobError(
                code="CANCELLED", message=note.reason or "the batch job was cancelled or deleted"
            ),
        )
    elif state == "SUCCEEDED":
        _batch_succeeded(store, status, record, note.job_id)


def _batch_succeeded(
    store: ObjectStore, status: StatusStore, record: JobRecord, job_id: str
) -> None:
    if record.plan and len(record.items_stitched) == len(record.plan.items):
        # Every item is stitched, but the stitcher died before it could say so (a resumed job
        # whose last stitch had finished): the job is done.
        transition(store, status, job_id, JobState.SUCCEEDED)
        return
    # Every task exited 0, so the last one stitched; if the record disagrees, say so.
    message = "all tasks succeeded but the outputs were never stitched"
    fail(store, status, job_id, "STITCH_MISSING", message)


def _capacity_state(
    store: ObjectStore,
    status: StatusStore,
    note: BatchNotification,
    record: JobRecord,
    engine_reason: EngineReason | None,
) -> None:
    """Capacity launched for a warm-pool job: its state is not the job's (the pool's workers
    run it, and it may end before or after the job). Only capacity that failed with none of
    the pool's workers left and nothing of the job done fails the job, with the engine's
    reason: nothing else is coming for it (an image that cannot be pulled, a GPU that
    cannot be had)."""
    if note.new_state.upper() != "FAILED" or status.count_done(record.job_id) > 0:
        return
    if count_pool(status, record.pool, record.job_id, starting_grace=0.0).own > 0:
        return
    reason = ending_reason(status, note, engine_reason)
    code, uri = failure_code(status, note.job_id)
    message = f"the pool capacity launched for it failed: {reason or 'no reason given'}"
    transition(
        store,
        status,
        note.job_id,
        JobState.FAILED,
        error=JobError(code=code, message=message, uri=uri),
    )
