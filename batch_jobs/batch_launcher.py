"""Submit the Job to Cloud Batch, and read back why a job ended.

Submission is idempotent: the job id derives from the manifest version and the request id from
the job id, so a retried or duplicated launch either creates the job or meets ALREADY_EXISTS,
which means an earlier, ambiguous attempt created it: we read that job back and carry on.
"""

from __future__ import annotations

import contextlib
import logging

import grpc
from google.api_core import exceptions, retry
from google.api_core.client_options import ClientOptions
from google.auth.credentials import Credentials
from google.cloud import batch_v1
from google.cloud.batch_v1.services.batch_service.transports import BatchServiceGrpcTransport

from batch_jobs.cloud_batch import build_job, job_name, job_parent, request_id_for
from batch_jobs.launcher import Capacity, LaunchError
from core.config import Settings
from core.logs import event
from core.status.model import EngineEvent, EngineWait, JobRecord

log = logging.getLogger("dropbatch.batch")

# Batch's states for a job none of whose tasks runs yet: waiting for quota (QUEUED), or for
# VMs it asked for and may not get (SCHEDULED).
UNSTARTED = frozenset({batch_v1.JobStatus.State.QUEUED, batch_v1.JobStatus.State.SCHEDULED})
EVENTS_KEPT = 5  # the latest status events a record keeps (the reason is the newest)

# Safe to retry because the request id makes CreateJob idempotent on Batch's side.
CREATE_RETRY = retry.Retry(
    predicate=retry.if_exception_type(exceptions.ServiceUnavailable, exceptions.DeadlineExceeded),
    initial=1.0,
    maximum=10.0,
    timeout=120.0,
)


def batch_client(
    settings: Settings, credentials: Credentials | None = None
) -> batch_v1.BatchServiceClient:
    """Cloud Batch over TLS with `credentials` (default: Application Default Credentials), at
    Google's endpoint or `batch_api_endpoint`; or a local stand-in at `batch_emulator_host`."""
    if settings.batch_emulator_host:
        if settings.batch_api_endpoint:
            raise LaunchError(
                "DROPBATCH_BATCH_EMULATOR_HOST and DROPBATCH_BATCH_API_ENDPOINT are both set: the"
                " emulator host is for local stand-ins only; unset it to reach a real endpoint"
            )
        # Plaintext and no credentials: only ever a stand-in on this machine or the test's.
        channel = grpc.insecure_channel(settings.batch_emulator_host)
        return batch_v1.BatchServiceClient(transport=BatchServiceGrpcTransport(channel=channel))
    options = ClientOptions(api_endpoint=settings.batch_api_endpoint or None)
    return batch_v1.BatchServiceClient(credentials=credentials, client_options=options)


def failure_reason(job: batch_v1.Job) -> str:
    """Why a job ended, from its status events (newest last) and its task counts."""
    events = [e.description for e in job.status.status_events if e.description]
    counts = {
        state: n for group in job.status.task_groups.values() for state, n in group.counts.items()
    }
    parts = []
    if counts:
        parts.append("tasks: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
    parts.extend(events[-1:])  # the event that ended the job
    return "; ".join(parts)


class BatchLauncher:
    def __init__(self, settings: Settings, client: batch_v1.BatchServiceClient | None = None):
        self.settings = settings
        self.client = client or batch_client(settings)

    pools = True  # it launches warm-pool capacity (batch_jobs/pool_capacity.py)

    def launch(self, record: JobRecord, settings: Settings) -> str:
        return self.submit(record.job_id, build_job(record, settings), settings)

    def launch_capacity(self, record: JobRecord, settings: Settings, capacity: Capacity) -> str:
        """Pool capacity launched for `record`'s job: a Batch job of its own id."""
        return self.submit(capacity.name, build_job(record, settings, capacity), settings)

    def submit(self, job_id: str, job: batch_v1.Job, settings: Settings) -> str:
        """Create `job` as `job_id` (idempotent, see the module doc); its full name."""
        request = batch_v1.CreateJobRequest(
            parent=job_parent(settings),
            job_id=job_id,
            job=job,
            request_id=request_id_for(job_id),
        )
        try:
            created = self.client.create_job(request=request, retry=CREATE_RETRY)
        except exceptions.AlreadyExists:
            created = self.client.get_job(name=job_name(settings, job_id))
            event(log, "batch job exists", job_id=job_id, batch_job=created.name)
        return created.name

    def failure_reason(self, name: str) -> str:
        full = name if name.startswith("projects/") else job_name(self.settings, name)
        try:
            return failure_reason(self.client.get_job(name=full))
        except exceptions.GoogleAPICallError as exc:
            # Deleted already, or unreachable: the notification's own text has to do.
            event(log, "batch job unreadable", logging.WARNING, batch_job=full, error=exc.message)
            return ""

    def look_up(self, record: JobRecord) -> EngineWait | None:
        assert record.batch_job is not None
        try:
            job = self.client.get_job(name=self._full(record.batch_job))
        except exceptions.NotFound:
            return None  # deleted: its notification settles the record
        if job.status.state not in UNSTARTED:
            return None
        return EngineWait(
            state=job.status.state.name,
            events=[
                EngineEvent(
                    type=e.type_,
                    description=e.description,
                    at=e.event_time.timestamp() if e.event_time else 0.0,
                )
                for e in list(job.status.status_events)[-EVENTS_KEPT:]
            ],
        )

    def delete(self, record: JobRecord) -> None:
        assert record.batch_job is not None
        request = batch_v1.DeleteJobRequest(
            name=self._full(record.batch_job),
            reason="dropbatch: not started within queued_timeout_minutes",
            request_id=request_id_for(f"delete-{record.job_id}"),
        )
        with contextlib.suppress(exceptions.NotFound):  # gone already
            self.client.delete_job(request=request)  # a long-running operation: not awaited

    def _full(self, name: str) -> str:
        return name if name.startswith("projects/") else job_name(self.settings, name)
