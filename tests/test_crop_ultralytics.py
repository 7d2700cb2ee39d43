"""The ultralytics backend, run for real in its own venv (CUDA torch stays out of the main
interpreter): an untrained YOLOv8n from its yaml, as .pt and exported to .onnx, gives the
same person boxes through ultralytics as the same .onnx through our onnxruntime backend —
also from a fixed-batch export fed a larger batch and from an export without metadata.

These tests need the venv (`python tests/gpu_venv.py`, about 6 GB): without it they are not
run, and the session's summary says so with that command (tests/conftest.py); `.ci/run`
builds it first, so CI runs them."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from dropbatch.samples import astronaut
from tests.gpu_venv import ROOT, VenvError, ensure_venv

SIZES = [(1280, 720), (1280, 720), (720, 1280), (1000, 600)]
pytestmark = pytest.mark.ultralytics


@pytest.fixture(scope="session")
def gpu_python() -> Path:
    try:
        return ensure_venv()
    except (VenvError, OSError, subprocess.SubprocessError) as exc:
        pytest.fail(f"the ultralytics venv is needed and could not be built: {exc}")


def frames() -> list[np.ndarray]:
    portrait = cv2.resize(astronaut(), (300, 300), interpolation=cv2.INTER_AREA)
    out = []
    for i, (w, h) in enumerate(SIZES):
        frame = np.full((h, w, 3), (40, 60, 80), np.uint8)
        frame[100:400, 50 + 100 * i : 350 + 100 * i] = portrait
        out.append(frame)
    return out


@pytest.fixture(scope="module")
def results(gpu_python: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("ultralytics")
    store = work / "models"
    store.mkdir()
    np.savez(work / "frames.npz", *frames())
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "YOLO_CONFIG_DIR": str(work / "yolo-config"),  # not ~/.config/Ultralytics
        "YOLO_OFFLINE": "1",
    }
    proc = subprocess.run(
        [str(gpu_python), str(ROOT / "tests" / "ultralytics_worker.py"), str(store),
         str(work / "frames.npz"), str(work / "out.json")],
        capture_output=True, text=True, timeout=1200, env=env, cwd=work,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads((work / "out.json").read_text())


BACKENDS = ["ultralytics-pt", "ultralytics-onnx", "onnxruntime"]


@pytest.mark.slow
def test_every_backend_finds_the_same_people_in_frame_coordinates(results: dict) -> None:
    reference = results["onnxruntime"]
    assert [len(b) for b in reference] == [len(b) for b in results["ultralytics-pt"]]
    assert sum(len(b) for b in reference) > 0
    for name in BACKENDS:
        found = results[name]
        assert len(found) == len(SIZES)  # one list per frame of the batch
        for boxes, (w, h) in zip(found, SIZES, strict=True):
            arr = np.asarray(boxes)
            assert (arr[:, [0, 2]] >= 0).all() and (arr[:, [0, 2]] <= w).all()
            assert (arr[:, [1, 3]] >= 0).all() and (arr[:, [1, 3]] <= h).all()
        for mine, theirs in zip(reference, found, strict=True):
            assert np.abs(np.asarray(mine) - np.asarray(theirs)).max() <= 0.5, name


@pytest.mark.slow
def test_only_people_come_back(results: dict) -> None:
    # Without a class filter the rigged model also sees cars; with it, only the people.
    for unfiltered, ours in zip(results["unfiltered"], results["ultralytics-pt"], strict=True):
        assert 2 in unfiltered
        assert unfiltered.count(0) == len(ours)


@pytest.mark.slow
def test_the_crop_step_runs_on_the_ultralytics_detector(results: dict) -> None:
    crop = results["crop"]
    assert crop["indices"] == list(range(10))
    assert crop["shape"] == [720, 404, 3] and crop["size"] == [404, 720]
    assert results["ultralytics-pt:batch_size"] == 4  # CPU default; 32 on a GPU


@pytest.mark.slow
def test_fixed_batch_and_metadata_less_exports_take_any_batch(results: dict) -> None:
    # Exported at batch 1 (ultralytics' default) and at batch 3; the bare file has no
    # Ultralytics metadata, so only its input shape says it takes one frame.
    assert results["facts:yolov8n"] == [1, True]
    assert results["facts:batch3"] == [3, True]
    assert results["facts:bare"] == [1, True]
    reference = results["onnxruntime"]
    for name in ("ultralytics-batch3", "ultralytics-bare", "ultralytics-onnx"):
        found = results[name]
        assert len(found) == len(SIZES), name  # 4 frames: runs of 3 + 1 (padded), or 4 × 1
        for mine, theirs in zip(reference, found, strict=True):
            assert np.abs(np.asarray(mine) - np.asarray(theirs)).max() <= 0.5, name


@pytest.mark.slow
def test_a_model_whose_class_0_is_not_a_person_is_refused(results: dict) -> None:
    code, message = results["refused:face"]
    assert code == "MODEL_INCOMPATIBLE"
    assert "face.onnx" in message and "1 classes (0: face)" in message


@pytest.mark.slow
def test_a_gpu_job_refuses_the_yolo_detector_where_torch_has_no_cuda(results: dict) -> None:
    # This machine has no GPU: torch's own CUDA error is the reason, the .pt file is named.
    code, message = results["gpu-required"]
    assert code == "GPU_UNAVAILABLE"
    assert message.startswith("yolov8n.pt: cannot run on the GPU: torch ")
    assert "compute.gpu: none" in message
