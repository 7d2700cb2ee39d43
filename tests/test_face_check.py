"""The trigger's face check with a real SCRFD export whose outputs carry a batch dimension
(scrfd_500m_bnkps + w600k_mbf, the catalog's `scrfd_500m_mbf` pack): a manifest
ends INVALID naming the image, or runs — it never crashes and never stays RECEIVED."""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from batch_jobs.intake import StorageEvent
from core.config import Settings
from core.status import open_status
from core.status.model import JobRecord, JobState
from core.storage.local import LocalStore
from tests.face_models import build_face_store

PACK = "scrfd_500m_mbf"  # the catalog's light pack, both files pinned
MANIFEST = """\
version: 1
inputs: [talk.mp4]
chain:
  - swap:
      analyser: {analyser}
      model: test_swapper
      source: faces/{source}
output: {{preset: ultrafast, crf: 18}}
compute: {{gpu: none, chunk_seconds: 10, max_retries: 0}}
"""


def pin(files: dict[str, Path]) -> dict:
    return {
        "sha256": {n: hashlib.sha256(p.read_bytes()).hexdigest() for n, p in files.items()},
        "size": {n: p.stat().st_size for n, p in files.items()},
    }


@pytest.fixture
def store(tmp_path: Path, real_asset, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The test swapper, the real light pack's files, and a store-local pack whose 'detector'
    is ArcFace."""
    folder = build_face_store(tmp_path / "models")
    det, rec = real_asset("scrfd_500m_bnkps.onnx"), real_asset("w600k_mbf.onnx")
    for path in (det, rec):
        shutil.copy(path, folder / path.name)
    catalog = yaml.safe_load((folder / "catalog.yaml").read_text())
    files = {det.name: folder / det.name, rec.name: folder / rec.name}
    # A pack that names the recogniser as its detector: a wrong file, not a crash.
    catalog["models"]["wrong_pack"] = {
        "step": "swap",
        "role": "analyser",
        "files": [rec.name, det.name],
        "modules": {rec.name: "detection", det.name: "recognition"},
        **pin({rec.name: files[rec.name], det.name: files[det.name]}),
    }
    (folder / "catalog.yaml").write_text(yaml.safe_dump(catalog))
    monkeypatch.setenv("DROPBATCH_MODEL_STORE", str(folder))
    monkeypatch.setenv("DROPBATCH_MODEL_CACHE", str(tmp_path / "model-cache"))
    monkeypatch.setenv("DROPBATCH_CHECK_FACES", "1")
    return folder


def submit(deployment: dict, real_asset, analyser: str, source: str) -> JobRecord:
    from triggers.main import intake

    intake.cache_clear()
    folder = deployment["inbox"] / "job"
    (folder / "faces").mkdir(parents=True, exist_ok=True)
    for name in ("obama.jpg", "multi_face.jpg"):
        shutil.copy(real_asset(name), folder / "faces" / name)
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-i", str(real_asset("pexels.mp4")),
         "-frames:v", "8", "-an", "-c:v", "libx264", "-preset", "ultrafast",
         str(folder / "talk.mp4")],
        check=True, timeout=120,
    )  # fmt: skip
    (folder / "manifest.yaml").write_text(MANIFEST.format(analyser=analyser, source=source))
    info = LocalStore(deployment["root"]).stat("inbox", "job/manifest.yaml")
    [job_id] = intake().handle(StorageEvent("inbox", "job/manifest.yaml", info.generation))
    record = open_status(Settings.from_env()).get(job_id)
    assert record is not None
    return record


def test_a_group_photo_as_source_ends_the_job_invalid(deployment, real_asset, store) -> None:
    started = time.monotonic()
    record = submit(deployment, real_asset, PACK, "multi_face.jpg")
    assert record.state == JobState.INVALID, record
    [error] = record.errors
    assert (error.code, error.field) == ("FACE_IMAGE", "chain[0].swap.source[0]")
    assert "5 faces in faces/multi_face.jpg" in error.message
    assert error.uri.endswith("job/faces/multi_face.jpg")
    assert time.monotonic() - started < 60


def test_a_one_face_source_passes_the_check_and_the_job_runs(deployment, real_asset, store) -> None:
    from tests.local_jobs import wait_local_job

    record = submit(deployment, real_asset, PACK, "obama.jpg")
    assert record.state not in (JobState.INVALID, JobState.RECEIVED), record
    assert wait_local_job(record.job_id, timeout=300)
    done = open_status(Settings.from_env()).get(record.job_id)
    assert done is not None and done.state == JobState.SUCCEEDED, done


def test_a_pack_whose_detector_is_not_one_is_refused_by_name(deployment, real_asset, store) -> None:
    record = submit(deployment, real_asset, "wrong_pack", "obama.jpg")
    assert record.state == JobState.INVALID, record
    [error] = record.errors
    assert (error.code, error.field) == ("MODEL_INCOMPATIBLE", "chain[0].swap.model")
    assert "w600k_mbf.onnx: not an SCRFD face detector" in error.message


def test_the_trigger_function_needs_no_insightface() -> None:
    from dropbatch.build_function import closure

    modules, third_party = closure()
    assert "processors.swap.checks" in modules  # the face check ships with the function
    assert "onnxruntime" in third_party
    assert not [m for m in third_party if m.split(".")[0] == "insightface"]


@pytest.fixture(scope="module")
def huge_png(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The issue's image: 25000×25000 pixels of one colour, about 1.9 MB as a PNG."""
    from tests.huge_images import write_constant_png

    return write_constant_png(tmp_path_factory.mktemp("huge") / "huge.png", 25000, 25000)


@pytest.mark.parametrize("check_faces", ["1", "0"])
def test_a_huge_face_image_is_refused_from_its_header_before_decoding(
    deployment, real_asset, store, huge_png: Path, monkeypatch, check_faces: str
) -> None:
    import resource

    monkeypatch.setenv("DROPBATCH_CHECK_FACES", check_faces)  # refused either way
    faces = deployment["inbox"] / "job" / "faces"
    faces.mkdir(parents=True)
    shutil.copy(huge_png, faces / "huge.png")
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # MB
    started = time.monotonic()
    record = submit(deployment, real_asset, PACK, "huge.png")
    seconds = time.monotonic() - started
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - peak_before
    assert record.state == JobState.INVALID, record
    [error] = record.errors
    assert (error.code, error.field) == ("FACE_IMAGE", "chain[0].swap.source[0]")
    assert "25000×25000 pixels" in error.message and "max_image_pixels" in error.message
    assert error.uri.endswith("job/faces/huge.png")
    # Decoded, the image alone is 1.9 GB: the peak of this process grew by far less.
    assert grown < 300, f"peak RSS grew {grown:.0f} MB"
    assert seconds < 30


def test_a_face_image_linked_from_outside_the_inbox_is_invalid_naming_the_field(
    deployment, real_asset, store
) -> None:
    outside = deployment["tmp"] / "elsewhere"
    outside.mkdir()
    shutil.copy(real_asset("obama.jpg"), outside / "me.jpg")
    faces = deployment["inbox"] / "job" / "faces"
    faces.mkdir(parents=True)
    (faces / "me.jpg").symlink_to(outside / "me.jpg")
    record = submit(deployment, real_asset, PACK, "me.jpg")
    assert record.state == JobState.INVALID, record
    [error] = record.errors
    assert (error.code, error.field) == ("INPUT_OUTSIDE", "chain[0].swap.source[0]")
    assert error.uri.endswith("job/faces/me.jpg") and "symbolic link" in error.message


def test_a_video_frame_larger_than_the_setting_is_invalid_before_decoding(
    deployment, real_asset, store, monkeypatch
) -> None:
    monkeypatch.setenv("DROPBATCH_MAX_VIDEO_PIXELS", str(640 * 360 - 1))  # the clip's, less one
    record = submit(deployment, real_asset, PACK, "obama.jpg")
    assert record.state == JobState.INVALID, record
    [error] = record.errors
    assert (error.code, error.field) == ("VIDEO_TOO_LARGE", "inputs[0].video")
    assert "640×360" in error.message and error.uri.endswith("job/talk.mp4")
