"""Every manifest waiting for its inputs is re-checked when they land, however many wait (the
trigger used to read only the 200 newest waiting records: the oldest were left for the sweep)."""

from __future__ import annotations

import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from batch_jobs.intake import Intake, StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobState
from core.storage.local import LocalStore
from tests.planning_scale import RecordingEngine

FOLDERS, PER_FOLDER = 30, 10  # 300 manifests; each folder's share one video
MANIFEST = (
    "version: 1\ninputs: [{{video: clip.mp4, audio: voice-{j}.wav, output_name: m{j}.mp4}}]\n"
    'chain: [{{crop: {{aspect: "1:1"}}}}]\ncompute: {{chunk_seconds: 1}}\n'
)


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True, timeout=60)


def test_three_hundred_waiting_manifests_all_launch_when_their_inputs_land(
    deployment: dict, tmp_path: Path
) -> None:
    started = time.monotonic()
    clip, voice = tmp_path / "clip.mp4", tmp_path / "voice.wav"
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=10", "-t", "0.3", "-c:v", "libx264",
           "-preset", "ultrafast", str(clip))  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "sine", "-t", "0.3", str(voice))
    settings = Settings.from_env()
    store, status, engine = LocalStore(deployment["root"]), open_status(settings), RecordingEngine()
    intake = Intake(settings, store, status, engine)
    inbox = deployment["inbox"]
    order = [(i, j) for i in range(FOLDERS) for j in range(PER_FOLDER)]
    jobs = []
    for i in range(FOLDERS):
        (inbox / f"f{i:02d}").mkdir()
        shutil.copyfile(clip, inbox / f"f{i:02d}" / "clip.mp4")
    for i, j in order:  # oldest first: f00/m0 waits longest
        name = f"f{i:02d}/m{j}.yaml"
        (inbox / name).write_text(MANIFEST.format(j=j))
        [job_id] = intake.handle(StorageEvent("inbox", name, store.stat("inbox", name).generation))
        jobs.append(job_id)
    waiting = status.by_state([JobState.WAITING_FOR_INPUTS], bucket="inbox")
    assert len(waiting) == len(order)
    assert waiting[0].waiting_for[0].uri == store.uri("inbox", "f00/voice-0.wav")

    def land(n: int) -> list[str]:
        i, j = order[n]
        name = f"f{i:02d}/voice-{j}.wav"
        shutil.copyfile(voice, inbox / name)
        return intake.handle(StorageEvent("inbox", name, store.stat("inbox", name).generation))

    # The voice-overs land in the order the manifests came; their events are handled four
    # at a time, as a function scales out for a burst of uploads.
    with ThreadPoolExecutor(4) as pool:
        evaluated = list(pool.map(land, range(len(order))))
    assert evaluated == [[job] for job in jobs]  # only the manifest waiting for it, each time
    assert sorted(engine.launched) == sorted(jobs)
    assert status.by_state([JobState.WAITING_FOR_INPUTS]) == []
    assert all(status.get(j).state == JobState.QUEUED for j in jobs)
    assert len(intake.probed) == FOLDERS  # each folder's video probed once, not per manifest
    print(f"{len(order)} manifests waited and launched in {time.monotonic() - started:.1f} s")
