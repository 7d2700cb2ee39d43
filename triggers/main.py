"""Cloud Functions entry points. Thin: parse the event, call the package, log the outcome.

Deployed as gen2 functions (functions-framework, CloudEvents):
  on_inbox_object  ← Eventarc `google.cloud.storage.object.v1.finalized` on the inbox bucket
  on_batch_state   ← Pub/Sub messages of Cloud Batch job state changes
  on_sweep         ← Pub/Sub messages Cloud Scheduler publishes every few minutes
"""

from __future__ import annotations

import base64
import logging
from functools import cache

import functions_framework
from cloudevents.http import CloudEvent

from batch_jobs.capacity import sweep_unstarted
from batch_jobs.intake import Intake, StorageEvent, is_own_write
from batch_jobs.launchers import open_launcher
from batch_jobs.pool_capacity import sweep_pool
from batch_jobs.reconcile import BatchNotification, apply_notification
from core import logs
from core.config import Settings
from core.status import open_status
from core.storage import open_store

log = logging.getLogger("dropbatch.trigger")


@cache
def intake() -> Intake:
    """Built once per function instance, reused by every event it serves."""
    logs.setup()
    settings = Settings.from_env()
    return Intake(settings, open_store(settings), open_status(settings), open_launcher(settings))


@functions_framework.cloud_event
def on_inbox_object(cloud_event: CloudEvent) -> None:
    ev = StorageEvent.from_data(cloud_event.data)
    if is_own_write(ev.name, ev.metadata):
        # Our own output, preview or status file: known from the event alone, so nothing is
        # read, built or logged (a cold instance does not even open its clients).
        return
    jobs = intake().handle(ev)
    logs.event(
        log, "storage event", bucket=ev.bucket, object=ev.name, generation=ev.generation, jobs=jobs
    )


@functions_framework.cloud_event
def on_batch_state(cloud_event: CloudEvent) -> None:
    """A Cloud Batch job-state notification, delivered from Pub/Sub by Eventarc."""
    message = (cloud_event.data or {}).get("message", {})
    text = base64.b64decode(message.get("data") or b"").decode(errors="replace")
    note = BatchNotification.from_pubsub(message.get("attributes") or {}, text)
    if note is None:
        return
    current = intake()
    apply_notification(current.store, current.status, note, current.launcher.failure_reason)
    logs.event(log, "batch state", job_id=note.job_id, state=note.new_state)


@functions_framework.cloud_event
def on_sweep(cloud_event: CloudEvent) -> None:
    """A scheduler tick: manifests still waiting for inputs after `input_wait_seconds` end
    INVALID naming what never arrived; jobs Batch has not started are looked up (its reason
    kept in the record), and deleted and ended FAILED past `queued_timeout_minutes`
    (`dropbatch serve` does the same on its own timer)."""
    current = intake()
    jobs = current.sweep_expired()
    unstarted = sweep_unstarted(current.store, current.status, current.launcher, current.settings)
    relaunched = sweep_pool(current.status, current.launcher, current.settings)
    logs.event(log, "sweep", expired=jobs, no_capacity=unstarted, pool_relaunched=relaunched)
