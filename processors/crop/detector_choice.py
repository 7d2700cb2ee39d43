"""`make_detector`: the backend `crop.detector` names. Apart from detectors.py, whose interface the
yolo backends import, so the backends and the choice among them form no circle of files."""

from __future__ import annotations

from pathlib import Path

from processors.crop.detectors import (
    Detector,
    DetectorSetupError,
    HaarFaceDetector,
    HogPeopleDetector,
)


def make_detector(
    name: str,
    *,
    weights: Path | None = None,
    device: str = "auto",
    batch_size: int = 0,
    confidence: float = 0.25,
) -> Detector:
    """The backend `name`; `weights` is the model file the store resolved for yolo backends.

    `batch_size` 0 lets the backend choose (32 on a GPU, a few frames on a CPU).
    """
    detector: Detector
    if name == "opencv-face":
        detector = HaarFaceDetector()
    elif name == "opencv-hog":
        detector = HogPeopleDetector()
    elif name in ("yolo", "yolo-onnx"):
        if weights is None:
            raise DetectorSetupError(f"detector {name!r} needs a model file from the model store")
        if name == "yolo-onnx":
            from processors.crop.yolo_onnx import OnnxYoloDetector

            detector = OnnxYoloDetector(weights, device=device, confidence=confidence)
        else:
            from processors.crop.yolo_ultralytics import UltralyticsYoloDetector

            detector = UltralyticsYoloDetector(weights, device=device, confidence=confidence)
    else:
        raise DetectorSetupError(f"unknown detector {name!r}")
    if batch_size:
        detector.batch_size = batch_size
    return detector
