"""State changes of a job: the status store record and its `.status.json` mirror together."""

from __future__ import annotations

import json
import logging
import posixpath
import time

from core.domain import JobError
from core.logs import event
from core.status.base import StatusStore
from core.status.costs import vm_time
from core.status.model import TERMINAL_STATES, JobRecord, JobState
from core.storage.base import ObjectStore

log = logging.getLogger("dropbatch.status")

ROLE_KEY = "dropbatch-role"  # object metadata on everything we write: it never triggers work
JOB_KEY = "dropbatch-job"


def status_file_name(manifest: str) -> str:
    stem = posixpath.splitext(manifest)[0]
    return f"{stem}.status.json"


def publish(store: ObjectStore, status: StatusStore, job_id: str) -> JobRecord | None:
    """Mirror the record into `<manifest-stem>.status.json`, newest revision last."""
    for _ in range(5):
        record = status.get(job_id)
        if record is None:
            return None
        # VM-seconds only once the job has ended: they are a read of every claim, too much
        # for each of the job's state changes and stitched items, and final only then.
        vm_seconds = (
            vm_time(status.claims(job_id)).seconds if record.state in TERMINAL_STATES else None
        )
        summary = record.summary(status.count_done(job_id), vm_seconds)
        body = json.dumps(summary, indent=2, sort_keys=True) + "\n"
        store.write_bytes(
            record.bucket,
            status_file_name(record.manifest),
            body.encode(),
            content_type="application/json",
            metadata={ROLE_KEY: "status", JOB_KEY: job_id},
        )
        again = status.get(job_id)
        # A concurrent writer may have published an older revision after ours: retry.
        if again is None or again.revision == record.revision:
            return record
    return record


def transition(
    store: ObjectStore,
    status: StatusStore,
    job_id: str,
    to: JobState,
    *,
    allowed_from: frozenset[JobState] | None = None,
    error: JobError | None = None,
    **fields: object,
) -> bool:
    """Move the job to `to` if its state allows; record and mirror it. True if it moved."""

    def mutate(record: JobRecord) -> bool:
        if record.state in TERMINAL_STATES and to != record.state:
            return False
        if allowed_from is not None and record.state not in allowed_from:
            return False
        record.set_state(to, time.time())
        if error is not None:
            record.error = error
        for key, value in fields.items():
            setattr(record, key, value)
        return True

    _, moved = status.transact(job_id, mutate)
    if moved:
        event(
            log,
            f"job {to.value.lower()}",
            job_id=job_id,
            state=to.value,
            error=error.model_dump(exclude_none=True) if error else None,
        )
        publish(store, status, job_id)
    return moved


def fail(
    store: ObjectStore, status: StatusStore, job_id: str, code: str, message: str,
    uri: str | None = None,
) -> bool:  # fmt: skip
    """Move the job to FAILED with the error `code`, `message` (at `uri`) if its state allows;
    True if it moved."""
    error = JobError(code=code, message=message, uri=uri)
    return transition(store, status, job_id, JobState.FAILED, error=error)
