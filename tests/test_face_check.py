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
from dropbatch.config import Settings
from dropbatch.status import open_status
from dropbatch.status.model import JobRecord, JobState
from dropbatch.storage.local import LocalStore
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
    (folder / "faces").mkdir(parents=True)
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
