"""`dropbatch serve`: a local folder inbox that fires the same CloudEvent function Eventarc
would, once each object's upload has finished (its size and generation stop changing)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from cloudevents.http import CloudEvent

if TYPE_CHECKING:
    from batch_jobs.intake import Intake

from core.logs import event
from core.storage.base import ObjectInfo
from core.storage.local import LocalStore
from dropbatch.inbox import LocalInbox, nested_inboxes

log = logging.getLogger("dropbatch.watcher")
EVENT_TYPE = "google.cloud.storage.object.v1.finalized"
MAX_DELIVERIES = 5  # tries of one object version whose delivery keeps raising


def storage_cloud_event(info: ObjectInfo) -> CloudEvent:
    """The CloudEvent Eventarc delivers for a finalized object (int64 fields as strings)."""
    stamp = datetime.fromtimestamp(info.updated, UTC).isoformat().replace("+00:00", "Z")
    attributes = {
        "type": EVENT_TYPE,
        "source": f"//storage.googleapis.com/projects/_/buckets/{info.bucket}",
        "subject": f"objects/{info.name}",
        "id": f"{info.bucket}/{info.name}/{info.generation}",
        "time": stamp,
    }
    data = {
        "bucket": info.bucket,
        "name": info.name,
        "generation": str(info.generation),
        "metageneration": "1",
        "size": str(info.size),
        "contentType": info.content_type,
        "timeCreated": stamp,
        "updated": stamp,
        "metadata": info.metadata,
    }
    return CloudEvent(attributes, data)


class FolderWatcher:
    """Reports each object version once, when two scans in a row see it unchanged."""

    def __init__(self, store: LocalStore, bucket: str, inbox: LocalInbox | None = None) -> None:
        self.store, self.bucket, self.inbox = store, bucket, inbox
        self.nested: set[str] = set()  # folders that are inboxes of their own, once said
        self._last: dict[str, tuple[int, int]] = {}
        self._fired: dict[str, int] = {}
        self._failures: dict[tuple[str, int], int] = {}

    def failed(self, info: ObjectInfo) -> None:
        """Its delivery raised: report it again on a later scan, as Eventarc redelivers an
        event whose function failed, at most MAX_DELIVERIES times in all."""
        key = (info.name, info.generation)
        self._failures[key] = self._failures.get(key, 0) + 1
        if self._failures[key] < MAX_DELIVERIES and self._fired.get(info.name) == info.generation:
            del self._fired[info.name]

    def scan(self) -> list[ObjectInfo]:
        ready = []
        current = {info.name: info for info in self.store.list(self.bucket)}
        if self.inbox is not None:
            current = self._without_nested(current)
        for name, info in current.items():
            key = (info.generation, info.size)
            if self._last.get(name) == key and self._fired.get(name) != info.generation:
                self._fired[name] = info.generation
                ready.append(info)
            self._last[name] = key
        for name in list(self._last):
            if name not in current:
                del self._last[name]
                self._fired.pop(name, None)
        # Manifests last: the inputs they name in the same scan are then already known.
        return sorted(ready, key=lambda i: (i.name.endswith((".yaml", ".yml")), i.name))

    def _without_nested(self, current: dict[str, ObjectInfo]) -> dict[str, ObjectInfo]:
        """A folder holding its own inbox marker (a `dropbatch run` made it an inbox before
        this one was served) keeps its jobs in its own store: running its manifests here too
        would run them twice. Left alone, and said once."""
        assert self.inbox is not None
        nested = nested_inboxes(self.inbox, list(current))
        for folder in sorted(nested - self.nested):
            where = self.inbox.folder / folder
            event(
                log,
                "nested inbox not served",
                logging.WARNING,
                inbox=str(where),
                reason="it holds .dropbatch/INBOX: its jobs are in its own store",
                fix=f"dropbatch serve --inbox {where}",
            )
        self.nested |= nested
        return {
            name: info
            for name, info in current.items()
            if not any(name.startswith(folder) for folder in nested)
        }


def _logged(what: str, exc: Exception, **fields: object) -> None:
    log.error(what, exc_info=exc, extra={"fields": {**fields, "reason": str(exc)}})


def deliver(intake: Intake, cloud_event: CloudEvent) -> list[str]:
    """The event to the intake, read as the inbox function reads what Eventarc sends."""
    from batch_jobs.intake import StorageEvent

    ev = StorageEvent.from_data(cloud_event.data)
    jobs = intake.handle(ev)
    event(
        log, "storage event", bucket=ev.bucket, object=ev.name, generation=ev.generation, jobs=jobs
    )
    return jobs


def serve(inbox: Path, intake: Intake, poll_seconds: float = 1.0, once: bool = False) -> None:
    """Watch `inbox` and hand each finished object to `intake`, as the trigger would."""
    from batch_jobs.capacity import sweep_unstarted
    from batch_jobs.local_executor import resume_stranded
    from batch_jobs.pool_capacity import sweep_pool
    from core import logs

    logs.setup()
    settings = intake.settings
    store = LocalStore(settings.local_root, settings.local_state_dir)
    watcher = FolderWatcher(store, inbox.name, LocalInbox(inbox))
    event(log, "watching", inbox=str(inbox), status=str(settings.sqlite_file))
    print(f"dropbatch: watching {inbox} (Ctrl-C to stop)", flush=True)
    # Jobs whose tasks died with an earlier serve continue from their done chunks.
    try:
        for job_id in resume_stranded(intake.launcher, settings):
            print(f"dropbatch: resuming job {job_id}", flush=True)
    except Exception as exc:  # a job that cannot be resumed must not keep the inbox down
        _logged("resume failed", exc)
    try:
        scans = 0
        while True:
            # serve outlives whatever one object or one scan does. The trigger ends a job
            # whose evaluation raised with the reason; what still escapes it (the status
            # store failing) is logged and delivered again on a later scan.
            try:
                ready = watcher.scan()
            except Exception as exc:
                _logged("scan failed", exc)
                ready = []
            for info in ready:
                try:
                    deliver(intake, storage_cloud_event(info))
                except Exception as exc:
                    _logged("delivery failed", exc, object=info.name)
                    watcher.failed(info)
            try:
                intake.sweep_expired()
            except Exception as exc:
                _logged("sweep failed", exc)
            try:  # jobs whose tasks never started: the same timeout as on Cloud Batch
                sweep_unstarted(intake.store, intake.status, intake.launcher, settings)
            except Exception as exc:
                _logged("sweep failed", exc)
            try:  # warm-pool jobs no live worker serves (this serve restarted, say)
                for job_id in sweep_pool(intake.status, intake.launcher, settings):
                    print(f"dropbatch: resuming job {job_id}", flush=True)
            except Exception as exc:
                _logged("pool sweep failed", exc)
            scans += 1
            if once and scans >= 2:
                break
            time.sleep(poll_seconds)
        if once:
            intake.launcher.wait_all()  # type: ignore[attr-defined]
    except KeyboardInterrupt:
        print("dropbatch: stopped", flush=True)
    finally:
        stop = getattr(intake.launcher, "stop_pool", None)
        if stop is not None:  # the warm pool's workers end with the serve that started them
            stop()
