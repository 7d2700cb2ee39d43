"""What the trigger does when evaluating a manifest raises: the job still ends, with a reason.

An exception is one of: a fault of storage or the network (retried by the caller, then
FAILED `STORAGE_UNAVAILABLE`), a limit of the status store (`RecordTooLarge`: INVALID), a
model store problem (INVALID with the store's code), or a bug of ours (FAILED
`TRIGGER_ERROR`, the traceback in the log). Whichever it is, the record and `.status.json`
say so, so a job never stays RECEIVED and a redelivered event finds it finished, not a crash
to repeat.
"""

from __future__ import annotations

import logging

from core.domain import JobError
from core.jobstatus import transition
from core.logs import event
from core.status.base import RecordTooLarge, StatusStore
from core.status.model import LAUNCHABLE_STATES, JobRecord, JobState
from core.storage.base import ObjectStore
from processors.models.store import ModelStoreError

log = logging.getLogger("dropbatch.intake")

EVALUATE_ATTEMPTS = 3  # tries of one manifest before a storage fault counts as lasting
RETRY_DELAY_SECONDS = 0.5  # doubled after each try: 0.5 s, 1 s
# Claimed states: the job's engine job may exist; containment never ends those.
CLAIMED_STATES = frozenset({JobState.QUEUED, JobState.RUNNING, JobState.STITCHING})


def _google_errors() -> tuple[type[BaseException], ...]:
    try:
        from google.api_core import exceptions as google_errors
    except ImportError:  # the local flow may run without the Google client libraries
        return ()
    return (google_errors.GoogleAPIError,)


def is_transient(exc: BaseException) -> bool:
    """A fault of storage or the network that may pass if we try again."""
    if isinstance(exc, OSError):  # EIO, ConnectionError, TimeoutError, requests' errors
        return True
    return isinstance(exc, _google_errors())


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


def outcome(exc: BaseException, manifest_uri: str) -> tuple[JobState, JobError]:
    """The state and error an exception raised while evaluating a manifest ends its job with."""
    if isinstance(exc, RecordTooLarge):
        return JobState.INVALID, JobError(
            code="JOB_TOO_LARGE", message=str(exc), field="inputs", uri=manifest_uri
        )
    if isinstance(exc, ModelStoreError):
        return JobState.INVALID, JobError(
            code=exc.code, message=str(exc), uri=getattr(exc, "store", None) or None
        )
    if is_transient(exc):
        return JobState.FAILED, JobError(
            code="STORAGE_UNAVAILABLE",
            message=f"storage kept failing while the manifest was checked ({_first_line(exc)}); "
            "upload the manifest again once storage works",
            uri=manifest_uri,
        )
    return JobState.FAILED, JobError(
        code="TRIGGER_ERROR",
        message=f"dropbatch failed while checking the manifest ({_first_line(exc)}); this is "
        "a bug, the trigger's log has the details; upload the manifest again to retry",
        uri=manifest_uri,
    )


def new_record(job_id: str, version: tuple[str, str, int], uri: str) -> JobRecord:
    """The first record of the job that the manifest version (bucket, name, generation) at
    `uri` starts: no state past RECEIVED yet, no history."""
    bucket, name, generation = version
    return JobRecord(
        job_id=job_id,
        bucket=bucket,
        manifest=name,
        manifest_generation=generation,
        manifest_uri=uri,
    )


def contain(
    store: ObjectStore,
    status: StatusStore,
    job_id: str,
    version: tuple[str, str, int],
    exc: Exception,
) -> None:
    """End the job for `exc`. Raises only when nothing can be recorded (the status store is
    failing too) or when the job is claimed and its launch must be retried by redelivery."""
    bucket, name, _ = version
    uri = store.uri(bucket, name)
    state, error = outcome(exc, uri)
    fields = {"job_id": job_id, "error": error.model_dump(exclude_none=True)}
    if error.code == "TRIGGER_ERROR":
        log.error("evaluation failed", exc_info=exc, extra={"fields": fields})
    else:
        event(log, "evaluation failed", logging.WARNING, **fields)
    try:
        if status.get(job_id) is None:
            status.create(new_record(job_id, version, uri))
        moved = transition(
            store,
            status,
            job_id,
            state,
            allowed_from=LAUNCHABLE_STATES,
            error=error,
            errors=[error],
        )
    except Exception as failure:
        # The record moved but its `.status.json` could not be written (storage is what
        # failed): the status store holds the reason. Anything else: nothing was recorded.
        record = status.get(job_id)
        if record is None or record.state != state:
            raise exc from failure
        event(log, "status file not written", logging.WARNING, job_id=job_id, reason=str(failure))
        return
    if not moved:
        record = status.get(job_id)
        if record is not None and record.state in CLAIMED_STATES and record.batch_job is None:
            raise exc  # claimed, launch failed: a redelivered event launches it again


def unreadable_manifest(exc: Exception, uri: str, field: str | None = None) -> JobError:
    """The manifest made the loader or the matcher raise something other than its own error:
    the document is what must change, so INVALID, with what the parser said."""
    return JobError(
        code="MANIFEST_UNREADABLE",
        message=f"the manifest could not be read ({_first_line(exc)})",
        field=field,
        uri=uri,
    )
