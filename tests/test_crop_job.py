"""A whole local job with the yolo-onnx crop: the model comes from the model store the
settings name, the tasks (separate processes) find it there; without it the manifest is
INVALID at trigger time, naming the field."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from dropbatch.samples import make_talking_video
from tests.yolo_test_model import build

MANIFEST = """\
version: 1
inputs: talk.mp4
chain: [{crop: {aspect: "9:16", detector: yolo-onnx, detect_every: 2, model: MODEL}}]
output: {preset: ultrafast, crf: 23}
compute: {gpu: none, chunk_seconds: 2, max_parallel_tasks: 2}
"""


@pytest.fixture(scope="module")
def talk(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return talking_clip(tmp_path_factory, duration=5, fps=15)


def talking_clip(factory: pytest.TempPathFactory, duration: float, fps: int) -> Path:
    """A 640×360 clip of one talking subject (240 px) with a tone, under a fresh folder."""
    path = factory.mktemp("media") / "talk.mp4"
    make_talking_video(
        path, duration=duration, fps=fps, canvas=(640, 360), subject=240, audio="tone"
    )
    return path


def submit(
    deployment: dict,
    talk: Path,
    monkeypatch: pytest.MonkeyPatch,
    store: Path,
    model: str = "yolov8n",
) -> str:
    from triggers.main import intake

    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(store))
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    folder.mkdir()
    shutil.copyfile(talk, folder / "talk.mp4")  # a copy: links out of the inbox are refused
    (folder / "manifest.yaml").write_text(MANIFEST.replace("MODEL", model))
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    return job_id


def record_of(job_id: str) -> JobRecord:
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    return record


def test_a_yolo_onnx_crop_job_runs_with_the_model_from_the_store(
    deployment: dict, talk: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from tests.local_jobs import wait_local_job

    store = tmp_path / "models"
    build(store / "yolov8n.onnx")
    job_id = submit(deployment, talk, monkeypatch, store)
    assert wait_local_job(job_id, timeout=300)
    record = record_of(job_id)
    assert record.state == JobState.SUCCEEDED, record.error
    assert record.chunks_total == 3
    out = deployment["inbox"] / "job/out/talk.mp4"
    streams = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-of", "json", str(out)],
            capture_output=True, text=True, check=True,
        ).stdout
    )["streams"]  # fmt: skip
    video = next(s for s in streams if s["codec_type"] == "video")
    assert (video["width"], video["height"]) == (202, 360)
    assert int(video["nb_read_frames"]) == 75


def test_a_yolo_crop_without_its_model_is_invalid_at_trigger_time(
    deployment: dict, talk: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    empty = tmp_path / "models"
    empty.mkdir()
    job_id = submit(deployment, talk, monkeypatch, empty)
    record = record_of(job_id)
    assert record.state == JobState.INVALID
    assert record.error is not None and record.error.code == "MODEL_MISSING"
    assert record.error.field == "chain[0].crop.model"
    assert "yolov8n.onnx" in record.error.message


def test_yolo_on_a_slim_image_is_invalid_naming_the_detector_and_the_fixes(
    deployment: dict, talk: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The deployment runs Dockerfile.gpu's slim target (no ultralytics): the trigger refuses
    `detector: yolo` before any VM starts, in the chain and in an input's override."""
    from triggers.main import intake

    store = tmp_path / "models"
    build(store / "yolov8n.onnx")  # the model is there: only the image is wrong
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(store))
    monkeypatch.setenv("DROPBATCH_IMAGE_VARIANT", "slim")
    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    folder.mkdir()
    shutil.copyfile(talk, folder / "talk.mp4")
    shutil.copyfile(talk, folder / "b.mp4")
    (folder / "manifest.yaml").write_text(
        MANIFEST.replace("yolo-onnx", "yolo")
        .replace("MODEL", "yolov8n")
        .replace(
            "inputs: talk.mp4",
            "inputs: [talk.mp4, {video: b.mp4, overrides: {crop: {confidence: 0.5}}}]",
        )
    )
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    record = record_of(job_id)
    assert record.state == JobState.INVALID
    fields = [(e.code, e.field) for e in record.errors]
    assert fields == [
        ("DETECTOR_NOT_IN_IMAGE", "chain[0].crop.detector"),
        ("DETECTOR_NOT_IN_IMAGE", "inputs[1].overrides.crop.detector"),
    ]
    assert "yolo-onnx" in record.errors[0].message and "ultralytics" in record.errors[0].message
    status = json.loads((folder / "manifest.status.json").read_text())
    assert status["state"] == "INVALID"
    assert "chain[0].crop.detector" in json.dumps(status)


@pytest.mark.parametrize(
    ("detector", "variant", "refused"),
    [("yolo", "slim", True), ("yolo", "ultralytics", False), ("yolo", "", False),
     ("yolo-onnx", "slim", False), ("opencv-face", "slim", False)],
)  # fmt: skip
def test_only_yolo_on_the_slim_image_is_refused(detector: str, variant: str, refused: bool) -> None:
    from processors.crop.image import image_problems

    found = image_problems(detector, "chain[0].crop", variant)
    assert [e.field for e in found] == (["chain[0].crop.detector"] if refused else [])
