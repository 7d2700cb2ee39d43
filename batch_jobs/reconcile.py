"""Fold engine job-state notifications (Cloud Batch via Pub/Sub, or the local executor) into
the status record, so a job whose tasks all failed never stays RUNNING forever."""

from __future__ import annotations

from dataclasses import dataclass

from dropbatch.jobstatus import transition
from dropbatch.status.base import StatusStore
from dropbatch.status.model import JobError, JobState
from dropbatch.storage.base import ObjectStore


@dataclass(frozen=True)
class BatchNotification:
    """What a Cloud Batch JOB_STATE_CHANGED notification carries (attributes of the message)."""

    job_name: str  # projects/…/locations/…/jobs/<job_id>, or local/<job_id>
    new_state: str  # QUEUED, SCHEDULED, RUNNING, SUCCEEDED, FAILED, DELETION_IN_PROGRESS, …
    reason: str = ""

    @property
    def job_id(self) -> str:
        return self.job_name.rsplit("/", 1)[-1]


def apply_notification(store: ObjectStore, status: StatusStore, note: BatchNotification) -> None:
    record = status.get(note.job_id)
    if record is None:
        return
    state = note.new_state.upper()
    if state in ("SCHEDULED", "RUNNING"):
        transition(
            store, status, note.job_id, JobState.RUNNING, allowed_from=frozenset({JobState.QUEUED})
        )
    elif state == "FAILED":
        transition(
            store,
            status,
            note.job_id,
            JobState.FAILED,
            error=JobError(code="TASKS_FAILED", message=note.reason or "the batch job failed"),
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
        # Every task exited 0, so the last one stitched; if the record disagrees, say so.
        transition(
            store,
            status,
            note.job_id,
            JobState.FAILED,
            error=JobError(
                code="STITCH_MISSING",
                message="all tasks succeeded but the outputs were never stitched",
            ),
        )
