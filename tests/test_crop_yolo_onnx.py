"""The onnxruntime YOLO backend on a model with YOLOv8's real signature and known outputs:
letterbox maths, the [84, N] decode, the person-class filter and NMS, proved exactly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from processors.crop.detector_choice import make_detector
from processors.crop.options import CropOptions
from processors.crop.processor import crop_weights
from processors.crop.yolo import letterbox
from processors.models.store import ModelMissing, require_models
from tests.yolo_test_model import build

DARK = 30
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    build(root / "yolov8n.onnx")
    return root


@pytest.fixture(scope="module")
def dynamic_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models-dynamic")
    build(root / "yolov8n.onnx", dynamic_batch=True)
    return root


def frame_with_marker(width: int, height: int, marker: tuple[int, int, int, int] | None):
    frame = np.full((height, width, 3), DARK, np.uint8)
    if marker:
        x0, y0, x1, y1 = marker
        frame[y0:y1, x0:x1] = 255
    return frame


def detect(store: Path, frames: list[np.ndarray]) -> list[list[tuple]]:
    detector = make_detector("yolo-onnx", weights=store / "yolov8n.onnx", device="cpu")
    return detector.detect(frames)


def test_landscape_frame_decodes_exactly(store: Path) -> None:
    # 1280×720 → scale 0.5 to 640×360, 140 px of grey above and below.
    marker = (600, 200, 800, 360)
    (boxes,) = detect(store, [frame_with_marker(1280, 720, marker)])
    # best first: the marker (0.9); `kept` (0.8, centre 200,300 size 60×80 in the input);
    # `half_overlap` (0.5). `overlaps_kept` lost to NMS, `a_car` to the class filter,
    # `too_faint` to the threshold.
    assert np.allclose(
        boxes,
        [marker, (340, 240, 460, 400), (340, 320, 460, 480)],
        atol=1e-4,
    ), boxes


def test_portrait_frame_decodes_exactly(store: Path) -> None:
    # 720×1280 → 360×640 with 140 px of grey left and right.
    marker = (100, 300, 300, 500)
    (boxes,) = detect(store, [frame_with_marker(720, 1280, marker)])
    assert np.allclose(boxes, [marker, (60, 520, 180, 680), (60, 600, 180, 760)], atol=1e-4)


def test_fractional_scale_maps_back_within_a_network_pixel(store: Path) -> None:
    # 1000×600 → scale 0.64 to 640×384, 128 px above and below: a marker edge lands between
    # input pixels, so the model sees it to within one input pixel = 1/0.64 frame pixels.
    marker = (301, 203, 517, 411)
    (boxes,) = detect(store, [frame_with_marker(1000, 600, marker)])
    assert len(boxes) == 3
    assert np.abs(np.subtract(boxes[0], marker)).max() <= 1 / 0.64 + 1e-6
    # The constant boxes: input (170, 260, 230, 340) → ((x - 0) / 0.64, (y - 128) / 0.64).
    assert np.allclose(boxes[1], (265.625, 206.25, 359.375, 331.25), atol=1e-4)


def test_letterbox_pads_grey_and_centres_the_picture() -> None:
    frame = frame_with_marker(1280, 720, None)
    image, fit = letterbox(frame)
    assert image.shape == (640, 640, 3)
    assert (image[:140] == 114).all() and (image[500:] == 114).all()
    assert (image[140:500] == DARK).all()
    assert (fit.left, fit.top, fit.scale_x, fit.scale_y) == (0, 140, 0.5, 0.5)


def test_no_person_gives_only_the_constant_boxes(store: Path) -> None:
    (boxes,) = detect(store, [frame_with_marker(1280, 720, None)])
    assert np.allclose(boxes, [(340, 240, 460, 400), (340, 320, 460, 480)], atol=1e-4)


@pytest.mark.parametrize("which", ["fixed", "dynamic"])
def test_a_batch_gives_each_frame_its_own_boxes(
    store: Path, dynamic_store: Path, which: str
) -> None:
    root = store if which == "fixed" else dynamic_store
    detector = make_detector("yolo-onnx", weights=root / "yolov8n.onnx", batch_size=5)
    assert detector.batch_size == 5
    markers = [(100 + 120 * i, 100, 180 + 120 * i, 300) for i in range(5)]
    frames = [frame_with_marker(1280, 720, m) for m in markers]
    frames.insert(2, frame_with_marker(1280, 720, None))
    found = detector.detect(frames)
    assert len(found) == 6
    assert [len(b) for b in found] == [3, 3, 2, 3, 3, 3]
    firsts = [b[0] for i, b in enumerate(found) if i != 2]
    assert np.allclose(firsts, markers, atol=1e-4)


def test_the_store_gives_the_onnx_file_and_names_what_is_missing(
    store: Path, tmp_path: Path
) -> None:
    options = CropOptions(detector="yolo-onnx", model="yolov8n")
    assert crop_weights(options, store) == store / "yolov8n.onnx"
    require_models("crop", options, store)
    with pytest.raises(ModelMissing, match=r"yolov8n .*expected yolov8n\.onnx"):
        require_models("crop", options, tmp_path)
    # ultralytics takes an engine, .pt or .onnx: the first the store has.
    yolo = CropOptions(detector="yolo", model="yolov8n")
    assert crop_weights(yolo, store) == store / "yolov8n.onnx"
    (tmp_path / "yolov8n.pt").write_bytes(b"weights")
    assert crop_weights(yolo, tmp_path) == tmp_path / "yolov8n.pt"
    with pytest.raises(ModelMissing, match=r"one of yolov8n\.engine, yolov8n\.pt, yolov8n\.onnx"):
        crop_weights(yolo, tmp_path / "empty")


def test_the_ultralytics_detector_without_ultralytics_says_what_to_do(store: Path) -> None:
    # A CPU machine without the GPU image's packages (hidden here even where installed).
    code = (
        "import sys; sys.modules['ultralytics'] = None; sys.modules['torch'] = None\n"
        "from fractions import Fraction\n"
        "from core.domain import VideoInfo\n"
        "from processors.base import ProcessorContext\n"
        "from processors.chain import ChainSetupError, build_processor\n"
        "info = VideoInfo(duration=1, fps_num=30, fps_den=1, frame_count=30, width=64, height=64)\n"
        f"ctx = ProcessorContext(info, Fraction(30), 64, 64, model_store={str(store)!r})\n"
        "try:\n"
        "    build_processor('crop', {'detector': 'yolo'}, ctx)\n"
        "except ChainSetupError as exc:\n"
        "    print(exc)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr
    assert "detector yolo needs ultralytics and torch" in proc.stdout
    assert "yolo-onnx" in proc.stdout  # the way out on such a machine
