"""What a worker sets up once and keeps across the chunks it claims: the side inputs of each
item it works on (face images, speech), and which items it should stitch once no chunk is left.

Models are kept by processors/models/sessions.py (once per process); the chain itself is built
per chunk because its steps hold per-chunk state (camera path, face tracks).
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from batch_jobs.leases import holder_gone
from batch_jobs.side_inputs import fetch_side_inputs
from core.domain import PlannedItem
from core.status.base import StatusStore
from core.status.model import JobRecord, LeaseHolder
from core.storage.base import ObjectStore, folder_of


class WorkerSetup:
    """Side inputs fetched once per item into a folder this worker removes when it ends."""

    def __init__(self, store: ObjectStore, record: JobRecord) -> None:
        self._store, self._record = store, record
        self._root = Path(tempfile.mkdtemp(prefix="dropbatch-side-"))
        self._fetched: dict[int, Path] = {}

    def side_inputs(self, item: PlannedItem) -> Path:
        folder = self._fetched.get(item.index)
        if folder is None:
            folder = self._root / f"item-{item.index:04d}"
            folder.mkdir()
            fetch_side_inputs(
                self._store,
                self._record.bucket,
                folder_of(self._record.manifest),
                item.chain,
                folder,
            )
            self._fetched[item.index] = folder
        return folder

    def __enter__(self) -> WorkerSetup:
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self._root, ignore_errors=True)


def unstitched_items(status: StatusStore, job_id: str, claimant: LeaseHolder) -> list[int]:
    """Items whose chunks are all done but which are not stitched and whose stitch lease is
    free (none, run out, or its holder known dead): nobody will stitch them but us."""
    record = status.get(job_id)
    if record is None or record.plan is None:
        return []
    now = time.time()
    found = []
    for item in record.plan.items:
        if item.index in record.items_stitched:
            continue
        if status.count_done(job_id, item.index) < len(item.chunks):  # a count, not a read
            continue
        lease = record.stitch_leases.get(str(item.index))
        if lease and lease.expires_at > now and not holder_gone(lease.holder, claimant):
            continue  # a live stitcher has it
        found.append(item.index)
    return found
