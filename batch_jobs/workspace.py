"""Where a job's internal objects live: chunk parts, preview tiles and output-name claims.

They go to the work bucket (`Settings.work_bucket`), which the inbox trigger does not watch,
so a job's intermediate writes never invoke it. The inbox keeps only what users upload and
what users read (outputs, previews, `.status.json`). One work bucket may serve several inbox
buckets: every name in it starts with the inbox bucket's name.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass

from core.config import Settings

# The embedded default's work bucket: a folder inside the local store's own state folder
# (`<local_root>/.dropbatch/work/`, or a local inbox's `<inbox>/.dropbatch/work/`), beside the
# status file; hidden, so never listed as part of an inbox.
LOCAL_WORK_BUCKET = ".dropbatch/work"
# Without a work bucket on Cloud Storage, internal objects stay in the inbox under this prefix
# (the trigger still recognises and skips them; see batch_jobs.intake.is_own_write).
INBOX_WORK_PREFIX = "_dropbatch/"


@dataclass(frozen=True)
class WorkArea:
    """The internal objects of one inbox bucket: `bucket` and the `prefix` of every name."""

    bucket: str
    prefix: str

    def jobs_folder(self) -> str:
        return f"{self.prefix}jobs/"

    def job_folder(self, job_id: str) -> str:
        """Everything a job keeps here until its stitch: its items' parts and preview tiles."""
        return f"{self.prefix}jobs/{job_id}/"

    def parts_folder(self, job_id: str, item: int) -> str:
        return f"{self.job_folder(job_id)}parts/{item:04d}/"

    def part(self, job_id: str, item: int, chunk: int) -> str:
        return f"{self.parts_folder(job_id, item)}part-{chunk:05d}.mp4"

    def preview_tile(self, job_id: str, item: int, key: str) -> str:
        """A preview tile a task stores beside its part (`key` from PreviewTap.jpegs)."""
        return f"{self.parts_folder(job_id, item)}preview-{key}.jpg"

    def claims_folder(self) -> str:
        return f"{self.prefix}outputs/"

    def claim(self, output: str) -> str:
        # Hashed: an output name may be as long as an object name may be, the claim's too.
        return f"{self.claims_folder()}{hashlib.sha256(output.encode()).hexdigest()}.json"


def work_area(settings: Settings, inbox_bucket: str) -> WorkArea:
    """The work area of `inbox_bucket` under these settings."""
    if settings.work_bucket and settings.work_bucket != inbox_bucket:
        return WorkArea(settings.work_bucket, f"{inbox_bucket}/")
    if settings.storage == "local":
        return WorkArea(local_work_bucket(settings), f"{inbox_bucket}/")
    return WorkArea(inbox_bucket, INBOX_WORK_PREFIX)


def local_work_bucket(settings: Settings) -> str:
    """The work bucket inside the local store's state folder, named from local_root (a local
    bucket is a folder under it): `.dropbatch/work`, or `inbox/.dropbatch/work` for an inbox."""
    if settings.local_state is None:
        return LOCAL_WORK_BUCKET
    root = os.path.abspath(settings.local_root)
    relative = os.path.relpath(os.path.abspath(settings.local_state), root)
    if relative == "." or relative.startswith(".."):
        raise ValueError(
            f"local_state {settings.local_state} must be a folder inside local_root {root}"
        )
    return f"{relative.replace(os.sep, '/')}/work"
