"""A manifest with `swap` through the local flow: trigger → plan → chunked tasks with the
model store → stitch; the reference person's face is replaced in the output video."""

from __future__ import annotations

import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobState
from core.storage.local import LocalStore
from tests.face_models import FRAME_H, FRAME_W, build_face_store, frame_faces, two_people
from tests.media_fixtures import encode_frames

FPS = 25
MANIFEST = """\
version: 1
inputs: [talk.mp4]
chain:
  - swap:
      analyser: test_faces
      model: test_swapper
      source: faces/astronaut.png
      target: reference
      reference: faces/cameraman.png
output: {preset: ultrafast, crf: 18}
compute: {gpu: none, chunk_seconds: 1, max_parallel_tasks: 2, max_retries: 0}
"""


def decode(path: Path) -> np.ndarray:
    raw = subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-i", str(path), "-f", "rawvideo", "-pix_fmt", "rgb24",
         "pipe:1"],
        capture_output=True, check=True, timeout=120,
    ).stdout  # fmt: skip
    return np.frombuffer(raw, np.uint8).reshape(-1, FRAME_H, FRAME_W, 3)


def box_diff(a: np.ndarray, b: np.ndarray, box: tuple[float, ...]) -> float:
    x0, y0, x1, y1 = (int(v) for v in box)
    return float(np.abs(a[:, y0:y1, x0:x1].astype(int) - b[:, y0:y1, x0:x1]).mean())


@pytest.mark.slow
def test_swap_manifest_runs_end_to_end(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    store = build_face_store(tmp_path / "models")
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(store))
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    (folder / "faces").mkdir(parents=True)
    frames = [two_people(cameraman=i not in (30, 31)) for i in range(2 * FPS)]
    encode_frames(folder / "talk.mp4", frames, fps=FPS, size=(FRAME_W, FRAME_H), crf=12)
    for name, image in {
        "astronaut.png": two_people(cameraman=False),
        "cameraman.png": two_people(astronaut=False),
    }.items():
        cv2.imwrite(str(folder / "faces" / name), cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    (folder / "manifest.yaml").write_text(MANIFEST)
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    assert wait_local_job(job_id, timeout=300)
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    assert record.state == JobState.SUCCEEDED, record.error
    assert record.chunks_total == 2
    before, after = decode(folder / "talk.mp4"), decode(folder / "out" / "talk.mp4")
    assert len(after) == len(before) == 2 * FPS
    astronaut, cameraman = frame_faces()
    assert box_diff(before, after, cameraman.box) > 30  # the reference person was replaced
    assert box_diff(before, after, astronaut.box) < 3  # the other one only re-encoded
    # The models were fetched into the cache once and verified.
    stamps = list((tmp_path / "model-cache").rglob("*.verified"))
    assert {p.name for p in stamps} == {
        "test_det.onnx.verified", "test_rec.onnx.verified", "test_swapper.onnx.verified"
    }  # fmt: skip


@pytest.mark.parametrize("checked_by", ["trigger", "task"])
def test_a_source_image_with_two_faces_is_refused_naming_the_file(
    deployment: dict, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, checked_by: str
) -> None:
    from tests.local_jobs import wait_local_job
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(build_face_store(tmp_path / "models")))
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("DROPBATCH_CHECK_FACES", "1" if checked_by == "trigger" else "0")
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    (folder / "faces").mkdir(parents=True)
    encode_frames(folder / "talk.mp4", [two_people()] * 10, fps=FPS, size=(FRAME_W, FRAME_H))
    both = cv2.cvtColor(two_people(), cv2.COLOR_RGB2BGR)
    cv2.imwrite(str(folder / "faces" / "astronaut.png"), both)  # oops: both people in it
    cv2.imwrite(str(folder / "faces" / "cameraman.png"), both[:, ::-1] * 0)  # and nobody here
    (folder / "manifest.yaml").write_text(MANIFEST)
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    status = open_status(Settings.from_env())
    if checked_by == "trigger":
        record = status.get(job_id)
        assert record is not None and record.state == JobState.INVALID
        assert [(e.code, e.field) for e in record.errors] == [
            ("FACE_IMAGE", "chain[0].swap.source[0]"),
            ("FACE_IMAGE", "chain[0].swap.reference"),
        ]
        assert "2 faces in faces/astronaut.png" in record.errors[0].message
        assert "no face found in faces/cameraman.png" in record.errors[1].message
        assert record.errors[0].uri.endswith("job/faces/astronaut.png")
        assert record.chunks_total == 0 and status.progress(job_id) == []
        return
    assert wait_local_job(job_id, timeout=300)
    record = status.get(job_id)
    assert record is not None and record.state == JobState.FAILED
    # The task names the manifest field as the trigger would have.
    assert "chain[0].swap.source[0]: 2 faces in faces/astronaut.png" in record.error.message
