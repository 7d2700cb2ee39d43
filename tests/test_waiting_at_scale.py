"""Every manifest waiting for its inputs is re-checked when they land, however many wait (the
trigger used to read only the 200 newest waiting records: the oldest were left for the sweep)."""

from __future__ import annotations

import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from batch_jobs.intake import Intake, StorageEvent
from dropbatch.config import Settings
from dropbatch.status import open_status
from dropbatch.status.model import JobRecord, JobState
from dropbatch.storage.local import LocalStore

COUNT = 300
MANIFEST = (
    'version: 1\ninputs: [clip.mp4]\nchain: [{crop: {aspect: "1:1"}}]\n'
    "compute: {chunk_seconds: 1}\n"
)


class CountingEngine:
    """The engine seam (batch_jobs.launcher.Launcher) answered at once: this test is about
    which manifests launch, not about running their tasks."""

    def __init__(self) -> None:
        self.launched: list[str] = []
        self._lock = threading.Lock()

    def launch(self, record: JobRecord, settings: Settings) -> str:
        with self._lock:
            self.launched.append(record.job_id)
        return f"engine/{record.job_id}"

    def failure_reason(self, job_name: str) -> str:
        return ""


def test_three_hundred_waiting_manifests_all_launch_when_their_inputs_land(
    deployment: dict, tmp_path: Path
) -> None:
    started = time.monotonic()
    clip = tmp_path / "clip.mp4"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=32x32:rate=10",
         "-t", "0.3", "-c:v", "libx264", "-preset", "ultrafast", str(clip)],
        check=True, timeout=60,
    )  # fmt: skip
    settings = Settings.from_env()
    store, status, engine = LocalStore(deployment["root"]), open_status(settings), CountingEngine()
    intake = Intake(settings, store, status, engine)
    inbox = deployment["inbox"]
    jobs = []
    for i in range(COUNT):  # oldest first: w000 waits longest
        name = f"w{i:03d}/job.yaml"
        (inbox / name).parent.mkdir()
        (inbox / name).write_text(MANIFEST)
        [job_id] = intake.handle(StorageEvent("inbox", name, store.stat("inbox", name).generation))
        jobs.append(job_id)
    waiting = status.by_state([JobState.WAITING_FOR_INPUTS], bucket="inbox")
    assert len(waiting) == COUNT
    assert waiting[0].waiting_for[0].uri == store.uri("inbox", "w000/clip.mp4")

    def land(i: int) -> list[str]:
        name = f"w{i:03d}/clip.mp4"
        shutil.copyfile(clip, inbox / name)
        return intake.handle(StorageEvent("inbox", name, store.stat("inbox", name).generation))

    # The inputs land in the order the manifests came; their events are handled four at a
    # time, as a function scales out for a burst of uploads.
    with ThreadPoolExecutor(4) as pool:
        evaluated = list(pool.map(land, range(COUNT)))
    assert evaluated == [[job] for job in jobs]  # only the manifest waiting for it, each time
    assert sorted(engine.launched) == sorted(jobs)
    assert status.by_state([JobState.WAITING_FOR_INPUTS]) == []
    assert all(status.get(j).state == JobState.QUEUED for j in jobs)
    print(f"{COUNT} manifests waited and launched in {time.monotonic() - started:.1f} s")
