"""A manifest of many inputs planned by the trigger against Cloud Storage (fake-gcs-server):
what tests/test_planning_concurrency.py asserts on and bench/planning.py measures."""

from __future__ import annotations

import subprocess
import threading
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from batch_jobs.intake import Intake
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord
from core.storage.gcs import GcsStore


def make_clip(path: Path) -> Path:
    """A tiny real H.264 + AAC clip (0.5 s, 32x32, index first as phones write it)."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=32x32:rate=10",
         "-f", "lavfi", "-i", "sine", "-t", "0.5", "-c:v", "libx264", "-preset", "ultrafast",
         "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", "-movflags", "+faststart",
         str(path)],
        check=True, timeout=60,
    )  # fmt: skip
    return path


class RecordingEngine:
    """The engine seam (batch_jobs.launcher.Launcher) answered at once, recording what it was
    asked to launch: what the trigger plans and launches is measured, not the tasks."""

    def __init__(self) -> None:
        self.launched: list[str] = []
        self._lock = threading.Lock()

    def launch(self, record: JobRecord, settings: Settings) -> str:
        with self._lock:
            self.launched.append(record.job_id)
        return f"engine/{record.job_id}"

    def failure_reason(self, job_name: str) -> str:
        return ""


@dataclass
class Planned:
    record: JobRecord
    seconds: float  # the whole evaluation: list, probe every input, plan, claim outputs, launch


def upload_inputs(store: GcsStore, bucket: str, folder: str, clip: Path, count: int) -> str:
    """`count` copies of `clip` and a crop manifest naming each; returns the manifest's name.
    The uploads run on a few threads: fake-gcs-server takes them in parallel."""
    names = [f"in-{i:03d}.mp4" for i in range(count)]
    data = clip.read_bytes()

    def put(name: str) -> None:
        store.client.bucket(bucket).blob(folder + name).upload_from_string(
            data, content_type="video/mp4"
        )

    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, names))
    manifest = (
        "version: 1\ninputs: [" + ", ".join(names) + "]\n"
        'chain: [{crop: {aspect: "1:1"}}]\ncompute: {chunk_seconds: 2}\n'
    )
    store.client.bucket(bucket).blob(folder + "job.yaml").upload_from_string(
        manifest, content_type="application/yaml"
    )
    return folder + "job.yaml"


def plan_inputs(
    clip: Path, count: int, concurrency: int, sqlite: Path, bucket: str | None = None
) -> Planned:
    """Upload `count` inputs into a fresh folder and time the trigger's evaluation of their
    manifest with `probe_concurrency` = `concurrency` (a fresh Intake: nothing cached)."""
    store = GcsStore()
    if bucket is None:
        bucket = f"plan-{uuid.uuid4().hex[:10]}"
        store.client.create_bucket(bucket)
    name = upload_inputs(store, bucket, f"f-{uuid.uuid4().hex[:8]}/", clip, count)
    settings = Settings(
        storage="gcs", status="sqlite", sqlite_path=sqlite, probe_concurrency=concurrency
    )
    intake = Intake(settings, store, open_status(settings), RecordingEngine())
    generation = store.stat(bucket, name).generation
    started = time.monotonic()
    job_id = intake.evaluate(bucket, name, generation)
    seconds = time.monotonic() - started
    record = intake.status.get(job_id)
    assert record is not None
    return Planned(record, seconds)
